//! The Docker provider: containers' `traefik.*` labels read as Traefik
//! reads them, grouped into cutover services with blue and green pools,
//! and followed as containers start and stop.
//!
//! The pure part takes plain data, [`Container`]s, and gives the control
//! plane a [`Contribution`](crate::control::source::Contribution):
//! `labels` reads one container's labels (`values` their values),
//! `middlewares` its middlewares, `server` makes one container a server
//! (address, port, check, pool), `group` merges routers across containers
//! and groups them by rule (`group/service.rs` makes a group a service),
//! and [`rule`] parses Traefik rules. The engine is behind `engine` (bollard)
//! and [`watch`] is the task: list, follow the events, report stops at
//! once, reconnect with backoff. [`deploy`] is the engine's side of
//! `cutover ctl deploy`.

pub mod deploy;
mod engine;
mod group;
mod labels;
mod middlewares;
pub mod rule;
mod server;
mod values;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::config::DockerConfig;

pub use group::contribution;
pub use watch::{spawn, Provider};

/// A running container as the provider reads it from the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Its full id.
    pub id: String,
    /// Its name, without the leading `/`.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its address on each network it is on (networks without one left out).
    pub networks: BTreeMap<String, IpAddr>,
    /// The TCP ports it exposes, sorted.
    pub ports: Vec<u16>,
}

/// What reading containers needs besides them.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    /// `[providers.docker]`.
    pub docker: &'a DockerConfig,
    /// The networks the proxy is on when it runs in a container; `None`
    /// when it runs on the host, which reaches every network.
    pub proxy_networks: Option<&'a BTreeSet<String>>,
}
