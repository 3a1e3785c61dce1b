//! `cutover ctl deploy --canary` on a service made from containers' labels.
//!
//! Its canary stages come from the containers' `cutover.canary.*` labels:
//! the deploy's new containers take the stages' weights of a paced load and
//! are promoted, with no failed request. Without such labels, or when a
//! `[service.NAME]` entry in the file replaces the labels' service whole
//! (its pools are the file's servers, so a deploy's new containers would
//! take no traffic), a canary deploy is refused before any container is
//! made, and the traffic stays where it was.

use http::StatusCode;
use serde_json::{json, Value};

use super::{
    answered, app_container, events, labels, service, CtlChild, Versions, HOST, SERVICE, SLOW,
};
use crate::support::docker::{docker, eventually_within, Engine, Paced, ENGINE_SOCKET};
use crate::support::{admin_post, Cutover};

/// `POST` a canary deploy of `image`, which must be refused with 409; the
/// error.
async fn refused(proxy: &Cutover, image: &str) -> Value {
    let body = json!({"image": image, "canary": true, "timeout": "10s"});
    let path = format!("/api/v1/services/{SERVICE}/deploy");
    let reply = admin_post(proxy.admin, &path, body).await;
    let answer: Value = reply.json();
    assert_eq!(reply.status, StatusCode::CONFLICT, "{answer}");
    answer["error"].clone()
}

/// The containers a deploy made (they carry its label).
fn deployed() -> String {
    docker(&["ps", "-aq", "--filter", "label=cutover.deploy"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_deploy_is_refused_without_stages_and_for_a_service_the_file_defines() {
    let Some(mut engine) = Engine::start("canary deploys refused") else {
        return;
    };
    let net = engine.network();
    let blue = app_container(&engine, "blue", &net);
    let ip = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &blue,
    ]);

    // The labels alone: no stages.
    let proxy = Cutover::start(&engine.provider_config(ENGINE_SOCKET)).await;
    eventually_within("blue listed", SLOW, || async {
        service(&proxy).await["pools"]["blue"]["servers"][0]["container"].is_string()
    })
    .await;
    let error = refused(&proxy, &engine.image).await;
    assert_eq!(error["code"], "no_canary_stages", "{error}");
    assert!(deployed().is_empty(), "no container made");
    proxy.stop().await;

    // A file entry of the same name, with stages: the file's service serves
    // (here, on the blue container's address).
    let config = format!(
        "{}
[[route]]
host = \"{HOST}\"
service = \"{SERVICE}\"

[service.{SERVICE}.pools.blue]
servers = [\"{ip}:5000\"]
[service.{SERVICE}.pools.green]
servers = [\"{ip}:5000\"]

[[service.{SERVICE}.canary.stages]]
weight = 50
hold = \"1s\"
max_error_rate = 0.05
max_p99 = \"2s\"
min_requests = 5
",
        engine.provider_config(ENGINE_SOCKET)
    );
    let proxy = Cutover::start(&config).await;
    let error = refused(&proxy, &engine.image).await;
    assert_eq!(error["code"], "no_docker", "{error}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("config file"), "{error}");
    let s = service(&proxy).await;
    assert_eq!(s["active"], "blue", "{s}");
    assert!(s["deploy"].is_null(), "no deploy started: {s}");
    assert!(deployed().is_empty(), "no container made");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_deploy_runs_the_labels_stages_and_promotes_with_no_failed_request() {
    let Some(mut engine) = Engine::start("canary deploy") else {
        return;
    };
    let mut versions = Versions { tags: Vec::new() };
    let v2 = versions.build(&engine, "2", None);
    let net = engine.network();
    let mut labels = labels();
    labels.extend([
        ("cutover.canary.weights", "20,50".to_string()),
        ("cutover.canary.hold", "1s".to_string()),
        ("cutover.canary.min_requests", "5".to_string()),
        ("cutover.canary.max_error_rate", "0.05".to_string()),
        ("cutover.canary.max_p99", "2s".to_string()),
    ]);
    let refs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    engine.container(
        "blue",
        &net,
        &refs,
        &["demo-upstream", "--listen", "0.0.0.0:5000"],
    );
    let proxy = Cutover::start(&engine.provider_config(ENGINE_SOCKET)).await;
    eventually_within("blue healthy", SLOW, || async {
        service(&proxy).await["pools"]["blue"]["servers"][0]["state"] == "healthy"
    })
    .await;
    let load = Paced::start(proxy.addr, HOST, 100);
    answered(&load, "v1", 20).await;
    let admin = format!("http://{}", proxy.admin);
    let (code, out) = CtlChild::start(
        &["--admin", admin.as_str()],
        &[
            "--image",
            &v2,
            "--version",
            "2",
            "--canary",
            "--keep-old",
            "30s",
        ],
    )
    .finish()
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("canary"), "the canary step is shown: {out}");
    let s = service(&proxy).await;
    assert_eq!(s["active"], "green", "{s}");
    assert_eq!(s["weights"]["green"], 100, "{s}");
    assert_eq!(s["deploy"]["outcome"], "released", "{s}");
    answered(&load, "2", 50).await;
    // `--json`: one JSON object a line, the steps as they came.
    let (code, json) = CtlChild::start(&["--admin", admin.as_str()], &["--follow", "--json"])
        .finish()
        .await;
    assert_eq!(code, 0, "{json}");
    let steps: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let names: Vec<&str> = steps.iter().filter_map(|s| s["step"].as_str()).collect();
    for step in ["create", "healthy", "canary", "watch", "drained"] {
        assert!(names.contains(&step), "step {step} in {names:?}");
    }
    let end = steps.last().expect("steps");
    assert_eq!(
        (&end["step"], &end["outcome"]),
        (&json!("end"), &json!("released")),
        "{json}"
    );
    assert!(steps.iter().all(|s| s["elapsed_ms"].is_u64()), "{json}");
    let events = events(&proxy).await;
    let reasons: Vec<&str> = events.iter().filter_map(|e| e["reason"].as_str()).collect();
    let weights = reasons.iter().filter(|r| **r == "weight").count();
    let promotions = reasons.iter().filter(|r| **r == "canary").count();
    assert!(weights >= 2, "a weight event per stage: {events:?}");
    assert_eq!(promotions, 1, "one promotion: {events:?}");
    let seen = load.stop();
    assert!(seen.failed.is_empty(), "failed requests: {:?}", seen.failed);
    proxy.stop().await;
}
