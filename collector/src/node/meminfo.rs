//! `meminfo`: /proc/meminfo as node_exporter 1.12 reads it through procfs's `Meminfo`: the
//! fields procfs knows, in bytes (`node_memory_<Field>_bytes`, kB × 1024; `(anon)` and
//! `(file)` become `_anon` and `_file`), and the four `HugePages_*` page counts unsuffixed.
use std::{collections::BTreeMap, sync::Arc};

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    goparse,
    metrics::MetricFamily,
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "meminfo",
    default_enabled: true,
    flags: &[],
    kernel: None,
    build,
};

/// `(line key, metric name after node_memory_)` for the fields exported in bytes.
const BYTE_FIELDS: &[(&str, &str)] = &[
    ("Active", "Active_bytes"),
    ("Active(anon)", "Active_anon_bytes"),
    ("Active(file)", "Active_file_bytes"),
    ("AnonHugePages", "AnonHugePages_bytes"),
    ("AnonPages", "AnonPages_bytes"),
    ("Bounce", "Bounce_bytes"),
    ("Buffers", "Buffers_bytes"),
    ("Cached", "Cached_bytes"),
    ("CmaFree", "CmaFree_bytes"),
    ("CmaTotal", "CmaTotal_bytes"),
    ("CommitLimit", "CommitLimit_bytes"),
    ("Committed_AS", "Committed_AS_bytes"),
    ("DirectMap1G", "DirectMap1G_bytes"),
    ("DirectMap2M", "DirectMap2M_bytes"),
    ("DirectMap4k", "DirectMap4k_bytes"),
    ("Dirty", "Dirty_bytes"),
    ("HardwareCorrupted", "HardwareCorrupted_bytes"),
    ("Hugepagesize", "Hugepagesize_bytes"),
    ("Inactive", "Inactive_bytes"),
    ("Inactive(anon)", "Inactive_anon_bytes"),
    ("Inactive(file)", "Inactive_file_bytes"),
    ("KernelStack", "KernelStack_bytes"),
    ("Mapped", "Mapped_bytes"),
    ("MemAvailable", "MemAvailable_bytes"),
    ("MemFree", "MemFree_bytes"),
    ("MemTotal", "MemTotal_bytes"),
    ("Mlocked", "Mlocked_bytes"),
    ("NFS_Unstable", "NFS_Unstable_bytes"),
    ("PageTables", "PageTables_bytes"),
    ("Percpu", "Percpu_bytes"),
    ("SReclaimable", "SReclaimable_bytes"),
    ("SUnreclaim", "SUnreclaim_bytes"),
    ("Shmem", "Shmem_bytes"),
    ("ShmemHugePages", "ShmemHugePages_bytes"),
    ("ShmemPmdMapped", "ShmemPmdMapped_bytes"),
    ("Slab", "Slab_bytes"),
    ("SwapCached", "SwapCached_bytes"),
    ("SwapFree", "SwapFree_bytes"),
    ("SwapTotal", "SwapTotal_bytes"),
    ("Unevictable", "Unevictable_bytes"),
    ("VmallocChunk", "VmallocChunk_bytes"),
    ("VmallocTotal", "VmallocTotal_bytes"),
    ("VmallocUsed", "VmallocUsed_bytes"),
    ("Writeback", "Writeback_bytes"),
    ("WritebackTmp", "WritebackTmp_bytes"),
    ("Zswap", "Zswap_bytes"),
    ("Zswapped", "Zswapped_bytes"),
];

/// Page counts, exported as read (no unit, no `_bytes`).
const COUNT_FIELDS: &[&str] = &[
    "HugePages_Free",
    "HugePages_Rsvd",
    "HugePages_Surp",
    "HugePages_Total",
];

struct MeminfoCollector {
    file: read::KeptFile,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(MeminfoCollector {
        file: read::KeptFile::new(context.proc_path("meminfo")),
    }))
}

/// procfs's `parseMemInfo`: every line must be `Key: value [kB]` with a valid number (Go's
/// base-0 `ParseUint`), whether or not the key is exported; the last of a repeated key wins.
fn parse(text: &str) -> anyhow::Result<BTreeMap<&'static str, f64>> {
    let mut metrics = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(value) = fields.get(1) else {
            anyhow::bail!("malformed line {line:?}");
        };
        let value = goparse::parse_uint(value, 0, 64)
            .with_context(|| format!("bad number {value:?} in {line:?}"))?;
        let bytes = match fields[..] {
            [_, _] => value,
            [_, _, "kB"] => value.wrapping_mul(1024),
            [_, _, unit] => anyhow::bail!("unsupported unit in optional 3rd field {unit:?}"),
            _ => anyhow::bail!("malformed line {line:?}"),
        };
        let Some(key) = fields[0].strip_suffix(':') else {
            continue;
        };
        if let Some((_, name)) = BYTE_FIELDS.iter().find(|(k, _)| *k == key) {
            metrics.insert(*name, bytes as f64);
        } else if let Some(name) = COUNT_FIELDS.iter().find(|k| **k == key) {
            metrics.insert(*name, value as f64);
        }
    }
    Ok(metrics)
}

impl Collector for MeminfoCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let text = self.file.to_string()?;
        let metrics = parse(&text).with_context(|| {
            format!("failed to get memory info: {}", self.file.path().display())
        })?;
        for (name, value) in metrics {
            out.push(
                MetricFamily::gauge(
                    format!("node_memory_{name}"),
                    format!("Memory information field {name}."),
                )
                .with_value(value),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn known_fields_in_bytes_counts_unsuffixed_unknown_skipped() {
        let metrics = parse(
            "MemTotal:       16303412 kB\nActive(anon):     12 kB\nHugePages_Total:       4\n\
             Hugepagesize:       2048 kB\nKReclaimable:     1 kB\nZswapped:  0 kB\nMemTotal: 1 kB\n",
        )
        .unwrap();
        assert_eq!(metrics["MemTotal_bytes"], 1024.0, "last one wins");
        assert_eq!(metrics["Active_anon_bytes"], 12288.0);
        assert_eq!(metrics["HugePages_Total"], 4.0);
        assert_eq!(metrics["Hugepagesize_bytes"], 2097152.0);
        assert_eq!(metrics["Zswapped_bytes"], 0.0);
        assert!(!metrics.contains_key("KReclaimable_bytes"));
        assert_eq!(metrics.len(), 5);
    }

    #[test]
    fn malformed_lines_are_errors() {
        for text in [
            "MemTotal:\n",
            "\n",
            "MemTotal: x kB\n",
            "MemTotal: -1 kB\n",
            "MemTotal: 1 MB\n",
            "MemTotal: 1 kB extra\n",
            "Unknown: 1.5\n",
        ] {
            assert!(parse(text).is_err(), "{text:?}");
        }
    }
}
