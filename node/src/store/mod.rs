//! The node's document store: CRDT documents by collection and id, the change index
//! sync uses to find what a peer lacks, secondary indexes, attachments and node
//! metadata, behind the [`Store`] trait, which knows nothing of RocksDB.
//!
//! Two backends implement it: [`rocks::RocksStore`] (the node's, on disk) and
//! [`memory::MemoryStore`] (for tests and the simulator). `node/tests/store_contract.rs`
//! runs one contract suite against both; [`trellis_common::replica::Replica`] is the
//! reference for what [`Store::apply`] must do.
//!
//! # The write path
//!
//! [`Store::apply`] is the only way documents change, for local writes and remote
//! deltas alike. Under one writer lock it reads the current state of each document in
//! the batch, merges the fragments (CRDT merge), checks the size of every resulting
//! document, and then commits in **one** atomic RocksDB write batch: the new document
//! states, the change-index entries of the writes they now hold (and the removal of
//! those of superseded writes), the secondary-index entries, the version vector and the
//! greatest hybrid timestamp. The version vector advances exactly as in `Replica::apply`:
//! only when the stored vector already covers the delta's `since`. A writer that has
//! just read the documents under its own lock (the engine) can spare the store the
//! second read of documents it found absent, and the copies of the states it does not
//! need ([`WriteBatch::assume_absent`], [`WriteBatch::without_states`]).
//!
//! A local insert of a document new to the store can come already encoded
//! ([`NewDoc`], [`WriteBatch::push_new`]): the stored value is then its bytes behind
//! fresh change numbers, its only write is its dot, and no [`DocState`] is built unless
//! an index of its collection, a caller asking for states, a shadow to absorb, or a
//! stale absence hint (the store then reads and merges as for any change) needs one.
//! This is the fast path of batch inserts: building and encoding a state cost more than
//! the RocksDB commit.
//!
//! # Column families
//!
//! One RocksDB column family per concern, named by the constants in [`cf`]; every key
//! layout is in [`keys`] (whose tests pin the sort orders):
//!
//! - `docs`: `collection 0x00 id` → the document's change numbers (which LSN each
//!   entry last changed at, `common::sync::DocLsns`, a few bytes for most documents)
//!   and the encoded [`DocState`] (`codec::encode_doc`, which starts with its own
//!   format version). Tombstones stay here.
//! - `changes`: the change index by (actor, seq), one entry `(seq, collection, id)` per
//!   write (dot) a stored document holds, kept in runs of up to 64 consecutive writes of
//!   one actor written by one commit, keyed `actor last-seq commit part` (`store::runs`).
//!   From a version vector, sync seeks each actor to the runs with a write
//!   `> vv[actor]`, so finding what a peer lacks costs the number of changes it lacks
//!   (plus one seek per actor), not the number of documents. Entries of writes a
//!   document no longer holds (superseded) leave their run in the same batch.
//! - `indexes`: `index 0x00 value id` → empty, for each live document that has a value
//!   at the index's path; the value encoding sorts like the query language's ORDER BY.
//! - `index_defs`: index name → its definition.
//! - `attachments`: blob chunks of 64 KiB (`'c' hash index`), the record of each complete,
//!   verified blob (`'m' hash`), and chunks staged while a streamed upload is hashed.
//! - `evicted`: `collection 0x00 id` of documents removed locally by `EVICT`.
//! - `lsns`: the LSN index, `collection 0x00 first-lsn` → a run of `(lsn, id)` entries.
//!   Every commit that changes a document gives it the store's next receipt sequence
//!   number (LSN) and moves its entry to a run of that commit, so sync finds "what
//!   changed in this collection after LSN x" with one range scan
//!   ([`Store::changed_since`]; design in `docs/sync.md`).
//! - `shadows`: `collection 0x00 id` → what the node keeps, out of sight, of a document
//!   it does not hold (same value layout as `docs`; indexed by LSN like a document,
//!   merged into the document when the node acquires it; see [`shadow`] and
//!   `docs/sync.md`, "Independent inserts of one id").
//! - `peers`: sync bookmarks per peer store incarnation and query, written in the same
//!   commit as the documents they vouch for ([`WriteBatch::set_bookmark`]).
//! - `meta`: the store format version, version vector, greatest timestamp, latest LSN
//!   and incarnation (`store/...`), and the node's own metadata (`node/...`,
//!   [`Store::meta_put`]).
//!
//! # Durability
//!
//! With [`Durability::Sync`] (the default), `apply` returns only after RocksDB has
//! written the batch to its write-ahead log *and* fsynced it: an acknowledged write
//! survives `kill -9` and power loss. [`Durability::Buffered`] skips the fsync: the
//! batch is in the OS page cache when `apply` returns, so it still survives the process
//! being killed, but a power loss or kernel crash can lose the last writes acknowledged
//! (a second or so of them; never a partial batch: RocksDB replays whole batches). It
//! saves one fsync per write, which on an SD card is most of a write's cost.
//!
//! # Format version
//!
//! The `meta` key `store/format_version` holds [`FORMAT_VERSION`], written when the
//! store is created. Opening a store with a newer version fails with
//! [`StoreError::NewerFormat`]; an older one is migrated on open (format 1 to 2 adds
//! the change numbers, the LSN index and the incarnation; 2 to 3 turns the rows of the
//! change index and the LSN index into runs; 3 to 4 only records the new version:
//! format 4 stores a fresh insert in the codec's insert form, which older builds cannot
//! read, and reads format 3's documents as they are; 4 to 5 rewrites every index run,
//! whose entries now write only the part of an id the previous entry does not share; a
//! format-2 store's new runs are written so at once, and it goes straight to 5).

pub mod blobs;
mod error;
pub mod keys;
pub mod memory;
mod plan;
pub mod rocks;
mod runs;
mod shadow;

use std::collections::BTreeSet;
use std::ops::Bound;

use serde_json::Value;
use trellis_common::clock::Hlc;
use trellis_common::codec::StampedInsert;
use trellis_common::crdt::{DocState, Dot, VersionVector};
use trellis_common::delta::{Delta, DocChange};
use trellis_common::ids::{CollectionName, DocId};
use trellis_common::sync::{ChangedDoc, Incarnation, Lsn, QueryId};

pub use blobs::{AttachmentToken, BlobHash, BlobReader, BlobStore, attachment_refs};
pub use error::{Result, StoreError};
pub use memory::MemoryStore;
pub use rocks::{RocksOptions, RocksStore};
pub use shadow::ShadowsApplied;

/// The store format this build writes, and the newest it reads.
pub const FORMAT_VERSION: u32 = 5;

/// Stored size (encoded, CRDT metadata included) above which a document draws a warning.
pub const WARN_DOC_BYTES: usize = 256 * 1024;
/// Stored size above which a write is refused.
pub const MAX_DOC_BYTES: usize = 5 * 1024 * 1024;

/// The column families, one per concern (see the module documentation).
pub mod cf {
    /// Document states by collection and id, tombstones included.
    pub const DOCS: &str = "docs";
    /// The change index: which documents hold each write (actor, seq).
    pub const CHANGES: &str = "changes";
    /// Secondary-index entries.
    pub const INDEXES: &str = "indexes";
    /// Secondary-index definitions.
    pub const INDEX_DEFS: &str = "index_defs";
    /// Attachment chunks and blob records.
    pub const ATTACHMENTS: &str = "attachments";
    /// Ids of locally evicted documents.
    pub const EVICTED: &str = "evicted";
    /// The LSN index: per collection, which document (or shadow) each latest change
    /// number is.
    pub const LSNS: &str = "lsns";
    /// Shadows of documents not held here.
    pub const SHADOWS: &str = "shadows";
    /// Per-peer sync state: bookmarks.
    pub const PEERS: &str = "peers";
    /// Store and node metadata.
    pub const META: &str = "meta";

    /// Every column family the store opens.
    pub const ALL: [&str; 10] = [
        DOCS,
        CHANGES,
        LSNS,
        SHADOWS,
        INDEXES,
        INDEX_DEFS,
        ATTACHMENTS,
        EVICTED,
        PEERS,
        META,
    ];
}

/// How hard a write is pushed to disk before [`Store::apply`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// fsync the write-ahead log before acknowledging: survives power loss.
    #[default]
    Sync,
    /// Acknowledge once the write is in the OS page cache: survives the process being
    /// killed, not a power loss (the last writes may be lost, never half a batch).
    Buffered,
}

/// Deltas to apply atomically, in order (one [`Store::apply`] call, one commit).
///
/// A local transaction is usually one delta per statement or one merged delta; a sync
/// session may group several received deltas.
///
/// Two hints let a writer that holds more context save work; neither changes what is
/// stored, and [`Store::apply`] ignores a hint it cannot trust:
///
/// - [`WriteBatch::assume_absent`]: which documents the writer found not stored at all,
///   read at store generation `g` ([`Store::generation`]). The store uses them instead
///   of reading those documents again only if its generation is still `g` when it
///   applies the batch, i.e. no commit happened in between. The engine reads and
///   commits under its writer lock, so for its transactions that holds unless something
///   bypasses the engine and writes to the store directly, in which case the hints are
///   dropped and the documents read as usual.
/// - [`WriteBatch::without_states`]: the caller does not need the before and after
///   states of [`Applied::docs`] (sync, which needs only which documents changed).
/// - [`WriteBatch::without_docs`]: the caller does not need [`Applied::docs`] at all
///   (the engine's transactions, when no observer is registered).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    deltas: Vec<Delta>,
    /// Per change of the batch, in order (all deltas' changes concatenated): whether its
    /// document was not stored at all at generation `absent_at`.
    absent: Vec<bool>,
    absent_at: Option<u64>,
    omit_states: bool,
    omit_docs: bool,
    bookmarks: Vec<(Incarnation, QueryId, Lsn)>,
    new_docs: Vec<NewDoc>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a delta, applied after those already in the batch.
    pub fn push(&mut self, delta: Delta) {
        self.deltas.push(delta);
    }

    /// The deltas, in order.
    pub fn deltas(&self) -> &[Delta] {
        &self.deltas
    }

    /// The deltas, given back.
    pub fn into_deltas(self) -> Vec<Delta> {
        self.deltas
    }

    /// Whether the batch holds no delta.
    pub fn is_empty(&self) -> bool {
        self.deltas.is_empty()
    }

    /// Records which documents the writer found not stored at all when the store was at
    /// `generation`: one flag per change of the batch, in order (see the type's
    /// documentation for when the store trusts them).
    pub fn assume_absent(&mut self, generation: u64, absent: Vec<bool>) {
        self.absent = absent;
        self.absent_at = Some(generation);
    }

    /// Asks [`Store::apply`] not to return document states: each [`AppliedDoc`] then
    /// has `before: None` and an empty `after` (its collection and id are right).
    pub fn without_states(mut self) -> Self {
        self.omit_states = true;
        self
    }

    /// Asks [`Store::apply`] not to list the documents it changed: [`Applied::docs`] is
    /// then empty. Saves a copy of every id of a large batch nobody would read.
    pub fn without_docs(mut self) -> Self {
        self.omit_docs = true;
        self
    }

    /// Records a sync bookmark in the same commit as the documents: this store holds,
    /// for the documents matching `query`, everything the store `peer` held up to its
    /// LSN `lsn` (see `docs/sync.md`).
    pub fn set_bookmark(&mut self, peer: Incarnation, query: QueryId, lsn: Lsn) {
        self.bookmarks.push((peer, query, lsn));
    }

    /// The bookmarks to record, in order (a later one for the same key wins).
    pub fn bookmarks(&self) -> &[(Incarnation, QueryId, Lsn)] {
        &self.bookmarks
    }

    /// Adds a document new to the store, already encoded: a change of the batch like
    /// the deltas' (its dot must be within their `until`), known absent at the
    /// generation of [`WriteBatch::assume_absent`] (without it, or at another
    /// generation, the store reads it like any change).
    pub fn push_new(&mut self, doc: NewDoc) {
        self.new_docs.push(doc);
    }

    /// Makes room for `additional` more [`WriteBatch::push_new`] documents.
    pub fn reserve_new(&mut self, additional: usize) {
        self.new_docs.reserve(additional);
    }

    /// The documents added by [`WriteBatch::push_new`], in order.
    pub fn new_docs(&self) -> &[NewDoc] {
        &self.new_docs
    }

    /// The same batch with its new documents decoded into changes of its last delta
    /// (still known absent), for code that looks at the deltas' changes only.
    pub(crate) fn with_new_docs_as_changes(&self) -> Result<WriteBatch> {
        let mut batch = self.clone();
        let new_docs = std::mem::take(&mut batch.new_docs);
        if batch.deltas.is_empty() {
            batch.deltas.push(Delta {
                since: VersionVector::new(),
                until: VersionVector::new(),
                changes: Vec::new(),
            });
        }
        let absent = batch.absent_at.is_some();
        for new in &new_docs {
            let change = DocChange {
                collection: new.collection.clone(),
                id: new.id.clone(),
                state: new.state()?,
            };
            batch
                .deltas
                .last_mut()
                .expect("pushed above if missing")
                .changes
                .push(change);
        }
        if absent {
            // The flags follow the changes in order, and the new ones are last.
            let changes = batch.deltas.iter().map(|d| d.changes.len()).sum();
            batch.absent.resize(changes - new_docs.len(), false);
            batch.absent.resize(changes, true);
        }
        Ok(batch)
    }

    /// Whether [`Applied::docs`] carries the before and after states.
    pub fn wants_states(&self) -> bool {
        !self.omit_states
    }

    /// Whether [`Applied::docs`] lists the documents that changed.
    pub fn wants_docs(&self) -> bool {
        !self.omit_docs
    }

    /// The absence flags, if they were recorded at `generation` (the store's current
    /// one); `None` when they cannot be trusted.
    pub(crate) fn absent_at(&self, generation: Option<u64>) -> Option<&[bool]> {
        (self.absent_at.is_some() && self.absent_at == generation).then_some(&self.absent[..])
    }
}

impl From<Delta> for WriteBatch {
    fn from(delta: Delta) -> Self {
        Self {
            deltas: vec![delta],
            ..Self::default()
        }
    }
}

impl FromIterator<Delta> for WriteBatch {
    fn from_iter<I: IntoIterator<Item = Delta>>(iter: I) -> Self {
        Self {
            deltas: iter.into_iter().collect(),
            ..Self::default()
        }
    }
}

/// A document that one local insert creates, new to the store, in its stored encoding:
/// the write path's fast path for inserts ([`WriteBatch::push_new`]), which neither
/// builds nor encodes a [`DocState`] for it. Its state is
/// `DocState::insert_delta(ctx, body)` and `encoded` is `codec::encode_insert(ctx,
/// body)`, the codec's insert form, which decodes to that state.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDoc {
    /// The document's collection.
    pub collection: CollectionName,
    /// The document's id.
    pub id: DocId,
    /// The encoded state (`codec::encode_doc`'s format).
    pub encoded: StampedInsert,
    /// The insert's dot, which every entry of the document carries.
    pub dot: Dot,
    /// The insert's timestamp, which every entry carries.
    pub hlc: Hlc,
}

impl NewDoc {
    /// The document's state, decoded.
    pub fn state(&self) -> Result<DocState> {
        trellis_common::codec::decode_doc(self.encoded.as_bytes())
            .map_err(|e| StoreError::corrupt_doc(&self.collection, &self.id, e))
    }
}

/// One document whose stored state a write changed.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedDoc {
    /// The document's collection.
    pub collection: CollectionName,
    /// The document's id.
    pub id: DocId,
    /// The stored state before the batch (`None`: nothing was stored).
    pub before: Option<DocState>,
    /// The stored state after it.
    pub after: DocState,
}

impl AppliedDoc {
    /// The document as JSON before the batch, if it existed.
    pub fn before_json(&self) -> Option<Value> {
        self.before.as_ref()?.to_json(&self.id)
    }

    /// The document as JSON after the batch, if it exists.
    pub fn after_json(&self) -> Option<Value> {
        self.after.to_json(&self.id)
    }

    /// Whether the document existed (live) before the batch.
    pub fn existed_before(&self) -> bool {
        self.before.as_ref().is_some_and(DocState::is_live)
    }

    /// Whether the document exists (live) after the batch.
    pub fn exists_after(&self) -> bool {
        self.after.is_live()
    }
}

/// A document stored above [`WARN_DOC_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeWarning {
    /// The document's collection.
    pub collection: CollectionName,
    /// The document's id.
    pub id: DocId,
    /// Its stored size in bytes.
    pub size: usize,
}

/// What [`Store::apply`] did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Applied {
    /// Each document whose stored state changed, in (collection, id) order; documents
    /// the batch did not change (duplicates, stale fragments) are not listed. Empty
    /// when the batch asked for no list ([`WriteBatch::without_docs`]).
    pub docs: Vec<AppliedDoc>,
    /// Per delta of the batch, whether the version vector advanced to its `until`.
    pub advanced: Vec<bool>,
    /// The store's version vector after the batch.
    pub version: VersionVector,
    /// The store's latest LSN after the batch.
    pub lsn: Lsn,
    /// Documents stored above [`WARN_DOC_BYTES`] (also logged).
    pub warnings: Vec<SizeWarning>,
}

impl Applied {
    /// Whether every delta of the batch advanced the version vector.
    pub fn all_advanced(&self) -> bool {
        self.advanced.iter().all(|a| *a)
    }
}

/// A secondary index: the value at `path` of the live documents of `collection`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IndexDef {
    /// 1 to 64 of `[A-Za-z0-9_-]`, unique in the store.
    pub name: String,
    /// The collection indexed.
    pub collection: CollectionName,
    /// The field path (`["a", "b"]` for `a.b`); `["_id"]` indexes the id.
    pub path: Vec<String>,
}

impl IndexDef {
    /// A validated definition.
    pub fn new(name: &str, collection: CollectionName, path: Vec<String>) -> Result<Self> {
        let def = Self {
            name: name.to_owned(),
            collection,
            path,
        };
        def.validate()?;
        Ok(def)
    }

    /// Checks the name and path.
    pub fn validate(&self) -> Result<()> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(StoreError::InvalidIndex(format!(
                "index name '{}' must be 1 to 64 ASCII letters, digits, '_' or '-'",
                self.name
            )));
        }
        if self.path.is_empty() || self.path.len() > trellis_common::crdt::MAX_PATH_DEPTH {
            return Err(StoreError::InvalidIndex(format!(
                "index '{}' needs a field path of 1 to {} keys",
                self.name,
                trellis_common::crdt::MAX_PATH_DEPTH
            )));
        }
        Ok(())
    }

    /// The indexed value of a document state, encoded ([`keys::encode_index_value`]);
    /// `None` when the document is not live or has nothing at the path.
    pub fn entry_value(&self, id: &DocId, state: &DocState) -> Option<Vec<u8>> {
        if !state.is_live() {
            return None;
        }
        let value = match self.path.split_first() {
            // `_id` is the key, not a field: read it (and its keys, for object ids) there.
            Some((first, rest)) if first == "_id" => {
                let id = id.to_json();
                rest.iter()
                    .try_fold(&id, |value, key| value.as_object()?.get(key))?
                    .clone()
            }
            _ => state.value_at(&self.path)?,
        };
        Some(keys::encode_index_value(&value))
    }
}

/// [`Store::get`] of each of `ids`, one by one: what [`Store::get_many`] does unless a
/// backend knows better.
pub(crate) fn get_each<S: Store + ?Sized>(
    store: &S,
    collection: &CollectionName,
    ids: &[&DocId],
) -> Vec<Result<Option<DocState>>> {
    ids.iter().map(|id| store.get(collection, id)).collect()
}

/// The document store. Synchronous and blocking: the engine calls it from its storage
/// thread, never from the async runtime. Every method is safe to call from several
/// threads; writes are serialised inside.
pub trait Store: BlobStore + Send + Sync {
    /// The stored state of a document, tombstones included (`None`: nothing stored).
    fn get(&self, collection: &CollectionName, id: &DocId) -> Result<Option<DocState>>;

    /// [`Store::get`] of each of `ids`, in their order. A backend may read them
    /// together more cheaply than one by one (the node's inserts ask for a batch).
    fn get_many(
        &self,
        collection: &CollectionName,
        ids: &[&DocId],
    ) -> Vec<Result<Option<DocState>>> {
        get_each(self, collection, ids)
    }

    /// Up to `limit` stored documents of `collection` with ids after `after`, in id
    /// order, tombstones included (callers filter with [`DocState::is_live`]).
    fn scan(
        &self,
        collection: &CollectionName,
        after: Option<&DocId>,
        limit: usize,
    ) -> Result<Vec<(DocId, DocState)>>;

    /// The collections holding at least one stored document, in name order.
    fn collections(&self) -> Result<Vec<CollectionName>>;

    /// Merges a batch of deltas, atomically: all of it is durable when this returns
    /// `Ok`, none of it when it returns `Err` (see the module documentation).
    fn apply(&self, batch: &WriteBatch) -> Result<Applied>;

    /// A number that changes whenever [`Store::apply`] or [`Store::evict`] commits, for
    /// [`WriteBatch::assume_absent`]; `None` (the default) when the backend does not
    /// keep one, and then such hints are never trusted.
    fn generation(&self) -> Option<u64> {
        None
    }

    /// Every write this store has (or has superseded). It never runs ahead of the
    /// documents: read it before reading documents to build a consistent delta.
    fn version(&self) -> VersionVector;

    /// The greatest hybrid timestamp applied so far (remote ones included, even those
    /// the clock quarantined): the engine resumes its clock from it, capped by its
    /// drift policy.
    fn max_hlc(&self) -> Hlc;

    /// Every stored document holding a write `seen` does not cover, from the change
    /// index, in (collection, id) order. The cost grows with the number of such writes,
    /// not with the number of documents.
    fn docs_changed_since(&self, seen: &VersionVector) -> Result<Vec<(CollectionName, DocId)>>;

    /// What a replica that has seen `seen` lacks, as one delta (as
    /// `Replica::delta_since`): the version is read first, so `until` never claims a
    /// write whose document is not in the delta.
    fn delta_since(&self, seen: &VersionVector) -> Result<Delta> {
        let until = self.version();
        let mut changes = Vec::new();
        for (collection, id) in self.docs_changed_since(seen)? {
            let Some(state) = self.get(&collection, &id)? else {
                continue;
            };
            let fragment = state.delta_since(seen);
            if !fragment.is_empty() {
                changes.push(DocChange {
                    collection,
                    id,
                    state: fragment,
                });
            }
        }
        Ok(Delta {
            since: seen.clone(),
            until,
            changes,
        })
    }

    /// Removes documents locally: no tombstone, nothing replicated; their change-index
    /// and index entries go too, and their ids are remembered as evicted (until
    /// [`Store::forget_evicted`] or until they are stored again by `apply`). The version
    /// vector is unchanged. Returns the removed states, for observers.
    fn evict(&self, collection: &CollectionName, ids: &[DocId]) -> Result<Vec<(DocId, DocState)>>;

    /// Whether a document was evicted and not stored again since.
    fn is_evicted(&self, collection: &CollectionName, id: &DocId) -> Result<bool>;

    /// The evicted ids of a collection, in id order.
    fn evicted(&self, collection: &CollectionName) -> Result<Vec<DocId>>;

    /// Forgets that documents were evicted (a subscription asks for them again).
    fn forget_evicted(&self, collection: &CollectionName, ids: &[DocId]) -> Result<()>;

    /// Creates an index and fills it from the stored documents, in one commit. Creating
    /// an index that exists with the same definition does nothing.
    fn create_index(&self, def: &IndexDef) -> Result<()>;

    /// Drops an index and its entries. Returns whether it existed.
    fn drop_index(&self, name: &str) -> Result<bool>;

    /// The index definitions, in name order.
    fn indexes(&self) -> Vec<IndexDef>;

    /// The ids of the live documents whose value at the index's path lies between the
    /// bounds (in the order of [`keys::encode_index_value`]), in (value, id) order.
    fn index_scan(
        &self,
        name: &str,
        lower: Bound<&Value>,
        upper: Bound<&Value>,
    ) -> Result<Vec<DocId>>;

    /// The store's incarnation: random, made when the store was created (sync bookmarks
    /// of peers are kept against it).
    fn incarnation(&self) -> Incarnation;

    /// The receipt sequence number of the latest change: every commit that changes a
    /// document gives it the next one (see `docs/sync.md`).
    fn lsn(&self) -> Lsn;

    /// The documents and shadows of `collection` whose latest LSN is greater than
    /// `cursor` (at least `after`), in LSN order, at most `limit`, each with its entries
    /// changed after `after` (`common::sync::SyncStore::changed_since`).
    fn changed_since(
        &self,
        collection: &CollectionName,
        after: Lsn,
        cursor: Lsn,
        limit: usize,
    ) -> Result<Vec<ChangedDoc>>;

    /// The shadow of a document not held here ([`shadow`]), if any.
    fn shadow(&self, collection: &CollectionName, id: &DocId) -> Result<Option<DocState>>;

    /// Merges fragments into the shadows of documents not held here, in one durable
    /// commit in which each shadow that changed takes the next LSN. Fragments of
    /// documents held by then are not written but returned ([`ShadowsApplied::held`]).
    fn apply_shadows(&self, fragments: &[DocChange]) -> Result<ShadowsApplied>;

    /// The bookmark recorded for a peer's store incarnation and a query (0 when none).
    fn bookmark(&self, peer: &Incarnation, query: &QueryId) -> Result<Lsn>;

    /// A node metadata entry (identity key, clock...).
    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// Sets a node metadata entry, durably.
    fn meta_put(&self, key: &str, value: &[u8]) -> Result<()>;
}

/// Index-scan bounds as encoded keys: whether an encoded value lies within them.
pub(crate) struct EncodedBounds {
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
}

impl EncodedBounds {
    pub(crate) fn new(lower: Bound<&Value>, upper: Bound<&Value>) -> Self {
        let enc = |b: Bound<&Value>| b.map(keys::encode_index_value);
        Self {
            lower: enc(lower),
            upper: enc(upper),
        }
    }

    /// The encoded value to start scanning from (inclusive), if bounded below.
    pub(crate) fn start(&self) -> Option<&[u8]> {
        match &self.lower {
            Bound::Included(v) | Bound::Excluded(v) => Some(v),
            Bound::Unbounded => None,
        }
    }

    /// Whether `value` is below the lower bound (skip it and go on).
    pub(crate) fn below(&self, value: &[u8]) -> bool {
        match &self.lower {
            Bound::Included(v) => value < v.as_slice(),
            Bound::Excluded(v) => value <= v.as_slice(),
            Bound::Unbounded => false,
        }
    }

    /// Whether `value` is above the upper bound (stop).
    pub(crate) fn above(&self, value: &[u8]) -> bool {
        match &self.upper {
            Bound::Included(v) => value > v.as_slice(),
            Bound::Excluded(v) => value >= v.as_slice(),
            Bound::Unbounded => false,
        }
    }
}

/// Dots of a state, deduplicated.
pub(crate) fn dot_set(state: Option<&DocState>) -> BTreeSet<trellis_common::crdt::Dot> {
    state.map(|s| s.dots().collect()).unwrap_or_default()
}

/// Dots of a state, deduplicated, in order (as [`dot_set`] iterates them).
pub(crate) fn sorted_dots(state: &DocState) -> Vec<trellis_common::crdt::Dot> {
    let mut dots = Vec::new();
    for dot in state.dots() {
        // Entries of one write come in runs (a fresh insert is a single run): drop
        // repeats as they come, then sort what is left.
        if dots.last() != Some(&dot) {
            dots.push(dot);
        }
    }
    dots.sort_unstable();
    dots.dedup();
    dots
}
