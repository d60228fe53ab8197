//! `slabinfo`: kernel slab caches from /proc/slabinfo (version 2.1), as procfs' `SlabInfo`
//! reads it: `node_slabinfo_*{slab}` for the caches the include/exclude flags let through.
//!
//! Only the first MiB of the file is read (procfs' `ReadFileNoStat` limit), and reading stops
//! silently at a line of 64 KiB or more (procfs does not check the scanner's error). Every
//! other line must have the 16 fields of version 2.1 with numbers where numbers go, or the
//! whole scrape fails with no sample. The file is readable by root only.
use std::{collections::HashSet, path::PathBuf, sync::Arc};

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    flags::{DeviceFilter, FlagSpec},
    goparse,
    metrics::MetricFamily,
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "slabinfo",
    default_enabled: false,
    flags: &[
        FlagSpec::value(
            "collector.slabinfo.slabs-include",
            Some(".*"),
            "Regexp of slabs to include in slabinfo collector.",
        ),
        FlagSpec::value(
            "collector.slabinfo.slabs-exclude",
            Some(""),
            "Regexp of slabs to exclude in slabinfo collector.",
        ),
    ],
    kernel: None,
    build,
};

/// One cache, as procfs' `Slab`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Slab {
    pub name: String,
    pub obj_active: i64,
    pub obj_num: i64,
    pub obj_size: i64,
    pub obj_per_slab: i64,
    pub pages_per_slab: i64,
    pub limit: i64,
    pub batch: i64,
    pub shared_factor: i64,
    pub slab_active: i64,
    pub slab_num: i64,
    pub shared_avail: i64,
}

/// procfs' `parseSlabInfo21`: the version and header lines (any line containing
/// `slabinfo -` or `# name`) are skipped; every other line is one cache.
pub fn parse(text: &str) -> anyhow::Result<Vec<Slab>> {
    let mut slabs = Vec::new();
    // A line too long ends the scan without an error.
    for line in goparse::text_lines(text).map_while(Result::ok) {
        if line.contains("slabinfo -") || line.contains("# name") {
            continue;
        }
        slabs.push(parse_entry(line)?);
    }
    Ok(slabs)
}

/// procfs' `parseV21SlabEntry`: runs of Go's `\s` (space, `\t`, `\n`, `\f`, `\r`; not `\v`)
/// become one space, and the line split at spaces must give exactly 16 fields: `name active
/// num size per_slab pages : tunables limit batch shared : slabdata active num avail`.
fn parse_entry(line: &str) -> anyhow::Result<Slab> {
    let mut collapsed = String::with_capacity(line.len());
    let mut in_run = false;
    for c in line.chars() {
        if matches!(c, ' ' | '\t' | '\n' | '\x0C' | '\r') {
            if !in_run {
                collapsed.push(' ');
            }
            in_run = true;
        } else {
            collapsed.push(c);
            in_run = false;
        }
    }
    let fields: Vec<&str> = collapsed.split(' ').collect();
    let [
        name,
        active,
        num,
        size,
        per_slab,
        pages,
        _,
        _,
        limit,
        batch,
        shared,
        _,
        _,
        slab_active,
        slab_num,
        shared_avail,
    ] = fields[..]
    else {
        anyhow::bail!("unable to parse: {line:?}");
    };
    let number = |value: &str| -> anyhow::Result<i64> {
        value
            .parse()
            .with_context(|| format!("parsing {value:?} in slabinfo line {line:?}"))
    };
    Ok(Slab {
        name: name.to_owned(),
        obj_active: number(active)?,
        obj_num: number(num)?,
        obj_size: number(size)?,
        obj_per_slab: number(per_slab)?,
        pages_per_slab: number(pages)?,
        limit: number(limit)?,
        batch: number(batch)?,
        shared_factor: number(shared)?,
        slab_active: number(slab_active)?,
        slab_num: number(slab_num)?,
        shared_avail: number(shared_avail)?,
    })
}

struct SlabinfoCollector {
    path: PathBuf,
    filter: DeviceFilter,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    let flags = &context.flags;
    Ok(Arc::new(SlabinfoCollector {
        path: context.proc_path("slabinfo"),
        // node_exporter's `newDeviceFilter(exclude, include)`: an empty pattern is no filter.
        filter: DeviceFilter::new(
            flags.regex("collector.slabinfo.slabs-exclude")?,
            flags.regex("collector.slabinfo.slabs-include")?,
        ),
    }))
}

impl SlabinfoCollector {
    fn read(&self) -> anyhow::Result<String> {
        let bytes = read::capped(&self.path, read::NO_STAT_LIMIT)
            .with_context(|| format!("reading {}", self.path.display()))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

impl Collector for SlabinfoCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let slabs = self
            .read()
            .and_then(|text| parse(&text))
            .with_context(|| format!("couldn't get slabinfo: {}", self.path.display()))?;
        let mut families = [
            MetricFamily::gauge(
                "node_slabinfo_active_objects",
                "The number of objects that are currently active (i.e., in use).",
            ),
            MetricFamily::gauge(
                "node_slabinfo_objects",
                "The total number of allocated objects (i.e., objects that are both in use and not in use).",
            ),
            MetricFamily::gauge(
                "node_slabinfo_object_size_bytes",
                "The size of objects in this slab, in bytes.",
            ),
            MetricFamily::gauge(
                "node_slabinfo_objects_per_slab",
                "The number of objects stored in each slab.",
            ),
            MetricFamily::gauge(
                "node_slabinfo_pages_per_slab",
                "The number of pages allocated for each slab.",
            ),
        ];
        // A cache name listed twice: node_exporter's registry keeps the first sample.
        let mut seen = HashSet::new();
        for slab in &slabs {
            if self.filter.ignored(&slab.name) || !seen.insert(slab.name.as_str()) {
                continue;
            }
            let values = [
                slab.obj_active,
                slab.obj_num,
                slab.obj_size,
                slab.obj_per_slab,
                slab.pages_per_slab,
            ];
            for (family, value) in families.iter_mut().zip(values) {
                family.push([("slab", slab.name.as_str())], value as f64);
            }
        }
        out.extend(families.into_iter().filter(|f| !f.metrics.is_empty()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "slabinfo - version: 2.1
# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>
xfs_inode          41216  41504   1024   32    8 : tunables    0    0    0 : slabdata   1297   1297      0
kmalloc-8k           132    148   8192    4    8 : tunables    0    0    0 : slabdata     37     37      0
";

    #[test]
    fn parses_caches() {
        let slabs = parse(TEXT).unwrap();
        assert_eq!(slabs.len(), 2);
        assert_eq!(
            slabs[0],
            Slab {
                name: "xfs_inode".to_owned(),
                obj_active: 41216,
                obj_num: 41504,
                obj_size: 1024,
                obj_per_slab: 32,
                pages_per_slab: 8,
                limit: 0,
                batch: 0,
                shared_factor: 0,
                slab_active: 1297,
                slab_num: 1297,
                shared_avail: 0,
            }
        );
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn fields_split_as_procfs_splits_them() {
        let line = "a 1 2 3 4 5 : tunables 6 7 8 : slabdata 9 10 11";
        assert_eq!(parse_entry(line).unwrap().shared_avail, 11);
        // Tabs and runs of blanks are one separator.
        assert_eq!(
            parse_entry(&line.replace(' ', " \t\r ")).unwrap().slab_num,
            10
        );
        // A leading or trailing blank is an empty 17th field; \v is not a separator.
        assert!(parse_entry(&format!(" {line}")).is_err());
        assert!(parse_entry(&format!("{line}  ")).is_err());
        assert!(parse_entry(&line.replace("a 1", "a\x0B1")).is_err());
        // Fifteen fields, then an empty sixteenth: the empty number fails.
        assert!(parse_entry("a 1 2 3 4 5 : tunables 6 7 8 : slabdata 9 10 ").is_err());
        assert!(parse_entry("").is_err());
        assert!(parse_entry("   ").is_err());
    }

    #[test]
    fn malformed_caches_are_errors() {
        for text in [
            "a 1 2 3 4 5 : tunables 6 7 8 : slabdata 9 10\n",
            "a 1 2 3 4 x : tunables 6 7 8 : slabdata 9 10 11\n",
            "a 1 2 3 4 5 : tunables 6 7 8 : slabdata 9 10 99999999999999999999\n",
            "a 1 2 3 4 5 : tunables 6 7 8 : slabdata 9 10 0x1\n",
            "a 1 2 3 4 5 : tunables 6 7 8 : slabdata 9 10 11\n\n",
        ] {
            assert!(parse(text).is_err(), "{text:?}");
        }
        // The separators' words are not checked, as in procfs.
        assert!(parse("a 1 2 3 4 5 x y 6 7 8 z w 9 10 11\n").is_ok());
        // A line too long ends the file.
        let long = format!("{TEXT}{}\nbad line\n", "x".repeat(70_000));
        assert_eq!(parse(&long).unwrap().len(), 2);
    }

    #[test]
    fn filters_and_duplicates() {
        let dir = std::env::temp_dir().join(format!("slabinfo-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("slabinfo");
        std::fs::write(
            &path,
            format!("{TEXT}xfs_inode 1 2 3 4 5 : tunables 0 0 0 : slabdata 1 1 0\n"),
        )
        .unwrap();
        let collector = SlabinfoCollector {
            path: path.clone(),
            filter: DeviceFilter::new(None, Some(regex::Regex::new("^xfs").unwrap())),
        };
        let mut out = Vec::new();
        collector.update(&mut out).unwrap();
        assert_eq!(out.len(), 5);
        assert!(out.iter().all(|f| f.metrics.len() == 1));
        assert_eq!(
            out[0].metrics[0].value,
            crate::metrics::Value::Scalar(41216.0)
        );
        std::fs::write(&path, "bad\n").unwrap();
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(format!("{error:#}").contains("slabinfo"), "{error:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
