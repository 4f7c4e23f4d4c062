//! Deltas between replicas: document fragments plus the version-vector range they cover.

use serde::{Deserialize, Serialize};

use crate::crdt::{DocState, VersionVector};
use crate::ids::{CollectionName, DocId};

/// The new state of one document, as a fragment to merge.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct DocChange {
    /// The document's collection.
    pub collection: CollectionName,
    /// The document's id.
    pub id: DocId,
    /// The entries the receiver lacks.
    pub state: DocState,
}

/// A batch of document fragments that together bring a replica that has seen `since`
/// up to `until`.
///
/// Merging the fragments is always safe (they are CRDT states). The receiver advances
/// its own version vector to include `until` only when it has already seen all of
/// `since`: otherwise the delta may skip writes the receiver lacks, and claiming
/// `until` would make it never ask for them. This keeps version vectors meaning "every
/// write up to here", however deltas are reordered, duplicated or dropped.
#[derive(Clone, PartialEq, Debug, Default, Serialize, Deserialize)]
pub struct Delta {
    /// What the sender assumed the receiver had.
    pub since: VersionVector,
    /// What the receiver has after applying this delta on top of `since`.
    pub until: VersionVector,
    /// The document fragments, at most one per document.
    pub changes: Vec<DocChange>,
}

impl Delta {
    /// Whether the delta changes no document.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}
