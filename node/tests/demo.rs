//! `trellis-node demo --once` as a user runs it: every scripted step must succeed.

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
    assert!(
        stdout.contains("pi-c never met tablet-a but has truck-7"),
        "{stdout}"
    );
    assert!(stdout.contains("it stays deleted everywhere"), "{stdout}");
    assert!(
        stdout.lines().last() == Some("Demo finished: every step behaved as described."),
        "{stdout}"
    );
}
