//! Upgrade requests through the whole proxy, against raw-socket upstreams
//! on loopback: what reaches the client after a 101, and after any other
//! answer to an upgrade request.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::Running;

const BOUND: Duration = Duration::from_secs(10);

const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: app\r\nConnection: upgrade\r\n\
    Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// An upstream that reads one request head, answers `answer` and then
/// echoes what it reads until the client closes.
async fn upstream(answer: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((mut conn, _)) = listener.accept().await else {
            return;
        };
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if conn.read(&mut byte).await.unwrap_or(0) == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let _ = conn.write_all(answer).await;
        let mut buf = [0u8; 1024];
        while let Ok(n @ 1..) = conn.read(&mut buf).await {
            let _ = conn.write_all(&buf[..n]).await;
        }
    });
    addr
}

/// cutover with every path going to `server`, its state in `dir`.
async fn proxy(server: SocketAddr, dir: &tempfile::TempDir) -> Running {
    let state = dir.path().join("state.json");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[state]\npath = \"{}\"\n\n\
         [[route]]\npath_prefix = \"/\"\nservice = \"app\"\n\n\
         [service.app]\nactive = \"blue\"\n\n\
         [service.app.pools.blue]\nservers = [\"{server}\"]\n\n\
         [service.app.pools.green]\nservers = [\"{server}\"]\n",
        state.display()
    );
    let config = crate::config::parse(&text, &dir.path().join("proxy.toml")).unwrap();
    crate::spawn(config).await.unwrap()
}

/// Reads from `stream` until `done` says the bytes so far are complete.
async fn read_until(stream: &mut TcpStream, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !done(&got) {
        match stream.read(&mut buf).await.unwrap() {
            0 => break,
            n => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

/// Whether `bytes` hold a whole response framed by a length or chunked.
fn response_complete(bytes: &[u8]) -> bool {
    let mut lines = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut lines);
    let Ok(httparse::Status::Complete(len)) = resp.parse(bytes) else {
        return false;
    };
    let body = &bytes[len..];
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
    };
    match (header("content-length"), header("transfer-encoding")) {
        (_, Some(te)) if te.ends_with("chunked") => body.ends_with(b"0\r\n\r\n"),
        (Some(n), _) => n.parse().is_ok_and(|n: usize| body.len() >= n),
        _ => false,
    }
}

#[tokio::test]
async fn an_answer_to_an_upgrade_with_a_length_beside_chunked_is_passed_on_whole() {
    tokio::time::timeout(BOUND, async {
        let server = upstream(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n\
              8\r\nAABBBBBB\r\n0\r\n\r\n",
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let running = proxy(server, &dir).await;
        let mut client = TcpStream::connect(running.http_addr).await.unwrap();
        client.write_all(UPGRADE).await.unwrap();
        let got = read_until(&mut client, response_complete).await;
        let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 200 ok\r\n"), "{text}");
        assert!(
            !text.contains("content-length: 2\r\n"),
            "the length the coding overrode reached the client: {text}"
        );
        assert!(text.contains("aabbbbbb"), "the body was cut: {text}");
        drop(client);
        running.shutdown().await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn what_the_upstream_sends_right_behind_its_101_reaches_the_client_first() {
    tokio::time::timeout(BOUND, async {
        let server = upstream(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nhello from upstream;",
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let running = proxy(server, &dir).await;
        let mut client = TcpStream::connect(running.http_addr).await.unwrap();
        client.write_all(UPGRADE).await.unwrap();
        let got = read_until(&mut client, |b| b.ends_with(b"hello from upstream;")).await;
        let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
        assert!(
            text.starts_with("http/1.1 101 switching protocols\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nupgrade: websocket\r\n"), "{text}");
        assert!(text.contains("\r\nconnection: upgrade\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nhello from upstream;"), "{text}");
        // The tunnel carries bytes both ways: the upstream echoes.
        client.write_all(b"ping").await.unwrap();
        let echo = read_until(&mut client, |b| b.ends_with(b"ping")).await;
        assert_eq!(echo, b"ping");
        // The client leaves: the tunnel ends, and the drain has nothing
        // left to wait for.
        drop(client);
        running.shutdown().await;
    })
    .await
    .expect("test timed out");
}
