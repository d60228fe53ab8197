//! `ebpf.net`: TCP retransmits and resets, and packets the kernel dropped, by drop reason.
use std::{collections::HashMap, sync::Arc};

use anyhow::Context as _;
use aya::maps::{IterableMap as _, MapData, PerCpuArray};
use collector_common::{CpuNetCounters, layout::UNKNOWN_OFFSET};

use super::reader::{EbpfCollector, MapReader};
use crate::{
    collector::{BuildContext, Collector, CollectorSpec, KernelPart},
    ebpf::runtime::{EbpfRuntime, Hook, HookType, batch::BatchReader, layout, needs_nothing},
    hook,
    metrics::MetricFamily,
};

pub static TCP_RETRANSMIT_SKB: Hook = hook!("tcp" / "tcp_retransmit_skb", requires: needs_nothing);
pub static TCP_RETRANSMIT_SYNACK: Hook =
    hook!("tcp" / "tcp_retransmit_synack", requires: needs_nothing);
pub static TCP_SEND_RESET: Hook = hook!("tcp" / "tcp_send_reset", requires: needs_nothing);
pub static TCP_RECEIVE_RESET: Hook = hook!("tcp" / "tcp_receive_reset", requires: needs_nothing);
pub static KFREE_SKB: Hook = hook!("skb" / "kfree_skb",
    requires: |layout, hook_type| match hook_type {
        // Not the generic tracefs message: the field is missing from the event before 5.17.
        HookType::Tracepoint => (layout.tp_kfree_skb_reason == UNKNOWN_OFFSET)
            .then_some("kfree_skb has no reason field (before 5.17), or its tracefs format is not readable"),
        _ => (layout.kfree_skb_has_reason == 0)
            .then_some("kfree_skb has no drop reason argument (before 5.17) or no BTF"),
    },
    // One counter per drop reason of this kernel.
    configure: |context, settings| {
        let reasons = context.kernel.drop_reasons.as_ref();
        settings.map_size("SKB_DROP_REASONS", reasons.map_or(1, |r| r.array_size));
        Ok(())
    },
);

pub static HOOKS: [&Hook; 5] = [
    &TCP_RETRANSMIT_SKB,
    &TCP_RETRANSMIT_SYNACK,
    &TCP_SEND_RESET,
    &TCP_RECEIVE_RESET,
    &KFREE_SKB,
];

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "ebpf.net",
    default_enabled: true,
    flags: &[],
    kernel: Some(&KernelPart {
        hooks: &HOOKS,
        configure: None,
    }),
    build,
};

struct NetMaps {
    counters: PerCpuArray<MapData, CpuNetCounters>,
    drop_reasons: PerCpuArray<MapData, u64>,
    drop_reasons_reader: BatchReader<u32, u64>,
    /// `enum skb_drop_reason` value → label, from the kernel's BTF.
    reasons: Vec<(u32, String)>,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    EbpfCollector::build(context, &HOOKS, HOOKS.to_vec(), |runtime| {
        let drop_reasons: PerCpuArray<MapData, u64> =
            runtime.take_map("SKB_DROP_REASONS")?.try_into()?;
        Ok(NetMaps {
            counters: runtime.take_map("NET_COUNTERS")?.try_into()?,
            drop_reasons_reader: BatchReader::new(drop_reasons.map())?,
            drop_reasons,
            reasons: runtime
                .drop_reasons()
                .map(|r| r.names.clone())
                .unwrap_or_default(),
        })
    })
}

impl MapReader for NetMaps {
    fn read(&self, runtime: &EbpfRuntime, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let attached = |hook: &Hook| runtime.attached(hook).is_some();

        let per_cpu = self.counters.get(&0, 0).context("reading NET_COUNTERS")?;
        let mut total = CpuNetCounters::default();
        for c in per_cpu.iter() {
            total.retransmits += c.retransmits;
            total.retransmit_failures += c.retransmit_failures;
            total.synack_retransmits += c.synack_retransmits;
            total.resets_sent += c.resets_sent;
            total.resets_received += c.resets_received;
            total.drops_other_reason += c.drops_other_reason;
            total.loss_probes += c.loss_probes;
        }
        let loss_probes_told = runtime
            .attached(&TCP_RETRANSMIT_SKB)
            .is_some_and(|hook_type| {
                layout::detects_loss_probes(runtime.kernel_layout(), hook_type)
            });

        let no_labels = std::iter::empty::<(&str, &str)>;
        if attached(&TCP_RETRANSMIT_SKB) || attached(&TCP_RETRANSMIT_SYNACK) {
            let mut retransmits = MetricFamily::counter(
                "ebpf_tcp_retransmits_total",
                "TCP segments retransmitted: tail loss probes that resend data (kind=\"tlp\", where the kernel's layout lets them be told apart), other data segments (kind=\"regular\") and SYN-ACKs (kind=\"synack\").",
            );
            if attached(&TCP_RETRANSMIT_SKB) {
                retransmits.push([("kind", "regular")], total.retransmits as f64);
                if loss_probes_told {
                    retransmits.push([("kind", "tlp")], total.loss_probes as f64);
                }
            }
            if attached(&TCP_RETRANSMIT_SYNACK) {
                retransmits.push([("kind", "synack")], total.synack_retransmits as f64);
            }
            out.push(retransmits);
        }
        if attached(&TCP_RETRANSMIT_SKB) {
            out.push(
                MetricFamily::counter(
                    "ebpf_tcp_retransmit_failures_total",
                    "TCP retransmissions the kernel attempted but could not send (tcp_retransmit_skb with an error, kernel 6.12+).",
                )
                .with(no_labels(), total.retransmit_failures as f64),
            );
        }
        if attached(&TCP_SEND_RESET) {
            out.push(
                MetricFamily::counter(
                    "ebpf_tcp_resets_sent_total",
                    "TCP resets (RST) sent (before kernel 6.10, only those sent from a socket: not the resets answering connections to closed ports).",
                )
                    .with(no_labels(), total.resets_sent as f64),
            );
        }
        if attached(&TCP_RECEIVE_RESET) {
            out.push(
                MetricFamily::counter(
                    "ebpf_tcp_resets_received_total",
                    "TCP resets (RST) received that reset a connection.",
                )
                .with(no_labels(), total.resets_received as f64),
            );
        }
        if attached(&KFREE_SKB) {
            let mut drops = MetricFamily::counter(
                "ebpf_skb_drops_total",
                "Packets (socket buffers) the kernel dropped, by drop reason (enum skb_drop_reason, lower-cased without its SKB_DROP_REASON_ prefix; \"other\" for reasons outside it).",
            );
            let counts: HashMap<u32, u64> = self
                .drop_reasons_reader
                .read(self.drop_reasons.map())
                .context("reading SKB_DROP_REASONS")?
                .iter()
                .map(|(reason, per_cpu)| (reason, per_cpu.iter().sum()))
                .collect();
            for (value, name) in &self.reasons {
                let count = counts.get(value).copied().unwrap_or(0);
                // Only reasons seen: the enum has ~120 members, mostly never hit.
                if count > 0 {
                    drops.push([("reason", name.as_str())], count as f64);
                }
            }
            drops.push([("reason", "other")], total.drops_other_reason as f64);
            out.push(drops);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use collector_common::KernelLayout;

    use super::*;

    #[test]
    fn a_kfree_skb_without_a_reason_field_says_so() {
        let layout = KernelLayout::UNKNOWN;
        let refusal = (KFREE_SKB.requires)(&layout, HookType::Tracepoint).unwrap();
        assert!(
            refusal.contains("no reason field (before 5.17)"),
            "{refusal}"
        );
        for hook in &HOOKS[..4] {
            assert_eq!(
                (hook.requires)(&layout, HookType::Tracepoint),
                None,
                "{hook:?}"
            );
        }
    }
}
