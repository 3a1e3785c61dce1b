//! The control plane: the only writer of [`Routing`]. Switch, rollback,
//! weights, reload and health changes each build a new snapshot and store it
//! in one step; a call returns only after the store, the event and the state
//! file write.
//!
//! Changes are serialized by one async mutex (the hot path never touches it).
//! Long-lived per-server health lives here, not in snapshots; a snapshot only
//! carries which servers take traffic.

mod actions;
pub mod analysis;
mod effect;
pub mod events;
pub mod persist;
pub mod priority;
mod progressive;
mod restore;
pub mod status;
pub mod thread;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;

use crate::config::{self, Config, ConfigError, PoolName, ServerAddr};
use crate::health::state::HealthState;
use crate::health::{self, HealthReport, Outcome};
use crate::metrics::Metrics;
use crate::snapshot::{Objects, Routing, ServerFailure};
use crate::wire::{Applied, Drained, ServiceStatus, Status};
use analysis::{Budget, Canary, Watch};
use effect::{build, commit, export_gauges, publish};
use events::{Actor, Event, EventLog, Reason};
use restore::{read_state, runtime_from_state};
use status::service_status;

pub use effect::audit_path;

/// Without active health checks, a server marked down by a failed connection
/// takes traffic again after this long.
const PASSIVE_RETRY: Duration = Duration::from_secs(5);
/// Longest `wait` of a drained query.
pub const MAX_DRAIN_WAIT: Duration = Duration::from_secs(3600);

/// Why a control action was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No service of that name.
    #[error("unknown service {0:?}")]
    UnknownService(String),
    /// The target pool has no healthy server.
    #[error("pool {pool} of service {service} has no healthy server (use force to switch anyway)")]
    TargetUnhealthy {
        /// The service.
        service: String,
        /// The pool.
        pool: PoolName,
    },
    /// A healthy target server reports another version.
    #[error("pool {pool} of service {service}: expected version {expected:?}, {found}")]
    VersionMismatch {
        /// The service.
        service: String,
        /// The pool.
        pool: PoolName,
        /// What was asked for.
        expected: String,
        /// What was found, e.g. `127.0.0.1:5001 reports "1.4.1"`.
        found: String,
    },
    /// No switch happened yet: nothing to roll back to.
    #[error("service {0} has not been switched: nothing to roll back to")]
    NothingToRollBack(String),
    /// A weight outside 0..=100.
    #[error("weight {0} is out of range (expected 0 to 100)")]
    InvalidWeight(i64),
    /// The new certificate or key is unusable; the old one keeps serving.
    #[error("{0}; the running certificate stays")]
    InvalidTls(#[source] crate::tls::TlsError),
    /// The service has no `[[service.NAME.canary.stages]]`.
    #[error("service {0} has no [[service.{0}.canary.stages]] configured")]
    NoCanaryStages(String),
    /// A canary is already running.
    #[error("a canary of service {0} is already running (abort it first)")]
    CanaryRunning(String),
    /// No canary is running.
    #[error("no canary of service {0} is running")]
    NoCanary(String),
    /// The config file is invalid; the running config stays.
    #[error("config is invalid; the running config stays:\n{0}")]
    InvalidConfig(#[source] ConfigError),
}

/// Runtime values of one service.
#[derive(Debug, Clone)]
struct Runtime {
    active: PoolName,
    standby_weight: u8,
    previous: Option<PoolName>,
    generation: u64,
    last_switch: Option<Event>,
    /// Raised by each switch; a drain deadline only cuts if it still matches.
    drain_epoch: u64,
    /// The staged rollout in progress.
    canary: Option<Canary>,
    /// The automated-rollback watch: the watched pool and its window.
    watch: Option<(PoolName, Watch)>,
    /// Cooldown and hourly cap of automated rollbacks.
    budget: Budget,
}

impl Runtime {
    fn fresh(active: PoolName, generation: u64) -> Runtime {
        Runtime {
            active,
            standby_weight: 0,
            previous: None,
            generation,
            last_switch: None,
            drain_epoch: 0,
            canary: None,
            watch: None,
            budget: Budget::default(),
        }
    }
}

/// Health of one server, kept across snapshots and reloads.
#[derive(Debug, Clone)]
struct ServerHealth {
    state: HealthState,
    version: Option<String>,
    last_check: Option<SystemTime>,
    last_error: Option<String>,
}

type ServerKey = (String, PoolName, ServerAddr);

struct Inner {
    config: Arc<Config>,
    tls: Option<Arc<rustls::ServerConfig>>,
    objects: Objects,
    generation: u64,
    services: BTreeMap<String, Runtime>,
    health: HashMap<ServerKey, ServerHealth>,
    events: EventLog,
    checkers: Vec<JoinHandle<()>>,
    writer: writer::Writer,
}

/// The control plane of one proxy.
pub struct ControlPlane {
    routing: Arc<Routing>,
    inner: Mutex<Inner>,
    health_tx: mpsc::Sender<HealthReport>,
    ready: AtomicBool,
    stopping: AtomicBool,
    /// The same handle `Objects` records into; kept here so readers never
    /// wait on the control mutex.
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane").finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Builds the first snapshot from `config` and the state file, and starts
    /// the task that applies health reports and passive failures. Health
    /// checks start with [`ControlPlane::start_health`].
    ///
    /// `tls` is the HTTPS config built from `config` (see [`crate::tls`]).
    pub fn new(
        config: Config,
        tls: Option<Arc<rustls::ServerConfig>>,
        metrics: Arc<Metrics>,
    ) -> Arc<ControlPlane> {
        let state = read_state(&config.state.path);
        let (services, events, resume) = runtime_from_state(&config, state);
        let events_json = events.json();
        let (objects, failures) = Objects::new(metrics.clone());
        let mut health = HashMap::new();
        for sc in &config.services {
            for pool in PoolName::ALL {
                for addr in &sc.pool(pool).servers {
                    health.insert(
                        (sc.name.clone(), pool, addr.clone()),
                        ServerHealth::new(HealthState::at_start()),
                    );
                }
            }
        }
        let mut inner = Inner {
            config: Arc::new(config),
            tls,
            objects,
            generation: 0,
            services,
            health,
            events,
            checkers: Vec::new(),
            writer: writer::Writer::start(events_json),
        };
        let snapshot = build(&mut inner, 1);
        inner.generation = 1;
        export_gauges(&inner, &snapshot);
        progressive::resume_canaries(&mut inner, &resume.canaries);
        progressive::resume_watches(&mut inner, &resume.watches);
        let (health_tx, health_rx) = mpsc::channel(1024);
        let control = Arc::new(ControlPlane {
            routing: Arc::new(Routing::new(snapshot)),
            inner: Mutex::new(inner),
            health_tx,
            ready: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            metrics,
        });
        tokio::spawn(control.clone().apply_reports(health_rx, failures));
        tokio::spawn(control.clone().run_analysis());
        control
    }

    /// The metrics everything records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The metrics in the Prometheus text format, with the in-flight gauges
    /// read now.
    pub async fn render_metrics(&self) -> String {
        let metrics = &self.metrics;
        let snapshot = self.routing.load();
        for svc in &snapshot.services {
            for view in &svc.pools {
                metrics
                    .inflight
                    .with_label_values(&[&*svc.name, view.state.name.as_str()])
                    .set(view.state.inflight() as i64);
            }
        }
        metrics.render()
    }

    /// The routing table the hot path reads.
    pub fn routing(&self) -> Arc<Routing> {
        self.routing.clone()
    }

    /// Runs the first round of checks (its results count at once), marks the
    /// proxy ready and starts the periodic checkers.
    pub async fn start_health(self: &Arc<Self>) {
        let config = self.inner.lock().await.config.clone();
        let reports = health::first_round(&config).await;
        {
            let mut inner = self.inner.lock().await;
            let mut flipped = false;
            for report in &reports {
                flipped |= record(&mut inner, report);
            }
            if flipped {
                publish(&self.routing, &mut inner);
            }
            inner.checkers = health::spawn_checkers(&inner.config, &self.health_tx);
        }
        self.ready.store(true, Ordering::Release);
        tracing::info!(
            checked = reports.len(),
            "first round of health checks done: ready"
        );
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.stopping.load(Ordering::Acquire)
    }

    /// Marks the proxy as shutting down (`/readyz` answers 503) and stops the
    /// health checkers.
    pub async fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        for task in self.inner.lock().await.checkers.drain(..) {
            task.abort();
        }
    }

    /// The config in force.
    pub async fn config(&self) -> Arc<Config> {
        self.inner.lock().await.config.clone()
    }

    async fn apply_reports(
        self: Arc<Self>,
        mut health: mpsc::Receiver<HealthReport>,
        mut failures: mpsc::Receiver<ServerFailure>,
    ) {
        loop {
            tokio::select! {
                Some(report) = health.recv() => {
                    let mut inner = self.inner.lock().await;
                    if record(&mut inner, &report) {
                        publish(&self.routing, &mut inner);
                    }
                }
                Some(failure) = failures.recv() => self.passive_failure(failure).await,
                else => return,
            }
        }
    }

    async fn passive_failure(&self, failure: ServerFailure) {
        let key = (
            failure.service.to_string(),
            failure.pool,
            failure.addr.clone(),
        );
        let mut inner = self.inner.lock().await;
        let has_checks = inner
            .config
            .services
            .iter()
            .any(|s| s.name == key.0 && s.health.is_some());
        let Some(h) = inner.health.get_mut(&key) else {
            return;
        };
        h.last_error = Some(failure.error.clone());
        if !h.state.mark_down() {
            return;
        }
        tracing::warn!(service = %key.0, pool = %key.1, server = %key.2, error = %failure.error, "server marked down: connection failed");
        publish(&self.routing, &mut inner);
        if !has_checks {
            // Nothing else would bring it back: try again after a pause.
            let tx = self.health_tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(PASSIVE_RETRY).await;
                let _ = tx
                    .send(HealthReport {
                        service: key.0,
                        pool: key.1,
                        addr: key.2,
                        outcome: Outcome::Pass { version: None },
                        at: SystemTime::now(),
                    })
                    .await;
            });
        }
    }

    /// Re-reads the config file and applies it as a new snapshot, keeping
    /// each service's active pool and weights. Servers new to the config are
    /// unproven until they pass `healthy_threshold` checks.
    ///
    /// # Errors
    ///
    /// [`ControlError::InvalidConfig`]: the running config stays.
    pub async fn reload(&self, actor: Actor) -> Result<Applied, ControlError> {
        let mut inner = self.inner.lock().await;
        let path = inner.config.path.clone();
        let new = match config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(path = %path.display(), errors = %e, "reload refused: the running config stays");
                return Err(ControlError::InvalidConfig(e));
            }
        };
        let tls = match new
            .server
            .tls
            .as_ref()
            .map(crate::tls::server_config)
            .transpose()
        {
            Ok(tls) => tls,
            Err(e) => {
                tracing::warn!(error = %e, "reload refused: the running config and certificate stay");
                return Err(ControlError::InvalidTls(e));
            }
        };
        warn_on_restart_keys(&inner.config, &new);
        inner.tls = tls;
        let mut services = BTreeMap::new();
        for sc in &new.services {
            let rt = inner
                .services
                .remove(&sc.name)
                .unwrap_or_else(|| Runtime::fresh(sc.active, inner.generation + 1));
            services.insert(sc.name.clone(), rt);
        }
        inner.services = services;
        let mut health = HashMap::new();
        for sc in &new.services {
            for pool in PoolName::ALL {
                for addr in &sc.pool(pool).servers {
                    let key = (sc.name.clone(), pool, addr.clone());
                    let h = inner.health.remove(&key).unwrap_or_else(|| {
                        ServerHealth::new(if sc.health.is_some() {
                            HealthState::unproven()
                        } else {
                            HealthState::at_start()
                        })
                    });
                    health.insert(key, h);
                }
            }
        }
        inner.health = health;
        for task in inner.checkers.drain(..) {
            task.abort();
        }
        inner.checkers = health::spawn_checkers(&new, &self.health_tx);
        inner.config = Arc::new(new);
        let generation = publish(&self.routing, &mut inner);
        let mut event = Event::now(
            None,
            None,
            None,
            Reason::Reload,
            actor,
            serde_json::json!({"path": path.display().to_string()}),
        );
        event.generation = generation;
        tracing::info!(path = %path.display(), actor = actor.as_str(), generation, "config reloaded");
        let persisted = commit(&mut inner, event).await;
        Ok(Applied {
            generation,
            changed: true,
            service: None,
            persisted,
        })
    }

    /// Every service.
    pub async fn status(&self) -> Status {
        let inner = self.inner.lock().await;
        let snapshot = self.routing.load();
        Status {
            generation: snapshot.generation,
            ready: self.is_ready(),
            services: inner
                .services
                .keys()
                .filter_map(|name| service_status(&snapshot, &inner, name))
                .collect(),
        }
    }

    /// One service.
    ///
    /// # Errors
    ///
    /// Unknown service.
    pub async fn service(&self, name: &str) -> Result<ServiceStatus, ControlError> {
        let inner = self.inner.lock().await;
        service_status(&self.routing.load(), &inner, name)
            .ok_or_else(|| ControlError::UnknownService(name.to_string()))
    }

    /// Events, oldest first, optionally of one service.
    pub async fn events(&self, service: Option<&str>) -> Vec<Event> {
        self.inner
            .lock()
            .await
            .events
            .list(service)
            .cloned()
            .collect()
    }

    /// Waits (at most `wait`) until the pools of `service` other than the
    /// active one have nothing in flight.
    ///
    /// # Errors
    ///
    /// Unknown service.
    pub async fn drained(&self, service: &str, wait: Duration) -> Result<Drained, ControlError> {
        let start = Instant::now();
        let wait = wait.min(MAX_DRAIN_WAIT);
        loop {
            let snapshot = self.routing.load_full();
            let svc = snapshot
                .service(service)
                .ok_or_else(|| ControlError::UnknownService(service.to_string()))?;
            let inflight: u64 = PoolName::ALL
                .iter()
                .filter(|p| **p != svc.active)
                .map(|p| svc.pool(*p).state.inflight())
                .sum();
            let waited = start.elapsed();
            if inflight == 0 || waited >= wait {
                return Ok(Drained {
                    service: service.to_string(),
                    drained: inflight == 0,
                    inflight,
                    active: Some(svc.active),
                    waited_ms: waited.as_millis() as u64,
                });
            }
            tokio::time::sleep(Duration::from_millis(10).min(wait - waited)).await;
        }
    }
}

impl ServerHealth {
    fn new(state: HealthState) -> ServerHealth {
        ServerHealth {
            state,
            version: None,
            last_check: None,
            last_error: None,
        }
    }
}

fn runtime(inner: &Inner, service: &str) -> Result<Runtime, ControlError> {
    inner
        .services
        .get(service)
        .cloned()
        .ok_or_else(|| ControlError::UnknownService(service.to_string()))
}

fn unchanged(routing: &Routing, inner: &Inner, service: &str) -> Applied {
    Applied {
        generation: inner.generation,
        changed: false,
        service: service_status(&routing.load(), inner, service),
        persisted: true,
    }
}

/// Applies one health report; true when the server's health flipped.
fn record(inner: &mut Inner, report: &HealthReport) -> bool {
    let thresholds = inner
        .config
        .services
        .iter()
        .find(|s| s.name == report.service)
        .map(|s| {
            s.health.as_ref().map_or((1, 1), |h| {
                (h.healthy_threshold.get(), h.unhealthy_threshold.get())
            })
        });
    let Some((up, down)) = thresholds else {
        return false;
    };
    let key = (report.service.clone(), report.pool, report.addr.clone());
    let Some(h) = inner.health.get_mut(&key) else {
        return false;
    };
    h.last_check = Some(report.at);
    let flipped = match &report.outcome {
        Outcome::Pass { version } => {
            h.version = version.clone().or(h.version.take());
            h.last_error = None;
            h.state.record_success(up)
        }
        Outcome::Fail(why) => {
            h.last_error = Some(why.clone());
            h.state.record_failure(down)
        }
    };
    if flipped {
        let healthy = h.state.is_healthy();
        let why = h.last_error.clone().unwrap_or_default();
        tracing::info!(service = %key.0, pool = %key.1, server = %key.2, healthy, error = %why, "server health changed");
        if let Some(rt) = inner.services.get_mut(&key.0) {
            rt.generation = inner.generation + 1;
        }
    }
    flipped
}

fn warn_on_restart_keys(old: &Config, new: &Config) {
    if old.server.listen != new.server.listen
        || old.server.tls.as_ref().map(|t| t.listen) != new.server.tls.as_ref().map(|t| t.listen)
    {
        tracing::warn!("reload: a changed listen address takes effect at the next restart");
    }
    if old.admin != new.admin {
        tracing::warn!("reload: [admin] changes take effect at the next restart");
    }
    if old.server.workers != new.server.workers || old.server.limits != new.server.limits {
        tracing::warn!("reload: [server] workers and limits take effect at the next restart (upstream timeouts apply now)");
    }
}
