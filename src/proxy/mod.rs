//! The data-plane listener: accepts client connections, serves HTTP/1.1 and
//! HTTP/2 (h2c with prior knowledge) on each with hyper-util's auto builder,
//! and hands every request to [`forward::forward`].
//!
//! Reads the routing snapshot only; never imports the control plane. On
//! shutdown it stops accepting and lets open connections finish their
//! in-flight requests.

pub mod error;
pub mod forward;
pub mod headers;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::config::Limits;
use crate::snapshot::Routing;
use forward::ClientInfo;

/// Most concurrent HTTP/2 streams per client connection.
const H2_MAX_CONCURRENT_STREAMS: u32 = 256;

/// A listener ready to serve.
#[derive(Debug)]
pub struct ProxyListener {
    /// The bound socket.
    pub listener: TcpListener,
    /// `"http"` or `"https"`.
    pub proto: &'static str,
}

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_header_list_size(limits.max_header_bytes as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

/// Serves `listener` until `shutdown` turns true, then waits (at most
/// `grace`) for open connections to finish their requests.
pub async fn serve(
    listener: ProxyListener,
    routing: Arc<Routing>,
    limits: Limits,
    open: prometheus::IntGauge,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let builder = Arc::new(builder(&limits));
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let proto = listener.proto;
    loop {
        // Beyond max_connections, new connections wait in the accept queue.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            client: ClientInfo { addr: peer, proto },
            routing: routing.clone(),
            builder: builder.clone(),
            watcher: graceful.watcher(),
            handshake_timeout: limits.header_read_timeout,
        };
        let open = OpenConnection::new(&open);
        tokio::spawn(async move {
            conn.serve(stream).await;
            drop(open);
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?grace, "connections still open at the end of the drain");
    }
}

/// What one accepted client connection needs.
struct Conn {
    client: ClientInfo,
    routing: Arc<Routing>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
    handshake_timeout: Duration,
}

impl Conn {
    /// Serves the connection, after a TLS handshake on the HTTPS listener.
    async fn serve(self, stream: TcpStream) {
        if self.client.proto != "https" {
            return self.serve_io(stream).await;
        }
        // The TLS config of the current snapshot: a reload with a new
        // certificate applies to the next handshake.
        let Some(tls) = self.routing.load().tls.clone() else {
            return;
        };
        let accept = tokio_rustls::TlsAcceptor::from(tls).accept(stream);
        match tokio::time::timeout(self.handshake_timeout, accept).await {
            Ok(Ok(stream)) => self.serve_io(stream).await,
            Ok(Err(e)) => {
                tracing::debug!(client.addr = %self.client.addr, error = %e, "TLS handshake failed")
            }
            Err(_) => tracing::debug!(client.addr = %self.client.addr, "TLS handshake timed out"),
        }
    }

    async fn serve_io<I>(self, io: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            client,
            routing,
            builder,
            watcher,
            ..
        } = self;
        let service = service_fn(move |req| {
            let routing = routing.clone();
            async move { Ok::<_, Infallible>(forward::forward(&routing, req, client).await) }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        if let Err(e) = watcher.watch(conn).await {
            tracing::debug!(client.addr = %client.addr, error = %e, "client connection closed");
        }
    }
}

/// Counts one open connection in a gauge until dropped.
#[derive(Debug)]
pub struct OpenConnection(prometheus::IntGauge);

impl OpenConnection {
    /// Counts a connection in `gauge`.
    pub fn new(gauge: &prometheus::IntGauge) -> OpenConnection {
        gauge.inc();
        OpenConnection(gauge.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Binds a listener.
///
/// # Errors
///
/// The bind error.
pub async fn bind(addr: SocketAddr, proto: &'static str) -> std::io::Result<ProxyListener> {
    Ok(ProxyListener {
        listener: TcpListener::bind(addr).await?,
        proto,
    })
}
