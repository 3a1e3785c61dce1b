//! Choosing where a request goes within a service: first the pool (preview
//! header, then weights and stickiness), then a healthy server of that pool
//! (round robin or power of two choices on in-flight counts).
//!
//! Pure functions over a snapshot's [`Service`]: no I/O, no lock.

use std::sync::Arc;

use http::HeaderMap;

use crate::config::{Balance, KeySource, PoolName};
use crate::snapshot::{PoolView, Server, Service};

/// The pool for a request with these headers.
///
/// A `preview` header naming a pool wins. Otherwise, while a standby weight
/// is set, a sticky session key hashes into one of 100 buckets and the
/// buckets below the weight go to the standby pool, so a session on the
/// standby pool at 10% is still there at 50%. Without a key the split is
/// random.
pub fn pick_pool(service: &Service, headers: &HeaderMap) -> PoolName {
    if let Some(name) = &service.preview {
        if let Some(pool) = headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| PoolName::parse(v.trim()))
        {
            return pool;
        }
    }
    let weight = service.standby_weight;
    if weight == 0 {
        return service.active;
    }
    let standby = service.active.other();
    if weight >= 100 {
        return standby;
    }
    let bucket = match service
        .sticky
        .as_ref()
        .and_then(|k| session_key(k, headers))
    {
        Some(key) => bucket(key),
        None => fastrand::u8(0..100),
    };
    if bucket < weight {
        standby
    } else {
        service.active
    }
}

/// The session key of a request, if it carries one.
pub fn session_key<'a>(source: &KeySource, headers: &'a HeaderMap) -> Option<&'a [u8]> {
    match source {
        KeySource::Header(name) => headers
            .get(name)
            .map(|v| v.as_bytes())
            .filter(|v| !v.is_empty()),
        KeySource::Cookie(name) => cookie(headers, name),
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
        })
        .filter(|v| !v.is_empty())
}

/// The bucket (0..100) of a session key: FNV-1a, stable across restarts and
/// builds so a session keeps its pool.
pub fn bucket(key: &[u8]) -> u8 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % 100) as u8
}

/// A healthy server of `pool`, avoiding `exclude` when another is available;
/// `None` when the pool has no healthy server.
pub fn pick_server<'a>(
    pool: &'a PoolView,
    balance: Balance,
    exclude: Option<&Arc<Server>>,
) -> Option<&'a Arc<Server>> {
    let servers = &pool.healthy;
    let n = servers.len();
    let is_excluded = |s: &Arc<Server>| exclude.is_some_and(|e| Arc::ptr_eq(e, s));
    match n {
        0 => None,
        1 => Some(&servers[0]).filter(|s| !is_excluded(s)),
        _ => {
            let i = match balance {
                Balance::RoundRobin => pool.state.ticket() % n,
                Balance::P2c => {
                    let a = fastrand::usize(0..n);
                    let b = (a + 1 + fastrand::usize(0..n - 1)) % n;
                    if servers[b].inflight() < servers[a].inflight() {
                        b
                    } else {
                        a
                    }
                }
            };
            if is_excluded(&servers[i]) {
                Some(&servers[(i + 1) % n])
            } else {
                Some(&servers[i])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_is_stable_and_spread() {
        assert_eq!(bucket(b"session-1"), bucket(b"session-1"));
        let mut counts = [0u32; 100];
        for i in 0..10_000 {
            counts[bucket(format!("s{i}").as_bytes()) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 50 && c < 160), "{counts:?}");
    }

    #[test]
    fn cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            "a=1; session=xyz; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h, "session"), Some(&b"xyz"[..]));
        assert_eq!(cookie(&h, "sess"), None);
        assert_eq!(cookie(&h, "b"), Some(&b"2"[..]));
    }
}
