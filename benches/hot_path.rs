//! Hot-path pieces through the crate's real API.
//!
//! Run: `cargo bench --bench hot_path`
//!
//! What is measured: route match at 1, 10 and 100 routes; pool and server
//! pick (plain, weighted, sticky); request header rewrite (in the map, and
//! as the direct path does it); one snapshot load; metrics recording from 1
//! and 2 threads at once (CPU time per request when cores contend on the
//! same pool's counters).
//!
//! Results are in the README's "Performance" section with the machine and
//! date they were taken on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use cutover::balance;
use cutover::config::{self, PoolName};
use cutover::metrics::Metrics;
use cutover::proxy::headers;
use cutover::snapshot::{Objects, Routing, ServiceRuntime, Snapshot};
use http::{HeaderMap, HeaderValue};

/// A config with `routes` host routes (one service each) plus a catch-all.
fn config_text(routes: usize) -> String {
    let mut s = String::from("[server]\nlisten = \"127.0.0.1:0\"\n");
    for i in 0..routes {
        s += &format!("[[route]]\nhost = \"svc{i}.example.com\"\npath_prefix = \"/api/\"\nservice = \"svc{i}\"\n");
        s += &format!(
            "[[route]]\nhost = \"svc{i}.example.com\"\npath_prefix = \"/\"\nservice = \"svc{i}\"\n"
        );
    }
    s += "[[route]]\npath_prefix = \"/\"\nservice = \"svc0\"\n";
    for i in 0..routes.max(1) {
        s += &format!(
            "[service.svc{i}]\nsticky = {{ header = \"x-session-id\" }}\n\
             [service.svc{i}.pools.blue]\nservers = [\"127.0.0.1:5000\", \"127.0.0.1:5001\"]\n\
             [service.svc{i}.pools.green]\nservers = [\"127.0.0.1:6000\", \"127.0.0.1:6001\"]\n"
        );
    }
    s
}

fn snapshot(routes: usize, standby_weight: u8) -> Snapshot {
    let config = config::parse(&config_text(routes), std::path::Path::new("bench.toml"))
        .expect("bench config is valid");
    let (mut objects, _failures) = Objects::new(Arc::new(Metrics::new()));
    objects.build(
        Arc::new(config),
        1,
        None,
        &|sc| ServiceRuntime {
            active: sc.active,
            standby_weight,
            generation: 1,
            fallback: None,
        },
        &|_, _, _| true,
    )
}

fn route_match(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_match");
    for routes in [1usize, 10, 100] {
        let snap = snapshot(routes, 0);
        let host = format!("svc{}.example.com:8080", routes - 1);
        group.bench_with_input(BenchmarkId::from_parameter(routes), &routes, |b, _| {
            b.iter(|| {
                snap.router
                    .route(black_box(Some(host.as_str())), black_box("/api/v1/chat"))
            })
        });
    }
    group.finish();
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    let plain = snapshot(1, 0);
    let weighted = snapshot(1, 25);
    let mut no_key = HeaderMap::new();
    no_key.insert("host", HeaderValue::from_static("svc0.example.com"));
    let mut sticky = no_key.clone();
    sticky.insert("x-session-id", HeaderValue::from_static("3f2a9c1e-session"));
    for (name, snap, headers) in [
        ("active_only", &plain, &no_key),
        ("weighted_random", &weighted, &no_key),
        ("weighted_sticky", &weighted, &sticky),
    ] {
        let service = &snap.services[0];
        group.bench_function(name, |b| {
            b.iter(|| {
                let pool = balance::pick_pool(service, black_box(headers));
                balance::pick_server(service.pool(pool), service.balance, None)
                    .map(|s| s.inflight())
            })
        });
    }
    group.finish();
}

fn header_rewrite(c: &mut Criterion) {
    let mut base = HeaderMap::new();
    base.insert("host", HeaderValue::from_static("agent.example.com"));
    base.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    base.insert("accept", HeaderValue::from_static("*/*"));
    base.insert("content-type", HeaderValue::from_static("application/json"));
    base.insert("x-session-id", HeaderValue::from_static("abc"));
    let host = base.get("host").cloned();
    let client = "192.0.2.10".parse().unwrap();
    // In the map: an upgrade, or a client that sent `X-Forwarded-*` itself.
    c.bench_function("header_rewrite", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |h| headers::rewrite_request(h, client, "http", host.as_ref(), false),
            criterion::BatchSize::SmallInput,
        )
    });
    // The common case on a direct connection: hop-by-hop fields out of the
    // map, the `X-Forwarded-*` fields as lines written into the head.
    c.bench_function("header_rewrite_lines", |b| {
        b.iter_batched_ref(
            || (base.clone(), Vec::with_capacity(512)),
            |(h, head)| {
                headers::remove_hop_by_hop(h, false);
                headers::push_forwarded_lines(head, client, "http", host.as_ref());
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

fn snapshot_load(c: &mut Criterion) {
    let (routing, _publisher) = Routing::new(snapshot(10, 0));
    c.bench_function("snapshot_load", |b| b.iter(|| routing.load().generation));
    let _ = PoolName::Blue;
}

fn metrics_record(c: &mut Criterion) {
    let mut group = c.benchmark_group("metrics_record");
    let metrics = Metrics::new();
    let pool = Arc::new(metrics.pool("agent", "blue"));
    for threads in [1usize, 2] {
        group.bench_with_input(
            BenchmarkId::new("threads", threads),
            &threads,
            |b, &threads| {
                // CPU time per recorded request while every thread records into
                // the same pool at once (elapsed × threads / requests).
                b.iter_custom(|iters| {
                    let per_thread = iters.div_ceil(threads as u64);
                    let start = Instant::now();
                    std::thread::scope(|s| {
                        for _ in 0..threads {
                            let pool = pool.clone();
                            s.spawn(move || {
                                for _ in 0..per_thread {
                                    pool.record(200, Duration::from_micros(1500));
                                }
                            });
                        }
                    });
                    start.elapsed() * threads as u32
                })
            },
        );
    }
    group.finish();
}

criterion_group!(
    benches,
    route_match,
    pick,
    header_rewrite,
    snapshot_load,
    metrics_record
);
criterion_main!(benches);
