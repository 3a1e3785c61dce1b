//! Applying a new config from any source: the file's config merged with
//! the providers' services, the new TLS config, each service's runtime and
//! each server's health carried over, the health checkers brought in step,
//! then the change committed and published.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::effect::{commit, publish};
use super::provided::merge;
use super::runtime::{Runtime, ServerHealth};
use super::source::{FileSource, Update};
use super::store::{Change, ReleaseState};
use super::{ControlError, ControlPlane, Inner, ServerKey};
use crate::config::{Config, PoolName};
use crate::health::state::HealthState;
use crate::wire::{Actor, Applied, Event, Reason};

/// A config to put in force.
pub(super) struct Next {
    /// The merged config.
    pub(super) config: Config,
    /// The event to commit with the services' states; `None`: nothing the
    /// store holds changed, so nothing is committed.
    pub(super) event: Option<Event>,
}

impl ControlPlane {
    /// Applies `new` as the running config, keeping each service's active
    /// pool and weights. Servers new to the config are unproven until they
    /// pass `healthy_threshold` checks. Open connections keep the snapshot
    /// they started with. The Docker provider's services, if it runs, stay
    /// beside the file's.
    ///
    /// # Errors
    ///
    /// [`ControlError::InvalidTls`] (the running config and certificate
    /// stay), or a refusal of the release-state store.
    pub async fn apply(&self, new: Config, actor: Actor) -> Result<Applied, ControlError> {
        let tls = tls_of(&new, &self.issued)?;
        let mut inner = self.inner.lock().await;
        warn_on_restart_keys(&inner.file, &new);
        let path = new.path.display().to_string();
        let event = Event::now(
            None,
            None,
            None,
            Reason::Reload,
            actor,
            serde_json::json!({"path": path}),
        );
        let file = Arc::new(new);
        let merged = merge(&file, &mut inner.docker);
        let next = Next {
            config: merged,
            event: Some(event),
        };
        let (generation, persisted) = self.install(&mut inner, next, Some(tls)).await?;
        inner.file = file;
        tracing::info!(path = %path, actor = actor.as_str(), generation, "config reloaded");
        Ok(Applied {
            generation,
            changed: true,
            service: None,
            persisted,
        })
    }

    /// Puts `next` in force: commits it when it has an event (nothing
    /// changes if the store refuses), then takes each service's runtime
    /// over (or up again from the dormant ones), each server's health, the
    /// TLS config when `tls` is given, brings the checkers in step and
    /// publishes. Returns the generation published and whether the store
    /// made the change durable.
    pub(super) async fn install(
        &self,
        inner: &mut Inner,
        next: Next,
        tls: Option<Option<Arc<rustls::ServerConfig>>>,
    ) -> Result<(u64, bool), ControlError> {
        let Next { config, event } = next;
        let services = carry_runtimes(inner, &config);
        let mut persisted = true;
        if let Some(mut event) = event {
            event.generation = inner.generation + 1;
            let mut states: BTreeMap<String, ReleaseState> = inner.dormant.clone();
            states.extend(
                inner
                    .services
                    .iter()
                    .map(|(n, rt)| (n.clone(), rt.release.clone())),
            );
            for (name, rt) in &services {
                let mut rt = rt.clone();
                rt.sync_release();
                states.insert(name.clone(), rt.release);
            }
            let change = Change::Services {
                states,
                event: event.clone(),
            };
            persisted = commit(inner, change).await?;
            inner.events.push(event);
        }
        if let Some(tls) = tls {
            inner.tls = tls;
        }
        for (name, rt) in std::mem::take(&mut inner.services) {
            if !services.contains_key(&name) {
                inner.dormant.insert(name, rt.release);
            }
        }
        for name in services.keys() {
            inner.dormant.remove(name);
        }
        inner.services = services;
        inner.health = carry_health(inner, &config);
        inner.checkers.reconcile(&config, &self.health_tx);
        inner.config = Arc::new(config);
        let generation = publish(inner);
        Ok((generation, persisted))
    }

    /// Re-reads the config file and applies it (the file source's reload).
    ///
    /// # Errors
    ///
    /// [`ControlError::InvalidConfig`]: the running config stays;
    /// [`ControlError::NoConfigFile`] when there is no file; or what
    /// [`ControlPlane::apply`] refused.
    pub async fn reload(&self, actor: Actor) -> Result<Applied, ControlError> {
        let file = self.inner.lock().await.file.clone();
        if !file.from_file {
            return Err(ControlError::NoConfigFile);
        }
        FileSource::new(file.path.clone())
            .reload(&self.updates, actor)
            .await
    }

    /// Applies the updates the config sources send, one at a time.
    pub(super) async fn apply_updates(self: Arc<Self>, mut updates: mpsc::Receiver<Update>) {
        while let Some(update) = updates.recv().await {
            let outcome = self.apply(update.config, update.actor).await;
            if let Err(e) = &outcome {
                tracing::warn!(error = %e, "reload refused: the running config stays");
            }
            if let Some(reply) = update.reply {
                let _ = reply.send(outcome);
            }
        }
    }
}

/// The HTTPS listener's config for `config`, read from its files.
fn tls_of(
    config: &Config,
    issued: &Arc<crate::tls::Issued>,
) -> Result<Option<Arc<rustls::ServerConfig>>, ControlError> {
    config
        .server
        .tls
        .as_ref()
        .map(|t| crate::tls::server_config(t, issued))
        .transpose()
        .map_err(ControlError::InvalidTls)
}

/// The runtime of each service of `new`: the running one's, else the one
/// the store kept while the service was away, else a fresh one at the next
/// generation.
fn carry_runtimes(inner: &Inner, new: &Config) -> BTreeMap<String, Runtime> {
    let generation = inner.generation + 1;
    new.services
        .iter()
        .map(|sc| {
            let rt = match (inner.services.get(&sc.name), inner.dormant.get(&sc.name)) {
                (Some(rt), _) => rt.clone(),
                (None, Some(release)) => Runtime::new(release.clone(), generation),
                (None, None) => Runtime::new(ReleaseState::fresh(sc.active), generation),
            };
            (sc.name.clone(), rt)
        })
        .collect()
}

/// The health record of each server of `new`: the running one's, or, for a
/// server new to the config, unproven when its pool has health checks.
fn carry_health(inner: &mut Inner, new: &Config) -> HashMap<ServerKey, ServerHealth> {
    let mut health = HashMap::new();
    for sc in &new.services {
        for pool in PoolName::ALL {
            for addr in &sc.pool(pool).servers {
                let key = (sc.name.clone(), pool, addr.clone());
                let h = inner.health.remove(&key).unwrap_or_else(|| {
                    ServerHealth::new(if sc.health_of(pool).is_some() {
                        HealthState::unproven()
                    } else {
                        HealthState::at_start()
                    })
                });
                health.insert(key, h);
            }
        }
    }
    health
}

fn warn_on_restart_keys(old: &Config, new: &Config) {
    if old.server.listen != new.server.listen
        || old.server.tls.as_ref().map(|t| t.listen) != new.server.tls.as_ref().map(|t| t.listen)
    {
        tracing::warn!("reload: a changed listen address takes effect at the next restart");
    }
    if old.admin != new.admin {
        tracing::warn!("reload: [admin] changes take effect at the next restart");
    }
    if old.server.workers != new.server.workers || old.server.limits != new.server.limits {
        tracing::warn!("reload: [server] workers and limits take effect at the next restart (upstream timeouts apply now)");
    }
    if old.server.tls.as_ref().map(|t| &t.acme) != new.server.tls.as_ref().map(|t| &t.acme) {
        tracing::warn!("reload: [server.tls.acme] changes take effect at the next restart");
    }
    if old.providers != new.providers {
        tracing::warn!("reload: [providers] changes take effect at the next restart");
    }
}
