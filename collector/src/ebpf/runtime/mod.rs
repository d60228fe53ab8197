//! What every eBPF collector stands on: the hook descriptor ([`Hook`]) and the object's
//! settings, loading and attaching the kernel programs (`loader`), the kernel layout they need
//! (`layout`, from the kernel's BTF read by `btf`), reading maps (`batch`, `histogram`) and
//! the programs' status (`status`). Nothing here names a subsystem: each `ebpf/<subsystem>.rs`
//! declares its hooks and map sizes, and the loader and readers ask those descriptors.
pub mod batch;
pub mod btf;
pub mod histogram;
pub mod layout;
pub mod loader;
pub mod status;

use std::{collections::BTreeMap, fmt, path::Path};

use collector_common::{KernelLayout, layout::UNKNOWN_OFFSET};

pub use layout::Discovery;
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
    pub const ALL: [HookType; 3] = [
        HookType::BtfTracepoint,
        HookType::RawTracepoint,
        HookType::Tracepoint,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BtfTracepoint => "tp_btf",
            Self::RawTracepoint => "raw_tp",
            Self::Tracepoint => "tracepoint",
        }
    }
}

impl fmt::Display for HookType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The eBPF options of the command line: which hook types to try, statistics, the benchmark's
/// empty programs, and the sizes of the two kernel maps no collector flag sizes.
#[derive(Clone, Debug, clap::Args)]
pub struct EbpfOptions {
    /// eBPF hook types to try for each kernel hook, best first; the first the kernel accepts is
    /// attached.
    #[arg(
        long = "ebpf.hook-types",
        value_enum,
        value_delimiter = ',',
        default_value = "tp_btf,raw_tp,tracepoint"
    )]
    pub hook_types: Vec<HookType>,

    /// Enable the kernel's BPF run-time statistics (kernel.bpf_stats_enabled) while running, to
    /// export per-program run time and run count. Costs some nanoseconds per event.
    #[arg(long = "ebpf.enable-stats")]
    pub enable_stats: bool,

    /// Attach programs that do nothing instead of the collector's (its eBPF metrics stay at
    /// zero): for benchmarks, to measure what attaching anything at all to the hooks costs.
    #[arg(long = "ebpf.empty-programs")]
    pub empty_programs: bool,

    /// Slots of the table of tasks waiting on a run queue (pid → when it became runnable), which
    /// times run-queue waits (rounded up to a power of two, 8 bytes each). A task that finds
    /// every slot of its set taken displaces the one waiting longest
    /// (`ebpf_runqueue_latency_dropped_total`).
    #[arg(long = "ebpf.runqueue-max-tasks", default_value_t = 16384, value_parser = clap::value_parser!(u32).range(64..))]
    pub runqueue_max_tasks: u32,

    /// Slots of the array of in-flight block requests (rounded up to a power of two, at least 2).
    /// By default twice the requests the disks can have in flight, at least 8192; a request
    /// that finds both slots of its set taken displaces one (`ebpf_block_rq_dropped_total`).
    #[arg(long = "ebpf.block-inflight-slots", value_name = "SLOTS", value_parser = clap::value_parser!(u32).range(2..=(1 << 21)))]
    pub block_inflight_slots: Option<u32>,

    /// Buckets of the eBPF histograms. Observations outside the exported ones are still counted:
    /// below them by the lowest bucket, above them by `+Inf`.
    #[arg(long = "ebpf.histogram-buckets", value_enum, default_value_t = histogram::HistogramBuckets::Measurable)]
    pub histogram_buckets: histogram::HistogramBuckets,
}

/// Why the kernel's layout rules out a hook type for a hook, if it does.
pub type Requirement = fn(&KernelLayout, HookType) -> Option<&'static str>;

/// A kernel tracepoint and everything about it the daemon needs, declared once beside its
/// subsystem's reader (`ebpf/<subsystem>.rs`), with [`hook!`](crate::hook): the programs
/// collector-ebpf has for it per hook type, what they need from the kernel's layout, and the
/// maps it sizes.
pub struct Hook {
    /// tracefs event category (`sched`, `irq`).
    pub category: &'static str,
    /// Tracepoint name, also the `program` label of the status metrics.
    pub name: &'static str,
    /// Program names in the object: tp_btf, raw_tp, tracepoint (`<name>_<btf|raw|tp>`).
    pub programs: [&'static str; 3],
    /// Their stand-ins that do nothing (`--ebpf.empty-programs`), `<program>_empty`.
    pub empty_programs: [&'static str; 3],
    pub requires: Requirement,
    /// Sets the globals and map sizes its programs use, before the object is loaded.
    pub configure: Option<Configure>,
}

/// Sets globals and map sizes in [`ObjectSettings`]; an error (a bad flag value) stops the
/// daemon at start.
pub type Configure = fn(&ConfigureContext<'_>, &mut ObjectSettings) -> anyhow::Result<()>;

/// What a hook's or collector's `configure` may read to size maps and set globals.
pub struct ConfigureContext<'a> {
    pub sysfs: &'a Path,
    pub flags: &'a crate::flags::CollectorFlags,
    pub options: &'a EbpfOptions,
    /// CPUs the kernel may ever bring online: per-CPU maps and arrays indexed by CPU.
    pub possible_cpus: u32,
    /// What start-up learnt of the running kernel (layout, drop reasons).
    pub kernel: &'a Discovery,
}

/// Declares a [`Hook`] with collector-ebpf's program names for it.
#[macro_export]
macro_rules! hook {
    ($category:literal / $name:literal, requires: $requires:expr
     $(, configure: $configure:expr)? $(,)?) => {
        $crate::ebpf::runtime::Hook {
            category: $category,
            name: $name,
            programs: [concat!($name, "_btf"), concat!($name, "_raw"), concat!($name, "_tp")],
            empty_programs: [
                concat!($name, "_btf_empty"),
                concat!($name, "_raw_empty"),
                concat!($name, "_tp_empty"),
            ],
            requires: $requires,
            configure: $crate::hook!(@option $($configure)?),
        }
    };
    (@option) => { None };
    (@option $value:expr) => { Some($value) };
}

impl Hook {
    /// The name in the object of its program for `hook_type`, or of that program's empty
    /// stand-in.
    pub fn program(&self, hook_type: HookType, empty: bool) -> &'static str {
        let index = HookType::ALL
            .iter()
            .position(|t| *t == hook_type)
            .expect("every hook type is in ALL");
        if empty {
            self.empty_programs[index]
        } else {
            self.programs[index]
        }
    }
}

impl fmt::Debug for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.category, self.name)
    }
}

impl PartialEq for Hook {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Hook {}

/// A [`Requirement`] for a hook whose programs need nothing from the kernel's layout.
pub fn needs_nothing(_: &KernelLayout, _: HookType) -> Option<&'static str> {
    None
}

/// Why a classic tracepoint program cannot be attached when any of `fields` (offsets in its
/// event record, from tracefs) is unknown.
pub fn tracepoint_fields(fields: &[u32]) -> Option<&'static str> {
    fields
        .contains(&UNKNOWN_OFFSET)
        .then_some("tracepoint field offsets unknown (tracefs format not readable)")
}

/// The globals and map sizes the object is loaded with, gathered from every hook's and
/// collector's `configure`.
#[derive(Debug, Default)]
pub struct ObjectSettings {
    globals: BTreeMap<&'static str, u32>,
    map_sizes: BTreeMap<&'static str, u32>,
}

impl ObjectSettings {
    /// Sets the `u32` global `name` (a `static` in collector-ebpf).
    pub fn global(&mut self, name: &'static str, value: u32) {
        self.globals.insert(name, value);
    }

    /// Gives map `name` `entries` entries instead of the object's default.
    pub fn map_size(&mut self, name: &'static str, entries: u32) {
        self.map_sizes.insert(name, entries);
    }

    pub fn globals(&self) -> impl Iterator<Item = (&'static str, &u32)> {
        self.globals.iter().map(|(name, value)| (*name, value))
    }

    pub fn map_sizes(&self) -> impl Iterator<Item = (&'static str, u32)> + '_ {
        self.map_sizes
            .iter()
            .map(|(name, entries)| (*name, *entries))
    }
}

/// At least `wanted` entries for an LRU hash map, and enough that the per-CPU free lists cannot
/// hold them all: kernels before the 2025 fix (commit d4adf1c, "Adjust free target to avoid
/// global starvation of LRU map") let each CPU keep up to 128 free entries (`LOCAL_FREE_TARGET`),
/// and a map smaller than twice that per CPU evicts live entries long before it is full.
pub fn lru_entries(wanted: u32, possible_cpus: u32) -> u32 {
    wanted.max(possible_cpus.saturating_mul(2 * 128))
}

/// CPUs online now; per-CPU map copies exist for every possible CPU, but only online ones are
/// exported, as node_exporter's `cpu` label.
pub fn online_cpus() -> anyhow::Result<Vec<u32>> {
    aya::util::online_cpus().map_err(|(path, e)| anyhow::anyhow!("reading {path}: {e}"))
}
