//! `conntrack`: netfilter connection tracking table usage (/proc/sys/net/netfilter) and the
//! per-CPU statistics of /proc/net/stat/nf_conntrack, summed.
use std::sync::Arc;

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec, NoData},
    metrics::MetricFamily,
    read,
    read::KeptFile,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "conntrack",
    default_enabled: true,
    flags: &[],
    kernel: None,
    build,
};

/// The summed columns of /proc/net/stat/nf_conntrack: (column, family, help).
const STATS: [(usize, &str, &str); 8] = [
    (
        2,
        "found",
        "Number of searched entries which were successful.",
    ),
    (
        4,
        "invalid",
        "Number of packets seen which can not be tracked.",
    ),
    (
        5,
        "ignore",
        "Number of packets seen which are already connected to a conntrack entry.",
    ),
    (8, "insert", "Number of entries inserted into the list."),
    (
        9,
        "insert_failed",
        "Number of entries for which list insertion was attempted but failed.",
    ),
    (
        10,
        "drop",
        "Number of packets dropped due to conntrack failure.",
    ),
    (
        11,
        "early_drop",
        "Number of dropped conntrack entries to make room for new ones, if maximum table size was reached.",
    ),
    (
        16,
        "search_restart",
        "Number of conntrack table lookups which had to be restarted due to hashtable resizes.",
    ),
];

struct ConntrackCollector {
    count: KeptFile,
    max: KeptFile,
    stat: KeptFile,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(ConntrackCollector {
        count: KeptFile::new(context.proc_path("sys/net/netfilter/nf_conntrack_count")),
        max: KeptFile::new(context.proc_path("sys/net/netfilter/nf_conntrack_max")),
        stat: KeptFile::new(context.proc_path("net/stat/nf_conntrack")),
    }))
}

/// Upstream's `handleErr`: no such file means conntrack is not loaded.
fn read_file(file: &KeptFile) -> anyhow::Result<String> {
    let path = file.path();
    match file.read() {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Err(NoData(format!("conntrack probably not loaded: {}", path.display())).into())
        }
        other => other.with_context(|| {
            format!(
                "failed to retrieve conntrack stats: reading {}",
                path.display()
            )
        }),
    }
}

/// Sums the per-CPU lines (hexadecimal columns) after the header.
fn parse_stat(text: &str, path: &std::path::Path) -> anyhow::Result<[u64; 8]> {
    let mut sums = [0u64; 8];
    for (index, line) in text.lines().enumerate().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 17 {
            anyhow::bail!(
                "{} line {}: invalid conntrackstat entry, invalid number of fields: {}",
                path.display(),
                index + 1,
                fields.len()
            );
        }
        for (sum, (column, name, _)) in sums.iter_mut().zip(STATS) {
            let value = u64::from_str_radix(fields[column], 16).with_context(|| {
                format!(
                    "{} line {}: {name}: bad hex number {:?}",
                    path.display(),
                    index + 1,
                    fields[column]
                )
            })?;
            *sum = sum.wrapping_add(value);
        }
    }
    Ok(sums)
}

impl Collector for ConntrackCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let count: u64 =
            read::parse_number(read_file(&self.count)?.trim(), "count", self.count.path())?;
        out.push(
            MetricFamily::gauge(
                "node_nf_conntrack_entries",
                "Number of currently allocated flow entries for connection tracking.",
            )
            .with_value(count as f64),
        );
        let max: u64 = read::parse_number(read_file(&self.max)?.trim(), "max", self.max.path())?;
        out.push(
            MetricFamily::gauge(
                "node_nf_conntrack_entries_limit",
                "Maximum size of connection tracking table.",
            )
            .with_value(max as f64),
        );
        let sums = parse_stat(&read_file(&self.stat)?, self.stat.path())?;
        for (sum, (_, name, help)) in sums.iter().zip(STATS) {
            out.push(
                MetricFamily::gauge(format!("node_nf_conntrack_stat_{name}"), help)
                    .with_value(*sum as f64),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n";

    #[test]
    fn sums_cpus() {
        let text = format!(
            "{HEADER}00000021  00000000 00000001 00000000 00000002 00000010 00000000 00000000 00000000 00000003 00000000 00000000 00000000  00000000 00000000 00000000 0000000a\n\
             00000021  00000000 00000001 00000000 00000002 000000f0 00000000 00000000 00000000 00000003 00000000 00000000 00000000  00000000 00000000 00000000 00000001\n"
        );
        let sums = parse_stat(&text, std::path::Path::new("nf_conntrack")).unwrap();
        assert_eq!(sums, [2, 4, 0x100, 0, 6, 0, 0, 11]);
    }

    #[test]
    fn short_or_bad_lines_fail() {
        let path = std::path::Path::new("/proc/net/stat/nf_conntrack");
        let error = parse_stat(&format!("{HEADER}00000021 00000000\n"), path).unwrap_err();
        assert!(error.to_string().contains("nf_conntrack line 2"), "{error}");
        let bad = format!("{HEADER}{}\n", ["zz"; 17].join(" "));
        assert!(parse_stat(&bad, path).is_err());
    }
}
