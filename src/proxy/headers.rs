//! Header rewriting between client and upstream (pure).
//!
//! Removes hop-by-hop headers in both directions (`Connection` and every
//! header it names, `Keep-Alive`, `TE`, `Trailer`, `Transfer-Encoding`,
//! `Upgrade` outside an upgrade, `Proxy-*`), and sets `X-Forwarded-For`
//! (appended), `-Proto` and `-Host` on requests. A client cannot make the
//! proxy drop Host or the `X-Forwarded-*` headers by naming them in
//! `Connection`.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that never cross a hop.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Whether the request asks for a protocol upgrade (`Connection: upgrade`
/// plus an `Upgrade` header), as a WebSocket handshake does.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(token))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Whether a name in `Connection` may be removed: Host and the
/// `X-Forwarded-*` headers are protected.
fn removable(name: &str) -> bool {
    !(name.eq_ignore_ascii_case("host")
        || name.len() > 12 && name[..12].eq_ignore_ascii_case("x-forwarded-"))
}

/// Removes hop-by-hop headers. With `upgrade`, keeps `Upgrade` and sets
/// `Connection: upgrade` (the handshake must reach the other side).
pub fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = connection_tokens(headers)
            .filter(|t| removable(t))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            if !(upgrade && name == header::UPGRADE) {
                headers.remove(&name);
            }
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// Rewrites a request's headers for the upstream: hop-by-hop removed,
/// `X-Forwarded-For` appended with `client`, `-Proto` set to `proto`,
/// `-Host` set to `host` (the Host the client asked for).
pub fn rewrite_request(
    headers: &mut HeaderMap,
    client: IpAddr,
    proto: &'static str,
    host: Option<&HeaderValue>,
    upgrade: bool,
) {
    remove_hop_by_hop(headers, upgrade);
    append_forwarded_for(headers, client);
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    match host {
        Some(host) => {
            headers.insert(X_FORWARDED_HOST.clone(), host.clone());
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
}

fn append_forwarded_for(headers: &mut HeaderMap, client: IpAddr) {
    let client = client.to_string();
    let mut prior = headers.get_all(&X_FORWARDED_FOR).iter().peekable();
    let value = if prior.peek().is_none() {
        HeaderValue::from_str(&client)
    } else {
        let mut list = Vec::with_capacity(64);
        for v in prior {
            list.extend_from_slice(v.as_bytes());
            list.extend_from_slice(b", ");
        }
        list.extend_from_slice(client.as_bytes());
        HeaderValue::from_bytes(&list)
    };
    // An IP address and the bytes of valid header values make a valid value.
    if let Ok(value) = value {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "basic x"),
            ("proxy-connection", "keep-alive"),
            ("x-kept", "yes"),
        ]);
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn upgrade_keeps_upgrade_and_sets_connection() {
        let mut h = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("te", "x"),
        ]);
        assert!(is_upgrade(&h));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert!(!h.contains_key("te"));
    }

    #[test]
    fn forwarded_headers_cannot_be_dropped_through_connection() {
        let mut h = map(&[
            ("connection", "x-forwarded-for, host, X-Forwarded-Host"),
            ("x-forwarded-for", "10.0.0.1"),
            ("host", "a.example"),
        ]);
        let host = h.get("host").cloned();
        rewrite_request(
            &mut h,
            "192.0.2.7".parse().unwrap(),
            "http",
            host.as_ref(),
            false,
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(h["host"], "a.example");
        assert_eq!(h["x-forwarded-host"], "a.example");
        assert_eq!(h["x-forwarded-proto"], "http");
    }

    #[test]
    fn forwarded_for_joins_several_prior_lines() {
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        rewrite_request(&mut h, "::1".parse().unwrap(), "https", None, false);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, ::1");
        assert_eq!(h["x-forwarded-proto"], "https");
    }
}
