//! `[server.limits]` against slow, idle, oversized and too many clients:
//! header_read_timeout, max_header_bytes, idle_timeout, max_connections.
//! Real sockets on loopback; every wait is bounded. The timers are the
//! request path's, on the test's runtime, so the tests run on paused time
//! (see `support`), all but the one whose twenty clients loop on the clock
//! and the one that stops its proxy midway (the stop waits on the control
//! thread).

use std::time::Duration;

use futures_util::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::support::raw::{closes_within, exchange, get_ok, read_answer, silent_for, write, GET};
use crate::support::*;

fn limits(keys: &str, blue: &Upstream, green: &Upstream) -> String {
    format!("[server.limits]\n{keys}\n\n") + &blue_green(blue, green)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_client_gets_408_within_header_read_timeout_while_20_others_are_served() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&limits("header_read_timeout = \"300ms\"", &blue, &green)).await;

        let slow = async {
            let started = Instant::now();
            let (mut rx, mut tx) = connect(proxy.addr).await.into_split();
            // One byte of a never-ending head every 50 ms.
            let drip = tokio::spawn(async move {
                let head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ";
                for b in head.iter().chain(std::iter::repeat(&b'x')).take(400) {
                    if tx.write_all(std::slice::from_ref(b)).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
            let mut answer = Vec::new();
            let _ = rx.read_to_end(&mut answer).await;
            drip.abort();
            (
                started.elapsed(),
                String::from_utf8_lossy(&answer).into_owned(),
            )
        };
        let silent = async {
            let started = Instant::now();
            let mut stream = connect(proxy.addr).await;
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer).await;
            (started.elapsed(), answer)
        };
        let others = join_all((0..20).map(|i| {
            let addr = proxy.addr;
            async move {
                let mut client = Client::http1(addr).await;
                let started = Instant::now();
                let mut served = 0;
                // Keep asking for as long as the slow client is being cut.
                while started.elapsed() < Duration::from_millis(700) {
                    let reply = client.get(&format!("/other/{i}")).await;
                    assert_eq!(reply.status, 200, "client {i}: {:?}", reply.text());
                    served += 1;
                }
                served
            }
        }));
        let ((slow_took, slow_answer), (silent_took, silent_answer), served) =
            tokio::join!(slow, silent, others);

        assert!(
            slow_answer.starts_with("HTTP/1.1 408"),
            "slow client: {slow_answer:?}"
        );
        assert!(
            slow_answer.ends_with("\r\n\r\nrequest head timeout\n"),
            "{slow_answer:?}"
        );
        assert!(
            slow_took >= Duration::from_millis(300) && slow_took < Duration::from_millis(1500),
            "slow client cut after {slow_took:?}"
        );
        // A connection that never sends a byte is closed without an answer.
        assert!(silent_answer.is_empty(), "{silent_answer:?}");
        assert!(
            silent_took >= Duration::from_millis(300) && silent_took < Duration::from_millis(1500),
            "silent client cut after {silent_took:?}"
        );
        assert!(
            served.iter().all(|&n| n >= 2),
            "served per client: {served:?}"
        );
        assert_eq!(
            blue.hits(),
            served.iter().sum::<usize>(),
            "the slow head never reached blue"
        );
    })
    .await;
}

#[tokio::test]
async fn kept_alive_connection_waits_for_its_next_request_past_header_read_timeout() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let keys = "header_read_timeout = \"200ms\"\nidle_timeout = \"5s\"";
        let proxy = Cutover::start(&limits(keys, &blue, &green)).await;
        tokio::time::pause();

        let mut stream = connect(proxy.addr).await;
        get_ok(&mut stream, "first request").await;
        // The head timer starts with the next head's first byte, not when
        // the connection goes idle.
        assert!(
            silent_for(&mut stream, Duration::from_millis(600)).await,
            "closed while idle"
        );
        get_ok(&mut stream, "request after a pause").await;
        // A head that starts and stalls is still cut.
        write(&mut stream, b"GET / HTTP/1.1\r\nHo", false).await;
        let started = Instant::now();
        let answer = read_answer(&mut stream).await;
        assert_eq!(answer.status(), Some(408), "{:?}", answer.text);
        assert!(started.elapsed() < Duration::from_millis(1200));
        assert!(closes_within(&mut stream, Duration::from_secs(2)).await);
    })
    .await;
}

#[tokio::test]
async fn each_head_on_a_kept_alive_connection_gets_the_whole_header_read_timeout() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let keys = "header_read_timeout = \"1s\"\nidle_timeout = \"5s\"";
        let proxy = Cutover::start(&limits(keys, &blue, &green)).await;
        tokio::time::pause();

        let mut stream = connect(proxy.addr).await;
        get_ok(&mut stream, "first request").await;
        // The next head starts 650 ms after the first and takes 550 ms:
        // past the first head's deadline, well within its own.
        tokio::time::sleep(Duration::from_millis(650)).await;
        write(&mut stream, b"GET / HTTP/1.1\r\nHo", false).await;
        tokio::time::sleep(Duration::from_millis(550)).await;
        write(&mut stream, b"st: a\r\n\r\n", false).await;
        let answer = read_answer(&mut stream).await;
        assert_eq!(answer.status(), Some(200), "{:?}", answer.text);
        // A head that stalls is cut a whole timeout after its first byte,
        // not at the deadline of the head before it.
        write(&mut stream, b"GET / HTTP/1.1\r\nHo", false).await;
        let started = Instant::now();
        let answer = read_answer(&mut stream).await;
        assert_eq!(answer.status(), Some(408), "{:?}", answer.text);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(950) && took < Duration::from_millis(2500),
            "cut after {took:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_larger_than_max_header_bytes_is_431() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;

        // The default, 64 KiB: hyper's read buffer refuses it.
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
            "x".repeat(70_000)
        );
        let answer = exchange(proxy.addr, big.as_bytes(), false).await;
        assert_eq!(
            answer.status(),
            Some(431),
            "{:?}",
            &answer.text[..answer.text.len().min(200)]
        );
        // So do too many header lines.
        let many: String = (0..150).map(|i| format!("X-{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        let answer = exchange(proxy.addr, many.as_bytes(), false).await;
        assert_eq!(answer.status(), Some(431), "{:?}", answer.text);
        proxy.stop().await;

        // A limit under hyper's 8 KiB floor holds to the byte.
        let proxy = Cutover::start(&limits("max_header_bytes = 2048", &blue, &green)).await;
        let head = |pad: usize| {
            format!(
                "GET / HTTP/1.1\r\nHost: a\r\nX-Pad: {}\r\n\r\n",
                "p".repeat(pad)
            )
        };
        let fits = head(2048 - head(0).len() + 1);
        assert_eq!(fits.len(), 2049, "the final LF is not counted");
        let answer = exchange(proxy.addr, fits.as_bytes(), false).await;
        assert_eq!(answer.status(), Some(200), "{:?}", answer.text);
        let over = head(3000);
        let answer = exchange(proxy.addr, over.as_bytes(), false).await;
        assert_eq!(answer.status(), Some(431), "{:?}", answer.text);
        assert_eq!(answer.body(), "request header too large\n");
        // Trickled in small pieces, it is refused once the limit is passed,
        // without waiting for the rest.
        let mut stream = connect(proxy.addr).await;
        for piece in over.as_bytes()[..2100].chunks(30) {
            write(&mut stream, piece, false).await;
            tokio::time::sleep(raw::BYTE_GAP).await;
        }
        let answer = read_answer(&mut stream).await;
        assert_eq!(answer.status(), Some(431), "{:?}", answer.text);
        assert_eq!(blue.hits(), 1, "only the head that fits was forwarded");
    })
    .await;
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_after_idle_timeout() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&limits("idle_timeout = \"300ms\"", &blue, &green)).await;
        tokio::time::pause();

        let mut stream = connect(proxy.addr).await;
        get_ok(&mut stream, "request").await;
        let idle_from = Instant::now();
        assert!(
            closes_within(&mut stream, Duration::from_secs(3)).await,
            "never closed"
        );
        let idle = idle_from.elapsed();
        assert!(
            idle >= Duration::from_millis(250) && idle < Duration::from_millis(1500),
            "closed after {idle:?} idle"
        );

        // HTTP/2: a connection with no stream open gets GOAWAY and a close.
        let stream = connect(proxy.addr).await;
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .expect("h2 handshake");
        let opened = Instant::now();
        let conn = tokio::spawn(conn);
        sender.ready().await.expect("h2 ready");
        let resp = sender.send_request(get("/")).await.expect("h2 request");
        assert_eq!(resp.status(), 200);
        drop(resp);
        let closed = tokio::time::timeout(Duration::from_secs(3), conn).await;
        let idle = opened.elapsed();
        assert!(closed.is_ok(), "h2 connection never closed");
        assert!(
            idle >= Duration::from_millis(250) && idle < Duration::from_millis(1500),
            "h2 closed after {idle:?}"
        );

        // A peer that ignores GOAWAY (never answers its PING) is dropped
        // after another idle period.
        let mut deaf = connect(proxy.addr).await;
        deaf.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        let opened = Instant::now();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), deaf.read_to_end(&mut got)).await;
        let idle = opened.elapsed();
        assert!(
            idle >= Duration::from_millis(550) && idle < Duration::from_millis(2000),
            "deaf h2 peer dropped after {idle:?}"
        );
        // A GOAWAY frame (length 8, type 7) came first.
        assert!(got.windows(4).any(|w| w == [0, 0, 8, 7]), "{got:?}");
    })
    .await;
}

#[tokio::test]
async fn idle_timeout_never_cuts_a_slow_stream_in_flight() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&limits("idle_timeout = \"300ms\"", &blue, &green)).await;
        tokio::time::pause();

        // HTTP/1.1: 6 events 200 ms apart, 1.2 s in all, no byte from the client.
        let mut stream = connect(proxy.addr).await;
        write(
            &mut stream,
            b"GET /sse?n=6&ms=200 HTTP/1.1\r\nHost: a\r\n\r\n",
            false,
        )
        .await;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(b"0\r\n\r\n") {
            let n = stream.read(&mut buf).await.expect("stream read");
            assert!(n > 0, "stream cut: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got);
        assert_eq!(text.matches("data: ").count(), 6, "{text:?}");
        // Once it has ended, the connection is idle and closed.
        assert!(closes_within(&mut stream, Duration::from_secs(3)).await);

        // HTTP/2: the same stream on a connection with nothing else on it.
        let mut client = Client::h2(proxy.addr).await;
        let mut resp = client.send(get("/sse?n=6&ms=200")).await;
        let events = read_events(resp.body_mut(), 6).await;
        assert_eq!(events.len(), 6);
    })
    .await;
}

#[tokio::test]
async fn max_connections_makes_a_new_connection_wait_until_one_closes() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&limits("max_connections = 2", &blue, &green)).await;
        tokio::time::pause();

        let mut first = connect(proxy.addr).await;
        let mut second = connect(proxy.addr).await;
        get_ok(&mut first, "first").await;
        get_ok(&mut second, "second").await;

        // The third is accepted by the kernel but not served.
        let mut third = connect(proxy.addr).await;
        write(&mut third, GET, false).await;
        assert!(
            silent_for(&mut third, Duration::from_millis(300)).await,
            "third served beyond the limit"
        );

        // The open ones are not hurt.
        get_ok(&mut first, "first again").await;
        get_ok(&mut second, "second again").await;

        // One closes: the third gets its answer.
        drop(first);
        let answer = read_answer(&mut third).await;
        assert_eq!(answer.status(), Some(200), "{:?}", answer.text);
        get_ok(&mut second, "second after the third").await;
    })
    .await;
}
