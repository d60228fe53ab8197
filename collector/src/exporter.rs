//! Metrics about the collector itself: `process_*` (from the prometheus crate's process
//! collector, as client_golang's), `promhttp_metric_handler_*` as node_exporter's handler, and a
//! build-info gauge.
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus::core::Collector as _;

use crate::metrics::{MetricFamily, MetricType};

/// HTTP status codes the metrics handler counts, as promhttp pre-initialises them.
const STATUS_CODES: [u16; 3] = [200, 500, 503];

pub struct ExporterMetrics {
    process: prometheus::process_collector::ProcessCollector,
    requests_in_flight: AtomicI64,
    requests_total: [AtomicU64; STATUS_CODES.len()],
}

impl Default for ExporterMetrics {
    fn default() -> Self {
        Self {
            process: prometheus::process_collector::ProcessCollector::for_self(),
            requests_in_flight: AtomicI64::new(0),
            requests_total: Default::default(),
        }
    }
}

impl ExporterMetrics {
    /// Counts a scrape in flight until the guard is dropped: when it is answered, or when the
    /// client goes away mid-scrape and the handler is dropped with it.
    pub fn in_flight(&self) -> InFlight<'_> {
        self.requests_in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.requests_in_flight)
    }

    pub fn count_response(&self, status: u16) {
        if let Some(i) = STATUS_CODES.iter().position(|code| *code == status) {
            self.requests_total[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `process_*` and `promhttp_*` families (omitted under `--web.disable-exporter-metrics`).
    pub fn families(&self) -> Vec<MetricFamily> {
        let mut families: Vec<MetricFamily> = self
            .process
            .collect()
            .iter()
            .filter_map(from_prometheus)
            .collect();
        // The prometheus crate divides clock ticks by the tick rate in integers, so its
        // process_cpu_seconds_total moved in whole seconds and "exporter CPU" panels read 0;
        // client_golang keeps the fraction.
        if let Some(seconds) = own_cpu_seconds()
            && let Some(cpu) = families
                .iter_mut()
                .find(|f| f.name == "process_cpu_seconds_total")
        {
            cpu.metrics.clear();
            cpu.push(std::iter::empty::<(&str, &str)>(), seconds);
        }
        families.push(
            MetricFamily::gauge(
                "process_virtual_memory_max_bytes",
                "Maximum amount of virtual memory available in bytes.",
            )
            .with_value(address_space_limit()),
        );
        families.push(
            MetricFamily::gauge(
                "promhttp_metric_handler_requests_in_flight",
                "Current number of scrapes being served.",
            )
            .with(
                std::iter::empty::<(&str, &str)>(),
                self.requests_in_flight.load(Ordering::Relaxed) as f64,
            ),
        );
        let mut total = MetricFamily::counter(
            "promhttp_metric_handler_requests_total",
            "Total number of scrapes by HTTP status code.",
        );
        for (code, count) in STATUS_CODES.iter().zip(&self.requests_total) {
            total.push(
                [("code", code.to_string())],
                count.load(Ordering::Relaxed) as f64,
            );
        }
        families.push(total);
        families
    }
}

/// A scrape in flight, counted in `promhttp_metric_handler_requests_in_flight` while it lives.
pub struct InFlight<'a>(&'a AtomicI64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// User and system CPU time of this process, from /proc/self/stat, to the clock tick.
fn own_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command name (which may hold spaces), state is the first field: utime and
    // stime are the 12th and 13th from there (fields 14 and 15 of proc(5)).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf takes a plain integer.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| ticks as f64 / per_second as f64)
}

/// The soft limit on this process's address space (RLIMIT_AS), as client_golang reports it:
/// unlimited is 2^64 - 1.
fn address_space_limit() -> f64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes a valid struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } != 0 {
        return f64::NAN;
    }
    limit.rlim_cur as f64
}

/// `ebpf_build_info`: always exported, like node_exporter's `node_exporter_build_info`.
pub fn build_info() -> MetricFamily {
    MetricFamily::gauge(
        "ebpf_build_info",
        "A metric with a constant '1' value labeled by version, revision, rustversion and arch from which the collector was built.",
    )
    .with(
        [
            ("version", env!("CARGO_PKG_VERSION")),
            ("revision", env!("COLLECTOR_GIT_REVISION")),
            ("rustversion", env!("COLLECTOR_RUSTC_VERSION")),
            ("arch", std::env::consts::ARCH),
        ],
        1.0,
    )
}

/// `node_exporter_build_info`, as node_exporter (prometheus/common's version collector) labels
/// it, with this collector's build: dashboards and alerts find their targets by it (kube-
/// prometheus' "USE Method / Node" takes its instance variable from it). `goversion` is the Rust
/// compiler's version and `goarch` the architecture in Go's spelling, as the label values are
/// matched.
pub fn node_exporter_build_info() -> MetricFamily {
    let goarch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    MetricFamily::gauge(
        "node_exporter_build_info",
        "A metric with a constant '1' value labeled by version, revision, branch, goversion from which node_exporter was built, and the goos and goarch for the build.",
    )
    .with(
        [
            ("branch", env!("COLLECTOR_GIT_BRANCH")),
            ("goarch", goarch),
            ("goos", std::env::consts::OS),
            ("goversion", concat!("rust", env!("COLLECTOR_RUSTC_VERSION"))),
            ("revision", env!("COLLECTOR_GIT_REVISION")),
            ("tags", "ebpf"),
            ("version", env!("CARGO_PKG_VERSION")),
        ],
        1.0,
    )
}

/// Converts the process collector's families (counters and gauges only).
fn from_prometheus(family: &prometheus::proto::MetricFamily) -> Option<MetricFamily> {
    use prometheus::proto::MetricType as P;
    let metric_type = match family.get_field_type() {
        P::COUNTER => MetricType::Counter,
        P::GAUGE => MetricType::Gauge,
        _ => return None,
    };
    let mut out = MetricFamily::new(family.name(), family.help(), metric_type);
    for metric in family.get_metric() {
        let value = match metric_type {
            MetricType::Counter => metric.get_counter().get_value(),
            _ => metric.get_gauge().get_value(),
        };
        out.push(
            metric.get_label().iter().map(|l| (l.name(), l.value())),
            value,
        );
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_and_handler_families() {
        let metrics = ExporterMetrics::default();
        drop(metrics.in_flight());
        metrics.count_response(200);
        metrics.count_response(503);
        let families = metrics.families();
        let names: Vec<_> = families.iter().map(|f| f.name.as_str()).collect();
        for expected in [
            "process_cpu_seconds_total",
            "process_virtual_memory_max_bytes",
            "process_max_fds",
            "process_open_fds",
            "process_resident_memory_bytes",
            "process_start_time_seconds",
            "process_virtual_memory_bytes",
            "promhttp_metric_handler_requests_in_flight",
            "promhttp_metric_handler_requests_total",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        let text = crate::exposition::encode(&crate::metrics::merge_and_sort(families));
        assert!(
            text.contains("promhttp_metric_handler_requests_total{code=\"200\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("promhttp_metric_handler_requests_total{code=\"503\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("promhttp_metric_handler_requests_in_flight 0\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter\n"),
            "{text}"
        );
    }

    #[test]
    fn own_cpu_time_has_sub_second_resolution() {
        let before = own_cpu_seconds().unwrap();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let spent = own_cpu_seconds().unwrap() - before;
        assert!((0.1..1.0).contains(&spent), "{spent} s for 0.3 s of work");
        assert!(address_space_limit() > 0.0);
    }

    #[test]
    fn node_exporters_build_info_labels() {
        let text = crate::exposition::encode(&[node_exporter_build_info()]);
        for label in [
            "branch=",
            "goarch=",
            "goos=\"linux\"",
            "goversion=\"rust",
            "revision=",
            "tags=",
            "version=\"",
        ] {
            assert!(text.contains(label), "{label}: {text}");
        }
    }
}
