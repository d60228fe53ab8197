//! `selinux`: whether SELinux is enabled, its configured and current enforcing mode, as
//! node_exporter reads them through github.com/opencontainers/selinux (`GetEnabled`,
//! `DefaultEnforceMode`, `EnforceMode`), with that library's files read under `--path.*`:
//!
//! - the selinuxfs mount: <sysfs>/fs/selinux when statfs says it is a writable selinuxfs (the
//!   library's fast path); else, when <procfs>/filesystems lists `selinuxfs`, the first
//!   selinuxfs line of <procfs>/self/mountinfo whose mount point (under /sys taken under
//!   `--path.sysfs`) is a writable selinuxfs. A copy of the tree, which statfs cannot judge
//!   (tests, fixtures), counts as mounted where it has an `enforce` file and its mountinfo
//!   line, if any, does not say read-only;
//! - enabled: that mount found and this thread's label (<procfs>/thread-self/attr/current)
//!   not `kernel`; both decided at the first scrape and kept, as the library keeps them;
//! - the current mode: `<mount>/enforce` (1 enforcing, 0 permissive, -1 unreadable);
//! - the configured mode: `SELINUX=` of <rootfs>/etc/selinux/config (1 `enforcing`, 0
//!   `permissive`, else -1), read at every scrape.
//!
//! A host without SELinux reports `node_selinux_enabled 0` alone.
use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
};

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    goparse,
    metrics::MetricFamily,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "selinux",
    default_enabled: true,
    flags: &[],
    kernel: None,
    build,
};

/// `SELINUX_MAGIC`, the selinuxfs superblock magic.
const SELINUX_MAGIC: u32 = 0xf97c_ff8c;

struct SelinuxCollector {
    sysfs: PathBuf,
    procfs: PathBuf,
    config: PathBuf,
    /// The selinuxfs mount and whether SELinux is enabled, decided once.
    state: OnceLock<State>,
}

#[derive(Debug, PartialEq)]
struct State {
    mount: Option<PathBuf>,
    enabled: bool,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(SelinuxCollector {
        sysfs: context.sysfs.clone(),
        procfs: context.procfs.clone(),
        config: context.root_path("/etc/selinux/config"),
        state: OnceLock::new(),
    }))
}

/// `SYSFS_MAGIC`: /sys/fs/selinux on sysfs is the mount point with nothing mounted on it.
const SYSFS_MAGIC: u32 = 0x6265_6572;

/// What statfs(2) says of a path.
#[derive(Debug, PartialEq)]
enum Filesystem {
    Selinuxfs {
        writable: bool,
    },
    Sysfs,
    /// Neither: not the kernel's files but a copy of the tree (tests, fixtures).
    Other,
}

fn statfs(path: &Path) -> Option<Filesystem> {
    let path = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs is plain old data, all zeroes a valid value.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `path` is NUL-terminated and `buf` a valid statfs for the call to fill.
        if unsafe { libc::statfs(path.as_ptr(), &mut buf) } == 0 {
            break;
        }
        let errno = std::io::Error::last_os_error().raw_os_error();
        if errno != Some(libc::EAGAIN) && errno != Some(libc::EINTR) {
            return None;
        }
    }
    match buf.f_type as u32 {
        SELINUX_MAGIC => {
            // libc's statfs has no f_flags: the read-only flag comes from statvfs.
            // SAFETY: statvfs is plain old data, all zeroes a valid value.
            let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
            // SAFETY: `path` is NUL-terminated and `vfs` a valid statvfs for the call to fill.
            if unsafe { libc::statvfs(path.as_ptr(), &mut vfs) } != 0 {
                return None;
            }
            Some(Filesystem::Selinuxfs {
                writable: vfs.f_flag & libc::ST_RDONLY == 0,
            })
        }
        SYSFS_MAGIC => Some(Filesystem::Sysfs),
        _ => Some(Filesystem::Other),
    }
}

/// `verifySELinuxfsMount`: a writable selinuxfs. A copy of the tree (statfs says neither
/// selinuxfs nor sysfs) stands for the kernel's when it has an `enforce` file and its
/// mountinfo line, if any, is not read-only: sysfs's own fs/selinux is empty when nothing is
/// mounted on it.
fn verify_mount(path: &Path, listed_read_only: Option<bool>) -> bool {
    match statfs(path) {
        Some(Filesystem::Selinuxfs { writable }) => writable,
        Some(Filesystem::Other) => listed_read_only != Some(true) && path.join("enforce").is_file(),
        Some(Filesystem::Sysfs) | None => false,
    }
}

/// A selinuxfs line of mountinfo (`findSELinuxfsMount`): the mount point (the fifth field),
/// and whether the mount or its superblock is read-only. `None` for other lines.
fn selinuxfs_mount(line: &[u8]) -> Option<(String, bool)> {
    let text = String::from_utf8_lossy(line);
    let (mount, superblock) = text.split_once(" - selinuxfs ")?;
    let fields: Vec<&str> = mount.splitn(6, ' ').collect();
    // Upstream splits the whole line into six at most; the mount point is the fifth of those.
    let whole: Vec<&str> = text.splitn(6, ' ').collect();
    if whole.len() < 6 {
        return None;
    }
    let is_ro = |options: &str| options.split(',').any(|option| option == "ro");
    let mount_options = fields.get(5).and_then(|rest| rest.split(' ').next());
    let super_options = superblock.split(' ').nth(1);
    let read_only = mount_options.is_some_and(is_ro) || super_options.is_some_and(is_ro);
    Some((whole[4].to_owned(), read_only))
}

impl SelinuxCollector {
    /// `getSelinuxMountPoint`.
    fn find_mount(&self) -> Option<PathBuf> {
        let default = self.sysfs.join("fs/selinux");
        if verify_mount(&default, None) {
            return Some(default);
        }
        let filesystems = std::fs::read(self.procfs.join("filesystems")).ok()?;
        if !filesystems
            .windows(b"\tselinuxfs\n".len())
            .any(|w| w == b"\tselinuxfs\n")
        {
            return None;
        }
        let mountinfo = std::fs::File::open(self.procfs.join("self/mountinfo")).ok()?;
        let mut found = None;
        goparse::scan_reader(mountinfo, |line| {
            let Some((mount_point, read_only)) = selinuxfs_mount(line) else {
                return true;
            };
            // An empty mount point ends the library's search.
            if mount_point.is_empty() {
                return false;
            }
            let path = match mount_point
                .strip_prefix("/sys")
                .filter(|rest| rest.is_empty() || rest.starts_with('/'))
            {
                Some(rest) => self.sysfs.join(rest.trim_start_matches('/')),
                None => PathBuf::from(&mount_point),
            };
            if verify_mount(&path, Some(read_only)) {
                found = Some(path);
                return false;
            }
            true
        });
        found
    }

    /// `CurrentLabel`: this thread's SELinux label, trailing NUL removed; empty when unreadable.
    fn current_label(&self) -> String {
        let thread_self = self.procfs.join("thread-self/attr/current");
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let task = self.procfs.join(format!("self/task/{tid}/attr/current"));
        let bytes = match std::fs::read(&thread_self) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => std::fs::read(task),
            result => result,
        };
        match bytes {
            Ok(bytes) => {
                let bytes = bytes.strip_suffix(b"\0").unwrap_or(&bytes);
                String::from_utf8_lossy(bytes).into_owned()
            }
            Err(_) => String::new(),
        }
    }

    fn state(&self) -> &State {
        self.state.get_or_init(|| {
            let mount = self.find_mount();
            let enabled = mount.is_some() && self.current_label() != "kernel";
            State { mount, enabled }
        })
    }
}

/// `enforceMode`: the whole `enforce` file as Go's `Atoi` (no trimming: the kernel prints no
/// newline), -1 when it cannot be read or parsed.
fn enforce_mode(mount: &Path) -> i64 {
    std::fs::read(mount.join("enforce"))
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| goparse::parse_int(&text, 10, 64))
        .unwrap_or(-1)
}

/// `readConfig(target)`: the value of the first `target=` line of the config file, quotes
/// trimmed; blank lines and `;` or `#` comments skipped; empty when not found.
fn read_config(path: &Path, target: &str) -> String {
    let Ok(file) = std::fs::File::open(path) else {
        return String::new();
    };
    let mut value = String::new();
    goparse::scan_reader(file, |line| {
        let line = goparse::trim_space(line);
        if line.is_empty() || line[0] == b';' || line[0] == b'#' {
            return true;
        }
        let Some(equals) = line.iter().position(|&b| b == b'=') else {
            return true;
        };
        if &line[..equals] != target.as_bytes() {
            return true;
        }
        let val = &line[equals + 1..];
        let start = val.iter().position(|&b| b != b'"').unwrap_or(val.len());
        let end = val
            .iter()
            .rposition(|&b| b != b'"')
            .map_or(start, |i| i + 1);
        value = String::from_utf8_lossy(&val[start..end.max(start)]).into_owned();
        false
    });
    value
}

/// `defaultEnforceMode`: `SELINUX=` of the config file.
fn default_enforce_mode(config: &Path) -> i64 {
    match read_config(config, "SELINUX").as_str() {
        "enforcing" => 1,
        "permissive" => 0,
        _ => -1,
    }
}

impl Collector for SelinuxCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let enabled = MetricFamily::gauge(
            "node_selinux_enabled",
            "SELinux is enabled, 1 is true, 0 is false",
        );
        let state = self.state();
        let Some(mount) = state.mount.as_ref().filter(|_| state.enabled) else {
            out.push(enabled.with_value(0.0));
            return Ok(());
        };
        out.push(enabled.with_value(1.0));
        out.push(
            MetricFamily::gauge(
                "node_selinux_config_mode",
                "Configured SELinux enforcement mode",
            )
            .with_value(default_enforce_mode(&self.config) as f64),
        );
        out.push(
            MetricFamily::gauge(
                "node_selinux_current_mode",
                "Current SELinux enforcement mode",
            )
            .with_value(enforce_mode(mount) as f64),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Value;

    fn write(path: &Path, text: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn values(out: &[MetricFamily]) -> Vec<(String, f64)> {
        out.iter()
            .map(|f| {
                let Value::Scalar(v) = f.metrics[0].value else {
                    panic!()
                };
                (f.name.clone(), v)
            })
            .collect()
    }

    #[test]
    fn parses_mountinfo_lines() {
        assert_eq!(
            selinuxfs_mount(
                b"24 29 0:22 / /sys/fs/selinux rw,relatime shared:8 - selinuxfs selinuxfs rw"
            ),
            Some(("/sys/fs/selinux".to_owned(), false))
        );
        assert_eq!(
            selinuxfs_mount(b"24 29 0:22 / /sys/fs/selinux ro,relatime - selinuxfs selinuxfs rw"),
            Some(("/sys/fs/selinux".to_owned(), true))
        );
        assert_eq!(
            selinuxfs_mount(b"24 29 0:22 / /sys/fs/selinux rw - selinuxfs selinuxfs ro,seclabel"),
            Some(("/sys/fs/selinux".to_owned(), true))
        );
        assert_eq!(
            selinuxfs_mount(b"22 1 0:20 / /proc rw - proc proc rw"),
            None
        );
        assert_eq!(selinuxfs_mount(b"x - selinuxfs selinuxfs rw"), None);
        assert_eq!(selinuxfs_mount(b""), None);
    }

    #[test]
    fn reads_the_config_as_the_library() {
        let dir = std::env::temp_dir().join(format!("selinux-config-{}", std::process::id()));
        let config = dir.join("config");
        write(
            &config,
            b"# SELINUX=disabled\n; x\n\n SELINUXTYPE=targeted\n  SELINUX=\"enforcing\"  \nSELINUX=permissive\n",
        );
        assert_eq!(default_enforce_mode(&config), 1);
        write(&config, b"SELINUX = enforcing\n");
        assert_eq!(
            default_enforce_mode(&config),
            -1,
            "the key is compared whole"
        );
        write(&config, b"SELINUX=permissive\r\n");
        assert_eq!(default_enforce_mode(&config), 0);
        write(&config, b"SELINUX=\"\"\n");
        assert_eq!(default_enforce_mode(&config), -1);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(default_enforce_mode(&config), -1);
    }

    #[test]
    fn reports_enforcing_from_the_selinuxfs_mount() {
        let root = std::env::temp_dir().join(format!("selinux-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (sys, proc, etc) = (root.join("sys"), root.join("proc"), root.join("etc"));
        let collector = || SelinuxCollector {
            sysfs: sys.clone(),
            procfs: proc.clone(),
            config: etc.join("selinux/config"),
            state: OnceLock::new(),
        };
        // No selinuxfs at all.
        let mut out = Vec::new();
        collector().update(&mut out).unwrap();
        assert_eq!(values(&out), [("node_selinux_enabled".to_owned(), 0.0)]);

        // The default mount point (a copy of it: an enforce file).
        write(&sys.join("fs/selinux/enforce"), b"1");
        write(&sys.join("fs/selinux/policyvers"), b"33");
        write(
            &proc.join("thread-self/attr/current"),
            b"system_u:system_r:super_t:s0\0",
        );
        write(&etc.join("selinux/config"), b"SELINUX=enforcing\n");
        let enforcing = collector();
        let mut out = Vec::new();
        enforcing.update(&mut out).unwrap();
        assert_eq!(
            values(&out),
            [
                ("node_selinux_enabled".to_owned(), 1.0),
                ("node_selinux_config_mode".to_owned(), 1.0),
                ("node_selinux_current_mode".to_owned(), 1.0),
            ]
        );
        // Modes are read at every scrape; a newline in enforce is not a number to Atoi.
        write(&sys.join("fs/selinux/enforce"), b"0\n");
        write(&etc.join("selinux/config"), b"SELINUX=permissive\n");
        let mut out = Vec::new();
        enforcing.update(&mut out).unwrap();
        assert_eq!(
            values(&out)[1..],
            [
                ("node_selinux_config_mode".to_owned(), 0.0),
                ("node_selinux_current_mode".to_owned(), -1.0),
            ]
        );
        // Enabled and the mount are decided once, as the library decides them.
        std::fs::remove_dir_all(sys.join("fs/selinux")).unwrap();
        let mut out = Vec::new();
        enforcing.update(&mut out).unwrap();
        assert_eq!(values(&out)[0].1, 1.0);
        assert_eq!(values(&out)[2].1, -1.0);

        // Elsewhere, found through mountinfo when /proc/filesystems has selinuxfs.
        write(&sys.join("fs/selinux2/enforce"), b"1");
        let mountinfo = b"22 1 0:20 / /proc rw - proc proc rw\n\
              24 23 0:22 / /sys/fs/selinux2 rw,relatime shared:8 - selinuxfs selinuxfs rw\n";
        write(&proc.join("self/mountinfo"), mountinfo);
        assert_eq!(collector().state().mount, None);
        write(
            &proc.join("filesystems"),
            b"nodev\tsysfs\nnodev\tselinuxfs\n",
        );
        assert_eq!(
            collector().state(),
            &State {
                mount: Some(sys.join("fs/selinux2")),
                enabled: true
            }
        );
        // Not when that mount is read-only.
        write(
            &proc.join("self/mountinfo"),
            b"24 23 0:22 / /sys/fs/selinux2 ro,relatime - selinuxfs selinuxfs rw\n",
        );
        assert_eq!(collector().state().mount, None);
        write(&proc.join("self/mountinfo"), mountinfo);

        // The kernel's own label: not enabled.
        write(&proc.join("thread-self/attr/current"), b"kernel\0");
        let mut out = Vec::new();
        collector().update(&mut out).unwrap();
        assert_eq!(values(&out), [("node_selinux_enabled".to_owned(), 0.0)]);
        // Without a label to read: enabled, as the library (its label is then "").
        std::fs::remove_dir_all(proc.join("thread-self")).unwrap();
        let mut out = Vec::new();
        collector().update(&mut out).unwrap();
        assert_eq!(values(&out)[0].1, 1.0);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
