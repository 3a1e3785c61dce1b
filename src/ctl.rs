//! `cutover ctl`: the admin client. It turns a command into one HTTP/1.1 call
//! to the admin API (over the Unix socket by default, or TCP with `--admin`),
//! then prints the answer as text or, with `--json`, as pretty JSON.
//!
//! It speaks only the SPEC's wire format and reads answers as
//! `serde_json::Value`, so it does not depend on the server's types. Exit
//! codes: 0 done, 1 refused (a 4xx/5xx answer), unreachable, or for
//! `wait-drained` not drained in time; clap exits 2 on bad usage.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};

/// How long any call may take, except `wait-drained`.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Added to `wait-drained --timeout`: the server answers at its deadline, so
/// the client waits a little longer for that answer.
const WAIT_GRACE: Duration = Duration::from_secs(5);
/// The config file used when `-c` is not given, if it exists.
const DEFAULT_CONFIG: &str = "proxy.toml";
/// The socket used when neither `--socket` nor a config names one.
const DEFAULT_SOCKET: &str = "cutover.sock";
/// Environment variable holding the admin token.
const TOKEN_ENV: &str = "CUTOVER_TOKEN";

/// `cutover ctl`'s options and command.
#[derive(Debug, Clone, Args)]
pub struct CtlArgs {
    /// The admin Unix socket (default: `admin.socket` of the config, else
    /// ./cutover.sock).
    #[arg(long, global = true, value_name = "PATH", conflicts_with = "admin")]
    pub socket: Option<PathBuf>,
    /// The HTTP admin API instead of the socket, e.g. http://127.0.0.1:9090.
    #[arg(long, global = true, value_name = "URL")]
    pub admin: Option<String>,
    /// Bearer token for the admin API (also read from CUTOVER_TOKEN).
    #[arg(long, global = true, value_name = "T", conflicts_with = "token_file")]
    pub token: Option<String>,
    /// File holding the bearer token (its content, trimmed).
    #[arg(long, global = true, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Config file naming the socket (and token file); default ./proxy.toml
    /// when it exists.
    #[arg(short, long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Print the answer as pretty JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// The `ctl` commands, one admin API call each.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum CtlCommand {
    /// Show every service, or one.
    Status {
        /// Only this service.
        service: Option<String>,
    },
    /// Move new traffic to the other pool (health-gated).
    Switch {
        /// The service.
        service: String,
        /// Target pool (default: the standby pool).
        #[arg(long, value_enum)]
        to: Option<Pool>,
        /// Refuse unless every healthy target server reports this version.
        #[arg(long, value_name = "V")]
        expect_version: Option<String>,
        /// Switch even if the target is unhealthy or reports another version.
        #[arg(long)]
        force: bool,
    },
    /// Go back to the pool that was active before the last switch.
    Rollback {
        /// The service.
        service: String,
    },
    /// Wait until the pools other than the active one have nothing in
    /// flight; exit 1 if the timeout passes first.
    WaitDrained {
        /// The service.
        service: String,
        /// How long to wait, e.g. "60s", "2m".
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Send PERCENT of new requests to the standby pool.
    Weight {
        /// The service.
        service: String,
        /// Whole percent, 0 to 100.
        #[arg(value_parser = parse_percent)]
        percent: u8,
    },
    /// Start or abort the staged rollout from `[service.NAME.canary]`.
    Canary {
        /// The service.
        service: String,
        /// `start` or `abort`.
        #[arg(value_enum)]
        action: CanaryAction,
    },
    /// Show switches, rollbacks, weight changes and automated actions.
    Events {
        /// Only this service's events.
        service: Option<String>,
    },
    /// Re-read the config file.
    Reload,
}

/// A pool name on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Pool {
    /// The blue pool.
    Blue,
    /// The green pool.
    Green,
}

impl Pool {
    fn as_str(self) -> &'static str {
        match self {
            Pool::Blue => "blue",
            Pool::Green => "green",
        }
    }
}

/// `canary start | abort`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CanaryAction {
    /// Start the staged rollout.
    Start,
    /// Abort it (standby weight back to 0).
    Abort,
}

/// What a `ctl` run printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Process exit code: 0 done, 1 refused, unreachable or not drained.
    pub code: u8,
    /// Text for standard output.
    pub stdout: String,
    /// Text for standard error.
    pub stderr: String,
}

impl Outcome {
    fn failed(message: String) -> Outcome {
        Outcome {
            code: 1,
            stdout: String::new(),
            stderr: message,
        }
    }
}

/// Runs `cutover ctl`, prints its output; the process exit code.
pub async fn run(args: CtlArgs) -> ExitCode {
    let outcome = execute(&args).await;
    print!("{}", outcome.stdout);
    eprint!("{}", outcome.stderr);
    ExitCode::from(outcome.code)
}

/// Runs `cutover ctl` and returns what it would print, without printing.
/// Reads `CUTOVER_TOKEN` from the environment when no token option is given.
pub async fn execute(args: &CtlArgs) -> Outcome {
    let target = match Target::resolve(args, std::env::var(TOKEN_ENV).ok()) {
        Ok(t) => t,
        Err(e) => return Outcome::failed(format!("cutover ctl: {e:#}\n")),
    };
    let call = call_for(&args.command);
    match exchange(&target, &call).await {
        Ok(answer) => render(&args.command, args.json, &answer),
        Err(e) => Outcome::failed(format!("cutover ctl: {e:#}\n")),
    }
}

/// A whole percent, `0..=100`; a trailing `%` is accepted.
fn parse_percent(s: &str) -> Result<u8, String> {
    match s.trim().trim_end_matches('%').parse::<u8>() {
        Ok(n) if n <= 100 => Ok(n),
        _ => Err(format!(
            "{s:?} is not a percentage (expected a whole number from 0 to 100)"
        )),
    }
}

// ---------------------------------------------------------------------------
// Where to connect

/// Where the admin API is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    /// HTTP over a Unix socket.
    Socket(PathBuf),
    /// HTTP over TCP.
    Tcp(AdminUrl),
}

/// A parsed `--admin` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AdminUrl {
    /// As given, for messages.
    shown: String,
    /// `host:port` to connect to.
    connect: String,
    /// The Host header.
    host: String,
    /// Path prefix (no trailing slash) put before `/api/v1/...`.
    prefix: String,
}

/// An endpoint plus the token to present.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    endpoint: Endpoint,
    token: Option<String>,
}

impl Target {
    /// Picks the endpoint and token from the options, the config and
    /// `env_token` (the value of `CUTOVER_TOKEN`).
    fn resolve(args: &CtlArgs, env_token: Option<String>) -> anyhow::Result<Target> {
        let mut config_token_file = None;
        let endpoint = if let Some(path) = &args.socket {
            Endpoint::Socket(path.clone())
        } else if let Some(url) = &args.admin {
            if let Some(path) = &args.config {
                config_token_file = load_config(path)?.admin.token_file;
            }
            Endpoint::Tcp(parse_admin_url(url)?)
        } else {
            let path = match &args.config {
                Some(p) => Some(p.clone()),
                None => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()),
            };
            match path {
                None => Endpoint::Socket(PathBuf::from(DEFAULT_SOCKET)),
                Some(path) => {
                    let admin = load_config(&path)?.admin;
                    config_token_file = admin.token_file;
                    match (admin.socket, admin.listen) {
                        (Some(socket), _) => Endpoint::Socket(socket),
                        (None, Some(listen)) => {
                            let mut ip = listen.ip();
                            if ip.is_unspecified() {
                                ip = if ip.is_ipv4() {
                                    [127, 0, 0, 1].into()
                                } else {
                                    std::net::Ipv6Addr::LOCALHOST.into()
                                };
                            }
                            let addr = std::net::SocketAddr::new(ip, listen.port());
                            Endpoint::Tcp(parse_admin_url(&format!("http://{addr}"))?)
                        }
                        (None, None) => bail!(
                            "{}: [admin] has neither `socket` nor `listen`; nothing to connect to \
                             (give --socket PATH or --admin URL)",
                            path.display()
                        ),
                    }
                }
            }
        };
        let token = if let Some(t) = &args.token {
            Some(t.trim().to_owned())
        } else if let Some(path) = args.token_file.as_ref() {
            Some(read_token(path)?)
        } else if let Some(t) = env_token.filter(|t| !t.trim().is_empty()) {
            Some(t.trim().to_owned())
        } else if let Some(path) =
            config_token_file.filter(|_| matches!(endpoint, Endpoint::Tcp(_)))
        {
            Some(read_token(&path)?)
        } else {
            None
        };
        Ok(Target { endpoint, token })
    }

    fn shown(&self) -> String {
        match &self.endpoint {
            Endpoint::Socket(path) => format!("socket {}", path.display()),
            Endpoint::Tcp(url) => url.shown.clone(),
        }
    }
}

fn load_config(path: &Path) -> anyhow::Result<crate::config::Config> {
    crate::config::load(path).map_err(|e| {
        anyhow!(
            "{}\n(the config names the admin socket; give --socket PATH or --admin URL to skip it)",
            e.lines().join("\n")
        )
    })
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    Ok(text.trim().to_owned())
}

/// `http://host:port[/prefix]`; the scheme may be left out.
fn parse_admin_url(s: &str) -> anyhow::Result<AdminUrl> {
    let full = if s.contains("://") {
        s.to_owned()
    } else {
        format!("http://{s}")
    };
    let uri: Uri = full.parse().with_context(|| {
        format!("--admin {s:?} is not a URL (expected e.g. http://127.0.0.1:9090)")
    })?;
    match uri.scheme_str() {
        Some("http") => {}
        other => bail!(
            "--admin {s:?}: scheme {} is not supported; the admin API speaks plain http \
             (expected e.g. http://127.0.0.1:9090)",
            other.unwrap_or("(none)")
        ),
    }
    let authority = uri.authority().ok_or_else(|| {
        anyhow!("--admin {s:?} has no host (expected e.g. http://127.0.0.1:9090)")
    })?;
    let port = authority.port_u16().unwrap_or(80);
    let host = match authority.port() {
        Some(p) => format!("{}:{}", authority.host(), p.as_str()),
        None => authority.host().to_owned(),
    };
    Ok(AdminUrl {
        shown: full.trim_end_matches('/').to_owned(),
        connect: format!("{}:{port}", authority.host()),
        host,
        prefix: uri.path().trim_end_matches('/').to_owned(),
    })
}

// ---------------------------------------------------------------------------
// The call

/// One admin API call.
#[derive(Debug, Clone, PartialEq)]
struct Call {
    method: Method,
    /// Path and query, from `/api/v1/`.
    path: String,
    body: Option<Value>,
    timeout: Duration,
}

/// The admin API call a command makes.
fn call_for(command: &CtlCommand) -> Call {
    let service = |svc: &str, rest: &str| format!("/api/v1/services/{}{rest}", encode(svc));
    let (method, path, body, timeout) = match command {
        CtlCommand::Status { service: None } => {
            (Method::GET, "/api/v1/status".to_owned(), None, CALL_TIMEOUT)
        }
        CtlCommand::Status { service: Some(s) } => {
            (Method::GET, service(s, ""), None, CALL_TIMEOUT)
        }
        CtlCommand::Switch {
            service: s,
            to,
            expect_version,
            force,
        } => {
            let mut body = serde_json::Map::new();
            if let Some(to) = to {
                body.insert("to".into(), json!(to.as_str()));
            }
            if let Some(v) = expect_version {
                body.insert("expect_version".into(), json!(v));
            }
            if *force {
                body.insert("force".into(), json!(true));
            }
            let body = Some(Value::Object(body));
            (Method::POST, service(s, "/switch"), body, CALL_TIMEOUT)
        }
        CtlCommand::Rollback { service: s } => {
            (Method::POST, service(s, "/rollback"), None, CALL_TIMEOUT)
        }
        CtlCommand::WaitDrained {
            service: s,
            timeout,
        } => {
            let path = service(s, &format!("/drained?wait={}", format_wait(*timeout)));
            (Method::GET, path, None, *timeout + WAIT_GRACE)
        }
        CtlCommand::Weight {
            service: s,
            percent,
        } => {
            let body = Some(json!({ "standby": percent }));
            (Method::PUT, service(s, "/weights"), body, CALL_TIMEOUT)
        }
        CtlCommand::Canary { service: s, action } => {
            let method = match action {
                CanaryAction::Start => Method::POST,
                CanaryAction::Abort => Method::DELETE,
            };
            (method, service(s, "/canary"), None, CALL_TIMEOUT)
        }
        CtlCommand::Events { service: None } => {
            (Method::GET, "/api/v1/events".to_owned(), None, CALL_TIMEOUT)
        }
        CtlCommand::Events { service: Some(s) } => {
            let path = format!("/api/v1/events?service={}", encode(s));
            (Method::GET, path, None, CALL_TIMEOUT)
        }
        CtlCommand::Reload => (
            Method::POST,
            "/api/v1/reload".to_owned(),
            None,
            CALL_TIMEOUT,
        ),
    };
    Call {
        method,
        path,
        body,
        timeout,
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so a
/// service name is always one path segment or one query value.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `60s`, or `1500ms` when not whole seconds.
fn format_wait(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis().max(1))
    }
}

/// An admin API answer.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    status: StatusCode,
    /// The body as JSON; a body that is not JSON is kept as a JSON string,
    /// and an empty one is `null`.
    body: Value,
}

/// Connects, sends `call`, reads the whole answer, all within its timeout.
async fn exchange(target: &Target, call: &Call) -> anyhow::Result<Answer> {
    let request = build_request(target, call)?;
    let talking = || format!("talking to {}", target.shown());
    let attempt = async {
        match &target.endpoint {
            Endpoint::Socket(path) => {
                #[cfg(unix)]
                {
                    let stream = tokio::net::UnixStream::connect(path)
                        .await
                        .map_err(|e| unreachable(target, &e))?;
                    send_on(stream, request).await.with_context(talking)
                }
                #[cfg(not(unix))]
                {
                    let _ = (path, request);
                    bail!("Unix sockets are not available here; use --admin URL")
                }
            }
            Endpoint::Tcp(url) => {
                let stream = tokio::net::TcpStream::connect(url.connect.as_str())
                    .await
                    .map_err(|e| unreachable(target, &e))?;
                send_on(stream, request).await.with_context(talking)
            }
        }
    };
    match tokio::time::timeout(call.timeout, attempt).await {
        Ok(answer) => answer,
        Err(_) => bail!(
            "no answer from {} within {}",
            target.shown(),
            humantime::format_duration(call.timeout)
        ),
    }
}

fn unreachable(target: &Target, e: &std::io::Error) -> anyhow::Error {
    match &target.endpoint {
        Endpoint::Socket(path) => anyhow!(
            "cannot connect to the admin socket {}: {e}\n\
             is `cutover run` running with this [admin] socket? \
             Point at it with --socket PATH or -c proxy.toml, or use --admin URL",
            path.display()
        ),
        Endpoint::Tcp(url) => anyhow!(
            "cannot connect to the admin API at {}: {e}\n\
             is `cutover run` running with [admin] listen at this address? \
             Or use --socket PATH",
            url.shown
        ),
    }
}

fn build_request(target: &Target, call: &Call) -> anyhow::Result<Request<Full<Bytes>>> {
    let (host, path) = match &target.endpoint {
        Endpoint::Socket(_) => ("localhost".to_owned(), call.path.clone()),
        Endpoint::Tcp(url) => (url.host.clone(), format!("{}{}", url.prefix, call.path)),
    };
    let mut builder = Request::builder()
        .method(call.method.clone())
        .uri(path)
        .header(header::HOST, host)
        .header(header::ACCEPT, "application/json")
        .header(
            header::USER_AGENT,
            concat!("cutover-ctl/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(token) = &target.token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = match &call.body {
        Some(body) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Bytes::from(body.to_string())
        }
        None => Bytes::new(),
    };
    builder
        .body(Full::new(body))
        .context("cannot build the request (is the token a valid header value?)")
}

async fn send_on<S>(stream: S, request: Request<Full<Bytes>>) -> anyhow::Result<Answer>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let result = async {
        let response = sender.send_request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        anyhow::Ok(Answer {
            status,
            body: parse_body(&bytes),
        })
    }
    .await;
    conn.abort();
    result
}

fn parse_body(bytes: &[u8]) -> Value {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).trim().to_owned()))
}

// ---------------------------------------------------------------------------
// Output

/// What to print for `answer`, and the exit code.
fn render(command: &CtlCommand, as_json: bool, answer: &Answer) -> Outcome {
    let mut out = Outcome::default();
    if as_json && !answer.body.is_null() {
        out.stdout = pretty(&answer.body);
    }
    if !answer.status.is_success() {
        out.code = 1;
        out.stderr = refusal(answer);
        return out;
    }
    let drained = answer.body.get("drained").and_then(Value::as_bool);
    if matches!(command, CtlCommand::WaitDrained { .. }) && drained != Some(true) {
        out.code = 1;
    }
    if !as_json {
        out.stdout = render_text(command, &answer.body);
    }
    out
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    s.push('\n');
    s
}

/// `cutover ctl: refused: CODE: MESSAGE`, plus any listed details.
fn refusal(answer: &Answer) -> String {
    let error = answer.body.get("error");
    let code = error
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("HTTP {}", answer.status.as_u16()));
    let message = match error.and_then(|e| e.get("message")) {
        Some(m) => text(m),
        None => match &answer.body {
            Value::Null => answer
                .status
                .canonical_reason()
                .unwrap_or("no reason given")
                .to_owned(),
            other => text(other),
        },
    };
    let mut s = format!("cutover ctl: refused: {code}: {message}\n");
    // A refused reload lists every config error; print them one per line.
    for key in ["errors", "issues", "details"] {
        if let Some(items) = error.and_then(|e| e.get(key)).and_then(Value::as_array) {
            for item in items {
                let _ = writeln!(s, "  {}", text(item));
            }
        }
    }
    if answer.status == StatusCode::UNAUTHORIZED {
        s.push_str("hint: pass --token T or --token-file PATH, or set CUTOVER_TOKEN\n");
    }
    s
}

/// The human-readable answer to a successful call.
fn render_text(command: &CtlCommand, body: &Value) -> String {
    match command {
        CtlCommand::Status { service: Some(_) } => render_service(body),
        CtlCommand::Status { service: None } => render_status(body),
        CtlCommand::Switch { service, .. } => summary(service, "switched", body),
        CtlCommand::Rollback { service } => summary(service, "rolled back", body),
        CtlCommand::WaitDrained { service, .. } => render_drained(service, body),
        CtlCommand::Weight { service, percent } => render_weight(service, *percent, body),
        CtlCommand::Canary { service, action } => {
            let verb = match action {
                CanaryAction::Start => "canary started",
                CanaryAction::Abort => "canary aborted",
            };
            let mut s = format!("{service}: {verb}{}", generation_note(body));
            let canary = service_of(body, service).get("canary");
            if let Some(c) = canary.filter(|c| !c.is_null()) {
                let _ = write!(s, "; canary: {}", fields(c));
            }
            s.push_str(&persist_note(body));
            s.push('\n');
            s
        }
        CtlCommand::Events { .. } => render_events(body),
        CtlCommand::Reload => format!("reloaded{}{}\n", generation_note(body), persist_note(body)),
    }
}

/// Every service, one block each, separated by blank lines.
fn render_status(body: &Value) -> String {
    let services = body
        .get("services")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if services.is_empty() {
        return "no services\n".to_owned();
    }
    let blocks: Vec<String> = services.iter().map(render_service).collect();
    blocks.join("\n")
}

/// One service's block.
fn render_service(svc: &Value) -> String {
    let mut s = String::new();
    let active = text(&svc["active"]);
    let standby = text(&svc["standby"]);
    let _ = writeln!(
        s,
        "{}: active {active}, standby {standby} (generation {})",
        text(&svc["name"]),
        text(&svc["generation"])
    );
    if let Some(weights) = svc.get("weights").and_then(Value::as_object) {
        let list: Vec<String> = weights
            .iter()
            .map(|(pool, w)| format!("{pool} {}%", text(w)))
            .collect();
        let _ = writeln!(s, "  weights: {}", list.join(", "));
    }
    if let Some(pools) = svc.get("pools").and_then(Value::as_object) {
        for (name, pool) in pools {
            let role = if *name == active {
                " (active)"
            } else if *name == standby {
                " (standby)"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "  pool {name}{role}: {} in flight, {} draining",
                text(&pool["inflight"]),
                text(&pool["draining"])
            );
            for server in pool["servers"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let health = match server["healthy"].as_bool() {
                    Some(true) => "healthy",
                    Some(false) => "unhealthy",
                    None => "health unknown",
                };
                let _ = write!(s, "    {}  {health}", text(&server["address"]));
                match &server["version"] {
                    Value::Null => s.push_str("  version unknown"),
                    v => {
                        let _ = write!(s, "  version {}", text(v));
                    }
                }
                if let Some(err) = server.get("last_error").filter(|e| !e.is_null()) {
                    let _ = write!(s, "  ({})", text(err));
                }
                s.push('\n');
            }
        }
    }
    match svc.get("last_switch").filter(|v| !v.is_null()) {
        Some(e) => {
            let _ = writeln!(
                s,
                "  last switch: {} {} → {} ({}, {})",
                text(&e["time"]),
                text(&e["from"]),
                text(&e["to"]),
                text(&e["reason"]),
                text(&e["actor"])
            );
        }
        None => s.push_str("  last switch: none\n"),
    }
    for key in ["canary", "watch"] {
        if let Some(v) = svc.get(key).filter(|v| !v.is_null()) {
            let _ = writeln!(s, "  {key}: {}", fields(v));
        }
    }
    s
}

/// The service object in a change's answer: the answer itself, or its
/// `service` / `status` member, or the named entry of its `services`.
fn service_of<'a>(body: &'a Value, name: &str) -> &'a Value {
    if body.get("active").is_some() {
        return body;
    }
    for key in ["service", "status"] {
        if let Some(svc) = body.get(key).filter(|v| v.get("active").is_some()) {
            return svc;
        }
    }
    let services = body
        .get("services")
        .or_else(|| body.get("status").and_then(|s| s.get("services")))
        .and_then(Value::as_array);
    services
        .and_then(|list| list.iter().find(|s| s["name"].as_str() == Some(name)))
        .unwrap_or(&Value::Null)
}

/// ` (generation N)` from the answer's top-level generation, else its
/// service's.
fn generation_note(body: &Value) -> String {
    let generation = body
        .get("generation")
        .or_else(|| body.get("service").and_then(|s| s.get("generation")))
        .filter(|g| !g.is_null());
    match generation {
        Some(g) => format!(" (generation {})", text(g)),
        None => String::new(),
    }
}

/// A warning when the server says the change did not reach the state file.
fn persist_note(body: &Value) -> String {
    match body.get("persisted").and_then(Value::as_bool) {
        Some(false) => " [warning: not saved to the state file; lost on restart]".to_owned(),
        _ => String::new(),
    }
}

/// `agent: switched blue → green (generation 8)` and its variants.
fn summary(service: &str, verb: &str, body: &Value) -> String {
    let svc = service_of(body, service);
    let generation = generation_note(body);
    let persisted = persist_note(body);
    let active = svc.get("active").filter(|v| !v.is_null()).map(text);
    let Some(active) = active else {
        return format!("{service}: {verb}{generation}{persisted}\n");
    };
    if body.get("changed").and_then(Value::as_bool) == Some(false) {
        return format!("{service}: already on {active}, nothing changed{generation}{persisted}\n");
    }
    // The pool we left: the answer's `from`, else the last switch's, when
    // that switch is the one that made `active` active.
    let last = svc
        .get("last_switch")
        .filter(|e| e["to"].as_str() == Some(&active));
    let from = body
        .get("from")
        .or_else(|| last.and_then(|e| e.get("from")))
        .filter(|v| !v.is_null())
        .map(text);
    match from {
        Some(from) if from != active => {
            format!("{service}: {verb} {from} → {active}{generation}{persisted}\n")
        }
        _ => format!("{service}: {verb}, active {active}{generation}{persisted}\n"),
    }
}

fn render_drained(service: &str, body: &Value) -> String {
    match body.get("drained").and_then(Value::as_bool) {
        Some(true) => format!("{service}: drained\n"),
        Some(false) => format!(
            "{service}: not drained, {} in flight\n",
            body.get("inflight").map(text).unwrap_or_else(|| "?".into())
        ),
        None => format!("{service}: unexpected answer: {body}\n"),
    }
}

fn render_weight(service: &str, percent: u8, body: &Value) -> String {
    let svc = service_of(body, service);
    let weights = svc.get("weights").and_then(Value::as_object);
    let (active, standby) = (svc["active"].as_str(), svc["standby"].as_str());
    let split = match (weights, active, standby) {
        (Some(w), Some(active), Some(standby)) => format!(
            "{standby} {}%, {active} {}%",
            w.get(standby).map(text).unwrap_or_else(|| "?".into()),
            w.get(active).map(text).unwrap_or_else(|| "?".into())
        ),
        _ => format!("standby {percent}%"),
    };
    format!(
        "{service}: weights {split}{}{}\n",
        generation_note(body),
        persist_note(body)
    )
}

/// One line per event: `TIME service from → to reason actor [detail]`.
fn render_events(body: &Value) -> String {
    let events = body
        .as_array()
        .or_else(|| body.get("events").and_then(Value::as_array))
        .map(Vec::as_slice)
        .unwrap_or_default();
    if events.is_empty() {
        return "no events\n".to_owned();
    }
    let mut s = String::new();
    for e in events {
        let _ = write!(
            s,
            "{} {} {} → {} {} {}",
            text(&e["time"]),
            text(&e["service"]),
            text(&e["from"]),
            text(&e["to"]),
            text(&e["reason"]),
            text(&e["actor"])
        );
        let detail = &e["detail"];
        let empty = detail.is_null() || detail.as_object().is_some_and(|o| o.is_empty());
        if !empty {
            let _ = write!(s, " {}", fields(detail));
        }
        s.push('\n');
    }
    s
}

/// A scalar as text: strings unquoted, null as `-`.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An object as `key=value` pairs (nested values as compact JSON).
fn fields(v: &Value) -> String {
    match v.as_object() {
        Some(map) => map
            .iter()
            .map(|(k, v)| match v {
                Value::Object(_) | Value::Array(_) => format!("{k}={v}"),
                _ => format!("{k}={}", text(v)),
            })
            .collect::<Vec<_>>()
            .join(" "),
        None => text(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn parse(line: &[&str]) -> Result<CtlArgs, clap::Error> {
        let argv = ["cutover", "ctl"].iter().chain(line).copied();
        match crate::cli::Cli::try_parse_from(argv)?.command {
            crate::cli::Command::Ctl(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    fn call(line: &[&str]) -> Call {
        call_for(&parse(line).expect("valid command line").command)
    }

    fn sample_status() -> Value {
        json!({"generation": 7,
         "services": [{"name": "agent", "active": "blue", "standby": "green", "generation": 7,
           "weights": {"blue": 100, "green": 0},
           "last_switch": {"time": "2026-11-22T10:00:00Z", "from": "green", "to": "blue",
                           "reason": "manual", "actor": "socket"},
           "pools": {"blue": {"inflight": 3, "draining": 0,
                              "servers": [{"address": "127.0.0.1:5000", "healthy": true, "version": "1.4.1"}]},
                     "green": {"inflight": 0, "draining": 0,
                               "servers": [{"address": "127.0.0.1:5001", "healthy": false, "version": null}]}},
           "canary": null, "watch": null}]})
    }

    fn ok(body: Value) -> Answer {
        Answer {
            status: StatusCode::OK,
            body,
        }
    }

    #[test]
    fn each_command_builds_its_method_path_and_body() {
        let cases: Vec<(&[&str], Method, &str, Option<Value>)> = vec![
            (&["status"], Method::GET, "/api/v1/status", None),
            (
                &["status", "agent"],
                Method::GET,
                "/api/v1/services/agent",
                None,
            ),
            (
                &["switch", "agent"],
                Method::POST,
                "/api/v1/services/agent/switch",
                Some(json!({})),
            ),
            (
                &[
                    "switch",
                    "agent",
                    "--to",
                    "green",
                    "--expect-version",
                    "1.4.2",
                    "--force",
                ],
                Method::POST,
                "/api/v1/services/agent/switch",
                Some(json!({"to": "green", "expect_version": "1.4.2", "force": true})),
            ),
            (
                &["rollback", "agent"],
                Method::POST,
                "/api/v1/services/agent/rollback",
                None,
            ),
            (
                &["wait-drained", "agent"],
                Method::GET,
                "/api/v1/services/agent/drained?wait=60s",
                None,
            ),
            (
                &["weight", "agent", "25"],
                Method::PUT,
                "/api/v1/services/agent/weights",
                Some(json!({"standby": 25})),
            ),
            (
                &["canary", "agent", "start"],
                Method::POST,
                "/api/v1/services/agent/canary",
                None,
            ),
            (
                &["canary", "agent", "abort"],
                Method::DELETE,
                "/api/v1/services/agent/canary",
                None,
            ),
            (&["events"], Method::GET, "/api/v1/events", None),
            (
                &["events", "agent"],
                Method::GET,
                "/api/v1/events?service=agent",
                None,
            ),
            (&["reload"], Method::POST, "/api/v1/reload", None),
        ];
        for (line, method, path, body) in cases {
            let c = call(line);
            assert_eq!(
                (&c.method, c.path.as_str(), &c.body),
                (&method, path, &body),
                "{line:?}"
            );
        }
    }

    #[test]
    fn wait_drained_timeout_sets_query_and_call_deadline() {
        let c = call(&["wait-drained", "agent", "--timeout", "2m"]);
        assert_eq!(c.path, "/api/v1/services/agent/drained?wait=120s");
        assert_eq!(c.timeout, Duration::from_secs(125));
        let c = call(&["wait-drained", "agent", "--timeout", "1500ms"]);
        assert_eq!(c.path, "/api/v1/services/agent/drained?wait=1500ms");
        assert_eq!(call(&["status"]).timeout, CALL_TIMEOUT);
    }

    #[test]
    fn service_names_are_percent_encoded() {
        assert_eq!(
            call(&["rollback", "a b/c"]).path,
            "/api/v1/services/a%20b%2Fc/rollback"
        );
        assert_eq!(
            call(&["events", "a&b"]).path,
            "/api/v1/events?service=a%26b"
        );
    }

    #[test]
    fn weight_accepts_0_to_100_and_rejects_the_rest() {
        assert_eq!(parse_percent("0"), Ok(0));
        assert_eq!(parse_percent("100"), Ok(100));
        assert_eq!(parse_percent("25%"), Ok(25));
        for bad in ["101", "-1", "12.5", "", "half", "256"] {
            assert!(parse_percent(bad).is_err(), "{bad:?}");
        }
        let err = parse(&["weight", "agent", "101"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn bad_usage_is_a_clap_error() {
        for line in [
            &["switch", "agent", "--to", "red"][..],
            &["canary", "agent", "pause"],
            &["--socket", "a.sock", "--admin", "http://x", "status"],
            &["--token", "t", "--token-file", "f", "status"],
            &["wait-drained", "agent", "--timeout", "soon"],
            &["rollback"],
        ] {
            assert_eq!(parse(line).unwrap_err().exit_code(), 2, "{line:?}");
        }
    }

    #[test]
    fn global_options_go_before_or_after_the_command() {
        let a = parse(&["status", "--json", "--socket", "x.sock"]).unwrap();
        assert!(a.json);
        assert_eq!(a.socket, Some(PathBuf::from("x.sock")));
    }

    #[test]
    fn status_text_shows_every_part_of_a_service() {
        let out = render(
            &CtlCommand::Status { service: None },
            false,
            &ok(sample_status()),
        );
        assert_eq!(out.code, 0);
        assert_eq!(
            out.stdout,
            "agent: active blue, standby green (generation 7)\n\
             \x20 weights: blue 100%, green 0%\n\
             \x20 pool blue (active): 3 in flight, 0 draining\n\
             \x20   127.0.0.1:5000  healthy  version 1.4.1\n\
             \x20 pool green (standby): 0 in flight, 0 draining\n\
             \x20   127.0.0.1:5001  unhealthy  version unknown\n\
             \x20 last switch: 2026-11-22T10:00:00Z green → blue (manual, socket)\n"
        );
    }

    #[test]
    fn status_of_one_service_shows_canary_and_watch_when_set() {
        let mut svc = sample_status()["services"][0].clone();
        svc["canary"] = json!({"stage": 1, "weight": 5});
        svc["watch"] = json!({"until": "2026-11-22T10:01:00Z"});
        let command = CtlCommand::Status {
            service: Some("agent".into()),
        };
        let out = render(&command, false, &ok(svc));
        assert!(
            out.stdout.starts_with("agent: active blue"),
            "{}",
            out.stdout
        );
        assert!(out.stdout.contains("  canary: stage=1 weight=5\n"));
        assert!(out.stdout.contains("  watch: until=2026-11-22T10:01:00Z\n"));
    }

    #[test]
    fn json_flag_prints_the_answer_pretty() {
        let body = sample_status();
        let out = render(
            &CtlCommand::Status { service: None },
            true,
            &ok(body.clone()),
        );
        assert_eq!(
            out.stdout,
            serde_json::to_string_pretty(&body).unwrap() + "\n"
        );
    }

    #[test]
    fn events_render_one_line_each() {
        let body = json!({"events": [
            {"time": "2026-11-22T10:00:00Z", "service": "agent", "from": "blue", "to": "green",
             "reason": "manual", "actor": "api", "detail": {}},
            {"time": "2026-11-22T10:05:00Z", "service": null, "from": null, "to": null,
             "reason": "reload", "actor": "signal", "detail": {"generation": 9}},
        ]});
        let out = render(
            &CtlCommand::Events { service: None },
            false,
            &ok(body.clone()),
        );
        assert_eq!(
            out.stdout,
            "2026-11-22T10:00:00Z agent blue → green manual api\n\
             2026-11-22T10:05:00Z - - → - reload signal generation=9\n"
        );
        // A bare array is read the same way.
        let bare = ok(body["events"].clone());
        assert_eq!(
            render(&CtlCommand::Events { service: None }, false, &bare).stdout,
            out.stdout
        );
    }

    #[test]
    fn switch_summary_names_both_pools_and_the_generation() {
        let mut svc = sample_status()["services"][0].clone();
        svc["active"] = json!("green");
        svc["standby"] = json!("blue");
        svc["last_switch"] = json!({"from": "blue", "to": "green"});
        let body = json!({"generation": 8, "changed": true, "service": svc, "persisted": true});
        let command = parse(&["switch", "agent"]).unwrap().command;
        let out = render(&command, false, &ok(body.clone()));
        assert_eq!(out.stdout, "agent: switched blue → green (generation 8)\n");
        let command = parse(&["rollback", "agent"]).unwrap().command;
        let out = render(&command, false, &ok(body));
        assert_eq!(
            out.stdout,
            "agent: rolled back blue → green (generation 8)\n"
        );
    }

    #[test]
    fn switch_to_the_active_pool_says_nothing_changed() {
        let svc = sample_status()["services"][0].clone();
        let body = json!({"generation": 7, "changed": false, "service": svc});
        let command = parse(&["switch", "agent", "--to", "blue"]).unwrap().command;
        let out = render(&command, false, &ok(body));
        assert_eq!(
            out.stdout,
            "agent: already on blue, nothing changed (generation 7)\n"
        );
    }

    #[test]
    fn weight_summary_shows_the_split() {
        let mut svc = sample_status()["services"][0].clone();
        svc["weights"] = json!({"blue": 75, "green": 25});
        let body = json!({"generation": 9, "changed": true, "service": svc, "persisted": false});
        let command = parse(&["weight", "agent", "25"]).unwrap().command;
        let out = render(&command, false, &ok(body));
        assert_eq!(
            out.stdout,
            "agent: weights green 25%, blue 75% (generation 9) \
             [warning: not saved to the state file; lost on restart]\n"
        );
    }

    #[test]
    fn refused_answer_prints_code_and_message_and_exits_1() {
        let answer = Answer {
            status: StatusCode::CONFLICT,
            body: json!({"error": {"code": "target_unhealthy", "message": "green has no healthy server"}}),
        };
        let command = parse(&["switch", "agent"]).unwrap().command;
        let out = render(&command, false, &answer);
        assert_eq!(out.code, 1);
        assert_eq!(out.stdout, "");
        assert_eq!(
            out.stderr,
            "cutover ctl: refused: target_unhealthy: green has no healthy server\n"
        );
        // With --json the error body also goes to stdout for scripts.
        let out = render(&command, true, &answer);
        assert_eq!(out.code, 1);
        assert!(out.stdout.contains("\"target_unhealthy\""));
    }

    #[test]
    fn refused_answer_without_error_shape_names_the_status() {
        let answer = Answer {
            status: StatusCode::BAD_GATEWAY,
            body: Value::Null,
        };
        let out = render(&CtlCommand::Reload, false, &answer);
        assert_eq!(out.stderr, "cutover ctl: refused: HTTP 502: Bad Gateway\n");
        let answer = Answer {
            status: StatusCode::UNAUTHORIZED,
            body: json!({"error": {"code": "unauthorized", "message": "missing token"}}),
        };
        let out = render(&CtlCommand::Reload, false, &answer);
        assert!(out.stderr.contains("hint: pass --token"), "{}", out.stderr);
    }

    #[test]
    fn wait_drained_exits_1_when_not_drained() {
        let command = parse(&["wait-drained", "agent"]).unwrap().command;
        let out = render(
            &command,
            false,
            &ok(json!({"drained": true, "inflight": 0})),
        );
        assert_eq!((out.code, out.stdout.as_str()), (0, "agent: drained\n"));
        let out = render(
            &command,
            false,
            &ok(json!({"drained": false, "inflight": 4})),
        );
        assert_eq!(
            (out.code, out.stdout.as_str()),
            (1, "agent: not drained, 4 in flight\n")
        );
        let out = render(
            &command,
            true,
            &ok(json!({"drained": false, "inflight": 4})),
        );
        assert_eq!(out.code, 1);
    }

    #[test]
    fn admin_url_gives_connect_address_host_and_prefix() {
        let url = parse_admin_url("http://127.0.0.1:9090").unwrap();
        assert_eq!(
            (url.connect.as_str(), url.host.as_str(), url.prefix.as_str()),
            ("127.0.0.1:9090", "127.0.0.1:9090", "")
        );
        let url = parse_admin_url("localhost:9090/admin/").unwrap();
        assert_eq!(
            (url.connect.as_str(), url.prefix.as_str()),
            ("localhost:9090", "/admin")
        );
        let url = parse_admin_url("http://[::1]").unwrap();
        assert_eq!(
            (url.connect.as_str(), url.host.as_str()),
            ("[::1]:80", "[::1]")
        );
        assert!(parse_admin_url("https://example.com").is_err());
    }

    #[test]
    fn token_comes_from_option_then_file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin.token");
        std::fs::write(&file, "  from-file\n").unwrap();
        let args = parse(&["--admin", "http://127.0.0.1:1", "--token", "opt", "status"]).unwrap();
        let t = Target::resolve(&args, Some("env".into())).unwrap();
        assert_eq!(t.token.as_deref(), Some("opt"));
        let file_arg = file.to_str().unwrap();
        let args = parse(&["--admin", "127.0.0.1:1", "--token-file", file_arg, "status"]).unwrap();
        let t = Target::resolve(&args, Some("env".into())).unwrap();
        assert_eq!(t.token.as_deref(), Some("from-file"));
        let args = parse(&["--socket", "x.sock", "status"]).unwrap();
        let t = Target::resolve(&args, Some("env".into())).unwrap();
        assert_eq!(t.token.as_deref(), Some("env"));
        assert_eq!(t.endpoint, Endpoint::Socket(PathBuf::from("x.sock")));
        let t = Target::resolve(&args, None).unwrap();
        assert_eq!(t.token, None);
    }

    #[test]
    fn request_carries_host_and_bearer_token() {
        let target = Target {
            endpoint: Endpoint::Socket(PathBuf::from("x.sock")),
            token: Some("s3cret".into()),
        };
        let req = build_request(&target, &call(&["weight", "agent", "5"])).unwrap();
        assert_eq!(req.headers()[header::HOST], "localhost");
        assert_eq!(req.headers()[header::AUTHORIZATION], "Bearer s3cret");
        assert_eq!(req.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(req.uri(), "/api/v1/services/agent/weights");
        let target = Target {
            endpoint: Endpoint::Tcp(parse_admin_url("http://127.0.0.1:9090/x").unwrap()),
            token: None,
        };
        let req = build_request(&target, &call(&["status"])).unwrap();
        assert_eq!(req.headers()[header::HOST], "127.0.0.1:9090");
        assert_eq!(req.uri(), "/x/api/v1/status");
        assert!(req.headers().get(header::AUTHORIZATION).is_none());
    }
}
