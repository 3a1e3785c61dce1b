//! Traffic through the proxy while the control plane decides: a background
//! load that tallies who answered, and batches of requests on a few
//! connections at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::StatusCode;
use tokio::task::JoinHandle;

use super::client::{get, upstream_of, Client, LoadConn};

/// What a [`Traffic`] run saw.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Answers by upstream name (`"?"` when the body named none).
    pub by_upstream: BTreeMap<String, usize>,
    /// Answers by status code.
    pub by_status: BTreeMap<u16, usize>,
    /// Requests that got no answer (shown in failure messages).
    #[allow(dead_code, reason = "read through Debug in failure messages")]
    pub failures: usize,
}

impl Tally {
    /// Answers from `upstream`.
    pub fn from(&self, upstream: &str) -> usize {
        self.by_upstream.get(upstream).copied().unwrap_or(0)
    }
}

/// Requests sent in the background through the proxy on a few keep-alive
/// connections, a couple of milliseconds apart each, until dropped.
pub struct Traffic {
    tally: Arc<Mutex<Tally>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Traffic {
    /// Starts `connections` loops sending `GET path` to `addr`.
    pub fn start(addr: SocketAddr, connections: usize, path: &str) -> Traffic {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let tasks = (0..connections)
            .map(|_| {
                let tally = tally.clone();
                let path = path.to_string();
                tokio::spawn(async move {
                    let mut conn = LoadConn::new(addr);
                    loop {
                        let result = conn.get(&path).await;
                        record(&tally, result);
                        // Pacing, not waiting for convergence: keeps a
                        // steady flow without starving the proxy of CPU.
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        Traffic { tally, tasks }
    }

    /// What it saw so far.
    pub fn tally(&self) -> Tally {
        self.tally.lock().expect("tally lock").clone()
    }
}

fn record(tally: &Mutex<Tally>, result: Result<(StatusCode, bytes::Bytes), String>) {
    let mut t = tally.lock().expect("tally lock");
    match result {
        Ok((status, body)) => {
            let who = upstream_of(&body).unwrap_or_else(|| "?".into());
            *t.by_upstream.entry(who).or_default() += 1;
            *t.by_status.entry(status.as_u16()).or_default() += 1;
        }
        Err(_) => t.failures += 1,
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Sends `n` requests `GET path` with `headers` to `addr` on `connections`
/// keep-alive connections at once; returns the upstream that answered each
/// (all must be 200).
pub async fn send_many(
    addr: SocketAddr,
    n: usize,
    connections: usize,
    path: &str,
    headers: &[(&str, &str)],
) -> Vec<String> {
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let count = n / connections + usize::from(c < n % connections);
            let path = path.to_string();
            let headers: Vec<(String, String)> = headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            tokio::spawn(async move {
                let mut conn = Client::http1(addr).await;
                let mut seen = Vec::with_capacity(count);
                for _ in 0..count {
                    seen.push(get_upstream(&mut conn, &path, &headers).await);
                }
                seen
            })
        })
        .collect();
    let mut seen = Vec::with_capacity(n);
    for task in tasks {
        seen.extend(task.await.expect("client task"));
    }
    seen
}

/// `GET path` with `headers` on `conn`: the upstream that answered (200 only).
pub async fn get_upstream(conn: &mut Client, path: &str, headers: &[(String, String)]) -> String {
    let mut req = get(path);
    for (name, value) in headers {
        req.headers_mut().insert(
            header::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    let reply = conn.request(req).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    upstream_of(&reply.body).unwrap_or_else(|| panic!("no upstream named in {:?}", reply.text()))
}
