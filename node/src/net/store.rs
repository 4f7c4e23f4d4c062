//! [`EngineSyncStore`]: the node's store as sync sessions see it (`SyncStore`).
//!
//! Reads go to the store; writes go through the engine ([`Engine::apply_sync`]), so the
//! clock observes remote stamps and observers (live queries, the WebSocket feed) see
//! synced documents exactly like local writes. Writes are held until
//! [`SyncStore::flush`], which the session driver calls after each batch of inputs: a
//! frame of a thousand documents becomes one RocksDB commit (one fsync) instead of a
//! thousand, and the bookmarks a batch completes are committed with its documents, so a
//! crash can never leave a bookmark vouching for documents that were not stored.
//! Meanwhile reads answer from the held states.
//!
//! Fragments kept as shadows (documents with natural ids that this node does not hold;
//! `store::shadow`) are held the same way and committed first, so a document acquired in
//! the same flush absorbs them.

use std::collections::BTreeMap;
use std::sync::Arc;

use trellis_common::crdt::{Crdt, DocState};
use trellis_common::delta::DocChange;
use trellis_common::ids::{CollectionName, DocId};
use trellis_common::sync::{ChangedDoc, Incarnation, Lsn, QueryId, StoreFailure, SyncStore};

use crate::engine::{Engine, EngineError};
use crate::store::blobs::chunk_count;
use crate::store::{BlobHash, StoreError};

/// Held fragments beyond this many are committed at once, without waiting for the
/// flush (bounds memory on a large initial sync).
const MAX_HELD: usize = 4096;

/// Whether a held fragment is of a document or of a shadow.
#[derive(Debug, Clone, Copy)]
enum Held {
    Document,
    Shadow,
}

/// The node's store for sync sessions. See the module documentation.
pub struct EngineSyncStore {
    engine: Arc<Engine>,
    /// Fragments merged since the last flush, in order.
    held: Vec<DocChange>,
    /// The resulting states of the documents they touched.
    states: BTreeMap<(CollectionName, DocId), DocState>,
    bookmarks: BTreeMap<(Incarnation, QueryId), Lsn>,
    /// Fragments kept as shadows since the last flush, in order.
    held_shadows: Vec<DocChange>,
    /// The resulting shadows.
    shadow_states: BTreeMap<(CollectionName, DocId), DocState>,
}

impl std::fmt::Debug for EngineSyncStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineSyncStore")
            .field("held", &self.held.len())
            .field("bookmarks", &self.bookmarks.len())
            .finish_non_exhaustive()
    }
}

fn failure(error: impl std::fmt::Display) -> StoreFailure {
    StoreFailure(error.to_string())
}

impl EngineSyncStore {
    /// The sync view of an engine's store.
    pub fn new(engine: Arc<Engine>) -> Self {
        Self {
            engine,
            held: Vec::new(),
            states: BTreeMap::new(),
            bookmarks: BTreeMap::new(),
            held_shadows: Vec::new(),
            shadow_states: BTreeMap::new(),
        }
    }

    /// The shadow of a document, held or stored.
    fn shadow(
        &self,
        collection: &CollectionName,
        id: &DocId,
    ) -> Result<Option<DocState>, StoreFailure> {
        if let Some(state) = self.shadow_states.get(&(collection.clone(), id.clone())) {
            return Ok(Some(state.clone()));
        }
        self.engine.store().shadow(collection, id).map_err(failure)
    }

    /// Holds a fragment until the flush, and the state it leads to for reads.
    fn hold(
        &mut self,
        kind: Held,
        collection: &CollectionName,
        id: &DocId,
        fragment: &DocState,
        merged: DocState,
    ) -> Result<(), StoreFailure> {
        let (held, states) = match kind {
            Held::Document => (&mut self.held, &mut self.states),
            Held::Shadow => (&mut self.held_shadows, &mut self.shadow_states),
        };
        held.push(DocChange {
            collection: collection.clone(),
            id: id.clone(),
            state: fragment.clone(),
        });
        states.insert((collection.clone(), id.clone()), merged);
        if self.held.len() + self.held_shadows.len() >= MAX_HELD {
            // Fragments may be committed early; bookmarks wait for the flush.
            self.commit(false)?;
        }
        Ok(())
    }

    fn commit(&mut self, with_bookmarks: bool) -> Result<(), StoreFailure> {
        let bookmarks: Vec<_> = if with_bookmarks {
            self.bookmarks
                .iter()
                .map(|((peer, query), lsn)| (*peer, *query, *lsn))
                .collect()
        } else {
            Vec::new()
        };
        if !self.held_shadows.is_empty() {
            let result = self.engine.apply_shadows(&self.held_shadows);
            self.held_shadows.clear();
            self.shadow_states.clear();
            result.map_err(failure)?;
        }
        if self.held.is_empty() && bookmarks.is_empty() {
            return Ok(());
        }
        match self.engine.apply_sync(&mut self.held, &bookmarks) {
            Ok(_) => {}
            // One document the store refuses (above the size limit) must not stop the
            // rest, nor be asked for again forever: commit the others one by one and
            // leave that one out (this node will not hold it).
            Err(EngineError::Store(StoreError::DocumentTooLarge { .. })) => {
                for change in std::mem::take(&mut self.held) {
                    let (collection, id) = (change.collection.clone(), change.id.clone());
                    match self.engine.apply_sync(&mut vec![change], &[]) {
                        Ok(_) => {}
                        Err(EngineError::Store(e @ StoreError::DocumentTooLarge { .. })) => {
                            tracing::warn!(%collection, %id, error = %e, "a synced document is refused and left out");
                        }
                        Err(e) => return Err(failure(e)),
                    }
                }
                self.engine
                    .apply_sync(&mut Vec::new(), &bookmarks)
                    .map_err(failure)?;
            }
            Err(e) => {
                // The session closes; nothing held survives it.
                self.held.clear();
                self.states.clear();
                self.bookmarks.clear();
                return Err(failure(e));
            }
        }
        self.states.clear();
        if with_bookmarks {
            self.bookmarks.clear();
        }
        Ok(())
    }
}

impl SyncStore for EngineSyncStore {
    fn incarnation(&self) -> Incarnation {
        self.engine.store().incarnation()
    }

    fn current_lsn(&self) -> Lsn {
        self.engine.store().lsn()
    }

    fn changed_since(
        &self,
        collection: &CollectionName,
        after: Lsn,
        cursor: Lsn,
        limit: usize,
    ) -> Result<Vec<ChangedDoc>, StoreFailure> {
        self.engine
            .store()
            .changed_since(collection, after, cursor, limit)
            .map_err(failure)
    }

    fn doc(
        &self,
        collection: &CollectionName,
        id: &DocId,
    ) -> Result<Option<DocState>, StoreFailure> {
        if let Some(state) = self.states.get(&(collection.clone(), id.clone())) {
            return Ok(Some(state.clone()));
        }
        self.engine.store().get(collection, id).map_err(failure)
    }

    fn docs_in(
        &self,
        collection: &CollectionName,
        after: Option<&DocId>,
        limit: usize,
    ) -> Result<Vec<(DocId, DocState)>, StoreFailure> {
        let mut docs = self
            .engine
            .store()
            .scan(collection, after, limit)
            .map_err(failure)?;
        for (id, state) in &mut docs {
            if let Some(held) = self.states.get(&(collection.clone(), id.clone())) {
                *state = held.clone();
            }
        }
        Ok(docs)
    }

    fn apply(
        &mut self,
        collection: &CollectionName,
        id: &DocId,
        fragment: &DocState,
    ) -> Result<bool, StoreFailure> {
        let store = self.engine.store();
        // An evicted document stays away until a subscription asks for it again
        // (`SyncHandle::subscribe` forgets the evictions of its collection).
        if store.is_evicted(collection, id).map_err(failure)? {
            return Ok(false);
        }
        let current = self.doc(collection, id)?;
        // A document acquired here starts from its shadow (the store merges it in).
        let mut merged = match &current {
            Some(state) => state.clone(),
            None => self.shadow(collection, id)?.unwrap_or_default(),
        };
        merged.merge(fragment);
        let changed = match &current {
            Some(current) => *current != merged,
            None => !merged.is_empty(),
        };
        if !changed {
            return Ok(false);
        }
        self.shadow_states.remove(&(collection.clone(), id.clone()));
        self.hold(Held::Document, collection, id, fragment, merged)?;
        Ok(true)
    }

    fn apply_shadow(
        &mut self,
        collection: &CollectionName,
        id: &DocId,
        fragment: &DocState,
    ) -> Result<bool, StoreFailure> {
        if self.doc(collection, id)?.is_some() {
            return self.apply(collection, id, fragment);
        }
        if self
            .engine
            .store()
            .is_evicted(collection, id)
            .map_err(failure)?
        {
            return Ok(false);
        }
        let current = self.shadow(collection, id)?.unwrap_or_default();
        let mut merged = current.clone();
        merged.merge(fragment);
        if merged == current {
            return Ok(false);
        }
        self.hold(Held::Shadow, collection, id, fragment, merged)?;
        Ok(true)
    }

    fn bookmark(&self, peer: &Incarnation, query: &QueryId) -> Result<Lsn, StoreFailure> {
        if let Some(lsn) = self.bookmarks.get(&(*peer, *query)) {
            return Ok(*lsn);
        }
        self.engine.store().bookmark(peer, query).map_err(failure)
    }

    fn set_bookmark(
        &mut self,
        peer: &Incarnation,
        query: &QueryId,
        lsn: Lsn,
    ) -> Result<(), StoreFailure> {
        self.bookmarks.insert((*peer, *query), lsn);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreFailure> {
        self.commit(true)
    }

    fn blob_chunk(
        &self,
        hash: &[u8; 32],
        index: u32,
    ) -> Result<Option<(u32, Vec<u8>)>, StoreFailure> {
        let store = self.engine.store();
        let hash = BlobHash::from_bytes(*hash);
        let Some(len) = store.blob_len(&hash).map_err(failure)? else {
            return Ok(None);
        };
        let chunks = chunk_count(len);
        Ok(store
            .get_chunk(&hash, index)
            .map_err(failure)?
            .map(|bytes| (chunks, bytes)))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use trellis_common::clock::Hlc;
    use trellis_common::crdt::{Dot, Stamp, WriteContext};
    use trellis_common::ids::ActorId;

    use super::*;
    use crate::engine::EngineOptions;
    use crate::store::{MAX_DOC_BYTES, MemoryStore, Store};

    fn fragment(seq: u64, body: &serde_json::Value) -> DocState {
        let actor = ActorId::from_u64(7);
        let ctx = WriteContext {
            stamp: Stamp {
                hlc: Hlc::new(1_790_000_000_000, 0),
                actor,
            },
            dot: Dot { actor, seq },
        };
        DocState::insert_delta(ctx, body).unwrap()
    }

    fn engine_on_memory() -> (Arc<dyn Store>, Arc<Engine>) {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let engine = Engine::open(
            Arc::clone(&store),
            ActorId::from_u64(1),
            EngineOptions::default(),
        );
        (store, Arc::new(engine.unwrap()))
    }

    #[test]
    fn writes_wait_for_the_flush_and_reads_see_them_meanwhile() {
        let (store, engine) = engine_on_memory();
        let mut sync = EngineSyncStore::new(Arc::clone(&engine));
        let cars = CollectionName::new("cars").unwrap();
        let id = DocId::from_string("c1").unwrap();
        let state = fragment(1, &json!({"color": "blue"}));
        assert!(sync.apply(&cars, &id, &state).unwrap());
        assert!(
            !sync.apply(&cars, &id, &state).unwrap(),
            "a duplicate changes nothing"
        );
        let peer = Incarnation::from_u64(2);
        let query = QueryId::of("SELECT * FROM cars");
        sync.set_bookmark(&peer, &query, 9).unwrap();
        assert_eq!(sync.doc(&cars, &id).unwrap(), Some(state.clone()));
        assert_eq!(sync.bookmark(&peer, &query).unwrap(), 9);
        assert_eq!(
            store.get(&cars, &id).unwrap(),
            None,
            "nothing committed yet"
        );
        assert_eq!(store.bookmark(&peer, &query).unwrap(), 0);
        sync.flush().unwrap();
        assert_eq!(store.get(&cars, &id).unwrap(), Some(state));
        assert_eq!(store.bookmark(&peer, &query).unwrap(), 9);
        assert_eq!(sync.current_lsn(), 1);
    }

    #[test]
    fn an_evicted_document_is_not_fetched_back_by_sync() {
        let (store, engine) = engine_on_memory();
        let mut sync = EngineSyncStore::new(Arc::clone(&engine));
        let cars = CollectionName::new("cars").unwrap();
        let id = DocId::from_string("c1").unwrap();
        sync.apply(&cars, &id, &fragment(1, &json!({"n": 1})))
            .unwrap();
        sync.flush().unwrap();
        engine
            .execute("EVICT FROM cars WHERE _id = 'c1'", &Default::default())
            .unwrap();
        let newer = fragment(2, &json!({"n": 2}));
        assert!(!sync.apply(&cars, &id, &newer).unwrap());
        sync.flush().unwrap();
        assert_eq!(store.get(&cars, &id).unwrap(), None);
        // Once the eviction is forgotten (a subscription asks again), it comes back.
        store
            .forget_evicted(&cars, std::slice::from_ref(&id))
            .unwrap();
        assert!(sync.apply(&cars, &id, &newer).unwrap());
        sync.flush().unwrap();
        assert!(store.get(&cars, &id).unwrap().is_some());
    }

    #[test]
    fn a_document_above_the_size_limit_is_left_out_and_the_rest_commits() {
        let (store, engine) = engine_on_memory();
        let mut sync = EngineSyncStore::new(engine);
        let cars = CollectionName::new("cars").unwrap();
        let (small, big) = (
            DocId::from_string("small").unwrap(),
            DocId::from_string("big").unwrap(),
        );
        let huge = "x".repeat(MAX_DOC_BYTES + 1);
        sync.apply(&cars, &big, &fragment(1, &json!({"blob": huge})))
            .unwrap();
        sync.apply(&cars, &small, &fragment(2, &json!({"n": 1})))
            .unwrap();
        let peer = Incarnation::from_u64(2);
        let query = QueryId::of("SELECT * FROM cars");
        sync.set_bookmark(&peer, &query, 5).unwrap();
        sync.flush().unwrap();
        assert!(store.get(&cars, &small).unwrap().is_some());
        assert_eq!(store.get(&cars, &big).unwrap(), None);
        assert_eq!(store.bookmark(&peer, &query).unwrap(), 5);
    }

    #[test]
    fn natural_ids_not_held_are_kept_as_shadows_until_the_node_acquires_them() {
        let (store, engine) = engine_on_memory();
        let mut sync = EngineSyncStore::new(Arc::clone(&engine));
        let cars = CollectionName::new("cars").unwrap();
        let truck = DocId::from_string("truck-17").unwrap();
        // Far in the future of this node's clock: the other version is the newer one.
        let actor = ActorId::from_u64(7);
        let theirs = DocState::insert_delta(
            WriteContext {
                stamp: Stamp {
                    hlc: Hlc::new(4_000_000_000_000, 0),
                    actor,
                },
                dot: Dot { actor, seq: 1 },
            },
            &json!({"color": "red"}),
        )
        .unwrap();
        assert!(sync.apply_shadow(&cars, &truck, &theirs).unwrap());
        assert!(!sync.apply_shadow(&cars, &truck, &theirs).unwrap());
        assert_eq!(sync.doc(&cars, &truck).unwrap(), None);
        let lsn = sync.current_lsn();
        sync.flush().unwrap();
        assert!(
            sync.current_lsn() > lsn,
            "a shadow is numbered, to be relayed"
        );
        assert_eq!(store.shadow(&cars, &truck).unwrap(), Some(theirs));
        let seen = engine
            .execute("SELECT * FROM cars", &Default::default())
            .unwrap();
        assert_eq!(seen.documents().len(), 0, "queries do not see shadows");

        // A local insert of the same id acquires the document: both versions merge.
        engine
            .execute(
                r#"INSERT INTO cars DOCUMENTS ({"_id": "truck-17", "color": "blue"})"#,
                &Default::default(),
            )
            .unwrap();
        assert_eq!(store.shadow(&cars, &truck).unwrap(), None);
        let merged = store.get(&cars, &truck).unwrap().unwrap();
        assert_eq!(
            merged.to_json(&truck),
            Some(json!({"_id": "truck-17", "color": "red"}))
        );
    }
}
