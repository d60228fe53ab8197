//! The collector registry: every collector, its default, and the kernel hooks it needs. The
//! /proc and /sys collectors live one per file in this folder; the eBPF ones in `ebpf/`.
use std::{path::PathBuf, sync::Arc};

use crate::{
    ebpf::{self, EbpfRuntime, Hook},
    scrape::Collector,
};

/// What a collector may use when it is built at start-up.
pub struct BuildContext {
    pub procfs: PathBuf,
    pub sysfs: PathBuf,
    pub rootfs: PathBuf,
    /// The loaded kernel programs; `None` when eBPF is unavailable or no eBPF collector is on.
    pub ebpf: Option<Arc<EbpfRuntime>>,
}

pub struct CollectorSpec {
    /// Name in `--collector.<name>` and in the `collector` label.
    pub name: &'static str,
    pub default_enabled: bool,
    /// Kernel hooks to attach when this collector is enabled.
    pub hooks: &'static [Hook],
    pub build: fn(&BuildContext) -> anyhow::Result<Arc<dyn Collector>>,
}

/// Every collector, in `--help` order.
pub const ALL: &[CollectorSpec] = &[ebpf::irq::SPEC, ebpf::sched::SPEC];
