//! Properties of `cutover::config::parse` (quickcheck): whatever text it is
//! given, it never panics, and it returns a config or errors that each say
//! where they are (a line within the text, or, for a problem of the whole
//! file such as "no route", the key it is about).
//!
//! Arbitrary strings mostly exercise the TOML layer, so the second property
//! mutates a valid config line by line to reach validation too.

use std::path::Path;

use cutover::config::{parse, ConfigError, ConfigIssue};
use quickcheck::{Arbitrary, Gen, QuickCheck};

const PATH: &str = "/etc/cutover/proxy.toml";

/// A valid config that sets most keys.
const VALID: &str = r#"[server]
listen = "127.0.0.1:8080"
workers = 2
[server.limits]
header_read_timeout = "10s"
max_header_bytes = 65536
max_body_bytes = 0
connect_timeout = "5s"
response_timeout = "60s"
idle_timeout = "60s"
max_connections = 10000
[admin]
listen = "127.0.0.1:9090"
socket = "cutover.sock"
[state]
path = "cutover-state.json"
[[route]]
host = "agent.localhost"
path_prefix = "/"
service = "agent"
[service.agent]
active = "blue"
drain_timeout = "30s"
sticky = { header = "X-Session-Id" }
preview = { header = "X-Cutover-Pool" }
[service.agent.health]
path = "/health"
interval = "2s"
timeout = "1s"
healthy_threshold = 2
unhealthy_threshold = 3
[service.agent.pools.blue]
servers = ["127.0.0.1:5000"]
[service.agent.pools.green]
servers = ["127.0.0.1:5001", "http://app:5002"]
[service.agent.rollback]
max_error_rate = 0.05
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
"#;

/// Values a mutation may put after a key's `=`.
const VALUES: [&str; 22] = [
    "0",
    "-1",
    "1",
    "99999999999999999999",
    "1.5",
    "true",
    "\"\"",
    "\"2 seconds\"",
    "\"250ms\"",
    "\"0s\"",
    "\"blue\"",
    "\"purple\"",
    "\"127.0.0.1:0\"",
    "\"not an address\"",
    "\"http://\"",
    "[]",
    "[\"127.0.0.1:1\", 2]",
    "{}",
    "{ cookie = \"s\" }",
    "\"\\u00e9\"",
    "'''\nmulti\n'''",
    "[[",
];

/// The valid config with a few line-level mutations.
#[derive(Debug, Clone)]
struct Mutated(String);

impl Arbitrary for Mutated {
    fn arbitrary(g: &mut Gen) -> Mutated {
        let mut lines: Vec<String> = VALID.lines().map(str::to_string).collect();
        for _ in 0..1 + usize::arbitrary(g) % 4 {
            let at = usize::arbitrary(g) % lines.len().max(1);
            match u8::arbitrary(g) % 6 {
                0 => {
                    lines.remove(at);
                }
                1 => {
                    let line = lines[at].clone();
                    lines.insert(at, line);
                }
                2 => {
                    if let Some((key, _)) = lines[at].split_once('=') {
                        let value = g.choose(&VALUES).expect("VALUES is not empty");
                        lines[at] = format!("{key}= {value}");
                    }
                }
                3 => lines.insert(at, String::arbitrary(g)),
                4 => {
                    let line = &lines[at];
                    let cut = usize::arbitrary(g) % (line.len() + 1);
                    if line.is_char_boundary(cut) {
                        lines[at] = line[..cut].to_string();
                    }
                }
                _ => {
                    let other = usize::arbitrary(g) % lines.len().max(1);
                    lines.swap(at, other);
                }
            }
            if lines.is_empty() {
                break;
            }
        }
        Mutated(lines.join("\n"))
    }
}

fn located(issue: &ConfigIssue, text: &str) -> bool {
    match issue.line() {
        Some(line) => {
            line >= 1 && line <= text.lines().count() + 1 && issue.column().is_none_or(|c| c >= 1)
        }
        None => !issue.key.is_empty(),
    }
}

/// Ok, or errors that each say where they are.
fn parses_or_locates_errors(text: &str) -> bool {
    match parse(text, Path::new(PATH)) {
        Ok(_) => true,
        Err(ConfigError::Invalid { ref issues, .. }) => {
            let err = parse(text, Path::new(PATH)).expect_err("parse is deterministic");
            !issues.is_empty()
                && issues.iter().all(|i| located(i, text))
                && err.lines().iter().all(|l| l.starts_with(PATH))
        }
        Err(ConfigError::Read { .. }) => false,
    }
}

#[test]
fn the_base_config_is_valid() {
    assert!(parse(VALID, Path::new(PATH)).is_ok());
}

#[test]
fn arbitrary_text_never_panics_and_errors_are_located() {
    fn prop(text: String) -> bool {
        parses_or_locates_errors(&text)
    }
    QuickCheck::new()
        .tests(3000)
        .quickcheck(prop as fn(String) -> bool);
}

#[test]
fn mutated_configs_never_panic_and_errors_are_located() {
    fn prop(m: Mutated) -> bool {
        parses_or_locates_errors(&m.0)
    }
    QuickCheck::new()
        .tests(3000)
        .quickcheck(prop as fn(Mutated) -> bool);
}
