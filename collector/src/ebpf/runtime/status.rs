//! Status of a collector's kernel programs: which are attached, with which hook type, and what
//! they cost (the kernel's BPF run-time statistics).
use super::{EbpfRuntime, Hook};
use crate::metrics::MetricFamily;

/// One program's line in `ebpf_program_attached`.
pub struct ProgramStatus {
    /// The `program` label: the hook's name (`sched_switch`) or the program's
    /// (`cgroup_skb_ingress`).
    pub label: &'static str,
    /// How it is attached (`tp_btf`, `cgroup_skb`...), `None` when it is not.
    pub attached_as: Option<&'static str>,
    /// Its name in the object, for its run-time statistics.
    pub program: &'static str,
}

impl ProgramStatus {
    /// The status of `hook`'s program.
    pub fn of_hook(runtime: Option<&EbpfRuntime>, hook: &'static Hook) -> Self {
        let hook_type = runtime.and_then(|r| r.attached(hook));
        Self {
            label: hook.name,
            attached_as: hook_type.map(|t| t.as_str()),
            program: match (runtime, hook_type) {
                (Some(runtime), Some(hook_type)) => runtime.program_name(hook, hook_type),
                _ => hook.name,
            },
        }
    }
}

/// Pushes `ebpf_program_attached` for every program, and run time / run count of the attached
/// ones where statistics are on. `runtime` is `None` when nothing could be loaded.
pub fn push(
    runtime: Option<&EbpfRuntime>,
    programs: &[ProgramStatus],
    out: &mut Vec<MetricFamily>,
) {
    let mut attached = MetricFamily::gauge(
        "ebpf_program_attached",
        "Whether the eBPF program for a kernel hook is attached (1) or not (0, hook_type=\"none\"), by hook type.",
    );
    for status in programs {
        let value = if status.attached_as.is_some() {
            1.0
        } else {
            0.0
        };
        let hook_type = status.attached_as.unwrap_or("none");
        attached.push([("program", status.label), ("hook_type", hook_type)], value);
    }
    out.push(attached);
    let Some(runtime) = runtime else {
        return;
    };

    let mut misses = MetricFamily::counter(
        "ebpf_program_recursion_misses_total",
        "Times the kernel skipped the eBPF program because another BPF program was running on that CPU (events it did not count; kernel 5.12+).",
    );
    for status in programs.iter().filter(|s| s.attached_as.is_some()) {
        if let Some(count) = runtime.recursion_misses(status.program) {
            misses.push([("program", status.label)], count as f64);
        }
    }
    if !misses.metrics.is_empty() {
        out.push(misses);
    }

    if !runtime.stats_enabled() {
        return;
    }
    let mut run_time = MetricFamily::counter(
        "ebpf_program_run_seconds_total",
        "CPU time spent running the eBPF program, from the kernel's BPF statistics (--ebpf.enable-stats).",
    );
    let mut runs = MetricFamily::counter(
        "ebpf_program_runs_total",
        "Times the eBPF program ran, from the kernel's BPF statistics (--ebpf.enable-stats).",
    );
    for status in programs.iter().filter(|s| s.attached_as.is_some()) {
        if let Some(stats) = runtime.program_stats(status.program) {
            run_time.push([("program", status.label)], stats.run_time.as_secs_f64());
            runs.push([("program", status.label)], stats.run_count as f64);
        }
    }
    out.push(run_time);
    out.push(runs);
}
