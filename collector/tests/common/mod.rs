//! Shared by the integration tests: the real daemon as a child process, a parser for what it
//! serves, and workloads of a size the tests know.
#![allow(dead_code)] // each test binary uses its own subset

pub mod daemon;
pub mod exposition;
pub mod node_exporter;
pub mod workload;

pub use daemon::Daemon;
pub use exposition::Scrape;

/// Root tests: eBPF needs CAP_BPF and CAP_PERFMON. Skips (with the reason printed) otherwise.
#[macro_export]
macro_rules! require_root {
    () => {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root (eBPF programs need CAP_BPF and CAP_PERFMON)");
            return;
        }
    };
}

/// Mounts tracefs where the classic tracepoint fallback looks for it, if it is not there.
pub fn ensure_tracefs() {
    let events = std::path::Path::new("/sys/kernel/tracing/events");
    if events.is_dir() {
        return;
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
        .status()
        .expect("running mount");
    assert!(
        status.success() && events.is_dir(),
        "cannot mount tracefs at /sys/kernel/tracing"
    );
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

pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
