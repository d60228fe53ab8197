//! `lnstat`: the per-CPU network cache statistics of every file in /proc/net/stat (arp_cache,
//! ndisc_cache, nf_conntrack, rt_cache...), as node_exporter's lnstat collector (procfs'
//! `NetStat`): `node_lnstat_<column>_total{subsystem=<file>,cpu=<n>}`. A file's first line names
//! its columns; each further line is one CPU, in hexadecimal.
//!
//! As procfs does, the values of a column are appended in the order read, so a column named
//! twice gets twice the CPUs and a short row shifts the CPUs of the columns it lacks. A row
//! with more values than there are column names makes procfs panic; it is an error here. A
//! column name that is not a valid metric name has each bad character printed as `_`, as
//! client_golang's default name escaping prints it. No /proc/net/stat (no networking) is no
//! series and no error, as upstream's glob finds nothing.
use std::{
    collections::BTreeMap,
    io::Read as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    goparse,
    metrics::MetricFamily,
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "lnstat",
    default_enabled: false,
    flags: &[],
    kernel: None,
    build,
};

struct LnstatCollector {
    dir: PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(LnstatCollector {
        dir: context.proc_path("net/stat"),
    }))
}

/// One file's columns: name → per-CPU values, as procfs' `NetStat.Stats`.
type Stats = BTreeMap<String, Vec<u64>>;

/// procfs' `parseNetstat` on the text of the file at `path`.
fn parse(text: &str, path: &Path) -> anyhow::Result<Stats> {
    let mut lines = text.lines();
    let headers: Vec<&str> = lines
        .next()
        .map(|header| header.split_whitespace().collect())
        .unwrap_or_default();
    let mut stats = Stats::new();
    for (row, line) in lines.enumerate() {
        for (column, counter) in line.split_whitespace().enumerate() {
            let value = goparse::parse_uint(counter, 16, 64).with_context(|| {
                format!(
                    "{}: row {}: bad hex number {counter:?}",
                    path.display(),
                    row + 1
                )
            })?;
            let Some(header) = headers.get(column) else {
                anyhow::bail!(
                    "{}: row {}: {} values for {} columns",
                    path.display(),
                    row + 1,
                    line.split_whitespace().count(),
                    headers.len()
                );
            };
            stats.entry((*header).to_owned()).or_default().push(value);
        }
    }
    Ok(stats)
}

/// `node_lnstat_<column>_total`, each character that may not be in a metric name as `_`.
fn metric_name(column: &str) -> String {
    let mut name = String::with_capacity(column.len() + 18);
    name.push_str("node_lnstat_");
    name.extend(column.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            c
        } else {
            '_'
        }
    }));
    name.push_str("_total");
    name
}

/// A file of the folder, as procfs reads it: an open error fails the scrape; a read error
/// (a sub-folder: EISDIR) ends the file, as a `bufio.Scanner` that nobody checks does.
fn read(path: &Path) -> anyhow::Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut bytes = Vec::new();
    if let Err(error) = file.read_to_end(&mut bytes) {
        tracing::debug!(path = %path.display(), %error, "unreadable lnstat file");
        return Ok(String::new());
    }
    String::from_utf8(bytes).with_context(|| format!("{}: not UTF-8", path.display()))
}

impl Collector for LnstatCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        // Go's `filepath.Glob(net/stat/*)`: every entry, sorted; no folder matches nothing.
        let files = read::glob(&self.dir, |_| true).unwrap_or_else(|error| {
            tracing::debug!(dir = %self.dir.display(), %error, "no lnstat files");
            Vec::new()
        });
        // Every file is read before any series is reported, as upstream reads them all first.
        let mut all = Vec::with_capacity(files.len());
        for path in files {
            let name = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            let stats = read(&path)
                .and_then(|text| parse(&text, &path))
                .context("lnstat error")?;
            all.push((name, stats));
        }
        let mut families: BTreeMap<String, MetricFamily> = BTreeMap::new();
        for (file, stats) in &all {
            for (column, values) in stats {
                let name = metric_name(column);
                let family = families
                    .entry(name.clone())
                    .or_insert_with(|| MetricFamily::counter(name, "linux network cache stats"));
                for (cpu, value) in values.iter().enumerate() {
                    family.push(
                        [("subsystem", file.clone()), ("cpu", cpu.to_string())],
                        *value as f64,
                    );
                }
            }
        }
        out.extend(families.into_values());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARP: &str = "entries  allocs destroys hash_grows  lookups hits  res_failed  rcv_probes_mcast rcv_probes_ucast  periodic_gc_runs forced_gc_runs unresolved_discards table_fulls
00000005  0000002a 00000025 00000000  000013f1 000012c0  00000000  00000000 00000000  0000a4d2 00000000 00000000 00000000
00000005  00000007 00000004 00000001  00000b3b 00000a9e  00000001  00000000 00000003  00000000 00000000 00000002 00000000
";

    fn x() -> &'static Path {
        Path::new("/proc/net/stat/x")
    }

    #[test]
    fn parses_columns_per_cpu() {
        let stats = parse(ARP, Path::new("/proc/net/stat/arp_cache")).unwrap();
        assert_eq!(stats.len(), 13);
        assert_eq!(stats["allocs"], [0x2a, 7]);
        assert_eq!(stats["periodic_gc_runs"], [0xa4d2, 0]);
        assert!(parse("", x()).unwrap().is_empty());
        assert!(parse("a b\n", x()).unwrap().is_empty(), "header only");
    }

    #[test]
    fn odd_files_follow_procfs() {
        // A column named twice: its values are appended, giving more CPUs.
        let stats = parse("a a b\n1 2 3\n4 5 6\n", x()).unwrap();
        assert_eq!(stats["a"], [1, 2, 4, 5]);
        // A short row shifts the CPUs of the later columns.
        let stats = parse("a b\n1\n2 3\n", x()).unwrap();
        assert_eq!(stats["a"], [1, 2]);
        assert_eq!(stats["b"], [3]);
        // Full 64-bit hex, both cases.
        let stats = parse("a b\nffffffffffffffff AbC\n", x()).unwrap();
        assert_eq!(stats["a"], [u64::MAX]);
        assert_eq!(stats["b"], [0xabc]);
        // More values than columns (a panic in procfs), bad hex, overflow, signs: errors.
        for bad in [
            "a\n1 2\n",
            "a\nzz\n",
            "a\n10000000000000000\n",
            "a\n+1\n",
            "a\n-1\n",
            "a\n0x1\n",
        ] {
            let error = parse(bad, x()).unwrap_err();
            assert!(
                format!("{error:#}").contains("/proc/net/stat/x: row 1"),
                "{error:#}"
            );
        }
    }

    #[test]
    fn metric_names() {
        assert_eq!(metric_name("entries"), "node_lnstat_entries_total");
        assert_eq!(metric_name("in-hit"), "node_lnstat_in_hit_total");
        assert_eq!(metric_name("é.x"), "node_lnstat___x_total");
        assert_eq!(metric_name("9a"), "node_lnstat_9a_total");
    }

    #[test]
    fn reports_each_file_as_a_subsystem() {
        let dir = std::env::temp_dir().join(format!("lnstat-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("arp_cache"), ARP).unwrap();
        std::fs::write(dir.join("ndisc_cache"), "entries allocs\n1 2\n").unwrap();
        let c = LnstatCollector { dir: dir.clone() };
        let mut out = Vec::new();
        c.update(&mut out).unwrap();
        assert_eq!(out.len(), 13);
        let entries = out
            .iter()
            .find(|f| f.name == "node_lnstat_entries_total")
            .unwrap();
        assert_eq!(entries.metrics.len(), 3);
        assert_eq!(entries.metrics[2].labels[0].1, "ndisc_cache");

        std::fs::write(dir.join("rt_cache"), "entries\n1 2\n").unwrap();
        let error = c.update(&mut Vec::new()).unwrap_err();
        assert!(format!("{error:#}").contains("rt_cache"), "{error:#}");
        std::fs::remove_dir_all(&dir).unwrap();

        let mut out = Vec::new();
        c.update(&mut out).unwrap();
        assert!(out.is_empty(), "no folder: nothing, no error");
    }
}
