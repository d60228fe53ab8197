//! `cargo xtask bench --soak-minutes N`: the collector under an hour of what wears a node agent
//! down, measured for flatness. It is scraped 10 times a second over a kept-alive connection
//! while, every second, a textfile is rewritten with new series, a cgroup is created (a process
//! runs in it) and an older one removed, and a veth pair is added and an older one deleted.
//! Resident memory, open descriptors and threads are sampled every minute; they should end
//! where they were after the first minute.
use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::exporter::{Exporter, status_kib};

/// One minute's sample of the collector process.
struct Sample {
    minute: u64,
    rss_kib: u64,
    fds: usize,
    threads: usize,
    scrapes: u64,
    failed: u64,
}

pub fn run(collector: &Path, minutes: u64, bench_dir: &Path) -> anyhow::Result<String> {
    let textfiles = bench_dir.join("soak-textfile");
    std::fs::create_dir_all(&textfiles)?;
    let cgroups = cgroup2_mount()?.join("collector-soak");
    std::fs::create_dir_all(&cgroups).with_context(|| format!("creating {}", cgroups.display()))?;
    let exporter = Exporter::start(
        Command::new(collector)
            .arg(format!(
                "--collector.textfile.directory={}",
                textfiles.display()
            ))
            .arg("--collector.ebpf.cgroup.max-cgroups=100")
            .arg("--collector.ebpf.cgroup.grace-period=10s"),
    )?;
    let pid = exporter.pid();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(minutes * 60);
    let mut samples = Vec::new();
    let mut live_cgroups: VecDeque<PathBuf> = VecDeque::new();
    let mut live_links: VecDeque<String> = VecDeque::new();
    let (mut scrapes, mut failed, mut ticks) = (0u64, 0u64, 0u64);
    let mut next_sample = started + Duration::from_secs(60);
    while Instant::now() < deadline {
        let tick = Instant::now();
        if exporter.get().is_ok() {
            scrapes += 1;
        } else {
            failed += 1;
        }
        ticks += 1;
        if ticks % 10 == 0 {
            let second = ticks / 10;
            churn(
                second,
                &textfiles,
                &cgroups,
                &mut live_cgroups,
                &mut live_links,
            )?;
        }
        if Instant::now() >= next_sample {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
            samples.push(Sample {
                minute: samples.len() as u64 + 1,
                rss_kib: status_kib(&status, "VmRSS:")?,
                fds: std::fs::read_dir(format!("/proc/{pid}/fd"))?.count(),
                threads: std::fs::read_dir(format!("/proc/{pid}/task"))?.count(),
                scrapes,
                failed,
            });
            eprintln!(
                "soak minute {}: {} KiB resident, {} fds",
                samples.len(),
                samples.last().unwrap().rss_kib,
                samples.last().unwrap().fds
            );
            next_sample += Duration::from_secs(60);
        }
        std::thread::sleep(Duration::from_millis(100).saturating_sub(tick.elapsed()));
    }
    for cgroup in live_cgroups {
        let _ = std::fs::remove_dir(cgroup);
    }
    let _ = std::fs::remove_dir(&cgroups);
    for link in live_links {
        let _ = Command::new("ip").args(["link", "del", &link]).status();
    }
    let _ = std::fs::remove_dir_all(&textfiles);
    Ok(report(minutes, &samples))
}

/// Where cgroup v2 is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid hosts).
fn cgroup2_mount() -> anyhow::Result<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    mounts
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|fields| fields.get(2) == Some(&"cgroup2"))
        .and_then(|fields| fields.get(1).map(PathBuf::from))
        .context("no cgroup2 mount in /proc/self/mounts")
}

/// One second's churn: new textfile series, a new cgroup with a process in it and a new veth
/// pair; the cgroup and pair of 5 s ago go.
fn churn(
    second: u64,
    textfiles: &Path,
    cgroups: &Path,
    live_cgroups: &mut VecDeque<PathBuf>,
    live_links: &mut VecDeque<String>,
) -> anyhow::Result<()> {
    let mut text = String::from("# TYPE soak_series gauge\n");
    for i in 0..200 {
        text.push_str(&format!("soak_series{{second=\"{second}\",i=\"{i}\"}} 1\n"));
    }
    let temporary = textfiles.join("soak.prom.tmp");
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, textfiles.join("soak.prom"))?;

    let cgroup = cgroups.join(format!("c{second}"));
    std::fs::create_dir(&cgroup)?;
    let procs = cgroup.join("cgroup.procs");
    Command::new("sh")
        .args([
            "-c",
            &format!(
                "echo $$ > {}; i=0; while [ $i -lt 200 ]; do i=$((i+1)); done",
                procs.display()
            ),
        ])
        .status()?;
    live_cgroups.push_back(cgroup);
    if live_cgroups.len() > 5
        && let Some(old) = live_cgroups.pop_front()
    {
        std::fs::remove_dir(&old).with_context(|| format!("removing {}", old.display()))?;
    }

    let link = format!("soak{}", second % 100_000);
    let added = Command::new("ip")
        .args([
            "link",
            "add",
            &link,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{link}p"),
        ])
        .status()?;
    if added.success() {
        live_links.push_back(link);
    }
    if live_links.len() > 5
        && let Some(old) = live_links.pop_front()
    {
        Command::new("ip").args(["link", "del", &old]).status()?;
    }
    Ok(())
}

fn report(minutes: u64, samples: &[Sample]) -> String {
    let mut table = format!(
        "## Soak ({minutes} min: 10 scrapes/s; every second new textfile series, a cgroup and a veth pair created, older ones removed)\n\n\
         | minute | resident memory (MiB) | open fds | threads | scrapes | failed |\n\
         |---:|---:|---:|---:|---:|---:|\n"
    );
    for sample in samples {
        table += &format!(
            "| {} | {:.1} | {} | {} | {} | {} |\n",
            sample.minute,
            sample.rss_kib as f64 / 1024.0,
            sample.fds,
            sample.threads,
            sample.scrapes,
            sample.failed
        );
    }
    if let (Some(first), Some(last)) = (samples.first(), samples.last()) {
        table += &format!(
            "\nFrom minute 1 to minute {}: resident memory {:+.1} MiB, open fds {:+}, threads {:+}.\n",
            last.minute,
            (last.rss_kib as f64 - first.rss_kib as f64) / 1024.0,
            last.fds as i64 - first.fds as i64,
            last.threads as i64 - first.threads as i64,
        );
    }
    table
}
