//! Root: a real Prometheus server (Debian package, loopback) scrapes the daemon and can compute
//! quantiles from the run-queue histogram.
mod common;

use std::time::{Duration, Instant};

use common::{Daemon, prometheus::Prometheus};

fn start_prometheus(target: &str) -> Prometheus {
    Prometheus::start(&format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
         scrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['{target}']\n"
    ))
}

#[test]
fn prometheus_scrapes_and_computes_quantiles() {
    require_root!();
    let daemon = Daemon::start(&[]);
    let prometheus = start_prometheus(&daemon.address.to_string());
    let quantile =
        "histogram_quantile(0.99, sum by (le) (rate(ebpf_runqueue_latency_seconds_bucket[10s])))";
    let started = Instant::now();
    let (mut up, mut p99) = (None, None);
    while started.elapsed() < Duration::from_secs(60) {
        common::workload::pipe_ping_pong(2000, 0);
        up = prometheus.values("up{job=\"node\"}");
        p99 = prometheus.values(quantile);
        let ready = up.as_deref() == Some(&[1.0])
            && p99
                .as_ref()
                .is_some_and(|v| v.len() == 1 && v[0].is_finite());
        if ready {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        up.as_deref(),
        Some(&[1.0][..]),
        "up; collector log:\n{}",
        daemon.log()
    );
    let p99 = p99.expect("quantile query answered")[0];
    assert!(
        p99.is_finite() && p99 > 0.0 && p99 < 10.0,
        "p99 run-queue latency {p99} s"
    );
}
