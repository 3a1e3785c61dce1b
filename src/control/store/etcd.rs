//! The fleet's release-state store: etcd, shared by every replica.
//!
//! Keys, under `cluster.prefix`:
//! - `state/SERVICE`: the service's [`ReleaseState`] with the event that
//!   made it (one value, so a watcher gets both at once);
//! - `events/TIME-REPLICA`: the event history, the newest
//!   [`MAX_EVENTS`] kept;
//! - `replicas/NAME`: each replica's report (generation, per-pool
//!   counters), under its lease;
//! - `leader`: the leader's name, under its lease.
//!
//! A commit is a transaction whose guard is the service key's modification
//! revision as this replica last saw it (or its absence), so of two
//! replicas changing a service at once exactly one wins. Automated changes
//! are also guarded by this replica's lease still holding `leader`: a
//! judgment is made by the leader only, and only once.
//!
//! Every committed state is also written to the local state file (the
//! local copy): a replica that starts while etcd is unreachable serves the
//! last state it saw, and says so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KeyValue, PutOptions,
    SortOrder, SortTarget, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::fleet::{Fleet, Report, StateFrom};
use super::{file, Change, ReleaseState, Remote, Store, StoreError, Stored};
use crate::config::ClusterConfig;
use crate::control::events::MAX_EVENTS;
use crate::metrics::Metrics;
use crate::wire::{Actor, Event};

/// The format of the values under `state/`; a value declaring a higher one
/// was written by a newer cutover and is not used.
pub const ETCD_FORMAT: u32 = 1;
/// Longest wait for one etcd request; a replica that waits longer counts
/// as cut off.
const OP_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait for etcd at start before the local copy is used.
const START_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between attempts to reach etcd again.
const RETRY: Duration = Duration::from_millis(250);
/// How often this replica publishes its report and campaigns.
const BEAT: Duration = Duration::from_millis(250);
/// The history is pruned after this many events written by this replica.
const PRUNE_EVERY: u64 = 64;
/// Most remote changes queued for the control plane.
const REMOTE_QUEUE: usize = 256;

/// The value under `state/SERVICE`.
#[derive(Debug, Serialize, Deserialize)]
struct Value {
    version: u32,
    state: ReleaseState,
    #[serde(default)]
    event: Option<Event>,
}

/// Only the version of a value, read first so that a newer format is
/// reported as such rather than as unreadable.
#[derive(Deserialize)]
struct Versioned {
    version: u32,
}

/// Why a value under the prefix is not used.
#[derive(Debug, thiserror::Error)]
enum ValueError {
    #[error("etcd key {key}: not a cutover release state ({why}); ignored, this replica keeps serving what it has")]
    Corrupt { key: String, why: String },
    #[error("etcd key {key}: written by a newer cutover (format {found}, this one understands {ETCD_FORMAT}); ignored, this replica keeps serving what it has")]
    Newer { key: String, found: u32 },
}

/// What this replica last saw of a service in etcd.
#[derive(Debug, Clone)]
struct Known {
    generation: u64,
    mod_revision: i64,
}

struct Shared {
    cluster: ClusterConfig,
    /// One client per endpoint: a session and the commits made during it
    /// talk to one member, and the next session to the next member, so a
    /// dead member costs one failed session rather than a share of every
    /// request.
    clients: Vec<Client>,
    /// The member in use.
    current: AtomicUsize,
    fleet: Arc<Fleet>,
    /// Per service; held across a commit's transaction so that the watch
    /// does not take this replica's own commit for another's.
    known: tokio::sync::Mutex<BTreeMap<String, Known>>,
    /// Every service's state as last seen, for the local copy.
    states: Mutex<BTreeMap<String, ReleaseState>>,
    local_copy: watch::Sender<BTreeMap<String, ReleaseState>>,
    /// This replica's current lease (0: none).
    lease: AtomicI64,
    /// Events written, for pruning.
    written: AtomicU64,
}

impl Shared {
    fn client(&self) -> Client {
        self.clients[self.current.load(Ordering::Acquire) % self.clients.len()].clone()
    }

    /// Moves on to the next member.
    fn next_member(&self) {
        let next = (self.current.load(Ordering::Acquire) + 1) % self.clients.len();
        self.current.store(next, Ordering::Release);
    }

    fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.cluster.prefix)
    }

    fn unavailable(&self, why: impl std::fmt::Display) -> StoreError {
        StoreError::Unavailable(format!(
            "etcd ({}) cannot be reached: {why}; this replica serves the last state it saw",
            self.cluster.etcd.join(", ")
        ))
    }

    /// Records `state` as `service`'s and hands the whole set to the local
    /// copy's writer.
    fn remember(&self, service: &str, state: ReleaseState) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        states.insert(service.to_string(), state);
        let _ = self.local_copy.send(states.clone());
    }
}

/// The release state in etcd.
pub struct EtcdStore {
    shared: Arc<Shared>,
    loaded: Mutex<Option<Stored>>,
    changes: Mutex<Option<mpsc::Receiver<Remote>>>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("etcd", &self.shared.cluster.etcd)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to `cluster.etcd` and reads the release state; when etcd
    /// cannot be reached within [`START_TIMEOUT`], starts from the local
    /// copy at `local` and says so (status `state_from: "local_copy"`).
    /// Starts the tasks that follow etcd and reconnect; call from the
    /// runtime they should run on.
    ///
    /// # Panics
    ///
    /// When the OS cannot start a thread (the local copy's writer).
    pub async fn open(cluster: &ClusterConfig, local: &Path, metrics: &Metrics) -> EtcdStore {
        let fleet = Arc::new(Fleet::new(&cluster.name, metrics.cluster_gauges()));
        let options = ConnectOptions::new()
            .with_connect_timeout(OP_TIMEOUT)
            .with_timeout(OP_TIMEOUT)
            .with_keep_alive(Duration::from_secs(1), OP_TIMEOUT)
            .with_require_leader(true);
        // Connecting is lazy: an unreachable endpoint fails the first
        // request, not this.
        let mut clients = Vec::new();
        for endpoint in &cluster.etcd {
            let client = Client::connect([endpoint], Some(options.clone()))
                .await
                .expect("a lazy etcd channel to a validated endpoint");
            clients.push(client);
        }
        let (copy_tx, copy_rx) = watch::channel(BTreeMap::new());
        let shared = Arc::new(Shared {
            cluster: cluster.clone(),
            clients,
            current: AtomicUsize::new(0),
            fleet,
            known: tokio::sync::Mutex::new(BTreeMap::new()),
            states: Mutex::new(BTreeMap::new()),
            local_copy: copy_tx,
            lease: AtomicI64::new(0),
            written: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel(REMOTE_QUEUE);
        let mut read = Err(format!("no answer within {START_TIMEOUT:?}"));
        let per_member = START_TIMEOUT / u32::try_from(cluster.etcd.len()).unwrap_or(1).max(1);
        for _ in 0..cluster.etcd.len() {
            let mut client = shared.client();
            read = match tokio::time::timeout(per_member, read_all(&shared, &mut client)).await {
                Ok(Ok(stored)) => Ok(stored),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {per_member:?}")),
            };
            if read.is_ok() {
                break;
            }
            shared.next_member();
        }
        let stored = match read {
            Ok(stored) => {
                tracing::info!(etcd = %cluster.etcd.join(", "), prefix = %cluster.prefix, replica = %cluster.name, services = stored.services.len(), "release state read from etcd");
                for (name, state) in &stored.services {
                    shared.remember(name, state.clone());
                }
                shared.fleet.set_state_from(StateFrom::Etcd);
                stored
            }
            Err(why) => {
                shared.fleet.set_state_from(StateFrom::LocalCopy);
                let services = match file::read(local) {
                    Ok(Some(f)) => f.services,
                    Ok(None) => BTreeMap::new(),
                    Err(e) => {
                        tracing::error!(error = %e, "local copy of the release state unusable: starting from the config's active pools");
                        BTreeMap::new()
                    }
                };
                tracing::error!(
                    etcd = %cluster.etcd.join(", "),
                    error = %why,
                    local_copy = %local.display(),
                    services = services.len(),
                    state_from = "local_copy",
                    "etcd unreachable at start: serving the local copy of the last state seen; mutating commands are refused until etcd answers"
                );
                *shared.states.lock().unwrap_or_else(|p| p.into_inner()) = services.clone();
                Stored {
                    services,
                    history: Vec::new(),
                }
            }
        };
        start_local_copy(local.to_path_buf(), copy_rx);
        tokio::spawn(follow(shared.clone(), tx));
        EtcdStore {
            shared,
            loaded: Mutex::new(Some(stored)),
            changes: Mutex::new(Some(rx)),
        }
    }
}

impl Store for EtcdStore {
    fn load(&self) -> BoxFuture<'_, Result<Stored, StoreError>> {
        super::take_loaded(&self.loaded)
    }

    fn commit(&self, change: Change) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(commit(&self.shared, self.shared.client(), change))
    }

    fn changes(&self) -> Option<mpsc::Receiver<Remote>> {
        self.changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn fleet(&self) -> Option<Arc<Fleet>> {
        Some(self.shared.fleet.clone())
    }
}

async fn commit(shared: &Shared, mut client: Client, change: Change) -> Result<(), StoreError> {
    if !shared.fleet.connected() {
        return Err(shared.unavailable("the connection is down"));
    }
    match change {
        Change::Service {
            name,
            expected,
            state,
            event,
        } => {
            let key = shared.key(&format!("state/{name}"));
            let mut known = shared.known.lock().await;
            let seen = known.get(&name).cloned();
            if let Some(seen) = &seen {
                if seen.generation != expected {
                    return Err(StoreError::Conflict {
                        service: name,
                        expected,
                        found: seen.generation,
                    });
                }
            }
            let mut guard = vec![match &seen {
                Some(s) => Compare::mod_revision(key.as_str(), CompareOp::Equal, s.mod_revision),
                None => Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
            }];
            let auto = event.actor == Actor::Auto;
            if auto {
                let lease = shared.lease.load(Ordering::Acquire);
                guard.push(Compare::lease(
                    shared.key("leader"),
                    CompareOp::Equal,
                    lease,
                ));
            }
            let value = value_json(&state, Some(event.clone()));
            let txn = Txn::new()
                .when(guard)
                .and_then([
                    TxnOp::put(key.as_str(), value, None),
                    TxnOp::put(event_key(shared, &event), event_json(&event), None),
                ])
                .or_else([TxnOp::get(key.as_str(), None)]);
            let answer = run_txn(shared, &mut client, txn).await?;
            if answer.succeeded() {
                committed(shared, &mut known, &name, state, &answer);
                drop(known);
                prune_later(shared, client);
                return Ok(());
            }
            let found = answer.op_responses().into_iter().find_map(|r| match r {
                TxnOpResponse::Get(g) => g.kvs().first().map(|kv| parse(&key, kv)),
                _ => None,
            });
            let found = match found {
                Some(Ok(v)) => v.state.generation,
                Some(Err(e)) => {
                    tracing::error!(error = %e, "commit refused");
                    return Err(shared.unavailable(e));
                }
                None => 0,
            };
            if auto && found == expected {
                return Err(StoreError::NotLeader(shared.fleet.name().to_string()));
            }
            Err(StoreError::Conflict {
                service: name,
                expected,
                found,
            })
        }
        Change::Services { states, event } => {
            // A reload adds the services etcd does not hold yet; what other
            // replicas committed stays.
            let mut known = shared.known.lock().await;
            for (name, state) in states {
                let key = shared.key(&format!("state/{name}"));
                let txn = Txn::new()
                    .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key.as_str(), value_json(&state, None), None)]);
                let answer = run_txn(shared, &mut client, txn).await?;
                if answer.succeeded() {
                    committed(shared, &mut known, &name, state, &answer);
                }
            }
            drop(known);
            put_event(shared, &mut client, &event).await
        }
        Change::Event(event) => put_event(shared, &mut client, &event).await,
    }
}

/// The value under `state/SERVICE`.
fn value_json(state: &ReleaseState, event: Option<Event>) -> Vec<u8> {
    serde_json::to_vec(&Value {
        version: ETCD_FORMAT,
        state: state.clone(),
        event,
    })
    .expect("release state serializes: plain data")
}

/// `txn`, answered within [`OP_TIMEOUT`]; no answer is the store being
/// unavailable.
async fn run_txn(
    shared: &Shared,
    client: &mut Client,
    txn: Txn,
) -> Result<etcd_client::TxnResponse, StoreError> {
    tokio::time::timeout(OP_TIMEOUT, client.txn(txn))
        .await
        .map_err(|_| shared.unavailable(format!("no answer within {OP_TIMEOUT:?}")))?
        .map_err(|e| shared.unavailable(e))
}

/// `name`'s state was committed by `answer`: its revision is known, and the
/// state kept for the local copy.
fn committed(
    shared: &Shared,
    known: &mut BTreeMap<String, Known>,
    name: &str,
    state: ReleaseState,
    answer: &etcd_client::TxnResponse,
) {
    let revision = answer.header().map_or(0, |h| h.revision());
    known.insert(
        name.to_string(),
        Known {
            generation: state.generation,
            mod_revision: revision,
        },
    );
    shared.remember(name, state);
}

async fn put_event(shared: &Shared, client: &mut Client, event: &Event) -> Result<(), StoreError> {
    let put = client.put(event_key(shared, event), event_json(event), None);
    tokio::time::timeout(OP_TIMEOUT, put)
        .await
        .map_err(|_| shared.unavailable(format!("no answer within {OP_TIMEOUT:?}")))?
        .map_err(|e| shared.unavailable(e))?;
    Ok(())
}

/// `events/TIME-REPLICA`: sorted by time, unique per replica.
fn event_key(shared: &Shared, event: &Event) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let _ = event;
    shared.key(&format!("events/{nanos:020}-{}", shared.fleet.name()))
}

fn event_json(event: &Event) -> Vec<u8> {
    serde_json::to_vec(event).expect("events serialize: plain data")
}

/// Every [`PRUNE_EVERY`] events written here, deletes all but the newest
/// [`MAX_EVENTS`] of the history (in the background: a commit does not
/// wait for it).
fn prune_later(shared: &Shared, mut client: Client) {
    if shared.written.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY != PRUNE_EVERY - 1 {
        return;
    }
    let prefix = shared.key("events/");
    tokio::spawn(async move {
        let newest = GetOptions::new()
            .with_prefix()
            .with_keys_only()
            .with_sort(SortTarget::Key, SortOrder::Descend)
            .with_limit(i64::try_from(MAX_EVENTS).unwrap_or(i64::MAX) + 1);
        let Ok(Ok(answer)) =
            tokio::time::timeout(OP_TIMEOUT, client.get(prefix.as_str(), Some(newest))).await
        else {
            return;
        };
        // The oldest kept is the MAX_EVENTS-th newest; everything before it goes.
        let (Some(first_gone), true) = (answer.kvs().last(), answer.kvs().len() > MAX_EVENTS)
        else {
            return;
        };
        let mut end = first_gone.key().to_vec();
        end.push(0);
        let range = etcd_client::DeleteOptions::new().with_range(end);
        if let Err(e) = client.delete(prefix.as_str(), Some(range)).await {
            tracing::warn!(error = %e, "etcd: the event history was not pruned");
        }
    });
}

/// Reads every service's state and the newest events.
async fn read_all(shared: &Shared, client: &mut Client) -> Result<Stored, etcd_client::Error> {
    let (states, _) = read_states(shared, client).await?;
    let options = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Key, SortOrder::Descend)
        .with_limit(i64::try_from(MAX_EVENTS).unwrap_or(i64::MAX));
    let answer = client.get(shared.key("events/"), Some(options)).await?;
    let mut history: Vec<Event> = answer
        .kvs()
        .iter()
        .filter_map(|kv| match serde_json::from_slice(kv.value()) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::error!(key = %String::from_utf8_lossy(kv.key()), error = %e, "etcd: not an event; skipped");
                None
            }
        })
        .collect();
    history.reverse();
    let mut known = shared.known.lock().await;
    let mut services = BTreeMap::new();
    for (name, (value, mod_revision)) in states {
        known.insert(
            name.clone(),
            Known {
                generation: value.state.generation,
                mod_revision,
            },
        );
        services.insert(name, value.state);
    }
    Ok(Stored { services, history })
}

/// Every usable value under `state/`, with its modification revision, and
/// the revision read at. Unusable ones are reported and left out.
async fn read_states(
    shared: &Shared,
    client: &mut Client,
) -> Result<(BTreeMap<String, (Value, i64)>, i64), etcd_client::Error> {
    let prefix = shared.key("state/");
    let answer = client
        .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
        .await?;
    let revision = answer.header().map_or(0, |h| h.revision());
    let mut states = BTreeMap::new();
    for kv in answer.kvs() {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let name = key.strip_prefix(&prefix).unwrap_or(&key).to_string();
        match parse(&key, kv) {
            Ok(v) => {
                states.insert(name, (v, kv.mod_revision()));
            }
            Err(e) => tracing::error!(error = %e, "etcd: release state not used"),
        }
    }
    Ok((states, revision))
}

fn parse(key: &str, kv: &KeyValue) -> Result<Value, ValueError> {
    let corrupt = |why: String| ValueError::Corrupt {
        key: key.to_string(),
        why,
    };
    let versioned: Versioned =
        serde_json::from_slice(kv.value()).map_err(|e| corrupt(e.to_string()))?;
    if versioned.version > ETCD_FORMAT {
        return Err(ValueError::Newer {
            key: key.to_string(),
            found: versioned.version,
        });
    }
    serde_json::from_slice(kv.value()).map_err(|e| corrupt(e.to_string()))
}

/// Writes the latest set of states to the local copy, coalescing bursts,
/// on a thread of its own (a write is an fsync or two).
fn start_local_copy(path: PathBuf, mut rx: watch::Receiver<BTreeMap<String, ReleaseState>>) {
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let states = rx.borrow_and_update().clone();
            let path = path.clone();
            let written = tokio::task::spawn_blocking(move || file::save(&path, &states)).await;
            if let Ok(Err(e)) = written {
                tracing::error!(error = %e, "local copy of the release state not written");
            }
        }
    });
}

/// Follows etcd for as long as the process runs: one session at a time,
/// a new one [`RETRY`] after a session ends.
async fn follow(shared: Arc<Shared>, tx: mpsc::Sender<Remote>) {
    loop {
        let why = session(&shared, shared.client(), &tx).await;
        shared.lease.store(0, Ordering::Release);
        shared.next_member();
        let was_leader = shared.fleet.set_leader(false, None);
        if shared.fleet.set_connected(false) {
            tracing::error!(etcd = %shared.cluster.etcd.join(", "), error = %why, "cut off from etcd: serving the last state; mutating commands are refused until it answers");
        } else {
            tracing::debug!(error = %why, "etcd still unreachable");
        }
        if was_leader {
            tracing::warn!(replica = %shared.fleet.name(), "no longer the fleet's leader");
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// One connected stretch: a lease, a catch-up read, the watches, and the
/// beat that keeps the lease, publishes this replica's report and
/// campaigns for leadership. Returns why it ended.
async fn session(shared: &Arc<Shared>, mut client: Client, tx: &mpsc::Sender<Remote>) -> String {
    match run_session(shared, &mut client, tx).await {
        Ok(()) => "the control plane stopped".to_string(),
        Err(e) => e,
    }
}

async fn run_session(
    shared: &Arc<Shared>,
    client: &mut Client,
    tx: &mpsc::Sender<Remote>,
) -> Result<(), String> {
    let ttl = i64::try_from(shared.cluster.lease_ttl.as_secs()).unwrap_or(3);
    let timed = |what: &'static str| move |_| format!("{what}: no answer within {OP_TIMEOUT:?}");
    let lease = tokio::time::timeout(OP_TIMEOUT, client.lease_grant(ttl, None))
        .await
        .map_err(timed("lease"))?
        .map_err(|e| format!("lease: {e}"))?
        .id();
    let (mut keeper, mut acks) = client
        .lease_keep_alive(lease)
        .await
        .map_err(|e| format!("lease keep-alive: {e}"))?;
    shared.lease.store(lease, Ordering::Release);

    // Catch up: what changed while this replica was not watching.
    let (states, revision) = tokio::time::timeout(OP_TIMEOUT, read_states(shared, client))
        .await
        .map_err(timed("read"))?
        .map_err(|e| format!("read: {e}"))?;
    let mut caught_up = Vec::new();
    {
        let mut known = shared.known.lock().await;
        for (name, (value, mod_revision)) in states {
            let newer = known
                .get(&name)
                .is_none_or(|k| k.mod_revision < mod_revision);
            known.insert(
                name.clone(),
                Known {
                    generation: value.state.generation,
                    mod_revision,
                },
            );
            if newer {
                shared.remember(&name, value.state.clone());
                // Changed since this replica last read it (the history it
                // loaded at start is older): the last change's event was
                // missed too. Earlier changes made while it was cut off
                // are in etcd's history, not in this replica's.
                caught_up.push(Remote {
                    service: name,
                    state: value.state,
                    event: value.event,
                });
            }
        }
    }
    for remote in caught_up {
        if tx.send(remote).await.is_err() {
            return Ok(());
        }
    }
    let mut states = client
        .watch(
            shared.key("state/"),
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1),
            ),
        )
        .await
        .map_err(|e| format!("watch: {e}"))?;
    let replicas_prefix = shared.key("replicas/");
    let answer = client
        .get(
            replicas_prefix.as_str(),
            Some(GetOptions::new().with_prefix()),
        )
        .await
        .map_err(|e| format!("read replicas: {e}"))?;
    let replicas_rev = answer.header().map_or(0, |h| h.revision());
    shared.fleet.reset(
        answer
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice::<Report>(kv.value()).ok())
            .collect(),
    );
    let mut replicas = client
        .watch(
            replicas_prefix.as_str(),
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(replicas_rev + 1),
            ),
        )
        .await
        .map_err(|e| format!("watch replicas: {e}"))?;

    beat(shared, client, lease).await?;
    if !shared.fleet.set_connected(true) {
        tracing::info!(etcd = %shared.cluster.etcd.join(", "), replica = %shared.fleet.name(), "connected to etcd");
    }
    let keep_every = shared.cluster.lease_ttl / 3;
    let mut keep = tokio::time::interval(keep_every);
    let mut beats = tokio::time::interval(BEAT);
    beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_ack = Instant::now();
    loop {
        tokio::select! {
            _ = keep.tick() => {
                tokio::time::timeout(OP_TIMEOUT, keeper.keep_alive())
                    .await
                    .map_err(timed("lease keep-alive"))?
                    .map_err(|e| format!("lease keep-alive: {e}"))?;
            }
            ack = acks.message() => match ack {
                Ok(Some(a)) if a.ttl() > 0 => last_ack = Instant::now(),
                Ok(Some(_)) => return Err("the lease expired".into()),
                Ok(None) => return Err("the lease keep-alive stream ended".into()),
                Err(e) => return Err(format!("lease keep-alive: {e}")),
            },
            _ = beats.tick() => {
                if last_ack.elapsed() > shared.cluster.lease_ttl {
                    return Err("the lease was not renewed within its time to live".into());
                }
                beat(shared, client, lease).await?;
            }
            message = states.message() => {
                let answer = message
                    .map_err(|e| format!("watch: {e}"))?
                    .ok_or("the watch ended")?;
                if answer.canceled() {
                    return Err(format!("the watch was cancelled: {}", answer.cancel_reason()));
                }
                for event in answer.events() {
                    let Some(kv) = event.kv() else { continue };
                    if event.event_type() != EventType::Put {
                        continue;
                    }
                    if let Some(remote) = changed(shared, kv).await {
                        if tx.send(remote).await.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
            message = replicas.message() => {
                let answer = message
                    .map_err(|e| format!("watch replicas: {e}"))?
                    .ok_or("the replicas watch ended")?;
                for event in answer.events() {
                    let Some(kv) = event.kv() else { continue };
                    let key = String::from_utf8_lossy(kv.key());
                    let name = key.strip_prefix(replicas_prefix.as_str()).unwrap_or(&key);
                    match event.event_type() {
                        EventType::Delete => {
                            tracing::info!(replica = %name, "a replica left the fleet (its lease ended)");
                            shared.fleet.gone(name);
                        }
                        EventType::Put => match serde_json::from_slice::<Report>(kv.value()) {
                            Ok(report) => shared.fleet.seen(report),
                            Err(e) => tracing::warn!(key = %key, error = %e, "etcd: not a replica report; ignored"),
                        },
                    }
                }
            }
        }
    }
}

/// A change under `state/` seen by the watch: the remote change to apply,
/// unless it is this replica's own commit or unusable.
async fn changed(shared: &Shared, kv: &KeyValue) -> Option<Remote> {
    let key = String::from_utf8_lossy(kv.key()).into_owned();
    let prefix = shared.key("state/");
    let name = key.strip_prefix(&prefix)?.to_string();
    let value = match parse(&key, kv) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "etcd: release state not used");
            return None;
        }
    };
    let mut known = shared.known.lock().await;
    if known
        .get(&name)
        .is_some_and(|k| k.mod_revision >= kv.mod_revision())
    {
        return None;
    }
    known.insert(
        name.clone(),
        Known {
            generation: value.state.generation,
            mod_revision: kv.mod_revision(),
        },
    );
    drop(known);
    shared.remember(&name, value.state.clone());
    Some(Remote {
        service: name,
        state: value.state,
        event: value.event,
    })
}

/// Publishes this replica's report under its lease and campaigns for
/// leadership (the `leader` key, created under this lease if absent).
async fn beat(shared: &Shared, client: &mut Client, lease: i64) -> Result<(), String> {
    let name = shared.fleet.name().to_string();
    let report = serde_json::to_vec(&shared.fleet.local_report()).expect("reports serialize");
    let leader_key = shared.key("leader");
    let txn = Txn::new()
        .when([Compare::create_revision(
            leader_key.as_str(),
            CompareOp::Equal,
            0,
        )])
        .and_then([
            TxnOp::put(
                leader_key.as_str(),
                name.as_str(),
                Some(PutOptions::new().with_lease(lease)),
            ),
            TxnOp::put(
                shared.key(&format!("replicas/{name}")),
                report.clone(),
                Some(PutOptions::new().with_lease(lease)),
            ),
        ])
        .or_else([
            TxnOp::get(leader_key.as_str(), None),
            TxnOp::put(
                shared.key(&format!("replicas/{name}")),
                report,
                Some(PutOptions::new().with_lease(lease)),
            ),
        ]);
    let answer = tokio::time::timeout(OP_TIMEOUT, client.txn(txn))
        .await
        .map_err(|_| format!("publish: no answer within {OP_TIMEOUT:?}"))?
        .map_err(|e| format!("publish: {e}"))?;
    let (leading, leader) = if answer.succeeded() {
        (true, Some(name.clone()))
    } else {
        let holder = answer.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g
                .kvs()
                .first()
                .map(|kv| (kv.lease(), String::from_utf8_lossy(kv.value()).into_owned())),
            _ => None,
        });
        match holder {
            Some((l, who)) => (l == lease, Some(who)),
            None => (false, None),
        }
    };
    let was = shared.fleet.set_leader(leading, leader);
    if leading && !was {
        tracing::info!(replica = %name, "this replica leads the fleet: it runs canary judgments and automated rollback");
    } else if !leading && was {
        tracing::warn!(replica = %name, "no longer the fleet's leader");
    }
    Ok(())
}
