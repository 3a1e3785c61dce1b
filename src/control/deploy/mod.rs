//! Releases on Docker (`cutover ctl deploy`): the whole release of a new
//! image run by the control plane, so that a lost client stops nothing.
//!
//! Steps: the idle pool's old containers are removed; as many containers
//! as the active pool has are created from the active ones with the new
//! image and the idle pool's label; they must turn healthy (and report the
//! version asked for) within the timeout; then the switch (or the
//! service's canary), the automated-rollback watch, the drain, and after
//! `keep_old` the old containers stop. A failure before the switch leaves
//! the traffic where it was; a rollback, an abort or a failure after it
//! puts the traffic back on the old pool; either way the new containers
//! are stopped and kept for inspection.
//!
//! The deploy lives in the service's release state ([`DeployStatus`]),
//! committed at each phase that matters, and the switch commits its
//! `switched` phase with the new active pool in one write: a restarted
//! proxy finishes a deploy whose traffic moved and returns any other to
//! its old pool ([`plan::resume`]); never half of one.
//!
//! The engine is behind [`Containers`], which the Docker provider gives
//! the control plane when it starts (the control plane does not import
//! the provider). `plan` is the pure part, `run` the task.

pub mod plan;
mod run;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, StreamExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{runtime, ControlError, ControlPlane, Inner};
use crate::config::PoolName;
use crate::wire::{Actor, DeployRequest, DeployStatus, DeployStep};
use run::{Runner, Signal};

/// `keep_old` when none is given.
pub const DEFAULT_KEEP_OLD: Duration = Duration::from_secs(15 * 60);
/// `timeout` when none is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// The label that names the deploy a container was created by.
pub const DEPLOY_LABEL: &str = "cutover.deploy";

/// What the engine failed to do, in its words.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ContainerError(pub String);

/// The new containers of a deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The containers to copy (ids): the active pool's.
    pub from: Vec<String>,
    /// The new image.
    pub image: String,
    /// The pool they join (their `cutover.pool` label).
    pub pool: PoolName,
    /// The deploy's id (their [`DEPLOY_LABEL`]).
    pub deploy: String,
}

/// The container engine as a deploy needs it.
pub trait Containers: Send + Sync + 'static {
    /// Creates and starts one container per `spec.from`; their ids. On an
    /// error, what was created is removed again.
    fn create<'a>(&'a self, spec: &'a Spec) -> BoxFuture<'a, Result<Vec<String>, ContainerError>>;
    /// Stops the containers (kept, for inspection); gone ones are skipped.
    fn stop(&self, ids: Vec<String>) -> BoxFuture<'_, Result<(), ContainerError>>;
    /// Removes the containers, running or not; gone ones are skipped.
    fn remove(&self, ids: Vec<String>) -> BoxFuture<'_, Result<(), ContainerError>>;
    /// The containers, in any state, labelled with `deploy`'s id.
    fn labelled(&self, deploy: String) -> BoxFuture<'_, Result<Vec<String>, ContainerError>>;
    /// Of `ids`, the ones that are not running: why, for each.
    fn exited(&self, ids: Vec<String>) -> BoxFuture<'_, Result<Vec<String>, ContainerError>>;
}

/// The deploys of every service, beside (not under) the control mutex so
/// that following one never waits on it.
#[derive(Default)]
pub(super) struct Deploys {
    engine: OnceLock<Arc<dyn Containers>>,
    running: Mutex<HashMap<String, Handle>>,
}

/// A deploy's task and how to reach it.
struct Handle {
    progress: watch::Receiver<DeployStatus>,
    signal: watch::Sender<Signal>,
    task: JoinHandle<()>,
}

impl ControlPlane {
    /// Gives the control plane the container engine deploys use, and takes
    /// up the deploys the release state holds (once their services are
    /// listed again).
    pub fn set_containers(self: &Arc<Self>, engine: Arc<dyn Containers>) {
        if self.deploys.engine.set(engine).is_err() {
            return;
        }
        let control = self.clone();
        tokio::spawn(async move { control.resume_deploys().await });
    }

    /// Starts the deploy of `req.image` on `service`; the deploy as it
    /// starts. A deploy in its keep-old wait is taken over (its old
    /// containers stop now).
    ///
    /// # Errors
    ///
    /// Unknown service; no Docker provider or no container in the active
    /// pool; a service the config file defines; a deploy, canary or weight
    /// in progress; a bad request.
    pub async fn deploy_start(
        self: &Arc<Self>,
        service: &str,
        req: DeployRequest,
        actor: Actor,
    ) -> Result<DeployStatus, ControlError> {
        let image = req.image.trim().to_string();
        if image.is_empty() {
            return Err(ControlError::BadDeploy(
                "expected a body like {\"image\": \"app:2\"}: image is missing".into(),
            ));
        }
        let keep_old = duration("keep_old", req.keep_old.as_deref(), DEFAULT_KEEP_OLD)?;
        let timeout = duration("timeout", req.timeout.as_deref(), DEFAULT_TIMEOUT)?;
        let engine = self
            .deploys
            .engine
            .get()
            .cloned()
            .ok_or_else(|| ControlError::NoDocker(service.to_string()))?;
        let mut inner = self.inner.lock().await;
        let rt = runtime(&inner, service)?;
        if inner.file.services.iter().any(|s| s.name == service) {
            return Err(ControlError::FileService(service.to_string()));
        }
        let (from, to) = (rt.active(), rt.active().other());
        if rt.local.canary.is_some() || rt.standby_weight() > 0 {
            return Err(ControlError::DeployBusy(format!(
                "service {service} sends {}% of its requests to pool {to} (a canary or a weight): \
                 end it first (cutover ctl canary {service} abort, or weight {service} 0)",
                rt.standby_weight()
            )));
        }
        if req.canary && !has_canary(&inner, service) {
            return Err(ControlError::NoCanaryStages(service.to_string()));
        }
        let active = containers_of(&inner, service, from);
        if active.is_empty() {
            return Err(ControlError::NoDocker(service.to_string()));
        }
        let previous = self.take_over(service)?;
        let idle = idle_containers(&inner, service, to, rt.release.deploy.as_deref(), &active);
        let deploy = DeployStatus {
            id: deploy_id(),
            image,
            version: req.version.filter(|v| !v.is_empty()),
            canary: req.canary,
            retry_old: !req.no_retry,
            from,
            to,
            started: crate::wire::rfc3339_millis(SystemTime::now()),
            keep_old_ms: millis(keep_old),
            timeout_ms: millis(timeout),
            phase: plan::phase::PREPARE.into(),
            new_containers: Vec::new(),
            old_containers: active.into_iter().collect(),
            keep_old_until: None,
            outcome: None,
            steps: Vec::new(),
        };
        let (runner, handle) = Runner::new(self.clone(), engine, service, actor, deploy.clone());
        runner
            .begin(
                &mut inner,
                format!("deploy of {} to pool {to} started", deploy.image),
            )
            .await?;
        drop(inner);
        let task = tokio::spawn(runner.fresh(idle, previous));
        self.deploys
            .running
            .lock()
            .expect("deploys lock: never held across a panic")
            .insert(service.to_string(), handle.with(task));
        Ok(deploy)
    }

    /// Aborts the running deploy of `service`: it returns to the old pool
    /// and stops its new containers. The deploy as it was asked to abort.
    ///
    /// # Errors
    ///
    /// Unknown service, or no deploy runs.
    pub async fn deploy_abort(&self, service: &str) -> Result<DeployStatus, ControlError> {
        self.service(service).await?;
        let running = self
            .deploys
            .running
            .lock()
            .expect("deploys lock: never held across a panic");
        let handle = running
            .get(service)
            .filter(|h| !h.task.is_finished())
            .ok_or_else(|| ControlError::NoDeploy(service.to_string()))?;
        let _ = handle.signal.send(Signal::Abort);
        let deploy = handle.progress.borrow().clone();
        Ok(deploy)
    }

    /// The steps of the last deploy of `service`, from the first: those
    /// made so far, then each as it is made, until the deploy ends (for
    /// a released one, its keep-old wait is not followed).
    ///
    /// # Errors
    ///
    /// Unknown service, or it was never deployed.
    pub async fn deploy_follow(
        &self,
        service: &str,
    ) -> Result<BoxStream<'static, DeployStep>, ControlError> {
        let live = self
            .deploys
            .running
            .lock()
            .expect("deploys lock: never held across a panic")
            .get(service)
            .map(|h| h.progress.clone());
        let mut rx = match live {
            Some(rx) => rx,
            None => {
                let status = self.service(service).await?;
                let deploy = status
                    .deploy
                    .ok_or_else(|| ControlError::NoDeploy(service.to_string()))?;
                watch::channel(deploy).1
            }
        };
        rx.mark_changed();
        let steps =
            futures_util::stream::unfold((rx, 0usize, false), |(mut rx, sent, done)| async move {
                if done {
                    return None;
                }
                loop {
                    let (batch, ended) = {
                        let d = rx.borrow_and_update();
                        (d.steps.get(sent..).unwrap_or_default().to_vec(), d.ended())
                    };
                    if !batch.is_empty() || ended {
                        let next = sent + batch.len();
                        let stream = futures_util::stream::iter(batch);
                        return Some((stream, (rx, next, ended)));
                    }
                    if rx.changed().await.is_err() {
                        return None;
                    }
                }
            });
        Ok(steps.flatten().boxed())
    }

    /// Signals a deploy in its keep-old wait to stop its old containers
    /// now and end; the task to wait for. Refuses while one runs.
    fn take_over(&self, service: &str) -> Result<Option<JoinHandle<()>>, ControlError> {
        let mut running = self
            .deploys
            .running
            .lock()
            .expect("deploys lock: never held across a panic");
        let Some(handle) = running.get(service) else {
            return Ok(None);
        };
        if handle.task.is_finished() {
            running.remove(service);
            return Ok(None);
        }
        if !handle.progress.borrow().ended() {
            let d = handle.progress.borrow();
            return Err(ControlError::DeployBusy(format!(
                "a deploy of {} to service {service} is running (started {}); follow it with \
                 cutover ctl deploy {service} --follow, or abort it with --abort",
                d.image, d.started
            )));
        }
        let _ = handle.signal.send(Signal::TakeOver);
        Ok(running.remove(service).map(|h| h.task))
    }

    /// Takes up each deploy the release state holds that had not ended, or
    /// was waiting out keep-old.
    async fn resume_deploys(self: Arc<Self>) {
        let Some(engine) = self.deploys.engine.get().cloned() else {
            return;
        };
        let pending: Vec<(String, DeployStatus)> = {
            let inner = self.inner.lock().await;
            let live = inner.services.iter().map(|(n, rt)| (n, &rt.release));
            let dormant = inner.dormant.iter();
            live.chain(dormant)
                .filter_map(|(name, release)| {
                    let d = release.deploy.as_deref()?;
                    (plan::resume(d, release.active) != plan::Resume::Nothing)
                        .then(|| (name.clone(), d.clone()))
                })
                .collect()
        };
        for (service, deploy) in pending {
            let actor = Actor::Auto;
            let (runner, handle) =
                Runner::new(self.clone(), engine.clone(), &service, actor, deploy);
            let task = tokio::spawn(runner.resume());
            self.deploys
                .running
                .lock()
                .expect("deploys lock: never held across a panic")
                .insert(service, handle.with(task));
        }
    }
}

/// Whether `service` has canary stages.
fn has_canary(inner: &Inner, service: &str) -> bool {
    inner
        .config
        .services
        .iter()
        .any(|s| s.name == service && !s.canary.is_empty())
}

/// The containers (ids) of `pool` of `service` the provider lists.
pub(super) fn containers_of(inner: &Inner, service: &str, pool: PoolName) -> BTreeSet<String> {
    inner
        .docker
        .contribution
        .servers
        .iter()
        .filter(|(key, _)| key.0 == service && key.1 == pool)
        .map(|(_, c)| c.id.clone())
        .collect()
}

/// The idle pool's old containers: those the provider lists in it, and
/// those the last deploy left (stopped) that are not active now.
fn idle_containers(
    inner: &Inner,
    service: &str,
    idle: PoolName,
    last: Option<&DeployStatus>,
    active: &BTreeSet<String>,
) -> Vec<String> {
    let mut ids = containers_of(inner, service, idle);
    if let Some(last) = last {
        ids.extend(
            last.new_containers
                .iter()
                .chain(&last.old_containers)
                .filter(|id| !active.contains(*id))
                .cloned(),
        );
    }
    ids.into_iter().collect()
}

/// A duration field of the request.
fn duration(field: &str, value: Option<&str>, default: Duration) -> Result<Duration, ControlError> {
    match value {
        None => Ok(default),
        Some(text) => humantime::parse_duration(text.trim()).map_err(|_| {
            ControlError::BadDeploy(format!(
                "{field}: {text:?} is not a duration (expected e.g. \"30s\", \"15m\")"
            ))
        }),
    }
}

/// A new deploy's id: the time in milliseconds in base 36, then 16 random
/// bits.
fn deploy_id() -> String {
    let mut n = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    while n > 0 {
        out.push(digits[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    let time = String::from_utf8(out).expect("base-36 digits are ASCII");
    format!("{time}{:04x}", fastrand::u16(..))
}

/// Whole milliseconds, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
