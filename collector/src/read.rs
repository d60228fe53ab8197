//! Reading /proc and /sys files, shared by the collectors: whole files with errors that name
//! them, files kept open between scrapes, reads capped as procfs caps them, sysfs attributes as
//! procfs' `util.SysReadFile` reads them, and directory listings in Go's order. Go's rules for
//! the text read are in [`crate::goparse`].
use std::{
    ffi::{CStr, OsString},
    fs::{File, FileType},
    io::{Read as _, Seek as _},
    os::fd::{AsRawFd as _, FromRawFd as _},
    path::{Path, PathBuf},
    sync::Mutex,
};

use anyhow::Context as _;

use crate::goparse;

/// The whole file, as text.
pub fn to_string(path: &Path) -> anyhow::Result<String> {
    naming(File::open(path).and_then(|file| read_rest(&file)), path)
}

/// Reads the rest of a /proc or /sys file into a buffer sized for the usual ones.
/// `fs::read_to_string` asks for the size first (always 0 here) and then starts with a 32-byte
/// read, and every read of a /proc table makes the kernel walk back to where the last one stopped.
fn read_rest(file: &File) -> std::io::Result<String> {
    let mut text = String::with_capacity(16 * 1024);
    // `Take` has no size hint to ask for: it reads straight into the spare capacity.
    file.take(u64::MAX).read_to_string(&mut text)?;
    Ok(text)
}

/// The whole file, as text; `None` when it does not exist (an optional file: a disabled
/// protocol, an absent module).
pub fn optional(path: &Path) -> anyhow::Result<Option<String>> {
    optional_naming(File::open(path).and_then(|file| read_rest(&file)), path)
}

/// A read's result with an error naming the file.
fn naming(result: std::io::Result<String>, path: &Path) -> anyhow::Result<String> {
    result.with_context(|| format!("reading {}", path.display()))
}

/// [`naming`], with a file that does not exist as `None`.
fn optional_naming(result: std::io::Result<String>, path: &Path) -> anyhow::Result<Option<String>> {
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        result => naming(result, path).map(Some),
    }
}

/// A /proc file read every scrape, kept open between scrapes. Reading again from offset 0 makes
/// the kernel produce the file afresh (a seq_file starts over at 0, a sysctl handler reads at 0), and
/// the open and close this saves, with their walk through `/proc/self/net`, cost about as much
/// as the read. A kept file that stops reading (a module unloaded: EIO) is opened again by
/// path, so a file that went away is found missing exactly as a fresh open finds it.
pub struct KeptFile {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

impl KeptFile {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            file: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole file, as text.
    pub fn read(&self) -> std::io::Result<String> {
        let mut kept = self.file.lock().expect("kept file lock poisoned");
        if let Some(file) = kept.as_ref() {
            match read_from_start(file) {
                Ok(text) => return Ok(text),
                // Gone under the open file: opened again below, which finds it missing or new.
                Err(error) if went_away(&error) => *kept = None,
                // Refused by the kernel on every read (PSI off: EOPNOTSUPP): stays open.
                Err(error) => return Err(error),
            }
        }
        let file = File::open(&self.path)?;
        let result = read_from_start(&file);
        if !result.as_ref().is_err_and(went_away) {
            *kept = Some(file);
        }
        result
    }

    /// [`read`](Self::read) with an error naming the file.
    pub fn to_string(&self) -> anyhow::Result<String> {
        naming(self.read(), &self.path)
    }

    /// [`to_string`](Self::to_string), `None` when the file does not exist (see [`optional`]).
    pub fn optional(&self) -> anyhow::Result<Option<String>> {
        optional_naming(self.read(), &self.path)
    }
}

/// Whether a read error of a kept file means its /proc entry went away: a module's entry
/// removed (EIO), a sysctl table unregistered (ENOENT), a device gone (ENODEV, ESTALE).
fn went_away(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EIO | libc::ENOENT | libc::ENODEV | libc::ESTALE)
    )
}

/// `file` from its start to its end.
fn read_from_start(mut file: &File) -> std::io::Result<String> {
    file.seek(std::io::SeekFrom::Start(0))?;
    read_rest(file)
}

/// procfs's `parseCPURange` ("0-3,8,10-11"): sysfs CPU lists such as `isolated` and `offline`.
pub fn parse_cpu_range(text: &str) -> anyhow::Result<Vec<u16>> {
    let text = text.strip_suffix('\n').unwrap_or(text);
    let mut cpus = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        if part.contains('-') {
            let bounds: Vec<&str> = part.split('-').collect();
            let [start, end] = bounds[..] else {
                anyhow::bail!("invalid cpu range: {part}");
            };
            let start: i64 = start
                .parse()
                .with_context(|| format!("invalid cpu start range: {part}"))?;
            let end: i64 = end
                .parse()
                .with_context(|| format!("invalid cpu end range: {part}"))?;
            cpus.extend((start..=end).map(|cpu| cpu as u16));
        } else {
            let cpu: i64 = part
                .parse()
                .with_context(|| format!("invalid cpu: {part}"))?;
            cpus.push(cpu as u16);
        }
    }
    Ok(cpus)
}

/// Parses `field` of `path` as a number, with an error naming both.
pub fn parse_number<T>(value: &str, field: &str, path: &Path) -> anyhow::Result<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    value
        .parse()
        .with_context(|| format!("{}: {field}: bad number {value:?}", path.display()))
}

/// The `<prefix>[0-9]*` entries of a directory (`cpu3`, `thermal_zone0`...), sorted by name as
/// Go's `filepath.Glob` returns them (so `cpu10` before `cpu2`).
pub fn numbered_entries(dir: &Path, prefix: &str) -> std::io::Result<Vec<(String, PathBuf)>> {
    let names = glob_names(dir, |name| {
        name.strip_prefix(prefix.as_bytes())
            .is_some_and(|rest| rest.first().is_some_and(u8::is_ascii_digit))
    })?;
    Ok(names
        .into_iter()
        .filter_map(|name| {
            let path = dir.join(&name);
            Some((name.into_string().ok()?, path))
        })
        .collect())
}

/// The `cpu[0-9]*` entries of a sysfs CPU folder ([`numbered_entries`]); none when the folder
/// cannot be read.
pub fn cpu_dirs(dir: &Path) -> Vec<(String, PathBuf)> {
    numbered_entries(dir, "cpu").unwrap_or_default()
}

/// node_exporter's `readUintFromFile` and procfs' `util.ReadUintFromFile`: the whole file,
/// `strings.TrimSpace`d, as a decimal `u64` (Go's `ParseUint(s, 10, 64)`: no sign). A value that
/// does not parse is an `InvalidData` error, so that callers can still tell a missing file apart.
pub fn read_uint_file(path: &Path) -> std::io::Result<u64> {
    let bytes = std::fs::read(path)?;
    let text = String::from_utf8_lossy(goparse::trim_space(&bytes));
    goparse::parse_uint(&text, 10, 64).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("parsing {text:?}: not a decimal unsigned 64-bit number"),
        )
    })
}

/// [`read_uint_file`] with an error naming the file.
pub fn uint_from_file(path: &Path) -> anyhow::Result<u64> {
    read_uint_file(path).with_context(|| format!("reading {}", path.display()))
}

/// procfs' `util.ReadFileNoStat` bound: /proc files report a size of 0, so upstream reads them
/// without asking and stops at 1 MiB; the collectors that follow it read at most this much.
pub const NO_STAT_LIMIT: u64 = 1024 * 1024;

/// The first `limit` bytes of a file (procfs' `util.ReadFileNoStat` with [`NO_STAT_LIMIT`]): a
/// file that grows without bound costs a scrape no more than that.
pub fn capped(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?.take(limit).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// [`capped`] as text; invalid UTF-8 is an `InvalidData` error.
pub fn capped_string(path: &Path, limit: u64) -> std::io::Result<String> {
    let mut text = String::new();
    File::open(path)?.take(limit).read_to_string(&mut text)?;
    Ok(text)
}

/// procfs' `util.SysReadFile`: [`sys_read_raw`], then `bytes.TrimSpace`. Longer values are cut
/// at 128 bytes, as upstream cuts them. Invalid UTF-8 is replaced as
/// [`goparse::to_valid_utf8`] does.
pub fn sys_read_file(path: &Path) -> std::io::Result<String> {
    sys_read_attribute(path).map_err(|e| e.error)
}

/// A [`sys_read_raw`] failure: the error, and whether the file opened (procfs tells some
/// errors of the `read(2)` apart by their text, which an open error's text never equals).
#[derive(Debug)]
pub struct SysReadError {
    pub error: std::io::Error,
    pub at_read: bool,
}

impl SysReadError {
    /// Whether the error is `errno` returned by the read itself (Go's `err.Error() == "..."`).
    pub fn read_errno(&self, errno: i32) -> bool {
        self.at_read && self.error.raw_os_error() == Some(errno)
    }

    /// Go's `os.IsNotExist`.
    pub fn not_found(&self) -> bool {
        self.error.kind() == std::io::ErrorKind::NotFound
    }

    /// Go's `os.IsPermission`.
    pub fn permission(&self) -> bool {
        self.error.kind() == std::io::ErrorKind::PermissionDenied
    }

    /// Go's `errors.Is(err, syscall.EINVAL)`, at the open or the read.
    pub fn invalid(&self) -> bool {
        self.error.raw_os_error() == Some(libc::EINVAL)
    }
}

/// [`sys_read_file`], telling an error of the open from one of the read.
pub fn sys_read_attribute(path: &Path) -> Result<String, SysReadError> {
    let bytes = sys_read_raw(path)?;
    Ok(goparse::to_valid_utf8(goparse::trim_space(&bytes)))
}

/// A sysfs attribute as procfs' `util.SysReadFile` and node_exporter's own `sysReadFile` read
/// it, untrimmed: one `read(2)` of at most 128 bytes (a broken driver answering EAGAIN forever
/// must not make the scrape spin; EINTR is retried, as Go retries it).
pub fn sys_read_raw(path: &Path) -> Result<Vec<u8>, SysReadError> {
    let mut file = File::open(path).map_err(|error| SysReadError {
        error,
        at_read: false,
    })?;
    let mut buffer = [0u8; 128];
    loop {
        match file.read(&mut buffer) {
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                return Err(SysReadError {
                    error,
                    at_read: true,
                });
            }
            Ok(n) => return Ok(buffer[..n].to_vec()),
        }
    }
}

/// Go's `errors.Is(err, os.ErrNotExist)` (`kind` NotFound) or `os.ErrPermission`
/// (PermissionDenied) through an error chain: an `io::Error` of that kind is in it. Errors that
/// upstream does not wrap (`%v`, parse errors) carry no `io::Error`.
pub fn chain_has(error: &anyhow::Error, kind: std::io::ErrorKind) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == kind)
    })
}

/// One entry of [`read_dir_sorted`].
pub struct DirEntry {
    pub name: OsString,
    pub path: PathBuf,
    /// The entry itself (a symlink is a symlink), as Go's `DirEntry.Type()`.
    pub file_type: FileType,
}

/// Go's `os.ReadDir`: the entries of `dir` sorted by name.
pub fn read_dir_sorted(dir: &Path) -> std::io::Result<Vec<DirEntry>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        entries.push(DirEntry {
            name: entry.file_name(),
            path: entry.path(),
            file_type: entry.file_type()?,
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// The names of Go's `os.ReadDir`, sorted, as text (a name that is not UTF-8 is read lossily:
/// sysfs names are ASCII). Unlike [`read_dir_sorted`] the types are not asked for; unlike
/// [`glob_names`] an entry that cannot be read fails the listing, as it fails `ReadDir`.
pub fn sorted_names(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = std::fs::read_dir(dir)?
        .map(|entry| entry.map(|entry| entry.file_name()))
        .collect::<std::io::Result<Vec<_>>>()?;
    names.sort();
    Ok(names
        .into_iter()
        .map(|name| name.to_string_lossy().into_owned())
        .collect())
}

/// Go's `filepath.Glob(dir + "/" + pattern)` for a pattern without separators: the entries of
/// `dir` whose name `matches`, sorted. Glob ignores I/O errors, so a `dir` that cannot be read
/// matches nothing upstream; the error is kept for callers that log it.
pub fn glob(dir: &Path, matches: impl Fn(&[u8]) -> bool) -> std::io::Result<Vec<PathBuf>> {
    Ok(glob_names(dir, matches)?
        .into_iter()
        .map(|name| dir.join(name))
        .collect())
}

/// The names of [`glob`]'s entries, sorted bytewise; an entry that cannot be read is left out,
/// as Go's `Glob` leaves it out.
pub fn glob_names(dir: &Path, matches: impl Fn(&[u8]) -> bool) -> std::io::Result<Vec<OsString>> {
    use std::os::unix::ffi::OsStrExt as _;
    let mut names: Vec<OsString> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name())
        .filter(|name| matches(name.as_bytes()))
        .collect();
    names.sort();
    Ok(names)
}

/// A sysfs attribute in one read of up to 4 KiB (procfs' `util.SysReadFile` reads at most 128
/// bytes: [`sys_read_file`]), lossily decoded, whitespace trimmed. The `io::Error` is kept so
/// callers can skip attributes the kernel refuses (EINVAL, ENOENT...).
pub fn sys_attribute(path: &Path) -> std::io::Result<String> {
    read_attribute(File::open(path)?)
}

fn read_attribute(mut file: File) -> std::io::Result<String> {
    let mut buffer = [0u8; 4096];
    let n = file.read(&mut buffer)?;
    Ok(String::from_utf8_lossy(&buffer[..n]).trim().to_owned())
}

/// A sysfs directory opened once, so that each attribute in it is opened by name alone: opening
/// `/sys/class/net/eth0/mtu` by its full path walks every component and the device symlink
/// again, which costs more than reading the attribute.
pub struct SysDir(File);

impl SysDir {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        File::open(path).map(Self)
    }

    /// The directory's inode number. sysfs gives a device's directory a new one when the device
    /// is created again, so it tells a device from a later one of the same name.
    pub fn inode(&self) -> std::io::Result<u64> {
        use std::os::unix::fs::MetadataExt as _;
        Ok(self.0.metadata()?.ino())
    }

    /// [`sys_attribute`] of the file `name` in this directory.
    pub fn attribute(&self, name: &CStr) -> std::io::Result<String> {
        // SAFETY: the directory fd is open for self's lifetime and `name` is NUL-terminated.
        let fd = unsafe {
            libc::openat(
                self.0.as_raw_fd(),
                name.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nobody else; the File closes it.
        read_attribute(unsafe { File::from_raw_fd(fd) })
    }
}

/// Whether a sysfs read error means "this attribute is not available here" (procfs'
/// `canIgnoreError`): missing, not permitted, EINVAL or EOPNOTSUPP.
pub fn is_unavailable(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
    ) || matches!(
        error.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ranges() {
        assert_eq!(parse_cpu_range("1,10-12\n").unwrap(), [1, 10, 11, 12]);
        assert_eq!(parse_cpu_range("2,4-5\n").unwrap(), [2, 4, 5]);
        assert_eq!(parse_cpu_range("\n").unwrap(), Vec::<u16>::new());
        assert_eq!(parse_cpu_range("").unwrap(), Vec::<u16>::new());
        assert!(parse_cpu_range("1-2-3").is_err());
        assert!(parse_cpu_range("a").is_err());
        assert!(parse_cpu_range("1-b").is_err());
    }

    #[test]
    fn kept_files_read_afresh_and_find_a_removed_file_missing() {
        let dir = std::env::temp_dir().join(format!("kept-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("counter");
        let kept = KeptFile::new(path.clone());
        assert_eq!(kept.optional().unwrap(), None);
        // Longer than the first read, so it takes several.
        let long = "x".repeat(40 * 1024);
        std::fs::write(&path, &long).unwrap();
        assert_eq!(kept.to_string().unwrap(), long);
        // Rewritten in place (the same open file): read again from the start.
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"2\n"))
            .unwrap();
        assert_eq!(kept.to_string().unwrap(), "2\n");
        std::fs::remove_dir_all(&dir).unwrap();
        // Still open, so still readable: regular files outlive their name. /proc entries of an
        // unloaded module fail instead, and are then opened again by path.
        assert_eq!(kept.to_string().unwrap(), "2\n");
        assert!(
            KeptFile::new(path)
                .to_string()
                .unwrap_err()
                .to_string()
                .contains("counter")
        );

        // A read the kernel refuses for good (here EISDIR; PSI turned off gives EOPNOTSUPP)
        // keeps the file open rather than opening it again every scrape.
        let refused = KeptFile::new(std::env::temp_dir());
        let error = refused.read().unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::EISDIR));
        assert!(refused.file.lock().unwrap().is_some());
        assert_eq!(
            refused.read().unwrap_err().raw_os_error(),
            Some(libc::EISDIR)
        );
    }

    #[test]
    fn attributes_are_read_as_procfs_reads_them() {
        let dir = std::env::temp_dir().join(format!("sys-read-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let read = |name: &str, bytes: &[u8]| {
            std::fs::write(dir.join(name), bytes).unwrap();
            sys_read_file(&dir.join(name)).unwrap()
        };
        // One read of 128 bytes, then trimmed.
        let long = format!("  {}\n", "x".repeat(200));
        assert_eq!(read("long", long.as_bytes()), "x".repeat(126));
        assert_eq!(
            read("bytes", "\u{0}a\u{fffd}\n".as_bytes()),
            "\u{0}a\u{fffd}"
        );
        assert_eq!(read("latin1", b"\xe9t\xe9\n"), "\u{fffd}t\u{fffd}");
        // A run of invalid bytes is one replacement, as Go's `strings.ToValidUTF8`.
        assert_eq!(read("run", b"LNV\xff\xfe-1\n"), "LNV\u{fffd}-1");
        let error = sys_read_attribute(&dir.join("missing")).unwrap_err();
        assert!(error.not_found() && !error.at_read);
        let error = sys_read_attribute(&dir).unwrap_err();
        assert!(error.read_errno(libc::EISDIR));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
