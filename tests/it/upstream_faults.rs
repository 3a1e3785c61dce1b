//! Broken upstreams, written as tiny raw TCP servers: a reset in the middle
//! of a response, garbage instead of HTTP, a response that never ends, a
//! server that accepts and never answers. The client gets a clean 502/504
//! or a cleanly closed stream, a server that keeps failing is marked down,
//! and other clients are served meanwhile. A client that leaves before the
//! answer (or during it) takes its upstream request with it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use http::Method;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::support::raw::{RawConn, RawUpstream};
use crate::support::*;

/// Routes `/bad` to service `bad` on `bad`, everything else to `good`'s
/// blue pool.
fn bad_and_good(bad: &RawUpstream, blue: &Upstream, green: &Upstream, limits: &str) -> String {
    format!("[server.limits]\n{limits}\n\n")
        + &route(None, "/bad", "bad")
        + &route(None, "/", "good")
        + &service("bad", &[bad.addr], &[bad.addr])
        + &service("good", &[blue.addr], &[green.addr])
}

/// Answers a head, then resets after `body`, mid-response.
async fn reset_after(mut conn: RawConn, head: &'static [u8], body: &'static [u8]) {
    if conn.head().await.is_none() {
        return;
    }
    let _ = conn.stream.write_all(head).await;
    let _ = conn.stream.write_all(body).await;
    let _ = conn.stream.flush().await;
    conn.reset();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_in_the_middle_of_a_response_ends_the_client_stream_unfinished() {
    within(BOUND, async {
        let sized = RawUpstream::start(|conn| {
            reset_after(
                conn,
                b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n",
                &[b'a'; 1000],
            )
        })
        .await;
        let chunked = RawUpstream::start(|conn| {
            reset_after(
                conn,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"5\r\nhello\r\n",
            )
        })
        .await;
        let (blue, green) = (
            Upstream::start("blue").await,
            Upstream::start("green").await,
        );
        for bad in [&sized, &chunked] {
            let proxy = Cutover::start(&bad_and_good(bad, &blue, &green, "")).await;
            // HTTP/1.1: the head arrives, the body ends in an error, never
            // as a complete response; the connection is closed.
            let mut client = Client::http1(proxy.addr).await;
            let resp = client.send(get("/bad")).await;
            assert_eq!(resp.status(), 200);
            assert!(
                resp.into_body().collect().await.is_err(),
                "body looked complete"
            );
            // HTTP/2: the stream is reset, after its head or before it (a
            // head still queued when the stream is reset is never sent); the
            // connection carries on.
            let mut h2 = Client::h2(proxy.addr).await;
            match h2.try_send(get("/bad")).await {
                Ok(resp) => {
                    assert_eq!(resp.status(), 200);
                    assert!(
                        resp.into_body().collect().await.is_err(),
                        "h2 body looked complete"
                    );
                }
                Err(e) => assert!(format!("{e:?}").contains("Reset("), "{e:?}"),
            }
            assert_eq!(h2.get("/fine").await.echo().upstream, "blue");
            proxy.stop().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_http_is_502() {
    within(BOUND, async {
        let (blue, green) = (
            Upstream::start("blue").await,
            Upstream::start("green").await,
        );
        let answers: [&'static [u8]; 4] = [
            b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"",
        ];
        for garbage in answers {
            let bad = RawUpstream::start(move |mut conn| async move {
                if conn.head().await.is_some() {
                    let _ = conn.stream.write_all(garbage).await;
                }
            })
            .await;
            let proxy = Cutover::start(&bad_and_good(&bad, &blue, &green, "")).await;
            let reply = fetch(proxy.addr, "/bad").await;
            assert_eq!(reply.status, 502, "{garbage:?}: {}", reply.text());
            assert_eq!(reply.text(), "upstream request failed\n");
            assert_eq!(fetch(proxy.addr, "/").await.echo().upstream, "blue");
            proxy.stop().await;
        }
    })
    .await;
}

#[tokio::test]
async fn response_head_that_never_ends_is_504_after_response_timeout() {
    within(BOUND, async {
        let (blue, green) = (
            Upstream::start("blue").await,
            Upstream::start("green").await,
        );
        let trickle = RawUpstream::start(|mut conn| async move {
            if conn.head().await.is_none() {
                return;
            }
            let _ = conn.stream.write_all(b"HTTP/1.1 200 OK\r\nX-Never: ").await;
            while conn.stream.write_all(b"a").await.is_ok() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let proxy = Cutover::start(&bad_and_good(
            &trickle,
            &blue,
            &green,
            "response_timeout = \"400ms\"",
        ))
        .await;
        tokio::time::pause();
        let started = Instant::now();
        let reply = fetch(proxy.addr, "/bad").await;
        let took = started.elapsed();
        assert_eq!(reply.status, 504, "{}", reply.text());
        assert_eq!(reply.text(), "upstream timeout\n");
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(2),
            "{took:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn response_body_that_never_ends_streams_until_the_client_leaves() {
    within(BOUND, async {
        let (blue, green) = (
            Upstream::start("blue").await,
            Upstream::start("green").await,
        );
        let upstream_saw_close = Arc::new(AtomicBool::new(false));
        let saw = upstream_saw_close.clone();
        let endless = RawUpstream::start(move |mut conn| {
            let saw = saw.clone();
            async move {
                if conn.head().await.is_none() {
                    return;
                }
                let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
                let _ = conn.stream.write_all(head).await;
                while conn.stream.write_all(b"1\r\nx\r\n").await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                saw.store(true, Ordering::SeqCst);
            }
        })
        .await;
        // Longer than the response_timeout: that only bounds the head.
        let proxy = Cutover::start(&bad_and_good(
            &endless,
            &blue,
            &green,
            "response_timeout = \"200ms\"",
        ))
        .await;
        tokio::time::pause();

        let mut client = Client::http1(proxy.addr).await;
        let mut resp = client.send(get("/bad")).await;
        assert_eq!(resp.status(), 200);
        let started = Instant::now();
        let mut got = 0;
        while started.elapsed() < Duration::from_millis(500) {
            let frame = resp
                .body_mut()
                .frame()
                .await
                .expect("stream ended")
                .expect("frame");
            got += frame.into_data().map(|d| d.len()).unwrap_or(0);
        }
        assert!(got >= 5, "only {got} bytes streamed");
        // The client leaves: the proxy lets go of the upstream connection.
        drop(resp);
        drop(client);
        eventually("the upstream connection was closed", || async {
            upstream_saw_close.load(Ordering::SeqCst)
        })
        .await;
        assert_eq!(fetch(proxy.addr, "/").await.echo().upstream, "blue");
    })
    .await;
}

/// A server that reads a head, answers nothing and flags when the proxy
/// closes the connection: a model call still thinking.
async fn thinking_upstream() -> (RawUpstream, Arc<AtomicUsize>, Arc<AtomicBool>) {
    let heads = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicBool::new(false));
    let (seen, saw_close) = (heads.clone(), closed.clone());
    let upstream = RawUpstream::start(move |mut conn| {
        let (seen, saw_close) = (seen.clone(), saw_close.clone());
        async move {
            if conn.head().await.is_none() {
                return;
            }
            seen.fetch_add(1, Ordering::SeqCst);
            conn.drain().await;
            saw_close.store(true, Ordering::SeqCst);
        }
    })
    .await;
    (upstream, heads, closed)
}

/// A client that hangs up while its request waits for the response head:
/// the proxy closes the upstream connection (cancelling the model call),
/// long before the response timeout, on HTTP/1.1 and on h2c.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_before_the_answer_cancels_the_upstream_request() {
    within(BOUND, async {
        let (blue, green) = (
            Upstream::start("blue").await,
            Upstream::start("green").await,
        );
        let (thinking, heads, closed) = thinking_upstream().await;
        let proxy = Cutover::start(&bad_and_good(
            &thinking,
            &blue,
            &green,
            "response_timeout = \"60s\"",
        ))
        .await;

        // HTTP/1.1, the client closes its connection.
        let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        raw::write(&mut stream, b"GET /bad HTTP/1.1\r\nHost: a\r\n\r\n", false).await;
        eventually("the request reached the upstream", || async {
            heads.load(Ordering::SeqCst) == 1
        })
        .await;
        assert!(
            !closed.load(Ordering::SeqCst),
            "closed before the client left"
        );
        drop(stream);
        eventually("the upstream connection was closed", || async {
            closed.load(Ordering::SeqCst)
        })
        .await;

        // h2c: the client drops the connection with the stream open.
        closed.store(false, Ordering::SeqCst);
        let mut client = Client::h2(proxy.addr).await;
        let pending = tokio::spawn(async move {
            let _ = client.send(get("/bad")).await;
        });
        eventually("the h2 request reached the upstream", || async {
            heads.load(Ordering::SeqCst) == 2
        })
        .await;
        pending.abort();
        eventually("the upstream connection was closed after h2", || async {
            closed.load(Ordering::SeqCst)
        })
        .await;
        assert_eq!(fetch(proxy.addr, "/").await.echo().upstream, "blue");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_accepts_and_never_answers_is_504() {
    within(BOUND, async {
        let (blue, green) = (
            Upstream::start("blue").await,
            Upstream::start("green").await,
        );
        let silent = RawUpstream::start(|mut conn| async move {
            if conn.head().await.is_some() {
                // Holds the connection open, says nothing.
                conn.drain().await;
            }
        })
        .await;
        let proxy = Cutover::start(&bad_and_good(
            &silent,
            &blue,
            &green,
            "response_timeout = \"300ms\"",
        ))
        .await;
        let reply = fetch(proxy.addr, "/bad").await;
        assert_eq!(reply.status, 504, "{}", reply.text());
        assert!(silent.received().starts_with("GET /bad HTTP/1.1\r\n"));
        proxy.stop().await;

        // A listener that never even accepts: the kernel completes the
        // handshake, nobody reads.
        let backlog = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let toml = "[server.limits]\nresponse_timeout = \"300ms\"\n\n".to_string()
            + &route(None, "/", "app")
            + &service("app", &[backlog.local_addr().unwrap()], &[green.addr]);
        let proxy = Cutover::start(&toml).await;
        let reply = fetch(proxy.addr, "/").await;
        assert_eq!(reply.status, 504, "{}", reply.text());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_keeps_failing_is_marked_down_and_its_pool_peer_takes_over() {
    within(BOUND, async {
        let good = Upstream::start("good").await;
        let green = Upstream::start("green").await;
        for (what, limits) in [("garbage", ""), ("silence", "response_timeout = \"200ms\"")] {
            let bad = RawUpstream::start(move |mut conn| async move {
                if conn.head().await.is_none() {
                    return;
                }
                if what == "garbage" {
                    let _ = conn.stream.write_all(b"not http\r\n\r\n").await;
                } else {
                    conn.drain().await;
                }
            })
            .await;
            // Round robin over a broken server and a good one, no health checks.
            let toml = format!("[server.limits]\n{limits}\n\n")
                + &route(None, "/", "app")
                + &service("app", &[bad.addr, good.addr], &[green.addr]);
            let proxy = Cutover::start(&toml).await;
            let before = good.hits();
            let failed = AtomicUsize::new(0);
            eventually(&format!("{what}: ten requests in a row served"), || {
                let failed = &failed;
                let addr = proxy.addr;
                async move {
                    for _ in 0..10 {
                        let reply = fetch(addr, "/").await;
                        if reply.status != 200 {
                            assert!(
                                matches!(reply.status.as_u16(), 502 | 504),
                                "{}",
                                reply.text()
                            );
                            failed.fetch_add(1, Ordering::SeqCst);
                            return false;
                        }
                    }
                    true
                }
            })
            .await;
            let failed = failed.load(Ordering::SeqCst);
            assert!(failed >= 3, "{what}: marked down after {failed} failures");
            assert!(
                failed <= 6,
                "{what}: {failed} failures before it was marked down"
            );
            assert!(good.hits() >= before + 10);
            proxy.stop().await;
        }
    })
    .await;
}

#[tokio::test]
async fn other_clients_are_served_while_an_upstream_hangs() {
    within(BOUND, async {
        let (blue, green) = (
            Upstream::start("blue").await,
            Upstream::start("green").await,
        );
        let silent = RawUpstream::start(|mut conn| async move {
            if conn.head().await.is_some() {
                conn.drain().await;
            }
        })
        .await;
        let proxy = Cutover::start(&bad_and_good(
            &silent,
            &blue,
            &green,
            "response_timeout = \"1500ms\"",
        ))
        .await;
        tokio::time::pause();

        let addr = proxy.addr;
        let hung = join_all((0..10).map(|_| fetch(addr, "/bad")));
        let served = async {
            // Once the hung requests are all upstream, the others go through
            // quickly.
            eventually("ten requests hang upstream", || async {
                silent.connections() >= 10
            })
            .await;
            join_all((0..20).map(|i| async move {
                let started = Instant::now();
                let reply = fetch(addr, &format!("/fine/{i}")).await;
                assert_eq!(reply.echo().upstream, "blue");
                started.elapsed()
            }))
            .await
        };
        let (hung, took) = tokio::join!(hung, served);
        assert!(hung.iter().all(|r| r.status == 504));
        let slowest = took.iter().max().unwrap();
        assert!(
            *slowest < Duration::from_millis(1000),
            "slowest good request took {slowest:?}"
        );
    })
    .await;
}

/// Answers the first request of each connection, then reads the next one
/// and closes without a word, as a server whose keep-alive timeout fires
/// just as a request arrives.
async fn answer_once_then_close(mut conn: RawConn) {
    if conn.head().await.is_none() {
        return;
    }
    let _ = conn
        .stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        .await;
    let _ = conn.head().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_closed_under_a_request_is_retried_only_for_an_idempotent_method() {
    within(BOUND, async {
        let bad = RawUpstream::start(answer_once_then_close).await;
        let (blue, green) = (
            Upstream::start("blue").await,
            Upstream::start("green").await,
        );
        let proxy = Cutover::start(&bad_and_good(&bad, &blue, &green, "")).await;
        let mut client = Client::http1(proxy.addr).await;
        for round in 0..3 {
            let resp = client.send(get("/bad")).await;
            assert_eq!(resp.status(), 200, "GET {round}");
            assert_eq!(
                &resp.into_body().collect().await.unwrap().to_bytes()[..],
                b"ok"
            );
        }
        // Each GET after the first was written to a connection the server
        // then closed, and went again on a new one.
        assert_eq!(bad.connections(), 3);

        // The same for a POST: not sent twice, answered 502.
        let resp = client.send(request(Method::POST, "/bad", empty())).await;
        assert_eq!(resp.status(), 502);
        assert_eq!(bad.connections(), 3, "the POST was sent again");
        proxy.stop().await;
    })
    .await;
}
