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
        let listeners = match crate::Listeners::bind(&cfg).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cutover: {e}");
                return ExitCode::FAILURE;
            }
        };
        crate::run(cfg, listeners, shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}

/// The runtime for `workers` threads (default: [`default_workers`]). One
/// worker gets the current-thread scheduler: the same single thread, without
/// the work-stealing machinery it would never use (measured cheaper per
/// request by `benches/e2e.py`).
fn runtime(workers: Option<usize>) -> Result<tokio::runtime::Runtime, ExitCode> {
    let workers = workers.unwrap_or_else(default_workers);
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    builder.enable_all();
    let runtime = builder.build().map_err(|e| {
        eprintln!("cutover: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })?;
    tracing::info!(workers, "runtime started");
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
