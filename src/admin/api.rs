//! The admin API: method + path → a [`ControlPlane`] call, JSON in and out.
//!
//! | method and path | answers |
//! |---|---|
//! | `GET /healthz` | 200 whenever the process can answer |
//! | `GET /metrics` | 200 Prometheus text format |
//! | `GET /readyz` | 200 once the first health round is done; 503 before and while shutting down |
//! | `GET /api/v1/status` | 200 every service |
//! | `GET /api/v1/services/{svc}` | 200 one service; 404 unknown |
//! | `POST /api/v1/services/{svc}/switch` | 200 with generation; 409 `target_unhealthy` / `version_mismatch`; 404 |
//! | `POST /api/v1/services/{svc}/rollback` | 200; 409 `nothing_to_roll_back`; 404 |
//! | `PUT /api/v1/services/{svc}/weights` | 200; 400 `invalid_weight`; 404 |
//! | `POST /api/v1/services/{svc}/canary` | 200 starts the staged rollout; 409 `no_canary_stages` / `canary_running` / `target_unhealthy`; 404 |
//! | `DELETE /api/v1/services/{svc}/canary` | 200 aborts it (weight back to 0); 409 `no_canary`; 404 |
//! | `POST /api/v1/services/{svc}/deploy` | 200 the deploy started (body `{"image", "version", "canary", "keep_old", "timeout"}`); 400 `bad_request`; 409 `deploy_running` / `no_docker` / `no_canary_stages`; 404 |
//! | `GET /api/v1/services/{svc}/deploy` | 200 the last deploy's steps, one JSON object a line (`application/x-ndjson`), each as it happens, until it ends; 409 `no_deploy`; 404 |
//! | `DELETE /api/v1/services/{svc}/deploy` | 200 aborts the running deploy (back to the old pool); 409 `no_deploy`; 404 |
//! | `GET /api/v1/services/{svc}/drained?wait=60s` | 200 `{"drained": bool, "inflight": N}`; 404 |
//! | `GET /api/v1/events[?service=svc]` | 200 list |
//! | `POST /api/v1/reload` | 200; 400 `invalid_config` with the errors |
//! | `GET /api/v1/stats` | 200 per pool, one sample a second over the last minute |
//! | `GET /api/v1/stream` | 200 server-sent events: `status`, `events` and `stats` at once, then `stats` each second, `status` when it changes, each new `event` |
//! | `GET /` | 302 to `/ui/` |
//! | `GET /ui/`, `/ui/{file}` | 200 the dashboard; 404 no such file |
//! | `GET /ui/session` | 200 `{"session": bool, "token_required": bool}` |
//! | `POST /ui/session` | 200 `{"csrf", "expires"}` and the session cookie; 401 wrong token; 403 from another origin |
//! | `DELETE /ui/session` | 200 ends the session |
//!
//! A wrong method on a known path is 405. Who may call what is
//! [`super::access`]'s: a change from a web page needs a dashboard session,
//! the page's origin and the session's CSRF token; without them it is 403.
//! No GET changes state.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Serialize;

use super::access::{self, Guard, Need};
use super::dashboard::{page, Dashboard, Feed};
use super::error::ApiError;
use crate::control::events::Actor;
use crate::control::ControlPlane;
use crate::wire::{
    DeployRequest, ErrorAnswer, ErrorBody, SessionOpened, SessionRequest, SessionState,
    SwitchRequest, WeightsRequest,
};

/// An admin answer's body: whole, or a stream of server-sent events.
pub type AdminBody = http_body_util::Either<Full<Bytes>, Feed>;

/// Largest admin request body.
const MAX_BODY: usize = 64 * 1024;
/// `wait` of a drained query when none is given.
const DEFAULT_DRAIN_WAIT: Duration = Duration::from_secs(60);

/// One admin action, parsed from method and path.
#[derive(Debug, PartialEq, Eq)]
enum Action<'a> {
    Healthz,
    Readyz,
    Metrics,
    Status,
    Service(&'a str),
    Switch(&'a str),
    Rollback(&'a str),
    Weights(&'a str),
    CanaryStart(&'a str),
    CanaryAbort(&'a str),
    DeployStart(&'a str),
    DeployFollow(&'a str),
    DeployAbort(&'a str),
    Drained(&'a str),
    Events,
    Reload,
    Stats,
    Stream,
    Root,
    Page(&'a str),
    Session,
    SessionOpen,
    SessionClose,
}

impl Action<'_> {
    /// What the action asks of its caller.
    fn need(&self) -> Need {
        match self {
            Action::Healthz
            | Action::Readyz
            | Action::Metrics
            | Action::Root
            | Action::Page(_)
            | Action::Session
            | Action::SessionOpen => Need::Open,
            Action::Status
            | Action::Service(_)
            | Action::Drained(_)
            | Action::DeployFollow(_)
            | Action::Events
            | Action::Stats
            | Action::Stream => Need::Read,
            Action::Switch(_)
            | Action::Rollback(_)
            | Action::Weights(_)
            | Action::CanaryStart(_)
            | Action::CanaryAbort(_)
            | Action::DeployStart(_)
            | Action::DeployAbort(_)
            | Action::Reload
            | Action::SessionClose => Need::Change,
        }
    }
}

/// Parses a method and path into an action.
fn parse<'a>(method: &Method, path: &'a str) -> Result<Action<'a>, ApiError> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let (action, allowed): (Action<'a>, Method) = match segments.as_slice() {
        ["healthz"] => (Action::Healthz, Method::GET),
        ["readyz"] => (Action::Readyz, Method::GET),
        ["metrics"] => (Action::Metrics, Method::GET),
        ["api", "v1", "status"] => (Action::Status, Method::GET),
        ["api", "v1", "events"] => (Action::Events, Method::GET),
        ["api", "v1", "reload"] => (Action::Reload, Method::POST),
        ["api", "v1", "services", svc] => (Action::Service(svc), Method::GET),
        ["api", "v1", "services", svc, "switch"] => (Action::Switch(svc), Method::POST),
        ["api", "v1", "services", svc, "rollback"] => (Action::Rollback(svc), Method::POST),
        ["api", "v1", "services", svc, "weights"] => (Action::Weights(svc), Method::PUT),
        ["api", "v1", "services", svc, "canary"] if method == Method::DELETE => {
            (Action::CanaryAbort(svc), Method::DELETE)
        }
        ["api", "v1", "services", svc, "canary"] => (Action::CanaryStart(svc), Method::POST),
        ["api", "v1", "services", svc, "deploy"] => match *method {
            Method::POST => (Action::DeployStart(svc), Method::POST),
            Method::DELETE => (Action::DeployAbort(svc), Method::DELETE),
            _ => (Action::DeployFollow(svc), Method::GET),
        },
        ["api", "v1", "services", svc, "drained"] => (Action::Drained(svc), Method::GET),
        ["api", "v1", "stats"] => (Action::Stats, Method::GET),
        ["api", "v1", "stream"] => (Action::Stream, Method::GET),
        [] => (Action::Root, Method::GET),
        ["ui"] => (Action::Page("index.html"), Method::GET),
        ["ui", "session"] => match *method {
            Method::POST => (Action::SessionOpen, Method::POST),
            Method::DELETE => (Action::SessionClose, Method::DELETE),
            _ => (Action::Session, Method::GET),
        },
        ["ui", file] if page::has(file) => (Action::Page(file), Method::GET),
        _ => return Err(ApiError::not_found(path)),
    };
    let head_ok = allowed == Method::GET && method == Method::HEAD;
    if method != allowed && !head_ok {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{path} takes {allowed}, not {method}"),
        ));
    }
    Ok(action)
}

/// The value of `key` in a query string.
fn query<'a>(req: &'a Request<Incoming>, key: &str) -> Option<&'a str> {
    req.uri()
        .query()?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).expect("admin answers serialize: plain data");
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

async fn read_json<T: serde::de::DeserializeOwned + Default>(
    req: Request<Incoming>,
) -> Result<T, ApiError> {
    let bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?
        .to_bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// What an admin listener serves with: the control plane, the dashboard,
/// the listener's [`Guard`] and which actor its changes are recorded as.
#[derive(Debug, Clone)]
pub struct Context {
    /// The control plane.
    pub control: Arc<ControlPlane>,
    /// The dashboard's data and sessions.
    pub dashboard: Arc<Dashboard>,
    /// The listener's dashboard sessions.
    pub sessions: Arc<super::dashboard::Sessions>,
    /// What the listener asks of callers.
    pub guard: Guard,
    /// Who its changes are recorded as.
    pub actor: Actor,
}

/// Answers one admin request.
pub async fn handle(cx: &Context, req: Request<Incoming>) -> Response<AdminBody> {
    let path = req.uri().path().to_string();
    let action = match parse(req.method(), &path) {
        Ok(action) => action,
        Err(e) => return e.response().map(AdminBody::Left),
    };
    if let Err(e) = access::check(action.need(), req.headers(), &cx.guard, &cx.sessions) {
        return e.response().map(AdminBody::Left);
    }
    match action {
        Action::Stream => stream_response(cx.dashboard.stream().await),
        Action::DeployFollow(svc) => match cx.control.deploy_follow(svc).await {
            Ok(steps) => steps_response(steps),
            Err(e) => ApiError::from(e).response().map(AdminBody::Left),
        },
        action => match dispatch(cx, action, req).await {
            Ok(resp) => resp.map(AdminBody::Left),
            Err(e) => e.response().map(AdminBody::Left),
        },
    }
}

/// The answer that carries a stream of server-sent events.
fn stream_response(feed: Feed) -> Response<AdminBody> {
    let mut resp = Response::new(AdminBody::Right(feed));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    resp
}

/// The answer that carries a deploy's steps, one JSON object a line.
fn steps_response(
    steps: futures_util::stream::BoxStream<'static, crate::wire::DeployStep>,
) -> Response<AdminBody> {
    use futures_util::StreamExt;
    let lines = steps.map(|step| {
        let mut line = serde_json::to_vec(&step).expect("admin answers serialize: plain data");
        line.push(b'\n');
        Bytes::from(line)
    });
    let mut resp = Response::new(AdminBody::Right(Feed::lines(lines.boxed())));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-ndjson"),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    resp
}

async fn dispatch(
    cx: &Context,
    action: Action<'_>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let (control, actor) = (&cx.control, cx.actor);
    let ok = StatusCode::OK;
    Ok(match action {
        Action::Healthz => json(ok, &serde_json::json!({"status": "ok"})),
        Action::Readyz => {
            let ready = control.is_ready();
            let status = if ready {
                ok
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(status, &serde_json::json!({"ready": ready}))
        }
        Action::Metrics => {
            let mut resp = Response::new(Full::new(Bytes::from(control.render_metrics().await)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        Action::Status => json(ok, &control.status().await),
        Action::Service(svc) => json(ok, &control.service(svc).await?),
        Action::Switch(svc) => {
            let body: SwitchRequest = read_json(req).await?;
            json(ok, &control.switch(svc, body, actor).await?)
        }
        Action::Rollback(svc) => json(ok, &control.rollback(svc, actor).await?),
        Action::CanaryStart(svc) => json(ok, &control.canary_start(svc, actor).await?),
        Action::CanaryAbort(svc) => json(ok, &control.canary_abort(svc, actor).await?),
        Action::DeployStart(svc) => {
            let body: DeployRequest = read_json(req).await?;
            json(ok, &control.deploy_start(svc, body, actor).await?)
        }
        Action::DeployAbort(svc) => json(ok, &control.deploy_abort(svc).await?),
        // Answered by `handle`, with a streaming body.
        Action::DeployFollow(svc) => {
            return Err(ApiError::not_found(&format!(
                "/api/v1/services/{svc}/deploy"
            )))
        }
        Action::Weights(svc) => {
            let body: WeightsRequest = read_json(req).await?;
            let standby = body
                .standby
                .ok_or_else(|| ApiError::bad_request("expected a body like {\"standby\": 25}"))?;
            json(ok, &control.set_weight(svc, standby, actor).await?)
        }
        Action::Drained(svc) => {
            let wait = match query(&req, "wait") {
                Some(w) => humantime::parse_duration(w).map_err(|_| {
                    ApiError::bad_request(format!(
                        "wait={w:?} is not a duration (expected e.g. \"60s\")"
                    ))
                })?,
                None => DEFAULT_DRAIN_WAIT,
            };
            json(ok, &control.drained(svc, wait).await?)
        }
        Action::Events => {
            let service = query(&req, "service").filter(|s| !s.is_empty());
            json(ok, &control.events(service).await)
        }
        Action::Reload => match control.reload(actor).await {
            Ok(applied) => json(ok, &applied),
            Err(crate::control::ControlError::InvalidConfig(e)) => {
                let body = ErrorAnswer {
                    error: ErrorBody {
                        code: "invalid_config".into(),
                        message: "config is invalid; the running config stays".into(),
                        errors: e.lines(),
                    },
                };
                json(StatusCode::BAD_REQUEST, &body)
            }
            Err(e) => return Err(e.into()),
        },
        Action::Stats => json(ok, &cx.dashboard.stats()),
        // Answered by `handle`, with a streaming body.
        Action::Stream => return Err(ApiError::not_found("/api/v1/stream")),
        Action::Root => page::redirect(),
        Action::Page(file) => page::serve(file).ok_or_else(|| ApiError::not_found(file))?,
        Action::Session => {
            let now = std::time::Instant::now();
            let state = SessionState {
                session: cx.sessions.current(req.headers(), now).is_some(),
                token_required: cx.guard.token.is_some(),
            };
            json(ok, &state)
        }
        Action::SessionOpen => open_session(cx, req).await?,
        Action::SessionClose => {
            if let Some(id) = cx
                .sessions
                .current(req.headers(), std::time::Instant::now())
            {
                cx.sessions.close(&id);
            }
            let mut resp = json(ok, &serde_json::json!({"session": false}));
            resp.headers_mut()
                .insert(header::SET_COOKIE, cx.sessions.clear_cookie());
            resp
        }
    })
}

/// `POST /ui/session`: a new dashboard session for the listener's own
/// page, with its cookie.
async fn open_session(
    cx: &Context,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let headers = req.headers().clone();
    let body: SessionRequest = read_json(req).await?;
    access::may_open_session(&headers, &cx.guard, body.token.as_deref().map(str::trim))?;
    let opened = cx
        .sessions
        .open(std::time::Instant::now())
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_session", e.to_string()))?;
    let answer = SessionOpened {
        csrf: opened.csrf.clone(),
        expires: crate::wire::rfc3339(opened.expires),
    };
    let mut resp = json(StatusCode::OK, &answer);
    resp.headers_mut()
        .insert(header::SET_COOKIE, cx.sessions.set_cookie(&opened));
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_into_actions() {
        assert_eq!(
            parse(&Method::GET, "/api/v1/status").unwrap(),
            Action::Status
        );
        assert_eq!(
            parse(&Method::POST, "/api/v1/services/agent/switch").unwrap(),
            Action::Switch("agent")
        );
        assert_eq!(
            parse(&Method::PUT, "/api/v1/services/agent/weights/").unwrap(),
            Action::Weights("agent")
        );
        assert_eq!(
            parse(&Method::GET, "/api/v1/services/agent/drained").unwrap(),
            Action::Drained("agent")
        );
        assert_eq!(parse(&Method::HEAD, "/healthz").unwrap(), Action::Healthz);
        assert_eq!(
            parse(&Method::POST, "/api/v1/services/agent/deploy").unwrap(),
            Action::DeployStart("agent")
        );
        assert_eq!(
            parse(&Method::GET, "/api/v1/services/agent/deploy").unwrap(),
            Action::DeployFollow("agent")
        );
        assert_eq!(
            parse(&Method::DELETE, "/api/v1/services/agent/deploy").unwrap(),
            Action::DeployAbort("agent")
        );
        assert_eq!(Action::DeployStart("a").need(), Need::Change);
        assert_eq!(Action::DeployAbort("a").need(), Need::Change);
        assert_eq!(Action::DeployFollow("a").need(), Need::Read);
    }

    #[test]
    fn wrong_method_is_405_and_unknown_path_404() {
        assert_eq!(
            parse(&Method::GET, "/api/v1/services/a/switch")
                .unwrap_err()
                .status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            parse(&Method::GET, "/api/v2/status").unwrap_err().status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            parse(&Method::POST, "/api/v1/status").unwrap_err().status,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn only_state_changes_need_the_right_to_change() {
        assert_eq!(Action::Switch("a").need(), Need::Change);
        assert_eq!(Action::Reload.need(), Need::Change);
        assert_eq!(Action::Status.need(), Need::Read);
        assert_eq!(Action::Drained("a").need(), Need::Read);
        assert_eq!(Action::Stream.need(), Need::Read);
        assert_eq!(Action::Page("index.html").need(), Need::Open);
    }

    #[test]
    fn the_dashboard_paths_parse() {
        assert_eq!(parse(&Method::GET, "/").unwrap(), Action::Root);
        assert_eq!(
            parse(&Method::GET, "/ui/").unwrap(),
            Action::Page("index.html")
        );
        assert_eq!(
            parse(&Method::GET, "/ui/dashboard.js").unwrap(),
            Action::Page("dashboard.js")
        );
        assert_eq!(
            parse(&Method::GET, "/ui/nothing.js").unwrap_err().status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            parse(&Method::POST, "/ui/session").unwrap(),
            Action::SessionOpen
        );
        assert_eq!(
            parse(&Method::PUT, "/ui/session").unwrap_err().status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            parse(&Method::GET, "/api/v1/stream").unwrap(),
            Action::Stream
        );
    }
}
