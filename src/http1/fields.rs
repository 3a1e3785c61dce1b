//! HTTP/1.1 facts both sides of the proxy use: which fields are hop-by-hop,
//! and whether a message asks for an upgrade (pure).

use http::header::{self, HeaderMap};

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
