//! What the control plane keeps per service: the durable release state
//! (what the store holds, the same on every replica) and what this process
//! observes of it (drain epochs, the canary's and the watch's counts, the
//! automated-rollback budget), which a restart builds afresh.

use std::time::{Instant, SystemTime};

use super::analysis::{Budget, Canary, Watch};
use super::store::ReleaseState;
use crate::config::PoolName;
use crate::health::state::HealthState;
use crate::wire::ServerState;

/// One service.
#[derive(Debug, Clone)]
pub(super) struct Runtime {
    /// What the store holds.
    pub(super) release: ReleaseState,
    /// What this process observes.
    pub(super) local: Local,
}

/// The process-local part of a service's runtime.
#[derive(Debug, Clone)]
pub(super) struct Local {
    /// The snapshot generation at which the service last changed here
    /// (health flips included), shown in status.
    pub(super) generation: u64,
    /// Raised by each switch; a drain deadline only cuts if it still matches.
    pub(super) drain_epoch: u64,
    /// The staged rollout in progress, with its counts.
    pub(super) canary: Option<Canary>,
    /// The automated-rollback watch: the watched pool and its window.
    pub(super) watch: Option<(PoolName, Watch)>,
    /// Cooldown and hourly cap of automated rollbacks.
    pub(super) budget: Budget,
}

impl Runtime {
    /// A service at `release`, first seen at `generation`.
    pub(super) fn new(release: ReleaseState, generation: u64) -> Runtime {
        Runtime {
            release,
            local: Local {
                generation,
                drain_epoch: 0,
                canary: None,
                watch: None,
                budget: Budget::default(),
            },
        }
    }

    /// The active pool.
    pub(super) fn active(&self) -> PoolName {
        self.release.active
    }

    /// Percent of new requests to the standby pool.
    pub(super) fn standby_weight(&self) -> u8 {
        self.release.standby_weight
    }

    /// The pool a request the active pool failed is retried on once: a
    /// deploy's old pool, from its switch until it ends, unless the deploy
    /// asked for no retry.
    pub(super) fn fallback(&self) -> Option<PoolName> {
        let d = self.release.deploy.as_deref()?;
        let switched = d.outcome.is_none() && d.phase == super::deploy::plan::phase::SWITCHED;
        (switched && d.retry_old && self.active() == d.to && self.standby_weight() == 0)
            .then_some(d.from)
    }

    /// Brings the durable fields that mirror local progress (the canary's
    /// stage, the end of the active pool's watch) up to date, before a
    /// commit.
    pub(super) fn sync_release(&mut self) {
        self.release.canary_stage = self.local.canary.as_ref().map(Canary::stage);
        self.release.rollback_watch_until = self.active_watch_until();
    }

    /// Until when the active pool of a service without a canary is watched
    /// (a canary's watch starts again with the canary).
    fn active_watch_until(&self) -> Option<String> {
        if self.local.canary.is_some() {
            return None;
        }
        let (pool, watch) = self.local.watch.as_ref()?;
        let left = watch.until.saturating_duration_since(Instant::now());
        (*pool == self.active()).then(|| crate::wire::rfc3339_millis(SystemTime::now() + left))
    }
}

/// Health of one server, kept across snapshots and reloads.
#[derive(Debug, Clone)]
pub(super) struct ServerHealth {
    pub(super) state: HealthState,
    pub(super) version: Option<String>,
    pub(super) last_check: Option<SystemTime>,
    pub(super) last_error: Option<String>,
    /// Its container is stopping or gone: it takes no new request whatever
    /// its checks say, and what it has in flight finishes.
    pub(super) draining: bool,
    /// It has been healthy since it appeared (a server that never was is
    /// `starting`, not `unhealthy`).
    pub(super) proven: bool,
}

impl ServerHealth {
    pub(super) fn new(state: HealthState) -> ServerHealth {
        ServerHealth {
            state,
            version: None,
            last_check: None,
            last_error: None,
            draining: false,
            proven: state.is_healthy(),
        }
    }

    /// Whether new requests may go to it.
    pub(super) fn takes_traffic(&self) -> bool {
        self.state.is_healthy() && !self.draining
    }

    /// The state status shows.
    pub(super) fn shown(&self) -> ServerState {
        if self.draining {
            ServerState::Draining
        } else if self.state.is_healthy() {
            ServerState::Healthy
        } else if self.proven {
            ServerState::Unhealthy
        } else {
            ServerState::Starting
        }
    }
}
