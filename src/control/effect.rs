//! Making a change take effect, in this order: commit it to the
//! release-state store, then build and publish the snapshot that makes it
//! visible to requests, and mirror it into the gauges. A change the store
//! refuses is not published.

use std::sync::Arc;

use std::collections::{BTreeMap, HashMap};

use super::runtime::{Runtime, ServerHealth};
use super::store::{Change, StoreError};
use super::{ControlError, Inner, ServerKey};
use crate::config::{Config, PoolName};
use crate::snapshot::{Objects, ServiceRuntime, Snapshot};
use crate::wire::Event;

/// Builds a snapshot of `inner` at `generation`.
pub(super) fn build(inner: &mut Inner, generation: u64) -> Snapshot {
    let Inner {
        config,
        objects,
        services,
        health,
        tls,
        ..
    } = inner;
    snapshot_of(objects, config, tls, services, health, generation)
}

/// Builds a snapshot of `config` with each service's runtime and each
/// server's health at `generation`.
pub(super) fn snapshot_of(
    objects: &mut Objects,
    config: &Arc<Config>,
    tls: &Option<Arc<rustls::ServerConfig>>,
    services: &BTreeMap<String, Runtime>,
    health: &HashMap<ServerKey, ServerHealth>,
    generation: u64,
) -> Snapshot {
    objects.build(
        config.clone(),
        generation,
        tls.clone(),
        &|sc| {
            let rt = services.get(&sc.name);
            ServiceRuntime {
                active: rt.map_or(sc.active, Runtime::active),
                standby_weight: rt.map_or(0, Runtime::standby_weight),
                fallback: rt.and_then(Runtime::fallback),
                generation: rt.map_or(generation, |r| r.local.generation),
            }
        },
        &|svc, pool, server| {
            health
                .get(&(svc.to_string(), pool, server.upstream.addr().clone()))
                .is_none_or(ServerHealth::takes_traffic)
        },
    )
}

/// Builds and publishes the next snapshot; returns its generation.
pub(super) fn publish(inner: &mut Inner) -> u64 {
    let generation = inner.generation + 1;
    let snapshot = build(inner, generation);
    export_gauges(inner, &snapshot);
    inner.publisher.store(snapshot);
    inner.generation = generation;
    generation
}

/// Mirrors active pools, weights and server health into their gauges.
pub(super) fn export_gauges(inner: &Inner, snapshot: &Snapshot) {
    let metrics = inner.objects.metrics();
    for svc in &snapshot.services {
        for pool in PoolName::ALL {
            let labels = [&*svc.name, pool.as_str()];
            let active = pool == svc.active;
            metrics
                .active_pool
                .with_label_values(&labels)
                .set(i64::from(active));
            let weight = if active {
                100 - svc.standby_weight
            } else {
                svc.standby_weight
            };
            metrics
                .weight
                .with_label_values(&labels)
                .set(i64::from(weight));
            let view = svc.pool(pool);
            for server in &view.servers {
                let up = view.healthy.iter().any(|h| Arc::ptr_eq(h, server));
                metrics
                    .upstream_up
                    .with_label_values(&[&*svc.name, pool.as_str(), server.upstream.label()])
                    .set(i64::from(up));
            }
        }
    }
}

/// Commits `change` to the store. `Ok(false)` when the store could not make
/// it durable but lets it take effect (logged); a refusal is an error.
pub(super) async fn commit(inner: &Inner, change: Change) -> Result<bool, ControlError> {
    match inner.store.commit(change).await {
        Ok(()) => Ok(true),
        Err(StoreError::NotDurable(e)) => {
            tracing::error!(error = %e, "state not persisted");
            Ok(false)
        }
        Err(refused) => {
            tracing::warn!(error = %refused, "change refused by the release-state store");
            Err(ControlError::Store(refused))
        }
    }
}

/// Commits `next` as the runtime of `service` with `event` (both made for
/// the next generation, `inner.generation + 1`), then records the event and
/// publishes. Returns whether the store made it durable.
pub(super) async fn commit_service(
    inner: &mut Inner,
    service: &str,
    mut next: Runtime,
    event: Event,
) -> Result<bool, ControlError> {
    let generation = inner.generation + 1;
    debug_assert_eq!(
        event.generation, generation,
        "the event is the next generation's"
    );
    let expected = inner
        .services
        .get(service)
        .map_or(0, |rt| rt.release.generation);
    next.sync_release();
    // Above the one it replaces even when another replica (with its own
    // snapshot generations) made that: a service's generation only grows.
    next.release.generation = generation.max(expected + 1);
    next.local.generation = generation;
    let change = Change::Service {
        name: service.to_string(),
        expected,
        state: next.release.clone(),
        event: event.clone(),
    };
    let persisted = commit(inner, change).await?;
    inner.services.insert(service.to_string(), next);
    inner.events.push(event);
    publish(inner);
    Ok(persisted)
}
