//! What is open on a pool at the end of its drain, and the cut that closes
//! it.

use std::sync::{Arc, Mutex};

use tokio::task::AbortHandle;

use crate::rt::flag::{Flag, Flags};

/// What is open on a pool at the end of a drain: the tasks holding its
/// tunnels, and its upstream connections.
///
/// Cutting aborts the tasks, which drops their futures and with them the
/// sockets, and raises each connection's flag, which its next read (or the
/// waker of a read in progress) sees. Nothing polls a shared signal, so the
/// cut costs the request path nothing until it happens.
#[derive(Debug, Default)]
pub struct Cutter {
    tasks: Mutex<Vec<AbortHandle>>,
    conns: Flags,
}

impl Cutter {
    /// Adds a task to cut. Handles of tasks that have ended are dropped
    /// whenever the list would otherwise grow.
    pub fn register(&self, task: AbortHandle) {
        let mut tasks = lock(&self.tasks);
        if tasks.len() == tasks.capacity() {
            tasks.retain(|t| !t.is_finished());
        }
        tasks.push(task);
    }

    /// The flag of a new connection, raised at the next cut.
    pub fn flag(&self) -> Arc<Flag> {
        self.conns.register()
    }

    /// Cuts everything registered so far; later ones are not affected.
    pub fn cut(&self) {
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        self.conns.raise_all();
    }

    /// Tasks registered and not seen to end.
    #[cfg(test)]
    fn open(&self) -> usize {
        lock(&self.tasks)
            .iter()
            .filter(|t| !t.is_finished())
            .count()
    }
}

/// A panic while holding one of these locks cannot leave its Vec inconsistent.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cut_aborts_the_tasks_registered_before_it_and_no_later_one() {
        let cutter = Cutter::default();
        let before: Vec<_> = (0..3)
            .map(|_| tokio::spawn(std::future::pending::<()>()))
            .collect();
        for task in &before {
            cutter.register(task.abort_handle());
        }
        assert_eq!(cutter.open(), 3);
        cutter.cut();
        for task in before {
            let err = task.await.expect_err("a cut task ran on");
            assert!(err.is_cancelled(), "{err}");
        }
        let after = tokio::spawn(std::future::pending::<()>());
        cutter.register(after.abort_handle());
        tokio::task::yield_now().await;
        assert!(
            !after.is_finished(),
            "a task registered after the cut was cut"
        );
        assert_eq!(cutter.open(), 1);
        after.abort();
    }

    #[tokio::test]
    async fn handles_of_ended_tasks_do_not_pile_up() {
        let cutter = Cutter::default();
        for _ in 0..1000 {
            let task = tokio::spawn(async {});
            cutter.register(task.abort_handle());
            task.await.unwrap();
        }
        let kept = lock(&cutter.tasks).len();
        assert!(kept <= 4, "{kept} handles kept for tasks that ended");
    }
}
