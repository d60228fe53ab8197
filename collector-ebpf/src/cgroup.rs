//! Per-cgroup accounting: CPU time, run-queue waits and block I/O charged by the scheduler and
//! block programs, and socket traffic counted by cgroup_skb programs on the cgroup v2 root.
//!
//! One LRU hash keyed by cgroup id, shared by all CPUs, updated with atomic adds: the LRU bounds
//! kernel memory whatever the cgroup churn, and the daemon removes the entries of deleted cgroups.
//! Runs and waits, charged at every context switch, gather per CPU first (`CPU_CHARGES`).
//! The scheduler and block programs charge only when the daemon turned accounting on
//! (`CGROUP_ACCOUNTING`, read-only, so the verifier drops the code when it is off).
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_cgroup_id, bpf_skb_cgroup_id},
    macros::{cgroup_skb, map},
    maps::{LruHashMap, PerCpuArray},
    programs::SkBuffContext,
};
use collector_common::{
    CgroupCounters, CpuCharges,
    cgroup::{
        CHARGE_AFTER_CPU_NS, CHARGE_AFTER_WAIT_NS, CHARGE_AFTER_WAITS, PENDING_SLOTS,
        PendingCharge, RunningTask,
    },
    layout::UNKNOWN_OFFSET,
};

use crate::{
    atomic::add,
    layout::{layout, read_trusted_field},
    with_slot,
};

/// Set to 1 by the daemon when the `ebpf.cgroup` collector is enabled.
#[unsafe(no_mangle)]
static CGROUP_ACCOUNTING: u32 = 0;

/// cgroup id → its counters. Sized by the daemon at load time.
#[map]
static CGROUP_STATS: LruHashMap<u64, CgroupCounters> = LruHashMap::with_max_entries(1, 0);

/// Per CPU, the run in progress and the runs and waits of a few cgroups not yet added to
/// `CGROUP_STATS`. Only `sched_switch` uses it, with interrupts off, so plain read-modify-writes
/// are safe.
#[map]
static CPU_CHARGES: PerCpuArray<CpuCharges> = PerCpuArray::with_max_entries(1, 0);

/// Whether the scheduler and block programs should charge cgroups.
#[inline(always)]
pub fn accounting_on() -> bool {
    // SAFETY: a global of the object, alive as long as the program.
    unsafe { core::ptr::read_volatile(&raw const CGROUP_ACCOUNTING) != 0 }
}

/// The cgroup v2 id of the current task.
#[inline(always)]
pub fn current_cgroup_id() -> u64 {
    // SAFETY: a BPF helper that takes no arguments.
    unsafe { bpf_get_current_cgroup_id() }
}

/// Applies `update` to the counters of `cgroup_id`, creating them (zeroed) on first use. A raw
/// pointer, not a reference: other CPUs update the same counters at the same time, so `update`
/// must only use atomic adds (`crate::atomic::add`) on its fields.
#[inline(always)]
pub fn charge(cgroup_id: u64, update: impl FnOnce(*mut CgroupCounters)) {
    if cgroup_id == 0 {
        return;
    }
    let counters = match CGROUP_STATS.get_ptr_mut(cgroup_id) {
        Some(counters) => counters,
        None => {
            // Fails only when another CPU created it first; the LRU makes room otherwise.
            let _ = CGROUP_STATS.insert(cgroup_id, CgroupCounters::default(), BPF_NOEXIST as u64);
            match CGROUP_STATS.get_ptr_mut(cgroup_id) {
                Some(counters) => counters,
                None => return,
            }
        }
    };
    update(counters);
}

/// The cgroup v2 id of `task`, a task pointer the verifier trusts (a BTF tracepoint argument),
/// with four loads instead of a helper call; the helper (for `current`) where the kernel's BTF
/// lacks the path.
///
/// # Safety
///
/// `task` must be a trusted BTF pointer, and `current` when the path is unknown.
#[inline(always)]
pub unsafe fn task_cgroup_id(task: u64) -> u64 {
    if layout!(kernfs_node_id) == UNKNOWN_OFFSET {
        return current_cgroup_id();
    }
    // SAFETY: BTF arguments, and pointers loaded from them, at KERNEL_LAYOUT offsets.
    unsafe {
        let css_set = read_trusted_field::<u64>(task, layout!(task_cgroups));
        let cgroup = read_trusted_field::<u64>(css_set, layout!(css_set_dfl_cgrp));
        let kernfs_node = read_trusted_field::<u64>(cgroup, layout!(cgroup_kn));
        read_trusted_field::<u64>(kernfs_node, layout!(kernfs_node_id))
    }
}

/// At a context switch on this CPU: charges the run that ends `now` to `prev_cgroup` (the cgroup
/// of the task leaving, if it is a task and not the idle loop), with the wait that preceded it,
/// and starts timing `next`'s run, which followed a wait of `next_wait_ns` (`next_waited`: 1 if
/// one was seen). `now` is on whichever clock the caller times runs with.
///
/// Plain values only: a zero-sized closure or an `Option` captured by the closure below becomes,
/// when LLVM does not inline it, a zero-sized BTF member past its environment's end or an
/// uninitialised register, and the kernel refuses the object or the program.
#[inline(always)]
pub fn charge_switch(
    prev_cgroup: u64,
    prev_is_task: bool,
    prev_exits: bool,
    next_is_task: bool,
    next_wait_ns: u64,
    next_waited: u64,
    now: u64,
) {
    // Without the attribute LLVM makes the closure a BPF-to-BPF call, its captures spilled to
    // the stack.
    with_slot(
        &CPU_CHARGES,
        #[inline(always)]
        |charges| {
            let running = charges.running;
            if prev_is_task && running.switched_in_ns != 0 && now >= running.switched_in_ns {
                charge_run(
                    &mut charges.pending,
                    prev_cgroup,
                    now - running.switched_in_ns,
                    running.wait_ns,
                    running.waited,
                    prev_exits,
                );
            }
            charges.running = RunningTask {
                switched_in_ns: if next_is_task { now } else { 0 },
                wait_ns: next_wait_ns,
                waited: next_waited,
            };
        },
    );
}

/// Charges `cgroup_id` for a run and the wait before it. The charge gathers in the cgroup's
/// pending slot and reaches its counters in batches (`CHARGE_AFTER_*`), at once when
/// `last_run` (its task exits).
#[inline(always)]
fn charge_run(
    pending: &mut [PendingCharge; PENDING_SLOTS],
    cgroup_id: u64,
    cpu_ns: u64,
    wait_ns: u64,
    waits: u64,
    last_run: bool,
) {
    if cgroup_id == 0 {
        return;
    }
    let Some(slot) = pending.get_mut(cgroup_id as usize & (PENDING_SLOTS - 1)) else {
        return;
    };
    if slot.cgroup_id != cgroup_id {
        flush(slot);
        slot.cgroup_id = cgroup_id;
    }
    slot.cpu_ns += cpu_ns;
    slot.wait_ns += wait_ns;
    slot.waits += waits;
    if last_run
        || slot.cpu_ns >= CHARGE_AFTER_CPU_NS
        || slot.wait_ns >= CHARGE_AFTER_WAIT_NS
        || slot.waits >= CHARGE_AFTER_WAITS
    {
        flush(slot);
    }
}

/// Adds a pending slot's charges to its cgroup's counters and empties it.
#[inline(always)]
fn flush(slot: &mut PendingCharge) {
    if slot.cpu_ns == 0 && slot.waits == 0 {
        return;
    }
    let cpu_ns = core::mem::take(&mut slot.cpu_ns);
    let wait_ns = core::mem::take(&mut slot.wait_ns);
    let waits = core::mem::take(&mut slot.waits);
    charge(
        slot.cgroup_id,
        #[inline(always)]
        // SAFETY: `c` is the cgroup's map value from a successful lookup, valid while the program
        // runs; `add` is atomic, as other CPUs write it too.
        |c| unsafe {
            add(&raw mut (*c).cpu_ns, cpu_ns);
            if waits != 0 {
                add(&raw mut (*c).runqueue_wait_ns, wait_ns);
                add(&raw mut (*c).runqueue_waits, waits);
            }
        },
    );
}

/// Counts one packet of `skb`'s socket cgroup; GSO/GRO super-packets count as their segments.
#[inline(always)]
fn count_packet(ctx: &SkBuffContext, transmit: bool) {
    let skb = ctx.skb.skb;
    // SAFETY: the helper reads the context's own socket buffer.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(skb) };
    let bytes = ctx.len() as u64;
    // SAFETY: the context's socket buffer, valid while the program runs.
    let segments = unsafe { (*skb).gso_segs }.max(1) as u64;
    // SAFETY: `c` is the cgroup's map value from a successful lookup, valid while the program runs;
    // `add` is atomic, as other CPUs write it too.
    charge(cgroup_id, |c| unsafe {
        if transmit {
            add(&raw mut (*c).net_transmit_bytes, bytes);
            add(&raw mut (*c).net_transmit_packets, segments);
        } else {
            add(&raw mut (*c).net_receive_bytes, bytes);
            add(&raw mut (*c).net_receive_packets, segments);
        }
    });
}

/// Attached to the cgroup v2 root (allowing others' programs alongside): sees every socket's
/// incoming packets, and lets them all through (returns 1).
#[cgroup_skb(ingress)]
pub fn cgroup_skb_ingress(ctx: SkBuffContext) -> i32 {
    count_packet(&ctx, false);
    1
}

#[cgroup_skb(egress)]
pub fn cgroup_skb_egress(ctx: SkBuffContext) -> i32 {
    count_packet(&ctx, true);
    1
}
