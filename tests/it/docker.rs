//! The Docker provider against the real engine: seed 000's compose stack
//! with only its `traefik` service replaced, container stops under load,
//! labels cutover does not read or cannot use, and the engine going away.
//!
//! Each test builds its image with `scripts/build-image.sh --fast` from
//! the binary under test, and skips (saying so) where no engine is
//! reachable; under `CI=true` that is a failure.

use std::time::Duration;

use http::StatusCode;
use serde_json::Value;

use crate::support::docker::{
    blocking, docker, eventually_within, get_host, Engine, Paced, Relay, ENGINE_SOCKET,
};
use crate::support::{admin_get, get, read_events, Client, Cutover};

/// Container start-ups, health checks and reconnects, on a busy machine.
const SLOW: Duration = Duration::from_secs(60);
/// The seed's host.
const SEED_HOST: &str = "your-domain.com";

/// Labels of a blue/green router pair as the seed writes them, for `host`.
fn seed_labels(colour: &str, host: &str, port: u16) -> Vec<(String, String)> {
    vec![
        ("traefik.enable".into(), "true".into()),
        (
            format!("traefik.http.routers.{colour}.rule"),
            format!("Host(`{host}`)"),
        ),
        (
            format!("traefik.http.routers.{colour}.service"),
            colour.into(),
        ),
        (
            format!("traefik.http.services.{colour}.loadbalancer.server.port"),
            port.to_string(),
        ),
    ]
}

fn refs(labels: &[(String, String)]) -> Vec<(&str, &str)> {
    labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// `GET /api/v1/status` of an in-process proxy.
async fn status(proxy: &Cutover) -> Value {
    admin_get(proxy.admin, "/api/v1/status").await.json()
}

/// The servers of `pool` of `service` in `status`: (container, state).
fn servers(status: &Value, service: &str, pool: &str) -> Vec<(String, String)> {
    let services = status["services"].as_array().cloned().unwrap_or_default();
    let Some(svc) = services.iter().find(|s| s["name"] == service) else {
        return Vec::new();
    };
    svc["pools"][pool]["servers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| {
            let f = |k: &str| s[k].as_str().unwrap_or_default().to_string();
            (f("container"), f("state"))
        })
        .collect()
}

/// Waits until the load has had `n` more answers from `upstream` (a
/// `pool/version` or a pool prefix).
async fn answered(load: &Paced, upstream: &str, n: usize) {
    let count = |load: &Paced| -> usize {
        load.seen()
            .by_upstream
            .iter()
            .filter(|(who, _)| who.starts_with(upstream))
            .map(|(_, n)| n)
            .sum()
    };
    let before = count(load);
    eventually_within(
        &format!("{n} more answers from {upstream}"),
        SLOW,
        || async { count(load) >= before + n },
    )
    .await;
}

fn assert_ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_stack_with_its_labels_unchanged_routes_by_host_switches_and_rolls_back_with_no_failed_request(
) {
    let Some(mut engine) = Engine::start("the seed-000 compose stack") else {
        return;
    };
    let stack = engine.compose_up();
    let addr = stack.proxy_addr();
    eventually_within("blue answers your-domain.com", SLOW, || async {
        get_host(addr, SEED_HOST).await == Some((StatusCode::OK, "blue".into()))
    })
    .await;
    let (other, _) = get_host(addr, "other.example").await.expect("an answer");
    assert_eq!(other, StatusCode::NOT_FOUND, "routed by Host only");
    let s = stack.clone();
    eventually_within("green is healthy too", SLOW, || {
        let s = s.clone();
        async move {
            let out = blocking(move || s.ctl(&["--json", "status", SEED_HOST])).await;
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            v["pools"]["green"]["servers"][0]["state"] == "healthy"
        }
    })
    .await;

    let load = Paced::start(addr, SEED_HOST, 100);
    answered(&load, "blue", 50).await;
    let s = stack.clone();
    let out = blocking(move || s.ctl(&["switch", SEED_HOST])).await;
    assert_ok(&out, "ctl switch");
    answered(&load, "green", 100).await;
    let s = stack.clone();
    let out = blocking(move || s.ctl(&["rollback", SEED_HOST])).await;
    assert_ok(&out, "ctl rollback");
    answered(&load, "blue", 100).await;

    // A second blue replica, then one of the two stopped under the load.
    let s = stack.clone();
    let out = blocking(move || s.run(&["up", "-d", "--no-recreate", "--scale", "blue=2"])).await;
    assert_ok(&out, "docker-compose up --scale blue=2");
    let s = stack.clone();
    eventually_within("two healthy blue servers", SLOW, || {
        let s = s.clone();
        async move {
            let out = blocking(move || s.ctl(&["--json", "status", SEED_HOST])).await;
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let blue = v["pools"]["blue"]["servers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            blue.len() == 2 && blue.iter().all(|s| s["state"] == "healthy")
        }
    })
    .await;
    answered(&load, "blue", 50).await;
    let replica = stack.container("blue");
    blocking(move || docker(&["stop", &replica])).await;
    answered(&load, "blue", 100).await;
    let seen = load.stop();
    assert!(seen.failed.is_empty(), "failed requests: {seen:?}");
    assert!(seen.ok >= 400, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_green_started_a_moment_before_its_blue_does_not_take_the_traffic_and_a_lone_green_serves(
) {
    let Some(mut engine) = Engine::start("green before blue") else {
        return;
    };
    let (host, lone) = ("order.test", "lone.test");
    let net = engine.network();
    let proxy = Cutover::start(&engine.provider_config(ENGINE_SOCKET)).await;
    let green = seed_labels("green", host, 5001);
    let green = engine.agent("green", &net, &refs(&green), "green", "g", 5001);
    let only = seed_labels("lonegreen", lone, 5001);
    engine.agent("lone-green", &net, &refs(&only), "green", "l", 5001);
    // The proxy has listed the green container; its blue comes a second later.
    eventually_within("the green container is listed", SLOW, || async {
        status(&proxy).await["docker"]["containers"]
            .as_array()
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["name"].as_str() == Some(green.as_str()))
            })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let blue = seed_labels("blue", host, 5000);
    engine.agent("blue", &net, &refs(&blue), "blue", "b", 5000);
    eventually_within("blue answers order.test", SLOW, || async {
        get_host(proxy.addr, host).await == Some((StatusCode::OK, "blue".into()))
    })
    .await;
    let s = status(&proxy).await;
    let active = s["services"]
        .as_array()
        .and_then(|all| all.iter().find(|v| v["name"] == host))
        .map(|v| v["active"].clone());
    assert_eq!(active, Some(Value::from("blue")), "{s}");
    // A green alone stays alone: after the hold it is the active pool.
    eventually_within("the lone green answers lone.test", SLOW, || async {
        get_host(proxy.addr, lone).await == Some((StatusCode::OK, "green".into()))
    })
    .await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_stop_of_one_of_two_replicas_under_load_fails_no_request_and_its_stream_finishes() {
    let Some(mut engine) = Engine::start("stopping a replica under load") else {
        return;
    };
    let host = "stop.test";
    let net = engine.network();
    let blue = seed_labels("blue", host, 5000);
    let green = seed_labels("green", host, 5001);
    engine.agent("blue-a", &net, &refs(&blue), "blue", "a", 5000);
    let b = engine.agent("blue-b", &net, &refs(&blue), "blue", "b", 5000);
    engine.agent("green", &net, &refs(&green), "green", "g", 5001);
    let proxy = Cutover::start(&engine.provider_config(ENGINE_SOCKET)).await;
    eventually_within("two healthy blue servers", SLOW, || async {
        let blue = servers(&status(&proxy).await, host, "blue");
        blue.len() == 2 && blue.iter().all(|(_, state)| state == "healthy")
    })
    .await;

    let load = Paced::start(proxy.addr, host, 100);
    answered(&load, "blue/b", 10).await;
    // A stream on replica b, which is then stopped: it finishes there.
    let (mut conn, mut stream, first) = loop {
        let mut conn = Client::http1(proxy.addr).await;
        let mut req = get("/stream");
        req.headers_mut()
            .insert(http::header::HOST, host.parse().expect("host"));
        let mut resp = conn.send(req).await;
        let first = read_events(resp.body_mut(), 1).await;
        if first[0].json()["version"] == "b" {
            break (conn, resp, first.len());
        }
    };
    let stopping = b.clone();
    let stop = tokio::task::spawn_blocking(move || docker(&["stop", "-t", "10", &stopping]));
    eventually_within("blue-b is draining in status", SLOW, || async {
        servers(&status(&proxy).await, host, "blue")
            .iter()
            .any(|(container, state)| container == &b && state == "draining")
    })
    .await;
    let rest = read_events(stream.body_mut(), 100).await;
    // Twelve tokens, then `[DONE]`.
    assert_eq!(
        first + rest.len(),
        13,
        "the stream finished whole on blue-b"
    );
    assert_eq!(rest.last().map(|e| e.data.as_str()), Some("[DONE]"));
    stop.await.expect("docker stop");
    eventually_within(
        "blue-b leaves status once gone and drained",
        SLOW,
        || async {
            let blue = servers(&status(&proxy).await, host, "blue");
            blue.len() == 1 && blue[0].1 == "healthy"
        },
    )
    .await;
    answered(&load, "blue/a", 100).await;
    let seen = load.stop();
    assert!(seen.failed.is_empty(), "failed requests: {seen:?}");
    drop(conn.get("/").await);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_cutover_ignores_or_cannot_use_are_reported_and_everything_else_serves() {
    let Some(mut engine) = Engine::start("label reports") else {
        return;
    };
    let net = engine.network();
    let mut good = seed_labels("good", "good.test", 5000);
    good.push(("traefik.http.routers.good.tls".into(), "true".into()));
    let good = engine.agent("good", &net, &refs(&good), "blue", "1", 5000);
    let mut bad_port = seed_labels("badport", "bad.test", 5000);
    bad_port[3].1 = "eighty".into();
    let bad_port = engine.agent("badport", &net, &refs(&bad_port), "blue", "1", 5000);
    let mut no_mw = seed_labels("nomw", "nomw.test", 5000);
    no_mw.push((
        "traefik.http.routers.nomw.middlewares".into(),
        "missing".into(),
    ));
    let no_mw = engine.agent("nomw", &net, &refs(&no_mw), "blue", "1", 5000);
    // `/ws` without an upgrade is answered 400: never a passing check.
    let mut failing = seed_labels("slow", "slow.test", 5000);
    failing.push((
        "traefik.http.services.slow.loadbalancer.healthcheck.path".into(),
        "/ws".into(),
    ));
    let failing = engine.agent("slow", &net, &refs(&failing), "blue", "1", 5000);
    let proxy = Cutover::start(&engine.provider_config(ENGINE_SOCKET)).await;

    let status = status(&proxy).await;
    let containers = status["docker"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let of = |name: &str| {
        containers
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {containers:?}"))
    };
    assert_eq!(
        of(&good)["ignored_labels"],
        serde_json::json!(["traefik.http.routers.good.tls"])
    );
    let issue = |name: &str, label: &str| -> String {
        of(name)["issues"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .find(|i| i["label"] == label)
            .and_then(|i| i["message"].as_str().map(String::from))
            .unwrap_or_else(|| panic!("no issue on {label} of {name}: {:?}", of(name)))
    };
    let port = issue(
        &bad_port,
        "traefik.http.services.badport.loadbalancer.server.port",
    );
    assert!(port.contains("\"eighty\" is not a port"), "{port}");
    let mw = issue(&no_mw, "traefik.http.routers.nomw.middlewares");
    assert!(mw.contains("\"missing\" is not defined"), "{mw}");
    assert_eq!(status["docker"]["connected"], true);

    assert_eq!(
        get_host(proxy.addr, "good.test").await,
        Some((StatusCode::OK, "blue".into()))
    );
    for left_out in ["bad.test", "nomw.test"] {
        let (code, _) = get_host(proxy.addr, left_out).await.expect("an answer");
        assert_eq!(code, StatusCode::NOT_FOUND, "{left_out} is left out");
    }
    // Started, never through a passing check: no request reaches it.
    assert_eq!(
        servers(&status, "slow.test", "blue"),
        [(failing.clone(), "starting".to_string())]
    );
    let (code, _) = get_host(proxy.addr, "slow.test").await.expect("an answer");
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_engine_is_away_the_last_containers_serve_and_after_it_returns_missed_changes_apply(
) {
    let Some(mut engine) = Engine::start("the engine going away") else {
        return;
    };
    // The engine's own restart would stop every container on it (other
    // work's too): its socket is relayed instead, and the relay cut.
    let dir = tempfile::tempdir().expect("temp dir");
    let relay = Relay::start(dir.path().join("docker.sock"));
    let host = "away.test";
    let net = engine.network();
    let blue = seed_labels("blue", host, 5000);
    let green = seed_labels("green", host, 5001);
    engine.agent("blue", &net, &refs(&blue), "blue", "1", 5000);
    let proxy = Cutover::start(&engine.provider_config(&relay.path.display().to_string())).await;
    let up = |proxy: &Cutover| {
        let admin = proxy.admin;
        async move {
            let text = admin_get(admin, "/metrics").await.text();
            crate::support::Scrape::parse(&text)
                .get("cutover_provider_up", &[("provider", "docker")])
        }
    };
    assert_eq!(up(&proxy).await, Some(1.0));
    eventually_within("blue healthy", SLOW, || async {
        get_host(proxy.addr, host).await == Some((StatusCode::OK, "blue".into()))
    })
    .await;

    relay.cut();
    eventually_within("provider_up is 0", SLOW, || async {
        up(&proxy).await == Some(0.0)
    })
    .await;
    assert_eq!(status(&proxy).await["docker"]["connected"], false);
    let load = Paced::start(proxy.addr, host, 50);
    answered(&load, "blue", 25).await;
    // Missed while away: green starts.
    let green = engine.agent("green", &net, &refs(&green), "green", "2", 5001);
    answered(&load, "blue", 25).await;

    relay.restore();
    eventually_within("reconnected, green listed and healthy", SLOW, || async {
        up(&proxy).await == Some(1.0)
            && servers(&status(&proxy).await, host, "green")
                == [(green.clone(), "healthy".to_string())]
    })
    .await;
    let switched = proxy.switch(host, serde_json::json!({})).await;
    assert_eq!(switched.status, StatusCode::OK, "{}", switched.text());
    answered(&load, "green", 25).await;
    let seen = load.stop();
    assert!(seen.failed.is_empty(), "failed requests: {seen:?}");
    proxy.stop().await;
}
