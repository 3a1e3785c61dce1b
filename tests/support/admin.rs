//! Helpers of the control-plane tests: a cutover started from a real config
//! file in a temp dir (admin on `127.0.0.1:0` and on a Unix socket, state in
//! the same dir, restartable on that dir), admin calls over TCP and over the
//! socket, an upstream whose `/health` can be made to fail, a client that
//! reports failures instead of panicking, and `cutover` binary helpers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::task::JoinHandle;

use super::{
    empty, eventually, full, init_tracing, route, service_with, Client, Reply, TestBody, Upstream,
};

/// The file name of the config inside a [`Proxy`]'s dir.
pub const CONFIG_FILE: &str = "proxy.toml";
/// The file name of the state file inside a [`Proxy`]'s dir.
pub const STATE_FILE: &str = "cutover-state.json";
/// The file name of the admin socket inside a [`Proxy`]'s dir.
pub const SOCKET_FILE: &str = "cutover.sock";

/// The `[server]`, `[admin]` and `[state]` tables every [`Proxy`] config
/// starts with: everything on loopback port 0, files beside the config.
pub fn header() -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\nsocket = \"{SOCKET_FILE}\"\n\n\
         [state]\npath = \"{STATE_FILE}\"\n\n"
    )
}

/// A cutover started from `DIR/proxy.toml`, with its admin API on TCP and
/// on `DIR/cutover.sock`, and its state in `DIR/cutover-state.json`.
pub struct Proxy {
    /// The proxy listener.
    pub addr: SocketAddr,
    /// The admin TCP listener.
    pub admin: SocketAddr,
    /// The admin Unix socket.
    pub socket: PathBuf,
    /// The control plane, for in-process calls.
    pub control: Arc<cutover::control::ControlPlane>,
    /// The dir holding config, socket and state.
    pub dir: tempfile::TempDir,
    running: Option<cutover::Running>,
}

/// Blue and green upstreams behind a proxy whose service `app` drains the
/// old pool for `drain_timeout` (a duration string) after a switch.
pub async fn behind_drain(drain_timeout: &str) -> (Upstream, Upstream, Proxy) {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let config = route(None, "/", "app")
        + &service_with(
            "app",
            &[blue.addr],
            &[green.addr],
            &format!("drain_timeout = \"{drain_timeout}\""),
        );
    let proxy = Proxy::start(&config).await;
    (blue, green, proxy)
}

impl Proxy {
    /// Writes [`header`] + `body` to a new temp dir and starts cutover on it;
    /// returns once `/readyz` answers 200.
    pub async fn start(body: &str) -> Proxy {
        let dir = tempfile::tempdir().expect("temp dir");
        Proxy::start_in(dir, &(header() + body)).await
    }

    /// Writes `text` (a whole config) to `DIR/proxy.toml` and starts cutover
    /// on it, keeping whatever state file `dir` already holds; returns once
    /// `/readyz` answers 200.
    pub async fn start_in(dir: tempfile::TempDir, text: &str) -> Proxy {
        let proxy = Proxy::spawn_in(dir, text).await;
        proxy.wait_ready().await;
        proxy
    }

    /// [`Proxy::start_in`] without waiting for readiness.
    pub async fn spawn_in(dir: tempfile::TempDir, text: &str) -> Proxy {
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
        Proxy {
            addr: running.http_addr,
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
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
        self.dir
    }

    /// Stops this proxy and starts a new one on the same dir and config file.
    pub async fn restart(self) -> Proxy {
        let dir = self.stop().await;
        let text = std::fs::read_to_string(dir.path().join(CONFIG_FILE)).expect("read config");
        Proxy::start_in(dir, &text).await
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
}

// ---------------------------------------------------------------------------
// Admin calls.

fn admin_request(method: Method, path: &str, body: Option<&Value>) -> Request<TestBody> {
    let mut builder = Request::builder().method(method).uri(path);
    let body = match body {
        Some(v) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            full(v.to_string())
        }
        None => empty(),
    };
    builder.body(body).expect("valid admin request")
}

/// Sends `req` to the admin API at `addr` on a new connection.
pub async fn admin_send(addr: SocketAddr, req: Request<TestBody>) -> Reply {
    Client::http1(addr).await.request(req).await
}

/// `GET path` on the admin API.
pub async fn admin_get(addr: SocketAddr, path: &str) -> Reply {
    admin_send(addr, admin_request(Method::GET, path, None)).await
}

/// `POST path` with a JSON body on the admin API.
pub async fn admin_post(addr: SocketAddr, path: &str, body: Value) -> Reply {
    admin_send(addr, admin_request(Method::POST, path, Some(&body))).await
}

/// `PUT path` with a JSON body on the admin API.
pub async fn admin_put(addr: SocketAddr, path: &str, body: Value) -> Reply {
    admin_send(addr, admin_request(Method::PUT, path, Some(&body))).await
}

/// `GET path` with `Authorization: Bearer token`.
pub async fn admin_get_with_token(addr: SocketAddr, path: &str, token: &str) -> Reply {
    let mut req = admin_request(Method::GET, path, None);
    req.headers_mut().insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("token is header-safe"),
    );
    admin_send(addr, req).await
}

/// One admin call over the Unix socket at `socket` (`body`: JSON, if any).
pub async fn socket_call(socket: &Path, method: Method, path: &str, body: Option<Value>) -> Reply {
    try_socket_call(socket, method, path, body)
        .await
        .unwrap_or_else(|e| panic!("admin call over {}: {e}", socket.display()))
}

/// [`socket_call`], with connection failures returned instead of panicking.
pub async fn try_socket_call(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Reply, String> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = admin_request(method, path, body.as_ref());
    req.headers_mut()
        .insert(header::HOST, HeaderValue::from_static("localhost"));
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    Ok(Reply::read(resp).await)
}

/// Runs `cutover ctl` in-process with `line` (the words after `ctl`).
pub async fn ctl(line: &[&str]) -> cutover::ctl::Outcome {
    use clap::Parser as _;
    let argv = ["cutover", "ctl"].iter().chain(line).copied();
    let cli = cutover::cli::Cli::try_parse_from(argv).expect("valid ctl command line");
    match cli.command {
        cutover::cli::Command::Ctl(args) => cutover::ctl::execute(&args).await,
        other => panic!("parsed as {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// A load client that counts failures instead of panicking.

/// One HTTP/1.1 keep-alive connection whose requests return errors.
pub struct LoadConn {
    addr: SocketAddr,
    sender: Option<hyper::client::conn::http1::SendRequest<TestBody>>,
}

impl LoadConn {
    /// A client for `addr`; connects at the first request.
    pub fn new(addr: SocketAddr) -> LoadConn {
        LoadConn { addr, sender: None }
    }

    /// `GET path`: the status and whole body, or what failed. A failed
    /// connection is replaced at the next call.
    pub async fn get(&mut self, path: &str) -> Result<(StatusCode, Bytes), String> {
        let result = self.try_get(path).await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn try_get(&mut self, path: &str) -> Result<(StatusCode, Bytes), String> {
        if self.sender.is_none() {
            let stream = TcpStream::connect(self.addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        let sender = self.sender.as_mut().expect("connected above");
        sender.ready().await.map_err(|e| format!("ready: {e}"))?;
        let req = Request::get(path)
            .header(header::HOST, self.addr.to_string())
            .body(empty())
            .expect("valid request");
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok((status, body))
    }
}

/// The `upstream` field of a JSON answer (the support upstreams and
/// [`Backend`] name themselves in it).
pub fn upstream_of(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("upstream")?.as_str().map(str::to_string)
}

// ---------------------------------------------------------------------------
// An upstream whose health can be switched off.

struct BackendState {
    name: String,
    version: String,
    healthy: AtomicBool,
    hits: AtomicUsize,
    failed_checks: AtomicUsize,
}

/// A hyper server on `127.0.0.1:0`: `/health` answers 200
/// `{"status": "ok", "version": ...}` while healthy and 503 otherwise; any
/// other path answers 200 `{"upstream": NAME, "path": ...}`.
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<BackendState>,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    /// Starts a healthy backend called `name` reporting `version`.
    pub async fn start(name: &str, version: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let state = Arc::new(BackendState {
            name: name.to_string(),
            version: version.to_string(),
            healthy: AtomicBool::new(true),
            hits: AtomicUsize::new(0),
            failed_checks: AtomicUsize::new(0),
        });
        let accept_state = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = accept_state.clone();
                let service = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(backend_answer(req, &state)) }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend { addr, state, task }
    }

    /// Makes `/health` pass (`true`) or answer 503 (`false`).
    pub fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Requests served, `/health` excepted.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Health checks answered with 503.
    pub fn failed_checks(&self) -> usize {
        self.state.failed_checks.load(Ordering::SeqCst)
    }
}

fn backend_answer(req: Request<Incoming>, state: &BackendState) -> Response<TestBody> {
    let (status, body) = if req.uri().path() == "/health" {
        if state.healthy.load(Ordering::SeqCst) {
            (
                StatusCode::OK,
                serde_json::json!({"status": "ok", "version": state.version}),
            )
        } else {
            state.failed_checks.fetch_add(1, Ordering::SeqCst);
            (
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"status": "failing"}),
            )
        }
    } else {
        state.hits.fetch_add(1, Ordering::SeqCst);
        (
            StatusCode::OK,
            serde_json::json!({"upstream": state.name, "path": req.uri().path()}),
        )
    };
    let mut resp = Response::new(full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

// ---------------------------------------------------------------------------
// The `cutover` binary.

/// The path of the `cutover` binary under test.
pub fn cutover_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cutover")
}

/// Runs the `cutover` binary with `args` to its end (in a blocking task).
pub async fn run_cutover(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(cutover_bin())
            .args(&args)
            .env("CUTOVER_LOG", "warn")
            .output()
            .expect("run the cutover binary")
    })
    .await
    .expect("blocking task")
}

/// A `cutover` child process, killed if the test ends before it exits.
pub struct ChildProxy {
    child: Child,
}

impl ChildProxy {
    /// Starts `cutover run -c config`.
    pub fn run(config: &Path) -> ChildProxy {
        let mut command = Command::new(cutover_bin());
        command.env("CUTOVER_LOG", "warn");
        ChildProxy::spawn(command, config)
    }

    /// Starts `cutover run -c config` allowed to run on CPU 0 only
    /// (`taskset`), logging its own start-up at info level.
    pub fn run_on_one_cpu(config: &Path) -> ChildProxy {
        ChildProxy::run_on_one_cpu_with_env(config, &[])
    }

    /// As [`ChildProxy::run_on_one_cpu`], with `env` added to its
    /// environment (and `TOKIO_WORKER_THREADS` removed unless `env` sets it).
    pub fn run_on_one_cpu_with_env(config: &Path, env: &[(&str, &str)]) -> ChildProxy {
        let mut command = Command::new("taskset");
        command
            .arg("-c")
            .arg("0")
            .arg(cutover_bin())
            .env("CUTOVER_LOG", "warn,cutover::cli=info")
            .env_remove("TOKIO_WORKER_THREADS")
            .envs(env.iter().copied());
        ChildProxy::spawn(command, config)
    }

    fn spawn(mut command: Command, config: &Path) -> ChildProxy {
        let child = command
            .arg("run")
            .arg("-c")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cutover run");
        ChildProxy { child }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `"TERM"`, `"HUP"`) to this process only.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// The exit status if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits (at most `bound`) for the process to exit.
    pub async fn wait_exit(&mut self, bound: Duration) -> ExitStatus {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "cutover did not exit within {bound:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What it wrote to stderr (after it exited).
    pub fn stderr(&mut self) -> String {
        use std::io::Read as _;
        let mut text = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for ChildProxy {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A loopback port free a moment ago (bound and released). Only for the
/// binary tests, which cannot report the ports they bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// The payload bytes of `body` read until it ends or fails, and whether it
/// failed (`Err` frame) rather than ended cleanly.
pub async fn read_until_end(body: &mut Incoming) -> (Vec<Bytes>, bool) {
    let mut chunks = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    chunks.push(data);
                }
            }
            Err(_) => return (chunks, true),
        }
    }
    (chunks, false)
}
