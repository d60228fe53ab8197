//! `time`: the system clock, the local time zone's offset, and the clocksources of
//! /sys/devices/system/clocksource.
use std::{
    ffi::CStr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    metrics::MetricFamily,
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "time",
    default_enabled: true,
    flags: &[],
    kernel: None,
    build,
};

struct TimeCollector {
    clocksource: PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(TimeCollector {
        clocksource: context.sys_path("devices/system/clocksource"),
    }))
}

/// The local zone's abbreviation and offset east of UTC at `seconds`, as Go's `Time.Zone`.
fn zone(seconds: i64) -> (String, i64) {
    // SAFETY: a C struct of integers and arrays, for which all zeroes is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let t = seconds as libc::time_t;
    // SAFETY: both pointers are valid; localtime_r is thread-safe.
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() || tm.tm_zone.is_null() {
        return ("UTC".to_owned(), 0);
    }
    // SAFETY: tm_zone points at a NUL-terminated abbreviation owned by libc.
    let name = unsafe { CStr::from_ptr(tm.tm_zone) }
        .to_string_lossy()
        .into_owned();
    (name, tm.tm_gmtoff)
}

/// procfs' `ClockSources`: `clocksource[0-9]*` directories in name order, each with its
/// available and current clocksource.
fn clocksources(dir: &Path) -> anyhow::Result<Vec<(Vec<String>, String)>> {
    read::numbered_entries(dir, "clocksource")
        .with_context(|| format!("couldn't get clocksources: reading {}", dir.display()))?
        .iter()
        .map(|(_, path)| {
            let available = read::to_string(&path.join("available_clocksource"))?;
            let current = read::to_string(&path.join("current_clocksource"))?;
            Ok((
                available.split_whitespace().map(str::to_owned).collect(),
                current.trim().to_owned(),
            ))
        })
        .collect()
}

impl Collector for TimeCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("clock before 1970")?;
        out.push(
            MetricFamily::gauge(
                "node_time_seconds",
                "System time in seconds since epoch (1970).",
            )
            .with_value(now.as_nanos() as f64 / 1e9),
        );
        let (name, offset) = zone(now.as_secs() as i64);
        out.push(
            MetricFamily::gauge(
                "node_time_zone_offset_seconds",
                "System time zone offset in seconds.",
            )
            .with([("time_zone", name)], offset as f64),
        );
        let sources = clocksources(&self.clocksource)?;
        let mut available = MetricFamily::gauge(
            "node_time_clocksource_available_info",
            "Available clocksources read from '/sys/devices/system/clocksource'.",
        );
        let mut current = MetricFamily::gauge(
            "node_time_clocksource_current_info",
            "Current clocksource read from '/sys/devices/system/clocksource'.",
        );
        for (index, (list, now_used)) in sources.into_iter().enumerate() {
            let device = index.to_string();
            for source in list {
                available.push(
                    [
                        ("device", device.as_str()),
                        ("clocksource", source.as_str()),
                    ],
                    1.0,
                );
            }
            current.push(
                [
                    ("device", device.as_str()),
                    ("clocksource", now_used.as_str()),
                ],
                1.0,
            );
        }
        out.push(available);
        out.push(current);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocksources_in_order_and_missing_file_fails() {
        let dir = std::env::temp_dir().join(format!("clocksource-test-{}", std::process::id()));
        for (name, available, current) in [
            ("clocksource0", "tsc hpet acpi_pm \n", "tsc\n"),
            ("clocksource1", "arch_sys_counter\n", "arch_sys_counter\n"),
        ] {
            std::fs::create_dir_all(dir.join(name)).unwrap();
            std::fs::write(dir.join(name).join("available_clocksource"), available).unwrap();
            std::fs::write(dir.join(name).join("current_clocksource"), current).unwrap();
        }
        std::fs::create_dir_all(dir.join("power")).unwrap();
        let sources = clocksources(&dir).unwrap();
        assert_eq!(sources.len(), 2);
        assert_eq!(sources[0].0, ["tsc", "hpet", "acpi_pm"]);
        assert_eq!(sources[0].1, "tsc");
        std::fs::remove_file(dir.join("clocksource1/current_clocksource")).unwrap();
        let error = clocksources(&dir).unwrap_err();
        assert!(format!("{error:#}").contains("current_clocksource"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn zone_of_now() {
        let (name, offset) = zone(1_700_000_000);
        assert!(!name.is_empty());
        assert!(offset.abs() <= 14 * 3600);
    }
}
