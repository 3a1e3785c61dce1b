//! Dashboard sessions: what a browser holds instead of the admin token.
//!
//! Opening a session (`POST /ui/session`, same origin, with the token where
//! the listener has one) gives the browser two secrets: the session id, in
//! an `HttpOnly; SameSite=Strict` cookie no script can read, and a CSRF
//! token in the answer, which the page keeps in its origin's storage and
//! sends as `X-CSRF-Token` with every change. A cookie is scoped to a host
//! name, not to a port, so it also reaches other listeners of the same
//! host (the proxy's data port, and so upstreams): alone it lets a caller
//! read, never change anything. Both are 32 bytes from the operating
//! system's random source. Sessions live in memory: a restart ends them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use http::header::{self, HeaderMap, HeaderValue};

use super::super::constant_time_eq;

/// How long a session lasts.
pub const TTL: Duration = Duration::from_secs(12 * 3600);
/// Most sessions open at once; opening one more ends the oldest.
const MAX_SESSIONS: usize = 64;
/// The CSRF token's header.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Why no session could be opened.
#[derive(Debug, thiserror::Error)]
#[error("no random bytes from the operating system: {0}")]
pub struct NoRandom(getrandom::Error);

/// A session just opened.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The cookie's value.
    pub id: String,
    /// The CSRF token.
    pub csrf: String,
    /// When it ends.
    pub expires: SystemTime,
}

#[derive(Debug)]
struct Session {
    csrf: String,
    expires: Instant,
}

/// The open sessions of one admin listener.
#[derive(Debug)]
pub struct Sessions {
    /// The cookie's name: one per listener port, so two proxies on one
    /// host do not end each other's sessions.
    cookie: String,
    open: Mutex<HashMap<String, Session>>,
}

/// 32 random bytes, hex-encoded.
fn secret() -> Result<String, NoRandom> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(NoRandom)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl Sessions {
    /// No session yet; cookies named after `tag` (the listener's port).
    pub fn new(tag: &str) -> Sessions {
        Sessions {
            cookie: format!("cutover_session_{tag}"),
            open: Mutex::new(HashMap::new()),
        }
    }

    fn open_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // The map stays consistent whatever panicked while holding it.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a session at `now`.
    ///
    /// # Errors
    ///
    /// When the operating system gives no random bytes.
    pub fn open(&self, now: Instant) -> Result<Opened, NoRandom> {
        let (id, csrf) = (secret()?, secret()?);
        let mut open = self.open_sessions();
        open.retain(|_, s| s.expires > now);
        if open.len() >= MAX_SESSIONS {
            if let Some(oldest) = open
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            {
                open.remove(&oldest);
            }
        }
        open.insert(
            id.clone(),
            Session {
                csrf: csrf.clone(),
                expires: now + TTL,
            },
        );
        Ok(Opened {
            id,
            csrf,
            expires: SystemTime::now() + TTL,
        })
    }

    /// The id of the live session whose cookie `headers` carry.
    pub fn current(&self, headers: &HeaderMap, now: Instant) -> Option<String> {
        let id = cookie(headers, &self.cookie)?;
        let open = self.open_sessions();
        let live = open.get(id).is_some_and(|s| s.expires > now);
        live.then(|| id.to_string())
    }

    /// Whether `headers` carry the CSRF token of session `id`.
    pub fn csrf_matches(&self, id: &str, headers: &HeaderMap) -> bool {
        let Some(given) = headers.get(CSRF_HEADER) else {
            return false;
        };
        let open = self.open_sessions();
        open.get(id)
            .is_some_and(|s| constant_time_eq(given.as_bytes(), s.csrf.as_bytes()))
    }

    /// Ends session `id`.
    pub fn close(&self, id: &str) {
        self.open_sessions().remove(id);
    }

    /// The `Set-Cookie` value that stores `opened` in the browser.
    pub fn set_cookie(&self, opened: &Opened) -> HeaderValue {
        self.cookie_value(&opened.id, TTL.as_secs())
    }

    /// The `Set-Cookie` value that removes the cookie.
    pub fn clear_cookie(&self) -> HeaderValue {
        self.cookie_value("", 0)
    }

    fn cookie_value(&self, value: &str, max_age: u64) -> HeaderValue {
        let text = format!(
            "{}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict",
            self.cookie
        );
        HeaderValue::from_str(&text).expect("cookie names and hex values are header-safe")
    }
}

/// The value of cookie `name` among `headers`' `Cookie` fields.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn a_session_is_found_by_its_cookie_and_checked_by_its_csrf_token() {
        let sessions = Sessions::new("9090");
        let now = Instant::now();
        let opened = sessions.open(now).unwrap();
        assert_eq!((opened.id.len(), opened.csrf.len()), (64, 64));
        assert_ne!(opened.id, opened.csrf);
        let set = sessions.set_cookie(&opened);
        let set = set.to_str().unwrap();
        assert!(set.starts_with("cutover_session_9090="), "{set}");
        assert!(set.contains("; HttpOnly; SameSite=Strict"), "{set}");

        let mut headers = with_cookie(&format!("other=1; cutover_session_9090={}", opened.id));
        let id = sessions.current(&headers, now).expect("live session");
        assert!(!sessions.csrf_matches(&id, &headers), "no token sent");
        headers.insert(CSRF_HEADER, HeaderValue::from_str(&opened.csrf).unwrap());
        assert!(sessions.csrf_matches(&id, &headers));
        headers.insert(CSRF_HEADER, HeaderValue::from_static("0000"));
        assert!(!sessions.csrf_matches(&id, &headers));

        assert!(sessions.current(&headers, now + TTL).is_none(), "expired");
        let other_port = with_cookie(&format!("cutover_session_9091={}", opened.id));
        assert!(sessions.current(&other_port, now).is_none());
        sessions.close(&id);
        assert!(sessions.current(&headers, now).is_none(), "closed");
    }

    #[test]
    fn opening_beyond_the_cap_ends_the_oldest_session() {
        let sessions = Sessions::new("x");
        let start = Instant::now();
        let first = sessions.open(start).unwrap();
        for i in 1..=MAX_SESSIONS as u32 {
            sessions
                .open(start + Duration::from_secs(u64::from(i)))
                .unwrap();
        }
        let headers = with_cookie(&format!("cutover_session_x={}", first.id));
        assert!(sessions.current(&headers, start).is_none());
        assert_eq!(sessions.open_sessions().len(), MAX_SESSIONS);
    }
}
