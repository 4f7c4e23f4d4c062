//! The `trellis-gateway` binary. The gateway service itself is not written yet: this
//! entry point only answers `--help` and `--version`, and says so when run.

use std::process::ExitCode;

use clap::Parser;

/// Trellis gateway: a "big peer" that joins a Trellis mesh and bridges it to the cloud.
///
/// When it exists, the gateway will hold every document of its mesh, publish changes
/// to NATS JetStream (so the meshes of many sites meet there), mirror every document
/// into Postgres, and serve REST, WebSocket live feeds and a dashboard page.
///
/// NOT BUILT YET: this version only answers --help and --version. Run without
/// arguments, it explains this and exits with status 2. See the Roadmap section of
/// README.md for what comes and in which order.
#[derive(Debug, Parser)]
#[command(name = "trellis-gateway", version)]
struct Cli {}

/// Exit status when run: the service does not exist yet, which is not a success.
const NOT_BUILT_YET: u8 = 2;

fn main() -> ExitCode {
    let Cli {} = Cli::parse();
    eprintln!(
        "trellis-gateway {}: the gateway service is not built yet.\n\
         \n\
         It arrives with the \"Gateway and cloud\" item of the Roadmap in README.md \
         (NATS JetStream bridge, Postgres mirror, REST and WebSocket API, dashboard), \
         after the node's store (issue 3) and peer-to-peer sync (issue 4).\n\
         \n\
         Today this binary only answers --help and --version. To see what Trellis can \
         do now, run `make demo` in the repository.",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(NOT_BUILT_YET)
}
