//! `cargo xtask upstream-e2e`: the collector against node_exporter's own end-to-end fixtures,
//! compared family by family with upstream's expected output.
//!
//! node_exporter's repository keeps a fake host (`collector/fixtures`: proc, sys and udev trees)
//! and the exposition its `end-to-end-test.sh` must print for it (`e2e-output.txt`). This runs
//! our binary on that tree with the script's flags and reports every family that is missing or
//! differs. The fixtures are not copied here (the tests use our own trees); point this at a
//! checkout of node_exporter's latest release.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{exporter::Exporter, shell};

#[derive(clap::Args)]
pub struct Options {
    /// A checkout of node_exporter (its latest release tag).
    #[arg(long)]
    node_exporter: PathBuf,
    /// The collector binary (default: build the release one).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Print the differing samples of each family.
    #[arg(long)]
    verbose: bool,
}

/// Lines end-to-end-test.sh drops before comparing (build, runtime and timing series), plus our
/// own exporter-level families.
const SKIPPED_PREFIXES: &[&str] = &[
    "go_",
    "node_exporter_build_info",
    "node_scrape_collector_duration_seconds",
    "process_",
    "node_textfile_mtime_seconds",
    "node_time_zone",
    "node_time_seconds",
    "node_network_receive_bytes_total",
    "node_network_receive_packets_total",
    "node_network_transmit_bytes_total",
    "node_network_transmit_packets_total",
    "ebpf_",
    "promhttp_",
];

/// Families whose difference from upstream's expected output is deliberate, and why.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[];

/// The collectors end-to-end-test.sh turns on and off (Linux).
const ENABLED: &str = "arp bcache bcachefs bonding btrfs buddyinfo cgroups conntrack cpu cpufreq \
    cpu_vulnerabilities diskstats dmi drbd edac entropy fibrechannel filefd hwmon infiniband \
    interrupts ipvs kernel_hung ksmd lnstat loadavg mdadm meminfo meminfo_numa mountstats netdev \
    netstat nfs nfsd pcidevice pressure processes qdisc rapl schedstat slabinfo sockstat softirqs \
    stat sysctl textfile thermal_zone udp_queues vmstat watchdog wifi xfrm xfs zfs zoneinfo";
const DISABLED: &str = "selinux filesystem timex uname ebpf.block ebpf.cgroup ebpf.irq ebpf.net \
    ebpf.sched";

/// end-to-end-test.sh's collector options (x86_64).
const FLAGS: &[&str] = &[
    "--collector.cpu.info",
    "--collector.arp.device-exclude=nope",
    "--collector.bcache.priorityStats",
    "--collector.cpu.info.bugs-include=^(cpu_meltdown|spectre_.*|mds)$",
    "--collector.cpu.info.flags-include=^(aes|avx.?|constant_tsc)$",
    "--collector.hwmon.chip-include=(applesmc|asus_nb_wmi|coretemp|hwmon4|ieee80211|nct6779)",
    "--collector.netclass.ignore-invalid-speed",
    "--collector.netclass.ignored-devices=(dmz|int)",
    "--collector.netdev.device-include=lo",
    "--collector.qdisc.device-include=(wlan0|eth0)",
    "--collector.qdisc.fixtures=collector/fixtures/qdisc/",
    "--collector.stat.softirq",
    "--collector.sysctl.include-info=kernel.seccomp.actions_avail",
    "--collector.sysctl.include=fs.file-nr",
    "--collector.sysctl.include=fs.file-nr:total,current,max",
    "--collector.sysctl.include=kernel.threads-max",
    "--collector.textfile.directory=collector/fixtures/textfile/two_metric_files/",
    "--collector.wifi.fixtures=collector/fixtures/wifi",
    "--no-collector.arp.netlink",
];

pub fn run(collector: &Path, options: &Options) -> anyhow::Result<()> {
    let checkout = options
        .node_exporter
        .canonicalize()
        .with_context(|| format!("{}", options.node_exporter.display()))?;
    let fixtures = checkout.join("collector/fixtures");
    let expected = std::fs::read_to_string(fixtures.join("e2e-output.txt"))
        .context("not a node_exporter checkout: no collector/fixtures/e2e-output.txt")?;
    for archive in ["sys", "udev"] {
        unpack(&checkout, archive)?;
    }

    let collector = collector
        .canonicalize()
        .with_context(|| format!("{}", collector.display()))?;
    let mut command = Command::new(collector);
    command
        .current_dir(&checkout)
        .arg("--path.rootfs=collector/fixtures")
        .arg("--path.procfs=collector/fixtures/proc")
        .arg("--path.sysfs=collector/fixtures/sys")
        .arg("--path.udev.data=collector/fixtures/udev/data")
        .args(
            ENABLED
                .split_whitespace()
                .map(|c| format!("--collector.{c}")),
        )
        .args(
            DISABLED
                .split_whitespace()
                .map(|c| format!("--no-collector.{c}")),
        )
        .args(FLAGS);
    let exporter = Exporter::start(&mut command)?;
    let actual = exporter.get()?;
    drop(exporter);

    let report = compare(&families(&expected), &families(&actual), options.verbose);
    println!("{}", report.text);
    if report.unexplained > 0 {
        bail!(
            "{} families differ from node_exporter's expected output without a listed reason",
            report.unexplained
        );
    }
    Ok(())
}

/// Extracts `collector/fixtures/<name>.ttar` as upstream's Makefile does, once.
fn unpack(checkout: &Path, name: &str) -> anyhow::Result<()> {
    let fixtures = checkout.join("collector/fixtures");
    if fixtures.join(name).join(".unpacked").exists() {
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(fixtures.join(name));
    shell::run(
        Command::new("bash")
            .arg(checkout.join("ttar"))
            .arg("-C")
            .arg(&fixtures)
            .arg("-x")
            .arg("-f")
            .arg(fixtures.join(format!("{name}.ttar"))),
    )?;
    std::fs::write(fixtures.join(name).join(".unpacked"), "")?;
    Ok(())
}

#[derive(Default, PartialEq)]
struct Family {
    help: Option<String>,
    kind: Option<String>,
    samples: BTreeSet<String>,
}

/// Families of an exposition by name, without the skipped ones.
fn families(text: &str) -> BTreeMap<String, Family> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines().filter(|line| !line.is_empty()) {
        if let Some(rest) = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
        {
            let (name, value) = rest.split_once(' ').unwrap_or((rest, ""));
            current = name.to_owned();
            let family = families.entry(current.clone()).or_default();
            if line.starts_with("# HELP") {
                family.help = Some(value.to_owned());
            } else {
                family.kind = Some(value.to_owned());
            }
            continue;
        }
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        let family = if name.starts_with(current.as_str()) && !current.is_empty() {
            current.clone()
        } else {
            name.to_owned()
        };
        families
            .entry(family)
            .or_default()
            .samples
            .insert(line.to_owned());
    }
    families.retain(|name, _| !SKIPPED_PREFIXES.iter().any(|p| name.starts_with(p)));
    families
}

struct Report {
    text: String,
    unexplained: usize,
}

fn compare(
    expected: &BTreeMap<String, Family>,
    actual: &BTreeMap<String, Family>,
    verbose: bool,
) -> Report {
    let known: BTreeMap<&str, &str> = KNOWN_DIFFERENCES.iter().copied().collect();
    let mut text = String::new();
    let (mut identical, mut unexplained, mut explained) = (0, 0, 0);
    let (mut samples, mut matched) = (0, 0);
    for (name, want) in expected {
        samples += want.samples.len();
        let got = actual.get(name);
        matched += got.map_or(0, |got| want.samples.intersection(&got.samples).count());
        if got == Some(want) {
            identical += 1;
            continue;
        }
        let what = if got.is_none() { "missing" } else { "differs" };
        match known.get(name.as_str()) {
            Some(reason) => {
                explained += 1;
                text.push_str(&format!("known   {what} {name}: {reason}\n"));
            }
            None => {
                unexplained += 1;
                text.push_str(&format!("UNKNOWN {what} {name}\n"));
            }
        }
        if let (true, Some(got)) = (verbose, got) {
            if (&want.help, &want.kind) != (&got.help, &got.kind) {
                text.push_str(&format!(
                    "  - HELP {:?} TYPE {:?}\n  + HELP {:?} TYPE {:?}\n",
                    want.help, want.kind, got.help, got.kind
                ));
            }
            for line in want.samples.difference(&got.samples) {
                text.push_str(&format!("  - {line}\n"));
            }
            for line in got.samples.difference(&want.samples) {
                text.push_str(&format!("  + {line}\n"));
            }
        }
    }
    let extra: Vec<&String> = actual
        .keys()
        .filter(|n| !expected.contains_key(*n))
        .collect();
    for name in &extra {
        text.push_str(&format!(
            "extra   {name} (served here, not in upstream's output)\n"
        ));
    }
    text.push_str(&format!(
        "\nfamilies: {} upstream, {identical} identical, {explained} differ with a listed \
         reason, {unexplained} differ without one; {} extra here\nsamples: {matched} of {samples} \
         upstream samples served identically\n",
        expected.len(),
        extra.len()
    ));
    Report { text, unexplained }
}
