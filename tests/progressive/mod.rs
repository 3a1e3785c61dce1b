//! Helpers of the progressive-delivery and metrics tests (weights,
//! stickiness, preview, canary, automated rollback, metrics, audit log):
//! an upstream that can be told to answer 500, to fail its health checks,
//! to add latency or to hold requests until released; a traffic driver
//! that keeps requests flowing while the control plane decides; admin
//! calls the shared helpers lack (DELETE); and a Prometheus text reader.
//!
//! Declared by each of those test files next to `mod support;` (it builds
//! on `support` and `support::admin`), so the shared helpers stay untouched.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::support::admin::{admin_get, admin_send, LoadConn, Proxy};
use crate::support::{empty, full, route, TestBody};

// ---------------------------------------------------------------------------
// An upstream that misbehaves on demand.

struct FlakyState {
    name: String,
    version: String,
    /// Every path but `/health` answers 500.
    failing: AtomicBool,
    /// `/health` answers 200 (else 503).
    healthy: AtomicBool,
    /// Added before every answer but `/health`, in milliseconds.
    delay_ms: AtomicU64,
    /// `/hold` waits for a permit.
    gate: Semaphore,
    hits: AtomicUsize,
}

/// A hyper HTTP/1.1 server on `127.0.0.1:0`:
/// - `/health`: 200 `{"status": "ok", "version": ...}`, or 503 once
///   [`Flaky::set_healthy`]`(false)`;
/// - `/hold` (or any path ending so): waits until [`Flaky::release`] gives it a permit, then answers;
/// - any other path: 200 `{"upstream": NAME, "path": ...}`, or 500 with the
///   same body once [`Flaky::set_failing`]`(true)`;
/// - every answer but `/health` comes after [`Flaky::set_delay`].
pub struct Flaky {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<FlakyState>,
    task: JoinHandle<()>,
}

impl Drop for Flaky {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Flaky {
    /// Starts a healthy, succeeding upstream called `name` reporting `version`.
    pub async fn start(name: &str, version: &str) -> Flaky {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let state = Arc::new(FlakyState {
            name: name.to_string(),
            version: version.to_string(),
            failing: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
            delay_ms: AtomicU64::new(0),
            gate: Semaphore::new(0),
            hits: AtomicUsize::new(0),
        });
        let accept_state = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = accept_state.clone();
                let service = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(answer(req, &state).await) }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Flaky { addr, state, task }
    }

    /// Makes every path but `/health` answer 500 (`true`) or 200 (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// Makes `/health` answer 200 (`true`) or 503 (`false`).
    pub fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Adds `delay` before every answer but `/health`.
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Lets `n` held `/hold` requests answer.
    pub fn release(&self, n: usize) {
        self.state.gate.add_permits(n);
    }

    /// Requests served, `/health` excepted.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
}

async fn answer(req: Request<Incoming>, state: &FlakyState) -> Response<TestBody> {
    let path = req.uri().path().to_string();
    if path == "/health" {
        let (status, body) = if state.healthy.load(Ordering::SeqCst) {
            let body = serde_json::json!({"status": "ok", "version": state.version});
            (StatusCode::OK, body)
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"status": "failing"}),
            )
        };
        return json(status, &body);
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
    let status = if state.failing.load(Ordering::SeqCst) {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    json(
        status,
        &serde_json::json!({"upstream": state.name, "path": path}),
    )
}

fn json(status: StatusCode, body: &Value) -> Response<TestBody> {
    let mut resp = Response::new(full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Every path to service `app`, blue and green one server each, blue
/// active, with `extra` lines in `[service.app]` and `tables` after it
/// (e.g. `[service.app.rollback]`).
pub fn app(blue: &Flaky, green: &Flaky, extra: &str, tables: &str) -> String {
    format!(
        "{}[service.app]\nactive = \"blue\"\ndrain_timeout = \"1s\"\n{extra}\n\n\
         [service.app.pools.blue]\nservers = [\"{}\"]\n\n\
         [service.app.pools.green]\nservers = [\"{}\"]\n\n{tables}\n",
        route(None, "/", "app"),
        blue.addr,
        green.addr,
    )
}

/// A `[service.app.health]` table checking `/health` every 50 ms, one
/// result enough either way.
pub const FAST_HEALTH: &str = "[service.app.health]\npath = \"/health\"\ninterval = \"50ms\"\n\
     timeout = \"500ms\"\nhealthy_threshold = 1\nunhealthy_threshold = 1\n\n";

// ---------------------------------------------------------------------------
// Traffic.

/// What a [`Traffic`] run saw.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Answers by upstream name (`"?"` when the body named none).
    pub by_upstream: BTreeMap<String, usize>,
    /// Answers by status code.
    pub by_status: BTreeMap<u16, usize>,
    /// Requests that got no answer.
    pub failures: usize,
}

impl Tally {
    /// Answers from `upstream`.
    pub fn from(&self, upstream: &str) -> usize {
        self.by_upstream.get(upstream).copied().unwrap_or(0)
    }

    /// All answers.
    pub fn answers(&self) -> usize {
        self.by_status.values().sum()
    }
}

/// Requests sent in the background through the proxy on a few keep-alive
/// connections, a couple of milliseconds apart each, until dropped.
pub struct Traffic {
    tally: Arc<Mutex<Tally>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Traffic {
    /// Starts `connections` loops sending `GET path` to `addr`.
    pub fn start(addr: SocketAddr, connections: usize, path: &str) -> Traffic {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let tasks = (0..connections)
            .map(|_| {
                let tally = tally.clone();
                let path = path.to_string();
                tokio::spawn(async move {
                    let mut conn = LoadConn::new(addr);
                    loop {
                        let result = conn.get(&path).await;
                        {
                            let mut t = tally.lock().expect("tally lock");
                            match result {
                                Ok((status, body)) => {
                                    let who = crate::support::admin::upstream_of(&body)
                                        .unwrap_or_else(|| "?".into());
                                    *t.by_upstream.entry(who).or_default() += 1;
                                    *t.by_status.entry(status.as_u16()).or_default() += 1;
                                }
                                Err(_) => t.failures += 1,
                            }
                        }
                        // Pacing, not waiting for convergence: keeps a
                        // steady flow without starving the proxy of CPU.
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        Traffic { tally, tasks }
    }

    /// What it saw so far.
    pub fn tally(&self) -> Tally {
        self.tally.lock().expect("tally lock").clone()
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Sends `n` requests `GET path` with `headers` to `addr` on `connections`
/// keep-alive connections at once; returns the upstream that answered each
/// (all must be 200).
pub async fn send_many(
    addr: SocketAddr,
    n: usize,
    connections: usize,
    path: &str,
    headers: &[(&str, &str)],
) -> Vec<String> {
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let count = n / connections + usize::from(c < n % connections);
            let path = path.to_string();
            let headers: Vec<(String, String)> = headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            tokio::spawn(async move {
                let mut conn = crate::support::Client::http1(addr).await;
                let mut seen = Vec::with_capacity(count);
                for _ in 0..count {
                    seen.push(get_upstream(&mut conn, &path, &headers).await);
                }
                seen
            })
        })
        .collect();
    let mut seen = Vec::with_capacity(n);
    for task in tasks {
        seen.extend(task.await.expect("client task"));
    }
    seen
}

/// `GET path` with `headers` on `conn`: the upstream that answered (200 only).
pub async fn get_upstream(
    conn: &mut crate::support::Client,
    path: &str,
    headers: &[(String, String)],
) -> String {
    let mut req = crate::support::get(path);
    for (name, value) in headers {
        req.headers_mut().insert(
            header::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    let reply = conn.request(req).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    crate::support::admin::upstream_of(&reply.body)
        .unwrap_or_else(|| panic!("no upstream named in {:?}", reply.text()))
}

// ---------------------------------------------------------------------------
// Admin.

/// `DELETE path` on the admin API.
pub async fn admin_delete(addr: SocketAddr, path: &str) -> crate::support::Reply {
    let req = Request::builder()
        .method(Method::DELETE)
        .uri(path)
        .body(empty())
        .expect("valid admin request");
    admin_send(addr, req).await
}

/// `GET /metrics` on the admin listener, parsed.
pub async fn scrape(proxy: &Proxy) -> Scrape {
    let reply = admin_get(proxy.admin, "/metrics").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    Scrape::parse(&reply.text())
}

/// The events of service `app` with `reason`.
pub async fn events_with(proxy: &Proxy, reason: &str) -> Vec<Value> {
    proxy
        .events("app")
        .await
        .into_iter()
        .filter(|e| e["reason"] == reason)
        .collect()
}

// ---------------------------------------------------------------------------
// Prometheus text format.

/// One scrape: every sample by name and label set.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// The raw text, for failure messages.
    pub text: String,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    /// Parses the text format (comments skipped).
    pub fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("sample has a value");
                let value: f64 = value.parse().expect("sample value is a number");
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                    None => (series, BTreeMap::new()),
                };
                (name.to_string(), labels, value)
            })
            .collect();
        Scrape {
            text: text.to_string(),
            samples,
        }
    }

    /// The value of `name` with exactly `labels`, if present.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|(n, l, _)| n == name && *l == wanted)
            .map(|(_, _, v)| *v)
    }

    /// The value of `name` with exactly `labels`, 0 when absent (a counter
    /// series that has not been created yet).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// The label names of every sample of `name`.
    pub fn label_sets(&self, name: &str) -> Vec<Vec<String>> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, l, _)| l.keys().cloned().collect())
            .collect()
    }

    /// Whether the family `name` is announced with `# TYPE name kind`.
    pub fn has_type(&self, name: &str, kind: &str) -> bool {
        self.text
            .lines()
            .any(|l| l == format!("# TYPE {name} {kind}"))
    }
}

/// `a="x",b="y"` (values without escaped quotes or commas, as ours are).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').expect("label is k=v");
            (k.to_string(), v.trim_matches('"').to_string())
        })
        .collect()
}
