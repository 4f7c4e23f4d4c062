//! The part of a transaction's inserts that needs nothing from the transaction itself:
//! validating each given `_id`, reading what the store holds under it (64 ids at a
//! time, with [`Store::get_many`]), and encoding the document's entries from its JSON.
//! That is about half the work of a large batch of inserts, so a transaction does it
//! for all its documents first, on several threads when there are enough, and then runs
//! its statements in order on one thread ([`Tx::insert`](super::exec::Tx::insert)),
//! which stamps each document and decides its conflicts exactly as it would have
//! without the preparation.
//!
//! The store cannot change in between: the transaction holds the engine's writer lock,
//! and it reads the store generation before anything is prepared.

use std::num::NonZeroUsize;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
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
/// Documents whose ids are read from the store together ([`Store::get_many`]).
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

/// The INSERT statements of a transaction, prepared: for each statement its collection
/// validated (`None` when the name is invalid, the statement's error to report, or for
/// other statements), and for each document of the INSERTs in turn its preparation
/// (`None`: a document the statement binds itself, such as an expression or a
/// parameter that is not an object). [`Tx::insert`](super::exec::Tx::insert) takes an
/// INSERT's documents from the front, and the transaction each statement's collection.
#[derive(Debug)]
pub(crate) struct PreparedInserts<'p> {
    pub(crate) collections: std::vec::IntoIter<Option<CollectionName>>,
    pub(crate) documents: std::vec::IntoIter<Option<PreparedInsert<'p>>>,
}

/// A document to prepare: its collection, and the expression the INSERT gives it as.
type Job<'c, 'p> = Option<(&'c CollectionName, &'p Expr)>;

/// Prepares the documents of the INSERT statements among `statements`.
pub(crate) fn prepare_inserts<'p>(
    store: &dyn Store,
    statements: &'p [Statement],
    params: &'p Params,
) -> PreparedInserts<'p> {
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
    let documents = prepare_all(store, params, &jobs);
    PreparedInserts {
        collections: collections.into_iter(),
        documents: documents.into_iter(),
    }
}

/// Prepares every job, in order, spread over threads when there are enough.
fn prepare_all<'p>(
    store: &dyn Store,
    params: &'p Params,
    jobs: &[Job<'_, 'p>],
) -> Vec<Option<PreparedInsert<'p>>> {
    // Filled in place: a thousand prepared documents are worth not copying from one
    // vector into another.
    let mut prepared: Vec<Option<PreparedInsert<'p>>> =
        std::iter::repeat_with(|| None).take(jobs.len()).collect();
    let threads = if jobs.len() < MANY_DOCUMENTS {
        1
    } else {
        available_threads()
            .min(MAX_THREADS)
            .min(jobs.len() / DOCS_PER_THREAD)
    };
    if threads <= 1 {
        prepare_some(store, params, jobs, &mut prepared);
    } else {
        prepare_on_threads(store, params, jobs, &mut prepared, threads);
    }
    prepared
}

/// Prepares `jobs` into `out` (as long) on `threads` threads, this one included.
///
/// The jobs are cut into blocks of [`READ_TOGETHER`] and each thread claims the next
/// block until none is left: a helper that wakes late (waking an idle core can take a
/// good part of a batch's time) then simply prepares fewer blocks.
fn prepare_on_threads<'p>(
    store: &dyn Store,
    params: &'p Params,
    jobs: &[Job<'_, 'p>],
    out: &mut [Option<PreparedInsert<'p>>],
    threads: usize,
) {
    // Locked once each, by the thread that claims it: never contended.
    let blocks: Vec<Mutex<_>> = jobs
        .chunks(READ_TOGETHER)
        .zip(out.chunks_mut(READ_TOGETHER))
        .map(Mutex::new)
        .collect();
    let next = AtomicUsize::new(0);
    let work = || {
        while let Some(block) = blocks.get(next.fetch_add(1, Ordering::Relaxed)) {
            let (jobs, out) = &mut *block.lock();
            prepare_some(store, params, jobs, out);
        }
    };
    match helpers() {
        Some(pool) => pool.in_place_scope(|scope| {
            for _ in 1..threads {
                scope.spawn(|_| work());
            }
            work();
        }),
        None => work(),
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

/// Prepares `jobs` into `out` (as long), in blocks, each block's ids read together.
fn prepare_some<'p>(
    store: &dyn Store,
    params: &'p Params,
    jobs: &[Job<'_, 'p>],
    out: &mut [Option<PreparedInsert<'p>>],
) {
    for (block, out) in jobs
        .chunks(READ_TOGETHER)
        .zip(out.chunks_mut(READ_TOGETHER))
    {
        let bodies: Vec<_> = block
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
        prepare_block(store, &bodies, out);
    }
}

/// Prepares a block of documents into `out` (as long): their ids read together,
/// collection by collection (a batch names one).
fn prepare_block<'p>(
    store: &dyn Store,
    jobs: &[Option<(&CollectionName, &'p Value)>],
    out: &mut [Option<PreparedInsert<'p>>],
) {
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
    for (((job, id), stored), out) in jobs.iter().zip(ids).zip(stored).zip(out) {
        let Some((_, body)) = job else { continue };
        *out = Some(PreparedInsert {
            body,
            id_json: id.as_ref().and_then(|id| Some(id.as_ref().ok()?.to_json())),
            id,
            stored,
            entries: InsertEntries::encode(body),
        });
    }
}

/// Prepares one document (an object) of an INSERT into `collection`.
pub(crate) fn prepare<'p>(
    store: &dyn Store,
    collection: &CollectionName,
    body: &'p Value,
) -> PreparedInsert<'p> {
    let mut out = [None];
    prepare_block(store, &[Some((collection, body))], &mut out);
    let [prepared] = out;
    prepared.expect("a block prepares each of its documents")
}
