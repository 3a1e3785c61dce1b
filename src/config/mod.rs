//! Configuration: `proxy.toml` parsed into raw serde structs (`raw`), then
//! validated into the typed [`Config`] (`validate`).
//!
//! [`load`] is the only entry point, used by `cutover run`, `cutover check` and
//! reload alike. After validation nothing downstream re-checks a value: the
//! typed config holds `SocketAddr`, `Duration`, `NonZero*` and enums.
//!
//! This module depends on nothing else in the crate.

pub mod check;
mod providers;
pub mod raw;
mod routing;
#[cfg(test)]
mod tests;
mod trust;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use providers::{
    docker_only, DockerConfig, Providers, DEFAULT_DOCKER_ENDPOINT, DEFAULT_DOCKER_STATE_DIR,
};
pub use routing::{HeaderEdit, Listener, Listeners, Middlewares, Redirect};
pub use trust::{upgrade_allowed, IpRange, DEFAULT_UPGRADES};
pub use validate::{parse, parse_with_docker, validate, Locator};

/// Default `server.listen`.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Default `server.limits.header_read_timeout`: 10 s.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `server.limits.max_header_bytes`: 64 KiB.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 65_536;
/// Default `server.limits.connect_timeout`: 5 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `server.limits.response_timeout`: 60 s.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `server.limits.idle_timeout`: 60 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `server.limits.max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default `state.path`, relative to the config file's directory.
pub const DEFAULT_STATE_PATH: &str = "cutover-state.json";
/// Default `service.NAME.drain_timeout`: 30 s.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `service.NAME.health.path`.
pub const DEFAULT_HEALTH_PATH: &str = "/health";
/// Default `service.NAME.health.interval`: 2 s.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
/// Default `service.NAME.health.timeout`: 1 s.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Default `service.NAME.health.healthy_threshold`.
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
/// Default `service.NAME.health.unhealthy_threshold`.
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;
/// Default canary stage `min_requests` and rollback `min_requests`.
pub const DEFAULT_MIN_REQUESTS: u64 = 50;

/// A validated configuration. Built only by [`load`] / [`parse`].
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this config was read from (for reload and for messages).
    pub path: PathBuf,
    /// `[server]`.
    pub server: ServerConfig,
    /// `[admin]`.
    pub admin: AdminConfig,
    /// `[state]`.
    pub state: StateConfig,
    /// `[[route]]`, in file order.
    pub routes: Vec<RouteConfig>,
    /// `[service.NAME]`, sorted by name.
    pub services: Vec<ServiceConfig>,
    /// `[providers]`: sources of services other than this file.
    pub providers: Providers,
    /// `[cluster]`: the release state shared by a fleet through etcd;
    /// `None`: the state file alone.
    pub cluster: Option<ClusterConfig>,
    /// Whether `path` is a config file, re-read on reload (`false` for
    /// `cutover run --docker` without one).
    pub from_file: bool,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// `listen`: plain HTTP (HTTP/1.1 and h2c) listener. Default `0.0.0.0:8080`.
    pub listen: SocketAddr,
    /// `workers`: tokio worker threads. Default: the number of cores (`None`).
    pub workers: Option<std::num::NonZeroUsize>,
    /// `[server.limits]`.
    pub limits: Limits,
    /// `[server.tls]`: optional HTTPS listener.
    pub tls: Option<TlsConfig>,
    /// `allowed_upgrades`: the `Upgrade` protocols tunnelled, lowercase.
    /// Default `["websocket"]`; a request asking for another goes on as a
    /// plain request, without its `Upgrade`.
    pub allowed_upgrades: Vec<String>,
    /// `trusted_ips`: peers whose `Forwarded`, `X-Real-IP` and
    /// `X-Forwarded-*` (other than `-For`, `-Proto`, `-Host`) are kept.
    /// From any other peer they are removed. Default: none.
    pub trusted_ips: Vec<IpRange>,
}

/// `[server.limits]`: every key optional.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Time to receive a request head. Default 10 s.
    pub header_read_timeout: Duration,
    /// Largest request head in bytes. Default 65536.
    pub max_header_bytes: usize,
    /// Largest request body in bytes; `None` = unlimited (the file's 0). Default unlimited.
    pub max_body_bytes: Option<u64>,
    /// Upstream TCP connect timeout. Default 5 s.
    pub connect_timeout: Duration,
    /// Time until the upstream's response head. Default 60 s.
    pub response_timeout: Duration,
    /// Idle client keep-alive connections are closed after this. Default 60 s.
    pub idle_timeout: Duration,
    /// Most open client connections. Default 10000.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_body_bytes: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// `[server.tls]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    /// HTTPS listener address.
    pub listen: SocketAddr,
    /// `cert` and `key`: the PEM certificate chain and private key
    /// (absolute, resolved against the config's directory) that answer
    /// every name nothing else answers, and clients that send none. `None`
    /// when the certificates come only from `certificates`, `directory` or
    /// ACME: a generated self-signed certificate answers in their place.
    pub default: Option<(PathBuf, PathBuf)>,
    /// More certificates, chosen by the server name a client asks for (SNI).
    pub certificates: Vec<SniCert>,
    /// `directory`: certificate/key pairs found there answer the names
    /// their certificates carry (absolute).
    pub directory: Option<PathBuf>,
    /// `[server.tls.acme]`.
    pub acme: Option<AcmeConfig>,
}

/// How an ACME server checks that the proxy answers for a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// A token served on the HTTP listener under `/.well-known/acme-challenge/`.
    Http01,
    /// A certificate presented on the HTTPS listener to ALPN `acme-tls/1`.
    TlsAlpn01,
}

impl AcmeChallenge {
    /// The name the config and RFC 8555 / 8737 use.
    pub fn as_str(self) -> &'static str {
        match self {
            AcmeChallenge::Http01 => "http-01",
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

/// `[server.tls.acme]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AcmeConfig {
    /// The ACME server's directory URL.
    pub directory_url: String,
    /// Lower-case DNS names; each gets its own certificate.
    pub domains: Vec<String>,
    /// Contact address for the account, if any.
    pub email: Option<String>,
    /// A PEM root the ACME server's HTTPS certificate is checked against
    /// (absolute); `None`: the system's roots.
    pub ca: Option<PathBuf>,
    /// Renew this long before a certificate expires. Default 30 days.
    pub renew_before: Duration,
    /// The challenge answered. Default HTTP-01.
    pub challenge: AcmeChallenge,
}

/// Default `[server.tls.acme] renew_before`.
pub const DEFAULT_ACME_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// One `[[server.tls.certificates]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SniCert {
    /// Lower-case server names: exact (`agent.example.com`) or one wildcard
    /// label (`*.example.com`, which matches `a.example.com` only).
    pub names: Vec<String>,
    /// PEM certificate chain (absolute).
    pub cert: PathBuf,
    /// PEM private key (absolute).
    pub key: PathBuf,
}

/// `[admin]`. The section is optional; without it there is no admin listener
/// and no socket.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AdminConfig {
    /// `listen`: HTTP admin API and `/metrics`.
    pub listen: Option<SocketAddr>,
    /// `socket`: Unix socket path (resolved against the config's directory).
    pub socket: Option<PathBuf>,
    /// `token_file` (resolved against the config's directory).
    pub token_file: Option<PathBuf>,
}

/// `[state]`.
#[derive(Debug, Clone, PartialEq)]
pub struct StateConfig {
    /// Where the active pool, weights and events are persisted. Default
    /// `cutover-state.json` beside the config file.
    pub path: PathBuf,
}

/// Default `cluster.prefix`.
pub const DEFAULT_CLUSTER_PREFIX: &str = "/cutover";
/// Default `cluster.lease_ttl`.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(3);

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// `etcd`: the endpoints (`http://host:port`), at least one.
    pub etcd: Vec<String>,
    /// `prefix`: every key lives under it, without a trailing `/`.
    pub prefix: String,
    /// `name`: this replica (default: the host name).
    pub name: String,
    /// `lease_ttl`: how long this replica's lease (its published counters,
    /// its leadership) outlives its last keep-alive. Whole seconds, at
    /// least 2.
    pub lease_ttl: Duration,
}

/// One `[[route]]`, or one alternative of a Docker router's rule.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// Host to match, lowercased, without port. `None` matches any host.
    pub host: Option<String>,
    /// Plain string prefix of the path. Default `/`.
    pub path_prefix: String,
    /// The path must be exactly `path_prefix` (Traefik's `Path`); the
    /// file's routes are prefixes.
    pub exact: bool,
    /// Name of an existing service.
    pub service: String,
    /// Traefik's router priority (its label, else the rule's length):
    /// `None` for the file's routes, which come first in their host's list
    /// (longest prefix first); Docker routes follow, highest priority first.
    pub priority: Option<i64>,
    /// The listeners the route is served on (Traefik's entrypoints). Default both.
    pub listeners: Listeners,
    /// What the route does to a request before it is forwarded (Traefik's
    /// middlewares); `None` for the file's routes.
    pub middlewares: Option<std::sync::Arc<Middlewares>>,
}

impl RouteConfig {
    /// A prefix route to `service` on every listener, with no priority and
    /// no middlewares (what a `[[route]]` is).
    pub fn prefix(host: Option<String>, path_prefix: String, service: String) -> RouteConfig {
        RouteConfig {
            host,
            path_prefix,
            exact: false,
            service,
            priority: None,
            listeners: Listeners::ALL,
            middlewares: None,
        }
    }
}

/// The two pools of every service.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PoolName {
    /// The `blue` pool.
    Blue,
    /// The `green` pool.
    Green,
}

impl PoolName {
    /// Both pools, blue first.
    pub const ALL: [PoolName; 2] = [PoolName::Blue, PoolName::Green];

    /// The other pool.
    pub fn other(self) -> PoolName {
        match self {
            PoolName::Blue => PoolName::Green,
            PoolName::Green => PoolName::Blue,
        }
    }

    /// `"blue"` or `"green"`.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolName::Blue => "blue",
            PoolName::Green => "green",
        }
    }

    /// Index into `[blue, green]` arrays.
    pub fn index(self) -> usize {
        match self {
            PoolName::Blue => 0,
            PoolName::Green => 1,
        }
    }

    /// Parses `"blue"` or `"green"` (case-insensitively).
    pub fn parse(s: &str) -> Option<PoolName> {
        if s.eq_ignore_ascii_case("blue") {
            Some(PoolName::Blue)
        } else if s.eq_ignore_ascii_case("green") {
            Some(PoolName::Green)
        } else {
            None
        }
    }
}

impl fmt::Display for PoolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a pool spreads requests over its healthy servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// Each server in turn (default).
    #[default]
    RoundRobin,
    /// Power of two random choices on the servers' in-flight counts.
    P2c,
}

/// Where a session key is read from (`sticky`) or a pool override (`preview`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A request header (name lowercased).
    Header(http::HeaderName),
    /// A cookie of this name.
    Cookie(String),
}

/// One `[service.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// The table key.
    pub name: String,
    /// Initial active pool when no state file exists. Default blue.
    pub active: PoolName,
    /// How long requests in flight on a pool that lost the traffic may run. Default 30 s.
    pub drain_timeout: Duration,
    /// `balance`: `"round_robin"` (default) or `"p2c"`.
    pub balance: Balance,
    /// `sticky`: keeps a session on one pool while a weight is set.
    pub sticky: Option<KeySource>,
    /// `preview`: a request whose header names a pool goes to that pool.
    pub preview: Option<http::HeaderName>,
    /// `[service.NAME.health]`; `None`: no active checks, servers count as healthy.
    pub health: Option<HealthConfig>,
    /// `[service.NAME.pools.blue]` and `.green`, indexed by [`PoolName::index`].
    pub pools: [PoolConfig; 2],
    /// `[service.NAME.rollback]`.
    pub rollback: Option<RollbackConfig>,
    /// `[[service.NAME.canary.stages]]`, in order (may be empty).
    pub canary: Vec<CanaryStage>,
    /// `drain_sse_event`: the event (its text, ending in a blank line) an
    /// event stream gets at the end of its pool's drain, before its
    /// response ends properly; `None`: such a stream is cut like any other.
    pub drain_sse_event: Option<String>,
}

impl ServiceConfig {
    /// The pool config of `name`.
    pub fn pool(&self, name: PoolName) -> &PoolConfig {
        &self.pools[name.index()]
    }

    /// The health checks of pool `name`: its own, else the service's.
    pub fn health_of(&self, name: PoolName) -> Option<&HealthConfig> {
        self.pool(name).health.as_ref().or(self.health.as_ref())
    }
}

/// How a server's health is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckKind {
    /// `GET path`, passed by a 2xx answer (the file's checks).
    #[default]
    Http,
    /// A TCP connection, passed once it is made (a container without a
    /// health-check label).
    Tcp,
}

/// `[service.NAME.health]`.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// What a check does. Default HTTP.
    pub kind: CheckKind,
    /// Path requested with GET (HTTP checks). Default `/health`.
    pub path: String,
    /// Time between checks. Default 2 s.
    pub interval: Duration,
    /// Time allowed for one check. Default 1 s.
    pub timeout: Duration,
    /// Consecutive passes to become healthy. Default 2.
    pub healthy_threshold: NonZeroU32,
    /// Consecutive failures to become unhealthy. Default 3.
    pub unhealthy_threshold: NonZeroU32,
}

/// One pool: its servers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PoolConfig {
    /// The servers: non-empty in the file; a Docker pool may have none.
    pub servers: Vec<ServerAddr>,
    /// The pool's own health checks, in place of the service's (a Docker
    /// pool's, from its containers' labels).
    pub health: Option<HealthConfig>,
}

/// A pool server: `host:port` or `http://host:port`, as written (minus the scheme).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerAddr {
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl ServerAddr {
    /// The address as an IP socket address when the host is an IP literal.
    pub fn ip(&self) -> Option<SocketAddr> {
        self.host
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// `[service.NAME.rollback]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackConfig {
    /// Share of 5xx and upstream failures that trips it (0..=1).
    pub max_error_rate: f64,
    /// p99 latency that trips it.
    pub max_p99: Duration,
    /// How long after a switch the new pool is watched.
    pub window: Duration,
    /// Requests needed before judging. Default 50.
    pub min_requests: u64,
    /// Time after an automated rollback during which no other one runs.
    pub cooldown: Duration,
    /// Most automated rollbacks per hour.
    pub max_per_hour: u32,
    /// Share of finished streams the upstream aborted that trips it; `None`: not judged.
    pub max_stream_abort_rate: Option<f64>,
    /// Streams' p99 time to first byte that trips it; `None`: not judged.
    pub max_ttfb_p99: Option<Duration>,
}

/// One `[[service.NAME.canary.stages]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryStage {
    /// Percent of new requests to the standby pool (1..=100).
    pub weight: u8,
    /// How long the stage holds.
    pub hold: Duration,
    /// Largest error share allowed (0..=1).
    pub max_error_rate: f64,
    /// Largest p99 allowed.
    pub max_p99: Duration,
    /// Requests the standby pool must answer in the stage before it is judged. Default 50.
    pub min_requests: u64,
    /// Largest share of finished streams the upstream aborted; `None`: not judged.
    pub max_stream_abort_rate: Option<f64>,
    /// Largest streams' p99 time to first byte; `None`: not judged.
    pub max_ttfb_p99: Option<Duration>,
}

/// Where a config value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A place in a config file.
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line, when known.
        line: Option<usize>,
        /// 1-based column (in characters), when known.
        column: Option<usize>,
    },
    /// A label of a container (a provider's config).
    Label {
        /// The container's name.
        container: String,
        /// The label's key.
        label: String,
    },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File { path, line, column } => {
                write!(f, "{}", path.display())?;
                if let Some(line) = line {
                    write!(f, ":{line}")?;
                    if let Some(column) = column {
                        write!(f, ":{column}")?;
                    }
                }
                Ok(())
            }
            Location::Label { container, label } => {
                write!(f, "container {container}: label {label}")
            }
        }
    }
}

/// One problem found in a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Where the value is: a file's line and column, or a container's label.
    pub location: Location,
    /// Dotted key path, e.g. `service.agent.health.interval`.
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl ConfigIssue {
    /// The 1-based line in a file, when known.
    pub fn line(&self) -> Option<usize> {
        match self.location {
            Location::File { line, .. } => line,
            Location::Label { .. } => None,
        }
    }

    /// The 1-based column in a file, when known.
    pub fn column(&self) -> Option<usize> {
        match self.location {
            Location::File { column, .. } => column,
            Location::Label { .. } => None,
        }
    }
}

/// `file:line:col: key: message` (or `container C: label L: key: message`).
impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.location)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read config: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The config was read but is invalid; every problem found is listed,
    /// each with its location.
    #[error("{}", join_lines(issues))]
    Invalid {
        /// Every problem, in the order of its source.
        issues: Vec<ConfigIssue>,
    },
}

impl ConfigError {
    /// Every problem as one line each (`file:line:col: key: message`).
    pub fn lines(&self) -> Vec<String> {
        match self {
            ConfigError::Read { .. } => vec![self.to_string()],
            ConfigError::Invalid { issues } => issues.iter().map(ToString::to_string).collect(),
        }
    }
}

fn join_lines(issues: &[ConfigIssue]) -> String {
    issues
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// As [`load`], with `[providers.docker]` (every default) where the file
/// has none: `cutover run --docker -c FILE`.
///
/// # Errors
///
/// As [`load`].
pub fn load_with_docker(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_with_docker(&text, path)
}

/// Reads and validates the config file at `path`.
///
/// # Errors
///
/// [`ConfigError::Read`] when the file cannot be read, [`ConfigError::Invalid`]
/// with every problem found otherwise.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}
