//! `bcache`: Linux block cache statistics from /sys/fs/bcache/<uuid>/ (cache set), its `bdev*`
//! (backing devices) and `cache*` (cache devices) entries, as procfs' `bcache` package reads
//! them for node_exporter.
//!
//! Values are in bcache's `bch_hprint` form ("20.4G", "1.1M/sec"), where the digit after the
//! point is a 1/10.24 fraction; procfs undoes that, and so does [`dehumanize`]. Every number read
//! must parse, including the five-minute statistics that are not exported: one bad file fails
//! the scrape, as upstream. A cache set directory missing a file reads that value as 0, except
//! `writeback_rate_debug` (and `priority_stats` with `--collector.bcache.priorityStats`), which
//! must exist. No `/sys/fs/bcache` is no metrics, with success 1 (upstream globs).
use std::{
    collections::BTreeMap,
    io::ErrorKind,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    flags::FlagSpec,
    goparse,
    metrics::{MetricFamily, MetricType},
    read,
};

const PRIORITY_STATS: &str = "collector.bcache.priorityStats";

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "bcache",
    default_enabled: true,
    flags: &[FlagSpec::bool(
        PRIORITY_STATS,
        false,
        "Expose expensive priority stats.",
    )],
    kernel: None,
    build,
};

struct BcacheCollector {
    /// `<sysfs>/fs/bcache`.
    dir: PathBuf,
    /// Reads `cache*/priority_stats`, which makes the kernel walk every bucket.
    priority_stats: bool,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(BcacheCollector {
        dir: context.sys_path("fs/bcache"),
        priority_stats: context.flags.bool(PRIORITY_STATS),
    }))
}

/// One cache set, the values node_exporter exports.
#[derive(Debug, Default, PartialEq)]
struct Stats {
    /// The cache set's UUID (its directory name).
    name: String,
    average_key_size: u64,
    btree_cache_size: u64,
    cache_available_percent: u64,
    congested: u64,
    root_usage_percent: u64,
    tree_depth: u64,
    active_journal_entries: u64,
    btree_nodes: u64,
    /// `internal/btree_read_average_duration_us`, which procfs takes for nanoseconds (and
    /// node_exporter scales by 1e-9): kept as upstream.
    btree_read_average_duration: u64,
    cache_read_races: u64,
    bdevs: Vec<Bdev>,
    caches: Vec<Cache>,
}

/// A backing device, `bdev<N>`.
#[derive(Debug, Default, PartialEq)]
struct Bdev {
    name: String,
    dirty_data: u64,
    /// `stats_total`.
    total: PeriodStats,
    writeback: WritebackRateDebug,
}

/// A cache device, `cache<N>`.
#[derive(Debug, Default, PartialEq)]
struct Cache {
    name: String,
    io_errors: u64,
    metadata_written: u64,
    written: u64,
    /// `(unused, metadata)` percentages from `priority_stats`, when asked for.
    priority: Option<(u64, u64)>,
}

/// A `stats_*` directory.
#[derive(Debug, Default, PartialEq)]
struct PeriodStats {
    bypassed: u64,
    cache_bypass_hits: u64,
    cache_bypass_misses: u64,
    cache_hits: u64,
    cache_miss_collisions: u64,
    cache_misses: u64,
    cache_readaheads: u64,
}

/// The exported lines of `writeback_rate_debug`.
#[derive(Debug, Default, PartialEq)]
struct WritebackRateDebug {
    rate: u64,
    target: u64,
    proportional: i64,
    integral: i64,
    change: i64,
}

/// procfs' `parsePseudoFloat`: bch_hprint's "<int>.<tenth>" where the tenth counts 1/10.24;
/// anything after a second point is ignored.
fn parse_pseudo_float(s: &str) -> anyhow::Result<f64> {
    let mut parts = s.split('.');
    let int_part = parts.next().unwrap_or_default();
    let int =
        goparse::parse_float(int_part, 64).with_context(|| format!("invalid number {s:?}"))?;
    let Some(fraction) = parts.next() else {
        return Ok(int);
    };
    let fraction =
        goparse::parse_float(fraction, 64).with_context(|| format!("invalid number {s:?}"))?;
    Ok(int + fraction / 10.24)
}

/// procfs' `dehumanize`: a number with an optional bch_hprint unit suffix (k, M, G, T, P, E, Z,
/// Y: powers of 1024). Any other byte past '9' is taken for a unit too, of multiplier 0, as
/// upstream.
fn dehumanize(bytes: &[u8]) -> anyhow::Result<u64> {
    let Some((&last, rest)) = bytes.split_last() else {
        anyhow::bail!("zero-length reply");
    };
    let text = |bytes: &[u8]| -> anyhow::Result<String> {
        String::from_utf8(bytes.to_vec())
            .map_err(|_| anyhow::anyhow!("invalid number {:?}", String::from_utf8_lossy(bytes)))
    };
    let value = if last > b'9' {
        let multiplier = match last {
            b'k' => 1u128 << 10,
            b'M' => 1 << 20,
            b'G' => 1 << 30,
            b'T' => 1 << 40,
            b'P' => 1 << 50,
            b'E' => 1 << 60,
            b'Z' => 1 << 70,
            b'Y' => 1 << 80,
            _ => 0,
        } as f64;
        parse_pseudo_float(&text(rest)?)? * multiplier
    } else {
        let text = text(bytes)?;
        goparse::parse_float(&text, 64).with_context(|| format!("invalid number {text:?}"))?
    };
    Ok(goparse::float_to_uint(value))
}

/// procfs' `dehumanizeSigned`: [`dehumanize`] with a leading minus.
fn dehumanize_signed(s: &str) -> anyhow::Result<i64> {
    let (negative, rest) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let value = dehumanize(rest.as_bytes())?;
    Ok(if negative {
        value.wrapping_neg() as i64
    } else {
        value as i64
    })
}

/// procfs' `readValue`: a missing file is 0; the file's last byte (its newline) is dropped
/// before [`dehumanize`].
fn read_value(dir: &Path, name: &str) -> anyhow::Result<u64> {
    let path = dir.join(name);
    let bytes = match read::capped(&path, read::NO_STAT_LIMIT) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(0),
        Err(error) => {
            return Err(anyhow::Error::new(error))
                .with_context(|| format!("failed to read: {}", path.display()));
        }
    };
    // Upstream slices off the last byte unchecked (and panics on an empty file).
    let Some((_, value)) = bytes.split_last() else {
        anyhow::bail!("failed to parse {}: empty file", path.display());
    };
    dehumanize(value).with_context(|| format!("failed to parse {}", path.display()))
}

/// A `stats_*` directory, every file parsed in upstream's order.
fn read_period(dir: &Path) -> anyhow::Result<PeriodStats> {
    Ok(PeriodStats {
        bypassed: read_value(dir, "bypassed")?,
        cache_bypass_hits: read_value(dir, "cache_bypass_hits")?,
        cache_bypass_misses: read_value(dir, "cache_bypass_misses")?,
        cache_hits: read_value(dir, "cache_hits")?,
        cache_miss_collisions: read_value(dir, "cache_miss_collisions")?,
        cache_misses: read_value(dir, "cache_misses")?,
        cache_readaheads: read_value(dir, "cache_readaheads")?,
    })
}

/// The last whitespace-separated field of a line (the line starts with a known key, so there
/// is one).
fn last_field(line: &str) -> &str {
    line.split_whitespace().last().unwrap_or_default()
}

/// A file that must exist, read and split into lines.
fn read_lines(path: &Path) -> anyhow::Result<String> {
    let bytes = read::capped(path, read::NO_STAT_LIMIT)
        .with_context(|| format!("failed to read: {}", path.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// procfs' `parseWritebackRateDebug` over `writeback_rate_debug`.
fn parse_writeback_rate_debug(text: &str) -> anyhow::Result<WritebackRateDebug> {
    let mut stats = WritebackRateDebug::default();
    for line in goparse::text_lines(text).collect::<Result<Vec<_>, _>>()? {
        let field = last_field(line);
        if line.starts_with("rate:") {
            stats.rate = dehumanize(field.strip_suffix("/sec").unwrap_or(field).as_bytes())?;
        } else if line.starts_with("dirty:") {
            dehumanize(field.as_bytes())?;
        } else if line.starts_with("target:") {
            stats.target = dehumanize(field.as_bytes())?;
        } else if line.starts_with("proportional:") {
            stats.proportional = dehumanize_signed(field)?;
        } else if line.starts_with("integral:") {
            stats.integral = dehumanize_signed(field)?;
        } else if line.starts_with("change:") {
            stats.change = dehumanize_signed(field.strip_suffix("/sec").unwrap_or(field))?;
        } else if line.starts_with("next io:") {
            let value = field.strip_suffix("ms").unwrap_or(field);
            value
                .parse::<i64>()
                .with_context(|| format!("invalid next io {value:?}"))?;
        }
    }
    Ok(stats)
}

/// procfs' `parsePriorityStats` over `priority_stats`: `(unused, metadata)` percentages.
fn parse_priority_stats(text: &str) -> anyhow::Result<(u64, u64)> {
    let (mut unused, mut metadata) = (0, 0);
    for line in goparse::text_lines(text).collect::<Result<Vec<_>, _>>()? {
        let target = if line.starts_with("Unused:") {
            &mut unused
        } else if line.starts_with("Metadata:") {
            &mut metadata
        } else {
            continue;
        };
        let field = last_field(line);
        let value = field.strip_suffix('%').unwrap_or(field);
        *target = goparse::parse_uint(value, 10, 64)
            .with_context(|| format!("invalid percentage {value:?}"))?;
    }
    Ok((unused, metadata))
}

/// The entries of `dir` named `<prefix><digit>...`, sorted; none when it cannot be read (as
/// `filepath.Glob`).
fn numbered(dir: &Path, prefix: &str) -> Vec<String> {
    read::numbered_entries(dir, prefix)
        .map(|entries| entries.into_iter().map(|(name, _)| name).collect())
        .unwrap_or_default()
}

/// procfs' `GetStats` for one cache set directory.
fn read_stats(dir: &Path, name: &str, priority_stats: bool) -> anyhow::Result<Stats> {
    let internal = dir.join("internal");
    let mut stats = Stats {
        name: name.to_owned(),
        average_key_size: read_value(dir, "average_key_size")?,
        btree_cache_size: read_value(dir, "btree_cache_size")?,
        cache_available_percent: read_value(dir, "cache_available_percent")?,
        congested: read_value(dir, "congested")?,
        root_usage_percent: read_value(dir, "root_usage_percent")?,
        tree_depth: read_value(dir, "tree_depth")?,
        active_journal_entries: read_value(&internal, "active_journal_entries")?,
        btree_nodes: read_value(&internal, "btree_nodes")?,
        btree_read_average_duration: read_value(&internal, "btree_read_average_duration_us")?,
        cache_read_races: read_value(&internal, "cache_read_races")?,
        ..Stats::default()
    };
    // The cache set's own period statistics are not exported, but must parse; upstream reads
    // bypassed and cache_hits twice, first of all.
    for period in ["stats_five_minute", "stats_total"] {
        let period = dir.join(period);
        read_value(&period, "bypassed")?;
        read_value(&period, "cache_hits")?;
        read_period(&period)?;
    }

    for name in numbered(dir, "bdev") {
        let bdev_dir = dir.join(&name);
        let dirty_data = read_value(&bdev_dir, "dirty_data")?;
        let path = bdev_dir.join("writeback_rate_debug");
        let writeback = parse_writeback_rate_debug(&read_lines(&path)?)
            .with_context(|| format!("failed to parse path {:?}", path.display()))?;
        read_period(&bdev_dir.join("stats_five_minute"))?;
        let total = read_period(&bdev_dir.join("stats_total"))?;
        stats.bdevs.push(Bdev {
            name,
            dirty_data,
            total,
            writeback,
        });
    }

    for name in numbered(dir, "cache") {
        let cache_dir = dir.join(&name);
        let mut cache = Cache {
            io_errors: read_value(&cache_dir, "io_errors")?,
            metadata_written: read_value(&cache_dir, "metadata_written")?,
            written: read_value(&cache_dir, "written")?,
            name,
            priority: None,
        };
        if priority_stats {
            let path = cache_dir.join("priority_stats");
            cache.priority = Some(
                parse_priority_stats(&read_lines(&path)?)
                    .with_context(|| format!("failed to parse path {:?}", path.display()))?,
            );
        }
        stats.caches.push(cache);
    }
    Ok(stats)
}

/// procfs' `FS.stats`: every `<sysfs>/fs/bcache/*-*` entry, sorted by name.
fn read_all(dir: &Path, priority_stats: bool) -> anyhow::Result<Vec<Stats>> {
    // filepath.Glob: an unreadable or missing directory matches nothing.
    let names = read::glob_names(dir, |name| name.contains(&b'-')).unwrap_or_default();
    names
        .iter()
        .map(|name| read_stats(&dir.join(name), &name.to_string_lossy(), priority_stats))
        .collect()
}

/// Families by name, filled in any order.
#[derive(Default)]
struct Families(BTreeMap<&'static str, MetricFamily>);

impl Families {
    fn push(
        &mut self,
        name: &'static str,
        help: &'static str,
        metric_type: MetricType,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        self.0
            .entry(name)
            .or_insert_with(|| MetricFamily::new(format!("node_bcache_{name}"), help, metric_type))
            .push(labels.iter().copied(), value);
    }
}

/// The families of one cache set, as node_exporter's `updateBcacheStats`.
fn export(stats: &Stats, priority_stats: bool, families: &mut Families) {
    use MetricType::{Counter, Gauge};
    let uuid = stats.name.as_str();
    let set = [("uuid", uuid)];
    for (name, help, metric_type, value) in [
        (
            "average_key_size_sectors",
            "Average data per key in the btree (sectors).",
            Gauge,
            stats.average_key_size as f64,
        ),
        (
            "btree_cache_size_bytes",
            "Amount of memory currently used by the btree cache.",
            Gauge,
            stats.btree_cache_size as f64,
        ),
        (
            "cache_available_percent",
            "Percentage of cache device without dirty data, usable for writeback (may contain clean cached data).",
            Gauge,
            stats.cache_available_percent as f64,
        ),
        ("congested", "Congestion.", Gauge, stats.congested as f64),
        (
            "root_usage_percent",
            "Percentage of the root btree node in use (tree depth increases if too high).",
            Gauge,
            stats.root_usage_percent as f64,
        ),
        (
            "tree_depth",
            "Depth of the btree.",
            Gauge,
            stats.tree_depth as f64,
        ),
        (
            "active_journal_entries",
            "Number of journal entries that are newer than the index.",
            Gauge,
            stats.active_journal_entries as f64,
        ),
        (
            "btree_nodes",
            "Total nodes in the btree.",
            Gauge,
            stats.btree_nodes as f64,
        ),
        (
            "btree_read_average_duration_seconds",
            "Average btree read duration.",
            Gauge,
            stats.btree_read_average_duration as f64 * 1e-9,
        ),
        (
            "cache_read_races_total",
            "Counts instances where while data was being read from the cache, the bucket was reused and invalidated - i.e. where the pointer was stale after the read completed.",
            Counter,
            stats.cache_read_races as f64,
        ),
    ] {
        families.push(name, help, metric_type, &set, value);
    }

    for bdev in &stats.bdevs {
        let labels = [("uuid", uuid), ("backing_device", bdev.name.as_str())];
        let wb = &bdev.writeback;
        let total = &bdev.total;
        for (name, help, metric_type, value) in [
            (
                "dirty_data_bytes",
                "Amount of dirty data for this backing device in the cache.",
                Gauge,
                bdev.dirty_data as f64,
            ),
            (
                "dirty_target_bytes",
                "Current dirty data target threshold for this backing device in bytes.",
                Gauge,
                wb.target as f64,
            ),
            (
                "writeback_rate",
                "Current writeback rate for this backing device in bytes.",
                Gauge,
                wb.rate as f64,
            ),
            (
                "writeback_rate_proportional_term",
                "Current result of proportional controller, part of writeback rate",
                Gauge,
                wb.proportional as f64,
            ),
            (
                "writeback_rate_integral_term",
                "Current result of integral controller, part of writeback rate",
                Gauge,
                wb.integral as f64,
            ),
            (
                "writeback_change",
                "Last writeback rate change step for this backing device.",
                Gauge,
                wb.change as f64,
            ),
            (
                "bypassed_bytes_total",
                "Amount of IO (both reads and writes) that has bypassed the cache.",
                Counter,
                total.bypassed as f64,
            ),
            (
                "cache_hits_total",
                "Hits counted per individual IO as bcache sees them.",
                Counter,
                total.cache_hits as f64,
            ),
            (
                "cache_misses_total",
                "Misses counted per individual IO as bcache sees them.",
                Counter,
                total.cache_misses as f64,
            ),
            (
                "cache_bypass_hits_total",
                "Hits for IO intended to skip the cache.",
                Counter,
                total.cache_bypass_hits as f64,
            ),
            (
                "cache_bypass_misses_total",
                "Misses for IO intended to skip the cache.",
                Counter,
                total.cache_bypass_misses as f64,
            ),
            (
                "cache_miss_collisions_total",
                "Instances where data insertion from cache miss raced with write (data already present).",
                Counter,
                total.cache_miss_collisions as f64,
            ),
        ] {
            families.push(name, help, metric_type, &labels, value);
        }
        // Upstream leaves the readahead counter out while it is 0.
        if total.cache_readaheads != 0 {
            families.push(
                "cache_readaheads_total",
                "Count of times readahead occurred.",
                Counter,
                &labels,
                total.cache_readaheads as f64,
            );
        }
    }

    for cache in &stats.caches {
        let labels = [("uuid", uuid), ("cache_device", cache.name.as_str())];
        for (name, help, metric_type, value) in [
            (
                "io_errors",
                "Number of errors that have occurred, decayed by io_error_halflife.",
                Gauge,
                cache.io_errors as f64,
            ),
            (
                "metadata_written_bytes_total",
                "Sum of all non data writes (btree writes and all other metadata).",
                Counter,
                cache.metadata_written as f64,
            ),
            (
                "written_bytes_total",
                "Sum of all data that has been written to the cache.",
                Counter,
                cache.written as f64,
            ),
        ] {
            families.push(name, help, metric_type, &labels, value);
        }
        if priority_stats {
            let (unused, metadata) = cache.priority.unwrap_or_default();
            families.push(
                "priority_stats_unused_percent",
                "The percentage of the cache that doesn't contain any data.",
                Gauge,
                &labels,
                unused as f64,
            );
            families.push(
                "priority_stats_metadata_percent",
                "Bcache's metadata overhead.",
                Gauge,
                &labels,
                metadata as f64,
            );
        }
    }
}

impl Collector for BcacheCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let all =
            read_all(&self.dir, self.priority_stats).context("failed to retrieve bcache stats")?;
        let mut families = Families::default();
        for stats in &all {
            export(stats, self.priority_stats, &mut families);
        }
        out.extend(families.0.into_values());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dehumanizes_bch_hprint() {
        assert_eq!(dehumanize(b"0").unwrap(), 0);
        assert_eq!(dehumanize(b"546").unwrap(), 546);
        assert_eq!(dehumanize(b"512").unwrap(), 512);
        // 1 + 1/10.24 MiB.
        assert_eq!(dehumanize(b"1.1M").unwrap(), 1_150_976);
        assert_eq!(dehumanize(b"20.4G").unwrap(), 21_894_266_880);
        assert_eq!(dehumanize(b"427.5k").unwrap(), 437_748);
        assert_eq!(dehumanize(b"2k").unwrap(), 2048);
        assert_eq!(
            dehumanize(b"1Y").unwrap(),
            1 << 63,
            "beyond u64: Go's overflow value"
        );
        // An unknown unit multiplies by 0, as upstream.
        assert_eq!(dehumanize(b"12x").unwrap(), 0);
        assert!(dehumanize(b"").is_err());
        assert!(dehumanize(b"abc").is_err());
        assert!(dehumanize(b"1.xM").is_err());
        assert!(dehumanize(b"\xff1").is_err());
        assert!(dehumanize(b"1e999").is_err(), "out of range");
        assert_eq!(dehumanize_signed("-321.5k").unwrap(), -329_204);
        assert_eq!(dehumanize_signed("790.0k").unwrap(), 808_960);
        assert!(dehumanize_signed("-").is_err());
    }

    #[test]
    fn parses_writeback_rate_debug() {
        let text = "rate:\t\t512.0k/sec\ndirty:\t\t1.5G\ntarget:\t\t3.0G\nproportional:\t-1.2M\n\
                    integral:\t-20.0k\nchange:\t\t-12.8k/sec\nnext io:\t-43ms\n";
        assert_eq!(
            parse_writeback_rate_debug(text).unwrap(),
            WritebackRateDebug {
                rate: 524_288,
                target: 3 << 30,
                proportional: -(1_048_576 + 204_800),
                integral: -20_480,
                change: -(12 * 1024 + 8 * 100),
            }
        );
        assert!(parse_writeback_rate_debug("rate: fast/sec\n").is_err());
        assert!(parse_writeback_rate_debug("next io: soon\n").is_err());
        assert!(parse_writeback_rate_debug("dirty: x1\n").is_err());
        assert_eq!(
            parse_writeback_rate_debug("rate:\n")
                .unwrap_err()
                .to_string(),
            "invalid number \"rate\""
        );
    }

    #[test]
    fn parses_priority_stats() {
        let text = "Unused:\t\t72%\nClean:\t\t20%\nDirty:\t\t6%\nMetadata:\t2%\n\
                    Average:\t1221\nSectors per Q:\t73400320\nQuantiles:\t[1 2 3]\n";
        assert_eq!(parse_priority_stats(text).unwrap(), (72, 2));
        assert!(parse_priority_stats("Unused: many%\n").is_err());
        assert!(parse_priority_stats("Metadata:\n").is_err());
        assert!(parse_priority_stats("Unused: -1%\n").is_err());
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bcache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn reads_a_cache_set_and_fails_on_bad_files() {
        let root = temp_dir("set");
        let set = root.join("aa-bb");
        let bdev = set.join("bdev0");
        let cache = set.join("cache0");
        for dir in [&bdev, &cache, &set.join("internal")] {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::create_dir_all(bdev.join("stats_total")).unwrap();
        std::fs::write(set.join("tree_depth"), "2\n").unwrap();
        std::fs::write(
            set.join("internal/btree_read_average_duration_us"),
            "1305\n",
        )
        .unwrap();
        std::fs::write(bdev.join("stats_total/cache_hits"), "1.5k\n").unwrap();
        std::fs::write(bdev.join("writeback_rate_debug"), "rate: 4.0k/sec\n").unwrap();
        std::fs::write(cache.join("written"), "2.0G\n").unwrap();
        // A file that is not "<uuid>" shaped is not a cache set.
        std::fs::write(root.join("register"), "").unwrap();

        let all = read_all(&root, false).unwrap();
        assert_eq!(all.len(), 1);
        let stats = &all[0];
        assert_eq!(stats.name, "aa-bb");
        assert_eq!(stats.tree_depth, 2);
        assert_eq!(stats.btree_read_average_duration, 1305);
        // (1 + 5/10.24) KiB.
        assert_eq!(stats.bdevs[0].total.cache_hits, 1524);
        assert_eq!(stats.bdevs[0].writeback.rate, 4096);
        assert_eq!(stats.caches[0].written, 2 << 30);
        assert_eq!(stats.caches[0].priority, None);

        // priority_stats must exist when asked for.
        let error = read_all(&root, true).unwrap_err();
        assert!(format!("{error:#}").contains("priority_stats"), "{error:#}");
        std::fs::write(cache.join("priority_stats"), "Unused: 10%\n").unwrap();
        assert_eq!(
            read_all(&root, true).unwrap()[0].caches[0].priority,
            Some((10, 0))
        );

        // An unexported five-minute value must parse too.
        std::fs::create_dir_all(set.join("stats_five_minute")).unwrap();
        std::fs::write(set.join("stats_five_minute/cache_misses"), "lots\n").unwrap();
        let error = read_all(&root, false).unwrap_err();
        assert!(format!("{error:#}").contains("cache_misses"), "{error:#}");
        std::fs::remove_file(set.join("stats_five_minute/cache_misses")).unwrap();

        // An empty file (upstream panics) is an error, not a panic.
        std::fs::write(set.join("congested"), "").unwrap();
        assert!(read_all(&root, false).is_err());
        // Without a newline, the last digit is dropped, as upstream.
        std::fs::write(set.join("congested"), "12").unwrap();
        assert_eq!(read_all(&root, false).unwrap()[0].congested, 1);

        // writeback_rate_debug must exist.
        std::fs::remove_file(bdev.join("writeback_rate_debug")).unwrap();
        assert!(read_all(&root, false).is_err());
        std::fs::remove_dir_all(&root).unwrap();

        // No /sys/fs/bcache: nothing, and no error.
        assert!(read_all(&root, false).unwrap().is_empty());
    }

    #[test]
    fn readaheads_only_when_nonzero() {
        let mut stats = Stats {
            name: "u-1".to_owned(),
            bdevs: vec![Bdev {
                name: "bdev0".to_owned(),
                ..Bdev::default()
            }],
            ..Stats::default()
        };
        let mut families = Families::default();
        export(&stats, false, &mut families);
        assert!(!families.0.contains_key("cache_readaheads_total"));
        stats.bdevs[0].total.cache_readaheads = 3;
        let mut families = Families::default();
        export(&stats, false, &mut families);
        assert_eq!(families.0["cache_readaheads_total"].metrics.len(), 1);
    }

    proptest::proptest! {
        /// No input makes a parser panic; whatever parses is a number.
        #[test]
        fn parsers_take_any_input(
            text in "[-+.0-9kMGTPEZYx:%a-z \t\n/]{0,64}",
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let _ = dehumanize(text.as_bytes());
            let _ = dehumanize(&bytes);
            let _ = dehumanize_signed(&text);
            let _ = parse_writeback_rate_debug(&text);
            let _ = parse_priority_stats(&text);
        }
    }
}
