//! procgate-bench: procgate's cost, measured side by side with the
//! database's own limit on the same machine in the same run.
//!
//! It starts a private PostgreSQL (src/embedded.rs) and a gateway process (this same
//! binary re-executed with `--gateway`, so the gateway is the release build
//! of the library and its RSS can be read from /proc), then runs the
//! scenarios of docs/benchmarks.md and prints one table of figures and
//! ratios against their targets. It also writes `summary.json` and a PNG
//! chart into `--out`. Timings live here, never in tests.
//!
//! ```text
//! cargo run --release --bin procgate-bench -- [--quick] [--out DIR]
//! ```

mod baselines;
mod feeds;
mod gateway;
mod h2load;
mod load;
mod report;
mod results;
mod scenarios;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(about = "Measure procgate against pgbench and the bare driver")]
pub struct Options {
    /// A short run (about two minutes) for CI smoke tests.
    #[arg(long)]
    pub quick: bool,
    /// Run scenario 1 (ExecuteSync under h2load against pgbench) only and
    /// print its table, e.g. while profiling the gateway; writes nothing.
    #[arg(long)]
    pub sync_only: bool,
    /// Where summary.json and the charts go.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
}

/// jemalloc rather than glibc's malloc: a call's many short-lived driver
/// buffers share the tokio workers' threads with the long-lived snapshots of
/// retained jobs, and glibc's arenas fragmented around them (1,087 bytes of
/// RSS per retained job against 589; docs/benchmarks.md). The gateway
/// measured here is this binary, so it allocates as `procgate` does.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(gateway::FLAG) {
        return gateway::serve(&args[2..]);
    }
    let options = Options::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(scenarios::run_all(&options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("procgate-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
