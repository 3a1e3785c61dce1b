//! Shared helpers of the integration tests: real hyper upstreams, a real
//! cutover on `127.0.0.1:0` with its state in a temp dir, an HTTP/1.1 and
//! h2c client, and time bounds.
//!
//! Everything listens on loopback ports chosen by the OS; nothing is written
//! outside a `TempDir`. Each test binary uses a subset of these helpers.

#![allow(dead_code)]

pub mod admin;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

/// The time bound of one test.
pub const BOUND: Duration = Duration::from_secs(10);

/// Runs `fut`, panicking if it takes longer than `dur`.
pub async fn within<F: Future>(dur: Duration, fut: F) -> F::Output {
    match tokio::time::timeout(dur, fut).await {
        Ok(out) => out,
        Err(_) => panic!("test did not finish within its bound of {dur:?}"),
    }
}

/// Checks `check` until it holds, at most `tries` times `every` apart;
/// panics naming `what` if it never does. For convergence only: never a
/// bare sleep in a test.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    const TRIES: u32 = 100;
    const EVERY: Duration = Duration::from_millis(20);
    for _ in 0..TRIES {
        if check().await {
            return;
        }
        tokio::time::sleep(EVERY).await;
    }
    panic!("never true after {TRIES} tries {EVERY:?} apart: {what}");
}

/// Logs to the test's output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

// ---------------------------------------------------------------------------
// Clock shared by upstreams and clients (same process).

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds since a process-wide epoch: upstreams stamp streamed events
/// with it so a client can tell when each event was produced.
pub fn now_us() -> u64 {
    epoch().elapsed().as_micros() as u64
}

/// The instant of a [`now_us`] stamp.
pub fn instant_of(us: u64) -> Instant {
    epoch() + Duration::from_micros(us)
}

// ---------------------------------------------------------------------------
// Bodies.

/// The body type of test requests and upstream responses.
pub type TestBody = BoxBody<Bytes, Infallible>;

/// An empty body.
pub fn empty() -> TestBody {
    Empty::new().boxed()
}

/// A complete body.
pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into()).boxed()
}

/// A body fed from a channel: each message is one frame, sent when it arrives.
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

/// A streaming body and the sender that feeds it; the body ends when the
/// sender is dropped. No size hint, so HTTP/1.1 sends it chunked.
pub fn channel_body() -> (mpsc::Sender<Bytes>, TestBody) {
    let (tx, rx) = mpsc::channel(4);
    (tx, ChannelBody { rx }.boxed())
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .rx
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// Chunk size of [`PatternBody`].
const PATTERN_CHUNK: usize = 64 * 1024;
/// Period of the pattern: a prime, so chunks are not all alike.
const PATTERN_PERIOD: usize = 251;

fn pattern_block() -> &'static Bytes {
    static BLOCK: OnceLock<Bytes> = OnceLock::new();
    BLOCK.get_or_init(|| {
        (0..PATTERN_CHUNK + PATTERN_PERIOD)
            .map(|i| (i % PATTERN_PERIOD) as u8)
            .collect::<Vec<u8>>()
            .into()
    })
}

/// Bytes `offset..offset + len` of the deterministic pattern (`len` at most 64 KiB).
fn pattern_chunk(offset: u64, len: usize) -> Bytes {
    let start = (offset % PATTERN_PERIOD as u64) as usize;
    pattern_block().slice(start..start + len)
}

/// A deterministic body of `total` bytes, produced lazily in 64 KiB chunks.
pub struct PatternBody {
    offset: u64,
    total: u64,
    sized: bool,
}

impl PatternBody {
    /// With an exact size hint (HTTP/1.1 sends a Content-Length).
    pub fn sized(total: u64) -> TestBody {
        PatternBody {
            offset: 0,
            total,
            sized: true,
        }
        .boxed()
    }

    /// Without a size hint (HTTP/1.1 sends it chunked).
    pub fn chunked(total: u64) -> TestBody {
        PatternBody {
            offset: 0,
            total,
            sized: false,
        }
        .boxed()
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.offset == this.total {
            return Poll::Ready(None);
        }
        let len = (this.total - this.offset).min(PATTERN_CHUNK as u64) as usize;
        let chunk = pattern_chunk(this.offset, len);
        this.offset += len as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.sized && self.offset == self.total
    }

    fn size_hint(&self) -> SizeHint {
        if self.sized {
            SizeHint::with_exact(self.total - self.offset)
        } else {
            SizeHint::default()
        }
    }
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 (hex) of the first `total` bytes of the pattern, computed
/// once per size and binary (hashing is slow in unoptimized builds).
pub fn pattern_sha256(total: u64) -> String {
    static CACHE: Mutex<BTreeMap<u64, String>> = Mutex::new(BTreeMap::new());
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    cache
        .entry(total)
        .or_insert_with(|| compute_pattern_sha256(total))
        .clone()
}

fn compute_pattern_sha256(total: u64) -> String {
    let mut hasher = Sha256::new();
    let mut offset = 0;
    while offset < total {
        let len = (total - offset).min(PATTERN_CHUNK as u64) as usize;
        hasher.update(pattern_chunk(offset, len));
        offset += len as u64;
    }
    hex(&hasher.finalize())
}

/// Reads a body to its end, hashing as it goes: (SHA-256 hex, length).
pub async fn hash_body<B>(mut body: B) -> (String, u64)
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("body frame");
        if let Some(data) = frame.data_ref() {
            hasher.update(data);
            len += data.len() as u64;
        }
    }
    (hex(&hasher.finalize()), len)
}

// ---------------------------------------------------------------------------
// Upstream.

struct UpstreamState {
    name: String,
    version: String,
    hits: AtomicUsize,
    connections: AtomicUsize,
}

/// A real hyper server on `127.0.0.1:0` (HTTP/1.1, and h2c with prior
/// knowledge so the transparency tests can talk to it directly).
///
/// Handlers:
/// - any other path: echo, a JSON [`Echo`] of the request (method, path,
///   query, headers, body) and the upstream's name;
/// - `/health`: `{"status": "ok", "version": ...}`;
/// - `/sse?n=N&ms=M`: N server-sent events M ms apart (default 5, 200 ms),
///   each `data: {"upstream", "i", "t_us"}` stamped with [`now_us`];
/// - `/slow?ms=M`: waits M ms (default 1000) before the head, then echoes;
/// - `/status/NNN`: answers status NNN;
/// - `/big?n=BYTES`: the deterministic pattern, streamed chunked;
/// - `/upload`: reads the body, answers `{"sha256", "len", "content_length",
///   "transfer_encoding"}`;
/// - `/duplex`: streams each request body chunk back as it arrives;
/// - `/ws`: WebSocket echo;
/// - `/hop-by-hop`: a response carrying hop-by-hop headers.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<UpstreamState>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Starts an upstream called `name` reporting version `1.0.0`.
    pub async fn start(name: &str) -> Upstream {
        Upstream::start_with_version(name, "1.0.0").await
    }

    /// Starts an upstream called `name` reporting `version` on `/health`.
    pub async fn start_with_version(name: &str, version: &str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let state = Arc::new(UpstreamState {
            name: name.to_string(),
            version: version.to_string(),
            hits: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
        });
        let accept_state = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accept_state.connections.fetch_add(1, Ordering::SeqCst);
                let state = accept_state.clone();
                let service = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(req, state).await) }
                });
                tokio::spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream { addr, state, task }
    }

    /// Its name, as reported by the echo handler.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Requests served, `/health` excepted.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }
}

/// What the echo handler saw.
#[derive(Debug, serde::Deserialize)]
pub struct Echo {
    /// The upstream's name.
    pub upstream: String,
    /// The request method.
    pub method: String,
    /// The request path.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// Every header, lowercase name → values in order.
    pub headers: BTreeMap<String, Vec<String>>,
    /// The request body (UTF-8, lossy).
    pub body: String,
}

impl Echo {
    /// The values of header `name`, joined with `, `.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(|v| v.join(", "))
    }

    /// Whether header `name` reached the upstream.
    pub fn has(&self, name: &str) -> bool {
        self.headers.contains_key(&name.to_ascii_lowercase())
    }
}

fn query_param(uri: &Uri, key: &str) -> Option<u64> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| v.parse().ok())?
    })
}

fn json_response(status: StatusCode, value: serde_json::Value) -> Response<TestBody> {
    let mut resp = Response::new(full(format!("{value}\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

async fn handle(req: Request<Incoming>, state: Arc<UpstreamState>) -> Response<TestBody> {
    let path = req.uri().path().to_string();
    if path == "/health" {
        return json_response(
            StatusCode::OK,
            serde_json::json!({"status": "ok", "version": state.version}),
        );
    }
    state.hits.fetch_add(1, Ordering::SeqCst);
    if let Some(code) = path.strip_prefix("/status/") {
        let status = code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
        let mut resp = Response::new(full(format!("status {}\n", status.as_u16())));
        *resp.status_mut() = status;
        return resp;
    }
    match path.as_str() {
        "/sse" => sse(&req, &state),
        "/slow" => {
            let ms = query_param(req.uri(), "ms").unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            echo(req, &state).await
        }
        "/big" => {
            let n = query_param(req.uri(), "n").unwrap_or(1 << 20);
            Response::new(PatternBody::chunked(n))
        }
        "/upload" => upload(req).await,
        "/duplex" => duplex(req),
        "/ws" => websocket(req),
        "/hop-by-hop" => hop_by_hop(),
        _ => echo(req, &state).await,
    }
}

async fn echo(req: Request<Incoming>, state: &UpstreamState) -> Response<TestBody> {
    let (parts, body) = req.into_parts();
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &parts.headers {
        headers
            .entry(name.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": e.to_string()}),
            )
        }
    };
    json_response(
        StatusCode::OK,
        serde_json::json!({
            "upstream": state.name,
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "version": format!("{:?}", parts.version),
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        }),
    )
}

fn sse(req: &Request<Incoming>, state: &UpstreamState) -> Response<TestBody> {
    let n = query_param(req.uri(), "n").unwrap_or(5);
    let interval = Duration::from_millis(query_param(req.uri(), "ms").unwrap_or(200));
    let name = state.name.clone();
    let (tx, body) = channel_body();
    tokio::spawn(async move {
        for i in 0..n {
            if i > 0 {
                tokio::time::sleep(interval).await;
            }
            let data = serde_json::json!({"upstream": name, "i": i, "t_us": now_us()});
            if tx
                .send(Bytes::from(format!("data: {data}\n\n")))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

async fn upload(req: Request<Incoming>) -> Response<TestBody> {
    let header_of = |name: header::HeaderName| {
        req.headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let content_length = header_of(header::CONTENT_LENGTH);
    let transfer_encoding = header_of(header::TRANSFER_ENCODING);
    let (sha256, len) = hash_body(req.into_body()).await;
    json_response(
        StatusCode::OK,
        serde_json::json!({
            "sha256": sha256,
            "len": len,
            "content_length": content_length,
            "transfer_encoding": transfer_encoding,
        }),
    )
}

fn duplex(req: Request<Incoming>) -> Response<TestBody> {
    let (tx, body) = channel_body();
    let mut incoming = req.into_body();
    tokio::spawn(async move {
        while let Some(Ok(frame)) = incoming.frame().await {
            if let Ok(data) = frame.into_data() {
                if tx.send(data).await.is_err() {
                    return;
                }
            }
        }
    });
    Response::new(body)
}

fn websocket(mut req: Request<Incoming>) -> Response<TestBody> {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        let mut resp = Response::new(full("expected a WebSocket handshake\n"));
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        return resp;
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                if ws.send(msg).await.is_err() {
                    return;
                }
            } else if msg.is_close() {
                return;
            }
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("accept key is base64"),
    );
    resp
}

/// The hop-by-hop headers `/hop-by-hop` sends (besides `Connection`).
pub const RESPONSE_HOP_BY_HOP: [&str; 5] = [
    "x-internal",
    "keep-alive",
    "proxy-authenticate",
    "proxy-connection",
    "trailer",
];

fn hop_by_hop() -> Response<TestBody> {
    let mut resp = Response::new(full("hop\n"));
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("x-internal"));
    h.insert("x-internal", HeaderValue::from_static("secret"));
    h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    h.insert(
        header::PROXY_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"upstream\""),
    );
    h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
    h.insert(header::TRAILER, HeaderValue::from_static("x-checksum"));
    h.insert("x-end-to-end", HeaderValue::from_static("kept"));
    resp
}

// ---------------------------------------------------------------------------
// cutover.

/// A running cutover, its state in a temp dir.
pub struct Cutover {
    /// `server.listen` (HTTP/1.1 and h2c).
    pub addr: SocketAddr,
    /// The directory holding the config path and the state file.
    pub dir: tempfile::TempDir,
    running: Option<cutover::Running>,
}

impl Cutover {
    /// Parses `toml` (routes, services, `[server.limits]`...) with
    /// `[server] listen = "127.0.0.1:0"` and a `[state]` path in a temp dir
    /// put in front, and spawns the proxy. `toml` must not have its own
    /// `[server]` or `[state]` table.
    pub async fn start(toml: &str) -> Cutover {
        init_tracing();
        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join("cutover-state.json");
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[state]\npath = {}\n\n{toml}",
            toml_string(&state.display().to_string()),
        );
        let path = dir.path().join("proxy.toml");
        let config = match cutover::config::parse(&text, &path) {
            Ok(config) => config,
            Err(e) => panic!("test config is invalid:\n{e}\n--- config ---\n{text}"),
        };
        let running = cutover::spawn(config).await.expect("spawn cutover");
        Cutover {
            addr: running.http_addr,
            dir,
            running: Some(running),
        }
    }

    /// Stops accepting, drains and waits for the proxy to finish.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }
}

/// A TOML basic string.
pub fn toml_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// `["127.0.0.1:1", ...]`.
pub fn servers(addrs: &[SocketAddr]) -> String {
    let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!("[{}]", list.join(", "))
}

/// One `[[route]]`.
pub fn route(host: Option<&str>, path_prefix: &str, service: &str) -> String {
    let host = host
        .map(|h| format!("host = {}\n", toml_string(h)))
        .unwrap_or_default();
    format!(
        "[[route]]\n{host}path_prefix = {}\nservice = {}\n\n",
        toml_string(path_prefix),
        toml_string(service)
    )
}

/// One `[service.NAME]`, blue active, with `extra` keys in its table.
pub fn service_with(name: &str, blue: &[SocketAddr], green: &[SocketAddr], extra: &str) -> String {
    format!(
        "[service.{name}]\nactive = \"blue\"\n{extra}\n\n\
         [service.{name}.pools.blue]\nservers = {}\n\n\
         [service.{name}.pools.green]\nservers = {}\n\n",
        servers(blue),
        servers(green),
    )
}

/// One `[service.NAME]`, blue active.
pub fn service(name: &str, blue: &[SocketAddr], green: &[SocketAddr]) -> String {
    service_with(name, blue, green, "")
}

/// Every path to service `app`, whose blue and green pools have one server each.
pub fn blue_green(blue: &Upstream, green: &Upstream) -> String {
    route(None, "/", "app") + &service("app", &[blue.addr], &[green.addr])
}

/// An address nobody listens on: a port bound and released.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

// ---------------------------------------------------------------------------
// Client.

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<TestBody>),
    H2(hyper::client::conn::http2::SendRequest<TestBody>),
}

/// One client connection: HTTP/1.1, or HTTP/2 with prior knowledge (h2c).
pub struct Client {
    addr: SocketAddr,
    sender: Sender,
}

impl Client {
    /// An HTTP/1.1 connection to `addr`.
    pub async fn http1(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("http1 handshake");
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Client {
            addr,
            sender: Sender::H1(sender),
        }
    }

    /// An HTTP/2 prior-knowledge (h2c) connection to `addr`.
    pub async fn h2(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Client {
            addr,
            sender: Sender::H2(sender),
        }
    }

    /// Sends `req` and returns the response head; the body streams.
    ///
    /// HTTP/1.1: a missing Host is set to the address. HTTP/2: an
    /// origin-form URI is made absolute (`http://addr/...`).
    pub async fn send(&mut self, req: Request<TestBody>) -> Response<Incoming> {
        self.try_send(req).await.expect("request")
    }

    /// As [`Client::send`], with the error (a reset stream, a closed
    /// connection) returned rather than a panic.
    pub async fn try_send(
        &mut self,
        mut req: Request<TestBody>,
    ) -> hyper::Result<Response<Incoming>> {
        match &mut self.sender {
            Sender::H1(sender) => {
                if !req.headers().contains_key(header::HOST) {
                    let host = HeaderValue::from_str(&self.addr.to_string()).expect("addr");
                    req.headers_mut().insert(header::HOST, host);
                }
                sender.ready().await?;
                sender.send_request(req).await
            }
            Sender::H2(sender) => {
                if req.uri().authority().is_none() {
                    let pq = req
                        .uri()
                        .path_and_query()
                        .map(|pq| pq.as_str().to_string())
                        .unwrap_or_else(|| "/".into());
                    *req.uri_mut() = format!("http://{}{pq}", self.addr)
                        .parse()
                        .expect("absolute uri");
                }
                *req.version_mut() = Version::HTTP_2;
                sender.ready().await?;
                sender.send_request(req).await
            }
        }
    }

    /// Sends `req` and reads the whole answer.
    pub async fn request(&mut self, req: Request<TestBody>) -> Reply {
        Reply::read(self.send(req).await).await
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> Reply {
        self.request(get(path)).await
    }
}

/// `GET path` with an empty body.
pub fn get(path: &str) -> Request<TestBody> {
    request(Method::GET, path, empty())
}

/// A request of `method` to `path` with `body`.
pub fn request(method: Method, path: &str, body: TestBody) -> Request<TestBody> {
    Request::builder()
        .method(method)
        .uri(path)
        .body(body)
        .expect("valid request")
}

/// `GET path` on a new HTTP/1.1 connection to `addr`.
pub async fn fetch(addr: SocketAddr, path: &str) -> Reply {
    Client::http1(addr).await.get(path).await
}

/// A complete answer.
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The protocol version.
    pub version: Version,
    /// The headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Reply {
    /// Reads `resp` to its end.
    pub async fn read(resp: Response<Incoming>) -> Reply {
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("response body").to_bytes();
        Reply {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        }
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }

    /// The echo handler's answer.
    pub fn echo(&self) -> Echo {
        assert_eq!(self.status, StatusCode::OK, "body: {:?}", self.text());
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not an echo ({e}): {:?}", self.text()))
    }
}

/// One server-sent event as a client received it.
#[derive(Debug)]
pub struct Event {
    /// When its last byte arrived.
    pub at: Instant,
    /// Its `data:` line.
    pub data: String,
}

impl Event {
    /// The data as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {:?}", self.data))
    }

    /// How long after the upstream produced it (its `t_us` stamp) it arrived.
    pub fn latency(&self) -> Duration {
        let produced = self.json()["t_us"].as_u64().expect("t_us stamp");
        self.at.saturating_duration_since(instant_of(produced))
    }
}

/// Reads server-sent events from `body` as they arrive, stopping after `max`
/// events (or at the end of the body).
pub async fn read_events(body: &mut Incoming, max: usize) -> Vec<Event> {
    let mut events = Vec::new();
    let mut buf = BytesMut::new();
    while events.len() < max {
        let Some(frame) = body.frame().await else {
            break;
        };
        let frame = frame.expect("event stream frame");
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let at = Instant::now();
        buf.extend_from_slice(&data);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let raw = buf.split_to(end + 2);
            let text = String::from_utf8_lossy(&raw);
            let data = text
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect::<Vec<_>>()
                .join("\n");
            events.push(Event { at, data });
        }
    }
    events
}

/// Writes `request` on a new TCP connection and reads one answer: until
/// its head and `Content-Length` body are in, or the server closes.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write request");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.expect("read answer");
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if length.is_some_and(|len| answer.len() >= end + 4 + len) {
                break;
            }
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}
