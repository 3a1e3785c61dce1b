//! `GET /api/v1/stream`: server-sent events, made once and sent to every
//! open stream.
//!
//! A [`Frame`] is one event already encoded (`event:`, `id:`, `data:`);
//! the sampler makes each frame once and a broadcast channel hands the
//! same bytes to every stream. A stream starts with frames of its own (the
//! whole state: status, recent events, the stats window) and then follows
//! the broadcast. It skips the events it already had (by sequence number),
//! and ends when it falls too far behind (the browser's `EventSource`
//! reconnects and starts afresh) or when the admin listener stops.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};
use http_body::{Body, Frame as BodyFrame};
use serde::Serialize;
use tokio::sync::{broadcast, watch};

/// Tells a browser how long to wait before it reconnects.
const RETRY: &[u8] = b"retry: 2000\n\n";

/// One encoded server-sent event.
#[derive(Debug, Clone)]
pub struct Frame {
    /// For an `event` frame, the event's sequence number.
    pub seq: Option<u64>,
    /// The bytes on the wire.
    pub bytes: Bytes,
}

impl Frame {
    /// The event `name` carrying `value` as JSON.
    pub fn new<T: Serialize>(name: &str, value: &T) -> Frame {
        Frame::encode(name, None, value)
    }

    /// An `event` frame for event number `seq` (its SSE `id`).
    pub fn event<T: Serialize>(seq: u64, value: &T) -> Frame {
        Frame::encode("event", Some(seq), value)
    }

    fn encode<T: Serialize>(name: &str, seq: Option<u64>, value: &T) -> Frame {
        let json = serde_json::to_string(value).expect("admin answers serialize: plain data");
        // serde_json escapes control characters: the JSON is one line.
        let id = seq.map(|s| format!("id: {s}\n")).unwrap_or_default();
        Frame {
            seq,
            bytes: Bytes::from(format!("event: {name}\n{id}data: {json}\n\n")),
        }
    }
}

/// The body of one stream.
pub struct Feed {
    frames: BoxStream<'static, Bytes>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed").finish_non_exhaustive()
    }
}

/// Where a stream is: its own first frames, then the broadcast.
struct Follow {
    first: VecDeque<Bytes>,
    /// The sequence number of the first event it has not had.
    next_seq: u64,
    rx: broadcast::Receiver<Frame>,
    stop: watch::Receiver<bool>,
}

impl Follow {
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(frame) = self.first.pop_front() {
            return Some(frame);
        }
        loop {
            if *self.stop.borrow() {
                return None;
            }
            let frame = tokio::select! {
                frame = self.rx.recv() => frame.ok()?,
                _ = self.stop.changed() => return None,
            };
            match frame.seq {
                Some(seq) if seq < self.next_seq => continue,
                Some(seq) => self.next_seq = seq + 1,
                None => {}
            }
            return Some(frame.bytes);
        }
    }
}

impl Feed {
    /// A stream that sends `first`, then what `rx` brings, skipping events
    /// numbered below `next_seq`, until `stop` turns true.
    pub fn new(
        first: Vec<Frame>,
        next_seq: u64,
        rx: broadcast::Receiver<Frame>,
        stop: watch::Receiver<bool>,
    ) -> Feed {
        let mut head = VecDeque::with_capacity(first.len() + 1);
        head.push_back(Bytes::from_static(RETRY));
        head.extend(first.into_iter().map(|f| f.bytes));
        let follow = Follow {
            first: head,
            next_seq,
            rx,
            stop,
        };
        let frames = futures_util::stream::unfold(follow, |mut follow| async move {
            follow.next().await.map(|bytes| (bytes, follow))
        });
        Feed {
            frames: frames.boxed(),
        }
    }
}

impl Feed {
    /// A body of `lines`, each sent as it comes: a stream that is not
    /// server-sent events (the NDJSON of a deploy's steps).
    pub fn lines(lines: BoxStream<'static, Bytes>) -> Feed {
        Feed { frames: lines }
    }
}

impl Body for Feed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, Infallible>>> {
        self.frames
            .poll_next_unpin(cx)
            .map(|frame| frame.map(|b| Ok(BodyFrame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn next_text(feed: &mut Feed) -> Option<String> {
        let frame = feed.frame().await?.unwrap();
        Some(String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_feed_sends_its_own_frames_then_the_broadcast_without_events_it_had() {
        let (tx, rx) = broadcast::channel(8);
        let (stop_tx, stop) = watch::channel(false);
        let first = vec![Frame::new("status", &serde_json::json!({"generation": 1}))];
        let mut feed = Feed::new(first, 5, rx, stop);
        tx.send(Frame::event(4, &"old")).unwrap();
        tx.send(Frame::event(5, &"new")).unwrap();
        tx.send(Frame::new("stats", &1)).unwrap();

        assert_eq!(next_text(&mut feed).await.unwrap(), "retry: 2000\n\n");
        assert_eq!(
            next_text(&mut feed).await.unwrap(),
            "event: status\ndata: {\"generation\":1}\n\n"
        );
        assert_eq!(
            next_text(&mut feed).await.unwrap(),
            "event: event\nid: 5\ndata: \"new\"\n\n"
        );
        assert_eq!(
            next_text(&mut feed).await.unwrap(),
            "event: stats\ndata: 1\n\n"
        );
        stop_tx.send(true).unwrap();
        assert_eq!(next_text(&mut feed).await, None);
    }

    #[tokio::test]
    async fn a_feed_that_falls_behind_ends() {
        let (tx, rx) = broadcast::channel(2);
        let (_stop_tx, stop) = watch::channel(false);
        let mut feed = Feed::new(Vec::new(), 0, rx, stop);
        for i in 0..5 {
            tx.send(Frame::new("stats", &i)).unwrap();
        }
        assert!(next_text(&mut feed).await.is_some(), "retry");
        assert_eq!(next_text(&mut feed).await, None);
    }
}
