//! Real `trellis-node` processes syncing over loopback: separate data directories, real
//! TCP and QUIC, static peers, mDNS off. A line A – B – C where A and C never connect:
//! writes, updates and deletes on A reach C; C killed with SIGKILL and restarted
//! catches up; B stopped (a partition) while A and C both write, then restarted, and
//! everything converges. A fourth node D, behind B, subscribes only to blue cars: it
//! gets the blue ones, never the red ones, and a blue car repainted red is updated on
//! it.
//!
//! Each wait polls the API until the expected state appears, up to [`WAIT`]; nothing
//! asserts how long anything takes.

use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use trellis_node::client::ApiClient;

const BIN: &str = env!("CARGO_BIN_EXE_trellis-node");
const WAIT: Duration = Duration::from_secs(60);

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One node process and how to restart it.
struct Proc {
    name: &'static str,
    api: ApiClient,
    tcp: String,
    quic: String,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Proc {
    async fn new(dir: &Path, name: &'static str, peers: &[&str], subscriptions: &[&str]) -> Self {
        let api_port = free_tcp_port();
        let tcp = format!("/ip4/127.0.0.1/tcp/{}", free_tcp_port());
        let quic = format!("/ip4/127.0.0.1/udp/{}/quic-v1", free_udp_port());
        let list = |items: &[&str]| {
            let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
            format!("[{}]", quoted.join(", "))
        };
        let env = vec![
            ("TRELLIS_DATA_DIR", dir.join(name).display().to_string()),
            ("TRELLIS_API__LISTEN", format!("127.0.0.1:{api_port}")),
            ("TRELLIS_MESH__LISTEN", list(&[&tcp, &quic])),
            ("TRELLIS_MESH__PEERS", list(peers)),
            ("TRELLIS_MESH__MDNS", "false".to_owned()),
            ("TRELLIS_MESH__SUBSCRIPTIONS", list(subscriptions)),
            ("TRELLIS_STORE__DURABILITY", "buffered".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let api = ApiClient::new(&format!("http://127.0.0.1:{api_port}"), None).unwrap();
        let mut proc = Self {
            name,
            api,
            tcp,
            quic,
            env,
            child: None,
        };
        proc.start();
        proc.wait_up().await;
        proc
    }

    /// Waits until the API answers (the node opened its store and joined the mesh).
    async fn wait_up(&mut self) {
        let started = Instant::now();
        while self.api.get("/v1/health").await.is_err() {
            if let Some(exit) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "{} exited at start: {exit:?} (see {})",
                    self.name,
                    self.log().display()
                );
            }
            assert!(started.elapsed() < WAIT, "{} did not come up", self.name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!(
            "trellis-mesh-{}-{}.log",
            self.name,
            std::process::id()
        ))
    }

    fn start(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        let log = self.log();
        let child = Command::new(BIN)
            .arg("run")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info,trellis_node::net=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM and wait for a clean exit.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            let exit = child.wait().unwrap();
            assert!(exit.success(), "{} exited with {exit:?}", self.name);
        }
    }

    async fn execute(&self, query: &str) -> Value {
        self.api
            .post("/v1/execute", &json!({ "query": query }))
            .await
            .unwrap_or_else(|e| panic!("{}: {query}: {e}", self.name))
    }

    /// A car by id, `None` when absent (or while the node is not answering yet).
    async fn car(&self, id: &str) -> Option<Value> {
        let result = self
            .api
            .post(
                "/v1/execute",
                &json!({ "query": "SELECT * FROM cars WHERE _id = :id", "args": { "id": id } }),
            )
            .await
            .ok()?;
        result["documents"].as_array()?.first().cloned()
    }

    async fn wait_for_car(&self, id: &str, what: &str, check: impl Fn(Option<&Value>) -> bool) {
        let started = Instant::now();
        loop {
            let car = self.car(id).await;
            if check(car.as_ref()) {
                return;
            }
            assert!(
                started.elapsed() < WAIT,
                "{}: {what}: car {id} is {car:?} after {WAIT:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn is(expected: Value) -> impl Fn(Option<&Value>) -> bool {
    move |car| car == Some(&expected)
}

fn absent(car: Option<&Value>) -> bool {
    car.is_none()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_in_a_line_sync_survive_a_kill_and_heal_a_partition() {
    let dir = tempfile::tempdir().unwrap();
    let all = ["SELECT * FROM cars"];
    let mut b = Proc::new(dir.path(), "b", &[], &all).await;
    let (b_tcp, b_quic) = (b.tcp.clone(), b.quic.clone());
    let a = Proc::new(dir.path(), "a", &[&b_tcp], &all).await;
    let mut c = Proc::new(dir.path(), "c", &[&b_quic], &all).await;

    // A write on A reaches C through B (A and C have no link).
    a.execute(r#"INSERT INTO cars DOCUMENTS ({"_id": "t1", "color": "blue", "km": 1})"#)
        .await;
    let t1 = json!({"_id": "t1", "color": "blue", "km": 1});
    c.wait_for_car("t1", "insert on A", is(t1)).await;

    // Presence: A draws the whole line, C two hops away, from the links B and C
    // announce (A never talks to C).
    let c_id = c.api.get("/v1/presence").await.unwrap()["node_id"].clone();
    let started = Instant::now();
    loop {
        let presence = a.api.get("/v1/presence").await.unwrap();
        let hops: Vec<u64> = presence["mesh"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["hops"].as_u64().unwrap())
            .collect();
        let c_hops = presence["mesh"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node_id"] == c_id)
            .map(|n| n["hops"].clone());
        if hops == [0, 1, 2] && c_hops == Some(json!(2)) {
            break;
        }
        assert!(started.elapsed() < WAIT, "A's view of the mesh: {presence}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Update and delete travel the same way.
    a.execute("UPDATE cars SET km = 2 WHERE _id = 't1'").await;
    c.wait_for_car(
        "t1",
        "update on A",
        is(json!({"_id": "t1", "color": "blue", "km": 2})),
    )
    .await;
    a.execute(r#"INSERT INTO cars DOCUMENTS ({"_id": "gone", "color": "grey"})"#)
        .await;
    c.wait_for_car("gone", "insert on A", |car| car.is_some())
        .await;
    a.execute("DELETE FROM cars WHERE _id = 'gone'").await;
    c.wait_for_car("gone", "delete on A", absent).await;

    // C killed; A writes meanwhile; C restarted catches up.
    c.kill();
    a.execute(r#"INSERT INTO cars DOCUMENTS ({"_id": "while-c-was-down", "color": "red"})"#)
        .await;
    a.execute("UPDATE cars SET km = 3 WHERE _id = 't1'").await;
    c.start();
    c.wait_up().await;
    c.wait_for_car(
        "while-c-was-down",
        "catching up after SIGKILL",
        is(json!({"_id": "while-c-was-down", "color": "red"})),
    )
    .await;
    c.wait_for_car(
        "t1",
        "catching up after SIGKILL",
        is(json!({"_id": "t1", "color": "blue", "km": 3})),
    )
    .await;

    // Partition: B stops; A and C write on both sides, also to the same document.
    b.stop();
    a.execute(r#"INSERT INTO cars DOCUMENTS ({"_id": "from-a", "color": "green"})"#)
        .await;
    c.execute(r#"INSERT INTO cars DOCUMENTS ({"_id": "from-c", "color": "white"})"#)
        .await;
    a.execute("UPDATE cars SET color = 'black' WHERE _id = 't1'")
        .await;
    c.execute("UPDATE cars APPLY km INCREMENT BY 10 WHERE _id = 't1'")
        .await;
    // Heal.
    b.start();
    b.wait_up().await;
    let t1 = json!({"_id": "t1", "color": "black", "km": 13});
    for node in [&a, &b, &c] {
        node.wait_for_car(
            "from-a",
            "healing",
            is(json!({"_id": "from-a", "color": "green"})),
        )
        .await;
        node.wait_for_car(
            "from-c",
            "healing",
            is(json!({"_id": "from-c", "color": "white"})),
        )
        .await;
        node.wait_for_car("t1", "healing", is(t1.clone())).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selective_subscriber_gets_the_blue_cars_only_and_sees_a_repaint() {
    let dir = tempfile::tempdir().unwrap();
    let b = Proc::new(dir.path(), "b", &[], &["SELECT * FROM cars"]).await;
    let a = Proc::new(dir.path(), "a", &[&b.tcp], &["SELECT * FROM cars"]).await;
    // D hangs off B and asks only for blue cars; B relays for it.
    let d = Proc::new(
        dir.path(),
        "d",
        &[&b.quic],
        &["SELECT * FROM cars WHERE color = 'blue'"],
    )
    .await;

    a.execute(
        r#"INSERT INTO cars DOCUMENTS ({"_id": "blue-1", "color": "blue"}), ({"_id": "red-1", "color": "red"}), ({"_id": "blue-2", "color": "blue"})"#,
    )
    .await;
    d.wait_for_car(
        "blue-1",
        "blue car",
        is(json!({"_id": "blue-1", "color": "blue"})),
    )
    .await;
    d.wait_for_car(
        "blue-2",
        "blue car",
        is(json!({"_id": "blue-2", "color": "blue"})),
    )
    .await;
    // B holds everything (it subscribes to all cars), so the red car has been sent as
    // far as it would go; D must not have it.
    b.wait_for_car("red-1", "red car on B", |car| car.is_some())
        .await;
    assert_eq!(d.car("red-1").await, None, "D received a red car");

    // Repainted red on A: D, which holds it, is told.
    a.execute("UPDATE cars SET color = 'red' WHERE _id = 'blue-2'")
        .await;
    d.wait_for_car(
        "blue-2",
        "repaint",
        is(json!({"_id": "blue-2", "color": "red"})),
    )
    .await;
    // And a car that becomes blue arrives.
    a.execute("UPDATE cars SET color = 'blue' WHERE _id = 'red-1'")
        .await;
    d.wait_for_car(
        "red-1",
        "newly blue",
        is(json!({"_id": "red-1", "color": "blue"})),
    )
    .await;

    // `trellis-node fetch` on B takes an attachment from A, its peer, in chunks.
    let blob = dir.path().join("photo.bin");
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&blob, &bytes).unwrap();
    let upload = Command::new("curl")
        .args(["-sf", "-X", "POST", "--data-binary"])
        .arg(format!("@{}", blob.display()))
        .arg(format!("{}/v1/attachments", a.api.base()))
        .output()
        .unwrap();
    assert!(upload.status.success(), "{upload:?}");
    let token = String::from_utf8(upload.stdout).unwrap();
    let fetched = Command::new(BIN)
        .args(["fetch", &token, "--api", b.api.base()])
        .output()
        .unwrap();
    assert!(
        fetched.status.success(),
        "{}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    let progress: Value = serde_json::from_slice(&fetched.stdout).unwrap();
    assert_eq!(progress["state"], "complete");
    assert_eq!(progress["chunks_stored"], 4);

    // D's presence shows its one peer, B.
    let presence = d.api.get("/v1/presence").await.unwrap();
    assert_eq!(
        presence["peers"].as_array().map(Vec::len),
        Some(1),
        "{presence}"
    );
}
