//! `cutover ctl`: the admin client. It turns a command into one HTTP/1.1 call
//! to the admin API (over the Unix socket by default, or TCP with `--admin`),
//! then prints the answer as text or, with `--json`, as pretty JSON.
//!
//! It speaks the admin API's wire format ([`crate::wire`]): requests are
//! built from its types and answers decoded into them (leniently, so a newer
//! server's extra fields are ignored). Exit
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
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::PoolName;
use crate::wire::{SwitchRequest, WeightsRequest};

/// How long any call may take, except `wait-drained`.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Added to `wait-drained --timeout`: the server answers at its deadline, so
/// the client waits a little longer for that answer.
const WAIT_GRACE: Duration = Duration::from_secs(5);
/// The config file used when `-c` is not given, if it exists.
const DEFAULT_CONFIG: &str = "proxy.toml";
/// The socket used when neither `--socket` nor a config names one (else
/// `cutover run --docker`'s, in its state directory).
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
    /// Release IMAGE on a Docker service: new containers in the idle pool,
    /// healthy, switch, watch, drain, and the old containers stop after
    /// --keep-old. Run by the proxy; this prints each step as it happens.
    /// Exit 0 when released; 1 when refused, aborted or rolled back.
    Deploy(DeployArgs),
    /// Re-read the config file.
    Reload,
}

/// `cutover ctl deploy`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct DeployArgs {
    /// The service.
    pub service: String,
    /// The image of the new containers.
    #[arg(long, value_name = "IMAGE", required_unless_present_any = ["abort", "follow"])]
    pub image: Option<String>,
    /// Refuse unless every new container reports this version.
    #[arg(long, value_name = "V")]
    pub version: Option<String>,
    /// Run the service's canary instead of switching at once.
    #[arg(long)]
    pub canary: bool,
    /// How long the old containers keep running once released (rollback
    /// stays instant until then).
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = humantime::parse_duration)]
    pub keep_old: Duration,
    /// How long the new containers have to turn healthy.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Do not retry on the old pool the idempotent requests the new pool
    /// fails between the switch and the release.
    #[arg(long)]
    pub no_retry: bool,
    /// Abort the running deploy: back to the old pool.
    #[arg(long, conflicts_with_all = ["image", "follow"])]
    pub abort: bool,
    /// Follow the running (or last) deploy without starting one.
    #[arg(long, conflicts_with = "image")]
    pub follow: bool,
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
    fn name(self) -> PoolName {
        match self {
            Pool::Blue => PoolName::Blue,
            Pool::Green => PoolName::Green,
        }
    }
}

/// A request body as JSON.
fn to_value<T: serde::Serialize>(body: &T) -> Value {
    serde_json::to_value(body).expect("request bodies serialize: plain data")
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
    if let CtlCommand::Deploy(deploy) = &args.command {
        if !deploy.abort {
            use std::io::Write as _;
            let code = follow_deploy(&args, deploy, &mut |to_stderr, text| {
                if to_stderr {
                    eprint!("{text}");
                } else {
                    print!("{text}");
                    let _ = std::io::stdout().flush();
                }
            })
            .await;
            return ExitCode::from(code);
        }
    }
    let outcome = execute(&args).await;
    print!("{}", outcome.stdout);
    eprint!("{}", outcome.stderr);
    ExitCode::from(outcome.code)
}

/// Runs `cutover ctl` and returns what it would print, without printing.
/// Reads `CUTOVER_TOKEN` from the environment when no token option is given.
pub async fn execute(args: &CtlArgs) -> Outcome {
    if let CtlCommand::Deploy(deploy) = &args.command {
        if !deploy.abort {
            let (mut stdout, mut stderr) = (String::new(), String::new());
            let code = follow_deploy(args, deploy, &mut |to_stderr, text| {
                if to_stderr {
                    stderr.push_str(text);
                } else {
                    stdout.push_str(text);
                }
            })
            .await;
            return Outcome {
                code,
                stdout,
                stderr,
            };
        }
    }
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

/// `./cutover.sock`, unless it does not exist and the socket of
/// `cutover run --docker` does (as inside its container).
fn default_socket() -> PathBuf {
    let here = PathBuf::from(DEFAULT_SOCKET);
    let docker = Path::new(crate::config::DEFAULT_DOCKER_STATE_DIR).join(DEFAULT_SOCKET);
    if !here.exists() && docker.exists() {
        docker
    } else {
        here
    }
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
                None => Endpoint::Socket(default_socket()),
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
            let body = SwitchRequest {
                to: to.map(Pool::name),
                expect_version: expect_version.clone(),
                force: *force,
            };
            let body = Some(to_value(&body));
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
            let body = WeightsRequest {
                standby: Some(i64::from(*percent)),
            };
            let body = Some(to_value(&body));
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
        CtlCommand::Deploy(d) => (
            Method::DELETE,
            service(&d.service, "/deploy"),
            None,
            CALL_TIMEOUT,
        ),
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

mod deploy;
mod render;

use deploy::follow_deploy;
use render::render;

#[cfg(test)]
mod tests;
