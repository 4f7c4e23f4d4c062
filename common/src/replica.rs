//! An in-memory replica: the reference model of what a node's store does with writes
//! and deltas. Tests, the simulator and the demo use it; the node's RocksDB store must
//! behave the same.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::clock::{Clock, Hlc};
use crate::crdt::{Crdt, DocState, JsonError, Mutation, VersionVector, WriteContext};
use crate::delta::{Delta, DocChange};
use crate::ids::{ActorId, CollectionName, DocId};

/// Documents by collection and id, with the replica's version vector and clock.
#[derive(Debug, Clone)]
pub struct Replica {
    actor: ActorId,
    clock: Clock,
    seen: VersionVector,
    docs: BTreeMap<(CollectionName, DocId), DocState>,
}

impl Replica {
    /// An empty replica writing as `actor`.
    pub fn new(actor: ActorId) -> Self {
        Self {
            actor,
            clock: Clock::default(),
            seen: VersionVector::new(),
            docs: BTreeMap::new(),
        }
    }

    /// This replica's actor.
    pub fn actor(&self) -> ActorId {
        self.actor
    }

    /// Every write this replica has (or has superseded).
    pub fn version(&self) -> &VersionVector {
        &self.seen
    }

    /// The stored state of a document, tombstones included.
    pub fn state(&self, collection: &CollectionName, id: &DocId) -> Option<&DocState> {
        self.docs.get(&(collection.clone(), id.clone()))
    }

    /// A document as JSON, if it exists.
    pub fn get(&self, collection: &CollectionName, id: &DocId) -> Option<Value> {
        self.state(collection, id)?.to_json(id)
    }

    /// Every stored document state, tombstones included, in key order.
    pub fn states(&self) -> impl Iterator<Item = (&(CollectionName, DocId), &DocState)> {
        self.docs.iter()
    }

    /// Inserts (or re-inserts) a document at wall time `wall_ms`.
    pub fn insert(
        &mut self,
        collection: &CollectionName,
        id: &DocId,
        body: &Value,
        wall_ms: u64,
    ) -> Result<Delta, JsonError> {
        self.write(collection, id, wall_ms, |_, ctx| {
            DocState::insert_delta(ctx, body)
        })
    }

    /// Applies field mutations to a document.
    pub fn update(
        &mut self,
        collection: &CollectionName,
        id: &DocId,
        mutations: &[Mutation],
        wall_ms: u64,
    ) -> Result<Delta, JsonError> {
        self.write(collection, id, wall_ms, |current, ctx| {
            current.update_delta(ctx, mutations)
        })
    }

    /// Deletes a document, leaving a tombstone.
    pub fn delete(&mut self, collection: &CollectionName, id: &DocId, wall_ms: u64) -> Delta {
        self.write(collection, id, wall_ms, |_, ctx| {
            Ok(DocState::delete_delta(ctx))
        })
        .expect("a delete cannot fail")
    }

    fn write(
        &mut self,
        collection: &CollectionName,
        id: &DocId,
        wall_ms: u64,
        make: impl FnOnce(&DocState, WriteContext) -> Result<DocState, JsonError>,
    ) -> Result<Delta, JsonError> {
        let key = (collection.clone(), id.clone());
        let empty = DocState::new();
        let current = self.docs.get(&key).unwrap_or(&empty);
        let seq = self.seen.get(self.actor) + 1;
        let dot = crate::crdt::Dot {
            actor: self.actor,
            seq,
        };
        let now = self.clock.tick(wall_ms);
        let fragment = make(current, WriteContext::for_document(current, now, dot))?;
        let since: VersionVector = [(self.actor, seq - 1)].into_iter().collect();
        let until: VersionVector = [(self.actor, seq)].into_iter().collect();
        let delta = Delta {
            since,
            until,
            changes: vec![DocChange {
                collection: collection.clone(),
                id: id.clone(),
                state: fragment,
            }],
        };
        self.apply(&delta, wall_ms);
        Ok(delta)
    }

    /// What a replica that has seen `seen` lacks, as one delta.
    pub fn delta_since(&self, seen: &VersionVector) -> Delta {
        let changes = self
            .docs
            .iter()
            .filter_map(|((collection, id), state)| {
                let fragment = state.delta_since(seen);
                (!fragment.is_empty()).then(|| DocChange {
                    collection: collection.clone(),
                    id: id.clone(),
                    state: fragment,
                })
            })
            .collect();
        Delta {
            since: seen.clone(),
            until: self.seen.clone(),
            changes,
        }
    }

    /// Merges a delta from anywhere. Returns whether the version vector advanced.
    pub fn apply(&mut self, delta: &Delta, wall_ms: u64) -> bool {
        for change in &delta.changes {
            let key = (change.collection.clone(), change.id.clone());
            self.docs.entry(key).or_default().merge(&change.state);
            let newest = change.state.max_hlc();
            if newest > Hlc::ZERO {
                self.clock.observe(newest, wall_ms);
            }
        }
        if self.seen.dominates(&delta.since) {
            self.seen.merge(&delta.until);
            true
        } else {
            false
        }
    }

    /// Merges another replica's whole state (what a full sync converges to).
    pub fn merge_replica(&mut self, other: &Replica, wall_ms: u64) {
        let everything = other.delta_since(&VersionVector::new());
        self.apply(&everything, wall_ms);
    }
}
