//! `[[route]]`: hosts, prefixes, references to services and duplicates.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv6Addr;

use toml::Spanned;

use super::scalar::is_host_char;
use super::{at, Checker};
use crate::config::raw::{Located, RawRoute, RawService};
use crate::config::RouteConfig;

impl Checker<'_> {
    pub(super) fn routes(
        &mut self,
        raw: &[Located<RawRoute>],
        services: &BTreeMap<String, Located<RawService>>,
        required: bool,
    ) -> Vec<RouteConfig> {
        if raw.is_empty() && required {
            let message =
                "no [[route]]: nothing would be served (add e.g. [[route]] service = \"NAME\")";
            self.issue(None, "route", message.to_string());
        }
        let names: Vec<&str> = services.keys().map(String::as_str).collect();
        let mut seen: HashMap<(Option<String>, String), usize> = HashMap::new();
        let mut routes = Vec::with_capacity(raw.len());
        for (i, route) in raw.iter().enumerate() {
            let key = format!("route[{i}]");
            let issues_before = self.issues.len();
            let config = self.route(route, &key, &names);
            // A route with a bad host or prefix is not compared: its
            // stand-in values could look like a duplicate.
            if self.issues.len() == issues_before {
                let spot = (config.host.clone(), config.path_prefix.clone());
                match seen.entry(spot) {
                    Entry::Occupied(first) => {
                        let message = format!(
                            "same host and path_prefix as route[{}] ({}, path_prefix {:?}): this route would never match; remove it or change its host or path_prefix",
                            first.get(),
                            describe_host(config.host.as_deref()),
                            config.path_prefix
                        );
                        self.issue(route_start(route), &key, message);
                    }
                    Entry::Vacant(slot) => {
                        slot.insert(i);
                    }
                }
            }
            routes.push(config);
        }
        routes
    }

    pub(super) fn route(
        &mut self,
        raw: &Located<RawRoute>,
        key: &str,
        names: &[&str],
    ) -> RouteConfig {
        let r = &raw.value;
        let host = r
            .host
            .as_ref()
            .and_then(|v| self.route_host(v, &format!("{key}.host")));
        let path_prefix = match &r.path_prefix {
            Some(v) => self.path_prefix(v, &format!("{key}.path_prefix")),
            None => "/".to_string(),
        };
        let service_key = format!("{key}.service");
        let example = format!("service = \"{}\"", names.first().unwrap_or(&"NAME"));
        let service =
            match self.required(r.service.as_ref(), route_start(raw), &service_key, &example) {
                Some(v) => {
                    if !names.contains(&v.get_ref().as_str()) {
                        let message = format!(
                            "{:?} is not a defined service ({})",
                            v.get_ref(),
                            defined(names)
                        );
                        self.issue(at(v), &service_key, message);
                    }
                    v.get_ref().clone()
                }
                None => String::new(),
            };
        RouteConfig::prefix(host, path_prefix, service)
    }

    /// A route host: lowercased, without scheme, port or path.
    pub(super) fn route_host(&mut self, value: &Spanned<String>, key: &str) -> Option<String> {
        match host_problem(value.get_ref()) {
            None => Some(value.get_ref().to_ascii_lowercase()),
            Some(message) => {
                self.issue(at(value), key, message);
                None
            }
        }
    }

    pub(super) fn path_prefix(&mut self, value: &Spanned<String>, key: &str) -> String {
        let text = value.get_ref();
        if !text.starts_with('/') {
            let message = format!("{text:?} does not start with \"/\" (write \"/{text}\")");
            self.issue(at(value), key, message);
        }
        text.clone()
    }
}

/// Where to point at a route: its table, else its first key.
fn route_start(route: &Located<RawRoute>) -> Option<usize> {
    let r = &route.value;
    route.start().or_else(|| {
        [&r.host, &r.path_prefix, &r.service]
            .into_iter()
            .flatten()
            .filter_map(at)
            .min()
    })
}

fn describe_host(host: Option<&str>) -> String {
    match host {
        Some(host) => format!("host {host:?}"),
        None => "no host".to_string(),
    }
}

/// "defined: \"a\", \"b\"", for messages about a missing service.
fn defined(names: &[&str]) -> String {
    if names.is_empty() {
        return "no [service.NAME] is defined".to_string();
    }
    let list: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    format!("defined: {}", list.join(", "))
}

/// Why `text` cannot be a route host, if it cannot.
fn host_problem(text: &str) -> Option<String> {
    if text.is_empty() {
        return Some("\"\" is empty (expected a host such as \"example.com\"; leave `host` out to match any host)".to_string());
    }
    if let Some((_, rest)) = text.split_once("://") {
        let bare = rest.split(['/', ':']).next().unwrap_or_default();
        return Some(format!(
            "{text:?} has a scheme; a route host is the host alone (write {bare:?})"
        ));
    }
    if text.parse::<Ipv6Addr>().is_ok() {
        return Some(format!(
            "{text:?} is an IPv6 address: write it in brackets, as the Host header does (\"[{text}]\")"
        ));
    }
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        if inner.parse::<Ipv6Addr>().is_ok() {
            return None;
        }
    }
    if let Some((bare, _)) = text.split_once('/') {
        return Some(format!(
            "{text:?} has a path; match paths with path_prefix (write {bare:?})"
        ));
    }
    if let Some((bare, _)) = text.rsplit_once(':') {
        return Some(format!(
            "{text:?} has a port; the Host header is matched without its port (write {bare:?})"
        ));
    }
    if !text.chars().all(is_host_char) {
        return Some(format!(
            "{text:?} is not a host name (expected letters, digits, '-' and '.', e.g. \"example.com\")"
        ));
    }
    None
}
