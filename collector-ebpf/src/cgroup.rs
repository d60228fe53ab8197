//! Per-cgroup accounting: CPU time, run-queue waits and block I/O charged by the scheduler and
//! block programs, and socket traffic counted by cgroup_skb programs on the cgroup v2 root.
//!
//! One LRU hash keyed by cgroup id, shared by all CPUs, updated with atomic adds: the LRU bounds
//! kernel memory whatever the cgroup churn, and the daemon removes the entries of deleted cgroups.
//! The scheduler and block programs charge only when the daemon turned accounting on
//! (`CGROUP_ACCOUNTING`, read-only, so the verifier drops the code when it is off).
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_cgroup_id, bpf_skb_cgroup_id},
    macros::{cgroup_skb, map},
    maps::LruHashMap,
    programs::SkBuffContext,
};
use collector_common::CgroupCounters;

use crate::atomic::add;

/// Set to 1 by the daemon when the `ebpf.cgroup` collector is enabled.
#[unsafe(no_mangle)]
static CGROUP_ACCOUNTING: u32 = 0;

/// cgroup id → its counters. Sized by the daemon at load time.
#[map]
static CGROUP_STATS: LruHashMap<u64, CgroupCounters> = LruHashMap::with_max_entries(1, 0);

/// Whether the scheduler and block programs should charge cgroups.
#[inline(always)]
pub fn accounting_on() -> bool {
    unsafe { core::ptr::read_volatile(&raw const CGROUP_ACCOUNTING) != 0 }
}

/// The cgroup v2 id of the current task.
#[inline(always)]
pub fn current_cgroup_id() -> u64 {
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

/// Charges the current task's cgroup for a run that has just ended.
#[inline(always)]
pub fn charge_run(cpu_ns: u64, wait_ns: u64, waits: u64) {
    charge(
        current_cgroup_id(),
        #[inline(always)]
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
    let cgroup_id = unsafe { bpf_skb_cgroup_id(skb) };
    let bytes = ctx.len() as u64;
    let segments = unsafe { (*skb).gso_segs }.max(1) as u64;
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
