//! `xfs`: per-filesystem XFS runtime statistics from /sys/fs/xfs/<device>/stats/stats, as
//! node_exporter's xfs collector reads them through procfs' `xfs.SysStats`.
//!
//! Like upstream, only the per-device sysfs files are read: the host-wide aggregate (the
//! /proc/fs/xfs/stat file, also at /sys/fs/xfs/stats/stats, which the glob does not match) is
//! not exported. A host without XFS (no /sys/fs/xfs) reports nothing and succeeds, as
//! upstream's glob then finds no file. Every line of a file is checked as procfs checks it (all
//! values numbers, known lines with their count of values), so a malformed file fails the
//! whole scrape of the collector, though only 39 counters of nine lines are exported.
use std::{
    fs::File,
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
    name: "xfs",
    default_enabled: true,
    flags: &[],
    kernel: None,
    build,
};

struct XfsCollector {
    /// /sys/fs/xfs, with one directory per mounted XFS filesystem (named after its device).
    sys_fs_xfs: PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(XfsCollector {
        sys_fs_xfs: context.sys_path("fs/xfs"),
    }))
}

/// The counters of one stats file that node_exporter exports, by the file's line names.
#[derive(Debug, Default, PartialEq)]
struct Stats {
    /// `extent_alloc`: extents allocated, blocks allocated, extents freed, blocks freed.
    extent_alloc: [u32; 4],
    /// `abt`: allocation B-tree lookups, compares, records inserted, records deleted.
    abt: [u32; 4],
    /// `blk_map`: reads, writes, unmaps, extent list insertions, deletions, lookups, compares.
    blk_map: [u32; 7],
    /// `bmbt`: block map B-tree lookups, compares, records inserted, records deleted.
    bmbt: [u32; 4],
    /// `dir`: lookups, creates, removes, getdents.
    dir: [u32; 4],
    /// `ig`: attempts, found, recycled, missed, duplicates, reclaims, attribute changes.
    ig: [u32; 7],
    /// `rw`: write calls, then read calls (the kernel's order).
    rw: [u32; 2],
    /// `vnodes`: active, allocate, get, hold, release, reclaim, remove (an 8th, free, is not
    /// exported).
    vnodes: [u32; 7],
}

/// An exported counter: family suffix, HELP, and where the value is in [`Stats`].
type Counter = (&'static str, &'static str, fn(&Stats) -> u32);

const COUNTERS: &[Counter] = &[
    (
        "extent_allocation_extents_allocated_total",
        "Number of extents allocated for a filesystem.",
        |s| s.extent_alloc[0],
    ),
    (
        "extent_allocation_blocks_allocated_total",
        "Number of blocks allocated for a filesystem.",
        |s| s.extent_alloc[1],
    ),
    (
        "extent_allocation_extents_freed_total",
        "Number of extents freed for a filesystem.",
        |s| s.extent_alloc[2],
    ),
    (
        "extent_allocation_blocks_freed_total",
        "Number of blocks freed for a filesystem.",
        |s| s.extent_alloc[3],
    ),
    (
        "allocation_btree_lookups_total",
        "Number of allocation B-tree lookups for a filesystem.",
        |s| s.abt[0],
    ),
    (
        "allocation_btree_compares_total",
        "Number of allocation B-tree compares for a filesystem.",
        |s| s.abt[1],
    ),
    (
        "allocation_btree_records_inserted_total",
        "Number of allocation B-tree records inserted for a filesystem.",
        |s| s.abt[2],
    ),
    (
        "allocation_btree_records_deleted_total",
        "Number of allocation B-tree records deleted for a filesystem.",
        |s| s.abt[3],
    ),
    (
        "block_mapping_reads_total",
        "Number of block map for read operations for a filesystem.",
        |s| s.blk_map[0],
    ),
    (
        "block_mapping_writes_total",
        "Number of block map for write operations for a filesystem.",
        |s| s.blk_map[1],
    ),
    (
        "block_mapping_unmaps_total",
        "Number of block unmaps (deletes) for a filesystem.",
        |s| s.blk_map[2],
    ),
    (
        "block_mapping_extent_list_insertions_total",
        "Number of extent list insertions for a filesystem.",
        |s| s.blk_map[3],
    ),
    (
        "block_mapping_extent_list_deletions_total",
        "Number of extent list deletions for a filesystem.",
        |s| s.blk_map[4],
    ),
    (
        "block_mapping_extent_list_lookups_total",
        "Number of extent list lookups for a filesystem.",
        |s| s.blk_map[5],
    ),
    (
        "block_mapping_extent_list_compares_total",
        "Number of extent list compares for a filesystem.",
        |s| s.blk_map[6],
    ),
    (
        "block_map_btree_lookups_total",
        "Number of block map B-tree lookups for a filesystem.",
        |s| s.bmbt[0],
    ),
    (
        "block_map_btree_compares_total",
        "Number of block map B-tree compares for a filesystem.",
        |s| s.bmbt[1],
    ),
    (
        "block_map_btree_records_inserted_total",
        "Number of block map B-tree records inserted for a filesystem.",
        |s| s.bmbt[2],
    ),
    (
        "block_map_btree_records_deleted_total",
        "Number of block map B-tree records deleted for a filesystem.",
        |s| s.bmbt[3],
    ),
    (
        "directory_operation_lookup_total",
        "Number of file name directory lookups which miss the operating systems directory name lookup cache.",
        |s| s.dir[0],
    ),
    (
        "directory_operation_create_total",
        "Number of times a new directory entry was created for a filesystem.",
        |s| s.dir[1],
    ),
    (
        "directory_operation_remove_total",
        "Number of times an existing directory entry was created for a filesystem.",
        |s| s.dir[2],
    ),
    (
        "directory_operation_getdents_total",
        "Number of times the directory getdents operation was performed for a filesystem.",
        |s| s.dir[3],
    ),
    (
        "inode_operation_attempts_total",
        "Number of times the OS looked for an XFS inode in the inode cache.",
        |s| s.ig[0],
    ),
    (
        "inode_operation_found_total",
        "Number of times the OS looked for and found an XFS inode in the inode cache.",
        |s| s.ig[1],
    ),
    (
        "inode_operation_recycled_total",
        "Number of times the OS found an XFS inode in the cache, but could not use it as it was being recycled.",
        |s| s.ig[2],
    ),
    (
        "inode_operation_missed_total",
        "Number of times the OS looked for an XFS inode in the cache, but did not find it.",
        |s| s.ig[3],
    ),
    (
        "inode_operation_duplicates_total",
        "Number of times the OS tried to add a missing XFS inode to the inode cache, but found it had already been added by another process.",
        |s| s.ig[4],
    ),
    (
        "inode_operation_reclaims_total",
        "Number of times the OS reclaimed an XFS inode from the inode cache to free memory for another purpose.",
        |s| s.ig[5],
    ),
    (
        "inode_operation_attribute_changes_total",
        "Number of times the OS explicitly changed the attributes of an XFS inode.",
        |s| s.ig[6],
    ),
    (
        "read_calls_total",
        "Number of read(2) system calls made to files in a filesystem.",
        |s| s.rw[1],
    ),
    (
        "write_calls_total",
        "Number of write(2) system calls made to files in a filesystem.",
        |s| s.rw[0],
    ),
    (
        "vnode_active_total",
        "Number of vnodes not on free lists for a filesystem.",
        |s| s.vnodes[0],
    ),
    (
        "vnode_allocate_total",
        "Number of times vn_alloc called for a filesystem.",
        |s| s.vnodes[1],
    ),
    (
        "vnode_get_total",
        "Number of times vn_get called for a filesystem.",
        |s| s.vnodes[2],
    ),
    (
        "vnode_hold_total",
        "Number of times vn_hold called for a filesystem.",
        |s| s.vnodes[3],
    ),
    (
        "vnode_release_total",
        "Number of times vn_rele called for a filesystem.",
        |s| s.vnodes[4],
    ),
    (
        "vnode_reclaim_total",
        "Number of times vn_reclaim called for a filesystem.",
        |s| s.vnodes[5],
    ),
    (
        "vnode_remove_total",
        "Number of times vn_remove called for a filesystem.",
        |s| s.vnodes[6],
    ),
];

/// How many values procfs requires on a line it knows, as (at least, at most); `None` for a
/// line it ignores, whose values must still be numbers. `gc xpc`, `xpc` and `defer_relog` hold
/// 64-bit values, the others 32-bit ones.
fn value_count(label: &str) -> Option<(usize, usize)> {
    let exactly = |n| Some((n, n));
    match label {
        "extent_alloc" | "abt" | "bmbt" | "dir" | "attr" => exactly(4),
        "blk_map" | "ig" => exactly(7),
        "trans" | "icluster" | "xpc" => exactly(3),
        "log" => exactly(5),
        "rw" | "xstrat" => exactly(2),
        // `free` is missing on old kernels.
        "vnodes" => Some((7, 8)),
        "buf" => exactly(9),
        "push_ail" => exactly(10),
        // `unused` appeared in 4.20.
        "qm" => Some((8, 9)),
        "debug" | "defer_relog" | "gc xpc" => exactly(1),
        "abtb2" | "abtc2" | "bmbt2" | "ibt2" | "fibt2" | "rmapbt" | "refcntbt" | "rmapbt_mem"
        | "rcbagbt" | "rtrmapbt" | "rtrmapbt_mem" | "rtrefcntbt" => exactly(15),
        "zoned" => Some((3, usize::MAX)),
        "metafile" => Some((1, usize::MAX)),
        _ => None,
    }
}

/// Parses a stats file as procfs' `xfs.ParseStats`, line by line (a line of 64 KiB or more is
/// an error, as for Go's scanner, which bounds the memory used).
fn parse_stats(reader: impl std::io::Read) -> anyhow::Result<Stats> {
    let mut stats = Stats::default();
    let mut lines = goparse::Scanner::new(reader);
    let mut number = 0;
    while let Some(line) = lines.next_line() {
        number += 1;
        let text = String::from_utf8_lossy(line);
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() < 2 {
            continue;
        }
        let (label, values) = if fields[0] == "gc" && fields.len() >= 3 && fields[1] == "xpc" {
            ("gc xpc", &fields[2..])
        } else {
            (fields[0], &fields[1..])
        };
        let bits = if matches!(label, "gc xpc" | "xpc" | "defer_relog") {
            64
        } else {
            32
        };
        let values: Vec<u64> = values
            .iter()
            .map(|value| {
                goparse::parse_uint(value, 10, bits).with_context(|| {
                    format!("line {number} ({label}): bad {bits}-bit number {value:?}")
                })
            })
            .collect::<anyhow::Result<_>>()?;
        if value_count(label).is_some_and(|(min, max)| !(min..=max).contains(&values.len())) {
            anyhow::bail!(
                "line {number}: incorrect number of values for XFS {label} stats: {}",
                values.len()
            );
        }
        // 32-bit lines only: the values were range-checked above.
        let take = |target: &mut [u32]| {
            for (slot, value) in target.iter_mut().zip(&values) {
                *slot = *value as u32;
            }
        };
        match label {
            "extent_alloc" => take(&mut stats.extent_alloc),
            "abt" => take(&mut stats.abt),
            "blk_map" => take(&mut stats.blk_map),
            "bmbt" => take(&mut stats.bmbt),
            "dir" => take(&mut stats.dir),
            "ig" => take(&mut stats.ig),
            "rw" => take(&mut stats.rw),
            // A 7-value line (older kernels, no `free`) is fine.
            "vnodes" => take(&mut stats.vnodes),
            _ => {}
        }
    }
    match lines.err() {
        Some(goparse::ScanError::Read(error)) => Err(error.into()),
        Some(goparse::ScanError::TooLong(_)) => {
            anyhow::bail!("line {}: token too long", number + 1)
        }
        None => Ok(stats),
    }
}

/// The `<dir>/*/stats/stats` files, sorted by device as Go's `filepath.Glob` returns them;
/// none when /sys/fs/xfs cannot be read (the glob then matches nothing).
fn stats_files(dir: &Path) -> Vec<(String, PathBuf)> {
    read::glob_names(dir, |_| true)
        .unwrap_or_default()
        .into_iter()
        .map(|name| {
            let path = dir.join(&name).join("stats/stats");
            (name.to_string_lossy().into_owned(), path)
        })
        .filter(|(_, path)| std::fs::symlink_metadata(path).is_ok())
        .collect()
}

impl Collector for XfsCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        // All files are parsed before any family is pushed: upstream reports nothing when one
        // of them fails.
        let mut all = Vec::new();
        for (device, path) in stats_files(&self.sys_fs_xfs) {
            let stats = File::open(&path)
                .map_err(anyhow::Error::new)
                .and_then(parse_stats)
                .with_context(|| {
                    format!("failed to retrieve XFS stats: reading {}", path.display())
                })?;
            all.push((device, stats));
        }
        if all.is_empty() {
            return Ok(());
        }
        for (suffix, help, value) in COUNTERS {
            let mut family = MetricFamily::counter(format!("node_xfs_{suffix}"), *help);
            for (device, stats) in &all {
                family.push([("device", device.as_str())], f64::from(value(stats)));
            }
            out.push(family);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kernel 6.1 file (Amazon Linux 2023): every line the kernel prints.
    const KERNEL_6_1: &str = "extent_alloc 130 4242 21 388
abt 0 0 0 0
blk_map 52880 8160 40 149 43 61231 0
bmbt 0 0 0 0
dir 1620 117 45 9046
trans 2 2301 0
ig 0 1212 0 408 0 217 76
log 1108 13420 0 1166 1148
push_ail 3410 0 27813 2016 0 121 0 34 0 83
xstrat 129 0
rw 11937 36124
attr 3002 4 0 1
icluster 58 34 246
vnodes 995 0 0 0 406 406 406 0
buf 7466 1045 6424 2 0 1045 0 1040 910
abtb2 320 1610 46 41 0 0 0 0 0 0 0 0 0 0 12
abtc2 622 3331 33 28 0 0 0 0 0 0 0 0 0 0 93
bmbt2 5 22 2 0 0 0 0 0 0 0 0 0 0 0 0
ibt2 1041 10410 21 19 0 0 0 0 0 0 0 0 0 0 0
fibt2 1077 10807 20 21 0 0 0 0 0 0 0 0 0 0 0
rmapbt 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
refcntbt 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
qm 0 0 0 0 0 0 0 0 0
xpc 109953024 52719616 338927104
defer_relog 0
debug 0
";

    #[test]
    fn parses_a_kernel_6_1_file() {
        let stats = parse_stats(KERNEL_6_1.as_bytes()).unwrap();
        assert_eq!(stats.extent_alloc, [130, 4242, 21, 388]);
        assert_eq!(stats.blk_map, [52880, 8160, 40, 149, 43, 61231, 0]);
        assert_eq!(stats.dir, [1620, 117, 45, 9046]);
        assert_eq!(stats.ig, [0, 1212, 0, 408, 0, 217, 76]);
        assert_eq!(stats.rw, [11937, 36124]);
        assert_eq!(stats.vnodes, [995, 0, 0, 0, 406, 406, 406]);
    }

    #[test]
    fn newer_and_older_layouts() {
        // Kernel 6.15+ lines (two-word `gc xpc`, zoned, metafile, rtgroup B-trees), a 7-value
        // vnodes line and an 8-value qm line (before 4.20), CRLF, short and blank lines.
        let text = "vnodes 1 2 3 4 5 6 7\r\nqm 1 2 3 4 5 6 7 8\nzoned 1 2 3 4\nmetafile 9\n\
                    gc xpc 18446744073709551615\nrtrefcntbt 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n\
                    unknown_line 4294967295 0\nlonely\n\n";
        let stats = parse_stats(text.as_bytes()).unwrap();
        assert_eq!(stats.vnodes, [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(stats.rw, [0, 0]);
    }

    #[test]
    fn malformed_files_are_errors() {
        for text in [
            "extent_alloc 1 2 3\n",           // too few values
            "rw 1 2 3\n",                     // too many
            "vnodes 1 2 3 4 5 6\n",           // neither 7 nor 8
            "abt 1 2 x 4\n",                  // not a number
            "abt 1 2 -3 4\n",                 // signed
            "abt 1 2 +3 4\n",                 // Go's ParseUint takes no sign
            "dir 4294967296 0 0 0\n",         // past 32 bits
            "xpc 1 2 18446744073709551616\n", // past 64 bits
            "gc xpc 1 2\n",                   // one value only
            "gc xp 1\n",                      // not `gc xpc`: "xp" as a 32-bit value
            "gc xpc\n",                       // no value: "xpc" as a 32-bit value
            "unknown 1 two\n",                // unknown lines' values must parse too
            "zoned 1 2\n",                    // at least 3
            "abtb2 1 2 3\n",                  // 15
            "rw 1 \u{fffd}\n",                // garbled
        ] {
            assert!(parse_stats(text.as_bytes()).is_err(), "{text:?}");
        }
        assert!(parse_stats(&b"rw 1 \xff\n"[..]).is_err());
        // A label that is not UTF-8 is an unknown line.
        assert!(parse_stats(&b"\xff 1 2\n"[..]).is_ok());
        // The 64 KiB line limit of Go's scanner, with or without a final newline.
        let long = format!("abt 0 0 0 0{}\n", " ".repeat(goparse::MAX_SCAN_TOKEN));
        assert!(parse_stats(long.as_bytes()).is_err());
        assert!(parse_stats(long.trim_end_matches('\n').as_bytes()).is_err());
        let fits = format!("abt 1 0 0 0{}\n", " ".repeat(goparse::MAX_SCAN_TOKEN - 12));
        assert_eq!(parse_stats(fits.as_bytes()).unwrap().abt, [1, 0, 0, 0]);
    }

    #[test]
    fn devices_and_missing_directory() {
        let dir = std::env::temp_dir().join(format!("xfs-test-{}", std::process::id()));
        let collector = XfsCollector {
            sys_fs_xfs: dir.join("fs/xfs"),
        };
        // No /sys/fs/xfs: nothing, and no error.
        let mut out = Vec::new();
        collector.update(&mut out).unwrap();
        assert!(out.is_empty());

        for device in ["nvme0n1p1", "nvme1n1"] {
            std::fs::create_dir_all(dir.join("fs/xfs").join(device).join("stats")).unwrap();
            std::fs::write(
                dir.join("fs/xfs").join(device).join("stats/stats"),
                KERNEL_6_1,
            )
            .unwrap();
        }
        // The aggregate /sys/fs/xfs/stats/stats is not a device.
        std::fs::create_dir_all(dir.join("fs/xfs/stats")).unwrap();
        std::fs::write(dir.join("fs/xfs/stats/stats"), KERNEL_6_1).unwrap();
        collector.update(&mut out).unwrap();
        assert_eq!(out.len(), 39);
        let read = out
            .iter()
            .find(|f| f.name == "node_xfs_read_calls_total")
            .unwrap();
        assert_eq!(read.metrics.len(), 2);
        assert_eq!(
            read.metrics[0].labels,
            [("device".into(), "nvme0n1p1".into())]
        );
        assert_eq!(
            read.metrics[0].value,
            crate::metrics::Value::Scalar(36124.0)
        );

        // One bad file: an error naming it, and nothing served.
        std::fs::write(dir.join("fs/xfs/nvme1n1/stats/stats"), "rw 1\n").unwrap();
        let mut out = Vec::new();
        let error = collector.update(&mut out).unwrap_err();
        assert!(
            format!("{error:#}").contains("nvme1n1/stats/stats"),
            "{error:#}"
        );
        assert!(out.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
