//! `GET /metrics` on the admin listener: every family of the SPEC's table
//! with its labels, and counters and gauges that move by the right amounts.

use std::time::Duration;

use http::StatusCode;
use serde_json::json;

use crate::support::*;

/// The SPEC's families: name, `# TYPE`, and the label names of its samples.
const FAMILIES: [(&str, &str, &[&str]); 9] = [
    (
        "cutover_requests_total",
        "counter",
        &["code", "pool", "service"],
    ),
    (
        "cutover_request_duration_seconds",
        "histogram",
        &["pool", "service"],
    ),
    (
        "cutover_upstream_up",
        "gauge",
        &["pool", "server", "service"],
    ),
    ("cutover_active_pool", "gauge", &["pool", "service"]),
    ("cutover_pool_weight_percent", "gauge", &["pool", "service"]),
    ("cutover_switches_total", "counter", &["reason", "service"]),
    ("cutover_inflight_requests", "gauge", &["pool", "service"]),
    ("cutover_connections_open", "gauge", &["listener"]),
    ("cutover_drain_cut_total", "counter", &["pool", "service"]),
];

fn requests(code: &str, pool: &str) -> [(&'static str, String); 3] {
    [
        (
            "service",
            if pool.is_empty() { "" } else { "app" }.to_string(),
        ),
        ("pool", pool.to_string()),
        ("code", code.to_string()),
    ]
}

fn count(scrape: &Scrape, code: &str, pool: &str) -> f64 {
    let labels = requests(code, pool);
    let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    scrape.value("cutover_requests_total", &labels)
}

fn pool_gauge(scrape: &Scrape, name: &str, pool: &str) -> Option<f64> {
    scrape.get(name, &[("service", "app"), ("pool", pool)])
}

/// A proxy whose only route is `/app` (so `/elsewhere` is a 404).
async fn start(blue: &Upstream, green: &Upstream) -> Cutover {
    let body =
        app(blue, green, "", "").replacen("path_prefix = \"/\"", "path_prefix = \"/app\"", 1);
    Cutover::start(&body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_has_every_spec_family_with_its_labels() {
    within(BOUND, async {
        let blue = Upstream::start_with_version("blue", "1").await;
        let green = Upstream::start_with_version("green", "2").await;
        let proxy = start(&blue, &green).await;
        // One answer of each kind so every family has samples.
        assert_eq!(fetch(proxy.addr, "/app").await.status, StatusCode::OK);
        assert_eq!(
            fetch(proxy.addr, "/elsewhere").await.status,
            StatusCode::NOT_FOUND
        );

        let scrape = proxy.scrape().await;

        for (name, kind, labels) in FAMILIES {
            assert!(
                scrape.has_type(name, kind),
                "no {kind} {name}:\n{}",
                scrape.text
            );
            let sample = if kind == "histogram" {
                format!("{name}_count")
            } else {
                name.to_string()
            };
            let sets = scrape.label_sets(&sample);
            assert!(!sets.is_empty(), "no {sample} sample:\n{}", scrape.text);
            for set in sets {
                assert_eq!(set, labels, "labels of {sample}:\n{}", scrape.text);
            }
        }
        let buckets = scrape.label_sets("cutover_request_duration_seconds_bucket");
        assert!(buckets.iter().all(|s| s == &["le", "pool", "service"]));
        assert!(scrape
            .get(
                "cutover_request_duration_seconds_bucket",
                &[("service", "app"), ("pool", "blue"), ("le", "+Inf")]
            )
            .is_some_and(|v| v >= 1.0));
        for pool in ["blue", "green"] {
            let server = if pool == "blue" {
                blue.addr
            } else {
                green.addr
            }
            .to_string();
            let up = [
                ("service", "app"),
                ("pool", pool),
                ("server", server.as_str()),
            ];
            assert_eq!(
                scrape.get("cutover_upstream_up", &up),
                Some(1.0),
                "{}",
                scrape.text
            );
            let drain = [("service", "app"), ("pool", pool)];
            assert_eq!(scrape.get("cutover_drain_cut_total", &drain), Some(0.0));
        }
        for reason in ["manual", "rollback", "auto_rollback", "canary"] {
            let labels = [("service", "app"), ("reason", reason)];
            assert_eq!(scrape.get("cutover_switches_total", &labels), Some(0.0));
        }
        for listener in ["http", "admin"] {
            let open = scrape.get("cutover_connections_open", &[("listener", listener)]);
            assert!(
                open.is_some(),
                "no {listener} connections gauge:\n{}",
                scrape.text
            );
        }
        // This very scrape is an open admin connection.
        assert!(scrape.value("cutover_connections_open", &[("listener", "admin")]) >= 1.0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_counters_move_by_the_number_of_answers_on_the_right_series() {
    within(BOUND, async {
        let blue = Upstream::start_with_version("blue", "1").await;
        let green = Upstream::start_with_version("green", "2").await;
        let proxy = start(&blue, &green).await;
        let before = proxy.scrape().await;

        let mut conn = Client::http1(proxy.addr).await;
        for _ in 0..25 {
            assert_eq!(conn.get("/app/x").await.status, StatusCode::OK);
        }
        for _ in 0..3 {
            assert_eq!(conn.get("/nowhere").await.status, StatusCode::NOT_FOUND);
        }
        blue.set_failing(true);
        for _ in 0..7 {
            let status = conn.get("/app/x").await.status;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        }

        let after = proxy.scrape().await;
        let moved = |code, pool| count(&after, code, pool) - count(&before, code, pool);
        assert_eq!(moved("200", "blue"), 25.0, "{}", after.text);
        assert_eq!(moved("500", "blue"), 7.0, "{}", after.text);
        assert_eq!(moved("404", ""), 3.0, "{}", after.text);
        assert_eq!(moved("200", "green"), 0.0, "{}", after.text);
        let durations = |s: &Scrape| {
            s.value(
                "cutover_request_duration_seconds_count",
                &[("service", "app"), ("pool", "blue")],
            )
        };
        assert_eq!(durations(&after) - durations(&before), 32.0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_and_weight_show_in_active_pool_weight_and_switch_counters() {
    within(BOUND, async {
        let blue = Upstream::start_with_version("blue", "1").await;
        let green = Upstream::start_with_version("green", "2").await;
        let proxy = start(&blue, &green).await;
        let before = proxy.scrape().await;
        assert_eq!(
            pool_gauge(&before, "cutover_active_pool", "blue"),
            Some(1.0)
        );
        assert_eq!(
            pool_gauge(&before, "cutover_active_pool", "green"),
            Some(0.0)
        );
        assert_eq!(
            pool_gauge(&before, "cutover_pool_weight_percent", "blue"),
            Some(100.0)
        );
        assert_eq!(
            pool_gauge(&before, "cutover_pool_weight_percent", "green"),
            Some(0.0)
        );

        let reply = admin_put(
            proxy.admin,
            "/api/v1/services/app/weights",
            json!({"standby": 30}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let split = proxy.scrape().await;
        assert_eq!(
            pool_gauge(&split, "cutover_pool_weight_percent", "blue"),
            Some(70.0)
        );
        assert_eq!(
            pool_gauge(&split, "cutover_pool_weight_percent", "green"),
            Some(30.0)
        );

        let reply = proxy.switch("app", json!({"to": "green"})).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

        let after = proxy.scrape().await;
        let switches = |s: &Scrape, reason| {
            s.value(
                "cutover_switches_total",
                &[("service", "app"), ("reason", reason)],
            )
        };
        assert_eq!(
            switches(&after, "manual") - switches(&before, "manual"),
            1.0
        );
        assert_eq!(switches(&after, "rollback"), switches(&before, "rollback"));
        assert_eq!(pool_gauge(&after, "cutover_active_pool", "blue"), Some(0.0));
        assert_eq!(
            pool_gauge(&after, "cutover_active_pool", "green"),
            Some(1.0)
        );
        assert_eq!(
            pool_gauge(&after, "cutover_pool_weight_percent", "blue"),
            Some(0.0)
        );
        assert_eq!(
            pool_gauge(&after, "cutover_pool_weight_percent", "green"),
            Some(100.0)
        );

        let reply = admin_post(proxy.admin, "/api/v1/services/app/rollback", json!({})).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let back = proxy.scrape().await;
        assert_eq!(
            switches(&back, "rollback") - switches(&before, "rollback"),
            1.0
        );
        assert_eq!(pool_gauge(&back, "cutover_active_pool", "blue"), Some(1.0));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inflight_gauge_shows_a_request_while_it_is_held() {
    within(BOUND, async {
        let blue = Upstream::start_with_version("blue", "1").await;
        let green = Upstream::start_with_version("green", "2").await;
        let proxy = start(&blue, &green).await;
        let inflight = |s: &Scrape, pool| pool_gauge(s, "cutover_inflight_requests", pool);
        assert_eq!(inflight(&proxy.scrape().await, "blue"), Some(0.0));

        let addr = proxy.addr;
        let held = tokio::spawn(async move { fetch(addr, "/app/hold").await });
        let proxy_ref = &proxy;
        eventually("cutover_inflight_requests{pool=blue} is 1", || async move {
            inflight(&proxy_ref.scrape().await, "blue") == Some(1.0)
        })
        .await;
        assert_eq!(inflight(&proxy.scrape().await, "green"), Some(0.0));

        blue.release(1);
        let reply = held.await.expect("held request");
        assert_eq!(reply.status, StatusCode::OK);
        eventually(
            "cutover_inflight_requests{pool=blue} is back to 0",
            || async move { inflight(&proxy_ref.scrape().await, "blue") == Some(0.0) },
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_answers_land_in_the_upper_duration_buckets() {
    within(BOUND, async {
        let blue = Upstream::start_with_version("blue", "1").await;
        let green = Upstream::start_with_version("green", "2").await;
        let proxy = start(&blue, &green).await;
        blue.set_delay(Duration::from_millis(300));

        for _ in 0..3 {
            assert_eq!(fetch(proxy.addr, "/app").await.status, StatusCode::OK);
        }

        let scrape = proxy.scrape().await;
        let bucket = |le| {
            scrape.value(
                "cutover_request_duration_seconds_bucket",
                &[("service", "app"), ("pool", "blue"), ("le", le)],
            )
        };
        assert_eq!(bucket("0.25"), 0.0, "{}", scrape.text);
        assert_eq!(bucket("+Inf"), 3.0, "{}", scrape.text);
        let sum = scrape.value(
            "cutover_request_duration_seconds_sum",
            &[("service", "app"), ("pool", "blue")],
        );
        assert!((0.9..3.0).contains(&sum), "sum {sum}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_hyper_gives_to_unparsable_requests_are_counted() {
    within(BOUND, async {
        let (blue, green) = (
            Upstream::start_with_version("blue", "1").await,
            Upstream::start_with_version("green", "2").await,
        );
        let proxy = start(&blue, &green).await;
        let before = proxy.scrape().await;

        for bad in [
            &b"GET / HTTP/1.1\r\nBad Header: x\r\nHost: a\r\n\r\n"[..],
            b"G\x01T / HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut stream, bad)
                .await
                .unwrap();
            let mut answer = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer)
                .await
                .unwrap();
            assert!(
                answer.starts_with(b"HTTP/1.1 400"),
                "{:?}",
                String::from_utf8_lossy(&answer)
            );
        }
        let many: String = (0..150).map(|i| format!("X-{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stream, many.as_bytes())
            .await
            .unwrap();
        let mut answer = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer)
            .await
            .unwrap();
        assert!(
            answer.starts_with(b"HTTP/1.1 431"),
            "{:?}",
            String::from_utf8_lossy(&answer)
        );

        let after = proxy.scrape().await;
        let moved = |code: &str| count(&after, code, "") - count(&before, code, "");
        assert_eq!(moved("400"), 2.0, "{}", after.text);
        assert_eq!(moved("431"), 1.0, "{}", after.text);
    })
    .await;
}
