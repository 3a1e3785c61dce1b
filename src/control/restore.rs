//! Start-up: each service's runtime from what the release-state store
//! holds, the event history, the automated-rollback budget rebuilt from it,
//! and what was under way at the last stop (a canary, a rollback watch) to
//! take up again.

use std::collections::{BTreeMap, HashMap};
use std::time::{Instant, SystemTime};

use super::analysis::Budget;
use super::events::EventLog;
use super::runtime::Runtime;
use super::store::{ReleaseState, Stored};
use crate::config::Config;
use crate::wire::{Event, Reason};

/// What was under way at the last stop, to take up again.
#[derive(Debug, Default)]
pub(super) struct Resume {
    /// The canaries that were running: service, stage.
    pub(super) canaries: Vec<(String, usize)>,
    /// The automated-rollback watches of active pools: service, until when.
    pub(super) watches: Vec<(String, SystemTime)>,
}

/// Each configured service's runtime (at `generation`) from `stored`, the
/// release states of the stored services not configured (kept for when
/// they come back), the event log, and what was under way.
pub(super) fn runtimes(
    config: &Config,
    stored: Stored,
    generation: u64,
) -> (
    BTreeMap<String, Runtime>,
    BTreeMap<String, ReleaseState>,
    EventLog,
    Resume,
) {
    let Stored {
        services: mut saved,
        history,
    } = stored;
    let mut budgets = rollback_budgets(&history);
    let events = EventLog::from_events(history);
    let mut resume = Resume::default();
    let services = config
        .services
        .iter()
        .map(|sc| {
            let rt = match saved.remove(&sc.name) {
                Some(mut release) => {
                    if let Some(stage) = release.canary_stage {
                        resume.canaries.push((sc.name.clone(), stage));
                    }
                    if let Some(until) = release
                        .rollback_watch_until
                        .as_deref()
                        .and_then(|v| watch_until(&sc.name, v))
                    {
                        resume.watches.push((sc.name.clone(), until));
                    }
                    release.standby_weight = release.standby_weight.min(100);
                    let mut rt = Runtime::new(release, generation);
                    rt.local.budget = budgets.remove(&sc.name).unwrap_or_default();
                    rt
                }
                None => Runtime::new(ReleaseState::fresh(sc.active), generation),
            };
            (sc.name.clone(), rt)
        })
        .collect();
    (services, saved, events, resume)
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
