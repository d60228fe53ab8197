//! `tapestats`: SCSI tape drive I/O statistics from /sys/class/scsi_tape/st*/stats, as
//! node_exporter's tapestats collector reads them through procfs' `SCSITapeClass`.
//!
//! Only the `st<N>` devices are read: the `nst<N>` (no rewind) and mode (`st0a`, `st0l`...)
//! nodes are the same drive. A missing class or stats directory is no data. A value that does
//! not parse is an error here, where upstream's procfs dereferences a nil pointer and crashes
//! the exporter.
use std::{
    path::{Path, PathBuf},
    sync::{Arc, LazyLock},
};

use anyhow::Context as _;
use regex::Regex;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec, NoData},
    flags::FlagSpec,
    goparse,
    metrics::MetricFamily,
    read,
};

const IGNORED_DEVICES: &str = "collector.tapestats.ignored-devices";

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "tapestats",
    default_enabled: true,
    flags: &[FlagSpec::value(
        IGNORED_DEVICES,
        Some("^$"),
        "Regexp of devices to ignore for tapestats.",
    )],
    kernel: None,
    build,
};

struct TapestatsCollector {
    class: PathBuf,
    /// Devices matching it are skipped; an empty pattern matches (so skips) every device, as
    /// in Go.
    ignored: Regex,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    let pattern = context.flags.string(IGNORED_DEVICES).unwrap_or("^$");
    let ignored = Regex::new(pattern)
        .with_context(|| format!("--{IGNORED_DEVICES}: bad regular expression"))?;
    Ok(Arc::new(TapestatsCollector {
        class: context.sys_path("class/scsi_tape"),
        ignored,
    }))
}

static DEVICE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^st[0-9]+$").expect("valid regex"));

/// The files of stats/, in the order of [`Counters::values`].
const FILES: [&str; 10] = [
    "in_flight",
    "io_ns",
    "other_cnt",
    "read_byte_cnt",
    "read_cnt",
    "read_ns",
    "resid_cnt",
    "write_byte_cnt",
    "write_cnt",
    "write_ns",
];

/// One drive's counters, indexed as [`FILES`]; a file that is absent is 0.
#[derive(Debug, Default, PartialEq)]
struct Counters {
    values: [u64; 10],
}

impl Counters {
    fn get(&self, file: &str) -> u64 {
        FILES
            .iter()
            .position(|f| *f == file)
            .map_or(0, |i| self.values[i])
    }
}

/// The result of reading the class: `Absent` is upstream's `os.IsNotExist` on the unwrapped
/// error of a directory listing, the other failures are errors.
enum ReadError {
    Absent(String),
    Failed(anyhow::Error),
}

/// [`read::sorted_names`], a missing directory told apart.
fn sorted_entries(dir: &Path) -> Result<Vec<String>, ReadError> {
    match read::sorted_names(dir) {
        Ok(names) => Ok(names),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Err(ReadError::Absent(format!("{}: {error}", dir.display())))
        }
        Err(error) => Err(ReadError::Failed(
            anyhow::Error::new(error).context(format!("reading {}", dir.display())),
        )),
    }
}

/// procfs' `parseSCSITapeStatistics`: every file of stats/ is read; those it knows must be
/// numbers (base prefixes allowed, as Go's `ParseUint(v, 0, 64)`).
fn read_counters(stats: &Path) -> Result<Counters, ReadError> {
    let mut counters = Counters::default();
    for name in sorted_entries(stats)? {
        let path = stats.join(&name);
        let value = read::sys_read_file(&path).map_err(|error| {
            ReadError::Failed(
                anyhow::Error::new(error)
                    .context(format!("failed to read file {:?}", path.display())),
            )
        })?;
        if let Some(index) = FILES.iter().position(|f| *f == name) {
            counters.values[index] = goparse::parse_uint(&value, 0, 64).ok_or_else(|| {
                ReadError::Failed(anyhow::anyhow!("{}: bad number {value:?}", path.display()))
            })?;
        }
    }
    Ok(counters)
}

/// procfs' `SCSITapeClass`: the `st<N>` drives, all or nothing.
fn read_class(class: &Path) -> Result<Vec<(String, Counters)>, ReadError> {
    let mut tapes = Vec::new();
    for name in sorted_entries(class)? {
        if DEVICE.is_match(&name) {
            let counters = read_counters(&class.join(&name).join("stats"))?;
            tapes.push((name, counters));
        }
    }
    Ok(tapes)
}

/// The families: name, HELP, whether a counter, the stats file and its scale.
const METRICS: [(&str, &str, bool, &str, f64); 10] = [
    (
        "node_tape_io_now",
        "The number of I/Os currently outstanding to this device.",
        false,
        "in_flight",
        1.0,
    ),
    (
        "node_tape_io_time_seconds_total",
        "The amount of time spent waiting for all I/O to complete (including read and write). This includes tape movement commands such as seeking between file or set marks and implicit tape movement such as when rewind on close tape devices are used.",
        true,
        "io_ns",
        0.000000001,
    ),
    (
        "node_tape_io_others_total",
        "The number of I/Os issued to the tape drive other than read or write commands. The time taken to complete these commands uses the following calculation io_time_seconds_total-read_time_seconds_total-write_time_seconds_total",
        true,
        "other_cnt",
        1.0,
    ),
    (
        "node_tape_read_bytes_total",
        "The number of bytes read from the tape drive.",
        true,
        "read_byte_cnt",
        1.0,
    ),
    (
        "node_tape_reads_completed_total",
        "The number of read requests issued to the tape drive.",
        true,
        "read_cnt",
        1.0,
    ),
    (
        "node_tape_read_time_seconds_total",
        "The amount of time spent waiting for read requests to complete.",
        true,
        "read_ns",
        0.000000001,
    ),
    (
        "node_tape_residual_total",
        "The number of times during a read or write we found the residual amount to be non-zero. This should mean that a program is issuing a read larger thean the block size on tape. For write not all data made it to tape.",
        true,
        "resid_cnt",
        1.0,
    ),
    (
        "node_tape_written_bytes_total",
        "The number of bytes written to the tape drive.",
        true,
        "write_byte_cnt",
        1.0,
    ),
    (
        "node_tape_writes_completed_total",
        "The number of write requests issued to the tape drive.",
        true,
        "write_cnt",
        1.0,
    ),
    (
        "node_tape_write_time_seconds_total",
        "The amount of time spent waiting for write requests to complete.",
        true,
        "write_ns",
        0.000000001,
    ),
];

impl Collector for TapestatsCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let tapes = match read_class(&self.class) {
            Ok(tapes) => tapes,
            Err(ReadError::Absent(message)) => {
                return Err(
                    NoData(format!("scsi_tape stats not found, skipping: {message}")).into(),
                );
            }
            Err(ReadError::Failed(error)) => {
                return Err(error.context("error obtaining SCSITape class info"));
            }
        };
        for (name, help, counter, file, scale) in METRICS {
            let mut family = if counter {
                MetricFamily::counter(name, help)
            } else {
                MetricFamily::gauge(name, help)
            };
            for (device, counters) in &tapes {
                if self.ignored.is_match(device) {
                    continue;
                }
                // As Go: float64(ns) * 0.000000001, one rounding each.
                family.push(
                    [("device", device.as_str())],
                    counters.get(file) as f64 * scale,
                );
            }
            out.push(family);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tapestats-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn tape(class: &Path, name: &str, values: &[(&str, &str)]) {
        let stats = class.join(name).join("stats");
        std::fs::create_dir_all(&stats).unwrap();
        for (file, value) in values {
            std::fs::write(stats.join(file), format!("{value}\n")).unwrap();
        }
    }

    fn collector(class: &Path, ignored: &str) -> TapestatsCollector {
        TapestatsCollector {
            class: class.to_owned(),
            ignored: Regex::new(ignored).unwrap(),
        }
    }

    #[test]
    fn drives_and_scaling() {
        let class = temp("ok");
        tape(
            &class,
            "st0",
            &[
                ("io_ns", "9247011087720"),
                ("read_cnt", "0x10"),
                ("in_flight", "1"),
            ],
        );
        tape(&class, "st1", &[("write_ns", "5")]);
        // Other nodes of a drive are not read, even broken.
        tape(&class, "nst0", &[("io_ns", "x")]);
        tape(&class, "st0a", &[("io_ns", "x")]);
        let tapes = read_class(&class).ok().unwrap();
        assert_eq!(tapes.len(), 2);
        assert_eq!(tapes[0].1.get("read_cnt"), 16);
        assert_eq!(tapes[1].1.get("io_ns"), 0);

        let mut out = Vec::new();
        collector(&class, "^st1$").update(&mut out).unwrap();
        assert_eq!(out.len(), 10);
        let io_time = out
            .iter()
            .find(|f| f.name == "node_tape_io_time_seconds_total")
            .unwrap();
        assert_eq!(io_time.metrics.len(), 1);
        assert_eq!(
            io_time.metrics[0].value,
            crate::metrics::Value::Scalar(9247.01108772)
        );
        // An empty pattern ignores everything, as Go's regexp.
        let mut out = Vec::new();
        collector(&class, "").update(&mut out).unwrap();
        assert!(out.iter().all(|f| f.metrics.is_empty()));
        std::fs::remove_dir_all(&class).unwrap();
    }

    #[test]
    fn missing_and_malformed() {
        let class = temp("bad");
        let error = collector(&class, "^$").update(&mut Vec::new()).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_some(), "{error:#}");
        // A drive without stats/: no data, as upstream.
        std::fs::create_dir_all(class.join("st0")).unwrap();
        let error = collector(&class, "^$").update(&mut Vec::new()).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_some(), "{error:#}");
        for bad in ["-1", "", "12a", "18446744073709551616"] {
            tape(&class, "st0", &[("read_ns", bad)]);
            let mut out = Vec::new();
            let error = collector(&class, "^$").update(&mut out).unwrap_err();
            assert!(error.downcast_ref::<NoData>().is_none(), "{error:#}");
            assert!(format!("{error:#}").contains("read_ns"), "{error:#}");
            assert!(out.is_empty());
        }
        // Files it does not know are read but not parsed; a directory cannot be read.
        tape(&class, "st0", &[("read_ns", "1"), ("uevent", "garbage")]);
        collector(&class, "^$").update(&mut Vec::new()).unwrap();
        std::fs::create_dir_all(class.join("st0/stats/power")).unwrap();
        assert!(collector(&class, "^$").update(&mut Vec::new()).is_err());
        std::fs::remove_dir_all(&class).unwrap();
    }
}
