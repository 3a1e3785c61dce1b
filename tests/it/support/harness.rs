//! cutover in-process: started through `cutover::spawn` from a real config
//! file in a temp dir (admin API on `127.0.0.1:0` and on a Unix socket,
//! state beside the config), stopped, restarted on the same dir, reloaded
//! after the file is rewritten.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use http::StatusCode;
use serde_json::Value;
use tempfile::TempDir;

use super::admin::{admin_get, admin_post};
use super::config::{header, route, service_with, CONFIG_FILE, STATE_FILE};
use super::metrics::Scrape;
use super::{eventually, init_tracing, Reply, Upstream};

/// A running cutover started from `DIR/proxy.toml`, with its admin API on
/// TCP and on `DIR/cutover.sock`, and its state in `DIR/cutover-state.json`.
pub struct Cutover {
    /// `server.listen` (HTTP/1.1 and h2c).
    pub addr: SocketAddr,
    /// `server.tls.listen`, if the config has one.
    pub https: Option<SocketAddr>,
    /// The admin TCP listener (on loopback).
    pub admin: SocketAddr,
    /// The admin Unix socket.
    pub socket: PathBuf,
    /// The control plane, for in-process calls.
    pub control: Arc<cutover::control::ControlPlane>,
    /// The dir holding config, socket and state.
    pub dir: TempDir,
    running: Option<cutover::Running>,
}

impl Cutover {
    /// Writes [`header`] + `body` (routes, services, `[server.limits]`...)
    /// to a new temp dir and starts cutover on it; returns once `/readyz`
    /// answers 200.
    pub async fn start(body: &str) -> Cutover {
        let dir = tempfile::tempdir().expect("temp dir");
        Cutover::start_in(dir, &(header() + body)).await
    }

    /// Writes `text` (a whole config) to `DIR/proxy.toml` and starts cutover
    /// on it, keeping whatever else `dir` holds (a state file,
    /// certificates); returns once `/readyz` answers 200.
    pub async fn start_in(dir: TempDir, text: &str) -> Cutover {
        let proxy = Cutover::spawn_in(dir, text).await;
        proxy.wait_ready().await;
        proxy
    }

    /// [`Cutover::start_in`] without waiting for readiness.
    pub async fn spawn_in(dir: TempDir, text: &str) -> Cutover {
        init_tracing();
        let path = dir.path().join(CONFIG_FILE);
        std::fs::write(&path, text).expect("write config");
        let config = match cutover::config::load(&path) {
            Ok(config) => config,
            Err(e) => panic!("test config is invalid:\n{e}\n--- config ---\n{text}"),
        };
        let running = cutover::spawn(config).await.expect("spawn cutover");
        let mut admin = running.admin_addr.expect("admin.listen is set");
        if admin.ip().is_unspecified() {
            // Bound on every interface: talk to it over loopback.
            admin.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        Cutover {
            addr: running.http_addr,
            https: running.https_addr,
            admin,
            socket: running.socket.clone().expect("admin.socket is set"),
            control: running.control.clone(),
            dir,
            running: Some(running),
        }
    }

    /// Waits until `/readyz` answers 200 (the first round of checks is done).
    pub async fn wait_ready(&self) {
        let admin = self.admin;
        eventually("/readyz answers 200", || async move {
            admin_get(admin, "/readyz").await.status == StatusCode::OK
        })
        .await;
    }

    /// `DIR/proxy.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join(CONFIG_FILE)
    }

    /// `DIR/cutover-state.json`.
    pub fn state_path(&self) -> PathBuf {
        self.dir.path().join(STATE_FILE)
    }

    /// Replaces the config file with [`header`] + `body` (for a reload).
    pub fn rewrite_config(&self, body: &str) {
        std::fs::write(self.config_path(), header() + body).expect("rewrite config");
    }

    /// Stops accepting, drains, waits for the end; gives the dir back so a
    /// new proxy can start on the same config and state.
    pub async fn stop(mut self) -> TempDir {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
        self.dir
    }

    /// Stops this proxy and starts a new one on the same dir and config file.
    pub async fn restart(self) -> Cutover {
        let dir = self.stop().await;
        let text = std::fs::read_to_string(dir.path().join(CONFIG_FILE)).expect("read config");
        Cutover::start_in(dir, &text).await
    }

    /// `GET /api/v1/services/{svc}` as JSON.
    pub async fn service(&self, svc: &str) -> Value {
        let reply = admin_get(self.admin, &format!("/api/v1/services/{svc}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        reply.json()
    }

    /// `POST /api/v1/services/{svc}/switch` with `body`.
    pub async fn switch(&self, svc: &str, body: Value) -> Reply {
        admin_post(self.admin, &format!("/api/v1/services/{svc}/switch"), body).await
    }

    /// `GET /api/v1/events?service={svc}` as a list.
    pub async fn events(&self, svc: &str) -> Vec<Value> {
        let reply = admin_get(self.admin, &format!("/api/v1/events?service={svc}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        reply.json().as_array().expect("events are a list").clone()
    }

    /// The `reason` of each of `svc`'s events, oldest first.
    pub async fn event_reasons(&self, svc: &str) -> Vec<Value> {
        let events = self.events(svc).await;
        events.iter().map(|e| e["reason"].clone()).collect()
    }

    /// The events of service `svc` with `reason`.
    pub async fn events_with(&self, svc: &str, reason: &str) -> Vec<Value> {
        let events = self.events(svc).await;
        events
            .into_iter()
            .filter(|e| e["reason"] == reason)
            .collect()
    }

    /// `GET /metrics` on the admin listener, parsed.
    pub async fn scrape(&self) -> Scrape {
        let reply = admin_get(self.admin, "/metrics").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        Scrape::parse(&reply.text())
    }
}

/// Blue and green upstreams behind a proxy whose service `app` drains the
/// old pool for `drain_timeout` (a duration string) after a switch.
pub async fn behind_drain(drain_timeout: &str) -> (Upstream, Upstream, Cutover) {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let config = route(None, "/", "app")
        + &service_with(
            "app",
            &[blue.addr],
            &[green.addr],
            &format!("drain_timeout = \"{drain_timeout}\""),
        );
    let proxy = Cutover::start(&config).await;
    (blue, green, proxy)
}
