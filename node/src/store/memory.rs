//! [`MemoryStore`]: the [`Store`] in ordered maps under one mutex. Nothing is durable;
//! it exists for tests and the simulator, where speed matters. It shares the write
//! planning (`store::plan`) and the index value encoding with the RocksDB backend, and
//! passes the same contract suite.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use parking_lot::Mutex;
use serde_json::Value;
use trellis_common::clock::Hlc;
use trellis_common::crdt::{DocState, VersionVector};
use trellis_common::delta::DocChange;
use trellis_common::ids::{ActorId, CollectionName, DocId};
use trellis_common::sync::{ChangedDoc, DocLsns, Incarnation, Lsn, QueryId};

use super::blobs::{BlobHash, BlobRecord, ChunkBackend, impl_blob_store};
use super::plan::{Before, plan_apply};
use super::shadow::{self, ShadowWrites, ShadowsApplied};
use super::{Applied, EncodedBounds, IndexDef, Result, Store, StoreError, WriteBatch};

type DocKey = (CollectionName, DocId);

/// A store in memory.
#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    incarnation: Incarnation,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            incarnation: Incarnation::random(),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    docs: BTreeMap<CollectionName, BTreeMap<DocId, DocState>>,
    /// Change numbers per document.
    lsns: BTreeMap<DocKey, DocLsns>,
    /// The LSN index (documents and shadows).
    by_lsn: BTreeMap<(CollectionName, Lsn), DocId>,
    /// Shadows of documents not held, with their change numbers (`store::shadow`).
    shadows: BTreeMap<DocKey, (DocState, DocLsns)>,
    lsn: Lsn,
    bookmarks: BTreeMap<(Incarnation, QueryId), Lsn>,
    /// actor → seq → documents holding that write.
    changes: BTreeMap<ActorId, BTreeMap<u64, BTreeSet<DocKey>>>,
    index_defs: BTreeMap<String, IndexDef>,
    /// index → encoded value → ids.
    index_entries: BTreeMap<String, BTreeMap<Vec<u8>, BTreeSet<DocId>>>,
    evicted: BTreeSet<DocKey>,
    meta: BTreeMap<String, Vec<u8>>,
    version: VersionVector,
    max_hlc: Hlc,
    blob_records: BTreeMap<BlobHash, BlobRecord>,
    chunks: BTreeMap<(BlobHash, u32), Vec<u8>>,
    staged: BTreeMap<(u64, u32), Vec<u8>>,
    next_upload: u64,
    /// Raised by every `apply` and `evict` ([`Store::generation`]).
    generation: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Inner {
    fn doc(&self, collection: &CollectionName, id: &DocId) -> Option<&DocState> {
        self.docs.get(collection)?.get(id)
    }

    fn add_change(&mut self, dot: trellis_common::crdt::Dot, key: &DocKey) {
        self.changes
            .entry(dot.actor)
            .or_default()
            .entry(dot.seq)
            .or_default()
            .insert(key.clone());
    }

    fn remove_change(&mut self, dot: trellis_common::crdt::Dot, key: &DocKey) {
        if let Some(seqs) = self.changes.get_mut(&dot.actor) {
            if let Some(docs) = seqs.get_mut(&dot.seq) {
                docs.remove(key);
                if docs.is_empty() {
                    seqs.remove(&dot.seq);
                }
            }
            if seqs.is_empty() {
                self.changes.remove(&dot.actor);
            }
        }
    }

    fn add_index_entry(&mut self, name: &str, value: Vec<u8>, id: &DocId) {
        self.index_entries
            .entry(name.to_owned())
            .or_default()
            .entry(value)
            .or_default()
            .insert(id.clone());
    }

    fn remove_index_entry(&mut self, name: &str, value: &[u8], id: &DocId) {
        if let Some(values) = self.index_entries.get_mut(name)
            && let Some(ids) = values.get_mut(value)
        {
            ids.remove(id);
            if ids.is_empty() {
                values.remove(value);
            }
        }
    }
}

impl Store for MemoryStore {
    fn get(&self, collection: &CollectionName, id: &DocId) -> Result<Option<DocState>> {
        Ok(self.inner.lock().doc(collection, id).cloned())
    }

    fn scan(
        &self,
        collection: &CollectionName,
        after: Option<&DocId>,
        limit: usize,
    ) -> Result<Vec<(DocId, DocState)>> {
        let inner = self.inner.lock();
        let Some(docs) = inner.docs.get(collection) else {
            return Ok(Vec::new());
        };
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(docs
            .range::<DocId, _>((start, Bound::Unbounded))
            .take(limit)
            .map(|(id, state)| (id.clone(), state.clone()))
            .collect())
    }

    fn collections(&self) -> Result<Vec<CollectionName>> {
        Ok(self.inner.lock().docs.keys().cloned().collect())
    }

    fn apply(&self, batch: &WriteBatch) -> Result<Applied> {
        let mut inner = self.inner.lock();
        let defs: Vec<IndexDef> = inner.index_defs.values().cloned().collect();
        // A document acquired here absorbs its shadow (`store::shadow`).
        let absorbed = if inner.shadows.is_empty() {
            None
        } else {
            let shadows = &inner.shadows;
            shadow::absorb(batch, |c, id| {
                Ok(shadows.get(&(c.clone(), id.clone())).cloned())
            })?
        };
        let (batch, absorbed) = match &absorbed {
            Some((batch, absorbed)) => (batch, absorbed.as_slice()),
            None => (batch, &[][..]),
        };
        let plan = {
            let (docs, lsns) = (&inner.docs, &inner.lsns);
            let before = Before {
                generation: Some(inner.generation),
                version: &inner.version,
                max_hlc: inner.max_hlc,
                lsn: inner.lsn,
                indexes: &defs,
            };
            plan_apply(batch, before, |c, id| {
                let Some(state) = docs.get(c).and_then(|d| d.get(id)) else {
                    return Ok(None);
                };
                let key = (c.clone(), id.clone());
                Ok(Some((
                    state.clone(),
                    lsns.get(&key).cloned().unwrap_or_default(),
                )))
            })?
        };
        for gone in absorbed {
            let key = (gone.collection.clone(), gone.id.clone());
            inner.shadows.remove(&key);
            inner.by_lsn.remove(&(key.0, gone.lsn));
        }
        inner.generation += 1;
        inner.lsn = plan.lsn;
        for (peer, query, lsn) in batch.bookmarks() {
            inner.bookmarks.insert((*peer, *query), *lsn);
        }
        for doc in &plan.docs {
            let key = (doc.collection.clone(), doc.id.clone());
            if let Some(old) = doc.old_lsn {
                inner.by_lsn.remove(&(doc.collection.clone(), old));
            }
            inner
                .by_lsn
                .insert((doc.collection.clone(), doc.lsns.lsn()), doc.id.clone());
            inner.lsns.insert(key.clone(), doc.lsns.clone());
            for dot in &doc.dots_removed {
                inner.remove_change(*dot, &key);
            }
            for dot in doc.dots_added() {
                inner.add_change(dot, &key);
            }
            for (name, value) in &doc.index_removed {
                inner.remove_index_entry(name, value, doc.id);
            }
            for (name, value) in &doc.index_added {
                inner.add_index_entry(name, value.clone(), doc.id);
            }
            inner.evicted.remove(&key);
            inner
                .docs
                .entry(doc.collection.clone())
                .or_default()
                .insert(doc.id.clone(), doc.after.state()?.into_owned());
        }
        inner.version = plan.version.clone();
        if let Some(hlc) = plan.max_hlc {
            inner.max_hlc = hlc;
        }
        plan.into_applied()
    }

    fn generation(&self) -> Option<u64> {
        Some(self.inner.lock().generation)
    }

    fn version(&self) -> VersionVector {
        self.inner.lock().version.clone()
    }

    fn max_hlc(&self) -> Hlc {
        self.inner.lock().max_hlc
    }

    fn docs_changed_since(&self, seen: &VersionVector) -> Result<Vec<(CollectionName, DocId)>> {
        let inner = self.inner.lock();
        let mut out = BTreeSet::new();
        for (actor, seqs) in &inner.changes {
            let Some(from) = seen.get(*actor).checked_add(1) else {
                continue;
            };
            for docs in seqs.range(from..).map(|(_, docs)| docs) {
                out.extend(docs.iter().cloned());
            }
        }
        Ok(out.into_iter().collect())
    }

    fn evict(&self, collection: &CollectionName, ids: &[DocId]) -> Result<Vec<(DocId, DocState)>> {
        let mut inner = self.inner.lock();
        inner.generation += 1;
        let defs: Vec<IndexDef> = inner
            .index_defs
            .values()
            .filter(|d| d.collection == *collection)
            .cloned()
            .collect();
        let mut removed = Vec::new();
        for id in ids {
            let key = (collection.clone(), id.clone());
            let Some(state) = inner.docs.get_mut(collection).and_then(|d| d.remove(id)) else {
                continue;
            };
            if inner.docs.get(collection).is_some_and(BTreeMap::is_empty) {
                inner.docs.remove(collection);
            }
            if let Some(lsns) = inner.lsns.remove(&key) {
                inner.by_lsn.remove(&(collection.clone(), lsns.lsn()));
            }
            for dot in super::dot_set(Some(&state)) {
                inner.remove_change(dot, &key);
            }
            for def in &defs {
                if let Some(value) = def.entry_value(id, &state) {
                    inner.remove_index_entry(&def.name, &value, id);
                }
            }
            inner.evicted.insert(key);
            removed.push((id.clone(), state));
        }
        Ok(removed)
    }

    fn is_evicted(&self, collection: &CollectionName, id: &DocId) -> Result<bool> {
        Ok(self
            .inner
            .lock()
            .evicted
            .contains(&(collection.clone(), id.clone())))
    }

    fn evicted(&self, collection: &CollectionName) -> Result<Vec<DocId>> {
        Ok(self
            .inner
            .lock()
            .evicted
            .iter()
            .filter(|(c, _)| c == collection)
            .map(|(_, id)| id.clone())
            .collect())
    }

    fn forget_evicted(&self, collection: &CollectionName, ids: &[DocId]) -> Result<()> {
        let mut inner = self.inner.lock();
        for id in ids {
            inner.evicted.remove(&(collection.clone(), id.clone()));
        }
        Ok(())
    }

    fn create_index(&self, def: &IndexDef) -> Result<()> {
        def.validate()?;
        let mut inner = self.inner.lock();
        match inner.index_defs.get(&def.name) {
            Some(existing) if existing == def => return Ok(()),
            Some(_) => return Err(StoreError::IndexExists(def.name.clone())),
            None => {}
        }
        let entries: Vec<(Vec<u8>, DocId)> = inner
            .docs
            .get(&def.collection)
            .into_iter()
            .flatten()
            .filter_map(|(id, state)| Some((def.entry_value(id, state)?, id.clone())))
            .collect();
        for (value, id) in entries {
            inner.add_index_entry(&def.name, value, &id);
        }
        inner.index_entries.entry(def.name.clone()).or_default();
        inner.index_defs.insert(def.name.clone(), def.clone());
        Ok(())
    }

    fn drop_index(&self, name: &str) -> Result<bool> {
        let mut inner = self.inner.lock();
        inner.index_entries.remove(name);
        Ok(inner.index_defs.remove(name).is_some())
    }

    fn indexes(&self) -> Vec<IndexDef> {
        self.inner.lock().index_defs.values().cloned().collect()
    }

    fn index_scan(
        &self,
        name: &str,
        lower: Bound<&Value>,
        upper: Bound<&Value>,
    ) -> Result<Vec<DocId>> {
        let inner = self.inner.lock();
        if !inner.index_defs.contains_key(name) {
            return Err(StoreError::UnknownIndex(name.to_owned()));
        }
        let bounds = EncodedBounds::new(lower, upper);
        let Some(values) = inner.index_entries.get(name) else {
            return Ok(Vec::new());
        };
        let start = match bounds.start() {
            Some(v) => Bound::Included(v.to_vec()),
            None => Bound::Unbounded,
        };
        Ok(values
            .range((start, Bound::Unbounded))
            .skip_while(|(v, _)| bounds.below(v))
            .take_while(|(v, _)| !bounds.above(v))
            .flat_map(|(_, ids)| ids.iter().cloned())
            .collect())
    }

    fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    fn lsn(&self) -> Lsn {
        self.inner.lock().lsn
    }

    fn changed_since(
        &self,
        collection: &CollectionName,
        after: Lsn,
        cursor: Lsn,
        limit: usize,
    ) -> Result<Vec<ChangedDoc>> {
        let inner = self.inner.lock();
        let start = (collection.clone(), cursor.max(after).saturating_add(1));
        let end = (collection.clone(), Lsn::MAX);
        let mut out = Vec::new();
        for ((_, lsn), id) in inner.by_lsn.range(start..=end).take(limit) {
            let key = (collection.clone(), id.clone());
            let (state, lsns, shadow) = match inner.doc(collection, id) {
                Some(state) => (state, &inner.lsns[&key], false),
                None => {
                    let (state, lsns) = inner.shadows.get(&key).ok_or_else(|| {
                        StoreError::corrupt_doc(collection, id, "indexed, not stored")
                    })?;
                    (state, lsns, true)
                }
            };
            let (fragment, whole) = lsns.fragment_after(state, after);
            out.push(ChangedDoc {
                id: id.clone(),
                lsn: *lsn,
                fragment,
                whole,
                state: state.clone(),
                shadow,
            });
        }
        Ok(out)
    }

    fn shadow(&self, collection: &CollectionName, id: &DocId) -> Result<Option<DocState>> {
        let inner = self.inner.lock();
        let key = (collection.clone(), id.clone());
        Ok(inner.shadows.get(&key).map(|(state, _)| state.clone()))
    }

    fn apply_shadows(&self, fragments: &[DocChange]) -> Result<ShadowsApplied> {
        let mut inner = self.inner.lock();
        let ShadowWrites { shadows, held } = shadow::merge_fragments(
            fragments,
            inner.lsn + 1,
            |c, id| Ok(inner.doc(c, id).is_some()),
            |c, id| Ok(inner.shadows.get(&(c.clone(), id.clone())).cloned()),
        )?;
        if let Some(last) = shadows.last() {
            inner.lsn = last.lsn;
            inner.generation += 1;
        }
        for write in shadows {
            let key = (write.collection, write.id);
            if let Some(old) = write.stored_lsn {
                inner.by_lsn.remove(&(key.0.clone(), old));
            }
            inner
                .by_lsn
                .insert((key.0.clone(), write.lsn), key.1.clone());
            inner.shadows.insert(key, (write.state, write.lsns));
        }
        Ok(ShadowsApplied {
            lsn: inner.lsn,
            held,
        })
    }

    fn bookmark(&self, peer: &Incarnation, query: &QueryId) -> Result<Lsn> {
        Ok(self
            .inner
            .lock()
            .bookmarks
            .get(&(*peer, *query))
            .copied()
            .unwrap_or(0))
    }

    fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.inner.lock().meta.get(key).cloned())
    }

    fn meta_put(&self, key: &str, value: &[u8]) -> Result<()> {
        self.inner
            .lock()
            .meta
            .insert(key.to_owned(), value.to_vec());
        Ok(())
    }
}

impl ChunkBackend for MemoryStore {
    fn record(&self, hash: &BlobHash) -> Result<Option<BlobRecord>> {
        Ok(self.inner.lock().blob_records.get(hash).cloned())
    }

    fn chunk(&self, hash: &BlobHash, index: u32) -> Result<Option<Vec<u8>>> {
        Ok(self.inner.lock().chunks.get(&(*hash, index)).cloned())
    }

    fn put_chunks(&self, hash: &BlobHash, chunks: &[(u32, &[u8])]) -> Result<()> {
        let mut inner = self.inner.lock();
        for (index, bytes) in chunks {
            inner.chunks.insert((*hash, *index), bytes.to_vec());
        }
        Ok(())
    }

    fn put_record(&self, hash: &BlobHash, record: &BlobRecord) -> Result<()> {
        self.inner.lock().blob_records.insert(*hash, record.clone());
        Ok(())
    }

    fn new_upload(&self) -> u64 {
        let mut inner = self.inner.lock();
        inner.next_upload += 1;
        inner.next_upload
    }

    fn stage(&self, upload: u64, index: u32, bytes: &[u8]) -> Result<()> {
        self.inner
            .lock()
            .staged
            .insert((upload, index), bytes.to_vec());
        Ok(())
    }

    fn staged(&self, upload: u64, index: u32) -> Result<Option<Vec<u8>>> {
        Ok(self.inner.lock().staged.get(&(upload, index)).cloned())
    }

    fn clear_staged(&self, upload: u64, count: u32) -> Result<()> {
        let mut inner = self.inner.lock();
        for index in 0..count {
            inner.staged.remove(&(upload, index));
        }
        Ok(())
    }

    fn hashes(&self) -> Result<Vec<BlobHash>> {
        let inner = self.inner.lock();
        let mut all: BTreeSet<BlobHash> = inner.blob_records.keys().copied().collect();
        all.extend(inner.chunks.keys().map(|(h, _)| *h));
        Ok(all.into_iter().collect())
    }

    fn delete(&self, hash: &BlobHash) -> Result<()> {
        let mut inner = self.inner.lock();
        inner.blob_records.remove(hash);
        inner.chunks.retain(|(h, _), _| h != hash);
        Ok(())
    }
}

impl_blob_store!(MemoryStore);
