//! An HTTP/1.1 connection idle for 250 ms lets go of hyper's state and
//! waits with only its stream ("parked"). Everything a kept-alive connection
//! does must work the same across that: the next request (with a body, or
//! arriving a byte at a time), an upgrade, the head timer, idle_timeout and
//! the drain.
//!
//! The park delay and the head and idle timers are the request path's, on
//! the test's runtime: the tests run on paused time (see `support`), all
//! but the drain's, which waits on the control thread.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::support::raw::{closes_within, get_ok, read_answer, read_answers, write, GET};
use crate::support::*;

/// Longer than the proxy's park delay (250 ms).
const PARKED: Duration = Duration::from_millis(600);

async fn proxy(limits: &str) -> (Upstream, Upstream, Cutover) {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let proxy = Cutover::start(&format!(
        "[server.limits]\n{limits}\n\n{}",
        blue_green(&blue, &green)
    ))
    .await;
    (blue, green, proxy)
}

#[tokio::test]
async fn a_parked_connection_serves_its_next_requests() {
    within(BOUND, async {
        let (blue, _green, proxy) = proxy("").await;
        tokio::time::pause();
        let mut stream = connect(proxy.addr).await;
        get_ok(&mut stream, "before parking").await;

        tokio::time::sleep(PARKED).await;
        let post = b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world";
        write(&mut stream, post, false).await;
        let answer = read_answer(&mut stream).await;
        assert_eq!(answer.status(), Some(200), "{:?}", answer.text);

        // Parked again, then a head that arrives a byte at a time.
        tokio::time::sleep(PARKED).await;
        write(&mut stream, GET, true).await;
        assert_eq!(read_answer(&mut stream).await.status(), Some(200));

        assert_eq!(blue.hits(), 3);
        assert_eq!(blue.connections(), 1, "the upstream connection is reused");
        // The stop waits for the control thread, whose clock is not paused.
        tokio::time::resume();
        proxy.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_parked_connection_can_be_upgraded_to_a_websocket() {
    within(BOUND, async {
        let (_blue, _green, proxy) = proxy("").await;
        tokio::time::pause();
        let mut stream = connect(proxy.addr).await;
        get_ok(&mut stream, "before parking").await;
        tokio::time::sleep(PARKED).await;

        let (mut ws, resp) =
            tokio_tungstenite::client_async(format!("ws://{}/ws", proxy.addr), stream)
                .await
                .expect("handshake on a parked connection");
        assert_eq!(resp.status(), 101);
        for text in ["one", "two"] {
            ws.send(Message::text(text)).await.unwrap();
            assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(text));
        }
        ws.close(None).await.unwrap();
        drop(ws);
        // The stop waits for the control thread, whose clock is not paused.
        tokio::time::resume();
        proxy.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_head_that_stalls_on_a_parked_connection_gets_408() {
    within(BOUND, async {
        let (_blue, _green, proxy) = proxy("header_read_timeout = \"300ms\"").await;
        tokio::time::pause();
        let mut stream = connect(proxy.addr).await;
        get_ok(&mut stream, "before parking").await;
        tokio::time::sleep(PARKED).await;

        write(&mut stream, b"GET / HT", false).await;
        let started = Instant::now();
        let answer = read_answer(&mut stream).await;
        assert_eq!(answer.status(), Some(408), "{:?}", answer.text);
        assert!(started.elapsed() < Duration::from_millis(1200));
        assert!(closes_within(&mut stream, Duration::from_secs(2)).await);
    })
    .await;
}

#[tokio::test]
async fn idle_timeout_closes_a_parked_connection() {
    within(BOUND, async {
        let (_blue, _green, proxy) = proxy("idle_timeout = \"1500ms\"").await;
        tokio::time::pause();
        let mut stream = connect(proxy.addr).await;
        get_ok(&mut stream, "first").await;
        let idle_from = Instant::now();
        assert!(closes_within(&mut stream, Duration::from_secs(3)).await);
        let closed_after = idle_from.elapsed();
        assert!(
            closed_after >= Duration::from_millis(1400),
            "closed after {closed_after:?}, before idle_timeout"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_parked_connections_at_once() {
    within(BOUND, async {
        let (_blue, _green, proxy) = proxy("").await;
        let mut stream = connect(proxy.addr).await;
        get_ok(&mut stream, "first").await;
        tokio::time::sleep(PARKED).await;

        let started = Instant::now();
        let stop = tokio::spawn(proxy.stop());
        assert!(closes_within(&mut stream, Duration::from_secs(2)).await);
        stop.await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
    })
    .await;
}

/// A request pipelined behind one whose head arrived in two reads gets its
/// own answer, in order.
#[tokio::test]
async fn a_request_pipelined_behind_a_split_head_is_answered() {
    within(BOUND, async {
        let (_blue, _green, proxy) = proxy("").await;
        tokio::time::pause();
        let mut stream = connect(proxy.addr).await;
        get_ok(&mut stream, "first").await;
        // Kept alive, then parked.
        for pause in [Duration::ZERO, PARKED] {
            tokio::time::sleep(pause).await;
            write(&mut stream, b"G", false).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            write(&mut stream, &[&GET[1..], GET].concat(), false).await;
            let answers = read_answers(&mut stream, 2).await;
            let statuses: Vec<_> = answers.iter().map(|a| a.status()).collect();
            assert_eq!(
                statuses,
                [Some(200), Some(200)],
                "after {pause:?}: {answers:?}"
            );
        }
    })
    .await;
}
