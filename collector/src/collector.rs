//! What a collector is: a source of metric families read at scrape time ([`Collector`]), how
//! it is declared ([`CollectorSpec`]) and what it may use when it is built ([`BuildContext`]).
//! This module names no collector: `registry` lists them, `node/` and `ebpf/` hold them.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::{
    ebpf::runtime::{Configure, EbpfRuntime, Hook},
    flags::{CollectorFlags, FlagSpec},
    metrics::MetricFamily,
};

/// A source of metrics read at scrape time (a /proc file, a BPF map...).
pub trait Collector: Send + Sync + 'static {
    /// Pushes this scrape's families into `out`. May block; runs on a collector thread. On
    /// error, families already pushed are still served, as node_exporter does.
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()>;

    /// Whether its families are defined outside this program (the textfile collector's): a
    /// family of a name that another collector or the exporter itself serves is then dropped
    /// from its output, as node_exporter's registry refuses a collision, so built-in metrics
    /// always win.
    fn is_external(&self) -> bool {
        false
    }
}

/// The error for "nothing to report on this host" (no hwmon chips, no md arrays...): success 0
/// as in node_exporter, but logged at debug level only, since it is not a fault.
#[derive(Debug)]
pub struct NoData(pub String);

impl std::fmt::Display for NoData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoData {}

/// One collector as the registry lists it: its switch, its flags, the kernel programs it needs
/// and how to build it.
pub struct CollectorSpec {
    /// Name in `--collector.<name>` and in the `collector` label.
    pub name: &'static str,
    pub default_enabled: bool,
    /// Its `--collector.<name>.<option>` flags.
    pub flags: &'static [FlagSpec],
    /// What it needs loaded into the kernel; `None` for /proc and /sys collectors.
    pub kernel: Option<&'static KernelPart>,
    pub build: fn(&BuildContext) -> anyhow::Result<Arc<dyn Collector>>,
}

/// The kernel side of an eBPF collector: the hooks to attach, and the globals and map sizes
/// of its own beyond those its hooks set.
pub struct KernelPart {
    pub hooks: &'static [&'static Hook],
    pub configure: Option<Configure>,
}

/// What a collector may use when it is built at start-up.
pub struct BuildContext {
    pub procfs: PathBuf,
    pub sysfs: PathBuf,
    pub rootfs: PathBuf,
    pub udev_data: PathBuf,
    pub flags: Arc<CollectorFlags>,
    /// The enabled collectors (node_exporter's `collectorState`), for the few collectors whose
    /// output depends on another one being on.
    pub enabled: Vec<&'static CollectorSpec>,
    /// The loaded kernel programs; `None` when eBPF is unavailable or no eBPF collector is on.
    pub ebpf: Option<Arc<EbpfRuntime>>,
}

impl BuildContext {
    /// `rel` under `--path.procfs`.
    pub fn proc_path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.procfs.join(rel)
    }

    /// `rel` under `--path.sysfs`.
    pub fn sys_path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.sysfs.join(rel)
    }

    /// Whether the collector `name` is enabled.
    pub fn is_enabled(&self, name: &str) -> bool {
        self.enabled.iter().any(|spec| spec.name == name)
    }

    /// Whether an enabled collector other than `me` attaches `hook` (and so reports its status).
    pub fn hook_used_elsewhere(&self, me: &str, hook: &Hook) -> bool {
        self.enabled
            .iter()
            .filter(|spec| spec.name != me)
            .filter_map(|spec| spec.kernel)
            .any(|kernel| kernel.hooks.iter().any(|h| h.name == hook.name))
    }

    /// `rel` (absolute on the host, e.g. `/etc/os-release`) under `--path.rootfs`.
    pub fn root_path(&self, rel: impl AsRef<Path>) -> PathBuf {
        let rel = rel.as_ref();
        self.rootfs.join(rel.strip_prefix("/").unwrap_or(rel))
    }
}
