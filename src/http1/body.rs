//! A response body read off its upstream connection, which it owns until
//! the body's end; it sends what is left of the request body as it goes.

use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::conn::{Switched, UpstreamConn};
use super::decode::{Decoded, Decoder};
use super::error::Error;
use super::response::{Framing, ResponseHead};

/// A response body read from an [`UpstreamConn`], which it owns until the
/// end. `B` is the request's body: what is left of it is sent as this body
/// is read, when the server answered before it had all of it.
#[derive(Debug)]
pub struct UpstreamBody<B> {
    conn: Option<Box<UpstreamConn>>,
    decoder: Decoder,
    keep_alive: bool,
    /// The response switched the connection to another protocol (101).
    switched: bool,
    /// An error held back for one turn (see [`UpstreamBody::poll_frame`]).
    failed: Option<Error>,
    request: B,
}

impl<B> UpstreamBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// The body that follows `head` on `conn`, whose request's body is
    /// `request` (what is left of it).
    pub fn new(conn: Box<UpstreamConn>, head: &ResponseHead, request: B) -> UpstreamBody<B> {
        UpstreamBody {
            conn: Some(conn),
            decoder: Decoder::new(head.framing),
            keep_alive: head.keep_alive,
            switched: head.framing == Framing::Switched,
            failed: None,
            request,
        }
    }

    /// Whether the whole body has been read.
    pub fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    /// Exact for a `Content-Length` body.
    pub fn size_hint(&self) -> SizeHint {
        self.decoder.size_hint()
    }

    /// The connection, when the body has ended and the connection can carry
    /// another request: the whole request was sent too, and nothing
    /// followed the response.
    pub fn take_conn(&mut self) -> Option<Box<UpstreamConn>> {
        let mut conn = self.conn.take()?;
        if !(self.decoder.is_done() && self.keep_alive && conn.is_between_exchanges()) {
            return None;
        }
        conn.shrink_for_idle();
        Some(conn)
    }

    /// The read buffer's capacity of the connection the body is read from.
    #[cfg(test)]
    pub(crate) fn read_capacity(&self) -> usize {
        self.conn.as_ref().map_or(0, |c| c.read_capacity())
    }

    /// The connection of a 101 answer, with what the server sent behind
    /// its head, for the tunnel. `None` for any other answer, or when the
    /// request was not written whole before the server switched (the rest
    /// of it has no place in the other protocol).
    pub fn into_switched(mut self) -> Option<Switched> {
        let conn = self.conn.take()?;
        if !(self.switched && conn.request_sent()) {
            return None;
        }
        Some((*conn).into_switched())
    }

    /// The next frame: data as it arrives, then trailers (if any).
    ///
    /// An error is reported one turn late: the caller's flush runs first,
    /// so what was read before a reset still reaches the client (hyper's
    /// server drops its unflushed output when a body fails).
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if let Some(e) = self.failed.take() {
            return Poll::Ready(Some(Err(e)));
        }
        match self.poll_next(cx) {
            Poll::Ready(Some(Err(e))) => {
                self.failed = Some(e);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            polled => polled,
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        // The request's rest first, as far as it goes now; a response that
        // ends does not wait for it.
        if !self.decoder.is_done() && !conn.request_sent() {
            if let Poll::Ready(Err(e)) = conn.poll_send(cx, &mut self.request, false) {
                return Poll::Ready(Some(Err(e)));
            }
        }
        loop {
            match self.decoder.decode(conn.buf_mut()) {
                Err(e) => return Poll::Ready(Some(Err(e))),
                Ok(Decoded::Frame(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(Decoded::End) => return Poll::Ready(None),
                Ok(Decoded::More) => {}
            }
            match conn.poll_fill_body(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Ok(0)) => {
                    return match self.decoder.closed() {
                        Ok(()) => Poll::Ready(None),
                        Err(e) => Poll::Ready(Some(Err(e))),
                    }
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }
}
