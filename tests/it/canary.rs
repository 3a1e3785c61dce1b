//! The staged canary: `POST /api/v1/services/{svc}/canary` walks the
//! configured stages while traffic flows, promotes a healthy standby pool,
//! and aborts (weight back to 0) when it answers errors or on `DELETE`.

use std::time::Duration;

use http::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

/// The bound of each test here.
const CANARY_BOUND: Duration = Duration::from_secs(20);
/// How long a canary decision may take to show (hold, requests, a tick).
const DECIDES: Duration = Duration::from_secs(10);

/// Two short stages, judged on 20 requests each.
const STAGES: &str = "\
[[service.app.canary.stages]]
weight = 20
hold = \"500ms\"
min_requests = 20
max_error_rate = 0.01
max_p99 = \"1s\"

[[service.app.canary.stages]]
weight = 50
hold = \"500ms\"
min_requests = 20
max_error_rate = 0.01
max_p99 = \"1s\"
";

const CANARY: &str = "/api/v1/services/app/canary";

/// Polls `check` on the service status until it holds (bounded by [`DECIDES`]).
async fn until_status(proxy: &Cutover, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + DECIDES;
    loop {
        let status = proxy.service("app").await;
        if check(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never true within {DECIDES:?}: {what}; last status {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_walks_its_stages_and_promotes_a_healthy_green() {
    within(CANARY_BOUND, async {
        let blue = Upstream::start_with_version("blue", "1").await;
        let green = Upstream::start_with_version("green", "2").await;
        let proxy = Cutover::start(&app(&blue, &green, "", STAGES)).await;
        let traffic = Traffic::start(proxy.addr, 4, "/");

        let reply = admin_post(proxy.admin, CANARY, json!({})).await;

        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let service = &reply.json()["service"];
        assert_eq!(service["weights"], json!({"blue": 80, "green": 20}));
        assert_eq!(service["canary"]["stage"], 0, "{service:#}");
        let again = admin_post(proxy.admin, CANARY, json!({})).await;
        assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text());
        assert_eq!(again.json()["error"]["code"], "canary_running");

        let status = until_status(&proxy, "green promoted", |s| s["active"] == "green").await;
        assert_eq!(status["weights"], json!({"blue": 0, "green": 100}));
        assert_eq!(status["canary"], Value::Null);
        assert_eq!(status["last_switch"]["reason"], "canary");

        let events = proxy.events("app").await;
        let summary: Vec<(Value, Value, Value)> = events
            .iter()
            .map(|e| {
                let standby = e["detail"]["standby"].clone();
                (e["reason"].clone(), e["actor"].clone(), standby)
            })
            .collect();
        assert_eq!(
            summary,
            [
                (json!("weight"), json!("api"), json!(20)),
                (json!("weight"), json!("auto"), json!(50)),
                (json!("canary"), json!("auto"), Value::Null),
            ],
            "{events:#?}"
        );
        let promotion = &events[2];
        assert_eq!(
            (&promotion["from"], &promotion["to"]),
            (&json!("blue"), &json!("green"))
        );

        let metrics = proxy.scrape().await;
        let switches = |reason| {
            metrics.value(
                "cutover_switches_total",
                &[("service", "app"), ("reason", reason)],
            )
        };
        assert_eq!(switches("canary"), 1.0, "{}", metrics.text);
        assert_eq!(switches("manual"), 0.0, "{}", metrics.text);
        let tally = traffic.tally();
        assert!(
            tally.from("green") >= 40,
            "green answered {} during the canary",
            tally.from("green")
        );
        assert_eq!(
            tally.by_status.keys().collect::<Vec<_>>(),
            [&200],
            "{tally:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_takes_the_canary_up_again_at_its_stage() {
    // The second stage holds for an hour, so it is still running when the
    // proxy stops, however slowly this test runs; the config the new
    // process reads shortens it (same stages, same weights), and the
    // rollout goes on from there to its promotion.
    let first_stage_quick = STAGES.replacen("min_requests = 20", "min_requests = 1", 1);
    let before = first_stage_quick.replacen(
        "hold = \"500ms\"\nmin_requests = 20",
        "hold = \"1h\"\nmin_requests = 20",
        1,
    );
    assert_ne!(before, first_stage_quick, "the second stage's hold is set");
    within(CANARY_BOUND, async {
        let blue = Upstream::start_with_version("blue", "1").await;
        let green = Upstream::start_with_version("green", "2").await;
        let proxy = Cutover::start(&app(&blue, &green, "", &before)).await;
        let traffic = Traffic::start(proxy.addr, 2, "/");
        let reply = admin_post(proxy.admin, CANARY, json!({})).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        until_status(&proxy, "second stage", |s| s["canary"]["stage"] == 1).await;
        drop(traffic);

        let dir = proxy.stop().await;
        let text = header() + &app(&blue, &green, "", &first_stage_quick);
        let proxy = Cutover::start_in(dir, &text).await;

        let status = proxy.service("app").await;
        assert_eq!(status["canary"]["stage"], 1, "{status:#}");
        assert_eq!(status["weights"], json!({"blue": 50, "green": 50}));
        assert_eq!(status["canary"]["hold_ms"], 500, "the new config's hold");
        let _traffic = Traffic::start(proxy.addr, 4, "/");
        let status = until_status(&proxy, "green promoted", |s| s["active"] == "green").await;
        assert_eq!(status["canary"], Value::Null);
        assert_eq!(
            proxy.event_reasons("app").await,
            ["weight", "weight", "canary"]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_aborts_to_weight_0_when_green_answers_500s() {
    within(CANARY_BOUND, async {
        let blue = Upstream::start_with_version("blue", "1").await;
        let green = Upstream::builder("green")
            .version("2")
            .failing()
            .start()
            .await;
        let proxy = Cutover::start(&app(&blue, &green, "", STAGES)).await;
        let traffic = Traffic::start(proxy.addr, 4, "/");

        let reply = admin_post(proxy.admin, CANARY, json!({})).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

        let status = until_status(&proxy, "canary aborted", |s| {
            s["canary"].is_null() && s["weights"]["green"] == 0
        })
        .await;
        assert_eq!(status["active"], "blue");
        assert_eq!(status["weights"], json!({"blue": 100, "green": 0}));

        let aborts = proxy.events_with("app", "canary_abort").await;
        assert_eq!(aborts.len(), 1, "{aborts:#?}");
        let abort = &aborts[0];
        assert_eq!(abort["actor"], "auto");
        assert_eq!(abort["detail"]["criterion"], "max_error_rate", "{abort:#}");
        let measured = &abort["detail"]["measured"];
        assert_eq!(measured["error_rate"], 1.0, "{abort:#}");
        assert_eq!(measured["max_error_rate"], 0.01, "{abort:#}");
        assert!(measured["requests"].as_u64() >= Some(20), "{abort:#}");
        assert_eq!(
            proxy.events_with("app", "canary").await,
            Vec::<Value>::new()
        );

        let metrics = proxy.scrape().await;
        assert_eq!(
            metrics.value(
                "cutover_canary_aborts_total",
                &[("service", "app"), ("criterion", "max_error_rate")]
            ),
            1.0,
            "{}",
            metrics.text
        );
        // After the abort (and whatever was in flight then), only blue answers.
        let more_blue = |n: usize| {
            let from = traffic.tally().from("blue");
            let traffic = &traffic;
            async move {
                eventually("blue answers more requests after the abort", || {
                    let blue = traffic.tally().from("blue");
                    async move { blue >= from + n }
                })
                .await
            }
        };
        more_blue(20).await;
        let green_after = traffic.tally().from("green");
        more_blue(50).await;
        assert_eq!(traffic.tally().from("green"), green_after);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_aborts_a_running_canary_and_a_second_delete_is_409() {
    within(CANARY_BOUND, async {
        let blue = Upstream::start_with_version("blue", "1").await;
        let green = Upstream::start_with_version("green", "2").await;
        let proxy = Cutover::start(&app(&blue, &green, "", STAGES)).await;
        // No traffic: the first stage never gets its 20 requests.
        let reply = admin_post(proxy.admin, CANARY, json!({})).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(proxy.service("app").await["weights"]["green"], 20);

        let reply = admin_delete(proxy.admin, CANARY).await;

        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let service = &reply.json()["service"];
        assert_eq!(service["weights"], json!({"blue": 100, "green": 0}));
        assert_eq!(service["canary"], Value::Null);
        assert_eq!(service["active"], "blue");
        let aborts = proxy.events_with("app", "canary_abort").await;
        assert_eq!(aborts.len(), 1, "{aborts:#?}");
        assert_eq!(aborts[0]["actor"], "api");
        let metrics = proxy.scrape().await;
        assert_eq!(
            metrics.value(
                "cutover_canary_aborts_total",
                &[("service", "app"), ("criterion", "operator")]
            ),
            1.0,
            "{}",
            metrics.text
        );

        let again = admin_delete(proxy.admin, CANARY).await;
        assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text());
        assert_eq!(again.json()["error"]["code"], "no_canary");
    })
    .await;
}

#[tokio::test]
async fn canary_without_stages_is_409_no_canary_stages() {
    within(BOUND, async {
        let blue = Upstream::start_with_version("blue", "1").await;
        let green = Upstream::start_with_version("green", "2").await;
        let proxy = Cutover::start(&app(&blue, &green, "", "")).await;

        let reply = admin_post(proxy.admin, CANARY, json!({})).await;

        assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text());
        assert_eq!(reply.json()["error"]["code"], "no_canary_stages");
        let status = proxy.service("app").await;
        assert_eq!(status["weights"], json!({"blue": 100, "green": 0}));
        assert_eq!(proxy.events("app").await, Vec::<Value>::new());
        let unknown = admin_post(proxy.admin, "/api/v1/services/nope/canary", json!({})).await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_weight_ends_the_canary_and_nothing_automated_overrides_it() {
    within(CANARY_BOUND, async {
        let blue = Upstream::start_with_version("blue", "1").await;
        let green = Upstream::start_with_version("green", "2").await;
        let rollback = "[service.app.rollback]\nmax_error_rate = 0.05\nmax_p99 = \"2s\"\n\
                        window = \"5s\"\nmin_requests = 20\ncooldown = \"1h\"\nmax_per_hour = 3\n\n";
        let tables = format!("{rollback}{STAGES}");
        let proxy = Cutover::start(&app(&blue, &green, "", &tables)).await;
        let reply = admin_post(proxy.admin, CANARY, json!({})).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

        // The operator takes over at 30%, then green misbehaves.
        let reply = admin_put(
            proxy.admin,
            "/api/v1/services/app/weights",
            json!({"standby": 30}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.json()["service"]["canary"], Value::Null);
        green.set_failing(true);
        let traffic = Traffic::start(proxy.addr, 4, "/");
        let proxy_ref = &proxy;
        eventually("green answered 60 requests at the operator's weight", || {
            let green = traffic.tally().from("green");
            async move { green >= 60 }
        })
        .await;
        // Two analysis ticks after that many errors.
        let ticks = tokio::time::Instant::now() + Duration::from_millis(600);
        while tokio::time::Instant::now() < ticks {
            let status = proxy_ref.service("app").await;
            assert_eq!(status["weights"]["green"], 30, "{status:#}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let automated: Vec<Value> = proxy
            .events("app")
            .await
            .into_iter()
            .filter(|e| e["actor"] == "auto")
            .collect();
        assert_eq!(automated, Vec::<Value>::new());
        assert_eq!(proxy.service("app").await["watch"], Value::Null);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_of_an_unhealthy_green_is_409_target_unhealthy() {
    within(BOUND, async {
        let blue = Upstream::start_with_version("blue", "1").await;
        let green = Upstream::builder("green")
            .version("2")
            .unhealthy()
            .start()
            .await;
        let tables = format!("{FAST_HEALTH}{STAGES}");
        let proxy = Cutover::start(&app(&blue, &green, "", &tables)).await;

        let reply = admin_post(proxy.admin, CANARY, json!({})).await;

        assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text());
        assert_eq!(reply.json()["error"]["code"], "target_unhealthy");
        let status = proxy.service("app").await;
        assert_eq!(status["weights"], json!({"blue": 100, "green": 0}));
        assert_eq!(status["canary"], Value::Null);
    })
    .await;
}
