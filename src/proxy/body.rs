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
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::stream::{self, Track};
use crate::http1::{self, UpstreamBody};
use crate::metrics::Outcome;
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

/// Why a response body stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum ResponseBodyError {
    /// The upstream's body failed.
    #[error(transparent)]
    Upstream(#[from] http1::Error),
    /// Cut at the end of its pool's drain (or of the shutdown's). An HTTP/2
    /// client gets its stream reset with the code inside, `REFUSED_STREAM`,
    /// which tells it to retry (hyper resets a stream with the first h2
    /// reason among the causes of its body's error); an HTTP/1.1 client's
    /// response stays visibly incomplete.
    #[error("cut at the end of the pool's drain")]
    Cut(#[source] h2::Error),
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

// One per response and never stored beside others but in its connection:
// boxing the upstream's variant would cost an allocation per response.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Kind {
    /// A synthetic answer, taken on first poll.
    Full(Option<Bytes>),
    /// The upstream's body, which hands its connection back at its end.
    /// `guard` is `None` once the body has ended.
    Upstream {
        body: UpstreamBody<RequestBody>,
        guard: Option<InflightGuard>,
        track: Track,
        /// The event an event stream gets when its pool's drain ends
        /// (`drain_sse_event`), before its body ends properly; `None`
        /// otherwise, and once sent.
        drain_event: Option<Arc<Bytes>>,
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
    /// when its connection goes back to the server's pool. Its request
    /// started at `start`, its head came `head` after; `event_stream` says
    /// the response is a
    /// `text/event-stream`, which gets `drain_event` (when set) at the end
    /// of its pool's drain.
    pub fn upstream(
        body: UpstreamBody<RequestBody>,
        guard: InflightGuard,
        start: Instant,
        head: Duration,
        event_stream: bool,
        drain_event: Option<Arc<Bytes>>,
    ) -> ResponseBody {
        let track = Track::new(start, head, event_stream, &guard.pool().metrics.streams);
        let mut this = ResponseBody {
            kind: Kind::Upstream {
                body,
                guard: Some(guard),
                track,
                drain_event: drain_event.filter(|_| event_stream),
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
        if let Kind::Upstream {
            body, guard, track, ..
        } = &mut self.kind
        {
            if let Some(guard) = guard.take() {
                track.end(Outcome::Completed, &guard.pool().metrics.streams);
                if let Some(conn) = body.take_conn() {
                    guard.server().upstream.release(conn);
                }
            }
        }
    }
}

impl Drop for ResponseBody {
    /// A body dropped before its end: the client went away.
    fn drop(&mut self) {
        if let Kind::Upstream {
            guard: Some(guard),
            track,
            ..
        } = &mut self.kind
        {
            track.end(Outcome::ClientAbort, &guard.pool().metrics.streams);
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
    type Error = ResponseBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let (body, guard, track, drain_event) = match &mut this.kind {
            Kind::Full(bytes) => return Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream {
                body,
                guard,
                track,
                drain_event,
            } => (body, guard, track, drain_event),
        };
        let Some(g) = guard.as_ref() else {
            // Ended (or ended by the drain event).
            return Poll::Ready(None);
        };
        let polled = body.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Err(e))) => {
                strike(g, e);
                track.end(stream::outcome_of(e), &g.pool().metrics.streams);
                if e.is_cut() {
                    if let Some(event) = drain_event.take() {
                        // The event, then a proper end: the guard goes
                        // (the connection with the body: it did not end).
                        *guard = None;
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::clone(&event)))));
                    }
                    let refused = h2::Error::from(h2::Reason::REFUSED_STREAM);
                    return Poll::Ready(Some(Err(ResponseBodyError::Cut(refused))));
                }
            }
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Ok(frame))) => {
                track.frame(frame.is_data(), &g.pool().metrics.streams);
                this.finish_if_ended();
            }
            Poll::Pending => {}
        }
        polled.map_err(ResponseBodyError::Upstream)
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Upstream { body, guard, .. } => guard.is_none() || body.is_end_stream(),
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
