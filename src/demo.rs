//! `cutover demo`: the proxy in front of two built-in upstreams, blue v1 and
//! green v2, with no files and no setup.
//!
//! Each demo upstream answers `/` with the pool and version that served it,
//! `/health` with `{"version": ...}`, `/stream` with server-sent events sent
//! slowly like an LLM streaming tokens, and `/ws` with a WebSocket echo. The
//! upstreams are real HTTP servers on loopback ports chosen by the OS.
//!
//! `cutover demo-upstream` ([`run_upstream`]) serves one of them alone, the
//! agent of the compose example and the Docker tests: it stops gracefully
//! on SIGTERM (in-flight requests and streams finish, idle connections
//! close), optionally after serving a while longer, as a container with a
//! stop grace would.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, Request, Response, StatusCode};
use http_body::{Body, Frame};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

/// Tokens of the demo's `/stream` answer.
const STREAM_TOKENS: [&str; 12] = [
    "Blue",
    "-green",
    " releases",
    " move",
    " all",
    " traffic",
    " at",
    " once",
    ",",
    " and",
    " back",
    ".",
];
/// Pause between two streamed tokens.
const TOKEN_INTERVAL: Duration = Duration::from_millis(250);

/// A body fed from a channel: each message is sent as one frame as soon as
/// it arrives.
#[derive(Debug)]
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    /// A body and the sender that feeds it, `capacity` messages ahead; the
    /// body ends when the sender is dropped. It has no size hint, so
    /// HTTP/1.1 sends it chunked.
    pub fn channel(capacity: usize) -> (mpsc::Sender<Bytes>, ChannelBody) {
        let (tx, rx) = mpsc::channel(capacity);
        (tx, ChannelBody { rx })
    }
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
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

/// A body of the demo upstream.
#[derive(Debug)]
pub enum DemoBody {
    /// A complete answer.
    Full(Option<Bytes>),
    /// A streamed answer.
    Stream(ChannelBody),
}

impl Body for DemoBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            DemoBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            DemoBody::Stream(s) => Pin::new(s).poll_frame(cx),
        }
    }
}

/// How `cutover demo-upstream` serves.
#[derive(Debug, Clone)]
pub struct UpstreamOptions {
    /// The pool it names in its answers.
    pub pool: String,
    /// The version it reports.
    pub version: String,
    /// How long it keeps serving after SIGTERM before it stops accepting.
    pub stop_delay: Duration,
    /// After this many requests other than `/health`, it answers them 503.
    pub fail_after: Option<u64>,
}

/// Starts a demo upstream for `pool` reporting `version`, on `addr`
/// (`127.0.0.1:0` for any free port). Returns the bound address; the server
/// runs until the runtime stops.
///
/// # Errors
///
/// The bind error.
pub async fn start_upstream(
    addr: SocketAddr,
    pool: &'static str,
    version: &'static str,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let service = service_fn(move |req| async move {
                Ok::<_, Infallible>(handle(req, pool, version).await)
            });
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(local)
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<DemoBody> {
    let mut resp = Response::new(DemoBody::Full(Some(Bytes::from(body))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}

async fn handle(
    req: Request<Incoming>,
    pool: &'static str,
    version: &'static str,
) -> Response<DemoBody> {
    match req.uri().path() {
        "/health" => text(
            StatusCode::OK,
            "application/json",
            format!("{{\"status\":\"ok\",\"pool\":\"{pool}\",\"version\":\"{version}\"}}\n"),
        ),
        "/stream" => stream(pool, version),
        "/ws" => websocket(req, pool),
        path => text(
            StatusCode::OK,
            "application/json",
            format!(
                "{{\"pool\":\"{pool}\",\"version\":\"{version}\",\"path\":{}}}\n",
                serde_json::Value::from(path)
            ),
        ),
    }
}

/// Server-sent events, one token every [`TOKEN_INTERVAL`], then `done`.
fn stream(pool: &'static str, version: &'static str) -> Response<DemoBody> {
    let (tx, body) = ChannelBody::channel(4);
    tokio::spawn(async move {
        for (i, token) in STREAM_TOKENS.iter().enumerate() {
            let data =
                serde_json::json!({"pool": pool, "version": version, "i": i, "token": token});
            if tx
                .send(Bytes::from(format!("data: {data}\n\n")))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(TOKEN_INTERVAL).await;
        }
        let _ = tx
            .send(Bytes::from_static(b"event: done\ndata: [DONE]\n\n"))
            .await;
    });
    let mut resp = Response::new(DemoBody::Stream(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    resp
}

/// WebSocket echo: answers the handshake, then sends every text or binary
/// message back.
fn websocket(mut req: Request<Incoming>, pool: &'static str) -> Response<DemoBody> {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return text(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "expected a WebSocket handshake\n".into(),
        );
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
        tracing::debug!(pool, "demo websocket closed");
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut resp = Response::new(DemoBody::Full(None));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("upgrade"),
    );
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

/// Longest wait, once a demo upstream stops, for its requests in flight.
const UPSTREAM_DRAIN: Duration = Duration::from_secs(10);

/// Runs one demo upstream for `pool` reporting `version` on `listen` until
/// `shutdown` resolves; then it keeps serving for `stop_delay`, stops
/// accepting, lets what is in flight finish (at most 10 s) and returns. It
/// logs how many requests it served and when the last one arrived.
///
/// # Errors
///
/// The bind error.
pub async fn run_upstream(
    listen: SocketAddr,
    options: UpstreamOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    let UpstreamOptions {
        pool,
        version,
        stop_delay,
        fail_after,
    } = options;
    let pages = Arc::new(AtomicU64::new(0));

    let listener = TcpListener::bind(listen).await?;
    // One upstream per process, serving until the process ends.
    let pool: &'static str = Box::leak(pool.into_boxed_str());
    let version: &'static str = Box::leak(version.into_boxed_str());
    tracing::info!(listen = %listener.local_addr()?, pool, version, "demo upstream serving");
    let served = Arc::new(AtomicU64::new(0));
    let last = Arc::new(AtomicU64::new(0));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    let mut stop_at: Option<tokio::time::Instant> = None;
    loop {
        let stop = async {
            match stop_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let (served, last, pages) = (served.clone(), last.clone(), pages.clone());
                let service = service_fn(move |req: Request<Incoming>| {
                    served.fetch_add(1, Ordering::Relaxed);
                    last.store(unix_nanos(), Ordering::Relaxed);
                    let failing = req.uri().path() != "/health"
                        && fail_after.is_some_and(|n| pages.fetch_add(1, Ordering::Relaxed) >= n);
                    async move {
                        if failing {
                            let body = format!("{pool} {version}: failing on purpose (--fail-after)\n");
                            return Ok::<_, Infallible>(text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", body));
                        }
                        Ok::<_, Infallible>(handle(req, pool, version).await)
                    }
                });
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                tokio::spawn(graceful.watch(conn));
            }
            () = &mut shutdown, if stop_at.is_none() => {
                tracing::info!(delay = ?stop_delay, "demo upstream stopping");
                stop_at = Some(tokio::time::Instant::now() + stop_delay);
            }
            () = stop => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(UPSTREAM_DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("demo upstream: requests still in flight at the end of the drain");
    }
    tracing::info!(
        requests = served.load(Ordering::Relaxed),
        last_request_unix_ns = last.load(Ordering::Relaxed),
        "demo upstream stopped"
    );
    Ok(())
}

/// Nanoseconds since the Unix epoch, now.
fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The demo's config: one service `demo`, blue and green with one server each.
pub fn config_text(
    listen: SocketAddr,
    admin: SocketAddr,
    blue: SocketAddr,
    green: SocketAddr,
    dir: &Path,
) -> String {
    format!(
        r#"[server]
listen = "{listen}"

[admin]
listen = "{admin}"
socket = "{socket}"

[state]
path = "{state}"

[[route]]
path_prefix = "/"
service = "demo"

[service.demo]
active = "blue"
drain_timeout = "30s"
sticky = {{ header = "X-Session-Id" }}
preview = {{ header = "X-Cutover-Pool" }}

[service.demo.health]
path = "/health"
interval = "1s"
timeout = "500ms"
healthy_threshold = 1
unhealthy_threshold = 2

[service.demo.rollback]
max_error_rate = 0.05
max_p99 = "2s"
window = "60s"
min_requests = 20
cooldown = "1m"
max_per_hour = 3

[[service.demo.canary.stages]]
weight = 10
hold = "10s"
max_error_rate = 0.01
max_p99 = "1s"
min_requests = 20

[[service.demo.canary.stages]]
weight = 50
hold = "10s"
max_error_rate = 0.01
max_p99 = "1s"
min_requests = 20

[service.demo.pools.blue]
servers = ["{blue}"]

[service.demo.pools.green]
servers = ["{green}"]
"#,
        state = dir.join("cutover-state.json").display(),
        socket = dir.join("cutover.sock").display(),
    )
}

/// Runs the demo until `shutdown` resolves.
///
/// # Errors
///
/// When a listener cannot be bound (say, 8080 is taken: use `--listen`).
pub async fn run(
    listen: SocketAddr,
    admin: SocketAddr,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let blue = start_upstream(loopback, "blue", "v1")
        .await
        .context("starting the blue demo upstream")?;
    let green = start_upstream(loopback, "green", "v2")
        .await
        .context("starting the green demo upstream")?;
    let dir = std::env::temp_dir().join(format!("cutover-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("demo.toml");
    let text = config_text(listen, admin, blue, green, &dir);
    let config = crate::config::parse(&text, &path)
        .map_err(|e| anyhow::anyhow!("demo config is invalid:\n{e}"))?;
    let listeners = crate::server::Listeners::bind(&config)
        .await
        .with_context(|| format!("the demo needs {listen} (choose another with --listen)"))?;
    let http = listeners.http_addr();
    let admin = listeners.admin_addr().unwrap_or(admin);
    let socket = dir.join("cutover.sock");
    print_guide(http, admin, blue, green, &socket);
    crate::server::run(config, listeners, shutdown).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn print_guide(
    http: SocketAddr,
    admin: SocketAddr,
    blue: SocketAddr,
    green: SocketAddr,
    socket: &Path,
) {
    let ctl = format!("cutover ctl --socket {}", socket.display());
    println!("cutover demo: proxy on http://{http}, admin API on http://{admin}");
    println!("  dashboard on http://{admin}/ (open it in a browser)");
    println!("  blue  (v1) upstream on http://{blue}");
    println!("  green (v2) upstream on http://{green}");
    println!();
    println!("Try the traffic:");
    println!("  curl -s http://{http}/                                  # answered by the active pool (blue)");
    println!("  curl -sN http://{http}/stream                           # server-sent events, token by token");
    println!("  curl -s -H 'X-Cutover-Pool: green' http://{http}/       # preview green before any user sees it");
    println!();
    println!("Then release green and undo it (`cargo run --release --` in place of `cutover` from a checkout):");
    println!("  {ctl} status");
    println!("  {ctl} switch demo --to green --expect-version v2   # health-gated, atomic");
    println!(
        "  {ctl} wait-drained demo --timeout 30s              # old pool has nothing in flight"
    );
    println!("  {ctl} rollback demo                                # instant undo");
    println!("  {ctl} events demo");
    println!("  {ctl} canary demo start                         # staged: 10% then 50% of requests, then promote");
    println!("  curl -s http://{admin}/metrics                    # Prometheus");
    println!("  curl -s http://{admin}/api/v1/status              # the same over HTTP");
    println!();
    println!("Press Ctrl-C to stop.");
}
