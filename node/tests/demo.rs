//! `trellis-node demo --once` as a user runs it: three real nodes on loopback, and every
//! scripted step must succeed.

use std::process::Command;

#[test]
fn the_demo_runs_its_script_and_exits_zero() {
    let output = Command::new(env!("CARGO_BIN_EXE_trellis-node"))
        .args(["demo", "--once"])
        .output()
        .expect("run trellis-node demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    for step in [
        "They link up in a line",
        "pi-c has it",
        "all three hold the same document",
        "catches up",
        "it is gone on tablet-b and pi-c too",
    ] {
        assert!(stdout.contains(step), "missing '{step}':\n{stdout}");
    }
    assert!(
        stdout.lines().last() == Some("Demo finished: every step behaved as described."),
        "{stdout}"
    );
}
