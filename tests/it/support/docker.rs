//! The Docker engine for the tests that need one: the image built from the
//! `cutover` binary under test (`scripts/build-image.sh --fast`), test
//! containers and networks, a compose project, a paced load, and a relay
//! of the engine's socket that a test can cut.
//!
//! Where no engine is reachable a test skips, saying so; under `CI=true` a
//! skip is a failure. The tests that use the engine run one at a time
//! (they share it, and a compose stack publishes the seed's host name).
//! Everything they create carries the label `cutover-it` (compose
//! projects are named `cutover-it-*`), is removed when the test ends,
//! panicking or not, and leftovers of an earlier run are removed before
//! the first test.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use http::StatusCode;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::{AbortHandle, JoinHandle};

use super::binary::cutover_bin;

/// The label every test object carries.
pub const TEST_LABEL: &str = "cutover-it";
/// The compose project prefix of the tests.
const PROJECT_PREFIX: &str = "cutover-it-";
/// The engine's socket.
pub const ENGINE_SOCKET: &str = "/var/run/docker.sock";

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
static CLEANED: Once = Once::new();
static SEQ: AtomicUsize = AtomicUsize::new(0);

/// Runs `docker` (or another program) with `args`; the output.
pub fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(program);
    command.args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Runs `docker args`, which must succeed; its stdout, trimmed.
pub fn docker(args: &[&str]) -> String {
    let out = run("docker", args, &[]);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether an engine answers, and why not.
fn reachable() -> Result<(), String> {
    match Command::new("docker")
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        Err(e) => Err(format!("no docker command: {e}")),
    }
}

/// Removes every test object left by an earlier run.
fn remove_leftovers() {
    let label = format!("label={TEST_LABEL}");
    let ids = docker(&["ps", "-aq", "--filter", &label]);
    let projects = docker(&[
        "ps",
        "-a",
        "--format",
        "{{.ID}} {{.Label \"com.docker.compose.project\"}}",
    ]);
    let mut gone: Vec<&str> = ids.split_whitespace().collect();
    gone.extend(
        projects
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(_, p)| p.starts_with(PROJECT_PREFIX))
            .map(|(id, _)| id),
    );
    if !gone.is_empty() {
        let mut args = vec!["rm", "-f", "-v"];
        args.extend(gone);
        let _ = run("docker", &args, &[]);
    }
    let nets = docker(&["network", "ls", "-q", "--filter", &label]);
    let compose_nets = docker(&["network", "ls", "--format", "{{.Name}}"]);
    for net in nets.split_whitespace().chain(
        compose_nets
            .lines()
            .filter(|n| n.starts_with(PROJECT_PREFIX)),
    ) {
        let _ = run("docker", &["network", "rm", net], &[]);
    }
    let vols = docker(&["volume", "ls", "--format", "{{.Name}}"]);
    for vol in vols.lines().filter(|v| v.starts_with(PROJECT_PREFIX)) {
        let _ = run("docker", &["volume", "rm", "-f", vol], &[]);
    }
    let images = docker(&["images", "-q", "--filter", &label]);
    for image in images.split_whitespace() {
        let _ = run("docker", &["rmi", "-f", image], &[]);
    }
}

/// One test's use of the engine: its images, and every container, network
/// and compose project it makes, all removed on drop.
pub struct Engine {
    /// This test's run id (also the value of its objects' `cutover-it.run`).
    pub run: String,
    /// The image: the `cutover` binary under test, FROM scratch.
    pub image: String,
    networks: Vec<String>,
    projects: Vec<PathBuf>,
    /// Images built by [`Engine::build`].
    built: Vec<String>,
    _one_at_a_time: MutexGuard<'static, ()>,
}

impl Engine {
    /// The engine for test `what`, with its image built; `None` (after
    /// saying why) when no engine is reachable.
    ///
    /// # Panics
    ///
    /// Under `CI=true` when no engine is reachable.
    pub fn start(what: &str) -> Option<Engine> {
        let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(why) = reachable() {
            let message = format!("skipped {what}: no Docker engine is reachable ({why})");
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{message}; under CI=true a skip is a failure");
            }
            eprintln!("{message}");
            return None;
        }
        CLEANED.call_once(remove_leftovers);
        let run = format!(
            "{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let image = format!("cutover-it:{run}");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-image.sh");
        let labels = format!("{TEST_LABEL}=1 {TEST_LABEL}.run={run}");
        let out = run_script(&script, &image, &labels);
        assert!(
            out.status.success(),
            "scripts/build-image.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(Engine {
            run,
            image,
            networks: Vec::new(),
            projects: Vec::new(),
            built: Vec::new(),
            _one_at_a_time: guard,
        })
    }

    /// A new bridge network of this test; its name.
    pub fn network(&mut self) -> String {
        let name = format!("cutover-it-net-{}-{}", self.run, self.networks.len());
        docker(&[
            "network",
            "create",
            "--label",
            TEST_LABEL,
            "--label",
            &format!("{TEST_LABEL}.run={}", self.run),
            &name,
        ]);
        self.networks.push(name.clone());
        name
    }

    /// Builds image `cutover-it-NAME:RUN` of this test from `context` (a
    /// directory holding its Dockerfile); its tag.
    pub fn build(&mut self, name: &str, context: &Path) -> String {
        let tag = format!("cutover-it-{name}:{}", self.run);
        let run_label = format!("{TEST_LABEL}.run={}", self.run);
        let context = context.display().to_string();
        let out = run(
            "docker",
            &[
                "build", "--quiet", "--label", TEST_LABEL, "--label", &run_label, "-t", &tag,
                &context,
            ],
            &[("DOCKER_BUILDKIT", "0")],
        );
        assert!(
            out.status.success(),
            "docker build of {tag} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.built.push(tag.clone());
        tag
    }

    /// Creates container `name` (prefixed with the run id) of `image` on
    /// `network`, running `args...`, without starting it (so that files
    /// can be copied in and networks connected first); its full name.
    pub fn create(&self, name: &str, network: &str, image: &str, args: &[&str]) -> String {
        self.docker_run("create", name, network, &[], image, args)
    }

    /// Starts container `name` (prefixed with the run id) of the test image
    /// on `network` with `labels`, running `cutover args...`; its full name.
    pub fn container(
        &self,
        name: &str,
        network: &str,
        labels: &[(&str, &str)],
        args: &[&str],
    ) -> String {
        self.docker_run("run", name, network, labels, &self.image, args)
    }

    /// As [`Engine::container`], of `image` (one FROM the test image); with
    /// no `args`, the image's command runs.
    pub fn container_of(
        &self,
        image: &str,
        name: &str,
        network: &str,
        labels: &[(&str, &str)],
        args: &[&str],
    ) -> String {
        self.docker_run("run", name, network, labels, image, args)
    }

    /// `docker run -d` or `docker create` of a container of this test.
    fn docker_run(
        &self,
        how: &str,
        name: &str,
        network: &str,
        labels: &[(&str, &str)],
        image: &str,
        args: &[&str],
    ) -> String {
        let full = format!("cutover-it-{}-{name}", self.run);
        let mut cmd: Vec<String> = vec![how.into()];
        if how == "run" {
            cmd.push("-d".into());
        }
        cmd.extend([
            "--name".into(),
            full.clone(),
            "--network".into(),
            network.into(),
            "--label".into(),
            TEST_LABEL.into(),
            "--label".into(),
            format!("{TEST_LABEL}.run={}", self.run),
        ]);
        for (k, v) in labels {
            cmd.push("--label".into());
            cmd.push(format!("{k}={v}"));
        }
        cmd.push(image.into());
        cmd.extend(args.iter().map(|a| a.to_string()));
        let refs: Vec<&str> = cmd.iter().map(String::as_str).collect();
        docker(&refs);
        full
    }

    /// A demo upstream container reporting `pool` and `version`, listening
    /// on `port`.
    pub fn agent(
        &self,
        name: &str,
        network: &str,
        labels: &[(&str, &str)],
        pool: &str,
        version: &str,
        port: u16,
    ) -> String {
        let listen = format!("0.0.0.0:{port}");
        self.container(
            name,
            network,
            labels,
            &[
                "demo-upstream",
                "--listen",
                &listen,
                "--pool",
                pool,
                "--version",
                version,
            ],
        )
    }

    /// `[providers.docker]` reading only this test's containers, at `endpoint`.
    pub fn provider_config(&self, endpoint: &str) -> String {
        format!(
            "[providers.docker]\nendpoint = \"unix://{endpoint}\"\nconstraints = [\"{TEST_LABEL}.run={}\"]\n",
            self.run
        )
    }

    /// Starts `examples/compose/docker-compose.yml` as project
    /// `cutover-it-RUN` with this test's image and the proxy published on a
    /// loopback port chosen by the engine; the project.
    pub fn compose_up(&mut self) -> Compose {
        let project = format!("{PROJECT_PREFIX}{}", self.run);
        let file =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/compose/docker-compose.yml");
        let compose = Compose {
            project,
            file,
            image: self.image.clone(),
        };
        self.projects.push(compose.file.clone());
        let out = compose.run(&["up", "-d"]);
        assert!(
            out.status.success(),
            "docker-compose up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        compose
    }
}

fn run_script(script: &Path, image: &str, labels: &str) -> Output {
    let script = script.display().to_string();
    run(
        "bash",
        &[&script, "--fast", image],
        &[
            ("CUTOVER_BIN", cutover_bin()),
            ("CUTOVER_IMAGE_LABELS", labels),
        ],
    )
}

impl Drop for Engine {
    fn drop(&mut self) {
        let label = format!("label={TEST_LABEL}.run={}", self.run);
        let project = format!("{PROJECT_PREFIX}{}", self.run);
        let mut ids = docker(&["ps", "-aq", "--filter", &label]);
        let compose = format!("label=com.docker.compose.project={project}");
        ids.push(' ');
        ids.push_str(&docker(&["ps", "-aq", "--filter", &compose]));
        if std::thread::panicking() {
            // The failed test's containers say what they saw, before they go.
            for id in ids.split_whitespace() {
                let name = docker(&["inspect", "-f", "{{.Name}} {{.State.Status}}", id]);
                let logs = run("docker", &["logs", "--tail", "60", id], &[]);
                eprintln!(
                    "--- container {name}: its last log lines\n{}{}",
                    String::from_utf8_lossy(&logs.stdout),
                    String::from_utf8_lossy(&logs.stderr)
                );
            }
        }
        let mut args = vec!["rm", "-f", "-v"];
        args.extend(ids.split_whitespace());
        if args.len() > 3 {
            let _ = run("docker", &args, &[]);
        }
        for net in &self.networks {
            let _ = run("docker", &["network", "rm", net], &[]);
        }
        if !self.projects.is_empty() {
            let _ = run(
                "docker",
                &["network", "rm", &format!("{project}_default")],
                &[],
            );
            let _ = run(
                "docker",
                &["volume", "rm", "-f", &format!("{project}_cutover-state")],
                &[],
            );
        }
        for image in &self.built {
            let _ = run("docker", &["rmi", "-f", image], &[]);
        }
        let _ = run("docker", &["rmi", "-f", &self.image], &[]);
    }
}

/// The address of `container` on `network`.
pub fn ip_on(container: &str, network: &str) -> std::net::IpAddr {
    let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    let text = docker(&["inspect", "-f", &format, container]);
    text.parse()
        .unwrap_or_else(|_| panic!("{container} has no address on {network}: {text:?}"))
}

/// A compose project of the example stack.
#[derive(Debug, Clone)]
pub struct Compose {
    /// Its name.
    pub project: String,
    file: PathBuf,
    image: String,
}

impl Compose {
    /// Runs `docker-compose` on the project with `args`.
    pub fn run(&self, args: &[&str]) -> Output {
        let file = self.file.display().to_string();
        let mut all = vec!["-p", &self.project, "-f", &file];
        all.extend(args);
        run(
            "docker-compose",
            &all,
            &[
                ("CUTOVER_IMAGE", &self.image),
                ("BLUE_IMAGE", &self.image),
                ("GREEN_IMAGE", &self.image),
                ("CUTOVER_PUBLISH", "127.0.0.1:0"),
            ],
        )
    }

    /// Where the proxy's port 80 is published.
    pub fn proxy_addr(&self) -> SocketAddr {
        let out = self.run(&["port", "cutover", "80"]);
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        text.parse()
            .unwrap_or_else(|_| panic!("docker-compose port: {text:?}"))
    }

    /// The container of compose service `service` (replica 1).
    pub fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.project)
    }

    /// Runs `cutover ctl args` in the proxy's container.
    pub fn ctl(&self, args: &[&str]) -> Output {
        let container = self.container("cutover");
        let mut all = vec!["exec", container.as_str(), "cutover", "ctl"];
        all.extend(args);
        run("docker", &all, &[])
    }
}

/// Checks `check` until it holds, every 100 ms for at most `bound`; panics
/// naming `what` if it never does (container start-ups and reconnects take
/// longer than [`super::eventually`] waits).
pub async fn eventually_within<F, Fut>(what: &str, bound: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(
            start.elapsed() < bound,
            "never true within {bound:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET /` with `Host: host` on a new connection: the status and the
/// `pool` the demo upstream named; `None` when no answer came.
pub async fn get_host(addr: SocketAddr, host: &str) -> Option<(StatusCode, String)> {
    let mut conn = super::LoadConn::with_host(addr, host);
    let (status, body) = conn.get("/").await.ok()?;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    Some((status, v["pool"].as_str().unwrap_or_default().to_string()))
}

/// Runs `f` (a `docker` or `docker-compose` command) off the runtime's
/// threads, so that the proxy and the load keep running meanwhile.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// What a [`Paced`] load saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// Answers by `pool/version` of the demo upstream.
    pub by_upstream: BTreeMap<String, usize>,
    /// Requests that failed: not a 200, or no answer; with why.
    pub failed: Vec<String>,
    /// Requests answered 200.
    pub ok: usize,
}

/// A steady load: `GET /` with `Host: host` about `rate` times a second
/// over a few keep-alive connections, until stopped.
pub struct Paced {
    seen: Arc<Mutex<Seen>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Paced {
    /// Starts it.
    pub fn start(addr: SocketAddr, host: &str, rate: u32) -> Paced {
        const CONNECTIONS: u32 = 4;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let every = Duration::from_secs(1) * CONNECTIONS / rate;
        let tasks = (0..CONNECTIONS)
            .map(|_| {
                let (seen, host) = (seen.clone(), host.to_string());
                tokio::spawn(async move {
                    let mut conn = super::LoadConn::with_host(addr, &host);
                    let mut tick = tokio::time::interval(every);
                    loop {
                        tick.tick().await;
                        let result = conn.get("/").await;
                        let mut s = seen.lock().expect("seen lock");
                        match result {
                            Ok((StatusCode::OK, body)) => {
                                let v: serde_json::Value =
                                    serde_json::from_slice(&body).unwrap_or_default();
                                let who = format!(
                                    "{}/{}",
                                    v["pool"].as_str().unwrap_or("?"),
                                    v["version"].as_str().unwrap_or("?")
                                );
                                *s.by_upstream.entry(who).or_default() += 1;
                                s.ok += 1;
                            }
                            Ok((status, body)) => s
                                .failed
                                .push(format!("{status}: {}", String::from_utf8_lossy(&body))),
                            Err(e) => s.failed.push(e),
                        }
                    }
                })
            })
            .collect();
        Paced { seen, tasks }
    }

    /// What it saw so far.
    pub fn seen(&self) -> Seen {
        self.seen.lock().expect("seen lock").clone()
    }

    /// Stops it; what it saw.
    pub fn stop(self) -> Seen {
        for t in &self.tasks {
            t.abort();
        }
        self.seen()
    }
}

impl Drop for Paced {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A Unix socket relayed to the engine's, which a test can cut (the engine
/// goes away: connections close, new ones are refused) and restore.
pub struct Relay {
    /// The relay's socket.
    pub path: PathBuf,
    state: Arc<Mutex<RelayState>>,
}

#[derive(Default)]
struct RelayState {
    accept: Option<AbortHandle>,
    conns: Vec<AbortHandle>,
}

impl Relay {
    /// A relay at `path`, relaying.
    pub fn start(path: PathBuf) -> Relay {
        let relay = Relay {
            path,
            state: Arc::default(),
        };
        relay.restore();
        relay
    }

    /// Starts relaying again.
    pub fn restore(&self) {
        let _ = std::fs::remove_file(&self.path);
        let listener = UnixListener::bind(&self.path).expect("bind the relay socket");
        let state = self.state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut engine) = UnixStream::connect(ENGINE_SOCKET).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                    }
                });
                state
                    .lock()
                    .expect("relay lock")
                    .conns
                    .push(conn.abort_handle());
            }
        });
        self.state.lock().expect("relay lock").accept = Some(accept.abort_handle());
    }

    /// Cuts every connection and refuses new ones (the socket is gone).
    pub fn cut(&self) {
        let mut state = self.state.lock().expect("relay lock");
        if let Some(accept) = state.accept.take() {
            accept.abort();
        }
        for conn in state.conns.drain(..) {
            conn.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
    }
}
