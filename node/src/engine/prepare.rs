//! The part of a transaction's inserts that needs nothing from the transaction itself:
//! validating each given `_id`, reading what the store holds under it (64 ids at a
//! time, with [`Store::get_many`]), and encoding the document's entries from its JSON.
//! That is about half the work of a large batch of inserts, so helper threads do it
//! ahead of the transaction's statements when there are enough documents, while the
//! statements run in order on the transaction's own thread
//! ([`Tx::insert`](super::exec::Tx::insert)), which stamps each document and decides its
//! conflicts exactly as it would have without the preparation.
//!
//! The store cannot change in between: the transaction holds the engine's writer lock,
//! and it reads the store generation before anything is prepared.

use std::num::NonZeroUsize;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

use parking_lot::Mutex;
use serde_json::Value;
use trellis_common::codec::InsertEntries;
use trellis_common::crdt::DocState;
use trellis_common::ids::{CollectionName, DocId, IdError, id_field};
use trellis_common::query::{Expr, Params, Statement};

use crate::store::{Store, StoreError};

/// Documents worth a thread of their own: preparing one takes about a microsecond,
/// waking a helper some tens.
const DOCS_PER_THREAD: usize = 128;
/// Documents of a transaction worth sharing out among threads.
pub(crate) const MANY_DOCUMENTS: usize = 2 * DOCS_PER_THREAD;
/// The most threads one transaction prepares on.
const MAX_THREADS: usize = 4;
/// Documents whose ids are read from the store together ([`Store::get_many`]), and
/// prepared as one block by one thread.
const READ_TOGETHER: usize = 64;

/// A document of an INSERT, prepared.
#[derive(Debug)]
pub(crate) struct PreparedInsert<'p> {
    /// The document, bound (an object).
    pub(crate) body: &'p Value,
    /// Its `_id`, validated; `None` when it gives none.
    pub(crate) id: Option<Result<DocId, IdError>>,
    /// That id as JSON, as the statement's result lists it (when it is valid).
    pub(crate) id_json: Option<Value>,
    /// What the store held under that id when the transaction started (`Ok(None)`
    /// when there is no valid id to read).
    /// The error is boxed: it is rare, and this is moved several times per document.
    pub(crate) stored: Result<Option<DocState>, Box<StoreError>>,
    /// Its entries, encoded; `None` when they cannot be (building the state says why).
    pub(crate) entries: Option<InsertEntries>,
}

/// The INSERT statements of a transaction, as they are prepared: for each statement
/// its collection validated (`None` when the name is invalid, the statement's error to
/// report, or for other statements), and for each document of the INSERTs in turn its
/// preparation (`None`: a document the statement binds itself, such as an expression
/// or a parameter that is not an object). [`Tx::insert`](super::exec::Tx::insert)
/// takes an INSERT's documents from the front, and the transaction each statement's
/// collection.
pub(crate) struct PreparedInserts<'a, 'p> {
    pub(crate) collections: std::slice::Iter<'a, Option<CollectionName>>,
    pub(crate) documents: Documents<'a, 'p>,
}

/// A document to prepare: its collection, and the expression the INSERT gives it as.
type Job<'c, 'p> = Option<(&'c CollectionName, &'p Expr)>;

/// Runs `run` on the INSERT documents of `statements`, prepared as it takes them.
///
/// With many documents, helper threads prepare blocks of them ahead of `run`. Whenever
/// the block `run` needs next is not ready, its thread prepares the next block nobody
/// has started rather than wait: a helper that wakes late (waking an idle core takes
/// about a tenth of a large batch's preparation) then simply prepares fewer blocks, and
/// the statements run alongside the helpers instead of after them. A statement that
/// fails stops the preparation of what is left.
pub(crate) fn with_prepared_inserts<'p, R>(
    store: &dyn Store,
    statements: &'p [Statement],
    params: &'p Params,
    run: impl FnOnce(&mut PreparedInserts<'_, 'p>) -> R,
) -> R {
    let collections = validated_collections(statements);
    let jobs: Vec<Job<'_, 'p>> = statements
        .iter()
        .zip(&collections)
        .filter_map(|(statement, collection)| match statement {
            Statement::Insert(insert) => Some((insert, collection)),
            _ => None,
        })
        .flat_map(|(insert, collection)| {
            insert
                .documents
                .iter()
                .map(move |doc| collection.as_ref().map(|c| (c, doc)))
        })
        .collect();
    let blocks = Blocks::new(store, params, &jobs);
    let mut prepared = PreparedInserts {
        collections: collections.iter(),
        documents: Documents {
            blocks: &blocks,
            current: Vec::new().into_iter(),
            next_block: 0,
        },
    };
    let helper_count = if jobs.len() < MANY_DOCUMENTS {
        0
    } else {
        available_threads()
            .min(MAX_THREADS)
            .min(jobs.len() / DOCS_PER_THREAD)
            - 1
    };
    let pool = if helper_count > 0 { helpers() } else { None };
    match pool {
        Some(pool) => pool.in_place_scope(|scope| {
            for _ in 0..helper_count {
                scope.spawn(|_| blocks.prepare_ahead());
            }
            let result = run(&mut prepared);
            blocks.stop();
            result
        }),
        None => run(&mut prepared),
    }
}

/// Each statement's collection, validated if it is an INSERT's.
fn validated_collections(statements: &[Statement]) -> Vec<Option<CollectionName>> {
    let mut collections: Vec<Option<CollectionName>> = Vec::with_capacity(statements.len());
    let mut last: Option<CollectionName> = None;
    for statement in statements {
        let Statement::Insert(insert) = statement else {
            collections.push(None);
            continue;
        };
        // Validated once for a run of statements naming it (a batch names one in all).
        let collection = match last.take() {
            Some(c) if c.as_str() == insert.collection => Some(c),
            _ => CollectionName::new(&insert.collection).ok(),
        };
        last.clone_from(&collection);
        collections.push(collection);
    }
    collections
}

/// The documents to prepare, in blocks of [`READ_TOGETHER`] that threads claim in
/// order, each the next one nobody has claimed.
struct Blocks<'j, 'p> {
    store: &'j dyn Store,
    params: &'p Params,
    jobs: &'j [Job<'j, 'p>],
    /// Each block's documents once prepared, until [`Documents`] takes them.
    prepared: Vec<Mutex<Option<Vec<Option<PreparedInsert<'p>>>>>>,
    /// The next block nobody has claimed (past the last: none is left).
    next: AtomicUsize,
    /// Whether a helper panicked, leaving the block it claimed unprepared.
    helper_panicked: AtomicBool,
}

impl<'j, 'p> Blocks<'j, 'p> {
    fn new(store: &'j dyn Store, params: &'p Params, jobs: &'j [Job<'j, 'p>]) -> Self {
        Self {
            store,
            params,
            jobs,
            prepared: jobs
                .chunks(READ_TOGETHER)
                .map(|_| Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
            helper_panicked: AtomicBool::new(false),
        }
    }

    /// Claims the next block nobody has claimed and prepares it; `false` when none is
    /// left.
    fn prepare_next(&self) -> bool {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let Some(slot) = self.prepared.get(i) else {
            return false;
        };
        let start = i * READ_TOGETHER;
        let jobs = &self.jobs[start..self.jobs.len().min(start + READ_TOGETHER)];
        let prepared = prepare_jobs(self.store, self.params, jobs);
        *slot.lock() = Some(prepared);
        true
    }

    /// A helper's work: blocks until none is left.
    fn prepare_ahead(&self) {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| while self.prepare_next() {})) {
            self.helper_panicked.store(true, Ordering::Relaxed);
            resume_unwind(panic);
        }
    }

    /// Block `i`'s documents, prepared: while they are not, this thread prepares the
    /// next block nobody has claimed, or else (a helper is finishing block `i`, at most
    /// a block's work away) yields.
    fn take(&self, i: usize) -> Vec<Option<PreparedInsert<'p>>> {
        loop {
            if let Some(docs) = self.prepared[i].lock().take() {
                return docs;
            }
            if !self.prepare_next() {
                assert!(
                    !self.helper_panicked.load(Ordering::Relaxed),
                    "a thread preparing the transaction's inserts panicked"
                );
                thread::yield_now();
            }
        }
    }

    /// Leaves the blocks nobody has claimed unprepared.
    fn stop(&self) {
        self.next.store(self.prepared.len(), Ordering::Relaxed);
    }
}

/// The documents of a transaction's INSERTs in order, each prepared.
pub(crate) struct Documents<'b, 'p> {
    blocks: &'b Blocks<'b, 'p>,
    /// What is left of the block being handed out.
    current: std::vec::IntoIter<Option<PreparedInsert<'p>>>,
    /// The block to take next.
    next_block: usize,
}

impl<'p> Iterator for Documents<'_, 'p> {
    type Item = Option<PreparedInsert<'p>>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(doc) = self.current.next() {
                return Some(doc);
            }
            if self.next_block == self.blocks.prepared.len() {
                return None;
            }
            self.current = self.blocks.take(self.next_block).into_iter();
            self.next_block += 1;
        }
    }
}

/// The threads that help transactions prepare, one fewer than the threads a transaction
/// prepares on at most; `None` on a single core, or if the system refuses threads (the
/// transaction's own thread then prepares everything). Kept alive for the process: a
/// thread started per transaction began late, and its exit returned the allocator's
/// memory to the system (a third of its time, perf), only for the next batch to fault
/// it back in.
fn helpers() -> Option<&'static rayon_core::ThreadPool> {
    static HELPERS: OnceLock<Option<rayon_core::ThreadPool>> = OnceLock::new();
    HELPERS
        .get_or_init(|| {
            let threads = available_threads().min(MAX_THREADS) - 1;
            if threads == 0 {
                return None;
            }
            rayon_core::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|_| "trellis-prepare".into())
                .build()
                .ok()
        })
        .as_ref()
}

/// Drops `value` on a helper thread when there is one: freeing a large transaction's
/// documents took about a twentieth of its committing thread's time (perf).
pub(crate) fn drop_later<T: Send + 'static>(value: T) {
    match helpers() {
        Some(pool) => pool.spawn(move || drop(value)),
        None => drop(value),
    }
}

/// The threads this process may run at once.
fn available_threads() -> usize {
    // Asked once: the answer reads the process's CPU quota from files.
    static AVAILABLE: OnceLock<usize> = OnceLock::new();
    *AVAILABLE.get_or_init(|| thread::available_parallelism().map_or(1, NonZeroUsize::get))
}

/// Prepares a block of jobs (at most [`READ_TOGETHER`]), their ids read together.
/// Never inlined: a profiler counts it by name (`trellis-bench store-inserts`).
#[inline(never)]
fn prepare_jobs<'p>(
    store: &dyn Store,
    params: &'p Params,
    jobs: &[Job<'_, 'p>],
) -> Vec<Option<PreparedInsert<'p>>> {
    let bodies: Vec<_> = jobs
        .iter()
        .map(|job| {
            let (collection, doc) = (*job)?;
            let body = match doc {
                Expr::Param(name) => params.get(name)?,
                Expr::Literal(body) => body,
                _ => return None,
            };
            body.is_object().then_some((collection, body))
        })
        .collect();
    prepare_block(store, &bodies)
}

/// Prepares a block of documents (`None` for a job to leave unprepared): their ids
/// read together, collection by collection (a batch names one).
fn prepare_block<'p>(
    store: &dyn Store,
    jobs: &[Option<(&CollectionName, &'p Value)>],
) -> Vec<Option<PreparedInsert<'p>>> {
    let ids: Vec<Option<Result<DocId, IdError>>> = jobs
        .iter()
        .map(|job| {
            let (_, body) = job.as_ref()?;
            id_field(body).map(DocId::from_json)
        })
        .collect();
    let mut to_read: Vec<(usize, &CollectionName, &DocId)> = jobs
        .iter()
        .zip(&ids)
        .enumerate()
        .filter_map(|(i, (job, id))| match (job, id) {
            (Some((collection, _)), Some(Ok(id))) => Some((i, *collection, id)),
            _ => None,
        })
        .collect();
    to_read.sort_by(|a, b| a.1.cmp(b.1));
    let mut stored: Vec<Result<Option<DocState>, Box<StoreError>>> =
        jobs.iter().map(|_| Ok(None)).collect();
    for group in to_read.chunk_by(|a, b| a.1 == b.1) {
        let group_ids: Vec<&DocId> = group.iter().map(|(_, _, id)| *id).collect();
        let found = store.get_many(group[0].1, &group_ids);
        for ((i, _, _), found) in group.iter().zip(found) {
            stored[*i] = found.map_err(Box::new);
        }
    }
    jobs.iter()
        .zip(ids)
        .zip(stored)
        .map(|((job, id), stored)| {
            let (_, body) = job.as_ref()?;
            Some(PreparedInsert {
                body,
                id_json: id.as_ref().and_then(|id| Some(id.as_ref().ok()?.to_json())),
                id,
                stored,
                entries: InsertEntries::encode(body),
            })
        })
        .collect()
}

/// Prepares one document (an object) of an INSERT into `collection`.
pub(crate) fn prepare<'p>(
    store: &dyn Store,
    collection: &CollectionName,
    body: &'p Value,
) -> PreparedInsert<'p> {
    prepare_block(store, &[Some((collection, body))])
        .pop()
        .flatten()
        .expect("a block prepares each of its documents")
}
