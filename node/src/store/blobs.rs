//! Attachments: content-addressed blobs (BLAKE3), stored in chunks of [`CHUNK_SIZE`],
//! referenced from documents by an [`AttachmentToken`].
//!
//! A blob is *complete* once its record exists: the record is written only after every
//! chunk is present and the whole content has been checked against the hash, and it
//! holds each chunk's own BLAKE3 hash so that any read, even of a byte range, verifies
//! what it returns. Chunks without a record are a fetch in progress ([`BlobStore::put_chunk`],
//! [`BlobStore::missing_chunks`], [`BlobStore::finish_blob`]): sync fetches blobs from
//! peers chunk by chunk, resumably, through these.
//!
//! Garbage collection ([`BlobStore::delete_unreferenced_blobs`]) deletes every blob,
//! complete or partial, that the caller does not list as referenced; the engine finds
//! references with [`attachment_refs`] and must not run it between storing a blob and
//! committing the document that references it.

use std::collections::HashSet;
use std::fmt;
use std::io::Read;

use serde_json::{Value, json};

use super::{Result, StoreError};

/// Size of every chunk but the last.
pub const CHUNK_SIZE: usize = 64 * 1024;

/// The key that marks a JSON object as an attachment reference.
pub const ATTACHMENT_KEY: &str = "_attachment";

/// The BLAKE3 hash of a blob's content: its identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobHash([u8; 32]);

impl BlobHash {
    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// A hash from its raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 hex digits (either case).
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let digit = |c: u8| (c as char).to_digit(16);
            out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
        }
        Some(Self(out))
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobHash({self})")
    }
}

/// What a document holds to reference a blob: `{"_attachment": "<hex>", "len": n,
/// "meta": {...}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct AttachmentToken {
    /// The content hash.
    pub hash: BlobHash,
    /// The length in bytes.
    pub len: u64,
    /// What the writer said about it (file name, content type...).
    pub meta: Value,
}

impl AttachmentToken {
    /// The JSON object to put in a document.
    pub fn to_json(&self) -> Value {
        json!({ ATTACHMENT_KEY: self.hash.to_hex(), "len": self.len, "meta": self.meta })
    }

    /// Reads a token back; `None` when `value` is not one.
    pub fn from_json(value: &Value) -> Option<Self> {
        let object = value.as_object()?;
        let hash = BlobHash::from_hex(object.get(ATTACHMENT_KEY)?.as_str()?)?;
        let len = object.get("len")?.as_u64()?;
        let meta = object.get("meta").cloned().unwrap_or(Value::Null);
        Some(Self { hash, len, meta })
    }
}

/// Every blob a JSON value references (objects with an `_attachment` hash, at any
/// depth), each once, in the order first found.
pub fn attachment_refs(value: &Value) -> Vec<BlobHash> {
    fn walk(value: &Value, seen: &mut HashSet<BlobHash>, out: &mut Vec<BlobHash>) {
        match value {
            Value::Object(map) => {
                if let Some(hash) = map
                    .get(ATTACHMENT_KEY)
                    .and_then(Value::as_str)
                    .and_then(BlobHash::from_hex)
                    && seen.insert(hash)
                {
                    out.push(hash);
                }
                map.values().for_each(|v| walk(v, seen, out));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, seen, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, &mut HashSet::new(), &mut out);
    out
}

/// Number of chunks of a blob of `len` bytes (0 for the empty blob).
pub fn chunk_count(len: u64) -> u32 {
    u32::try_from(len.div_ceil(CHUNK_SIZE as u64)).unwrap_or(u32::MAX)
}

/// The length of chunk `index` of a blob of `len` bytes, if it has that chunk.
pub fn chunk_len(len: u64, index: u32) -> Option<usize> {
    let start = u64::from(index) * CHUNK_SIZE as u64;
    (start < len).then(|| (len - start).min(CHUNK_SIZE as u64) as usize)
}

/// The record of a complete, verified blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlobRecord {
    pub(crate) len: u64,
    /// BLAKE3 of each chunk, in order.
    pub(crate) chunk_hashes: Vec<[u8; 32]>,
}

/// Version byte of the stored [`BlobRecord`].
const RECORD_V1: u8 = 1;

impl BlobRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + 32 * self.chunk_hashes.len());
        out.push(RECORD_V1);
        out.extend_from_slice(&self.len.to_be_bytes());
        for hash in &self.chunk_hashes {
            out.extend_from_slice(hash);
        }
        out
    }

    pub(crate) fn decode(hash: &BlobHash, bytes: &[u8]) -> Result<Self> {
        let corrupt = |reason: &str| StoreError::BlobCorrupt {
            hash: hash.to_hex(),
            reason: format!("record: {reason}"),
        };
        let (version, rest) = bytes.split_first().ok_or_else(|| corrupt("empty"))?;
        if *version != RECORD_V1 {
            return Err(corrupt(&format!("unknown version {version}")));
        }
        if rest.len() < 8 || (rest.len() - 8) % 32 != 0 {
            return Err(corrupt("wrong length"));
        }
        let len = u64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
        let chunk_hashes: Vec<[u8; 32]> = rest[8..]
            .chunks_exact(32)
            .map(|h| h.try_into().expect("32 bytes"))
            .collect();
        if chunk_hashes.len() != chunk_count(len) as usize {
            return Err(corrupt("chunk count does not match the length"));
        }
        Ok(Self { len, chunk_hashes })
    }
}

/// The storage half of attachments, one implementation per backend; the logic (hashing,
/// verification, staging) is written once in this module on top of it.
pub(crate) trait ChunkBackend {
    fn record(&self, hash: &BlobHash) -> Result<Option<BlobRecord>>;
    fn chunk(&self, hash: &BlobHash, index: u32) -> Result<Option<Vec<u8>>>;
    /// Writes chunks; need not be durable until the next `put_record`.
    fn put_chunks(&self, hash: &BlobHash, chunks: &[(u32, &[u8])]) -> Result<()>;
    /// Writes the record, durably (this also makes earlier chunk writes durable).
    fn put_record(&self, hash: &BlobHash, record: &BlobRecord) -> Result<()>;
    fn new_upload(&self) -> u64;
    fn stage(&self, upload: u64, index: u32, bytes: &[u8]) -> Result<()>;
    fn staged(&self, upload: u64, index: u32) -> Result<Option<Vec<u8>>>;
    fn clear_staged(&self, upload: u64, count: u32) -> Result<()>;
    /// Every blob with a record or at least one chunk.
    fn hashes(&self) -> Result<Vec<BlobHash>>;
    /// Removes a blob's record and chunks.
    fn delete(&self, hash: &BlobHash) -> Result<()>;
}

/// Attachment storage. Implemented by every [`super::Store`].
pub trait BlobStore: Send + Sync {
    /// Stores a blob (idempotent: the same bytes give the same token).
    fn put_blob(&self, bytes: &[u8], meta: Value) -> Result<AttachmentToken>;

    /// Stores a blob read to its end, without holding it all in memory (chunks are
    /// staged while the hash is computed, then moved under the hash).
    fn put_blob_reader(&self, reader: &mut dyn Read, meta: Value) -> Result<AttachmentToken>;

    /// The length of a complete blob, `None` when it is not stored (or still partial).
    fn blob_len(&self, hash: &BlobHash) -> Result<Option<u64>>;

    /// Chunk `index` of a complete blob, verified; `None` when the blob is not stored.
    fn get_chunk(&self, hash: &BlobHash, index: u32) -> Result<Option<Vec<u8>>>;

    /// Stores one chunk of a blob being fetched (of total length `len`); checked only
    /// for its size here, verified with the whole by [`BlobStore::finish_blob`].
    fn put_chunk(&self, hash: &BlobHash, len: u64, index: u32, bytes: &[u8]) -> Result<()>;

    /// The chunks of a blob of length `len` not stored yet (empty once complete).
    fn missing_chunks(&self, hash: &BlobHash, len: u64) -> Result<Vec<u32>>;

    /// Verifies a fetched blob against its hash and makes it complete. On a mismatch
    /// its chunks are deleted and [`StoreError::BlobCorrupt`] returned.
    fn finish_blob(&self, hash: &BlobHash, len: u64) -> Result<()>;

    /// Every blob stored, complete or partial.
    fn blob_hashes(&self) -> Result<Vec<BlobHash>>;

    /// Deletes a blob, complete or partial.
    fn delete_blob(&self, hash: &BlobHash) -> Result<()>;

    /// Whether a complete blob is stored.
    fn has_blob(&self, hash: &BlobHash) -> Result<bool> {
        Ok(self.blob_len(hash)?.is_some())
    }

    /// A whole blob, verified chunk by chunk and as a whole.
    fn get_blob(&self, hash: &BlobHash) -> Result<Option<Vec<u8>>> {
        let Some(len) = self.blob_len(hash)? else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        for index in 0..chunk_count(len) {
            let chunk = self.get_chunk(hash, index)?.ok_or_else(|| vanished(hash))?;
            out.extend_from_slice(&chunk);
        }
        if BlobHash::of(&out) != *hash {
            return Err(StoreError::BlobCorrupt {
                hash: hash.to_hex(),
                reason: "content does not match its hash".to_owned(),
            });
        }
        Ok(Some(out))
    }

    /// Up to `len` bytes from `offset` of a complete blob (fewer at its end), reading
    /// and verifying only the chunks concerned. `None` when the blob is not stored.
    fn read_blob_range(&self, hash: &BlobHash, offset: u64, len: usize) -> Result<Option<Vec<u8>>> {
        let Some(total) = self.blob_len(hash)? else {
            return Ok(None);
        };
        if offset > total {
            return Err(StoreError::BlobRange {
                hash: hash.to_hex(),
                reason: format!("offset {offset} is past the end ({total} bytes)"),
            });
        }
        let end = total.min(offset.saturating_add(len as u64));
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut at = offset;
        while at < end {
            let index = (at / CHUNK_SIZE as u64) as u32;
            let chunk = self.get_chunk(hash, index)?.ok_or_else(|| vanished(hash))?;
            let from = (at % CHUNK_SIZE as u64) as usize;
            let take = ((end - at) as usize).min(chunk.len() - from);
            out.extend_from_slice(&chunk[from..from + take]);
            at += take as u64;
        }
        Ok(Some(out))
    }

    /// Deletes every blob (complete or partial) not in `referenced`; returns them.
    fn delete_unreferenced_blobs(&self, referenced: &HashSet<BlobHash>) -> Result<Vec<BlobHash>> {
        let mut deleted = Vec::new();
        for hash in self.blob_hashes()? {
            if !referenced.contains(&hash) {
                self.delete_blob(&hash)?;
                deleted.push(hash);
            }
        }
        Ok(deleted)
    }
}

fn vanished(hash: &BlobHash) -> StoreError {
    StoreError::BlobCorrupt {
        hash: hash.to_hex(),
        reason: "a chunk is missing".to_owned(),
    }
}

/// Streams a complete blob, verifying each chunk as it is read.
pub struct BlobReader<'s> {
    store: &'s dyn BlobStore,
    hash: BlobHash,
    len: u64,
    pos: u64,
    chunk: Vec<u8>,
    chunk_index: Option<u32>,
}

impl fmt::Debug for BlobReader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobReader")
            .field("hash", &self.hash)
            .field("len", &self.len)
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl<'s> BlobReader<'s> {
    /// A reader over a complete blob; `None` when it is not stored.
    pub fn open(store: &'s dyn BlobStore, hash: &BlobHash) -> Result<Option<Self>> {
        Ok(store.blob_len(hash)?.map(|len| Self {
            store,
            hash: *hash,
            len,
            pos: 0,
            chunk: Vec::new(),
            chunk_index: None,
        }))
    }

    /// The blob's length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the blob is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let index = (self.pos / CHUNK_SIZE as u64) as u32;
        if self.chunk_index != Some(index) {
            self.chunk = self
                .store
                .get_chunk(&self.hash, index)
                .and_then(|c| c.ok_or_else(|| vanished(&self.hash)))
                .map_err(std::io::Error::other)?;
            self.chunk_index = Some(index);
        }
        let from = (self.pos % CHUNK_SIZE as u64) as usize;
        let n = buf.len().min(self.chunk.len() - from);
        buf[..n].copy_from_slice(&self.chunk[from..from + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------
// The logic behind `BlobStore`, shared by the backends.

pub(crate) fn put_blob(
    b: &impl ChunkBackend,
    bytes: &[u8],
    meta: Value,
) -> Result<AttachmentToken> {
    let hash = BlobHash::of(bytes);
    let len = bytes.len() as u64;
    if b.record(&hash)?.is_none() {
        let mut chunk_hashes = Vec::with_capacity(chunk_count(len) as usize);
        // A batch of chunks per write keeps each write batch around 4 MiB.
        let chunks: Vec<(u32, &[u8])> = bytes
            .chunks(CHUNK_SIZE)
            .enumerate()
            .map(|(i, c)| (i as u32, c))
            .collect();
        for group in chunks.chunks(64) {
            b.put_chunks(&hash, group)?;
            chunk_hashes.extend(group.iter().map(|(_, c)| *blake3::hash(c).as_bytes()));
        }
        b.put_record(&hash, &BlobRecord { len, chunk_hashes })?;
    }
    Ok(AttachmentToken { hash, len, meta })
}

pub(crate) fn put_blob_reader(
    b: &impl ChunkBackend,
    reader: &mut dyn Read,
    meta: Value,
) -> Result<AttachmentToken> {
    let upload = b.new_upload();
    let mut hasher = blake3::Hasher::new();
    let mut chunk_hashes = Vec::new();
    let mut len = 0u64;
    let mut buf = vec![0; CHUNK_SIZE];
    let staged = loop {
        let filled = read_full(reader, &mut buf);
        let filled = match filled {
            Ok(n) => n,
            Err(e) => {
                b.clear_staged(upload, chunk_hashes.len() as u32)?;
                return Err(e.into());
            }
        };
        if filled > 0 {
            let chunk = &buf[..filled];
            hasher.update(chunk);
            b.stage(upload, chunk_hashes.len() as u32, chunk)?;
            chunk_hashes.push(*blake3::hash(chunk).as_bytes());
            len += filled as u64;
        }
        if filled < CHUNK_SIZE {
            break chunk_hashes.len() as u32;
        }
    };
    let hash = BlobHash::from_bytes(*hasher.finalize().as_bytes());
    if b.record(&hash)?.is_none() {
        for start in (0..staged).step_by(64) {
            let mut group = Vec::new();
            for index in start..staged.min(start + 64) {
                let bytes = b
                    .staged(upload, index)?
                    .ok_or_else(|| StoreError::BlobCorrupt {
                        hash: hash.to_hex(),
                        reason: format!("staged chunk {index} vanished during the upload"),
                    })?;
                group.push((index, bytes));
            }
            let refs: Vec<(u32, &[u8])> = group.iter().map(|(i, c)| (*i, c.as_slice())).collect();
            b.put_chunks(&hash, &refs)?;
        }
        b.put_record(&hash, &BlobRecord { len, chunk_hashes })?;
    }
    b.clear_staged(upload, staged)?;
    Ok(AttachmentToken { hash, len, meta })
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

pub(crate) fn blob_len(b: &impl ChunkBackend, hash: &BlobHash) -> Result<Option<u64>> {
    Ok(b.record(hash)?.map(|r| r.len))
}

pub(crate) fn get_chunk(
    b: &impl ChunkBackend,
    hash: &BlobHash,
    index: u32,
) -> Result<Option<Vec<u8>>> {
    let Some(record) = b.record(hash)? else {
        return Ok(None);
    };
    let expected =
        record
            .chunk_hashes
            .get(index as usize)
            .ok_or_else(|| StoreError::BlobRange {
                hash: hash.to_hex(),
                reason: format!(
                    "no chunk {index}: the blob has {}",
                    record.chunk_hashes.len()
                ),
            })?;
    let chunk = b.chunk(hash, index)?.ok_or_else(|| vanished(hash))?;
    if blake3::hash(&chunk).as_bytes() != expected {
        return Err(StoreError::BlobCorrupt {
            hash: hash.to_hex(),
            reason: format!("chunk {index} does not match its hash"),
        });
    }
    Ok(Some(chunk))
}

pub(crate) fn put_chunk(
    b: &impl ChunkBackend,
    hash: &BlobHash,
    len: u64,
    index: u32,
    bytes: &[u8],
) -> Result<()> {
    match chunk_len(len, index) {
        Some(expected) if expected == bytes.len() => b.put_chunks(hash, &[(index, bytes)]),
        Some(expected) => Err(StoreError::BlobRange {
            hash: hash.to_hex(),
            reason: format!(
                "chunk {index} is {} bytes, expected {expected}",
                bytes.len()
            ),
        }),
        None => Err(StoreError::BlobRange {
            hash: hash.to_hex(),
            reason: format!("a blob of {len} bytes has no chunk {index}"),
        }),
    }
}

pub(crate) fn missing_chunks(b: &impl ChunkBackend, hash: &BlobHash, len: u64) -> Result<Vec<u32>> {
    if b.record(hash)?.is_some() {
        return Ok(Vec::new());
    }
    let mut missing = Vec::new();
    for index in 0..chunk_count(len) {
        let present = b.chunk(hash, index)?;
        if present.map(|c| c.len()) != chunk_len(len, index) {
            missing.push(index);
        }
    }
    Ok(missing)
}

pub(crate) fn finish_blob(b: &impl ChunkBackend, hash: &BlobHash, len: u64) -> Result<()> {
    if b.record(hash)?.is_some() {
        return Ok(());
    }
    let mut hasher = blake3::Hasher::new();
    let mut chunk_hashes = Vec::with_capacity(chunk_count(len) as usize);
    for index in 0..chunk_count(len) {
        let chunk = b.chunk(hash, index)?;
        let chunk = match chunk {
            Some(c) if Some(c.len()) == chunk_len(len, index) => c,
            _ => {
                return Err(StoreError::BlobRange {
                    hash: hash.to_hex(),
                    reason: format!("chunk {index} is missing: fetch it before finishing"),
                });
            }
        };
        hasher.update(&chunk);
        chunk_hashes.push(*blake3::hash(&chunk).as_bytes());
    }
    let actual = BlobHash::from_bytes(*hasher.finalize().as_bytes());
    if actual != *hash {
        b.delete(hash)?;
        return Err(StoreError::BlobCorrupt {
            hash: hash.to_hex(),
            reason: format!("the fetched content hashes to {actual}; its chunks were discarded"),
        });
    }
    b.put_record(hash, &BlobRecord { len, chunk_hashes })
}

/// Implements [`BlobStore`] for a backend by delegating to this module.
macro_rules! impl_blob_store {
    ($backend:ty) => {
        impl $crate::store::blobs::BlobStore for $backend {
            fn put_blob(
                &self,
                bytes: &[u8],
                meta: serde_json::Value,
            ) -> $crate::store::Result<$crate::store::AttachmentToken> {
                $crate::store::blobs::put_blob(self, bytes, meta)
            }

            fn put_blob_reader(
                &self,
                reader: &mut dyn std::io::Read,
                meta: serde_json::Value,
            ) -> $crate::store::Result<$crate::store::AttachmentToken> {
                $crate::store::blobs::put_blob_reader(self, reader, meta)
            }

            fn blob_len(
                &self,
                hash: &$crate::store::BlobHash,
            ) -> $crate::store::Result<Option<u64>> {
                $crate::store::blobs::blob_len(self, hash)
            }

            fn get_chunk(
                &self,
                hash: &$crate::store::BlobHash,
                index: u32,
            ) -> $crate::store::Result<Option<Vec<u8>>> {
                $crate::store::blobs::get_chunk(self, hash, index)
            }

            fn put_chunk(
                &self,
                hash: &$crate::store::BlobHash,
                len: u64,
                index: u32,
                bytes: &[u8],
            ) -> $crate::store::Result<()> {
                $crate::store::blobs::put_chunk(self, hash, len, index, bytes)
            }

            fn missing_chunks(
                &self,
                hash: &$crate::store::BlobHash,
                len: u64,
            ) -> $crate::store::Result<Vec<u32>> {
                $crate::store::blobs::missing_chunks(self, hash, len)
            }

            fn finish_blob(
                &self,
                hash: &$crate::store::BlobHash,
                len: u64,
            ) -> $crate::store::Result<()> {
                $crate::store::blobs::finish_blob(self, hash, len)
            }

            fn blob_hashes(&self) -> $crate::store::Result<Vec<$crate::store::BlobHash>> {
                $crate::store::blobs::ChunkBackend::hashes(self)
            }

            fn delete_blob(&self, hash: &$crate::store::BlobHash) -> $crate::store::Result<()> {
                $crate::store::blobs::ChunkBackend::delete(self, hash)
            }
        }
    };
}
pub(crate) use impl_blob_store;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_print_and_parse_as_hex() {
        let hash = BlobHash::of(b"hello");
        let hex = hash.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(BlobHash::from_hex(&hex), Some(hash));
        assert_eq!(BlobHash::from_hex(&hex.to_uppercase()), Some(hash));
        assert_eq!(BlobHash::from_hex("zz"), None);
        assert_eq!(BlobHash::from_hex(&"g".repeat(64)), None);
    }

    #[test]
    fn references_are_found_at_any_depth_once_each() {
        let a = BlobHash::of(b"a");
        let b = BlobHash::of(b"b");
        let token = AttachmentToken {
            hash: a,
            len: 1,
            meta: json!({"type": "text/plain"}),
        };
        let doc = json!({
            "photo": token.to_json(),
            "list": [{"_attachment": b.to_hex(), "len": 1}, {"again": token.to_json()}],
            "not": {"_attachment": "short"},
        });
        assert_eq!(attachment_refs(&doc), vec![a, b]);
        assert_eq!(AttachmentToken::from_json(&token.to_json()), Some(token));
    }

    #[test]
    fn chunk_arithmetic_covers_the_edges() {
        assert_eq!(chunk_count(0), 0);
        assert_eq!(chunk_count(1), 1);
        assert_eq!(chunk_count(CHUNK_SIZE as u64), 1);
        assert_eq!(chunk_count(CHUNK_SIZE as u64 + 1), 2);
        assert_eq!(chunk_len(CHUNK_SIZE as u64 + 1, 1), Some(1));
        assert_eq!(chunk_len(CHUNK_SIZE as u64, 1), None);
        let record = BlobRecord {
            len: 70_000,
            chunk_hashes: vec![[1; 32], [2; 32]],
        };
        let hash = BlobHash::of(b"x");
        assert_eq!(BlobRecord::decode(&hash, &record.encode()).unwrap(), record);
        assert!(BlobRecord::decode(&hash, &[1, 0]).is_err());
    }
}
