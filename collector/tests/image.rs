//! The container image `cargo xtask image` builds under target/image/ (`cargo xtask test` builds
//! it first; each test here is skipped, saying so, only when it was not built):
//!
//! - its OCI layout is one index of a linux/amd64 and a linux/arm64 image, FROM scratch, each a
//!   static binary and nothing else, every digest right, the OCI labels set;
//! - (root) a real container runtime, podman, loads the oci-archive and runs the image;
//! - (root) podman runs the amd64 image as the DaemonSet runs it: its root file system
//!   read-only, the host's PID and network namespaces, the DaemonSet's volumes at its mount
//!   paths and its arguments, a service account mounted as the kubelet does; privileged (the
//!   base) and with the `capabilities` overlay's security context. The kernel programs attach,
//!   the host scrapes node_ and ebpf_ families, and the in-cluster API client reaches a (fake)
//!   API server by KUBERNETES_SERVICE_HOST;
//! - the arm64 binary serves node_exporter's families under qemu-user, eBPF collectors off.
mod common;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use common::{Daemon, kube_api::FakeApiServer, prometheus::TempDir, tool, yaml_file};
use serde_json::Value;

/// target/image/, beside target/tmp (`CARGO_TARGET_TMPDIR`).
fn image_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("image")
}

/// The image's layout, or `None` (with the reason printed) when it was not built.
fn layout() -> Option<Layout> {
    let dir = image_dir().join("oci");
    if !dir.join("index.json").is_file() {
        eprintln!(
            "skipped: no image at {}: `cargo xtask image` builds it (`cargo xtask test` does first)",
            dir.display()
        );
        return None;
    }
    Some(Layout { dir })
}

struct Layout {
    dir: PathBuf,
}

impl Layout {
    fn blob_path(&self, descriptor: &Value) -> PathBuf {
        let digest = descriptor["digest"].as_str().expect("a digest");
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.dir.join("blobs/sha256").join(hex)
    }

    /// The blob of `descriptor`, its size and digest checked.
    fn blob(&self, descriptor: &Value) -> Vec<u8> {
        let path = self.blob_path(descriptor);
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            Some(data.len() as u64),
            descriptor["size"].as_u64(),
            "size of {descriptor}"
        );
        assert_eq!(
            format!("sha256:{}", sha256sum(&path)),
            descriptor["digest"].as_str().unwrap(),
            "digest of {}",
            path.display()
        );
        data
    }

    fn json(&self, descriptor: &Value) -> Value {
        serde_json::from_slice(&self.blob(descriptor)).expect("a JSON blob")
    }

    /// The image index that index.json points to.
    fn index(&self) -> Value {
        let top: Value = serde_json::from_slice(
            &std::fs::read(self.dir.join("index.json")).expect("reading index.json"),
        )
        .expect("index.json is JSON");
        let manifests = top["manifests"]
            .as_array()
            .expect("index.json lists manifests");
        assert_eq!(manifests.len(), 1, "index.json: one multi-arch image");
        assert_eq!(
            manifests[0]["mediaType"],
            "application/vnd.oci.image.index.v1+json"
        );
        self.json(&manifests[0])
    }

    /// `arch`'s manifest and config.
    fn image(&self, arch: &str) -> (Value, Value) {
        let index = self.index();
        let descriptor = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["platform"]["architecture"] == arch)
            .unwrap_or_else(|| panic!("no {arch} image in {index}"))
            .clone();
        let manifest = self.json(&descriptor);
        let config = self.json(&manifest["config"]);
        (manifest, config)
    }

    /// `arch`'s root file system, extracted from its layer into a fresh directory.
    fn extract(&self, arch: &str) -> TempDir {
        let (manifest, _) = self.image(arch);
        let rootfs = TempDir::new(&format!("image-rootfs-{arch}"));
        for layer in manifest["layers"].as_array().unwrap() {
            run_ok(
                Command::new(tool("tar"))
                    .arg("-xzf")
                    .arg(self.blob_path(layer))
                    .arg("-C")
                    .arg(rootfs.path()),
            );
        }
        rootfs
    }
}

fn run_ok(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn sha256sum(path: &Path) -> String {
    run_ok(Command::new(tool("sha256sum")).arg(path))
        .split_whitespace()
        .next()
        .expect("sha256sum's digest")
        .to_owned()
}

/// ELF `e_machine` of a static executable (no program interpreter); panics otherwise.
fn static_elf_machine(binary: &[u8]) -> u16 {
    assert_eq!(
        &binary[..6],
        b"\x7fELF\x02\x01",
        "a 64-bit little-endian ELF"
    );
    let u16_at = |at: usize| u16::from_le_bytes(binary[at..at + 2].try_into().unwrap());
    let phoff = u64::from_le_bytes(binary[32..40].try_into().unwrap()) as usize;
    let (size, count) = (usize::from(u16_at(54)), usize::from(u16_at(56)));
    for n in 0..count {
        let kind = u32::from_le_bytes(
            binary[phoff + n * size..phoff + n * size + 4]
                .try_into()
                .unwrap(),
        );
        assert_ne!(kind, 3, "PT_INTERP: dynamically linked");
    }
    u16_at(18)
}

#[test]
fn layout_is_one_index_of_two_static_images_from_scratch() {
    let Some(layout) = layout() else { return };
    assert_eq!(
        std::fs::read_to_string(layout.dir.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let index = layout.index();
    let platforms: BTreeSet<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{}/{}", m["platform"]["os"], m["platform"]["architecture"]))
        .collect();
    assert_eq!(
        platforms,
        BTreeSet::from([r#""linux"/"amd64""#.into(), r#""linux"/"arm64""#.into()])
    );
    for (arch, machine) in [("amd64", 62), ("arm64", 183)] {
        let (manifest, config) = layout.image(arch);
        assert_eq!(
            manifest["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(
            manifest["config"]["mediaType"],
            "application/vnd.oci.image.config.v1+json"
        );
        assert_eq!(
            (config["os"].as_str(), config["architecture"].as_str()),
            (Some("linux"), Some(arch))
        );
        assert_eq!(
            config["config"]["Entrypoint"],
            serde_json::json!(["/bin/collector"])
        );
        let labels = &config["config"]["Labels"];
        for key in [
            "source", "revision", "version", "created", "title", "licenses",
        ] {
            let value = labels[format!("org.opencontainers.image.{key}")].as_str();
            assert!(
                value.is_some_and(|v| !v.is_empty()),
                "{arch}: label {key} in {labels}"
            );
        }
        let revision = labels["org.opencontainers.image.revision"]
            .as_str()
            .unwrap();
        assert!(
            revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit()),
            "{arch}: revision {revision:?} is a commit"
        );
        assert_eq!(
            labels["org.opencontainers.image.version"].as_str(),
            Some(env!("CARGO_PKG_VERSION"))
        );

        // One gzipped layer, its uncompressed digest the config's diff_id, holding the binary
        // and nothing else: no shell, no libraries.
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1, "{arch}: FROM scratch, one layer");
        assert_eq!(
            layers[0]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        layout.blob(&layers[0]);
        let path = layout.blob_path(&layers[0]);
        let diff_id = run_ok(
            Command::new("sh")
                .arg("-c")
                .arg(format!("gzip -dc '{}' | sha256sum", path.display())),
        );
        assert_eq!(
            config["rootfs"]["diff_ids"],
            serde_json::json!([format!(
                "sha256:{}",
                diff_id.split_whitespace().next().unwrap()
            )])
        );
        let listing = run_ok(Command::new(tool("tar")).arg("-tzvf").arg(&path));
        let entries: Vec<(&str, &str)> = listing
            .lines()
            .map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                (fields[1], fields[5])
            })
            .collect();
        assert_eq!(
            entries,
            [("0/0", "bin/"), ("0/0", "bin/collector")],
            "{arch} layer:\n{listing}"
        );
        let rootfs = layout.extract(arch);
        let binary = std::fs::read(rootfs.path().join("bin/collector")).unwrap();
        assert_eq!(static_elf_machine(&binary), machine, "{arch}: ELF machine");
    }

    // The oci-archive holds the same layout.
    let archive = oci_archive();
    let mut archived: Vec<String> = run_ok(Command::new(tool("tar")).arg("-tf").arg(&archive))
        .lines()
        .filter(|name| !name.ends_with('/'))
        .map(str::to_owned)
        .collect();
    archived.sort();
    let mut files = vec!["index.json".to_owned(), "oci-layout".to_owned()];
    files.extend(
        std::fs::read_dir(layout.dir.join("blobs/sha256"))
            .unwrap()
            .map(|e| format!("blobs/sha256/{}", e.unwrap().file_name().to_string_lossy())),
    );
    files.sort();
    assert_eq!(archived, files, "{}", archive.display());
}

fn oci_archive() -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(image_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".oci.tar"))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one oci-archive in {}",
        image_dir().display()
    );
    found[0].clone()
}

/// podman in a store of the test's own (a temporary directory, vfs: plain directories), as root.
/// On the test machines: runc, not podman's default crun (crun 1.8 refuses a host with cgroup v1
/// controllers beside a cgroup2 hierarchy that has a controller: "cgroups in hybrid mode not
/// supported"), and limits no higher than the ones podman runs with (`container_limits`: raising
/// a hard limit needs CAP_SYS_RESOURCE, which the test machines' bounding set lacks).
/// Dropped: its containers and images removed, then the store.
struct Podman {
    store: TempDir,
    /// The containers' (and conmon's) cgroup parent, of this instance's own, removed with it.
    cgroup: String,
}

impl Podman {
    fn new() -> Self {
        let store = TempDir::new("podman");
        let cgroup = format!(
            "collector-image-test-{}",
            store.path().file_name().unwrap().to_string_lossy()
        );
        Self { store, cgroup }
    }

    /// `podman run` in this instance's cgroup parent.
    fn run_command(&self) -> Command {
        let mut command = self.command();
        command
            .arg("run")
            .arg(format!("--cgroup-parent=/{}", self.cgroup));
        command
    }

    fn command(&self) -> Command {
        let store = self.store.path();
        let mut command = Command::new(tool("podman"));
        command
            .arg("--root")
            .arg(store.join("root"))
            .arg("--runroot")
            .arg(store.join("run"))
            .arg("--tmpdir")
            .arg(store.join("tmp"))
            .args(["--storage-driver", "vfs", "--events-backend", "none"])
            .args(["--cgroup-manager", "cgroupfs", "--runtime", "runc"]);
        command
    }

    fn run(&self, args: &[&str]) -> String {
        run_ok(self.command().args(args))
    }

    /// Loads the oci-archive; the loaded image's name.
    fn load(&self) -> String {
        let archive = oci_archive();
        let loaded = self.run(&["load", "--quiet", "--input", archive.to_str().unwrap()]);
        loaded
            .lines()
            .find_map(|line| line.strip_prefix("Loaded image: "))
            .unwrap_or_else(|| panic!("podman load said {loaded:?}"))
            .trim()
            .to_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self
            .command()
            .args(["rm", "--all", "--force", "--time", "0"])
            .output();
        let _ = self.command().args(["rmi", "--all", "--force"]).output();
        // Never remove a directory with something mounted below it: unmount what podman left.
        let store = self.store.path().to_str().unwrap().to_owned();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut left: Vec<&str> = mountinfo
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .filter(|point| point.starts_with(&store))
            .collect();
        left.sort_by_key(|point| std::cmp::Reverse(point.len()));
        for point in left {
            let _ = Command::new("umount").args(["--lazy", point]).status();
        }
        // The cgroup parent, in each hierarchy (cgroup v1 has several), with conmon's below it;
        // rmdir removes only empty cgroups.
        let root = Path::new("/sys/fs/cgroup");
        let mut hierarchies = vec![root.to_owned()];
        hierarchies.extend(
            std::fs::read_dir(root)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path()),
        );
        for hierarchy in hierarchies {
            let parent = hierarchy.join(&self.cgroup);
            let _ = std::fs::remove_dir(parent.join("conmon"));
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// The container's limits: the host's open files (podman's default is above the test machines'
/// hard limit), and as many processes as podman 4.3 leaves itself room for (it runs with a hard
/// RLIMIT_NPROC of 32768 on the test machines, above which runc cannot raise the container's).
fn container_limits() -> Vec<String> {
    let mut files = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid resource and a pointer to a rlimit of our own.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut files) };
    assert_eq!(got, 0);
    vec![
        format!("--ulimit=nofile={0}:{0}", files.rlim_max),
        "--ulimit=nproc=4096:4096".to_owned(),
    ]
}

/// podman (4.3 on Debian 12) loads the oci-archive, takes this machine's platform from the
/// index, and sees the labels and entry point.
#[test]
fn podman_loads_the_oci_archive() {
    require_root!();
    let Some(layout) = layout() else { return };
    let podman = Podman::new();
    let image = podman.load();
    let inspected: Value =
        serde_json::from_str(&podman.run(&["image", "inspect", &image])).expect("podman's JSON");
    let inspected = &inspected[0];
    assert_eq!(inspected["Architecture"], "amd64", "{inspected}");
    assert_eq!(inspected["Os"], "linux");
    assert_eq!(
        inspected["Config"]["Entrypoint"],
        serde_json::json!(["/bin/collector"])
    );
    let (_, config) = layout.image("amd64");
    assert_eq!(inspected["Labels"], config["config"]["Labels"]);
    // No shell to run: the entry point is the collector itself.
    let version = run_ok(
        podman
            .run_command()
            .args(["--rm", "--network", "none"])
            .args(container_limits())
            .args([image.as_str(), "--version"]),
    );
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
}

/// How the container gets its privileges: the base DaemonSet's `privileged: true`, or the
/// `capabilities` overlay's list.
#[derive(Clone, Copy, PartialEq)]
enum Privileges {
    Privileged,
    CapabilitiesOverlay,
}

/// The amd64 image in podman as the DaemonSet runs it: the pod's host namespaces, the
/// container's volumes, arguments and security context (the base's, or the overlay's), a
/// service account mounted as the kubelet does, the API server's address in the environment.
fn runs_as_the_daemonset_runs_it(privileges: Privileges) {
    let Some(layout) = layout() else { return };
    let kubernetes = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes");
    let daemonset = yaml_file(&kubernetes.join("base/daemonset.yaml"));
    let pod = &daemonset["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let security = match privileges {
        Privileges::Privileged => container["securityContext"].clone(),
        Privileges::CapabilitiesOverlay => {
            let patch = yaml_file(&kubernetes.join("overlays/capabilities/capabilities.yaml"));
            patch["spec"]["template"]["spec"]["containers"][0]["securityContext"].clone()
        }
    };
    let (_, config) = layout.image("amd64");
    let revision = config["config"]["Labels"]["org.opencontainers.image.revision"]
        .as_str()
        .unwrap()
        .to_owned();

    let server = FakeApiServer::start(
        serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "shop", "uid": "0", "resourceVersion": "1"},
            "spec": {"nodeName": "image-test-node", "containers": [{"name": "app"}]},
            "status": {}
        }),
        true,
    );
    let secrets = TempDir::new("image-service-account");
    std::fs::write(
        secrets.path().join("ca.crt"),
        server.ca_pem.as_ref().unwrap(),
    )
    .unwrap();
    std::fs::write(secrets.path().join("token"), "image-test-token").unwrap();
    std::fs::write(secrets.path().join("namespace"), "ebpf-node-collector").unwrap();

    let podman = Podman::new();
    let image = podman.load();
    let name = format!("collector-{}", std::process::id());
    let mut command = podman.run_command();
    command.args(["--rm", "--name", &name]);
    command.args(container_limits());
    // The pod's namespaces: the host's PID, network (and with it UTS) namespaces.
    assert_eq!(pod["hostPID"], true);
    assert_eq!(pod["hostNetwork"], true);
    command.args(["--pid", "host", "--network", "host", "--uts", "host"]);
    // The security context.
    assert_eq!(security["readOnlyRootFilesystem"], true);
    command.args(["--read-only", "--read-only-tmpfs=false"]);
    command.arg(format!(
        "--user={}:{}",
        security["runAsUser"], security["runAsGroup"]
    ));
    if security["privileged"] == true {
        command.arg("--privileged");
    } else {
        let capabilities = &security["capabilities"];
        assert_eq!(capabilities["drop"], serde_json::json!(["ALL"]));
        command.args(["--cap-drop", "all"]);
        // Those of the overlay's the test machine's bounding set has (not CAP_SYS_RESOURCE).
        for name in common::deployment_capabilities(&[]).split(',') {
            command.args(["--cap-add", name.trim_start_matches('+')]);
        }
        if security["allowPrivilegeEscalation"] == false {
            command.args(["--security-opt", "no-new-privileges"]);
        }
        if security["seccompProfile"]["type"] == "Unconfined" {
            command.args(["--security-opt", "seccomp=unconfined"]);
        }
    }
    // The volumes, at their mount paths.
    let volumes = pod["volumes"].as_array().expect("volumes");
    for mount in container["volumeMounts"].as_array().expect("volumeMounts") {
        let volume = volumes
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap_or_else(|| panic!("no volume for {mount}"));
        let host = volume["hostPath"]["path"]
            .as_str()
            .unwrap_or_else(|| panic!("only hostPath volumes are reproduced: {volume}"));
        let mut options = vec![if mount["readOnly"] == true {
            "ro"
        } else {
            "rw"
        }];
        if mount["mountPropagation"] == "HostToContainer" {
            options.push("rslave");
        }
        command.arg(format!(
            "--volume={host}:{}:{}",
            mount["mountPath"].as_str().unwrap(),
            options.join(",")
        ));
    }
    command.arg(format!(
        "--volume={}:/var/run/secrets/kubernetes.io/serviceaccount:ro",
        secrets.path().display()
    ));
    command.args(["--env", "NODE_NAME=image-test-node"]);
    command.args(["--env", "KUBERNETES_SERVICE_HOST=127.0.0.1"]);
    command.arg(format!("--env=KUBERNETES_SERVICE_PORT={}", server.port));
    command.arg(&image);
    // The DaemonSet's arguments, but its port: the container listens in the host's network
    // namespace, where 9100 may be taken; Daemon adds a loopback port and finds it in the log.
    command.args(
        container["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().unwrap())
            .filter(|a| !a.starts_with("--web.listen-address")),
    );
    let daemon = Daemon::spawn(command);

    // Served once the programs are attached.
    let scrape = daemon.scrape();
    let attached: Vec<_> = scrape.matching("ebpf_program_attached", &[]).collect();
    assert!(
        attached.len() >= 10 && attached.iter().all(|s| s.value == 1.0),
        "every kernel program attached: {attached:?}\nlog:\n{}",
        daemon.log()
    );
    for program in [
        "sched_switch",
        "block_rq_issue",
        "cgroup_skb_ingress",
        "tcp_retransmit_skb",
    ] {
        assert_eq!(
            scrape.sum("ebpf_program_attached", &[("program", program)]),
            1.0,
            "{program} attached"
        );
    }
    let built_from: Vec<&str> = scrape
        .matching("ebpf_build_info", &[])
        .map(|s| s.labels["revision"].as_str())
        .collect();
    assert_eq!(
        built_from,
        [&revision[..12]],
        "ebpf_build_info's revision is the image's label (an image built while HEAD moved needs \
         `cargo xtask image` again)"
    );
    // node_exporter's families, read through /host/proc, /host/sys and /host/root.
    for family in [
        "node_cpu_seconds_total",
        "node_memory_MemTotal_bytes",
        "node_load1",
        "node_boot_time_seconds",
        "node_uname_info",
        "node_os_info",
    ] {
        assert!(
            scrape.has(family),
            "{family} missing; log:\n{}",
            daemon.log()
        );
    }
    assert!(
        scrape.sum("node_network_receive_bytes_total", &[("device", "lo")]) > 0.0,
        "the host's loopback traffic (host network)"
    );
    assert_eq!(
        scrape
            .matching("node_filesystem_size_bytes", &[("mountpoint", "/")])
            .count(),
        1,
        "the host's root file system, through /host/root; log:\n{}",
        daemon.log()
    );
    let failed: Vec<_> = scrape
        .matching("node_scrape_collector_success", &[])
        .filter(|s| s.value != 1.0)
        .map(|s| s.labels["collector"].clone())
        .collect();
    assert!(
        failed.iter().all(|c| !c.starts_with("ebpf.")),
        "eBPF collectors failed: {failed:?}"
    );

    // The in-cluster client found the API server by KUBERNETES_SERVICE_HOST (an IP: nothing to
    // resolve, which a static glibc could not do without its NSS modules) with the token.
    let mut asked = Vec::new();
    for _ in 0..100 {
        asked = server.requests();
        if !asked.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let request = asked
        .iter()
        .find(|r| r.line.contains("/api/v1/pods"))
        .unwrap_or_else(|| panic!("no pod list request: {asked:?}; log:\n{}", daemon.log()));
    assert!(
        request.line.contains("image-test-node"),
        "this node's pods: {request:?}"
    );
    assert_eq!(
        request.authorization.as_deref(),
        Some("Bearer image-test-token")
    );

    // The collector's root is the image's, read-only; its capabilities are the container's.
    let pid = podman
        .run(&["inspect", "--format", "{{.State.Pid}}", &name])
        .trim()
        .to_owned();
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root_mount = mountinfo
        .lines()
        .find(|line| line.split(' ').nth(4) == Some("/"))
        .expect("a root mount");
    assert!(
        root_mount
            .split(' ')
            .nth(5)
            .unwrap()
            .split(',')
            .any(|o| o == "ro"),
        "read-only root: {root_mount}"
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
        .unwrap();
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    assert_eq!(
        effective & CAP_SYS_ADMIN != 0,
        privileges == Privileges::Privileged,
        "CapEff {effective:x}"
    );

    // After the start-up peak and some scrapes, its memory fits the DaemonSet's resources.
    for _ in 0..20 {
        daemon.get("/metrics");
    }
    assert_memory_fits_the_resources(&pid, &container["resources"]);
    drop(daemon);
    podman.run(&["rm", "--force", "--time", "0", &name]);
}

/// What the container's memory limit charges for `pid`, against the DaemonSet's memory request
/// and limit (docs/deploying.md, "Resources"): its resident memory (now, and the start-up peak)
/// plus its eBPF maps, which kernels from 5.11 charge to the pod's memory cgroup but not to its
/// RSS. The request covers what it holds now; the limit twice the peak, the room left for the
/// per-CPU maps, disks and series of a node much larger than the test machine.
fn assert_memory_fits_the_resources(pid: &str, resources: &Value) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let bytes = |key: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status:\n{status}"))
            * 1024
    };
    let maps = bpf_map_bytes(pid);
    let steady = bytes("VmRSS:") + maps;
    let peak = bytes("VmHWM:") + maps;
    let request = quantity_bytes(&resources["requests"]["memory"]);
    let limit = quantity_bytes(&resources["limits"]["memory"]);
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    let measured = format!(
        "resident {:.1} MiB, peak {:.1} MiB, eBPF maps {:.1} MiB",
        mib(bytes("VmRSS:")),
        mib(bytes("VmHWM:")),
        mib(maps)
    );
    eprintln!("{measured}");
    // The request is a small node's steady use (the 2-vCPU VM the numbers come from); the
    // per-CPU maps of a larger test machine outgrow it, as they would on such a node.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus <= 4 {
        assert!(
            steady <= request,
            "{measured}: above the memory request {}",
            resources["requests"]["memory"]
        );
    } else {
        eprintln!("memory request not checked: {cpus} CPUs, sized for a node of 2 to 4");
    }
    assert!(
        2 * peak <= limit,
        "{measured}: the memory limit {} is not twice the peak",
        resources["limits"]["memory"]
    );
}

/// The kernel memory of the eBPF maps `pid` holds, from its descriptors' `memlock`.
fn bpf_map_bytes(pid: &str) -> u64 {
    let descriptors = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap();
    let mut total = 0;
    for descriptor in descriptors.flatten() {
        if std::fs::read_link(descriptor.path())
            .is_ok_and(|target| target == Path::new("anon_inode:bpf-map"))
        {
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                descriptor.file_name().to_string_lossy()
            ))
            .unwrap_or_default();
            total += info
                .lines()
                .find_map(|line| line.strip_prefix("memlock:"))
                .and_then(|bytes| bytes.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    assert!(total > 0, "no eBPF maps among the descriptors of {pid}");
    total
}

/// A Kubernetes memory quantity in bytes: an integer with a binary (`Mi`) or decimal (`M`)
/// suffix, or none.
fn quantity_bytes(quantity: &Value) -> u64 {
    let text = quantity
        .as_str()
        .unwrap_or_else(|| panic!("a quantity string: {quantity}"));
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let multiplier: u64 = match &text[digits.len()..] {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        suffix => panic!("{text}: suffix {suffix:?} not read here"),
    };
    let number: u64 = digits.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
    number * multiplier
}

#[test]
fn memory_quantities_are_read_as_kubernetes_reads_them() {
    for (text, bytes) in [
        ("64Mi", 64 << 20),
        ("1Gi", 1 << 30),
        ("128M", 128_000_000),
        ("4096", 4096),
    ] {
        assert_eq!(quantity_bytes(&Value::from(text)), bytes, "{text}");
    }
}

#[test]
fn amd64_image_runs_as_the_privileged_daemonset_runs_it() {
    require_root!();
    runs_as_the_daemonset_runs_it(Privileges::Privileged);
}

#[test]
fn amd64_image_runs_with_the_capabilities_overlay() {
    require_root!();
    runs_as_the_daemonset_runs_it(Privileges::CapabilitiesOverlay);
}

/// The arm64 binary under qemu-user (run directly: binfmt_misc may not be registered), its eBPF
/// collectors off (qemu does not translate bpf()): node_exporter's families, and the build info
/// says arm64.
#[test]
fn arm64_binary_serves_node_metrics_under_qemu() {
    let Some(layout) = layout() else { return };
    let rootfs = layout.extract("arm64");
    let mut command = Command::new(tool("qemu-aarch64-static"));
    command
        .arg(rootfs.path().join("bin/collector"))
        .args(
            EBPF_COLLECTORS
                .iter()
                .map(|c| format!("--no-collector.{c}")),
        )
        .stdin(Stdio::null());
    let daemon = Daemon::spawn(command);
    let scrape = daemon.scrape();
    assert_eq!(
        scrape.value("node_exporter_build_info", &[("goarch", "arm64")]),
        1.0,
        "{}",
        daemon.log()
    );
    for family in [
        "node_cpu_seconds_total",
        "node_memory_MemTotal_bytes",
        "node_load1",
        "node_network_receive_bytes_total",
        "node_uname_info",
    ] {
        assert!(
            scrape.has(family),
            "{family} missing; log:\n{}",
            daemon.log()
        );
    }
    assert!(
        !scrape.has("ebpf_program_attached"),
        "eBPF collectors are off"
    );
}

/// The eBPF collectors, each switched off for the qemu run.
const EBPF_COLLECTORS: [&str; 5] = [
    "ebpf.block",
    "ebpf.cgroup",
    "ebpf.irq",
    "ebpf.net",
    "ebpf.sched",
];
