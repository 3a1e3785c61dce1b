//! Releases on Docker: the body of `POST /api/v1/services/{svc}/deploy`,
//! a deploy as status shows it (and as the release state keeps it), and
//! the steps `GET .../deploy` streams, one JSON object a line.

use serde::{Deserialize, Serialize};

use crate::config::PoolName;

/// `POST /api/v1/services/{svc}/deploy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// The image of the new containers (required).
    #[serde(default)]
    pub image: String,
    /// The version the new containers must report (`/health`'s `version`);
    /// none: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Run the service's canary instead of switching at once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub canary: bool,
    /// How long the old containers keep running after the release (while
    /// `rollback` is instant), e.g. `"15m"`; default 15 minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_old: Option<String>,
    /// How long the new containers have to turn healthy, e.g. `"5m"`;
    /// default 5 minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Do not retry on the old pool the idempotent requests the new pool
    /// fails between the switch and the release.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_retry: bool,
}

/// How a deploy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployOutcome {
    /// The new containers serve; the old ones stop after `keep_old`.
    Released,
    /// Refused before the switch: traffic never moved.
    Refused,
    /// Rolled back after the switch: traffic is on the old pool again.
    RolledBack,
    /// Aborted by `--abort`: traffic is on the old pool.
    Aborted,
}

impl DeployOutcome {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeployOutcome::Released => "released",
            DeployOutcome::Refused => "refused",
            DeployOutcome::RolledBack => "rolled_back",
            DeployOutcome::Aborted => "aborted",
        }
    }
}

/// One step of a deploy, as it is streamed and as status lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployStep {
    /// `remove-idle`, `create`, `healthy`, `switch`, `canary`, `watch`,
    /// `drained`, `released`, `stop-old`, or `end`.
    pub step: String,
    /// Milliseconds since the deploy started.
    pub elapsed_ms: u64,
    /// What happened, for people.
    pub message: String,
    /// On the `end` step: how the deploy ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<DeployOutcome>,
}

/// A deploy of one service: what status shows under `deploy`, and what the
/// release state keeps so that a restarted proxy finishes it or returns to
/// the old pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployStatus {
    /// Its id (also the `cutover.deploy` label of its containers).
    pub id: String,
    /// The new image.
    pub image: String,
    /// The version asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Whether it runs the canary.
    #[serde(default)]
    pub canary: bool,
    /// Whether an idempotent request the new pool fails before any byte
    /// reached the client is sent once to the old pool, from the switch to
    /// the release.
    #[serde(default = "yes")]
    pub retry_old: bool,
    /// The pool the traffic leaves.
    pub from: PoolName,
    /// The pool of the new containers.
    pub to: PoolName,
    /// When it started (RFC 3339).
    pub started: String,
    /// `keep_old` in milliseconds.
    pub keep_old_ms: u64,
    /// `timeout` in milliseconds.
    pub timeout_ms: u64,
    /// Where it is: `prepare`, `create`, `healthy`, `switched`, `keep_old`,
    /// `done`.
    pub phase: String,
    /// The containers it created (ids).
    #[serde(default)]
    pub new_containers: Vec<String>,
    /// The active pool's containers when it started (ids).
    #[serde(default)]
    pub old_containers: Vec<String>,
    /// When the old containers stop (RFC 3339), once released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_old_until: Option<String>,
    /// How it ended, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<DeployOutcome>,
    /// The steps so far.
    #[serde(default)]
    pub steps: Vec<DeployStep>,
}

impl DeployStatus {
    /// Whether the client's part is over (the old containers may still be
    /// waiting out `keep_old`).
    pub fn ended(&self) -> bool {
        self.outcome.is_some()
    }
}

fn yes() -> bool {
    true
}
