//! `nvmesubsystem`: NVMe subsystems and the health of their controller paths from
//! /sys/class/nvme-subsystem/nvme-subsys* (NQN, model, serial, I/O policy; per controller its
//! state and transport; the namespace heads), as node_exporter's nvmesubsystem collector reads
//! them through procfs' `NVMeSubsystemClass`. Off by default, as upstream.
//!
//! Mostly for NVMe over Fabrics multipath (several `tcp`/`rdma`/`fc` controllers per
//! subsystem); a local disk (an EBS volume on EC2) is a subsystem of one `pcie` path. As
//! upstream, a missing or unreadable (permission) file anywhere makes the whole collector report
//! no data.
use std::{
    collections::BTreeSet,
    io::ErrorKind,
    path::{Path, PathBuf},
    sync::{Arc, LazyLock},
};

use anyhow::Context as _;
use regex::Regex;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec, NoData},
    metrics::MetricFamily,
    read,
};

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "nvmesubsystem",
    default_enabled: false,
    flags: &[],
    kernel: None,
    build,
};

struct NvmeSubsystemCollector {
    class: PathBuf,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    Ok(Arc::new(NvmeSubsystemCollector {
        class: context.sys_path("class/nvme-subsystem"),
    }))
}

// `[0-9]` as Go's ASCII `\d`.
static CONTROLLER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^nvme[0-9]+$").expect("valid regex"));
static NAMESPACE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^nvme[0-9]+n[0-9]+$").expect("valid regex"));

/// Every value of the `state` label, sorted: upstream's normalized kernel states and "unknown".
const STATES: [&str; 7] = [
    "connecting",
    "dead",
    "deleting",
    "live",
    "new",
    "resetting",
    "unknown",
];

/// The kernel's controller state as the `state` label: "deleting (no IO)" is "deleting", a
/// state upstream does not know is "unknown".
fn normalize_state(raw: &str) -> &'static str {
    match raw {
        "live" => "live",
        "connecting" => "connecting",
        "resetting" => "resetting",
        "dead" => "dead",
        "deleting" | "deleting (no IO)" => "deleting",
        "new" => "new",
        _ => "unknown",
    }
}

#[derive(Debug, PartialEq)]
struct Subsystem {
    name: String,
    nqn: String,
    model: String,
    serial: String,
    iopolicy: String,
    controllers: Vec<Controller>,
    namespaces: Vec<String>,
}

/// One controller (path) of a subsystem.
#[derive(Debug, PartialEq)]
struct Controller {
    name: String,
    state: String,
    transport: String,
}

/// [`read::sys_read_file`] with an error naming the file.
fn attribute(path: &Path) -> anyhow::Result<String> {
    read::sys_read_file(path).with_context(|| format!("failed to read {}", path.display()))
}

/// [`read::sorted_names`] with an error naming the directory.
fn sorted_entries(dir: &Path) -> anyhow::Result<Vec<String>> {
    read::sorted_names(dir).with_context(|| format!("failed to list {}", dir.display()))
}

/// procfs' `parseNVMeSubsystem`.
fn read_subsystem(dir: &Path, name: String) -> anyhow::Result<Subsystem> {
    let nqn = attribute(&dir.join("subsysnqn"))?;
    let model = attribute(&dir.join("model"))?;
    let serial = attribute(&dir.join("serial"))?;
    let iopolicy = attribute(&dir.join("iopolicy"))?;
    let mut controllers = Vec::new();
    let mut namespaces = BTreeSet::new();
    for entry in sorted_entries(dir)? {
        if CONTROLLER.is_match(&entry) {
            let path = dir.join(&entry);
            let state = attribute(&path.join("state"))?;
            let transport = attribute(&path.join("transport"))?;
            attribute(&path.join("address"))?;
            controllers.push(Controller {
                name: entry,
                state,
                transport,
            });
        } else if NAMESPACE.is_match(&entry) {
            namespaces.insert(entry);
        }
    }
    Ok(Subsystem {
        name,
        nqn,
        model,
        serial,
        iopolicy,
        controllers,
        namespaces: namespaces.into_iter().collect(),
    })
}

/// procfs' `NVMeSubsystemClass`: the `nvme-subsys*` entries, all or nothing.
fn read_class(class: &Path) -> anyhow::Result<Vec<Subsystem>> {
    sorted_entries(class)?
        .into_iter()
        .filter(|name| name.starts_with("nvme-subsys"))
        .map(|name| read_subsystem(&class.join(&name), name))
        .collect()
}

/// Go's `errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission)`.
fn is_absent(error: &anyhow::Error) -> bool {
    read::chain_has(error, ErrorKind::NotFound)
        || read::chain_has(error, ErrorKind::PermissionDenied)
}

impl Collector for NvmeSubsystemCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let subsystems = match read_class(&self.class) {
            Ok(subsystems) => subsystems,
            Err(error) if is_absent(&error) => {
                return Err(
                    NoData(format!("Could not read NVMe subsystem info: {error:#}")).into(),
                );
            }
            Err(error) => return Err(error.context("failed to scan NVMe subsystems")),
        };

        let mut info = MetricFamily::gauge(
            "node_nvmesubsystem_info",
            "Non-numeric information about an NVMe subsystem.",
        );
        let mut namespace_info = MetricFamily::gauge(
            "node_nvmesubsystem_namespace_info",
            "Maps an NVMe namespace block device to its subsystem.",
        );
        let mut paths = MetricFamily::gauge(
            "node_nvmesubsystem_paths",
            "Number of controller paths for an NVMe subsystem.",
        );
        let mut paths_live = MetricFamily::gauge(
            "node_nvmesubsystem_paths_live",
            "Number of controller paths in live state for an NVMe subsystem.",
        );
        let mut path_state = MetricFamily::gauge(
            "node_nvmesubsystem_path_state",
            "Current NVMe controller path state (1 for the current state, 0 for all others).",
        );
        for subsystem in &subsystems {
            let name = subsystem.name.as_str();
            info.push(
                [
                    ("subsystem", name),
                    ("nqn", subsystem.nqn.as_str()),
                    ("model", subsystem.model.as_str()),
                    ("serial", subsystem.serial.as_str()),
                    ("iopolicy", subsystem.iopolicy.as_str()),
                ],
                1.0,
            );
            for namespace in &subsystem.namespaces {
                namespace_info.push([("subsystem", name), ("device", namespace.as_str())], 1.0);
            }
            let mut live = 0;
            for controller in &subsystem.controllers {
                let current = normalize_state(&controller.state);
                if current == "live" {
                    live += 1;
                }
                for state in STATES {
                    path_state.push(
                        [
                            ("subsystem", name),
                            ("controller", controller.name.as_str()),
                            ("transport", controller.transport.as_str()),
                            ("state", state),
                        ],
                        if state == current { 1.0 } else { 0.0 },
                    );
                }
            }
            paths.push([("subsystem", name)], subsystem.controllers.len() as f64);
            paths_live.push([("subsystem", name)], f64::from(live));
        }
        out.extend([info, namespace_info, path_state, paths, paths_live]);
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

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nvmesubsys-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn subsystem(dir: &Path) {
        write(
            &dir.join("subsysnqn"),
            "nqn.2014-08.org.nvmexpress:uuid:f3a1\n",
        );
        write(&dir.join("model"), "Linux\n");
        write(&dir.join("serial"), "a1b2c3\n");
        write(&dir.join("iopolicy"), "round-robin\n");
    }

    fn controller(dir: &Path, state: &str) {
        write(&dir.join("state"), &format!("{state}\n"));
        write(&dir.join("transport"), "tcp\n");
        write(&dir.join("address"), "traddr=10.0.0.5,trsvcid=4420\n");
    }

    #[test]
    fn paths_and_states() {
        let class = temp("ok");
        let dir = class.join("nvme-subsys1");
        subsystem(&dir);
        controller(&dir.join("nvme1"), "live");
        controller(&dir.join("nvme2"), "deleting (no IO)");
        controller(&dir.join("nvme3"), "frozen");
        write(&dir.join("nvme1n1/size"), "1\n");
        write(&dir.join("nvme1c1n1/size"), "1\n");
        write(&class.join("other/model"), "x\n");
        let subsystems = read_class(&class).unwrap();
        assert_eq!(subsystems.len(), 1);
        assert_eq!(subsystems[0].namespaces, ["nvme1n1"]);
        let states: Vec<_> = subsystems[0]
            .controllers
            .iter()
            .map(|c| normalize_state(&c.state))
            .collect();
        assert_eq!(states, ["live", "deleting", "unknown"]);

        let mut out = Vec::new();
        NvmeSubsystemCollector {
            class: class.clone(),
        }
        .update(&mut out)
        .unwrap();
        let family = |name: &str| out.iter().find(|f| f.name == name).unwrap();
        assert_eq!(family("node_nvmesubsystem_path_state").metrics.len(), 21);
        assert_eq!(
            family("node_nvmesubsystem_paths_live").metrics[0].value,
            crate::metrics::Value::Scalar(1.0)
        );
        std::fs::remove_dir_all(&class).unwrap();
    }

    #[test]
    fn missing_files_are_no_data() {
        let class = temp("missing");
        let collector = NvmeSubsystemCollector {
            class: class.clone(),
        };
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_some(), "{error:#}");
        let dir = class.join("nvme-subsys0");
        subsystem(&dir);
        controller(&dir.join("nvme0"), "live");
        std::fs::remove_file(dir.join("nvme0/address")).unwrap();
        let mut out = Vec::new();
        let error = collector.update(&mut out).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_some(), "{error:#}");
        assert!(out.is_empty());
        // A directory where an attribute should be: an error, not "no data".
        std::fs::create_dir_all(dir.join("nvme0/address")).unwrap();
        let error = collector.update(&mut Vec::new()).unwrap_err();
        assert!(error.downcast_ref::<NoData>().is_none(), "{error:#}");
        assert!(format!("{error:#}").contains("nvme0/address"), "{error:#}");
        std::fs::remove_dir_all(&class).unwrap();
    }
}
