//! Loads the kernel programs once, probes which hook type the kernel accepts for every hook the
//! enabled collectors need (tp_btf → raw_tp → tracepoint by default), and attaches the first
//! that works. One missing hook is a log line and an `ebpf_program_attached 0`, never an exit.
//! Links are owned by the loaded object: dropping the runtime detaches everything, and nothing
//! is pinned.
use std::{
    collections::HashMap,
    os::fd::OwnedFd,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::Map,
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, RawTracePoint, TracePoint,
    },
};

use super::{
    Discovery, EbpfOptions, Hook, HookType, ObjectSettings,
    histogram::{BucketRange, HistogramBuckets},
    layout,
};

/// The compiled kernel programs (collector-ebpf), built by build.rs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/collector-ebpf"));

#[cfg(ebpf_stub)]
unsafe extern "C" {
    /// Deliberately undefined: build.rs found no eBPF toolchain and embedded an empty object, so
    /// a real build must not link. Run `cargo xtask setup`.
    fn collector_built_without_the_ebpf_toolchain_run_cargo_xtask_setup() -> !;
}

pub(crate) fn object() -> &'static [u8] {
    #[cfg(ebpf_stub)]
    unsafe {
        collector_built_without_the_ebpf_toolchain_run_cargo_xtask_setup()
    }
    #[cfg(not(ebpf_stub))]
    OBJECT
}

/// A cgroup_skb program, attached to the cgroup v2 root by the collector that reads its map.
pub struct CgroupSkbProgram {
    pub name: &'static str,
    /// Its stand-in that does nothing (`--ebpf.empty-programs`).
    pub empty: &'static str,
    pub attach_type: CgroupSkbAttachType,
}

pub struct EbpfRuntime {
    /// Held for program info (statistics) at scrape time; maps are taken out at start-up.
    ebpf: Mutex<Ebpf>,
    attached: HashMap<&'static str, HookType>,
    /// Keeps `kernel.bpf_stats_enabled` on while we run (`--ebpf.enable-stats`).
    stats_fd: Option<OwnedFd>,
    /// When the sysctl was last read and what it said: every eBPF collector asks each scrape.
    stats_sysctl: Mutex<ReadAt<bool>>,
    /// Each program's recursion misses, and when they were read.
    recursion_misses: Mutex<HashMap<&'static str, ReadAt<Option<u64>>>>,
    /// This kernel's drop reasons, found with the layout: the per-reason array was sized by them.
    drop_reasons: Option<layout::DropReasons>,
    /// What the programs were told of the kernel's layout.
    kernel_layout: collector_common::KernelLayout,
    /// The empty programs are attached instead of ours (`--ebpf.empty-programs`).
    empty_programs: bool,
    /// `--ebpf.histogram-buckets`: the readers ask it for each family's exported range.
    histogram_buckets: HistogramBuckets,
}

/// Run time and run count of one program, from the kernel's BPF statistics.
pub struct ProgramStats {
    pub run_time: Duration,
    pub run_count: u64,
}

impl EbpfRuntime {
    /// Loads the object with `settings` and the layout `discovery` found, and attaches `hooks`.
    /// Fails only if nothing can be loaded at all (no CAP_BPF, no BPF support); a hook the
    /// kernel refuses is logged and left out.
    pub fn start(
        hooks: &[&'static Hook],
        discovery: Discovery,
        settings: &ObjectSettings,
        options: &EbpfOptions,
    ) -> anyhow::Result<Self> {
        raise_memlock_limit();
        let Discovery {
            layout: kernel_layout,
            drop_reasons,
            problems,
        } = discovery;
        // Informational: what a missing fact costs is logged per hook, as a warning, if it
        // ends up mattering.
        for problem in &problems {
            tracing::info!("kernel layout: {problem}");
        }
        tracing::debug!(
            ?kernel_layout,
            ?settings,
            "kernel layout and object settings"
        );
        // EbpfLoader::new parses the kernel BTF itself (aya 0.14 has no way around it) and loads
        // with that; the copy attaching needs is parsed after the loader is gone, so that two
        // full parses never coexist at the start-up peak.
        let mut ebpf = {
            let mut loader = EbpfLoader::new();
            loader.override_global("KERNEL_LAYOUT", &kernel_layout, true);
            for (name, value) in settings.globals() {
                loader.override_global(name, value, true);
            }
            for (name, entries) in settings.map_sizes() {
                loader.map_max_entries(name, entries);
            }
            loader.load(object())
            // The loader, and its parse of the kernel BTF, end here.
        }
        .context("loading the eBPF object (needs CAP_BPF and CAP_PERFMON, or root)")?;
        let btf = match Btf::from_sys_fs() {
            Ok(btf) => Some(btf),
            Err(e) => {
                tracing::warn!(err = %e, "kernel BTF unavailable: tp_btf hooks disabled");
                None
            }
        };

        let stats_fd = if options.enable_stats {
            match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    tracing::warn!(err = %e, "cannot enable BPF run-time statistics (needs CAP_SYS_ADMIN)");
                    None
                }
            }
        } else {
            None
        };

        let mut attached = HashMap::new();
        for hook in hooks {
            match attach_first_accepted(
                &mut ebpf,
                hook,
                &options.hook_types,
                btf.as_ref(),
                &kernel_layout,
                options.empty_programs,
            ) {
                Ok(hook_type) => {
                    tracing::info!(hook = hook.name, hook_type = %hook_type, "attached");
                    attached.insert(hook.name, hook_type);
                }
                Err(reasons) => {
                    tracing::warn!(hook = hook.name, reasons = %reasons, "hook unavailable; its metrics are missing");
                }
            }
        }
        Ok(Self {
            ebpf: Mutex::new(ebpf),
            attached,
            stats_fd,
            stats_sysctl: Mutex::new(None),
            recursion_misses: Mutex::default(),
            drop_reasons,
            kernel_layout,
            empty_programs: options.empty_programs,
            histogram_buckets: options.histogram_buckets,
        })
    }

    /// The name in the object of the program attached to `hook` as `hook_type`.
    pub fn program_name(&self, hook: &Hook, hook_type: HookType) -> &'static str {
        hook.program(hook_type, self.empty_programs)
    }

    /// The name in the object of the cgroup_skb program `program` is attached as.
    pub fn cgroup_skb_program_name(&self, program: &CgroupSkbProgram) -> &'static str {
        if self.empty_programs {
            program.empty
        } else {
            program.name
        }
    }

    /// Hands a map over to the collector that reads it.
    pub fn take_map(&self, name: &str) -> anyhow::Result<Map> {
        self.ebpf
            .lock()
            .expect("ebpf lock poisoned")
            .take_map(name)
            .with_context(|| format!("map {name} missing from the eBPF object"))
    }

    /// Attaches the cgroup_skb `programs` to `cgroup` (the cgroup v2 root: they then see every
    /// socket's packets), alongside any other programs there. All or none.
    pub fn attach_cgroup_skb(
        &self,
        cgroup: &std::fs::File,
        programs: &[CgroupSkbProgram],
    ) -> anyhow::Result<()> {
        // From 5.7 aya attaches through a BPF link, which always coexists with other programs
        // and takes no flags (BPF_F_ALLOW_MULTI there is EINVAL); before, through
        // BPF_PROG_ATTACH, where allowing others must be asked for.
        use aya::util::KernelVersion;
        let mode = if KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(5, 7, 0)) {
            CgroupAttachMode::Single
        } else {
            CgroupAttachMode::AllowMultiple
        };
        let mut ebpf = self.ebpf.lock().expect("ebpf lock poisoned");
        let mut attached: Vec<&str> = Vec::new();
        for program in programs {
            let name = self.cgroup_skb_program_name(program);
            let result = (|| -> anyhow::Result<()> {
                let loaded: &mut CgroupSkb = ebpf
                    .program_mut(name)
                    .with_context(|| format!("program {name} missing from the eBPF object"))?
                    .try_into()?;
                loaded.load()?;
                loaded.attach(cgroup, program.attach_type, mode)?;
                Ok(())
            })();
            if let Err(e) = result {
                for name in attached {
                    let program: Option<&mut CgroupSkb> =
                        ebpf.program_mut(name).and_then(|p| p.try_into().ok());
                    if let Some(program) = program {
                        let _ = program.unload();
                    }
                }
                return Err(e).with_context(|| format!("attaching {name}"));
            }
            attached.push(name);
        }
        Ok(())
    }

    /// The `le` buckets to export of a histogram family that can measure `measurable`.
    pub fn histogram_range(&self, measurable: BucketRange) -> BucketRange {
        self.histogram_buckets.range(measurable)
    }

    /// The hook type `hook` is attached with, if it is.
    pub fn attached(&self, hook: &Hook) -> Option<HookType> {
        self.attached.get(hook.name).copied()
    }

    /// `enum skb_drop_reason` of the running kernel, as the `SKB_DROP_REASONS` map was sized.
    pub fn drop_reasons(&self) -> Option<&layout::DropReasons> {
        self.drop_reasons.as_ref()
    }

    /// The kernel layout facts the programs were loaded with.
    pub fn kernel_layout(&self) -> &collector_common::KernelLayout {
        &self.kernel_layout
    }

    /// Whether run-time statistics are being collected (by us or by someone else's sysctl).
    /// The sysctl is read at most once a second.
    pub fn stats_enabled(&self) -> bool {
        if self.stats_fd.is_some() {
            return true;
        }
        let mut last = self.stats_sysctl.lock().expect("stats lock poisoned");
        at_most_once_a_second(&mut last, || {
            std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
                .is_ok_and(|v| v.trim() == "1")
        })
    }

    /// Times the kernel skipped the loaded program `name` because a BPF program was already
    /// running on that CPU (a classic tracepoint hit from inside another program, say), from its
    /// fdinfo; `None` before 5.12, whose kernels do not count them. Read at most once a second.
    pub fn recursion_misses(&self, name: &'static str) -> Option<u64> {
        let mut cache = self.recursion_misses.lock().expect("misses lock poisoned");
        at_most_once_a_second(cache.entry(name).or_default(), || {
            use std::os::fd::{AsFd as _, AsRawFd as _};
            let ebpf = self.ebpf.lock().expect("ebpf lock poisoned");
            let program = ebpf.program(name);
            let fd = program
                .and_then(|p| p.fd().ok())
                .map(|fd| fd.as_fd().as_raw_fd());
            fd.and_then(|fd| std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok())
                .and_then(|fdinfo| {
                    fdinfo
                        .lines()
                        .find_map(|line| line.strip_prefix("recursion_misses:"))
                        .and_then(|value| value.trim().parse().ok())
                })
        })
    }

    /// Statistics of the loaded program `name` (as named in collector-ebpf).
    pub fn program_stats(&self, name: &str) -> Option<ProgramStats> {
        let ebpf = self.ebpf.lock().expect("ebpf lock poisoned");
        let info = ebpf.program(name)?.info().ok()?;
        Some(ProgramStats {
            run_time: info.run_time(),
            run_count: info.run_count(),
        })
    }
}

/// A value read from the kernel, and when; `None` until first read.
type ReadAt<T> = Option<(Instant, T)>;

/// The value `slot` holds if it was read less than a second ago, else `read()`'s, kept: what
/// every eBPF collector asks on every scrape, read from the kernel once a second.
fn at_most_once_a_second<T: Copy>(slot: &mut Option<(Instant, T)>, read: impl FnOnce() -> T) -> T {
    match *slot {
        Some((read_at, value)) if read_at.elapsed() < Duration::from_secs(1) => value,
        _ => {
            let value = read();
            *slot = Some((Instant::now(), value));
            value
        }
    }
}

/// Tries each hook type in order; on failure returns every reason, for one log line.
fn attach_first_accepted(
    ebpf: &mut Ebpf,
    hook: &Hook,
    hook_types: &[HookType],
    btf: Option<&Btf>,
    kernel_layout: &collector_common::KernelLayout,
    empty_programs: bool,
) -> Result<HookType, String> {
    let mut reasons = Vec::new();
    for &hook_type in hook_types {
        let result = match (hook.requires)(kernel_layout, hook_type) {
            Some(missing) => Err(anyhow!("{missing}")),
            None => attach(
                ebpf,
                hook,
                hook_type,
                hook.program(hook_type, empty_programs),
                btf,
            ),
        };
        match result {
            Ok(()) => return Ok(hook_type),
            Err(e) => {
                tracing::debug!(hook = hook.name, hook_type = %hook_type, err = format!("{e:#}"), "hook type refused");
                reasons.push(format!("{hook_type}: {}", first_line(&format!("{e:#}"))));
            }
        }
    }
    if reasons.is_empty() {
        reasons.push("no hook types allowed (--ebpf.hook-types)".to_owned());
    }
    Err(reasons.join("; "))
}

/// Loads and attaches the program `name` to `hook` as `hook_type`.
fn attach(
    ebpf: &mut Ebpf,
    hook: &Hook,
    hook_type: HookType,
    name: &str,
    btf: Option<&Btf>,
) -> anyhow::Result<()> {
    let program = ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing from the eBPF object"))?;
    match hook_type {
        HookType::BtfTracepoint => {
            let btf = btf.context("kernel BTF unavailable")?;
            let program: &mut BtfTracePoint = program.try_into()?;
            program.load(hook.name, btf)?;
            if let Err(e) = program.attach() {
                let _ = program.unload();
                return Err(e.into());
            }
        }
        HookType::RawTracepoint => {
            let program: &mut RawTracePoint = program.try_into()?;
            program.load()?;
            if let Err(e) = program.attach(hook.name) {
                let _ = program.unload();
                return Err(e.into());
            }
        }
        HookType::Tracepoint => {
            if layout::tracefs_root().is_none() {
                bail!("tracefs not mounted");
            }
            let program: &mut TracePoint = program.try_into()?;
            program.load()?;
            if let Err(e) = program.attach(hook.category, hook.name) {
                let _ = program.unload();
                return Err(e.into());
            }
        }
    }
    Ok(())
}

/// Verifier logs run to pages; the warning keeps their first line, debug has the rest.
fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; later ones ignore it.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid, initialised struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!(err = %std::io::Error::last_os_error(), "cannot raise RLIMIT_MEMLOCK");
    }
}
