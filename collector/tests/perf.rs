//! The `perf` collector against the live kernel: its software counters (and tracepoints) must
//! grow by at least a workload of known size, pinned to CPU 0; the profilers the host cannot
//! open (hardware and cache ones without a hardware PMU, as in most VMs; every one without
//! CAP_PERFMON under perf_event_paranoid > 0) must be reported once each in the log, never per
//! scrape or per CPU, while the collector still succeeds; and its descriptors stay bounded.
mod common;

use std::{path::Path, process::Command, time::Duration};

use common::{
    Daemon, Scrape,
    daemon::BINARY,
    online_cpus, only_collector,
    workload::{flip_between_cpus, pin_to_cpu, pipe_ping_pong, spawn_processes},
};

const PAGES: usize = 2000;
const ROUNDS: usize = 500;
const FORKS: usize = 20;
const MIGRATIONS: usize = 50;

fn daemon(extra: &[&str]) -> Daemon {
    let mut args = only_collector("perf");
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start(&args)
}

/// Writes to `pages` never-touched anonymous pages (huge pages refused), from a thread on
/// CPU 0: one minor page fault each.
fn touch_fresh_pages(pages: usize) {
    std::thread::spawn(move || {
        pin_to_cpu(0);
        // SAFETY: sysconf takes a constant; the mapping is private, anonymous, of `len` bytes,
        // written only inside its bounds and unmapped once.
        unsafe {
            let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
            let len = pages * page;
            let memory = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(memory, libc::MAP_FAILED, "mmap");
            libc::madvise(memory, len, libc::MADV_NOHUGEPAGE);
            for i in 0..pages {
                std::ptr::write_volatile(memory.cast::<u8>().add(i * page), 1);
            }
            libc::munmap(memory, len);
        }
    })
    .join()
    .expect("page-touching thread");
}

/// Starts and reaps `count` processes from a thread on CPU 0: `count` forks there.
fn fork_on_cpu0(count: usize) {
    std::thread::spawn(move || {
        pin_to_cpu(0);
        spawn_processes(count);
    })
    .join()
    .expect("forking thread");
}

/// The growth of `name{cpu}` (all CPUs when `None`) between two scrapes.
fn growth(before: &Scrape, after: &Scrape, name: &str, cpu: Option<&str>) -> f64 {
    let labels: Vec<(&str, &str)> = cpu.map(|cpu| ("cpu", cpu)).into_iter().collect();
    assert!(after.has(name), "{name} missing:\n{}", after.text);
    after.sum(name, &labels) - before.sum(name, &labels)
}

/// The perf_event descriptors the daemon holds.
fn perf_fds(daemon: &Daemon) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", daemon.pid()))
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy() == "anon_inode:[perf_event]")
        .count()
}

/// The log lines of perf's start-up warning for profiler `kind`.
fn warnings(log: &str, kind: &str) -> Vec<String> {
    let needle = format!("perf {kind} profilers could not be opened");
    log.lines()
        .filter(|line| line.contains(&needle))
        .map(str::to_owned)
        .collect()
}

fn has_hardware_pmu() -> bool {
    Path::new("/sys/bus/event_source/devices/cpu").exists()
}

fn perf_families(scrape: &Scrape) -> std::collections::BTreeSet<String> {
    scrape
        .samples
        .iter()
        .filter(|s| s.name.starts_with("node_perf_"))
        .map(|s| s.name.clone())
        .collect()
}

#[test]
fn software_counters_grow_with_a_workload() {
    require_root!();
    let daemon = daemon(&[]);
    let cpus = online_cpus();
    let before = daemon.scrape();
    assert_eq!(
        before.value("node_scrape_collector_success", &[("collector", "perf")]),
        1.0,
        "{}",
        daemon.log()
    );

    touch_fresh_pages(PAGES);
    pipe_ping_pong(ROUNDS, 0);
    if cpus >= 2 {
        flip_between_cpus(MIGRATIONS);
    }
    let after = daemon.scrape();

    let faults = growth(&before, &after, "node_perf_page_faults_total", Some("0"));
    assert!(
        faults >= PAGES as f64,
        "page faults on CPU 0 grew {faults}, touched {PAGES} pages"
    );
    let minor = growth(&before, &after, "node_perf_minor_faults_total", Some("0"));
    assert!(minor >= PAGES as f64, "minor faults on CPU 0 grew {minor}");
    let switches = growth(
        &before,
        &after,
        "node_perf_context_switches_total",
        Some("0"),
    );
    assert!(
        switches >= (2 * ROUNDS) as f64,
        "context switches on CPU 0 grew {switches}, ping-pong of {ROUNDS} rounds"
    );
    if cpus >= 2 {
        let migrations = growth(&before, &after, "node_perf_cpu_migrations_total", None);
        assert!(
            migrations >= (MIGRATIONS - 1) as f64,
            "migrations grew {migrations} for {MIGRATIONS} moves"
        );
    }
    assert!(after.has("node_perf_major_faults_total"));
    for cpu in 0..cpus {
        let cpu = cpu.to_string();
        assert_eq!(
            after
                .matching("node_perf_context_switches_total", &[("cpu", &cpu)])
                .count(),
            1,
            "one context switch counter for CPU {cpu}"
        );
    }

    // Descriptors: one per CPU and opened counter, the same after more scrapes.
    let fds = perf_fds(&daemon);
    assert!(fds <= cpus * 30, "{fds} perf descriptors for {cpus} CPUs");
    if !has_hardware_pmu() {
        assert_eq!(fds, cpus * 5, "only the 5 software counters per CPU open");
    }
    daemon.scrape();
    daemon.scrape();
    assert_eq!(perf_fds(&daemon), fds, "no descriptor opened per scrape");
    assert_eq!(
        after.value("node_scrape_collector_success", &[("collector", "perf")]),
        1.0
    );

    // What the host cannot count is reported once per kind, at start-up only.
    let log = daemon.log();
    for kind in ["hardware", "cache"] {
        let lines = warnings(&log, kind);
        if has_hardware_pmu() {
            assert!(lines.len() <= 1, "{lines:#?}");
        } else {
            assert_eq!(lines.len(), 1, "one {kind} warning:\n{log}");
            assert!(lines[0].contains("no hardware PMU"), "{}", lines[0]);
            assert!(
                lines[0].contains("disable-"),
                "names the flag: {}",
                lines[0]
            );
            let families = perf_families(&after);
            assert!(
                !families.contains("node_perf_cpucycles_total")
                    && !families.contains("node_perf_cache_l1d_read_hits_total"),
                "{families:?}"
            );
        }
    }
    assert!(warnings(&log, "software").is_empty(), "{log}");
    if has_hardware_pmu() {
        assert!(after.has("node_perf_cpucycles_total"), "{}", after.text);
    }
    let status = daemon.stop_with(libc::SIGTERM);
    assert!(status.success(), "{status:?}");
}

#[test]
fn tracepoints_on_chosen_cpus_and_profilers() {
    require_root!();
    common::ensure_tracefs();
    let daemon = daemon(&[
        "--collector.perf.cpus=0",
        "--collector.perf.tracepoint=sched:sched_switch",
        "--collector.perf.tracepoint=sched:sched_process_fork",
        "--collector.perf.disable-hardware-profilers",
        "--collector.perf.disable-cache-profilers",
        "--collector.perf.software-profilers=ContextSwitch",
    ]);
    let before = daemon.scrape();
    pipe_ping_pong(ROUNDS, 0);
    fork_on_cpu0(FORKS);
    let after = daemon.scrape();

    let families: Vec<String> = perf_families(&after).into_iter().collect();
    assert_eq!(
        families,
        [
            "node_perf_context_switches_total",
            "node_perf_sched_sched_process_fork",
            "node_perf_sched_sched_switch",
        ]
    );
    assert!(
        after
            .samples
            .iter()
            .filter(|s| s.name.starts_with("node_perf_"))
            .all(|s| s.labels.get("cpu").map(String::as_str) == Some("0")),
        "only CPU 0:\n{}",
        after.text
    );
    assert!(
        after
            .text
            .contains("# HELP node_perf_sched_sched_switch Perf tracepoint sched:sched_switch")
    );
    assert!(
        after
            .text
            .contains("# TYPE node_perf_sched_sched_switch counter")
    );
    let switches = growth(&before, &after, "node_perf_sched_sched_switch", Some("0"));
    assert!(
        switches >= (2 * ROUNDS) as f64,
        "sched_switch grew {switches}"
    );
    let counted = growth(
        &before,
        &after,
        "node_perf_context_switches_total",
        Some("0"),
    );
    assert!(
        counted >= (2 * ROUNDS) as f64,
        "context switches grew {counted}"
    );
    let forks = growth(
        &before,
        &after,
        "node_perf_sched_sched_process_fork",
        Some("0"),
    );
    assert!(
        forks >= FORKS as f64,
        "sched_process_fork grew {forks} for {FORKS} forks"
    );
    assert_eq!(
        perf_fds(&daemon),
        3,
        "one software counter and two tracepoints, on CPU 0"
    );
    let log = daemon.log();
    assert!(!log.contains("could not be opened"), "{log}");
    assert_eq!(
        after.value("node_scrape_collector_success", &[("collector", "perf")]),
        1.0
    );
}

#[test]
fn without_cap_perfmon_every_kind_is_reported_once() {
    require_root!();
    let paranoid: i32 = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(2);
    if paranoid <= 0 {
        eprintln!("skipped: perf_event_paranoid is {paranoid}: CPU counters need no privilege");
        return;
    }
    // Root with an empty bounding set: no CAP_PERFMON nor CAP_SYS_ADMIN.
    let mut command = Command::new(common::tool("setpriv"));
    command.args(["--bounding-set=-all", "--inh-caps=-all", BINARY]);
    command.args(only_collector("perf"));
    let daemon = Daemon::spawn(command);
    let scrape = daemon.scrape();
    daemon.scrape();
    assert_eq!(
        scrape.value("node_scrape_collector_success", &[("collector", "perf")]),
        1.0,
        "{}",
        daemon.log()
    );
    assert!(perf_families(&scrape).is_empty(), "{}", scrape.text);
    assert_eq!(perf_fds(&daemon), 0);
    let log = daemon.log();
    for kind in ["hardware", "software", "cache"] {
        let lines = warnings(&log, kind);
        assert_eq!(lines.len(), 1, "one {kind} warning:\n{log}");
        assert!(
            lines[0].contains(&format!("perf_event_paranoid is {paranoid}"))
                && lines[0].contains("CAP_PERFMON"),
            "{}",
            lines[0]
        );
    }
}

#[test]
fn a_bad_flag_disables_the_collector_with_the_reason() {
    let daemon = daemon(&["--collector.perf.cpus=0-3:0"]);
    assert!(
        daemon.wait_for_log("collector disabled: cannot start", Duration::from_secs(10)),
        "{}",
        daemon.log()
    );
    let scrape = daemon.scrape();
    assert!(
        scrape
            .matching("node_scrape_collector_success", &[("collector", "perf")])
            .next()
            .is_none()
    );
    let log = daemon.log();
    assert!(
        log.contains("collector.perf.cpus") && log.contains("stride"),
        "{log}"
    );
}
