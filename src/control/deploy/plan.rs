//! The pure part of a deploy: whether the new containers are ready to take
//! the traffic, and what a restarted proxy does with a deploy it finds in
//! the release state. No I/O, no clock: the runner brings what it saw.

use crate::config::PoolName;
use crate::wire::{DeployOutcome, DeployStatus, ServerState};

/// Phases a deploy goes through, as the release state keeps them.
pub mod phase {
    /// Removing the idle pool's old containers.
    pub const PREPARE: &str = "prepare";
    /// Creating the new containers.
    pub const CREATE: &str = "create";
    /// Waiting for them to turn healthy and report the version.
    pub const HEALTHY: &str = "healthy";
    /// The traffic went to the new pool (the switch or the canary's start
    /// was committed with this phase): the watch and the drain follow.
    pub const SWITCHED: &str = "switched";
    /// Released: the old containers run until `keep_old_until`.
    pub const KEEP_OLD: &str = "keep_old";
    /// Over: nothing left to do.
    pub const DONE: &str = "done";
}

/// One new container as the control plane sees it: its server's state and
/// the version its health answer reported, or nothing yet (not listed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The container's name, for messages.
    pub name: String,
    /// Its server's state, once the provider lists it.
    pub state: Option<ServerState>,
    /// The version it reports.
    pub version: Option<String>,
}

/// Whether the new containers may take the traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Not yet: what is still missing.
    Wait(String),
    /// Every one is healthy (and reports the version asked for).
    Ready,
    /// Never: a healthy one reports another version.
    Wrong(String),
}

/// Judges the new containers: every one healthy, reporting `version` when
/// one is asked for. A healthy container that reports another version is
/// refused at once: waiting would not change what its image is.
pub fn readiness(seen: &[Seen], version: Option<&str>) -> Readiness {
    for s in seen {
        if s.state != Some(ServerState::Healthy) {
            continue;
        }
        if let Some(want) = version {
            if s.version.as_deref() != Some(want) {
                let found = s
                    .version
                    .as_deref()
                    .map_or_else(|| "no version".to_string(), |v| format!("version {v:?}"));
                return Readiness::Wrong(format!(
                    "container {} is healthy but reports {found}, expected {want:?}",
                    s.name
                ));
            }
        }
    }
    let waiting: Vec<String> = seen
        .iter()
        .filter(|s| s.state != Some(ServerState::Healthy))
        .map(|s| match s.state {
            None => format!("{} (not listed yet)", s.name),
            Some(state) => format!("{} ({})", s.name, state.as_str()),
        })
        .collect();
    if waiting.is_empty() && !seen.is_empty() {
        Readiness::Ready
    } else {
        Readiness::Wait(format!("waiting for {}", waiting.join(", ")))
    }
}

/// What a restarted proxy does with the deploy its release state holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// Nothing: it had ended, and its old containers are stopped.
    Nothing,
    /// The traffic is on the new pool: go on with the watch, the drain and
    /// the keep-old wait.
    Finish,
    /// Released: wait out what is left of keep-old, then stop the old
    /// containers.
    KeepOld,
    /// The traffic is on the old pool: stop the new containers and end it
    /// with this outcome.
    Return(DeployOutcome),
}

/// Decides from the deploy and the active pool the release state holds.
/// The switch commits the `switched` phase with the new active pool in one
/// write, so the two never disagree about whether the traffic moved: a
/// deploy is finished only where the traffic already is on its new pool.
pub fn resume(deploy: &DeployStatus, active: PoolName) -> Resume {
    match deploy.outcome {
        Some(DeployOutcome::Released) if deploy.phase == phase::KEEP_OLD => Resume::KeepOld,
        Some(_) => Resume::Nothing,
        None if active == deploy.to && deploy.phase == phase::SWITCHED => Resume::Finish,
        None if deploy.phase == phase::SWITCHED => Resume::Return(DeployOutcome::RolledBack),
        None => Resume::Return(DeployOutcome::Refused),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(name: &str, state: Option<ServerState>, version: Option<&str>) -> Seen {
        Seen {
            name: name.into(),
            state,
            version: version.map(String::from),
        }
    }

    #[test]
    fn ready_only_when_every_new_container_is_healthy_with_the_version() {
        let healthy = Some(ServerState::Healthy);
        let both = [seen("a", healthy, Some("2")), seen("b", healthy, Some("2"))];
        assert_eq!(readiness(&both, Some("2")), Readiness::Ready);
        assert_eq!(readiness(&both, None), Readiness::Ready);
        let one = [
            seen("a", healthy, Some("2")),
            seen("b", Some(ServerState::Starting), None),
        ];
        assert_eq!(
            readiness(&one, Some("2")),
            Readiness::Wait("waiting for b (starting)".into())
        );
        let unlisted = [seen("a", None, None)];
        assert!(matches!(readiness(&unlisted, None), Readiness::Wait(_)));
        assert!(matches!(readiness(&[], None), Readiness::Wait(_)));
    }

    #[test]
    fn a_healthy_container_with_another_version_is_refused_at_once() {
        let s = [
            seen("a", Some(ServerState::Healthy), Some("1")),
            seen("b", Some(ServerState::Starting), None),
        ];
        assert_eq!(
            readiness(&s, Some("2")),
            Readiness::Wrong(
                "container a is healthy but reports version \"1\", expected \"2\"".into()
            )
        );
    }

    fn deploy(phase: &str, outcome: Option<DeployOutcome>) -> DeployStatus {
        DeployStatus {
            id: "d".into(),
            image: "app:2".into(),
            version: None,
            canary: false,
            retry_old: true,
            from: PoolName::Blue,
            to: PoolName::Green,
            started: "2026-01-01T00:00:00Z".into(),
            keep_old_ms: 0,
            timeout_ms: 0,
            phase: phase.into(),
            new_containers: Vec::new(),
            old_containers: Vec::new(),
            keep_old_until: None,
            outcome,
            steps: Vec::new(),
        }
    }

    #[test]
    fn a_restart_finishes_a_deploy_only_where_the_traffic_moved() {
        let (blue, green) = (PoolName::Blue, PoolName::Green);
        for before in [phase::PREPARE, phase::CREATE, phase::HEALTHY] {
            assert_eq!(
                resume(&deploy(before, None), blue),
                Resume::Return(DeployOutcome::Refused),
                "{before}"
            );
        }
        assert_eq!(
            resume(&deploy(phase::SWITCHED, None), green),
            Resume::Finish
        );
        assert_eq!(
            resume(&deploy(phase::SWITCHED, None), blue),
            Resume::Return(DeployOutcome::RolledBack)
        );
        let released = Some(DeployOutcome::Released);
        assert_eq!(
            resume(&deploy(phase::KEEP_OLD, released), green),
            Resume::KeepOld
        );
        assert_eq!(
            resume(&deploy(phase::DONE, released), green),
            Resume::Nothing
        );
        assert_eq!(
            resume(&deploy(phase::DONE, Some(DeployOutcome::Refused)), blue),
            Resume::Nothing
        );
    }
}
