//! `filesystem`: size, free space and inodes of every mounted filesystem, from the mount table
//! in `<procfs>/1/mountinfo` (falling back to `<procfs>/self/mountinfo`) and statfs(2) of
//! `<rootfs>/<mount point>`.
//!
//! statfs never blocks a scrape: the calls run on a small pool of long-lived threads
//! (`--collector.filesystem.stat-workers`), and a scrape waits at most
//! `--collector.filesystem.mount-timeout` for them. A mount whose statfs has not answered by
//! then (a dead NFS server...) is reported with `node_filesystem_device_error 1` and skipped
//! by later scrapes until its call returns; the thread stuck in it is written off and replaced,
//! so each stuck mount holds at most one thread and no scrape starts another for it.
use std::{
    collections::{HashMap, HashSet},
    ffi::CString,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    flags::{DeviceFilter, FlagSpec},
    metrics::MetricFamily,
    pool::{GaveUp, Pool, Task},
};

const MP_EXCLUDE: &str = "collector.filesystem.mount-points-exclude";
const MP_INCLUDE: &str = "collector.filesystem.mount-points-include";
const MP_OLD: &str = "collector.filesystem.ignored-mount-points";
const FS_EXCLUDE: &str = "collector.filesystem.fs-types-exclude";
const FS_INCLUDE: &str = "collector.filesystem.fs-types-include";
const FS_OLD: &str = "collector.filesystem.ignored-fs-types";
const MOUNT_TIMEOUT: &str = "collector.filesystem.mount-timeout";
const STAT_WORKERS: &str = "collector.filesystem.stat-workers";

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "filesystem",
    default_enabled: true,
    flags: &[
        FlagSpec::value(
            MP_EXCLUDE,
            Some(
                "^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)",
            ),
            "Regexp of mount points to exclude for filesystem collector. (mutually exclusive to mount-points-include)",
        ),
        FlagSpec::value(
            MP_OLD,
            None,
            "Regexp of mount points to ignore for filesystem collector.",
        )
        .hidden(),
        FlagSpec::value(
            MP_INCLUDE,
            None,
            "Regexp of mount points to include for filesystem collector. (mutually exclusive to mount-points-exclude)",
        ),
        FlagSpec::value(
            FS_EXCLUDE,
            Some(
                "^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|erofs|sysfs|tracefs)$",
            ),
            "Regexp of filesystem types to exclude for filesystem collector. (mutually exclusive to fs-types-include)",
        ),
        FlagSpec::value(
            FS_OLD,
            None,
            "Regexp of filesystem types to ignore for filesystem collector.",
        )
        .hidden(),
        FlagSpec::value(
            FS_INCLUDE,
            None,
            // Upstream's help really says "exclude" here.
            "Regexp of filesystem types to exclude for filesystem collector. (mutually exclusive to fs-types-exclude)",
        ),
        FlagSpec::value(
            MOUNT_TIMEOUT,
            Some("5s"),
            "how long to wait for a mount to respond before marking it as stale",
        )
        .hidden(),
        FlagSpec::value(
            STAT_WORKERS,
            Some("4"),
            "how many stat calls to process simultaneously",
        )
        .hidden(),
    ],
    kernel: None,
    build,
};

const LABELS_HELP: [(&str, &str); 7] = [
    ("size_bytes", "Filesystem size in bytes."),
    ("free_bytes", "Filesystem free space in bytes."),
    (
        "avail_bytes",
        "Filesystem space available to non-root users in bytes.",
    ),
    ("files", "Filesystem total file nodes."),
    ("files_free", "Filesystem total free file nodes."),
    ("readonly", "Filesystem read-only status."),
    (
        "device_error",
        "Whether an error occurred while getting statistics for the given device.",
    ),
];

/// What statfs(2) tells, already in node_exporter's units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FsStat {
    pub size: f64,
    pub free: f64,
    pub avail: f64,
    pub files: f64,
    pub files_free: f64,
}

/// statfs(2) of a path; an error is the message Go prints for the errno.
pub type StatFn = Arc<dyn Fn(&Path) -> Result<FsStat, String> + Send + Sync>;

fn statfs(path: &Path) -> Result<FsStat, String> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: a C struct of integers and arrays, for which all zeroes is a valid value.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is a valid NUL-terminated string and buf a properly sized out-parameter.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut buf) } != 0 {
        return Err(go_errno_text(std::io::Error::last_os_error()));
    }
    let bsize = buf.f_bsize as f64;
    Ok(FsStat {
        size: buf.f_blocks as f64 * bsize,
        free: buf.f_bfree as f64 * bsize,
        avail: buf.f_bavail as f64 * bsize,
        files: buf.f_files as f64,
        files_free: buf.f_ffree as f64,
    })
}

/// Go's `syscall.Errno.Error()` text: strerror with a lower-case first letter.
fn go_errno_text(error: std::io::Error) -> String {
    let text = error.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// One line of mountinfo, as the collector uses it.
#[derive(Clone, Debug, PartialEq)]
struct Mount {
    device: String,
    mount_point: String,
    fs_type: String,
    major: String,
    minor: String,
    read_only: bool,
}

/// Parses mountinfo as procfs' `parseMountInfoString`: a line with fewer than 10 fields or no
/// `-` separator fails the file.
fn parse_mountinfo(text: &str, path: &Path, rootfs: &Path) -> anyhow::Result<Vec<Mount>> {
    let mut mounts = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let at = || format!("{} line {}", path.display(), index + 1);
        let fields: Vec<&str> = line.split(' ').collect();
        let n = fields.len();
        if n < 10 {
            anyhow::bail!("{}: too few fields in mount string: {line:?}", at());
        }
        if fields[n - 4] != "-" {
            anyhow::bail!(
                "{}: couldn't find separator in expected field: {line:?}",
                at()
            );
        }
        for id in &fields[..2] {
            id.parse::<i64>()
                .with_context(|| format!("{}: bad mount id {id:?}", at()))?;
        }
        let (major, minor) = fields[2]
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse::<i64>().ok()?, b.parse::<i64>().ok()?)))
            .with_context(|| {
                format!(
                    "{}: malformed mount point MajorMinorVer: {:?}",
                    at(),
                    fields[2]
                )
            })?;
        let mount_point = fields[4].replace("\\040", " ").replace("\\011", "\t");
        let has_ro = |options: &str| options.split(',').any(|o| o == "ro");
        mounts.push(Mount {
            device: fields[n - 2].to_owned(),
            mount_point: strip_rootfs(&mount_point, rootfs),
            fs_type: fields[n - 3].to_owned(),
            major: major.to_string(),
            minor: minor.to_string(),
            read_only: has_ro(fields[5]) || has_ro(fields[n - 1]),
        });
    }
    Ok(mounts)
}

/// Upstream's `rootfsStripPrefix`: mount points as seen from the host's root.
fn strip_rootfs(mount_point: &str, rootfs: &Path) -> String {
    let rootfs = rootfs.to_string_lossy();
    if rootfs == "/" {
        return mount_point.to_owned();
    }
    match mount_point.strip_prefix(rootfs.as_ref()) {
        Some("") => "/".to_owned(),
        Some(rest) => rest.to_owned(),
        None => mount_point.to_owned(),
    }
}

struct FilesystemCollector {
    procfs: PathBuf,
    rootfs: PathBuf,
    mount_points: DeviceFilter,
    fs_types: DeviceFilter,
    pool: StatPool,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    let flags = &context.flags;
    // Both flags have defaults, so they always have a value.
    let timeout = humantime::parse_duration(flags.string(MOUNT_TIMEOUT).unwrap_or_default())
        .with_context(|| format!("--{MOUNT_TIMEOUT}"))?;
    let workers: i64 = flags
        .string(STAT_WORKERS)
        .unwrap_or_default()
        .parse()
        .with_context(|| format!("--{STAT_WORKERS}"))?;
    Ok(Arc::new(FilesystemCollector {
        procfs: context.procfs.clone(),
        rootfs: context.rootfs.clone(),
        mount_points: DeviceFilter::from_flags(flags, MP_EXCLUDE, MP_OLD, MP_INCLUDE)?,
        fs_types: DeviceFilter::from_flags(flags, FS_EXCLUDE, FS_OLD, FS_INCLUDE)?,
        pool: StatPool::new(Arc::new(statfs), workers.max(1) as usize, timeout),
    }))
}

impl FilesystemCollector {
    fn mounts(&self) -> anyhow::Result<Vec<Mount>> {
        let mut path = self.procfs.join("1/mountinfo");
        let text = match std::fs::read_to_string(&path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(%error, "Reading root mounts failed, falling back to self mounts");
                path = self.procfs.join("self/mountinfo");
                std::fs::read_to_string(&path)
            }
            other => other,
        }
        .with_context(|| format!("reading {}", path.display()))?;
        parse_mountinfo(&text, &path, &self.rootfs)
    }

    fn stat_path(&self, mount_point: &str) -> PathBuf {
        self.rootfs
            .join(mount_point.strip_prefix('/').unwrap_or(mount_point))
    }
}

impl Collector for FilesystemCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let mounts: Vec<Mount> = self
            .mounts()
            .context("couldn't get filesystem stats")?
            .into_iter()
            .filter(|m| {
                let keep = !self.mount_points.ignored(&m.mount_point);
                if !keep {
                    tracing::debug!(mountpoint = m.mount_point, "Ignoring mount point");
                }
                keep
            })
            .filter(|m| {
                let keep = !self.fs_types.ignored(&m.fs_type);
                if !keep {
                    tracing::debug!(r#type = m.fs_type, "Ignoring fs type");
                }
                keep
            })
            .collect();
        let paths: Vec<PathBuf> = mounts
            .iter()
            .map(|m| self.stat_path(&m.mount_point))
            .collect();
        let results = self.pool.stat_all(&paths);

        let mut families: Vec<MetricFamily> = LABELS_HELP
            .iter()
            .map(|(name, help)| MetricFamily::gauge(format!("node_filesystem_{name}"), *help))
            .collect();
        let mut mount_info = MetricFamily::gauge(
            "node_filesystem_mount_info",
            "Filesystem mount information.",
        );
        let mut seen = HashSet::new();
        for (mount, path) in mounts.iter().zip(&paths) {
            let result = &results[path];
            let error = match result {
                Ok(_) => String::new(),
                Err(error) => error.clone(),
            };
            if !seen.insert((
                mount.device.clone(),
                mount.mount_point.clone(),
                mount.fs_type.clone(),
                error.clone(),
                mount.major.clone(),
                mount.minor.clone(),
            )) {
                continue;
            }
            let labels = [
                ("device", mount.device.as_str()),
                ("mountpoint", mount.mount_point.as_str()),
                ("fstype", mount.fs_type.as_str()),
                ("device_error", error.as_str()),
            ];
            let ro = if mount.read_only { 1.0 } else { 0.0 };
            families[6].push(labels, if result.is_ok() { 0.0 } else { 1.0 });
            families[5].push(labels, ro);
            let Ok(stat) = result else { continue };
            for (family, value) in families.iter_mut().zip([
                stat.size,
                stat.free,
                stat.avail,
                stat.files,
                stat.files_free,
            ]) {
                family.push(labels, value);
            }
            mount_info.push(
                [
                    ("device", mount.device.as_str()),
                    ("major", mount.major.as_str()),
                    ("minor", mount.minor.as_str()),
                    ("mountpoint", mount.mount_point.as_str()),
                ],
                1.0,
            );
        }
        out.extend(families);
        out.push(mount_info);
        Ok(())
    }
}

/// statfs of mount points on the collector's own pool of threads, each scrape waiting at most
/// the mount timeout.
struct StatPool {
    pool: Pool,
    statfs: StatFn,
    timeout: Duration,
    /// Paths whose statfs is running, and whether a scrape gave up on it (the mount is stuck):
    /// not statted again until that call returns.
    in_flight: Arc<Mutex<HashMap<PathBuf, bool>>>,
}

/// The `device_error` label of a mount whose statfs did not answer in time, as upstream.
const TIMEOUT_ERROR: &str = "mountpoint timeout";

/// One scrape's statfs results as they come in.
type Results = Arc<(Mutex<HashMap<PathBuf, Result<FsStat, String>>>, Condvar)>;

impl StatPool {
    fn new(statfs: StatFn, workers: usize, timeout: Duration) -> Self {
        Self {
            pool: Pool::new("statfs", workers),
            statfs,
            timeout,
            in_flight: Arc::default(),
        }
    }

    /// statfs of every path, waiting at most the mount timeout; a path whose call from an
    /// earlier scrape still runs is not statted again.
    fn stat_all(&self, paths: &[PathBuf]) -> HashMap<PathBuf, Result<FsStat, String>> {
        let results: Results = Arc::default();
        let mut skipped = HashMap::new();
        let mut queued = Vec::new();
        let mut tasks: Vec<Task> = Vec::new();
        {
            let mut in_flight = self.in_flight.lock().unwrap();
            for path in paths {
                if skipped.contains_key(path) || queued.contains(path) {
                    continue;
                }
                if in_flight.contains_key(path) {
                    tracing::debug!(path = %path.display(), "Mount point is in an unresponsive state");
                    skipped.insert(path.clone(), Err(TIMEOUT_ERROR.to_owned()));
                    continue;
                }
                in_flight.insert(path.clone(), false);
                queued.push(path.clone());
                tasks.push(self.stat_task(path.clone(), Arc::clone(&results)));
            }
        }
        let tickets = self.pool.submit(tasks);

        let deadline = Instant::now() + self.timeout;
        let (lock, arrived) = &*results;
        let mut done = lock.lock().unwrap();
        while done.len() < queued.len() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            done = arrived.wait_timeout(done, deadline - now).unwrap().0;
        }
        drop(done);
        for (path, ticket) in queued.iter().zip(&tickets) {
            if lock.lock().unwrap().contains_key(path) {
                continue;
            }
            match self.pool.give_up(ticket) {
                GaveUp::NotStarted => {
                    self.in_flight.lock().unwrap().remove(path);
                }
                GaveUp::Running => {
                    if let Some(stuck) = self.in_flight.lock().unwrap().get_mut(path) {
                        *stuck = true;
                    }
                    tracing::debug!(
                        path = %path.display(),
                        "Mount point timed out, it is being labeled as stuck and will not be monitored"
                    );
                }
                // It answered while we gave up on it.
                GaveUp::Finished => continue,
            }
            lock.lock()
                .unwrap()
                .insert(path.clone(), Err(TIMEOUT_ERROR.to_owned()));
        }
        let mut results = std::mem::take(&mut *lock.lock().unwrap());
        results.extend(skipped);
        results
    }

    /// statfs of `path` into `results`; the path may be statted again once it returns.
    fn stat_task(&self, path: PathBuf, results: Results) -> Task {
        let statfs = Arc::clone(&self.statfs);
        let in_flight = Arc::clone(&self.in_flight);
        Box::new(move || {
            let result = statfs(&path);
            if in_flight.lock().unwrap().remove(&path) == Some(true) {
                tracing::debug!(path = %path.display(), "Mount point has recovered, monitoring will resume");
            }
            let (lock, arrived) = &*results;
            lock.lock().unwrap().entry(path).or_insert(result);
            arrived.notify_all();
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const MOUNTINFO: &str = "\
27 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,discard
28 27 254:15 / /boot ro,relatime shared:2 master:7 - vfat /dev/vda15 rw
29 27 8:17 / /mnt/my\\040disk rw - xfs /dev/sdb1 ro,attr2
30 27 0:22 / /proc rw - proc proc rw
";

    #[test]
    fn parses_mountinfo() {
        let mounts =
            parse_mountinfo(MOUNTINFO, Path::new("/proc/1/mountinfo"), Path::new("/")).unwrap();
        assert_eq!(mounts.len(), 4);
        assert_eq!(mounts[0].device, "/dev/vda1");
        assert_eq!(
            (mounts[0].major.as_str(), mounts[0].minor.as_str()),
            ("254", "1")
        );
        assert!(!mounts[0].read_only);
        assert!(mounts[1].read_only, "mount options ro");
        assert_eq!(mounts[2].mount_point, "/mnt/my disk");
        assert!(mounts[2].read_only, "super options ro");
    }

    #[test]
    fn rootfs_prefix_is_stripped() {
        let mounts = parse_mountinfo(
            "1 0 8:1 / /host rw - ext4 /dev/sda1 rw\n2 1 8:2 / /host/boot rw - ext4 /dev/sda2 rw\n",
            Path::new("mountinfo"),
            Path::new("/host"),
        )
        .unwrap();
        assert_eq!(mounts[0].mount_point, "/");
        assert_eq!(mounts[1].mount_point, "/boot");
    }

    #[test]
    fn malformed_mountinfo_names_file_and_line() {
        for text in [
            "27 1 254:1 / / rw - ext4\n",
            "27 1 254:1 / / rw x ext4 /dev/vda1 rw\n",
            "27 1 254 / / rw - ext4 /dev/vda1 rw\n",
            "x 1 254:1 / / rw - ext4 /dev/vda1 rw\n",
        ] {
            let error = parse_mountinfo(
                &format!("{MOUNTINFO}{text}"),
                Path::new("/p/1/mountinfo"),
                Path::new("/"),
            )
            .unwrap_err();
            assert!(
                format!("{error:#}").contains("/p/1/mountinfo line 5"),
                "{error:#}"
            );
        }
    }

    #[test]
    fn errno_text_is_gos() {
        assert_eq!(
            go_errno_text(std::io::Error::from_raw_os_error(libc::ENOENT)),
            "no such file or directory"
        );
    }

    fn ok_stat() -> FsStat {
        FsStat {
            size: 4096.0,
            free: 2048.0,
            avail: 1024.0,
            files: 10.0,
            files_free: 5.0,
        }
    }

    #[test]
    fn a_hung_statfs_does_not_block_the_scrape_nor_pile_up_threads() {
        let hung = PathBuf::from("/mnt/nfs");
        let release = Arc::new((Mutex::new(false), Condvar::new()));
        let calls = Arc::new(AtomicUsize::new(0));
        let statfs: StatFn = {
            let (hung, release, calls) = (hung.clone(), Arc::clone(&release), Arc::clone(&calls));
            Arc::new(move |path: &Path| {
                if path == hung {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let (lock, cvar) = &*release;
                    let mut released = lock.lock().unwrap();
                    while !*released {
                        released = cvar.wait(released).unwrap();
                    }
                }
                Ok(ok_stat())
            })
        };
        let timeout = Duration::from_millis(200);
        let pool = StatPool::new(statfs, 2, timeout);
        let paths = vec![PathBuf::from("/"), hung.clone(), PathBuf::from("/boot")];

        let started = Instant::now();
        let results = pool.stat_all(&paths);
        assert!(started.elapsed() < timeout + Duration::from_millis(500));
        assert_eq!(results[&hung], Err(TIMEOUT_ERROR.to_owned()));
        assert_eq!(results[&PathBuf::from("/")], Ok(ok_stat()));
        assert_eq!(results[&PathBuf::from("/boot")], Ok(ok_stat()));
        // Two workers, and one replacement for the worker stuck in the hung call.
        let threads_after_first = pool.pool.spawned();
        assert_eq!(threads_after_first, 3);

        // Next scrapes: the hung mount is skipped at once, with no new call and no new thread,
        // however many scrapes run.
        for _ in 0..5 {
            let started = Instant::now();
            let results = pool.stat_all(&paths);
            assert!(started.elapsed() < timeout, "skipped without waiting");
            assert_eq!(results[&hung], Err(TIMEOUT_ERROR.to_owned()));
            assert_eq!(results[&PathBuf::from("/")], Ok(ok_stat()));
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "statfs of the hung mount not retried"
        );
        assert_eq!(pool.pool.spawned(), threads_after_first);

        // Once the call returns, the mount is statted again, and the stuck thread rejoins
        // or exits: no thread is started.
        {
            let (lock, cvar) = &*release;
            *lock.lock().unwrap() = true;
            cvar.notify_all();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.in_flight.lock().unwrap().contains_key(&hung) {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(10));
        }
        let results = pool.stat_all(&paths);
        assert_eq!(results[&hung], Ok(ok_stat()));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(pool.pool.spawned(), threads_after_first);
    }

    #[test]
    fn statfs_errors_are_reported() {
        let statfs: StatFn = Arc::new(|_: &Path| Err("permission denied".to_owned()));
        let pool = StatPool::new(statfs, 4, Duration::from_secs(1));
        let results = pool.stat_all(&[PathBuf::from("/secret")]);
        assert_eq!(
            results[&PathBuf::from("/secret")],
            Err("permission denied".to_owned())
        );
    }
}
