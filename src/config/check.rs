//! Checks of single values shared by every config source: the file's
//! validation and the Docker provider's labels give the same answer, in
//! the same words, for the same value. Each returns the typed value or
//! what is wrong with it and what was expected (to follow the key).

use std::time::Duration;

/// A duration such as `"250ms"` or `"30s"`; zero only when `zero_ok`.
///
/// # Errors
///
/// The message naming the value and what was expected.
pub fn duration(text: &str, zero_ok: bool) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() && !zero_ok => Err(format!(
            "{text:?} is zero (expected a duration above 0, e.g. \"1s\")"
        )),
        Ok(d) => Ok(d),
        Err(_) => {
            let hint = match text.trim().parse::<f64>() {
                Ok(_) => format!(": add a unit, e.g. \"{}s\"", text.trim()),
                Err(_) => String::new(),
            };
            Err(format!(
                "{text:?} is not a duration (expected e.g. \"250ms\", \"30s\"){hint}"
            ))
        }
    }
}

/// A request path such as `/health`.
///
/// # Errors
///
/// The message naming the value and what was expected.
pub fn request_path(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        Err(format!(
            "{text:?} does not start with \"/\" (write \"/{text}\")"
        ))
    } else if text.parse::<http::uri::PathAndQuery>().is_err() {
        Err(format!(
            "{text:?} is not a valid request path (expected e.g. \"/health\")"
        ))
    } else {
        Ok(text.to_string())
    }
}

/// A header name (lowercased).
///
/// # Errors
///
/// The message naming the value and what was expected.
pub fn header_name(text: &str) -> Result<http::HeaderName, String> {
    http::HeaderName::from_bytes(text.as_bytes()).map_err(|_| {
        format!(
            "{text:?} is not a header name (expected letters, digits and '-', e.g. \"X-Session-Id\")"
        )
    })
}

/// A TCP port from 1 to 65535, written as digits.
///
/// # Errors
///
/// The message naming the value and what was expected.
pub fn port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(n) if n > 0 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!(
            "{text:?} is not a port (expected a number from 1 to 65535)"
        )),
    }
}
