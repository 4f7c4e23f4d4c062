//! `store`: the node's write and read paths on RocksDB against raw RocksDB in the same
//! run.
//!
//! 1. Insert N documents of about 200 bytes of JSON through the engine (parse once,
//!    bind, CRDT delta, change index, store batch), WAL fsynced before each commit is
//!    acknowledged (the production setting), in batches of 1 and of 1,000. A batch is
//!    one INSERT of its documents (`INSERT INTO c DOCUMENTS (:d0), (:d1), ...`, the
//!    language's batch insert); batches of 1,000 are also run as a transaction of
//!    1,000 one-document INSERTs (`insert_tx_1000`). Two anchors, each a raw
//!    `rocksdb::WriteBatch` of 1 and of 1,000 documents with the same sync setting, in
//!    a database of its own:
//!    - `rocksdb`: the same JSON bytes, one row per document (what a plain key-value
//!      store writes; the product's target is measured against this one);
//!    - `rocksdb_same_rows`: exactly the rows the store writes for those inserts, in
//!      its column families: each encoded document state (with its change numbers)
//!      under its document key, the change-index and LSN-index runs holding their
//!      entries, and per batch the version vector, greatest timestamp and latest LSN.
//!      The gap to this one is the write path's own cost (binding, the id-conflict
//!      read, encoding the new document from its JSON, planning, building the keys);
//!      the rest is the extra rows.
//!
//!    The anchors open RocksDB with its defaults (uncompressed, as the store is), the
//!    store with its own options: in neither does a run of 100,000 inserts (about
//!    20 MB) fill a memtable, so no flush competes with the writers for the cores.
//! 2. Point reads by `_id` through the query language (`SELECT * FROM c WHERE _id =
//!    :id`, a point read by plan), anchor: raw `get` of the same keys.
//! 3. An equality query selecting 1% of the documents, by full scan and then with an
//!    index on the field (ms per query, and the index's speed-up).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, ensure};
use serde_json::{Value, json};
use trellis_common::clock::Hlc;
use trellis_common::codec::encode_insert;
use trellis_common::crdt::{DocState, Dot, Stamp, VersionVector, WriteContext};
use trellis_common::ids::{ActorId, CollectionName, DocId};
use trellis_common::query::{Params, Statement, parse};
use trellis_common::sync::DocLsns;
use trellis_node::engine::{Engine, EngineOptions};
use trellis_node::store::{Durability, RocksOptions, RocksStore, Store, cf, keys};

use crate::report::{Better, Line};

const BENCH: &str = "store";
const COLLECTION: &str = "bench";
/// Inserts per transaction in the batched runs.
const BATCH: usize = 1_000;
/// The insert runs alternate between the systems this many times (often: the disk's
/// fsync latency drifts within a run).
const ROUNDS: usize = 100;
/// Distinct values of the `group` field: an equality on it selects 1%.
const GROUPS: usize = 100;
/// Whether every commit waits for the fsync of the WAL, in both systems (the
/// production setting, [`Durability::Sync`]).
const SYNC: bool = true;
/// The engine's actor in the store runs (and in the rows of the same-rows anchor).
const ACTOR: u64 = 1;

/// A row of a raw write batch: column family, key, value.
type Row = (&'static str, Vec<u8>, Vec<u8>);

pub(crate) fn run(quick: bool) -> anyhow::Result<()> {
    let n = if quick { 10_000 } else { 100_000 };
    let docs: Vec<Value> = (0..n).map(document).collect();
    let bytes = raw_rows(&docs)?;
    let avg_bytes = bytes.iter().map(|(_, v)| v.len()).sum::<usize>() / n;

    for batch in [1, BATCH] {
        let raw_dir = tempfile::tempdir()?;
        let raw = raw_db(raw_dir.path())?;
        let rows_dir = tempfile::tempdir()?;
        let rows_db = raw_db(rows_dir.path())?;
        let row_batches = same_rows(&docs, batch)?;
        // A batch of one is one INSERT either way.
        let shapes: &[Shape] = if batch == 1 {
            &[Shape::OneInsert]
        } else {
            &[Shape::OneInsert, Shape::Transaction]
        };
        let mut engines = Vec::new();
        for _ in shapes {
            let dir = tempfile::tempdir()?;
            let (engine, _) = engine(dir.path())?;
            engines.push((engine, dir));
        }
        // Alternate the systems round by round, so that all see the same disk (fsync
        // latency drifts with whatever else the machine is doing).
        let round = (n / ROUNDS).div_ceil(batch) * batch;
        let (mut raw_s, mut rows_s) = (0.0, 0.0);
        let mut ours_s = vec![0.0; shapes.len()];
        for ((docs, bytes), rows) in docs
            .chunks(round)
            .zip(bytes.chunks(round))
            .zip(row_batches.chunks(round / batch))
        {
            raw_s += raw_inserts(&raw, bytes, batch)?;
            rows_s += raw_row_inserts(&rows_db, rows)?;
            for ((shape, (engine, _)), seconds) in shapes.iter().zip(&engines).zip(&mut ours_s) {
                *seconds += engine_inserts(engine, docs, batch, *shape)?;
            }
        }
        let (raw_rate, rows_rate) = (n as f64 / raw_s, n as f64 / rows_s);
        let per_batch = row_batches.iter().map(Vec::len).sum::<usize>() / row_batches.len();
        let metric = format!("insert_batch_{batch}");
        let extra = |line: Line| {
            line.field("docs", n)
                .field("batch", batch)
                .field("avg_doc_bytes", avg_bytes)
                .field("wal", if SYNC { "synced" } else { "buffered" })
        };
        for (shape, seconds) in shapes.iter().zip(&ours_s) {
            let ours = n as f64 / seconds;
            let (metric, statements) = match shape {
                Shape::OneInsert => (metric.clone(), "one INSERT of the batch's documents"),
                Shape::Transaction => (
                    format!("insert_tx_{batch}"),
                    "a transaction of one-document INSERTs",
                ),
            };
            extra(Line::new(BENCH, "trellis", &metric, ours, "docs/s"))
                .ratio("rocksdb", ours, raw_rate, Better::Higher)
                .ratio("rocksdb_same_rows", ours, rows_rate, Better::Higher)
                .field("statements", statements)
                .field(
                    "note",
                    "inserted through the engine into the store (document; change-index and \
                     LSN-index runs, version vector and timestamp per commit); \
                     ratio_vs_rocksdb of insert_batch_1 and insert_batch_1000 is the target",
                )
                .print();
        }
        extra(Line::new(BENCH, "rocksdb", &metric, raw_rate, "docs/s"))
            .field(
                "note",
                "raw WriteBatch of the documents' JSON bytes under the same keys, one row \
                 per document, default column family",
            )
            .print();
        extra(Line::new(
            BENCH,
            "rocksdb",
            &format!("{metric}_same_rows"),
            rows_rate,
            "docs/s",
        ))
        .field("rows_per_batch", per_batch)
        .field(
            "note",
            "raw WriteBatch of exactly the rows the store writes for these inserts: \
             encoded document states, change-index and LSN-index runs, version vector and \
             greatest timestamp, in the store's column families",
        )
        .print();
    }

    // Reads on a store filled in batches (and a raw database with the same bytes).
    let raw_dir = tempfile::tempdir()?;
    let raw = raw_db(raw_dir.path())?;
    raw_inserts(&raw, &bytes, BATCH)?;
    let dir = tempfile::tempdir()?;
    let (engine, store) = engine(dir.path())?;
    engine_inserts(&engine, &docs, BATCH, Shape::OneInsert)?;
    point_reads(&engine, &raw, &bytes, n)?;
    drop(raw);
    equality_query(&engine, &store, n)?;
    Ok(())
}

/// Document `i`: about 200 bytes of JSON.
pub(crate) fn document(i: usize) -> Value {
    json!({
        "_id": format!("doc-{i:07}"),
        "name": format!("sensor {i} on line {}", i % 17),
        "site": format!("site-{}", i % 13),
        "group": i % GROUPS,
        "temp": 20.0 + (i % 150) as f64 / 10.0,
        "ok": !i.is_multiple_of(7),
        "tags": ["field", format!("t{}", i % 5)],
        "reading": {"v": i * 3, "unit": "kPa", "at": 1_790_000_000_000_u64 + i as u64},
    })
}

/// Each document's key and JSON bytes, as the raw anchor writes them.
fn raw_rows(docs: &[Value]) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    docs.iter()
        .map(|d| Ok((raw_key(&d["_id"]), serde_json::to_vec(d)?)))
        .collect()
}

fn raw_key(id: &Value) -> Vec<u8> {
    let mut key = COLLECTION.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(id.to_string().as_bytes());
    key
}

/// The rows the store writes when the engine inserts `docs` in transactions of
/// `batch`, one write batch each: per document its encoded state (a fresh insert, as
/// `Tx::insert` builds it, with its change numbers), the change-index and LSN-index
/// runs of the batch, then the version vector, the greatest timestamp and the latest
/// LSN.
fn same_rows(docs: &[Value], batch: usize) -> anyhow::Result<Vec<Vec<Row>>> {
    let collection = CollectionName::new(COLLECTION)?;
    let actor = ActorId::from_u64(ACTOR);
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let mut seq = 0;
    let mut out = Vec::new();
    for chunk in docs.chunks(batch) {
        let mut rows =
            Vec::with_capacity(chunk.len() + 2 * chunk.len().div_ceil(keys::RUN_ENTRIES) + 3);
        let mut hlc = Hlc::ZERO;
        let mut entries = Vec::with_capacity(chunk.len());
        for doc in chunk {
            seq += 1;
            let id = DocId::from_json(&doc["_id"])?;
            let dot = Dot { actor, seq };
            hlc = Hlc::new(wall, (seq % 1000) as u16);
            let ctx = WriteContext {
                stamp: Stamp { hlc, actor },
                dot,
            };
            let state = DocState::insert_delta(ctx, doc)?;
            // The store numbers documents from 1, one LSN per changed document.
            let lsns = DocLsns::new(seq);
            rows.push((
                cf::DOCS,
                keys::doc_key(&collection, &id),
                keys::encode_doc_value(
                    &lsns,
                    &state,
                    &encode_insert(ctx, doc).context("an object nested within the limit")?,
                ),
            ));
            entries.push((seq, id));
        }
        // The index entries of the commit, in runs (the LSN and the sequence number of
        // each document are equal here). The store sorts a commit's documents by id,
        // as they are here already.
        for (part, run) in entries.chunks(keys::RUN_ENTRIES).enumerate() {
            let (first, last) = (run[0].0, run[run.len() - 1].0);
            rows.push((
                cf::LSNS,
                keys::lsn_key(&collection, first),
                keys::encode_lsn_run(first, run.iter().map(|(lsn, id)| (*lsn, id))),
            ));
            rows.push((
                cf::CHANGES,
                keys::change_run_key(actor, last, seq, part as u32),
                keys::encode_change_run(run.iter().map(|(seq, id)| (*seq, &collection, id))),
            ));
        }
        let version: VersionVector = [(actor, seq)].into_iter().collect();
        rows.push((
            cf::META,
            keys::META_VERSION_VECTOR.to_vec(),
            keys::encode_version_vector(&version),
        ));
        rows.push((
            cf::META,
            keys::META_MAX_HLC.to_vec(),
            hlc.to_raw().to_be_bytes().to_vec(),
        ));
        rows.push((
            cf::META,
            keys::META_LSN.to_vec(),
            seq.to_be_bytes().to_vec(),
        ));
        out.push(rows);
    }
    Ok(out)
}

fn engine(path: &std::path::Path) -> anyhow::Result<(Engine, Arc<dyn Store>)> {
    let options = RocksOptions {
        durability: if SYNC {
            Durability::Sync
        } else {
            Durability::Buffered
        },
        ..RocksOptions::default()
    };
    let store: Arc<dyn Store> = Arc::new(RocksStore::open(path, &options)?);
    let engine = Engine::open(
        Arc::clone(&store),
        ActorId::from_u64(1),
        EngineOptions::default(),
    )?;
    Ok((engine, store))
}

/// A raw database with the store's data column families (and the default one),
/// uncompressed as the store is.
fn raw_db(path: &std::path::Path) -> anyhow::Result<rocksdb::DB> {
    let mut options = rocksdb::Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    options.set_compression_type(rocksdb::DBCompressionType::None);
    Ok(rocksdb::DB::open_cf(
        &options,
        path,
        [cf::DOCS, cf::CHANGES, cf::LSNS, cf::META],
    )?)
}

fn write_options() -> rocksdb::WriteOptions {
    let mut options = rocksdb::WriteOptions::default();
    options.set_sync(SYNC);
    options
}

/// Seconds to write each batch of rows, one commit each.
fn raw_row_inserts(db: &rocksdb::DB, batches: &[Vec<Row>]) -> anyhow::Result<f64> {
    let sync = write_options();
    let start = Instant::now();
    for rows in batches {
        let mut wb = rocksdb::WriteBatch::default();
        for (family, key, value) in rows {
            let handle = db.cf_handle(family).context("the column family is open")?;
            wb.put_cf(handle, key, value);
        }
        db.write_opt(wb, &sync)?;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Seconds to write `bytes` in batches of `batch`, one commit each. Never inlined: a
/// profiler counts it by name ([`profile_inserts`]).
#[inline(never)]
fn raw_inserts(
    db: &rocksdb::DB,
    bytes: &[(Vec<u8>, Vec<u8>)],
    batch: usize,
) -> anyhow::Result<f64> {
    let sync = write_options();
    let start = Instant::now();
    for chunk in bytes.chunks(batch) {
        let mut wb = rocksdb::WriteBatch::default();
        for (key, value) in chunk {
            wb.put(key, value);
        }
        db.write_opt(wb, &sync)?;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// How the engine is given a batch of inserts.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// One INSERT statement listing the batch's documents.
    OneInsert,
    /// A transaction of one-document INSERT statements.
    Transaction,
}

/// Seconds to insert `docs` through the engine, `batch` documents per commit.
fn engine_inserts(
    engine: &Engine,
    docs: &[Value],
    batch: usize,
    shape: Shape,
) -> anyhow::Result<f64> {
    // Parsed once, as an application holding prepared statements does, for full
    // batches and for a short last one.
    let statements = |len: usize| -> anyhow::Result<Vec<Statement>> {
        Ok(match shape {
            Shape::OneInsert => {
                let list: Vec<String> = (0..len).map(|i| format!("(:d{i})")).collect();
                vec![parse(&format!(
                    "INSERT INTO {COLLECTION} DOCUMENTS {}",
                    list.join(", ")
                ))?]
            }
            Shape::Transaction => (0..len)
                .map(|i| parse(&format!("INSERT INTO {COLLECTION} DOCUMENTS (:d{i})")))
                .collect::<Result<_, _>>()?,
        })
    };
    let full = statements(batch)?;
    let short = match docs.len() % batch {
        0 => Vec::new(),
        rest => statements(rest)?,
    };
    let params: Vec<Params> = docs
        .chunks(batch)
        .map(|chunk| {
            chunk
                .iter()
                .enumerate()
                .map(|(i, d)| (format!("d{i}"), d.clone()))
                .collect()
        })
        .collect();
    let start = Instant::now();
    for (chunk, params) in docs.chunks(batch).zip(&params) {
        let statements = if chunk.len() == batch { &full } else { &short };
        let results = engine.execute_statements(statements, params)?;
        let ids: usize = results.iter().map(|r| r.ids().len()).sum();
        ensure!(ids == chunk.len(), "one id per inserted document");
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Documents [`profile_inserts`] writes.
const PROFILED_DOCS: usize = 20_000;

/// The batched insert runs alone, each once: [`PROFILED_DOCS`] documents through the
/// engine (one INSERT per batch), then their JSON through raw RocksDB, in batches of
/// [`BATCH`], fsynced. For counting instructions, which unlike timings repeat exactly
/// from run to run:
///
/// ```text
/// valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*execute_statements*' \
///     target/release/trellis-bench store-inserts
/// ```
///
/// counts the engine's inserts on the committing thread (`--toggle-collect='*raw_inserts*'`:
/// the anchor's). The helper threads that prepare part of each transaction's documents
/// run outside `execute_statements`; `--toggle-collect='*prepare_jobs*'` counts the
/// preparation on every thread.
pub(crate) fn profile_inserts() -> anyhow::Result<()> {
    let docs: Vec<Value> = (0..PROFILED_DOCS).map(document).collect();
    let dir = tempfile::tempdir()?;
    let (engine, _) = engine(dir.path())?;
    let ours = engine_inserts(&engine, &docs, BATCH, Shape::OneInsert)?;
    let raw_dir = tempfile::tempdir()?;
    let raw = raw_db(raw_dir.path())?;
    let theirs = raw_inserts(&raw, &raw_rows(&docs)?, BATCH)?;
    eprintln!(
        "inserted {PROFILED_DOCS} documents in batches of {BATCH}: engine {ours:.3} s, raw RocksDB {theirs:.3} s"
    );
    Ok(())
}

/// A cheap deterministic sequence of document numbers.
fn picks(n: usize, count: usize) -> impl Iterator<Item = usize> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..count).map(move |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    })
}

fn point_reads(
    engine: &Engine,
    raw: &rocksdb::DB,
    bytes: &[(Vec<u8>, Vec<u8>)],
    n: usize,
) -> anyhow::Result<()> {
    let reads = n.min(20_000);
    let select = parse(&format!("SELECT * FROM {COLLECTION} WHERE _id = :id"))?;
    let ids: Vec<Params> = picks(n, reads)
        .map(|i| {
            [("id".to_owned(), json!(format!("doc-{i:07}")))]
                .into_iter()
                .collect()
        })
        .collect();
    let start = Instant::now();
    for params in &ids {
        let result = engine.execute_statement(&select, params)?;
        ensure!(result.documents().len() == 1, "every id exists");
        black_box(result);
    }
    let ours = reads as f64 / start.elapsed().as_secs_f64();

    let keys: Vec<&[u8]> = picks(n, reads).map(|i| bytes[i].0.as_slice()).collect();
    let start = Instant::now();
    for key in keys {
        let value = raw.get(key)?.context("every key exists")?;
        black_box(serde_json::from_slice::<Value>(&value)?);
    }
    let theirs = reads as f64 / start.elapsed().as_secs_f64();

    let extra = |line: Line| line.field("docs", n).field("reads", reads);
    extra(Line::new(
        BENCH,
        "trellis",
        "point_read_by_id",
        ours,
        "ops/s",
    ))
    .ratio("rocksdb", ours, theirs, Better::Higher)
    .field(
        "note",
        "SELECT * ... WHERE _id = :id, JSON out; rocksdb: get + JSON parse",
    )
    .print();
    extra(Line::new(
        BENCH,
        "rocksdb",
        "point_read_by_id",
        theirs,
        "ops/s",
    ))
    .print();
    Ok(())
}

fn equality_query(engine: &Engine, store: &Arc<dyn Store>, n: usize) -> anyhow::Result<()> {
    let select = parse(&format!("SELECT * FROM {COLLECTION} WHERE group = :g"))?;
    let expected = n / GROUPS;
    let time = |runs: usize| -> anyhow::Result<f64> {
        let start = Instant::now();
        for g in picks(GROUPS, runs) {
            let params: Params = [("g".to_owned(), json!(g))].into_iter().collect();
            let result = engine.execute_statement(&select, &params)?;
            ensure!(
                result.documents().len() == expected,
                "1% of the documents match"
            );
            black_box(result);
        }
        Ok(start.elapsed().as_secs_f64() * 1e3 / runs as f64)
    };
    let scan_ms = time(5)?;
    engine.execute(
        &format!("CREATE INDEX bench_group ON {COLLECTION} (group)"),
        &Params::new(),
    )?;
    ensure!(store.indexes().len() == 1, "the index exists");
    let plan = engine.execute(
        &format!("EXPLAIN SELECT * FROM {COLLECTION} WHERE group = 1"),
        &Params::new(),
    )?;
    ensure!(
        plan.plan().and_then(|p| p.index()) == Some("bench_group"),
        "the query uses the index"
    );
    let index_ms = time(50)?;
    let extra = |line: Line| line.field("docs", n).field("matches", expected);
    extra(Line::new(
        BENCH,
        "trellis",
        "eq_query_1pct_full_scan",
        scan_ms,
        "ms/query",
    ))
    .print();
    extra(Line::new(
        BENCH,
        "trellis",
        "eq_query_1pct_index",
        index_ms,
        "ms/query",
    ))
    .ratio("full_scan", index_ms, scan_ms, Better::Lower)
    .print();
    Ok(())
}
