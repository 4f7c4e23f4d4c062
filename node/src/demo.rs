//! `trellis-node demo`: three real nodes on this machine, and a script that shows what
//! Trellis does, in plain words.
//!
//! Each node is a full [`Node`]: its own data directory (under a temporary directory),
//! RocksDB store, identity, HTTP API on a free loopback port, and mesh links over
//! libp2p (TCP and QUIC on loopback, mDNS off so the demo never mixes with a real mesh).
//! They form a line, tablet-a – tablet-b – pi-c: a and c never connect, so everything
//! between them is relayed by b. The script writes on one node and waits until the
//! others have it, edits concurrently, stops and restarts a node, deletes; each step
//! checks its outcome and the demo fails (non-zero exit) if one does not happen within
//! [`STEP_TIMEOUT`]. Without `--once` the nodes then keep running, with their API
//! addresses printed, until Ctrl-C.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::{Map, Value, json};
use trellis_common::ids::DocId;

use crate::config::{Config, MeshSettings};
use crate::node::{Node, wait_for_signal};

/// How the demo runs.
#[derive(Debug, Clone, Copy)]
pub struct DemoOptions {
    /// Run the script once and return instead of leaving the nodes running.
    pub once: bool,
}

/// How long a step may take before the demo calls it failed.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// The subscription every demo node has: all the cars.
const CARS: &str = "SELECT * FROM cars";

/// One node of the demo.
struct Device {
    name: &'static str,
    config: Config,
    node: Option<Node>,
}

impl Device {
    fn node(&self) -> anyhow::Result<&Node> {
        self.node
            .as_ref()
            .with_context(|| format!("{} is stopped", self.name))
    }

    fn get(&self, id: &str) -> anyhow::Result<Option<Value>> {
        let id = DocId::from_string(id)?;
        Ok(self.node()?.engine().get("cars", &id)?)
    }

    fn execute(&self, statement: &str) -> anyhow::Result<()> {
        self.node()?
            .engine()
            .execute(statement, &Map::new())
            .with_context(|| format!("{} running {statement}", self.name))?;
        Ok(())
    }

    async fn start(&mut self) -> anyhow::Result<()> {
        let node = Node::spawn(self.config.clone())
            .await
            .with_context(|| format!("starting {}", self.name))?;
        self.node = Some(node);
        Ok(())
    }

    async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(node) = self.node.take() {
            node.shutdown().await?;
        }
        Ok(())
    }

    /// The addresses other nodes dial (the node is listening once it has started).
    async fn mesh_addrs(&self) -> anyhow::Result<Vec<String>> {
        let sync = self.node()?.sync().context("the mesh is not running")?;
        let addrs = sync.client().listen_addrs().await?;
        ensure!(!addrs.is_empty(), "{} does not listen", self.name);
        Ok(addrs.iter().map(ToString::to_string).collect())
    }

    async fn peer_count(&self) -> anyhow::Result<usize> {
        let sync = self.node()?.sync().context("the mesh is not running")?;
        Ok(sync.presence().await?.peers.len())
    }
}

fn config(dir: &Path, name: &str, peers: Vec<String>) -> Config {
    Config {
        data_dir: dir.join(name),
        api: crate::config::ApiConfig {
            listen: "127.0.0.1:0".to_owned(),
            ..Default::default()
        },
        mesh: MeshSettings {
            enabled: true,
            listen: vec![
                "/ip4/127.0.0.1/tcp/0".to_owned(),
                "/ip4/127.0.0.1/udp/0/quic-v1".to_owned(),
            ],
            peers,
            mdns: false,
            subscriptions: vec![CARS.to_owned()],
        },
        ..Config::default()
    }
}

/// Waits until `done` holds, polling; fails with `what` after [`STEP_TIMEOUT`].
/// Returns how long it took.
async fn wait_until(
    what: &str,
    mut done: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if done().await? {
            return Ok(started.elapsed());
        }
        if started.elapsed() > STEP_TIMEOUT {
            bail!("{what}: not done after {} s", STEP_TIMEOUT.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Runs the demo; an error means a step did not do what it should.
pub fn run(options: DemoOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let dir = tempfile::Builder::new().prefix("trellis-demo-").tempdir()?;
    runtime.block_on(script(dir.path().to_path_buf(), options))
}

async fn script(dir: PathBuf, options: DemoOptions) -> anyhow::Result<()> {
    say(&format!(
        "Three Trellis nodes on this machine, each with its own data directory under {}:",
        dir.display()
    ));
    let mut b = Device {
        name: "tablet-b",
        config: config(&dir, "tablet-b", Vec::new()),
        node: None,
    };
    b.start().await?;
    let via_b = b.mesh_addrs().await?;
    let tcp = via_b.iter().find(|a| a.contains("/tcp/")).cloned();
    let quic = via_b.iter().find(|a| a.contains("/quic")).cloned();
    let mut a = Device {
        name: "tablet-a",
        config: config(&dir, "tablet-a", tcp.into_iter().collect()),
        node: None,
    };
    let mut c = Device {
        name: "pi-c",
        config: config(&dir, "pi-c", quic.into_iter().collect()),
        node: None,
    };
    a.start().await?;
    c.start().await?;
    for device in [&a, &b, &c] {
        say(&format!(
            "  {:<9} API http://{}",
            device.name,
            device.node()?.api_addr()
        ));
    }
    let linked = wait_until("linking the nodes", async || {
        Ok(a.peer_count().await? == 1 && b.peer_count().await? == 2 && c.peer_count().await? == 1)
    })
    .await?;
    say(&format!(
        "They link up in a line, tablet-a – tablet-b (TCP) – pi-c (QUIC), in {}; \
         tablet-a and pi-c never connect to each other.",
        ms(linked)
    ));

    a.execute(
        r#"INSERT INTO cars DOCUMENTS ({"_id": "truck-7", "plate": "TR-7", "color": "blue", "odometer": 1200, "crew": {"driver": "Ana"}})"#,
    )?;
    say("tablet-a inserts truck-7 (blue, 1200 km, driver Ana).");
    let took = wait_until("truck-7 reaching pi-c", async || {
        Ok(c.get("truck-7")?.is_some())
    })
    .await?;
    say(&format!(
        "  pi-c has it {} later, relayed by tablet-b: {}",
        ms(took),
        show(c.get("truck-7")?)
    ));

    say("At the same moment tablet-b repaints it red and pi-c logs a 35 km trip:");
    b.execute("UPDATE cars SET color = 'red' WHERE _id = 'truck-7'")?;
    c.execute("UPDATE cars APPLY odometer INCREMENT BY 35 WHERE _id = 'truck-7'")?;
    let expected = json!({
        "_id": "truck-7", "plate": "TR-7", "color": "red", "odometer": 1235,
        "crew": {"driver": "Ana"}
    });
    let took = wait_until("the concurrent edits converging", async || {
        Ok([&a, &b, &c]
            .iter()
            .all(|d| d.get("truck-7").ok().flatten().as_ref() == Some(&expected)))
    })
    .await?;
    say(&format!(
        "  after {} all three hold the same document, both edits kept: {}",
        ms(took),
        show(Some(expected.clone()))
    ));

    c.stop().await?;
    say("pi-c is switched off.");
    a.execute(
        r#"INSERT INTO cars DOCUMENTS ({"_id": "van-2", "plate": "VN-2", "color": "white"})"#,
    )?;
    a.execute("UPDATE cars SET crew.medic = 'Bo' WHERE _id = 'truck-7'")?;
    say("Meanwhile tablet-a inserts van-2 and adds a medic to truck-7's crew.");
    c.start().await?;
    let took = wait_until("pi-c catching up after its restart", async || {
        let truck = c.get("truck-7")?;
        Ok(c.get("van-2")?.is_some()
            && truck.as_ref().and_then(|t| t.pointer("/crew/medic")) == Some(&json!("Bo")))
    })
    .await?;
    say(&format!(
        "pi-c starts again from its data directory and catches up in {}: van-2 {}, truck-7 {}",
        ms(took),
        show(c.get("van-2")?),
        show(c.get("truck-7")?)
    ));

    a.execute("DELETE FROM cars WHERE _id = 'van-2'")?;
    let took = wait_until("the delete reaching pi-c", async || {
        Ok(c.get("van-2")?.is_none() && b.get("van-2")?.is_none())
    })
    .await?;
    say(&format!(
        "tablet-a deletes van-2; {} later it is gone on tablet-b and pi-c too.",
        ms(took)
    ));
    say("Demo finished: every step behaved as described.");

    if !options.once {
        say("");
        say("The three nodes keep running. Try, in another terminal:");
        let api = |d: &Device| d.node().map(|n| format!("http://{}", n.api_addr()));
        say(&format!(
            "  curl -s -X PUT {}/v1/collections/cars/docs/bus-1 -H 'Content-Type: application/json' -d '{{\"color\":\"yellow\"}}'",
            api(&a)?
        ));
        say(&format!(
            "  curl -s {}/v1/collections/cars/docs/bus-1",
            api(&c)?
        ));
        say(&format!("  curl -s {}/v1/presence", api(&b)?));
        say("Press Ctrl-C to stop them.");
        wait_for_signal().await;
    }
    for device in [&mut a, &mut b, &mut c] {
        device.stop().await?;
    }
    Ok(())
}

fn show(doc: Option<Value>) -> String {
    doc.map_or_else(|| "(none)".to_owned(), |doc| doc.to_string())
}

fn say(line: &str) {
    println!("{line}");
}
