//! `stat`: interrupts, context switches, forks, boot time and process states from /proc/stat,
//! and with `--collector.stat.softirq` the softirq calls per vector. The /proc/stat parser here
//! is procfs's `Stat()`, shared with the `cpu` collector.
use std::{collections::BTreeMap, path::Path, sync::Arc};

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    flags::FlagSpec,
    metrics::MetricFamily,
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "stat",
    default_enabled: true,
    flags: &[FlagSpec::bool(
        "collector.stat.softirq",
        false,
        "Export softirq calls per vector",
    )],
    kernel: None,
    build,
};

/// Kernel USER_HZ: /proc/stat counts CPU time in 1/100 s.
const USER_HZ: f64 = 100.0;

/// One `cpu` line of /proc/stat, in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuTimes {
    pub user: f64,
    pub nice: f64,
    pub system: f64,
    pub idle: f64,
    pub iowait: f64,
    pub irq: f64,
    pub softirq: f64,
    pub steal: f64,
    pub guest: f64,
    pub guest_nice: f64,
}

/// The softirq vectors of the `softirq` line, in the kernel's order.
pub const SOFTIRQ_VECTORS: [&str; 10] = [
    "hi",
    "timer",
    "net_tx",
    "net_rx",
    "block",
    "block_iopoll",
    "tasklet",
    "sched",
    "hrtimer",
    "rcu",
];

/// /proc/stat, as procfs's `Stat` holds it: absent lines read as zero.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcStat {
    pub boot_time: u64,
    /// Per-CPU times by CPU number (the `cpu` total line is not kept).
    pub cpus: BTreeMap<i64, CpuTimes>,
    pub intr: u64,
    pub ctxt: u64,
    pub processes: u64,
    pub procs_running: u64,
    pub procs_blocked: u64,
    pub softirq: [u64; 10],
}

/// Parses /proc/stat as procfs does: lines of fewer than two fields are skipped, a `cpu` line
/// may have fewer than ten values (the rest read as zero), any number that does not parse
/// fails the whole file.
pub fn parse_proc_stat(text: &str, path: &Path) -> anyhow::Result<ProcStat> {
    let mut stat = ProcStat::default();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.len() < 2 {
            continue;
        }
        let uint = |field: &str| read::parse_number::<u64>(parts[1], field, path);
        match parts[0] {
            "btime" => stat.boot_time = uint("btime")?,
            "intr" => {
                stat.intr = uint("intr")?;
                for (i, count) in parts[2..].iter().enumerate() {
                    count.parse::<u64>().with_context(|| {
                        format!("{}: intr{i}: bad number {count:?}", path.display())
                    })?;
                }
            }
            "ctxt" => stat.ctxt = uint("ctxt")?,
            "processes" => stat.processes = uint("processes")?,
            "procs_running" => stat.procs_running = uint("procs_running")?,
            "procs_blocked" => stat.procs_blocked = uint("procs_blocked")?,
            "softirq" => {
                // Sscanf("%s %d ×11"): the total and all ten vectors are required.
                if parts.len() < 12 {
                    anyhow::bail!(
                        "{}: softirq: expected 11 numbers in {line:?}",
                        path.display()
                    );
                }
                uint("softirq")?;
                for (slot, value) in stat.softirq.iter_mut().zip(&parts[2..12]) {
                    *slot = read::parse_number(value, "softirq", path)?;
                }
            }
            name if name.starts_with("cpu") => {
                let mut values = [0.0; 10];
                for (slot, value) in values.iter_mut().zip(&parts[1..]) {
                    let ticks: f64 = read::parse_number(value, name, path)?;
                    *slot = ticks / USER_HZ;
                }
                let [
                    user,
                    nice,
                    system,
                    idle,
                    iowait,
                    irq,
                    softirq,
                    steal,
                    guest,
                    guest_nice,
                ] = values;
                let times = CpuTimes {
                    user,
                    nice,
                    system,
                    idle,
                    iowait,
                    irq,
                    softirq,
                    steal,
                    guest,
                    guest_nice,
                };
                if name == "cpu" {
                    continue;
                }
                let id: i64 = read::parse_number(&name[3..], "cpu id", path)?;
                if id != -1 {
                    stat.cpus.insert(id, times);
                }
            }
            _ => {}
        }
    }
    Ok(stat)
}

/// Reads and parses /proc/stat.
pub fn read_proc_stat(file: &read::KeptFile) -> anyhow::Result<ProcStat> {
    parse_proc_stat(&file.to_string()?, file.path())
}

struct StatCollector {
    file: read::KeptFile,
    softirq: bool,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(StatCollector {
        file: read::KeptFile::new(context.proc_path("stat")),
        softirq: context.flags.bool("collector.stat.softirq"),
    }))
}

impl Collector for StatCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let stat = read_proc_stat(&self.file)?;
        out.push(
            MetricFamily::counter("node_intr_total", "Total number of interrupts serviced.")
                .with_value(stat.intr as f64),
        );
        out.push(
            MetricFamily::counter(
                "node_context_switches_total",
                "Total number of context switches.",
            )
            .with_value(stat.ctxt as f64),
        );
        out.push(
            MetricFamily::counter("node_forks_total", "Total number of forks.")
                .with_value(stat.processes as f64),
        );
        out.push(
            MetricFamily::gauge("node_boot_time_seconds", "Node boot time, in unixtime.")
                .with_value(stat.boot_time as f64),
        );
        out.push(
            MetricFamily::gauge(
                "node_procs_running",
                "Number of processes in runnable state.",
            )
            .with_value(stat.procs_running as f64),
        );
        out.push(
            MetricFamily::gauge(
                "node_procs_blocked",
                "Number of processes blocked waiting for I/O to complete.",
            )
            .with_value(stat.procs_blocked as f64),
        );
        if self.softirq {
            let mut family =
                MetricFamily::counter("node_softirqs_total", "Number of softirq calls.");
            for (vector, value) in SOFTIRQ_VECTORS.iter().zip(stat.softirq) {
                family.push([("vector", *vector)], value as f64);
            }
            out.push(family);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<ProcStat> {
        parse_proc_stat(text, Path::new("/proc/stat"))
    }

    #[test]
    fn parses_every_line() {
        let stat = parse(
            "cpu  10 20 30 40 50 60 70 80 90 100\n\
             cpu0 1 2 3 4 5 6 7 8 9 10\n\
             cpu3 100 0 0 0\n\
             intr 1234 1 2 3\n\
             ctxt 99\n\
             btime 1700000000\n\
             processes 77\n\
             procs_running 3\n\
             procs_blocked 1\n\
             softirq 55 1 2 3 4 5 6 7 8 9 10\n\
             \n",
        )
        .unwrap();
        assert_eq!(stat.intr, 1234);
        assert_eq!(stat.ctxt, 99);
        assert_eq!(stat.boot_time, 1_700_000_000);
        assert_eq!(stat.processes, 77);
        assert_eq!((stat.procs_running, stat.procs_blocked), (3, 1));
        assert_eq!(stat.softirq, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(stat.cpus.keys().copied().collect::<Vec<_>>(), [0, 3]);
        assert_eq!(stat.cpus[&0].guest_nice, 0.1);
        // A short line (an old kernel) reads the missing modes as zero.
        assert_eq!(
            stat.cpus[&3],
            CpuTimes {
                user: 1.0,
                ..CpuTimes::default()
            }
        );
    }

    #[test]
    fn bad_numbers_name_the_file() {
        for text in [
            "cpu0 1 2 x\n",
            "ctxt 12a\n",
            "intr 5 1 -2\n",
            "softirq 1 2 3\n",
            "cpux 1 2 3\n",
            "btime -5\n",
        ] {
            let err = format!("{:#}", parse(text).unwrap_err());
            assert!(err.contains("/proc/stat"), "{text:?}: {err}");
        }
    }

    #[test]
    fn truncated_file_reads_what_is_there() {
        // A file cut in the middle of a line still parses up to the cut, as procfs does.
        let stat = parse("ctxt 5\nprocs_runn").unwrap();
        assert_eq!(stat.ctxt, 5);
        assert_eq!(stat.procs_running, 0);
    }
}
