//! `cutover ctl deploy --abort` at each step that moves or holds the
//! traffic: while the new containers are awaited (before the switch),
//! during the automated-rollback watch (after it), and during the
//! keep-old wait (after the release). Each time the traffic ends on the
//! old pool, the new containers are stopped and kept, and no request of a
//! paced load fails.
//!
//! The old containers run a base image whose command serves on port 5000
//! (their own command is the image's, so a deploy takes the new image's):
//! a version whose command serves on another port never turns healthy.

use std::process::Command;

use serde_json::Value;

use super::{
    answered, events, failed_since, labels, running, service, CtlChild, Versions, HOST, SERVICE,
    SLOW,
};
use crate::support::binary::cutover_bin;
use crate::support::docker::{eventually_within, run, Engine, Paced, Seen, ENGINE_SOCKET};
use crate::support::Cutover;

/// `cutover ctl ADMIN deploy SERVICE --abort`: its exit code and output.
fn abort(admin: &[&str]) -> (i32, String) {
    let out = Command::new(cutover_bin())
        .arg("ctl")
        .args(admin)
        .args(["deploy", SERVICE, "--abort"])
        .env("CUTOVER_LOG", "warn")
        .output()
        .expect("cutover ctl deploy --abort");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Aborts the deploy `ctl` follows: the abort succeeds and the client
/// exits 1 naming it.
async fn abort_followed(admin: &[&str], ctl: CtlChild) {
    let (code, out) = abort(admin);
    assert_eq!(code, 0, "{out}");
    let (code, out) = tokio::time::timeout(SLOW, ctl.finish())
        .await
        .expect("the aborted deploy's client exits");
    assert_eq!(code, 1, "{out}");
    eprintln!("{out}");
    assert!(out.contains("aborted"), "the reason in {out}");
}

/// Asserts that no request of `load` failed since `before`, `when`.
fn no_failure_since(load: &Paced, before: &Seen, when: &str) {
    let failed = failed_since(load, before);
    assert!(failed.is_empty(), "failed requests {when}: {failed:?}");
}

/// The deploy's end as status shows it: the traffic on blue alone, the
/// outcome `aborted`, and its new containers stopped but not removed.
async fn ended_on_the_old_pool(proxy: &Cutover) -> Value {
    let s = service(proxy).await;
    assert_eq!(s["active"], "blue", "{s}");
    assert_eq!(s["weights"]["blue"], 100, "{s}");
    assert_eq!(s["deploy"]["outcome"], "aborted", "{s}");
    let new: Vec<String> = s["deploy"]["new_containers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|id| id.as_str().map(str::to_string))
        .collect();
    assert!(!new.is_empty(), "the deploy names its new containers: {s}");
    for id in &new {
        let kept = run("docker", &["inspect", id], &[]);
        assert!(kept.status.success(), "new container {id} kept: {s}");
        assert!(!running(id), "new container {id} stopped: {s}");
    }
    s
}

/// The steps of the service's deploy as status shows them.
fn steps(s: &Value) -> Vec<String> {
    s["deploy"]["steps"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|st| st["step"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_a_deploy_before_its_switch_after_it_and_in_keep_old_returns_to_the_old_pool() {
    let Some(mut engine) = Engine::start("deploys aborted") else {
        return;
    };
    let mut versions = Versions { tags: Vec::new() };
    let base = versions.image(
        &engine,
        &engine.image,
        "CMD [\"demo-upstream\", \"--listen\", \"0.0.0.0:5000\"]\n",
    );
    let v2 = versions.image(&engine, &base, "ENV CUTOVER_DEMO_VERSION=2\n");
    let never = versions.image(
        &engine,
        &base,
        "ENV CUTOVER_DEMO_VERSION=3\nCMD [\"demo-upstream\", \"--listen\", \"0.0.0.0:5001\"]\n",
    );
    let net = engine.network();
    let labels = labels();
    let refs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let old = engine.container_of(&base, "blue", &net, &refs, &[]);
    let proxy = Cutover::start(&engine.provider_config(ENGINE_SOCKET)).await;
    eventually_within("blue healthy, reporting v1", SLOW, || async {
        let s = service(&proxy).await;
        let server = &s["pools"]["blue"]["servers"][0];
        server["state"] == "healthy" && server["version"] == "v1"
    })
    .await;
    let load = Paced::start(proxy.addr, HOST, 100);
    answered(&load, "v1", 50).await;
    let admin = format!("http://{}", proxy.admin);
    let admin = ["--admin", admin.as_str()];

    // Before the switch: the new container serves on the wrong port, so it
    // is awaited until the (long) timeout; the abort ends the wait.
    let before = load.seen();
    let mut ctl = CtlChild::start(
        &admin,
        &["--image", &never, "--version", "3", "--timeout", "5m"],
    );
    ctl.wait_line("create").await;
    eventually_within("the new container listed in green", SLOW, || async {
        let s = service(&proxy).await;
        !s["pools"]["green"]["servers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .is_empty()
    })
    .await;
    abort_followed(&admin, ctl).await;
    let s = ended_on_the_old_pool(&proxy).await;
    assert!(!steps(&s).contains(&"switch".to_string()), "{s}");
    answered(&load, "v1", 50).await;
    no_failure_since(&load, &before, "while aborting before the switch");

    // After the switch, in the automated-rollback watch (10 s): the
    // traffic goes back to the old pool.
    let before = load.seen();
    let mut ctl = CtlChild::start(
        &admin,
        &["--image", &v2, "--version", "2", "--keep-old", "1m"],
    );
    ctl.wait_line("automated-rollback watch").await;
    answered(&load, "2", 50).await;
    abort_followed(&admin, ctl).await;
    let s = ended_on_the_old_pool(&proxy).await;
    assert!(steps(&s).contains(&"switch".to_string()), "{s}");
    assert!(running(&old), "the old container serves again");
    answered(&load, "v1", 50).await;
    no_failure_since(&load, &before, "while aborting in the watch");

    // After the release, in the keep-old wait: the old container still
    // runs, so the return is instant.
    let before = load.seen();
    let (code, out) = tokio::time::timeout(
        SLOW,
        CtlChild::start(
            &admin,
            &["--image", &v2, "--version", "2", "--keep-old", "1m"],
        )
        .finish(),
    )
    .await
    .expect("the deploy's client exits");
    assert_eq!(code, 0, "released: {out}");
    assert_eq!(service(&proxy).await["active"], "green");
    answered(&load, "2", 50).await;
    let (code, out) = abort(&admin);
    assert_eq!(code, 0, "{out}");
    eventually_within("the released deploy aborted", SLOW, || async {
        service(&proxy).await["deploy"]["outcome"] == "aborted"
    })
    .await;
    ended_on_the_old_pool(&proxy).await;
    answered(&load, "v1", 50).await;
    no_failure_since(&load, &before, "while aborting in keep-old");

    let events = events(&proxy).await;
    let aborted = events
        .iter()
        .filter(|e| {
            e["reason"] == "deploy"
                && e["detail"]["step"] == "end"
                && e["detail"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("aborted"))
        })
        .count();
    assert_eq!(aborted, 3, "one aborted end per deploy: {events:?}");
    load.stop();
    proxy.stop().await;
}
