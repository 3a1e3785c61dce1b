//! What the build says about itself: `cutover --version`, the start-up log
//! line and `cutover_build_info` name the same version, commit and
//! optimization.

use std::process::Command;
use std::time::Duration;

use http::StatusCode;

use crate::support::binary::{run_cutover, CutoverBinary, Launch};
use crate::support::*;

/// The commit of the source tree, when it is a git checkout of its own.
fn git_head() -> Option<String> {
    let dir = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("git")
        .args(["rev-parse", "--show-toplevel", "--short=12", "HEAD"])
        .current_dir(dir)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let mut lines = text.lines();
    let top = std::fs::canonicalize(lines.next()?).ok()?;
    (out.status.success() && top == std::fs::canonicalize(dir).ok()?)
        .then(|| lines.next().map(str::to_string))
        .flatten()
}

#[tokio::test]
async fn version_names_the_version_the_commit_and_whether_the_build_is_profile_optimized() {
    within(BOUND, async {
        let out = run_cutover(&["--version"]).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        let line = stdout.strip_suffix('\n').unwrap_or(&stdout);
        let rest = line
            .strip_prefix(&format!("cutover {} (commit ", env!("CARGO_PKG_VERSION")))
            .unwrap_or_else(|| panic!("not `cutover VERSION (commit ...`: {line:?}"));
        let (commit, build) = rest
            .strip_suffix(')')
            .and_then(|r| r.split_once(", "))
            .unwrap_or_else(|| panic!("not `(commit C, BUILD)`: {line:?}"));
        assert!(
            ["profile-optimized", "not profile-optimized"].contains(&build),
            "{line:?}"
        );
        assert_eq!(line, format!("cutover {}", cutover::build_info::version()));
        // Built from this checkout (unless the builder named the commit).
        if option_env!("CUTOVER_COMMIT").is_none() {
            if let Some(head) = git_head() {
                assert_eq!(commit, head, "{line:?}");
            }
        }
        assert!(!commit.is_empty() && !commit.contains(' '), "{line:?}");
    })
    .await;
}

#[tokio::test]
async fn the_start_up_log_line_says_what_version_says() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let body = route(None, "/", "app") + &service("app", &[blue.addr], &[green.addr]);
        let mut proxy = CutoverBinary::start_with("", &body, Launch::OneCpu(&[])).await;
        assert_eq!(fetch(proxy.addr, "/").await.status, StatusCode::OK);
        proxy.signal("TERM");
        let status = proxy.wait_exit(Duration::from_secs(8)).await;
        let log = proxy.stderr();
        assert_eq!(status.code(), Some(0), "{log}");
        let expected = format!("cutover {}", cutover::build_info::version());
        let line = log
            .lines()
            .find(|l| l.contains(&expected))
            .unwrap_or_else(|| panic!("no line with {expected:?} in {log:?}"));
        assert!(
            line.contains(&format!("commit=\"{}\"", cutover::build_info::COMMIT)),
            "{line}"
        );
    })
    .await;
}

#[tokio::test]
async fn build_info_is_exported_as_one_series_at_1() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&app(&blue, &green, "", "")).await;
        let scrape = proxy.scrape().await;
        assert!(
            scrape.has_type("cutover_build_info", "gauge"),
            "{}",
            scrape.text
        );
        let pgo = if cutover::build_info::PGO {
            "true"
        } else {
            "false"
        };
        let labels = [
            ("version", env!("CARGO_PKG_VERSION")),
            ("commit", cutover::build_info::COMMIT),
            ("pgo", pgo),
        ];
        assert_eq!(
            scrape.get("cutover_build_info", &labels),
            Some(1.0),
            "{}",
            scrape.text
        );
        assert_eq!(scrape.label_sets("cutover_build_info").len(), 1);
    })
    .await;
}
