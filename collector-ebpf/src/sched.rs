//! Scheduler: context switches, wake-ups, migrations and run-queue latency.
//!
//! Run-queue latency is the time from a task becoming runnable (woken, newly forked, or preempted
//! while still runnable) to it being switched in, both ends stamped with `bpf_ktime_get_ns` as
//! bcc's `runqlat` does, whatever the hook type. The scheduler's own stamps
//! (`sched_info.last_queued` against `rq->clock`) cannot serve: when a wake-up preempts the
//! running task, the scheduler skips its clock update in `__schedule` (`rq_clock_skip_update`,
//! `RQCF_ACT_SKIP`), so `rq->clock` still holds the time the woken task was queued. The woken
//! task's wait reads 0 however long the preemption took (an IPI, a return to user space), and the
//! preempted task is queued at that stale time, its next wait longer by as much.
//!
//! Enqueue times are kept per pid in an array shared by all CPUs (wake-up and switch-in usually
//! happen on different CPUs), used as a hash table of `RUNQUEUE_WAYS`-slot sets: an array lookup
//! is a bounds check the verifier inlines, where a hash map's is a call costing more than the
//! rest of the program on a VM. Counters are per-CPU.
use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, map, raw_tracepoint, tracepoint},
    maps::{Array, PerCpuArray},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};
use collector_common::{
    CpuSchedCounters, Log2Histogram, WaitingTasks,
    layout::{TP_TASK_REPORT_MASK, UNKNOWN_OFFSET},
    sched::{MAX_WAIT_NS, RUNQUEUE_WAYS, waiting_entry, waiting_for, waiting_pid},
};

use crate::{
    block::first_slot,
    cgroup,
    layout::{KernelMemory, layout, read_kernel_field, read_tracepoint_field, read_trusted_field},
    with_slot,
};

/// log2 of the number of sets in `RUNQUEUE_WAITING`, written by the daemon with the array's
/// size (read-only, so the verifier sees a constant).
#[unsafe(no_mangle)]
static RUNQUEUE_SET_BITS: u32 = 0;

/// Tasks waiting on a run queue: pid and the time it became runnable (`bpf_ktime_get_ns`), one
/// set of slots per entry. Sized by the daemon (`--ebpf.runqueue-max-tasks`).
#[map]
static RUNQUEUE_WAITING: Array<WaitingTasks> = Array::with_max_entries(1, 0);

/// Run-queue latency histogram in nanoseconds, one copy per CPU (index 0).
#[map]
static RUNQUEUE_LATENCY: PerCpuArray<Log2Histogram> = PerCpuArray::with_max_entries(1, 0);

/// Scheduler event counts, one copy per CPU (index 0).
#[map]
static SCHED_COUNTERS: PerCpuArray<CpuSchedCounters> = PerCpuArray::with_max_entries(1, 0);

/// Task migrations by destination CPU; the daemon sizes it to the number of possible CPUs.
#[map]
static MIGRATIONS_TO_CPU: Array<u64> = Array::with_max_entries(1, 0);

/// `TASK_RUNNING`: a task switched out in this state stays on the run queue.
const TASK_RUNNING: u64 = 0;
/// `TASK_DEAD`: the task is switched out for the last time.
const TASK_DEAD: u64 = 0x80;
/// In classic tracepoints, a task switched out for the last time reports `EXIT_ZOMBIE` or
/// `EXIT_DEAD`.
const TP_EXITED: u64 = 0x20 | 0x10;

/// Updates this CPU's counters.
#[inline(always)]
fn with_counters(update: impl FnOnce(&mut CpuSchedCounters)) {
    with_slot(&SCHED_COUNTERS, update);
}

#[inline(always)]
fn record_latency(ns: u64) {
    with_slot(&RUNQUEUE_LATENCY, |histogram| histogram.record(ns));
}

#[inline(always)]
fn count_wakeup(counters: &mut CpuSchedCounters, new_task: bool) {
    if new_task {
        counters.wakeups_new += 1;
    } else {
        counters.wakeups += 1;
    }
}

#[inline(always)]
fn count_switch(counters: &mut CpuSchedCounters, still_runnable: bool) {
    if still_runnable {
        counters.involuntary_switches += 1;
    } else {
        counters.voluntary_switches += 1;
    }
}

/// The current time, on the clock both ends of a wait are stamped with.
#[inline(always)]
fn now() -> u64 {
    // SAFETY: a BPF helper that takes no arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// The set of `RUNQUEUE_WAITING` that `pid` hashes to. Other CPUs read and write it at the same
/// time: its slots are only read and written whole, with volatile accesses.
#[inline(always)]
fn waiting_set(pid: u32) -> Option<*mut u64> {
    let set = RUNQUEUE_WAITING.get_ptr_mut(first_slot(u64::from(pid), &RUNQUEUE_SET_BITS, 1))?;
    // SAFETY: a value pointer from a successful lookup: array values live as long as the map.
    Some(unsafe { (&raw mut (*set).slots).cast::<u64>() })
}

/// Records that `pid` became runnable at `now`: in its own slot of its set if it has one (woken
/// again before it ran), else in a free one, else in place of the task waiting longest, whose
/// wait then goes untimed (counted).
#[inline(always)]
fn mark_enqueued(counters: &mut CpuSchedCounters, pid: u32, now: u64) {
    if pid == 0 {
        return; // the idle task is never queued
    }
    let Some(set) = waiting_set(pid) else {
        return;
    };
    let mut own = RUNQUEUE_WAYS;
    let mut free = RUNQUEUE_WAYS;
    let (mut oldest, mut oldest_for) = (0, 0);
    for way in 0..RUNQUEUE_WAYS {
        // SAFETY: `way` is within the set, which `waiting_set` found in the map.
        let entry = unsafe { core::ptr::read_volatile(set.add(way)) };
        if entry == 0 {
            if free == RUNQUEUE_WAYS {
                free = way;
            }
        } else if waiting_pid(entry) == pid {
            own = way;
        } else if waiting_for(entry, now) >= oldest_for {
            (oldest, oldest_for) = (way, waiting_for(entry, now));
        }
    }
    let way = if own < RUNQUEUE_WAYS {
        own
    } else if free < RUNQUEUE_WAYS {
        free
    } else {
        counters.runqueue_map_full += 1;
        oldest
    };
    for candidate in 0..RUNQUEUE_WAYS {
        if candidate == way {
            // SAFETY: `candidate` is within the set, which `waiting_set` found in the map.
            unsafe { core::ptr::write_volatile(set.add(candidate), waiting_entry(pid, now)) };
        }
    }
}

/// How long `pid` waited on the run queue, if its enqueue was seen; frees its slot.
#[inline(always)]
fn take_wait(pid: u32, now: u64) -> Option<u64> {
    if pid == 0 {
        return None;
    }
    let set = waiting_set(pid)?;
    for way in 0..RUNQUEUE_WAYS {
        // SAFETY: `way` is within the set, which `waiting_set` found in the map.
        let slot = unsafe { set.add(way) };
        // SAFETY: as above.
        let entry = unsafe { core::ptr::read_volatile(slot) };
        if entry != 0 && waiting_pid(entry) == pid {
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile(slot, 0) };
            let waited = waiting_for(entry, now);
            return (waited < MAX_WAIT_NS).then_some(waited);
        }
    }
    None
}

/// Whether a switch has a wait to start or end: a task switched out still runnable, or a task
/// switched in. A task blocking in favour of the idle loop has neither.
#[inline(always)]
fn switch_needs_clock(prev_pid: u32, next_pid: u32, still_runnable: bool) -> bool {
    next_pid != 0 || (still_runnable && prev_pid != 0)
}

/// The waits of one switch at `now`, whatever the flavour: `prev`, still runnable, starts
/// waiting; `next` stops. Returns `next`'s wait, if its enqueue was seen.
#[inline(always)]
fn time_switch(
    counters: &mut CpuSchedCounters,
    prev_pid: u32,
    next_pid: u32,
    still_runnable: bool,
    now: u64,
) -> Option<u64> {
    if still_runnable {
        mark_enqueued(counters, prev_pid, now);
    }
    let next_wait = take_wait(next_pid, now);
    if let Some(wait) = next_wait {
        record_latency(wait);
    }
    next_wait
}

#[inline(always)]
fn on_wakeup(pid: u32, new_task: bool) {
    with_counters(
        #[inline(always)]
        |counters| {
            count_wakeup(counters, new_task);
            mark_enqueued(counters, pid, now());
        },
    );
}

/// The raw and classic `sched_switch`. `still_runnable`: the previous task was preempted (or
/// switched out while runnable) and so goes straight back onto the run queue; `prev_exits`: it
/// is switched out for the last time.
#[inline(always)]
fn on_switch(prev_pid: u32, next_pid: u32, still_runnable: bool, prev_exits: bool) {
    // Two programs share this body: without the attribute LLVM makes it a BPF-to-BPF call.
    with_counters(
        #[inline(always)]
        |counters| {
            count_switch(counters, still_runnable);
            let accounting = cgroup::accounting_on();
            if !accounting && !switch_needs_clock(prev_pid, next_pid, still_runnable) {
                return;
            }
            // One clock read serves the enqueue of `prev`, the wait of `next` and the run that
            // just ended.
            let now = now();
            let next_wait = time_switch(counters, prev_pid, next_pid, still_runnable, now);
            if accounting {
                switch_running_task(
                    prev_pid,
                    next_pid,
                    next_wait,
                    now,
                    // `prev` is still `current`; the idle task is charged nothing.
                    if prev_pid != 0 {
                        cgroup::current_cgroup_id()
                    } else {
                        0
                    },
                    prev_exits,
                );
            }
        },
    );
}

/// Charges the run that ends at `now` to `prev`'s cgroup, with the wait that preceded it, and
/// starts timing `next`'s run.
#[inline(always)]
fn switch_running_task(
    prev_pid: u32,
    next_pid: u32,
    next_wait: Option<u64>,
    now: u64,
    prev_cgroup: u64,
    prev_exits: bool,
) {
    cgroup::charge_switch(
        prev_cgroup,
        prev_pid != 0,
        prev_exits,
        next_pid != 0,
        next_wait.unwrap_or(0),
        u64::from(next_wait.is_some()),
        now,
    );
}

#[inline(always)]
fn on_migrate(dest_cpu: u32) {
    if let Some(count) = MIGRATIONS_TO_CPU.get_ptr_mut(dest_cpu) {
        // Shared across CPUs, so an atomic add; migrations are rare next to switches.
        crate::atomic::add(count, 1);
    }
}

/// Pid of an untrusted `struct task_struct *` (raw tracepoint argument).
#[inline(always)]
fn task_pid(task: u64) -> Option<u32> {
    let offset = layout!(task_pid);
    if offset == UNKNOWN_OFFSET {
        return None;
    }
    read_kernel_field::<i32>(task, offset).map(|pid| pid as u32)
}

// ---- BTF and raw tracepoints: both receive the raw tracepoint arguments. ----
//
// sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next,
//              unsigned int prev_state /* since 5.18 */)
// sched_wakeup(struct task_struct *p), sched_wakeup_new(struct task_struct *p)
// sched_migrate_task(struct task_struct *p, int dest_cpu)

/// `prev_state` from the 4th argument since 5.18, else from the task (`read_state`), else
/// assumed running.
#[inline(always)]
fn switched_out_state(
    prev_state_arg: impl FnOnce() -> u64,
    read_state: impl FnOnce(u32) -> u64,
) -> u64 {
    if layout!(sched_switch_has_prev_state) != 0 {
        prev_state_arg() & 0xffff_ffff
    } else if layout!(task_state) != UNKNOWN_OFFSET {
        // The low 32 bits of `state` (a long before 5.14) hold it on LE targets.
        read_state(layout!(task_state))
    } else {
        TASK_RUNNING
    }
}

/// Reads the tasks through the typed pointers the verifier tracks, and times runs for the
/// cgroups on the run queue's task clock (`rq.clock_task`, as the scheduler's `sum_exec_runtime`:
/// without IRQ and steal time where the kernel accounts them), read through `prev`'s scheduling
/// entity: `prev` is on this CPU's run queue, locked until the scheduler's own use of the clock.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch_btf(ctx: BtfTracePointContext) -> i32 {
    // Inline, or LLVM may make the body a BPF-to-BPF call with its captures on the stack.
    with_counters(
        #[inline(always)]
        |counters| {
            let prev: u64 = ctx.arg(1);
            let next: u64 = ctx.arg(2);
            let prev_state = switched_out_state(
                || ctx.arg(3),
                // SAFETY: BTF arguments, and pointers loaded from them, at KERNEL_LAYOUT offsets.
                |offset| unsafe { read_trusted_field::<u32>(prev, offset) } as u64,
            );
            let still_runnable = (ctx.arg::<u64>(0) & 0xff) != 0 || prev_state == TASK_RUNNING;
            count_switch(counters, still_runnable);
            // SAFETY: BTF arguments, and pointers loaded from them, at KERNEL_LAYOUT offsets.
            let (prev_pid, next_pid) = unsafe {
                (
                    read_trusted_field::<i32>(prev, layout!(task_pid)) as u32,
                    read_trusted_field::<i32>(next, layout!(task_pid)) as u32,
                )
            };
            let next_wait = if switch_needs_clock(prev_pid, next_pid, still_runnable) {
                time_switch(counters, prev_pid, next_pid, still_runnable, now())
            } else {
                None
            };
            if cgroup::accounting_on() {
                let run_clock = if layout!(rq_clock_task) != UNKNOWN_OFFSET {
                    // SAFETY: BTF arguments, and pointers loaded from them, at KERNEL_LAYOUT
                    // offsets.
                    unsafe {
                        let cfs_rq = read_trusted_field::<u64>(prev, layout!(task_se_cfs_rq));
                        let rq = read_trusted_field::<u64>(cfs_rq, layout!(cfs_rq_rq));
                        read_trusted_field::<u64>(rq, layout!(rq_clock_task))
                    }
                } else {
                    now()
                };
                switch_running_task(
                    prev_pid,
                    next_pid,
                    next_wait,
                    run_clock,
                    if prev_pid != 0 {
                        // SAFETY: `prev` is a BTF tracepoint argument.
                        unsafe { cgroup::task_cgroup_id(prev) }
                    } else {
                        0
                    },
                    prev_state & TASK_DEAD != 0,
                );
            }
        },
    );
    0
}

#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn sched_switch_raw(ctx: RawTracePointContext) -> i32 {
    let prev: u64 = ctx.arg(1);
    let prev_state = switched_out_state(
        || ctx.arg(3),
        |offset| read_kernel_field::<u32>(prev, offset).unwrap_or(0) as u64,
    );
    let still_runnable = (ctx.arg::<u64>(0) & 0xff) != 0 || prev_state == TASK_RUNNING;
    if let (Some(prev_pid), Some(next_pid)) = (task_pid(prev), task_pid(ctx.arg(2))) {
        on_switch(
            prev_pid,
            next_pid,
            still_runnable,
            prev_state & TASK_DEAD != 0,
        );
    }
    0
}

btf_and_raw!(
    "sched_wakeup",
    sched_wakeup_btf,
    sched_wakeup_raw,
    |ctx, Memory| {
        if let Some(pid) = Memory::read::<i32>(ctx.arg(0), layout!(task_pid)) {
            on_wakeup(pid as u32, false);
        }
    }
);

btf_and_raw!(
    "sched_wakeup_new",
    sched_wakeup_new_btf,
    sched_wakeup_new_raw,
    |ctx, Memory| {
        if let Some(pid) = Memory::read::<i32>(ctx.arg(0), layout!(task_pid)) {
            on_wakeup(pid as u32, true);
        }
    }
);

btf_and_raw!(
    "sched_migrate_task",
    sched_migrate_task_btf,
    sched_migrate_task_raw,
    |ctx| { on_migrate(ctx.arg::<u64>(1) as u32) }
);

// ---- Classic tracepoints: fields at the offsets of their tracefs format files. ----

#[tracepoint(category = "sched", name = "sched_switch")]
pub fn sched_switch_tp(ctx: TracePointContext) -> u32 {
    let prev_pid = read_tracepoint_field::<i32>(&ctx, layout!(tp_sched_switch_prev_pid));
    let next_pid = read_tracepoint_field::<i32>(&ctx, layout!(tp_sched_switch_next_pid));
    let prev_state = read_tracepoint_field::<i64>(&ctx, layout!(tp_sched_switch_prev_state));
    if let (Some(prev_pid), Some(next_pid), Some(prev_state)) = (prev_pid, next_pid, prev_state) {
        let reported = prev_state as u64 & TP_TASK_REPORT_MASK;
        on_switch(
            prev_pid as u32,
            next_pid as u32,
            reported == TASK_RUNNING,
            reported & TP_EXITED != 0,
        );
    }
    0
}

#[tracepoint(category = "sched", name = "sched_wakeup")]
pub fn sched_wakeup_tp(ctx: TracePointContext) -> u32 {
    if let Some(pid) = read_tracepoint_field::<i32>(&ctx, layout!(tp_sched_wakeup_pid)) {
        on_wakeup(pid as u32, false);
    }
    0
}

#[tracepoint(category = "sched", name = "sched_wakeup_new")]
pub fn sched_wakeup_new_tp(ctx: TracePointContext) -> u32 {
    let offset = layout!(tp_sched_wakeup_new_pid);
    if let Some(pid) = read_tracepoint_field::<i32>(&ctx, offset) {
        on_wakeup(pid as u32, true);
    }
    0
}

#[tracepoint(category = "sched", name = "sched_migrate_task")]
pub fn sched_migrate_task_tp(ctx: TracePointContext) -> u32 {
    let offset = layout!(tp_sched_migrate_task_dest_cpu);
    if let Some(dest_cpu) = read_tracepoint_field::<i32>(&ctx, offset) {
        on_migrate(dest_cpu as u32);
    }
    0
}
