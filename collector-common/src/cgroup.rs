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

/// Run time and run-queue waits of one cgroup that `sched_switch` has not yet added to its
/// counters. Adding costs a hash lookup (a helper call) and atomic adds on a line all CPUs
/// write; each CPU gathers them here first, in a slot picked by the cgroup id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingCharge {
    /// 0: the slot is free.
    pub cgroup_id: u64,
    pub cpu_ns: u64,
    pub wait_ns: u64,
    pub waits: u64,
}

/// What one CPU has yet to charge to cgroups: the run in progress, and finished runs gathered in
/// a small direct-mapped cache, slot `cgroup_id % PENDING_SLOTS`. A cgroup taking an occupied
/// slot first moves the occupant's charges to its counters. One map value, so `sched_switch`
/// makes one per-CPU lookup for both.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuCharges {
    pub running: RunningTask,
    pub pending: [PendingCharge; PENDING_SLOTS],
}

/// A power of two: the slot is `cgroup_id & (PENDING_SLOTS - 1)`.
pub const PENDING_SLOTS: usize = 8;
const _: () = assert!(PENDING_SLOTS.is_power_of_two());

/// A slot's charges go to its cgroup's counters once they hold this much CPU time, this much
/// waiting or this many waits, when a task of the cgroup exits, or when another cgroup needs the
/// slot: a scrape misses at most that much per cgroup and CPU.
pub const CHARGE_AFTER_CPU_NS: u64 = 5_000_000;
pub const CHARGE_AFTER_WAIT_NS: u64 = 5_000_000;
pub const CHARGE_AFTER_WAITS: u64 = 16;

/// The task running on a CPU, charged to its cgroup when it is switched out (it is `current`
/// then).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunningTask {
    /// When it was switched in: the run queue's task clock (`tp_btf`) or `bpf_ktime_get_ns`
    /// (raw and classic tracepoints); 0 when unknown (idle, or just attached).
    pub switched_in_ns: u64,
    /// The run-queue wait that ended with that switch-in; `waited` is 0 when none was seen.
    pub wait_ns: u64,
    pub waited: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `repr(C)` structs of `u64` fields and arrays, no padding; any bit pattern is valid.
    unsafe impl aya::Pod for super::CgroupCounters {}
}
