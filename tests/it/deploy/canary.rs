//! `cutover ctl deploy --canary` on a service made from containers' labels.
//!
//! Its canary stages can come from nowhere: labels carry none, and a
//! `[service.NAME]` entry in the file replaces the labels' service whole
//! (its pools are the file's servers, so a deploy's new containers would
//! take no traffic). Both deploys are refused before any container is
//! made, and the traffic stays where it was.

use http::StatusCode;
use serde_json::{json, Value};

use super::{app_container, service, HOST, SERVICE, SLOW};
use crate::support::docker::{docker, eventually_within, Engine, ENGINE_SOCKET};
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
