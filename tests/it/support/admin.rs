//! Admin API calls, over TCP and over the Unix socket, and `cutover ctl`
//! run in-process.

use std::net::SocketAddr;
use std::path::Path;

use http::header::{self, HeaderValue};
use http::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;

use super::bodies::{empty, full, TestBody};
use super::client::{Client, Reply};

fn admin_request(method: Method, path: &str, body: Option<&Value>) -> Request<TestBody> {
    let mut builder = Request::builder().method(method).uri(path);
    let body = match body {
        Some(v) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            full(v.to_string())
        }
        None => empty(),
    };
    builder.body(body).expect("valid admin request")
}

/// Sends `req` to the admin API at `addr` on a new connection.
pub async fn admin_send(addr: SocketAddr, req: Request<TestBody>) -> Reply {
    Client::http1(addr).await.request(req).await
}

/// `GET path` on the admin API.
pub async fn admin_get(addr: SocketAddr, path: &str) -> Reply {
    admin_send(addr, admin_request(Method::GET, path, None)).await
}

/// `POST path` with a JSON body on the admin API.
pub async fn admin_post(addr: SocketAddr, path: &str, body: Value) -> Reply {
    admin_send(addr, admin_request(Method::POST, path, Some(&body))).await
}

/// `PUT path` with a JSON body on the admin API.
pub async fn admin_put(addr: SocketAddr, path: &str, body: Value) -> Reply {
    admin_send(addr, admin_request(Method::PUT, path, Some(&body))).await
}

/// `DELETE path` on the admin API.
pub async fn admin_delete(addr: SocketAddr, path: &str) -> Reply {
    admin_send(addr, admin_request(Method::DELETE, path, None)).await
}

/// `GET path` with `Authorization: Bearer token`.
pub async fn admin_get_with_token(addr: SocketAddr, path: &str, token: &str) -> Reply {
    let mut req = admin_request(Method::GET, path, None);
    req.headers_mut().insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("token is header-safe"),
    );
    admin_send(addr, req).await
}

/// One admin call over the Unix socket at `socket` (`body`: JSON, if any).
pub async fn socket_call(socket: &Path, method: Method, path: &str, body: Option<Value>) -> Reply {
    try_socket_call(socket, method, path, body)
        .await
        .unwrap_or_else(|e| panic!("admin call over {}: {e}", socket.display()))
}

/// [`socket_call`], with connection failures returned instead of panicking.
pub async fn try_socket_call(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Reply, String> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = admin_request(method, path, body.as_ref());
    req.headers_mut()
        .insert(header::HOST, HeaderValue::from_static("localhost"));
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    Ok(Reply::read(resp).await)
}

/// The arguments of `cutover ctl` followed by `line`.
pub fn ctl_args(line: &[&str]) -> cutover::ctl::CtlArgs {
    use clap::Parser as _;
    let argv = ["cutover", "ctl"].iter().chain(line).copied();
    let cli = cutover::cli::Cli::try_parse_from(argv).expect("valid ctl command line");
    match cli.command {
        cutover::cli::Command::Ctl(args) => args,
        other => panic!("parsed as {other:?}"),
    }
}

/// Runs `cutover ctl` in-process with `line` (the words after `ctl`).
pub async fn ctl(line: &[&str]) -> cutover::ctl::Outcome {
    cutover::ctl::execute(&ctl_args(line)).await
}
