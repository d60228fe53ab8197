//! Block I/O: in-flight requests and per-device, per-operation histograms.
use crate::Log2Histogram;

/// Operation codes stored in [`BlockKey::op`]: the kernel's `REQ_OP_*` values for the four the
/// metrics name; anything else (write-zeroes, zone and driver commands) is folded into
/// [`BLOCK_OP_OTHER`] in the kernel, so the map stays small.
pub const BLOCK_OP_READ: u32 = 0;
pub const BLOCK_OP_WRITE: u32 = 1;
pub const BLOCK_OP_FLUSH: u32 = 2;
pub const BLOCK_OP_DISCARD: u32 = 3;
pub const BLOCK_OP_OTHER: u32 = 4;

/// `operation` label of each op code, indexed by code.
pub const BLOCK_OP_NAMES: [&str; 5] = ["read", "write", "flush", "discard", "other"];

/// `REQ_OP_MASK`: the low `REQ_OP_BITS` (8) bits of `cmd_flags` are the operation.
pub const REQ_OP_MASK: u32 = 0xff;

/// Key of the histogram map: a whole disk and an operation.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockKey {
    /// The disk's `dev_t` in the kernel's encoding (`major << 20 | minor`); partitions are folded
    /// into their disk by the daemon when the kernel gives a partition's number.
    pub dev: u32,
    pub op: u32,
}

/// Key of the in-flight map. The BTF and raw tracepoints see the `struct request *` (`request`,
/// with `sector` 0); classic tracepoint records have no pointer, so they use the device
/// (`request`) and start sector instead.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InflightKey {
    pub request: u64,
    pub sector: u64,
}

/// What is known of a request between insert/issue and completion.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InflightRequest {
    /// `bpf_ktime_get_ns` at `block_rq_insert`; 0 when the request was issued directly (no
    /// scheduler queue, so no queue time), and once it completed.
    pub inserted_ns: u64,
    /// At `block_rq_issue`; 0 until issued, and again once completed.
    pub issued_ns: u64,
    /// Size at issue, in bytes.
    pub bytes: u32,
    pub dev: u32,
    pub op: u32,
    pub _pad: u32,
    /// cgroup v2 id of the task that submitted it (current at insert, or at a direct issue), to
    /// charge the I/O to; 0 when per-cgroup accounting is off.
    pub cgroup_id: u64,
}

/// The three histograms of one (disk, operation), one copy per CPU. Latency and queue time in
/// nanoseconds, size in bytes. Too big for the BPF stack: new entries are copied from a zeroed
/// map value.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockHistograms {
    /// `block_rq_issue` → `block_rq_complete`.
    pub latency: Log2Histogram,
    /// `block_rq_insert` → `block_rq_issue`, for requests that went through a queue.
    pub queue: Log2Histogram,
    pub size: Log2Histogram,
}

impl BlockHistograms {
    pub const EMPTY: Self = Self {
        latency: Log2Histogram::EMPTY,
        queue: Log2Histogram::EMPTY,
        size: Log2Histogram::EMPTY,
    };
}

/// Samples the block programs could not record, one copy per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuBlockCounters {
    /// Completions not recorded because the histogram map had no room for a new (disk, op).
    pub histogram_map_full: u64,
    /// Insert/issue events not tracked because the in-flight map update failed.
    pub inflight_map_full: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `repr(C)` structs of `u32`/`u64` fields laid out without padding; any bit pattern
    // is valid.
    unsafe impl aya::Pod for super::BlockKey {}
    unsafe impl aya::Pod for super::InflightKey {}
    unsafe impl aya::Pod for super::InflightRequest {}
    unsafe impl aya::Pod for super::BlockHistograms {}
    unsafe impl aya::Pod for super::CpuBlockCounters {}
}
