//! `cutover ctl deploy` against the real engine: a release from v1 to v2
//! under load, a deploy of the wrong version, a version that breaks after
//! the switch, the client killed mid-deploy, and the proxy killed
//! mid-deploy; `--abort` at each step in [`abort`].
//!
//! The versions are images FROM the test image (`scripts/build-image.sh`)
//! with another `CUTOVER_DEMO_VERSION` (and, for the one that breaks,
//! `CUTOVER_DEMO_FAIL_AFTER`). Their containers run `cutover demo-upstream`
//! with no version of their own on the command line, so what version a
//! container reports is its image's.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use http::Method;
use serde_json::Value;

use crate::support::admin::try_socket_call;
use crate::support::binary::{cutover_bin, CutoverBinary};
use crate::support::docker::{
    blocking, docker, eventually_within, run, Engine, Paced, Seen, ENGINE_SOCKET, TEST_LABEL,
};
use crate::support::{admin_get, Cutover};

mod abort;
mod canary;

/// Container start-ups and the deploys' steps, on a busy machine.
const SLOW: Duration = Duration::from_secs(30);
const HOST: &str = "deploy.test";
const SERVICE: &str = "app";

/// The labels of the service's first containers: pool blue, checked every
/// 200 ms on `/health`, watched for 10 s after a switch.
fn labels() -> Vec<(&'static str, String)> {
    vec![
        ("traefik.enable", "true".into()),
        ("traefik.http.routers.app.rule", format!("Host(`{HOST}`)")),
        (
            "traefik.http.services.app.loadbalancer.server.port",
            "5000".into(),
        ),
        (
            "traefik.http.services.app.loadbalancer.healthcheck.path",
            "/health".into(),
        ),
        (
            "traefik.http.services.app.loadbalancer.healthcheck.interval",
            "200ms".into(),
        ),
        ("cutover.service", SERVICE.into()),
        ("cutover.pool", "blue".into()),
        ("cutover.rollback.window", "10s".into()),
        ("cutover.rollback.min_requests", "20".into()),
        ("cutover.rollback.max_error_rate", "0.05".into()),
        ("cutover.rollback.cooldown", "0s".into()),
    ]
}

/// Images FROM the test image, removed on drop.
struct Versions {
    tags: Vec<String>,
}

impl Versions {
    /// An image reporting `version` (failing after `fail_after` requests
    /// when given); its tag.
    fn build(&mut self, engine: &Engine, version: &str, fail_after: Option<u32>) -> String {
        let mut lines = format!("ENV CUTOVER_DEMO_VERSION={version}\n");
        if let Some(n) = fail_after {
            lines.push_str(&format!("ENV CUTOVER_DEMO_FAIL_AFTER={n}\n"));
        }
        self.image(engine, &engine.image, &lines)
    }

    /// An image FROM `from` (the test image or one of these) with the
    /// Dockerfile `lines`; its tag. A failed build is tried once more (the
    /// engine, shared, is sometimes busy).
    fn image(&mut self, engine: &Engine, from: &str, lines: &str) -> String {
        let tag = format!("cutover-it-deploy:{}-{}", engine.run, self.tags.len());
        let dockerfile = format!("FROM {from}\n{lines}");
        let run_label = format!("{TEST_LABEL}.run={}", engine.run);
        for attempt in 0..2 {
            let mut child = Command::new("docker")
                .args([
                    "build", "--quiet", "--label", TEST_LABEL, "--label", &run_label, "-t", &tag,
                    "-",
                ])
                .env("DOCKER_BUILDKIT", "0")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("docker build");
            {
                use std::io::Write as _;
                let mut stdin = child.stdin.take().expect("stdin");
                stdin
                    .write_all(dockerfile.as_bytes())
                    .expect("write the Dockerfile");
            }
            let out = child.wait_with_output().expect("docker build");
            if out.status.success() {
                self.tags.push(tag.clone());
                return tag;
            }
            assert!(
                attempt == 0,
                "docker build of {tag} failed twice: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        unreachable!("the loop returns or panics")
    }
}

impl Drop for Versions {
    /// Newest first: an image FROM another one goes before it.
    fn drop(&mut self) {
        for tag in self.tags.iter().rev() {
            let _ = run("docker", &["rmi", "-f", tag], &[]);
        }
    }
}

/// A container of the test image serving the demo upstream on port 5000,
/// with the service's labels.
fn app_container(engine: &Engine, name: &str, net: &str) -> String {
    let labels = labels();
    let refs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    engine.container(
        name,
        net,
        &refs,
        &["demo-upstream", "--listen", "0.0.0.0:5000"],
    )
}

/// `cutover ctl ARGS deploy ...` as a child process, and its stdout
/// lines as they come.
struct CtlChild {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl CtlChild {
    fn start(admin: &[&str], deploy: &[&str]) -> CtlChild {
        let mut child = Command::new(cutover_bin())
            .arg("ctl")
            .args(admin)
            .arg("deploy")
            .arg(SERVICE)
            .args(deploy)
            .env("CUTOVER_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cutover ctl deploy");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        CtlChild {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `text`.
    async fn wait_line(&mut self, text: &str) {
        let start = std::time::Instant::now();
        while !self.seen.iter().any(|l| l.contains(text)) {
            assert!(
                start.elapsed() < SLOW,
                "no line with {text:?} in {:?}",
                self.seen
            );
            match self.lines.try_recv() {
                Ok(line) => self.seen.push(line),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Waits for the exit; its code and every line.
    async fn finish(mut self) -> (i32, String) {
        let status = blocking(move || {
            let status = self.child.wait().expect("wait ctl");
            let lines: Vec<String> = self.seen.into_iter().chain(self.lines.iter()).collect();
            (status, lines)
        })
        .await;
        (status.0.code().unwrap_or(-1), status.1.join("\n"))
    }
}

/// The service's status as the in-process proxy shows it.
async fn service(proxy: &Cutover) -> Value {
    admin_get(proxy.admin, &format!("/api/v1/services/{SERVICE}"))
        .await
        .json()
}

/// The service's events, oldest first.
async fn events(proxy: &Cutover) -> Vec<Value> {
    admin_get(proxy.admin, &format!("/api/v1/events?service={SERVICE}"))
        .await
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The failures seen since `before`.
fn failed_since(load: &Paced, before: &Seen) -> Vec<String> {
    load.seen().failed[before.failed.len()..].to_vec()
}

/// Waits until the load has had `n` more answers from `version`.
async fn answered(load: &Paced, version: &str, n: usize) {
    let count = |load: &Paced| -> usize {
        load.seen()
            .by_upstream
            .iter()
            .filter(|(who, _)| who.ends_with(&format!("/{version}")))
            .map(|(_, n)| n)
            .sum()
    };
    let before = count(load);
    eventually_within(
        &format!("{n} more answers from version {version}"),
        SLOW,
        || async { count(load) >= before + n },
    )
    .await;
}

/// Whether the container `id` runs.
fn running(id: &str) -> bool {
    docker(&["inspect", "-f", "{{.State.Running}}", id]) == "true"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_under_load_release_refuse_the_wrong_version_and_roll_back_a_broken_one() {
    let Some(mut engine) = Engine::start("deploys under load") else {
        return;
    };
    let mut versions = Versions { tags: Vec::new() };
    let v2 = versions.build(&engine, "2", None);
    let v3 = versions.build(&engine, "3", None);
    let broken = versions.build(&engine, "4", Some(10));
    let net = engine.network();
    let old_a = app_container(&engine, "blue-a", &net);
    let old_b = app_container(&engine, "blue-b", &net);
    let proxy = Cutover::start(&engine.provider_config(ENGINE_SOCKET)).await;
    eventually_within("two healthy blue servers reporting v1", SLOW, || async {
        let s = service(&proxy).await;
        let blue = s["pools"]["blue"]["servers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        blue.len() == 2
            && blue
                .iter()
                .all(|s| s["state"] == "healthy" && s["version"] == "v1")
    })
    .await;
    let load = Paced::start(proxy.addr, HOST, 100);
    answered(&load, "v1", 50).await;
    let admin = format!("http://{}", proxy.admin);
    let admin = ["--admin", admin.as_str()];

    // v1 -> v2; the client is killed once the new containers exist: the
    // deploy goes on in the proxy.
    let mut ctl = CtlChild::start(
        &admin,
        &["--image", &v2, "--version", "2", "--keep-old", "30s"],
    );
    ctl.wait_line("create").await;
    let _ = ctl.child.kill();
    eventually_within("the deploy released without its client", SLOW, || async {
        service(&proxy).await["deploy"]["outcome"] == "released"
    })
    .await;
    let s = service(&proxy).await;
    assert_eq!(s["active"], "green", "{s}");
    let green = s["pools"]["green"]["servers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(green.len(), 2, "as many new containers as old: {s}");
    answered(&load, "2", 100).await;
    let followed = CtlChild::start(&admin, &["--follow"]).finish().await;
    assert_eq!(followed.0, 0, "{}", followed.1);
    for step in [
        "remove-idle",
        "create",
        "healthy",
        "switch",
        "watch",
        "drained",
        "released",
    ] {
        assert!(followed.1.contains(step), "step {step} in {}", followed.1);
    }
    let released = load.seen();
    assert!(
        released.failed.is_empty(),
        "failed requests during v1 -> v2: {:?}",
        released.failed
    );
    assert!(
        running(&old_a) && running(&old_b),
        "the old containers run during keep-old"
    );

    // The wrong version: refused before the switch, traffic unchanged. It
    // takes over the keep-old wait: the old v1 containers go.
    let before = load.seen();
    let (code, out) = CtlChild::start(&admin, &["--image", &v3, "--version", "4"])
        .finish()
        .await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("reports version \"3\", expected \"4\""),
        "{out}"
    );
    let s = service(&proxy).await;
    assert_eq!(s["active"], "green");
    assert_eq!(s["deploy"]["outcome"], "refused");
    assert_eq!(s["weights"]["green"], 100);
    for id in s["deploy"]["new_containers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let id = id.as_str().unwrap_or_default().to_string();
        assert!(
            !running(&id),
            "the refused container {id} is stopped: {}; {s}",
            docker(&["inspect", "-f", "{{json .State}}", &id])
        );
    }
    let gone = run("docker", &["inspect", &old_a], &[]);
    assert!(
        !gone.status.success(),
        "the v1 containers were removed as the idle pool's"
    );
    answered(&load, "2", 50).await;
    assert!(
        failed_since(&load, &before).is_empty(),
        "failed requests during the refused deploy: {:?}",
        failed_since(&load, &before)
    );

    // A version that breaks after the switch: rolled back by the watch,
    // first without, then with the old pool's retry of what it fails.
    let mut failed = Vec::new();
    for retry in [false, true] {
        let before = load.seen();
        let mut args = vec!["--image", broken.as_str(), "--version", "4"];
        if !retry {
            args.push("--no-retry");
        }
        let (code, out) = CtlChild::start(&admin, &args).finish().await;
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("rolled_back"), "{out}");
        let s = service(&proxy).await;
        assert_eq!(s["active"], "green", "{s}");
        assert_eq!(s["deploy"]["outcome"], "rolled_back");
        answered(&load, "2", 50).await;
        let n = failed_since(&load, &before).len();
        eprintln!("failed requests while the broken version took traffic (old-pool retry {retry}): {n}\n{out}");
        failed.push(n);
    }
    assert!(
        failed[0] > 0,
        "without the retry users see the broken version's 503s"
    );
    assert_eq!(
        failed[1], 0,
        "with the retry on the old pool users see none"
    );
    let events = events(&proxy).await;
    let deploys: Vec<&Value> = events.iter().filter(|e| e["reason"] == "deploy").collect();
    assert!(deploys
        .iter()
        .any(|e| e["detail"]["image"] == v2 && e["detail"]["version"] == "2"));
    assert!(
        events.iter().any(|e| e["reason"] == "auto_rollback"),
        "{events:?}"
    );
    load.stop();
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_proxy_mid_deploy_leaves_one_pool_serving_all_traffic_after_its_restart() {
    let Some(mut engine) = Engine::start("the proxy killed mid-deploy") else {
        return;
    };
    let mut versions = Versions { tags: Vec::new() };
    let v2 = versions.build(&engine, "2", None);
    let net = engine.network();
    app_container(&engine, "blue", &net);
    let mut proxy = CutoverBinary::start(&engine.provider_config(ENGINE_SOCKET)).await;
    let socket = proxy.socket.clone();
    let status = |socket: std::path::PathBuf| async move {
        try_socket_call(
            &socket,
            Method::GET,
            &format!("/api/v1/services/{SERVICE}"),
            None,
        )
        .await
        .map(|r| r.json())
        .unwrap_or_default()
    };
    eventually_within("blue healthy", SLOW, || async {
        status(socket.clone()).await["pools"]["blue"]["servers"][0]["state"] == "healthy"
    })
    .await;
    let sock = socket.display().to_string();
    let mut ctl = CtlChild::start(&["--socket", &sock], &["--image", &v2, "--version", "2"]);
    ctl.wait_line("create").await;
    proxy.kill_and_restart().await;
    let _ = ctl.child.kill();
    eventually_within("the deploy ended after the restart", SLOW, || async {
        let d = &status(socket.clone()).await["deploy"];
        d["outcome"] == "released" || d["outcome"] == "refused" || d["outcome"] == "rolled_back"
    })
    .await;
    let s = status(socket.clone()).await;
    let expected = if s["deploy"]["outcome"] == "released" {
        "2"
    } else {
        "v1"
    };
    eprintln!(
        "after the restart: {} ({})",
        s["deploy"]["outcome"], s["deploy"]["steps"]
    );
    let idle = if s["active"] == "blue" {
        "green"
    } else {
        "blue"
    };
    assert_eq!(s["weights"][idle], 0, "{s}");
    let load = Paced::start(proxy.addr, HOST, 100);
    answered(&load, expected, 100).await;
    let seen = load.stop();
    assert!(
        seen.failed.is_empty(),
        "failed requests after the restart: {:?}",
        seen.failed
    );
    assert_eq!(
        seen.by_upstream.len(),
        1,
        "one version serves everything: {:?}",
        seen.by_upstream
    );
}
