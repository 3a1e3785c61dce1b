//! A one-way signal that one task can poll cheaply: an atomic flag and the
//! waker of whoever waits on it.
//!
//! Used where a shared `watch` or `Notify` would take a mutex that many tasks
//! share at every poll: each connection owns its own flag, and the shared
//! list of flags is touched only when a connection opens and when the signal
//! is raised (the listener's drain, a pool's cut).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
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

    /// Raises the flag without waking anyone (nobody can be waiting yet).
    pub fn raise_quietly(&self) {
        self.set.store(true, Ordering::Release);
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
