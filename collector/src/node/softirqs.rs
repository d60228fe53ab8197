//! `softirqs`: per-CPU softirq counts from /proc/softirqs, as node_exporter's softirqs collector
//! (procfs' `Softirqs`). The first line (the CPU header) is skipped; the ten known vectors are
//! read from the rows that name them, whatever their order, a later row of the same name
//! replacing an earlier one; other rows are ignored. The `cpu` label is the column index.
//!
//! procfs reads at most 1 MiB of the file, and its `bufio.Scanner` fails on a line over 64 KiB
//! (about 6,000 CPUs); the same 1 MiB is read here, in lines of any length.
use std::{path::Path, sync::Arc};

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    goparse,
    metrics::MetricFamily,
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "softirqs",
    default_enabled: false,
    flags: &[],
    kernel: None,
    build,
};

/// The vectors, in the order upstream reports them: (row name in the file, `type` label).
const VECTORS: [(&str, &str); 10] = [
    ("HI:", "HI"),
    ("TIMER:", "TIMER"),
    ("NET_TX:", "NET_TX"),
    ("NET_RX:", "NET_RX"),
    ("BLOCK:", "BLOCK"),
    ("IRQ_POLL:", "IRQ_POLL"),
    ("TASKLET:", "TASKLET"),
    ("SCHED:", "SCHED"),
    ("HRTIMER:", "HRTIMER"),
    ("RCU:", "RCU"),
];

struct SoftirqsCollector {
    path: std::path::PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(SoftirqsCollector {
        path: context.proc_path("softirqs"),
    }))
}

/// The per-CPU counts of each vector of [`VECTORS`], in its order; empty for a vector the file
/// does not list.
fn parse(text: &str, path: &Path) -> anyhow::Result<[Vec<u64>; 10]> {
    let mut lines = text.lines();
    if lines.next().is_none() {
        anyhow::bail!("{}: softirqs empty", path.display());
    }
    let mut counts: [Vec<u64>; 10] = Default::default();
    for line in lines {
        let mut parts = line.split_whitespace();
        let Some(name) = parts.next() else {
            continue;
        };
        let Some(index) = VECTORS.iter().position(|(row, _)| *row == name) else {
            continue;
        };
        let mut values = Vec::new();
        for (cpu, count) in parts.enumerate() {
            let value = goparse::parse_uint(count, 10, 64).with_context(|| {
                format!(
                    "{}: couldn't parse {count:?} ({}{cpu})",
                    path.display(),
                    VECTORS[index].1
                )
            })?;
            values.push(value);
        }
        // A row with no CPU column is skipped, keeping what an earlier row gave.
        if !values.is_empty() {
            counts[index] = values;
        }
    }
    Ok(counts)
}

impl Collector for SoftirqsCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let counts = read::capped_string(&self.path, read::NO_STAT_LIMIT)
            .with_context(|| format!("reading {}", self.path.display()))
            .and_then(|text| parse(&text, &self.path))
            .context("couldn't get softirqs")?;
        let mut family =
            MetricFamily::counter("node_softirqs_functions_total", "Softirq counts per CPU.");
        for ((_, vector), values) in VECTORS.iter().zip(&counts) {
            for (cpu, value) in values.iter().enumerate() {
                family.push(
                    [("cpu", cpu.to_string()), ("type", (*vector).to_owned())],
                    *value as f64,
                );
            }
        }
        out.push(family);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "                    CPU0       CPU1
          HI:          1          0
       TIMER:    1234567     987654
      NET_TX:         12         34
      NET_RX:     456789     123456
       BLOCK:      88123      90210
    IRQ_POLL:          0          0
     TASKLET:        371        207
       SCHED:    2345678    2210987
     HRTIMER:         59         61
         RCU:    3456789    3345678
";

    fn path() -> &'static Path {
        Path::new("/proc/softirqs")
    }

    #[test]
    fn parses_every_vector() {
        let counts = parse(TEXT, path()).unwrap();
        assert_eq!(counts[0], [1, 0]);
        assert_eq!(counts[1], [1234567, 987654]);
        assert_eq!(counts[9], [3456789, 3345678]);
    }

    #[test]
    fn odd_rows() {
        assert!(parse("", path()).is_err());
        // Header only, unknown rows, a vector without columns, a later row replacing one.
        let counts = parse("CPU0\nFOO: 1\nHI:\nHI: 5 6 7\nRCU: 1\nRCU: 2\n", path()).unwrap();
        assert_eq!(counts[0], [5, 6, 7]);
        assert_eq!(counts[9], [2]);
        assert!(counts[1].is_empty());
        // The first line is always the header, even if it looks like a row.
        assert!(parse("HI: 1\n", path()).unwrap()[0].is_empty());
        // Values are checked: no sign, no junk, no overflow.
        for bad in ["HI: +1", "HI: -1", "HI: 1x", "HI: 18446744073709551616"] {
            let error = parse(&format!("CPU0\n{bad}\n"), path()).unwrap_err();
            assert!(format!("{error:#}").contains("(HI0)"), "{error:#}");
        }
        assert_eq!(
            parse("CPU0\nHI: 18446744073709551615\n", path()).unwrap()[0],
            [u64::MAX]
        );
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let c = SoftirqsCollector {
            path: "/nonexistent/softirqs".into(),
        };
        let error = c.update(&mut Vec::new()).unwrap_err();
        assert!(
            format!("{error:#}").contains("couldn't get softirqs"),
            "{error:#}"
        );
    }
}
