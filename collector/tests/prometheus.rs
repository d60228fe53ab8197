//! Root: a real Prometheus server (Debian package, loopback) scrapes the daemon and can compute
//! quantiles from the run-queue histogram.
mod common;

use std::{
    io::Read as _,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::Daemon;

struct Prometheus {
    child: Child,
    url: String,
    _dir: TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_prometheus(target: &str) -> Prometheus {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new(common::tool("prometheus"))
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting prometheus");
    Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: TempDir(dir),
    }
}

/// Runs an instant query; returns the values of the result vector.
fn query(prometheus: &Prometheus, expr: &str) -> Option<Vec<f64>> {
    let mut response = ureq::get(&format!("{}/api/v1/query", prometheus.url))
        .query("query", expr)
        .call()
        .ok()?;
    let mut body = String::new();
    response
        .body_mut()
        .as_reader()
        .read_to_string(&mut body)
        .ok()?;
    // {"status":"success","data":{"resultType":"vector","result":[{"metric":{...},"value":[t,"v"]}]}}
    assert!(body.contains("\"status\":\"success\""), "{expr}: {body}");
    Some(
        body.split("\"value\":[")
            .skip(1)
            .filter_map(|rest| rest.split('"').nth(1))
            .map(|v| v.parse().unwrap_or(f64::NAN))
            .collect(),
    )
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
        up = query(&prometheus, "up{job=\"node\"}");
        p99 = query(&prometheus, quantile);
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
