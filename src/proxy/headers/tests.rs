//! Header rewriting: examples and properties.

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

#[test]
fn host_values_are_checked_byte_by_byte() {
    for ok in [
        &b""[..],
        b"a.example",
        b"a.example:8080",
        b"agent_1",
        b"127.0.0.1:80",
        b"[::1]",
        b"[::1]:443",
        b"A-B.c",
    ] {
        assert!(valid_host(ok), "{:?}", String::from_utf8_lossy(ok));
    }
    for bad in [
        &b"a b"[..],
        b"a.example:80:81",
        b"a.example:port",
        b"a.example:123456",
        b"user@a.example",
        b"a.example/path",
        b"a.example?q",
        b"a%2eexample",
        b"a,b",
        b"[::1",
        b"[]",
        b"[::1]x",
        b":80",
        b"a\tb",
    ] {
        assert!(!valid_host(bad), "{:?}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn underscore_spellings_of_sensitive_headers_are_ambiguous() {
    for name in [
        "content_length",
        "transfer_encoding",
        "x_forwarded_for",
        "x-forwarded_for",
        "proxy_authorization",
    ] {
        assert!(ambiguous_name(name), "{name}");
    }
    for name in [
        "x_custom",
        "content-length",
        "x-forwarded-for",
        "host_name",
        "te_",
    ] {
        assert!(!ambiguous_name(name), "{name}");
    }
}

// ---------------------------------------------------------------------------
// Properties.

use quickcheck::{Arbitrary, Gen, QuickCheck};
use std::net::IpAddr;

/// Names the generator draws from: every hop-by-hop header, the protected
/// ones, and a few ordinary ones, in mixed case.
const NAMES: [&str; 18] = [
    "Connection",
    "keep-alive",
    "Proxy-Connection",
    "proxy-authenticate",
    "Proxy-Authorization",
    "TE",
    "trailer",
    "Transfer-Encoding",
    "Upgrade",
    "Host",
    "X-Forwarded-For",
    "x-forwarded-proto",
    "X-Forwarded-Host",
    "x-secret",
    "X-Custom",
    "content-type",
    "cookie",
    "x-a",
];

/// An arbitrary request or response header map, as a client or upstream
/// could send it: any of [`NAMES`] (or an arbitrary token) with arbitrary
/// valid values, and `Connection` lines that name arbitrary headers.
#[derive(Debug, Clone)]
struct Headers(HeaderMap);

fn token(g: &mut Gen) -> String {
    if bool::arbitrary(g) {
        (*g.choose(&NAMES).expect("NAMES is not empty")).to_string()
    } else {
        let s: String = String::arbitrary(g)
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        if s.is_empty() {
            "x".into()
        } else {
            s
        }
    }
}

fn value(g: &mut Gen, connection: bool) -> HeaderValue {
    let raw = if connection {
        let n = usize::arbitrary(g) % 4;
        let seps = [",", ", ", " ,", ",,", " "];
        (0..n)
            .map(|_| token(g))
            .collect::<Vec<_>>()
            .join(g.choose(&seps).expect("seps is not empty"))
    } else {
        String::arbitrary(g)
    };
    HeaderValue::from_str(&raw)
        .or_else(|_| {
            HeaderValue::from_bytes(
                &raw.bytes()
                    .filter(|b| b.is_ascii_graphic())
                    .collect::<Vec<_>>(),
            )
        })
        .expect("visible ASCII is a valid header value")
}

impl Arbitrary for Headers {
    fn arbitrary(g: &mut Gen) -> Headers {
        let mut map = HeaderMap::new();
        let n = usize::arbitrary(g) % 12;
        for _ in 0..n {
            let name = token(g);
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                continue;
            };
            let v = value(g, name == header::CONNECTION);
            map.append(name, v);
        }
        Headers(map)
    }
}

/// Every name a `Connection` line of `h` lists that rewriting must remove.
fn named_by_connection(h: &HeaderMap) -> Vec<HeaderName> {
    connection_tokens(h)
        .filter(|t| removable(t))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect()
}

fn no_hop_by_hop_left(before: &HeaderMap, after: &HeaderMap, upgrade: bool) -> bool {
    let fixed = HOP_BY_HOP
        .iter()
        .all(|n| !after.contains_key(n) || (upgrade && n == header::CONNECTION));
    let named = named_by_connection(before).iter().all(|n| {
        !after.contains_key(n) || (upgrade && (n == header::UPGRADE || n == header::CONNECTION))
    });
    let upgrade_header = upgrade || !after.contains_key(header::UPGRADE);
    let connection = !upgrade
        || after
            .get_all(header::CONNECTION)
            .iter()
            .eq([HeaderValue::from_static("upgrade")].iter());
    fixed && named && upgrade_header && connection
}

#[test]
fn rewritten_requests_keep_no_hop_by_hop_header_and_end_forwarded_for_with_the_client() {
    fn prop(h: Headers, client: IpAddr, https: bool, upgrade: bool) -> bool {
        let before = h.0;
        let mut after = before.clone();
        let host = after.get(header::HOST).cloned();
        let proto = if https { "https" } else { "http" };
        rewrite_request(&mut after, client, proto, host.as_ref(), upgrade);
        let xff: Vec<_> = after.get_all(&X_FORWARDED_FOR).iter().collect();
        let xff_ok = xff.len() == 1 && xff[0].as_bytes().ends_with(client.to_string().as_bytes());
        let prior_kept = before.get_all(&X_FORWARDED_FOR).iter().all(|v| {
            v.is_empty()
                || xff[0]
                    .as_bytes()
                    .windows(v.len())
                    .any(|w| w == v.as_bytes())
        });
        let host_kept = after.get(header::HOST) == before.get(header::HOST);
        no_hop_by_hop_left(&before, &after, upgrade)
            && xff_ok
            && prior_kept
            && host_kept
            && after[&X_FORWARDED_PROTO] == proto
    }
    QuickCheck::new()
        .tests(2000)
        .quickcheck(prop as fn(Headers, IpAddr, bool, bool) -> bool);
}

#[test]
fn cleaned_responses_keep_no_hop_by_hop_header() {
    fn prop(h: Headers) -> bool {
        let before = h.0;
        let mut after = before.clone();
        remove_hop_by_hop(&mut after, false);
        // End-to-end headers not named in Connection are all kept.
        let named = named_by_connection(&before);
        let kept = before.keys().all(|k| {
            HOP_BY_HOP.contains(k)
                || k == header::UPGRADE
                || named.contains(k)
                || after.get_all(k).iter().eq(before.get_all(k).iter())
        });
        no_hop_by_hop_left(&before, &after, false) && kept
    }
    QuickCheck::new()
        .tests(2000)
        .quickcheck(prop as fn(Headers) -> bool);
}

#[test]
fn ambiguous_name_is_its_definition() {
    // The definition: a `_` in the name, and a sensitive name it spells
    // once each `_` is read as `-`.
    fn definition(name: &str) -> bool {
        let spelled = name.replace('_', "-").to_ascii_lowercase();
        name.contains('_') && SENSITIVE.contains(&spelled.as_str())
    }
    // Sensitive names with some `-` turned into `_`, some letters raised,
    // and now and then one byte changed; and arbitrary strings.
    fn prop(pick: usize, flips: Vec<u8>, other: String) -> bool {
        let base = SENSITIVE[pick % SENSITIVE.len()].as_bytes();
        let name: Vec<u8> = base
            .iter()
            .zip(flips.iter().chain(std::iter::repeat(&0)))
            .map(|(&b, &f)| match (b, f % 8) {
                (b'-', 1..=4) => b'_',
                (_, 5) => b.to_ascii_uppercase(),
                (_, 6) => b'x',
                (_, 7) => b'_',
                _ => b,
            })
            .collect();
        let name = String::from_utf8(name).expect("ASCII");
        ambiguous_name(&name) == definition(&name) && ambiguous_name(&other) == definition(&other)
    }
    QuickCheck::new()
        .tests(5000)
        .quickcheck(prop as fn(usize, Vec<u8>, String) -> bool);
    assert!(definition("x_forwarded_for") && !definition("x-forwarded-for"));
}

#[test]
fn header_checks_never_panic_on_arbitrary_bytes() {
    fn prop(bytes: Vec<u8>, name: String) -> bool {
        let _ = valid_host(&bytes);
        let _ = ambiguous_name(&name);
        true
    }
    QuickCheck::new()
        .tests(2000)
        .quickcheck(prop as fn(Vec<u8>, String) -> bool);
}

#[test]
fn ip_text_matches_display_for_v4_and_v6() {
    let cases: [IpAddr; 6] = [
        "0.0.0.0".parse().unwrap(),
        "127.0.0.1".parse().unwrap(),
        "10.20.100.255".parse().unwrap(),
        "9.99.199.200".parse().unwrap(),
        "::1".parse().unwrap(),
        "2001:db8:85a3::8a2e:370:7334".parse().unwrap(),
    ];
    for ip in cases {
        let mut buf = [0u8; 64];
        assert_eq!(ip_text(ip, &mut buf), ip.to_string().as_bytes(), "{ip}");
    }
}

quickcheck::quickcheck! {
    fn ip_text_is_display(a: u8, b: u8, c: u8, d: u8, six: u128) -> bool {
        let v4 = IpAddr::from([a, b, c, d]);
        let v6 = IpAddr::from(std::net::Ipv6Addr::from(six));
        let mut buf = [0u8; 64];
        let ok4 = ip_text(v4, &mut buf) == v4.to_string().as_bytes();
        let ok6 = ip_text(v6, &mut buf) == v6.to_string().as_bytes();
        ok4 && ok6
    }
}

#[test]
fn the_name_scan_knows_exactly_the_hop_by_hop_list() {
    assert!(HOP_BY_HOP.iter().all(|h| is_hop_by_hop(h.as_str())));
    for name in NAMES {
        let listed = HOP_BY_HOP
            .iter()
            .any(|h| h.as_str() == name.to_ascii_lowercase());
        assert_eq!(is_hop_by_hop(&name.to_ascii_lowercase()), listed, "{name}");
    }
}

#[test]
fn a_response_with_only_connection_keep_alive_keeps_everything_else() {
    let mut h = map(&[
        ("connection", "keep-alive"),
        ("content-length", "3"),
        ("server", "origin"),
    ]);
    remove_hop_by_hop(&mut h, false);
    assert!(!h.contains_key(header::CONNECTION));
    assert_eq!(h.len(), 2);
}

#[test]
fn forwarded_lines_are_what_the_rewrite_sets_in_the_map() {
    fn prop(client: IpAddr, https: bool, with_host: bool) -> bool {
        let proto = if https { "https" } else { "http" };
        let host = with_host.then(|| HeaderValue::from_static("Agent.Example:8443"));
        let mut headers = map(&[("accept", "*/*")]);
        rewrite_request(&mut headers, client, proto, host.as_ref(), false);
        let mut set = Vec::new();
        for (name, value) in &headers {
            if name.as_str().starts_with("x-forwarded-") {
                set.extend_from_slice(name.as_str().as_bytes());
                set.extend_from_slice(b": ");
                set.extend_from_slice(value.as_bytes());
                set.extend_from_slice(b"\r\n");
            }
        }
        let mut lines = Vec::new();
        push_forwarded_lines(&mut lines, client, proto, host.as_ref());
        lines == set
    }
    QuickCheck::new()
        .tests(500)
        .quickcheck(prop as fn(IpAddr, bool, bool) -> bool);
}

/// `valid_host` as its documentation states it, for the property below.
fn valid_host_by_definition(value: &[u8]) -> bool {
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
        let end = value.iter().position(|&b| b == b':').unwrap_or(value.len());
        let name = &value[..end];
        let ok = !name.is_empty()
            && name
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        (ok, &value[end..])
    };
    host_ok
        && match rest {
            [] => true,
            [b':', port @ ..] => port.len() <= 5 && port.iter().all(u8::is_ascii_digit),
            _ => false,
        }
}

#[test]
fn valid_host_agrees_with_its_definition() {
    // Bytes drawn mostly from those a Host value is made of, so that valid
    // values come up as often as invalid ones.
    fn prop(picks: Vec<u8>, raw: u8) -> bool {
        const ALPHABET: &[u8] = b"aZ09-._:[]f:1 @%/";
        let value: Vec<u8> = picks
            .iter()
            .map(|&p| match usize::from(p) % (ALPHABET.len() + 1) {
                i if i < ALPHABET.len() => ALPHABET[i],
                _ => raw,
            })
            .collect();
        valid_host(&value) == valid_host_by_definition(&value)
    }
    QuickCheck::new()
        .tests(5000)
        .quickcheck(prop as fn(Vec<u8>, u8) -> bool);
}
