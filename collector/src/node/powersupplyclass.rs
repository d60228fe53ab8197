//! `powersupplyclass`: batteries, mains adapters and UPS of /sys/class/power_supply/<supply>/*,
//! as procfs' `PowerSupplyClass` reads them: numbers in base units (µA, µV, µWh, µW scaled to
//! A, V, Wh, W; tenths of °C to °C) and the text attributes as labels of
//! `node_power_supply_info`.
//!
//! Not obvious: every regular file of a supply is read, and one that cannot be read (other than
//! missing, EOPNOTSUPP or ENODEV at the read) or a known number that does not parse fails the
//! scrape, even for a supply the ignore pattern drops afterwards; the info metric has only the
//! labels whose value is not empty, with invalid UTF-8 replaced as Go's `strings.ToValidUTF8`.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;
use regex::Regex;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec, NoData},
    flags::FlagSpec,
    goparse,
    metrics::MetricFamily,
    read,
};

const IGNORED_SUPPLIES: &str = "collector.powersupply.ignored-supplies";

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "powersupplyclass",
    default_enabled: true,
    flags: &[FlagSpec::value(
        IGNORED_SUPPLIES,
        Some("^$"),
        "Regexp of power supplies to ignore for powersupplyclass collector.",
    )],
    kernel: None,
    build,
};

struct PowerSupplyCollector {
    class: PathBuf,
    ignored: Regex,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    // Compiled as given: an empty pattern matches, and so ignores, every supply, as in Go.
    let pattern = context.flags.string(IGNORED_SUPPLIES).unwrap_or("^$");
    Ok(Arc::new(PowerSupplyCollector {
        class: context.sys_path("class/power_supply"),
        ignored: Regex::new(pattern)
            .with_context(|| format!("--{IGNORED_SUPPLIES}: bad regular expression"))?,
    }))
}

/// The numeric attributes procfs parses (Go's base-0 `ParseInt`), with the metric and the
/// divisor of those exported; the `*_avg` ones are parsed (a bad value fails) but not exported.
const NUMBERS: &[(&str, Option<(&str, f64)>)] = &[
    ("authentic", Some(("authentic", 1.0))),
    ("calibrate", Some(("calibrate", 1.0))),
    ("capacity", Some(("capacity", 1.0))),
    ("capacity_alert_max", Some(("capacity_alert_max", 1.0))),
    ("capacity_alert_min", Some(("capacity_alert_min", 1.0))),
    ("charge_avg", None),
    ("charge_control_limit", Some(("charge_control_limit", 1e6))),
    (
        "charge_control_limit_max",
        Some(("charge_control_limit_max", 1e6)),
    ),
    ("charge_counter", Some(("charge_counter", 1e6))),
    ("charge_empty", Some(("charge_empty", 1e6))),
    ("charge_empty_design", Some(("charge_empty_design", 1e6))),
    ("charge_full", Some(("charge_full", 1e6))),
    ("charge_full_design", Some(("charge_full_design", 1e6))),
    ("charge_now", Some(("charge_ampere", 1e6))),
    ("charge_term_current", Some(("charge_term_current", 1e6))),
    (
        "constant_charge_current",
        Some(("constant_charge_current", 1e6)),
    ),
    (
        "constant_charge_current_max",
        Some(("constant_charge_current_max", 1e6)),
    ),
    (
        "constant_charge_voltage",
        Some(("constant_charge_voltage", 1e6)),
    ),
    (
        "constant_charge_voltage_max",
        Some(("constant_charge_voltage_max", 1e6)),
    ),
    ("current_avg", None),
    ("current_boot", Some(("current_boot", 1e6))),
    ("current_max", Some(("current_max", 1e6))),
    ("current_now", Some(("current_ampere", 1e6))),
    ("cycle_count", Some(("cyclecount", 1.0))),
    ("energy_avg", None),
    ("energy_empty", Some(("energy_empty", 1e6))),
    ("energy_empty_design", Some(("energy_empty_design", 1e6))),
    ("energy_full", Some(("energy_full", 1e6))),
    ("energy_full_design", Some(("energy_full_design", 1e6))),
    ("energy_now", Some(("energy_watthour", 1e6))),
    ("input_current_limit", Some(("input_current_limit", 1e6))),
    ("online", Some(("online", 1.0))),
    ("power_avg", None),
    ("power_now", Some(("power_watt", 1e6))),
    ("precharge_current", Some(("precharge_current", 1e6))),
    ("present", Some(("present", 1.0))),
    ("temp", Some(("temp_celsius", 10.0))),
    ("temp_alert_max", Some(("temp_alert_max_celsius", 10.0))),
    ("temp_alert_min", Some(("temp_alert_min_celsius", 10.0))),
    ("temp_ambient", Some(("temp_ambient_celsius", 10.0))),
    ("temp_ambient_max", Some(("temp_ambient_max_celsius", 10.0))),
    ("temp_ambient_min", Some(("temp_ambient_min_celsius", 10.0))),
    ("temp_max", Some(("temp_max_celsius", 10.0))),
    ("temp_min", Some(("temp_min_celsius", 10.0))),
    ("time_to_empty_avg", None),
    ("time_to_empty_now", Some(("time_to_empty_seconds", 1.0))),
    ("time_to_full_avg", None),
    ("time_to_full_now", Some(("time_to_full_seconds", 1.0))),
    ("voltage_avg", None),
    ("voltage_boot", Some(("voltage_boot", 1e6))),
    ("voltage_max", Some(("voltage_max", 1e6))),
    ("voltage_max_design", Some(("voltage_max_design", 1e6))),
    ("voltage_min", Some(("voltage_min", 1e6))),
    ("voltage_min_design", Some(("voltage_min_design", 1e6))),
    ("voltage_now", Some(("voltage_volt", 1e6))),
    ("voltage_ocv", Some(("voltage_ocv", 1e6))),
];

/// The text attributes, each an info label of its name when not empty.
const TEXTS: &[&str] = &[
    "capacity_level",
    "charge_type",
    "health",
    "manufacturer",
    "model_name",
    "scope",
    "serial_number",
    "status",
    "technology",
    "type",
    "usb_type",
];

/// One supply: the attributes found, numbers and texts by file name.
#[derive(Debug, Default, PartialEq)]
struct PowerSupply {
    numbers: BTreeMap<&'static str, i64>,
    texts: BTreeMap<&'static str, String>,
}

/// procfs' `parsePowerSupply`.
fn read_supply(dir: &Path) -> anyhow::Result<PowerSupply> {
    let entries =
        read::read_dir_sorted(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut supply = PowerSupply::default();
    for entry in entries {
        if !entry.file_type.is_file() {
            continue;
        }
        let value = match read::sys_read_attribute(&entry.path) {
            Ok(value) => value,
            Err(error)
                if error.not_found()
                    || error.read_errno(libc::EOPNOTSUPP)
                    || error.read_errno(libc::ENODEV) =>
            {
                continue;
            }
            Err(error) => {
                return Err(error.error)
                    .with_context(|| format!("failed to read file {:?}", entry.path));
            }
        };
        let name = entry.name.as_encoded_bytes();
        if let Some((file, _)) = NUMBERS.iter().find(|(file, _)| file.as_bytes() == name) {
            let number = goparse::parse_int(&value, 0, 64).with_context(|| {
                format!(
                    "{}: strconv.ParseInt: parsing {value:?}: invalid syntax",
                    entry.path.display()
                )
            })?;
            supply.numbers.insert(file, number);
        } else if let Some(file) = TEXTS.iter().find(|file| file.as_bytes() == name) {
            supply.texts.insert(file, value);
        }
    }
    Ok(supply)
}

/// procfs' `PowerSupplyClass`, then the ignored supplies dropped.
fn read_class(class: &Path, ignored: &Regex) -> anyhow::Result<BTreeMap<String, PowerSupply>> {
    let entries =
        read::read_dir_sorted(class).with_context(|| format!("reading {}", class.display()))?;
    let mut supplies = BTreeMap::new();
    for entry in entries {
        let supply = read_supply(&entry.path)?;
        supplies.insert(entry.name.to_string_lossy().into_owned(), supply);
    }
    supplies.retain(|name, _| !ignored.is_match(name));
    Ok(supplies)
}

impl Collector for PowerSupplyCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let supplies = match read_class(&self.class, &self.ignored) {
            Ok(supplies) => supplies,
            Err(error) if read::chain_has(&error, std::io::ErrorKind::NotFound) => {
                return Err(NoData(format!("{error:#}")).into());
            }
            Err(error) => {
                return Err(error.context(
                    "could not get power_supply class info: error obtaining power_supply class info",
                ));
            }
        };
        let mut families: BTreeMap<&str, MetricFamily> = BTreeMap::new();
        let mut info = MetricFamily::gauge(
            "node_power_supply_info",
            "info of /sys/class/power_supply/<power_supply>.",
        );
        for (name, supply) in &supplies {
            for (file, value) in &supply.numbers {
                let Some((_, Some((metric, divisor)))) = NUMBERS.iter().find(|(f, _)| f == file)
                else {
                    continue;
                };
                let value = *value as f64 / divisor;
                families
                    .entry(metric)
                    .or_insert_with(|| {
                        MetricFamily::gauge(
                            format!("node_power_supply_{metric}"),
                            format!("{metric} value of /sys/class/power_supply/<power_supply>."),
                        )
                    })
                    .push([("power_supply", name.as_str())], value);
            }
            let mut labels = vec![("power_supply", name.clone())];
            labels.extend(
                supply
                    .texts
                    .iter()
                    .filter(|(_, value)| !value.is_empty())
                    .map(|(label, value)| (*label, value.clone())),
            );
            info.push(labels, 1.0);
        }
        out.extend(families.into_values());
        out.push(info);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Value;

    fn write(path: &Path, text: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn reads_supplies_as_procfs() {
        let class = std::env::temp_dir().join(format!("power-supply-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&class);
        for (file, value) in [
            ("BAT0/type", &b"Battery\n"[..]),
            ("BAT0/status", b"Charging\n"),
            ("BAT0/model_name", b"5B10W\xff\xfe\n"),
            ("BAT0/manufacturer", b"\n"),
            ("BAT0/voltage_now", b"12584000\n"),
            ("BAT0/temp", b"-35\n"),
            ("BAT0/energy_avg", b"0x10\n"),
            ("BAT0/capacity", b"87\n"),
            ("BAT0/alarm", b"not a number\n"),
            ("AC/type", b"Mains\n"),
            ("AC/online", b"1\n"),
        ] {
            write(&class.join(file), value);
        }
        std::fs::create_dir_all(class.join("BAT0/power")).unwrap();
        let mut collector = PowerSupplyCollector {
            class: class.clone(),
            ignored: Regex::new("^$").unwrap(),
        };
        let mut out = Vec::new();
        collector.update(&mut out).unwrap();
        let family = |name: &str| out.iter().find(|f| f.name == name).unwrap();
        assert_eq!(
            family("node_power_supply_voltage_volt").metrics[0].value,
            Value::Scalar(12.584)
        );
        assert_eq!(
            family("node_power_supply_temp_celsius").metrics[0].value,
            Value::Scalar(-3.5)
        );
        assert_eq!(
            family("node_power_supply_online").help,
            "online value of /sys/class/power_supply/<power_supply>."
        );
        let info = family("node_power_supply_info");
        assert_eq!(
            info.metrics[0].labels,
            [
                ("power_supply".to_owned(), "AC".to_owned()),
                ("type".to_owned(), "Mains".to_owned())
            ]
        );
        // The empty manufacturer is left out; the invalid bytes are one replacement character.
        assert_eq!(
            info.metrics[1].labels,
            [
                ("power_supply".to_owned(), "BAT0".to_owned()),
                ("model_name".to_owned(), "5B10W\u{fffd}".to_owned()),
                ("status".to_owned(), "Charging".to_owned()),
                ("type".to_owned(), "Battery".to_owned()),
            ]
        );
        assert!(!out.iter().any(|f| f.name.contains("energy_avg")));

        collector.ignored = Regex::new("^BAT").unwrap();
        let mut out = Vec::new();
        collector.update(&mut out).unwrap();
        assert_eq!(out.iter().map(|f| f.metrics.len()).sum::<usize>(), 2);

        // An empty pattern ignores every supply, as Go's regexp.
        collector.ignored = Regex::new("").unwrap();
        let mut out = Vec::new();
        collector.update(&mut out).unwrap();
        assert_eq!(out.iter().map(|f| f.metrics.len()).sum::<usize>(), 0);

        // A known number that does not parse fails, even for an ignored supply.
        write(&class.join("BAT0/cycle_count"), b"12.5\n");
        collector.ignored = Regex::new("^BAT").unwrap();
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(format!("{error:#}").contains("cycle_count"), "{error:#}");
        std::fs::remove_dir_all(&class).unwrap();

        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_some());
    }
}
