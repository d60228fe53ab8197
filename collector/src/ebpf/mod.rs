//! The eBPF side of the daemon: loading and attaching the kernel programs (`loader`), the kernel
//! layout facts they need (`layout`, from the kernel's BTF read by `btf`), and one collector per
//! subsystem reading its maps.
pub mod batch;
pub mod block;
pub mod btf;
pub mod cgroup;
pub mod histogram;
pub mod irq;
pub mod layout;
pub mod loader;
pub mod net;
pub mod programs;
pub mod sched;

use std::fmt;

pub use loader::EbpfRuntime;

/// Metric name prefix of everything node_exporter does not have. node_exporter's families all
/// start with `node_` (plus `go_`, `process_`, `promhttp_`), so these can never collide.
pub const METRIC_PREFIX: &str = "ebpf_";

/// How a program is attached to a kernel tracepoint, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum HookType {
    /// BTF-typed tracepoint (`BPF_TRACE_RAW_TP` with BTF, kernel 5.5+): cheapest, needs BTF.
    #[value(name = "tp_btf")]
    BtfTracepoint,
    /// Raw tracepoint (4.17+): raw arguments, no BTF needed.
    #[value(name = "raw_tp")]
    RawTracepoint,
    /// Classic tracepoint through perf (4.7+): needs tracefs for event ids and field offsets.
    #[value(name = "tracepoint")]
    Tracepoint,
}

impl HookType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BtfTracepoint => "tp_btf",
            Self::RawTracepoint => "raw_tp",
            Self::Tracepoint => "tracepoint",
        }
    }

    /// Suffix of the program variant in collector-ebpf (`sched_switch_btf`, ...).
    fn program_suffix(self) -> &'static str {
        match self {
            Self::BtfTracepoint => "btf",
            Self::RawTracepoint => "raw",
            Self::Tracepoint => "tp",
        }
    }
}

impl fmt::Display for HookType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kernel tracepoint one collector needs. collector-ebpf has one program per hook type for it,
/// named `<name>_<btf|raw|tp>`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Hook {
    /// tracefs event category (`sched`, `irq`).
    pub category: &'static str,
    /// Tracepoint name, also the `program` label of the status metrics.
    pub name: &'static str,
}

impl Hook {
    pub fn program_name(&self, hook_type: HookType) -> String {
        format!("{}_{}", self.name, hook_type.program_suffix())
    }
}

/// CPUs online now; per-CPU map copies exist for every possible CPU, but only online ones are
/// exported, as node_exporter's `cpu` label.
fn online_cpus() -> anyhow::Result<Vec<u32>> {
    aya::util::online_cpus().map_err(|(path, e)| anyhow::anyhow!("reading {path}: {e}"))
}
