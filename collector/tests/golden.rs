//! The /proc and /sys collectors against a fake host (tests/fixtures/host: proc, sys, udev data
//! and root trees full of edge cases), served through the `--path.*` flags:
//!
//! - each collector's output must equal its golden file, tests/golden/<collector>.prom
//!   (`UPDATE_GOLDEN=1 cargo test --test golden` rewrites them, `UPDATE_GOLDEN=xfs,nfs` only
//!   those collectors'; review the diff);
//! - the real node_exporter, given the same tree and flags, must print the same families, HELP,
//!   TYPE, labels and values, except where a golden file names a known difference between
//!   node_exporter 1.5.0 (Debian's, the peer here) and 1.12 (the release followed).
//!
//! A golden file starts with directives:
//! - `## args: <flags>`: extra flags for both exporters;
//! - `## volatile: <family> ...`: values that depend on the machine (statfs of the tree), masked;
//! - `## node_exporter: <family> <reason>`: a known 1.5.0-vs-1.12 difference, not compared;
//! - `## node_exporter: skip <reason>`: the collector is not compared with node_exporter.
mod common;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use common::{
    Daemon,
    exposition::{PrintedFamily, is_exporter_own, printed_families},
    node_exporter::NodeExporter,
};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// Collectors without a golden file, and why.
const NOT_FROM_FILES: &[(&str, &str)] = &[
    (
        "ethtool",
        "SIOCETHTOOL ioctls on live devices, no file (tests/netlink.rs)",
    ),
    (
        "logind",
        "asks logind over D-Bus, no file (tests/dbus.rs, tests/golden/dbus/)",
    ),
    (
        "network_route",
        "reads rtnetlink routes, no file (tests/netlink.rs)",
    ),
    (
        "perf",
        "reads live perf_event_open(2) counters, no file (tests/perf.rs)",
    ),
    (
        "systemd",
        "asks systemd over D-Bus, no file (tests/dbus.rs, tests/golden/dbus/)",
    ),
    (
        "tcpstat",
        "reads inet_diag sockets, no file (tests/netlink.rs)",
    ),
    ("time", "reads the clock, no file"),
    ("timex", "reads adjtimex(2), no file"),
    ("uname", "reads uname(2), no file"),
];

struct Golden {
    collector: String,
    path: PathBuf,
    args: Vec<String>,
    volatile: Vec<String>,
    /// Families not compared with node_exporter, with the reason.
    differs: BTreeMap<String, String>,
    skip_node_exporter: Option<String>,
    directives: String,
    body: String,
}

impl Golden {
    fn load(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).unwrap();
        let collector = path.file_stem().unwrap().to_string_lossy().into_owned();
        let mut golden = Self {
            collector,
            path: path.to_owned(),
            args: Vec::new(),
            volatile: Vec::new(),
            differs: BTreeMap::new(),
            skip_node_exporter: None,
            directives: String::new(),
            body: String::new(),
        };
        for line in text.lines() {
            let Some(directive) = line.strip_prefix("## ") else {
                golden.body.push_str(line);
                golden.body.push('\n');
                continue;
            };
            golden.directives.push_str(line);
            golden.directives.push('\n');
            let (key, rest) = directive.split_once(':').unwrap_or((directive, ""));
            let rest = rest.trim();
            match key {
                "args" => golden
                    .args
                    .extend(rest.split_whitespace().map(str::to_owned)),
                "volatile" => golden
                    .volatile
                    .extend(rest.split_whitespace().map(str::to_owned)),
                "node_exporter" => {
                    let (family, reason) = rest.split_once(' ').unwrap_or((rest, ""));
                    if family == "skip" {
                        golden.skip_node_exporter = Some(reason.to_owned());
                    } else {
                        golden.differs.insert(family.to_owned(), reason.to_owned());
                    }
                }
                _ => panic!("{}: unknown directive {line:?}", path.display()),
            }
        }
        golden
    }

    /// Flags for either exporter: the fake host, only this collector, and the file's extras.
    fn flags(&self) -> Vec<String> {
        let host = Path::new(MANIFEST_DIR).join("tests/fixtures/host");
        let mut flags = vec![
            format!("--path.procfs={}", host.join("proc").display()),
            format!("--path.sysfs={}", host.join("sys").display()),
            format!("--path.rootfs={}", host.join("root").display()),
            format!("--path.udev.data={}", host.join("udev").display()),
        ];
        flags.extend(common::only_collector(&self.collector));
        flags.extend(self.args.iter().cloned());
        flags
    }

    /// Masks values that depend on the machine or the moment.
    fn normalize(&self, exposition: &str) -> String {
        // Labels that hold a sysfs path (rapl's `path`) name the checkout's location.
        let host = Path::new(MANIFEST_DIR).join("tests/fixtures/host");
        let exposition = exposition.replace(&*host.to_string_lossy(), "<host>");
        let mut out = String::new();
        for line in exposition.lines() {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            // The build's own revision changes with every commit.
            if line.contains("ebpf_build_info") || line.contains("node_exporter_build_info") {
                continue;
            }
            let masked = !line.starts_with('#')
                && (name == "node_scrape_collector_duration_seconds"
                    || self.volatile.iter().any(|v| v == name));
            match line.rsplit_once(' ') {
                Some((series, _)) if masked => {
                    out.push_str(series);
                    out.push_str(" <volatile>");
                }
                _ => out.push_str(line),
            }
            out.push('\n');
        }
        out
    }
}

fn goldens() -> Vec<Golden> {
    let dir = Path::new(MANIFEST_DIR).join("tests/golden");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "prom"))
        .collect();
    paths.sort();
    paths.iter().map(|path| Golden::load(path)).collect()
}

fn collector_output(golden: &Golden) -> String {
    let flags = golden.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let daemon = Daemon::start(&flags);
    daemon.get("/metrics")
}

/// Lines of `expected` and `actual` that differ, marked `-` and `+`.
fn line_diff(expected: &str, actual: &str) -> String {
    let expected: Vec<&str> = expected.lines().collect();
    let actual: Vec<&str> = actual.lines().collect();
    let mut diff = String::new();
    for line in &expected {
        if !actual.contains(line) {
            diff.push_str(&format!("-{line}\n"));
        }
    }
    for line in &actual {
        if !expected.contains(line) {
            diff.push_str(&format!("+{line}\n"));
        }
    }
    if diff.is_empty() {
        diff.push_str("(same lines, different order)\n");
    }
    diff
}

#[test]
fn collectors_match_their_golden_files() {
    let update = std::env::var("UPDATE_GOLDEN").ok();
    let updating = |collector: &str| match update.as_deref() {
        None => false,
        Some("1") => true,
        Some(names) => names.split(',').any(|name| name == collector),
    };
    let mut failures = Vec::new();
    for golden in goldens() {
        let actual = golden.normalize(&collector_output(&golden));
        if updating(&golden.collector) {
            std::fs::write(&golden.path, format!("{}{actual}", golden.directives)).unwrap();
        } else if actual != golden.body {
            failures.push(format!(
                "{} differs from {} (- golden, + collector):\n{}",
                golden.collector,
                golden.path.display(),
                line_diff(&golden.body, &actual)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn fixtures_read_as_node_exporter_reads_them() {
    let mut failures = Vec::new();
    for golden in goldens() {
        if let Some(reason) = &golden.skip_node_exporter {
            eprintln!(
                "{}: not compared with node_exporter: {reason}",
                golden.collector
            );
            continue;
        }
        let flags = golden.flags();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let peer = NodeExporter::start(&flags);
        let theirs = printed_families(&golden.normalize(&peer.get_metrics()));
        let ours = printed_families(&golden.normalize(&collector_output(&golden)));
        let names: std::collections::BTreeSet<&String> = theirs.keys().chain(ours.keys()).collect();
        for name in names {
            if is_exporter_own(name) {
                continue;
            }
            if let Some(reason) = golden.differs.get(name.as_str()) {
                eprintln!("{}: {name} not compared: {reason}", golden.collector);
                continue;
            }
            let missing = PrintedFamily::default();
            let (a, b) = (
                theirs.get(name).unwrap_or(&missing),
                ours.get(name).unwrap_or(&missing),
            );
            if a != b {
                failures.push(format!(
                    "{}: {name}: node_exporter {a:#?}\ncollector {b:#?}",
                    golden.collector
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_file_collector_has_a_golden_file() {
    let goldens: Vec<String> = goldens().into_iter().map(|g| g.collector).collect();
    let missing: Vec<&str> = collector::registry::ALL
        .iter()
        .map(|spec| spec.name)
        .filter(|name| !name.starts_with("ebpf."))
        .filter(|name| !NOT_FROM_FILES.iter().any(|(n, _)| n == name))
        .filter(|name| !goldens.iter().any(|g| g == name))
        .collect();
    assert!(
        missing.is_empty(),
        "collectors without tests/golden/<name>.prom: {missing:?}"
    );
}
