//! Scheduler: context switches, wake-ups, migrations and run-queue latency.
//!
//! Run-queue latency is the time from a task becoming runnable (woken, newly forked, or preempted
//! while still runnable) to it being switched in. The enqueue time is kept per pid in an LRU hash
//! map shared by all CPUs (wake-up and switch-in usually happen on different CPUs); everything
//! else is counted in per-CPU maps, so the hot path takes no lock of ours.
use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, map, raw_tracepoint, tracepoint},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};
use collector_common::{
    CpuSchedCounters, Log2Histogram, layout::TP_TASK_REPORT_MASK, layout::UNKNOWN_OFFSET,
};

use crate::layout::{kernel_layout, read_kernel_field, read_tracepoint_field};

/// pid → time it became runnable (ns, `bpf_ktime_get_ns`). Sized by the daemon at load time.
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

#[inline(always)]
fn with_counters(update: impl FnOnce(&mut CpuSchedCounters)) {
    if let Some(counters) = SCHED_COUNTERS.get_ptr_mut(0) {
        update(unsafe { &mut *counters });
    }
}

#[inline(always)]
fn mark_enqueued(pid: u32) {
    if pid == 0 {
        return; // the idle task is never queued
    }
    let now = unsafe { bpf_ktime_get_ns() };
    if RUNQUEUE_ENQUEUED_AT.insert(pid, now, 0).is_err() {
        with_counters(|c| c.runqueue_map_full += 1);
    }
}

#[inline(always)]
fn on_wakeup(pid: u32, new_task: bool) {
    with_counters(|c| {
        if new_task {
            c.wakeups_new += 1;
        } else {
            c.wakeups += 1;
        }
    });
    mark_enqueued(pid);
}

/// `still_runnable`: the previous task was preempted (or switched out while runnable) and so
/// goes straight back onto the run queue.
#[inline(always)]
fn on_switch(prev_pid: u32, next_pid: u32, still_runnable: bool) {
    with_counters(|c| {
        if still_runnable {
            c.involuntary_switches += 1;
        } else {
            c.voluntary_switches += 1;
        }
    });
    if still_runnable {
        mark_enqueued(prev_pid);
    }
    if next_pid == 0 {
        return;
    }
    let Some(enqueued_at) = RUNQUEUE_ENQUEUED_AT.get_ptr(next_pid) else {
        return;
    };
    let enqueued_at = unsafe { *enqueued_at };
    let _ = RUNQUEUE_ENQUEUED_AT.remove(next_pid);
    let now = unsafe { bpf_ktime_get_ns() };
    if now < enqueued_at {
        return;
    }
    if let Some(histogram) = RUNQUEUE_LATENCY.get_ptr_mut(0) {
        unsafe { &mut *histogram }.record(now - enqueued_at);
    }
}

#[inline(always)]
fn on_migrate(dest_cpu: u32) {
    if let Some(count) = MIGRATIONS_TO_CPU.get_ptr_mut(dest_cpu) {
        // Shared across CPUs, so an atomic add; migrations are rare next to switches.
        crate::atomic::add(count, 1);
    }
}

/// Pid of a `struct task_struct *` passed as a tracepoint argument.
#[inline(always)]
fn task_pid(task: u64) -> Option<u32> {
    let offset = kernel_layout().task_pid;
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

#[inline(always)]
fn switch_from_args(preempt: u64, prev: u64, next: u64, prev_state_arg: u64) {
    let layout = kernel_layout();
    let prev_state = if layout.sched_switch_has_prev_state != 0 {
        prev_state_arg & 0xffff_ffff
    } else if layout.task_state != UNKNOWN_OFFSET {
        // Before 5.18 the state is read from the task; the low 32 bits hold it on LE targets.
        read_kernel_field::<u32>(prev, layout.task_state).unwrap_or(0) as u64
    } else {
        TASK_RUNNING
    };
    let still_runnable = (preempt & 0xff) != 0 || prev_state == TASK_RUNNING;
    let (Some(prev_pid), Some(next_pid)) = (task_pid(prev), task_pid(next)) else {
        return;
    };
    on_switch(prev_pid, next_pid, still_runnable);
}

macro_rules! btf_and_raw {
    ($tracepoint:literal, $btf:ident, $raw:ident, |$ctx:ident| $body:expr) => {
        #[btf_tracepoint(function = $tracepoint)]
        pub fn $btf($ctx: BtfTracePointContext) -> i32 {
            $body;
            0
        }

        #[raw_tracepoint(tracepoint = $tracepoint)]
        pub fn $raw($ctx: RawTracePointContext) -> i32 {
            $body;
            0
        }
    };
}

btf_and_raw!("sched_switch", sched_switch_btf, sched_switch_raw, |ctx| {
    switch_from_args(ctx.arg(0), ctx.arg(1), ctx.arg(2), ctx.arg(3))
});

btf_and_raw!("sched_wakeup", sched_wakeup_btf, sched_wakeup_raw, |ctx| {
    if let Some(pid) = task_pid(ctx.arg(0)) {
        on_wakeup(pid, false)
    }
});

btf_and_raw!(
    "sched_wakeup_new",
    sched_wakeup_new_btf,
    sched_wakeup_new_raw,
    |ctx| {
        if let Some(pid) = task_pid(ctx.arg(0)) {
            on_wakeup(pid, true)
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
    let layout = kernel_layout();
    let prev_pid = read_tracepoint_field::<i32>(&ctx, layout.tp_sched_switch_prev_pid);
    let next_pid = read_tracepoint_field::<i32>(&ctx, layout.tp_sched_switch_next_pid);
    let prev_state = read_tracepoint_field::<i64>(&ctx, layout.tp_sched_switch_prev_state);
    if let (Some(prev_pid), Some(next_pid), Some(prev_state)) = (prev_pid, next_pid, prev_state) {
        let still_runnable = (prev_state as u64 & TP_TASK_REPORT_MASK) == TASK_RUNNING;
        on_switch(prev_pid as u32, next_pid as u32, still_runnable);
    }
    0
}

#[tracepoint(category = "sched", name = "sched_wakeup")]
pub fn sched_wakeup_tp(ctx: TracePointContext) -> u32 {
    if let Some(pid) = read_tracepoint_field::<i32>(&ctx, kernel_layout().tp_sched_wakeup_pid) {
        on_wakeup(pid as u32, false);
    }
    0
}

#[tracepoint(category = "sched", name = "sched_wakeup_new")]
pub fn sched_wakeup_new_tp(ctx: TracePointContext) -> u32 {
    let offset = kernel_layout().tp_sched_wakeup_new_pid;
    if let Some(pid) = read_tracepoint_field::<i32>(&ctx, offset) {
        on_wakeup(pid as u32, true);
    }
    0
}

#[tracepoint(category = "sched", name = "sched_migrate_task")]
pub fn sched_migrate_task_tp(ctx: TracePointContext) -> u32 {
    let offset = kernel_layout().tp_sched_migrate_task_dest_cpu;
    if let Some(dest_cpu) = read_tracepoint_field::<i32>(&ctx, offset) {
        on_migrate(dest_cpu as u32);
    }
    0
}
