//! The `cutover` binary: parse the command line, set up logging, hand over
//! to [`cutover::cli::run`].

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// mimalloc: faster than the system allocator for the many short-lived
/// allocations of a request, and it returns freed pages to the system, so
/// memory held by connections that have gone idle does not linger.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cutover::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("CUTOVER_LOG")
                .or_else(|_| EnvFilter::try_from_default_env())
                .unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    cutover::cli::run(cli)
}
