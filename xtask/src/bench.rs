//! `cargo xtask bench`: what the collector costs, measured against the real node_exporter in the
//! same run. Numbers are printed (and written to target/bench/report.md), never asserted.
//!
//! - Scrape cost: each exporter is scraped `--scrapes` times in a row on loopback, over one
//!   kept-alive connection as Prometheus scrapes; CPU per scrape from the sum of its threads'
//!   `schedstat` run time (its kernel share from `utime`/`stime` ticks), wall time per scrape at
//!   the client, resident memory (now and peak) and body size. Ours with every default collector
//!   and with the eBPF collectors alone, then node_exporter's.
//! - Concurrent scrapers (an HA pair, AMP beside an in-cluster agent): 2 and 20 clients scrape
//!   back to back at once, each over its own kept-alive connection; scrapes per second, latency
//!   p50/p99, and the share of answers that are complete (every family and every successful
//!   collector of a lone scrape), for both exporters.
//! - Where the scrape time goes: each of our default collectors alone, its CPU per scrape above
//!   an empty collector set.
//! - Kernel program cost: ns per event for each program from the kernel's BPF statistics while a
//!   workload runs, the programs' total run time against the workload's wall time, and that
//!   workload's slowdown with the collector attached, for four workloads: context-switch-bound
//!   (pipe ping-pong), I/O-bound (4 KiB writes + fdatasync), loopback TCP, and connections
//!   refused on loopback (for the reset and drop programs, whose events TCP traffic lacks). The
//!   same with programs that do nothing on the same hooks (`--ebpf.empty-programs`) gives the
//!   floor: what attaching anything at all costs on this kernel. Beside ours, Debian's
//!   libbpf-tools that share the workload's hooks (`runqlat`, `biolatency`, `hardirqs`,
//!   `softirqs`), each alone on the same workload (`peers`).
mod peers;

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::exporter::{Exporter, status_kib};

/// The integration tests' workloads: the benchmark runs the same ones, timed.
#[allow(dead_code)] // the tests use more of them
#[path = "../../collector/tests/common/workload.rs"]
mod workload;

#[derive(clap::Args)]
pub struct Options {
    /// Scrapes of each exporter for the scrape-cost comparison.
    #[arg(long, default_value_t = 500)]
    scrapes: usize,
    /// Pipe round trips in one run of the context-switch workload.
    #[arg(long, default_value_t = 200_000)]
    rounds: usize,
    /// Rounds of runs of each workload, one without the collector, one with it and one with its
    /// empty programs instead, in each of the six orders in turn (a multiple of 6 keeps them
    /// balanced); the median of the rounds' ratios is kept.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u16).range(1..))]
    runs: u16,
    /// Only these kernel workloads (repeatable; all four by default).
    #[arg(long, value_enum)]
    workload: Vec<WorkloadKind>,
    /// 4 KiB writes, each followed by fdatasync, in one run of the I/O workload.
    #[arg(long, default_value_t = 2_000)]
    fsync_writes: usize,
    /// MiB sent over one loopback TCP connection in one run of the network workload.
    #[arg(long, default_value_t = 512)]
    tcp_mib: usize,
    /// Connection attempts to a closed loopback port in one run of the reset workload.
    #[arg(long, default_value_t = 20_000)]
    resets: usize,
    /// Scrapes of each collector alone, for where the scrape time goes (0 skips it).
    #[arg(long, default_value_t = 200)]
    collector_scrapes: usize,
    /// Seconds each concurrent-scrape scenario runs (0 skips them).
    #[arg(long, default_value_t = 10)]
    concurrent_seconds: u64,
    /// Runs with BPF statistics on of each configuration, for ns per event (ours, empty
    /// programs, each libbpf-tools peer, interleaved); the median of the runs is kept.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    stats_runs: u16,
    /// Measure Debian's libbpf-tools on the same workloads and hooks, beside our programs
    /// (`--peers false` skips them).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    peers: bool,
    /// Only the scrape-cost comparisons, without the kernel program workloads.
    #[arg(long)]
    scrape_only: bool,
    /// Instead of everything else: soak the collector this many minutes under scrapes and
    /// textfile, cgroup and interface churn, and report its memory, fds and threads each minute.
    #[arg(long)]
    pub soak_minutes: Option<u64>,
    /// Measure this collector binary (an older build, to compare) instead of building
    /// target/release/collector.
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Instead of everything else: which libc for the image, by measurement. The image's amd64
    /// binary (glibc linked statically, as `cargo xtask image` builds it) and a static musl
    /// build against the regular build (glibc, dynamically linked), scraped in the same run,
    /// in interleaved rounds: CPU per scrape and resident memory.
    #[arg(long)]
    pub static_builds: bool,
    /// Rounds of `--static-builds` (each scrapes every build `--scrapes` times; medians kept).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    pub build_rounds: u16,
}

const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

/// The whole benchmark of `collector` (root's release build, or `--binary`).
pub fn run(root: &Path, collector: &Path, options: &Options) -> anyhow::Result<()> {
    let mut report = String::new();
    refuse_programs_already_loaded()?;

    let full = scrape_cost(
        "collector",
        Command::new(collector).arg("--ebpf.enable-stats"),
        options.scrapes,
    )?;
    // The foundation's scope: the kernel programs' metrics and the exporter's own, with the
    // eBPF collectors the full run reported.
    let ebpf_only = scrape_cost(
        "collector, eBPF only",
        Command::new(collector)
            .arg("--ebpf.enable-stats")
            .arg("--collector.disable-defaults")
            .args(
                full.collectors
                    .iter()
                    .filter(|name| name.starts_with("ebpf."))
                    .map(|name| format!("--collector.{name}")),
            ),
        options.scrapes,
    )?;
    let ours = [full, ebpf_only];
    let theirs = scrape_cost(
        "node_exporter",
        &mut Command::new(NODE_EXPORTER),
        options.scrapes,
    )?;
    report += &scrape_table(&ours, &theirs, options.scrapes);
    if options.concurrent_seconds > 0 {
        let duration = Duration::from_secs(options.concurrent_seconds);
        let mut rows = Vec::new();
        for clients in [2, 20] {
            rows.push(concurrent_scrapes(
                "collector",
                &mut Command::new(collector),
                clients,
                duration,
            )?);
            rows.push(concurrent_scrapes(
                "node_exporter",
                &mut Command::new(NODE_EXPORTER),
                clients,
                duration,
            )?);
        }
        report += &concurrent_table(&rows, duration);
    }
    if options.collector_scrapes > 0 {
        report += &per_collector_table(collector, &ours[0].collectors, options.collector_scrapes)?;
    }
    if options.scrape_only {
        return write_report(root, &report);
    }

    let fsync_file = root.join("target/bench/fsync-workload");
    std::fs::create_dir_all(root.join("target/bench"))?;
    let workloads = [
        Workload {
            kind: WorkloadKind::PingPong,
            description: format!(
                "Context-switch workload: {} pipe round trips between two threads pinned to CPU 0",
                options.rounds
            ),
            run: Box::new(|| {
                timed(|| {
                    workload::pipe_ping_pong(options.rounds, 0);
                })
            }),
        },
        Workload {
            kind: WorkloadKind::Io,
            description: format!(
                "I/O workload: {} 4 KiB writes to {}, each followed by fdatasync",
                options.fsync_writes,
                fsync_file.display()
            ),
            run: Box::new(|| timed(|| workload::fsync_writes(&fsync_file, options.fsync_writes))),
        },
        Workload {
            kind: WorkloadKind::Tcp,
            description: format!(
                "Network workload: {} MiB over one loopback TCP connection",
                options.tcp_mib
            ),
            run: Box::new(|| timed(|| workload::loopback_tcp(options.tcp_mib << 20))),
        },
        Workload {
            kind: WorkloadKind::Resets,
            description: format!(
                "Reset workload: {} connection attempts to a closed loopback port, each SYN dropped (no socket) and answered with a reset",
                options.resets
            ),
            run: Box::new(|| timed(|| workload::refused_connections(options.resets))),
        },
    ];
    for workload in workloads
        .iter()
        .filter(|w| options.workload.is_empty() || options.workload.contains(&w.kind))
    {
        report += &kernel_cost(collector, workload, options, &root.join("target/bench"))?;
    }
    let _ = std::fs::remove_file(&fsync_file);
    write_report(root, &report)
}

/// `--static-builds`: the scrape cost of each of `builds` (the first is the reference), every
/// default collector on, in `rounds` rounds that each scrape every build in turn (the order
/// rotating), so that the machine's drift falls on all of them alike; the medians and their
/// ratios to the reference.
pub fn compare_builds(
    root: &Path,
    builds: &[(&str, PathBuf)],
    options: &Options,
) -> anyhow::Result<()> {
    refuse_programs_already_loaded()?;
    let rounds = usize::from(options.build_rounds);
    let mut costs: Vec<Vec<ScrapeCost>> = builds.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        eprintln!("round {} of {rounds}...", round + 1);
        for n in 0..builds.len() {
            let which = (n + round) % builds.len();
            let (name, path) = &builds[which];
            costs[which].push(scrape_cost(name, &mut Command::new(path), options.scrapes)?);
        }
    }
    // A build whose kernel programs did not load (a stale object, say) does less work.
    let attached: Vec<usize> = costs
        .iter()
        .flat_map(|c| c.iter().map(|cost| cost.attached))
        .collect();
    if attached.iter().any(|&n| n != attached[0]) {
        bail!("the builds did not all attach the same kernel programs: {attached:?}");
    }
    let median_of = |costs: &[ScrapeCost], value: fn(&ScrapeCost) -> f64| {
        let mut values: Vec<f64> = costs.iter().map(value).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    type Row = (&'static str, fn(&ScrapeCost) -> f64);
    let rows: [Row; 7] = [
        ("CPU per scrape (ms)", |c| ms(c.cpu_per_scrape)),
        ("of which in the kernel (ms)", |c| {
            ms(c.kernel_cpu_per_scrape)
        }),
        ("wall time per scrape (ms)", |c| ms(c.wall_per_scrape)),
        ("resident memory after the scrapes (MiB)", |c| {
            mib(c.rss_bytes)
        }),
        ("peak resident memory (MiB)", |c| mib(c.peak_rss_bytes)),
        // The same work, or the comparison says nothing.
        ("series", |c| c.series as f64),
        ("kernel programs attached", |c| c.attached as f64),
    ];
    let names: Vec<&str> = builds.iter().map(|(name, _)| *name).collect();
    let mut table = format!(
        "## Builds compared ({rounds} rounds of {} sequential scrapes of each, every default \
         collector, medians; ratios to {})\n\n| | {} | {} |\n|---|{}\n",
        options.scrapes,
        names[0],
        names.join(" | "),
        names[1..]
            .iter()
            .map(|name| format!("ratio ({name})"))
            .collect::<Vec<_>>()
            .join(" | "),
        "---:|".repeat(2 * names.len() - 1),
    );
    let size = |path: &Path| std::fs::metadata(path).map_or(0.0, |m| mib(m.len()));
    let sizes: Vec<f64> = builds.iter().map(|(_, path)| size(path)).collect();
    let mut line = |label: &str, values: Vec<f64>| {
        let ratios: Vec<String> = values[1..]
            .iter()
            .map(|v| format!("{:.3}", v / values[0]))
            .collect();
        let values: Vec<String> = values.iter().map(|v| format!("{v:.3}")).collect();
        table += &format!(
            "| {label} | {} | {} |\n",
            values.join(" | "),
            ratios.join(" | ")
        );
    };
    for (label, value) in rows {
        line(label, costs.iter().map(|c| median_of(c, value)).collect());
    }
    line("binary size (MiB)", sizes);
    println!("\n{table}");
    let file = root.join("target/bench/builds.md");
    std::fs::create_dir_all(root.join("target/bench"))?;
    std::fs::write(&file, &table)?;
    eprintln!("written to {}", file.display());
    Ok(())
}

/// Another collector's programs (a daemon left running, a test) would run in every baseline
/// and skew every comparison: their names are ours (`sched_switch_btf`, truncated by the kernel).
fn refuse_programs_already_loaded() -> anyhow::Result<()> {
    let output = Command::new("bpftool")
        .args(["prog", "show"])
        .output()
        .context("running bpftool (cargo xtask setup installs it)")?;
    let listing = String::from_utf8_lossy(&output.stdout);
    let ours: Vec<&str> = listing
        .lines()
        .filter(|line| {
            ["name sched_switch_", "name block_rq_", "name cgroup_skb_"]
                .iter()
                .any(|name| line.contains(name))
        })
        .collect();
    if !ours.is_empty() {
        bail!(
            "the collector's eBPF programs are already loaded (is another collector running?); \
             they would run in every baseline. Stop it first:\n{}",
            ours.join("\n")
        );
    }
    Ok(())
}

pub fn write_report(root: &Path, report: &str) -> anyhow::Result<()> {
    println!("\n{report}");
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("report.md"), report)?;
    eprintln!("written to {}", dir.join("report.md").display());
    Ok(())
}

struct ScrapeCost {
    name: String,
    cpu_per_scrape: Duration,
    /// The part of `cpu_per_scrape` spent in the kernel (system time), mostly reading files.
    kernel_cpu_per_scrape: Duration,
    wall_per_scrape: Duration,
    rss_bytes: u64,
    peak_rss_bytes: u64,
    body_bytes: usize,
    series: usize,
    /// Kernel programs attached (`ebpf_program_attached` samples at 1).
    attached: usize,
    /// The collectors that ran (`node_scrape_collector_success` labels).
    collectors: Vec<String>,
}

fn scrape_cost(name: &str, command: &mut Command, scrapes: usize) -> anyhow::Result<ScrapeCost> {
    eprintln!("scraping {name} {scrapes} times...");
    let exporter = Exporter::start(command)?;
    let mut body = String::new();
    for _ in 0..10 {
        body = exporter.get()?; // warm up: first scrapes allocate caches
    }
    let cpu_before = process_cpu(exporter.pid())?;
    let ticks_before = user_and_system_ticks(exporter.pid())?;
    let started = Instant::now();
    for _ in 0..scrapes {
        exporter.get()?;
    }
    let wall = started.elapsed();
    let cpu = process_cpu(exporter.pid())?.saturating_sub(cpu_before);
    let ticks_after = user_and_system_ticks(exporter.pid())?;
    // Clock ticks only say how the (exact) schedstat time splits between user and kernel.
    let (user, system) = (
        ticks_after.0.saturating_sub(ticks_before.0),
        ticks_after.1.saturating_sub(ticks_before.1),
    );
    // No tick at all (a very cheap exporter): no kernel share to tell, counted as none.
    let kernel_share = system as f64 / (user + system).max(1) as f64;
    let status = std::fs::read_to_string(format!("/proc/{}/status", exporter.pid()))?;
    Ok(ScrapeCost {
        name: name.to_owned(),
        cpu_per_scrape: cpu / scrapes as u32,
        kernel_cpu_per_scrape: cpu.mul_f64(kernel_share) / scrapes as u32,
        wall_per_scrape: wall / scrapes as u32,
        rss_bytes: status_kib(&status, "VmRSS:")? * 1024,
        peak_rss_bytes: status_kib(&status, "VmHWM:")? * 1024,
        body_bytes: body.len(),
        series: body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count(),
        attached: body
            .lines()
            .filter(|l| l.starts_with("ebpf_program_attached{") && l.ends_with("} 1"))
            .count(),
        collectors: body
            .lines()
            .filter_map(|l| l.strip_prefix("node_scrape_collector_success{collector=\""))
            .filter_map(|rest| Some(rest.split_once('"')?.0.to_owned()))
            .collect(),
    })
}

/// One exporter under `clients` concurrent scrapers.
struct Concurrent {
    name: String,
    clients: usize,
    scrapes: usize,
    /// Answers with every family and every successful collector of a lone scrape.
    complete: usize,
    p50: Duration,
    p99: Duration,
    cpu_per_scrape: Duration,
}

/// What a lone scrape serves: its family names and its successful collectors.
fn contents(
    body: &str,
) -> (
    std::collections::BTreeSet<&str>,
    std::collections::BTreeSet<&str>,
) {
    let families = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let succeeded = body
        .lines()
        .filter_map(|l| l.strip_prefix("node_scrape_collector_success{collector=\""))
        .filter_map(|rest| rest.split_once("\"} "))
        .filter(|(_, value)| *value == "1")
        .map(|(name, _)| name)
        .collect();
    (families, succeeded)
}

fn concurrent_scrapes(
    name: &str,
    command: &mut Command,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Concurrent> {
    eprintln!("{clients} clients scraping {name} for {duration:?}...");
    let exporter = Exporter::start(command)?;
    for _ in 0..5 {
        exporter.get()?;
    }
    let alone = exporter.get()?;
    let (families, succeeded) = contents(&alone);
    let cpu_before = process_cpu(exporter.pid())?;
    let answers: Vec<(Duration, String)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(|| {
                    let agent = ureq::Agent::new_with_defaults();
                    let started = Instant::now();
                    let mut answers = Vec::new();
                    while started.elapsed() < duration {
                        let sent = Instant::now();
                        let mut body = String::new();
                        let answered = agent
                            .get(&exporter.url)
                            .call()
                            .map_err(anyhow::Error::from)
                            .and_then(|mut r| {
                                Ok(r.body_mut().as_reader().read_to_string(&mut body)?)
                            });
                        if answered.is_err() {
                            body.clear(); // an error or a 503: not complete
                        }
                        answers.push((sent.elapsed(), body));
                    }
                    answers
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().expect("a scraping thread"))
            .collect()
    });
    let cpu = process_cpu(exporter.pid())?.saturating_sub(cpu_before);
    let complete = answers
        .iter()
        .filter(|(_, body)| {
            let (f, s) = contents(body);
            families.is_subset(&f) && succeeded.is_subset(&s)
        })
        .count();
    let mut latencies: Vec<Duration> = answers.iter().map(|(latency, _)| *latency).collect();
    latencies.sort();
    let quantile = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok(Concurrent {
        name: name.to_owned(),
        clients,
        scrapes: answers.len(),
        complete,
        p50: quantile(0.5),
        p99: quantile(0.99),
        cpu_per_scrape: cpu / answers.len().max(1) as u32,
    })
}

fn concurrent_table(rows: &[Concurrent], duration: Duration) -> String {
    let mut table = format!(
        "\n## Concurrent scrapers ({} s each, back to back, one connection per client, same run)\n\n\
         | exporter | clients | scrapes/s | complete | p50 (ms) | p99 (ms) | CPU per scrape (ms) |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
        duration.as_secs()
    );
    for row in rows {
        table += &format!(
            "| {} | {} | {:.1} | {:.1}% ({} of {}) | {:.2} | {:.2} | {:.3} |\n",
            row.name,
            row.clients,
            row.scrapes as f64 / duration.as_secs_f64(),
            100.0 * row.complete as f64 / row.scrapes.max(1) as f64,
            row.complete,
            row.scrapes,
            ms(row.p50),
            ms(row.p99),
            ms(row.cpu_per_scrape),
        );
    }
    table
}

/// CPU time of all threads of `pid`, from their `schedstat` (nanoseconds on CPU).
fn process_cpu(pid: u32) -> anyhow::Result<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let schedstat = std::fs::read_to_string(task?.path().join("schedstat")).unwrap_or_default();
        total += schedstat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(Duration::from_nanos(total))
}

/// `utime` and `stime` of `pid` (all threads), in clock ticks, from `/proc/<pid>/stat`.
fn user_and_system_ticks(pid: u32) -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name, which may itself hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("malformed /proc/<pid>/stat")?
        .1
        .split_whitespace()
        .collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        // Field n of proc(5), counting from 1 with the pid and the name as fields 1 and 2.
        Ok(fields
            .get(n - 3)
            .context("short /proc/<pid>/stat")?
            .parse()?)
    };
    Ok((field(14)?, field(15)?))
}

/// One column per configuration of ours, node_exporter's, then our ratios to it.
fn scrape_table(ours: &[ScrapeCost], theirs: &ScrapeCost, scrapes: usize) -> String {
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.3}", a / b)
        } else {
            "n/a".into()
        }
    };
    let names: Vec<&str> = ours.iter().map(|c| c.name.as_str()).collect();
    let ratios: Vec<String> = names.iter().map(|n| format!("ratio ({n})")).collect();
    let mut table = format!(
        "## Scrape cost ({scrapes} sequential scrapes on one loopback connection, same run)\n\n\
         | | {} | {} | {} |\n|---|{}\n",
        names.join(" | "),
        theirs.name,
        ratios.join(" | "),
        "---:|".repeat(2 * ours.len() + 1),
    );
    type Row = (&'static str, fn(&ScrapeCost) -> f64);
    let rows: [Row; 7] = [
        ("CPU per scrape (ms)", |c| ms(c.cpu_per_scrape)),
        ("of which in the kernel (ms)", |c| {
            ms(c.kernel_cpu_per_scrape)
        }),
        ("wall time per scrape (ms)", |c| ms(c.wall_per_scrape)),
        ("resident memory (MiB)", |c| mib(c.rss_bytes)),
        ("peak resident memory (MiB)", |c| mib(c.peak_rss_bytes)),
        ("body size (KiB)", |c| c.body_bytes as f64 / 1024.0),
        ("series", |c| c.series as f64),
    ];
    for (label, value) in rows {
        let values: Vec<String> = ours.iter().map(|c| format!("{:.3}", value(c))).collect();
        let ratios: Vec<String> = ours
            .iter()
            .map(|c| ratio(value(c), value(theirs)))
            .collect();
        table += &format!(
            "| {label} | {} | {:.3} | {} |\n",
            values.join(" | "),
            value(theirs),
            ratios.join(" | ")
        );
    }
    table
}

/// Where the scrape time goes: each collector run alone, its CPU per scrape above that of an
/// empty collector set (the HTTP exchange, encoding and the exporter's own metrics).
fn per_collector_table(
    collector: &Path,
    names: &[String],
    scrapes: usize,
) -> anyhow::Result<String> {
    let alone = |name: Option<&str>| {
        let mut command = Command::new(collector);
        command.arg("--collector.disable-defaults");
        command.args(name.map(|n| format!("--collector.{n}")));
        scrape_cost(name.unwrap_or("no collector"), &mut command, scrapes)
    };
    let base = alone(None)?;
    let mut costs = Vec::new();
    for name in names {
        let cost = alone(Some(name))?;
        costs.push((name, cost));
    }
    costs.sort_by_key(|(_, cost)| std::cmp::Reverse(cost.cpu_per_scrape));
    let mut table = format!(
        "\n## Where the scrape time goes\n\n\
         Each collector alone, {scrapes} scrapes: CPU per scrape above an empty collector set \
         ({:.3} ms: the HTTP exchange, encoding and the exporter's own metrics). Too few clock \
         ticks pass for a kernel/user split per collector.\n\n\
         | collector | CPU per scrape (ms) | series |\n|---|---:|---:|\n",
        ms(base.cpu_per_scrape),
    );
    for (name, cost) in costs {
        table += &format!(
            "| {name} | {:.3} | {} |\n",
            ms(cost.cpu_per_scrape) - ms(base.cpu_per_scrape),
            cost.series.saturating_sub(base.series),
        );
    }
    Ok(table)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// How long a freshly started collector is left alone before a timed run: what it costs is its
/// steady state, not its start-up.
const SETTLE: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum WorkloadKind {
    PingPong,
    Io,
    Tcp,
    Resets,
}

/// A workload of known size whose slowdown the kernel programs cause is measured.
struct Workload<'a> {
    kind: WorkloadKind,
    description: String,
    /// Runs it once, returning its wall time.
    run: Box<dyn Fn() -> Duration + 'a>,
}

/// The collector as the workloads see it: its own programs, or the empty ones on the same hooks.
#[derive(Clone, Copy)]
enum Attached {
    Collector,
    EmptyPrograms,
}

impl Attached {
    fn start(self, collector: &Path, extra: &[&str]) -> anyhow::Result<Exporter> {
        let mut command = Command::new(collector);
        command.args(extra);
        if let Self::EmptyPrograms = self {
            command.arg("--ebpf.empty-programs");
        }
        Exporter::start(&mut command)
    }
}

/// Every order of the three configurations of a round (0: without the collector, 1: with it,
/// 2: with its empty programs): rounds cycle through them, so each configuration runs first,
/// second and third, after each of the others, equally often.
const ORDERS: [[usize; 3]; 6] = [
    [0, 1, 2],
    [1, 2, 0],
    [2, 0, 1],
    [0, 2, 1],
    [2, 1, 0],
    [1, 0, 2],
];

fn kernel_cost(
    collector: &Path,
    workload: &Workload,
    options: &Options,
    log_dir: &Path,
) -> anyhow::Result<String> {
    let runs = usize::from(options.runs);
    eprintln!("{}:", workload.description);
    // Rounds of three runs: without the collector, with it, and with its empty programs
    // attached instead (the floor: what attaching anything at all to the hooks costs), BPF
    // statistics off as in production. Every run follows the same pause, so that a baseline does
    // not overlap the kernel's release of the previous daemon's programs, nor a daemon its own
    // start-up. The VM's load drifts over seconds, and a round sees the same drift; each
    // slowdown is the median of the rounds' ratios.
    let mut times: [Vec<Duration>; 3] = Default::default();
    // Per round: with the collector and with empty programs against without, and the two
    // against each other.
    let mut ratios: [Vec<f64>; 3] = Default::default();
    for round in 0..runs {
        eprintln!("round {} of {runs}...", round + 1);
        let mut round_times = [Duration::ZERO; 3];
        for which in ORDERS[round % ORDERS.len()] {
            let _exporter = match which {
                0 => None,
                1 => Some(Attached::Collector.start(collector, &[])?),
                _ => Some(Attached::EmptyPrograms.start(collector, &[])?),
            };
            // Past the previous daemon's exit, and this one's start-up: the page-out of its
            // binary and the first scrape's caches.
            std::thread::sleep(SETTLE);
            round_times[which] = (workload.run)();
        }
        for (which, time) in round_times.iter().enumerate() {
            times[which].push(*time);
        }
        let seconds = round_times.map(|t| t.as_secs_f64());
        ratios[0].push(seconds[1] / seconds[0]);
        ratios[1].push(seconds[2] / seconds[0]);
        ratios[2].push(seconds[1] / seconds[2]);
    }
    let [base, attached, empty] = times.map(|mut t| median(&mut t));
    // Median and interquartile range of each ratio, as a slowdown in %.
    let [slowdown, floor, over_empty] = ratios.map(|mut r| {
        r.sort_by(f64::total_cmp);
        let percent = |q: usize| (r[(r.len() - 1) * q / 4] - 1.0) * 100.0;
        (percent(2), percent(1), percent(3))
    });

    // Ns per event: runs with statistics on, ours, the empty programs and each peer tool in
    // turn, so that the VM's drift falls on all of them alike. A tool that fails is reported,
    // never fatal, and not run again.
    let stats_runs = usize::from(options.stats_runs);
    let tools = if options.peers {
        peers::for_workload(workload.kind)
    } else {
        &[]
    };
    let (mut ours, mut floors) = (Vec::new(), Vec::new());
    let mut theirs: Vec<anyhow::Result<Vec<Vec<ProgramCost>>>> =
        tools.iter().map(|_| Ok(Vec::new())).collect();
    for run in 0..stats_runs {
        eprintln!(
            "measuring ns per event from BPF statistics, run {} of {stats_runs}...",
            run + 1
        );
        ours.push(program_costs(collector, workload, Attached::Collector)?);
        floors.push(program_costs(collector, workload, Attached::EmptyPrograms)?);
        for (tool, runs) in tools.iter().zip(&mut theirs) {
            let Ok(done) = runs else { continue };
            eprintln!("{} alone...", tool.name);
            match peers::measure(tool, log_dir, || (workload.run)()) {
                Ok(costs) => done.push(costs),
                Err(error) => *runs = Err(error.context(format!("{} failed", tool.name))),
            }
        }
    }
    let ours = median_costs(ours);
    let floors = median_costs(floors);
    let theirs: Vec<_> = tools
        .iter()
        .zip(theirs)
        .map(|(tool, runs)| (tool, runs.map(|runs| median_programs(&runs))))
        .collect();

    let mut table = format!(
        "\n## Kernel program cost\n\n\
         {}; {runs} rounds of three runs (without the collector, with it, and with empty \
         programs on the same hooks instead of its own), in every order in turn.\n\n\
         | | without collector | with collector | with empty programs |\n|---|---:|---:|---:|\n\
         | workload time, median (ms) | {:.1} | {:.1} | {:.1} |\n\
         | slowdown, median of the rounds (middle half) | | {} | {} |\n\n\
         The collector against empty programs, round by round: {}.\n\n\
         Ns per event, medians of {stats_runs} run(s) with BPF statistics on:\n\n\
         | program | events during workload | ns per event | ns per event, empty program |\n\
         |---|---:|---:|---:|\n",
        workload.description,
        ms(base),
        ms(attached),
        ms(empty),
        spread(slowdown),
        spread(floor),
        spread(over_empty),
    );
    for cost in &ours.programs {
        let floor = floors
            .programs
            .iter()
            .find(|f| f.program == cost.program)
            .map(|f| format!("{:.0}", f.ns_per_event))
            .unwrap_or_default();
        table += &format!(
            "| {} | {:.0} | {:.0} | {floor} |\n",
            cost.program, cost.events, cost.ns_per_event
        );
    }
    // The programs' run time on all CPUs against the workload's wall time: for a workload on
    // one CPU (the pinned ping-pong), the part of its slowdown spent inside the programs.
    table += &format!(
        "\nThe programs ran {:.1} ms (all CPUs) during a {:.1} ms run (the median run by share): \
         {:.2}% of its wall time (empty programs: {:.2}%).\n",
        ours.seconds * 1e3,
        ms(ours.run),
        ours.seconds / ours.run.as_secs_f64() * 100.0,
        floors.seconds / floors.run.as_secs_f64() * 100.0,
    );
    if !theirs.is_empty() {
        table += &peers::table(&ours.programs, &floors.programs, &theirs, stats_runs);
    }
    Ok(table)
}

/// A slowdown's median and the middle half of the rounds: `7.10% (5.20 to 9.00%)`.
fn spread((median, low, high): (f64, f64, f64)) -> String {
    format!("{median:.2}% ({low:.2} to {high:.2}%)")
}

/// What each program cost during one run of a workload, from the kernel's BPF statistics.
struct ProgramCosts {
    programs: Vec<ProgramCost>,
    /// Run time of all programs, on all CPUs.
    seconds: f64,
    /// The workload's wall time.
    run: Duration,
}

struct ProgramCost {
    /// The hook's name (ours are labelled by hook).
    program: String,
    /// As the collector says it: `tp_btf`, `raw_tp`, `tracepoint`.
    hook_type: String,
    events: f64,
    ns_per_event: f64,
}

/// The median of runs: each program's median events and ns per event over the runs it ran in,
/// and the run whose programs took the median share of its wall time.
fn median_costs(mut runs: Vec<ProgramCosts>) -> ProgramCosts {
    let programs = median_programs(
        &runs
            .iter_mut()
            .map(|run| std::mem::take(&mut run.programs))
            .collect::<Vec<_>>(),
    );
    runs.sort_by(|a, b| share(a).total_cmp(&share(b)));
    let middle = runs.swap_remove(runs.len() / 2);
    ProgramCosts { programs, ..middle }
}

fn share(costs: &ProgramCosts) -> f64 {
    costs.seconds / costs.run.as_secs_f64()
}

/// Each program's median events and ns per event over the runs it ran in, by name.
fn median_programs(runs: &[Vec<ProgramCost>]) -> Vec<ProgramCost> {
    let mut names: Vec<&str> = runs
        .iter()
        .flatten()
        .map(|cost| cost.program.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let of_name: Vec<&ProgramCost> = runs
                .iter()
                .flatten()
                .filter(|cost| cost.program == name)
                .collect();
            let middle = |value: fn(&ProgramCost) -> f64| {
                let mut values: Vec<f64> = of_name.iter().map(|cost| value(cost)).collect();
                values.sort_by(f64::total_cmp);
                values[values.len() / 2]
            };
            Some(ProgramCost {
                program: name.to_owned(),
                hook_type: of_name.first()?.hook_type.clone(),
                events: middle(|cost| cost.events),
                ns_per_event: middle(|cost| cost.ns_per_event),
            })
        })
        .collect()
}

fn program_costs(
    collector: &Path,
    workload: &Workload,
    attached: Attached,
) -> anyhow::Result<ProgramCosts> {
    let exporter = attached.start(collector, &["--ebpf.enable-stats"])?;
    let before = exporter.get()?;
    let run = (workload.run)();
    let after = exporter.get()?;
    drop(exporter);
    let hook_types = attached_hook_types(&after);
    let mut names: Vec<String> = metric_values(&after, "ebpf_program_runs_total")
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    names.sort();
    let mut costs = ProgramCosts {
        programs: Vec::new(),
        seconds: 0.0,
        run,
    };
    for program in names {
        let events = delta(&before, &after, "ebpf_program_runs_total", &program);
        let seconds = delta(&before, &after, "ebpf_program_run_seconds_total", &program);
        costs.seconds += seconds;
        if events > 0.0 {
            costs.programs.push(ProgramCost {
                hook_type: hook_types.get(&program).cloned().unwrap_or_default(),
                program,
                events,
                ns_per_event: seconds * 1e9 / events,
            });
        }
    }
    Ok(costs)
}

/// `(program label, value)` of every sample of `family` in a scrape.
fn metric_values(text: &str, family: &str) -> Vec<(String, f64)> {
    let prefix = format!("{family}{{program=\"");
    text.lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (program, rest) = rest.split_once('"')?;
            let value = rest.rsplit(' ').next()?.parse().ok()?;
            Some((program.to_owned(), value))
        })
        .collect()
}

/// The hook type of each attached program, from `ebpf_program_attached{program,hook_type} 1`.
fn attached_hook_types(text: &str) -> std::collections::HashMap<String, String> {
    let label = |labels: &str, name: &str| {
        let (_, rest) = labels.split_once(&format!("{name}=\""))?;
        Some(rest.split_once('"')?.0.to_owned())
    };
    text.lines()
        .filter_map(|line| line.strip_prefix("ebpf_program_attached{"))
        .filter_map(|rest| rest.strip_suffix(" 1"))
        .filter_map(|labels| Some((label(labels, "program")?, label(labels, "hook_type")?)))
        .collect()
}

fn delta(before: &str, after: &str, family: &str, program: &str) -> f64 {
    let value = |text: &str| {
        metric_values(text, family)
            .into_iter()
            .find(|(p, _)| p == program)
            .map_or(0.0, |(_, v)| v)
    };
    value(after) - value(before)
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// `workload` once, timed.
fn timed(workload: impl FnOnce()) -> Duration {
    let started = Instant::now();
    workload();
    started.elapsed()
}
