//! `zoneinfo`: page counts per NUMA node and memory zone from /proc/zoneinfo, as procfs'
//! `Zoneinfo` reads them: `node_zoneinfo_*{node,zone}` for the fields procfs knows, and
//! `node_zoneinfo_protection_<i>` for the zone's lowmem protection array.
//!
//! The file is cut into blocks at each `\nNode`; a block's `<n>, zone <name>` line names it.
//! The "per-node stats" a kernel prints under the first zone of a node are counted as that
//! zone's, as procfs does. A value that is not a number is 0, not an error (procfs' value
//! parser hands back the zero it failed with), and the parse itself never fails.
use std::{
    collections::HashSet,
    path::PathBuf,
    sync::{Arc, LazyLock},
};

use anyhow::Context as _;
use regex::Regex;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    goparse,
    metrics::{MetricFamily, MetricType},
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "zoneinfo",
    default_enabled: false,
    flags: &[],
    kernel: None,
    build,
};

/// `(key in the file, metric name after node_zoneinfo_, help, type)`, in procfs' field order.
const FIELDS: &[(&str, &str, &str, MetricType)] = &[
    (
        "nr_free_pages",
        "nr_free_pages",
        "Total number of free pages in the zone",
        GAUGE,
    ),
    ("min", "min_pages", "Zone watermark pages_min", GAUGE),
    ("low", "low_pages", "Zone watermark pages_low", GAUGE),
    ("high", "high_pages", "Zone watermark pages_high", GAUGE),
    (
        "scanned",
        "scanned_pages",
        "Pages scanned since last reclaim",
        GAUGE,
    ),
    (
        "spanned",
        "spanned_pages",
        "Total pages spanned by the zone, including holes",
        GAUGE,
    ),
    (
        "present",
        "present_pages",
        "Physical pages existing within the zone",
        GAUGE,
    ),
    (
        "managed",
        "managed_pages",
        "Present pages managed by the buddy system",
        GAUGE,
    ),
    (
        "nr_active_anon",
        "nr_active_anon_pages",
        "Number of anonymous pages recently more used",
        GAUGE,
    ),
    (
        "nr_inactive_anon",
        "nr_inactive_anon_pages",
        "Number of anonymous pages recently less used",
        GAUGE,
    ),
    (
        "nr_isolated_anon",
        "nr_isolated_anon_pages",
        "Temporary isolated pages from anon lru",
        GAUGE,
    ),
    (
        "nr_anon_pages",
        "nr_anon_pages",
        "Number of anonymous pages currently used by the system",
        GAUGE,
    ),
    (
        "nr_anon_transparent_hugepages",
        "nr_anon_transparent_hugepages",
        "Number of anonymous transparent huge pages currently used by the system",
        GAUGE,
    ),
    (
        "nr_active_file",
        "nr_active_file_pages",
        "Number of active pages with file-backing",
        GAUGE,
    ),
    (
        "nr_inactive_file",
        "nr_inactive_file_pages",
        "Number of inactive pages with file-backing",
        GAUGE,
    ),
    (
        "nr_isolated_file",
        "nr_isolated_file_pages",
        "Temporary isolated pages from file lru",
        GAUGE,
    ),
    (
        "nr_file_pages",
        "nr_file_pages",
        "Number of file pages",
        GAUGE,
    ),
    (
        "nr_slab_reclaimable",
        "nr_slab_reclaimable_pages",
        "Number of reclaimable slab pages",
        GAUGE,
    ),
    (
        "nr_slab_unreclaimable",
        "nr_slab_unreclaimable_pages",
        "Number of unreclaimable slab pages",
        GAUGE,
    ),
    (
        "nr_mlock_stack",
        "nr_mlock_stack_pages",
        "mlock()ed pages found and moved off LRU",
        GAUGE,
    ),
    (
        "nr_kernel_stack",
        "nr_kernel_stacks",
        "Number of kernel stacks",
        GAUGE,
    ),
    (
        "nr_mapped",
        "nr_mapped_pages",
        "Number of mapped pages",
        GAUGE,
    ),
    ("nr_dirty", "nr_dirty_pages", "Number of dirty pages", GAUGE),
    (
        "nr_writeback",
        "nr_writeback_pages",
        "Number of writeback pages",
        GAUGE,
    ),
    (
        "nr_unevictable",
        "nr_unevictable_pages",
        "Number of unevictable pages",
        GAUGE,
    ),
    (
        "nr_shmem",
        "nr_shmem_pages",
        "Number of shmem pages (included tmpfs/GEM pages)",
        GAUGE,
    ),
    (
        "nr_dirtied",
        "nr_dirtied_total",
        "Page dirtyings since bootup",
        COUNTER,
    ),
    (
        "nr_written",
        "nr_written_total",
        "Page writings since bootup",
        COUNTER,
    ),
    (
        "numa_hit",
        "numa_hit_total",
        "Allocated in intended node",
        COUNTER,
    ),
    (
        "numa_miss",
        "numa_miss_total",
        "Allocated in non intended node",
        COUNTER,
    ),
    (
        "numa_foreign",
        "numa_foreign_total",
        "Was intended here, hit elsewhere",
        COUNTER,
    ),
    (
        "numa_interleave",
        "numa_interleave_total",
        "Interleaver preferred this zone",
        COUNTER,
    ),
    (
        "numa_local",
        "numa_local_total",
        "Allocation from local node",
        COUNTER,
    ),
    (
        "numa_other",
        "numa_other_total",
        "Allocation from other node",
        COUNTER,
    ),
];

const GAUGE: MetricType = MetricType::Gauge;
const COUNTER: MetricType = MetricType::Counter;

/// procfs' `nodeZoneRE`, `(\d+), zone\s+(\w+)`, with Go's ASCII-only classes spelled out
/// (Go's `\s` has no `\v`).
static NODE_ZONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"([0-9]+), zone[\t\n\x0C\r ]+([0-9A-Za-z_]+)").expect("valid regex")
});

/// One block of /proc/zoneinfo.
#[derive(Debug, Default, PartialEq)]
pub struct Zone {
    /// Empty when the block has no `<n>, zone <name>` line.
    pub node: String,
    pub zone: String,
    /// The value of each of [`FIELDS`] that the block has, in that order.
    pub values: Vec<Option<i64>>,
    pub protection: Vec<i64>,
}

impl Zone {
    /// `(metric name after node_zoneinfo_, value)` of the fields this block has.
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, i64)> + '_ {
        FIELDS
            .iter()
            .zip(&self.values)
            .filter_map(|((_, name, _, _), value)| Some((*name, (*value)?)))
    }
}

/// procfs' `parseZoneinfo`: one [`Zone`] per block, even a block naming no zone.
pub fn parse(text: &str) -> Vec<Zone> {
    let mut zones = Vec::new();
    for block in text.split("\nNode") {
        let mut zone = Zone {
            values: vec![None; FIELDS.len()],
            ..Zone::default()
        };
        for line in block.split('\n') {
            if let Some(captures) = NODE_ZONE.captures(line) {
                zone.node = captures[1].to_owned();
                zone.zone = captures[2].to_owned();
                continue;
            }
            let trimmed = line.trim();
            if trimmed.starts_with("per-node stats") {
                continue;
            }
            let mut parts = trimmed.split_whitespace();
            let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
                continue;
            };
            if key == "protection:" {
                if let Some(protection) = parse_protection(line) {
                    zone.protection = protection;
                }
            } else if let Some(index) = FIELDS.iter().position(|(k, ..)| *k == key) {
                zone.values[index] = Some(goparse::parse_int(value, 0, 64).unwrap_or(0));
            }
        }
        zones.push(zone);
    }
    zones
}

/// `protection: (0, 2039, 31932)`: the text between the first and a second `:`, first `(` and
/// first `)` removed, split at `", "`, each a decimal number; `None` (keeping what the block had)
/// if any is not.
fn parse_protection(line: &str) -> Option<Vec<i64>> {
    let values = line.split(':').nth(1)?;
    let values = values.replacen('(', "", 1).replacen(')', "", 1);
    values
        .trim()
        .split(", ")
        .map(|value| value.parse().ok())
        .collect()
}

struct ZoneinfoCollector {
    path: PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(ZoneinfoCollector {
        path: context.proc_path("zoneinfo"),
    }))
}

impl Collector for ZoneinfoCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let path = &self.path;
        let bytes = std::fs::read(path)
            .with_context(|| format!("couldn't get zoneinfo: reading {}", path.display()))?;
        let zones = parse(&String::from_utf8_lossy(&bytes));

        let mut families: Vec<MetricFamily> = FIELDS
            .iter()
            .map(|(_, name, help, metric_type)| {
                MetricFamily::new(format!("node_zoneinfo_{name}"), *help, *metric_type)
            })
            .collect();
        // A node and zone seen twice: node_exporter's registry keeps each series' first sample.
        let mut seen = HashSet::new();
        for zone in &zones {
            let labels = [("node", zone.node.as_str()), ("zone", zone.zone.as_str())];
            for (index, value) in zone.values.iter().enumerate() {
                if let Some(value) = *value
                    && seen.insert((index, zone.node.as_str(), zone.zone.as_str()))
                {
                    families[index].push(labels, value as f64);
                }
            }
            for (i, &value) in zone.protection.iter().enumerate() {
                let index = FIELDS.len() + i;
                if index == families.len() {
                    families.push(MetricFamily::gauge(
                        format!("node_zoneinfo_protection_{i}"),
                        format!("Protection array {i}. field"),
                    ));
                }
                if seen.insert((index, zone.node.as_str(), zone.zone.as_str())) {
                    families[index].push(labels, value as f64);
                }
            }
        }
        out.extend(families.into_iter().filter(|f| !f.metrics.is_empty()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "Node 0, zone      DMA
  per-node stats
      nr_inactive_anon 95612
      nr_dirtied   1189097
  pages free     2949
        min      8
        high     14
        protection: (0, 2039, 31932)
      nr_free_pages 2949
      numa_hit     1
  pagesets
    cpu: 0
              count: 0
              high:  0
Node 0, zone   Normal
  pages free     4539739
        min      0x10
        low      12a
        protection: (0, 0, 0)
Node 1, zone  Movable
  pages free     0
        protection: ()
";

    #[test]
    fn parses_zones() {
        let zones = parse(TEXT);
        assert_eq!(zones.len(), 3);
        let dma = &zones[0];
        assert_eq!((dma.node.as_str(), dma.zone.as_str()), ("0", "DMA"));
        assert_eq!(
            dma.fields().collect::<Vec<_>>(),
            [
                ("nr_free_pages", 2949),
                ("min_pages", 8),
                ("high_pages", 14),
                ("nr_inactive_anon_pages", 95612),
                ("nr_dirtied_total", 1189097),
                ("numa_hit_total", 1),
            ]
        );
        assert_eq!(dma.protection, [0, 2039, 31932]);
        // Base-0 numbers as procfs reads them; a bad number is a zero.
        let normal = &zones[1];
        assert_eq!(
            normal.fields().collect::<Vec<_>>(),
            [("min_pages", 16), ("low_pages", 0)]
        );
        assert_eq!(normal.protection, [0, 0, 0]);
        // An empty protection array is not a number: nothing.
        assert_eq!(zones[2].protection, Vec::<i64>::new());
        assert_eq!(zones[2].node, "1");
    }

    #[test]
    fn odd_input_is_not_an_error() {
        // One empty block, no values.
        let zones = parse("");
        assert_eq!(zones.len(), 1);
        assert_eq!(zones[0].fields().count(), 0);
        // Values before any zone line belong to a block without node or zone.
        let zones = parse(
            "garbage\nnr_free_pages 5\nNode 0, zone DMA\nnr_free_pages 99999999999999999999\n",
        );
        assert_eq!(zones.len(), 2);
        assert_eq!(zones[0].node, "");
        assert_eq!(
            zones[0].fields().collect::<Vec<_>>(),
            [("nr_free_pages", 5)]
        );
        assert_eq!(
            zones[1].fields().collect::<Vec<_>>(),
            [("nr_free_pages", 0)]
        );
        // A protection line with a bad value keeps the previous array.
        let zones = parse("Node 0, zone DMA\nprotection: (1, 2)\nprotection: (1, x)\n");
        assert_eq!(zones[0].protection, [1, 2]);
        assert_eq!(parse_protection("protection: (1, 2): 3"), Some(vec![1, 2]));
        assert_eq!(parse_protection("protection: (1,2)"), None);
        assert_eq!(parse_protection("protection: (-1, +2)"), Some(vec![-1, 2]));
    }

    #[test]
    fn duplicate_zones_keep_the_first_sample() {
        let dir = std::env::temp_dir().join(format!("zoneinfo-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let collector = ZoneinfoCollector {
            path: dir.join("zoneinfo"),
        };
        assert!(collector.update(&mut Vec::new()).is_err());
        std::fs::write(
            dir.join("zoneinfo"),
            b"Node 0, zone DMA\n  min 1\n  protection: (0, 7)\nNode 0, zone DMA\n  min 2\n  low 3\n  protection: (5, 6, 7)\n\xff\n",
        )
        .unwrap();
        let mut out = Vec::new();
        collector.update(&mut out).unwrap();
        let samples = |name: &str| {
            let family = out.iter().find(|f| f.name == name).unwrap();
            family.metrics.len()
        };
        assert_eq!(samples("node_zoneinfo_min_pages"), 1);
        assert_eq!(samples("node_zoneinfo_low_pages"), 1);
        assert_eq!(samples("node_zoneinfo_protection_0"), 1);
        assert_eq!(samples("node_zoneinfo_protection_2"), 1);
        let min = out
            .iter()
            .find(|f| f.name == "node_zoneinfo_min_pages")
            .unwrap();
        assert_eq!(min.metrics[0].value, crate::metrics::Value::Scalar(1.0));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
