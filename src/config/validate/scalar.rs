//! Scalar checks shared by every section: durations, integers, shares,
//! listener addresses, file paths, header and cookie names, request paths.
//!
//! Each check records an issue and returns `None` on a bad value, so callers
//! can fall back to a stand-in and keep going.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::{at, Checker};
use crate::config::check;

impl Checker<'_> {
    /// `value` when present, else an issue saying what to add.
    pub(super) fn required<'r, T>(
        &mut self,
        value: Option<&'r T>,
        table_at: Option<usize>,
        key: &str,
        example: &str,
    ) -> Option<&'r T> {
        if value.is_none() {
            self.issue(table_at, key, format!("missing (expected e.g. {example})"));
        }
        value
    }

    pub(super) fn duration(
        &mut self,
        value: &Spanned<String>,
        key: &str,
        zero_ok: bool,
    ) -> Option<Duration> {
        match check::duration(value.get_ref(), zero_ok) {
            Ok(d) => Some(d),
            Err(message) => {
                self.issue(at(value), key, message);
                None
            }
        }
    }

    pub(super) fn duration_or(
        &mut self,
        value: Option<&Spanned<String>>,
        key: &str,
        default: Duration,
        zero_ok: bool,
    ) -> Duration {
        value
            .and_then(|v| self.duration(v, key, zero_ok))
            .unwrap_or(default)
    }

    /// An integer within `range` that also fits `T`.
    pub(super) fn int<T: TryFrom<i64>>(
        &mut self,
        value: &Spanned<i64>,
        key: &str,
        range: RangeInclusive<i64>,
    ) -> Option<T> {
        let n = *value.get_ref();
        if range.contains(&n) {
            if let Ok(t) = T::try_from(n) {
                return Some(t);
            }
        }
        let expected = if *range.end() == i64::MAX {
            format!("an integer >= {}", range.start())
        } else {
            format!("an integer from {} to {}", range.start(), range.end())
        };
        self.issue(
            at(value),
            key,
            format!("{n} is out of range (expected {expected})"),
        );
        None
    }

    pub(super) fn int_or<T: TryFrom<i64>>(
        &mut self,
        value: Option<&Spanned<i64>>,
        key: &str,
        range: RangeInclusive<i64>,
        default: T,
    ) -> T {
        value
            .and_then(|v| self.int(v, key, range))
            .unwrap_or(default)
    }

    /// A share such as an error rate: 0..=1.
    pub(super) fn rate(&mut self, value: &Spanned<f64>, key: &str) -> Option<f64> {
        let r = *value.get_ref();
        if (0.0..=1.0).contains(&r) {
            return Some(r);
        }
        let hint = if r > 1.0 && r <= 100.0 {
            format!(": for {r}% write {}", r / 100.0)
        } else {
            String::new()
        };
        let message =
            format!("{r} is not a share (expected a number from 0 to 1, e.g. 0.05){hint}");
        self.issue(at(value), key, message);
        None
    }

    /// A listener address: an IP and a port.
    pub(super) fn listen(&mut self, value: &Spanned<String>, key: &str) -> Option<SocketAddr> {
        let text = value.get_ref();
        match text.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.issue(at(value), key, listen_problem(text));
                None
            }
        }
    }

    /// A file path, resolved against the config file's directory.
    pub(super) fn file_path(&mut self, value: &Spanned<String>, key: &str) -> Option<PathBuf> {
        let text = value.get_ref();
        if text.is_empty() {
            let message = "\"\" is empty (expected a file path, relative to the config file)";
            self.issue(at(value), key, message.to_string());
            return None;
        }
        Some(self.resolve(Path::new(text)))
    }

    pub(super) fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.dir.join(path)
        }
    }

    pub(super) fn header_name(
        &mut self,
        value: &Spanned<String>,
        key: &str,
    ) -> Option<http::HeaderName> {
        match check::header_name(value.get_ref()) {
            Ok(name) => Some(name),
            Err(message) => {
                self.issue(at(value), key, message);
                None
            }
        }
    }

    pub(super) fn cookie_name(&mut self, value: &Spanned<String>, key: &str) -> Option<String> {
        let text = value.get_ref();
        if !text.is_empty() && text.bytes().all(is_cookie_name_byte) {
            return Some(text.clone());
        }
        let message = format!(
            "{text:?} is not a cookie name (expected letters, digits and '-' or '_', e.g. \"session\")"
        );
        self.issue(at(value), key, message);
        None
    }

    /// A request path such as `/health`.
    pub(super) fn request_path(&mut self, value: &Spanned<String>, key: &str) -> Option<String> {
        match check::request_path(value.get_ref()) {
            Ok(path) => Some(path),
            Err(message) => {
                self.issue(at(value), key, message);
                None
            }
        }
    }
}

/// Why `text` is not an `ip:port` listener address.
fn listen_problem(text: &str) -> String {
    let expected = "expected \"ip:port\", e.g. \"0.0.0.0:8080\" or \"[::1]:8080\"";
    let bracketed = text.starts_with('[') && text.ends_with(']');
    if text.parse::<IpAddr>().is_ok() || bracketed {
        return format!("{text:?} has no port ({expected})");
    }
    match text.rsplit_once(':') {
        Some((ip, port)) if ip.trim_matches(['[', ']']).parse::<IpAddr>().is_ok() => {
            format!("{text:?} has port {port:?} (expected a port from 0 to 65535)")
        }
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => format!(
            "{text:?} is not an IP address and port: listeners bind an IP, not a host name ({expected}; \"127.0.0.1\" for localhost)"
        ),
        _ => format!("{text:?} is not an address ({expected})"),
    }
}

/// RFC 6265 cookie-name characters: visible ASCII except separators.
fn is_cookie_name_byte(b: u8) -> bool {
    b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)
}

/// Characters of a host name (and of the looser names Docker gives).
pub(super) fn is_host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')
}
