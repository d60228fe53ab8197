//! `pressure`: pressure stall information totals from /proc/pressure/{cpu,io,memory,irq}
//! (the `some` line as "waiting", the `full` line as "stalled"; irq has only `full`).
use std::{path::PathBuf, sync::Arc};

use anyhow::Context as _;

use super::{BuildContext, CollectorSpec};
use crate::{
    metrics::MetricFamily,
    scrape::{Collector, NoData},
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "pressure",
    default_enabled: true,
    flags: &[],
    hooks: &[],
    build,
};

const RESOURCES: [&str; 4] = ["cpu", "io", "memory", "irq"];

struct PressureCollector {
    dir: PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(PressureCollector {
        dir: context.proc_path("pressure"),
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
        for resource in RESOURCES {
            let path = self.dir.join(resource);
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::debug!(
                        resource,
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
            // IRQ pressure has no `some` line; CPU pressure's `full` line is not exported.
            let some = match (totals.some, resource) {
                (None, "irq") => 0,
                (Some(some), _) => some,
                (None, _) => {
                    return Err(
                        NoData("pressure information returned no 'some' data".to_owned()).into(),
                    );
                }
            };
            let full = match (totals.full, resource) {
                (None, "cpu") => 0,
                (Some(full), _) => full,
                (None, _) => {
                    return Err(
                        NoData("pressure information returned no 'full' data".to_owned()).into(),
                    );
                }
            };
            let counter = |name: &str, help: &str, value: u64| {
                MetricFamily::counter(format!("node_pressure_{name}"), help)
                    .with_value(seconds(value))
            };
            match resource {
                "cpu" => out.push(counter(
                    "cpu_waiting_seconds_total",
                    "Total time in seconds that processes have waited for CPU time",
                    some,
                )),
                "io" => {
                    out.push(counter(
                        "io_waiting_seconds_total",
                        "Total time in seconds that processes have waited due to IO congestion",
                        some,
                    ));
                    out.push(counter(
                        "io_stalled_seconds_total",
                        "Total time in seconds no process could make progress due to IO congestion",
                        full,
                    ));
                }
                "memory" => {
                    out.push(counter(
                        "memory_waiting_seconds_total",
                        "Total time in seconds that processes have waited for memory",
                        some,
                    ));
                    out.push(counter(
                        "memory_stalled_seconds_total",
                        "Total time in seconds no process could make progress due to memory congestion",
                        full,
                    ));
                }
                _ => out.push(counter(
                    "irq_stalled_seconds_total",
                    "Total time in seconds no process could make progress due to IRQ congestion",
                    full,
                )),
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
