//! Header rewriting between client and upstream (pure).
//!
//! Removes hop-by-hop headers in both directions (`Connection` and every
//! header it names, `Keep-Alive`, `TE`, `Trailer`, `Transfer-Encoding`,
//! `Upgrade` outside an upgrade, `Proxy-*`), and sets `X-Forwarded-For`
//! (appended), `-Proto` and `-Host` on requests. A client cannot make the
//! proxy drop Host or the `X-Forwarded-*` headers by naming them in
//! `Connection`.
//!
//! Also the cheap byte checks the forwarder runs on every request
//! ([`valid_host`], [`ambiguous_name`]).

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::http1::connection_tokens;
pub use crate::http1::{is_hop_by_hop, is_upgrade};

/// Headers that never cross a hop (those [`is_hop_by_hop`] names).
/// Parsed once: removing by `&str` would parse each name on every request.
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Whether a name in `Connection` may be removed: Host and the
/// `X-Forwarded-*` headers are protected.
fn removable(name: &str) -> bool {
    !(name.eq_ignore_ascii_case("host")
        || name.len() > 12 && name[..12].eq_ignore_ascii_case("x-forwarded-"))
}

/// Removes hop-by-hop headers. With `upgrade`, keeps `Upgrade` and sets
/// `Connection: upgrade` (the handshake must reach the other side).
///
/// One pass over the names finds what is there first: most messages carry
/// none of them but `Connection`, and removing every candidate by hash cost
/// more than the rest of the rewrite.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let (mut connection, mut fixed, mut upgrade_header) = (false, false, false);
    for name in headers.keys() {
        match name.as_str() {
            "connection" => connection = true,
            "upgrade" => upgrade_header = true,
            other => fixed |= is_hop_by_hop(other),
        }
    }
    // `Connection: keep-alive` (or `close`) alone, the usual case, names
    // nothing else to remove.
    let plain = |v: &HeaderValue| {
        v.as_bytes().eq_ignore_ascii_case(b"keep-alive")
            || v.as_bytes().eq_ignore_ascii_case(b"close")
    };
    if connection && headers.get_all(header::CONNECTION).iter().all(plain) {
        headers.remove(header::CONNECTION);
    } else if connection {
        // A token that is itself hop-by-hop (`keep-alive`, `upgrade`) is
        // dealt with below; only other names present are looked up.
        let named: Vec<HeaderName> = connection_tokens(headers)
            .filter(|t| {
                removable(t)
                    && !t.eq_ignore_ascii_case("upgrade")
                    && !HOP_BY_HOP
                        .iter()
                        .any(|h| t.eq_ignore_ascii_case(h.as_str()))
                    && headers.contains_key(*t)
            })
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(&name);
        }
        headers.remove(header::CONNECTION);
    }
    if fixed {
        for name in &HOP_BY_HOP {
            headers.remove(name);
        }
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if upgrade_header {
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

/// Writes at the end of `out` the `X-Forwarded-*` fields
/// [`rewrite_request`] sets, as header lines, for a request that carries
/// none of its own: they go after its headers as it goes out (see
/// `http1::RequestHead`) instead of into its map, where three
/// entries cost more than the rest of the rewrite.
pub fn push_forwarded_lines(
    out: &mut Vec<u8>,
    client: IpAddr,
    proto: &str,
    host: Option<&HeaderValue>,
) {
    let mut text = [0u8; 64];
    out.extend_from_slice(b"x-forwarded-for: ");
    out.extend_from_slice(ip_text(client, &mut text));
    out.extend_from_slice(b"\r\nx-forwarded-proto: ");
    out.extend_from_slice(proto.as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(host) = host {
        out.extend_from_slice(b"x-forwarded-host: ");
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// Whether `name` (lowercase) is a forwarding header other than the
/// `X-Forwarded-*` family: `Forwarded` (RFC 7239) or `X-Real-IP`.
pub fn names_a_forwarder(name: &str) -> bool {
    name == "forwarded" || name == "x-real-ip"
}

/// Removes what a peer outside `trusted_ips` says about earlier hops:
/// `Forwarded`, `X-Real-IP` and every `X-Forwarded-*` but `-For` (which
/// the client's address is appended to, as the SPEC says) and `-Proto`
/// and `-Host` (which [`rewrite_request`] sets).
pub fn forget_untrusted(headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            names_a_forwarder(name)
                || (name.starts_with("x-forwarded-")
                    && name != X_FORWARDED_FOR.as_str()
                    && name != X_FORWARDED_PROTO.as_str()
                    && name != X_FORWARDED_HOST.as_str())
        })
        .cloned()
        .collect();
    for name in names {
        headers.remove(&name);
    }
}

fn append_forwarded_for(headers: &mut HeaderMap, client: IpAddr) {
    let mut text = [0u8; 64];
    let client = ip_text(client, &mut text);
    let mut prior = headers.get_all(&X_FORWARDED_FOR).iter().peekable();
    let value = if prior.peek().is_none() {
        HeaderValue::from_bytes(client)
    } else {
        let mut list = Vec::with_capacity(64);
        for v in prior {
            list.extend_from_slice(v.as_bytes());
            list.extend_from_slice(b", ");
        }
        list.extend_from_slice(client);
        HeaderValue::from_bytes(&list)
    };
    // An IP address and the bytes of valid header values make a valid value.
    if let Ok(value) = value {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
}

/// `ip` as text in `buf`: IPv4 by hand (the per-request case; the
/// formatting machinery costs more than the rest of the rewrite), IPv6
/// through `Display`.
fn ip_text(ip: IpAddr, buf: &mut [u8; 64]) -> &[u8] {
    match ip {
        IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            &buf[..n]
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            // 39 characters at most: it fits.
            let _ = write!(cursor, "{v6}");
            let n = usize::try_from(cursor.position()).unwrap_or(0);
            &buf[..n]
        }
    }
}

/// Headers a client must not be able to reach an upstream under another
/// spelling: framing, Host, hop-by-hop and the forwarding headers.
const SENSITIVE: [&str; 17] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
];

/// Whether a (lowercase) header name with `_` in it names a sensitive
/// header once `_` is read as `-`, as CGI, WSGI, PHP and others do: a
/// `Content_Length` or `X_Forwarded_For` that the proxy passes as an unknown
/// header would be read by such an upstream as the real one.
pub fn ambiguous_name(name: &str) -> bool {
    let name = name.as_bytes();
    // The length first: most names have no sensitive one's length, and the
    // search for a `_` (a `memchr` call) is left for those that have.
    name.len() < 32
        && SENSITIVE_LENGTHS >> name.len() & 1 == 1
        && name.contains(&b'_')
        && SENSITIVE.iter().any(|s| {
            let s = s.as_bytes();
            s.len() == name.len()
                && name
                    .iter()
                    .zip(s)
                    .all(|(&n, &s)| n.eq_ignore_ascii_case(&s) || (n == b'_' && s == b'-'))
        })
}

/// Bit `n` is set when a [`SENSITIVE`] name is `n` bytes long (all are
/// under 32).
const SENSITIVE_LENGTHS: u32 = {
    let mut mask = 0;
    let mut i = 0;
    while i < SENSITIVE.len() {
        mask |= 1 << SENSITIVE[i].len();
        i += 1;
    }
    mask
};

/// The bytes of a DNS name or an IPv4 address in a Host value: ASCII
/// letters and digits, `-`, `.` and `_`.
static HOST_NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_';
        b += 1;
    }
    table
};

/// Whether a Host value is `host[:port]` with `host` a DNS name, an IPv4
/// address or a bracketed IPv6 literal. Stricter than RFC 3986's reg-name:
/// sub-delims and percent-encoding, which no DNS name needs and which
/// upstreams split or decode differently, are refused. An empty value is
/// valid (RFC 9110 §7.2).
pub fn valid_host(value: &[u8]) -> bool {
    if value.is_empty() {
        return true;
    }
    let (host_ok, rest) = if value[0] == b'[' {
        let Some(end) = value.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &value[1..end];
        let ok = !literal.is_empty()
            && literal
                .iter()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
        (ok, &value[end + 1..])
    } else {
        // One pass to the first byte a name cannot hold: the colon before
        // a port, or a byte that makes the whole value invalid.
        let end = value
            .iter()
            .position(|&b| !HOST_NAME_BYTES[usize::from(b)])
            .unwrap_or(value.len());
        (end > 0, &value[end..])
    };
    host_ok
        && match rest {
            [] => true,
            [b':', port @ ..] => port.len() <= 5 && port.iter().all(u8::is_ascii_digit),
            _ => false,
        }
}

#[cfg(test)]
mod tests;
