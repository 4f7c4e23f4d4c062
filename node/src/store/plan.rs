//! The storage-independent half of [`Store::apply`](super::Store::apply): merging a
//! batch into the current document states and working out every row that changes
//! (documents with their change numbers, change-index and LSN-index entries, index
//! entries, version vector, greatest timestamp). Both backends call [`plan_apply`] under their writer lock and then commit
//! the [`Plan`] in their own way, so they cannot disagree on what a write means.

use std::borrow::Cow;

use trellis_common::clock::Hlc;
use trellis_common::codec::encode_doc;
use trellis_common::crdt::{Crdt, DocState, Dot, VersionVector};
use trellis_common::ids::{CollectionName, DocId};
use trellis_common::sync::{DocLsns, Lsn};

use super::{
    Applied, AppliedDoc, IndexDef, MAX_DOC_BYTES, NewDoc, Result, SizeWarning, StoreError,
    WARN_DOC_BYTES, WriteBatch, keys, sorted_dots,
};

/// Everything one batch changes. Borrows the batch: a document the batch creates from a
/// single fragment is that fragment, not a copy of it.
#[derive(Debug)]
pub(crate) struct Plan<'b> {
    /// Changed documents, in (collection, id) order.
    pub(crate) docs: Vec<PlannedDoc<'b>>,
    /// Per delta, whether the version vector advanced.
    pub(crate) advanced: Vec<bool>,
    /// The version vector after the batch.
    pub(crate) version: VersionVector,
    /// Whether it differs from the one before.
    pub(crate) version_changed: bool,
    /// The new greatest timestamp, when the batch raised it.
    pub(crate) max_hlc: Option<Hlc>,
    /// The store's LSN after the batch (each changed document takes the next one).
    pub(crate) lsn: Lsn,
    /// Documents above the warning size.
    pub(crate) warnings: Vec<SizeWarning>,
    /// Whether [`Plan::into_applied`] reports document states.
    states: bool,
    /// Whether [`Plan::into_applied`] lists the documents at all.
    listed: bool,
}

/// A document's state after the batch.
#[derive(Debug)]
pub(crate) enum After<'b> {
    /// Merged (or borrowed from the batch's only fragment for it).
    State(Cow<'b, DocState>),
    /// A [`NewDoc`] of the batch, new to the store: its state is its encoding, decoded
    /// only when someone needs the state itself.
    New(&'b NewDoc),
}

impl<'b> After<'b> {
    /// The state, decoding a new document's encoding.
    pub(crate) fn state(&self) -> Result<Cow<'_, DocState>> {
        match self {
            After::State(state) => Ok(Cow::Borrowed(state.as_ref())),
            After::New(new) => new.state().map(Cow::Owned),
        }
    }

    /// The state to change: a new document's is decoded first.
    fn to_mut(&mut self) -> Result<&mut DocState> {
        if let After::New(new) = self {
            *self = After::State(Cow::Owned(new.state()?));
        }
        match self {
            After::State(state) => Ok(state.to_mut()),
            After::New(_) => unreachable!("replaced by its state just above"),
        }
    }

    fn into_state(self) -> Result<DocState> {
        match self {
            After::State(state) => Ok(state.into_owned()),
            After::New(new) => new.state(),
        }
    }
}

/// One changed document and the rows that follow from it.
#[derive(Debug)]
pub(crate) struct PlannedDoc<'b> {
    pub(crate) collection: &'b CollectionName,
    pub(crate) id: &'b DocId,
    pub(crate) before: Option<DocState>,
    pub(crate) after: After<'b>,
    /// The document's LSN before the batch (its LSN-index entry to remove).
    pub(crate) old_lsn: Option<Lsn>,
    /// Its change numbers after the batch.
    pub(crate) lsns: DocLsns,
    /// `encode_doc` of the state after the batch.
    pub(crate) encoded: Cow<'b, [u8]>,
    /// Writes the document now holds that it did not, in order, but for a new
    /// document's one write: see [`PlannedDoc::dots_added`].
    added: Vec<Dot>,
    /// Writes it held and no longer does (superseded), in order.
    pub(crate) dots_removed: Vec<Dot>,
    /// `(index name, encoded value)` entries to remove.
    pub(crate) index_removed: Vec<(String, Vec<u8>)>,
    /// `(index name, encoded value)` entries to add.
    pub(crate) index_added: Vec<(String, Vec<u8>)>,
}

/// One write of a batch to one document, with whether the batch vouches that the
/// store held nothing of that document.
#[derive(Debug, Clone, Copy)]
enum Write<'b> {
    /// A change of one of the batch's deltas.
    Change(&'b DocState, bool),
    /// One of its new documents.
    New(&'b NewDoc, bool),
}

impl Write<'_> {
    fn known_absent(self) -> bool {
        match self {
            Write::Change(_, absent) | Write::New(_, absent) => absent,
        }
    }

    /// The state written (a new document's encoding decoded).
    fn state(&self) -> Result<Cow<'_, DocState>> {
        match *self {
            Write::Change(state, _) => Ok(Cow::Borrowed(state)),
            Write::New(new, _) => new.state().map(Cow::Owned),
        }
    }
}

/// What a store holds before a batch, as [`plan_apply`] needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Before<'s> {
    /// The store's current [`Store::generation`](super::Store::generation).
    pub(crate) generation: Option<u64>,
    pub(crate) version: &'s VersionVector,
    pub(crate) max_hlc: Hlc,
    /// The store's latest LSN.
    pub(crate) lsn: Lsn,
    pub(crate) indexes: &'s [IndexDef],
}

/// Merges `batch` into the states `read` returns (with their change numbers) and plans
/// the commit. Documents the batch says were absent at `before.generation` are not
/// read. Fails, planning nothing, when a document would exceed [`MAX_DOC_BYTES`] or a
/// stored state is unreadable.
pub(crate) fn plan_apply<'b>(
    batch: &'b WriteBatch,
    before: Before<'_>,
    mut read: impl FnMut(&CollectionName, &DocId) -> Result<Option<(DocState, DocLsns)>>,
) -> Result<Plan<'b>> {
    let Before {
        generation,
        version,
        max_hlc,
        lsn: mut next_lsn,
        indexes,
    } = before;
    let absent = batch.absent_at(generation);
    // Every write of the batch, keyed by document, in batch order: deltas' changes,
    // then new documents (merge does not care in which order).
    let mut writes: Vec<((&'b CollectionName, &'b DocId), Write<'b>)> = Vec::with_capacity(
        batch.new_docs().len()
            + batch
                .deltas()
                .iter()
                .map(|d| d.changes.len())
                .sum::<usize>(),
    );
    let mut change_number = 0;
    let mut new_version = version.clone();
    let mut advanced = Vec::with_capacity(batch.deltas().len());
    let mut newest = max_hlc;
    for delta in batch.deltas() {
        for change in &delta.changes {
            let known_absent = absent.is_some_and(|a| a.get(change_number) == Some(&true));
            change_number += 1;
            writes.push((
                (&change.collection, &change.id),
                Write::Change(&change.state, known_absent),
            ));
            newest = newest.max(change.state.max_hlc());
        }
        // The rule of `Replica::apply`: claim `until` only on top of all of `since`.
        let advances = new_version.dominates(&delta.since);
        if advances {
            new_version.merge(&delta.until);
        }
        advanced.push(advances);
    }
    for new in batch.new_docs() {
        writes.push((
            (&new.collection, &new.id),
            Write::New(new, absent.is_some()),
        ));
        newest = newest.max(new.hlc);
    }
    // Grouped by document. Stable, so a document's first write decides whether it is
    // read; cheap, as a batch usually comes in document order already.
    writes.sort_by(|a, b| a.0.cmp(&b.0));
    let mut docs = Vec::with_capacity(writes.len());
    let mut warnings = Vec::new();
    for group in writes.chunk_by(|a, b| a.0 == b.0) {
        let ((collection, id), first) = group[0];
        let stored = if first.known_absent() {
            None
        } else {
            read(collection, id)?
        };
        // Merging into nothing is a copy: borrow the first write instead.
        let mut after = match (&stored, first) {
            (None, Write::Change(state, _)) => After::State(Cow::Borrowed(state)),
            (None, Write::New(new, _)) => After::New(new),
            (Some((before, _)), write) => {
                let mut after = before.clone();
                after.merge(&*write.state()?);
                After::State(Cow::Owned(after))
            }
        };
        for (_, write) in &group[1..] {
            after.to_mut()?.merge(&*write.state()?);
        }
        let unchanged = match (&stored, &after) {
            (_, After::New(_)) => false,
            (Some((before, _)), After::State(after)) => *before == **after,
            (None, After::State(after)) => after.is_empty(),
        };
        if unchanged {
            continue;
        }
        next_lsn += 1;
        let (before, old_lsn, lsns) = match stored {
            None => (None, None, DocLsns::new(next_lsn)),
            Some((before, mut lsns)) => {
                let old_lsn = lsns.lsn();
                lsns.record(&before, &*after.state()?, next_lsn);
                (Some(before), Some(old_lsn), lsns)
            }
        };
        let encoded = match &after {
            After::State(state) => Cow::Owned(encode_doc(state)),
            After::New(new) => Cow::Borrowed(new.encoded.as_bytes()),
        };
        if encoded.len() > MAX_DOC_BYTES {
            return Err(StoreError::DocumentTooLarge {
                collection: collection.clone(),
                id: id.clone(),
                size: encoded.len(),
                limit: MAX_DOC_BYTES,
            });
        }
        if encoded.len() > WARN_DOC_BYTES {
            tracing::warn!(
                collection = %collection,
                id = %id,
                size = encoded.len(),
                limit = MAX_DOC_BYTES,
                "document is larger than {WARN_DOC_BYTES} bytes stored; large documents sync slowly"
            );
            warnings.push(SizeWarning {
                collection: collection.clone(),
                id: id.clone(),
                size: encoded.len(),
            });
        }
        let (added, dots_removed) = match (&before, &after) {
            // Every entry of a new document is its insert's: `dots_added` gives that
            // dot without a vector of its own.
            (_, After::New(_)) => (Vec::new(), Vec::new()),
            // A document new to the store adds every write it holds.
            (None, After::State(after)) => (sorted_dots(after), Vec::new()),
            (Some(before), After::State(after)) => {
                sorted_difference(&sorted_dots(before), &sorted_dots(after))
            }
        };
        let mut index_removed = Vec::new();
        let mut index_added = Vec::new();
        let mut defs = indexes
            .iter()
            .filter(|d| d.collection == *collection)
            .peekable();
        if defs.peek().is_some() {
            let after = after.state()?;
            for def in defs {
                let old = before.as_ref().and_then(|b| def.entry_value(id, b));
                let new = def.entry_value(id, &after);
                if old != new {
                    index_removed.extend(old.map(|v| (def.name.clone(), v)));
                    index_added.extend(new.map(|v| (def.name.clone(), v)));
                }
            }
        }
        docs.push(PlannedDoc {
            collection,
            id,
            before,
            after,
            old_lsn,
            lsns,
            encoded,
            added,
            dots_removed,
            index_removed,
            index_added,
        });
    }

    Ok(Plan {
        docs,
        advanced,
        version_changed: new_version != *version,
        version: new_version,
        max_hlc: (newest > max_hlc).then_some(newest),
        lsn: next_lsn,
        warnings,
        states: batch.wants_states(),
        listed: batch.wants_docs(),
    })
}

/// `(new - old, old - new)` of two sorted, deduplicated lists, each in order.
fn sorted_difference(old: &[Dot], new: &[Dot]) -> (Vec<Dot>, Vec<Dot>) {
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(o), Some(n)) if o == n => {
                i += 1;
                j += 1;
            }
            (Some(o), Some(n)) if o < n => {
                removed.push(*o);
                i += 1;
            }
            (Some(o), None) => {
                removed.push(*o);
                i += 1;
            }
            (_, Some(n)) => {
                added.push(*n);
                j += 1;
            }
            (None, None) => break,
        }
    }
    (added, removed)
}

impl PlannedDoc<'_> {
    /// Writes the document now holds that it did not, in order.
    pub(crate) fn dots_added(&self) -> impl Iterator<Item = Dot> + '_ {
        let new = match &self.after {
            After::New(new) => Some(new.dot),
            After::State(_) => None,
        };
        new.into_iter().chain(self.added.iter().copied())
    }

    /// Writes the document's value in the `docs` column family
    /// ([`keys::encode_doc_value`]) into `out`.
    pub(crate) fn write_stored_value(&self, out: &mut Vec<u8>) {
        let state = match &self.after {
            After::State(state) => state.as_ref(),
            // A new document's change numbers name no entry: they need no state.
            After::New(_) => DocState::empty(),
        };
        keys::write_doc_value(out, &self.lsns, state, &self.encoded);
    }
}

impl Plan<'_> {
    /// The report for the caller, once committed. Fails only if the encoding of a new
    /// document the caller asked states of does not decode.
    pub(crate) fn into_applied(self) -> Result<Applied> {
        let states = self.states;
        let listed = if self.listed { self.docs.len() } else { 0 };
        let mut docs = Vec::with_capacity(listed);
        for d in self.docs.into_iter().take(listed) {
            docs.push(AppliedDoc {
                collection: d.collection.clone(),
                id: d.id.clone(),
                before: if states { d.before } else { None },
                after: if states {
                    d.after.into_state()?
                } else {
                    DocState::new()
                },
            });
        }
        Ok(Applied {
            docs,
            advanced: self.advanced,
            version: self.version,
            lsn: self.lsn,
            warnings: self.warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use trellis_common::crdt::{Stamp, WriteContext};
    use trellis_common::delta::{Delta, DocChange};
    use trellis_common::ids::ActorId;

    use super::*;

    fn before(generation: Option<u64>) -> Before<'static> {
        Before {
            generation,
            version: Box::leak(Box::new(VersionVector::new())),
            max_hlc: Hlc::ZERO,
            lsn: 0,
            indexes: &[],
        }
    }

    fn insert_batch() -> WriteBatch {
        let actor = ActorId::from_u64(7);
        let dot = Dot { actor, seq: 1 };
        let ctx = WriteContext {
            stamp: Stamp {
                hlc: Hlc::new(1_000, 0),
                actor,
            },
            dot,
        };
        let state = DocState::insert_delta(ctx, &json!({"a": 1, "b": {"c": "x"}})).unwrap();
        WriteBatch::from(Delta {
            since: VersionVector::new(),
            until: [(actor, 1)].into_iter().collect(),
            changes: vec![DocChange {
                collection: CollectionName::new("c").unwrap(),
                id: DocId::from_string("d").unwrap(),
                state,
            }],
        })
    }

    #[test]
    fn documents_known_absent_at_this_generation_are_not_read() {
        let mut batch = insert_batch();
        batch.assume_absent(5, vec![true]);
        let plan = plan_apply(&batch, before(Some(5)), |_, _| {
            panic!("a document known to be absent is read")
        })
        .unwrap();
        assert_eq!(plan.docs.len(), 1);
        assert!(plan.docs[0].before.is_none());
        assert_eq!(plan.docs[0].dots_added().count(), 1);
    }

    #[test]
    fn absence_hints_of_another_generation_are_ignored() {
        let mut batch = insert_batch();
        batch.assume_absent(5, vec![true]);
        let stored = batch.deltas()[0].changes[0].state.clone();
        for generation in [Some(6), None] {
            let mut reads = 0;
            let plan = plan_apply(&batch, before(generation), |_, _| {
                reads += 1;
                Ok(Some((stored.clone(), DocLsns::new(1))))
            })
            .unwrap();
            assert_eq!(reads, 1);
            // The stored state already holds the write: nothing changes.
            assert!(plan.docs.is_empty());
        }
    }

    #[test]
    fn states_are_omitted_only_when_asked() {
        let batch = insert_batch();
        let plan = |b| plan_apply(b, before(None), |_, _| Ok(None));
        let with = plan(&batch).unwrap().into_applied().unwrap();
        assert_eq!(with.docs[0].after, batch.deltas()[0].changes[0].state);
        let without = batch.clone().without_states();
        let applied = plan(&without).unwrap().into_applied().unwrap();
        assert!(applied.docs[0].after.is_empty() && applied.docs[0].before.is_none());
        assert_eq!(applied.docs[0].id, with.docs[0].id);
        let without_docs = batch.clone().without_docs();
        let unlisted = plan(&without_docs).unwrap();
        assert_eq!(unlisted.docs.len(), 1, "the document is still written");
        let applied = unlisted.into_applied().unwrap();
        assert!(applied.docs.is_empty());
        assert_eq!(applied.lsn, with.lsn);
    }

    fn dot(actor: u64, seq: u64) -> Dot {
        Dot {
            actor: ActorId::from_u64(actor),
            seq,
        }
    }

    #[test]
    fn sorted_difference_matches_set_difference() {
        let old = [dot(1, 1), dot(1, 3), dot(2, 1), dot(3, 5)];
        let new = [dot(1, 2), dot(1, 3), dot(3, 5), dot(4, 1)];
        let (added, removed) = sorted_difference(&old, &new);
        assert_eq!(added, vec![dot(1, 2), dot(4, 1)]);
        assert_eq!(removed, vec![dot(1, 1), dot(2, 1)]);
        assert_eq!(sorted_difference(&[], &new), (new.to_vec(), Vec::new()));
        assert_eq!(sorted_difference(&old, &[]), (Vec::new(), old.to_vec()));
    }
}
