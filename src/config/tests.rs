//! Tests of [`parse`]: the SPEC example, defaults, path resolution, and one
//! case per class of error with its line, column, key and message.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// The example from SPEC.md, "Config (`proxy.toml`)", verbatim.
const SPEC_EXAMPLE: &str = r#"[server]
listen = "0.0.0.0:8080"
# workers = 2                       # tokio worker threads; default: number of cores
# [server.limits]                   # every key optional; defaults shown
# header_read_timeout = "10s"       # time to receive a request head (from accept, or from its
                                    # first byte on a kept-alive connection), else 408 / close
# max_header_bytes = 65536          # request head larger than this: 431
# max_body_bytes = 0                # 0 = unlimited; larger request bodies: 413
# connect_timeout = "5s"            # upstream connect, else 502 (after the one retry)
# response_timeout = "60s"          # upstream response head, else 504 (streams may run longer)
# idle_timeout = "60s"              # idle client keep-alive connections are closed
# max_connections = 10000           # open client connections; beyond it new ones wait
# [server.tls]                      # optional HTTPS listener (rustls), ALPN h2 + http/1.1
# listen = "0.0.0.0:8443"
# cert = "certs/cert.pem"
# key = "certs/key.pem"

[admin]
listen = "127.0.0.1:9090"           # HTTP admin API and /metrics
socket = "cutover.sock"             # Unix socket for `cutover ctl`, mode 0600
# token_file = "admin.token"       # required when `listen` is not a loopback address

[state]
path = "cutover-state.json"         # active pool, weights and events survive restarts

[[route]]
host = "agent.localhost"            # optional; matches the Host header (no port)
path_prefix = "/"                   # optional; longest prefix wins
service = "agent"

[service.agent]
active = "blue"                     # initial active pool when no state file exists
drain_timeout = "30s"
sticky = { header = "X-Session-Id" }    # or { cookie = "session" }; keeps a session on one pool
preview = { header = "X-Cutover-Pool" } # a request with this header = "green" goes to green

[service.agent.health]
path = "/health"
interval = "2s"
timeout = "1s"
healthy_threshold = 2
unhealthy_threshold = 3

[service.agent.pools.blue]
servers = ["127.0.0.1:5000"]
[service.agent.pools.green]
servers = ["127.0.0.1:5001"]

[service.agent.rollback]            # automated rollback after a switch or during a canary
max_error_rate = 0.05               # share of 5xx and upstream failures
max_p99 = "2s"
window = "60s"
min_requests = 50
cooldown = "5m"
max_per_hour = 3

[[service.agent.canary.stages]]
weight = 5
hold = "5m"
max_error_rate = 0.01
max_p99 = "1s"
# ... more stages; after the last one passes, the standby pool is promoted
"#;

const POOLS: &str = r#"[service.agent.pools.blue]
servers = ["127.0.0.1:5000"]

[service.agent.pools.green]
servers = ["127.0.0.1:5001"]
"#;

/// One route to one service with both pools: the smallest valid config.
fn minimal() -> String {
    format!("[[route]]\nservice = \"agent\"\n\n{POOLS}")
}

/// The minimal config with `extra` appended.
fn with(extra: &str) -> String {
    format!("{}\n{extra}\n", minimal())
}

const PATH: &str = "/etc/cutover/proxy.toml";

fn parse_ok(text: &str) -> Config {
    match parse(text, Path::new(PATH)) {
        Ok(config) => config,
        Err(err) => panic!("expected a valid config, got:\n{err}\n--- text:\n{text}"),
    }
}

fn issues(text: &str) -> Vec<ConfigIssue> {
    match parse(text, Path::new(PATH)) {
        Ok(_) => panic!("expected an invalid config:\n{text}"),
        Err(ConfigError::Invalid { issues }) => issues,
        Err(err) => panic!("unexpected error {err}"),
    }
}

/// 1-based line and column (in characters) of the last `needle` in `text`.
fn pos(text: &str, needle: &str) -> (Option<usize>, Option<usize>) {
    let offset = text.rfind(needle).expect("needle in text");
    let before = &text[..offset];
    let line = before.lines().count().max(1) + usize::from(before.ends_with('\n'));
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (Some(line), Some(column))
}

/// Asserts that `extra` appended to the minimal config gives exactly one
/// issue, at the last `needle`, with `key`, and a message containing each of
/// `parts`.
fn check(extra: &str, needle: &str, key: &str, parts: &[&str]) {
    let text = with(extra);
    let found = issues(&text);
    assert_eq!(
        found.len(),
        1,
        "one issue expected for {extra:?}: {found:#?}"
    );
    let issue = &found[0];
    assert_eq!(issue.key, key, "key for {extra:?}");
    assert_eq!(
        (issue.line(), issue.column()),
        pos(&text, needle),
        "position for {extra:?}: {issue:?}"
    );
    for part in parts {
        assert!(
            issue.message.contains(part),
            "{:?} lacks {part:?}",
            issue.message
        );
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn spec_example_parses_into_expected_values() {
    let config = parse_ok(SPEC_EXAMPLE);
    let dir = Path::new("/etc/cutover");
    assert_eq!(config.path, PathBuf::from(PATH));
    assert_eq!(
        config.server.listen,
        "0.0.0.0:8080".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(config.server.workers, None);
    assert_eq!(config.server.limits, Limits::default());
    assert_eq!(config.server.tls, None);
    assert_eq!(
        config.admin,
        AdminConfig {
            listen: Some("127.0.0.1:9090".parse().unwrap()),
            socket: Some(dir.join("cutover.sock")),
            token_file: None,
        }
    );
    assert_eq!(config.state.path, dir.join("cutover-state.json"));
    assert_eq!(
        config.routes,
        vec![RouteConfig::prefix(
            Some("agent.localhost".into()),
            "/".into(),
            "agent".into()
        )]
    );
    assert_eq!(config.services.len(), 1);
    let agent = &config.services[0];
    assert_eq!(agent.name, "agent");
    assert_eq!(agent.active, PoolName::Blue);
    assert_eq!(agent.drain_timeout, secs(30));
    assert_eq!(agent.balance, Balance::RoundRobin);
    assert_eq!(
        agent.sticky,
        Some(KeySource::Header(http::HeaderName::from_static(
            "x-session-id"
        )))
    );
    assert_eq!(
        agent.preview,
        Some(http::HeaderName::from_static("x-cutover-pool"))
    );
    assert_eq!(
        agent.health,
        Some(HealthConfig {
            kind: CheckKind::Http,
            path: "/health".into(),
            interval: secs(2),
            timeout: secs(1),
            healthy_threshold: NonZeroU32::new(2).unwrap(),
            unhealthy_threshold: NonZeroU32::new(3).unwrap(),
        })
    );
    let server = |port| ServerAddr {
        host: "127.0.0.1".into(),
        port,
    };
    assert_eq!(agent.pool(PoolName::Blue).servers, vec![server(5000)]);
    assert_eq!(agent.pool(PoolName::Green).servers, vec![server(5001)]);
    assert_eq!(
        agent.rollback,
        Some(RollbackConfig {
            max_error_rate: 0.05,
            max_p99: secs(2),
            max_stream_abort_rate: None,
            max_ttfb_p99: None,
            window: secs(60),
            min_requests: 50,
            cooldown: secs(300),
            max_per_hour: 3,
        })
    );
    assert_eq!(
        agent.canary,
        vec![CanaryStage {
            weight: 5,
            hold: secs(300),
            max_error_rate: 0.01,
            max_p99: secs(1),
            max_stream_abort_rate: None,
            max_ttfb_p99: None,
            min_requests: 50,
        }]
    );
}

#[test]
fn shipped_example_config_is_valid() {
    let text = include_str!("../../proxy.toml");
    let config = parse_ok(text);
    assert!(!config.routes.is_empty());
    assert!(!config.services.is_empty());
}

#[test]
fn defaults_apply_when_sections_are_absent() {
    let config = parse_ok(&minimal());
    assert_eq!(
        config.server.listen,
        DEFAULT_LISTEN.parse::<SocketAddr>().unwrap()
    );
    assert_eq!(config.server.workers, None);
    assert_eq!(config.server.limits, Limits::default());
    assert_eq!(config.server.limits.max_body_bytes, None);
    assert_eq!(config.server.tls, None);
    assert_eq!(config.admin, AdminConfig::default());
    assert_eq!(
        config.state.path,
        Path::new("/etc/cutover").join(DEFAULT_STATE_PATH)
    );
    assert_eq!(config.routes[0].host, None);
    assert_eq!(config.routes[0].path_prefix, "/");
    let agent = &config.services[0];
    assert_eq!(agent.active, PoolName::Blue);
    assert_eq!(agent.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
    assert_eq!(agent.balance, Balance::RoundRobin);
    assert_eq!((&agent.sticky, &agent.preview), (&None, &None));
    assert_eq!((&agent.health, &agent.rollback), (&None, &None));
    assert!(agent.canary.is_empty());
}

#[test]
fn empty_sections_take_every_default() {
    let text = with(
        "[server.limits]\n[service.agent]\n[service.agent.health]\n[service.agent.canary]\n\
         [[service.agent.canary.stages]]\nweight = 100\nhold = \"1m\"\nmax_error_rate = 0\nmax_p99 = \"1s\"",
    );
    let config = parse_ok(&text);
    assert_eq!(config.server.limits, Limits::default());
    let agent = &config.services[0];
    let health = agent.health.as_ref().unwrap();
    assert_eq!(health.path, DEFAULT_HEALTH_PATH);
    assert_eq!(
        (health.interval, health.timeout),
        (DEFAULT_HEALTH_INTERVAL, DEFAULT_HEALTH_TIMEOUT)
    );
    assert_eq!(health.healthy_threshold.get(), DEFAULT_HEALTHY_THRESHOLD);
    assert_eq!(
        health.unhealthy_threshold.get(),
        DEFAULT_UNHEALTHY_THRESHOLD
    );
    assert_eq!(agent.canary[0].min_requests, DEFAULT_MIN_REQUESTS);
    assert_eq!(agent.canary[0].max_error_rate, 0.0);
}

#[test]
fn every_key_is_read_into_typed_values() {
    let text = with(
        r#"[server]
listen = "[::1]:8081"
workers = 4
[server.limits]
header_read_timeout = "250ms"
max_header_bytes = 1024
max_body_bytes = 1048576
connect_timeout = "2s"
response_timeout = "1m"
idle_timeout = "90s"
max_connections = 5
[server.tls]
listen = "0.0.0.0:8443"
cert = "/abs/cert.pem"
key = "certs/key.pem"
[admin]
listen = "0.0.0.0:9090"
token_file = "admin.token"
[service.agent]
active = "green"
drain_timeout = "0s"
balance = "p2c"
sticky = { cookie = "session" }
[service.agent.rollback]
max_error_rate = 1
max_p99 = "2s"
window = "60s"
min_requests = 7
cooldown = "0s"
max_per_hour = 1"#,
    );
    let config = parse_ok(&text);
    let server = &config.server;
    assert_eq!(server.listen, "[::1]:8081".parse::<SocketAddr>().unwrap());
    assert_eq!(server.workers, NonZeroUsize::new(4));
    let limits = &server.limits;
    assert_eq!(limits.header_read_timeout, Duration::from_millis(250));
    assert_eq!(
        (limits.max_header_bytes, limits.max_body_bytes),
        (1024, Some(1_048_576))
    );
    assert_eq!(
        (limits.connect_timeout, limits.response_timeout),
        (secs(2), secs(60))
    );
    assert_eq!((limits.idle_timeout, limits.max_connections), (secs(90), 5));
    let tls = server.tls.as_ref().unwrap();
    assert!(tls.certificates.is_empty());
    assert_eq!(
        tls.default,
        Some((
            PathBuf::from("/abs/cert.pem"),
            PathBuf::from("/etc/cutover/certs/key.pem")
        ))
    );
    assert_eq!(
        config.admin.token_file,
        Some(PathBuf::from("/etc/cutover/admin.token"))
    );
    let agent = &config.services[0];
    assert_eq!(
        (agent.active, agent.balance),
        (PoolName::Green, Balance::P2c)
    );
    assert_eq!(agent.drain_timeout, Duration::ZERO);
    assert_eq!(agent.sticky, Some(KeySource::Cookie("session".into())));
    let rollback = agent.rollback.as_ref().unwrap();
    assert_eq!((rollback.max_error_rate, rollback.min_requests), (1.0, 7));
    assert_eq!(rollback.cooldown, Duration::ZERO);
}

#[test]
fn relative_paths_resolve_against_the_config_dir() {
    let text = with("[admin]\nsocket = \"run/cutover.sock\"\ntoken_file = \"/abs/token\"\n[state]\npath = \"state.json\"");
    let config = parse(&text, Path::new("conf/proxy.toml")).unwrap();
    assert_eq!(
        config.admin.socket,
        Some(PathBuf::from("conf/run/cutover.sock"))
    );
    assert_eq!(config.admin.token_file, Some(PathBuf::from("/abs/token")));
    assert_eq!(config.state.path, PathBuf::from("conf/state.json"));
    assert_eq!(config.path, PathBuf::from("conf/proxy.toml"));

    let bare = parse(&minimal(), Path::new("proxy.toml")).unwrap();
    assert_eq!(bare.state.path, Path::new(".").join(DEFAULT_STATE_PATH));
}

#[test]
fn servers_accept_host_port_http_and_bracketed_ipv6() {
    let text = r#"[[route]]
service = "a"
[service.a.pools.blue]
servers = ["app:80", "http://blue-1:5000", "[::1]:5000"]
[service.a.pools.green]
servers = ["HTTP://10.0.0.2:65535"]
"#;
    let config = parse_ok(text);
    let service = &config.services[0];
    let blue: Vec<String> = service
        .pool(PoolName::Blue)
        .servers
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(blue, ["app:80", "blue-1:5000", "[::1]:5000"]);
    assert_eq!(service.pool(PoolName::Blue).servers[2].host, "::1");
    assert_eq!(service.pool(PoolName::Green).servers[0].port, 65535);
}

#[test]
fn route_hosts_are_lowercased_and_services_sorted_by_name() {
    let text = format!(
        "[[route]]\nhost = \"Agent.Example.COM\"\nservice = \"zeta\"\n[[route]]\nhost = \"[::1]\"\nservice = \"alpha\"\n\
         {}{}",
        POOLS.replace("agent", "zeta"),
        POOLS.replace("agent", "alpha")
    );
    let config = parse_ok(&text);
    assert_eq!(config.routes[0].host.as_deref(), Some("agent.example.com"));
    assert_eq!(config.routes[1].host.as_deref(), Some("[::1]"));
    let names: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["alpha", "zeta"]);
}

#[test]
fn formatted_lines_carry_file_line_column_key_and_message() {
    let text = with("[service.agent.health]\ninterval = \"2 sekunden\"");
    let err = parse(&text, Path::new("proxy.toml")).unwrap_err();
    assert_eq!(
        err.lines(),
        vec![
            r#"proxy.toml:11:12: service.agent.health.interval: "2 sekunden" is not a duration (expected e.g. "250ms", "30s")"#
        ]
    );
    assert_eq!(err.to_string(), err.lines()[0]);
}

#[test]
fn duration_errors_name_the_value() {
    let interval = "[service.agent.health]\ninterval = \"2 sekunden\"";
    check(
        interval,
        "\"2 sekunden\"",
        "service.agent.health.interval",
        &["\"2 sekunden\" is not a duration", "\"30s\""],
    );
    let unitless = "[server.limits]\nidle_timeout = \"5\"";
    check(
        unitless,
        "\"5\"",
        "server.limits.idle_timeout",
        &["add a unit, e.g. \"5s\""],
    );
    let zero = "[server.limits]\nconnect_timeout = \"0s\"";
    check(
        zero,
        "\"0s\"",
        "server.limits.connect_timeout",
        &["\"0s\" is zero"],
    );
    let hold = "[[service.agent.canary.stages]]\nweight = 5\nhold = \"0ms\"\nmax_error_rate = 0.1\nmax_p99 = \"1s\"";
    check(
        hold,
        "\"0ms\"",
        "service.agent.canary.stages[0].hold",
        &["\"0ms\" is zero"],
    );
}

#[test]
fn number_range_errors_name_the_value_and_the_range() {
    check(
        "[server]\nworkers = 0",
        "0",
        "server.workers",
        &["0 is out of range", ">= 1"],
    );
    let threshold = "[service.agent.health]\nhealthy_threshold = 0";
    check(
        threshold,
        "0",
        "service.agent.health.healthy_threshold",
        &["0 is out of range"],
    );
    let header = "[server.limits]\nmax_header_bytes = 100";
    check(
        header,
        "100",
        "server.limits.max_header_bytes",
        &["100 is out of range", ">= 1024"],
    );
    let conns = "[server.limits]\nmax_connections = -3";
    check(
        conns,
        "-3",
        "server.limits.max_connections",
        &["-3 is out of range"],
    );
    let body = "[server.limits]\nmax_body_bytes = -1";
    check(
        body,
        "-1",
        "server.limits.max_body_bytes",
        &["-1 is out of range", ">= 0"],
    );
    let stage = "[[service.agent.canary.stages]]\nweight = 101\nhold = \"1m\"\nmax_error_rate = 0.1\nmax_p99 = \"1s\"";
    check(
        stage,
        "101",
        "service.agent.canary.stages[0].weight",
        &["101 is out of range", "from 1 to 100"],
    );
    let rollback = "[service.agent.rollback]\nmax_error_rate = 5\nmax_p99 = \"2s\"\nwindow = \"1m\"\ncooldown = \"5m\"\nmax_per_hour = 0";
    let found = issues(&with(rollback));
    let keys: Vec<&str> = found.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "service.agent.rollback.max_error_rate",
            "service.agent.rollback.max_per_hour"
        ]
    );
    assert!(
        found[0].message.contains("5 is not a share"),
        "{}",
        found[0].message
    );
    assert!(
        found[0].message.contains("for 5% write 0.05"),
        "{}",
        found[0].message
    );
    assert!(
        found[1].message.contains("0 is out of range"),
        "{}",
        found[1].message
    );
}

#[test]
fn listen_address_errors_name_the_expected_form() {
    let no_port = "[server]\nlisten = \"0.0.0.0\"";
    check(
        no_port,
        "\"0.0.0.0\"",
        "server.listen",
        &[
            "\"0.0.0.0\" has no port",
            "\"0.0.0.0:8080\"",
            "\"[::1]:8080\"",
        ],
    );
    let name = "[server.tls]\nlisten = \"localhost:8443\"\ncert = \"c.pem\"\nkey = \"k.pem\"";
    check(
        name,
        "\"localhost:8443\"",
        "server.tls.listen",
        &["not an IP address and port"],
    );
    let port = "[admin]\nlisten = \"127.0.0.1:99999\"";
    check(
        port,
        "\"127.0.0.1:99999\"",
        "admin.listen",
        &["port \"99999\""],
    );
}

#[test]
fn admin_off_loopback_requires_a_token_file() {
    let open = "[admin]\nlisten = \"0.0.0.0:9090\"";
    check(
        open,
        "\"0.0.0.0:9090\"",
        "admin.listen",
        &["\"0.0.0.0:9090\" is not a loopback address: set admin.token_file"],
    );
    parse_ok(&with("[admin]\nlisten = \"[::1]:9090\""));
    parse_ok(&with(
        "[admin]\nlisten = \"0.0.0.0:9090\"\ntoken_file = \"t\"",
    ));
}

#[test]
fn route_errors_name_the_value_and_the_fix() {
    let dangling = "[[route]]\nhost = \"b.com\"\nservice = \"agnet\"";
    check(
        dangling,
        "\"agnet\"",
        "route[1].service",
        &["\"agnet\" is not a defined service (defined: \"agent\")"],
    );
    let port = "[[route]]\nhost = \"a.com:80\"\nservice = \"agent\"";
    check(
        port,
        "\"a.com:80\"",
        "route[1].host",
        &["\"a.com:80\" has a port", "(write \"a.com\")"],
    );
    let scheme = "[[route]]\nhost = \"https://a.com/x\"\nservice = \"agent\"";
    check(
        scheme,
        "\"https://a.com/x\"",
        "route[1].host",
        &["has a scheme", "(write \"a.com\")"],
    );
    let empty = "[[route]]\nhost = \"\"\nservice = \"agent\"";
    check(empty, "\"\"", "route[1].host", &["\"\" is empty"]);
    let prefix = "[[route]]\nhost = \"a.com\"\npath_prefix = \"api\"\nservice = \"agent\"";
    check(
        prefix,
        "\"api\"",
        "route[1].path_prefix",
        &["\"api\" does not start with \"/\"", "\"/api\""],
    );
    let missing = "[[route]]\nhost = \"a.com\"";
    check(
        missing,
        "[[route]]",
        "route[1].service",
        &["missing", "service = \"agent\""],
    );
}

#[test]
fn duplicate_route_points_at_the_second_one() {
    let duplicate = "[[route]]\nservice = \"agent\"\npath_prefix = \"/\"";
    check(
        duplicate,
        "[[route]]",
        "route[1]",
        &["same host and path_prefix as route[0]"],
    );
    let case = "[[route]]\nhost = \"A.com\"\nservice = \"agent\"\n[[route]]\nhost = \"a.COM\"\nservice = \"agent\"";
    check(
        case,
        "[[route]]",
        "route[2]",
        &["as route[1] (host \"a.com\""],
    );
}

#[test]
fn config_without_routes_is_an_error() {
    let found = issues(POOLS);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(
        (found[0].line(), found[0].column(), found[0].key.as_str()),
        (None, None, "route")
    );
    assert!(found[0]
        .message
        .starts_with("no [[route]]: nothing would be served"));
}

#[test]
fn missing_pool_names_the_table_to_add() {
    let text = "[[route]]\nservice = \"agent\"\n\n[service.agent.pools.blue]\nservers = [\"127.0.0.1:5000\"]\n";
    let found = issues(text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].key, "service.agent.pools.green");
    assert_eq!(
        (found[0].line(), found[0].column()),
        pos(text, "[service.agent.pools.blue]")
    );
    assert!(found[0]
        .message
        .contains(r#"[service.agent.pools.green] servers = ["host:port"]"#));

    let neither = "[[route]]\nservice = \"agent\"\n[service.agent]\nactive = \"blue\"\n";
    let keys: Vec<String> = issues(neither).into_iter().map(|i| i.key).collect();
    assert_eq!(
        keys,
        ["service.agent.pools.blue", "service.agent.pools.green"]
    );
}

#[test]
fn pool_server_errors_name_the_server() {
    let pool = |servers: &str| {
        format!("[[route]]\nservice = \"a\"\n[service.a.pools.blue]\nservers = [\"a:1\"]\n[service.a.pools.green]\nservers = {servers}\n")
    };
    let cases = [
        ("[]", "[]", "service.a.pools.green.servers", "[] is empty"),
        (
            r#"["a:1", "https://b:5000"]"#,
            "\"https://b",
            "service.a.pools.green.servers[1]",
            "https upstreams are not supported",
        ),
        (
            r#"["127.0.0.1:5000/api"]"#,
            "\"127",
            "service.a.pools.green.servers[0]",
            "has a path \"/api\"",
        ),
        (
            r#"["127.0.0.1"]"#,
            "\"127",
            "service.a.pools.green.servers[0]",
            "\"127.0.0.1\" has no port",
        ),
        (
            r#"["b:0"]"#,
            "\"b:0\"",
            "service.a.pools.green.servers[0]",
            "has port \"0\" (expected a port from 1 to 65535)",
        ),
        (
            r#"["b:70000"]"#,
            "\"b:70000\"",
            "service.a.pools.green.servers[0]",
            "has port \"70000\"",
        ),
        (
            r#"["::1:5000"]"#,
            "\"::1",
            "service.a.pools.green.servers[0]",
            "\"[::1]:5000\"",
        ),
        (
            r#"["ftp://b:21"]"#,
            "\"ftp",
            "service.a.pools.green.servers[0]",
            "has scheme \"ftp\"",
        ),
    ];
    for (servers, needle, key, part) in cases {
        let text = pool(servers);
        let found = issues(&text);
        assert_eq!(found.len(), 1, "{servers}: {found:#?}");
        assert_eq!(found[0].key, key, "{servers}");
        assert_eq!(
            (found[0].line(), found[0].column()),
            pos(&text, needle),
            "{servers}"
        );
        assert!(
            found[0].message.contains(part),
            "{servers}: {}",
            found[0].message
        );
    }
}

#[test]
fn service_key_errors_name_the_value() {
    let sticky = "[service.agent]\nsticky = { header = \"x-a\", cookie = \"s\" }";
    check(
        sticky,
        "{ header",
        "service.agent.sticky",
        &["has both header and cookie", "exactly one"],
    );
    let header = "[service.agent]\npreview = { header = \"X Pool\" }";
    check(
        header,
        "\"X Pool\"",
        "service.agent.preview.header",
        &["\"X Pool\" is not a header name"],
    );
    let cookie = "[service.agent]\nsticky = { cookie = \"a;b\" }";
    check(
        cookie,
        "\"a;b\"",
        "service.agent.sticky.cookie",
        &["\"a;b\" is not a cookie name"],
    );
    let active = "[service.agent]\nactive = \"purple\"";
    check(
        active,
        "\"purple\"",
        "service.agent.active",
        &["\"purple\" is not a pool", "\"blue\" or \"green\""],
    );
    let balance = "[service.agent]\nbalance = \"random\"";
    check(
        balance,
        "\"random\"",
        "service.agent.balance",
        &["\"random\" is not a balance"],
    );
    let path = "[service.agent.health]\npath = \"health\"";
    check(
        path,
        "\"health\"",
        "service.agent.health.path",
        &["(write \"/health\")"],
    );
}

#[test]
fn header_names_are_lowercased() {
    let config = parse_ok(&with(
        "[service.agent]\nsticky = { header = \"X-Session-Id\" }",
    ));
    let expected = KeySource::Header(http::HeaderName::from_static("x-session-id"));
    assert_eq!(config.services[0].sticky, Some(expected));
}

#[test]
fn invalid_service_name_is_reported_with_a_quoted_key() {
    let text = format!(
        "[[route]]\nservice = \"my svc\"\n{}",
        POOLS.replace("agent", "\"my svc\"")
    );
    let found = issues(&text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].key, "service.\"my svc\"");
    assert_eq!(
        (found[0].line(), found[0].column()),
        pos(&text, "[service.\"my svc\".pools.blue]")
    );
    assert!(found[0]
        .message
        .contains("\"my svc\" is not a valid service name"));
}

#[test]
fn incomplete_tables_list_each_missing_key() {
    let rollback = with("[service.agent.rollback]\nmax_error_rate = 0.05");
    let found = issues(&rollback);
    let keys: Vec<&str> = found.iter().map(|i| i.key.as_str()).collect();
    let prefix = "service.agent.rollback.";
    let expected: Vec<String> = ["max_p99", "window", "cooldown", "max_per_hour"]
        .iter()
        .map(|k| format!("{prefix}{k}"))
        .collect();
    assert_eq!(keys, expected);
    assert!(found
        .iter()
        .all(|i| (i.line(), i.column()) == pos(&rollback, "[service.agent.rollback]")));
    assert!(found[0]
        .message
        .contains("missing (expected e.g. max_p99 = \"2s\")"));

    let tls = "[server.tls]\nlisten = \"0.0.0.0:8443\"\ncert = \"c.pem\"";
    check(
        tls,
        "[server.tls]",
        "server.tls.key",
        &["missing", "key = "],
    );
    let preview = "[service.agent]\npreview = {}";
    check(preview, "{}", "service.agent.preview.header", &["missing"]);

    // Certificates from ACME alone need no `cert`/`key`; `cert` alone does.
    let acme = "[server.tls]\nlisten = \"0.0.0.0:8443\"\n[server.tls.acme]\n\
                directory_url = \"https://acme.test/dir\"\ndomains = [\"a.example\"]";
    assert_eq!(parse_ok(&with(acme)).server.tls.unwrap().default, None);
    let half = "[server.tls]\nlisten = \"0.0.0.0:8443\"\ncert = \"c.pem\"\ndirectory = \"certs\"";
    check(
        half,
        "[server.tls]",
        "server.tls.key",
        &["missing", "key = "],
    );
    let none = "[server.tls]\nlisten = \"0.0.0.0:8443\"";
    let found = issues(&with(none));
    let keys: Vec<&str> = found.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["server.tls.cert", "server.tls.key"]);
}

#[test]
fn several_errors_are_all_reported_sorted_by_line() {
    let text = r#"[server]
listen = "0.0.0.0"
workers = 0

[[route]]
host = "a.com:80"
service = "nope"

[service.agent.health]
interval = "soon"

[service.agent.pools.blue]
servers = ["https://b:1"]
"#;
    let found = issues(text);
    let summary: Vec<(Option<usize>, &str)> =
        found.iter().map(|i| (i.line(), i.key.as_str())).collect();
    assert_eq!(
        summary,
        [
            (Some(2), "server.listen"),
            (Some(3), "server.workers"),
            (Some(6), "route[0].host"),
            (Some(7), "route[0].service"),
            (Some(10), "service.agent.health.interval"),
            (Some(12), "service.agent.pools.green"),
            (Some(13), "service.agent.pools.blue.servers[0]"),
        ]
    );
}

#[test]
fn unknown_key_is_reported_with_its_path_and_line() {
    let text = with("[service.agent.health]\nintervl = \"2s\"");
    let found = issues(&text);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].key, "service.agent.health.intervl");
    assert_eq!((found[0].line(), found[0].column()), pos(&text, "intervl"));
    assert!(
        found[0]
            .message
            .starts_with("unknown field `intervl`, expected one of"),
        "{}",
        found[0].message
    );

    let pool = with("[service.agent.pools.red]\nservers = [\"a:1\"]");
    let found = issues(&pool);
    assert!(
        found[0].message.contains("unknown field `red`"),
        "{}",
        found[0].message
    );
    assert_eq!(found[0].line(), pos(&pool, "red]").0);

    // The first key of a table implied by a deeper header.
    let implied = with("[server.limitz]\nx = 1");
    assert_eq!(issues(&implied)[0].key, "server.limitz");

    let top = "[[route]]\nservice = \"agent\"\n[servr]\nlisten = \"a\"\n";
    let found = issues(top);
    assert_eq!((found[0].key.as_str(), found[0].line()), ("servr", Some(3)));
}

#[test]
fn wrong_type_is_reported_with_its_path_and_line() {
    let text = with("[server]\nworkers = \"2\"");
    let found = issues(&text);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].key, "server.workers");
    assert_eq!((found[0].line(), found[0].column()), pos(&text, "\"2\""));
    assert!(
        found[0].message.contains("invalid type: string \"2\""),
        "{}",
        found[0].message
    );

    let sticky = with("[service.agent]\nsticky = \"x-id\"");
    let found = issues(&sticky);
    assert_eq!(found[0].key, "service.agent.sticky");
    assert!(found[0].message.ends_with("expected an inline table such as { header = \"X-Session-Id\" } or { cookie = \"session\" }"), "{}", found[0].message);

    let table = with("[[service.agent.canary.stages]]\nweight = 5\nhold = 300\n");
    let found = issues(&table);
    assert_eq!(found[0].key, "service.agent.canary.stages[0].hold");
}

#[test]
fn syntax_error_has_a_line_and_one_line_message() {
    let text = "[[route]]\nservice = \"agent\"\n[server\nlisten = 1\n";
    let found = issues(text);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].line(), Some(3));
    assert!(found[0].column().is_some());
    assert!(!found[0].message.contains('\n'), "{:?}", found[0].message);
    assert!(
        found[0].message.starts_with("invalid table header"),
        "{}",
        found[0].message
    );
}

#[test]
fn columns_count_characters_not_bytes() {
    let text = format!(
        "route = [ {{ service = \"agent\", host = \"ä.com\", path_prefix = \"x\" }} ]\n{POOLS}"
    );
    let found = issues(&text);
    let prefix = found
        .iter()
        .find(|i| i.key == "route[0].path_prefix")
        .unwrap();
    assert_eq!((prefix.line(), prefix.column()), (Some(1), Some(62)));
}

#[test]
fn no_input_panics() {
    let mut cut = SPEC_EXAMPLE.to_string();
    while !cut.is_empty() {
        let _ = parse(&cut, Path::new(PATH));
        cut.pop();
    }
    for text in [
        "",
        "\u{0}",
        "é = 1",
        "[a.b.c]\n[a]\nb = 1",
        "route = 1",
        "service = []",
        "[service.x]\npools = 3",
    ] {
        let _ = parse(text, Path::new(PATH));
    }
}

const TLS: &str = "[server.tls]\nlisten = \"0.0.0.0:8443\"\ncert = \"c.pem\"\nkey = \"k.pem\"";

#[test]
fn sni_certificates_parse_with_lower_case_names_and_resolved_paths() {
    let text = with(&format!(
        "{TLS}\n[[server.tls.certificates]]\nnames = [\"Agent.Example.com\", \"*.apps.example.com\"]\ncert = \"certs/agent.pem\"\nkey = \"/abs/agent-key.pem\""
    ));
    let config = parse_ok(&text);
    let tls = config.server.tls.unwrap();
    assert_eq!(tls.certificates.len(), 1);
    let sni = &tls.certificates[0];
    assert_eq!(sni.names, ["agent.example.com", "*.apps.example.com"]);
    assert_eq!(sni.cert, PathBuf::from("/etc/cutover/certs/agent.pem"));
    assert_eq!(sni.key, PathBuf::from("/abs/agent-key.pem"));
}

#[test]
fn bad_sni_certificates_name_the_entry_and_the_name() {
    let entry = |names: &str| {
        format!("{TLS}\n[[server.tls.certificates]]\nnames = {names}\ncert = \"a.pem\"\nkey = \"a-key.pem\"")
    };
    let key = "server.tls.certificates[0].names";
    check(&entry("[]"), "[]", key, &["empty"]);
    check(
        &entry("[\"https://a.example\"]"),
        "\"https://a.example\"",
        key,
        &["no scheme"],
    );
    check(
        &entry("[\"10.0.0.1\"]"),
        "\"10.0.0.1\"",
        key,
        &["IP address"],
    );
    check(
        &entry("[\"a b.example\"]"),
        "\"a b.example\"",
        key,
        &["not a DNS name"],
    );
    check(&entry("[\"*.com\"]"), "\"*.com\"", key, &["too wide"]);
    check(
        &entry("[\"a.*.example\"]"),
        "\"a.*.example\"",
        key,
        &["not a DNS name"],
    );

    let missing =
        format!("{TLS}\n[[server.tls.certificates]]\ncert = \"a.pem\"\nkey = \"a-key.pem\"");
    check(
        &missing,
        "[[server.tls.certificates]]",
        key,
        &["missing", "names = "],
    );

    let twice = format!(
        "{}\n[[server.tls.certificates]]\nnames = [\"A.example\"]\ncert = \"b.pem\"\nkey = \"b-key.pem\"",
        entry("[\"a.example\"]")
    );
    check(
        &twice,
        "\"A.example\"",
        "server.tls.certificates[1].names",
        &["already named by server.tls.certificates[0]"],
    );
}

/// A source that is not a file: every value is "at" one container label,
/// found by the value's offset.
struct Labels {
    /// (offset where the label's value starts, container, label)
    at: Vec<(usize, &'static str, &'static str)>,
}

impl Locator for Labels {
    fn locate(&self, offset: Option<usize>) -> Location {
        let (_, container, label) = offset
            .and_then(|o| self.at.iter().rev().find(|(start, ..)| *start <= o))
            .copied()
            .unwrap_or((0, "?", "?"));
        Location::Label {
            container: container.into(),
            label: label.into(),
        }
    }
}

#[test]
fn validation_names_a_container_and_label_for_a_source_that_is_not_a_file() {
    let text = with("[service.agent.health]\ninterval = \"every now and then\"\n");
    let raw: raw::RawConfig = toml::from_str(&text).unwrap();
    let start = text.find("\"every now and then\"").unwrap();
    let labels = Labels {
        at: vec![(
            start,
            "web-1",
            "traefik.http.services.web.loadbalancer.healthcheck.interval",
        )],
    };
    let err = validate(raw, &labels, Path::new(PATH)).unwrap_err();
    let lines = err.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with(
            "container web-1: label traefik.http.services.web.loadbalancer.healthcheck.interval: \
             service.agent.health.interval: \"every now and then\" is not a duration"
        ),
        "{}",
        lines[0]
    );
}

#[test]
fn a_file_issue_reads_file_line_column_key_message() {
    let text = with("[service.agent.health]\ninterval = \"every now and then\"\n");
    let err = parse(&text, Path::new(PATH)).unwrap_err();
    let (line, column) = pos(&text, "\"every now and then\"");
    assert!(
        err.to_string().starts_with(&format!(
            "{PATH}:{}:{}: service.agent.health.interval: \"every now and then\" is not a duration",
            line.unwrap(),
            column.unwrap()
        )),
        "{err}"
    );
}

#[test]
fn providers_docker_reads_its_keys_and_needs_no_route() {
    let config = parse_ok(
        "[providers.docker]\nendpoint = \"tcp://10.0.0.1:2375\"\nexposed_by_default = false\n\
         network = \"shop_default\"\nconstraints = [\"com.docker.compose.project=shop\", \"edge\"]\n\
         [providers.docker.entrypoints]\nhttp = \"http\"\n",
    );
    let docker = config.providers.docker.expect("[providers.docker]");
    assert_eq!(docker.endpoint, "tcp://10.0.0.1:2375");
    assert!(!docker.exposed_by_default);
    assert_eq!(docker.network.as_deref(), Some("shop_default"));
    assert_eq!(
        docker.constraints,
        [
            (
                "com.docker.compose.project".to_string(),
                Some("shop".to_string())
            ),
            ("edge".to_string(), None)
        ]
    );
    assert_eq!(docker.entrypoints.len(), 1);
    assert!(config.routes.is_empty() && config.services.is_empty());
    assert_eq!(
        parse_ok("[providers.docker]\n").providers.docker,
        Some(DockerConfig::default())
    );
}

#[test]
fn a_bad_docker_endpoint_and_listener_name_the_key_and_value() {
    check(
        "[providers.docker]\nendpoint = \"https://docker:2376\"",
        "\"https://docker:2376\"",
        "providers.docker.endpoint",
        &[
            "\"https://docker:2376\" is not a Docker endpoint",
            "unix:///var/run/docker.sock",
        ],
    );
    check(
        "[providers.docker.entrypoints]\nweb = \"h2\"",
        "\"h2\"",
        "providers.docker.entrypoints.web",
        &["\"h2\" is not a listener", "\"http\" or \"https\""],
    );
}

#[test]
fn run_docker_with_a_file_turns_the_provider_on_without_routes() {
    let text = "[server]\nlisten = \"127.0.0.1:0\"\n";
    assert!(
        parse(text, Path::new(PATH)).is_err(),
        "a file alone needs a route"
    );
    let config = parse_with_docker(text, Path::new(PATH)).expect("valid with the provider");
    assert_eq!(config.providers.docker, Some(DockerConfig::default()));
}

#[test]
fn acme_and_directory_parse_with_defaults_and_resolved_paths() {
    let text = with(&format!(
        "{TLS}\ndirectory = \"certs\"\n[server.tls.acme]\ndirectory_url = \"https://acme.test/dir\"\ndomains = [\"Agent.Example.com\"]\nca = \"pebble.pem\""
    ));
    let tls = parse_ok(&text).server.tls.unwrap();
    assert_eq!(tls.directory, Some(PathBuf::from("/etc/cutover/certs")));
    let acme = tls.acme.unwrap();
    assert_eq!(acme.domains, ["agent.example.com"]);
    assert_eq!(acme.ca, Some(PathBuf::from("/etc/cutover/pebble.pem")));
    assert_eq!(acme.renew_before, crate::config::DEFAULT_ACME_RENEW_BEFORE);
    assert_eq!(acme.challenge, crate::config::AcmeChallenge::Http01);
    assert_eq!(acme.email, None);
}

#[test]
fn bad_acme_values_are_reported_at_their_key() {
    let acme = |body: &str| format!("{TLS}\n[server.tls.acme]\n{body}");
    let ok_url = "directory_url = \"https://acme.test/dir\"";
    check(
        &acme(&format!("{ok_url}\ndomains = [\"*.example.com\"]")),
        "\"*.example.com\"",
        "server.tls.acme.domains",
        &["wildcard"],
    );
    check(
        &acme(&format!(
            "{ok_url}\ndomains = [\"a.example\"]\nchallenge = \"dns-01\""
        )),
        "\"dns-01\"",
        "server.tls.acme.challenge",
        &["\"http-01\" or \"tls-alpn-01\""],
    );
    check(
        &acme("directory_url = \"acme.test\"\ndomains = [\"a.example\"]"),
        "\"acme.test\"",
        "server.tls.acme.directory_url",
        &["not a URL"],
    );
    check(
        &acme("domains = [\"a.example\"]"),
        "[server.tls.acme]",
        "server.tls.acme.directory_url",
        &["missing"],
    );
}

#[test]
fn stream_judgments_and_the_drain_event_are_read() {
    let text = with(
        "[service.agent]\ndrain_sse_event = \"event: drain\\ndata: reconnect\"\n\
         [[service.agent.canary.stages]]\nweight = 5\nhold = \"1m\"\nmax_error_rate = 0.1\n\
         max_p99 = \"1s\"\nmax_stream_abort_rate = 0.02\nmax_ttfb_p99 = \"800ms\"",
    );
    let config = parse_ok(&text);
    let agent = &config.services[0];
    assert_eq!(
        agent.drain_sse_event.as_deref(),
        Some("event: drain\ndata: reconnect\n\n")
    );
    assert_eq!(agent.canary[0].max_stream_abort_rate, Some(0.02));
    assert_eq!(
        agent.canary[0].max_ttfb_p99,
        Some(Duration::from_millis(800))
    );
    let stage = "[[service.agent.canary.stages]]\nweight = 5\nhold = \"1m\"\nmax_error_rate = 0.1\nmax_p99 = \"1s\"\nmax_stream_abort_rate = 2";
    check(
        stage,
        "2",
        "service.agent.canary.stages[0].max_stream_abort_rate",
        &["2 is not a share"],
    );
    check(
        "[service.agent]\ndrain_sse_event = \" \"",
        "\" \"",
        "service.agent.drain_sse_event",
        &["is empty"],
    );
}
