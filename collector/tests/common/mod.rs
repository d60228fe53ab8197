//! Shared by the integration tests: the real daemon as a child process, a parser for what it
//! serves, and workloads of a size the tests know.
#![allow(dead_code)] // each test binary uses its own subset

pub mod cgroup;
pub mod daemon;
pub mod exposition;
pub mod kube_api;
pub mod node_exporter;
pub mod prometheus;
pub mod workload;

pub use daemon::Daemon;
pub use exposition::Scrape;

/// Root tests: eBPF needs CAP_BPF and CAP_PERFMON. Skips (with the reason printed) otherwise.
#[macro_export]
macro_rules! require_root {
    () => {
        // SAFETY: geteuid takes nothing and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root (eBPF programs need CAP_BPF and CAP_PERFMON)");
            return;
        }
    };
}

/// One root test per hook type, each running `$check(hook_type)`: `$tp_btf` (skipped, with the
/// reason, on a kernel without BTF), `$raw_tp`, and `$tracepoint` (tracefs mounted first).
#[macro_export]
macro_rules! test_each_hook_type {
    ($check:path => $tp_btf:ident, $raw_tp:ident, $tracepoint:ident) => {
        #[test]
        fn $tp_btf() {
            $crate::require_root!();
            if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
                eprintln!("skipped: this kernel has no BTF, so no tp_btf hooks");
                return;
            }
            $check("tp_btf");
        }

        #[test]
        fn $raw_tp() {
            $crate::require_root!();
            $check("raw_tp");
        }

        #[test]
        fn $tracepoint() {
            $crate::require_root!();
            $crate::common::ensure_tracefs();
            $check("tracepoint");
        }
    };
}

/// Mounts tracefs where the classic tracepoint fallback looks for it, if it is not there. Tests
/// of one binary run in parallel: one mounts while the others wait, and a mount that lost a race
/// to another process still counts once tracefs is there.
pub fn ensure_tracefs() {
    static MOUNTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = MOUNTING.lock().unwrap_or_else(|e| e.into_inner());
    let events = std::path::Path::new("/sys/kernel/tracing/events");
    if events.is_dir() {
        return;
    }
    let output = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
        .output()
        .expect("running mount");
    assert!(
        events.is_dir(),
        "cannot mount tracefs at /sys/kernel/tracing: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A root directory (for `--path.rootfs`) whose /etc/os-release is a FIFO nobody writes: the
/// `os` collector's read of it hangs, as on a hung mount. Removed with the returned guard.
pub fn rootfs_with_a_hanging_os_release(name: &str) -> TempDir {
    let root = std::env::temp_dir().join(format!("{name}-rootfs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let fifo = std::ffi::CString::new(root.join("etc/os-release").to_str().unwrap()).unwrap();
    // SAFETY: a valid, NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    TempDir(root)
}

/// A directory removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The capabilities the Kubernetes `capabilities` overlay adds (the systemd unit grants the
/// same), as far as the test itself holds them (a sandbox may lack CAP_SYS_RESOURCE, only
/// needed before 5.11 anyway), less `without`, for setpriv: "+bpf,+perfmon,...".
pub fn deployment_capabilities(without: &[&str]) -> String {
    /// Capability numbers (linux/capability.h), to check the bounding set.
    const NUMBERS: [(&str, u32); 7] = [
        ("dac_read_search", 2),
        ("net_admin", 12),
        ("sys_ptrace", 19),
        ("sys_admin", 21),
        ("sys_resource", 24),
        ("perfmon", 38),
        ("bpf", 39),
    ];
    let overlay = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/kubernetes/overlays/capabilities/capabilities.yaml");
    let patch = yaml_file(&overlay);
    let added = patch["spec"]["template"]["spec"]["containers"][0]["securityContext"]
        ["capabilities"]["add"]
        .as_array()
        .expect("the overlay adds capabilities")
        .iter()
        .map(|name| name.as_str().unwrap().to_ascii_lowercase())
        .collect::<Vec<_>>();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let bounding = status
        .lines()
        .find_map(|line| line.strip_prefix("CapBnd:"))
        .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
        .unwrap();
    added
        .iter()
        .filter(|name| !without.contains(&name.as_str()))
        .filter(|name| {
            let bit = NUMBERS
                .iter()
                .find(|(known, _)| known == name)
                .unwrap_or_else(|| panic!("capability {name} of the overlay has no number here"))
                .1;
            bounding & (1 << bit) != 0
        })
        .map(|name| format!("+{name}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Flags (for the collector or node_exporter) that serve only collector `name`'s families.
pub fn only_collector(name: &str) -> Vec<String> {
    vec![
        "--collector.disable-defaults".to_owned(),
        format!("--collector.{name}"),
        "--web.disable-exporter-metrics".to_owned(),
    ]
}

/// Asserts that every one of `programs` is attached through `hook_type`.
pub fn assert_attached(scrape: &Scrape, programs: &[&str], hook_type: &str) {
    for program in programs {
        assert_eq!(
            scrape.value(
                "ebpf_program_attached",
                &[("program", program), ("hook_type", hook_type)]
            ),
            1.0,
            "{program} not attached as {hook_type}"
        );
    }
}

/// Finds an executable on PATH, failing with the fix when it is missing.
pub fn tool(name: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{name} not found on PATH: run `cargo xtask setup`"))
}

/// Whether the running kernel is `major.minor` or later (by /proc/sys/kernel/osrelease), for
/// checks of what older kernels lack: tests must pass on every kernel of the matrix
/// (docs/kernels.md), 5.10 included.
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    version >= (major, minor)
}

pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Reads YAML (every document of a stream) as JSON, through the PyYAML that `cargo xtask setup`
/// installs with kubernetes-validate: Rust has no maintained YAML crate worth a dependency here.
pub fn yaml_documents(yaml: &str) -> Vec<serde_json::Value> {
    use std::io::Write as _;
    let mut child = std::process::Command::new(tool("python3"))
        .args([
            "-c",
            "import json, sys, yaml; json.dump(list(yaml.safe_load_all(sys.stdin)), sys.stdout)",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "reading YAML with PyYAML (run `cargo xtask setup`): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    match serde_json::from_slice(&output.stdout).expect("PyYAML's JSON") {
        serde_json::Value::Array(documents) => documents
            .into_iter()
            .filter(|document| !document.is_null())
            .collect(),
        other => panic!("expected a list of documents, got {other}"),
    }
}

/// The one YAML document in `path`, as JSON.
pub fn yaml_file(path: &std::path::Path) -> serde_json::Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut documents = yaml_documents(&text);
    assert_eq!(documents.len(), 1, "{}: one YAML document", path.display());
    documents.remove(0)
}
