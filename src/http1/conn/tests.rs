//! Upstream connections against a scripted server on a real loopback socket.

use std::future::poll_fn;
use std::time::Duration;

use futures_util::StreamExt;
use http_body_util::{Empty, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::http1::request::HEAD_CAPACITY;
use crate::http1::UpstreamBody;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Method;
use http_body::Frame;

const BOUND: Duration = Duration::from_secs(5);

/// A direct connection and the server's end of it.
async fn pair() -> (Box<UpstreamConn>, TcpStream, Arc<Flag>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap());
    let (client, accepted) = tokio::join!(client, listener.accept());
    let cut = Arc::new(Flag::default());
    (
        UpstreamConn::new(client.unwrap(), cut.clone()),
        accepted.unwrap().0,
        cut,
    )
}

fn request(method: Method, target: &str) -> Request<Empty<Bytes>> {
    Request::builder()
        .method(method)
        .uri(target)
        .header("host", "up")
        .header("x-forwarded-for", "10.0.0.1")
        .body(Empty::new())
        .unwrap()
}

/// The head of `req` with `lines` after its own headers, as the proxy
/// encodes it from the request's parts.
fn encode<B: Body>(req: &Request<B>, lines: &[u8]) -> RequestHead {
    let ended = req.body().is_end_stream();
    RequestHead::of(req.method(), req.uri(), req.headers(), ended, |out| {
        out.extend_from_slice(lines);
    })
}

impl UpstreamConn {
    /// [`UpstreamConn::round_trip`] with the head encoded from `req` and
    /// `lines` just before, as the proxy does.
    async fn encode_and_round_trip<B>(
        &mut self,
        req: &mut Request<B>,
        lines: &[u8],
        timeout: Duration,
    ) -> Result<ResponseHead, (Error, Reached)>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let head = encode(req, lines);
        self.round_trip(req, &head, timeout).await
    }
}

/// Reads one request head off the server's end.
async fn read_request(server: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(
            server.read(&mut byte).await.unwrap(),
            1,
            "request cut short"
        );
        head.push(byte[0]);
    }
    head
}

/// Sends `req` on `conn` while the server answers with `answer`.
async fn exchange<B>(
    conn: &mut UpstreamConn,
    server: &mut TcpStream,
    req: &mut Request<B>,
    answer: &[u8],
) -> Result<ResponseHead, (Error, Reached)>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let serve = async {
        read_request(server).await;
        server.write_all(answer).await.unwrap();
    };
    let (head, ()) = tokio::time::timeout(BOUND, async {
        tokio::join!(conn.encode_and_round_trip(req, b"", BOUND), serve)
    })
    .await
    .expect("exchange timed out");
    head
}

/// A request answered with `answer` on a new connection: the response
/// head, its body, and the server's end.
async fn answered(
    method: Method,
    answer: &[u8],
) -> (ResponseHead, UpstreamBody<Empty<Bytes>>, TcpStream) {
    let (mut conn, mut server, _cut) = pair().await;
    let head = exchange(&mut conn, &mut server, &mut request(method, "/"), answer)
        .await
        .unwrap();
    let body = UpstreamBody::new(conn, &head, Empty::new());
    (head, body, server)
}

/// Everything the body yields: its data, its trailers, and the error that
/// ended it, if one did.
async fn drain(
    body: &mut UpstreamBody<Empty<Bytes>>,
) -> (Vec<u8>, Option<HeaderMap>, Option<Error>) {
    let mut data = Vec::new();
    let mut trailers = None;
    let collect = async {
        loop {
            match poll_fn(|cx| body.poll_frame(cx)).await {
                None => return None,
                Some(Err(e)) => return Some(e),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(d) => data.extend_from_slice(&d),
                    Err(frame) => trailers = frame.into_trailers().ok(),
                },
            }
        }
    };
    let error = tokio::time::timeout(BOUND, collect)
        .await
        .expect("body timed out");
    (data, trailers, error)
}

#[test]
fn the_request_head_is_the_method_target_and_headers_as_given() {
    let out = encode(&request(Method::GET, "/a/b?c=d"), b"");
    assert_eq!(
        out.bytes,
        b"GET /a/b?c=d HTTP/1.1\r\nhost: up\r\nx-forwarded-for: 10.0.0.1\r\n\r\n"
    );
    let out = encode(&request(Method::OPTIONS, "*"), b"");
    assert!(out.bytes.starts_with(b"OPTIONS * HTTP/1.1\r\n"), "{out:?}");
}

#[tokio::test]
async fn a_sized_body_arriving_in_pieces_is_passed_on_and_the_connection_reused() {
    let (head, mut body, mut server) = answered(
        Method::GET,
        b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello",
    )
    .await;
    assert_eq!(head.response.status(), 200);
    let values: Vec<_> = head.response.headers().get_all("x-a").iter().collect();
    assert_eq!(values, ["1", "2"]);
    assert_eq!(body.size_hint().exact(), Some(11));
    let rest = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        server.write_all(b" world").await.unwrap();
    };
    let ((data, trailers, error), ()) = tokio::join!(drain(&mut body), rest);
    assert_eq!(
        (data.as_slice(), trailers, error.map(|e| e.to_string())),
        (&b"hello world"[..], None, None)
    );
    assert!(body.is_end_stream());
    let mut conn = body
        .take_conn()
        .expect("a complete keep-alive response frees its connection");
    assert!(conn.is_reusable());

    // The same connection carries the next request.
    let head = exchange(
        &mut conn,
        &mut server,
        &mut request(Method::GET, "/"),
        b"HTTP/1.1 204 No Content\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(head.response.status(), 204);
    assert!(UpstreamBody::new(conn, &head, Empty::<Bytes>::new()).is_end_stream());
}

#[tokio::test]
async fn a_chunked_body_is_decoded_with_its_extensions_and_trailers() {
    let (_, mut body, _server) = answered(Method::GET, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n").await;
    let (data, trailers, error) = drain(&mut body).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(data, b"hello world");
    assert_eq!(trailers.expect("trailers")["x-sum"], "42");
    assert!(
        body.take_conn().is_some(),
        "a complete chunked response frees its connection"
    );
}

#[tokio::test]
async fn responses_without_a_body_end_at_their_head() {
    for (method, answer) in [
        (
            Method::HEAD,
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"[..],
        ),
        (
            Method::GET,
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5000\r\n\r\n",
        ),
        (Method::GET, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ] {
        let (_, mut body, _server) = answered(method, answer).await;
        assert!(body.is_end_stream(), "{answer:?}");
        assert!(body.take_conn().is_some(), "{answer:?}");
    }
}

#[tokio::test]
async fn a_body_without_a_length_runs_to_the_close_and_the_connection_is_not_kept() {
    let (_, mut body, server) = answered(Method::GET, b"HTTP/1.1 200 OK\r\n\r\nall of it").await;
    drop(server);
    let (data, _, error) = drain(&mut body).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(data, b"all of it");
    assert!(body.take_conn().is_none());
}

#[tokio::test]
async fn interim_answers_are_skipped() {
    let (head, mut body, _server) = answered(
        Method::GET,
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    assert_eq!(head.response.status(), 200);
    assert!(!head.response.headers().contains_key("link"));
    let (data, _, _) = drain(&mut body).await;
    assert_eq!(data, b"ok");
}

#[tokio::test]
async fn a_close_asked_by_either_version_keeps_the_connection_out_of_the_pool() {
    for (answer, kept) in [
        (&b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na"[..], false),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\na", false),
        (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\na", true),
        // Both framings: read as chunked, then not trusted again.
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n", false),
        // A transfer coding in HTTP/1.0, even with keep-alive asked.
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n", false),
    ] {
        let (head, mut body, _server) = answered(Method::GET, answer).await;
        // Connection-level fields stay here; when the coding framed the
        // body, a length must not go on either.
        let headers = head.response.headers();
        assert!(!headers.contains_key("connection"), "{answer:?}");
        assert!(!headers.contains_key("transfer-encoding"), "{answer:?}");
        if answer.windows(17).any(|w| w == b"Transfer-Encoding") {
            assert!(!headers.contains_key("content-length"), "{answer:?}");
        }
        let (data, _, error) = drain(&mut body).await;
        assert!(error.is_none(), "{answer:?}: {error:?}");
        assert_eq!(data, b"a");
        assert_eq!(body.take_conn().is_some(), kept, "{answer:?}");
    }
}

#[tokio::test]
async fn heads_that_cannot_be_framed_are_refused() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        b"SSH-2.0-OpenSSH\r\n\r\n",
    ] {
        let (mut conn, mut server, _cut) = pair().await;
        match exchange(
            &mut conn,
            &mut server,
            &mut request(Method::GET, "/"),
            answer,
        )
        .await
        {
            Err((Error::Invalid(_), Reached::Answered)) => {}
            other => panic!("{answer:?}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn broken_chunks_and_short_bodies_end_in_an_error() {
    for (answer, close) in [
        (
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"[..],
            false,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
            false,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n",
            false,
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", true),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
            true,
        ),
    ] {
        let (mut conn, mut server, _cut) = pair().await;
        let head = exchange(
            &mut conn,
            &mut server,
            &mut request(Method::GET, "/"),
            answer,
        )
        .await
        .unwrap();
        if close {
            drop(server);
        }
        let mut body = UpstreamBody::new(conn, &head, Empty::<Bytes>::new());
        let (_, _, error) = drain(&mut body).await;
        assert!(error.is_some(), "{answer:?} ended cleanly");
        assert!(body.take_conn().is_none(), "{answer:?}");
    }
}

#[tokio::test]
async fn how_far_a_failed_exchange_got_is_reported() {
    for (reply, expected) in [
        // Closed with no answer: a request that may be sent again elsewhere.
        (&b""[..], Reached::Unanswered),
        // Half a head, then the close.
        (b"HTTP/1.1 200 OK\r\nCont", Reached::Answered),
        // An interim answer, then the close: answered too.
        (b"HTTP/1.1 100 Continue\r\n\r\n", Reached::Answered),
    ] {
        let (mut conn, mut server, _cut) = pair().await;
        let serve = async {
            read_request(&mut server).await;
            server.write_all(reply).await.unwrap();
            drop(server);
        };
        let mut req = request(Method::GET, "/");
        let (sent, ()) = tokio::join!(conn.encode_and_round_trip(&mut req, b"", BOUND), serve);
        match sent {
            Err((Error::Closed, reached)) if reached == expected => {}
            other => panic!("{reply:?}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_idle_connection_the_server_closed_is_not_reusable() {
    let (mut conn, server, _cut) = pair().await;
    assert!(conn.is_reusable());
    drop(server);
    // The close reaches the socket's readiness through the runtime's driver.
    tokio::time::timeout(BOUND, async {
        while conn.is_reusable() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the close was never seen");
}

#[tokio::test]
async fn a_cut_wakes_a_body_waiting_for_bytes_and_ends_it() {
    let (mut conn, mut server, cut) = pair().await;
    let head = exchange(
        &mut conn,
        &mut server,
        &mut request(Method::GET, "/"),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n",
    )
    .await
    .unwrap();
    let mut body = UpstreamBody::new(conn, &head, Empty::<Bytes>::new());
    // In a task of its own, so only the cut's wake-up can poll it again.
    let reading = tokio::spawn(async move { (drain(&mut body).await, body) });
    tokio::time::sleep(Duration::from_millis(50)).await;
    cut.raise();
    let ((data, _, error), mut body) = reading.await.expect("the cut did not wake the body");
    assert_eq!(data, b"first");
    assert!(error.as_ref().is_some_and(Error::is_cut), "{error:?}");
    assert!(body.take_conn().is_none());
    // The server is still there: only the cut ended the body.
    drop(server);
}

#[tokio::test]
async fn an_unusual_reason_phrase_is_kept_for_the_client() {
    let (head, mut body, mut server) = answered(
        Method::GET,
        b"HTTP/1.1 200 All Good\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    let phrase = head.response.extensions().get::<hyper::ext::ReasonPhrase>();
    assert_eq!(phrase.map(|p| p.as_bytes()), Some(&b"All Good"[..]));
    let mut conn = body.take_conn().unwrap();
    let head = exchange(
        &mut conn,
        &mut server,
        &mut request(Method::GET, "/"),
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(head
        .response
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .is_none());
}

#[tokio::test]
async fn a_large_body_is_read_in_growing_pieces_and_the_idle_connection_keeps_a_small_buffer() {
    const LEN: usize = 4 << 20;
    let (_, mut body, mut server) = answered(
        Method::GET,
        format!("HTTP/1.1 200 OK\r\nContent-Length: {LEN}\r\n\r\n").as_bytes(),
    )
    .await;
    let send = async {
        server.write_all(&vec![b'x'; LEN]).await.unwrap();
    };
    let mut largest = 0;
    let mut total = 0;
    let read = async {
        while let Some(frame) = poll_fn(|cx| body.poll_frame(cx)).await {
            let data = frame.unwrap().into_data().unwrap();
            largest = largest.max(data.len());
            total += data.len();
        }
    };
    tokio::time::timeout(BOUND, async { tokio::join!(send, read) })
        .await
        .expect("body timed out");
    assert_eq!(total, LEN);
    assert!(largest > READ_SIZE, "reads never grew past {largest} bytes");
    let conn = body.take_conn().unwrap();
    assert!(
        conn.buf.capacity() <= READ_SIZE,
        "idle buffer of {} bytes",
        conn.buf.capacity()
    );
}

#[tokio::test]
async fn a_stream_waiting_between_events_holds_no_read_buffer() {
    let (_, mut body, mut server) = answered(
        Method::GET,
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .await;
    for i in 0..3 {
        let event = format!("data: token {i}\n\n");
        let chunk = format!("{:x}\r\n{event}\r\n", event.len());
        server.write_all(chunk.as_bytes()).await.unwrap();
        let frame = tokio::time::timeout(BOUND, poll_fn(|cx| body.poll_frame(cx)))
            .await
            .expect("event timed out")
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), event.as_bytes());
        let waiting = poll_fn(|cx| Poll::Ready(body.poll_frame(cx).is_pending())).await;
        assert!(waiting, "event {i}: nothing more was sent");
        assert_eq!(
            body.read_capacity(),
            0,
            "event {i}: buffer kept while waiting"
        );
    }
    server.write_all(b"0\r\n\r\n").await.unwrap();
    let (data, _, failed) = drain(&mut body).await;
    assert!(data.is_empty() && failed.is_none(), "{failed:?}");
}

/// Reads exactly `n` bytes off the server's end.
async fn read_exact(server: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut got = vec![0u8; n];
    server.read_exact(&mut got).await.unwrap();
    got
}

fn with_body<B>(body: B, length: Option<usize>) -> Request<B> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/in")
        .header("host", "up");
    if let Some(n) = length {
        req = req.header("content-length", n);
    }
    req.body(body).unwrap()
}

/// The encoded head is the request's head with the added lines, framed by
/// the body: nothing for an ended body, the length for a sized one, chunked
/// (with its line) for one of unknown length. A usual head is one
/// allocation; a large one grows to hold it all.
#[test]
fn a_request_head_is_encoded_once_with_its_framing() {
    let lines = b"x-forwarded-proto: http\r\n";
    let empty = encode(&request(Method::GET, "/a"), lines);
    assert_eq!(
        empty.bytes,
        b"GET /a HTTP/1.1\r\nhost: up\r\nx-forwarded-for: 10.0.0.1\r\nx-forwarded-proto: http\r\n\r\n"
    );
    assert_eq!(empty.framing, Sending::Done);

    let sized = with_body(Full::new(Bytes::from_static(b"{}")), Some(2));
    let sized = encode(&sized, b"");
    assert_eq!(
        sized.bytes,
        b"POST /in HTTP/1.1\r\nhost: up\r\ncontent-length: 2\r\n\r\n"
    );
    assert_eq!(sized.framing, Sending::Length);

    let frames = futures_util::stream::iter([Ok::<_, std::io::Error>(Frame::data(
        Bytes::from_static(b"x"),
    ))]);
    let unsized_req = with_body(http_body_util::StreamBody::new(frames), None);
    let streamed = encode(&unsized_req, lines);
    assert_eq!(
        streamed.bytes,
        b"POST /in HTTP/1.1\r\nhost: up\r\nx-forwarded-proto: http\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    assert_eq!(streamed.framing, Sending::Chunked);
    for head in [&empty, &sized, &streamed] {
        assert_eq!(head.bytes.capacity(), HEAD_CAPACITY, "{head:?}");
    }

    let mut large = request(Method::GET, "/");
    let value = "v".repeat(100);
    for i in 0..20 {
        let name = HeaderName::try_from(format!("x-field-{i}")).unwrap();
        large
            .headers_mut()
            .insert(name, HeaderValue::from_str(&value).unwrap());
    }
    let head = encode(&large, b"");
    let text = String::from_utf8(head.bytes.clone()).unwrap();
    assert!(text.len() > HEAD_CAPACITY, "{}", text.len());
    assert!(text.starts_with("GET / HTTP/1.1\r\nhost: up\r\n"), "{text}");
    assert!(
        text.ends_with(&format!("x-field-19: {value}\r\n\r\n")),
        "{text}"
    );
    assert_eq!(text.matches("\r\n").count(), 1 + 2 + 20 + 1);
}

#[tokio::test]
async fn a_sized_body_follows_its_head_and_the_added_lines_unchanged() {
    let (mut conn, mut server, _cut) = pair().await;
    let mut req = with_body(Full::new(Bytes::from_static(b"{\"q\":1}")), Some(7));
    let serve = async {
        let head = read_request(&mut server).await;
        let body = read_exact(&mut server, 7).await;
        server
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        (head, body)
    };
    let lines = b"x-forwarded-for: 192.0.2.1\r\n";
    let (sent, (head, body)) =
        tokio::join!(conn.encode_and_round_trip(&mut req, lines, BOUND), serve);
    assert_eq!(
        String::from_utf8(head).unwrap(),
        "POST /in HTTP/1.1\r\nhost: up\r\ncontent-length: 7\r\nx-forwarded-for: 192.0.2.1\r\n\r\n"
    );
    assert_eq!(body, b"{\"q\":1}");
    let head = sent.unwrap();
    assert!(UpstreamBody::new(conn, &head, Empty::<Bytes>::new())
        .take_conn()
        .is_some());
}

#[tokio::test]
async fn a_body_without_a_length_is_sent_in_chunks() {
    let (mut conn, mut server, _cut) = pair().await;
    let frames = futures_util::stream::iter([
        Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"hello"))),
        Ok(Frame::data(Bytes::from_static(b" world!"))),
    ]);
    let mut req = with_body(http_body_util::StreamBody::new(frames), None);
    let serve = async {
        let head = read_request(&mut server).await;
        let body = read_exact(
            &mut server,
            b"5\r\nhello\r\n7\r\n world!\r\n0\r\n\r\n".len(),
        )
        .await;
        server
            .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .unwrap();
        (head, body)
    };
    let lines = b"x-forwarded-proto: http\r\n";
    let (sent, (head, body)) =
        tokio::join!(conn.encode_and_round_trip(&mut req, lines, BOUND), serve);
    let head_text = String::from_utf8(head).unwrap();
    assert!(
        head_text.ends_with("x-forwarded-proto: http\r\ntransfer-encoding: chunked\r\n\r\n"),
        "{head_text}"
    );
    assert_eq!(body, b"5\r\nhello\r\n7\r\n world!\r\n0\r\n\r\n");
    assert!(
        UpstreamBody::new(conn, &sent.unwrap(), Empty::<Bytes>::new())
            .take_conn()
            .is_some()
    );
}

#[tokio::test]
async fn an_answer_before_the_body_ends_is_taken_and_the_connection_dropped() {
    let (mut conn, mut server, _cut) = pair().await;
    // One frame, then a client that never sends the rest.
    let frames = futures_util::stream::iter([Ok::<_, std::io::Error>(Frame::data(
        Bytes::from_static(b"part"),
    ))])
    .chain(futures_util::stream::pending());
    let mut req = with_body(http_body_util::StreamBody::new(frames), Some(1000));
    let serve = async {
        read_request(&mut server).await;
        read_exact(&mut server, 4).await;
        server
            .write_all(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
    };
    let (sent, ()) = tokio::time::timeout(BOUND, async {
        tokio::join!(conn.encode_and_round_trip(&mut req, b"", BOUND), serve)
    })
    .await
    .expect("the early answer was not taken");
    let head = sent.unwrap();
    assert_eq!(head.response.status(), 413);
    // The response ends without waiting for the rest of the request, and
    // the connection, with a request half sent, is not kept.
    let mut body = UpstreamBody::new(conn, &head, req.into_body());
    assert!(body.is_end_stream());
    assert!(body.take_conn().is_none());
}

/// A body whose last bytes mark its end while its next poll does not come
/// back, as a client's body from hyper until hyper closes its side.
struct EndsBeforeClosing(Option<Bytes>);

impl Body for EndsBeforeClosing {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.0.take() {
            Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
            None => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }
}

#[tokio::test]
async fn a_sized_body_is_sent_once_its_last_bytes_are_in() {
    let (mut conn, mut server, _cut) = pair().await;
    let mut req = with_body(
        EndsBeforeClosing(Some(Bytes::from_static(b"{\"q\":1}"))),
        Some(7),
    );
    let serve = async {
        read_request(&mut server).await;
        let body = read_exact(&mut server, 7).await;
        server
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        body
    };
    let (sent, body) = tokio::time::timeout(BOUND, async {
        tokio::join!(conn.encode_and_round_trip(&mut req, b"", BOUND), serve)
    })
    .await
    .expect("the request waited for its body to close");
    assert_eq!(body, b"{\"q\":1}");
    let head = sent.unwrap();
    // The whole request went before its answer: the connection is kept.
    assert!(UpstreamBody::new(conn, &head, Empty::<Bytes>::new())
        .take_conn()
        .is_some());
}

#[tokio::test]
async fn a_client_body_that_fails_is_reported_as_taken() {
    let (mut conn, server, _cut) = pair().await;
    let frames = futures_util::stream::iter([
        Ok(Frame::data(Bytes::from_static(b"part"))),
        Err(std::io::Error::other("client went away")),
    ]);
    let mut req = with_body(http_body_util::StreamBody::new(frames), Some(1000));
    let sent = tokio::time::timeout(BOUND, conn.encode_and_round_trip(&mut req, b"", BOUND))
        .await
        .expect("the failure was not reported");
    match sent {
        Err((Error::Body(e), Reached::Consumed)) => {
            assert_eq!(e.to_string(), "client went away")
        }
        other => panic!("{other:?}"),
    }
    drop(server);
}

/// Sends `req` with `timeout` while the server reads it, waits `delay` and,
/// if given, answers with `answer`; returns the outcome and how long it took.
async fn timed_exchange(
    conn: &mut UpstreamConn,
    server: &mut TcpStream,
    timeout: Duration,
    delay: Duration,
    answer: Option<&[u8]>,
) -> (Result<ResponseHead, (Error, Reached)>, Duration) {
    let mut req = request(Method::GET, "/");
    let started = tokio::time::Instant::now();
    let serve = async {
        read_request(server).await;
        tokio::time::sleep(delay).await;
        if let Some(answer) = answer {
            server.write_all(answer).await.unwrap();
        }
    };
    let sent = async {
        let sent = conn.encode_and_round_trip(&mut req, b"", timeout).await;
        (sent, started.elapsed())
    };
    let (sent, ()) = tokio::time::timeout(BOUND, async { tokio::join!(sent, serve) })
        .await
        .expect("exchange timed out");
    sent
}

#[tokio::test]
async fn the_response_timeout_runs_from_each_exchange_on_a_reused_connection() {
    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
    let ms = Duration::from_millis;
    let (mut conn, mut server, _cut) = pair().await;
    // Answered at once: the timer is left armed for 300 ms from now.
    let (first, _) = timed_exchange(&mut conn, &mut server, ms(300), ms(0), Some(OK)).await;
    assert_eq!(first.unwrap().response.status(), 200);
    tokio::time::sleep(ms(200)).await;
    // Answered 250 ms in: after the first deadline, within its own.
    let (second, took) = timed_exchange(&mut conn, &mut server, ms(2000), ms(250), Some(OK)).await;
    assert_eq!(second.unwrap().response.status(), 200, "after {took:?}");
    // The timer is now armed 2 s out; a shorter timeout still holds.
    let (third, took) = timed_exchange(&mut conn, &mut server, ms(150), ms(1000), None).await;
    assert!(
        matches!(third, Err((Error::TimedOut, Reached::Answered))),
        "{third:?}"
    );
    assert!(
        took >= ms(150) && took < ms(900),
        "timed out after {took:?}"
    );
}

#[tokio::test]
async fn hop_by_hop_fields_stay_with_the_connection() {
    let (head, _, _server) = answered(
        Method::GET,
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nUpgrade: h2c\r\n\
          Proxy-Connection: keep-alive\r\nTrailer: x-t\r\nX-Kept: 1\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    let mut names: Vec<_> = head.response.headers().keys().map(|n| n.as_str()).collect();
    names.sort_unstable();
    // `Trailer` is end-to-end (RFC 9110 §6.6.2): hyper sends only the
    // trailer fields it names.
    assert_eq!(names, ["content-length", "trailer", "x-kept"]);
    // A `Connection` naming another field stays, whole, for the proxy to
    // remove that field too.
    let (head, _, _server) = answered(
        Method::GET,
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nX-Secret: 1\r\nconnection: X-Secret\r\n\
          Content-Length: 0\r\n\r\n",
    )
    .await;
    let headers = head.response.headers();
    let connection: Vec<_> = headers.get_all("connection").iter().collect();
    assert_eq!(connection, ["keep-alive", "X-Secret"]);
    assert!(headers.contains_key("x-secret"));
}

#[tokio::test]
async fn a_length_that_frames_the_body_goes_on_as_its_size_and_others_as_they_came() {
    // It frames the body: the body's exact size carries it, the map does not.
    let (head, body, _server) = answered(
        Method::GET,
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello",
    )
    .await;
    assert!(!head.response.headers().contains_key("content-length"));
    assert_eq!(body.size_hint().exact(), Some(5));
    // It frames nothing: it goes on as it came.
    for (method, answer, length) in [
        (
            Method::HEAD,
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"[..],
            "5000",
        ),
        (
            Method::GET,
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5000\r\n\r\n",
            "5000",
        ),
        (
            Method::GET,
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            "0",
        ),
    ] {
        let (head, _, _server) = answered(method, answer).await;
        let values: Vec<_> = head
            .response
            .headers()
            .get_all("content-length")
            .iter()
            .collect();
        assert_eq!(values, [length], "{answer:?}");
    }
    // Beside a transfer coding it goes nowhere.
    let (head, _, _server) = answered(
        Method::GET,
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert!(!head.response.headers().contains_key("content-length"));
}

#[tokio::test]
async fn responses_on_one_connection_keep_their_own_header_names() {
    let (mut conn, mut server, _cut) = pair().await;
    let answers: [&[u8]; 3] = [
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\nX-B: 2\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-B: 3\r\nX-A: 4\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-C: 5\r\nContent-Length: 0\r\n\r\n",
    ];
    let mut got = Vec::new();
    for answer in answers {
        let head = exchange(
            &mut conn,
            &mut server,
            &mut request(Method::GET, "/"),
            answer,
        )
        .await
        .unwrap();
        let fields: Vec<String> = head
            .response
            .headers()
            .iter()
            .map(|(n, v)| format!("{n}={}", v.to_str().unwrap()))
            .collect();
        got.push(fields.join(" "));
        conn = UpstreamBody::new(conn, &head, Empty::<Bytes>::new())
            .take_conn()
            .expect("reusable");
    }
    assert_eq!(
        got,
        [
            "x-a=1 x-b=2 content-length=0",
            "x-b=3 x-a=4 content-length=0",
            "x-c=5 content-length=0"
        ]
    );
}

#[tokio::test]
async fn the_response_headers_go_into_the_request_map_with_its_capacity() {
    let (mut conn, mut server, _cut) = pair().await;
    let mut req = request(Method::GET, "/");
    let head = encode(&req, b"");
    // As the proxy leaves it once the head is encoded: empty, its room kept.
    req.headers_mut().clear();
    req.headers_mut().reserve(64);
    let capacity = req.headers().capacity();
    let serve = async {
        read_request(&mut server).await;
        server
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx-a: 1\r\n\r\n")
            .await
            .unwrap();
    };
    let (got, ()) = tokio::time::timeout(BOUND, async {
        tokio::join!(conn.round_trip(&mut req, &head, BOUND), serve)
    })
    .await
    .expect("exchange timed out");
    let got = got.unwrap();
    let headers = got.response.headers();
    assert_eq!(headers.len(), 2, "{headers:?}");
    assert_eq!(headers["x-a"], "1");
    assert_eq!(headers["content-length"], "0");
    assert_eq!(
        headers.capacity(),
        capacity,
        "the response's headers are in the request's map"
    );
    assert_eq!(req.headers().capacity(), 0, "the map went to the response");
}
