//! Observers (live queries): a SELECT whose result is kept up to date after every
//! commit, local or remote, and delivered as diffs.
//!
//! The engine keeps, per observer, the documents that pass its WHERE (its *match set*)
//! and, after each commit that touched the observer's collection, updates that set from
//! the changed documents only, reshapes the result (ORDER BY, OFFSET, LIMIT,
//! projection) and, when the result changed, publishes it whole through a
//! `tokio::sync::watch` channel. The [`Observer`] compares what it receives with what it
//! last delivered and hands out the difference. A watch channel holds only the latest
//! value, so a slow consumer never makes a queue grow: the states it missed coalesce
//! into one diff, and diffs still come in commit order.
//!
//! All of this runs under the engine's writer lock, which is what orders commits; the
//! initial result is computed under the same lock, so no commit falls between it and
//! the first diff.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;
use trellis_common::ids::{CollectionName, DocId};
use trellis_common::query::Select;

use super::exec::{Rows, shape};

/// One published state of an observer's result.
#[derive(Debug, PartialEq)]
pub(crate) struct Snapshot {
    /// The commit after which it was computed.
    seq: u64,
    /// Whether the result is an aggregate (COUNT), whose rows have no ids.
    aggregate: bool,
    rows: Rows,
}

/// A change of a document made by a commit: its new JSON (`None`: deleted or evicted).
pub(crate) struct Changed<'a> {
    pub(crate) collection: &'a CollectionName,
    pub(crate) id: &'a DocId,
    pub(crate) after: Option<Value>,
}

struct Slot {
    collection: CollectionName,
    select: Select,
    matches: BTreeMap<DocId, Value>,
    published: Arc<Snapshot>,
    sender: watch::Sender<Arc<Snapshot>>,
}

/// The observers registered with an engine.
#[derive(Default)]
pub(crate) struct Registry {
    slots: Vec<Slot>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("observers", &self.slots.len())
            .finish()
    }
}

impl Registry {
    /// Registers an observer of the bound `select` whose match set is `matches` after
    /// commit `seq`.
    pub(crate) fn register(
        &mut self,
        collection: CollectionName,
        select: Select,
        matches: BTreeMap<DocId, Value>,
        seq: u64,
    ) -> Observer {
        let snapshot = Arc::new(Snapshot {
            seq,
            aggregate: select.projection.is_count(),
            rows: shape(&select, matches.iter()),
        });
        let (sender, receiver) = watch::channel(Arc::clone(&snapshot));
        self.slots.retain(|slot| !slot.sender.is_closed());
        self.slots.push(Slot {
            collection,
            select,
            matches,
            published: Arc::clone(&snapshot),
            sender,
        });
        Observer {
            receiver,
            delivered: snapshot,
        }
    }

    /// Whether any observer watches `collection`.
    pub(crate) fn watches(&self, collection: &CollectionName) -> bool {
        self.slots.iter().any(|s| s.collection == *collection)
    }

    /// Number of live observers.
    pub(crate) fn len(&self) -> usize {
        self.slots.iter().filter(|s| !s.sender.is_closed()).count()
    }

    /// Brings every observer of a touched collection up to date after commit `seq`.
    pub(crate) fn notify(&mut self, seq: u64, changes: &[Changed<'_>]) {
        self.slots.retain(|slot| !slot.sender.is_closed());
        for slot in &mut self.slots {
            let mut touched = false;
            for change in changes.iter().filter(|c| *c.collection == slot.collection) {
                let now = change.after.as_ref().filter(|doc| slot.select.matches(doc));
                touched |= match now {
                    Some(doc) => {
                        slot.matches.insert(change.id.clone(), doc.clone()).as_ref() != Some(doc)
                    }
                    None => slot.matches.remove(change.id).is_some(),
                };
            }
            if !touched {
                continue;
            }
            let rows = shape(&slot.select, slot.matches.iter());
            if rows == slot.published.rows {
                continue;
            }
            let snapshot = Arc::new(Snapshot {
                seq,
                aggregate: slot.published.aggregate,
                rows,
            });
            slot.published = Arc::clone(&snapshot);
            // Fails only when the observer is gone; it is dropped at the next commit.
            let _ = slot.sender.send(snapshot);
        }
    }
}

/// A live query. [`Observer::result`] is the result as of the last diff handed out
/// (initially the result when it was registered); [`Observer::next`] waits for the next
/// diff, [`Observer::try_next`] takes it if there is one.
///
/// Dropping the observer unregisters it.
#[derive(Debug)]
pub struct Observer {
    receiver: watch::Receiver<Arc<Snapshot>>,
    delivered: Arc<Snapshot>,
}

/// How an observer's result changed since the previous diff (or the initial result).
///
/// Ids are JSON (`"a"` or `{"k": 1}`); `documents` holds the new rows (projected) of the
/// inserted and updated documents, keyed by the id as text (a string id bare, an object
/// id as its canonical JSON). A diff whose lists are all empty means only the order of
/// the rows changed: read [`Observer::result`].
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ObserverDiff {
    /// Documents that entered the result.
    pub inserted: Vec<Value>,
    /// Documents still in the result whose row changed.
    pub updated: Vec<Value>,
    /// Documents that left the result (deleted, evicted, or no longer matching).
    pub removed: Vec<Value>,
    /// The new rows of inserted and updated documents, by id.
    pub documents: BTreeMap<String, Value>,
    /// For `COUNT(*)`: the new row (`{"count": n}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<Value>,
}

impl ObserverDiff {
    /// Whether nothing but possibly the order changed.
    pub fn is_empty(&self) -> bool {
        self.inserted.is_empty()
            && self.updated.is_empty()
            && self.removed.is_empty()
            && self.aggregate.is_none()
    }
}

impl Observer {
    /// The rows as of the last diff handed out (at first, the initial result).
    pub fn result(&self) -> &[Value] {
        &self.delivered.rows.rows
    }

    /// The ids of the rows of [`Observer::result`], in the same order (empty for
    /// `COUNT(*)`).
    pub fn ids(&self) -> Vec<Value> {
        self.delivered.rows.ids.iter().map(DocId::to_json).collect()
    }

    /// Waits for the next change of the result and returns it, with everything that
    /// happened since the previous diff folded in. `None` once the engine is gone.
    pub async fn next(&mut self) -> Option<ObserverDiff> {
        loop {
            if self.receiver.changed().await.is_err() {
                return None;
            }
            if let Some(diff) = self.take() {
                return Some(diff);
            }
        }
    }

    /// The change of the result since the previous diff, if there is one; never waits.
    /// The engine updates observers before a write returns, so a test can write and
    /// then call this.
    pub fn try_next(&mut self) -> Option<ObserverDiff> {
        self.take()
    }

    fn take(&mut self) -> Option<ObserverDiff> {
        let latest = Arc::clone(&self.receiver.borrow_and_update());
        if latest.seq == self.delivered.seq || latest.rows == self.delivered.rows {
            return None;
        }
        let diff = diff(&self.delivered, &latest);
        self.delivered = latest;
        Some(diff)
    }
}

fn diff(old: &Snapshot, new: &Snapshot) -> ObserverDiff {
    let mut out = ObserverDiff::default();
    if new.aggregate {
        out.aggregate = Some(new.rows.rows.first().cloned().unwrap_or(Value::Null));
        return out;
    }
    let before: HashMap<&DocId, &Value> = old.rows.ids.iter().zip(&old.rows.rows).collect();
    let after: HashMap<&DocId, &Value> = new.rows.ids.iter().zip(&new.rows.rows).collect();
    for (id, row) in new.rows.ids.iter().zip(&new.rows.rows) {
        match before.get(id) {
            None => out.inserted.push(id.to_json()),
            Some(old_row) if *old_row != row => out.updated.push(id.to_json()),
            Some(_) => continue,
        }
        out.documents.insert(id.to_string(), row.clone());
    }
    out.removed = old
        .rows
        .ids
        .iter()
        .filter(|id| !after.contains_key(id))
        .map(DocId::to_json)
        .collect();
    out
}
