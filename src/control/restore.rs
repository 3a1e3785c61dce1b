//! Start-up: each service's runtime values, event history and automated-
//! rollback budget from the state file, and what was under way at the last
//! stop (a canary, a rollback watch) to take up again.

use std::collections::{BTreeMap, HashMap};
use std::time::{Instant, SystemTime};

use super::analysis::Budget;
use super::events::{Event, EventLog, Reason};
use super::persist::{self, StateFile};
use super::Runtime;
use crate::config::Config;

/// What was under way at the last stop, to take up again.
#[derive(Debug, Default)]
pub(super) struct Resume {
    /// The canaries that were running: service, stage.
    pub(super) canaries: Vec<(String, usize)>,
    /// The automated-rollback watches of active pools: service, until when.
    pub(super) watches: Vec<(String, SystemTime)>,
}

/// Each service's runtime values from the state file, the event log, and
/// what was under way.
pub(super) fn runtime_from_state(
    config: &Config,
    state: Option<StateFile>,
) -> (BTreeMap<String, Runtime>, EventLog, Resume) {
    let (mut saved, events) = match state {
        Some(s) => (s.services, s.events),
        None => (BTreeMap::new(), Vec::new()),
    };
    let mut budgets = rollback_budgets(&events);
    let events = EventLog::from_events(events);
    let mut resume = Resume::default();
    let services = config
        .services
        .iter()
        .map(|sc| {
            let rt = match saved.remove(&sc.name) {
                Some(s) => {
                    if let Some(stage) = s.canary_stage {
                        resume.canaries.push((sc.name.clone(), stage));
                    }
                    if let Some(until) = s
                        .rollback_watch_until
                        .as_deref()
                        .and_then(|v| watch_until(&sc.name, v))
                    {
                        resume.watches.push((sc.name.clone(), until));
                    }
                    Runtime {
                        standby_weight: s.standby_weight.min(100),
                        previous: s.previous,
                        last_switch: s.last_switch,
                        budget: budgets.remove(&sc.name).unwrap_or_default(),
                        ..Runtime::fresh(s.active, 1)
                    }
                }
                None => Runtime::fresh(sc.active, 1),
            };
            (sc.name.clone(), rt)
        })
        .collect();
    (services, events, resume)
}

/// The end of a saved rollback watch of `service`; a bad value is logged
/// and the watch not taken up.
fn watch_until(service: &str, value: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(value)
        .inspect_err(|e| {
            tracing::warn!(
                service = %service,
                value,
                error = %e,
                "state file: rollback_watch_until is not an RFC 3339 time; the watch is not taken up"
            );
        })
        .ok()
}

/// Each service's automated-rollback budget, from the rollbacks in the
/// saved history: a restart keeps the cooldown and the hourly cap.
fn rollback_budgets(events: &[Event]) -> HashMap<String, Budget> {
    let mut times: HashMap<String, Vec<SystemTime>> = HashMap::new();
    for e in events.iter().filter(|e| e.reason == Reason::AutoRollback) {
        let (Some(service), Ok(at)) = (&e.service, humantime::parse_rfc3339_weak(&e.time)) else {
            continue;
        };
        times.entry(service.clone()).or_default().push(at);
    }
    let (now, wall) = (Instant::now(), SystemTime::now());
    times
        .into_iter()
        .map(|(service, at)| (service, Budget::from_history(at, now, wall)))
        .collect()
}

/// Reads the state file; a bad one is reported, set aside, and ignored.
pub(super) fn read_state(path: &std::path::Path) -> Option<StateFile> {
    match persist::load(path) {
        Ok(state) => state,
        Err(e) => {
            tracing::error!(error = %e, "state file unusable: starting from the config's active pools");
            match persist::set_aside(path) {
                Ok(aside) => {
                    tracing::warn!(path = %aside.display(), "kept the unusable state file aside")
                }
                Err(e) => {
                    tracing::error!(error = %e, "could not move the unusable state file aside")
                }
            }
            None
        }
    }
}
