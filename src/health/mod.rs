//! Active health checks: one task per server sends `GET health.path` (or,
//! for a TCP check, connects) every `interval` and reports each result to
//! the control plane over a channel.
//!
//! A 2xx answer within `timeout` is a pass; a JSON answer's `version` field is
//! reported with it. Names are resolved again at every check, so a recreated
//! container's new address is picked up. This module never stores snapshots:
//! [`crate::control`] owns the hysteresis and publishes changes.

mod checkers;
pub mod state;

pub use checkers::Checkers;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{CheckKind, Config, HealthConfig, PoolName, ServerAddr};

/// Largest health answer read (for the `version` field).
const MAX_HEALTH_BODY: usize = 64 * 1024;

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer in time, with the version it reported.
    Pass {
        /// The `version` field of a JSON answer.
        version: Option<String>,
    },
    /// Anything else, and why.
    Fail(String),
}

/// One check of one server, sent to the control plane.
#[derive(Debug, Clone)]
pub struct HealthReport {
    /// The service.
    pub service: String,
    /// The pool.
    pub pool: PoolName,
    /// The server.
    pub addr: ServerAddr,
    /// What the check found.
    pub outcome: Outcome,
    /// When.
    pub at: SystemTime,
}

/// Checks `addr` once as `health` says, within its timeout.
pub async fn check(addr: &ServerAddr, health: &HealthConfig) -> Outcome {
    match health.kind {
        CheckKind::Http => probe(addr, &health.path, health.timeout).await,
        CheckKind::Tcp => connect(addr, health.timeout).await,
    }
}

/// Checks `addr` once: a TCP connection made within `timeout`.
pub async fn connect(addr: &ServerAddr, timeout: Duration) -> Outcome {
    let attempt = TcpStream::connect((addr.host.as_str(), addr.port));
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(_)) => Outcome::Pass { version: None },
        Ok(Err(e)) => Outcome::Fail(format!("connect: {e}")),
        Err(_) => Outcome::Fail(format!(
            "connect: no connection within {}",
            humantime::format_duration(timeout)
        )),
    }
}

/// Checks `addr` once: `GET path` within `timeout`.
pub async fn probe(addr: &ServerAddr, path: &str, timeout: Duration) -> Outcome {
    match tokio::time::timeout(timeout, probe_inner(addr, path)).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Fail(format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        )),
    }
}

async fn probe_inner(addr: &ServerAddr, path: &str) -> Outcome {
    let stream = match TcpStream::connect((addr.host.as_str(), addr.port)).await {
        Ok(s) => s,
        Err(e) => return Outcome::Fail(format!("connect: {e}")),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(pair) => pair,
        Err(e) => return Outcome::Fail(format!("handshake: {e}")),
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::get(path)
        .header(header::HOST, addr.to_string())
        .header(header::USER_AGENT, "cutover-health")
        .body(Empty::<Bytes>::new());
    let req = match req {
        Ok(r) => r,
        Err(e) => return Outcome::Fail(format!("bad health request: {e}")),
    };
    let resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => return Outcome::Fail(format!("request: {e}")),
    };
    let status = resp.status();
    if !status.is_success() {
        return Outcome::Fail(format!("status {}", status.as_u16()));
    }
    let body = Limited::new(resp.into_body(), MAX_HEALTH_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Outcome::Pass {
        version: version_of(&body),
    }
}

/// The `version` field of a JSON health answer (a string, or a number as text).
pub fn version_of(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    match value.get("version")? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One server with active checks: what [`Checkers`] runs a task for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// The service.
    pub service: String,
    /// The pool.
    pub pool: PoolName,
    /// The server.
    pub addr: ServerAddr,
    /// How it is checked.
    pub health: HealthKey,
}

/// A [`HealthConfig`] as a map key (its durations and thresholds as is).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthKey(pub(crate) String);

/// Every server of `config` with active checks, with its pool's (else its
/// service's) health config.
pub fn targets(config: &Config) -> Vec<(Target, HealthConfig)> {
    let mut out = Vec::new();
    for svc in &config.services {
        for pool in PoolName::ALL {
            let Some(health) = svc.health_of(pool) else {
                continue;
            };
            for addr in &svc.pool(pool).servers {
                let target = Target {
                    service: svc.name.clone(),
                    pool,
                    addr: addr.clone(),
                    health: HealthKey(format!("{health:?}")),
                };
                out.push((target, health.clone()));
            }
        }
    }
    out
}

/// Checks every server once, concurrently (the round that runs before
/// `/readyz` answers 200).
pub async fn first_round(config: &Config) -> Vec<HealthReport> {
    let checks = targets(config)
        .into_iter()
        .map(|(target, health)| async move {
            let outcome = check(&target.addr, &health).await;
            HealthReport {
                service: target.service,
                pool: target.pool,
                addr: target.addr,
                outcome,
                at: SystemTime::now(),
            }
        });
    futures_util::future::join_all(checks).await
}

/// How often a server added after the start is checked until its first
/// pass (at most its interval): a container that starts is checked at
/// once, and again shortly when it was not listening yet.
const STARTING_EVERY: Duration = Duration::from_millis(200);
/// How many quick checks a starting server gets before its interval applies.
const STARTING_CHECKS: u32 = 25;

/// Starts the task checking `target` every `interval`, the first check
/// after `first` (zero: at once, and then every [`STARTING_EVERY`] until
/// it passes, [`STARTING_CHECKS`] times at most).
fn spawn_checker(
    target: Target,
    health: HealthConfig,
    first: Duration,
    tx: mpsc::Sender<HealthReport>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut quick = if first.is_zero() { STARTING_CHECKS } else { 0 };
        let mut next = tokio::time::Instant::now() + first;
        loop {
            tokio::time::sleep_until(next).await;
            let outcome = check(&target.addr, &health).await;
            if matches!(outcome, Outcome::Pass { .. }) {
                quick = 0;
            }
            quick = quick.saturating_sub(1);
            let report = HealthReport {
                service: target.service.clone(),
                pool: target.pool,
                addr: target.addr.clone(),
                outcome,
                at: SystemTime::now(),
            };
            if tx.send(report).await.is_err() {
                return;
            }
            let every = if quick > 0 {
                STARTING_EVERY.min(health.interval)
            } else {
                health.interval
            };
            next = (next + every).max(tokio::time::Instant::now());
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_read_from_json_answers_only() {
        assert_eq!(version_of(br#"{"version":"1.4.2"}"#), Some("1.4.2".into()));
        assert_eq!(version_of(br#"{"version":3}"#), Some("3".into()));
        assert_eq!(version_of(b"ok"), None);
        assert_eq!(version_of(br#"{"status":"ok"}"#), None);
    }

    #[tokio::test]
    async fn probe_of_a_closed_port_fails_with_the_reason() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let addr = ServerAddr {
            host: "127.0.0.1".into(),
            port,
        };
        match probe(&addr, "/health", Duration::from_secs(2)).await {
            Outcome::Fail(why) => assert!(why.starts_with("connect"), "{why}"),
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}
