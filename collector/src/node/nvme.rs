//! `nvme`: NVMe controllers and their namespaces from /sys/class/nvme/<controller> (model,
//! serial, firmware, state, controller id; per namespace its size, use, logical block size and
//! ANA state), as node_exporter's nvme collector reads them through procfs' `NVMeClass`.
//!
//! On EC2 every EBS volume and instance-store disk is an NVMe controller of its own (model
//! "Amazon Elastic Block Store", serial "vol…"), so this is the inventory of a node's volumes.
//!
//! As upstream: a file missing anywhere (no /sys/class/nvme, or a controller without `cntlid`)
//! makes the whole collector report no data; byte counts are the `size` and `nuse` files times
//! the logical block size (the kernel prints `size` in 512-byte sectors, so the product
//! overstates namespaces of larger blocks, as node_exporter does); a number that does not parse
//! is 0.
use std::{
    io::ErrorKind,
    path::{Path, PathBuf},
    sync::{Arc, LazyLock},
};

use anyhow::Context as _;
use regex::Regex;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec, NoData},
    goparse,
    metrics::MetricFamily,
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "nvme",
    default_enabled: true,
    flags: &[],
    kernel: None,
    build,
};

struct NvmeCollector {
    class_nvme: PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(NvmeCollector {
        class_nvme: context.sys_path("class/nvme"),
    }))
}

/// procfs' namespace pattern, unanchored (`nvme0n1` but also `xnvme0n1`; not the per-path
/// `nvme0c0n1` of native multipath); `[0-9]` as Go's ASCII `\d`.
static NAMESPACE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"nvme[0-9]+n([0-9]+)").expect("valid regex"));

#[derive(Debug, PartialEq)]
struct Controller {
    name: String,
    firmware_revision: String,
    model: String,
    serial: String,
    state: String,
    controller_id: String,
    namespaces: Vec<Namespace>,
}

#[derive(Debug, PartialEq)]
struct Namespace {
    id: String,
    ana_state: String,
    used_bytes: u64,
    size_bytes: u64,
    logical_block_size: u64,
}

/// [`read::sys_read_file`] with an error naming the file.
fn attribute(path: &Path) -> anyhow::Result<String> {
    read::sys_read_file(path).with_context(|| format!("failed to read file {:?}", path.display()))
}

/// [`read::sorted_names`] with an error naming the directory.
fn sorted_entries(dir: &Path) -> anyhow::Result<Vec<String>> {
    read::sorted_names(dir).with_context(|| format!("failed to list {:?}", dir.display()))
}

/// Go's `strconv.ParseUint(s, 10, 64)`; procfs takes a failure as 0.
fn parse_or_zero(value: &str) -> u64 {
    goparse::parse_uint(value, 10, 64).unwrap_or(0)
}

/// procfs' `parseNVMeDevice`.
fn read_controller(dir: &Path, name: String) -> anyhow::Result<Controller> {
    let read = |file: &str| attribute(&dir.join(file));
    let firmware_revision = read("firmware_rev")?;
    let model = read("model")?;
    let serial = read("serial")?;
    let state = read("state")?;
    let controller_id = read("cntlid")?;
    let mut namespaces = Vec::new();
    for entry in sorted_entries(dir)? {
        let Some(id) = NAMESPACE.captures(&entry).map(|c| c[1].to_owned()) else {
            continue;
        };
        let ns_dir = dir.join(&entry);
        let used_blocks = parse_or_zero(&attribute(&ns_dir.join("nuse"))?);
        let size_blocks = parse_or_zero(&attribute(&ns_dir.join("size"))?);
        let logical_block_size =
            parse_or_zero(&attribute(&ns_dir.join("queue/logical_block_size"))?);
        // Absent without multipath (and unreadable): "unknown", whatever the error.
        let ana_state =
            read::sys_read_file(&ns_dir.join("ana_state")).unwrap_or_else(|_| "unknown".to_owned());
        namespaces.push(Namespace {
            id,
            ana_state,
            // Go's unsigned arithmetic wraps.
            used_bytes: used_blocks.wrapping_mul(logical_block_size),
            size_bytes: size_blocks.wrapping_mul(logical_block_size),
            logical_block_size,
        });
    }
    Ok(Controller {
        name,
        firmware_revision,
        model,
        serial,
        state,
        controller_id,
        namespaces,
    })
}

/// procfs' `NVMeClass`: every entry of /sys/class/nvme, all or nothing.
fn read_class(class: &Path) -> anyhow::Result<Vec<Controller>> {
    sorted_entries(class)?
        .into_iter()
        .map(|name| read_controller(&class.join(&name), name))
        .collect()
}

impl Collector for NvmeCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let controllers = match read_class(&self.class_nvme) {
            Ok(controllers) => controllers,
            Err(error) if read::chain_has(&error, ErrorKind::NotFound) => {
                return Err(
                    NoData(format!("nvme statistics not found, skipping: {error:#}")).into(),
                );
            }
            Err(error) => return Err(error.context("error obtaining NVMe class info")),
        };

        let mut info = MetricFamily::gauge(
            "node_nvme_info",
            "Non-numeric data from /sys/class/nvme/<device>, value is always 1.",
        );
        let mut namespace_info = MetricFamily::gauge(
            "node_nvme_namespace_info",
            "Information about NVMe namespaces. Value is always 1",
        );
        let mut capacity = MetricFamily::gauge(
            "node_nvme_namespace_capacity_bytes",
            "Capacity of the NVMe namespace in bytes. Computed as namespace_size * namespace_logical_block_size",
        );
        let mut size = MetricFamily::gauge(
            "node_nvme_namespace_size_bytes",
            "Size of the NVMe namespace in bytes. Available in /sys/class/nvme/<device>/<namespace>/size",
        );
        let mut used = MetricFamily::gauge(
            "node_nvme_namespace_used_bytes",
            "Used space of the NVMe namespace in bytes. Available in /sys/class/nvme/<device>/<namespace>/nuse",
        );
        let mut block_size = MetricFamily::gauge(
            "node_nvme_namespace_logical_block_size_bytes",
            "Logical block size of the NVMe namespace in bytes. Usually 4Kb. Available in /sys/class/nvme/<device>/<namespace>/queue/logical_block_size",
        );
        // Two entries of one controller can name the same namespace id (`nvme0n1` and
        // `xnvme0n1`): client_golang keeps the first series and drops the others.
        let mut seen = std::collections::HashSet::new();
        for controller in &controllers {
            let device = controller.name.as_str();
            info.push(
                [
                    ("device", device),
                    ("firmware_revision", controller.firmware_revision.as_str()),
                    ("model", controller.model.as_str()),
                    ("serial", controller.serial.as_str()),
                    ("state", controller.state.as_str()),
                    ("cntlid", controller.controller_id.as_str()),
                ],
                1.0,
            );
            for namespace in &controller.namespaces {
                let nsid = namespace.id.as_str();
                if !seen.insert((device, nsid)) {
                    continue;
                }
                namespace_info.push(
                    [
                        ("device", device),
                        ("nsid", nsid),
                        ("ana_state", namespace.ana_state.as_str()),
                    ],
                    1.0,
                );
                let labels = [("device", device), ("nsid", nsid)];
                capacity.push(labels, namespace.size_bytes as f64);
                size.push(labels, namespace.size_bytes as f64);
                used.push(labels, namespace.used_bytes as f64);
                block_size.push(labels, namespace.logical_block_size as f64);
            }
        }
        out.extend([info, namespace_info, capacity, size, used, block_size]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// An EBS volume's controller as a c6i instance shows it.
    fn ebs(class: &Path, name: &str, serial: &str) -> PathBuf {
        let dir = class.join(name);
        write(&dir.join("firmware_rev"), "1.0     \n");
        write(
            &dir.join("model"),
            "Amazon Elastic Block Store              \n",
        );
        write(&dir.join("serial"), &format!("{serial}\n"));
        write(&dir.join("state"), "live\n");
        write(&dir.join("cntlid"), "0\n");
        dir
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nvme-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn controllers_and_namespaces() {
        let class = temp("ok");
        let dir = ebs(&class, "nvme0", "vol0a1b2c3d4e5f6a7b8");
        let ns = dir.join("nvme0n1");
        write(&ns.join("size"), "167772160\n");
        write(&ns.join("nuse"), "167772160\n");
        write(&ns.join("queue/logical_block_size"), "512\n");
        // The per-path device of native multipath and other entries are not namespaces.
        write(&dir.join("nvme0c0n1/size"), "1\n");
        write(&dir.join("hwmon1/name"), "nvme\n");
        let ns2 = dir.join("nvme0n2");
        write(&ns2.join("size"), "garbage\n");
        write(&ns2.join("nuse"), "18446744073709551615\n");
        write(&ns2.join("queue/logical_block_size"), "4096\n");
        write(&ns2.join("ana_state"), "optimized\n");

        let controllers = read_class(&class).unwrap();
        assert_eq!(
            controllers,
            [Controller {
                name: "nvme0".into(),
                firmware_revision: "1.0".into(),
                model: "Amazon Elastic Block Store".into(),
                serial: "vol0a1b2c3d4e5f6a7b8".into(),
                state: "live".into(),
                controller_id: "0".into(),
                namespaces: vec![
                    Namespace {
                        id: "1".into(),
                        ana_state: "unknown".into(),
                        used_bytes: 85899345920,
                        size_bytes: 85899345920,
                        logical_block_size: 512,
                    },
                    Namespace {
                        id: "2".into(),
                        ana_state: "optimized".into(),
                        // Wrapped as Go's uint64 product; the bad size is 0.
                        used_bytes: u64::MAX.wrapping_mul(4096),
                        size_bytes: 0,
                        logical_block_size: 4096,
                    },
                ],
            }]
        );
        let mut out = Vec::new();
        NvmeCollector {
            class_nvme: class.clone(),
        }
        .update(&mut out)
        .unwrap();
        assert_eq!(out.len(), 6);
        assert!(out.iter().skip(1).all(|family| family.metrics.len() == 2));
        std::fs::remove_dir_all(&class).unwrap();
    }

    #[test]
    fn a_missing_file_is_no_data_and_other_errors_fail() {
        let class = temp("missing");
        let collector = NvmeCollector {
            class_nvme: class.clone(),
        };
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_some(), "{error:#}");

        // An old kernel without cntlid: no data at all, as upstream.
        let dir = ebs(&class, "nvme0", "vol0a1b2c3d4e5f6a7b8");
        std::fs::remove_file(dir.join("cntlid")).unwrap();
        let mut out = Vec::new();
        let error = collector.update(&mut out).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_some(), "{error:#}");
        assert!(out.is_empty());

        // A namespace without its size file.
        write(&dir.join("cntlid"), "0\n");
        write(&dir.join("nvme0n1/nuse"), "1\n");
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_some(), "{error:#}");

        // An attribute that cannot be read (a directory): an error naming it.
        std::fs::create_dir_all(dir.join("nvme0n1/size")).unwrap();
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_none(), "{error:#}");
        assert!(format!("{error:#}").contains("nvme0n1/size"), "{error:#}");
        std::fs::remove_dir_all(&class).unwrap();
    }
}
