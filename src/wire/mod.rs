//! The admin API's wire format: every request and answer body as a type,
//! shared by the server ([`crate::admin`], built by [`crate::control`]) and
//! its clients ([`crate::ctl`], scripts, the dashboard).
//!
//! Plain data with serde, and nothing else: no I/O, no clock but the
//! formatting of times. Answers are read leniently (unknown fields are
//! ignored, fields the SPEC does not list default), so an older client can
//! read a newer server's answer; requests are read strictly
//! (`deny_unknown_fields`), so a typo in a script is an error, not a
//! silently ignored option.

mod change;
mod cluster;
mod deploy;
mod event;
mod provider;
mod stats;
mod status;

pub use change::{Applied, ErrorAnswer, ErrorBody, SwitchRequest, WeightsRequest};
pub use cluster::{ClusterStatus, ReplicaStatus};
pub use deploy::{DeployOutcome, DeployRequest, DeployStatus, DeployStep};
pub use event::{rfc3339, rfc3339_millis, Actor, Event, Reason};
pub use provider::{ContainerStatus, DockerStatus, LabelIssue};
pub use stats::{
    PoolStats, Sample, ServiceStats, SessionOpened, SessionRequest, SessionState, Stats, Window,
};
pub use status::{
    CanaryStatus, Drained, Judged, PoolStatus, ServerState, ServerStatus, ServiceStatus, Status,
    WatchStatus,
};
