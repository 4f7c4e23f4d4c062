//! Crash test: a child process writes documents through the store as fast as it can and
//! prints each id once `apply` has acknowledged it; the parent kills it with SIGKILL at a
//! random moment, reopens the store, and checks that every acknowledged write is there.
//! Twelve rounds in the same directory, each with a new writer.
//!
//! The child is this test binary run again with [`CHILD_DIR`] set: the
//! `crash_writer_child` test then turns into the writer (and does nothing otherwise).
//! A failure prints the seed; `TRELLIS_CRASH_SEED=<seed>` replays the same delays.

use std::io::{BufRead, BufReader, Write};
use std::ops::Bound;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use trellis_common::clock::{Clock, Hlc};
use trellis_common::crdt::{DocState, Dot, Stamp, VersionVector, WriteContext};
use trellis_common::delta::{Delta, DocChange};
use trellis_common::ids::{ActorId, CollectionName, DocId};
use trellis_node::store::{IndexDef, RocksOptions, RocksStore, Store, WriteBatch};

/// Set in the child's environment: the store directory.
const CHILD_DIR: &str = "TRELLIS_STORE_CRASH_DIR";
/// Set in the child's environment: the round number (also the writer's actor id).
const CHILD_ROUND: &str = "TRELLIS_STORE_CRASH_ROUND";
const ROUNDS: u64 = 12;

fn collection() -> CollectionName {
    CollectionName::new("crash").unwrap()
}

/// The body written under an id: the parent rebuilds it from the id alone.
fn body(round: u64, n: u64) -> Value {
    json!({"round": round, "n": n, "text": format!("payload {round}/{n} ").repeat(1 + (n % 7) as usize)})
}

fn doc_id(round: u64, n: u64) -> DocId {
    DocId::from_string(format!("r{round}-{n}")).unwrap()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The writer: runs only in the child.
#[test]
fn crash_writer_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return; // An ordinary test run: nothing to do.
    };
    let round: u64 = std::env::var(CHILD_ROUND).unwrap().parse().unwrap();
    let store = RocksStore::open(&dir, &RocksOptions::default()).unwrap();
    let index = IndexDef::new("by_round", collection(), vec!["round".to_owned()]).unwrap();
    store.create_index(&index).unwrap();
    let actor = ActorId::from_u64(round);
    let mut clock = Clock::resume(store.max_hlc(), u64::MAX);
    let mut stdout = std::io::stdout().lock();
    // On a line of its own: the test harness has printed "test crash_writer_child ... ".
    writeln!(stdout, "\nREADY").unwrap();
    stdout.flush().unwrap();
    let mut n = 0;
    // Until killed (the bound only keeps a lost child from writing forever).
    while n < 1_000_000 {
        // Batches of 1, 2 and 3 documents, each document its own write (dot).
        let size = 1 + n % 3;
        let mut batch = WriteBatch::new();
        let mut written = Vec::new();
        for _ in 0..size {
            n += 1;
            let seq = store.version().get(actor) + batch.deltas().len() as u64 + 1;
            let dot = Dot { actor, seq };
            let ctx = WriteContext {
                stamp: Stamp {
                    hlc: clock.tick(now_ms()),
                    actor,
                },
                dot,
            };
            let state = DocState::insert_delta(ctx, &body(round, n)).unwrap();
            batch.push(Delta {
                since: [(actor, seq - 1)].into_iter().collect(),
                until: [(actor, seq)].into_iter().collect(),
                changes: vec![DocChange {
                    collection: collection(),
                    id: doc_id(round, n),
                    state,
                }],
            });
            written.push(n);
        }
        let applied = store.apply(&batch).unwrap();
        assert!(applied.all_advanced());
        for n in written {
            writeln!(stdout, "ACK {n}").unwrap();
        }
        stdout.flush().unwrap();
    }
}

/// A small deterministic generator for the kill delays (xorshift64*).
struct Rng(u64);

impl Rng {
    fn between(&mut self, low: u64, high: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        low + self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % (high - low + 1)
    }
}

#[test]
fn acknowledged_writes_survive_kill_9_of_the_writer() {
    if std::env::var_os(CHILD_DIR).is_some() {
        return;
    }
    let seed = std::env::var("TRELLIS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_ms() | 1);
    eprintln!("crash test seed: {seed} (replay with TRELLIS_CRASH_SEED={seed})");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    // Per round, how many documents were acknowledged.
    let mut acknowledged: Vec<(u64, u64)> = Vec::new();

    for round in 1..=ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_writer_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait until the writer has opened the store, then let it write for a while.
        loop {
            let line = lines
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|e| {
                    panic!("seed {seed}, round {round}: the writer never started: {e}")
                });
            if line.ends_with("READY") {
                break;
            }
        }
        let delay = rng.between(50, 400);
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap(); // SIGKILL on Unix.
        child.wait().unwrap();
        reader.join().unwrap();
        let acked: Vec<u64> = lines
            .try_iter()
            .filter_map(|line| line.strip_prefix("ACK ").map(|n| n.parse().unwrap()))
            .collect();
        let last = acked.last().copied().unwrap_or(0);
        assert_eq!(
            acked,
            (1..=last).collect::<Vec<_>>(),
            "acknowledgements come in order"
        );
        acknowledged.push((round, last));
        eprintln!("round {round}: killed after {delay} ms, {last} writes acknowledged");

        // The store opens cleanly and holds every acknowledged write, of every round.
        let store = RocksStore::open(dir.path(), &RocksOptions::default())
            .unwrap_or_else(|e| panic!("seed {seed}, round {round}: store does not reopen: {e}"));
        for &(r, count) in &acknowledged {
            for n in 1..=count {
                let state = store
                    .get(&collection(), &doc_id(r, n))
                    .unwrap()
                    .unwrap_or_else(|| {
                        panic!("seed {seed}, round {round}: acknowledged write r{r}-{n} is lost")
                    });
                let mut expected = body(r, n);
                expected.as_object_mut().unwrap().shift_insert(
                    0,
                    "_id".to_owned(),
                    json!(format!("r{r}-{n}")),
                );
                assert_eq!(state.to_json(&doc_id(r, n)), Some(expected), "seed {seed}");
            }
            assert!(
                store.version().get(ActorId::from_u64(r)) >= count,
                "seed {seed}: the version vector lost acknowledged writes of round {r}"
            );
            // The index was written in the same batches.
            let indexed = store
                .index_scan(
                    "by_round",
                    Bound::Included(&json!(r)),
                    Bound::Included(&json!(r)),
                )
                .unwrap();
            assert!(
                indexed.len() as u64 >= count,
                "seed {seed}: index lost entries of round {r}"
            );
        }
        let changed = store.docs_changed_since(&VersionVector::new()).unwrap();
        let total: u64 = acknowledged.iter().map(|(_, c)| c).sum();
        assert!(
            changed.len() as u64 >= total,
            "seed {seed}: change index lost entries"
        );
        assert!(store.max_hlc() > Hlc::ZERO || total == 0);
    }
    let total: u64 = acknowledged.iter().map(|(_, c)| c).sum();
    assert!(
        total > 0,
        "seed {seed}: the writer never got a write acknowledged"
    );
}
