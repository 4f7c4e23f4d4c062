//! Version vectors: per actor, the highest write sequence number seen.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Crdt, Dot};
use crate::ids::ActorId;

/// For each actor, the highest sequence number of its writes that this replica has
/// (or has something that supersedes). Absent actors count as 0.
///
/// A replica's vector only advances over a contiguous prefix of each actor's writes:
/// see [`crate::delta::Delta`] for how a delta's `since` / `until` keep that true.
#[derive(Clone, Default, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct VersionVector(BTreeMap<ActorId, u64>);

impl VersionVector {
    /// The empty vector: nothing seen.
    pub fn new() -> Self {
        Self::default()
    }

    /// The highest sequence number seen from `actor`.
    pub fn get(&self, actor: ActorId) -> u64 {
        self.0.get(&actor).copied().unwrap_or(0)
    }

    /// Whether the write `dot` is covered.
    pub fn contains(&self, dot: Dot) -> bool {
        dot.seq <= self.get(dot.actor)
    }

    /// Raises `actor`'s entry to `seq` (never lowers it).
    pub fn observe(&mut self, dot: Dot) {
        let seen = self.0.entry(dot.actor).or_insert(0);
        *seen = (*seen).max(dot.seq);
    }

    /// The next dot for a local write by `actor`, recorded as seen.
    pub fn next_dot(&mut self, actor: ActorId) -> Dot {
        let dot = Dot {
            actor,
            seq: self.get(actor) + 1,
        };
        self.observe(dot);
        dot
    }

    /// Whether every write covered by `other` is covered by `self`.
    pub fn dominates(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|(actor, seq)| self.get(*actor) >= *seq)
    }

    /// The actors and their sequence numbers, in actor order.
    pub fn iter(&self) -> impl Iterator<Item = (ActorId, u64)> + '_ {
        self.0.iter().map(|(a, s)| (*a, *s))
    }

    /// Number of actors with a non-zero entry.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing has been seen.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(ActorId, u64)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (ActorId, u64)>>(iter: I) -> Self {
        let mut vv = Self::new();
        for (actor, seq) in iter {
            if seq > 0 {
                vv.observe(Dot { actor, seq });
            }
        }
        vv
    }
}

impl Crdt for VersionVector {
    fn merge(&mut self, other: &Self) {
        for (actor, seq) in other.iter() {
            self.observe(Dot { actor, seq });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(n: u64) -> ActorId {
        ActorId::from_u64(n)
    }

    #[test]
    fn merge_takes_the_pointwise_maximum() {
        let mut x: VersionVector = [(a(1), 3), (a(2), 1)].into_iter().collect();
        let y: VersionVector = [(a(2), 5), (a(3), 2)].into_iter().collect();
        x.merge(&y);
        assert_eq!(x, [(a(1), 3), (a(2), 5), (a(3), 2)].into_iter().collect());
        assert!(x.dominates(&y));
        assert!(!y.dominates(&x));
    }

    #[test]
    fn next_dot_counts_from_one() {
        let mut vv = VersionVector::new();
        assert_eq!(vv.next_dot(a(9)).seq, 1);
        assert_eq!(vv.next_dot(a(9)).seq, 2);
        assert!(vv.contains(Dot {
            actor: a(9),
            seq: 2
        }));
        assert!(!vv.contains(Dot {
            actor: a(9),
            seq: 3
        }));
    }
}
