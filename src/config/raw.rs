//! Raw serde mirror of `proxy.toml`, as written, before validation: what
//! [`super::validate()`] takes from any source.
//!
//! Every struct denies unknown keys, so a typo is a parse error that names the
//! key. Every scalar that [`super::validate`] still has to check is kept as a
//! [`Spanned`] value so its error can point at a line and column, and every
//! table whose absence or content can be wrong is a [`Located`] so a missing
//! key can be reported where its table is. Keys that are required are still
//! `Option` here: validation reports each missing one instead of serde
//! stopping at the first. Nothing in this module checks a value.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a TOML document")]
pub struct RawConfig {
    /// `[server]`; absent means every default.
    pub server: Option<Located<RawServer>>,
    /// `[admin]`; absent means no admin listener and no socket.
    pub admin: Option<Located<RawAdmin>>,
    /// `[state]`; absent means `cutover-state.json` beside the config.
    pub state: Option<Located<RawState>>,
    /// `[[route]]`, in file order.
    pub route: Option<Vec<Located<RawRoute>>>,
    /// `[service.NAME]`, keyed (and so sorted) by name.
    pub service: Option<BTreeMap<String, Located<RawService>>>,
    /// `[providers]`.
    pub providers: Option<Located<RawProviders>>,
    /// `[cluster]`; absent means a proxy of its own (the state file).
    pub cluster: Option<Located<RawCluster>>,
}

/// `[cluster]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawCluster {
    /// etcd endpoints, `http://host:port`. Required.
    pub etcd: Option<Spanned<Vec<Spanned<String>>>>,
    /// Key prefix. Default `/cutover`.
    pub prefix: Option<Spanned<String>>,
    /// This replica's name. Default: the host name.
    pub name: Option<Spanned<String>>,
    /// Time to live of this replica's etcd lease. Default 3 s.
    pub lease_ttl: Option<Spanned<String>>,
}

/// `[providers]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawProviders {
    /// `[providers.docker]`.
    pub docker: Option<Located<RawDocker>>,
}

/// `[providers.docker]`: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawDocker {
    /// `unix:///path` or `tcp://host:port`. Default `unix:///var/run/docker.sock`.
    pub endpoint: Option<Spanned<String>>,
    /// Read containers without `traefik.enable`. Default true.
    pub exposed_by_default: Option<Spanned<bool>>,
    /// Network name preferred when a container is on several.
    pub network: Option<Spanned<String>>,
    /// `"key"` or `"key=value"` labels a container must have to be read.
    pub constraints: Option<Spanned<Vec<Spanned<String>>>>,
    /// Traefik entrypoint name → `"http"` or `"https"`.
    pub entrypoints: Option<Located<BTreeMap<String, Spanned<String>>>>,
}

/// `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawServer {
    /// Plain HTTP listener, `ip:port`. Default `0.0.0.0:8080`.
    pub listen: Option<Spanned<String>>,
    /// Tokio worker threads, at least 1. Default: the number of cores.
    pub workers: Option<Spanned<i64>>,
    /// `[server.limits]`.
    pub limits: Option<Located<RawLimits>>,
    /// `[server.tls]`.
    pub tls: Option<Located<RawTls>>,
    /// Protocol names. Default `["websocket"]`.
    pub allowed_upgrades: Option<Spanned<Vec<Spanned<String>>>>,
    /// CIDR ranges or addresses. Default none.
    pub trusted_ips: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `[server.limits]`: every key optional, defaults in `super::DEFAULT_*`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawLimits {
    /// Duration string. Default 10 s.
    pub header_read_timeout: Option<Spanned<String>>,
    /// Bytes, at least 1024. Default 65536.
    pub max_header_bytes: Option<Spanned<i64>>,
    /// Bytes; 0 means unlimited. Default 0.
    pub max_body_bytes: Option<Spanned<i64>>,
    /// Duration string. Default 5 s.
    pub connect_timeout: Option<Spanned<String>>,
    /// Duration string. Default 60 s.
    pub response_timeout: Option<Spanned<String>>,
    /// Duration string. Default 60 s.
    pub idle_timeout: Option<Spanned<String>>,
    /// Connections, at least 1. Default 10000.
    pub max_connections: Option<Spanned<i64>>,
}

/// `[server.tls]`: all three keys required when the table is present.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawTls {
    /// HTTPS listener, `ip:port`. Required.
    pub listen: Option<Spanned<String>>,
    /// PEM certificate chain path. Required unless `certificates`, `directory` or `acme` is set.
    pub cert: Option<Spanned<String>>,
    /// PEM private key path. Required with `cert`.
    pub key: Option<Spanned<String>>,
    /// `[[server.tls.certificates]]`: more certificates, chosen by SNI.
    pub certificates: Option<Vec<Located<RawTlsCert>>>,
    /// A directory of certificate/key pairs, chosen by SNI from their names.
    pub directory: Option<Spanned<String>>,
    /// `[server.tls.acme]`: certificates obtained and renewed over ACME.
    pub acme: Option<Located<RawAcme>>,
}

/// `[server.tls.acme]`: `directory_url` and `domains` required.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawAcme {
    /// The ACME server's directory URL.
    pub directory_url: Option<Spanned<String>>,
    /// Domains to obtain certificates for (one certificate each).
    pub domains: Option<Spanned<Vec<Spanned<String>>>>,
    /// Contact address for the account.
    pub email: Option<Spanned<String>>,
    /// PEM root certificate the ACME server's HTTPS is checked against.
    pub ca: Option<Spanned<String>>,
    /// Duration string: renew this long before expiry. Default 30 days.
    pub renew_before: Option<Spanned<String>>,
    /// `"http-01"` (default) or `"tls-alpn-01"`.
    pub challenge: Option<Spanned<String>>,
}

/// One `[[server.tls.certificates]]`: all three keys required.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawTlsCert {
    /// Server names (exact, or `*.example.com`) this certificate answers.
    pub names: Option<Spanned<Vec<Spanned<String>>>>,
    /// PEM certificate chain path.
    pub cert: Option<Spanned<String>>,
    /// PEM private key path.
    pub key: Option<Spanned<String>>,
}

/// `[admin]`: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawAdmin {
    /// HTTP admin API listener, `ip:port`.
    pub listen: Option<Spanned<String>>,
    /// Unix socket path.
    pub socket: Option<Spanned<String>>,
    /// Bearer token file; required when `listen` is not loopback.
    pub token_file: Option<Spanned<String>>,
}

/// `[state]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawState {
    /// State file path. Default `cutover-state.json`.
    pub path: Option<Spanned<String>>,
}

/// One `[[route]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawRoute {
    /// Host without port; absent matches any host.
    pub host: Option<Spanned<String>>,
    /// Path prefix starting with `/`. Default `/`.
    pub path_prefix: Option<Spanned<String>>,
    /// Name of a `[service.NAME]`. Required.
    pub service: Option<Spanned<String>>,
}

/// One `[service.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawService {
    /// `"blue"` or `"green"`. Default blue.
    pub active: Option<Spanned<String>>,
    /// Duration string, may be 0. Default 30 s.
    pub drain_timeout: Option<Spanned<String>>,
    /// `"round_robin"` or `"p2c"`. Default round robin.
    pub balance: Option<Spanned<String>>,
    /// `{ header = "..." }` or `{ cookie = "..." }`.
    pub sticky: Option<Located<RawSticky>>,
    /// `{ header = "..." }`.
    pub preview: Option<Located<RawPreview>>,
    /// `[service.NAME.health]`.
    pub health: Option<Located<RawHealth>>,
    /// `[service.NAME.pools]`. Required, with both pools.
    pub pools: Option<Located<RawPools>>,
    /// `[service.NAME.rollback]`.
    pub rollback: Option<Located<RawRollback>>,
    /// `[service.NAME.canary]`.
    pub canary: Option<Located<RawCanary>>,
    /// The event an event stream gets at the end of its pool's drain.
    pub drain_sse_event: Option<Spanned<String>>,
}

/// `sticky = { header = "..." }` or `{ cookie = "..." }`: exactly one key.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an inline table such as { header = \"X-Session-Id\" } or { cookie = \"session\" }"
)]
pub struct RawSticky {
    /// Request header carrying the session key.
    pub header: Option<Spanned<String>>,
    /// Cookie carrying the session key.
    pub cookie: Option<Spanned<String>>,
}

/// `preview = { header = "..." }`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an inline table such as { header = \"X-Cutover-Pool\" }"
)]
pub struct RawPreview {
    /// Request header naming a pool. Required.
    pub header: Option<Spanned<String>>,
}

/// `[service.NAME.health]`: every key optional, defaults in `super::DEFAULT_*`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawHealth {
    /// Path starting with `/`. Default `/health`.
    pub path: Option<Spanned<String>>,
    /// Duration string. Default 2 s.
    pub interval: Option<Spanned<String>>,
    /// Duration string. Default 1 s.
    pub timeout: Option<Spanned<String>>,
    /// Consecutive passes, at least 1. Default 2.
    pub healthy_threshold: Option<Spanned<i64>>,
    /// Consecutive failures, at least 1. Default 3.
    pub unhealthy_threshold: Option<Spanned<i64>>,
}

/// `[service.NAME.pools]`: exactly the keys `blue` and `green`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawPools {
    /// `[service.NAME.pools.blue]`. Required.
    pub blue: Option<Located<RawPool>>,
    /// `[service.NAME.pools.green]`. Required.
    pub green: Option<Located<RawPool>>,
}

/// `[service.NAME.pools.POOL]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawPool {
    /// `host:port` or `http://host:port` strings. Required, non-empty.
    pub servers: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `[service.NAME.rollback]`.
///
/// The table is all or nothing: when it is present, every key except
/// `min_requests` must be set, and each missing one is reported. Guessing a
/// threshold for an automated rollback would hide a half-written section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawRollback {
    /// Share of failures, 0..=1. Required.
    pub max_error_rate: Option<Spanned<f64>>,
    /// Duration string. Required.
    pub max_p99: Option<Spanned<String>>,
    /// Duration string. Required.
    pub window: Option<Spanned<String>>,
    /// Requests, at least 1. Default 50.
    pub min_requests: Option<Spanned<i64>>,
    /// Duration string, may be 0. Required.
    pub cooldown: Option<Spanned<String>>,
    /// Rollbacks per hour, at least 1. Required.
    pub max_per_hour: Option<Spanned<i64>>,
    /// Share of finished streams the upstream aborted, 0..=1. Optional.
    pub max_stream_abort_rate: Option<Spanned<f64>>,
    /// Duration string: streams' p99 time to first byte. Optional.
    pub max_ttfb_p99: Option<Spanned<String>>,
}

/// `[service.NAME.canary]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawCanary {
    /// `[[service.NAME.canary.stages]]`; absent means no stages.
    pub stages: Option<Vec<Located<RawStage>>>,
}

/// One `[[service.NAME.canary.stages]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RawStage {
    /// Percent, 1..=100. Required.
    pub weight: Option<Spanned<i64>>,
    /// Duration string. Required.
    pub hold: Option<Spanned<String>>,
    /// Share of failures, 0..=1. Required.
    pub max_error_rate: Option<Spanned<f64>>,
    /// Duration string. Required.
    pub max_p99: Option<Spanned<String>>,
    /// Requests, at least 1. Default 50.
    pub min_requests: Option<Spanned<i64>>,
    /// Share of finished streams the upstream aborted, 0..=1. Optional.
    pub max_stream_abort_rate: Option<Spanned<f64>>,
    /// Duration string: streams' p99 time to first byte. Optional.
    pub max_ttfb_p99: Option<Spanned<String>>,
}

/// A table with its byte range in the file when it has one.
///
/// Like [`Spanned`], but a table that is only implied by a deeper header
/// (`[service.a.pools.blue]` implies `service.a` and `service.a.pools`) has no
/// span in `toml`, and `Spanned` fails on it; `Located` keeps `span: None`.
/// It speaks the same private protocol as `Spanned` (toml 0.8 /
/// serde_spanned 0.6); the config tests cover both kinds of table.
#[derive(Debug)]
pub struct Located<T> {
    /// Byte range of the table (header included) when it is written out.
    pub span: Option<Range<usize>>,
    /// The table.
    pub value: T,
}

impl<T> Located<T> {
    /// Byte offset where the table starts, when it is written out.
    pub fn start(&self) -> Option<usize> {
        self.span.as_ref().map(|span| span.start)
    }
}

// The private protocol `toml` uses to hand out spans (see `serde_spanned`).
const SPANNED_NAME: &str = "$__serde_spanned_private_Spanned";
const START_FIELD: &str = "$__serde_spanned_private_start";
const END_FIELD: &str = "$__serde_spanned_private_end";
const VALUE_FIELD: &str = "$__serde_spanned_private_value";
const SPANNED_FIELDS: &[&str] = &[START_FIELD, END_FIELD, VALUE_FIELD];

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, LocatedVisitor(PhantomData))
    }
}

struct LocatedVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for LocatedVisitor<T> {
    type Value = Located<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let first: Option<String> = map.next_key()?;
        if first.as_deref() != Some(START_FIELD) {
            // No span: `map` is the table itself, and its first key is read.
            let rest = Prepended { first, map };
            let value = T::deserialize(de::value::MapAccessDeserializer::new(rest))?;
            return Ok(Located { span: None, value });
        }
        let start: usize = map.next_value()?;
        let (mut end, mut value) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                END_FIELD => end = Some(map.next_value::<usize>()?),
                VALUE_FIELD => value = Some(map.next_value::<T>()?),
                other => return Err(de::Error::unknown_field(other, SPANNED_FIELDS)),
            }
        }
        match (end, value) {
            (Some(end), Some(value)) => Ok(Located {
                span: Some(start..end),
                value,
            }),
            (None, _) => Err(de::Error::missing_field(END_FIELD)),
            (_, None) => Err(de::Error::missing_field(VALUE_FIELD)),
        }
    }
}

/// A map whose first key was already taken out to look at it.
struct Prepended<A> {
    first: Option<String>,
    map: A,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Prepended<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        match self.first.take() {
            Some(key) => seed.deserialize(key.into_deserializer()).map(Some),
            None => self.map.next_key_seed(seed),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        self.map.next_value_seed(seed)
    }
}
