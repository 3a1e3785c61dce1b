//! `cutover ctl` against a fake admin API: a tiny hyper server on a Unix
//! socket (or loopback TCP) that records each request and answers canned
//! JSON. Checks what ctl sends, what it prints and its exit code.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};

use cutover::ctl::{execute, Outcome};

use crate::support::{ctl_args, within, BOUND};

/// One request the fake admin API received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query.
    target: String,
    host: Option<String>,
    authorization: Option<String>,
    body: Value,
}

/// The fake admin API: answers every request with `status` and `answer`.
struct FakeAdmin {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeAdmin {
    /// Serves on a Unix socket at `path`.
    fn on_socket(path: &std::path::Path, status: StatusCode, answer: Value) -> FakeAdmin {
        let listener = tokio::net::UnixListener::bind(path).expect("bind the fake admin socket");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, log.clone(), status, answer.clone()));
            }
        });
        FakeAdmin { seen }
    }

    /// Serves on `127.0.0.1:0`; also returns the address.
    async fn on_tcp(status: StatusCode, answer: Value) -> (FakeAdmin, std::net::SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake admin listener");
        let addr = listener.local_addr().expect("bound address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, log.clone(), status, answer.clone()));
            }
        });
        (FakeAdmin { seen }, addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("not poisoned").clone()
    }
}

async fn serve<S>(stream: S, log: Arc<Mutex<Vec<Seen>>>, status: StatusCode, answer: Value)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        let log = log.clone();
        let answer = answer.clone();
        async move {
            let header = |name: http::header::HeaderName| {
                req.headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap_or("(not text)").to_owned())
            };
            let mut seen = Seen {
                method: req.method().to_string(),
                target: req.uri().to_string(),
                host: header(http::header::HOST),
                authorization: header(http::header::AUTHORIZATION),
                body: Value::Null,
            };
            let bytes = req.into_body().collect().await.map(|b| b.to_bytes());
            let bytes = bytes.unwrap_or_default();
            if !bytes.is_empty() {
                seen.body = serde_json::from_slice(&bytes).expect("ctl sends JSON bodies");
            }
            log.lock().expect("not poisoned").push(seen);
            let response = Response::builder()
                .status(status)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(answer.to_string())))
                .expect("valid response");
            Ok::<_, Infallible>(response)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Runs ctl over the socket at `socket` with `line` after `--socket PATH`.
async fn ctl_on(socket: &std::path::Path, line: &[&str]) -> Outcome {
    let mut argv = vec!["--socket", socket.to_str().expect("utf-8 temp path")];
    argv.extend_from_slice(line);
    within(BOUND, execute(&ctl_args(&argv))).await
}

fn service(active: &str, from: &str) -> Value {
    let standby = if active == "blue" { "green" } else { "blue" };
    json!({"name": "agent", "active": active, "standby": standby, "generation": 8,
           "weights": {active: 100, standby: 0},
           "last_switch": {"time": "2026-11-22T10:00:00Z", "from": from, "to": active,
                           "reason": "manual", "actor": "socket"},
           "pools": {"blue": {"inflight": 0, "draining": 0, "servers": []},
                     "green": {"inflight": 0, "draining": 0, "servers": []}},
           "canary": null, "watch": null})
}

#[tokio::test]
async fn switch_over_socket_posts_the_body_and_prints_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let answer = json!({"generation": 8, "changed": true, "persisted": true,
                        "service": service("green", "blue")});
    let admin = FakeAdmin::on_socket(&socket, StatusCode::OK, answer);

    let line = [
        "switch",
        "agent",
        "--to",
        "green",
        "--expect-version",
        "2.0",
    ];
    let out = ctl_on(&socket, &line).await;

    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "agent: switched blue → green (generation 8)\n");
    let seen = admin.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].target, "/api/v1/services/agent/switch");
    assert_eq!(seen[0].host.as_deref(), Some("localhost"));
    assert_eq!(
        seen[0].body,
        json!({"to": "green", "expect_version": "2.0"})
    );
}

#[tokio::test]
async fn refused_switch_exits_1_with_code_and_message() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let answer = json!({"error": {"code": "target_unhealthy",
                                  "message": "pool green has no healthy server"}});
    let _admin = FakeAdmin::on_socket(&socket, StatusCode::CONFLICT, answer);

    let out = ctl_on(&socket, &["switch", "agent"]).await;

    assert_eq!(out.code, 1);
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr,
        "cutover ctl: refused: target_unhealthy: pool green has no healthy server\n"
    );
}

#[tokio::test]
async fn wait_drained_exits_1_when_the_pool_is_not_drained() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let answer = json!({"service": "agent", "drained": false, "inflight": 2});
    let admin = FakeAdmin::on_socket(&socket, StatusCode::OK, answer);

    let out = ctl_on(&socket, &["wait-drained", "agent", "--timeout", "2s"]).await;

    assert_eq!(out.code, 1);
    assert_eq!(out.stdout, "agent: not drained, 2 in flight\n");
    assert_eq!(
        admin.seen()[0].target,
        "/api/v1/services/agent/drained?wait=2s"
    );
}

#[tokio::test]
async fn status_with_json_prints_the_answer_as_is() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let answer = json!({"generation": 8, "services": [service("blue", "green")]});
    let _admin = FakeAdmin::on_socket(&socket, StatusCode::OK, answer.clone());

    let out = ctl_on(&socket, &["status", "--json"]).await;

    assert_eq!(out.code, 0);
    let printed: Value = serde_json::from_str(&out.stdout).expect("stdout is JSON");
    assert_eq!(printed, answer);
}

#[tokio::test]
async fn missing_socket_fails_naming_the_path_and_cutover_run() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody-here.sock");

    let out = ctl_on(&socket, &["status"]).await;

    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(&socket.display().to_string()),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("cutover run"), "{}", out.stderr);
    assert!(out.stderr.contains("--socket"), "{}", out.stderr);
}

#[tokio::test]
async fn admin_url_sends_the_bearer_token_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let answer = json!({"generation": 9, "changed": true, "persisted": true,
                        "service": service("blue", "green")});
    let (admin, addr) = within(BOUND, FakeAdmin::on_tcp(StatusCode::OK, answer)).await;

    let url = format!("http://{addr}");
    let token_file = token_file.to_str().unwrap();
    let line = [
        "--admin",
        &url,
        "--token-file",
        token_file,
        "weight",
        "agent",
        "25",
    ];
    let out = within(BOUND, execute(&ctl_args(&line))).await;

    assert_eq!(out.code, 0, "{out:?}");
    let seen = admin.seen();
    assert_eq!(seen[0].method, "PUT");
    assert_eq!(seen[0].target, "/api/v1/services/agent/weights");
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer s3cret"));
    assert_eq!(seen[0].host, Some(addr.to_string()));
    assert_eq!(seen[0].body, json!({"standby": 25}));
}

#[tokio::test]
async fn config_file_names_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let config: PathBuf = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        r#"
[server]
listen = "127.0.0.1:0"

[admin]
socket = "admin.sock"

[[route]]
service = "agent"

[service.agent.pools.blue]
servers = ["127.0.0.1:5000"]
[service.agent.pools.green]
servers = ["127.0.0.1:5001"]
"#,
    )
    .unwrap();
    let answer = json!({"events": [{"time": "2026-11-22T10:00:00Z", "service": "agent",
        "from": "blue", "to": "green", "reason": "manual", "actor": "socket", "detail": {}}]});
    let admin = FakeAdmin::on_socket(&dir.path().join("admin.sock"), StatusCode::OK, answer);

    let line = ["-c", config.to_str().unwrap(), "events", "agent"];
    let out = within(BOUND, execute(&ctl_args(&line))).await;

    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        "2026-11-22T10:00:00Z agent blue → green manual socket\n"
    );
    assert_eq!(admin.seen()[0].target, "/api/v1/events?service=agent");
}
