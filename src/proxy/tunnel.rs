//! An upgraded connection (WebSocket, after a 101): bytes copied both ways
//! between the client and the upstream until one side closes.
//!
//! The tunnel is a stream of its pool and holds the request's in-flight
//! guard. At the end of its pool's drain (or of the shutdown's) the pool's
//! cut raises its flag: a WebSocket tunnel then gives each side a close
//! frame with code 1001 ("going away"), put between two frames (a side in
//! the middle of a frame gets none), and ends; any other tunnel just ends.
//! Closing is bounded by [`CLOSE_GRACE`], so a peer that reads nothing
//! cannot keep the tunnel, and its pool, open.

mod frames;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use super::conn::Upgraded;
use super::stream::TunnelTrack;
use crate::http1::Switched;
use crate::metrics::Outcome;
use crate::rt::flag::Flag;
use crate::snapshot::InflightGuard;
use frames::{going_away, Frames};

/// How long writing a close frame and shutting a side down may take.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// The copy buffer of each direction (what `tokio::io::copy` uses).
const BUF: usize = 8 * 1024;

/// Which side of a tunnel a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Upstream,
}

/// How one direction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Its source closed: the close was passed on.
    Closed,
    /// The cut ended it.
    Cut,
    /// A socket failed.
    Failed(Side),
}

/// Copies bytes both ways between the client's side, which arrives on
/// `client` once the 101 is written to it, and the upstream's, until both
/// sides close or `cut` is raised. What either side sent right behind its
/// head (the client behind its request, the server behind its 101) goes
/// first. `websocket` says the tunnel speaks WebSocket (its frames are
/// followed, for the close at a cut). The in-flight guard lives as long as
/// the tunnel, which is a stream of its pool from the 101 on (`ttfb` after
/// its request).
pub async fn run(
    client: oneshot::Receiver<Upgraded>,
    upstream: Switched,
    guard: InflightGuard,
    ttfb: Duration,
    websocket: bool,
    cut: Arc<Flag>,
) {
    let Ok(client) = client.await else {
        tracing::debug!("upgrade failed: the client connection ended before the 101 was written");
        return;
    };
    let mut track = TunnelTrack::new(&guard.pool().metrics.streams, ttfb);
    let server = guard.server().upstream.label();
    let Switched {
        io: upstream,
        read_ahead: upstream_ahead,
    } = upstream;
    let Upgraded {
        io: client,
        read_ahead: client_ahead,
    } = client;
    let (client_read, client_write) = tokio::io::split(client);
    let (upstream_read, upstream_write) = tokio::io::split(upstream);
    let up = Direction {
        from: Side::Client,
        to: Side::Upstream,
        frames: websocket.then(Frames::default),
        masked: true,
    };
    let down = Direction {
        from: Side::Upstream,
        to: Side::Client,
        frames: websocket.then(Frames::default),
        masked: false,
    };
    let (up, down) = tokio::join!(
        up.pump(client_read, upstream_write, &client_ahead, &cut),
        down.pump(upstream_read, client_write, &upstream_ahead, &cut),
    );
    let outcome = match (up, down) {
        (End::Cut, _) | (_, End::Cut) => Outcome::DrainCut,
        (End::Failed(Side::Upstream), _) | (_, End::Failed(Side::Upstream)) => {
            Outcome::UpstreamAbort
        }
        (End::Failed(Side::Client), _) | (_, End::Failed(Side::Client)) => Outcome::ClientAbort,
        (End::Closed, End::Closed) => Outcome::Completed,
    };
    tracing::debug!(server, ?up, ?down, "tunnel closed");
    track.set(outcome);
    drop(track);
    drop(guard);
}

/// One direction of a tunnel.
struct Direction {
    from: Side,
    to: Side,
    /// The frames passed on, in a WebSocket tunnel.
    frames: Option<Frames>,
    /// Whether a close frame put in this direction is masked (it goes to
    /// the upstream, as a client's must).
    masked: bool,
}

impl Direction {
    /// Copies `ahead`, then what `from` sends, to `to` until `from` closes
    /// (the close is passed on), a socket fails, or `cut` is raised.
    async fn pump<R, W>(mut self, mut from: R, mut to: W, ahead: &[u8], cut: &Flag) -> End
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if !ahead.is_empty() {
            if let Err(end) = self.pass(&mut to, ahead, cut).await {
                return end;
            }
        }
        let mut buf = vec![0u8; BUF];
        loop {
            let read = tokio::select! {
                biased;
                () = cut.raised() => return self.close(&mut to).await,
                read = from.read(&mut buf) => read,
            };
            match read {
                Ok(0) => {
                    return match to.shutdown().await {
                        Ok(()) => End::Closed,
                        Err(_) => End::Failed(self.to),
                    }
                }
                Ok(n) => {
                    if let Err(end) = self.pass(&mut to, &buf[..n], cut).await {
                        return end;
                    }
                }
                Err(_) => return End::Failed(self.from),
            }
        }
    }

    /// Writes `data` to `to`; a cut in the middle ends the direction
    /// without a close frame (it would land inside a frame).
    async fn pass<W: AsyncWrite + Unpin>(
        &mut self,
        to: &mut W,
        data: &[u8],
        cut: &Flag,
    ) -> Result<(), End> {
        if let Some(frames) = &mut self.frames {
            frames.advance(data);
        }
        let written: io::Result<()> = tokio::select! {
            biased;
            () = cut.raised() => {
                self.frames = None;
                return Err(self.close(to).await);
            }
            written = to.write_all(data) => written,
        };
        written.map_err(|_| End::Failed(self.to))
    }

    /// The end at a cut: a close frame 1001 when the stream is between two
    /// WebSocket frames, then the write side shut, within [`CLOSE_GRACE`].
    async fn close<W: AsyncWrite + Unpin>(&mut self, to: &mut W) -> End {
        let frame = self
            .frames
            .as_ref()
            .filter(|f| f.at_boundary())
            .map(|_| going_away(self.masked.then(|| fastrand::u32(..).to_be_bytes())));
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            if let Some(frame) = frame {
                to.write_all(&frame).await?;
            }
            to.shutdown().await
        })
        .await;
        End::Cut
    }
}

#[cfg(test)]
mod tests;
