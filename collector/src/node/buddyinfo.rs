//! `buddyinfo`: the free blocks of each order per NUMA node and zone, from /proc/buddyinfo, as
//! procfs' `BuddyInfo` reads it (`node_buddyinfo_blocks{node,zone,size}`, `size` the order).
//!
//! Also holds two readers of Go's text conventions that the memory collectors (`meminfo_numa`,
//! `slabinfo`, `swap`) share: [`scan_lines`] (`bufio.Scanner`) and [`parse_go_float`].
use std::{collections::HashSet, path::PathBuf, sync::Arc};

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    metrics::MetricFamily,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "buddyinfo",
    default_enabled: false,
    flags: &[],
    kernel: None,
    build,
};

struct BuddyinfoCollector {
    path: PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(BuddyinfoCollector {
        path: context.proc_path("buddyinfo"),
    }))
}

/// One line of /proc/buddyinfo: `Node 0, zone   Normal   4381   1093 ...`.
#[derive(Debug, PartialEq)]
pub struct BuddyInfo {
    pub node: String,
    pub zone: String,
    /// Free blocks of order 0, 1, 2...
    pub sizes: Vec<f64>,
}

/// procfs' `parseBuddyInfo`: every line needs at least four fields, all lines the same number
/// of orders, and every count must be a number; any of these failing fails the whole file.
pub fn parse(text: &str) -> anyhow::Result<Vec<BuddyInfo>> {
    let mut entries = Vec::new();
    let mut bucket_count = None;
    for line in scan_lines(text) {
        let line = line?;
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.len() < 4 {
            anyhow::bail!("invalid number of fields, found: {parts:?}");
        }
        let node = parts[1].strip_suffix(',').unwrap_or(parts[1]);
        let zone = parts[3].strip_suffix(',').unwrap_or(parts[3]);
        let counts = &parts[4..];
        match bucket_count {
            None => bucket_count = Some(counts.len()),
            Some(previous) if previous != counts.len() => anyhow::bail!(
                "mismatch in number of buddyinfo buckets, previous count {previous}, new count {}",
                counts.len()
            ),
            Some(_) => {}
        }
        let sizes = counts
            .iter()
            .map(|count| {
                parse_go_float(count)
                    .with_context(|| format!("invalid value in buddyinfo: {count:?}"))
            })
            .collect::<anyhow::Result<Vec<f64>>>()?;
        entries.push(BuddyInfo {
            node: node.to_owned(),
            zone: zone.to_owned(),
            sizes,
        });
    }
    Ok(entries)
}

impl Collector for BuddyinfoCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let path = &self.path;
        let entries = std::fs::read(path)
            .with_context(|| format!("reading {}", path.display()))
            .and_then(|bytes| parse(&String::from_utf8_lossy(&bytes)))
            .with_context(|| format!("couldn't get buddyinfo: {}", path.display()))?;
        let mut blocks = MetricFamily::gauge(
            "node_buddyinfo_blocks",
            "Count of free blocks according to size.",
        );
        // A repeated node and zone: node_exporter's registry keeps the first sample only.
        let mut seen = HashSet::new();
        for entry in &entries {
            for (size, &value) in entry.sizes.iter().enumerate() {
                if !seen.insert((entry.node.as_str(), entry.zone.as_str(), size)) {
                    continue;
                }
                blocks.push(
                    [
                        ("node", entry.node.clone()),
                        ("zone", entry.zone.clone()),
                        ("size", size.to_string()),
                    ],
                    value,
                );
            }
        }
        if !blocks.metrics.is_empty() {
            out.push(blocks);
        }
        Ok(())
    }
}

/// A line of 64 KiB or more, where Go's `bufio.Scanner` stops with `bufio.ErrTooLong`.
#[derive(Debug, PartialEq)]
pub struct LineTooLong;

impl std::fmt::Display for LineTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bufio.Scanner: token too long")
    }
}

impl std::error::Error for LineTooLong {}

/// The lines of `text` as Go's `bufio.Scanner` with `ScanLines` yields them: split at `\n`, one
/// trailing `\r` dropped, no empty last line after a final `\n`. A line of 64 KiB or more is
/// an error, after which nothing more is read, as the scanner's buffer cannot grow past that.
pub fn scan_lines(text: &str) -> impl Iterator<Item = Result<&str, LineTooLong>> {
    /// `bufio.MaxScanTokenSize`.
    const MAX_TOKEN: usize = 64 * 1024;
    let mut rest = Some(text).filter(|text| !text.is_empty());
    std::iter::from_fn(move || {
        let current = rest?;
        let (line, next) = match current.split_once('\n') {
            Some((line, next)) => (line, Some(next).filter(|next| !next.is_empty())),
            None => (current, None),
        };
        if line.len() >= MAX_TOKEN {
            rest = None;
            return Some(Err(LineTooLong));
        }
        rest = next;
        Some(Ok(line.strip_suffix('\r').unwrap_or(line)))
    })
}

/// Go's `strconv.ParseFloat(s, 64)`: decimal numbers, `inf`/`infinity` with an optional sign
/// and `nan` without, any case; a finite number out of range is an error (`ErrRange`), not an
/// infinity. Go's hexadecimal floats (`0x1p4`) are not accepted: the kernel never writes them.
pub fn parse_go_float(s: &str) -> Option<f64> {
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
    // Rust takes the same decimal syntax; only its own words (`inf`, `nan`) and a second sign
    // must be kept out.
    if !body.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return None;
    }
    s.parse::<f64>().ok().filter(|value| value.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buddyinfo() {
        let text = "Node 0, zone      DMA      1      0      1 \n\
                    Node 0, zone    DMA32    759    572    791 \n\
                    Node 1, zone   Normal   4381   1093    185\n";
        let entries = parse(text).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[1].node, "0");
        assert_eq!(entries[1].zone, "DMA32");
        assert_eq!(entries[1].sizes, [759.0, 572.0, 791.0]);
        assert_eq!(entries[2].node, "1");
        // No orders at all is accepted, as long as every line has none.
        assert_eq!(
            parse("Node 0, zone DMA\n").unwrap()[0].sizes,
            Vec::<f64>::new()
        );
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn malformed_buddyinfo_is_an_error() {
        for text in [
            "Node 0, zone\n",
            "Node 0, zone DMA 1 2\nNode 0, zone DMA32 1\n",
            "Node 0, zone DMA 1 x\n",
            "Node 0, zone DMA 1 1e999\n",
            // An empty line has too few fields, as in procfs.
            "Node 0, zone DMA 1\n\nNode 0, zone DMA32 2\n",
            "Node 0, zone DMA 0x10\n",
        ] {
            assert!(parse(text).is_err(), "{text:?}");
        }
        let long = format!("Node 0, zone DMA {}\n", "1 ".repeat(40_000));
        assert_eq!(
            parse(&long).unwrap_err().to_string(),
            "bufio.Scanner: token too long"
        );
    }

    #[test]
    fn lines_split_as_go_scans_them() {
        let lines = |text| scan_lines(text).collect::<Result<Vec<_>, _>>().unwrap();
        assert_eq!(lines("a\r\nb\n\nc"), ["a", "b", "", "c"]);
        assert_eq!(lines("a\n"), ["a"]);
        assert_eq!(lines("\n"), [""]);
        assert_eq!(lines("a\r"), ["a"]);
        assert!(lines("").is_empty());
        let fits = format!("{}\nb", "x".repeat(65535));
        assert_eq!(lines(&fits).len(), 2);
        let too_long = format!("a\n{}\nb\n", "x".repeat(65536));
        let scanned: Vec<_> = scan_lines(&too_long).collect();
        assert_eq!(scanned, [Ok("a"), Err(LineTooLong)]);
    }

    #[test]
    fn floats_parse_as_in_go() {
        assert_eq!(parse_go_float("42"), Some(42.0));
        assert_eq!(parse_go_float("-1.5e3"), Some(-1500.0));
        assert_eq!(parse_go_float(".5"), Some(0.5));
        assert_eq!(parse_go_float("5."), Some(5.0));
        assert_eq!(parse_go_float("+Inf"), Some(f64::INFINITY));
        assert_eq!(parse_go_float("-infinity"), Some(f64::NEG_INFINITY));
        assert!(parse_go_float("NaN").unwrap().is_nan());
        assert_eq!(
            parse_go_float("18446744073709551616"),
            Some(18446744073709551616.0)
        );
        assert_eq!(parse_go_float("1e-400"), Some(0.0));
        for bad in [
            "", "+", ".", "-nan", "+-1", "1e400", "1_0", "x", "1 ", "infin", "0x1p4",
        ] {
            assert_eq!(parse_go_float(bad), None, "{bad:?}");
        }
    }
}
