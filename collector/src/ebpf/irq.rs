//! `ebpf.irq`: CPU time spent in hard IRQ handlers and in each softirq vector, per CPU.
use std::sync::Arc;

use anyhow::Context as _;
use aya::maps::{IterableMap as _, MapData, PerCpuArray};
use collector_common::{CpuIrqTime, SOFTIRQ_NAMES};

use super::reader::{EbpfCollector, MapReader};
use crate::{
    collector::{BuildContext, Collector, CollectorSpec, KernelPart},
    ebpf::runtime::{
        EbpfRuntime, Hook, HookType, batch::BatchReader, needs_nothing, online_cpus,
        tracepoint_fields,
    },
    hook,
    metrics::MetricFamily,
};

pub static IRQ_HANDLER_ENTRY: Hook = hook!("irq" / "irq_handler_entry", requires: needs_nothing);
pub static IRQ_HANDLER_EXIT: Hook = hook!("irq" / "irq_handler_exit", requires: needs_nothing);
pub static SOFTIRQ_ENTRY: Hook = hook!("irq" / "softirq_entry", requires: needs_nothing);
pub static SOFTIRQ_EXIT: Hook = hook!("irq" / "softirq_exit",
    requires: |layout, hook_type| match hook_type {
        HookType::Tracepoint => tracepoint_fields(&[layout.tp_softirq_vec]),
        _ => None,
    },
);

pub static HOOKS: [&Hook; 4] = [
    &IRQ_HANDLER_ENTRY,
    &IRQ_HANDLER_EXIT,
    &SOFTIRQ_ENTRY,
    &SOFTIRQ_EXIT,
];

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "ebpf.irq",
    default_enabled: true,
    flags: &[],
    kernel: Some(&KernelPart {
        hooks: &HOOKS,
        configure: None,
    }),
    build,
};

struct IrqMaps {
    hardirq: PerCpuArray<MapData, CpuIrqTime>,
    softirq: PerCpuArray<MapData, u64>,
    softirq_reader: BatchReader<u32, u64>,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    EbpfCollector::build(context, &HOOKS, HOOKS.to_vec(), |runtime| {
        let softirq: PerCpuArray<MapData, u64> = runtime.take_map("SOFTIRQ_TIME")?.try_into()?;
        Ok(IrqMaps {
            hardirq: runtime.take_map("IRQ_TIME")?.try_into()?,
            softirq_reader: BatchReader::new(softirq.map())?,
            softirq,
        })
    })
}

impl MapReader for IrqMaps {
    fn read(&self, runtime: &EbpfRuntime, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let online = online_cpus()?;
        let attached = |hook: &Hook| runtime.attached(hook).is_some();

        // A total is only meaningful with both its entry and exit hooks attached.
        if attached(&IRQ_HANDLER_ENTRY) && attached(&IRQ_HANDLER_EXIT) {
            let mut hardirq = MetricFamily::counter(
                "ebpf_hardirq_seconds_total",
                "CPU time spent in hard IRQ handlers (irq_handler_entry to exit; local timer and IPI vectors are not included).",
            );
            let per_cpu = self.hardirq.get(&0, 0).context("reading IRQ_TIME")?;
            for &cpu in &online {
                if let Some(t) = per_cpu.get(cpu as usize) {
                    hardirq.push([("cpu", cpu.to_string())], t.hardirq_ns as f64 / 1e9);
                }
            }
            out.push(hardirq);
        }
        if attached(&SOFTIRQ_ENTRY) && attached(&SOFTIRQ_EXIT) {
            let mut softirq = MetricFamily::counter(
                "ebpf_softirq_seconds_total",
                "CPU time spent running softirq handlers, by vector.",
            );
            let vectors = self
                .softirq_reader
                .read(self.softirq.map())
                .context("reading SOFTIRQ_TIME")?;
            for (vector, per_cpu) in vectors.iter() {
                let Some(name) = SOFTIRQ_NAMES.get(vector as usize) else {
                    continue;
                };
                for &cpu in &online {
                    if let Some(ns) = per_cpu.get(cpu as usize) {
                        softirq.push(
                            [("cpu", cpu.to_string()), ("vector", (*name).to_owned())],
                            *ns as f64 / 1e9,
                        );
                    }
                }
            }
            out.push(softirq);
        }
        Ok(())
    }
}
