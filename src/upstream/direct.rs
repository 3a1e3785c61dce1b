//! HTTP/1.1 to an upstream driven by the request's own task, for every
//! request but an upgrade.
//!
//! hyper's client runs each connection in a task of its own: a request goes
//! to that task through a channel, the response head comes back through
//! another, and the body through a third, with a task wake-up at each hop.
//! Here the task that serves the client writes the request (its body as it
//! arrives, a short one in the same write as the head) and reads the
//! response itself, and the response head is parsed straight into a
//! `HeaderMap` whose values share the bytes read. Upgrades still go through
//! hyper (see [`super::Upstream::send`]).
//!
//! The response is framed as RFC 9112 §6.3 says: no body after HEAD or with
//! 204 and 304; chunked when `Transfer-Encoding` ends in `chunked`; read to
//! the close for any other `Transfer-Encoding` or when no length is given;
//! else `Content-Length`, whose values must agree. Interim 1xx answers are
//! skipped. The head handed on carries no hop-by-hop field (the ones
//! [`is_hop_by_hop`] names, and `Upgrade`): they were this connection's, and
//! the body is handed on decoded. Only a `Connection` that names other
//! fields is left in, for the proxy to remove those too. A connection goes
//! back to the pool only when its request was
//! written whole, its response read to the end with nothing after it, and
//! neither side asked to close.
//!
//! The pool's cut (the end of a drain) raises each connection's [`Flag`];
//! a connection checks it at every read and is woken by it while it waits.
//!
//! `response_timeout` is one lazily armed [`Deadline`] per connection: each
//! exchange only moves it, and a busy connection so touches the runtime's
//! timer wheel about once per timeout instead of twice per request.

use std::future::{poll_fn, Future as _};
use std::io;
use std::mem::MaybeUninit;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::header::TRANSFER_ENCODING;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, UPGRADE};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Duration, Instant};

use crate::proxy::headers::is_hop_by_hop;
use crate::rt::deadline::Deadline;
use crate::rt::flag::Flag;

/// Request bytes gathered before a write: a short body goes out with its head.
const COALESCE: usize = 16 * 1024;
/// Most header lines in a response head (hyper's limit too).
const MAX_HEADERS: usize = 100;
/// Largest response head (hyper's read buffer limit).
const MAX_HEAD: usize = 8192 + 4096 * 100;
/// Largest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4096;
/// Most trailer lines.
const MAX_TRAILERS: usize = 32;
/// Largest trailer section.
const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Room made before a read when less than [`MIN_ROOM`] is left; doubled
/// (up to [`MAX_READ_SIZE`]) while reads fill it, for large bodies.
const READ_SIZE: usize = 8 * 1024;
/// The most room made for one read.
const MAX_READ_SIZE: usize = 128 * 1024;
/// Below this much free room, a read first makes [`READ_SIZE`].
const MIN_ROOM: usize = 1024;

/// Why an exchange on a direct connection failed.
#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    /// Reading or writing the socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The server closed the connection before the response was complete.
    #[error("connection closed before the response was complete")]
    Closed,
    /// The pool was cut at the end of a drain.
    #[error("connection cut at the end of the pool's drain")]
    Cut,
    /// The server's bytes are not an HTTP/1.1 response cutover can frame.
    #[error("invalid response: {0}")]
    Invalid(&'static str),
    /// The request body could not be read from the client.
    #[error("{0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// No response head came before the exchange's deadline.
    #[error("no response head in time")]
    TimedOut,
}

impl DirectError {
    /// The proxy's own doing (the end of a drain).
    pub fn is_cut(&self) -> bool {
        matches!(self, DirectError::Cut)
    }

    /// The server's doing: neither the proxy's cut nor the client's body.
    pub fn is_server_fault(&self) -> bool {
        !(self.is_cut() || matches!(self, DirectError::Body(_)))
    }
}

/// How far a failed exchange got, which decides whether it may be retried:
/// `Unsent` always, `Unanswered` for an idempotent method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    /// The request head could not be written.
    Unsent,
    /// Written, and not a byte came back.
    Unanswered,
    /// Some of the body was taken from the client: it cannot be sent again.
    Consumed,
    /// The server started answering.
    Answered,
}

/// An upstream connection the request's task drives.
#[derive(Debug)]
pub struct DirectConn {
    io: TcpStream,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
    /// The request bytes being written; kept for its capacity.
    out: Vec<u8>,
    /// How far the request being sent has got.
    send: Outgoing,
    /// Raised when the pool is cut.
    cut: Arc<Flag>,
    /// The header names of the last response, as the server spelled them.
    names: Names,
    /// Room to make for the next read.
    read_size: usize,
    /// When the response head of the current exchange is due. In the pool
    /// its timer may still hold the waker of the last task that waited,
    /// which it wakes once when it fires (a spurious wake-up, at most one
    /// per connection per timeout).
    deadline: Deadline,
}

/// The header names of a connection's last response, by position, as the
/// server spelled them. A server sends much the same names in the same
/// order and spelling every time: a name found at its place is not parsed
/// again (a byte compare instead of `HeaderName::from_bytes`, about a
/// hundred instructions a header).
#[derive(Debug, Default)]
struct Names {
    seen: Vec<SeenName>,
}

/// One remembered header name.
#[derive(Debug)]
struct SeenName {
    /// Its spelling: the first `len` bytes.
    raw: [u8; NAME_MEMORY],
    len: u8,
    name: HeaderName,
}

/// Names longer than this are parsed every time.
const NAME_MEMORY: usize = 24;

/// Names remembered per connection: the first this many of a response.
const NAMES_REMEMBERED: usize = 16;

impl Names {
    /// The name spelled `raw`, at position `index` of a response head.
    fn get(&mut self, index: usize, raw: &[u8]) -> Result<HeaderName, DirectError> {
        if let Some(seen) = self.seen.get(index) {
            if seen.raw.get(..usize::from(seen.len)) == Some(raw) {
                return Ok(seen.name.clone());
            }
        }
        let name =
            HeaderName::from_bytes(raw).map_err(|_| DirectError::Invalid("bad header name"))?;
        if raw.len() <= NAME_MEMORY && index < NAMES_REMEMBERED && index <= self.seen.len() {
            let mut seen = SeenName {
                raw: [0; NAME_MEMORY],
                len: raw.len() as u8,
                name: name.clone(),
            };
            seen.raw[..raw.len()].copy_from_slice(raw);
            if index == self.seen.len() {
                self.seen.push(seen);
            } else {
                self.seen[index] = seen;
            }
        }
        Ok(name)
    }
}

/// A response head and how its body is framed.
#[derive(Debug)]
pub struct Head {
    /// The response, without its body.
    pub response: Response<()>,
    framing: Framing,
    keep_alive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    /// Until the server closes.
    Close,
    Empty,
}

/// How the request body goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sending {
    /// As it comes: the request has a `Content-Length`.
    Length,
    /// In chunks: it has no length.
    Chunked,
    /// Nothing (more) to send.
    Done,
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

impl DirectConn {
    /// A new connection whose reads stop once `cut` is raised.
    ///
    /// Boxed once for its life: it moves between the pool, the request and
    /// the response body as a pointer.
    pub fn new(io: TcpStream, cut: Arc<Flag>) -> Box<DirectConn> {
        Box::new(DirectConn {
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
            names: Names::default(),
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
    /// may answer before it has read the whole
    /// body (a 413, or a stream that echoes): the rest of the body is then
    /// sent as the response body is read (see [`DirectBody`]). Gives up
    /// with [`DirectError::TimedOut`] when no head came within `timeout`.
    /// On failure, says how far it got.
    pub async fn round_trip<B>(
        &mut self,
        req: &mut Request<B>,
        head: &RequestHead,
        timeout: Duration,
    ) -> Result<Head, (DirectError, Reached)>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let framing = head.framing;
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
                match parse_head(&mut self.buf, &mut self.names, &method, &mut headers) {
                    Ok(Some(head)) => return Poll::Ready(Ok(head)),
                    Ok(None) if self.buf.len() > MAX_HEAD => {
                        let e = DirectError::Invalid("response head too large");
                        return Poll::Ready(Err((e, Reached::Answered)));
                    }
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
            if let Poll::Ready(Err(e)) = self.poll_send(cx, body) {
                return Poll::Ready(Err((e, reached(&self.send))));
            }
            match self.poll_fill(cx) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err((DirectError::Closed, reached(&self.send))))
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err((e, reached(&self.send)))),
                Poll::Pending => {
                    if self.deadline.poll_passed(cx).is_ready() {
                        // Too late for a retry whatever was sent.
                        return Poll::Ready(Err((DirectError::TimedOut, Reached::Answered)));
                    }
                    return Poll::Pending;
                }
            }
        })
        .await
    }

    /// Whether the whole request has been written.
    fn request_sent(&self) -> bool {
        self.send.framing == Sending::Done && self.send.written == self.out.len()
    }

    /// Writes what there is of the request: `Ready(Ok)` once all of it is
    /// written, `Pending` while waiting for the client's body or for room
    /// in the socket.
    fn poll_send<B>(&mut self, cx: &mut Context<'_>, body: &mut B) -> Poll<Result<(), DirectError>>
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
            while self.send.framing != Sending::Done
                && self.out.len() - self.send.written < COALESCE
            {
                let ended = match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Some(Err(e))) => {
                        return Poll::Ready(Err(DirectError::Body(e.into())));
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
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, DirectError>> {
        if self.cut.is_set() {
            return Poll::Ready(Err(DirectError::Cut));
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
            Poll::Ready(Err(e)) => Poll::Ready(Err(DirectError::Io(e))),
            Poll::Pending if self.cut.poll_set(cx.waker()) => Poll::Ready(Err(DirectError::Cut)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// What a request head is given at first: a few header lines of an API
/// client's request fit, within the allocator's small blocks.
const HEAD_CAPACITY: usize = 512;

/// A request's head as a direct connection writes it, and how its body
/// follows.
///
/// It is encoded once, as the request is prepared, so the request's header
/// map and target can be let go of before anything is sent: their values
/// share the client connection's read buffer, and while they live, the
/// client side cannot read into that buffer again (it reads while a request
/// is in flight, to see the client leave) and takes a fresh 8 KiB one for
/// every request instead. A retry on another connection sends these bytes.
#[derive(Debug)]
pub struct RequestHead {
    bytes: Vec<u8>,
    framing: Sending,
}

impl RequestHead {
    /// The head of a request given by its parts: `METHOD target HTTP/1.1`,
    /// the headers as they are, what `lines` writes (whole header lines,
    /// each ending in CRLF), `Transfer-Encoding: chunked` for a body of
    /// unknown length (as hyper's client adds it), and the empty line. The
    /// body goes as it is framed: by its `Content-Length`, chunked when it
    /// has none, or not at all when it has `ended`.
    // Not inlined: its caller builds the request's future, and growing that
    // frame made the compiler move the future more often.
    #[inline(never)]
    pub fn of(
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        ended: bool,
        lines: impl FnOnce(&mut Vec<u8>),
    ) -> RequestHead {
        let framing = if ended {
            Sending::Done
        } else if headers.contains_key(CONTENT_LENGTH) {
            Sending::Length
        } else {
            Sending::Chunked
        };
        let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
        // Most heads fit; a larger one grows as it is written.
        let mut out = Vec::with_capacity(HEAD_CAPACITY);
        out.extend_from_slice(method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in headers {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        lines(&mut out);
        if framing == Sending::Chunked {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        out.extend_from_slice(b"\r\n");
        RequestHead {
            bytes: out,
            framing,
        }
    }
}

/// Takes one final response head off the front of `buf` (skipping interim
/// 1xx ones); `None` while it is incomplete.
///
/// The head's headers go into `headers` (taken and left empty; what it held
/// is dropped), so a map that is handed on keeps its capacity.
fn parse_head(
    buf: &mut BytesMut,
    names: &mut Names,
    method: &Method,
    headers: &mut HeaderMap,
) -> Result<Option<Head>, DirectError> {
    loop {
        // Offsets into `buf` of each header's name and value, so the values
        // can share the head's bytes once it is split off.
        let mut spans = [[0u32; 4]; MAX_HEADERS];
        let mut lines = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut parsed,
            buf,
            &mut lines,
        ) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(DirectError::Invalid("too many headers"))
            }
            Err(_) => return Err(DirectError::Invalid("malformed response head")),
        };
        let code = parsed.code.unwrap_or_default();
        if (100..200).contains(&code) && code != 101 {
            buf.advance(len);
            continue;
        }
        let status =
            StatusCode::from_u16(code).map_err(|_| DirectError::Invalid("bad status code"))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(DirectError::Invalid(
                "101 to a request that asked for no upgrade",
            ));
        }
        let version = if parsed.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        let base = buf.as_ptr() as usize;
        // Kept as hyper keeps it, when it is not the usual one, so the
        // client sees the phrase the server chose.
        let reason = parsed
            .reason
            .filter(|r| Some(*r) != status.canonical_reason())
            .map(|r| {
                let start = r.as_ptr() as usize - base;
                start..start + r.len()
            });
        let count = parsed.headers.len();
        for (span, h) in spans.iter_mut().zip(parsed.headers.iter()) {
            let name = h.name.as_ptr() as usize - base;
            let value = h.value.as_ptr() as usize - base;
            *span = [
                name as u32,
                (name + h.name.len()) as u32,
                value as u32,
                (value + h.value.len()) as u32,
            ];
        }
        let head = buf.split_to(len).freeze();
        let mut framed = frame(
            &head,
            &spans[..count],
            names,
            status,
            version,
            method,
            std::mem::take(headers),
        )?;
        if let Some(reason) = reason {
            let phrase = hyper::ext::ReasonPhrase::try_from(head.slice(reason))
                .map_err(|_| DirectError::Invalid("bad reason phrase"))?;
            framed.response.extensions_mut().insert(phrase);
        }
        return Ok(Some(framed));
    }
}

/// Builds the response head from the header `spans` of `head`, into
/// `headers` (emptied first), and frames its body.
fn frame(
    head: &Bytes,
    spans: &[[u32; 4]],
    names: &mut Names,
    status: StatusCode,
    version: Version,
    method: &Method,
    mut headers: HeaderMap,
) -> Result<Head, DirectError> {
    if !headers.is_empty() {
        // Empty from the proxy, whose request head is encoded by then.
        headers.clear();
    }
    headers.reserve(spans.len());
    let mut length: Option<u64> = None;
    let mut chunked: Option<bool> = None;
    let mut close = false;
    let mut keep_alive_asked = false;
    // `Connection` names a field other than `close` and `keep-alive`.
    let mut names_fields = false;
    for (index, &[ns, ne, vs, ve]) in spans.iter().enumerate() {
        let name = names.get(index, &head[ns as usize..ne as usize])?;
        // A value is made only for a field that goes on.
        let raw = &head[vs as usize..ve as usize];
        if name == CONTENT_LENGTH {
            for part in raw.split(|&b| b == b',') {
                let n = parse_length(part.trim_ascii())
                    .ok_or(DirectError::Invalid("bad content-length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(DirectError::Invalid("conflicting content-length"));
                }
                length = Some(n);
            }
            // Put back below unless it frames the body.
            continue;
        } else if name == TRANSFER_ENCODING {
            let last = raw.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name == CONNECTION {
            for token in raw.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_asked = true;
                } else {
                    names_fields |= !token.is_empty();
                }
            }
        }
        if !(is_hop_by_hop(name.as_str()) || name == UPGRADE) {
            headers.append(name, span_value(head, vs, ve)?);
        }
    }
    if names_fields {
        // Rare: put every `Connection` line back for the proxy, which
        // removes what they name (see `proxy::headers::remove_hop_by_hop`).
        put_back(&mut headers, CONNECTION, head, spans)?;
    }
    let framing = if method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Empty
    } else if let Some(chunked) = chunked {
        if chunked {
            Framing::Chunked
        } else {
            Framing::Close
        }
    } else {
        match length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    };
    let keep_alive = match version {
        Version::HTTP_10 => keep_alive_asked && !close,
        _ => !close,
    }
    // Both framings given, or a transfer coding in HTTP/1.0: the message
    // was read one way, and the connection is not trusted with another
    // (RFC 9112 §6.1, §6.3).
    && !(chunked.is_some() && (length.is_some() || version == Version::HTTP_10))
    && framing != Framing::Close;
    // A body of a given length goes on with that length as its exact size,
    // which the server side writes as `Content-Length` itself (hyper does
    // so without a map entry to add and encode). Where the length does not
    // frame a body (a HEAD answer, 204, 304, an empty body) it goes on as
    // it came. Beside a transfer coding it goes nowhere: the coding wins,
    // and the length would frame the decoded body differently downstream
    // (RFC 9112 §6.3).
    if length.is_some() && chunked.is_none() && !matches!(framing, Framing::Length(_)) {
        put_back(&mut headers, CONTENT_LENGTH, head, spans)?;
    }
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(Head {
        response,
        framing,
        keep_alive,
    })
}

/// Appends every `name` line of `head` (the rare fields the first pass
/// left out), as they came.
fn put_back(
    headers: &mut HeaderMap,
    name: HeaderName,
    head: &Bytes,
    spans: &[[u32; 4]],
) -> Result<(), DirectError> {
    for &[ns, ne, vs, ve] in spans {
        if head[ns as usize..ne as usize].eq_ignore_ascii_case(name.as_str().as_bytes()) {
            headers.append(name.clone(), span_value(head, vs, ve)?);
        }
    }
    Ok(())
}

/// The header value at `vs..ve` of `head`, sharing its bytes.
fn span_value(head: &Bytes, vs: u32, ve: u32) -> Result<HeaderValue, DirectError> {
    HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))
        .map_err(|_| DirectError::Invalid("bad header value"))
}

/// A `Content-Length` value: digits only.
fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

/// A response body read from a [`DirectConn`], which it owns until the end.
#[derive(Debug)]
pub struct DirectBody<B> {
    conn: Option<Box<DirectConn>>,
    state: State,
    keep_alive: bool,
    /// An error held back for one turn (see [`DirectBody::poll_frame`]).
    failed: Option<DirectError>,
    /// The rest of the request body, sent as this body is read when the
    /// server answered before it had all of it.
    request: B,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Bytes still to come.
    Length(u64),
    /// Before a chunk-size line.
    ChunkSize,
    /// Chunk bytes still to come.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// After the last chunk: trailers, then the empty line.
    Trailers,
    /// Until the server closes.
    Close,
    Done,
}

impl<B> DirectBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// The body that follows `head` on `conn`, whose request's body is
    /// `request` (what is left of it).
    pub fn new(conn: Box<DirectConn>, head: &Head, request: B) -> DirectBody<B> {
        let state = match head.framing {
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::Close => State::Close,
            Framing::Empty => State::Done,
        };
        DirectBody {
            conn: Some(conn),
            state,
            keep_alive: head.keep_alive,
            failed: None,
            request,
        }
    }

    /// Whether the whole body has been read.
    pub fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    /// Exact for a `Content-Length` body.
    pub fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }

    /// The connection, when the body has ended and the connection can carry
    /// another request: the whole request was sent too, and nothing
    /// followed the response.
    pub fn take_conn(&mut self) -> Option<Box<DirectConn>> {
        let mut conn = self.conn.take()?;
        let reusable = self.state == State::Done
            && self.keep_alive
            && conn.buf.is_empty()
            && conn.request_sent();
        if !reusable {
            return None;
        }
        // A large response body grew the buffer: an idle connection keeps a
        // small one.
        if conn.read_size > READ_SIZE {
            conn.buf = BytesMut::new();
            conn.read_size = READ_SIZE;
        }
        // So did a large request body.
        if conn.out.capacity() > 2 * COALESCE {
            conn.out = Vec::new();
        }
        Some(conn)
    }

    /// The next frame: data as it arrives, then trailers (if any).
    ///
    /// An error is reported one turn late: the caller's flush runs first,
    /// so what was read before a reset still reaches the client (hyper's
    /// server drops its unflushed output when a body fails).
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, DirectError>>> {
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

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, DirectError>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        // The request's rest first, as far as it goes now; a response that
        // ends does not wait for it.
        if self.state != State::Done && !conn.request_sent() {
            if let Poll::Ready(Err(e)) = conn.poll_send(cx, &mut self.request) {
                return Poll::Ready(Some(Err(e)));
            }
        }
        loop {
            let step = match self.state {
                State::Done => return Poll::Ready(None),
                State::Length(left) => take_data(&mut conn.buf, left).map(|(data, left)| {
                    self.state = if left == 0 {
                        State::Done
                    } else {
                        State::Length(left)
                    };
                    Some(Frame::data(data))
                }),
                State::ChunkData(left) => take_data(&mut conn.buf, left).map(|(data, left)| {
                    if left == 0 {
                        self.state = State::ChunkEnd;
                    } else {
                        self.state = State::ChunkData(left);
                    }
                    Some(Frame::data(data))
                }),
                State::Close if !conn.buf.is_empty() => {
                    Some(Some(Frame::data(conn.buf.split().freeze())))
                }
                State::Close => None,
                State::ChunkSize => match chunk_size(&mut conn.buf) {
                    Err(e) => return Poll::Ready(Some(Err(e))),
                    Ok(Some(0)) => {
                        self.state = State::Trailers;
                        continue;
                    }
                    Ok(Some(n)) => {
                        self.state = State::ChunkData(n);
                        continue;
                    }
                    Ok(None) => None,
                },
                State::ChunkEnd if conn.buf.len() >= 2 => {
                    if &conn.buf[..2] != b"\r\n" {
                        return Poll::Ready(Some(Err(DirectError::Invalid(
                            "chunk not ended by CRLF",
                        ))));
                    }
                    conn.buf.advance(2);
                    self.state = State::ChunkSize;
                    continue;
                }
                State::ChunkEnd => None,
                State::Trailers => match trailers(&mut conn.buf) {
                    Err(e) => return Poll::Ready(Some(Err(e))),
                    Ok(Some(fields)) => {
                        self.state = State::Done;
                        match fields {
                            Some(fields) => Some(Some(Frame::trailers(fields))),
                            None => return Poll::Ready(None),
                        }
                    }
                    Ok(None) => None,
                },
            };
            match step {
                Some(frame) => return Poll::Ready(frame.map(Ok)),
                // More bytes are needed.
                None => match conn.poll_fill(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                    Poll::Ready(Ok(0)) if self.state == State::Close => {
                        self.state = State::Done;
                        return Poll::Ready(None);
                    }
                    Poll::Ready(Ok(0)) => return Poll::Ready(Some(Err(DirectError::Closed))),
                    Poll::Ready(Ok(_)) => {}
                },
            }
        }
    }
}

/// Up to `left` bytes of what `buf` holds, and how many are left after them;
/// `None` when `buf` is empty.
fn take_data(buf: &mut BytesMut, left: u64) -> Option<(Bytes, u64)> {
    if buf.is_empty() {
        return None;
    }
    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
    Some((buf.split_to(n).freeze(), left - n as u64))
}

/// Takes a chunk-size line off `buf`; `None` while it is incomplete.
fn chunk_size(buf: &mut BytesMut) -> Result<Option<u64>, DirectError> {
    let invalid = DirectError::Invalid("bad chunk size");
    match buf.first() {
        None => return Ok(None),
        Some(b) if !b.is_ascii_hexdigit() => return Err(invalid),
        Some(_) => {}
    }
    match httparse::parse_chunk_size(buf) {
        Ok(httparse::Status::Complete((len, size))) => {
            buf.advance(len);
            Ok(Some(size))
        }
        Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => Err(invalid),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(invalid),
    }
}

/// Takes the trailer section off `buf`: `Some(None)` when it is empty,
/// `None` while it is incomplete.
#[allow(clippy::option_option)]
fn trailers(buf: &mut BytesMut) -> Result<Option<Option<HeaderMap>>, DirectError> {
    if buf.starts_with(b"\r\n") {
        buf.advance(2);
        return Ok(Some(None));
    }
    let mut lines = [httparse::EMPTY_HEADER; MAX_TRAILERS];
    match httparse::parse_headers(buf, &mut lines) {
        Ok(httparse::Status::Complete((len, fields))) => {
            let mut map = HeaderMap::with_capacity(fields.len());
            for f in fields {
                let name = HeaderName::from_bytes(f.name.as_bytes())
                    .map_err(|_| DirectError::Invalid("bad trailer name"))?;
                let value = HeaderValue::from_bytes(f.value)
                    .map_err(|_| DirectError::Invalid("bad trailer value"))?;
                map.append(name, value);
            }
            buf.advance(len);
            Ok(Some(Some(map)))
        }
        Ok(httparse::Status::Partial) if buf.len() > MAX_TRAILER_BYTES => {
            Err(DirectError::Invalid("trailers too large"))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(DirectError::Invalid("malformed trailers")),
    }
}

#[cfg(test)]
mod tests;
