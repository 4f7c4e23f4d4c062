//! [`RocksStore`]: the [`Store`] on RocksDB, the node's own. The only module of the
//! crate that imports `rocksdb`; the layout it writes is described in [`super`] and
//! built by [`super::keys`].

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, Options,
    ReadOptions, WriteOptions,
};
use serde_json::Value;
use trellis_common::clock::Hlc;
use trellis_common::crdt::{DocState, VersionVector};
use trellis_common::delta::DocChange;
use trellis_common::ids::{ActorId, CollectionName, DocId};
use trellis_common::sync::{ChangedDoc, DocLsns, Incarnation, Lsn, QueryId};

use super::blobs::{BlobHash, BlobRecord, ChunkBackend, impl_blob_store};
use super::keys;
use super::plan::{Before, PlannedDoc, plan_apply};
use super::runs::{IndexEdits, RowEdit, RunSource, RunVisitor};
use super::shadow::{self, ShadowWrites, ShadowsApplied};
use super::{
    Applied, Durability, EncodedBounds, FORMAT_VERSION, IndexDef, Result, Store, StoreError,
    WriteBatch, cf, dot_set, get_each,
};

/// Tuning of the RocksDB backend. The defaults suit a Raspberry Pi: a few tens of MiB of
/// memory whatever the data size.
#[derive(Debug, Clone)]
pub struct RocksOptions {
    /// Whether [`Store::apply`] waits for the fsync (see [`Durability`]).
    pub durability: Durability,
    /// The memory all memtables together are meant to hold (past it, RocksDB flushes
    /// the oldest; a memtable being flushed still counts until it is written). The
    /// documents' column family, where every write lands, may fill three quarters of it
    /// before it flushes; each other column family (small rows: index runs, metadata) a
    /// quarter.
    pub memtable_budget_bytes: usize,
    /// The block cache shared by every column family (index and filter blocks
    /// included, so memory stays bounded as the data grows).
    pub block_cache_bytes: usize,
}

impl Default for RocksOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Sync,
            memtable_budget_bytes: 32 << 20,
            block_cache_bytes: 8 << 20,
        }
    }
}

/// The document store on RocksDB.
pub struct RocksStore {
    db: DB,
    path: PathBuf,
    durability: Durability,
    /// Serialises every write: `apply` reads, merges and commits under it. It holds the
    /// store's generation ([`Store::generation`]), raised by every commit that may change
    /// a document, under the lock and before the commit.
    writer: Mutex<u64>,
    /// Copies of stored values, changed only under `writer` after a commit.
    cached: RwLock<Cached>,
    /// Whether any eviction marker may exist (saves a delete per write when none does).
    has_evicted: AtomicBool,
    /// Whether any shadow may exist (saves a shadow lookup per write when none does).
    has_shadows: AtomicBool,
    next_upload: AtomicU64,
    /// The options of point reads, made once: every insert of a given `_id` reads it.
    point_read: ReadOptions,
    _cache: Cache,
}

#[derive(Debug)]
struct Cached {
    version: VersionVector,
    max_hlc: Hlc,
    lsn: Lsn,
    incarnation: Incarnation,
    indexes: BTreeMap<String, IndexDef>,
}

/// An index definition as stored: versioned JSON.
#[derive(serde::Serialize, serde::Deserialize)]
enum IndexDefRecord {
    V1(IndexDef),
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore")
            .field("path", &self.path)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

fn backend(path: &Path) -> impl Fn(rocksdb::Error) -> StoreError + '_ {
    move |e| StoreError::Backend(format!("{} ({})", e.into_string(), path.display()))
}

/// Runs RocksDB's flushes and compactions, in every store of the process, at the lowest
/// CPU priority (nice 19): they then use what the writers leave of a Pi's few cores
/// instead of taking one from them. A flush that falls behind fills the memtables until
/// RocksDB stalls the writers, so background work still finishes under a steady load. With
/// 400,000 batched inserts, where both flush, `trellis-bench store` went from about
/// 0.51 of raw RocksDB to 0.55.
fn lower_background_priority() {
    static LOWERED: std::sync::Once = std::sync::Once::new();
    LOWERED.call_once(|| match rocksdb::Env::new() {
        // The process's default environment, whose thread pools every store shares.
        Ok(mut env) => {
            env.lower_thread_pool_cpu_priority();
            env.lower_high_priority_thread_pool_cpu_priority();
        }
        Err(e) => tracing::warn!(
            error = %e.into_string(),
            "could not lower the priority of RocksDB's background threads"
        ),
    });
}

impl RocksStore {
    /// Opens (or creates) the store in directory `path`: checks the format version,
    /// migrates an older format, and discards what an interrupted attachment upload
    /// left behind.
    pub fn open(path: impl AsRef<Path>, options: &RocksOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        std::fs::create_dir_all(&path)?;
        let cache = Cache::new_lru_cache(options.block_cache_bytes);
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_compression_type(DBCompressionType::None);
        db_opts.set_max_open_files(256);
        db_opts.set_keep_log_file_num(2);
        db_opts.set_max_background_jobs(2);
        db_opts.set_max_total_wal_size(64 << 20);
        db_opts.set_db_write_buffer_size(options.memtable_budget_bytes);
        lower_background_priority();
        let descriptors = cf::ALL.iter().map(|name| {
            let mut table = BlockBasedOptions::default();
            table.set_block_cache(&cache);
            table.set_cache_index_and_filter_blocks(true);
            // The few newest files' filters stay pinned (still counted in the cache): a
            // point read of an absent id, as every insert of a given `_id` makes, then
            // asks no cache for them.
            table.set_pin_l0_filter_and_index_blocks_in_cache(true);
            table.set_bloom_filter(10.0, false);
            let mut cf_opts = Options::default();
            cf_opts.set_compression_type(DBCompressionType::None);
            // Few, large flushes of the documents: each competes with the writers for
            // a Pi's few cores, and each L0 file is compacted again later (wear on an SD
            // card). With a quarter of the budget, the hundred thousand inserts of
            // `trellis-bench store` (about 20 MB) flushed twice, costing batched inserts
            // a tenth of their speed; now they flush none, as raw RocksDB with its
            // default 64 MiB memtables does not.
            let budget = options.memtable_budget_bytes;
            cf_opts.set_write_buffer_size(if *name == cf::DOCS {
                budget / 4 * 3
            } else {
                budget / 4
            });
            cf_opts.set_max_write_buffer_number(2);
            cf_opts.set_block_based_table_factory(&table);
            // No bloom filter over the memtables: each key written would cost a cache
            // miss to set its bits (a tenth of a batched insert's RocksDB write, in
            // `trellis-bench store`), and the lookups it spares, of ids not yet stored,
            // mostly come in batches that `get_many` walks with an iterator, which asks
            // no filter.
            ColumnFamilyDescriptor::new(*name, cf_opts)
        });
        let db = DB::open_cf_descriptors(&db_opts, &path, descriptors).map_err(backend(&path))?;
        let store = Self {
            db,
            path,
            durability: options.durability,
            writer: Mutex::new(0),
            cached: RwLock::new(Cached {
                version: VersionVector::new(),
                max_hlc: Hlc::ZERO,
                lsn: 0,
                incarnation: Incarnation::from_u64(0),
                indexes: BTreeMap::new(),
            }),
            has_evicted: AtomicBool::new(true),
            has_shadows: AtomicBool::new(true),
            next_upload: AtomicU64::new(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64),
            ),
            point_read: ReadOptions::default(),
            _cache: cache,
        };
        store.check_format()?;
        store.load()?;
        Ok(store)
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_format(&self) -> Result<()> {
        match self
            .db
            .get_cf(self.cf(cf::META), keys::META_FORMAT_VERSION)
            .map_err(self.err())?
        {
            None => {
                let mut batch = rocksdb::WriteBatch::default();
                batch.put_cf(
                    self.cf(cf::META),
                    keys::META_FORMAT_VERSION,
                    FORMAT_VERSION.to_be_bytes(),
                );
                batch.put_cf(
                    self.cf(cf::META),
                    keys::META_INCARNATION,
                    Incarnation::random().0,
                );
                self.commit(batch, true)
            }
            Some(bytes) => {
                let found = keys::decode_u32(&bytes)
                    .map_err(|e| StoreError::corrupt_meta("format version", e))?;
                if found > FORMAT_VERSION {
                    return Err(StoreError::NewerFormat {
                        found,
                        supported: FORMAT_VERSION,
                    });
                }
                self.migrate(found)
            }
        }
    }

    /// Brings a store of format `from` up to [`FORMAT_VERSION`]. Each step rewrites what
    /// changed and records its new version in one atomic batch, so an interrupted
    /// migration starts that step again.
    fn migrate(&self, from: u32) -> Result<()> {
        match from {
            0 => Err(StoreError::corrupt_meta(
                "format version",
                "format 0 does not exist (the first is 1)",
            )),
            1 => {
                self.migrate_1_to_2()?;
                self.migrate(2)
            }
            // Its runs are written in the current layout, format 5's (the step to
            // format 4 only raised the version).
            2 => self.migrate_2_to_5(),
            3 => {
                self.migrate_3_to_4()?;
                self.migrate(4)
            }
            4 => {
                self.migrate_4_to_5()?;
                self.migrate(5)
            }
            _ => Ok(()),
        }
    }

    /// Format 4 may store documents in the codec's insert form. Format 3's documents are
    /// all V1, which format 4 reads as they are: only the version changes, so that older
    /// builds refuse the store instead of failing on its new documents.
    fn migrate_3_to_4(&self) -> Result<()> {
        let _writer = self.writer.lock();
        let mut wb = rocksdb::WriteBatch::default();
        wb.put_cf(
            self.cf(cf::META),
            keys::META_FORMAT_VERSION,
            4u32.to_be_bytes(),
        );
        tracing::info!("store migrated from format 3 to 4");
        self.commit(wb, true)
    }

    /// Format 5 writes an index entry's id as the part it does not share with the
    /// previous entry's, and a change entry's collection only when it changes: every run
    /// of both indexes is rewritten so.
    fn migrate_4_to_5(&self) -> Result<()> {
        let _writer = self.writer.lock();
        let corrupt = |e| StoreError::corrupt_meta("format-4 index run", e);
        let mut wb = rocksdb::WriteBatch::default();
        let lsn_runs = self.rewrite_each(&mut wb, cf::LSNS, |key, value| {
            let (_, first) = keys::split_lsn_key(key).map_err(corrupt)?;
            let entries = keys::decode_lsn_run_v4(first, value).map_err(corrupt)?;
            Ok(keys::encode_lsn_run(
                first,
                entries.iter().map(|(lsn, id)| (*lsn, id)),
            ))
        })?;
        let change_runs = self.rewrite_each(&mut wb, cf::CHANGES, |_, value| {
            let entries = keys::decode_change_run_v4(value).map_err(corrupt)?;
            Ok(keys::encode_change_run(
                entries.iter().map(|e| (e.seq, &e.collection, &e.id)),
            ))
        })?;
        wb.put_cf(
            self.cf(cf::META),
            keys::META_FORMAT_VERSION,
            5u32.to_be_bytes(),
        );
        tracing::info!(lsn_runs, change_runs, "store migrated from format 4 to 5");
        self.commit(wb, true)
    }

    /// Adds to `wb` every row of `family` with the value `rewrite` makes of its key and
    /// value; returns how many rows.
    fn rewrite_each(
        &self,
        wb: &mut rocksdb::WriteBatch,
        family: &str,
        rewrite: impl Fn(&[u8], &[u8]) -> Result<Vec<u8>>,
    ) -> Result<usize> {
        let mut rows = 0;
        let mut it = self.db.raw_iterator_cf(self.cf(family));
        it.seek_to_first();
        while let Some((key, value)) = it.item() {
            wb.put_cf(self.cf(family), key, rewrite(key, value)?);
            rows += 1;
            it.next();
        }
        it.status().map_err(self.err())?;
        Ok(rows)
    }

    /// Format 2 numbers changes for sync: every document value starts with its change
    /// numbers and has an LSN-index entry (a row each, as format 2 kept them), and the
    /// store has an incarnation. Documents of a format-1 store take LSNs 1, 2, ... in
    /// key order.
    fn migrate_1_to_2(&self) -> Result<()> {
        let _writer = self.writer.lock();
        let mut wb = rocksdb::WriteBatch::default();
        let mut lsn: Lsn = 0;
        let mut it = self.db.raw_iterator_cf(self.cf(cf::DOCS));
        it.seek_to_first();
        while let Some((key, value)) = it.item() {
            let (collection, id) = keys::parse_doc_key(key)
                .map_err(|e| StoreError::corrupt_meta("document key", e))?;
            let state = trellis_common::codec::decode_doc(value)
                .map_err(|e| StoreError::corrupt_doc(&collection, &id, e))?;
            lsn += 1;
            let lsns = DocLsns::new(lsn);
            wb.put_cf(
                self.cf(cf::DOCS),
                key,
                keys::encode_doc_value(&lsns, &state, value),
            );
            wb.put_cf(
                self.cf(cf::LSNS),
                keys::lsn_key(&collection, lsn),
                id.as_canonical().as_bytes(),
            );
            it.next();
        }
        it.status().map_err(self.err())?;
        drop(it);
        let meta = self.cf(cf::META);
        wb.put_cf(meta, keys::META_LSN, lsn.to_be_bytes());
        wb.put_cf(meta, keys::META_INCARNATION, Incarnation::random().0);
        wb.put_cf(meta, keys::META_FORMAT_VERSION, 2u32.to_be_bytes());
        tracing::info!(documents = lsn, "store migrated from format 1 to 2");
        self.commit(wb, true)
    }

    /// Format 3 keeps the change index and the LSN index in runs (`store::runs`), not
    /// a row per entry: the rows of format 2 become runs of their entries, in order,
    /// written as format 5 writes them.
    fn migrate_2_to_5(&self) -> Result<()> {
        let _writer = self.writer.lock();
        let corrupt = |e| StoreError::corrupt_meta("format-2 index row", e);
        let mut wb = rocksdb::WriteBatch::default();
        let mut lsn_entries = Vec::new();
        let mut it = self.db.raw_iterator_cf(self.cf(cf::LSNS));
        it.seek_to_first();
        while let Some((key, value)) = it.item() {
            let (collection, lsn) = keys::split_lsn_key(key).map_err(corrupt)?;
            let id = keys::parse_v2_lsn_value(value).map_err(corrupt)?;
            lsn_entries.push((collection, lsn, id));
            wb.delete_cf(self.cf(cf::LSNS), key);
            it.next();
        }
        it.status().map_err(self.err())?;
        drop(it);
        let mut change_entries = Vec::new();
        let mut it = self.db.raw_iterator_cf(self.cf(cf::CHANGES));
        it.seek_to_first();
        while let Some(key) = it.key() {
            change_entries.push(keys::parse_v2_change_key(key).map_err(corrupt)?);
            wb.delete_cf(self.cf(cf::CHANGES), key);
            it.next();
        }
        it.status().map_err(self.err())?;
        drop(it);
        let lsn = self.stored_lsn()?;
        let mut edits = IndexEdits::default();
        for (collection, lsn, id) in &lsn_entries {
            edits.add_lsn(collection, *lsn, id);
        }
        for (dot, entry) in &change_entries {
            edits.add_change(*dot, &entry.collection, &entry.id);
        }
        // Written after the deletes: a run may take the key of its first entry's row.
        self.write_index_rows(&mut wb, edits, lsn)?;
        wb.put_cf(
            self.cf(cf::META),
            keys::META_FORMAT_VERSION,
            5u32.to_be_bytes(),
        );
        tracing::info!(
            lsn_entries = lsn_entries.len(),
            change_entries = change_entries.len(),
            "store migrated from format 2 to 5"
        );
        self.commit(wb, true)
    }

    /// The store's latest LSN as stored (0 for a new store).
    fn stored_lsn(&self) -> Result<Lsn> {
        match self
            .db
            .get_cf(self.cf(cf::META), keys::META_LSN)
            .map_err(self.err())?
        {
            Some(bytes) => keys::decode_u64(&bytes).map_err(|e| StoreError::corrupt_meta("LSN", e)),
            None => Ok(0),
        }
    }

    fn load(&self) -> Result<()> {
        let meta = self.cf(cf::META);
        let version = match self
            .db
            .get_cf(meta, keys::META_VERSION_VECTOR)
            .map_err(self.err())?
        {
            Some(bytes) => keys::decode_version_vector(&bytes)
                .map_err(|e| StoreError::corrupt_meta("version vector", e))?,
            None => VersionVector::new(),
        };
        let max_hlc = match self
            .db
            .get_cf(meta, keys::META_MAX_HLC)
            .map_err(self.err())?
        {
            Some(bytes) => Hlc::from_raw(
                keys::decode_u64(&bytes)
                    .map_err(|e| StoreError::corrupt_meta("greatest timestamp", e))?,
            ),
            None => Hlc::ZERO,
        };
        let lsn = self.stored_lsn()?;
        let incarnation = match self
            .db
            .get_cf(meta, keys::META_INCARNATION)
            .map_err(self.err())?
        {
            Some(bytes) => Incarnation(
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::corrupt_meta("incarnation", "expected 16 bytes"))?,
            ),
            None => return Err(StoreError::corrupt_meta("incarnation", "missing")),
        };
        let mut indexes = BTreeMap::new();
        let mut it = self.db.raw_iterator_cf(self.cf(cf::INDEX_DEFS));
        it.seek_to_first();
        while let Some((key, value)) = it.item() {
            let what = || format!("definition of index '{}'", String::from_utf8_lossy(key));
            let IndexDefRecord::V1(def) =
                serde_json::from_slice(value).map_err(|e| StoreError::corrupt_meta(what(), e))?;
            indexes.insert(def.name.clone(), def);
            it.next();
        }
        it.status().map_err(self.err())?;
        drop(it);

        // Chunks staged by an upload the process did not finish.
        let (from, to) = keys::blob_staged_range();
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete_range_cf(self.cf(cf::ATTACHMENTS), from, to);
        self.commit(batch, false)?;

        let mut it = self.db.raw_iterator_cf(self.cf(cf::EVICTED));
        it.seek_to_first();
        self.has_evicted.store(it.valid(), Ordering::Relaxed);
        it.status().map_err(self.err())?;
        drop(it);

        let mut it = self.db.raw_iterator_cf(self.cf(cf::SHADOWS));
        it.seek_to_first();
        self.has_shadows.store(it.valid(), Ordering::Relaxed);
        it.status().map_err(self.err())?;

        *self.cached.write() = Cached {
            version,
            max_hlc,
            lsn,
            incarnation,
            indexes,
        };
        Ok(())
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("the store opens every column family in cf::ALL")
    }

    fn err(&self) -> impl Fn(rocksdb::Error) -> StoreError + '_ {
        backend(&self.path)
    }

    /// Writes a batch atomically; `durable` batches honour the durability setting.
    fn commit(&self, batch: rocksdb::WriteBatch, durable: bool) -> Result<()> {
        let mut opts = WriteOptions::default();
        opts.set_sync(durable && self.durability == Durability::Sync);
        self.db.write_opt(batch, &opts).map_err(self.err())
    }

    /// Document (or shadow) `id` as of `snapshot`, for [`Store::changed_since`]: its
    /// entry in the LSN index says its latest change is `lsn`.
    fn changed_doc(
        &self,
        snapshot: &rocksdb::Snapshot<'_>,
        collection: &CollectionName,
        id: DocId,
        lsn: Lsn,
        after: Lsn,
    ) -> Result<ChangedDoc> {
        let key = keys::doc_key(collection, &id);
        let (bytes, shadow) = match snapshot
            .get_cf(self.cf(cf::DOCS), &key)
            .map_err(self.err())?
        {
            Some(bytes) => (bytes, false),
            None => {
                let bytes = snapshot
                    .get_cf(self.cf(cf::SHADOWS), &key)
                    .map_err(self.err())?
                    .ok_or_else(|| {
                        StoreError::corrupt_doc(collection, &id, "in the LSN index but not stored")
                    })?;
                (bytes, true)
            }
        };
        let (state, lsns) = keys::decode_doc_value_with_lsns(&bytes)
            .map_err(|e| StoreError::corrupt_doc(collection, &id, e))?;
        let (fragment, whole) = lsns.fragment_after(&state, after);
        Ok(ChangedDoc {
            id,
            lsn,
            fragment,
            whole,
            state,
            shadow,
        })
    }

    /// Adds the index rows of `edits` to `wb`, reading the runs entries leave (under
    /// the writer lock). `commit`: the store's LSN after this commit.
    fn write_index_rows(
        &self,
        wb: &mut rocksdb::WriteBatch,
        edits: IndexEdits<'_>,
        commit: Lsn,
    ) -> Result<()> {
        let rows = edits.into_rows(self, commit)?;
        for (family, edits) in [(cf::LSNS, rows.lsns), (cf::CHANGES, rows.changes)] {
            let family = self.cf(family);
            for edit in edits {
                match edit {
                    RowEdit::Put(key, value) => wb.put_cf(family, key, value),
                    RowEdit::Delete(key) => wb.delete_cf(family, key),
                }
            }
        }
        Ok(())
    }

    /// Reads a stored document value (of `docs`, or `shadows`) and decodes it with
    /// `decode` (the state alone, or with its change numbers).
    fn read_doc_as<T>(
        &self,
        column_family: &str,
        collection: &CollectionName,
        id: &DocId,
        decode: impl FnOnce(&[u8]) -> std::result::Result<T, keys::KeyError>,
    ) -> Result<Option<T>> {
        let key = keys::doc_key(collection, id);
        let Some(bytes) = self
            .db
            .get_pinned_cf_opt(self.cf(column_family), key, &self.point_read)
            .map_err(self.err())?
        else {
            return Ok(None);
        };
        decode(&bytes)
            .map(Some)
            .map_err(|e| StoreError::corrupt_doc(collection, id, e))
    }

    /// Reads a stored shadow with its change numbers.
    fn read_shadow(
        &self,
        collection: &CollectionName,
        id: &DocId,
    ) -> Result<Option<(DocState, DocLsns)>> {
        if !self.has_shadows.load(Ordering::Relaxed) {
            return Ok(None); // the common case: sync asks for each document it acquires
        }
        self.read_doc_as(
            cf::SHADOWS,
            collection,
            id,
            keys::decode_doc_value_with_lsns,
        )
    }

    fn read_doc(&self, collection: &CollectionName, id: &DocId) -> Result<Option<DocState>> {
        self.read_doc_as(cf::DOCS, collection, id, keys::decode_doc_value)
    }

    fn read_doc_with_lsns(
        &self,
        collection: &CollectionName,
        id: &DocId,
    ) -> Result<Option<(DocState, DocLsns)>> {
        self.read_doc_as(cf::DOCS, collection, id, keys::decode_doc_value_with_lsns)
    }

    /// Writes raw bytes under a key of a column family, bypassing every invariant of
    /// the store. For tests (corruption, format version) and repair tools only.
    #[doc(hidden)]
    pub fn raw_put(&self, column_family: &str, key: &[u8], value: &[u8]) -> Result<()> {
        *self.writer.lock() += 1;
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(self.cf(column_family), key, value);
        self.commit(batch, true)
    }

    /// Deletes a key of a column family, bypassing every invariant of the store. For
    /// tests (format migrations) and repair tools only.
    #[doc(hidden)]
    pub fn raw_delete(&self, column_family: &str, key: &[u8]) -> Result<()> {
        *self.writer.lock() += 1;
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete_cf(self.cf(column_family), key);
        self.commit(batch, true)
    }

    /// Every key of a column family, in order. For tests and repair tools.
    #[doc(hidden)]
    pub fn raw_keys(&self, column_family: &str) -> Result<Vec<Vec<u8>>> {
        let mut it = self.db.raw_iterator_cf(self.cf(column_family));
        it.seek_to_first();
        let mut out = Vec::new();
        while let Some(key) = it.key() {
            out.push(key.to_vec());
            it.next();
        }
        it.status().map_err(self.err())?;
        Ok(out)
    }

    /// Reads raw bytes under a key of a column family. For tests and repair tools.
    #[doc(hidden)]
    pub fn raw_get(&self, column_family: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db
            .get_cf(self.cf(column_family), key)
            .map_err(self.err())
    }
}

/// Below this many ids, [`Store::get_many`] reads them one by one (an iterator costs
/// about as much to set up as a few point reads).
const MIN_WALKED_IDS: usize = 4;
/// How many keys [`Store::get_many`] steps over before it seeks instead.
const WALK_STEPS: usize = 2;

/// About the bytes of the write batch that stores `docs`: their values, and room for
/// the keys of their rows.
fn batch_bytes(docs: &[PlannedDoc<'_>]) -> usize {
    docs.iter().map(|d| d.encoded.len() + 256).sum::<usize>() + 256
}

impl RunSource for RocksStore {
    fn lsn_run_at(&self, collection: &CollectionName, lsn: Lsn) -> Result<Option<(Lsn, Vec<u8>)>> {
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(keys::collection_prefix(collection));
        opts.set_iterate_upper_bound(keys::collection_end(collection));
        let mut it = self.db.raw_iterator_cf_opt(self.cf(cf::LSNS), opts);
        it.seek_for_prev(keys::lsn_key(collection, lsn));
        let found = match it.item() {
            Some((key, value)) => Some((
                keys::parse_lsn_key(collection, key)
                    .map_err(|e| StoreError::corrupt_meta("LSN-index key", e))?,
                value.to_vec(),
            )),
            None => None,
        };
        it.status().map_err(self.err())?;
        Ok(found)
    }

    fn change_runs_from(&self, actor: ActorId, seq: u64, visit: &mut RunVisitor<'_>) -> Result<()> {
        let mut opts = ReadOptions::default();
        if let Some(end) = keys::change_actor_end(actor) {
            opts.set_iterate_upper_bound(end);
        }
        let mut it = self.db.raw_iterator_cf_opt(self.cf(cf::CHANGES), opts);
        it.seek(keys::change_seek(actor, seq));
        while let Some((key, value)) = it.item() {
            if visit(key, value)? {
                return Ok(());
            }
            it.next();
        }
        it.status().map_err(self.err())
    }
}

impl Store for RocksStore {
    fn get(&self, collection: &CollectionName, id: &DocId) -> Result<Option<DocState>> {
        self.read_doc(collection, id)
    }

    /// Walks the ids in key order with one iterator: ids close together in key order
    /// (the usual batch: sequential or time-ordered ids, new ones past every stored
    /// key) then cost one seek and a few steps instead of a point read each. Ids
    /// scattered among stored documents would need a seek each, dearer than a point
    /// read through the bloom filters, so once the walk has sought again for one id in
    /// eight, the rest are read one by one.
    fn get_many(
        &self,
        collection: &CollectionName,
        ids: &[&DocId],
    ) -> Vec<Result<Option<DocState>>> {
        if ids.len() < MIN_WALKED_IDS {
            return get_each(self, collection, ids);
        }
        let keys: Vec<Vec<u8>> = ids.iter().map(|id| keys::doc_key(collection, id)).collect();
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_unstable_by(|&a, &b| keys[a].cmp(&keys[b]));
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(keys::collection_end(collection));
        let mut it = self.db.raw_iterator_cf_opt(self.cf(cf::DOCS), opts);
        it.seek(&keys[order[0]]);
        let (mut seeks_left, mut walking) = (ids.len() / 8, true);
        // Each id moves the iterator to the first key from it on: a few steps forward,
        // else a seek, else (out of seeks) the walk ends.
        let mut out: Vec<Option<Result<Option<DocState>>>> = ids.iter().map(|_| None).collect();
        for &i in &order {
            let key = keys[i].as_slice();
            let mut steps = 0;
            while walking && it.key().is_some_and(|at| at < key) {
                if steps < WALK_STEPS {
                    it.next();
                    steps += 1;
                } else if seeks_left > 0 {
                    seeks_left -= 1;
                    it.seek(key);
                } else {
                    walking = false;
                }
            }
            out[i] = Some(if walking {
                // The iterator is at the first key from `key` on, or past every key of
                // the collection (unless it stopped on an error: its status says, below).
                match it.item() {
                    Some((at, value)) if at == key => keys::decode_doc_value(value)
                        .map(Some)
                        .map_err(|e| StoreError::corrupt_doc(collection, ids[i], e)),
                    _ => Ok(None),
                }
            } else {
                self.get(collection, ids[i])
            });
        }
        if it.status().is_err() {
            // Whatever it answered after the error is unsure: read each one again.
            return get_each(self, collection, ids);
        }
        out.into_iter().flatten().collect()
    }

    fn scan(
        &self,
        collection: &CollectionName,
        after: Option<&DocId>,
        limit: usize,
    ) -> Result<Vec<(DocId, DocState)>> {
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(keys::collection_end(collection));
        let mut it = self.db.raw_iterator_cf_opt(self.cf(cf::DOCS), opts);
        match after {
            Some(id) => {
                let mut start = keys::doc_key(collection, id);
                start.push(0); // the smallest key after it
                it.seek(start);
            }
            None => it.seek(keys::collection_prefix(collection)),
        }
        let mut out = Vec::new();
        while out.len() < limit {
            let Some((key, value)) = it.item() else {
                break;
            };
            let (_, id) = keys::parse_doc_key(key).map_err(|e| StoreError::Corrupt {
                collection: collection.to_string(),
                id: String::from_utf8_lossy(key).into_owned(),
                reason: format!("unreadable key: {e}"),
            })?;
            let state = keys::decode_doc_value(value)
                .map_err(|e| StoreError::corrupt_doc(collection, &id, e))?;
            out.push((id, state));
            it.next();
        }
        it.status().map_err(self.err())?;
        Ok(out)
    }

    fn collections(&self) -> Result<Vec<CollectionName>> {
        let mut it = self.db.raw_iterator_cf(self.cf(cf::DOCS));
        it.seek_to_first();
        let mut out = Vec::new();
        while let Some(key) = it.key() {
            let (collection, _) = keys::parse_doc_key(key)
                .map_err(|e| StoreError::corrupt_meta("document key", e))?;
            it.seek(keys::collection_end(&collection));
            out.push(collection);
        }
        it.status().map_err(self.err())?;
        Ok(out)
    }

    fn apply(&self, batch: &WriteBatch) -> Result<Applied> {
        let mut writer = self.writer.lock();
        let (version, max_hlc, lsn, defs) = {
            let cached = self.cached.read();
            let defs: Vec<IndexDef> = cached.indexes.values().cloned().collect();
            (cached.version.clone(), cached.max_hlc, cached.lsn, defs)
        };
        let before = Before {
            generation: Some(*writer),
            version: &version,
            max_hlc,
            lsn,
            indexes: &defs,
        };
        // A document acquired here absorbs its shadow (`store::shadow`).
        let absorbed = if self.has_shadows.load(Ordering::Relaxed) {
            shadow::absorb(batch, |c, id| self.read_shadow(c, id))?
        } else {
            None
        };
        let (batch, absorbed) = match &absorbed {
            Some((batch, absorbed)) => (batch, absorbed.as_slice()),
            None => (batch, &[][..]),
        };
        let plan = plan_apply(batch, before, |c, id| self.read_doc_with_lsns(c, id))?;
        if plan.docs.is_empty()
            && !plan.version_changed
            && plan.max_hlc.is_none()
            && batch.bookmarks().is_empty()
        {
            return plan.into_applied();
        }
        let (docs, indexes, meta) = (self.cf(cf::DOCS), self.cf(cf::INDEXES), self.cf(cf::META));
        let clear_evicted = self.has_evicted.load(Ordering::Relaxed);
        // Sized up front: a batch of a thousand documents would otherwise be copied
        // a dozen times as it grows.
        let mut wb = rocksdb::WriteBatch::with_capacity_bytes(batch_bytes(&plan.docs));
        let mut edits = IndexEdits::with_capacity(plan.docs.len());
        // One key and one value buffer for every document: the batch copies them.
        let (mut key, mut value) = (Vec::new(), Vec::new());
        for doc in &plan.docs {
            let (collection, id) = (doc.collection, doc.id);
            for dot in &doc.dots_removed {
                edits.remove_change(*dot, collection, id);
            }
            for dot in doc.dots_added() {
                edits.add_change(dot, collection, id);
            }
            for (name, value) in &doc.index_removed {
                wb.delete_cf(indexes, keys::index_key(name, value, id));
            }
            for (name, value) in &doc.index_added {
                wb.put_cf(indexes, keys::index_key(name, value, id), []);
            }
            if let Some(old) = doc.old_lsn {
                edits.remove_lsn(collection, old, id);
            }
            edits.add_lsn(collection, doc.lsns.lsn(), id);
            keys::write_doc_key(&mut key, collection, id);
            if clear_evicted {
                wb.delete_cf(self.cf(cf::EVICTED), &key);
            }
            doc.write_stored_value(&mut value);
            wb.put_cf(docs, &key, &value);
        }
        for gone in absorbed {
            let (collection, id) = (&gone.collection, &gone.id);
            wb.delete_cf(self.cf(cf::SHADOWS), keys::doc_key(collection, id));
            edits.remove_lsn(collection, gone.lsn, id);
        }
        self.write_index_rows(&mut wb, edits, plan.lsn)?;
        if plan.lsn != lsn {
            wb.put_cf(meta, keys::META_LSN, plan.lsn.to_be_bytes());
        }
        for (peer, query, bookmark) in batch.bookmarks() {
            wb.put_cf(
                self.cf(cf::PEERS),
                keys::bookmark_key(peer, query),
                bookmark.to_be_bytes(),
            );
        }
        if plan.version_changed {
            wb.put_cf(
                meta,
                keys::META_VERSION_VECTOR,
                keys::encode_version_vector(&plan.version),
            );
        }
        if let Some(hlc) = plan.max_hlc {
            wb.put_cf(meta, keys::META_MAX_HLC, hlc.to_raw().to_be_bytes());
        }
        *writer += 1;
        self.commit(wb, true)?;
        {
            let mut cached = self.cached.write();
            cached.version = plan.version.clone();
            cached.lsn = plan.lsn;
            if let Some(hlc) = plan.max_hlc {
                cached.max_hlc = hlc;
            }
        }
        plan.into_applied()
    }

    fn generation(&self) -> Option<u64> {
        Some(*self.writer.lock())
    }

    fn version(&self) -> VersionVector {
        self.cached.read().version.clone()
    }

    fn max_hlc(&self) -> Hlc {
        self.cached.read().max_hlc
    }

    fn docs_changed_since(&self, seen: &VersionVector) -> Result<Vec<(CollectionName, DocId)>> {
        let mut it = self.db.raw_iterator_cf(self.cf(cf::CHANGES));
        it.seek_to_first();
        let mut out = BTreeSet::new();
        let corrupt = |e| StoreError::corrupt_meta("change-index run", e);
        while let Some((key, value)) = it.item() {
            let last = keys::parse_change_run_key(key).map_err(corrupt)?;
            match seen.get(last.actor).checked_add(1) {
                // Everything of this actor is seen: jump to the next actor.
                None => match keys::change_actor_end(last.actor) {
                    Some(next) => it.seek(next),
                    None => break,
                },
                // Seen up to `from - 1`: jump to the first run with an unseen write.
                Some(from) if last.seq < from => it.seek(keys::change_seek(last.actor, from)),
                Some(from) => {
                    for entry in keys::decode_change_run(value).map_err(corrupt)? {
                        if entry.seq >= from {
                            out.insert((entry.collection, entry.id));
                        }
                    }
                    it.next();
                }
            }
        }
        it.status().map_err(self.err())?;
        Ok(out.into_iter().collect())
    }

    fn evict(&self, collection: &CollectionName, ids: &[DocId]) -> Result<Vec<(DocId, DocState)>> {
        let mut writer = self.writer.lock();
        let defs: Vec<IndexDef> = self
            .cached
            .read()
            .indexes
            .values()
            .filter(|d| d.collection == *collection)
            .cloned()
            .collect();
        let mut wb = rocksdb::WriteBatch::default();
        let mut edits = IndexEdits::default();
        let mut removed = Vec::new();
        for id in ids {
            let Some((state, lsns)) = self.read_doc_with_lsns(collection, id)? else {
                continue;
            };
            edits.remove_lsn(collection, lsns.lsn(), id);
            for dot in dot_set(Some(&state)) {
                edits.remove_change(dot, collection, id);
            }
            for def in &defs {
                if let Some(value) = def.entry_value(id, &state) {
                    wb.delete_cf(self.cf(cf::INDEXES), keys::index_key(&def.name, &value, id));
                }
            }
            let key = keys::doc_key(collection, id);
            wb.delete_cf(self.cf(cf::DOCS), &key);
            wb.put_cf(self.cf(cf::EVICTED), &key, []);
            removed.push((id.clone(), state));
        }
        if !removed.is_empty() {
            // Nothing is added: the LSN only names new runs.
            let lsn = self.cached.read().lsn;
            self.write_index_rows(&mut wb, edits, lsn)?;
            self.has_evicted.store(true, Ordering::Relaxed);
            *writer += 1;
            self.commit(wb, true)?;
        }
        Ok(removed)
    }

    fn is_evicted(&self, collection: &CollectionName, id: &DocId) -> Result<bool> {
        // Sync asks this of every document it receives: spare the read when no eviction
        // marker can exist.
        if !self.has_evicted.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let key = keys::doc_key(collection, id);
        Ok(self
            .db
            .get_pinned_cf(self.cf(cf::EVICTED), key)
            .map_err(self.err())?
            .is_some())
    }

    fn evicted(&self, collection: &CollectionName) -> Result<Vec<DocId>> {
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(keys::collection_end(collection));
        let mut it = self.db.raw_iterator_cf_opt(self.cf(cf::EVICTED), opts);
        it.seek(keys::collection_prefix(collection));
        let mut out = Vec::new();
        while let Some(key) = it.key() {
            let (_, id) =
                keys::parse_doc_key(key).map_err(|e| StoreError::corrupt_meta("evicted key", e))?;
            out.push(id);
            it.next();
        }
        it.status().map_err(self.err())?;
        Ok(out)
    }

    fn forget_evicted(&self, collection: &CollectionName, ids: &[DocId]) -> Result<()> {
        let _writer = self.writer.lock();
        let mut wb = rocksdb::WriteBatch::default();
        for id in ids {
            wb.delete_cf(self.cf(cf::EVICTED), keys::doc_key(collection, id));
        }
        self.commit(wb, true)
    }

    fn create_index(&self, def: &IndexDef) -> Result<()> {
        def.validate()?;
        let _writer = self.writer.lock();
        match self.cached.read().indexes.get(&def.name) {
            Some(existing) if existing == def => return Ok(()),
            Some(_) => return Err(StoreError::IndexExists(def.name.clone())),
            None => {}
        }
        let mut wb = rocksdb::WriteBatch::default();
        let mut after = None;
        loop {
            let page = self.scan(&def.collection, after.as_ref(), 1024)?;
            for (id, state) in &page {
                if let Some(value) = def.entry_value(id, state) {
                    wb.put_cf(
                        self.cf(cf::INDEXES),
                        keys::index_key(&def.name, &value, id),
                        [],
                    );
                }
            }
            match page.into_iter().last() {
                Some((id, _)) => after = Some(id),
                None => break,
            }
        }
        let record = serde_json::to_vec(&IndexDefRecord::V1(def.clone()))
            .expect("an index definition always serialises");
        wb.put_cf(self.cf(cf::INDEX_DEFS), def.name.as_bytes(), record);
        self.commit(wb, true)?;
        self.cached
            .write()
            .indexes
            .insert(def.name.clone(), def.clone());
        Ok(())
    }

    fn drop_index(&self, name: &str) -> Result<bool> {
        let _writer = self.writer.lock();
        if !self.cached.read().indexes.contains_key(name) {
            return Ok(false);
        }
        let mut wb = rocksdb::WriteBatch::default();
        wb.delete_range_cf(
            self.cf(cf::INDEXES),
            keys::index_prefix(name),
            keys::index_end(name),
        );
        wb.delete_cf(self.cf(cf::INDEX_DEFS), name.as_bytes());
        self.commit(wb, true)?;
        self.cached.write().indexes.remove(name);
        Ok(true)
    }

    fn indexes(&self) -> Vec<IndexDef> {
        self.cached.read().indexes.values().cloned().collect()
    }

    fn index_scan(
        &self,
        name: &str,
        lower: Bound<&Value>,
        upper: Bound<&Value>,
    ) -> Result<Vec<DocId>> {
        if !self.cached.read().indexes.contains_key(name) {
            return Err(StoreError::UnknownIndex(name.to_owned()));
        }
        let bounds = EncodedBounds::new(lower, upper);
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(keys::index_end(name));
        let mut it = self.db.raw_iterator_cf_opt(self.cf(cf::INDEXES), opts);
        let mut start = keys::index_prefix(name);
        start.extend_from_slice(bounds.start().unwrap_or_default());
        it.seek(start);
        let mut out = Vec::new();
        while let Some(key) = it.key() {
            let (value, id) = keys::parse_index_key(name, key)
                .map_err(|e| StoreError::corrupt_meta(format!("entry of index '{name}'"), e))?;
            if bounds.above(value) {
                break;
            }
            if !bounds.below(value) {
                out.push(id);
            }
            it.next();
        }
        it.status().map_err(self.err())?;
        Ok(out)
    }

    fn incarnation(&self) -> Incarnation {
        self.cached.read().incarnation
    }

    fn lsn(&self) -> Lsn {
        self.cached.read().lsn
    }

    fn changed_since(
        &self,
        collection: &CollectionName,
        after: Lsn,
        cursor: Lsn,
        limit: usize,
    ) -> Result<Vec<ChangedDoc>> {
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(keys::collection_prefix(collection));
        opts.set_iterate_upper_bound(keys::collection_end(collection));
        // One snapshot for the index and the documents: a document that changes
        // meanwhile is found at its old LSN with its old state, consistently.
        let snapshot = self.db.snapshot();
        opts.set_snapshot(&snapshot);
        let mut it = self.db.raw_iterator_cf_opt(self.cf(cf::LSNS), opts);
        // The run holding the first LSN wanted may start before it.
        let from = cursor.max(after).saturating_add(1);
        it.seek_for_prev(keys::lsn_key(collection, from));
        if !it.valid() {
            it.seek(keys::lsn_key(collection, from));
        }
        let corrupt = |e: keys::KeyError| StoreError::corrupt_meta("LSN-index run", e);
        let mut out = Vec::new();
        while out.len() < limit {
            let Some((key, value)) = it.item() else {
                break;
            };
            let first = keys::parse_lsn_key(collection, key).map_err(corrupt)?;
            for (lsn, id) in keys::decode_lsn_run(first, value).map_err(corrupt)? {
                if lsn < from {
                    continue;
                }
                if out.len() == limit {
                    break;
                }
                out.push(self.changed_doc(&snapshot, collection, id, lsn, after)?);
            }
            it.next();
        }
        it.status().map_err(self.err())?;
        Ok(out)
    }

    fn shadow(&self, collection: &CollectionName, id: &DocId) -> Result<Option<DocState>> {
        Ok(self.read_shadow(collection, id)?.map(|(state, _)| state))
    }

    fn apply_shadows(&self, fragments: &[DocChange]) -> Result<ShadowsApplied> {
        let mut writer = self.writer.lock();
        let last = self.cached.read().lsn;
        let ShadowWrites { shadows, held } = shadow::merge_fragments(
            fragments,
            last + 1,
            |c, id| Ok(self.read_doc(c, id)?.is_some()),
            |c, id| self.read_shadow(c, id),
        )?;
        let Some(lsn) = shadows.last().map(|write| write.lsn) else {
            return Ok(ShadowsApplied { lsn: last, held });
        };
        let shadow_cf = self.cf(cf::SHADOWS);
        let mut wb = rocksdb::WriteBatch::default();
        let mut edits = IndexEdits::default();
        for write in &shadows {
            let (collection, id) = (&write.collection, &write.id);
            if let Some(old) = write.stored_lsn {
                edits.remove_lsn(collection, old, id);
            }
            edits.add_lsn(collection, write.lsn, id);
            wb.put_cf(
                shadow_cf,
                keys::doc_key(collection, id),
                keys::encode_doc_value(&write.lsns, &write.state, &write.encoded),
            );
        }
        self.write_index_rows(&mut wb, edits, lsn)?;
        wb.put_cf(self.cf(cf::META), keys::META_LSN, lsn.to_be_bytes());
        self.has_shadows.store(true, Ordering::Relaxed);
        *writer += 1;
        self.commit(wb, true)?;
        self.cached.write().lsn = lsn;
        Ok(ShadowsApplied { lsn, held })
    }

    fn bookmark(&self, peer: &Incarnation, query: &QueryId) -> Result<Lsn> {
        match self
            .db
            .get_pinned_cf(self.cf(cf::PEERS), keys::bookmark_key(peer, query))
            .map_err(self.err())?
        {
            Some(bytes) => {
                keys::decode_u64(&bytes).map_err(|e| StoreError::corrupt_meta("sync bookmark", e))
            }
            None => Ok(0),
        }
    }

    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.db
            .get_cf(self.cf(cf::META), keys::meta_key(key))
            .map_err(self.err())
    }

    fn meta_put(&self, key: &str, value: &[u8]) -> Result<()> {
        let mut wb = rocksdb::WriteBatch::default();
        wb.put_cf(self.cf(cf::META), keys::meta_key(key), value);
        self.commit(wb, true)
    }
}

impl ChunkBackend for RocksStore {
    fn record(&self, hash: &BlobHash) -> Result<Option<BlobRecord>> {
        let key = keys::blob_record_key(hash.as_bytes());
        match self
            .db
            .get_pinned_cf(self.cf(cf::ATTACHMENTS), key)
            .map_err(self.err())?
        {
            Some(bytes) => BlobRecord::decode(hash, &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn chunk(&self, hash: &BlobHash, index: u32) -> Result<Option<Vec<u8>>> {
        self.db
            .get_cf(
                self.cf(cf::ATTACHMENTS),
                keys::blob_chunk_key(hash.as_bytes(), index),
            )
            .map_err(self.err())
    }

    fn put_chunks(&self, hash: &BlobHash, chunks: &[(u32, &[u8])]) -> Result<()> {
        let mut wb = rocksdb::WriteBatch::default();
        for (index, bytes) in chunks {
            wb.put_cf(
                self.cf(cf::ATTACHMENTS),
                keys::blob_chunk_key(hash.as_bytes(), *index),
                bytes,
            );
        }
        // Made durable by the synced write of the blob's record (the log is sequential).
        self.commit(wb, false)
    }

    fn put_record(&self, hash: &BlobHash, record: &BlobRecord) -> Result<()> {
        let mut wb = rocksdb::WriteBatch::default();
        wb.put_cf(
            self.cf(cf::ATTACHMENTS),
            keys::blob_record_key(hash.as_bytes()),
            record.encode(),
        );
        self.commit(wb, true)
    }

    fn new_upload(&self) -> u64 {
        self.next_upload.fetch_add(1, Ordering::Relaxed)
    }

    fn stage(&self, upload: u64, index: u32, bytes: &[u8]) -> Result<()> {
        let mut wb = rocksdb::WriteBatch::default();
        wb.put_cf(
            self.cf(cf::ATTACHMENTS),
            keys::blob_staged_key(upload, index),
            bytes,
        );
        self.commit(wb, false)
    }

    fn staged(&self, upload: u64, index: u32) -> Result<Option<Vec<u8>>> {
        self.db
            .get_cf(
                self.cf(cf::ATTACHMENTS),
                keys::blob_staged_key(upload, index),
            )
            .map_err(self.err())
    }

    fn clear_staged(&self, upload: u64, count: u32) -> Result<()> {
        let mut wb = rocksdb::WriteBatch::default();
        for index in 0..count {
            wb.delete_cf(
                self.cf(cf::ATTACHMENTS),
                keys::blob_staged_key(upload, index),
            );
        }
        self.commit(wb, false)
    }

    fn hashes(&self) -> Result<Vec<BlobHash>> {
        let mut out = BTreeSet::new();
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(vec![keys::blob_record_prefix()[0] + 1]);
        let mut it = self.db.raw_iterator_cf_opt(self.cf(cf::ATTACHMENTS), opts);
        it.seek(keys::blob_record_prefix());
        while let Some(key) = it.key() {
            let hash = keys::parse_blob_record_key(key)
                .map_err(|e| StoreError::corrupt_meta("attachment key", e))?;
            out.insert(BlobHash::from_bytes(hash));
            it.next();
        }
        it.status().map_err(self.err())?;
        drop(it);
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(vec![keys::blob_chunks_prefix()[0] + 1]);
        let mut it = self.db.raw_iterator_cf_opt(self.cf(cf::ATTACHMENTS), opts);
        it.seek(keys::blob_chunks_prefix());
        while let Some(key) = it.key() {
            let (hash, _) = keys::parse_blob_chunk_key(key)
                .map_err(|e| StoreError::corrupt_meta("attachment key", e))?;
            out.insert(BlobHash::from_bytes(hash));
            // Past this blob's last chunk.
            let mut next = keys::blob_chunk_key(&hash, u32::MAX);
            next.push(0);
            it.seek(next);
        }
        it.status().map_err(self.err())?;
        Ok(out.into_iter().collect())
    }

    fn delete(&self, hash: &BlobHash) -> Result<()> {
        let attachments = self.cf(cf::ATTACHMENTS);
        let mut end = keys::blob_chunk_key(hash.as_bytes(), u32::MAX);
        end.push(0);
        let mut wb = rocksdb::WriteBatch::default();
        wb.delete_cf(attachments, keys::blob_record_key(hash.as_bytes()));
        wb.delete_range_cf(attachments, keys::blob_chunk_prefix(hash.as_bytes()), end);
        self.commit(wb, true)
    }
}

impl_blob_store!(RocksStore);
