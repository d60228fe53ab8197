//! Reading /proc and /sys files with errors that name the file, shared by the collectors.
use std::{
    ffi::CStr,
    fs::File,
    io::{Read as _, Seek as _},
    os::fd::{AsRawFd as _, FromRawFd as _},
    path::{Path, PathBuf},
    sync::Mutex,
};

use anyhow::Context as _;

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

/// Go's `strconv.ParseUint(s, 0, bits)`: the base from the prefix (`0x`, `0o`, `0b`, a leading
/// `0` for octal, else decimal), underscores between digits, `None` when invalid or out of
/// range; the procfs parsers read /proc/meminfo and /proc/cpuinfo numbers this way.
pub fn go_parse_uint_base0(s: &str, bits: u32) -> Option<u64> {
    let b = s.as_bytes();
    if b.is_empty() {
        return None;
    }
    let (radix, digits): (u32, &[u8]) = if b[0] == b'0' {
        match b.get(1).map(u8::to_ascii_lowercase) {
            Some(b'b') if b.len() >= 3 => (2, &b[2..]),
            Some(b'o') if b.len() >= 3 => (8, &b[2..]),
            Some(b'x') if b.len() >= 3 => (16, &b[2..]),
            _ => (8, &b[1..]),
        }
    } else {
        (10, b)
    };
    let mut value: u64 = 0;
    for &c in digits {
        if c == b'_' {
            continue;
        }
        let digit = char::from(c).to_digit(radix)?;
        value = value
            .checked_mul(u64::from(radix))?
            .checked_add(u64::from(digit))?;
    }
    // Go's underscoreOK: an underscore only between digits (a base prefix counts as one).
    if b.contains(&b'_') {
        let prefixed = radix != 10 && digits.len() + 2 == b.len();
        let mut saw = if prefixed { b'0' } else { b'^' };
        for &c in if prefixed { digits } else { b } {
            if c == b'_' {
                if saw != b'0' {
                    return None;
                }
                saw = b'_';
            } else {
                saw = b'0';
            }
        }
        if saw == b'_' {
            return None;
        }
    }
    (bits >= 64 || value < (1u64 << bits)).then_some(value)
}

/// The `<prefix>[0-9]*` entries of a directory (`cpu3`, `thermal_zone0`...), sorted by name as
/// Go's `filepath.Glob` returns them (so `cpu10` before `cpu2`).
pub fn numbered_entries(
    dir: &Path,
    prefix: &str,
) -> std::io::Result<Vec<(String, std::path::PathBuf)>> {
    let mut found: Vec<(String, std::path::PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let rest = name.strip_prefix(prefix)?;
            rest.starts_with(|c: char| c.is_ascii_digit())
                .then(|| (name.clone(), entry.path()))
        })
        .collect();
    found.sort();
    Ok(found)
}

/// The `cpu[0-9]*` entries of a sysfs CPU folder ([`numbered_entries`]); none when the folder
/// cannot be read.
pub fn cpu_dirs(dir: &Path) -> Vec<(String, std::path::PathBuf)> {
    numbered_entries(dir, "cpu").unwrap_or_default()
}

/// node_exporter's `readUintFromFile`: the whole file, trimmed, as a decimal `u64`.
pub fn uint_from_file(path: &Path) -> anyhow::Result<u64> {
    let text = to_string(path)?;
    parse_number(text.trim(), "value", path)
}

/// A sysfs attribute as procfs' `util.SysReadFile` reads it: one read, whitespace trimmed. The
/// `io::Error` is kept so callers can skip attributes the kernel refuses (EINVAL, ENOENT...).
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

/// Go's `strconv.ParseInt(s, 0, 64)`: an optional sign, then [`go_parse_uint_base0`]'s syntax.
pub fn parse_go_int(s: &str) -> Option<i64> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let magnitude = go_parse_uint_base0(digits, 64)?;
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_uint_base0_follows_go() {
        assert_eq!(go_parse_uint_base0("42", 64), Some(42));
        assert_eq!(go_parse_uint_base0("0", 64), Some(0));
        assert_eq!(go_parse_uint_base0("0x1f", 64), Some(31));
        assert_eq!(go_parse_uint_base0("010", 64), Some(8));
        assert_eq!(go_parse_uint_base0("0b101", 64), Some(5));
        assert_eq!(go_parse_uint_base0("0x_1f", 64), Some(31));
        assert_eq!(go_parse_uint_base0("1_000", 64), Some(1000));
        assert_eq!(go_parse_uint_base0("0_7", 64), Some(7));
        assert_eq!(go_parse_uint_base0("_1", 64), None);
        assert_eq!(go_parse_uint_base0("1_", 64), None);
        assert_eq!(go_parse_uint_base0("1__0", 64), None);
        assert_eq!(go_parse_uint_base0("", 64), None);
        assert_eq!(go_parse_uint_base0("0x", 64), None);
        assert_eq!(go_parse_uint_base0("-1", 64), None);
        assert_eq!(go_parse_uint_base0("+1", 64), None);
        assert_eq!(go_parse_uint_base0("09", 64), None);
        assert_eq!(go_parse_uint_base0("4294967296", 32), None);
        assert_eq!(go_parse_uint_base0("4294967295", 32), Some(4294967295));
        assert_eq!(go_parse_uint_base0("18446744073709551616", 64), None);
    }

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
    fn go_ints() {
        assert_eq!(parse_go_int("4099"), Some(4099));
        assert_eq!(parse_go_int("0x1003"), Some(4099));
        assert_eq!(parse_go_int("-1"), Some(-1));
        assert_eq!(parse_go_int("010"), Some(8));
        assert_eq!(parse_go_int("0"), Some(0));
        assert_eq!(parse_go_int(""), None);
        assert_eq!(parse_go_int("12a"), None);
        assert_eq!(parse_go_int("0x"), None);
        assert_eq!(parse_go_int("9223372036854775808"), None);
        assert_eq!(parse_go_int("-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_go_int("-9223372036854775809"), None);
        assert_eq!(parse_go_int("+0x_1f"), Some(31));
    }
}
