//! A deadline that moves at every request but rarely passes: the client's
//! head timer, an upstream connection's response timeout.
//!
//! Setting it is a field write. The runtime's timer is made at the first
//! wait and moved only when it fires before the deadline (it was set for an
//! earlier one) or is set later than it (the deadline was brought forward,
//! as a reload that shortens a timeout does). Resetting a timer for every
//! request would touch the runtime's timer wheel twice per request; this
//! touches it about once per timeout. The timer has a waker of its own
//! ([`OwnWaker`]): waiting on the deadline polls it only when it fired or
//! was moved. The price: a timer left set for an earlier deadline may wake
//! the last task that waited on it once, to no effect, when it fires.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

use crate::rt::wake::OwnWaker;

/// A lazily armed deadline.
#[derive(Debug)]
pub struct Deadline {
    at: Instant,
    timer: Option<Timer>,
}

/// The runtime's timer, made at the first wait, and its own waker: it is
/// polled when it fires or was moved, not at every poll of the deadline.
#[derive(Debug)]
struct Timer {
    sleep: Pin<Box<Sleep>>,
    own: OwnWaker,
}

impl Deadline {
    /// A deadline at `at`; no timer is made until something waits.
    pub fn new(at: Instant) -> Deadline {
        Deadline { at, timer: None }
    }

    /// When it passes.
    pub fn at(&self) -> Instant {
        self.at
    }

    /// Moves it to `at`.
    pub fn set(&mut self, at: Instant) {
        self.at = at;
    }

    /// Lets go of the timer (an idle holder keeps none); the next wait
    /// makes a new one.
    pub fn release(&mut self) {
        self.timer = None;
    }

    /// `Ready` once the deadline has passed; otherwise the timer is armed
    /// at or before it, and its firing wakes `cx`'s task.
    pub fn poll_passed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let at = self.at;
        let Timer { sleep, own } = self.timer.get_or_insert_with(|| Timer {
            sleep: Box::pin(tokio::time::sleep_until(at)),
            own: OwnWaker::default(),
        });
        if sleep.deadline() > at {
            // Brought forward: the timer moves now, and is polled at once.
            sleep.as_mut().reset(at);
            own.mark();
        }
        own.poll(cx, |cx| loop {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if sleep.deadline() >= at {
                return Poll::Ready(());
            }
            // It fired for an earlier deadline: on to this one.
            sleep.as_mut().reset(at);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    // The clock is paused: it moves only to the timers that fire, so each
    // wait ends exactly when the deadline passes.
    #[tokio::test(start_paused = true)]
    async fn it_passes_at_its_latest_setting_whichever_way_it_moved() {
        let start = Instant::now();
        let mut deadline = Deadline::new(start + ms(100));
        // Armed for 100 ms, then moved later: it passes at 300, not at 100.
        assert!(poll_fn(|cx| Poll::Ready(deadline.poll_passed(cx)))
            .await
            .is_pending());
        deadline.set(start + ms(300));
        poll_fn(|cx| deadline.poll_passed(cx)).await;
        assert_eq!(start.elapsed(), ms(300));
        // Brought forward from where its timer is set: it passes at the
        // earlier time.
        let again = Instant::now();
        deadline.set(again + ms(2000));
        assert!(poll_fn(|cx| Poll::Ready(deadline.poll_passed(cx)))
            .await
            .is_pending());
        deadline.set(again + ms(50));
        poll_fn(|cx| deadline.poll_passed(cx)).await;
        assert_eq!(again.elapsed(), ms(50));
        assert_eq!(deadline.at(), again + ms(50));
    }

    #[tokio::test(start_paused = true)]
    async fn released_it_holds_no_timer_and_the_next_wait_still_passes_on_time() {
        let start = Instant::now();
        let mut deadline = Deadline::new(start + ms(100));
        assert!(poll_fn(|cx| Poll::Ready(deadline.poll_passed(cx)))
            .await
            .is_pending());
        deadline.release();
        assert!(deadline.timer.is_none());
        deadline.set(start + ms(400));
        poll_fn(|cx| deadline.poll_passed(cx)).await;
        assert_eq!(start.elapsed(), ms(400));
    }
}
