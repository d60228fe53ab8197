//! The deployment files in deploy/: Kubernetes manifests render and validate, rule files and
//! scrape configurations pass promtool, and (root) a real Prometheus scraping the collector
//! through the AMP scraper's relabeling evaluates every dashboard and rule expression.
mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use common::{
    Daemon,
    prometheus::{Prometheus, TempDir},
    tool, yaml_documents, yaml_file,
};
use serde_json::{Value, json};

/// Kubernetes version whose schemas kubernetes-validate checks the manifests against.
const KUBERNETES_VERSION: &str = "1.32.0";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
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

// ---------------------------------------------------------------------------------------------
// Kubernetes

/// The base and every overlay, as `kubectl kustomize` renders them.
fn kustomizations() -> Vec<(String, String)> {
    let kubernetes = deploy_dir().join("kubernetes");
    let mut dirs = vec![kubernetes.join("base")];
    dirs.extend(
        files(&kubernetes.join("overlays"), "")
            .into_iter()
            .filter(|path| path.is_dir()),
    );
    dirs.into_iter()
        .map(|dir| {
            let output = run(Command::new(tool("kubectl")).arg("kustomize").arg(&dir));
            assert_success(&output, &format!("kubectl kustomize {}", dir.display()));
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            (name, String::from_utf8(output.stdout).unwrap())
        })
        .collect()
}

fn find<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    documents
        .iter()
        .find(|document| document["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

#[test]
fn every_kustomization_renders_and_validates_against_kubernetes_schemas() {
    let dir = TempDir::new("kustomize");
    let rendered = kustomizations();
    assert!(
        rendered.len() >= 3,
        "base, capabilities and amp: {:?}",
        rendered.iter().map(|(name, _)| name).collect::<Vec<_>>()
    );
    for (name, yaml) in &rendered {
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        let output = run(Command::new(tool("python3"))
            .args(["-m", "kubernetes_validate", "--strict", "--quiet"])
            .args(["--kubernetes-version", KUBERNETES_VERSION])
            .arg(&file));
        assert_success(
            &output,
            &format!("kubernetes-validate {KUBERNETES_VERSION} --strict on {name}:\n{yaml}"),
        );

        let documents = yaml_documents(yaml);
        for kind in [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "DaemonSet",
            "Service",
        ] {
            find(&documents, kind);
        }
        let daemonset = find(&documents, "DaemonSet");
        let pod = &daemonset["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        assert_eq!(daemonset["spec"]["updateStrategy"]["type"], "RollingUpdate");
        assert_eq!(pod["hostPID"], true, "{name}");
        assert_eq!(pod["hostNetwork"], true, "{name}");
        assert_eq!(pod["priorityClassName"], "system-node-critical");
        assert_eq!(pod["tolerations"], json!([{ "operator": "Exists" }]));
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
        assert_eq!(
            daemonset["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
            "ebpf-node-collector"
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
        if name == "capabilities" {
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
    }
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

#[test]
fn rule_files_pass_promtool_and_every_alert_has_a_runbook() {
    for file in rule_files() {
        let output = run(Command::new(tool("promtool"))
            .args(["check", "rules"])
            .arg(&file));
        assert_success(&output, &format!("promtool check rules {}", file.display()));
    }
    let rules = rules();
    // Amazon Managed Service for Prometheus rejects rule groups with more than 20 rules.
    let mut per_group: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (file, group, rule) in &rules {
        *per_group.entry((file.clone(), group.clone())).or_default() += 1;
        if let Some(alert) = rule["alert"].as_str() {
            for annotation in ["summary", "description", "runbook"] {
                assert!(
                    rule["annotations"][annotation]
                        .as_str()
                        .is_some_and(|text| !text.trim().is_empty()),
                    "{file}: {alert} has no {annotation} annotation"
                );
            }
            assert!(rule["labels"]["severity"].is_string(), "{alert}: severity");
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
// Scrape configurations

fn scrape_config(name: &str) -> Value {
    yaml_file(&deploy_dir().join("amp").join(name))
}

/// `config` with the node-exporter job's Kubernetes pod discovery replaced by `static_configs`.
fn with_static_targets(mut config: Value, static_configs: Value) -> Value {
    let job = &mut config["scrape_configs"][0];
    assert_eq!(job["job_name"], "node-exporter");
    assert_eq!(
        job["kubernetes_sd_configs"],
        json!([{ "role": "pod" }]),
        "pod discovery, as the relabeling expects"
    );
    let job = job.as_object_mut().unwrap();
    job.remove("kubernetes_sd_configs");
    job.insert("static_configs".into(), static_configs);
    config
}

#[test]
fn scraper_and_agent_configurations_pass_promtool() {
    let scraper = scrape_config("scraper.yaml");
    let agent = scrape_config("agent.yaml");
    assert_eq!(
        scraper["scrape_configs"], agent["scrape_configs"],
        "the agent scrapes exactly as the managed scraper"
    );
    assert_eq!(scraper["global"], agent["global"]);
    let interval = scraper["global"]["scrape_interval"].as_str().unwrap();
    let seconds: u64 = interval.strip_suffix('s').unwrap().parse().unwrap();
    assert!(seconds >= 30, "scrape interval {interval}");
    assert!(scraper["global"]["external_labels"]["cluster"].is_string());
    assert!(agent["remote_write"][0]["sigv4"]["region"].is_string());
    assert!(agent.get("rule_files").is_none(), "agent mode has no rules");

    let dir = TempDir::new("promtool-config");
    for name in ["scraper.yaml", "agent.yaml"] {
        let file = deploy_dir().join("amp").join(name);
        let output = run(Command::new(tool("promtool"))
            .args(["check", "config"])
            .arg(&file));
        if output.status.success() {
            continue;
        }
        // Debian builds Prometheus without Kubernetes service discovery. Everything else (global,
        // relabeling, metric relabeling, remote_write with SigV4) is checked with static targets
        // in its place; the discovery block itself is asserted to be `[{role: pod}]` above.
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned()
            + &String::from_utf8_lossy(&output.stdout);
        assert!(
            stderr.contains("field kubernetes_sd_configs not found"),
            "promtool check config {name}:\n{stderr}"
        );
        let config = with_static_targets(
            scrape_config(name),
            json!([{ "targets": ["127.0.0.1:9100"] }]),
        );
        let file = dir.path().join(name);
        std::fs::write(&file, config.to_string()).unwrap();
        let output = run(Command::new(tool("promtool"))
            .args(["check", "config"])
            .arg(&file));
        assert_success(
            &output,
            &format!("promtool check config {name} (static targets)"),
        );
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
    let (_, yaml) = kustomizations()
        .into_iter()
        .find(|(name, _)| name == "amp")
        .expect("the amp overlay");
    let documents = yaml_documents(&yaml);
    let daemonset = find(&documents, "DaemonSet");
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
    let collector = Daemon::start(&["--ebpf.enable-stats"]);
    // A pod's container, waking every 50 ms, for the per-pod expressions.
    let root = common::cgroup::cgroup2_root().expect("a cgroup v2 mount");
    let pod = common::cgroup::PodCgroup::create(&root, 0x10);
    let _workload = KillOnDrop(pod.spawn("while :; do sleep 0.05; done"));

    let mut config = with_static_targets(
        scrape_config("scraper.yaml"),
        discovered_pod_labels(&collector.address.to_string()),
    );
    config["global"]["scrape_interval"] = json!("1s");
    config["global"]["scrape_timeout"] = json!("1s");
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

/// Kills and reaps a background workload when the test ends, passed or failed.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
