//! Putting it together: bind the configured listeners, start the control
//! plane (first snapshot, health checks, admin API), serve until shutdown,
//! then drain.
//!
//! [`run`] takes already-bound listeners and a shutdown future, so tests and
//! `cutover demo` can bind `127.0.0.1:0` and learn the real addresses from
//! [`Listeners`] or [`Running`].

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin;
use crate::config::Config;
use crate::control::source::FileSource;
use crate::control::store::{EtcdStore, FileStore, Store};
use crate::control::thread::ControlThread;
use crate::control::ControlPlane;
use crate::metrics::Metrics;
use crate::proxy::{self, ProxyListener};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Which listener (`server.listen`, ...).
        what: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key is unusable.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The admin token file is unusable.
    #[error("admin.token_file {path}: {why}")]
    Token {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

/// The bound sockets of one proxy.
#[derive(Debug)]
pub struct Listeners {
    /// `server.listen`.
    pub http: ProxyListener,
    /// `server.tls.listen` and the TLS config of `server.tls`.
    pub https: Option<(ProxyListener, Arc<rustls::ServerConfig>)>,
    /// `admin.listen` (non-blocking; served on the control thread).
    pub admin: Option<std::net::TcpListener>,
    /// `admin.socket` and its path (non-blocking; served on the control
    /// thread).
    pub socket: Option<(std::os::unix::net::UnixListener, PathBuf)>,
    /// The bearer token the admin TCP listener requires.
    pub token: Option<Arc<str>>,
    /// The certificates obtained over ACME and the challenges in progress,
    /// shared by every TLS config built from here on.
    pub issued: Arc<crate::tls::Issued>,
}

fn bind_error(
    addr: impl ToString,
    what: &'static str,
) -> impl FnOnce(std::io::Error) -> StartError {
    let addr = addr.to_string();
    move |source| StartError::Bind { addr, what, source }
}

impl Listeners {
    /// Binds every listener `config` names and reads the admin token.
    ///
    /// # Errors
    ///
    /// [`StartError`] naming the address or file and the config key.
    pub async fn bind(config: &Config) -> Result<Listeners, StartError> {
        let token = match (&config.admin.listen, &config.admin.token_file) {
            (Some(_), Some(path)) => Some(read_token(path)?),
            _ => None,
        };
        let http = proxy::bind(config.server.listen, "http")
            .await
            .map_err(bind_error(config.server.listen, "server.listen"))?;
        let issued = Arc::<crate::tls::Issued>::default();
        let https = match &config.server.tls {
            Some(tls) => {
                let server_config = crate::tls::server_config(tls, &issued)?;
                let listener = proxy::bind(tls.listen, "https")
                    .await
                    .map_err(bind_error(tls.listen, "server.tls.listen"))?;
                Some((listener, server_config))
            }
            None => None,
        };
        let admin = match config.admin.listen {
            Some(addr) => Some(
                std::net::TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(bind_error(addr, "admin.listen"))?,
            ),
            None => None,
        };
        let socket = match &config.admin.socket {
            Some(path) => Some((
                admin::bind_unix(path).map_err(bind_error(path.display(), "admin.socket"))?,
                path.clone(),
            )),
            None => None,
        };
        // A token is required on a non-loopback admin listener (validated in
        // the config); on loopback it is used if given.
        Ok(Listeners {
            http,
            https,
            admin,
            socket,
            token,
            issued,
        })
    }

    /// The address `server.listen` is bound to.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .listener
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }

    /// The address `server.tls.listen` is bound to.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https
            .as_ref()
            .and_then(|(l, _)| l.listener.local_addr().ok())
    }

    /// The address `admin.listen` is bound to.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }
}

fn read_token(path: &std::path::Path) -> Result<Arc<str>, StartError> {
    let text = std::fs::read_to_string(path).map_err(|e| StartError::Token {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(StartError::Token {
            path: path.to_path_buf(),
            why: "is empty (expected the bearer token)".into(),
        });
    }
    Ok(token.into())
}

/// The longest `drain_timeout` of any service: how long shutdown waits.
/// With the Docker provider, whose services come and go, at least the
/// default `drain_timeout`.
fn drain_grace(config: &Config) -> Duration {
    let floor = match config.providers.docker {
        Some(_) => crate::config::DEFAULT_DRAIN_TIMEOUT,
        None => Duration::ZERO,
    };
    config
        .services
        .iter()
        .map(|s| s.drain_timeout)
        .max()
        .unwrap_or(Duration::ZERO)
        .max(floor)
}

/// Serves `config` on `listeners` until `shutdown` resolves, then stops
/// accepting and lets in-flight requests finish (up to the longest
/// `drain_timeout`, after which what is still open is cut). The admin API
/// answers until the drain is over (`/readyz`: 503). SIGHUP reloads the
/// config.
pub async fn run(config: Config, listeners: Listeners, shutdown: impl Future<Output = ()>) {
    let (thread, control) = start_control(config, &listeners).await;
    serve(thread, control, listeners, shutdown).await;
}

/// Starts the control thread and, on it, the control plane for `config`
/// (with the TLS config of `listeners` and the state file as its
/// release-state store), with the tasks the plane starts itself (health
/// reports and passive failures, config updates, canary analysis).
async fn start_control(
    config: Config,
    listeners: &Listeners,
) -> (ControlThread, Arc<ControlPlane>) {
    let tls = listeners.https.as_ref().map(|(_, c)| c.clone());
    let issued = listeners.issued.clone();
    let thread = ControlThread::start();
    let plane = thread.handle().spawn(async move {
        let metrics = Arc::new(Metrics::new());
        let store: Arc<dyn Store> = match &config.cluster {
            Some(cluster) => Arc::new(EtcdStore::open(cluster, &config.state.path, &metrics).await),
            None => Arc::new(FileStore::open(&config.state.path)),
        };
        ControlPlane::new(config, tls, issued, metrics, store).await
    });
    let control = plane
        .await
        .expect("building the control plane does not panic");
    (thread, control)
}

async fn serve(
    thread: ControlThread,
    control: Arc<ControlPlane>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) {
    let config = control.config().await;
    let (stop_tx, stop_rx) = watch::channel(false);
    // The admin API outlives the drain: `/readyz` answers 503 and
    // `wait-drained` keeps working while in-flight requests finish.
    let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
    if let Some(l) = &listeners.admin {
        tracing::info!(listen = ?l.local_addr().ok(), "admin API listening");
    }
    if let Some((_, path)) = &listeners.socket {
        tracing::info!(socket = %path.display(), "admin socket listening");
    }
    // The admin API, health checks and reloads run on the control thread.
    let admin = thread.handle().spawn(admin::serve(
        admin::Listeners {
            tcp: listeners.admin.map(|l| (l, listeners.token.clone())),
            unix: listeners.socket,
        },
        control.clone(),
        admin_stop_rx,
    ));
    // The Docker provider's first list is in force before the first round
    // of checks, so its containers are checked (and ready) with the rest.
    let docker = config.providers.docker.clone().map(|docker| {
        let _on_control_thread = thread.handle().enter();
        crate::provider::docker::spawn(docker, control.clone())
    });
    let acme = config
        .server
        .tls
        .as_ref()
        .and_then(|t| t.acme.clone())
        .map(|acme| {
            let _on_control_thread = thread.handle().enter();
            crate::acme::spawn(
                acme,
                crate::acme::state_dir(&config.state.path),
                control.issued().clone(),
                control.metrics().clone(),
                control.acme_domains(),
            )
        });
    thread.handle().spawn({
        let control = control.clone();
        async move {
            if let Some(docker) = docker {
                docker.first_list().await;
            }
            control.start_health().await
        }
    });
    let reload = thread.handle().spawn({
        let (file, updates) = (config.from_file, control.updates());
        let path = config.path.clone();
        async move {
            if file {
                FileSource::new(path).on_sighup(updates).await;
            }
        }
    });
    let grace = drain_grace(&config);
    tracing::info!(listen = %listeners.http.listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving");
    let metrics = control.metrics().clone();
    let http = tokio::spawn(proxy::serve(
        listeners.http,
        control.routing(),
        config.server.limits.clone(),
        metrics.connections("http"),
        stop_rx.clone(),
        grace,
    ));
    let https = listeners.https.map(|(listener, _)| {
        tokio::spawn(proxy::serve(
            listener,
            control.routing(),
            config.server.limits.clone(),
            metrics.connections("https"),
            stop_rx,
            grace,
        ))
    });
    shutdown.await;
    tracing::info!(grace = ?grace, "shutting down: draining in-flight requests");
    // One deadline for the whole drain: listeners and tunnels share it.
    let deadline = tokio::time::Instant::now() + grace;
    control.begin_shutdown().await;
    reload.abort();
    if let Some(acme) = acme {
        acme.abort();
    }
    let _ = stop_tx.send(true);
    let _ = http.await;
    if let Some(https) = https {
        let _ = https.await;
    }
    // Upgraded tunnels outlive their HTTP connection: wait for them too.
    while inflight(&control) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cut_inflight(&control);
    let _ = admin_stop_tx.send(true);
    let _ = admin.await;
    // Health checks, timers and whatever else runs there end with it.
    thread.stop().await;
    tracing::info!("stopped");
}

/// At the end of the drain, closes what is still open (upstream
/// connections, streams and tunnels), so nothing outlives [`run`].
fn cut_inflight(control: &ControlPlane) {
    let snapshot = control.routing().load_full();
    let cut: u64 = snapshot
        .services
        .iter()
        .flat_map(|s| s.pools.iter())
        .filter(|p| p.state.inflight() > 0)
        .map(|p| p.state.cut())
        .sum();
    if cut > 0 {
        tracing::warn!(cut, "drain deadline passed: cut requests still in flight");
    }
}

fn inflight(control: &ControlPlane) -> u64 {
    let snapshot = control.routing().load_full();
    snapshot
        .services
        .iter()
        .flat_map(|s| s.pools.iter())
        .map(|p| p.state.inflight())
        .sum()
}

/// A proxy running in the background (tests, `cutover demo`).
#[derive(Debug)]
pub struct Running {
    /// Where `server.listen` is bound.
    pub http_addr: SocketAddr,
    /// Where `server.tls.listen` is bound.
    pub https_addr: Option<SocketAddr>,
    /// Where `admin.listen` is bound.
    pub admin_addr: Option<SocketAddr>,
    /// The admin socket.
    pub socket: Option<PathBuf>,
    /// The control plane (switches, status) for in-process callers.
    pub control: Arc<ControlPlane>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    /// Stops accepting, drains and waits for the proxy to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Binds `config`'s listeners and runs the proxy in a background task.
///
/// # Errors
///
/// [`StartError`] when a listener cannot be bound.
pub async fn spawn(config: Config) -> Result<Running, StartError> {
    let listeners = Listeners::bind(&config).await?;
    let http_addr = listeners.http_addr();
    let admin_addr = listeners.admin_addr();
    let socket = listeners.socket.as_ref().map(|(_, p)| p.clone());
    let https_addr = listeners.https_addr();
    let (thread, control) = start_control(config, &listeners).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(thread, control.clone(), listeners, async move {
        let _ = stopped.await;
    }));
    Ok(Running {
        http_addr,
        https_addr,
        admin_addr,
        socket,
        control,
        stop: Some(stop),
        task,
    })
}
