//! Go's number and line rules, as node_exporter's parsers apply them: `strconv`'s number syntax
//! (stricter than Rust's `parse`: no `+` on an unsigned number, ranges by bit size, base
//! prefixes only with base 0), `bufio.Scanner`'s line splitting and its 64 KiB line limit,
//! `bytes.TrimSpace` and `strings.ToValidUTF8`, `uint64(f)`, `fmt`'s `%0Nx` and `filepath`'s
//! `Clean`, `Base` and `Dir`. The collectors ported from Go parse with these, so that what
//! upstream accepts, rejects, cuts or rounds is accepted, rejected, cut or rounded here too.
use std::io::{BufRead as _, Read as _};

/// Go's `strconv.ParseUint(s, base, bits)`: `None` where Go returns an error. Base 2 to 36:
/// digits of that base only (no sign, prefix or underscore). Base 0: the base from the prefix
/// (`0x`, `0o`, `0b`, a leading `0` for octal, else decimal) and underscores between digits.
pub fn parse_uint(s: &str, base: u32, bits: u32) -> Option<u64> {
    if base == 0 {
        return parse_uint_base0(s, bits);
    }
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
    within(value, bits)
}

/// `value` if it fits in an unsigned `bits` (Go's `ErrRange` otherwise).
fn within(value: u64, bits: u32) -> Option<u64> {
    (bits >= 64 || value < (1u64 << bits)).then_some(value)
}

/// [`parse_uint`] with base 0.
fn parse_uint_base0(s: &str, bits: u32) -> Option<u64> {
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
    within(value, bits)
}

/// Go's `strconv.ParseInt(s, base, bits)`: an optional `+` or `-`, then [`parse_uint`]'s
/// syntax for `base`, within a signed `bits`.
pub fn parse_int(s: &str, base: u32, bits: u32) -> Option<i64> {
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    let magnitude = parse_uint(digits, base, 64)?;
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
/// hexadecimal floats (`0x1p4`) and digit underscores are not accepted: the kernel never
/// prints them.
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

/// Go's `uint64(f)` as compiled for amd64: truncation toward zero, a negative value wrapping as
/// its int64 (`-1` → 2^64-1), NaN and values beyond the int64 range giving 2^63. Rust's `as`
/// saturates instead; upstream's numbers are reproduced on the platform it is mostly run on.
pub fn float_to_uint(f: f64) -> u64 {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    // CVTTSD2SQ: the integer indefinite value for NaN and out of range.
    let cvt = |x: f64| -> u64 {
        if x.is_nan() || !(-TWO_63..TWO_63).contains(&x) {
            1 << 63
        } else {
            x as i64 as u64
        }
    };
    if f < TWO_63 {
        cvt(f)
    } else {
        cvt(f - TWO_63) | (1 << 63)
    }
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

/// Go's `fmt.Sprintf("%0<width>x", v)`: lower-case hexadecimal, zero-padded to `width`
/// characters, a negative number as `-` and its magnitude (the sign takes one of the width).
pub fn hex(value: i64, width: usize) -> String {
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

/// `bufio.MaxScanTokenSize`: the longest line a default `bufio.Scanner` reads, its `\r`
/// included and its `\n` not, is one byte shorter.
pub const MAX_SCAN_TOKEN: usize = 64 * 1024;

/// A line that does not fit `bufio.Scanner`'s buffer: Go's `bufio.ErrTooLong`.
#[derive(Debug, PartialEq)]
pub struct LineTooLong;

impl std::fmt::Display for LineTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bufio.Scanner: token too long")
    }
}

impl std::error::Error for LineTooLong {}

/// Where the next line of a text in memory starts, as `bufio.Scanner` with `ScanLines` walks it.
struct Splitter {
    next: usize,
    max: usize,
    done: bool,
}

impl Splitter {
    fn new(max: usize) -> Self {
        Self {
            next: 0,
            max,
            done: false,
        }
    }

    /// The byte range of the next line of `data`, without its `\n` and a `\r` before it.
    fn next_range(&mut self, data: &[u8]) -> Option<Result<std::ops::Range<usize>, LineTooLong>> {
        if self.done || self.next >= data.len() {
            return None;
        }
        let start = self.next;
        let end = data[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(data.len(), |n| start + n);
        if end - start >= self.max {
            self.done = true;
            return Some(Err(LineTooLong));
        }
        self.next = end + 1;
        let end = if data[start..end].ends_with(b"\r") {
            end - 1
        } else {
            end
        };
        Some(Ok(start..end))
    }
}

/// The lines of bytes in memory as Go's `bufio.Scanner` with `ScanLines` yields them: split at
/// `\n`, one trailing `\r` dropped, no empty last line after a final `\n`. A line of
/// [`MAX_SCAN_TOKEN`] bytes or more (or the `max` of [`Lines::with_max`], Go's
/// `Scanner.Buffer`) is an error, after which nothing more is read, as the scanner's buffer
/// cannot grow past that.
pub struct Lines<'a> {
    data: &'a [u8],
    splitter: Splitter,
}

/// Go's `bufio.NewScanner(bytes.NewReader(data))` with `ScanLines`: [`Lines`] of `data`.
pub fn lines(data: &[u8]) -> Lines<'_> {
    Lines {
        data,
        splitter: Splitter::new(MAX_SCAN_TOKEN),
    }
}

impl Lines<'_> {
    /// The scanner given a buffer of at most `max` bytes (Go's `Scanner.Buffer`).
    pub fn with_max(mut self, max: usize) -> Self {
        self.splitter.max = max;
        self
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = Result<&'a [u8], LineTooLong>;

    fn next(&mut self) -> Option<Self::Item> {
        let data = self.data;
        self.splitter
            .next_range(data)
            .map(|range| range.map(|range| &data[range]))
    }
}

/// [`Lines`] of text, as `&str`.
pub struct TextLines<'a> {
    text: &'a str,
    splitter: Splitter,
}

/// Go's `bufio.NewScanner(strings.NewReader(text))` with `ScanLines`: [`TextLines`] of `text`.
pub fn text_lines(text: &str) -> TextLines<'_> {
    TextLines {
        text,
        splitter: Splitter::new(MAX_SCAN_TOKEN),
    }
}

impl TextLines<'_> {
    /// The scanner given a buffer of at most `max` bytes (Go's `Scanner.Buffer`).
    pub fn with_max(mut self, max: usize) -> Self {
        self.splitter.max = max;
        self
    }
}

impl<'a> Iterator for TextLines<'a> {
    type Item = Result<&'a str, LineTooLong>;

    fn next(&mut self) -> Option<Self::Item> {
        let text = self.text;
        // `\n` and `\r` are ASCII: the range is on character boundaries.
        self.splitter
            .next_range(text.as_bytes())
            .map(|range| range.map(|range| &text[range]))
    }
}

/// Why a [`Scanner`] stopped before the end: Go's `Scanner.Err()`.
#[derive(Debug)]
pub enum ScanError {
    Read(std::io::Error),
    TooLong(LineTooLong),
}

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Read(error) => error.fmt(f),
            Self::TooLong(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for ScanError {}

/// Go's `bufio.Scanner` with `ScanLines` over a reader, [`Lines`]' rules: a read error or a
/// line that does not fit its 64 KiB buffer ends the scan, and [`err`](Self::err) tells which.
/// Memory stays within one buffer whatever the input.
pub struct Scanner<R> {
    reader: std::io::BufReader<R>,
    buffer: Vec<u8>,
    error: Option<ScanError>,
}

impl<R: std::io::Read> Scanner<R> {
    /// Go's `bufio.NewScanner(reader)`, splitting with `ScanLines`.
    pub fn new(reader: R) -> Self {
        Self {
            reader: std::io::BufReader::with_capacity(MAX_SCAN_TOKEN, reader),
            buffer: Vec::new(),
            error: None,
        }
    }

    /// Go's `Scan` and `Bytes`: the next line; `None` at the end or once the scan stopped.
    pub fn next_line(&mut self) -> Option<&[u8]> {
        if self.error.is_some() {
            return None;
        }
        self.buffer.clear();
        // At most one buffer and a newline: a longer line ends the scan.
        let limit = (MAX_SCAN_TOKEN + 1) as u64;
        match (&mut self.reader)
            .take(limit)
            .read_until(b'\n', &mut self.buffer)
        {
            Ok(0) => return None,
            Ok(_) => {}
            Err(error) => {
                self.error = Some(ScanError::Read(error));
                return None;
            }
        }
        // Without a newline: the end of the input, or a line too long for the buffer.
        let text = self.buffer.strip_suffix(b"\n").unwrap_or(&self.buffer);
        if text.len() >= MAX_SCAN_TOKEN {
            self.error = Some(ScanError::TooLong(LineTooLong));
            return None;
        }
        Some(text.strip_suffix(b"\r").unwrap_or(text))
    }

    /// Go's `Err`: why the scan stopped, `None` at the end of the input.
    pub fn err(self) -> Option<ScanError> {
        self.error
    }
}

/// [`Scanner`]'s lines, each passed to `line`, which may stop the scan by returning `false`;
/// for the parsers that, as upstream, ignore `Scanner.Err()`.
pub fn scan_reader(reader: impl std::io::Read, mut line: impl FnMut(&[u8]) -> bool) {
    let mut scanner = Scanner::new(reader);
    while let Some(text) = scanner.next_line() {
        if !line(text) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uints_as_go() {
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
        assert_eq!(parse_uint("+ff", 16, 64), None);
    }

    #[test]
    fn parses_base0_uints_as_go() {
        assert_eq!(parse_uint("42", 0, 64), Some(42));
        assert_eq!(parse_uint("0", 0, 64), Some(0));
        assert_eq!(parse_uint("0x1f", 0, 64), Some(31));
        assert_eq!(parse_uint("010", 0, 64), Some(8));
        assert_eq!(parse_uint("0b101", 0, 64), Some(5));
        assert_eq!(parse_uint("0x_1f", 0, 64), Some(31));
        assert_eq!(parse_uint("1_000", 0, 64), Some(1000));
        assert_eq!(parse_uint("0_7", 0, 64), Some(7));
        assert_eq!(parse_uint("_1", 0, 64), None);
        assert_eq!(parse_uint("1_", 0, 64), None);
        assert_eq!(parse_uint("1__0", 0, 64), None);
        assert_eq!(parse_uint("", 0, 64), None);
        assert_eq!(parse_uint("0x", 0, 64), None);
        assert_eq!(parse_uint("-1", 0, 64), None);
        assert_eq!(parse_uint("+1", 0, 64), None);
        assert_eq!(parse_uint("09", 0, 64), None);
        assert_eq!(parse_uint("4294967296", 0, 32), None);
        assert_eq!(parse_uint("4294967295", 0, 32), Some(4294967295));
        assert_eq!(parse_uint("18446744073709551616", 0, 64), None);
    }

    #[test]
    fn parses_ints_as_go() {
        assert_eq!(parse_int("-1", 10, 32), Some(-1));
        assert_eq!(parse_int("+7", 10, 32), Some(7));
        assert_eq!(parse_int("2147483648", 10, 32), None);
        assert_eq!(parse_int("-2147483648", 10, 32), Some(-2147483648));
        assert_eq!(parse_int("1f", 16, 32), Some(31));
        assert_eq!(parse_int("-", 10, 64), None);
        assert_eq!(parse_int("9223372036854775807", 10, 64), Some(i64::MAX));
        assert_eq!(parse_int("-9223372036854775808", 10, 64), Some(i64::MIN));
        assert_eq!(parse_int("9223372036854775808", 10, 64), None);
        // Base 0.
        assert_eq!(parse_int("-0x10", 0, 32), Some(-16));
        assert_eq!(parse_int("0x010802", 0, 32), Some(0x010802));
        assert_eq!(parse_int("4099", 0, 64), Some(4099));
        assert_eq!(parse_int("0x1003", 0, 64), Some(4099));
        assert_eq!(parse_int("010", 0, 64), Some(8));
        assert_eq!(parse_int("0", 0, 64), Some(0));
        assert_eq!(parse_int("", 0, 64), None);
        assert_eq!(parse_int("12a", 0, 64), None);
        assert_eq!(parse_int("0x", 0, 64), None);
        assert_eq!(parse_int("-+1", 0, 64), None);
        assert_eq!(parse_int("9223372036854775808", 0, 64), None);
        assert_eq!(parse_int("-9223372036854775808", 0, 64), Some(i64::MIN));
        assert_eq!(parse_int("-9223372036854775809", 0, 64), None);
        assert_eq!(parse_int("+0x_1f", 0, 64), Some(31));
    }

    #[test]
    fn parses_floats_as_go() {
        assert_eq!(parse_float("8.0", 64), Some(8.0));
        assert_eq!(parse_float("1e3", 64), Some(1000.0));
        assert_eq!(parse_float("2.5", 32), Some(2.5));
        assert_eq!(parse_float("0.1", 32), Some(f64::from(0.1f32)));
        assert_eq!(parse_float("1e39", 32), None);
        assert_eq!(parse_float("1e39", 64), Some(1e39));
        assert_eq!(parse_float("1e400", 64), None);
        assert_eq!(parse_float("+Inf", 64), Some(f64::INFINITY));
        assert_eq!(parse_float("-infinity", 64), Some(f64::NEG_INFINITY));
        assert!(parse_float("NaN", 64).unwrap().is_nan());
        assert_eq!(parse_float("-nan", 64), None);
        assert_eq!(parse_float("+nan", 64), None);
        assert_eq!(parse_float("", 64), None);
        assert_eq!(parse_float("++1", 64), None);
        assert_eq!(parse_float(" 1", 64), None);
        assert_eq!(parse_float("1_0", 64), None);
        assert_eq!(parse_float("0x1p3", 64), None);
        assert_eq!(parse_float("-1.5e3", 64), Some(-1500.0));
        assert_eq!(parse_float(".5", 64), Some(0.5));
        assert_eq!(parse_float("5.", 64), Some(5.0));
        assert_eq!(
            parse_float("18446744073709551616", 64),
            Some(18446744073709551616.0)
        );
        assert_eq!(parse_float("1e-400", 64), Some(0.0));
        for bad in ["+", ".", "+-1", "x", "12a", "1 ", "infin"] {
            assert_eq!(parse_float(bad, 64), None, "{bad:?}");
        }
    }

    #[test]
    fn converts_floats_as_go_on_amd64() {
        assert_eq!(float_to_uint(1.9), 1);
        assert_eq!(float_to_uint(-1.0), u64::MAX);
        assert_eq!(float_to_uint(f64::NAN), 1 << 63);
        assert_eq!(float_to_uint(1e19), 10_000_000_000_000_000_000);
        assert_eq!(float_to_uint(1e30), 1 << 63);
    }

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
    fn formats_hex_as_go() {
        assert_eq!(hex(0, 4), "0000");
        assert_eq!(hex(0x1f, 2), "1f");
        assert_eq!(hex(0x12345, 4), "12345");
        assert_eq!(hex(-1, 4), "-001");
        assert_eq!(hex(-1, 0), "-1");
        assert_eq!(hex(7, 0), "7");
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
    fn splits_lines_as_bufio() {
        fn all(text: &str) -> Vec<Result<&str, LineTooLong>> {
            text_lines(text).collect()
        }
        assert_eq!(all("a\r\nb\n"), [Ok("a"), Ok("b")]);
        assert_eq!(all("a\n\nb"), [Ok("a"), Ok(""), Ok("b")]);
        assert_eq!(all("a\n\n"), [Ok("a"), Ok("")]);
        assert_eq!(all("\n"), [Ok("")]);
        assert_eq!(all("a\r\r\n"), [Ok("a\r")]);
        assert_eq!(all("a\r"), [Ok("a")]);
        assert!(all("").is_empty());
        // A line of the buffer's size or more ends the scan; the lines before it come first.
        let short = "x".repeat(9);
        let long = format!("a\n{}\nb\n", "x".repeat(10));
        fn limited(text: &str) -> Vec<Result<&str, LineTooLong>> {
            text_lines(text).with_max(10).collect()
        }
        assert_eq!(limited(&short), [Ok(short.as_str())]);
        assert_eq!(limited(&long), [Ok("a"), Err(LineTooLong)]);
        // The `\r` counts toward the limit.
        assert_eq!(limited(&format!("{short}\r\n")), [Err(LineTooLong)]);

        let text = format!("{}\n{}\n", "x".repeat(MAX_SCAN_TOKEN - 1), "y");
        assert_eq!(text_lines(&text).count(), 2);
        let text = format!("{}\n", "x".repeat(MAX_SCAN_TOKEN));
        assert_eq!(text_lines(&text).next(), Some(Err(LineTooLong)));

        let bytes: Vec<_> = lines(b"\xff\r\nb").collect();
        assert_eq!(bytes, [Ok(&b"\xff"[..]), Ok(&b"b"[..])]);
        assert_eq!(lines(b"xx\n").with_max(2).next(), Some(Err(LineTooLong)));
    }

    #[test]
    fn scans_readers_as_bufio() {
        let mut lines = Vec::new();
        scan_reader(&b"a\r\nb\n\nc"[..], |line| {
            lines.push(line.to_vec());
            true
        });
        assert_eq!(lines, [b"a".to_vec(), b"b".to_vec(), vec![], b"c".to_vec()]);

        // A line of 64 KiB - 1 and its newline fit; one byte more ends the scan.
        let mut text = vec![b'x'; MAX_SCAN_TOKEN - 1];
        text.extend_from_slice(b"\nnext\n");
        let mut scanner = Scanner::new(&text[..]);
        let mut count = 0;
        while scanner.next_line().is_some() {
            count += 1;
        }
        assert_eq!(count, 2);
        assert!(scanner.err().is_none());

        let mut text = vec![b'x'; MAX_SCAN_TOKEN];
        text.extend_from_slice(b"\nnext\n");
        let mut scanner = Scanner::new(&text[..]);
        assert_eq!(scanner.next_line(), None);
        assert_eq!(scanner.next_line(), None);
        assert!(matches!(scanner.err(), Some(ScanError::TooLong(_))));

        // The same line at the end of the input, without its newline.
        let text = vec![b'x'; MAX_SCAN_TOKEN];
        let mut scanner = Scanner::new(&text[..]);
        assert_eq!(scanner.next_line(), None);
        assert!(matches!(scanner.err(), Some(ScanError::TooLong(_))));

        // Stopped by the caller: the rest is not read.
        let mut count = 0;
        scan_reader(&b"a\nb\nc\n"[..], |_| {
            count += 1;
            count < 2
        });
        assert_eq!(count, 2);
    }

    proptest::proptest! {
        /// No input makes a parser or the scanner panic; what parses is in range.
        #[test]
        fn takes_any_input(
            text in "[-+_.0-9a-fA-FxXoObBiInN \t\r\n]{0,32}",
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let lossy = String::from_utf8_lossy(&bytes);
            for s in [text.as_str(), &lossy] {
                for base in [0, 10, 16] {
                    let value = parse_uint(s, base, 32);
                    proptest::prop_assert!(value.is_none_or(|v| v <= u32::MAX.into()));
                    let _ = parse_int(s, base, 8);
                }
                // Only the words give an infinity: a finite number out of range is an error.
                let infinite = parse_float(s, 64).is_some_and(f64::is_infinite);
                proptest::prop_assert!(!infinite || s.to_ascii_lowercase().contains("inf"));
                let _ = parse_float(s, 32);
            }
            for line in lines(&bytes).with_max(4).flatten() {
                proptest::prop_assert!(line.len() < 4 && !line.contains(&b'\n'));
            }
            let _ = to_valid_utf8(trim_space(&bytes));
            let _ = clean_path(&lossy);
            let _ = dir_name(&lossy);
        }
    }
}
