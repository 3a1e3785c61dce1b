//! The command line: `cutover run | check | demo | demo-upstream | ctl`.
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
#[command(name = "cutover", version = crate::build_info::version(), about)]
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
        /// Config file (default ./proxy.toml; with --docker, none unless given).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Serve the services of Docker containers' labels, read as Traefik
        /// reads them (as [providers.docker] does); with no config file, no
        /// other setup is needed.
        #[arg(long)]
        docker: bool,
        /// With --docker and no config file: the data listener [default: 0.0.0.0:80].
        #[arg(long, requires = "docker", value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// With --docker and no config file: an HTTP admin listener on a
        /// loopback address (the admin socket is always there).
        #[arg(long, requires = "docker", value_name = "ADDR")]
        admin: Option<SocketAddr>,
        /// With --docker and no config file: where the admin socket and the
        /// state file are [default: /var/lib/cutover].
        #[arg(long, requires = "docker", value_name = "DIR")]
        state_dir: Option<PathBuf>,
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
    /// Serve the demo's upstream alone (`/`, `/health` with its version,
    /// `/stream`, `/ws`): the agent of the compose example.
    DemoUpstream {
        /// Listener.
        #[arg(long, default_value = "0.0.0.0:5000", value_name = "ADDR")]
        listen: SocketAddr,
        /// The pool it names in its answers.
        #[arg(
            long,
            env = "CUTOVER_DEMO_POOL",
            default_value = "blue",
            value_name = "NAME"
        )]
        pool: String,
        /// The version it reports (`/health`'s `version`).
        #[arg(
            long,
            env = "CUTOVER_DEMO_VERSION",
            default_value = "v1",
            value_name = "V"
        )]
        version: String,
        /// How long it keeps serving after SIGTERM before it stops accepting.
        #[arg(long, env = "CUTOVER_DEMO_STOP_DELAY", default_value = "0s", value_parser = humantime::parse_duration, value_name = "DURATION")]
        stop_delay: std::time::Duration,
        /// After this many requests other than `/health`, answer every
        /// one of them 503 while `/health` stays 200: a version that
        /// breaks once it takes traffic.
        #[arg(long, env = "CUTOVER_DEMO_FAIL_AFTER", value_name = "N")]
        fail_after: Option<u64>,
    },
    /// Drive a running proxy over its admin API (status, switch, rollback, ...).
    Ctl(crate::ctl::CtlArgs),
}

/// What `cutover run` serves.
#[derive(Debug, Clone, PartialEq)]
pub struct RunArgs {
    /// `-c`.
    pub config: Option<PathBuf>,
    /// `--docker`.
    pub docker: bool,
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--admin`.
    pub admin: Option<SocketAddr>,
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
}

/// The config file `cutover run` reads when `-c` is not given.
const DEFAULT_CONFIG: &str = "proxy.toml";

/// The config `cutover run` serves: the file's (with the Docker provider
/// when `--docker` asks for it), or, for `--docker` without a file, the
/// one [`config::docker_only`] makes. The error is what to print.
///
/// # Errors
///
/// Every problem of the file, or a misuse of the options.
pub fn run_config(args: &RunArgs) -> Result<config::Config, Vec<String>> {
    let file_options = args.listen.is_some() || args.admin.is_some() || args.state_dir.is_some();
    let path = match (&args.config, args.docker) {
        (Some(path), _) => path.clone(),
        (None, false) => PathBuf::from(DEFAULT_CONFIG),
        (None, true) => {
            let listen = args
                .listen
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 80)));
            if let Some(admin) = args.admin.filter(|a| !a.ip().to_canonical().is_loopback()) {
                return Err(vec![format!(
                    "--admin {admin}: not a loopback address; an admin listener reachable from elsewhere needs a token:                      use a config file with [admin] listen and token_file, or --admin 127.0.0.1:{}",
                    admin.port()
                )]);
            }
            let dir = args
                .state_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(config::DEFAULT_DOCKER_STATE_DIR));
            if let Err(e) = std::fs::create_dir_all(&dir) {
                return Err(vec![format!(
                    "cutover: cannot create the state directory {}: {e} (choose another with --state-dir)",
                    dir.display()
                )]);
            }
            return Ok(config::docker_only(
                listen,
                args.admin,
                &dir,
                config::DockerConfig::default(),
            ));
        }
    };
    if file_options {
        return Err(vec![format!(
            "--listen, --admin and --state-dir are for --docker without a config file; set them in {}",
            path.display()
        )]);
    }
    let loaded = if args.docker {
        config::load_with_docker(&path)
    } else {
        config::load(&path)
    };
    loaded.map_err(|e| {
        let mut lines = e.lines();
        lines.push(format!(
            "cutover: not starting: {} is invalid",
            path.display()
        ));
        lines
    })
}

/// Runs the parsed command line; the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run {
            config,
            docker,
            listen,
            admin,
            state_dir,
        } => serve(&RunArgs {
            config,
            docker,
            listen,
            admin,
            state_dir,
        }),
        Command::Ctl(args) => ctl(args),
        Command::DemoUpstream {
            listen,
            pool,
            version,
            stop_delay,
            fail_after,
        } => {
            let runtime = match runtime(None) {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            let served = crate::demo::run_upstream(
                listen,
                crate::demo::UpstreamOptions {
                    pool,
                    version,
                    stop_delay,
                    fail_after,
                },
                shutdown_signal(),
            );
            match runtime.block_on(served) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("cutover demo-upstream: cannot listen on {listen}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
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
            if let Some(Err(e)) = cfg
                .server
                .tls
                .as_ref()
                .map(|t| crate::tls::server_config(t, &Default::default()))
            {
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

fn serve(args: &RunArgs) -> ExitCode {
    tracing::info!(
        version = crate::build_info::VERSION,
        commit = crate::build_info::COMMIT,
        build = crate::build_info::optimization(),
        "cutover {}",
        crate::build_info::version()
    );
    let cfg = match run_config(args) {
        Ok(cfg) => cfg,
        Err(lines) => {
            for line in lines {
                eprintln!("{line}");
            }
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

    fn run_args(config: Option<&std::path::Path>, docker: bool) -> RunArgs {
        RunArgs {
            config: config.map(Path::to_path_buf),
            docker,
            listen: None,
            admin: None,
            state_dir: None,
        }
    }

    #[test]
    fn run_docker_without_a_file_listens_on_80_with_its_files_in_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let args = RunArgs {
            state_dir: Some(state.clone()),
            ..run_args(None, true)
        };
        let cfg = run_config(&args).unwrap();
        assert_eq!(cfg.server.listen, SocketAddr::from(([0, 0, 0, 0], 80)));
        assert_eq!(cfg.admin.socket, Some(state.join("cutover.sock")));
        assert_eq!(cfg.state.path, state.join("cutover-state.json"));
        assert!(state.is_dir(), "the state dir is made");
        assert!(!cfg.from_file);
        assert_eq!(cfg.providers.docker, Some(config::DockerConfig::default()));
    }

    #[test]
    fn run_docker_with_a_file_adds_the_provider_and_refuses_the_file_less_options() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:0\"\n").unwrap();
        let cfg = run_config(&run_args(Some(&path), true)).unwrap();
        assert!(cfg.providers.docker.is_some() && cfg.from_file);
        let with_listen = RunArgs {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 1))),
            ..run_args(Some(&path), true)
        };
        let e = run_config(&with_listen).unwrap_err();
        assert!(e[0].contains("--docker without a config file"), "{e:?}");
        let open_admin = RunArgs {
            admin: Some(SocketAddr::from(([0, 0, 0, 0], 9090))),
            state_dir: Some(dir.path().to_path_buf()),
            ..run_args(None, true)
        };
        let e = run_config(&open_admin).unwrap_err();
        assert!(e[0].contains("not a loopback address"), "{e:?}");
    }

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
