//! `[service.NAME]`: pools and their servers, sticky and preview keys, health
//! checks, rollback and canary stages.

use std::net::Ipv6Addr;
use std::num::NonZeroU32;

use toml::Spanned;

use super::scalar::is_host_char;
use super::{at, is_bare_key, key_segment, Checker, NONZERO, POSITIVE, ZERO_OK};
use crate::config::raw::{
    Located, RawCanary, RawHealth, RawPool, RawPools, RawPreview, RawRollback, RawService,
    RawStage, RawSticky,
};
use crate::config::{
    Balance, CanaryStage, CheckKind, HealthConfig, KeySource, PoolConfig, PoolName, RollbackConfig,
    ServerAddr, ServiceConfig, DEFAULT_DRAIN_TIMEOUT, DEFAULT_HEALTHY_THRESHOLD,
    DEFAULT_HEALTH_INTERVAL, DEFAULT_HEALTH_PATH, DEFAULT_HEALTH_TIMEOUT, DEFAULT_MIN_REQUESTS,
    DEFAULT_UNHEALTHY_THRESHOLD,
};

/// `[service.NAME]` and everything under it.
impl Checker<'_> {
    pub(super) fn service(&mut self, name: &str, raw: &Located<RawService>) -> ServiceConfig {
        let key = format!("service.{}", key_segment(name));
        let start = service_start(raw);
        if !is_bare_key(name) {
            let message = format!("{name:?} is not a valid service name (expected letters, digits, '_' and '-', e.g. \"agent\")");
            self.issue(start, &key, message);
        }
        let s = &raw.value;
        let active = s
            .active
            .as_ref()
            .and_then(|v| self.pool_name(v, &format!("{key}.active")))
            .unwrap_or(PoolName::Blue);
        let drain_timeout = self.duration_or(
            s.drain_timeout.as_ref(),
            &format!("{key}.drain_timeout"),
            DEFAULT_DRAIN_TIMEOUT,
            ZERO_OK,
        );
        let balance = s
            .balance
            .as_ref()
            .and_then(|v| self.balance(v, &format!("{key}.balance")))
            .unwrap_or_default();
        let sticky = s.sticky.as_ref().and_then(|v| self.sticky(v, &key));
        let preview = s.preview.as_ref().and_then(|v| self.preview(v, &key));
        let health = s.health.as_ref().map(|v| self.health(&v.value, &key));
        let pools = self.pools(s.pools.as_ref(), &key, start);
        let rollback = s
            .rollback
            .as_ref()
            .and_then(|v| self.rollback(v, &key, start));
        let canary = s.canary.as_ref().map(|v| self.canary(&v.value, &key));
        let drain_sse_event = s
            .drain_sse_event
            .as_ref()
            .and_then(|v| self.sse_event(v, &format!("{key}.drain_sse_event")));
        ServiceConfig {
            name: name.to_string(),
            active,
            drain_timeout,
            balance,
            sticky,
            preview,
            health,
            pools,
            rollback,
            canary: canary.unwrap_or_default(),
            drain_sse_event,
        }
    }

    /// An event stream's event: not empty, no carriage return (a lone one
    /// would end a line early in some clients), ending in the blank line
    /// that dispatches it (added when missing).
    fn sse_event(&mut self, value: &Spanned<String>, key: &str) -> Option<String> {
        let text = value.get_ref();
        let problem = if text.trim().is_empty() {
            Some("is empty (expected an event, e.g. \"event: drain\\ndata: reconnect\\n\\n\")")
        } else if text.contains('\r') {
            Some("contains a carriage return (expected lines ended by \\n)")
        } else {
            None
        };
        if let Some(problem) = problem {
            self.issue(at(value), key, format!("{text:?} {problem}"));
            return None;
        }
        let mut event = text.trim_end_matches('\n').to_string();
        event.push_str("\n\n");
        Some(event)
    }

    pub(super) fn pool_name(&mut self, value: &Spanned<String>, key: &str) -> Option<PoolName> {
        let parsed = PoolName::parse(value.get_ref());
        if parsed.is_none() {
            let message = format!(
                "{:?} is not a pool (expected \"blue\" or \"green\")",
                value.get_ref()
            );
            self.issue(at(value), key, message);
        }
        parsed
    }

    pub(super) fn balance(&mut self, value: &Spanned<String>, key: &str) -> Option<Balance> {
        match value.get_ref().as_str() {
            "round_robin" => Some(Balance::RoundRobin),
            "p2c" => Some(Balance::P2c),
            other => {
                let message =
                    format!("{other:?} is not a balance (expected \"round_robin\" or \"p2c\")");
                self.issue(at(value), key, message);
                None
            }
        }
    }

    pub(super) fn sticky(&mut self, raw: &Located<RawSticky>, service: &str) -> Option<KeySource> {
        let key = format!("{service}.sticky");
        match (&raw.value.header, &raw.value.cookie) {
            (Some(header), None) => self
                .header_name(header, &format!("{key}.header"))
                .map(KeySource::Header),
            (None, Some(cookie)) => self
                .cookie_name(cookie, &format!("{key}.cookie"))
                .map(KeySource::Cookie),
            (header, _) => {
                let what = match header {
                    Some(_) => "has both header and cookie",
                    None => "is empty",
                };
                let message = format!("{what} (expected exactly one: sticky = {{ header = \"X-Session-Id\" }} or sticky = {{ cookie = \"session\" }})");
                self.issue(raw.start(), &key, message);
                None
            }
        }
    }

    pub(super) fn preview(
        &mut self,
        raw: &Located<RawPreview>,
        service: &str,
    ) -> Option<http::HeaderName> {
        let key = format!("{service}.preview.header");
        let example = "preview = { header = \"X-Cutover-Pool\" }";
        self.required(raw.value.header.as_ref(), raw.start(), &key, example)
            .and_then(|v| self.header_name(v, &key))
    }

    pub(super) fn health(&mut self, raw: &RawHealth, service: &str) -> HealthConfig {
        let key = |field: &str| format!("{service}.health.{field}");
        let path = match &raw.path {
            Some(v) => self.request_path(v, &key("path")).unwrap_or_default(),
            None => DEFAULT_HEALTH_PATH.to_string(),
        };
        let interval = self.duration_or(
            raw.interval.as_ref(),
            &key("interval"),
            DEFAULT_HEALTH_INTERVAL,
            NONZERO,
        );
        let timeout = self.duration_or(
            raw.timeout.as_ref(),
            &key("timeout"),
            DEFAULT_HEALTH_TIMEOUT,
            NONZERO,
        );
        let healthy = self.threshold(
            raw.healthy_threshold.as_ref(),
            &key("healthy_threshold"),
            DEFAULT_HEALTHY_THRESHOLD,
        );
        let unhealthy = self.threshold(
            raw.unhealthy_threshold.as_ref(),
            &key("unhealthy_threshold"),
            DEFAULT_UNHEALTHY_THRESHOLD,
        );
        HealthConfig {
            kind: CheckKind::Http,
            path,
            interval,
            timeout,
            healthy_threshold: healthy,
            unhealthy_threshold: unhealthy,
        }
    }

    pub(super) fn threshold(
        &mut self,
        value: Option<&Spanned<i64>>,
        key: &str,
        default: u32,
    ) -> NonZeroU32 {
        let n = self.int_or(value, key, 1..=i64::from(u32::MAX), default);
        NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
    }

    pub(super) fn pools(
        &mut self,
        raw: Option<&Located<RawPools>>,
        service: &str,
        service_start: Option<usize>,
    ) -> [PoolConfig; 2] {
        let blue = raw.and_then(|p| p.value.blue.as_ref());
        let green = raw.and_then(|p| p.value.green.as_ref());
        // A missing pool is reported at `[..pools]`, else at the other pool.
        let start = raw
            .and_then(Located::start)
            .or_else(|| blue.or(green).and_then(Located::start))
            .or(service_start);
        [
            self.pool(blue, &format!("{service}.pools.blue"), start),
            self.pool(green, &format!("{service}.pools.green"), start),
        ]
    }

    pub(super) fn pool(
        &mut self,
        raw: Option<&Located<RawPool>>,
        key: &str,
        pools_start: Option<usize>,
    ) -> PoolConfig {
        let mut pool = PoolConfig::default();
        let Some(raw) = raw else {
            let message = format!("missing pool (expected [{key}] servers = [\"host:port\"])");
            self.issue(pools_start, key, message);
            return pool;
        };
        let servers_key = format!("{key}.servers");
        let example = "servers = [\"127.0.0.1:5000\"]";
        let start = raw.start().or(pools_start);
        let Some(servers) = self.required(raw.value.servers.as_ref(), start, &servers_key, example)
        else {
            return pool;
        };
        if servers.get_ref().is_empty() {
            let message =
                format!("[] is empty: a pool needs at least one server (expected e.g. {example})");
            self.issue(at(servers), &servers_key, message);
        }
        for (i, server) in servers.get_ref().iter().enumerate() {
            match parse_server(server.get_ref()) {
                Ok(addr) => pool.servers.push(addr),
                Err(message) => self.issue(at(server), &format!("{servers_key}[{i}]"), message),
            }
        }
        pool
    }

    pub(super) fn rollback(
        &mut self,
        raw: &Located<RawRollback>,
        service: &str,
        service_start: Option<usize>,
    ) -> Option<RollbackConfig> {
        let table = raw.start().or(service_start);
        let r = &raw.value;
        let key = |field: &str| format!("{service}.rollback.{field}");
        let max_error_rate = self
            .required(
                r.max_error_rate.as_ref(),
                table,
                &key("max_error_rate"),
                "max_error_rate = 0.05",
            )
            .and_then(|v| self.rate(v, &key("max_error_rate")));
        let max_p99 = self
            .required(
                r.max_p99.as_ref(),
                table,
                &key("max_p99"),
                "max_p99 = \"2s\"",
            )
            .and_then(|v| self.duration(v, &key("max_p99"), NONZERO));
        let window = self
            .required(r.window.as_ref(), table, &key("window"), "window = \"60s\"")
            .and_then(|v| self.duration(v, &key("window"), NONZERO));
        let min_requests = self.int_or(
            r.min_requests.as_ref(),
            &key("min_requests"),
            POSITIVE,
            DEFAULT_MIN_REQUESTS,
        );
        let cooldown = self
            .required(
                r.cooldown.as_ref(),
                table,
                &key("cooldown"),
                "cooldown = \"5m\"",
            )
            .and_then(|v| self.duration(v, &key("cooldown"), ZERO_OK));
        let max_per_hour = self
            .required(
                r.max_per_hour.as_ref(),
                table,
                &key("max_per_hour"),
                "max_per_hour = 3",
            )
            .and_then(|v| self.int(v, &key("max_per_hour"), 1..=i64::from(u32::MAX)));
        let max_stream_abort_rate = r
            .max_stream_abort_rate
            .as_ref()
            .map(|v| self.rate(v, &key("max_stream_abort_rate")));
        let max_ttfb_p99 = r
            .max_ttfb_p99
            .as_ref()
            .map(|v| self.duration(v, &key("max_ttfb_p99"), NONZERO));
        Some(RollbackConfig {
            max_error_rate: max_error_rate?,
            max_p99: max_p99?,
            window: window?,
            min_requests,
            cooldown: cooldown?,
            max_per_hour: max_per_hour?,
            max_stream_abort_rate: optional(max_stream_abort_rate)?,
            max_ttfb_p99: optional(max_ttfb_p99)?,
        })
    }

    pub(super) fn canary(&mut self, raw: &RawCanary, service: &str) -> Vec<CanaryStage> {
        let stages = raw.stages.as_deref().unwrap_or_default();
        let mut out = Vec::with_capacity(stages.len());
        for (i, stage) in stages.iter().enumerate() {
            let key = format!("{service}.canary.stages[{i}]");
            out.extend(self.stage(stage, &key));
        }
        out
    }

    pub(super) fn stage(&mut self, raw: &Located<RawStage>, stage: &str) -> Option<CanaryStage> {
        let table = raw.start();
        let s = &raw.value;
        let key = |field: &str| format!("{stage}.{field}");
        let weight = self
            .required(s.weight.as_ref(), table, &key("weight"), "weight = 5")
            .and_then(|v| self.int(v, &key("weight"), 1..=100));
        let hold = self
            .required(s.hold.as_ref(), table, &key("hold"), "hold = \"5m\"")
            .and_then(|v| self.duration(v, &key("hold"), NONZERO));
        let max_error_rate = self
            .required(
                s.max_error_rate.as_ref(),
                table,
                &key("max_error_rate"),
                "max_error_rate = 0.01",
            )
            .and_then(|v| self.rate(v, &key("max_error_rate")));
        let max_p99 = self
            .required(
                s.max_p99.as_ref(),
                table,
                &key("max_p99"),
                "max_p99 = \"1s\"",
            )
            .and_then(|v| self.duration(v, &key("max_p99"), NONZERO));
        let min_requests = self.int_or(
            s.min_requests.as_ref(),
            &key("min_requests"),
            POSITIVE,
            DEFAULT_MIN_REQUESTS,
        );
        let max_stream_abort_rate = s
            .max_stream_abort_rate
            .as_ref()
            .map(|v| self.rate(v, &key("max_stream_abort_rate")));
        let max_ttfb_p99 = s
            .max_ttfb_p99
            .as_ref()
            .map(|v| self.duration(v, &key("max_ttfb_p99"), NONZERO));
        Some(CanaryStage {
            weight: weight?,
            hold: hold?,
            max_error_rate: max_error_rate?,
            max_p99: max_p99?,
            min_requests,
            max_stream_abort_rate: optional(max_stream_abort_rate)?,
            max_ttfb_p99: optional(max_ttfb_p99)?,
        })
    }
}

/// An optional key's value: `Some(None)` when absent, `None` when present
/// and invalid (the issue is recorded).
fn optional<T>(checked: Option<Option<T>>) -> Option<Option<T>> {
    match checked {
        Some(None) => None,
        checked => Some(checked.flatten()),
    }
}

/// Where to point at a service: its table, else the first of its parts.
///
/// A service written only as `[service.a.pools.blue]` and the like has no
/// table span of its own.
fn service_start(raw: &Located<RawService>) -> Option<usize> {
    let s = &raw.value;
    let pools = s.pools.as_ref();
    let scalars = [&s.active, &s.drain_timeout, &s.balance];
    let tables = [
        s.sticky.as_ref().and_then(Located::start),
        s.preview.as_ref().and_then(Located::start),
        s.health.as_ref().and_then(Located::start),
        pools.and_then(Located::start),
        pools
            .and_then(|p| p.value.blue.as_ref())
            .and_then(Located::start),
        pools
            .and_then(|p| p.value.green.as_ref())
            .and_then(Located::start),
        s.rollback.as_ref().and_then(Located::start),
        s.canary.as_ref().and_then(Located::start),
        s.canary
            .as_ref()
            .and_then(|c| c.value.stages.as_ref())
            .and_then(|stages| stages.first())
            .and_then(Located::start),
    ];
    raw.start().or_else(|| {
        let scalars = scalars.into_iter().flatten().filter_map(at);
        tables.into_iter().flatten().chain(scalars).min()
    })
}

/// A pool server: `host:port` or `http://host:port`.
fn parse_server(text: &str) -> Result<ServerAddr, String> {
    let expected = "expected \"host:port\" or \"http://host:port\", e.g. \"127.0.0.1:5000\"";
    let rest = match text.split_once("://") {
        None => text,
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
            return Err(format!(
                "{text:?}: https upstreams are not supported ({expected})"
            ));
        }
        Some((scheme, _)) => return Err(format!("{text:?} has scheme {scheme:?} ({expected})")),
    };
    if let Some(i) = rest.find(['/', '?', '#']) {
        let (addr, path) = rest.split_at(i);
        return Err(format!(
            "{text:?} has a path {path:?} after the port; a server is only a host and a port (write {addr:?})"
        ));
    }
    let (host, port) =
        split_host_port(rest).map_err(|why| format!("{text:?} {why} ({expected})"))?;
    let port = match port.parse::<u16>() {
        Ok(n) if n > 0 && port.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => {
            return Err(format!(
                "{text:?} has port {port:?} (expected a port from 1 to 65535)"
            ))
        }
    };
    Ok(ServerAddr {
        host: host.to_string(),
        port,
    })
}

/// Splits `host:port`; an IPv6 host is written in brackets. The error says
/// what is wrong, to follow the quoted value.
fn split_host_port(text: &str) -> Result<(&str, &str), String> {
    if let Some(inner) = text.strip_prefix('[') {
        let Some((host, after)) = inner.split_once(']') else {
            return Err("has an unclosed '['".to_string());
        };
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(format!(
                "has {host:?} in brackets, which is not an IPv6 address"
            ));
        }
        return match after.strip_prefix(':') {
            Some(port) => Ok((host, port)),
            None => Err("has no port".to_string()),
        };
    }
    match text.rsplit_once(':') {
        None => Err("has no port".to_string()),
        Some((host, _)) if host.contains(':') => {
            Err("has an IPv6 address without brackets (write it as \"[::1]:5000\")".to_string())
        }
        Some(("", _)) => Err("has no host".to_string()),
        Some((host, _)) if !host.chars().all(is_host_char) => {
            Err(format!("has an invalid host {host:?}"))
        }
        Some(pair) => Ok(pair),
    }
}
