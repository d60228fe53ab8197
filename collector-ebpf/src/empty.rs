//! Programs that return at once, on every hook the collector uses. The daemon attaches them
//! instead of its own with `--ebpf.empty-programs`, so that the benchmark can measure, on the
//! same kernel and in the same run, what attaching anything at all to these hooks costs: the
//! floor under the collector's own cost.
use aya_ebpf::{
    macros::{cgroup_skb, tracepoint},
    programs::{SkBuffContext, TracePointContext},
};

/// The three flavours of the empty program for each hook, named as the collector's own plus
/// `_empty`.
macro_rules! empty {
    ($($category:literal / $tracepoint:literal => $btf:ident, $raw:ident, $classic:ident;)*) => {
        $(
            btf_and_raw!($tracepoint, $btf, $raw, |_ctx| {});

            #[tracepoint(category = $category, name = $tracepoint)]
            pub fn $classic(_ctx: TracePointContext) -> u32 {
                0
            }
        )*
    };
}

empty! {
    "sched" / "sched_switch" => sched_switch_btf_empty, sched_switch_raw_empty, sched_switch_tp_empty;
    "sched" / "sched_wakeup" => sched_wakeup_btf_empty, sched_wakeup_raw_empty, sched_wakeup_tp_empty;
    "sched" / "sched_wakeup_new" =>
        sched_wakeup_new_btf_empty, sched_wakeup_new_raw_empty, sched_wakeup_new_tp_empty;
    "sched" / "sched_migrate_task" =>
        sched_migrate_task_btf_empty, sched_migrate_task_raw_empty, sched_migrate_task_tp_empty;
    "block" / "block_rq_insert" =>
        block_rq_insert_btf_empty, block_rq_insert_raw_empty, block_rq_insert_tp_empty;
    "block" / "block_rq_issue" =>
        block_rq_issue_btf_empty, block_rq_issue_raw_empty, block_rq_issue_tp_empty;
    "block" / "block_rq_complete" =>
        block_rq_complete_btf_empty, block_rq_complete_raw_empty, block_rq_complete_tp_empty;
    "irq" / "irq_handler_entry" =>
        irq_handler_entry_btf_empty, irq_handler_entry_raw_empty, irq_handler_entry_tp_empty;
    "irq" / "irq_handler_exit" =>
        irq_handler_exit_btf_empty, irq_handler_exit_raw_empty, irq_handler_exit_tp_empty;
    "irq" / "softirq_entry" => softirq_entry_btf_empty, softirq_entry_raw_empty, softirq_entry_tp_empty;
    "irq" / "softirq_exit" => softirq_exit_btf_empty, softirq_exit_raw_empty, softirq_exit_tp_empty;
    "tcp" / "tcp_retransmit_skb" =>
        tcp_retransmit_skb_btf_empty, tcp_retransmit_skb_raw_empty, tcp_retransmit_skb_tp_empty;
    "tcp" / "tcp_retransmit_synack" => tcp_retransmit_synack_btf_empty,
        tcp_retransmit_synack_raw_empty, tcp_retransmit_synack_tp_empty;
    "tcp" / "tcp_send_reset" => tcp_send_reset_btf_empty, tcp_send_reset_raw_empty, tcp_send_reset_tp_empty;
    "tcp" / "tcp_receive_reset" =>
        tcp_receive_reset_btf_empty, tcp_receive_reset_raw_empty, tcp_receive_reset_tp_empty;
    "skb" / "kfree_skb" => kfree_skb_btf_empty, kfree_skb_raw_empty, kfree_skb_tp_empty;
}

/// Lets every packet through, as the collector's own do.
#[cgroup_skb(ingress)]
pub fn cgroup_skb_ingress_empty(_ctx: SkBuffContext) -> i32 {
    1
}

#[cgroup_skb(egress)]
pub fn cgroup_skb_egress_empty(_ctx: SkBuffContext) -> i32 {
    1
}
