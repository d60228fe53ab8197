//! The collector registry: every collector, its default, its flags and the kernel hooks it
//! needs. The /proc and /sys collectors live one per file in this folder; the eBPF ones in
//! `ebpf/`. Adding a collector means one new file and one line in [`ALL`].
use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::{
    ebpf::{self, EbpfRuntime, Hook},
    flags::{CollectorFlags, FlagSpec},
    scrape::Collector,
};

pub mod unimplemented;

mod bonding;
mod conntrack;
mod cpu;
mod cpufreq;
mod diskstats;
mod entropy;
mod filefd;
mod filesystem;
mod hwmon;
mod loadavg;
mod mdadm;
mod meminfo;
mod netclass;
mod netdev;
mod netstat;
mod os;
mod pressure;
pub(crate) mod read;
mod schedstat;
mod sockstat;
mod softnet;
mod stat;
mod textfile;
mod thermal_zone;
mod time;
mod timex;
mod udp_queues;
mod uname;
mod vmstat;

/// What a collector may use when it is built at start-up.
pub struct BuildContext {
    pub procfs: PathBuf,
    pub sysfs: PathBuf,
    pub rootfs: PathBuf,
    pub udev_data: PathBuf,
    pub flags: Arc<CollectorFlags>,
    /// Names of the enabled collectors (node_exporter's `collectorState`), for the few collectors
    /// whose output depends on another one being on.
    pub enabled: Vec<&'static str>,
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
        self.enabled.contains(&name)
    }

    /// `rel` (absolute on the host, e.g. `/etc/os-release`) under `--path.rootfs`.
    pub fn root_path(&self, rel: impl AsRef<Path>) -> PathBuf {
        let rel = rel.as_ref();
        self.rootfs.join(rel.strip_prefix("/").unwrap_or(rel))
    }
}

pub struct CollectorSpec {
    /// Name in `--collector.<name>` and in the `collector` label.
    pub name: &'static str,
    pub default_enabled: bool,
    /// Its `--collector.<name>.<option>` flags.
    pub flags: &'static [FlagSpec],
    /// Kernel hooks to attach when this collector is enabled.
    pub hooks: &'static [Hook],
    pub build: fn(&BuildContext) -> anyhow::Result<Arc<dyn Collector>>,
}

/// Every collector, in `--help` order.
pub const ALL: &[CollectorSpec] = &[
    bonding::SPEC,
    conntrack::SPEC,
    cpu::SPEC,
    cpufreq::SPEC,
    diskstats::SPEC,
    entropy::SPEC,
    filefd::SPEC,
    filesystem::SPEC,
    hwmon::SPEC,
    loadavg::SPEC,
    mdadm::SPEC,
    meminfo::SPEC,
    netclass::SPEC,
    netdev::SPEC,
    netstat::SPEC,
    os::SPEC,
    pressure::SPEC,
    schedstat::SPEC,
    sockstat::SPEC,
    softnet::SPEC,
    stat::SPEC,
    textfile::SPEC,
    thermal_zone::SPEC,
    time::SPEC,
    timex::SPEC,
    udp_queues::SPEC,
    uname::SPEC,
    vmstat::SPEC,
    ebpf::block::SPEC,
    ebpf::cgroup::SPEC,
    ebpf::irq::SPEC,
    ebpf::net::SPEC,
    ebpf::sched::SPEC,
];
