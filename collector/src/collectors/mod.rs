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

mod filefd;
mod loadavg;
mod read;

/// What a collector may use when it is built at start-up.
pub struct BuildContext {
    pub procfs: PathBuf,
    pub sysfs: PathBuf,
    pub rootfs: PathBuf,
    pub udev_data: PathBuf,
    pub flags: Arc<CollectorFlags>,
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
    filefd::SPEC,
    loadavg::SPEC,
    ebpf::block::SPEC,
    ebpf::irq::SPEC,
    ebpf::net::SPEC,
    ebpf::sched::SPEC,
];
