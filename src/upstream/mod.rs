//! Upstream connections: keep-alive pools of HTTP/1.1 connections per
//! server, with connect and response timeouts.
//!
//! A request goes on a [`direct`] connection, which the request's own task
//! drives, unless it asks for an upgrade: those go through hyper's client,
//! whose connections each run in a task. The two kinds are pooled apart.
//!
//! A connection is checked out for one request and comes back to the pool
//! only when its response body has been read to the end (see
//! [`crate::body::ResponseBody`]), so a long stream never blocks the next
//! request. Connect failures hand the request back to the caller untouched,
//! which is what makes the retry-once rule safe for any method.
//!
//! A server that accepted the connection but then failed the request
//! (garbage instead of HTTP, a reset, no answer in time, a body cut short)
//! collects a strike; [`STRIKES`] in a row, with no good response head in
//! between, and the caller reports it to the control plane, which marks it
//! down as it does on a refused connection.
//!
//! Part of the hot path: reads nothing but its own pool, which is a short,
//! per-server critical section (push/pop of an idle connection), and one
//! atomic strike counter.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::AbortHandle;

use crate::body::RequestBody;
use crate::config::ServerAddr;
use crate::rt::flag::{Flag, Flags};

pub mod direct;

use direct::{DirectBody, DirectConn, DirectError, Reached, RequestHead};

/// Most idle connections kept per server.
const MAX_IDLE_PER_SERVER: usize = 512;

/// Failed requests in a row (after the connection was made) that mark a
/// server down. One is not enough: a single reset may be the network's.
pub const STRIKES: u32 = 3;

/// Why a request to an upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The TCP connection could not be made; the request never left.
    #[error("connect to {addr} failed: {source}")]
    Connect {
        /// The server.
        addr: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The TCP connection was not made within `connect_timeout`.
    #[error("connect to {addr} timed out after {timeout:?}")]
    ConnectTimeout {
        /// The server.
        addr: String,
        /// The configured timeout.
        timeout: Duration,
    },
    /// No response head within `response_timeout`.
    #[error("no response from {addr} within {timeout:?}")]
    ResponseTimeout {
        /// The server.
        addr: String,
        /// The configured timeout.
        timeout: Duration,
    },
    /// The connection failed while the request was sent or the response head read.
    #[error("request to {addr} failed: {source}")]
    Request {
        /// The server.
        addr: String,
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
    /// A direct connection failed while the request was sent or the
    /// response head read.
    #[error("request to {addr} failed: {source}")]
    Direct {
        /// The server.
        addr: String,
        /// What failed.
        #[source]
        source: DirectError,
    },
}

/// What is open on a pool at the end of a drain: the tasks holding its
/// hyper connections and tunnels, and its direct connections.
///
/// Cutting aborts the tasks, which drops their futures and with them the
/// connections, and raises each direct connection's flag, which its next
/// read (or the waker of a read in progress) sees. Nothing polls a shared
/// signal, so the cut costs the request path nothing until it happens.
#[derive(Debug, Default)]
pub struct Cutter {
    tasks: Mutex<Vec<AbortHandle>>,
    conns: Flags,
}

impl Cutter {
    /// Adds a task to cut. Handles of tasks that have ended are dropped
    /// whenever the list would otherwise grow.
    pub fn register(&self, task: AbortHandle) {
        let mut tasks = lock(&self.tasks);
        if tasks.len() == tasks.capacity() {
            tasks.retain(|t| !t.is_finished());
        }
        tasks.push(task);
    }

    /// The flag of a new direct connection, raised at the next cut.
    pub fn flag(&self) -> Arc<Flag> {
        self.conns.register()
    }

    /// Cuts everything registered so far; later ones are not affected.
    pub fn cut(&self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        self.conns.raise_all();
    }

    /// Tasks registered and not seen to end.
    #[cfg(test)]
    fn open(&self) -> usize {
        lock(&self.tasks)
            .iter()
            .filter(|t| !t.is_finished())
            .count()
    }
}

/// A panic while holding one of these locks cannot leave its Vec inconsistent.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The timeouts that apply to one upstream request.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// Until the response head.
    pub response: Duration,
}

/// One pool server's connections.
#[derive(Debug)]
pub struct Upstream {
    addr: ServerAddr,
    /// Display form, `host:port`.
    label: String,
    /// Pre-parsed when the host is an IP literal; names are resolved at each connect.
    ip: Option<SocketAddr>,
    /// Idle hyper connections (upgrades).
    idle: Mutex<Vec<http1::SendRequest<RequestBody>>>,
    /// Idle direct connections (everything else).
    idle_direct: Mutex<IdleDirect>,
    /// The pool's open connections, cut together at the end of a drain.
    cutter: Arc<Cutter>,
    /// Failed requests since the last good response head.
    strikes: AtomicU32,
}

/// An [`Upstream`]'s idle direct connections, newest last.
#[derive(Debug, Default)]
struct IdleDirect {
    /// Boxed in the list too: a connection is boxed once for its life, not
    /// at every return.
    #[allow(clippy::vec_box)]
    conns: Vec<Box<DirectConn>>,
    /// Returns so far, to check the oldest at every
    /// [`CHECK_OLDEST_EVERY`]th.
    returns: u32,
}

/// How often a return checks the oldest idle direct connection. Nothing
/// else watches an idle direct connection, so those the server closed while
/// they sat at the bottom of the stack would pile up; a check polls the
/// socket's readiness under the runtime's lock, too dear for every request.
const CHECK_OLDEST_EVERY: u32 = 8;

/// A connection checked out of an [`Upstream`]'s pool.
#[derive(Debug)]
pub enum Conn {
    /// Driven by hyper's connection task.
    Hyper(http1::SendRequest<RequestBody>),
    /// Driven by whoever reads the response (see [`direct`]).
    Direct(Box<DirectConn>),
}

/// How [`Upstream::send`] carries a request.
#[derive(Debug, Clone, Copy)]
pub enum Via<'a> {
    /// On a direct connection, which writes `head`, the request's head as
    /// it was encoded when the request was prepared.
    Direct {
        /// The encoded head.
        head: &'a RequestHead,
    },
    /// On a hyper connection: an upgrade.
    Hyper,
}

/// An upstream's answer to one request.
#[derive(Debug)]
pub enum Answer {
    /// From a hyper connection, to give back once the body ends.
    Hyper(Response<Incoming>, http1::SendRequest<RequestBody>),
    /// From a direct connection, which the body owns until its end.
    Direct(Response<DirectBody<RequestBody>>),
}

impl Answer {
    /// The response's status.
    pub fn status(&self) -> http::StatusCode {
        match self {
            Answer::Hyper(resp, _) => resp.status(),
            Answer::Direct(resp) => resp.status(),
        }
    }
}

impl Upstream {
    /// A pool for `addr`; connects lazily.
    pub fn new(addr: ServerAddr, cutter: Arc<Cutter>) -> Upstream {
        Upstream {
            label: addr.to_string(),
            ip: addr.ip(),
            addr,
            idle: Mutex::new(Vec::new()),
            idle_direct: Mutex::default(),
            cutter,
            strikes: AtomicU32::new(0),
        }
    }

    /// Counts a request that failed after its connection was made. True
    /// when that makes [`STRIKES`] in a row: the caller reports the server
    /// (and the count starts again, so reports stay rare).
    pub fn strike(&self) -> bool {
        let n = self.strikes.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= STRIKES {
            self.strikes.store(0, Ordering::Release);
            return true;
        }
        false
    }

    /// A good response head: the strikes are forgiven.
    fn clear_strikes(&self) {
        // Read first: the common case writes nothing to the shared line.
        if self.strikes.load(Ordering::Relaxed) != 0 {
            self.strikes.store(0, Ordering::Relaxed);
        }
    }

    /// The server address as configured.
    pub fn addr(&self) -> &ServerAddr {
        &self.addr
    }

    /// `host:port`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Sends the request in `slot` on a pooled or new connection and waits
    /// for the response head. `via` says which kind: a request that asks
    /// for no upgrade goes on a direct connection.
    ///
    /// The request stays in `slot` until it is written to a connection: after
    /// an error, `slot` holds it again exactly when it never left (no
    /// connection could be made), which is what makes a retry elsewhere safe.
    /// The caller's slot is the only place the request is kept while
    /// connections are tried, so the futures stay small.
    ///
    /// # Panics
    ///
    /// If `slot` is empty: there is nothing to send.
    pub async fn send(
        &self,
        slot: &mut Option<Request<RequestBody>>,
        timeouts: &Timeouts,
        via: Via<'_>,
    ) -> Result<Answer, UpstreamError> {
        assert!(slot.is_some(), "Upstream::send needs a request");
        if let Via::Direct { head } = via {
            return self
                .send_direct(slot, head, timeouts)
                .await
                .map(Answer::Direct);
        }
        // Boxed: upgrades are rare, and hyper's futures would otherwise make
        // every request's future twice as large (and so every move of it).
        Box::pin(self.send_hyper(slot, *timeouts)).await
    }

    /// [`Upstream::send`] on a hyper connection, for an upgrade.
    async fn send_hyper(
        &self,
        slot: &mut Option<Request<RequestBody>>,
        timeouts: Timeouts,
    ) -> Result<Answer, UpstreamError> {
        // A pooled connection may have been closed by the server while idle:
        // hyper then hands the request back unsent and we try the next one.
        while let Some(mut sender) = self.checkout().await {
            match self.send_on(&mut sender, slot, timeouts.response).await {
                Ok(resp) => return Ok(Answer::Hyper(resp, sender)),
                Err(error) if slot.is_none() => return Err(error),
                Err(_) => {}
            }
        }
        // Boxed: a new connection is the rare case, and its future would
        // otherwise make every request's future that much larger.
        let mut sender = Box::pin(self.connect(timeouts.connect)).await?;
        let resp = self.send_on(&mut sender, slot, timeouts.response).await?;
        Ok(Answer::Hyper(resp, sender))
    }

    /// [`Upstream::send`] on a direct connection. A pooled connection that
    /// the server closed while it sat idle fails before anything was read:
    /// the request then goes on the next one when that is safe (nothing was
    /// written, or the method is idempotent and no body was taken).
    async fn send_direct(
        &self,
        slot: &mut Option<Request<RequestBody>>,
        head: &RequestHead,
        timeouts: &Timeouts,
    ) -> Result<Response<DirectBody<RequestBody>>, UpstreamError> {
        let idempotent = slot
            .as_ref()
            .is_some_and(|req| req.method().is_idempotent());
        // Nothing is kept across the awaits but what they need: this future
        // is part of every request's.
        while let Some(conn) = self.checkout_direct() {
            let error = match self.exchange(conn, slot, head, timeouts.response).await {
                Ok(resp) => return Ok(resp),
                Err((error, Reached::Unsent)) => error,
                Err((error, Reached::Unanswered)) if idempotent => error,
                Err((error, _)) => {
                    *slot = None;
                    return Err(error);
                }
            };
            tracing::debug!(server = %self.label, error = %error, "pooled connection closed by the server; sending on another");
        }
        // Boxed, as for hyper's.
        let stream = Box::pin(self.connect_stream(timeouts.connect)).await?;
        let conn = DirectConn::new(stream, self.cutter.flag());
        let sent = self.exchange(conn, slot, head, timeouts.response).await;
        sent.map_err(|(error, _)| {
            *slot = None;
            error
        })
    }

    /// One request on one direct connection, up to the response head; the
    /// request leaves `slot` with its answer (the response body sends what
    /// is left of the request body). `head` is what is written first.
    async fn exchange(
        &self,
        mut conn: Box<DirectConn>,
        slot: &mut Option<Request<RequestBody>>,
        head: &RequestHead,
        timeout: Duration,
    ) -> Result<Response<DirectBody<RequestBody>>, (UpstreamError, Reached)> {
        let Some(req) = slot.as_mut() else {
            unreachable!("send checked the slot");
        };
        let head = conn
            .round_trip(req, head, timeout)
            .await
            .map_err(|(source, reached)| {
                let addr = self.label.clone();
                let error = match source {
                    DirectError::TimedOut => UpstreamError::ResponseTimeout { addr, timeout },
                    source => UpstreamError::Direct { addr, source },
                };
                (error, reached)
            })?;
        self.clear_strikes();
        let Some(req) = slot.take() else {
            unreachable!("the request was in the slot");
        };
        let body = DirectBody::new(conn, &head, req.into_body());
        Ok(head.response.map(|()| body))
    }

    /// Writes the request in `slot` to `conn` (at once, before any await) and
    /// waits for the response head; hyper's refusal of a connection that was
    /// not ready puts the request back.
    fn send_on<'a>(
        &'a self,
        sender: &mut http1::SendRequest<RequestBody>,
        slot: &'a mut Option<Request<RequestBody>>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Response<Incoming>, UpstreamError>> + Send + 'a {
        let sent = slot.take().map(|req| sender.try_send_request(req));
        async move {
            let Some(sent) = sent else {
                unreachable!("send_on is only called with a request in the slot");
            };
            match tokio::time::timeout(timeout, sent).await {
                Ok(Ok(resp)) => {
                    self.clear_strikes();
                    Ok(resp)
                }
                Ok(Err(mut e)) => {
                    *slot = e.take_message();
                    Err(UpstreamError::Request {
                        addr: self.label.clone(),
                        source: e.into_error(),
                    })
                }
                Err(_) => Err(UpstreamError::ResponseTimeout {
                    addr: self.label.clone(),
                    timeout,
                }),
            }
        }
    }

    /// Pops idle hyper connections until one is ready for a request.
    async fn checkout(&self) -> Option<http1::SendRequest<RequestBody>> {
        loop {
            let mut sender = lock(&self.idle).pop()?;
            if sender.is_closed() {
                continue;
            }
            // Returned at end of body; the connection task may need one more
            // poll to become ready, which this await gives it.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    /// Pops idle direct connections until one the server has not closed.
    fn checkout_direct(&self) -> Option<Box<DirectConn>> {
        loop {
            let mut conn = lock(&self.idle_direct).conns.pop()?;
            if conn.is_reusable() {
                return Some(conn);
            }
        }
    }

    /// Gives a connection whose response was read to the end back to the pool.
    pub fn release(&self, conn: Conn) {
        match conn {
            Conn::Hyper(sender) => {
                if sender.is_closed() {
                    return;
                }
                let mut idle = lock(&self.idle);
                if idle.len() < MAX_IDLE_PER_SERVER {
                    idle.push(sender);
                }
            }
            Conn::Direct(conn) => {
                let mut idle = lock(&self.idle_direct);
                idle.returns = idle.returns.wrapping_add(1);
                if idle.returns % CHECK_OLDEST_EVERY == 0
                    && idle
                        .conns
                        .first_mut()
                        .is_some_and(|oldest| !oldest.is_reusable())
                {
                    idle.conns.remove(0);
                }
                if idle.conns.len() < MAX_IDLE_PER_SERVER {
                    idle.conns.push(conn);
                }
            }
        }
    }

    /// Drops every idle connection (used when a server leaves the config).
    pub fn clear_idle(&self) {
        lock(&self.idle).clear();
        lock(&self.idle_direct).conns.clear();
    }

    async fn connect_stream(&self, timeout: Duration) -> Result<TcpStream, UpstreamError> {
        let stream = tokio::time::timeout(timeout, self.connect_tcp())
            .await
            .map_err(|_| UpstreamError::ConnectTimeout {
                addr: self.label.clone(),
                timeout,
            })?
            .map_err(|source| UpstreamError::Connect {
                addr: self.label.clone(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn connect(
        &self,
        timeout: Duration,
    ) -> Result<http1::SendRequest<RequestBody>, UpstreamError> {
        let stream = self.connect_stream(timeout).await?;
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| UpstreamError::Request {
                addr: self.label.clone(),
                source,
            })?;
        let label = self.label.clone();
        // Nothing else is polled beside the connection: a drain deadline
        // aborts the task (see [`Cutter`]), which drops and so closes it.
        let task = tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(server = %label, error = %e, "upstream connection closed");
            }
        });
        self.cutter.register(task.abort_handle());
        Ok(sender)
    }

    async fn connect_tcp(&self) -> io::Result<TcpStream> {
        if let Some(ip) = self.ip {
            return TcpStream::connect(ip).await;
        }
        // Names are resolved at every connect so a recreated container's new
        // address is picked up.
        let mut last = io::Error::new(io::ErrorKind::NotFound, "name resolved to no address");
        for addr in tokio::net::lookup_host((self.addr.host.as_str(), self.addr.port)).await? {
            match TcpStream::connect(addr).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cut_aborts_the_tasks_registered_before_it_and_no_later_one() {
        let cutter = Cutter::default();
        let before: Vec<_> = (0..3)
            .map(|_| tokio::spawn(std::future::pending::<()>()))
            .collect();
        for task in &before {
            cutter.register(task.abort_handle());
        }
        assert_eq!(cutter.open(), 3);
        cutter.cut();
        for task in before {
            let err = task.await.expect_err("a cut task ran on");
            assert!(err.is_cancelled(), "{err}");
        }
        let after = tokio::spawn(std::future::pending::<()>());
        cutter.register(after.abort_handle());
        tokio::task::yield_now().await;
        assert!(
            !after.is_finished(),
            "a task registered after the cut was cut"
        );
        assert_eq!(cutter.open(), 1);
        after.abort();
    }

    #[tokio::test]
    async fn handles_of_ended_tasks_do_not_pile_up() {
        let cutter = Cutter::default();
        for _ in 0..1000 {
            let task = tokio::spawn(async {});
            cutter.register(task.abort_handle());
            task.await.unwrap();
        }
        let kept = lock(&cutter.tasks).len();
        assert!(kept <= 4, "{kept} handles kept for tasks that ended");
    }

    /// Direct connections to a local listener, and the server's ends.
    async fn direct_conns(
        upstream: &Upstream,
        listener: &tokio::net::TcpListener,
        n: usize,
    ) -> Vec<(Box<DirectConn>, TcpStream)> {
        let mut out = Vec::new();
        for _ in 0..n {
            let (client, accepted) = tokio::join!(
                TcpStream::connect(listener.local_addr().unwrap()),
                listener.accept()
            );
            let conn = DirectConn::new(client.unwrap(), upstream.cutter.flag());
            out.push((conn, accepted.unwrap().0));
        }
        out
    }

    #[tokio::test]
    async fn idle_direct_connections_the_server_closed_are_dropped() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = Upstream::new(
            ServerAddr {
                host: addr.ip().to_string(),
                port: addr.port(),
            },
            Arc::default(),
        );
        let mut conns = direct_conns(&upstream, &listener, 3).await;
        let (newest, newest_server) = conns.pop().unwrap();
        let servers: Vec<_> = conns
            .into_iter()
            .map(|(conn, server)| {
                upstream.release(Conn::Direct(conn));
                server
            })
            .collect();
        // The server closes the two idle ones.
        drop(servers);
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Every CHECK_OLDEST_EVERY-th return checks the oldest idle
        // connection. Two returns so far: the live one goes back and forth
        // until the return before that.
        let mut live = newest;
        for _ in 2..CHECK_OLDEST_EVERY - 1 {
            upstream.release(Conn::Direct(live));
            live = upstream.checkout_direct().expect("the live connection");
            assert_eq!(
                lock(&upstream.idle_direct).conns.len(),
                2,
                "checked before its turn"
            );
        }
        upstream.release(Conn::Direct(live));
        assert_eq!(
            lock(&upstream.idle_direct).conns.len(),
            2,
            "the oldest closed one stayed"
        );
        // Checkouts take the live one, then find only the closed one.
        let taken = upstream.checkout_direct().expect("the live connection");
        assert!(
            upstream.checkout_direct().is_none(),
            "a connection the server closed was handed out"
        );
        assert!(lock(&upstream.idle_direct).conns.is_empty());
        drop((taken, newest_server));

        // A cut makes every connection of the pool unusable.
        let (conn, _server) = direct_conns(&upstream, &listener, 1).await.pop().unwrap();
        upstream.release(Conn::Direct(conn));
        upstream.cutter.cut();
        assert!(upstream.checkout_direct().is_none());
    }
}
