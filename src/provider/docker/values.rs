//! Label values as Traefik writes them (pure): a value with the label it
//! came from, booleans, comma-separated lists and provider suffixes.

/// A value and the label it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labeled<T> {
    /// The value.
    pub value: T,
    /// The label's key, as written.
    pub label: String,
}

/// `value` from `label`.
pub(super) fn labeled<T>(value: T, label: &str) -> Labeled<T> {
    Labeled {
        value,
        label: label.to_string(),
    }
}

/// Traefik's booleans: `true` or `false`, any case.
pub(super) fn boolean(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!(
            "{value:?} is not a boolean (expected true or false)"
        )),
    }
}

/// A comma-separated list, trimmed, without empty items.
pub(super) fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(strip_provider)
        .collect()
}

/// `name@docker` → `name`; another provider's `@file` stays, to be reported.
pub(super) fn strip_provider(name: &str) -> String {
    name.strip_suffix("@docker").unwrap_or(name).to_string()
}
