//! What a replica knows of its fleet: whether it reaches etcd, whether it
//! leads, the other replicas and the counters each publishes under its
//! lease. The etcd store ([`super::etcd`]) writes it; status, metrics and
//! the canary analysis read it.
//!
//! The counters are cumulative per-pool totals; the leader judges canaries
//! and rollback watches on their sum over every replica, so a pool failing
//! only on one replica's traffic still counts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use prometheus::IntGauge;
use serde::{Deserialize, Serialize};

use crate::config::PoolName;
use crate::metrics::PoolTotals;
use crate::wire::{ClusterStatus, ReplicaStatus};

/// Where a replica's release state came from at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateFrom {
    /// Read from etcd.
    Etcd,
    /// etcd could not be reached: the local copy of the last state seen.
    LocalCopy,
}

impl StateFrom {
    /// The name status shows.
    pub fn as_str(self) -> &'static str {
        match self {
            StateFrom::Etcd => "etcd",
            StateFrom::LocalCopy => "local_copy",
        }
    }
}

/// One pool's cumulative counts as published.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Requests answered.
    pub requests: u64,
    /// Of those, 5xx.
    pub errors: u64,
    /// Cumulative latency bucket counts.
    pub buckets: Vec<u64>,
    /// Streams ended, whatever the outcome.
    #[serde(default)]
    pub streams_finished: u64,
    /// Of those, ended by the upstream.
    #[serde(default)]
    pub stream_upstream_aborts: u64,
    /// Streams whose first byte was timed.
    #[serde(default)]
    pub ttfb_count: u64,
    /// Cumulative time-to-first-byte bucket counts.
    #[serde(default)]
    pub ttfb_buckets: Vec<u64>,
}

impl From<&PoolTotals> for Counts {
    fn from(t: &PoolTotals) -> Counts {
        Counts {
            requests: t.requests,
            errors: t.errors,
            buckets: t.buckets.clone(),
            streams_finished: t.streams.finished,
            stream_upstream_aborts: t.streams.upstream_aborts,
            ttfb_count: t.streams.ttfb_count,
            ttfb_buckets: t.streams.ttfb_buckets.clone(),
        }
    }
}

/// Adds `more` to `sum` bucket by bucket, growing `sum` when shorter.
fn add_buckets(sum: &mut Vec<u64>, more: &[u64]) {
    if sum.len() < more.len() {
        sum.resize(more.len(), 0);
    }
    for (s, c) in sum.iter_mut().zip(more) {
        *s += c;
    }
}

/// What one replica publishes under its lease.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Its name.
    pub name: String,
    /// The highest release-state generation it has applied.
    pub generation: u64,
    /// When it published (RFC 3339).
    #[serde(default)]
    pub last_seen: String,
    /// Per service, per pool.
    #[serde(default)]
    pub counters: BTreeMap<String, BTreeMap<PoolName, Counts>>,
}

/// The fleet as this replica knows it.
#[derive(Debug)]
pub struct Fleet {
    name: String,
    state_from: Mutex<StateFrom>,
    connected: AtomicBool,
    leader: AtomicBool,
    leader_name: Mutex<Option<String>>,
    /// Every replica's last report, by name (this one's included, as etcd
    /// holds it).
    replicas: Mutex<BTreeMap<String, Report>>,
    /// What this replica publishes next.
    local: Mutex<Report>,
    connected_gauge: IntGauge,
    leader_gauge: IntGauge,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Fleet {
    /// A replica named `name`, not connected, not leading; `gauges` are
    /// `cutover_cluster_connected` and `cutover_cluster_leader`.
    pub fn new(name: &str, gauges: (IntGauge, IntGauge)) -> Fleet {
        Fleet {
            name: name.to_string(),
            state_from: Mutex::new(StateFrom::Etcd),
            connected: AtomicBool::new(false),
            leader: AtomicBool::new(false),
            leader_name: Mutex::new(None),
            replicas: Mutex::new(BTreeMap::new()),
            local: Mutex::new(Report {
                name: name.to_string(),
                ..Report::default()
            }),
            connected_gauge: gauges.0,
            leader_gauge: gauges.1,
        }
    }

    /// This replica's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this replica reaches etcd now.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Whether this replica leads the fleet now.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Acquire)
    }

    /// Records whether etcd answers; returns the previous value.
    pub(super) fn set_connected(&self, connected: bool) -> bool {
        self.connected_gauge.set(i64::from(connected));
        self.connected.swap(connected, Ordering::AcqRel)
    }

    /// Records whether this replica leads, and who does; returns whether
    /// it led before.
    pub(super) fn set_leader(&self, leading: bool, leader: Option<String>) -> bool {
        self.leader_gauge.set(i64::from(leading));
        *lock(&self.leader_name) = leader;
        self.leader.swap(leading, Ordering::AcqRel)
    }

    pub(super) fn set_state_from(&self, from: StateFrom) {
        *lock(&self.state_from) = from;
    }

    /// Records a replica's report as etcd holds it.
    pub(super) fn seen(&self, report: Report) {
        lock(&self.replicas).insert(report.name.clone(), report);
    }

    /// A replica's lease ended (it stopped, or was cut off too long).
    pub(super) fn gone(&self, name: &str) {
        lock(&self.replicas).remove(name);
    }

    /// Replaces every replica's report (after a reconnect).
    pub(super) fn reset(&self, reports: Vec<Report>) {
        let mut replicas = lock(&self.replicas);
        replicas.clear();
        for r in reports {
            replicas.insert(r.name.clone(), r);
        }
    }

    /// What this replica publishes next, stamped now.
    pub(super) fn local_report(&self) -> Report {
        let mut report = lock(&self.local).clone();
        report.last_seen = crate::wire::rfc3339_millis(std::time::SystemTime::now());
        report
    }

    /// Sets what this replica publishes: the highest generation it applied
    /// and its own per-pool totals.
    pub fn set_local(
        &self,
        generation: u64,
        counters: BTreeMap<String, BTreeMap<PoolName, Counts>>,
    ) {
        let mut local = lock(&self.local);
        local.generation = generation;
        local.counters = counters;
    }

    /// The totals of `pool` of `service` over the fleet: `own` (this
    /// replica's, read now) plus what every other replica last published.
    pub fn summed(&self, service: &str, pool: PoolName, own: PoolTotals) -> PoolTotals {
        let replicas = lock(&self.replicas);
        let mut sum = own;
        for report in replicas.values().filter(|r| r.name != self.name) {
            let Some(counts) = report.counters.get(service).and_then(|p| p.get(&pool)) else {
                continue;
            };
            sum.requests += counts.requests;
            sum.errors += counts.errors;
            add_buckets(&mut sum.buckets, &counts.buckets);
            sum.streams.finished += counts.streams_finished;
            sum.streams.upstream_aborts += counts.stream_upstream_aborts;
            sum.streams.ttfb_count += counts.ttfb_count;
            add_buckets(&mut sum.streams.ttfb_buckets, &counts.ttfb_buckets);
        }
        sum
    }

    /// The `cluster` block of status.
    pub fn status(&self) -> ClusterStatus {
        let mut replicas: BTreeMap<String, ReplicaStatus> = lock(&self.replicas)
            .values()
            .map(|r| {
                (
                    r.name.clone(),
                    ReplicaStatus {
                        name: r.name.clone(),
                        generation: r.generation,
                        last_seen: r.last_seen.clone(),
                    },
                )
            })
            .collect();
        if self.connected() {
            // This replica as it is now, not as it last published.
            let me = self.local_report();
            replicas.insert(
                me.name.clone(),
                ReplicaStatus {
                    name: me.name,
                    generation: me.generation,
                    last_seen: me.last_seen,
                },
            );
        }
        ClusterStatus {
            name: self.name.clone(),
            leader: lock(&self.leader_name).clone(),
            connected: self.connected(),
            state_from: lock(&self.state_from).as_str().to_string(),
            replicas: replicas.into_values().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(name: &str) -> Fleet {
        let g = || IntGauge::new("g", "g").unwrap();
        Fleet::new(name, (g(), g()))
    }

    #[test]
    fn the_sum_is_this_replicas_live_totals_plus_every_other_report() {
        let f = fleet("a");
        let report = |name: &str, requests, errors| Report {
            name: name.into(),
            counters: BTreeMap::from([(
                "app".to_string(),
                BTreeMap::from([(
                    PoolName::Green,
                    Counts {
                        requests,
                        errors,
                        buckets: vec![requests],
                        streams_finished: requests,
                        stream_upstream_aborts: errors,
                        ..Counts::default()
                    },
                )]),
            )]),
            ..Report::default()
        };
        // Its own stale report is not counted: the live totals are.
        f.seen(report("a", 1000, 1000));
        f.seen(report("b", 10, 5));
        f.seen(report("c", 20, 0));
        let own = PoolTotals {
            requests: 1,
            errors: 0,
            buckets: vec![1, 1],
            streams: crate::metrics::StreamTotals {
                finished: 2,
                upstream_aborts: 1,
                ..Default::default()
            },
        };
        let sum = f.summed("app", PoolName::Green, own);
        assert_eq!((sum.requests, sum.errors), (31, 5));
        assert_eq!(sum.buckets, vec![31, 1]);
        assert_eq!((sum.streams.finished, sum.streams.upstream_aborts), (32, 6));
        f.gone("b");
        let sum = f.summed("app", PoolName::Green, PoolTotals::default());
        assert_eq!((sum.requests, sum.errors), (20, 0));
        assert_eq!(
            f.summed("app", PoolName::Blue, PoolTotals::default())
                .requests,
            0
        );
    }
}
