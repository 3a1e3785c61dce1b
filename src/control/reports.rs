//! Health reports and passive failures: the outcome of each health check
//! and each failed connection, applied to the servers' hysteresis; a flip
//! publishes a snapshot (health is this process's observation: nothing is
//! committed to the store).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::mpsc;

use super::effect::publish;
use super::{ControlPlane, Inner, PASSIVE_RETRY};
use crate::health::{self, HealthReport, Outcome};
use crate::snapshot::ServerFailure;

impl ControlPlane {
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
                publish(&mut inner);
            }
            inner.checkers = health::Checkers::start(&inner.config, &self.health_tx);
        }
        self.ready.store(true, Ordering::Release);
        tracing::info!(
            checked = reports.len(),
            "first round of health checks done: ready"
        );
    }

    pub(super) async fn apply_reports(
        self: Arc<Self>,
        mut health: mpsc::Receiver<HealthReport>,
        mut failures: mpsc::Receiver<ServerFailure>,
    ) {
        loop {
            tokio::select! {
                Some(report) = health.recv() => {
                    let mut inner = self.inner.lock().await;
                    if record(&mut inner, &report) {
                        publish(&mut inner);
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
            .any(|s| s.name == key.0 && s.health_of(key.1).is_some());
        let Some(h) = inner.health.get_mut(&key) else {
            return;
        };
        h.last_error = Some(failure.error.clone());
        if !h.state.mark_down() {
            return;
        }
        tracing::warn!(service = %key.0, pool = %key.1, server = %key.2, error = %failure.error, "server marked down: connection failed");
        publish(&mut inner);
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
}

/// Applies one health report; true when the server's health flipped.
fn record(inner: &mut Inner, report: &HealthReport) -> bool {
    let thresholds = inner
        .config
        .services
        .iter()
        .find(|s| s.name == report.service)
        .map(|s| {
            s.health_of(report.pool).map_or((1, 1), |h| {
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
        h.proven |= healthy;
        let why = h.last_error.clone().unwrap_or_default();
        tracing::info!(service = %key.0, pool = %key.1, server = %key.2, healthy, error = %why, "server health changed");
        if let Some(rt) = inner.services.get_mut(&key.0) {
            rt.local.generation = inner.generation + 1;
        }
    }
    flipped
}
