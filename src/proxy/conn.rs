//! One client connection's own clock and eyes: `header_read_timeout`,
//! `idle_timeout`, and the raw-byte view that hyper's parsed requests lack.
//!
//! [`ClientIo`] wraps the client's stream. It reads like the stream it wraps
//! and, on HTTP/1.1, also:
//!
//! - runs the head timer: from accept, and on a kept-alive connection from
//!   the first byte of the next head, until that head is complete. When it
//!   fires, the client gets a 408 (if it had sent part of a head) and the
//!   connection closes. hyper's own `header_read_timeout` cannot be used: it
//!   also runs while a kept-alive connection waits for its next request,
//!   which is `idle_timeout`'s job;
//! - follows the request framing with [`FrameScan`] to flag heads that
//!   carried both `Content-Length` and `Transfer-Encoding`, and answers 431
//!   to a head over `max_header_bytes` (hyper's own check is its read
//!   buffer, which is never under 8 KiB).
//!
//! HTTP/2 is told apart by its connection preface; from then on only the
//! idle timer applies (h2 bounds its own frames and header blocks).
//!
//! [`ConnTrack`] is what the reader, the requests ([`Active`], held by the
//! response body until it ends) and the idle timer ([`idle`]) share: a few
//! atomics, touched a handful of times per request. After an HTTP/1.1
//! upgrade the stream is a tunnel and none of this applies.

use std::future::Future as _;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{BufMut as _, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::error::ProxyError;
use crate::http1::scan::{Flag, FrameScan};
use crate::metrics::PoolMetrics;
use crate::rt::deadline::Deadline;
use crate::rt::wake::OwnWaker;

/// The HTTP/2 connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How much the protocol sniff reads at most at a time.
const SNIFF_BUF: usize = 4096;
/// "No request flagged".
const NONE: u64 = u64::MAX;

/// A client stream, boxed for the tunnel.
pub trait ClientStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ClientStream for T {}

/// The client's side of an upgraded HTTP/1.1 connection, handed by the
/// connection to the tunnel once the 101 is written.
pub struct Upgraded {
    /// The client stream.
    pub io: Box<dyn ClientStream>,
    /// Bytes the client sent behind its upgrade request, already read.
    pub read_ahead: Bytes,
}

impl std::fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgraded")
            .field("read_ahead", &self.read_ahead.len())
            .finish_non_exhaustive()
    }
}

/// What a connection's reader, its requests and its idle timer share.
#[derive(Debug)]
pub struct ConnTrack {
    epoch: Instant,
    /// Requests (HTTP/2: streams) whose response has not ended.
    inflight: AtomicUsize,
    /// Requests started so far (heads complete).
    heads: AtomicU64,
    /// When the last request ended (µs since `epoch`), or 0.
    idle_since: AtomicU64,
    /// Bytes of a request head have arrived and the head is not complete.
    head_pending: AtomicBool,
    /// An HTTP/1.1 upgrade was answered: the stream is a tunnel now.
    upgraded: AtomicBool,
    /// The first request the framing scan flagged, as [`flag_code`] packs it.
    flagged: AtomicU64,
    /// Where the client stream goes if the request in flight is upgraded.
    upgrade: Mutex<Option<oneshot::Sender<Upgraded>>>,
}

impl ConnTrack {
    /// A connection accepted now.
    pub fn new() -> Arc<ConnTrack> {
        Arc::new(ConnTrack {
            epoch: Instant::now(),
            inflight: AtomicUsize::new(0),
            heads: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            head_pending: AtomicBool::new(false),
            upgraded: AtomicBool::new(false),
            flagged: AtomicU64::new(NONE),
            upgrade: Mutex::new(None),
        })
    }

    /// A request asks for an upgrade: returns where the client stream will
    /// arrive if the upgrade happens.
    pub fn expect_upgrade(&self) -> oneshot::Receiver<Upgraded> {
        let (tx, rx) = oneshot::channel();
        *self.upgrade.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }

    /// Takes the sender registered by [`ConnTrack::expect_upgrade`].
    pub fn take_upgrade(&self) -> Option<oneshot::Sender<Upgraded>> {
        self.upgrade
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Counts a request whose head is complete, until the guard drops.
    pub fn start(self: &Arc<Self>) -> Active {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        self.head_pending.store(false, Ordering::Release);
        let index = self.heads.fetch_add(1, Ordering::AcqRel);
        Active {
            track: self.clone(),
            index,
        }
    }

    /// Whether hyper refused the next head (the one after the requests
    /// started so far) for its request target's length, as the framing
    /// scan saw it: hyper then answered 414, where its other "too large"
    /// refusals answer 431.
    pub fn refused_uri_too_long(&self) -> bool {
        let flagged = self.track_flag();
        flagged == Some((self.heads.load(Ordering::Acquire), Flag::UriTooLong))
    }

    /// The first request the framing scan flagged, and why.
    fn track_flag(&self) -> Option<(u64, Flag)> {
        let code = self.flagged.load(Ordering::Acquire);
        let flag = match code % 4 {
            0 => Flag::LengthAndChunked,
            1 => Flag::BadChunk,
            _ => Flag::UriTooLong,
        };
        (code != NONE).then_some((code / 4, flag))
    }

    /// The connection was upgraded (101): no timers or scans from now on.
    pub fn mark_upgraded(&self) {
        self.upgraded.store(true, Ordering::Release);
    }

    fn busy(&self) -> bool {
        self.inflight.load(Ordering::Acquire) > 0 || self.head_pending.load(Ordering::Acquire)
    }

    fn idle_since(&self) -> Instant {
        self.epoch + Duration::from_micros(self.idle_since.load(Ordering::Acquire))
    }
}

/// One request in flight on its connection; dropped when its response ends.
#[derive(Debug)]
pub struct Active {
    track: Arc<ConnTrack>,
    index: u64,
}

impl Active {
    /// Why the client's raw bytes make this request one to refuse, when they
    /// do: a head with both `Content-Length` and `Transfer-Encoding` (hyper
    /// hides one of them), or a chunked body hyper will refuse that arrived
    /// with the head.
    pub fn refusal(&self) -> Option<&'static str> {
        match self.track.track_flag() {
            Some((index, flag)) if index == self.index => match flag {
                Flag::LengthAndChunked => Some("content-length with transfer-encoding"),
                Flag::BadChunk => Some("invalid chunked body"),
                // hyper refuses such a head itself: it never gets here.
                Flag::UriTooLong => None,
            },
            _ => None,
        }
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        let track = &self.track;
        // The time first, then the count: whoever sees the count at zero
        // also sees when it got there.
        let since = track.epoch.elapsed().as_micros();
        track
            .idle_since
            .store(u64::try_from(since).unwrap_or(u64::MAX), Ordering::Release);
        track.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Resolves once the connection has had no request in flight (and no head
/// arriving) for `timeout`. Never resolves while a request or stream runs.
///
/// Its timer is polled only when it fires ([`OwnWaker`]): the deadline only
/// ever moves later, and it is checked again each time the timer fires, so
/// the connection's other wake-ups need not look at it.
pub async fn idle(track: &ConnTrack, timeout: Duration) {
    // One future, not an inner `async fn` awaited in a loop: each
    // connection's task holds this twice, so its size counts.
    let own = OwnWaker::default();
    let mut sleep = pin!(tokio::time::sleep_until(idle_deadline(track, timeout)));
    std::future::poll_fn(|cx| {
        own.poll(cx, |cx| loop {
            ready!(sleep.as_mut().poll(cx));
            let deadline = idle_deadline(track, timeout);
            if deadline <= Instant::now() {
                return Poll::Ready(());
            }
            sleep.as_mut().reset(deadline);
        })
    })
    .await;
}

/// The earliest the connection can have been idle for `timeout`: nothing
/// ends sooner than `timeout` after the request in flight ends.
fn idle_deadline(track: &ConnTrack, timeout: Duration) -> Instant {
    if track.busy() {
        Instant::now() + timeout
    } else {
        track.idle_since() + timeout
    }
}

/// A flagged request packed in one word: its index × 4 and why.
fn flag_code(index: u64, flag: Flag) -> u64 {
    let why = match flag {
        Flag::LengthAndChunked => 0,
        Flag::BadChunk => 1,
        Flag::UriTooLong => 2,
    };
    index.saturating_mul(4).saturating_add(why).min(NONE - 1)
}

/// A response body that keeps its request counted until it ends.
#[derive(Debug)]
pub struct Tracked<B> {
    inner: B,
    active: Option<Active>,
}

impl<B> Tracked<B> {
    /// Wraps `inner`, releasing `active` when it ends or is dropped.
    pub fn new(inner: B, active: Active) -> Tracked<B> {
        Tracked {
            inner,
            active: Some(active),
        }
    }
}

impl<B> Body for Tracked<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.active = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What the client speaks, as far as its first bytes tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    /// This many bytes of the HTTP/2 preface matched so far.
    Sniffing(usize),
    Http1,
    Http2,
}

/// The client's stream, with the HTTP/1.1 head timer and framing scan.
#[derive(Debug)]
pub struct ClientIo<I> {
    inner: I,
    track: Arc<ConnTrack>,
    head_timeout: Duration,
    /// When the head being read is late; each head only moves it.
    deadline: Deadline,
    /// While the head timer runs: how many requests had started when it was
    /// armed (a change means the head completed).
    armed: Option<u64>,
    /// Part of a head arrived since the timer was armed.
    head_bytes: bool,
    proto: Proto,
    /// Boxed: the stream is part of every connection task's future, whose
    /// size is what an idle connection costs.
    scan: Box<FrameScan>,
    /// The last write or flush did not complete.
    write_blocked: bool,
    /// The stream was ended for hyper (head timeout, oversized head).
    ended: bool,
    /// Where the 408 is counted.
    unrouted: Arc<PoolMetrics>,
    /// Bytes already read (and observed) that the next reader gets first:
    /// the sniffed preface, or what hyper had read when it let go.
    replay: Bytes,
}

impl<I> ClientIo<I> {
    /// Wraps a client stream accepted now; the head timer starts at once.
    pub fn new(
        inner: I,
        track: Arc<ConnTrack>,
        head_timeout: Duration,
        max_head: usize,
        unrouted: Arc<PoolMetrics>,
    ) -> ClientIo<I> {
        ClientIo {
            inner,
            track,
            head_timeout,
            deadline: Deadline::new(Instant::now() + head_timeout),
            armed: Some(0),
            head_bytes: false,
            proto: Proto::Sniffing(0),
            scan: Box::new(FrameScan::new(max_head)),
            write_blocked: false,
            ended: false,
            unrouted,
            replay: Bytes::new(),
        }
    }

    /// Gives `bytes`, already read through this stream, to the next reader.
    pub fn replay(&mut self, bytes: Bytes) {
        debug_assert!(self.replay.is_empty());
        self.replay = bytes;
    }

    /// Lets go of what only a head being read needs (its timer's
    /// allocation): the connection parks. The next head makes a new one.
    pub fn park(&mut self) {
        self.deadline.release();
    }

    /// Whether the connection was upgraded (it is a tunnel now).
    pub fn upgraded(&self) -> bool {
        self.track.upgraded.load(Ordering::Acquire)
    }

    fn watching(&self) -> bool {
        self.proto != Proto::Http2 && !self.track.upgraded.load(Ordering::Acquire)
    }

    /// Looks at bytes the client sent, before hyper does.
    fn observe(&mut self, read: &[u8]) {
        if let Proto::Sniffing(n) = self.proto {
            let want = &H2_PREFACE[n..];
            let k = want.len().min(read.len());
            self.proto = if read[..k] != want[..k] {
                Proto::Http1
            } else if n + k == H2_PREFACE.len() {
                Proto::Http2
            } else {
                Proto::Sniffing(n + k)
            };
            if self.proto == Proto::Http2 {
                self.armed = None;
                self.track.head_pending.store(false, Ordering::Release);
                return;
            }
        }
        if self.armed.is_none() && self.track.inflight.load(Ordering::Acquire) == 0 {
            // The first byte of the next head on a kept-alive connection.
            self.armed = Some(self.track.heads.load(Ordering::Acquire));
            self.head_bytes = false;
            self.deadline.set(Instant::now() + self.head_timeout);
        }
        if self.armed.is_some() && !self.head_bytes {
            self.head_bytes = true;
            self.track.head_pending.store(true, Ordering::Release);
        }
        if self.scan.following() {
            if let Some((index, flag)) = self.scan.feed(read) {
                let code = flag_code(index, flag);
                let _ = self.track.flagged.compare_exchange(
                    NONE,
                    code,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            }
        }
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> ClientIo<I> {
    /// Ends the stream for hyper, which then closes the connection. When the
    /// client was sending an HTTP/1.1 head and no response is under way, it
    /// first gets `err`'s answer: one best-effort write, never interleaved
    /// with a response.
    fn end(&mut self, cx: &mut Context<'_>, err: ProxyError) {
        self.ended = true;
        self.armed = None;
        let answer = self.head_bytes
            && self.proto == Proto::Http1
            && !self.write_blocked
            && self.track.inflight.load(Ordering::Acquire) == 0;
        let status = err.status();
        tracing::debug!(status = status.as_u16(), answered = answer, error = %err, "client connection ended");
        if !answer {
            return;
        }
        let reason = err.reason();
        let bytes = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reason}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            reason.len() + 1,
        );
        if let Poll::Ready(Ok(_)) = Pin::new(&mut self.inner).poll_write(cx, bytes.as_bytes()) {
            let _ = Pin::new(&mut self.inner).poll_flush(cx);
        }
        let armed_at = self.deadline.at() - self.head_timeout;
        let elapsed = Instant::now().saturating_duration_since(armed_at);
        self.unrouted.record(status.as_u16(), elapsed);
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> ClientIo<I> {
    /// Reads until the first bytes tell the HTTP/2 preface from an HTTP/1.1
    /// head, and keeps them for the next reader. `Ok(None)`: the stream
    /// ended first (closed, or cut by the head timer).
    pub async fn sniff(&mut self) -> io::Result<Option<bool>> {
        // Everything that has arrived is taken: the next reader gets it
        // whole (a malformed head is then refused with nothing left unread).
        // Read into uninitialized capacity and handed on as it is: nothing
        // zeroed or copied for each new connection.
        let mut seen = BytesMut::with_capacity(SNIFF_BUF);
        while let Proto::Sniffing(_) = self.proto {
            if seen.len() == seen.capacity() {
                seen.reserve(SNIFF_BUF);
            }
            if self.read_buf(&mut seen).await? == 0 {
                return Ok(None);
            }
        }
        self.replay = seen.freeze();
        Ok(Some(self.proto == Proto::Http2))
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> ClientIo<I> {
    /// Reads from the client stream, running the head timer and the scans.
    fn read_inner(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let watching = self.watching();
        if watching {
            if let Some(at) = self.armed {
                if self.track.heads.load(Ordering::Acquire) != at {
                    self.armed = None;
                }
            }
            if self.armed.is_some() && self.deadline.poll_passed(cx).is_ready() {
                self.end(cx, ProxyError::HeadTimeout);
                return Poll::Ready(Ok(()));
            }
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if watching && buf.filled().len() > before {
            self.observe(&buf.filled()[before..]);
            if self.scan.oversized() {
                // hyper never sees the head.
                buf.set_filled(before);
                self.end(cx, ProxyError::HeaderTooLarge);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> ClientIo<I> {
    /// `first`, the byte a parked connection woke up with, and whatever
    /// else has already arrived, for the next reader: hyper then gets the
    /// client's first segment whole, as on a new connection.
    pub async fn replay_with_available(&mut self, first: u8) {
        debug_assert!(self.replay.is_empty() && !self.ended);
        let mut more = BytesMut::with_capacity(SNIFF_BUF);
        more.put_u8(first);
        std::future::poll_fn(|cx| {
            // One read, not waiting: nothing more yet, or an error the next
            // read will see, and the replay is `first` alone.
            let _ = pin!(self.read_buf(&mut more)).poll(cx);
            Poll::Ready(())
        })
        .await;
        self.replay = more.freeze();
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for ClientIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(Ok(()));
        }
        if this.replay.is_empty() {
            return this.read_inner(cx, buf);
        }
        let n = this.replay.len().min(buf.remaining());
        buf.put_slice(&this.replay[..n]);
        if n == this.replay.len() {
            // An empty `Bytes` split off a buffer would keep it alive.
            this.replay = Bytes::new();
        } else {
            bytes::Buf::advance(&mut this.replay, n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for ClientIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.write_blocked = polled.is_pending();
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.write_blocked = polled.is_pending();
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.write_blocked = polled.is_pending();
        polled
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
