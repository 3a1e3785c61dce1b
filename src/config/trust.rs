//! Address ranges (`[server] trusted_ips`) and the upgrade protocols the
//! proxy tunnels (`[server] allowed_upgrades`), as the proxy reads them
//! per request (pure).

use std::net::IpAddr;

/// The upgrade protocols tunnelled when `allowed_upgrades` is not set.
pub const DEFAULT_UPGRADES: [&str; 1] = ["websocket"];

/// An address range in CIDR notation (`10.0.0.0/8`, `::1/128`); a bare
/// address is its own range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    net: IpAddr,
    prefix: u8,
}

impl IpRange {
    /// Parses `10.0.0.0/8`, `fd00::/8` or a bare address; `None` when it
    /// is neither (a prefix past the address's bits included).
    pub fn parse(text: &str) -> Option<IpRange> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let net: IpAddr = addr.trim().parse().ok()?;
        let bits = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
            Some(_) => return None,
            None => bits,
        };
        if prefix > bits {
            return None;
        }
        // An IPv4-mapped range is held as the IPv4 range it maps, as the
        // addresses it is compared with are.
        Some(match net {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => IpRange {
                    net: IpAddr::V4(v4),
                    prefix: prefix - 96,
                },
                None => IpRange { net, prefix },
            },
            _ => IpRange { net, prefix },
        })
    }

    /// Whether `ip` lies in the range (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => same_prefix(
                u128::from(u32::from(net)) << 96,
                u128::from(u32::from(ip)) << 96,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                same_prefix(u128::from(net), u128::from(ip), self.prefix)
            }
            _ => false,
        }
    }
}

/// Whether the first `prefix` bits of `a` and `b` are the same.
fn same_prefix(a: u128, b: u128, prefix: u8) -> bool {
    match prefix {
        0 => true,
        p => (a ^ b) >> (128 - u32::from(p)) == 0,
    }
}

/// Whether an `Upgrade` header value asks only for protocols in `allowed`
/// (lowercase names): each comma-separated token's name, before any
/// `/version`, compared without case.
pub fn upgrade_allowed<'a>(values: impl Iterator<Item = &'a [u8]>, allowed: &[String]) -> bool {
    let mut any = false;
    for value in values {
        for token in value.split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.is_empty() {
                continue;
            }
            let name = token.split(|&b| b == b'/').next().unwrap_or_default();
            if !allowed
                .iter()
                .any(|a| a.as_bytes().eq_ignore_ascii_case(name))
            {
                return false;
            }
            any = true;
        }
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_hold_their_addresses_only() {
        let r = IpRange::parse("10.1.0.0/16").unwrap();
        assert!(r.contains(ip("10.1.255.3")));
        assert!(!r.contains(ip("10.2.0.1")));
        assert!(r.contains(ip("::ffff:10.1.0.9")));
        let mapped = IpRange::parse("::ffff:10.1.0.0/112").unwrap();
        assert!(mapped.contains(ip("10.1.2.3")) && !mapped.contains(ip("10.2.0.1")));
        assert!(!r.contains(ip("fd00::1")));
        let one = IpRange::parse("127.0.0.1").unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        assert!(IpRange::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        let v6 = IpRange::parse("fd00::/8").unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0/8",
            "x",
            "1.2.3.4/+8",
        ] {
            assert_eq!(IpRange::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn upgrades_are_allowed_only_when_every_protocol_is() {
        let allowed = vec!["websocket".to_string()];
        let ok = |v: &[&[u8]]| upgrade_allowed(v.iter().copied(), &allowed);
        assert!(ok(&[b"websocket"]));
        assert!(ok(&[b"WebSocket"]));
        assert!(!ok(&[b"h2c"]));
        assert!(!ok(&[b"websocket, h2c"]));
        assert!(!ok(&[b"websocket", b"h2c"]));
        assert!(!ok(&[b""]));
    }
}
