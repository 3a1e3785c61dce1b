//! What this binary was built from, stamped by `build.rs`: the version, the
//! commit and whether the build is profile-optimized. `cutover --version`,
//! the start-up log line and `cutover_build_info` all say the same.

/// The crate's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The short hash of the commit built, or "unknown".
pub const COMMIT: &str = env!("CUTOVER_BUILD_COMMIT");

/// Whether the build used a training profile (`-Cprofile-use`).
pub const PGO: bool = matches!(env!("CUTOVER_BUILD_PGO").as_bytes(), b"1");

/// How the build is described to people: "profile-optimized" or
/// "not profile-optimized".
pub const fn optimization() -> &'static str {
    if PGO {
        "profile-optimized"
    } else {
        "not profile-optimized"
    }
}

/// What `--version` prints after the program's name:
/// `0.1.0 (commit 1a2b3c4d5e6f, profile-optimized)`.
pub fn version() -> &'static str {
    static LINE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    LINE.get_or_init(|| format!("{VERSION} (commit {COMMIT}, {})", optimization()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_line_names_version_commit_and_build() {
        let line = version();
        assert!(
            line.starts_with(&format!("{VERSION} (commit {COMMIT}, ")),
            "{line}"
        );
        assert!(
            line.ends_with(", profile-optimized)") || line.ends_with(", not profile-optimized)"),
            "{line}"
        );
        assert!(!COMMIT.is_empty());
    }
}
