//! Validation: the [`raw`](super::raw) mirror of `proxy.toml` into the typed
//! [`Config`], collecting every problem as a [`ConfigIssue`].
//!
//! Each check records an issue with the value's line and column, its dotted
//! key, the value and what was expected, then carries on with a stand-in value
//! so that later checks still run; the config is returned only when no issue
//! was recorded. This module does no I/O: relative paths are joined to the
//! config file's directory but never looked at.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde_path_to_error::Segment;
use toml::Spanned;

use super::raw::{Located, RawAdmin, RawConfig, RawDocker, RawProviders, RawServer, RawState};
use super::{Config, ConfigError, ConfigIssue, Location};

mod cluster;
mod providers;
mod route;
mod scalar;
mod server;
mod service;

/// A duration of zero is accepted (`cooldown`, `drain_timeout`).
const ZERO_OK: bool = true;
/// A duration must be greater than zero (timeouts, intervals, windows).
const NONZERO: bool = false;
/// Integers from 1 up.
const POSITIVE: RangeInclusive<i64> = 1..=i64::MAX;

/// Parses and validates the text of a config file read from `path`.
///
/// `path` is kept as [`Config::path`]; relative paths in the file are resolved
/// against its directory (`.` when it has none).
///
/// # Errors
///
/// [`ConfigError::Invalid`] with every problem found, sorted by line. A TOML
/// syntax error, a wrong type or an unknown key stops the parse, so it is
/// reported alone.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let file = TomlFile { text, path };
    let raw = deserialize(&file).map_err(|issue| invalid(vec![issue]))?;
    validate(raw, &file, path)
}

/// As [`parse`], with `[providers.docker]` (every default) where the text
/// has none: `cutover run --docker -c FILE`.
///
/// # Errors
///
/// As [`parse`].
pub fn parse_with_docker(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let file = TomlFile { text, path };
    let mut raw = deserialize(&file).map_err(|issue| invalid(vec![issue]))?;
    let providers = raw.providers.get_or_insert_with(|| Located {
        span: None,
        value: RawProviders::default(),
    });
    providers.value.docker.get_or_insert_with(|| Located {
        span: None,
        value: RawDocker::default(),
    });
    validate(raw, &file, path)
}

/// Validates `raw` into a [`Config`]: the entry point for any source of
/// raw values. `locator` turns the span of a raw value into the place it
/// came from (a file's line and column, a container's label); `path` is kept
/// as [`Config::path`], and relative paths resolve against its directory.
///
/// # Errors
///
/// [`ConfigError::Invalid`] with every problem found, in source order.
pub fn validate(raw: RawConfig, locator: &dyn Locator, path: &Path) -> Result<Config, ConfigError> {
    let mut checker = Checker::new(locator, path);
    let config = checker.config(raw, path);
    if checker.issues.is_empty() {
        Ok(config)
    } else {
        Err(invalid(checker.issues))
    }
}

/// Turns the start of a raw value's span into the place it came from.
pub trait Locator {
    /// Where the value starting at `offset` of the source is; `None` for
    /// the source as a whole.
    fn locate(&self, offset: Option<usize>) -> Location;
}

/// The text of a TOML file: an offset is a line and a column.
struct TomlFile<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Locator for TomlFile<'_> {
    fn locate(&self, offset: Option<usize>) -> Location {
        let (line, column) = match offset {
            Some(offset) => {
                let (line, column) = line_col(self.text, offset);
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        Location::File {
            path: self.path.to_path_buf(),
            line,
            column,
        }
    }
}

fn invalid(mut issues: Vec<ConfigIssue>) -> ConfigError {
    // Stable: issues on one spot keep the order they were found in; issues
    // about the whole source (no line) come last.
    issues.sort_by_key(|i| (i.line().is_none(), i.line(), i.column()));
    ConfigError::Invalid { issues }
}

/// Runs serde over the text; a syntax, type or unknown-key error becomes one
/// issue with the key path serde was at.
fn deserialize(file: &TomlFile<'_>) -> Result<RawConfig, ConfigIssue> {
    serde_path_to_error::deserialize(toml::Deserializer::new(file.text)).map_err(|err| {
        let mut key = key_path(err.path());
        let err = err.into_inner();
        // The first key of a table that only a deeper header implies is read
        // before serde_path_to_error sees it (see `raw::Located`).
        if let Some(field) = unknown_field(err.message()) {
            if !key.ends_with(&key_segment(field)) {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(&key_segment(field));
            }
        }
        ConfigIssue {
            location: file.locate(err.span().map(|span| span.start)),
            key,
            message: one_line(err.message()),
        }
    })
}

/// The dotted key of a serde path, without the private segments `toml` uses
/// for spans.
fn key_path(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if key.starts_with("$__serde_spanned_private") {
                    continue;
                }
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&key_segment(key));
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// `X` in serde's "unknown field `X`, expected ...".
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split_once('`').map(|(field, _)| field)
}

/// A key as written in a dotted path: bare when TOML allows it, else quoted.
fn key_segment(key: &str) -> String {
    if is_bare_key(key) {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

fn is_bare_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `toml` messages may span lines ("invalid table header\nexpected `.`");
/// an issue is one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = text.get(..end).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count()
        + 1;
    (line, column)
}

/// Byte offset where a value starts.
fn at<T>(value: &Spanned<T>) -> Option<usize> {
    Some(value.span().start)
}

/// Collects issues while turning raw sections into typed ones.
struct Checker<'a> {
    locator: &'a dyn Locator,
    /// The config file's directory, against which relative paths resolve.
    dir: PathBuf,
    issues: Vec<ConfigIssue>,
}

impl<'a> Checker<'a> {
    fn new(locator: &'a dyn Locator, path: &Path) -> Self {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Checker {
            locator,
            dir,
            issues: Vec::new(),
        }
    }

    fn issue(&mut self, at: Option<usize>, key: &str, message: String) {
        self.issues.push(ConfigIssue {
            location: self.locator.locate(at),
            key: key.to_string(),
            message,
        });
    }

    fn config(&mut self, raw: RawConfig, path: &Path) -> Config {
        let (no_server, no_admin, no_state) = (
            RawServer::default(),
            RawAdmin::default(),
            RawState::default(),
        );
        let server = self.server(raw.server.as_ref().map_or(&no_server, |t| &t.value));
        let admin = self.admin(raw.admin.as_ref().map_or(&no_admin, |t| &t.value));
        let state = self.state(raw.state.as_ref().map_or(&no_state, |t| &t.value));
        let raw_services = raw.service.unwrap_or_default();
        let services = raw_services
            .iter()
            .map(|(name, service)| self.service(name, service))
            .collect();
        let providers = self.providers(raw.providers.as_ref().map(|t| &t.value));
        let cluster = raw.cluster.as_ref().map(|t| self.cluster(t));
        // With a provider, routes may all come from it.
        let routes_required = providers.docker.is_none();
        let routes = self.routes(
            raw.route.as_deref().unwrap_or_default(),
            &raw_services,
            routes_required,
        );
        Config {
            path: path.to_path_buf(),
            server,
            admin,
            state,
            routes,
            services,
            providers,
            cluster,
            from_file: true,
        }
    }
}
