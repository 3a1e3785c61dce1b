//! Switching traffic between pools: the cutover rule under concurrent load,
//! a stream that finishes on the old pool, the health and version gates,
//! rollback, and the events each change leaves.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{Method, StatusCode};
use serde_json::json;

use crate::support::*;

/// Client tasks sending requests while the pools are switched.
const CLIENTS: usize = 32;
/// Switches made while the clients run.
const SWITCHES: usize = 24;
/// Pause between two switches (pacing, not convergence).
const SWITCH_PAUSE: Duration = Duration::from_millis(120);

/// `[service.NAME.health]` with short intervals.
fn health(svc: &str, unhealthy_threshold: u32) -> String {
    format!(
        "\n[service.{svc}.health]\npath = \"/health\"\ninterval = \"50ms\"\ntimeout = \"500ms\"\n\
         healthy_threshold = 2\nunhealthy_threshold = {unhealthy_threshold}\n"
    )
}

/// Route `/` to `app`, whose pools are the two backends, with health checks.
fn gated(blue: &Upstream, green: &Upstream) -> String {
    route(None, "/", "app") + &service_with("app", &[blue.addr], &[green.addr], &health("app", 2))
}

fn other(pool: &str) -> &'static str {
    if pool == "blue" {
        "green"
    } else {
        "blue"
    }
}

/// One request of the load: when it was sent, when its answer had been
/// read, and who answered it.
struct Sample {
    started: Instant,
    finished: Instant,
    outcome: Result<String, String>,
}

/// One switch: when the call was sent, when it returned, where it went.
#[derive(Debug)]
struct Switch {
    sent: Instant,
    returned: Instant,
    to: &'static str,
}

/// The pool a request must have reached, when the rule decides it: the
/// request started after switch `i` returned and was over before switch
/// `i + 1` was sent, so it can only have been routed by switch `i`'s
/// snapshot. (One that was still running when the next switch was sent may
/// legitimately be routed by that one: the proxy reads it a little later.)
fn expected_pool(switches: &[Switch], sample: &Sample) -> Option<&'static str> {
    let done = switches.iter().rposition(|s| s.returned <= sample.started);
    let next = done.map_or(0, |i| i + 1);
    if switches
        .get(next)
        .is_some_and(|s| s.sent <= sample.finished)
    {
        return None;
    }
    Some(done.map_or("blue", |i| switches[i].to))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_started_after_a_switch_returned_never_reach_the_old_pool() {
    within(Duration::from_secs(15), async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;

        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (addr, stop) = (proxy.addr, stop.clone());
                tokio::spawn(async move {
                    let mut conn = LoadConn::new(addr);
                    let mut samples = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let outcome = match conn.get("/").await {
                            Ok((StatusCode::OK, body)) => {
                                upstream_of(&body).ok_or_else(|| format!("not an echo: {body:?}"))
                            }
                            Ok((status, body)) => Err(format!("{status}: {body:?}")),
                            Err(e) => Err(e),
                        };
                        samples.push(Sample {
                            started,
                            finished: Instant::now(),
                            outcome,
                        });
                    }
                    samples
                })
            })
            .collect();

        let mut switches = Vec::new();
        let mut generations = Vec::new();
        let mut to = "green";
        for _ in 0..SWITCHES {
            tokio::time::sleep(SWITCH_PAUSE).await;
            let sent = Instant::now();
            let reply = proxy.switch("app", json!({ "to": to })).await;
            let returned = Instant::now();
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            let answer = reply.json();
            assert_eq!(answer["service"]["active"], to, "{answer}");
            generations.push(answer["generation"].as_u64().expect("generation"));
            switches.push(Switch { sent, returned, to });
            to = other(to);
        }
        tokio::time::sleep(SWITCH_PAUSE).await;
        stop.store(true, Ordering::Relaxed);

        let mut samples = Vec::new();
        for client in clients {
            samples.extend(client.await.expect("client task"));
        }
        let failures: Vec<&String> = samples
            .iter()
            .filter_map(|s| s.outcome.as_ref().err())
            .collect();
        assert!(
            failures.is_empty(),
            "{} of {} requests failed, e.g. {:?}",
            failures.len(),
            samples.len(),
            &failures[..failures.len().min(5)]
        );
        let mut decided = 0;
        let mut wrong = Vec::new();
        for sample in &samples {
            let Some(expected) = expected_pool(&switches, sample) else {
                continue;
            };
            decided += 1;
            let answered = sample.outcome.as_deref().expect("no failures");
            if answered != expected {
                wrong.push((sample.started, answered, expected));
            }
        }
        assert!(
            wrong.is_empty(),
            "{} requests started after a switch had returned but were answered by the old pool, e.g. {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
        assert!(
            decided > 1000,
            "only {decided} of {} requests fell between switches",
            samples.len()
        );
        assert!(
            generations.windows(2).all(|w| w[0] < w[1]),
            "generations do not increase: {generations:?}"
        );
        assert!(blue.hits() > 0 && green.hits() > 0);
    })
    .await;
}

#[tokio::test]
async fn sse_stream_opened_on_blue_finishes_on_blue_while_new_requests_go_to_green() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;

        let mut client = Client::http1(proxy.addr).await;
        let mut stream = client.send(get("/sse?n=8&ms=100")).await;
        assert_eq!(stream.status(), StatusCode::OK);
        let first = read_events(stream.body_mut(), 1).await;
        assert_eq!(first[0].json()["upstream"], "blue");

        let reply = proxy.switch("app", json!({"to": "green"})).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        for _ in 0..5 {
            assert_eq!(fetch(proxy.addr, "/").await.echo().upstream, "green");
        }

        let rest = read_events(stream.body_mut(), usize::MAX).await;
        assert_eq!(rest.len(), 7, "{rest:?}");
        for (i, event) in rest.iter().enumerate() {
            assert_eq!(event.json()["upstream"], "blue");
            assert_eq!(event.json()["i"], i + 1);
        }
    })
    .await;
}

#[tokio::test]
async fn switch_refused_with_409_when_target_unhealthy_unless_forced() {
    within(BOUND, async {
        let blue = Upstream::start_with_version("blue", "1.0.0").await;
        let green = Upstream::builder("green")
            .version("2.0.0")
            .unhealthy()
            .start()
            .await;
        let proxy = Cutover::start(&gated(&blue, &green)).await;
        let before = proxy.service("app").await;
        assert_eq!(before["pools"]["green"]["servers"][0]["healthy"], false);

        let reply = proxy.switch("app", json!({})).await;

        assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text());
        assert_eq!(reply.json()["error"]["code"], "target_unhealthy");
        let after = proxy.service("app").await;
        assert_eq!(after["active"], "blue");
        assert_eq!(after["generation"], before["generation"]);
        assert!(proxy.events("app").await.is_empty());

        let forced = proxy.switch("app", json!({"force": true})).await;
        assert_eq!(forced.status, StatusCode::OK, "{}", forced.text());
        assert_eq!(forced.json()["service"]["active"], "green");
        let events = proxy.events("app").await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["detail"]["force"], true);
    })
    .await;
}

#[tokio::test]
async fn switch_refused_with_409_on_version_mismatch_unless_forced() {
    within(BOUND, async {
        let blue = Upstream::start_with_version("blue", "1.0.0").await;
        let green = Upstream::start_with_version("green", "2.0.0").await;
        let proxy = Cutover::start(&gated(&blue, &green)).await;

        let reply = proxy
            .switch("app", json!({"expect_version": "9.9.9"}))
            .await;

        assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text());
        let error = &reply.json()["error"];
        assert_eq!(error["code"], "version_mismatch");
        assert!(
            error["message"].as_str().unwrap().contains("2.0.0"),
            "{error}"
        );
        assert_eq!(proxy.service("app").await["active"], "blue");

        let forced = proxy
            .switch("app", json!({"expect_version": "9.9.9", "force": true}))
            .await;
        assert_eq!(forced.status, StatusCode::OK, "{}", forced.text());
        assert_eq!(forced.json()["service"]["active"], "green");

        let back = proxy
            .switch("app", json!({"to": "blue", "expect_version": "1.0.0"}))
            .await;
        assert_eq!(back.status, StatusCode::OK, "{}", back.text());
        assert_eq!(back.json()["service"]["active"], "blue");
    })
    .await;
}

#[tokio::test]
async fn changes_to_an_unknown_service_are_404() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;

        let switch = proxy.switch("nope", json!({})).await;
        let rollback = admin_post(proxy.admin, "/api/v1/services/nope/rollback", json!({})).await;
        let weights = admin_put(
            proxy.admin,
            "/api/v1/services/nope/weights",
            json!({"standby": 10}),
        )
        .await;
        let status = admin_get(proxy.admin, "/api/v1/services/nope").await;

        for reply in [switch, rollback, weights, status] {
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{}", reply.text());
            assert_eq!(reply.json()["error"]["code"], "unknown_service");
        }
    })
    .await;
}

#[tokio::test]
async fn switch_to_the_active_pool_answers_200_and_changes_nothing() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;
        let status = admin_get(proxy.admin, "/api/v1/status").await.json();

        let reply = proxy.switch("app", json!({"to": "blue"})).await;

        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let answer = reply.json();
        assert_eq!(answer["changed"], false);
        assert_eq!(answer["generation"], status["generation"]);
        assert_eq!(answer["service"]["active"], "blue");
        let after = admin_get(proxy.admin, "/api/v1/status").await.json();
        assert_eq!(after["generation"], status["generation"]);
        assert!(proxy.events("app").await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn rollback_with_nothing_to_roll_back_is_409() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;

        let reply = admin_post(proxy.admin, "/api/v1/services/app/rollback", json!({})).await;

        assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.text());
        assert_eq!(reply.json()["error"]["code"], "nothing_to_roll_back");
        assert_eq!(proxy.service("app").await["active"], "blue");
    })
    .await;
}

#[tokio::test]
async fn rollback_after_rollback_switches_back_again() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;
        let switched = proxy.switch("app", json!({})).await;
        assert_eq!(switched.json()["service"]["active"], "green");

        let mut generation = switched.json()["generation"].as_u64().unwrap();
        for expected in ["blue", "green", "blue"] {
            let reply = admin_post(proxy.admin, "/api/v1/services/app/rollback", json!({})).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            let answer = reply.json();
            assert_eq!(answer["service"]["active"], expected);
            let next = answer["generation"].as_u64().unwrap();
            assert!(next > generation, "{next} after {generation}");
            generation = next;
            assert_eq!(fetch(proxy.addr, "/").await.echo().upstream, expected);
        }
        assert_eq!(
            proxy.event_reasons("app").await,
            ["manual", "rollback", "rollback", "rollback"]
        );
    })
    .await;
}

#[tokio::test]
async fn events_record_time_service_from_to_reason_and_actor() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;

        let over_tcp = proxy.switch("app", json!({"to": "green"})).await;
        assert_eq!(over_tcp.status, StatusCode::OK, "{}", over_tcp.text());
        let over_socket = socket_call(
            &proxy.socket,
            Method::POST,
            "/api/v1/services/app/rollback",
            None,
        )
        .await;
        assert_eq!(over_socket.status, StatusCode::OK, "{}", over_socket.text());
        let socket = proxy.socket.to_str().expect("utf-8 temp path");
        let by_ctl = ctl(&["--socket", socket, "switch", "app", "--to", "green"]).await;
        assert_eq!(by_ctl.code, 0, "{by_ctl:?}");

        let events = proxy.events("app").await;
        let summary: Vec<(&str, &str, &str, &str)> = events
            .iter()
            .map(|e| {
                (
                    e["from"].as_str().unwrap(),
                    e["to"].as_str().unwrap(),
                    e["reason"].as_str().unwrap(),
                    e["actor"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("blue", "green", "manual", "api"),
                ("green", "blue", "rollback", "socket"),
                ("blue", "green", "manual", "socket"),
            ]
        );
        for event in &events {
            assert_eq!(event["service"], "app");
            assert!(event["detail"].is_object(), "{event}");
            let time = event["time"].as_str().expect("time");
            assert!(time.ends_with('Z'), "{time}");
            let at = humantime::parse_rfc3339(time).expect("RFC 3339 time");
            let age = SystemTime::now().duration_since(at).unwrap_or_default();
            assert!(age < Duration::from_secs(60), "{time}");
        }
        let status = proxy.service("app").await;
        assert_eq!(status["last_switch"]["actor"], "socket");
        assert_eq!(status["last_switch"]["to"], "green");
    })
    .await;
}
