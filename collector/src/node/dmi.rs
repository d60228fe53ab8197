//! `dmi`: the firmware's DMI/SMBIOS identification of the machine (vendor, product name, BIOS,
//! board, chassis: `Amazon EC2`, `m7g.large`...) from /sys/class/dmi/id/*, as procfs'
//! `DMIClass` reads it, in one `node_dmi_info` series.
//!
//! Not obvious: read once at start-up, as upstream (it cannot change before a reboot), so a
//! file that cannot be read disables the collector then; files only root may read (serials,
//! `product_uuid`) are left out; a missing folder (arm64 without SMBIOS) is "no data" at every
//! scrape. Labels are only those whose file exists, values with invalid UTF-8 replaced as Go's
//! `strings.ToValidUTF8` does.
use std::{path::Path, sync::Arc};

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec, NoData},
    metrics::MetricFamily,
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "dmi",
    default_enabled: true,
    flags: &[],
    kernel: None,
    build,
};

/// `(file, label)` of the attributes exported.
const LABELS: &[(&str, &str)] = &[
    ("bios_date", "bios_date"),
    ("bios_release", "bios_release"),
    ("bios_vendor", "bios_vendor"),
    ("bios_version", "bios_version"),
    ("board_asset_tag", "board_asset_tag"),
    ("board_name", "board_name"),
    ("board_serial", "board_serial"),
    ("board_vendor", "board_vendor"),
    ("board_version", "board_version"),
    ("chassis_asset_tag", "chassis_asset_tag"),
    ("chassis_serial", "chassis_serial"),
    ("chassis_vendor", "chassis_vendor"),
    ("chassis_version", "chassis_version"),
    ("product_family", "product_family"),
    ("product_name", "product_name"),
    ("product_serial", "product_serial"),
    ("product_sku", "product_sku"),
    ("product_uuid", "product_uuid"),
    ("product_version", "product_version"),
    ("sys_vendor", "system_vendor"),
];

struct DmiCollector {
    /// `(label, value)`; empty when the platform has no DMI.
    labels: Vec<(&'static str, String)>,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    let dir = context.sys_path("class/dmi/id");
    let labels = match read_dmi(&dir) {
        Ok(labels) => labels,
        Err(error) if read::chain_has(&error, std::io::ErrorKind::NotFound) => {
            tracing::debug!(
                err = format!("{error:#}"),
                "Platform does not support Desktop Management Interface (DMI) information"
            );
            Vec::new()
        }
        Err(error) => {
            return Err(
                error.context("failed to read Desktop Management Interface (DMI) information")
            );
        }
    };
    Ok(Arc::new(DmiCollector { labels }))
}

/// procfs' `DMIClass`: every regular file but `modalias` and `uevent` is read; the ones not
/// permitted are skipped, any other error fails; the known ones become labels.
fn read_dmi(dir: &Path) -> anyhow::Result<Vec<(&'static str, String)>> {
    let entries =
        read::read_dir_sorted(dir).with_context(|| format!("failed to read directory {dir:?}"))?;
    let mut labels = Vec::new();
    for entry in entries {
        if !entry.file_type.is_file() || entry.name == "modalias" || entry.name == "uevent" {
            continue;
        }
        let value = match read::sys_read_file(&entry.path) {
            Ok(value) => value,
            // Only root may read the serial numbers and product_uuid.
            Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => continue,
            Err(error) => {
                return Err(error).with_context(|| format!("failed to read file {:?}", entry.path));
            }
        };
        if let Some((_, label)) = LABELS.iter().find(|(file, _)| entry.name == *file) {
            labels.push((*label, value));
        }
    }
    Ok(labels)
}

impl Collector for DmiCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        if self.labels.is_empty() {
            return Err(NoData("no DMI information".to_owned()).into());
        }
        out.push(
            MetricFamily::gauge(
                "node_dmi_info",
                "A metric with a constant '1' value labeled by bios_date, bios_release, \
                 bios_vendor, bios_version, board_asset_tag, board_name, board_serial, \
                 board_vendor, board_version, chassis_asset_tag, chassis_serial, chassis_vendor, \
                 chassis_version, product_family, product_name, product_serial, product_sku, \
                 product_uuid, product_version, system_vendor if provided by DMI.",
            )
            .with(self.labels.iter().map(|(l, v)| (*l, v.as_str())), 1.0),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dmi_as_procfs() {
        let dir = std::env::temp_dir().join(format!("dmi-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("power")).unwrap();
        for (file, value) in [
            ("sys_vendor", &b"Amazon EC2\n"[..]),
            ("product_name", b"m7g.large\n"),
            ("board_asset_tag", b"i-0123456789abcdef0\n"),
            ("chassis_type", b"1\n"),
            ("chassis_version", b"\n"),
            ("product_version", b"\x1c\xff[\xfe\n"),
            ("modalias", b"\xff"),
            ("uevent", b"MODALIAS=dmi:bvnAmazonEC2\n"),
        ] {
            std::fs::write(dir.join(file), value).unwrap();
        }
        let labels = read_dmi(&dir).unwrap();
        assert_eq!(
            labels,
            [
                ("board_asset_tag", "i-0123456789abcdef0".to_owned()),
                ("chassis_version", String::new()),
                ("product_name", "m7g.large".to_owned()),
                ("product_version", "\u{1c}\u{fffd}[\u{fffd}".to_owned()),
                ("system_vendor", "Amazon EC2".to_owned()),
            ]
        );
        let mut out = Vec::new();
        DmiCollector { labels }.update(&mut out).unwrap();
        assert_eq!(out[0].metrics[0].labels.len(), 5);

        // Only regular files are read: a symlink, even to a folder, is skipped.
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::os::unix::fs::symlink(dir.join("sub"), dir.join("bios_vendor")).unwrap();
        assert!(read_dmi(&dir).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();

        let error = read_dmi(&dir).unwrap_err();
        assert!(read::chain_has(&error, std::io::ErrorKind::NotFound));
        let error = DmiCollector { labels: Vec::new() }
            .update(&mut Vec::new())
            .unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_some());
    }
}
