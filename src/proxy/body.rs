//! Body types of the hot path.
//!
//! [`RequestBody`] streams the client's body to the upstream, enforcing
//! `max_body_bytes`. [`ResponseBody`] streams the upstream's body to the
//! client (or carries a short synthetic answer); it owns the request's
//! in-flight guard and, through the [`UpstreamBody`], its upstream
//! connection, so the pool's in-flight count drops and the connection
//! returns to the keep-alive pool exactly when the body ends. Neither
//! buffers: each frame is passed on as it arrives.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::http1::{self, UpstreamBody};
use crate::snapshot::InflightGuard;

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
    /// None: no body (a request sent again after its own body ended).
    inner: Option<Incoming>,
    /// Bytes still allowed, when `max_body_bytes` is set.
    remaining: Option<u64>,
    limit: u64,
}

impl RequestBody {
    /// Wraps `inner`; `limit` is `max_body_bytes` (`None` = unlimited).
    pub fn new(inner: Incoming, limit: Option<u64>) -> RequestBody {
        RequestBody {
            inner: Some(inner),
            remaining: limit,
            limit: limit.unwrap_or(0),
        }
    }

    /// No body: what a bodyless request is sent again with.
    pub fn empty() -> RequestBody {
        RequestBody {
            inner: None,
            remaining: None,
            limit: 0,
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
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = match Pin::new(inner).poll_frame(cx) {
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
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
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
    /// The upstream's body, which hands its connection back at its end.
    /// `guard` is `None` once the body has ended.
    Upstream {
        body: UpstreamBody<RequestBody>,
        guard: Option<InflightGuard>,
    },
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

    /// The upstream's body, counted in flight by `guard` until it ends,
    /// when its connection goes back to the server's pool.
    pub fn upstream(body: UpstreamBody<RequestBody>, guard: InflightGuard) -> ResponseBody {
        let mut this = ResponseBody {
            kind: Kind::Upstream {
                body,
                guard: Some(guard),
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

    /// The body has ended: the connection goes back to the pool, then the
    /// guard drops.
    fn finish(&mut self) {
        if let Kind::Upstream { body, guard } = &mut self.kind {
            if let Some(guard) = guard.take() {
                if let Some(conn) = body.take_conn() {
                    guard.server().upstream.release(conn);
                }
            }
        }
    }
}

/// A broken upstream body: the server gets a strike when it was its fault
/// (not the proxy's cut, nor a client whose request body failed while the
/// response streamed). The connection is not reused: its body did not end.
fn strike(guard: &InflightGuard, e: &http1::Error) {
    let server = guard.server();
    if e.is_server_fault() && server.upstream.strike() {
        tracing::debug!(server = server.upstream.label(), error = %e, "upstream keeps failing");
        server.report_failure(format!("response body failed: {e}"));
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = http1::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let (body, guard) = match &mut this.kind {
            Kind::Full(bytes) => return Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream { body, guard } => (body, guard),
        };
        let polled = body.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Err(e))) => {
                if let Some(guard) = guard.as_ref() {
                    strike(guard, e);
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
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Upstream { body, .. } => body.size_hint(),
        }
    }
}
