//! The control plane's answers to questions: status in [`crate::wire`]'s
//! shape (built from the current snapshot and the health records), one
//! service, the events, and whether a service's old pool has drained.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use super::runtime::ServerHealth;
use super::{pool_totals, ControlError, ControlPlane, Inner, MAX_DRAIN_WAIT};
use crate::config::PoolName;
use crate::snapshot::Snapshot;
use crate::wire::{
    self, CanaryStatus, Drained, Event, PoolStatus, ServerState, ServerStatus, ServiceStatus,
    Status, WatchStatus,
};

impl ControlPlane {
    /// Every service.
    pub async fn status(&self) -> Status {
        self.status_of(&*self.inner.lock().await)
    }

    fn status_of(&self, inner: &Inner) -> Status {
        let snapshot = self.routing.load();
        Status {
            generation: snapshot.generation,
            ready: self.is_ready(),
            services: inner
                .services
                .keys()
                .filter_map(|name| service_status(&snapshot, inner, name))
                .collect(),
            docker: inner.docker.status(),
            cluster: inner.fleet.as_ref().map(|f| f.status()),
        }
    }

    /// One service.
    ///
    /// # Errors
    ///
    /// Unknown service.
    pub async fn service(&self, name: &str) -> Result<ServiceStatus, ControlError> {
        let inner = self.inner.lock().await;
        service_status(&self.routing.load(), &inner, name)
            .ok_or_else(|| ControlError::UnknownService(name.to_string()))
    }

    /// Events, oldest first, optionally of one service.
    pub async fn events(&self, service: Option<&str>) -> Vec<Event> {
        self.inner
            .lock()
            .await
            .events
            .list(service)
            .cloned()
            .collect()
    }

    /// Status, and the events from sequence number `seq` on (oldest
    /// first, at most the last `limit`) with the sequence number of the
    /// next one, read under one lock: what a live view needs each second.
    pub async fn status_and_events(&self, seq: u64, limit: usize) -> (Status, u64, Vec<Event>) {
        let inner = self.inner.lock().await;
        let (next, events) = inner.events.since(seq);
        let events: Vec<&Event> = events.collect();
        let skip = events.len().saturating_sub(limit);
        let events = events.into_iter().skip(skip).cloned().collect();
        (self.status_of(&inner), next, events)
    }

    /// Waits (at most `wait`) until the pools of `service` other than the
    /// active one have nothing in flight.
    ///
    /// # Errors
    ///
    /// Unknown service.
    pub async fn drained(&self, service: &str, wait: Duration) -> Result<Drained, ControlError> {
        let start = Instant::now();
        let wait = wait.min(MAX_DRAIN_WAIT);
        loop {
            let snapshot = self.routing.load_full();
            let svc = snapshot
                .service(service)
                .ok_or_else(|| ControlError::UnknownService(service.to_string()))?;
            let inflight: u64 = PoolName::ALL
                .iter()
                .filter(|p| **p != svc.active)
                .map(|p| svc.pool(*p).state.inflight())
                .sum();
            let waited = start.elapsed();
            if inflight == 0 || waited >= wait {
                return Ok(Drained {
                    service: service.to_string(),
                    drained: inflight == 0,
                    inflight,
                    active: Some(svc.active),
                    waited_ms: millis(waited),
                });
            }
            tokio::time::sleep(Duration::from_millis(10).min(wait - waited)).await;
        }
    }
}

/// Whole milliseconds, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One service's status from the snapshot and health records.
pub(super) fn service_status(
    snapshot: &Snapshot,
    inner: &Inner,
    name: &str,
) -> Option<ServiceStatus> {
    let rt = inner.services.get(name)?;
    let svc = snapshot.service(name)?;
    let (active, weight) = (rt.active(), rt.standby_weight());
    let standby = active.other();
    let mut weights = BTreeMap::new();
    weights.insert(active, 100 - weight);
    weights.insert(standby, weight);
    let pools = PoolName::ALL
        .into_iter()
        .map(|pool| {
            let view = svc.pool(pool);
            let inflight = view.state.inflight();
            let draining = if pool != active && weight == 0 {
                inflight
            } else {
                0
            };
            let servers = view
                .servers
                .iter()
                .map(|server| {
                    let addr = server.upstream.addr();
                    let key = (name.to_string(), pool, addr.clone());
                    let h = inner.health.get(&key);
                    ServerStatus {
                        address: addr.to_string(),
                        healthy: h.is_none_or(ServerHealth::takes_traffic),
                        version: h.and_then(|h| h.version.clone()),
                        inflight: server.inflight(),
                        last_check: h.and_then(|h| h.last_check).map(wire::rfc3339),
                        last_error: h.and_then(|h| h.last_error.clone()),
                        state: Some(h.map_or(ServerState::Healthy, ServerHealth::shown)),
                        container: inner.docker.container_of(&key).map(|c| c.name.clone()),
                    }
                })
                .collect();
            let status = PoolStatus {
                inflight,
                draining,
                healthy: !view.healthy.is_empty(),
                servers,
            };
            (pool, status)
        })
        .collect();
    Some(ServiceStatus {
        name: name.to_string(),
        active,
        standby,
        generation: rt.local.generation,
        weights,
        previous: rt.release.previous,
        last_switch: rt.release.last_switch.clone(),
        pools,
        canary: canary_status(inner, name),
        watch: watch_status(inner, name),
        deploy: rt.release.deploy.as_deref().cloned(),
    })
}

/// The staged rollout of `service`, if one runs.
fn canary_status(inner: &Inner, service: &str) -> Option<CanaryStatus> {
    let rt = inner.services.get(service)?;
    let canary = rt.local.canary.as_ref()?;
    let standby = pool_totals(inner, service, rt.active().other());
    Some(canary.describe(Instant::now(), &standby))
}

/// The automated-rollback watch of `service`, if one runs.
fn watch_status(inner: &Inner, service: &str) -> Option<WatchStatus> {
    let (pool, watch) = inner.services.get(service)?.local.watch.as_ref()?;
    let now = Instant::now();
    let remaining = watch.remaining(now);
    let judged = inner
        .config
        .services
        .iter()
        .find(|s| s.name == service)
        .and_then(|s| s.rollback.as_ref())
        .map(|cfg| watch.judged(now, &pool_totals(inner, service, *pool), cfg));
    Some(WatchStatus {
        pool: *pool,
        until: wire::rfc3339(SystemTime::now() + remaining),
        remaining_ms: millis(remaining),
        judged,
    })
}
