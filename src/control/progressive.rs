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

use super::actions::check_target;
use super::analysis::{Canary, Step, Verdict, Watch};
use super::effect::commit;
use super::events::{Actor, Event, Reason};
use super::{runtime, ControlError, ControlPlane, Inner};
use crate::config::{CanaryStage, PoolName};
use crate::metrics::PoolTotals;
use crate::wire::{Applied, CanaryStatus, WatchStatus};

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

/// Starts watching `pool` of `service` for `window` (`None`: the
/// configured one) if the service has a `[rollback]` section; false when it
/// has none.
pub(super) fn start_watch(
    inner: &mut Inner,
    service: &str,
    pool: PoolName,
    window: Option<Duration>,
) -> bool {
    let Some(cfg) = inner
        .config
        .services
        .iter()
        .find(|s| s.name == service)
        .and_then(|s| s.rollback.as_ref())
    else {
        return false;
    };
    let window = window.unwrap_or(cfg.window);
    let Some(state) = inner.objects.pool_state(service, pool) else {
        return false;
    };
    let watch = Watch::start(Instant::now(), window, state.metrics.totals());
    if let Some(rt) = inner.services.get_mut(service) {
        rt.watch = Some((pool, watch));
    }
    true
}

/// The cumulative totals of `pool` of `service` (zero when there is no such
/// pool).
fn pool_totals(inner: &Inner, service: &str, pool: PoolName) -> PoolTotals {
    inner
        .objects
        .pool_state(service, pool)
        .map(|s| s.metrics.totals())
        .unwrap_or_default()
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
        let (standby, active, weight) = (rt.active.other(), rt.active, rt.standby_weight);
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
        if let Some(rt) = inner.services.get_mut(service) {
            rt.canary = Some(canary);
        }
        start_watch(inner, service, standby, None);
    }
}

/// Until when the active pool of a service without a canary is watched,
/// for the state file (a canary's watch starts again with the canary).
pub(super) fn active_watch_until(rt: &super::Runtime) -> Option<String> {
    if rt.canary.is_some() {
        return None;
    }
    let (pool, watch) = rt.watch.as_ref()?;
    let left = watch.until.saturating_duration_since(Instant::now());
    (*pool == rt.active).then(|| super::events::rfc3339_millis(SystemTime::now() + left))
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
        if rt.canary.is_some() || left.is_zero() {
            continue;
        }
        let pool = rt.active;
        if start_watch(inner, service, pool, Some(left)) {
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
        let rt = runtime(&inner, service)?;
        if rt.canary.is_some() {
            return Err(ControlError::CanaryRunning(service.to_string()));
        }
        let stages = canary_stages(&inner, service);
        let count = stages.len();
        let standby = rt.active.other();
        check_target(&inner, service, standby, None)?;
        let (standby_totals, active_totals) = (
            pool_totals(&inner, service, standby),
            pool_totals(&inner, service, rt.active),
        );
        let Some((canary, weight)) =
            Canary::start(stages, Instant::now(), standby_totals, active_totals)
        else {
            return Err(ControlError::NoCanaryStages(service.to_string()));
        };
        if let Some(rt) = inner.services.get_mut(service) {
            rt.canary = Some(canary);
        }
        start_watch(&mut inner, service, standby, None);
        let detail = json!({"canary": "start", "stage": 0, "stages": count, "standby": weight});
        Ok(self
            .apply_weight(&mut inner, service, weight, Reason::Weight, actor, detail)
            .await)
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
        runtime(&inner, service)?;
        let rt = inner.services.get_mut(service).expect("checked above");
        let Some(canary) = rt.canary.take() else {
            return Err(ControlError::NoCanary(service.to_string()));
        };
        rt.watch = None;
        let detail = json!({"by": "operator", "stage": canary.stage()});
        inner
            .objects
            .metrics()
            .canary_aborts
            .with_label_values(&[service, "operator"])
            .inc();
        Ok(self
            .apply_weight(&mut inner, service, 0, Reason::CanaryAbort, actor, detail)
            .await)
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
        let names: Vec<String> = inner.services.keys().cloned().collect();
        for name in names {
            if let Some(action) = decide(&mut inner, &name, now) {
                self.apply(&mut inner, &name, action, now).await;
            }
        }
    }

    async fn apply(
        self: &Arc<Self>,
        inner: &mut Inner,
        service: &str,
        action: Action,
        now: Instant,
    ) {
        match action {
            Action::Weight { stage, weight } => {
                let detail = json!({"canary": "stage", "stage": stage, "standby": weight});
                self.apply_weight(inner, service, weight, Reason::Weight, Actor::Auto, detail)
                    .await;
            }
            Action::Promote { stages } => {
                let to = inner.services[service].active.other();
                let detail = json!({"canary": "promote", "stages": stages});
                self.apply_switch(inner, service, to, Reason::Canary, Actor::Auto, detail)
                    .await;
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
                self.apply_weight(inner, service, 0, Reason::CanaryAbort, Actor::Auto, detail)
                    .await;
            }
            Action::AutoRollback { to, verdict } => {
                tracing::warn!(service, to = %to, criterion = verdict.criterion, detail = %verdict.detail, "automated rollback");
                if let Some(rt) = inner.services.get_mut(service) {
                    rt.budget.record(now);
                }
                let detail = json!({"criterion": verdict.criterion, "measured": verdict.detail});
                self.apply_switch(
                    inner,
                    service,
                    to,
                    Reason::AutoRollback,
                    Actor::Auto,
                    detail,
                )
                .await;
            }
            Action::Blocked { why, verdict } => {
                tracing::warn!(service, why = %why, criterion = verdict.criterion, "automated rollback held back");
                let rt = &inner.services[service];
                let (from, to) = (rt.active, rt.previous.unwrap_or(rt.active.other()));
                let mut event = Event::now(
                    Some(service),
                    Some(from),
                    Some(to),
                    Reason::Blocked,
                    Actor::Auto,
                    json!({"action": "auto_rollback", "why": why, "criterion": verdict.criterion, "measured": verdict.detail}),
                );
                event.generation = inner.generation;
                commit(inner, event).await;
            }
        }
    }
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
    let (active, standby) = (rt.active, rt.active.other());
    let (active_totals, standby_totals) = (totals(active), totals(standby));
    let watched_totals = rt.watch.as_ref().map(|(pool, _)| (*pool, totals(*pool)));
    let healthy = |pool: PoolName| {
        cfg.pool(pool).servers.iter().any(|addr| {
            inner
                .health
                .get(&(service.to_string(), pool, addr.clone()))
                .is_none_or(|h| h.state.is_healthy())
        })
    };
    let watched_healthy = watched_totals.as_ref().map(|(pool, _)| healthy(*pool));
    let previous_healthy = rt.previous.map(healthy);
    let rt = inner.services.get_mut(service)?;

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
    if rt.canary.is_none() && rt.watch.as_ref().is_some_and(|(p, _)| *p != rt.active) {
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
    if pool != rt.active {
        // The standby pool of a running canary misbehaves: end the canary.
        rt.canary = None;
        return Some(Action::Abort(verdict, "rollback"));
    }
    let to = rt.previous.unwrap_or(pool.other());
    if previous_healthy == Some(false) {
        let why = format!("pool {to} has no healthy server to roll back to");
        return Some(Action::Blocked { why, verdict });
    }
    match rt.budget.check(now, rollback) {
        Ok(()) => Some(Action::AutoRollback { to, verdict }),
        Err(why) => Some(Action::Blocked { why, verdict }),
    }
}

/// The canary and watch of one service for status.
pub(super) fn describe(
    inner: &Inner,
    service: &str,
) -> (Option<CanaryStatus>, Option<WatchStatus>) {
    let Some(rt) = inner.services.get(service) else {
        return (None, None);
    };
    let now = Instant::now();
    let canary = rt.canary.as_ref().map(|c| {
        let standby = inner
            .objects
            .pool_state(service, rt.active.other())
            .map(|s| s.metrics.totals())
            .unwrap_or_default();
        c.describe(now, &standby)
    });
    let watch = rt.watch.as_ref().map(|(pool, w)| {
        let remaining = w.remaining(now);
        WatchStatus {
            pool: *pool,
            until: crate::wire::rfc3339(SystemTime::now() + remaining),
            remaining_ms: u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX),
        }
    });
    (canary, watch)
}
