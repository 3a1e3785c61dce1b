//! One container as a server of one Traefik service (pure): the address
//! the proxy reaches it on, the port, how its health is checked, and the
//! pool it belongs to.
//!
//! The pool is the container's `cutover.pool` label, else the first of the
//! router's, the Traefik service's and the compose service's names that
//! is or ends in `blue` or `green` (so `blue`, `agent-blue` and `AgentGreen`
//! all say it).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::num::NonZeroU32;

use super::labels::{Labels, ServiceLabels};
use super::Container;
use crate::config::{
    CheckKind, DockerConfig, HealthConfig, PoolName, ServerAddr, DEFAULT_HEALTH_INTERVAL,
    DEFAULT_HEALTH_TIMEOUT, DEFAULT_UNHEALTHY_THRESHOLD,
};

/// The compose service label.
pub(super) const COMPOSE_SERVICE: &str = "com.docker.compose.service";

/// A problem with a label of a container: the label and what is wrong.
pub(super) type LabelProblem = (String, String);

/// The address the proxy reaches `container` on: the network its
/// `traefik.docker.network` label names, else the configured `network`,
/// else the one it shares with the proxy (`proxy_networks`; `None`: the
/// proxy is on the host and reaches every network), the first by name when
/// several are.
pub(super) fn address(
    container: &Container,
    labels: &Labels,
    config: &DockerConfig,
    proxy_networks: Option<&BTreeSet<String>>,
) -> Result<IpAddr, LabelProblem> {
    let on = |net: &str| container.networks.get(net).copied();
    if let Some(wanted) = &labels.network {
        return on(&wanted.value).ok_or_else(|| {
            let message = format!(
                "the container is not on network {:?} (it is on {})",
                wanted.value,
                names(container.networks.keys())
            );
            (wanted.label.clone(), message)
        });
    }
    let reachable = |net: &&String| proxy_networks.is_none_or(|p| p.contains(*net));
    if let Some(ip) = config
        .network
        .as_deref()
        .filter(|n| reachable(&&n.to_string()))
        .and_then(on)
    {
        return Ok(ip);
    }
    if let Some((_, ip)) = container.networks.iter().find(|(net, _)| reachable(net)) {
        return Ok(*ip);
    }
    let message = match proxy_networks {
        _ if container.networks.is_empty() => {
            "the container has no address on any network (network_mode host or none?): cutover cannot reach it".to_string()
        }
        Some(proxy) => format!(
            "the container is on {} and the proxy on {}: no network they share (put them on one, or name it with this label)",
            names(container.networks.keys()),
            names(proxy.iter())
        ),
        None => "no network of the container can be reached".to_string(),
    };
    Err(("traefik.docker.network".to_string(), message))
}

fn names<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let list: Vec<&String> = names.collect();
    if list.is_empty() {
        "no network".to_string()
    } else {
        format!("{list:?}")
    }
}

/// The server `container` is for Traefik service `service` (its labels
/// there, if any): the address and port, and how it is checked.
pub(super) fn server(
    container: &Container,
    ip: IpAddr,
    service: &str,
    labels: Option<&ServiceLabels>,
) -> Result<(ServerAddr, HealthConfig), LabelProblem> {
    if let Some(bad) = labels.and_then(|l| l.bad.first()) {
        let message =
            format!("service {service} has a label that cannot be read: this server is left out");
        return Err((bad.clone(), message));
    }
    let port_label = format!("traefik.http.services.{service}.loadbalancer.server.port");
    let port = match labels.and_then(|l| l.port.as_ref()) {
        Some(port) => port.value,
        None => match container.ports.as_slice() {
            [only] => *only,
            [] => {
                let message = "the container exposes no port: name one with this label".to_string();
                return Err((port_label, message));
            }
            several => {
                let message = format!(
                    "the container exposes several ports ({several:?}): name one with this label"
                );
                return Err((port_label, message));
            }
        },
    };
    if let Some(scheme) = labels.and_then(|l| l.scheme.as_ref()) {
        if scheme.value != "http" {
            let message = format!(
                "scheme {:?} is not served: cutover speaks plain HTTP/1.1 to upstreams (expected http)",
                scheme.value
            );
            return Err((scheme.label.clone(), message));
        }
    }
    let addr = ServerAddr {
        host: ip.to_string(),
        port,
    };
    Ok((addr, health(labels)))
}

/// An HTTP check when the service has a health-check path, else a TCP
/// connect; cutover's interval and timeout unless the labels set them. A
/// server is healthy after its first passing check.
fn health(labels: Option<&ServiceLabels>) -> HealthConfig {
    let path = labels.and_then(|l| l.health_path.as_ref());
    HealthConfig {
        kind: if path.is_some() {
            CheckKind::Http
        } else {
            CheckKind::Tcp
        },
        path: path.map_or_else(|| "/".to_string(), |p| p.value.clone()),
        interval: labels
            .and_then(|l| l.health_interval.as_ref())
            .map_or(DEFAULT_HEALTH_INTERVAL, |d| d.value),
        timeout: labels
            .and_then(|l| l.health_timeout.as_ref())
            .map_or(DEFAULT_HEALTH_TIMEOUT, |d| d.value),
        healthy_threshold: NonZeroU32::MIN,
        unhealthy_threshold: NonZeroU32::new(DEFAULT_UNHEALTHY_THRESHOLD)
            .unwrap_or(NonZeroU32::MIN),
    }
}

/// The pool of `container` as a server of `router`'s Traefik `service`:
/// its `cutover.pool` label, else the first name that says it.
pub(super) fn pool(
    container: &Container,
    labels: &Labels,
    router: &str,
    service: &str,
) -> Option<PoolName> {
    if let Some(pool) = &labels.pool {
        return Some(pool.value);
    }
    let compose = container.labels.get(COMPOSE_SERVICE).map(String::as_str);
    [Some(router), Some(service), compose]
        .into_iter()
        .flatten()
        .find_map(pool_of_name)
}

/// `blue` or `green` when `name` is or ends in it (any case).
pub(super) fn pool_of_name(name: &str) -> Option<PoolName> {
    let lower = name.to_ascii_lowercase();
    PoolName::ALL
        .into_iter()
        .find(|p| lower.ends_with(p.as_str()))
}

/// `name` without a trailing pool name and the `-`, `_` or `.` before it
/// (`agent-blue` → `agent`); `name` itself when nothing would be left.
pub(super) fn base_name(name: &str) -> &str {
    let Some(pool) = pool_of_name(name) else {
        return name;
    };
    let stem = &name[..name.len() - pool.as_str().len()];
    let stem = stem.trim_end_matches(['-', '_', '.']);
    if stem.is_empty() {
        name
    } else {
        stem
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn container(networks: &[(&str, [u8; 4])], ports: &[u16]) -> Container {
        Container {
            id: "0123456789abcdef".into(),
            name: "c".into(),
            labels: BTreeMap::new(),
            networks: networks
                .iter()
                .map(|(n, ip)| (n.to_string(), IpAddr::from(*ip)))
                .collect(),
            ports: ports.to_vec(),
        }
    }

    #[test]
    fn names_say_the_pool_when_they_are_or_end_in_it() {
        assert_eq!(pool_of_name("blue"), Some(PoolName::Blue));
        assert_eq!(pool_of_name("agent-Green"), Some(PoolName::Green));
        assert_eq!(pool_of_name("AgentBlue"), Some(PoolName::Blue));
        assert_eq!(pool_of_name("blueprint"), None);
        assert_eq!(base_name("agent-blue"), "agent");
        assert_eq!(base_name("green"), "green");
        assert_eq!(base_name("api"), "api");
    }

    #[test]
    fn the_address_is_on_a_network_the_proxy_shares() {
        let c = container(&[("a", [10, 0, 0, 2]), ("b", [10, 1, 0, 2])], &[80]);
        let labels = Labels::default();
        let config = DockerConfig::default();
        let shared: BTreeSet<String> = ["b".to_string()].into();
        assert_eq!(
            address(&c, &labels, &config, Some(&shared)),
            Ok(IpAddr::from([10, 1, 0, 2]))
        );
        assert_eq!(
            address(&c, &labels, &config, None),
            Ok(IpAddr::from([10, 0, 0, 2]))
        );
        let elsewhere: BTreeSet<String> = ["z".to_string()].into();
        let (label, message) = address(&c, &labels, &config, Some(&elsewhere)).unwrap_err();
        assert_eq!(label, "traefik.docker.network");
        assert!(message.contains("no network they share"), "{message}");
    }

    #[test]
    fn the_configured_network_is_preferred() {
        let c = container(&[("a", [10, 0, 0, 2]), ("b", [10, 1, 0, 2])], &[80]);
        let config = DockerConfig {
            network: Some("b".into()),
            ..DockerConfig::default()
        };
        assert_eq!(
            address(&c, &Labels::default(), &config, None),
            Ok(IpAddr::from([10, 1, 0, 2]))
        );
    }

    #[test]
    fn the_port_is_the_label_else_the_only_exposed_one() {
        let ip = IpAddr::from([10, 0, 0, 2]);
        let (addr, health) = server(&container(&[], &[5000]), ip, "s", None).unwrap();
        assert_eq!(addr.to_string(), "10.0.0.2:5000");
        assert_eq!(health.kind, CheckKind::Tcp);
        let (label, message) = server(&container(&[], &[80, 443]), ip, "s", None).unwrap_err();
        assert_eq!(label, "traefik.http.services.s.loadbalancer.server.port");
        assert!(message.contains("several ports"), "{message}");
    }
}
