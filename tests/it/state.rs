//! The state file: the active pool, the weight and the events survive a
//! restart, the file is versioned JSON, and an unusable file is kept aside,
//! never trusted.

use http::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

#[tokio::test]
async fn active_pool_weight_and_events_survive_a_restart() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let proxy = Cutover::start(&blue_green(&blue, &green)).await;
        let switched = proxy.switch("app", json!({"to": "green"})).await;
        assert_eq!(switched.status, StatusCode::OK, "{}", switched.text());
        let weighted = admin_put(
            proxy.admin,
            "/api/v1/services/app/weights",
            json!({"standby": 20}),
        )
        .await;
        assert_eq!(weighted.status, StatusCode::OK, "{}", weighted.text());
        let events = proxy.events("app").await;

        let proxy = proxy.restart().await;

        let status = proxy.service("app").await;
        assert_eq!(status["active"], "green");
        assert_eq!(status["previous"], "blue");
        assert_eq!(status["last_switch"]["to"], "green");
        assert_eq!(status["weights"], json!({"blue": 20, "green": 80}));
        assert_eq!(proxy.events("app").await, events);
        let reasons: Vec<&Value> = events.iter().map(|e| &e["reason"]).collect();
        assert_eq!(reasons, ["manual", "weight"]);

        let text = std::fs::read_to_string(proxy.state_path()).expect("state file");
        let state: Value = serde_json::from_str(&text).expect("the state file is JSON");
        assert_eq!(state["version"], cutover::control::store::STATE_VERSION);
        assert!(
            state.get("events").is_none(),
            "events live in the audit log"
        );
        assert_eq!(state["services"]["app"]["active"], "green");
        assert_eq!(state["services"]["app"]["standby_weight"], 20);

        // What survived can be undone.
        let rollback = admin_post(proxy.admin, "/api/v1/services/app/rollback", json!({})).await;
        assert_eq!(rollback.status, StatusCode::OK, "{}", rollback.text());
        assert_eq!(rollback.json()["service"]["active"], "blue");
    })
    .await;
}

#[tokio::test]
async fn corrupt_state_file_is_set_aside_and_the_configs_active_pool_used() {
    within(BOUND, async {
        let blue = Upstream::start("blue").await;
        let green = Upstream::start("green").await;
        let dir = tempfile::tempdir().expect("temp dir");
        let garbage = b"{\"version\": 1, \"services\": {\"app\": {\"active\": \"blu";
        std::fs::write(dir.path().join(STATE_FILE), garbage).unwrap();
        // The config makes green active, so the answer cannot come from the file.
        let config = header()
            + &route(None, "/", "app")
            + &service("app", &[blue.addr], &[green.addr])
                .replace("active = \"blue\"", "active = \"green\"");

        let proxy = Cutover::start_in(dir, &config).await;

        assert_eq!(proxy.service("app").await["active"], "green");
        assert_eq!(fetch(proxy.addr, "/").await.echo().upstream, "green");
        let aside: Vec<_> = std::fs::read_dir(proxy.dir.path())
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{STATE_FILE}.corrupt-"))
            })
            .collect();
        assert_eq!(aside.len(), 1, "one file kept aside");
        assert_eq!(std::fs::read(aside[0].path()).unwrap(), garbage);

        // The next change writes a fresh, valid state file.
        let switched = proxy.switch("app", json!({"to": "blue"})).await;
        assert_eq!(switched.status, StatusCode::OK, "{}", switched.text());
        let text = std::fs::read_to_string(proxy.state_path()).expect("state file");
        let state: Value = serde_json::from_str(&text).expect("the state file is JSON");
        assert_eq!(state["version"], cutover::control::store::STATE_VERSION);
        assert_eq!(state["services"]["app"]["active"], "blue");
    })
    .await;
}
