//! What a sync session needs from a store ([`SyncStore`]), and [`MemoryStore`], the
//! in-memory reference implementation (tests and the simulator; the node's RocksDB store
//! must behave the same).
//!
//! The store numbers its changes: whenever a merge changes an entry of a document (or a
//! part of a counter), that entry is stamped with the store's next receipt sequence
//! number ([`Lsn`]); all entries changed by one merge share one LSN. A merge that
//! changes nothing takes no LSN. Each document is indexed by its latest LSN, per
//! collection, so "what changed after LSN x in collection c" is a range scan.
//!
//! Besides the documents it holds, a store keeps **shadows**: what it received of
//! documents it does not hold, when their ids are natural (not UUIDs; see
//! [`DocId::is_uuid`]). A shadow is out of sight (not a document: `doc` and `docs_in`
//! do not return it) but it is numbered and scanned like one, so it is relayed; when the
//! store acquires the document, the shadow is merged into it. docs/sync.md says why
//! ("Independent inserts of one id").

use std::collections::BTreeMap;

use super::lsn::DocLsns;
use super::{Incarnation, Lsn, QueryId};
use crate::crdt::{Crdt, DocState};
use crate::ids::{CollectionName, DocId};

/// A storage failure, reported by the session as the reason it closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreFailure(pub String);

/// A document changed after some LSN, as [`SyncStore::changed_since`] returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangedDoc {
    /// The document.
    pub id: DocId,
    /// Its latest LSN (the scan's order and cursor).
    pub lsn: Lsn,
    /// The entries (and counter parts) changed after the scan's `after`.
    pub fragment: DocState,
    /// Whether `fragment` is the whole document (nothing in it is older than `after`).
    pub whole: bool,
    /// The whole current document (or shadow).
    pub state: DocState,
    /// Whether this is a shadow, not a document held here.
    pub shadow: bool,
}

/// What a sync session reads and writes. One store is shared by all sessions of a node
/// (the node serialises calls); a session borrows it for one `handle` call.
pub trait SyncStore {
    /// The store's incarnation (made when it was created).
    fn incarnation(&self) -> Incarnation;

    /// The LSN of the latest change (0 for an empty store).
    fn current_lsn(&self) -> Lsn;

    /// The documents (and shadows) of `collection` whose latest LSN is greater than
    /// `cursor` (which is at least `after`), in LSN order, at most `limit` of them; each
    /// with the entries changed after `after`. Page through with `cursor` = the last
    /// document's LSN.
    fn changed_since(
        &self,
        collection: &CollectionName,
        after: Lsn,
        cursor: Lsn,
        limit: usize,
    ) -> Result<Vec<ChangedDoc>, StoreFailure>;

    /// The stored state of a document (tombstones included), if any.
    fn doc(
        &self,
        collection: &CollectionName,
        id: &DocId,
    ) -> Result<Option<DocState>, StoreFailure>;

    /// The stored documents of `collection` in id order after `after`, at most `limit`.
    fn docs_in(
        &self,
        collection: &CollectionName,
        after: Option<&DocId>,
        limit: usize,
    ) -> Result<Vec<(DocId, DocState)>, StoreFailure>;

    /// Merges a fragment into a document. Returns whether the document changed (and so
    /// took a new LSN). A document not held yet but shadowed starts from its shadow,
    /// which is then gone.
    fn apply(
        &mut self,
        collection: &CollectionName,
        id: &DocId,
        fragment: &DocState,
    ) -> Result<bool, StoreFailure>;

    /// Keeps a fragment of a document not held here in its shadow (merges it in). Returns
    /// whether the shadow changed (and so took a new LSN). If the document is held, the
    /// fragment is merged into it as by [`SyncStore::apply`].
    fn apply_shadow(
        &mut self,
        collection: &CollectionName,
        id: &DocId,
        fragment: &DocState,
    ) -> Result<bool, StoreFailure>;

    /// The bookmark for a peer's store incarnation and a query (0 when none).
    fn bookmark(&self, peer: &Incarnation, query: &QueryId) -> Result<Lsn, StoreFailure>;

    /// Records a bookmark (durably, for a persistent store).
    fn set_bookmark(
        &mut self,
        peer: &Incarnation,
        query: &QueryId,
        lsn: Lsn,
    ) -> Result<(), StoreFailure>;

    /// Makes durable what this `handle` call wrote ([`SyncStore::apply`],
    /// [`SyncStore::set_bookmark`]). The driver of a session calls it after each batch of
    /// inputs, before sending the frames they produced. A store may defer writes until
    /// then (to commit a whole frame of documents at once) but must answer reads with
    /// them meanwhile. The default writes at once and has nothing to do.
    fn flush(&mut self) -> Result<(), StoreFailure> {
        Ok(())
    }

    /// A chunk of an attachment, with the blob's number of chunks; `None` when the blob
    /// is not here. The default has no blobs.
    fn blob_chunk(
        &self,
        hash: &[u8; 32],
        index: u32,
    ) -> Result<Option<(u32, Vec<u8>)>, StoreFailure> {
        let _ = (hash, index);
        Ok(None)
    }
}

#[derive(Debug, Clone, Default)]
struct StoredDoc {
    state: DocState,
    lsns: DocLsns,
}

/// Documents in memory, with per-entry LSNs, an LSN index per collection and bookmarks.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    incarnation: Incarnation,
    lsn: Lsn,
    docs: BTreeMap<(CollectionName, DocId), StoredDoc>,
    /// Shadows: never for a held document.
    shadows: BTreeMap<(CollectionName, DocId), StoredDoc>,
    /// Documents and shadows by their latest LSN.
    by_lsn: BTreeMap<(CollectionName, Lsn), DocId>,
    bookmarks: BTreeMap<(Incarnation, QueryId), Lsn>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new(incarnation: Incarnation) -> Self {
        Self {
            incarnation,
            lsn: 0,
            docs: BTreeMap::new(),
            shadows: BTreeMap::new(),
            by_lsn: BTreeMap::new(),
            bookmarks: BTreeMap::new(),
        }
    }

    /// The stored state of a document.
    pub fn get(&self, collection: &CollectionName, id: &DocId) -> Option<&DocState> {
        self.docs
            .get(&(collection.clone(), id.clone()))
            .map(|d| &d.state)
    }

    /// Every stored document, tombstones included, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&CollectionName, &DocId, &DocState)> {
        self.docs.iter().map(|((c, id), d)| (c, id, &d.state))
    }

    /// The shadow of a document not held here.
    pub fn shadow(&self, collection: &CollectionName, id: &DocId) -> Option<&DocState> {
        self.shadows
            .get(&(collection.clone(), id.clone()))
            .map(|d| &d.state)
    }

    /// Merges a fragment (a local write's delta or a remote one); returns whether the
    /// document changed. A shadow of the document is merged in when it is acquired.
    pub fn merge(&mut self, collection: &CollectionName, id: &DocId, fragment: &DocState) -> bool {
        let key = (collection.clone(), id.clone());
        if !self.docs.contains_key(&key)
            && let Some(shadow) = self.shadows.remove(&key)
        {
            // Acquired: everything known of it becomes the document, all of it new here.
            self.by_lsn.remove(&(collection.clone(), shadow.lsns.lsn()));
            let mut state = shadow.state;
            state.merge(fragment);
            self.insert_new(&key, state);
            return true;
        }
        Self::merge_into(
            &mut self.docs,
            &mut self.by_lsn,
            &mut self.lsn,
            &key,
            fragment,
        )
    }

    /// Merges a fragment into the shadow of a document not held here (into the document
    /// if it is held); returns whether it changed.
    pub fn merge_shadow(
        &mut self,
        collection: &CollectionName,
        id: &DocId,
        fragment: &DocState,
    ) -> bool {
        let key = (collection.clone(), id.clone());
        if self.docs.contains_key(&key) {
            return self.merge(collection, id, fragment);
        }
        Self::merge_into(
            &mut self.shadows,
            &mut self.by_lsn,
            &mut self.lsn,
            &key,
            fragment,
        )
    }

    /// Merges into the document or shadow `key` of `stored`, numbering what changed.
    fn merge_into(
        stored: &mut BTreeMap<(CollectionName, DocId), StoredDoc>,
        by_lsn: &mut BTreeMap<(CollectionName, Lsn), DocId>,
        last: &mut Lsn,
        key: &(CollectionName, DocId),
        fragment: &DocState,
    ) -> bool {
        let lsn = *last + 1;
        let next = match stored.get(key) {
            Some(doc) => {
                let mut state = doc.state.clone();
                state.merge(fragment);
                let mut lsns = doc.lsns.clone();
                if !lsns.record(&doc.state, &state, lsn) {
                    return false;
                }
                by_lsn.remove(&(key.0.clone(), doc.lsns.lsn()));
                StoredDoc { state, lsns }
            }
            None => {
                let mut state = DocState::new();
                state.merge(fragment);
                if state.is_empty() {
                    return false;
                }
                StoredDoc {
                    state,
                    lsns: DocLsns::new(lsn),
                }
            }
        };
        stored.insert(key.clone(), next);
        *last = lsn;
        by_lsn.insert((key.0.clone(), lsn), key.1.clone());
        true
    }

    /// Stores a new document with every entry numbered by the next LSN.
    fn insert_new(&mut self, key: &(CollectionName, DocId), state: DocState) {
        self.lsn += 1;
        let doc = StoredDoc {
            state,
            lsns: DocLsns::new(self.lsn),
        };
        self.by_lsn.insert((key.0.clone(), self.lsn), key.1.clone());
        self.docs.insert(key.clone(), doc);
    }
}

impl SyncStore for MemoryStore {
    fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    fn current_lsn(&self) -> Lsn {
        self.lsn
    }

    fn changed_since(
        &self,
        collection: &CollectionName,
        after: Lsn,
        cursor: Lsn,
        limit: usize,
    ) -> Result<Vec<ChangedDoc>, StoreFailure> {
        let start = (collection.clone(), cursor.max(after).saturating_add(1));
        let end = (collection.clone(), Lsn::MAX);
        Ok(self
            .by_lsn
            .range(start..=end)
            .take(limit)
            .map(|((_, lsn), id)| {
                let key = (collection.clone(), id.clone());
                let (doc, shadow) = match self.docs.get(&key) {
                    Some(doc) => (doc, false),
                    None => (&self.shadows[&key], true),
                };
                let (fragment, whole) = doc.lsns.fragment_after(&doc.state, after);
                ChangedDoc {
                    id: id.clone(),
                    lsn: *lsn,
                    fragment,
                    whole,
                    state: doc.state.clone(),
                    shadow,
                }
            })
            .collect())
    }

    fn doc(
        &self,
        collection: &CollectionName,
        id: &DocId,
    ) -> Result<Option<DocState>, StoreFailure> {
        Ok(self.get(collection, id).cloned())
    }

    fn docs_in(
        &self,
        collection: &CollectionName,
        after: Option<&DocId>,
        limit: usize,
    ) -> Result<Vec<(DocId, DocState)>, StoreFailure> {
        use std::ops::Bound;
        let start = match after {
            Some(id) => Bound::Excluded((collection.clone(), id.clone())),
            None => Bound::Unbounded,
        };
        Ok(self
            .docs
            .range((start, Bound::Unbounded))
            .skip_while(|((c, _), _)| c < collection)
            .take_while(|((c, _), _)| c == collection)
            .take(limit)
            .map(|((_, id), d)| (id.clone(), d.state.clone()))
            .collect())
    }

    fn apply(
        &mut self,
        collection: &CollectionName,
        id: &DocId,
        fragment: &DocState,
    ) -> Result<bool, StoreFailure> {
        Ok(self.merge(collection, id, fragment))
    }

    fn apply_shadow(
        &mut self,
        collection: &CollectionName,
        id: &DocId,
        fragment: &DocState,
    ) -> Result<bool, StoreFailure> {
        Ok(self.merge_shadow(collection, id, fragment))
    }

    fn bookmark(&self, peer: &Incarnation, query: &QueryId) -> Result<Lsn, StoreFailure> {
        Ok(self.bookmarks.get(&(*peer, *query)).copied().unwrap_or(0))
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
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::clock::Hlc;
    use crate::crdt::{Dot, Mutation, Path, Stamp, WriteContext};
    use crate::ids::ActorId;
    use serde_json::json;

    /// A write by actor 1 at `ms`, its write number `seq`.
    pub(crate) fn ctx(ms: u64, seq: u64) -> WriteContext {
        let actor = ActorId::from_u64(1);
        WriteContext {
            stamp: Stamp {
                hlc: Hlc::new(ms, 0),
                actor,
            },
            dot: Dot { actor, seq },
        }
    }

    #[test]
    fn changes_are_numbered_and_fragments_hold_only_what_changed() {
        let cars = CollectionName::new("cars").unwrap();
        let id = DocId::from_string("a").unwrap();
        let mut store = MemoryStore::new(Incarnation::from_u64(1));
        let insert =
            DocState::insert_delta(ctx(10, 1), &json!({"color": "blue", "km": 1})).unwrap();
        assert!(store.merge(&cars, &id, &insert));
        assert!(
            !store.merge(&cars, &id, &insert),
            "a duplicate takes no LSN"
        );
        assert_eq!(store.current_lsn(), 1);
        let state = store.get(&cars, &id).unwrap().clone();
        let update = state
            .update_delta(
                ctx(20, 2),
                &[Mutation::Set(Path::parse_dotted("color"), json!("red"))],
            )
            .unwrap();
        assert!(store.merge(&cars, &id, &update));
        let changed = store.changed_since(&cars, 1, 1, 10).unwrap();
        assert_eq!(changed.len(), 1);
        assert!(!changed[0].whole);
        assert_eq!(changed[0].fragment, update);
        let all = store.changed_since(&cars, 0, 0, 10).unwrap();
        assert!(all[0].whole);
        assert_eq!(all[0].fragment, all[0].state);
    }

    #[test]
    fn counter_parts_travel_alone() {
        let cars = CollectionName::new("cars").unwrap();
        let id = DocId::from_string("a").unwrap();
        let mut store = MemoryStore::new(Incarnation::from_u64(1));
        let insert = DocState::insert_delta(ctx(10, 1), &json!({"n": 1})).unwrap();
        store.merge(&cars, &id, &insert);
        let inc = |store: &MemoryStore, seq| {
            store
                .get(&cars, &id)
                .unwrap()
                .update_delta(
                    ctx(10 + seq, seq),
                    &[Mutation::Increment(Path::parse_dotted("n"), 1.0)],
                )
                .unwrap()
        };
        let first = inc(&store, 2);
        store.merge(&cars, &id, &first);
        let lsn = store.current_lsn();
        let second = inc(&store, 3);
        store.merge(&cars, &id, &second);
        let changed = store.changed_since(&cars, lsn, lsn, 10).unwrap();
        assert_eq!(changed[0].fragment, second);
        let mut replica = store.changed_since(&cars, 0, 0, 10).unwrap()[0]
            .state
            .clone();
        replica.merge(&changed[0].fragment);
        assert_eq!(replica.to_json(&id), Some(json!({"_id": "a", "n": 3})));
    }

    #[test]
    fn shadows_are_out_of_sight_relayed_and_absorbed_when_the_document_is_acquired() {
        let cars = CollectionName::new("cars").unwrap();
        let id = DocId::from_string("truck-17").unwrap();
        let mut store = MemoryStore::new(Incarnation::from_u64(1));
        let theirs = DocState::insert_delta(ctx(20, 1), &json!({"color": "red"})).unwrap();
        assert!(store.apply_shadow(&cars, &id, &theirs).unwrap());
        assert!(
            !store.apply_shadow(&cars, &id, &theirs).unwrap(),
            "no change"
        );
        assert_eq!(store.doc(&cars, &id).unwrap(), None, "out of sight");
        assert!(store.docs_in(&cars, None, 10).unwrap().is_empty());
        let relayed = store.changed_since(&cars, 0, 0, 10).unwrap();
        assert_eq!(relayed.len(), 1);
        assert!(relayed[0].shadow);
        assert_eq!(relayed[0].state, theirs);

        // Another version of the same id arrives as a document: it absorbs the shadow.
        let ours = DocState::insert_delta(
            WriteContext {
                stamp: Stamp {
                    hlc: Hlc::new(10, 0),
                    actor: ActorId::from_u64(2),
                },
                dot: Dot {
                    actor: ActorId::from_u64(2),
                    seq: 1,
                },
            },
            &json!({"color": "blue", "km": 3}),
        )
        .unwrap();
        assert!(store.apply(&cars, &id, &ours).unwrap());
        assert_eq!(store.shadow(&cars, &id), None);
        let held = store.doc(&cars, &id).unwrap().unwrap();
        assert_eq!(
            held.to_json(&id),
            Some(json!({"_id": "truck-17", "color": "red"})),
            "the shadowed version is the newer insert: it wins, as in any merge of the two"
        );
        let changed = store.changed_since(&cars, 0, 0, 10).unwrap();
        assert_eq!(changed.len(), 1, "one entry in the LSN index");
        assert!(!changed[0].shadow && changed[0].whole);

        // A fragment for a held document given as a shadow goes into the document.
        let more = held
            .update_delta(
                ctx(30, 2),
                &[Mutation::Set(Path::parse_dotted("km"), json!(4))],
            )
            .unwrap();
        assert!(store.apply_shadow(&cars, &id, &more).unwrap());
        assert_eq!(store.shadow(&cars, &id), None);
        assert_eq!(
            store
                .doc(&cars, &id)
                .unwrap()
                .unwrap()
                .to_json(&id)
                .unwrap()["km"],
            json!(4)
        );
    }
}
