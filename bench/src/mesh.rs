//! `mesh`: 10 real nodes in a line (each a `trellis_node::node::Node` with its own
//! RocksDB store, linked to its neighbours over libp2p TCP on loopback, all in this
//! process). A document written on one end is timed until it is readable on the other
//! end (the far node's engine returns it), 100 writes one after the other; p50 and p99
//! of that end-to-end latency, and per hop (divided by the 9 hops). Run once with the
//! production durability (every commit fsynced on every hop) and once with
//! `durability = "buffered"`. Target: p50 < 5 ms per hop.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::json;
use trellis_common::ids::DocId;
use trellis_common::query::Params;
use trellis_node::config::DurabilityConfig;
use trellis_node::node::Node;

use crate::report::Line;
use crate::sync::{node_config, tcp_addr};

const BENCH: &str = "mesh";
const NODES: usize = 10;
const COLLECTION: &str = "mesh";
/// How long one write may take to cross the line before the run fails.
const TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) fn run(quick: bool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let writes = if quick { 30 } else { 100 };
    for durability in [DurabilityConfig::Sync, DurabilityConfig::Buffered] {
        runtime.block_on(measure(writes, durability))?;
    }
    Ok(())
}

async fn measure(writes: usize, durability: DurabilityConfig) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let subscription = format!("SELECT * FROM {COLLECTION}");
    let mut nodes: Vec<Node> = Vec::with_capacity(NODES);
    for i in 0..NODES {
        let peers = match nodes.last() {
            Some(previous) => vec![tcp_addr(previous).await?],
            None => Vec::new(),
        };
        let mut config = node_config(&dir.path().join(format!("n{i}")), peers, &subscription);
        config.store.durability = durability;
        nodes.push(Node::spawn(config).await?);
    }
    // The line holds: the ends have one peer each, every other node two.
    for (i, node) in nodes.iter().enumerate() {
        let expected = if i == 0 || i == NODES - 1 { 1 } else { 2 };
        let started = Instant::now();
        loop {
            let peers = node
                .sync()
                .context("the mesh runs")?
                .peers()
                .peers()
                .await?;
            if peers.len() == expected {
                break;
            }
            ensure!(
                started.elapsed() < TIMEOUT,
                "node {i} has {} peers, expected {expected}",
                peers.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let (first, last) = (&nodes[0], &nodes[NODES - 1]);
    // One write end to end first: the line is linked and every subscription has
    // travelled.
    write(first, "warm-up")?;
    arrive(last, "warm-up").await?;

    let mut latencies = Vec::with_capacity(writes);
    for i in 0..writes {
        let id = format!("w{i}");
        let started = Instant::now();
        write(first, &id)?;
        arrive(last, &id).await?;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let hops = (NODES - 1) as f64;
    let durability = match durability {
        DurabilityConfig::Sync => "sync",
        DurabilityConfig::Buffered => "buffered",
    };
    for (metric, value) in [
        ("p50_end_to_end_ms", ms(pick(0.5))),
        ("p99_end_to_end_ms", ms(pick(0.99))),
        ("p50_per_hop_ms", ms(pick(0.5)) / hops),
        ("p99_per_hop_ms", ms(pick(0.99)) / hops),
    ] {
        let mut line = Line::new(BENCH, "trellis", metric, value, "ms")
            .field("nodes", NODES)
            .field("hops", NODES - 1)
            .field("writes", writes)
            .field("durability", durability);
        if metric == "p50_per_hop_ms" {
            line = line.field("target_ms", 5).field("target_met", value < 5.0);
        }
        line.print();
    }
    for node in nodes {
        node.shutdown().await?;
    }
    Ok(())
}

fn write(node: &Node, id: &str) -> anyhow::Result<()> {
    let mut params = Params::new();
    params.insert(
        "doc".to_owned(),
        json!({"_id": id, "payload": "x".repeat(100)}),
    );
    node.engine().execute(
        &format!("INSERT INTO {COLLECTION} DOCUMENTS (:doc)"),
        &params,
    )?;
    Ok(())
}

/// Waits until `node` has document `id`, woken by each of its commits.
async fn arrive(node: &Node, id: &str) -> anyhow::Result<()> {
    let id = DocId::from_string(id)?;
    let mut commits = node.engine().watch_lsn();
    let started = Instant::now();
    loop {
        commits.borrow_and_update();
        if node.engine().get(COLLECTION, &id)?.is_some() {
            return Ok(());
        }
        let remaining = TIMEOUT
            .checked_sub(started.elapsed())
            .context("timed out")?;
        if tokio::time::timeout(remaining, commits.changed())
            .await
            .is_err()
        {
            bail!("{id} did not cross the line in {TIMEOUT:?}");
        }
    }
}
