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

use std::collections::BTreeMap;
use std::sync::Arc;

use trellis_common::crdt::{Crdt, DocState};
use trellis_common::delta::DocChange;
use trellis_common::ids::{CollectionName, DocId};
use trellis_common::sync::{ChangedDoc, Incarnation, Lsn, QueryId, StoreFailure, SyncStore};

use crate::engine::Engine;
use crate::store::BlobHash;
use crate::store::blobs::CHUNK_SIZE;

/// Held fragments beyond this many are committed at once, without waiting for the
/// flush (bounds memory on a large initial sync).
const MAX_HELD: usize = 4096;

/// The node's store for sync sessions. See the module documentation.
pub struct EngineSyncStore {
    engine: Arc<Engine>,
    incarnation: Incarnation,
    /// Fragments merged since the last flush, in order.
    held: Vec<DocChange>,
    /// The resulting states of the documents they touched.
    states: BTreeMap<(CollectionName, DocId), DocState>,
    bookmarks: BTreeMap<(Incarnation, QueryId), Lsn>,
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
        let incarnation = engine.store().incarnation();
        Self {
            engine,
            incarnation,
            held: Vec::new(),
            states: BTreeMap::new(),
            bookmarks: BTreeMap::new(),
        }
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
        if self.held.is_empty() && bookmarks.is_empty() {
            return Ok(());
        }
        let held = std::mem::take(&mut self.held);
        self.engine.apply_sync(held, &bookmarks).map_err(failure)?;
        self.states.clear();
        if with_bookmarks {
            self.bookmarks.clear();
        }
        Ok(())
    }
}

impl SyncStore for EngineSyncStore {
    fn incarnation(&self) -> Incarnation {
        self.incarnation
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
        let mut merged = current.clone().unwrap_or_default();
        merged.merge(fragment);
        let changed = match &current {
            Some(current) => *current != merged,
            None => !merged.is_empty(),
        };
        if !changed {
            return Ok(false);
        }
        self.held.push(DocChange {
            collection: collection.clone(),
            id: id.clone(),
            state: fragment.clone(),
        });
        self.states.insert((collection.clone(), id.clone()), merged);
        if self.held.len() >= MAX_HELD {
            // Documents may be committed early; bookmarks wait for the flush.
            self.commit(false)?;
        }
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
        let chunks = u32::try_from(len.div_ceil(CHUNK_SIZE as u64)).map_err(failure)?;
        Ok(store
            .get_chunk(&hash, index)
            .map_err(failure)?
            .map(|bytes| (chunks, bytes)))
    }
}
