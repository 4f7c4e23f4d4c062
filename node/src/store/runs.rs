//! How a commit edits the change index and the LSN index, whose entries live in runs
//! (`keys`): a row of up to [`RUN_ENTRIES`] entries written by one commit.
//!
//! A row per entry made every stored document cost three rows (itself and one entry in
//! each index), and a RocksDB row costs about the same whatever its size: a batch of a
//! thousand inserts wrote three thousand rows. In runs it writes about a thousand and
//! thirty. The price is paid when an entry goes (a document's write is superseded, its
//! LSN moves on, it is evicted): the run holding it is read, and written back without
//! it, or deleted once empty. [`RUN_ENTRIES`] bounds that rewrite to a few kilobytes.
//!
//! - A new entry never joins an existing run: each commit writes runs of its own, so
//!   LSN runs never overlap (LSNs only grow) and the run holding an LSN is the last one
//!   starting at or before it.
//! - Change runs are keyed by their last write, so the runs with writes after `seq` are
//!   the ones from `(actor, seq)` on. A run holds consecutive writes of its actor
//!   (documents that arrive from peers in another order make shorter runs), so runs of
//!   an actor never overlap but at a write shared by several documents: the run holding
//!   an entry is the first from `(actor, seq)` on, or the next, never a search.
//! - A run keeps its key when entries leave it: its key still bounds what it holds.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use trellis_common::crdt::Dot;
use trellis_common::ids::{ActorId, CollectionName, DocId};
use trellis_common::sync::Lsn;

use super::keys::{self, ChangeEntry};
use super::{Result, StoreError};

pub(crate) use super::keys::RUN_ENTRIES;

/// Called with each change run's key and value in turn; `true` stops the walk.
pub(crate) type RunVisitor<'v> = dyn FnMut(&[u8], &[u8]) -> Result<bool> + 'v;

/// Reads the runs a commit edits: the store under its writer lock.
pub(crate) trait RunSource {
    /// The LSN run of `collection` that may hold `lsn`: the last one whose first LSN is
    /// at most `lsn`, as its first LSN and its value.
    fn lsn_run_at(&self, collection: &CollectionName, lsn: Lsn) -> Result<Option<(Lsn, Vec<u8>)>>;

    /// Hands `visit` the change runs of `actor` whose last write is at least `seq`, as
    /// key and value in key order, until it returns `true`.
    fn change_runs_from(&self, actor: ActorId, seq: u64, visit: &mut RunVisitor<'_>) -> Result<()>;
}

/// A row to write or delete in an index's column family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RowEdit {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// The rows one commit writes in the LSN index and in the change index.
#[derive(Debug, Default)]
pub(crate) struct IndexRows {
    pub(crate) lsns: Vec<RowEdit>,
    pub(crate) changes: Vec<RowEdit>,
}

/// The index entries one commit adds and removes.
#[derive(Debug, Default)]
pub(crate) struct IndexEdits<'a> {
    lsn_added: Vec<(&'a CollectionName, Lsn, &'a DocId)>,
    lsn_removed: Vec<(&'a CollectionName, Lsn, &'a DocId)>,
    change_added: Vec<(Dot, &'a CollectionName, &'a DocId)>,
    change_removed: Vec<(Dot, &'a CollectionName, &'a DocId)>,
}

impl<'a> IndexEdits<'a> {
    /// Edits with room for `documents` changed documents, each adding an LSN and (a
    /// local insert) one write.
    pub(crate) fn with_capacity(documents: usize) -> Self {
        Self {
            lsn_added: Vec::with_capacity(documents),
            change_added: Vec::with_capacity(documents),
            ..Self::default()
        }
    }

    /// Document `id` of `collection` now has LSN `lsn` (newer than any stored).
    pub(crate) fn add_lsn(&mut self, collection: &'a CollectionName, lsn: Lsn, id: &'a DocId) {
        self.lsn_added.push((collection, lsn, id));
    }

    /// Document `id` of `collection` no longer has LSN `lsn`.
    pub(crate) fn remove_lsn(&mut self, collection: &'a CollectionName, lsn: Lsn, id: &'a DocId) {
        self.lsn_removed.push((collection, lsn, id));
    }

    /// Write `dot` is now part of the stored state of document `id` of `collection`.
    pub(crate) fn add_change(&mut self, dot: Dot, collection: &'a CollectionName, id: &'a DocId) {
        self.change_added.push((dot, collection, id));
    }

    /// Write `dot` is no longer part of that state.
    pub(crate) fn remove_change(
        &mut self,
        dot: Dot,
        collection: &'a CollectionName,
        id: &'a DocId,
    ) {
        self.change_removed.push((dot, collection, id));
    }

    /// The rows to write, reading the runs entries leave from `source`. `commit` is the
    /// store's LSN after the commit: it tells this commit's change runs apart from every
    /// other's.
    pub(crate) fn into_rows(self, source: &dyn RunSource, commit: Lsn) -> Result<IndexRows> {
        let mut rows = IndexRows::default();
        remove_lsns(&self.lsn_removed, source, &mut rows.lsns)?;
        add_lsns(self.lsn_added, &mut rows.lsns);
        remove_changes(&self.change_removed, source, &mut rows.changes)?;
        add_changes(self.change_added, commit, &mut rows.changes);
        Ok(rows)
    }
}

fn corrupt(e: keys::KeyError) -> StoreError {
    StoreError::corrupt_meta("index run", e)
}

/// An entry the index should hold and does not: nothing to remove, and the rest of
/// the commit is sound, so it goes on (the store was written by a build with a bug).
fn missing(index: &str, collection: &CollectionName, id: &DocId) {
    tracing::warn!(%collection, %id, "{index} has no entry to remove for a document");
}

/// An LSN run read by a commit: the last LSN it held when read, and its entries now.
struct LsnRun {
    last: Lsn,
    entries: Vec<(Lsn, DocId)>,
}

fn remove_lsns(
    removed: &[(&CollectionName, Lsn, &DocId)],
    source: &dyn RunSource,
    out: &mut Vec<RowEdit>,
) -> Result<()> {
    // Runs read so far by (collection, first LSN): runs do not overlap, so one of them
    // holds every LSN in its span.
    let mut touched: BTreeMap<(&CollectionName, Lsn), LsnRun> = BTreeMap::new();
    for &(collection, lsn, id) in removed {
        let read = touched
            .range((collection, 0)..=(collection, lsn))
            .next_back()
            .filter(|(_, run)| lsn <= run.last)
            .map(|(key, _)| *key);
        let key = match read {
            Some(key) => key,
            None => {
                let Some((first, value)) = source.lsn_run_at(collection, lsn)? else {
                    missing("the LSN index", collection, id);
                    continue;
                };
                let entries = keys::decode_lsn_run(first, &value).map_err(corrupt)?;
                let last = entries.last().map_or(first, |(l, _)| *l);
                touched
                    .entry((collection, first))
                    .or_insert(LsnRun { last, entries });
                (collection, first)
            }
        };
        let entries = &mut touched
            .get_mut(&key)
            .expect("the run was just found")
            .entries;
        match entries.iter().position(|(l, i)| *l == lsn && i == id) {
            Some(at) => {
                entries.remove(at);
            }
            None => missing("the LSN index", collection, id),
        }
    }
    for ((collection, first), LsnRun { entries, .. }) in touched {
        let key = keys::lsn_key(collection, first);
        out.push(if entries.is_empty() {
            RowEdit::Delete(key)
        } else {
            RowEdit::Put(
                key,
                keys::encode_lsn_run(first, entries.iter().map(|(l, i)| (*l, i))),
            )
        });
    }
    Ok(())
}

fn add_lsns(mut added: Vec<(&CollectionName, Lsn, &DocId)>, out: &mut Vec<RowEdit>) {
    // Stable: entries sharing an LSN keep their order.
    added.sort_by_key(|(collection, lsn, _)| (*collection, *lsn));
    let mut start = 0;
    while start < added.len() {
        let (collection, first, _) = added[start];
        let mut end = start + 1;
        while end < added.len()
            && added[end].0 == collection
            && (end - start < RUN_ENTRIES || added[end].1 == added[end - 1].1)
        {
            end += 1;
        }
        let entries = added[start..end].iter().map(|(_, lsn, id)| (*lsn, *id));
        out.push(RowEdit::Put(
            keys::lsn_key(collection, first),
            keys::encode_lsn_run(first, entries),
        ));
        start = end;
    }
}

fn remove_changes(
    removed: &[(Dot, &CollectionName, &DocId)],
    source: &dyn RunSource,
    out: &mut Vec<RowEdit>,
) -> Result<()> {
    // Every run read so far, and which run holds each of their entries.
    let mut runs: BTreeMap<Vec<u8>, Vec<ChangeEntry>> = BTreeMap::new();
    let mut located: HashMap<(ActorId, ChangeEntry), Vec<u8>> = HashMap::new();
    let mut dirty = BTreeSet::new();
    for &(dot, collection, id) in removed {
        let wanted = (
            dot.actor,
            ChangeEntry {
                seq: dot.seq,
                collection: collection.clone(),
                id: id.clone(),
            },
        );
        if !located.contains_key(&wanted) {
            source.change_runs_from(dot.actor, dot.seq, &mut |key, value| {
                let entries = match runs.entry(key.to_vec()) {
                    Entry::Occupied(run) => run.into_mut(),
                    Entry::Vacant(slot) => {
                        let entries = keys::decode_change_run(value).map_err(corrupt)?;
                        for entry in &entries {
                            located.insert((dot.actor, entry.clone()), key.to_vec());
                        }
                        slot.insert(entries)
                    }
                };
                // Runs do not overlap (`add_changes`): one starting after the write
                // ends the search.
                Ok(located.contains_key(&wanted)
                    || entries.first().is_some_and(|e| e.seq > dot.seq))
            })?;
        }
        let Some(key) = located.remove(&wanted) else {
            missing("the change index", collection, id);
            continue;
        };
        let entries = runs.get_mut(&key).expect("a located entry's run was read");
        entries.retain(|e| *e != wanted.1);
        dirty.insert(key);
    }
    for key in dirty {
        let entries = &runs[&key];
        out.push(if entries.is_empty() {
            RowEdit::Delete(key)
        } else {
            let value =
                keys::encode_change_run(entries.iter().map(|e| (e.seq, &e.collection, &e.id)));
            RowEdit::Put(key, value)
        });
    }
    Ok(())
}

fn add_changes(
    mut added: Vec<(Dot, &CollectionName, &DocId)>,
    commit: Lsn,
    out: &mut Vec<RowEdit>,
) {
    added.sort_unstable();
    added.dedup();
    let mut part = 0;
    // A run holds consecutive writes of one actor (a write in several documents repeats
    // its number), so two runs of an actor share at most such a write: the run holding
    // a write is the first one from it on, or the next.
    let consecutive = |a: &(Dot, _, _), b: &(Dot, _, _)| {
        a.0.actor == b.0.actor && b.0.seq <= a.0.seq.saturating_add(1)
    };
    for chunk in added.chunk_by(consecutive) {
        for run in chunk.chunks(RUN_ENTRIES) {
            let (last, _, _) = run[run.len() - 1];
            let value = keys::encode_change_run(run.iter().map(|(dot, c, id)| (dot.seq, *c, *id)));
            out.push(RowEdit::Put(
                keys::change_run_key(last.actor, last.seq, commit, part),
                value,
            ));
            part += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use serde_json::json;

    use super::*;

    /// Index rows in memory, read and edited as RocksDB would.
    #[derive(Default)]
    struct Rows {
        lsns: RefCell<BTreeMap<Vec<u8>, Vec<u8>>>,
        changes: RefCell<BTreeMap<Vec<u8>, Vec<u8>>>,
    }

    impl Rows {
        fn commit(&self, edits: IndexEdits<'_>, commit: Lsn) {
            let rows = edits.into_rows(self, commit).unwrap();
            for (table, edits) in [(&self.lsns, rows.lsns), (&self.changes, rows.changes)] {
                for edit in edits {
                    match edit {
                        RowEdit::Put(k, v) => table.borrow_mut().insert(k, v),
                        RowEdit::Delete(k) => table.borrow_mut().remove(&k),
                    };
                }
            }
        }

        /// Every LSN entry of `collection`, in order.
        fn lsn_entries(&self, collection: &CollectionName) -> Vec<(Lsn, DocId)> {
            let prefix = keys::collection_prefix(collection);
            let lsns = self.lsns.borrow();
            let mut out = Vec::new();
            for (key, value) in lsns
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
            {
                let first = keys::parse_lsn_key(collection, key).unwrap();
                out.extend(keys::decode_lsn_run(first, value).unwrap());
            }
            out
        }

        /// Every change entry, sorted.
        fn change_entries(&self) -> Vec<(ActorId, ChangeEntry)> {
            let mut out: Vec<_> = self
                .changes
                .borrow()
                .iter()
                .flat_map(|(key, value)| {
                    let dot = keys::parse_change_run_key(key).unwrap();
                    let entries = keys::decode_change_run(value).unwrap();
                    assert!(
                        entries.iter().all(|e| e.seq <= dot.seq),
                        "a run's key bounds it"
                    );
                    entries.into_iter().map(move |e| (dot.actor, e))
                })
                .collect();
            out.sort();
            out
        }
    }

    impl RunSource for Rows {
        fn lsn_run_at(
            &self,
            collection: &CollectionName,
            lsn: Lsn,
        ) -> Result<Option<(Lsn, Vec<u8>)>> {
            let prefix = keys::collection_prefix(collection);
            let lsns = self.lsns.borrow();
            Ok(lsns
                .range(..=keys::lsn_key(collection, lsn))
                .next_back()
                .filter(|(k, _)| k.starts_with(&prefix))
                .map(|(k, v)| (keys::parse_lsn_key(collection, k).unwrap(), v.clone())))
        }

        fn change_runs_from(
            &self,
            actor: ActorId,
            seq: u64,
            visit: &mut RunVisitor<'_>,
        ) -> Result<()> {
            let changes = self.changes.borrow();
            for (key, value) in changes.range(keys::change_seek(actor, seq)..) {
                if keys::parse_change_run_key(key).unwrap().actor != actor || visit(key, value)? {
                    break;
                }
            }
            Ok(())
        }
    }

    fn id(n: u64) -> DocId {
        DocId::from_json(&json!(format!("d{n:04}"))).unwrap()
    }

    fn dot(actor: u64, seq: u64) -> Dot {
        Dot {
            actor: ActorId::from_u64(actor),
            seq,
        }
    }

    #[test]
    fn a_big_commit_writes_runs_and_removals_rewrite_only_the_run_holding_the_entry() {
        let cars = CollectionName::new("cars").unwrap();
        let ids: Vec<DocId> = (0..200).map(id).collect();
        let rows = Rows::default();
        let mut edits = IndexEdits::default();
        for (i, doc) in ids.iter().enumerate() {
            edits.add_lsn(&cars, i as Lsn + 1, doc);
            edits.add_change(dot(1, i as u64 + 1), &cars, doc);
        }
        rows.commit(edits, 200);
        // 200 entries in runs of 64: 4 rows per index, not 200.
        assert_eq!(rows.lsns.borrow().len(), 4);
        assert_eq!(rows.changes.borrow().len(), 4);

        // Document 70 changes: its old entries leave the second runs, new ones come.
        let doc_70_changes = || {
            let mut edits = IndexEdits::default();
            edits.remove_lsn(&cars, 71, &ids[70]);
            edits.add_lsn(&cars, 201, &ids[70]);
            edits.remove_change(dot(1, 71), &cars, &ids[70]);
            edits.add_change(dot(2, 1), &cars, &ids[70]);
            edits
        };
        let result = doc_70_changes().into_rows(&rows, 201).unwrap();
        let rewritten = |edits: &[RowEdit]| {
            edits
                .iter()
                .filter(|e| matches!(e, RowEdit::Put(..)))
                .count()
        };
        assert_eq!(rewritten(&result.lsns), 2, "one run rewritten, one new");
        assert_eq!(rewritten(&result.changes), 2, "one run rewritten, one new");
        rows.commit(doc_70_changes(), 201);

        let lsns = rows.lsn_entries(&cars);
        assert_eq!(lsns.len(), 200);
        assert!(!lsns.contains(&(71, ids[70].clone())));
        assert_eq!(lsns.last(), Some(&(201, ids[70].clone())));
        let changes = rows.change_entries();
        assert_eq!(changes.len(), 200);
        assert!(
            changes
                .iter()
                .all(|(a, e)| !(*a == ActorId::from_u64(1) && e.seq == 71))
        );
        assert!(changes.contains(&(
            ActorId::from_u64(2),
            ChangeEntry {
                seq: 1,
                collection: cars.clone(),
                id: ids[70].clone()
            }
        )));
    }

    #[test]
    fn emptied_runs_are_deleted_and_interleaved_commits_find_their_runs() {
        let cars = CollectionName::new("cars").unwrap();
        let ids: Vec<DocId> = (0..4).map(id).collect();
        let rows = Rows::default();
        // Two commits whose writes of actor 1 interleave (documents came from peers in
        // another order than they were written).
        let mut edits = IndexEdits::default();
        edits.add_change(dot(1, 1), &cars, &ids[0]);
        edits.add_change(dot(1, 9), &cars, &ids[1]);
        edits.add_lsn(&cars, 1, &ids[0]);
        edits.add_lsn(&cars, 2, &ids[1]);
        rows.commit(edits, 2);
        let mut edits = IndexEdits::default();
        edits.add_change(dot(1, 3), &cars, &ids[2]);
        edits.add_change(dot(1, 3), &cars, &ids[3]);
        edits.add_change(dot(1, 5), &cars, &ids[3]);
        rows.commit(edits, 3);
        // Write 3 sits in the second run, write 1 in the first: both are found. One
        // write may also be part of two documents: only the named one leaves.
        let mut edits = IndexEdits::default();
        edits.remove_change(dot(1, 1), &cars, &ids[0]);
        edits.remove_change(dot(1, 3), &cars, &ids[2]);
        edits.remove_lsn(&cars, 1, &ids[0]);
        edits.remove_lsn(&cars, 2, &ids[1]);
        rows.commit(edits, 4);
        let left: Vec<(u64, DocId)> = rows
            .change_entries()
            .into_iter()
            .map(|(_, e)| (e.seq, e.id))
            .collect();
        assert_eq!(
            left,
            vec![
                (3, ids[3].clone()),
                (5, ids[3].clone()),
                (9, ids[1].clone())
            ]
        );
        assert_eq!(
            rows.lsns.borrow().len(),
            0,
            "the emptied LSN run is deleted"
        );
    }

    #[test]
    fn entries_sharing_an_lsn_stay_in_one_run() {
        let cars = CollectionName::new("cars").unwrap();
        let ids: Vec<DocId> = (0..(RUN_ENTRIES as u64 + 10)).map(id).collect();
        let rows = Rows::default();
        let mut edits = IndexEdits::default();
        for doc in &ids {
            edits.add_lsn(&cars, 7, doc);
        }
        rows.commit(edits, 7);
        assert_eq!(rows.lsns.borrow().len(), 1);
        assert_eq!(rows.lsn_entries(&cars).len(), ids.len());
    }

    /// A stored document as the model keeps it: its LSN and the writes it holds.
    #[derive(Default, Clone)]
    struct Held {
        lsn: Option<Lsn>,
        dots: BTreeSet<Dot>,
    }

    proptest::proptest! {
        #[test]
        fn runs_hold_exactly_the_entries_of_a_row_per_entry_index(
            seed in proptest::prelude::any::<u64>()
        ) {
            random_commits_leave_the_entries_of_a_row_per_entry_index(seed);
        }
    }

    /// Random commits (documents changing, writes superseded, writes of one actor
    /// arriving out of order, one write in two documents) leave exactly the entries a
    /// row-per-entry index would hold, in runs whose keys bound them.
    fn random_commits_leave_the_entries_of_a_row_per_entry_index(seed: u64) {
        let mut x = seed | 1;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let collections = [
            CollectionName::new("a").unwrap(),
            CollectionName::new("b").unwrap(),
        ];
        let ids: Vec<DocId> = (0..24).map(id).collect();
        let mut model: BTreeMap<(usize, usize), Held> = BTreeMap::new();
        let mut used: BTreeSet<Dot> = BTreeSet::new();
        let mut newest = [0_u64; 3];
        let rows = Rows::default();
        let mut lsn = 0;
        for _ in 0..40 {
            let before = model.clone();
            let mut edits = IndexEdits::default();
            let mut shared: Option<Dot> = None;
            let changed: BTreeSet<(usize, usize)> = (0..1 + next(70))
                .map(|_| (next(2) as usize, next(24) as usize))
                .collect();
            for &(c, d) in &changed {
                let (collection, doc) = (&collections[c], &ids[d]);
                let held = model.entry((c, d)).or_default();
                if let Some(old) = held.lsn {
                    edits.remove_lsn(collection, old, doc);
                }
                lsn += 1;
                held.lsn = Some(lsn);
                edits.add_lsn(collection, lsn, doc);
                for dot in held.dots.clone() {
                    if next(2) == 0 {
                        held.dots.remove(&dot);
                        edits.remove_change(dot, collection, doc);
                    }
                }
                // A fresh write of one of three actors, at a sequence number not used
                // yet (so an actor's runs overlap), or the write another document of
                // this commit took.
                let dot = match shared.filter(|_| next(4) == 0) {
                    Some(dot) => dot,
                    None => loop {
                        // Mostly the actor's next write (runs of consecutive
                        // writes), sometimes one it made long before.
                        let actor = 1 + next(3) as usize;
                        let seq = if next(3) == 0 {
                            1 + next(10_000)
                        } else {
                            newest[actor - 1] + 1
                        };
                        let dot = Dot {
                            actor: ActorId::from_u64(actor as u64),
                            seq,
                        };
                        if used.insert(dot) {
                            newest[actor - 1] = newest[actor - 1].max(seq);
                            break dot;
                        }
                    },
                };
                shared = Some(dot);
                if held.dots.insert(dot) {
                    edits.add_change(dot, collection, doc);
                }
            }
            // Now and then a document leaves, as EVICT removes it.
            if next(5) == 0
                && let Some((&(c, d), held)) =
                    before.iter().nth(next(before.len().max(1) as u64) as usize)
                && !changed.contains(&(c, d))
            {
                let (collection, doc) = (&collections[c], &ids[d]);
                if let Some(old) = held.lsn {
                    edits.remove_lsn(collection, old, doc);
                }
                for dot in &held.dots {
                    edits.remove_change(*dot, collection, doc);
                }
                model.remove(&(c, d));
            }
            rows.commit(edits, lsn);
        }
        for (c, collection) in collections.iter().enumerate() {
            let expected: Vec<(Lsn, DocId)> = model
                .iter()
                .filter(|((mc, _), _)| *mc == c)
                .filter_map(|((_, d), held)| Some((held.lsn?, ids[*d].clone())))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            assert_eq!(rows.lsn_entries(collection), expected);
        }
        let mut expected: Vec<(ActorId, ChangeEntry)> = model
            .iter()
            .flat_map(|((c, d), held)| {
                held.dots.iter().map(|dot| {
                    (
                        dot.actor,
                        ChangeEntry {
                            seq: dot.seq,
                            collection: collections[*c].clone(),
                            id: ids[*d].clone(),
                        },
                    )
                })
            })
            .collect();
        expected.sort();
        assert_eq!(rows.change_entries(), expected);
    }
}
