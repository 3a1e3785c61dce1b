//! The control thread: a current-thread runtime on a thread of its own, at a
//! lower priority ([`super::priority`]), for everything that is not a
//! request: the admin API, health checks, health reports and passive
//! failures, canary analysis, reloads, and the tasks those start (a drain's
//! end, a retry after a passive failure).
//!
//! None of it then takes a turn of the workers' event loop: a switch, a
//! health check (a new connection each) or a `/metrics` scrape is work the
//! scheduler fits between requests on a busy core, at the lower priority,
//! and the workers only see the snapshot change (docs/performance.md has
//! what each cost the workers when it ran beside them).

use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// How long the thread waits, once stopped, for its tasks to end (they are
/// cancelled at their next await).
const STOP_TASKS: Duration = Duration::from_secs(1);

/// The running control thread; stopping it (or dropping this) ends it and
/// every task on it.
#[derive(Debug)]
pub struct ControlThread {
    handle: Handle,
    /// Tells the thread to stop, and hears that it has; `None` when the
    /// control tasks run on the caller's runtime.
    thread: Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>,
}

impl ControlThread {
    /// Starts the thread. If no runtime can be made for it, the control
    /// tasks run on the caller's runtime instead, with a warning.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime, or when the OS cannot start a
    /// thread (as `std::thread::spawn`).
    pub fn start() -> ControlThread {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::warn!(error = %e, "no runtime for the control thread: the admin API and health checks run beside the requests");
                return ControlThread {
                    handle: Handle::current(),
                    thread: None,
                };
            }
        };
        let handle = runtime.handle().clone();
        let (stop, stop_rx) = oneshot::channel::<()>();
        let (done, stopped) = oneshot::channel();
        std::thread::Builder::new()
            .name("cutover-control".into())
            .spawn(move || {
                super::priority::lower("control");
                // Runs the tasks spawned on `handle` until told to stop (or
                // until the `ControlThread` is dropped).
                let _ = runtime.block_on(stop_rx);
                runtime.shutdown_timeout(STOP_TASKS);
                let _ = done.send(());
            })
            .expect("start the control thread");
        ControlThread {
            handle,
            thread: Some((stop, stopped)),
        }
    }

    /// The runtime to spawn control tasks on.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Ends the thread and every task on it; resolves once they are gone.
    pub async fn stop(self) {
        if let Some((stop, stopped)) = self.thread {
            let _ = stop.send(());
            let _ = stopped.await;
        }
    }
}
