//! Stream metrics of one pool: time to the first body byte, streams open,
//! and how streams end.
//!
//! A stream is a `text/event-stream` response, a WebSocket tunnel, or any
//! response still sending a second after its request started. The handles
//! are resolved once per pool ([`StreamMetrics`]), so recording costs an
//! atomic add.

use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge};
use prometheus::{IntGaugeVec, Opts, Registry};

/// How a stream ended: the `outcome` label of `cutover_streams_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream ended it properly (or, for a tunnel, one side closed).
    Completed,
    /// The client went away before the end.
    ClientAbort,
    /// The upstream broke it off: connection closed or failed mid-body.
    UpstreamAbort,
    /// The proxy ended it at the end of its pool's drain.
    DrainCut,
    /// A deadline passed.
    Timeout,
}

impl Outcome {
    /// Every outcome, in label order.
    pub const ALL: [Outcome; 5] = [
        Outcome::Completed,
        Outcome::ClientAbort,
        Outcome::UpstreamAbort,
        Outcome::DrainCut,
        Outcome::Timeout,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::ClientAbort => "client_abort",
            Outcome::UpstreamAbort => "upstream_abort",
            Outcome::DrainCut => "drain_cut",
            Outcome::Timeout => "timeout",
        }
    }
}

/// The stream families, registered once.
#[derive(Debug, Clone)]
pub struct StreamFamilies {
    /// `cutover_stream_ttfb_seconds{service,pool}`.
    pub ttfb: HistogramVec,
    /// `cutover_streams_open{service,pool}`.
    pub open: IntGaugeVec,
    /// `cutover_streams_total{service,pool,outcome}`.
    pub total: IntCounterVec,
}

impl StreamFamilies {
    /// Registers the families in `registry`.
    pub fn register(registry: &Registry) -> StreamFamilies {
        let ttfb = HistogramVec::new(
            HistogramOpts::new(
                "cutover_stream_ttfb_seconds",
                "Time from a stream's request to the first byte of its response body, by service and pool.",
            )
            .buckets(super::LATENCY_BUCKETS.to_vec()),
            &["service", "pool"],
        )
        .expect("metric name and labels are valid literals");
        let open = IntGaugeVec::new(
            Opts::new(
                "cutover_streams_open",
                "Streams open (event streams, WebSocket tunnels, responses sending for over 1 s), by pool.",
            ),
            &["service", "pool"],
        )
        .expect("metric name and labels are valid literals");
        let total = IntCounterVec::new(
            Opts::new(
                "cutover_streams_total",
                "Streams ended, by pool and outcome (completed, client_abort, upstream_abort, drain_cut, timeout).",
            ),
            &["service", "pool", "outcome"],
        )
        .expect("metric name and labels are valid literals");
        for c in [
            Box::new(ttfb.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(open.clone()),
            Box::new(total.clone()),
        ] {
            registry
                .register(c)
                .expect("each metric is registered once");
        }
        StreamFamilies { ttfb, open, total }
    }

    /// The handles of one pool; every series exists from here on, at 0.
    pub fn pool(&self, service: &str, pool: &str) -> StreamMetrics {
        StreamMetrics {
            ttfb: self.ttfb.with_label_values(&[service, pool]),
            open: self.open.with_label_values(&[service, pool]),
            total: Outcome::ALL.map(|o| self.total.with_label_values(&[service, pool, o.as_str()])),
        }
    }
}

/// The pre-resolved stream handles of one pool.
#[derive(Debug)]
pub struct StreamMetrics {
    ttfb: Histogram,
    open: IntGauge,
    total: [IntCounter; 5],
}

impl StreamMetrics {
    /// A stream starts, `ttfb` after its request (when its first body byte
    /// has gone out by then).
    pub fn opened(&self, ttfb: Option<Duration>) {
        self.open.inc();
        if let Some(t) = ttfb {
            self.observe_ttfb(t);
        }
    }

    /// The first body byte of an open stream, `ttfb` after its request.
    pub fn observe_ttfb(&self, ttfb: Duration) {
        self.ttfb.observe(ttfb.as_secs_f64());
    }

    /// An open stream ended with `outcome`.
    pub fn closed(&self, outcome: Outcome) {
        self.open.dec();
        self.total[outcome as usize].inc();
    }

    /// Streams open now.
    pub fn open(&self) -> i64 {
        self.open.get()
    }

    /// Streams ended with `outcome` since start.
    pub fn ended(&self, outcome: Outcome) -> u64 {
        self.total[outcome as usize].get()
    }

    /// The cumulative counts the judgments read.
    pub(super) fn totals(&self) -> StreamTotals {
        let proto = prometheus::core::Metric::metric(&self.ttfb);
        let h = proto.get_histogram();
        StreamTotals {
            finished: self.total.iter().map(IntCounter::get).sum(),
            upstream_aborts: self.ended(Outcome::UpstreamAbort),
            ttfb_count: h.get_sample_count(),
            ttfb_buckets: h
                .get_bucket()
                .iter()
                .map(|b| b.cumulative_count())
                .collect(),
        }
    }
}

/// Cumulative stream counts of one pool at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamTotals {
    /// Streams ended, whatever the outcome.
    pub finished: u64,
    /// Of those, ended by the upstream.
    pub upstream_aborts: u64,
    /// Streams whose first byte was timed.
    pub ttfb_count: u64,
    /// Cumulative time-to-first-byte bucket counts, one per
    /// [`LATENCY_BUCKETS`](super::LATENCY_BUCKETS) entry.
    pub ttfb_buckets: Vec<u64>,
}

impl StreamTotals {
    /// `self - earlier`.
    pub fn since(&self, earlier: &StreamTotals) -> StreamTotals {
        StreamTotals {
            finished: self.finished.saturating_sub(earlier.finished),
            upstream_aborts: self.upstream_aborts.saturating_sub(earlier.upstream_aborts),
            ttfb_count: self.ttfb_count.saturating_sub(earlier.ttfb_count),
            ttfb_buckets: super::bucket_diff(&self.ttfb_buckets, &earlier.ttfb_buckets),
        }
    }

    /// Upstream aborts over finished streams (0 when none finished).
    pub fn abort_rate(&self) -> f64 {
        if self.finished == 0 {
            0.0
        } else {
            self.upstream_aborts as f64 / self.finished as f64
        }
    }

    /// The 99th percentile time to first byte (see [`super::p99`]).
    pub fn ttfb_p99(&self) -> Duration {
        super::p99(self.ttfb_count, &self.ttfb_buckets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn streams_move_the_named_series() {
        let m = Metrics::new();
        let p = m.pool("agent", "green");
        p.streams.opened(Some(Duration::from_millis(30)));
        p.streams.opened(None);
        p.streams.closed(Outcome::UpstreamAbort);
        let text = m.render();
        for line in [
            r#"cutover_streams_open{pool="green",service="agent"} 1"#,
            r#"cutover_streams_total{outcome="upstream_abort",pool="green",service="agent"} 1"#,
            r#"cutover_streams_total{outcome="drain_cut",pool="green",service="agent"} 0"#,
            r#"cutover_stream_ttfb_seconds_count{pool="green",service="agent"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn abort_rate_counts_upstream_aborts_over_finished_streams() {
        let m = Metrics::new();
        let p = m.pool("agent", "green");
        let before = p.totals();
        for outcome in [
            Outcome::Completed,
            Outcome::ClientAbort,
            Outcome::UpstreamAbort,
            Outcome::UpstreamAbort,
        ] {
            p.streams.opened(Some(Duration::from_millis(20)));
            p.streams.closed(outcome);
        }
        let w = p.totals().since(&before).streams;
        assert_eq!((w.finished, w.upstream_aborts), (4, 2));
        assert!((w.abort_rate() - 0.5).abs() < 1e-9);
        assert_eq!(w.ttfb_p99(), Duration::from_millis(25));
    }
}
