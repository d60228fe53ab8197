//! Network: TCP retransmits and resets, and packet drops by the kernel's drop reason.

/// TCP and drop event counts of one CPU (one slot of a per-CPU array). Drops with a known reason
/// are counted per reason in their own per-CPU array, indexed by `enum skb_drop_reason`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuNetCounters {
    /// `tcp_retransmit_skb` that sent the segment (`err == 0`; every event before 6.12, when
    /// the tracepoint fired only on success), other than tail loss probes.
    pub retransmits: u64,
    /// `tcp_retransmit_skb` whose transmission failed (`err != 0`, since 6.12).
    pub retransmit_failures: u64,
    /// `tcp_retransmit_synack`: SYN-ACKs sent again by a listener.
    pub synack_retransmits: u64,
    /// `tcp_send_reset`.
    pub resets_sent: u64,
    /// `tcp_receive_reset`.
    pub resets_received: u64,
    /// `kfree_skb` drops whose reason is beyond the reason array (subsystem-specific reasons,
    /// or a kernel newer than the array the daemon sized).
    pub drops_other_reason: u64,
    /// `tcp_retransmit_skb` sent as a tail loss probe: the loss-probe timer is what fired
    /// (`icsk_pending == ICSK_TIME_LOSS_PROBE`) and the connection is Open or in CWR.
    pub loss_probes: u64,
}

/// `ICSK_TIME_LOSS_PROBE` (`include/net/inet_connection_sock.h`, a `#define`, so not in BTF):
/// `icsk_pending` while the tail-loss-probe timer's handler runs.
pub const ICSK_TIME_LOSS_PROBE: u8 = 5;

/// `enum tcp_ca_state`: `TCP_CA_Open` (no loss suspected) and `TCP_CA_CWR` (window reduced after
/// ECN or a local congestion signal), the states a tail loss probe is sent in.
pub const TCP_CA_OPEN: u8 = 0;
pub const TCP_CA_CWR: u8 = 2;

/// `SKB_NOT_DROPPED_YET` and `SKB_CONSUMED`: `kfree_skb` events that are not drops.
pub const SKB_FIRST_DROP_REASON: u32 = 2;

#[cfg(feature = "user")]
// SAFETY: `repr(C)` struct of `u64`s, no padding, any bit pattern is valid.
unsafe impl aya::Pod for CpuNetCounters {}
