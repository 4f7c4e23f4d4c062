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

use std::collections::BTreeSet;

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

/// `batch` with every change to a document that has a shadow merged with that shadow,
/// and the shadows absorbed; `None` when no change of the batch has one (the common
/// case, and then nothing is copied). `shadow` reads a stored shadow; the store calls
/// this only when it holds shadows at all.
pub(crate) fn absorb(
    batch: &WriteBatch,
    mut shadow: impl FnMut(&CollectionName, &DocId) -> Result<Option<(DocState, DocLsns)>>,
) -> Result<Option<(WriteBatch, Vec<AbsorbedShadow>)>> {
    let mut seen = BTreeSet::new();
    let mut found = Vec::new();
    for (d, delta) in batch.deltas.iter().enumerate() {
        for (c, change) in delta.changes.iter().enumerate() {
            // A document changed twice in the batch absorbs its shadow once.
            if !seen.insert((&change.collection, &change.id)) {
                continue;
            }
            if let Some((state, lsns)) = shadow(&change.collection, &change.id)? {
                let absorbed = AbsorbedShadow {
                    collection: change.collection.clone(),
                    id: change.id.clone(),
                    lsn: lsns.lsn(),
                };
                found.push((d, c, absorbed, state));
            }
        }
    }
    if found.is_empty() {
        return Ok(None);
    }
    let mut batch = batch.clone();
    let mut absorbed = Vec::with_capacity(found.len());
    for (d, c, shadow, state) in found {
        batch.deltas[d].changes[c].state.merge(&state);
        absorbed.push(shadow);
    }
    Ok(Some((batch, absorbed)))
}

/// A shadow being updated by one commit.
#[derive(Debug, Clone)]
pub(crate) struct ShadowUpdate {
    pub(crate) state: DocState,
    pub(crate) lsns: DocLsns,
    /// The LSN the shadow is stored (indexed) at, if it is stored.
    pub(crate) stored_lsn: Option<Lsn>,
    /// Whether a merge changed it (then it is written, numbered by the commit's LSN).
    pub(crate) changed: bool,
}

impl ShadowUpdate {
    /// Starts from the stored shadow, if any.
    pub(crate) fn from_stored(stored: Option<(DocState, DocLsns)>) -> Self {
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

    /// The shadow encoded (`codec::encode_doc`), or `None` (with a warning) when it is
    /// larger than a document may be: the document could never be stored here, so its
    /// shadow is not kept either.
    pub(crate) fn encoded(&self, collection: &CollectionName, id: &DocId) -> Option<Vec<u8>> {
        let encoded = trellis_common::codec::encode_doc(&self.state);
        if encoded.len() > MAX_DOC_BYTES {
            tracing::warn!(%collection, %id, size = encoded.len(), "a synced shadow is above the document size limit and not kept");
            return None;
        }
        Some(encoded)
    }

    /// Merges a fragment, numbering the entries it changes with `lsn`.
    pub(crate) fn merge(&mut self, fragment: &DocState, lsn: Lsn) {
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
