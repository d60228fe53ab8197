//! `thermal_zone`: zone temperatures from /sys/class/thermal/thermal_zone* and cooling device
//! states from /sys/class/thermal/cooling_device*, as node_exporter's thermal_zone collector.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec, NoData},
    metrics::MetricFamily,
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "thermal_zone",
    default_enabled: true,
    flags: &[],
    kernel: None,
    build,
};

struct ThermalZoneCollector {
    class_thermal: PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(ThermalZoneCollector {
        class_thermal: context.sys_path("class/thermal"),
    }))
}

/// [`read::numbered_entries`] with the part after the prefix; none without the directory.
fn glob(dir: &Path, prefix: &str) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let found = match read::numbered_entries(dir, prefix) {
        Ok(found) => found,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error).with_context(|| format!("reading {}", dir.display())),
    };
    Ok(found
        .into_iter()
        .map(|(name, path)| (name[prefix.len()..].to_owned(), path))
        .collect())
}

/// A zone as procfs' `parseClassThermalZone` reads it: `None` when it is to be skipped (mode
/// "disabled", or type/policy/temp unreadable), an error when temp or passive do not parse.
fn read_zone(dir: &Path) -> anyhow::Result<Option<(String, i64)>> {
    match read::sys_attribute(&dir.join("mode")) {
        Ok(mode) if mode == "disabled" => return Ok(None),
        _ => {}
    }
    let (Ok(kind), Ok(_policy), Ok(temp)) = (
        read::sys_attribute(&dir.join("type")),
        read::sys_attribute(&dir.join("policy")),
        read::sys_attribute(&dir.join("temp")),
    ) else {
        return Ok(None);
    };
    let temp: i64 = read::parse_number(&temp, "temp", &dir.join("temp"))?;
    let passive = dir.join("passive");
    match read::sys_attribute(&passive) {
        Ok(value) => {
            read::parse_number::<u64>(&value, "passive", &passive)?;
        }
        Err(error) if read::is_unavailable(&error) => {}
        Err(_) => return Ok(None),
    }
    Ok(Some((kind, temp)))
}

/// A cooling device as procfs reads it: `None` when an attribute is unavailable.
fn read_cooling_device(dir: &Path) -> anyhow::Result<Option<(String, i64, i64)>> {
    let mut values = Vec::new();
    for attribute in ["type", "max_state", "cur_state"] {
        let path = dir.join(attribute);
        match read::sys_attribute(&path) {
            Ok(value) => values.push((value, path)),
            Err(error) if read::is_unavailable(&error) => return Ok(None),
            Err(error) => {
                return Err(error).with_context(|| format!("reading {}", path.display()));
            }
        }
    }
    let max: i64 = read::parse_number(&values[1].0, "max_state", &values[1].1)?;
    // cur_state can be -1 (intel_powerclamp).
    let cur: i64 = read::parse_number(&values[2].0, "cur_state", &values[2].1)?;
    Ok(Some((values[0].0.clone(), max, cur)))
}

impl Collector for ThermalZoneCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        if !self.class_thermal.exists() {
            return Err(NoData(format!("{} does not exist", self.class_thermal.display())).into());
        }
        let mut temp = MetricFamily::gauge("node_thermal_zone_temp", "Zone temperature in Celsius");
        for (zone, dir) in glob(&self.class_thermal, "thermal_zone")? {
            if let Some((kind, millidegrees)) = read_zone(&dir)? {
                temp.push(
                    [("zone", zone.as_str()), ("type", kind.as_str())],
                    millidegrees as f64 / 1000.0,
                );
            }
        }
        out.push(temp);

        let mut cur = MetricFamily::gauge(
            "node_cooling_device_cur_state",
            "Current throttle state of the cooling device",
        );
        let mut max = MetricFamily::gauge(
            "node_cooling_device_max_state",
            "Maximum throttle state of the cooling device",
        );
        for (name, dir) in glob(&self.class_thermal, "cooling_device")? {
            if let Some((kind, max_state, cur_state)) = read_cooling_device(&dir)? {
                let labels = [("name", name.as_str()), ("type", kind.as_str())];
                cur.push(labels, cur_state as f64);
                max.push(labels, max_state as f64);
            }
        }
        out.push(cur);
        out.push(max);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_skipped_or_failing_as_procfs() {
        let dir = std::env::temp_dir().join(format!("thermal-test-{}", std::process::id()));
        let zone = dir.join("thermal_zone0");
        std::fs::create_dir_all(&zone).unwrap();
        std::fs::write(zone.join("type"), "acpitz\n").unwrap();
        std::fs::write(zone.join("policy"), "step_wise\n").unwrap();
        assert_eq!(read_zone(&zone).unwrap(), None, "no temp: skipped");
        std::fs::write(zone.join("temp"), "-5000\n").unwrap();
        assert_eq!(read_zone(&zone).unwrap(), Some(("acpitz".into(), -5000)));
        std::fs::write(zone.join("mode"), "disabled\n").unwrap();
        assert_eq!(read_zone(&zone).unwrap(), None, "disabled: skipped");
        std::fs::write(zone.join("mode"), "enabled\n").unwrap();
        std::fs::write(zone.join("temp"), "4x\n").unwrap();
        let error = read_zone(&zone).unwrap_err();
        assert!(
            format!("{error:#}").contains("thermal_zone0/temp"),
            "{error:#}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn globs_sort_as_go() {
        let dir = std::env::temp_dir().join(format!("thermal-glob-{}", std::process::id()));
        for name in [
            "thermal_zone10",
            "thermal_zone2",
            "thermal_zoneX",
            "cooling_device0",
        ] {
            std::fs::create_dir_all(dir.join(name)).unwrap();
        }
        let zones: Vec<String> = glob(&dir, "thermal_zone")
            .unwrap()
            .into_iter()
            .map(|z| z.0)
            .collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(zones, ["10", "2"]);
    }
}
