//! Every byte layout of the store's keys, and of the small values the store writes
//! itself (the version vector, the format version). Nothing else in the crate builds or
//! parses a key: the RocksDB backend and the in-memory backend both come here, and the
//! tests at the bottom pin the sort orders the rest of the store relies on.
//!
//! | column family | key | value |
//! |---|---|---|
//! | `docs` | `collection 0x00 id` | [`encode_doc_value`]: `len(varint) lsns` (the document's [`DocLsns`]), then `codec::encode_doc` of the [`DocState`] |
//! | `changes` | `actor(8) last-seq(8, BE) commit(8, BE) part(4, BE)` | a run of entries ([`encode_change_run`]): `(seq, collection, id)`, write `seq` of the actor is part of that document's stored state |
//! | `lsns` | `collection 0x00 first-lsn(8, BE)` | a run of entries ([`encode_lsn_run`]): `(lsn, id)`, the document whose latest change has that LSN |
//! | `peers` | `'b' incarnation(16) query(16)` | a sync bookmark: the peer store's LSN (`u64`, big-endian) |
//! | `indexes` | `index-name 0x00 value-encoding id` | empty |
//! | `index_defs` | `index-name` | the definition as versioned JSON |
//! | `evicted` | `collection 0x00 id` | empty |
//! | `attachments` | `'m' hash(32)` / `'c' hash(32) chunk(4, BE)` / `'s' upload(8) chunk(4, BE)` | blob record / chunk bytes / staged chunk |
//! | `meta` | `store/...` (the store's own: format version, version vector, greatest timestamp, LSN, incarnation) or `node/<key>` ([`meta_key`]) | bytes |
//!
//! The change index and the LSN index keep their entries in runs, a row of up to
//! [`RUN_ENTRIES`] entries written by one commit, not a row per
//! entry: a batch of a thousand inserts then writes about a thousand rows, not three
//! thousand (`store::runs` says how runs change).
//!
//! Collection and index names never contain `0x00` (they are `[A-Za-z0-9_-]`), so the
//! separator keeps one collection's keys contiguous and collections in name order; ids
//! are the canonical JSON text of [`DocId`], so within a collection keys sort by id
//! bytes, which is [`DocId`]'s own order.

use serde_json::{Number, Value};
use trellis_common::codec::{decode_doc, push_bytes, push_length_prefixed, push_varint};
use trellis_common::crdt::{DocState, Dot, VersionVector};
use trellis_common::ids::{ActorId, CollectionName, DocId};
use trellis_common::sync::{DocLsns, Incarnation, Lsn, QueryId};

/// The separator after a collection or index name.
const SEP: u8 = 0x00;

/// Entries per index run at most (entries sharing an LSN are never split, so an LSN run
/// may hold more). 64 keeps the rewrite when an entry leaves near 2 KiB, and the rows
/// per stored document near one.
pub const RUN_ENTRIES: usize = 64;

/// `meta` key of the store format version (`u32`, big-endian).
pub const META_FORMAT_VERSION: &[u8] = b"store/format_version";
/// `meta` key of the store's version vector ([`encode_version_vector`]).
pub const META_VERSION_VECTOR: &[u8] = b"store/version_vector";
/// `meta` key of the greatest hybrid timestamp applied (`u64`, big-endian).
pub const META_MAX_HLC: &[u8] = b"store/max_hlc";
/// `meta` key of the store's latest LSN (`u64`, big-endian).
pub const META_LSN: &[u8] = b"store/lsn";
/// `meta` key of the store's incarnation (16 bytes).
pub const META_INCARNATION: &[u8] = b"store/incarnation";
/// Prefix of the node's own metadata keys ([`meta_key`]).
const META_NODE_PREFIX: &[u8] = b"node/";

/// Why a stored key or value could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

fn bad(what: impl Into<String>) -> KeyError {
    KeyError(what.into())
}

// ---------------------------------------------------------------------------------------
// Documents and evicted ids: `collection 0x00 id`.

/// The key of a document in `docs` (and of its marker in `evicted`).
pub fn doc_key(collection: &CollectionName, id: &DocId) -> Vec<u8> {
    let mut key = Vec::with_capacity(doc_key_len(collection, id));
    push_doc_key(&mut key, collection, id);
    key
}

/// [`doc_key`] written into `key` (cleared first), so that a commit can reuse one
/// buffer for every document it writes.
pub fn write_doc_key(key: &mut Vec<u8>, collection: &CollectionName, id: &DocId) {
    key.clear();
    push_doc_key(key, collection, id);
}

fn doc_key_len(collection: &CollectionName, id: &DocId) -> usize {
    collection.as_str().len() + 1 + id.as_canonical().len()
}

fn push_doc_key(key: &mut Vec<u8>, collection: &CollectionName, id: &DocId) {
    key.extend_from_slice(collection.as_str().as_bytes());
    key.push(SEP);
    key.extend_from_slice(id.as_canonical().as_bytes());
}

/// The prefix shared by every document key of `collection`.
pub fn collection_prefix(collection: &CollectionName) -> Vec<u8> {
    let mut key = Vec::with_capacity(collection.as_str().len() + 1 + 32);
    key.extend_from_slice(collection.as_str().as_bytes());
    key.push(SEP);
    key
}

/// The smallest key after every key of `collection` (the exclusive end of its range).
pub fn collection_end(collection: &CollectionName) -> Vec<u8> {
    let mut key = collection.as_str().as_bytes().to_vec();
    key.push(SEP + 1);
    key
}

/// Splits a `docs` / `evicted` key back into collection and id.
pub fn parse_doc_key(key: &[u8]) -> Result<(CollectionName, DocId), KeyError> {
    let sep = key
        .iter()
        .position(|b| *b == SEP)
        .ok_or_else(|| bad("document key without a separator"))?;
    let collection = parse_collection(&key[..sep])?;
    let id = parse_id(&key[sep + 1..])?;
    Ok((collection, id))
}

fn parse_collection(bytes: &[u8]) -> Result<CollectionName, KeyError> {
    let name = std::str::from_utf8(bytes).map_err(|_| bad("collection name is not UTF-8"))?;
    CollectionName::new(name).map_err(|e| bad(format!("collection name: {e}")))
}

fn parse_id(bytes: &[u8]) -> Result<DocId, KeyError> {
    let text = std::str::from_utf8(bytes).map_err(|_| bad("_id is not UTF-8"))?;
    DocId::from_canonical(text).map_err(|e| bad(format!("_id: {e}")))
}

// ---------------------------------------------------------------------------------------
// Change index: runs `actor(8) last-seq(8, BE) commit(8, BE) part(4, BE)` → entries.

/// The change-index key of a run: entries of `actor`'s writes, the greatest of them
/// `last_seq`, written by the commit that ended at LSN `commit` (its `part`-th run of
/// the actor). Keys sort by actor, then by the run's last write, so the runs holding
/// writes after `seq` are exactly those from [`change_seek`]`(actor, seq)` on.
pub fn change_run_key(actor: ActorId, last_seq: u64, commit: Lsn, part: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(28);
    key.extend_from_slice(&actor.to_bytes());
    key.extend_from_slice(&last_seq.to_be_bytes());
    key.extend_from_slice(&commit.to_be_bytes());
    key.extend_from_slice(&part.to_be_bytes());
    key
}

/// The actor and last sequence number of a change-run key.
pub fn parse_change_run_key(key: &[u8]) -> Result<Dot, KeyError> {
    if key.len() != 28 {
        return Err(bad("change-index key is not 28 bytes"));
    }
    let actor = ActorId::from_bytes(key[..8].try_into().expect("8 bytes"));
    let seq = u64::from_be_bytes(key[8..16].try_into().expect("8 bytes"));
    Ok(Dot { actor, seq })
}

/// The first change-run key of `actor` whose last write is at least `seq`.
pub fn change_seek(actor: ActorId, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(16);
    key.extend_from_slice(&actor.to_bytes());
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The first change-index key after every key of `actor`, or `None` for the last
/// possible actor.
pub fn change_actor_end(actor: ActorId) -> Option<Vec<u8>> {
    let next = u64::from_be_bytes(actor.to_bytes()).checked_add(1)?;
    Some(next.to_be_bytes().to_vec())
}

/// One change-index entry: write `seq` of the run's actor is part of the stored state
/// of a document. One write may touch several documents.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChangeEntry {
    pub seq: u64,
    pub collection: CollectionName,
    pub id: DocId,
}

/// A change run's value: its `(seq, collection, id)` entries in order, each
/// `seq(varint) collection(str) id` (postcard's varints and strings), the collection
/// empty when it is the previous entry's and the id written as [`push_shared_id`] does.
/// A batch's ids usually share most of their bytes with the previous one, so an entry
/// takes a few bytes, not the twenty of its collection and id (format 5).
pub fn encode_change_run<'e>(
    entries: impl IntoIterator<Item = (u64, &'e CollectionName, &'e DocId)>,
) -> Vec<u8> {
    let entries = entries.into_iter();
    // A few bytes of sequence number, lengths and the id's last bytes per entry.
    let mut out = Vec::with_capacity(entries.size_hint().0 * 8);
    let mut previous: Option<(&CollectionName, &DocId)> = None;
    for (seq, collection, id) in entries {
        push_varint(&mut out, seq);
        let same = previous.is_some_and(|(c, _)| c == collection);
        push_bytes(
            &mut out,
            if same {
                b""
            } else {
                collection.as_str().as_bytes()
            },
        );
        push_shared_id(&mut out, previous.map(|(_, id)| id), id);
        previous = Some((collection, id));
    }
    out
}

/// Reads back [`encode_change_run`].
pub fn decode_change_run(mut value: &[u8]) -> Result<Vec<ChangeEntry>, KeyError> {
    let mut entries: Vec<ChangeEntry> = Vec::new();
    while !value.is_empty() {
        let ((seq, collection), rest) = postcard::take_from_bytes::<(u64, &[u8])>(value)
            .map_err(|_| bad("change-index run with a truncated entry"))?;
        let previous = entries.last();
        let collection = match (collection, previous) {
            (b"", Some(previous)) => previous.collection.clone(),
            (b"", None) => {
                return Err(bad(
                    "change-index run whose first entry names no collection",
                ));
            }
            (name, _) => parse_collection(name)?,
        };
        let (id, rest) = take_shared_id(rest, previous.map(|e| &e.id))?;
        entries.push(ChangeEntry {
            seq,
            collection,
            id,
        });
        value = rest;
    }
    Ok(entries)
}

/// Reads a change run of format 4 and earlier, each entry `seq(varint)
/// collection(str) id(str)`: for the migration to format 5.
pub fn decode_change_run_v4(mut value: &[u8]) -> Result<Vec<ChangeEntry>, KeyError> {
    let mut entries = Vec::new();
    while !value.is_empty() {
        let ((seq, collection, id), rest) =
            postcard::take_from_bytes::<(u64, &str, &str)>(value)
                .map_err(|_| bad("change-index run with a truncated entry"))?;
        entries.push(ChangeEntry {
            seq,
            collection: parse_collection(collection.as_bytes())?,
            id: parse_id(id.as_bytes())?,
        });
        value = rest;
    }
    Ok(entries)
}

/// Writes `id` after `previous` (the run's entry before, if any): how many leading
/// bytes of its canonical text it shares with the previous id's (varint), then the rest
/// (postcard bytes).
fn push_shared_id(out: &mut Vec<u8>, previous: Option<&DocId>, id: &DocId) {
    let id = id.as_canonical().as_bytes();
    let shared = previous.map_or(0, |previous| {
        let previous = previous.as_canonical().as_bytes();
        previous.iter().zip(id).take_while(|(a, b)| a == b).count()
    });
    push_varint(out, shared as u64);
    push_bytes(out, &id[shared..]);
}

/// Reads back an id written by [`push_shared_id`], and what follows it.
fn take_shared_id<'v>(
    value: &'v [u8],
    previous: Option<&DocId>,
) -> Result<(DocId, &'v [u8]), KeyError> {
    let ((shared, rest), after) = postcard::take_from_bytes::<(u64, &[u8])>(value)
        .map_err(|_| bad("index run with a truncated _id"))?;
    let previous = previous.map_or(&b""[..], |id| id.as_canonical().as_bytes());
    let shared = usize::try_from(shared)
        .ok()
        .and_then(|shared| previous.get(..shared))
        .ok_or_else(|| bad("index run entry sharing more of an _id than there is"))?;
    Ok((parse_id(&[shared, rest].concat())?, after))
}

// ---------------------------------------------------------------------------------------
// LSN index: runs `collection 0x00 first-lsn(8, BE)` → entries.

/// The LSN-index key of the run of `collection` whose entries start at `lsn` (no entry
/// of it is older). Runs of a collection never overlap, so the run holding `lsn`, if
/// any, is the last one whose key is at most `lsn_key(collection, lsn)`.
pub fn lsn_key(collection: &CollectionName, lsn: Lsn) -> Vec<u8> {
    let mut key = collection_prefix(collection);
    key.extend_from_slice(&lsn.to_be_bytes());
    key
}

/// Reads the first LSN back from an LSN-index key of `collection`.
pub fn parse_lsn_key(collection: &CollectionName, key: &[u8]) -> Result<Lsn, KeyError> {
    let prefix = collection_prefix(collection);
    match key.strip_prefix(prefix.as_slice()) {
        Some(lsn) => decode_u64(lsn).map_err(|_| bad("LSN-index key without an 8-byte LSN")),
        None => Err(bad("LSN-index key of another collection")),
    }
}

/// An LSN run's value: `(lsn, id)` entries in LSN order, each `lsn - first(varint)
/// id`, `first` being the LSN of the run's key and the id written as [`push_shared_id`]
/// does (format 5).
pub fn encode_lsn_run<'e>(
    first: Lsn,
    entries: impl IntoIterator<Item = (Lsn, &'e DocId)>,
) -> Vec<u8> {
    let entries = entries.into_iter();
    // About a byte of offset, two of lengths and the id's last bytes per entry.
    let mut out = Vec::with_capacity(entries.size_hint().0 * 6);
    let mut previous = None;
    for (lsn, id) in entries {
        let offset = lsn
            .checked_sub(first)
            .expect("a run's entries are not older than its key");
        push_varint(&mut out, offset);
        push_shared_id(&mut out, previous, id);
        previous = Some(id);
    }
    out
}

/// Reads back [`encode_lsn_run`].
pub fn decode_lsn_run(first: Lsn, mut value: &[u8]) -> Result<Vec<(Lsn, DocId)>, KeyError> {
    let mut entries: Vec<(Lsn, DocId)> = Vec::new();
    while !value.is_empty() {
        let (offset, rest) = postcard::take_from_bytes::<u64>(value)
            .map_err(|_| bad("LSN-index run with a truncated entry"))?;
        let lsn = first
            .checked_add(offset)
            .ok_or_else(|| bad("LSN-index entry beyond the greatest LSN"))?;
        let (id, rest) = take_shared_id(rest, entries.last().map(|(_, id)| id))?;
        entries.push((lsn, id));
        value = rest;
    }
    Ok(entries)
}

/// Reads an LSN run of format 4 and earlier, each entry `lsn - first(varint) id(str)`:
/// for the migration to format 5.
pub fn decode_lsn_run_v4(first: Lsn, mut value: &[u8]) -> Result<Vec<(Lsn, DocId)>, KeyError> {
    let mut entries = Vec::new();
    while !value.is_empty() {
        let ((offset, id), rest) = postcard::take_from_bytes::<(u64, &str)>(value)
            .map_err(|_| bad("LSN-index run with a truncated entry"))?;
        let lsn = first
            .checked_add(offset)
            .ok_or_else(|| bad("LSN-index entry beyond the greatest LSN"))?;
        entries.push((lsn, parse_id(id.as_bytes())?));
        value = rest;
    }
    Ok(entries)
}

// ---------------------------------------------------------------------------------------
// The index rows of format 2 (a row per entry), read only to migrate them.

/// A format-2 change-index key, `actor(8) seq(8, BE) collection 0x00 id`.
pub fn parse_v2_change_key(key: &[u8]) -> Result<(Dot, ChangeEntry), KeyError> {
    if key.len() < 16 {
        return Err(bad("change-index key is too short"));
    }
    let actor = ActorId::from_bytes(key[..8].try_into().expect("8 bytes"));
    let seq = u64::from_be_bytes(key[8..16].try_into().expect("8 bytes"));
    let (collection, id) = parse_doc_key(&key[16..])?;
    Ok((
        Dot { actor, seq },
        ChangeEntry {
            seq,
            collection,
            id,
        },
    ))
}

/// Splits an LSN-index key of any collection, `collection 0x00 lsn(8, BE)` (the layout
/// of format 2's rows and of every later format's runs), into its two parts.
pub fn split_lsn_key(key: &[u8]) -> Result<(CollectionName, Lsn), KeyError> {
    let sep = key
        .iter()
        .position(|b| *b == SEP)
        .ok_or_else(|| bad("LSN-index key without a separator"))?;
    let lsn =
        decode_u64(&key[sep + 1..]).map_err(|_| bad("LSN-index key without an 8-byte LSN"))?;
    Ok((parse_collection(&key[..sep])?, lsn))
}

/// The id a format-2 LSN-index row (`collection 0x00 lsn(8, BE)`) holds: its
/// canonical JSON.
pub fn parse_v2_lsn_value(value: &[u8]) -> Result<DocId, KeyError> {
    parse_id(value)
}

// ---------------------------------------------------------------------------------------
// Sync state: `'b' incarnation(16) query(16)` → bookmark.

const BOOKMARK: u8 = b'b';

/// The `peers` key of the bookmark for a peer's store incarnation and a query.
pub fn bookmark_key(peer: &Incarnation, query: &QueryId) -> Vec<u8> {
    let mut key = Vec::with_capacity(33);
    key.push(BOOKMARK);
    key.extend_from_slice(&peer.0);
    key.extend_from_slice(&query.0);
    key
}

// ---------------------------------------------------------------------------------------
// Document values: `len(varint) lsns encode_doc`.

/// A document as stored: its change numbers (length-prefixed) and its encoded state.
pub fn encode_doc_value(lsns: &DocLsns, state: &DocState, encoded_doc: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_doc_value(&mut out, lsns, state, encoded_doc);
    out
}

/// [`encode_doc_value`] written into `out` (cleared first), so that a commit can reuse
/// one buffer for every document it writes.
pub fn write_doc_value(out: &mut Vec<u8>, lsns: &DocLsns, state: &DocState, encoded_doc: &[u8]) {
    out.clear();
    out.reserve(16 + encoded_doc.len());
    // The change numbers, after their length (read back as a `u32`).
    let len = push_length_prefixed(out, |out| lsns.encode(state, out));
    assert!(
        u32::try_from(len).is_ok(),
        "change numbers of one document fit in 4 GiB"
    );
    out.extend_from_slice(encoded_doc);
}

/// Splits a stored document into its change-number bytes and its encoded state.
fn split_doc_value(value: &[u8]) -> Result<(&[u8], &[u8]), KeyError> {
    let (len, rest) = postcard::take_from_bytes::<u32>(value)
        .map_err(|_| bad("document value without its change numbers"))?;
    let len = len as usize;
    if rest.len() < len {
        return Err(bad("document value shorter than its change numbers"));
    }
    Ok(rest.split_at(len))
}

/// Reads the state of a stored document (not its change numbers).
pub fn decode_doc_value(value: &[u8]) -> Result<DocState, KeyError> {
    let (_, doc) = split_doc_value(value)?;
    decode_doc(doc).map_err(|e| bad(e.to_string()))
}

/// Reads a stored document and its change numbers.
pub fn decode_doc_value_with_lsns(value: &[u8]) -> Result<(DocState, DocLsns), KeyError> {
    let (meta, doc) = split_doc_value(value)?;
    let state = decode_doc(doc).map_err(|e| bad(e.to_string()))?;
    let (lsns, used) = DocLsns::decode(meta, &state).map_err(|e| bad(e.to_string()))?;
    if used != meta.len() {
        return Err(bad("trailing bytes after a document's change numbers"));
    }
    Ok((state, lsns))
}

// ---------------------------------------------------------------------------------------
// Secondary indexes: `index-name 0x00 value-encoding id`.

/// Type tags of the index value encoding, in the order values sort. `0x00` ends arrays
/// and objects and `0x01` starts an object entry, so both stay below every tag.
const END: u8 = 0x00;
const ENTRY: u8 = 0x01;
const TAG_NULL: u8 = 0x02;
const TAG_FALSE: u8 = 0x03;
const TAG_TRUE: u8 = 0x04;
const TAG_NUMBER: u8 = 0x05;
const TAG_STRING: u8 = 0x06;
const TAG_ARRAY: u8 = 0x07;
const TAG_OBJECT: u8 = 0x08;

/// The prefix of every entry of index `name`.
pub fn index_prefix(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 1 + 16);
    key.extend_from_slice(name.as_bytes());
    key.push(SEP);
    key
}

/// The smallest key after every entry of index `name`.
pub fn index_end(name: &str) -> Vec<u8> {
    let mut key = name.as_bytes().to_vec();
    key.push(SEP + 1);
    key
}

/// The key of one index entry: the document `id` has `encoded` (from
/// [`encode_index_value`]) at the indexed path.
pub fn index_key(name: &str, encoded: &[u8], id: &DocId) -> Vec<u8> {
    let mut key = index_prefix(name);
    key.extend_from_slice(encoded);
    key.extend_from_slice(id.as_canonical().as_bytes());
    key
}

/// Splits an index key (of index `name`) into its value encoding and document id.
pub fn parse_index_key<'k>(name: &str, key: &'k [u8]) -> Result<(&'k [u8], DocId), KeyError> {
    let rest = key
        .strip_prefix(index_prefix(name).as_slice())
        .ok_or_else(|| bad("index key of another index"))?;
    let len = value_len(rest)?;
    Ok((&rest[..len], parse_id(&rest[len..])?))
}

/// An order-preserving, self-delimiting encoding of a JSON value: comparing encodings
/// byte by byte gives the order `null < false < true < numbers < strings < arrays <
/// objects`; numbers in numeric order, exact across integers and floats (`1` and `1.0`
/// encode the same); strings by bytes; arrays element by element, then shorter first;
/// objects entry by entry with keys sorted, then fewer entries first. This is the
/// ORDER BY order of the query language, and equal values (in its sense) encode
/// equally. No encoding is a prefix of another, so a document id can follow it in a
/// key without disturbing the order.
///
/// Numbers: the tag, the `f64` nearest to the number with the sign-flip trick (8 bytes),
/// then the exact difference between the number and that `f64` as an `i32` with its
/// sign bit flipped (4 bytes). The difference is zero except for integers beyond 2^53,
/// where it keeps distinct integers distinct and ordered.
pub fn encode_index_value(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    encode_value_into(value, &mut out);
    out
}

fn encode_value_into(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.push(TAG_NULL),
        Value::Bool(false) => out.push(TAG_FALSE),
        Value::Bool(true) => out.push(TAG_TRUE),
        Value::Number(n) => {
            out.push(TAG_NUMBER);
            let (image, offset) = number_parts(n);
            out.extend_from_slice(&sortable_f64(image).to_be_bytes());
            out.extend_from_slice(&((offset as u32) ^ (1 << 31)).to_be_bytes());
        }
        Value::String(s) => {
            out.push(TAG_STRING);
            encode_bytes(s.as_bytes(), out);
        }
        Value::Array(items) => {
            out.push(TAG_ARRAY);
            for item in items {
                encode_value_into(item, out);
            }
            out.push(END);
        }
        Value::Object(map) => {
            out.push(TAG_OBJECT);
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            for (key, item) in entries {
                out.push(ENTRY);
                encode_bytes(key.as_bytes(), out);
                encode_value_into(item, out);
            }
            out.push(END);
        }
    }
}

/// The `f64` nearest to `n` and the exact remainder `n - f64`.
fn number_parts(n: &Number) -> (f64, i32) {
    let exact: Option<i128> = n
        .as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from));
    match exact {
        Some(int) => {
            // Rounds to nearest; for |int| <= 2^53 it is exact and the offset is 0,
            // beyond it the image is an integer within 2^11 of `int`.
            let image = int as f64;
            (image, (int - image as i128) as i32)
        }
        None => {
            let float = n.as_f64().unwrap_or(0.0);
            // -0.0 equals 0.0.
            (if float == 0.0 { 0.0 } else { float }, 0)
        }
    }
}

/// Bits of an `f64` that sort as the number does (no NaN in JSON).
fn sortable_f64(value: f64) -> u64 {
    let bits = value.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits ^ (1 << 63)
    }
}

/// Bytes with `0x00` escaped as `0x00 0xFF`, then the terminator `0x00 0x01`: keeps byte
/// order and is self-delimiting.
fn encode_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
}

/// The length of the value encoding at the start of `bytes`.
fn value_len(bytes: &[u8]) -> Result<usize, KeyError> {
    let tag = *bytes.first().ok_or_else(|| bad("index value is empty"))?;
    match tag {
        TAG_NULL | TAG_FALSE | TAG_TRUE => Ok(1),
        TAG_NUMBER if bytes.len() >= 13 => Ok(13),
        TAG_STRING => Ok(1 + bytes_len(&bytes[1..])?),
        TAG_ARRAY => {
            let mut at = 1;
            loop {
                match bytes.get(at) {
                    Some(&END) => return Ok(at + 1),
                    Some(_) => at += value_len(&bytes[at..])?,
                    None => return Err(bad("index array value is truncated")),
                }
            }
        }
        TAG_OBJECT => {
            let mut at = 1;
            loop {
                match bytes.get(at) {
                    Some(&END) => return Ok(at + 1),
                    Some(&ENTRY) => {
                        at += 1 + bytes_len(&bytes[at + 1..])?;
                        at += value_len(&bytes[at..])?;
                    }
                    _ => return Err(bad("index object value is malformed")),
                }
            }
        }
        _ => Err(bad(format!("index value has unknown tag {tag:#04x}"))),
    }
}

/// The length of an [`encode_bytes`] encoding at the start of `bytes`.
fn bytes_len(bytes: &[u8]) -> Result<usize, KeyError> {
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == 0 {
            match bytes.get(at + 1) {
                Some(0x01) => return Ok(at + 2),
                Some(0xFF) => at += 2,
                _ => return Err(bad("bad escape in index string")),
            }
        } else {
            at += 1;
        }
    }
    Err(bad("index string is unterminated"))
}

// ---------------------------------------------------------------------------------------
// Attachments.

const BLOB_RECORD: u8 = b'm';
const BLOB_CHUNK: u8 = b'c';
const BLOB_STAGED: u8 = b's';

/// The key of a blob's record (present once the blob is complete and verified).
pub fn blob_record_key(hash: &[u8; 32]) -> Vec<u8> {
    let mut key = Vec::with_capacity(33);
    key.push(BLOB_RECORD);
    key.extend_from_slice(hash);
    key
}

/// The prefix of every blob record key.
pub fn blob_record_prefix() -> Vec<u8> {
    vec![BLOB_RECORD]
}

/// Reads the hash back from a blob record key.
pub fn parse_blob_record_key(key: &[u8]) -> Result<[u8; 32], KeyError> {
    match key.split_first() {
        Some((&BLOB_RECORD, hash)) => hash
            .try_into()
            .map_err(|_| bad("blob record key has the wrong length")),
        _ => Err(bad("not a blob record key")),
    }
}

/// The key of chunk `index` of a blob.
pub fn blob_chunk_key(hash: &[u8; 32], index: u32) -> Vec<u8> {
    let mut key = blob_chunk_prefix(hash);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// The prefix of every chunk key of a blob.
pub fn blob_chunk_prefix(hash: &[u8; 32]) -> Vec<u8> {
    let mut key = Vec::with_capacity(37);
    key.push(BLOB_CHUNK);
    key.extend_from_slice(hash);
    key
}

/// The prefix of every chunk key of every blob.
pub fn blob_chunks_prefix() -> Vec<u8> {
    vec![BLOB_CHUNK]
}

/// Reads hash and chunk index back from a chunk key.
pub fn parse_blob_chunk_key(key: &[u8]) -> Result<([u8; 32], u32), KeyError> {
    match key.split_first() {
        Some((&BLOB_CHUNK, rest)) if rest.len() == 36 => Ok((
            rest[..32].try_into().expect("32 bytes"),
            u32::from_be_bytes(rest[32..].try_into().expect("4 bytes")),
        )),
        _ => Err(bad("not a blob chunk key")),
    }
}

/// The key of a staged chunk of an upload whose hash is not known yet.
pub fn blob_staged_key(upload: u64, index: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(13);
    key.push(BLOB_STAGED);
    key.extend_from_slice(&upload.to_be_bytes());
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// The range of every staged chunk (left behind only by an interrupted upload).
pub fn blob_staged_range() -> (Vec<u8>, Vec<u8>) {
    (vec![BLOB_STAGED], vec![BLOB_STAGED + 1])
}

// ---------------------------------------------------------------------------------------
// Metadata and the store's own values.

/// The `meta` key of the node's metadata entry `key` (kept apart from the store's own).
pub fn meta_key(key: &str) -> Vec<u8> {
    let mut out = META_NODE_PREFIX.to_vec();
    out.extend_from_slice(key.as_bytes());
    out
}

/// Version byte of [`encode_version_vector`].
const VV_V1: u8 = 1;

/// A version vector as stored: a version byte, then `actor(8) seq(8, BE)` per actor.
pub fn encode_version_vector(vv: &VersionVector) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 16 * vv.len());
    out.push(VV_V1);
    for (actor, seq) in vv.iter() {
        out.extend_from_slice(&actor.to_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
    }
    out
}

/// Reads back [`encode_version_vector`].
pub fn decode_version_vector(bytes: &[u8]) -> Result<VersionVector, KeyError> {
    match bytes.split_first() {
        Some((&VV_V1, body)) if body.len() % 16 == 0 => Ok(body
            .chunks_exact(16)
            .map(|pair| {
                let actor = ActorId::from_bytes(pair[..8].try_into().expect("8 bytes"));
                (
                    actor,
                    u64::from_be_bytes(pair[8..].try_into().expect("8 bytes")),
                )
            })
            .collect()),
        Some((&VV_V1, _)) => Err(bad("version vector has a partial entry")),
        Some((version, _)) => Err(bad(format!("version vector has unknown version {version}"))),
        None => Err(bad("version vector is empty")),
    }
}

/// A `u64` as stored (big-endian).
pub fn decode_u64(bytes: &[u8]) -> Result<u64, KeyError> {
    Ok(u64::from_be_bytes(
        bytes.try_into().map_err(|_| bad("expected 8 bytes"))?,
    ))
}

/// A `u32` as stored (big-endian).
pub fn decode_u32(bytes: &[u8]) -> Result<u32, KeyError> {
    Ok(u32::from_be_bytes(
        bytes.try_into().map_err(|_| bad("expected 4 bytes"))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use std::cmp::Ordering;

    fn coll(name: &str) -> CollectionName {
        CollectionName::new(name).unwrap()
    }

    #[test]
    fn lsn_keys_sort_by_collection_then_lsn() {
        let keys = [
            lsn_key(&coll("a"), 2),
            lsn_key(&coll("a"), 256),
            lsn_key(&coll("a"), u64::MAX),
            lsn_key(&coll("ab"), 1),
            lsn_key(&coll("b"), 0),
        ];
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(parse_lsn_key(&coll("a"), &keys[1]), Ok(256));
        assert!(parse_lsn_key(&coll("b"), &keys[1]).is_err());
        assert!(parse_lsn_key(&coll("a"), b"a\0short").is_err());
    }

    #[test]
    fn document_values_carry_their_change_numbers() {
        use trellis_common::clock::Hlc;
        use trellis_common::codec::encode_doc;
        use trellis_common::crdt::{Stamp, WriteContext};
        let actor = ActorId::from_u64(3);
        let ctx = WriteContext {
            stamp: Stamp {
                hlc: Hlc::new(5, 0),
                actor,
            },
            dot: Dot { actor, seq: 1 },
        };
        let state = DocState::insert_delta(ctx, &json!({"a": 1})).unwrap();
        let lsns = DocLsns::new(42);
        let value = encode_doc_value(&lsns, &state, &encode_doc(&state));
        assert_eq!(decode_doc_value(&value), Ok(state.clone()));
        assert_eq!(decode_doc_value_with_lsns(&value), Ok((state, lsns)));
        assert!(decode_doc_value(&value[..3]).is_err());
        assert!(decode_doc_value(&[0xff]).is_err());
    }

    #[test]
    fn change_numbers_longer_than_a_one_byte_length_are_kept() {
        use trellis_common::clock::Hlc;
        use trellis_common::codec::encode_doc;
        use trellis_common::crdt::{Crdt, Mutation, Path, Stamp, WriteContext};
        let actor = ActorId::from_u64(3);
        let ctx = |seq: u64| WriteContext {
            stamp: Stamp {
                hlc: Hlc::new(seq, 0),
                actor,
            },
            dot: Dot { actor, seq },
        };
        let fields: serde_json::Map<String, Value> =
            (0..100).map(|i| (format!("f{i:03}"), json!(i))).collect();
        let before = DocState::insert_delta(ctx(1), &Value::Object(fields)).unwrap();
        let mut after = before.clone();
        let set = [Mutation::Set(Path::new(["f000"]), json!("changed"))];
        after.merge(&before.update_delta(ctx(2), &set).unwrap());
        // Ninety-nine entries keep LSN 1 while the document moves to LSN 2.
        let mut lsns = DocLsns::new(1);
        assert!(lsns.record(&before, &after, 2));
        let value = encode_doc_value(&lsns, &after, &encode_doc(&after));
        assert!(value[0] >= 0x80, "the length takes more than one byte");
        assert_eq!(decode_doc_value_with_lsns(&value), Ok((after, lsns)));
    }

    fn id(value: Value) -> DocId {
        DocId::from_json(&value).unwrap()
    }

    fn a(n: u64) -> ActorId {
        ActorId::from_u64(n)
    }

    #[test]
    fn document_keys_of_a_collection_are_contiguous_and_sorted_by_id() {
        let names = ["a", "a-b", "a_", "ab", "b", "B", "a0"];
        let ids = [
            json!("x"),
            json!("a"),
            json!("ab"),
            json!({"k": 1}),
            json!("é"),
        ];
        let mut keys = Vec::new();
        for name in names {
            for i in &ids {
                keys.push((doc_key(&coll(name), &id(i.clone())), name, id(i.clone())));
            }
        }
        keys.sort_by(|x, y| x.0.cmp(&y.0));
        // Each collection is one run, runs in name order, ids in DocId order within.
        let runs: Vec<&str> = keys.iter().map(|k| k.1).collect();
        let mut expected_names: Vec<&str> = names.to_vec();
        expected_names.sort();
        let mut expected = Vec::new();
        for name in expected_names {
            expected.extend(std::iter::repeat_n(name, ids.len()));
        }
        assert_eq!(runs, expected);
        for run in keys.chunks(ids.len()) {
            let got: Vec<&DocId> = run.iter().map(|k| &k.2).collect();
            let mut sorted = got.clone();
            sorted.sort();
            assert_eq!(got, sorted);
            for k in run {
                assert!(k.0.starts_with(&collection_prefix(&coll(k.1))));
                assert!(k.0 < collection_end(&coll(k.1)));
                assert_eq!(parse_doc_key(&k.0).unwrap(), (coll(k.1), k.2.clone()));
            }
        }
    }

    #[test]
    fn change_run_keys_sort_by_actor_then_last_sequence_numerically() {
        let mut dots = vec![];
        for actor in [a(2), a(1), a(256), a(u64::MAX)] {
            for seq in [1, 2, 255, 256, 65_536, u64::MAX] {
                dots.push(Dot { actor, seq });
            }
        }
        let mut keys: Vec<(Vec<u8>, Dot)> = dots
            .iter()
            .map(|d| (change_run_key(d.actor, d.seq, 1_000 - d.seq % 1_000, 7), *d))
            .collect();
        keys.sort();
        let order: Vec<Dot> = keys.iter().map(|k| k.1).collect();
        let mut expected = dots.clone();
        expected.sort();
        assert_eq!(order, expected);
        // A seek for (actor, seq) lands on the first run whose last write is at least
        // seq, within the actor.
        let seek = change_seek(a(2), 256);
        let first = keys.iter().find(|k| k.0 >= seek).unwrap();
        assert_eq!(
            first.1,
            Dot {
                actor: a(2),
                seq: 256
            }
        );
        let end = change_actor_end(a(2)).unwrap();
        assert!(keys.iter().filter(|k| k.1.actor == a(2)).all(|k| k.0 < end));
        assert!(change_actor_end(a(u64::MAX)).is_none());
        assert_eq!(parse_change_run_key(&keys[0].0), Ok(keys[0].1));
        assert!(parse_change_run_key(&keys[0].0[..27]).is_err());
    }

    #[test]
    fn runs_round_trip_and_reject_truncation() {
        let entries: Vec<ChangeEntry> = [
            (3, "cars", json!("a")),
            (4, "cars", json!("doc-0000001")),
            (5, "cars", json!("doc-0000002")),
            (9, "cars", json!("doc-0000002")),
            (u64::MAX, "vans", json!("doc-0000003")),
            (7, "cars", json!({"k": 1})),
        ]
        .into_iter()
        .map(|(seq, c, i)| ChangeEntry {
            seq,
            collection: coll(c),
            id: id(i),
        })
        .collect();
        let value = encode_change_run(entries.iter().map(|e| (e.seq, &e.collection, &e.id)));
        assert_eq!(decode_change_run(&value), Ok(entries));
        assert!(decode_change_run(&value[..value.len() - 1]).is_err());
        assert_eq!(decode_change_run(&[]), Ok(vec![]));

        let lsns = vec![
            (40, id(json!("a"))),
            (40, id(json!("ab"))),
            (41, id(json!("b"))),
            (300, id(json!("b7"))),
        ];
        let value = encode_lsn_run(40, lsns.iter().map(|(l, i)| (*l, i)));
        assert_eq!(decode_lsn_run(40, &value), Ok(lsns));
        assert!(decode_lsn_run(40, &value[..value.len() - 1]).is_err());
        // An offset past the greatest LSN is corrupt, not a wrap-around.
        assert!(decode_lsn_run(u64::MAX, &value).is_err());
    }

    #[test]
    fn runs_write_the_part_of_an_id_the_previous_entry_does_not_share() {
        let (first, second) = (id(json!("doc-0000001")), id(json!("doc-0000002")));
        let cars = coll("cars");
        let value = encode_lsn_run(7, [(7, &first), (8, &second)]);
        let mut expected = postcard::to_stdvec(&(0u64, 0u64, first.as_canonical())).unwrap();
        expected = postcard::to_extend(&(1u64, 11u64, "2\""), expected).unwrap();
        assert_eq!(value, expected);
        // The collection is named again only when it changes.
        let value = encode_change_run([(1, &cars, &first), (2, &cars, &second)]);
        let mut expected =
            postcard::to_stdvec(&(1u64, "cars", 0u64, first.as_canonical())).unwrap();
        expected = postcard::to_extend(&(2u64, "", 11u64, "2\""), expected).unwrap();
        assert_eq!(value, expected);
    }

    #[test]
    fn corrupt_runs_are_errors() {
        // A first entry sharing bytes with no previous id, or naming no collection.
        let shared = postcard::to_stdvec(&(0u64, 2u64, "a\"")).unwrap();
        assert!(decode_lsn_run(0, &shared).is_err());
        let unnamed = postcard::to_stdvec(&(1u64, "", 0u64, "\"a\"")).unwrap();
        assert!(decode_change_run(&unnamed).is_err());
        // Sharing more than the previous id has.
        let mut value = encode_lsn_run(0, [(0, &id(json!("a")))]);
        value = postcard::to_extend(&(1u64, 9u64, "b\""), value).unwrap();
        assert!(decode_lsn_run(0, &value).is_err());
        // An id that is not canonical JSON once put together.
        let mut value = encode_lsn_run(0, [(0, &id(json!("a")))]);
        value = postcard::to_extend(&(1u64, 2u64, "x"), value).unwrap();
        assert!(decode_lsn_run(0, &value).is_err());
    }

    #[test]
    fn format_4_runs_read_for_the_migration() {
        let (c, i) = (coll("cars"), id(json!("x17")));
        let change = postcard::to_stdvec(&(5u64, c.as_str(), i.as_canonical())).unwrap();
        assert_eq!(
            decode_change_run_v4(&change),
            Ok(vec![ChangeEntry {
                seq: 5,
                collection: c,
                id: i.clone(),
            }])
        );
        let lsn = postcard::to_stdvec(&(2u64, i.as_canonical())).unwrap();
        assert_eq!(decode_lsn_run_v4(10, &lsn), Ok(vec![(12, i)]));
        assert!(decode_lsn_run_v4(10, &lsn[..lsn.len() - 1]).is_err());
    }

    #[test]
    fn format_2_index_rows_parse_for_the_migration() {
        let mut key = a(5).to_bytes().to_vec();
        key.extend_from_slice(&9u64.to_be_bytes());
        key.extend_from_slice(&doc_key(&coll("cars"), &id(json!("x"))));
        let (dot, entry) = parse_v2_change_key(&key).unwrap();
        assert_eq!(
            dot,
            Dot {
                actor: a(5),
                seq: 9
            }
        );
        assert_eq!(
            (entry.seq, entry.collection, entry.id),
            (9, coll("cars"), id(json!("x")))
        );
        assert!(parse_v2_change_key(&key[..10]).is_err());
        assert_eq!(parse_v2_lsn_value(b"\"x\""), Ok(id(json!("x"))));
        assert_eq!(
            split_lsn_key(&lsn_key(&coll("cars"), 7)),
            Ok((coll("cars"), 7))
        );
        assert!(split_lsn_key(b"cars\0\x01").is_err());
    }

    /// The reference order (the query language's ORDER BY order) used to check the
    /// encoding.
    fn reference_cmp(a: &Value, b: &Value) -> Ordering {
        fn rank(v: &Value) -> u8 {
            match v {
                Value::Null => 0,
                Value::Bool(_) => 1,
                Value::Number(_) => 2,
                Value::String(_) => 3,
                Value::Array(_) => 4,
                Value::Object(_) => 5,
            }
        }
        fn exact(n: &Number) -> Option<i128> {
            n.as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from))
        }
        fn num_cmp(x: &Number, y: &Number) -> Ordering {
            match (exact(x), exact(y)) {
                (Some(i), Some(j)) => i.cmp(&j),
                (Some(i), None) => int_float(i, y.as_f64().unwrap()),
                (None, Some(j)) => int_float(j, x.as_f64().unwrap()).reverse(),
                (None, None) => x
                    .as_f64()
                    .unwrap()
                    .partial_cmp(&y.as_f64().unwrap())
                    .unwrap(),
            }
        }
        fn int_float(i: i128, f: f64) -> Ordering {
            let floor = f.floor();
            if floor >= 18_446_744_073_709_551_616.0 {
                return Ordering::Less;
            }
            if floor < -9_223_372_036_854_775_808.0 {
                return Ordering::Greater;
            }
            match i.cmp(&(floor as i128)) {
                Ordering::Equal if f > floor => Ordering::Less,
                o => o,
            }
        }
        rank(a).cmp(&rank(b)).then_with(|| match (a, b) {
            (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
            (Value::Number(x), Value::Number(y)) => num_cmp(x, y),
            (Value::String(x), Value::String(y)) => x.as_bytes().cmp(y.as_bytes()),
            (Value::Array(x), Value::Array(y)) => x
                .iter()
                .zip(y)
                .map(|(x, y)| reference_cmp(x, y))
                .find(|o| o.is_ne())
                .unwrap_or_else(|| x.len().cmp(&y.len())),
            (Value::Object(x), Value::Object(y)) => {
                let mut x: Vec<_> = x.iter().collect();
                let mut y: Vec<_> = y.iter().collect();
                x.sort_by(|p, q| p.0.cmp(q.0));
                y.sort_by(|p, q| p.0.cmp(q.0));
                x.iter()
                    .zip(&y)
                    .map(|(p, q)| p.0.cmp(q.0).then_with(|| reference_cmp(p.1, q.1)))
                    .find(|o| o.is_ne())
                    .unwrap_or_else(|| x.len().cmp(&y.len()))
            }
            _ => Ordering::Equal,
        })
    }

    #[test]
    fn index_values_sort_null_bools_numbers_strings_arrays_objects() {
        let ordered = [
            json!(null),
            json!(false),
            json!(true),
            json!(-1e300),
            json!(i64::MIN),
            json!(-2.5),
            json!(-1),
            json!(0),
            json!(0.5),
            json!(1),
            json!(2),
            json!(9_007_199_254_740_992.0_f64),
            json!(9_007_199_254_740_993_i64),
            json!(9_007_199_254_740_994_i64),
            json!(i64::MAX),
            json!(u64::MAX),
            json!(1e300),
            json!(""),
            json!("\u{0}"),
            json!("a"),
            json!("a\u{0}"),
            json!("a\u{1}"),
            json!("ab"),
            json!("b"),
            json!([]),
            json!([null]),
            json!([1]),
            json!([1, 2]),
            json!([9]),
            json!([10]),
            json!(["a"]),
            json!({}),
            json!({"": 1}),
            json!({"a": 1}),
            json!({"a": 1, "b": 0}),
            json!({"a": 2}),
            json!({"b": 0}),
        ];
        for pair in ordered.windows(2) {
            let (x, y) = (encode_index_value(&pair[0]), encode_index_value(&pair[1]));
            assert!(x < y, "{} should sort before {}", pair[0], pair[1]);
        }
        assert_eq!(
            encode_index_value(&json!(1)),
            encode_index_value(&json!(1.0))
        );
        assert_eq!(
            encode_index_value(&json!(-0.0)),
            encode_index_value(&json!(0))
        );
        assert_eq!(
            encode_index_value(&json!({"a": 1, "b": 2})),
            encode_index_value(&json!({"b": 2, "a": 1}))
        );
    }

    #[test]
    fn index_keys_sort_by_value_then_id_and_parse_back() {
        let values = [json!(2), json!("x"), json!(1), json!([1]), json!(null)];
        let ids = [id(json!("b")), id(json!("a")), id(json!({"n": 1}))];
        let mut keys = Vec::new();
        for v in &values {
            for i in &ids {
                keys.push((
                    index_key("by_v", &encode_index_value(v), i),
                    v.clone(),
                    i.clone(),
                ));
            }
        }
        keys.sort_by(|x, y| x.0.cmp(&y.0));
        for pair in keys.windows(2) {
            let by_value = reference_cmp(&pair[0].1, &pair[1].1);
            assert!(by_value.then_with(|| pair[0].2.cmp(&pair[1].2)).is_lt());
        }
        for (key, value, i) in &keys {
            let (encoded, parsed) = parse_index_key("by_v", key).unwrap();
            assert_eq!(encoded, encode_index_value(value).as_slice());
            assert_eq!(&parsed, i);
            assert!(key.as_slice() < index_end("by_v").as_slice());
        }
        // Another index's keys stay out of this one's range.
        assert!(index_key("by_v2", &encode_index_value(&json!(0)), &ids[0]) > index_end("by_v"));
    }

    #[test]
    fn stored_small_values_round_trip() {
        let vv: VersionVector = [(a(1), 3), (a(9), 1 << 40)].into_iter().collect();
        assert_eq!(
            decode_version_vector(&encode_version_vector(&vv)).unwrap(),
            vv
        );
        assert!(decode_version_vector(&[1, 2, 3]).is_err());
        assert!(decode_version_vector(&[7]).is_err());
        let hash = [7; 32];
        assert_eq!(
            parse_blob_record_key(&blob_record_key(&hash)).unwrap(),
            hash
        );
        assert_eq!(
            parse_blob_chunk_key(&blob_chunk_key(&hash, 9)).unwrap(),
            (hash, 9)
        );
        assert!(blob_chunk_key(&hash, 1) < blob_chunk_key(&hash, 256));
        assert_eq!(meta_key("identity"), b"node/identity".to_vec());
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e20f64..1e20).prop_map(Value::from),
            prop_oneof![
                Just(9_007_199_254_740_992.0),
                Just(-9_007_199_254_740_992.0)
            ]
            .prop_map(Value::from),
            (-3i64..3).prop_map(Value::from),
            "[a-c\u{0}\u{1}]{0,3}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map("[a-b\u{0}]{0,2}", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn index_value_encoding_preserves_the_query_order(a in json_value(), b in json_value()) {
            let (x, y) = (encode_index_value(&a), encode_index_value(&b));
            prop_assert_eq!(x.cmp(&y), reference_cmp(&a, &b), "{} vs {}", a, b);
            // Self-delimiting: the parser finds exactly the encoding, whatever follows.
            let mut key = x.clone();
            key.extend_from_slice(b"\"id\"");
            prop_assert_eq!(value_len(&key).unwrap(), x.len());
        }
    }
}
