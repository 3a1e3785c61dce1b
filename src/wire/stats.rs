//! Live statistics: per pool, one sample a second over the last minute
//! (`GET /api/v1/stats`, and the `stats` events of `GET /api/v1/stream`),
//! and the dashboard's session answers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::PoolName;

/// `GET /api/v1/stats`: every service's pools, one sample a second, oldest
/// first. The stream's first `stats` event has the whole window; each
/// later one has only the newest sample of each pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Nominal time between two samples, in milliseconds.
    pub interval_ms: u64,
    /// Every service, sorted by name.
    pub services: Vec<ServiceStats>,
}

impl Stats {
    /// The service called `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceStats> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// One service's pools.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStats {
    /// The name.
    pub name: String,
    /// Per pool.
    pub pools: BTreeMap<PoolName, PoolStats>,
}

/// One pool: its samples and what they add up to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolStats {
    /// One a second, oldest first.
    pub samples: Vec<Sample>,
    /// The samples taken together.
    #[serde(default)]
    pub window: Window,
}

/// What one pool did in one second (or so: `ms` says how long).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// When the second ended, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// How long it lasted, in milliseconds.
    pub ms: u64,
    /// Requests answered per second.
    pub rps: f64,
    /// Share of 5xx answers and upstream failures (0..=1).
    pub error_rate: f64,
    /// 99th percentile of the time to the response head, in milliseconds
    /// (the upper bound of its latency bucket; 0 without requests).
    pub p99_ms: f64,
    /// Requests, streams and tunnels in flight when it ended.
    pub inflight: u64,
}

/// Several samples taken together.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// How long they cover, in milliseconds.
    pub ms: u64,
    /// Requests answered.
    pub requests: u64,
    /// Of those, errors.
    pub errors: u64,
    /// Requests answered per second.
    pub rps: f64,
    /// Share of errors (0..=1).
    pub error_rate: f64,
    /// 99th percentile latency, in milliseconds.
    pub p99_ms: f64,
}

/// `GET /ui/session`: what the dashboard needs before it can act.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    /// Whether the request carried a live session cookie.
    pub session: bool,
    /// Whether this listener needs the admin token to open a session.
    pub token_required: bool,
}

/// `POST /ui/session`: opens a dashboard session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    /// The admin token (required on a listener that has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The answer to `POST /ui/session` (the session itself is the HttpOnly
/// cookie set with it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionOpened {
    /// To send as `X-CSRF-Token` with every change made in this session.
    pub csrf: String,
    /// When the session ends (RFC 3339).
    pub expires: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_round_trip_and_an_older_answer_without_window_reads() {
        let v = serde_json::json!({"interval_ms": 1000, "services": [{"name": "agent",
            "pools": {"blue": {"samples": [{"time_ms": 1, "ms": 1000, "rps": 2.0,
                "error_rate": 0.5, "p99_ms": 25.0, "inflight": 1}]}}}]});
        let stats: Stats = serde_json::from_value(v).unwrap();
        let blue = &stats.service("agent").unwrap().pools[&PoolName::Blue];
        assert_eq!(blue.samples[0].rps, 2.0);
        assert_eq!(blue.window, Window::default());
        let again: Stats = serde_json::from_value(serde_json::to_value(&stats).unwrap()).unwrap();
        assert_eq!(again, stats);
    }

    #[test]
    fn a_session_request_refuses_unknown_fields() {
        assert!(serde_json::from_str::<SessionRequest>(r#"{"tokn": "x"}"#).is_err());
        let empty: SessionRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(empty.token, None);
    }
}
