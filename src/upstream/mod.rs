//! Upstream connections: a keep-alive pool of HTTP/1.1 connections per
//! server ([`Upstream`]), with connect and response timeouts.
//!
//! Every request, upgrades included, goes on an [`UpstreamConn`], which
//! the request's own task drives (see [`crate::http1`]). A connection is
//! checked out for one request and comes back to the pool only when its
//! response body has been read to the end (see [`UpstreamBody::take_conn`]),
//! so a long stream never blocks the next request. Connect failures hand
//! the request back to the caller untouched, which is what makes the
//! retry-once rule safe for any method.
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

mod cutter;
mod error;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tokio::net::TcpStream;

use crate::config::ServerAddr;
use crate::http1::{self, Reached, RequestHead, UpstreamBody, UpstreamConn};
use cutter::lock;

pub use cutter::Cutter;
pub use error::UpstreamError;

/// Most idle connections kept per server.
const MAX_IDLE_PER_SERVER: usize = 512;

/// Failed requests in a row (after the connection was made) that mark a
/// server down. One is not enough: a single reset may be the network's.
pub const STRIKES: u32 = 3;

/// How often a return checks the oldest idle connection. Nothing else
/// watches an idle connection, so those the server closed while they sat
/// at the bottom of the stack would pile up; a check polls the socket's
/// readiness under the runtime's lock, too dear for every request.
const CHECK_OLDEST_EVERY: u32 = 8;

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
    /// Idle connections.
    idle: Mutex<Idle>,
    /// The pool's open connections, cut together at the end of a drain.
    cutter: Arc<Cutter>,
    /// Failed requests since the last good response head.
    strikes: AtomicU32,
}

/// An [`Upstream`]'s idle connections, newest last.
#[derive(Debug, Default)]
struct Idle {
    /// Boxed in the list too: a connection is boxed once for its life, not
    /// at every return.
    #[allow(clippy::vec_box)]
    conns: Vec<Box<UpstreamConn>>,
    /// Returns so far, to check the oldest at every
    /// [`CHECK_OLDEST_EVERY`]th.
    returns: u32,
}

impl Upstream {
    /// A pool for `addr`; connects lazily.
    pub fn new(addr: ServerAddr, cutter: Arc<Cutter>) -> Upstream {
        Upstream {
            label: addr.to_string(),
            ip: addr.ip(),
            addr,
            idle: Mutex::default(),
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

    /// Sends the request in `slot` on a pooled or new connection, writing
    /// `head` (its head as it was encoded when the request was prepared),
    /// and waits for the response head. The response's body owns the
    /// connection until its end; after a 101 to a request that asked for an
    /// upgrade, [`UpstreamBody::into_switched`] hands over the socket.
    ///
    /// The request stays in `slot` until it is written to a connection:
    /// after an error, `slot` holds it again exactly when it never left (no
    /// connection could be made), which is what makes a retry elsewhere
    /// safe. A pooled connection that the server closed while it sat idle
    /// fails before anything was read: the request then goes on the next
    /// one when that is safe (nothing was written, or the method is
    /// idempotent and no body was taken).
    ///
    /// # Panics
    ///
    /// If `slot` is empty: there is nothing to send.
    pub async fn send<B>(
        &self,
        slot: &mut Option<Request<B>>,
        head: &RequestHead,
        timeouts: &Timeouts,
    ) -> Result<Response<UpstreamBody<B>>, UpstreamError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let idempotent = slot
            .as_ref()
            .expect("Upstream::send needs a request")
            .method()
            .is_idempotent();
        // Nothing is kept across the awaits but what they need: this future
        // is part of every request's.
        while let Some(conn) = self.checkout() {
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
        // Boxed: a new connection is the rare case, and its future would
        // otherwise make every request's future that much larger.
        let stream = Box::pin(self.connect(timeouts.connect)).await?;
        let conn = UpstreamConn::new(stream, self.cutter.flag());
        let sent = self.exchange(conn, slot, head, timeouts.response).await;
        sent.map_err(|(error, _)| {
            *slot = None;
            error
        })
    }

    /// One request on one connection, up to the response head; the request
    /// leaves `slot` with its answer (the response body sends what is left
    /// of the request body). `head` is what is written first.
    async fn exchange<B>(
        &self,
        mut conn: Box<UpstreamConn>,
        slot: &mut Option<Request<B>>,
        head: &RequestHead,
        timeout: Duration,
    ) -> Result<Response<UpstreamBody<B>>, (UpstreamError, Reached)>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Some(req) = slot.as_mut() else {
            unreachable!("send checked the slot");
        };
        let head = conn
            .round_trip(req, head, timeout)
            .await
            .map_err(|(source, reached)| {
                let addr = self.label.clone();
                let error = match source {
                    http1::Error::TimedOut => UpstreamError::ResponseTimeout { addr, timeout },
                    source => UpstreamError::Request { addr, source },
                };
                (error, reached)
            })?;
        self.clear_strikes();
        let Some(req) = slot.take() else {
            unreachable!("the request was in the slot");
        };
        let body = UpstreamBody::new(conn, &head, req.into_body());
        Ok(head.response.map(|()| body))
    }

    /// Pops idle connections until one the server has not closed.
    fn checkout(&self) -> Option<Box<UpstreamConn>> {
        loop {
            let mut conn = lock(&self.idle).conns.pop()?;
            if conn.is_reusable() {
                return Some(conn);
            }
        }
    }

    /// Gives a connection whose response was read to the end back to the pool.
    pub fn release(&self, conn: Box<UpstreamConn>) {
        let mut idle = lock(&self.idle);
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

    /// Drops every idle connection (used when a server leaves the config).
    pub fn clear_idle(&self) {
        lock(&self.idle).conns.clear();
    }

    async fn connect(&self, timeout: Duration) -> Result<TcpStream, UpstreamError> {
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
mod tests;
