//! [`DocLsns`]: which receipt sequence number ([`Lsn`]) each entry of a stored document
//! last changed at, so a store can answer "the entries of this document changed after
//! LSN x" ([`DocLsns::fragment_after`]). Every [`SyncStore`](super::SyncStore) keeps one
//! per document: the in-memory [`MemoryStore`](super::MemoryStore) beside the state, the
//! node's RocksDB store encoded in front of it ([`DocLsns::encode`]).
//!
//! Most documents are written once or changed as a whole, so the representation is
//! "everything changed at `lsn`, except": the older entries and the counter parts newer
//! than their entry are listed. A fresh document encodes in a few bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Lsn;
use crate::codec::push_varint;
use crate::crdt::{Counter, DocState, Entry, EntryKind, Path};
use crate::ids::ActorId;

/// Per-entry change numbers of one stored document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocLsns {
    /// The latest LSN of any entry (the document's position in the LSN index).
    lsn: Lsn,
    /// Entries that last changed before `lsn`, with the LSN they changed at.
    older: BTreeMap<Path, Lsn>,
    /// Counter parts that changed after their entry did.
    parts: BTreeMap<(Path, ActorId), Lsn>,
}

/// Why stored LSN metadata could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable change numbers: {0}")]
pub struct DocLsnsError(String);

/// The stored form: entries by their position in the document's entry order.
#[derive(Serialize, Deserialize)]
enum Stored {
    V1 {
        lsn: Lsn,
        older: Vec<(u32, Lsn)>,
        parts: Vec<(u32, ActorId, Lsn)>,
    },
}

impl DocLsns {
    /// A document whose every entry changed at `lsn` (a document new to the store).
    pub fn new(lsn: Lsn) -> Self {
        Self {
            lsn,
            ..Self::default()
        }
    }

    /// The document's latest LSN.
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }

    /// The LSN at which the entry at `path` last changed.
    pub fn entry_lsn(&self, path: &Path) -> Lsn {
        self.older.get(path).copied().unwrap_or(self.lsn)
    }

    /// Records that a merge turned `before` into `after` at `lsn` (greater than every
    /// LSN recorded so far): entries that differ take `lsn`; counter parts that moved
    /// under an unchanged entry (an increment) take it alone. Returns whether anything
    /// changed; when nothing did, the record is left as it was.
    pub fn record(&mut self, before: &DocState, after: &DocState, lsn: Lsn) -> bool {
        let mut older = BTreeMap::new();
        let mut parts = BTreeMap::new();
        let mut changed = false;
        for (path, entry) in after.entries() {
            let Some(old) = before.get(path.segments()) else {
                changed = true;
                continue;
            };
            if old == entry {
                older.insert(path.clone(), self.entry_lsn(path));
                self.keep_parts(path, &mut parts);
                continue;
            }
            match (&old.kind, &entry.kind) {
                (EntryKind::Counter(old_counter), EntryKind::Counter(new_counter))
                    if old.stamp == entry.stamp && old.seq == entry.seq =>
                {
                    older.insert(path.clone(), self.entry_lsn(path));
                    self.keep_parts(path, &mut parts);
                    for actor in moved_parts(old_counter, new_counter) {
                        parts.insert((path.clone(), actor), lsn);
                    }
                    changed = true;
                }
                _ => changed = true,
            }
        }
        // A merge can also only drop entries (superseded by an ancestor it did not change).
        changed |= older.len() != before.len();
        if changed {
            *self = Self { lsn, older, parts };
        }
        changed
    }

    fn keep_parts(&self, path: &Path, into: &mut BTreeMap<(Path, ActorId), Lsn>) {
        let from = (path.clone(), ActorId::from_u64(0));
        for ((p, actor), lsn) in self.parts.range(from..) {
            if p != path {
                break;
            }
            into.insert((p.clone(), *actor), *lsn);
        }
    }

    /// The entries (and counter parts) of `state` changed after `after`, and whether
    /// that is the whole document.
    pub fn fragment_after(&self, state: &DocState, after: Lsn) -> (DocState, bool) {
        if self.older.is_empty() && self.parts.is_empty() && self.lsn > after {
            return (state.clone(), true);
        }
        let mut whole = true;
        let mut entries = Vec::new();
        for (path, entry) in state.entries() {
            if self.entry_lsn(path) > after {
                entries.push((path.clone(), entry.clone()));
                continue;
            }
            whole = false;
            if let EntryKind::Counter(counter) = &entry.kind {
                let moved: BTreeMap<_, _> = counter
                    .parts
                    .iter()
                    .filter(|(actor, _)| {
                        self.parts
                            .get(&(path.clone(), **actor))
                            .is_some_and(|lsn| *lsn > after)
                    })
                    .map(|(actor, part)| (*actor, *part))
                    .collect();
                if !moved.is_empty() {
                    let kind = EntryKind::Counter(Counter {
                        base: counter.base,
                        parts: moved,
                    });
                    entries.push((path.clone(), Entry { kind, ..*entry }));
                }
            }
        }
        (DocState::from_entries(entries), whole)
    }

    /// Appends the stored form to `out`, naming entries by their position in `state`
    /// (the state these numbers describe).
    pub fn encode(&self, state: &DocState, out: &mut Vec<u8>) {
        if self.older.is_empty() && self.parts.is_empty() {
            // What postcard writes for `Stored::V1 { lsn, older: [], parts: [] }`, by
            // hand: most documents are stored in this form, and a commit of a thousand
            // inserts writes it a thousand times.
            out.push(0);
            push_varint(out, self.lsn);
            out.extend_from_slice(&[0, 0]);
            return;
        }
        let mut older = Vec::with_capacity(self.older.len());
        let mut parts = Vec::with_capacity(self.parts.len());
        for (index, (path, _)) in (0u32..).zip(state.entries()) {
            if let Some(lsn) = self.older.get(path) {
                older.push((index, *lsn));
            }
            for ((_, actor), lsn) in self
                .parts
                .range((path.clone(), ActorId::from_u64(0))..)
                .take_while(|((p, _), _)| p == path)
            {
                parts.push((index, *actor, *lsn));
            }
        }
        let stored = Stored::V1 {
            lsn: self.lsn,
            older,
            parts,
        };
        *out = postcard::to_extend(&stored, std::mem::take(out))
            .expect("writing to a Vec cannot fail");
    }

    /// Reads a stored form from the start of `bytes`, for `state`; returns it and the
    /// number of bytes it took.
    pub fn decode(bytes: &[u8], state: &DocState) -> Result<(Self, usize), DocLsnsError> {
        let (stored, rest) =
            postcard::take_from_bytes::<Stored>(bytes).map_err(|e| DocLsnsError(e.to_string()))?;
        let used = bytes.len() - rest.len();
        let Stored::V1 { lsn, older, parts } = stored;
        if older.is_empty() && parts.is_empty() {
            return Ok((Self::new(lsn), used));
        }
        let paths: Vec<&Path> = state.entries().map(|(p, _)| p).collect();
        let path = |index: u32| {
            paths
                .get(index as usize)
                .map(|p| (*p).clone())
                .ok_or_else(|| DocLsnsError(format!("entry {index} is not in the document")))
        };
        let mut lsns = Self::new(lsn);
        for (index, entry_lsn) in older {
            lsns.older.insert(path(index)?, entry_lsn);
        }
        for (index, actor, part_lsn) in parts {
            lsns.parts.insert((path(index)?, actor), part_lsn);
        }
        Ok((lsns, used))
    }
}

fn moved_parts(old: &Counter, new: &Counter) -> Vec<ActorId> {
    new.parts
        .iter()
        .filter(|(actor, part)| old.parts.get(actor) != Some(part))
        .map(|(actor, _)| *actor)
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::crdt::{Crdt, Mutation};

    use crate::sync::store::tests::ctx;

    fn merged(state: &DocState, delta: &DocState) -> DocState {
        let mut after = state.clone();
        after.merge(delta);
        after
    }

    #[test]
    fn an_update_numbers_only_what_it_changed_and_survives_encoding() {
        let doc = DocState::insert_delta(ctx(10, 1), &json!({"a": 1, "b": 2, "n": 0})).unwrap();
        let mut lsns = DocLsns::new(1);
        let set = doc
            .update_delta(
                ctx(20, 2),
                &[Mutation::Set(Path::parse_dotted("b"), json!(3))],
            )
            .unwrap();
        let after = merged(&doc, &set);
        assert!(lsns.record(&doc, &after, 2));
        assert!(!lsns.record(&after, &after, 3), "no change takes no number");
        assert_eq!(lsns.lsn(), 2);
        assert_eq!(lsns.entry_lsn(&Path::parse_dotted("a")), 1);
        assert_eq!(lsns.entry_lsn(&Path::parse_dotted("b")), 2);
        assert_eq!(lsns.fragment_after(&after, 1), (set.clone(), false));
        assert_eq!(lsns.fragment_after(&after, 0), (after.clone(), true));
        assert_eq!(lsns.fragment_after(&after, 2).0, DocState::new());

        let mut bytes = Vec::new();
        lsns.encode(&after, &mut bytes);
        bytes.extend_from_slice(b"rest");
        let (decoded, used) = DocLsns::decode(&bytes, &after).unwrap();
        assert_eq!(decoded, lsns);
        assert_eq!(&bytes[used..], b"rest");
    }

    #[test]
    fn a_new_documents_numbers_are_written_as_postcard_writes_them() {
        let doc = DocState::insert_delta(ctx(10, 1), &json!({"a": 1})).unwrap();
        // Either side of every varint length: 2^(7k) - 1 and 2^(7k).
        let lengths = (1..10).flat_map(|k| [(1u64 << (7 * k)) - 1, 1 << (7 * k)]);
        for lsn in [0, u64::MAX].into_iter().chain(lengths) {
            let mut bytes = vec![7];
            DocLsns::new(lsn).encode(&doc, &mut bytes);
            let stored = Stored::V1 {
                lsn,
                older: vec![],
                parts: vec![],
            };
            let mut expected = vec![7];
            expected.extend(postcard::to_allocvec(&stored).unwrap());
            assert_eq!(bytes, expected, "lsn {lsn}");
            assert_eq!(
                DocLsns::decode(&bytes[1..], &doc).unwrap().0,
                DocLsns::new(lsn)
            );
        }
    }

    #[test]
    fn an_increment_travels_as_its_counter_part() {
        let doc = DocState::insert_delta(ctx(10, 1), &json!({"n": 1})).unwrap();
        let n = Path::parse_dotted("n");
        let first = doc
            .update_delta(ctx(11, 2), &[Mutation::Increment(n.clone(), 1.0)])
            .unwrap();
        let one = merged(&doc, &first);
        let mut lsns = DocLsns::new(1);
        lsns.record(&doc, &one, 2);
        let second = one
            .update_delta(ctx(12, 3), &[Mutation::Increment(n.clone(), 1.0)])
            .unwrap();
        let two = merged(&one, &second);
        assert!(lsns.record(&one, &two, 3));
        let (fragment, whole) = lsns.fragment_after(&two, 2);
        assert!(!whole);
        assert_eq!(fragment, second);
        let mut bytes = Vec::new();
        lsns.encode(&two, &mut bytes);
        assert_eq!(DocLsns::decode(&bytes, &two).unwrap().0, lsns);
    }

    #[test]
    fn garbage_is_an_error() {
        let doc = DocState::insert_delta(ctx(10, 1), &json!({"a": 1})).unwrap();
        assert!(DocLsns::decode(&[0xff, 0xff], &doc).is_err());
        // An entry position beyond the document.
        let stored = Stored::V1 {
            lsn: 5,
            older: vec![(9, 1)],
            parts: vec![],
        };
        let bytes = postcard::to_allocvec(&stored).unwrap();
        assert!(DocLsns::decode(&bytes, &doc).is_err());
    }
}
