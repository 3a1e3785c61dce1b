//! The audit log: every event is also appended, one JSON line each, to
//! `cutover-audit.jsonl` beside the state file.

use http::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

#[tokio::test]
async fn switch_and_weight_change_are_appended_to_the_audit_log_beside_the_state_file() {
    within(BOUND, async {
        let blue = Upstream::start_with_version("blue", "1").await;
        let green = Upstream::start_with_version("green", "2").await;
        let proxy = Cutover::start(&app(&blue, &green, "", "")).await;
        let audit = proxy.dir.path().join("cutover-audit.jsonl");
        assert_eq!(
            cutover::control::audit_path(&proxy.state_path()),
            audit,
            "the audit log sits beside the state file"
        );

        let reply = proxy.switch("app", json!({"to": "green"})).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let reply = admin_put(
            proxy.admin,
            "/api/v1/services/app/weights",
            json!({"standby": 25}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

        // Both calls returned: their events are already written.
        let text = std::fs::read_to_string(&audit).expect("read the audit log");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        for line in &lines {
            for key in ["time", "service", "from", "to", "reason", "actor"] {
                assert!(line.get(key).is_some(), "{key} missing in {line}");
            }
            let time = line["time"].as_str().expect("time is a string");
            assert!(
                time.ends_with('Z') && time.contains('T'),
                "not RFC 3339 UTC: {time}"
            );
            assert_eq!(line["service"], "app");
            assert_eq!(line["actor"], "api");
        }
        let summary: Vec<(&Value, &Value, &Value)> = lines
            .iter()
            .map(|l| (&l["reason"], &l["from"], &l["to"]))
            .collect();
        assert_eq!(
            summary,
            [
                (&json!("manual"), &json!("blue"), &json!("green")),
                (&json!("weight"), &json!("green"), &json!("blue")),
            ]
        );
        assert_eq!(lines[1]["detail"]["standby"], 25);
        // The same events as the API lists, in the same order.
        let listed = proxy.events("app").await;
        assert_eq!(listed, lines);
    })
    .await;
}
