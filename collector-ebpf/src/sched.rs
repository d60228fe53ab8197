//! Scheduler: context switches, wake-ups, migrations and run-queue latency.
//!
//! Run-queue latency is the time from a task becoming runnable (woken, newly forked, or preempted
//! while still runnable) to it being switched in. The BTF tracepoints get trusted task pointers
//! and keep the enqueue time in task-local storage, on the task itself; the raw and classic
//! tracepoints only have pids (or untrusted pointers) and keep it in an LRU hash map by pid
//! shared by all CPUs (wake-up and switch-in usually happen on different CPUs). Everything else
//! is counted in per-CPU maps, so the hot path takes no lock of ours.
use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{btf_map, btf_tracepoint, map, raw_tracepoint, tracepoint},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};
use collector_common::{
    CpuSchedCounters, Log2Histogram, layout::TP_TASK_REPORT_MASK, layout::UNKNOWN_OFFSET,
};

use crate::{
    layout::{kernel_layout, read_kernel_field, read_tracepoint_field, read_trusted_field},
    task_storage::TaskStorage,
};

/// pid → time it became runnable (ns, `bpf_ktime_get_ns`), for the raw and classic tracepoints.
/// Sized by the daemon at load time.
#[map]
static RUNQUEUE_ENQUEUED_AT: LruHashMap<u32, u64> = LruHashMap::with_max_entries(16384, 0);

/// Time the task became runnable (ns), 0 when it is not waiting, for the BTF tracepoints: a
/// lookup is a few pointer loads instead of the LRU map's hash and lock, and the kernel frees
/// the value when the task exits.
#[btf_map]
static RUNQUEUE_ENQUEUED_AT_TASK: TaskStorage<u64> = TaskStorage::new();

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

/// A task as a hook flavour knows it, and so where its enqueue time is kept.
trait QueuedTask: Copy {
    /// The idle task (pid 0) is never queued.
    fn is_idle(self) -> bool;
    /// Records that the task became runnable at `now`; false when there was no room for it.
    fn mark_enqueued(self, now: u64) -> bool;
    /// Takes the time the task became runnable, if one was recorded.
    fn take_enqueued_at(self) -> Option<u64>;
}

/// A pid (raw and classic tracepoints): enqueue time in the LRU hash map.
#[derive(Clone, Copy)]
struct Pid(u32);

impl QueuedTask for Pid {
    #[inline(always)]
    fn is_idle(self) -> bool {
        self.0 == 0
    }

    #[inline(always)]
    fn mark_enqueued(self, now: u64) -> bool {
        RUNQUEUE_ENQUEUED_AT.insert(self.0, now, 0).is_ok()
    }

    #[inline(always)]
    fn take_enqueued_at(self) -> Option<u64> {
        let enqueued_at = unsafe { *RUNQUEUE_ENQUEUED_AT.get_ptr(self.0)? };
        let _ = RUNQUEUE_ENQUEUED_AT.remove(self.0);
        Some(enqueued_at)
    }
}

/// A trusted `struct task_struct *` (BTF tracepoint argument): enqueue time in task storage.
#[derive(Clone, Copy)]
struct Task {
    ptr: u64,
    pid: u32,
}

impl Task {
    /// `None` when the pid offset is unknown (the daemon then does not attach the program).
    #[inline(always)]
    fn new(ptr: u64) -> Option<Self> {
        let offset = kernel_layout().task_pid;
        if offset == UNKNOWN_OFFSET {
            return None;
        }
        let pid = unsafe { read_trusted_field::<i32>(ptr, offset) } as u32;
        Some(Self { ptr, pid })
    }
}

impl QueuedTask for Task {
    #[inline(always)]
    fn is_idle(self) -> bool {
        self.pid == 0
    }

    #[inline(always)]
    fn mark_enqueued(self, now: u64) -> bool {
        match unsafe { RUNQUEUE_ENQUEUED_AT_TASK.get(self.ptr, true) } {
            Some(enqueued_at) => {
                *enqueued_at = now;
                true
            }
            None => false,
        }
    }

    #[inline(always)]
    fn take_enqueued_at(self) -> Option<u64> {
        let enqueued_at = unsafe { RUNQUEUE_ENQUEUED_AT_TASK.get(self.ptr, false) }?;
        let at = core::mem::replace(enqueued_at, 0);
        (at != 0).then_some(at)
    }
}

/// This CPU's counters. Per-CPU and run with preemption off, so plain adds are safe.
#[inline(always)]
fn counters() -> Option<&'static mut CpuSchedCounters> {
    SCHED_COUNTERS.get_ptr_mut(0).map(|c| unsafe { &mut *c })
}

#[inline(always)]
fn on_wakeup(task: impl QueuedTask, new_task: bool) {
    let Some(counters) = counters() else {
        return;
    };
    if new_task {
        counters.wakeups_new += 1;
    } else {
        counters.wakeups += 1;
    }
    if task.is_idle() {
        return;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    if !task.mark_enqueued(now) {
        counters.runqueue_map_full += 1;
    }
}

/// `still_runnable`: the previous task was preempted (or switched out while runnable) and so
/// goes straight back onto the run queue.
#[inline(always)]
fn on_switch<T: QueuedTask>(prev: T, next: T, still_runnable: bool) {
    let Some(counters) = counters() else {
        return;
    };
    // One clock read serves both the enqueue of `prev` and the latency of `next`.
    let now = unsafe { bpf_ktime_get_ns() };
    if still_runnable {
        counters.involuntary_switches += 1;
        if !prev.is_idle() && !prev.mark_enqueued(now) {
            counters.runqueue_map_full += 1;
        }
    } else {
        counters.voluntary_switches += 1;
    }
    if next.is_idle() {
        return;
    }
    let Some(enqueued_at) = next.take_enqueued_at() else {
        return;
    };
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

/// Pid of an untrusted `struct task_struct *` (raw tracepoint argument).
#[inline(always)]
fn task_pid(task: u64) -> Option<Pid> {
    let offset = kernel_layout().task_pid;
    if offset == UNKNOWN_OFFSET {
        return None;
    }
    read_kernel_field::<i32>(task, offset).map(|pid| Pid(pid as u32))
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
    let layout = kernel_layout();
    if layout.sched_switch_has_prev_state != 0 {
        prev_state_arg() & 0xffff_ffff
    } else if layout.task_state != UNKNOWN_OFFSET {
        // The low 32 bits of `state` (a long before 5.14) hold it on LE targets.
        read_state(layout.task_state)
    } else {
        TASK_RUNNING
    }
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

#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch_btf(ctx: BtfTracePointContext) -> i32 {
    let (Some(prev), Some(next)) = (Task::new(ctx.arg(1)), Task::new(ctx.arg(2))) else {
        return 0;
    };
    let prev_state = switched_out_state(
        || ctx.arg(3),
        |offset| unsafe { read_trusted_field::<u32>(prev.ptr, offset) } as u64,
    );
    let still_runnable = (ctx.arg::<u64>(0) & 0xff) != 0 || prev_state == TASK_RUNNING;
    on_switch(prev, next, still_runnable);
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
    if let (Some(prev), Some(next)) = (task_pid(prev), task_pid(ctx.arg(2))) {
        on_switch(prev, next, still_runnable);
    }
    0
}

macro_rules! wakeup {
    ($tracepoint:literal, $btf:ident, $raw:ident, $new_task:expr) => {
        #[btf_tracepoint(function = $tracepoint)]
        pub fn $btf(ctx: BtfTracePointContext) -> i32 {
            if let Some(task) = Task::new(ctx.arg(0)) {
                on_wakeup(task, $new_task);
            }
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
    let layout = kernel_layout();
    let prev_pid = read_tracepoint_field::<i32>(&ctx, layout.tp_sched_switch_prev_pid);
    let next_pid = read_tracepoint_field::<i32>(&ctx, layout.tp_sched_switch_next_pid);
    let prev_state = read_tracepoint_field::<i64>(&ctx, layout.tp_sched_switch_prev_state);
    if let (Some(prev_pid), Some(next_pid), Some(prev_state)) = (prev_pid, next_pid, prev_state) {
        let still_runnable = (prev_state as u64 & TP_TASK_REPORT_MASK) == TASK_RUNNING;
        on_switch(Pid(prev_pid as u32), Pid(next_pid as u32), still_runnable);
    }
    0
}

#[tracepoint(category = "sched", name = "sched_wakeup")]
pub fn sched_wakeup_tp(ctx: TracePointContext) -> u32 {
    if let Some(pid) = read_tracepoint_field::<i32>(&ctx, kernel_layout().tp_sched_wakeup_pid) {
        on_wakeup(Pid(pid as u32), false);
    }
    0
}

#[tracepoint(category = "sched", name = "sched_wakeup_new")]
pub fn sched_wakeup_new_tp(ctx: TracePointContext) -> u32 {
    let offset = kernel_layout().tp_sched_wakeup_new_pid;
    if let Some(pid) = read_tracepoint_field::<i32>(&ctx, offset) {
        on_wakeup(Pid(pid as u32), true);
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
