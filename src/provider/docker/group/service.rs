//! A group of routers with one rule into a cutover service (pure): its
//! name, its blue and green pools, the router its routes follow, its
//! initial active pool, and its routes.

use std::collections::BTreeSet;

use super::{Grouping, Router};
use crate::config::{
    Balance, HealthConfig, PoolConfig, PoolName, RouteConfig, ServerAddr, ServiceConfig,
    DEFAULT_DRAIN_TIMEOUT,
};
use crate::control::source::{ContainerRef, Contribution};
use crate::provider::docker::rule::PathMatch;
use crate::provider::docker::server;

impl Grouping<'_> {
    /// The name a group's containers give it with `cutover.service`.
    pub(super) fn explicit_name(&self, group: &[Router]) -> Option<String> {
        group
            .iter()
            .flat_map(|r| {
                r.servers
                    .iter()
                    .map(|s| s.0)
                    .chain(r.defs.iter().map(|d| d.0))
            })
            .find_map(|i| {
                self.read[i]
                    .labels
                    .service
                    .as_ref()
                    .map(|l| l.value.clone())
            })
    }

    /// Turns a group of routers with one rule into a service, its routes
    /// and its servers, into `out`; reports what it leaves out.
    pub(super) fn service(
        &mut self,
        group: Vec<Router>,
        names: &mut BTreeSet<String>,
        out: &mut Contribution,
    ) {
        let Some(name) = self.name(&group, names) else {
            return;
        };
        let lone = group.len() == 1 && group[0].servers.iter().all(|s| s.3.is_none());
        let mut pools: [Vec<(usize, ServerAddr, HealthConfig)>; 2] = [Vec::new(), Vec::new()];
        for router in &group {
            for (i, addr, health, pool) in &router.servers {
                let pool = match (pool, lone) {
                    (Some(p), _) => *p,
                    (None, true) => PoolName::Blue,
                    (None, false) => {
                        let message = format!(
                            "routers {} share a rule and this container's pool cannot be told from its names: label it cutover.pool=blue or cutover.pool=green; it is left out",
                            group.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ")
                        );
                        self.issue(*i, "cutover.pool", message);
                        continue;
                    }
                };
                let list = &mut pools[pool.index()];
                if !list.iter().any(|(_, a, _)| a == addr) {
                    list.push((*i, addr.clone(), health.clone()));
                }
            }
        }
        if pools.iter().all(Vec::is_empty) {
            return;
        }
        names.insert(name.clone());
        let lead = self.lead(&group, &pools);
        let active = self.active(&pools);
        let config_pools = PoolName::ALL.map(|p| self.pool(&name, &pools[p.index()]));
        for pool in PoolName::ALL {
            for (i, addr, _) in &pools[pool.index()] {
                let r = &mut self.read[*i];
                r.services.insert(name.clone());
                let container = ContainerRef {
                    id: r.container.id.clone(),
                    name: r.container.name.clone(),
                };
                out.servers
                    .insert((name.clone(), pool, addr.clone()), container);
            }
        }
        // The labels of the group's containers, one per server.
        let labels = || {
            group
                .iter()
                .flat_map(|r| r.servers.iter().map(|s| &self.read[s.0].labels))
        };
        let drain_timeout = labels()
            .filter_map(|l| l.drain_timeout.as_ref().map(|d| d.value))
            .max()
            .unwrap_or(DEFAULT_DRAIN_TIMEOUT);
        let rollback = rollback(labels().map(|l| &l.rollback));
        let canary = canary(labels().map(|l| &l.canary));
        let origins = out.origins.entry(name.clone()).or_default();
        for router in &group {
            for (i, label) in &router.defs {
                origins.push(self.read[*i].location(label));
            }
        }
        let lead = &group[lead];
        for alt in &lead.alternatives {
            let (path_prefix, exact) = match &alt.path {
                None => ("/".to_string(), false),
                Some(PathMatch::Prefix(p)) => (p.clone(), false),
                Some(PathMatch::Exact(p)) => (p.clone(), true),
            };
            out.routes.push(RouteConfig {
                host: alt.host.clone(),
                path_prefix,
                exact,
                service: name.clone(),
                priority: Some(lead.priority),
                listeners: lead.listeners,
                middlewares: lead.middlewares.clone(),
            });
        }
        out.services.push(ServiceConfig {
            name,
            active,
            drain_timeout,
            balance: Balance::RoundRobin,
            sticky: None,
            preview: None,
            health: None,
            pools: config_pools,
            rollback,
            canary,
            drain_sse_event: None,
        });
    }

    /// The service name of a group: its `cutover.service` label, else the
    /// rule's first host, else (when another group has that) the host and
    /// path, else the router's name without its pool; `None` (reported)
    /// when every candidate is taken.
    fn name(&mut self, group: &[Router], taken: &BTreeSet<String>) -> Option<String> {
        let first = &group[0];
        let candidates: Vec<String> = match self.explicit_name(group) {
            Some(name) => vec![name],
            None => {
                let alt = first.alternatives.first();
                let host = alt.and_then(|a| a.host.clone());
                let path = alt.and_then(|a| match &a.path {
                    Some(PathMatch::Prefix(p) | PathMatch::Exact(p)) => Some(p.clone()),
                    None => None,
                });
                let with_path = match (&host, path) {
                    (Some(h), Some(p)) => {
                        Some(format!("{h}{}", p.replace('/', "-").trim_end_matches('-')))
                    }
                    _ => None,
                };
                host.into_iter()
                    .chain(with_path)
                    .chain(std::iter::once(server::base_name(&first.name).to_string()))
                    .collect()
            }
        };
        if let Some(name) = candidates.iter().find(|n| !taken.contains(*n)) {
            return Some(name.clone());
        }
        let message = format!(
            "service name {:?} is already taken by routers with another rule: give these containers another name with the label cutover.service; router {} is left out",
            candidates[0], first.name
        );
        let defs: Vec<(usize, String)> = group.iter().flat_map(|r| r.defs.clone()).collect();
        for (i, label) in defs {
            self.issue(i, &label, message.clone());
        }
        None
    }

    /// Which router's priority, entrypoints and middlewares the service's
    /// routes take: the first with a blue server, else the first. Routers
    /// of the group that say otherwise are reported.
    fn lead(
        &mut self,
        group: &[Router],
        pools: &[Vec<(usize, ServerAddr, HealthConfig)>; 2],
    ) -> usize {
        let blue: BTreeSet<usize> = pools[PoolName::Blue.index()].iter().map(|s| s.0).collect();
        let lead = group
            .iter()
            .position(|r| r.servers.iter().any(|s| blue.contains(&s.0)))
            .unwrap_or(0);
        let l = &group[lead];
        for r in group {
            let same = r.explicit_priority == l.explicit_priority
                && r.listeners == l.listeners
                && r.middlewares == l.middlewares;
            if !same {
                let (i, label) = r.settings_at.clone();
                let message = format!(
                    "router {} shares its rule with router {} but not its priority, entrypoints or middlewares: the service's routes follow router {}",
                    r.name, l.name, l.name
                );
                self.issue(i, &label, message);
            }
        }
        lead
    }

    /// The initial active pool: the one whose containers say
    /// `cutover.active=true`, else blue, else green when only green has
    /// servers.
    fn active(&mut self, pools: &[Vec<(usize, ServerAddr, HealthConfig)>; 2]) -> PoolName {
        let mut said: Vec<(PoolName, usize, String)> = Vec::new();
        for pool in PoolName::ALL {
            for (i, _, _) in &pools[pool.index()] {
                if let Some(active) = &self.read[*i].labels.active {
                    if active.value {
                        said.push((pool, *i, active.label.clone()));
                    }
                }
            }
        }
        let pools_said: BTreeSet<PoolName> = said.iter().map(|s| s.0).collect();
        match pools_said.len() {
            1 => return said[0].0,
            2 => {
                for (_, i, label) in &said {
                    let message = "containers of both pools say cutover.active=true: blue is taken"
                        .to_string();
                    self.issue(*i, label, message);
                }
                return PoolName::Blue;
            }
            _ => {}
        }
        if pools[PoolName::Blue.index()].is_empty() && !pools[PoolName::Green.index()].is_empty() {
            PoolName::Green
        } else {
            PoolName::Blue
        }
    }

    /// One pool's config: its servers and their checks (the first server's
    /// when they differ, which is reported).
    fn pool(&mut self, service: &str, servers: &[(usize, ServerAddr, HealthConfig)]) -> PoolConfig {
        let health = servers.first().map(|s| s.2.clone());
        if let Some(first) = &health {
            for (i, _, h) in servers {
                if h != first {
                    let label = "traefik.http.services.*.loadbalancer.healthcheck";
                    let message = format!(
                        "the servers of one pool of service {service} are checked differently: the pool checks them all as its first server's labels say"
                    );
                    self.issue(*i, label, message);
                }
            }
        }
        PoolConfig {
            servers: servers.iter().map(|s| s.1.clone()).collect(),
            health,
        }
    }
}

/// The service's automated-rollback settings from its containers'
/// `cutover.rollback.*` labels (the first container setting a field
/// wins), the file's defaults for the fields none sets; none when no
/// container sets any.
fn rollback<'a>(
    labels: impl Iterator<Item = &'a crate::provider::docker::labels::RollbackLabels>,
) -> Option<crate::config::RollbackConfig> {
    let mut any = false;
    let mut r = crate::provider::docker::labels::RollbackLabels::default();
    for l in labels {
        any |= *l != Default::default();
        r.window = r.window.or(l.window);
        r.cooldown = r.cooldown.or(l.cooldown);
        r.max_per_hour = r.max_per_hour.or(l.max_per_hour);
        r.judge.or(&l.judge);
    }
    let judge = r.judge;
    any.then(|| crate::config::RollbackConfig {
        max_error_rate: judge.max_error_rate.unwrap_or(DOCKER_MAX_ERROR_RATE),
        max_p99: judge.max_p99.unwrap_or(DOCKER_MAX_P99),
        window: r.window.unwrap_or(DOCKER_WINDOW),
        min_requests: judge
            .min_requests
            .unwrap_or(crate::config::DEFAULT_MIN_REQUESTS),
        cooldown: r.cooldown.unwrap_or(DOCKER_COOLDOWN),
        max_per_hour: r.max_per_hour.unwrap_or(DOCKER_MAX_PER_HOUR),
        max_stream_abort_rate: judge.max_stream_abort_rate,
        max_ttfb_p99: judge.max_ttfb_p99,
    })
}

/// The service's canary stages from its containers' `cutover.canary.*`
/// labels (the first container setting a field wins): one stage per
/// weight, each holding `hold` and judged by the same thresholds; none
/// without `cutover.canary.weights`.
fn canary<'a>(
    labels: impl Iterator<Item = &'a crate::provider::docker::labels::CanaryLabels>,
) -> Vec<crate::config::CanaryStage> {
    let mut c = crate::provider::docker::labels::CanaryLabels::default();
    for l in labels {
        c.weights = c.weights.or_else(|| l.weights.clone());
        c.hold = c.hold.or(l.hold);
        c.judge.or(&l.judge);
    }
    let judge = &c.judge;
    c.weights
        .unwrap_or_default()
        .into_iter()
        .map(|weight| crate::config::CanaryStage {
            weight,
            hold: c.hold.unwrap_or(DOCKER_CANARY_HOLD),
            max_error_rate: judge.max_error_rate.unwrap_or(DOCKER_MAX_ERROR_RATE),
            max_p99: judge.max_p99.unwrap_or(DOCKER_MAX_P99),
            min_requests: judge
                .min_requests
                .unwrap_or(crate::config::DEFAULT_MIN_REQUESTS),
            max_stream_abort_rate: judge.max_stream_abort_rate,
            max_ttfb_p99: judge.max_ttfb_p99,
        })
        .collect()
}

/// `cutover.canary.hold` when the weights are set without it.
const DOCKER_CANARY_HOLD: std::time::Duration = std::time::Duration::from_secs(60);
/// `cutover.rollback.max_error_rate` (and `cutover.canary.max_error_rate`)
/// when only other fields are set.
const DOCKER_MAX_ERROR_RATE: f64 = 0.05;
/// `cutover.rollback.max_p99` (and `cutover.canary.max_p99`) when only
/// other fields are set.
const DOCKER_MAX_P99: std::time::Duration = std::time::Duration::from_secs(2);
/// `cutover.rollback.window` when only other fields are set.
const DOCKER_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);
/// `cutover.rollback.cooldown` when only other fields are set.
const DOCKER_COOLDOWN: std::time::Duration = std::time::Duration::from_secs(300);
/// `cutover.rollback.max_per_hour` when only other fields are set.
const DOCKER_MAX_PER_HOUR: u32 = 3;
