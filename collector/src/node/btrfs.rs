//! `btrfs`: Btrfs filesystem statistics from /sys/fs/btrfs/<uuid>/ (label, global reserve,
//! commit statistics, space allocation per block group type and profile, device sizes), as
//! procfs' `btrfs` package reads them, plus per-device error counters read with the
//! `BTRFS_IOC_FS_INFO`, `BTRFS_IOC_DEV_INFO` and `BTRFS_IOC_GET_DEV_STATS` ioctls on each
//! mounted btrfs filesystem (found in `<procfs>/1/mountinfo`, opened under `--path.rootfs`),
//! as node_exporter does through github.com/dennwc/btrfs.
//!
//! A filesystem whose mount point cannot be opened or queried (no permission, not mounted in
//! this mount namespace) gets the sysfs device sizes only, labelled `device`; one queried by
//! ioctl gets `device_size_bytes`, `device_unused_bytes` and `device_errors_total` labelled
//! `device` and `btrfs_dev_uuid` instead. The two are matched on the filesystem UUID.
//!
//! procfs' reader keeps one sticky error per filesystem, which each allocation directory's
//! reader *replaces*: an unreadable file before `allocation/system` zeroes the values read after
//! it but is then forgotten. [`Reader`] reproduces that exactly, so the values are upstream's for
//! any input. No `/sys/fs/btrfs` is no metrics with success 1 (upstream globs).
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    ffi::CString,
    fs::File,
    io::ErrorKind,
    os::{
        fd::AsRawFd as _,
        unix::{ffi::OsStrExt as _, fs::MetadataExt as _, fs::OpenOptionsExt as _},
    },
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    goparse,
    metrics::{MetricFamily, MetricType},
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "btrfs",
    default_enabled: true,
    flags: &[],
    kernel: None,
    build,
};

struct BtrfsCollector {
    /// `<sysfs>/fs/btrfs`.
    dir: PathBuf,
    procfs: PathBuf,
    rootfs: PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(BtrfsCollector {
        dir: context.sys_path("fs/btrfs"),
        procfs: context.procfs.clone(),
        rootfs: context.rootfs.clone(),
    }))
}

/// procfs' `SectorSize`: sysfs device sizes are in 512-byte sectors.
const SECTOR_SIZE: u64 = 512;

/// One filesystem, the values node_exporter exports.
#[derive(Debug, Default, PartialEq)]
struct Stats {
    uuid: String,
    label: String,
    global_rsv_size: u64,
    /// (commits, last, max, total commit milliseconds) from `commit_stats`.
    commits: u64,
    last_commit_ms: u64,
    max_commit_ms: u64,
    total_commit_ms: u64,
    /// `data`, `metadata` and `system`, in that order.
    allocation: [(&'static str, Allocation); 3],
    /// `devices/` entry → size in bytes.
    devices: BTreeMap<String, u64>,
}

#[derive(Debug, Default, PartialEq)]
struct Allocation {
    reserved: u64,
    /// Profile (`single`, `raid1`...) → usage.
    layouts: BTreeMap<String, Layout>,
}

#[derive(Debug, Default, PartialEq)]
struct Layout {
    used: u64,
    total: u64,
    ratio: f64,
}

/// procfs' btrfs `reader`: a directory and its sticky error. Once an error is set, values read
/// are 0 (strings are still read); a later error replaces an earlier one.
struct Reader {
    path: PathBuf,
    error: Option<anyhow::Error>,
    dev_count: usize,
}

impl Reader {
    fn new(path: PathBuf, dev_count: usize) -> Self {
        Self {
            path,
            error: None,
            dev_count,
        }
    }

    fn fail(&mut self, error: std::io::Error, path: &Path) {
        self.error = Some(anyhow::Error::new(error).context(format!("reading {}", path.display())));
    }

    /// `readFile`: a missing file is "".
    fn read_file(&mut self, name: &str) -> String {
        let path = self.path.join(name);
        match read::sys_read_file(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == ErrorKind::NotFound => String::new(),
            Err(error) => {
                self.fail(error, &path);
                String::new()
            }
        }
    }

    /// `readValue`: 0 once an error is set; text that is not a number is 0 too.
    fn read_value(&mut self, name: &str) -> u64 {
        let text = self.read_file(name);
        if self.error.is_some() {
            return 0;
        }
        goparse::parse_uint(&text, 10, 64).unwrap_or(0)
    }

    /// `listFiles`: any error (a missing directory too) is set.
    fn list_files(&mut self, name: &str) -> Vec<String> {
        let path = self.path.join(name);
        match read::sorted_names(&path) {
            Ok(names) => names,
            Err(error) => {
                self.fail(error, &path);
                Vec::new()
            }
        }
    }

    /// `readAllocationStats`: its own reader, whose error then replaces this one's.
    fn read_allocation(&mut self, name: &str) -> Allocation {
        let mut sub = Reader::new(self.path.join(name), self.dev_count);
        // Read in upstream's order, for the values an error zeroes.
        for file in ["bytes_may_use", "bytes_pinned", "bytes_readonly"] {
            sub.read_value(file);
        }
        let reserved = sub.read_value("bytes_reserved");
        for file in [
            "bytes_used",
            "disk_used",
            "disk_total",
            "flags",
            "total_bytes",
            "total_bytes_pinned",
        ] {
            sub.read_value(file);
        }
        let layouts = sub.read_layouts();
        self.error = sub.error;
        Allocation { reserved, layouts }
    }

    /// `readLayouts`: every subdirectory is a profile.
    fn read_layouts(&mut self) -> BTreeMap<String, Layout> {
        let entries = match read::read_dir_sorted(&self.path) {
            Ok(entries) => entries,
            Err(error) => {
                let path = self.path.clone();
                self.fail(error, &path);
                return BTreeMap::new();
            }
        };
        let mut layouts = BTreeMap::new();
        for entry in entries.iter().filter(|entry| entry.file_type.is_dir()) {
            let name = entry.name.to_string_lossy().into_owned();
            let total = self.read_value(&format!("{name}/total_bytes"));
            let used = self.read_value(&format!("{name}/used_bytes"));
            let ratio = self.ratio(&name);
            layouts.insert(name, Layout { used, total, ratio });
        }
        layouts
    }

    /// `calcRatio`: raw bytes per logical byte of a profile.
    fn ratio(&self, profile: &str) -> f64 {
        let devices = self.dev_count as f64;
        match profile {
            "single" | "raid0" => 1.0,
            "dup" | "raid1" | "raid10" => 2.0,
            "raid1c3" => 3.0,
            "raid1c4" => 4.0,
            "raid5" => devices / (devices - 1.0),
            "raid6" => devices / (devices - 2.0),
            _ => 0.0,
        }
    }

    /// `readCommitStats`: "<key> <value>" lines; a missing file (kernels before 6.0) is zeros.
    fn read_commit_stats(&mut self, stats: &mut Stats) {
        let path = self.path.join("commit_stats");
        let text = match read::capped_string(&path, read::NO_STAT_LIMIT) {
            Ok(text) => text,
            Err(error) => {
                if error.kind() != ErrorKind::NotFound {
                    self.fail(error, &path);
                }
                return;
            }
        };
        let lines = match goparse::text_lines(&text).collect::<Result<Vec<_>, _>>() {
            Ok(lines) => lines,
            Err(error) => {
                self.error =
                    Some(anyhow::Error::new(error).context("error scanning commit_stats file"));
                return;
            }
        };
        for line in lines {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [key, value] = fields[..] else {
                self.error = Some(anyhow::anyhow!("invalid commit_stats line {line:?}"));
                return;
            };
            let Some(value) = goparse::parse_uint(value, 10, 64) else {
                self.error = Some(anyhow::anyhow!(
                    "error parsing commit_stats line: invalid number {value:?}"
                ));
                return;
            };
            match key {
                "commits" => stats.commits = value,
                "last_commit_ms" => stats.last_commit_ms = value,
                "max_commit_ms" => stats.max_commit_ms = value,
                "total_commit_ms" => stats.total_commit_ms = value,
                _ => {}
            }
        }
    }

    /// `readFilesystemStats`, every read in upstream's order.
    fn read_filesystem(&mut self) -> Stats {
        let names = self.list_files("devices");
        let devices: BTreeMap<String, u64> = names
            .into_iter()
            .map(|name| {
                let sectors = self.read_value(&format!("devices/{name}/size"));
                (name, SECTOR_SIZE.wrapping_mul(sectors))
            })
            .collect();
        self.dev_count = devices.len();
        let label = self.read_file("label");
        let uuid = self.read_file("metadata_uuid");
        self.list_files("features");
        for file in [
            "clone_alignment",
            "nodesize",
            "quota_override",
            "sectorsize",
        ] {
            self.read_value(file);
        }
        self.read_value("allocation/global_rsv_reserved");
        let global_rsv_size = self.read_value("allocation/global_rsv_size");
        let allocation = [
            ("data", self.read_allocation("allocation/data")),
            ("metadata", self.read_allocation("allocation/metadata")),
            ("system", self.read_allocation("allocation/system")),
        ];
        let mut stats = Stats {
            uuid,
            label,
            global_rsv_size,
            allocation,
            devices,
            ..Stats::default()
        };
        self.read_commit_stats(&mut stats);
        stats
    }
}

/// procfs' btrfs `FS.Stats`: every `<sysfs>/fs/btrfs/*-*` entry, sorted; the directory name is
/// the UUID when `metadata_uuid` is empty or missing.
fn read_all(dir: &Path) -> anyhow::Result<Vec<Stats>> {
    // filepath.Glob: an unreadable or missing directory matches nothing.
    let names: Vec<String> = read::sorted_names(dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|name| name.contains('-'))
        .collect();
    let mut all = Vec::with_capacity(names.len());
    for name in names {
        let mut reader = Reader::new(dir.join(&name), 0);
        let mut stats = reader.read_filesystem();
        if let Some(error) = reader.error {
            return Err(error);
        }
        if stats.uuid.is_empty() {
            stats.uuid = name;
        }
        all.push(stats);
    }
    Ok(all)
}

/// A btrfs mount from the mount table.
#[derive(Debug, PartialEq)]
struct Mount {
    device: String,
    /// As seen from the host's root (upstream's `rootfsStripPrefix`).
    mount_point: String,
}

/// The btrfs mounts of a mountinfo file, validated as procfs' `parseMountInfoString` and
/// node_exporter's `parseFilesystemLabels` do: any malformed line fails the whole table.
fn parse_btrfs_mounts(text: &str, rootfs: &str) -> anyhow::Result<Vec<Mount>> {
    let mut mounts = Vec::new();
    for line in goparse::text_lines(text).collect::<Result<Vec<_>, _>>()? {
        let fields: Vec<&str> = line.split(' ').collect();
        let n = fields.len();
        if n < 10 {
            anyhow::bail!("Too few fields in mount string: {line}");
        }
        if fields[n - 4] != "-" {
            anyhow::bail!(
                "couldn't find separator in expected field: {}",
                fields[n - 4]
            );
        }
        for id in &fields[..2] {
            id.parse::<i64>()
                .with_context(|| format!("bad mount id {id:?} in {line:?}"))?;
        }
        if !is_major_minor(fields[2]) {
            anyhow::bail!("malformed mount point MajorMinorVer: {:?}", fields[2]);
        }
        if fields[n - 3] != "btrfs" {
            continue;
        }
        let mount_point = fields[4].replace("\\040", " ").replace("\\011", "\t");
        let mount_point = match mount_point.strip_prefix(rootfs) {
            _ if rootfs == "/" => mount_point.clone(),
            Some("") => "/".to_owned(),
            Some(rest) => rest.to_owned(),
            None => mount_point.clone(),
        };
        mounts.push(Mount {
            device: fields[n - 2].to_owned(),
            mount_point,
        });
    }
    Ok(mounts)
}

/// Whether `text` scans as Go's `fmt.Sscanf(text, "%d:%d")`: two signed decimal numbers around
/// a colon, anything after the second ignored.
fn is_major_minor(text: &str) -> bool {
    let Some((major, minor)) = text.split_once(':') else {
        return false;
    };
    let digits = |s: &str| {
        let s = s.strip_prefix(['+', '-']).unwrap_or(s);
        s.bytes().take_while(u8::is_ascii_digit).count()
    };
    let unsigned = major.strip_prefix(['+', '-']).unwrap_or(major);
    !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()) && digits(minor) > 0
}

/// `BTRFS_IOC_FS_INFO`'s argument (linux/btrfs.h `btrfs_ioctl_fs_info_args`, 1 KiB).
// The kernel's layout: every field is there for its size and place, not all are read.
#[allow(dead_code)]
#[repr(C)]
struct FsInfoArgs {
    max_id: u64,
    num_devices: u64,
    fsid: [u8; 16],
    nodesize: u32,
    sectorsize: u32,
    clone_alignment: u32,
    csum_type: u16,
    csum_size: u16,
    flags: u64,
    generation: u64,
    metadata_uuid: [u8; 16],
    reserved: [u8; 944],
}

/// `BTRFS_IOC_DEV_INFO`'s argument (`btrfs_ioctl_dev_info_args`, 4 KiB).
// The kernel's layout: every field is there for its size and place, not all are read.
#[allow(dead_code)]
#[repr(C)]
struct DevInfoArgs {
    devid: u64,
    uuid: [u8; 16],
    bytes_used: u64,
    total_bytes: u64,
    unused: [u64; 379],
    path: [u8; 1024],
}

/// The number of error counters `BTRFS_IOC_GET_DEV_STATS` returns (`BTRFS_DEV_STAT_VALUES_MAX`):
/// write, read, flush, corruption, generation.
const DEV_STAT_VALUES: usize = 5;

/// `BTRFS_IOC_GET_DEV_STATS`'s argument (`btrfs_ioctl_get_dev_stats`, 1032 bytes).
// The kernel's layout: every field is there for its size and place, not all are read.
#[allow(dead_code)]
#[repr(C)]
struct GetDevStatsArgs {
    devid: u64,
    nr_items: u64,
    flags: u64,
    values: [u64; DEV_STAT_VALUES],
    unused: [u64; 128 - 2 - DEV_STAT_VALUES],
}

const _: () = assert!(size_of::<FsInfoArgs>() == 1024);
const _: () = assert!(size_of::<DevInfoArgs>() == 4096);
const _: () = assert!(size_of::<GetDevStatsArgs>() == 1032);

const BTRFS_IOCTL_MAGIC: u32 = 0x94;
const BTRFS_IOC_DEV_INFO: libc::Ioctl = libc::_IOWR::<DevInfoArgs>(BTRFS_IOCTL_MAGIC, 30);
const BTRFS_IOC_FS_INFO: libc::Ioctl = libc::_IOR::<FsInfoArgs>(BTRFS_IOCTL_MAGIC, 31);
const BTRFS_IOC_GET_DEV_STATS: libc::Ioctl = libc::_IOWR::<GetDevStatsArgs>(BTRFS_IOCTL_MAGIC, 52);

/// statfs(2)'s `f_type` of btrfs.
const BTRFS_SUPER_MAGIC: u32 = 0x9123_683E;
/// The inode number of a subvolume's root directory (`BTRFS_FIRST_FREE_OBJECTID`).
const FIRST_FREE_OBJECTID: u64 = 256;

/// One device as the ioctls describe it.
#[derive(Debug, PartialEq)]
struct IoctlDevice {
    /// The device node's name (the last element of its path).
    name: String,
    /// The device's UUID as dennwc/btrfs prints it (dashed, "<zero>" when all zero).
    uuid: String,
    bytes_used: u64,
    total_bytes: u64,
    /// Write, read, flush, corruption and generation errors.
    errors: [u64; DEV_STAT_VALUES],
}

/// `ioctl(fd, request, arg)`, its errno as the error.
fn ioctl<T>(file: &File, request: libc::Ioctl, arg: &mut T) -> std::io::Result<()> {
    // SAFETY: `arg` is a live, exclusively borrowed #[repr(C)] struct of the size encoded in
    // `request`, which the kernel reads and fills; the fd is open for the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), request, std::ptr::from_mut(arg)) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A zeroed ioctl argument.
fn zeroed<T>() -> T {
    // SAFETY: only used for the argument structs above, made of integers and integer arrays,
    // for which all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

/// Whether `path` is on a filesystem of btrfs' magic (statfs(2)'s `f_type`).
fn is_btrfs(path: &Path) -> anyhow::Result<bool> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("statfs {}", path.display()))?;
    // SAFETY: statfs is plain data; all-zero is a valid value, and the kernel fills it.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is NUL-terminated and `stat` is a valid out pointer for the call.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("statfs {}", path.display()));
    }
    Ok(stat.f_type as u32 == BTRFS_SUPER_MAGIC)
}

/// dennwc/btrfs' `Open(path, true)`: the root of a btrfs subvolume (inode 256, a directory, on
/// a filesystem of btrfs' magic), opened read-only (without updating its atime when allowed).
fn open_btrfs(path: &Path) -> anyhow::Result<File> {
    let metadata = std::fs::metadata(path).with_context(|| format!("stat {}", path.display()))?;
    if metadata.ino() != FIRST_FREE_OBJECTID || !metadata.is_dir() || !is_btrfs(path)? {
        anyhow::bail!("not a btrfs filesystem: {}", path.display());
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(path)
        // O_NOATIME needs ownership of the directory or CAP_FOWNER.
        .or_else(|_| File::open(path))
        .with_context(|| format!("open {}", path.display()))?;
    if !file.metadata()?.is_dir() {
        anyhow::bail!("not a directory: {}", path.display());
    }
    Ok(file)
}

/// dennwc/btrfs' `UUID.String`.
fn uuid_string(uuid: &[u8; 16]) -> String {
    if uuid.iter().all(|&b| b == 0) {
        return "<zero>".to_owned();
    }
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    format!(
        "{}-{}-{}-{}-{}",
        hex(&uuid[..4]),
        hex(&uuid[4..6]),
        hex(&uuid[6..8]),
        hex(&uuid[8..10]),
        hex(&uuid[10..])
    )
}

/// The filesystem's fsid (hex without dashes, as dennwc/btrfs' `FSID.String`) and its devices,
/// as node_exporter's `getIoctlDeviceStats`: device ids need not start at 0 nor be contiguous
/// (a missing one answers ENODEV); the scan stops once `num_devices` are found.
fn query_filesystem(file: &File) -> anyhow::Result<(String, Vec<IoctlDevice>)> {
    let mut info: FsInfoArgs = zeroed();
    ioctl(file, BTRFS_IOC_FS_INFO, &mut info).context("BTRFS_IOC_FS_INFO")?;
    let fsid: String = info.fsid.iter().map(|b| format!("{b:02x}")).collect();
    let mut devices = Vec::new();
    for id in 0..=info.max_id {
        let mut dev: DevInfoArgs = zeroed();
        dev.devid = id;
        match ioctl(file, BTRFS_IOC_DEV_INFO, &mut dev) {
            Err(error) if error.raw_os_error() == Some(libc::ENODEV) => continue,
            result => result.with_context(|| format!("BTRFS_IOC_DEV_INFO of device {id}"))?,
        }
        let mut stats: GetDevStatsArgs = zeroed();
        stats.devid = id;
        stats.nr_items = DEV_STAT_VALUES as u64;
        ioctl(file, BTRFS_IOC_GET_DEV_STATS, &mut stats)
            .with_context(|| format!("BTRFS_IOC_GET_DEV_STATS of device {id}"))?;
        let path_len = dev
            .path
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(dev.path.len());
        let path = String::from_utf8_lossy(&dev.path[..path_len]);
        // Go's path.Split: what follows the last slash.
        let name = path.rsplit('/').next().unwrap_or_default().to_owned();
        devices.push(IoctlDevice {
            name,
            uuid: uuid_string(&dev.uuid),
            bytes_used: dev.bytes_used,
            total_bytes: dev.total_bytes,
            errors: stats.values,
        });
        if devices.len() as u64 == info.num_devices {
            break;
        }
    }
    Ok((fsid, devices))
}

impl BtrfsCollector {
    /// The mount table, `<procfs>/1/mountinfo` or, when that is missing (hidepid),
    /// `<procfs>/self/mountinfo`.
    fn btrfs_mounts(&self) -> anyhow::Result<Vec<Mount>> {
        let mut path = self.procfs.join("1/mountinfo");
        let text = match std::fs::read(&path) {
            Err(error) if error.kind() == ErrorKind::NotFound => {
                tracing::debug!(%error, "Reading root mounts failed, falling back to self mounts");
                path = self.procfs.join("self/mountinfo");
                std::fs::read(&path)
            }
            other => other,
        }
        .with_context(|| format!("reading {}", path.display()))?;
        parse_btrfs_mounts(
            &String::from_utf8_lossy(&text),
            &self.rootfs.to_string_lossy(),
        )
        .with_context(|| format!("parsing {}", path.display()))
    }

    /// node_exporter's `getIoctlStats`: fsid → devices, for every btrfs mount that can be
    /// opened and queried; each filesystem (and each mounted device) is queried once.
    fn ioctl_stats(&self) -> anyhow::Result<HashMap<String, Vec<IoctlDevice>>> {
        let mut devices_done: HashSet<String> = HashSet::new();
        let mut filesystems = HashMap::new();
        for mount in self.btrfs_mounts()? {
            if devices_done.contains(&mount.device) {
                continue;
            }
            let mount_point = mount.mount_point.as_str();
            let path = self
                .rootfs
                .join(mount_point.strip_prefix('/').unwrap_or(mount_point));
            let file = match open_btrfs(&path) {
                Ok(file) => file,
                Err(error) => {
                    tracing::debug!(mount_point = %path.display(), err = format!("{error:#}"), "Error inspecting btrfs mountpoint");
                    continue;
                }
            };
            let (fsid, devices) = match query_filesystem(&file) {
                Ok(result) => result,
                Err(error) => {
                    tracing::debug!(mount_point = %path.display(), err = format!("{error:#}"), "Error querying btrfs filesystem");
                    continue;
                }
            };
            if filesystems.contains_key(&fsid) {
                continue;
            }
            devices_done.insert(mount.device);
            filesystems.insert(fsid, devices);
        }
        Ok(filesystems)
    }
}

/// Families by name; a series already there is not added twice (client_golang's gatherer
/// rejects the duplicate).
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
        let family = self
            .0
            .entry(name)
            .or_insert_with(|| MetricFamily::new(format!("node_btrfs_{name}"), help, metric_type));
        let labels: Vec<(String, String)> = labels
            .iter()
            .map(|&(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        if family.metrics.iter().any(|metric| metric.labels == labels) {
            tracing::debug!(family = name, "dropping a duplicate btrfs series");
            return;
        }
        family.push(labels, value);
    }
}

/// The families of one filesystem, as node_exporter's `getMetrics`.
fn export(stats: &Stats, ioctl: Option<&[IoctlDevice]>, families: &mut Families) {
    use MetricType::{Counter, Gauge};
    let uuid = stats.uuid.as_str();
    let fs = [("uuid", uuid)];
    families.push(
        "info",
        "Filesystem information",
        Gauge,
        &[("uuid", uuid), ("label", stats.label.as_str())],
        1.0,
    );
    for (name, help, metric_type, value) in [
        (
            "global_rsv_size_bytes",
            "Size of global reserve.",
            Gauge,
            stats.global_rsv_size as f64,
        ),
        (
            "commits_total",
            "The total number of commits that have occurred.",
            Counter,
            stats.commits as f64,
        ),
        (
            "last_commit_seconds",
            "Duration of the most recent commit, in seconds.",
            Gauge,
            stats.last_commit_ms as f64 / 1000.0,
        ),
        (
            "max_commit_seconds",
            "Duration of the slowest commit, in seconds.",
            Gauge,
            stats.max_commit_ms as f64 / 1000.0,
        ),
        (
            "commit_seconds_total",
            "Sum of the duration of all commits, in seconds.",
            Counter,
            stats.total_commit_ms as f64 / 1000.0,
        ),
    ] {
        families.push(name, help, metric_type, &fs, value);
    }
    for (group, allocation) in &stats.allocation {
        families.push(
            "reserved_bytes",
            "Amount of space reserved for a data type",
            Gauge,
            &[("uuid", uuid), ("block_group_type", group)],
            allocation.reserved as f64,
        );
        for (mode, layout) in &allocation.layouts {
            let labels = [
                ("uuid", uuid),
                ("block_group_type", group),
                ("mode", mode.as_str()),
            ];
            families.push(
                "used_bytes",
                "Amount of used space by a layout/data type",
                Gauge,
                &labels,
                layout.used as f64,
            );
            families.push(
                "size_bytes",
                "Amount of space allocated for a layout/data type",
                Gauge,
                &labels,
                layout.total as f64,
            );
            families.push(
                "allocation_ratio",
                "Data allocation ratio for a layout/data type",
                Gauge,
                &labels,
                layout.ratio,
            );
        }
    }

    let Some(devices) = ioctl else {
        for (device, &size) in &stats.devices {
            families.push(
                "device_size_bytes",
                "Size of a device that is part of the filesystem.",
                Gauge,
                &[("uuid", uuid), ("device", device.as_str())],
                size as f64,
            );
        }
        return;
    };
    for device in devices {
        let labels = [
            ("uuid", uuid),
            ("device", device.name.as_str()),
            ("btrfs_dev_uuid", device.uuid.as_str()),
        ];
        families.push(
            "device_size_bytes",
            "Size of a device that is part of the filesystem.",
            Gauge,
            &labels,
            device.total_bytes as f64,
        );
        families.push(
            "device_unused_bytes",
            "Unused bytes unused on a device that is part of the filesystem.",
            Gauge,
            &labels,
            device.total_bytes.wrapping_sub(device.bytes_used) as f64,
        );
        for (error_type, &count) in ["write", "read", "flush", "corruption", "generation"]
            .iter()
            .zip(&device.errors)
        {
            families.push(
                "device_errors_total",
                "Errors reported for the device",
                Counter,
                &[
                    ("uuid", uuid),
                    ("device", device.name.as_str()),
                    ("btrfs_dev_uuid", device.uuid.as_str()),
                    ("type", error_type),
                ],
                count as f64,
            );
        }
    }
}

impl Collector for BtrfsCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let all = read_all(&self.dir).context("failed to retrieve Btrfs stats from procfs")?;
        // Upstream queries the mounts before looking at the list; with no filesystem in sysfs
        // there is nothing to match them to.
        if all.is_empty() {
            return Ok(());
        }
        let ioctl = self.ioctl_stats().unwrap_or_else(|error| {
            tracing::debug!(
                err = format!("{error:#}"),
                "Error querying btrfs device stats with ioctl"
            );
            HashMap::new()
        });
        let mut families = Families::default();
        for stats in &all {
            let fsid = stats.uuid.replace('-', "");
            export(stats, ioctl.get(&fsid).map(Vec::as_slice), &mut families);
        }
        out.extend(families.0.into_values());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("btrfs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// A minimal filesystem: two devices, raid1 metadata, single data.
    fn minimal(root: &Path) -> PathBuf {
        let fs = root.join("11111111-2222-3333-4444-555555555555");
        for device in ["nvme1n1", "nvme2n1"] {
            write(&fs.join(format!("devices/{device}/size")), "2097152\n");
        }
        std::fs::create_dir_all(fs.join("features")).unwrap();
        write(&fs.join("label"), "data\n");
        write(&fs.join("allocation/global_rsv_size"), "5242880\n");
        write(&fs.join("allocation/data/bytes_reserved"), "4096\n");
        write(&fs.join("allocation/data/single/total_bytes"), "8388608\n");
        write(&fs.join("allocation/data/single/used_bytes"), "1048576\n");
        write(&fs.join("allocation/metadata/raid1/total_bytes"), "1024\n");
        std::fs::create_dir_all(fs.join("allocation/system")).unwrap();
        write(
            &fs.join("commit_stats"),
            "commits 12\nlast_commit_ms 3\nmax_commit_ms 40\ntotal_commit_ms 90\n",
        );
        fs
    }

    #[test]
    fn reads_a_filesystem() {
        let root = temp_dir("read");
        minimal(&root);
        let all = read_all(&root).unwrap();
        assert_eq!(all.len(), 1);
        let stats = &all[0];
        assert_eq!(
            stats.uuid, "11111111-2222-3333-4444-555555555555",
            "from the name"
        );
        assert_eq!(stats.label, "data");
        assert_eq!(stats.global_rsv_size, 5_242_880);
        assert_eq!(stats.devices["nvme1n1"], 1 << 30);
        assert_eq!(stats.allocation[0].1.reserved, 4096);
        assert_eq!(
            stats.allocation[0].1.layouts["single"],
            Layout {
                used: 1 << 20,
                total: 8 << 20,
                ratio: 1.0
            }
        );
        assert_eq!(stats.allocation[1].1.layouts["raid1"].ratio, 2.0);
        assert!(stats.allocation[2].1.layouts.is_empty());
        assert_eq!(
            (
                stats.commits,
                stats.last_commit_ms,
                stats.max_commit_ms,
                stats.total_commit_ms
            ),
            (12, 3, 40, 90)
        );
        std::fs::remove_dir_all(&root).unwrap();
        assert!(read_all(&root).unwrap().is_empty(), "no /sys/fs/btrfs");
    }

    #[test]
    fn sticky_errors_as_procfs() {
        let root = temp_dir("sticky");
        let fs = minimal(&root);
        // No features directory: an error that zeroes the values read after it (global_rsv),
        // then forgotten once the allocation directories read fine.
        std::fs::remove_dir_all(fs.join("features")).unwrap();
        let stats = &read_all(&root).unwrap()[0];
        assert_eq!(stats.global_rsv_size, 0);
        assert_eq!(stats.label, "data", "strings are still read");
        assert_eq!(stats.allocation[0].1.reserved, 4096);
        std::fs::create_dir_all(fs.join("features")).unwrap();

        // An unreadable data value zeroes the rest of data, and is then forgotten too.
        std::fs::create_dir_all(fs.join("allocation/data/bytes_pinned")).unwrap();
        let stats = &read_all(&root).unwrap()[0];
        assert_eq!(stats.allocation[0].1.reserved, 0);
        assert_eq!(stats.allocation[0].1.layouts["single"].total, 0);
        std::fs::remove_dir(fs.join("allocation/data/bytes_pinned")).unwrap();

        // In system, the last allocation directory, it fails the filesystem.
        std::fs::create_dir_all(fs.join("allocation/system/flags")).unwrap();
        assert!(read_all(&root).is_err());
        std::fs::remove_dir(fs.join("allocation/system/flags")).unwrap();
        // A missing allocation directory is an error too (readLayouts).
        std::fs::remove_dir_all(fs.join("allocation/system")).unwrap();
        assert!(read_all(&root).is_err());
        std::fs::create_dir_all(fs.join("allocation/system")).unwrap();

        // Garbage numbers read as 0, as upstream ignores ParseUint's error.
        write(&fs.join("allocation/global_rsv_size"), "lots\n");
        assert_eq!(read_all(&root).unwrap()[0].global_rsv_size, 0);
        // metadata_uuid wins over the directory name.
        write(
            &fs.join("metadata_uuid"),
            "abcdef01-0000-0000-0000-000000000000\n",
        );
        assert_eq!(
            read_all(&root).unwrap()[0].uuid,
            "abcdef01-0000-0000-0000-000000000000"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn commit_stats_must_be_well_formed() {
        let root = temp_dir("commits");
        let fs = minimal(&root);
        for bad in [
            "commits\n",
            "commits 1 2\n",
            "commits -1\n",
            "\n",
            "commits 1x\n",
        ] {
            write(&fs.join("commit_stats"), bad);
            assert!(read_all(&root).is_err(), "{bad:?}");
        }
        write(&fs.join("commit_stats"), "commits 5\nunknown_key 7\n");
        assert_eq!(read_all(&root).unwrap()[0].commits, 5);
        std::fs::remove_file(fs.join("commit_stats")).unwrap();
        assert_eq!(read_all(&root).unwrap()[0].commits, 0, "kernels before 6.0");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn raid56_ratios_follow_device_count() {
        let reader = Reader::new(PathBuf::new(), 4);
        assert_eq!(reader.ratio("raid5"), 4.0 / 3.0);
        assert_eq!(reader.ratio("raid6"), 2.0);
        assert_eq!(reader.ratio("raid1c3"), 3.0);
        assert_eq!(reader.ratio("weird"), 0.0);
        assert_eq!(Reader::new(PathBuf::new(), 1).ratio("raid5"), f64::INFINITY);
    }

    #[test]
    fn parses_mountinfo_for_btrfs_mounts() {
        let text = "\
24 1 0:22 / / rw,relatime shared:1 - btrfs /dev/nvme0n1p2 rw,ssd,subvol=/@
25 24 0:22 /@home /home rw,relatime shared:2 - btrfs /dev/nvme0n1p2 rw,ssd,subvol=/@home
26 24 259:3 / /boot rw,relatime shared:3 - ext4 /dev/nvme0n1p1 rw
27 24 0:40 / /host/srv/my\\040data rw - btrfs /dev/sdb rw
";
        let mounts = parse_btrfs_mounts(text, "/host").unwrap();
        assert_eq!(
            mounts,
            [
                Mount {
                    device: "/dev/nvme0n1p2".to_owned(),
                    mount_point: "/".to_owned()
                },
                Mount {
                    device: "/dev/nvme0n1p2".to_owned(),
                    mount_point: "/home".to_owned()
                },
                Mount {
                    device: "/dev/sdb".to_owned(),
                    mount_point: "/srv/my data".to_owned()
                },
            ]
        );
        assert_eq!(
            parse_btrfs_mounts(text, "/").unwrap()[2].mount_point,
            "/host/srv/my data"
        );
        for bad in [
            "24 1 0:22 / / rw - btrfs\n",
            "24 1 0:22 / / rw shared:1 + btrfs /dev/x rw\n",
            "x 1 0:22 / / rw shared:1 - btrfs /dev/x rw\n",
            "24 1 022 / / rw shared:1 - btrfs /dev/x rw\n",
            "24 1 a:22 / / rw shared:1 - btrfs /dev/x rw\n",
        ] {
            assert!(parse_btrfs_mounts(bad, "/").is_err(), "{bad:?}");
        }
        assert!(is_major_minor("8:17"));
        assert!(is_major_minor("-1:2x"));
        assert!(!is_major_minor("8:"));
    }

    #[test]
    fn prints_uuids_as_dennwc() {
        assert_eq!(uuid_string(&[0; 16]), "<zero>");
        let uuid = [
            0x0a, 0xbb, 0x23, 0xa9, 0x57, 0x9b, 0x43, 0xe6, 0xad, 0x30, 0x22, 0x7e, 0xf4, 0x7f,
            0xcb, 0x9d,
        ];
        assert_eq!(uuid_string(&uuid), "0abb23a9-579b-43e6-ad30-227ef47fcb9d");
    }

    #[test]
    fn ioctl_numbers_match_linux_headers() {
        // From linux/btrfs.h on x86_64 / arm64 (asm-generic ioctl encoding).
        if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            assert_eq!(BTRFS_IOC_FS_INFO as u32, 0x8400_941f);
            assert_eq!(BTRFS_IOC_DEV_INFO as u32, 0xd000_941e);
            assert_eq!(BTRFS_IOC_GET_DEV_STATS as u32, 0xc408_9434);
        }
    }

    #[test]
    fn a_directory_that_is_not_btrfs_is_refused() {
        let dir = temp_dir("notbtrfs");
        let error = open_btrfs(&dir).unwrap_err();
        assert!(
            error.to_string().contains("not a btrfs filesystem"),
            "{error:#}"
        );
        assert!(open_btrfs(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Runs the ioctls on the first btrfs filesystem mounted here, if any can be opened (as
    /// root, say, with a loop device: mkfs.btrfs -d raid1 -m raid1 on two images).
    #[test]
    fn ioctls_on_a_mounted_btrfs_when_there_is_one() {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let Ok(mounts) = parse_btrfs_mounts(&text, "/") else {
            return;
        };
        let Some(file) = mounts
            .iter()
            .find_map(|mount| open_btrfs(Path::new(&mount.mount_point)).ok())
        else {
            eprintln!("no btrfs filesystem to query here");
            return;
        };
        let (fsid, devices) = query_filesystem(&file).unwrap();
        assert_eq!(fsid.len(), 32, "{fsid}");
        assert!(fsid.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(!devices.is_empty());
        for device in &devices {
            assert!(
                !device.name.is_empty() && !device.name.contains('/'),
                "{device:?}"
            );
            assert_eq!(device.uuid.len(), 36, "{device:?}");
            assert!(device.total_bytes > 0 && device.bytes_used <= device.total_bytes);
        }
    }

    #[test]
    fn ioctl_devices_replace_sysfs_devices() {
        let stats = Stats {
            uuid: "0abb23a9-579b-43e6-ad30-227ef47fcb9d".to_owned(),
            devices: BTreeMap::from([("sda".to_owned(), 100)]),
            ..Stats::default()
        };
        let devices = [IoctlDevice {
            name: "sda".to_owned(),
            uuid: "u".to_owned(),
            bytes_used: 30,
            total_bytes: 100,
            errors: [1, 2, 3, 4, 5],
        }];
        let mut families = Families::default();
        export(&stats, Some(&devices), &mut families);
        let size = &families.0["device_size_bytes"].metrics;
        assert_eq!(size.len(), 1);
        assert!(
            size[0]
                .labels
                .contains(&("btrfs_dev_uuid".to_owned(), "u".to_owned()))
        );
        assert_eq!(
            families.0["device_unused_bytes"].metrics[0].value,
            crate::metrics::Value::Scalar(70.0)
        );
        let errors = &families.0["device_errors_total"].metrics;
        assert_eq!(errors.len(), 5);
        assert!(
            errors[3]
                .labels
                .contains(&("type".to_owned(), "corruption".to_owned()))
        );
        assert_eq!(errors[3].value, crate::metrics::Value::Scalar(4.0));

        let mut families = Families::default();
        export(&stats, None, &mut families);
        assert_eq!(families.0["device_size_bytes"].metrics[0].labels.len(), 2);
        assert!(!families.0.contains_key("device_errors_total"));
    }

    proptest::proptest! {
        /// No mount table makes the parser panic.
        #[test]
        fn mountinfo_parser_takes_any_input(text in "[-0-9a-z:/\\ \n]{0,160}") {
            let _ = parse_btrfs_mounts(&text, "/host");
            let _ = is_major_minor(&text);
        }
    }
}
