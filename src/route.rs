//! Route matching: the request's Host (without port, case-insensitive) and
//! its path select a service.
//!
//! Each host has its list of routes, and the host-less routes one more; a
//! request tries its host's list, then the host-less one. In a list, the
//! file's routes come first, longest `path_prefix` first (the file's order
//! among equals); Docker routes follow, highest Traefik priority first,
//! then longest path. A route may match its path exactly (Traefik's
//! `Path`), be served on some listeners only (entrypoints), and carry
//! middlewares, handed to the caller with the service.
//!
//! Pure and allocation-free on the common path (a lowercase Host). Built once
//! per snapshot; never takes a lock.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Listener, Listeners, Middlewares, RouteConfig};

/// One route of a host's list.
#[derive(Debug, Clone)]
struct Entry {
    path: Box<str>,
    exact: bool,
    listeners: Listeners,
    service: usize,
    middlewares: Option<Arc<Middlewares>>,
}

impl Entry {
    fn matches(&self, listener: Option<Listener>, path: &str) -> bool {
        let path_ok = if self.exact {
            path == &*self.path
        } else {
            path.starts_with(&*self.path)
        };
        path_ok && listener.is_none_or(|l| self.listeners.contains(l))
    }
}

/// What a request was routed to.
#[derive(Debug, Clone, Copy)]
pub struct Matched<'a> {
    /// The index of the service in the snapshot.
    pub service: usize,
    /// The route's middlewares, if it has any.
    pub middlewares: Option<&'a Arc<Middlewares>>,
}

/// The route table of one snapshot: host-specific routes first, then the
/// host-less ones, each list in match order.
#[derive(Debug, Clone, Default)]
pub struct Router {
    hosts: HashMap<Box<str>, Vec<Entry>>,
    any_host: Vec<Entry>,
}

impl Router {
    /// Builds the table. `service_index` maps a route's service name to the
    /// index of that service in the snapshot (validated config guarantees it
    /// exists; a route whose service is missing is skipped).
    pub fn new(routes: &[RouteConfig], service_index: impl Fn(&str) -> Option<usize>) -> Router {
        let mut router = Router::default();
        let mut keyed: Vec<(Option<Box<str>>, Rank, Entry)> = Vec::with_capacity(routes.len());
        for route in routes {
            let Some(service) = service_index(&route.service) else {
                continue;
            };
            let entry = Entry {
                path: route.path_prefix.as_str().into(),
                exact: route.exact,
                listeners: route.listeners,
                service,
                middlewares: route.middlewares.clone().filter(|m| !m.is_empty()),
            };
            let host = route.host.as_deref().map(|h| h.to_ascii_lowercase().into());
            keyed.push((host, Rank::of(route), entry));
        }
        // Stable sort: among equal ranks the first route given wins.
        keyed.sort_by_key(|(_, rank, _)| *rank);
        for (host, _, entry) in keyed {
            match host {
                Some(host) => router.hosts.entry(host).or_default().push(entry),
                None => router.any_host.push(entry),
            }
        }
        router
    }

    /// The service index for a request, or `None` (404), on any listener.
    ///
    /// `host` is the Host header or URI authority as sent, possibly with a port.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<usize> {
        self.find(None, host, path).map(|m| m.service)
    }

    /// The route a request on `listener` (any listener when `None`) takes:
    /// its service and middlewares.
    pub fn find(
        &self,
        listener: Option<Listener>,
        host: Option<&str>,
        path: &str,
    ) -> Option<Matched<'_>> {
        if !self.hosts.is_empty() {
            if let Some(host) = host.map(strip_port) {
                let found = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                    self.hosts.get(host.to_ascii_lowercase().as_str())
                } else {
                    self.hosts.get(host)
                };
                if let Some(matched) = found.and_then(|list| first(list, listener, path)) {
                    return Some(matched);
                }
            }
        }
        first(&self.any_host, listener, path)
    }
}

/// The order of a host's routes: the file's before Docker's; the file's by
/// longest prefix, Docker's by highest priority, then longest path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    from_provider: bool,
    priority: std::cmp::Reverse<i64>,
    length: std::cmp::Reverse<usize>,
}

impl Rank {
    fn of(route: &RouteConfig) -> Rank {
        Rank {
            from_provider: route.priority.is_some(),
            priority: std::cmp::Reverse(route.priority.unwrap_or(0)),
            length: std::cmp::Reverse(route.path_prefix.len()),
        }
    }
}

fn first<'a>(list: &'a [Entry], listener: Option<Listener>, path: &str) -> Option<Matched<'a>> {
    list.iter()
        .find(|e| e.matches(listener, path))
        .map(|e| Matched {
            service: e.service,
            middlewares: e.middlewares.as_ref(),
        })
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
        RouteConfig::prefix(
            host.map(str::to_string),
            prefix.to_string(),
            service.to_string(),
        )
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

    fn docker(
        host: Option<&str>,
        path: &str,
        exact: bool,
        priority: i64,
        service: &str,
    ) -> RouteConfig {
        RouteConfig {
            exact,
            priority: Some(priority),
            ..route(host, path, service)
        }
    }

    #[test]
    fn an_exact_path_matches_only_itself() {
        let r = router(&[docker(None, "/health", true, 10, "a")]);
        assert_eq!(r.route(None, "/health"), Some(0));
        assert_eq!(r.route(None, "/health/x"), None);
        assert_eq!(r.route(None, "/healthz"), None);
    }

    #[test]
    fn docker_routes_go_by_priority_after_the_files_routes() {
        let r = router(&[
            docker(Some("h"), "/", false, 100, "a"),
            docker(Some("h"), "/api", false, 5, "b"),
            route(Some("h"), "/files", "c"),
        ]);
        // The higher priority wins over the longer path.
        assert_eq!(r.route(Some("h"), "/api/x"), Some(0));
        // The file's route comes first in its host's list.
        assert_eq!(r.route(Some("h"), "/files/x"), Some(2));
    }

    #[test]
    fn a_route_on_one_listener_is_not_found_on_the_other() {
        let only_https = RouteConfig {
            listeners: Listeners::NONE.with(Listener::Https),
            ..docker(None, "/", false, 1, "a")
        };
        let r = router(&[only_https, docker(None, "/", false, 0, "b")]);
        let on = |l| r.find(Some(l), None, "/").map(|m| m.service);
        assert_eq!(on(Listener::Https), Some(0));
        assert_eq!(on(Listener::Http), Some(1));
    }

    #[test]
    fn middlewares_come_with_the_match_and_empty_ones_are_dropped() {
        let with = |m: Middlewares| RouteConfig {
            middlewares: Some(Arc::new(m)),
            ..docker(None, "/", false, 1, "a")
        };
        let strip = Middlewares {
            strip_prefixes: vec![vec!["/api".into()]],
            ..Middlewares::default()
        };
        let r = router(&[with(strip.clone())]);
        let found = r
            .find(None, None, "/api")
            .and_then(|m| m.middlewares.cloned());
        assert_eq!(found.as_deref(), Some(&strip));
        let r = router(&[with(Middlewares::default())]);
        assert!(r.find(None, None, "/").unwrap().middlewares.is_none());
    }

    #[test]
    fn strip_port_handles_ipv6_and_plain_hosts() {
        assert_eq!(strip_port("[::1]:8080"), "::1");
        assert_eq!(strip_port("[::1]"), "::1");
        assert_eq!(strip_port("a.b:1"), "a.b");
        assert_eq!(strip_port("a.b"), "a.b");
    }
}
