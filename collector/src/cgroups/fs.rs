//! The cgroup v2 hierarchy on disk: where it is mounted, and which directory a cgroup id (the
//! id the kernel programs key by: the cgroup directory's kernfs inode number) belongs to.
use std::{
    collections::HashMap,
    fs::File,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::{ffi::OsStrExt as _, fs::MetadataExt},
    },
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Context as _, bail};
use procfs_core::{FromRead, process::MountInfos};

/// `FILEID_KERNFS`: the file handle type of kernfs (cgroupfs), whose 8 bytes are the node id.
const FILEID_KERNFS: libc::c_int = 0xfe;

/// The cgroup v2 mount to use: `explicit` if given, else from this process's mount table the
/// cgroup2 mount under `sysfs` (a host `/sys` mounted into a container), else the first one
/// (EKS nodes mount it at /sys/fs/cgroup, hybrid hosts at /sys/fs/cgroup/unified).
pub fn find_root(explicit: Option<&Path>, sysfs: &Path) -> anyhow::Result<PathBuf> {
    if let Some(root) = explicit {
        if !root.join("cgroup.procs").exists() {
            bail!(
                "{} is not a cgroup v2 mount (no cgroup.procs)",
                root.display()
            );
        }
        return Ok(root.to_owned());
    }
    let mountinfo = File::open("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let mounts = MountInfos::from_read(mountinfo).context("parsing /proc/self/mountinfo")?;
    let cgroup2: Vec<PathBuf> = mounts
        .into_iter()
        .filter(|m| m.fs_type == "cgroup2")
        .map(|m| m.mount_point)
        .collect();
    cgroup2
        .iter()
        .find(|mount| mount.starts_with(sysfs))
        .or(cgroup2.first())
        .cloned()
        .context("no cgroup v2 (cgroup2) mount in /proc/self/mountinfo: mount one, or pass --collector.ebpf.cgroup.root")
}

/// A cgroup v2 mount, for turning ids into paths.
pub struct CgroupFs {
    root: PathBuf,
    /// The mount's root directory: the mount `open_by_handle_at` resolves handles in.
    root_dir: File,
    /// False once `open_by_handle_at` was refused (it needs CAP_DAC_READ_SEARCH): walk instead.
    by_handle: AtomicBool,
}

/// What an id is, seen from the hierarchy now.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Its path relative to the root, `/` for the root itself, byte for byte (a cgroup name
    /// need not be UTF-8).
    Path(PathBuf),
    /// No such cgroup: it was removed.
    Gone,
    /// It exists, but its path cannot be had (longer than PATH_MAX): skipped, with the reason.
    Unresolvable(String),
}

impl CgroupFs {
    pub fn open(root: &Path) -> anyhow::Result<Self> {
        let root_dir = File::open(root).with_context(|| format!("opening {}", root.display()))?;
        Ok(Self {
            root: root.to_owned(),
            root_dir,
            by_handle: AtomicBool::new(true),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The paths of `ids`: one `open_by_handle_at` each, or, where that is refused, one walk of
    /// the whole hierarchy for all of them.
    pub fn lookup(&self, ids: &[u64]) -> anyhow::Result<HashMap<u64, Lookup>> {
        if self.by_handle.load(Ordering::Relaxed) {
            let mut found = HashMap::with_capacity(ids.len());
            for &id in ids {
                match self.lookup_by_handle(id) {
                    Ok(lookup) => {
                        found.insert(id, lookup);
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENAMETOOLONG) => {
                        found.insert(id, Lookup::Unresolvable(format!("{e}")));
                    }
                    Err(e) if is_refused(&e) => {
                        tracing::info!(err = %e, "open_by_handle_at refused (needs CAP_DAC_READ_SEARCH): finding cgroups by walking the hierarchy");
                        self.by_handle.store(false, Ordering::Relaxed);
                        return self.lookup_by_walking(ids);
                    }
                    Err(e) => return Err(e).context(format!("resolving cgroup id {id}")),
                }
            }
            return Ok(found);
        }
        self.lookup_by_walking(ids)
    }

    /// Whether the cgroup at `path` still is `id` (not removed, nor removed and re-created).
    pub fn still_exists(&self, path: &Path, id: u64) -> bool {
        std::fs::metadata(self.absolute(path)).is_ok_and(|m| m.ino() == id)
    }

    fn absolute(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }

    fn lookup_by_handle(&self, id: u64) -> io::Result<Lookup> {
        #[repr(C)]
        struct KernfsHandle {
            handle_bytes: libc::c_uint,
            handle_type: libc::c_int,
            id: [u8; 8],
        }
        let mut handle = KernfsHandle {
            handle_bytes: 8,
            handle_type: FILEID_KERNFS,
            id: id.to_ne_bytes(),
        };
        // SAFETY: `handle` is a `struct file_handle` with its 8 bytes of payload in place.
        let fd = unsafe {
            libc::open_by_handle_at(
                self.root_dir.as_raw_fd(),
                (&raw mut handle).cast(),
                libc::O_RDONLY | libc::O_CLOEXEC | libc::O_PATH,
            )
        };
        if fd < 0 {
            let error = io::Error::last_os_error();
            return match error.raw_os_error() {
                Some(libc::ESTALE | libc::ENOENT) => Ok(Lookup::Gone),
                _ => Err(error),
            };
        }
        // SAFETY: a descriptor just returned to us, owned from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let target = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
        Ok(self.relative(&target))
    }

    /// `target` (as the kernel prints it) relative to the root.
    fn relative(&self, target: &Path) -> Lookup {
        match target.strip_prefix(&self.root) {
            Ok(rest) => Lookup::Path(Path::new("/").join(rest)),
            // Outside our view of the hierarchy (a cgroup namespace): the kernel's own path.
            Err(_) => Lookup::Path(target.to_owned()),
        }
    }

    fn lookup_by_walking(&self, ids: &[u64]) -> anyhow::Result<HashMap<u64, Lookup>> {
        let mut by_inode = HashMap::new();
        walk(&self.root, Path::new("/"), &mut by_inode)
            .with_context(|| format!("walking {}", self.root.display()))?;
        Ok(ids
            .iter()
            .map(|&id| {
                let lookup = match by_inode.remove(&id) {
                    Some(path) => Lookup::Path(path),
                    None => Lookup::Gone,
                };
                (id, lookup)
            })
            .collect())
    }
}

/// Every cgroup directory under `dir`, by inode. A directory removed during the walk, or too
/// deep for a path (ENAMETOOLONG), is skipped.
fn walk(dir: &Path, relative: &Path, found: &mut HashMap<u64, PathBuf>) -> io::Result<()> {
    let metadata = std::fs::metadata(dir)?;
    found.insert(metadata.ino(), relative.to_owned());
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let child = relative.join(entry.file_name());
        match walk(&entry.path(), &child, found) {
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENAMETOOLONG) => {}
            other => other?,
        }
    }
    Ok(())
}

/// A cgroup path as a label value: UTF-8 as it is, any other byte as `\xNN`, so that two
/// cgroups never share a label and none is lost.
pub fn label(path: &Path) -> String {
    let mut label = String::new();
    for chunk in path.as_os_str().as_bytes().utf8_chunks() {
        label.push_str(chunk.valid());
        for byte in chunk.invalid() {
            label.push_str(&format!("\\x{byte:02x}"));
        }
    }
    label
}

/// Errors meaning "file handles are not for us", as opposed to a failure of one lookup.
fn is_refused(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EPERM | libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL)
    )
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt as _;

    use super::*;

    /// A directory named with bytes that are not UTF-8 is found by walking, stays "existing"
    /// under its exact name, and gets a label no other name shares.
    #[test]
    fn non_utf8_names_are_kept_byte_for_byte() {
        let root = std::env::temp_dir().join(format!("cgroup-names-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let odd = std::ffi::OsStr::from_bytes(b"app-\xff\xfe");
        std::fs::create_dir_all(root.join("kubepods").join(odd)).unwrap();
        std::fs::create_dir_all(root.join("kubepods").join("app-\u{fffd}\u{fffd}")).unwrap();
        let hierarchy = CgroupFs::open(&root).unwrap();
        let inode = |path: &Path| std::fs::metadata(root.join(path)).unwrap().ino();
        let odd_path = Path::new("/kubepods").join(odd);
        let lossy_path = Path::new("/kubepods/app-\u{fffd}\u{fffd}");
        let id = inode(odd_path.strip_prefix("/").unwrap());
        let found = hierarchy.lookup_by_walking(&[id]).unwrap();
        assert_eq!(found[&id], Lookup::Path(odd_path.clone()));
        assert!(hierarchy.still_exists(&odd_path, id));
        assert!(!hierarchy.still_exists(lossy_path, id));
        assert_eq!(label(&odd_path), "/kubepods/app-\\xff\\xfe");
        assert_eq!(label(lossy_path), "/kubepods/app-\u{fffd}\u{fffd}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
