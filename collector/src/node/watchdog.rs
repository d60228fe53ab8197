//! `watchdog`: the hardware and software watchdogs of /sys/class/watchdog/<watchdog>/* (timeout,
//! time left, boot status, identity...), as procfs' `WatchdogClass` reads them.
//!
//! Not obvious: every attribute is optional (a missing one leaves its family out, or its info
//! label empty), but one that cannot be read or does not parse (Go's base-0 `ParseInt`) fails
//! the scrape; a class folder that is missing or not permitted is "no data".
use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec, NoData},
    goparse,
    metrics::MetricFamily,
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "watchdog",
    default_enabled: true,
    flags: &[],
    kernel: None,
    build,
};

struct WatchdogCollector {
    class: PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(WatchdogCollector {
        class: context.sys_path("class/watchdog"),
    }))
}

/// The numeric attributes: `(file, metric, help)`.
const NUMBERS: &[(&str, &str, &str)] = &[
    (
        "bootstatus",
        "bootstatus",
        "Value of /sys/class/watchdog/<watchdog>/bootstatus",
    ),
    (
        "fw_version",
        "fw_version",
        "Value of /sys/class/watchdog/<watchdog>/fw_version",
    ),
    (
        "nowayout",
        "nowayout",
        "Value of /sys/class/watchdog/<watchdog>/nowayout",
    ),
    (
        "timeleft",
        "timeleft_seconds",
        "Value of /sys/class/watchdog/<watchdog>/timeleft",
    ),
    (
        "timeout",
        "timeout_seconds",
        "Value of /sys/class/watchdog/<watchdog>/timeout",
    ),
    (
        "pretimeout",
        "pretimeout_seconds",
        "Value of /sys/class/watchdog/<watchdog>/pretimeout",
    ),
    (
        "access_cs0",
        "access_cs0",
        "Value of /sys/class/watchdog/<watchdog>/access_cs0",
    ),
];

/// The text attributes, each an info label of its name.
const TEXTS: &[&str] = &[
    "options",
    "identity",
    "state",
    "status",
    "pretimeout_governor",
];

/// One watchdog: [`NUMBERS`] and [`TEXTS`] values, `None` where the file does not exist.
#[derive(Debug, Default, PartialEq)]
struct Watchdog {
    numbers: Vec<Option<i64>>,
    texts: Vec<Option<String>>,
}

/// procfs' `parseWatchdog`: each attribute read with `SysReadFile`; missing is absent, any
/// other read error or a number that does not parse fails.
fn read_watchdog(dir: &Path) -> anyhow::Result<Watchdog> {
    let read = |file: &str| -> anyhow::Result<Option<String>> {
        let path = dir.join(file);
        match read::sys_read_file(&path) {
            Ok(value) => Ok(Some(value)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error).with_context(|| format!("failed to read file {path:?}")),
        }
    };
    let mut watchdog = Watchdog::default();
    for (file, _, _) in NUMBERS {
        let number = match read(file)? {
            None => None,
            Some(value) => Some(goparse::parse_int(&value, 0, 64).with_context(|| {
                format!(
                    "{}: strconv.ParseInt: parsing {value:?}: invalid syntax",
                    dir.join(file).display()
                )
            })?),
        };
        watchdog.numbers.push(number);
    }
    for file in TEXTS {
        watchdog.texts.push(read(file)?);
    }
    Ok(watchdog)
}

impl Collector for WatchdogCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let read_all = || -> anyhow::Result<Vec<(String, Watchdog)>> {
            let entries = read::read_dir_sorted(&self.class)
                .with_context(|| format!("failed to list watchdog devices at {:?}", self.class))?;
            entries
                .into_iter()
                .map(|entry| {
                    let name = entry.name.to_string_lossy().into_owned();
                    Ok((name, read_watchdog(&entry.path)?))
                })
                .collect()
        };
        let watchdogs = match read_all() {
            Ok(watchdogs) => watchdogs,
            // Upstream's ErrNotExist / ErrPermission check.
            Err(error)
                if read::chain_has(&error, std::io::ErrorKind::NotFound)
                    || read::chain_has(&error, std::io::ErrorKind::PermissionDenied) =>
            {
                return Err(NoData(format!("Could not read watchdog stats: {error:#}")).into());
            }
            Err(error) => return Err(error),
        };

        let mut numbers: Vec<MetricFamily> = NUMBERS
            .iter()
            .map(|(_, metric, help)| MetricFamily::gauge(format!("node_watchdog_{metric}"), *help))
            .collect();
        let mut info = MetricFamily::gauge(
            "node_watchdog_info",
            "Info of /sys/class/watchdog/<watchdog>",
        );
        for (name, watchdog) in &watchdogs {
            for (family, value) in numbers.iter_mut().zip(&watchdog.numbers) {
                if let Some(value) = value {
                    family.push([("name", name.as_str())], *value as f64);
                }
            }
            let labels = std::iter::once(("name", name.clone())).chain(
                TEXTS
                    .iter()
                    .zip(&watchdog.texts)
                    .map(|(label, value)| (*label, value.clone().unwrap_or_default())),
            );
            info.push(labels, 1.0);
        }
        out.extend(numbers);
        out.push(info);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Value;

    #[test]
    fn reads_watchdogs_as_procfs() {
        let class = std::env::temp_dir().join(format!("watchdog-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&class);
        let wd0 = class.join("watchdog0");
        std::fs::create_dir_all(&wd0).unwrap();
        std::fs::create_dir_all(class.join("watchdog1")).unwrap();
        for (file, value) in [
            ("bootstatus", "0x20\n"),
            ("timeout", "30\n"),
            ("timeleft", "-1\n"),
            ("identity", "  iTCO_wdt \n"),
            ("state", "inactive\n"),
        ] {
            std::fs::write(wd0.join(file), value).unwrap();
        }
        let collector = WatchdogCollector {
            class: class.clone(),
        };
        let mut out = Vec::new();
        collector.update(&mut out).unwrap();
        let family = |name: &str| out.iter().find(|f| f.name == name).unwrap();
        assert_eq!(
            family("node_watchdog_bootstatus").metrics[0].value,
            Value::Scalar(32.0)
        );
        assert_eq!(
            family("node_watchdog_timeleft_seconds").metrics[0].value,
            Value::Scalar(-1.0)
        );
        assert!(family("node_watchdog_nowayout").metrics.is_empty());
        let info = family("node_watchdog_info");
        assert_eq!(info.metrics.len(), 2);
        assert_eq!(
            info.metrics[0].labels[2],
            ("identity".to_owned(), "iTCO_wdt".to_owned())
        );
        assert!(
            info.metrics[1].labels[1..]
                .iter()
                .all(|(_, v)| v.is_empty())
        );

        std::fs::write(wd0.join("timeout"), "thirty\n").unwrap();
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_none());
        assert!(format!("{error:#}").contains("timeout"), "{error:#}");

        // A regular file in the class folder is not a folder: an error, as upstream.
        std::fs::write(wd0.join("timeout"), "30\n").unwrap();
        std::fs::write(class.join("stray"), "").unwrap();
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_none(), "{error:#}");
        std::fs::remove_dir_all(&class).unwrap();

        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_some());
    }
}
