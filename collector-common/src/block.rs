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

/// Slots per set of the in-flight array: a request is kept in either slot of the set its key
/// hashes to, so two requests that hash alike can be in flight together.
pub const INFLIGHT_WAYS: u32 = 2;

/// Slots per set of the histogram array. Every (disk, operation) that ever does I/O keeps a slot
/// for good, so four: a set would have to draw five of the node's few pairs to refuse one.
pub const HISTOGRAM_WAYS: u32 = 4;

/// A whole disk and an operation: what a histogram slot is for.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlockKey {
    /// The disk's `dev_t` in the kernel's encoding (`major << 20 | minor`); partitions are folded
    /// into their disk by the daemon when the kernel gives a partition's number.
    pub dev: u32,
    pub op: u32,
}

/// Which request an in-flight slot holds. The BTF and raw tracepoints see the `struct request *` (`request`,
/// with `sector` 0); classic tracepoint records have no pointer, so they use the device
/// (`request`) and start sector instead.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InflightKey {
    pub request: u64,
    pub sector: u64,
}

/// One slot of the in-flight array: what is known of a request between insert/issue and
/// completion. A slot whose two stamps are 0 is free, whatever `key` it last held.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InflightRequest {
    pub key: InflightKey,
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

impl InflightRequest {
    /// Whether the slot holds `key`'s request, in flight or completed.
    #[inline(always)]
    pub fn holds(&self, key: &InflightKey) -> bool {
        self.key == *key
    }

    /// Whether the slot's request is between insert or issue and completion.
    #[inline(always)]
    pub fn in_flight(&self) -> bool {
        self.inserted_ns != 0 || self.issued_ns != 0
    }

    /// The later of its stamps: when the slot's request was last seen.
    #[inline(always)]
    pub fn stamped_ns(&self) -> u64 {
        self.inserted_ns.max(self.issued_ns)
    }
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

/// One slot of this CPU's copy of the histogram array: the histograms of `key`, once `in_use`
/// is set. Each CPU fills its copy's slots in its own order, so a pair's histograms are summed
/// over every slot and CPU that holds it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockHistogramSlot {
    pub key: BlockKey,
    pub in_use: u32,
    pub _pad: u32,
    pub histograms: BlockHistograms,
}

/// Samples the block programs could not record, one copy per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuBlockCounters {
    /// Completions not recorded because the slots of their (disk, op)'s set were all taken.
    pub histogram_slots_taken: u64,
    /// Issued requests whose slot another request took before they completed (both slots of
    /// their set in flight), so their completion was not recorded.
    pub inflight_displaced: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `repr(C)` structs of `u32`/`u64` fields laid out without padding; any bit pattern
    // is valid.
    unsafe impl aya::Pod for super::BlockKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::InflightKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::InflightRequest {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BlockHistograms {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BlockHistogramSlot {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CpuBlockCounters {}
}
