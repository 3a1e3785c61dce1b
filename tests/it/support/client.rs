//! Clients: one HTTP/1.1 or h2c connection that panics on failure, one that
//! reports failures and reconnects (for load), complete answers, the echo
//! an upstream answers, and server-sent events as they arrive.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::bodies::{empty, TestBody};
use super::instant_of;

/// A new connection to `addr` with Nagle off: every write goes out at
/// once, so nothing waits on the kernel's own timers (a small write held
/// for the delayed ACK of the one before), which paused time cannot see.
pub async fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.set_nodelay(true);
    stream
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<TestBody>),
    H2(hyper::client::conn::http2::SendRequest<TestBody>),
}

/// One client connection: HTTP/1.1, or HTTP/2 with prior knowledge (h2c).
pub struct Client {
    addr: SocketAddr,
    sender: Sender,
}

impl Client {
    /// An HTTP/1.1 connection to `addr`.
    pub async fn http1(addr: SocketAddr) -> Client {
        let stream = connect(addr).await;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("http1 handshake");
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Client {
            addr,
            sender: Sender::H1(sender),
        }
    }

    /// An HTTP/2 prior-knowledge (h2c) connection to `addr`.
    pub async fn h2(addr: SocketAddr) -> Client {
        let stream = connect(addr).await;
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2 handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Client {
            addr,
            sender: Sender::H2(sender),
        }
    }

    /// Sends `req` and returns the response head; the body streams.
    ///
    /// HTTP/1.1: a missing Host is set to the address. HTTP/2: an
    /// origin-form URI is made absolute (`http://addr/...`).
    pub async fn send(&mut self, req: Request<TestBody>) -> Response<Incoming> {
        self.try_send(req).await.expect("request")
    }

    /// As [`Client::send`], with the error (a reset stream, a closed
    /// connection) returned rather than a panic.
    pub async fn try_send(
        &mut self,
        mut req: Request<TestBody>,
    ) -> hyper::Result<Response<Incoming>> {
        match &mut self.sender {
            Sender::H1(sender) => {
                if !req.headers().contains_key(header::HOST) {
                    let host = HeaderValue::from_str(&self.addr.to_string()).expect("addr");
                    req.headers_mut().insert(header::HOST, host);
                }
                sender.ready().await?;
                sender.send_request(req).await
            }
            Sender::H2(sender) => {
                if req.uri().authority().is_none() {
                    let pq = req
                        .uri()
                        .path_and_query()
                        .map(|pq| pq.as_str().to_string())
                        .unwrap_or_else(|| "/".into());
                    *req.uri_mut() = format!("http://{}{pq}", self.addr)
                        .parse()
                        .expect("absolute uri");
                }
                *req.version_mut() = Version::HTTP_2;
                sender.ready().await?;
                sender.send_request(req).await
            }
        }
    }

    /// Sends `req` and reads the whole answer.
    pub async fn request(&mut self, req: Request<TestBody>) -> Reply {
        Reply::read(self.send(req).await).await
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> Reply {
        self.request(get(path)).await
    }
}

/// `GET path` with an empty body.
pub fn get(path: &str) -> Request<TestBody> {
    request(Method::GET, path, empty())
}

/// A request of `method` to `path` with `body`.
pub fn request(method: Method, path: &str, body: TestBody) -> Request<TestBody> {
    Request::builder()
        .method(method)
        .uri(path)
        .body(body)
        .expect("valid request")
}

/// `GET path` on a new HTTP/1.1 connection to `addr`.
pub async fn fetch(addr: SocketAddr, path: &str) -> Reply {
    Client::http1(addr).await.get(path).await
}

/// A complete answer.
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The protocol version.
    pub version: Version,
    /// The headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Reply {
    /// Reads `resp` to its end.
    pub async fn read(resp: Response<Incoming>) -> Reply {
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("response body").to_bytes();
        Reply {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        }
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }

    /// The echo the upstream answered.
    pub fn echo(&self) -> Echo {
        assert_eq!(self.status, StatusCode::OK, "body: {:?}", self.text());
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not an echo ({e}): {:?}", self.text()))
    }
}

/// What the upstream's echo saw.
#[derive(Debug, serde::Deserialize)]
pub struct Echo {
    /// The upstream's name.
    pub upstream: String,
    /// The request method.
    pub method: String,
    /// The request path.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// Every header, lowercase name → values in order.
    pub headers: BTreeMap<String, Vec<String>>,
    /// The request body (UTF-8, lossy).
    pub body: String,
}

impl Echo {
    /// The values of header `name`, joined with `, `.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(|v| v.join(", "))
    }

    /// Whether header `name` reached the upstream.
    pub fn has(&self, name: &str) -> bool {
        self.headers.contains_key(&name.to_ascii_lowercase())
    }
}

/// The `upstream` field of a JSON answer: who answered (an echo or a
/// failed answer of the test upstream).
pub fn upstream_of(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.get("upstream")?.as_str().map(str::to_string)
}

/// One server-sent event as a client received it.
#[derive(Debug)]
pub struct Event {
    /// When its last byte arrived.
    pub at: Instant,
    /// Its `event:` name (empty when it has none).
    pub name: String,
    /// Its `data:` line.
    pub data: String,
}

impl Event {
    /// The data as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {:?}", self.data))
    }

    /// How long after the upstream produced it (its `t_us` stamp) it arrived.
    pub fn latency(&self) -> Duration {
        let produced = self.json()["t_us"].as_u64().expect("t_us stamp");
        self.at.saturating_duration_since(instant_of(produced))
    }
}

/// Reads server-sent events from `body` as they arrive, stopping after `max`
/// events (or at the end of the body).
pub async fn read_events(body: &mut Incoming, max: usize) -> Vec<Event> {
    let mut events = Vec::new();
    let mut buf = BytesMut::new();
    while events.len() < max {
        let Some(frame) = body.frame().await else {
            break;
        };
        let frame = frame.expect("event stream frame");
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let at = Instant::now();
        buf.extend_from_slice(&data);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let raw = buf.split_to(end + 2);
            let text = String::from_utf8_lossy(&raw);
            let data = text
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect::<Vec<_>>()
                .join("\n");
            let name = text
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or_default()
                .to_string();
            events.push(Event { at, name, data });
        }
    }
    events
}

/// Writes `request` on a new TCP connection and reads one answer: until
/// its head and `Content-Length` body are in, or the server closes.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = connect(addr).await;
    stream.write_all(request).await.expect("write request");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.expect("read answer");
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if length.is_some_and(|len| answer.len() >= end + 4 + len) {
                break;
            }
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// One HTTP/1.1 keep-alive connection whose requests return errors.
pub struct LoadConn {
    addr: SocketAddr,
    host: String,
    sender: Option<hyper::client::conn::http1::SendRequest<TestBody>>,
}

impl LoadConn {
    /// A client for `addr`; connects at the first request.
    pub fn new(addr: SocketAddr) -> LoadConn {
        LoadConn::with_host(addr, &addr.to_string())
    }

    /// A client for `addr` whose requests carry `Host: host`.
    pub fn with_host(addr: SocketAddr, host: &str) -> LoadConn {
        LoadConn {
            addr,
            host: host.to_string(),
            sender: None,
        }
    }

    /// `GET path`: the status and whole body, or what failed. A failed
    /// connection is replaced at the next call.
    pub async fn get(&mut self, path: &str) -> Result<(StatusCode, Bytes), String> {
        let result = self.try_get(path).await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn try_get(&mut self, path: &str) -> Result<(StatusCode, Bytes), String> {
        if self.sender.is_none() {
            let stream = TcpStream::connect(self.addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let _ = stream.set_nodelay(true);
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        let sender = self.sender.as_mut().expect("connected above");
        sender.ready().await.map_err(|e| format!("ready: {e}"))?;
        let req = Request::get(path)
            .header(header::HOST, self.host.as_str())
            .body(empty())
            .expect("valid request");
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok((status, body))
    }
}
