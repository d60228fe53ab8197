//! Kernel layout facts the programs need but cannot compute themselves.
//!
//! Rust eBPF cannot emit CO-RE relocations, so struct member offsets are read from the running
//! kernel's BTF (and classic tracepoint field offsets from tracefs `format` files) by the daemon
//! at load time and written into this read-only global before the programs are verified.

/// Marks an offset the daemon could not find; programs that need it must not be attached.
pub const UNKNOWN_OFFSET: u32 = u32::MAX;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelLayout {
    /// `offsetof(struct task_struct, pid)`.
    pub task_pid: u32,
    /// `offsetof(struct task_struct, __state)` (`state` before 5.14); read only when the
    /// `sched_switch` tracepoint does not pass `prev_state` itself (before 5.18).
    pub task_state: u32,
    /// `offsetof(struct task_struct, sched_info.run_delay)`: the run-queue wait the scheduler
    /// accounts itself (CONFIG_SCHED_INFO), which the BTF tracepoints read instead of timing it.
    pub task_run_delay: u32,
    /// 1 when the BTF/raw `sched_switch` tracepoint has the 4th `prev_state` argument.
    pub sched_switch_has_prev_state: u32,
    /// Classic tracepoint field offsets, from `events/<category>/<name>/format`.
    pub tp_sched_switch_prev_pid: u32,
    pub tp_sched_switch_prev_state: u32,
    pub tp_sched_switch_next_pid: u32,
    pub tp_sched_wakeup_pid: u32,
    pub tp_sched_wakeup_new_pid: u32,
    pub tp_sched_migrate_task_dest_cpu: u32,
    pub tp_softirq_vec: u32,
}

impl KernelLayout {
    /// Nothing known yet: the value compiled into the object before the daemon fills it in.
    pub const UNKNOWN: Self = Self {
        task_pid: UNKNOWN_OFFSET,
        task_state: UNKNOWN_OFFSET,
        task_run_delay: UNKNOWN_OFFSET,
        sched_switch_has_prev_state: 0,
        tp_sched_switch_prev_pid: UNKNOWN_OFFSET,
        tp_sched_switch_prev_state: UNKNOWN_OFFSET,
        tp_sched_switch_next_pid: UNKNOWN_OFFSET,
        tp_sched_wakeup_pid: UNKNOWN_OFFSET,
        tp_sched_wakeup_new_pid: UNKNOWN_OFFSET,
        tp_sched_migrate_task_dest_cpu: UNKNOWN_OFFSET,
        tp_softirq_vec: UNKNOWN_OFFSET,
    };
}

/// In classic tracepoints, `prev_state` carries `TASK_REPORT_MAX` (0x100) for a preempted task;
/// the low byte is the reported state, 0 meaning still runnable.
pub const TP_TASK_REPORT_MASK: u64 = 0xff;

#[cfg(feature = "user")]
// SAFETY: `repr(C)` struct of `u32`s, no padding, any bit pattern is valid.
unsafe impl aya::Pod for KernelLayout {}
