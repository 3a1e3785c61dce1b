//! The event history: every switch, rollback, weight change, reload and
//! automated action, with time, service, from, to, reason, actor and detail.
//!
//! Bounded in memory (oldest dropped first) and persisted with the state.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::config::PoolName;

/// Most events kept.
pub const MAX_EVENTS: usize = 1000;

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
}

impl Actor {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Actor::Api => "api",
            Actor::Socket => "socket",
            Actor::Signal => "signal",
            Actor::Auto => "auto",
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

/// The bounded history, oldest first.
///
/// Each event is kept with its JSON, made once when it is pushed: the audit
/// log line and every later state file write reuse it, so a write costs a
/// copy of the history, not a serialization of it.
#[derive(Debug, Clone, Default)]
pub struct EventLog {
    events: VecDeque<(Event, Arc<str>)>,
}

impl EventLog {
    /// A log holding `events` (the most recent [`MAX_EVENTS`]).
    pub fn from_events(events: Vec<Event>) -> EventLog {
        let mut log = EventLog::default();
        for e in events {
            log.push(e);
        }
        log
    }

    /// Appends an event, dropping the oldest beyond [`MAX_EVENTS`], and
    /// returns its JSON (one line).
    pub fn push(&mut self, event: Event) -> Arc<str> {
        let json: Arc<str> = serde_json::to_string(&event)
            .expect("events serialize: plain data")
            .into();
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back((event, json.clone()));
        json
    }

    /// Events, oldest first, optionally of one service.
    pub fn list<'a>(&'a self, service: Option<&'a str>) -> impl Iterator<Item = &'a Event> + 'a {
        self.events
            .iter()
            .map(|(e, _)| e)
            .filter(move |e| service.is_none_or(|s| e.service.as_deref() == Some(s)))
    }

    /// Every event's JSON, oldest first (the state file's history).
    pub fn json(&self) -> VecDeque<Arc<str>> {
        self.events.iter().map(|(_, j)| j.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_is_bounded_and_filters_by_service() {
        let mut log = EventLog::default();
        for i in 0..MAX_EVENTS + 5 {
            let svc = if i % 2 == 0 { "a" } else { "b" };
            log.push(Event::now(
                Some(svc),
                None,
                None,
                Reason::Manual,
                Actor::Api,
                serde_json::Value::Null,
            ));
        }
        assert_eq!(log.json().len(), MAX_EVENTS);
        assert_eq!(log.list(None).count(), MAX_EVENTS);
        assert!(log
            .list(Some("a"))
            .all(|e| e.service.as_deref() == Some("a")));
        assert_eq!(
            log.list(Some("a")).count() + log.list(Some("b")).count(),
            MAX_EVENTS
        );
    }

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
    }
}
