//! A one-way signal that one task can poll cheaply: an atomic flag and the
//! waker of whoever waits on it.
//!
//! Used where a shared `watch` or `Notify` would take a mutex that many tasks
//! share at every poll: each task owns its own flag, and the shared list of
//! flags ([`Flags`]) is touched only when a task registers and when the
//! signal is raised (the listener's drain, a pool's cut).
//!
//! A client connection's task polls everything it waits on at each wake-up,
//! that is a few times per request; a waiting `Notified` would lock the
//! list all connections share at each of those polls.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Poll, Waker};

use futures_util::task::AtomicWaker;

/// One task's flag.
#[derive(Debug, Default)]
pub struct Flag {
    set: AtomicBool,
    waker: AtomicWaker,
}

impl Flag {
    /// Whether the flag has been raised.
    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// Raises the flag and wakes the task waiting on it, if any.
    pub fn raise(&self) {
        self.set.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Whether the flag is raised; when not, `waker` is woken once it is.
    pub fn poll_set(&self, waker: &Waker) -> bool {
        if self.is_set() {
            return true;
        }
        self.waker.register(waker);
        // Checked again: `raise` may have run before the waker was in.
        self.is_set()
    }

    /// Resolves once the flag is raised.
    pub fn raised(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            if self.poll_set(cx.waker()) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

/// The flags of many tasks, raised together: the listener's drain, a pool's
/// cut. Touched when a task registers and when the flags are raised, never
/// while a task waits.
#[derive(Debug, Default)]
pub struct Flags {
    state: Mutex<Registered>,
}

#[derive(Debug, Default)]
struct Registered {
    flags: Vec<Weak<Flag>>,
    /// Raised for good: a flag registered now starts raised.
    for_good: bool,
}

impl Flags {
    /// A new task's flag. Flags of tasks that have ended are dropped
    /// whenever the list would otherwise grow.
    pub fn register(&self) -> Arc<Flag> {
        let flag = Arc::new(Flag::default());
        let mut state = self.lock();
        if state.for_good {
            // Nobody can be waiting on it yet.
            flag.set.store(true, Ordering::Release);
            return flag;
        }
        if state.flags.len() == state.flags.capacity() {
            state.flags.retain(|f| f.strong_count() > 0);
        }
        state.flags.push(Arc::downgrade(&flag));
        flag
    }

    /// Raises every flag registered so far; later ones are not affected.
    pub fn raise_all(&self) {
        let flags = std::mem::take(&mut self.lock().flags);
        for flag in flags.iter().filter_map(Weak::upgrade) {
            flag.raise();
        }
    }

    /// Raises every flag, and every one registered from now on.
    pub fn raise_for_good(&self) {
        // Under the lock `register` takes: a task registers either before
        // (and is in the list) or after (and starts raised).
        self.lock().for_good = true;
        self.raise_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registered> {
        // A panic while holding this lock cannot leave the list inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn start_wakes_every_waiting_connection_and_later_ones_start_set() {
        let drain = Arc::new(Flags::default());
        let flags: Vec<_> = (0..3).map(|_| drain.register()).collect();
        let waiting: Vec<_> = flags
            .iter()
            .cloned()
            .map(|f| tokio::spawn(async move { f.raised().await }))
            .collect();
        tokio::task::yield_now().await;
        assert!(flags.iter().all(|f| !f.is_set()));
        drain.raise_for_good();
        for w in waiting {
            tokio::time::timeout(Duration::from_secs(1), w)
                .await
                .expect("a waiting connection was not woken")
                .unwrap();
        }
        assert!(drain.register().is_set());
    }

    #[test]
    fn closed_connections_are_not_kept() {
        let drain = Flags::default();
        for _ in 0..1000 {
            drop(drain.register());
        }
        let kept = drain.lock().flags.len();
        assert!(kept <= 4, "{kept} entries kept for closed connections");
    }
}
