//! What status answers look like on the wire (the SPEC's status shape).
//! Built by the control plane from the current snapshot and health records.

use std::collections::BTreeMap;

use serde::Serialize;

use super::events::Event;
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
