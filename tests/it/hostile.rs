//! Hostile clients: malformed and ambiguous HTTP/1.1 requests, written as
//! raw bytes (at once and byte by byte), are refused with 400 and nothing of
//! them reaches an upstream, so no request can be smuggled behind another.
//! Each case notes who refuses it: hyper's parser, or cutover's own checks
//! (the framing scan of `proxy::conn` or `proxy::forward::check`).

use std::time::Duration;

use tokio::net::TcpStream;

use crate::support::raw::{closes_within, exchange, read_answer, write, RawUpstream};
use crate::support::*;

/// A request that must be refused: what it is, its bytes, who refuses it.
struct Case {
    what: &'static str,
    bytes: &'static [u8],
}

const fn case(what: &'static str, bytes: &'static [u8]) -> Case {
    Case { what, bytes }
}

async fn proxy_with_upstreams() -> (Upstream, Upstream, Cutover) {
    let blue = Upstream::start("blue").await;
    let green = Upstream::start("green").await;
    let proxy = Cutover::start(&blue_green(&blue, &green)).await;
    (blue, green, proxy)
}

/// Sends every case at once and byte by byte; each gets 400 and neither
/// upstream sees a request.
async fn assert_all_refused(cases: &[Case]) {
    let (blue, green, proxy) = proxy_with_upstreams().await;
    for case in cases {
        for bytewise in [false, true] {
            let answer = exchange(proxy.addr, case.bytes, bytewise).await;
            assert_eq!(
                answer.status(),
                Some(400),
                "{} (bytewise: {bytewise}): {:?}",
                case.what,
                answer.text
            );
            assert_eq!(
                blue.hits() + green.hits(),
                0,
                "{} (bytewise: {bytewise}) reached an upstream",
                case.what
            );
        }
    }
    // The same proxy still serves a well-formed request.
    assert_eq!(fetch(proxy.addr, "/ok").await.echo().upstream, "blue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_lines_are_400_and_never_forwarded() {
    within(BOUND, async {
        assert_all_refused(&[
            // hyper (httparse):
            case(
                "extra token after the version",
                b"GET / HTTP/1.1 x\r\nHost: a\r\n\r\n",
            ),
            case("two spaces", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n"),
            case("unknown version", b"GET / HTTP/2.2\r\nHost: a\r\n\r\n"),
            case("HTTP/0.9 request", b"GET /\r\nHost: a\r\n\r\n"),
            case("bad method token", b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n"),
            case(
                "control byte in the target",
                b"GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n",
            ),
            case(
                "bare CR in the request line",
                b"GET / HTTP/1.1\rHost: a\r\n\r\n",
            ),
            // cutover:
            case("CONNECT", b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"),
            case(
                "authority-form GET",
                b"GET a.example:80 HTTP/1.1\r\nHost: a.example:80\r\n\r\n",
            ),
            case("asterisk-form GET", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n"),
            case(
                "userinfo in the target",
                b"GET http://u@a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n",
            ),
        ])
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_header_lines_are_400_and_never_forwarded() {
    within(BOUND, async {
        assert_all_refused(&[
            // hyper (httparse):
            case("no colon", b"GET / HTTP/1.1\r\nHost: a\r\nX-A b\r\n\r\n"),
            case(
                "whitespace before the colon",
                b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            ),
            case(
                "obs-fold",
                b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
            ),
            case(
                "NUL in a value",
                b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n",
            ),
            case(
                "bare CR in a value",
                b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n",
            ),
            case(
                "separator in a name",
                b"GET / HTTP/1.1\r\nHost: a\r\nX(A): b\r\n\r\n",
            ),
            case("empty name", b"GET / HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n"),
            // cutover: names an upstream may read as a sensitive header.
            case(
                "Content_Length",
                b"POST / HTTP/1.1\r\nHost: a\r\nContent_Length: 5\r\n\r\n",
            ),
            case(
                "Transfer_Encoding",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\n\r\n",
            ),
            case(
                "X_Forwarded_For",
                b"GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 10.0.0.1\r\n\r\n",
            ),
        ])
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_body_lengths_are_400_and_never_forwarded() {
    within(BOUND, async {
        assert_all_refused(&[
            // cutover (hyper would read these as chunked, drop the length
            // and close afterwards):
            case(
                "Content-Length then Transfer-Encoding",
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            ),
            case(
                "Transfer-Encoding then Content-Length",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
            ),
            case(
                "Content-Length with a non-final chunked",
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            ),
            // hyper:
            case(
                "two different Content-Lengths",
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            ),
            case("a list of lengths", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\na"),
            case("a signed length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\na"),
            case("a negative length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"),
            case(
                "a length that overflows",
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
            ),
            case(
                "chunked not last",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
            ),
            case(
                "a second Transfer-Encoding that is not chunked",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n",
            ),
            case(
                "xchunked",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
            ),
            case(
                "Transfer-Encoding on HTTP/1.0",
                b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            ),
        ])
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_missing_host_is_400_and_never_forwarded() {
    within(BOUND, async {
        assert_all_refused(&[
            case("no Host on HTTP/1.1", b"GET / HTTP/1.1\r\n\r\n"),
            case(
                "no Host with an absolute-form target",
                b"GET http://a.example/ HTTP/1.1\r\n\r\n",
            ),
            case(
                "two Host headers",
                b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            ),
            case(
                "two equal Host headers",
                b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
            ),
            case(
                "Host differing from the target's authority",
                b"GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n",
            ),
            case("space in Host", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
            case("path in Host", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"),
            case("userinfo in Host", b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n"),
            case(
                "bad port in Host",
                b"GET / HTTP/1.1\r\nHost: a:http\r\n\r\n",
            ),
            case("comma in Host", b"GET / HTTP/1.1\r\nHost: a,b\r\n\r\n"),
        ])
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_chunk_sizes_sent_with_the_head_are_400_and_never_forwarded() {
    within(BOUND, async {
        let (blue, green, proxy) = proxy_with_upstreams().await;
        let head = b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        for body in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"fffffffffffffffff\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
        ] {
            let bytes = [&head[..], body].concat();
            let answer = exchange(proxy.addr, &bytes, false).await;
            let what = String::from_utf8_lossy(body);
            assert_eq!(answer.status(), Some(400), "{what:?}: {:?}", answer.text);
            assert_eq!(answer.body(), "invalid chunked body\n", "{what:?}");
            assert_eq!(
                blue.hits() + green.hits(),
                0,
                "{what:?} reached an upstream"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_chunk_sent_after_the_head_cuts_the_request_and_smuggles_nothing() {
    within(BOUND, async {
        // The head is forwarded as soon as it is complete (bodies stream),
        // so an upstream that sees this request sees it cut short, never a
        // second request hidden in its body.
        let upstream = RawUpstream::start(|mut conn| async move {
            if conn.head().await.is_some() {
                conn.drain().await;
            }
        })
        .await;
        let toml = route(None, "/", "app") + &service("app", &[upstream.addr], &[upstream.addr]);
        let proxy = Cutover::start(&toml).await;

        let mut client = TcpStream::connect(proxy.addr).await.unwrap();
        write(
            &mut client,
            b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        )
        .await;
        // Once the head is upstream, the bad chunk and a smuggled request.
        eventually("the head reached the upstream", || async {
            upstream.received().contains("POST /upload")
        })
        .await;
        write(
            &mut client,
            b"5\r\nhello\r\nzz\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
            true,
        )
        .await;
        let answer = read_answer(&mut client).await;
        assert!(
            answer.status() == Some(400) || (answer.closed && answer.text.is_empty()),
            "{:?}",
            answer.text
        );
        assert!(closes_within(&mut client, Duration::from_secs(2)).await);
        let seen = upstream.received();
        assert!(!seen.contains("smuggled"), "{seen:?}");
        assert_eq!(seen.matches("HTTP/1.1").count(), 1, "{seen:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_smuggled_behind_content_length_and_chunked_never_runs() {
    within(BOUND, async {
        let (blue, green, proxy) = proxy_with_upstreams().await;
        // A front end that honours Content-Length would see one request;
        // one that honours chunked would see two. cutover sees neither.
        for bytewise in [false, true] {
            let mut client = TcpStream::connect(proxy.addr).await.unwrap();
            let _ = client.set_nodelay(true);
            write(
                &mut client,
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n\
                  0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
                bytewise,
            )
            .await;
            let answer = read_answer(&mut client).await;
            assert_eq!(answer.status(), Some(400), "{:?}", answer.text);
            assert_eq!(answer.body(), "content-length with transfer-encoding\n");
            assert!(answer.text.to_ascii_lowercase().contains("connection: close"));
            assert!(closes_within(&mut client, Duration::from_secs(2)).await);
            assert_eq!(blue.hits() + green.hits(), 0, "bytewise: {bytewise}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn well_formed_edge_cases_are_still_served() {
    within(BOUND, async {
        let (blue, _green, proxy) = proxy_with_upstreams().await;
        for (what, bytes) in [
            (
                "absolute-form with a matching Host",
                &b"GET http://a.example/x HTTP/1.1\r\nHost: A.example\r\n\r\n"[..],
            ),
            ("Host with a port", b"GET / HTTP/1.1\r\nHost: a.example:8080\r\n\r\n"),
            ("IPv6 Host", b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"),
            ("HTTP/1.0 without Host", b"GET / HTTP/1.0\r\n\r\n"),
            ("an ordinary underscore name", b"GET / HTTP/1.1\r\nHost: a\r\nX_Custom: 1\r\n\r\n"),
            (
                "the same length twice",
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
            ),
            (
                "chunked with an extension and a trailer",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\nab\r\n0\r\nX-T: 1\r\n\r\n",
            ),
            ("OPTIONS *", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
            ("obs-text in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: caf\xc3\xa9\r\n\r\n"),
        ] {
            let before = blue.hits();
            for bytewise in [false, true] {
                let answer = exchange(proxy.addr, bytes, bytewise).await;
                let status = answer.status();
                // OPTIONS * has no route (the route is "/"), and says so.
                if what == "OPTIONS *" {
                    assert_eq!(status, Some(404), "{what}: {:?}", answer.text);
                    continue;
                }
                assert_eq!(status, Some(200), "{what} (bytewise: {bytewise}): {:?}", answer.text);
            }
            if what != "OPTIONS *" {
                assert_eq!(blue.hits(), before + 2, "{what}");
            }
        }
    })
    .await;
}
