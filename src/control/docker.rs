//! The Docker provider's changes applied: its latest contribution (merged
//! with the file's services by `provided`), its containers' stops, the
//! servers that linger while what they have in flight finishes, and its
//! connection to the engine.
//!
//! A contribution replaces the previous one whole, and goes in force like
//! a reload: servers new to it are unproven until their first passing
//! check, and open connections keep the snapshot they started with. It is
//! committed to the store only when the set of services changes (a
//! container that comes and goes changes no release state). A service name
//! the file also uses keeps the file's service; the clash is reported.
//!
//! A stopping container ([`ControlPlane::container_stopping`]) is the fast
//! path: its servers are marked draining and a snapshot without them is
//! published at once, before the provider lists the containers again.
//! A server that leaves the contribution while requests are in flight on
//! it stays in status, draining, until they end or its service's
//! `drain_timeout` passes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::apply::Next;
use super::effect::publish;
use super::provided::{merge, Lingering};
use super::source::Contribution;
use super::{ControlError, ControlPlane, Inner, ServerKey};
use crate::wire::{Actor, Applied, Event, Reason};

/// How often servers that linger are looked at.
const REAP_EVERY: Duration = Duration::from_millis(50);

impl ControlPlane {
    /// Puts the Docker provider's view in force in place of its previous
    /// one: servers new to it are unproven until they pass a check; servers
    /// that left linger, draining, while requests are in flight on them.
    ///
    /// # Errors
    ///
    /// A refusal of the release-state store (when the set of services
    /// changed): the previous view stays.
    pub async fn apply_docker(
        self: &Arc<Self>,
        contribution: Contribution,
    ) -> Result<Applied, ControlError> {
        let mut guard = self.inner.lock().await;
        let inner = &mut *guard;
        let before: BTreeSet<String> = service_names(inner);
        // What a refusal of the store puts back.
        let kept = (inner.health.clone(), inner.docker.lingering.clone());
        let previous = std::mem::replace(&mut inner.docker.contribution, contribution);
        let removed = departures(inner, &previous);
        let merged = merge(&inner.file, &mut inner.docker);
        let after: BTreeSet<String> = merged.services.iter().map(|s| s.name.clone()).collect();
        let event = (before != after).then(|| {
            let added: Vec<&String> = after.difference(&before).collect();
            let gone: Vec<&String> = before.difference(&after).collect();
            tracing::info!(?added, removed = ?gone, "docker: services changed");
            Event::now(
                None,
                None,
                None,
                Reason::Reload,
                Actor::Docker,
                serde_json::json!({"provider": "docker", "added": added, "removed": gone}),
            )
        });
        let next = Next {
            config: merged,
            event,
        };
        let outcome = self.install(inner, next, None).await;
        let (generation, persisted) = match outcome {
            Ok(done) => {
                let domains = &inner.docker.contribution.acme_domains;
                self.acme_domains.send_if_modified(|current| {
                    let changed = current != domains;
                    if changed {
                        current.clone_from(domains);
                    }
                    changed
                });
                done
            }
            Err(e) => {
                inner.docker.contribution = previous;
                (inner.health, inner.docker.lingering) = kept;
                // The previous view's clashes again (its config is in force).
                let _ = merge(&inner.file, &mut inner.docker);
                return Err(e);
            }
        };
        for key in removed {
            forget_gauge(inner, &key);
        }
        self.watch_lingering(inner);
        Ok(Applied {
            generation,
            changed: true,
            service: None,
            persisted,
        })
    }

    /// The fast path of a container's stop (the engine's `kill`, `stop`,
    /// `die`, `pause` or `destroy` event): its servers take no new request
    /// from the snapshot published now; what they have in flight finishes.
    /// Returns how many servers that was.
    pub async fn container_stopping(&self, id: &str) -> usize {
        let mut inner = self.inner.lock().await;
        let keys: Vec<(ServerKey, String)> = inner
            .docker
            .contribution
            .servers
            .iter()
            .filter(|(_, c)| c.id == id)
            .map(|(k, c)| (k.clone(), c.name.clone()))
            .collect();
        let next = inner.generation + 1;
        let mut drained = 0;
        for (key, name) in &keys {
            let Some(h) = inner.health.get_mut(key) else {
                continue;
            };
            if std::mem::replace(&mut h.draining, true) {
                continue;
            }
            drained += 1;
            tracing::info!(container = %name, service = %key.0, pool = %key.1, server = %key.2, "container stopping: its server takes no new request");
            if let Some(rt) = inner.services.get_mut(&key.0) {
                rt.local.generation = next;
            }
        }
        if drained > 0 {
            publish(&mut inner);
        }
        drained
    }

    /// Whether a release state is held for service `name`: it is configured
    /// now, or the store keeps its state from before.
    pub async fn knows_service(&self, name: &str) -> bool {
        let inner = self.inner.lock().await;
        inner.services.contains_key(name) || inner.dormant.contains_key(name)
    }

    /// Records whether the engine answers (status and
    /// `cutover_provider_up{provider="docker"}`).
    pub async fn docker_connected(&self, connected: bool, error: Option<String>) {
        self.metrics
            .provider_up
            .with_label_values(&["docker"])
            .set(i64::from(connected));
        let mut inner = self.inner.lock().await;
        inner.docker.connected = connected;
        inner.docker.error = error;
    }

    /// Starts the task that lets lingering servers go, unless one runs.
    fn watch_lingering(self: &Arc<Self>, inner: &mut Inner) {
        if inner.docker.lingering.is_empty() || inner.docker.reaping {
            return;
        }
        inner.docker.reaping = true;
        tokio::spawn(self.clone().reap());
    }

    /// Lets each lingering server go once nothing is in flight on it (or
    /// its drain timeout passed), until none is left.
    async fn reap(self: Arc<Self>) {
        loop {
            tokio::time::sleep(REAP_EVERY).await;
            let mut guard = self.inner.lock().await;
            let inner = &mut *guard;
            let now = Instant::now();
            let done: Vec<ServerKey> = inner
                .docker
                .lingering
                .iter()
                .filter(|(key, l)| now >= l.until || inflight(inner, key) == 0)
                .map(|(key, _)| key.clone())
                .collect();
            if !done.is_empty() {
                for key in &done {
                    if let Some(l) = inner.docker.lingering.remove(key) {
                        tracing::info!(container = %l.container.name, service = %key.0, pool = %key.1, server = %key.2, "drained: server removed");
                    }
                    inner.health.remove(key);
                }
                let merged = merge(&inner.file, &mut inner.docker);
                let next = Next {
                    config: merged,
                    event: None,
                };
                // Without an event nothing is committed: nothing to refuse.
                let _ = self.install(inner, next, None).await;
                for key in &done {
                    forget_gauge(inner, key);
                }
            }
            if inner.docker.lingering.is_empty() {
                inner.docker.reaping = false;
                return;
            }
        }
    }
}

/// The names of the services in force.
fn service_names(inner: &Inner) -> BTreeSet<String> {
    inner
        .config
        .services
        .iter()
        .map(|s| s.name.clone())
        .collect()
}

/// Settles the servers of `previous` against the contribution now in
/// `inner`: one that left with requests in flight lingers, draining; one
/// whose address another container took, or that left idle, loses its
/// health record (a newcomer is unproven); one that is back after its
/// container stopped is unproven again. Returns the servers gone for good.
fn departures(inner: &mut Inner, previous: &Contribution) -> Vec<ServerKey> {
    let now = Instant::now();
    let mut gone = Vec::new();
    for (key, container) in &previous.servers {
        let current = inner.docker.contribution.servers.get(key);
        if current == Some(container) {
            continue;
        }
        let service = inner.config.services.iter().find(|s| s.name == key.0);
        match (current, service) {
            (None, Some(service)) if inflight(inner, key) > 0 => {
                let lingering = Lingering {
                    container: container.clone(),
                    service: service.clone(),
                    until: now + service.drain_timeout,
                };
                inner.docker.lingering.insert(key.clone(), lingering);
                if let Some(h) = inner.health.get_mut(key) {
                    h.draining = true;
                }
                tracing::info!(container = %container.name, service = %key.0, pool = %key.1, server = %key.2, "container gone: its server drains");
            }
            _ => {
                inner.health.remove(key);
                if current.is_none() {
                    tracing::info!(container = %container.name, service = %key.0, pool = %key.1, server = %key.2, "container gone: server removed");
                    gone.push(key.clone());
                }
            }
        }
    }
    let keys: Vec<ServerKey> = inner.docker.contribution.servers.keys().cloned().collect();
    for key in keys {
        inner.docker.lingering.remove(&key);
        if inner.health.get(&key).is_some_and(|h| h.draining) {
            inner.health.remove(&key);
        }
        if !previous.servers.contains_key(&key) {
            let name = &inner.docker.contribution.servers[&key].name;
            tracing::info!(container = %name, service = %key.0, pool = %key.1, server = %key.2, "container added: server starting");
        }
    }
    gone
}

/// Requests in flight on a server now.
fn inflight(inner: &Inner, key: &ServerKey) -> u64 {
    inner
        .objects
        .servers()
        .find(|(s, p, server)| *s == key.0 && *p == key.1 && server.upstream.addr() == &key.2)
        .map_or(0, |(_, _, server)| server.inflight())
}

/// Drops the `cutover_upstream_up` series of a server that is gone.
fn forget_gauge(inner: &Inner, key: &ServerKey) {
    let still = inner
        .config
        .services
        .iter()
        .any(|s| s.name == key.0 && s.pool(key.1).servers.contains(&key.2));
    if !still {
        let _ = inner.objects.metrics().upstream_up.remove_label_values(&[
            &key.0,
            key.1.as_str(),
            &key.2.to_string(),
        ]);
    }
}
