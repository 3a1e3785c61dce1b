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
    /// How many events were ever pushed: the sequence number of the next.
    pushed: u64,
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
        self.pushed += 1;
    }

    /// The sequence number the next event will have, and the events kept
    /// from sequence number `seq` on, oldest first (those dropped since are
    /// skipped).
    pub fn since(&self, seq: u64) -> (u64, impl Iterator<Item = &Event> + '_) {
        let first = self.pushed - self.events.len() as u64;
        let skip = usize::try_from(seq.saturating_sub(first)).unwrap_or(usize::MAX);
        (self.pushed, self.events.iter().skip(skip))
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

    #[test]
    fn since_hands_out_each_event_once_by_sequence_number() {
        let event = |reason| Event::now(None, None, None, reason, Actor::Api, Default::default());
        let mut log = EventLog::from_events(vec![event(Reason::Manual)]);
        let (next, old) = log.since(0);
        assert_eq!((next, old.count()), (1, 1));
        log.push(event(Reason::Rollback));
        log.push(event(Reason::Weight));
        let (next, new) = log.since(1);
        let reasons: Vec<Reason> = new.map(|e| e.reason).collect();
        assert_eq!((next, reasons), (3, vec![Reason::Rollback, Reason::Weight]));
        assert_eq!(log.since(3).1.count(), 0);
        for _ in 0..MAX_EVENTS {
            log.push(event(Reason::Reload));
        }
        // Dropped ones are skipped; the rest come from the oldest kept.
        assert_eq!(log.since(3).1.count(), MAX_EVENTS);
    }
}
