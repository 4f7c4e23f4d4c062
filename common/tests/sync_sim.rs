//! The deterministic mesh simulator as a property test: many seeds, each a random mesh
//! with differing subscriptions, lossy links, partitions and restarts, must converge.
//!
//! - `TRELLIS_SIM_SEEDS=100000` runs more seeds (default 1,000);
//! - `TRELLIS_SIM_SEED=123` with `replay_one_seed` replays one seed with a trace;
//! - `sync_failing_seeds.txt` lists past failures, replayed by `past_failing_seeds_pass`.

use trellis_common::sync::sim::Simulation;

fn run(seed: u64) -> Result<trellis_common::sync::sim::SimReport, String> {
    Simulation::new(seed).run().map_err(|f| f.to_string())
}

#[test]
fn many_seeds_converge() {
    let seeds: u64 = std::env::var("TRELLIS_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000);
    let first: u64 = std::env::var("TRELLIS_SIM_FIRST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut failures = Vec::new();
    let mut frames = 0;
    for seed in first..first + seeds {
        match run(seed) {
            Ok(report) => frames += report.frames,
            Err(failure) => {
                eprintln!("{failure}");
                failures.push(seed);
                if failures.len() >= 10 {
                    break;
                }
            }
        }
    }
    eprintln!(
        "{seeds} seeds from {first}: {} failed, {frames} frames",
        failures.len()
    );
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
}

#[test]
fn replay_one_seed() {
    let Some(seed) = std::env::var("TRELLIS_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    else {
        return;
    };
    let mut sim = Simulation::new(seed);
    sim.set_trace(true);
    eprintln!("{:?}", sim.config());
    match sim.run() {
        Ok(report) => eprintln!("seed {seed} passed: {report:?}"),
        Err(failure) => panic!("{failure}"),
    }
}

#[test]
fn past_failing_seeds_pass() {
    let list = include_str!("sync_failing_seeds.txt");
    let seeds: Vec<u64> = list
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|seed| !seed.is_empty())
        .map(|seed| {
            seed.parse()
                .unwrap_or_else(|_| panic!("bad seed line: {seed}"))
        })
        .collect();
    assert!(!seeds.is_empty());
    let failures: Vec<String> = seeds.iter().filter_map(|seed| run(*seed).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_seed_replays_identically() {
    let a = Simulation::new(7).run().unwrap();
    let b = Simulation::new(7).run().unwrap();
    assert_eq!(a, b);
    assert!(a.writes > 0 && a.frames > 0);
}
