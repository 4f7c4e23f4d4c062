//! The engine: runs the query language on the store. It plans and executes statements,
//! turns writes into CRDT deltas stamped with this node's actor and clock, commits each
//! transaction as one store batch, applies deltas received from peers through the same
//! path, and keeps observers (live queries) up to date.
//!
//! - [`plan`]: the planner (id lookups, index scans, full scans) and `EXPLAIN`'s [`Plan`].
//! - [`exec`]: reading through a transaction's uncommitted writes, SELECT shaping, and
//!   INSERT / UPDATE / DELETE as deltas.
//! - [`probe`]: checking a WHERE on the fields it reads, before materialising a
//!   document.
//! - [`observe`]: observers and their diffs.
//!
//! The API is synchronous and blocking (the store is): async callers use
//! `spawn_blocking`. [`Engine`] is `Send + Sync`; share it in an `Arc`.
//!
//! # One writer
//!
//! Every commit (local transaction, remote delta, EVICT, index change) runs under one
//! lock, the *writer*. It makes read-modify-write transactions serialisable, keeps this
//! actor's sequence numbers dense (the next dot is `version[actor] + 1`, read under the
//! lock), orders observer notifications by commit, and owns the hybrid clock. Plain
//! SELECTs do not take it: they read committed documents, each one consistent.

mod error;
mod exec;
mod observe;
mod plan;
mod prepare;
mod probe;
mod result;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::watch;
use trellis_common::clock::{Clock, DEFAULT_MAX_FORWARD_DRIFT_MS, Hlc, Observation};
use trellis_common::crdt::{DocState, VersionVector};
use trellis_common::delta::{Delta, DocChange};
use trellis_common::ids::{ActorId, CollectionName, DocId};
use trellis_common::query::{
    CreateIndex, DropIndex, Params, Removal, Select, Statement, parse, parse_script,
};
use trellis_common::sync::{Incarnation, Lsn, QueryId};

pub use error::EngineError;
pub use observe::{Observer, ObserverDiff};
pub use plan::{Plan, RangeBound, ScanPredicate};
pub use result::{Outcome, QueryResult};

use exec::{Tx, View, collection, matching};
use observe::{Changed, Registry};
use prepare::{MANY_DOCUMENTS, drop_later, with_prepared_inserts};

use crate::store::{
    Applied, AppliedDoc, IndexDef, ShadowsApplied, Store, StoreError, WARN_DOC_BYTES, WriteBatch,
};

/// Engine settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineOptions {
    /// How far ahead of our wall clock a peer's timestamp may be and still move our
    /// clock (see `trellis_common::clock`); further ahead, it is quarantined.
    pub max_forward_drift_ms: u64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_forward_drift_ms: DEFAULT_MAX_FORWARD_DRIFT_MS,
        }
    }
}

/// What [`Engine::apply_remote`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RemoteApplied {
    /// Documents whose stored state changed.
    pub changed: Vec<(CollectionName, DocId)>,
    /// Whether the version vector advanced to the delta's `until` (it does only when
    /// the store already covered its `since`).
    pub advanced: bool,
    /// Documents whose newest stamp was too far in the future to move our clock (the
    /// data is stored all the same).
    pub quarantined: usize,
}

/// The state only the writer touches.
struct Writer {
    clock: Clock,
    /// Commits so far in this process (orders observer snapshots).
    commits: u64,
    observers: Registry,
}

/// The query engine of a node. See the module documentation.
pub struct Engine {
    store: Arc<dyn Store>,
    actor: ActorId,
    options: EngineOptions,
    writer: Mutex<Writer>,
    /// The store's LSN after the latest commit (the mesh pushes changes when it moves).
    lsn: watch::Sender<Lsn>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("actor", &self.actor)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Milliseconds since the Unix epoch by the system clock.
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Engine {
    /// An engine writing as `actor` on `store`.
    ///
    /// The clock resumes from the greatest timestamp the store holds, so stamps never
    /// repeat across restarts, except that it is capped at our wall clock plus the
    /// allowed drift: a quarantined remote timestamp (from a peer whose clock is years
    /// ahead) must not drag our clock forward after a restart either.
    pub fn open(
        store: Arc<dyn Store>,
        actor: ActorId,
        options: EngineOptions,
    ) -> Result<Self, EngineError> {
        let ceiling = Hlc::new(wall_ms().saturating_add(options.max_forward_drift_ms), 0);
        let resume = store.max_hlc().min(ceiling);
        let clock = Clock::resume(resume, options.max_forward_drift_ms);
        let (lsn, _) = watch::channel(store.lsn());
        Ok(Self {
            store,
            actor,
            lsn,
            options,
            writer: Mutex::new(Writer {
                clock,
                commits: 0,
                observers: Registry::default(),
            }),
        })
    }

    /// This node's actor.
    pub fn actor(&self) -> ActorId {
        self.actor
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Every write the store holds (or has superseded).
    pub fn version(&self) -> VersionVector {
        self.store.version()
    }

    /// The last timestamp the clock issued or adopted.
    pub fn clock_last(&self) -> Hlc {
        self.writer.lock().clock.last()
    }

    /// Number of live observers.
    pub fn observer_count(&self) -> usize {
        self.writer.lock().observers.len()
    }

    /// A document as JSON, if it exists (not deleted, not evicted).
    pub fn get(&self, collection_name: &str, id: &DocId) -> Result<Option<Value>, EngineError> {
        let c = collection(collection_name)?;
        Ok(self.store.get(&c, id)?.and_then(|s| s.to_json(id)))
    }

    /// Parses and runs one statement (a write is its own transaction).
    pub fn execute(&self, statement: &str, params: &Params) -> Result<QueryResult, EngineError> {
        self.execute_statement(&parse(statement)?, params)
    }

    /// Runs one parsed statement: parse once, run many times with different
    /// parameters.
    pub fn execute_statement(
        &self,
        statement: &Statement,
        params: &Params,
    ) -> Result<QueryResult, EngineError> {
        if let Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) = statement {
            return self.write_one(statement, params);
        }
        match statement.bind(params)? {
            Statement::Select(select) => {
                let view = View {
                    store: &*self.store,
                    overlay: None,
                };
                let rows = exec::select(&view, &select, &self.store.indexes())?;
                Ok(QueryResult::new(Outcome::Documents {
                    documents: rows.rows,
                }))
            }
            Statement::Explain(select) => {
                let c = collection(&select.collection)?;
                let plan = plan::plan(&c, select.filter.as_ref(), &self.store.indexes());
                Ok(QueryResult::new(Outcome::Plan {
                    plan: Box::new(plan),
                }))
            }
            Statement::Evict(removal) => self.evict(&removal),
            Statement::CreateIndex(create) => self.create_index(&create),
            Statement::DropIndex(drop) => self.drop_index(&drop),
            // Handled above; a bound statement runs the same way.
            bound @ (Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_)) => {
                self.write_one(&bound, params)
            }
        }
    }

    /// An INSERT, UPDATE or DELETE as its own transaction.
    fn write_one(
        &self,
        statement: &Statement,
        params: &Params,
    ) -> Result<QueryResult, EngineError> {
        let mut results = self.transaction(std::slice::from_ref(statement), params)?;
        Ok(results
            .pop()
            .unwrap_or_else(|| QueryResult::new(Outcome::Mutated { ids: Vec::new() })))
    }

    /// Parses a script of `;`-separated statements and runs them as one transaction.
    /// See [`Engine::execute_statements`].
    pub fn execute_transaction(
        &self,
        script: &str,
        params: &Params,
    ) -> Result<Vec<QueryResult>, EngineError> {
        self.execute_statements(&parse_script(script)?, params)
    }

    /// Runs statements as one atomic transaction: they are committed together in one
    /// store batch, or not at all when any of them fails; each statement sees the
    /// effects of the ones before it. One result per statement.
    ///
    /// EVICT, CREATE INDEX and DROP INDEX are not transactional: they may only run on
    /// their own.
    pub fn execute_statements(
        &self,
        statements: &[Statement],
        params: &Params,
    ) -> Result<Vec<QueryResult>, EngineError> {
        match statements {
            [] => Err(EngineError::EmptyTransaction),
            [only] => Ok(vec![self.execute_statement(only, params)?]),
            many => {
                for statement in many {
                    let name = match statement {
                        Statement::Evict(_) => "EVICT",
                        Statement::CreateIndex(_) => "CREATE INDEX",
                        Statement::DropIndex(_) => "DROP INDEX",
                        _ => continue,
                    };
                    return Err(EngineError::NotTransactional { statement: name });
                }
                self.transaction(many, params)
            }
        }
    }

    /// Runs statements, binding each from `params`, in one write transaction and
    /// commits it.
    fn transaction(
        &self,
        statements: &[Statement],
        params: &Params,
    ) -> Result<Vec<QueryResult>, EngineError> {
        let wall = wall_ms();
        let mut writer = self.writer.lock();
        let writer = &mut *writer;
        let documents = statements
            .iter()
            .map(|s| match s {
                Statement::Insert(insert) => insert.documents.len(),
                _ => 1,
            })
            .sum();
        let mut tx = Tx::new(&*self.store, self.actor, &mut writer.clock, wall, documents);
        let mut results = with_prepared_inserts(&*self.store, statements, params, |prepared| {
            let mut results = Vec::with_capacity(statements.len());
            for statement in statements {
                let collection = prepared.collections.next().and_then(Option::as_ref);
                let result = match statement {
                    // Binds its documents in place (they can be large).
                    Statement::Insert(insert) => {
                        tx.insert(insert, params, collection, &mut prepared.documents)?
                    }
                    other => match other.bind(params)? {
                        Statement::Select(s) => tx.select(&s)?,
                        Statement::Explain(s) => tx.explain(&s)?,
                        Statement::Insert(i) => {
                            tx.insert(&i, params, None, &mut std::iter::empty())?
                        }
                        Statement::Update(u) => tx.update(&u)?,
                        Statement::Delete(r) => tx.delete(&r)?,
                        Statement::Evict(_)
                        | Statement::CreateIndex(_)
                        | Statement::DropIndex(_) => {
                            return Err(EngineError::NotTransactional {
                                statement: statement_name(other),
                            });
                        }
                    },
                };
                results.push(result);
            }
            Ok(results)
        })?;
        let mut batch = tx.into_batch();
        if batch.is_empty() {
            return Ok(results);
        }
        // Observers are the only readers of the documents `apply` lists.
        if writer.observers.len() == 0 {
            batch = batch.without_docs();
        }
        let applied = self.store.apply(&batch)?;
        // A large batch is freed on a helper thread, not before the caller hears back.
        if documents >= MANY_DOCUMENTS {
            drop_later(batch);
        }
        attach_warnings(&applied, statements, &mut results);
        self.committed(writer, &applied);
        Ok(results)
    }

    /// Tells observers and the LSN watchers about a commit.
    fn committed(&self, writer: &mut Writer, applied: &Applied) {
        Self::publish(writer, &applied.docs);
        self.advance_lsn(applied.lsn);
    }

    /// Tells whoever pushes changes to peers that the store reached `latest`.
    fn advance_lsn(&self, latest: Lsn) {
        self.lsn.send_if_modified(|lsn| {
            let moved = latest > *lsn;
            *lsn = latest.max(*lsn);
            moved
        });
    }

    /// The store's LSN after each commit, for whoever pushes changes to peers.
    pub fn watch_lsn(&self) -> watch::Receiver<Lsn> {
        self.lsn.subscribe()
    }

    /// Tells observers about a commit.
    fn publish(writer: &mut Writer, docs: &[AppliedDoc]) {
        writer.commits += 1;
        let changes: Vec<Changed<'_>> = docs
            .iter()
            .filter(|d| writer.observers.watches(&d.collection))
            .map(|d| Changed {
                collection: &d.collection,
                id: &d.id,
                after: d.after_json(),
            })
            .collect();
        if !changes.is_empty() {
            writer.observers.notify(writer.commits, &changes);
        }
    }

    /// Merges a delta received from a peer: the same store path as local writes; the
    /// clock observes its stamps (quarantining those too far ahead); observers are told
    /// exactly as for a local commit.
    pub fn apply_remote(&self, delta: &Delta) -> Result<RemoteApplied, EngineError> {
        let (result, _) = self.commit_received(WriteBatch::from(delta.clone()));
        let (applied, quarantined) = result?;
        Ok(RemoteApplied {
            changed: applied
                .docs
                .iter()
                .map(|d| (d.collection.clone(), d.id.clone()))
                .collect(),
            advanced: applied.all_advanced(),
            quarantined,
        })
    }

    /// Merges document fragments received by sync, and records the sync bookmarks they
    /// complete, in one commit (see `docs/sync.md`); otherwise as [`Engine::apply_remote`].
    /// Returns the documents whose stored state changed. The fragments are taken from
    /// `changes`; when the commit fails they are put back, so the caller can retry
    /// without having copied them.
    pub fn apply_sync(
        &self,
        changes: &mut Vec<DocChange>,
        bookmarks: &[(Incarnation, QueryId, Lsn)],
    ) -> Result<Vec<(CollectionName, DocId)>, EngineError> {
        // Fragments travel without version vectors: the store's vector (this actor's
        // own writes, and what old-style deltas claimed) is left as it is.
        let mut batch = WriteBatch::from(Delta {
            since: VersionVector::new(),
            until: VersionVector::new(),
            changes: std::mem::take(changes),
        });
        for (peer, query, lsn) in bookmarks {
            batch.set_bookmark(*peer, *query, *lsn);
        }
        match self.commit_received(batch) {
            (Ok((applied, _)), _) => Ok(applied
                .docs
                .iter()
                .map(|d| (d.collection.clone(), d.id.clone()))
                .collect()),
            (Err(e), batch) => {
                *changes = batch
                    .into_deltas()
                    .into_iter()
                    .flat_map(|d| d.changes)
                    .collect();
                Err(e.into())
            }
        }
    }

    /// Keeps fragments of documents this node does not hold as shadows (`store::shadow`,
    /// `docs/sync.md`): out of sight of queries and observers, relayed to peers. Any
    /// fragment whose document is held by now is committed as a document instead.
    pub fn apply_shadows(&self, fragments: &[DocChange]) -> Result<(), EngineError> {
        let ShadowsApplied {
            lsn: latest,
            mut held,
        } = {
            let _writer = self.writer.lock();
            self.store.apply_shadows(fragments)?
        };
        self.advance_lsn(latest);
        if !held.is_empty() {
            self.apply_sync(&mut held, &[])?;
        }
        Ok(())
    }

    /// Commits a batch received from peers under the writer lock: the same store path as
    /// local writes; the clock observes its stamps (quarantining those too far ahead);
    /// observers are told exactly as for a local commit. Answers the commit and how many
    /// documents were quarantined, and gives the batch back.
    fn commit_received(
        &self,
        mut batch: WriteBatch,
    ) -> (Result<(Applied, usize), StoreError>, WriteBatch) {
        let wall = wall_ms();
        let mut writer = self.writer.lock();
        if writer.observers.len() == 0 {
            batch = batch.without_states();
        }
        let result = self.store.apply(&batch).map(|applied| {
            let changes = batch.deltas().iter().flat_map(|d| &d.changes);
            let quarantined = Self::observe_stamps(&mut writer, changes, wall);
            self.committed(&mut writer, &applied);
            (applied, quarantined)
        });
        (result, batch)
    }

    /// Lets the clock observe the newest stamp of each received document; returns how
    /// many were quarantined (too far ahead).
    fn observe_stamps<'c>(
        writer: &mut Writer,
        changes: impl IntoIterator<Item = &'c DocChange>,
        wall: u64,
    ) -> usize {
        let mut quarantined = 0;
        for change in changes {
            let newest = change.state.max_hlc();
            if newest == Hlc::ZERO {
                continue;
            }
            if let Observation::Quarantined { ahead_ms } = writer.clock.observe(newest, wall) {
                quarantined += 1;
                tracing::warn!(
                    collection = %change.collection,
                    id = %change.id,
                    ahead_ms,
                    "a remote write is stamped too far in the future; stored, but our clock ignores it"
                );
            }
        }
        quarantined
    }

    /// Registers a live query: a SELECT (with `:name` parameters bound from `params`)
    /// whose result [`Observer`] keeps up to date after every commit.
    pub fn observe(&self, select: &str, params: &Params) -> Result<Observer, EngineError> {
        let select = match parse(select)?.bind(params)? {
            Statement::Select(select) => select,
            other => {
                return Err(EngineError::NotObservable {
                    statement: statement_name(&other),
                });
            }
        };
        let c = collection(&select.collection)?;
        let mut writer = self.writer.lock();
        let matches = self.all_matching(&c, &select)?;
        let commits = writer.commits;
        Ok(writer.observers.register(c, select, matches, commits))
    }

    fn all_matching(
        &self,
        c: &CollectionName,
        select: &Select,
    ) -> Result<BTreeMap<DocId, Value>, EngineError> {
        let view = View {
            store: &*self.store,
            overlay: None,
        };
        let plan = plan::plan(c, select.filter.as_ref(), &self.store.indexes());
        Ok(matching(&view, c, &plan, select.filter.as_ref(), None)?
            .into_iter()
            .collect())
    }

    fn evict(&self, removal: &Removal) -> Result<QueryResult, EngineError> {
        let c = collection(&removal.collection)?;
        let mut writer = self.writer.lock();
        let view = View {
            store: &*self.store,
            overlay: None,
        };
        let ids: Vec<DocId> = match &removal.filter {
            // Everything stored, tombstones included.
            None => {
                let mut ids = Vec::new();
                let full = plan::Plan::FullScan {
                    collection: c.to_string(),
                    reason: String::new(),
                };
                view.for_each_candidate(&c, &full, |id, _| {
                    ids.push(id.clone());
                    std::ops::ControlFlow::Continue(())
                })?;
                ids
            }
            Some(filter) => {
                let plan = plan::plan(&c, Some(filter), &self.store.indexes());
                matching(&view, &c, &plan, Some(filter), None)?
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect()
            }
        };
        if ids.is_empty() {
            return Ok(QueryResult::new(Outcome::Mutated { ids: Vec::new() }));
        }
        let removed = self.store.evict(&c, &ids)?;
        let docs: Vec<AppliedDoc> = removed
            .into_iter()
            .map(|(id, before)| AppliedDoc {
                collection: c.clone(),
                id,
                before: Some(before),
                after: DocState::new(),
            })
            .collect();
        Self::publish(&mut writer, &docs);
        Ok(QueryResult::new(Outcome::Mutated {
            ids: ids.iter().map(DocId::to_json).collect(),
        }))
    }

    fn create_index(&self, create: &CreateIndex) -> Result<QueryResult, EngineError> {
        let c = collection(&create.collection)?;
        let _writer = self.writer.lock();
        if let Some(existing) = self
            .store
            .indexes()
            .into_iter()
            .find(|d| d.name == create.name)
        {
            let same =
                existing.collection == c && existing.path.as_slice() == create.path.segments();
            if create.if_not_exists {
                let mut result = QueryResult::new(Outcome::Index {
                    name: create.name.clone(),
                    changed: false,
                });
                if !same {
                    result.warnings.push(format!(
                        "index '{}' already exists on '{}' ({}), with a different definition",
                        existing.name,
                        existing.collection,
                        trellis_common::crdt::Path::new(existing.path.iter().map(String::as_str)),
                    ));
                }
                return Ok(result);
            }
            return Err(EngineError::IndexExists {
                name: create.name.clone(),
                collection: existing.collection,
            });
        }
        let def = IndexDef::new(&create.name, c, create.path.segments().to_vec())?;
        self.store.create_index(&def)?;
        Ok(QueryResult::new(Outcome::Index {
            name: create.name.clone(),
            changed: true,
        }))
    }

    fn drop_index(&self, drop: &DropIndex) -> Result<QueryResult, EngineError> {
        let c = collection(&drop.collection)?;
        let _writer = self.writer.lock();
        let exists = self
            .store
            .indexes()
            .iter()
            .any(|d| d.name == drop.name && d.collection == c);
        if !exists {
            if drop.if_exists {
                return Ok(QueryResult::new(Outcome::Index {
                    name: drop.name.clone(),
                    changed: false,
                }));
            }
            return Err(EngineError::UnknownIndex {
                name: drop.name.clone(),
                collection: c,
            });
        }
        let changed = self.store.drop_index(&drop.name)?;
        Ok(QueryResult::new(Outcome::Index {
            name: drop.name.clone(),
            changed,
        }))
    }
}

fn statement_name(statement: &Statement) -> &'static str {
    match statement {
        Statement::Select(_) => "SELECT",
        Statement::Insert(_) => "INSERT",
        Statement::Update(_) => "UPDATE",
        Statement::Delete(_) => "DELETE",
        Statement::Evict(_) => "EVICT",
        Statement::CreateIndex(_) => "CREATE INDEX",
        Statement::DropIndex(_) => "DROP INDEX",
        Statement::Explain(_) => "EXPLAIN",
    }
}

/// Puts each size warning of a commit on the result of the statements that wrote the
/// document.
fn attach_warnings(applied: &Applied, statements: &[Statement], results: &mut [QueryResult]) {
    for warning in &applied.warnings {
        let id = warning.id.to_json();
        let message = format!(
            "document {} in '{}' is {} bytes stored, above the {} KiB advised (large documents sync slowly; 5 MiB is the limit)",
            warning.id,
            warning.collection,
            warning.size,
            WARN_DOC_BYTES / 1024
        );
        let mut placed = false;
        for (statement, result) in statements.iter().zip(results.iter_mut()) {
            if statement.collection() == warning.collection.as_str() && result.ids().contains(&id) {
                result.warnings.push(message.clone());
                placed = true;
            }
        }
        if !placed && let Some(last) = results.last_mut() {
            last.warnings.push(message);
        }
    }
}
