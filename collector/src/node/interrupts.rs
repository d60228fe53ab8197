//! `interrupts`: per-CPU interrupt counts from /proc/interrupts, as node_exporter's interrupts
//! collector. The header's column count is the CPU count; the `cpu` label is the column index,
//! not the CPU named in the header (offline CPUs have no column). Rows with fewer values than
//! CPUs plus one (`ERR`, `MIS`) are skipped; a numbered row's first word after the counts is
//! its `info` (the chip and trigger), the rest its `devices`; a named row's words are all
//! `info`. A name seen twice keeps its last row, as upstream's map does.
//!
//! Upstream reads the file with a `bufio.Scanner`, which fails on a line over 64 KiB (about
//! 6,000 CPUs); lines of any length are read here.
use std::{collections::BTreeMap, sync::Arc};

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    flags::{DeviceFilter, FlagSpec},
    goparse,
    metrics::MetricFamily,
    read::KeptFile,
};

const NAME_INCLUDE: &str = "collector.interrupts.name-include";
const NAME_EXCLUDE: &str = "collector.interrupts.name-exclude";
const INCLUDE_ZEROS: &str = "collector.interrupts.include-zeros";

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "interrupts",
    default_enabled: false,
    flags: &[
        FlagSpec::value(
            NAME_INCLUDE,
            None,
            "Regexp of interrupts name to include (mutually exclusive to --collector.interrupts.name-exclude).",
        ),
        FlagSpec::value(
            NAME_EXCLUDE,
            None,
            "Regexp of interrupts name to exclude (mutually exclusive to --collector.interrupts.name-include).",
        ),
        FlagSpec::bool(
            INCLUDE_ZEROS,
            true,
            "Include interrupts that have a zero value",
        ),
    ],
    kernel: None,
    build,
};

struct InterruptsCollector {
    file: KeptFile,
    /// Matched against `<name>;<info>;<devices>`. Upstream builds it with `newDeviceFilter`,
    /// which does not refuse both patterns at once: both then apply.
    filter: DeviceFilter,
    include_zeros: bool,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    let flags = &context.flags;
    Ok(Arc::new(InterruptsCollector {
        file: KeptFile::new(context.proc_path("interrupts")),
        filter: DeviceFilter::new(flags.regex(NAME_EXCLUDE)?, flags.regex(NAME_INCLUDE)?),
        include_zeros: flags.bool(INCLUDE_ZEROS),
    }))
}

/// One row of /proc/interrupts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interrupt {
    /// The row's counters as printed, one per CPU column; parsed as floats only when reported,
    /// as upstream does, so a bad counter in a filtered-out row is no error.
    pub values: Vec<String>,
    pub info: String,
    pub devices: String,
}

/// Parses /proc/interrupts as upstream's `parseInterrupts`: rows by name (the text before the
/// first `:`, leading spaces trimmed). An empty file is an error; any other input gives rows or
/// nothing, never a panic.
pub fn parse(text: &str) -> anyhow::Result<BTreeMap<String, Interrupt>> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        anyhow::bail!("interrupts empty");
    };
    let cpus = header.split_whitespace().count();
    let mut interrupts = BTreeMap::new();
    for line in lines {
        // aarch64 prints no space between the name and the first count: split on `:` first.
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let parts: Vec<&str> = rest.split_whitespace().collect();
        if parts.len() < cpus + 1 {
            continue; // ERR and MIS have one count only
        }
        let name = name.trim_start_matches(' ');
        let values = parts[..cpus].iter().map(|v| (*v).to_owned()).collect();
        let (info, devices) = if is_go_atoi(name) {
            (parts[cpus].to_owned(), parts[cpus + 1..].join(" "))
        } else {
            (parts[cpus..].join(" "), String::new())
        };
        interrupts.insert(
            name.to_owned(),
            Interrupt {
                values,
                info,
                devices,
            },
        );
    }
    Ok(interrupts)
}

/// Whether Go's `strconv.Atoi` takes `s`: an optional sign and decimal digits that fit an int.
fn is_go_atoi(s: &str) -> bool {
    s.parse::<i64>().is_ok()
}

impl Collector for InterruptsCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let text = self.file.to_string().context("couldn't get interrupts")?;
        let interrupts = parse(&text)
            .with_context(|| format!("couldn't get interrupts: {}", self.file.path().display()))?;
        let mut family = MetricFamily::counter("node_interrupts_total", "Interrupt details.");
        for (name, interrupt) in &interrupts {
            let filter_name = format!("{name};{};{}", interrupt.info, interrupt.devices);
            if self.filter.ignored(&filter_name) {
                tracing::debug!(filter_name, "ignoring interrupt name");
                continue;
            }
            for (cpu, value) in interrupt.values.iter().enumerate() {
                let Some(value_f) = goparse::parse_float(value, 64) else {
                    // Upstream walks a map, so which samples it sent before this is random;
                    // none are served here.
                    anyhow::bail!(
                        "{}: invalid value {value} in interrupts (interrupt {name}, cpu {cpu})",
                        self.file.path().display()
                    );
                };
                if !self.include_zeros && value_f == 0.0 {
                    tracing::debug!(filter_name, cpu, "ignoring interrupt with zero value");
                    continue;
                }
                family.push(
                    [
                        ("cpu", cpu.to_string()),
                        ("type", name.clone()),
                        ("info", interrupt.info.clone()),
                        ("devices", interrupt.devices.clone()),
                    ],
                    value_f,
                );
            }
        }
        out.push(family);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const X86: &str = "            CPU0       CPU1       
   0:         31          0   IO-APIC   2-edge      timer
   1:          9          0   IO-APIC   1-edge      i8042
  24:     182034      92013   PCI-MSI 49152-edge      nvme0q0, nvme0q1
  25:          0          0   PCI-MSI 49153-edge
 NMI:          0          0   Non-maskable interrupts
 LOC:   27105563   26009118   Local timer interrupts
 ERR:          0
 MIS:          0
";

    fn collector(text: &str, filter: DeviceFilter, include_zeros: bool) -> InterruptsCollector {
        let dir = std::env::temp_dir().join(format!(
            "interrupts-test-{}-{}",
            std::process::id(),
            text.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("interrupts"), text).unwrap();
        InterruptsCollector {
            file: KeptFile::new(dir.join("interrupts")),
            filter,
            include_zeros,
        }
    }

    fn samples(family: &MetricFamily) -> Vec<String> {
        let mut lines: Vec<String> = family
            .metrics
            .iter()
            .map(|m| {
                let labels: Vec<String> =
                    m.labels.iter().map(|(n, v)| format!("{n}={v}")).collect();
                format!("{} {:?}", labels.join(","), m.value)
            })
            .collect();
        lines.sort();
        lines
    }

    #[test]
    fn parses_numbered_and_named_rows() {
        let interrupts = parse(X86).unwrap();
        assert_eq!(interrupts.len(), 6, "{interrupts:?}");
        assert_eq!(
            interrupts["24"],
            Interrupt {
                values: vec!["182034".into(), "92013".into()],
                info: "PCI-MSI".into(),
                devices: "49152-edge nvme0q0, nvme0q1".into(),
            }
        );
        assert_eq!(interrupts["25"].devices, "49153-edge");
        assert_eq!(interrupts["NMI"].info, "Non-maskable interrupts");
        assert_eq!(interrupts["NMI"].devices, "");
        assert!(!interrupts.contains_key("ERR"));
    }

    #[test]
    fn aarch64_rows_without_a_space_after_the_colon() {
        let text = "           CPU0       CPU1\n\
                    IPI0:1256838 1112839       Rescheduling interrupts\n\
                    11:  2 3  GICv3  27 Level     arch_timer\n";
        let interrupts = parse(text).unwrap();
        assert_eq!(interrupts["IPI0"].values, ["1256838", "1112839"]);
        assert_eq!(interrupts["IPI0"].info, "Rescheduling interrupts");
        assert_eq!(interrupts["11"].info, "GICv3");
        assert_eq!(interrupts["11"].devices, "27 Level arch_timer");
    }

    #[test]
    fn odd_input_never_panics() {
        assert!(parse("").is_err());
        assert!(parse("\n").unwrap().is_empty(), "no CPUs, no rows");
        // No CPU columns: every row with a colon and a word is kept with no values.
        assert_eq!(parse("\n 3: x\n").unwrap()["3"].values.len(), 0);
        // Truncated rows and garbage.
        let text = "CPU0 CPU1 CPU2\n 5: 1 2\n::::\n\u{0}\u{ff}:\n 7: 1 2 3\n 8: 1 2 3 X\n";
        let interrupts = parse(text).unwrap();
        assert_eq!(
            interrupts.len(),
            1,
            "rows 5 and 7 are short: {interrupts:?}"
        );
        assert_eq!(interrupts["8"].info, "X");
        assert_eq!(interrupts["8"].devices, "");
        // A name seen twice keeps the last row.
        let interrupts = parse("CPU0\n 1: 5 a\n 1: 6 b\n").unwrap();
        assert_eq!(interrupts["1"].values, ["6"]);
    }

    #[test]
    fn reports_every_cpu_with_filters_and_zeros() {
        let c = collector(X86, DeviceFilter::default(), true);
        let mut out = Vec::new();
        c.update(&mut out).unwrap();
        let lines = samples(&out[0]);
        assert_eq!(lines.len(), 12);
        assert!(
            lines.contains(
                &"cpu=1,type=24,info=PCI-MSI,devices=49152-edge nvme0q0, nvme0q1 Scalar(92013.0)"
                    .to_owned()
            )
        );

        // The filter sees `name;info;devices`; zeros dropped.
        let include = regex::Regex::new("nvme|^0;IO-APIC;").unwrap();
        let c = collector(X86, DeviceFilter::new(None, Some(include)), false);
        let mut out = Vec::new();
        c.update(&mut out).unwrap();
        let lines = samples(&out[0]);
        assert_eq!(
            lines,
            [
                "cpu=0,type=0,info=IO-APIC,devices=2-edge timer Scalar(31.0)",
                "cpu=0,type=24,info=PCI-MSI,devices=49152-edge nvme0q0, nvme0q1 Scalar(182034.0)",
                "cpu=1,type=24,info=PCI-MSI,devices=49152-edge nvme0q0, nvme0q1 Scalar(92013.0)",
            ]
        );
    }

    #[test]
    fn a_bad_counter_fails_unless_filtered_out() {
        let text = "CPU0\n 1: 12 IO-APIC x\n 2: 1x2 IO-APIC y\n";
        let error = collector(text, DeviceFilter::default(), true)
            .update(&mut Vec::new())
            .unwrap_err();
        assert!(
            format!("{error:#}").contains("invalid value 1x2"),
            "{error:#}"
        );
        let exclude = regex::Regex::new("^2;").unwrap();
        let mut out = Vec::new();
        collector(text, DeviceFilter::new(Some(exclude), None), true)
            .update(&mut out)
            .unwrap();
        assert_eq!(out[0].metrics.len(), 1);
    }

    #[test]
    fn missing_and_empty_files_are_errors() {
        let c = InterruptsCollector {
            file: KeptFile::new("/nonexistent/interrupts".into()),
            filter: DeviceFilter::default(),
            include_zeros: true,
        };
        assert!(c.update(&mut Vec::new()).is_err());
        let error = collector("", DeviceFilter::default(), true)
            .update(&mut Vec::new())
            .unwrap_err();
        assert!(
            format!("{error:#}").contains("interrupts empty"),
            "{error:#}"
        );
    }
}
