//! `bcachefs`: bcachefs filesystem statistics from /sys/fs/bcachefs/<uuid>/ (btree cache size,
//! compression, error counts, event counters, btree writes, and per-device `dev-*` state and IO),
//! as procfs' `bcachefs` package reads them for node_exporter.
//!
//! Sizes are printed human-readable ("2.05G", "62.5k": powers of 1024). Each file of
//! `counters/` becomes a family of its own, `node_bcachefs_<name>_total`, its value since
//! filesystem creation. A missing file is no value; a malformed one fails the scrape. No
//! `/sys/fs/bcachefs`, or no filesystem in it, is "no data".
use std::{
    collections::{BTreeMap, btree_map::Entry},
    io::ErrorKind,
    path::{Path, PathBuf},
    sync::{Arc, LazyLock},
};

use anyhow::Context as _;
use regex::Regex;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec, NoData},
    goparse,
    metrics::{MetricFamily, MetricType},
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "bcachefs",
    default_enabled: true,
    flags: &[],
    kernel: None,
    build,
};

/// The longest line of `compression_stats` and `btree_write_stats` (procfs gives their scanners
/// a 1 MiB buffer; other files get the default 64 KiB).
const MAX_TABLE_LINE: usize = 1024 * 1024;

struct BcachefsCollector {
    /// `<sysfs>/fs/bcachefs`.
    dir: PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(BcachefsCollector {
        dir: context.sys_path("fs/bcachefs"),
    }))
}

/// One filesystem, as procfs' `bcachefs.Stats` (the values node_exporter exports). Maps are
/// keyed as upstream's: a repeated key keeps its last value.
#[derive(Debug, Default, PartialEq)]
struct Stats {
    uuid: String,
    btree_cache_size: u64,
    /// Algorithm → (compressed, uncompressed) bytes.
    compression: BTreeMap<String, (u64, u64)>,
    /// Error type → count.
    errors: BTreeMap<String, u64>,
    /// Counter file name → value since filesystem creation.
    counters: BTreeMap<String, u64>,
    /// Write type → (count, average size in bytes).
    btree_writes: BTreeMap<String, (u64, u64)>,
    /// Device number (after `dev-`) → its statistics.
    devices: BTreeMap<String, Device>,
}

#[derive(Debug, Default, PartialEq)]
struct Device {
    label: String,
    state: String,
    bucket_size: u64,
    buckets: u64,
    durability: u64,
    /// Operation ("read", "write") → data type → bytes.
    io_done: BTreeMap<String, BTreeMap<String, u64>>,
    /// Error type → count since filesystem creation.
    io_errors: BTreeMap<String, u64>,
}

/// procfs' `parseHumanReadableBytes`: a number with an optional k/M/G/T/P/E suffix (either
/// case, powers of 1024), truncated to an integer.
fn parse_human_bytes(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let Some(&last) = s.as_bytes().last() else {
        anyhow::bail!("empty string");
    };
    let shift = match last.to_ascii_lowercase() {
        b'k' => 10,
        b'm' => 20,
        b'g' => 30,
        b't' => 40,
        b'p' => 50,
        b'e' => 60,
        _ => 0,
    };
    // The suffix is one ASCII byte, so slicing it off stays on a char boundary.
    let number = if shift == 0 { s } else { &s[..s.len() - 1] }.trim();
    let value = goparse::parse_float(number, 64)
        .with_context(|| format!("strconv.ParseFloat: parsing {number:?}: invalid syntax"))?;
    Ok(goparse::float_to_uint(value * (1u64 << shift) as f64))
}

/// Go's `strconv.ParseUint(s, 10, 64)` with an error naming the text.
fn parse_uint(s: &str) -> anyhow::Result<u64> {
    goparse::parse_uint(s, 10, 64)
        .with_context(|| format!("strconv.ParseUint: parsing {s:?}: invalid syntax"))
}

/// A file's text, `None` when it does not exist; other errors are errors.
fn optional_text(path: &Path) -> anyhow::Result<Option<String>> {
    match read::capped(path, read::NO_STAT_LIMIT) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
        Err(error) => {
            Err(anyhow::Error::new(error)).with_context(|| format!("reading {}", path.display()))
        }
    }
}

/// procfs' `parseCompressionStats`: a header line, then "<algorithm>[:] <compressed>
/// <uncompressed> [<average extent>]" (the average must parse too).
fn parse_compression(text: &str) -> anyhow::Result<BTreeMap<String, (u64, u64)>> {
    let mut stats = BTreeMap::new();
    for line in goparse::text_lines(text)
        .with_max(MAX_TABLE_LINE)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .skip(1)
    {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 3 {
            continue;
        }
        let algorithm = fields[0].strip_suffix(':').unwrap_or(fields[0]);
        let compressed = parse_human_bytes(fields[1])?;
        let uncompressed = parse_human_bytes(fields[2])?;
        if let Some(average) = fields.get(3) {
            parse_human_bytes(average)?;
        }
        stats.insert(algorithm.to_owned(), (compressed, uncompressed));
    }
    Ok(stats)
}

/// procfs' `parseErrors`: "<type> <count> [<timestamp>]" lines (the timestamp must parse too).
fn parse_errors(text: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut stats = BTreeMap::new();
    for line in goparse::text_lines(text).collect::<Result<Vec<_>, _>>()? {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 2 {
            continue;
        }
        let count = parse_uint(fields[1])?;
        if let Some(timestamp) = fields.get(2) {
            parse_uint(timestamp)?;
        }
        stats.insert(fields[0].to_owned(), count);
    }
    Ok(stats)
}

/// procfs' `parseCounterFile`: "since mount: <n>" and "since filesystem creation: <n>" lines
/// (either must be there); the value since creation, 0 when only the other is.
fn parse_counter(text: &str) -> anyhow::Result<u64> {
    let (mut since_creation, mut seen) = (0, false);
    for line in goparse::text_lines(text).collect::<Result<Vec<_>, _>>()? {
        if let Some(value) = line.strip_prefix("since mount:") {
            parse_human_bytes(value)?;
            seen = true;
        } else if let Some(value) = line.strip_prefix("since filesystem creation:") {
            since_creation = parse_human_bytes(value)?;
            seen = true;
        }
    }
    if !seen {
        anyhow::bail!("counter file format not recognized");
    }
    Ok(since_creation)
}

/// procfs' `parseBtreeWriteStats`: a header line, then "<type>: <count> <average size>".
fn parse_btree_writes(text: &str) -> anyhow::Result<BTreeMap<String, (u64, u64)>> {
    let mut stats = BTreeMap::new();
    for line in goparse::text_lines(text)
        .with_max(MAX_TABLE_LINE)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .skip(1)
    {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 3 {
            continue;
        }
        let write_type = fields[0].strip_suffix(':').unwrap_or(fields[0]);
        let count = parse_uint(fields[1])?;
        let size = parse_human_bytes(fields[2])?;
        stats.insert(write_type.to_owned(), (count, size));
    }
    Ok(stats)
}

/// procfs' `parseDeviceIODone`: "read:" and "write:" sections of "<data type>: <bytes>" lines.
fn parse_io_done(text: &str) -> anyhow::Result<BTreeMap<String, BTreeMap<String, u64>>> {
    let mut stats: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut operation: Option<&str> = None;
    for line in goparse::text_lines(text).collect::<Result<Vec<_>, _>>()? {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "read:" || line == "write:" {
            let op = &line[..line.len() - 1];
            stats.entry(op.to_owned()).or_default();
            operation = Some(op);
            continue;
        }
        let Some(op) = operation else {
            continue;
        };
        let Some((data_type, value)) = line.split_once(':') else {
            continue;
        };
        let value = parse_uint(value.trim())?;
        stats
            .entry(op.to_owned())
            .or_default()
            .insert(data_type.trim().to_owned(), value);
    }
    Ok(stats)
}

/// procfs' `parseDeviceIOErrors`: the "<type>: <count>" lines of the "IO errors since
/// filesystem creation" section, up to the next "IO errors since ..." header.
fn parse_io_errors(text: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut stats = BTreeMap::new();
    let mut in_creation = false;
    for line in goparse::text_lines(text).collect::<Result<Vec<_>, _>>()? {
        if line.starts_with("IO errors since filesystem creation") {
            in_creation = true;
            continue;
        }
        if line.starts_with("IO errors since ") {
            break;
        }
        if !in_creation {
            continue;
        }
        let Some((error_type, value)) = line.trim().split_once(':') else {
            continue;
        };
        stats.insert(error_type.trim().to_owned(), parse_uint(value.trim())?);
    }
    Ok(stats)
}

/// Parses the optional file `path` with `parse`; the parsed default when it does not exist.
fn parse_optional<T: Default>(
    path: &Path,
    parse: impl FnOnce(&str) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    match optional_text(path)? {
        Some(text) => parse(&text).with_context(|| format!("parsing {}", path.display())),
        None => Ok(T::default()),
    }
}

/// procfs' `readSysfsFile`: the trimmed text, "" on any error.
fn sysfs_text(path: &Path) -> String {
    read::capped(path, read::NO_STAT_LIMIT)
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default()
}

/// procfs' `readUintFile`: a missing file is 0, anything else must be a decimal number.
fn uint_file(path: &Path) -> anyhow::Result<u64> {
    match optional_text(path)? {
        Some(text) => {
            parse_uint(text.trim()).with_context(|| format!("parsing {}", path.display()))
        }
        None => Ok(0),
    }
}

/// Whether a directory entry is a directory itself (not through a symlink, as Go's
/// `DirEntry.IsDir`).
fn is_dir(entry: &read::DirEntry) -> bool {
    entry.file_type.is_dir()
}

/// procfs' `parseDevices`: the `dev-*` directories of a filesystem.
fn read_devices(fs_dir: &Path) -> anyhow::Result<BTreeMap<String, Device>> {
    let mut devices = BTreeMap::new();
    let entries = read::read_dir_sorted(fs_dir)
        .with_context(|| format!("reading directory {}", fs_dir.display()))?;
    for entry in entries {
        let name = entry.name.to_string_lossy().into_owned();
        let Some(number) = name.strip_prefix("dev-") else {
            continue;
        };
        if !is_dir(&entry) {
            continue;
        }
        let dir = &entry.path;
        let bucket_size = match sysfs_text(&dir.join("bucket_size")) {
            text if text.is_empty() => 0,
            text => parse_human_bytes(&text)
                .with_context(|| format!("parsing {}", dir.join("bucket_size").display()))?,
        };
        let device = Device {
            label: sysfs_text(&dir.join("label")),
            state: sysfs_text(&dir.join("state")),
            bucket_size,
            buckets: uint_file(&dir.join("nbuckets"))?,
            durability: uint_file(&dir.join("durability"))?,
            io_done: parse_optional(&dir.join("io_done"), parse_io_done)?,
            io_errors: parse_optional(&dir.join("io_errors"), parse_io_errors)?,
        };
        devices.insert(number.to_owned(), device);
    }
    Ok(devices)
}

/// procfs' `parseCounters`: every file of `counters/` (none when it does not exist).
fn read_counters(dir: &Path) -> anyhow::Result<BTreeMap<String, u64>> {
    let entries = match read::read_dir_sorted(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(error) => {
            return Err(anyhow::Error::new(error))
                .with_context(|| format!("reading directory {}", dir.display()));
        }
    };
    let mut counters = BTreeMap::new();
    for entry in entries.iter().filter(|entry| !is_dir(entry)) {
        let value = parse_optional(&entry.path, parse_counter)?;
        counters.insert(entry.name.to_string_lossy().into_owned(), value);
    }
    Ok(counters)
}

/// procfs' `GetStats` for one filesystem directory.
fn read_stats(dir: &Path, uuid: &str) -> anyhow::Result<Stats> {
    let cache_size_path = dir.join("btree_cache_size");
    let btree_cache_size = match optional_text(&cache_size_path)? {
        Some(text) if !text.trim().is_empty() => parse_human_bytes(&text)
            .with_context(|| format!("parsing {}", cache_size_path.display()))?,
        _ => 0,
    };
    Ok(Stats {
        uuid: uuid.to_owned(),
        btree_cache_size,
        compression: parse_optional(&dir.join("compression_stats"), parse_compression)?,
        errors: parse_optional(&dir.join("errors"), parse_errors)?,
        counters: read_counters(&dir.join("counters"))?,
        btree_writes: parse_optional(&dir.join("btree_write_stats"), parse_btree_writes)?,
        devices: read_devices(dir)?,
    })
}

/// procfs' `FS.Stats`: every directory of `<sysfs>/fs/bcachefs`.
fn read_all(dir: &Path) -> anyhow::Result<Vec<Stats>> {
    let entries = read::read_dir_sorted(dir)
        .with_context(|| format!("reading directory {}", dir.display()))?;
    entries
        .iter()
        .filter(|entry| is_dir(entry))
        .map(|entry| read_stats(&entry.path, &entry.name.to_string_lossy()))
        .collect()
}

/// node_exporter's `SanitizeMetricName`: every run of characters outside `[0-9A-Za-z_]`,
/// with the underscores around it, becomes one underscore.
fn sanitize_metric_name(name: &str) -> String {
    static INVALID: LazyLock<Regex> =
        LazyLock::new(|| Regex::new("_*[^0-9A-Za-z_]+_*").expect("valid regex"));
    INVALID.replace_all(name, "_").into_owned()
}

/// The fixed families' names, which a counter's family must not take over.
const FIXED: &[&str] = &[
    "info",
    "btree_cache_size_bytes",
    "compression_compressed_bytes",
    "compression_uncompressed_bytes",
    "errors_total",
    "btree_writes_total",
    "btree_write_average_size_bytes",
    "device_info",
    "device_bucket_size_bytes",
    "device_buckets",
    "device_durability",
    "device_io_done_bytes_total",
    "device_io_errors_total",
];

/// Families by name; a sample whose HELP differs from its family's, or whose labels repeat one
/// already there, is dropped, as client_golang's gatherer drops what it finds inconsistent.
#[derive(Default)]
struct Families(BTreeMap<String, MetricFamily>);

impl Families {
    fn push(
        &mut self,
        name: &str,
        help: &str,
        metric_type: MetricType,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        let family = match self.0.entry(name.to_owned()) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(MetricFamily::new(
                format!("node_bcachefs_{name}"),
                help,
                metric_type,
            )),
        };
        let labels: Vec<(String, String)> = labels
            .iter()
            .map(|&(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        if family.help != help
            || family.metric_type != metric_type
            || family.metrics.iter().any(|metric| metric.labels == labels)
        {
            tracing::debug!(
                family = name,
                "dropping an inconsistent or duplicate bcachefs sample"
            );
            return;
        }
        family.push(labels, value);
    }
}

/// The families of one filesystem, as node_exporter's bcachefs `Update`.
fn export(stats: &Stats, families: &mut Families) {
    use MetricType::{Counter, Gauge};
    let uuid = stats.uuid.as_str();
    families.push(
        "info",
        "Filesystem information.",
        Gauge,
        &[("uuid", uuid)],
        1.0,
    );
    families.push(
        "btree_cache_size_bytes",
        "Btree cache memory usage in bytes.",
        Gauge,
        &[("uuid", uuid)],
        stats.btree_cache_size as f64,
    );
    for (algorithm, &(compressed, uncompressed)) in &stats.compression {
        let labels = [("uuid", uuid), ("algorithm", algorithm.as_str())];
        families.push(
            "compression_compressed_bytes",
            "Compressed size by algorithm.",
            Gauge,
            &labels,
            compressed as f64,
        );
        families.push(
            "compression_uncompressed_bytes",
            "Uncompressed size by algorithm.",
            Gauge,
            &labels,
            uncompressed as f64,
        );
    }
    for (error_type, &count) in &stats.errors {
        families.push(
            "errors_total",
            "Error count by error type.",
            Counter,
            &[("uuid", uuid), ("error_type", error_type.as_str())],
            count as f64,
        );
    }
    for (counter, &value) in &stats.counters {
        let name = format!("{}_total", sanitize_metric_name(counter));
        if FIXED.contains(&name.as_str()) {
            tracing::debug!(counter = %counter, "bcachefs counter collides with a fixed family, skipped");
            continue;
        }
        families.push(
            &name,
            &format!("Bcachefs counter {counter} since filesystem creation."),
            Counter,
            &[("uuid", uuid)],
            value as f64,
        );
    }
    for (write_type, &(count, size)) in &stats.btree_writes {
        let labels = [("uuid", uuid), ("type", write_type.as_str())];
        families.push(
            "btree_writes_total",
            "Number of btree writes by type.",
            Counter,
            &labels,
            count as f64,
        );
        families.push(
            "btree_write_average_size_bytes",
            "Average btree write size by type.",
            Gauge,
            &labels,
            size as f64,
        );
    }
    for (number, device) in &stats.devices {
        let device_labels = [("uuid", uuid), ("device", number.as_str())];
        families.push(
            "device_info",
            "Device information.",
            Gauge,
            &[
                ("uuid", uuid),
                ("device", number.as_str()),
                ("label", device.label.as_str()),
                ("state", device.state.as_str()),
            ],
            1.0,
        );
        families.push(
            "device_bucket_size_bytes",
            "Bucket size in bytes.",
            Gauge,
            &device_labels,
            device.bucket_size as f64,
        );
        families.push(
            "device_buckets",
            "Total number of buckets.",
            Gauge,
            &device_labels,
            device.buckets as f64,
        );
        families.push(
            "device_durability",
            "Device durability setting.",
            Gauge,
            &device_labels,
            device.durability as f64,
        );
        for (operation, data_types) in &device.io_done {
            for (data_type, &value) in data_types {
                families.push(
                    "device_io_done_bytes_total",
                    "IO bytes by operation type and data type.",
                    Counter,
                    &[
                        ("uuid", uuid),
                        ("device", number.as_str()),
                        ("operation", operation.as_str()),
                        ("data_type", data_type.as_str()),
                    ],
                    value as f64,
                );
            }
        }
        for (error_type, &value) in &device.io_errors {
            families.push(
                "device_io_errors_total",
                "IO errors by error type.",
                Counter,
                &[
                    ("uuid", uuid),
                    ("device", number.as_str()),
                    ("type", error_type.as_str()),
                ],
                value as f64,
            );
        }
    }
}

/// Whether an error is upstream's `os.IsNotExist`: a file or directory that went away.
fn is_not_exist(error: &anyhow::Error) -> bool {
    error
        .root_cause()
        .downcast_ref::<std::io::Error>()
        .is_some_and(|error| error.kind() == ErrorKind::NotFound)
}

impl Collector for BcachefsCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let all = match read_all(&self.dir) {
            Ok(all) => all,
            Err(error) if is_not_exist(&error) => {
                return Err(NoData(format!(
                    "bcachefs sysfs path does not exist: {}",
                    self.dir.display()
                ))
                .into());
            }
            Err(error) => return Err(error.context("failed to retrieve bcachefs stats")),
        };
        if all.is_empty() {
            return Err(NoData("no bcachefs filesystem".to_owned()).into());
        }
        let mut families = Families::default();
        for stats in &all {
            export(stats, &mut families);
        }
        out.extend(families.0.into_values());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_human_readable_bytes() {
        assert_eq!(parse_human_bytes("2.05G").unwrap(), 2_201_170_739);
        assert_eq!(parse_human_bytes(" 62.5k ").unwrap(), 64_000);
        assert_eq!(parse_human_bytes("720").unwrap(), 720);
        assert_eq!(parse_human_bytes("1.00 M").unwrap(), 1 << 20);
        assert_eq!(parse_human_bytes("3e").unwrap(), 3 << 60);
        assert_eq!(parse_human_bytes("1e3").unwrap(), 1000);
        assert_eq!(
            parse_human_bytes("16E").unwrap(),
            1 << 63,
            "beyond u64: Go's value"
        );
        assert!(parse_human_bytes("").is_err());
        assert!(parse_human_bytes("k").is_err());
        assert!(parse_human_bytes("12 MiB").is_err());
        assert!(parse_human_bytes("1,5G").is_err());
        assert!(parse_human_bytes("\u{fffd}").is_err());
    }

    #[test]
    fn parses_tables() {
        let compression = "typetype  compressed  uncompressed  average extent size\n\
                           lz4:        1.50G        3.00G        64.0k\n\
                           none            0            0\n\
                           short 1\n";
        let parsed = parse_compression(compression).unwrap();
        assert_eq!(parsed["lz4"], (1_610_612_736, 3 << 30));
        assert_eq!(parsed["none"], (0, 0));
        assert_eq!(parsed.len(), 2);
        assert!(parse_compression("h\nlz4 1G 2G bad\n").is_err());
        assert!(
            parse_compression("lz4 bad 2G\n").is_ok(),
            "the header is skipped"
        );

        let writes = "  nr  size\ninitial: 12 100k\nbroken\n";
        assert_eq!(
            parse_btree_writes(writes).unwrap()["initial"],
            (12, 102_400)
        );
        assert!(parse_btree_writes("h\ninitial: -1 1k\n").is_err());

        let errors = "bset_bad_csum 2 1753593586\nlonely\nsb_fields 7\n";
        let parsed = parse_errors(errors).unwrap();
        assert_eq!(parsed["bset_bad_csum"], 2);
        assert_eq!(parsed["sb_fields"], 7);
        assert!(parse_errors("x 1 yesterday\n").is_err());
        assert!(parse_errors("x 18446744073709551616\n").is_err());
    }

    #[test]
    fn parses_counters() {
        assert_eq!(
            parse_counter("since mount:\t\t12\nsince filesystem creation:\t1.5k\n").unwrap(),
            1536
        );
        assert_eq!(parse_counter("since mount: 3\n").unwrap(), 0);
        assert!(parse_counter("").is_err());
        assert!(parse_counter("total: 4\n").is_err());
        assert!(parse_counter("since mount: lots\n").is_err());
    }

    #[test]
    fn parses_device_io() {
        let done = "read:\nsb          :       86016\nuser        :610019098624\n\
                    write:\nsb: 1\n\nbogus line\n";
        let parsed = parse_io_done(done).unwrap();
        assert_eq!(parsed["read"]["sb"], 86016);
        assert_eq!(parsed["read"]["user"], 610_019_098_624);
        assert_eq!(parsed["write"].len(), 1);
        assert!(
            parse_io_done("sb: 1\n").unwrap().is_empty(),
            "before any section"
        );
        assert!(parse_io_done("read:\nsb: 1.5\n").is_err());

        let errors = "IO errors since filesystem creation\n  read:    18828\n  write:   1\n\
                      IO errors since 8 y ago\n  read:    5\n";
        let parsed = parse_io_errors(errors).unwrap();
        assert_eq!(parsed["read"], 18828);
        assert_eq!(parsed.len(), 2);
        assert!(parse_io_errors("  read: 1\n").unwrap().is_empty());
        assert!(parse_io_errors("IO errors since filesystem creation\n read: x\n").is_err());
    }

    #[test]
    fn sanitizes_counter_names() {
        assert_eq!(sanitize_metric_name("io_read"), "io_read");
        assert_eq!(sanitize_metric_name("a-b"), "a_b");
        assert_eq!(sanitize_metric_name("a_-_b..c"), "a_b_c");
        assert_eq!(sanitize_metric_name("\u{fffd}x"), "_x");
    }

    #[test]
    fn counters_do_not_take_over_fixed_families() {
        let stats = Stats {
            uuid: "u".to_owned(),
            counters: BTreeMap::from([
                ("errors".to_owned(), 5),
                ("a-b".to_owned(), 1),
                ("a.b".to_owned(), 2),
            ]),
            ..Stats::default()
        };
        let mut families = Families::default();
        export(&stats, &mut families);
        assert!(!families.0.contains_key("errors_total"));
        // "a-b" and "a.b" both sanitize to a_b: the first (sorted) wins.
        let family = &families.0["a_b_total"];
        assert_eq!(family.metrics.len(), 1);
        assert_eq!(
            family.help,
            "Bcachefs counter a-b since filesystem creation."
        );
    }

    #[test]
    fn reads_a_filesystem_tree() {
        let root = std::env::temp_dir().join(format!("bcachefs-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        assert!(is_not_exist(&read_all(&root).unwrap_err()));
        let fs = root.join("0f0e-aa");
        let dev = fs.join("dev-0");
        std::fs::create_dir_all(dev.join("x")).unwrap();
        std::fs::create_dir_all(fs.join("counters")).unwrap();
        std::fs::write(root.join("stray-file"), "").unwrap();
        std::fs::write(fs.join("btree_cache_size"), "1.0M\n").unwrap();
        std::fs::write(
            fs.join("counters/io_read"),
            "since filesystem creation: 9\n",
        )
        .unwrap();
        std::fs::write(dev.join("label"), "ssd\n").unwrap();
        std::fs::write(dev.join("state"), "rw\n").unwrap();
        std::fs::write(dev.join("bucket_size"), "512k\n").unwrap();
        std::fs::write(dev.join("nbuckets"), "1000\n").unwrap();
        let all = read_all(&root).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].uuid, "0f0e-aa");
        assert_eq!(all[0].btree_cache_size, 1 << 20);
        assert_eq!(all[0].counters["io_read"], 9);
        let device = &all[0].devices["0"];
        assert_eq!(
            (device.label.as_str(), device.state.as_str()),
            ("ssd", "rw")
        );
        assert_eq!(
            (device.bucket_size, device.buckets, device.durability),
            (524_288, 1000, 0)
        );

        std::fs::write(dev.join("durability"), "\n").unwrap();
        let error = read_all(&root).unwrap_err();
        assert!(format!("{error:#}").contains("durability"), "{error:#}");
        assert!(!is_not_exist(&error));
        std::fs::remove_dir_all(&root).unwrap();
    }

    proptest::proptest! {
        /// No input makes a parser panic.
        #[test]
        fn parsers_take_any_input(text in "[-+.0-9kKmMgGtTpPeE:a-z \t\n]{0,96}") {
            let _ = parse_human_bytes(&text);
            let _ = parse_compression(&text);
            let _ = parse_errors(&text);
            let _ = parse_counter(&text);
            let _ = parse_btree_writes(&text);
            let _ = parse_io_done(&text);
            let _ = parse_io_errors(&text);
            let _ = sanitize_metric_name(&text);
        }
    }
}
