//! The engine's side of a deploy ([`Containers`]): new containers made from
//! the active ones, and stopping and removing containers, through bollard.
//!
//! A new container carries what the user set on the one it copies and not
//! what came from that one's image: a value equal to the old image's (its
//! environment entries, entrypoint, command, health check, working
//! directory, user, labels, exposed ports and volumes) is left to the new
//! image. Labels of compose (`com.docker.compose.*`) are not carried (the
//! new container is not one of its project's replicas), nor are network
//! aliases (a name would then reach both pools) or published ports (the
//! two pools run side by side). It gets the idle pool's `cutover.pool`
//! label and the deploy's [`DEPLOY_LABEL`].

use std::collections::HashMap;
use std::sync::Arc;

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointSettings, ImageConfig,
    NetworkConnectRequest, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, RemoveContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use futures_util::future::BoxFuture;

use super::engine::Engine;
use crate::control::deploy::{ContainerError, Containers, Spec, DEPLOY_LABEL};

/// Seconds a stopping container has before it is killed.
const STOP_GRACE: i32 = 10;
/// How many times a failed stop is asked for.
const STOP_TRIES: u32 = 3;
/// The pause before a failed stop is asked for again.
const STOP_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// The engine at an endpoint, connected afresh for each operation (a
/// deploy is rare; the provider's own connection may be down and coming
/// back).
#[derive(Debug, Clone)]
pub struct Deployer {
    endpoint: String,
}

impl Deployer {
    /// The engine at `endpoint`.
    pub fn new(endpoint: &str) -> Arc<Deployer> {
        Arc::new(Deployer {
            endpoint: endpoint.to_string(),
        })
    }

    async fn docker(&self) -> Result<Docker, ContainerError> {
        Engine::connect(&self.endpoint)
            .await
            .map(|e| e.docker().clone())
            .map_err(|e| ContainerError(e.to_string()))
    }

    async fn create_all(&self, spec: &Spec) -> Result<Vec<String>, ContainerError> {
        let docker = self.docker().await?;
        let mut created = Vec::new();
        for (i, from) in spec.from.iter().enumerate() {
            match create_one(&docker, from, spec, i).await {
                Ok(id) => created.push(id),
                Err(e) => {
                    remove_all(&docker, &created).await;
                    return Err(e);
                }
            }
        }
        Ok(created)
    }
}

/// Creates, connects and starts the copy of container `from`; its id.
async fn create_one(
    docker: &Docker,
    from: &str,
    spec: &Spec,
    index: usize,
) -> Result<String, ContainerError> {
    let old = docker
        .inspect_container(from, None)
        .await
        .map_err(|e| ContainerError(format!("inspecting container {from}: {e}")))?;
    let old_image = old.image.clone().unwrap_or_default();
    let image_config = docker
        .inspect_image(&old_image)
        .await
        .map_err(|e| {
            ContainerError(format!(
                "inspecting the old image {old_image} (to tell what the user set on {from}): {e}"
            ))
        })?
        .config
        .unwrap_or_default();
    docker
        .inspect_image(&spec.image)
        .await
        .map_err(|e| ContainerError(format!("image {}: {e}", spec.image)))?;
    let (body, extra_networks) = copy(&old, &image_config, spec);
    let name = new_name(&old, spec, index);
    let options = CreateContainerOptions {
        name: Some(name.clone()),
        ..CreateContainerOptions::default()
    };
    let id = docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| ContainerError(format!("creating container {name}: {e}")))?
        .id;
    let started = async {
        for net in &extra_networks {
            let request = NetworkConnectRequest {
                container: id.clone(),
                endpoint_config: Some(EndpointSettings::default()),
            };
            docker
                .connect_network(net, request)
                .await
                .map_err(|e| ContainerError(format!("connecting {name} to network {net}: {e}")))?;
        }
        docker
            .start_container(&id, None)
            .await
            .map_err(|e| ContainerError(format!("starting container {name}: {e}")))
    };
    if let Err(e) = started.await {
        remove_all(docker, std::slice::from_ref(&id)).await;
        return Err(e);
    }
    tracing::info!(container = %name, image = %spec.image, pool = %spec.pool, copied_from = %from, "deploy: container started");
    Ok(id)
}

/// The new container's name: the old one's (without what an earlier
/// deploy added), the deploy's id and its index.
fn new_name(old: &ContainerInspectResponse, spec: &Spec, index: usize) -> String {
    let name = old
        .name
        .as_deref()
        .unwrap_or("cutover")
        .trim_start_matches('/');
    let earlier = old
        .config
        .as_ref()
        .and_then(|c| c.labels.as_ref())
        .and_then(|l| l.get(DEPLOY_LABEL));
    let base = earlier
        .and_then(|id| name.rfind(&format!("-{id}-")).map(|at| &name[..at]))
        .unwrap_or(name);
    format!("{base}-{}-{index}", spec.deploy)
}

/// The create body of the copy of `old` (whose image's config is
/// `image`), and the networks to connect it to besides its first.
fn copy(
    old: &ContainerInspectResponse,
    image: &ImageConfig,
    spec: &Spec,
) -> (ContainerCreateBody, Vec<String>) {
    let config = old.config.clone().unwrap_or_default();
    let set = |value: Option<Vec<String>>, from_image: &Option<Vec<String>>| {
        value.filter(|v| Some(v) != from_image.as_ref())
    };
    let env: Vec<String> = config
        .env
        .unwrap_or_default()
        .into_iter()
        .filter(|e| !image.env.as_ref().is_some_and(|i| i.contains(e)))
        .collect();
    let minus = |value: Option<Vec<String>>, from_image: &Option<Vec<String>>| {
        let left: Vec<String> = value
            .unwrap_or_default()
            .into_iter()
            .filter(|v| !from_image.as_ref().is_some_and(|i| i.contains(v)))
            .collect();
        (!left.is_empty()).then_some(left)
    };
    let mut labels: HashMap<String, String> = config
        .labels
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, v)| {
            image.labels.as_ref().and_then(|l| l.get(k)) != Some(v)
                && !k.starts_with("com.docker.compose.")
                && !matches!(k.as_str(), "cutover.pool" | "cutover.active" | DEPLOY_LABEL)
        })
        .collect();
    labels.insert("cutover.pool".into(), spec.pool.as_str().into());
    labels.insert(DEPLOY_LABEL.into(), spec.deploy.clone());
    let mut host = old.host_config.clone().unwrap_or_default();
    host.port_bindings = None;
    host.publish_all_ports = None;
    let networks: Vec<String> = old
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .map(|n| {
            let mut names: Vec<String> = n.keys().cloned().collect();
            names.sort();
            names
        })
        .unwrap_or_default();
    let first = host
        .network_mode
        .clone()
        .filter(|m| networks.contains(m))
        .or_else(|| networks.first().cloned());
    let extra: Vec<String> = networks
        .iter()
        .filter(|n| Some(*n) != first.as_ref())
        .cloned()
        .collect();
    let networking_config = first.as_ref().map(|net| NetworkingConfig {
        endpoints_config: Some(HashMap::from([(net.clone(), EndpointSettings::default())])),
    });
    if let Some(net) = first {
        host.network_mode = Some(net);
    }
    let healthcheck = config
        .healthcheck
        .filter(|h| Some(h) != image.healthcheck.as_ref());
    let text = |value: Option<String>, from_image: &Option<String>| {
        value.filter(|v| !v.is_empty() && Some(v) != from_image.as_ref())
    };
    let body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        env: (!env.is_empty()).then_some(env),
        cmd: set(config.cmd, &image.cmd),
        entrypoint: set(config.entrypoint, &image.entrypoint),
        healthcheck,
        working_dir: text(config.working_dir, &image.working_dir),
        user: text(config.user, &image.user),
        stop_signal: text(config.stop_signal, &image.stop_signal),
        exposed_ports: minus(config.exposed_ports, &image.exposed_ports),
        volumes: minus(config.volumes, &image.volumes),
        labels: Some(labels),
        domainname: config.domainname,
        tty: config.tty,
        open_stdin: config.open_stdin,
        stdin_once: config.stdin_once,
        stop_timeout: config.stop_timeout,
        host_config: Some(host),
        networking_config,
        ..ContainerCreateBody::default()
    };
    (body, extra)
}

/// Removes `ids` (force: running ones too), logging what fails.
async fn remove_all(docker: &Docker, ids: &[String]) {
    for id in ids {
        if let Err(e) = remove_one(docker, id).await {
            tracing::warn!(container = %id, error = %e, "deploy: container not removed");
        }
    }
}

async fn remove_one(docker: &Docker, id: &str) -> Result<(), ContainerError> {
    let options = RemoveContainerOptions {
        force: true,
        ..RemoveContainerOptions::default()
    };
    match docker.remove_container(id, Some(options)).await {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(ContainerError(format!("removing container {id}: {e}"))),
    }
}

impl Containers for Deployer {
    fn create<'a>(&'a self, spec: &'a Spec) -> BoxFuture<'a, Result<Vec<String>, ContainerError>> {
        Box::pin(self.create_all(spec))
    }

    fn stop(&self, ids: Vec<String>) -> BoxFuture<'_, Result<(), ContainerError>> {
        Box::pin(async move {
            let docker = self.docker().await?;
            let options = StopContainerOptions {
                t: Some(STOP_GRACE),
                ..StopContainerOptions::default()
            };
            let stops = ids.iter().map(|id| {
                let (docker, options) = (docker.clone(), options.clone());
                async move {
                    // A loaded engine can fail a stop it would do a moment
                    // later ("did not receive an exit event"): tried again.
                    let mut tries = 0;
                    loop {
                        tries += 1;
                        match docker.stop_container(id, Some(options.clone())).await {
                            // Gone, or stopped already.
                            Ok(())
                            | Err(bollard::errors::Error::DockerResponseServerError {
                                status_code: 304 | 404,
                                ..
                            }) => return Ok(()),
                            Err(e) if tries < STOP_TRIES => {
                                tracing::debug!(container = %id, error = %e, "stop failed: trying again");
                                tokio::time::sleep(STOP_RETRY).await;
                            }
                            Err(e) => {
                                return Err(ContainerError(format!(
                                    "stopping container {id} ({tries} tries): {e}"
                                )))
                            }
                        }
                    }
                }
            });
            futures_util::future::join_all(stops)
                .await
                .into_iter()
                .collect()
        })
    }

    fn remove(&self, ids: Vec<String>) -> BoxFuture<'_, Result<(), ContainerError>> {
        Box::pin(async move {
            if ids.is_empty() {
                return Ok(());
            }
            let docker = self.docker().await?;
            for id in &ids {
                remove_one(&docker, id).await?;
            }
            Ok(())
        })
    }

    fn labelled(&self, deploy: String) -> BoxFuture<'_, Result<Vec<String>, ContainerError>> {
        Box::pin(async move {
            let docker = self.docker().await?;
            let filters = HashMap::from([(
                "label".to_string(),
                vec![format!("{DEPLOY_LABEL}={deploy}")],
            )]);
            let options = ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..ListContainersOptions::default()
            };
            let listed = docker
                .list_containers(Some(options))
                .await
                .map_err(|e| ContainerError(format!("listing the deploy's containers: {e}")))?;
            Ok(listed.into_iter().filter_map(|c| c.id).collect())
        })
    }

    fn exited(&self, ids: Vec<String>) -> BoxFuture<'_, Result<Vec<String>, ContainerError>> {
        Box::pin(async move {
            let docker = self.docker().await?;
            let mut out = Vec::new();
            for id in &ids {
                let found = docker
                    .inspect_container(id, None)
                    .await
                    .map_err(|e| ContainerError(format!("inspecting container {id}: {e}")))?;
                let state = found.state.unwrap_or_default();
                if state.running != Some(true) {
                    let name = found.name.unwrap_or_default();
                    out.push(format!(
                        "container {} is not running ({}, exit code {})",
                        name.trim_start_matches('/'),
                        state
                            .status
                            .map_or_else(|| "?".to_string(), |s| s.to_string()),
                        state.exit_code.unwrap_or_default()
                    ));
                }
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PoolName;
    use bollard::models::{ContainerConfig, HostConfig, NetworkSettings, PortMap, RestartPolicy};

    fn spec() -> Spec {
        Spec {
            from: vec!["old".into()],
            image: "app:2".into(),
            pool: PoolName::Green,
            deploy: "d1".into(),
        }
    }

    fn strings(v: &[&str]) -> Option<Vec<String>> {
        Some(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn the_copy_carries_what_the_user_set_and_leaves_the_old_image_s_to_the_new_one() {
        let image = ImageConfig {
            env: strings(&["PATH=/bin", "APP_VERSION=1"]),
            cmd: strings(&["serve"]),
            entrypoint: strings(&["/app"]),
            working_dir: Some("/srv".into()),
            user: Some("app".into()),
            labels: Some(HashMap::from([("org.image".into(), "1".into())])),
            ..ImageConfig::default()
        };
        let old = ContainerInspectResponse {
            name: Some("/shop-blue".into()),
            config: Some(ContainerConfig {
                env: strings(&["PATH=/bin", "APP_VERSION=1", "DB=postgres://db"]),
                cmd: strings(&["serve", "--port", "5000"]),
                entrypoint: strings(&["/app"]),
                working_dir: Some("/srv".into()),
                user: Some("app".into()),
                labels: Some(HashMap::from([
                    ("org.image".into(), "1".into()),
                    ("traefik.enable".into(), "true".into()),
                    ("cutover.pool".into(), "blue".into()),
                    ("cutover.active".into(), "true".into()),
                    ("com.docker.compose.service".into(), "blue".into()),
                ])),
                ..ContainerConfig::default()
            }),
            host_config: Some(HostConfig {
                binds: strings(&["/data:/data"]),
                restart_policy: Some(RestartPolicy::default()),
                network_mode: Some("front".into()),
                port_bindings: Some(PortMap::new()),
                ..HostConfig::default()
            }),
            network_settings: Some(NetworkSettings {
                networks: Some(HashMap::from([
                    ("front".into(), EndpointSettings::default()),
                    ("back".into(), EndpointSettings::default()),
                ])),
                ..NetworkSettings::default()
            }),
            ..ContainerInspectResponse::default()
        };
        let (body, extra) = copy(&old, &image, &spec());
        assert_eq!(body.image.as_deref(), Some("app:2"));
        assert_eq!(body.env, strings(&["DB=postgres://db"]));
        assert_eq!(body.cmd, strings(&["serve", "--port", "5000"]));
        assert_eq!(body.entrypoint, None, "the old image's entrypoint");
        assert_eq!(body.working_dir, None);
        assert_eq!(body.user, None);
        let labels = body.labels.unwrap();
        assert_eq!(
            labels.get("traefik.enable").map(String::as_str),
            Some("true")
        );
        assert_eq!(
            labels.get("cutover.pool").map(String::as_str),
            Some("green")
        );
        assert_eq!(labels.get(DEPLOY_LABEL).map(String::as_str), Some("d1"));
        assert!(!labels.contains_key("org.image"));
        assert!(!labels.contains_key("cutover.active"));
        assert!(!labels.contains_key("com.docker.compose.service"));
        let host = body.host_config.unwrap();
        assert_eq!(host.binds, strings(&["/data:/data"]));
        assert!(host.restart_policy.is_some());
        assert_eq!(host.port_bindings, None);
        assert_eq!(host.network_mode.as_deref(), Some("front"));
        assert_eq!(extra, vec!["back".to_string()]);
    }

    #[test]
    fn a_copy_of_a_copy_is_named_from_the_first_name() {
        let old = ContainerInspectResponse {
            name: Some("/shop-a1b2-0".into()),
            config: Some(ContainerConfig {
                labels: Some(HashMap::from([(DEPLOY_LABEL.into(), "a1b2".into())])),
                ..ContainerConfig::default()
            }),
            ..ContainerInspectResponse::default()
        };
        assert_eq!(new_name(&old, &spec(), 1), "shop-d1-1");
    }
}
