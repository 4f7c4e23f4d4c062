//! `sync`: two real nodes (`trellis_node::node::Node`: RocksDB store, engine, libp2p
//! over TCP on loopback) in this process.
//!
//! 1. Initial sync: node A holds N documents of about 200 bytes (`store::document`);
//!    node B starts empty with A as its static peer and subscribes to the collection.
//!    Measured from B's start (store open, dial, Noise, handshake) until B's store
//!    holds all N.
//! 2. Incremental syncs: B stops; one field of d documents changes on A (d = 1, 100,
//!    10,000); B starts again and catches up from its bookmark.
//!
//! Each line reports `wire_bytes` (the sync frames' bytes both ways as B's session counts
//! them over all its links, also per direction; Noise, Yamux and TCP headers excluded),
//! `payload_bytes` (the changed data encoded: per changed document its id and
//! `encode_doc` of the entries A changed since B's last sync, i.e. which document and
//! what of it changed, nothing else), `bytes_ratio` = wire / payload, and `round_trips` (1
//! for the handshake plus B's request waves: pulls, and wants when fragments were not
//! enough). Targets: `bytes_ratio` ≤ 1.2 (plus at most 2 KiB of fixed overhead), at
//! most 3 round trips, initial sync of 100k documents under 5 s.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use trellis_common::codec::encode_doc;
use trellis_common::ids::CollectionName;
use trellis_common::query::Params;
use trellis_node::config::{ApiConfig, Config, MeshSettings};
use trellis_node::node::Node;

use crate::report::Line;
use crate::store::document;

const BENCH: &str = "sync";
const COLLECTION: &str = "bench";
/// Inserts per transaction when loading node A.
const LOAD_BATCH: usize = 1_000;
/// How long B may take to catch up before the run fails.
const TIMEOUT: Duration = Duration::from_secs(600);
/// Fixed overhead the byte target allows on top of 1.2 × payload.
const FIXED_OVERHEAD: f64 = 2048.0;

/// A node's configuration for the benchmark: loopback TCP only, no mDNS, the whole
/// collection subscribed, production durability (WAL fsynced per commit).
pub(crate) fn node_config(dir: &Path, peers: Vec<String>, subscription: &str) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        api: ApiConfig {
            listen: "127.0.0.1:0".to_owned(),
            ..ApiConfig::default()
        },
        mesh: MeshSettings {
            enabled: true,
            listen: vec!["/ip4/127.0.0.1/tcp/0".to_owned()],
            peers,
            mdns: false,
            subscriptions: vec![subscription.to_owned()],
        },
        ..Config::default()
    }
}

/// The TCP address a started node listens on.
pub(crate) async fn tcp_addr(node: &Node) -> anyhow::Result<String> {
    let sync = node.sync().context("the mesh runs")?;
    let addrs = sync.client().listen_addrs().await?;
    let addr = addrs.iter().find(|a| a.to_string().contains("/tcp/"));
    Ok(addr.context("the node does not listen on TCP")?.to_string())
}

/// Waits until the store's LSN reaches `lsn` (each document a sync changes takes one).
async fn wait_for_lsn(node: &Node, lsn: u64) -> anyhow::Result<()> {
    let mut watch = node.engine().watch_lsn();
    let started = Instant::now();
    while *watch.borrow_and_update() < lsn {
        let remaining = TIMEOUT.saturating_sub(started.elapsed());
        if tokio::time::timeout(remaining, watch.changed())
            .await
            .is_err()
        {
            bail!(
                "sync did not finish in {TIMEOUT:?}: LSN {} of {lsn}",
                *watch.borrow()
            );
        }
    }
    Ok(())
}

/// The encoded size of what `node` changed in the collection after `after`: per
/// document, its id and its changed entries.
fn payload_since(node: &Node, after: u64) -> anyhow::Result<u64> {
    let collection = CollectionName::new(COLLECTION)?;
    let store = node.engine().store();
    let (mut cursor, mut total) = (after, 0u64);
    loop {
        let page = store.changed_since(&collection, after, cursor, 1024)?;
        let Some(last) = page.last() else {
            return Ok(total);
        };
        cursor = last.lsn;
        total += page
            .iter()
            .map(|d| (d.id.as_canonical().len() + encode_doc(&d.fragment).len()) as u64)
            .sum::<u64>();
    }
}

/// B's view of its session with A.
struct Figures {
    /// Bytes from A to B.
    a_to_b: u64,
    /// Bytes from B to A.
    b_to_a: u64,
    /// B's request waves.
    waves: u64,
}

/// B's session figures once it is quiet: idle (nothing in flight), every change of
/// its store pushed (the push that tells A the received documents are echoes, so A's
/// bookmark of B moves past them), and its byte counts unchanged between two looks.
async fn session_figures(node: &Node) -> anyhow::Result<Figures> {
    let peers = node.sync().context("the mesh runs")?.peers();
    let started = Instant::now();
    let mut last = None;
    loop {
        let list = peers.peers().await?;
        let peer = list.first().context("B has a session with A")?;
        let now = (peer.idle, peer.session.bytes_in, peer.session.bytes_out);
        let pushed = peer.session.pushed_upto >= node.engine().store().lsn();
        if peer.idle && pushed && last == Some(now) {
            return Ok(Figures {
                a_to_b: peer.session.bytes_in,
                b_to_a: peer.session.bytes_out,
                waves: peer.session.request_waves,
            });
        }
        ensure!(started.elapsed() < TIMEOUT, "the session does not settle");
        last = Some(now);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn line(metric: &str, d: usize, wall: Duration, figures: &Figures, payload: u64) -> Line {
    let wire = figures.a_to_b + figures.b_to_a;
    let ratio = wire as f64 / payload.max(1) as f64;
    let allowed = 1.2 * payload as f64 + FIXED_OVERHEAD;
    Line::new(BENCH, "trellis", metric, wall.as_secs_f64() * 1000.0, "ms")
        .field("changed_docs", d)
        .field("wire_bytes", wire)
        .field("wire_bytes_a_to_b", figures.a_to_b)
        .field("wire_bytes_b_to_a", figures.b_to_a)
        .field("payload_bytes", payload)
        .field("bytes_ratio", (ratio * 1000.0).round() / 1000.0)
        .field("bytes_target_met", wire as f64 <= allowed)
        .field("round_trips", 1 + figures.waves)
}

pub(crate) fn run(quick: bool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(measure(quick))
}

async fn measure(quick: bool) -> anyhow::Result<()> {
    let n = if quick { 10_000 } else { 100_000 };
    let changes: &[usize] = if quick {
        &[1, 100, 1_000]
    } else {
        &[1, 100, 10_000]
    };
    let dir = tempfile::tempdir()?;
    let subscription = format!("SELECT * FROM {COLLECTION}");
    let a = Node::spawn(node_config(
        &dir.path().join("a"),
        Vec::new(),
        &subscription,
    ))
    .await?;
    load(&a, n)?;
    let a_addr = tcp_addr(&a).await?;
    let b_config = node_config(&dir.path().join("b"), vec![a_addr], &subscription);

    let payload = payload_since(&a, 0)?;
    let started = Instant::now();
    let b = Node::spawn(b_config.clone()).await?;
    wait_for_lsn(&b, n as u64).await?;
    let wall = started.elapsed();
    let figures = session_figures(&b).await?;
    line("initial_sync", n, wall, &figures, payload)
        .field("docs", n)
        .field("target_ms", 5000)
        .print();
    b.shutdown().await?;
    drop(b);

    let mut round = 0;
    for &d in changes {
        round += 1;
        let a_before = a.engine().store().lsn();
        change(&a, n, d, round)?;
        let payload = payload_since(&a, a_before)?;
        let started = Instant::now();
        let b = Node::spawn(b_config.clone()).await?;
        let b_before = b.engine().store().lsn();
        wait_for_lsn(&b, b_before + d as u64).await?;
        let wall = started.elapsed();
        let figures = session_figures(&b).await?;
        line("incremental_sync", d, wall, &figures, payload).print();
        b.shutdown().await?;
    }
    a.shutdown().await?;
    Ok(())
}

/// Inserts documents 0..n into the collection, in transactions of [`LOAD_BATCH`].
pub(crate) fn load(node: &Node, n: usize) -> anyhow::Result<()> {
    for start in (0..n).step_by(LOAD_BATCH) {
        let end = (start + LOAD_BATCH).min(n);
        let slots: Vec<String> = (start..end).map(|i| format!("(:d{i})")).collect();
        let statement = format!("INSERT INTO {COLLECTION} DOCUMENTS {}", slots.join(", "));
        let params: Params = (start..end)
            .map(|i| (format!("d{i}"), document(i)))
            .collect();
        node.engine().execute(&statement, &params)?;
    }
    Ok(())
}

/// Changes one field of `d` of the `n` documents (spread over the collection), in
/// transactions of [`LOAD_BATCH`] statements.
fn change(node: &Node, n: usize, d: usize, round: usize) -> anyhow::Result<()> {
    // 7 is prime to every n used here, so the picks are distinct.
    let ids: Vec<String> = (0..d).map(|i| format!("doc-{:07}", i * 7 % n)).collect();
    for chunk in ids.chunks(LOAD_BATCH) {
        let script: Vec<String> = chunk
            .iter()
            .map(|id| format!("UPDATE {COLLECTION} SET temp = {round}.5 WHERE _id = '{id}'"))
            .collect();
        node.engine()
            .execute_transaction(&script.join(";\n"), &Params::new())?;
    }
    Ok(())
}
