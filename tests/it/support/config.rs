//! Config text for the tests: the header every harnessed proxy starts with,
//! routes and services, and loopback addresses nobody listens on.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use super::Upstream;

/// The file name of the config inside a proxy's dir.
pub const CONFIG_FILE: &str = "proxy.toml";
/// The file name of the state file inside a proxy's dir.
pub const STATE_FILE: &str = "cutover-state.json";
/// The file name of the admin socket inside a proxy's dir.
pub const SOCKET_FILE: &str = "cutover.sock";

/// The `[server]`, `[admin]` and `[state]` tables every in-process proxy's
/// config starts with: everything on loopback port 0, files beside the
/// config. A body may add `[server.limits]` or `[server.tls]` after it.
pub fn header() -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\nsocket = \"{SOCKET_FILE}\"\n\n\
         [state]\npath = \"{STATE_FILE}\"\n\n"
    )
}

/// The header of a config for the `cutover` binary: the proxy on `port`
/// (with `server`, more `[server]` lines), the admin API on the socket only,
/// the state beside the config.
pub fn binary_header(port: u16, server: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n{server}\n\
         [admin]\nsocket = \"{SOCKET_FILE}\"\n\n\
         [state]\npath = \"{STATE_FILE}\"\n\n"
    )
}

/// A TOML basic string.
pub fn toml_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// `["127.0.0.1:1", ...]`.
pub fn servers(addrs: &[SocketAddr]) -> String {
    let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!("[{}]", list.join(", "))
}

/// One `[[route]]`.
pub fn route(host: Option<&str>, path_prefix: &str, service: &str) -> String {
    let host = host
        .map(|h| format!("host = {}\n", toml_string(h)))
        .unwrap_or_default();
    format!(
        "[[route]]\n{host}path_prefix = {}\nservice = {}\n\n",
        toml_string(path_prefix),
        toml_string(service)
    )
}

/// One `[service.NAME]`, blue active, with `extra` keys in its table.
pub fn service_with(name: &str, blue: &[SocketAddr], green: &[SocketAddr], extra: &str) -> String {
    format!(
        "[service.{name}]\nactive = \"blue\"\n{extra}\n\n\
         [service.{name}.pools.blue]\nservers = {}\n\n\
         [service.{name}.pools.green]\nservers = {}\n\n",
        servers(blue),
        servers(green),
    )
}

/// One `[service.NAME]`, blue active.
pub fn service(name: &str, blue: &[SocketAddr], green: &[SocketAddr]) -> String {
    service_with(name, blue, green, "")
}

/// Every path to service `app`, whose blue and green pools have one server each.
pub fn blue_green(blue: &Upstream, green: &Upstream) -> String {
    route(None, "/", "app") + &service("app", &[blue.addr], &[green.addr])
}

/// Every path to service `app`, blue and green one server each, blue
/// active, drained for 1 s, with `extra` lines in `[service.app]` and
/// `tables` after it (e.g. `[service.app.rollback]`).
pub fn app(blue: &Upstream, green: &Upstream, extra: &str, tables: &str) -> String {
    format!(
        "{}[service.app]\nactive = \"blue\"\ndrain_timeout = \"1s\"\n{extra}\n\n\
         [service.app.pools.blue]\nservers = [\"{}\"]\n\n\
         [service.app.pools.green]\nservers = [\"{}\"]\n\n{tables}\n",
        route(None, "/", "app"),
        blue.addr,
        green.addr,
    )
}

/// A `[service.app.health]` table checking `/health` every 50 ms, one
/// result enough either way.
pub const FAST_HEALTH: &str = "[service.app.health]\npath = \"/health\"\ninterval = \"50ms\"\n\
     timeout = \"500ms\"\nhealthy_threshold = 1\nunhealthy_threshold = 1\n\n";

/// An address nobody listens on: a port bound and released.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

/// A loopback port free a moment ago (bound and released). Only for the
/// binary tests, which cannot report the ports they bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}
