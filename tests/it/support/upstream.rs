//! The test upstream: a real hyper server on `127.0.0.1:0` (HTTP/1.1, and
//! h2c with prior knowledge so the transparency tests can talk to it
//! directly), configured by a builder and switched while it runs.
//!
//! What it answers, by path (see [`super::answers`]):
//! - `/health`: 200 `{"status": "ok", "version": ...}` while healthy, 503
//!   `{"status": "failing"}` (and a failed check counted) once not;
//! - `/sse?n=N&ms=M`: N server-sent events M ms apart (default 5, 200 ms),
//!   each `data: {"upstream", "i", "t_us"}` stamped with [`super::now_us`];
//! - `/slow?ms=M`: waits M ms (default 1000) before the head, then echoes;
//! - `/status/NNN`: answers status NNN;
//! - `/big?n=BYTES`: the deterministic pattern, streamed chunked;
//! - `/upload`: reads the body, answers `{"sha256", "len",
//!   "content_length", "transfer_encoding"}`;
//! - `/duplex`: streams each request body chunk back as it arrives;
//! - `/ws`: WebSocket echo;
//! - `/hop-by-hop`: an answer carrying hop-by-hop headers;
//! - a path ending in `/hold`: waits for [`Upstream::release`], then echoes;
//! - any other path: echo, a JSON [`super::Echo`] of the request (method,
//!   path, query, headers, body) and the upstream's name.
//!
//! Every path but `/health` counts a hit, comes after the delay
//! ([`Upstream::set_delay`]) and may be failed ([`Upstream::fail`]): the
//! failed answer has the given status and `{"upstream", "path"}`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::answers;
use super::bodies::TestBody;

/// A loopback listener whose accept loop hands each connection to a
/// handler and counts it; it stops listening when dropped.
pub struct Listening {
    /// Where it listens.
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Listening {
    /// Listens on `127.0.0.1:0` and runs `serve` on every connection, in a
    /// task of its own.
    pub async fn start<F, Fut>(serve: F) -> Listening
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("bound address");
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                // Every write goes out at once: nothing waits on the
                // kernel's own timers (Nagle against a delayed ACK).
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream));
            }
        });
        Listening {
            addr,
            connections,
            task,
        }
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A share of answers failed with a status.
#[derive(Debug, Clone, Copy)]
struct Failure {
    status: StatusCode,
    /// How many in every 100 answers fail, spread evenly.
    percent: u64,
}

/// What the answers read and count.
pub(super) struct State {
    pub(super) name: String,
    pub(super) version: String,
    healthy: AtomicBool,
    failure: Mutex<Option<Failure>>,
    /// Answers that could have failed, to spread a share evenly.
    judged: AtomicU64,
    delay_ms: AtomicU64,
    gate: Semaphore,
    hits: AtomicUsize,
    failed_checks: AtomicUsize,
}

impl State {
    /// Whether `/health` passes; counts a failed check when it does not.
    pub(super) fn check_health(&self) -> bool {
        let healthy = self.healthy.load(Ordering::SeqCst);
        if !healthy {
            self.failed_checks.fetch_add(1, Ordering::SeqCst);
        }
        healthy
    }

    /// The status this answer fails with, if it is one of the failed share.
    fn failure_now(&self) -> Option<StatusCode> {
        let failure = (*self.failure.lock().unwrap_or_else(|p| p.into_inner()))?;
        let n = self.judged.fetch_add(1, Ordering::SeqCst);
        // Request n fails when the running count of failures due steps up.
        let due = |k: u64| k * failure.percent / 100;
        (due(n + 1) > due(n)).then_some(failure.status)
    }
}

/// How an [`Upstream`] starts.
pub struct UpstreamBuilder {
    name: String,
    version: String,
    healthy: bool,
    failure: Option<Failure>,
    delay: Duration,
}

impl UpstreamBuilder {
    /// The version `/health` reports (default `1.0.0`).
    pub fn version(mut self, version: &str) -> Self {
        self.version = version.to_string();
        self
    }

    /// `/health` answers 503 from the start.
    pub fn unhealthy(mut self) -> Self {
        self.healthy = false;
        self
    }

    /// Every answer but `/health` is a 500 from the start.
    pub fn failing(mut self) -> Self {
        self.failure = Some(Failure {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            percent: 100,
        });
        self
    }

    /// Every answer but `/health` comes `delay` late.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Binds `127.0.0.1:0` and serves.
    pub async fn start(self) -> Upstream {
        let state = Arc::new(State {
            name: self.name,
            version: self.version,
            healthy: AtomicBool::new(self.healthy),
            failure: Mutex::new(self.failure),
            judged: AtomicU64::new(0),
            delay_ms: AtomicU64::new(self.delay.as_millis() as u64),
            gate: Semaphore::new(0),
            hits: AtomicUsize::new(0),
            failed_checks: AtomicUsize::new(0),
        });
        let serving = state.clone();
        let listening = Listening::start(move |stream| serve(stream, serving.clone())).await;
        Upstream {
            addr: listening.addr,
            state,
            listening,
        }
    }
}

/// A real upstream; see the module doc for what it answers.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    listening: Listening,
}

impl Upstream {
    /// An upstream called `name`, version `1.0.0`, healthy, answering
    /// every request at once.
    pub fn builder(name: &str) -> UpstreamBuilder {
        UpstreamBuilder {
            name: name.to_string(),
            version: "1.0.0".to_string(),
            healthy: true,
            failure: None,
            delay: Duration::ZERO,
        }
    }

    /// Starts an upstream called `name` reporting version `1.0.0`.
    pub async fn start(name: &str) -> Upstream {
        Upstream::builder(name).start().await
    }

    /// Starts an upstream called `name` reporting `version` on `/health`.
    pub async fn start_with_version(name: &str, version: &str) -> Upstream {
        Upstream::builder(name).version(version).start().await
    }

    /// Makes `/health` pass (`true`) or answer 503 (`false`).
    pub fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Makes every answer but `/health` a 500 (`true`), or none (`false`).
    pub fn set_failing(&self, failing: bool) {
        if failing {
            self.fail(StatusCode::INTERNAL_SERVER_ERROR, 100);
        } else {
            *self.state.failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    /// Makes `percent` in every 100 answers but `/health` answer `status`,
    /// spread evenly (25: every fourth).
    pub fn fail(&self, status: StatusCode, percent: u8) {
        assert!(percent <= 100, "a share is at most 100%");
        let failure = Failure {
            status,
            percent: u64::from(percent),
        };
        *self.state.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(failure);
    }

    /// Adds `delay` before every answer but `/health`.
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Lets `n` requests held on a `/hold` path answer.
    pub fn release(&self, n: usize) {
        self.state.gate.add_permits(n);
    }

    /// Requests served, `/health` excepted.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> usize {
        self.listening.connections()
    }

    /// Health checks answered with 503.
    pub fn failed_checks(&self) -> usize {
        self.state.failed_checks.load(Ordering::SeqCst)
    }
}

async fn serve(stream: TcpStream, state: Arc<State>) {
    let service = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(answer(req, &state).await) }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .await;
}

async fn answer(req: Request<Incoming>, state: &State) -> Response<TestBody> {
    let path = req.uri().path().to_string();
    if path == "/health" {
        return answers::health(state);
    }
    state.hits.fetch_add(1, Ordering::SeqCst);
    if path.ends_with("/hold") {
        state
            .gate
            .acquire()
            .await
            .expect("the gate is never closed")
            .forget();
    }
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if let Some(status) = state.failure_now() {
        return answers::failure(status, state, &path);
    }
    if let Some(code) = path.strip_prefix("/status/") {
        return answers::status(code);
    }
    match path.as_str() {
        "/sse" => answers::sse(&req, state),
        "/slow" => {
            let ms = answers::query_param(req.uri(), "ms").unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            answers::echo(req, state).await
        }
        "/big" => answers::big(&req),
        "/upload" => answers::upload(req).await,
        "/duplex" => answers::duplex(req),
        "/ws" => answers::websocket(req),
        "/hop-by-hop" => answers::hop_by_hop(),
        _ => answers::echo(req, state).await,
    }
}
