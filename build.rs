//! Stamps the binary with what it was built from: the commit and whether
//! the build is profile-optimized (read by `src/build_info.rs`).
//!
//! The commit is, first found: `CUTOVER_COMMIT`; `git rev-parse` of the
//! source tree; the `.commit` file (filled in by `git archive` through
//! `export-subst` in .gitattributes); else "unknown". The build is
//! profile-optimized when `CUTOVER_PGO` says so (`1` or `0`), else when
//! rustc is given `-Cprofile-use`.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=CUTOVER_COMMIT");
    println!("cargo:rerun-if-env-changed=CUTOVER_PGO");
    println!("cargo:rerun-if-changed=.commit");
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = Path::new(&dir);

    let commit = std::env::var("CUTOVER_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .map(|c| c.trim().to_string())
        .or_else(|| git_commit(dir))
        .or_else(|| archived_commit(dir))
        .unwrap_or_else(|| "unknown".to_string());

    let pgo = match std::env::var("CUTOVER_PGO").ok().as_deref().map(str::trim) {
        Some("1") | Some("true") => true,
        Some("0") | Some("false") => false,
        _ => std::env::var("CARGO_ENCODED_RUSTFLAGS")
            .unwrap_or_default()
            .split('\x1f')
            .any(|f| f.contains("profile-use")),
    };

    println!("cargo:rustc-env=CUTOVER_BUILD_COMMIT={commit}");
    println!("cargo:rustc-env=CUTOVER_BUILD_PGO={}", u8::from(pgo));
}

/// The short hash of HEAD, and a rerun of this script whenever HEAD or the
/// branch it names moves (in a worktree too: `--git-path` resolves both).
fn git_commit(dir: &Path) -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (!s.is_empty()).then_some(s)
    };
    // Only the repository this crate is the top of: a source tarball
    // unpacked inside some other repository must not take its HEAD.
    let top = git(&["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != dir.canonicalize().ok()? {
        return None;
    }
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    for path in ["HEAD", "packed-refs"] {
        if let Some(p) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={}", dir.join(p).display());
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(p) = git(&["rev-parse", "--git-path", &branch]) {
            println!("cargo:rerun-if-changed={}", dir.join(p).display());
        }
    }
    Some(commit)
}

/// The commit `git archive` wrote into `.commit` (unexpanded in a checkout).
fn archived_commit(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(".commit")).ok()?;
    let commit = text.trim();
    (!commit.is_empty() && !commit.starts_with("$Format")).then(|| commit.to_string())
}
