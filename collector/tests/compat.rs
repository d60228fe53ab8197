//! Drop-in compatibility on this machine's real /proc and /sys:
//!
//! - the Debian node_exporter runs beside the collector; for every collector both implement,
//!   family names, types, HELP and label names must match, and values must agree within a
//!   tolerance for samples taken close together. Remaining differences are printed; each must be
//!   a known difference between node_exporter 1.5.0 (the peer) and 1.12 (the release followed),
//!   listed below with its reason.
//! - every metric the node-mixin alerts, recording rules and dashboards (and the AWS
//!   observability accelerator's "Node Exporter / Nodes" dashboard, built from the mixin) read is
//!   emitted.
mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{
    Daemon,
    exposition::{Scrape, is_exporter_own, printed_families},
    node_exporter::{NodeExporter, UPSTREAM_DEFAULTS},
};

/// Known, intended differences: (collector, family, reason). A family listed here is not
/// compared; anything else that differs fails the test.
const KNOWN_DIFFERENCES: &[(&str, &str, &str)] = &[
    (
        "filesystem",
        "node_filesystem_mount_info",
        "new after 1.5.0",
    ),
    ("softnet", "node_softnet_backlog_len", SOFTNET_NEW),
    ("softnet", "node_softnet_cpu_collision_total", SOFTNET_NEW),
    (
        "softnet",
        "node_softnet_flow_limit_count_total",
        SOFTNET_NEW,
    ),
    ("softnet", "node_softnet_received_rps_total", SOFTNET_NEW),
    ("meminfo", "node_memory_Balloon_bytes", MEMINFO_FIXED),
    ("meminfo", "node_memory_FileHugePages_bytes", MEMINFO_FIXED),
    ("meminfo", "node_memory_FilePmdMapped_bytes", MEMINFO_FIXED),
    ("meminfo", "node_memory_Hugetlb_bytes", MEMINFO_FIXED),
    ("meminfo", "node_memory_KReclaimable_bytes", MEMINFO_FIXED),
    ("meminfo", "node_memory_SecPageTables_bytes", MEMINFO_FIXED),
    ("meminfo", "node_memory_Unaccepted_bytes", MEMINFO_FIXED),
];

const SOFTNET_NEW: &str = "softnet_stat columns exported since 1.6-1.8";

const MEMINFO_FIXED: &str = "1.10.0 (#3049) reads /proc/meminfo through procfs' fixed struct \
     instead of exporting every line, so fields procfs does not know are gone";

/// Labels 1.12 added to families 1.5.0 already had: (family prefix, label, reason). They are
/// removed from the collector's series before comparing, so the values are still compared.
const ADDED_LABELS: &[(&str, &str, &str)] = &[
    (
        "node_filesystem_",
        "device_error",
        "the error text, added after 1.5.0",
    ),
    ("node_disk_info", "rotational", "added after 1.5.0"),
    ("node_network_info", "adminstate", "added after 1.5.0"),
];

/// Families whose samples change between two scrapes faster than any tolerance (clocks,
/// counters of the scrape itself, pages under writeback and I/Os in flight while another build
/// writes to the disk, the page tables and kernel stacks of processes the test suite starts and
/// stops: small totals, so one process is more than 5%): only names, types and label names are
/// compared.
const MOVING: &[&str] = &[
    "node_disk_io_now",
    "node_memory_Active_anon_bytes",
    "node_memory_Dirty_bytes",
    "node_memory_Mapped_bytes",
    "node_memory_KernelStack_bytes",
    "node_memory_PageTables_bytes",
    "node_memory_Writeback_bytes",
    "node_scrape_collector_duration_seconds",
    "node_time_seconds",
    // A few MiB that every process starting or exiting moves, the two exporters' own included.
    "node_memory_numa_Active_anon",
    // A state holds a handful of tasks, and who is running changes from one moment to the next.
    "node_processes_state",
    "node_processes_threads_state",
    // Connections open and close between the two reads (tests run beside this one).
    "node_tcp_connection_states",
];

/// Families counted from when each exporter started, so two exporters never agree.
const COUNTED_SINCE_START: &[&str] = &["node_perf_"];

/// Page counts per memory zone and object counts per slab cache: each allocation anywhere moves
/// them, and a small zone or cache moves by more than the slack between two reads.
const MOVING_PREFIXES: &[&str] = &["node_slabinfo_", "node_zoneinfo_"];

type Series = BTreeMap<BTreeMap<String, String>, f64>;

/// The labels and value of one sample line.
fn sample_of(line: &str) -> (BTreeMap<String, String>, f64) {
    let sample = Scrape::parse(line).samples.remove(0);
    (sample.labels, sample.value)
}

/// Whether two readings of the same series, taken moments apart, agree: equal for
/// integers (states, info metrics), within 5% (and a small absolute slack, for the packets and
/// segments of the scrapes themselves) for the rest.
fn close(a: f64, b: f64) -> bool {
    if a == b || (a.is_nan() && b.is_nan()) {
        return true;
    }
    let slack = 0.05 * a.abs().max(b.abs()) + 8.0;
    (a - b).abs() <= slack
}

fn compare_collector(name: &str, differences: &mut Vec<String>) {
    let mut flags = common::only_collector(name);
    flags.extend(UPSTREAM_DEFAULTS.iter().map(|s| (*s).to_owned()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let ours_daemon = Daemon::start(&flags);
    let peer = NodeExporter::start(&flags);
    // Scrape both at once so that moving counters are read moments apart.
    let (theirs, ours) = std::thread::scope(|scope| {
        let theirs = scope.spawn(|| peer.get_metrics());
        let ours = ours_daemon.get("/metrics");
        (theirs.join().unwrap(), ours)
    });
    let theirs = printed_families(&theirs);
    let ours = printed_families(&ours);
    let names: BTreeSet<&String> = theirs.keys().chain(ours.keys()).collect();
    for family in names {
        if is_exporter_own(family) {
            continue;
        }
        if let Some((_, _, reason)) = KNOWN_DIFFERENCES
            .iter()
            .find(|(c, f, _)| *c == name && f == family)
        {
            eprintln!("{name}: {family}: known difference: {reason}");
            continue;
        }
        let (Some(a), Some(b)) = (theirs.get(family), ours.get(family)) else {
            let side = if theirs.contains_key(family) {
                "only node_exporter has it"
            } else {
                "only the collector has it"
            };
            differences.push(format!("{name}: {family}: {side}"));
            continue;
        };
        if a.metric_type != b.metric_type || a.help != b.help {
            differences.push(format!(
                "{name}: {family}: TYPE/HELP {:?} {:?} vs ours {:?} {:?}",
                a.metric_type, a.help, b.metric_type, b.help
            ));
        }
        let series = |lines: &BTreeSet<String>, strip: bool| -> Series {
            lines
                .iter()
                .map(|line| {
                    let (mut labels, value) = sample_of(line);
                    if strip {
                        for (prefix, label, _) in ADDED_LABELS {
                            if family.starts_with(prefix) {
                                labels.remove(*label);
                            }
                        }
                    }
                    (labels, value)
                })
                .collect()
        };
        let (a, b) = (series(&a.lines, false), series(&b.lines, true));
        let label_names = |series: &Series| -> BTreeSet<Vec<String>> {
            series.keys().map(|l| l.keys().cloned().collect()).collect()
        };
        if label_names(&a) != label_names(&b) {
            differences.push(format!(
                "{name}: {family}: label names {:?} vs ours {:?}",
                label_names(&a),
                label_names(&b)
            ));
            continue;
        }
        if MOVING.contains(&family.as_str())
            || COUNTED_SINCE_START.iter().any(|p| family.starts_with(p))
            || MOVING_PREFIXES.iter().any(|p| family.starts_with(p))
        {
            continue;
        }
        for (labels, theirs) in &a {
            match b.get(labels) {
                None => differences.push(format!("{name}: {family}{labels:?}: missing")),
                Some(ours) if !close(*theirs, *ours) => differences.push(format!(
                    "{name}: {family}{labels:?}: node_exporter {theirs} vs ours {ours}"
                )),
                Some(_) => {}
            }
        }
        for labels in b.keys().filter(|labels| !a.contains_key(*labels)) {
            differences.push(format!(
                "{name}: {family}{labels:?}: only the collector has it"
            ));
        }
    }
}

#[test]
fn agrees_with_node_exporter_on_this_machine() {
    let mut differences = Vec::new();
    for spec in collector::registry::ALL {
        if spec.name.starts_with("ebpf.") {
            continue;
        }
        if !common::node_exporter::has_collector(spec.name) {
            eprintln!(
                "{}: not compared: node_exporter 1.5.0 has no such collector",
                spec.name
            );
            continue;
        }
        compare_collector(spec.name, &mut differences);
    }
    for difference in &differences {
        eprintln!("difference: {difference}");
    }
    assert!(
        differences.is_empty(),
        "{} unexplained differences from node_exporter (listed above)",
        differences.len()
    );
}

/// Metrics read by the node-mixin's alerts, recording rules and dashboards (node, USE, cluster
/// USE), which the AWS observability accelerator's "Node Exporter / Nodes" dashboards reuse.
const MIXIN_METRICS: &[&str] = &[
    "node_boot_time_seconds",
    "node_cpu_seconds_total",
    "node_disk_io_time_seconds_total",
    "node_disk_io_time_weighted_seconds_total",
    "node_disk_read_bytes_total",
    "node_disk_written_bytes_total",
    "node_filefd_allocated",
    "node_filefd_maximum",
    "node_filesystem_avail_bytes",
    "node_filesystem_files",
    "node_filesystem_files_free",
    "node_filesystem_readonly",
    "node_filesystem_size_bytes",
    "node_load1",
    "node_load15",
    "node_load5",
    "node_memory_Buffers_bytes",
    "node_memory_Cached_bytes",
    "node_memory_MemAvailable_bytes",
    "node_memory_MemFree_bytes",
    "node_memory_MemTotal_bytes",
    "node_memory_Slab_bytes",
    "node_network_receive_bytes_total",
    "node_network_receive_drop_total",
    "node_network_receive_errs_total",
    "node_network_receive_packets_total",
    "node_network_transmit_bytes_total",
    "node_network_transmit_drop_total",
    "node_network_transmit_errs_total",
    "node_network_transmit_packets_total",
    "node_nf_conntrack_entries",
    "node_nf_conntrack_entries_limit",
    "node_os_info",
    "node_textfile_scrape_error",
    "node_time_seconds",
    "node_timex_maxerror_seconds",
    "node_timex_offset_seconds",
    "node_timex_sync_status",
    "node_uname_info",
    "node_vmstat_pgmajfault",
];

/// Mixin metrics this machine cannot have (no such hardware or service); each must then be
/// emitted from the fixture host (tests/golden) instead.
const MIXIN_METRICS_FROM_FIXTURES: &[(&str, &str)] = &[
    ("node_bonding_active", "no bonding interfaces here"),
    ("node_bonding_slaves", "no bonding interfaces here"),
    ("node_md_disks", "no md RAID arrays here"),
    ("node_md_disks_required", "no md RAID arrays here"),
];

#[test]
fn emits_every_metric_the_node_mixin_reads() {
    let daemon = Daemon::start(&[
        "--no-collector.ebpf.sched",
        "--no-collector.ebpf.irq",
        "--no-collector.ebpf.block",
        "--no-collector.ebpf.net",
    ]);
    let scrape = daemon.scrape();
    let missing: Vec<&str> = MIXIN_METRICS
        .iter()
        .copied()
        .filter(|name| !scrape.has(name))
        .collect();
    assert!(
        missing.is_empty(),
        "not emitted on this machine: {missing:?}"
    );

    let golden_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let goldens: String = std::fs::read_dir(golden_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "prom"))
        .map(|path| std::fs::read_to_string(path).unwrap())
        .collect();
    for (name, why) in MIXIN_METRICS_FROM_FIXTURES {
        assert!(
            goldens.contains(&format!("\n{name}{{")),
            "{name} ({why}) is not emitted from the fixture host either"
        );
    }
}
