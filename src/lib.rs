//! cutover: a single-binary HTTP reverse proxy with atomic blue-green cutover.
//!
//! # Architecture
//!
//! The **hot path** serves client requests. A request loads the routing
//! [`snapshot::Snapshot`] once (one `ArcSwap` load, no lock), matches a route
//! ([`route`]), picks the service's pool and a healthy server ([`balance`]),
//! rewrites headers ([`proxy::headers`]) and streams the request and answer
//! through a pooled upstream connection ([`upstream`], [`http1`]). The pool's
//! in-flight guard lives until the response body ends, so a pool that lost
//! the traffic drains instead of being cut.
//!
//! The **control plane** (switch, rollback, weights, health checks, reload)
//! builds a new snapshot and stores it in one atomic step; requests that
//! start afterwards see the new one, requests in flight keep the one they
//! started with.
//!
//! # Modules
//!
//! - [`config`]: `proxy.toml` → validated [`config::Config`].
//! - [`snapshot`]: the immutable routing table and the `ArcSwap` holding it.
//! - [`route`]: Host + longest path prefix → service.
//! - [`balance`]: pool choice (preview, weights, stickiness) and server choice.
//! - [`upstream`]: keep-alive connection pool per server, timeouts.
//! - [`http1`]: HTTP/1.1 beside hyper: the request framing follower, the
//!   upstream client and its response parser, held to hyper's framing.
//! - [`proxy`]: the listener, the per-request forwarding, the bodies and
//!   the upgrade tunnel.
//! - [`control`]: the only writer of the routing table: switch, rollback,
//!   weights, reload, health results, drain deadlines, persisted state, events.
//! - [`health`]: active health checks and the hysteresis of each server.
//! - [`provider`]: config sources other than the file: the Docker
//!   provider, which turns containers' `traefik.*` labels into services
//!   and follows the containers as they start and stop.
//! - [`admin`]: the admin API on TCP and on the Unix socket.
//! - [`tls`]: the rustls server config of the HTTPS listener.
//! - [`server`]: bind, run, drain.
//! - [`demo`]: `cutover demo`'s built-in upstreams, and `cutover demo-upstream`.
//! - [`rt`]: async building blocks (a shared flag, an owned waker, a lazy timer).
//! - [`metrics`]: Prometheus families and per-pool window statistics.
//! - [`cli`]: the command line.
//! - [`wire`]: the admin API's request and answer types, shared with `ctl`.
//! - [`ctl`]: `cutover ctl`, the admin client (HTTP over the Unix socket or TCP).

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![warn(missing_docs)]

pub mod acme;
pub mod admin;
pub mod balance;
pub mod build_info;
pub mod cli;
pub mod config;
pub mod control;
pub mod ctl;
pub mod demo;
pub mod health;
pub mod http1;
pub mod metrics;
pub mod provider;
pub mod proxy;
pub mod route;
pub mod rt;
pub mod server;
pub mod snapshot;
pub mod tls;
pub mod upstream;
pub mod wire;

pub use server::{run, spawn, Listeners, Running, StartError};
