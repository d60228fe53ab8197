//! `sysctl`: chosen sysctls from /proc/sys, as node_exporter's sysctl collector. Each
//! `--collector.sysctl.include=<name>` is read as integers, reported as the untyped
//! `node_sysctl_<name>` (one value) or with an `index` label (several values);
//! `<name>:<key>,<key>...` names the values instead, one family `node_sysctl_<name>_<key>` each.
//! Each `--collector.sysctl.include-info=<name>` is read as words, each reported as a
//! `node_sysctl_info{name,value,index}` series of value 1. Sysctls are read in the order given,
//! the numeric ones first; the first one that cannot be read or does not fit its flag fails
//! the scrape, the earlier ones still being served.
//!
//! As procfs' `SysReadFile`, a sysctl is read with one read of at most 128 bytes (a longer one
//! is cut), and integers are Go's `ParseInt(s, 0, 64)` (so `0x10` is 16 and `010` is 8).
use std::{collections::HashSet, path::PathBuf, sync::Arc};

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    flags::FlagSpec,
    goparse,
    metrics::{MetricFamily, MetricType},
    read,
};

const INCLUDE: &str = "collector.sysctl.include";
const INCLUDE_INFO: &str = "collector.sysctl.include-info";

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "sysctl",
    default_enabled: false,
    flags: &[
        FlagSpec::repeated(INCLUDE, "Select sysctl metrics to include"),
        FlagSpec::repeated(
            INCLUDE_INFO,
            "Select sysctl metrics to include as info metrics",
        ),
    ],
    kernel: None,
    build,
};

const INFO_NAME: &str = "node_sysctl_info";
const INFO_HELP: &str = "sysctl info";

/// One `include` or `include-info` flag value.
struct Sysctl {
    /// An `include` (integers), not an `include-info` (words).
    numeric: bool,
    /// As given, with dots (the HELP and the `name` label).
    name: String,
    /// The file under /proc/sys.
    path: PathBuf,
    /// `node_sysctl_<name>`, the name made a metric name.
    metric: String,
    /// The names after `:`, one per value; empty without a `:`.
    keys: Vec<String>,
}

struct SysctlCollector {
    sysctls: Vec<Sysctl>,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(SysctlCollector::new(context)?))
}

impl SysctlCollector {
    /// The sysctls of the flags: the `include` ones, then the `include-info` ones.
    fn new(context: &BuildContext) -> anyhow::Result<Self> {
        // node_exporter's `SanitizeMetricName`.
        let sanitizer = regex::Regex::new("_*[^0-9A-Za-z_]+_*")?;
        let flags = &context.flags;
        let includes = flags.strings(INCLUDE).iter().map(|s| (s, true));
        let infos = flags.strings(INCLUDE_INFO).iter().map(|s| (s, false));
        let sysctls = includes
            .chain(infos)
            .map(|(include, numeric)| {
                let (name, keys) = match include.split_once(':') {
                    Some((name, keys)) => (name, keys.split(',').map(str::to_owned).collect()),
                    None => (include.as_str(), Vec::new()),
                };
                Sysctl {
                    numeric,
                    name: name.to_owned(),
                    path: sysctl_path(context, name),
                    metric: format!("node_sysctl_{}", sanitizer.replace_all(name, "_")),
                    keys,
                }
            })
            .collect();
        Ok(Self { sysctls })
    }
}

/// `<procfs>/sys/<name with dots as slashes>`, joined as Go's `filepath.Join` joins it: a
/// leading `/` in the name stays under /proc/sys.
fn sysctl_path(context: &BuildContext, name: &str) -> PathBuf {
    let mut path = context.proc_path("sys").into_os_string();
    path.push("/");
    path.push(name.replace('.', "/"));
    PathBuf::from(path)
}

/// The words of a sysctl file, read as procfs' `SysReadFile` reads it.
fn read_words(path: &std::path::Path) -> std::io::Result<Vec<String>> {
    Ok(read::sys_read_file(path)?
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}

/// Each character that may not be in a metric name as `_`, as client_golang's default name
/// escaping prints a name (only the `<key>` of a mapped sysctl can bring one).
fn escape_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One series to report.
struct Sample {
    name: String,
    help: String,
    metric_type: MetricType,
    labels: Vec<(&'static str, String)>,
    value: f64,
}

impl Sysctl {
    /// The series of this sysctl, or why there are none (upstream's `newMetrics`).
    fn samples(&self) -> anyhow::Result<Vec<Sample>> {
        let words = read_words(&self.path).with_context(|| {
            format!(
                "error obtaining sysctl info: reading {}",
                self.path.display()
            )
        })?;
        let ints = if self.numeric {
            let mut ints = Vec::with_capacity(words.len());
            for (i, word) in words.iter().enumerate() {
                let Some(int) = goparse::parse_int(word, 0, 64) else {
                    anyhow::bail!(
                        "error obtaining sysctl info: field {i} in sysctl {} is not a valid int: {word:?}",
                        self.name
                    );
                };
                ints.push(int);
            }
            ints
        } else {
            Vec::new()
        };
        let untyped = |name: String, help: String, labels, value: i64| Sample {
            name,
            help,
            metric_type: MetricType::Untyped,
            labels,
            value: value as f64,
        };
        let info = |value: &str, index: usize| Sample {
            name: INFO_NAME.to_owned(),
            help: INFO_HELP.to_owned(),
            metric_type: MetricType::Gauge,
            labels: vec![
                ("name", self.name.clone()),
                ("value", value.to_owned()),
                ("index", index.to_string()),
            ],
            value: 1.0,
        };
        let help = || format!("sysctl {}", self.name);
        match words.len() {
            0 => anyhow::bail!("sysctl {} has no values", self.name),
            1 if !self.keys.is_empty() => anyhow::bail!(
                "sysctl {} has only one value, but expected {:?}",
                self.name,
                self.keys
            ),
            1 if self.numeric => Ok(vec![untyped(self.metric.clone(), help(), vec![], ints[0])]),
            1 => Ok(vec![info(&words[0], 0)]),
            _ if self.keys.is_empty() && self.numeric => Ok(ints
                .iter()
                .enumerate()
                .map(|(i, int)| {
                    untyped(
                        self.metric.clone(),
                        help(),
                        vec![("index", i.to_string())],
                        *int,
                    )
                })
                .collect()),
            _ if self.keys.is_empty() => Ok(words
                .iter()
                .enumerate()
                .map(|(i, word)| info(word, i))
                .collect()),
            length if length != self.keys.len() => anyhow::bail!(
                "sysctl {} has {length} keys but only {} defined in f lag",
                self.name,
                self.keys.len()
            ),
            _ if self.numeric => Ok(ints
                .iter()
                .zip(&self.keys)
                .enumerate()
                .map(|(i, (int, key))| {
                    untyped(
                        escape_name(&format!("{}_{key}", self.metric)),
                        format!("sysctl {}, field {i}", self.name),
                        vec![],
                        *int,
                    )
                })
                .collect()),
            _ => anyhow::bail!("mapped sysctl string values not supported"),
        }
    }
}

/// The families of a scrape, kept as node_exporter's registry keeps them: a series whose
/// family was first seen with another HELP or TYPE, or that repeats an earlier series (a
/// sysctl given twice), is dropped.
#[derive(Default)]
struct Families {
    families: Vec<MetricFamily>,
    seen: HashSet<(String, Vec<(&'static str, String)>)>,
}

impl Families {
    fn add(&mut self, sample: Sample) {
        let index = match self.families.iter().position(|f| f.name == sample.name) {
            Some(index) => {
                let family = &self.families[index];
                if family.help != sample.help || family.metric_type != sample.metric_type {
                    tracing::debug!(
                        name = sample.name,
                        "sysctl series of another HELP or TYPE dropped"
                    );
                    return;
                }
                index
            }
            None => {
                let family = MetricFamily::new(&sample.name, &sample.help, sample.metric_type);
                self.families.push(family);
                self.families.len() - 1
            }
        };
        let mut key_labels = sample.labels.clone();
        key_labels.sort();
        if !self.seen.insert((sample.name.clone(), key_labels)) {
            tracing::debug!(name = sample.name, "duplicate sysctl series dropped");
            return;
        }
        self.families[index].push(sample.labels, sample.value);
    }
}

impl Collector for SysctlCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let mut families = Families::default();
        let result = self.sysctls.iter().try_for_each(|sysctl| {
            for sample in sysctl.samples()? {
                families.add(sample);
            }
            Ok(())
        });
        out.extend(families.families);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Value;

    struct Tree(PathBuf);

    impl Tree {
        fn new(files: &[(&str, &[u8])]) -> Self {
            static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "sysctl-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            for (name, content) in files {
                let path = dir.join("sys").join(name.replace('.', "/"));
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, content).unwrap();
            }
            Self(dir)
        }

        fn collector(&self, includes: &[&str], infos: &[&str]) -> SysctlCollector {
            let matches = clap::Command::new("t")
                .args(SPEC.flags.iter().flat_map(|f| f.args("t")))
                .get_matches_from(
                    std::iter::once("t".to_owned())
                        .chain(includes.iter().map(|i| format!("--{INCLUDE}={i}")))
                        .chain(infos.iter().map(|i| format!("--{INCLUDE_INFO}={i}"))),
                );
            let flags = crate::flags::CollectorFlags::from_matches(&matches, SPEC.flags);
            SysctlCollector::new(&BuildContext {
                procfs: self.0.clone(),
                sysfs: self.0.clone(),
                rootfs: self.0.clone(),
                udev_data: self.0.clone(),
                flags: Arc::new(flags),
                enabled: Vec::new(),
                ebpf: None,
            })
            .unwrap()
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn lines(families: &[MetricFamily]) -> Vec<String> {
        let mut lines = Vec::new();
        for family in families {
            for metric in &family.metrics {
                let labels: Vec<String> = metric
                    .labels
                    .iter()
                    .map(|(n, v)| format!("{n}={v}"))
                    .collect();
                let Value::Scalar(value) = metric.value else {
                    panic!()
                };
                lines.push(format!(
                    "{} {} {{{}}} {value}",
                    family.name,
                    family.metric_type.as_str(),
                    labels.join(",")
                ));
            }
        }
        lines
    }

    #[test]
    fn numeric_indexed_mapped_and_info() {
        let tree = Tree::new(&[
            ("fs.file-nr", b"2080\t0\t9223372036854775807\n"),
            ("kernel.threads-max", b"127155\n"),
            ("net.ipv4.ip_local_port_range", b"32768\t60999\n"),
            (
                "kernel.seccomp.actions_avail",
                b"kill_process kill_thread trap\n",
            ),
            (
                "kernel.core_pattern",
                b"|/usr/lib/systemd/systemd-coredump %P\n",
            ),
            ("kernel.hex", b"0x10 010\n"),
        ]);
        let c = tree.collector(
            &[
                "fs.file-nr",
                "kernel.threads-max",
                "net.ipv4.ip_local_port_range:low,high-end",
                "kernel.hex",
            ],
            &["kernel.seccomp.actions_avail", "kernel.core_pattern"],
        );
        let mut out = Vec::new();
        c.update(&mut out).unwrap();
        assert_eq!(
            lines(&out),
            [
                "node_sysctl_fs_file_nr untyped {index=0} 2080",
                "node_sysctl_fs_file_nr untyped {index=1} 0",
                "node_sysctl_fs_file_nr untyped {index=2} 9223372036854776000",
                "node_sysctl_kernel_threads_max untyped {} 127155",
                "node_sysctl_net_ipv4_ip_local_port_range_low untyped {} 32768",
                "node_sysctl_net_ipv4_ip_local_port_range_high_end untyped {} 60999",
                "node_sysctl_kernel_hex untyped {index=0} 16",
                "node_sysctl_kernel_hex untyped {index=1} 8",
                "node_sysctl_info gauge {name=kernel.seccomp.actions_avail,value=kill_process,index=0} 1",
                "node_sysctl_info gauge {name=kernel.seccomp.actions_avail,value=kill_thread,index=1} 1",
                "node_sysctl_info gauge {name=kernel.seccomp.actions_avail,value=trap,index=2} 1",
                "node_sysctl_info gauge {name=kernel.core_pattern,value=|/usr/lib/systemd/systemd-coredump,index=0} 1",
                "node_sysctl_info gauge {name=kernel.core_pattern,value=%P,index=1} 1",
            ]
        );
        assert_eq!(out[0].help, "sysctl fs.file-nr");
        assert_eq!(out[2].help, "sysctl net.ipv4.ip_local_port_range, field 0");
        assert_eq!(out[3].help, "sysctl net.ipv4.ip_local_port_range, field 1");
    }

    #[test]
    fn errors_stop_the_scrape_after_earlier_sysctls() {
        let long = format!("{}tail\n", "word ".repeat(30));
        let tree = Tree::new(&[
            ("kernel.a", b"1\n"),
            ("kernel.bad", b"1 x\n"),
            ("kernel.huge", b"18446744073709551615\n"),
            ("kernel.empty", b"\n"),
            ("kernel.two", b"1 2\n"),
            ("kernel.long", long.as_bytes()),
            ("kernel.words", b"a b\n"),
        ]);
        let cases: [(&[&str], &[&str], &str); 9] = [
            (
                &["kernel.a", "kernel.bad"],
                &[],
                "field 1 in sysctl kernel.bad is not a valid int",
            ),
            (&["kernel.a", "kernel.huge"], &[], "not a valid int"),
            (
                &["kernel.a", "kernel.empty"],
                &[],
                "sysctl kernel.empty has no values",
            ),
            (&["kernel.a", "kernel.missing"], &[], "kernel/missing"),
            (&["kernel.a", "kernel.a:x"], &[], "has only one value"),
            (
                &["kernel.a", "kernel.two:x,y,z"],
                &[],
                "has 2 keys but only 3",
            ),
            (
                &["kernel.a"],
                &["kernel.words:x,y"],
                "mapped sysctl string values not supported",
            ),
            (&["kernel.a"], &["kernel.a:x"], "has only one value"),
            (&["kernel.a"], &["kernel"], "error obtaining sysctl info"),
        ];
        for (includes, infos, message) in cases {
            let mut out = Vec::new();
            let error = tree
                .collector(includes, infos)
                .update(&mut out)
                .unwrap_err();
            assert!(format!("{error:#}").contains(message), "{error:#}");
            assert_eq!(lines(&out), ["node_sysctl_kernel_a untyped {} 1"]);
        }
        // At most 128 bytes are read: the last words are lost, the last one read may be cut.
        let mut out = Vec::new();
        tree.collector(&[], &["kernel.long"])
            .update(&mut out)
            .unwrap();
        assert_eq!(out[0].metrics.len(), 26);
        assert_eq!(out[0].metrics[25].labels[1].1, "wor");
    }

    #[test]
    fn repeated_and_clashing_sysctls_keep_the_first_series() {
        // `info` is also the name of the info family, with the same HELP but another TYPE:
        // the first series seen wins, as in node_exporter's registry.
        let tree = Tree::new(&[("kernel.a", b"1\n"), ("info", b"7\n"), ("kernel.b", b"x\n")]);
        let mut out = Vec::new();
        tree.collector(&["kernel.a", "kernel.a", "info"], &["kernel.b", "kernel.b"])
            .update(&mut out)
            .unwrap();
        assert_eq!(
            lines(&out),
            [
                "node_sysctl_kernel_a untyped {} 1",
                "node_sysctl_info untyped {} 7"
            ]
        );
        let mut out = Vec::new();
        tree.collector(&["kernel.a"], &["kernel.b", "kernel.b"])
            .update(&mut out)
            .unwrap();
        assert_eq!(
            lines(&out),
            [
                "node_sysctl_kernel_a untyped {} 1",
                "node_sysctl_info gauge {name=kernel.b,value=x,index=0} 1"
            ]
        );
    }

    #[test]
    fn names_stay_under_proc_sys() {
        let tree = Tree::new(&[("kernel.a", b"1\n")]);
        let c = tree.collector(&["/kernel.a"], &[]);
        assert_eq!(c.sysctls[0].path, tree.0.join("sys//kernel/a"));
        let mut out = Vec::new();
        c.update(&mut out).unwrap();
        assert_eq!(lines(&out), ["node_sysctl__kernel_a untyped {} 1"]);
        assert_eq!(out[0].help, "sysctl /kernel.a");
    }

    #[test]
    fn names() {
        let sanitizer = regex::Regex::new("_*[^0-9A-Za-z_]+_*").unwrap();
        assert_eq!(
            sanitizer.replace_all("net.ipv4.conf.all.rp_filter", "_"),
            "net_ipv4_conf_all_rp_filter"
        );
        assert_eq!(sanitizer.replace_all("a_.-_b", "_"), "a_b");
        assert_eq!(
            sanitizer.replace_all("vm.nr_hugepages_mempolicy", "_"),
            "vm_nr_hugepages_mempolicy"
        );
        assert_eq!(escape_name("node_sysctl_x_a-b.é"), "node_sysctl_x_a_b__");
    }
}
