//! `[providers]`: sources of services other than the config file. The
//! Docker provider reads containers' labels (see `crate::provider::docker`);
//! here is only what configures it, and the config `cutover run --docker`
//! starts from when there is no file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use super::{
    AdminConfig, Config, Limits, Listener, ServerConfig, StateConfig, DEFAULT_STATE_PATH,
    DEFAULT_UPGRADES,
};

/// Default `providers.docker.endpoint`.
pub const DEFAULT_DOCKER_ENDPOINT: &str = "unix:///var/run/docker.sock";
/// Where `cutover run --docker` keeps its admin socket and state file when
/// no config file names them (a volume in compose).
pub const DEFAULT_DOCKER_STATE_DIR: &str = "/var/lib/cutover";
/// The admin socket's file name in the state directory.
const SOCKET_FILE: &str = "cutover.sock";

/// `[providers]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Providers {
    /// `[providers.docker]`: services from containers' labels.
    pub docker: Option<DockerConfig>,
}

/// `[providers.docker]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerConfig {
    /// The engine: `unix:///path` or `tcp://host:port` (plain HTTP). Default
    /// `unix:///var/run/docker.sock`.
    pub endpoint: String,
    /// Whether a container without `traefik.enable` is read. Default true;
    /// false: only containers labelled `traefik.enable=true`.
    pub exposed_by_default: bool,
    /// The network whose address is used when a container is on several
    /// (its full name, e.g. `shop_default`). Default: none.
    pub network: Option<String>,
    /// Only containers with all these labels are read: a key (any value) or
    /// a key and its value. Default: none, every container.
    pub constraints: Vec<(String, Option<String>)>,
    /// Traefik entrypoint names and the listener each means. Default
    /// `web` = http, `websecure` = https.
    pub entrypoints: BTreeMap<String, Listener>,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            endpoint: DEFAULT_DOCKER_ENDPOINT.to_string(),
            exposed_by_default: true,
            network: None,
            constraints: Vec::new(),
            entrypoints: default_entrypoints(),
        }
    }
}

/// `web` = http, `websecure` = https: the names Traefik's documentation and
/// most compose files use.
pub(super) fn default_entrypoints() -> BTreeMap<String, Listener> {
    BTreeMap::from([
        ("web".to_string(), Listener::Http),
        ("websecure".to_string(), Listener::Https),
    ])
}

/// The config of `cutover run --docker` without a config file: the data
/// listener on `listen`, the admin API on `admin` when given, and the admin
/// socket and state file in `state_dir`; every service comes from the
/// Docker provider at `endpoint` (default settings otherwise).
pub fn docker_only(
    listen: SocketAddr,
    admin: Option<SocketAddr>,
    state_dir: &Path,
    docker: DockerConfig,
) -> Config {
    Config {
        path: state_dir.to_path_buf(),
        server: ServerConfig {
            listen,
            workers: None,
            limits: Limits::default(),
            tls: None,
            allowed_upgrades: DEFAULT_UPGRADES.map(String::from).to_vec(),
            trusted_ips: Vec::new(),
        },
        admin: AdminConfig {
            listen: admin,
            socket: Some(state_dir.join(SOCKET_FILE)),
            token_file: None,
        },
        state: StateConfig {
            path: state_dir.join(DEFAULT_STATE_PATH),
        },
        routes: Vec::new(),
        services: Vec::new(),
        providers: Providers {
            docker: Some(docker),
        },
        cluster: None,
        from_file: false,
    }
}
