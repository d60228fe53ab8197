//! Debian's libbpf-tools beside our kernel programs: `runqlat`, `biolatency`, `hardirqs` and
//! `softirqs` attach to the hooks ours use, so their ns per event on the same workload is the
//! yardstick for ours. Each tool runs alone (no collector), with BPF statistics on, while the
//! workload runs once. Its programs are found through its own file descriptors
//! (`/proc/<pid>/fdinfo`: a program's id, type and counters; a link's program and tracepoint),
//! so no other program loaded on the machine is counted, and no program is taken by its name.
use std::{
    collections::HashMap,
    fs::File,
    os::fd::{FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{ProgramCost, WorkloadKind};

/// A libbpf-tools program and the arguments that make it attach to the hooks ours use.
pub struct Peer {
    pub name: &'static str,
    args: &'static [&'static str],
}

/// The tools sharing hooks with a workload's programs. `biolatency -Q` adds `block_rq_insert`
/// (queued time) to its issue and completion hooks, the three ours use; `-D` keys its
/// histogram by disk as ours is keyed by device. `-N` keeps the interrupt tools in nanoseconds.
pub fn for_workload(kind: WorkloadKind) -> &'static [Peer] {
    match kind {
        WorkloadKind::PingPong => &[Peer {
            name: "runqlat",
            args: &[],
        }],
        WorkloadKind::Io => &[
            Peer {
                name: "biolatency",
                args: &["-D", "-Q"],
            },
            Peer {
                name: "hardirqs",
                args: &["-N"],
            },
            Peer {
                name: "softirqs",
                args: &["-N"],
            },
        ],
        WorkloadKind::Tcp | WorkloadKind::Resets => &[],
    }
}

/// What a tool may take to load and attach (BTF parsing, verification) on a loaded VM.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);
/// What a tool may take to print its summary and exit after SIGINT.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `peer` alone with BPF statistics on, runs `workload` once while it traces, and returns
/// the cost of each of its programs that ran meanwhile, by hook. The tool's output goes to
/// `<log_dir>/peer-<name>.log`.
pub fn measure(
    peer: &Peer,
    log_dir: &Path,
    workload: impl FnOnce() -> Duration,
) -> anyhow::Result<Vec<ProgramCost>> {
    let path = ["/usr/sbin", "/usr/bin", "/sbin"]
        .iter()
        .map(|dir| Path::new(dir).join(peer.name))
        .find(|path| path.is_file())
        .with_context(|| {
            format!(
                "{} not installed (Debian's libbpf-tools: `cargo xtask setup`)",
                peer.name
            )
        })?;
    let _stats = StatsOn::enable()?;
    let tool = Tracing::start(
        &path,
        peer.args,
        &log_dir.join(format!("peer-{}.log", peer.name)),
    )?;
    let before = programs(tool.pid())?;
    workload();
    let after = programs(tool.pid())?;
    drop(tool);

    let mut costs: Vec<ProgramCost> = after
        .iter()
        .filter_map(|(id, program)| {
            let hook = program.hook.clone()?;
            let earlier = before.get(id)?;
            let events = program.run_cnt.checked_sub(earlier.run_cnt)?;
            let run_time = program.run_time_ns.checked_sub(earlier.run_time_ns)?;
            (events > 0).then(|| ProgramCost {
                program: hook,
                hook_type: program.hook_type(),
                events: events as f64,
                ns_per_event: run_time as f64 / events as f64,
            })
        })
        .collect();
    if costs.is_empty() {
        bail!(
            "none of its programs ran during the workload ({} loaded, {} attached through a \
             tracepoint link)",
            after.len(),
            after.values().filter(|p| p.hook.is_some()).count()
        );
    }
    costs.sort_by(|a, b| a.program.cmp(&b.program));
    Ok(costs)
}

/// The kernel's BPF run-time statistics, on while this lives: `BPF_ENABLE_STATS` hands out a
/// file descriptor, and the statistics stay on while any such descriptor is open, so they go
/// back off when this drops, or when the benchmark dies.
struct StatsOn {
    _descriptor: OwnedFd,
}

impl StatsOn {
    fn enable() -> anyhow::Result<Self> {
        // From the kernel's uapi/linux/bpf.h: `enum bpf_cmd` and `enum bpf_stats_type`.
        const BPF_ENABLE_STATS: libc::c_long = 32;
        const BPF_STATS_RUN_TIME: u32 = 0;
        /// The `enable_stats` member of `union bpf_attr`; the kernel zero-fills the rest.
        #[repr(C)]
        struct EnableStats {
            kind: u32,
        }
        let attr = EnableStats {
            kind: BPF_STATS_RUN_TIME,
        };
        // SAFETY: `attr` is a live `bpf_attr` prefix of exactly the size passed.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_ENABLE_STATS,
                &raw const attr,
                size_of::<EnableStats>(),
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error())
                .context("turning BPF statistics on (BPF_ENABLE_STATS)");
        }
        let fd = i32::try_from(fd).context("BPF_ENABLE_STATS returned no file descriptor")?;
        // SAFETY: the kernel just opened this descriptor for us; nothing else owns it.
        let descriptor = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self {
            _descriptor: descriptor,
        })
    }
}

/// A tool tracing until dropped, which interrupts it (SIGINT, as Ctrl-C: it prints its
/// summary and detaches) and kills it if it does not exit in time.
struct Tracing {
    child: Child,
}

impl Tracing {
    /// Starts the tool, line-buffered (`stdbuf -oL`) into `log`, and waits until it says it is
    /// tracing: every libbpf-tools program prints "... Hit Ctrl-C to end." once attached.
    fn start(path: &Path, args: &[&str], log: &Path) -> anyhow::Result<Self> {
        let output = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new("stdbuf")
            .arg("-oL")
            .arg(path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()
            .with_context(|| format!("starting stdbuf -oL {}", path.display()))?;
        let mut tool = Self { child };
        let started = Instant::now();
        loop {
            let said = std::fs::read_to_string(log).unwrap_or_default();
            if said.contains("Hit Ctrl-C") {
                return Ok(tool);
            }
            if let Some(status) = tool.child.try_wait()? {
                bail!("exited ({status}) before tracing: {}", last_line(&said));
            }
            if started.elapsed() > ATTACH_TIMEOUT {
                bail!(
                    "not tracing after {} s: {}",
                    ATTACH_TIMEOUT.as_secs(),
                    last_line(&said)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `stdbuf` execs the tool: the child's pid is the tool's.
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Tracing {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill takes plain integers; the pid is our unreaped child's.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        let started = Instant::now();
        while started.elapsed() < EXIT_TIMEOUT {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last non-empty line of a tool's output: its error message, if it failed.
fn last_line(output: &str) -> &str {
    output
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("no output")
}

/// One loaded program of a tool, from its descriptors' fdinfo.
struct Program {
    /// `prog_type` (`enum bpf_prog_type`).
    prog_type: u32,
    run_cnt: u64,
    run_time_ns: u64,
    /// The tracepoint of the link it is attached through; `None` if it is not attached.
    hook: Option<String>,
}

impl Program {
    /// The hook type, in the collector's words: a tracing program attached through a raw
    /// tracepoint link is `tp_btf`.
    fn hook_type(&self) -> String {
        match self.prog_type {
            5 => "tracepoint".into(),
            17 => "raw_tp".into(),
            24 => "raw_tp (writable)".into(),
            26 => "tp_btf".into(),
            other => format!("program type {other}"),
        }
    }
}

/// Every program `pid` holds a descriptor of, by program id, with the tracepoint of the
/// link each is attached through.
fn programs(pid: u32) -> anyhow::Result<HashMap<u32, Program>> {
    let fds = PathBuf::from(format!("/proc/{pid}/fd"));
    let mut programs = HashMap::new();
    let mut hooks = HashMap::new();
    for fd in std::fs::read_dir(&fds).with_context(|| format!("listing {}", fds.display()))? {
        let fd = fd?.file_name();
        // A descriptor closed meanwhile is simply not there any more.
        let Ok(target) = std::fs::read_link(fds.join(&fd)) else {
            continue;
        };
        let Ok(info) = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.display()))
        else {
            continue;
        };
        let field = |key: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
                .map(str::trim)
        };
        let number = |key: &str| field(key).and_then(|value| value.parse::<u64>().ok());
        match target.to_str() {
            Some("anon_inode:bpf-prog") => {
                let (Some(id), Some(prog_type), Some(run_cnt), Some(run_time_ns)) = (
                    number("prog_id"),
                    number("prog_type"),
                    number("run_cnt"),
                    number("run_time_ns"),
                ) else {
                    continue;
                };
                let (Ok(id), Ok(prog_type)) = (u32::try_from(id), u32::try_from(prog_type)) else {
                    continue;
                };
                programs.insert(
                    id,
                    Program {
                        prog_type,
                        run_cnt,
                        run_time_ns,
                        hook: None,
                    },
                );
            }
            Some("anon_inode:bpf_link") => {
                if let (Some(id), Some(tracepoint)) = (number("prog_id"), field("tp_name")) {
                    hooks.insert(id, tracepoint.to_owned());
                }
            }
            _ => {}
        }
    }
    for (id, program) in &mut programs {
        program.hook = hooks.remove(&u64::from(*id));
    }
    Ok(programs)
}

/// Our programs beside the tools', hook by hook: ns per event (medians of the runs), the ratio,
/// and the empty program on the same hook; a tool that could not be measured, with the reason.
pub fn table(
    ours: &[ProgramCost],
    floors: &[ProgramCost],
    peers: &[(&Peer, anyhow::Result<Vec<ProgramCost>>)],
    runs: usize,
) -> String {
    let mut table = format!(
        "\nBeside Debian's libbpf-tools: each tool alone on the same workload with BPF statistics \
         on, {runs} run(s) interleaved with ours; medians. Ratio: ours over the tool's.\n\n\
         | hook | ours: ns per event (hook type) | tool: ns per event (program type) | ratio | \
         empty program | events, ours / tool's |\n|---|---:|---:|---:|---:|---:|\n"
    );
    let mut failures = String::new();
    for (peer, costs) in peers {
        let costs = match costs {
            Ok(costs) => costs,
            Err(error) => {
                failures += &format!("- `{}`: not measured: {error:#}\n", peer.name);
                continue;
            }
        };
        for theirs in costs {
            let find = |list: &[ProgramCost]| {
                list.iter()
                    .find(|cost| cost.program == theirs.program)
                    .map(|cost| (cost.ns_per_event, cost.events, cost.hook_type.clone()))
            };
            let (ours_cell, ratio, events) = match find(ours) {
                Some((ns, events, hook_type)) => (
                    format!("{ns:.0} ({hook_type})"),
                    format!("{:.2}", ns / theirs.ns_per_event),
                    format!("{events:.0} / {:.0}", theirs.events),
                ),
                None => (
                    "not attached".into(),
                    String::new(),
                    format!("- / {:.0}", theirs.events),
                ),
            };
            let floor = find(floors).map_or(String::new(), |(ns, ..)| format!("{ns:.0}"));
            table += &format!(
                "| {} | {ours_cell} | {:.0} ({}, {}) | {ratio} | {floor} | {events} |\n",
                theirs.program, theirs.ns_per_event, peer.name, theirs.hook_type
            );
        }
    }
    if !failures.is_empty() {
        table += &format!("\n{failures}");
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(hook: &str, hook_type: &str, events: f64, ns_per_event: f64) -> ProgramCost {
        ProgramCost {
            program: hook.into(),
            hook_type: hook_type.into(),
            events,
            ns_per_event,
        }
    }

    #[test]
    fn a_missing_tool_is_reported_without_running_the_workload() {
        let missing = Peer {
            name: "no-such-libbpf-tool",
            args: &[],
        };
        let mut ran = false;
        let error = measure(&missing, &std::env::temp_dir(), || {
            ran = true;
            Duration::ZERO
        })
        .err()
        .map(|e| format!("{e:#}"));
        assert!(!ran, "the workload ran without the tool");
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("not installed")),
            "{error:?}"
        );
    }

    #[test]
    fn the_table_puts_each_tool_hook_beside_ours_and_says_why_a_tool_is_missing() {
        let runqlat = &for_workload(WorkloadKind::PingPong)[0];
        let [biolatency, hardirqs, _] = for_workload(WorkloadKind::Io) else {
            panic!("the I/O workload has three peers");
        };
        let ours = [cost("sched_switch", "tp_btf", 400.0, 100.0)];
        let floors = [cost("sched_switch", "tp_btf", 400.0, 50.0)];
        let peers = [
            (
                runqlat,
                Ok(vec![
                    cost("sched_switch", "tp_btf", 401.0, 200.0),
                    cost("sched_wakeup", "raw_tp", 7.0, 80.0),
                ]),
            ),
            (hardirqs, Err(anyhow::anyhow!("exited before tracing"))),
            (biolatency, Ok(vec![])),
        ];
        let table = table(&ours, &floors, &peers, 3);
        assert!(
            table.contains(
                "| sched_switch | 100 (tp_btf) | 200 (runqlat, tp_btf) | 0.50 | 50 | 400 / 401 |"
            ),
            "{table}"
        );
        assert!(
            table.contains("| sched_wakeup | not attached | 80 (runqlat, raw_tp) |  |  | - / 7 |"),
            "{table}"
        );
        assert!(
            table.contains("- `hardirqs`: not measured: exited before tracing"),
            "{table}"
        );
    }

    /// Root, with libbpf-tools and BTF: runqlat's programs are found by its descriptors, with
    /// their hooks, their type and the events of a ping-pong of known size.
    #[test]
    fn runqlat_is_measured_through_its_descriptors() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: not root");
            return;
        }
        let runqlat = &for_workload(WorkloadKind::PingPong)[0];
        if !Path::new("/usr/sbin/runqlat").is_file()
            || !Path::new("/sys/kernel/btf/vmlinux").is_file()
        {
            eprintln!("skipped: no /usr/sbin/runqlat (libbpf-tools) or no kernel BTF");
            return;
        }
        const ROUNDS: usize = 2_000;
        // The tool's log goes to a directory of this run's own, removed afterwards.
        let logs = std::env::temp_dir().join(format!("peers-test-{}", std::process::id()));
        std::fs::create_dir_all(&logs).unwrap();
        let costs = measure(runqlat, &logs, || {
            let started = Instant::now();
            super::super::workload::pipe_ping_pong(ROUNDS, 0);
            started.elapsed()
        });
        let _ = std::fs::remove_dir_all(&logs);
        let costs = costs.unwrap_or_else(|e| panic!("measuring runqlat: {e:#}"));
        let of = |hook: &str| {
            costs
                .iter()
                .find(|cost| cost.program == hook)
                .unwrap_or_else(|| panic!("no {hook} program among {:?}", hooks(&costs)))
        };
        for (hook, at_least) in [
            ("sched_switch", 2 * ROUNDS - 2),
            ("sched_wakeup", ROUNDS - 1),
        ] {
            let cost = of(hook);
            assert_eq!(cost.hook_type, "tp_btf", "{hook}");
            assert!(
                cost.events >= at_least as f64,
                "{hook}: {} events",
                cost.events
            );
            assert!(cost.ns_per_event > 0.0, "{hook}: {} ns", cost.ns_per_event);
        }
    }

    fn hooks(costs: &[ProgramCost]) -> Vec<&str> {
        costs.iter().map(|cost| cost.program.as_str()).collect()
    }
}
