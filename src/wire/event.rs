//! Events: what changed, when, why and by whom. The same JSON is one line of
//! the audit log and one element of `GET /api/v1/events`.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::config::PoolName;

/// Why something changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A switch asked for by an operator.
    Manual,
    /// A rollback asked for by an operator.
    Rollback,
    /// An automated rollback.
    AutoRollback,
    /// A canary's promotion.
    Canary,
    /// A canary aborted.
    CanaryAbort,
    /// A weight change.
    Weight,
    /// A config reload.
    Reload,
    /// An automated action held back by cooldown or the hourly cap.
    Blocked,
    /// A step of `cutover ctl deploy` (its switch included), with the
    /// image and version in `detail`.
    Deploy,
}

impl Reason {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Manual => "manual",
            Reason::Rollback => "rollback",
            Reason::AutoRollback => "auto_rollback",
            Reason::Canary => "canary",
            Reason::CanaryAbort => "canary_abort",
            Reason::Weight => "weight",
            Reason::Reload => "reload",
            Reason::Blocked => "blocked",
            Reason::Deploy => "deploy",
        }
    }
}

/// Who asked for a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// The HTTP admin listener.
    Api,
    /// The admin Unix socket.
    Socket,
    /// A signal (SIGHUP).
    Signal,
    /// cutover itself (automated rollback, canary).
    Auto,
    /// The Docker provider (services appearing with containers).
    Docker,
}

impl Actor {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Actor::Api => "api",
            Actor::Socket => "socket",
            Actor::Signal => "signal",
            Actor::Auto => "auto",
            Actor::Docker => "docker",
        }
    }
}

/// One entry of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// RFC 3339, UTC.
    pub time: String,
    /// The service; `None` for a reload.
    pub service: Option<String>,
    /// The pool traffic left (or the active pool, for a weight change).
    pub from: Option<PoolName>,
    /// The pool traffic went to (or the standby pool, for a weight change).
    pub to: Option<PoolName>,
    /// Why.
    pub reason: Reason,
    /// Who.
    pub actor: Actor,
    /// The snapshot generation the change produced.
    #[serde(default)]
    pub generation: u64,
    /// Anything else worth knowing (weights, measured values, errors).
    #[serde(default)]
    pub detail: serde_json::Value,
}

impl Event {
    /// An event happening now.
    pub fn now(
        service: Option<&str>,
        from: Option<PoolName>,
        to: Option<PoolName>,
        reason: Reason,
        actor: Actor,
        detail: serde_json::Value,
    ) -> Event {
        Event {
            time: rfc3339(SystemTime::now()),
            service: service.map(str::to_string),
            from,
            to,
            reason,
            actor,
            generation: 0,
            detail,
        }
    }
}

/// `t` as RFC 3339 in UTC, to the second.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `t` as RFC 3339 with milliseconds.
pub fn rfc3339_millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_and_actors_use_the_spec_names() {
        let e = Event::now(
            Some("agent"),
            Some(PoolName::Blue),
            Some(PoolName::Green),
            Reason::AutoRollback,
            Actor::Socket,
            serde_json::json!({}),
        );
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["reason"], "auto_rollback");
        assert_eq!(v["actor"], "socket");
        assert_eq!(v["from"], "blue");
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        for reason in [Reason::Manual, Reason::CanaryAbort, Reason::Blocked] {
            assert_eq!(serde_json::to_value(reason).unwrap(), reason.as_str());
        }
    }

    #[test]
    fn an_event_without_generation_or_detail_reads() {
        let e: Event = serde_json::from_str(
            r#"{"time":"2026-11-22T10:00:00Z","service":"agent","from":"blue","to":"green","reason":"manual","actor":"socket"}"#,
        )
        .unwrap();
        assert_eq!((e.generation, e.detail.is_null()), (0, true));
    }
}
