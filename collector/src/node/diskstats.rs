//! `diskstats`: block device I/O counters from /proc/diskstats (14, 18 or 20 fields), with
//! device identity from udev (`<udev>/b<major>:<minor>`) and /sys/block/<dev>/{queue,slaves}.
use std::{
    collections::HashMap,
    ffi::CStr,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    flags::{DeviceFilter, FlagSpec},
    metrics::MetricFamily,
    read,
};

const EXCLUDE: &str = "collector.diskstats.device-exclude";
const INCLUDE: &str = "collector.diskstats.device-include";
const IGNORED: &str = "collector.diskstats.ignored-devices";

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "diskstats",
    default_enabled: true,
    flags: &[
        FlagSpec::value(
            EXCLUDE,
            Some(r"^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$"),
            "Regexp of diskstats devices to exclude (mutually exclusive to device-include).",
        ),
        FlagSpec::value(
            INCLUDE,
            None,
            "Regexp of diskstats devices to include (mutually exclusive to device-exclude).",
        ),
        FlagSpec::value(
            IGNORED,
            None,
            "DEPRECATED: Use collector.diskstats.device-exclude",
        )
        .hidden(),
    ],
    kernel: None,
    build,
};

/// Milliseconds in /proc/diskstats.
const SECONDS_PER_TICK: f64 = 1.0 / 1000.0;
/// /proc/diskstats counts 512-byte sectors whatever the device's block size.
const UNIX_SECTOR_SIZE: f64 = 512.0;

/// The stat families, in /proc/diskstats column order (after major, minor, name), with the
/// scale applied to the raw value.
const STATS: [(&str, &str, bool, f64); 17] = [
    (
        "reads_completed_total",
        "The total number of reads completed successfully.",
        true,
        1.0,
    ),
    (
        "reads_merged_total",
        "The total number of reads merged.",
        true,
        1.0,
    ),
    (
        "read_bytes_total",
        "The total number of bytes read successfully.",
        true,
        UNIX_SECTOR_SIZE,
    ),
    (
        "read_time_seconds_total",
        "The total number of seconds spent by all reads.",
        true,
        SECONDS_PER_TICK,
    ),
    (
        "writes_completed_total",
        "The total number of writes completed successfully.",
        true,
        1.0,
    ),
    (
        "writes_merged_total",
        "The number of writes merged.",
        true,
        1.0,
    ),
    (
        "written_bytes_total",
        "The total number of bytes written successfully.",
        true,
        UNIX_SECTOR_SIZE,
    ),
    (
        "write_time_seconds_total",
        "This is the total number of seconds spent by all writes.",
        true,
        SECONDS_PER_TICK,
    ),
    (
        "io_now",
        "The number of I/Os currently in progress.",
        false,
        1.0,
    ),
    (
        "io_time_seconds_total",
        "Total seconds spent doing I/Os.",
        true,
        SECONDS_PER_TICK,
    ),
    (
        "io_time_weighted_seconds_total",
        "The weighted # of seconds spent doing I/Os.",
        true,
        SECONDS_PER_TICK,
    ),
    (
        "discards_completed_total",
        "The total number of discards completed successfully.",
        true,
        1.0,
    ),
    (
        "discards_merged_total",
        "The total number of discards merged.",
        true,
        1.0,
    ),
    (
        "discarded_sectors_total",
        "The total number of sectors discarded successfully.",
        true,
        1.0,
    ),
    (
        "discard_time_seconds_total",
        "This is the total number of seconds spent by all discards.",
        true,
        SECONDS_PER_TICK,
    ),
    (
        "flush_requests_total",
        "The total number of flush requests completed successfully",
        true,
        1.0,
    ),
    (
        "flush_requests_time_seconds_total",
        "This is the total number of seconds spent by all flush requests.",
        true,
        SECONDS_PER_TICK,
    ),
];

/// udev properties turned into `node_disk_ata_*` gauges when `ID_ATA` is set.
const ATA: [(&str, &str, &str); 3] = [
    (
        "ID_ATA_WRITE_CACHE",
        "node_disk_ata_write_cache",
        "ATA disk has a write cache.",
    ),
    (
        "ID_ATA_WRITE_CACHE_ENABLED",
        "node_disk_ata_write_cache_enabled",
        "ATA disk has its write cache enabled.",
    ),
    (
        "ID_ATA_ROTATION_RATE_RPM",
        "node_disk_ata_rotation_rate_rpm",
        "ATA disk rotation rate in RPMs (0 for SSDs).",
    ),
];

/// The /sys/block/<dev>/queue files procfs' `SysBlockDeviceQueueStats` reads; when any is
/// missing or unparsable upstream gets zeroed queue stats, so `rotational` is reported as 0.
const QUEUE_UINT_FILES: &[&CStr] = &[
    c"add_random",
    c"dax",
    c"discard_granularity",
    c"discard_max_hw_bytes",
    c"discard_max_bytes",
    c"hw_sector_size",
    c"io_poll",
    c"io_timeout",
    c"iostats",
    c"logical_block_size",
    c"max_hw_sectors_kb",
    c"max_integrity_segments",
    c"max_sectors_kb",
    c"max_segments",
    c"max_segment_size",
    c"minimum_io_size",
    c"nomerges",
    c"nr_requests",
    c"optimal_io_size",
    c"physical_block_size",
    c"read_ahead_kb",
    c"rotational",
    c"rq_affinity",
    c"write_same_max_bytes",
    c"nr_zones",
    c"chunk_sectors",
    c"fua",
    c"max_discard_segments",
    c"write_zeroes_max_bytes",
];
const QUEUE_INT_FILES: &[&CStr] = &[c"io_poll_delay", c"wbt_lat_usec"];
const QUEUE_TEXT_FILES: &[&CStr] = &[c"write_cache", c"zoned", c"scheduler"];

struct DiskstatsCollector {
    diskstats: read::KeptFile,
    sys_block: PathBuf,
    udev_data: PathBuf,
    filter: DeviceFilter,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    if !context.udev_data.is_dir() {
        tracing::error!(
            path = %context.udev_data.display(),
            "Failed to open directory, disabling udev device properties"
        );
    }
    Ok(Arc::new(DiskstatsCollector {
        diskstats: read::KeptFile::new(context.proc_path("diskstats")),
        sys_block: context.sys_path("block"),
        udev_data: context.udev_data.clone(),
        filter: DeviceFilter::from_flags(&context.flags, EXCLUDE, IGNORED, INCLUDE)?,
    }))
}

/// One /proc/diskstats line.
#[derive(Debug, PartialEq)]
struct DiskLine {
    major: u32,
    minor: u32,
    name: String,
    /// The counters present (11, 15 or 17 of them), in column order.
    stats: Vec<u64>,
}

/// Parses /proc/diskstats as procfs does (`Sscanf` of up to 20 fields): lines with fewer than
/// 14 fields are skipped, a field that is not a number fails the whole file.
fn parse_diskstats(text: &str, path: &Path) -> anyhow::Result<Vec<DiskLine>> {
    let mut disks = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let at = || format!("{} line {}", path.display(), index + 1);
        let tokens: Vec<&str> = line.split_whitespace().take(20).collect();
        if tokens.len() < 14 {
            // Still as Sscanf: a non-number before the end is an error, a short line is not.
            for (i, token) in tokens.iter().enumerate() {
                if i != 2 && token.parse::<u64>().is_err() {
                    anyhow::bail!("{}: bad number {token:?}", at());
                }
            }
            continue;
        }
        let major = tokens[0]
            .parse()
            .with_context(|| format!("{}: bad major {:?}", at(), tokens[0]))?;
        let minor = tokens[1]
            .parse()
            .with_context(|| format!("{}: bad minor {:?}", at(), tokens[1]))?;
        let stats = tokens[3..]
            .iter()
            .map(|token| {
                token
                    .parse::<u64>()
                    .with_context(|| format!("{}: bad number {token:?}", at()))
            })
            .collect::<anyhow::Result<Vec<u64>>>()?;
        disks.push(DiskLine {
            major,
            minor,
            name: tokens[2].to_owned(),
            stats,
        });
    }
    Ok(disks)
}

/// The `E:NAME=value` properties of a udev data file; empty when it cannot be read.
fn parse_udev(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("E:"))
        .filter_map(|property| property.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

impl DiskstatsCollector {
    fn udev(&self, major: u32, minor: u32) -> HashMap<String, String> {
        let path = self.udev_data.join(format!("b{major}:{minor}"));
        match std::fs::read_to_string(&path) {
            Ok(text) => parse_udev(&text),
            Err(error) => {
                tracing::debug!(path = %path.display(), %error, "Failed to parse udev info");
                HashMap::new()
            }
        }
    }

    /// `queue/rotational`, or 0 when any queue file procfs reads is missing (as upstream).
    fn rotational(&self, device: &str) -> u64 {
        let Ok(queue) = read::SysDir::open(&self.sys_block.join(device).join("queue")) else {
            return 0;
        };
        let read = |file: &CStr| queue.attribute(file).ok();
        // `rotational` is one of the unsigned files: keep its value from that pass.
        let mut rotational = 0;
        let uints_ok = QUEUE_UINT_FILES.iter().all(|f| {
            let value = read(f).and_then(|v| v.parse::<u64>().ok());
            if *f == c"rotational" {
                rotational = value.unwrap_or(0);
            }
            value.is_some()
        });
        let ints_ok = QUEUE_INT_FILES
            .iter()
            .all(|f| read(f).is_some_and(|v| v.parse::<i64>().is_ok()));
        let texts_ok = QUEUE_TEXT_FILES.iter().all(|f| read(f).is_some());
        if !(uints_ok && ints_ok && texts_ok) {
            return 0;
        }
        rotational
    }

    fn backing_devices(&self, device: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.sys_block.join(device).join("slaves")) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Collector for DiskstatsCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let text = self
            .diskstats
            .to_string()
            .context("couldn't get diskstats")?;
        let disks =
            parse_diskstats(&text, self.diskstats.path()).context("couldn't get diskstats")?;

        let mut info = MetricFamily::gauge("node_disk_info", "Info of /sys/block/<block_device>.");
        let mut stats: Vec<MetricFamily> = STATS
            .iter()
            .map(|(name, help, counter, _)| {
                let name = format!("node_disk_{name}");
                if *counter {
                    MetricFamily::counter(name, *help)
                } else {
                    MetricFamily::gauge(name, *help)
                }
            })
            .collect();
        let mut filesystem =
            MetricFamily::gauge("node_disk_filesystem_info", "Info about disk filesystem.");
        let mut device_mapper = MetricFamily::gauge(
            "node_disk_device_mapper_info",
            "Info about disk device mapper.",
        );
        let mut backing = MetricFamily::gauge(
            "node_disk_device_mapper_backing_device_info",
            "Info about the underlying block devices of a device mapper device.",
        );
        let mut ata: Vec<MetricFamily> = ATA
            .iter()
            .map(|(_, name, help)| MetricFamily::gauge(*name, *help))
            .collect();

        for disk in disks {
            let dev = disk.name.as_str();
            if self.filter.ignored(dev) {
                continue;
            }
            let udev = self.udev(disk.major, disk.minor);
            let get = |key: &str| udev.get(key).map(String::as_str).unwrap_or("");
            // The serial printed on the label, else ID_SERIAL_SHORT, else ID_SERIAL (virtio).
            let serial = [
                get("SCSI_IDENT_SERIAL"),
                get("ID_SERIAL_SHORT"),
                get("ID_SERIAL"),
            ]
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or("");
            info.push(
                [
                    ("device", dev.to_owned()),
                    ("major", disk.major.to_string()),
                    ("minor", disk.minor.to_string()),
                    ("path", get("ID_PATH").to_owned()),
                    ("wwn", get("ID_WWN").to_owned()),
                    ("model", get("ID_MODEL").to_owned()),
                    ("serial", serial.to_owned()),
                    ("revision", get("ID_REVISION").to_owned()),
                    ("rotational", format!("{:b}", self.rotational(dev))),
                ],
                1.0,
            );
            for ((family, (_, _, _, scale)), raw) in stats.iter_mut().zip(&STATS).zip(&disk.stats) {
                family.push([("device", dev)], *raw as f64 * scale);
            }
            if !get("ID_FS_TYPE").is_empty() {
                filesystem.push(
                    [
                        ("device", dev),
                        ("type", get("ID_FS_TYPE")),
                        ("usage", get("ID_FS_USAGE")),
                        ("uuid", get("ID_FS_UUID")),
                        ("version", get("ID_FS_VERSION")),
                    ],
                    1.0,
                );
            }
            if !get("DM_NAME").is_empty() {
                device_mapper.push(
                    [
                        ("device", dev),
                        ("name", get("DM_NAME")),
                        ("uuid", get("DM_UUID")),
                        ("vg_name", get("DM_VG_NAME")),
                        ("lv_name", get("DM_LV_NAME")),
                        ("lv_layer", get("DM_LV_LAYER")),
                    ],
                    1.0,
                );
                for backing_device in self.backing_devices(dev) {
                    backing.push(
                        [("device", dev), ("backing_device", backing_device.as_str())],
                        1.0,
                    );
                }
            }
            if !get("ID_ATA").is_empty() {
                for (family, (key, _, _)) in ata.iter_mut().zip(&ATA) {
                    let Some(value) = udev.get(*key) else {
                        tracing::debug!(attribute = key, "Udev attribute does not exist");
                        continue;
                    };
                    match value.parse::<f64>() {
                        Ok(value) => family.push([("device", dev)], value),
                        Err(error) => {
                            tracing::error!(device = dev, attribute = key, %error, "Failed to parse ATA value")
                        }
                    }
                }
            }
        }
        out.push(info);
        out.extend(stats);
        out.push(filesystem);
        out.push(device_mapper);
        out.push(backing);
        out.extend(ata);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<Vec<DiskLine>> {
        parse_diskstats(text, Path::new("/proc/diskstats"))
    }

    #[test]
    fn reads_14_18_and_20_field_lines() {
        let disks = parse(
            "   8       0 sda 1 2 3 4 5 6 7 8 9 10 11\n\
             8 16 sdb 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15\n\
             259 0 nvme0n1 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17\n\
             259 1 nvme0n2 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19\n",
        )
        .unwrap();
        let counts: Vec<usize> = disks.iter().map(|d| d.stats.len()).collect();
        assert_eq!(counts, [11, 15, 17, 17]);
        assert_eq!(disks[2].major, 259);
        assert_eq!(disks[2].name, "nvme0n1");
    }

    #[test]
    fn short_lines_are_skipped_bad_numbers_fail() {
        assert!(parse("8 0 sda 1 2 3\n\n").unwrap().is_empty());
        let error = parse("8 0 sda 1 2 3 4 5 6 7 8 x 10 11\n").unwrap_err();
        let message = format!("{error:#}");
        assert!(message.contains("/proc/diskstats line 1"), "{message}");
        assert!(parse("garbage\n").is_err());
        assert!(parse("8 0 sda 1 2 3 4 5 6 7 8 9 10 18446744073709551616\n").is_err());
    }

    #[test]
    fn udev_properties() {
        let udev = parse_udev("S:disk/by-id/x\nE:ID_MODEL=Disk A=B\nE:BROKEN\nL:0\n");
        assert_eq!(udev.get("ID_MODEL").map(String::as_str), Some("Disk A=B"));
        assert_eq!(udev.len(), 1);
    }
}
