//! Statement execution: reading candidates through a [`View`] (the store, plus the
//! uncommitted writes of the running transaction), shaping SELECT results, and turning
//! INSERT / UPDATE / DELETE into CRDT deltas in a [`Tx`].
//!
//! A [`Tx`] does for every document it writes what `Replica::write` does: the next dot
//! of this actor from the store's version vector, a clock tick, the write context raised
//! past everything in the document ([`WriteContext::for_document`]) and a delta
//! fragment. The transaction commits as one [`Delta`] from `{actor: first - 1}` to
//! `{actor: last}` (its dots are dense) holding, per document, the merge of its
//! fragments, by one [`Store::apply`]. That stores what one single-write delta per
//! write, applied in order, would: merge is associative and commutative, and the
//! version vector covers `first - 1` for all of them or for none.
//!
//! An INSERT of a document that neither the store nor the transaction holds takes a
//! fast path: the document is encoded straight from its JSON (`codec::InsertEntries`,
//! the codec's insert form, which decodes to `DocState::insert_delta`'s state) and travels to the store
//! as a [`NewDoc`], which stores it without building a [`DocState`]. The existence read
//! is skipped only for ids the engine generates (fresh UUIDs), never for a given `_id`.
//! Both the read and the encoding are done before the statements run, for the whole
//! transaction at once ([`super::prepare`]). While a transaction inserts new ids in
//! increasing order, as a batch usually does, its new documents wait in a list in that
//! order rather than in the overlay of pending documents, and go to the store as they
//! are; whatever reads the transaction's documents, or writes one out of order, moves
//! them into the overlay first.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::{Bound, ControlFlow};

use indexmap::IndexMap;
use serde_json::Value;
use trellis_common::clock::{Clock, Hlc};
use trellis_common::codec::{InsertEntries, StampedInsert, decode_doc};
use trellis_common::crdt::{self, Crdt, DocState, Dot, JsonError, WriteContext};
use trellis_common::delta::{Delta, DocChange};
use trellis_common::ids::{ActorId, CollectionName, DocId};
use trellis_common::query::{
    Amount, Expr, Insert, Mutation, OnConflict, Params, Projection, Removal, Select, Statement,
    Update, eval, sort_documents,
};

use super::error::EngineError;
use super::plan::{Plan, plan};
use super::prepare::{PreparedInsert, prepare};
use super::probe::Probe;
use super::result::{Outcome, QueryResult};
use crate::store::{IndexDef, NewDoc, Store, StoreError, WriteBatch};

/// Documents a store scan reads per call.
const SCAN_PAGE: usize = 512;

/// Uncommitted document states, by collection then id.
pub(crate) type Overlay = BTreeMap<CollectionName, PendingDocs>;

/// The pending documents of one collection, in the order the transaction first wrote
/// them. Hashed rather than ordered: a transaction looks each id up on every write
/// (thousands per commit when a batch inserts), and only scans need id order.
pub(crate) type PendingDocs = IndexMap<DocId, Pending, foldhash::fast::RandomState>;

/// A document as the running transaction left it.
#[derive(Debug)]
pub(crate) enum Pending {
    /// Its state after the transaction's writes.
    State {
        state: DocState,
        /// The merge of the transaction's fragments for the document, when the store
        /// held it before the transaction. `None`: the store held nothing, so `state`
        /// is exactly that merge (kept once, not twice).
        fragments: Option<DocState>,
    },
    /// Created by one insert and not written since: kept as the store will hold it
    /// (`codec::encode_insert`), decoded only if the transaction reads it again.
    Inserted {
        encoded: StampedInsert,
        dot: Dot,
        hlc: Hlc,
    },
}

impl Pending {
    /// The state of document `id` of `c`.
    fn state(&self, c: &CollectionName, id: &DocId) -> Result<Cow<'_, DocState>, EngineError> {
        match self {
            Pending::State { state, .. } => Ok(Cow::Borrowed(state)),
            Pending::Inserted { encoded, .. } => decode_doc(encoded.as_bytes())
                .map(Cow::Owned)
                .map_err(|e| StoreError::corrupt_doc(c, id, e).into()),
        }
    }
}

/// The collection a statement names, validated for the store.
pub(crate) fn collection(name: &str) -> Result<CollectionName, EngineError> {
    CollectionName::new(name).map_err(EngineError::InvalidCollection)
}

/// Reads documents as a statement sees them: the store, with the running transaction's
/// writes on top.
pub(crate) struct View<'a> {
    pub(crate) store: &'a dyn Store,
    pub(crate) overlay: Option<&'a Overlay>,
}

impl View<'_> {
    /// The state of a document (tombstones included).
    pub(crate) fn get(
        &self,
        c: &CollectionName,
        id: &DocId,
    ) -> Result<Option<DocState>, EngineError> {
        if let Some(state) = self.pending_state(c, id)? {
            return Ok(Some(state));
        }
        Ok(self.store.get(c, id)?)
    }

    /// The state the running transaction gave a document, if it wrote it.
    fn pending_state(
        &self,
        c: &CollectionName,
        id: &DocId,
    ) -> Result<Option<DocState>, EngineError> {
        match self.overlay.and_then(|o| o.get(c)?.get(id)) {
            Some(pending) => Ok(Some(pending.state(c, id)?.into_owned())),
            None => Ok(None),
        }
    }

    fn pending(&self, c: &CollectionName) -> Option<&PendingDocs> {
        self.overlay?.get(c).filter(|m| !m.is_empty())
    }

    /// The pending documents of `c` in id order.
    fn pending_in_order(&self, c: &CollectionName) -> Vec<(&DocId, &Pending)> {
        let mut pending: Vec<_> = self.pending(c).into_iter().flatten().collect();
        pending.sort_unstable_by_key(|(id, _)| *id);
        pending
    }

    /// Calls `visit` with every stored document (tombstones included) that `plan` makes a
    /// candidate, in id order, until it breaks.
    pub(crate) fn for_each_candidate(
        &self,
        c: &CollectionName,
        plan: &Plan,
        mut visit: impl FnMut(&DocId, &DocState) -> ControlFlow<()>,
    ) -> Result<(), EngineError> {
        let ids: Vec<DocId> = match plan {
            Plan::FullScan { .. } => return self.scan(c, visit),
            Plan::IdLookup { doc_ids, .. } => doc_ids.clone(),
            Plan::IndexScan {
                index, predicate, ..
            } => {
                let mut ids = Vec::new();
                for (lower, upper) in predicate.ranges() {
                    ids.extend(
                        self.store
                            .index_scan(index, as_ref(&lower), as_ref(&upper))?,
                    );
                }
                // Documents this transaction changed may have left or entered the range:
                // they are all candidates (the WHERE is re-checked anyway).
                ids.extend(self.pending(c).into_iter().flat_map(|m| m.keys().cloned()));
                ids.sort();
                ids.dedup();
                ids
            }
        };
        for id in ids {
            if let Some(state) = self.get(c, &id)?
                && visit(&id, &state).is_break()
            {
                break;
            }
        }
        Ok(())
    }

    /// Every stored document of the collection in id order, the transaction's versions
    /// replacing the store's.
    fn scan(
        &self,
        c: &CollectionName,
        mut visit: impl FnMut(&DocId, &DocState) -> ControlFlow<()>,
    ) -> Result<(), EngineError> {
        let pending = self.pending_in_order(c);
        let mut pending_iter = pending.into_iter().peekable();
        let mut after: Option<DocId> = None;
        loop {
            let page = self.store.scan(c, after.as_ref(), SCAN_PAGE)?;
            let done = page.len() < SCAN_PAGE;
            for (id, state) in &page {
                while let Some((pid, pending)) = pending_iter.next_if(|(pid, _)| *pid < id) {
                    if visit(pid, &*pending.state(c, pid)?).is_break() {
                        return Ok(());
                    }
                }
                let state = match pending_iter.next_if(|(pid, _)| *pid == id) {
                    Some((_, pending)) => pending.state(c, id)?,
                    None => Cow::Borrowed(state),
                };
                if visit(id, &state).is_break() {
                    return Ok(());
                }
            }
            after = page.last().map(|(id, _)| id.clone());
            if done {
                break;
            }
        }
        for (pid, pending) in pending_iter {
            if visit(pid, &*pending.state(c, pid)?).is_break() {
                break;
            }
        }
        Ok(())
    }
}

fn as_ref(bound: &Bound<Value>) -> Bound<&Value> {
    match bound {
        Bound::Included(v) => Bound::Included(v),
        Bound::Excluded(v) => Bound::Excluded(v),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn amount(amount: Option<&Amount>) -> Option<usize> {
    match amount {
        Some(Amount::Value(n)) => Some(usize::try_from(*n).unwrap_or(usize::MAX)),
        // Binding turns parameters into values; an unbound one never reaches here.
        Some(Amount::Param(_)) | None => None,
    }
}

/// The rows of a SELECT, and the id of the document behind each (none for COUNT).
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Rows {
    pub(crate) ids: Vec<DocId>,
    pub(crate) rows: Vec<Value>,
}

/// The live documents that pass `filter` under `plan`, as JSON, in id order. With
/// `enough`, stops after that many.
pub(crate) fn matching(
    view: &View<'_>,
    c: &CollectionName,
    plan: &Plan,
    filter: Option<&Expr>,
    enough: Option<usize>,
) -> Result<Vec<(DocId, Value)>, EngineError> {
    let mut out = Vec::new();
    if enough == Some(0) {
        return Ok(out);
    }
    let probe = Probe::new(filter);
    view.for_each_candidate(c, plan, |id, state| {
        if let Some(doc) = probe.check(id, state) {
            out.push((id.clone(), doc));
            if enough.is_some_and(|n| out.len() >= n) {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    })?;
    Ok(out)
}

/// Filter already applied: COUNT, ORDER BY, OFFSET, LIMIT and projection of `select`
/// over its matches (kept, so the caller can shape them again).
pub(crate) fn shape<'d>(
    select: &Select,
    matches: impl IntoIterator<Item = (&'d DocId, &'d Value)>,
) -> Rows {
    let (ids, docs): (Vec<&DocId>, Vec<&Value>) = matches.into_iter().unzip();
    let mut out = Rows::default();
    for i in result_order(select, &docs) {
        if let Some(row) = docs.get(i).and_then(|doc| select.projection.apply(doc)) {
            out.ids.push(ids[i].clone());
            out.rows.push(row);
        }
    }
    if select.projection.is_count() {
        out.rows = count_rows(select, docs.len());
    }
    out
}

/// [`shape`], consuming the matches (no copy of whole documents for `SELECT *`).
pub(crate) fn shape_owned(select: &Select, matches: Vec<(DocId, Value)>) -> Rows {
    if select.projection.is_count() {
        return Rows {
            ids: Vec::new(),
            rows: count_rows(select, matches.len()),
        };
    }
    let order = {
        let docs: Vec<&Value> = matches.iter().map(|(_, doc)| doc).collect();
        result_order(select, &docs)
    };
    let mut slots: Vec<Option<(DocId, Value)>> = matches.into_iter().map(Some).collect();
    let mut out = Rows::default();
    for i in order {
        let Some((id, doc)) = slots.get_mut(i).and_then(Option::take) else {
            continue;
        };
        let row = match select.projection {
            Projection::All => Some(doc),
            _ => select.projection.apply(&doc),
        };
        if let Some(row) = row {
            out.ids.push(id);
            out.rows.push(row);
        }
    }
    out
}

/// The `{"count": n}` row of a `COUNT(*)`, after OFFSET and LIMIT.
fn count_rows(select: &Select, n: usize) -> Vec<Value> {
    let limit = amount(select.limit.as_ref()).unwrap_or(usize::MAX);
    let offset = amount(select.offset.as_ref()).unwrap_or(0);
    select
        .projection
        .count_row(n as u64)
        .into_iter()
        .skip(offset)
        .take(limit)
        .collect()
}

/// The positions in `docs` of the rows of the result, in order: sorted by ORDER BY
/// (stably, so ties keep id order), then OFFSET and LIMIT. Empty for `COUNT(*)`.
fn result_order(select: &Select, docs: &[&Value]) -> Vec<usize> {
    if select.projection.is_count() {
        return Vec::new();
    }
    let limit = amount(select.limit.as_ref()).unwrap_or(usize::MAX);
    let offset = amount(select.offset.as_ref()).unwrap_or(0);
    if select.order_by.is_empty() {
        return (0..docs.len()).skip(offset).take(limit).collect();
    }
    // Sort references, then find each one's position by address: the sort moves
    // references only, and every document has its own address.
    let mut sorted = docs.to_vec();
    sort_documents(&select.order_by, &mut sorted);
    let position: std::collections::HashMap<*const Value, usize> = docs
        .iter()
        .enumerate()
        .map(|(i, doc)| (*doc as *const Value, i))
        .collect();
    sorted
        .iter()
        .skip(offset)
        .take(limit)
        .filter_map(|doc| position.get(&(*doc as *const Value)).copied())
        .collect()
}

/// Runs a bound SELECT.
pub(crate) fn select(
    view: &View<'_>,
    select: &Select,
    indexes: &[IndexDef],
) -> Result<Rows, EngineError> {
    let c = collection(&select.collection)?;
    let plan = plan(&c, select.filter.as_ref(), indexes);
    // Without ORDER BY the rows come in id order, so LIMIT can stop the scan early.
    let enough = (select.order_by.is_empty() && !select.projection.is_count())
        .then(|| {
            amount(select.limit.as_ref())
                .map(|l| l.saturating_add(amount(select.offset.as_ref()).unwrap_or(0)))
        })
        .flatten();
    let found = matching(view, &c, &plan, select.filter.as_ref(), enough)?;
    Ok(shape_owned(select, found))
}

/// A running write transaction: its uncommitted document states and deltas.
pub(crate) struct Tx<'e> {
    store: &'e dyn Store,
    actor: ActorId,
    clock: &'e mut Clock,
    wall_ms: u64,
    /// The actor's sequence number when the transaction started.
    base_seq: u64,
    /// The last sequence number allocated to this actor.
    seq: u64,
    /// The store's generation when the transaction started (before any read), for
    /// [`WriteBatch::assume_absent`].
    generation: Option<u64>,
    overlay: Overlay,
    /// Documents this transaction inserted new that nothing has read since, in
    /// increasing (collection, id) order and none of them in `overlay`: a batch that
    /// inserts new ids in order (the usual batch) keeps its documents here, as the store
    /// takes them, and never hashes them into the overlay. Moved into the overlay before
    /// anything reads the transaction's documents ([`Tx::view`]).
    fresh: Vec<NewDoc>,
    pub(crate) indexes: Vec<IndexDef>,
    /// How many documents the transaction is likely to write: the room a collection's
    /// pending documents start with, so a large batch does not grow them step by step.
    expected_writes: usize,
}

impl<'e> Tx<'e> {
    pub(crate) fn new(
        store: &'e dyn Store,
        actor: ActorId,
        clock: &'e mut Clock,
        wall_ms: u64,
        expected_writes: usize,
    ) -> Self {
        let generation = store.generation();
        let seq = store.version().get(actor);
        Self {
            store,
            actor,
            clock,
            wall_ms,
            base_seq: seq,
            seq,
            generation,
            overlay: Overlay::new(),
            fresh: Vec::new(),
            indexes: store.indexes(),
            expected_writes,
        }
    }

    /// Reads as the transaction sees the store.
    pub(crate) fn view(&mut self) -> View<'_> {
        self.settle();
        self.overlay_view()
    }

    /// The store and `overlay`, without `fresh`: for reading a document that `fresh`
    /// cannot hold.
    fn overlay_view(&self) -> View<'_> {
        View {
            store: self.store,
            overlay: Some(&self.overlay),
        }
    }

    /// Moves the `fresh` documents into the overlay, for a read or a write out of order.
    fn settle(&mut self) {
        for new in std::mem::take(&mut self.fresh) {
            let NewDoc {
                collection,
                id,
                encoded,
                dot,
                hlc,
            } = new;
            let pending = Pending::Inserted { encoded, dot, hlc };
            self.overlay_of(&collection).insert(id, pending);
        }
    }

    /// Whether document `id` of `c` comes after every `fresh` document (so it is none
    /// of them, and may join them).
    fn follows_fresh(&self, c: &CollectionName, id: &DocId) -> bool {
        self.fresh
            .last()
            .is_none_or(|last| (&last.collection, &last.id) < (c, id))
    }

    /// Writes one document: `make` turns its current state and the write context into
    /// the delta fragment, exactly as `Replica::write` does.
    fn write(
        &mut self,
        c: &CollectionName,
        id: &DocId,
        current: DocState,
        make: impl FnOnce(&DocState, WriteContext) -> Result<DocState, JsonError>,
    ) -> Result<(), EngineError> {
        let seq = self.seq + 1;
        let dot = Dot {
            actor: self.actor,
            seq,
        };
        let now = self.clock.tick(self.wall_ms);
        let fragment =
            make(&current, WriteContext::for_document(&current, now, dot)).map_err(|source| {
                EngineError::Document {
                    collection: c.clone(),
                    id: id.clone(),
                    source,
                }
            })?;
        let docs = self.overlay_of(c);
        match docs.get_mut(id) {
            // Written before in this transaction: `current` is its pending state.
            Some(Pending::State { state, fragments }) => {
                if let Some(fragments) = fragments {
                    fragments.merge(&fragment);
                }
                state.merge(&fragment);
            }
            // Inserted before in this transaction, new to the store: `current` is its
            // state, and the merge of the transaction's fragments.
            Some(pending @ Pending::Inserted { .. }) => {
                let mut state = current;
                state.merge(&fragment);
                *pending = Pending::State {
                    state,
                    fragments: None,
                };
            }
            // The store held nothing (no write leaves an empty state): the fragment
            // is the document.
            None if current.is_empty() => {
                let pending = Pending::State {
                    state: fragment,
                    fragments: None,
                };
                docs.insert(id.clone(), pending);
            }
            None => {
                let mut state = current;
                state.merge(&fragment);
                let pending = Pending::State {
                    state,
                    fragments: Some(fragment),
                };
                docs.insert(id.clone(), pending);
            }
        }
        self.seq = seq;
        Ok(())
    }

    /// Inserts a document that neither the store nor this transaction holds: as
    /// [`Tx::write`] with `DocState::insert_delta`, but kept in its stored encoding,
    /// made straight from the JSON (the fast path of inserts), and among the `fresh`
    /// documents when its id comes after theirs.
    /// `entries` are `body`'s ([`InsertEntries::encode`]).
    fn insert_new(
        &mut self,
        c: &CollectionName,
        id: DocId,
        body: &Value,
        entries: Option<InsertEntries>,
    ) -> Result<(), EngineError> {
        let seq = self.seq + 1;
        let dot = Dot {
            actor: self.actor,
            seq,
        };
        let ctx = WriteContext::for_document(DocState::empty(), self.clock.tick(self.wall_ms), dot);
        let hlc = ctx.stamp.hlc;
        match entries {
            Some(entries) => {
                let encoded = entries.stamp(ctx);
                // Only while the overlay holds no document of `c` (so not this one):
                // once it does, new ones join them, or a batch out of order would
                // move each document twice.
                if self.follows_fresh(c, &id) && self.overlay.get(c).is_none_or(|d| d.is_empty()) {
                    let new = NewDoc {
                        collection: c.clone(),
                        id,
                        encoded,
                        dot,
                        hlc,
                    };
                    // Room for the whole batch at its first insert, not in every
                    // transaction (most write one document, or update).
                    if self.fresh.is_empty() {
                        self.fresh.reserve(self.expected_writes);
                    }
                    self.fresh.push(new);
                } else {
                    let pending = Pending::Inserted { encoded, dot, hlc };
                    self.overlay_of(c).insert(id, pending);
                }
            }
            // Not an object, or nested too deep: building the state says which.
            None => {
                let state =
                    DocState::insert_delta(ctx, body).map_err(|source| EngineError::Document {
                        collection: c.clone(),
                        id: id.clone(),
                        source,
                    })?;
                let pending = Pending::State {
                    state,
                    fragments: None,
                };
                self.overlay_of(c).insert(id, pending);
            }
        }
        self.seq = seq;
        Ok(())
    }

    /// The pending documents of collection `c`.
    fn overlay_of(&mut self, c: &CollectionName) -> &mut PendingDocs {
        if !self.overlay.contains_key(c) {
            let docs = PendingDocs::with_capacity_and_hasher(
                self.expected_writes,
                foldhash::fast::RandomState::default(),
            );
            self.overlay.insert(c.clone(), docs);
        }
        self.overlay
            .get_mut(c)
            .expect("the collection's overlay was just created")
    }

    /// The transaction's writes as one store batch: one delta from `{actor: first - 1}`
    /// to `{actor: last}` with one change per document written, in (collection, id)
    /// order. Empty when nothing was written.
    pub(crate) fn into_batch(self) -> WriteBatch {
        let mut batch = WriteBatch::new();
        if self.seq == self.base_seq {
            return batch;
        }
        let mut absent = Vec::new();
        let mut changes = Vec::new();
        batch.reserve_new(
            self.fresh.len() + self.overlay.values().map(PendingDocs::len).sum::<usize>(),
        );
        // Already in order, and in none of the overlay's.
        for new in self.fresh {
            batch.push_new(new);
        }
        for (collection, docs) in self.overlay {
            let mut docs: Vec<(DocId, Pending)> = docs.into_iter().collect();
            // Usually already in order: batches tend to insert ids in order.
            docs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            for (id, pending) in docs {
                match pending {
                    Pending::State { state, fragments } => {
                        absent.push(fragments.is_none());
                        changes.push(DocChange {
                            collection: collection.clone(),
                            id,
                            state: fragments.unwrap_or(state),
                        });
                    }
                    Pending::Inserted { encoded, dot, hlc } => batch.push_new(NewDoc {
                        collection: collection.clone(),
                        id,
                        encoded,
                        dot,
                        hlc,
                    }),
                }
            }
        }
        batch.push(Delta {
            since: [(self.actor, self.base_seq)].into_iter().collect(),
            until: [(self.actor, self.seq)].into_iter().collect(),
            changes,
        });
        // Read and committed under the engine's writer lock: the store trusts these
        // only if nothing else committed since the transaction started.
        if let Some(generation) = self.generation {
            batch.assume_absent(generation, absent);
        }
        batch
    }

    /// Runs an INSERT, binding its documents from `params` as it goes: a document that
    /// is a bare `:param` is read in place rather than copied into a bound statement.
    /// `validated` is the statement's collection, if
    /// [`with_prepared_inserts`](super::prepare::with_prepared_inserts) validated it;
    /// `prepared` yields what it did for each of the statement's documents in turn
    /// (`None`, or nothing at all, for a document it left to this). Errors are those of
    /// [`Statement::bind`](trellis_common::query::Statement::bind).
    pub(crate) fn insert<'p>(
        &mut self,
        insert: &Insert,
        params: &'p Params,
        validated: Option<&CollectionName>,
        prepared: &mut impl Iterator<Item = Option<PreparedInsert<'p>>>,
    ) -> Result<QueryResult, EngineError> {
        let named;
        let c = match validated {
            Some(c) => c,
            None => {
                named = collection(&insert.collection)?;
                &named
            }
        };
        let mut ids = Vec::with_capacity(insert.documents.len());
        for (i, doc) in insert.documents.iter().enumerate() {
            let number = i + 1;
            let bound;
            let PreparedInsert {
                body,
                id,
                id_json,
                stored,
                entries,
            } = match prepared.next().flatten() {
                Some(prepared) => prepared,
                None => {
                    let body = match doc {
                        Expr::Param(name) => match params.get(name) {
                            Some(body @ Value::Object(_)) => body,
                            _ => return Err(insert_bind_error(insert, params, number)),
                        },
                        Expr::Literal(body @ Value::Object(_)) => body,
                        other => {
                            bound = other.bind(params)?;
                            match &bound {
                                Expr::Literal(body @ Value::Object(_)) => body,
                                _ => return Err(insert_bind_error(insert, params, number)),
                            }
                        }
                    };
                    prepare(self.store, c, body)
                }
            };
            let (id, current) = match id {
                Some(id) => {
                    let id = id.map_err(|source| EngineError::InvalidId { number, source })?;
                    // Inserting ids in order, the usual batch, keeps `fresh` as it is.
                    if !self.follows_fresh(c, &id) {
                        self.settle();
                    }
                    // What this transaction wrote, or else what the store holds.
                    let current = match self.overlay_view().pending_state(c, &id)? {
                        Some(state) => Some(state),
                        None => stored.map_err(|e| *e)?,
                    };
                    (id, current)
                }
                // A fresh random id is stored nowhere yet: nothing to read.
                None => (DocId::generate(), None),
            };
            let id_json = id_json.unwrap_or_else(|| id.to_json());
            let Some(current) = current.filter(|state| !state.is_empty()) else {
                ids.push(id_json);
                self.insert_new(c, id, body, entries)?;
                continue;
            };
            if current.is_live() {
                match insert.on_conflict {
                    OnConflict::Fail => {
                        return Err(EngineError::IdConflict {
                            collection: c.clone(),
                            id,
                        });
                    }
                    OnConflict::DoNothing => continue,
                    OnConflict::DoUpdate => {
                        let mutations: Vec<crdt::Mutation> = body
                            .as_object()
                            .into_iter()
                            .flatten()
                            .filter(|(k, _)| k.as_str() != "_id")
                            .map(|(k, v)| {
                                crdt::Mutation::Set(crdt::Path::new([k.as_str()]), v.clone())
                            })
                            .collect();
                        self.write(c, &id, current, |state, ctx| {
                            state.update_delta(ctx, &mutations)
                        })?;
                    }
                }
            } else {
                self.write(c, &id, current, |_, ctx| DocState::insert_delta(ctx, body))?;
            }
            ids.push(id_json);
        }
        Ok(QueryResult::new(Outcome::Mutated { ids }))
    }

    /// The live documents of `c` that pass `filter`, as this transaction sees them.
    fn targets(
        &mut self,
        c: &CollectionName,
        filter: Option<&Expr>,
    ) -> Result<Vec<(DocId, Value)>, EngineError> {
        let plan = plan(c, filter, &self.indexes);
        matching(&self.view(), c, &plan, filter, None)
    }

    pub(crate) fn update(&mut self, update: &Update) -> Result<QueryResult, EngineError> {
        let c = collection(&update.collection)?;
        let targets = self.targets(&c, update.filter.as_ref())?;
        let mut ids = Vec::with_capacity(targets.len());
        for (id, doc) in targets {
            let mutations = update
                .mutations
                .iter()
                .map(|m| crdt_mutation(m, &doc, &id))
                .collect::<Result<Vec<_>, _>>()?;
            let current = self.view().get(&c, &id)?.unwrap_or_default();
            self.write(&c, &id, current, |state, ctx| {
                state.update_delta(ctx, &mutations)
            })?;
            ids.push(id.to_json());
        }
        Ok(QueryResult::new(Outcome::Mutated { ids }))
    }

    pub(crate) fn delete(&mut self, removal: &Removal) -> Result<QueryResult, EngineError> {
        let c = collection(&removal.collection)?;
        let targets = self.targets(&c, removal.filter.as_ref())?;
        let mut ids = Vec::with_capacity(targets.len());
        for (id, _) in targets {
            let current = self.view().get(&c, &id)?.unwrap_or_default();
            self.write(&c, &id, current, |_, ctx| Ok(DocState::delete_delta(ctx)))?;
            ids.push(id.to_json());
        }
        Ok(QueryResult::new(Outcome::Mutated { ids }))
    }

    pub(crate) fn select(&mut self, s: &Select) -> Result<QueryResult, EngineError> {
        self.settle();
        let rows = select(&self.overlay_view(), s, &self.indexes)?;
        Ok(QueryResult::new(Outcome::Documents {
            documents: rows.rows,
        }))
    }

    pub(crate) fn explain(&self, s: &Select) -> Result<QueryResult, EngineError> {
        let c = collection(&s.collection)?;
        Ok(QueryResult::new(Outcome::Plan {
            plan: Box::new(plan(&c, s.filter.as_ref(), &self.indexes)),
        }))
    }
}

/// The error binding `insert` gives (its document `number` is not an object).
fn insert_bind_error(insert: &Insert, params: &Params, number: usize) -> EngineError {
    match Statement::Insert(insert.clone()).bind(params) {
        Err(e) => e.into(),
        // Not reached: binding refuses what the caller refused. Say so plainly anyway.
        Ok(_) => EngineError::Body {
            number,
            source: JsonError::NotAnObject("not an object"),
        },
    }
}

/// An UPDATE mutation for one document: its value expression evaluated on the document
/// (so `SET b = a + 1` reads this document's `a`). A SET whose value is MISSING removes
/// the field, as assigning MISSING does in SQL++.
fn crdt_mutation(m: &Mutation, doc: &Value, id: &DocId) -> Result<crdt::Mutation, EngineError> {
    let number = |expr: &Expr, what: &str| -> Result<f64, EngineError> {
        let datum = eval(expr, doc);
        match datum.as_value() {
            Some(Value::Number(n)) => n
                .as_f64()
                .ok_or_else(|| wrong(what, m, id, "an unrepresentable number".to_owned())),
            Some(other) => Err(wrong(what, m, id, describe(other))),
            None => Err(wrong(what, m, id, "MISSING".to_owned())),
        }
    };
    Ok(match m {
        Mutation::Set(path, expr) => match eval(expr, doc).into_value() {
            Some(value) => crdt::Mutation::Set(path.clone(), value),
            None => crdt::Mutation::Unset(path.clone()),
        },
        Mutation::Unset(path) => crdt::Mutation::Unset(path.clone()),
        Mutation::Increment(path, by) => {
            crdt::Mutation::Increment(path.clone(), number(by, "INCREMENT BY")?)
        }
        Mutation::Restart(path, to) => {
            crdt::Mutation::Restart(path.clone(), number(to, "RESTART WITH")?)
        }
    })
}

fn wrong(what: &str, m: &Mutation, id: &DocId, found: String) -> EngineError {
    EngineError::WrongType {
        context: format!("APPLY {} {what} (document {id})", m.path()),
        expected: "a number",
        found,
    }
}

/// A short description of a value for error messages.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) if s.chars().count() > 40 => {
            format!("string '{}...'", s.chars().take(40).collect::<String>())
        }
        Value::String(s) => format!("string '{s}'"),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}
