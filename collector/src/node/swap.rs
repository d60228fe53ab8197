//! `swap`: each swap device and file of /proc/swaps (`node_swap_{size,used}_bytes`, kB × 1024,
//! and `node_swap_priority`, labelled `device` and `swap_type`), as procfs' `Swaps` reads it:
//! the first line is the header, every other line needs five fields with three integers.
//!
//! Only the first MiB of the file is read (procfs' `ReadFileNoStat` limit). A missing file
//! (kernel without CONFIG_SWAP) is an error, as upstream; no swap configured is success with no
//! sample.
use std::{collections::HashSet, path::PathBuf, sync::Arc};

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    goparse,
    metrics::MetricFamily,
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "swap",
    default_enabled: false,
    flags: &[],
    kernel: None,
    build,
};

/// One line of /proc/swaps, as procfs' `Swap`.
#[derive(Debug, PartialEq, Eq)]
pub struct Swap {
    /// As the kernel prints it: blanks in a path escaped as `\040`.
    pub filename: String,
    pub swap_type: String,
    /// In KiB.
    pub size: i64,
    /// In KiB.
    pub used: i64,
    pub priority: i64,
}

/// procfs' `parseSwaps`: the first line skipped, whatever it is.
pub fn parse(text: &str) -> anyhow::Result<Vec<Swap>> {
    let mut lines = goparse::text_lines(text);
    if let Some(header) = lines.next() {
        header?;
    }
    lines
        .map(|line| parse_line(line?))
        .collect::<anyhow::Result<Vec<Swap>>>()
}

/// `Filename Type Size Used Priority`, anything after the fifth field ignored.
fn parse_line(line: &str) -> anyhow::Result<Swap> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [filename, swap_type, size, used, priority, ..] = fields[..] else {
        anyhow::bail!("too few fields in swap string: {line}");
    };
    // Go's `strconv.Atoi`: a 64-bit decimal integer, with an optional sign.
    let number = |value: &str, what: &str| -> anyhow::Result<i64> {
        value
            .parse()
            .with_context(|| format!("invalid swap {what}: {value}"))
    };
    Ok(Swap {
        filename: filename.to_owned(),
        swap_type: swap_type.to_owned(),
        size: number(size, "size")?,
        used: number(used, "used")?,
        priority: number(priority, "priority")?,
    })
}

struct SwapCollector {
    path: PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(SwapCollector {
        path: context.proc_path("swaps"),
    }))
}

impl SwapCollector {
    fn read(&self) -> anyhow::Result<String> {
        let bytes = read::capped(&self.path, read::NO_STAT_LIMIT)
            .with_context(|| format!("reading {}", self.path.display()))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

impl Collector for SwapCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let swaps = self
            .read()
            .and_then(|text| parse(&text))
            .with_context(|| format!("couldn't get swap information: {}", self.path.display()))?;
        let mut size = MetricFamily::gauge("node_swap_size_bytes", "Swap device size in bytes.");
        let mut used = MetricFamily::gauge("node_swap_used_bytes", "Swap device used in bytes.");
        let mut priority = MetricFamily::gauge("node_swap_priority", "Swap device priority.");
        // A device listed twice: node_exporter's registry keeps the first sample.
        let mut seen = HashSet::new();
        for swap in &swaps {
            if !seen.insert((swap.filename.as_str(), swap.swap_type.as_str())) {
                continue;
            }
            let labels = [
                ("device", swap.filename.as_str()),
                ("swap_type", swap.swap_type.as_str()),
            ];
            // Go multiplies the ints, wrapping on overflow.
            size.push(labels, swap.size.wrapping_mul(1024) as f64);
            used.push(labels, swap.used.wrapping_mul(1024) as f64);
            priority.push(labels, swap.priority as f64);
        }
        out.extend(
            [size, used, priority]
                .into_iter()
                .filter(|f| !f.metrics.is_empty()),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_swaps() {
        let text = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
                    /dev/nvme1n1p2                          partition\t8388604\t\t76\t\t-2\n\
                    /swap\\040file                           file\t\t1048572\t\t0\t\t10\n";
        let swaps = parse(text).unwrap();
        assert_eq!(swaps.len(), 2);
        assert_eq!(
            swaps[0],
            Swap {
                filename: "/dev/nvme1n1p2".to_owned(),
                swap_type: "partition".to_owned(),
                size: 8388604,
                used: 76,
                priority: -2,
            }
        );
        assert_eq!(swaps[1].filename, "/swap\\040file");
        // Only the header, or nothing at all: no swap.
        assert!(
            parse("Filename Type Size Used Priority\n")
                .unwrap()
                .is_empty()
        );
        assert!(parse("").unwrap().is_empty());
        // The header is not checked; extra fields are ignored.
        assert_eq!(parse("x\n/a file 1 2 +3 extra\n").unwrap()[0].priority, 3);
    }

    #[test]
    fn malformed_swaps_are_errors() {
        for text in [
            "h\n/a file 1 2\n",
            "h\n/a file x 2 3\n",
            "h\n/a file 1 2.5 3\n",
            "h\n/a file 1 2 99999999999999999999\n",
            "h\n/a file 1 2 3\n\n",
        ] {
            assert!(parse(text).is_err(), "{text:?}");
        }
        let long = format!("{}\n/a file 1 2 3\n", "h".repeat(70_000));
        assert!(parse(&long).is_err());
    }

    #[test]
    fn sizes_in_bytes_and_errors() {
        let dir = std::env::temp_dir().join(format!("swap-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let collector = SwapCollector {
            path: dir.join("swaps"),
        };
        assert!(collector.update(&mut Vec::new()).is_err());
        std::fs::write(
            dir.join("swaps"),
            "h\n/a partition 4 2 -2\n/a partition 8 8 -3\n/b file 9223372036854775807 0 0\n",
        )
        .unwrap();
        let mut out = Vec::new();
        collector.update(&mut out).unwrap();
        assert_eq!(out.len(), 3);
        let size = &out[0];
        assert_eq!(size.metrics.len(), 2);
        assert_eq!(size.metrics[0].value, crate::metrics::Value::Scalar(4096.0));
        // i64::MAX × 1024 wraps to -1024, as Go's int does.
        assert_eq!(
            size.metrics[1].value,
            crate::metrics::Value::Scalar(-1024.0)
        );
        assert_eq!(out[2].metrics[0].value, crate::metrics::Value::Scalar(-2.0));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
