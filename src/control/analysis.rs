//! The judges of progressive delivery (pure: they take `now` and the pools'
//! cumulative totals, never a clock or a socket).
//!
//! [`Canary`] walks the configured stages: each sets a weight, holds, and is
//! judged on the standby pool once it has answered `min_requests` in the
//! stage, against its thresholds and against the active pool as a baseline.
//! [`Watch`] guards the pool that just took the traffic for `window`, over a
//! sliding window of samples, and trips when its error share or p99 crosses
//! the thresholds or it turns unhealthy.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use crate::config::{CanaryStage, RollbackConfig};
use crate::metrics::PoolTotals;
use crate::wire::{CanaryStatus, Judged};

/// Whole milliseconds, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A failed judgment: which criterion, what was measured, what was allowed.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// `max_error_rate`, `max_p99`, `max_stream_abort_rate`, `max_ttfb_p99`,
    /// `baseline_error_rate`, `baseline_p99`, `baseline_stream_abort_rate`,
    /// `baseline_ttfb_p99` or `unhealthy`.
    pub criterion: &'static str,
    /// The measured values (JSON for the event's detail).
    pub detail: serde_json::Value,
}

/// The stream thresholds of a stage or a rollback watch; `None`: not judged.
#[derive(Debug, Clone, Copy, Default)]
struct StreamLimits {
    max_abort_rate: Option<f64>,
    max_ttfb_p99: Option<Duration>,
}

impl From<&CanaryStage> for StreamLimits {
    fn from(s: &CanaryStage) -> StreamLimits {
        StreamLimits {
            max_abort_rate: s.max_stream_abort_rate,
            max_ttfb_p99: s.max_ttfb_p99,
        }
    }
}

impl From<&RollbackConfig> for StreamLimits {
    fn from(c: &RollbackConfig) -> StreamLimits {
        StreamLimits {
            max_abort_rate: c.max_stream_abort_rate,
            max_ttfb_p99: c.max_ttfb_p99,
        }
    }
}

/// Judges the streams of `window` against `limits`: the share of finished
/// streams the upstream aborted (`stream_abort_rate`), once any stream
/// finished, and their p99 time to first byte (`ttfb_p99_ms`), once any
/// first byte was timed. `None` when they pass.
fn judge_streams(window: &PoolTotals, limits: StreamLimits) -> Option<Verdict> {
    let s = &window.streams;
    if let Some(max) = limits.max_abort_rate {
        let rate = s.abort_rate();
        if s.finished > 0 && rate > max {
            return Some(Verdict {
                criterion: "max_stream_abort_rate",
                detail: json!({"stream_abort_rate": rate, "max_stream_abort_rate": max, "streams": s.finished, "upstream_aborts": s.upstream_aborts}),
            });
        }
    }
    if let Some(max) = limits.max_ttfb_p99 {
        let p99 = s.ttfb_p99();
        if s.ttfb_count > 0 && p99 > max {
            return Some(Verdict {
                criterion: "max_ttfb_p99",
                detail: json!({"ttfb_p99_ms": millis(p99), "max_ttfb_p99_ms": millis(max), "streams": s.ttfb_count}),
            });
        }
    }
    None
}

/// Judges `window` against thresholds; `None` when it passes.
fn judge(
    window: &PoolTotals,
    max_error_rate: f64,
    max_p99: Duration,
    streams: StreamLimits,
) -> Option<Verdict> {
    let rate = window.error_rate();
    if rate > max_error_rate {
        return Some(Verdict {
            criterion: "max_error_rate",
            detail: json!({"error_rate": rate, "max_error_rate": max_error_rate, "requests": window.requests, "errors": window.errors}),
        });
    }
    let p99 = window.p99();
    if p99 > max_p99 {
        return Some(Verdict {
            criterion: "max_p99",
            detail: json!({"p99_ms": p99.as_millis() as u64, "max_p99_ms": max_p99.as_millis() as u64, "requests": window.requests}),
        });
    }
    judge_streams(window, streams)
}

/// Whether the standby pool is clearly worse than the active one: an error
/// share more than twice the baseline's plus one point, or a p99 more than
/// twice the baseline's plus 100 ms. Judged only when the baseline has
/// enough requests of its own. Streams are compared the same way, when
/// the stage judges them and both pools have streams to compare.
fn judge_baseline(
    standby: &PoolTotals,
    active: &PoolTotals,
    min_requests: u64,
    streams: StreamLimits,
) -> Option<Verdict> {
    if active.requests < min_requests {
        return None;
    }
    let (s, a) = (standby.error_rate(), active.error_rate());
    if s > 2.0 * a + 0.01 {
        return Some(Verdict {
            criterion: "baseline_error_rate",
            detail: json!({"error_rate": s, "baseline_error_rate": a, "requests": standby.requests}),
        });
    }
    let (sp, ap) = (standby.p99(), active.p99());
    if sp > ap * 2 + Duration::from_millis(100) {
        return Some(Verdict {
            criterion: "baseline_p99",
            detail: json!({"p99_ms": sp.as_millis() as u64, "baseline_p99_ms": ap.as_millis() as u64, "requests": standby.requests}),
        });
    }
    let (ss, sa) = (&standby.streams, &active.streams);
    if streams.max_abort_rate.is_some() && ss.finished > 0 && sa.finished > 0 {
        let (s, a) = (ss.abort_rate(), sa.abort_rate());
        if s > 2.0 * a + 0.01 {
            return Some(Verdict {
                criterion: "baseline_stream_abort_rate",
                detail: json!({"stream_abort_rate": s, "baseline_stream_abort_rate": a, "streams": ss.finished}),
            });
        }
    }
    if streams.max_ttfb_p99.is_some() && ss.ttfb_count > 0 && sa.ttfb_count > 0 {
        let (sp, ap) = (ss.ttfb_p99(), sa.ttfb_p99());
        if sp > ap * 2 + Duration::from_millis(100) {
            return Some(Verdict {
                criterion: "baseline_ttfb_p99",
                detail: json!({"ttfb_p99_ms": millis(sp), "baseline_ttfb_p99_ms": millis(ap), "streams": ss.ttfb_count}),
            });
        }
    }
    None
}

/// What a canary should do now.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Keep the current stage.
    Hold,
    /// The stage passed: move to the next one at this weight.
    Next {
        /// Stage index.
        stage: usize,
        /// Its weight.
        weight: u8,
    },
    /// The last stage passed: promote the standby pool.
    Promote,
    /// A stage failed.
    Abort(Verdict),
}

/// A staged rollout in progress.
#[derive(Debug, Clone)]
pub struct Canary {
    stages: Vec<CanaryStage>,
    stage: usize,
    stage_started: Instant,
    standby_at_start: PoolTotals,
    active_at_start: PoolTotals,
}

impl Canary {
    /// Starts at stage 0; returns the canary and the first weight. `None`
    /// when there are no stages.
    pub fn start(
        stages: Vec<CanaryStage>,
        now: Instant,
        standby: PoolTotals,
        active: PoolTotals,
    ) -> Option<(Canary, u8)> {
        let canary = Canary::resume(stages, 0, now, standby, active)?;
        let weight = canary.weight();
        Some((canary, weight))
    }

    /// Takes a rollout up again at `stage` (after a restart): the stage's
    /// hold and request count start again at `now` from these totals.
    /// `None` when there is no such stage.
    pub fn resume(
        stages: Vec<CanaryStage>,
        stage: usize,
        now: Instant,
        standby: PoolTotals,
        active: PoolTotals,
    ) -> Option<Canary> {
        (stage < stages.len()).then_some(Canary {
            stages,
            stage,
            stage_started: now,
            standby_at_start: standby,
            active_at_start: active,
        })
    }

    /// The current stage index.
    pub fn stage(&self) -> usize {
        self.stage
    }

    /// The current stage's weight.
    pub fn weight(&self) -> u8 {
        self.stages[self.stage].weight
    }

    /// Judges the current stage with the pools' cumulative totals.
    pub fn step(&mut self, now: Instant, standby: &PoolTotals, active: &PoolTotals) -> Step {
        let stage = &self.stages[self.stage];
        let window = standby.since(&self.standby_at_start);
        if window.requests < stage.min_requests {
            return Step::Hold;
        }
        let baseline = active.since(&self.active_at_start);
        let streams = StreamLimits::from(stage);
        if let Some(v) = judge(&window, stage.max_error_rate, stage.max_p99, streams)
            .or_else(|| judge_baseline(&window, &baseline, stage.min_requests, streams))
        {
            return Step::Abort(v);
        }
        if now.duration_since(self.stage_started) < stage.hold {
            return Step::Hold;
        }
        if self.stage + 1 == self.stages.len() {
            return Step::Promote;
        }
        self.stage += 1;
        self.stage_started = now;
        self.standby_at_start = standby.clone();
        self.active_at_start = active.clone();
        Step::Next {
            stage: self.stage,
            weight: self.stages[self.stage].weight,
        }
    }

    /// For status: stage, weight, time in stage and what the stage saw.
    pub fn describe(&self, now: Instant, standby: &PoolTotals) -> CanaryStatus {
        let stage = &self.stages[self.stage];
        let window = standby.since(&self.standby_at_start);
        CanaryStatus {
            stage: self.stage,
            stages: self.stages.len(),
            weight: stage.weight,
            held_ms: millis(now.duration_since(self.stage_started)),
            hold_ms: millis(stage.hold),
            requests: window.requests,
            min_requests: stage.min_requests,
            error_rate: window.error_rate(),
            p99_ms: millis(window.p99()),
            max_error_rate: stage.max_error_rate,
            max_p99_ms: millis(stage.max_p99),
        }
    }
}

/// Samples of a pool's totals, one per tick, long enough to cover a window.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    samples: VecDeque<(Instant, PoolTotals)>,
}

impl Samples {
    /// Adds a sample and forgets those older than `keep`.
    pub fn push(&mut self, now: Instant, totals: PoolTotals, keep: Duration) {
        self.samples.push_back((now, totals));
        while let Some((t, _)) = self.samples.front() {
            if now.duration_since(*t) > keep && self.samples.len() > 1 {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    /// The oldest sample taken at or after `since`.
    pub fn at_or_after(&self, since: Instant) -> Option<&PoolTotals> {
        self.samples
            .iter()
            .find(|(t, _)| *t >= since)
            .map(|(_, s)| s)
    }
}

/// The automated-rollback watch over the pool that took the traffic.
#[derive(Debug, Clone)]
pub struct Watch {
    /// Until when the pool is watched.
    pub until: Instant,
    started: Instant,
    samples: Samples,
}

impl Watch {
    /// Starts watching at `now` with the pool's current totals.
    pub fn start(now: Instant, window: Duration, totals: PoolTotals) -> Watch {
        let mut samples = Samples::default();
        samples.push(now, totals, window);
        Watch {
            until: now + window,
            started: now,
            samples,
        }
    }

    /// Whether the watch is over.
    pub fn expired(&self, now: Instant) -> bool {
        now >= self.until
    }

    /// Records the pool's totals and judges the last `window` (never reaching
    /// back before the watch started). `None`: all is well.
    pub fn step(
        &mut self,
        now: Instant,
        totals: PoolTotals,
        healthy: bool,
        cfg: &RollbackConfig,
    ) -> Option<Verdict> {
        self.samples.push(now, totals.clone(), cfg.window);
        if !healthy {
            return Some(Verdict {
                criterion: "unhealthy",
                detail: json!({"healthy": false}),
            });
        }
        let window = self.window(now, &totals, cfg)?;
        if window.requests < cfg.min_requests {
            return None;
        }
        judge(
            &window,
            cfg.max_error_rate,
            cfg.max_p99,
            StreamLimits::from(cfg),
        )
    }

    /// What happened in the sliding window ending at `now` (never reaching
    /// back before the watch started), given the pool's `totals`.
    fn window(
        &self,
        now: Instant,
        totals: &PoolTotals,
        cfg: &RollbackConfig,
    ) -> Option<PoolTotals> {
        let since = now
            .checked_sub(cfg.window)
            .unwrap_or(self.started)
            .max(self.started);
        Some(totals.since(self.samples.at_or_after(since)?))
    }

    /// The measures [`Watch::step`] judges at `now`, against `cfg`'s
    /// thresholds (records nothing).
    pub fn judged(&self, now: Instant, totals: &PoolTotals, cfg: &RollbackConfig) -> Judged {
        let window = self.window(now, totals, cfg).unwrap_or_default();
        Judged {
            requests: window.requests,
            min_requests: cfg.min_requests,
            error_rate: window.error_rate(),
            max_error_rate: cfg.max_error_rate,
            p99_ms: millis(window.p99()),
            max_p99_ms: millis(cfg.max_p99),
        }
    }

    /// How long the watch has left at `now`.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.until.saturating_duration_since(now)
    }
}

/// The cooldown and hourly cap of automated rollbacks.
#[derive(Debug, Clone, Default)]
pub struct Budget {
    done: VecDeque<Instant>,
}

impl Budget {
    /// `Err(why)` when an automated rollback at `now` is held back.
    pub fn check(&self, now: Instant, cfg: &RollbackConfig) -> Result<(), String> {
        if let Some(last) = self.done.back() {
            let since = now.duration_since(*last);
            if since < cfg.cooldown {
                return Err(format!(
                    "cooldown: last automated rollback {} ago, cooldown {}",
                    humantime::format_duration(Duration::from_secs(since.as_secs())),
                    humantime::format_duration(cfg.cooldown)
                ));
            }
        }
        let hour = Duration::from_secs(3600);
        let recent = self
            .done
            .iter()
            .filter(|t| now.duration_since(**t) < hour)
            .count();
        if recent >= cfg.max_per_hour as usize {
            return Err(format!(
                "max_per_hour: {recent} automated rollbacks in the last hour (max {})",
                cfg.max_per_hour
            ));
        }
        Ok(())
    }

    /// The budget left by the automated rollbacks done at `times` (wall
    /// clock, oldest first), as seen at `now` / `wall_now`: those of the
    /// last hour count, so a restart neither resets the cooldown nor the
    /// hourly cap.
    pub fn from_history(
        times: impl IntoIterator<Item = SystemTime>,
        now: Instant,
        wall_now: SystemTime,
    ) -> Budget {
        let hour = Duration::from_secs(3600);
        let mut budget = Budget::default();
        for t in times {
            // A time ahead of the clock (set back since) counts as now.
            let age = wall_now.duration_since(t).unwrap_or_default();
            if age >= hour {
                continue;
            }
            // Older than the monotonic clock (a reboot since): counted as
            // now, which holds the next rollback back rather than let one
            // through early.
            budget.record(now.checked_sub(age).unwrap_or(now));
        }
        budget
    }

    /// Records an automated rollback at `now`.
    pub fn record(&mut self, now: Instant) {
        self.done.push_back(now);
        while self.done.len() > 64 {
            self.done.pop_front();
        }
    }
}

#[cfg(test)]
mod tests;
