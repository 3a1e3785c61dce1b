//! The admin listeners themselves: the socket's mode, the bearer token on a
//! non-loopback listener, browsers kept out, and liveness and readiness.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use http::{header, Method, StatusCode};
use serde_json::json;

use crate::support::*;

const TOKEN: &str = "s3cret-token";

#[tokio::test]
async fn admin_socket_is_created_with_mode_0600() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;

        let mode = std::fs::metadata(&proxy.socket)
            .expect("the socket exists")
            .permissions()
            .mode();

        assert_eq!(mode & 0o777, 0o600, "mode {:o}", mode & 0o777);
        let status = socket_call(&proxy.socket, Method::GET, "/api/v1/status", None).await;
        assert_eq!(status.status, StatusCode::OK, "{}", status.text());
    })
    .await;
}

#[tokio::test]
async fn non_loopback_admin_listener_requires_the_bearer_token() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("admin.token"), format!("  {TOKEN}\n")).unwrap();
        let config = header().replace(
            "[admin]\nlisten = \"127.0.0.1:0\"",
            "[admin]\nlisten = \"0.0.0.0:0\"\ntoken_file = \"admin.token\"",
        ) + &blue_green(&blue, &green);
        assert!(config.contains("0.0.0.0:0"), "{config}");

        let proxy = Cutover::start_in(dir, &config).await;
        let admin = proxy.admin;
        assert!(admin.ip().is_loopback(), "reached over loopback: {admin}");

        let anonymous = admin_get(admin, "/api/v1/status").await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
        assert_eq!(anonymous.json()["error"]["code"], "unauthorized");
        assert_eq!(anonymous.headers[header::WWW_AUTHENTICATE], "Bearer");
        let wrong = admin_get_with_token(admin, "/api/v1/status", "not-the-token").await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
        let right = admin_get_with_token(admin, "/api/v1/status", TOKEN).await;
        assert_eq!(right.status, StatusCode::OK, "{}", right.text());
        assert_eq!(right.json()["services"][0]["name"], "app");
        let switch = admin_post(admin, "/api/v1/services/app/switch", json!({})).await;
        assert_eq!(switch.status, StatusCode::UNAUTHORIZED);
        let service = admin_get_with_token(admin, "/api/v1/services/app", TOKEN).await;
        assert_eq!(
            service.json()["active"],
            "blue",
            "the refused switch changed nothing"
        );
        for open in ["/healthz", "/readyz"] {
            assert_eq!(
                admin_get(admin, open).await.status,
                StatusCode::OK,
                "{open}"
            );
        }
        // The socket is protected by its file mode, not the token.
        let status = socket_call(&proxy.socket, Method::GET, "/api/v1/status", None).await;
        assert_eq!(status.status, StatusCode::OK);
    })
    .await;
}

#[test]
fn non_loopback_admin_listener_without_token_file_is_a_config_error() {
    let text = "[admin]\nlisten = \"0.0.0.0:9090\"\n\n[[route]]\nservice = \"app\"\n\n\
                [service.app.pools.blue]\nservers = [\"127.0.0.1:5000\"]\n\
                [service.app.pools.green]\nservers = [\"127.0.0.1:5001\"]\n";

    let error = cutover::config::parse(text, Path::new("/etc/cutover/proxy.toml"))
        .expect_err("a non-loopback admin listener needs a token file");

    let message = error.to_string();
    assert!(message.contains("token_file"), "{message}");
    assert!(message.contains("proxy.toml:2:"), "{message}");
}

#[tokio::test]
async fn state_change_from_a_browser_origin_is_403() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;
        let mut req = request(
            Method::POST,
            "/api/v1/services/app/switch",
            full(json!({"to": "green"}).to_string()),
        );
        req.headers_mut()
            .insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        req.headers_mut()
            .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());

        let reply = admin_send(proxy.admin, req).await;

        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text());
        assert_eq!(reply.json()["error"]["code"], "forbidden");
        assert_eq!(proxy.service("app").await["active"], "blue");
        assert!(proxy.events("app").await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn readyz_and_healthz_answer_200_once_started() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;

        let ready = admin_get(proxy.admin, "/readyz").await;
        let live = admin_get(proxy.admin, "/healthz").await;

        assert_eq!(ready.status, StatusCode::OK, "{}", ready.text());
        assert_eq!(ready.json()["ready"], true);
        assert_eq!(live.status, StatusCode::OK, "{}", live.text());
        let status = admin_get(proxy.admin, "/api/v1/status").await.json();
        assert_eq!(status["ready"], true);
        let over_socket = socket_call(&proxy.socket, Method::GET, "/readyz", None).await;
        assert_eq!(over_socket.status, StatusCode::OK);
    })
    .await;
}

#[tokio::test]
async fn readyz_is_503_until_the_first_round_of_health_checks_is_done() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        // Accepts connections (the kernel's backlog) but never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap();
        let health = "\n[service.app.health]\ninterval = \"50ms\"\ntimeout = \"1s\"\n";
        let config = header()
            + &route(None, "/", "app")
            + &service_with("app", &[blue.addr], &[silent_addr], health);
        let started = std::time::Instant::now();

        let proxy = Cutover::spawn_in(tempfile::tempdir().unwrap(), &config).await;

        let early = admin_get(proxy.admin, "/readyz").await;
        let waited = started.elapsed();
        assert!(waited < std::time::Duration::from_millis(800), "{waited:?}");
        assert_eq!(
            early.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            early.text()
        );
        assert_eq!(early.json()["ready"], false);
        assert_eq!(
            admin_get(proxy.admin, "/healthz").await.status,
            StatusCode::OK
        );
        proxy.wait_ready().await;
        let status = proxy.service("app").await;
        assert_eq!(status["pools"]["green"]["servers"][0]["healthy"], false);
        assert_eq!(status["pools"]["blue"]["servers"][0]["healthy"], true);
        drop(silent);
    })
    .await;
}

#[tokio::test]
async fn service_status_has_the_spec_shape() {
    within(BOUND, async {
        let blue = Upstream::start_with_version("blue", "1.4.1").await;
        let green = Upstream::start_with_version("green", "1.4.2").await;
        let health = "\n[service.app.health]\ninterval = \"50ms\"\n";
        let config =
            route(None, "/", "app") + &service_with("app", &[blue.addr], &[green.addr], health);
        let proxy = Cutover::start(&config).await;
        let switched = proxy.switch("app", json!({})).await;
        assert_eq!(switched.status, StatusCode::OK, "{}", switched.text());

        let all = admin_get(proxy.admin, "/api/v1/status").await.json();
        let one = proxy.service("app").await;

        assert_eq!(
            all["services"][0], one,
            "the service endpoint answers one element, bare"
        );
        assert!(all["generation"].as_u64().unwrap() >= one["generation"].as_u64().unwrap());
        assert_eq!(one["name"], "app");
        assert_eq!(one["active"], "green");
        assert_eq!(one["standby"], "blue");
        assert_eq!(one["weights"], json!({"blue": 0, "green": 100}));
        assert_eq!(one["generation"], switched.json()["generation"]);
        let last = &one["last_switch"];
        for key in ["time", "from", "to", "reason", "actor"] {
            assert!(last[key].is_string(), "last_switch.{key}: {last}");
        }
        for pool in ["blue", "green"] {
            let p = &one["pools"][pool];
            assert!(p["inflight"].is_u64() && p["draining"].is_u64(), "{p}");
            let server = &p["servers"][0];
            assert!(server["address"].is_string() && server["healthy"].is_boolean());
        }
        assert_eq!(one["pools"]["blue"]["servers"][0]["version"], "1.4.1");
        assert_eq!(one["pools"]["green"]["servers"][0]["version"], "1.4.2");
        assert!(
            one.get("canary").is_some() && one.get("watch").is_some(),
            "{one}"
        );
    })
    .await;
}
