//! An upgraded connection (WebSocket, after a 101): bytes copied both ways
//! between the client and the upstream until one side closes.
//!
//! The tunnel runs in a task of its own, registered with the pool's
//! cutter: the end of a drain aborts it, which drops both streams and the
//! in-flight guard, and so the pool's count.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::oneshot;

use super::conn::Upgraded;
use super::stream::TunnelTrack;
use crate::http1::Switched;
use crate::metrics::Outcome;
use crate::snapshot::InflightGuard;

/// Copies bytes both ways between the client's side, which arrives on
/// `client` once the 101 is written to it, and the upstream's, until one
/// side closes. What either side sent right behind its head (the client
/// behind its request, the server behind its 101) goes first. The
/// in-flight guard lives as long as the tunnel, which is a stream of its
/// pool from the 101 on (`ttfb` after its request).
pub async fn run(
    client: oneshot::Receiver<Upgraded>,
    upstream: Switched,
    guard: InflightGuard,
    ttfb: Duration,
) {
    let Ok(client) = client.await else {
        tracing::debug!("upgrade failed: the client connection ended before the 101 was written");
        return;
    };
    let mut track = TunnelTrack::new(&guard.pool().metrics.streams, ttfb);
    let server = guard.server().upstream.label();
    let Switched {
        io: mut upstream,
        read_ahead: upstream_ahead,
    } = upstream;
    let Upgraded {
        io: mut client,
        read_ahead: client_ahead,
    } = client;
    if !client_ahead.is_empty() {
        if let Err(e) = upstream.write_all(&client_ahead).await {
            tracing::debug!(server, error = %e, "tunnel closed");
            track.set(Outcome::UpstreamAbort);
            return;
        }
    }
    if !upstream_ahead.is_empty() {
        if let Err(e) = client.write_all(&upstream_ahead).await {
            tracing::debug!(server, error = %e, "tunnel closed");
            track.set(Outcome::ClientAbort);
            return;
        }
    }
    let (mut client, mut upstream) = (Side::new(client), Side::new(upstream));
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((up, down)) => {
            tracing::debug!(server, up, down, "tunnel closed");
            track.set(Outcome::Completed);
        }
        Err(e) => {
            tracing::debug!(server, error = %e, "tunnel closed");
            track.set(if upstream.failed {
                Outcome::UpstreamAbort
            } else {
                Outcome::ClientAbort
            });
        }
    }
    drop(track);
    drop(guard);
}

/// One side of a tunnel, which remembers whether its socket failed, so
/// that a broken tunnel is put down to the side that broke it.
struct Side<T> {
    io: T,
    failed: bool,
}

impl<T> Side<T> {
    fn new(io: T) -> Side<T> {
        Side { io, failed: false }
    }

    fn note<R>(&mut self, polled: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if let Poll::Ready(Err(_)) = &polled {
            self.failed = true;
        }
        polled
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Side<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        this.note(polled)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Side<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.note(polled)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.note(polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_shutdown(cx);
        this.note(polled)
    }
}

#[cfg(test)]
mod tests;
