//! `perf`: CPU-wide perf_event_open(2) counters, one per CPU and profiler, as node_exporter's
//! perf collector opens them through hodgesds/perf-utils: hardware (`node_perf_cpucycles_total`,
//! ...), software (`node_perf_page_faults_total`, `node_perf_context_switches_total`, ...), cache
//! (`node_perf_cache_l1d_read_hits_total`, ...) and, when asked, tracepoints
//! (`node_perf_<subsystem>_<event>`), every family labelled by `cpu`.
//!
//! The counters are opened once, at start-up, for the CPUs of `--collector.perf.cpus` (by default
//! CPUs 0 to n-1, n the CPUs this process may run on, as Go's `runtime.NumCPU`), read at each
//! scrape and closed when the collector is dropped at shutdown: at most CPUs x (9 hardware + 5
//! software + 16 cache + tracepoints) descriptors. Values are the raw counts, not scaled for
//! multiplexing, as upstream reports them.
//!
//! Where a counter cannot be opened (no hardware PMU in a VM: `/sys/bus/event_source/devices`
//! without `cpu`; a CPU offline; no permission), it is skipped, as upstream's profilers skip
//! what they cannot open; upstream does so silently, here one warning per profiler kind
//! (hardware, software, cache, tracepoint) names the counters, the CPUs, the error and a hint.
//! The collector still succeeds with what it could open.
//!
//! Permissions: counters for a whole CPU (pid -1) need CAP_PERFMON (Linux 5.8+; CAP_SYS_ADMIN
//! before), or `kernel.perf_event_paranoid` <= 0 for an unprivileged user (the default is 2, and
//! Debian's and Android's kernels add a level 3 that forbids every unprivileged use). Tracepoints
//! also need their `events/<subsystem>/<event>/id` in tracefs to be readable (tracefs is usually
//! root-only), and tracefs mounted (found in /proc/mounts, as upstream looks for it). So a
//! non-root daemon needs e.g. `AmbientCapabilities=CAP_PERFMON` in its systemd unit or
//! `capabilities: {add: [PERFMON]}` in its container, or the sysctl lowered. The paranoid level
//! is only read to explain a refusal in the log: the kernel decides, and a refused kind is
//! skipped like any other.
//!
//! Differences from upstream, all where upstream misbehaves: a CPU stride of 0 or less and CPU
//! numbers above 65535 are flag errors (upstream loops forever or allocates without bound); a
//! tracepoint that cannot be opened on a CPU is skipped there with a warning (upstream fails to
//! start); a tracepoint named twice is counted once; a tracepoint whose name is not a valid
//! metric name, or that collides with a built-in perf family, is a flag error.
use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsStr,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;

use crate::{
    collector::{BuildContext, Collector, CollectorSpec},
    flags::{CollectorFlags, FlagSpec},
    metrics::MetricFamily,
};

const CPUS: &str = "collector.perf.cpus";
const TRACEPOINT: &str = "collector.perf.tracepoint";
const NO_HARDWARE: &str = "collector.perf.disable-hardware-profilers";
const HARDWARE_PROFILERS: &str = "collector.perf.hardware-profilers";
const NO_SOFTWARE: &str = "collector.perf.disable-software-profilers";
const SOFTWARE_PROFILERS: &str = "collector.perf.software-profilers";
const NO_CACHE: &str = "collector.perf.disable-cache-profilers";
const CACHE_PROFILERS: &str = "collector.perf.cache-profilers";

pub const SPEC: CollectorSpec = CollectorSpec {
    name: "perf",
    default_enabled: false,
    flags: &[
        FlagSpec::value(
            CPUS,
            Some(""),
            "List of CPUs from which perf metrics should be collected",
        ),
        FlagSpec::repeated(TRACEPOINT, "perf tracepoint that should be collected"),
        FlagSpec::bool(NO_HARDWARE, false, "disable perf hardware profilers"),
        FlagSpec::repeated(
            HARDWARE_PROFILERS,
            "perf hardware profilers that should be collected",
        ),
        FlagSpec::bool(NO_SOFTWARE, false, "disable perf software profilers"),
        FlagSpec::repeated(
            SOFTWARE_PROFILERS,
            "perf software profilers that should be collected",
        ),
        FlagSpec::bool(NO_CACHE, false, "disable perf cache profilers"),
        FlagSpec::repeated(
            CACHE_PROFILERS,
            "perf cache profilers that should be collected",
        ),
    ],
    kernel: None,
    build,
};

// perf_event_attr's types and configs (linux/perf_event.h).
const PERF_TYPE_HARDWARE: u32 = 0;
const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_TYPE_HW_CACHE: u32 = 3;

/// A cache event's config: cache id | operation << 8 | result << 16.
const fn cache(id: u64, op: u64, result: u64) -> u64 {
    id | (op << 8) | (result << 16)
}
const L1D: u64 = 0;
const L1I: u64 = 1;
const LL: u64 = 2;
const DTLB: u64 = 3;
const ITLB: u64 = 4;
const BPU: u64 = 5;
const READ: u64 = 0;
const WRITE: u64 = 1;
const ACCESS: u64 = 0;
const MISS: u64 = 1;

/// One counter upstream reports: its name in the profiler flags, its family and its event.
#[derive(Debug)]
struct Counter {
    name: &'static str,
    metric: &'static str,
    help: &'static str,
    kind: u32,
    config: u64,
}

const fn counter(
    name: &'static str,
    metric: &'static str,
    help: &'static str,
    kind: u32,
    config: u64,
) -> Counter {
    Counter {
        name,
        metric,
        help,
        kind,
        config,
    }
}

/// perf-utils' hardware profilers that node_exporter reports (it also opens BusCycles, and
/// never reports it: not opened here).
#[rustfmt::skip]
const HARDWARE: &[Counter] = &[
    counter("CpuCycles", "cpucycles_total", "Number of CPU cycles (frequency scaled)", PERF_TYPE_HARDWARE, 0),
    counter("CpuInstr", "instructions_total", "Number of CPU instructions", PERF_TYPE_HARDWARE, 1),
    counter("CacheRef", "cache_refs_total", "Number of cache references (non frequency scaled)", PERF_TYPE_HARDWARE, 2),
    counter("CacheMisses", "cache_misses_total", "Number of cache misses", PERF_TYPE_HARDWARE, 3),
    counter("BranchInstr", "branch_instructions_total", "Number of CPU branch instructions", PERF_TYPE_HARDWARE, 4),
    counter("BranchMisses", "branch_misses_total", "Number of CPU branch misses", PERF_TYPE_HARDWARE, 5),
    counter("StalledCyclesFrontend", "stalled_cycles_frontend_total", "Number of stalled frontend CPU cycles", PERF_TYPE_HARDWARE, 7),
    counter("StalledCyclesBackend", "stalled_cycles_backend_total", "Number of stalled backend CPU cycles", PERF_TYPE_HARDWARE, 8),
    counter("RefCpuCycles", "ref_cpucycles_total", "Number of CPU cycles", PERF_TYPE_HARDWARE, 9),
];

/// The software profilers node_exporter reports (perf-utils' "all" also opens CPU and task
/// clocks, alignment and emulation faults, never reported: not opened here).
#[rustfmt::skip]
const SOFTWARE: &[Counter] = &[
    counter("PageFault", "page_faults_total", "Number of page faults", PERF_TYPE_SOFTWARE, 2),
    counter("ContextSwitch", "context_switches_total", "Number of context switches", PERF_TYPE_SOFTWARE, 3),
    counter("CpuMigration", "cpu_migrations_total", "Number of CPU process migrations", PERF_TYPE_SOFTWARE, 4),
    counter("MinorFault", "minor_faults_total", "Number of minor page faults", PERF_TYPE_SOFTWARE, 5),
    counter("MajorFault", "major_faults_total", "Number of major page faults", PERF_TYPE_SOFTWARE, 6),
];

/// The cache profilers node_exporter reports, which are also its default set.
#[rustfmt::skip]
const CACHE: &[Counter] = &[
    counter("L1DataReadHit", "cache_l1d_read_hits_total", "Number L1 data cache read hits", PERF_TYPE_HW_CACHE, cache(L1D, READ, ACCESS)),
    counter("L1DataReadMiss", "cache_l1d_read_misses_total", "Number L1 data cache read misses", PERF_TYPE_HW_CACHE, cache(L1D, READ, MISS)),
    counter("L1DataWriteHit", "cache_l1d_write_hits_total", "Number L1 data cache write hits", PERF_TYPE_HW_CACHE, cache(L1D, WRITE, ACCESS)),
    counter("L1InstrReadMiss", "cache_l1_instr_read_misses_total", "Number instruction L1 instruction read misses", PERF_TYPE_HW_CACHE, cache(L1I, READ, MISS)),
    counter("InstrTLBReadHit", "cache_tlb_instr_read_hits_total", "Number instruction TLB read hits", PERF_TYPE_HW_CACHE, cache(ITLB, READ, ACCESS)),
    counter("InstrTLBReadMiss", "cache_tlb_instr_read_misses_total", "Number instruction TLB read misses", PERF_TYPE_HW_CACHE, cache(ITLB, READ, MISS)),
    counter("DataTLBReadHit", "cache_tlb_data_read_hits_total", "Number of data TLB read hits", PERF_TYPE_HW_CACHE, cache(DTLB, READ, ACCESS)),
    counter("DataTLBReadMiss", "cache_tlb_data_read_misses_total", "Number of data TLB read misses", PERF_TYPE_HW_CACHE, cache(DTLB, READ, MISS)),
    counter("DataTLBWriteHit", "cache_tlb_data_write_hits_total", "Number of data TLB write hits", PERF_TYPE_HW_CACHE, cache(DTLB, WRITE, ACCESS)),
    counter("DataTLBWriteMiss", "cache_tlb_data_write_misses_total", "Number of data TLB write misses", PERF_TYPE_HW_CACHE, cache(DTLB, WRITE, MISS)),
    counter("LLReadHit", "cache_ll_read_hits_total", "Number last level read hits", PERF_TYPE_HW_CACHE, cache(LL, READ, ACCESS)),
    counter("LLReadMiss", "cache_ll_read_misses_total", "Number last level read misses", PERF_TYPE_HW_CACHE, cache(LL, READ, MISS)),
    counter("LLWriteHit", "cache_ll_write_hits_total", "Number last level write hits", PERF_TYPE_HW_CACHE, cache(LL, WRITE, ACCESS)),
    counter("LLWriteMiss", "cache_ll_write_misses_total", "Number last level write misses", PERF_TYPE_HW_CACHE, cache(LL, WRITE, MISS)),
    counter("BPUReadHit", "cache_bpu_read_hits_total", "Number BPU read hits", PERF_TYPE_HW_CACHE, cache(BPU, READ, ACCESS)),
    counter("BPUReadMiss", "cache_bpu_read_misses_total", "Number BPU read misses", PERF_TYPE_HW_CACHE, cache(BPU, READ, MISS)),
];

/// A profiler kind: its counters and flags.
#[derive(Debug)]
struct Kind {
    name: &'static str,
    disable_flag: &'static str,
    list_flag: &'static str,
    counters: &'static [Counter],
    /// Whether a failed read fails the scrape (perf-utils' hardware and cache profiles return
    /// the error) or only drops the value (its software profile ignores read errors).
    read_error_fails: bool,
}

const KINDS: [Kind; 3] = [
    Kind {
        name: "hardware",
        disable_flag: NO_HARDWARE,
        list_flag: HARDWARE_PROFILERS,
        counters: HARDWARE,
        read_error_fails: true,
    },
    Kind {
        name: "software",
        disable_flag: NO_SOFTWARE,
        list_flag: SOFTWARE_PROFILERS,
        counters: SOFTWARE,
        read_error_fails: false,
    },
    Kind {
        name: "cache",
        disable_flag: NO_CACHE,
        list_flag: CACHE_PROFILERS,
        counters: CACHE,
        read_error_fails: true,
    },
];

/// The highest CPU number accepted in `--collector.perf.cpus`: above any kernel's NR_CPUS, and
/// a bound on what a range may expand to.
const MAX_CPU: i64 = 65535;

/// Upstream's `perfCPUFlagToCPUs`: comma-separated CPUs (`3`), ranges (`0-7`) and ranges with a
/// stride (`0-14:2`: 0, 2, ... 14), numbers as Go's `strconv.Atoi` reads them. A range's
/// stride is only taken when the `:` splits it in exactly two (else the stride is 1 and the
/// range is what precedes the first `:`), as upstream does. Duplicates are counted once.
fn parse_cpus(flag: &str) -> anyhow::Result<BTreeSet<u32>> {
    let atoi = |text: &str| -> anyhow::Result<i64> {
        text.parse()
            .with_context(|| format!("--{CPUS}: invalid number {text:?} in {flag:?}"))
    };
    let cpu = |value: i64| -> anyhow::Result<u32> {
        if (0..=MAX_CPU).contains(&value) {
            Ok(value as u32)
        } else {
            anyhow::bail!("--{CPUS}: CPU {value} out of range 0-{MAX_CPU} in {flag:?}")
        }
    };
    let mut cpus = BTreeSet::new();
    for subset in flag.split(',') {
        if !subset.contains('-') {
            cpus.insert(cpu(atoi(subset)?)?);
            continue;
        }
        let stride_set: Vec<&str> = subset.split(':').collect();
        let stride = match stride_set[..] {
            [_, stride] => atoi(stride)?,
            _ => 1,
        };
        if stride <= 0 {
            anyhow::bail!("--{CPUS}: stride {stride} is not positive in {flag:?}");
        }
        let range: Vec<&str> = stride_set[0].split('-').collect();
        let [start, end] = range[..] else {
            anyhow::bail!("--{CPUS}: invalid flag value {flag:?}");
        };
        let (start, end) = (atoi(start)?, atoi(end)?);
        if start > end {
            continue;
        }
        let (start, end) = (cpu(start)?, cpu(end)?);
        cpus.extend((start..=end).step_by(stride.min(MAX_CPU + 1) as usize));
    }
    Ok(cpus)
}

/// One `--collector.perf.tracepoint`: `subsystem:event`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Tracepoint {
    subsystem: String,
    event: String,
}

impl Tracepoint {
    fn metric(&self) -> String {
        format!("node_perf_{}_{}", self.subsystem, self.event)
    }

    fn help(&self) -> String {
        format!("Perf tracepoint {}:{}", self.subsystem, self.event)
    }
}

/// Upstream's `perfTracepointFlagToTracepoints` (exactly one `:`), and names that make a valid
/// metric name (letters, digits, `_`): upstream panics at scrape time on others. In flag
/// order, a repeated one once.
fn parse_tracepoints(flags: &[String]) -> anyhow::Result<Vec<Tracepoint>> {
    let mut tracepoints: Vec<Tracepoint> = Vec::new();
    for flag in flags {
        let parts: Vec<&str> = flag.split(':').collect();
        let [subsystem, event] = parts[..] else {
            anyhow::bail!("--{TRACEPOINT}: invalid tracepoint config {flag}");
        };
        let valid = |name: &str| {
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        };
        if !valid(subsystem) || !valid(event) {
            anyhow::bail!(
                "--{TRACEPOINT}: {flag:?}: subsystem and event must be letters, digits and _, \
                 to make a metric name"
            );
        }
        let tracepoint = Tracepoint {
            subsystem: subsystem.to_owned(),
            event: event.to_owned(),
        };
        let metric = tracepoint.metric();
        if KINDS
            .iter()
            .flat_map(|kind| kind.counters)
            .any(|counter| metric == format!("node_perf_{}", counter.metric))
        {
            anyhow::bail!("--{TRACEPOINT}: {flag} would be served as {metric}, a built-in family");
        }
        if tracepoints.contains(&tracepoint) {
            tracing::warn!(tracepoint = %flag, "--{TRACEPOINT} given twice; counted once");
            continue;
        }
        tracepoints.push(tracepoint);
    }
    Ok(tracepoints)
}

/// The counters of `kind` to open: those named in its list flag, or all when none is given;
/// an unknown name is logged and skipped, and when only unknown names are given, all are
/// opened, as upstream's empty profiler set means "all".
fn select_counters(kind: &Kind, names: &[String]) -> Vec<&'static Counter> {
    let mut selected = Vec::new();
    for name in names {
        match kind.counters.iter().find(|counter| counter.name == name) {
            Some(counter) => {
                if !selected.iter().any(|c: &&Counter| c.name == counter.name) {
                    selected.push(counter);
                }
            }
            None => {
                let kind_name = kind.name;
                tracing::error!("Unknown {kind_name} profiler: {name}");
            }
        }
    }
    if selected.is_empty() {
        kind.counters.iter().collect()
    } else {
        selected
    }
}

/// `perf_event_attr` up to `config1`: `PERF_ATTR_SIZE_VER0`, which every kernel with
/// perf_event_open accepts; the fields after it are zero to the kernel.
#[repr(C)]
#[derive(Debug, Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

const PERF_ATTR_SIZE_VER0: u32 = 64;
const _: () = assert!(std::mem::size_of::<PerfEventAttr>() == PERF_ATTR_SIZE_VER0 as usize);

// perf_event_attr flag bits.
const ATTR_INHERIT: u64 = 1 << 1;
const ATTR_EXCLUDE_HV: u64 = 1 << 6;
// read_format bits.
const FORMAT_TOTAL_TIME_ENABLED: u64 = 1 << 0;
const FORMAT_TOTAL_TIME_RUNNING: u64 = 1 << 1;
const FORMAT_GROUP: u64 = 1 << 3;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

/// Opens `attr` for every task on `cpu` (pid -1), in `group` if given. perf-utils opens its
/// counters disabled and enables them right away; opening them enabled is the same and needs
/// no ioctl (whose number differs between architectures).
fn perf_event_open(
    attr: &PerfEventAttr,
    cpu: u32,
    group: Option<&OwnedFd>,
) -> std::io::Result<OwnedFd> {
    let group_fd = group.map_or(-1, |fd| fd.as_raw_fd());
    // SAFETY: `attr` is a valid perf_event_attr of the size it declares, alive for the call;
    // the other arguments are integers, passed as the kernel's longs.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr as *const PerfEventAttr,
            -1 as libc::c_long,
            libc::c_long::from(cpu),
            libc::c_long::from(group_fd),
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| std::io::Error::other("fd out of range"))?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// perf-utils' `NewProfiler` attributes: excluding the hypervisor, inherited by children,
/// reading the value with its enabled and running times.
fn open_counter(counter: &Counter, cpu: u32) -> std::io::Result<OwnedFd> {
    let attr = PerfEventAttr {
        kind: counter.kind,
        size: PERF_ATTR_SIZE_VER0,
        config: counter.config,
        read_format: FORMAT_TOTAL_TIME_ENABLED | FORMAT_TOTAL_TIME_RUNNING,
        flags: ATTR_EXCLUDE_HV | ATTR_INHERIT,
        ..PerfEventAttr::default()
    };
    perf_event_open(&attr, cpu, None)
}

/// Reads what `fd` returns into `buf`, which must be filled exactly: perf reads are
/// all-or-nothing (0 bytes for an event in error state).
fn read_exact(fd: &OwnedFd, buf: &mut [u8]) -> std::io::Result<()> {
    // SAFETY: `buf` is valid for writes of its length.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if n as usize != buf.len() {
        return Err(std::io::Error::other(format!(
            "short read: {n} of {} bytes",
            buf.len()
        )));
    }
    Ok(())
}

/// The value of a single counter's read: `{ value, time_enabled, time_running }`.
fn decode_single(buf: &[u8; 24]) -> u64 {
    u64::from_ne_bytes([
        buf[0], buf[1], buf[2], buf[3], buf[4], buf[5], buf[6], buf[7],
    ])
}

/// The values of a group read: `{ nr, time_enabled, time_running, value[nr] }`, `nr` checked.
fn decode_group(buf: &[u8], expected: usize) -> anyhow::Result<Vec<u64>> {
    let words: Vec<u64> = buf
        .chunks_exact(8)
        .map(|word| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(word);
            u64::from_ne_bytes(bytes)
        })
        .collect();
    let nr = words.first().copied().unwrap_or_default();
    if words.len() != 3 + expected || nr != expected as u64 {
        anyhow::bail!(
            "group read has {nr} values in {} bytes, expected {expected}",
            buf.len()
        );
    }
    Ok(words[3..].to_vec())
}

/// `cpus` as ranges: `0-3,8`.
fn format_cpus(cpus: &BTreeSet<u32>) -> String {
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for &cpu in cpus {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == cpu => *end = cpu,
            _ => ranges.push((cpu, cpu)),
        }
    }
    ranges
        .iter()
        .map(|&(start, end)| {
            if start == end {
                start.to_string()
            } else {
                format!("{start}-{end}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// What failed to open in one profiler kind, by error message.
#[derive(Default)]
struct Failures {
    by_error: BTreeMap<String, Failure>,
}

/// The counters and CPUs that one error refused.
#[derive(Default)]
struct Failure {
    names: Vec<String>,
    cpus: BTreeSet<u32>,
    errno: Option<i32>,
}

impl Failures {
    fn add(&mut self, name: &str, cpu: u32, error: &std::io::Error) {
        let failure = self.by_error.entry(error.to_string()).or_default();
        if !failure.names.iter().any(|known| known == name) {
            failure.names.push(name.to_owned());
        }
        failure.cpus.insert(cpu);
        failure.errno = error.raw_os_error();
    }

    /// One warning for the whole kind, whatever the number of CPUs and counters.
    fn log(&self, kind: &str, disable_flag: Option<&str>, host: &HostHints) {
        if self.by_error.is_empty() {
            return;
        }
        let failed = self
            .by_error
            .iter()
            .map(|(error, failure)| {
                let plural = if failure.cpus.len() == 1 { "" } else { "s" };
                format!(
                    "{} on CPU{plural} {}: {error}",
                    failure.names.join(","),
                    format_cpus(&failure.cpus)
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let mut hints: Vec<String> = self
            .by_error
            .values()
            .filter_map(|failure| host.hint(kind, failure.errno))
            .collect();
        hints.dedup();
        if let Some(flag) = disable_flag {
            hints.push(format!("--{flag} skips them"));
        }
        tracing::warn!(
            collector = "perf",
            failed,
            hint = hints.join("; "),
            "perf {kind} profilers could not be opened and are skipped"
        );
    }
}

/// Where the explanations of a refusal come from.
struct HostHints {
    /// /sys/bus/event_source/devices, where the CPU's PMU is `cpu` (x86, or `cpu_core` and
    /// `cpu_atom` on hybrid Intel parts).
    event_sources: PathBuf,
    paranoid: PathBuf,
}

impl HostHints {
    fn hint(&self, kind: &str, errno: Option<i32>) -> Option<String> {
        let hardware = matches!(kind, "hardware" | "cache");
        match errno? {
            libc::ENOENT | libc::EOPNOTSUPP if hardware => {
                let has_pmu = ["cpu", "cpu_core", "cpu_atom"]
                    .iter()
                    .any(|pmu| self.event_sources.join(pmu).exists());
                Some(if has_pmu {
                    "the CPU's PMU does not count these events".to_owned()
                } else {
                    format!(
                        "no hardware PMU ({} has no cpu: a VM without a virtual PMU?)",
                        self.event_sources.display()
                    )
                })
            }
            libc::EACCES | libc::EPERM => {
                let level = std::fs::read_to_string(&self.paranoid)
                    .map(|text| text.trim().to_owned())
                    .unwrap_or_else(|_| "unknown".to_owned());
                Some(format!(
                    "kernel.perf_event_paranoid is {level}: counters for a whole CPU need \
                     CAP_PERFMON (or CAP_SYS_ADMIN), or perf_event_paranoid <= 0"
                ))
            }
            libc::ENODEV => Some("CPU offline or not present".to_owned()),
            libc::EINVAL => Some("no such CPU, or the event is not supported".to_owned()),
            libc::EMFILE | libc::ENFILE => {
                Some("out of file descriptors: raise the open-files limit".to_owned())
            }
            libc::EBUSY => Some("the PMU is in exclusive use".to_owned()),
            _ => None,
        }
    }
}

/// One counter, open on each CPU where it could be.
struct OpenCounter {
    counter: &'static Counter,
    per_cpu: Vec<(u32, OwnedFd)>,
}

struct OpenKind {
    kind: &'static Kind,
    counters: Vec<OpenCounter>,
}

/// The tracepoints, one group per CPU (the first tracepoint leads, read with its members).
struct OpenTracepoints {
    tracepoints: Vec<Tracepoint>,
    groups: Vec<(u32, OwnedFd, Vec<OwnedFd>)>,
}

struct PerfCollector {
    kinds: Vec<OpenKind>,
    tracepoints: Option<OpenTracepoints>,
}

/// The number of CPUs this process may run on, as Go's `runtime.NumCPU`.
fn num_cpus() -> u32 {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it.
    let count = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            libc::CPU_COUNT(&set)
        } else {
            0
        }
    };
    match u32::try_from(count) {
        Ok(count) if count > 0 => count,
        _ => std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
    }
}

fn build(context: &BuildContext) -> anyhow::Result<Arc<dyn Collector>> {
    let flags = &context.flags;
    let cpus: BTreeSet<u32> = match flags.string(CPUS).unwrap_or("") {
        "" => (0..num_cpus()).collect(),
        list => parse_cpus(list)?,
    };
    let host = HostHints {
        event_sources: context.sys_path("bus/event_source/devices"),
        paranoid: context.proc_path("sys/kernel/perf_event_paranoid"),
    };
    let tracepoints = parse_tracepoints(flags.strings(TRACEPOINT))?;
    let tracepoints = if tracepoints.is_empty() {
        None
    } else {
        Some(open_tracepoints(tracepoints, &cpus, &host)?)
    };
    Ok(Arc::new(PerfCollector {
        kinds: open_kinds(flags, &cpus, &host),
        tracepoints,
    }))
}

/// Opens the selected counters of every enabled kind on every CPU, logging once per kind what
/// could not be opened.
fn open_kinds(flags: &CollectorFlags, cpus: &BTreeSet<u32>, host: &HostHints) -> Vec<OpenKind> {
    let mut kinds = Vec::new();
    for kind in &KINDS {
        if flags.bool(kind.disable_flag) {
            continue;
        }
        let mut failures = Failures::default();
        let mut counters = Vec::new();
        for counter in select_counters(kind, flags.strings(kind.list_flag)) {
            let mut per_cpu = Vec::new();
            for &cpu in cpus {
                match open_counter(counter, cpu) {
                    Ok(fd) => per_cpu.push((cpu, fd)),
                    Err(error) => failures.add(counter.name, cpu, &error),
                }
            }
            if !per_cpu.is_empty() {
                counters.push(OpenCounter { counter, per_cpu });
            }
        }
        failures.log(kind.name, Some(kind.disable_flag), host);
        kinds.push(OpenKind { kind, counters });
    }
    kinds
}

/// The first tracefs mount point in `mounts` (/proc/mounts), as perf-utils' `TraceFSMount`
/// finds it (a line of 64 KiB or more ends the search with an error, as its scanner does);
/// the octal escapes of the mount point undone.
fn tracefs_mount(mounts: &[u8]) -> anyhow::Result<PathBuf> {
    for line in mounts.split(|&b| b == b'\n') {
        if line.len() >= 64 * 1024 {
            anyhow::bail!("Failed to get tracefs mount: bufio.Scanner: token too long");
        }
        let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        if fields.len() > 3 && fields[2] == b"tracefs" {
            return Ok(PathBuf::from(OsStr::from_bytes(&unescape_octal(fields[1]))));
        }
    }
    anyhow::bail!("Mount for tracefs not mounted (mount -t tracefs nodev /sys/kernel/tracing)")
}

/// /proc/mounts' `\040`-style escapes, decoded; anything else kept as is.
fn unescape_octal(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && let Some(digits) = field.get(i + 1..i + 4)
            && digits.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let value = digits
                .iter()
                .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

/// perf-utils' `GetTracepointConfig`: the first line of `events/<subsystem>/<event>/id`.
fn tracepoint_id(tracefs: &Path, tracepoint: &Tracepoint) -> anyhow::Result<u64> {
    let path = tracefs
        .join("events")
        .join(&tracepoint.subsystem)
        .join(&tracepoint.event)
        .join("id");
    let text = std::fs::read(&path).with_context(|| {
        format!(
            "Failed to get tracepoint config for {}:{}: reading {}",
            tracepoint.subsystem,
            tracepoint.event,
            path.display()
        )
    })?;
    let first = text.split(|&b| b == b'\n').next().unwrap_or_default();
    std::str::from_utf8(first)
        .ok()
        .and_then(|line| line.parse().ok())
        .with_context(|| {
            format!(
                "{}: bad tracepoint id {:?}",
                path.display(),
                String::from_utf8_lossy(first)
            )
        })
}

/// Opens the tracepoints as one group per CPU, as upstream's group profiler: a tracefs or
/// tracepoint id that cannot be read is an error (a wrong flag), a CPU where the group cannot
/// be opened is skipped with one warning for all of them.
fn open_tracepoints(
    tracepoints: Vec<Tracepoint>,
    cpus: &BTreeSet<u32>,
    host: &HostHints,
) -> anyhow::Result<OpenTracepoints> {
    let mounts = std::fs::read("/proc/mounts")
        .context("Failed to get tracefs mount: reading /proc/mounts")?;
    let tracefs = tracefs_mount(&mounts)?;
    let attrs = tracepoints
        .iter()
        .map(|tracepoint| {
            Ok(PerfEventAttr {
                kind: PERF_TYPE_TRACEPOINT,
                size: PERF_ATTR_SIZE_VER0,
                config: tracepoint_id(&tracefs, tracepoint)?,
                read_format: FORMAT_TOTAL_TIME_ENABLED | FORMAT_TOTAL_TIME_RUNNING | FORMAT_GROUP,
                // As perf-utils' group profiler: not inherited (a group read of inherited
                // counters is refused by kernels before 4.13).
                flags: ATTR_EXCLUDE_HV,
                ..PerfEventAttr::default()
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut failures = Failures::default();
    let mut groups = Vec::new();
    'cpus: for &cpu in cpus {
        let mut leader = None;
        let mut members = Vec::new();
        for (attr, tracepoint) in attrs.iter().zip(&tracepoints) {
            match perf_event_open(attr, cpu, leader.as_ref()) {
                Ok(fd) if leader.is_none() => leader = Some(fd),
                Ok(fd) => members.push(fd),
                Err(error) => {
                    let name = format!("{}:{}", tracepoint.subsystem, tracepoint.event);
                    failures.add(&name, cpu, &error);
                    continue 'cpus;
                }
            }
        }
        if let Some(leader) = leader {
            groups.push((cpu, leader, members));
        }
    }
    failures.log("tracepoint", None, host);
    Ok(OpenTracepoints {
        tracepoints,
        groups,
    })
}

impl PerfCollector {
    fn update_kind(open: &OpenKind, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        for counter in &open.counters {
            let mut family = MetricFamily::counter(
                format!("node_perf_{}", counter.counter.metric),
                counter.counter.help,
            );
            let mut failed = None;
            for (cpu, fd) in &counter.per_cpu {
                let mut buf = [0u8; 24];
                match read_exact(fd, &mut buf) {
                    Ok(()) => family.push([("cpu", cpu.to_string())], decode_single(&buf) as f64),
                    Err(error) if open.kind.read_error_fails => {
                        failed = Some(anyhow::Error::new(error).context(format!(
                            "reading perf {} counter {} on CPU {cpu}",
                            open.kind.name, counter.counter.name
                        )));
                        break;
                    }
                    Err(error) => tracing::debug!(
                        counter = counter.counter.name,
                        cpu,
                        %error,
                        "reading a perf software counter failed; value dropped"
                    ),
                }
            }
            if !family.metrics.is_empty() {
                out.push(family);
            }
            if let Some(error) = failed {
                return Err(error);
            }
        }
        Ok(())
    }

    fn update_tracepoints(
        open: &OpenTracepoints,
        out: &mut Vec<MetricFamily>,
    ) -> anyhow::Result<()> {
        let mut families: Vec<MetricFamily> = open
            .tracepoints
            .iter()
            .map(|tracepoint| MetricFamily::counter(tracepoint.metric(), tracepoint.help()))
            .collect();
        let mut buf = vec![0u8; 8 * (3 + open.tracepoints.len())];
        let mut result = Ok(());
        for (cpu, leader, _) in &open.groups {
            let values = read_exact(leader, &mut buf)
                .map_err(anyhow::Error::new)
                .and_then(|()| decode_group(&buf, open.tracepoints.len()));
            match values {
                Ok(values) => {
                    for (family, value) in families.iter_mut().zip(values) {
                        family.push([("cpu", cpu.to_string())], value as f64);
                    }
                }
                Err(error) => {
                    tracing::error!(
                        cpu,
                        err = format!("{error:#}"),
                        "Failed to collect tracepoint profile"
                    );
                    result = Err(error.context(format!("reading perf tracepoints on CPU {cpu}")));
                    break;
                }
            }
        }
        out.extend(
            families
                .into_iter()
                .filter(|family| !family.metrics.is_empty()),
        );
        result
    }
}

impl Collector for PerfCollector {
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
        for kind in &self.kinds {
            Self::update_kind(kind, out)?;
        }
        if let Some(tracepoints) = &self.tracepoints {
            Self::update_tracepoints(tracepoints, out)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus(flag: &str) -> Vec<u32> {
        parse_cpus(flag).unwrap().into_iter().collect()
    }

    #[test]
    fn cpu_lists_ranges_and_strides() {
        assert_eq!(cpus("3"), [3]);
        assert_eq!(cpus("0,2,4"), [0, 2, 4]);
        assert_eq!(cpus("0-3"), [0, 1, 2, 3]);
        assert_eq!(cpus("0-3,8-9"), [0, 1, 2, 3, 8, 9]);
        // Upstream's comment says 1,5,10; its loop gives 1,6.
        assert_eq!(cpus("1-10:5"), [1, 6]);
        assert_eq!(cpus("0-6:2,1"), [0, 1, 2, 4, 6]);
        assert_eq!(cpus("2-2"), [2]);
        assert_eq!(cpus("5-3"), [] as [u32; 0], "an empty range, as upstream");
        assert_eq!(cpus("+3"), [3], "Atoi takes a sign");
        assert_eq!(cpus("1,1,0-1"), [0, 1], "duplicates once");
        // More than one ':': no stride, the range before the first ':'.
        assert_eq!(cpus("0-2:1:9"), [0, 1, 2]);
        assert_eq!(cpus("0-65535:65535"), [0, 65535]);
        assert_eq!(cpus("0-4:99999999999"), [0]);
    }

    #[test]
    fn bad_cpu_lists_are_errors() {
        for flag in [
            ",",
            "0,",
            "a",
            "3:2",
            "1-",
            "-1",
            "1-2-3",
            "1-x",
            "0-3:x",
            " 1",
            "1 ",
            "0-3:0",
            "0-3:-1",
            "65536",
            "0-65536",
            "99999999999999999999",
            "1.5",
            "٣",
        ] {
            let error = parse_cpus(flag).unwrap_err();
            assert!(format!("{error:#}").contains(CPUS), "{flag}: {error:#}");
        }
    }

    #[test]
    fn tracepoint_flags() {
        let flags = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let parsed = parse_tracepoints(&flags(&[
            "sched:sched_switch",
            "block:block_rq_issue",
            "sched:sched_switch",
        ]))
        .unwrap();
        assert_eq!(parsed.len(), 2, "a repeated tracepoint once");
        assert_eq!(parsed[0].metric(), "node_perf_sched_sched_switch");
        assert_eq!(parsed[0].help(), "Perf tracepoint sched:sched_switch");
        assert_eq!(parsed[1].subsystem, "block");
        assert_eq!(parsed[1].event, "block_rq_issue");
        assert!(parse_tracepoints(&[]).unwrap().is_empty());
        for bad in [
            "sched",
            "sched:",
            ":sched_switch",
            "a:b:c",
            "sched:sched-switch",
            "../x:id",
            "sched:sched switch",
            "sched:ü",
            "cache:misses_total",
            "",
        ] {
            let error = parse_tracepoints(&flags(&[bad])).unwrap_err();
            assert!(
                format!("{error:#}").contains(TRACEPOINT),
                "{bad}: {error:#}"
            );
        }
    }

    #[test]
    fn profiler_selection() {
        let names = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let selected = |kind: &Kind, list: &[&str]| {
            select_counters(kind, &names(list))
                .iter()
                .map(|c| c.name)
                .collect::<Vec<_>>()
        };
        let [hardware, software, cache] = &KINDS;
        assert_eq!(selected(hardware, &[]).len(), 9);
        assert_eq!(selected(software, &[]).len(), 5);
        assert_eq!(selected(cache, &[]).len(), 16);
        assert_eq!(
            selected(
                software,
                &["PageFault", "Bogus", "ContextSwitch", "PageFault"]
            ),
            ["PageFault", "ContextSwitch"]
        );
        // Only unknown names: upstream's empty set, which means all.
        assert_eq!(
            selected(hardware, &["cpucycles", "CpuCycles,CpuInstr"]).len(),
            9
        );
        assert_eq!(selected(cache, &["LLReadMiss"]), ["LLReadMiss"]);
        // Every family name is unique and every flag name too.
        let all: Vec<&Counter> = KINDS.iter().flat_map(|k| k.counters).collect();
        let metrics: BTreeSet<_> = all.iter().map(|c| c.metric).collect();
        let flags: BTreeSet<_> = all.iter().map(|c| c.name).collect();
        assert_eq!((metrics.len(), flags.len()), (all.len(), all.len()));
    }

    #[test]
    fn cache_configs_follow_perf_event_h() {
        let config = |name: &str| CACHE.iter().find(|c| c.name == name).unwrap().config;
        assert_eq!(config("L1DataReadHit"), 0);
        assert_eq!(config("L1DataReadMiss"), 0x10000);
        assert_eq!(config("L1DataWriteHit"), 0x100);
        assert_eq!(config("L1InstrReadMiss"), 0x10001);
        assert_eq!(config("LLWriteMiss"), 0x10102);
        assert_eq!(config("DataTLBWriteHit"), 0x103);
        assert_eq!(config("InstrTLBReadMiss"), 0x10004);
        assert_eq!(config("BPUReadHit"), 5);
    }

    #[test]
    fn cpu_ranges_for_the_log() {
        let set = |cpus: &[u32]| cpus.iter().copied().collect::<BTreeSet<_>>();
        assert_eq!(format_cpus(&set(&[0, 1, 2, 3, 8, 10, 11])), "0-3,8,10-11");
        assert_eq!(format_cpus(&set(&[5])), "5");
        assert_eq!(format_cpus(&set(&[])), "");
    }

    #[test]
    fn reads_decode_or_fail() {
        let mut single = [0u8; 24];
        single[..8].copy_from_slice(&u64::MAX.to_ne_bytes());
        assert_eq!(decode_single(&single), u64::MAX);

        let words = |w: &[u64]| w.iter().flat_map(|v| v.to_ne_bytes()).collect::<Vec<u8>>();
        assert_eq!(
            decode_group(&words(&[2, 100, 100, 7, 9]), 2).unwrap(),
            [7, 9]
        );
        assert!(
            decode_group(&words(&[3, 100, 100, 7, 9]), 2).is_err(),
            "nr disagrees"
        );
        assert!(
            decode_group(&words(&[2, 100, 100, 7]), 2).is_err(),
            "truncated"
        );
        assert!(decode_group(&[], 1).is_err());
        assert!(decode_group(&[1, 2, 3], 0).is_err(), "not whole words");
    }

    #[test]
    fn tracefs_mount_point() {
        let mounts = b"sysfs /sys sysfs rw 0 0\n\
            debugfs /sys/kernel/debug debugfs rw 0 0\n\
            nodev /sys/kernel/my\\040tracing tracefs rw,relatime 0 0\n\
            tracefs /other tracefs rw 0 0\n";
        assert_eq!(
            tracefs_mount(mounts).unwrap(),
            Path::new("/sys/kernel/my tracing")
        );
        assert!(tracefs_mount(b"sysfs /sys sysfs rw 0 0\n").is_err());
        assert!(tracefs_mount(b"").is_err());
        assert!(
            tracefs_mount(b"nodev /t tracefs rw").is_ok(),
            "four fields are enough"
        );
        assert!(
            tracefs_mount(b"nodev /t tracefs\nx").is_err(),
            "three are not"
        );
        let mut long = vec![b'x'; 70 * 1024];
        long.extend_from_slice(b"\nnodev /t tracefs rw 0 0\n");
        assert!(
            tracefs_mount(&long).is_err(),
            "as bufio.Scanner, a long line ends it"
        );
        // Non-UTF-8 mount points are kept as bytes; a bad escape is kept as is.
        let odd = tracefs_mount(b"n /t\\xff\\777\xfe tracefs rw 0 0").unwrap();
        assert_eq!(odd.as_os_str().as_bytes(), b"/t\\xff\\777\xfe");
        assert_eq!(unescape_octal(b"a\\011b\\134\\04"), b"a\tb\\\\04");
    }

    #[test]
    fn tracepoint_ids() {
        let dir = std::env::temp_dir().join(format!("perf-test-{}", std::process::id()));
        let tracepoint = Tracepoint {
            subsystem: "sched".to_owned(),
            event: "sched_switch".to_owned(),
        };
        let id_file = dir.join("events/sched/sched_switch/id");
        std::fs::create_dir_all(id_file.parent().unwrap()).unwrap();
        std::fs::write(&id_file, "317\n").unwrap();
        assert_eq!(tracepoint_id(&dir, &tracepoint).unwrap(), 317);
        for bad in ["", "x\n", "-1\n", "18446744073709551616\n", " 3\n"] {
            std::fs::write(&id_file, bad).unwrap();
            let error = tracepoint_id(&dir, &tracepoint).unwrap_err();
            assert!(
                format!("{error:#}").contains("bad tracepoint id"),
                "{bad:?}: {error:#}"
            );
        }
        std::fs::write(&id_file, b"\xff\xfe\n").unwrap();
        assert!(tracepoint_id(&dir, &tracepoint).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
        let error = tracepoint_id(&dir, &tracepoint).unwrap_err();
        assert!(
            format!("{error:#}").contains("sched:sched_switch"),
            "{error:#}"
        );
    }

    /// A live software counter on CPU 0, where this process may open one (root, CAP_PERFMON,
    /// or perf_event_paranoid <= 0); skipped otherwise.
    #[test]
    fn live_software_counter() {
        let counter = &SOFTWARE[0];
        let fd = match open_counter(counter, 0) {
            Ok(fd) => fd,
            Err(error) => {
                eprintln!("skipped: cannot open a CPU-wide software counter here: {error}");
                return;
            }
        };
        let open = OpenKind {
            kind: &KINDS[1],
            counters: vec![OpenCounter {
                counter,
                per_cpu: vec![(0, fd)],
            }],
        };
        let mut out = Vec::new();
        PerfCollector::update_kind(&open, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].name, "node_perf_page_faults_total");
        assert_eq!(
            out[0].metrics[0].labels,
            [("cpu".to_owned(), "0".to_owned())]
        );
    }

    #[test]
    fn hints_name_the_cause() {
        let host = HostHints {
            event_sources: PathBuf::from("/nonexistent/devices"),
            paranoid: PathBuf::from("/nonexistent/perf_event_paranoid"),
        };
        assert!(
            host.hint("hardware", Some(libc::ENOENT))
                .unwrap()
                .contains("no hardware PMU")
        );
        assert!(host.hint("software", Some(libc::ENOENT)).is_none());
        let denied = host.hint("software", Some(libc::EACCES)).unwrap();
        assert!(
            denied.contains("CAP_PERFMON") && denied.contains("unknown"),
            "{denied}"
        );
        assert!(host.hint("cache", None).is_none());
    }
}
