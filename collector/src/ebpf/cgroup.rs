//! `ebpf.cgroup`: CPU time, run-queue waits, block I/O and network traffic per cgroup v2 cgroup,
//! labelled with the Kubernetes pod and container the cgroup belongs to.
//!
//! The kernel counts per cgroup id (`CGROUP_STATS`, charged by the scheduler and block programs
//! and by cgroup_skb programs on the cgroup v2 root). At scrape time the ids are turned into
//! paths, paths into pods and containers (`cgroups::identity`, and the Kubernetes API when in a
//! cluster), and `cgroups::tracker` bounds how many are exported.
use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::{
    maps::{HashMap as BpfHashMap, IterableMap as _, MapData},
    programs::CgroupSkbAttachType,
};
use collector_common::{
    CgroupCounters,
    cgroup::{CGROUP_IO_READ, CGROUP_IO_WRITE},
};

use super::{
    block,
    reader::{EbpfCollector, MapReader},
    sched,
};
use crate::{
    cgroups::{
        fs::{self, CgroupFs},
        kubernetes::{self, PodMetadata, Pods},
        tracker::{Limits, Tracker},
    },
    collector::{BuildContext, Collector, CollectorSpec, KernelPart},
    ebpf::runtime::{
        ConfigureContext, EbpfRuntime, Hook, ObjectSettings, batch::BatchReader,
        loader::CgroupSkbProgram, lru_entries, status::ProgramStatus,
    },
    flags::{CollectorFlags, FlagSpec},
    metrics::MetricFamily,
};

/// The hooks that charge cgroups (shared with `ebpf.sched` and `ebpf.block`); the raw and classic
/// flavours time run-queue waits from the wake-ups.
pub static HOOKS: [&Hook; 6] = [
    &sched::SCHED_SWITCH,
    &sched::SCHED_WAKEUP,
    &sched::SCHED_WAKEUP_NEW,
    &block::BLOCK_RQ_INSERT,
    &block::BLOCK_RQ_ISSUE,
    &block::BLOCK_RQ_COMPLETE,
];

/// The programs counting each cgroup's socket traffic, attached to the cgroup v2 root.
pub static CGROUP_SKB_PROGRAMS: [CgroupSkbProgram; 2] = [
    CgroupSkbProgram {
        name: "cgroup_skb_ingress",
        empty: "cgroup_skb_ingress_empty",
        attach_type: CgroupSkbAttachType::Ingress,
    },
    CgroupSkbProgram {
        name: "cgroup_skb_egress",
        empty: "cgroup_skb_egress_empty",
        attach_type: CgroupSkbAttachType::Egress,
    },
];

const MAX_CGROUPS: &str = "collector.ebpf.cgroup.max-cgroups";
const GRACE_PERIOD: &str = "collector.ebpf.cgroup.grace-period";
const ROOT: &str = "collector.ebpf.cgroup.root";
const KUBERNETES: &str = "collector.ebpf.cgroup.kubernetes";
const KUBECONFIG: &str = "collector.ebpf.cgroup.kubeconfig";
const NODE_NAME: &str = "collector.ebpf.cgroup.node-name";

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "ebpf.cgroup",
    default_enabled: true,
    flags: &[
        FlagSpec::value(
            MAX_CGROUPS,
            Some("1000"),
            "Most cgroups exported at once; further ones wait for a place (ebpf_cgroups_dropped_total{reason=\"limit\"}).",
        ),
        FlagSpec::value(
            GRACE_PERIOD,
            Some("5m"),
            "How long the series of a removed cgroup are still exported.",
        ),
        FlagSpec::value(
            ROOT,
            None,
            "cgroup v2 mount point (default: found in the mount table, preferring one under --path.sysfs).",
        ),
        FlagSpec::value(
            KUBERNETES,
            Some("auto"),
            "Pod namespace, name and container names from the Kubernetes API: auto (when running in a cluster, or with --collector.ebpf.cgroup.kubeconfig), on or off.",
        ),
        FlagSpec::value(
            KUBECONFIG,
            None,
            "kubeconfig file for the Kubernetes API (default: the in-cluster service account).",
        ),
        FlagSpec::value(
            NODE_NAME,
            None,
            "This node's name in Kubernetes, whose pods are watched (default: $NODE_NAME, else the host name).",
        ),
    ],
    kernel: Some(&KernelPart {
        hooks: &HOOKS,
        configure: Some(configure),
    }),
    build,
};

/// Checks the flags (a bad value stops the daemon at start, naming the flag) and sizes the
/// kernel map: room for the exported cgroups plus the churn of short-lived ones between two
/// scrapes. Without a cgroup v2 hierarchy to attribute to, accounting stays off in the kernel,
/// and building the collector reports why.
fn configure(context: &ConfigureContext<'_>, settings: &mut ObjectSettings) -> anyhow::Result<()> {
    let flags = context.flags;
    let max = max_cgroups(flags)?;
    grace_period(flags)?;
    kubernetes::Mode::from_flag(flags.string(KUBERNETES).unwrap_or("auto"))?;
    if fs::find_root(flags.string(ROOT).map(Path::new), context.sysfs).is_err() {
        return Ok(());
    }
    let entries = u32::try_from(max.saturating_mul(4))
        .unwrap_or(u32::MAX)
        .max(1024);
    settings.global("CGROUP_ACCOUNTING", 1);
    settings.map_size("CGROUP_STATS", lru_entries(entries, context.possible_cpus));
    Ok(())
}

/// The most `--collector.ebpf.cgroup.max-cgroups` allows: the kernel map is four times as large
/// and preallocated, and a map the kernel cannot create would stop every eBPF collector.
const MAX_CGROUPS_LIMIT: usize = 100_000;

fn max_cgroups(flags: &CollectorFlags) -> anyhow::Result<usize> {
    let value = flags.string(MAX_CGROUPS).unwrap_or("1000");
    value
        .parse::<usize>()
        .ok()
        .filter(|&n| (1..=MAX_CGROUPS_LIMIT).contains(&n))
        .with_context(|| {
            format!("--{MAX_CGROUPS}={value}: expected a number of cgroups from 1 to {MAX_CGROUPS_LIMIT}")
        })
}

fn grace_period(flags: &CollectorFlags) -> anyhow::Result<Duration> {
    let value = flags.string(GRACE_PERIOD).unwrap_or("5m");
    humantime::parse_duration(value)
        .with_context(|| format!("--{GRACE_PERIOD}={value}: expected a duration such as 5m or 30s"))
}

struct State {
    counters: BpfHashMap<MapData, u64, CgroupCounters>,
    reader: BatchReader<u64, CgroupCounters>,
    tracker: Tracker,
}

struct CgroupReader {
    state: Mutex<State>,
    hierarchy: CgroupFs,
    /// Whether the cgroup_skb programs are attached (network traffic is counted).
    network_attached: bool,
    pods: Option<Pods>,
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    let flags = &context.flags;
    let limits = Limits {
        max_cgroups: max_cgroups(flags)?,
        grace_period: grace_period(flags)?,
    };
    let root = fs::find_root(flags.string(ROOT).map(Path::new), &context.sysfs)?;
    let hierarchy = CgroupFs::open(&root)?;
    tracing::info!(root = %root.display(), "cgroup v2 hierarchy");
    let pods = Pods::from_flags(
        kubernetes::Mode::from_flag(flags.string(KUBERNETES).unwrap_or("auto"))?,
        flags.string(KUBECONFIG),
        flags.string(NODE_NAME),
    )?;
    // The hooks no other enabled collector reports on.
    let status_hooks = HOOKS
        .iter()
        .copied()
        .filter(|hook| !context.hook_used_elsewhere(SPEC.name, hook))
        .collect();
    EbpfCollector::build(context, &HOOKS, status_hooks, |runtime| {
        // The map first: programs attached for a map nobody reads would count for nothing.
        let counters: BpfHashMap<MapData, u64, CgroupCounters> =
            runtime.take_map("CGROUP_STATS")?.try_into()?;
        let network_attached = match std::fs::File::open(&root)
            .map_err(anyhow::Error::from)
            .and_then(|dir| runtime.attach_cgroup_skb(&dir, &CGROUP_SKB_PROGRAMS))
        {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(
                    err = format!("{e:#}"),
                    "per-cgroup network traffic unavailable (cgroup_skb refused)"
                );
                false
            }
        };
        Ok(CgroupReader {
            state: Mutex::new(State {
                reader: BatchReader::new(counters.map())?,
                counters,
                tracker: Tracker::new(limits),
            }),
            hierarchy,
            network_attached,
            pods,
        })
    })
}

/// Labels of one cgroup's series, in order. `pod_namespace`, `pod_name` and `container_name`
/// rather than Kubernetes' `namespace`, `pod` and `container`: scrape configs set those target
/// labels to the collector's own pod, which would rename ours to `exported_*`.
const LABELS: [&str; 8] = [
    "cgroup",
    "container_id",
    "container_name",
    "container_runtime",
    "pod_name",
    "pod_namespace",
    "pod_uid",
    "qos_class",
];

impl MapReader for CgroupReader {
    fn read(&self, _runtime: &EbpfRuntime, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        let mut state = self.state.lock().expect("cgroup state lock poisoned");
        let State {
            counters,
            reader,
            tracker,
        } = &mut *state;

        // The batch walks bucket by bucket: an id appears once even when the LRU evicts under it.
        let entries: HashMap<u64, CgroupCounters> = reader
            .read(counters.map())
            .context("reading CGROUP_STATS")?
            .iter()
            .map(|(id, values)| (id, values[0]))
            .collect();
        let ids: Vec<u64> = entries.keys().copied().collect();
        let update = tracker.update(&ids, Instant::now(), &self.hierarchy);
        for id in &update.forget {
            // Already gone (evicted) is fine too.
            let _ = counters.remove(id);
        }
        for (id, reason) in &update.unresolvable {
            tracing::warn!(
                cgroup_id = id,
                reason,
                "cgroup skipped: its path cannot be read (counted as reason unresolvable in ebpf_cgroups_dropped_total)"
            );
        }
        if let Some(error) = update.error {
            return Err(error.context("resolving new cgroup ids"));
        }

        let mut families = Families::new(self.network_attached);
        let mut exported = 0;
        let no_metadata = PodMetadata::default();
        for (id, cgroup) in tracker.exported_mut() {
            let Some(c) = entries.get(&id) else { continue };
            if cgroup.metadata.is_none()
                && let Some(pods) = &self.pods
            {
                cgroup.metadata = pods.lookup(&cgroup.identity);
            }
            let metadata = cgroup.metadata.as_ref().unwrap_or(&no_metadata);
            let identity = &cgroup.identity;
            let runtime = if identity.container_runtime.is_empty() {
                metadata.container_runtime.as_str()
            } else {
                identity.container_runtime.as_str()
            };
            let labels = [
                cgroup.path.as_str(),
                identity.container_id.as_str(),
                metadata.container.as_str(),
                runtime,
                metadata.pod.as_str(),
                metadata.namespace.as_str(),
                identity.pod_uid.as_str(),
                identity.qos_class.as_str(),
            ];
            families.push(&labels, c);
            exported += 1;
        }
        families.append_to(out);

        out.push(
            MetricFamily::gauge(
                "ebpf_cgroups_exported",
                "cgroups whose series are exported (at most --collector.ebpf.cgroup.max-cgroups).",
            )
            .with_value(exported as f64),
        );
        let dropped = tracker.dropped();
        let mut family = MetricFamily::counter(
            "ebpf_cgroups_dropped_total",
            "cgroups not exported: refused a place because the limit was reached (reason=\"limit\"), removed and dropped after the grace period or sooner for a live cgroup or the same path created again (reason=\"removed\"), or live with a path that cannot be read, longer than PATH_MAX (reason=\"unresolvable\").",
        );
        family.push([("reason", "limit")], dropped.over_limit as f64);
        family.push([("reason", "removed")], dropped.removed as f64);
        family.push([("reason", "unresolvable")], dropped.unresolvable as f64);
        out.push(family);
        Ok(())
    }

    /// The cgroup_skb programs: attached as `cgroup_skb`, or not at all.
    fn other_programs(reader: Option<&Self>, runtime: Option<&EbpfRuntime>) -> Vec<ProgramStatus> {
        let attached = reader.is_some_and(|r| r.network_attached);
        CGROUP_SKB_PROGRAMS
            .iter()
            .map(|program| ProgramStatus {
                label: program.name,
                attached_as: attached.then_some("cgroup_skb"),
                program: runtime.map_or(program.name, |r| r.cgroup_skb_program_name(program)),
            })
            .collect()
    }
}

/// The per-cgroup families of one scrape.
struct Families {
    network: bool,
    cpu: MetricFamily,
    wait: MetricFamily,
    waits: MetricFamily,
    io_requests: MetricFamily,
    io_bytes: MetricFamily,
    io_time: MetricFamily,
    receive_bytes: MetricFamily,
    receive_packets: MetricFamily,
    transmit_bytes: MetricFamily,
    transmit_packets: MetricFamily,
}

impl Families {
    fn new(network: bool) -> Self {
        Self {
            network,
            cpu: MetricFamily::counter(
                "ebpf_cgroup_cpu_seconds_total",
                "Time the cgroup's tasks ran on a CPU.",
            ),
            wait: MetricFamily::counter(
                "ebpf_cgroup_runqueue_wait_seconds_total",
                "Time the cgroup's tasks waited on a CPU run queue while runnable.",
            ),
            waits: MetricFamily::counter(
                "ebpf_cgroup_runqueue_waits_total",
                "Run-queue waits of the cgroup's tasks (runs after a wait), the count for ebpf_cgroup_runqueue_wait_seconds_total.",
            ),
            io_requests: MetricFamily::counter(
                "ebpf_cgroup_block_io_requests_total",
                "Block I/O requests the cgroup's tasks submitted that completed, by operation.",
            ),
            io_bytes: MetricFamily::counter(
                "ebpf_cgroup_block_io_bytes_total",
                "Bytes of the cgroup's completed block I/O requests, by operation.",
            ),
            io_time: MetricFamily::counter(
                "ebpf_cgroup_block_io_time_seconds_total",
                "Sum of the issue-to-completion latency of the cgroup's block I/O requests, by operation.",
            ),
            receive_bytes: MetricFamily::counter(
                "ebpf_cgroup_network_receive_bytes_total",
                "Bytes received by the cgroup's sockets.",
            ),
            receive_packets: MetricFamily::counter(
                "ebpf_cgroup_network_receive_packets_total",
                "Packets received by the cgroup's sockets (GRO/GSO segments counted one by one).",
            ),
            transmit_bytes: MetricFamily::counter(
                "ebpf_cgroup_network_transmit_bytes_total",
                "Bytes sent by the cgroup's sockets.",
            ),
            transmit_packets: MetricFamily::counter(
                "ebpf_cgroup_network_transmit_packets_total",
                "Packets sent by the cgroup's sockets (GSO segments counted one by one).",
            ),
        }
    }

    fn push(&mut self, labels: &[&str; 8], c: &CgroupCounters) {
        let base = || LABELS.iter().copied().zip(labels.iter().copied());
        let seconds = |ns: u64| ns as f64 / 1e9;
        self.cpu.push(base(), seconds(c.cpu_ns));
        self.wait.push(base(), seconds(c.runqueue_wait_ns));
        self.waits.push(base(), c.runqueue_waits as f64);
        for (index, operation) in [(CGROUP_IO_READ, "read"), (CGROUP_IO_WRITE, "write")] {
            let with_op = || base().chain([("operation", operation)]);
            self.io_requests
                .push(with_op(), c.io_requests[index] as f64);
            self.io_bytes.push(with_op(), c.io_bytes[index] as f64);
            self.io_time.push(with_op(), seconds(c.io_time_ns[index]));
        }
        if self.network {
            self.receive_bytes.push(base(), c.net_receive_bytes as f64);
            self.receive_packets
                .push(base(), c.net_receive_packets as f64);
            self.transmit_bytes
                .push(base(), c.net_transmit_bytes as f64);
            self.transmit_packets
                .push(base(), c.net_transmit_packets as f64);
        }
    }

    fn append_to(self, out: &mut Vec<MetricFamily>) {
        out.extend([
            self.cpu,
            self.wait,
            self.waits,
            self.io_requests,
            self.io_bytes,
            self.io_time,
        ]);
        if self.network {
            out.extend([
                self.receive_bytes,
                self.receive_packets,
                self.transmit_bytes,
                self.transmit_packets,
            ]);
        }
    }
}
