//! What the integration tests share: real hyper upstreams, a real cutover
//! (in-process, or the binary as a child process) on `127.0.0.1:0` with its
//! files in a temp dir, clients, and time bounds.
//!
//! Everything listens on loopback ports chosen by the OS (the child
//! process excepted: it gets a port that was free a moment ago) and nothing
//! is written outside a `TempDir`.
//!
//! - [`upstream`]: the one configurable test upstream ([`Upstream`]), its
//!   answers in [`answers`];
//! - [`raw`]: raw-socket clients and upstreams for what a hyper server or
//!   client cannot do (garbage bytes, half answers, exact bytes);
//! - [`config`]: config text: routes, services, the harness header;
//! - [`harness`]: cutover in-process ([`Cutover`]); [`binary`]: the
//!   `cutover` executable as a child process;
//! - [`admin`]: admin calls over TCP and the Unix socket, and `ctl`;
//! - [`browser`]: headless Chromium over WebDriver;
//! - [`client`], [`bodies`], [`traffic`], [`metrics`]: clients, bodies, a
//!   background load and a Prometheus text reader.
//!
//! # Paused time
//!
//! A test whose timers are all on its own runtime (the proxy's request
//! path, the upstreams, the client) pauses the clock with
//! `tokio::time::pause()` once the proxy is up: from then on the clock
//! jumps to the next timer whenever every task waits, so a 300 ms timeout
//! takes no wall time and fires exactly on time. Two things would race
//! such a clock, and are kept out:
//! - the control thread (the control plane, the admin API, health checks,
//!   the end of a drain) runs its own runtime on real time, and starting
//!   the proxy, `/readyz` and stopping it wait on it: the clock is paused
//!   only after [`Cutover::start`], and resumed (`tokio::time::resume()`)
//!   before [`Cutover::stop`];
//! - the kernel's own TCP timers: a small write held back (Nagle) until
//!   the delayed ACK of the one before would arrive only after the paused
//!   clock had run to the next timer, so every test socket has Nagle off
//!   ([`client::connect`], and the upstreams' accepted streams).

pub mod admin;
pub mod answers;
pub mod binary;
pub mod bodies;
pub mod browser;
pub mod client;
pub mod config;
pub mod docker;
pub mod etcd;
pub mod harness;
pub mod metrics;
pub mod raw;
pub mod traffic;
pub mod upstream;

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use admin::*;
pub use answers::RESPONSE_HOP_BY_HOP;
pub use bodies::*;
pub use client::*;
pub use config::*;
pub use harness::{behind_drain, Cutover};
pub use metrics::Scrape;
pub use traffic::*;
pub use upstream::Upstream;

/// The time bound of one test.
pub const BOUND: Duration = Duration::from_secs(10);

/// Runs `fut`, panicking if it takes longer than `dur`.
pub async fn within<F: Future>(dur: Duration, fut: F) -> F::Output {
    match tokio::time::timeout(dur, fut).await {
        Ok(out) => out,
        Err(_) => panic!("test did not finish within its bound of {dur:?}"),
    }
}

/// Checks `check` until it holds, at most `tries` times `every` apart;
/// panics naming `what` if it never does. For convergence only: never a
/// bare sleep in a test.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    const TRIES: u32 = 100;
    const EVERY: Duration = Duration::from_millis(20);
    for _ in 0..TRIES {
        if check().await {
            return;
        }
        tokio::time::sleep(EVERY).await;
    }
    panic!("never true after {TRIES} tries {EVERY:?} apart: {what}");
}

/// Logs to the test's output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds since a process-wide epoch: upstreams stamp streamed events
/// with it so a client can tell when each event was produced.
pub fn now_us() -> u64 {
    epoch().elapsed().as_micros() as u64
}

/// The instant of a [`now_us`] stamp.
pub fn instant_of(us: u64) -> Instant {
    epoch() + Duration::from_micros(us)
}
