//! The Docker Engine, through bollard: connect (negotiating the API
//! version, so an older engine is spoken to in its own version), list the
//! running containers as [`Container`]s, follow the containers' events,
//! and find the networks of the container the proxy runs in, if it does.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::models::{
    ContainerSummary, ContainerSummaryStateEnum, EventMessage, PortSummaryTypeEnum,
};
use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use bollard::{Docker, API_DEFAULT_VERSION};
use futures_util::{Stream, StreamExt};

use super::Container;

/// Longest wait for an answer of the engine (the event stream's head
/// included; the stream itself may run forever).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The container events that change what is served.
const EVENTS: [&str; 8] = [
    "start", "restart", "unpause", "kill", "stop", "die", "pause", "destroy",
];

/// Why the engine could not be used.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Connecting, or a request, failed.
    #[error("docker engine at {endpoint}: {source}")]
    Engine {
        /// The endpoint.
        endpoint: String,
        /// bollard's error.
        #[source]
        source: bollard::errors::Error,
    },
    /// The endpoint is not one cutover speaks to.
    #[error("docker endpoint {0:?} is not unix:///path or tcp://host:port")]
    Endpoint(String),
    /// The event stream ended (the engine stopped, or the connection broke).
    #[error("docker engine at {0}: the event stream ended")]
    Ended(String),
}

/// What a container's event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// It started (or was unpaused): it may serve again once checked.
    Started,
    /// It is stopping (`kill` with a stopping signal, `stop`, `die`,
    /// `pause`, `destroy`): it takes no new request from now.
    Stopping,
    /// Nothing that changes what is served by itself.
    Other,
}

/// One container event.
#[derive(Debug, Clone)]
pub struct Event {
    /// The container's id.
    pub id: String,
    /// Its name, when the event says it.
    pub name: Option<String>,
    /// The action (`kill`, `start`, ...).
    pub action: String,
    /// What it means here.
    pub change: Change,
}

/// A connected engine.
pub struct Engine {
    docker: Docker,
    endpoint: String,
}

impl Engine {
    /// Connects to `endpoint` and agrees on an API version.
    ///
    /// # Errors
    ///
    /// [`EngineError`] naming the endpoint.
    pub async fn connect(endpoint: &str) -> Result<Engine, EngineError> {
        let timeout = REQUEST_TIMEOUT.as_secs();
        let docker = if endpoint.starts_with("unix://") {
            Docker::connect_with_unix(endpoint, timeout, API_DEFAULT_VERSION)
        } else if endpoint.starts_with("tcp://") || endpoint.starts_with("http://") {
            Docker::connect_with_http(endpoint, timeout, API_DEFAULT_VERSION)
        } else {
            return Err(EngineError::Endpoint(endpoint.to_string()));
        };
        let wrap = |source| EngineError::Engine {
            endpoint: endpoint.to_string(),
            source,
        };
        let docker = docker
            .map_err(wrap)?
            .negotiate_version()
            .await
            .map_err(wrap)?;
        Ok(Engine {
            docker,
            endpoint: endpoint.to_string(),
        })
    }

    fn error(&self, source: bollard::errors::Error) -> EngineError {
        EngineError::Engine {
            endpoint: self.endpoint.clone(),
            source,
        }
    }

    /// The running containers with every label of `constraints`.
    ///
    /// # Errors
    ///
    /// The engine's.
    pub async fn list(
        &self,
        constraints: &[(String, Option<String>)],
    ) -> Result<Vec<Container>, EngineError> {
        let mut filters = label_filters(constraints);
        filters.insert("status".to_string(), vec!["running".to_string()]);
        let options = ListContainersOptions {
            filters: Some(filters),
            ..ListContainersOptions::default()
        };
        let listed = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.error(e))?;
        let mut out: Vec<Container> = listed.into_iter().filter_map(container).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The events of containers with every label of `constraints`, from
    /// `since` on (so none is lost between a list and the subscription).
    pub fn events(
        &self,
        since: SystemTime,
        constraints: &[(String, Option<String>)],
    ) -> impl Stream<Item = Result<Event, EngineError>> + Send + 'static {
        let mut filters = label_filters(constraints);
        filters.insert("type".to_string(), vec!["container".to_string()]);
        filters.insert(
            "event".to_string(),
            EVENTS.iter().map(ToString::to_string).collect(),
        );
        let since = since.duration_since(UNIX_EPOCH).unwrap_or_default();
        let options = EventsOptions {
            since: Some(format!("{}.{:09}", since.as_secs(), since.subsec_nanos())),
            until: None,
            filters: Some(filters),
        };
        let endpoint = self.endpoint.clone();
        self.docker.events(Some(options)).filter_map(move |item| {
            let out = match item {
                Ok(message) => event(message).map(Ok),
                Err(source) => Some(Err(EngineError::Engine {
                    endpoint: endpoint.clone(),
                    source,
                })),
            };
            std::future::ready(out)
        })
    }

    /// The networks of the container this process runs in; `None` when it
    /// runs on the host (or with the host's network), which reaches every
    /// network.
    pub async fn own_networks(&self) -> Option<BTreeSet<String>> {
        let id = own_container_id()?;
        let info = self.docker.inspect_container(&id, None).await.ok()?;
        let networks: BTreeSet<String> = info.network_settings?.networks?.into_keys().collect();
        if networks.contains("host") {
            return None;
        }
        Some(networks)
    }

    /// The client, for the deploy's operations.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The endpoint, for messages.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

fn label_filters(constraints: &[(String, Option<String>)]) -> HashMap<String, Vec<String>> {
    let labels: Vec<String> = constraints
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => k.clone(),
        })
        .collect();
    let mut filters = HashMap::new();
    if !labels.is_empty() {
        filters.insert("label".to_string(), labels);
    }
    filters
}

/// A listed container, when it is running and has an id.
fn container(summary: ContainerSummary) -> Option<Container> {
    if summary.state != Some(ContainerSummaryStateEnum::RUNNING) {
        return None;
    }
    let id = summary.id?;
    let name = summary
        .names
        .and_then(|n| n.into_iter().next())
        .map_or_else(
            || id.chars().take(12).collect(),
            |n| n.trim_start_matches('/').to_string(),
        );
    let networks = summary
        .network_settings
        .and_then(|s| s.networks)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(net, ep)| {
            let ip: IpAddr = ep.ip_address?.parse().ok()?;
            Some((net, ip))
        })
        .collect::<BTreeMap<_, _>>();
    let mut ports: Vec<u16> = summary
        .ports
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.typ.is_none_or(|t| t == PortSummaryTypeEnum::TCP))
        .map(|p| p.private_port)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    Some(Container {
        id,
        name,
        labels: summary.labels.unwrap_or_default().into_iter().collect(),
        networks,
        ports,
    })
}

/// A container event, when it has an actor.
fn event(message: EventMessage) -> Option<Event> {
    let action = message.action?;
    let actor = message.actor?;
    let id = actor.id?;
    let attributes = actor.attributes.unwrap_or_default();
    let change = change(&action, attributes.get("signal").map(String::as_str));
    Some(Event {
        id,
        name: attributes.get("name").cloned(),
        action,
        change,
    })
}

/// What an action means; `kill` with a signal that asks a process to
/// reload or reopen its logs (HUP, USR1, USR2) stops nothing.
fn change(action: &str, signal: Option<&str>) -> Change {
    match action {
        "start" | "restart" | "unpause" => Change::Started,
        "kill" => {
            let signal = signal.unwrap_or_default().trim_start_matches("SIG");
            match signal {
                "1" | "10" | "12" | "HUP" | "USR1" | "USR2" => Change::Other,
                _ => Change::Stopping,
            }
        }
        "stop" | "die" | "pause" | "destroy" => Change::Stopping,
        _ => Change::Other,
    }
}

/// The id of the container this process runs in, from the bind mounts
/// Docker makes for `/etc/hostname` and `/etc/resolv.conf`.
fn own_container_id() -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|line| {
        let (_, rest) = line.split_once("/containers/")?;
        let id: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
        (id.len() == 64).then_some(id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kill_stops_unless_its_signal_asks_for_a_reload() {
        assert_eq!(change("kill", Some("15")), Change::Stopping);
        assert_eq!(change("kill", Some("9")), Change::Stopping);
        assert_eq!(change("kill", Some("1")), Change::Other);
        assert_eq!(change("kill", Some("SIGUSR1")), Change::Other);
        assert_eq!(change("die", None), Change::Stopping);
        assert_eq!(change("pause", None), Change::Stopping);
        assert_eq!(change("unpause", None), Change::Started);
    }
}
