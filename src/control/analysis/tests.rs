use super::*;
use crate::metrics::{StreamTotals, LATENCY_BUCKETS};

/// Totals of `n` requests, `errors` of them 5xx, all at `latency`.
fn totals(n: u64, errors: u64, latency: Duration) -> PoolTotals {
    let buckets = LATENCY_BUCKETS
        .iter()
        .map(|b| if latency.as_secs_f64() <= *b { n } else { 0 })
        .collect();
    PoolTotals {
        requests: n,
        errors,
        buckets,
        streams: StreamTotals::default(),
    }
}

fn add(a: &PoolTotals, b: &PoolTotals) -> PoolTotals {
    PoolTotals {
        requests: a.requests + b.requests,
        errors: a.errors + b.errors,
        buckets: a
            .buckets
            .iter()
            .zip(&b.buckets)
            .map(|(x, y)| x + y)
            .collect(),
        streams: a.streams.clone(),
    }
}

fn stage(weight: u8, hold_ms: u64) -> CanaryStage {
    CanaryStage {
        weight,
        hold: Duration::from_millis(hold_ms),
        max_error_rate: 0.01,
        max_p99: Duration::from_secs(1),
        min_requests: 50,
        max_stream_abort_rate: None,
        max_ttfb_p99: None,
    }
}

fn rollback_cfg() -> RollbackConfig {
    RollbackConfig {
        max_error_rate: 0.05,
        max_p99: Duration::from_secs(2),
        window: Duration::from_secs(10),
        min_requests: 20,
        cooldown: Duration::from_secs(60),
        max_per_hour: 2,
        max_stream_abort_rate: None,
        max_ttfb_p99: None,
    }
}

const FAST: Duration = Duration::from_millis(20);

#[test]
fn healthy_canary_walks_every_stage_then_promotes() {
    let t0 = Instant::now();
    let zero = totals(0, 0, FAST);
    let (mut c, w) = Canary::start(
        vec![stage(10, 100), stage(50, 100)],
        t0,
        zero.clone(),
        zero.clone(),
    )
    .unwrap();
    assert_eq!(w, 10);
    let good = totals(60, 0, FAST);
    // Enough requests but the hold is not over.
    assert_eq!(
        c.step(t0 + Duration::from_millis(50), &good, &good),
        Step::Hold
    );
    assert_eq!(
        c.step(t0 + Duration::from_millis(100), &good, &good),
        Step::Next {
            stage: 1,
            weight: 50
        }
    );
    // The new stage counts from its own start: 60 old requests do not count.
    assert_eq!(
        c.step(t0 + Duration::from_millis(300), &good, &good),
        Step::Hold
    );
    let more = add(&good, &totals(60, 0, FAST));
    assert_eq!(
        c.step(t0 + Duration::from_millis(300), &more, &more),
        Step::Promote
    );
}

#[test]
fn a_resumed_canary_holds_its_stage_afresh_then_promotes() {
    let t0 = Instant::now();
    let zero = totals(0, 0, FAST);
    let stages = vec![stage(10, 100), stage(50, 100)];
    assert!(
        Canary::resume(stages.clone(), 2, t0, zero.clone(), zero.clone()).is_none(),
        "no third stage"
    );
    let mut c = Canary::resume(stages, 1, t0, zero.clone(), zero).unwrap();
    assert_eq!((c.stage(), c.weight()), (1, 50));
    let good = totals(60, 0, FAST);
    assert_eq!(
        c.step(t0 + Duration::from_millis(50), &good, &good),
        Step::Hold,
        "its hold starts at the resume"
    );
    assert_eq!(
        c.step(t0 + Duration::from_millis(100), &good, &good),
        Step::Promote
    );
}

#[test]
fn hold_is_extended_until_min_requests() {
    let t0 = Instant::now();
    let zero = totals(0, 0, FAST);
    let (mut c, _) = Canary::start(vec![stage(10, 10)], t0, zero.clone(), zero).unwrap();
    let few = totals(49, 0, FAST);
    assert_eq!(c.step(t0 + Duration::from_secs(60), &few, &few), Step::Hold);
    let enough = totals(50, 0, FAST);
    assert_eq!(
        c.step(t0 + Duration::from_secs(61), &enough, &enough),
        Step::Promote
    );
}

#[test]
fn canary_aborts_on_errors_with_the_measured_values() {
    let t0 = Instant::now();
    let zero = totals(0, 0, FAST);
    let (mut c, _) = Canary::start(vec![stage(10, 1000)], t0, zero.clone(), zero).unwrap();
    match c.step(t0, &totals(100, 5, FAST), &totals(100, 0, FAST)) {
        Step::Abort(v) => {
            assert_eq!(v.criterion, "max_error_rate");
            assert_eq!(v.detail["errors"], 5);
        }
        other => panic!("expected abort, got {other:?}"),
    }
}

#[test]
fn canary_aborts_on_latency_and_when_clearly_worse_than_baseline() {
    let t0 = Instant::now();
    let zero = totals(0, 0, FAST);
    let (mut c, _) = Canary::start(vec![stage(10, 1000)], t0, zero.clone(), zero.clone()).unwrap();
    let slow = totals(100, 0, Duration::from_millis(1500));
    assert!(matches!(
        c.step(t0, &slow, &totals(100, 0, FAST)),
        Step::Abort(Verdict {
            criterion: "max_p99",
            ..
        })
    ));

    let mut s = stage(10, 1000);
    s.max_p99 = Duration::from_secs(10);
    let (mut c, _) = Canary::start(vec![s], t0, zero.clone(), zero).unwrap();
    let standby = totals(100, 0, Duration::from_millis(700));
    let active = totals(100, 0, FAST);
    assert!(matches!(
        c.step(t0, &standby, &active),
        Step::Abort(Verdict {
            criterion: "baseline_p99",
            ..
        })
    ));
}

#[test]
fn watch_trips_on_errors_only_after_min_requests_and_within_the_window() {
    let cfg = rollback_cfg();
    let t0 = Instant::now();
    let mut w = Watch::start(t0, cfg.window, totals(1000, 0, FAST));
    // 10 new requests, all failing: below min_requests.
    let t = totals(1010, 10, FAST);
    assert_eq!(w.step(t0 + Duration::from_secs(1), t, true, &cfg), None);
    let t = totals(1030, 10, FAST);
    let v = w
        .step(t0 + Duration::from_secs(2), t, true, &cfg)
        .expect("10 errors in 30 requests trips");
    assert_eq!(v.criterion, "max_error_rate");
}

#[test]
fn watch_trips_when_the_pool_turns_unhealthy_and_expires_after_the_window() {
    let cfg = rollback_cfg();
    let t0 = Instant::now();
    let mut w = Watch::start(t0, cfg.window, totals(0, 0, FAST));
    assert_eq!(
        w.step(t0, totals(0, 0, FAST), false, &cfg)
            .unwrap()
            .criterion,
        "unhealthy"
    );
    assert!(!w.expired(t0 + Duration::from_secs(9)));
    assert!(w.expired(t0 + Duration::from_secs(10)));
}

#[test]
fn watch_window_slides_past_old_errors() {
    let cfg = rollback_cfg();
    let t0 = Instant::now();
    let mut w = Watch::start(t0, Duration::from_secs(60), totals(0, 0, FAST));
    // Errors early on, below min_requests.
    let mut t = totals(10, 10, FAST);
    assert_eq!(
        w.step(t0 + Duration::from_secs(1), t.clone(), true, &cfg),
        None
    );
    // Then only good traffic for longer than the 10 s window.
    for s in 2..=30u64 {
        t = add(&t, &totals(10, 0, FAST));
        let verdict = w.step(t0 + Duration::from_secs(s), t.clone(), true, &cfg);
        if s >= 12 {
            assert_eq!(verdict, None, "old errors left the window by {s}s");
        }
    }
}

#[test]
fn budget_enforces_cooldown_and_hourly_cap() {
    let cfg = rollback_cfg();
    let t0 = Instant::now();
    let mut b = Budget::default();
    assert!(b.check(t0, &cfg).is_ok());
    b.record(t0);
    assert!(b
        .check(t0 + Duration::from_secs(30), &cfg)
        .unwrap_err()
        .starts_with("cooldown"));
    assert!(b.check(t0 + Duration::from_secs(61), &cfg).is_ok());
    b.record(t0 + Duration::from_secs(61));
    assert!(b
        .check(t0 + Duration::from_secs(200), &cfg)
        .unwrap_err()
        .starts_with("max_per_hour"));
    assert!(b.check(t0 + Duration::from_secs(3601), &cfg).is_ok());
}

#[test]
fn budget_from_history_counts_the_last_hour_of_rollbacks() {
    let cfg = rollback_cfg();
    let (now, wall) = (Instant::now(), SystemTime::now());
    let ago = |s: u64| wall - Duration::from_secs(s);

    // 30 s ago: still in the cooldown, which ends 30 s from now.
    let b = Budget::from_history([ago(30)], now, wall);
    assert!(b.check(now, &cfg).unwrap_err().starts_with("cooldown"));
    assert!(b.check(now + Duration::from_secs(31), &cfg).is_ok());

    // Two in the last hour, past the cooldown: the hourly cap (2) holds.
    let b = Budget::from_history([ago(3000), ago(600)], now, wall);
    assert!(b.check(now, &cfg).unwrap_err().starts_with("max_per_hour"));
    assert!(b.check(now + Duration::from_secs(601), &cfg).is_ok());

    // Older than an hour: nothing is held back.
    let b = Budget::from_history([ago(7200), ago(3700)], now, wall);
    assert!(b.check(now, &cfg).is_ok());

    // Ahead of the clock: counted as now.
    let b = Budget::from_history([wall + Duration::from_secs(5)], now, wall);
    assert!(b.check(now, &cfg).unwrap_err().starts_with("cooldown"));
}

/// `n` finished streams, `aborts` of them by the upstream, each with its
/// first byte after `ttfb`, on top of `base`.
fn with_streams(base: &PoolTotals, n: u64, aborts: u64, ttfb: Duration) -> PoolTotals {
    let mut t = base.clone();
    t.streams = StreamTotals {
        finished: n,
        upstream_aborts: aborts,
        ttfb_count: n,
        ttfb_buckets: LATENCY_BUCKETS
            .iter()
            .map(|b| if ttfb.as_secs_f64() <= *b { n } else { 0 })
            .collect(),
    };
    t
}

#[test]
fn a_stage_judging_streams_aborts_on_their_abort_rate_while_requests_pass() {
    let t0 = Instant::now();
    let zero = totals(0, 0, FAST);
    let mut judged = stage(10, 100);
    judged.max_stream_abort_rate = Some(0.05);
    let (mut c, _) = Canary::start(vec![judged], t0, zero.clone(), zero.clone()).unwrap();
    let requests = totals(60, 0, FAST);
    let cut = with_streams(&requests, 10, 5, FAST);
    match c.step(t0, &cut, &requests) {
        Step::Abort(v) => {
            assert_eq!(v.criterion, "max_stream_abort_rate");
            assert_eq!(v.detail["stream_abort_rate"], 0.5);
        }
        other => panic!("expected an abort, got {other:?}"),
    }
    // The same streams, whole, pass.
    let whole = with_streams(&requests, 10, 0, FAST);
    assert_eq!(c.step(t0, &whole, &requests), Step::Hold);
}

#[test]
fn streams_are_not_judged_unless_the_stage_asks() {
    let t0 = Instant::now();
    let zero = totals(0, 0, FAST);
    let (mut c, _) = Canary::start(vec![stage(10, 100)], t0, zero.clone(), zero).unwrap();
    let requests = totals(60, 0, FAST);
    let cut = with_streams(&requests, 10, 10, Duration::from_secs(5));
    assert_eq!(c.step(t0, &cut, &requests), Step::Hold);
}

#[test]
fn ttfb_p99_trips_the_threshold_and_the_baseline() {
    let t0 = Instant::now();
    let zero = totals(0, 0, FAST);
    let mut judged = stage(10, 100);
    judged.max_ttfb_p99 = Some(Duration::from_secs(2));
    let (mut c, _) = Canary::start(vec![judged.clone()], t0, zero.clone(), zero.clone()).unwrap();
    let requests = totals(60, 0, FAST);
    let slow = with_streams(&requests, 10, 0, Duration::from_secs(4));
    match c.step(t0, &slow, &requests) {
        Step::Abort(v) => assert_eq!(v.criterion, "max_ttfb_p99"),
        other => panic!("expected an abort, got {other:?}"),
    }
    // Under the threshold, but far behind the active pool's streams.
    let (mut c, _) = Canary::start(vec![judged], t0, zero.clone(), zero).unwrap();
    let standby = with_streams(&requests, 10, 0, Duration::from_millis(1500));
    let active = with_streams(&requests, 10, 0, FAST);
    match c.step(t0, &standby, &active) {
        Step::Abort(v) => assert_eq!(v.criterion, "baseline_ttfb_p99"),
        other => panic!("expected an abort, got {other:?}"),
    }
}

#[test]
fn the_rollback_watch_judges_stream_aborts() {
    let t0 = Instant::now();
    let mut cfg = rollback_cfg();
    cfg.max_stream_abort_rate = Some(0.1);
    let zero = totals(0, 0, FAST);
    let mut w = Watch::start(t0, cfg.window, zero);
    let cut = with_streams(&totals(30, 0, FAST), 4, 2, FAST);
    let v = w
        .step(t0 + Duration::from_secs(1), cut, true, &cfg)
        .expect("half the streams aborted");
    assert_eq!(v.criterion, "max_stream_abort_rate");
}
