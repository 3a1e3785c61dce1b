//! The `cluster` block of status, in fleet mode.

use serde::{Deserialize, Serialize};

/// The fleet as this replica sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// This replica.
    pub name: String,
    /// The replica that leads the fleet (runs canary judgments and
    /// automated rollback), when known.
    #[serde(default)]
    pub leader: Option<String>,
    /// Whether this replica reaches etcd now. When not, it serves the last
    /// state it saw and refuses mutating commands.
    pub connected: bool,
    /// Where this replica's state came from at start: `etcd`, or
    /// `local_copy` (etcd was unreachable; the last state it saw).
    #[serde(default)]
    pub state_from: String,
    /// Every replica publishing under its lease, sorted by name.
    #[serde(default)]
    pub replicas: Vec<ReplicaStatus>,
}

/// One replica of the fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// Its `cluster.name`.
    pub name: String,
    /// The highest release-state generation it has applied.
    pub generation: u64,
    /// When it last published (RFC 3339).
    pub last_seen: String,
}
