//! Root: interrupt time grows with interrupt work the test causes.
mod common;

use std::time::Duration;

use common::{Daemon, workload};

#[test]
fn softirq_and_hardirq_time_grow_with_io() {
    require_root!();
    let daemon = Daemon::start(&["--no-collector.ebpf.sched"]);
    let before = daemon.scrape();
    for program in [
        "irq_handler_entry",
        "irq_handler_exit",
        "softirq_entry",
        "softirq_exit",
    ] {
        assert_eq!(
            before.value(
                "ebpf_program_attached",
                &[("program", program), ("hook_type", "tp_btf")]
            ),
            1.0
        );
    }
    let cpus = common::online_cpus();
    assert_eq!(
        before.matching("ebpf_hardirq_seconds_total", &[]).count(),
        cpus
    );
    assert_eq!(
        before.matching("ebpf_softirq_seconds_total", &[]).count(),
        cpus * 10
    );

    // Loopback TCP is delivered in NET_RX; fsync'd writes end in a disk interrupt.
    workload::loopback_tcp(64 << 20);
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("irq-fsync-test");
    workload::fsync_writes(&file, 64);
    std::thread::sleep(Duration::from_millis(100));

    let after = daemon.scrape();
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);
    let net_rx = delta("ebpf_softirq_seconds_total", &[("vector", "net_rx")]);
    assert!(
        net_rx > 0.0,
        "no NET_RX softirq time for 64 MiB over loopback"
    );
    let timer = delta("ebpf_softirq_seconds_total", &[("vector", "timer")])
        + delta("ebpf_softirq_seconds_total", &[("vector", "hrtimer")])
        + delta("ebpf_softirq_seconds_total", &[("vector", "rcu")])
        + delta("ebpf_softirq_seconds_total", &[("vector", "sched")]);
    assert!(timer > 0.0, "no timer/RCU/sched softirq time at all");
    let hardirq = delta("ebpf_hardirq_seconds_total", &[]);
    assert!(
        hardirq > 0.0,
        "no hard IRQ handler time for 64 fsync'd writes"
    );
}
