//! The event history in memory: every switch, rollback, weight change,
//! reload and automated action, bounded (oldest dropped first). The store
//! keeps it durably (the audit log, for the local store) and hands it back
//! at start.

use std::collections::VecDeque;

pub use crate::wire::{Actor, Event, Reason};

/// Most events kept.
pub const MAX_EVENTS: usize = 1000;

/// The bounded history, oldest first.
#[derive(Debug, Clone, Default)]
pub struct EventLog {
    events: VecDeque<Event>,
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

    /// Appends an event, dropping the oldest beyond [`MAX_EVENTS`].
    pub fn push(&mut self, event: Event) {
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// Events, oldest first, optionally of one service.
    pub fn list<'a>(&'a self, service: Option<&'a str>) -> impl Iterator<Item = &'a Event> + 'a {
        self.events
            .iter()
            .filter(move |e| service.is_none_or(|s| e.service.as_deref() == Some(s)))
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
