//! The event history: every switch, rollback, weight change, reload and
//! automated action, with time, service, from, to, reason, actor and detail.
//!
//! Bounded in memory (oldest dropped first) and persisted with the state.

pub use crate::wire::{rfc3339, rfc3339_millis, Actor, Event, Reason};
use std::collections::VecDeque;
use std::sync::Arc;

/// Most events kept.
pub const MAX_EVENTS: usize = 1000;

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
}
