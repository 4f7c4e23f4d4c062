//! Shadows: what a node keeps, out of sight, of documents it does not hold.
//!
//! A sync session that receives a fragment of a document this node does not hold (it
//! does not match the node's interest) keeps it when the document's id is natural (not
//! a UUID), because another version of that id, inserted independently elsewhere, may
//! reach this node or a node behind it by another path and must then meet this one
//! (docs/sync.md, "Independent inserts of one id"). A shadow is numbered and indexed by
//! LSN like a document, so [`Store::changed_since`](super::Store::changed_since) finds
//! it and sessions relay it; queries never see it. When the node acquires the document
//! (a local insert or a synced document), [`Store::apply`](super::Store::apply) merges
//! the shadow into it and deletes it in the same commit, so a document and its shadow
//! never coexist.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use trellis_common::crdt::{Crdt, DocState};
use trellis_common::delta::DocChange;
use trellis_common::ids::{CollectionName, DocId};
use trellis_common::sync::{DocLsns, Lsn};

use super::{MAX_DOC_BYTES, Result, WriteBatch};

/// A shadow merged into the document that acquired it: delete it (and its LSN-index
/// entry) in the commit that stores the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AbsorbedShadow {
    pub(crate) collection: CollectionName,
    pub(crate) id: DocId,
    pub(crate) lsn: Lsn,
}

/// `batch` with every document that has a shadow merged with that shadow, and the
/// shadows absorbed; `None` when no document of the batch has one (the common case, and
/// then nothing is copied). New documents ([`WriteBatch::push_new`]) that have one
/// become ordinary changes first. `shadow` reads a stored shadow; the store calls this
/// only when it holds shadows at all.
pub(crate) fn absorb(
    batch: &WriteBatch,
    mut shadow: impl FnMut(&CollectionName, &DocId) -> Result<Option<(DocState, DocLsns)>>,
) -> Result<Option<(WriteBatch, Vec<AbsorbedShadow>)>> {
    let changes = batch.deltas.iter().flat_map(|d| &d.changes);
    let keys = changes
        .map(|c| (&c.collection, &c.id))
        .chain(batch.new_docs.iter().map(|n| (&n.collection, &n.id)));
    let mut found = BTreeMap::new();
    for (collection, id) in keys {
        let key = (collection.clone(), id.clone());
        if !found.contains_key(&key)
            && let Some(stored) = shadow(collection, id)?
        {
            found.insert(key, stored);
        }
    }
    if found.is_empty() {
        return Ok(None);
    }
    let mut batch = if batch.new_docs.is_empty() {
        batch.clone()
    } else {
        batch.with_new_docs_as_changes()?
    };
    let mut absorbed = Vec::with_capacity(found.len());
    for change in batch.deltas.iter_mut().flat_map(|d| &mut d.changes) {
        // A document changed twice in the batch absorbs its shadow once.
        let key = (change.collection.clone(), change.id.clone());
        if let Some((state, lsns)) = found.remove(&key) {
            change.state.merge(&state);
            absorbed.push(AbsorbedShadow {
                collection: key.0,
                id: key.1,
                lsn: lsns.lsn(),
            });
        }
    }
    Ok(Some((batch, absorbed)))
}

/// A shadow that one [`Store::apply_shadows`](super::Store::apply_shadows) commit writes.
#[derive(Debug, Clone)]
pub(crate) struct ShadowWrite {
    pub(crate) collection: CollectionName,
    pub(crate) id: DocId,
    pub(crate) state: DocState,
    pub(crate) lsns: DocLsns,
    /// The LSN it takes: its own, so that paging the LSN index by cursor never splits
    /// shadows sharing one.
    pub(crate) lsn: Lsn,
    /// The LSN the shadow was stored (indexed) at before, if it was stored.
    pub(crate) stored_lsn: Option<Lsn>,
    /// `codec::encode_doc` of `state`.
    pub(crate) encoded: Vec<u8>,
}

/// What [`merge_fragments`] decided.
#[derive(Debug, Default)]
pub(crate) struct ShadowWrites {
    /// The shadows that changed, in (collection, id) order, numbered from the first LSN
    /// given.
    pub(crate) shadows: Vec<ShadowWrite>,
    /// Fragments of documents held: not shadows, handed back to the caller.
    pub(crate) held: Vec<DocChange>,
}

/// Merges fragments into the shadows of their documents, for both backends: each
/// shadow that changes takes the next LSN from `first_lsn` on. `is_held` tells whether a
/// document is held (its fragments are handed back), `stored` reads a stored shadow. A
/// shadow larger than a document may be is not kept (the document could never be
/// stored here either).
pub(crate) fn merge_fragments(
    fragments: &[DocChange],
    first_lsn: Lsn,
    mut is_held: impl FnMut(&CollectionName, &DocId) -> Result<bool>,
    mut stored: impl FnMut(&CollectionName, &DocId) -> Result<Option<(DocState, DocLsns)>>,
) -> Result<ShadowWrites> {
    let mut held = Vec::new();
    let mut shadowed: BTreeMap<(&CollectionName, &DocId), Vec<&DocState>> = BTreeMap::new();
    for change in fragments {
        let key = (&change.collection, &change.id);
        match shadowed.entry(key) {
            Entry::Occupied(slot) => slot.into_mut().push(&change.state),
            Entry::Vacant(slot) => {
                if is_held(key.0, key.1)? {
                    held.push(change.clone());
                } else {
                    slot.insert(vec![&change.state]);
                }
            }
        }
    }
    let mut shadows = Vec::new();
    let mut lsn = first_lsn;
    for ((collection, id), fragments) in shadowed {
        let mut update = ShadowUpdate::from_stored(stored(collection, id)?);
        for fragment in fragments {
            update.merge(fragment, lsn);
        }
        if !update.changed {
            continue;
        }
        let encoded = trellis_common::codec::encode_doc(&update.state);
        if encoded.len() > MAX_DOC_BYTES {
            tracing::warn!(
                %collection,
                %id,
                size = encoded.len(),
                "a synced shadow is above the document size limit and not kept"
            );
            continue;
        }
        shadows.push(ShadowWrite {
            collection: collection.clone(),
            id: id.clone(),
            state: update.state,
            lsns: update.lsns,
            lsn,
            stored_lsn: update.stored_lsn,
            encoded,
        });
        lsn += 1;
    }
    Ok(ShadowWrites { shadows, held })
}

/// A shadow being updated by one commit.
#[derive(Debug, Clone)]
struct ShadowUpdate {
    state: DocState,
    lsns: DocLsns,
    stored_lsn: Option<Lsn>,
    /// Whether a merge changed it.
    changed: bool,
}

impl ShadowUpdate {
    /// Starts from the stored shadow, if any.
    fn from_stored(stored: Option<(DocState, DocLsns)>) -> Self {
        match stored {
            Some((state, lsns)) => Self {
                stored_lsn: Some(lsns.lsn()),
                state,
                lsns,
                changed: false,
            },
            None => Self {
                state: DocState::new(),
                lsns: DocLsns::default(),
                stored_lsn: None,
                changed: false,
            },
        }
    }

    /// Merges a fragment, numbering the entries it changes with `lsn`.
    fn merge(&mut self, fragment: &DocState, lsn: Lsn) {
        let mut merged = self.state.clone();
        merged.merge(fragment);
        let changed = if self.state.is_empty() {
            self.lsns = DocLsns::new(lsn);
            !merged.is_empty()
        } else {
            self.lsns.record(&self.state, &merged, lsn)
        };
        if changed {
            self.state = merged;
            self.changed = true;
        }
    }
}

/// What [`Store::apply_shadows`](super::Store::apply_shadows) did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShadowsApplied {
    /// The store's latest LSN after the commit.
    pub lsn: Lsn,
    /// Fragments of documents that are held (they became so after the caller looked):
    /// not written as shadows; apply them as documents.
    pub held: Vec<DocChange>,
}
