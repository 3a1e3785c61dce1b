//! An upgraded connection (WebSocket, after a 101): bytes copied both ways
//! between the client and the upstream until one side closes.
//!
//! The tunnel runs in a task of its own, registered with the pool's
//! cutter: the end of a drain aborts it, which drops both streams and the
//! in-flight guard, and so the pool's count.

use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

use super::conn::Upgraded;
use crate::http1::Switched;
use crate::snapshot::InflightGuard;

/// Copies bytes both ways between the client's side, which arrives on
/// `client` once the 101 is written to it, and the upstream's, until one
/// side closes. What either side sent right behind its head (the client
/// behind its request, the server behind its 101) goes first. The
/// in-flight guard lives as long as the tunnel.
pub async fn run(client: oneshot::Receiver<Upgraded>, upstream: Switched, guard: InflightGuard) {
    let Ok(client) = client.await else {
        tracing::debug!("upgrade failed: the client connection ended before the 101 was written");
        return;
    };
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
            return;
        }
    }
    if !upstream_ahead.is_empty() {
        if let Err(e) = client.write_all(&upstream_ahead).await {
            tracing::debug!(server, error = %e, "tunnel closed");
            return;
        }
    }
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((up, down)) => tracing::debug!(server, up, down, "tunnel closed"),
        Err(e) => tracing::debug!(server, error = %e, "tunnel closed"),
    }
    drop(guard);
}

#[cfg(test)]
mod tests;
