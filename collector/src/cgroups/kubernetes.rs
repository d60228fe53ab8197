//! Pod namespace, pod name and container name from the Kubernetes API, for the pod UIDs and
//! container IDs the cgroup paths give. Only this node's pods are watched (field selector on
//! `spec.nodeName`), kept in a reflector cache without their managed fields, annotations and
//! spec; a scrape reads the cache and never waits on the API.
use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::{
    Api, Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{
        WatchStreamExt as _,
        reflector::{self, Store},
        watcher,
    },
};

use super::identity::Identity;

/// What the API adds to a cgroup's identity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodMetadata {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    /// From the container ID's scheme (`containerd://…`), for paths that do not say.
    pub container_runtime: String,
}

/// `--collector.ebpf.cgroup.kubernetes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// On when running in a cluster or given a kubeconfig.
    Auto,
    On,
    Off,
}

impl Mode {
    pub fn from_flag(value: &str) -> anyhow::Result<Self> {
        match value {
            "auto" => Ok(Self::Auto),
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            other => anyhow::bail!(
                "--collector.ebpf.cgroup.kubernetes={other}: expected auto, on or off"
            ),
        }
    }
}

/// The watched pods of this node.
pub struct Pods {
    store: Store<Pod>,
    /// Ends the watch when the collector is dropped.
    _watch: tokio::task::JoinHandle<()>,
}

impl Pods {
    /// Starts watching per the flags. Must be called within the tokio runtime.
    pub fn from_flags(
        mode: Mode,
        kubeconfig: Option<&str>,
        node_name: Option<&str>,
    ) -> anyhow::Result<Option<Self>> {
        let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
        let enabled = match mode {
            Mode::Auto => in_cluster || kubeconfig.is_some(),
            Mode::On => true,
            Mode::Off => false,
        };
        if !enabled {
            return Ok(None);
        }
        let node = match node_name {
            Some(name) => name.to_owned(),
            None => default_node_name()?,
        };
        let source = match kubeconfig {
            Some(path) => ConfigSource::Kubeconfig(Box::new(
                Kubeconfig::read_from(Path::new(path))
                    .with_context(|| format!("reading kubeconfig {path}"))?,
            )),
            None => match Config::incluster() {
                Ok(config) => ConfigSource::InCluster(Box::new(config)),
                // `auto` in a pod without a service account token: the paths still say which
                // pod and container, only the names are missing.
                Err(e) if mode == Mode::Auto => {
                    tracing::warn!(
                        err = %e,
                        "no in-cluster Kubernetes configuration: pod and container names unavailable"
                    );
                    return Ok(None);
                }
                Err(e) => {
                    return Err(e).context(
                        "no in-cluster Kubernetes configuration (service account token and \
                         KUBERNETES_SERVICE_HOST); pass --collector.ebpf.cgroup.kubeconfig or \
                         --collector.ebpf.cgroup.kubernetes=off",
                    );
                }
            },
        };
        tracing::info!(node = %node, "watching this node's pods in the Kubernetes API");
        let (store, writer) = reflector::store();
        let watch = tokio::spawn(async move {
            let mut retry_in = Duration::from_secs(1);
            let client = loop {
                match source.client().await {
                    Ok(client) => break client,
                    Err(e) => {
                        tracing::warn!(
                            err = format!("{e:#}"),
                            retry_in = ?retry_in,
                            "Kubernetes API client: pod names unavailable until it works"
                        );
                        tokio::time::sleep(retry_in).await;
                        retry_in = (retry_in * 2).min(Duration::from_secs(300));
                    }
                }
            };
            let selector = format!("spec.nodeName={node}");
            let pods = watcher(
                Api::<Pod>::all(client),
                watcher::Config::default().fields(&selector),
            )
            .default_backoff()
            .modify(|pod| {
                // Keep what the labels need: metadata and status, a few KiB per pod.
                pod.metadata.managed_fields = None;
                pod.metadata.annotations = None;
                pod.metadata.labels = None;
                pod.spec = None;
            });
            let mut events = std::pin::pin!(reflector::reflector(writer, pods));
            while let Some(event) = events.next().await {
                if let Err(e) = event {
                    tracing::warn!(err = %e, "watching pods (retrying with back-off)");
                }
            }
        });
        Ok(Some(Self {
            store,
            _watch: watch,
        }))
    }

    /// The pod and container of `identity`, if the pod is known.
    pub fn lookup(&self, identity: &Identity) -> Option<PodMetadata> {
        if identity.pod_uid.is_empty() {
            return None;
        }
        let pod = self
            .store
            .find(|pod| pod.metadata.uid.as_deref() == Some(identity.pod_uid.as_str()))?;
        Some(metadata_of(&pod, &identity.container_id))
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        self._watch.abort();
    }
}

enum ConfigSource {
    Kubeconfig(Box<Kubeconfig>),
    InCluster(Box<Config>),
}

impl ConfigSource {
    async fn client(&self) -> anyhow::Result<Client> {
        let config = match self {
            Self::Kubeconfig(kubeconfig) => Config::from_custom_kubeconfig(
                kubeconfig.as_ref().clone(),
                &KubeConfigOptions::default(),
            )
            .await
            .context("kubeconfig")?,
            Self::InCluster(config) => config.as_ref().clone(),
        };
        Client::try_from(config).context("creating the client")
    }
}

/// `$NODE_NAME` (the DaemonSet sets it from `spec.nodeName`), else the host name, which is the
/// node name kubelet registers by default.
fn default_node_name() -> anyhow::Result<String> {
    if let Some(name) = std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()) {
        return Ok(name);
    }
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("no --collector.ebpf.cgroup.node-name nor $NODE_NAME, and no host name")?;
    Ok(hostname.trim().to_owned())
}

fn metadata_of(pod: &Arc<Pod>, container_id: &str) -> PodMetadata {
    let mut metadata = PodMetadata {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        pod: pod.metadata.name.clone().unwrap_or_default(),
        ..PodMetadata::default()
    };
    if container_id.is_empty() {
        return metadata;
    }
    let Some(status) = &pod.status else {
        return metadata;
    };
    let all = [
        &status.container_statuses,
        &status.init_container_statuses,
        &status.ephemeral_container_statuses,
    ];
    let found = all
        .into_iter()
        .flatten()
        .flatten()
        .find_map(|c: &ContainerStatus| {
            let (scheme, id) = c.container_id.as_deref()?.split_once("://")?;
            (id == container_id).then(|| (c.name.clone(), scheme))
        });
    if let Some((name, scheme)) = found {
        metadata.container = name;
        metadata.container_runtime = match scheme {
            "cri-o" | "crio" => "cri-o",
            other => other,
        }
        .to_owned();
    }
    metadata
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_and_runtime_from_statuses() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "shop", "uid": "u1"},
            "status": {
                "containerStatuses": [{
                    "name": "app", "image": "i", "imageID": "", "ready": true, "restartCount": 0,
                    "containerID": "containerd://aaa"
                }],
                "initContainerStatuses": [{
                    "name": "init", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                    "containerID": "cri-o://bbb"
                }]
            }
        }))
        .unwrap();
        let pod = Arc::new(pod);
        let app = metadata_of(&pod, "aaa");
        assert_eq!(
            (
                app.namespace.as_str(),
                app.pod.as_str(),
                app.container.as_str(),
                app.container_runtime.as_str()
            ),
            ("shop", "web-0", "app", "containerd")
        );
        let init = metadata_of(&pod, "bbb");
        assert_eq!(
            (init.container.as_str(), init.container_runtime.as_str()),
            ("init", "cri-o")
        );
        // The pod's own cgroup, or a container not (yet) in the status.
        assert_eq!(metadata_of(&pod, "").container, "");
        assert_eq!(metadata_of(&pod, "ccc").pod, "web-0");
    }

    #[test]
    fn mode_flag() {
        assert!(Pods::from_flags(Mode::Off, None, None).unwrap().is_none());
        let err = Mode::from_flag("sometimes").unwrap_err();
        assert!(
            err.to_string().contains("expected auto, on or off"),
            "{err}"
        );
        let err = Pods::from_flags(Mode::On, Some("/nonexistent/kubeconfig"), Some("n"))
            .err()
            .unwrap();
        assert!(
            format!("{err:#}").contains("reading kubeconfig /nonexistent/kubeconfig"),
            "{err:#}"
        );
    }
}
