//! Config sources: where a new config comes from and how it reaches the
//! control plane. A source produces a validated [`Config`] and hands it over
//! one channel as an [`Update`]; the control plane applies updates one at a
//! time ([`ControlPlane::apply`](super::ControlPlane::apply)) and answers
//! each on its reply channel. The config file is the first source: re-read
//! on SIGHUP and on the admin API's reload.
//!
//! A provider contributes part of the config: the Docker provider hands
//! its [`Contribution`] (the services and routes its containers' labels
//! make) to [`ControlPlane::apply_docker`](super::ControlPlane::apply_docker),
//! which replaces its previous one and merges it with the file's; and it
//! reports a stopping container straight to
//! [`ControlPlane::container_stopping`](super::ControlPlane::container_stopping),
//! which only marks that container's servers draining and so waits behind
//! no full apply.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use tokio::sync::{mpsc, oneshot};

use super::ControlError;
use crate::config::{self, Config, Location, PoolName, RouteConfig, ServerAddr, ServiceConfig};
use crate::wire::{Actor, Applied, ContainerStatus};

/// What the Docker provider sees: the services and routes its containers'
/// labels make, each server's container, and what it reports per
/// container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Contribution {
    /// The services, sorted by name; a pool may have no server.
    pub services: Vec<ServiceConfig>,
    /// Their routes.
    pub routes: Vec<RouteConfig>,
    /// The container behind each server: (service, pool, server).
    pub servers: HashMap<(String, PoolName, ServerAddr), ContainerRef>,
    /// The labels each service comes from, to name in a report (a name
    /// the config file also uses, say).
    pub origins: BTreeMap<String, Vec<Location>>,
    /// The containers read, with their ignored labels and issues.
    pub containers: Vec<ContainerStatus>,
    /// The hosts of the routers with a `tls.certresolver` label: ACME
    /// certificates are obtained for them.
    pub acme_domains: std::collections::BTreeSet<String>,
}

/// A container behind a server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerRef {
    /// Its full id.
    pub id: String,
    /// Its name.
    pub name: String,
}

/// Most updates queued for the control plane.
pub(super) const UPDATE_QUEUE: usize = 16;

/// A new config for the control plane to apply.
#[derive(Debug)]
pub struct Update {
    /// The validated config.
    pub config: Config,
    /// Who asked for it.
    pub actor: Actor,
    /// Where the outcome goes, when someone waits for it.
    pub reply: Option<oneshot::Sender<Result<Applied, ControlError>>>,
}

/// The config file.
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
}

impl FileSource {
    /// The file at `path`.
    pub fn new(path: PathBuf) -> FileSource {
        FileSource { path }
    }

    /// Reads and validates the file, then has the control plane apply it;
    /// resolves with the outcome.
    ///
    /// # Errors
    ///
    /// [`ControlError::InvalidConfig`] when the file is invalid (nothing is
    /// sent: the running config stays), or whatever applying it refused.
    pub async fn reload(
        &self,
        updates: &mpsc::Sender<Update>,
        actor: Actor,
    ) -> Result<Applied, ControlError> {
        let config = config::load(&self.path).map_err(|e| {
            tracing::warn!(path = %self.path.display(), errors = %e, "reload refused: the running config stays");
            ControlError::InvalidConfig(e)
        })?;
        let (reply, outcome) = oneshot::channel();
        let update = Update {
            config,
            actor,
            reply: Some(reply),
        };
        if updates.send(update).await.is_err() {
            return Err(ControlError::Stopping);
        }
        outcome.await.unwrap_or(Err(ControlError::Stopping))
    }

    /// Reloads the file at every SIGHUP, until the control plane stops.
    pub async fn on_sighup(self, updates: mpsc::Sender<Update>) {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: reload only through the admin API");
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!(path = %self.path.display(), "SIGHUP: reloading the config");
            // Refusals are logged where they happen.
            let _ = self.reload(&updates, Actor::Signal).await;
        }
    }
}
