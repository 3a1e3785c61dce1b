//! The `cutover` executable: `cutover run` as a child process on a config in
//! a temp dir (signals, stderr, exit status, pinned to one CPU), and one-shot
//! commands (`check`, `ctl`) run to their end.
//!
//! A child process cannot report the ports it bound, so it gets a port that
//! was free a moment ago, and is started again on another if that one was
//! taken in between. Its admin API is reached over the socket.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use tempfile::TempDir;

use super::admin::try_socket_call;
use super::config::{binary_header, free_port, CONFIG_FILE, SOCKET_FILE};

/// The path of the `cutover` binary under test.
pub fn cutover_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cutover")
}

/// Runs the `cutover` binary with `args` to its end (in a blocking task).
pub async fn run_cutover(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(cutover_bin())
            .args(&args)
            .env("CUTOVER_LOG", "warn")
            .output()
            .expect("run the cutover binary")
    })
    .await
    .expect("blocking task")
}

/// How `cutover run` is started.
#[derive(Debug, Clone, Copy)]
pub enum Launch {
    /// As is, logging warnings.
    Plain,
    /// Allowed to run on CPU 0 only (`taskset`), logging its own start-up
    /// at info level, with these variables added to its environment (and
    /// `TOKIO_WORKER_THREADS` removed unless they set it).
    OneCpu(&'static [(&'static str, &'static str)]),
}

impl Launch {
    fn command(self) -> Command {
        match self {
            Launch::Plain => {
                let mut command = Command::new(cutover_bin());
                command.env("CUTOVER_LOG", "warn");
                command
            }
            Launch::OneCpu(env) => {
                let mut command = Command::new("taskset");
                command
                    .arg("-c")
                    .arg("0")
                    .arg(cutover_bin())
                    .env("CUTOVER_LOG", "warn,cutover::cli=info")
                    .env_remove("TOKIO_WORKER_THREADS")
                    .envs(env.iter().copied());
                command
            }
        }
    }

    fn spawn(self, config: &Path) -> Child {
        self.command()
            .arg("run")
            .arg("-c")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cutover run")
    }
}

/// A `cutover run` child process on `DIR/proxy.toml`, killed if the test
/// ends before it exits.
pub struct CutoverBinary {
    /// The proxy listener.
    pub addr: SocketAddr,
    /// The admin socket.
    pub socket: PathBuf,
    /// `DIR/proxy.toml`.
    pub config: PathBuf,
    child: Child,
    _dir: TempDir,
}

impl CutoverBinary {
    /// Starts `cutover run` on [`binary_header`] + `body`; returns once
    /// `/readyz` answers 200 over the socket.
    pub async fn start(body: &str) -> CutoverBinary {
        CutoverBinary::start_with("", body, Launch::Plain).await
    }

    /// [`CutoverBinary::start`] with `server` lines in `[server]`, started
    /// as `launch` says.
    pub async fn start_with(server: &str, body: &str, launch: Launch) -> CutoverBinary {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join(CONFIG_FILE);
        let socket = dir.path().join(SOCKET_FILE);
        for _attempt in 0..5 {
            let port = free_port();
            std::fs::write(&config, binary_header(port, server) + body).expect("write config");
            let mut child = launch.spawn(&config);
            for _ in 0..250 {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    // Most likely the port was taken in between: try another.
                    eprintln!("cutover exited early ({status}): {}", stderr_of(&mut child));
                    break;
                }
                let ready = try_socket_call(&socket, Method::GET, "/readyz", None).await;
                if ready.is_ok_and(|r| r.status == StatusCode::OK) {
                    return CutoverBinary {
                        addr: SocketAddr::from(([127, 0, 0, 1], port)),
                        socket,
                        config,
                        child,
                        _dir: dir,
                    };
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("cutover run never became ready");
    }

    /// Replaces the config file with [`binary_header`] (same port, no more
    /// `[server]` lines) + `body`, for a reload.
    pub fn rewrite_config(&self, body: &str) {
        let text = binary_header(self.addr.port(), "") + body;
        std::fs::write(&self.config, text).expect("rewrite config");
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `"TERM"`, `"HUP"`) to this process only.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// Kills the process with SIGKILL (no drain, no last write), then
    /// starts `cutover run` again on the same config and state; returns
    /// once `/readyz` answers 200.
    pub async fn kill_and_restart(&mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
        self.child = Launch::Plain.spawn(&self.config);
        for _ in 0..500 {
            let ready = try_socket_call(&self.socket, Method::GET, "/readyz", None).await;
            if ready.is_ok_and(|r| r.status == StatusCode::OK) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("cutover run never became ready after its restart");
    }

    /// Waits (at most `bound`) for the process to exit.
    pub async fn wait_exit(&mut self, bound: Duration) -> ExitStatus {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "cutover did not exit within {bound:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What it wrote to stderr (after it exited).
    pub fn stderr(&mut self) -> String {
        stderr_of(&mut self.child)
    }
}

fn stderr_of(child: &mut Child) -> String {
    use std::io::Read as _;
    let mut text = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut text);
    }
    text
}

impl Drop for CutoverBinary {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
