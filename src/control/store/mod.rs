//! The release-state store: where each service's durable release state
//! (active pool, weights, the pool a rollback returns to, the last switch,
//! the canary's stage, the rollback watch's end) and the event history
//! live, behind one trait so that the control plane does not care whether
//! that is a local file ([`FileStore`]) or a store shared by a fleet.
//!
//! The control plane commits a change to the store before it publishes the
//! snapshot that makes it take effect: once a change is visible to requests,
//! it survives a restart. A commit is a compare-and-swap on the service's
//! generation, so of two writers only one wins; changes another writer
//! made arrive on [`Store::changes`] and are published without being
//! committed again.

mod audit;
mod etcd;
mod file;
pub mod fleet;

use std::collections::BTreeMap;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::config::PoolName;
use crate::wire::{DeployStatus, Event};

pub use audit::audit_path;
pub use etcd::{EtcdStore, ETCD_FORMAT};
pub use file::{FileStore, PersistError, STATE_VERSION};
pub use fleet::Fleet;

/// What the store holds of one service: the release state that must
/// survive a restart and be the same on every replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseState {
    /// The active pool.
    pub active: PoolName,
    /// Percent of new requests to the standby pool.
    #[serde(default)]
    pub standby_weight: u8,
    /// The pool active before the last switch (what rollback returns to).
    #[serde(default)]
    pub previous: Option<PoolName>,
    /// The last switch, rollback or promotion.
    #[serde(default)]
    pub last_switch: Option<Event>,
    /// The stage of the staged rollout in progress, taken up again at the
    /// next start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_stage: Option<usize>,
    /// Until when the active pool is watched for an automated rollback
    /// (RFC 3339), after a switch or a promotion; the watch goes on for what
    /// is left of it at the next start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_watch_until: Option<String>,
    /// The generation of the last committed change to this state: what the
    /// next commit must find in the store (its compare-and-swap).
    #[serde(default)]
    pub generation: u64,
    /// The last deploy, running or ended: a restarted proxy finishes a
    /// running one or returns to its old pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<Box<DeployStatus>>,
}

impl ReleaseState {
    /// A service that has never been switched: `active`, no weight.
    pub fn fresh(active: PoolName) -> ReleaseState {
        ReleaseState {
            active,
            standby_weight: 0,
            previous: None,
            last_switch: None,
            canary_stage: None,
            rollback_watch_until: None,
            generation: 0,
            deploy: None,
        }
    }
}

/// What a store holds, read at start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stored {
    /// Each service's release state, by name.
    pub services: BTreeMap<String, ReleaseState>,
    /// The most recent events, oldest first.
    pub history: Vec<Event>,
}

/// One change to commit, with the event that records it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A service's release state changed: written only if the store still
    /// holds `expected` as the service's generation (or nothing yet).
    Service {
        /// The service.
        name: String,
        /// The generation the change was made from.
        expected: u64,
        /// The new state (its `generation` is the change's).
        state: ReleaseState,
        /// What happened.
        event: Event,
    },
    /// The configured services changed (a reload): the store keeps the
    /// states of these services, adding the new ones as given.
    Services {
        /// Every configured service and its state.
        states: BTreeMap<String, ReleaseState>,
        /// What happened.
        event: Event,
    },
    /// Something worth recording that changes no state (an automated
    /// action held back).
    Event(Event),
}

impl Change {
    /// The event recording the change.
    pub fn event(&self) -> &Event {
        match self {
            Change::Service { event, .. }
            | Change::Services { event, .. }
            | Change::Event(event) => event,
        }
    }
}

/// A change another writer committed, to publish here.
#[derive(Debug, Clone, PartialEq)]
pub struct Remote {
    /// The service.
    pub service: String,
    /// Its state as committed.
    pub state: ReleaseState,
    /// The event that recorded it, when the store has it.
    pub event: Option<Event>,
}

/// Why a commit did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer changed the service first: the change is refused.
    #[error("service {service} changed elsewhere (generation {found}, expected {expected}); look again and retry")]
    Conflict {
        /// The service.
        service: String,
        /// The generation the change was made from.
        expected: u64,
        /// The generation the store holds.
        found: u64,
    },
    /// An automated change from a replica that no longer leads the fleet:
    /// refused, the leader judges.
    #[error("replica {0} does not lead the fleet: automated changes are the leader's")]
    NotLeader(String),
    /// The store cannot be reached: the change is refused.
    #[error("the release-state store is unavailable: {0}")]
    Unavailable(String),
    /// The change could not be made durable, but the store answers to this
    /// process alone, so it may take effect anyway (and be lost at the next
    /// restart).
    #[error(transparent)]
    NotDurable(#[from] PersistError),
}

/// What a store read at start, handed over once (`Store::load`); later
/// calls get an empty state.
fn take_loaded(
    loaded: &std::sync::Mutex<Option<Stored>>,
) -> BoxFuture<'static, Result<Stored, StoreError>> {
    let taken = loaded
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .unwrap_or_default();
    Box::pin(async move { Ok(taken) })
}

/// The durable release state, behind one seam.
pub trait Store: Send + Sync + 'static {
    /// Everything the store holds, read at start.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot be read; the caller starts from
    /// the config.
    fn load(&self) -> BoxFuture<'_, Result<Stored, StoreError>>;

    /// Commits `change`; resolves once it is durable.
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] or [`StoreError::Unavailable`]: refused;
    /// [`StoreError::NotDurable`]: not written, may take effect anyway.
    fn commit(&self, change: Change) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Changes committed by other writers, once (later calls get `None`).
    /// A store with no other writer returns `None`.
    fn changes(&self) -> Option<mpsc::Receiver<Remote>>;

    /// The fleet this store is shared with, in fleet mode.
    fn fleet(&self) -> Option<std::sync::Arc<Fleet>> {
        None
    }
}
