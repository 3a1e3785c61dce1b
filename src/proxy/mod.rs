//! The data-plane listener: accepts client connections, serves HTTP/1.1 and
//! HTTP/2 (h2c with prior knowledge) on each with hyper-util's auto builder,
//! and hands every request to [`forward::forward`].
//!
//! Each connection runs under the `[server.limits]`: at most
//! `max_connections` are open (more wait in the accept queue), a request head
//! must arrive within `header_read_timeout` and fit in `max_header_bytes`
//! ([`conn`]), and a connection with nothing in flight for `idle_timeout` is
//! closed. HTTP/2 peers are bounded in concurrent streams, header list size,
//! resets and CONTINUATION frames (see [`builder`]).
//!
//! Reads the routing snapshot only; never imports the control plane. On
//! shutdown it stops accepting and lets open connections finish their
//! in-flight requests.

pub mod conn;
pub mod error;
pub mod forward;
pub mod h1scan;
pub mod headers;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::config::Limits;
use crate::snapshot::Routing;
use conn::{ClientIo, ConnTrack, Tracked};
use error::ProxyError;
use forward::ClientInfo;

/// Most concurrent HTTP/2 streams per client connection (hyper's default is
/// 200; nginx uses 128). Each may hold a send buffer, so this bounds memory.
const H2_MAX_CONCURRENT_STREAMS: u32 = 128;
/// Streams an HTTP/2 client may reset before the server accepted them,
/// before it gets GOAWAY: the "rapid reset" flood (CVE-2023-44487). h2's
/// default, pinned here so an upgrade cannot loosen it silently.
const H2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// Streams the server may reset because the client misbehaved, before the
/// client gets GOAWAY ("MadeYouReset", RUSTSEC-2024-0003). hyper's default.
const H2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;
/// HTTP/2 keep-alive ping interval, and how long an answer may take.
const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Most header lines in an HTTP/1.1 head (hyper's default; more: 431).
const H1_MAX_HEADERS: usize = 100;
/// hyper's smallest allowed read buffer.
const H1_MIN_BUF: usize = 8192;

/// A listener ready to serve.
#[derive(Debug)]
pub struct ProxyListener {
    /// The bound socket.
    pub listener: TcpListener,
    /// `"http"` or `"https"`.
    pub proto: &'static str,
}

/// The connection builder. What hyper and h2 already guard, and what is set
/// here:
///
/// - HTTP/1.1: hyper answers 400 to a malformed request line or header,
///   obs-fold, whitespace before a colon, differing Content-Lengths or a
///   final encoding other than chunked, and 431 to a head that fills its
///   read buffer, sized from `max_header_bytes` (hyper's floor is 8 KiB;
///   hyper-util's auto builder does not expose the exact `max_header_size`).
///   Its own `header_read_timeout` is off: [`conn::ClientIo`] runs the head
///   timer with the SPEC's semantics.
/// - HTTP/2: h2 answers 431 to a header list over `max_header_list_size`
///   (set from `max_header_bytes`; hyper's default is 16 MiB), counts
///   CONTINUATION frames against that size, sends GOAWAY after too many
///   pending-accept resets or locally caused resets, and bounds the
///   connection window (1 MiB) so unread request data is capped.
fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let header_list = u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(H1_MIN_BUF))
        .max_headers(H1_MAX_HEADERS)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_header_list_size(header_list)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESET_STREAMS)
        .keep_alive_interval(Some(H2_KEEP_ALIVE_INTERVAL))
        .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT);
    builder
}

/// Serves `listener` until `shutdown` turns true, then waits (at most
/// `grace`) for open connections to finish their requests.
pub async fn serve(
    listener: ProxyListener,
    routing: Arc<Routing>,
    limits: Limits,
    open: prometheus::IntGauge,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let builder = Arc::new(builder(&limits));
    // Each connection holds a receiver: the drain waits until all are gone.
    let (drain_tx, drain_rx) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let proto = listener.proto;
    loop {
        // Beyond max_connections, new connections wait in the accept queue.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            client: ClientInfo { addr: peer, proto },
            routing: routing.clone(),
            builder: builder.clone(),
            drain: drain_rx.clone(),
            head_timeout: limits.header_read_timeout,
            idle_timeout: limits.idle_timeout,
            max_head: limits.max_header_bytes,
        };
        let open = OpenConnection::new(&open);
        tokio::spawn(async move {
            conn.serve(stream).await;
            drop(open);
            drop(permit);
        });
    }
    drop(listener);
    drop(drain_rx);
    let _ = drain_tx.send(true);
    if tokio::time::timeout(grace, drain_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?grace, "connections still open at the end of the drain");
    }
}

/// What one accepted client connection needs.
struct Conn {
    client: ClientInfo,
    routing: Arc<Routing>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    /// Turns true when the listener drains.
    drain: watch::Receiver<bool>,
    head_timeout: Duration,
    idle_timeout: Duration,
    max_head: usize,
}

impl Conn {
    /// Serves the connection, after a TLS handshake on the HTTPS listener.
    async fn serve(self, stream: TcpStream) {
        if self.client.proto != "https" {
            return self.serve_io(stream).await;
        }
        // The TLS config of the current snapshot: a reload with a new
        // certificate applies to the next handshake.
        let Some(tls) = self.routing.load().tls.clone() else {
            return;
        };
        let accept = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
        match tokio::time::timeout(self.head_timeout, accept).await {
            Ok(Ok(stream)) => self.serve_io(stream).await,
            Ok(Err(e)) => {
                tracing::debug!(client.addr = %self.client.addr, error = %e, "TLS handshake failed")
            }
            Err(_) => tracing::debug!(client.addr = %self.client.addr, "TLS handshake timed out"),
        }
    }

    async fn serve_io<I>(self, io: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            client,
            routing,
            builder,
            mut drain,
            head_timeout,
            idle_timeout,
            max_head,
        } = self;
        let track = ConnTrack::new();
        let unrouted = routing.load().unrouted.clone();
        let io = ClientIo::new(io, track.clone(), head_timeout, max_head, unrouted.clone());
        let requests = track.clone();
        let service = service_fn(move |req| {
            let routing = routing.clone();
            let track = requests.clone();
            let active = track.start();
            async move {
                let resp = if let Some(why) = active.refusal() {
                    forward::refuse(&routing, ProxyError::BadRequest(why))
                } else {
                    forward::forward(&routing, req, client).await
                };
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                    track.mark_upgraded();
                }
                Ok::<_, Infallible>(resp.map(|body| Tracked::new(body, active)))
            }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(conn);
        let (mut draining, mut idle_closing) = (false, false);
        let done = loop {
            tokio::select! {
                done = conn.as_mut() => break done,
                _ = drain.changed(), if !draining => {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
                // HTTP/1.1 closes at once; HTTP/2 sends GOAWAY and closes
                // when the peer has answered its PING.
                _ = conn::idle(&track, idle_timeout), if !idle_closing => {
                    tracing::debug!(client.addr = %client.addr, timeout = ?idle_timeout, "idle connection: closing");
                    idle_closing = true;
                    if !draining {
                        conn.as_mut().graceful_shutdown();
                    }
                }
                // A peer that ignores GOAWAY and stays idle is dropped.
                _ = async {
                    tokio::time::sleep(idle_timeout).await;
                    conn::idle(&track, idle_timeout).await;
                }, if idle_closing => {
                    tracing::debug!(client.addr = %client.addr, "idle connection did not close: dropped");
                    break Ok(());
                }
            }
        };
        if let Err(e) = done {
            if let Some(status) = hyper_answer(&*e) {
                // hyper answered on its own; it happens before the head is
                // complete, so it is counted as answered at once.
                unrouted.record(status, Duration::ZERO);
            }
            tracing::debug!(client.addr = %client.addr, error = %e, "client connection closed");
        }
    }
}

/// The status hyper wrote itself before failing the connection with `e`,
/// when it wrote one: 400 for a malformed request line or header, 431 for a
/// head with too many header lines, 414 for an overlong URI (hyper's
/// `on_error` for the server role).
fn hyper_answer(e: &(dyn std::error::Error + 'static)) -> Option<u16> {
    let e = e.downcast_ref::<hyper::Error>()?;
    if !e.is_parse() || e.is_parse_version_h2() || e.is_parse_status() {
        return None;
    }
    let text = e.to_string();
    if text.contains("internal error") {
        return None;
    }
    Some(if !e.is_parse_too_large() {
        400
    } else if text.contains("URI too long") {
        414
    } else {
        431
    })
}

/// Counts one open connection in a gauge until dropped.
#[derive(Debug)]
pub struct OpenConnection(prometheus::IntGauge);

impl OpenConnection {
    /// Counts a connection in `gauge`.
    pub fn new(gauge: &prometheus::IntGauge) -> OpenConnection {
        gauge.inc();
        OpenConnection(gauge.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Binds a listener.
///
/// # Errors
///
/// The bind error.
pub async fn bind(addr: SocketAddr, proto: &'static str) -> std::io::Result<ProxyListener> {
    Ok(ProxyListener {
        listener: TcpListener::bind(addr).await?,
        proto,
    })
}
