//! Status of a collector's kernel programs: which are attached, with which hook type, and what
//! they cost (the kernel's BPF run-time statistics).
use super::{EbpfRuntime, Hook};
use crate::metrics::MetricFamily;

/// Pushes `ebpf_program_attached` for every hook, and run time / run count where statistics are
/// on. `runtime` is `None` when nothing could be loaded.
pub fn push_status(runtime: Option<&EbpfRuntime>, hooks: &[&Hook], out: &mut Vec<MetricFamily>) {
    let mut attached = MetricFamily::gauge(
        "ebpf_program_attached",
        "Whether the eBPF program for a kernel hook is attached (1) or not (0, hook_type=\"none\"), by hook type.",
    );
    for hook in hooks {
        let hook_type = runtime.and_then(|r| r.attached(hook));
        let label = hook_type.map_or("none", |t| t.as_str());
        let value = if hook_type.is_some() { 1.0 } else { 0.0 };
        attached.push([("program", hook.name), ("hook_type", label)], value);
    }
    out.push(attached);

    let Some(runtime) = runtime else {
        return;
    };
    let attached: Vec<(&str, String)> = hooks
        .iter()
        .filter_map(|hook| {
            let hook_type = runtime.attached(hook)?;
            Some((hook.name, runtime.program_name(hook, hook_type)))
        })
        .collect();
    push_run_statistics(
        runtime,
        attached.iter().map(|(label, name)| (*label, name.as_str())),
        out,
    );
}

/// Pushes run time and run count, where statistics are on, of `programs`: (`program` label,
/// program name in the object).
pub fn push_run_statistics<'a>(
    runtime: &EbpfRuntime,
    programs: impl IntoIterator<Item = (&'a str, &'a str)>,
    out: &mut Vec<MetricFamily>,
) {
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
    for (label, name) in programs {
        if let Some(stats) = runtime.program_stats(name) {
            run_time.push([("program", label)], stats.run_time.as_secs_f64());
            runs.push([("program", label)], stats.run_count as f64);
        }
    }
    out.push(run_time);
    out.push(runs);
}

/// Fails the collector when none of its hooks is attached, so `node_scrape_collector_success`
/// tells a node without eBPF from a working one.
pub fn require_any_attached<'a>(
    runtime: Option<&'a EbpfRuntime>,
    hooks: &[Hook],
) -> anyhow::Result<&'a EbpfRuntime> {
    let runtime = runtime
        .ok_or_else(|| anyhow::anyhow!("eBPF programs not loaded (see the start-up log)"))?;
    if hooks.iter().all(|hook| runtime.attached(hook).is_none()) {
        anyhow::bail!("none of its kernel hooks is attached (see ebpf_program_attached)");
    }
    Ok(runtime)
}
