//! The data-plane listener: accepts client connections, tells HTTP/2 (h2c
//! with prior knowledge, or h2 by ALPN) from HTTP/1.1 by the first bytes,
//! serves each with hyper, and hands every request to [`forward::forward`].
//!
//! An HTTP/1.1 connection idle for 250 ms is parked: hyper's state (read
//! and write buffers, the request future) is dropped and the connection waits
//! for its next byte holding only the stream; the next request starts a new
//! hyper connection with the bytes already read. Upgrades (101) hand the
//! stream and any bytes read behind the request to the tunnel.
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

pub mod body;
pub mod conn;
pub mod error;
mod failpoint;
pub mod forward;
pub mod headers;
pub mod middleware;
pub mod stream;
pub mod tunnel;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::StatusCode;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::config::Limits;
use crate::metrics::OpenConnection;
use crate::rt::flag::{Flag, Flags};
use crate::snapshot::Routing;
use conn::{ClientIo, ConnTrack, Tracked};
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
/// hyper's smallest allowed read buffer.
const H1_MIN_BUF: usize = 8192;
/// An HTTP/1.1 connection idle this long lets go of hyper's state (its
/// read and write buffers and futures). Short, so that a burst of
/// connections that go idle does not hold that memory for long; a request
/// on a parked connection costs a new hyper connection, far less than the
/// memory is worth (see `docs/performance.md`).
const PARK_AFTER: Duration = Duration::from_millis(250);
/// How long closing a client stream may take (TLS close_notify, FIN).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

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
///   hyper-util's auto builder does not expose the exact `max_header_size`),
///   or to more than 100 header lines. That limit is hyper's default and
///   is left unset: set, even to 100, hyper fills two 100-slot arrays slot
///   by slot for every request head instead of using them uninitialized.
///   Its own `header_read_timeout` is off: [`conn::ClientIo`] runs the head
///   timer with the SPEC's semantics.
/// - HTTP/2: h2 answers 431 to a header list over `max_header_list_size`
///   (set from `max_header_bytes`; hyper's default is 16 MiB), counts
///   CONTINUATION frames against that size, sends GOAWAY after too many
///   pending-accept resets or locally caused resets, and bounds the
///   connection window (1 MiB) so unread request data is capped.
fn builder(limits: &Limits) -> Builders {
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(H1_MIN_BUF))
        .keep_alive(true);
    let header_list = u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_header_list_size(header_list)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESET_STREAMS)
        .keep_alive_interval(Some(H2_KEEP_ALIVE_INTERVAL))
        .keep_alive_timeout(H2_KEEP_ALIVE_TIMEOUT);
    Builders { h1, h2 }
}

/// What the service answers.
type Reply = http::Response<Tracked<body::ResponseBody>>;

/// hyper's connection builders, one per protocol.
#[derive(Debug)]
struct Builders {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
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
    let drain = Flags::default();
    // Each connection holds a receiver: the drain waits until all are gone.
    let (open_tx, open_rx) = watch::channel(());
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
            drain: drain.register(),
            _open: open_rx.clone(),
            head_timeout: limits.header_read_timeout,
            idle_timeout: limits.idle_timeout,
            max_head: limits.max_header_bytes,
        };
        let open = OpenConnection::new(&open);
        tokio::spawn(async move {
            // A panic past the request's own guard (in hyper, in a response
            // body being streamed) ends this connection only: the response
            // had started, so the close is what the client gets.
            let served = AssertUnwindSafe(conn.serve(stream)).catch_unwind().await;
            if let Err(panic) = served {
                conn.routing.load().unrouted.panics.inc();
                tracing::error!(
                    client.addr = %conn.client.addr, panic = forward::panic_message(&*panic),
                    "panic in a client connection: closed"
                );
            }
            drop(open);
            drop(permit);
        });
    }
    drop(listener);
    drop(open_rx);
    drain.raise_for_good();
    if tokio::time::timeout(grace, open_tx.closed()).await.is_err() {
        tracing::warn!(grace = ?grace, "connections still open at the end of the drain");
    }
}

/// How an HTTP/1.1 connection's service ended.
enum H1End {
    /// The connection is closed, or to be dropped.
    Closed,
    /// A 101 was written: the stream goes to the tunnel, with the bytes
    /// already read behind the upgrade request.
    Upgraded(Bytes),
}

/// What one accepted client connection needs.
struct Conn {
    client: ClientInfo,
    routing: Arc<Routing>,
    builder: Arc<Builders>,
    /// Set when the listener drains.
    drain: Arc<Flag>,
    /// Held while the connection is open: the drain waits for all of them.
    _open: watch::Receiver<()>,
    head_timeout: Duration,
    idle_timeout: Duration,
    max_head: usize,
}

impl Conn {
    /// Serves the connection, after a TLS handshake on the HTTPS listener.
    ///
    /// The task's future stays small (it is what a parked connection
    /// holds): the TLS and HTTP/2 paths, much larger, are boxed, and every
    /// step borrows the connection's state rather than taking it (an async
    /// fn keeps room for each argument it takes by value, beside where it
    /// moves it to, for as long as it runs).
    fn serve(&self, stream: TcpStream) -> impl Future<Output = ()> + Send + '_ {
        if self.client.proto != "https" {
            return futures_util::future::Either::Left(self.serve_io(stream));
        }
        futures_util::future::Either::Right(Box::pin(self.serve_tls(stream)))
    }

    async fn serve_tls(&self, stream: TcpStream) {
        // The TLS config of the current snapshot: a reload with a new
        // certificate applies to the next handshake.
        let Some(tls) = self.routing.load().tls.clone() else {
            return;
        };
        let accept = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
        match tokio::time::timeout(self.head_timeout, accept).await {
            // A TLS-ALPN-01 validation ends with the handshake (RFC 8737).
            Ok(Ok(stream))
                if stream.get_ref().1.alpn_protocol() == Some(crate::tls::ACME_TLS_ALPN) => {}
            Ok(Ok(stream)) => self.serve_io(stream).await,
            Ok(Err(e)) => {
                tracing::debug!(client.addr = %self.client.addr, error = %e, "TLS handshake failed")
            }
            Err(_) => tracing::debug!(client.addr = %self.client.addr, "TLS handshake timed out"),
        }
    }

    async fn serve_io<I>(&self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let track = ConnTrack::new();
        let unrouted = self.routing.load().unrouted.clone();
        let mut io = ClientIo::new(
            io,
            track.clone(),
            self.head_timeout,
            self.max_head,
            unrouted.clone(),
        );
        // The sniff's result is read before anything else is awaited: a
        // match on it would keep it in the task through the connection.
        let http2 = match io.sniff().await {
            Ok(Some(http2)) => http2,
            // Closed, or cut by the head timer, before a request began.
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(client.addr = %self.client.addr, error = %e, "client connection failed");
                return;
            }
        };
        let result = if http2 {
            Box::pin(self.serve_h2(io, &track)).await
        } else {
            match self.serve_h1(&mut io, &track).await {
                Ok(H1End::Upgraded(read_ahead)) => {
                    // The 101 is written: the stream belongs to the tunnel now.
                    if let Some(tx) = track.take_upgrade() {
                        let _ = tx.send(conn::Upgraded {
                            io: Box::new(io),
                            read_ahead,
                        });
                    }
                    Ok(())
                }
                Ok(H1End::Closed) => Ok(()),
                Err(e) => Err(e),
            }
        };
        if let Err(e) = result {
            if let Some(status) = hyper_answer(&e, &track) {
                // hyper answered on its own; it happens before the head is
                // complete, so it is counted as answered at once.
                unrouted.record(status, Duration::ZERO);
            }
            tracing::debug!(client.addr = %self.client.addr, error = %e, "client connection closed");
        }
    }

    /// The service hyper calls for each request on this connection.
    fn service(
        &self,
        track: &Arc<ConnTrack>,
    ) -> impl hyper::service::Service<
        Request<Incoming>,
        Response = Reply,
        Error = Infallible,
        Future = Pin<Box<dyn Future<Output = Result<Reply, Infallible>> + Send>>,
    > + Clone
           + Send
           + Unpin
           + 'static {
        let routing = self.routing.clone();
        let client = self.client;
        let track = track.clone();
        service_fn(move |req: Request<Incoming>| {
            let active = track.start();
            // An upgrade to a protocol not in `allowed_upgrades` goes on
            // as a plain request (its `Upgrade` removed): no 101 can follow.
            let upgrade = (req.version() == http::Version::HTTP_11
                && headers::is_upgrade(req.headers())
                && crate::config::upgrade_allowed(
                    req.headers()
                        .get_all(http::header::UPGRADE)
                        .iter()
                        .map(|v| v.as_bytes()),
                    &routing.load().config.server.allowed_upgrades,
                ))
            .then(|| track.expect_upgrade());
            let asked_upgrade = upgrade.is_some();
            let resp = match acme_answer(&routing, &req) {
                Some(answer) => futures_util::future::Either::Left(std::future::ready(answer)),
                None => futures_util::future::Either::Right(forward::forward(
                    &routing,
                    req,
                    client,
                    upgrade,
                    active.refusal(),
                )),
            };
            let track = track.clone();
            // A combinator rather than an `async` block: awaiting the
            // forwarding future inside a block would hold it twice, and this
            // is boxed (hyper hands the stream back only with an `Unpin`
            // future) and so copied, once per request. Keep it within 1 KiB:
            // the allocator serves blocks that size from its small-block
            // path (its size is in `docs/performance.md`).
            Box::pin(resp.map(move |resp| {
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                    track.mark_upgraded();
                } else if asked_upgrade {
                    track.take_upgrade();
                }
                Ok::<_, Infallible>(resp.map(|body| Tracked::new(body, active)))
            })) as Pin<Box<dyn Future<Output = Result<Reply, Infallible>> + Send>>
        })
    }

    /// HTTP/1.1. A connection idle for [`PARK_AFTER`] lets go of hyper's
    /// state (its buffers and the request future) and waits for its next
    /// byte with only the stream; the next request starts a fresh hyper
    /// connection with the bytes already read.
    async fn serve_h1<I>(
        &self,
        io: &mut ClientIo<I>,
        track: &Arc<ConnTrack>,
    ) -> hyper::Result<H1End>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let drain = &self.drain;
        let mut draining = drain.is_set();
        // One idle timer while hyper holds the connection: it parks at
        // PARK_AFTER, or closes if `idle_timeout` comes first. (Every branch
        // is polled at each wake-up, so one timer less is per request.)
        let first_idle = PARK_AFTER.min(self.idle_timeout);
        let closes_first = self.idle_timeout <= PARK_AFTER;
        loop {
            // In a block of its own: the emptied box is freed as it ends,
            // not held while the connection is parked.
            let (read_buf, parking, closing) = {
                let mut conn = Box::new(
                    self.builder
                        .h1
                        .serve_connection(TokioIo::new(&mut *io), self.service(track)),
                );
                let (mut parking, mut closing) = (false, false);
                loop {
                    tokio::select! {
                        biased;
                        done = std::future::poll_fn(|cx| Pin::new(&mut *conn).poll_without_shutdown(cx)) => {
                            done?;
                            break;
                        }
                        _ = drain.raised(), if !draining => {
                            draining = true;
                            closing = true;
                            Pin::new(&mut *conn).graceful_shutdown();
                        }
                        _ = conn::idle(track, first_idle), if !closing && !parking => {
                            if closes_first {
                                tracing::debug!(client.addr = %self.client.addr, timeout = ?self.idle_timeout, "idle connection: closing");
                                closing = true;
                            } else {
                                parking = true;
                            }
                            Pin::new(&mut *conn).graceful_shutdown();
                        }
                    }
                }
                // The service and hyper's buffers go here; an empty
                // `read_buf` would keep hyper's read buffer alive, so only
                // bytes are kept.
                (conn.into_parts().read_buf, parking, closing)
            };
            let read_ahead = (!read_buf.is_empty()).then_some(read_buf);
            if io.upgraded() {
                return Ok(H1End::Upgraded(read_ahead.unwrap_or_default()));
            }
            if closing || draining || !parking {
                // Drained, idle, or hyper closed it (the client did, or a
                // request or response said `Connection: close`).
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, io.shutdown()).await;
                return Ok(H1End::Closed);
            }
            if let Some(bytes) = read_ahead {
                // A request began as hyper let go.
                io.replay(bytes);
                continue;
            }
            // Parked: only the stream is held.
            io.park();
            let mut first = [0u8; 1];
            tokio::select! {
                read = io.read(&mut first) => match read {
                    Ok(0) | Err(_) => return Ok(H1End::Closed),
                    Ok(_) => io.replay_with_available(first[0]).await,
                },
                _ = drain.raised(), if !draining => {
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, io.shutdown()).await;
                    return Ok(H1End::Closed);
                }
                _ = conn::idle(track, self.idle_timeout) => {
                    tracing::debug!(client.addr = %self.client.addr, timeout = ?self.idle_timeout, "idle connection: closing");
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, io.shutdown()).await;
                    return Ok(H1End::Closed);
                }
            }
        }
    }

    /// HTTP/2 (prior knowledge, or by ALPN).
    async fn serve_h2<I>(&self, io: ClientIo<I>, track: &Arc<ConnTrack>) -> hyper::Result<()>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let drain = &self.drain;
        let conn = self
            .builder
            .h2
            .serve_connection(TokioIo::new(io), self.service(track));
        tokio::pin!(conn);
        let (mut draining, mut idle_closing) = (drain.is_set(), false);
        if draining {
            conn.as_mut().graceful_shutdown();
        }
        loop {
            tokio::select! {
                done = conn.as_mut() => return done,
                _ = drain.raised(), if !draining => {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
                // GOAWAY, then close when the peer has answered its PING.
                _ = conn::idle(track, self.idle_timeout), if !idle_closing => {
                    tracing::debug!(client.addr = %self.client.addr, timeout = ?self.idle_timeout, "idle connection: closing");
                    idle_closing = true;
                    if !draining {
                        conn.as_mut().graceful_shutdown();
                    }
                }
                // A peer that ignores GOAWAY and stays idle is dropped.
                _ = async {
                    tokio::time::sleep(self.idle_timeout).await;
                    conn::idle(track, self.idle_timeout).await;
                }, if idle_closing => {
                    tracing::debug!(client.addr = %self.client.addr, "idle connection did not close: dropped");
                    return Ok(());
                }
            }
        }
    }
}

/// The status hyper wrote itself before failing the connection with `e`,
/// when it wrote one (hyper's `on_error` for the server role): 400 for a
/// malformed request line or header, 431 for a head too large or with too
/// many header lines, 414 for an overlong request target. hyper's error
/// tells a parse error, and a too-large one, by type; which of the two
/// "too large" answers it wrote is what the framing scan saw of the
/// refused head (`track`). (hyper's guard against its own bugs,
/// `Parse::Internal`, answers nothing but is a parse error to its type; it
/// cannot happen on what httparse has validated.)
fn hyper_answer(e: &hyper::Error, track: &ConnTrack) -> Option<u16> {
    if !e.is_parse() || e.is_parse_version_h2() || e.is_parse_status() {
        return None;
    }
    Some(if !e.is_parse_too_large() {
        400
    } else if track.refused_uri_too_long() {
        414
    } else {
        431
    })
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

#[cfg(test)]
mod tests;

/// The key authorization of an HTTP-01 validation in progress, when `req`
/// asks for one; other requests under the prefix are forwarded.
fn acme_answer(
    routing: &Routing,
    req: &Request<Incoming>,
) -> Option<http::Response<body::ResponseBody>> {
    let token = req
        .uri()
        .path()
        .strip_prefix(crate::tls::ACME_HTTP_PREFIX)?;
    let answer = routing.load().issued.http_answer(token)?;
    tracing::info!(token, "answering an ACME HTTP-01 validation");
    http::Response::builder()
        .header(http::header::CONTENT_TYPE, "application/octet-stream")
        .body(body::ResponseBody::full(answer.as_bytes().to_vec()))
        .ok()
}
