//! `mdadm`: Linux software RAID arrays, from /proc/mdstat (disks, state, blocks, sync progress,
//! as procfs' `MDStat`) and /sys/block/md*/md (raid disks and degraded count, as procfs'
//! `sysfs.Mdraids`, added in node_exporter 1.10).
use std::{
    io::ErrorKind,
    path::{Path, PathBuf},
    sync::{Arc, LazyLock},
};

use anyhow::Context as _;
use regex::Regex;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec, NoData},
    metrics::MetricFamily,
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "mdadm",
    default_enabled: true,
    flags: &[],
    kernel: None,
    build,
};

struct MdadmCollector {
    mdstat: read::KeptFile,
    sys_block: PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(MdadmCollector {
        mdstat: read::KeptFile::new(context.proc_path("mdstat")),
        sys_block: context.sys_path("block"),
    }))
}

/// One array of /proc/mdstat, the fields node_exporter exports.
#[derive(Debug, PartialEq)]
struct MdStat {
    name: String,
    /// "active", "inactive", "recovering", "reshaping", "checking", "resyncing" (or whatever
    /// the third word of the device line is, e.g. "active" of "active (auto-read-only)").
    activity_state: String,
    disks_active: i64,
    disks_total: i64,
    disks_failed: i64,
    disks_spare: i64,
    blocks_total: i64,
    blocks_synced: i64,
}

/// One array of /sys/block/md*/md.
#[derive(Debug, PartialEq)]
struct MdRaid {
    device: String,
    disks: u64,
    degraded_disks: u64,
}

// `[0-9]`, not `\d`: Go's `\d` is ASCII only.
static STATUS_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"([0-9]+) blocks .*\[([0-9]+)/([0-9]+)\] \[([U_]+)\]").expect("valid regex")
});
static RECOVERY_BLOCKS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\(([0-9]+)/([0-9]+)\)").expect("valid regex"));
static RECOVERY_PCT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"= (.+)%").expect("valid regex"));
static RECOVERY_FINISH: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"finish=(.+)min").expect("valid regex"));
static RECOVERY_SPEED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"speed=(.+)[A-Z]").expect("valid regex"));

/// Parses /proc/mdstat as procfs' `parseMDStat`: a device line ("md0 : active raid1 ..."), a
/// status line, an optional bitmap line, then an optional sync line.
fn parse_mdstat(text: &str) -> anyhow::Result<Vec<MdStat>> {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut arrays = Vec::new();
    for (i, &line) in lines.iter().enumerate() {
        if line.trim().is_empty()
            || line.starts_with(' ')
            || line.starts_with("Personalities")
            || line.starts_with("unused")
        {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 3 {
            anyhow::bail!("not enough fields in mdline (expected at least 3): {line}");
        }
        let name = fields[0];
        let mut state = fields[2].to_owned();
        if lines.len() <= i + 3 {
            anyhow::bail!("error parsing {name:?}: too few lines for md device");
        }
        // Failed disks have the suffix (F), spares (S).
        let failed = line.matches("(F)").count() as i64;
        let spare = line.matches("(S)").count() as i64;
        let (active, total, size) = eval_status_line(line, lines[i + 1])
            .with_context(|| format!("error parsing md device lines of {name}"))?;

        let mut sync_line = lines[i + 2];
        if sync_line.contains("bitmap") {
            sync_line = lines[i + 3];
        }
        let recovering = sync_line.contains("recovery");
        let reshaping = sync_line.contains("reshape");
        let resyncing = sync_line.contains("resync");
        let checking = sync_line.contains("check");
        let mut synced = size;
        if recovering || reshaping || resyncing || checking {
            state = if recovering {
                "recovering"
            } else if reshaping {
                "reshaping"
            } else if checking {
                "checking"
            } else {
                "resyncing"
            }
            .to_owned();
            // resync=PENDING or resync=DELAYED: nothing synced yet.
            synced = if sync_line.contains("PENDING") || sync_line.contains("DELAYED") {
                0
            } else {
                eval_recovery_line(sync_line)
                    .with_context(|| format!("error parsing sync line in md device {name:?}"))?
            };
        }
        arrays.push(MdStat {
            name: name.to_owned(),
            activity_state: state,
            disks_active: active,
            disks_total: total,
            disks_failed: failed,
            disks_spare: spare,
            blocks_total: size,
            blocks_synced: synced,
        });
    }
    Ok(arrays)
}

/// (active disks, total disks, size in blocks) from the device and status lines.
fn eval_status_line(device_line: &str, status_line: &str) -> anyhow::Result<(i64, i64, i64)> {
    let size: i64 = status_line
        .split_whitespace()
        .next()
        .with_context(|| format!("unexpected statusLine {status_line:?}"))?
        .parse()
        .with_context(|| format!("unexpected statusLine {status_line:?}"))?;
    if device_line.contains("raid0") || device_line.contains("linear") {
        // Only disks have a number in [] on the device line.
        let total = device_line.matches('[').count() as i64;
        return Ok((total, total, size));
    }
    if device_line.contains("inactive") {
        return Ok((0, 0, size));
    }
    let captures = STATUS_LINE
        .captures(status_line)
        .with_context(|| format!("couldn't find all the substring matches: {status_line}"))?;
    let number = |index: usize| -> anyhow::Result<i64> {
        captures[index]
            .parse()
            .with_context(|| format!("unexpected statusLine {status_line:?}"))
    };
    Ok((number(3)?, number(2)?, size))
}

/// The synced blocks of a sync line ("[==>...]  recovery = 12.6% (132096/1046528)
/// finish=3.0min speed=5000K/sec"); like procfs, the percentage, finish time and speed must
/// parse too.
fn eval_recovery_line(line: &str) -> anyhow::Result<i64> {
    let blocks = RECOVERY_BLOCKS
        .captures(line)
        .with_context(|| format!("unexpected recoveryLine: {line}"))?;
    let synced: i64 = blocks[1]
        .parse()
        .with_context(|| format!("error parsing int from recoveryLine {line:?}"))?;
    let _: i64 = blocks[2]
        .parse()
        .with_context(|| format!("error parsing int from recoveryLine {line:?}"))?;
    for (regex, what) in [
        (&*RECOVERY_PCT, "percentage"),
        (&*RECOVERY_FINISH, "est. finish time"),
        (&*RECOVERY_SPEED, "speed"),
    ] {
        let captures = regex
            .captures(line)
            .with_context(|| format!("unexpected recoveryLine matching {what}: {line}"))?;
        let _: f64 = captures[1]
            .trim()
            .parse()
            .with_context(|| format!("error parsing float from recoveryLine {line:?}"))?;
    }
    Ok(synced)
}

/// Reads /sys/block/md*/md as procfs' `sysfs.Mdraids`: every array must have level,
/// array_state, metadata_version, raid_disks, uuid and dev-*/state; raid0/4/5/6/10 also
/// chunk_size; raid1/4/5/6/10 also degraded, sync_action and sync_completed.
fn read_mdraids(sys_block: &Path) -> Result<Vec<MdRaid>, MdRaidError> {
    // filepath.Glob("md*/md"): an unreadable or missing directory matches nothing.
    let devices: Vec<String> = read::glob_names(sys_block, |name| name.starts_with(b"md"))
        .unwrap_or_default()
        .into_iter()
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| std::fs::symlink_metadata(sys_block.join(name).join("md")).is_ok())
        .collect();

    let mut raids = Vec::new();
    for device in devices {
        let dir = sys_block.join(&device).join("md");
        let text = |name: &str| -> Result<String, MdRaidError> {
            let path = dir.join(name);
            read::sys_attribute(&path).map_err(|error| MdRaidError::io(&path, error))
        };
        let uint = |name: &str| -> Result<u64, MdRaidError> {
            let value = text(name)?;
            value.parse().map_err(|_| {
                MdRaidError::Parse(format!(
                    "{}: bad number {value:?}",
                    dir.join(name).display()
                ))
            })
        };
        let level = text("level")?;
        text("array_state")?;
        text("metadata_version")?;
        let disks = uint("raid_disks")?;
        text("uuid")?;
        let components = read::glob(&dir, |name| name.starts_with(b"dev-")).unwrap_or_default();
        for component in components {
            let path = component.join("state");
            read::sys_attribute(&path).map_err(|error| MdRaidError::io(&path, error))?;
        }
        if matches!(
            level.as_str(),
            "raid0" | "raid4" | "raid5" | "raid6" | "raid10"
        ) {
            uint("chunk_size")?;
        }
        let mut degraded_disks = 0;
        if matches!(
            level.as_str(),
            "raid1" | "raid4" | "raid5" | "raid6" | "raid10"
        ) {
            degraded_disks = uint("degraded")?;
            text("sync_action")?;
            let completed = text("sync_completed")?;
            if completed != "none" && parse_sync_completed(&completed).is_none() {
                return Err(MdRaidError::Parse(format!(
                    "{}: bad sync_completed {completed:?}",
                    dir.join("sync_completed").display()
                )));
            }
        }
        raids.push(MdRaid {
            device,
            disks,
            degraded_disks,
        });
    }
    Ok(raids)
}

/// "<done> / <total>" sectors, as procfs' `fmt.Sscanf(val, "%d / %d")`.
fn parse_sync_completed(value: &str) -> Option<(u64, u64)> {
    let (done, total) = value.split_once('/')?;
    Some((done.trim().parse().ok()?, total.trim().parse().ok()?))
}

#[derive(Debug)]
enum MdRaidError {
    /// A file missing: node_exporter's ErrNoData.
    NotFound(String),
    Parse(String),
}

impl MdRaidError {
    fn io(path: &Path, error: std::io::Error) -> Self {
        let message = format!("reading {}: {error}", path.display());
        if error.kind() == ErrorKind::NotFound {
            Self::NotFound(message)
        } else {
            Self::Parse(message)
        }
    }
}

impl Collector for MdadmCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let text = self.mdstat.optional()?.ok_or_else(|| {
            NoData(format!(
                "Not collecting mdstat, file does not exist: {}",
                self.mdstat.path().display()
            ))
        })?;
        let arrays = parse_mdstat(&text)
            .with_context(|| format!("error parsing mdstatus {}", self.mdstat.path().display()))?;

        let mut disks_required =
            MetricFamily::gauge("node_md_disks_required", "Total number of disks of device.");
        let mut disks = MetricFamily::gauge(
            "node_md_disks",
            "Number of active/failed/spare disks of device.",
        );
        let mut state = MetricFamily::gauge("node_md_state", "Indicates the state of md-device.");
        let mut blocks = MetricFamily::gauge("node_md_blocks", "Total number of blocks on device.");
        let mut blocks_synced = MetricFamily::gauge(
            "node_md_blocks_synced",
            "Number of blocks synced on device.",
        );
        for array in &arrays {
            let device = array.name.as_str();
            disks_required.push([("device", device)], array.disks_total as f64);
            for (label, value) in [
                ("active", array.disks_active),
                ("failed", array.disks_failed),
                ("spare", array.disks_spare),
            ] {
                disks.push([("device", device), ("state", label)], value as f64);
            }
            // The label and procfs' activity state differ for resync and check; a reshaping
            // array has no label of its own (all five are 0), as upstream.
            for (label, activity) in [
                ("active", "active"),
                ("inactive", "inactive"),
                ("recovering", "recovering"),
                ("resync", "resyncing"),
                ("check", "checking"),
            ] {
                let value = if array.activity_state == activity {
                    1.0
                } else {
                    0.0
                };
                state.push([("device", device), ("state", label)], value);
            }
            blocks.push([("device", device)], array.blocks_total as f64);
            blocks_synced.push([("device", device)], array.blocks_synced as f64);
        }
        if !arrays.is_empty() {
            out.extend([disks_required, disks, state, blocks, blocks_synced]);
        }

        let raids = match read_mdraids(&self.sys_block) {
            Ok(raids) => raids,
            Err(MdRaidError::NotFound(message)) => {
                return Err(NoData(format!("Not collecting mdraids: {message}")).into());
            }
            Err(MdRaidError::Parse(message)) => {
                anyhow::bail!("error parsing mdraids: {message}")
            }
        };
        if !raids.is_empty() {
            let mut raid_disks =
                MetricFamily::gauge("node_md_raid_disks", "Number of raid disks on device.");
            let mut degraded =
                MetricFamily::gauge("node_md_degraded", "Number of degraded disks on device.");
            for raid in &raids {
                raid_disks.push([("device", raid.device.as_str())], raid.disks as f64);
                degraded.push(
                    [("device", raid.device.as_str())],
                    raid.degraded_disks as f64,
                );
            }
            out.extend([raid_disks, degraded]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEALTHY: &str = "Personalities : [raid1]
md0 : active raid1 sdb1[1] sda1[0]
      1046528 blocks super 1.2 [2/2] [UU]
      bitmap: 0/1 pages [0KB], 65536KB chunk

unused devices: <none>
";

    #[test]
    fn healthy_array_with_bitmap() {
        let arrays = parse_mdstat(HEALTHY).unwrap();
        assert_eq!(
            arrays,
            [MdStat {
                name: "md0".to_owned(),
                activity_state: "active".to_owned(),
                disks_active: 2,
                disks_total: 2,
                disks_failed: 0,
                disks_spare: 0,
                blocks_total: 1046528,
                blocks_synced: 1046528,
            }]
        );
    }

    #[test]
    fn no_arrays() {
        let text = "Personalities : \nunused devices: <none>\n";
        assert!(parse_mdstat(text).unwrap().is_empty());
        assert!(parse_mdstat("").unwrap().is_empty());
    }

    #[test]
    fn sync_states() {
        let text = "Personalities : [raid1] [raid5]
md1 : active raid1 sdd1[2](F) sdc1[0] sde1[3](S)
      2095104 blocks super 1.2 [2/1] [U_]
      [=====>...............]  recovery = 27.5% (576384/2095104) finish=1.2min speed=10240K/sec

md2 : active raid5 sdh1[2] sdg1[1] sdf1[0]
      2093056 blocks super 1.2 level 5, 512k chunk, algorithm 2 [3/3] [UUU]
      [>....................]  reshape =  1.0% (10240/1046528) finish=10.0min speed=1024K/sec

md3 : active raid1 sdj1[1] sdi1[0]
      1046528 blocks super 1.2 [2/2] [UU]
      \tresync=DELAYED

md4 : active raid1 sdl1[1] sdk1[0]
      1046528 blocks super 1.2 [2/2] [UU]
      bitmap: 1/1 pages [4KB], 65536KB chunk
      [==>..................]  check = 12.6% (132096/1046528) finish=3.0min speed=5000K/sec

";
        let arrays = parse_mdstat(text).unwrap();
        let summary: Vec<_> = arrays
            .iter()
            .map(|a| {
                (
                    a.name.as_str(),
                    a.activity_state.as_str(),
                    a.disks_failed,
                    a.disks_spare,
                    a.blocks_synced,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("md1", "recovering", 1, 1, 576384),
                ("md2", "reshaping", 0, 0, 10240),
                ("md3", "resyncing", 0, 0, 0),
                ("md4", "checking", 0, 0, 132096),
            ]
        );
    }

    #[test]
    fn raid0_linear_and_inactive() {
        let text = "md5 : active raid0 sdr1[1] sdq1[0]
      4188160 blocks super 1.2 512k chunks

md6 : inactive sdv1[1](S) sdu1[0](S)
      2093056 blocks super 1.2

";
        let arrays = parse_mdstat(text).unwrap();
        assert_eq!((arrays[0].disks_active, arrays[0].disks_total), (2, 2));
        assert_eq!(arrays[1].activity_state, "inactive");
        assert_eq!((arrays[1].disks_total, arrays[1].disks_spare), (0, 2));
        assert_eq!(arrays[1].blocks_total, 2093056);
    }

    #[test]
    fn malformed_input_is_an_error() {
        // Truncated after the device line.
        assert!(parse_mdstat("md0 : active raid1 sda1[0]\n").is_err());
        // Too few fields on the device line.
        assert!(parse_mdstat("md0 :\n  1 blocks\n\n\n").is_err());
        // Bad size.
        assert!(
            parse_mdstat("md0 : active raid1 sda1[0]\n      x blocks [1/1] [U]\n\n\n").is_err()
        );
        // No [n/m] [U_] on a raid1 status line.
        assert!(parse_mdstat("md0 : active raid1 sda1[0]\n      10 blocks\n\n\n").is_err());
        // A sync line without the block counts or speed.
        let text = "md0 : active raid1 sda1[0]\n      10 blocks [1/1] [U]\n      resync = 1.0%\n\n";
        assert!(parse_mdstat(text).is_err());
        let text = "md0 : active raid1 sda1[0]\n      10 blocks [1/1] [U]\n      resync = 1.0% (1/10) finish=1.0min\n\n";
        assert!(parse_mdstat(text).is_err());
    }

    #[test]
    fn sync_completed() {
        assert_eq!(parse_sync_completed("1 / 4"), Some((1, 4)));
        assert_eq!(parse_sync_completed("delayed"), None);
    }

    #[test]
    fn missing_mdstat_is_no_data() {
        let collector = MdadmCollector {
            mdstat: read::KeptFile::new("/nonexistent/mdstat".into()),
            sys_block: PathBuf::from("/nonexistent/block"),
        };
        let mut out = Vec::new();
        let error = collector.update(&mut out).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_some());
        assert!(out.is_empty());
    }

    #[test]
    fn missing_sysfs_attribute_is_no_data_after_mdstat_families() {
        let dir = std::env::temp_dir().join(format!("mdadm-test-{}", std::process::id()));
        let md = dir.join("block/md0/md");
        std::fs::create_dir_all(&md).unwrap();
        std::fs::write(dir.join("mdstat"), HEALTHY).unwrap();
        std::fs::write(md.join("level"), "raid1\n").unwrap();
        let collector = MdadmCollector {
            mdstat: read::KeptFile::new(dir.join("mdstat")),
            sys_block: dir.join("block"),
        };
        let mut out = Vec::new();
        let error = collector.update(&mut out).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_some(), "{error:#}");
        assert_eq!(out.len(), 5);

        // A bad number is an error naming the file.
        for (name, value) in [
            ("array_state", "clean"),
            ("metadata_version", "1.2"),
            ("raid_disks", "two"),
            ("uuid", "x"),
        ] {
            std::fs::write(md.join(name), value).unwrap();
        }
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_none());
        assert!(format!("{error:#}").contains("raid_disks"), "{error:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
