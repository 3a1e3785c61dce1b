//! Status answers ([`crate::wire`]'s status shape), built from the current
//! snapshot and the control plane's health records.

use std::collections::BTreeMap;

use super::{progressive, Inner};
use crate::config::PoolName;
use crate::snapshot::Snapshot;
use crate::wire::{self, PoolStatus, ServerStatus, ServiceStatus};

/// One service's status from the snapshot and health records.
pub(super) fn service_status(
    snapshot: &Snapshot,
    inner: &Inner,
    name: &str,
) -> Option<ServiceStatus> {
    let rt = inner.services.get(name)?;
    let svc = snapshot.service(name)?;
    let standby = rt.active.other();
    let (canary, watch) = progressive::describe(inner, name);
    let mut weights = BTreeMap::new();
    weights.insert(rt.active, 100 - rt.standby_weight);
    weights.insert(standby, rt.standby_weight);
    let pools = PoolName::ALL
        .into_iter()
        .map(|pool| {
            let view = svc.pool(pool);
            let inflight = view.state.inflight();
            let draining = if pool != rt.active && rt.standby_weight == 0 {
                inflight
            } else {
                0
            };
            let servers = view
                .servers
                .iter()
                .map(|server| {
                    let addr = server.upstream.addr();
                    let h = inner.health.get(&(name.to_string(), pool, addr.clone()));
                    ServerStatus {
                        address: addr.to_string(),
                        healthy: h.is_none_or(|h| h.state.is_healthy()),
                        version: h.and_then(|h| h.version.clone()),
                        inflight: server.inflight(),
                        last_check: h.and_then(|h| h.last_check).map(wire::rfc3339),
                        last_error: h.and_then(|h| h.last_error.clone()),
                    }
                })
                .collect();
            (
                pool,
                PoolStatus {
                    inflight,
                    draining,
                    healthy: !view.healthy.is_empty(),
                    servers,
                },
            )
        })
        .collect();
    Some(ServiceStatus {
        name: name.to_string(),
        active: rt.active,
        standby,
        generation: rt.generation,
        weights,
        previous: rt.previous,
        last_switch: rt.last_switch.clone(),
        pools,
        canary,
        watch,
    })
}
