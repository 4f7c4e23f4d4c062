//! `crdt`: the document model against automerge and yrs doing the same work in the same
//! process.
//!
//! 1. Local field writes spread over many documents (ops/s).
//! 2. The crdt-benchmarks B3.1 shape: 20·⌊√N⌋ clients start from one synced map and
//!    each concurrently sets the key `v` to its own number; then every client's update
//!    is merged into one replica (decoding included). Time, ops/s, total update bytes.
//!    Automerge is measured both ways it can merge: one update at a time, and all
//!    updates concatenated into one `load_incremental` call.
//! 3. Encode and decode of the merged state.
//!
//! Every system uses the identities its applications get: Trellis actor ids are 64-bit
//! hashes of node keys, automerge forks take random 128-bit actors, yrs documents take
//! random client ids.

use std::hint::black_box;
use std::time::Instant;

use anyhow::{Context, ensure};
use automerge::ReadDoc;
use automerge::transaction::Transactable;
use serde_json::json;
use trellis_common::codec;
use trellis_common::crdt::{Crdt, Mutation, Path};
use trellis_common::ids::{ActorId, CollectionName, DocId};
use trellis_common::replica::Replica;
use yrs::updates::decoder::Decode;
use yrs::{Map, ReadTxn, Transact};

use crate::report::{Better, Line};

const BENCH: &str = "crdt";
const WALL_MS: u64 = 1_790_000_000_000;

pub(crate) fn run(quick: bool) -> anyhow::Result<()> {
    let (writes, docs, n) = if quick {
        (100_000, 1_000, 1_000)
    } else {
        (1_000_000, 10_000, 10_000)
    };
    local_writes(writes, docs)?;
    concurrent_map(n)?;
    Ok(())
}

fn rate(ops: usize, seconds: f64) -> f64 {
    ops as f64 / seconds
}

fn local_writes(writes: usize, docs: usize) -> anyhow::Result<()> {
    let fields = writes / docs;
    let key = |i: usize| format!("f{}", (i / docs) % fields.max(1));

    // Trellis: the same write path a node uses (stamp, delta, merge), in memory.
    let collection = CollectionName::new("bench")?;
    let ids: Vec<DocId> = (0..docs)
        .map(|d| DocId::from_string(format!("doc-{d}")))
        .collect::<Result<_, _>>()?;
    let mut replica = Replica::new(ActorId::from_u64(1));
    for id in &ids {
        replica.insert(&collection, id, &json!({}), WALL_MS)?;
    }
    let start = Instant::now();
    for i in 0..writes {
        let mutation = Mutation::Set(Path::new(vec![key(i)]), json!(i));
        replica.update(&collection, &ids[i % docs], &[mutation], WALL_MS + i as u64)?;
    }
    let trellis = rate(writes, start.elapsed().as_secs_f64());

    let mut am_docs: Vec<automerge::AutoCommit> =
        (0..docs).map(|_| automerge::AutoCommit::new()).collect();
    let start = Instant::now();
    for i in 0..writes {
        am_docs[i % docs].put(automerge::ROOT, key(i), i as i64)?;
    }
    for doc in &mut am_docs {
        black_box(doc.get_heads());
    }
    let automerge = rate(writes, start.elapsed().as_secs_f64());
    drop(am_docs);

    let y_docs: Vec<(yrs::Doc, yrs::MapRef)> = (0..docs)
        .map(|d| {
            let doc = yrs::Doc::with_client_id(d as u64 + 1);
            let map = doc.get_or_insert_map("m");
            (doc, map)
        })
        .collect();
    let start = Instant::now();
    for i in 0..writes {
        let (doc, map) = &y_docs[i % docs];
        let mut txn = doc.transact_mut();
        map.insert(&mut txn, key(i), i as i64);
    }
    let yrs = rate(writes, start.elapsed().as_secs_f64());

    let metric = "local_field_writes";
    let extra = |line: Line| line.field("writes", writes).field("docs", docs);
    extra(Line::new(BENCH, "trellis", metric, trellis, "ops/s"))
        .ratio("automerge", trellis, automerge, Better::Higher)
        .ratio("yrs", trellis, yrs, Better::Higher)
        .print();
    extra(Line::new(BENCH, "automerge", metric, automerge, "ops/s")).print();
    extra(Line::new(BENCH, "yrs", metric, yrs, "ops/s")).print();
    Ok(())
}

/// Per system: the encoded update of each client.
struct Updates {
    trellis: Vec<Vec<u8>>,
    trellis_envelope_bytes: usize,
    automerge: Vec<Vec<u8>>,
    yrs: Vec<Vec<u8>>,
}

fn concurrent_map(n: usize) -> anyhow::Result<()> {
    let clients = (n as f64).sqrt().floor() as usize * 20;
    let collection = CollectionName::new("bench")?;
    let id = DocId::from_string("shared")?;

    // Everybody starts from the same synced, empty map.
    let mut origin = Replica::new(ActorId::from_u64(u64::MAX));
    let base_delta = origin.insert(&collection, &id, &json!({}), WALL_MS)?;
    let mut am_base = automerge::AutoCommit::new();
    am_base.put(automerge::ROOT, "init", 0)?;
    am_base.save_incremental();

    let mut updates = Updates {
        trellis: Vec::with_capacity(clients),
        trellis_envelope_bytes: 0,
        automerge: Vec::with_capacity(clients),
        yrs: Vec::with_capacity(clients),
    };
    for i in 0..clients {
        let mut client = Replica::new(ActorId::from_u64(i as u64 + 1));
        client.apply(&base_delta, WALL_MS);
        let delta = client.update(
            &collection,
            &id,
            &[Mutation::Set(Path::new(vec!["v".to_owned()]), json!(i))],
            WALL_MS + 1,
        )?;
        updates
            .trellis
            .push(codec::encode_doc(&delta.changes[0].state));
        updates.trellis_envelope_bytes += codec::encode_delta(&delta).len();

        let mut fork = am_base.fork();
        fork.save_incremental();
        fork.put(automerge::ROOT, "v", i as i64)?;
        updates.automerge.push(fork.save_incremental());

        // Default options: a random client id, as applications get.
        let doc = yrs::Doc::new();
        let map = doc.get_or_insert_map("m");
        let mut txn = doc.transact_mut();
        map.insert(&mut txn, "v", i as i64);
        updates.yrs.push(txn.encode_update_v1());
    }

    // Trellis: decode each update and merge it into one replica's document.
    let base_state = base_delta.changes[0].state.clone();
    let start = Instant::now();
    let mut merged = base_state.clone();
    for bytes in &updates.trellis {
        merged.merge(&codec::decode_doc(bytes)?);
    }
    let trellis_s = start.elapsed().as_secs_f64();
    let winner = merged.to_json(&id).context("merged document exists")?["v"].clone();
    let mut reversed = base_state;
    for bytes in updates.trellis.iter().rev() {
        reversed.merge(&codec::decode_doc(bytes)?);
    }
    ensure!(reversed == merged, "merge order changed the result");

    let mut am_one = am_base.fork();
    let start = Instant::now();
    for bytes in &updates.automerge {
        am_one.load_incremental(bytes)?;
    }
    let am_one_s = start.elapsed().as_secs_f64();
    let all: Vec<u8> = updates.automerge.concat();
    let mut am_all = am_base.fork();
    let start = Instant::now();
    am_all.load_incremental(&all)?;
    let am_all_s = start.elapsed().as_secs_f64();
    ensure!(
        am_all.get_heads().len() == am_one.get_heads().len(),
        "automerge modes disagree"
    );

    let y_target = yrs::Doc::new();
    let y_map = y_target.get_or_insert_map("m");
    let start = Instant::now();
    for bytes in &updates.yrs {
        let update = yrs::Update::decode_v1(bytes)?;
        y_target.transact_mut().apply_update(update)?;
    }
    let yrs_s = start.elapsed().as_secs_f64();
    ensure!(
        y_map.len(&y_target.transact()) == 1,
        "yrs merged map has one key"
    );

    let best_am = am_one_s.min(am_all_s);
    let common = |line: Line| line.field("clients", clients).field("n", n);
    let merge = "b3_1_merge_all_updates";
    common(Line::new(BENCH, "trellis", merge, trellis_s * 1e3, "ms"))
        .ratio("automerge", trellis_s, best_am, Better::Lower)
        .ratio("yrs", trellis_s, yrs_s, Better::Lower)
        .field("winner_value", winner)
        .print();
    common(Line::new(BENCH, "automerge", merge, am_one_s * 1e3, "ms"))
        .field("mode", "load_incremental one update at a time")
        .print();
    common(Line::new(
        BENCH,
        "automerge",
        &format!("{merge}_batched"),
        am_all_s * 1e3,
        "ms",
    ))
    .field("mode", "all updates in one load_incremental call")
    .print();
    common(Line::new(BENCH, "yrs", merge, yrs_s * 1e3, "ms")).print();

    let rate_metric = "b3_1_merge_ops_per_s";
    let (t, a, y) = (
        rate(clients, trellis_s),
        rate(clients, best_am),
        rate(clients, yrs_s),
    );
    common(Line::new(BENCH, "trellis", rate_metric, t, "ops/s"))
        .ratio("automerge", t, a, Better::Higher)
        .ratio("yrs", t, y, Better::Higher)
        .print();
    common(Line::new(BENCH, "automerge", rate_metric, a, "ops/s"))
        .field("mode", "the faster of the two")
        .print();
    common(Line::new(BENCH, "yrs", rate_metric, y, "ops/s")).print();

    let sum = |v: &[Vec<u8>]| v.iter().map(Vec::len).sum::<usize>() as f64;
    let bytes = "b3_1_update_bytes";
    let (tb, ab, yb) = (
        sum(&updates.trellis),
        sum(&updates.automerge),
        sum(&updates.yrs),
    );
    common(Line::new(BENCH, "trellis", bytes, tb, "bytes"))
        .ratio("automerge", tb, ab, Better::Lower)
        .ratio("yrs", tb, yb, Better::Lower)
        .field("what", "document updates as encoded by codec::encode_doc")
        .field("with_sync_envelope_bytes", updates.trellis_envelope_bytes)
        .print();
    common(Line::new(BENCH, "automerge", bytes, ab, "bytes")).print();
    common(Line::new(BENCH, "yrs", bytes, yb, "bytes")).print();

    encode_decode(&merged, &mut am_all, &y_target, clients)
}

fn encode_decode(
    merged: &trellis_common::crdt::DocState,
    am: &mut automerge::AutoCommit,
    y: &yrs::Doc,
    clients: usize,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let t_bytes = codec::encode_doc(merged);
    let t_enc = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let decoded = codec::decode_doc(&t_bytes)?;
    let t_dec = start.elapsed().as_secs_f64();
    ensure!(&decoded == merged, "trellis state round-trips");

    let start = Instant::now();
    let a_bytes = am.save();
    let a_enc = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let loaded = automerge::AutoCommit::load(&a_bytes)?;
    let a_dec = start.elapsed().as_secs_f64();
    black_box(loaded.get(automerge::ROOT, "v")?);

    let start = Instant::now();
    let y_bytes = y
        .transact()
        .encode_state_as_update_v1(&yrs::StateVector::default());
    let y_enc = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let fresh = yrs::Doc::new();
    fresh
        .transact_mut()
        .apply_update(yrs::Update::decode_v1(&y_bytes)?)?;
    let y_dec = start.elapsed().as_secs_f64();

    let common = |line: Line| line.field("clients", clients);
    for (metric, t, a, yv, unit, better) in [
        (
            "b3_1_state_encode",
            t_enc * 1e3,
            a_enc * 1e3,
            y_enc * 1e3,
            "ms",
            Better::Lower,
        ),
        (
            "b3_1_state_decode",
            t_dec * 1e3,
            a_dec * 1e3,
            y_dec * 1e3,
            "ms",
            Better::Lower,
        ),
        (
            "b3_1_state_bytes",
            t_bytes.len() as f64,
            a_bytes.len() as f64,
            y_bytes.len() as f64,
            "bytes",
            Better::Lower,
        ),
    ] {
        common(Line::new(BENCH, "trellis", metric, t, unit))
            .ratio("automerge", t, a, better)
            .ratio("yrs", t, yv, better)
            .print();
        common(Line::new(BENCH, "automerge", metric, a, unit)).print();
        common(Line::new(BENCH, "yrs", metric, yv, unit)).print();
    }
    Ok(())
}
