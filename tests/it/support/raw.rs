//! Raw sockets, for what a hyper client or server cannot do: a client that
//! writes exact bytes (at once or byte by byte) and reads answers off the
//! socket, and tiny TCP upstreams that misbehave on purpose (garbage
//! instead of HTTP, half answers, resets, silence).
//!
//! Everything is on `127.0.0.1:0`; every read is bounded by the caller's
//! `within`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::client::connect;
use super::upstream::Listening;

/// Pause between the bytes of a byte-by-byte write: pacing, so each byte is
/// its own segment, not a wait for convergence.
pub const BYTE_GAP: Duration = Duration::from_millis(1);

/// `GET /` on HTTP/1.1 with a Host.
pub const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";

/// Writes `bytes` on `stream`: at once, or one byte per segment.
pub async fn write(stream: &mut TcpStream, bytes: &[u8], bytewise: bool) {
    if !bytewise {
        stream.write_all(bytes).await.expect("write");
        return;
    }
    for b in bytes {
        // The server may answer and close before the last byte: that is
        // an answer too, read by the caller.
        if stream.write_all(std::slice::from_ref(b)).await.is_err() {
            return;
        }
        tokio::time::sleep(BYTE_GAP).await;
    }
}

/// One answer as read off the socket.
#[derive(Debug)]
pub struct Answer {
    /// Everything read, lossy UTF-8.
    pub text: String,
    /// The server closed (or reset) the connection after it.
    pub closed: bool,
}

impl Answer {
    /// The status code of the first response, if one came.
    pub fn status(&self) -> Option<u16> {
        let line = self.text.lines().next()?;
        let mut parts = line.split(' ');
        parts.next()?.starts_with("HTTP/1.").then_some(())?;
        parts.next()?.parse().ok()
    }

    /// The body after the first head.
    pub fn body(&self) -> &str {
        self.text
            .split_once("\r\n\r\n")
            .map(|(_, body)| body)
            .unwrap_or("")
    }
}

/// Reads one answer: until a head and its `Content-Length` body are in, or
/// the server closes (then `closed`, with whatever came). A reset counts as
/// a close.
pub async fn read_answer(stream: &mut TcpStream) -> Answer {
    read_answers(stream, 1).await.remove(0)
}

/// Reads `n` pipelined answers, each a head and its `Content-Length` body,
/// however the server's writes were split or joined on the way (two
/// responses often arrive in one read). When the server closes first, the
/// last answer is `closed` and holds whatever came after the complete ones.
pub async fn read_answers(stream: &mut TcpStream, n: usize) -> Vec<Answer> {
    let mut got = Vec::new();
    let mut answers = Vec::new();
    let mut buf = [0u8; 8192];
    while answers.len() < n {
        // Split off every complete answer already in `got`.
        while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if got.len() < end + 4 + length {
                break;
            }
            let rest = got.split_off(end + 4 + length);
            answers.push(Answer {
                text: String::from_utf8_lossy(&got).into_owned(),
                closed: false,
            });
            got = rest;
        }
        if answers.len() >= n {
            break;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => {
                answers.push(Answer {
                    text: String::from_utf8_lossy(&got).into_owned(),
                    closed: true,
                });
                break;
            }
            Ok(k) => got.extend_from_slice(&buf[..k]),
        }
    }
    answers
}

/// Whether the server closes `stream` (EOF or reset) within `bound`;
/// bytes read meanwhile are discarded.
pub async fn closes_within(stream: &mut TcpStream, bound: Duration) -> bool {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(bound, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Whether nothing at all arrives on `stream` for `quiet`: a bounded wait
/// for something that must not happen.
pub async fn silent_for(stream: &mut TcpStream, quiet: Duration) -> bool {
    let mut buf = [0u8; 1];
    tokio::time::timeout(quiet, stream.read(&mut buf))
        .await
        .is_err()
}

/// Sends [`GET`] on `stream` and expects a 200 on it (`what` names the
/// request in the failure).
pub async fn get_ok(stream: &mut TcpStream, what: &str) {
    write(stream, GET, false).await;
    let answer = read_answer(stream).await;
    assert_eq!(answer.status(), Some(200), "{what}: {:?}", answer.text);
}

/// Sends `bytes` on a new connection to `addr` and reads one answer.
pub async fn exchange(addr: SocketAddr, bytes: &[u8], bytewise: bool) -> Answer {
    let mut stream = connect(addr).await;
    write(&mut stream, bytes, bytewise).await;
    read_answer(&mut stream).await
}

/// Reads a request head (up to the empty line) from `stream`; `None` at EOF.
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => got.push(byte[0]),
            _ => return None,
        }
    }
    Some(got)
}

/// A TCP server that runs a handler on each accepted connection and keeps
/// every byte the handlers read.
pub struct RawUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
    listening: Listening,
}

/// What a [`RawUpstream`] connection handler gets: the stream and a sink
/// for the bytes it reads.
pub struct RawConn {
    /// The accepted stream.
    pub stream: TcpStream,
    received: Arc<Mutex<Vec<u8>>>,
}

impl RawConn {
    /// Reads one request head, recording it.
    pub async fn head(&mut self) -> Option<Vec<u8>> {
        let head = read_head(&mut self.stream).await?;
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(&head);
        Some(head)
    }

    /// Reads and records everything until the peer closes.
    pub async fn drain(&mut self) {
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.stream.read(&mut buf).await {
            if n == 0 {
                return;
            }
            self.received
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(&buf[..n]);
        }
    }

    /// Closes with a TCP reset instead of a FIN.
    pub fn reset(self) {
        // A zero linger never blocks: the close sends RST at once.
        let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
        drop(self.stream);
    }
}

impl RawUpstream {
    /// Listens on `127.0.0.1:0` and runs `behave` on every connection.
    pub async fn start<F, Fut>(behave: F) -> RawUpstream
    where
        F: Fn(RawConn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        let listening = Listening::start(move |stream| {
            behave(RawConn {
                stream,
                received: sink.clone(),
            })
        })
        .await;
        RawUpstream {
            addr: listening.addr,
            received,
            listening,
        }
    }

    /// Connections accepted.
    pub fn connections(&self) -> usize {
        self.listening.connections()
    }

    /// Every byte read by the handlers so far, lossy UTF-8.
    pub fn received(&self) -> String {
        let bytes = self.received.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }
}
