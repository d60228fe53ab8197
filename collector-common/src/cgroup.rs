//! Per-cgroup accounting: what the tasks and sockets of one cgroup v2 cgroup used, keyed by the
//! cgroup's id (its kernfs inode number, as `bpf_get_current_cgroup_id` returns it).

/// Counters of one cgroup, in an LRU hash shared by all CPUs (updated with atomic adds): a
/// per-CPU copy for thousands of cgroups would cost `cgroups × CPUs` of kernel memory. Received
/// and sent traffic sit at the two ends, more than a cache line apart: a socket's packets are
/// received in one CPU's softirq while its task sends from another, at packet rate.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupCounters {
    /// Bytes and packets its sockets received (cgroup_skb ingress).
    pub net_receive_bytes: u64,
    pub net_receive_packets: u64,
    /// Time its tasks ran on a CPU, in nanoseconds.
    pub cpu_ns: u64,
    /// Time its tasks waited on a run queue while runnable, and the number of such waits.
    pub runqueue_wait_ns: u64,
    pub runqueue_waits: u64,
    /// Block I/O requests it submitted, completed: count, bytes and issue → completion time,
    /// indexed by [`CGROUP_IO_READ`] / [`CGROUP_IO_WRITE`].
    pub io_requests: [u64; 2],
    pub io_bytes: [u64; 2],
    pub io_time_ns: [u64; 2],
    /// Bytes and packets its sockets sent (cgroup_skb egress).
    pub net_transmit_bytes: u64,
    pub net_transmit_packets: u64,
}

// Receive and transmit counters are more than a cache line apart.
const _: () = assert!(
    core::mem::offset_of!(CgroupCounters, net_transmit_bytes)
        >= core::mem::offset_of!(CgroupCounters, net_receive_packets) + 8 + 64
);

pub const CGROUP_IO_READ: usize = 0;
pub const CGROUP_IO_WRITE: usize = 1;

/// What the BTF `sched_switch` program last read of a task when it left the CPU: the
/// scheduler's own totals, so the next switch-out sees only what accrued since; and what of that
/// is not yet charged to the task's cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskSeen {
    /// `task->sched_info.run_delay`: total time spent waiting on a run queue.
    pub run_delay: u64,
    /// `task->se.sum_exec_runtime`: total time on a CPU.
    pub exec_runtime: u64,
    /// Accrued since the last charge to the cgroup. Charging every switch-out costs a hash
    /// lookup and three atomic adds on a line shared by all CPUs; this batches them.
    pub uncharged_cpu_ns: u64,
    pub uncharged_wait_ns: u64,
    pub uncharged_waits: u64,
}

/// A task's uncharged time goes to its cgroup when it exits, or once it holds this much CPU time,
/// this much waiting or this many waits: a scrape misses at most that much of each task.
pub const CHARGE_AFTER_CPU_NS: u64 = 5_000_000;
pub const CHARGE_AFTER_WAIT_NS: u64 = 5_000_000;
pub const CHARGE_AFTER_WAITS: u64 = 16;

/// The task running on one CPU, for the raw and classic `sched_switch` programs, which time
/// runs themselves: charged to its cgroup when it is switched out (it is `current` then).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunningTask {
    /// `bpf_ktime_get_ns` when it was switched in; 0 when unknown (idle, or just attached).
    pub switched_in_ns: u64,
    /// The run-queue wait that ended with that switch-in; `waited` is 0 when none was timed.
    pub wait_ns: u64,
    pub waited: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `repr(C)` structs of `u64` fields and arrays, no padding; any bit pattern is valid.
    unsafe impl aya::Pod for super::CgroupCounters {}
    unsafe impl aya::Pod for super::TaskSeen {}
    unsafe impl aya::Pod for super::RunningTask {}
}
