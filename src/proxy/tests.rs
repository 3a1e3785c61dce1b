//! The statuses hyper writes itself, told from its errors' types and the
//! framing scan, on a real hyper server connection over an in-memory
//! stream.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::conn::{ClientIo, ConnTrack};
use super::hyper_answer;
use crate::metrics::Metrics;

/// Serves `bytes` (then the client's end of the stream) with hyper behind
/// the client stream wrapper, as the listener does with `max_head` as
/// `max_header_bytes`: the status line hyper wrote, and the status
/// `hyper_answer` counts for the error hyper failed the connection with.
async fn refused(bytes: &[u8], max_head: usize) -> (String, Option<u16>) {
    let (client, server) = tokio::io::duplex(1 << 20);
    let track = ConnTrack::new();
    let unrouted = Arc::new(Metrics::new().pool("", ""));
    let io = ClientIo::new(
        server,
        track.clone(),
        Duration::from_secs(10),
        max_head,
        unrouted,
    );
    // Each request is counted on the connection as the listener's service
    // counts it.
    let service = service_fn(|_req| {
        let active = track.start();
        async move {
            drop(active);
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(bytes::Bytes::new())))
        }
    });
    let mut builder = http1::Builder::new();
    builder.max_buf_size(max_head.max(8192));
    let serve = builder.serve_connection(TokioIo::new(io), service);
    let (mut rd, mut wr) = tokio::io::split(client);
    let talk = async {
        wr.write_all(bytes).await.unwrap();
        let mut answer = Vec::new();
        rd.read_to_end(&mut answer).await.unwrap();
        answer
    };
    let (served, answer) =
        tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(serve, talk) })
            .await
            .expect("hyper did not finish");
    let status = served.err().and_then(|e| hyper_answer(&e, &track));
    let line = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    (line, status)
}

#[tokio::test]
async fn what_hyper_answered_is_counted_without_reading_its_error_text() {
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "t".repeat(70_000));
    let many: String = (0..150).map(|i| format!("X-{i}: v\r\n")).collect();
    let cases = [
        (
            "a bad method token",
            "G(T / HTTP/1.1\r\nHost: a\r\n\r\n".to_owned(),
            400,
        ),
        (
            "a bad header name",
            "GET / HTTP/1.1\r\nBad Name: a\r\n\r\n".to_owned(),
            400,
        ),
        (
            "a request target over 65,534 bytes",
            long_target.clone(),
            414,
        ),
        (
            "more than 100 header lines",
            format!("GET / HTTP/1.1\r\n{many}\r\n"),
            431,
        ),
        (
            "an overlong target in a head with too many lines",
            format!("GET /{} HTTP/1.1\r\n{many}\r\n", "t".repeat(70_000)),
            431,
        ),
    ];
    for (what, bytes, status) in cases {
        let (line, counted) = refused(bytes.as_bytes(), 256 * 1024).await;
        assert!(
            line.starts_with(&format!("HTTP/1.1 {status} ")),
            "{what}: hyper wrote {line:?}"
        );
        assert_eq!(counted, Some(status), "{what}");
    }
    // A request hyper serves, then a long target: the flag is the second
    // head's.
    let two = format!("GET / HTTP/1.1\r\nHost: a\r\n\r\n{long_target}");
    let (line, counted) = refused(two.as_bytes(), 256 * 1024).await;
    assert!(line.starts_with("HTTP/1.1 200 "), "{line:?}");
    assert_eq!(counted, Some(414));
}
