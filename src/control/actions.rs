//! The operator's actions on one service: switch (health- and
//! version-gated), rollback, the drain that follows, and weights; and the
//! same changes when another writer committed them to the store.

use std::sync::Arc;

use super::effect::{commit_service, publish};
use super::gates::check_target;
use super::progressive::watch_for;
use super::runtime::Runtime;
use super::status::service_status;
use super::store::Remote;
use super::{runtime, unchanged, ControlError, ControlPlane, Inner};
use crate::config::{self, PoolName};
use crate::wire::{Actor, Applied, Event, Reason, SwitchRequest};

impl ControlPlane {
    /// Switches `service` to `req.to` (default: the standby pool), gated on
    /// the target's health and version unless `force`.
    ///
    /// # Errors
    ///
    /// Unknown service, unhealthy target, version mismatch, or a refusal of
    /// the release-state store.
    pub async fn switch(
        self: &Arc<Self>,
        service: &str,
        req: SwitchRequest,
        actor: Actor,
    ) -> Result<Applied, ControlError> {
        let mut inner = self.inner.lock().await;
        let rt = runtime(&inner, service)?;
        let to = req.to.unwrap_or(rt.active().other());
        if to == rt.active() {
            return Ok(unchanged(&self.routing, &inner, service));
        }
        if !req.force {
            check_target(&inner, service, to, req.expect_version.as_deref())?;
        }
        let detail = serde_json::json!({"force": req.force, "expect_version": req.expect_version});
        self.apply_switch(&mut inner, service, to, Reason::Manual, actor, detail)
            .await
    }

    /// Switches `service` back to the pool active before its last switch.
    ///
    /// # Errors
    ///
    /// Unknown service, no switch to undo, or a refusal of the store.
    pub async fn rollback(
        self: &Arc<Self>,
        service: &str,
        actor: Actor,
    ) -> Result<Applied, ControlError> {
        let mut inner = self.inner.lock().await;
        let rt = runtime(&inner, service)?;
        let to = rt
            .release
            .previous
            .filter(|p| *p != rt.active())
            .ok_or_else(|| ControlError::NothingToRollBack(service.to_string()))?;
        self.apply_switch(
            &mut inner,
            service,
            to,
            Reason::Rollback,
            actor,
            serde_json::json!({}),
        )
        .await
    }

    /// Moves every new request of an existing `service` to `to`: commits,
    /// publishes, and schedules the end of the old pool's drain.
    pub(super) async fn apply_switch(
        self: &Arc<Self>,
        inner: &mut Inner,
        service: &str,
        to: PoolName,
        reason: Reason,
        actor: Actor,
        detail: serde_json::Value,
    ) -> Result<Applied, ControlError> {
        let generation = inner.generation + 1;
        let mut next = runtime(inner, service)?;
        let from = next.active();
        let mut event = Event::now(Some(service), Some(from), Some(to), reason, actor, detail);
        event.generation = generation;
        next.release.previous = Some(from);
        next.release.active = to;
        next.release.standby_weight = 0;
        next.release.last_switch = Some(event.clone());
        next.local.drain_epoch += 1;
        next.local.canary = None;
        next.local.watch = if matches!(reason, Reason::Manual | Reason::Canary | Reason::Deploy) {
            watch_for(inner, service, to, None)
        } else {
            None
        };
        let epoch = next.local.drain_epoch;
        let persisted = commit_service(inner, service, next, event).await?;
        inner
            .objects
            .metrics()
            .switches
            .with_label_values(&[service, reason.as_str()])
            .inc();
        tracing::info!(service, from = %from, to = %to, reason = reason.as_str(), actor = actor.as_str(), generation, "switched");
        self.schedule_drain_end(inner, service, from, epoch);
        Ok(Applied {
            generation,
            changed: true,
            service: service_status(&self.routing.load(), inner, service),
            persisted,
        })
    }

    /// At `service`'s `drain_timeout` from now, cuts what is still open on
    /// `pool`, unless a later switch or a weight made it live again.
    fn schedule_drain_end(
        self: &Arc<Self>,
        inner: &Inner,
        service: &str,
        pool: PoolName,
        epoch: u64,
    ) {
        let drain = inner
            .config
            .services
            .iter()
            .find(|s| s.name == service)
            .map_or(config::DEFAULT_DRAIN_TIMEOUT, |s| s.drain_timeout);
        let control = self.clone();
        let service = service.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(drain).await;
            control.end_drain(&service, pool, epoch).await;
        });
    }

    /// At the drain deadline, cuts what is still open on the pool that lost
    /// the traffic, unless a later switch or a weight made it live again.
    async fn end_drain(&self, service: &str, pool: PoolName, epoch: u64) {
        let inner = self.inner.lock().await;
        let Some(rt) = inner.services.get(service) else {
            return;
        };
        if rt.local.drain_epoch != epoch || rt.active() == pool || rt.standby_weight() > 0 {
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
    /// Unknown service, a weight outside 0..=100, or a refusal of the store.
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
        let mut next = runtime(&inner, service)?;
        if next.standby_weight() == weight {
            return Ok(unchanged(&self.routing, &inner, service));
        }
        // An operator's weight ends a staged rollout: the operator takes over.
        let ended_canary = next.local.canary.take().is_some();
        let detail = serde_json::json!({"standby": weight, "was": next.standby_weight(), "ended_canary": ended_canary});
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

    /// Commits `next` (the runtime of an existing `service` as its caller
    /// changed it) with the standby weight `weight`, records the event and
    /// publishes.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn apply_weight(
        &self,
        inner: &mut Inner,
        service: &str,
        mut next: Runtime,
        weight: u8,
        reason: Reason,
        actor: Actor,
        detail: serde_json::Value,
    ) -> Result<Applied, ControlError> {
        let generation = inner.generation + 1;
        let active = next.active();
        let mut event = Event::now(
            Some(service),
            Some(active),
            Some(active.other()),
            reason,
            actor,
            detail,
        );
        event.generation = generation;
        next.release.standby_weight = weight;
        let persisted = commit_service(inner, service, next, event).await?;
        tracing::info!(
            service,
            standby = weight,
            reason = reason.as_str(),
            actor = actor.as_str(),
            generation,
            "weight changed"
        );
        Ok(Applied {
            generation,
            changed: true,
            service: service_status(&self.routing.load(), inner, service),
            persisted,
        })
    }

    /// Publishes a change another writer committed to the store, without
    /// committing it again. A new active pool starts the old one's drain
    /// here too; the canary and watch counts of this process end with it.
    pub(super) async fn apply_remote(self: &Arc<Self>, remote: Remote) {
        let mut inner = self.inner.lock().await;
        let Some(mut next) = inner.services.get(&remote.service).cloned() else {
            tracing::debug!(service = %remote.service, "a change to a service not configured here: ignored");
            return;
        };
        let from = next.active();
        let switched = from != remote.state.active;
        next.release = remote.state;
        if switched {
            next.local.drain_epoch += 1;
            next.local.canary = None;
            next.local.watch = None;
        }
        let generation = inner.generation + 1;
        next.local.generation = generation;
        let epoch = next.local.drain_epoch;
        tracing::info!(service = %remote.service, active = %next.active(), standby = next.standby_weight(), generation, "applied a change committed elsewhere");
        inner.services.insert(remote.service.clone(), next);
        if let Some(event) = remote.event {
            inner.events.push(event);
        }
        publish(&mut inner);
        if switched {
            self.schedule_drain_end(&inner, &remote.service, from, epoch);
        }
    }
}
