//! Fleet mode with a replica cut off from etcd for real: etcd and three
//! replicas in containers, and one replica taken off etcd's network with
//! `docker network disconnect` while it keeps serving.
//!
//! etcd (Debian's `etcd-server`, in an image FROM scratch holding it and
//! the libraries it links) lives only on the private network `cluster`,
//! unpublished. The replicas are on `cluster` for etcd and on `edge`,
//! where the demo upstreams are and where the test reaches them by
//! container address. The engine isolates its networks from each other,
//! so a replica off `cluster` has no path to etcd; the test also shows it,
//! the replica staying cut off while the others commit and apply.
//!
//! Skips (saying so) where no Docker engine is reachable; under `CI=true`
//! that is a failure.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use crate::support::docker::{
    blocking, docker, eventually_within, get_host, ip_on, run, Engine, Paced,
};
use crate::support::{empty, full, within, Reply, Scrape};

/// The bound of the whole test: three image builds, five containers, a
/// cut and a reconnect, on a busy machine.
const BOUND: Duration = Duration::from_secs(120);
/// Container start-ups and reconnects.
const SLOW: Duration = Duration::from_secs(30);
/// How long a change committed on one replica may take to be applied on
/// another connected one (the SPEC's bound).
const APPLIED: Duration = Duration::from_secs(1);
/// How long the cut-off replica is watched for a way back to etcd: well
/// over one retry (250 ms) and one connect timeout (1 s) of its sessions.
const STAYS_CUT_OFF: Duration = Duration::from_secs(4);
/// The admin token of every replica (the admin listener is not loopback).
const TOKEN: &str = "fleet-docker-token";
/// Where a replica's config, token, state and socket live in its container.
const CONFIG_DIR: &str = "/etc/cutover";
const ADMIN_PORT: u16 = 9090;
const ETCD_PORT: u16 = 2379;
const HOST: &str = "fleet.test";

/// One replica in its container, reached on `edge`.
struct Replica {
    name: String,
    container: String,
    /// The proxy's listener.
    addr: SocketAddr,
    /// The admin listener.
    admin: SocketAddr,
}

impl Replica {
    /// An admin call with the token.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{}: admin call {path}: {e}", self.name))
    }

    /// [`Replica::call`], with a failure to connect or to be answered
    /// returned (the admin listener is not up yet).
    async fn try_call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Reply, String> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.admin.to_string())
            .header(
                header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {TOKEN}")).expect("header-safe token"),
            );
        let body = match body {
            Some(v) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                full(v.to_string())
            }
            None => empty(),
        };
        let stream = tokio::net::TcpStream::connect(self.admin)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        let resp = sender
            .send_request(builder.body(body).expect("a valid request"))
            .await
            .map_err(|e| format!("request: {e}"))?;
        Ok(Reply::read(resp).await)
    }

    /// `GET /api/v1/status`'s `cluster` block.
    async fn cluster(&self) -> Value {
        let reply = self.call(Method::GET, "/api/v1/status", None).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        reply.json()["cluster"].clone()
    }

    /// `cutover_cluster_connected` as `/metrics` has it.
    async fn connected_metric(&self) -> Option<f64> {
        let text = self.call(Method::GET, "/metrics", None).await.text();
        Scrape::parse(&text).get("cutover_cluster_connected", &[])
    }

    async fn switch(&self, to: &str) -> Reply {
        self.call(
            Method::POST,
            "/api/v1/services/app/switch",
            Some(json!({ "to": to })),
        )
        .await
    }

    /// The pool that answers a request on a new connection, if one does.
    async fn routed(&self) -> Option<String> {
        match get_host(self.addr, HOST).await {
            Some((StatusCode::OK, pool)) => Some(pool),
            _ => None,
        }
    }
}

/// The directory of an image FROM scratch holding the `etcd` on `PATH`
/// with the loader and libraries it links, as `scripts/build-image.sh
/// --fast` holds cutover.
fn etcd_context(dir: &Path) {
    let etcd = std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("etcd"))
                .find(|p| p.is_file())
        })
        .expect("etcd on PATH (Debian package etcd-server)");
    let ldd = run("ldd", &[&etcd.display().to_string()], &[]);
    let mut files = vec![etcd.clone()];
    files.extend(
        String::from_utf8_lossy(&ldd.stdout)
            .split_whitespace()
            .filter(|word| word.starts_with('/'))
            .map(PathBuf::from),
    );
    for file in &files {
        let to = dir.join(file.strip_prefix("/").expect("an absolute path"));
        std::fs::create_dir_all(to.parent().expect("a parent")).expect("mkdir");
        std::fs::copy(file, &to).unwrap_or_else(|e| panic!("copy {}: {e}", file.display()));
    }
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY . /\nENTRYPOINT [\"/usr/bin/etcd\"]\n",
    )
    .expect("write the Dockerfile");
    std::fs::write(dir.join(".dockerignore"), "Dockerfile\n").expect("write .dockerignore");
}

/// Starts etcd on `network` only, unpublished; its endpoint there, once it
/// answers.
async fn start_etcd(engine: &mut Engine, network: &str) -> String {
    let context = tempfile::tempdir().expect("temp dir");
    etcd_context(context.path());
    let image = engine.build("etcd", context.path());
    let client = format!("http://0.0.0.0:{ETCD_PORT}");
    let advertise = format!("http://cutover-it-{}-etcd:{ETCD_PORT}", engine.run);
    let container = engine.create(
        "etcd",
        network,
        &image,
        &[
            "--name",
            "m0",
            "--data-dir",
            "/var/lib/etcd",
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &advertise,
            "--listen-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:2380",
            "--initial-cluster",
            "m0=http://127.0.0.1:2380",
            "--log-level",
            "error",
            "--logger",
            "zap",
        ],
    );
    docker(&["start", &container]);
    let at = SocketAddr::new(ip_on(&container, network), ETCD_PORT);
    eventually_within("etcd answers /health", SLOW, || async move {
        let mut conn = crate::support::LoadConn::with_host(at, "etcd");
        matches!(conn.get("/health").await, Ok((StatusCode::OK, body)) if body.starts_with(b"{\"health\":\"true\""))
    })
    .await;
    format!("http://{at}")
}

/// The config of replica `name`: the proxy and the admin API on every
/// address of its container, service `app` on `blue` and `green`.
fn replica_config(name: &str, etcd: &str, blue: SocketAddr, green: SocketAddr) -> String {
    format!(
        "[server]\nlisten = \"0.0.0.0:80\"\n\n\
         [admin]\nlisten = \"0.0.0.0:{ADMIN_PORT}\"\ntoken_file = \"{CONFIG_DIR}/admin.token\"\n\
         socket = \"{CONFIG_DIR}/cutover.sock\"\n\n\
         [state]\npath = \"{CONFIG_DIR}/state.json\"\n\n\
         [cluster]\netcd = [\"{etcd}\"]\nprefix = \"/fleet-docker\"\nname = \"{name}\"\n\
         lease_ttl = \"2s\"\n\n\
         [[route]]\npath_prefix = \"/\"\nservice = \"app\"\n\n\
         [service.app]\nactive = \"blue\"\ndrain_timeout = \"1s\"\n\n\
         [service.app.pools.blue]\nservers = [\"{blue}\"]\n\n\
         [service.app.pools.green]\nservers = [\"{green}\"]\n"
    )
}

/// Starts replica `name` on `edge` and `cluster`.
fn start_replica(engine: &Engine, name: &str, edge: &str, cluster: &str, config: &str) -> Replica {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("proxy.toml"), config).expect("write the config");
    std::fs::write(dir.path().join("admin.token"), TOKEN).expect("write the token");
    let config_file = format!("{CONFIG_DIR}/proxy.toml");
    let container = engine.create(name, edge, &engine.image, &["run", "-c", &config_file]);
    docker(&[
        "cp",
        &format!("{}/.", dir.path().display()),
        &format!("{container}:{CONFIG_DIR}"),
    ]);
    docker(&["network", "connect", cluster, &container]);
    docker(&["start", &container]);
    let ip: IpAddr = ip_on(&container, edge);
    Replica {
        name: name.to_string(),
        container,
        addr: SocketAddr::new(ip, 80),
        admin: SocketAddr::new(ip, ADMIN_PORT),
    }
}

/// Waits until every one of `replicas` routes to `pool`, within `bound`
/// of `since`.
async fn all_route(replicas: &[&Replica], pool: &str, since: Instant, bound: Duration) {
    for r in replicas {
        while r.routed().await.as_deref() != Some(pool) {
            assert!(
                since.elapsed() < bound,
                "{} does not route to {pool} {:?} after the commit",
                r.name,
                since.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_disconnected_from_etcds_network_serves_its_last_state_refuses_changes_and_catches_up_when_reconnected(
) {
    let Some(mut engine) = Engine::start("a replica disconnected from etcd's network") else {
        return;
    };
    within(BOUND, async move {
        let cluster = engine.network();
        let edge = engine.network();
        let etcd = start_etcd(&mut engine, &cluster).await;
        let blue = engine.agent("blue", &edge, &[], "blue", "1", 5000);
        let green = engine.agent("green", &edge, &[], "green", "1", 5001);
        let blue = SocketAddr::new(ip_on(&blue, &edge), 5000);
        let green = SocketAddr::new(ip_on(&green, &edge), 5001);
        let replicas: Vec<Replica> = ["r1", "r2", "r3"]
            .iter()
            .map(|name| {
                let config = replica_config(name, &etcd, blue, green);
                start_replica(&engine, name, &edge, &cluster, &config)
            })
            .collect();
        for r in &replicas {
            eventually_within(
                &format!("{} connected with a leader", r.name),
                SLOW,
                || async {
                    let Ok(reply) = r.try_call(Method::GET, "/api/v1/status", None).await else {
                        return false;
                    };
                    let c = &reply.json()["cluster"];
                    c["connected"] == true && c["leader"].is_string()
                },
            )
            .await;
            eventually_within(&format!("{} routes to blue", r.name), SLOW, || async {
                r.routed().await.as_deref() == Some("blue")
            })
            .await;
            assert_eq!(r.connected_metric().await, Some(1.0));
        }
        let [r1, r2, r3] = &replicas[..] else {
            unreachable!("three replicas")
        };
        let load = Paced::start(r1.addr, HOST, 20);

        // Cut off: r1 is on `edge` only, where etcd is not.
        let (net, name) = (cluster.clone(), r1.container.clone());
        blocking(move || docker(&["network", "disconnect", &net, &name])).await;
        eventually_within("r1's cutover_cluster_connected is 0", SLOW, || async {
            r1.connected_metric().await == Some(0.0)
        })
        .await;
        assert_eq!(r1.cluster().await["connected"], false);
        assert_eq!(r1.routed().await.as_deref(), Some("blue"), "the last state");
        let refused = r1.switch("green").await;
        assert_eq!(
            refused.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            refused.text()
        );
        assert_eq!(refused.json()["error"]["code"], "cluster_unavailable");

        // The rest of the fleet changes without r1.
        let switched = r2.switch("green").await;
        assert_eq!(switched.status, StatusCode::OK, "{}", switched.text());
        all_route(&[r2, r3], "green", Instant::now(), APPLIED).await;
        let cut_since = Instant::now();
        while cut_since.elapsed() < STAYS_CUT_OFF {
            assert_eq!(
                r1.routed().await.as_deref(),
                Some("blue"),
                "r1 cut off still routes to the pool it last knew"
            );
            assert_eq!(r1.connected_metric().await, Some(0.0), "r1 found etcd");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(r1.cluster().await["connected"], false);

        // Reconnected: r1 catches up and is a full member again.
        let (net, name) = (cluster.clone(), r1.container.clone());
        blocking(move || docker(&["network", "connect", &net, &name])).await;
        let back = Instant::now();
        eventually_within("r1 routes to green after the reconnect", SLOW, || async {
            r1.routed().await.as_deref() == Some("green")
        })
        .await;
        let caught_up = back.elapsed();
        eventually_within("r1's cutover_cluster_connected is 1", SLOW, || async {
            r1.connected_metric().await == Some(1.0)
        })
        .await;
        assert_eq!(r1.cluster().await["connected"], true);
        // The switch r1 missed is in its history too.
        let events = r1
            .call(Method::GET, "/api/v1/events?service=app", None)
            .await;
        assert_eq!(events.status, StatusCode::OK, "{}", events.text());
        let events = events.json();
        let switches: Vec<&Value> = events
            .as_array()
            .expect("an events list")
            .iter()
            .filter(|e| e["to"] == "green")
            .collect();
        assert_eq!(switches.len(), 1, "r1's history: {events}");
        eventually_within("r1's load answered by green", SLOW, || async {
            load.seen()
                .by_upstream
                .keys()
                .any(|who| who.starts_with("green/"))
        })
        .await;
        let switched = r1.switch("blue").await;
        assert_eq!(switched.status, StatusCode::OK, "{}", switched.text());
        all_route(&[r1, r2, r3], "blue", Instant::now(), APPLIED).await;

        let seen = load.stop();
        assert!(seen.failed.is_empty(), "r1 failed requests: {seen:?}");
        eprintln!("r1 caught up {caught_up:?} after the reconnect; its load: {seen:?}");
        drop(replicas);
        drop(engine);
    })
    .await;
}
