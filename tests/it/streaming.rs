//! Streaming without buffering: server-sent events reach the client as each
//! is produced (HTTP/1.1 and h2c), and a request body reaches the upstream
//! while the client is still sending it.
//!
//! Each expectation runs direct to the upstream and again through cutover
//! (the transparency matrix), so a failure through cutover is cutover's.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method};
use http_body_util::BodyExt;

use crate::support::*;

const EVENTS: usize = 5;
/// The upstream produces one event every 200 ms.
const INTERVAL_MS: u64 = 200;
/// An event must reach the client this soon after it was produced.
const MAX_LATENCY: Duration = Duration::from_millis(150);

async fn assert_events_arrive_one_by_one(mut client: Client, label: &str) {
    let path = format!("/sse?n={EVENTS}&ms={INTERVAL_MS}");
    let mut resp = client.send(get(&path)).await;
    let head_at = Instant::now();
    assert_eq!(resp.status(), 200, "{label}");
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "text/event-stream",
        "{label}"
    );

    let events = read_events(resp.body_mut(), usize::MAX).await;
    assert_eq!(events.len(), EVENTS, "{label}: {events:?}");
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.json()["i"], i, "{label}");
        assert_eq!(event.json()["upstream"], "blue", "{label}");
    }
    let first = events[0].at.duration_since(head_at);
    assert!(
        first < MAX_LATENCY,
        "{label}: first event came {first:?} after the head"
    );
    for (i, event) in events.iter().enumerate() {
        let latency = event.latency();
        assert!(
            latency < MAX_LATENCY,
            "{label}: event {i} arrived {latency:?} after it was produced"
        );
        if let Some(next) = events.get(i + 1) {
            let next_produced = instant_of(next.json()["t_us"].as_u64().unwrap());
            assert!(
                event.at < next_produced,
                "{label}: event {i} arrived only after event {} was produced (buffered)",
                i + 1
            );
        }
    }
    let span = events[EVENTS - 1].at.duration_since(events[0].at);
    let produced = Duration::from_millis(INTERVAL_MS * (EVENTS as u64 - 1));
    assert!(
        span + MAX_LATENCY >= produced,
        "{label}: events spread over {span:?}, produced over {produced:?}"
    );
}

/// Starts blue (and a green that is never used) behind cutover: the
/// targets of the transparency matrix.
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
async fn sse_events_reach_http1_client_as_each_is_produced() {
    within(BOUND, async {
        let (blue, green, proxy) = targets().await;
        for (addr, label) in matrix(&blue, &proxy) {
            assert_events_arrive_one_by_one(Client::http1(addr).await, label).await;
        }
        assert_eq!(green.hits(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_reach_h2c_client_as_each_is_produced() {
    within(BOUND, async {
        let (blue, _green, proxy) = targets().await;
        for (addr, label) in matrix(&blue, &proxy) {
            assert_events_arrive_one_by_one(Client::h2(addr).await, label).await;
        }
    })
    .await;
}

/// Sends chunks one at a time and waits for each to come back before
/// sending the next: only works if the request body streams to the upstream
/// and the answer streams back while the request is still open.
async fn assert_duplex_echo(mut client: Client, label: &str) {
    let (tx, body) = channel_body();
    let mut resp = client.send(request(Method::POST, "/duplex", body)).await;
    assert_eq!(resp.status(), 200, "{label}");
    for i in 0..3 {
        let chunk = format!("chunk-{i};");
        tx.send(Bytes::from(chunk.clone())).await.unwrap();
        let mut got = Vec::new();
        while got.len() < chunk.len() {
            let frame = resp.body_mut().frame().await;
            let frame = frame
                .unwrap_or_else(|| panic!("{label}: body ended early"))
                .unwrap();
            if let Ok(data) = frame.into_data() {
                got.extend_from_slice(&data);
            }
        }
        assert_eq!(String::from_utf8_lossy(&got), chunk, "{label}");
    }
    drop(tx);
    // The answer ends with the request (HTTP/2 may end it with an empty frame).
    let rest = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(rest.is_empty(), "{label}: unexpected {rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_body_streams_to_upstream_while_client_still_sends_http1() {
    within(BOUND, async {
        let (blue, _green, proxy) = targets().await;
        for (addr, label) in matrix(&blue, &proxy) {
            assert_duplex_echo(Client::http1(addr).await, label).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_body_streams_to_upstream_while_client_still_sends_h2c() {
    within(BOUND, async {
        let (blue, _green, proxy) = targets().await;
        for (addr, label) in matrix(&blue, &proxy) {
            assert_duplex_echo(Client::h2(addr).await, label).await;
        }
    })
    .await;
}
