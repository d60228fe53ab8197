//! `cargo xtask kernels`: the kernel matrix (docs/kernels.md).
//!
//! Boots Debian's cloud kernels 5.10 (bullseye-security), 6.1 (bookworm) and 6.12
//! (bookworm-backports) in qemu-system-x86_64 under software emulation, and on request
//! bookworm's arm64 6.1 in qemu-system-aarch64, each with a small initramfs: busybox-static,
//! the collector and the `kernels` integration test (collector/tests/kernels.rs) built for the
//! guest's architecture with the shared libraries they link (none for arm64: built static), and
//! the virtio modules for a scratch disk. Inside, the test runs the collector with each
//! `--ebpf.hook-types` order, drives a known workload and checks every eBPF family against the
//! kernel's own counters, printing `MATRIX` lines on the serial console. Here those lines are
//! read, the checks reported, and the hook types and families each kernel got compared with the
//! table of docs/kernels.md.
//!
//! The kernels come from Debian's archive through a private apt configuration (its own
//! sources.list, lists and cache under `~/.cache/collector/kernels`), so the system's apt
//! sources stay as they are. A kernel that cannot be fetched (no route to the archive, and no
//! copy from an earlier run) is skipped with the reason; anything else that goes wrong fails.
use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};

use crate::{image::Arch, shell};

#[derive(clap::Args)]
pub struct Options {
    /// Only these kernels (repeatable or comma-separated: 5.10, 6.1, 6.12, 6.1-arm64); by
    /// default the x86_64 ones.
    #[arg(long = "kernel", value_delimiter = ',')]
    pub kernels: Vec<String>,
    /// Seconds a guest may run, boot to power-off, before it is stopped as hung.
    #[arg(long, default_value_t = Options::DEFAULT_TIMEOUT)]
    pub timeout: u64,
}

impl Options {
    const DEFAULT_TIMEOUT: u64 = 300;
}

/// The default kernels, with the default timeout: what `cargo xtask test` runs.
impl Default for Options {
    fn default() -> Self {
        Self {
            kernels: Vec::new(),
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

/// One kernel of the matrix: Debian's cloud flavour from one suite, for one machine.
struct Kernel {
    name: &'static str,
    suite: &'static str,
    archive: &'static str,
    machine: &'static Machine,
    /// Run when no `--kernel` is given (and so by `cargo xtask test`).
    by_default: bool,
}

const KERNELS: [Kernel; 4] = [
    Kernel {
        name: "5.10",
        suite: "bullseye-security",
        archive: "http://deb.debian.org/debian-security",
        machine: &AMD64,
        by_default: true,
    },
    Kernel {
        name: "6.1",
        suite: "bookworm",
        archive: "http://deb.debian.org/debian",
        machine: &AMD64,
        by_default: true,
    },
    Kernel {
        name: "6.12",
        suite: "bookworm-backports",
        archive: "http://deb.debian.org/debian",
        machine: &AMD64,
        by_default: true,
    },
    // Graviton's architecture: the programs are the same bytecode, but the kernel's structure
    // layouts, its interrupt controller and timer, and its JIT are arm64's. It takes minutes
    // more (a cross build of the test), so it runs on request.
    Kernel {
        name: "6.1-arm64",
        suite: "bookworm",
        archive: "http://deb.debian.org/debian",
        machine: &ARM64,
        by_default: false,
    },
];

/// How guests of one architecture are emulated.
struct Machine {
    arch: Arch,
    qemu: &'static str,
    /// The Debian package with `qemu`, for the hint when it is missing.
    qemu_package: &'static str,
    /// qemu's board and CPU.
    board: &'static [&'static str],
    /// The kernel's command line beyond what every guest gets: its serial console first.
    cmdline: &'static str,
}

const AMD64: Machine = Machine {
    arch: Arch::Amd64,
    qemu: "qemu-system-x86_64",
    qemu_package: "qemu-system-x86",
    // QEMU 7.2's emulated cmpxchg16b trips 6.12's boot; the kernels run without it.
    board: &["-cpu", "max,-cx16"],
    // Emulated CPUs' TSCs look unsynchronised, which would leave each CPU its own filtered
    // sched_clock; EC2 instances have a stable one.
    cmdline: "console=ttyS0 tsc=reliable",
};

const ARM64: Machine = Machine {
    arch: Arch::Arm64,
    qemu: "qemu-system-aarch64",
    qemu_package: "qemu-system-arm",
    // Graviton's interrupt controller is a GICv3. Pointer authentication with QEMU's own
    // algorithm: emulating the architected one (QARMA) made the boot 15 s instead of 4.4 s.
    board: &[
        "-machine",
        "virt,gic-version=3",
        "-cpu",
        "max,pauth-impdef=on",
    ],
    cmdline: "console=ttyAMA0",
};

/// The architecture the xtask runs on: its guests use the host's busybox and the host build.
const HOST_ARCH: Arch = if cfg!(target_arch = "aarch64") {
    Arch::Arm64
} else {
    Arch::Amd64
};

/// Host seconds a guest may take to reach init; each takes 2 to 8 (arm64) when it boots at all.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
/// The package whose dependency names the suite's current kernel image (Debian's architecture
/// names are the OCI ones).
fn metapackage(arch: Arch) -> String {
    format!("linux-image-cloud-{}", arch.oci())
}

/// The guest's shell and tools when its architecture is not the host's.
const BUSYBOX_PACKAGE: &str = "busybox-static";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Package lists older than this are fetched again.
const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Modules the guest loads (with what they depend on), unless built in: the scratch disk.
const MODULES: [&str; 2] = ["virtio_pci", "virtio_blk"];
/// The test function the guest runs.
const GUEST_TEST: &str = "ebpf_families_agree_with_the_kernels_counters";
/// The orders the guest test runs, in its order.
const ORDERS: [&str; 3] = [
    "tp_btf,raw_tp,tracepoint",
    "raw_tp,tracepoint",
    "tracepoint",
];

/// Programs by the table's column they are reported in.
const GROUPS: [(&str, &[&str]); 6] = [
    (
        "sched",
        &[
            "sched_switch",
            "sched_wakeup",
            "sched_wakeup_new",
            "sched_migrate_task",
        ],
    ),
    (
        "irq",
        &[
            "irq_handler_entry",
            "irq_handler_exit",
            "softirq_entry",
            "softirq_exit",
        ],
    ),
    (
        "block",
        &["block_rq_insert", "block_rq_issue", "block_rq_complete"],
    ),
    (
        "tcp",
        &[
            "tcp_retransmit_skb",
            "tcp_retransmit_synack",
            "tcp_send_reset",
            "tcp_receive_reset",
        ],
    ),
    ("kfree_skb", &["kfree_skb"]),
    ("cgroup_skb", &["cgroup_skb_ingress", "cgroup_skb_egress"]),
];

/// Every family the five eBPF collectors serve where everything attaches; the table names the
/// ones a kernel lacks.
const FAMILIES: [&str; 31] = [
    "ebpf_block_rq_dropped_total",
    "ebpf_block_rq_latency_seconds",
    "ebpf_block_rq_size_bytes",
    "ebpf_build_info",
    "ebpf_cgroup_block_io_bytes_total",
    "ebpf_cgroup_block_io_requests_total",
    "ebpf_cgroup_block_io_time_seconds_total",
    "ebpf_cgroup_cpu_seconds_total",
    "ebpf_cgroup_network_receive_bytes_total",
    "ebpf_cgroup_network_receive_packets_total",
    "ebpf_cgroup_network_transmit_bytes_total",
    "ebpf_cgroup_network_transmit_packets_total",
    "ebpf_cgroup_runqueue_wait_seconds_total",
    "ebpf_cgroup_runqueue_waits_total",
    "ebpf_cgroups_dropped_total",
    "ebpf_cgroups_exported",
    "ebpf_context_switches_total",
    "ebpf_hardirq_seconds_total",
    "ebpf_program_attached",
    "ebpf_program_recursion_misses_total",
    "ebpf_runqueue_latency_dropped_total",
    "ebpf_runqueue_latency_seconds",
    "ebpf_sched_migrations_total",
    "ebpf_sched_wakeups_total",
    "ebpf_skb_drops_total",
    "ebpf_softirq_seconds_total",
    "ebpf_tcp_resets_received_total",
    "ebpf_tcp_resets_sent_total",
    "ebpf_tcp_retransmit_failures_total",
    "ebpf_tcp_retransmits_total",
    // Served by the block collector only when some request went through an I/O scheduler.
    "ebpf_block_rq_queue_seconds",
];

/// Families whose presence depends on the workload, not on the kernel: left out of the table.
const WORKLOAD_FAMILIES: [&str; 1] = ["ebpf_block_rq_queue_seconds"];

pub fn run(root: &Path, options: &Options) -> anyhow::Result<()> {
    let started = Instant::now();
    for name in &options.kernels {
        if !KERNELS.iter().any(|kernel| kernel.name == name) {
            bail!(
                "no kernel {name} in the matrix; there are {}",
                KERNELS.map(|k| k.name).join(", ")
            );
        }
    }
    let kernels: Vec<&Kernel> = KERNELS
        .iter()
        .filter(|kernel| {
            if options.kernels.is_empty() {
                kernel.by_default
            } else {
                options.kernels.iter().any(|k| k == kernel.name)
            }
        })
        .collect();
    let tools = Tools::find(&kernels)?;
    let table = Table::read(&root.join("docs/kernels.md"))?;
    let mut builds: Vec<(Arch, GuestBinaries)> = Vec::new();
    for kernel in &kernels {
        let arch = kernel.machine.arch;
        if !builds.iter().any(|(built, _)| *built == arch) {
            builds.push((arch, build_guest_binaries(arch)?));
        }
    }
    let work = root.join("target/kernels");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"))
        .join("collector/kernels");

    let mut outcomes = Vec::new();
    for kernel in kernels {
        eprintln!("== kernel {} ({})", kernel.name, kernel.suite);
        let outcome = match fetch(&cache, kernel)? {
            Fetched::Skipped(reason) => {
                eprintln!("SKIPPED kernel {}: {reason}", kernel.name);
                Outcome::Skipped(reason)
            }
            Fetched::Packages {
                kernel: deb,
                busybox,
            } => {
                let dir = work.join(kernel.name);
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir)?;
                let image = unpack(&cache, &deb)?;
                let busybox = match busybox {
                    Some(deb) => unpack_deb(&cache, &deb)?.join("bin/busybox"),
                    None => tools.busybox.clone(),
                };
                let binaries = builds
                    .iter()
                    .find(|(arch, _)| *arch == kernel.machine.arch)
                    .map(|(_, binaries)| binaries)
                    .context("no guest build for the kernel's architecture")?;
                let initramfs = dir.join("initramfs.cpio");
                build_initramfs(&busybox, &image, binaries, &initramfs)?;
                let mut guest = boot(kernel.machine, &image, &initramfs, &dir, options.timeout)?;
                if let Some(hang) = guest.hang() {
                    // Seen once in about 50 guests under emulation (docs/kernels.md): the
                    // guest gets one more boot; its first console is kept, and a second hang
                    // fails the kernel.
                    let kept = dir.join("console.hung.log");
                    std::fs::rename(&guest.console, &kept)?;
                    eprintln!(
                        "  HUNG ({hang}); console kept as {}; booting the guest once more",
                        kept.display()
                    );
                    guest = boot(kernel.machine, &image, &initramfs, &dir, options.timeout)?;
                }
                Outcome::Ran(Box::new(evaluate(kernel, &guest, &table)))
            }
        };
        outcomes.push((kernel, outcome));
    }

    eprintln!();
    eprintln!(
        "== kernel matrix ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
    let mut failed = Vec::new();
    for (kernel, outcome) in &outcomes {
        match outcome {
            Outcome::Skipped(reason) => eprintln!("{}: SKIPPED ({reason})", kernel.name),
            Outcome::Ran(report) => {
                eprint!("{}", report.summary);
                if !report.failures.is_empty() {
                    failed.push(kernel.name);
                    for failure in &report.failures {
                        eprintln!("  FAIL {failure}");
                    }
                }
            }
        }
    }
    let observed: Vec<String> = outcomes
        .iter()
        .filter_map(|(_, outcome)| match outcome {
            Outcome::Ran(report) => Some(report.rows.clone()),
            Outcome::Skipped(_) => None,
        })
        .flatten()
        .collect();
    if !observed.is_empty() {
        eprintln!("observed (docs/kernels.md's table rows):");
        for row in observed {
            eprintln!("{row}");
        }
    }
    if !failed.is_empty() {
        bail!(
            "kernel matrix failed on {} (consoles in target/kernels/<kernel>/console.log)",
            failed.join(", ")
        );
    }
    Ok(())
}

enum Outcome {
    Skipped(String),
    Ran(Box<Report>),
}

/// The host's programs the matrix uses.
struct Tools {
    /// The shell and tools of guests of the host's architecture.
    busybox: PathBuf,
}

impl Tools {
    /// Checks that every program the `kernels` need is there.
    fn find(kernels: &[&Kernel]) -> anyhow::Result<Self> {
        let which = |name: &str| {
            std::env::var_os("PATH")
                .into_iter()
                .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
                .map(|dir| dir.join(name))
                .find(|candidate| candidate.is_file())
        };
        for tool in ["apt-get", "apt-cache", "dpkg-deb", "xz", "ldd"] {
            if which(tool).is_none() {
                bail!("{tool} not found on PATH: run `cargo xtask setup`");
            }
        }
        for machine in kernels.iter().map(|kernel| kernel.machine) {
            if which(machine.qemu).is_none() {
                bail!(
                    "{} not found: run `cargo xtask setup` ({})",
                    machine.qemu,
                    machine.qemu_package
                );
            }
            let strip = strip_program(machine.arch);
            if which(&strip).is_none() {
                bail!("{strip} not found on PATH: run `cargo xtask setup`");
            }
        }
        let busybox = PathBuf::from("/bin/busybox");
        // busybox-static's: the guest has no libc for a dynamic one.
        let dynamic = Command::new("ldd")
            .arg(&busybox)
            .output()
            .is_ok_and(|output| output.status.success());
        if !busybox.is_file() || dynamic {
            bail!("no static /bin/busybox: run `cargo xtask setup` (busybox-static)");
        }
        Ok(Self { busybox })
    }
}

// ---- Building what runs in the guest ----

/// The collector and the guest test, as cargo built them for one architecture.
struct GuestBinaries {
    arch: Arch,
    /// The test's `CARGO_BIN_EXE_collector`: the guest has it at the same path.
    collector: PathBuf,
    test: PathBuf,
    /// The shared libraries they load, the dynamic loader included.
    libraries: BTreeSet<PathBuf>,
}

/// For the host's architecture, the debug build the test suite makes anyway; for another, a
/// static one (glibc linked in, as the image's), so no foreign libraries are needed.
fn build_guest_binaries(arch: Arch) -> anyhow::Result<GuestBinaries> {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.args([
        "test",
        "--package",
        "collector",
        "--test",
        "kernels",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ]);
    let native = arch == HOST_ARCH;
    if !native {
        crate::image::static_target(&mut command, arch);
    }
    eprintln!(
        "+ cargo test --package collector --test kernels --no-run{}",
        if native {
            String::new()
        } else {
            format!(" --target {} (static)", arch.triple())
        }
    );
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo")?;
    if !output.status.success() {
        bail!("building the guest test failed ({})", output.status);
    }
    let (mut collector, mut test) = (None, None);
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(executable), Some(name)) = (
            message["executable"].as_str(),
            message["target"]["name"].as_str(),
        ) else {
            continue;
        };
        let is_test = message["profile"]["test"].as_bool() == Some(true);
        match (name, is_test) {
            ("kernels", true) => test = Some(PathBuf::from(executable)),
            ("collector", false) => collector = Some(PathBuf::from(executable)),
            _ => {}
        }
    }
    let collector = collector.context("cargo named no collector binary")?;
    let test = test.context("cargo named no `kernels` test binary")?;
    let mut libraries = BTreeSet::new();
    for binary in [&collector, &test] {
        if native {
            libraries.extend(shared_libraries(binary)?);
        } else {
            let bytes =
                std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
            crate::image::check_static_elf(&bytes, arch)
                .with_context(|| format!("{} is no static executable", binary.display()))?;
        }
    }
    Ok(GuestBinaries {
        arch,
        collector,
        test,
        libraries,
    })
}

// ---- Fetching kernels ----

enum Fetched {
    Packages {
        kernel: PathBuf,
        /// The guest's busybox-static, when the host's cannot run there.
        busybox: Option<PathBuf>,
    },
    Skipped(String),
}

/// apt-get and apt-cache with a configuration of their own for `kernel`'s suite and
/// architecture.
struct PrivateApt {
    dir: PathBuf,
    arch: Arch,
}

impl PrivateApt {
    fn new(cache: &Path, kernel: &Kernel) -> anyhow::Result<Self> {
        let arch = kernel.machine.arch;
        let dir = cache
            .join("apt")
            .join(format!("{}-{}", kernel.suite, arch.oci()));
        for sub in [
            "etc/sources.list.d",
            "etc/preferences.d",
            "state/lists/partial",
            "cache/archives/partial",
            "debs",
        ] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        std::fs::write(
            dir.join("etc/sources.list"),
            format!(
                "deb [signed-by={KEYRING}] {} {} main\n",
                kernel.archive, kernel.suite
            ),
        )?;
        let status = dir.join("state/status");
        if !status.exists() {
            std::fs::write(&status, "")?;
        }
        Ok(Self { dir, arch })
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        let dir = self.dir.display();
        for option in [
            format!("Dir::Etc::SourceList={dir}/etc/sources.list"),
            format!("Dir::Etc::SourceParts={dir}/etc/sources.list.d"),
            format!("Dir::Etc::PreferencesParts={dir}/etc/preferences.d"),
            format!("Dir::Etc::Preferences={dir}/etc/preferences"),
            format!("Dir::State={dir}/state"),
            format!("Dir::State::status={dir}/state/status"),
            format!("Dir::Cache={dir}/cache"),
            format!("APT::Architecture={}", self.arch.oci()),
            format!("APT::Architectures={}", self.arch.oci()),
            "Acquire::Languages=none".into(),
            "APT::Update::Error-Mode=any".into(),
            "Debug::NoLocking=1".into(),
        ] {
            command.arg("-o").arg(option);
        }
        if crate::setup::is_root() {
            // Our own directories, owned by root: no dropping to _apt to download into them.
            command.args(["-o", "APT::Sandbox::User=root"]);
        }
        command
    }

    /// The lists' age, from their last successful update.
    fn lists_age(&self) -> Option<Duration> {
        let stamp = std::fs::metadata(self.dir.join("updated")).ok()?;
        SystemTime::now()
            .duration_since(stamp.modified().ok()?)
            .ok()
    }

    /// `package`'s .deb, downloaded unless an earlier run did (the packages are kept), or why
    /// there is none.
    fn download(&self, package: &str) -> anyhow::Result<Result<PathBuf, String>> {
        let debs = self.dir.join("debs");
        let existing = || -> Option<PathBuf> {
            std::fs::read_dir(&debs)
                .ok()?
                .flatten()
                .map(|entry| entry.path())
                .find(|path| {
                    path.file_name()
                        .and_then(|name| name.to_str())
                        .is_some_and(|name| {
                            name.starts_with(&format!("{package}_")) && name.ends_with(".deb")
                        })
                })
        };
        if let Some(deb) = existing() {
            return Ok(Ok(deb));
        }
        eprintln!(
            "+ apt-get download {package} ({})",
            self.dir.file_name().unwrap_or_default().to_string_lossy()
        );
        let output = self
            .command("apt-get")
            .args(["download", "-q", package])
            .current_dir(&debs)
            .output()
            .context("running apt-get download")?;
        Ok(match existing() {
            Some(deb) if output.status.success() => Ok(deb),
            _ => Err(format!(
                "apt-get download {package} failed: {}",
                last_lines(&output.stderr, 3)
            )),
        })
    }
}

/// The suite's current cloud kernel package and, for a guest the host's busybox cannot run in,
/// busybox-static: downloaded, or earlier downloads when the archive cannot be reached, or why
/// there are none.
fn fetch(cache: &Path, kernel: &Kernel) -> anyhow::Result<Fetched> {
    if !Path::new(KEYRING).is_file() {
        bail!("{KEYRING} is missing: apt-get install debian-archive-keyring");
    }
    let apt = PrivateApt::new(cache, kernel)?;
    let kernel_deb = match fetch_kernel(&apt, kernel)? {
        Ok(deb) => deb,
        Err(reason) => return Ok(Fetched::Skipped(reason)),
    };
    let busybox = if kernel.machine.arch == HOST_ARCH {
        None
    } else {
        match apt.download(BUSYBOX_PACKAGE)? {
            Ok(deb) => Some(deb),
            Err(reason) => return Ok(Fetched::Skipped(reason)),
        }
    };
    Ok(Fetched::Packages {
        kernel: kernel_deb,
        busybox,
    })
}

/// The suite's current cloud kernel package (or the one an earlier run used, when the archive
/// cannot be reached), or why there is none.
fn fetch_kernel(apt: &PrivateApt, kernel: &Kernel) -> anyhow::Result<Result<PathBuf, String>> {
    let earlier = |reason: String| -> Result<PathBuf, String> {
        let name = std::fs::read_to_string(apt.dir.join("current")).ok();
        match name.map(|name| apt.dir.join("debs").join(name.trim())) {
            Some(deb) if deb.is_file() => {
                eprintln!(
                    "note: {reason}; using {} from an earlier run",
                    deb.display()
                );
                Ok(deb)
            }
            _ => Err(reason),
        }
    };
    if apt.lists_age().is_none_or(|age| age > LISTS_MAX_AGE) {
        let output = apt
            .command("apt-get")
            .args(["update", "-q"])
            .output()
            .context("running apt-get update")?;
        if !output.status.success() {
            return Ok(earlier(format!(
                "apt-get update of {} {} failed: {}",
                kernel.archive,
                kernel.suite,
                last_lines(&output.stderr, 3)
            )));
        }
        std::fs::write(apt.dir.join("updated"), "")?;
    }
    let metapackage = metapackage(apt.arch);
    let depends = apt
        .command("apt-cache")
        .args(["depends", &metapackage])
        .output()
        .context("running apt-cache depends")?;
    let text = String::from_utf8_lossy(&depends.stdout);
    let package = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Depends: "))
        .find(|name| name.starts_with("linux-image-"))
        .with_context(|| {
            format!(
                "{metapackage} in {} names no linux-image package: {}",
                kernel.suite,
                last_lines(&depends.stderr, 3)
            )
        })?
        .to_owned();
    Ok(match apt.download(&package)? {
        Ok(deb) => {
            let name = deb.file_name().unwrap_or_default().to_string_lossy();
            std::fs::write(apt.dir.join("current"), name.as_bytes())?;
            Ok(deb)
        }
        Err(reason) => earlier(reason),
    })
}

fn last_lines(bytes: &[u8], count: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(count)..].join(" / ")
}

// ---- Unpacking ----

/// A kernel package's files that the guest needs.
struct KernelImage {
    release: String,
    vmlinuz: PathBuf,
    /// Modules to load, in order (what each depends on first), decompressed.
    modules: Vec<(String, PathBuf)>,
}

/// The tree of a package's files, unpacked into the cache once.
fn unpack_deb(cache: &Path, deb: &Path) -> anyhow::Result<PathBuf> {
    let stem = deb.file_stem().unwrap_or_default().to_string_lossy();
    let tree = cache.join("unpacked").join(stem.as_ref());
    let done = tree.join(".unpacked");
    if !done.exists() {
        let _ = std::fs::remove_dir_all(&tree);
        std::fs::create_dir_all(&tree)?;
        shell::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tree))?;
        std::fs::write(&done, "")?;
    }
    Ok(tree)
}

fn unpack(cache: &Path, deb: &Path) -> anyhow::Result<KernelImage> {
    let tree = unpack_deb(cache, deb)?;
    let boot = tree.join("boot");
    let vmlinuz = std::fs::read_dir(&boot)
        .with_context(|| format!("reading {}", boot.display()))?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .with_context(|| format!("no vmlinuz in {}", deb.display()))?;
    let release = vmlinuz.file_name().unwrap().to_string_lossy()["vmlinuz-".len()..].to_owned();
    let modules_dir = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|dir| tree.join(dir).join(&release))
        .find(|dir| dir.is_dir())
        .with_context(|| format!("no modules for {release} in {}", deb.display()))?;
    let builtin = std::fs::read_to_string(modules_dir.join("modules.builtin")).unwrap_or_default();
    let builtin: BTreeSet<String> = builtin
        .lines()
        .filter_map(|path| path.rsplit('/').next())
        .map(|file| module_name(file.trim_end_matches(".ko")))
        .collect();
    let mut files = BTreeMap::new();
    index_modules(&modules_dir.join("kernel"), &mut files)?;
    let decompressed = tree.join(".modules");
    std::fs::create_dir_all(&decompressed)?;
    let mut modules = Vec::new();
    for name in MODULES {
        add_module(
            &module_name(name),
            &builtin,
            &files,
            &decompressed,
            &mut modules,
        )?;
    }
    Ok(KernelImage {
        release,
        vmlinuz,
        modules,
    })
}

/// Module names use `_` where files may use `-`.
fn module_name(file: &str) -> String {
    file.replace('-', "_")
}

fn index_modules(dir: &Path, files: &mut BTreeMap<String, PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            index_modules(&path, files)?;
        } else if let Some(name) = path.file_name().and_then(|n| n.to_str())
            && let Some(stem) = name
                .strip_suffix(".ko")
                .or_else(|| name.strip_suffix(".ko.xz"))
        {
            files.insert(module_name(stem), path.clone());
        }
    }
    Ok(())
}

/// Adds `name` after what it depends on, decompressed, unless the kernel has it built in.
fn add_module(
    name: &str,
    builtin: &BTreeSet<String>,
    files: &BTreeMap<String, PathBuf>,
    out: &Path,
    modules: &mut Vec<(String, PathBuf)>,
) -> anyhow::Result<()> {
    if builtin.contains(name) || modules.iter().any(|(known, _)| known == name) {
        return Ok(());
    }
    let file = files
        .get(name)
        .with_context(|| format!("module {name} is neither built in nor in the package"))?;
    let bytes = if file.extension().is_some_and(|ext| ext == "xz") {
        let output = Command::new("xz").arg("-dc").arg(file).output()?;
        if !output.status.success() {
            bail!("xz -dc {} failed", file.display());
        }
        output.stdout
    } else {
        std::fs::read(file)?
    };
    // modinfo's `depends=a,b` in the .modinfo section, NUL-terminated.
    let depends = bytes
        .windows(8)
        .position(|window| window == b"depends=")
        .map(|start| {
            let rest = &bytes[start + 8..];
            let end = rest.iter().position(|&b| b == 0).unwrap_or(0);
            String::from_utf8_lossy(&rest[..end]).into_owned()
        })
        .unwrap_or_default();
    for dependency in depends.split(',').filter(|d| !d.is_empty()) {
        add_module(&module_name(dependency), builtin, files, out, modules)?;
    }
    let path = out.join(format!("{name}.ko"));
    std::fs::write(&path, bytes)?;
    modules.push((name.to_owned(), path));
    Ok(())
}

// ---- The initramfs ----

fn build_initramfs(
    busybox: &Path,
    image: &KernelImage,
    binaries: &GuestBinaries,
    out: &Path,
) -> anyhow::Result<()> {
    let mut cpio = Cpio::create(out)?;
    for dir in [
        "dev", "proc", "sys", "tmp", "run", "etc", "root", "bin", "modules",
    ] {
        cpio.dir(dir)?;
    }
    cpio.device("dev/console", 5, 1)?;
    // The other applets' links are made by init (`busybox --install`): busybox may be of an
    // architecture the host cannot run to list them.
    let bytes = std::fs::read(busybox).with_context(|| format!("reading {}", busybox.display()))?;
    cpio.file("bin/busybox", 0o755, &bytes)?;
    cpio.symlink("bin/sh", "busybox")?;
    for library in &binaries.libraries {
        let bytes =
            std::fs::read(library).with_context(|| format!("reading {}", library.display()))?;
        cpio.file(relative(library), 0o755, &bytes)?;
    }
    cpio.file(
        relative(&binaries.collector),
        0o755,
        &stripped(&binaries.collector, binaries.arch)?,
    )?;
    cpio.file(
        "kernels-test",
        0o755,
        &stripped(&binaries.test, binaries.arch)?,
    )?;
    let mut load = String::new();
    for (name, path) in &image.modules {
        cpio.file(&format!("modules/{name}.ko"), 0o644, &std::fs::read(path)?)?;
        load.push_str(&format!(
            "insmod /modules/{name}.ko || echo \"MATRIX error insmod {name}\"\n"
        ));
    }
    cpio.file("init", 0o755, init_script(&load).as_bytes())?;
    cpio.finish()
}

/// The shared libraries `binary` loads, the dynamic loader included, by `ldd`.
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let text = shell::output(Command::new("ldd").arg(binary))
        .with_context(|| format!("ldd {}", binary.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.trim().split(' ').next()?,
                None => line.split(' ').next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

fn relative(path: &Path) -> &str {
    path.to_str().expect("UTF-8 paths").trim_start_matches('/')
}

/// The binutils `strip` for `arch`'s executables.
fn strip_program(arch: Arch) -> String {
    arch.cross_gcc()
        .map_or_else(|| "strip".to_owned(), |prefix| format!("{prefix}-strip"))
}

/// `binary` without its debug information (symbols kept, for backtraces).
fn stripped(binary: &Path, arch: Arch) -> anyhow::Result<Vec<u8>> {
    let temporary = binary.with_extension("kernels-stripped");
    shell::run(
        Command::new(strip_program(arch))
            .arg("--strip-debug")
            .arg("-o")
            .arg(&temporary)
            .arg(binary),
    )?;
    let bytes = std::fs::read(&temporary)?;
    let _ = std::fs::remove_file(&temporary);
    Ok(bytes)
}

fn init_script(load_modules: &str) -> String {
    format!(
        r#"#!/bin/sh
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/bin HOME=/root
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
{load_modules}i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
ip link set lo up
echo 1 > /proc/sys/kernel/sched_schedstats
echo "MATRIX booted $(cut -d' ' -f1 /proc/uptime) $(uname -r) clocksource=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
COLLECTOR_KERNEL_MATRIX_DISK=/dev/vda /kernels-test --exact {GUEST_TEST} --nocapture --test-threads=1
echo "MATRIX exit $? $(cut -d' ' -f1 /proc/uptime)"
poweroff -f
"#
    )
}

/// An uncompressed initramfs in the cpio "newc" format, which the kernel unpacks itself.
struct Cpio {
    out: std::io::BufWriter<std::fs::File>,
    written: u64,
    inode: u32,
    dirs: BTreeSet<String>,
}

impl Cpio {
    fn create(path: &Path) -> anyhow::Result<Self> {
        let file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self {
            out: std::io::BufWriter::new(file),
            written: 0,
            inode: 0,
            dirs: BTreeSet::new(),
        })
    }

    fn dir(&mut self, path: &str) -> anyhow::Result<()> {
        if path.is_empty() || self.dirs.contains(path) {
            return Ok(());
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent)?;
        }
        self.dirs.insert(path.to_owned());
        self.entry(path, 0o040_755, &[], (0, 0))
    }

    fn parent(&mut self, path: &str) -> anyhow::Result<()> {
        match path.rsplit_once('/') {
            Some((parent, _)) => self.dir(parent),
            None => Ok(()),
        }
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> anyhow::Result<()> {
        self.parent(path)?;
        self.entry(path, 0o100_000 | mode, data, (0, 0))
    }

    fn symlink(&mut self, path: &str, target: &str) -> anyhow::Result<()> {
        self.parent(path)?;
        self.entry(path, 0o120_777, target.as_bytes(), (0, 0))
    }

    fn device(&mut self, path: &str, major: u32, minor: u32) -> anyhow::Result<()> {
        self.parent(path)?;
        self.entry(path, 0o020_600, &[], (major, minor))
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        data: &[u8],
        rdev: (u32, u32),
    ) -> anyhow::Result<()> {
        self.inode += 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.inode,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.write(header.as_bytes())?;
        self.write(name.as_bytes())?;
        self.write(&[0])?;
        self.pad()?;
        self.write(data)?;
        self.pad()
    }

    fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> anyhow::Result<()> {
        let padding = (4 - self.written % 4) % 4;
        self.write(&[0; 3][..padding as usize])
    }

    fn finish(mut self) -> anyhow::Result<()> {
        self.entry("TRAILER!!!", 0, &[], (0, 0))?;
        self.out.flush()?;
        Ok(())
    }
}

// ---- Booting ----

/// What a guest printed.
struct Guest {
    lines: Vec<String>,
    /// Host seconds from qemu's start to the guest's init.
    boot_seconds: Option<f64>,
    total_seconds: f64,
    timed_out: bool,
    /// No init within `BOOT_TIMEOUT` (part of `timed_out`).
    boot_hung: bool,
    /// The kernel reported a soft or hard lockup (and, with `softlockup_panic`, stopped).
    locked_up: bool,
    /// The kernel panicked.
    panicked: bool,
    console: PathBuf,
    release: String,
}

impl Guest {
    /// Why the guest hung, if it did: no power-off in time, or a lockup the kernel reported.
    fn hang(&self) -> Option<&'static str> {
        if self.boot_hung {
            Some("no init within the boot timeout")
        } else if self.timed_out {
            Some("no power-off before the timeout")
        } else if self.locked_up {
            Some("the kernel reported a lockup")
        } else if self.panicked {
            Some("the kernel panicked")
        } else {
            None
        }
    }
}

fn boot(
    machine: &Machine,
    image: &KernelImage,
    initramfs: &Path,
    dir: &Path,
    timeout: u64,
) -> anyhow::Result<Guest> {
    let disk = dir.join("disk.img");
    std::fs::File::create(&disk)?.set_len(16 << 20)?;
    let console = dir.join("console.log");
    let mut command = Command::new(machine.qemu);
    command
        .args(["-nodefaults", "-no-user-config", "-accel", "tcg"])
        .args(machine.board)
        .args(["-smp", "2", "-m", "1536"])
        .arg("-kernel")
        .arg(&image.vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        // Warnings and worse reach the console (a lockup's backtrace among them), and a
        // lockup ends the guest at once.
        .arg("-append")
        .arg(format!(
            "{} quiet loglevel=5 panic=-1 softlockup_panic=1",
            machine.cmdline
        ))
        .arg("-drive")
        .arg(format!(
            "file={},if=none,id=disk,format=raw,cache=unsafe",
            disk.display()
        ))
        // No volatile cache: no flushes, so diskstats' writes are the test's writes.
        .args(["-device", "virtio-blk-pci,drive=disk,write-cache=off"])
        .args(["-display", "none", "-serial", "stdio", "-no-reboot"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    eprintln!("+ {} ... -kernel {}", machine.qemu, image.vmlinuz.display());
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", machine.qemu))?;
    let stdout = child.stdout.take().expect("piped");
    let (sender, receiver) = std::sync::mpsc::channel::<(Instant, String)>();
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&line)
                .trim_end_matches(['\r', '\n'])
                .to_owned();
            if sender.send((Instant::now(), text)).is_err() {
                break;
            }
            line.clear();
        }
    });
    let mut log = std::fs::File::create(&console)?;
    let mut lines = Vec::new();
    let mut boot_seconds = None;
    let deadline = started + Duration::from_secs(timeout);
    let mut timed_out = false;
    let mut boot_hung;
    let mut locked_up = false;
    let mut panicked = false;
    loop {
        // Checked on every line too: a guest printing without end must not outlive its time.
        // A guest that has not reached init by BOOT_TIMEOUT never will (seen under emulation,
        // stuck in early boot): it is stopped then, not at the whole run's deadline.
        boot_hung = boot_seconds.is_none() && started.elapsed() > BOOT_TIMEOUT;
        if boot_hung || Instant::now() > deadline {
            timed_out = true;
            let _ = child.kill();
            break;
        }
        match receiver.recv_timeout(Duration::from_millis(200)) {
            Ok((at, line)) => {
                writeln!(log, "{line}")?;
                if let Some(matrix) = line.find("MATRIX ").map(|start| &line[start..]) {
                    if matrix.starts_with("MATRIX booted") {
                        boot_seconds = Some(at.duration_since(started).as_secs_f64());
                    }
                    if matrix.contains(" FAIL ")
                        || matrix.starts_with("MATRIX booted")
                        || matrix.starts_with("MATRIX exit")
                        || matrix.starts_with("MATRIX error")
                    {
                        eprintln!("  {matrix}");
                    }
                    lines.push(matrix.to_owned());
                } else if line.contains("soft lockup") || line.contains("hard LOCKUP") {
                    locked_up = true;
                    eprintln!("  {line}");
                } else if line.contains("Kernel panic") {
                    panicked = true;
                    eprintln!("  {line}");
                } else if line.contains("panicked") || line.contains("BUG:") {
                    eprintln!("  {line}");
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = child.wait();
    let _ = reader.join();
    Ok(Guest {
        lines,
        boot_seconds,
        total_seconds: started.elapsed().as_secs_f64(),
        timed_out,
        boot_hung,
        locked_up,
        panicked,
        console,
        release: image.release.clone(),
    })
}

// ---- Results ----

/// One order's results, from the guest's `MATRIX` lines.
#[derive(Default)]
struct OrderResult {
    attached: BTreeMap<String, String>,
    success: BTreeMap<String, String>,
    families: BTreeSet<String>,
    facts: BTreeMap<String, String>,
    /// family → (passed, failed)
    checks: BTreeMap<String, (usize, Vec<String>)>,
    check_lines: Vec<String>,
    warnings: Vec<String>,
}

struct Report {
    summary: String,
    failures: Vec<String>,
    /// This kernel's rows of the table, as observed.
    rows: Vec<String>,
}

fn evaluate(kernel: &Kernel, guest: &Guest, table: &Table) -> Report {
    let mut orders: BTreeMap<String, OrderResult> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut exit = None;
    let mut known_failed = 0;
    for line in &guest.lines {
        let mut words = line.splitn(4, ' ');
        let (_, kind) = (words.next(), words.next().unwrap_or(""));
        match kind {
            "exit" => exit = words.next().map(str::to_owned),
            "error" => failures.push(line.clone()),
            "attached" | "success" | "families" | "fact" | "check" | "log" => {
                let (Some(order), rest) = (words.next(), words.next().unwrap_or("")) else {
                    continue;
                };
                let result = orders.entry(order.to_owned()).or_default();
                let mut fields = rest.splitn(2, ' ');
                let (first, second) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
                match kind {
                    "attached" => {
                        result.attached.insert(first.to_owned(), second.to_owned());
                    }
                    "success" => {
                        result.success.insert(first.to_owned(), second.to_owned());
                    }
                    "families" => result.families = first.split(',').map(str::to_owned).collect(),
                    "fact" => {
                        result.facts.insert(first.to_owned(), second.to_owned());
                    }
                    "log" => result.warnings.push(rest.to_owned()),
                    _ => {
                        let entry = result.checks.entry(first.to_owned()).or_default();
                        let mut parts = second.splitn(3, ' ');
                        let (name, verdict, detail) = (
                            parts.next().unwrap_or(""),
                            parts.next().unwrap_or(""),
                            parts.next().unwrap_or(""),
                        );
                        if verdict == "ok" {
                            entry.0 += 1;
                        } else if let Some(issue) = known_issue(kernel.name, order, name) {
                            entry.1.push(format!("{name} (known: {issue})"));
                            known_failed += 1;
                        } else {
                            entry.1.push(name.to_owned());
                            failures.push(format!("{order} {first} {name}: {detail}"));
                        }
                        result
                            .check_lines
                            .push(format!("{first} {name} {verdict} {detail}"));
                    }
                }
            }
            _ => {}
        }
    }
    if guest.timed_out {
        failures.push("the guest did not power off within its time limit".to_owned());
    }
    match exit.as_deref().and_then(|e| e.split(' ').next()) {
        Some("0") => {}
        // It fails when a check does: known issues only are not a failure of the matrix.
        Some(_) if known_failed > 0 && failures.is_empty() => {}
        Some(code) => failures.push(format!("the guest test exited with {code}")),
        None => failures.push("the guest test did not finish".to_owned()),
    }

    let mut summary = format!(
        "{} ({}): booted in {}, {:.0} s in all; console {}\n",
        kernel.name,
        guest.release,
        guest
            .boot_seconds
            .map_or("(never)".to_owned(), |s| format!("{s:.1} s")),
        guest.total_seconds,
        guest.console.display()
    );
    let mut rows = Vec::new();
    for order in ORDERS {
        let Some(result) = orders.get(order) else {
            failures.push(format!("{order}: no results"));
            continue;
        };
        let observed = Row::observe(kernel.name, order, result);
        match table
            .rows
            .iter()
            .find(|row| row.kernel == kernel.name && row.order == order)
        {
            None => failures.push(format!(
                "{order}: docs/kernels.md has no row for {} and this order",
                kernel.name
            )),
            Some(documented) => {
                for (column, (want, got)) in Row::COLUMNS
                    .iter()
                    .zip(documented.cells.iter().zip(&observed.cells))
                {
                    if want != got {
                        failures.push(format!(
                            "{order}: docs/kernels.md says {column} is `{want}`, observed `{got}`"
                        ));
                    }
                }
            }
        }
        rows.push(observed.markdown());
        summary.push_str(&format!("  --ebpf.hook-types={order}:\n"));
        summary.push_str(&format!(
            "    attached: {}\n",
            Row::COLUMNS[..GROUPS.len()]
                .iter()
                .zip(&observed.cells)
                .map(|(column, cell)| format!("{column} {cell}"))
                .collect::<Vec<_>>()
                .join("; ")
        ));
        let failing: Vec<&String> = result
            .success
            .iter()
            .filter(|(_, value)| value.as_str() != "1")
            .map(|(collector, _)| collector)
            .collect();
        if !failing.is_empty() {
            summary.push_str(&format!(
                "    collectors failing their scrape: {failing:?}\n"
            ));
        }
        for (family, (passed, failed)) in &result.checks {
            summary.push_str(&format!(
                "    {family}: {passed} checks passed{}\n",
                if failed.is_empty() {
                    String::new()
                } else {
                    format!(", FAILED: {}", failed.join(", "))
                }
            ));
        }
        for line in &result.check_lines {
            summary.push_str(&format!("      {line}\n"));
        }
        for (name, value) in &result.facts {
            summary.push_str(&format!("    {name}: {value}\n"));
        }
        for warning in &result.warnings {
            summary.push_str(&format!("    log: {warning}\n"));
        }
    }
    Report {
        summary,
        failures: failures
            .into_iter()
            .map(|failure| format!("{}: {failure}", kernel.name))
            .collect(),
        rows,
    }
}

/// Checks known to fail on a kernel with some orders, with the reason (docs/kernels.md,
/// "Findings"): reported on every run, not counted as failures.
const KNOWN_ISSUES: [(&str, &str, &str, &str); 2] = [
    (
        "5.10",
        "raw_tp,tracepoint",
        "cpu_seconds=cpu.stat:usage_usec(5%)",
        REASON_510_CGROUP_CPU,
    ),
    (
        "5.10",
        "tracepoint",
        "cpu_seconds=cpu.stat:usage_usec(5%)",
        REASON_510_CGROUP_CPU,
    ),
];

const REASON_510_CGROUP_CPU: &str = "on 5.10, raw_tp/tracepoint charging misses CPU time the \
     pod's writer thread spends in some runs (0.2-0.5 s); tp_btf counts it, as 6.1 and 6.12 do \
     with every hook type";

fn known_issue(kernel: &str, order: &str, check: &str) -> Option<&'static str> {
    KNOWN_ISSUES
        .iter()
        .find(|(k, o, c, _)| *k == kernel && *o == order && *c == check)
        .map(|(_, _, _, reason)| *reason)
}

/// A row of docs/kernels.md's table: a kernel, an order, and its cells.
struct Row {
    kernel: String,
    order: String,
    cells: Vec<String>,
}

impl Row {
    /// The table's columns after the kernel and the order.
    const COLUMNS: [&str; 10] = [
        "sched",
        "irq",
        "block",
        "tcp",
        "kfree_skb",
        "cgroup_skb",
        "collectors failing",
        "families absent",
        "kind=\"tlp\"",
        "resets sent counted",
    ];

    fn observe(kernel: &str, order: &str, result: &OrderResult) -> Self {
        let mut cells = Vec::new();
        for (_, programs) in GROUPS {
            let types: Vec<&str> = programs
                .iter()
                .map(|program| {
                    result
                        .attached
                        .get(*program)
                        .map_or("absent", String::as_str)
                })
                .collect();
            let first = types[0];
            cells.push(if types.iter().all(|t| *t == first) {
                first.to_owned()
            } else {
                programs
                    .iter()
                    .zip(&types)
                    .map(|(program, t)| format!("{program}: {t}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            });
        }
        let failing: Vec<&str> = result
            .success
            .iter()
            .filter(|(_, value)| value.as_str() != "1")
            .map(|(collector, _)| collector.as_str())
            .collect();
        cells.push(if failing.is_empty() {
            "none".into()
        } else {
            failing.join(", ")
        });
        let absent: Vec<&str> = FAMILIES
            .iter()
            .filter(|family| !WORKLOAD_FAMILIES.contains(family))
            .filter(|family| !result.families.contains(**family))
            .copied()
            .chain(
                result
                    .families
                    .iter()
                    .filter(|family| !FAMILIES.contains(&family.as_str()))
                    .map(|_| "(a family the xtask does not know)"),
            )
            .collect();
        cells.push(if absent.is_empty() {
            "none".into()
        } else {
            absent.join(", ")
        });
        cells.push(
            result
                .facts
                .get("loss_probes_told_apart")
                .cloned()
                .unwrap_or_else(|| "-".into()),
        );
        cells.push(
            result
                .facts
                .get("resets_sent_counted")
                .map(|seen| seen.replace('_', " "))
                .unwrap_or_else(|| "-".into()),
        );
        Self {
            kernel: kernel.to_owned(),
            order: order.to_owned(),
            cells,
        }
    }

    fn markdown(&self) -> String {
        let mut line = format!("| {} | `{}` |", self.kernel, self.order);
        for cell in &self.cells {
            line.push_str(&format!(" {cell} |"));
        }
        line
    }
}

/// The table of docs/kernels.md: the rows under the heading line `| Kernel | Order | sched ...`.
struct Table {
    rows: Vec<Row>,
}

impl Table {
    fn read(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut rows = Vec::new();
        let mut in_table = false;
        for line in text.lines() {
            let cells: Vec<String> = line
                .trim()
                .trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().replace('`', ""))
                .collect();
            if !line.trim_start().starts_with('|') {
                in_table = false;
                continue;
            }
            if cells.first().is_some_and(|c| c == "Kernel")
                && cells.get(2).is_some_and(|c| c == "sched")
            {
                in_table = true;
                continue;
            }
            if !in_table
                || cells
                    .iter()
                    .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'))
            {
                continue;
            }
            if cells.len() != 2 + Row::COLUMNS.len() {
                bail!(
                    "{}: table row with {} cells: {line}",
                    path.display(),
                    cells.len()
                );
            }
            rows.push(Row {
                kernel: cells[0].clone(),
                order: cells[1].clone(),
                cells: cells[2..].to_vec(),
            });
        }
        Ok(Self { rows })
    }
}
