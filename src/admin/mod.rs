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
//! The same listeners serve the dashboard ([`dashboard`]): its page at
//! `/ui/`, its data at `/api/v1/stats` and `/api/v1/stream`, and its
//! sessions at `/ui/session`; who may call what is [`access`]'s.
//!
//! The API is served on the control thread ([`crate::control::thread`]), not
//! on the workers: an admin call (a switch building and storing the next
//! snapshot, a `/metrics` scrape rendering every series, a deploy script's
//! `status` polls) never takes a turn of the workers' event loop.

pub mod access;
pub mod api;
pub mod dashboard;
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
use access::Guard;
use dashboard::{Dashboard, Sessions};

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

async fn serve_conn<I>(io: I, cx: api::Context, graceful: &GracefulShutdown)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let metrics = cx.control.metrics().clone();
    let open = crate::metrics::OpenConnection::new(&metrics.connections("admin"));
    let service = service_fn(move |req: Request<Incoming>| {
        let cx = cx.clone();
        let metrics = metrics.clone();
        async move {
            let path = req.uri().path().to_string();
            let mut resp = api::handle(&cx, req).await;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED {
                // The token and the Authorization header are never logged.
                tracing::info!(path, "admin request refused: missing or wrong token");
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                metrics
                    .admin_refused
                    .with_label_values(&[status.as_str()])
                    .inc();
            }
            Ok::<_, Infallible>(resp)
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
    let dashboard = Dashboard::start(control.clone(), shutdown.clone());
    let context = |guard: Guard, tag: &str, actor| api::Context {
        control: control.clone(),
        dashboard: dashboard.clone(),
        sessions: Arc::new(Sessions::new(tag)),
        guard,
        actor,
    };
    let tcp = listeners.tcp.and_then(|(l, token)| {
        let addr = l.local_addr().ok();
        let guard = Guard {
            token,
            loopback: addr.is_some_and(|a| a.ip().is_loopback()),
        };
        let tag = addr.map(|a| a.port().to_string()).unwrap_or_default();
        match TcpListener::from_std(l) {
            Ok(l) => Some(serve_tcp(
                l,
                context(guard, &tag, Actor::Api),
                shutdown.clone(),
            )),
            Err(e) => {
                tracing::error!(listen = ?addr, error = %e, "admin API not served on admin.listen");
                None
            }
        }
    });
    let socket = Guard {
        token: None,
        loopback: true,
    };
    let socket = context(socket, "socket", Actor::Socket);
    let unix = listeners.unix.and_then(|(l, path)| match UnixListener::from_std(l) {
        Ok(l) => Some(serve_unix(l, path, socket, shutdown.clone())),
        Err(e) => {
            tracing::error!(socket = %path.display(), error = %e, "admin API not served on admin.socket");
            let _ = std::fs::remove_file(&path);
            None
        }
    });
    futures_util::future::join(OptionFuture::from(tcp), OptionFuture::from(unix)).await;
}

/// Serves the admin API on TCP until `shutdown` turns true.
async fn serve_tcp(listener: TcpListener, cx: api::Context, mut shutdown: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => serve_conn(stream, cx.clone(), &graceful).await,
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
    cx: api::Context,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => serve_conn(stream, cx.clone(), &graceful).await,
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
