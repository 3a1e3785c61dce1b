//! Weights: the standby pool's share of new requests.

use http::StatusCode;
use serde_json::json;

use crate::support::*;

/// Requests counted for a split.
const REQUESTS: usize = 1000;
/// Connections they are sent on.
const CONNECTIONS: usize = 8;

/// Sends [`REQUESTS`] through the proxy; how many green answered.
async fn green_share(addr: std::net::SocketAddr) -> usize {
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            tokio::spawn(async move {
                let mut conn = LoadConn::new(addr);
                let mut green = 0;
                for _ in 0..REQUESTS / CONNECTIONS {
                    let (status, body) = conn.get("/").await.expect("request");
                    assert_eq!(status, StatusCode::OK);
                    match upstream_of(&body).as_deref() {
                        Some("green") => green += 1,
                        Some("blue") => {}
                        other => panic!("answered by {other:?}"),
                    }
                }
                green
            })
        })
        .collect();
    let mut green = 0;
    for task in tasks {
        green += task.await.expect("client task");
    }
    green
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_weight_sends_that_share_of_new_requests_to_the_standby_pool() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;
        let weights = "/api/v1/services/app/weights";

        let reply = admin_put(proxy.admin, weights, json!({"standby": 30})).await;

        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(
            reply.json()["service"]["weights"],
            json!({"blue": 70, "green": 30})
        );
        let green_answers = green_share(proxy.addr).await;
        assert!(
            (240..=360).contains(&green_answers),
            "{green_answers} of {REQUESTS} to green at 30%"
        );

        let reply = admin_put(proxy.admin, weights, json!({"standby": 0})).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(green_share(proxy.addr).await, 0);
        let events: Vec<_> = proxy
            .events("app")
            .await
            .iter()
            .map(|e| (e["reason"].clone(), e["detail"]["standby"].clone()))
            .collect();
        assert_eq!(
            events,
            [(json!("weight"), json!(30)), (json!("weight"), json!(0))]
        );
    })
    .await;
}

#[tokio::test]
async fn weight_outside_0_to_100_is_400_invalid_weight() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;

        for standby in [150, -1] {
            let reply = admin_put(
                proxy.admin,
                "/api/v1/services/app/weights",
                json!({ "standby": standby }),
            )
            .await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
            assert_eq!(reply.json()["error"]["code"], "invalid_weight");
        }
        let status = proxy.service("app").await;
        assert_eq!(status["weights"], json!({"blue": 100, "green": 0}));
    })
    .await;
}
