//! The built `trellis-node` binary: `run` on a temporary data directory and a free
//! port, `query` through the API (INSERT then SELECT), `status`, `peers`, `export`,
//! then SIGTERM and a clean exit 0.

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_trellis-node");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn cli(args: &[&str], dir: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn json_stdout(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Kills the node if the test fails before stopping it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn run_query_and_stop_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let api = format!("http://{listen}");
    let child = Command::new(BIN)
        .arg("run")
        .current_dir(dir.path())
        .env("TRELLIS_DATA_DIR", dir.path().join("data"))
        .env("TRELLIS_API__LISTEN", &listen)
        .env("TRELLIS_MESH__LISTEN", r#"["/ip4/127.0.0.1/tcp/0"]"#)
        .env("TRELLIS_MESH__MDNS", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut node = Running(child);

    // Wait for /v1/health (the port is free when the node is not up yet).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = cli(&["status", "--api", &api], dir.path());
        if status.status.success() {
            let status: Value = serde_json::from_slice(&status.stdout).unwrap();
            assert_eq!(status["collections"], 0);
            break;
        }
        if let Some(exit) = node.0.try_wait().unwrap() {
            panic!("the node exited early: {exit:?}");
        }
        assert!(Instant::now() < deadline, "the node did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }

    let inserted = json_stdout(&cli(
        &[
            "query",
            "INSERT INTO tasks DOCUMENTS (:d)",
            "--args",
            r#"{"d": {"_id": "t1", "title": "water the plants"}}"#,
            "--api",
            &api,
        ],
        dir.path(),
    ));
    assert_eq!(inserted["ids"], serde_json::json!(["t1"]));
    let selected = json_stdout(&cli(
        &["query", "SELECT title FROM tasks", "--api", &api],
        dir.path(),
    ));
    assert_eq!(
        selected["documents"],
        serde_json::json!([{"title": "water the plants"}])
    );

    // `peers`: the node is in the mesh (listening, no peers yet).
    let presence = json_stdout(&cli(&["peers", "--api", &api], dir.path()));
    assert!(
        presence["listen"][0]
            .as_str()
            .is_some_and(|a| a.starts_with("/ip4/127.0.0.1/tcp/")),
        "{presence}"
    );
    assert_eq!(presence["peers"], serde_json::json!([]));

    // A query error is reported with its position and a non-zero exit.
    let bad = cli(&["query", "SELECT * FORM tasks", "--api", &api], dir.path());
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("line 1"), "{stderr}");

    // Export as JSON lines, import into another collection.
    let exported = cli(&["export", "tasks", "--api", &api], dir.path());
    assert!(exported.status.success());
    let lines = String::from_utf8_lossy(&exported.stdout).to_string();
    assert_eq!(lines.lines().count(), 1);
    let file = dir.path().join("tasks.jsonl");
    std::fs::File::create(&file)
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let imported = cli(
        &["import", "copy", file.to_str().unwrap(), "--api", &api],
        dir.path(),
    );
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    let copy = json_stdout(&cli(
        &["query", "SELECT * FROM copy", "--api", &api],
        dir.path(),
    ));
    assert_eq!(copy["documents"][0]["title"], "water the plants");

    // SIGTERM: a clean stop with exit status 0.
    let pid = node.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = node.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the node did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "{status:?}");

    // The data stays: query the data directory directly now that the node is stopped.
    let data = dir.path().join("data");
    let local = json_stdout(&cli(
        &[
            "query",
            "SELECT COUNT(*) FROM tasks",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        dir.path(),
    ));
    assert_eq!(local["documents"], serde_json::json!([{"count": 1}]));
    let key = json_stdout(&cli(
        &["keygen", "--data-dir", data.to_str().unwrap()],
        dir.path(),
    ));
    assert_eq!(key["created"], false);
}

#[test]
fn query_without_a_running_node_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let api = format!("http://127.0.0.1:{}", free_port());
    let out = cli(&["query", "SELECT * FROM c", "--api", &api], dir.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot reach trellis-node"), "{stderr}");
}

#[test]
fn run_refuses_a_public_address_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("run")
        .current_dir(dir.path())
        .env("TRELLIS_API__LISTEN", "0.0.0.0:0")
        .env_remove("TRELLIS_API__TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("api.token"), "{stderr}");
}

#[test]
fn a_mesh_port_already_taken_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    // Hold a UDP and a TCP port, as another node's listeners would.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let listens = [
        format!(
            "/ip4/127.0.0.1/udp/{}/quic-v1",
            udp.local_addr().unwrap().port()
        ),
        format!("/ip4/127.0.0.1/tcp/{}", tcp.local_addr().unwrap().port()),
    ];
    for listen in listens {
        let out = Command::new(BIN)
            .arg("run")
            .current_dir(dir.path())
            .env("TRELLIS_DATA_DIR", dir.path().join("data"))
            .env("TRELLIS_API__LISTEN", format!("127.0.0.1:{}", free_port()))
            .env("TRELLIS_MESH__LISTEN", format!(r#"["{listen}"]"#))
            .env("TRELLIS_MESH__MDNS", "false")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{listen}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("cannot start the mesh")
                && stderr.contains("mesh.listen")
                && stderr.contains(&listen),
            "{stderr}"
        );
    }
}
