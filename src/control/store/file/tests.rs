use super::*;
use crate::config::PoolName;
use crate::wire::{Actor, Reason};

fn event(service: &str, n: u64) -> Event {
    let mut e = Event::now(
        Some(service),
        Some(PoolName::Blue),
        Some(PoolName::Green),
        Reason::Manual,
        Actor::Api,
        serde_json::json!({"n": n}),
    );
    e.generation = n;
    e
}

fn switched(generation: u64) -> ReleaseState {
    ReleaseState {
        deploy: None,
        active: PoolName::Green,
        standby_weight: 10,
        previous: Some(PoolName::Blue),
        last_switch: Some(event("agent", generation)),
        canary_stage: Some(1),
        rollback_watch_until: Some("2026-11-30T04:20:00.250Z".into()),
        generation,
    }
}

fn service_change(expected: u64, generation: u64) -> Change {
    Change::Service {
        name: "agent".into(),
        expected,
        state: switched(generation),
        event: event("agent", generation),
    }
}

#[tokio::test]
async fn a_commit_appends_the_event_and_writes_the_state_that_a_restart_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cutover-state.json");
    let store = FileStore::open(&path);
    assert_eq!(store.load().await.unwrap(), Stored::default());
    store.commit(service_change(0, 3)).await.unwrap();
    store.commit(service_change(3, 4)).await.unwrap();

    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(file["version"], STATE_VERSION);
    assert!(
        file.get("events").is_none(),
        "the history is the audit log's"
    );
    let audit = std::fs::read_to_string(dir.path().join("cutover-audit.jsonl")).unwrap();
    assert_eq!(audit.lines().count(), 2);
    let names: Vec<&str> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().to_owned())
        .map(|n| {
            if n.ends_with(".json") {
                "state"
            } else {
                "audit"
            }
        })
        .collect();
    assert_eq!(names.len(), 2, "no temporary file left: {names:?}");

    let again = FileStore::open(&path).load().await.unwrap();
    assert_eq!(again.services["agent"], switched(4));
    assert_eq!(
        again.history,
        vec![event("agent", 3), event("agent", 4)],
        "the history comes back from the audit log"
    );
}

#[tokio::test]
async fn a_commit_from_a_stale_generation_is_a_conflict_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cutover-state.json");
    let store = FileStore::open(&path);
    store.commit(service_change(0, 3)).await.unwrap();
    let before = std::fs::read(&path).unwrap();
    let err = store.commit(service_change(2, 5)).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                expected: 2,
                found: 3,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let audit = std::fs::read_to_string(dir.path().join("cutover-audit.jsonl")).unwrap();
    assert_eq!(audit.lines().count(), 1, "no event for a refused change");
}

#[tokio::test]
async fn a_reload_keeps_the_configured_services_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    let store = FileStore::open(&path);
    store.commit(service_change(0, 3)).await.unwrap();
    let mut states = BTreeMap::new();
    states.insert("other".to_string(), ReleaseState::fresh(PoolName::Blue));
    let mut reload = event("x", 4);
    reload.service = None;
    reload.reason = Reason::Reload;
    store
        .commit(Change::Services {
            states,
            event: reload,
        })
        .await
        .unwrap();
    let back = FileStore::open(&path).load().await.unwrap();
    assert_eq!(back.services.keys().collect::<Vec<_>>(), ["other"]);
}

#[tokio::test]
async fn a_version_1_file_loads_with_its_history_when_there_is_no_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    std::fs::write(
        &path,
        r#"{"version":1,"services":{"agent":{"active":"green","standby_weight":0,"previous":"blue"}},
           "events":[{"time":"2026-11-22T10:00:00Z","service":"agent","from":"blue","to":"green","reason":"manual","actor":"socket"}]}"#,
    )
    .unwrap();
    let stored = FileStore::open(&path).load().await.unwrap();
    assert_eq!(stored.services["agent"].active, PoolName::Green);
    assert_eq!(stored.services["agent"].previous, Some(PoolName::Blue));
    assert_eq!(stored.history.len(), 1);
    assert_eq!(stored.history[0].actor, Actor::Socket);
}

#[tokio::test]
async fn an_unusable_state_file_is_set_aside_and_the_services_start_fresh() {
    for (bytes, what) in [
        (&b"{not json"[..], "corrupt"),
        (&br#"{"version":99}"#[..], "newer"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, bytes).unwrap();
        let stored = FileStore::open(&path).load().await.unwrap();
        assert!(stored.services.is_empty(), "{what}");
        assert!(!path.exists(), "{what}: the file was left in place");
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            aside.len() == 1 && aside[0].starts_with("state.json.corrupt-"),
            "{what}: {aside:?}"
        );
        assert_eq!(std::fs::read(dir.path().join(&aside[0])).unwrap(), bytes);
    }
}

#[test]
fn a_newer_state_file_is_an_error_naming_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    std::fs::write(&path, br#"{"version":99}"#).unwrap();
    let err = read(&path).unwrap_err();
    assert!(matches!(err, PersistError::Version { found: 99, .. }));
    assert!(err.to_string().contains("state.json"), "{err}");
}

#[tokio::test]
async fn a_state_file_that_cannot_be_written_is_not_durable_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-dir").join("s.json");
    let err = FileStore::open(&path)
        .commit(service_change(0, 1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotDurable(_)), "{err}");
    assert!(err.to_string().contains("missing-dir"), "{err}");
}

#[tokio::test]
async fn the_history_read_back_is_the_newest_max_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cutover-state.json");
    let store = FileStore::open(&path);
    for n in 0..(MAX_EVENTS as u64 + 5) {
        store
            .commit(Change::Event(event("agent", n)))
            .await
            .unwrap();
    }
    let history = FileStore::open(&path).load().await.unwrap().history;
    assert_eq!(history.len(), MAX_EVENTS);
    assert_eq!(history[0].generation, 5, "the oldest went");
}
