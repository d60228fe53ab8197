//! Root: per-cgroup accounting. A workload the test runs in a kubepods-style cgroup hierarchy
//! (CPU, direct I/O, loopback TCP) shows up under its pod UID and container ID, with each hook
//! type; its series go once the cgroup is removed and the grace period has passed; a storm of
//! short-lived cgroups never exports more than the bound; pod and container names come from a
//! Kubernetes API server (a fake one serving a pod list and an idle watch, over HTTP and over
//! HTTPS with its own CA) for this node only.
mod common;

use std::{
    collections::BTreeSet,
    io::Read as _,
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use common::{Daemon, Scrape, cgroup::PodCgroup, kube_api::FakeApiServer};

const WRITES: usize = 200;
const SENT_BYTES: usize = 1 << 20;

/// Accepts one connection and reads it to the end; returns the bytes read.
fn sink() -> (u16, std::thread::JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding the sink");
    let port = listener.local_addr().unwrap().port();
    let reader = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accepting");
        let mut total = 0;
        let mut buffer = [0u8; 65536];
        loop {
            match stream.read(&mut buffer) {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    });
    (port, reader)
}

fn attributes_a_pods_workload_with(hook_type: &str) {
    let root = require_cgroup2!();
    // Each hook type's test has a pod of its own: they run at the same time.
    let tag = match hook_type {
        "tp_btf" => 0x01,
        "raw_tp" => 0x02,
        _ => 0x03,
    };
    let daemon = Daemon::start(&[
        "--collector.disable-defaults",
        "--collector.ebpf.cgroup",
        "--collector.ebpf.cgroup.grace-period=2s",
        &format!("--ebpf.hook-types={hook_type}"),
    ]);
    let scrape = daemon.scrape();
    common::assert_attached(&scrape, &["sched_switch"], hook_type);
    common::assert_attached(
        &scrape,
        &["cgroup_skb_ingress", "cgroup_skb_egress"],
        "cgroup_skb",
    );

    let mut pod = PodCgroup::create(&root, tag);
    let file = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cgroup-test-{}-{hook_type}", std::process::id()));
    let (port, received) = sink();
    // One second of CPU, 200 direct 4 KiB writes (each waits for its request), 1 MiB sent over
    // loopback TCP.
    pod.run(&format!(
        "timeout 1 sh -c 'while :; do :; done'; \
         dd if=/dev/zero of='{file}' bs=4k count={WRITES} oflag=direct,dsync status=none && \
         exec 3<>/dev/tcp/127.0.0.1/{port} && head -c {SENT_BYTES} /dev/zero >&3",
        file = file.display()
    ));
    let _ = std::fs::remove_file(&file);
    assert_eq!(received.join().unwrap(), SENT_BYTES);

    let (uid, container_id) = (pod.uid.clone(), pod.container_id.clone());
    let labels = [
        ("pod_uid", uid.as_str()),
        ("container_id", container_id.as_str()),
        ("qos_class", "Burstable"),
        ("container_runtime", "containerd"),
    ];
    let after = daemon.scrape();
    let value = |name: &str, extra: &[(&str, &str)]| {
        let mut all = labels.to_vec();
        all.extend_from_slice(extra);
        let found: Vec<_> = after.matching(name, &all).collect();
        assert_eq!(found.len(), 1, "one {name}{all:?}; scrape:\n{}", after.text);
        found[0].value
    };
    let cpu = value("ebpf_cgroup_cpu_seconds_total", &[]);
    let kernel_cpu = pod.cpu_seconds();
    assert!(
        (cpu - kernel_cpu).abs() <= 0.05 * kernel_cpu + 0.02,
        "{cpu} s of CPU counted, {kernel_cpu} s by the cgroup's cpu.stat"
    );
    assert!(kernel_cpu > 0.2, "the busy loop ran: {kernel_cpu} s");
    assert!(value("ebpf_cgroup_runqueue_waits_total", &[]) > 0.0);
    let writes = value(
        "ebpf_cgroup_block_io_requests_total",
        &[("operation", "write")],
    );
    assert!(
        writes >= WRITES as f64,
        "{writes} write requests for {WRITES} direct writes"
    );
    let written = value(
        "ebpf_cgroup_block_io_bytes_total",
        &[("operation", "write")],
    );
    assert!(written >= (WRITES * 4096) as f64, "{written} bytes written");
    assert!(
        value(
            "ebpf_cgroup_block_io_time_seconds_total",
            &[("operation", "write")]
        ) > 0.0
    );
    let sent = value("ebpf_cgroup_network_transmit_bytes_total", &[]);
    assert!(
        sent >= SENT_BYTES as f64,
        "{sent} bytes sent for {SENT_BYTES}"
    );
    assert!(value("ebpf_cgroup_network_transmit_packets_total", &[]) > 0.0);
    eprintln!(
        "{hook_type}: cpu {cpu:.3} s (cpu.stat {kernel_cpu:.3} s), {writes} writes ({written} bytes), {sent} bytes sent"
    );

    // Removed: still exported through the grace period (from the scrape that notices), then gone.
    pod.remove_container();
    let noticed = daemon.scrape();
    assert_eq!(
        noticed
            .matching("ebpf_cgroup_cpu_seconds_total", &labels)
            .count(),
        1
    );
    std::thread::sleep(Duration::from_millis(2500));
    let later = daemon.scrape();
    assert_eq!(
        later
            .matching("ebpf_cgroup_cpu_seconds_total", &labels)
            .count(),
        0,
        "series of the removed cgroup still exported after the grace period"
    );
    assert!(
        later.value("ebpf_cgroups_dropped_total", &[("reason", "removed")])
            >= noticed.value("ebpf_cgroups_dropped_total", &[("reason", "removed")]) + 1.0
    );
}

test_each_hook_type!(
    attributes_a_pods_workload_with =>
    attributes_a_pods_workload_tp_btf,
    attributes_a_pods_workload_raw_tp,
    attributes_a_pods_workload_tracepoint
);

/// Starts the daemon (only `ebpf.cgroup`) as root whose capability bounding set is just
/// `capabilities` (setpriv cannot keep capabilities across a change of user), so every
/// capability check it meets is made against them; runs a workload in pod cgroup `tag`; returns
/// the daemon, the scrape after the workload, and the workload's labels.
fn run_with_capabilities(capabilities: &str, tag: u8) -> (Daemon, Scrape, PodCgroup) {
    let root = common::cgroup::cgroup2_root().expect("a cgroup v2 mount");
    let mut command = Command::new(common::tool("setpriv"));
    command.args([
        &format!("--inh-caps=-all,{capabilities}"),
        &format!("--bounding-set=-all,{capabilities}"),
        common::daemon::BINARY,
        "--collector.disable-defaults",
        "--collector.ebpf.cgroup",
    ]);
    let daemon = Daemon::spawn(command);
    let before = daemon.scrape();
    assert_eq!(
        before.sum("ebpf_program_attached", &[("program", "sched_switch")]),
        1.0,
        "log:\n{}",
        daemon.log()
    );
    let pod = PodCgroup::create(&root, tag);
    pod.run("timeout 0.2 sh -c 'while :; do :; done' || true");
    let after = daemon.scrape();
    (daemon, after, pod)
}

#[test]
fn attributes_with_only_the_deployments_capabilities() {
    require_root!();
    require_cgroup2!();
    let (daemon, scrape, pod) = run_with_capabilities(&common::deployment_capabilities(&[]), 0x05);
    common::assert_attached(
        &scrape,
        &["cgroup_skb_ingress", "cgroup_skb_egress"],
        "cgroup_skb",
    );
    let labels = [
        ("pod_uid", pod.uid.as_str()),
        ("container_id", pod.container_id.as_str()),
    ];
    let cpu = scrape.value("ebpf_cgroup_cpu_seconds_total", &labels);
    assert!(cpu > 0.1, "{cpu} s of CPU");
    // The id resolved by handle (open_by_handle_at needs CAP_DAC_READ_SEARCH).
    assert!(
        !daemon.log().contains("walking the hierarchy"),
        "{}",
        daemon.log()
    );
}

#[test]
fn without_net_admin_and_dac_read_search_walks_and_reports_no_traffic() {
    require_root!();
    require_cgroup2!();
    let capabilities = common::deployment_capabilities(&["net_admin", "dac_read_search"]);
    let (daemon, scrape, pod) = run_with_capabilities(&capabilities, 0x06);
    let labels = [
        ("pod_uid", pod.uid.as_str()),
        ("container_id", pod.container_id.as_str()),
    ];
    // Still attributed: the id found by walking the hierarchy.
    let cpu = scrape.value("ebpf_cgroup_cpu_seconds_total", &labels);
    assert!(cpu > 0.1, "{cpu} s of CPU");
    let log = daemon.log();
    assert!(log.contains("walking the hierarchy"), "{log}");
    // No cgroup_skb: said so, and no network families rather than zeros.
    for program in ["cgroup_skb_ingress", "cgroup_skb_egress"] {
        let labels = [("program", program), ("hook_type", "none")];
        assert_eq!(scrape.value("ebpf_program_attached", &labels), 0.0);
    }
    assert!(!scrape.has("ebpf_cgroup_network_transmit_bytes_total"));
    assert!(
        log.contains("per-cgroup network traffic unavailable"),
        "{log}"
    );
}

/// Distinct cgroups with series in `scrape`.
fn exported_cgroups(scrape: &Scrape) -> BTreeSet<String> {
    scrape
        .matching("ebpf_cgroup_cpu_seconds_total", &[])
        .map(|s| s.labels["cgroup"].clone())
        .collect()
}

/// Creates `count` cgroups named `<prefix>-<i>` under `parent`, each having run a process.
fn cgroups_that_ran(parent: &Path, prefix: &str, count: usize) -> Vec<PathBuf> {
    let cgroups: Vec<PathBuf> = (0..count)
        .map(|i| parent.join(format!("{prefix}-{i}")))
        .collect();
    for cgroup in &cgroups {
        std::fs::create_dir(cgroup).unwrap();
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > '{}/cgroup.procs' && true",
                cgroup.display()
            ))
            .status()
            .unwrap();
        assert!(status.success());
    }
    cgroups
}

#[test]
fn a_storm_of_cgroups_stays_within_the_bound() {
    require_root!();
    let root = require_cgroup2!();
    // Above what the root and the other tests' pods take, so the storm gets places too.
    const BOUND: usize = 12;
    let daemon = Daemon::start(&[
        "--collector.disable-defaults",
        "--collector.ebpf.cgroup",
        &format!("--collector.ebpf.cgroup.max-cgroups={BOUND}"),
        "--collector.ebpf.cgroup.grace-period=1s",
    ]);
    daemon.scrape(); // served once the programs are attached
    let storm = root.join(format!("storm-{}", std::process::id()));
    std::fs::create_dir(&storm).expect("creating the storm's parent cgroup");
    let storm_name = storm.file_name().unwrap().to_str().unwrap().to_owned();
    let in_storm = |scrape: &Scrape, prefix: &str| -> usize {
        exported_cgroups(scrape)
            .iter()
            .filter(|c| c.contains(&format!("{storm_name}/{prefix}")))
            .count()
    };
    let within_bound = |scrape: &Scrape| {
        let exported = exported_cgroups(scrape);
        assert!(
            exported.len() <= BOUND,
            "{} cgroups exported: {exported:?}",
            exported.len()
        );
        assert!(scrape.value("ebpf_cgroups_exported", &[]) <= BOUND as f64);
    };

    // Rounds of 20 cgroups alive at a scrape, then removed; removed ones keep their places for
    // the grace period, so later rounds are mostly refused.
    let mut first_round = 0;
    for round in 0..5 {
        let prefix = format!("r{round}");
        let cgroups = cgroups_that_ran(&storm, &prefix, 20);
        let scrape = daemon.scrape();
        within_bound(&scrape);
        if round == 0 {
            first_round = in_storm(&scrape, &prefix);
        }
        cgroups.iter().for_each(|c| std::fs::remove_dir(c).unwrap());
    }
    assert!(
        first_round >= 1,
        "the storm got no place in the first round"
    );

    // Places free up once the grace period has passed: cgroups alive then rotate in.
    let last = cgroups_that_ran(&storm, "last", 20);
    within_bound(&daemon.scrape()); // notices the last removals
    std::thread::sleep(Duration::from_millis(1200));
    let rotated = daemon.scrape();
    within_bound(&rotated);
    let admitted = in_storm(&rotated, "last");
    assert!(admitted >= 1, "no place freed for the cgroups still alive");
    assert_eq!(
        in_storm(&rotated, "r"),
        0,
        "removed storm cgroups still exported after the grace period"
    );
    last.iter().for_each(|c| std::fs::remove_dir(c).unwrap());
    std::thread::sleep(Duration::from_millis(1200));
    daemon.scrape(); // notices the removals
    std::thread::sleep(Duration::from_millis(1200));
    let end = daemon.scrape();
    std::fs::remove_dir(&storm).unwrap();
    assert_eq!(
        in_storm(&end, ""),
        0,
        "removed storm cgroups still exported"
    );
    let over_limit = end.value("ebpf_cgroups_dropped_total", &[("reason", "limit")]);
    let removed = end.value("ebpf_cgroups_dropped_total", &[("reason", "removed")]);
    assert!(over_limit >= 20.0, "{over_limit} cgroups refused a place");
    assert!(removed >= 100.0, "{removed} of 120 removed cgroups dropped");
    eprintln!(
        "storm: bound {BOUND}; {first_round} storm cgroups exported in the first round, \
         {admitted} rotated in after the grace period; dropped {over_limit} over the limit, \
         {removed} removed"
    );
}

/// How the daemon reaches the fake API server.
#[derive(Clone, Copy, PartialEq)]
enum ApiAccess {
    /// `--collector.ebpf.cgroup.kubeconfig`, plain HTTP or HTTPS with the server's CA.
    Kubeconfig { https: bool },
    /// As in a pod: `KUBERNETES_SERVICE_HOST`/`_PORT`, the service account's token and CA under
    /// /var/run/secrets (a tmpfs in a mount namespace of the daemon's own), `NODE_NAME`, and
    /// no Kubernetes flag at all (`auto`).
    InCluster,
}

/// Starts the daemon reaching a fake API server through `access` and checks a pod's workload
/// gets its names.
fn names_pods_and_containers_from_the_api(access: ApiAccess, tag: u8) {
    let root = require_cgroup2!();
    let pod = PodCgroup::create(&root, tag);
    let https = access != (ApiAccess::Kubeconfig { https: false });
    let server = FakeApiServer::start(
        serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "shop", "uid": pod.uid, "resourceVersion": "1"},
            "spec": {"nodeName": "test-node", "containers": [{"name": "app"}]},
            "status": {"containerStatuses": [{
                "name": "app", "image": "app:1", "imageID": "", "ready": true, "restartCount": 0,
                "containerID": format!("containerd://{}", pod.container_id)
            }]}
        }),
        https,
    );
    let dir = common::prometheus::TempDir::new("kubeconfig");
    let ca_file = dir.path().join("ca.crt");
    if let Some(pem) = &server.ca_pem {
        std::fs::write(&ca_file, pem).unwrap();
    }
    let daemon = match access {
        ApiAccess::Kubeconfig { https } => {
            let ca = if https {
                format!(", certificate-authority: '{}'", ca_file.display())
            } else {
                String::new()
            };
            let kubeconfig = dir.path().join("kubeconfig");
            std::fs::write(
                &kubeconfig,
                format!(
                    "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
                     clusters: [{{name: test, cluster: {{server: '{}'{ca}}}}}]\n\
                     users: [{{name: test, user: {{token: test-token}}}}]\n\
                     contexts: [{{name: test, context: {{cluster: test, user: test}}}}]\n",
                    server.url()
                ),
            )
            .unwrap();
            Daemon::start(&[
                "--collector.disable-defaults",
                "--collector.ebpf.cgroup",
                &format!(
                    "--collector.ebpf.cgroup.kubeconfig={}",
                    kubeconfig.display()
                ),
                "--collector.ebpf.cgroup.node-name=test-node",
            ])
        }
        ApiAccess::InCluster => {
            let mut command =
                common::kube_api::in_cluster_command(&ca_file, "test-token", server.port);
            command
                .args(["--collector.disable-defaults", "--collector.ebpf.cgroup"])
                .env("NODE_NAME", "test-node");
            Daemon::spawn(command)
        }
    };
    // Served once the programs are attached: the workload is counted.
    let attached = daemon
        .scrape()
        .sum("ebpf_program_attached", &[("program", "sched_switch")]);
    assert_eq!(attached, 1.0, "sched_switch attached");
    pod.run("timeout 0.2 sh -c 'while :; do :; done' || true");

    let labels = [
        ("pod_namespace", "shop"),
        ("pod_name", "web-0"),
        ("container_name", "app"),
        ("pod_uid", pod.uid.as_str()),
        ("container_id", pod.container_id.as_str()),
    ];
    let mut named = 0;
    for _ in 0..50 {
        named = daemon
            .scrape()
            .matching("ebpf_cgroup_cpu_seconds_total", &labels)
            .count();
        if named == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let requests = server.requests();
    let unnamed: Vec<_> = daemon
        .scrape()
        .matching(
            "ebpf_cgroup_cpu_seconds_total",
            &[("pod_uid", pod.uid.as_str())],
        )
        .cloned()
        .collect();
    assert_eq!(
        named,
        1,
        "no series named by the API: {unnamed:?}; requests: {requests:?}; log:\n{}",
        daemon.log()
    );
    assert!(
        requests
            .iter()
            .all(|r| r.line.contains("fieldSelector=spec.nodeName%3Dtest-node")),
        "every request selects this node's pods: {requests:?}"
    );
    assert!(
        requests
            .iter()
            .all(|r| r.authorization.as_deref() == Some("Bearer test-token")),
        "every request carries the token: {requests:?}"
    );
}

#[test]
fn names_pods_and_containers_from_the_kubernetes_api() {
    require_root!();
    names_pods_and_containers_from_the_api(ApiAccess::Kubeconfig { https: false }, 0x04);
}

#[test]
fn names_pods_over_https_verified_against_the_clusters_ca() {
    require_root!();
    names_pods_and_containers_from_the_api(ApiAccess::Kubeconfig { https: true }, 0x07);
}

#[test]
fn names_pods_in_cluster_from_the_service_account() {
    require_root!();
    names_pods_and_containers_from_the_api(ApiAccess::InCluster, 0x08);
}

#[test]
fn bad_cgroup_flags_stop_the_daemon_naming_the_flag() {
    for (flag, says) in [
        (
            "--collector.ebpf.cgroup.max-cgroups=0",
            "expected a number of cgroups from 1 to 100000",
        ),
        (
            "--collector.ebpf.cgroup.grace-period=soon",
            "expected a duration such as 5m or 30s",
        ),
        (
            "--collector.ebpf.cgroup.kubernetes=maybe",
            "expected auto, on or off",
        ),
    ] {
        let output = Command::new(common::daemon::BINARY)
            .args([flag, "--web.listen-address=127.0.0.1:0"])
            .output()
            .expect("running the collector");
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{flag} accepted:\n{log}");
        assert!(log.contains(flag) && log.contains(says), "{flag}:\n{log}");
    }
}

/// A chain of cgroups `levels` deep under `parent`, each named `name`: its path is longer than
/// PATH_MAX, so it is made (and removed) through directory descriptors, never by path.
struct DeepCgroup {
    /// The descriptors of every level, the deepest last.
    levels: Vec<std::os::fd::OwnedFd>,
    parent: std::fs::File,
    name: std::ffi::CString,
}

impl DeepCgroup {
    fn create(parent: &Path, name: &str, levels: usize) -> Self {
        use std::os::fd::{AsRawFd, FromRawFd};
        let parent_dir = std::fs::File::open(parent).unwrap();
        let name = std::ffi::CString::new(name).unwrap();
        let mut chain: Vec<std::os::fd::OwnedFd> = Vec::new();
        for _ in 0..levels {
            let at = chain
                .last()
                .map_or(parent_dir.as_raw_fd(), |fd| fd.as_raw_fd());
            // SAFETY: a valid directory descriptor and NUL-terminated name; the descriptor
            // openat returns is owned from here on.
            let fd = unsafe {
                assert_eq!(libc::mkdirat(at, name.as_ptr(), 0o755), 0, "mkdirat");
                libc::openat(at, name.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY)
            };
            assert!(fd >= 0, "openat: {}", std::io::Error::last_os_error());
            // SAFETY: just returned to us.
            chain.push(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
        }
        Self {
            levels: chain,
            parent: parent_dir,
            name,
        }
    }

    /// Runs a second of busy work in the deepest cgroup.
    fn run_in_deepest(&self) {
        use std::os::{fd::AsRawFd, unix::process::CommandExt};
        let deepest = self.levels.last().unwrap().as_raw_fd();
        let mut command = Command::new("sh");
        command.args([
            "-c",
            "echo $$ > cgroup.procs && timeout 1 sh -c 'while :; do :; done'; true",
        ]);
        // SAFETY: fchdir is async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                if libc::fchdir(deepest) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        assert!(command.status().unwrap().success());
    }
}

impl Drop for DeepCgroup {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // Deepest first; each level is removed from the one above it.
        while let Some(level) = self.levels.pop() {
            drop(level);
            let at = self
                .levels
                .last()
                .map_or(self.parent.as_raw_fd(), |fd| fd.as_raw_fd());
            // SAFETY: a valid directory descriptor and NUL-terminated name.
            unsafe { libc::unlinkat(at, self.name.as_ptr(), libc::AT_REMOVEDIR) };
        }
    }
}

#[test]
fn a_cgroup_deeper_than_path_max_is_skipped_alone() {
    require_root!();
    let root = require_cgroup2!();
    let daemon = Daemon::start(&["--collector.disable-defaults", "--collector.ebpf.cgroup"]);
    daemon.scrape();
    let pod = PodCgroup::create(&root, 0x07);
    pod.run("timeout 0.2 sh -c 'while :; do :; done' || true");
    // 20 levels of 250 characters: 5000 bytes of path.
    let deep = DeepCgroup::create(&root, &"d".repeat(250), 20);
    deep.run_in_deepest();
    let scrape = daemon.scrape();
    let labels = [
        ("pod_uid", pod.uid.as_str()),
        ("container_id", pod.container_id.as_str()),
    ];
    // The busy loop's CPU time depends on the machine's load: compare with the kernel's own
    // account of the container, not a fixed amount.
    let served = scrape.value("ebpf_cgroup_cpu_seconds_total", &labels);
    let kernel = pod.cpu_seconds();
    assert!(
        kernel > 0.0 && (served - kernel).abs() <= 0.05 * kernel + 0.01,
        "the other cgroups are still served: {served} s against cpu.stat's {kernel} s"
    );
    assert!(
        scrape.value("ebpf_cgroups_dropped_total", &[("reason", "unresolvable")]) >= 1.0,
        "{}",
        daemon.log()
    );
    assert_eq!(
        scrape.value(
            "node_scrape_collector_success",
            &[("collector", "ebpf.cgroup")]
        ),
        1.0
    );
    assert_eq!(daemon.log().matches("its path cannot be read").count(), 1);
    // Charged again: not logged again.
    deep.run_in_deepest();
    daemon.scrape();
    assert_eq!(daemon.log().matches("its path cannot be read").count(), 1);
}
