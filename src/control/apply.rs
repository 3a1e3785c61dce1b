//! Applying a new config from any source: the new TLS config, each
//! service's runtime and each server's health carried over, the health
//! checkers restarted, then the change committed and published.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::effect::{commit, publish};
use super::runtime::{Runtime, ServerHealth};
use super::source::{FileSource, Update};
use super::store::{Change, ReleaseState};
use super::{ControlError, ControlPlane, Inner, ServerKey};
use crate::config::{Config, PoolName};
use crate::health::{self, state::HealthState};
use crate::wire::{Actor, Applied, Event, Reason};

impl ControlPlane {
    /// Applies `new` as the running config, keeping each service's active
    /// pool and weights. Servers new to the config are unproven until they
    /// pass `healthy_threshold` checks. Open connections keep the snapshot
    /// they started with.
    ///
    /// # Errors
    ///
    /// [`ControlError::InvalidTls`] (the running config and certificate
    /// stay), or a refusal of the release-state store.
    pub async fn apply(&self, new: Config, actor: Actor) -> Result<Applied, ControlError> {
        let tls = tls_of(&new)?;
        let mut inner = self.inner.lock().await;
        warn_on_restart_keys(&inner.config, &new);
        let services = carry_runtimes(&mut inner, &new);
        let generation = inner.generation + 1;
        let path = new.path.display().to_string();
        let mut event = Event::now(
            None,
            None,
            None,
            Reason::Reload,
            actor,
            serde_json::json!({"path": path}),
        );
        event.generation = generation;
        let states: BTreeMap<String, ReleaseState> = services
            .iter()
            .map(|(name, rt)| {
                let mut rt = rt.clone();
                rt.sync_release();
                (name.clone(), rt.release)
            })
            .collect();
        let change = Change::Services {
            states,
            event: event.clone(),
        };
        let persisted = commit(&inner, change).await?;
        inner.tls = tls;
        inner.services = services;
        inner.health = carry_health(&mut inner, &new);
        for task in inner.checkers.drain(..) {
            task.abort();
        }
        inner.checkers = health::spawn_checkers(&new, &self.health_tx);
        inner.config = Arc::new(new);
        inner.events.push(event);
        let generation = publish(&mut inner);
        tracing::info!(path = %path, actor = actor.as_str(), generation, "config reloaded");
        Ok(Applied {
            generation,
            changed: true,
            service: None,
            persisted,
        })
    }

    /// Re-reads the config file and applies it (the file source's reload).
    ///
    /// # Errors
    ///
    /// [`ControlError::InvalidConfig`]: the running config stays; or what
    /// [`ControlPlane::apply`] refused.
    pub async fn reload(&self, actor: Actor) -> Result<Applied, ControlError> {
        let path = self.inner.lock().await.config.path.clone();
        FileSource::new(path).reload(&self.updates, actor).await
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
fn tls_of(config: &Config) -> Result<Option<Arc<rustls::ServerConfig>>, ControlError> {
    config
        .server
        .tls
        .as_ref()
        .map(crate::tls::server_config)
        .transpose()
        .map_err(ControlError::InvalidTls)
}

/// The runtime of each service of `new`: the running one's, or a fresh one
/// at the next generation for a service new to the config.
fn carry_runtimes(inner: &mut Inner, new: &Config) -> BTreeMap<String, Runtime> {
    let generation = inner.generation + 1;
    new.services
        .iter()
        .map(|sc| {
            let rt = inner
                .services
                .get(&sc.name)
                .cloned()
                .unwrap_or_else(|| Runtime::new(ReleaseState::fresh(sc.active), generation));
            (sc.name.clone(), rt)
        })
        .collect()
}

/// The health record of each server of `new`: the running one's, or, for a
/// server new to the config, unproven when its service has health checks.
fn carry_health(inner: &mut Inner, new: &Config) -> HashMap<ServerKey, ServerHealth> {
    let mut health = HashMap::new();
    for sc in &new.services {
        for pool in PoolName::ALL {
            for addr in &sc.pool(pool).servers {
                let key = (sc.name.clone(), pool, addr.clone());
                let h = inner.health.remove(&key).unwrap_or_else(|| {
                    ServerHealth::new(if sc.health.is_some() {
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
}
