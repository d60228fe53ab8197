//! `dmmultipath`: device-mapper multipath maps from /sys/block/dm-* (those whose dm/uuid starts
//! with `mpath-`: name, suspended, size, and the state of each path in slaves/, read from
//! /sys/block/<path>/device/state), as node_exporter's dmmultipath collector reads them through
//! procfs' `blockdevice.DMMultipathDevices`.
//!
//! Other device-mapper devices (LVM, dm-crypt: another uuid prefix) and dm-* entries without
//! dm/uuid are skipped. As upstream, any other file missing or refused (permission) makes the
//! whole collector report no data, and a path is active when its state is `running` (SCSI) or
//! `live` (NVMe).
use std::{
    io::ErrorKind,
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
    name: "dmmultipath",
    default_enabled: true,
    flags: &[],
    kernel: None,
    build,
};

struct DmMultipathCollector {
    sys_block: PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(DmMultipathCollector {
        sys_block: context.sys_path("block"),
    }))
}

/// The kernel's `size` is in 512-byte sectors whatever the device's block size.
const SECTOR_SIZE: u64 = 512;

#[derive(Debug, PartialEq)]
struct Device {
    /// dm/name, e.g. `mpatha`.
    name: String,
    /// The block device, e.g. `dm-2`.
    sysfs_name: String,
    uuid: String,
    suspended: bool,
    size_bytes: u64,
    /// (device, state) of each path.
    paths: Vec<(String, String)>,
}

/// [`read::sys_read_file`] with an error naming the file.
fn attribute(path: &Path) -> anyhow::Result<String> {
    read::sys_read_file(path).with_context(|| format!("failed to read {}", path.display()))
}

/// [`read::read_uint_file`] with an error naming the file.
fn uint_from_file(path: &Path) -> anyhow::Result<u64> {
    read::read_uint_file(path).with_context(|| format!("failed to read {}", path.display()))
}

/// procfs' `DMMultipathDevices`, all or nothing.
fn read_devices(sys_block: &Path) -> anyhow::Result<Vec<Device>> {
    let entries = read::sorted_names(sys_block)
        .with_context(|| format!("reading {}", sys_block.display()))?;
    let mut devices = Vec::new();
    for sysfs_name in entries {
        if !sysfs_name.starts_with("dm-") {
            continue;
        }
        let dir = sys_block.join(&sysfs_name);
        let uuid_path = dir.join("dm/uuid");
        let uuid = match read::sys_read_file(&uuid_path) {
            Ok(uuid) => uuid,
            // Not a device-mapper device.
            Err(error) if error.kind() == ErrorKind::NotFound => continue,
            Err(error) => {
                return Err(anyhow::Error::new(error)
                    .context(format!("failed to read {}", uuid_path.display())));
            }
        };
        if !uuid.starts_with("mpath-") {
            continue;
        }
        let name = attribute(&dir.join("dm/name"))?;
        let suspended = uint_from_file(&dir.join("dm/suspended"))? == 1;
        let sectors = uint_from_file(&dir.join("size"))?;
        let paths = read_paths(sys_block, &dir.join("slaves"))?;
        devices.push(Device {
            name,
            sysfs_name,
            uuid,
            suspended,
            // Go's unsigned arithmetic wraps.
            size_bytes: sectors.wrapping_mul(SECTOR_SIZE),
            paths,
        });
    }
    Ok(devices)
}

/// The slaves of a map with the state of each; none without a slaves/ directory.
fn read_paths(sys_block: &Path, slaves: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let entries = match read::sorted_names(slaves) {
        Ok(entries) => entries,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(anyhow::Error::new(error).context(format!("reading {}", slaves.display())));
        }
    };
    entries
        .into_iter()
        .map(|device| {
            let state = attribute(&sys_block.join(&device).join("device/state"))?;
            Ok((device, state))
        })
        .collect()
}

/// Go's `errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission)`.
fn is_absent(error: &anyhow::Error) -> bool {
    read::chain_has(error, ErrorKind::NotFound)
        || read::chain_has(error, ErrorKind::PermissionDenied)
}

impl Collector for DmMultipathCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let devices = match read_devices(&self.sys_block) {
            Ok(devices) => devices,
            Err(error) if is_absent(&error) => {
                return Err(
                    NoData(format!("Could not read DM-multipath devices: {error:#}")).into(),
                );
            }
            Err(error) => return Err(error.context("failed to scan DM-multipath devices")),
        };

        let mut info = MetricFamily::gauge(
            "node_dmmultipath_device_info",
            "Non-numeric information about a DM-multipath device.",
        );
        let mut active = MetricFamily::gauge(
            "node_dmmultipath_device_active",
            "Whether the multipath device-mapper device is active (1) or suspended (0).",
        );
        let mut size = MetricFamily::gauge(
            "node_dmmultipath_device_size_bytes",
            "Size of the multipath device in bytes, read from /sys/block/<dm>/size.",
        );
        let mut paths = MetricFamily::gauge(
            "node_dmmultipath_device_paths",
            "Number of paths for a multipath device.",
        );
        let mut paths_active = MetricFamily::gauge(
            "node_dmmultipath_device_paths_active",
            "Number of paths in active state (SCSI running or NVMe live) for a multipath device.",
        );
        let mut paths_failed = MetricFamily::gauge(
            "node_dmmultipath_device_paths_failed",
            "Number of paths not in active state for a multipath device.",
        );
        let mut path_state = MetricFamily::gauge(
            "node_dmmultipath_path_state",
            "Reports the underlying device state for a multipath path, as read from /sys/block/<dev>/device/state.",
        );
        for device in &devices {
            let labels = [
                ("device", device.name.as_str()),
                ("sysfs_name", device.sysfs_name.as_str()),
            ];
            info.push(
                labels.into_iter().chain([("uuid", device.uuid.as_str())]),
                1.0,
            );
            active.push(labels, if device.suspended { 0.0 } else { 1.0 });
            size.push(labels, device.size_bytes as f64);
            let mut healthy = 0;
            for (path, state) in &device.paths {
                if state == "running" || state == "live" {
                    healthy += 1;
                }
                path_state.push(
                    [
                        ("device", device.name.as_str()),
                        ("path", path.as_str()),
                        ("state", state.as_str()),
                    ],
                    1.0,
                );
            }
            paths.push(labels, device.paths.len() as f64);
            paths_active.push(labels, f64::from(healthy));
            paths_failed.push(labels, (device.paths.len() - healthy as usize) as f64);
        }
        out.extend([
            info,
            active,
            size,
            path_state,
            paths,
            paths_active,
            paths_failed,
        ]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dmmultipath-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn map(block: &Path, dm: &str, uuid: &str, slaves: &[(&str, &str)]) {
        let dir = block.join(dm);
        write(&dir.join("dm/uuid"), &format!("{uuid}\n"));
        write(&dir.join("dm/name"), "mpatha\n");
        write(&dir.join("dm/suspended"), "0\n");
        write(&dir.join("size"), "2147483648\n");
        std::fs::create_dir_all(dir.join("slaves")).unwrap();
        for (slave, state) in slaves {
            std::fs::create_dir_all(dir.join("slaves").join(slave)).unwrap();
            write(
                &block.join(slave).join("device/state"),
                &format!("{state}\n"),
            );
        }
    }

    #[test]
    fn maps_and_paths() {
        let block = temp("ok");
        map(
            &block,
            "dm-2",
            "mpath-3600a098038303634",
            &[("sdc", "running"), ("sdd", "offline"), ("nvme2n1", "live")],
        );
        // LVM and devices without dm/ are not multipath.
        write(&block.join("dm-0/dm/uuid"), "LVM-abc\n");
        std::fs::create_dir_all(block.join("dm-1")).unwrap();
        let devices = read_devices(&block).unwrap();
        assert_eq!(
            devices,
            [Device {
                name: "mpatha".into(),
                sysfs_name: "dm-2".into(),
                uuid: "mpath-3600a098038303634".into(),
                suspended: false,
                size_bytes: 1 << 40,
                paths: vec![
                    ("nvme2n1".into(), "live".into()),
                    ("sdc".into(), "running".into()),
                    ("sdd".into(), "offline".into()),
                ],
            }]
        );
        let mut out = Vec::new();
        DmMultipathCollector {
            sys_block: block.clone(),
        }
        .update(&mut out)
        .unwrap();
        let family = |name: &str| out.iter().find(|f| f.name == name).unwrap();
        assert_eq!(
            family("node_dmmultipath_device_paths_failed").metrics[0].value,
            crate::metrics::Value::Scalar(1.0)
        );
        assert_eq!(family("node_dmmultipath_path_state").metrics.len(), 3);

        // Suspended, and without slaves/.
        write(&block.join("dm-2/dm/suspended"), "1\n");
        std::fs::remove_dir_all(block.join("dm-2/slaves")).unwrap();
        let devices = read_devices(&block).unwrap();
        assert!(devices[0].suspended);
        assert!(devices[0].paths.is_empty());
        std::fs::remove_dir_all(&block).unwrap();
    }

    #[test]
    fn missing_and_malformed() {
        let block = temp("bad");
        let collector = DmMultipathCollector {
            sys_block: block.clone(),
        };
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_some(), "{error:#}");

        // A path without device/state: no data for the whole collector.
        map(&block, "dm-3", "mpath-1", &[("sde", "running")]);
        std::fs::remove_file(block.join("sde/device/state")).unwrap();
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_some(), "{error:#}");
        write(&block.join("sde/device/state"), "running\n");
        collector.update(&mut Vec::new()).unwrap();

        for (file, bad) in [
            ("dm/suspended", "yes"),
            ("size", "+1"),
            ("size", "-1"),
            ("size", ""),
        ] {
            write(&block.join("dm-3").join(file), bad);
            let mut out = Vec::new();
            let error = collector.update(&mut out).unwrap_err();
            assert!(error.downcast_ref::<NoData>().is_none(), "{error:#}");
            assert!(format!("{error:#}").contains(file), "{error:#}");
            assert!(out.is_empty());
            write(&block.join("dm-3").join(file), "0\n");
        }
        std::fs::remove_dir_all(&block).unwrap();
    }
}
