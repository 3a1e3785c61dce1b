//! The admin listeners: one hyper service served on `admin.listen` (TCP) and
//! on `admin.socket` (HTTP over a Unix socket, so `curl --unix-socket` works).
//!
//! The socket is created with mode 0600 before it listens; a stale socket
//! left by a crashed process is replaced, a live one is refused; the socket
//! is removed on exit. On a non-loopback TCP listener `/api/v1/*` requires
//! `Authorization: Bearer <token>` (compared in constant time); `/metrics`,
//! `/healthz` and `/readyz` stay open. The admin API is never served on the
//! proxy's own listeners.
//!
//! The API is served on the control thread ([`crate::control::thread`]), not
//! on the workers: an admin call (a switch building and storing the next
//! snapshot, a `/metrics` scrape rendering every series, a deploy script's
//! `status` polls) never takes a turn of the workers' event loop.

pub mod api;
pub mod error;

use std::convert::Infallible;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::future::OptionFuture;
use http::{header, Request, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

use crate::control::events::Actor;
use crate::control::ControlPlane;
use error::ApiError;

/// Binds the admin Unix socket at `path` with mode 0600 before listening;
/// the listener is non-blocking, for [`serve`] to register.
///
/// # Errors
///
/// When another process is listening on `path`, `path` is not a socket, or
/// binding fails.
pub fn bind_unix(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "{}: another process is listening on this socket",
                        path.display()
                    ),
                ));
            }
            std::fs::remove_file(path)?;
            tracing::info!(path = %path.display(), "replaced a stale admin socket");
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{}: exists and is not a socket; not replacing it",
                    path.display()
                ),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    socket.bind(&socket2::SockAddr::unix(path)?)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    socket.listen(128)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `req` may reach `/api/v1/*` given the listener's token
/// (`/metrics`, `/healthz` and `/readyz` stay open).
fn authorized(req: &Request<Incoming>, token: Option<&str>) -> bool {
    let Some(token) = token else { return true };
    if !req.uri().path().starts_with("/api/") {
        return true;
    }
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), token.as_bytes()))
}

async fn serve_conn<I>(
    io: I,
    control: Arc<ControlPlane>,
    actor: Actor,
    token: Option<Arc<str>>,
    graceful: &GracefulShutdown,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let metrics = control.metrics().clone();
    let open = crate::metrics::OpenConnection::new(&metrics.connections("admin"));
    let service = service_fn(move |req: Request<Incoming>| {
        let control = control.clone();
        let token = token.clone();
        let metrics = metrics.clone();
        async move {
            if !authorized(&req, token.as_deref()) {
                // The token and the Authorization header are never logged.
                metrics.admin_refused.with_label_values(&["401"]).inc();
                tracing::info!(
                    path = req.uri().path(),
                    "admin request refused: missing or wrong token"
                );
                let err = ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "this admin listener requires Authorization: Bearer <token>",
                );
                let mut resp = err.response();
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                return Ok::<_, Infallible>(resp);
            }
            let resp = api::handle(&control, req, actor).await;
            if resp.status() == StatusCode::FORBIDDEN {
                metrics.admin_refused.with_label_values(&["403"]).inc();
            }
            Ok(resp)
        }
    });
    let conn = http1::Builder::new().serve_connection(TokioIo::new(io), service);
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "admin connection closed");
        }
        drop(open);
    });
}

/// The admin listeners, bound and not yet served.
#[derive(Debug)]
pub struct Listeners {
    /// `admin.listen` (non-blocking), with the bearer token it requires.
    pub tcp: Option<(std::net::TcpListener, Option<Arc<str>>)>,
    /// `admin.socket` (non-blocking) and its path.
    pub unix: Option<(std::os::unix::net::UnixListener, PathBuf)>,
}

/// Serves both listeners until `shutdown` turns true; resolves once its
/// connections are closed and the socket file is removed. Run it on the
/// control thread ([`crate::control::thread`]).
pub async fn serve(
    listeners: Listeners,
    control: Arc<ControlPlane>,
    shutdown: watch::Receiver<bool>,
) {
    let tcp = listeners.tcp.and_then(|(l, token)| {
        let addr = l.local_addr().ok();
        match TcpListener::from_std(l) {
            Ok(l) => Some(serve_tcp(l, control.clone(), token, shutdown.clone())),
            Err(e) => {
                tracing::error!(listen = ?addr, error = %e, "admin API not served on admin.listen");
                None
            }
        }
    });
    let unix = listeners.unix.and_then(|(l, path)| match UnixListener::from_std(l) {
        Ok(l) => Some(serve_unix(l, path, control.clone(), shutdown.clone())),
        Err(e) => {
            tracing::error!(socket = %path.display(), error = %e, "admin API not served on admin.socket");
            let _ = std::fs::remove_file(&path);
            None
        }
    });
    futures_util::future::join(OptionFuture::from(tcp), OptionFuture::from(unix)).await;
}

/// Serves the admin API on TCP until `shutdown` turns true. `token`: required
/// bearer token (non-loopback listeners).
async fn serve_tcp(
    listener: TcpListener,
    control: Arc<ControlPlane>,
    token: Option<Arc<str>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => serve_conn(stream, control.clone(), Actor::Api, token.clone(), &graceful).await,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), graceful.shutdown()).await;
}

/// Serves the admin API on the Unix socket until `shutdown` turns true, then
/// removes the socket file.
async fn serve_unix(
    listener: UnixListener,
    path: PathBuf,
    control: Arc<ControlPlane>,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => serve_conn(stream, control.clone(), Actor::Socket, None, &graceful).await,
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let _ = std::fs::remove_file(&path);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), graceful.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_bytes() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }

    #[tokio::test]
    async fn socket_is_0600_and_stale_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sock");
        let l = bind_unix(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Live: refused.
        assert!(bind_unix(&path).is_err());
        drop(l);
        // Stale (nobody listening): replaced.
        let _l = bind_unix(&path).unwrap();
    }

    #[test]
    fn a_regular_file_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-socket");
        std::fs::write(&path, b"keep me").unwrap();
        assert!(bind_unix(&path).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
    }
}
