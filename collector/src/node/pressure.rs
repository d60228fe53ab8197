//! `pressure`: pressure stall information totals from /proc/pressure/{cpu,io,memory,irq}
//! (the `some` line as "waiting", the `full` line as "stalled"; irq has only `full`).
use std::sync::Arc;

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec, NoData},
    metrics::MetricFamily,
    read::KeptFile,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "pressure",
    default_enabled: true,
    flags: &[],
    kernel: None,
    build,
};

/// A pressure file and the families of its lines: `some` as "waiting", `full` as "stalled"
/// (name suffix after `node_pressure_`, HELP). A line without a family need not be there.
struct Resource {
    name: &'static str,
    waiting: Option<(&'static str, &'static str)>,
    stalled: Option<(&'static str, &'static str)>,
}

const RESOURCES: [Resource; 4] = [
    Resource {
        name: "cpu",
        waiting: Some((
            "cpu_waiting_seconds_total",
            "Total time in seconds that processes have waited for CPU time",
        )),
        // The kernel has a `full` line for CPU since 5.13; node_exporter does not export it.
        stalled: None,
    },
    Resource {
        name: "io",
        waiting: Some((
            "io_waiting_seconds_total",
            "Total time in seconds that processes have waited due to IO congestion",
        )),
        stalled: Some((
            "io_stalled_seconds_total",
            "Total time in seconds no process could make progress due to IO congestion",
        )),
    },
    Resource {
        name: "memory",
        waiting: Some((
            "memory_waiting_seconds_total",
            "Total time in seconds that processes have waited for memory",
        )),
        stalled: Some((
            "memory_stalled_seconds_total",
            "Total time in seconds no process could make progress due to memory congestion",
        )),
    },
    Resource {
        name: "irq",
        // IRQ pressure has only a `full` line.
        waiting: None,
        stalled: Some((
            "irq_stalled_seconds_total",
            "Total time in seconds no process could make progress due to IRQ congestion",
        )),
    },
];

struct PressureCollector {
    /// /proc/pressure/<resource>, in the order of RESOURCES.
    files: Vec<KeptFile>,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(PressureCollector {
        files: RESOURCES
            .iter()
            .map(|resource| KeptFile::new(context.proc_path("pressure").join(resource.name)))
            .collect(),
    }))
}

/// The `total=` of the `some` and `full` lines, in microseconds, as procfs's `parsePSIStats`
/// reads them (`<kind> avg10=%f avg60=%f avg300=%f total=%d`; other lines are ignored).
#[derive(Debug, Default, PartialEq)]
struct PsiTotals {
    some: Option<u64>,
    full: Option<u64>,
}

fn parse(text: &str) -> anyhow::Result<PsiTotals> {
    let mut totals = PsiTotals::default();
    for line in text.lines() {
        let slot = match line.split(' ').next() {
            Some("some") => &mut totals.some,
            Some("full") => &mut totals.full,
            _ => continue,
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let value = |i: usize, key: &str| {
            fields
                .get(i)
                .and_then(|field| field.strip_prefix(key))
                .with_context(|| format!("expected {key} in {line:?}"))
        };
        for (i, key) in [(1, "avg10="), (2, "avg60="), (3, "avg300=")] {
            let avg = value(i, key)?;
            avg.parse::<f64>()
                .with_context(|| format!("bad {key} {avg:?} in {line:?}"))?;
        }
        let total = value(4, "total=")?;
        *slot = Some(
            total
                .parse()
                .with_context(|| format!("bad total {total:?} in {line:?}"))?,
        );
    }
    Ok(totals)
}

fn seconds(microseconds: u64) -> f64 {
    microseconds as f64 / 1000.0 / 1000.0
}

impl Collector for PressureCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let mut found = 0;
        for (resource, file) in RESOURCES.iter().zip(&self.files) {
            let path = file.path();
            let text = match file.read() {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::debug!(
                        resource = resource.name,
                        "pressure information is unavailable, you need a Linux kernel >= 4.20 \
                         (6.1 for irq) and/or CONFIG_PSI enabled for your kernel"
                    );
                    continue;
                }
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                    return Err(NoData(
                        "pressure information is disabled, add psi=1 kernel command line to \
                         enable it"
                            .to_owned(),
                    )
                    .into());
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("failed to retrieve pressure stats: {}", path.display())
                    });
                }
            };
            let totals = parse(&text).with_context(|| {
                format!("failed to retrieve pressure stats: {}", path.display())
            })?;
            for (family, total, line) in [
                (resource.waiting, totals.some, "some"),
                (resource.stalled, totals.full, "full"),
            ] {
                let Some((name, help)) = family else {
                    continue;
                };
                let Some(total) = total else {
                    return Err(
                        NoData(format!("pressure information returned no '{line}' data")).into(),
                    );
                };
                out.push(
                    MetricFamily::counter(format!("node_pressure_{name}"), help)
                        .with_value(seconds(total)),
                );
            }
            found += 1;
        }
        if found == 0 {
            return Err(NoData(
                "pressure information is unavailable, you need a Linux kernel >= 4.20 and/or \
                 CONFIG_PSI enabled for your kernel"
                    .to_owned(),
            )
            .into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn some_and_full_totals() {
        let totals = parse(
            "some avg10=0.12 avg60=0.05 avg300=0.01 total=123456789\n\
             full avg10=0.00 avg60=0.00 avg300=0.00 total=42\nfuture avg=1\n",
        )
        .unwrap();
        assert_eq!(
            totals,
            PsiTotals {
                some: Some(123456789),
                full: Some(42)
            }
        );
        assert_eq!(parse("").unwrap(), PsiTotals::default());
    }

    #[test]
    fn malformed_lines_are_errors() {
        for text in [
            "some avg10=0.12 avg60=0.05 avg300=0.01\n",
            "some avg10=x avg60=0.05 avg300=0.01 total=1\n",
            "full avg10=0.1 avg60=0.05 avg300=0.01 total=-1\n",
            "some total=1\n",
        ] {
            assert!(parse(text).is_err(), "{text:?}");
        }
    }
}
