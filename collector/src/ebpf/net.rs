//! `ebpf.net`: TCP retransmits and resets, and packets the kernel dropped, by drop reason.
use std::{collections::HashMap, sync::Arc};

use anyhow::Context as _;
use aya::maps::{IterableMap as _, MapData, PerCpuArray};
use collector_common::CpuNetCounters;

use super::{EbpfRuntime, Hook, batch::BatchReader, layout, programs};
use crate::{
    collectors::{BuildContext, CollectorSpec},
    metrics::MetricFamily,
    scrape::Collector,
};

pub static HOOKS: [Hook; 5] = [
    Hook {
        category: "tcp",
        name: "tcp_retransmit_skb",
    },
    Hook {
        category: "tcp",
        name: "tcp_retransmit_synack",
    },
    Hook {
        category: "tcp",
        name: "tcp_send_reset",
    },
    Hook {
        category: "tcp",
        name: "tcp_receive_reset",
    },
    Hook {
        category: "skb",
        name: "kfree_skb",
    },
];

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "ebpf.net",
    default_enabled: true,
    flags: &[],
    hooks: &HOOKS,
    build,
};

struct Maps {
    counters: PerCpuArray<MapData, CpuNetCounters>,
    drop_reasons: PerCpuArray<MapData, u64>,
    drop_reasons_reader: BatchReader<u32, u64>,
}

pub struct NetCollector {
    runtime: Option<Arc<EbpfRuntime>>,
    maps: Option<Maps>,
    /// `enum skb_drop_reason` value → label, from the kernel's BTF.
    reasons: Vec<(u32, String)>,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    let maps = match &context.ebpf {
        Some(runtime) => {
            let drop_reasons: PerCpuArray<MapData, u64> =
                runtime.take_map("SKB_DROP_REASONS")?.try_into()?;
            Some(Maps {
                counters: runtime.take_map("NET_COUNTERS")?.try_into()?,
                drop_reasons_reader: BatchReader::new(drop_reasons.map())?,
                drop_reasons,
            })
        }
        None => None,
    };
    let reasons = context
        .ebpf
        .as_ref()
        .and_then(|runtime| runtime.drop_reasons())
        .map(|r| r.names.clone())
        .unwrap_or_default();
    Ok(Arc::new(NetCollector {
        runtime: context.ebpf.clone(),
        maps,
        reasons,
    }))
}

impl Collector for NetCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        programs::push_status(self.runtime.as_deref(), &HOOKS.each_ref(), out);
        let runtime = programs::require_any_attached(self.runtime.as_deref(), &HOOKS)?;
        let maps = self.maps.as_ref().context("network maps unavailable")?;
        let attached = |name: &str| {
            HOOKS
                .iter()
                .any(|h| h.name == name && runtime.attached(h).is_some())
        };

        let per_cpu = maps.counters.get(&0, 0).context("reading NET_COUNTERS")?;
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
        let retransmit_hook = &HOOKS[0];
        let loss_probes_told = runtime.attached(retransmit_hook).is_some_and(|hook_type| {
            layout::detects_loss_probes(runtime.kernel_layout(), hook_type)
        });

        let no_labels = std::iter::empty::<(&str, &str)>;
        if attached("tcp_retransmit_skb") || attached("tcp_retransmit_synack") {
            let mut retransmits = MetricFamily::counter(
                "ebpf_tcp_retransmits_total",
                "TCP segments retransmitted: tail loss probes that resend data (kind=\"tlp\", where the kernel's layout lets them be told apart), other data segments (kind=\"regular\") and SYN-ACKs (kind=\"synack\").",
            );
            if attached("tcp_retransmit_skb") {
                retransmits.push([("kind", "regular")], total.retransmits as f64);
                if loss_probes_told {
                    retransmits.push([("kind", "tlp")], total.loss_probes as f64);
                }
            }
            if attached("tcp_retransmit_synack") {
                retransmits.push([("kind", "synack")], total.synack_retransmits as f64);
            }
            out.push(retransmits);
        }
        if attached("tcp_retransmit_skb") {
            out.push(
                MetricFamily::counter(
                    "ebpf_tcp_retransmit_failures_total",
                    "TCP retransmissions the kernel attempted but could not send (tcp_retransmit_skb with an error, kernel 6.12+).",
                )
                .with(no_labels(), total.retransmit_failures as f64),
            );
        }
        if attached("tcp_send_reset") {
            out.push(
                MetricFamily::counter("ebpf_tcp_resets_sent_total", "TCP resets (RST) sent.")
                    .with(no_labels(), total.resets_sent as f64),
            );
        }
        if attached("tcp_receive_reset") {
            out.push(
                MetricFamily::counter(
                    "ebpf_tcp_resets_received_total",
                    "TCP resets (RST) received that reset a connection.",
                )
                .with(no_labels(), total.resets_received as f64),
            );
        }
        if attached("kfree_skb") {
            let mut drops = MetricFamily::counter(
                "ebpf_skb_drops_total",
                "Packets (socket buffers) the kernel dropped, by drop reason (enum skb_drop_reason, lower-cased without its SKB_DROP_REASON_ prefix; \"other\" for reasons outside it).",
            );
            let counts: HashMap<u32, u64> = maps
                .drop_reasons_reader
                .read(maps.drop_reasons.map())
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
