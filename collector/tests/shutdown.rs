//! Root: SIGTERM and SIGINT stop the daemon cleanly, with its programs detached and nothing
//! pinned. (Its own test binary, so no other daemon loads programs meanwhile.)
mod common;

use std::collections::BTreeSet;

use common::Daemon;

/// Ids of loaded BPF programs whose names are ours (the kernel keeps 15 characters).
fn our_program_ids() -> BTreeSet<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|info| {
            let name = info.name_as_str().unwrap_or_default();
            ["sched_", "irq_handler_", "softirq_"]
                .iter()
                .any(|prefix| name.starts_with(prefix))
        })
        .map(|info| info.id())
        .collect()
}

/// The two tests compare program ids before and after; they must not overlap.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn stops_cleanly_on(signal: i32) {
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let before = our_program_ids();
    let daemon = Daemon::start(&[]);
    daemon.scrape();
    let running: BTreeSet<u32> = our_program_ids().difference(&before).copied().collect();
    assert!(
        running.len() >= 8,
        "expected the daemon's programs to be loaded, saw {running:?}"
    );
    let log_before_exit = daemon.log();
    let status = daemon.stop_with(signal);
    assert!(
        status.success(),
        "exit status {status}; log:\n{log_before_exit}"
    );
    // The kernel frees a program in deferred work after its last fd closes; give it a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let left = loop {
        let left: BTreeSet<u32> = our_program_ids().intersection(&running).copied().collect();
        if left.is_empty() || std::time::Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(
        left.is_empty(),
        "programs still loaded 10 s after exit: {left:?}"
    );
    let pinned = std::fs::read_dir("/sys/fs/bpf")
        .map(|dir| dir.count())
        .unwrap_or(0);
    assert_eq!(pinned, 0, "something is pinned under /sys/fs/bpf");
}

#[test]
fn sigterm_detaches_everything() {
    require_root!();
    stops_cleanly_on(libc::SIGTERM);
}

#[test]
fn sigint_detaches_everything() {
    require_root!();
    stops_cleanly_on(libc::SIGINT);
}
