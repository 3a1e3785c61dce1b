//! The listener's drain signal, as one flag per client connection.
//!
//! A connection's task polls everything it waits on at each wake-up, that is
//! a few times per request. A shared `watch` would take the one mutex every
//! connection shares at each of those polls (a waiting `Notified` locks its
//! list to check its waker). Here a connection polls only its own flag and
//! its own waker slot; the shared list is touched when a connection opens
//! and once when the drain starts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::flag::Flag;

/// Tells every open connection, once, that the listener drains.
#[derive(Debug, Default)]
pub struct Drain {
    /// Set when the drain has started, under the lock that guards `conns`.
    started: AtomicBool,
    conns: Mutex<Vec<Weak<DrainFlag>>>,
}

/// One connection's view of the drain.
pub type DrainFlag = Flag;

impl Drain {
    /// The flag of a new connection; already set when the drain has started.
    pub fn register(&self) -> Arc<DrainFlag> {
        let flag = Arc::new(DrainFlag::default());
        let mut conns = self.lock();
        if self.started.load(Ordering::Relaxed) {
            flag.raise_quietly();
            return flag;
        }
        if conns.len() == conns.capacity() {
            conns.retain(|c| c.strong_count() > 0);
        }
        conns.push(Arc::downgrade(&flag));
        flag
    }

    /// Sets every connection's flag and wakes its task.
    pub fn start(&self) {
        let conns = {
            let mut conns = self.lock();
            // Under the lock `register` takes: a connection registers
            // either before (and is in the list) or after (and starts set).
            self.started.store(true, Ordering::Relaxed);
            std::mem::take(&mut *conns)
        };
        for flag in conns.iter().filter_map(Weak::upgrade) {
            flag.raise();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Weak<DrainFlag>>> {
        // A panic while holding this lock cannot leave the Vec inconsistent.
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn start_wakes_every_waiting_connection_and_later_ones_start_set() {
        let drain = Arc::new(Drain::default());
        let flags: Vec<_> = (0..3).map(|_| drain.register()).collect();
        let waiting: Vec<_> = flags
            .iter()
            .cloned()
            .map(|f| tokio::spawn(async move { f.raised().await }))
            .collect();
        tokio::task::yield_now().await;
        assert!(flags.iter().all(|f| !f.is_set()));
        drain.start();
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
        let drain = Drain::default();
        for _ in 0..1000 {
            drop(drain.register());
        }
        let kept = drain.lock().len();
        assert!(kept <= 4, "{kept} entries kept for closed connections");
    }
}
