//! The dashboard's data and its one sampler.
//!
//! Once a second, on the control thread, the sampler reads every pool's
//! cumulative totals and in-flight count from the current snapshot (the
//! counters the request path keeps for `/metrics` anyway; no lock) into
//! the [`ring`] that `GET /api/v1/stats` answers from. While at least one
//! stream is open it also encodes, once for all of them, the second's
//! `stats`, the `status` when it changed and each new `event` (status and
//! events read under one take of the control plane's lock), and hands
//! the frames to every stream ([`feed`]). However many dashboards are
//! open, the control plane sees one reader a second, and the request path
//! none.
//!
//! - [`page`]: the page itself; [`session`]: what a browser holds instead
//!   of the admin token.

mod feed;
pub mod page;
mod ring;
pub mod session;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{broadcast, watch};

pub use feed::Feed;
pub use session::Sessions;

use crate::control::ControlPlane;
use crate::wire::Stats;
use feed::Frame;
use ring::Ring;

/// Time between two samples.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Samples kept per pool: the last minute.
const SAMPLES: usize = 60;
/// Events a new stream starts with.
const RECENT_EVENTS: usize = 100;
/// Frames a stream may fall behind before it is ended (it reconnects).
const FEED_BACKLOG: usize = 256;

/// The sampler, its ring and the streams' broadcast.
pub struct Dashboard {
    control: Arc<ControlPlane>,
    ring: Mutex<Ring>,
    frames: broadcast::Sender<Frame>,
    stop: watch::Receiver<bool>,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard").finish_non_exhaustive()
    }
}

/// Milliseconds since the Unix epoch.
fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Dashboard {
    /// Starts the sampler on the current runtime (the control thread's);
    /// it and every stream end when `stop` turns true.
    pub fn start(control: Arc<ControlPlane>, stop: watch::Receiver<bool>) -> Arc<Dashboard> {
        let (frames, _) = broadcast::channel(FEED_BACKLOG);
        let dashboard = Arc::new(Dashboard {
            control,
            ring: Mutex::new(Ring::new(SAMPLE_INTERVAL, SAMPLES)),
            frames,
            stop,
        });
        dashboard.sample(Instant::now());
        tokio::spawn(dashboard.clone().run());
        dashboard
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        // Only this thread's tasks take it, one at a time: it is never
        // contended, and a panic leaves a ring that still reads.
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `GET /api/v1/stats`: the last minute of every pool.
    pub fn stats(&self) -> Stats {
        self.ring().window()
    }

    /// `GET /api/v1/stream`: a stream that starts with the whole state.
    pub async fn stream(&self) -> Feed {
        // Subscribed before the state is read: nothing that happens in
        // between is missed (events seen twice are skipped by number).
        let rx = self.frames.subscribe();
        let (status, next_seq, events) = self.control.status_and_events(0, RECENT_EVENTS).await;
        let first = vec![
            Frame::new("status", &status),
            Frame::new("events", &events),
            Frame::new("stats", &self.stats()),
        ];
        Feed::new(first, next_seq, rx, self.stop.clone())
    }

    /// Reads every pool of the current snapshot into the ring.
    fn sample(&self, now: Instant) {
        let snapshot = self.control.routing().load_full();
        let readings = snapshot.services.iter().flat_map(|svc| {
            svc.pools.iter().map(move |view| {
                let state = &view.state;
                (
                    &*svc.name,
                    state.name,
                    state.metrics.totals(),
                    state.inflight(),
                )
            })
        });
        self.ring()
            .record(now, epoch_ms(SystemTime::now()), readings);
    }

    async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut stop = self.stop.clone();
        // What the streams were last sent: the status, and the number of
        // the next event.
        let mut status = bytes::Bytes::new();
        let mut seq = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            self.sample(Instant::now());
            if self.frames.receiver_count() == 0 {
                continue;
            }
            let _ = self.frames.send(Frame::new("stats", &self.ring().latest()));
            let (now, next, events) = self.control.status_and_events(seq, RECENT_EVENTS).await;
            for (i, event) in events.iter().enumerate() {
                let number = next - (events.len() - i) as u64;
                let _ = self.frames.send(Frame::event(number, event));
            }
            seq = next;
            let frame = Frame::new("status", &now);
            if frame.bytes != status {
                status = frame.bytes.clone();
                let _ = self.frames.send(frame);
            }
        }
    }
}
