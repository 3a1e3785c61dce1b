//! A deploy's task: each step in turn, each one raced against `--abort`,
//! its progress sent to whoever follows it and kept in the release state.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod release;

use super::plan::{self, phase, Readiness, Resume, Seen};
use super::{Containers, Handle, Spec};
use crate::control::effect::commit_service;
use crate::control::gates::check_target;
use crate::control::{runtime, ControlError, ControlPlane, Inner};
use crate::wire::{Actor, DeployOutcome, DeployStatus, DeployStep, Event, Reason};

/// How often the new containers are looked at while they start.
const POLL: Duration = Duration::from_millis(100);
/// How often the engine is asked whether they still run.
const EXITED_EVERY: Duration = Duration::from_secs(1);
/// How long a resumed deploy waits for the provider to list its service.
const RESUME_WAIT: Duration = Duration::from_secs(30);

/// What the operator or a newer deploy asks of a running one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Signal {
    None,
    /// `--abort`: back to the old pool.
    Abort,
    /// A newer deploy: end the keep-old wait now.
    TakeOver,
}

/// Why a deploy did not release.
#[derive(Debug)]
enum Stop {
    /// The traffic stays on (or went back to) the old pool, with why.
    Failed(DeployOutcome, String),
}

impl From<ControlError> for Stop {
    fn from(e: ControlError) -> Stop {
        Stop::Failed(DeployOutcome::Refused, e.to_string())
    }
}

/// One deploy's task.
pub(super) struct Runner {
    control: Arc<ControlPlane>,
    engine: Arc<dyn Containers>,
    service: String,
    actor: Actor,
    deploy: DeployStatus,
    started: SystemTime,
    progress: watch::Sender<DeployStatus>,
    signal: watch::Receiver<Signal>,
}

/// A handle without its task yet.
pub(super) struct Unstarted {
    progress: watch::Receiver<DeployStatus>,
    signal: watch::Sender<Signal>,
}

impl Unstarted {
    pub(super) fn with(self, task: JoinHandle<()>) -> Handle {
        Handle {
            progress: self.progress,
            signal: self.signal,
            task,
        }
    }
}

impl Runner {
    pub(super) fn new(
        control: Arc<ControlPlane>,
        engine: Arc<dyn Containers>,
        service: &str,
        actor: Actor,
        deploy: DeployStatus,
    ) -> (Runner, Unstarted) {
        let (progress, progress_rx) = watch::channel(deploy.clone());
        let (signal_tx, signal) = watch::channel(Signal::None);
        let started =
            humantime::parse_rfc3339_weak(&deploy.started).unwrap_or_else(|_| SystemTime::now());
        let runner = Runner {
            control,
            engine,
            service: service.to_string(),
            actor,
            deploy,
            started,
            progress,
            signal,
        };
        let handle = Unstarted {
            progress: progress_rx,
            signal: signal_tx,
        };
        (runner, handle)
    }

    /// Commits the new deploy as the service's, under the caller's lock.
    pub(super) async fn begin(
        &self,
        inner: &mut Inner,
        message: String,
    ) -> Result<(), ControlError> {
        let mut deploy = self.deploy.clone();
        deploy
            .steps
            .push(self.step_of("start", message.clone(), None));
        let mut next = runtime(inner, &self.service)?;
        next.release.deploy = Some(Box::new(deploy.clone()));
        let event = self.event(inner, "start", &message);
        commit_service(inner, &self.service, next, event).await?;
        tracing::info!(service = %self.service, image = %deploy.image, version = ?deploy.version, from = %deploy.from, to = %deploy.to, "deploy started");
        self.progress.send_replace(deploy);
        Ok(())
    }

    /// A new deploy, from its first step; `previous` is the task of the
    /// deploy it took over, to wait for.
    pub(super) async fn fresh(mut self, idle: Vec<String>, previous: Option<JoinHandle<()>>) {
        let outcome = match self.before_switch(idle, previous).await {
            Ok(()) => self.after_switch().await,
            Err(stop) => Err(stop),
        };
        self.finish(outcome).await;
    }

    /// A deploy found in the release state at start.
    pub(super) async fn resume(mut self) {
        let start = Instant::now();
        let active = loop {
            let inner = self.control.inner.lock().await;
            if let Some(rt) = inner.services.get(&self.service) {
                break Some(rt.active());
            }
            drop(inner);
            if start.elapsed() > RESUME_WAIT {
                break None;
            }
            tokio::time::sleep(POLL).await;
        };
        let Some(active) = active else {
            tracing::warn!(service = %self.service, "deploy not taken up: its service was not listed again within 30s");
            return;
        };
        let decision = plan::resume(&self.deploy, active);
        tracing::info!(service = %self.service, image = %self.deploy.image, ?decision, "deploy found at start: taken up");
        match decision {
            Resume::Nothing => {}
            Resume::Finish => {
                self.note(
                    "resume",
                    "the proxy restarted after the switch: the deploy goes on",
                )
                .await;
                let outcome = self.after_switch().await;
                self.finish(outcome).await;
            }
            Resume::KeepOld => self.keep_old().await,
            Resume::Return(outcome) => {
                let message = "the proxy restarted before the deploy was through: the traffic stays on the old pool".to_string();
                self.finish(Err(Stop::Failed(outcome, message))).await;
            }
        }
    }

    /// Removes the idle pool's old containers, creates the new ones, waits
    /// for them, and moves the traffic.
    async fn before_switch(
        &mut self,
        idle: Vec<String>,
        previous: Option<JoinHandle<()>>,
    ) -> Result<(), Stop> {
        if let Some(previous) = previous {
            let _ = self.abortable(previous).await?;
            self.note(
                "take-over",
                "the previous deploy's keep-old wait ended: its old containers stopped",
            )
            .await;
        }
        let n = idle.len();
        let removed = self.abortable(self.engine.remove(idle)).await?;
        removed.map_err(|e| refused(format!("removing the idle pool's containers: {e}")))?;
        self.note(
            "remove-idle",
            &format!("removed {n} old container(s) of pool {}", self.deploy.to),
        )
        .await;

        let spec = Spec {
            from: self.deploy.old_containers.clone(),
            image: self.deploy.image.clone(),
            pool: self.deploy.to,
            deploy: self.deploy.id.clone(),
        };
        let engine = self.engine.clone();
        let created = self.abortable(engine.create(&spec)).await?;
        let ids = created.map_err(|e| refused(format!("creating the new containers: {e}")))?;
        let message = format!(
            "created {} container(s) of {} in pool {}",
            ids.len(),
            spec.image,
            spec.pool
        );
        self.update("create", &message, true, |d| {
            d.new_containers = ids.clone();
            d.phase = phase::HEALTHY.into();
        })
        .await?;

        self.wait_ready().await?;
        self.switch().await
    }

    /// Waits for every new container to be healthy and report the version.
    async fn wait_ready(&mut self) -> Result<(), Stop> {
        let timeout = Duration::from_millis(self.deploy.timeout_ms);
        let deadline = Instant::now() + timeout;
        let mut asked = Instant::now();
        loop {
            let seen = self.seen().await;
            match plan::readiness(&seen, self.deploy.version.as_deref()) {
                Readiness::Ready => break,
                Readiness::Wrong(why) => return Err(refused(why)),
                Readiness::Wait(why) if Instant::now() >= deadline => {
                    let t = humantime::format_duration(timeout);
                    return Err(refused(format!("not healthy within {t}: {why}")));
                }
                Readiness::Wait(_) => {}
            }
            if asked.elapsed() >= EXITED_EVERY {
                asked = Instant::now();
                let ids = self.deploy.new_containers.clone();
                if let Ok(exited) = self.engine.exited(ids).await {
                    if !exited.is_empty() {
                        return Err(refused(exited.join("; ")));
                    }
                }
            }
            self.abortable(tokio::time::sleep(POLL)).await?;
        }
        let version = self
            .deploy
            .version
            .as_deref()
            .map_or_else(String::new, |v| format!(", reporting {v}"));
        self.note(
            "healthy",
            &format!(
                "{} new container(s) healthy{version}",
                self.deploy.new_containers.len()
            ),
        )
        .await;
        Ok(())
    }

    /// The new containers as the control plane sees them now.
    async fn seen(&self) -> Vec<Seen> {
        let inner = self.control.inner.lock().await;
        let to = self.deploy.to;
        self.deploy
            .new_containers
            .iter()
            .map(|id| {
                let found = inner
                    .docker
                    .contribution
                    .servers
                    .iter()
                    .find(|(k, c)| k.0 == self.service && k.1 == to && &c.id == id);
                match found {
                    Some((key, c)) => {
                        let h = inner.health.get(key);
                        // A container's server is healthy only by a
                        // passing check: one with no check is not served.
                        Seen {
                            name: c.name.clone(),
                            state: h.map(|h| h.shown()),
                            version: h.and_then(|h| h.version.clone()),
                        }
                    }
                    None => Seen {
                        name: id.chars().take(12).collect(),
                        state: None,
                        version: None,
                    },
                }
            })
            .collect()
    }

    /// The switch (or the canary's start), committed with the `switched`
    /// phase in the same write.
    async fn switch(&mut self) -> Result<(), Stop> {
        if *self.signal.borrow() == Signal::Abort {
            return Err(Stop::Failed(
                DeployOutcome::Aborted,
                "aborted before the switch".into(),
            ));
        }
        let (from, to) = (self.deploy.from, self.deploy.to);
        let step = if self.deploy.canary {
            "canary"
        } else {
            "switch"
        };
        let message = if self.deploy.canary {
            format!("canary of pool {to} started")
        } else {
            format!("switched from {from} to {to}")
        };
        let mut deploy = self.progress.borrow().clone();
        deploy.phase = phase::SWITCHED.into();
        deploy.steps.push(self.step_of(step, message.clone(), None));
        {
            let mut guard = self.control.inner.lock().await;
            let inner = &mut *guard;
            let rt = runtime(inner, &self.service)?;
            if rt.active() != from || rt.standby_weight() > 0 {
                return Err(refused(format!(
                    "service {} changed meanwhile (active {}, {}% to standby): not switched",
                    self.service,
                    rt.active(),
                    rt.standby_weight()
                )));
            }
            check_target(inner, &self.service, to, self.deploy.version.as_deref())?;
            let before = rt.release.deploy.clone();
            if let Some(rt) = inner.services.get_mut(&self.service) {
                rt.release.deploy = Some(Box::new(deploy.clone()));
            }
            let done = if self.deploy.canary {
                drop(guard);
                self.control
                    .canary_start(&self.service, self.actor)
                    .await
                    .map(drop)
            } else {
                let detail = self.detail(step, &message);
                self.control
                    .apply_switch(inner, &self.service, to, Reason::Deploy, self.actor, detail)
                    .await
                    .map(drop)
            };
            if let Err(e) = done {
                let mut inner = self.control.inner.lock().await;
                if let Some(rt) = inner.services.get_mut(&self.service) {
                    rt.release.deploy = before;
                }
                return Err(e.into());
            }
        }
        tracing::info!(service = %self.service, from = %from, to = %to, "deploy switched");
        self.deploy = deploy.clone();
        self.progress.send_replace(deploy);
        Ok(())
    }

    /// Whether a canary runs, and the active pool.
    async fn state(&self) -> Result<(bool, crate::config::PoolName), Stop> {
        let inner = self.control.inner.lock().await;
        let rt = runtime(&inner, &self.service)?;
        Ok((rt.local.canary.is_some(), rt.active()))
    }

    /// One poll's wait while the traffic is on the new pool: `--abort`
    /// ends it.
    async fn watching_abort(&self) -> Result<(), Stop> {
        self.abortable(tokio::time::sleep(POLL)).await
    }

    /// Why the service went back to the old pool, from its last switch.
    async fn last_rollback(&self) -> String {
        let inner = self.control.inner.lock().await;
        let last = inner
            .services
            .get(&self.service)
            .and_then(|rt| rt.release.last_switch.clone());
        match last {
            Some(e) => format!(
                "{} by {} ({})",
                e.reason.as_str(),
                e.actor.as_str(),
                e.detail
            ),
            None => "the traffic went back to the old pool".into(),
        }
    }

    async fn drain_timeout(&self) -> Duration {
        let inner = self.control.inner.lock().await;
        inner
            .config
            .services
            .iter()
            .find(|s| s.name == self.service)
            .map_or(crate::config::DEFAULT_DRAIN_TIMEOUT, |s| s.drain_timeout)
    }

    /// `fut`, unless `--abort` comes first.
    async fn abortable<T>(&self, fut: impl std::future::Future<Output = T>) -> Result<T, Stop> {
        if *self.signal.borrow() == Signal::Abort {
            return Err(Stop::Failed(DeployOutcome::Aborted, "aborted".into()));
        }
        let mut signal = self.signal.clone();
        tokio::select! {
            out = fut => Ok(out),
            s = wait_signal(&mut signal) => match s {
                Signal::Abort => Err(Stop::Failed(DeployOutcome::Aborted, "aborted".into())),
                _ => Err(refused("ended by a newer deploy".into())),
            },
        }
    }

    /// Records a step that changes nothing durable.
    async fn note(&mut self, step: &str, message: &str) {
        if let Err(Stop::Failed(_, e)) = self.update(step, message, false, |_| {}).await {
            tracing::debug!(service = %self.service, error = %e, "deploy step not recorded");
        }
    }

    /// Adds step `step` to the deploy, changed by `change`; commits it
    /// (with an event) when `commit`, else keeps it in memory until the
    /// next commit.
    async fn update(
        &mut self,
        step: &str,
        message: &str,
        commit: bool,
        change: impl FnOnce(&mut DeployStatus),
    ) -> Result<(), Stop> {
        let mut deploy = self.progress.borrow().clone();
        change(&mut deploy);
        let outcome = if step == "end" { deploy.outcome } else { None };
        deploy
            .steps
            .push(self.step_of(step, message.to_string(), outcome));
        tracing::info!(service = %self.service, step, message, "deploy");
        let mut guard = self.control.inner.lock().await;
        let inner = &mut *guard;
        let mut next = runtime(inner, &self.service)?;
        if next.release.deploy.as_ref().map(|d| &d.id) != Some(&deploy.id) {
            return Err(refused("the service's deploy was replaced".into()));
        }
        next.release.deploy = Some(Box::new(deploy.clone()));
        if commit {
            let event = self.event(inner, step, message);
            commit_service(inner, &self.service, next, event).await?;
        } else {
            inner.services.insert(self.service.clone(), next);
        }
        drop(guard);
        self.deploy = deploy.clone();
        self.progress.send_replace(deploy);
        Ok(())
    }

    fn step_of(&self, step: &str, message: String, outcome: Option<DeployOutcome>) -> DeployStep {
        let elapsed = SystemTime::now()
            .duration_since(self.started)
            .unwrap_or_default();
        DeployStep {
            step: step.to_string(),
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            message,
            outcome,
        }
    }

    fn detail(&self, step: &str, message: &str) -> serde_json::Value {
        json!({
            "deploy": self.deploy.id,
            "image": self.deploy.image,
            "version": self.deploy.version,
            "step": step,
            "message": message,
        })
    }

    /// The event of a step, for the next generation.
    fn event(&self, inner: &Inner, step: &str, message: &str) -> Event {
        let mut event = Event::now(
            Some(&self.service),
            Some(self.deploy.from),
            Some(self.deploy.to),
            Reason::Deploy,
            self.actor,
            self.detail(step, message),
        );
        event.generation = inner.generation + 1;
        event
    }
}

fn refused(why: String) -> Stop {
    Stop::Failed(DeployOutcome::Refused, why)
}

/// The next signal other than none.
async fn wait_signal(signal: &mut watch::Receiver<Signal>) -> Signal {
    loop {
        let s = *signal.borrow_and_update();
        if s != Signal::None {
            return s;
        }
        if signal.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}
