//! The shape every eBPF collector shares. Each scrape it reports its programs' status, then
//! reports success 0 when eBPF is not loaded or none of its hooks is attached, so
//! `node_scrape_collector_success` tells a node without eBPF from a working one (logged once, at
//! start-up, not by each collector); otherwise it reads its maps. A subsystem supplies only the
//! reading: a [`MapReader`], built once from the maps it takes out of the runtime.
use std::sync::Arc;

use super::runtime::{
    EbpfRuntime, Hook,
    status::{self, ProgramStatus},
};
use crate::{
    collector::{BuildContext, Collector, NoData},
    metrics::MetricFamily,
};

/// What one eBPF collector reads from its maps.
pub trait MapReader: Send + Sync + Sized + 'static {
    /// Pushes this scrape's families; called only when at least one of the collector's hooks
    /// is attached.
    fn read(&self, runtime: &EbpfRuntime, out: &mut Vec<MetricFamily>) -> anyhow::Result<()>;

    /// Programs beyond its hooks whose status it reports (`reader` is `None` without eBPF).
    fn other_programs(
        _reader: Option<&Self>,
        _runtime: Option<&EbpfRuntime>,
    ) -> Vec<ProgramStatus> {
        Vec::new()
    }
}

/// An eBPF collector: its hooks, and its reader once the runtime is loaded.
pub struct EbpfCollector<R> {
    /// Any one of them attached makes the collector worth reading.
    hooks: &'static [&'static Hook],
    /// Those whose status this collector reports (a hook shared by two collectors is reported
    /// by one).
    status_hooks: Vec<&'static Hook>,
    loaded: Option<(Arc<EbpfRuntime>, R)>,
}

impl<R: MapReader> EbpfCollector<R> {
    /// The collector on `hooks`, reporting the status of `status_hooks`, with the reader
    /// `new_reader` makes from the runtime (not called without eBPF).
    pub fn build(
        context: &BuildContext,
        hooks: &'static [&'static Hook],
        status_hooks: Vec<&'static Hook>,
        new_reader: impl FnOnce(&Arc<EbpfRuntime>) -> anyhow::Result<R>,
    ) -> anyhow::Result<Arc<dyn Collector>> {
        let loaded = match &context.ebpf {
            Some(runtime) => Some((Arc::clone(runtime), new_reader(runtime)?)),
            None => None,
        };
        Ok(Arc::new(Self {
            hooks,
            status_hooks,
            loaded,
        }))
    }
}

impl<R: MapReader> Collector for EbpfCollector<R> {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let runtime = self.loaded.as_ref().map(|(runtime, _)| &**runtime);
        let reader = self.loaded.as_ref().map(|(_, reader)| reader);
        let mut programs: Vec<ProgramStatus> = self
            .status_hooks
            .iter()
            .map(|hook| ProgramStatus::of_hook(runtime, hook))
            .collect();
        programs.extend(R::other_programs(reader, runtime));
        status::push(runtime, &programs, out);

        // Success 0 either way, but not a fault of this collector to log: start-up has logged
        // why eBPF or each hook is unavailable, once.
        let Some((runtime, reader)) = &self.loaded else {
            return Err(
                NoData("eBPF programs not loaded (see the start-up log)".to_owned()).into(),
            );
        };
        if self
            .hooks
            .iter()
            .all(|hook| runtime.attached(hook).is_none())
        {
            let reason = "none of its kernel hooks is attached (see ebpf_program_attached)";
            return Err(NoData(reason.to_owned()).into());
        }
        reader.read(runtime, out)
    }
}
