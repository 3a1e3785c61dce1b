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
/// state was freed from would stay resident (7.3 KiB per idle connection
/// instead of 4.1 in the e2e benchmark). A thread of its own asks every
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

/// Whether a command serves traffic (and runs long), judged by the first
/// argument: those keep transparent huge pages, see [`huge_pages`].
fn serves(command: &[u8]) -> bool {
    matches!(command, b"run" | b"demo")
}

/// Transparent huge pages for the commands that serve, not for the short ones.
///
/// mimalloc asks for transparent huge pages on its arenas, so a process's
/// first allocation faults in a whole 2 MiB page, zeroed. For the proxy that
/// is one page among many, and huge pages spare it TLB misses. For
/// `cutover ctl`, which a deploy script starts for every switch, zeroing it
/// was about a fifth of the run (0.6 ms a call, on the CPU the script shares
/// with everything else). The first allocation is the standard library's,
/// before `main`, so the choice is made in a constructor, from the arguments
/// glibc hands to constructors (the way the standard library takes them).
/// Every command but `run` and `demo` turns huge pages off for its process.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod huge_pages {
    use std::ffi::{c_char, c_int, CStr};

    #[used]
    #[link_section = ".init_array"]
    static CHOOSE: extern "C" fn(c_int, *const *const c_char, *const *const c_char) = choose;

    extern "C" fn choose(argc: c_int, argv: *const *const c_char, _envp: *const *const c_char) {
        let command = if argc >= 2 && !argv.is_null() {
            // SAFETY: glibc calls `.init_array` functions with the argc and
            // argv that `main` gets: argv holds argc pointers to
            // NUL-terminated strings, which live as long as the process.
            unsafe { CStr::from_ptr(*argv.add(1)) }.to_bytes()
        } else {
            &[]
        };
        if !super::serves(command) {
            // Nothing to do about a refusal: the command runs as it would.
            let _ = rustix::thread::disable_transparent_huge_pages(true);
        }
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
        cutover::cli::Command::Run { .. } | cutover::cli::Command::Demo { .. }
    ) {
        return_freed_memory();
    }
    cutover::cli::run(cli)
}
