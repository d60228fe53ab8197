//! `cpu`: seconds per CPU and mode from /proc/stat (kept monotonic across scrapes as upstream
//! does), and from sysfs the isolated CPUs, thermal throttle counts and online state; with
//! `--collector.cpu.info`, /proc/cpuinfo as `node_cpu_info`, flag and bug info and (when the
//! cpufreq collector is on, as in 1.12) the frequency it reports.
use std::{
    collections::{BTreeMap, btree_map::Entry},
    path::PathBuf,
    sync::{Arc, Mutex},
};

use anyhow::Context as _;
use regex::Regex;

use super::stat::{CpuTimes, read_proc_stat};
use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    flags::FlagSpec,
    goparse,
    metrics::MetricFamily,
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "cpu",
    default_enabled: true,
    flags: &[
        FlagSpec::bool(
            "collector.cpu.guest",
            true,
            "Enables metric node_cpu_guest_seconds_total",
        ),
        FlagSpec::bool("collector.cpu.info", false, "Enables metric cpu_info"),
        FlagSpec::value(
            "collector.cpu.info.flags-include",
            None,
            "Filter the `flags` field in cpuInfo with a value that must be a regular expression",
        ),
        FlagSpec::value(
            "collector.cpu.info.bugs-include",
            None,
            "Filter the `bugs` field in cpuInfo with a value that must be a regular expression",
        ),
    ],
    kernel: None,
    build,
};

/// An idle counter going back by this many seconds or more is taken as a CPU hot-plug: the
/// CPU's cached counters restart from the new values (upstream's `jumpBackSeconds`).
const JUMP_BACK_SECONDS: f64 = 3.0;

struct CpuCollector {
    stat_file: read::KeptFile,
    cpuinfo_path: PathBuf,
    sys_cpu: PathBuf,
    guest: bool,
    info: bool,
    /// `--collector.cpufreq` is on: 1.12 then reports /proc/cpuinfo's MHz.
    cpufreq_enabled: bool,
    flags_include: Option<Regex>,
    bugs_include: Option<Regex>,
    /// From /sys/devices/system/cpu/isolated, read once at start as upstream does; `None`
    /// when the file does not exist.
    isolated: Option<Vec<u16>>,
    /// The last counters served per CPU, so that a counter that goes back is not served.
    stats: Mutex<BTreeMap<i64, CpuTimes>>,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    let flags = &context.flags;
    let compile = |name: &str| {
        flags.regex(name).context(
            "fail to compile --collector.cpu.info.flags-include and \
             --collector.cpu.info.bugs-include, the values of them must be regular expressions",
        )
    };
    let flags_include = compile("collector.cpu.info.flags-include")?;
    let bugs_include = compile("collector.cpu.info.bugs-include")?;
    let mut info = flags.bool("collector.cpu.info");
    if (flags_include.is_some() || bugs_include.is_some()) && !info {
        info = true;
        tracing::info!(
            "--collector.cpu.info has been set to `true` because you set the following flags, \
             like --collector.cpu.info.flags-include and --collector.cpu.info.bugs-include"
        );
    }
    let isolated_path = context.sys_path("devices/system/cpu/isolated");
    let isolated = match std::fs::read_to_string(&isolated_path) {
        Ok(text) => Some(read::parse_cpu_range(&text).with_context(|| {
            format!("unable to get isolated cpus: {}", isolated_path.display())
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::debug!(err = %e, "couldn't open isolated file");
            None
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!("unable to get isolated cpus: {}", isolated_path.display())
            });
        }
    };
    Ok(Arc::new(CpuCollector {
        stat_file: read::KeptFile::new(context.proc_path("stat")),
        cpuinfo_path: context.proc_path("cpuinfo"),
        sys_cpu: context.sys_path("devices/system/cpu"),
        guest: flags.bool("collector.cpu.guest"),
        info,
        cpufreq_enabled: context.is_enabled("cpufreq"),
        flags_include,
        bugs_include,
        isolated,
        stats: Mutex::new(BTreeMap::new()),
    }))
}

impl Collector for CpuCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        if self.info {
            self.update_info(out)?;
        }
        self.update_stat(out)?;
        if let Some(isolated) = &self.isolated {
            let mut family = MetricFamily::gauge(
                "node_cpu_isolated",
                "Whether each core is isolated, information from /sys/devices/system/cpu/isolated.",
            );
            for cpu in isolated {
                family.push([("cpu", cpu.to_string())], 1.0);
            }
            out.push(family);
        }
        let cpus = read::cpu_dirs(&self.sys_cpu);
        Self::update_thermal_throttle(&cpus, out);
        Self::update_online(&cpus, out);
        Ok(())
    }
}

impl CpuCollector {
    fn update_info(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let text = read::to_string(&self.cpuinfo_path)?;
        let cpus = parse_cpuinfo_x86(&text)
            .with_context(|| format!("{}: invalid cpuinfo", self.cpuinfo_path.display()))?;
        let mut info = MetricFamily::gauge("node_cpu_info", "CPU information from /proc/cpuinfo.");
        for cpu in &cpus {
            info.push(
                [
                    ("package", cpu.physical_id.as_str()),
                    ("core", cpu.core_id.as_str()),
                    ("cpu", &cpu.processor.to_string()),
                    ("vendor", &cpu.vendor_id),
                    ("family", &cpu.cpu_family),
                    ("model", &cpu.model),
                    ("model_name", &cpu.model_name),
                    ("microcode", &cpu.microcode),
                    ("stepping", &cpu.stepping),
                    ("cachesize", &cpu.cache_size),
                ],
                1.0,
            );
        }
        out.push(info);
        if self.cpufreq_enabled {
            let mut frequency = MetricFamily::gauge(
                "node_cpu_frequency_hertz",
                "CPU frequency in hertz from /proc/cpuinfo.",
            );
            for cpu in &cpus {
                frequency.push(
                    [
                        ("package", cpu.physical_id.as_str()),
                        ("core", cpu.core_id.as_str()),
                        ("cpu", &cpu.processor.to_string()),
                    ],
                    cpu.mhz * 1e6,
                );
            }
            out.push(frequency);
        }
        if let Some(first) = cpus.first() {
            for (values, filter, name, help, label) in [
                (
                    &first.flags,
                    &self.flags_include,
                    "node_cpu_flag_info",
                    "The `flags` field of CPU information from /proc/cpuinfo taken from the first core.",
                    "flag",
                ),
                (
                    &first.bugs,
                    &self.bugs_include,
                    "node_cpu_bug_info",
                    "The `bugs` field of CPU information from /proc/cpuinfo taken from the first core.",
                    "bug",
                ),
            ] {
                let Some(filter) = filter else { continue };
                let mut family = MetricFamily::gauge(name, help);
                for value in values.iter().filter(|v| filter.is_match(v)) {
                    family.push([(label, value.as_str())], 1.0);
                }
                out.push(family);
            }
        }
        Ok(())
    }

    fn update_stat(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let stat = read_proc_stat(&self.stat_file)?;
        let mut cached = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        merge_cpu_stats(&mut cached, &stat.cpus);
        let mut seconds = MetricFamily::counter(
            "node_cpu_seconds_total",
            "Seconds the CPUs spent in each mode.",
        );
        let mut guest = MetricFamily::counter(
            "node_cpu_guest_seconds_total",
            "Seconds the CPUs spent in guests (VMs) for each mode.",
        );
        for (id, times) in cached.iter() {
            let cpu = id.to_string();
            for (mode, value) in [
                ("user", times.user),
                ("nice", times.nice),
                ("system", times.system),
                ("idle", times.idle),
                ("iowait", times.iowait),
                ("irq", times.irq),
                ("softirq", times.softirq),
                ("steal", times.steal),
            ] {
                seconds.push([("cpu", cpu.as_str()), ("mode", mode)], value);
            }
            // Guest time is also counted in user and nice.
            guest.push([("cpu", cpu.as_str()), ("mode", "user")], times.guest);
            guest.push([("cpu", cpu.as_str()), ("mode", "nice")], times.guest_nice);
        }
        out.push(seconds);
        if self.guest {
            out.push(guest);
        }
        Ok(())
    }

    /// Per-package and per-core thermal throttle counts, each read once per package/core;
    /// CPUs without topology (offline) or without the counters are skipped.
    fn update_thermal_throttle(cpus: &[(String, PathBuf)], out: &mut Vec<MetricFamily>) {
        let mut package_throttles: BTreeMap<u64, u64> = BTreeMap::new();
        let mut core_throttles: BTreeMap<u64, BTreeMap<u64, u64>> = BTreeMap::new();
        for (name, dir) in cpus {
            let topology = dir.join("topology");
            let (Ok(package), Ok(core)) = (
                read::uint_from_file(&topology.join("physical_package_id")),
                read::uint_from_file(&topology.join("core_id")),
            ) else {
                tracing::debug!(cpu = name, "CPU is missing physical_package_id or core_id");
                continue;
            };
            let throttle = dir.join("thermal_throttle");
            let cores = core_throttles.entry(package).or_default();
            if let Entry::Vacant(slot) = cores.entry(core) {
                match read::uint_from_file(&throttle.join("core_throttle_count")) {
                    Ok(count) => {
                        slot.insert(count);
                    }
                    Err(_) => tracing::debug!(cpu = name, "CPU is missing core_throttle_count"),
                }
            }
            if let Entry::Vacant(slot) = package_throttles.entry(package) {
                match read::uint_from_file(&throttle.join("package_throttle_count")) {
                    Ok(count) => {
                        slot.insert(count);
                    }
                    Err(_) => tracing::debug!(cpu = name, "CPU is missing package_throttle_count"),
                }
            }
        }
        let mut packages = MetricFamily::counter(
            "node_cpu_package_throttles_total",
            "Number of times this CPU package has been throttled.",
        );
        for (package, count) in &package_throttles {
            packages.push([("package", package.to_string())], *count as f64);
        }
        out.push(packages);
        let mut cores = MetricFamily::counter(
            "node_cpu_core_throttles_total",
            "Number of times this CPU core has been throttled.",
        );
        for (package, core_map) in &core_throttles {
            for (core, count) in core_map {
                cores.push(
                    [("package", package.to_string()), ("core", core.to_string())],
                    *count as f64,
                );
            }
        }
        out.push(cores);
    }

    /// `node_cpu_online` from cpuN/online; nothing when the first CPU (in name order) has no
    /// `online` file, as on x86 where cpu0 cannot be unplugged.
    fn update_online(cpus: &[(String, PathBuf)], out: &mut Vec<MetricFamily>) {
        let Some((_, first)) = cpus.first() else {
            return;
        };
        if let Err(e) = std::fs::metadata(first.join("online"))
            && e.kind() == std::io::ErrorKind::NotFound
        {
            return;
        }
        let mut family = MetricFamily::gauge(
            "node_cpu_online",
            "CPUs that are online and being scheduled.",
        );
        for (name, dir) in cpus {
            let online =
                std::fs::read_to_string(dir.join("online")).is_ok_and(|text| text.trim() == "1");
            let number = name.strip_prefix("cpu").unwrap_or(name);
            family.push([("cpu", number)], if online { 1.0 } else { 0.0 });
        }
        out.push(family);
    }
}

/// Upstream's `updateCPUStats`: per CPU, a counter that went back keeps its last value, and an
/// idle counter that went back by [`JUMP_BACK_SECONDS`] or more restarts the CPU's counters
/// (hot-plug); CPUs gone from /proc/stat are dropped when the number of CPUs changed.
fn merge_cpu_stats(cached: &mut BTreeMap<i64, CpuTimes>, new: &BTreeMap<i64, CpuTimes>) {
    for (id, n) in new {
        let mut c = cached.get(id).copied().unwrap_or_default();
        if c.idle - n.idle >= JUMP_BACK_SECONDS {
            tracing::debug!(
                cpu = id,
                old_value = c.idle,
                new_value = n.idle,
                "CPU Idle counter jumped backwards more than {JUMP_BACK_SECONDS} seconds, \
                 possible hotplug event, resetting CPU stats"
            );
            c = CpuTimes::default();
        }
        for (old, new, mode) in [
            (&mut c.idle, n.idle, "Idle"),
            (&mut c.user, n.user, "User"),
            (&mut c.nice, n.nice, "Nice"),
            (&mut c.system, n.system, "System"),
            (&mut c.iowait, n.iowait, "Iowait"),
            (&mut c.irq, n.irq, "IRQ"),
            (&mut c.softirq, n.softirq, "SoftIRQ"),
            (&mut c.steal, n.steal, "Steal"),
            (&mut c.guest, n.guest, "Guest"),
            (&mut c.guest_nice, n.guest_nice, "GuestNice"),
        ] {
            if new >= *old {
                *old = new;
            } else {
                tracing::debug!(
                    cpu = id,
                    old_value = *old,
                    new_value = new,
                    "CPU {mode} counter jumped backwards"
                );
            }
        }
        cached.insert(*id, c);
    }
    if new.len() != cached.len() {
        cached.retain(|id, _| new.contains_key(id));
    }
}

/// The fields of one /proc/cpuinfo processor that node_exporter uses.
#[derive(Clone, Debug, Default, PartialEq)]
struct CpuInfo {
    processor: u64,
    vendor_id: String,
    cpu_family: String,
    model: String,
    model_name: String,
    stepping: String,
    microcode: String,
    mhz: f64,
    cache_size: String,
    physical_id: String,
    core_id: String,
    flags: Vec<String>,
    bugs: Vec<String>,
}

/// procfs's `parseCPUInfoX86`: the first non-empty line must be `processor : N`; numeric fields
/// that do not parse fail the whole file.
fn parse_cpuinfo_x86(text: &str) -> anyhow::Result<Vec<CpuInfo>> {
    let mut lines = text.lines().skip_while(|line| line.trim().is_empty());
    let first = lines.next().unwrap_or_default();
    if !first.starts_with("processor") || !first.contains(':') {
        anyhow::bail!("invalid cpuinfo file: {first:?}");
    }
    let uint = |value: Option<&str>, bits: u32| -> anyhow::Result<u64> {
        let value = value.unwrap_or_default();
        goparse::parse_uint(value, 0, bits).with_context(|| format!("bad number {value:?}"))
    };
    let float = |value: Option<&str>| -> anyhow::Result<f64> {
        let value = value.unwrap_or_default();
        value
            .parse()
            .with_context(|| format!("bad number {value:?}"))
    };
    let mut cpus = vec![CpuInfo {
        processor: uint(first.split_once(": ").map(|(_, v)| v), 32)?,
        ..CpuInfo::default()
    }];
    for line in lines {
        if !line.contains(':') {
            continue;
        }
        let (key, value) = match line.split_once(": ") {
            Some((key, value)) => (key.trim(), Some(value)),
            None => (line.trim(), None),
        };
        let text = || value.unwrap_or_default().to_owned();
        if key == "processor" {
            cpus.push(CpuInfo {
                processor: uint(value, 32)?,
                ..CpuInfo::default()
            });
            continue;
        }
        let cpu = cpus.last_mut().expect("at least the first processor");
        match key {
            "vendor" | "vendor_id" => cpu.vendor_id = text(),
            "cpu family" => cpu.cpu_family = text(),
            "model" => cpu.model = text(),
            "model name" => cpu.model_name = text(),
            "stepping" => cpu.stepping = text(),
            "microcode" => cpu.microcode = text(),
            "cpu MHz" => cpu.mhz = float(value)?,
            "cache size" => cpu.cache_size = text(),
            "physical id" => cpu.physical_id = text(),
            "core id" => cpu.core_id = text(),
            "flags" => cpu.flags = text().split_whitespace().map(str::to_owned).collect(),
            "bugs" => cpu.bugs = text().split_whitespace().map(str::to_owned).collect(),
            // Parsed (and so able to fail the file) though not exported.
            "siblings" | "cpu cores" | "cpuid level" | "clflush size" | "cache_alignment" => {
                uint(value, 32)?;
            }
            "bogomips" => {
                float(value)?;
            }
            _ => {}
        }
    }
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(user: f64, idle: f64) -> CpuTimes {
        CpuTimes {
            user,
            idle,
            ..CpuTimes::default()
        }
    }

    #[test]
    fn counters_never_go_back_but_hotplug_resets() {
        let mut cached = BTreeMap::new();
        merge_cpu_stats(&mut cached, &BTreeMap::from([(0, times(10.0, 100.0))]));
        // iowait/idle jitter: a small step back keeps the last value.
        merge_cpu_stats(&mut cached, &BTreeMap::from([(0, times(9.5, 99.0))]));
        assert_eq!(cached[&0], times(10.0, 100.0));
        merge_cpu_stats(&mut cached, &BTreeMap::from([(0, times(11.0, 101.0))]));
        assert_eq!(cached[&0], times(11.0, 101.0));
        // Idle back by 3 s or more: the CPU was unplugged and came back; start over.
        merge_cpu_stats(&mut cached, &BTreeMap::from([(0, times(1.0, 2.0))]));
        assert_eq!(cached[&0], times(1.0, 2.0));
    }

    #[test]
    fn offline_cpus_are_dropped_when_the_count_changes() {
        let mut cached = BTreeMap::new();
        let two = BTreeMap::from([(0, times(1.0, 1.0)), (2, times(1.0, 1.0))]);
        merge_cpu_stats(&mut cached, &two);
        merge_cpu_stats(&mut cached, &BTreeMap::from([(0, times(2.0, 2.0))]));
        assert_eq!(cached.keys().copied().collect::<Vec<_>>(), [0]);
        // Same count, different CPUs: the merged cache is larger, so the gone CPU goes too.
        let mut cached = two.clone();
        merge_cpu_stats(
            &mut cached,
            &BTreeMap::from([(0, times(1.0, 1.0)), (3, times(1.0, 1.0))]),
        );
        assert_eq!(cached.keys().copied().collect::<Vec<_>>(), [0, 3]);
    }

    const CPUINFO: &str = "\nprocessor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n\
        model\t\t: 85\nmodel name\t: Intel(R) Xeon(R)\nstepping\t: 7\nmicrocode\t: 0x5003604\n\
        cpu MHz\t\t: 2500.000\ncache size\t: 36608 KB\nphysical id\t: 0\nsiblings\t: 2\n\
        core id\t\t: 0\ncpu cores\t: 1\nflags\t\t: fpu vme avx2\nbugs\t\t: spectre_v1 mds\n\
        bogomips\t: 5000.00\npower management:\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\n\
        cpu MHz\t\t: 1200.5\nflags\t\t:\n";

    #[test]
    fn cpuinfo_x86() {
        let cpus = parse_cpuinfo_x86(CPUINFO).unwrap();
        assert_eq!(cpus.len(), 2);
        assert_eq!(cpus[0].model_name, "Intel(R) Xeon(R)");
        assert_eq!(cpus[0].flags, ["fpu", "vme", "avx2"]);
        assert_eq!(cpus[0].bugs, ["spectre_v1", "mds"]);
        assert_eq!(cpus[0].mhz, 2500.0);
        assert_eq!(cpus[1].processor, 1);
        assert_eq!(cpus[1].mhz, 1200.5);
        assert!(cpus[1].flags.is_empty());
    }

    #[test]
    fn malformed_cpuinfo_is_an_error() {
        for text in [
            "",
            "vendor_id : x\n",
            "processor : x\n",
            "processor:0\n",
            "processor : 0\ncpu MHz : fast\n",
            "processor : 0\nsiblings : -1\n",
            "processor : 0\nprocessor : 99999999999\n",
        ] {
            assert!(parse_cpuinfo_x86(text).is_err(), "{text:?}");
        }
    }
}
