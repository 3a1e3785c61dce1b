//! The control plane: the only writer of [`Routing`]. Switch, rollback,
//! weights, reload and health changes each build a new snapshot and store it
//! in one step; a call returns only after the store, the event and the state
//! file write.
//!
//! Changes are serialized by one async mutex (the hot path never touches it).
//! Long-lived per-server health lives here, not in snapshots; a snapshot only
//! carries which servers take traffic.

pub mod analysis;
pub mod events;
pub mod persist;
mod progressive;
pub mod status;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;

use crate::config::{self, Config, ConfigError, PoolName, ServerAddr};
use crate::health::state::HealthState;
use crate::health::{self, HealthReport, Outcome};
use crate::metrics::Metrics;
use crate::snapshot::{Objects, Routing, ServerFailure, ServiceRuntime, Snapshot};
use analysis::{Budget, Canary, Watch};
use events::{Actor, Event, EventLog, Reason};
use persist::{ServiceState, StateFile};
use status::{Applied, Drained, PoolStatus, ServerStatus, ServiceStatus, Status};

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

/// The body of a switch request.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchRequest {
    /// Target pool; default: the standby pool.
    #[serde(default)]
    pub to: Option<PoolName>,
    /// Refuse unless every healthy target server reports this version.
    #[serde(default)]
    pub expect_version: Option<String>,
    /// Skip the health and version gates.
    #[serde(default)]
    pub force: bool,
}

/// What was under way at the last stop, to take up again.
#[derive(Debug, Default)]
struct Resume {
    /// The canaries that were running: service, stage.
    canaries: Vec<(String, usize)>,
    /// The automated-rollback watches of active pools: service, until when.
    watches: Vec<(String, SystemTime)>,
}

/// Each service's runtime values from the state file, the event log, and
/// what was under way.
fn runtime_from_state(
    config: &Config,
    state: Option<StateFile>,
) -> (BTreeMap<String, Runtime>, EventLog, Resume) {
    let (mut saved, events) = match state {
        Some(s) => (s.services, s.events),
        None => (BTreeMap::new(), Vec::new()),
    };
    let mut budgets = rollback_budgets(&events);
    let events = EventLog::from_events(events);
    let mut resume = Resume::default();
    let services = config
        .services
        .iter()
        .map(|sc| {
            let rt = match saved.remove(&sc.name) {
                Some(s) => {
                    if let Some(stage) = s.canary_stage {
                        resume.canaries.push((sc.name.clone(), stage));
                    }
                    if let Some(until) = s.rollback_watch_until.as_deref() {
                        match humantime::parse_rfc3339_weak(until) {
                            Ok(until) => resume.watches.push((sc.name.clone(), until)),
                            Err(e) => tracing::warn!(
                                service = %sc.name,
                                value = until,
                                error = %e,
                                "state file: rollback_watch_until is not an RFC 3339 time; the watch is not taken up"
                            ),
                        }
                    }
                    Runtime {
                        standby_weight: s.standby_weight.min(100),
                        previous: s.previous,
                        last_switch: s.last_switch,
                        budget: budgets.remove(&sc.name).unwrap_or_default(),
                        ..Runtime::fresh(s.active, 1)
                    }
                }
                None => Runtime::fresh(sc.active, 1),
            };
            (sc.name.clone(), rt)
        })
        .collect();
    (services, events, resume)
}

/// Each service's automated-rollback budget, from the rollbacks in the
/// saved history: a restart keeps the cooldown and the hourly cap.
fn rollback_budgets(events: &[Event]) -> HashMap<String, Budget> {
    let mut times: HashMap<String, Vec<SystemTime>> = HashMap::new();
    for e in events.iter().filter(|e| e.reason == Reason::AutoRollback) {
        let (Some(service), Ok(at)) = (&e.service, humantime::parse_rfc3339_weak(&e.time)) else {
            continue;
        };
        times.entry(service.clone()).or_default().push(at);
    }
    let (now, wall) = (Instant::now(), SystemTime::now());
    times
        .into_iter()
        .map(|(service, at)| (service, Budget::from_history(at, now, wall)))
        .collect()
}

/// Reads the state file; a bad one is reported, set aside, and ignored.
fn read_state(path: &std::path::Path) -> Option<StateFile> {
    match persist::load(path) {
        Ok(state) => state,
        Err(e) => {
            tracing::error!(error = %e, "state file unusable: starting from the config's active pools");
            match persist::set_aside(path) {
                Ok(aside) => {
                    tracing::warn!(path = %aside.display(), "kept the unusable state file aside")
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not move the unusable state file aside")
                }
            }
            None
        }
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

    /// Switches `service` to `req.to` (default: the standby pool), gated on
    /// the target's health and version unless `force`.
    ///
    /// # Errors
    ///
    /// Unknown service, unhealthy target, version mismatch.
    pub async fn switch(
        self: &Arc<Self>,
        service: &str,
        req: SwitchRequest,
        actor: Actor,
    ) -> Result<Applied, ControlError> {
        let mut inner = self.inner.lock().await;
        let rt = runtime(&inner, service)?;
        let to = req.to.unwrap_or(rt.active.other());
        if to == rt.active {
            return Ok(unchanged(&self.routing, &inner, service));
        }
        if !req.force {
            check_target(&inner, service, to, req.expect_version.as_deref())?;
        }
        let detail = serde_json::json!({"force": req.force, "expect_version": req.expect_version});
        Ok(self
            .apply_switch(&mut inner, service, to, Reason::Manual, actor, detail)
            .await)
    }

    /// Switches `service` back to the pool active before its last switch.
    ///
    /// # Errors
    ///
    /// Unknown service, or no switch to undo.
    pub async fn rollback(
        self: &Arc<Self>,
        service: &str,
        actor: Actor,
    ) -> Result<Applied, ControlError> {
        let mut inner = self.inner.lock().await;
        let rt = runtime(&inner, service)?;
        let to = rt
            .previous
            .filter(|p| *p != rt.active)
            .ok_or_else(|| ControlError::NothingToRollBack(service.to_string()))?;
        Ok(self
            .apply_switch(
                &mut inner,
                service,
                to,
                Reason::Rollback,
                actor,
                serde_json::json!({}),
            )
            .await)
    }

    async fn apply_switch(
        self: &Arc<Self>,
        inner: &mut Inner,
        service: &str,
        to: PoolName,
        reason: Reason,
        actor: Actor,
        detail: serde_json::Value,
    ) -> Applied {
        let generation = inner.generation + 1;
        let drain = inner
            .config
            .services
            .iter()
            .find(|s| s.name == service)
            .map_or(config::DEFAULT_DRAIN_TIMEOUT, |s| s.drain_timeout);
        let rt = inner
            .services
            .get_mut(service)
            .expect("caller checked the service exists");
        let from = rt.active;
        let mut event = Event::now(Some(service), Some(from), Some(to), reason, actor, detail);
        event.generation = generation;
        rt.previous = Some(from);
        rt.active = to;
        rt.standby_weight = 0;
        rt.generation = generation;
        rt.last_switch = Some(event.clone());
        rt.drain_epoch += 1;
        rt.canary = None;
        rt.watch = None;
        let epoch = rt.drain_epoch;
        if matches!(reason, Reason::Manual | Reason::Canary) {
            progressive::start_watch(inner, service, to, None);
        }
        publish(&self.routing, inner);
        inner
            .objects
            .metrics()
            .switches
            .with_label_values(&[service, reason.as_str()])
            .inc();
        tracing::info!(service, from = %from, to = %to, reason = reason.as_str(), actor = actor.as_str(), generation, "switched");
        let persisted = commit(inner, event).await;
        let control = self.clone();
        let service_name = service.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(drain).await;
            control.end_drain(&service_name, from, epoch).await;
        });
        Applied {
            generation,
            changed: true,
            service: service_status(&self.routing.load(), inner, service),
            persisted,
        }
    }

    /// At the drain deadline, cuts what is still open on the pool that lost
    /// the traffic, unless a later switch or a weight made it live again.
    async fn end_drain(&self, service: &str, pool: PoolName, epoch: u64) {
        let inner = self.inner.lock().await;
        let Some(rt) = inner.services.get(service) else {
            return;
        };
        if rt.drain_epoch != epoch || rt.active == pool || rt.standby_weight > 0 {
            return;
        }
        if let Some(state) = inner.objects.pool_state(service, pool) {
            let cut = state.cut();
            inner
                .objects
                .metrics()
                .drain_cut
                .with_label_values(&[service, pool.as_str()])
                .inc_by(cut);
            if cut > 0 {
                tracing::warn!(service, pool = %pool, cut, "drain timeout: cut requests still in flight on the old pool");
            }
        }
    }

    /// Sends `percent` of new requests of `service` to its standby pool.
    ///
    /// # Errors
    ///
    /// Unknown service, or a weight outside 0..=100.
    pub async fn set_weight(
        &self,
        service: &str,
        percent: i64,
        actor: Actor,
    ) -> Result<Applied, ControlError> {
        let weight = u8::try_from(percent)
            .ok()
            .filter(|w| *w <= 100)
            .ok_or(ControlError::InvalidWeight(percent))?;
        let mut inner = self.inner.lock().await;
        let rt = runtime(&inner, service)?;
        if rt.standby_weight == weight {
            return Ok(unchanged(&self.routing, &inner, service));
        }
        // An operator's weight ends a staged rollout: the operator takes over.
        let ended_canary = inner
            .services
            .get_mut(service)
            .and_then(|rt| rt.canary.take())
            .is_some();
        let detail = serde_json::json!({"standby": weight, "was": rt.standby_weight, "ended_canary": ended_canary});
        Ok(self
            .apply_weight(&mut inner, service, weight, Reason::Weight, actor, detail)
            .await)
    }

    /// Sets the standby weight of an existing service, records the event and
    /// persists.
    async fn apply_weight(
        &self,
        inner: &mut Inner,
        service: &str,
        weight: u8,
        reason: Reason,
        actor: Actor,
        detail: serde_json::Value,
    ) -> Applied {
        let generation = inner.generation + 1;
        let rt = inner
            .services
            .get_mut(service)
            .expect("caller checked the service exists");
        let mut event = Event::now(
            Some(service),
            Some(rt.active),
            Some(rt.active.other()),
            reason,
            actor,
            detail,
        );
        event.generation = generation;
        rt.standby_weight = weight;
        rt.generation = generation;
        publish(&self.routing, inner);
        tracing::info!(
            service,
            standby = weight,
            reason = reason.as_str(),
            actor = actor.as_str(),
            generation,
            "weight changed"
        );
        let persisted = commit(inner, event).await;
        Applied {
            generation,
            changed: true,
            service: service_status(&self.routing.load(), inner, service),
            persisted,
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
                    active: svc.active,
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

/// The health and version gates of a switch to `to`.
fn check_target(
    inner: &Inner,
    service: &str,
    to: PoolName,
    expect_version: Option<&str>,
) -> Result<(), ControlError> {
    let servers = inner
        .config
        .services
        .iter()
        .find(|s| s.name == service)
        .map(|s| s.pool(to).servers.clone())
        .unwrap_or_default();
    let healthy: Vec<(&ServerAddr, &ServerHealth)> = servers
        .iter()
        .filter_map(|addr| {
            inner
                .health
                .get(&(service.to_string(), to, addr.clone()))
                .map(|h| (addr, h))
        })
        .filter(|(_, h)| h.state.is_healthy())
        .collect();
    if healthy.is_empty() {
        return Err(ControlError::TargetUnhealthy {
            service: service.to_string(),
            pool: to,
        });
    }
    if let Some(expected) = expect_version {
        for (addr, h) in healthy {
            if h.version.as_deref() != Some(expected) {
                let found = match &h.version {
                    Some(v) => format!("{addr} reports {v:?}"),
                    None => format!("{addr} reports no version"),
                };
                return Err(ControlError::VersionMismatch {
                    service: service.to_string(),
                    pool: to,
                    expected: expected.to_string(),
                    found,
                });
            }
        }
    }
    Ok(())
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

/// Builds a snapshot of `inner` at `generation`.
fn build(inner: &mut Inner, generation: u64) -> Snapshot {
    let Inner {
        config,
        objects,
        services,
        health,
        tls,
        ..
    } = inner;
    objects.build(
        config.clone(),
        generation,
        tls.clone(),
        &|sc| {
            let rt = services.get(&sc.name);
            ServiceRuntime {
                active: rt.map_or(sc.active, |r| r.active),
                standby_weight: rt.map_or(0, |r| r.standby_weight),
                generation: rt.map_or(generation, |r| r.generation),
            }
        },
        &|svc, pool, server| {
            health
                .get(&(svc.to_string(), pool, server.upstream.addr().clone()))
                .is_none_or(|h| h.state.is_healthy())
        },
    )
}

/// Builds and stores the next snapshot; returns its generation.
fn publish(routing: &Routing, inner: &mut Inner) -> u64 {
    let generation = inner.generation + 1;
    let snapshot = build(inner, generation);
    export_gauges(inner, &snapshot);
    routing.store(snapshot);
    inner.generation = generation;
    generation
}

/// Mirrors active pools, weights and server health into their gauges.
fn export_gauges(inner: &Inner, snapshot: &Snapshot) {
    let metrics = inner.objects.metrics();
    for svc in &snapshot.services {
        for pool in PoolName::ALL {
            let labels = [&*svc.name, pool.as_str()];
            let active = pool == svc.active;
            metrics
                .active_pool
                .with_label_values(&labels)
                .set(i64::from(active));
            let weight = if active {
                100 - svc.standby_weight
            } else {
                svc.standby_weight
            };
            metrics
                .weight
                .with_label_values(&labels)
                .set(i64::from(weight));
            let view = svc.pool(pool);
            for server in &view.servers {
                let up = view.healthy.iter().any(|h| Arc::ptr_eq(h, server));
                metrics
                    .upstream_up
                    .with_label_values(&[&*svc.name, pool.as_str(), server.upstream.label()])
                    .set(i64::from(up));
            }
        }
    }
}

/// Appends an event to the history and writes it, with the state it leaves,
/// to the audit log beside the state file (JSON lines, so what happened can
/// be read after the fact) and to the state file, on the writer thread.
/// False (and an error log) when the state file could not be written.
async fn commit(inner: &mut Inner, event: Event) -> bool {
    let line = inner.events.push(event);
    let state = inner.config.state.path.clone();
    let result = inner.writer.write(line, state, services_state(inner)).await;
    if let Err(e) = &result {
        tracing::error!(error = %e, "state not persisted");
    }
    result.is_ok()
}

/// `cutover-state.json` → `cutover-audit.jsonl` in the same directory.
pub fn audit_path(state: &std::path::Path) -> PathBuf {
    let stem = state
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("cutover-state");
    let stem = stem.strip_suffix("-state").unwrap_or(stem);
    state.with_file_name(format!("{stem}-audit.jsonl"))
}

/// What the state file keeps of each service (the writer keeps the history).
fn services_state(inner: &Inner) -> BTreeMap<String, ServiceState> {
    inner
        .services
        .iter()
        .map(|(name, rt)| {
            (
                name.clone(),
                ServiceState {
                    active: rt.active,
                    standby_weight: rt.standby_weight,
                    previous: rt.previous,
                    last_switch: rt.last_switch.clone(),
                    canary_stage: rt.canary.as_ref().map(Canary::stage),
                    rollback_watch_until: progressive::active_watch_until(rt),
                },
            )
        })
        .collect()
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

/// One service's status from the snapshot and health records.
fn service_status(snapshot: &Snapshot, inner: &Inner, name: &str) -> Option<ServiceStatus> {
    let rt = inner.services.get(name)?;
    let svc = snapshot.service(name)?;
    let standby = rt.active.other();
    let (canary, watch) = progressive::describe(inner, name);
    let mut weights = BTreeMap::new();
    weights.insert(rt.active, 100 - rt.standby_weight);
    weights.insert(standby, rt.standby_weight);
    let pools = PoolName::ALL
        .into_iter()
        .map(|pool| {
            let view = svc.pool(pool);
            let inflight = view.state.inflight();
            let draining = if pool != rt.active && rt.standby_weight == 0 {
                inflight
            } else {
                0
            };
            let servers = view
                .servers
                .iter()
                .map(|server| {
                    let addr = server.upstream.addr();
                    let h = inner.health.get(&(name.to_string(), pool, addr.clone()));
                    ServerStatus {
                        address: addr.to_string(),
                        healthy: h.is_none_or(|h| h.state.is_healthy()),
                        version: h.and_then(|h| h.version.clone()),
                        inflight: server.inflight(),
                        last_check: h.and_then(|h| h.last_check).map(events::rfc3339),
                        last_error: h.and_then(|h| h.last_error.clone()),
                    }
                })
                .collect();
            (
                pool,
                PoolStatus {
                    inflight,
                    draining,
                    healthy: !view.healthy.is_empty(),
                    servers,
                },
            )
        })
        .collect();
    Some(ServiceStatus {
        name: name.to_string(),
        active: rt.active,
        standby,
        generation: rt.generation,
        weights,
        previous: rt.previous,
        last_switch: rt.last_switch.clone(),
        pools,
        canary,
        watch,
    })
}
