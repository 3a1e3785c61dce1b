//! Body types of the hot path.
//!
//! [`RequestBody`] streams the client's body to the upstream, enforcing
//! `max_body_bytes`. [`ResponseBody`] streams the upstream's body to the
//! client (or carries a short synthetic answer); it owns the request's
//! in-flight guard and its upstream connection, so the pool's in-flight count
//! drops and the connection returns to the keep-alive pool exactly when the
//! body ends. Neither buffers: each frame is passed on as it arrives.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::snapshot::InflightGuard;
use crate::upstream::direct::{DirectBody, DirectError};
use crate::upstream::Conn;

/// Why a request body could not be streamed to the upstream.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    /// Reading from the client failed.
    #[error("reading request body: {0}")]
    Client(#[from] hyper::Error),
    /// The body is larger than `max_body_bytes`.
    #[error("request body larger than {limit} bytes")]
    TooLarge {
        /// The configured limit.
        limit: u64,
    },
}

/// The client's request body on its way to the upstream.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    /// Bytes still allowed, when `max_body_bytes` is set.
    remaining: Option<u64>,
    limit: u64,
}

impl RequestBody {
    /// Wraps `inner`; `limit` is `max_body_bytes` (`None` = unlimited).
    pub fn new(inner: Incoming, limit: Option<u64>) -> RequestBody {
        RequestBody {
            inner,
            remaining: limit,
            limit: limit.unwrap_or(0),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let (Some(remaining), Some(data)) = (this.remaining.as_mut(), frame.data_ref()) {
            let len = data.len() as u64;
            if len > *remaining {
                return Poll::Ready(Some(Err(RequestBodyError::TooLarge { limit: this.limit })));
            }
            *remaining -= len;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response on its way to the client.
#[derive(Debug)]
pub struct ResponseBody {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// A synthetic answer, taken on first poll.
    Full(Option<Bytes>),
    /// The upstream's body from a hyper connection. `lease` is `None` once
    /// the body has ended.
    Upstream {
        body: Incoming,
        lease: Option<Lease>,
    },
    /// The upstream's body from a direct connection, which it hands to the
    /// lease at its end.
    Direct {
        body: DirectBody<RequestBody>,
        lease: Option<Lease>,
    },
}

/// Why an upstream's response body broke off.
#[derive(Debug, thiserror::Error)]
pub enum ResponseBodyError {
    /// On a hyper connection.
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    /// On a direct connection.
    #[error("reading response body: {0}")]
    Direct(#[from] DirectError),
}

impl ResponseBodyError {
    /// The server's doing: not the proxy's own cut (the end of a drain),
    /// nor a client whose request body failed while the response streamed.
    fn is_server_fault(&self) -> bool {
        match self {
            ResponseBodyError::Hyper(e) => !e.is_canceled(),
            ResponseBodyError::Direct(e) => e.is_server_fault(),
        }
    }
}

/// What an upstream response holds until its body ends.
#[derive(Debug)]
pub struct Lease {
    /// Counts the request in flight on its pool and server.
    pub guard: InflightGuard,
    /// The connection to give back to the pool; `None` when it must not be
    /// reused (an upgrade, or a response the server will close) or, for a
    /// direct connection, until the body hands it over.
    pub conn: Option<Conn>,
}

impl Lease {
    fn finish(self) {
        if let Some(conn) = self.conn {
            self.guard.server().upstream.release(conn);
        }
    }

    /// A broken upstream body: the connection is not reused, the guard drops
    /// with the body, and the server gets a strike when it was its fault.
    fn fail(&mut self, e: &ResponseBodyError) {
        self.conn = None;
        let server = self.guard.server();
        if e.is_server_fault() && server.upstream.strike() {
            tracing::debug!(server = server.upstream.label(), error = %e, "upstream keeps failing");
            server.report_failure(format!("response body failed: {e}"));
        }
    }
}

impl ResponseBody {
    /// A complete, small body (synthetic answers).
    pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
        ResponseBody {
            kind: Kind::Full(Some(bytes.into())),
        }
    }

    /// No body.
    pub fn empty() -> ResponseBody {
        ResponseBody {
            kind: Kind::Full(None),
        }
    }

    /// The upstream's body, releasing `lease` when it ends.
    pub fn upstream(body: Incoming, lease: Lease) -> ResponseBody {
        let mut this = ResponseBody {
            kind: Kind::Upstream {
                lease: Some(lease),
                body,
            },
        };
        this.finish_if_ended();
        this
    }

    /// The upstream's body on a direct connection, releasing `lease` (with
    /// the connection) when it ends.
    pub fn direct(body: DirectBody<RequestBody>, lease: Lease) -> ResponseBody {
        let mut this = ResponseBody {
            kind: Kind::Direct {
                lease: Some(lease),
                body,
            },
        };
        this.finish_if_ended();
        this
    }

    fn finish_if_ended(&mut self) {
        if self.is_end_stream() {
            self.finish();
        }
    }

    /// The body has ended: the lease is released, with the connection.
    fn finish(&mut self) {
        match &mut self.kind {
            Kind::Full(_) => {}
            Kind::Upstream { lease, .. } => {
                if let Some(lease) = lease.take() {
                    lease.finish();
                }
            }
            Kind::Direct { body, lease } => {
                if let Some(mut lease) = lease.take() {
                    lease.conn = body.take_conn().map(Conn::Direct);
                    lease.finish();
                }
            }
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = ResponseBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let (polled, lease) = match &mut this.kind {
            Kind::Full(bytes) => return Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream { body, lease } => {
                let polled = Pin::new(body).poll_frame(cx);
                (polled.map_err(ResponseBodyError::from), lease)
            }
            Kind::Direct { body, lease } => {
                let polled = body.poll_frame(cx);
                (polled.map_err(ResponseBodyError::from), lease)
            }
        };
        match &polled {
            Poll::Ready(Some(Err(e))) => {
                if let Some(lease) = lease.as_mut() {
                    lease.fail(e);
                }
            }
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Ok(_))) => this.finish_if_ended(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Upstream { body, .. } => body.is_end_stream(),
            Kind::Direct { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Upstream { body, .. } => body.size_hint(),
            Kind::Direct { body, .. } => body.size_hint(),
        }
    }
}
