//! The command line: `cutover run | check | demo | ctl`.
//!
//! Exit codes: 0 success, 1 invalid config or a refused command, 2 bad usage
//! (clap's own exit code for usage errors).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config;

/// cutover: a reverse proxy with atomic blue-green cutover built in.
#[derive(Debug, Parser)]
#[command(name = "cutover", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Run {
        /// Config file.
        #[arg(short, long, default_value = "proxy.toml")]
        config: PathBuf,
    },
    /// Validate a config file: exit 0, or print every error and exit 1.
    Check {
        /// Config file.
        #[arg(short, long, default_value = "proxy.toml")]
        config: PathBuf,
    },
    /// Run a self-contained demo: the proxy in front of two built-in
    /// upstreams (blue v1 and green v2).
    Demo {
        /// Proxy listener.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Admin listener.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: SocketAddr,
    },
    /// Drive a running proxy over its admin API (status, switch, rollback, ...).
    Ctl(crate::ctl::CtlArgs),
}

/// Runs the parsed command line; the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => serve(&config),
        Command::Ctl(args) => ctl(args),
        Command::Demo { listen, admin } => {
            let runtime = match runtime(None) {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            match runtime.block_on(crate::demo::run(listen, admin, shutdown_signal())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("cutover demo: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn check(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(cfg) => {
            // The certificates are read as `run` would read them.
            if let Some(Err(e)) = cfg.server.tls.as_ref().map(crate::tls::server_config) {
                eprintln!("{}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            println!(
                "{}: ok ({} services, {} routes)",
                path.display(),
                cfg.services.len(),
                cfg.routes.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            for line in e.lines() {
                eprintln!("{line}");
            }
            ExitCode::FAILURE
        }
    }
}

fn ctl(args: crate::ctl::CtlArgs) -> ExitCode {
    // One admin call at a time: a current-thread runtime is enough.
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(crate::ctl::run(args)),
        Err(e) => {
            eprintln!("cutover ctl: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(path: &Path) -> ExitCode {
    let cfg = match config::load(path) {
        Ok(cfg) => cfg,
        Err(e) => {
            for line in e.lines() {
                eprintln!("{line}");
            }
            eprintln!("cutover: not starting: {} is invalid", path.display());
            return ExitCode::FAILURE;
        }
    };
    let runtime = match runtime(cfg.server.workers.map(|w| w.get())) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let listeners = match crate::server::Listeners::bind(&cfg).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cutover: {e}");
                return ExitCode::FAILURE;
            }
        };
        crate::server::run(cfg, listeners, shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}

/// The environment variable read for the worker count when the config sets
/// none (tokio's own name for it, which its builder reads only when nothing
/// else sets the count).
pub const WORKERS_ENV: &str = "TOKIO_WORKER_THREADS";

/// How many workers to run, and what said so (for the start-up log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workers {
    /// The number of worker threads.
    pub count: usize,
    /// `"config"`, [`WORKERS_ENV`] or `"cores"`.
    pub from: &'static str,
}

/// The worker count: `server.workers` when the config sets it, else the
/// value of [`WORKERS_ENV`] (`env`) unless empty, else [`default_workers`].
/// A value in the environment that is not a whole number of at least 1 is
/// an error naming the variable, the value and what was expected.
pub fn worker_count(
    configured: Option<usize>,
    env: Option<std::ffi::OsString>,
) -> Result<Workers, String> {
    if let Some(count) = configured {
        return Ok(Workers {
            count,
            from: "config",
        });
    }
    // Set but empty (as compose leaves `VAR: ${UNSET}`) counts as unset.
    let Some(value) = env.filter(|v| !v.to_string_lossy().trim().is_empty()) else {
        return Ok(Workers {
            count: default_workers(),
            from: "cores",
        });
    };
    let count = value
        .to_str()
        .and_then(|v| v.trim().parse::<std::num::NonZeroUsize>().ok())
        .ok_or_else(|| {
            format!(
                "{WORKERS_ENV}={value:?}: expected a whole number of worker threads, at least 1 \
                 (or set `server.workers` in the config, or leave it unset for one per core)"
            )
        })?;
    Ok(Workers {
        count: count.get(),
        from: WORKERS_ENV,
    })
}

/// The runtime for `configured` worker threads (else as [`worker_count`]
/// says). One worker gets the current-thread scheduler: the same single
/// thread, without the work-stealing machinery it would never use (measured
/// cheaper per request by `benches/e2e.py`).
fn runtime(configured: Option<usize>) -> Result<tokio::runtime::Runtime, ExitCode> {
    let workers = worker_count(configured, std::env::var_os(WORKERS_ENV)).map_err(|e| {
        eprintln!("cutover: not starting: {e}");
        ExitCode::FAILURE
    })?;
    let mut builder = if workers.count == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers.count);
        b
    };
    builder.enable_all();
    let runtime = builder.build().map_err(|e| {
        eprintln!("cutover: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })?;
    tracing::info!(
        workers = workers.count,
        from = workers.from,
        "runtime started"
    );
    Ok(runtime)
}

/// The cores this process may run on: its CPU affinity and cgroup quota
/// count, so a proxy pinned to one core with `taskset`, or run in a
/// container limited to one CPU, gets the single-thread scheduler.
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_sets_the_worker_count_before_the_environment() {
        let w = worker_count(Some(3), Some("2".into())).unwrap();
        assert_eq!(
            w,
            Workers {
                count: 3,
                from: "config"
            }
        );
    }

    #[test]
    fn the_environment_sets_it_when_the_config_does_not() {
        let w = worker_count(None, Some(" 2 ".into())).unwrap();
        assert_eq!(
            w,
            Workers {
                count: 2,
                from: WORKERS_ENV
            }
        );
    }

    #[test]
    fn with_neither_it_is_one_per_core() {
        let cores = Workers {
            count: default_workers(),
            from: "cores",
        };
        assert_eq!(worker_count(None, None).unwrap(), cores);
        // Set but empty, as compose leaves a variable whose source is unset.
        assert_eq!(worker_count(None, Some("".into())).unwrap(), cores);
        assert_eq!(worker_count(None, Some(" ".into())).unwrap(), cores);
    }

    #[test]
    fn a_bad_value_in_the_environment_names_the_variable_the_value_and_what_was_expected() {
        for bad in ["0", "two", "-1", "2.5"] {
            let e = worker_count(None, Some(bad.into())).unwrap_err();
            assert!(e.contains(WORKERS_ENV), "{e}");
            assert!(e.contains(&format!("{bad:?}")), "{e}");
            assert!(e.contains("at least 1"), "{e}");
        }
    }
}
