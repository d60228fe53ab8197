//! `meminfo_numa`: memory per NUMA node, from /sys/devices/system/node/node<N>/meminfo
//! (`node_memory_numa_<Field>{node}` gauges, kB × 1024, `Active(anon)` as `Active_anon`) and
//! .../numastat (`node_memory_numa_<counter>_total{node}` counters).
//!
//! All nodes are read before anything is reported, so one bad file fails the whole scrape with
//! no sample, as upstream. No node directory at all is success with no sample.
use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, LazyLock},
};

use anyhow::Context as _;
use regex::Regex;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    goparse,
    metrics::{MetricFamily, MetricType},
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "meminfo_numa",
    default_enabled: false,
    flags: &[],
    kernel: None,
    build,
};

/// `Active(anon)` → `Active_anon`: node_exporter's `\((.*)\)` replaced by `_${1}` (greedy).
static PARENTHESES: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\((.*)\)").expect("valid regex"));

/// One sample, as node_exporter's `meminfoMetric`.
#[derive(Debug, PartialEq)]
pub struct NumaMetric {
    /// After `node_memory_numa_`.
    pub name: String,
    pub metric_type: MetricType,
    pub node: String,
    pub value: f64,
}

struct MeminfoNumaCollector {
    nodes_dir: PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(MeminfoNumaCollector {
        nodes_dir: context.sys_path("devices/system/node"),
    }))
}

/// A node's meminfo: `Node 0 MemTotal:       16310820 kB` (or without unit, for page counts).
pub fn parse_meminfo(text: &str) -> anyhow::Result<Vec<NumaMetric>> {
    let mut metrics = Vec::new();
    for line in goparse::text_lines(text) {
        let line = line?.trim();
        if line.is_empty() {
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        // node_exporter indexes the value unchecked (a panic there); an error here.
        let Some(value) = parts.get(3) else {
            anyhow::bail!("invalid line in meminfo: {line}");
        };
        let mut value = goparse::parse_float(value, 64)
            .with_context(|| format!("invalid value in meminfo: {value:?}"))?;
        match parts.len() {
            4 => {}
            5 if parts[4] == "kB" => value *= 1024.0,
            _ => anyhow::bail!("invalid line in meminfo: {line}"),
        }
        let name = PARENTHESES.replace_all(parts[2].trim_end_matches(':'), "_${1}");
        metrics.push(NumaMetric {
            name: name.into_owned(),
            metric_type: MetricType::Gauge,
            node: parts[1].to_owned(),
            value,
        });
    }
    Ok(metrics)
}

/// A node's numastat: `numa_hit 193460335812` per line, as `<name>_total` counters of `node`.
pub fn parse_numastat(text: &str, node: &str) -> anyhow::Result<Vec<NumaMetric>> {
    let mut metrics = Vec::new();
    for line in goparse::text_lines(text) {
        let line = line?.trim();
        if line.is_empty() {
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [name, value] = parts[..] else {
            anyhow::bail!("line scan did not return 2 fields: {line}");
        };
        let value = goparse::parse_float(value, 64)
            .with_context(|| format!("invalid value in numastat: {value:?}"))?;
        metrics.push(NumaMetric {
            name: format!("{name}_total"),
            metric_type: MetricType::Counter,
            node: node.to_owned(),
            value,
        });
    }
    Ok(metrics)
}

/// A whole file, invalid UTF-8 replaced (Go reads bytes; only labels could carry them).
fn read_lossy(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

impl MeminfoNumaCollector {
    fn metrics(&self) -> anyhow::Result<Vec<NumaMetric>> {
        let mut metrics = Vec::new();
        // Go's `filepath.Glob("node[0-9]*")`, which reports no I/O error: sorted by name.
        let nodes = read::numbered_entries(&self.nodes_dir, "node").unwrap_or_default();
        for (name, dir) in nodes {
            let meminfo = dir.join("meminfo");
            let text = read_lossy(&meminfo)?;
            metrics.extend(parse_meminfo(&text).with_context(|| meminfo.display().to_string())?);
            // The digits after `node` (node_exporter's `node([0-9]*)` on the path).
            let number: String = name["node".len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            let numastat = dir.join("numastat");
            let text = read_lossy(&numastat)?;
            metrics.extend(
                parse_numastat(&text, &number).with_context(|| numastat.display().to_string())?,
            );
        }
        Ok(metrics)
    }
}

impl Collector for MeminfoNumaCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let metrics = self.metrics().context("couldn't get NUMA meminfo")?;
        let mut families: Vec<MetricFamily> = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        let mut seen = HashSet::new();
        for metric in metrics {
            let name = format!("node_memory_numa_{}", escape_name(&metric.name));
            let index = *by_name.entry(name.clone()).or_insert_with(|| {
                families.push(MetricFamily::new(
                    name.clone(),
                    format!("Memory information field {}.", metric.name),
                    metric.metric_type,
                ));
                families.len() - 1
            });
            // node_exporter's registry drops a sample of a series it already has, or of a
            // family it already has with another type.
            if families[index].metric_type != metric.metric_type
                || !seen.insert((index, metric.node.clone()))
            {
                continue;
            }
            families[index].push([("node", metric.node)], metric.value);
        }
        out.extend(families);
        Ok(())
    }
}

/// A field name that is not a valid Prometheus name (never seen in a kernel's meminfo) as
/// client_golang's default underscore escaping prints it: each other character as `_`.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_node_meminfo() {
        let text = "Node 1 MemTotal:       16310820 kB\n\
                    \n\
                    Node 1 Active(anon):     123 kB\n\
                    Node 1 HugePages_Total:     2\n";
        let metrics = parse_meminfo(text).unwrap();
        assert_eq!(metrics.len(), 3);
        assert_eq!(metrics[0].name, "MemTotal");
        assert_eq!(metrics[0].node, "1");
        assert_eq!(metrics[0].value, 16310820.0 * 1024.0);
        assert_eq!(metrics[1].name, "Active_anon");
        assert_eq!(metrics[2].name, "HugePages_Total");
        assert_eq!(metrics[2].value, 2.0);
        assert_eq!(metrics[2].metric_type, MetricType::Gauge);
        // Greedy, and every trailing colon goes.
        assert_eq!(
            parse_meminfo("Node 0 A(b)c(d):: 1").unwrap()[0].name,
            "A_b)c(d"
        );
    }

    #[test]
    fn malformed_node_meminfo_is_an_error() {
        for text in [
            "Node 0 MemTotal:\n",
            "Node 0\n",
            "Node 0 MemTotal: x kB\n",
            "Node 0 MemTotal: 1 MB\n",
            "Node 0 MemTotal: 1 kB extra\n",
            "Node 0 MemTotal: 1e999 kB\n",
        ] {
            assert!(parse_meminfo(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn parses_numastat() {
        let metrics = parse_numastat("numa_hit 193460335812\nnuma_miss 12624528\n", "0").unwrap();
        assert_eq!(metrics[0].name, "numa_hit_total");
        assert_eq!(metrics[0].value, 193460335812.0);
        assert_eq!(metrics[1].metric_type, MetricType::Counter);
        assert_eq!(metrics[1].node, "0");
        for text in ["numa_hit\n", "numa_hit 1 2\n", "numa_hit -\n"] {
            assert!(parse_numastat(text, "0").is_err(), "{text:?}");
        }
    }

    #[test]
    fn nodes_are_read_in_glob_order_and_all_or_nothing() {
        let dir = std::env::temp_dir().join(format!("meminfo-numa-test-{}", std::process::id()));
        let collector = MeminfoNumaCollector {
            nodes_dir: dir.clone(),
        };
        let mut out = Vec::new();
        // No node directory: nothing, and no error.
        collector.update(&mut out).unwrap();
        assert!(out.is_empty());
        for node in ["node0", "node10x", "node2"] {
            std::fs::create_dir_all(dir.join(node)).unwrap();
            let number = node.trim_start_matches("node").trim_end_matches('x');
            std::fs::write(
                dir.join(node).join("meminfo"),
                format!("Node {number} MemFree: 1 kB\nNode {number} MemFree: 2 kB\n"),
            )
            .unwrap();
            std::fs::write(dir.join(node).join("numastat"), "numa_hit 5\n").unwrap();
        }
        std::fs::create_dir_all(dir.join("nodex")).unwrap();
        collector.update(&mut out).unwrap();
        let free = out
            .iter()
            .find(|f| f.name == "node_memory_numa_MemFree")
            .unwrap();
        // The repeated line is dropped, as node_exporter's registry drops it.
        assert_eq!(free.metrics.len(), 3);
        assert_eq!(free.metrics[0].value, crate::metrics::Value::Scalar(1024.0));
        let hits = out
            .iter()
            .find(|f| f.name == "node_memory_numa_numa_hit_total")
            .unwrap();
        let nodes: Vec<&str> = hits
            .metrics
            .iter()
            .map(|m| m.labels[0].1.as_str())
            .collect();
        assert_eq!(nodes, ["0", "10", "2"]);
        assert_eq!(hits.metric_type, MetricType::Counter);

        std::fs::remove_file(dir.join("node2").join("numastat")).unwrap();
        let mut out = Vec::new();
        let error = collector.update(&mut out).unwrap_err();
        assert!(format!("{error:#}").contains("node2/numastat"), "{error:#}");
        assert!(out.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_are_escaped() {
        assert_eq!(escape_name("Foo-bar.baz"), "Foo_bar_baz");
        assert_eq!(escape_name("Active_anon"), "Active_anon");
    }
}
