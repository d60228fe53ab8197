//! Root: without the privileges for eBPF, or with a hook the kernel refuses, the daemon still
//! serves everything else and says what is missing.
mod common;

use std::process::Command;

use collector::{collector::CollectorSpec, registry};
use common::{Daemon, Scrape, daemon::BINARY};

/// Every kernel hook of every eBPF collector, from their descriptors.
fn all_hooks() -> Vec<&'static str> {
    let mut hooks: Vec<&str> = ebpf_collectors()
        .iter()
        .flat_map(|spec| spec.kernel.unwrap().hooks)
        .map(|hook| hook.name)
        .collect();
    hooks.sort_unstable();
    hooks.dedup();
    hooks
}

fn ebpf_collectors() -> Vec<&'static CollectorSpec> {
    registry::ALL
        .iter()
        .filter(|spec| spec.kernel.is_some())
        .collect()
}

/// Asserts every hook is attached as `hook_type` (`none`: value 0) and every eBPF collector at
/// `success`.
fn assert_every_hook(scrape: &Scrape, hook_type: &str, success: f64) {
    let attached = if hook_type == "none" { 0.0 } else { 1.0 };
    let hooks = all_hooks();
    assert!(hooks.len() >= 16, "{hooks:?}");
    for hook in hooks {
        assert_eq!(
            scrape.value(
                "ebpf_program_attached",
                &[("program", hook), ("hook_type", hook_type)]
            ),
            attached,
            "{hook}"
        );
    }
    for spec in ebpf_collectors() {
        assert_eq!(
            scrape.value("node_scrape_collector_success", &[("collector", spec.name)]),
            success,
            "{}",
            spec.name
        );
    }
}

/// setpriv running `program` as root whose bounding set is exactly the capabilities overlay's
/// (setpriv cannot keep capabilities across a change of user), so every check the daemon meets
/// is made against it.
fn with_deployment_capabilities(program: &str) -> Command {
    let capabilities = common::deployment_capabilities(&[]);
    let mut command = Command::new(common::tool("setpriv"));
    command.args([
        &format!("--inh-caps=-all,{capabilities}"),
        &format!("--bounding-set=-all,{capabilities}"),
        program,
    ]);
    command
}

fn nothing_attached_but_serving(scrape: &Scrape) {
    assert_every_hook(scrape, "none", 0.0);
    assert!(!scrape.has("ebpf_runqueue_latency_seconds_count"));
    assert!(scrape.has("process_resident_memory_bytes"));
    assert!(scrape.has("ebpf_build_info"));
}

#[test]
fn serves_without_bpf_privileges() {
    require_root!();
    // Root with an empty capability bounding set: no CAP_BPF, CAP_PERFMON or CAP_SYS_ADMIN.
    let mut command = Command::new(common::tool("setpriv"));
    command.args(["--bounding-set=-all", "--inh-caps=-all", BINARY]);
    let daemon = Daemon::spawn(command);
    let scrape = daemon.scrape();
    nothing_attached_but_serving(&scrape);
    let log = daemon.log();
    assert!(
        log.contains("eBPF unavailable: serving every non-eBPF metric"),
        "{log}"
    );
    assert!(
        log.contains("CAP_BPF"),
        "the log names the missing capability:\n{log}"
    );
    // One clear line, not one per scrape, nor one per eBPF collector.
    daemon.scrape();
    let log = daemon.log();
    assert_eq!(log.matches("eBPF unavailable").count(), 1);
    let ebpf_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("level=warn") || l.contains("level=error"))
        .filter(|l| l.contains("ebpf") || l.contains("eBPF"))
        .collect();
    assert_eq!(ebpf_lines.len(), 1, "{ebpf_lines:#?}");
}

/// Starts the daemon with `hook_types` in a private mount namespace where tracefs is hidden
/// under empty tmpfs mounts, so classic tracepoints cannot be attached.
fn without_tracefs(hook_types: &str) -> Daemon {
    let script = "for d in /sys/kernel/tracing /sys/kernel/debug; do \
                  [ -d \"$d\" ] && mount -t tmpfs none \"$d\"; done; exec \"$@\"";
    let mut command = Command::new(common::tool("unshare"));
    command.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
        BINARY,
        hook_types,
    ]);
    Daemon::spawn(command)
}

#[test]
fn serves_when_the_kernel_refuses_every_hook() {
    require_root!();
    // Classic tracepoints are the only type allowed, and tracefs is hidden.
    let daemon = without_tracefs("--ebpf.hook-types=tracepoint");
    let scrape = daemon.scrape();
    nothing_attached_but_serving(&scrape);
    let log = daemon.log();
    for hook in all_hooks() {
        assert!(
            log.lines()
                .any(|l| l.contains("hook unavailable") && l.contains(&format!("hook={hook} "))),
            "no log line for {hook}:\n{log}"
        );
    }
}

#[test]
fn one_refused_hook_type_falls_back_to_the_next() {
    require_root!();
    // Classic tracepoints first, but tracefs is hidden: every hook is refused as a tracepoint and
    // must land on the next type allowed, raw_tp.
    let daemon = without_tracefs("--ebpf.hook-types=tracepoint,raw_tp");
    assert_every_hook(&daemon.scrape(), "raw_tp", 1.0);
}

#[test]
fn the_deployments_capabilities_attach_every_program() {
    require_root!();
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        eprintln!("skipped: this kernel has no BTF, so no tp_btf hooks to check");
        return;
    }
    let daemon = Daemon::spawn(with_deployment_capabilities(BINARY));
    let scrape = daemon.scrape();
    assert_every_hook(&scrape, "tp_btf", 1.0);
    common::assert_attached(
        &scrape,
        &["cgroup_skb_ingress", "cgroup_skb_egress"],
        "cgroup_skb",
    );
    assert!(!daemon.log().contains("walking the hierarchy"));
}

/// Applies deploy/seccomp/ebpf-node-collector.json as a container runtime would (libseccomp,
/// everything else fails with EPERM), then runs the rest of the command line.
const APPLY_SECCOMP_PROFILE: &str = r#"
import errno, json, os, sys, seccomp
profile = json.load(open(sys.argv[1]))
assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
rules = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
for group in profile["syscalls"]:
    assert group["action"] == "SCMP_ACT_ALLOW"
    for name in group["names"]:
        try:
            rules.add_rule(seccomp.ALLOW, name)
        except (RuntimeError, ValueError):
            pass  # not a system call of this architecture
rules.load()
os.execv(sys.argv[2], sys.argv[2:])
"#;

#[test]
fn the_shipped_seccomp_profile_allows_what_the_daemon_does() {
    require_root!();
    let profile = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/seccomp/ebpf-node-collector.json");
    // Debian's python3-seccomp is for Debian's interpreter, whatever python3 is first on PATH.
    let mut command = with_deployment_capabilities("/usr/bin/python3");
    command.args([
        "-c",
        APPLY_SECCOMP_PROFILE,
        profile.to_str().unwrap(),
        BINARY,
    ]);
    let daemon = Daemon::spawn(command);
    let scrape = daemon.scrape();
    // Without the profile, a call it lacks would fail with EPERM somewhere below.
    for hook in all_hooks() {
        assert_eq!(
            scrape.sum("ebpf_program_attached", &[("program", hook)]),
            1.0,
            "{hook}:\n{}",
            daemon.log()
        );
    }
    let failed: Vec<_> = scrape
        .matching("node_scrape_collector_success", &[])
        .filter(|sample| sample.value != 1.0)
        .map(|sample| sample.labels["collector"].clone())
        .collect();
    let unconfined = Daemon::start(&[]).scrape();
    let failed_unconfined: Vec<_> = unconfined
        .matching("node_scrape_collector_success", &[])
        .filter(|sample| sample.value != 1.0)
        .map(|sample| sample.labels["collector"].clone())
        .collect();
    assert_eq!(
        failed, failed_unconfined,
        "collectors failing only under the profile"
    );
    // Per-item failures a collector reports without failing (a statfs refused...).
    let families = |scrape: &Scrape| -> std::collections::BTreeSet<String> {
        scrape.samples.iter().map(|s| s.name.clone()).collect()
    };
    let missing: Vec<_> = families(&unconfined)
        .difference(&families(&scrape))
        .cloned()
        .collect();
    assert!(missing.is_empty(), "missing under the profile: {missing:?}");
    assert_eq!(
        scrape.sum("node_filesystem_device_error", &[]),
        unconfined.sum("node_filesystem_device_error", &[]),
        "mounts failing only under the profile"
    );
    assert!(
        !daemon.log().contains("Operation not permitted"),
        "{}",
        daemon.log()
    );
    let status = daemon.stop_with(libc::SIGTERM);
    assert!(status.success(), "{status}");
}
