//! The last minute of every pool, one reading a second (pure: it is handed
//! the readings and the time, and turns them into [`Stats`]).
//!
//! A reading is a pool's cumulative totals ([`PoolTotals`]: what the
//! request path already counts for `/metrics`) and its in-flight count; a
//! sample is the difference of two consecutive readings, so keeping 61
//! readings gives 60 samples.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::config::PoolName;
use crate::metrics::PoolTotals;
use crate::wire::{PoolStats, Sample, ServiceStats, Stats, Window};

/// One pool at one moment.
#[derive(Debug, Clone)]
struct Reading {
    at: Instant,
    /// Milliseconds since the Unix epoch.
    time_ms: u64,
    totals: PoolTotals,
    inflight: u64,
}

/// Readings per pool, oldest first, at most `samples + 1` each.
#[derive(Debug)]
pub struct Ring {
    interval: Duration,
    samples: usize,
    pools: BTreeMap<(String, PoolName), VecDeque<Reading>>,
}

/// What a pool's readings add up to between `a` and `b`.
fn between(a: &Reading, b: &Reading) -> (u64, PoolTotals) {
    let ms = u64::try_from(b.at.duration_since(a.at).as_millis()).unwrap_or(u64::MAX);
    (ms, b.totals.since(&a.totals))
}

/// Per second: `n` over `ms` milliseconds (0 over no time).
fn per_second(n: u64, ms: u64) -> f64 {
    if ms == 0 {
        0.0
    } else {
        n as f64 * 1000.0 / ms as f64
    }
}

fn p99_ms(totals: &PoolTotals) -> f64 {
    totals.p99().as_secs_f64() * 1000.0
}

fn sample(a: &Reading, b: &Reading) -> Sample {
    let (ms, d) = between(a, b);
    Sample {
        time_ms: b.time_ms,
        ms,
        rps: per_second(d.requests, ms),
        error_rate: d.error_rate(),
        p99_ms: p99_ms(&d),
        inflight: b.inflight,
    }
}

fn window(readings: &VecDeque<Reading>) -> Window {
    let (Some(first), Some(last)) = (readings.front(), readings.back()) else {
        return Window::default();
    };
    let (ms, d) = between(first, last);
    Window {
        ms,
        requests: d.requests,
        errors: d.errors,
        rps: per_second(d.requests, ms),
        error_rate: d.error_rate(),
        p99_ms: p99_ms(&d),
    }
}

impl Ring {
    /// Keeps `samples` samples per pool, `interval` apart.
    pub fn new(interval: Duration, samples: usize) -> Ring {
        Ring {
            interval,
            samples,
            pools: BTreeMap::new(),
        }
    }

    /// Records one reading of every pool: service, pool, cumulative
    /// totals and in-flight count, at `now` (`time_ms`: the wall clock).
    /// A pool missing from `readings` (its service left the config) is
    /// forgotten.
    pub fn record<'a>(
        &mut self,
        now: Instant,
        time_ms: u64,
        readings: impl IntoIterator<Item = (&'a str, PoolName, PoolTotals, u64)>,
    ) {
        let mut next = BTreeMap::new();
        for (service, pool, totals, inflight) in readings {
            let key = (service.to_string(), pool);
            let mut kept = self.pools.remove(&key).unwrap_or_default();
            if kept.len() > self.samples {
                kept.pop_front();
            }
            kept.push_back(Reading {
                at: now,
                time_ms,
                totals,
                inflight,
            });
            next.insert(key, kept);
        }
        self.pools = next;
    }

    /// Every sample kept, and each pool's window.
    pub fn window(&self) -> Stats {
        self.stats(usize::MAX, true)
    }

    /// Only the newest sample of each pool.
    pub fn latest(&self) -> Stats {
        self.stats(1, false)
    }

    fn stats(&self, last: usize, with_window: bool) -> Stats {
        let mut services: Vec<ServiceStats> = Vec::new();
        for ((service, pool), readings) in &self.pools {
            let pairs = readings.iter().zip(readings.iter().skip(1));
            let all: Vec<Sample> = pairs.map(|(a, b)| sample(a, b)).collect();
            let samples = all[all.len().saturating_sub(last)..].to_vec();
            let stats = PoolStats {
                samples,
                window: if with_window {
                    window(readings)
                } else {
                    Window::default()
                },
            };
            match services.last_mut() {
                Some(s) if s.name == *service => {
                    s.pools.insert(*pool, stats);
                }
                _ => services.push(ServiceStats {
                    name: service.clone(),
                    pools: BTreeMap::from([(*pool, stats)]),
                }),
            }
        }
        Stats {
            interval_ms: u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX),
            services,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn samples_are_the_differences_of_readings_and_the_ring_keeps_a_minute() {
        let metrics = Metrics::new();
        let blue = metrics.pool("agent", "blue");
        let mut ring = Ring::new(SECOND, 60);
        let start = Instant::now();
        for second in 0..=70u64 {
            // Second n answers n requests, one of them a 503 from second 10 on.
            for i in 0..second {
                let status = if second >= 10 && i == 0 { 503 } else { 200 };
                blue.record(status, Duration::from_millis(3));
            }
            let at = start + SECOND * second as u32;
            ring.record(
                at,
                second * 1000,
                [("agent", PoolName::Blue, blue.totals(), 2)],
            );
        }

        let stats = ring.window();
        let pool = &stats.service("agent").unwrap().pools[&PoolName::Blue];
        assert_eq!(pool.samples.len(), 60);
        let newest = pool.samples.last().unwrap();
        assert_eq!((newest.time_ms, newest.ms), (70_000, 1000));
        assert_eq!(newest.rps, 70.0);
        assert!((newest.error_rate - 1.0 / 70.0).abs() < 1e-9);
        assert_eq!(newest.p99_ms, 5.0, "3 ms falls in the 5 ms bucket");
        assert_eq!(newest.inflight, 2);
        assert_eq!(pool.samples[0].rps, 11.0, "the oldest kept is second 11");
        assert_eq!(pool.window.ms, 60_000);
        assert_eq!(pool.window.requests, (11..=70).sum::<u64>());
        assert_eq!(pool.window.errors, 60);

        let latest = ring.latest();
        let pool = &latest.service("agent").unwrap().pools[&PoolName::Blue];
        assert_eq!(pool.samples, vec![newest.clone()]);
    }

    #[test]
    fn a_pool_no_longer_read_is_forgotten_and_one_reading_makes_no_sample() {
        let metrics = Metrics::new();
        let mut ring = Ring::new(SECOND, 60);
        let now = Instant::now();
        let totals = |pool: &str| metrics.pool("a", pool).totals();
        ring.record(now, 0, [("a", PoolName::Blue, totals("blue"), 0)]);
        assert!(ring.window().services[0].pools[&PoolName::Blue]
            .samples
            .is_empty());
        ring.record(
            now + SECOND,
            1000,
            [("b", PoolName::Green, totals("green"), 0)],
        );
        let stats = ring.window();
        assert_eq!(stats.services.len(), 1);
        assert_eq!(stats.services[0].name, "b");
        assert_eq!(stats.interval_ms, 1000);
    }
}
