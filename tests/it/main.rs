//! The integration tests: a real cutover (in-process through
//! `cutover::spawn`, or the `cutover` binary as a child process) in front of
//! real upstreams on `127.0.0.1:0`, driven over HTTP, the admin API and
//! `ctl`.
//!
//! One test crate with one module per area, so the helpers in [`support`]
//! compile and link once.

mod support;

// The request path: routing, proxying, bodies, streams, tunnels, the
// answers cutover gives itself, and hostile or broken peers.
mod acme;
mod bodies;
mod errors;
mod framing;
mod h2_floods;
mod hostile;
mod hostile_upstream;
mod limits;
mod parking;
mod provider_routes;
mod proxy;
mod routing;
mod streaming;
mod streams;
mod tls;
mod trust;
mod upstream_faults;
mod websocket;

// The control plane: the admin API, switches and their gates, health,
// reloads, the state file, weights, progressive delivery and metrics.
mod admin;
mod audit_log;
mod auto_rollback;
mod canary;
mod drain;
mod health;
mod metrics;
mod reload;
mod shutdown;
mod state;
mod switch;
mod traffic_split;
mod weights;

// The Docker provider and deploys against the real engine.
mod deploy;
mod docker;

// Fleet mode against a real etcd, and with replicas cut off in containers.
mod fleet;
mod fleet_docker;

// The binary, `ctl`, the dashboard, the demo and the shipped configs.
mod binary;
mod browser;
mod build_info;
mod config_props;
mod ctl;
mod dashboard;
mod demo;
mod examples;
