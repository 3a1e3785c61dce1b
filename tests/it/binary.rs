//! The `cutover` binary: `run` with signals (SIGTERM drains and exits 0,
//! SIGHUP reloads), `check` and its exit codes, `ctl` against a live proxy.
//!
//! A child process cannot report the ports it bound, so these tests (and only
//! these) give it a port that was free a moment ago, and retry if it was
//! taken in between ([`CutoverBinary`]). The admin API is reached over the
//! socket.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::Value;

use crate::support::binary::{cutover_bin, run_cutover, CutoverBinary, Launch};
use crate::support::*;

async fn status_of(socket: &Path, svc: &str) -> Value {
    let reply = socket_call(
        socket,
        Method::GET,
        &format!("/api/v1/services/{svc}"),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()
}

#[tokio::test]
async fn sigterm_lets_the_inflight_request_finish_then_exits_0_and_removes_the_socket() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let body = route(None, "/", "app")
            + &service_with("app", &[blue.addr], &[green.addr], "drain_timeout = \"5s\"");
        let mut proxy = CutoverBinary::start(&body).await;

        let addr = proxy.addr;
        let slow = tokio::spawn(async move { fetch(addr, "/slow?ms=800").await });
        let socket = proxy.socket.clone();
        eventually("the slow request is in flight", || {
            let socket = socket.clone();
            async move { status_of(&socket, "app").await["pools"]["blue"]["inflight"] == 1 }
        })
        .await;

        proxy.signal("TERM");
        eventually("the proxy listener stops accepting", || async move {
            tokio::net::TcpStream::connect(addr).await.is_err()
        })
        .await;
        let ready = socket_call(&proxy.socket, Method::GET, "/readyz", None).await;
        assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "draining");
        let reply = slow.await.expect("slow request task");
        let status = proxy.wait_exit(Duration::from_secs(8)).await;

        assert_eq!(reply.echo().upstream, "blue", "finished after SIGTERM");
        assert_eq!(status.code(), Some(0), "{}", proxy.stderr());
        assert!(!proxy.socket.exists(), "the socket file is removed");
    })
    .await;
}

#[tokio::test]
async fn pinned_to_one_cpu_it_runs_one_worker_unless_the_config_or_the_environment_says_otherwise()
{
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let body = route(None, "/", "app") + &service("app", &[blue.addr], &[green.addr]);
        let one_cpu = Launch::OneCpu(&[]);
        let two_from_env = Launch::OneCpu(&[("TOKIO_WORKER_THREADS", "2")]);
        let cases: [(&str, Launch, &str); 4] = [
            ("", one_cpu, "workers=1 from=\"cores\""),
            ("workers = 2\n", one_cpu, "workers=2 from=\"config\""),
            ("", two_from_env, "workers=2 from=\"TOKIO_WORKER_THREADS\""),
            ("workers = 1\n", two_from_env, "workers=1 from=\"config\""),
        ];
        for (server, start, expected) in cases {
            let mut proxy = CutoverBinary::start_with(server, &body, start).await;
            let reply = fetch(proxy.addr, "/").await;
            assert_eq!(reply.status, StatusCode::OK, "{server:?}");
            proxy.signal("TERM");
            let status = proxy.wait_exit(Duration::from_secs(8)).await;
            let log = proxy.stderr();
            assert_eq!(status.code(), Some(0), "{log}");
            let started = log
                .lines()
                .find(|l| l.contains("runtime started"))
                .unwrap_or_else(|| panic!("no start-up line in {log:?}"));
            assert!(
                started.contains(expected),
                "{server:?} {expected}: {started}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn a_bad_worker_count_in_the_environment_stops_the_start_with_a_clear_error() {
    within(BOUND, async {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join(CONFIG_FILE);
        let unused = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let body = route(None, "/", "app") + &service("app", &[unused], &[unused]);
        std::fs::write(&config, binary_header(free_port(), "") + &body).expect("write config");
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(cutover_bin())
                .arg("run")
                .arg("-c")
                .arg(&config)
                .env("TOKIO_WORKER_THREADS", "lots")
                .output()
                .expect("run cutover")
        })
        .await
        .expect("blocking task");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("TOKIO_WORKER_THREADS=\"lots\"") && stderr.contains("at least 1"),
            "{stderr}"
        );
    })
    .await;
}

#[tokio::test]
async fn sighup_reloads_the_config_and_serves_the_new_route() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let docs = Upstream::start("docs").await;
        let mut proxy = CutoverBinary::start(&blue_green(&blue, &green)).await;
        assert_eq!(fetch(proxy.addr, "/docs/x").await.echo().upstream, "blue");

        proxy.rewrite_config(
            &(blue_green(&blue, &green)
                + &route(None, "/docs", "docs")
                + &service("docs", &[docs.addr], &[docs.addr])),
        );
        proxy.signal("HUP");

        let addr = proxy.addr;
        eventually("the new route is served", || async move {
            fetch(addr, "/docs/x").await.echo().upstream == "docs"
        })
        .await;
        assert_eq!(fetch(proxy.addr, "/").await.echo().upstream, "blue");
        let events = socket_call(&proxy.socket, Method::GET, "/api/v1/events", None).await;
        let events = events.json();
        let reload = events
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["reason"] == "reload")
            .expect("a reload event")
            .clone();
        assert_eq!(reload["actor"], "signal");

        proxy.signal("TERM");
        let status = proxy.wait_exit(Duration::from_secs(8)).await;
        assert_eq!(status.code(), Some(0));
    })
    .await;
}

#[tokio::test]
async fn check_prints_file_line_col_and_exits_1_for_an_invalid_config() {
    within(BOUND, async {
        let dir = tempfile::tempdir().expect("temp dir");
        let bad = dir.path().join("bad.toml");
        std::fs::write(
            &bad,
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[[route]]\nservice = \"nowhere\"\n",
        )
        .unwrap();

        let out = run_cutover(&["check", "-c", bad.to_str().unwrap()]).await;

        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let prefix = format!("{}:5:", bad.display());
        let line = stderr
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {prefix}COL: line in {stderr:?}"));
        let column = line[prefix.len()..].split(':').next().unwrap();
        assert!(column.parse::<u32>().is_ok(), "{line}");
        assert!(line.contains("nowhere"), "{line}");
    })
    .await;
}

#[tokio::test]
async fn check_accepts_the_example_proxy_toml() {
    within(BOUND, async {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy.toml");

        let out = run_cutover(&["check", "-c", example.to_str().unwrap()]).await;

        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    })
    .await;
}

#[tokio::test]
async fn ctl_switch_exits_0_and_a_refused_switch_exits_1() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let dead = closed_port().await;
        let gated = "\n[service.broken.health]\ninterval = \"50ms\"\ntimeout = \"500ms\"\n";
        let body = blue_green(&blue, &green)
            + &route(None, "/broken", "broken")
            + &service_with("broken", &[blue.addr], &[dead], gated);
        let proxy = Cutover::start(&body).await;
        let socket = proxy.socket.to_str().unwrap();

        let ok = run_cutover(&["ctl", "--socket", socket, "switch", "app"]).await;
        let refused = run_cutover(&["ctl", "--socket", socket, "switch", "broken"]).await;

        assert_eq!(
            ok.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        assert!(String::from_utf8_lossy(&ok.stdout).contains("green"));
        assert_eq!(proxy.service("app").await["active"], "green");
        assert_eq!(refused.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("target_unhealthy"), "{stderr}");
        assert_eq!(proxy.service("broken").await["active"], "blue");
    })
    .await;
}

#[tokio::test]
async fn check_reads_the_certificates_and_names_a_missing_file() {
    within(BOUND, async {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("proxy.toml");
        std::fs::write(
            &path,
            "[server.tls]\nlisten = \"127.0.0.1:0\"\ncert = \"nope.pem\"\nkey = \"nope-key.pem\"\n\n[[route]]\nservice = \"app\"\n[service.app.pools.blue]\nservers = [\"127.0.0.1:1\"]\n[service.app.pools.green]\nservers = [\"127.0.0.1:2\"]\n",
        )
        .unwrap();

        let out = run_cutover(&["check", "-c", path.to_str().unwrap()]).await;

        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("server.tls.cert") && stderr.contains("nope.pem"),
            "{stderr}"
        );
    })
    .await;
}

/// Whether the kernel may give process `pid` transparent huge pages: the
/// `THP_enabled` line of its `/proc` status (0 after `PR_SET_THP_DISABLE`).
fn huge_pages_allowed(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .unwrap_or_else(|| panic!("no THP_enabled line in /proc/{pid}/status"));
    line.trim() == "1"
}

#[tokio::test]
async fn neither_the_proxy_nor_ctl_asks_for_transparent_huge_pages() {
    within(BOUND, async {
        // The setting is inherited: a test run that already has huge pages
        // off cannot tell.
        if !huge_pages_allowed(std::process::id()) {
            eprintln!("skipped: transparent huge pages are off for the test process");
            return;
        }
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let mut proxy = CutoverBinary::start(&blue_green(&blue, &green)).await;
        assert!(!huge_pages_allowed(proxy.pid()), "cutover run");

        // `ctl` against an admin API that accepts and never answers: it
        // waits, so its status can be read.
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", admin.local_addr().expect("addr"));
        let mut ctl = std::process::Command::new(cutover_bin())
            .args(["ctl", "--admin", &url, "status"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start cutover ctl");
        let _waiting = admin.accept().await.expect("ctl connects");
        let ctl_allowed = huge_pages_allowed(ctl.id());
        ctl.kill().expect("kill ctl");
        ctl.wait().expect("reap ctl");
        assert!(!ctl_allowed, "cutover ctl");

        proxy.signal("TERM");
        proxy.wait_exit(Duration::from_secs(8)).await;
    })
    .await;
}

/// A thread of process `pid`: its name, CPU ticks (user + system) and nice
/// value, from `/proc/<pid>/task/<tid>/`.
#[derive(Debug)]
struct ThreadStat {
    tid: u32,
    name: String,
    ticks: u64,
    nice: i64,
}

fn threads(pid: u32) -> Vec<ThreadStat> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).expect("list threads");
    dir.filter_map(|entry| {
        let tid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
        let (head, rest) = stat.rsplit_once(')')?;
        let name = head.split_once('(')?.1.to_string();
        // After the name: field 3 (state) is rest[0], so field n is rest[n - 3].
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields[14 - 3].parse().ok()?;
        let stime: u64 = fields[15 - 3].parse().ok()?;
        let nice: i64 = fields[19 - 3].parse().ok()?;
        Some(ThreadStat {
            tid,
            name,
            ticks: utime + stime,
            nice,
        })
    })
    .collect()
}

/// CPU ticks of thread `tid` of process `pid` now.
fn ticks_of(pid: u32, tid: u32) -> u64 {
    threads(pid)
        .into_iter()
        .find(|t| t.tid == tid)
        .unwrap_or_else(|| panic!("thread {tid} of {pid} is gone"))
        .ticks
}

/// Asserts that `what` cost the control thread (`control` ticks) more than
/// twice what it cost the workers' thread (`main` ticks, at least 1).
fn spent_on_control_thread(what: &str, control: u64, main: u64) {
    assert!(
        control > 2 * main.max(1),
        "{what}: the control thread spent {control} ticks, the workers' thread {main}"
    );
}

#[tokio::test]
async fn the_admin_api_and_health_checks_run_on_the_control_thread_below_the_workers_priority() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        // Checks often enough for their CPU to show in clock ticks.
        let checks = "\n[service.app.health]\npath = \"/health\"\ninterval = \"10ms\"\n";
        let body =
            route(None, "/", "app") + &service_with("app", &[blue.addr], &[green.addr], checks);
        // One worker: the runtime runs on the main thread.
        let mut proxy = CutoverBinary::start_with("workers = 1\n", &body, Launch::Plain).await;
        let pid = proxy.pid();
        let before = threads(pid);
        let main = before.iter().find(|t| t.tid == pid).expect("main thread");
        let control = before
            .iter()
            .find(|t| t.name == "cutover-control")
            .unwrap_or_else(|| panic!("no cutover-control thread in {before:?}"));
        assert_eq!(
            control.nice,
            (main.nice + i64::from(cutover::control::priority::NICENESS)).min(19),
            "{before:?}"
        );
        let (main, control) = (main.tid, control.tid);

        // Health checks alone: 200 a second for a second.
        let (main_0, control_0) = (ticks_of(pid, main), ticks_of(pid, control));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (main_1, control_1) = (ticks_of(pid, main), ticks_of(pid, control));
        spent_on_control_thread("health checks", control_1 - control_0, main_1 - main_0);

        // Admin calls (and the checks still running).
        for _ in 0..1_500 {
            let reply = try_socket_call(&proxy.socket, Method::GET, "/api/v1/services/app", None)
                .await
                .expect("admin call");
            assert_eq!(reply.status, StatusCode::OK);
        }
        let (main_2, control_2) = (ticks_of(pid, main), ticks_of(pid, control));
        spent_on_control_thread("admin calls", control_2 - control_1, main_2 - main_1);

        proxy.signal("TERM");
        proxy.wait_exit(Duration::from_secs(8)).await;
    })
    .await;
}
