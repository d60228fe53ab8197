//! `buddyinfo`: the free blocks of each order per NUMA node and zone, from /proc/buddyinfo, as
//! procfs' `BuddyInfo` reads it (`node_buddyinfo_blocks{node,zone,size}`, `size` the order).
use std::{collections::HashSet, path::PathBuf, sync::Arc};

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    goparse,
    metrics::MetricFamily,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "buddyinfo",
    default_enabled: false,
    flags: &[],
    kernel: None,
    build,
};

struct BuddyinfoCollector {
    path: PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(BuddyinfoCollector {
        path: context.proc_path("buddyinfo"),
    }))
}

/// One line of /proc/buddyinfo: `Node 0, zone   Normal   4381   1093 ...`.
#[derive(Debug, PartialEq)]
pub struct BuddyInfo {
    pub node: String,
    pub zone: String,
    /// Free blocks of order 0, 1, 2...
    pub sizes: Vec<f64>,
}

/// procfs' `parseBuddyInfo`: every line needs at least four fields, all lines the same number
/// of orders, and every count must be a number; any of these failing fails the whole file.
pub fn parse(text: &str) -> anyhow::Result<Vec<BuddyInfo>> {
    let mut entries = Vec::new();
    let mut bucket_count = None;
    for line in goparse::text_lines(text) {
        let line = line?;
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.len() < 4 {
            anyhow::bail!("invalid number of fields, found: {parts:?}");
        }
        let node = parts[1].strip_suffix(',').unwrap_or(parts[1]);
        let zone = parts[3].strip_suffix(',').unwrap_or(parts[3]);
        let counts = &parts[4..];
        match bucket_count {
            None => bucket_count = Some(counts.len()),
            Some(previous) if previous != counts.len() => anyhow::bail!(
                "mismatch in number of buddyinfo buckets, previous count {previous}, new count {}",
                counts.len()
            ),
            Some(_) => {}
        }
        let sizes = counts
            .iter()
            .map(|count| {
                goparse::parse_float(count, 64)
                    .with_context(|| format!("invalid value in buddyinfo: {count:?}"))
            })
            .collect::<anyhow::Result<Vec<f64>>>()?;
        entries.push(BuddyInfo {
            node: node.to_owned(),
            zone: zone.to_owned(),
            sizes,
        });
    }
    Ok(entries)
}

impl Collector for BuddyinfoCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let path = &self.path;
        let entries = std::fs::read(path)
            .with_context(|| format!("reading {}", path.display()))
            .and_then(|bytes| parse(&String::from_utf8_lossy(&bytes)))
            .with_context(|| format!("couldn't get buddyinfo: {}", path.display()))?;
        let mut blocks = MetricFamily::gauge(
            "node_buddyinfo_blocks",
            "Count of free blocks according to size.",
        );
        // A repeated node and zone: node_exporter's registry keeps the first sample only.
        let mut seen = HashSet::new();
        for entry in &entries {
            for (size, &value) in entry.sizes.iter().enumerate() {
                if !seen.insert((entry.node.as_str(), entry.zone.as_str(), size)) {
                    continue;
                }
                blocks.push(
                    [
                        ("node", entry.node.clone()),
                        ("zone", entry.zone.clone()),
                        ("size", size.to_string()),
                    ],
                    value,
                );
            }
        }
        if !blocks.metrics.is_empty() {
            out.push(blocks);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buddyinfo() {
        let text = "Node 0, zone      DMA      1      0      1 \n\
                    Node 0, zone    DMA32    759    572    791 \n\
                    Node 1, zone   Normal   4381   1093    185\n";
        let entries = parse(text).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[1].node, "0");
        assert_eq!(entries[1].zone, "DMA32");
        assert_eq!(entries[1].sizes, [759.0, 572.0, 791.0]);
        assert_eq!(entries[2].node, "1");
        // No orders at all is accepted, as long as every line has none.
        assert_eq!(
            parse("Node 0, zone DMA\n").unwrap()[0].sizes,
            Vec::<f64>::new()
        );
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn malformed_buddyinfo_is_an_error() {
        for text in [
            "Node 0, zone\n",
            "Node 0, zone DMA 1 2\nNode 0, zone DMA32 1\n",
            "Node 0, zone DMA 1 x\n",
            "Node 0, zone DMA 1 1e999\n",
            // An empty line has too few fields, as in procfs.
            "Node 0, zone DMA 1\n\nNode 0, zone DMA32 2\n",
            "Node 0, zone DMA 0x10\n",
        ] {
            assert!(parse(text).is_err(), "{text:?}");
        }
        let long = format!("Node 0, zone DMA {}\n", "1 ".repeat(40_000));
        assert_eq!(
            parse(&long).unwrap_err().to_string(),
            "bufio.Scanner: token too long"
        );
    }
}
