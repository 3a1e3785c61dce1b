//! Shutdown (what SIGTERM and SIGINT do, driven in-process here): stop
//! accepting, answer `/readyz` 503 while in-flight requests finish, and give
//! up on what is still open after the longest `drain_timeout`.

use std::time::{Duration, Instant};

use http::StatusCode;

use crate::support::*;

#[tokio::test]
async fn shutdown_lets_the_inflight_request_finish_and_readyz_answers_503_meanwhile() {
    within(BOUND, async {
        let (_blue, _green, proxy) = behind_drain("5s").await;
        let (addr, admin) = (proxy.addr, proxy.admin);
        let slow = tokio::spawn(async move { fetch(addr, "/slow?ms=1000").await });
        eventually("the slow request is in flight", || async move {
            let status = admin_get(admin, "/api/v1/services/app").await.json();
            status["pools"]["blue"]["inflight"] == 1
        })
        .await;

        let stopping = tokio::spawn(proxy.stop());

        eventually("/readyz answers 503 while draining", || async move {
            admin_get(admin, "/readyz").await.status == StatusCode::SERVICE_UNAVAILABLE
        })
        .await;
        assert_eq!(admin_get(admin, "/healthz").await.status, StatusCode::OK);
        eventually("the proxy listener stops accepting", || async move {
            tokio::net::TcpStream::connect(addr).await.is_err()
        })
        .await;
        assert_eq!(slow.await.unwrap().echo().upstream, "blue");
        let dir = stopping.await.expect("shutdown");
        assert!(
            !dir.path().join(SOCKET_FILE).exists(),
            "the socket file is removed"
        );
        assert!(
            tokio::net::TcpStream::connect(admin).await.is_err(),
            "the admin listener is closed at the end"
        );
    })
    .await;
}

#[tokio::test]
async fn shutdown_gives_up_on_streams_after_the_longest_drain_timeout() {
    within(BOUND, async {
        let (_blue, _green, proxy) = behind_drain("400ms").await;
        let mut client = Client::http1(proxy.addr).await;
        let mut stream = client.send(get("/sse?n=100&ms=100")).await;
        assert_eq!(read_events(stream.body_mut(), 1).await.len(), 1);

        let started = Instant::now();
        proxy.stop().await;
        let took = started.elapsed();

        assert!(
            took >= Duration::from_millis(350),
            "shutdown did not wait for the stream: {took:?}"
        );
        assert!(
            took < Duration::from_millis(400 + 350),
            "shutdown waited {took:?}, beyond the 400ms drain timeout"
        );
        let (_, failed) = within(Duration::from_secs(2), read_until_end(stream.body_mut())).await;
        assert!(failed, "the stream ended cleanly though it was cut");
    })
    .await;
}
