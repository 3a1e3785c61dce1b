//! One container's labels, read as Traefik reads them (pure): its routers,
//! services and middlewares, cutover's own labels, and what it ignores.
//!
//! Keys are matched without regard to case (`loadBalancer` and
//! `loadbalancer` alike), names (of routers, services, middlewares) as
//! written. A value that cannot be read is an issue naming the label and
//! what was expected; the rest of the container is still read. Any other
//! `traefik.*` or `cutover.*` label is listed as ignored.

use std::collections::BTreeMap;
use std::time::Duration;

use super::middlewares::{self, MiddlewareLabels};
pub use super::values::Labeled;
use super::values::{boolean, labeled, list, strip_provider};
use crate::config::{check, PoolName};

/// `traefik.http.routers.<name>.*`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouterLabels {
    /// `.rule`.
    pub rule: Option<Labeled<String>>,
    /// `.service`.
    pub service: Option<Labeled<String>>,
    /// `.priority`.
    pub priority: Option<Labeled<i64>>,
    /// `.entrypoints`, comma-separated.
    pub entrypoints: Option<Labeled<Vec<String>>>,
    /// `.middlewares`, comma-separated, `@docker` removed.
    pub middlewares: Option<Labeled<Vec<String>>>,
    /// `.tls.certresolver`: its hosts get certificates from
    /// `[server.tls.acme]`, whatever the resolver's name.
    pub certresolver: Option<Labeled<String>>,
    /// Its labels whose values cannot be read (the router is left out).
    pub bad: Vec<String>,
}

/// `traefik.http.services.<name>.loadbalancer.*`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceLabels {
    /// `.server.port`.
    pub port: Option<Labeled<u16>>,
    /// `.server.scheme` (only `http` is served).
    pub scheme: Option<Labeled<String>>,
    /// `.healthcheck.path`.
    pub health_path: Option<Labeled<String>>,
    /// `.healthcheck.interval`.
    pub health_interval: Option<Labeled<Duration>>,
    /// `.healthcheck.timeout`.
    pub health_timeout: Option<Labeled<Duration>>,
    /// Its labels whose values cannot be read (its servers are left out).
    pub bad: Vec<String>,
}

/// Everything one container's labels say.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Labels {
    /// `traefik.enable`.
    pub enable: Option<bool>,
    /// `traefik.docker.network`.
    pub network: Option<Labeled<String>>,
    /// Routers by name.
    pub routers: BTreeMap<String, RouterLabels>,
    /// Traefik services by name.
    pub services: BTreeMap<String, ServiceLabels>,
    /// Middlewares by name.
    pub middlewares: BTreeMap<String, MiddlewareLabels>,
    /// `cutover.pool`.
    pub pool: Option<Labeled<PoolName>>,
    /// `cutover.service`.
    pub service: Option<Labeled<String>>,
    /// `cutover.active`.
    pub active: Option<Labeled<bool>>,
    /// `cutover.drain_timeout`.
    pub drain_timeout: Option<Labeled<Duration>>,
    /// `cutover.rollback.*`: the automated-rollback watch.
    pub rollback: RollbackLabels,
    /// `cutover.canary.*`: the service's canary stages.
    pub canary: CanaryLabels,
    /// `traefik.*` and `cutover.*` labels not read, sorted.
    pub ignored: Vec<String>,
    /// Labels whose value cannot be read: label, what is wrong.
    pub issues: Vec<(String, String)>,
}

/// `cutover.canary.*`: one stage per weight, each judged by the same
/// thresholds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CanaryLabels {
    /// `cutover.canary.weights`: the stages' weights, rising (`5,25,50`).
    pub weights: Option<Vec<u8>>,
    /// `cutover.canary.hold`.
    pub hold: Option<Duration>,
    /// `cutover.canary.max_error_rate` and the other judgments.
    pub judge: Thresholds,
}

/// `cutover.rollback.*`, each as `[service.NAME.rollback]` has it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RollbackLabels {
    /// `cutover.rollback.window`.
    pub window: Option<Duration>,
    /// `cutover.rollback.cooldown`.
    pub cooldown: Option<Duration>,
    /// `cutover.rollback.max_per_hour`.
    pub max_per_hour: Option<u32>,
    /// `cutover.rollback.max_error_rate` and the other judgments.
    pub judge: Thresholds,
}

/// The judgments a canary stage and the automated rollback share, read
/// alike under `cutover.canary.` and `cutover.rollback.`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Thresholds {
    /// `max_error_rate` (0 to 1).
    pub max_error_rate: Option<f64>,
    /// `max_p99`.
    pub max_p99: Option<Duration>,
    /// `min_requests`.
    pub min_requests: Option<u64>,
    /// `max_stream_abort_rate` (0 to 1).
    pub max_stream_abort_rate: Option<f64>,
    /// `max_ttfb_p99`.
    pub max_ttfb_p99: Option<Duration>,
}

impl Thresholds {
    /// Fills each field not set here from `other` (the first container
    /// setting a field wins).
    pub fn or(&mut self, other: &Thresholds) {
        self.max_error_rate = self.max_error_rate.or(other.max_error_rate);
        self.max_p99 = self.max_p99.or(other.max_p99);
        self.min_requests = self.min_requests.or(other.min_requests);
        self.max_stream_abort_rate = self.max_stream_abort_rate.or(other.max_stream_abort_rate);
        self.max_ttfb_p99 = self.max_ttfb_p99.or(other.max_ttfb_p99);
    }

    /// A threshold label's FIELD; false when FIELD is not one.
    fn read(&mut self, field: &str, value: &str) -> Result<bool, String> {
        match field {
            "max_error_rate" => self.max_error_rate = Some(share(value)?),
            "max_p99" => self.max_p99 = Some(check::duration(value, false)?),
            "min_requests" => self.min_requests = Some(count(value)?),
            "max_stream_abort_rate" => self.max_stream_abort_rate = Some(share(value)?),
            "max_ttfb_p99" => self.max_ttfb_p99 = Some(check::duration(value, false)?),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl Labels {
    /// Whether the container has anything for the provider (a router, a
    /// service, a middleware or a cutover label).
    pub fn is_empty(&self) -> bool {
        self.routers.is_empty()
            && self.services.is_empty()
            && self.middlewares.is_empty()
            && self.pool.is_none()
            && self.service.is_none()
            && self.active.is_none()
    }

    fn issue(&mut self, label: &str, message: String) {
        self.issues.push((label.to_string(), message));
    }
}

/// Reads every label of a container (in key order).
pub fn read(labels: &BTreeMap<String, String>) -> Labels {
    let mut out = Labels::default();
    for (key, value) in labels {
        let lower = key.to_ascii_lowercase();
        let parts: Vec<&str> = lower.split('.').collect();
        let names: Vec<&str> = key.split('.').collect();
        let read = match parts.first() {
            Some(&"traefik") => traefik(&mut out, key, &parts, &names, value),
            Some(&"cutover") => cutover(&mut out, key, &parts, value),
            _ => true,
        };
        if !read {
            out.ignored.push(key.clone());
        }
    }
    // A router or service named only by labels that are not read (`tls`,
    // `sticky`) is not one.
    out.routers.retain(|_, r| *r != RouterLabels::default());
    out.services.retain(|_, s| *s != ServiceLabels::default());
    out
}

/// A `traefik.*` label; false when it is not one cutover reads.
fn traefik(out: &mut Labels, key: &str, parts: &[&str], names: &[&str], value: &str) -> bool {
    match parts {
        ["traefik", "enable"] => {
            match boolean(value) {
                Ok(b) => out.enable = Some(b),
                Err(m) => out.issue(key, m),
            }
            true
        }
        ["traefik", "docker", "network"] => {
            out.network = Some(labeled(value.trim().to_string(), key));
            true
        }
        ["traefik", "http", "routers", _, rest @ ..] => {
            let router = out.routers.entry(names[3].to_string()).or_default();
            match router_label(router, key, rest, value) {
                Ok(read) => read,
                Err(m) => {
                    router.bad.push(key.to_string());
                    out.issue(key, m);
                    true
                }
            }
        }
        ["traefik", "http", "services", _, "loadbalancer", rest @ ..] => {
            let service = out.services.entry(names[3].to_string()).or_default();
            match service_label(service, key, rest, value) {
                Ok(read) => read,
                Err(m) => {
                    service.bad.push(key.to_string());
                    out.issue(key, m);
                    true
                }
            }
        }
        ["traefik", "http", "middlewares", _, rest @ ..] => {
            let name = names[3].to_string();
            let header = names.get(6).copied();
            match middlewares::read(&mut out.middlewares, name, key, rest, header, value) {
                Ok(read) => read,
                Err(m) => {
                    out.issue(key, m);
                    true
                }
            }
        }
        _ => false,
    }
}

fn router_label(
    router: &mut RouterLabels,
    key: &str,
    rest: &[&str],
    value: &str,
) -> Result<bool, String> {
    match rest {
        ["rule"] => router.rule = Some(labeled(value.to_string(), key)),
        ["service"] => router.service = Some(labeled(strip_provider(value.trim()), key)),
        ["priority"] => {
            let n = value.trim().parse::<i64>().map_err(|_| {
                format!("{value:?} is not a priority (expected a whole number, e.g. 10)")
            })?;
            router.priority = Some(labeled(n, key));
        }
        ["entrypoints"] => router.entrypoints = Some(labeled(list(value), key)),
        ["middlewares"] => router.middlewares = Some(labeled(list(value), key)),
        ["tls", "certresolver"] => {
            router.certresolver = Some(labeled(value.trim().to_string(), key));
        }
        _ => return Ok(false),
    }
    Ok(true)
}

fn service_label(
    service: &mut ServiceLabels,
    key: &str,
    rest: &[&str],
    value: &str,
) -> Result<bool, String> {
    match rest {
        ["server", "port"] => service.port = Some(labeled(check::port(value.trim())?, key)),
        ["server", "scheme"] => {
            service.scheme = Some(labeled(value.trim().to_ascii_lowercase(), key));
        }
        ["healthcheck", "path"] => {
            service.health_path = Some(labeled(check::request_path(value.trim())?, key));
        }
        ["healthcheck", "interval"] => {
            service.health_interval = Some(labeled(duration(value)?, key));
        }
        ["healthcheck", "timeout"] => {
            service.health_timeout = Some(labeled(duration(value)?, key));
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// A `cutover.*` label; false when it is not one cutover reads.
fn cutover(out: &mut Labels, key: &str, parts: &[&str], value: &str) -> bool {
    let outcome = match parts {
        ["cutover", "pool"] => PoolName::parse(value.trim())
            .map(|p| out.pool = Some(labeled(p, key)))
            .ok_or_else(|| format!("{value:?} is not a pool (expected \"blue\" or \"green\")")),
        ["cutover", "service"] => {
            service_name(value.trim()).map(|name| out.service = Some(labeled(name, key)))
        }
        ["cutover", "active"] => boolean(value).map(|b| out.active = Some(labeled(b, key))),
        ["cutover", "drain_timeout"] => {
            check::duration(value.trim(), true).map(|d| out.drain_timeout = Some(labeled(d, key)))
        }
        ["cutover", "rollback", field] => match rollback(&mut out.rollback, field, value.trim()) {
            Ok(known) => return known,
            Err(m) => Err(m),
        },
        ["cutover", "canary", field] => match canary(&mut out.canary, field, value.trim()) {
            Ok(known) => return known,
            Err(m) => Err(m),
        },
        _ => return false,
    };
    if let Err(m) = outcome {
        out.issue(key, m);
    }
    true
}

/// A share from 0 to 1.
fn share(v: &str) -> Result<f64, String> {
    v.parse::<f64>()
        .ok()
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| format!("{v:?} is not a share (expected 0 to 1, e.g. 0.05)"))
}

/// A whole number above 0.
fn count(v: &str) -> Result<u64, String> {
    v.parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{v:?} is not a whole number above 0"))
}

/// A `cutover.canary.FIELD` label; false when FIELD is not one.
fn canary(c: &mut CanaryLabels, field: &str, value: &str) -> Result<bool, String> {
    match field {
        "weights" => {
            let expected = "expected rising percents from 1 to 100, e.g. \"5,25,50\"";
            let mut weights = Vec::new();
            for part in value.split(',') {
                let w = part
                    .trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|w| (1..=100).contains(w))
                    .ok_or_else(|| {
                        format!("{part:?} in {value:?} is not a percent ({expected})")
                    })?;
                if weights.last().is_some_and(|&last| last >= w) {
                    return Err(format!("{value:?} does not rise ({expected})"));
                }
                weights.push(w);
            }
            c.weights = Some(weights);
        }
        "hold" => c.hold = Some(check::duration(value, false)?),
        _ => return c.judge.read(field, value),
    }
    Ok(true)
}

/// A `cutover.rollback.FIELD` label; false when FIELD is not one.
fn rollback(r: &mut RollbackLabels, field: &str, value: &str) -> Result<bool, String> {
    match field {
        "window" => r.window = Some(check::duration(value, false)?),
        "cooldown" => r.cooldown = Some(check::duration(value, true)?),
        "max_per_hour" => {
            let n = count(value)?;
            r.max_per_hour = Some(u32::try_from(n).map_err(|_| format!("{value:?} is too large"))?);
        }
        _ => return r.judge.read(field, value),
    }
    Ok(true)
}

/// A cutover service name: what a URL path segment and a metric label can
/// carry plainly.
fn service_name(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?} is not a service name (expected letters, digits, '-', '_' and '.', e.g. \"agent\")"
        ))
    }
}

/// A duration as Traefik writes it: `"10s"`, or a whole number of seconds.
fn duration(value: &str) -> Result<Duration, String> {
    let text = value.trim();
    if let Ok(secs) = text.parse::<u64>() {
        if secs > 0 {
            return Ok(Duration::from_secs(secs));
        }
    }
    check::duration(text, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_pairs(pairs: &[(&str, &str)]) -> Labels {
        let map = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        read(&map)
    }

    #[test]
    fn the_seed_labels_read_fully() {
        let l = read_pairs(&[
            ("traefik.enable", "true"),
            ("traefik.http.routers.blue.rule", "Host(`your-domain.com`)"),
            ("traefik.http.routers.blue.service", "blue"),
            (
                "traefik.http.services.blue.loadbalancer.server.port",
                "5000",
            ),
        ]);
        assert_eq!(l.enable, Some(true));
        let router = &l.routers["blue"];
        assert_eq!(
            router.rule.as_ref().unwrap().value,
            "Host(`your-domain.com`)"
        );
        assert_eq!(router.service.as_ref().unwrap().value, "blue");
        assert_eq!(l.services["blue"].port.as_ref().unwrap().value, 5000);
        assert!(l.ignored.is_empty() && l.issues.is_empty(), "{l:?}");
    }

    #[test]
    fn keys_are_read_without_regard_to_case_and_names_as_written() {
        let l = read_pairs(&[
            ("traefik.http.services.Api.loadBalancer.server.Port", "8080"),
            ("traefik.http.routers.Api.Rule", "Host(`a`)"),
        ]);
        assert_eq!(l.services["Api"].port.as_ref().unwrap().value, 8080);
        assert!(l.routers["Api"].rule.is_some());
    }

    #[test]
    fn a_port_that_is_not_a_number_is_an_issue_naming_the_label() {
        let l = read_pairs(&[("traefik.http.services.s.loadbalancer.server.port", "http")]);
        assert_eq!(l.issues.len(), 1);
        assert_eq!(
            l.issues[0].0,
            "traefik.http.services.s.loadbalancer.server.port"
        );
        assert!(
            l.issues[0].1.contains("\"http\" is not a port"),
            "{:?}",
            l.issues
        );
    }

    #[test]
    fn labels_cutover_does_not_read_are_listed() {
        let l = read_pairs(&[
            ("traefik.http.routers.r.tls", "true"),
            ("traefik.http.routers.r.tls.certresolver", "le"),
            ("traefik.tcp.routers.t.rule", "HostSNI(`*`)"),
            ("traefik.http.services.s.loadbalancer.sticky.cookie", "true"),
            ("cutover.colour", "blue"),
            ("com.docker.compose.service", "blue"),
        ]);
        assert_eq!(
            l.ignored,
            [
                "cutover.colour",
                "traefik.http.routers.r.tls",
                "traefik.http.services.s.loadbalancer.sticky.cookie",
                "traefik.tcp.routers.t.rule",
            ]
        );
    }

    #[test]
    fn lists_drop_the_docker_provider_suffix_and_keep_others() {
        let l = read_pairs(&[
            ("traefik.http.routers.r.middlewares", "a@docker, b ,c@file"),
            ("traefik.http.routers.r.entrypoints", "web,websecure"),
        ]);
        let r = &l.routers["r"];
        assert_eq!(r.middlewares.as_ref().unwrap().value, ["a", "b", "c@file"]);
        assert_eq!(r.entrypoints.as_ref().unwrap().value, ["web", "websecure"]);
    }

    #[test]
    fn cutover_labels_are_read_and_checked() {
        let l = read_pairs(&[
            ("cutover.pool", "Green"),
            ("cutover.service", "agent"),
            ("cutover.active", "true"),
            ("cutover.drain_timeout", "10m"),
            ("cutover.rollback.window", "5s"),
            ("cutover.rollback.max_error_rate", "0.1"),
            ("cutover.rollback.min_requests", "eight"),
            ("cutover.rollback.max_stream_abort_rate", "0.02"),
            ("cutover.rollback.max_ttfb_p99", "800ms"),
        ]);
        assert_eq!(l.pool.unwrap().value, PoolName::Green);
        assert_eq!(l.service.unwrap().value, "agent");
        assert!(l.active.unwrap().value);
        assert_eq!(l.drain_timeout.unwrap().value, Duration::from_secs(600));
        assert_eq!(l.rollback.window, Some(Duration::from_secs(5)));
        assert_eq!(l.rollback.judge.max_error_rate, Some(0.1));
        assert_eq!(l.rollback.judge.min_requests, None);
        assert_eq!(l.rollback.judge.max_stream_abort_rate, Some(0.02));
        assert_eq!(
            l.rollback.judge.max_ttfb_p99,
            Some(Duration::from_millis(800))
        );
        assert!(l
            .issues
            .iter()
            .any(|(k, m)| k == "cutover.rollback.min_requests" && m.contains("\"eight\"")));
        let bad = read_pairs(&[("cutover.pool", "purple"), ("cutover.service", "a/b")]);
        assert_eq!(bad.issues.len(), 2, "{:?}", bad.issues);
    }

    #[test]
    fn canary_labels_are_read_and_bad_weights_named() {
        let l = read_pairs(&[
            ("cutover.canary.weights", "5, 25,50"),
            ("cutover.canary.hold", "30s"),
            ("cutover.canary.max_error_rate", "0.01"),
            ("cutover.canary.max_ttfb_p99", "1s"),
            ("cutover.canary.min_requests", "0"),
        ]);
        assert_eq!(l.canary.weights, Some(vec![5, 25, 50]));
        assert_eq!(l.canary.hold, Some(Duration::from_secs(30)));
        assert_eq!(l.canary.judge.max_error_rate, Some(0.01));
        assert_eq!(l.canary.judge.max_ttfb_p99, Some(Duration::from_secs(1)));
        assert_eq!(l.canary.judge.min_requests, None);
        assert_eq!(l.issues.len(), 1, "{:?}", l.issues);
        assert_eq!(l.issues[0].0, "cutover.canary.min_requests");
        for (bad, why) in [
            ("25,5", "does not rise"),
            ("0,50", "not a percent"),
            ("5,x", "\"x\""),
        ] {
            let l = read_pairs(&[("cutover.canary.weights", bad)]);
            assert_eq!(l.canary.weights, None, "{bad}");
            assert!(
                l.issues.len() == 1 && l.issues[0].1.contains(why),
                "{bad}: {:?}",
                l.issues
            );
        }
    }

    #[test]
    fn health_check_durations_take_a_unit_or_whole_seconds() {
        let l = read_pairs(&[
            (
                "traefik.http.services.s.loadbalancer.healthcheck.interval",
                "10",
            ),
            (
                "traefik.http.services.s.loadbalancer.healthcheck.timeout",
                "250ms",
            ),
            (
                "traefik.http.services.s.loadbalancer.healthcheck.path",
                "/health",
            ),
        ]);
        let s = &l.services["s"];
        assert_eq!(
            s.health_interval.as_ref().unwrap().value,
            Duration::from_secs(10)
        );
        assert_eq!(
            s.health_timeout.as_ref().unwrap().value,
            Duration::from_millis(250)
        );
        assert_eq!(s.health_path.as_ref().unwrap().value, "/health");
        let bad = read_pairs(&[(
            "traefik.http.services.s.loadbalancer.healthcheck.interval",
            "soon",
        )]);
        assert!(
            bad.issues[0].1.contains("is not a duration"),
            "{:?}",
            bad.issues
        );
    }
}
