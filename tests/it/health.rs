//! Upstream health as status shows it: active checks with their thresholds
//! and the version a health answer reports, and passive marking when a
//! connection to a server fails.

use std::time::Duration;

use http::StatusCode;
use serde_json::Value;

use crate::support::*;

const UNHEALTHY_THRESHOLD: usize = 3;

/// `[service.NAME.health]` with short intervals.
fn health(svc: &str) -> String {
    format!(
        "\n[service.{svc}.health]\npath = \"/health\"\ninterval = \"50ms\"\ntimeout = \"500ms\"\n\
         healthy_threshold = 2\nunhealthy_threshold = {UNHEALTHY_THRESHOLD}\n"
    )
}

/// The status entry of server `index` of `pool`.
fn server(service: &Value, pool: &str, index: usize) -> Value {
    service["pools"][pool]["servers"][index].clone()
}

#[tokio::test]
async fn status_shows_each_servers_health_and_reported_version() {
    within(BOUND, async {
        let blue = Upstream::start_with_version("blue", "1.4.1").await;
        let green = Upstream::start_with_version("green", "1.4.2").await;
        let sick = Upstream::builder("sick")
            .version("1.4.2")
            .unhealthy()
            .start()
            .await;
        let config = route(None, "/", "app")
            + &service_with(
                "app",
                &[blue.addr],
                &[green.addr, sick.addr],
                &health("app"),
            );
        let proxy = Cutover::start(&config).await;

        let status = proxy.service("app").await;

        let b = server(&status, "blue", 0);
        assert_eq!(b["address"], blue.addr.to_string());
        assert_eq!(b["healthy"], true);
        assert_eq!(b["version"], "1.4.1");
        let g = server(&status, "green", 0);
        assert_eq!(g["healthy"], true);
        assert_eq!(g["version"], "1.4.2");
        let s = server(&status, "green", 1);
        assert_eq!(s["address"], sick.addr.to_string());
        assert_eq!(s["healthy"], false);
        assert_eq!(s["version"], Value::Null);
    })
    .await;
}

#[tokio::test]
async fn server_failing_health_turns_unhealthy_after_threshold_and_gets_no_traffic() {
    within(BOUND, async {
        let steady = Upstream::start_with_version("steady", "1.0.0").await;
        let flaky = Upstream::start_with_version("flaky", "1.0.0").await;
        let green = Upstream::start_with_version("green", "2.0.0").await;
        let config = route(None, "/", "app")
            + &service_with(
                "app",
                &[flaky.addr, steady.addr],
                &[green.addr],
                &health("app"),
            );
        let proxy = Cutover::start(&config).await;
        for _ in 0..4 {
            assert_eq!(fetch(proxy.addr, "/").await.status, StatusCode::OK);
        }
        assert!(flaky.hits() > 0, "round robin reaches both servers");

        flaky.set_healthy(false);
        // Poll faster than the check interval: the flip must not come before
        // the threshold of failed checks.
        let mut polls = 0;
        loop {
            let healthy = server(&proxy.service("app").await, "blue", 0)["healthy"].clone();
            let failed = flaky.failed_checks();
            if healthy == false {
                assert!(
                    failed >= UNHEALTHY_THRESHOLD,
                    "unhealthy after only {failed} failed checks"
                );
                break;
            }
            polls += 1;
            assert!(polls < 500, "never turned unhealthy");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        let hits = flaky.hits();
        for _ in 0..20 {
            let reply = fetch(proxy.addr, "/").await;
            assert_eq!(upstream_of(&reply.body).as_deref(), Some("steady"));
        }
        assert_eq!(flaky.hits(), hits, "an unhealthy server got traffic");

        flaky.set_healthy(true);
        let admin = proxy.admin;
        eventually("the server is healthy again", || async move {
            let status = admin_get(admin, "/api/v1/services/app").await.json();
            server(&status, "blue", 0)["healthy"] == true
        })
        .await;
        for _ in 0..4 {
            fetch(proxy.addr, "/").await;
        }
        assert!(
            flaky.hits() > hits,
            "a recovered server takes traffic again"
        );
    })
    .await;
}

#[tokio::test]
async fn failed_connection_marks_the_server_down_passively() {
    within(BOUND, async {
        let live = Upstream::start("live").await;
        let green = Upstream::start("green").await;
        let dead = closed_port().await;
        // No active checks: only requests can find the dead server.
        let config = route(None, "/", "app") + &service("app", &[dead, live.addr], &[green.addr]);
        let proxy = Cutover::start(&config).await;
        assert_eq!(
            server(&proxy.service("app").await, "blue", 0)["healthy"],
            true
        );

        for _ in 0..4 {
            let reply = fetch(proxy.addr, "/").await;
            assert_eq!(reply.echo().upstream, "live", "retried on the live server");
        }

        let admin = proxy.admin;
        eventually("the dead server is marked unhealthy", || async move {
            let status = admin_get(admin, "/api/v1/services/app").await.json();
            server(&status, "blue", 0)["healthy"] == false
        })
        .await;
        let status = proxy.service("app").await;
        let dead_status = server(&status, "blue", 0);
        assert_eq!(dead_status["address"], dead.to_string());
        assert!(dead_status["last_error"].is_string(), "{dead_status}");
        assert_eq!(server(&status, "blue", 1)["healthy"], true);
    })
    .await;
}
