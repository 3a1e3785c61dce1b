//! An HTTP/1.1 connection to an upstream, driven by the task of the
//! request it carries.
//!
//! The task that serves the client writes the request (its body as it
//! arrives, a short one in the same write as its head) and reads the
//! response itself: no connection task, and no channel between the two.
//! The response head is parsed straight into a `HeaderMap` whose values
//! share the bytes read ([`ResponseParser`]), and the body is read by
//! [`super::UpstreamBody`], which owns the connection until its end. A
//! connection goes back to the pool only when its request was written
//! whole, its response read to the end with nothing after it, and neither
//! side asked to close. After a 101 (the request asked for an upgrade) the
//! socket and what was read behind the head go to the tunnel
//! ([`Switched`]).
//!
//! The pool's cut (the end of a drain) raises each connection's [`Flag`];
//! a connection checks it at every read and is woken by it while it waits.
//!
//! `response_timeout` is one lazily armed [`Deadline`] per connection: each
//! exchange only moves it, so a busy connection rarely touches the
//! runtime's timer wheel.

use std::future::{poll_fn, Future as _};
use std::io;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::Request;
use http_body::Body;
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Duration, Instant};

use super::error::{Error, Reached};
use super::request::{RequestHead, Sending};
use super::response::{ResponseHead, ResponseParser};
use crate::rt::deadline::Deadline;
use crate::rt::flag::Flag;

/// An upstream connection after its 101: the socket, and the bytes the
/// server sent right behind the head (the first of the new protocol).
#[derive(Debug)]
pub struct Switched {
    /// The socket.
    pub io: TcpStream,
    /// Read behind the 101's head, not yet passed on.
    pub read_ahead: Bytes,
}

/// Request bytes gathered before a write: a short body goes out with its head.
const COALESCE: usize = 16 * 1024;
/// How long a body sent with `Expect: 100-continue` waits for the
/// server's `100 Continue` before it goes anyway (curl waits 1 s).
const CONTINUE_WAIT: Duration = Duration::from_secs(1);
/// Room made before a read when less than [`MIN_ROOM`] is left; doubled
/// (up to [`MAX_READ_SIZE`]) while reads fill it, for large bodies.
const READ_SIZE: usize = 8 * 1024;
/// The most room made for one read.
const MAX_READ_SIZE: usize = 128 * 1024;
/// Below this much free room, a read first makes [`READ_SIZE`].
const MIN_ROOM: usize = 1024;

/// An upstream connection the request's task drives.
#[derive(Debug)]
pub struct UpstreamConn {
    io: TcpStream,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
    /// The request bytes being written; kept for its capacity.
    out: Vec<u8>,
    /// How far the request being sent has got.
    send: Outgoing,
    /// Raised when the pool is cut.
    cut: Arc<Flag>,
    /// Parses the response heads, remembering the server's header names.
    parser: ResponseParser,
    /// Room to make for the next read.
    read_size: usize,
    /// When the response head of the current exchange is due. In the pool
    /// its timer may still hold the waker of the last task that waited,
    /// which it wakes once when it fires (a spurious wake-up, at most one
    /// per connection per timeout).
    deadline: Deadline,
}

/// Where a request stands while it is sent.
#[derive(Debug)]
struct Outgoing {
    framing: Sending,
    /// Bytes of `out` already written.
    written: usize,
    /// Some of the request has been written.
    sent_any: bool,
    /// Some of the body has been taken from the client.
    taken: bool,
}

impl Outgoing {
    fn reached(&self) -> Reached {
        if self.taken {
            // The body cannot be sent again: as good as answered for a retry.
            Reached::Consumed
        } else if self.sent_any {
            Reached::Unanswered
        } else {
            Reached::Unsent
        }
    }

    fn push_data(&self, out: &mut Vec<u8>, data: &[u8]) {
        if self.framing == Sending::Chunked {
            use std::io::Write as _;
            let _ = write!(out, "{:x}\r\n", data.len());
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(data);
        }
    }
}

impl UpstreamConn {
    /// A new connection whose reads stop once `cut` is raised.
    ///
    /// Boxed once for its life: it moves between the pool, the request and
    /// the response body as a pointer.
    pub fn new(io: TcpStream, cut: Arc<Flag>) -> Box<UpstreamConn> {
        Box::new(UpstreamConn {
            io,
            buf: BytesMut::new(),
            out: Vec::new(),
            send: Outgoing {
                framing: Sending::Done,
                written: 0,
                sent_any: false,
                taken: false,
            },
            cut,
            parser: ResponseParser::default(),
            read_size: READ_SIZE,
            deadline: Deadline::new(Instant::now()),
        })
    }

    /// False when the pool was cut, or the server closed the connection or
    /// sent anything while it sat idle. Costs a system call only when the
    /// socket was seen readable.
    pub fn is_reusable(&mut self) -> bool {
        if self.cut.is_set() || !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readable: either stale readiness from the last response, or
            // the server's close (or stray bytes).
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Writes `head` (the head of `req`, see [`RequestHead`]), then the
    /// body of `req` as it arrives, and reads the response head. A server
    /// may answer before it has read the whole body (a 413, or a stream
    /// that echoes): the rest of the body is then sent as the response body
    /// is read (see [`super::UpstreamBody`]). Gives up with
    /// [`Error::TimedOut`] when no head came within `timeout`. On failure,
    /// says how far it got.
    pub async fn round_trip<B>(
        &mut self,
        req: &mut Request<B>,
        head: &RequestHead,
        timeout: Duration,
    ) -> Result<ResponseHead, (Error, Reached)>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (framing, upgrade) = (head.framing, head.upgrade);
        // `Expect: 100-continue`: the client's body is not read (reading it
        // is what makes hyper send the client its `100 Continue`) until the
        // server sends its own 100, or stays silent for CONTINUE_WAIT (a
        // server that ignores the expectation, RFC 9110 §10.1.1). A final
        // answer before either goes to the client with the body unread.
        self.parser.expect();
        let mut continue_wait = head
            .expect_continue
            .then(|| Box::pin(tokio::time::sleep(CONTINUE_WAIT)));
        self.out.clear();
        self.out.extend_from_slice(&head.bytes);
        self.deadline.set(Instant::now() + timeout);
        self.send = Outgoing {
            framing,
            written: 0,
            sent_any: false,
            taken: false,
        };
        let method = req.method().clone();
        // The request's map, emptied when its head was encoded: the
        // response's headers go there instead of into a new one (hyper, on
        // the client's connection, reuses it for the next request's head).
        let mut headers = std::mem::take(req.headers_mut());
        let body = req.body_mut();
        let mut answered = false;
        poll_fn(|cx| loop {
            if !self.buf.is_empty() {
                answered = true;
                match self
                    .parser
                    .parse(&mut self.buf, &method, upgrade, &mut headers)
                {
                    Ok(Some(head)) => return Poll::Ready(Ok(head)),
                    Ok(None) => {}
                    Err(e) => return Poll::Ready(Err((e, Reached::Answered))),
                }
            }
            let reached = |send: &Outgoing| {
                if answered {
                    Reached::Answered
                } else {
                    send.reached()
                }
            };
            let hold = !self.parser.continued()
                && continue_wait
                    .as_mut()
                    .is_some_and(|wait| wait.as_mut().poll(cx).is_pending());
            if !hold {
                continue_wait = None;
            }
            if let Poll::Ready(Err(e)) = self.poll_send(cx, body, hold) {
                return Poll::Ready(Err((e, reached(&self.send))));
            }
            match self.poll_fill(cx) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err((Error::Closed, reached(&self.send))))
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err((e, reached(&self.send)))),
                Poll::Pending => {
                    if self.deadline.poll_passed(cx).is_ready() {
                        // Too late for a retry whatever was sent.
                        return Poll::Ready(Err((Error::TimedOut, Reached::Answered)));
                    }
                    return Poll::Pending;
                }
            }
        })
        .await
    }

    /// Whether the whole request has been written.
    pub(super) fn request_sent(&self) -> bool {
        self.send.framing == Sending::Done && self.send.written == self.out.len()
    }

    /// Writes what there is of the request: `Ready(Ok)` once all of it is
    /// written, `Pending` while waiting for the client's body or for room
    /// in the socket. With `hold`, the body is not read yet.
    pub(super) fn poll_send<B>(
        &mut self,
        cx: &mut Context<'_>,
        body: &mut B,
        hold: bool,
    ) -> Poll<Result<(), Error>>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        loop {
            if self.request_sent() {
                return Poll::Ready(Ok(()));
            }
            let mut progressed = false;
            // More of the body while what waits to be written is small: a
            // short body goes out with its head in one write.
            while !hold
                && self.send.framing != Sending::Done
                && self.out.len() - self.send.written < COALESCE
            {
                let ended = match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Some(Err(e))) => {
                        return Poll::Ready(Err(Error::Body(e.into())));
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        // Request trailers are not forwarded (nor were they
                        // by hyper's client, unless declared).
                        if let Ok(data) = frame.into_data() {
                            if !data.is_empty() {
                                self.send.push_data(&mut self.out, &data);
                            }
                        }
                        // The last bytes of a body of known length end it:
                        // no need to wait for the client's side to close.
                        body.is_end_stream()
                    }
                    Poll::Ready(None) => true,
                };
                self.send.taken = true;
                progressed = true;
                if ended {
                    if self.send.framing == Sending::Chunked {
                        self.out.extend_from_slice(b"0\r\n\r\n");
                    }
                    self.send.framing = Sending::Done;
                }
            }
            if self.send.written < self.out.len() {
                match Pin::new(&mut self.io).poll_write(cx, &self.out[self.send.written..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()))
                    }
                    Poll::Ready(Ok(n)) => {
                        self.send.written += n;
                        self.send.sent_any = true;
                        progressed = true;
                        if self.send.written == self.out.len() {
                            self.out.clear();
                            self.send.written = 0;
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    Poll::Pending => {}
                }
            }
            if !progressed {
                return Poll::Pending;
            }
        }
    }

    /// Reads what the socket has into `buf`; `Ok(0)` is the server's close.
    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, Error>> {
        if self.cut.is_set() {
            return Poll::Ready(Err(Error::Cut));
        }
        if self.buf.capacity() - self.buf.len() < MIN_ROOM {
            self.buf.reserve(self.read_size);
        }
        let room = self.buf.capacity() - self.buf.len();
        let read = pin!(self.io.read_buf(&mut self.buf)).poll(cx);
        match read {
            Poll::Ready(Ok(n)) => {
                if n == room && self.read_size < MAX_READ_SIZE {
                    self.read_size *= 2;
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(Error::Io(e))),
            Poll::Pending if self.cut.poll_set(cx.waker()) => Poll::Ready(Err(Error::Cut)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// As [`poll_fill`](Self::poll_fill), for a response body: while nothing
    /// is buffered and the socket has nothing to read, the connection holds
    /// no read buffer, so a stream waiting between events costs none. A body
    /// whose reads grew the buffer (a bulk transfer) keeps it.
    pub(super) fn poll_fill_body(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, Error>> {
        if self.buf.is_empty() && self.read_size == READ_SIZE {
            match self.io.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::Io(e))),
                Poll::Pending if self.cut.poll_set(cx.waker()) => {
                    return Poll::Ready(Err(Error::Cut))
                }
                Poll::Pending => {
                    // What was read last may still be on its way to the
                    // client: the allocation goes when that does.
                    self.buf = BytesMut::new();
                    return Poll::Pending;
                }
            }
        }
        self.poll_fill(cx)
    }

    /// The read buffer's capacity.
    #[cfg(test)]
    pub(super) fn read_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The read buffer, where the response body's bytes wait.
    pub(super) fn buf_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Whether the connection is between exchanges: the whole request
    /// written, and nothing read that no response claimed.
    pub(super) fn is_between_exchanges(&self) -> bool {
        self.buf.is_empty() && self.request_sent()
    }

    /// Lets go of buffers a large body grew, before the connection idles
    /// in the pool: an idle connection keeps small ones.
    pub(super) fn shrink_for_idle(&mut self) {
        if self.read_size > READ_SIZE {
            self.buf = BytesMut::new();
            self.read_size = READ_SIZE;
        }
        if self.out.capacity() > 2 * COALESCE {
            self.out = Vec::new();
        }
    }

    /// The socket, and the bytes read behind the 101 that switched it.
    pub(super) fn into_switched(self) -> Switched {
        Switched {
            io: self.io,
            read_ahead: self.buf.freeze(),
        }
    }
}

#[cfg(test)]
mod tests;
