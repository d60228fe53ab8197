//! `ebpf.irq`: CPU time spent in hard IRQ handlers and in each softirq vector, per CPU.
use std::sync::Arc;

use anyhow::Context as _;
use aya::maps::{IterableMap as _, MapData, PerCpuArray};
use collector_common::{CpuIrqTime, SOFTIRQ_NAMES};

use super::{EbpfRuntime, Hook, batch::BatchReader, programs};
use crate::{
    collectors::{BuildContext, CollectorSpec},
    metrics::MetricFamily,
    scrape::Collector,
};

pub static HOOKS: [Hook; 4] = [
    Hook {
        category: "irq",
        name: "irq_handler_entry",
    },
    Hook {
        category: "irq",
        name: "irq_handler_exit",
    },
    Hook {
        category: "irq",
        name: "softirq_entry",
    },
    Hook {
        category: "irq",
        name: "softirq_exit",
    },
];

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "ebpf.irq",
    default_enabled: true,
    flags: &[],
    hooks: &HOOKS,
    build,
};

struct Maps {
    hardirq: PerCpuArray<MapData, CpuIrqTime>,
    softirq: PerCpuArray<MapData, u64>,
    softirq_reader: BatchReader<u32, u64>,
}

pub struct IrqCollector {
    runtime: Option<Arc<EbpfRuntime>>,
    maps: Option<Maps>,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    let maps = match &context.ebpf {
        Some(runtime) => {
            let softirq: PerCpuArray<MapData, u64> =
                runtime.take_map("SOFTIRQ_TIME")?.try_into()?;
            Some(Maps {
                hardirq: runtime.take_map("IRQ_TIME")?.try_into()?,
                softirq_reader: BatchReader::new(softirq.map())?,
                softirq,
            })
        }
        None => None,
    };
    Ok(Arc::new(IrqCollector {
        runtime: context.ebpf.clone(),
        maps,
    }))
}

impl Collector for IrqCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        programs::push_status(self.runtime.as_deref(), &HOOKS.each_ref(), out);
        let runtime = programs::require_any_attached(self.runtime.as_deref(), &HOOKS)?;
        let maps = self.maps.as_ref().context("IRQ maps unavailable")?;
        let online = super::online_cpus()?;
        let attached = |name: &str| {
            HOOKS
                .iter()
                .any(|h| h.name == name && runtime.attached(h).is_some())
        };

        // A total is only meaningful with both its entry and exit hooks attached.
        if attached("irq_handler_entry") && attached("irq_handler_exit") {
            let mut hardirq = MetricFamily::counter(
                "ebpf_hardirq_seconds_total",
                "CPU time spent in hard IRQ handlers (irq_handler_entry to exit; local timer and IPI vectors are not included).",
            );
            let per_cpu = maps.hardirq.get(&0, 0).context("reading IRQ_TIME")?;
            for &cpu in &online {
                if let Some(t) = per_cpu.get(cpu as usize) {
                    hardirq.push([("cpu", cpu.to_string())], t.hardirq_ns as f64 / 1e9);
                }
            }
            out.push(hardirq);
        }
        if attached("softirq_entry") && attached("softirq_exit") {
            let mut softirq = MetricFamily::counter(
                "ebpf_softirq_seconds_total",
                "CPU time spent running softirq handlers, by vector.",
            );
            let vectors = maps
                .softirq_reader
                .read(maps.softirq.map())
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
