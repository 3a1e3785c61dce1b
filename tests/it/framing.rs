//! Response framing against hostile or sloppy upstreams, written as raw
//! sockets: status lines without a reason phrase or with bytes outside
//! ASCII in it, a Host taken from the request target or `:authority`, an
//! absolute-form target without a path, and a stale `Content-Length`
//! beside `chunked` on an upgrade request. Whatever the proxy cannot use
//! becomes a counted 502.

use std::time::Duration;

use http::{Method, Request};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;

use crate::support::raw::{exchange, RawUpstream};
use crate::support::*;

/// A raw upstream that answers every request head with `answer`.
async fn answering(answer: &'static [u8]) -> RawUpstream {
    RawUpstream::start(move |mut conn| async move {
        while conn.head().await.is_some() {
            if conn.stream.write_all(answer).await.is_err() {
                return;
            }
        }
    })
    .await
}

/// One service, `raw`, on `upstream` for every path.
fn only(upstream: &RawUpstream) -> String {
    route(None, "/", "raw") + &service("raw", &[upstream.addr], &[upstream.addr])
}

/// How many answers with `code` the `raw` service counted.
fn counted(scrape: &Scrape, code: &str) -> f64 {
    scrape
        .get(
            "cutover_requests_total",
            &[("service", "raw"), ("pool", "blue"), ("code", code)],
        )
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lines_without_a_usual_reason_phrase_are_proxied() {
    within(BOUND, async {
        let cases: [(&[u8], u16); 5] = [
            (b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok", 200),
            (b"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nok", 200),
            (b"HTTP/1.1 200\nContent-Length: 2\n\nok", 200),
            (
                "HTTP/1.1 404 Não encontrado\r\nContent-Length: 2\r\n\r\nok".as_bytes(),
                404,
            ),
            (b"HTTP/1.1 200 \xffOK\r\nContent-Length: 2\r\n\r\nok", 200),
        ];
        for (answer, code) in cases {
            let upstream = answering(answer).await;
            let proxy = Cutover::start(&only(&upstream)).await;
            let reply = fetch(proxy.addr, "/").await;
            assert_eq!(reply.status, code, "{:?}", String::from_utf8_lossy(answer));
            assert_eq!(reply.text(), "ok", "{:?}", String::from_utf8_lossy(answer));
            proxy.stop().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_status_lines_are_counted_502s() {
    within(BOUND, async {
        let cases: [&[u8]; 4] = [
            b"HTTP/1.1 20\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.1 099 Low\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.1 200 a\x00b\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ];
        for answer in cases {
            let upstream = answering(answer).await;
            let proxy = Cutover::start(&only(&upstream)).await;
            let reply = fetch(proxy.addr, "/").await;
            assert_eq!(reply.status, 502, "{:?}", String::from_utf8_lossy(answer));
            assert_eq!(counted(&proxy.scrape().await, "502"), 1.0);
            proxy.stop().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_from_the_target_or_authority_is_checked_like_a_host_header() {
    within(BOUND, async {
        let upstream = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        let proxy = Cutover::start(&only(&upstream)).await;
        for bytes in [
            &b"GET http://a!b/x HTTP/1.0\r\n\r\n"[..],
            b"GET http://a$b/x HTTP/1.1\r\nHost: a$b\r\n\r\n",
        ] {
            let answer = exchange(proxy.addr, bytes, false).await;
            assert_eq!(answer.status(), Some(400), "{:?}", answer.text);
        }
        let mut h2 = Client::h2(proxy.addr).await;
        let req = Request::builder()
            .uri("http://a$b/x")
            .body(empty())
            .expect("request");
        let reply = h2.request(req).await;
        assert_eq!(reply.status, 400, "{}", reply.text());
        assert_eq!(upstream.connections(), 0, "{}", upstream.received());
        // A valid one from the same sources is served.
        let answer = exchange(proxy.addr, b"GET http://a.b/x HTTP/1.0\r\n\r\n", false).await;
        assert_eq!(answer.status(), Some(200), "{:?}", answer.text);
        let reply = h2.request(get("http://a.b/x")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_target_without_a_path_goes_out_as_slash() {
    within(BOUND, async {
        let upstream = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        let proxy = Cutover::start(&only(&upstream)).await;
        let answer = exchange(
            proxy.addr,
            b"GET http://a?x=1 HTTP/1.1\r\nHost: a\r\n\r\n",
            false,
        )
        .await;
        assert_eq!(answer.status(), Some(200), "{:?}", answer.text);
        let seen = upstream.received();
        assert!(seen.starts_with("GET /?x=1 HTTP/1.1\r\n"), "{seen:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_length_beside_chunked_does_not_cut_an_upgrade_requests_answer() {
    within(BOUND, async {
        let upstream = answering(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n\
              8\r\nAABBBBBB\r\n0\r\n\r\n",
        )
        .await;
        let proxy = Cutover::start(&only(&upstream)).await;
        for upgrade in [true, false] {
            let mut client = Client::http1(proxy.addr).await;
            let mut req = Request::builder().method(Method::GET).uri("/");
            if upgrade {
                req = req
                    .header("connection", "upgrade")
                    .header("upgrade", "websocket");
            }
            let resp = client.send(req.body(empty()).expect("request")).await;
            assert_eq!(resp.status(), 200);
            assert_ne!(
                resp.headers().get("content-length").map(|v| v.as_bytes()),
                Some(&b"2"[..]),
                "upgrade: {upgrade}"
            );
            let body = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect())
                .await
                .expect("body in time")
                .expect("body")
                .to_bytes();
            assert_eq!(&body[..], b"AABBBBBB", "upgrade: {upgrade}");
        }
    })
    .await;
}

/// Sends `request` on a new connection and reads until the proxy closes
/// or `quiet` passes without a byte.
async fn raw_read(addr: std::net::SocketAddr, request: &[u8], quiet: Duration) -> (String, bool) {
    use tokio::io::AsyncReadExt;
    let mut stream = crate::support::client::connect(addr).await;
    stream.write_all(request).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(quiet, stream.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    };
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_lf_in_a_response_chunk_extension_is_refused() {
    within(BOUND, async {
        let upstream = answering(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              3;a\nb\r\nabc\r\n5\r\nEVIL!\r\n0\r\n\r\n",
        )
        .await;
        let proxy = Cutover::start(&only(&upstream)).await;
        let (text, closed) = raw_read(
            proxy.addr,
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            Duration::from_secs(2),
        )
        .await;
        assert!(!text.contains("EVIL") && !text.contains("abc"), "{text:?}");
        // A 502, or a head whose body is cut: never a complete answer.
        assert!(
            text.starts_with("HTTP/1.1 502") || (closed && !text.ends_with("0\r\n\r\n")),
            "{text:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_coding_before_chunked_is_kept() {
    within(BOUND, async {
        for answer in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4\r\nGZIP\r\n0\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nConnection: x-a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nGZIP\r\n0\r\n\r\n",
        ] {
            coding_kept(answer).await;
        }
    })
    .await;
}

async fn coding_kept(answer: &'static [u8]) {
    {
        let upstream = answering(answer).await;
        let proxy = Cutover::start(&only(&upstream)).await;
        let (text, _) = raw_read(
            proxy.addr,
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            Duration::from_millis(500),
        )
        .await;
        let head = text
            .split("\r\n\r\n")
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        assert!(
            head.contains("\r\ntransfer-encoding: gzip, chunked"),
            "{text:?}"
        );
        assert!(text.ends_with("\r\n\r\n4\r\nGZIP\r\n0\r\n\r\n"), "{text:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_trailers_reach_clients_that_accept_them() {
    within(BOUND, async {
        let upstream = answering(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n\
              2\r\nok\r\n0\r\nx-sum: s3cr3t\r\n\r\n",
        )
        .await;
        let proxy = Cutover::start(&only(&upstream)).await;
        let (text, _) = raw_read(
            proxy.addr,
            b"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n",
            Duration::from_millis(500),
        )
        .await;
        assert!(
            text.to_ascii_lowercase()
                .ends_with("\r\n0\r\nx-sum: s3cr3t\r\n\r\n"),
            "{text:?}"
        );
        // Without `TE: trailers` the client gets none (hyper's rule).
        let (text, _) = raw_read(
            proxy.addr,
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            Duration::from_millis(500),
        )
        .await;
        assert!(!text.contains("s3cr3t"), "{text:?}");
        assert!(text.ends_with("\r\n\r\n"), "{text:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_request_with_a_body_is_answered() {
    within(BOUND, async {
        let (blue, green) = (
            Upstream::start("blue").await,
            Upstream::start("green").await,
        );
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;
        let (text, _) = raw_read(
            proxy.addr,
            b"POST / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\
              Content-Length: 5\r\n\r\nhello",
            Duration::from_secs(3),
        )
        .await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
        assert!(text.contains("\"body\":\"hello\""), "{text:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_reaches_the_client_only_when_the_upstream_sends_it() {
    use tokio::io::AsyncReadExt;
    within(BOUND, async {
        // Refuses at once, without a 100.
        let refusing = answering(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await;
        // Asks for the body with a 100, then answers with it.
        let taking = RawUpstream::start(|mut conn| async move {
            if conn.head().await.is_none() {
                return;
            }
            let _ = conn
                .stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await;
            let mut body = [0u8; 5];
            if conn.stream.read_exact(&mut body).await.is_err() {
                return;
            }
            let mut answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_vec();
            answer.extend_from_slice(&body);
            let _ = conn.stream.write_all(&answer).await;
        })
        .await;
        let head =
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";

        let proxy = Cutover::start(&only(&refusing)).await;
        let (text, _) = raw_read(proxy.addr, head, Duration::from_millis(1500)).await;
        assert!(text.starts_with("HTTP/1.1 401"), "{text:?}");
        proxy.stop().await;

        let proxy = Cutover::start(&only(&taking)).await;
        let mut stream = crate::support::client::connect(proxy.addr).await;
        stream.write_all(head).await.expect("write");
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        assert!(
            got.starts_with(b"HTTP/1.1 100 Continue\r\n"),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
        stream.write_all(b"hello").await.expect("body");
        let answer = crate::support::raw::read_answer(&mut stream).await;
        assert_eq!(answer.status(), Some(200), "{:?}", answer.text);
        assert_eq!(answer.body(), "hello");
    })
    .await;
}
