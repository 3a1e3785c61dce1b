//! `[cluster]`: the etcd endpoints, the key prefix, this replica's name and
//! its lease.

use std::time::Duration;

use super::{at, Checker};
use crate::config::raw::{Located, RawCluster};
use crate::config::{ClusterConfig, DEFAULT_CLUSTER_PREFIX, DEFAULT_LEASE_TTL};

/// The shortest `cluster.lease_ttl`: etcd itself refuses leases much
/// shorter than its election timeout, and a replica keeps its lease alive
/// three times per time to live.
const MIN_LEASE_TTL: Duration = Duration::from_secs(2);

impl Checker<'_> {
    pub(super) fn cluster(&mut self, table: &Located<RawCluster>) -> ClusterConfig {
        let raw = &table.value;
        let mut etcd = Vec::new();
        let example = "[\"http://127.0.0.1:2379\"]";
        if let Some(list) = self.required(raw.etcd.as_ref(), table.start(), "cluster.etcd", example)
        {
            if list.get_ref().is_empty() {
                let message =
                    format!("[] is empty (expected at least one endpoint, e.g. {example})");
                self.issue(at(list), "cluster.etcd", message);
            }
            for endpoint in list.get_ref() {
                match endpoint_problem(endpoint.get_ref()) {
                    None => etcd.push(endpoint.get_ref().clone()),
                    Some(why) => self.issue(at(endpoint), "cluster.etcd", why),
                }
            }
        }
        let prefix = match &raw.prefix {
            Some(v) => {
                let text = v.get_ref().trim_end_matches('/');
                if !text.starts_with('/') || text.is_empty() {
                    let message = format!(
                        "{:?} is not a key prefix (expected a path such as \"/cutover\")",
                        v.get_ref()
                    );
                    self.issue(at(v), "cluster.prefix", message);
                }
                text.to_string()
            }
            None => DEFAULT_CLUSTER_PREFIX.to_string(),
        };
        let name = match &raw.name {
            Some(v) => {
                let text = v.get_ref();
                if text.is_empty() || text.contains(['/', ' ']) {
                    let message = format!(
                        "{text:?} is not a replica name (expected a word without '/' or spaces, such as \"edge-1\")"
                    );
                    self.issue(at(v), "cluster.name", message);
                }
                text.clone()
            }
            None => host_name(),
        };
        let lease_ttl = match &raw.lease_ttl {
            Some(v) => match self.duration(v, "cluster.lease_ttl", false) {
                Some(d) if d >= MIN_LEASE_TTL && d.subsec_nanos() == 0 => d,
                Some(_) => {
                    let message = format!(
                        "{:?} is not a lease time to live (expected whole seconds, at least 2s)",
                        v.get_ref()
                    );
                    self.issue(at(v), "cluster.lease_ttl", message);
                    DEFAULT_LEASE_TTL
                }
                None => DEFAULT_LEASE_TTL,
            },
            None => DEFAULT_LEASE_TTL,
        };
        ClusterConfig {
            etcd,
            prefix,
            name,
            lease_ttl,
        }
    }
}

/// Why `text` cannot be an etcd endpoint, if it cannot.
fn endpoint_problem(text: &str) -> Option<String> {
    let expected = "expected http://HOST:PORT, e.g. \"http://127.0.0.1:2379\"";
    let Some(rest) = text.strip_prefix("http://") else {
        return Some(format!(
            "{text:?} is not an etcd endpoint ({expected}; https is not supported)"
        ));
    };
    let hostport = rest.trim_end_matches('/');
    let valid = hostport
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    (!valid || hostport.contains('/'))
        .then(|| format!("{text:?} is not an etcd endpoint ({expected})"))
}

/// The host name (the default replica name); `cutover` when it cannot be
/// read.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "cutover".to_string())
}

#[cfg(test)]
mod tests {
    use super::endpoint_problem;

    #[test]
    fn endpoints_are_plain_http_host_and_port() {
        assert_eq!(endpoint_problem("http://127.0.0.1:2379"), None);
        assert_eq!(endpoint_problem("http://etcd-1:2379/"), None);
        for bad in [
            "127.0.0.1:2379",
            "https://etcd:2379",
            "http://etcd",
            "http://:2379",
            "http://e:2379/x",
        ] {
            assert!(endpoint_problem(bad).is_some(), "{bad}");
        }
    }
}
