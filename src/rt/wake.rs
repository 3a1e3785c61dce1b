//! Polling a rarely ready future only when it woke its task.
//!
//! A connection's task waits on its connection and, beside it, on a timer
//! that rarely fires (the idle timeout). Every wake-up of the task, one or
//! more per request, polls everything it waits on, and polling a timer
//! registers the task's waker with it again, work done for nothing at
//! almost every wake-up. [`OwnWaker`] gives such a future a waker of its
//! own: the future is polled only when that waker fired since its last
//! poll (or at its first), and a wake through it wakes the task.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// A waker of one future's own, forwarding to the task that polls it.
#[derive(Debug)]
pub struct OwnWaker {
    woken: Arc<Woken>,
    waker: Waker,
}

#[derive(Debug)]
struct Woken {
    /// The future asked to be polled (set at first, and after it is ready).
    flag: AtomicBool,
    /// The task polling it.
    task: AtomicWaker,
}

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.flag.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Default for OwnWaker {
    fn default() -> OwnWaker {
        let woken = Arc::new(Woken {
            flag: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        OwnWaker {
            waker: Waker::from(woken.clone()),
            woken,
        }
    }
}

impl OwnWaker {
    /// Has the next [`poll`](OwnWaker::poll) call its future whether or not
    /// it woke (it was changed from outside, as a timer that was moved).
    pub fn mark(&self) {
        self.woken.flag.store(true, Ordering::Release);
    }

    /// Calls `poll` with this waker when it fired since the last call (or
    /// at the first, or after `poll` was ready); else `Pending` without
    /// calling it. Either way, a later wake wakes the task of `cx`.
    pub fn poll<T>(
        &self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        self.woken.task.register(cx.waker());
        if !self.woken.flag.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let ready = poll(&mut Context::from_waker(&self.waker));
        if ready.is_ready() {
            self.woken.flag.store(true, Ordering::Release);
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::future::Future;
    use std::time::Duration;

    /// A future that counts its polls and is ready once `after` passed.
    fn counted(polls: &Cell<u32>, after: Duration) -> impl Future<Output = ()> + '_ {
        let mut sleep = Box::pin(tokio::time::sleep(after));
        std::future::poll_fn(move |cx| {
            polls.set(polls.get() + 1);
            sleep.as_mut().poll(cx)
        })
    }

    #[tokio::test(start_paused = true)]
    async fn the_future_is_polled_only_when_it_woke_and_its_wake_reaches_the_task() {
        let own = OwnWaker::default();
        let polls = Cell::new(0);
        let mut timer = Box::pin(counted(&polls, Duration::from_millis(300)));
        let (notify_tx, mut notify_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut woken_by_others = 0;
        let done = std::future::poll_fn(|cx| {
            // Something else wakes the task often, as a connection does.
            while let Poll::Ready(Some(())) = notify_rx.poll_recv(cx) {
                woken_by_others += 1;
            }
            own.poll(cx, |cx| timer.as_mut().poll(cx))
        });
        let others = async {
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                notify_tx.send(()).unwrap();
            }
        };
        let started = tokio::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(done, others) })
            .await
            .expect("its own wake never reached the task");
        let took = started.elapsed();
        // The clock is paused: it moves only to the timers that fire.
        assert_eq!(took, Duration::from_millis(300), "ready off its timer");
        assert_eq!(woken_by_others, 20);
        // The first poll, then the one its own wake asked for.
        assert_eq!(polls.get(), 2);
    }

    #[tokio::test]
    async fn after_being_ready_the_next_call_polls_again() {
        let own = OwnWaker::default();
        let polls = Cell::new(0);
        let mut ready = std::future::poll_fn(|_| {
            polls.set(polls.get() + 1);
            Poll::Ready(())
        });
        for _ in 0..3 {
            let again = std::future::poll_fn(|cx| {
                own.poll(cx, |cx| std::pin::Pin::new(&mut ready).poll(cx))
            });
            tokio::time::timeout(Duration::from_secs(1), again)
                .await
                .expect("not polled again after being ready");
        }

        assert_eq!(polls.get(), 3);
    }
}
