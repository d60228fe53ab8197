//! Block I/O: request latency (issue → completion), queue time (insert → issue) and size, per
//! disk and operation.
//!
//! Insert and issue remember the request in an array shared by all CPUs (completion usually
//! runs on another CPU, in the interrupt); completion records all three histograms at once, in
//! this CPU's copy of a second array. Our own timestamps are used rather than
//! `request.io_start_time_ns`, which the kernel fills in only with I/O statistics on.
//!
//! Both arrays are hash tables of fixed-size sets (`INFLIGHT_WAYS`, `HISTOGRAM_WAYS`): a key
//! hashes to a set and takes any of its slots. An array lookup is a bounds check the verifier
//! inlines, where a hash map's is a call that hashes the key and walks a bucket, and one call
//! costs about as much as a whole short program on this kind of VM. A request that finds every
//! slot of its set in flight takes the one stamped longest ago and that request goes unrecorded
//! (counted); sizing makes it rare.
//!
//! The BTF and raw programs key requests by their `struct request` pointer. Requests are
//! allocated once per tag of each hardware and scheduler queue and reused, so a slot often
//! still holds the request at its next use. Classic tracepoints key by (disk, sector), which
//! does not repeat. Either way completion frees the slot by clearing its stamps.
use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{map, tracepoint},
    maps::{Array, PerCpuArray},
    programs::TracePointContext,
};
use collector_common::{
    BlockHistogramSlot, BlockHistograms, BlockKey, CpuBlockCounters, InflightKey, InflightRequest,
    block::{
        BLOCK_OP_DISCARD, BLOCK_OP_FLUSH, BLOCK_OP_OTHER, BLOCK_OP_READ, BLOCK_OP_WRITE,
        HISTOGRAM_WAYS, INFLIGHT_WAYS, REQ_OP_MASK,
    },
    cgroup::{CGROUP_IO_READ, CGROUP_IO_WRITE},
    layout::UNKNOWN_OFFSET,
};

use crate::{
    atomic::add,
    cgroup,
    layout::{KernelMemory, layout, read_tracepoint_field},
    with_slot,
};

/// log2 of the number of sets in `BLOCK_INFLIGHT` and `BLOCK_HISTOGRAMS`, written by the daemon
/// with the arrays' sizes (read-only, so the verifier sees constants). Powers of two: a set is
/// picked with a shift, where a 64-bit division costs tens of cycles.
#[unsafe(no_mangle)]
static BLOCK_INFLIGHT_SET_BITS: u32 = 0;
#[unsafe(no_mangle)]
static BLOCK_HISTOGRAM_SET_BITS: u32 = 0;

/// Requests between insert or issue and completion, `INFLIGHT_WAYS` slots per set. Sized by the
/// daemon from the disks' tag counts.
#[map]
static BLOCK_INFLIGHT: Array<InflightRequest> = Array::with_max_entries(INFLIGHT_WAYS, 0);

/// Histograms per (disk, operation), one copy per CPU, `HISTOGRAM_WAYS` slots per set. A slot
/// once taken stays its pair's: freeing it would make counters go backwards. Sized by the
/// daemon from the number of disks.
#[map]
static BLOCK_HISTOGRAMS: PerCpuArray<BlockHistogramSlot> =
    PerCpuArray::with_max_entries(HISTOGRAM_WAYS, 0);

/// Which slots of `BLOCK_HISTOGRAMS` any CPU has taken (1), so the daemon reads only those and
/// not every CPU's copy of every slot.
#[map]
static BLOCK_HISTOGRAM_SLOTS_USED: Array<u32> = Array::with_max_entries(HISTOGRAM_WAYS, 0);

#[map]
static BLOCK_COUNTERS: PerCpuArray<CpuBlockCounters> = PerCpuArray::with_max_entries(1, 0);

/// The low half of a request pointer, as a number to hash. The verifier allows no arithmetic but
/// addition on a BTF program's pointers, and a 32-bit move turns one into a number (for programs
/// loaded with CAP_PERFMON, as tracing programs are); a move is what the compiler would not emit
/// for a truncation, hence the assembly. The low half is what tells requests apart.
#[cfg(target_arch = "bpf")]
#[inline(always)]
fn low_half(pointer: u64) -> u64 {
    let low: u64;
    // Fixed registers: the `wreg` class needs the alu32 feature enabled for the whole crate.
    // SAFETY: a register move, touching no memory.
    unsafe {
        core::arch::asm!(
            "w0 = w1",
            in("r1") pointer,
            lateout("r0") low,
            options(pure, nomem, nostack),
        );
    }
    low
}

/// Host builds (`cargo check`, clippy) only.
#[cfg(not(target_arch = "bpf"))]
fn low_half(pointer: u64) -> u64 {
    pointer & 0xffff_ffff
}

/// Index of the first slot of `value`'s set, in an array of `2^set_bits` sets of `ways` slots.
/// Fibonacci hashing: the top bits of the product depend on every bit of `value`, so pointers a
/// fixed stride apart spread over all sets.
#[inline(always)]
pub(crate) fn first_slot(value: u64, set_bits: &u32, ways: u32) -> u32 {
    // SAFETY: a reference to a global of the object.
    let set_bits = unsafe { core::ptr::read_volatile(set_bits) };
    if set_bits == 0 {
        return 0;
    }
    let set = value.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - set_bits.min(32));
    set as u32 * ways
}

#[inline(always)]
fn inflight_slots(key: &InflightKey) -> Option<[*mut InflightRequest; INFLIGHT_WAYS as usize]> {
    let first = first_slot(
        low_half(key.request) ^ key.sector.rotate_left(32),
        &BLOCK_INFLIGHT_SET_BITS,
        INFLIGHT_WAYS,
    );
    Some([
        BLOCK_INFLIGHT.get_ptr_mut(first)?,
        BLOCK_INFLIGHT.get_ptr_mut(first + 1)?,
    ])
}

/// The slot holding `key`'s request, if any.
#[inline(always)]
fn find_inflight(key: &InflightKey) -> Option<*mut InflightRequest> {
    inflight_slots(key)?
        .into_iter()
        // SAFETY: a slot of BLOCK_INFLIGHT from a successful lookup: array values live as long as
        // the map. Other CPUs may write it at the same time; what is read is checked (the key, read
        // again before freeing).
        .find(|slot| unsafe { &**slot }.holds(key))
}

/// The slot to record `key`'s request in, and whether it already holds it: its own, else a
/// free one. When both hold requests in flight, one still waiting in a queue makes way: it
/// will be timed from its issue as if issued directly, losing only its queue time (entries of
/// merged requests, which never complete, are of this kind). Else the one issued longest ago
/// does, and its completion will not be recorded (counted).
#[inline(always)]
fn claim_inflight(key: &InflightKey) -> Option<(*mut InflightRequest, bool)> {
    let [first, second] = inflight_slots(key)?;
    // SAFETY: a slot of BLOCK_INFLIGHT from a successful lookup: array values live as long as the
    // map. Other CPUs may write it at the same time; what is read is checked (the key, read again
    // before freeing).
    let (first_entry, second_entry) = unsafe { (&*first, &*second) };
    if first_entry.holds(key) {
        return Some((first, true));
    }
    if second_entry.holds(key) {
        return Some((second, true));
    }
    if !first_entry.in_flight() {
        return Some((first, false));
    }
    if !second_entry.in_flight() {
        return Some((second, false));
    }
    let displaced = if first_entry.issued_ns == 0 {
        first
    } else if second_entry.issued_ns == 0 {
        second
    } else {
        with_slot(&BLOCK_COUNTERS, |c| c.inflight_displaced += 1);
        if first_entry.issued_ns <= second_entry.issued_ns {
            first
        } else {
            second
        }
    };
    Some((displaced, false))
}

/// Whether a kept entry is of an earlier use of its `struct request`: the kernel stamps each
/// use at allocation (`start_time_ns`, on our clock; `allocated_ns` gives 0 when unknown), and
/// all we record of a use comes after. Catches the entries no completion closed: a request
/// merged into another, or a completion we missed. The stamp is read only when asked.
#[inline(always)]
fn from_earlier_use(entry: &InflightRequest, allocated_ns: impl FnOnce() -> u64) -> bool {
    let allocated_ns = allocated_ns();
    allocated_ns != 0 && entry.stamped_ns() < allocated_ns
}

#[inline(always)]
fn on_insert(key: InflightKey, allocated_ns: impl FnOnce() -> u64) {
    // SAFETY: a BPF helper that takes no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let Some((entry, held)) = claim_inflight(&key) else {
        return;
    };
    // SAFETY: a slot of BLOCK_INFLIGHT from a successful lookup: array values live as long as the
    // map. Other CPUs may write it at the same time; what is read is checked (the key, read again
    // before freeing).
    let entry = unsafe { &mut *entry };
    // Requeued after its issue and inserted again by a kernel worker: it waits in the queue
    // again, still on behalf of the task that submitted it. Anything else is a new request.
    let requeued = held && entry.issued_ns != 0 && !from_earlier_use(entry, allocated_ns);
    if !requeued {
        entry.key = key;
        entry.cgroup_id = submitter_cgroup();
    }
    entry.inserted_ns = now;
    entry.issued_ns = 0;
}

#[inline(always)]
fn on_issue(key: InflightKey, dev: u32, op: u32, bytes: u32, allocated_ns: impl FnOnce() -> u64) {
    // SAFETY: a BPF helper that takes no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let Some((entry, held)) = claim_inflight(&key) else {
        return;
    };
    // SAFETY: a slot of BLOCK_INFLIGHT from a successful lookup: array values live as long as the
    // map. Other CPUs may write it at the same time; what is read is checked (the key, read again
    // before freeing).
    let entry = unsafe { &mut *entry };
    // Inserted, or issued again after the driver was busy (no insert in between): its queue
    // time and cgroup stand. Otherwise it is issued directly (no queue time) by the task
    // submitting it.
    let queued = held && entry.in_flight() && !from_earlier_use(entry, allocated_ns);
    if !queued {
        entry.key = key;
        entry.inserted_ns = 0;
        entry.cgroup_id = submitter_cgroup();
    }
    entry.issued_ns = now;
    entry.dev = dev;
    entry.op = op;
    entry.bytes = bytes;
}

#[inline(always)]
fn on_complete(key: InflightKey, allocated_ns: impl FnOnce() -> u64) {
    let Some(entry) = find_inflight(&key) else {
        return; // issued before we were attached, or displaced
    };
    // SAFETY: a slot of BLOCK_INFLIGHT from a successful lookup: array values live as long as the
    // map. Other CPUs may write it at the same time; what is read is checked (the key, read again
    // before freeing).
    let request = unsafe { *entry };
    // Another CPU taking the slot for a new request while it was copied leaves a copy that may
    // mix the two, and a slot no longer ours to free: read again (volatile, or the compiler
    // reuses the copy). This narrows the race to the instant between the two reads.
    // SAFETY: a slot of BLOCK_INFLIGHT from a successful lookup: array values live as long as the
    // map. Other CPUs may write it at the same time; what is read is checked (the key, read again
    // before freeing).
    let still_ours = unsafe {
        core::ptr::read_volatile(&raw const (*entry).key) == key
            && core::ptr::read_volatile(&raw const (*entry).issued_ns) == request.issued_ns
    };
    if !still_ours {
        return;
    }
    // Completed: a later completion of the same request (a partial one) finds nothing.
    // SAFETY: a slot of BLOCK_INFLIGHT from a successful lookup: array values live as long as the
    // map. Other CPUs may write it at the same time; what is read is checked (the key, read again
    // before freeing).
    unsafe {
        (*entry).inserted_ns = 0;
        (*entry).issued_ns = 0;
    }
    if request.issued_ns == 0 || from_earlier_use(&request, allocated_ns) {
        return; // issued before we were attached, or already completed
    }
    // SAFETY: a BPF helper that takes no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let histogram_key = BlockKey {
        dev: request.dev,
        op: request.op,
    };
    let Some(histograms) = histograms_for(&histogram_key) else {
        with_slot(&BLOCK_COUNTERS, |c| c.histogram_slots_taken += 1);
        return;
    };
    // SAFETY: this CPU's slot of a per-CPU array, from a successful lookup: valid while the program
    // runs, no other reference.
    let histograms = unsafe { &mut *histograms };
    if now >= request.issued_ns {
        histograms.latency.record(now - request.issued_ns);
    }
    if request.inserted_ns != 0 && request.issued_ns >= request.inserted_ns {
        histograms
            .queue
            .record(request.issued_ns - request.inserted_ns);
    }
    histograms.size.record(request.bytes as u64);
    if now >= request.issued_ns {
        charge_cgroup(&request, now - request.issued_ns);
    }
}

/// The cgroup to charge a request to: the task submitting it, when it is inserted into a queue
/// or issued directly (both run in the submitter's context; a later dispatch may run in a
/// kernel worker).
#[inline(always)]
fn submitter_cgroup() -> u64 {
    if cgroup::accounting_on() {
        cgroup::current_cgroup_id()
    } else {
        0
    }
}

/// Charges a completed read or write to the cgroup that submitted it.
#[inline(always)]
fn charge_cgroup(request: &InflightRequest, latency_ns: u64) {
    let index = match request.op {
        BLOCK_OP_READ => CGROUP_IO_READ,
        BLOCK_OP_WRITE => CGROUP_IO_WRITE,
        _ => return,
    };
    let bytes = request.bytes as u64;
    // SAFETY: `index` is CGROUP_IO_READ or CGROUP_IO_WRITE, within the two-element arrays.
    cgroup::charge(request.cgroup_id, |c| unsafe {
        add((&raw mut (*c).io_requests).cast::<u64>().add(index), 1);
        add((&raw mut (*c).io_bytes).cast::<u64>().add(index), bytes);
        add(
            (&raw mut (*c).io_time_ns).cast::<u64>().add(index),
            latency_ns,
        );
    });
}

/// This CPU's histograms of `key`: its slot in the key's set, else a free slot of the set,
/// claimed. Only `block_rq_complete` writes this array, and a program never runs nested in
/// itself on one CPU, so claiming needs no atomics.
#[inline(always)]
fn histograms_for(key: &BlockKey) -> Option<*mut BlockHistograms> {
    let first = first_slot(
        ((key.dev as u64) << 8) | key.op as u64,
        &BLOCK_HISTOGRAM_SET_BITS,
        HISTOGRAM_WAYS,
    );
    let mut free = None;
    for way in 0..HISTOGRAM_WAYS {
        // SAFETY: this CPU's slot of a per-CPU array, from a successful lookup: valid while the
        // program runs, no other reference.
        let slot = unsafe { &mut *BLOCK_HISTOGRAMS.get_ptr_mut(first + way)? };
        if slot.in_use == 0 {
            free = free.or(Some((slot, first + way)));
        } else if slot.key == *key {
            return Some(&raw mut slot.histograms);
        }
    }
    let (slot, index) = free?;
    slot.key = *key;
    // After the key, so that the daemon never reads a slot in use with another pair's key.
    // SAFETY: `slot` is a valid reference.
    unsafe { core::ptr::write_volatile(&raw mut slot.in_use, 1) };
    if let Some(used) = BLOCK_HISTOGRAM_SLOTS_USED.get_ptr_mut(index) {
        // SAFETY: an array value pointer from a successful lookup, valid while the program runs.
        unsafe { *used = 1 };
    }
    Some(&raw mut slot.histograms)
}

/// Folds the kernel's `REQ_OP_*` into the operations the metrics name.
#[inline(always)]
fn op_from_cmd_flags(cmd_flags: u32) -> u32 {
    match cmd_flags & REQ_OP_MASK {
        0 => BLOCK_OP_READ,
        1 => BLOCK_OP_WRITE,
        2 => BLOCK_OP_FLUSH,
        3 => BLOCK_OP_DISCARD,
        _ => BLOCK_OP_OTHER,
    }
}

/// `MKDEV(major, minor)` in the kernel's internal encoding, as classic records carry it.
#[inline(always)]
fn kernel_dev(major: u32, minor: u32) -> u32 {
    (major << 20) | (minor & 0xf_ffff)
}

/// The `dev_t` of the disk a `struct request *` is for, by the first path BTF showed to exist.
#[inline(always)]
fn request_dev<M: KernelMemory>(request: u64) -> u32 {
    let from_gendisk = |disk: u64| -> Option<u32> {
        let major = M::read::<i32>(disk, layout!(gendisk_major))?;
        let minor = M::read::<i32>(disk, layout!(gendisk_first_minor))?;
        Some(kernel_dev(major as u32, minor as u32))
    };
    let disk =
        if layout!(request_q) != UNKNOWN_OFFSET && layout!(request_queue_disk) != UNKNOWN_OFFSET {
            M::read::<u64>(request, layout!(request_q))
                .filter(|queue| *queue != 0)
                .and_then(|queue| M::read::<u64>(queue, layout!(request_queue_disk)))
        } else if layout!(request_rq_disk) != UNKNOWN_OFFSET {
            M::read::<u64>(request, layout!(request_rq_disk))
        } else {
            None
        };
    if let Some(disk) = disk.filter(|d| *d != 0)
        && layout!(gendisk_major) != UNKNOWN_OFFSET
        && let Some(dev) = from_gendisk(disk)
    {
        return dev;
    }
    if layout!(request_part) != UNKNOWN_OFFSET
        && let Some(part) = M::read::<u64>(request, layout!(request_part)).filter(|p| *p != 0)
        && let Some(dev) = M::read::<u32>(part, layout!(block_device_bd_dev))
    {
        return dev;
    }
    0
}

#[inline(always)]
fn pointer_key(request: u64) -> InflightKey {
    InflightKey { request, sector: 0 }
}

/// When this use of `request` was allocated (`start_time_ns`), 0 when unknown.
#[inline(always)]
fn allocated_ns<M: KernelMemory>(request: u64) -> u64 {
    if layout!(request_start_time_ns) == UNKNOWN_OFFSET {
        return 0;
    }
    M::read::<u64>(request, layout!(request_start_time_ns)).unwrap_or(0)
}

#[inline(always)]
fn issue_from_request<M: KernelMemory>(request: u64) {
    let cmd_flags = M::read::<u32>(request, layout!(request_cmd_flags)).unwrap_or(0);
    let bytes = M::read::<u32>(request, layout!(request_data_len)).unwrap_or(0);
    on_issue(
        pointer_key(request),
        request_dev::<M>(request),
        op_from_cmd_flags(cmd_flags),
        bytes,
        || allocated_ns::<M>(request),
    );
}

// ---- BTF and raw tracepoints: block_rq_insert(struct request *rq),
// block_rq_issue(struct request *rq),
// block_rq_complete(struct request *rq, blk_status_t error, unsigned int nr_bytes). ----

btf_and_raw!(
    "block_rq_insert",
    block_rq_insert_btf,
    block_rq_insert_raw,
    |ctx, Memory| {
        let request = ctx.arg(0);
        on_insert(pointer_key(request), || allocated_ns::<Memory>(request))
    }
);

btf_and_raw!(
    "block_rq_issue",
    block_rq_issue_btf,
    block_rq_issue_raw,
    |ctx, Memory| { issue_from_request::<Memory>(ctx.arg(0)) }
);

btf_and_raw!(
    "block_rq_complete",
    block_rq_complete_btf,
    block_rq_complete_raw,
    |ctx, Memory| {
        let request = ctx.arg(0);
        on_complete(pointer_key(request), || allocated_ns::<Memory>(request))
    }
);

// ---- Classic tracepoints: no request pointer, so requests are keyed by (dev, sector). ----

/// Operation from the `rwbs` string (`blk_fill_rwbs`): an optional leading `F` (pre-flush),
/// then `R`, `W`, `D` (discard; `DE` secure erase), `F` (flush) or `N` (other).
#[inline(always)]
fn op_from_rwbs(rwbs: [u8; 2]) -> u32 {
    let letter = match rwbs {
        [b'F', second @ (b'R' | b'W' | b'D' | b'F' | b'N')] => second,
        [first, _] => first,
    };
    match letter {
        b'R' => BLOCK_OP_READ,
        b'W' => BLOCK_OP_WRITE,
        b'F' => BLOCK_OP_FLUSH,
        b'D' => BLOCK_OP_DISCARD,
        _ => BLOCK_OP_OTHER,
    }
}

#[inline(always)]
fn tracepoint_key(
    ctx: &TracePointContext,
    dev_offset: u32,
    sector_offset: u32,
) -> Option<(InflightKey, u32)> {
    let dev = read_tracepoint_field::<u32>(ctx, dev_offset)?;
    let sector = read_tracepoint_field::<u64>(ctx, sector_offset)?;
    Some((
        InflightKey {
            request: dev as u64,
            sector,
        },
        dev,
    ))
}

#[tracepoint(category = "block", name = "block_rq_insert")]
pub fn block_rq_insert_tp(ctx: TracePointContext) -> u32 {
    if let Some((key, _)) =
        tracepoint_key(&ctx, layout!(tp_block_rq_dev), layout!(tp_block_rq_sector))
    {
        on_insert(key, || 0);
    }
    0
}

#[tracepoint(category = "block", name = "block_rq_issue")]
pub fn block_rq_issue_tp(ctx: TracePointContext) -> u32 {
    let Some((key, dev)) =
        tracepoint_key(&ctx, layout!(tp_block_rq_dev), layout!(tp_block_rq_sector))
    else {
        return 0;
    };
    let bytes = read_tracepoint_field::<u32>(&ctx, layout!(tp_block_rq_bytes)).unwrap_or(0);
    let rwbs = read_tracepoint_field::<[u8; 2]>(&ctx, layout!(tp_block_rq_rwbs)).unwrap_or([0; 2]);
    on_issue(key, dev, op_from_rwbs(rwbs), bytes, || 0);
    0
}

#[tracepoint(category = "block", name = "block_rq_complete")]
pub fn block_rq_complete_tp(ctx: TracePointContext) -> u32 {
    if let Some((key, _)) = tracepoint_key(
        &ctx,
        layout!(tp_block_rq_complete_dev),
        layout!(tp_block_rq_complete_sector),
    ) {
        on_complete(key, || 0);
    }
    0
}
