//! Per-CPU scheduler and interrupt counters.

/// Scheduler event counts of one CPU (one slot of a per-CPU array).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuSchedCounters {
    /// Switches away from a task that blocked (it gave up the CPU).
    pub voluntary_switches: u64,
    /// Switches away from a task that was still runnable (preempted).
    pub involuntary_switches: u64,
    /// `sched_wakeup`: an existing task made runnable.
    pub wakeups: u64,
    /// `sched_wakeup_new`: a newly forked task made runnable for the first time.
    pub wakeups_new: u64,
    /// Run-queue latency samples dropped because the pending-wake-up map was full.
    pub runqueue_map_full: u64,
}

/// Number of softirq vectors (`NR_SOFTIRQS` in `include/linux/interrupt.h`).
pub const NR_SOFTIRQS: usize = 10;

/// Vector names, as the kernel's `softirq_to_name` table, lower-cased like node_exporter's
/// `node_softirqs_total{vector}`.
pub const SOFTIRQ_NAMES: [&str; NR_SOFTIRQS] = [
    "hi", "timer", "net_tx", "net_rx", "block", "irq_poll", "tasklet", "sched", "hrtimer", "rcu",
];

/// Hard IRQ time of one CPU, plus the entry timestamps needed to compute interrupt times.
/// Softirq time is kept per vector in its own per-CPU array (index = vector), so the kernel's
/// map lookup bounds-checks the vector number.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuIrqTime {
    /// Nanoseconds spent in hard IRQ handlers (`irq_handler_entry` → `irq_handler_exit`).
    pub hardirq_ns: u64,
    /// Entry timestamps of the handler running now; 0 when none.
    pub hardirq_entered_ns: u64,
    pub softirq_entered_ns: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `repr(C)` structs of `u64`s, no padding, any bit pattern is valid.
    unsafe impl aya::Pod for super::CpuSchedCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CpuIrqTime {}
}
