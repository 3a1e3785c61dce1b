//! Which responses are streams, and how each one ends, for the pool's
//! stream metrics.
//!
//! A response is a stream when it is a `text/event-stream`, a WebSocket
//! tunnel, or still sending a second after its head. A [`Track`] lives in
//! the response body: it notes the first body byte (for
//! `cutover_stream_ttfb_seconds`), counts the stream open once it is one,
//! and records its outcome when the body ends, fails or is dropped. It holds
//! no handle of its own: the body passes its pool's metrics in, so tracking
//! costs a clock read per frame until the response is known to be a stream
//! or has ended, and nothing else.

use std::time::{Duration, Instant};

use http::header::CONTENT_TYPE;
use http::HeaderMap;

use crate::http1;
use crate::metrics::{Outcome, StreamMetrics};

/// A response sending for this long after its head is a stream.
pub const STREAM_AFTER: Duration = Duration::from_secs(1);

/// Whether `headers` announce a server-sent-event stream.
pub fn is_event_stream(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= 17 && v[..17].eq_ignore_ascii_case(b"text/event-stream")
    })
}

/// The stream side of one response body. Kept small: it lives in every
/// response body, and a proxy holding many open streams holds one each.
#[derive(Debug)]
pub struct Track {
    /// When the request started (time to first byte counts from here).
    start: Instant,
    /// When the response head came, in milliseconds after `start`
    /// (the one-second rule counts from here).
    head_ms: u32,
    /// Time to the first body byte in microseconds, once it went out
    /// (0: not yet; saturating, past an hour).
    first_byte_us: u32,
    phase: Phase,
}

/// `d` in whole units of `per_sec`, saturating, at least 1 (0 means unset).
fn units(d: Duration, per_sec: u128) -> u32 {
    u32::try_from(d.as_nanos() * per_sec / 1_000_000_000)
        .unwrap_or(u32::MAX)
        .max(1)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not (yet) a stream.
    Short,
    /// Counted open.
    Open,
    /// Its outcome is recorded.
    Ended,
}

impl Track {
    /// A response whose request started at `start` and whose head came
    /// `head` after it; an event stream counts as open at once.
    pub fn new(start: Instant, head: Duration, event_stream: bool, m: &StreamMetrics) -> Track {
        let mut track = Track {
            start,
            head_ms: units(head, 1_000),
            first_byte_us: 0,
            phase: Phase::Short,
        };
        if event_stream {
            track.open(m);
        }
        track
    }

    fn open(&mut self, m: &StreamMetrics) {
        m.opened(self.first_byte());
        self.phase = Phase::Open;
    }

    fn first_byte(&self) -> Option<Duration> {
        (self.first_byte_us > 0).then(|| Duration::from_micros(self.first_byte_us.into()))
    }

    /// Whether the response has been sending for [`STREAM_AFTER`] at `now`.
    fn long(&self, now: Instant) -> bool {
        let sending = now.duration_since(self.start);
        sending >= STREAM_AFTER + Duration::from_millis(self.head_ms.into())
    }

    /// Whether the response is counted as an open stream.
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// A frame went out; `data` when it carries body bytes.
    pub fn frame(&mut self, data: bool, m: &StreamMetrics) {
        if self.phase == Phase::Ended {
            return;
        }
        let timed = self.first_byte_us > 0;
        if timed && self.phase == Phase::Open {
            return;
        }
        let now = Instant::now();
        if data && !timed {
            let ttfb = now.duration_since(self.start);
            self.first_byte_us = units(ttfb, 1_000_000);
            if self.phase == Phase::Open {
                m.observe_ttfb(ttfb);
            }
        }
        if self.phase == Phase::Short && self.long(now) {
            self.open(m);
        }
    }

    /// The body ended (or broke off) with `outcome`: a stream records it;
    /// a response that was still sending a second after its head is a
    /// stream that ends now.
    pub fn end(&mut self, outcome: Outcome, m: &StreamMetrics) {
        if self.phase == Phase::Short && self.long(Instant::now()) {
            self.open(m);
        }
        if self.phase == Phase::Open {
            m.closed(outcome);
        }
        self.phase = Phase::Ended;
    }
}

/// The outcome of a stream whose upstream body failed with `e`.
pub fn outcome_of(e: &http1::Error) -> Outcome {
    match e {
        http1::Error::Cut => Outcome::DrainCut,
        http1::Error::TimedOut => Outcome::Timeout,
        http1::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => Outcome::Timeout,
        // The client's request body failed: the client's doing.
        http1::Error::Body(_) => Outcome::ClientAbort,
        _ => Outcome::UpstreamAbort,
    }
}

/// The stream side of a WebSocket tunnel: open from the 101 on; the
/// outcome is set when the tunnel ends, and a tunnel dropped before that
/// (its task aborted by the cut at the end of a drain) is `drain_cut`.
#[derive(Debug)]
pub struct TunnelTrack<'m> {
    metrics: &'m StreamMetrics,
    outcome: Outcome,
}

impl<'m> TunnelTrack<'m> {
    /// Counts a tunnel open; its 101 came `ttfb` after the request.
    pub fn new(metrics: &'m StreamMetrics, ttfb: Duration) -> TunnelTrack<'m> {
        metrics.opened(Some(ttfb));
        TunnelTrack {
            metrics,
            outcome: Outcome::DrainCut,
        }
    }

    /// How the tunnel ended.
    pub fn set(&mut self, outcome: Outcome) {
        self.outcome = outcome;
    }
}

impl Drop for TunnelTrack<'_> {
    fn drop(&mut self) {
        self.metrics.closed(self.outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use http::HeaderValue;

    #[test]
    fn event_streams_are_told_by_their_content_type() {
        let mut h = HeaderMap::new();
        assert!(!is_event_stream(&h));
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("Text/Event-Stream; charset=utf-8"),
        );
        assert!(is_event_stream(&h));
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
        assert!(!is_event_stream(&h));
    }

    #[test]
    fn a_short_response_is_no_stream_and_an_event_stream_is_one_at_once() {
        let m = Metrics::new();
        let p = m.pool("agent", "blue");
        let mut short = Track::new(Instant::now(), Duration::ZERO, false, &p.streams);
        short.frame(true, &p.streams);
        short.end(Outcome::Completed, &p.streams);
        assert_eq!(p.streams.ended(Outcome::Completed), 0);
        let mut sse = Track::new(Instant::now(), Duration::ZERO, true, &p.streams);
        assert_eq!(p.streams.open(), 1);
        sse.frame(true, &p.streams);
        sse.end(Outcome::UpstreamAbort, &p.streams);
        sse.end(Outcome::ClientAbort, &p.streams);
        assert_eq!(p.streams.open(), 0);
        assert_eq!(p.streams.ended(Outcome::UpstreamAbort), 1);
        assert_eq!(p.streams.ended(Outcome::ClientAbort), 0);
    }

    #[test]
    fn a_response_still_sending_after_a_second_becomes_a_stream() {
        let m = Metrics::new();
        let p = m.pool("agent", "blue");
        let mut long = Track {
            start: Instant::now() - STREAM_AFTER,
            head_ms: 0,
            first_byte_us: 0,
            phase: Phase::Short,
        };
        long.frame(true, &p.streams);
        assert!(long.is_open());
        long.end(Outcome::Completed, &p.streams);
        assert_eq!(p.streams.ended(Outcome::Completed), 1);
    }
}
