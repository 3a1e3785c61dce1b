//! What the test [`super::Upstream`] answers, one function per behaviour.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use super::bodies::{channel_body, empty, full, hash_body, PatternBody, TestBody};
use super::now_us;
use super::upstream::State;

/// The hop-by-hop headers `/hop-by-hop` sends (besides `Connection`).
/// It sends `Trailer` too, which is end-to-end (RFC 9110 §6.6.2): it goes
/// on, for hyper to send the trailer fields it names.
pub const RESPONSE_HOP_BY_HOP: [&str; 4] = [
    "x-internal",
    "keep-alive",
    "proxy-authenticate",
    "proxy-connection",
];

/// The number in `key=N` of `uri`'s query.
pub(super) fn query_param(uri: &Uri, key: &str) -> Option<u64> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| v.parse().ok())?
    })
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<TestBody> {
    let mut resp = Response::new(full(format!("{value}\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `/health`: 200 with the version while healthy, else 503.
pub(super) fn health(state: &State) -> Response<TestBody> {
    if state.check_health() {
        let body = serde_json::json!({"status": "ok", "version": state.version});
        json(StatusCode::OK, body)
    } else {
        let body = serde_json::json!({"status": "failing"});
        json(StatusCode::SERVICE_UNAVAILABLE, body)
    }
}

/// A failed answer: `status`, naming the upstream and the path.
pub(super) fn failure(status: StatusCode, state: &State, path: &str) -> Response<TestBody> {
    json(
        status,
        serde_json::json!({"upstream": state.name, "path": path}),
    )
}

/// `/status/NNN`: status NNN (400 if NNN is not a status).
pub(super) fn status(code: &str) -> Response<TestBody> {
    let status = code
        .parse::<u16>()
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::BAD_REQUEST);
    let mut resp = Response::new(full(format!("status {}\n", status.as_u16())));
    *resp.status_mut() = status;
    resp
}

/// The request as JSON: name, method, path, query, version, headers, body.
pub(super) async fn echo(req: Request<Incoming>, state: &State) -> Response<TestBody> {
    let (parts, body) = req.into_parts();
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in &parts.headers {
        headers
            .entry(name.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": e.to_string()}),
            )
        }
    };
    json(
        StatusCode::OK,
        serde_json::json!({
            "upstream": state.name,
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "version": format!("{:?}", parts.version),
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        }),
    )
}

/// `/sse?n=N&ms=M`: N events M ms apart, each stamped when produced.
pub(super) fn sse(req: &Request<Incoming>, state: &State) -> Response<TestBody> {
    let n = query_param(req.uri(), "n").unwrap_or(5);
    let interval = Duration::from_millis(query_param(req.uri(), "ms").unwrap_or(200));
    let name = state.name.clone();
    let (tx, body) = channel_body();
    tokio::spawn(async move {
        for i in 0..n {
            if i > 0 {
                tokio::time::sleep(interval).await;
            }
            let data = serde_json::json!({"upstream": name, "i": i, "t_us": now_us()});
            if tx
                .send(Bytes::from(format!("data: {data}\n\n")))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// `/big?n=BYTES`: the pattern, chunked.
pub(super) fn big(req: &Request<Incoming>) -> Response<TestBody> {
    let n = query_param(req.uri(), "n").unwrap_or(1 << 20);
    Response::new(PatternBody::chunked(n))
}

/// `/upload`: what arrived, hashed, and how it was framed.
pub(super) async fn upload(req: Request<Incoming>) -> Response<TestBody> {
    let header_of = |name: header::HeaderName| {
        req.headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let content_length = header_of(header::CONTENT_LENGTH);
    let transfer_encoding = header_of(header::TRANSFER_ENCODING);
    let (sha256, len) = hash_body(req.into_body()).await;
    json(
        StatusCode::OK,
        serde_json::json!({
            "sha256": sha256,
            "len": len,
            "content_length": content_length,
            "transfer_encoding": transfer_encoding,
        }),
    )
}

/// `/duplex`: each request body chunk back as it arrives.
pub(super) fn duplex(req: Request<Incoming>) -> Response<TestBody> {
    let (tx, body) = channel_body();
    let mut incoming = req.into_body();
    tokio::spawn(async move {
        while let Some(Ok(frame)) = incoming.frame().await {
            if let Ok(data) = frame.into_data() {
                if tx.send(data).await.is_err() {
                    return;
                }
            }
        }
    });
    Response::new(body)
}

/// `/ws`: the handshake, then every text or binary message back.
pub(super) fn websocket(mut req: Request<Incoming>) -> Response<TestBody> {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        let mut resp = Response::new(full("expected a WebSocket handshake\n"));
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        return resp;
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                if ws.send(msg).await.is_err() {
                    return;
                }
            } else if msg.is_close() {
                return;
            }
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("accept key is base64"),
    );
    resp
}

/// `/hop-by-hop`: [`RESPONSE_HOP_BY_HOP`], a `Connection` naming one more,
/// and one end-to-end header.
pub(super) fn hop_by_hop() -> Response<TestBody> {
    let mut resp = Response::new(full("hop\n"));
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("x-internal"));
    h.insert("x-internal", HeaderValue::from_static("secret"));
    h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    h.insert(
        header::PROXY_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"upstream\""),
    );
    h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
    h.insert(header::TRAILER, HeaderValue::from_static("x-checksum"));
    h.insert("x-end-to-end", HeaderValue::from_static("kept"));
    resp
}
