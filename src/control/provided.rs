//! What the control plane keeps of the Docker provider: its latest
//! contribution, the servers that linger while they drain, the services
//! left out for a name the file uses, and its connection to the engine;
//! and the merge of the file's config with it (pure).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use super::source::{ContainerRef, Contribution};
use super::ServerKey;
use crate::config::{Config, ConfigIssue, DockerConfig, Location, ServiceConfig};
use crate::wire::{DockerStatus, LabelIssue};

/// The Docker provider's part of the control plane's state.
#[derive(Debug, Default)]
pub(super) struct DockerPart {
    /// The engine, when the provider runs.
    pub(super) endpoint: Option<String>,
    /// Whether the engine answers.
    pub(super) connected: bool,
    /// Why it does not.
    pub(super) error: Option<String>,
    /// The provider's latest view.
    pub(super) contribution: Contribution,
    /// Servers no longer in the contribution, still draining.
    pub(super) lingering: HashMap<ServerKey, Lingering>,
    /// The services of the contribution left out for a name the file uses.
    pub(super) clashes: Vec<ConfigIssue>,
    /// Whether a task watches the lingering servers.
    pub(super) reaping: bool,
}

/// A server that left while requests were in flight on it.
#[derive(Debug, Clone)]
pub(super) struct Lingering {
    /// Its container.
    pub(super) container: ContainerRef,
    /// Its service as it was, in case the service left with it.
    pub(super) service: ServiceConfig,
    /// When it leaves status even if requests are still in flight.
    pub(super) until: Instant,
}

impl DockerPart {
    /// The part of a provider configured by `config` (none: no provider).
    pub(super) fn new(config: Option<&DockerConfig>) -> DockerPart {
        DockerPart {
            endpoint: config.map(|c| c.endpoint.clone()),
            ..DockerPart::default()
        }
    }

    /// The container behind a server, if it is one.
    pub(super) fn container_of(&self, key: &ServerKey) -> Option<&ContainerRef> {
        self.contribution
            .servers
            .get(key)
            .or_else(|| self.lingering.get(key).map(|l| &l.container))
    }

    /// What status shows, when the provider runs.
    pub(super) fn status(&self) -> Option<DockerStatus> {
        let endpoint = self.endpoint.clone()?;
        let mut containers = self.contribution.containers.clone();
        for clash in &self.clashes {
            let Location::Label { container, label } = &clash.location else {
                continue;
            };
            if let Some(c) = containers.iter_mut().find(|c| &c.name == container) {
                c.issues.push(LabelIssue {
                    label: label.clone(),
                    message: clash.message.clone(),
                });
            }
        }
        Some(DockerStatus {
            endpoint,
            connected: self.connected,
            error: self.error.clone(),
            containers,
        })
    }
}

/// The config in force: `file`'s, with the provider's services whose names
/// the file does not use, and the lingering servers in their pools.
/// Records (and logs, when new) the clashes.
pub(super) fn merge(file: &Config, part: &mut DockerPart) -> Config {
    let mut config = file.clone();
    if part.endpoint.is_none() {
        return config;
    }
    let taken: HashSet<&str> = file.services.iter().map(|s| s.name.as_str()).collect();
    let mut clashes = Vec::new();
    let mut services: Vec<ServiceConfig> = Vec::new();
    for sc in &part.contribution.services {
        if taken.contains(sc.name.as_str()) {
            clashes.extend(clash_issues(file, &part.contribution, &sc.name));
        } else {
            services.push(sc.clone());
        }
    }
    for (key, lingering) in &part.lingering {
        if taken.contains(key.0.as_str()) {
            continue;
        }
        let at = match services.iter().position(|s| s.name == key.0) {
            Some(at) => at,
            None => {
                let mut gone = lingering.service.clone();
                gone.pools.iter_mut().for_each(|p| p.servers.clear());
                services.push(gone);
                services.len() - 1
            }
        };
        let pool = &mut services[at].pools[key.1.index()];
        if !pool.servers.contains(&key.2) {
            pool.servers.push(key.2.clone());
        }
    }
    let names: HashSet<&str> = services.iter().map(|s| s.name.as_str()).collect();
    let routes = part
        .contribution
        .routes
        .iter()
        .filter(|r| names.contains(r.service.as_str()));
    config.routes.extend(routes.cloned());
    config.services.extend(services);
    config.services.sort_by(|a, b| a.name.cmp(&b.name));
    for issue in clashes.iter().filter(|i| !part.clashes.contains(i)) {
        tracing::warn!(issue = %issue, "docker: service left out");
    }
    part.clashes = clashes;
    config
}

/// One issue per label the clashing service `name` comes from.
fn clash_issues(file: &Config, contribution: &Contribution, name: &str) -> Vec<ConfigIssue> {
    let message = format!(
        "service {name:?} is also defined in {}: the file's service is kept and this one is left out \
         (give the containers another name with the label cutover.service)",
        file.path.display()
    );
    contribution
        .origins
        .get(name)
        .into_iter()
        .flatten()
        .map(|location| ConfigIssue {
            location: location.clone(),
            key: format!("service {name}"),
            message: message.clone(),
        })
        .collect()
}
