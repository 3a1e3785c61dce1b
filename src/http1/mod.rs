//! HTTP/1.1 as cutover reads and writes it beside hyper, on both sides of
//! the proxy, held to hyper's framing.
//!
//! - Client side, hyper serves the connection; [`scan::FrameScan`] follows
//!   the same bytes to see what hyper's parsed requests no longer show
//!   (both `Content-Length` and `Transfer-Encoding`, a chunked body hyper
//!   will refuse, a head's exact size).
//! - Upstream side, one client: an [`UpstreamConn`] is driven by the task
//!   of the request it carries. [`RequestHead`] is the request as it is
//!   written, [`ResponseParser`] reads the response head and decides its
//!   framing, [`UpstreamBody`] reads the body ([`Decoder`]) and owns the
//!   connection until its end. A 101 hands the socket to the tunnel
//!   ([`Switched`]).
//!
//! The framing decisions are tested against hyper's on the same bytes
//! (`differential` tests) and fuzzed (`fuzz/`). Nothing here knows of
//! routing, pools or the proxy: this module imports only [`crate::rt`].

pub mod body;
pub mod chunked;
pub mod conn;
pub mod decode;
pub mod error;
pub mod request;
pub mod response;
pub mod scan;

#[cfg(test)]
mod differential;

use bytes::Bytes;
use http::header::{self, HeaderMap};
use tokio::net::TcpStream;

pub use body::UpstreamBody;
pub use conn::UpstreamConn;
pub use decode::{Decoded, Decoder};
pub use error::{Error, Reached};
pub use request::RequestHead;
pub use response::{Framing, ResponseHead, ResponseParser};
pub use scan::FrameScan;

/// An upstream connection after its 101: the socket, and the bytes the
/// server sent right behind the head (the first of the new protocol).
#[derive(Debug)]
pub struct Switched {
    /// The socket.
    pub io: TcpStream,
    /// Read behind the 101's head, not yet passed on.
    pub read_ahead: Bytes,
}

/// Whether `name` (lowercase, as [`http::HeaderName::as_str`] gives it)
/// is a hop-by-hop field that never crosses the proxy: `Connection`,
/// `Keep-Alive`, `Proxy-Connection`, `Proxy-Authenticate`,
/// `Proxy-Authorization`, `TE`, `Trailer`, `Transfer-Encoding`. `Upgrade`
/// is one too, but crosses on an upgrade.
pub fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
    )
}

/// Whether the headers ask for a protocol upgrade (`Connection: upgrade`
/// plus an `Upgrade` header), as a WebSocket handshake does.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has(headers, "upgrade")
}

/// Whether a `Connection` line of `headers` names `token`.
pub fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(token))
}

/// The tokens of every `Connection` line, trimmed, without empty ones.
pub fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}
