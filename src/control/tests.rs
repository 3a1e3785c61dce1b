//! The control plane against stores other than the state file: one that
//! refuses, one that watches what was published when it is asked to
//! commit, and one through which another writer's changes arrive.

use std::sync::{Arc, Mutex, OnceLock};

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use super::store::{Change, ReleaseState, Remote, Store, StoreError, Stored};
use super::*;
use crate::wire::{Actor, Event, Reason, SwitchRequest};

const CONFIG: &str = r#"
[[route]]
service = "app"

[service.app]
[service.app.pools.blue]
servers = ["127.0.0.1:1"]
[service.app.pools.green]
servers = ["127.0.0.1:2"]
"#;

/// A store that records what it was asked to commit, optionally refuses,
/// sees which pool was published at each commit, and hands out a channel
/// for another writer's changes.
#[derive(Default)]
struct TestStore {
    refuse: bool,
    commits: Mutex<Vec<Change>>,
    /// The active pool of `app` published when each commit was asked for.
    published_at_commit: Mutex<Vec<PoolName>>,
    routing: OnceLock<Arc<Routing>>,
    changes: Mutex<Option<mpsc::Receiver<Remote>>>,
}

impl Store for TestStore {
    fn load(&self) -> BoxFuture<'_, Result<Stored, StoreError>> {
        Box::pin(async { Ok(Stored::default()) })
    }

    fn commit(&self, change: Change) -> BoxFuture<'_, Result<(), StoreError>> {
        if let Some(routing) = self.routing.get() {
            let active = routing.load().service("app").map(|s| s.active);
            self.published_at_commit.lock().unwrap().extend(active);
        }
        self.commits.lock().unwrap().push(change);
        let refuse = self.refuse;
        Box::pin(async move {
            if refuse {
                Err(StoreError::Unavailable("test store refuses".into()))
            } else {
                Ok(())
            }
        })
    }

    fn changes(&self) -> Option<mpsc::Receiver<Remote>> {
        self.changes.lock().unwrap().take()
    }
}

async fn plane(store: Arc<TestStore>) -> Arc<ControlPlane> {
    let config = crate::config::parse(CONFIG, std::path::Path::new("/tmp/proxy.toml")).unwrap();
    let control = ControlPlane::new(
        config,
        None,
        Arc::default(),
        Arc::new(Metrics::new()),
        store.clone(),
    )
    .await;
    let _ = store.routing.set(control.routing());
    control
}

fn to_green() -> SwitchRequest {
    SwitchRequest {
        to: Some(PoolName::Green),
        ..SwitchRequest::default()
    }
}

fn active(control: &ControlPlane) -> PoolName {
    control.routing().load().service("app").unwrap().active
}

#[tokio::test]
async fn a_switch_is_committed_before_it_is_published() {
    let store = Arc::new(TestStore::default());
    let control = plane(store.clone()).await;
    let applied = control.switch("app", to_green(), Actor::Api).await.unwrap();
    assert_eq!(active(&control), PoolName::Green);
    assert_eq!(
        *store.published_at_commit.lock().unwrap(),
        [PoolName::Blue],
        "requests still went to blue while the switch was committed"
    );
    let commits = store.commits.lock().unwrap();
    let Change::Service {
        name,
        expected,
        state,
        event,
    } = &commits[0]
    else {
        panic!("not a service change: {:?}", commits[0]);
    };
    assert_eq!((name.as_str(), *expected), ("app", 0));
    assert_eq!(state.active, PoolName::Green);
    assert_eq!(state.generation, applied.generation);
    assert_eq!(event.generation, applied.generation);
}

#[tokio::test]
async fn a_change_the_store_refuses_is_not_published_and_leaves_no_event() {
    let store = Arc::new(TestStore {
        refuse: true,
        ..TestStore::default()
    });
    let control = plane(store.clone()).await;
    let generation = control.routing().load().generation;
    let err = control
        .switch("app", to_green(), Actor::Api)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ControlError::Store(StoreError::Unavailable(_))),
        "{err}"
    );
    assert_eq!(active(&control), PoolName::Blue);
    assert_eq!(control.routing().load().generation, generation);
    assert!(control.events(None).await.is_empty());
    let err = control.set_weight("app", 30, Actor::Api).await.unwrap_err();
    assert!(matches!(err, ControlError::Store(_)), "{err}");
    assert_eq!(
        control
            .routing()
            .load()
            .service("app")
            .unwrap()
            .standby_weight,
        0
    );
}

#[tokio::test]
async fn a_change_committed_elsewhere_is_published_without_being_committed_again() {
    let (tx, rx) = mpsc::channel(4);
    let store = Arc::new(TestStore {
        changes: Mutex::new(Some(rx)),
        ..TestStore::default()
    });
    let control = plane(store.clone()).await;
    let mut event = Event::now(
        Some("app"),
        Some(PoolName::Blue),
        Some(PoolName::Green),
        Reason::Manual,
        Actor::Api,
        serde_json::json!({}),
    );
    event.generation = 41;
    let state = ReleaseState {
        previous: Some(PoolName::Blue),
        last_switch: Some(event.clone()),
        generation: 41,
        ..ReleaseState::fresh(PoolName::Green)
    };
    tx.send(Remote {
        service: "app".into(),
        state,
        event: Some(event.clone()),
    })
    .await
    .unwrap();
    for _ in 0..100 {
        if active(&control) == PoolName::Green {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(active(&control), PoolName::Green);
    assert!(store.commits.lock().unwrap().is_empty(), "committed again");
    assert_eq!(control.events(Some("app")).await, [event]);
    // The next local change is made from the generation the store holds.
    control.rollback("app", Actor::Api).await.unwrap();
    let commits = store.commits.lock().unwrap();
    assert!(
        matches!(&commits[0], Change::Service { expected: 41, .. }),
        "{:?}",
        commits[0]
    );
}
