//! A real etcd (Debian's `etcd-server`), one member on loopback ports with
//! its data in a temp dir, that a test can kill and start again on the
//! same ports and data.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::config::free_port;

/// How long etcd may take to answer after it starts.
const ETCD_STARTS: Duration = Duration::from_secs(10);

/// One etcd member.
pub struct Etcd {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    name: String,
    client: SocketAddr,
    peer: u16,
    /// `--initial-cluster`: every member's name and peer URL.
    initial: String,
    dir: TempDir,
    child: Option<Child>,
}

impl Etcd {
    /// Starts a one-member etcd; returns once it answers.
    pub async fn start() -> Etcd {
        Etcd::cluster(1).await.remove(0)
    }

    /// Starts an etcd cluster of `n` members; returns once each answers
    /// (which takes a quorum).
    pub async fn cluster(n: usize) -> Vec<Etcd> {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<Etcd> = ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| {
                let client = SocketAddr::from(([127, 0, 0, 1], *client));
                Etcd {
                    endpoint: format!("http://{client}"),
                    name: format!("m{i}"),
                    client,
                    peer: *peer,
                    initial: initial.clone(),
                    dir: tempfile::tempdir().expect("temp dir"),
                    child: None,
                }
            })
            .collect();
        for m in &mut members {
            m.spawn();
        }
        for m in &members {
            m.wait_healthy().await;
        }
        members
    }

    /// Kills the member (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the member again on the same ports and data; returns once it
    /// answers.
    pub async fn resume(&mut self) {
        self.spawn();
        self.wait_healthy().await;
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "etcd is running");
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let child = Command::new("etcd")
            .args([
                "--name",
                &self.name,
                "--data-dir",
                &self.dir.path().join("data").display().to_string(),
                "--listen-client-urls",
                &self.endpoint,
                "--advertise-client-urls",
                &self.endpoint,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &self.initial,
                "--log-level",
                "error",
                "--logger",
                "zap",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd (Debian package etcd-server)");
        self.child = Some(child);
    }

    async fn wait_healthy(&self) {
        let start = Instant::now();
        while !self.healthy().await {
            assert!(
                start.elapsed() < ETCD_STARTS,
                "etcd did not answer within {ETCD_STARTS:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether `/health` answers `"health":"true"`.
    async fn healthy(&self) -> bool {
        let Ok(Ok(mut stream)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(self.client),
        )
        .await
        else {
            return false;
        };
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let request = "GET /health HTTP/1.1\r\nHost: etcd\r\nConnection: close\r\n\r\n";
        if stream.write_all(request.as_bytes()).await.is_err() {
            return false;
        }
        let mut answer = String::new();
        let read = tokio::time::timeout(
            Duration::from_millis(500),
            stream.read_to_string(&mut answer),
        )
        .await;
        read.is_ok() && answer.contains("\"health\":\"true\"")
    }

    /// A client of this member.
    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([&self.endpoint], None)
            .await
            .expect("etcd client")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}
