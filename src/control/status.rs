//! What status answers look like on the wire (the SPEC's status shape).
//! Built by the control plane from the current snapshot and health records.

use std::collections::BTreeMap;

use serde::Serialize;

use super::events::{self, Event};
use super::{progressive, Inner};
use crate::snapshot::Snapshot;

use crate::config::PoolName;

/// `GET /api/v1/status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The current snapshot generation.
    pub generation: u64,
    /// Whether the first round of health checks is done and the proxy is not
    /// shutting down.
    pub ready: bool,
    /// Every service, sorted by name.
    pub services: Vec<ServiceStatus>,
}

/// One service (`GET /api/v1/services/{svc}` answers this, bare).
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    /// The name.
    pub name: String,
    /// The pool taking the traffic.
    pub active: PoolName,
    /// The other pool.
    pub standby: PoolName,
    /// The generation at which this service last changed.
    pub generation: u64,
    /// Percent of new requests per pool.
    pub weights: BTreeMap<PoolName, u8>,
    /// The pool a rollback would return to.
    pub previous: Option<PoolName>,
    /// The last switch, rollback or promotion.
    pub last_switch: Option<Event>,
    /// Per pool.
    pub pools: BTreeMap<PoolName, PoolStatus>,
    /// The staged rollout in progress, if any.
    pub canary: Option<serde_json::Value>,
    /// The automated-rollback watch in progress, if any.
    pub watch: Option<serde_json::Value>,
}

/// One pool of a service.
#[derive(Debug, Clone, Serialize)]
pub struct PoolStatus {
    /// Requests, streams and tunnels in flight.
    pub inflight: u64,
    /// Of those, the ones draining (the pool takes no new requests).
    pub draining: u64,
    /// Whether at least one server is healthy.
    pub healthy: bool,
    /// Each server.
    pub servers: Vec<ServerStatus>,
}

/// One server of a pool.
#[derive(Debug, Clone, Serialize)]
pub struct ServerStatus {
    /// `host:port` as configured.
    pub address: String,
    /// Whether it takes traffic.
    pub healthy: bool,
    /// The version its health answer reported.
    pub version: Option<String>,
    /// Requests in flight on it.
    pub inflight: u64,
    /// When it was last checked (RFC 3339).
    pub last_check: Option<String>,
    /// Why the last check or connection failed, if it did.
    pub last_error: Option<String>,
}

/// `GET /api/v1/services/{svc}/drained`.
#[derive(Debug, Clone, Serialize)]
pub struct Drained {
    /// The service.
    pub service: String,
    /// Whether the pools other than the active one have nothing in flight.
    pub drained: bool,
    /// What is still in flight on them.
    pub inflight: u64,
    /// The active pool.
    pub active: PoolName,
    /// How long the call waited, in milliseconds.
    pub waited_ms: u64,
}

/// The answer to a change (switch, rollback, weights, canary, reload).
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    /// The generation the change produced (the current one when nothing changed).
    pub generation: u64,
    /// Whether anything changed.
    pub changed: bool,
    /// The service after the change (none for a reload).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceStatus>,
    /// Whether the new state reached the state file.
    pub persisted: bool,
}

/// One service's status from the snapshot and health records.
pub(super) fn service_status(
    snapshot: &Snapshot,
    inner: &Inner,
    name: &str,
) -> Option<ServiceStatus> {
    let rt = inner.services.get(name)?;
    let svc = snapshot.service(name)?;
    let standby = rt.active.other();
    let (canary, watch) = progressive::describe(inner, name);
    let mut weights = BTreeMap::new();
    weights.insert(rt.active, 100 - rt.standby_weight);
    weights.insert(standby, rt.standby_weight);
    let pools = PoolName::ALL
        .into_iter()
        .map(|pool| {
            let view = svc.pool(pool);
            let inflight = view.state.inflight();
            let draining = if pool != rt.active && rt.standby_weight == 0 {
                inflight
            } else {
                0
            };
            let servers = view
                .servers
                .iter()
                .map(|server| {
                    let addr = server.upstream.addr();
                    let h = inner.health.get(&(name.to_string(), pool, addr.clone()));
                    ServerStatus {
                        address: addr.to_string(),
                        healthy: h.is_none_or(|h| h.state.is_healthy()),
                        version: h.and_then(|h| h.version.clone()),
                        inflight: server.inflight(),
                        last_check: h.and_then(|h| h.last_check).map(events::rfc3339),
                        last_error: h.and_then(|h| h.last_error.clone()),
                    }
                })
                .collect();
            (
                pool,
                PoolStatus {
                    inflight,
                    draining,
                    healthy: !view.healthy.is_empty(),
                    servers,
                },
            )
        })
        .collect();
    Some(ServiceStatus {
        name: name.to_string(),
        active: rt.active,
        standby,
        generation: rt.generation,
        weights,
        previous: rt.previous,
        last_switch: rt.last_switch.clone(),
        pools,
        canary,
        watch,
    })
}
