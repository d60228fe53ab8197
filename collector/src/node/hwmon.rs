//! `hwmon`: hardware sensors from /sys/class/hwmon/hwmon*, as node_exporter's hwmon collector
//! (lm-sensors' data): one family per sensor type and property, with upstream's units, HELP
//! texts and `chip` names derived from the device path.
use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, LazyLock},
};

use anyhow::Context as _;
use regex::Regex;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec, NoData},
    flags::{DeviceFilter, FlagSpec},
    metrics::MetricFamily,
    read,
};

const CHIP_INCLUDE: &str = "collector.hwmon.chip-include";
const CHIP_EXCLUDE: &str = "collector.hwmon.chip-exclude";
const SENSOR_INCLUDE: &str = "collector.hwmon.sensor-include";
const SENSOR_EXCLUDE: &str = "collector.hwmon.sensor-exclude";

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "hwmon",
    default_enabled: true,
    flags: &[
        FlagSpec::value(
            CHIP_INCLUDE,
            None,
            "Regexp of hwmon chip to include (mutually exclusive to device-exclude).",
        ),
        FlagSpec::value(
            CHIP_EXCLUDE,
            None,
            "Regexp of hwmon chip to exclude (mutually exclusive to device-include).",
        ),
        FlagSpec::value(
            SENSOR_INCLUDE,
            None,
            "Regexp of hwmon sensor to include (mutually exclusive to sensor-exclude).",
        ),
        FlagSpec::value(
            SENSOR_EXCLUDE,
            None,
            "Regexp of hwmon sensor to exclude (mutually exclusive to sensor-include).",
        ),
    ],
    kernel: None,
    build,
};

const SENSOR_TYPES: &[&str] = &[
    "vrm",
    "beep_enable",
    "update_interval",
    "in",
    "cpu",
    "fan",
    "pwm",
    "temp",
    "curr",
    "power",
    "energy",
    "humidity",
    "intrusion",
    "freq",
];

static INVALID_METRIC_CHARS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new("[^a-z0-9:_]").expect("valid regex"));
static FILENAME_FORMAT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?P<type>[^0-9]+)(?P<id>[0-9]*)?(_(?P<property>.+))?$").expect("valid regex")
});

struct HwmonCollector {
    class_hwmon: PathBuf,
    chips: DeviceFilter,
    sensors: DeviceFilter,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    // Upstream builds both filters without checking that include and exclude exclude each other.
    let flags = &context.flags;
    Ok(Arc::new(HwmonCollector {
        class_hwmon: context.sys_path("class/hwmon"),
        chips: DeviceFilter::new(flags.regex(CHIP_EXCLUDE)?, flags.regex(CHIP_INCLUDE)?),
        sensors: DeviceFilter::new(flags.regex(SENSOR_EXCLUDE)?, flags.regex(SENSOR_INCLUDE)?),
    }))
}

/// upstream's `cleanMetricName`: lower case, anything else than `[a-z0-9:_]` to `_`, trimmed
/// of `_`.
fn clean(name: &str) -> String {
    INVALID_METRIC_CHARS
        .replace_all(&name.to_lowercase(), "_")
        .trim_matches('_')
        .to_owned()
}

/// `<type><num>_<property>`, `None` if the name does not have that shape.
fn explode(filename: &str) -> Option<(String, u64, String)> {
    let captures = FILENAME_FORMAT.captures(filename)?;
    let kind = captures.name("type").map_or("", |m| m.as_str()).to_owned();
    let id = captures.name("id").map_or("", |m| m.as_str());
    let number = if id.is_empty() {
        0
    } else {
        // Go's Atoi fails past the int range.
        i64::try_from(id.parse::<u128>().ok()?).ok()? as u64
    };
    let property = captures
        .name("property")
        .map_or("", |m| m.as_str())
        .to_owned();
    Some((kind, number, property))
}

/// upstream's `sysReadFile` ([`read::sys_read_raw`]), trailing/leading newlines trimmed.
fn read_value(path: &Path) -> Option<String> {
    let bytes = read::sys_read_raw(path).ok()?;
    Some(
        String::from_utf8_lossy(&bytes)
            .trim_matches('\n')
            .to_owned(),
    )
}

/// sensor (`temp1`) -> property (`input`, `` for the bare file) -> value.
type SensorData = BTreeMap<String, BTreeMap<String, String>>;

fn collect_sensor_data(dir: &Path, data: &mut SensorData) -> anyhow::Result<()> {
    let names = read::sorted_names(dir).with_context(|| format!("reading {}", dir.display()))?;
    for name in names {
        let Some((kind, number, property)) = explode(&name) else {
            continue;
        };
        if !SENSOR_TYPES.contains(&kind.as_str()) {
            continue;
        }
        if let Some(value) = read_value(&dir.join(&name)) {
            data.entry(format!("{kind}{number}"))
                .or_default()
                .insert(property, value);
        }
    }
    Ok(())
}

/// upstream's `hwmonName`: `<bus>_<device>` from the device link, else the `name` file, else
/// the hwmonN directory name.
fn chip_name(dir: &Path) -> anyhow::Result<String> {
    if let Ok(device) = std::fs::canonicalize(dir.join("device")) {
        let name = device
            .file_name()
            .map(|n| clean(&n.to_string_lossy()))
            .unwrap_or_default();
        let bus = device
            .parent()
            .and_then(Path::file_name)
            .map(|n| clean(&n.to_string_lossy()))
            .unwrap_or_default();
        if !bus.is_empty() && !name.is_empty() {
            return Ok(format!("{bus}_{name}"));
        }
        if !name.is_empty() {
            return Ok(name);
        }
    }
    if let Some(name) = human_readable_name(dir) {
        return Ok(name);
    }
    let real =
        std::fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;
    let name = real
        .file_name()
        .map(|n| clean(&n.to_string_lossy()))
        .unwrap_or_default();
    if name.is_empty() {
        anyhow::bail!("Could not derive a monitoring name for {}", dir.display());
    }
    Ok(name)
}

/// Each hwmon directory with its `chip` label, as 1.12 gives them: [`chip_name`], and where
/// several directories share one parent device (one hwmon for fan control, another for WMI
/// sensors, or a wireless card's per-band ones) that name plus the cleaned `name` file, or plus
/// the `hwmonN` directory name when the `name` files are alike too. A directory no name can be
/// derived for is skipped.
fn chip_labels(dirs: &[PathBuf]) -> Vec<(PathBuf, String)> {
    let mut entries = Vec::new();
    for dir in dirs {
        match chip_name(dir) {
            Ok(base) => {
                let name_file = std::fs::read_to_string(dir.join("name"))
                    .map(|name| name.trim().to_owned())
                    .unwrap_or_default();
                entries.push((dir, base, name_file));
            }
            Err(error) => {
                tracing::debug!(dir = %dir.display(), err = %error, "failed to derive hwmon chip name");
            }
        }
    }
    let mut bases: HashMap<&str, usize> = HashMap::new();
    let mut names: HashMap<(&str, &str), usize> = HashMap::new();
    for (_, base, name_file) in &entries {
        *bases.entry(base).or_default() += 1;
        *names.entry((base, name_file)).or_default() += 1;
    }
    entries
        .iter()
        .map(|(dir, base, name_file)| {
            if bases[base.as_str()] == 1 {
                return ((*dir).clone(), base.clone());
            }
            let mut suffix = clean(name_file);
            if suffix.is_empty() || names[&(base.as_str(), name_file.as_str())] > 1 {
                suffix = clean(&dir.file_name().unwrap_or_default().to_string_lossy());
            }
            ((*dir).clone(), format!("{base}_{suffix}"))
        })
        .collect()
}

/// The cleaned `name` file, for node_hwmon_chip_names.
fn human_readable_name(dir: &Path) -> Option<String> {
    let raw = std::fs::read(dir.join("name")).ok()?;
    let name = clean(&String::from_utf8_lossy(&raw));
    (!name.is_empty()).then_some(name)
}

/// Families by name, created with their HELP and type on first use.
#[derive(Default)]
struct Families(BTreeMap<String, MetricFamily>);

impl Families {
    fn push<'a>(
        &mut self,
        name: &str,
        help: &str,
        counter: bool,
        labels: impl IntoIterator<Item = (&'a str, &'a str)>,
        v: f64,
    ) {
        self.0
            .entry(name.to_owned())
            .or_insert_with(|| {
                if counter {
                    MetricFamily::counter(name, help)
                } else {
                    MetricFamily::gauge(name, help)
                }
            })
            .push(labels, v);
    }
}

impl HwmonCollector {
    fn update_chip(&self, dir: &Path, chip: &str, families: &mut Families) -> anyhow::Result<()> {
        let chip = chip.to_owned();
        if self.chips.ignored(&chip) {
            return Ok(());
        }
        let mut data = SensorData::new();
        collect_sensor_data(dir, &mut data)?;
        if dir.join("device").is_dir() {
            collect_sensor_data(&dir.join("device"), &mut data)?;
        }
        if let Some(name) = human_readable_name(dir) {
            families.push(
                "node_hwmon_chip_names",
                "Annotation metric for human-readable chip names",
                false,
                [("chip", chip.as_str()), ("chip_name", name.as_str())],
                1.0,
            );
        }

        for (sensor, properties) in &data {
            if self.sensors.ignored(&format!("{chip};{sensor}")) {
                continue;
            }
            let kind = explode(sensor).map(|e| e.0).unwrap_or_default();
            let labels = [("chip", chip.as_str()), ("sensor", sensor.as_str())];
            if let Some(label) = properties.get("label") {
                families.push(
                    "node_hwmon_sensor_label",
                    "Label for given chip and sensor",
                    false,
                    [
                        ("chip", chip.as_str()),
                        ("sensor", sensor.as_str()),
                        ("label", label.as_str()),
                    ],
                    1.0,
                );
            }
            let bare = properties.get("").map(String::as_str);
            match kind.as_str() {
                "beep_enable" => {
                    let value = if bare == Some("1") { 1.0 } else { 0.0 };
                    families.push(
                        "node_hwmon_beep_enabled",
                        "Hardware beep enabled",
                        false,
                        labels,
                        value,
                    );
                    continue;
                }
                "vrm" => {
                    if let Some(v) = bare.and_then(|v| v.parse::<f64>().ok()) {
                        families.push(
                            "node_hwmon_voltage_regulator_version",
                            "Hardware voltage regulator",
                            false,
                            labels,
                            v,
                        );
                    }
                    continue;
                }
                "update_interval" => {
                    if let Some(v) = bare.and_then(|v| v.parse::<f64>().ok()) {
                        families.push(
                            "node_hwmon_update_interval_seconds",
                            "Hardware monitor update interval",
                            false,
                            labels,
                            v * 0.001,
                        );
                    }
                    continue;
                }
                _ => {}
            }

            let prefix = format!("node_hwmon_{kind}");
            for (element, value) in properties {
                if element == "label" {
                    continue;
                }
                let mut name = prefix.clone();
                if element == "input" {
                    // input is the value itself, unless a bare file holds it
                    if bare.is_some() {
                        name.push_str("_input");
                    }
                } else if !element.is_empty() {
                    name.push('_');
                    name.push_str(&clean(element));
                }
                let Ok(v) = value.parse::<f64>() else {
                    continue;
                };
                let e = element.as_str();
                let k = kind.as_str();
                if e == "fault" || e == "alarm" {
                    let help = format!("Hardware sensor {e} status ({k})");
                    families.push(&name, &help, false, labels, v);
                } else if e == "beep" {
                    let help = "Hardware monitor sensor has beeping enabled";
                    families.push(&format!("{name}_enabled"), help, false, labels, v);
                } else if k == "in" || k == "cpu" {
                    let help = format!("Hardware monitor for voltage ({e})");
                    families.push(&format!("{name}_volts"), &help, false, labels, v * 0.001);
                } else if k == "temp" && e != "type" {
                    let e = if e.is_empty() { "input" } else { e };
                    let help = format!("Hardware monitor for temperature ({e})");
                    families.push(&format!("{name}_celsius"), &help, false, labels, v * 0.001);
                } else if k == "curr" {
                    let help = format!("Hardware monitor for current ({e})");
                    families.push(&format!("{name}_amps"), &help, false, labels, v * 0.001);
                } else if k == "energy" {
                    let help = format!("Hardware monitor for joules used so far ({e})");
                    let name = format!("{name}_joule_total");
                    families.push(&name, &help, true, labels, v / 1_000_000.0);
                } else if k == "power" && e == "accuracy" {
                    let help = "Hardware monitor power meter accuracy, as a ratio";
                    families.push(&name, help, false, labels, v / 1_000_000.0);
                } else if k == "power"
                    && matches!(
                        e,
                        "average_interval" | "average_interval_min" | "average_interval_max"
                    )
                {
                    let help = format!("Hardware monitor power usage update interval ({e})");
                    families.push(&format!("{name}_seconds"), &help, false, labels, v * 0.001);
                } else if k == "power" {
                    let help = format!("Hardware monitor for power usage in watts ({e})");
                    let name = format!("{name}_watt");
                    families.push(&name, &help, false, labels, v / 1_000_000.0);
                } else if k == "humidity" {
                    let help = format!(
                        "Hardware monitor for humidity, as a ratio (multiply with 100.0 to get the humidity as a percentage) ({e})"
                    );
                    families.push(&name, &help, false, labels, v / 1_000_000.0);
                } else if k == "fan" && matches!(e, "input" | "min" | "max" | "target") {
                    let help = format!("Hardware monitor for fan revolutions per minute ({e})");
                    families.push(&format!("{name}_rpm"), &help, false, labels, v);
                } else if k == "freq" {
                    if let (true, Some(label)) = (e == "input", properties.get("label")) {
                        let label = clean(label);
                        families.push(
                            &format!("{name}_freq_mhz"),
                            "Hardware monitor for GPU frequency in MHz",
                            false,
                            [("chip", chip.as_str()), ("sensor", label.as_str())],
                            v / 1_000_000.0,
                        );
                    }
                } else {
                    let help = format!("Hardware monitor {k} element {e}");
                    families.push(&name, &help, false, labels, v);
                }
            }
        }
        Ok(())
    }
}

impl Collector for HwmonCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let entries = match read::glob(&self.class_hwmon, |_| true) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(
                    NoData(format!("{} does not exist", self.class_hwmon.display())).into(),
                );
            }
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("reading {}", self.class_hwmon.display()));
            }
        };
        let dirs: Vec<PathBuf> = entries
            .into_iter()
            .filter(|path| path.is_dir()) // follows the hwmonN symlinks
            .collect();
        let mut families = Families::default();
        let mut last_error = None;
        for (dir, chip) in chip_labels(&dirs) {
            // A broken chip fails the collector but the others are still served.
            if let Err(error) = self.update_chip(&dir, &chip, &mut families) {
                last_error = Some(error);
            }
        }
        out.extend(families.0.into_values());
        match last_error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explodes_sensor_filenames_as_upstream() {
        let e = explode;
        assert_eq!(e("temp1_input"), Some(("temp".into(), 1, "input".into())));
        assert_eq!(e("beep_enable"), Some(("beep_enable".into(), 0, "".into())));
        assert_eq!(
            e("power1_average_interval"),
            Some(("power".into(), 1, "average_interval".into()))
        );
        assert_eq!(e("in10"), Some(("in".into(), 10, "".into())));
        assert_eq!(e("1temp"), None);
        assert_eq!(e("temp99999999999999999999_input"), None);
    }

    /// Three hwmon directories on one wireless card, as 1.12 labels them: by their `name`
    /// files where those differ, by `hwmonN` where they do not.
    #[test]
    fn hwmon_directories_sharing_a_device_get_distinct_labels() {
        let root = std::env::temp_dir().join(format!("hwmon-shared-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let device = root.join("devices/pci0000:00/ieee80211/phy0");
        let class = root.join("class/hwmon");
        std::fs::create_dir_all(&device).unwrap();
        std::fs::create_dir_all(&class).unwrap();
        for (hwmon, name) in [
            ("hwmon1", "mt7996_phy0.0\n"),
            ("hwmon2", "mt7996_phy0.1\n"),
            ("hwmon3", "same\n"),
            ("hwmon4", "same\n"),
        ] {
            let dir = root.join("devices/virtual/hwmon").join(hwmon);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("name"), name).unwrap();
            std::os::unix::fs::symlink(&device, dir.join("device")).unwrap();
            std::os::unix::fs::symlink(&dir, class.join(hwmon)).unwrap();
        }
        let dirs: Vec<PathBuf> = ["hwmon1", "hwmon2", "hwmon3", "hwmon4"]
            .iter()
            .map(|h| class.join(h))
            .collect();
        let labels: Vec<String> = chip_labels(&dirs).into_iter().map(|(_, l)| l).collect();
        assert_eq!(
            labels,
            [
                "ieee80211_phy0_mt7996_phy0_0",
                "ieee80211_phy0_mt7996_phy0_1",
                "ieee80211_phy0_hwmon3",
                "ieee80211_phy0_hwmon4",
            ]
        );
        // Alone on its device, a directory keeps the plain name.
        assert_eq!(chip_labels(&dirs[..1])[0].1, "ieee80211_phy0");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn cleans_names() {
        assert_eq!(clean("coretemp\n"), "coretemp");
        assert_eq!(clean("Core 0"), "core_0");
        assert_eq!(clean("0000:00:03.0"), "0000:00:03_0");
        assert_eq!(clean("__x__"), "x");
    }

    fn fixture_collector(chips: DeviceFilter, sensors: DeviceFilter) -> HwmonCollector {
        HwmonCollector {
            class_hwmon: Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/host/sys/class/hwmon"),
            chips,
            sensors,
        }
    }

    fn chips_of(out: &[MetricFamily]) -> std::collections::BTreeSet<String> {
        out.iter()
            .flat_map(|f| &f.metrics)
            .filter_map(|m| m.labels.iter().find(|(k, _)| k == "chip"))
            .map(|(_, v)| v.clone())
            .collect()
    }

    #[test]
    fn chip_filters() {
        let re = |s: &str| Some(Regex::new(s).unwrap());
        let mut out = Vec::new();
        fixture_collector(
            DeviceFilter::new(re("^platform"), None),
            DeviceFilter::default(),
        )
        .update(&mut out)
        .unwrap();
        let chips = chips_of(&out);
        assert!(!chips.contains("platform_coretemp_0"));
        assert!(chips.contains("hwmon2"));

        let mut out = Vec::new();
        fixture_collector(
            DeviceFilter::new(None, re("^acpitz$")),
            DeviceFilter::default(),
        )
        .update(&mut out)
        .unwrap();
        assert_eq!(chips_of(&out), ["acpitz".to_owned()].into());
    }

    #[test]
    fn sensor_filters_match_chip_semicolon_sensor() {
        let re = |s: &str| Some(Regex::new(s).unwrap());
        let mut out = Vec::new();
        fixture_collector(
            DeviceFilter::default(),
            DeviceFilter::new(re("^platform_coretemp_0;temp2$"), None),
        )
        .update(&mut out)
        .unwrap();
        let temps = out
            .iter()
            .find(|f| f.name == "node_hwmon_temp_celsius")
            .unwrap();
        let coretemp: Vec<_> = temps
            .metrics
            .iter()
            .filter(|m| m.labels[0].1 == "platform_coretemp_0")
            .map(|m| m.labels[1].1.clone())
            .collect();
        assert_eq!(coretemp, ["temp1"]);
    }
}
