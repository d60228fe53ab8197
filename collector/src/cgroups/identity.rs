//! What a cgroup path says about the workload in it: the Kubernetes pod (UID and QoS class) and
//! the container (ID and runtime), for the layouts kubelet and the container runtimes create.
//!
//! systemd cgroup driver:
//! `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope`
//! (Guaranteed pods sit directly under `kubepods.slice`: `kubepods-pod<uid>.slice`);
//! cgroupfs driver: `/kubepods/burstable/pod<uid>/<id>` (`/kubepods/pod<uid>/<id>` for
//! Guaranteed). Container scopes: `cri-containerd-` (containerd), `crio-` (CRI-O; `crio-conmon-`
//! is its monitor), `docker-` (Docker, cri-dockerd), `libpod-` (Podman). Under the cgroupfs driver
//! a container directory is the bare ID: its runtime is only known from the Kubernetes API.
use std::sync::LazyLock;

use regex::Regex;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub pod_uid: String,
    /// `Guaranteed`, `Burstable` or `BestEffort`, as the pod's `status.qosClass` (and
    /// kube-state-metrics) spell it.
    pub qos_class: String,
    pub container_id: String,
    /// `containerd`, `cri-o`, `docker` or `podman`; empty when the path does not say.
    pub container_runtime: String,
}

/// A pod's cgroup: `kubepods[-<qos>]-pod<uid>.slice` (systemd) or `pod<uid>` (cgroupfs).
static POD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:kubepods(?:-(burstable|besteffort))?-)?pod([0-9a-fA-F]{8}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{12})(?:\.slice)?$")
        .expect("valid regex")
});

/// A container's scope (systemd driver, or a runtime's own naming under cgroupfs).
static CONTAINER_SCOPE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(cri-containerd|crio|docker|libpod)-([0-9a-f]{64})(?:\.scope)?$")
        .expect("valid regex")
});

/// A bare container ID directory (cgroupfs driver), only directly below a pod.
static BARE_ID: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[0-9a-f]{64}$").expect("valid regex"));

impl Identity {
    /// Reads the pod and container out of a cgroup path (relative to the cgroup v2 root).
    pub fn from_path(path: &str) -> Self {
        let mut identity = Self::default();
        let mut in_kubepods = false;
        let mut parent_is_pod = false;
        for component in path.split('/').filter(|c| !c.is_empty()) {
            let mut is_pod = false;
            in_kubepods |= component == "kubepods" || component == "kubepods.slice";
            if in_kubepods && let Some(pod) = POD.captures(component) {
                identity.pod_uid = pod[2].replace('_', "-").to_ascii_lowercase();
                identity.qos_class = match pod.get(1) {
                    Some(qos) => qos_class(qos.as_str()),
                    // cgroupfs names the QoS in the parent directory.
                    None => qos_from_cgroupfs_parent(path, component),
                }
                .to_owned();
                is_pod = true;
            } else if let Some(container) = CONTAINER_SCOPE.captures(component) {
                identity.container_id = container[2].to_owned();
                identity.container_runtime = match &container[1] {
                    "cri-containerd" => "containerd",
                    "crio" => "cri-o",
                    "docker" => "docker",
                    _ => "podman",
                }
                .to_owned();
            } else if parent_is_pod && BARE_ID.is_match(component) {
                identity.container_id = component.to_owned();
            }
            parent_is_pod = is_pod;
        }
        identity
    }
}

/// The QoS class kubelet's cgroup name `burstable`/`besteffort` stands for; Guaranteed pods sit
/// directly in the kubepods cgroup, without a QoS level.
fn qos_class(cgroup_name: &str) -> &'static str {
    match cgroup_name {
        "burstable" | "kubepods-burstable.slice" => "Burstable",
        "besteffort" | "kubepods-besteffort.slice" => "BestEffort",
        _ => "Guaranteed",
    }
}

/// The QoS class from the pod directory's parent (cgroupfs driver; the systemd driver's
/// Guaranteed pods too).
fn qos_from_cgroupfs_parent(path: &str, pod_component: &str) -> &'static str {
    let before = path.split(pod_component).next().unwrap_or("");
    qos_class(
        before
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or(""),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "6f1d3a2c-8b7e-4c1a-9d2e-3f4a5b6c7d8e";

    fn identity(pod_uid: &str, qos: &str, id: &str, runtime: &str) -> Identity {
        Identity {
            pod_uid: pod_uid.into(),
            qos_class: qos.into(),
            container_id: id.into(),
            container_runtime: runtime.into(),
        }
    }

    #[test]
    fn systemd_driver_runtimes_and_qos_classes() {
        let uid_ = UID.replace('-', "_");
        for (scope, runtime) in [
            ("cri-containerd", "containerd"),
            ("crio", "cri-o"),
            ("docker", "docker"),
        ] {
            let path = format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/{scope}-{ID}.scope"
            );
            assert_eq!(
                Identity::from_path(&path),
                identity(UID, "Burstable", ID, runtime),
                "{path}"
            );
        }
        let besteffort = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(
            Identity::from_path(&besteffort),
            identity(UID, "BestEffort", ID, "containerd")
        );
        let guaranteed = format!("/kubepods.slice/kubepods-pod{uid_}.slice/crio-{ID}.scope");
        assert_eq!(
            Identity::from_path(&guaranteed),
            identity(UID, "Guaranteed", ID, "cri-o")
        );
        // The pod's own cgroup: no container.
        let pod = format!("/kubepods.slice/kubepods-pod{uid_}.slice");
        assert_eq!(
            Identity::from_path(&pod),
            identity(UID, "Guaranteed", "", "")
        );
    }

    #[test]
    fn cgroupfs_driver() {
        assert_eq!(
            Identity::from_path(&format!("/kubepods/burstable/pod{UID}/{ID}")),
            identity(UID, "Burstable", ID, "")
        );
        assert_eq!(
            Identity::from_path(&format!("/kubepods/besteffort/pod{UID}/{ID}")),
            identity(UID, "BestEffort", ID, "")
        );
        assert_eq!(
            Identity::from_path(&format!("/kubepods/pod{UID}/{ID}")),
            identity(UID, "Guaranteed", ID, "")
        );
        assert_eq!(
            Identity::from_path(&format!("/kubepods/burstable/pod{UID}/crio-{ID}")),
            identity(UID, "Burstable", ID, "cri-o")
        );
    }

    #[test]
    fn nested_under_a_prefix_and_outside_kubernetes() {
        // kind or a kubelet in a container: the hierarchy sits below another cgroup.
        let uid_ = UID.replace('-', "_");
        let nested = format!(
            "/system.slice/node.scope/kubelet.slice/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(
            Identity::from_path(&nested),
            identity(UID, "Burstable", ID, "containerd")
        );
        // Docker outside Kubernetes: a container, no pod.
        assert_eq!(
            Identity::from_path(&format!("/system.slice/docker-{ID}.scope")),
            identity("", "", ID, "docker")
        );
        for plain in [
            "/",
            "/system.slice/sshd.service",
            "/user.slice/user-0.slice",
            "",
        ] {
            assert_eq!(Identity::from_path(plain), Identity::default(), "{plain}");
        }
        // A pod-like name outside kubepods, and a bare ID not under a pod, say nothing.
        assert_eq!(
            Identity::from_path(&format!("/system.slice/pod{UID}/{ID}")),
            Identity::default()
        );
    }
}
