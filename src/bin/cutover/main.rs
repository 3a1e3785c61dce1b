//! The `cutover` binary: parse the command line, set up logging, hand over
//! to [`cutover::cli::run`].

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

mod alloc;

/// mimalloc: faster than the system allocator for the many short-lived
/// allocations of a request, and it returns freed pages to the system (see
/// [`return_freed_memory`]).
#[global_allocator]
static GLOBAL: alloc::MiMalloc = alloc::MiMalloc;

/// How often the allocator is asked to give freed pages back.
const COLLECT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// mimalloc gives a freed page back to the system only after a short delay,
/// and only from a later call into the allocator. When connections go idle
/// and park, the proxy stops allocating, so without this the pages their
/// state was freed from would stay resident. A thread of its own asks every
/// [`COLLECT_EVERY`]; the workers never wait for it.
fn return_freed_memory() {
    let spawned = std::thread::Builder::new()
        .name("cutover-memory".into())
        .spawn(|| loop {
            std::thread::sleep(COLLECT_EVERY);
            // SAFETY: mi_collect takes no pointers and may be called from
            // any thread at any time; `false` asks only for what is due.
            unsafe { libmimalloc_sys::mi_collect(false) };
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "freed memory is given back only while requests arrive");
    }
}

/// No transparent huge pages for this process.
///
/// mimalloc asks for transparent huge pages on its arenas, so a thread's
/// first allocations can fault in a whole 2 MiB page, zeroed: resident
/// memory with nothing in it for the proxy, and a fifth of the run of a
/// short-lived `cutover ctl`, for no gain in CPU per request
/// (docs/performance.md). The first allocation is the standard library's,
/// before `main`, so this runs as a constructor.
#[cfg(target_os = "linux")]
mod no_huge_pages {
    #[used]
    #[link_section = ".init_array"]
    static NO_HUGE_PAGES: extern "C" fn() = no_huge_pages;

    extern "C" fn no_huge_pages() {
        // Nothing to do about a refusal: the process runs as it would.
        let _ = rustix::thread::disable_transparent_huge_pages(true);
    }
}

fn main() -> ExitCode {
    let cli = cutover::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("CUTOVER_LOG")
                .or_else(|_| EnvFilter::try_from_default_env())
                .unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours on a terminal only: not in `docker logs` or a log file.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if matches!(
        cli.command,
        cutover::cli::Command::Run { .. }
            | cutover::cli::Command::Demo { .. }
            | cutover::cli::Command::DemoUpstream { .. }
    ) {
        return_freed_memory();
    }
    cutover::cli::run(cli)
}
