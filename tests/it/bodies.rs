//! Large and chunked bodies pass through intact in both directions, direct
//! and through cutover (the transparency matrix).

use std::net::SocketAddr;

use bytes::Bytes;
use http::Method;

use crate::support::*;

const BIG: u64 = 20 * 1024 * 1024;

async fn targets() -> (Upstream, Upstream, Cutover) {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let proxy = Cutover::start(&blue_green(&blue, &green)).await;
    (blue, green, proxy)
}

fn matrix(blue: &Upstream, proxy: &Cutover) -> [(SocketAddr, &'static str); 2] {
    [(blue.addr, "direct"), (proxy.addr, "through cutover")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_of_20_mib_reaches_upstream_with_the_same_sha256() {
    within(BOUND, async {
        let (blue, green, proxy) = targets().await;
        let expected = pattern_sha256(BIG);
        for (addr, label) in matrix(&blue, &proxy) {
            let mut client = Client::http1(addr).await;
            let reply = client
                .request(request(Method::POST, "/upload", PatternBody::sized(BIG)))
                .await;
            assert_eq!(reply.status, 200, "{label}: {}", reply.text());
            let seen = reply.json();
            assert_eq!(seen["len"], BIG, "{label}");
            assert_eq!(seen["sha256"], expected.as_str(), "{label}");
            assert_eq!(seen["content_length"], BIG.to_string(), "{label}");
        }
        assert_eq!(green.hits(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_of_20_mib_reaches_client_with_the_expected_sha256() {
    within(BOUND, async {
        let (blue, _green, proxy) = targets().await;
        let expected = pattern_sha256(BIG);
        for (addr, label) in matrix(&blue, &proxy) {
            let mut client = Client::http1(addr).await;
            let resp = client.send(get(&format!("/big?n={BIG}"))).await;
            assert_eq!(resp.status(), 200, "{label}");
            let (sha256, len) = hash_body(resp.into_body()).await;
            assert_eq!(len, BIG, "{label}");
            assert_eq!(sha256, expected, "{label}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_request_body_without_length_arrives_intact() {
    within(BOUND, async {
        let (blue, _green, proxy) = targets().await;
        let size = 3 * 1024 * 1024 + 17;
        let expected = pattern_sha256(size);
        for (addr, label) in matrix(&blue, &proxy) {
            for mut client in [Client::http1(addr).await, Client::h2(addr).await] {
                let reply = client
                    .request(request(Method::POST, "/upload", PatternBody::chunked(size)))
                    .await;
                assert_eq!(reply.status, 200, "{label}: {}", reply.text());
                let seen = reply.json();
                assert_eq!(seen["len"], size, "{label}");
                assert_eq!(seen["sha256"], expected.as_str(), "{label}");
                assert_eq!(seen["content_length"], serde_json::Value::Null, "{label}");
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_chunks_sent_over_time_arrive_in_order() {
    within(BOUND, async {
        let (blue, _green, proxy) = targets().await;
        for (addr, label) in matrix(&blue, &proxy) {
            let (tx, body) = channel_body();
            let feeder = tokio::spawn(async move {
                for i in 0..20 {
                    tx.send(Bytes::from(format!("part {i}\n"))).await.unwrap();
                    tokio::task::yield_now().await;
                }
            });
            let reply = Client::http1(addr)
                .await
                .request(request(Method::POST, "/echo", body))
                .await;
            feeder.await.unwrap();
            let echo = reply.echo();
            let expected: String = (0..20).map(|i| format!("part {i}\n")).collect();
            assert_eq!(echo.body, expected, "{label}");
            assert_eq!(
                echo.header("transfer-encoding").as_deref(),
                Some("chunked"),
                "{label}"
            );
        }
    })
    .await;
}
