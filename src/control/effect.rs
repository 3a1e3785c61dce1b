//! Making a change take effect: build and store the next snapshot, mirror
//! it into the gauges, and commit the event and the state it leaves to the
//! audit log and the state file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::analysis::Canary;
use super::events::Event;
use super::persist::ServiceState;
use super::{progressive, Inner};
use crate::config::PoolName;
use crate::snapshot::{Routing, ServiceRuntime, Snapshot};

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
    objects.build(
        config.clone(),
        generation,
        tls.clone(),
        &|sc| {
            let rt = services.get(&sc.name);
            ServiceRuntime {
                active: rt.map_or(sc.active, |r| r.active),
                standby_weight: rt.map_or(0, |r| r.standby_weight),
                generation: rt.map_or(generation, |r| r.generation),
            }
        },
        &|svc, pool, server| {
            health
                .get(&(svc.to_string(), pool, server.upstream.addr().clone()))
                .is_none_or(|h| h.state.is_healthy())
        },
    )
}

/// Builds and stores the next snapshot; returns its generation.
pub(super) fn publish(routing: &Routing, inner: &mut Inner) -> u64 {
    let generation = inner.generation + 1;
    let snapshot = build(inner, generation);
    export_gauges(inner, &snapshot);
    routing.store(snapshot);
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

/// Appends an event to the history and writes it, with the state it leaves,
/// to the audit log beside the state file (JSON lines, so what happened can
/// be read after the fact) and to the state file, on the writer thread.
/// False (and an error log) when the state file could not be written.
pub(super) async fn commit(inner: &mut Inner, event: Event) -> bool {
    let line = inner.events.push(event);
    let state = inner.config.state.path.clone();
    let result = inner.writer.write(line, state, services_state(inner)).await;
    if let Err(e) = &result {
        tracing::error!(error = %e, "state not persisted");
    }
    result.is_ok()
}

/// `cutover-state.json` → `cutover-audit.jsonl` in the same directory.
pub fn audit_path(state: &std::path::Path) -> PathBuf {
    let stem = state
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("cutover-state");
    let stem = stem.strip_suffix("-state").unwrap_or(stem);
    state.with_file_name(format!("{stem}-audit.jsonl"))
}

/// What the state file keeps of each service (the writer keeps the history).
fn services_state(inner: &Inner) -> BTreeMap<String, ServiceState> {
    inner
        .services
        .iter()
        .map(|(name, rt)| {
            (
                name.clone(),
                ServiceState {
                    active: rt.active,
                    standby_weight: rt.standby_weight,
                    previous: rt.previous,
                    last_switch: rt.last_switch.clone(),
                    canary_stage: rt.canary.as_ref().map(Canary::stage),
                    rollback_watch_until: progressive::active_watch_until(rt),
                },
            )
        })
        .collect()
}
