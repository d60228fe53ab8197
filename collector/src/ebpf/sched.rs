//! `ebpf.sched`: run-queue latency, context switches, wake-ups and migrations from the scheduler
//! tracepoints.
use std::{collections::HashMap, sync::Arc};

use anyhow::Context as _;
use aya::maps::{Array, IterableMap as _, MapData, PerCpuArray};
use collector_common::{
    CpuSchedCounters, KernelLayout, Log2Histogram, layout::UNKNOWN_OFFSET, sched::RUNQUEUE_WAYS,
};

use super::reader::{EbpfCollector, MapReader};
use crate::{
    collector::{BuildContext, Collector, CollectorSpec, KernelPart},
    ebpf::runtime::{
        ConfigureContext, EbpfRuntime, Hook, HookType, ObjectSettings,
        batch::BatchReader,
        histogram::{self, BucketRange},
        online_cpus, tracepoint_fields,
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
        _ => task_pid_requires(layout),
    },
    configure: size_waiting_tasks,
);

/// Wake-ups and forks: run-queue waits are timed from here (and from preemptions).
pub static SCHED_WAKEUP: Hook = hook!("sched" / "sched_wakeup",
    requires: |layout, hook_type| match hook_type {
        HookType::Tracepoint => tracepoint_fields(&[layout.tp_sched_wakeup_pid]),
        _ => task_pid_requires(layout),
    },
);

pub static SCHED_WAKEUP_NEW: Hook = hook!("sched" / "sched_wakeup_new",
    requires: |layout, hook_type| match hook_type {
        HookType::Tracepoint => tracepoint_fields(&[layout.tp_sched_wakeup_new_pid]),
        _ => task_pid_requires(layout),
    },
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

/// Run-queue waits, wake-up (or preemption) → switch-in: 127 ns (sub-microsecond waits are real,
/// but the two tracepoints and the scheduler between them take longer on any CPU) to 34.36 s, as
/// the block times: a wait of tens of seconds means a starved CPU, and `+Inf` still counts it.
const RUNQUEUE_LATENCY_BUCKETS: BucketRange = BucketRange::slots(6, 34);

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

/// What the BTF and raw run-queue hooks need from the kernel's layout: the pid, which keys the
/// table of waiting tasks. (The BTF `sched_switch` also times runs for the cgroups on the run
/// queue's task clock when the kernel has the path to it, else on the wait clock.)
fn task_pid_requires(layout: &KernelLayout) -> Option<&'static str> {
    (layout.task_pid == UNKNOWN_OFFSET).then_some("task_struct.pid offset unknown (no kernel BTF)")
}

/// The table of tasks waiting on a run queue (pid → when it became runnable) that every hook
/// type keeps: `--ebpf.runqueue-max-tasks` slots, rounded up to a power of two, in sets of
/// `RUNQUEUE_WAYS`.
fn size_waiting_tasks(
    context: &ConfigureContext<'_>,
    settings: &mut ObjectSettings,
) -> anyhow::Result<()> {
    let sets = waiting_sets(context.options.runqueue_max_tasks);
    settings.global("RUNQUEUE_SET_BITS", sets.ilog2());
    settings.map_size("RUNQUEUE_WAITING", sets);
    Ok(())
}

/// Sets of the waiting-task table for `slots` slots: a power of two, at most 2^20 sets (every
/// pid Linux can hand out).
fn waiting_sets(slots: u32) -> u32 {
    slots
        .div_ceil(RUNQUEUE_WAYS as u32)
        .next_power_of_two()
        .min(1 << 20)
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
    fn read(&self, runtime: &EbpfRuntime, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
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
            histogram::to_prometheus(
                &latency,
                1e-9,
                runtime.histogram_range(RUNQUEUE_LATENCY_BUCKETS),
            ),
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
                "Run-queue waits not timed because the table of waiting tasks had no free slot for the task (raise --ebpf.runqueue-max-tasks).",
            )
            .with(std::iter::empty::<(&str, &str)>(), dropped as f64),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_the_bucket_range_docs_series_cost_states() {
        let latency = Log2Histogram::EMPTY;
        let buckets = histogram::to_prometheus(&latency, 1e-9, RUNQUEUE_LATENCY_BUCKETS).buckets;
        assert_eq!(buckets.len(), 29);
        assert_eq!(buckets.first().map(|(le, _)| *le), Some(1.27e-7));
        assert_eq!(buckets.last().map(|(le, _)| *le), Some(34.359738367));
    }

    #[test]
    fn the_waiting_task_table_is_sized_in_whole_sets() {
        let ways = RUNQUEUE_WAYS as u32;
        assert_eq!(waiting_sets(16384), 16384 / ways);
        assert_eq!(waiting_sets(64), 64 / ways);
        // Rounded up to a power of two of sets, never below one.
        assert_eq!(waiting_sets(1000), 256);
        assert_eq!(waiting_sets(1), 1);
        assert_eq!(waiting_sets(u32::MAX), 1 << 20);
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
        // The pid is all they need: without the path to the run queue's task clock, the BTF
        // sched_switch times runs on its wait clock.
        let mut known = KernelLayout::UNKNOWN;
        known.task_pid = 1000;
        for hook in [&SCHED_SWITCH, &SCHED_WAKEUP, &SCHED_WAKEUP_NEW] {
            for hook_type in [HookType::BtfTracepoint, HookType::RawTracepoint] {
                assert_eq!((hook.requires)(&known, hook_type), None, "{hook:?}");
            }
        }
    }
}
