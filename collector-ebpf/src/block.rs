//! Block I/O: request latency (issue → completion), queue time (insert → issue) and size, per
//! disk and operation.
//!
//! Insert and issue remember the request in an LRU hash shared by all CPUs (completion usually
//! runs on another CPU, in the interrupt); completion records all three histograms at once, so a
//! request costs one lookup of the per-CPU histogram map. Our own timestamps are used rather
//! than `request.io_start_time_ns`, which the kernel fills in only with I/O statistics on.
//!
//! The BTF and raw programs key requests by their `struct request` pointer. Requests are
//! allocated once per tag of each hardware and scheduler queue and reused, so an entry is
//! written over in place at the request's next use instead of being deleted at completion and
//! created again: a lookup instead of an LRU delete and insert (about 30% less per request). The
//! daemon sizes the map for every tag of every disk. Classic tracepoints key by (disk, sector),
//! which does not repeat, so their entries are deleted.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::bpf_ktime_get_ns,
    macros::{map, tracepoint},
    maps::{Array, LruHashMap, PerCpuArray, PerCpuHashMap},
    programs::TracePointContext,
};
use collector_common::{
    BlockHistograms, BlockKey, CpuBlockCounters, InflightKey, InflightRequest,
    block::{
        BLOCK_OP_DISCARD, BLOCK_OP_FLUSH, BLOCK_OP_OTHER, BLOCK_OP_READ, BLOCK_OP_WRITE,
        REQ_OP_MASK,
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

/// What is known of each request since its insert or issue, by key (see the module doc). LRU,
/// sized by the daemon from the disks' tag counts: a key whose completion never comes (a
/// request merged into another, classic keys of requests issued before we attached) is evicted
/// instead of leaking.
#[map]
static BLOCK_INFLIGHT: LruHashMap<InflightKey, InflightRequest> =
    LruHashMap::with_max_entries(8192, 0);

/// Histograms per (disk, operation), one copy per CPU. Not LRU: an evicted entry would make its
/// counters go backwards. Full → counted in `CpuBlockCounters::histogram_map_full`.
#[map]
static BLOCK_HISTOGRAMS: PerCpuHashMap<BlockKey, BlockHistograms> =
    PerCpuHashMap::with_max_entries(1024, 0);

/// One all-zero `BlockHistograms`, never written: the initial value of new histogram entries
/// (the struct does not fit on the 512-byte BPF stack).
#[map]
static BLOCK_HISTOGRAMS_ZERO: Array<BlockHistograms> = Array::with_max_entries(1, 0);

#[map]
static BLOCK_COUNTERS: PerCpuArray<CpuBlockCounters> = PerCpuArray::with_max_entries(1, 0);

/// How a request's entry ends, by how requests are keyed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Keys {
    /// `struct request` pointers: reused, so entries are kept and written over.
    Reused,
    /// (disk, sector): deleted at completion.
    OneOff,
}

/// Whether a kept entry is of an earlier use of its `struct request`: the kernel stamps each
/// use at allocation (`start_time_ns`, on our clock; `allocated_ns` gives 0 when unknown), and
/// all we record of a use comes after. Catches the entries no completion closed: a request
/// merged into another, or a completion we missed. The stamp is read only when asked.
#[inline(always)]
fn from_earlier_use(entry: &InflightRequest, allocated_ns: impl FnOnce() -> u64) -> bool {
    let allocated_ns = allocated_ns();
    allocated_ns != 0 && entry.inserted_ns.max(entry.issued_ns) < allocated_ns
}

#[inline(always)]
fn on_insert(key: InflightKey, allocated_ns: impl FnOnce() -> u64) {
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(entry) = BLOCK_INFLIGHT.get_ptr_mut(key) {
        let entry = unsafe { &mut *entry };
        if entry.issued_ns == 0 || from_earlier_use(entry, allocated_ns) {
            // A kept entry of a completed request, or of an earlier use: a new request.
            entry.cgroup_id = submitter_cgroup();
        }
        // Otherwise requeued after its issue and inserted again by a kernel worker: it waits
        // in the queue again, still on behalf of the task that submitted it.
        entry.inserted_ns = now;
        entry.issued_ns = 0;
        return;
    }
    let request = InflightRequest {
        inserted_ns: now,
        cgroup_id: submitter_cgroup(),
        ..InflightRequest::default()
    };
    if BLOCK_INFLIGHT.insert(key, request, 0).is_err() {
        with_slot(&BLOCK_COUNTERS, |c| c.inflight_map_full += 1);
    }
}

#[inline(always)]
fn on_issue(key: InflightKey, dev: u32, op: u32, bytes: u32, allocated_ns: impl FnOnce() -> u64) {
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(request) = BLOCK_INFLIGHT.get_ptr_mut(key) {
        let request = unsafe { &mut *request };
        // A kept entry of a completed request or of an earlier use: this one is issued
        // directly (no queue time) by the task submitting it. Otherwise it was inserted, or
        // it is issued again after the driver was busy (no insert in between): its queue
        // time and cgroup stand.
        if (request.inserted_ns == 0 && request.issued_ns == 0)
            || from_earlier_use(request, allocated_ns)
        {
            request.inserted_ns = 0;
            request.cgroup_id = submitter_cgroup();
        }
        request.issued_ns = now;
        request.dev = dev;
        request.op = op;
        request.bytes = bytes;
        return;
    }
    // Issued directly, without passing through a scheduler queue: no queue time.
    let request = InflightRequest {
        inserted_ns: 0,
        issued_ns: now,
        bytes,
        dev,
        op,
        _pad: 0,
        cgroup_id: submitter_cgroup(),
    };
    if BLOCK_INFLIGHT.insert(key, request, 0).is_err() {
        with_slot(&BLOCK_COUNTERS, |c| c.inflight_map_full += 1);
    }
}

#[inline(always)]
fn on_complete(key: InflightKey, keys: Keys, allocated_ns: impl FnOnce() -> u64) {
    let Some(entry) = BLOCK_INFLIGHT.get_ptr_mut(key) else {
        return; // issued before we were attached, or evicted
    };
    let request = unsafe { *entry };
    match keys {
        // Completed: a later completion of the same request (a partial one) finds nothing.
        Keys::Reused => unsafe {
            (*entry).inserted_ns = 0;
            (*entry).issued_ns = 0;
        },
        Keys::OneOff => {
            let _ = BLOCK_INFLIGHT.remove(key);
        }
    }
    if request.issued_ns == 0 || from_earlier_use(&request, allocated_ns) {
        return; // issued before we were attached, or already completed
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let histogram_key = BlockKey {
        dev: request.dev,
        op: request.op,
    };
    let Some(histograms) = histograms_for(&histogram_key) else {
        with_slot(&BLOCK_COUNTERS, |c| c.histogram_map_full += 1);
        return;
    };
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

/// This CPU's histograms of `key`, creating the entry (zeroed) on first use.
#[inline(always)]
fn histograms_for(key: &BlockKey) -> Option<*mut BlockHistograms> {
    if let Some(histograms) = BLOCK_HISTOGRAMS.get_ptr_mut(key) {
        return Some(histograms);
    }
    let zero = BLOCK_HISTOGRAMS_ZERO.get(0)?;
    // Fails when full, or when another CPU created it first: the second lookup tells which.
    let _ = BLOCK_HISTOGRAMS.insert(key, zero, BPF_NOEXIST as u64);
    BLOCK_HISTOGRAMS.get_ptr_mut(key)
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
        on_complete(pointer_key(request), Keys::Reused, || {
            allocated_ns::<Memory>(request)
        })
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
        on_complete(key, Keys::OneOff, || 0);
    }
    0
}
