//! `cpufreq`: per-CPU frequencies (kHz in sysfs, served in hertz) and the scaling governor
//! from /sys/devices/system/cpu/cpuN/cpufreq, read as procfs's `SystemCpufreq` does: offline
//! CPUs (from `offline`) and CPUs without a cpufreq folder are skipped; absent or unreadable
//! frequency files are skipped; a missing governor/driver file or a bad number fails the scrape.
use std::{
    io::ErrorKind,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    metrics::MetricFamily,
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "cpufreq",
    default_enabled: true,
    flags: &[],
    kernel: None,
    build,
};

/// The frequency files in the order procfs reads them, with the family each feeds (`None`:
/// read, so a bad number fails, but not exported).
const FREQUENCY_FILES: &[(&str, Option<(&str, &str)>)] = &[
    (
        "cpuinfo_cur_freq",
        Some((
            "node_cpu_frequency_hertz",
            "Current CPU thread frequency in hertz.",
        )),
    ),
    ("cpuinfo_avg_freq", None),
    (
        "cpuinfo_max_freq",
        Some((
            "node_cpu_frequency_max_hertz",
            "Maximum CPU thread frequency in hertz.",
        )),
    ),
    (
        "cpuinfo_min_freq",
        Some((
            "node_cpu_frequency_min_hertz",
            "Minimum CPU thread frequency in hertz.",
        )),
    ),
    ("cpuinfo_transition_latency", None),
    (
        "scaling_cur_freq",
        Some((
            "node_cpu_scaling_frequency_hertz",
            "Current scaled CPU thread frequency in hertz.",
        )),
    ),
    (
        "scaling_max_freq",
        Some((
            "node_cpu_scaling_frequency_max_hertz",
            "Maximum scaled CPU thread frequency in hertz.",
        )),
    ),
    (
        "scaling_min_freq",
        Some((
            "node_cpu_scaling_frequency_min_hertz",
            "Minimum scaled CPU thread frequency in hertz.",
        )),
    ),
];

struct CpufreqCollector {
    sys_cpu: PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(CpufreqCollector {
        sys_cpu: context.sys_path("devices/system/cpu"),
    }))
}

/// One CPU's cpufreq folder: `(file, kHz)` of the frequency files present, and the governors.
#[derive(Debug, Default, PartialEq)]
struct CpuFreq {
    frequencies: Vec<(&'static str, u64)>,
    available_governors: String,
    governor: String,
}

/// A file that may be absent or unreadable (permission), as `None`.
fn read_optional(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::PermissionDenied) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn parse_uint(text: &str, path: &Path) -> anyhow::Result<u64> {
    read::parse_number(text.trim(), "value", path)
}

fn read_cpufreq(dir: &Path) -> anyhow::Result<CpuFreq> {
    let mut cpu = CpuFreq::default();
    for (file, _) in FREQUENCY_FILES {
        let path = dir.join(file);
        if let Some(text) = read_optional(&path)? {
            cpu.frequencies.push((file, parse_uint(&text, &path)?));
        }
    }
    // In procfs' order; all must exist, two are exported.
    let read_trimmed = |file: &str| -> anyhow::Result<String> {
        Ok(read::to_string(&dir.join(file))?.trim().to_owned())
    };
    cpu.available_governors = read_trimmed("scaling_available_governors")?;
    read_trimmed("scaling_driver")?;
    cpu.governor = read_trimmed("scaling_governor")?;
    read_trimmed("related_cpus")?;
    read_trimmed("scaling_setspeed")?;
    // CONFIG_CPU_FREQ_STAT files: parsed (a bad one fails the scrape) but not exported.
    let stats = dir.join("stats");
    let path = stats.join("total_trans");
    if let Some(text) = read_optional(&path)? {
        parse_uint(&text, &path)?;
    }
    let path = stats.join("time_in_state");
    if let Some(text) = read_optional(&path)? {
        for line in text.lines().filter(|line| !line.is_empty()) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [frequency, duration] = fields[..] else {
                anyhow::bail!("{}: unexpected number of fields: {line:?}", path.display());
            };
            parse_uint(frequency, &path)?;
            parse_uint(duration, &path)?;
        }
    }
    let path = stats.join("trans_table");
    if let Some(text) = read_optional(&path)? {
        for line in text.split('\n').skip(1).filter(|line| !line.is_empty()) {
            for (i, field) in line.split_whitespace().enumerate() {
                let field = if i == 0 {
                    field.strip_suffix(':').unwrap_or(field)
                } else {
                    field
                };
                if !field.is_empty() {
                    parse_uint(field, &path)?;
                }
            }
        }
    }
    Ok(cpu)
}

impl Collector for CpufreqCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let mut cpus = read::cpu_dirs(&self.sys_cpu);
        let offline_path = self.sys_cpu.join("offline");
        // Absent on some kernels and in containers' sysfs views: no CPU is offline then.
        let offline = read::optional(&offline_path)?.unwrap_or_default();
        if !offline.trim().is_empty() {
            let offline = read::parse_cpu_range(&offline)
                .with_context(|| offline_path.display().to_string())?;
            if !offline.is_empty() {
                let mut online = Vec::new();
                for (name, dir) in cpus {
                    let number: i64 = read::parse_number(&name[3..], "cpu number", &dir)?;
                    if !offline.contains(&(number as u16)) {
                        online.push((name, dir));
                    }
                }
                cpus = online;
            }
        }
        if cpus.is_empty() {
            anyhow::bail!(
                "could not find any cpufreq files in {}",
                self.sys_cpu.display()
            );
        }
        let mut families: Vec<MetricFamily> = FREQUENCY_FILES
            .iter()
            .filter_map(|(_, family)| *family)
            .map(|(name, help)| MetricFamily::gauge(name, help))
            .collect();
        let mut governors = MetricFamily::gauge(
            "node_cpu_scaling_governor",
            "Current enabled CPU frequency governor.",
        );
        for (name, dir) in &cpus {
            let dir = dir.join("cpufreq");
            match std::fs::metadata(&dir) {
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
                Ok(_) => {}
            }
            let cpu = read_cpufreq(&dir)?;
            let number = &name[3..];
            for (file, khz) in &cpu.frequencies {
                let Some((_, Some((family_name, _)))) =
                    FREQUENCY_FILES.iter().find(|(f, _)| f == file)
                else {
                    continue;
                };
                let family = families
                    .iter_mut()
                    .find(|f| f.name == *family_name)
                    .expect("a family per exported file");
                family.push([("cpu", number)], *khz as f64 * 1000.0);
            }
            if !cpu.governor.is_empty() {
                for governor in cpu.available_governors.split(' ') {
                    let state = if governor == cpu.governor { 1.0 } else { 0.0 };
                    governors.push([("cpu", number), ("governor", governor)], state);
                }
            }
        }
        // Only families with samples: an empty node_cpu_frequency_hertz would lend its HELP to
        // the cpu collector's /proc/cpuinfo one when the two are merged.
        out.extend(
            families
                .into_iter()
                .chain([governors])
                .filter(|family| !family.metrics.is_empty()),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        for (name, text) in files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }

    const STRINGS: &[(&str, &str)] = &[
        ("scaling_available_governors", "performance powersave\n"),
        ("scaling_driver", "intel_pstate\n"),
        ("scaling_governor", "powersave\n"),
        ("related_cpus", "0\n"),
        ("scaling_setspeed", "<unsupported>\n"),
    ];

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cpufreq-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn reads_present_files_and_governors() {
        let dir = temp_dir("ok");
        write(&dir, STRINGS);
        write(
            &dir,
            &[
                ("scaling_cur_freq", "1200000\n"),
                ("cpuinfo_max_freq", "3500000\n"),
                ("stats/time_in_state", "800000 10\n3500000 20\n"),
                (
                    "stats/trans_table",
                    "   From  :    To\n         :    800000   3500000\n   800000:         0         4\n",
                ),
            ],
        );
        let cpu = read_cpufreq(&dir).unwrap();
        assert_eq!(
            cpu.frequencies,
            [("cpuinfo_max_freq", 3500000), ("scaling_cur_freq", 1200000)]
        );
        assert_eq!(cpu.governor, "powersave");
        assert_eq!(cpu.available_governors, "performance powersave");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_offline_file_means_no_cpu_offline() {
        let sys_cpu = temp_dir("no-offline");
        write(&sys_cpu.join("cpu0/cpufreq"), STRINGS);
        write(
            &sys_cpu.join("cpu0/cpufreq"),
            &[("scaling_cur_freq", "1200000\n")],
        );
        assert!(!sys_cpu.join("offline").exists());
        let collector = CpufreqCollector {
            sys_cpu: sys_cpu.clone(),
        };
        let mut out = Vec::new();
        collector.update(&mut out).unwrap();
        assert!(
            out.iter()
                .any(|f| f.name == "node_cpu_scaling_frequency_hertz" && !f.metrics.is_empty()),
            "{:?}",
            out.iter().map(|f| &f.name).collect::<Vec<_>>()
        );
        std::fs::remove_dir_all(&sys_cpu).unwrap();
    }

    #[test]
    fn bad_files_are_errors() {
        for (i, bad) in [
            ("scaling_cur_freq", "<unknown>\n"),
            ("stats/total_trans", "x\n"),
            ("stats/time_in_state", "800000\n"),
            ("stats/trans_table", "header\n 800000: x\n"),
        ]
        .into_iter()
        .enumerate()
        {
            let dir = temp_dir(&format!("bad{i}"));
            write(&dir, STRINGS);
            write(&dir, &[bad]);
            assert!(read_cpufreq(&dir).is_err(), "{bad:?}");
            std::fs::remove_dir_all(&dir).unwrap();
        }
        // A required string file missing.
        let dir = temp_dir("missing");
        write(&dir, &STRINGS[..4]);
        assert!(read_cpufreq(&dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
