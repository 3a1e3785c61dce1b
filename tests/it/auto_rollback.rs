//! Automated rollback: after a switch the new pool is watched for
//! `rollback.window`; errors or ill health send traffic back to the previous
//! pool, at most once per `cooldown` (a held-back rollback is a `blocked`
//! event, and manual commands are never held back). A restart within the
//! window keeps the watch, and a restart keeps the cooldown.

use std::time::Duration;

use http::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

/// The bound of each test here.
const ROLLBACK_BOUND: Duration = Duration::from_secs(20);
/// How long an automated decision may take to show.
const DECIDES: Duration = Duration::from_secs(10);

fn rollback_table(window: &str) -> String {
    rollback_with(window, "2s", "1h", 3)
}

fn rollback_with(window: &str, max_p99: &str, cooldown: &str, max_per_hour: u32) -> String {
    format!(
        "[service.app.rollback]\nmax_error_rate = 0.05\nmax_p99 = \"{max_p99}\"\nwindow = \"{window}\"\n\
         min_requests = 20\ncooldown = \"{cooldown}\"\nmax_per_hour = {max_per_hour}\n\n"
    )
}

/// Polls the events of `app` until one with `reason` shows (bounded by [`DECIDES`]).
async fn until_event(proxy: &Cutover, reason: &str) -> Value {
    let deadline = tokio::time::Instant::now() + DECIDES;
    loop {
        if let Some(event) = proxy.events_with("app", reason).await.pop() {
            return event;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {reason:?} event within {DECIDES:?}: {:#?}",
            proxy.events("app").await
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn switch_to_green(proxy: &Cutover) -> Value {
    let reply = proxy.switch("app", json!({"to": "green"})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_green_is_rolled_back_automatically_then_cooldown_blocks_the_next_one() {
    within(ROLLBACK_BOUND, async {
        let blue = Upstream::start_with_version("blue", "1").await;
        let green = Upstream::start_with_version("green", "2").await;
        let proxy = Cutover::start(&app(&blue, &green, "", &rollback_table("5s"))).await;

        let applied = switch_to_green(&proxy).await;

        let watch = &applied["service"]["watch"];
        assert_eq!(watch["pool"], "green", "{applied:#}");
        assert!(watch["until"].is_string(), "{applied:#}");
        green.set_failing(true);
        let traffic = Traffic::start(proxy.addr, 4, "/");

        let rollback = until_event(&proxy, "auto_rollback").await;
        assert_eq!(rollback["actor"], "auto");
        assert_eq!(
            (&rollback["from"], &rollback["to"]),
            (&json!("green"), &json!("blue"))
        );
        assert_eq!(
            rollback["detail"]["criterion"], "max_error_rate",
            "{rollback:#}"
        );
        let status = proxy.service("app").await;
        assert_eq!(status["active"], "blue");
        assert_eq!(status["watch"], Value::Null);
        assert_eq!(status["last_switch"]["reason"], "auto_rollback");
        let metrics = proxy.scrape().await;
        let switches = |reason| {
            metrics.value(
                "cutover_switches_total",
                &[("service", "app"), ("reason", reason)],
            )
        };
        assert_eq!(switches("auto_rollback"), 1.0, "{}", metrics.text);
        assert_eq!(switches("manual"), 1.0, "{}", metrics.text);

        // The operator insists (cooldown never blocks a manual command); the
        // automated rollback is held back this time.
        let applied = switch_to_green(&proxy).await;
        assert_eq!(applied["service"]["active"], "green");
        assert_eq!(applied["service"]["watch"]["pool"], "green");

        let blocked = until_event(&proxy, "blocked").await;
        assert_eq!(blocked["actor"], "auto");
        assert_eq!(blocked["detail"]["action"], "auto_rollback", "{blocked:#}");
        let why = blocked["detail"]["why"].as_str().unwrap_or_default();
        assert!(why.contains("cooldown"), "{blocked:#}");
        let status = proxy.service("app").await;
        assert_eq!(status["active"], "green");
        assert_eq!(status["watch"], Value::Null, "one judgment per watch");
        assert_eq!(proxy.events_with("app", "auto_rollback").await.len(), 1);
        let metrics = proxy.scrape().await;
        assert_eq!(
            metrics.value(
                "cutover_switches_total",
                &[("service", "app"), ("reason", "auto_rollback")]
            ),
            1.0
        );
        assert!(traffic.tally().from("green") >= 20);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn green_failing_a_share_of_its_requests_over_max_error_rate_is_rolled_back() {
    within(ROLLBACK_BOUND, async {
        let blue = Upstream::start_with_version("blue", "1").await;
        let green = Upstream::start_with_version("green", "2").await;
        let proxy = Cutover::start(&app(&blue, &green, "", &rollback_table("5s"))).await;
        switch_to_green(&proxy).await;

        // One answer in five is a 503: 20%, over the 5% allowed.
        green.fail(StatusCode::SERVICE_UNAVAILABLE, 20);
        let traffic = Traffic::start(proxy.addr, 4, "/");

        let rollback = until_event(&proxy, "auto_rollback").await;
        assert_eq!(
            (&rollback["from"], &rollback["to"]),
            (&json!("green"), &json!("blue"))
        );
        assert_eq!(
            rollback["detail"]["criterion"], "max_error_rate",
            "{rollback:#}"
        );
        let rate = rollback["detail"]["measured"]["error_rate"]
            .as_f64()
            .unwrap_or_else(|| panic!("no measured error rate: {rollback:#}"));
        assert!((0.1..=0.3).contains(&rate), "{rollback:#}");
        assert_eq!(proxy.service("app").await["active"], "blue");
        let tally = traffic.tally();
        let answered = |status| tally.by_status.get(&status).copied().unwrap_or(0);
        assert!(
            answered(503) > 0 && answered(200) > answered(503),
            "{tally:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn green_failing_its_health_checks_is_rolled_back_automatically() {
    within(ROLLBACK_BOUND, async {
        let blue = Upstream::start_with_version("blue", "1").await;
        let green = Upstream::start_with_version("green", "2").await;
        let tables = format!("{}{FAST_HEALTH}", rollback_table("5s"));
        let proxy = Cutover::start(&app(&blue, &green, "", &tables)).await;
        switch_to_green(&proxy).await;

        green.set_healthy(false);

        let rollback = until_event(&proxy, "auto_rollback").await;
        assert_eq!(rollback["actor"], "auto");
        assert_eq!(rollback["to"], "blue");
        assert_eq!(rollback["detail"]["criterion"], "unhealthy", "{rollback:#}");
        assert_eq!(proxy.service("app").await["active"], "blue");
        let reply = fetch(proxy.addr, "/").await;
        assert_eq!(upstream_of(&reply.body).as_deref(), Some("blue"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_green_keeps_the_traffic_and_the_watch_ends_after_its_window() {
    within(ROLLBACK_BOUND, async {
        let blue = Upstream::start_with_version("blue", "1").await;
        let green = Upstream::start_with_version("green", "2").await;
        let proxy = Cutover::start(&app(&blue, &green, "", &rollback_table("1s"))).await;
        let traffic = Traffic::start(proxy.addr, 2, "/");
        switch_to_green(&proxy).await;

        let deadline = tokio::time::Instant::now() + DECIDES;
        while !proxy.service("app").await["watch"].is_null() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the watch never ended"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }

        assert_eq!(proxy.service("app").await["active"], "green");
        let automated: Vec<Value> = proxy
            .events("app")
            .await
            .into_iter()
            .filter(|e| e["actor"] == "auto")
            .collect();
        assert_eq!(automated, Vec::<Value>::new());
        assert!(traffic.tally().from("green") > 20, "{:?}", traffic.tally());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_green_over_max_p99_is_rolled_back_automatically() {
    within(ROLLBACK_BOUND, async {
        let blue = Upstream::start_with_version("blue", "1").await;
        let green = Upstream::builder("green")
            .version("2")
            .delay(Duration::from_millis(300))
            .start()
            .await;
        let table = rollback_with("5s", "100ms", "1h", 3);
        let proxy = Cutover::start(&app(&blue, &green, "", &table)).await;
        switch_to_green(&proxy).await;
        let _traffic = Traffic::start(proxy.addr, 8, "/");

        let rollback = until_event(&proxy, "auto_rollback").await;

        assert_eq!(rollback["detail"]["criterion"], "max_p99", "{rollback:#}");
        let measured = &rollback["detail"]["measured"];
        assert!(measured["p99_ms"].as_u64() >= Some(300), "{rollback:#}");
        assert_eq!(measured["max_p99_ms"], 100, "{rollback:#}");
        assert_eq!(proxy.service("app").await["active"], "blue");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hourly_cap_blocks_an_automated_rollback_after_the_cooldown() {
    within(ROLLBACK_BOUND, async {
        let blue = Upstream::start_with_version("blue", "1").await;
        let green = Upstream::start_with_version("green", "2").await;
        let table = rollback_with("5s", "2s", "1ms", 1);
        let proxy = Cutover::start(&app(&blue, &green, "", &table)).await;
        green.set_failing(true);
        let _traffic = Traffic::start(proxy.addr, 4, "/");
        switch_to_green(&proxy).await;
        until_event(&proxy, "auto_rollback").await;
        assert_eq!(proxy.service("app").await["active"], "blue");

        switch_to_green(&proxy).await;

        let blocked = until_event(&proxy, "blocked").await;
        let why = blocked["detail"]["why"].as_str().unwrap_or_default();
        assert!(why.contains("max_per_hour"), "{blocked:#}");
        assert_eq!(proxy.service("app").await["active"], "green");
        assert_eq!(proxy.events_with("app", "auto_rollback").await.len(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_automated_rollback_to_a_pool_without_a_healthy_server() {
    within(ROLLBACK_BOUND, async {
        let blue = Upstream::start_with_version("blue", "1").await;
        let green = Upstream::start_with_version("green", "2").await;
        let tables = format!("{}{FAST_HEALTH}", rollback_table("5s"));
        let proxy = Cutover::start(&app(&blue, &green, "", &tables)).await;
        switch_to_green(&proxy).await;
        blue.set_healthy(false);
        let proxy_ref = &proxy;
        eventually("blue is unhealthy", || async move {
            proxy_ref.service("app").await["pools"]["blue"]["healthy"] == false
        })
        .await;

        green.set_failing(true);
        let _traffic = Traffic::start(proxy.addr, 4, "/");

        let blocked = until_event(&proxy, "blocked").await;
        assert_eq!(blocked["to"], "blue");
        let why = blocked["detail"]["why"].as_str().unwrap_or_default();
        assert!(why.contains("no healthy server"), "{blocked:#}");
        assert_eq!(proxy.service("app").await["active"], "green");
        assert_eq!(
            proxy.events_with("app", "auto_rollback").await,
            Vec::<Value>::new()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn green_promoted_by_a_canary_is_watched_and_rolled_back_when_it_fails() {
    within(ROLLBACK_BOUND, async {
        let blue = Upstream::start_with_version("blue", "1").await;
        let green = Upstream::start_with_version("green", "2").await;
        let stage = "[[service.app.canary.stages]]\nweight = 50\nhold = \"300ms\"\n\
                     min_requests = 20\nmax_error_rate = 0.01\nmax_p99 = \"1s\"\n\n";
        let tables = format!("{}{stage}", rollback_table("5s"));
        let proxy = Cutover::start(&app(&blue, &green, "", &tables)).await;
        let _traffic = Traffic::start(proxy.addr, 4, "/");
        let reply = admin_post(proxy.admin, "/api/v1/services/app/canary", json!({})).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        // The canary's standby pool is watched while it runs.
        assert_eq!(reply.json()["service"]["watch"]["pool"], "green");

        let promotion = until_event(&proxy, "canary").await;
        assert_eq!(promotion["to"], "green");
        let status = proxy.service("app").await;
        assert_eq!(status["watch"]["pool"], "green", "{status:#}");
        green.set_failing(true);

        let rollback = until_event(&proxy, "auto_rollback").await;
        assert_eq!(
            (&rollback["from"], &rollback["to"]),
            (&json!("green"), &json!("blue"))
        );
        assert_eq!(proxy.service("app").await["active"], "blue");
        assert_eq!(
            proxy.events_with("app", "canary_abort").await,
            Vec::<Value>::new()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_without_a_rollback_section_ends_the_running_watch() {
    within(ROLLBACK_BOUND, async {
        let blue = Upstream::start_with_version("blue", "1").await;
        let green = Upstream::start_with_version("green", "2").await;
        let proxy = Cutover::start(&app(&blue, &green, "", &rollback_table("1h"))).await;
        let applied = switch_to_green(&proxy).await;
        assert_eq!(applied["service"]["watch"]["pool"], "green");

        proxy.rewrite_config(&app(&blue, &green, "", ""));
        let reply = admin_post(proxy.admin, "/api/v1/reload", json!({})).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

        let proxy_ref = &proxy;
        eventually("the watch ended with its config", || async move {
            proxy_ref.service("app").await["watch"].is_null()
        })
        .await;
        green.set_failing(true);
        let traffic = Traffic::start(proxy.addr, 4, "/");
        eventually("green answers 40 errors", || {
            let green = traffic.tally().from("green");
            async move { green >= 40 }
        })
        .await;
        assert_eq!(proxy.service("app").await["active"], "green");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_within_the_window_keeps_watching_the_new_pool() {
    within(ROLLBACK_BOUND, async {
        let blue = Upstream::start_with_version("blue", "1").await;
        let green = Upstream::start_with_version("green", "2").await;
        let proxy = Cutover::start(&app(&blue, &green, "", &rollback_table("1h"))).await;
        let applied = switch_to_green(&proxy).await;
        let until = applied["service"]["watch"]["until"].clone();
        assert!(until.is_string(), "{applied:#}");
        let saved = std::fs::read_to_string(proxy.state_path()).expect("state file");
        assert!(saved.contains("rollback_watch_until"), "{saved}");

        let proxy = proxy.restart().await;

        // Watched on until the same time, and judged from fresh counts.
        let status = proxy.service("app").await;
        assert_eq!(status["active"], "green");
        assert_eq!(status["watch"]["pool"], "green", "{status:#}");
        assert_eq!(status["watch"]["until"], until, "{status:#}");
        green.set_failing(true);
        let _traffic = Traffic::start(proxy.addr, 4, "/");
        let rollback = until_event(&proxy, "auto_rollback").await;
        assert_eq!(
            (&rollback["from"], &rollback["to"]),
            (&json!("green"), &json!("blue"))
        );
        assert_eq!(proxy.service("app").await["active"], "blue");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_whose_window_passed_before_the_restart_is_not_taken_up() {
    within(ROLLBACK_BOUND, async {
        let blue = Upstream::start_with_version("blue", "1").await;
        let green = Upstream::start_with_version("green", "2").await;
        let proxy = Cutover::start(&app(&blue, &green, "", &rollback_table("300ms"))).await;
        switch_to_green(&proxy).await;
        let dir = proxy.stop().await;
        // The window passes while the proxy is down.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let text = std::fs::read_to_string(dir.path().join(CONFIG_FILE)).expect("config");
        let proxy = Cutover::start_in(dir, &text).await;

        let status = proxy.service("app").await;
        assert_eq!(status["active"], "green");
        assert_eq!(status["watch"], Value::Null, "{status:#}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_cooldown_of_the_last_automated_rollback() {
    within(ROLLBACK_BOUND, async {
        let blue = Upstream::start_with_version("blue", "1").await;
        let green = Upstream::start_with_version("green", "2").await;
        let proxy = Cutover::start(&app(&blue, &green, "", &rollback_table("5s"))).await;
        switch_to_green(&proxy).await;
        green.set_failing(true);
        let traffic = Traffic::start(proxy.addr, 4, "/");
        until_event(&proxy, "auto_rollback").await;
        drop(traffic);

        let proxy = proxy.restart().await;

        // The operator insists, green still fails: the cooldown (1 h) of
        // the rollback before the restart holds the next one back.
        let applied = switch_to_green(&proxy).await;
        assert_eq!(applied["service"]["watch"]["pool"], "green");
        let _traffic = Traffic::start(proxy.addr, 4, "/");
        let blocked = until_event(&proxy, "blocked").await;
        let why = blocked["detail"]["why"].as_str().unwrap_or_default();
        assert!(why.contains("cooldown"), "{blocked:#}");
        assert_eq!(proxy.service("app").await["active"], "green");
        assert_eq!(proxy.events_with("app", "auto_rollback").await.len(), 1);
    })
    .await;
}
