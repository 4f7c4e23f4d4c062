//! The versioned binary encoding of documents and deltas.
//!
//! Every encoding starts with its format version (`enum ... { V1(..) }`, the variant
//! index is the first byte), so a reader can refuse what it does not know instead of
//! misreading it. The body is [postcard]. Inside a V1 document each write's actor,
//! clock and sequence number are stored once in a table and entries point at them, and
//! each path stores only the segments that differ from the previous path.
//!
//! A document has a second form, for the write path: a fresh insert (every entry written
//! by one write) is stored as that write and the inserted fields, in the body's own order
//! ([`encode_insert`]); it decodes to the state the insert creates. It is a form of
//! documents only: deltas and sync frames carry V1, and [`encode_doc`] always writes V1.
//!
//! Decoding is for untrusted bytes: sizes are checked against explicit limits, every
//! index and count is validated, and any failure is a [`CodecError`], never a panic.
//! Orders and tables are checked too, so whatever decodes re-encodes to a value that
//! decodes identically (only varint spellings are not forced to be minimal).
//! `common/tests/golden/` pins the bytes of V1 and of the insert form so an accidental
//! format change fails.

use serde::{Deserialize, Serialize};

use crate::clock::Hlc;
use crate::crdt::MAX_PATH_DEPTH;
use crate::crdt::{
    Counter, CounterPart, DocState, Entry, EntryKind, Leaf, Path, Stamp, VersionVector,
    WriteContext,
};
use crate::delta::{Delta, DocChange};
use crate::ids::{ActorId, CollectionName, DocId};

/// Largest encoded document accepted: the 5 MiB document limit plus room for the
/// CRDT metadata.
pub const MAX_DOC_BYTES: usize = 6 * 1024 * 1024;
/// Largest encoded delta accepted.
pub const MAX_DELTA_BYTES: usize = 16 * 1024 * 1024;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("input is empty")]
    Empty,
    #[error("input is {len} bytes, the limit is {max}")]
    TooLarge { len: usize, max: usize },
    #[error("unknown format version {0} (this build reads version 1; is the peer newer?)")]
    UnknownVersion(u8),
    #[error("input is truncated")]
    Truncated,
    #[error("{0} unexpected bytes after the end")]
    TrailingBytes(usize),
    #[error("corrupt input: {0}")]
    Corrupt(String),
}

fn corrupt(what: impl Into<String>) -> CodecError {
    CodecError::Corrupt(what.into())
}

#[derive(Serialize, Deserialize)]
enum DocEncoding {
    V1(DocV1),
}

#[derive(Serialize, Deserialize)]
enum DeltaEncoding {
    V1(DeltaV1),
}

#[derive(Serialize, Deserialize, PartialEq)]
struct WriteV1 {
    actor: [u8; 8],
    ms: u64,
    logical: u16,
    seq: u64,
}

#[derive(Serialize, Deserialize)]
struct EntryV1 {
    /// Segments shared with the previous entry's path.
    shared: u16,
    /// The segments after those.
    rest: Vec<String>,
    /// Index into the write table.
    write: u32,
    kind: KindV1,
}

#[derive(Serialize, Deserialize)]
enum KindV1 {
    Map,
    Value(Leaf),
    Unset,
    Deleted,
    Counter { base: f64, parts: Vec<PartV1> },
}

#[derive(Serialize, Deserialize)]
struct PartV1 {
    actor: [u8; 8],
    seq: u64,
    total: f64,
}

/// A document state as encoded inside V1 documents, deltas and sync frames.
#[derive(Serialize, Deserialize)]
pub(crate) struct DocV1 {
    writes: Vec<WriteV1>,
    entries: Vec<EntryV1>,
}

/// Borrowing twins of [`DocEncoding`], [`DocV1`], [`EntryV1`] and [`KindV1`]: the same
/// serde shape, so the same bytes.
#[derive(Serialize)]
enum DocEncodingRef<'a> {
    V1(DocRefV1<'a>),
}

#[derive(Serialize)]
struct DocRefV1<'a> {
    writes: Vec<WriteV1>,
    entries: Vec<EntryRefV1<'a>>,
}

#[derive(Serialize)]
struct EntryRefV1<'a> {
    shared: u16,
    rest: &'a [String],
    write: u32,
    kind: KindRefV1<'a>,
}

#[derive(Serialize)]
enum KindRefV1<'a> {
    Map,
    Value(&'a Leaf),
    Unset,
    Deleted,
    Counter { base: f64, parts: Vec<PartV1> },
}

#[derive(Serialize, Deserialize)]
struct ChangeV1 {
    collection: String,
    id: String,
    doc: DocV1,
}

#[derive(Serialize, Deserialize)]
struct DeltaV1 {
    since: Vec<([u8; 8], u64)>,
    until: Vec<([u8; 8], u64)>,
    changes: Vec<ChangeV1>,
}

/// Encodes a document state (current format).
pub fn encode_doc(state: &DocState) -> Vec<u8> {
    to_bytes(&DocEncodingRef::V1(doc_ref_v1(state)))
}

/// Encodes the document that inserting `body` creates, every entry written by `ctx`, in
/// the insert form: it decodes to `DocState::insert_delta(ctx, body)` (a property test in
/// `tests/codec.rs` checks it), and costs no [`DocState`], no sorting and no paths (the
/// write path's form for new documents). `None` when `body` is not an object or nests
/// deeper than [`MAX_PATH_DEPTH`]: building the state reports why.
///
/// The form: [`FORM_INSERT`], the write (actor, the timestamp's raw 64 bits
/// little-endian, and the sequence number as a varint), then the root's fields. The
/// header has fixed places but for the last number, so stamping a document is a few
/// stores. Each field is its key's length plus one, the key, and its kind as V1 writes
/// it (`Map`, followed by that object's fields, or `Value` and the [`Leaf`]); a 0 ends an
/// object's fields. The root's `_id` is the document's key, not a field (as in
/// `insert_delta`).
pub fn encode_insert(ctx: WriteContext, body: &serde_json::Value) -> Option<Vec<u8>> {
    Some(InsertEntries::encode(body)?.stamp(ctx).into_vec())
}

/// The fields of the document that inserting a body creates, encoded before the write
/// that stamps them is known: [`encode_insert`] in two steps, so that a transaction can
/// encode the documents it inserts on several threads, then stamp each in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertEntries {
    /// [`HEADER_ROOM`] bytes left for the header, then the fields.
    bytes: Vec<u8>,
}

/// The first byte of a document in the insert form ([`encode_insert`]); V1's is 0.
pub const FORM_INSERT: u8 = 1;

/// The bytes of the header of an inserted document before its sequence number: form,
/// actor, timestamp.
const HEADER_FIXED: usize = 1 + 8 + 8;
/// The most bytes that header takes: the fixed part and the longest sequence number.
const HEADER_ROOM: usize = HEADER_FIXED + 10;

/// What most documents' fields take: one allocation for them and their header.
const USUAL_FIELD_BYTES: usize = 256;

impl InsertEntries {
    /// Encodes the fields of `body`; `None` when it is not an object or nests deeper
    /// than [`MAX_PATH_DEPTH`] (building the state reports why).
    pub fn encode(body: &serde_json::Value) -> Option<Self> {
        let fields = body.as_object()?;
        let mut bytes = Vec::with_capacity(HEADER_ROOM + USUAL_FIELD_BYTES);
        bytes.resize(HEADER_ROOM, 0);
        push_fields(fields, 1, &mut bytes)?;
        Some(Self { bytes })
    }

    /// The document's encoding, every entry written by `ctx`: the header goes right
    /// before the fields, in the room left for it, so the fields are not moved.
    pub fn stamp(self, ctx: WriteContext) -> StampedInsert {
        let start = HEADER_ROOM - HEADER_FIXED - varint_len(ctx.dot.seq);
        let mut bytes = self.bytes;
        let header = &mut bytes[start..HEADER_ROOM];
        header[0] = FORM_INSERT;
        header[1..9].copy_from_slice(&ctx.stamp.actor.to_bytes());
        header[9..HEADER_FIXED].copy_from_slice(&ctx.stamp.hlc.to_raw().to_le_bytes());
        write_varint(&mut header[HEADER_FIXED..], ctx.dot.seq);
        StampedInsert { bytes, start }
    }
}

/// The encoding of an inserted document ([`InsertEntries::stamp`]): its bytes, after the
/// part of the room for its header that it did not need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StampedInsert {
    bytes: Vec<u8>,
    start: usize,
}

impl StampedInsert {
    /// The encoding.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[self.start..]
    }

    /// The encoding, in a vector of its own (moving the bytes to its start).
    pub fn into_vec(mut self) -> Vec<u8> {
        self.bytes.drain(..self.start);
        self.bytes
    }
}

/// An encoding made in a vector of its own (by [`encode_insert`], say).
impl From<Vec<u8>> for StampedInsert {
    fn from(bytes: Vec<u8>) -> Self {
        Self { bytes, start: 0 }
    }
}

/// Writes the fields of an object whose path has `depth - 1` segments, in the insert
/// form, and the 0 that ends them. `None` when a path would be deeper than
/// [`MAX_PATH_DEPTH`].
fn push_fields(
    fields: &serde_json::Map<String, serde_json::Value>,
    depth: usize,
    out: &mut Vec<u8>,
) -> Option<()> {
    if depth > MAX_PATH_DEPTH && !fields.is_empty() {
        return None;
    }
    for (key, value) in fields {
        if depth == 1 && key == "_id" {
            continue;
        }
        push_varint(out, key.len() as u64 + 1);
        out.extend_from_slice(key.as_bytes());
        push_kind(out, value);
        if let serde_json::Value::Object(inner) = value {
            push_fields(inner, depth + 1, out)?;
        }
    }
    out.push(END_OF_FIELDS);
    Some(())
}

/// Ends an object's fields in the insert form (where a key's length plus one would be).
const END_OF_FIELDS: u8 = 0;

/// Variant indexes of [`KindV1`] and [`Leaf`] as postcard writes them.
const KIND_MAP: u8 = 0;
const KIND_VALUE: u8 = 1;
const LEAF_NULL: u8 = 0;
const LEAF_BOOL: u8 = 1;
const LEAF_INT: u8 = 2;
const LEAF_UINT: u8 = 3;
const LEAF_FLOAT: u8 = 4;
const LEAF_STR: u8 = 5;
const LEAF_ARRAY: u8 = 6;

/// Postcard's encoding of the entry kind for `value`: `Map` for objects, else `Value`
/// with the [`Leaf`] that [`Leaf::from_json`] makes.
fn push_kind(out: &mut Vec<u8>, value: &serde_json::Value) {
    use serde_json::Value;
    if let Value::Object(_) = value {
        out.push(KIND_MAP);
        return;
    }
    out.push(KIND_VALUE);
    match value {
        Value::Null => out.push(LEAF_NULL),
        Value::Bool(b) => out.extend_from_slice(&[LEAF_BOOL, u8::from(*b)]),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => {
                out.push(LEAF_INT);
                // Zigzag, as postcard writes signed integers.
                push_varint(out, ((i << 1) ^ (i >> 63)) as u64);
            }
            (None, Some(u)) => {
                out.push(LEAF_UINT);
                push_varint(out, u);
            }
            (None, None) => {
                out.push(LEAF_FLOAT);
                out.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_le_bytes());
            }
        },
        Value::String(text) => {
            out.push(LEAF_STR);
            push_bytes(out, text.as_bytes());
        }
        Value::Array(_) => {
            out.push(LEAF_ARRAY);
            // The array's JSON text, written in place.
            push_length_prefixed(out, |out| {
                serde_json::to_writer(out, value).expect("writing JSON to a Vec cannot fail");
            });
        }
        Value::Object(_) => unreachable!("objects are maps, handled above"),
    }
}

/// A length-prefixed byte string, as postcard writes `str` and `[u8]`.
#[inline]
pub fn push_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    push_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Appends what `write` appends, preceded by its length as postcard writes the length
/// of a byte string, without writing the bytes anywhere else first: one byte of length
/// is reserved (the usual size), and a longer length moves the bytes up. Returns the
/// length.
pub fn push_length_prefixed(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) -> usize {
    let at = out.len();
    out.push(0);
    write(out);
    let len = out.len() - at - 1;
    match u8::try_from(len) {
        Ok(byte) if byte < 0x80 => out[at] = byte,
        _ => {
            let (prefix, n) = varint(len as u64);
            out.splice(at..=at, prefix[..n].iter().copied());
        }
    }
    len
}

/// An unsigned LEB128 varint, as postcard writes every integer wider than a byte: its
/// bytes and how many there are.
fn varint(value: u64) -> ([u8; 10], usize) {
    let mut bytes = [0u8; 10];
    let n = write_varint(&mut bytes, value);
    (bytes, n)
}

/// Writes [`varint`]`(value)` at the start of `out`, which must have room for it;
/// returns its length.
fn write_varint(out: &mut [u8], mut value: u64) -> usize {
    let mut n = 0;
    while value >= 0x80 {
        out[n] = (value as u8) | 0x80;
        value >>= 7;
        n += 1;
    }
    out[n] = value as u8;
    n + 1
}

/// The number of bytes of [`varint`]`(value)`.
fn varint_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends an unsigned LEB128 varint, as postcard writes every integer wider than a
/// byte. Inlined: most varints of a document (lengths, path sharing, write numbers) are
/// one byte, and a call cost more than the push.
#[inline]
pub fn push_varint(out: &mut Vec<u8>, value: u64) {
    if value < 0x80 {
        out.push(value as u8);
    } else {
        push_long_varint(out, value);
    }
}

#[inline(never)]
fn push_long_varint(out: &mut Vec<u8>, value: u64) {
    let at = out.len();
    out.resize(at + 10, 0);
    let n = write_varint(&mut out[at..], value);
    out.truncate(at + n);
}

/// Decodes a document state of any known format.
pub fn decode_doc(bytes: &[u8]) -> Result<DocState, CodecError> {
    match check_size(bytes, MAX_DOC_BYTES)? {
        FORM_INSERT => decode_insert(&bytes[1..]),
        version => {
            check_version(version)?;
            match from_bytes::<DocEncoding>(bytes)? {
                DocEncoding::V1(doc) => doc_from_v1(doc),
            }
        }
    }
}

/// Decodes a document in the insert form ([`encode_insert`]), after its first byte.
fn decode_insert(bytes: &[u8]) -> Result<DocState, CodecError> {
    let mut input = Input(bytes);
    let actor = input.take(8)?;
    let hlc = input.take(8)?;
    let seq: u64 = input.read()?;
    if seq == 0 {
        return Err(corrupt("write with a zero sequence number"));
    }
    let write = Entry {
        stamp: Stamp {
            hlc: Hlc::from_raw(u64::from_le_bytes(hlc.try_into().expect("took 8 bytes"))),
            actor: ActorId::from_bytes(actor.try_into().expect("took 8 bytes")),
        },
        seq,
        kind: EntryKind::Map,
    };
    let mut entries = vec![(Path::root(), write.clone())];
    read_fields(&mut input, &mut Vec::new(), &write, &mut entries)?;
    if !input.0.is_empty() {
        return Err(CodecError::TrailingBytes(input.0.len()));
    }
    // One write: no entry can hide another. A repeated key leaves fewer entries (the
    // state keeps one per path).
    let written = entries.len();
    let state = DocState::from_unique_entries_of_one_write(entries);
    if state.len() != written {
        return Err(corrupt("an object repeats a key"));
    }
    Ok(state)
}

/// Reads the fields of the object at `path` (and of the objects inside it) up to the end
/// of its fields, as entries written by `write`.
fn read_fields(
    input: &mut Input<'_>,
    path: &mut Vec<String>,
    write: &Entry,
    entries: &mut Vec<(Path, Entry)>,
) -> Result<(), CodecError> {
    if path.len() == MAX_PATH_DEPTH {
        // Only an empty object may sit at the deepest path.
        return match input.take(1)? {
            [END_OF_FIELDS] => Ok(()),
            _ => Err(corrupt(format!("path deeper than {MAX_PATH_DEPTH}"))),
        };
    }
    loop {
        let key_len = match input.read::<u64>()? {
            0 => return Ok(()),
            n => usize::try_from(n - 1).map_err(|_| CodecError::Truncated)?,
        };
        let key =
            std::str::from_utf8(input.take(key_len)?).map_err(|_| corrupt("a key is not UTF-8"))?;
        if path.is_empty() && key == "_id" {
            return Err(corrupt("`_id` is the document's key, not a field"));
        }
        path.push(key.to_owned());
        let kind = match input.take(1)? {
            [KIND_MAP] => EntryKind::Map,
            [KIND_VALUE] => EntryKind::Value(check_leaf(input.read()?)?),
            _ => return Err(corrupt("a field is neither an object nor a value")),
        };
        let object = matches!(kind, EntryKind::Map);
        entries.push((
            Path::new(path.iter()),
            Entry {
                stamp: write.stamp,
                seq: write.seq,
                kind,
            },
        ));
        if object {
            read_fields(input, path, write, entries)?;
        }
        path.pop();
    }
}

/// Bytes being read, front first.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.0.len() < n {
            return Err(CodecError::Truncated);
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    /// A value as postcard writes it (integers as varints, a [`Leaf`] as in V1).
    fn read<T: Deserialize<'a>>(&mut self) -> Result<T, CodecError> {
        let (value, rest) = take_from_bytes(self.0)?;
        self.0 = rest;
        Ok(value)
    }
}

/// Encodes a delta (current format).
pub fn encode_delta(delta: &Delta) -> Vec<u8> {
    let changes = delta
        .changes
        .iter()
        .map(|c| ChangeV1 {
            collection: c.collection.as_str().to_owned(),
            id: c.id.as_canonical().to_owned(),
            doc: doc_v1(&c.state),
        })
        .collect();
    to_bytes(&DeltaEncoding::V1(DeltaV1 {
        since: vv_v1(&delta.since),
        until: vv_v1(&delta.until),
        changes,
    }))
}

/// Decodes a delta of any known format.
pub fn decode_delta(bytes: &[u8]) -> Result<Delta, CodecError> {
    check_version(check_size(bytes, MAX_DELTA_BYTES)?)?;
    let DeltaEncoding::V1(delta) = from_bytes::<DeltaEncoding>(bytes)?;
    let mut changes = Vec::with_capacity(delta.changes.len());
    for change in delta.changes {
        let collection = CollectionName::new(&change.collection)
            .map_err(|e| corrupt(format!("collection: {e}")))?;
        let id = DocId::from_canonical(&change.id).map_err(|e| corrupt(format!("_id: {e}")))?;
        changes.push(DocChange {
            collection,
            id,
            state: doc_from_v1(change.doc)?,
        });
    }
    Ok(Delta {
        since: vv_from_v1(delta.since)?,
        until: vv_from_v1(delta.until)?,
        changes,
    })
}

fn to_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("encoding into a Vec cannot fail")
}

/// Checks that `bytes` are neither empty nor above `max`; returns their first byte (the
/// format version, or a document's form).
fn check_size(bytes: &[u8], max: usize) -> Result<u8, CodecError> {
    match bytes.first() {
        None => Err(CodecError::Empty),
        Some(_) if bytes.len() > max => Err(CodecError::TooLarge {
            len: bytes.len(),
            max,
        }),
        Some(&first) => Ok(first),
    }
}

/// Checks the variant index of the version enum: V1 is 0.
fn check_version(version: u8) -> Result<(), CodecError> {
    match version {
        0 => Ok(()),
        newer => Err(CodecError::UnknownVersion(newer.saturating_add(1))),
    }
}

/// Postcard's `take_from_bytes`, its errors as [`CodecError`]s.
fn take_from_bytes<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<(T, &'a [u8]), CodecError> {
    postcard::take_from_bytes(bytes).map_err(|e| match e {
        postcard::Error::DeserializeUnexpectedEnd => CodecError::Truncated,
        other => corrupt(other.to_string()),
    })
}

fn from_bytes<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, CodecError> {
    let (value, rest) = take_from_bytes(bytes)?;
    if !rest.is_empty() {
        return Err(CodecError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

fn vv_v1(vv: &VersionVector) -> Vec<([u8; 8], u64)> {
    vv.iter()
        .map(|(actor, seq)| (actor.to_bytes(), seq))
        .collect()
}

fn vv_from_v1(pairs: Vec<([u8; 8], u64)>) -> Result<VersionVector, CodecError> {
    let ordered = pairs.windows(2).all(|w| w[0].0 < w[1].0);
    if !ordered || pairs.iter().any(|(_, seq)| *seq == 0) {
        return Err(corrupt(
            "version vector not in actor order or with a zero entry",
        ));
    }
    Ok(pairs
        .into_iter()
        .map(|(actor, seq)| (ActorId::from_bytes(actor), seq))
        .collect())
}

/// One entry of a document laid out for V1: segments shared with the previous path, the
/// rest of the path, the index of its write in the table, and what it holds.
type LaidOut<'a> = (u16, &'a [String], u32, &'a EntryKind);

/// The write table and the entries of a V1 document, borrowing from `state`.
fn layout(state: &DocState) -> (Vec<WriteV1>, Vec<LaidOut<'_>>) {
    let mut writes: Vec<WriteV1> = Vec::new();
    let mut entries = Vec::with_capacity(state.len());
    let mut previous: &[String] = &[];
    for (path, entry) in state.entries() {
        let write = WriteV1 {
            actor: entry.stamp.actor.to_bytes(),
            ms: entry.stamp.hlc.physical_ms(),
            logical: entry.stamp.hlc.logical(),
            seq: entry.seq,
        };
        // Writes are few per document and usually repeat in runs: search from the end.
        let index = match writes.iter().rposition(|w| *w == write) {
            Some(i) => i,
            None => {
                writes.push(write);
                writes.len() - 1
            }
        };
        let segments = path.segments();
        let shared = previous
            .iter()
            .zip(segments)
            .take_while(|(a, b)| a == b)
            .count();
        entries.push((
            shared as u16,
            &segments[shared..],
            index as u32,
            &entry.kind,
        ));
        previous = segments;
    }
    (writes, entries)
}

pub(crate) fn doc_v1(state: &DocState) -> DocV1 {
    let (writes, entries) = layout(state);
    let entries = entries
        .into_iter()
        .map(|(shared, rest, write, kind)| EntryV1 {
            shared,
            rest: rest.to_vec(),
            write,
            kind: match kind {
                EntryKind::Map => KindV1::Map,
                EntryKind::Value(leaf) => KindV1::Value(leaf.clone()),
                EntryKind::Unset => KindV1::Unset,
                EntryKind::Deleted => KindV1::Deleted,
                EntryKind::Counter(counter) => KindV1::Counter {
                    base: counter.base,
                    parts: parts_v1(counter),
                },
            },
        })
        .collect();
    DocV1 { writes, entries }
}

/// The borrowing twin of [`doc_v1`], for [`encode_doc`] on the write path: it copies no
/// path or value, and serialises to exactly the same bytes (the golden files check it).
fn doc_ref_v1(state: &DocState) -> DocRefV1<'_> {
    let (writes, entries) = layout(state);
    let entries = entries
        .into_iter()
        .map(|(shared, rest, write, kind)| EntryRefV1 {
            shared,
            rest,
            write,
            kind: match kind {
                EntryKind::Map => KindRefV1::Map,
                EntryKind::Value(leaf) => KindRefV1::Value(leaf),
                EntryKind::Unset => KindRefV1::Unset,
                EntryKind::Deleted => KindRefV1::Deleted,
                EntryKind::Counter(counter) => KindRefV1::Counter {
                    base: counter.base,
                    parts: parts_v1(counter),
                },
            },
        })
        .collect();
    DocRefV1 { writes, entries }
}

fn parts_v1(counter: &Counter) -> Vec<PartV1> {
    counter
        .parts
        .iter()
        .map(|(actor, part)| PartV1 {
            actor: actor.to_bytes(),
            seq: part.seq,
            total: part.total,
        })
        .collect()
}

pub(crate) fn doc_from_v1(doc: DocV1) -> Result<DocState, CodecError> {
    let mut previous: Vec<String> = Vec::new();
    let mut entries = Vec::with_capacity(doc.entries.len());
    // The write table lists each write once, in order of first use (as encoded).
    let mut first_unused_write = 0;
    for entry in doc.entries {
        let shared = usize::from(entry.shared);
        if shared > previous.len() {
            return Err(corrupt(
                "path shares more segments than the previous path has",
            ));
        }
        if entry
            .rest
            .first()
            .is_some_and(|s| previous.get(shared) == Some(s))
        {
            return Err(corrupt("path prefix is not shared maximally"));
        }
        let mut segments = previous[..shared].to_vec();
        segments.extend(entry.rest);
        if segments.len() > MAX_PATH_DEPTH {
            return Err(corrupt(format!("path deeper than {MAX_PATH_DEPTH}")));
        }
        if !entries.is_empty() && segments <= previous {
            return Err(corrupt("entries out of order"));
        }
        let index = entry.write as usize;
        match index.cmp(&first_unused_write) {
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Equal => {
                let new = doc.writes.get(index);
                if doc.writes[..index].iter().any(|w| Some(w) == new) {
                    return Err(corrupt("write table repeats a write"));
                }
                first_unused_write += 1;
            }
            std::cmp::Ordering::Greater => return Err(corrupt("write table out of order")),
        }
        let write = doc
            .writes
            .get(index)
            .ok_or_else(|| corrupt("entry refers to a missing write"))?;
        if write.seq == 0 || write.ms >= 1 << 48 {
            return Err(corrupt(
                "write with a zero sequence number or an impossible clock",
            ));
        }
        let stamp = Stamp {
            hlc: Hlc::new(write.ms, write.logical),
            actor: ActorId::from_bytes(write.actor),
        };
        let kind = kind_from_v1(entry.kind, segments.is_empty())?;
        previous = segments.clone();
        entries.push((
            Path::new(segments),
            Entry {
                stamp,
                seq: write.seq,
                kind,
            },
        ));
    }
    if first_unused_write != doc.writes.len() {
        return Err(corrupt("write table has unused writes"));
    }
    // Order was checked entry by entry above; this also checks that no entry is
    // superseded by an ancestor.
    DocState::from_sorted_entries(entries)
        .ok_or_else(|| corrupt("document holds entries superseded by their ancestors"))
}

fn kind_from_v1(kind: KindV1, at_root: bool) -> Result<EntryKind, CodecError> {
    Ok(match kind {
        KindV1::Map => EntryKind::Map,
        KindV1::Unset if !at_root => EntryKind::Unset,
        KindV1::Deleted if at_root => EntryKind::Deleted,
        KindV1::Unset | KindV1::Deleted => {
            return Err(corrupt("unset at the root or delete below it"));
        }
        KindV1::Value(_) | KindV1::Counter { .. } if at_root => {
            return Err(corrupt("a document root must be an object"));
        }
        KindV1::Value(leaf) => EntryKind::Value(check_leaf(leaf)?),
        KindV1::Counter { base, parts } => {
            let mut counter = Counter {
                base: finite(base)?,
                parts: Default::default(),
            };
            if !parts.windows(2).all(|w| w[0].actor < w[1].actor) {
                return Err(corrupt("counter parts not in actor order"));
            }
            for part in parts {
                let actor = ActorId::from_bytes(part.actor);
                let value = CounterPart {
                    seq: part.seq,
                    total: finite(part.total)?,
                };
                if part.seq == 0 || counter.parts.insert(actor, value).is_some() {
                    return Err(corrupt(
                        "counter part with a zero sequence or a repeated actor",
                    ));
                }
            }
            EntryKind::Counter(counter)
        }
    })
}

fn finite(value: f64) -> Result<f64, CodecError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(corrupt("number is not finite"))
    }
}

fn check_leaf(leaf: Leaf) -> Result<Leaf, CodecError> {
    match &leaf {
        Leaf::Float(f) => {
            finite(*f)?;
        }
        Leaf::Array(text) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Array(_)) => {}
            _ => return Err(corrupt("array value is not a JSON array")),
        },
        _ => {}
    }
    Ok(leaf)
}
