//! Draining: what is in flight on the old pool when a switch happens
//! finishes there, status counts it as draining, `drained` and
//! `ctl wait-drained` wait for it, and what outlives `drain_timeout` is cut.

use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::json;

use crate::support::*;

/// How long the upstream holds the slow request.
const SLOW: Duration = Duration::from_millis(1500);

#[tokio::test]
async fn slow_request_on_the_old_pool_completes_and_drained_waits_for_it() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;
        let socket = proxy.socket.to_str().expect("utf-8 temp path").to_string();

        let sent = Instant::now();
        let addr = proxy.addr;
        let slow = tokio::spawn(async move {
            let reply = fetch(addr, &format!("/slow?ms={}", SLOW.as_millis())).await;
            (reply, Instant::now())
        });
        let admin = proxy.admin;
        eventually("the slow request is in flight on blue", || async move {
            let status = admin_get(admin, "/api/v1/services/app").await.json();
            status["pools"]["blue"]["inflight"] == 1
        })
        .await;

        let switched = proxy.switch("app", json!({"to": "green"})).await;
        assert_eq!(switched.status, StatusCode::OK, "{}", switched.text());

        let status = proxy.service("app").await;
        assert_eq!(status["pools"]["blue"]["inflight"], 1, "{status}");
        assert_eq!(status["pools"]["blue"]["draining"], 1, "{status}");
        assert_eq!(status["pools"]["green"]["draining"], 0, "{status}");
        assert_eq!(fetch(proxy.addr, "/").await.echo().upstream, "green");

        let busy = admin_get(proxy.admin, "/api/v1/services/app/drained?wait=200ms").await;
        assert_eq!(busy.status, StatusCode::OK, "{}", busy.text());
        assert_eq!(busy.json()["drained"], false);
        assert_eq!(busy.json()["inflight"], 1);
        let not_yet = ctl(&[
            "--socket",
            &socket,
            "wait-drained",
            "app",
            "--timeout",
            "200ms",
        ])
        .await;
        assert_eq!(not_yet.code, 1, "{not_yet:?}");

        let drained = admin_get(proxy.admin, "/api/v1/services/app/drained?wait=5s").await;
        let drained_at = Instant::now();
        let (slow_reply, slow_done) = slow.await.expect("slow request task");

        assert_eq!(slow_reply.echo().upstream, "blue");
        assert_eq!(drained.status, StatusCode::OK, "{}", drained.text());
        assert_eq!(drained.json()["drained"], true, "{}", drained.text());
        assert_eq!(drained.json()["inflight"], 0);
        assert!(
            drained_at >= sent + SLOW,
            "drained {:?} after the slow request was sent, before it could end",
            drained_at - sent
        );
        assert!(
            drained_at < slow_done + Duration::from_millis(500),
            "drained answered {:?} after the slow request ended",
            drained_at - slow_done
        );
        let done = ctl(&[
            "--socket",
            &socket,
            "wait-drained",
            "app",
            "--timeout",
            "5s",
        ])
        .await;
        assert_eq!(done.code, 0, "{done:?}");
        let status = proxy.service("app").await;
        assert_eq!(status["pools"]["blue"]["inflight"], 0);
        assert_eq!(status["pools"]["blue"]["draining"], 0);
    })
    .await;
}

#[tokio::test]
async fn stream_still_open_after_drain_timeout_is_cut() {
    within(BOUND, async {
        let (_blue, _green, proxy) = behind_drain("300ms").await;

        let mut client = Client::http1(proxy.addr).await;
        // 50 events 100 ms apart: five seconds, far beyond the drain timeout.
        let mut stream = client.send(get("/sse?n=50&ms=100")).await;
        assert_eq!(stream.status(), StatusCode::OK);
        let first = read_events(stream.body_mut(), 1).await;
        assert_eq!(first[0].json()["upstream"], "blue");

        let switched_at = Instant::now();
        let switched = proxy.switch("app", json!({"to": "green"})).await;
        assert_eq!(switched.status, StatusCode::OK, "{}", switched.text());
        let (chunks, failed) = read_until_end(stream.body_mut()).await;
        let ended = switched_at.elapsed();

        let events = 1 + chunks
            .iter()
            .map(|c| c.windows(2).filter(|w| w == b"\n\n").count())
            .sum::<usize>();
        assert!(
            failed || events < 50,
            "the stream was not cut: {events} events"
        );
        assert_cut_at_the_deadline(ended);
        assert!(events > 1, "the stream went on while draining");
        blue_drained_with_one_cut(&proxy).await;
    })
    .await;
}

#[tokio::test]
async fn websocket_still_open_after_drain_timeout_is_cut() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    within(BOUND, async {
        let (_blue, _green, proxy) = behind_drain("300ms").await;

        let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        let (mut ws, resp) =
            tokio_tungstenite::client_async(format!("ws://{}/ws", proxy.addr), stream)
                .await
                .unwrap();
        assert_eq!(resp.status(), 101);
        ws.send(Message::text("before")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("before"));

        let switched_at = Instant::now();
        let switched = proxy.switch("app", json!({"to": "green"})).await;
        assert_eq!(switched.status, StatusCode::OK, "{}", switched.text());
        // Still open while draining.
        ws.send(Message::text("draining")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("draining"));
        // Then closed by the deadline: the next read ends or fails.
        let end = tokio::time::timeout(Duration::from_secs(3), ws.next())
            .await
            .expect("the tunnel was still open 3 s after the switch");
        let ended = switched_at.elapsed();
        assert!(
            !matches!(end, Some(Ok(Message::Text(_) | Message::Binary(_)))),
            "the tunnel carried on: {end:?}"
        );
        assert_cut_at_the_deadline(ended);
        blue_drained_with_one_cut(&proxy).await;
    })
    .await;
}

/// `ended` (since the switch) falls at the 300 ms drain deadline, not
/// before it and not long after.
fn assert_cut_at_the_deadline(ended: Duration) {
    assert!(
        ended >= Duration::from_millis(250),
        "cut {ended:?} after the switch, before the drain timeout"
    );
    assert!(
        ended < Duration::from_secs(2),
        "cut only {ended:?} after the switch"
    );
}

/// Waits until nothing is in flight on blue, then checks that the drain
/// deadline counted exactly one cut request there.
async fn blue_drained_with_one_cut(proxy: &Cutover) {
    let admin = proxy.admin;
    eventually("nothing left in flight on blue", || async move {
        let status = admin_get(admin, "/api/v1/services/app").await.json();
        status["pools"]["blue"]["inflight"] == 0
    })
    .await;
    let metrics = admin_get(proxy.admin, "/metrics").await.text();
    let cut = metrics
        .lines()
        .find(|l| {
            l.starts_with("cutover_drain_cut_total{")
                && l.contains("service=\"app\"")
                && l.contains("pool=\"blue\"")
        })
        .unwrap_or_else(|| panic!("no drain cut counter for blue in:\n{metrics}"));
    assert!(cut.ends_with(" 1"), "{cut}");
}
