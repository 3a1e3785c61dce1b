//! A deploy after its switch: the canary, the watch and the drain, then
//! its end (released, with the keep-old wait and the old containers'
//! stop; or refused, rolled back or aborted, back on the old pool with
//! the new containers stopped).

use std::time::{Duration, Instant, SystemTime};

use super::{phase, wait_signal, Runner, Signal, Stop};
use crate::control::runtime;
use crate::wire::{DeployOutcome, Reason};

impl Runner {
    /// The canary (when there is one), the watch and the drain.
    pub(super) async fn after_switch(&mut self) -> Result<(), Stop> {
        let to = self.deploy.to;
        if self.deploy.canary {
            loop {
                let (canary, active) = self.state().await?;
                if !canary {
                    if active != to {
                        return Err(Stop::Failed(
                            DeployOutcome::RolledBack,
                            "the canary was aborted: the traffic stays on the old pool".into(),
                        ));
                    }
                    break;
                }
                self.watching_abort().await?;
            }
            self.note("canary", &format!("canary promoted pool {to}"))
                .await;
        }
        let watched = {
            let inner = self.control.inner.lock().await;
            let rt = inner.services.get(&self.service);
            rt.and_then(|rt| rt.local.watch.as_ref())
                .map(|(_, w)| w.remaining(Instant::now()))
        };
        match watched {
            Some(left) => {
                let left = humantime::format_duration(Duration::from_secs(left.as_secs().max(1)));
                self.note(
                    "watch",
                    &format!("automated-rollback watch of pool {to} for {left}"),
                )
                .await;
                loop {
                    let (watch, active) = {
                        let inner = self.control.inner.lock().await;
                        let rt = runtime(&inner, &self.service)?;
                        (
                            rt.local.watch.as_ref().is_some_and(|(p, _)| *p == to),
                            rt.active(),
                        )
                    };
                    if active != to {
                        let why = self.last_rollback().await;
                        return Err(Stop::Failed(DeployOutcome::RolledBack, why));
                    }
                    if !watch {
                        break;
                    }
                    self.watching_abort().await?;
                }
                self.note("watch", "watch ended: no problem seen").await;
            }
            None => {
                self.note("watch", "the service has no rollback settings: not watched")
                    .await
            }
        }
        let drain = self.drain_timeout().await;
        let drained = self
            .abortable(self.control.drained(&self.service, drain))
            .await??;
        let message = if drained.drained {
            format!("pool {} drained", self.deploy.from)
        } else {
            format!(
                "pool {} not drained within {}: {} in flight were cut",
                self.deploy.from,
                humantime::format_duration(drain),
                drained.inflight
            )
        };
        self.note("drained", &message).await;
        Ok(())
    }

    /// Ends the deploy: released (then the keep-old wait), or refused,
    /// rolled back or aborted (the new containers stopped and kept).
    pub(super) async fn finish(mut self, outcome: Result<(), Stop>) {
        match outcome {
            Ok(()) => {
                let keep = Duration::from_millis(self.deploy.keep_old_ms);
                let until = crate::wire::rfc3339_millis(SystemTime::now() + keep);
                let message = format!(
                    "released: {} serves on pool {}; the old containers stop in {} (until then rollback is instant)",
                    self.deploy.image,
                    self.deploy.to,
                    humantime::format_duration(keep)
                );
                let done = self
                    .update("end", &message, true, |d| {
                        d.phase = phase::KEEP_OLD.into();
                        d.keep_old_until = Some(until.clone());
                        d.outcome = Some(DeployOutcome::Released);
                    })
                    .await;
                if let Err(Stop::Failed(_, e)) = done {
                    tracing::warn!(service = %self.service, error = %e, "deploy released, but its state was not recorded");
                }
                tracing::info!(service = %self.service, image = %self.deploy.image, "deploy released");
                self.keep_old().await;
            }
            Err(Stop::Failed(outcome, why)) => self.fail(outcome, why).await,
        }
    }

    /// Puts the traffic back on the old pool if it is not there, stops the
    /// new containers, and records the end.
    pub(super) async fn fail(&mut self, outcome: DeployOutcome, why: String) {
        tracing::warn!(service = %self.service, image = %self.deploy.image, outcome = outcome.as_str(), reason = %why, "deploy did not release");
        let from = self.deploy.from;
        let back = {
            let mut inner = self.control.inner.lock().await;
            match runtime(&inner, &self.service) {
                Ok(rt) if rt.active() != from || rt.standby_weight() > 0 => {
                    let detail = self.detail("return", &why);
                    Some(
                        self.control
                            .apply_switch(
                                &mut inner,
                                &self.service,
                                from,
                                Reason::Deploy,
                                self.actor,
                                detail,
                            )
                            .await,
                    )
                }
                _ => None,
            }
        };
        if let Some(Err(e)) = back {
            tracing::error!(service = %self.service, error = %e, "deploy: the switch back to the old pool failed");
        }
        let mut ids = self.deploy.new_containers.clone();
        if let Ok(labelled) = self.engine.labelled(self.deploy.id.clone()).await {
            for id in labelled {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        let n = ids.len();
        if let Err(e) = self.engine.stop(ids.clone()).await {
            tracing::warn!(service = %self.service, error = %e, "deploy: the new containers were not all stopped");
        }
        let message = format!(
            "{}: {why}; the traffic is on pool {from}; {n} new container(s) stopped and kept for inspection",
            outcome.as_str()
        );
        let recorded = self
            .update("end", &message, true, |d| {
                d.phase = phase::DONE.into();
                d.new_containers = ids.clone();
                d.outcome = Some(outcome);
            })
            .await;
        if let Err(Stop::Failed(_, e)) = recorded {
            tracing::warn!(service = %self.service, error = %e, "deploy ended, but its end was not recorded");
            let mut d = self.progress.borrow().clone();
            d.steps.push(self.step_of("end", message, Some(outcome)));
            d.outcome = Some(outcome);
            self.progress.send_replace(d);
        }
    }

    /// Waits out keep-old (a newer deploy ends it early; `--abort` returns
    /// to the old pool), then stops the containers of the pool that does
    /// not serve.
    pub(super) async fn keep_old(mut self) {
        let until = self
            .progress
            .borrow()
            .keep_old_until
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
            .unwrap_or_else(SystemTime::now);
        let left = until.duration_since(SystemTime::now()).unwrap_or_default();
        let signal = tokio::select! {
            () = tokio::time::sleep(left) => Signal::None,
            s = wait_signal(&mut self.signal) => s,
        };
        if signal == Signal::Abort {
            let mut d = self.progress.borrow().clone();
            d.outcome = None;
            self.progress.send_replace(d);
            self.fail(
                DeployOutcome::Aborted,
                "aborted during the keep-old wait".into(),
            )
            .await;
            return;
        }
        let active = match self.state().await {
            Ok((_, active)) => active,
            Err(_) => return,
        };
        // Only what does not serve stops: after an operator's rollback the
        // old containers serve again, and the new ones are idle.
        let (ids, which) = if active == self.deploy.to {
            (self.deploy.old_containers.clone(), "old")
        } else {
            (self.deploy.new_containers.clone(), "new")
        };
        let message = match self.engine.stop(ids.clone()).await {
            Ok(()) => format!("{} {which} container(s) stopped", ids.len()),
            Err(e) => format!("stopping the {which} containers: {e}"),
        };
        let _ = self
            .update("stop-old", &message, true, |d| d.phase = phase::DONE.into())
            .await;
    }
}
