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
    /// Run-queue waits not timed: a task's enqueue found every slot of its set in
    /// `RUNQUEUE_WAITING` taken and displaced the one waiting longest.
    pub runqueue_map_full: u64,
}

/// Slots per set of the table of tasks waiting on a run queue (`RUNQUEUE_WAITING`, an array of
/// [`WaitingTasks`] used as a hash table keyed by pid): half a cache line.
pub const RUNQUEUE_WAYS: usize = 4;

/// Bits of a slot that hold the time a task became runnable; the pid is above them. Linux pids
/// stay below 2^22 (`PID_MAX_LIMIT`), which leaves 42 bits of nanoseconds: 73 minutes.
pub const WAITING_TIME_BITS: u32 = 42;
const WAITING_TIME_MASK: u64 = (1 << WAITING_TIME_BITS) - 1;

/// Waits longer than this (36 minutes) are taken for a stamp from the future: another CPU's
/// clock a few nanoseconds ahead, wrapped around.
pub const MAX_WAIT_NS: u64 = 1 << (WAITING_TIME_BITS - 1);

/// One set of `RUNQUEUE_WAITING`. Each slot packs a pid and the time it became runnable into one
/// `u64` (see [`waiting_entry`]), so a slot is always read and written whole, even by two CPUs
/// at once; 0 is a free slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WaitingTasks {
    pub slots: [u64; RUNQUEUE_WAYS],
}

/// The slot value for `pid` (not 0) runnable since `now_ns`.
#[inline(always)]
pub const fn waiting_entry(pid: u32, now_ns: u64) -> u64 {
    ((pid as u64) << WAITING_TIME_BITS) | (now_ns & WAITING_TIME_MASK)
}

/// The pid a slot value belongs to (0: a free slot).
#[inline(always)]
pub const fn waiting_pid(entry: u64) -> u32 {
    (entry >> WAITING_TIME_BITS) as u32
}

/// How long the task of `entry` has been runnable at `now_ns`, modulo 2^42 ns.
#[inline(always)]
pub const fn waiting_for(entry: u64, now_ns: u64) -> u64 {
    now_ns.wrapping_sub(entry) & WAITING_TIME_MASK
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
    // SAFETY: as above.
    unsafe impl aya::Pod for super::WaitingTasks {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_holds_a_pid_and_when_it_became_runnable() {
        const PID_MAX_LIMIT: u32 = 1 << 22;
        let now = 1_700_000_123_456_789_u64; // 19 days of uptime, past 2^42 ns
        for pid in [1, 4242, PID_MAX_LIMIT - 1] {
            let entry = waiting_entry(pid, now - 1500);
            assert_ne!(entry, 0, "a task's slot is never free");
            assert_eq!(waiting_pid(entry), pid);
            assert_eq!(waiting_for(entry, now), 1500);
            // Across a wrap of the 42 bits.
            let wrap = (now | WAITING_TIME_MASK) + 1;
            assert_eq!(waiting_for(waiting_entry(pid, wrap - 10), wrap + 5), 15);
        }
        // Stamped by a CPU whose clock was 3 ns ahead: far beyond any real wait.
        assert!(waiting_for(waiting_entry(7, now + 3), now) >= MAX_WAIT_NS);
        assert_eq!(waiting_pid(0), 0);
    }
}
