//! Status answers: the SPEC's status shape, one service, one pool, one
//! server, a canary, a watch, and the drained query.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Event;
use crate::config::PoolName;

/// `GET /api/v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The current snapshot generation.
    pub generation: u64,
    /// Whether the first round of health checks is done and the proxy is not
    /// shutting down.
    #[serde(default)]
    pub ready: bool,
    /// Every service, sorted by name.
    pub services: Vec<ServiceStatus>,
    /// The Docker provider, when it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<super::DockerStatus>,
    /// The fleet, in fleet mode (`[cluster]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<super::ClusterStatus>,
}

/// One service (`GET /api/v1/services/{svc}` answers this, bare).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    #[serde(default)]
    pub previous: Option<PoolName>,
    /// The last switch, rollback or promotion.
    #[serde(default)]
    pub last_switch: Option<Event>,
    /// Per pool.
    pub pools: BTreeMap<PoolName, PoolStatus>,
    /// The staged rollout in progress, if any.
    #[serde(default)]
    pub canary: Option<CanaryStatus>,
    /// The automated-rollback watch in progress, if any.
    #[serde(default)]
    pub watch: Option<WatchStatus>,
    /// The last deploy (`cutover ctl deploy`), running or ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<super::DeployStatus>,
}

impl ServiceStatus {
    /// The weight of `pool`, in percent.
    pub fn weight(&self, pool: PoolName) -> u8 {
        self.weights.get(&pool).copied().unwrap_or(0)
    }
}

/// One pool of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolStatus {
    /// Requests, streams and tunnels in flight.
    pub inflight: u64,
    /// Of those, the ones draining (the pool takes no new requests).
    pub draining: u64,
    /// Whether at least one server is healthy.
    #[serde(default)]
    pub healthy: bool,
    /// Each server.
    pub servers: Vec<ServerStatus>,
}

/// One server of a pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerStatus {
    /// `host:port` as configured.
    pub address: String,
    /// Whether it takes traffic.
    pub healthy: bool,
    /// The version its health answer reported.
    #[serde(default)]
    pub version: Option<String>,
    /// Requests in flight on it.
    #[serde(default)]
    pub inflight: u64,
    /// When it was last checked (RFC 3339).
    #[serde(default)]
    pub last_check: Option<String>,
    /// Why the last check or connection failed, if it did.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Where it is in its life: `starting`, `healthy`, `unhealthy`, `draining`.
    #[serde(default)]
    pub state: Option<ServerState>,
    /// The container it is (Docker provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// Where a server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    /// Added and not yet through its first passing check: no traffic.
    Starting,
    /// Takes traffic.
    Healthy,
    /// Failed its checks (or a connection): no traffic.
    Unhealthy,
    /// Its container is stopping or gone: no new request; what it has in
    /// flight finishes.
    Draining,
}

impl ServerState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Starting => "starting",
            ServerState::Healthy => "healthy",
            ServerState::Unhealthy => "unhealthy",
            ServerState::Draining => "draining",
        }
    }
}

/// A staged rollout in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryStatus {
    /// The stage running, from 0.
    pub stage: usize,
    /// How many stages there are.
    pub stages: usize,
    /// The standby pool's weight in this stage, in percent.
    pub weight: u8,
    /// How long the stage has held, in milliseconds.
    pub held_ms: u64,
    /// How long it must hold, in milliseconds.
    pub hold_ms: u64,
    /// Requests the standby pool answered in this stage.
    pub requests: u64,
    /// Requests it must answer before the stage is judged.
    pub min_requests: u64,
    /// Its share of errors in this stage (0..=1).
    pub error_rate: f64,
    /// Its p99 latency in this stage, in milliseconds.
    pub p99_ms: u64,
    /// The largest error share the stage allows (0..=1).
    #[serde(default)]
    pub max_error_rate: f64,
    /// The largest p99 the stage allows, in milliseconds.
    #[serde(default)]
    pub max_p99_ms: u64,
}

/// The automated-rollback watch of a pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchStatus {
    /// The pool watched.
    pub pool: PoolName,
    /// When the watch ends (RFC 3339).
    pub until: String,
    /// Milliseconds left.
    pub remaining_ms: u64,
    /// What the watch judges, once the pool has answered `min_requests` in
    /// its sliding window (`None`: the service has no `[rollback]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judged: Option<Judged>,
}

/// The measures a judge looks at, against the thresholds it holds them to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judged {
    /// Requests in the window judged.
    pub requests: u64,
    /// Requests needed before it is judged.
    pub min_requests: u64,
    /// Share of errors in the window (0..=1).
    pub error_rate: f64,
    /// The largest share allowed.
    pub max_error_rate: f64,
    /// p99 latency in the window, in milliseconds.
    pub p99_ms: u64,
    /// The largest p99 allowed, in milliseconds.
    pub max_p99_ms: u64,
}

/// `GET /api/v1/services/{svc}/drained`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drained {
    /// The service.
    #[serde(default)]
    pub service: String,
    /// Whether the pools other than the active one have nothing in flight.
    pub drained: bool,
    /// What is still in flight on them.
    pub inflight: u64,
    /// The active pool.
    #[serde(default)]
    pub active: Option<PoolName>,
    /// How long the call waited, in milliseconds.
    #[serde(default)]
    pub waited_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_status_example_reads() {
        let status: Status = serde_json::from_value(serde_json::json!(
            {"generation": 7,
             "services": [{"name": "agent", "active": "blue", "standby": "green", "generation": 7,
               "weights": {"blue": 100, "green": 0},
               "last_switch": {"time": "2026-11-22T10:00:00Z", "from": "green", "to": "blue", "reason": "manual", "actor": "socket"},
               "pools": {"blue": {"inflight": 3, "draining": 0,
                                  "servers": [{"address": "127.0.0.1:5000", "healthy": true, "version": "1.4.1"}]},
                         "green": {"inflight": 0, "draining": 0, "servers": []}},
               "canary": null, "watch": null, "a_later_field": 1}]}
        ))
        .unwrap();
        let svc = &status.services[0];
        assert_eq!(
            (svc.active, svc.weight(PoolName::Green)),
            (PoolName::Blue, 0)
        );
        assert_eq!(
            svc.pools[&PoolName::Blue].servers[0].version.as_deref(),
            Some("1.4.1")
        );
    }
}
