//! The `trellis-node` binary: parses the command line, sets up logging and hands over
//! to the library. Everything with behaviour lives in `trellis_node`; this file stays thin.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::Value;
use tracing_subscriber::EnvFilter;
use trellis_node::cli::{self, Target, TargetArgs};
use trellis_node::config::Config;

/// Trellis node: an offline-first document database that syncs itself with nearby devices.
///
/// Each edge device (tablet, Raspberry Pi, laptop) runs one `trellis-node`. It keeps
/// JSON documents in a local store and merges concurrent edits from other devices
/// without conflicts. Apps talk to their local node over HTTP and WebSocket
/// (127.0.0.1:4680 by default); the nodes sync with each other.
///
/// Start a node with `trellis-node run` (no configuration needed), then try
/// `trellis-node query "SELECT * FROM tasks"`.
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
    /// Run the node until Ctrl-C or SIGTERM.
    ///
    /// Works with no configuration: data in ./trellis-data (or $TRELLIS_DATA_DIR), the
    /// API on 127.0.0.1:4680, every write fsynced. A TOML file (--config) and
    /// TRELLIS_... environment variables (e.g. TRELLIS_API__LISTEN=127.0.0.1:5000)
    /// change any setting; see docs/ or `node/src/config.rs` for the keys.
    Run(RunArgs),
    /// Run a statement of the query language and print the result as JSON.
    ///
    /// Talks to the running node's API by default; --data-dir opens a data directory
    /// directly (only when no node is running on it). Several statements separated by
    /// `;` run as one transaction.
    Query(QueryArgs),
    /// Print what the node is and holds (actor, data directory, collections).
    Status(TargetOpts),
    /// Print the running node's mesh: its peer id, listen addresses, and each direct
    /// peer with its links (kind, address, round-trip time, bytes).
    Peers(TargetOpts),
    /// Fetch an attachment from the running node's peers (resuming a fetch that was
    /// interrupted), with a progress bar; prints the final progress as JSON.
    Fetch(FetchArgs),
    /// Make this node's identity key (Ed25519) if there is none, and print its actor id
    /// and public key. `run` does this on first start too.
    Keygen(KeygenArgs),
    /// Write every document of a collection to standard output, one JSON object a line.
    Export(ExportArgs),
    /// Read JSON lines (a file, or standard input) and upsert them into a collection.
    Import(ImportArgs),
    /// Show Trellis at work on this machine, with nothing to configure.
    ///
    /// Starts three real nodes (data under a temporary directory, APIs and mesh links on
    /// loopback) linked in a line, and prints each step of a script in plain words: a
    /// document written on one end appears on the other, concurrent edits merge, a
    /// stopped node catches up after its restart, a delete propagates. Then the nodes
    /// keep running for you to try with curl, until Ctrl-C. Use it to check that a build
    /// works on a device before deploying it.
    Demo(DemoArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Configuration file (TOML). Without it, the defaults and TRELLIS_... variables.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct TargetOpts {
    /// Configuration file, for the API address and token.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Work on this data directory instead of a running node.
    #[arg(long, conflicts_with = "api")]
    data_dir: Option<PathBuf>,
    /// The running node's API (default: http:// + api.listen of the configuration).
    #[arg(long)]
    api: Option<String>,
}

impl From<TargetOpts> for TargetArgs {
    fn from(o: TargetOpts) -> Self {
        Self {
            config: o.config,
            data_dir: o.data_dir,
            api: o.api,
        }
    }
}

#[derive(Debug, Args)]
struct QueryArgs {
    /// The statement, e.g. "SELECT * FROM tasks WHERE done = false".
    statement: String,
    /// Values of the :name parameters, as a JSON object.
    #[arg(long)]
    args: Option<String>,
    #[command(flatten)]
    target: TargetOpts,
}

#[derive(Debug, Args)]
struct FetchArgs {
    /// The attachment's token as JSON (`{"_attachment": "<hash>", "len": n, ...}`), or
    /// its hash with --len.
    attachment: String,
    /// The attachment's length in bytes, when giving the hash alone.
    #[arg(long)]
    len: Option<u64>,
    #[command(flatten)]
    target: TargetOpts,
}

#[derive(Debug, Args)]
struct KeygenArgs {
    /// The data directory (default: data_dir of the configuration).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Configuration file.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ExportArgs {
    /// The collection.
    collection: String,
    #[command(flatten)]
    target: TargetOpts,
}

#[derive(Debug, Args)]
struct ImportArgs {
    /// The collection.
    collection: String,
    /// JSON lines file (default: standard input).
    file: Option<PathBuf>,
    #[command(flatten)]
    target: TargetOpts,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Exit when the scripted part ends (status 0 if every step succeeded, non-zero if
    /// any failed) instead of leaving the nodes running. Use this in scripts and CI.
    #[arg(long)]
    once: bool,
}

/// mimalloc: the document model allocates many small paths and entries, and glibc
/// malloc costs about a third of the write path (see `trellis-bench store`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo speaks for itself on standard output; its nodes log only problems.
    let default_filter = match cli.command {
        Command::Demo(_) => "warn",
        _ => "info",
    };
    init_tracing(default_filter);
    trellis_node::memory::disable_transparent_huge_pages();
    match dispatch(cli.command) {
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

fn dispatch(command: Command) -> anyhow::Result<()> {
    if let Command::Demo(DemoArgs { once }) = command {
        return trellis_node::demo::run(trellis_node::demo::DemoOptions { once });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match command {
            Command::Run(RunArgs { config }) => {
                let config = Config::load(config.as_deref())?;
                trellis_node::node::run(config).await?;
            }
            Command::Query(q) => {
                let target = Target::resolve(&q.target.into())?;
                print_json(&cli::query(&target, &q.statement, q.args.as_deref()).await?)?;
            }
            Command::Status(opts) => {
                let target = Target::resolve(&opts.into())?;
                print_json(&cli::status(&target).await?)?;
            }
            Command::Peers(opts) => {
                let target = Target::resolve(&opts.into())?;
                print_json(&cli::peers(&target).await?)?;
            }
            Command::Fetch(f) => {
                let target = Target::resolve(&f.target.into())?;
                print_json(&cli::fetch(&target, &f.attachment, f.len).await?)?;
            }
            Command::Keygen(KeygenArgs { data_dir, config }) => {
                let data_dir = match data_dir {
                    Some(dir) => dir,
                    None => Config::load(config.as_deref())?.data_dir,
                };
                print_json(&cli::keygen(&data_dir)?)?;
            }
            Command::Export(e) => {
                let target = Target::resolve(&e.target.into())?;
                let n = cli::export(&target, &e.collection, &mut std::io::stdout().lock()).await?;
                eprintln!("exported {n} documents from '{}'", e.collection);
            }
            Command::Import(i) => {
                let target = Target::resolve(&i.target.into())?;
                let mut input: Box<dyn BufRead> = match &i.file {
                    Some(path) => Box::new(std::io::BufReader::new(
                        std::fs::File::open(path)
                            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
                    )),
                    None => Box::new(std::io::stdin().lock()),
                };
                let n = cli::import(&target, &i.collection, &mut input).await?;
                eprintln!("imported {n} documents into '{}'", i.collection);
            }
            Command::Demo(_) => unreachable!("handled above"),
        }
        Ok(())
    })
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Human-readable logs on standard error, filtered by `RUST_LOG` (else `default`).
fn init_tracing(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
