//! How prometheus/procfs and node_exporter read sysfs attributes and parse their values, for
//! the sysfs class collectors ported from them (dmi, drm, edac, infiniband, pcidevice,
//! powersupplyclass, rapl, selinux, watchdog): Go's `strconv` number syntax (stricter than
//! Rust's `parse`: no `+` on unsigned numbers, ranges by bit size), `strings.TrimSpace`,
//! `strings.ToValidUTF8`, `filepath.Clean`, `os.ReadDir`'s sorted listing, `bufio.Scanner`'s
//! line limit and procfs' `util.SysReadFile`.
use std::{
    ffi::OsString,
    fs::FileType,
    io::{BufRead, Read as _},
    path::{Path, PathBuf},
};

/// procfs' `util.SysReadFile`: one `read(2)` of at most 128 bytes (a broken driver answering
/// EAGAIN forever must not make the scrape spin), then `bytes.TrimSpace`. Longer values are cut
/// at 128 bytes, as upstream cuts them. Invalid UTF-8 is replaced as [`to_valid_utf8`] does.
pub fn sys_read_file(path: &Path) -> std::io::Result<String> {
    sys_read_attribute(path).map_err(|e| e.error)
}

/// A [`sys_read_attribute`] failure: the error, and whether the file opened (procfs tells some
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
    let mut file = std::fs::File::open(path).map_err(|error| SysReadError {
        error,
        at_read: false,
    })?;
    let mut buffer = [0u8; 128];
    let n = loop {
        match file.read(&mut buffer) {
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                return Err(SysReadError {
                    error,
                    at_read: true,
                });
            }
            Ok(n) => break n,
        }
    };
    Ok(to_valid_utf8(trim_space(&buffer[..n])))
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

/// node_exporter's `readUintFromFile` and procfs' `util.ReadUintFromFile`: the whole file,
/// `strings.TrimSpace`d, as a decimal `u64` (Go's `ParseUint(s, 10, 64)`: no sign). A value that
/// does not parse is an `InvalidData` error, so that callers can still tell a missing file apart.
pub fn read_uint_file(path: &Path) -> std::io::Result<u64> {
    let bytes = std::fs::read(path)?;
    let text = String::from_utf8_lossy(trim_space(&bytes));
    parse_uint(&text, 10, 64).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("parsing {text:?}: not a decimal unsigned 64-bit number"),
        )
    })
}

/// Go's `bytes.TrimSpace`: leading and trailing Unicode white space (`unicode.IsSpace`, the
/// same set as Rust's `char::is_whitespace`) removed; invalid UTF-8 is not space.
pub fn trim_space(mut bytes: &[u8]) -> &[u8] {
    while let Some((c, n)) = decode_first(bytes) {
        if !c.is_whitespace() {
            break;
        }
        bytes = &bytes[n..];
    }
    while let Some((c, n)) = decode_last(bytes) {
        if !c.is_whitespace() {
            break;
        }
        bytes = &bytes[..bytes.len() - n];
    }
    bytes
}

/// The first UTF-8 character of `bytes` and its length; `None` if empty or not valid UTF-8.
fn decode_first(bytes: &[u8]) -> Option<(char, usize)> {
    let head = &bytes[..bytes.len().min(4)];
    let valid = match std::str::from_utf8(head) {
        Ok(text) => text,
        Err(error) => std::str::from_utf8(&head[..error.valid_up_to()]).ok()?,
    };
    let c = valid.chars().next()?;
    Some((c, c.len_utf8()))
}

/// The last UTF-8 character of `bytes` and its length; `None` if empty or not valid UTF-8.
fn decode_last(bytes: &[u8]) -> Option<(char, usize)> {
    (1..=bytes.len().min(4)).find_map(|n| {
        let tail = &bytes[bytes.len() - n..];
        let c = std::str::from_utf8(tail).ok()?.chars().next()?;
        (c.len_utf8() == n).then_some((c, n))
    })
}

/// Go's `strings.ToValidUTF8(s, "\uFFFD")`: each run of invalid bytes becomes one replacement
/// character (Rust's lossy conversion puts one per invalid sequence).
pub fn to_valid_utf8(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut in_invalid_run = false;
    for chunk in bytes.utf8_chunks() {
        if !chunk.valid().is_empty() {
            out.push_str(chunk.valid());
            in_invalid_run = false;
        }
        if !chunk.invalid().is_empty() && !in_invalid_run {
            out.push(char::REPLACEMENT_CHARACTER);
            in_invalid_run = true;
        }
    }
    out
}

/// Go's `strconv.ParseUint(s, base, bits)` for base 2 to 36 (base 0 is
/// [`crate::read::go_parse_uint_base0`]): digits only, no sign, no underscores, no prefix, and
/// within `bits`.
pub fn parse_uint(s: &str, base: u32, bits: u32) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for c in s.chars() {
        let digit = c.to_digit(base)?;
        value = value
            .checked_mul(u64::from(base))?
            .checked_add(u64::from(digit))?;
    }
    (bits >= 64 || value < (1u64 << bits)).then_some(value)
}

/// Go's `strconv.ParseInt(s, base, bits)`: an optional `+` or `-`, then [`parse_uint`]'s
/// syntax (base 0: [`crate::read::go_parse_uint_base0`]'s), within a signed `bits`.
pub fn parse_int(s: &str, base: u32, bits: u32) -> Option<i64> {
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    let magnitude = if base == 0 {
        crate::read::go_parse_uint_base0(digits, 64)?
    } else {
        parse_uint(digits, base, 64)?
    };
    let cutoff = 1u64 << (bits.clamp(1, 64) - 1);
    if negative {
        (magnitude <= cutoff).then(|| 0i64.wrapping_sub_unsigned(magnitude))
    } else {
        (magnitude < cutoff).then_some(magnitude as i64)
    }
}

/// Go's `strconv.ParseFloat(s, bits)` for bits 32 or 64: decimal numbers, `inf`/`infinity`
/// with an optional sign and `nan` without, any case; a finite number out of range is an error
/// (`ErrRange`), not an infinity. With 32 bits the value is rounded to an `f32` first. Go's
/// hexadecimal floats (`0x1p4`) are not accepted: sysfs never prints them.
pub fn parse_float(s: &str, bits: u32) -> Option<f64> {
    let (negative, body) = match s.as_bytes().first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    if body.eq_ignore_ascii_case("inf") || body.eq_ignore_ascii_case("infinity") {
        return Some(if negative {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    if body.eq_ignore_ascii_case("nan") {
        return (body.len() == s.len()).then_some(f64::NAN);
    }
    // Rust takes the same decimal syntax; only its own words and a second sign are kept out.
    if !body.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let value = if bits == 32 {
        f64::from(s.parse::<f32>().ok()?)
    } else {
        s.parse::<f64>().ok()?
    };
    value.is_finite().then_some(value)
}

/// Go's `fmt.Sprintf("%0<width>x", v)`: lower-case hexadecimal, zero-padded to `width`
/// characters, a negative number as `-` and its magnitude (the sign takes one of the width).
pub fn go_hex(value: i64, width: usize) -> String {
    let digits = format!("{:x}", value.unsigned_abs());
    if value < 0 {
        format!("-{digits:0>pad$}", pad = width.saturating_sub(1))
    } else {
        format!("{digits:0>width$}")
    }
}

/// Go's `filepath.Clean` of a path given as text: repeated and trailing slashes, `.` elements,
/// and `..` with the element before it (or at the root) removed; empty is `.`.
pub fn clean_path(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            part => parts.push(part),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// Go's `filepath.Base`: the last element, trailing slashes ignored; `.` for empty, `/` for
/// only slashes.
pub fn base_name(path: &str) -> &str {
    if path.is_empty() {
        return ".";
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/";
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed)
}

/// Go's `filepath.Dir`: all but the last element, cleaned.
pub fn dir_name(path: &str) -> String {
    let end = path.rfind('/').map_or(0, |i| i + 1);
    clean_path(&path[..end])
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

/// Go's `filepath.Glob(dir + "/" + pattern)` for a pattern without separators: the entries of
/// `dir` whose name `matches`, sorted; none when `dir` cannot be read (Glob ignores I/O errors).
pub fn glob(dir: &Path, matches: impl Fn(&[u8]) -> bool) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<OsString> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.file_name())
        .filter(|name| matches(name.as_bytes()))
        .collect();
    names.sort();
    names.into_iter().map(|name| dir.join(name)).collect()
}

/// `bufio.MaxScanTokenSize`: the longest line a default `bufio.Scanner` reads.
const MAX_SCAN_TOKEN: usize = 64 * 1024;

/// Go's `bufio.Scanner` with `ScanLines` over a reader: lines without their `\n` (and a `\r`
/// before it), the last one without a newline too. Scanning stops, as the scanner does, at a
/// read error or at a line that does not fit its 64 KiB buffer; `line` is called for each line
/// and may stop the scan by returning `false`. Memory stays within one buffer whatever the input.
pub fn scan_lines(reader: impl std::io::Read, mut line: impl FnMut(&[u8]) -> bool) {
    let mut reader = std::io::BufReader::with_capacity(MAX_SCAN_TOKEN, reader);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        // At most one buffer and a newline: a longer line ends the scan.
        let limit = (MAX_SCAN_TOKEN + 1) as u64;
        let n = match (&mut reader).take(limit).read_until(b'\n', &mut buffer) {
            Ok(n) => n,
            Err(_) => return,
        };
        if n == 0 {
            return;
        }
        let text = match buffer.strip_suffix(b"\n") {
            Some(text) => text,
            // Without a newline: the end of the input, or a line too long for the buffer.
            None if buffer.len() >= MAX_SCAN_TOKEN => return,
            None => &buffer[..],
        };
        if text.len() >= MAX_SCAN_TOKEN {
            return;
        }
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if !line(text) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_as_go() {
        assert_eq!(trim_space(b" \t\x0bvalue\n\r\x0c"), b"value");
        assert_eq!(trim_space("\u{a0}x\u{3000}".as_bytes()), b"x");
        assert_eq!(trim_space(b"\xff \n"), b"\xff");
        assert_eq!(trim_space(b"\n\n"), b"");
        assert_eq!(trim_space(b""), b"");
        // U+001C is not space for Go either.
        assert_eq!(trim_space(b"\x1cx\x1c"), b"\x1cx\x1c");
    }

    #[test]
    fn replaces_runs_of_invalid_bytes_once() {
        assert_eq!(to_valid_utf8(b"LNV\xff\xfe-1"), "LNV\u{fffd}-1");
        assert_eq!(to_valid_utf8(b"\xffa\xff"), "\u{fffd}a\u{fffd}");
        assert_eq!(to_valid_utf8("ok \u{fffd}".as_bytes()), "ok \u{fffd}");
        assert_eq!(to_valid_utf8(b"\xe2\x82"), "\u{fffd}");
    }

    #[test]
    fn parses_numbers_as_go() {
        assert_eq!(parse_uint("42", 10, 64), Some(42));
        assert_eq!(parse_uint("+42", 10, 64), None);
        assert_eq!(parse_uint("-1", 10, 64), None);
        assert_eq!(parse_uint("1_0", 10, 64), None);
        assert_eq!(parse_uint("", 10, 64), None);
        assert_eq!(parse_uint("18446744073709551615", 10, 64), Some(u64::MAX));
        assert_eq!(parse_uint("18446744073709551616", 10, 64), None);
        assert_eq!(parse_uint("4294967296", 10, 32), None);
        assert_eq!(parse_uint("ffff", 16, 32), Some(0xffff));
        assert_eq!(parse_uint("0xff", 16, 32), None);
        assert_eq!(parse_int("-1", 10, 32), Some(-1));
        assert_eq!(parse_int("+7", 10, 32), Some(7));
        assert_eq!(parse_int("2147483648", 10, 32), None);
        assert_eq!(parse_int("-2147483648", 10, 32), Some(-2147483648));
        assert_eq!(parse_int("-0x10", 0, 32), Some(-16));
        assert_eq!(parse_int("0x010802", 0, 32), Some(0x010802));
        assert_eq!(parse_int("1f", 16, 32), Some(31));
        assert_eq!(parse_int("-", 10, 64), None);
        assert_eq!(parse_int("9223372036854775807", 10, 64), Some(i64::MAX));
        assert_eq!(parse_int("-9223372036854775808", 10, 64), Some(i64::MIN));
        assert_eq!(parse_int("9223372036854775808", 10, 64), None);
    }

    #[test]
    fn parses_floats_as_go() {
        assert_eq!(parse_float("8.0", 64), Some(8.0));
        assert_eq!(parse_float("2.5", 32), Some(2.5));
        assert_eq!(parse_float("0.1", 32), Some(f64::from(0.1f32)));
        assert_eq!(parse_float("1e39", 32), None);
        assert_eq!(parse_float("1e39", 64), Some(1e39));
        assert_eq!(parse_float("1e400", 64), None);
        assert_eq!(parse_float("+Inf", 64), Some(f64::INFINITY));
        assert!(parse_float("NaN", 64).unwrap().is_nan());
        assert_eq!(parse_float("-nan", 64), None);
        assert_eq!(parse_float("", 64), None);
        assert_eq!(parse_float("++1", 64), None);
        assert_eq!(parse_float("1_0", 64), None);
    }

    #[test]
    fn formats_hex_as_go() {
        assert_eq!(go_hex(0, 4), "0000");
        assert_eq!(go_hex(0x1f, 2), "1f");
        assert_eq!(go_hex(0x12345, 4), "12345");
        assert_eq!(go_hex(-1, 4), "-001");
        assert_eq!(go_hex(-1, 0), "-1");
        assert_eq!(go_hex(7, 0), "7");
    }

    #[test]
    fn cleans_paths_as_go() {
        assert_eq!(
            clean_path("collector/fixtures/sys/class/powercap/x"),
            "collector/fixtures/sys/class/powercap/x"
        );
        assert_eq!(clean_path("/sys//class/./powercap/"), "/sys/class/powercap");
        assert_eq!(clean_path("/../sys"), "/sys");
        assert_eq!(clean_path("a/../../b"), "../b");
        assert_eq!(clean_path("./"), ".");
        assert_eq!(clean_path(""), ".");
        assert_eq!(clean_path("/"), "/");
    }

    #[test]
    fn splits_paths_as_go() {
        let link = "../../../devices/pci0000:00/0000:00:1e.0/0000:10:00.0";
        assert_eq!(base_name(link), "0000:10:00.0");
        assert_eq!(base_name(&dir_name(link)), "0000:00:1e.0");
        assert_eq!(base_name("a/b//"), "b");
        assert_eq!(base_name(""), ".");
        assert_eq!(base_name("//"), "/");
        assert_eq!(dir_name("0000:00:04.0"), ".");
        assert_eq!(dir_name("/x"), "/");
        assert_eq!(dir_name("a/b/"), "a/b");
    }

    #[test]
    fn scans_lines_as_bufio() {
        let mut lines = Vec::new();
        scan_lines(&b"a\r\nb\n\nc"[..], |line| {
            lines.push(line.to_vec());
            true
        });
        assert_eq!(lines, [b"a".to_vec(), b"b".to_vec(), vec![], b"c".to_vec()]);

        // A line of 64 KiB - 1 and its newline fit; one byte more ends the scan.
        let mut text = vec![b'x'; MAX_SCAN_TOKEN - 1];
        text.extend_from_slice(b"\nnext\n");
        let mut count = 0;
        scan_lines(&text[..], |_| {
            count += 1;
            true
        });
        assert_eq!(count, 2);
        let mut text = vec![b'x'; MAX_SCAN_TOKEN];
        text.extend_from_slice(b"\nnext\n");
        let mut count = 0;
        scan_lines(&text[..], |_| {
            count += 1;
            true
        });
        assert_eq!(count, 0);
    }
}
