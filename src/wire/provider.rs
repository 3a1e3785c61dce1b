//! What status shows of a provider: the Docker provider's connection to
//! the engine and, per container it read, the services it serves, the
//! labels it ignored and what is wrong with its labels.

use serde::{Deserialize, Serialize};

/// The Docker provider (`status.docker`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerStatus {
    /// The engine's endpoint.
    pub endpoint: String,
    /// Whether the engine answers now (`cutover_provider_up`).
    pub connected: bool,
    /// Why it does not, when it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The containers with `traefik.*` or `cutover.*` labels, by name.
    #[serde(default)]
    pub containers: Vec<ContainerStatus>,
}

/// One container the provider read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    /// Its name (without the leading `/`).
    pub name: String,
    /// Its id, shortened to 12 characters as `docker ps` shows it.
    pub id: String,
    /// The cutover services it is a server of.
    #[serde(default)]
    pub services: Vec<String>,
    /// Its `traefik.*` (and `cutover.*`) labels that cutover does not read.
    #[serde(default)]
    pub ignored_labels: Vec<String>,
    /// What is wrong with its labels; what they would route is left out.
    #[serde(default)]
    pub issues: Vec<LabelIssue>,
}

/// One problem with a container's label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelIssue {
    /// The label's key.
    pub label: String,
    /// What is wrong and what was expected.
    pub message: String,
}
