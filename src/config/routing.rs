//! What a route carries besides its match: the listeners it is served on
//! and the middlewares applied to its requests (Traefik's entrypoints and
//! middlewares, read from Docker labels). Plain data; the proxy applies it.

use std::fmt;

use http::{HeaderName, HeaderValue};

/// One of cutover's data listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Listener {
    /// `server.listen`.
    Http,
    /// `server.tls.listen`.
    Https,
}

impl Listener {
    /// `"http"` or `"https"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Http => "http",
            Listener::Https => "https",
        }
    }

    /// Parses `"http"` or `"https"`.
    pub fn parse(s: &str) -> Option<Listener> {
        match s {
            "http" => Some(Listener::Http),
            "https" => Some(Listener::Https),
            _ => None,
        }
    }

    fn bit(self) -> u8 {
        match self {
            Listener::Http => 1,
            Listener::Https => 2,
        }
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Listeners(u8);

impl Listeners {
    /// Every listener (a route without entrypoints).
    pub const ALL: Listeners = Listeners(3);
    /// No listener.
    pub const NONE: Listeners = Listeners(0);

    /// Adds `listener`.
    pub fn with(self, listener: Listener) -> Listeners {
        Listeners(self.0 | listener.bit())
    }

    /// Whether `listener` is in the set.
    pub fn contains(self, listener: Listener) -> bool {
        self.0 & listener.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners::ALL
    }
}

/// What a route does to a request before it is forwarded, and to its
/// answer: Traefik's `redirectscheme`, `stripprefix` and `headers` custom
/// headers, in the order the router lists them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Middlewares {
    /// Answer with a redirect to another scheme instead of forwarding.
    pub redirect: Option<Redirect>,
    /// Prefix lists, one per `stripprefix` middleware, applied in turn: the
    /// first prefix of a list that the path starts with is removed.
    pub strip_prefixes: Vec<Vec<String>>,
    /// Request headers set (or removed) before forwarding, in order.
    pub request_headers: Vec<HeaderEdit>,
    /// Response headers set (or removed) before answering, in order.
    pub response_headers: Vec<HeaderEdit>,
}

impl Middlewares {
    /// Whether nothing is done.
    pub fn is_empty(&self) -> bool {
        self.redirect.is_none()
            && self.strip_prefixes.is_empty()
            && self.request_headers.is_empty()
            && self.response_headers.is_empty()
    }
}

/// A redirect to another scheme (`redirectscheme`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// `"http"` or `"https"`.
    pub scheme: &'static str,
    /// 301/308 rather than 302/307.
    pub permanent: bool,
}

/// One header set, or removed (Traefik's empty value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderEdit {
    /// The header.
    pub name: HeaderName,
    /// Its new value; `None` removes it.
    pub value: Option<HeaderValue>,
}
