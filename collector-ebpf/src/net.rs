//! Network: TCP retransmits and resets, and packets dropped by the kernel, by drop reason.
//!
//! Everything is a per-CPU counter: these hooks fire from softirq context on every CPU, and
//! `kfree_skb` fires at packet rate during a drop storm (and, before 5.x moved consumed packets
//! to `consume_skb`, for every packet), so no event takes a shared cache line.
use aya_ebpf::{
    macros::{map, tracepoint},
    maps::PerCpuArray,
    programs::TracePointContext,
};
use collector_common::{CpuNetCounters, layout::UNKNOWN_OFFSET, net::SKB_FIRST_DROP_REASON};

use crate::{
    layout::{layout, read_tracepoint_field},
    with_slot,
};

#[map]
static NET_COUNTERS: PerCpuArray<CpuNetCounters> = PerCpuArray::with_max_entries(1, 0);

/// Drops per CPU, indexed by `enum skb_drop_reason`; the daemon sizes it from the kernel's BTF
/// (`SKB_DROP_REASON_MAX`), so reasons added by newer kernels are counted without a rebuild.
#[map]
static SKB_DROP_REASONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn on_retransmit(err: i32) {
    with_slot(&NET_COUNTERS, |c| {
        if err == 0 {
            c.retransmits += 1;
        } else {
            c.retransmit_failures += 1;
        }
    });
}

#[inline(always)]
fn on_drop(reason: u32) {
    if reason < SKB_FIRST_DROP_REASON {
        return; // not dropped yet, or consumed: the normal end of a packet
    }
    match SKB_DROP_REASONS.get_ptr_mut(reason) {
        Some(count) => unsafe { *count += 1 },
        None => with_slot(&NET_COUNTERS, |c| c.drops_other_reason += 1),
    }
}

// ---- BTF and raw tracepoints ----
// tcp_retransmit_skb(const struct sock *sk, const struct sk_buff *skb[, int err /* 6.12+ */])
// tcp_retransmit_synack(const struct sock *sk, const struct request_sock *req)
// tcp_send_reset(const struct sock *sk, const struct sk_buff *skb[, enum sk_rst_reason reason])
// tcp_receive_reset(struct sock *sk)
// kfree_skb(struct sk_buff *skb, void *location, enum skb_drop_reason reason /* 5.17+ */, ...)

btf_and_raw!(
    "tcp_retransmit_skb",
    tcp_retransmit_skb_btf,
    tcp_retransmit_skb_raw,
    |ctx| {
        let err = if layout!(tcp_retransmit_skb_has_err) != 0 {
            ctx.arg::<u64>(2) as i32
        } else {
            0
        };
        on_retransmit(err)
    }
);

btf_and_raw!(
    "tcp_retransmit_synack",
    tcp_retransmit_synack_btf,
    tcp_retransmit_synack_raw,
    |_ctx| { with_slot(&NET_COUNTERS, |c| c.synack_retransmits += 1) }
);

btf_and_raw!(
    "tcp_send_reset",
    tcp_send_reset_btf,
    tcp_send_reset_raw,
    |_ctx| { with_slot(&NET_COUNTERS, |c| c.resets_sent += 1) }
);

btf_and_raw!(
    "tcp_receive_reset",
    tcp_receive_reset_btf,
    tcp_receive_reset_raw,
    |_ctx| { with_slot(&NET_COUNTERS, |c| c.resets_received += 1) }
);

btf_and_raw!("kfree_skb", kfree_skb_btf, kfree_skb_raw, |ctx| {
    // The daemon does not attach this without the reason argument (before 5.17).
    on_drop(ctx.arg::<u64>(2) as u32)
});

// ---- Classic tracepoints ----

#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb_tp(ctx: TracePointContext) -> u32 {
    let offset = layout!(tp_tcp_retransmit_skb_err);
    let err = if offset == UNKNOWN_OFFSET {
        0 // before 6.12 the event fires only for segments sent
    } else {
        read_tracepoint_field::<i32>(&ctx, offset).unwrap_or(0)
    };
    on_retransmit(err);
    0
}

#[tracepoint(category = "tcp", name = "tcp_retransmit_synack")]
pub fn tcp_retransmit_synack_tp(_ctx: TracePointContext) -> u32 {
    with_slot(&NET_COUNTERS, |c| c.synack_retransmits += 1);
    0
}

#[tracepoint(category = "tcp", name = "tcp_send_reset")]
pub fn tcp_send_reset_tp(_ctx: TracePointContext) -> u32 {
    with_slot(&NET_COUNTERS, |c| c.resets_sent += 1);
    0
}

#[tracepoint(category = "tcp", name = "tcp_receive_reset")]
pub fn tcp_receive_reset_tp(_ctx: TracePointContext) -> u32 {
    with_slot(&NET_COUNTERS, |c| c.resets_received += 1);
    0
}

#[tracepoint(category = "skb", name = "kfree_skb")]
pub fn kfree_skb_tp(ctx: TracePointContext) -> u32 {
    if let Some(reason) = read_tracepoint_field::<u32>(&ctx, layout!(tp_kfree_skb_reason)) {
        on_drop(reason);
    }
    0
}
