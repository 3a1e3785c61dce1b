//! The dashboard over HTTP: its page, its data (`/api/v1/stats`,
//! `/api/v1/stream`) and its sessions, and what a page of another origin
//! can do with them (nothing). The page in a real browser is
//! `browser.rs`'s.

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::*;

const TOKEN: &str = "s3cret-token";

/// A request to the admin listener at `admin` as a browser page at
/// `origin` sends it (no `Origin` when `None`), with the session `cookie`
/// and `csrf` token if given.
struct PageCall<'a> {
    admin: SocketAddr,
    origin: Option<&'a str>,
    cookie: Option<&'a str>,
    csrf: Option<&'a str>,
}

impl PageCall<'_> {
    async fn send(&self, method: Method, path: &str, content_type: &str, body: &str) -> Reply {
        let mut req = request(method, path, full(body.to_string()));
        let h = req.headers_mut();
        let host = format!("127.0.0.1:{}", self.admin.port());
        h.insert(header::HOST, HeaderValue::from_str(&host).unwrap());
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).unwrap(),
        );
        let optional = [
            (header::ORIGIN, self.origin),
            (header::COOKIE, self.cookie),
            (header::HeaderName::from_static("x-csrf-token"), self.csrf),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                h.insert(name, HeaderValue::from_str(value).unwrap());
            }
        }
        admin_send(self.admin, req).await
    }

    async fn json(&self, method: Method, path: &str, body: Value) -> Reply {
        self.send(method, path, "application/json", &body.to_string())
            .await
    }
}

/// The admin listener's own origin.
fn own_origin(admin: SocketAddr) -> String {
    format!("http://127.0.0.1:{}", admin.port())
}

/// Opens a dashboard session from the page's own origin: the cookie
/// (`name=value`) and the CSRF token.
async fn open_session(admin: SocketAddr, token: Option<&str>) -> (String, String) {
    let origin = own_origin(admin);
    let page = PageCall {
        admin,
        origin: Some(&origin),
        cookie: None,
        csrf: None,
    };
    let body = token.map_or(json!({}), |t| json!({"token": t}));
    let opened = page.json(Method::POST, "/ui/session", body).await;
    assert_eq!(opened.status, StatusCode::OK, "{}", opened.text());
    let set = opened.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    let csrf = opened.json()["csrf"].as_str().unwrap().to_string();
    (cookie, csrf)
}

/// A proxy whose admin listener binds every interface (so it needs the
/// token), reached over loopback.
async fn behind_token(blue: &Upstream, green: &Upstream) -> Cutover {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("admin.token"), format!("{TOKEN}\n")).unwrap();
    let config = header().replace(
        "[admin]\nlisten = \"127.0.0.1:0\"",
        "[admin]\nlisten = \"0.0.0.0:0\"\ntoken_file = \"admin.token\"",
    ) + &blue_green(blue, green);
    Cutover::start_in(dir, &config).await
}

#[tokio::test]
async fn root_redirects_to_the_page_served_with_a_policy_that_allows_only_its_origin() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;

        let root = admin_get(proxy.admin, "/").await;
        let page = admin_get(proxy.admin, "/ui/").await;
        let script = admin_get(proxy.admin, "/ui/dashboard.js").await;

        assert_eq!(root.status, StatusCode::FOUND);
        assert_eq!(root.headers[header::LOCATION], "/ui/");
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let policy = page.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(policy.contains("default-src 'none'"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        assert!(page.text().contains("/ui/dashboard.js"));
        assert_eq!(script.status, StatusCode::OK);
        let weight = page.body.len()
            + script.body.len()
            + admin_get(proxy.admin, "/ui/dashboard.css").await.body.len();
        assert!(weight < 100 * 1024, "the page weighs {weight} bytes");
        assert_eq!(
            admin_get(proxy.admin, "/ui/missing.js").await.status,
            StatusCode::NOT_FOUND
        );
    })
    .await;
}

#[tokio::test]
async fn stats_show_each_pools_requests_and_errors_of_the_last_seconds() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;
        let mut conn = Client::http1(proxy.addr).await;
        for _ in 0..30 {
            assert_eq!(conn.get("/").await.status, StatusCode::OK);
        }
        for _ in 0..10 {
            let failed = conn.get("/status/500").await;
            assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
        }

        // The sampler reads once a second: the requests show up in the
        // window once a reading after them is in.
        let mut stats = Value::Null;
        for _ in 0..40 {
            stats = admin_get(proxy.admin, "/api/v1/stats").await.json();
            if stats["services"][0]["pools"]["blue"]["window"]["requests"] == 40 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        assert_eq!(stats["interval_ms"], 1000);
        assert_eq!(stats["services"][0]["name"], "app");
        let blue_pool = &stats["services"][0]["pools"]["blue"];
        assert_eq!(blue_pool["window"]["requests"], 40, "{stats}");
        assert_eq!(blue_pool["window"]["errors"], 10, "{stats}");
        assert_eq!(blue_pool["window"]["error_rate"], 0.25);
        let samples = blue_pool["samples"].as_array().unwrap();
        let busy = samples.iter().filter(|s| s["rps"].as_f64() > Some(0.0));
        assert!(busy.count() >= 1, "{samples:?}");
        let green_pool = &stats["services"][0]["pools"]["green"];
        assert_eq!(green_pool["window"]["requests"], 0);
    })
    .await;
}

#[tokio::test]
async fn the_stream_starts_with_the_state_then_follows_switches_and_seconds() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;
        let mut client = Client::http1(proxy.admin).await;
        let mut stream = client.send(get("/api/v1/stream")).await;
        assert_eq!(stream.status(), StatusCode::OK);
        assert_eq!(stream.headers()[header::CONTENT_TYPE], "text/event-stream");

        let first = read_events(stream.body_mut(), 4).await;
        let names: Vec<&str> = first.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["", "status", "events", "stats"], "retry first");
        assert_eq!(first[1].json()["services"][0]["active"], "blue");
        assert_eq!(first[2].json(), json!([]));

        let switched = proxy.switch("app", json!({"to": "green"})).await;
        assert_eq!(switched.status, StatusCode::OK, "{}", switched.text());

        // Within a few seconds: the switch's event, the new status and a
        // stats event each second.
        let (mut event, mut status, mut stats) = (None, None, 0);
        while event.is_none() || status.is_none() || stats < 2 {
            let next = read_events(stream.body_mut(), 1).await;
            let Some(e) = next.into_iter().next() else {
                panic!("the stream ended");
            };
            match e.name.as_str() {
                "event" => event = Some(e.json()),
                "status" if e.json()["services"][0]["active"] == "green" => status = Some(e),
                "stats" => {
                    let samples = &e.json()["services"][0]["pools"]["blue"]["samples"];
                    assert_eq!(samples.as_array().unwrap().len(), 1, "only the newest");
                    stats += 1;
                }
                _ => {}
            }
        }
        let event = event.unwrap();
        assert_eq!(
            (&event["reason"], &event["to"]),
            (&json!("manual"), &json!("green"))
        );
        // An open stream does not hold the shutdown up: it ends with the
        // admin listener.
        let stopping = std::time::Instant::now();
        proxy.stop().await;
        assert!(
            stopping.elapsed() < Duration::from_secs(3),
            "{:?}",
            stopping.elapsed()
        );
        // What was sent before the end is read, then the stream is over.
        while !read_events(stream.body_mut(), 1).await.is_empty() {}
        drop(client);
    })
    .await;
}

#[tokio::test]
async fn a_session_changes_state_only_from_its_origin_with_its_csrf_token() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;
        let admin = proxy.admin;
        let origin = own_origin(admin);
        let (cookie, csrf) = open_session(admin, None).await;
        let switch = "/api/v1/services/app/switch";
        let to_green = json!({"to": "green"});

        let no_token = PageCall {
            admin,
            origin: Some(&origin),
            cookie: Some(&cookie),
            csrf: None,
        };
        let refused = no_token.json(Method::POST, switch, to_green.clone()).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text());
        assert!(
            refused.text().contains("X-CSRF-Token"),
            "{}",
            refused.text()
        );

        let elsewhere = PageCall {
            admin,
            origin: Some("http://127.0.0.1:1"),
            cookie: Some(&cookie),
            csrf: Some(&csrf),
        };
        let refused = elsewhere.json(Method::POST, switch, to_green.clone()).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text());
        assert_eq!(proxy.service("app").await["active"], "blue");
        assert!(proxy.events("app").await.is_empty());

        let page = PageCall {
            admin,
            origin: Some(&origin),
            cookie: Some(&cookie),
            csrf: Some(&csrf),
        };
        let switched = page.json(Method::POST, switch, to_green).await;
        assert_eq!(switched.status, StatusCode::OK, "{}", switched.text());
        assert_eq!(switched.json()["service"]["active"], "green");
        assert_eq!(proxy.events("app").await[0]["actor"], "api");

        let closed = page.json(Method::DELETE, "/ui/session", json!({})).await;
        assert_eq!(closed.status, StatusCode::OK, "{}", closed.text());
        let after = page
            .json(Method::POST, "/api/v1/services/app/rollback", json!({}))
            .await;
        assert_eq!(after.status, StatusCode::FORBIDDEN, "the session is over");
        assert_eq!(proxy.service("app").await["active"], "green");
    })
    .await;
}

#[tokio::test]
async fn a_cross_site_form_post_with_the_session_cookie_changes_nothing() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;
        let admin = proxy.admin;
        let (cookie, _csrf) = open_session(admin, None).await;
        // A form of a page on another port of the same host: same site, so
        // the browser sends the SameSite=Strict cookie along.
        let form = PageCall {
            admin,
            origin: Some("http://127.0.0.1:8000"),
            cookie: Some(&cookie),
            csrf: None,
        };
        for (content_type, body) in [
            ("application/x-www-form-urlencoded", "to=green"),
            ("text/plain", "{\"to\": \"green\"}"),
            ("multipart/form-data; boundary=x", "--x--"),
        ] {
            let reply = form
                .send(
                    Method::POST,
                    "/api/v1/services/app/switch",
                    content_type,
                    body,
                )
                .await;
            assert_eq!(
                reply.status,
                StatusCode::FORBIDDEN,
                "{content_type}: {}",
                reply.text()
            );
        }
        // Nor can such a page open a session of its own.
        let foreign = PageCall {
            admin,
            origin: Some("http://127.0.0.1:8000"),
            cookie: None,
            csrf: None,
        };
        let opened = foreign.json(Method::POST, "/ui/session", json!({})).await;
        assert_eq!(opened.status, StatusCode::FORBIDDEN, "{}", opened.text());

        assert_eq!(proxy.service("app").await["active"], "blue");
        assert!(proxy.events("app").await.is_empty());
        let refused = proxy.scrape().await;
        assert!(refused.value("cutover_admin_refused_total", &[("code", "403")]) >= 4.0);
    })
    .await;
}

#[tokio::test]
async fn on_a_token_listener_a_session_needs_the_token_and_then_reads_with_its_cookie() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = behind_token(&blue, &green).await;
        let admin = proxy.admin;
        let origin = own_origin(admin);

        let state = admin_get(admin, "/ui/session").await;
        assert_eq!(
            state.json(),
            json!({"session": false, "token_required": true})
        );
        assert_eq!(
            admin_get(admin, "/ui/").await.status,
            StatusCode::OK,
            "the page is open"
        );
        assert_eq!(
            admin_get(admin, "/api/v1/stats").await.status,
            StatusCode::UNAUTHORIZED
        );
        let guess = PageCall {
            admin,
            origin: Some(&origin),
            cookie: None,
            csrf: None,
        };
        let wrong = guess
            .json(Method::POST, "/ui/session", json!({"token": "guess"}))
            .await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.text());

        let (cookie, csrf) = open_session(admin, Some(TOKEN)).await;
        let page = PageCall {
            admin,
            origin: None,
            cookie: Some(&cookie),
            csrf: None,
        };
        let stats = page
            .send(Method::GET, "/api/v1/stats", "application/json", "")
            .await;
        assert_eq!(stats.status, StatusCode::OK, "{}", stats.text());
        let page = PageCall {
            admin,
            origin: Some(&origin),
            cookie: Some(&cookie),
            csrf: Some(&csrf),
        };
        let weight = page
            .json(
                Method::PUT,
                "/api/v1/services/app/weights",
                json!({"standby": 10}),
            )
            .await;
        assert_eq!(weight.status, StatusCode::OK, "{}", weight.text());
        assert_eq!(weight.json()["service"]["weights"]["green"], 10);
    })
    .await;
}
