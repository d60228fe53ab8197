//! `rapl`: the energy counters of the RAPL power zones (Intel and AMD package, core, dram...)
//! from /sys/class/powercap/<zone>/{name,max_energy_range_uj,energy_uj}, as procfs'
//! `GetRaplZones` reads them, in joules.
//!
//! Not obvious: every folder of class/powercap with a readable `name` is a zone (the
//! `intel-rapl` control type has none and is skipped); a zone's index is the number after the
//! one `-` in its name (`package-0`) or else the count of zones of that name so far; the `path`
//! label is the zone's path under `--path.sysfs`, cleaned as Go's `filepath.Join` cleans it; an
//! `energy_uj` only root may read (kernels since 5.10) makes the scrape "no data", after the
//! zones already read.
use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, LazyLock},
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

const ZONE_LABEL: &str = "collector.rapl.enable-zone-label";

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "rapl",
    default_enabled: true,
    flags: &[FlagSpec::bool(
        ZONE_LABEL,
        false,
        // Upstream's help text, copied from another flag by mistake, kept as is.
        "Enables service unit metric unit_start_time_seconds",
    )],
    kernel: None,
    build,
};

struct RaplCollector {
    powercap: PathBuf,
    /// `--path.sysfs` as given, for the `path` label.
    sysfs: String,
    zone_label: bool,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(RaplCollector {
        powercap: context.sys_path("class/powercap"),
        sysfs: context.sysfs.to_string_lossy().into_owned(),
        zone_label: context.flags.bool(ZONE_LABEL),
    }))
}

/// One RAPL zone.
#[derive(Debug, PartialEq)]
struct Zone {
    name: String,
    index: i64,
    /// As upstream prints it (`<sysfs>/class/powercap/<folder>`, cleaned).
    label_path: String,
    path: PathBuf,
}

/// procfs' `getIndexAndName`: `package-0` is index 0 of `package`; a name without one `-` and
/// a number after it is used whole, indexed by how often that name was seen.
fn index_and_name(seen: &HashMap<String, i64>, name: &str) -> (i64, String) {
    let parts: Vec<&str> = name.split('-').collect();
    if let [base, index] = parts[..] {
        // Go's Atoi: an optional sign and decimal digits.
        if let Some(index) = goparse::parse_int(index, 10, 64) {
            return (index, base.to_owned());
        }
    }
    (seen.get(name).copied().unwrap_or(0), name.to_owned())
}

impl RaplCollector {
    /// procfs' `GetRaplZones`.
    fn zones(&self) -> anyhow::Result<Vec<Zone>> {
        let entries =
            read::read_dir_sorted(&self.powercap).context("unable to read class/powercap")?;
        let mut seen = HashMap::new();
        let mut zones = Vec::new();
        for entry in entries {
            let Ok(name) = std::fs::read(entry.path.join("name")) else {
                continue;
            };
            let name = goparse::to_valid_utf8(goparse::trim_space(&name));
            let (index, name) = index_and_name(&seen, &name);
            let max = entry.path.join("max_energy_range_uj");
            read::read_uint_file(&max).with_context(|| format!("reading {max:?}"))?;
            let folder = entry.name.to_string_lossy();
            zones.push(Zone {
                label_path: goparse::clean_path(&format!("{}/class/powercap/{folder}", self.sysfs)),
                path: entry.path,
                name: name.clone(),
                index,
            });
            seen.insert(name, index.wrapping_add(1));
        }
        Ok(zones)
    }
}

/// node_exporter's `SanitizeMetricName`: every run of characters outside `[0-9A-Za-z_]`, with
/// the underscores around it, becomes one `_`.
fn sanitize(name: &str) -> String {
    static INVALID: LazyLock<Regex> =
        LazyLock::new(|| Regex::new("_*[^0-9A-Za-z_]+_*").expect("constant pattern"));
    INVALID.replace_all(name, "_").into_owned()
}

impl Collector for RaplCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let zones = match self.zones() {
            Ok(zones) => zones,
            Err(error) if read::chain_has(&error, std::io::ErrorKind::NotFound) => {
                return Err(NoData(format!(
                    "Platform doesn't have powercap files present: {error:#}"
                ))
                .into());
            }
            Err(error) if read::chain_has(&error, std::io::ErrorKind::PermissionDenied) => {
                return Err(NoData(format!("Can't access powercap files: {error:#}")).into());
            }
            Err(error) => return Err(error.context("failed to retrieve rapl stats")),
        };
        let mut result = Ok(());
        for zone in zones {
            let file = zone.path.join("energy_uj");
            let micro_joules = match read::read_uint_file(&file) {
                Ok(value) => value,
                Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => {
                    result = Err(NoData(format!(
                        "Can't access energy_uj file {}: {error}",
                        file.display()
                    ))
                    .into());
                    break;
                }
                Err(error) => {
                    result = Err(anyhow::Error::new(error).context(format!("reading {file:?}")));
                    break;
                }
            };
            let joules = micro_joules as f64 / 1_000_000.0;
            let index = zone.index.to_string();
            let labels = [
                ("index", index.as_str()),
                ("path", zone.label_path.as_str()),
            ];
            let family = if self.zone_label {
                MetricFamily::counter("node_rapl_joules_total", "Current RAPL value in joules")
                    .with(
                        labels
                            .into_iter()
                            .chain([("rapl_zone", zone.name.as_str())]),
                        joules,
                    )
            } else {
                MetricFamily::counter(
                    format!("node_rapl_{}_joules_total", sanitize(&zone.name)),
                    format!("Current RAPL {} value in joules", zone.name),
                )
                .with(labels, joules)
            };
            out.push(family);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Value;

    #[test]
    fn indexes_and_sanitizes_names_as_upstream() {
        let mut seen = HashMap::new();
        assert_eq!(
            index_and_name(&seen, "package-0"),
            (0, "package".to_owned())
        );
        assert_eq!(
            index_and_name(&seen, "package-+1"),
            (1, "package".to_owned())
        );
        assert_eq!(index_and_name(&seen, "dram"), (0, "dram".to_owned()));
        seen.insert("dram".to_owned(), 1);
        assert_eq!(index_and_name(&seen, "dram"), (1, "dram".to_owned()));
        assert_eq!(index_and_name(&seen, "a-b-1"), (0, "a-b-1".to_owned()));
        assert_eq!(index_and_name(&seen, "psys-x"), (0, "psys-x".to_owned()));
        assert_eq!(sanitize("package"), "package");
        assert_eq!(sanitize("psys-x"), "psys_x");
        assert_eq!(sanitize("a__-__b c"), "a_b_c");
        assert_eq!(sanitize("core__x"), "core__x");
        assert_eq!(sanitize("été"), "_t_");
    }

    fn write(path: &std::path::Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn reads_zones_in_joules() {
        let root = std::env::temp_dir().join(format!("rapl-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let powercap = root.join("class/powercap");
        for (zone, name, energy) in [
            ("intel-rapl:0", "package-0", "240422366267"),
            ("intel-rapl:0:0", "dram", "1000"),
            ("intel-rapl:1:0", "dram", "2500000"),
        ] {
            write(&powercap.join(zone).join("name"), &format!("{name}\n"));
            write(
                &powercap.join(zone).join("max_energy_range_uj"),
                "262143328850\n",
            );
            write(
                &powercap.join(zone).join("energy_uj"),
                &format!("{energy}\n"),
            );
        }
        // The control type folder has no name: not a zone.
        write(&powercap.join("intel-rapl/enabled"), "1\n");
        let mut collector = RaplCollector {
            powercap: powercap.clone(),
            sysfs: format!("{}//", root.display()),
            zone_label: false,
        };
        let mut out = Vec::new();
        collector.update(&mut out).unwrap();
        let out = crate::metrics::merge_and_sort(out);
        let names: Vec<&str> = out.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "node_rapl_dram_joules_total",
                "node_rapl_package_joules_total"
            ]
        );
        let dram = &out[0];
        assert_eq!(dram.help, "Current RAPL dram value in joules");
        assert_eq!(
            dram.metrics[1].labels,
            [
                ("index".to_owned(), "1".to_owned()),
                (
                    "path".to_owned(),
                    format!("{}/class/powercap/intel-rapl:1:0", root.display())
                ),
            ]
        );
        assert_eq!(dram.metrics[1].value, Value::Scalar(2.5));
        assert_eq!(out[1].metrics[0].value, Value::Scalar(240422.366267));

        collector.zone_label = true;
        let mut out = Vec::new();
        collector.update(&mut out).unwrap();
        let out = crate::metrics::merge_and_sort(out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].name, "node_rapl_joules_total");
        assert_eq!(out[0].metrics.len(), 3);
        assert_eq!(
            out[0].metrics[0].labels[2],
            ("rapl_zone".to_owned(), "package".to_owned())
        );

        // A garbled counter is an error; the zones before it are still served.
        write(&powercap.join("intel-rapl:1:0/energy_uj"), "12x\n");
        let mut out = Vec::new();
        let error = collector.update(&mut out).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_none());
        assert!(format!("{error:#}").contains("energy_uj"), "{error:#}");
        assert_eq!(out.len(), 2);

        // A zone without its range: nothing to report, as upstream's ErrNotExist check.
        std::fs::remove_file(powercap.join("intel-rapl:0:0/max_energy_range_uj")).unwrap();
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_some(), "{error:#}");
        std::fs::remove_dir_all(&root).unwrap();

        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_some(), "{error:#}");
    }
}
