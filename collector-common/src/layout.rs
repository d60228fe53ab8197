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
    /// This CPU's `struct rq`, from a task on it: `task_struct.se.cfs_rq` → `cfs_rq.rq`
    /// (CONFIG_FAIR_GROUP_SCHED), and its task clock `rq.clock_task`, which the BTF
    /// `sched_switch` times runs with for the cgroups, as the scheduler does. The run queue is
    /// locked from the tracepoint to the scheduler's own use of it.
    pub task_se_cfs_rq: u32,
    pub cfs_rq_rq: u32,
    pub rq_clock_task: u32,
    /// A task's cgroup v2 id, as `bpf_get_current_cgroup_id` finds it, without the helper
    /// call: `task_struct.cgroups` → `css_set.dfl_cgrp` → `cgroup.kn` → `kernfs_node.id`.
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
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

    // Block layer, `struct request` and the objects naming its disk (BTF/raw hooks).
    /// `offsetof(struct request, cmd_flags)`: the low 8 bits are the `REQ_OP_*`.
    pub request_cmd_flags: u32,
    /// `offsetof(struct request, __data_len)`: bytes left to transfer (the size, at issue).
    pub request_data_len: u32,
    /// `offsetof(struct request, start_time_ns)`: when the request was allocated (0 when the
    /// queue keeps no time stamps); optional, it tells a kept entry's earlier use apart.
    pub request_start_time_ns: u32,
    /// Disk, first choice (4.x–6.x): `request.q` → `request_queue.disk` (5.15+) → `gendisk`.
    pub request_q: u32,
    pub request_queue_disk: u32,
    /// Disk, second choice (before 5.17): `request.rq_disk` → `gendisk`.
    pub request_rq_disk: u32,
    pub gendisk_major: u32,
    pub gendisk_first_minor: u32,
    /// Last resort: `request.part` → `block_device.bd_dev` (a partition's number; the daemon
    /// folds partitions into their disk).
    pub request_part: u32,
    pub block_device_bd_dev: u32,
    /// Classic `block_rq_insert`/`block_rq_issue` (event class `block_rq`) field offsets.
    pub tp_block_rq_dev: u32,
    pub tp_block_rq_sector: u32,
    pub tp_block_rq_bytes: u32,
    pub tp_block_rq_rwbs: u32,
    /// Classic `block_rq_complete` field offsets.
    pub tp_block_rq_complete_dev: u32,
    pub tp_block_rq_complete_sector: u32,

    // Network.
    /// 1 when the BTF/raw `tcp_retransmit_skb` has the 3rd `err` argument (6.12+; before, the
    /// tracepoint fired only for segments actually sent).
    pub tcp_retransmit_skb_has_err: u32,
    /// 1 when the BTF/raw `kfree_skb` passes `enum skb_drop_reason` as its 3rd argument (5.17+).
    pub kfree_skb_has_reason: u32,
    /// Classic tracepoint field offsets; `tp_tcp_retransmit_skb_err` stays unknown before 6.12.
    pub tp_tcp_retransmit_skb_err: u32,
    pub tp_kfree_skb_reason: u32,
    /// To tell tail loss probes among retransmits, from the socket (`struct sock` starts
    /// `struct inet_connection_sock`): `offsetof(inet_connection_sock, icsk_pending)`, and the
    /// bit offset and width of the `icsk_ca_state` bitfield.
    pub icsk_pending: u32,
    pub icsk_ca_state_bit: u32,
    pub icsk_ca_state_width: u32,
    /// Classic `tcp_retransmit_skb`'s `skaddr` (the socket) field offset.
    pub tp_tcp_retransmit_skb_skaddr: u32,
}

impl KernelLayout {
    /// Nothing known yet: the value compiled into the object before the daemon fills it in.
    pub const UNKNOWN: Self = Self {
        task_pid: UNKNOWN_OFFSET,
        task_state: UNKNOWN_OFFSET,
        task_se_cfs_rq: UNKNOWN_OFFSET,
        cfs_rq_rq: UNKNOWN_OFFSET,
        rq_clock_task: UNKNOWN_OFFSET,
        task_cgroups: UNKNOWN_OFFSET,
        css_set_dfl_cgrp: UNKNOWN_OFFSET,
        cgroup_kn: UNKNOWN_OFFSET,
        kernfs_node_id: UNKNOWN_OFFSET,
        sched_switch_has_prev_state: 0,
        tp_sched_switch_prev_pid: UNKNOWN_OFFSET,
        tp_sched_switch_prev_state: UNKNOWN_OFFSET,
        tp_sched_switch_next_pid: UNKNOWN_OFFSET,
        tp_sched_wakeup_pid: UNKNOWN_OFFSET,
        tp_sched_wakeup_new_pid: UNKNOWN_OFFSET,
        tp_sched_migrate_task_dest_cpu: UNKNOWN_OFFSET,
        tp_softirq_vec: UNKNOWN_OFFSET,
        request_cmd_flags: UNKNOWN_OFFSET,
        request_data_len: UNKNOWN_OFFSET,
        request_start_time_ns: UNKNOWN_OFFSET,
        request_q: UNKNOWN_OFFSET,
        request_queue_disk: UNKNOWN_OFFSET,
        request_rq_disk: UNKNOWN_OFFSET,
        gendisk_major: UNKNOWN_OFFSET,
        gendisk_first_minor: UNKNOWN_OFFSET,
        request_part: UNKNOWN_OFFSET,
        block_device_bd_dev: UNKNOWN_OFFSET,
        tp_block_rq_dev: UNKNOWN_OFFSET,
        tp_block_rq_sector: UNKNOWN_OFFSET,
        tp_block_rq_bytes: UNKNOWN_OFFSET,
        tp_block_rq_rwbs: UNKNOWN_OFFSET,
        tp_block_rq_complete_dev: UNKNOWN_OFFSET,
        tp_block_rq_complete_sector: UNKNOWN_OFFSET,
        tcp_retransmit_skb_has_err: 0,
        kfree_skb_has_reason: 0,
        tp_tcp_retransmit_skb_err: UNKNOWN_OFFSET,
        tp_kfree_skb_reason: UNKNOWN_OFFSET,
        icsk_pending: UNKNOWN_OFFSET,
        icsk_ca_state_bit: UNKNOWN_OFFSET,
        icsk_ca_state_width: 0,
        tp_tcp_retransmit_skb_skaddr: UNKNOWN_OFFSET,
    };
}

/// In classic tracepoints, `prev_state` carries `TASK_REPORT_MAX` (0x100) for a preempted task;
/// the low byte is the reported state, 0 meaning still runnable.
pub const TP_TASK_REPORT_MASK: u64 = 0xff;

#[cfg(feature = "user")]
// SAFETY: `repr(C)` struct of `u32`s, no padding, any bit pattern is valid.
unsafe impl aya::Pod for KernelLayout {}
