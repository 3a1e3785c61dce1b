//! `[providers]`: the Docker provider's endpoint, filters and entrypoints.

use std::collections::BTreeMap;

use toml::Spanned;

use super::{at, Checker};
use crate::config::providers::default_entrypoints;
use crate::config::raw::{Located, RawDocker, RawProviders};
use crate::config::{DockerConfig, Listener, Providers, DEFAULT_DOCKER_ENDPOINT};

impl Checker<'_> {
    pub(super) fn providers(&mut self, raw: Option<&RawProviders>) -> Providers {
        let docker = raw
            .and_then(|p| p.docker.as_ref())
            .map(|d| self.docker(&d.value));
        Providers { docker }
    }

    fn docker(&mut self, raw: &RawDocker) -> DockerConfig {
        let key = |field: &str| format!("providers.docker.{field}");
        let endpoint = match &raw.endpoint {
            Some(v) => self.endpoint(v, &key("endpoint")),
            None => DEFAULT_DOCKER_ENDPOINT.to_string(),
        };
        let network = raw.network.as_ref().and_then(|v| {
            if v.get_ref().is_empty() {
                None
            } else {
                Some(v.get_ref().clone())
            }
        });
        let constraints = raw
            .constraints
            .as_ref()
            .map(|list| {
                list.get_ref()
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| {
                        self.constraint(c, &format!("{}[{i}]", key("constraints")))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let entrypoints = match &raw.entrypoints {
            Some(table) => self.entrypoints(table, &key("entrypoints")),
            None => default_entrypoints(),
        };
        DockerConfig {
            endpoint,
            exposed_by_default: raw.exposed_by_default.as_ref().is_none_or(|v| *v.get_ref()),
            network,
            constraints,
            entrypoints,
        }
    }

    /// `unix:///path` or `tcp://host:port` / `http://host:port`.
    fn endpoint(&mut self, value: &Spanned<String>, key: &str) -> String {
        let text = value.get_ref();
        let ok = match text.split_once("://") {
            Some(("unix", path)) => path.starts_with('/'),
            Some(("tcp" | "http", addr)) => addr
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok()),
            _ => false,
        };
        if !ok {
            let message = format!(
                "{text:?} is not a Docker endpoint (expected \"unix:///var/run/docker.sock\" or \"tcp://host:2375\"; TLS endpoints are not supported)"
            );
            self.issue(at(value), key, message);
        }
        text.clone()
    }

    fn constraint(
        &mut self,
        value: &Spanned<String>,
        key: &str,
    ) -> Option<(String, Option<String>)> {
        let text = value.get_ref();
        let (label, wanted) = match text.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (text.as_str(), None),
        };
        if label.is_empty() || label.chars().any(char::is_whitespace) {
            let message = format!(
                "{text:?} is not a label constraint (expected \"key\" or \"key=value\", e.g. \"com.docker.compose.project=shop\")"
            );
            self.issue(at(value), key, message);
            return None;
        }
        Some((label.to_string(), wanted))
    }

    fn entrypoints(
        &mut self,
        table: &Located<BTreeMap<String, Spanned<String>>>,
        key: &str,
    ) -> BTreeMap<String, Listener> {
        let mut out = BTreeMap::new();
        for (name, value) in &table.value {
            match Listener::parse(value.get_ref()) {
                Some(listener) => {
                    out.insert(name.clone(), listener);
                }
                None => {
                    let message = format!(
                        "{:?} is not a listener (expected \"http\" or \"https\")",
                        value.get_ref()
                    );
                    self.issue(at(value), &format!("{key}.{name}"), message);
                }
            }
        }
        out
    }
}
