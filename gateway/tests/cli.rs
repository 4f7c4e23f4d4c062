//! The gateway binary's command line, as an operator meets it today.

use std::process::Command;

fn gateway(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_trellis-gateway"))
        .args(args)
        .output()
        .expect("run trellis-gateway")
}

#[test]
fn help_and_version_answer() {
    let help = gateway(&["--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("NATS JetStream"));
    let version = gateway(&["--version"]);
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn running_it_says_the_service_is_not_built_yet_and_fails() {
    let bare = gateway(&[]);
    assert_eq!(bare.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bare.stderr).contains("not built yet"));
}
