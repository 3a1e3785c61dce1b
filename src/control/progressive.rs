//! Progressive delivery on top of the control plane: staged canaries,
//! the automated-rollback watch, and the analysis loop that judges them at
//! least once a second.
//!
//! The decisions are made by the pure judges in [`super::analysis`]; this
//! module reads the pools' cumulative totals, collects what each service
//! should do, and applies it through the same switch and weight paths an
//! operator uses (so every action is a snapshot, an event and a state write).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use super::analysis::{Canary, Step, Verdict, Watch};
use super::effect::commit;
use super::gates::check_target;
use super::store::Change;
use super::{pool_totals, runtime, ControlError, ControlPlane, Inner};
use crate::config::{CanaryStage, PoolName};
use crate::wire::{Actor, Applied, Event, Reason};

/// How often the analysis runs.
pub const ANALYSIS_INTERVAL: Duration = Duration::from_millis(250);

/// What the analysis decided for one service.
#[derive(Debug)]
enum Action {
    Weight { stage: usize, weight: u8 },
    Promote { stages: usize },
    Abort(Verdict, &'static str),
    AutoRollback { to: PoolName, verdict: Verdict },
    Blocked { why: String, verdict: Verdict },
}

/// A watch of `pool` of `service` for `window` (`None`: the configured
/// one) starting now, if the service has a `[rollback]` section.
pub(super) fn watch_for(
    inner: &Inner,
    service: &str,
    pool: PoolName,
    window: Option<Duration>,
) -> Option<(PoolName, Watch)> {
    let cfg = inner
        .config
        .services
        .iter()
        .find(|s| s.name == service)
        .and_then(|s| s.rollback.as_ref())?;
    let window = window.unwrap_or(cfg.window);
    let state = inner.objects.pool_state(service, pool)?;
    Some((
        pool,
        Watch::start(Instant::now(), window, state.metrics.totals()),
    ))
}

/// The configured stages of `service`'s staged rollout.
fn canary_stages(inner: &Inner, service: &str) -> Vec<CanaryStage> {
    inner
        .config
        .services
        .iter()
        .find(|s| s.name == service)
        .map(|s| s.canary.clone())
        .unwrap_or_default()
}

/// Takes up the staged rollouts that were running when the proxy stopped
/// (`canaries`: service and stage, from the state file), at the stage they
/// had reached. The counts behind a stage's verdict are gone with the old
/// process, so the stage's hold and `min_requests` start again. A rollout
/// whose stage the config no longer has, or whose weight was changed in
/// the file, is not taken up: its weight stays, as every weight does
/// across a restart, and a warning says so.
pub(super) fn resume_canaries(inner: &mut Inner, canaries: &[(String, usize)]) {
    for (service, stage) in canaries {
        let Some(rt) = inner.services.get(service) else {
            continue;
        };
        let (standby, active, weight) = (rt.active().other(), rt.active(), rt.standby_weight());
        let resumed = Canary::resume(
            canary_stages(inner, service),
            *stage,
            Instant::now(),
            pool_totals(inner, service, standby),
            pool_totals(inner, service, active),
        )
        .filter(|canary| canary.weight() == weight);
        let Some(canary) = resumed else {
            tracing::warn!(
                service = %service,
                stage,
                weight,
                "the canary running at the last stop does not match the config's stages: not resumed; the weights stay"
            );
            continue;
        };
        tracing::info!(
            service = %service,
            stage,
            weight,
            "canary resumed: this stage's hold and request count start again"
        );
        let watch = watch_for(inner, service, standby, None);
        if let Some(rt) = inner.services.get_mut(service) {
            rt.local.canary = Some(canary);
            rt.local.watch = watch;
        }
    }
}

/// Takes up the automated-rollback watches that were running at the last
/// stop, each on its service's active pool for what is left of its window.
/// Its counts start again (they went with the old process); a watch whose
/// time is up, or whose service has no `[rollback]` any more, is not taken
/// up.
pub(super) fn resume_watches(inner: &mut Inner, watches: &[(String, SystemTime)]) {
    let now = SystemTime::now();
    for (service, until) in watches {
        let Ok(left) = until.duration_since(now) else {
            continue;
        };
        let Some(rt) = inner.services.get(service) else {
            continue;
        };
        if rt.local.canary.is_some() || left.is_zero() {
            continue;
        }
        let pool = rt.active();
        let Some(watch) = watch_for(inner, service, pool, Some(left)) else {
            continue;
        };
        if let Some(rt) = inner.services.get_mut(service) {
            rt.local.watch = Some(watch);
            tracing::info!(
                service = %service,
                pool = %pool,
                left = %humantime::format_duration(Duration::from_secs(left.as_secs())),
                "automated-rollback watch resumed for the rest of its window"
            );
        }
    }
}

impl ControlPlane {
    /// Starts the staged rollout of `service`'s standby pool.
    ///
    /// # Errors
    ///
    /// Unknown service, no stages configured, a canary already running, or
    /// an unhealthy standby pool.
    pub async fn canary_start(
        self: &Arc<Self>,
        service: &str,
        actor: Actor,
    ) -> Result<Applied, ControlError> {
        let mut inner = self.inner.lock().await;
        let mut next = runtime(&inner, service)?;
        if next.local.canary.is_some() || next.release.canary_stage.is_some() {
            return Err(ControlError::CanaryRunning(service.to_string()));
        }
        let stages = canary_stages(&inner, service);
        let count = stages.len();
        let standby = next.active().other();
        check_target(&inner, service, standby, None)?;
        let (standby_totals, active_totals) = (
            pool_totals(&inner, service, standby),
            pool_totals(&inner, service, next.active()),
        );
        let Some((canary, weight)) =
            Canary::start(stages, Instant::now(), standby_totals, active_totals)
        else {
            return Err(ControlError::NoCanaryStages(service.to_string()));
        };
        next.local.canary = Some(canary);
        next.local.watch = watch_for(&inner, service, standby, None);
        let detail = json!({"canary": "start", "stage": 0, "stages": count, "standby": weight});
        self.apply_weight(
            &mut inner,
            service,
            next,
            weight,
            Reason::Weight,
            actor,
            detail,
        )
        .await
    }

    /// Aborts the staged rollout of `service`: weight back to 0.
    ///
    /// # Errors
    ///
    /// Unknown service, or no canary running.
    pub async fn canary_abort(
        self: &Arc<Self>,
        service: &str,
        actor: Actor,
    ) -> Result<Applied, ControlError> {
        let mut inner = self.inner.lock().await;
        let mut next = runtime(&inner, service)?;
        // In a fleet the leader runs the canary: the store's stage says one
        // runs when this replica holds none.
        let stage = match next.local.canary.take() {
            Some(canary) => canary.stage(),
            None => next
                .release
                .canary_stage
                .ok_or_else(|| ControlError::NoCanary(service.to_string()))?,
        };
        next.local.watch = None;
        let detail = json!({"by": "operator", "stage": stage});
        let applied = self
            .apply_weight(
                &mut inner,
                service,
                next,
                0,
                Reason::CanaryAbort,
                actor,
                detail,
            )
            .await?;
        inner
            .objects
            .metrics()
            .canary_aborts
            .with_label_values(&[service, "operator"])
            .inc();
        Ok(applied)
    }

    /// Judges every canary and watch every [`ANALYSIS_INTERVAL`] until the
    /// proxy shuts down.
    pub(super) async fn run_analysis(self: Arc<Self>) {
        let mut tick = tokio::time::interval(ANALYSIS_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.stopping.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            self.analyze(Instant::now()).await;
        }
    }

    async fn analyze(self: &Arc<Self>, now: Instant) {
        let mut inner = self.inner.lock().await;
        if let Some(fleet) = inner.fleet.clone() {
            if !fleet.is_leader() {
                // The leader judges; what this replica started is in the
                // store, where the leader takes it up.
                for rt in inner.services.values_mut() {
                    rt.local.canary = None;
                    rt.local.watch = None;
                }
                return;
            }
            take_up(&mut inner);
        }
        let names: Vec<String> = inner.services.keys().cloned().collect();
        for name in names {
            if let Some(action) = decide(&mut inner, &name, now) {
                self.act(&mut inner, &name, action, now).await;
            }
        }
    }

    /// Carries out what the analysis decided for `service`. A change the
    /// store refuses is logged and left for the next round.
    async fn act(self: &Arc<Self>, inner: &mut Inner, service: &str, action: Action, now: Instant) {
        let Some(mut next) = inner.services.get(service).cloned() else {
            return;
        };
        let done = match action {
            Action::Weight { stage, weight } => {
                let detail = json!({"canary": "stage", "stage": stage, "standby": weight});
                self.apply_weight(
                    inner,
                    service,
                    next,
                    weight,
                    Reason::Weight,
                    Actor::Auto,
                    detail,
                )
                .await
                .map(drop)
            }
            Action::Promote { stages } => {
                let to = next.active().other();
                let detail = json!({"canary": "promote", "stages": stages});
                self.apply_switch(inner, service, to, Reason::Canary, Actor::Auto, detail)
                    .await
                    .map(drop)
            }
            Action::Abort(verdict, by) => {
                tracing::warn!(service, criterion = verdict.criterion, detail = %verdict.detail, "canary aborted");
                inner
                    .objects
                    .metrics()
                    .canary_aborts
                    .with_label_values(&[service, verdict.criterion])
                    .inc();
                let detail =
                    json!({"by": by, "criterion": verdict.criterion, "measured": verdict.detail});
                self.apply_weight(
                    inner,
                    service,
                    next,
                    0,
                    Reason::CanaryAbort,
                    Actor::Auto,
                    detail,
                )
                .await
                .map(drop)
            }
            Action::AutoRollback { to, verdict } => {
                tracing::warn!(service, to = %to, criterion = verdict.criterion, detail = %verdict.detail, "automated rollback");
                next.local.budget.record(now);
                inner.services.insert(service.to_string(), next);
                let detail = json!({"criterion": verdict.criterion, "measured": verdict.detail});
                self.apply_switch(
                    inner,
                    service,
                    to,
                    Reason::AutoRollback,
                    Actor::Auto,
                    detail,
                )
                .await
                .map(drop)
            }
            Action::Blocked { why, verdict } => {
                tracing::warn!(service, why = %why, criterion = verdict.criterion, "automated rollback held back");
                let from = next.active();
                let to = next.release.previous.unwrap_or(from.other());
                let mut event = Event::now(
                    Some(service),
                    Some(from),
                    Some(to),
                    Reason::Blocked,
                    Actor::Auto,
                    json!({"action": "auto_rollback", "why": why, "criterion": verdict.criterion, "measured": verdict.detail}),
                );
                event.generation = inner.generation;
                let committed = commit(inner, Change::Event(event.clone())).await;
                inner.events.push(event);
                committed.map(drop)
            }
        };
        if let Err(e) = done {
            tracing::warn!(service, error = %e, "automated action not taken");
        }
    }
}

/// On the fleet's leader: takes up the canaries and watches the store says
/// run that this replica does not judge yet (started on another replica,
/// or by a leader that is gone), from the store's stage and watch end.
fn take_up(inner: &mut Inner) {
    let mut canaries = Vec::new();
    let mut watches = Vec::new();
    for (name, rt) in &inner.services {
        match (rt.release.canary_stage, &rt.local.canary) {
            (Some(stage), None) => canaries.push((name.clone(), stage)),
            (None, None) if rt.local.watch.is_none() => {
                if let Some(until) = rt
                    .release
                    .rollback_watch_until
                    .as_deref()
                    .and_then(|u| humantime::parse_rfc3339_weak(u).ok())
                {
                    watches.push((name.clone(), until));
                }
            }
            _ => {}
        }
    }
    resume_canaries(inner, &canaries);
    resume_watches(inner, &watches);
}

/// What `service` should do now, advancing its canary and watch.
fn decide(inner: &mut Inner, service: &str, now: Instant) -> Option<Action> {
    let cfg = inner
        .config
        .services
        .iter()
        .find(|s| s.name == service)?
        .clone();
    let totals = |pool: PoolName| pool_totals(inner, service, pool);
    let rt = inner.services.get(service)?;
    let (active, standby) = (rt.active(), rt.active().other());
    let (active_totals, standby_totals) = (totals(active), totals(standby));
    let watched_totals = rt
        .local
        .watch
        .as_ref()
        .map(|(pool, _)| (*pool, totals(*pool)));
    let healthy = |pool: PoolName| {
        cfg.pool(pool).servers.iter().any(|addr| {
            inner
                .health
                .get(&(service.to_string(), pool, addr.clone()))
                .is_none_or(|h| h.state.is_healthy())
        })
    };
    let watched_healthy = watched_totals.as_ref().map(|(pool, _)| healthy(*pool));
    let previous_healthy = rt.release.previous.map(healthy);
    let previous = rt.release.previous;
    let rt = &mut inner.services.get_mut(service)?.local;

    if let Some(canary) = rt.canary.as_mut() {
        match canary.step(now, &standby_totals, &active_totals) {
            Step::Hold => {}
            Step::Next { stage, weight } => return Some(Action::Weight { stage, weight }),
            Step::Promote => {
                rt.canary = None;
                return Some(Action::Promote {
                    stages: cfg.canary.len(),
                });
            }
            Step::Abort(verdict) => {
                rt.canary = None;
                rt.watch = None;
                return Some(Action::Abort(verdict, "canary"));
            }
        }
    }
    let Some(rollback) = cfg.rollback.as_ref() else {
        // A reload removed `[rollback]`: nothing is watched any more.
        rt.watch = None;
        return None;
    };
    if rt.canary.is_none() && rt.watch.as_ref().is_some_and(|(p, _)| *p != active) {
        // The standby pool is watched only while a canary runs; an
        // operator's weight ended it, and the operator has taken over.
        rt.watch = None;
        return None;
    }
    let (pool, watch) = rt.watch.as_mut()?;
    let (_, totals) = watched_totals?;
    if watch.expired(now) {
        if rt.canary.is_some() {
            // A canary is watched for as long as it runs.
            *watch = Watch::start(now, rollback.window, totals);
        } else {
            tracing::info!(service, pool = %pool, "automated-rollback watch ended: no problem seen");
            rt.watch = None;
        }
        return None;
    }
    let verdict = watch.step(now, totals, watched_healthy.unwrap_or(true), rollback)?;
    let pool = *pool;
    rt.watch = None;
    if pool != active {
        // The standby pool of a running canary misbehaves: end the canary.
        rt.canary = None;
        return Some(Action::Abort(verdict, "rollback"));
    }
    let to = previous.unwrap_or(pool.other());
    if previous_healthy == Some(false) {
        let why = format!("pool {to} has no healthy server to roll back to");
        return Some(Action::Blocked { why, verdict });
    }
    match rt.budget.check(now, rollback) {
        Ok(()) => Some(Action::AutoRollback { to, verdict }),
        Err(why) => Some(Action::Blocked { why, verdict }),
    }
}
