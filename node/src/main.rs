//! The `trellis-node` binary: parses the command line, sets up logging and hands over
//! to the library. Everything with behaviour lives in `trellis_node`; this file stays thin.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Trellis node: an offline-first document database that syncs itself with nearby devices.
///
/// Each edge device (tablet, Raspberry Pi, laptop) runs one `trellis-node`. It keeps
/// JSON documents in a local store and merges concurrent edits from other devices
/// without conflicts. Apps talk to their local node; the nodes sync with each other.
///
/// This version has one command, `demo`. Running a node as a long-lived service
/// (`trellis-node run`) comes with a later release.
///
/// Logging goes to standard error. Set `RUST_LOG` to change how much is logged,
/// e.g. `RUST_LOG=debug` or `RUST_LOG=trellis_node=debug,info` (default: `info`).
#[derive(Debug, Parser)]
#[command(name = "trellis-node", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show Trellis at work on this machine, with nothing to configure.
    ///
    /// Runs a scripted demonstration with embedded defaults and prints each step in
    /// plain words: documents written in one place, edited concurrently elsewhere, and
    /// merged to the same result everywhere. Use it to check that a build works on a
    /// device before deploying it.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Exit when the scripted part ends: status 0 if every step succeeded, non-zero if
    /// any failed. Use this in scripts and CI. (Today the demo always exits after its
    /// script; later versions keep the nodes running unless this flag is given.)
    #[arg(long)]
    once: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();

    let result = match cli.command {
        Command::Demo(DemoArgs { once }) => {
            trellis_node::demo::run(trellis_node::demo::DemoOptions { once })
        }
    };

    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Human-readable logs on standard error, filtered by `RUST_LOG` (default `info`).
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
