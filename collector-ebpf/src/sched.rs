//! Scheduler: context switches, wake-ups, migrations and run-queue latency.
//!
//! Run-queue latency is the time from a task becoming runnable (woken, newly forked, or preempted
//! while still runnable) to it being switched in. The BTF `sched_switch` reads it from the
//! scheduler's own stamps: `next->sched_info.last_queued` (when the task was queued on this CPU)
//! against this run queue's clock, which the scheduler set for this switch. That costs no clock
//! read and no map lookup: each helper call costs more than the rest of the program in a VM. The
//! raw and classic tracepoints cannot follow kernel pointers cheaply, so they time the wait
//! themselves: the enqueue time is kept per pid in an LRU hash map shared by all CPUs (wake-up
//! and switch-in usually happen on different CPUs). Counters are per-CPU.
use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, map, raw_tracepoint, tracepoint},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};
use collector_common::{
    CpuSchedCounters, Log2Histogram, layout::TP_TASK_REPORT_MASK, layout::UNKNOWN_OFFSET,
};

use crate::{
    cgroup,
    layout::{layout, read_kernel_field, read_tracepoint_field, read_trusted_field},
    with_slot,
};

/// pid → time it became runnable (ns, `bpf_ktime_get_ns`), for the raw and classic tracepoints.
/// Sized by the daemon at load time.
#[map]
static RUNQUEUE_ENQUEUED_AT: LruHashMap<u32, u64> = LruHashMap::with_max_entries(16384, 0);

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

/// Records that `pid` became runnable at `now` (raw and classic tracepoints).
#[inline(always)]
fn mark_enqueued(counters: &mut CpuSchedCounters, pid: u32, now: u64) {
    if pid == 0 {
        return; // the idle task is never queued
    }
    if RUNQUEUE_ENQUEUED_AT.insert(pid, now, 0).is_err() {
        counters.runqueue_map_full += 1;
    }
}

#[inline(always)]
fn on_wakeup(pid: u32, new_task: bool) {
    with_counters(|counters| {
        count_wakeup(counters, new_task);
        // SAFETY: a BPF helper that takes no arguments.
        mark_enqueued(counters, pid, unsafe { bpf_ktime_get_ns() });
    });
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
            // One clock read serves the enqueue of `prev`, the latency of `next` and the run
            // that just ended.
            // SAFETY: a BPF helper that takes no arguments.
            let now = unsafe { bpf_ktime_get_ns() };
            if still_runnable {
                mark_enqueued(counters, prev_pid, now);
            }
            let next_wait = take_wait(next_pid, now);
            if let Some(wait) = next_wait {
                record_latency(wait);
            }
            if cgroup::accounting_on() {
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

/// How long `pid` waited on the run queue, if its enqueue was seen; forgets the enqueue.
#[inline(always)]
fn take_wait(pid: u32, now: u64) -> Option<u64> {
    if pid == 0 {
        return None;
    }
    // SAFETY: a value pointer from a successful lookup, read at once.
    let enqueued_at = unsafe { *RUNQUEUE_ENQUEUED_AT.get_ptr(pid)? };
    let _ = RUNQUEUE_ENQUEUED_AT.remove(pid);
    now.checked_sub(enqueued_at)
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

/// Latency from the scheduler's own stamps, read where it is about to use them: after this
/// tracepoint, `sched_info_arrive` adds `rq_clock(rq) - next->sched_info.last_queued` to
/// `next`'s run delay, and the run queue stays locked in between. A waiting task the load
/// balancer moves counts from its arrival on the CPU that runs it.
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
            count_switch(
                counters,
                (ctx.arg::<u64>(0) & 0xff) != 0 || prev_state == TASK_RUNNING,
            );
            // This CPU's run queue, through `prev`'s scheduling entity: `prev` is on it.
            // SAFETY: BTF arguments, and pointers loaded from them, at KERNEL_LAYOUT offsets.
            let rq = unsafe {
                let cfs_rq = read_trusted_field::<u64>(prev, layout!(task_se_cfs_rq));
                read_trusted_field::<u64>(cfs_rq, layout!(cfs_rq_rq))
            };
            // SAFETY: BTF arguments, and pointers loaded from them, at KERNEL_LAYOUT offsets.
            let next_pid = unsafe { read_trusted_field::<i32>(next, layout!(task_pid)) } as u32;
            // SAFETY: BTF arguments, and pointers loaded from them, at KERNEL_LAYOUT offsets.
            let queued_at = unsafe { read_trusted_field::<u64>(next, layout!(task_last_queued)) };
            let next_wait = if next_pid != 0 && queued_at != 0 {
                // SAFETY: BTF arguments, and pointers loaded from them, at KERNEL_LAYOUT offsets.
                unsafe { read_trusted_field::<u64>(rq, layout!(rq_clock)) }.checked_sub(queued_at)
            } else {
                None
            };
            if let Some(wait) = next_wait {
                record_latency(wait);
            }
            if cgroup::accounting_on() {
                // SAFETY: BTF arguments, and pointers loaded from them, at KERNEL_LAYOUT offsets.
                let prev_pid = unsafe { read_trusted_field::<i32>(prev, layout!(task_pid)) } as u32;
                switch_running_task(
                    prev_pid,
                    next_pid,
                    next_wait,
                    // SAFETY: BTF arguments, and pointers loaded from them, at KERNEL_LAYOUT
                    // offsets.
                    unsafe { read_trusted_field::<u64>(rq, layout!(rq_clock_task)) },
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

macro_rules! wakeup {
    ($tracepoint:literal, $btf:ident, $raw:ident, $new_task:expr) => {
        /// Counts; `sched_switch_btf` reads the wait from the scheduler's own stamps.
        #[btf_tracepoint(function = $tracepoint)]
        pub fn $btf(_ctx: BtfTracePointContext) -> i32 {
            with_counters(|counters| count_wakeup(counters, $new_task));
            0
        }

        #[raw_tracepoint(tracepoint = $tracepoint)]
        pub fn $raw(ctx: RawTracePointContext) -> i32 {
            if let Some(pid) = task_pid(ctx.arg(0)) {
                on_wakeup(pid, $new_task);
            }
            0
        }
    };
}

wakeup!("sched_wakeup", sched_wakeup_btf, sched_wakeup_raw, false);
wakeup!(
    "sched_wakeup_new",
    sched_wakeup_new_btf,
    sched_wakeup_new_raw,
    true
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
