//! Prometheus metrics: one [`Metrics`] with its own registry and the SPEC's
//! families, built once and passed down (no global statics).
//!
//! Label children are resolved when a pool's long-lived state is created
//! ([`PoolMetrics`]), so the hot path only calls `inc()` and `observe()`.
//! Gauges that mirror state (in-flight counts, health, active pool, weights)
//! are set by the control plane when it publishes or when `/metrics` is
//! scraped, not per request. The sliding-window statistics the canary and
//! automated rollback judge ([`PoolTotals`]) are read from the same
//! cumulative counters, so recording a request costs nothing more.

pub mod stream;

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use stream::StreamFamilies;
pub use stream::{Outcome, StreamMetrics, StreamTotals};

/// Latency buckets in seconds: fine enough below a second for p99 judgments,
/// long enough for model calls.
pub const LATENCY_BUCKETS: [f64; 20] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0,
    10.0, 20.0, 30.0, 60.0,
];

/// The SPEC's metric families in one registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// `cutover_requests_total{service,pool,code}`.
    pub requests: IntCounterVec,
    /// `cutover_request_duration_seconds{service,pool}`: time to the response head.
    pub duration: HistogramVec,
    /// `cutover_upstream_up{service,pool,server}`.
    pub upstream_up: IntGaugeVec,
    /// `cutover_active_pool{service,pool}`.
    pub active_pool: IntGaugeVec,
    /// `cutover_pool_weight_percent{service,pool}`.
    pub weight: IntGaugeVec,
    /// `cutover_switches_total{service,reason}`.
    pub switches: IntCounterVec,
    /// `cutover_inflight_requests{service,pool}`.
    pub inflight: IntGaugeVec,
    /// `cutover_connections_open{listener}`.
    pub connections: IntGaugeVec,
    /// `cutover_drain_cut_total{service,pool}`.
    pub drain_cut: IntCounterVec,
    /// `cutover_canary_aborts_total{service,criterion}`.
    pub canary_aborts: IntCounterVec,
    /// `cutover_admin_refused_total{code}`: admin requests refused with 401 or 403.
    pub admin_refused: IntCounterVec,
    /// `cutover_provider_up{provider}`: 1 while a provider's source (the
    /// Docker engine) answers.
    pub provider_up: IntGaugeVec,
    /// `cutover_build_info{version,commit,pgo}`: 1, for the build running.
    pub build_info: IntGaugeVec,
    /// `cutover_connection_panics_total`: panics caught in a client
    /// connection's or a request's task.
    pub panics: IntCounter,
    /// `cutover_acme_orders_total{domain,result}`: ACME orders finished,
    /// `result` = `issued` or `failed`.
    pub acme_orders: IntCounterVec,
    /// `cutover_acme_certificate_expiry_seconds{domain}`: the Unix time the
    /// certificate served for an ACME domain expires.
    pub acme_expiry: IntGaugeVec,
    /// `cutover_stream_ttfb_seconds`, `cutover_streams_open` and
    /// `cutover_streams_total`.
    pub streams: StreamFamilies,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .expect("metric name and labels are valid literals");
    registry
        .register(Box::new(c.clone()))
        .expect("each metric is registered once");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)
        .expect("metric name and labels are valid literals");
    registry
        .register(Box::new(g.clone()))
        .expect("each metric is registered once");
    g
}

/// `cutover_build_info`, its one series set to 1 (see [`crate::build_info`]).
fn build_info(registry: &Registry) -> IntGaugeVec {
    let g = gauge(
        registry,
        "cutover_build_info",
        "1, labelled with the version, the commit and whether the build is profile-optimized.",
        &["version", "commit", "pgo"],
    );
    let pgo = if crate::build_info::PGO {
        "true"
    } else {
        "false"
    };
    g.with_label_values(&[crate::build_info::VERSION, crate::build_info::COMMIT, pgo])
        .set(1);
    g
}

impl Metrics {
    /// Registers `cutover_cluster_connected` and `cutover_cluster_leader`
    /// (fleet mode only) and returns them, both 0.
    ///
    /// # Panics
    ///
    /// When called twice on one registry.
    pub fn cluster_gauges(&self) -> (IntGauge, IntGauge) {
        let make = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("metric name is a valid literal");
            self.registry
                .register(Box::new(g.clone()))
                .expect("the cluster gauges are registered once");
            g
        };
        (
            make(
                "cutover_cluster_connected",
                "1 while this replica reaches etcd (fleet mode), else 0.",
            ),
            make(
                "cutover_cluster_leader",
                "1 on the replica that leads the fleet (runs canary judgments and automated rollback), else 0.",
            ),
        )
    }

    /// A fresh registry with every family.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "cutover_request_duration_seconds",
                "Time from request start to the response head, by service and pool.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["service", "pool"],
        )
        .expect("metric name and labels are valid literals");
        registry
            .register(Box::new(duration.clone()))
            .expect("each metric is registered once");
        let panics = IntCounter::new(
            "cutover_connection_panics_total",
            "Panics caught in a client connection or request (a bug: each is logged).",
        )
        .expect("metric name is a valid literal");
        registry
            .register(Box::new(panics.clone()))
            .expect("each metric is registered once");
        Metrics {
            panics,
            requests: counter(
                &registry,
                "cutover_requests_total",
                "Requests answered, by service, pool and status code.",
                &["service", "pool", "code"],
            ),
            duration,
            upstream_up: gauge(
                &registry,
                "cutover_upstream_up",
                "1 when a pool server takes traffic (healthy), else 0.",
                &["service", "pool", "server"],
            ),
            active_pool: gauge(
                &registry,
                "cutover_active_pool",
                "1 for the active pool of a service, else 0.",
                &["service", "pool"],
            ),
            weight: gauge(
                &registry,
                "cutover_pool_weight_percent",
                "Percent of new requests sent to the pool.",
                &["service", "pool"],
            ),
            switches: counter(
                &registry,
                "cutover_switches_total",
                "Switches of the active pool, by reason.",
                &["service", "reason"],
            ),
            inflight: gauge(
                &registry,
                "cutover_inflight_requests",
                "Requests, streams and tunnels in flight, by pool.",
                &["service", "pool"],
            ),
            connections: gauge(
                &registry,
                "cutover_connections_open",
                "Open client connections, by listener.",
                &["listener"],
            ),
            drain_cut: counter(
                &registry,
                "cutover_drain_cut_total",
                "Requests still in flight on an old pool when its drain_timeout passed, cut.",
                &["service", "pool"],
            ),
            canary_aborts: counter(
                &registry,
                "cutover_canary_aborts_total",
                "Staged rollouts aborted, by the criterion that failed (or operator).",
                &["service", "criterion"],
            ),
            admin_refused: counter(
                &registry,
                "cutover_admin_refused_total",
                "Admin requests refused, by status code (401, 403).",
                &["code"],
            ),
            provider_up: gauge(
                &registry,
                "cutover_provider_up",
                "1 while a provider's source (the Docker engine) answers, else 0.",
                &["provider"],
            ),
            build_info: build_info(&registry),
            acme_orders: counter(
                &registry,
                "cutover_acme_orders_total",
                "ACME orders finished, by domain and result (issued, failed).",
                &["domain", "result"],
            ),
            acme_expiry: gauge(
                &registry,
                "cutover_acme_certificate_expiry_seconds",
                "Unix time the certificate served for an ACME domain expires.",
                &["domain"],
            ),
            streams: StreamFamilies::register(&registry),
            registry,
        }
    }

    /// The handles of one pool (`service` and `pool` empty for answers given
    /// before any pool was chosen).
    pub fn pool(&self, service: &str, pool: &str) -> PoolMetrics {
        if !service.is_empty() {
            // Every series of a pool exists from the start, at 0, so
            // dashboards and alerts see it before the first event.
            self.drain_cut.with_label_values(&[service, pool]);
            self.inflight.with_label_values(&[service, pool]);
            for reason in ["manual", "rollback", "auto_rollback", "canary"] {
                self.switches.with_label_values(&[service, reason]);
            }
        }
        PoolMetrics {
            panics: self.panics.clone(),
            requests: self.requests.clone(),
            service: service.to_string(),
            pool: pool.to_string(),
            codes: std::array::from_fn(|_| OnceLock::new()),
            duration: self.duration.with_label_values(&[service, pool]),
            streams: self.streams.pool(service, pool),
        }
    }

    /// Everything in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("the text encoder writes into a Vec");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    /// The gauge of one listener's open connections.
    pub fn connections(&self, listener: &str) -> IntGauge {
        self.connections.with_label_values(&[listener])
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Counts one open connection in a listener's gauge until dropped, so the
/// gauge cannot drift whichever way the connection ends.
#[derive(Debug)]
pub struct OpenConnection(IntGauge);

impl OpenConnection {
    /// Counts a connection in `gauge`.
    pub fn new(gauge: &IntGauge) -> OpenConnection {
        gauge.inc();
        OpenConnection(gauge.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Status codes 100..=599 each get a lazily resolved counter.
const CODES: usize = 500;

/// The pre-resolved metric handles of one pool.
#[derive(Debug)]
pub struct PoolMetrics {
    /// `cutover_connection_panics_total`, shared by every pool.
    pub panics: IntCounter,
    requests: IntCounterVec,
    service: String,
    pool: String,
    codes: [OnceLock<IntCounter>; CODES],
    duration: Histogram,
    /// The pool's stream handles.
    pub streams: StreamMetrics,
}

impl PoolMetrics {
    fn code(&self, status: u16) -> Option<&IntCounter> {
        let i = usize::from(status)
            .checked_sub(100)
            .filter(|i| *i < CODES)?;
        Some(self.codes[i].get_or_init(|| {
            self.requests.with_label_values(&[
                self.service.as_str(),
                self.pool.as_str(),
                itoa(status).as_str(),
            ])
        }))
    }

    /// Counts one answer with `status`, `elapsed` after the request started.
    pub fn record(&self, status: u16, elapsed: Duration) {
        if let Some(c) = self.code(status) {
            c.inc();
        }
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// The cumulative totals since start, for sliding-window analysis.
    pub fn totals(&self) -> PoolTotals {
        let errors = (500..600u16)
            .filter_map(|s| self.codes[usize::from(s) - 100].get())
            .map(|c| c.get())
            .sum();
        let proto = prometheus::core::Metric::metric(&self.duration);
        let h = proto.get_histogram();
        PoolTotals {
            requests: h.get_sample_count(),
            errors,
            buckets: h
                .get_bucket()
                .iter()
                .map(|b| b.cumulative_count())
                .collect(),
            streams: self.streams.totals(),
        }
    }
}

fn itoa(n: u16) -> String {
    n.to_string()
}

/// Cumulative counts of one pool at one moment; the difference of two is a
/// window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolTotals {
    /// Requests answered.
    pub requests: u64,
    /// Of those, 5xx answers (including the proxy's own 502/503/504).
    pub errors: u64,
    /// Cumulative latency bucket counts, one per [`LATENCY_BUCKETS`] entry.
    pub buckets: Vec<u64>,
    /// The pool's streams.
    pub streams: StreamTotals,
}

impl PoolTotals {
    /// `self - earlier`: what happened between the two readings.
    pub fn since(&self, earlier: &PoolTotals) -> PoolTotals {
        PoolTotals {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            buckets: bucket_diff(&self.buckets, &earlier.buckets),
            streams: self.streams.since(&earlier.streams),
        }
    }

    /// Error share (0 when there were no requests).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// The 99th percentile latency, as the upper bound of the bucket that
    /// holds it (requests beyond the last bucket count as twice its bound).
    pub fn p99(&self) -> Duration {
        p99(self.requests, &self.buckets)
    }
}

/// `now - earlier`, bucket by bucket.
fn bucket_diff(now: &[u64], earlier: &[u64]) -> Vec<u64> {
    now.iter()
        .enumerate()
        .map(|(i, b)| b.saturating_sub(earlier.get(i).copied().unwrap_or(0)))
        .collect()
}

/// The 99th percentile of `count` samples in cumulative `buckets` (one per
/// [`LATENCY_BUCKETS`] entry), as the upper bound of the bucket that holds
/// it; samples beyond the last bucket count as twice its bound.
fn p99(count: u64, buckets: &[u64]) -> Duration {
    if count == 0 {
        return Duration::ZERO;
    }
    let rank = (count as f64 * 0.99).ceil() as u64;
    for (i, c) in buckets.iter().enumerate() {
        if *c >= rank {
            return Duration::from_secs_f64(LATENCY_BUCKETS[i]);
        }
    }
    Duration::from_secs_f64(LATENCY_BUCKETS[LATENCY_BUCKETS.len() - 1] * 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_moves_the_named_series() {
        let m = Metrics::new();
        let p = m.pool("agent", "blue");
        p.record(200, Duration::from_millis(3));
        p.record(200, Duration::from_millis(3));
        p.record(503, Duration::from_millis(700));
        let text = m.render();
        assert!(
            text.contains(r#"cutover_requests_total{code="200",pool="blue",service="agent"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"cutover_requests_total{code="503",pool="blue",service="agent"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"cutover_request_duration_seconds_count{pool="blue",service="agent"} 3"#
            ),
            "{text}"
        );
    }

    #[test]
    fn totals_window_gives_error_rate_and_p99() {
        let m = Metrics::new();
        let p = m.pool("agent", "green");
        let before = p.totals();
        for _ in 0..98 {
            p.record(200, Duration::from_millis(20));
        }
        p.record(500, Duration::from_millis(20));
        p.record(200, Duration::from_millis(1800));
        let w = p.totals().since(&before);
        assert_eq!(w.requests, 100);
        assert_eq!(w.errors, 1);
        assert!((w.error_rate() - 0.01).abs() < 1e-9);
        // 99 of 100 are at or below the 25 ms bucket.
        assert_eq!(w.p99(), Duration::from_millis(25));
        p.record(200, Duration::from_millis(1800));
        let w = p.totals().since(&before);
        assert_eq!(w.p99(), Duration::from_secs(2));
    }
}
