//! Root: the scheduler programs, attached with each hook type, count a workload the test makes.
mod common;

use common::{Daemon, workload};

const ROUNDS: usize = 20_000;

/// The programs this test expects attached.
const SCHED_PROGRAMS: &[&str] = &[
    "sched_switch",
    "sched_wakeup",
    "sched_wakeup_new",
    "sched_migrate_task",
];

/// Starts a daemon that may only use `hook_type`, runs the workloads, checks the deltas.
fn counts_workload_with(hook_type: &str) {
    let daemon = Daemon::start(&[
        &format!("--ebpf.hook-types={hook_type}"),
        "--no-collector.ebpf.irq",
        // Every slot, down to the 1 ns bucket that would hold waits timed from a stale clock.
        "--ebpf.histogram-buckets=full",
    ]);
    let before = daemon.scrape();
    common::assert_attached(&before, SCHED_PROGRAMS, hook_type);
    assert_eq!(
        before.value(
            "node_scrape_collector_success",
            &[("collector", "ebpf.sched")]
        ),
        1.0
    );

    let ping_pong_waited = workload::pipe_ping_pong(ROUNDS, 0).as_secs_f64();
    const PROCESSES: usize = 50;
    workload::spawn_processes(PROCESSES);
    const FLIPS: usize = 200;
    let flips = (common::online_cpus() >= 2).then(|| workload::flip_between_cpus(FLIPS));

    let after = daemon.scrape();
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);
    let rounds = ROUNDS as f64;

    let switches_cpu0 = delta("ebpf_context_switches_total", &[("cpu", "0")]);
    assert!(
        switches_cpu0 >= 2.0 * rounds,
        "{switches_cpu0} switches on cpu 0 for {ROUNDS} round trips"
    );
    let voluntary = delta("ebpf_context_switches_total", &[("kind", "voluntary")]);
    assert!(voluntary >= rounds - 1.0, "{voluntary} voluntary switches");
    let wakeups = delta("ebpf_sched_wakeups_total", &[("kind", "wakeup")]);
    assert!(wakeups >= rounds - 1.0, "{wakeups} wake-ups");
    let new_tasks = delta("ebpf_sched_wakeups_total", &[("kind", "new_task")]);
    assert!(
        new_tasks >= PROCESSES as f64,
        "{new_tasks} new-task wake-ups for {PROCESSES} processes"
    );
    if flips.is_some() {
        let migrations = delta("ebpf_sched_migrations_total", &[]);
        assert!(
            migrations >= FLIPS as f64 - 1.0,
            "{migrations} migrations for {FLIPS} moves"
        );
    } else {
        eprintln!("migration check skipped: one CPU online");
    }

    let samples = delta("ebpf_runqueue_latency_seconds_count", &[]);
    assert!(
        samples >= rounds - 1.0,
        "{samples} run-queue latency samples"
    );
    // The histogram holds the ping-pong threads' waits and every other task's, timed from the
    // wake-up tracepoint, a little after the enqueue the scheduler counts from. (The scheduler's
    // own count is off the other way too: after a wake-up preemption it skips its clock update,
    // and charges the woken task's wait to the task it preempted.)
    let waited = delta("ebpf_runqueue_latency_seconds_sum", &[]);
    let under_1ns = [("le", "1e-09")];
    assert!(
        after
            .matching("ebpf_runqueue_latency_seconds_bucket", &under_1ns)
            .next()
            .is_some(),
        "no 1 ns bucket with --ebpf.histogram-buckets=full"
    );
    let zero = delta("ebpf_runqueue_latency_seconds_bucket", &under_1ns);
    eprintln!(
        "{hook_type}: {samples} samples ({zero} under 1 ns), {waited:.6} s; the ping-pong's \
         threads waited {ping_pong_waited:.6} s"
    );
    assert!(
        waited >= 0.5 * ping_pong_waited,
        "{waited} s of run-queue wait recorded, the ping-pong's threads alone waited {ping_pong_waited} s"
    );
    // Every hand-over of the ping-pong is a wake-up preemption: timed from a stale run-queue
    // clock, half the waits would read 0.
    assert!(
        zero <= 0.001 * samples,
        "{zero} of {samples} run-queue waits read as under 1 ns"
    );
    assert!(
        waited < 0.1 * samples,
        "{waited} s over {samples} samples: a mean wait of 100 ms or more"
    );
    assert_eq!(after.value("ebpf_runqueue_latency_dropped_total", &[]), 0.0);
    common::exposition::assert_histogram_consistent(&after, "ebpf_runqueue_latency_seconds", &[]);
}

test_each_hook_type!(
    counts_workload_with =>
    tp_btf_hooks_count_the_workload,
    raw_tracepoint_fallback_counts_the_workload,
    classic_tracepoint_fallback_counts_the_workload
);

/// `--ebpf.empty-programs`, the benchmark's floor: programs that do nothing take the place of
/// the collector's on the same hooks, so they run for every event and nothing is counted.
#[test]
fn empty_programs_run_in_place_of_the_collectors() {
    require_root!();
    let daemon = Daemon::start(&[
        "--ebpf.empty-programs",
        "--ebpf.enable-stats",
        "--no-collector.ebpf.irq",
    ]);
    let before = daemon.scrape();
    let hook_type = if std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        "tp_btf"
    } else {
        "raw_tp"
    };
    common::assert_attached(&before, SCHED_PROGRAMS, hook_type);

    workload::pipe_ping_pong(ROUNDS, 0);
    let after = daemon.scrape();
    let runs = |scrape: &common::exposition::Scrape| {
        scrape.value("ebpf_program_runs_total", &[("program", "sched_switch")])
    };
    let switches = runs(&after) - runs(&before);
    assert!(
        switches >= 2.0 * ROUNDS as f64,
        "the empty sched_switch ran {switches} times for {ROUNDS} round trips"
    );
    assert_eq!(after.sum("ebpf_context_switches_total", &[]), 0.0);
    assert_eq!(after.sum("ebpf_runqueue_latency_seconds_count", &[]), 0.0);
}
