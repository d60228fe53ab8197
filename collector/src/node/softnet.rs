//! `softnet`: per-CPU packet processing statistics from /proc/net/softnet_stat, as
//! node_exporter's softnet collector. Rows map to CPUs by the 13th column (the CPU index) on
//! kernels that print it (5.10+), by row number before, as procfs does.
use std::{path::Path, sync::Arc};

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    metrics::MetricFamily,
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "softnet",
    default_enabled: true,
    flags: &[],
    kernel: None,
    build,
};

struct SoftnetCollector {
    file: read::KeptFile,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(SoftnetCollector {
        file: read::KeptFile::new(context.proc_path("net/softnet_stat")),
    }))
}

/// A counter family: name suffix, HELP and the row's value.
type Counter = (&'static str, &'static str, fn(&Row) -> u32);

#[derive(Debug, Default, PartialEq)]
struct Row {
    processed: u32,
    dropped: u32,
    time_squeezed: u32,
    cpu_collision: u32,
    received_rps: u32,
    flow_limit_count: u32,
    backlog_len: u32,
    cpu: u32,
}

/// Parses softnet_stat as procfs' `parseSoftnet`: at least 9 hex columns; received_rps from
/// 10, flow_limit_count from 11, backlog length and CPU index from 13 columns.
fn parse(text: &str, path: &Path) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (line_number, line) in text.lines().enumerate() {
        let columns: Vec<&str> = line.split_whitespace().collect();
        if columns.len() < 9 {
            anyhow::bail!(
                "{}: line {}: detected {} columns, but expected at least 9",
                path.display(),
                line_number + 1,
                columns.len()
            );
        }
        let hex = |i: usize| {
            u32::from_str_radix(columns[i], 16).map_err(|_| {
                anyhow::anyhow!(
                    "{}: line {}: bad hex number {:?}",
                    path.display(),
                    line_number + 1,
                    columns[i]
                )
            })
        };
        let mut row = Row {
            processed: hex(0)?,
            dropped: hex(1)?,
            time_squeezed: hex(2)?,
            cpu_collision: hex(8)?,
            ..Row::default()
        };
        if columns.len() >= 10 {
            row.received_rps = hex(9)?;
        }
        if columns.len() >= 11 {
            row.flow_limit_count = hex(10)?;
        }
        if columns.len() >= 13 {
            row.backlog_len = hex(11)?;
            row.cpu = hex(12)?;
        } else {
            row.cpu = line_number as u32;
        }
        rows.push(row);
    }
    Ok(rows)
}

impl Collector for SoftnetCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let rows = parse(&self.file.to_string()?, self.file.path())?;
        let counters: [Counter; 6] = [
            ("processed_total", "Number of processed packets", |r| {
                r.processed
            }),
            ("dropped_total", "Number of dropped packets", |r| r.dropped),
            (
                "times_squeezed_total",
                "Number of times processing packets ran out of quota",
                |r| r.time_squeezed,
            ),
            (
                "cpu_collision_total",
                "Number of collision occur while obtaining device lock while transmitting",
                |r| r.cpu_collision,
            ),
            (
                "received_rps_total",
                "Number of times cpu woken up received_rps",
                |r| r.received_rps,
            ),
            (
                "flow_limit_count_total",
                "Number of times flow limit has been reached",
                |r| r.flow_limit_count,
            ),
        ];
        for (name, help, value) in counters {
            let mut family = MetricFamily::counter(format!("node_softnet_{name}"), help);
            for row in &rows {
                family.push([("cpu", row.cpu.to_string())], f64::from(value(row)));
            }
            out.push(family);
        }
        let mut backlog = MetricFamily::gauge("node_softnet_backlog_len", "Softnet backlog status");
        for row in &rows {
            backlog.push([("cpu", row.cpu.to_string())], f64::from(row.backlog_len));
        }
        out.push(backlog);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_of_every_kernel() {
        let text = "00000010 00000001 00000002 00000000 00000000 00000000 00000000 00000000 00000003\n\
                    00000010 00000001 00000002 00000000 00000000 00000000 00000000 00000000 00000003 00000004 00000005\n\
                    0000ffff 00000001 00000002 00000000 00000000 00000000 00000000 00000000 00000003 00000004 00000005 00000006 0000000a\n";
        let rows = parse(text, Path::new("/proc/net/softnet_stat")).unwrap();
        assert_eq!(rows[0].cpu, 0);
        assert_eq!(rows[0].received_rps, 0);
        assert_eq!(rows[1].cpu, 1);
        assert_eq!(rows[1].flow_limit_count, 5);
        assert_eq!(rows[2].cpu, 10, "the CPU index column wins");
        assert_eq!(rows[2].processed, 0xffff);
        assert_eq!(rows[2].backlog_len, 6);
    }

    #[test]
    fn short_or_bad_rows_are_errors_naming_the_file() {
        for text in ["1 2 3\n", "1 2 3 4 5 6 7 8 zz\n"] {
            let error = parse(text, Path::new("/x/net/softnet_stat")).unwrap_err();
            assert!(error.to_string().contains("/x/net/softnet_stat"), "{error}");
        }
    }
}
