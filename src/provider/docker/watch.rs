//! The provider's task: connect to the engine, list the running
//! containers, hand the control plane what their labels make, then follow
//! the containers' events until the engine goes away, and start again
//! after a pause that grows while it stays away.
//!
//! A stopping container is reported at once
//! ([`ControlPlane::container_stopping`]), before anything is listed again,
//! and is left out of every later list until it starts again (a container
//! in its stop grace is still listed as running). Any event then asks for
//! a new list, a few milliseconds later so that a burst of events costs
//! one. After a reconnect the containers are listed afresh, so what
//! happened while the engine was away is not lost; meanwhile the last
//! known containers keep serving.
//!
//! A service seen for the first time with a green pool alone is held back
//! for [`GREEN_ALONE_HOLD`]: `docker-compose up` starts blue and green side
//! by side, and a green seen a moment before its blue would otherwise
//! become the active pool for good (with no saved state the active pool is
//! blue; a green alone is active only when it is really alone). A service
//! whose state the proxy holds (configured, or saved from before) is never
//! held.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::engine::{Change, Engine, EngineError};
use super::{contribution, Container, Settings};
use crate::config::{DockerConfig, PoolName};
use crate::control::source::Contribution;
use crate::control::ControlPlane;

/// How long after an event the containers are listed again.
const SETTLE: Duration = Duration::from_millis(30);
/// The first pause before connecting again.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest pause before connecting again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a new service with a green pool alone waits for its blue
/// containers before it serves (the start of a compose stack spreads its
/// containers over a second or two; Traefik's provider throttle is 2 s).
const GREEN_ALONE_HOLD: Duration = Duration::from_secs(3);

/// The running provider.
#[derive(Debug)]
pub struct Provider {
    first: oneshot::Receiver<()>,
}

impl Provider {
    /// Resolves once the first list is in force, or the engine could not
    /// be reached the first time (the proxy then starts without its
    /// containers and keeps trying).
    pub async fn first_list(self) {
        let _ = self.first.await;
    }
}

/// Starts the provider for `config` on the current runtime.
pub fn spawn(config: DockerConfig, control: Arc<ControlPlane>) -> Provider {
    control.set_containers(super::deploy::Deployer::new(&config.endpoint));
    let (first, rx) = oneshot::channel();
    tokio::spawn(run(config, control, first));
    Provider { first: rx }
}

/// What the task keeps across connections.
struct Watch {
    config: DockerConfig,
    control: Arc<ControlPlane>,
    /// Containers seen stopping and not started since.
    stopping: HashSet<String>,
    /// Issues and ignored labels already logged (once each).
    logged: HashSet<String>,
    first: Option<oneshot::Sender<()>>,
    /// New services with a green pool alone, held back: when each was
    /// first seen so.
    held: HashMap<String, Instant>,
    /// When the containers must be listed again though no event came (a
    /// held service's time is up).
    recheck: Option<Instant>,
}

async fn run(config: DockerConfig, control: Arc<ControlPlane>, first: oneshot::Sender<()>) {
    let mut watch = Watch {
        config,
        control,
        stopping: HashSet::new(),
        logged: HashSet::new(),
        first: Some(first),
        held: HashMap::new(),
        recheck: None,
    };
    let mut backoff = FIRST_BACKOFF;
    let mut down = false;
    loop {
        let (e, reached) = watch.session().await;
        if reached {
            // It was up: the pauses start over.
            backoff = FIRST_BACKOFF;
            down = false;
        }
        if down {
            tracing::debug!(error = %e, "docker provider: engine still unreachable");
        } else {
            tracing::warn!(error = %e, "docker provider: engine unreachable; the last known containers keep serving; reconnecting");
            down = true;
        }
        watch
            .control
            .docker_connected(false, Some(e.to_string()))
            .await;
        if let Some(first) = watch.first.take() {
            let _ = first.send(());
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

impl Watch {
    /// One connection: list, then follow events, until the engine fails.
    /// Returns why, and whether it got as far as the first list.
    async fn session(&mut self) -> (EngineError, bool) {
        let engine = match Engine::connect(&self.config.endpoint).await {
            Ok(engine) => engine,
            Err(e) => return (e, false),
        };
        let networks = engine.own_networks().await;
        let since = SystemTime::now();
        if let Err(e) = self.relist(&engine, networks.as_ref()).await {
            return (e, false);
        }
        self.control.docker_connected(true, None).await;
        tracing::info!(
            endpoint = engine.endpoint(),
            "docker provider: connected; following container events"
        );
        if let Some(first) = self.first.take() {
            let _ = first.send(());
        }
        (self.follow(&engine, since, networks.as_ref()).await, true)
    }

    /// Follows the events from `since` until the engine fails.
    async fn follow(
        &mut self,
        engine: &Engine,
        since: SystemTime,
        networks: Option<&BTreeSet<String>>,
    ) -> EngineError {
        let events = engine.events(since, &self.config.constraints);
        tokio::pin!(events);
        let mut relist_at: Option<Instant> = self.recheck;
        loop {
            let relist = async {
                match relist_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                item = events.next() => {
                    let event = match item {
                        Some(Ok(event)) => event,
                        Some(Err(e)) => return e,
                        None => return EngineError::Ended(engine.endpoint().to_string()),
                    };
                    match event.change {
                        Change::Stopping => {
                            self.stopping.insert(event.id.clone());
                            let drained = self.control.container_stopping(&event.id).await;
                            tracing::debug!(container = ?event.name, action = %event.action, drained, "container stopping");
                        }
                        Change::Started => {
                            self.stopping.remove(&event.id);
                        }
                        Change::Other => {}
                    }
                    let soon = Instant::now() + SETTLE;
                    relist_at = Some(relist_at.map_or(soon, |at| at.min(soon)));
                }
                () = relist => {
                    if let Err(e) = self.relist(engine, networks).await {
                        return e;
                    }
                    relist_at = self.recheck;
                }
            }
        }
    }

    /// Lists the containers and puts what their labels make in force.
    async fn relist(
        &mut self,
        engine: &Engine,
        networks: Option<&BTreeSet<String>>,
    ) -> Result<(), EngineError> {
        let listed = engine.list(&self.config.constraints).await?;
        // A stopping container still listed as running stays out; one no
        // longer listed has stopped: forget it.
        let ids: HashSet<&str> = listed.iter().map(|c| c.id.as_str()).collect();
        self.stopping.retain(|id| ids.contains(id.as_str()));
        let serving: Vec<Container> = listed
            .into_iter()
            .filter(|c| !self.stopping.contains(&c.id))
            .collect();
        let settings = Settings {
            docker: &self.config,
            proxy_networks: networks,
        };
        let mut made = contribution(&serving, &settings);
        self.hold_green_alone(&mut made).await;
        self.log_reports(&made.containers);
        if let Err(e) = self.control.apply_docker(made).await {
            tracing::warn!(error = %e, "docker provider: containers' services not applied; the previous ones stay");
        }
        Ok(())
    }

    /// Takes out of `made` the new services whose only pool is green, for
    /// [`GREEN_ALONE_HOLD`] after each was first seen so, and sets when to
    /// list again.
    async fn hold_green_alone(&mut self, made: &mut Contribution) {
        let now = Instant::now();
        let mut holding = HashMap::new();
        for svc in &made.services {
            let green_alone = svc.pool(PoolName::Blue).servers.is_empty()
                && !svc.pool(PoolName::Green).servers.is_empty();
            if !green_alone || self.control.knows_service(&svc.name).await {
                continue;
            }
            let since = self.held.get(&svc.name).copied().unwrap_or(now);
            if now.duration_since(since) < GREEN_ALONE_HOLD {
                if !self.held.contains_key(&svc.name) {
                    tracing::info!(service = %svc.name, hold = ?GREEN_ALONE_HOLD, "docker provider: a new service with a green pool alone waits for its blue containers");
                }
                holding.insert(svc.name.clone(), since);
            }
        }
        made.services.retain(|s| !holding.contains_key(&s.name));
        made.routes.retain(|r| !holding.contains_key(&r.service));
        made.servers
            .retain(|(service, _, _), _| !holding.contains_key(service));
        made.origins
            .retain(|service, _| !holding.contains_key(service));
        self.recheck = holding
            .values()
            .map(|since| *since + GREEN_ALONE_HOLD)
            .min();
        self.held = holding;
    }

    /// Logs each issue and each container's ignored labels once.
    fn log_reports(&mut self, containers: &[crate::wire::ContainerStatus]) {
        let mut now = HashSet::new();
        for c in containers {
            if !c.ignored_labels.is_empty() {
                let key = format!("ignored {} {:?}", c.id, c.ignored_labels);
                if !self.logged.contains(&key) {
                    tracing::info!(container = %c.name, labels = ?c.ignored_labels, "docker provider: labels cutover does not read are ignored");
                }
                now.insert(key);
            }
            for issue in &c.issues {
                let key = format!("issue {} {} {}", c.id, issue.label, issue.message);
                if !self.logged.contains(&key) {
                    tracing::warn!(
                        "container {}: label {}: {}",
                        c.name,
                        issue.label,
                        issue.message
                    );
                }
                now.insert(key);
            }
        }
        self.logged = now;
    }
}
