//! `ebpf.sched`: run-queue latency, context switches, wake-ups and migrations from the scheduler
//! tracepoints.
use std::{collections::HashMap, sync::Arc};

use anyhow::Context as _;
use aya::maps::{Array, IterableMap as _, MapData, PerCpuArray};
use collector_common::{CpuSchedCounters, Log2Histogram};

use super::{EbpfRuntime, Hook, batch::BatchReader, histogram, programs};
use crate::{
    collectors::{BuildContext, CollectorSpec},
    metrics::MetricFamily,
    scrape::Collector,
};

pub const SCHED_SWITCH: Hook = Hook {
    category: "sched",
    name: "sched_switch",
};

/// Wake-ups and forks: the raw and classic flavours time run-queue waits from here.
pub const SCHED_WAKEUP: Hook = Hook {
    category: "sched",
    name: "sched_wakeup",
};
pub const SCHED_WAKEUP_NEW: Hook = Hook {
    category: "sched",
    name: "sched_wakeup_new",
};

pub static HOOKS: [Hook; 4] = [
    SCHED_SWITCH,
    SCHED_WAKEUP,
    SCHED_WAKEUP_NEW,
    Hook {
        category: "sched",
        name: "sched_migrate_task",
    },
];

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "ebpf.sched",
    default_enabled: true,
    flags: &[],
    hooks: &HOOKS,
    build,
};

struct Maps {
    latency: PerCpuArray<MapData, Log2Histogram>,
    counters: PerCpuArray<MapData, CpuSchedCounters>,
    migrations: Array<MapData, u64>,
    migrations_reader: BatchReader<u32, u64>,
}

pub struct SchedCollector {
    runtime: Option<Arc<EbpfRuntime>>,
    maps: Option<Maps>,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    let maps = match &context.ebpf {
        Some(runtime) => {
            let migrations: Array<MapData, u64> =
                runtime.take_map("MIGRATIONS_TO_CPU")?.try_into()?;
            Some(Maps {
                latency: runtime.take_map("RUNQUEUE_LATENCY")?.try_into()?,
                counters: runtime.take_map("SCHED_COUNTERS")?.try_into()?,
                migrations_reader: BatchReader::new(migrations.map())?,
                migrations,
            })
        }
        None => None,
    };
    Ok(Arc::new(SchedCollector {
        runtime: context.ebpf.clone(),
        maps,
    }))
}

impl Collector for SchedCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        programs::push_status(self.runtime.as_deref(), &HOOKS.each_ref(), out);
        programs::require_any_attached(self.runtime.as_deref(), &HOOKS)?;
        let maps = self.maps.as_ref().context("scheduler maps unavailable")?;
        let online = super::online_cpus()?;

        let per_cpu = maps
            .latency
            .get(&0, 0)
            .context("reading RUNQUEUE_LATENCY")?;
        let latency = histogram::sum_cpus(per_cpu.iter());
        let mut family = MetricFamily::histogram(
            "ebpf_runqueue_latency_seconds",
            "Time tasks waited on a CPU run queue, from becoming runnable (wake-up, new task, or preemption) to running.",
        );
        family.push_histogram(
            std::iter::empty::<(&str, &str)>(),
            histogram::to_prometheus(&latency, 1e-9),
        );
        out.push(family);

        let counters = maps.counters.get(&0, 0).context("reading SCHED_COUNTERS")?;
        let mut switches = MetricFamily::counter(
            "ebpf_context_switches_total",
            "Context switches by CPU: voluntary (the task blocked) or involuntary (it was preempted while runnable).",
        );
        let mut wakeups = MetricFamily::counter(
            "ebpf_sched_wakeups_total",
            "Tasks made runnable, by CPU the wake-up ran on: existing tasks (wakeup) or newly forked ones (new_task).",
        );
        let mut migrations =
            MetricFamily::counter("ebpf_sched_migrations_total", "Tasks migrated to this CPU.");
        let migrated_to: HashMap<u32, u64> = maps
            .migrations_reader
            .read(maps.migrations.map())
            .context("reading MIGRATIONS_TO_CPU")?
            .iter()
            .map(|(cpu, count)| (cpu, count[0]))
            .collect();
        let mut dropped = 0u64;
        for &cpu in &online {
            let Some(c) = counters.get(cpu as usize) else {
                continue;
            };
            let cpu_label = cpu.to_string();
            switches.push(
                [("cpu", cpu_label.as_str()), ("kind", "voluntary")],
                c.voluntary_switches as f64,
            );
            switches.push(
                [("cpu", cpu_label.as_str()), ("kind", "involuntary")],
                c.involuntary_switches as f64,
            );
            wakeups.push(
                [("cpu", cpu_label.as_str()), ("kind", "wakeup")],
                c.wakeups as f64,
            );
            wakeups.push(
                [("cpu", cpu_label.as_str()), ("kind", "new_task")],
                c.wakeups_new as f64,
            );
            let migrated = migrated_to.get(&cpu).copied().unwrap_or(0);
            migrations.push([("cpu", cpu_label)], migrated as f64);
        }
        for c in counters.iter() {
            dropped += c.runqueue_map_full;
        }
        out.push(switches);
        out.push(wakeups);
        out.push(migrations);
        out.push(
            MetricFamily::counter(
                "ebpf_runqueue_latency_dropped_total",
                "Run-queue latency samples lost because the map of waiting tasks was full (raise --ebpf.runqueue-max-tasks).",
            )
            .with(std::iter::empty::<(&str, &str)>(), dropped as f64),
        );
        Ok(())
    }
}
