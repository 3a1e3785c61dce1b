//! The operator's actions on one service: switch (health- and
//! version-gated), rollback, the drain that follows, and weights.

use std::sync::Arc;

use super::effect::{commit, publish};
use super::events::{Actor, Event, Reason};
use super::status::service_status;
use super::{progressive, runtime, unchanged, ControlError, ControlPlane, Inner, ServerHealth};
use crate::config::{self, PoolName, ServerAddr};
use crate::wire::{Applied, SwitchRequest};

impl ControlPlane {
    /// Switches `service` to `req.to` (default: the standby pool), gated on
    /// the target's health and version unless `force`.
    ///
    /// # Errors
    ///
    /// Unknown service, unhealthy target, version mismatch.
    pub async fn switch(
        self: &Arc<Self>,
        service: &str,
        req: SwitchRequest,
        actor: Actor,
    ) -> Result<Applied, ControlError> {
        let mut inner = self.inner.lock().await;
        let rt = runtime(&inner, service)?;
        let to = req.to.unwrap_or(rt.active.other());
        if to == rt.active {
            return Ok(unchanged(&self.routing, &inner, service));
        }
        if !req.force {
            check_target(&inner, service, to, req.expect_version.as_deref())?;
        }
        let detail = serde_json::json!({"force": req.force, "expect_version": req.expect_version});
        Ok(self
            .apply_switch(&mut inner, service, to, Reason::Manual, actor, detail)
            .await)
    }

    /// Switches `service` back to the pool active before its last switch.
    ///
    /// # Errors
    ///
    /// Unknown service, or no switch to undo.
    pub async fn rollback(
        self: &Arc<Self>,
        service: &str,
        actor: Actor,
    ) -> Result<Applied, ControlError> {
        let mut inner = self.inner.lock().await;
        let rt = runtime(&inner, service)?;
        let to = rt
            .previous
            .filter(|p| *p != rt.active)
            .ok_or_else(|| ControlError::NothingToRollBack(service.to_string()))?;
        Ok(self
            .apply_switch(
                &mut inner,
                service,
                to,
                Reason::Rollback,
                actor,
                serde_json::json!({}),
            )
            .await)
    }

    pub(super) async fn apply_switch(
        self: &Arc<Self>,
        inner: &mut Inner,
        service: &str,
        to: PoolName,
        reason: Reason,
        actor: Actor,
        detail: serde_json::Value,
    ) -> Applied {
        let generation = inner.generation + 1;
        let drain = inner
            .config
            .services
            .iter()
            .find(|s| s.name == service)
            .map_or(config::DEFAULT_DRAIN_TIMEOUT, |s| s.drain_timeout);
        let rt = inner
            .services
            .get_mut(service)
            .expect("caller checked the service exists");
        let from = rt.active;
        let mut event = Event::now(Some(service), Some(from), Some(to), reason, actor, detail);
        event.generation = generation;
        rt.previous = Some(from);
        rt.active = to;
        rt.standby_weight = 0;
        rt.generation = generation;
        rt.last_switch = Some(event.clone());
        rt.drain_epoch += 1;
        rt.canary = None;
        rt.watch = None;
        let epoch = rt.drain_epoch;
        if matches!(reason, Reason::Manual | Reason::Canary) {
            progressive::start_watch(inner, service, to, None);
        }
        publish(&self.routing, inner);
        inner
            .objects
            .metrics()
            .switches
            .with_label_values(&[service, reason.as_str()])
            .inc();
        tracing::info!(service, from = %from, to = %to, reason = reason.as_str(), actor = actor.as_str(), generation, "switched");
        let persisted = commit(inner, event).await;
        let control = self.clone();
        let service_name = service.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(drain).await;
            control.end_drain(&service_name, from, epoch).await;
        });
        Applied {
            generation,
            changed: true,
            service: service_status(&self.routing.load(), inner, service),
            persisted,
        }
    }

    /// At the drain deadline, cuts what is still open on the pool that lost
    /// the traffic, unless a later switch or a weight made it live again.
    async fn end_drain(&self, service: &str, pool: PoolName, epoch: u64) {
        let inner = self.inner.lock().await;
        let Some(rt) = inner.services.get(service) else {
            return;
        };
        if rt.drain_epoch != epoch || rt.active == pool || rt.standby_weight > 0 {
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
    /// Unknown service, or a weight outside 0..=100.
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
        let rt = runtime(&inner, service)?;
        if rt.standby_weight == weight {
            return Ok(unchanged(&self.routing, &inner, service));
        }
        // An operator's weight ends a staged rollout: the operator takes over.
        let ended_canary = inner
            .services
            .get_mut(service)
            .and_then(|rt| rt.canary.take())
            .is_some();
        let detail = serde_json::json!({"standby": weight, "was": rt.standby_weight, "ended_canary": ended_canary});
        Ok(self
            .apply_weight(&mut inner, service, weight, Reason::Weight, actor, detail)
            .await)
    }

    /// Sets the standby weight of an existing service, records the event and
    /// persists.
    pub(super) async fn apply_weight(
        &self,
        inner: &mut Inner,
        service: &str,
        weight: u8,
        reason: Reason,
        actor: Actor,
        detail: serde_json::Value,
    ) -> Applied {
        let generation = inner.generation + 1;
        let rt = inner
            .services
            .get_mut(service)
            .expect("caller checked the service exists");
        let mut event = Event::now(
            Some(service),
            Some(rt.active),
            Some(rt.active.other()),
            reason,
            actor,
            detail,
        );
        event.generation = generation;
        rt.standby_weight = weight;
        rt.generation = generation;
        publish(&self.routing, inner);
        tracing::info!(
            service,
            standby = weight,
            reason = reason.as_str(),
            actor = actor.as_str(),
            generation,
            "weight changed"
        );
        let persisted = commit(inner, event).await;
        Applied {
            generation,
            changed: true,
            service: service_status(&self.routing.load(), inner, service),
            persisted,
        }
    }
}

/// The health and version gates of a switch to `to`.
pub(super) fn check_target(
    inner: &Inner,
    service: &str,
    to: PoolName,
    expect_version: Option<&str>,
) -> Result<(), ControlError> {
    let servers = inner
        .config
        .services
        .iter()
        .find(|s| s.name == service)
        .map(|s| s.pool(to).servers.clone())
        .unwrap_or_default();
    let healthy: Vec<(&ServerAddr, &ServerHealth)> = servers
        .iter()
        .filter_map(|addr| {
            inner
                .health
                .get(&(service.to_string(), to, addr.clone()))
                .map(|h| (addr, h))
        })
        .filter(|(_, h)| h.state.is_healthy())
        .collect();
    if healthy.is_empty() {
        return Err(ControlError::TargetUnhealthy {
            service: service.to_string(),
            pool: to,
        });
    }
    if let Some(expected) = expect_version {
        for (addr, h) in healthy {
            if h.version.as_deref() != Some(expected) {
                let found = match &h.version {
                    Some(v) => format!("{addr} reports {v:?}"),
                    None => format!("{addr} reports no version"),
                };
                return Err(ControlError::VersionMismatch {
                    service: service.to_string(),
                    pool: to,
                    expected: expected.to_string(),
                    found,
                });
            }
        }
    }
    Ok(())
}
