//! `schedstat`: per-CPU running and waiting time and timeslices from /proc/schedstat, read as
//! procfs does (the `cpuN` lines; lines that do not match, or whose numbers overflow, are
//! skipped).
use std::{sync::Arc, sync::LazyLock};

use regex::Regex;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec, NoData},
    metrics::MetricFamily,
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "schedstat",
    default_enabled: true,
    flags: &[],
    kernel: None,
    build,
};

/// procfs's `cpuLineRE` (ASCII digits, as Go's `\d`), unanchored.
static CPU_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"cpu([0-9]+) ([0-9]+) ([0-9]+) ([0-9]+) ([0-9]+) ([0-9]+) ([0-9]+) ([0-9]+) ([0-9]+) ([0-9]+)",
    )
    .expect("valid regex")
});

const NS_PER_SEC: f64 = 1e9;

struct SchedstatCollector {
    file: read::KeptFile,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(SchedstatCollector {
        file: read::KeptFile::new(context.proc_path("schedstat")),
    }))
}

/// `(cpu, running ns, waiting ns, timeslices)` per matching line.
fn parse(text: &str) -> Vec<(&str, u64, u64, u64)> {
    text.lines()
        .filter_map(|line| {
            let captures = CPU_LINE.captures(line)?;
            let number = |i: usize| captures.get(i)?.as_str().parse::<u64>().ok();
            Some((
                captures.get(1)?.as_str(),
                number(8)?,
                number(9)?,
                number(10)?,
            ))
        })
        .collect()
}

impl Collector for SchedstatCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let text = self
            .file
            .optional()?
            .ok_or_else(|| NoData("schedstat file does not exist".to_owned()))?;
        let mut running = MetricFamily::counter(
            "node_schedstat_running_seconds_total",
            "Number of seconds CPU spent running a process.",
        );
        let mut waiting = MetricFamily::counter(
            "node_schedstat_waiting_seconds_total",
            "Number of seconds spent by processing waiting for this CPU.",
        );
        let mut timeslices = MetricFamily::counter(
            "node_schedstat_timeslices_total",
            "Number of timeslices executed by CPU.",
        );
        for (cpu, running_ns, waiting_ns, slices) in parse(&text) {
            running.push([("cpu", cpu)], running_ns as f64 / NS_PER_SEC);
            waiting.push([("cpu", cpu)], waiting_ns as f64 / NS_PER_SEC);
            timeslices.push([("cpu", cpu)], slices as f64);
        }
        out.extend([running, waiting, timeslices]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn cpu_lines_only_overflow_skipped() {
        let text = "version 15\ntimestamp 4295\n\
            cpu0 0 0 0 0 0 0 2045936778163039 343796328169361 4767485306\n\
            domain0 00000003 1 2 3\n\
            cpu1 0 0 0 0 0 0 99999999999999999999 1 2\n\
            cpu2 0 0 0\n\
            cpu3 0 0 0 0 0 0 10 20 30 40 50\n";
        assert_eq!(
            parse(text),
            [
                ("0", 2045936778163039, 343796328169361, 4767485306),
                ("3", 10, 20, 30)
            ]
        );
    }
}
