//! Containers' labels into cutover services (pure): routers merged by name
//! across containers, each with its servers; routers with the same rule
//! grouped into one service with a blue and a green pool; its routes, one
//! per alternative of the rule.
//!
//! Every bad input is an issue naming the container and the label, and
//! costs only what it touches: a router that cannot be routed exactly as
//! written is left out, a server that cannot be reached is left out of its
//! pool, and everything else is served.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use super::labels::{self, Labels, RouterLabels};
use super::middlewares::{self, MiddlewareLabels};
use super::rule::{self, Alternative, PathMatch};
use super::server::{self, COMPOSE_SERVICE};
use super::{Container, Settings};
use crate::config::{HealthConfig, Listeners, Location, Middlewares, PoolName, ServerAddr};
use crate::control::source::Contribution;
use crate::wire::{ContainerStatus, LabelIssue};

/// Builds the provider's contribution from the running containers.
pub fn contribution(containers: &[Container], settings: &Settings<'_>) -> Contribution {
    let mut g = Grouping::read(containers, settings);
    let routers = g.routers(settings);
    let mut out = Contribution {
        // The hosts of routers with a `tls.certresolver`, for ACME.
        acme_domains: routers
            .iter()
            .filter(|r| r.certresolver)
            .flat_map(|r| r.alternatives.iter().filter_map(|a| a.host.clone()))
            .collect(),
        ..Contribution::default()
    };
    let groups = group_by_rule(routers);
    let mut names = BTreeSet::new();
    // Services named by a label claim their names first.
    let (named, derived): (Vec<_>, Vec<_>) = groups
        .into_iter()
        .partition(|grp| g.explicit_name(grp).is_some());
    for group in named.into_iter().chain(derived) {
        g.service(group, &mut names, &mut out);
    }
    out.services.sort_by(|a, b| a.name.cmp(&b.name));
    out.containers = g
        .read
        .iter()
        .map(|r| ContainerStatus {
            name: r.container.name.clone(),
            id: r.container.id.chars().take(12).collect(),
            services: r.services.iter().cloned().collect(),
            ignored_labels: r.labels.ignored.clone(),
            issues: r
                .issues
                .iter()
                .map(|(label, message)| LabelIssue {
                    label: label.clone(),
                    message: message.clone(),
                })
                .collect(),
        })
        .collect();
    out.containers.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// One container the provider reads.
struct Read<'a> {
    container: &'a Container,
    labels: Labels,
    /// The address the proxy reaches it on, if it can.
    ip: Option<IpAddr>,
    /// Its label issues: label, message.
    issues: Vec<(String, String)>,
    /// The cutover services it ends up a server of.
    services: BTreeSet<String>,
}

impl Read<'_> {
    /// The Traefik services it is a server of: those its labels name, else
    /// (when it has routers) the implicit one named after its compose
    /// service, as Traefik makes it.
    fn traefik_services(&self) -> Vec<String> {
        if !self.labels.services.is_empty() {
            return self.labels.services.keys().cloned().collect();
        }
        if self.labels.routers.is_empty() {
            return Vec::new();
        }
        vec![implicit_service(self.container)]
    }

    fn location(&self, label: &str) -> Location {
        Location::Label {
            container: self.container.name.clone(),
            label: label.to_string(),
        }
    }
}

/// Traefik's name for a container's service when its labels name none.
fn implicit_service(container: &Container) -> String {
    container
        .labels
        .get(COMPOSE_SERVICE)
        .cloned()
        .unwrap_or_else(|| container.name.clone())
}

/// A router as every container that defines it agrees, with its servers.
struct Router {
    name: String,
    /// Its `.priority` label, when it has one.
    explicit_priority: Option<i64>,
    /// The containers defining it, with the rule's label.
    defs: Vec<(usize, String)>,
    alternatives: Vec<Alternative>,
    /// It has a `tls.certresolver` label.
    certresolver: bool,
    priority: i64,
    listeners: Listeners,
    middlewares: Option<Arc<Middlewares>>,
    /// The labels its priority, entrypoints and middlewares came from
    /// (container, label), to name when the routers of a group differ.
    settings_at: (usize, String),
    /// Servers: container, address, check, pool (when one is said).
    servers: Vec<(usize, ServerAddr, HealthConfig, Option<PoolName>)>,
}

struct Grouping<'a> {
    read: Vec<Read<'a>>,
    middlewares: BTreeMap<String, MiddlewareLabels>,
}

impl<'a> Grouping<'a> {
    /// Reads every container's labels and address, and merges the
    /// middlewares they define.
    fn read(containers: &'a [Container], settings: &Settings<'_>) -> Grouping<'a> {
        let mut read = Vec::new();
        for container in containers {
            let labels = labels::read(&container.labels);
            let enabled = labels.enable.unwrap_or(settings.docker.exposed_by_default);
            if !enabled
                || (labels.is_empty() && labels.ignored.is_empty() && labels.issues.is_empty())
            {
                continue;
            }
            let mut issues = labels.issues.clone();
            let ip = if labels.routers.is_empty() && labels.services.is_empty() {
                None
            } else {
                server::address(container, &labels, settings.docker, settings.proxy_networks)
                    .map_err(|problem| issues.push(problem))
                    .ok()
            };
            read.push(Read {
                container,
                labels,
                ip,
                issues,
                services: BTreeSet::new(),
            });
        }
        let mut g = Grouping {
            read,
            middlewares: BTreeMap::new(),
        };
        g.merge_middlewares();
        g
    }

    /// Every container's middlewares by name; one defined differently by
    /// two containers is reported on both and left undefined.
    fn merge_middlewares(&mut self) {
        let mut seen: BTreeMap<String, (usize, MiddlewareLabels)> = BTreeMap::new();
        let mut clashing = BTreeSet::new();
        for (i, r) in self.read.iter().enumerate() {
            for (name, def) in &r.labels.middlewares {
                match seen.get(name) {
                    Some((_, first)) if first != def => {
                        clashing.insert(name.clone());
                    }
                    Some(_) => {}
                    None => {
                        seen.insert(name.clone(), (i, def.clone()));
                    }
                }
            }
        }
        for name in &clashing {
            let definers: Vec<usize> = (0..self.read.len())
                .filter(|&i| self.read[i].labels.middlewares.contains_key(name))
                .collect();
            let who = self.container_names(&definers);
            for i in definers {
                let label = format!("traefik.http.middlewares.{name}");
                let message = format!(
                    "middleware {name} is defined differently by containers {who}: it is left undefined"
                );
                self.read[i].issues.push((label, message));
            }
        }
        self.middlewares = seen
            .into_iter()
            .filter(|(name, _)| !clashing.contains(name))
            .map(|(name, (_, def))| (name, def))
            .collect();
    }

    fn container_names(&self, at: &[usize]) -> String {
        let names: Vec<&str> = at
            .iter()
            .map(|&i| self.read[i].container.name.as_str())
            .collect();
        names.join(", ")
    }

    fn issue(&mut self, at: usize, label: &str, message: String) {
        self.read[at].issues.push((label.to_string(), message));
    }

    /// Every router that can be routed as written, merged by name.
    fn routers(&mut self, settings: &Settings<'_>) -> Vec<Router> {
        let mut by_name: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, r) in self.read.iter().enumerate() {
            for name in r.labels.routers.keys() {
                by_name.entry(name.clone()).or_default().push(i);
            }
        }
        by_name
            .into_iter()
            .filter_map(|(name, defs)| self.router(&name, &defs, settings))
            .collect()
    }

    /// The router `name` defined by containers `defs`, or `None` (reported)
    /// when it cannot be routed exactly as written.
    fn router(&mut self, name: &str, defs: &[usize], settings: &Settings<'_>) -> Option<Router> {
        let first = self.read[defs[0]].labels.routers[name].clone();
        let differ: Vec<usize> = defs
            .iter()
            .copied()
            .filter(|&i| !same_router(&self.read[i].labels.routers[name], &first))
            .collect();
        if !differ.is_empty() {
            let who = self.container_names(defs);
            for &i in defs {
                let label = rule_label(&self.read[i].labels.routers[name], name);
                let message = format!(
                    "router {name} is defined differently by containers {who} (a rule or another setting differs): it is left out"
                );
                self.issue(i, &label, message);
            }
            return None;
        }
        let at = defs[0];
        if !first.bad.is_empty() {
            // Reported where it was read.
            return None;
        }
        let Some(rule) = first.rule.clone() else {
            let label = format!("traefik.http.routers.{name}.rule");
            let message = "the router has no rule: cutover routes on the rule it is given (e.g. Host(`example.com`)) and makes no default one".to_string();
            for &i in defs {
                self.issue(i, &label, message.clone());
            }
            return None;
        };
        let alternatives = match rule::parse(&rule.value) {
            Ok(alternatives) => alternatives,
            Err(e) => {
                for &i in defs {
                    let message = format!("rule {:?} {e}: the router is left out", rule.value);
                    self.issue(i, &rule.label, message);
                }
                return None;
            }
        };
        let service = self.router_service(name, defs, &first)?;
        let listeners = self.listeners(name, defs, &first, settings)?;
        let middlewares = match &first.middlewares {
            None => None,
            Some(chain) => match middlewares::resolve(&chain.value, &self.middlewares) {
                Ok(m) => Some(Arc::new(m)),
                Err(why) => {
                    for &i in defs {
                        self.issue(i, &chain.label, format!("{why}; router {name} is left out"));
                    }
                    return None;
                }
            },
        };
        let priority = first
            .priority
            .as_ref()
            .map_or(rule.value.chars().count() as i64, |p| p.value);
        let servers = self.servers(name, &service);
        if servers.is_empty() {
            let message = format!(
                "router {name}'s service {service} has no server cutover can reach: the router is left out"
            );
            for &i in defs {
                self.issue(i, &rule.label, message.clone());
            }
            return None;
        }
        Some(Router {
            name: name.to_string(),
            explicit_priority: first.priority.as_ref().map(|p| p.value),
            defs: defs.iter().map(|&i| (i, rule.label.clone())).collect(),
            alternatives,
            certresolver: first.certresolver.is_some(),
            priority,
            listeners,
            middlewares,
            settings_at: (at, rule.label.clone()),
            servers,
        })
    }

    /// The Traefik service a router sends to: its `.service` label, else
    /// the one service its containers have.
    fn router_service(
        &mut self,
        name: &str,
        defs: &[usize],
        first: &RouterLabels,
    ) -> Option<String> {
        if let Some(service) = &first.service {
            let known = self
                .read
                .iter()
                .any(|r| r.traefik_services().contains(&service.value));
            if !known {
                let message = format!(
                    "router {name} names service {:?}, which no container defines: the router is left out",
                    service.value
                );
                for &i in defs {
                    self.issue(i, &service.label, message.clone());
                }
                return None;
            }
            return Some(service.value.clone());
        }
        let mut own: BTreeSet<String> = BTreeSet::new();
        for &i in defs {
            own.extend(self.read[i].traefik_services());
        }
        if own.len() == 1 {
            return own.into_iter().next();
        }
        let label = format!("traefik.http.routers.{name}.service");
        let message = format!(
            "router {name} names no service and its containers have several ({own:?}): name one with this label; the router is left out"
        );
        for &i in defs {
            self.issue(i, &label, message.clone());
        }
        None
    }

    /// The listeners of a router's entrypoints (every listener when it
    /// names none).
    fn listeners(
        &mut self,
        name: &str,
        defs: &[usize],
        first: &RouterLabels,
        settings: &Settings<'_>,
    ) -> Option<Listeners> {
        let Some(entrypoints) = &first.entrypoints else {
            return Some(Listeners::ALL);
        };
        let mut listeners = Listeners::NONE;
        for ep in &entrypoints.value {
            match settings.docker.entrypoints.get(ep) {
                Some(l) => listeners = listeners.with(*l),
                None => {
                    let known: Vec<&String> = settings.docker.entrypoints.keys().collect();
                    let message = format!(
                        "entrypoint {ep:?} is not one cutover knows ({known:?}; map more in [providers.docker.entrypoints]): router {name} is left out"
                    );
                    for &i in defs {
                        self.issue(i, &entrypoints.label, message.clone());
                    }
                    return None;
                }
            }
        }
        Some(listeners)
    }

    /// The servers of Traefik service `service` for router `router`: each
    /// container that has the service and can be reached.
    fn servers(
        &mut self,
        router: &str,
        service: &str,
    ) -> Vec<(usize, ServerAddr, HealthConfig, Option<PoolName>)> {
        let mut out = Vec::new();
        for i in 0..self.read.len() {
            let r = &self.read[i];
            if !r.traefik_services().iter().any(|s| s == service) {
                continue;
            }
            let Some(ip) = r.ip else {
                continue;
            };
            let labels = r.labels.services.get(service);
            match server::server(r.container, ip, service, labels) {
                Ok((addr, health)) => {
                    let pool = server::pool(r.container, &r.labels, router, service);
                    out.push((i, addr, health, pool));
                }
                Err((label, message)) => {
                    if !self.read[i].issues.iter().any(|(l, _)| l == &label) {
                        self.issue(i, &label, message);
                    }
                }
            }
        }
        out
    }
}

/// Whether two containers define a router alike (labels' values, not
/// their keys' spelling).
fn same_router(a: &RouterLabels, b: &RouterLabels) -> bool {
    fn v<T: Clone>(l: &Option<labels::Labeled<T>>) -> Option<T> {
        l.as_ref().map(|l| l.value.clone())
    }
    v(&a.rule) == v(&b.rule)
        && v(&a.service) == v(&b.service)
        && v(&a.priority) == v(&b.priority)
        && v(&a.entrypoints) == v(&b.entrypoints)
        && v(&a.middlewares) == v(&b.middlewares)
        && v(&a.certresolver) == v(&b.certresolver)
}

fn rule_label(router: &RouterLabels, name: &str) -> String {
    router.rule.as_ref().map_or_else(
        || format!("traefik.http.routers.{name}.rule"),
        |r| r.label.clone(),
    )
}

/// Routers grouped by what their rules match (the same alternatives, in
/// any order and spelling), in the order of their first router's name.
fn group_by_rule(routers: Vec<Router>) -> Vec<Vec<Router>> {
    type Key = Vec<(Option<String>, Option<(bool, String)>)>;
    let mut groups: Vec<(Key, Vec<Router>)> = Vec::new();
    let mut index: HashMap<Key, usize> = HashMap::new();
    for router in routers {
        let mut key: Key = router
            .alternatives
            .iter()
            .map(|a| {
                let path = a.path.as_ref().map(|p| match p {
                    PathMatch::Prefix(p) => (false, p.clone()),
                    PathMatch::Exact(p) => (true, p.clone()),
                });
                (a.host.clone(), path)
            })
            .collect();
        key.sort();
        key.dedup();
        match index.get(&key) {
            Some(&at) => groups[at].1.push(router),
            None => {
                index.insert(key.clone(), groups.len());
                groups.push((key, vec![router]));
            }
        }
    }
    groups.into_iter().map(|(_, g)| g).collect()
}

mod service;
#[cfg(test)]
mod tests;
