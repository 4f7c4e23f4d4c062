//! The CRDT document model.
//!
//! A document is a [`DocState`]: a map from field [`Path`] to the latest [`Entry`]
//! written there. Entries are last-writer-wins registers ordered by their [`Stamp`]
//! (hybrid logical clock, then actor), objects are maps merged key by key (each key is
//! its own path, so concurrent edits of different keys both survive), counters merge
//! per-actor contributions, and a whole-document delete is a single tombstone entry at
//! the root. Every entry carries the [`Dot`] of the write that made it, which is what
//! [`VersionVector`]s count and what [`DocState::delta_since`] filters on.
//!
//! Local writes and sync use the same thing: a write produces a small `DocState`
//! (a *delta*) that is merged into the stored state exactly like one received from a
//! peer.

mod doc;
mod json;
mod value;
mod vv;

pub use doc::{Counter, CounterPart, DocState, Entry, EntryKind, Path};
pub use json::{JsonError, MAX_PATH_DEPTH, Mutation, WriteContext};
pub use value::Leaf;
pub use vv::VersionVector;

use serde::{Deserialize, Serialize};

use crate::clock::Hlc;
use crate::ids::ActorId;

/// A state-based CRDT (a join-semilattice).
///
/// For all states `a`, `b`, `c` of the type, `merge` must satisfy:
/// - **commutativity**: `a ⊔ b == b ⊔ a`;
/// - **associativity**: `(a ⊔ b) ⊔ c == a ⊔ (b ⊔ c)`;
/// - **idempotence**: `a ⊔ a == a`.
///
/// Together these make replicas converge whatever the order, duplication or batching of
/// the states (or deltas) they exchange. `tests/crdt_laws.rs` checks the laws with
/// property tests for every implementation.
pub trait Crdt {
    /// Merges `other` into `self` (`self := self ⊔ other`).
    fn merge(&mut self, other: &Self);
}

/// The total order of writes: hybrid logical time, then actor id as the tie-break.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Stamp {
    /// When, by the writer's hybrid logical clock.
    pub hlc: Hlc,
    /// Who.
    pub actor: ActorId,
}

/// One write event: the writer and its per-actor sequence number (1, 2, 3, ...).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Dot {
    /// The writer.
    pub actor: ActorId,
    /// The writer's sequence number for this write, starting at 1.
    pub seq: u64,
}
