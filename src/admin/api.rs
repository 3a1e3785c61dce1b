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
//! | `GET /api/v1/services/{svc}/drained?wait=60s` | 200 `{"drained": bool, "inflight": N}`; 404 |
//! | `GET /api/v1/events[?service=svc]` | 200 list |
//! | `POST /api/v1/reload` | 200; 400 `invalid_config` with the errors |
//!
//! A wrong method on a known path is 405. A state-changing request from a
//! browser (it carries `Origin`, or a non-JSON content type) is 403, so a
//! web page cannot drive the API. No GET changes state.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Serialize;

use super::error::ApiError;
use crate::control::events::Actor;
use crate::control::ControlPlane;
use crate::wire::{ErrorAnswer, ErrorBody, SwitchRequest, WeightsRequest};

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
    Drained(&'a str),
    Events,
    Reload,
}

impl Action<'_> {
    fn mutates(&self) -> bool {
        matches!(
            self,
            Action::Switch(_)
                | Action::Rollback(_)
                | Action::Weights(_)
                | Action::CanaryStart(_)
                | Action::CanaryAbort(_)
                | Action::Reload
        )
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
        ["api", "v1", "services", svc, "drained"] => (Action::Drained(svc), Method::GET),
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

/// Refuses state changes that come from a browser.
fn check_not_browser(req: &Request<Incoming>) -> Result<(), ApiError> {
    let forbidden = |why: &str| ApiError::new(StatusCode::FORBIDDEN, "forbidden", why.to_string());
    if req.headers().contains_key(header::ORIGIN) {
        return Err(forbidden(
            "state-changing admin requests are not accepted from web pages (Origin header present)",
        ));
    }
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        if !ct
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("application/json")
        {
            return Err(forbidden("admin request bodies must be application/json"));
        }
    }
    Ok(())
}

/// Answers one admin request. `actor` says which listener it came in on.
pub async fn handle(
    control: &Arc<ControlPlane>,
    req: Request<Incoming>,
    actor: Actor,
) -> Response<Full<Bytes>> {
    match dispatch(control, req, actor).await {
        Ok(resp) => resp,
        Err(e) => e.response(),
    }
}

async fn dispatch(
    control: &Arc<ControlPlane>,
    req: Request<Incoming>,
    actor: Actor,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let path = req.uri().path().to_string();
    let action = parse(req.method(), &path)?;
    if action.mutates() {
        check_not_browser(&req)?;
    }
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
    })
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
    fn only_state_changes_mutate() {
        assert!(Action::Switch("a").mutates());
        assert!(Action::Reload.mutates());
        assert!(!Action::Status.mutates());
        assert!(!Action::Drained("a").mutates());
    }
}
