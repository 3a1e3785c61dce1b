//! The control plane: the only writer of [`Routing`]. Switch, rollback,
//! weights, config updates and health changes each build a new snapshot and
//! publish it in one step; a change to the release state is committed to
//! the [`store`] first, and a call returns only after both.
//!
//! Changes are serialized by one async mutex (the hot path never touches
//! it), and only code holding it can publish: the [`Publisher`] lives
//! inside. Long-lived per-server health lives here, not in snapshots; a
//! snapshot only carries which servers take traffic.
//!
//! - `actions`: switch, rollback, drain end, weight; changes made elsewhere.
//! - `progressive`: canaries and the automated-rollback watch, judged by
//!   the pure [`analysis`].
//! - `apply`: a new config from a [`source`]; `provided`: what is kept of
//!   the Docker provider and its merge with the file's config; `docker`:
//!   its contributions applied, stopping containers and servers that
//!   linger while they drain; `reports`: health reports and passive
//!   failures.
//! - `effect`: commit, then build and publish; `gates`: the switch gates.
//! - `status`: the answers to queries; [`events`]: the history in memory.
//! - `runtime`: per service, the durable release state and what this
//!   process observes; `restore`: both from the store at start.
//! - [`deploy`]: releases on Docker, run here so that a lost client stops
//!   nothing.
//! - [`thread`] and [`priority`]: the thread the control plane runs on.

mod actions;
pub mod analysis;
mod apply;
pub mod deploy;
mod docker;
mod effect;
pub mod events;
mod gates;
pub mod priority;
mod progressive;
mod provided;
mod reports;
mod restore;
mod runtime;
pub mod source;
mod status;
pub mod store;
pub mod thread;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Mutex};

use crate::config::{Config, ConfigError, PoolName, ServerAddr};
use crate::health::state::HealthState;
use crate::health::{Checkers, HealthReport};
use crate::metrics::{Metrics, PoolTotals};
use crate::snapshot::{Objects, Publisher, Routing};
use crate::wire::Applied;
use events::EventLog;
use runtime::{Runtime, ServerHealth};
use source::Update;
use status::service_status;
use store::{ReleaseState, Remote, Store, StoreError};

pub use store::audit_path;

/// Without active health checks, a server marked down by a failed connection
/// takes traffic again after this long.
const PASSIVE_RETRY: Duration = Duration::from_secs(5);
/// Longest `wait` of a drained query.
pub const MAX_DRAIN_WAIT: Duration = Duration::from_secs(3600);
/// How often a replica's counters are handed to the fleet.
const REPORT_EVERY: Duration = Duration::from_millis(250);
/// Most health reports queued for the control plane.
const REPORT_QUEUE: usize = 1024;

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
    /// The config is invalid; the running config stays.
    #[error("config is invalid; the running config stays:\n{0}")]
    InvalidConfig(#[source] ConfigError),
    /// A reload was asked for, but the proxy runs without a config file
    /// (`cutover run --docker`): the containers are followed as they change.
    #[error("running without a config file (cutover run --docker): there is nothing to reload; containers are followed as they change")]
    NoConfigFile,
    /// The release-state store refused the change (another writer won, or
    /// it cannot be reached); nothing changed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The control plane is shutting down.
    #[error("the proxy is shutting down")]
    Stopping,
    /// A deploy request that cannot be read.
    #[error("{0}")]
    BadDeploy(String),
    /// A deploy needs the Docker provider and a service whose active pool
    /// has containers.
    #[error("service {0} cannot be deployed: deploys need the Docker provider ([providers.docker] or cutover run --docker) and containers in the service's active pool")]
    NoDocker(String),
    /// A deploy of a service the config file defines: the file's service
    /// (its servers) serves under that name, not the containers.
    #[error("service {0} cannot be deployed: [service.{0}] in the config file serves under this name, so its containers' labels are left out and their new containers would take no traffic; deploys release services made from containers' labels")]
    FileService(String),
    /// A deploy, a canary or a weight is in progress.
    #[error("{0}")]
    DeployBusy(String),
    /// No deploy of the service runs (or ever ran).
    #[error("service {0} has no deploy running")]
    NoDeploy(String),
}

type ServerKey = (String, PoolName, ServerAddr);

struct Inner {
    /// The config in force: the file's, with the providers' services.
    config: Arc<Config>,
    /// The config as the file (or `cutover run --docker`) gives it.
    file: Arc<Config>,
    /// The Docker provider's part: its latest services, the containers
    /// behind them, the servers still draining, its connection.
    docker: provided::DockerPart,
    tls: Option<Arc<rustls::ServerConfig>>,
    objects: Objects,
    generation: u64,
    services: BTreeMap<String, Runtime>,
    /// The release state of each service the store holds that is not
    /// configured now; a service that comes back takes it up again.
    dormant: BTreeMap<String, ReleaseState>,
    health: HashMap<ServerKey, ServerHealth>,
    events: EventLog,
    checkers: Checkers,
    store: Arc<dyn Store>,
    /// The fleet, in fleet mode: canaries and watches are judged by its
    /// leader alone, on the fleet's summed counters.
    fleet: Option<Arc<store::Fleet>>,
    /// The only way to publish a snapshot.
    publisher: Publisher,
}

/// The control plane of one proxy.
pub struct ControlPlane {
    routing: Arc<Routing>,
    inner: Mutex<Inner>,
    health_tx: mpsc::Sender<HealthReport>,
    updates: mpsc::Sender<Update>,
    ready: AtomicBool,
    stopping: AtomicBool,
    /// The same handle `Objects` records into; kept here so readers never
    /// wait on the control mutex.
    metrics: Arc<Metrics>,
    /// The ACME certificates and challenges every TLS config answers with.
    issued: Arc<crate::tls::Issued>,
    /// The hosts of the provider's routers that ask for a certificate
    /// resolver (`tls.certresolver`): the ACME manager orders them too.
    acme_domains: tokio::sync::watch::Sender<std::collections::BTreeSet<String>>,
    /// The deploys running, and the engine they use.
    deploys: deploy::Deploys,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane").finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Builds the first snapshot from `config` and what `store` holds, and
    /// starts the tasks that apply health reports and passive failures,
    /// config updates, changes made elsewhere, and the canary analysis.
    /// Health checks start with [`ControlPlane::start_health`].
    ///
    /// `tls` is the HTTPS config built from `config` with `issued` (see
    /// [`crate::tls`]).
    pub async fn new(
        config: Config,
        tls: Option<Arc<rustls::ServerConfig>>,
        issued: Arc<crate::tls::Issued>,
        metrics: Arc<Metrics>,
        store: Arc<dyn Store>,
    ) -> Arc<ControlPlane> {
        let stored = store.load().await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "release state unreadable: starting from the config's active pools");
            store::Stored::default()
        });
        let (services, dormant, events, resume) = restore::runtimes(&config, stored, 1);
        let (mut objects, failures) = Objects::new(metrics.clone());
        objects.set_issued(issued.clone());
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
        let config = Arc::new(config);
        let first = effect::snapshot_of(&mut objects, &config, &tls, &services, &health, 1);
        let (routing, publisher) = Routing::new(first);
        let changes = store.changes();
        let fleet = store.fleet();
        let docker = provided::DockerPart::new(config.providers.docker.as_ref());
        let mut inner = Inner {
            file: config.clone(),
            config,
            docker,
            tls,
            objects,
            generation: 1,
            services,
            dormant,
            health,
            events,
            checkers: Checkers::default(),
            store,
            fleet: fleet.clone(),
            publisher,
        };
        effect::export_gauges(&inner, &routing.load());
        progressive::resume_canaries(&mut inner, &resume.canaries);
        progressive::resume_watches(&mut inner, &resume.watches);
        let (health_tx, health_rx) = mpsc::channel(REPORT_QUEUE);
        let (updates, updates_rx) = mpsc::channel(source::UPDATE_QUEUE);
        let control = Arc::new(ControlPlane {
            routing,
            inner: Mutex::new(inner),
            health_tx,
            updates,
            ready: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            metrics,
            issued,
            acme_domains: tokio::sync::watch::Sender::new(Default::default()),
            deploys: deploy::Deploys::default(),
        });
        tokio::spawn(control.clone().apply_reports(health_rx, failures));
        tokio::spawn(control.clone().apply_updates(updates_rx));
        if let Some(changes) = changes {
            tokio::spawn(control.clone().follow_store(changes));
        }
        tokio::spawn(control.clone().run_analysis());
        if let Some(fleet) = fleet {
            tokio::spawn(control.clone().report_to(fleet));
        }
        control
    }

    /// The certificates obtained over ACME and the challenges in progress.
    pub fn issued(&self) -> &Arc<crate::tls::Issued> {
        &self.issued
    }

    /// The hosts the provider's routers ask ACME certificates for, as they
    /// change.
    pub fn acme_domains(&self) -> tokio::sync::watch::Receiver<std::collections::BTreeSet<String>> {
        self.acme_domains.subscribe()
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

    /// Where config sources send new configs.
    pub fn updates(&self) -> mpsc::Sender<Update> {
        self.updates.clone()
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.stopping.load(Ordering::Acquire)
    }

    /// Marks the proxy as shutting down (`/readyz` answers 503) and stops the
    /// health checkers.
    pub async fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        self.inner.lock().await.checkers.stop();
    }

    /// The config in force.
    pub async fn config(&self) -> Arc<Config> {
        self.inner.lock().await.config.clone()
    }

    /// Hands the fleet what this replica publishes (the highest generation
    /// applied, each pool's totals) every [`REPORT_EVERY`], for as long as
    /// the proxy runs.
    async fn report_to(self: Arc<Self>, fleet: Arc<store::Fleet>) {
        let mut tick = tokio::time::interval(REPORT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.stopping.load(Ordering::Acquire) {
                return;
            }
            let inner = self.inner.lock().await;
            let generation = inner
                .services
                .values()
                .map(|rt| rt.release.generation)
                .max()
                .unwrap_or(0);
            let counters = inner
                .services
                .keys()
                .map(|name| {
                    let pools = PoolName::ALL
                        .into_iter()
                        .map(|pool| (pool, (&own_totals(&inner, name, pool)).into()))
                        .collect();
                    (name.clone(), pools)
                })
                .collect();
            drop(inner);
            fleet.set_local(generation, counters);
        }
    }

    /// Publishes the changes other writers commit to the store.
    async fn follow_store(self: Arc<Self>, mut changes: mpsc::Receiver<Remote>) {
        while let Some(remote) = changes.recv().await {
            self.apply_remote(remote).await;
        }
    }
}

/// A copy of `service`'s runtime, to change and commit.
fn runtime(inner: &Inner, service: &str) -> Result<Runtime, ControlError> {
    inner
        .services
        .get(service)
        .cloned()
        .ok_or_else(|| ControlError::UnknownService(service.to_string()))
}

/// The answer to a change that changes nothing.
fn unchanged(routing: &Routing, inner: &Inner, service: &str) -> Applied {
    Applied {
        generation: inner.generation,
        changed: false,
        service: service_status(&routing.load(), inner, service),
        persisted: true,
    }
}

/// The cumulative totals of `pool` of `service` (zero when there is no such
/// pool): this process's, plus every other replica's in fleet mode.
fn pool_totals(inner: &Inner, service: &str, pool: PoolName) -> PoolTotals {
    let own = own_totals(inner, service, pool);
    match &inner.fleet {
        Some(fleet) => fleet.summed(service, pool, own),
        None => own,
    }
}

/// The cumulative totals of `pool` of `service` in this process.
fn own_totals(inner: &Inner, service: &str, pool: PoolName) -> PoolTotals {
    inner
        .objects
        .pool_state(service, pool)
        .map(|s| s.metrics.totals())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
