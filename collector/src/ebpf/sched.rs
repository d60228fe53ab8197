//! `ebpf.sched`: run-queue latency, context switches, wake-ups and migrations from the scheduler
//! tracepoints.
use std::{collections::HashMap, sync::Arc};

use anyhow::Context as _;
use aya::maps::{Array, IterableMap as _, MapData, PerCpuArray};
use collector_common::{CpuSchedCounters, KernelLayout, Log2Histogram, layout::UNKNOWN_OFFSET};

use super::reader::{EbpfCollector, MapReader};
use crate::{
    collector::{BuildContext, Collector, CollectorSpec, KernelPart},
    ebpf::runtime::{
        ConfigureContext, EbpfRuntime, Hook, HookType, ObjectSettings, Pairing, batch::BatchReader,
        histogram, lru_entries, online_cpus, tracepoint_fields,
    },
    hook,
    metrics::MetricFamily,
};

pub static SCHED_SWITCH: Hook = hook!("sched" / "sched_switch",
    requires: |layout, hook_type| match hook_type {
        HookType::Tracepoint => tracepoint_fields(&[
            layout.tp_sched_switch_prev_pid,
            layout.tp_sched_switch_prev_state,
            layout.tp_sched_switch_next_pid,
        ]),
        _ => run_queue_requires(layout, hook_type),
    },
    configure: size_waiting_tasks,
);

/// Wake-ups and forks: the raw and classic flavours time run-queue waits from here.
pub static SCHED_WAKEUP: Hook = hook!("sched" / "sched_wakeup",
    requires: |layout, hook_type| match hook_type {
        HookType::Tracepoint => tracepoint_fields(&[layout.tp_sched_wakeup_pid]),
        _ => run_queue_requires(layout, hook_type),
    },
    pairing: WAKEUP_PAIRING,
);

pub static SCHED_WAKEUP_NEW: Hook = hook!("sched" / "sched_wakeup_new",
    requires: |layout, hook_type| match hook_type {
        HookType::Tracepoint => tracepoint_fields(&[layout.tp_sched_wakeup_new_pid]),
        _ => run_queue_requires(layout, hook_type),
    },
    pairing: WAKEUP_PAIRING,
);

pub static SCHED_MIGRATE_TASK: Hook = hook!("sched" / "sched_migrate_task",
    requires: |layout, hook_type| match hook_type {
        HookType::Tracepoint => tracepoint_fields(&[layout.tp_sched_migrate_task_dest_cpu]),
        _ => None,
    },
    configure: |context, settings| {
        settings.map_size("MIGRATIONS_TO_CPU", context.possible_cpus);
        Ok(())
    },
);

pub static HOOKS: [&Hook; 4] = [
    &SCHED_SWITCH,
    &SCHED_WAKEUP,
    &SCHED_WAKEUP_NEW,
    &SCHED_MIGRATE_TASK,
];

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "ebpf.sched",
    default_enabled: true,
    flags: &[],
    kernel: Some(&KernelPart {
        hooks: &HOOKS,
        configure: None,
    }),
    build,
};

/// What the run-queue hooks need from the kernel's layout beyond their tracepoint fields. The
/// three go together: the raw and classic tracepoint flavours time the wait from wake-up to
/// switch-in, the BTF one reads the scheduler's stamps.
fn run_queue_requires(layout: &KernelLayout, hook_type: HookType) -> Option<&'static str> {
    let unknown = |offset: u32| offset == UNKNOWN_OFFSET;
    match hook_type {
        HookType::BtfTracepoint if unknown(layout.task_last_queued) => {
            Some("task_struct.sched_info.last_queued offset unknown (no CONFIG_SCHED_INFO)")
        }
        HookType::BtfTracepoint if unknown(layout.rq_clock) => {
            Some("no path from a task to its run queue's clock (no CONFIG_FAIR_GROUP_SCHED)")
        }
        _ => unknown(layout.task_pid).then_some("task_struct.pid offset unknown (no kernel BTF)"),
    }
}

/// The raw and classic wake-up programs hand enqueue times to the raw and classic
/// `sched_switch`, while the BTF one reads the scheduler's own stamps: a BTF wake-up beside a
/// raw or classic `sched_switch` would leave it no wait to measure.
const WAKEUP_PAIRING: Pairing = Pairing {
    with: &SCHED_SWITCH,
    refuses: |mine, switch| {
        (mine == HookType::BtfTracepoint && switch != HookType::BtfTracepoint)
            .then_some("sched_switch is not attached as tp_btf, and the wake-ups time its waits")
    },
};

/// The map of tasks waiting on a run queue (pid → enqueue time) the raw and classic flavours
/// keep (`--ebpf.runqueue-max-tasks`).
fn size_waiting_tasks(
    context: &ConfigureContext<'_>,
    settings: &mut ObjectSettings,
) -> anyhow::Result<()> {
    settings.map_size(
        "RUNQUEUE_ENQUEUED_AT",
        lru_entries(context.options.runqueue_max_tasks, context.possible_cpus),
    );
    Ok(())
}

struct SchedMaps {
    latency: PerCpuArray<MapData, Log2Histogram>,
    counters: PerCpuArray<MapData, CpuSchedCounters>,
    migrations: Array<MapData, u64>,
    migrations_reader: BatchReader<u32, u64>,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    EbpfCollector::build(context, &HOOKS, HOOKS.to_vec(), |runtime| {
        let migrations: Array<MapData, u64> = runtime.take_map("MIGRATIONS_TO_CPU")?.try_into()?;
        Ok(SchedMaps {
            latency: runtime.take_map("RUNQUEUE_LATENCY")?.try_into()?,
            counters: runtime.take_map("SCHED_COUNTERS")?.try_into()?,
            migrations_reader: BatchReader::new(migrations.map())?,
            migrations,
        })
    })
}

impl MapReader for SchedMaps {
    fn read(&self, _runtime: &EbpfRuntime, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let online = online_cpus()?;

        let per_cpu = self
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

        let counters = self.counters.get(&0, 0).context("reading SCHED_COUNTERS")?;
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
        let migrated_to: HashMap<u32, u64> = self
            .migrations_reader
            .read(self.migrations.map())
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::ebpf::runtime::loader::unpaired;

    #[test]
    fn wake_ups_are_btf_only_beside_a_btf_sched_switch() {
        let wakeups = [&SCHED_WAKEUP, &SCHED_WAKEUP_NEW];
        for switch in [HookType::RawTracepoint, HookType::Tracepoint] {
            let attached = HashMap::from([(SCHED_SWITCH.name, switch)]);
            for hook in wakeups {
                assert!(unpaired(hook, HookType::BtfTracepoint, &attached).is_some());
                assert!(unpaired(hook, HookType::RawTracepoint, &attached).is_none());
                assert!(unpaired(hook, HookType::Tracepoint, &attached).is_none());
            }
        }
        // Beside a BTF sched_switch, or none at all, any flavour goes.
        let btf = HashMap::from([(SCHED_SWITCH.name, HookType::BtfTracepoint)]);
        for attached in [btf, HashMap::new()] {
            for hook in wakeups {
                for hook_type in [HookType::BtfTracepoint, HookType::RawTracepoint] {
                    assert!(unpaired(hook, hook_type, &attached).is_none());
                }
            }
        }
        // Other hooks are not paired with anything.
        let raw = HashMap::from([(SCHED_SWITCH.name, HookType::RawTracepoint)]);
        assert!(unpaired(&SCHED_SWITCH, HookType::BtfTracepoint, &raw).is_none());
    }

    #[test]
    fn missing_offsets_refuse_only_the_hook_types_that_need_them() {
        let layout = KernelLayout::UNKNOWN;
        for hook in HOOKS {
            assert!(
                (hook.requires)(&layout, HookType::Tracepoint).is_some(),
                "{hook:?}"
            );
        }
        for hook in [&SCHED_SWITCH, &SCHED_WAKEUP, &SCHED_WAKEUP_NEW] {
            assert!((hook.requires)(&layout, HookType::BtfTracepoint).is_some());
            assert!((hook.requires)(&layout, HookType::RawTracepoint).is_some());
        }
        assert_eq!(
            (SCHED_MIGRATE_TASK.requires)(&layout, HookType::BtfTracepoint),
            None
        );
        let mut known = KernelLayout::UNKNOWN;
        known.task_pid = 1000;
        assert_eq!(
            (SCHED_SWITCH.requires)(&known, HookType::RawTracepoint),
            None
        );
        assert!((SCHED_SWITCH.requires)(&known, HookType::BtfTracepoint).is_some());
    }
}
