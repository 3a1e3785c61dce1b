//! Splitting traffic between the pools: the standby weight, sticky sessions
//! (by header and by cookie), the preview header, and a switch ending the
//! split.

use std::collections::BTreeMap;
use std::time::Duration;

use http::StatusCode;
use serde_json::json;

use crate::support::*;

/// The bound of each test here (a few thousand requests in a debug build).
const SPLIT_BOUND: Duration = Duration::from_secs(20);
/// Connections the requests of a run are spread over.
const CONNECTIONS: usize = 8;

async fn set_weight(proxy: &Cutover, standby: u8) {
    let reply = admin_put(
        proxy.admin,
        "/api/v1/services/app/weights",
        json!({ "standby": standby }),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

fn share(seen: &[String], upstream: &str) -> f64 {
    seen.iter().filter(|u| *u == upstream).count() as f64 / seen.len() as f64
}

/// The pool each session landed on, checking that each session's requests
/// all landed on the same one.
async fn pools_of_sessions(
    addr: std::net::SocketAddr,
    sessions: usize,
    per_session: usize,
    header: impl Fn(usize) -> (String, String) + Send + Sync + Clone + 'static,
) -> BTreeMap<usize, String> {
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let header = header.clone();
            tokio::spawn(async move {
                let mut conn = Client::http1(addr).await;
                let mut pools = BTreeMap::new();
                for session in (c..sessions).step_by(CONNECTIONS) {
                    let headers = [header(session)];
                    let mut seen = Vec::with_capacity(per_session);
                    for _ in 0..per_session {
                        seen.push(get_upstream(&mut conn, "/", &headers).await);
                    }
                    assert!(
                        seen.iter().all(|u| *u == seen[0]),
                        "session {session} was split: {seen:?}"
                    );
                    pools.insert(session, seen[0].clone());
                }
                pools
            })
        })
        .collect();
    let mut pools = BTreeMap::new();
    for task in tasks {
        pools.extend(task.await.expect("client task"));
    }
    pools
}

fn session_header(session: usize) -> (String, String) {
    ("x-session-id".into(), format!("session-{session}"))
}

fn session_cookie(session: usize) -> (String, String) {
    (
        "cookie".into(),
        format!("theme=dark; session=s{session}; b=2"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_20_sends_a_fifth_of_keyless_requests_to_standby_at_random() {
    within(SPLIT_BOUND, async {
        let blue = Upstream::start_with_version("blue", "1").await;
        let green = Upstream::start_with_version("green", "2").await;
        let sticky = "sticky = { header = \"X-Session-Id\" }";
        let proxy = Cutover::start(&app(&blue, &green, sticky, "")).await;

        set_weight(&proxy, 20).await;

        // No session key: each request is drawn on its own, even on one
        // connection.
        let seen = send_many(proxy.addr, 2000, CONNECTIONS, "/", &[]).await;
        let green_share = share(&seen, "green");
        assert!(
            (0.16..=0.24).contains(&green_share),
            "green answered {:.1}% of 2000 at weight 20",
            green_share * 100.0
        );
        let one_conn = send_many(proxy.addr, 200, 1, "/", &[]).await;
        let green_on_one = share(&one_conn, "green");
        assert!(
            green_on_one > 0.0 && green_on_one < 1.0,
            "one connection without a key was not split: {green_on_one}"
        );
        assert_eq!(
            proxy.service("app").await["weights"],
            json!({"blue": 80, "green": 20})
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_header_keeps_each_session_on_one_pool_and_standby_sessions_stay_as_weight_grows() {
    within(SPLIT_BOUND, async {
        let blue = Upstream::start_with_version("blue", "1").await;
        let green = Upstream::start_with_version("green", "2").await;
        let sticky = "sticky = { header = \"X-Session-Id\" }";
        let proxy = Cutover::start(&app(&blue, &green, sticky, "")).await;

        set_weight(&proxy, 10).await;
        let at_10 = pools_of_sessions(proxy.addr, 200, 20, session_header).await;
        let green_at_10: Vec<usize> = at_10
            .iter()
            .filter(|(_, pool)| *pool == "green")
            .map(|(s, _)| *s)
            .collect();
        assert!(
            (4..=40).contains(&green_at_10.len()),
            "{} of 200 sessions on green at weight 10",
            green_at_10.len()
        );

        set_weight(&proxy, 50).await;
        let at_50 = pools_of_sessions(proxy.addr, 200, 2, session_header).await;
        for session in &green_at_10 {
            assert_eq!(
                at_50[session], "green",
                "session {session} left the standby pool when its weight grew"
            );
        }
        let green_at_50 = at_50.values().filter(|p| *p == "green").count();
        assert!(
            green_at_50 > green_at_10.len() && (60..=140).contains(&green_at_50),
            "{green_at_50} of 200 sessions on green at weight 50 ({} at 10)",
            green_at_10.len()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_cookie_keeps_each_session_on_one_pool() {
    within(SPLIT_BOUND, async {
        let blue = Upstream::start_with_version("blue", "1").await;
        let green = Upstream::start_with_version("green", "2").await;
        let sticky = "sticky = { cookie = \"session\" }";
        let proxy = Cutover::start(&app(&blue, &green, sticky, "")).await;

        set_weight(&proxy, 50).await;
        let pools = pools_of_sessions(proxy.addr, 100, 8, session_cookie).await;

        let green_sessions = pools.values().filter(|p| *p == "green").count();
        assert!(
            (25..=75).contains(&green_sessions),
            "{green_sessions} of 100 cookie sessions on green at weight 50"
        );
        // The same key by header means nothing here: requests are drawn at random.
        let header = [session_header(1)];
        let mut conn = Client::http1(proxy.addr).await;
        let mut seen = Vec::new();
        for _ in 0..60 {
            seen.push(get_upstream(&mut conn, "/", &header).await);
        }
        assert!(
            seen.iter().any(|u| u == "blue") && seen.iter().any(|u| u == "green"),
            "a header key was taken for the cookie: {seen:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_resets_the_weight_and_sends_every_request_sticky_or_not_to_the_new_pool() {
    within(SPLIT_BOUND, async {
        let blue = Upstream::start_with_version("blue", "1").await;
        let green = Upstream::start_with_version("green", "2").await;
        let sticky = "sticky = { header = \"X-Session-Id\" }";
        let proxy = Cutover::start(&app(&blue, &green, sticky, "")).await;
        set_weight(&proxy, 50).await;
        let before = pools_of_sessions(proxy.addr, 40, 2, session_header).await;
        assert!(
            before.values().any(|p| p == "blue") && before.values().any(|p| p == "green"),
            "weight 50 did not split 40 sessions: {before:?}"
        );

        let reply = proxy.switch("app", json!({"to": "green"})).await;

        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(
            reply.json()["service"]["weights"],
            json!({"blue": 0, "green": 100})
        );
        let after = pools_of_sessions(proxy.addr, 40, 2, session_header).await;
        assert!(
            after.values().all(|p| p == "green"),
            "sticky sessions stayed behind after the switch: {after:?}"
        );
        let keyless = send_many(proxy.addr, 100, 4, "/", &[]).await;
        assert!(
            keyless.iter().all(|u| u == "green"),
            "keyless requests still split after the switch"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_header_reaches_the_named_pool_whatever_the_weight() {
    within(SPLIT_BOUND, async {
        let blue = Upstream::start_with_version("blue", "1").await;
        let green = Upstream::start_with_version("green", "2").await;
        let extra =
            "preview = { header = \"X-Cutover-Pool\" }\nsticky = { header = \"X-Session-Id\" }";
        let proxy = Cutover::start(&app(&blue, &green, extra, "")).await;
        let mut conn = Client::http1(proxy.addr).await;
        let header = |pool: &str| vec![("X-Cutover-Pool".to_string(), pool.to_string())];

        // Weight 0: plain requests to blue, previews to green.
        for _ in 0..20 {
            assert_eq!(
                get_upstream(&mut conn, "/", &header("green")).await,
                "green"
            );
            assert_eq!(get_upstream(&mut conn, "/", &[]).await, "blue");
        }
        // A session key does not beat the preview header.
        let both = vec![
            ("X-Cutover-Pool".to_string(), "green".to_string()),
            session_header(7),
        ];
        assert_eq!(get_upstream(&mut conn, "/", &both).await, "green");

        // Weight 100: plain requests to green, `blue` previews still to blue.
        set_weight(&proxy, 100).await;
        for _ in 0..20 {
            assert_eq!(get_upstream(&mut conn, "/", &header("blue")).await, "blue");
            assert_eq!(
                get_upstream(&mut conn, "/", &header("green")).await,
                "green"
            );
            assert_eq!(get_upstream(&mut conn, "/", &[]).await, "green");
        }
        // A value naming no pool is ignored.
        assert_eq!(
            get_upstream(&mut conn, "/", &header("purple")).await,
            "green"
        );
    })
    .await;
}
