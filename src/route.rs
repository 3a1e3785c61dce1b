//! Route matching: the request's Host (without port, case-insensitive) and the
//! longest `path_prefix` select a service.
//!
//! Pure and allocation-free on the common path (a lowercase Host). Built once
//! per snapshot; never takes a lock.

use std::collections::HashMap;

use crate::config::RouteConfig;

/// One prefix of a host's route list.
#[derive(Debug, Clone)]
struct Prefix {
    prefix: Box<str>,
    service: usize,
}

/// The route table of one snapshot: host-specific routes first, then the
/// host-less ones, each list ordered by prefix length, longest first.
#[derive(Debug, Clone, Default)]
pub struct Router {
    hosts: HashMap<Box<str>, Vec<Prefix>>,
    any_host: Vec<Prefix>,
}

impl Router {
    /// Builds the table. `service_index` maps a route's service name to the
    /// index of that service in the snapshot (validated config guarantees it
    /// exists; a route whose service is missing is skipped).
    pub fn new(routes: &[RouteConfig], service_index: impl Fn(&str) -> Option<usize>) -> Router {
        let mut router = Router::default();
        for route in routes {
            let Some(service) = service_index(&route.service) else {
                continue;
            };
            let entry = Prefix {
                prefix: route.path_prefix.as_str().into(),
                service,
            };
            match &route.host {
                Some(host) => router
                    .hosts
                    .entry(host.to_ascii_lowercase().into())
                    .or_default()
                    .push(entry),
                None => router.any_host.push(entry),
            }
        }
        // Stable sort: among equal lengths the first route in the file wins.
        for list in router.hosts.values_mut() {
            list.sort_by_key(|p| std::cmp::Reverse(p.prefix.len()));
        }
        router
            .any_host
            .sort_by_key(|p| std::cmp::Reverse(p.prefix.len()));
        router
    }

    /// The service index for a request, or `None` (404).
    ///
    /// `host` is the Host header or URI authority as sent, possibly with a port.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<usize> {
        if !self.hosts.is_empty() {
            if let Some(host) = host.map(strip_port) {
                let found = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                    self.hosts.get(host.to_ascii_lowercase().as_str())
                } else {
                    self.hosts.get(host)
                };
                if let Some(service) = found.and_then(|list| longest(list, path)) {
                    return Some(service);
                }
            }
        }
        longest(&self.any_host, path)
    }
}

fn longest(list: &[Prefix], path: &str) -> Option<usize> {
    list.iter()
        .find(|p| path.starts_with(&*p.prefix))
        .map(|p| p.service)
}

/// `example.com:8080` → `example.com`, `[::1]:80` → `::1`, a trailing dot
/// (`example.com.`) removed.
pub fn strip_port(host: &str) -> &str {
    let host = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        match host.rfind(':') {
            Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
            _ => host,
        }
    };
    host.strip_suffix('.').unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, prefix: &str, service: &str) -> RouteConfig {
        RouteConfig {
            host: host.map(str::to_string),
            path_prefix: prefix.to_string(),
            service: service.to_string(),
        }
    }

    fn router(routes: &[RouteConfig]) -> Router {
        let names = ["a", "b", "c", "d"];
        Router::new(routes, |s| names.iter().position(|n| *n == s))
    }

    #[test]
    fn longest_prefix_wins_regardless_of_order() {
        let r = router(&[
            route(None, "/", "a"),
            route(None, "/api/", "b"),
            route(None, "/api/v2/", "c"),
        ]);
        assert_eq!(r.route(None, "/"), Some(0));
        assert_eq!(r.route(None, "/api/x"), Some(1));
        assert_eq!(r.route(None, "/api/v2/x"), Some(2));
        assert_eq!(r.route(None, "/apix"), Some(0));
    }

    #[test]
    fn host_route_beats_hostless_and_falls_back_when_its_paths_miss() {
        let r = router(&[
            route(None, "/", "a"),
            route(Some("agent.localhost"), "/v1/", "b"),
        ]);
        assert_eq!(r.route(Some("agent.localhost"), "/v1/chat"), Some(1));
        assert_eq!(r.route(Some("agent.localhost"), "/other"), Some(0));
        assert_eq!(r.route(Some("other.localhost"), "/v1/chat"), Some(0));
        assert_eq!(r.route(None, "/v1/chat"), Some(0));
    }

    #[test]
    fn host_match_ignores_port_and_case() {
        let r = router(&[route(Some("agent.localhost"), "/", "a")]);
        assert_eq!(r.route(Some("Agent.LocalHost:8080"), "/"), Some(0));
        assert_eq!(r.route(Some("agent.localhost."), "/"), Some(0));
        assert_eq!(r.route(Some("other"), "/"), None);
        assert_eq!(r.route(None, "/"), None);
    }

    #[test]
    fn no_match_is_none() {
        let r = router(&[route(None, "/api/", "a")]);
        assert_eq!(r.route(None, "/"), None);
    }

    #[test]
    fn strip_port_handles_ipv6_and_plain_hosts() {
        assert_eq!(strip_port("[::1]:8080"), "::1");
        assert_eq!(strip_port("[::1]"), "::1");
        assert_eq!(strip_port("a.b:1"), "a.b");
        assert_eq!(strip_port("a.b"), "a.b");
    }
}
