//! Who may do what on an admin listener.
//!
//! - Open to all: `/healthz`, `/readyz`, `/metrics`, the dashboard's page
//!   and `GET /ui/session`.
//! - Reads (`GET /api/v1/*`): a dashboard session (its cookie), else the
//!   bearer token where the listener has one.
//! - Changes: with a dashboard session, only from the listener's own
//!   origin and with the session's CSRF token; without one, the bearer
//!   token where the listener has one, and never from a web page (a
//!   request with `Origin`, or with a body that is not JSON). So a page of
//!   another origin changes nothing, with or without the operator's
//!   cookie, and a script or `ctl` works as it always did.
//! - Opening a session: from the listener's own origin (on a loopback
//!   listener, reached by a loopback name or address, so a page that
//!   rebinds its own name to 127.0.0.1 cannot open one), with the token
//!   where the listener has one.

use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderMap};
use http::StatusCode;

use super::constant_time_eq;
use super::dashboard::Sessions;
use super::error::ApiError;

/// What an action asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing.
    Open,
    /// The right to read the release state.
    Read,
    /// The right to change it.
    Change,
}

/// What one admin listener asks of its callers.
#[derive(Debug, Clone)]
pub struct Guard {
    /// The bearer token, where the listener has one.
    pub token: Option<Arc<str>>,
    /// Whether the listener is bound to a loopback address (or is the
    /// Unix socket).
    pub loopback: bool,
}

impl Guard {
    /// Whether `given` is the listener's token (always, where it has none).
    pub fn token_matches(&self, given: Option<&str>) -> bool {
        match (&self.token, given) {
            (None, _) => true,
            (Some(token), Some(given)) => constant_time_eq(given.as_bytes(), token.as_bytes()),
            (Some(_), None) => false,
        }
    }
}

fn forbidden(why: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", why)
}

/// 401, with the header the status calls for.
pub fn unauthorized() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "this admin listener requires Authorization: Bearer <token> (or a dashboard session)",
    )
}

/// The bearer token `headers` carry.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Whether `Origin` names the listener the request reached (its `Host`).
pub fn same_origin(headers: &HeaderMap) -> bool {
    let (Some(origin), Some(host)) = (headers.get(header::ORIGIN), headers.get(header::HOST))
    else {
        return false;
    };
    let (Ok(origin), Ok(host)) = (origin.to_str(), host.to_str()) else {
        return false;
    };
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

/// Whether `Host` is a loopback address or `localhost`.
pub fn host_is_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Refuses the request unless its caller may do what `need` asks.
///
/// # Errors
///
/// 401 without the token (or a session) where one is needed; 403 for a
/// change from a web page without the session's origin and CSRF token.
pub fn check(
    need: Need,
    headers: &HeaderMap,
    guard: &Guard,
    sessions: &Sessions,
) -> Result<(), ApiError> {
    if need == Need::Open {
        return Ok(());
    }
    if let Some(id) = sessions.current(headers, Instant::now()) {
        let from_elsewhere = headers.contains_key(header::ORIGIN) && !same_origin(headers);
        return match need {
            _ if from_elsewhere => Err(forbidden(
                "this dashboard session is not accepted from another origin",
            )),
            Need::Change if !same_origin(headers) => Err(forbidden(
                "a change in a dashboard session must come from the dashboard's origin",
            )),
            Need::Change if !sessions.csrf_matches(&id, headers) => Err(forbidden(
                "a change in a dashboard session needs the session's X-CSRF-Token",
            )),
            _ => Ok(()),
        };
    }
    if !guard.token_matches(bearer(headers)) {
        return Err(unauthorized());
    }
    if need == Need::Change {
        not_from_a_page(headers)?;
    }
    Ok(())
}

/// Refuses a change that comes from a web page without a session.
fn not_from_a_page(headers: &HeaderMap) -> Result<(), ApiError> {
    if headers.contains_key(header::ORIGIN) {
        return Err(forbidden(
            "state-changing admin requests are not accepted from web pages (Origin header present) without a dashboard session",
        ));
    }
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
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

/// Refuses to open a session for a request that does not come from the
/// listener's own page, or that lacks the token.
///
/// # Errors
///
/// 403 from another origin (or, on a loopback listener, another host
/// name); 401 with a wrong or missing token.
pub fn may_open_session(
    headers: &HeaderMap,
    guard: &Guard,
    token: Option<&str>,
) -> Result<(), ApiError> {
    if !same_origin(headers) {
        return Err(forbidden(
            "a dashboard session is opened only from the dashboard's own origin",
        ));
    }
    if guard.loopback && !host_is_loopback(headers) {
        return Err(forbidden(
            "on a loopback admin listener a dashboard session is opened only at localhost or a loopback address",
        ));
    }
    if !guard.token_matches(token) {
        return Err(unauthorized());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn guard(token: Option<&str>) -> Guard {
        Guard {
            token: token.map(Arc::from),
            loopback: token.is_none(),
        }
    }

    #[test]
    fn origin_must_name_the_host_reached() {
        let h = headers(&[
            ("host", "127.0.0.1:9090"),
            ("origin", "http://127.0.0.1:9090"),
        ]);
        assert!(same_origin(&h));
        let h = headers(&[
            ("host", "127.0.0.1:9090"),
            ("origin", "http://127.0.0.1:8080"),
        ]);
        assert!(!same_origin(&h));
        assert!(!same_origin(&headers(&[("host", "a")])));
        assert!(!same_origin(&headers(&[("host", "a"), ("origin", "null")])));
    }

    #[test]
    fn loopback_hosts_are_names_and_addresses_of_loopback_only() {
        for host in [
            "localhost:9090",
            "127.0.0.1:9090",
            "[::1]:9090",
            "127.0.0.2",
            "LOCALHOST",
        ] {
            assert!(host_is_loopback(&headers(&[("host", host)])), "{host}");
        }
        for host in ["evil.example:9090", "10.0.0.1:9090", "[::2]:1"] {
            assert!(!host_is_loopback(&headers(&[("host", host)])), "{host}");
        }
    }

    #[test]
    fn without_a_session_reads_need_the_token_and_changes_refuse_pages() {
        let sessions = Sessions::new("t");
        let tok = guard(Some("s3cret"));
        let none = HeaderMap::new();
        assert_eq!(
            check(Need::Read, &none, &tok, &sessions)
                .unwrap_err()
                .status,
            401
        );
        assert!(check(Need::Open, &none, &tok, &sessions).is_ok());
        let script = headers(&[
            ("authorization", "Bearer s3cret"),
            ("content-type", "application/json"),
        ]);
        assert!(check(Need::Change, &script, &tok, &sessions).is_ok());
        let page = headers(&[("origin", "http://x"), ("host", "x")]);
        let open = guard(None);
        assert!(check(Need::Read, &page, &open, &sessions).is_ok());
        assert_eq!(
            check(Need::Change, &page, &open, &sessions)
                .unwrap_err()
                .status,
            403
        );
        let form = headers(&[("content-type", "application/x-www-form-urlencoded")]);
        assert_eq!(
            check(Need::Change, &form, &open, &sessions)
                .unwrap_err()
                .status,
            403
        );
    }

    #[test]
    fn a_session_changes_only_from_its_origin_with_its_csrf_token() {
        let sessions = Sessions::new("t");
        let opened = sessions.open(Instant::now()).unwrap();
        let cookie = format!("cutover_session_t={}", opened.id);
        let tok = guard(Some("s3cret"));
        let base = [("cookie", cookie.as_str()), ("host", "10.0.0.5:9090")];
        let read = headers(&base);
        assert!(
            check(Need::Read, &read, &tok, &sessions).is_ok(),
            "the cookie reads"
        );
        assert_eq!(
            check(Need::Change, &read, &tok, &sessions)
                .unwrap_err()
                .status,
            403
        );
        let mut own = base.to_vec();
        own.push(("origin", "http://10.0.0.5:9090"));
        assert_eq!(
            check(Need::Change, &headers(&own), &tok, &sessions)
                .unwrap_err()
                .status,
            403
        );
        own.push(("x-csrf-token", &opened.csrf));
        assert!(check(Need::Change, &headers(&own), &tok, &sessions).is_ok());
        let mut foreign = base.to_vec();
        foreign.push(("origin", "http://10.0.0.5:8080"));
        foreign.push(("x-csrf-token", &opened.csrf));
        let refused = check(Need::Change, &headers(&foreign), &tok, &sessions).unwrap_err();
        assert_eq!(refused.status, 403);
        assert_eq!(
            check(Need::Read, &headers(&foreign), &tok, &sessions)
                .unwrap_err()
                .status,
            403
        );
    }

    #[test]
    fn a_session_opens_from_the_own_origin_with_the_token() {
        let own = headers(&[
            ("host", "10.0.0.5:9090"),
            ("origin", "http://10.0.0.5:9090"),
        ]);
        let tok = guard(Some("s3cret"));
        assert!(may_open_session(&own, &tok, Some("s3cret")).is_ok());
        assert_eq!(
            may_open_session(&own, &tok, Some("nope"))
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(may_open_session(&own, &tok, None).unwrap_err().status, 401);
        let foreign = headers(&[("host", "10.0.0.5:9090"), ("origin", "http://evil.example")]);
        assert_eq!(
            may_open_session(&foreign, &tok, Some("s3cret"))
                .unwrap_err()
                .status,
            403
        );
        // A loopback listener reached under another name: DNS rebinding.
        let rebound = headers(&[
            ("host", "evil.example:9090"),
            ("origin", "http://evil.example:9090"),
        ]);
        assert_eq!(
            may_open_session(&rebound, &guard(None), None)
                .unwrap_err()
                .status,
            403
        );
        let local = headers(&[
            ("host", "127.0.0.1:9090"),
            ("origin", "http://127.0.0.1:9090"),
        ]);
        assert!(may_open_session(&local, &guard(None), None).is_ok());
    }
}
