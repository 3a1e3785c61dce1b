//! A panic on request, in debug builds only, so that tests can show a
//! panic in the proxy's own code is caught, counted, answered and logged
//! where it happens. A release build has no such header: `check` is empty.

// Release builds use nothing here but the empty `check`.
#![cfg_attr(not(debug_assertions), allow(dead_code))]

/// The request header that asks for a panic, and where: `routing` (while
/// the request is routed and rewritten) or `exchange` (while it is sent
/// upstream, before any response).
pub const HEADER: &str = "x-cutover-debug-panic";

/// Where the panic can be asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    Routing,
    Exchange,
}

impl At {
    fn as_str(self) -> &'static str {
        match self {
            At::Routing => "routing",
            At::Exchange => "exchange",
        }
    }
}

/// Whether `headers` ask for a panic `at` this point.
#[cfg(debug_assertions)]
pub fn asked(headers: &http::HeaderMap, at: At) -> bool {
    let asked = headers.get(HEADER).map(|v| v.as_bytes());
    asked == Some(at.as_str().as_bytes())
}

/// The panic asked for `at` this point.
#[cfg(debug_assertions)]
pub fn fire(at: At) -> ! {
    panic!("{HEADER}: {} asked for a panic", at.as_str());
}

/// Panics when `headers` ask for a panic `at` this point.
#[cfg(debug_assertions)]
pub fn check(headers: &http::HeaderMap, at: At) {
    if asked(headers, at) {
        fire(at);
    }
}

/// Release builds: nothing.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn check(_headers: &http::HeaderMap, _at: At) {}
