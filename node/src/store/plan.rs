//! The storage-independent half of [`Store::apply`](super::Store::apply): merging a
//! batch into the current document states and working out every row that changes
//! (documents, change-index entries, index entries, version vector, greatest
//! timestamp). Both backends call [`plan_apply`] under their writer lock and then commit
//! the [`Plan`] in their own way, so they cannot disagree on what a write means.

use std::collections::BTreeMap;

use trellis_common::clock::Hlc;
use trellis_common::codec::encode_doc;
use trellis_common::crdt::{Crdt, DocState, Dot, VersionVector};
use trellis_common::ids::{CollectionName, DocId};

use super::{
    Applied, AppliedDoc, IndexDef, MAX_DOC_BYTES, Result, SizeWarning, StoreError, WARN_DOC_BYTES,
    WriteBatch, dot_set,
};

/// Everything one batch changes.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Changed documents, in (collection, id) order.
    pub(crate) docs: Vec<PlannedDoc>,
    /// Per delta, whether the version vector advanced.
    pub(crate) advanced: Vec<bool>,
    /// The version vector after the batch.
    pub(crate) version: VersionVector,
    /// Whether it differs from the one before.
    pub(crate) version_changed: bool,
    /// The new greatest timestamp, when the batch raised it.
    pub(crate) max_hlc: Option<Hlc>,
    /// Documents above the warning size.
    pub(crate) warnings: Vec<SizeWarning>,
}

/// One changed document and the rows that follow from it.
#[derive(Debug)]
pub(crate) struct PlannedDoc {
    pub(crate) collection: CollectionName,
    pub(crate) id: DocId,
    pub(crate) before: Option<DocState>,
    pub(crate) after: DocState,
    /// `encode_doc(&after)`.
    pub(crate) encoded: Vec<u8>,
    /// Writes the document now holds that it did not.
    pub(crate) dots_added: Vec<Dot>,
    /// Writes it held and no longer does (superseded).
    pub(crate) dots_removed: Vec<Dot>,
    /// `(index name, encoded value)` entries to remove.
    pub(crate) index_removed: Vec<(String, Vec<u8>)>,
    /// `(index name, encoded value)` entries to add.
    pub(crate) index_added: Vec<(String, Vec<u8>)>,
}

/// Merges `batch` into the states `read` returns and plans the commit. Fails, planning
/// nothing, when a document would exceed [`MAX_DOC_BYTES`] or a stored state is
/// unreadable.
pub(crate) fn plan_apply(
    batch: &WriteBatch,
    version: &VersionVector,
    max_hlc: Hlc,
    indexes: &[IndexDef],
    mut read: impl FnMut(&CollectionName, &DocId) -> Result<Option<DocState>>,
) -> Result<Plan> {
    let mut working: BTreeMap<(CollectionName, DocId), (Option<DocState>, DocState)> =
        BTreeMap::new();
    let mut new_version = version.clone();
    let mut advanced = Vec::with_capacity(batch.deltas().len());
    let mut newest = max_hlc;
    for delta in batch.deltas() {
        for change in &delta.changes {
            let key = (change.collection.clone(), change.id.clone());
            let slot = match working.entry(key) {
                std::collections::btree_map::Entry::Occupied(slot) => slot.into_mut(),
                std::collections::btree_map::Entry::Vacant(slot) => {
                    let before = read(&change.collection, &change.id)?;
                    let current = before.clone().unwrap_or_default();
                    slot.insert((before, current))
                }
            };
            slot.1.merge(&change.state);
            newest = newest.max(change.state.max_hlc());
        }
        // The rule of `Replica::apply`: claim `until` only on top of all of `since`.
        let advances = new_version.dominates(&delta.since);
        if advances {
            new_version.merge(&delta.until);
        }
        advanced.push(advances);
    }

    let mut docs = Vec::new();
    let mut warnings = Vec::new();
    for ((collection, id), (before, after)) in working {
        let unchanged = match &before {
            Some(before) => *before == after,
            None => after.is_empty(),
        };
        if unchanged {
            continue;
        }
        let encoded = encode_doc(&after);
        if encoded.len() > MAX_DOC_BYTES {
            return Err(StoreError::DocumentTooLarge {
                collection,
                id,
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
        let old_dots = dot_set(before.as_ref());
        let new_dots = dot_set(Some(&after));
        let dots_added = new_dots.difference(&old_dots).copied().collect();
        let dots_removed = old_dots.difference(&new_dots).copied().collect();
        let mut index_removed = Vec::new();
        let mut index_added = Vec::new();
        for def in indexes.iter().filter(|d| d.collection == collection) {
            let old = before.as_ref().and_then(|b| def.entry_value(&id, b));
            let new = def.entry_value(&id, &after);
            if old != new {
                index_removed.extend(old.map(|v| (def.name.clone(), v)));
                index_added.extend(new.map(|v| (def.name.clone(), v)));
            }
        }
        docs.push(PlannedDoc {
            collection,
            id,
            before,
            after,
            encoded,
            dots_added,
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
        warnings,
    })
}

impl Plan {
    /// The report for the caller, once committed.
    pub(crate) fn into_applied(self) -> Applied {
        Applied {
            docs: self
                .docs
                .into_iter()
                .map(|d| AppliedDoc {
                    collection: d.collection,
                    id: d.id,
                    before: d.before,
                    after: d.after,
                })
                .collect(),
            advanced: self.advanced,
            version: self.version,
            warnings: self.warnings,
        }
    }
}
