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
use collector_common::{
    CpuNetCounters,
    layout::UNKNOWN_OFFSET,
    net::{ICSK_TIME_LOSS_PROBE, SKB_FIRST_DROP_REASON, TCP_CA_CWR, TCP_CA_OPEN},
};

use crate::{
    layout::{layout, read_kernel_field, read_tracepoint_field},
    with_slot,
};

#[map]
static NET_COUNTERS: PerCpuArray<CpuNetCounters> = PerCpuArray::with_max_entries(1, 0);

/// Drops per CPU, indexed by `enum skb_drop_reason`; the daemon sizes it from the kernel's BTF
/// (`SKB_DROP_REASON_MAX`), so reasons added by newer kernels are counted without a rebuild.
#[map]
static SKB_DROP_REASONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// `sk` is the retransmitting socket, 0 when unknown.
#[inline(always)]
fn on_retransmit(sk: u64, err: i32) {
    let loss_probe = err == 0 && is_loss_probe(sk);
    with_slot(&NET_COUNTERS, |c| {
        if err != 0 {
            c.retransmit_failures += 1;
        } else if loss_probe {
            c.loss_probes += 1;
        } else {
            c.retransmits += 1;
        }
    });
}

/// Whether the retransmission `sk` makes now is a tail loss probe: the kernel has no tracepoint
/// for them, but sends them from the loss-probe timer (`icsk_pending` still says which timer
/// fired) and only in the Open or CWR state (`tcp_schedule_loss_probe`); fast retransmits happen
/// in Recovery, timeouts in Loss. Probe reads: the fields lie beyond `struct sock`, which is
/// all the BTF tracepoint's argument type lets a direct load reach.
#[inline(always)]
fn is_loss_probe(sk: u64) -> bool {
    let (pending_offset, bit) = (layout!(icsk_pending), layout!(icsk_ca_state_bit));
    if sk == 0 || pending_offset == UNKNOWN_OFFSET || bit == UNKNOWN_OFFSET {
        return false;
    }
    if read_kernel_field::<u8>(sk, pending_offset) != Some(ICSK_TIME_LOSS_PROBE) {
        return false;
    }
    let width = layout!(icsk_ca_state_width);
    let Some(byte) = read_kernel_field::<u8>(sk, bit / 8) else {
        return false;
    };
    // Little-endian bitfield within one byte (the daemon checks it fits).
    let state = (byte >> (bit % 8)) & (0xffu8 >> (8 - width.clamp(1, 8)));
    state == TCP_CA_OPEN || state == TCP_CA_CWR
}

#[inline(always)]
fn on_drop(reason: u32) {
    if reason < SKB_FIRST_DROP_REASON {
        return; // not dropped yet, or consumed: the normal end of a packet
    }
    match SKB_DROP_REASONS.get_ptr_mut(reason) {
        // SAFETY: a per-CPU value pointer from a successful lookup, valid while the program runs.
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
        on_retransmit(ctx.arg(0), err)
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
    let sk = read_tracepoint_field::<u64>(&ctx, layout!(tp_tcp_retransmit_skb_skaddr)).unwrap_or(0);
    on_retransmit(sk, err);
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
