//! `trellis-bench`: Trellis's benchmarks, each measured beside its anchor in the same
//! run, printed as one JSON object per line. Run in release mode:
//! `cargo run --release -p trellis-bench -- crdt|store|sync|mesh [--quick]`.

mod crdt;
mod mesh;
mod report;
mod store;
mod sync;

use clap::{Parser, ValueEnum};

#[derive(Debug, Parser)]
#[command(version, about = "Trellis benchmarks: one JSON line per measurement")]
struct Cli {
    /// Which benchmark to run.
    #[arg(value_enum, default_value_t = Bench::All)]
    bench: Bench,
    /// A smaller workload that finishes in under 30 seconds.
    #[arg(long)]
    quick: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Bench {
    /// Every benchmark below.
    All,
    /// CRDT document model against automerge and yrs.
    Crdt,
    /// The node's write path, point reads and indexed queries against raw RocksDB.
    Store,
    /// Two nodes over libp2p TCP: initial and incremental sync, bytes and round trips.
    Sync,
    /// Ten nodes in a line: write-to-readable latency end to end and per hop.
    Mesh,
    /// The store benchmark's inserts in transactions of 1,000 alone, for an
    /// instruction profiler (see `store::profile_inserts`); not part of `all`.
    StoreInserts,
}

/// The same allocator as `trellis-node`, so the figures are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    trellis_node::memory::disable_transparent_huge_pages();
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build measures nothing useful; use `cargo run --release`");
    }
    if matches!(cli.bench, Bench::All | Bench::Crdt) {
        crdt::run(cli.quick)?;
    }
    if matches!(cli.bench, Bench::All | Bench::Store) {
        store::run(cli.quick)?;
    }
    if matches!(cli.bench, Bench::All | Bench::Sync) {
        sync::run(cli.quick)?;
    }
    if matches!(cli.bench, Bench::All | Bench::Mesh) {
        mesh::run(cli.quick)?;
    }
    if cli.bench == Bench::StoreInserts {
        store::profile_inserts()?;
    }
    Ok(())
}
