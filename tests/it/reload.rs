//! Reloading the config through the admin API: an invalid file is refused
//! with positions and the running config stays; a valid one applies new
//! routes while keeping the active pool, the weight and open streams.

use http::StatusCode;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn invalid_config_reload_is_400_with_positions_and_old_routes_stay() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;
        let generation =
            admin_get(proxy.admin, "/api/v1/status").await.json()["generation"].clone();

        proxy.rewrite_config(
            &(route(None, "/", "app")
                + &route(None, "/missing", "nowhere")
                + &service_with(
                    "app",
                    &[blue.addr],
                    &[green.addr],
                    "drain_timeout = \"soon\"",
                )),
        );
        let reply = admin_post(proxy.admin, "/api/v1/reload", json!({})).await;

        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
        let error = &reply.json()["error"];
        assert_eq!(error["code"], "invalid_config");
        let errors: Vec<String> = error["errors"]
            .as_array()
            .expect("a list of errors")
            .iter()
            .map(|e| e.as_str().expect("one line per error").to_string())
            .collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        let text = std::fs::read_to_string(proxy.config_path()).unwrap();
        let file = proxy.config_path().display().to_string();
        for (error, culprit) in errors.iter().zip(["nowhere", "soon"]) {
            let at = error
                .strip_prefix(&format!("{file}:"))
                .unwrap_or_else(|| panic!("{error:?} does not start with the file"));
            let mut parts = at.splitn(3, ':');
            let line: usize = parts.next().unwrap().parse().expect("a line number");
            let column: usize = parts.next().unwrap().parse().expect("a column number");
            let source_line = text.lines().nth(line - 1).expect("the line exists");
            assert!(
                source_line.contains(culprit) && column >= 1 && column <= source_line.len(),
                "{error:?} points at {source_line:?}"
            );
        }
        assert_eq!(fetch(proxy.addr, "/missing").await.echo().upstream, "blue");
        let status = admin_get(proxy.admin, "/api/v1/status").await.json();
        assert_eq!(status["generation"], generation, "nothing changed");
    })
    .await;
}

#[tokio::test]
async fn reload_adds_a_route_and_keeps_active_pool_weight_and_open_streams() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let docs = Upstream::start("docs").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;
        let switched = proxy.switch("app", json!({"to": "green"})).await;
        assert_eq!(switched.status, StatusCode::OK, "{}", switched.text());
        let mut client = Client::http1(proxy.addr).await;
        let mut stream = client.send(get("/sse?n=8&ms=100")).await;
        let first = read_events(stream.body_mut(), 1).await;
        assert_eq!(first[0].json()["upstream"], "green");
        let weighted = admin_put(
            proxy.admin,
            "/api/v1/services/app/weights",
            json!({"standby": 25}),
        )
        .await;
        assert_eq!(weighted.status, StatusCode::OK, "{}", weighted.text());
        assert_ne!(fetch(proxy.addr, "/docs/x").await.echo().upstream, "docs");

        proxy.rewrite_config(
            &(blue_green(&blue, &green)
                + &route(None, "/docs", "docs")
                + &service("docs", &[docs.addr], &[docs.addr])),
        );
        let reply = admin_post(proxy.admin, "/api/v1/reload", json!({})).await;

        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let generation = reply.json()["generation"].as_u64().expect("generation");
        assert!(generation > weighted.json()["generation"].as_u64().unwrap());
        assert_eq!(fetch(proxy.addr, "/docs/x").await.echo().upstream, "docs");
        let status = proxy.service("app").await;
        assert_eq!(status["active"], "green");
        assert_eq!(status["weights"], json!({"blue": 25, "green": 75}));

        let rest = read_events(stream.body_mut(), usize::MAX).await;
        assert_eq!(rest.len(), 7, "the stream went on: {rest:?}");
        for (i, event) in rest.iter().enumerate() {
            assert_eq!(event.json()["i"], i + 1);
            assert_eq!(event.json()["upstream"], "green");
        }

        let events = admin_get(proxy.admin, "/api/v1/events").await.json();
        let reload = events
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["reason"] == "reload")
            .expect("a reload event")
            .clone();
        assert_eq!(reload["actor"], "api");
        assert_eq!(reload["service"], serde_json::Value::Null);
    })
    .await;
}

#[tokio::test]
async fn server_added_by_reload_gets_no_traffic_until_it_passes_healthy_threshold() {
    within(BOUND, async {
        let a = Upstream::start_with_version("a", "1.0.0").await;
        let b = Upstream::start_with_version("b", "1.0.0").await;
        let green = Upstream::start_with_version("green", "1.0.0").await;
        let health = "\n[service.app.health]\ninterval = \"300ms\"\nhealthy_threshold = 2\n";
        let proxy = Cutover::start(
            &(route(None, "/", "app") + &service_with("app", &[a.addr], &[green.addr], health)),
        )
        .await;

        proxy.rewrite_config(
            &(route(None, "/", "app")
                + &service_with("app", &[a.addr, b.addr], &[green.addr], health)),
        );
        let reply = admin_post(proxy.admin, "/api/v1/reload", json!({})).await;

        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let status = proxy.service("app").await;
        let added = &status["pools"]["blue"]["servers"][1];
        assert_eq!(added["address"], b.addr.to_string());
        assert_eq!(added["healthy"], false, "unproven: {added}");
        for _ in 0..10 {
            let reply = fetch(proxy.addr, "/").await;
            assert_eq!(upstream_of(&reply.body).as_deref(), Some("a"));
        }
        assert_eq!(b.hits(), 0);
        let admin = proxy.admin;
        eventually("the added server is proven healthy", || async move {
            let status = admin_get(admin, "/api/v1/services/app").await.json();
            status["pools"]["blue"]["servers"][1]["healthy"] == true
        })
        .await;
        for _ in 0..4 {
            fetch(proxy.addr, "/").await;
        }
        assert!(b.hits() > 0, "a proven server takes traffic");
    })
    .await;
}
