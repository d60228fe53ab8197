//! One scrape: every enabled collector runs concurrently on the blocking pool under a deadline,
//! as node_exporter's goroutine per collector. A collector that errors or overruns reports
//! `node_scrape_collector_success 0`, is logged once (again only after it has recovered), and
//! the scrape still returns everything else.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::task::JoinSet;

use crate::metrics::MetricFamily;

/// A source of metrics read at scrape time (a /proc file, a BPF map...).
pub trait Collector: Send + Sync + 'static {
    /// Pushes this scrape's families into `out`. May block; runs on the blocking pool. On error,
    /// families already pushed are still served, as node_exporter does.
    fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()>;
}

/// The error for "nothing to report on this host" (no hwmon chips, no md arrays...): success 0
/// as in node_exporter, but logged at debug level only, since it is not a fault.
#[derive(Debug)]
pub struct NoData(pub String);

impl std::fmt::Display for NoData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoData {}

struct Slot {
    name: &'static str,
    collector: Arc<dyn Collector>,
    /// Set while an update runs; an update that outlived its scrape keeps it set, and the
    /// collector is skipped (not piled up on another thread) until that update returns.
    running: Arc<AtomicBool>,
    /// Whether the last scrape failed, so a persistent failure is logged once.
    failing: AtomicBool,
}

pub struct Scraper {
    slots: Vec<Arc<Slot>>,
    timeout: Duration,
}

enum Outcome {
    Success,
    NoData(String),
    Failed(String),
}

impl Scraper {
    pub fn new(collectors: Vec<(&'static str, Arc<dyn Collector>)>, timeout: Duration) -> Self {
        let slots = collectors
            .into_iter()
            .map(|(name, collector)| {
                Arc::new(Slot {
                    name,
                    collector,
                    running: Arc::new(AtomicBool::new(false)),
                    failing: AtomicBool::new(false),
                })
            })
            .collect();
        Self { slots, timeout }
    }

    /// Runs every collector; `timeout` (from the scrape request) shortens the configured one.
    pub async fn scrape(&self, timeout: Option<Duration>) -> Vec<MetricFamily> {
        let timeout = timeout.map_or(self.timeout, |t| t.min(self.timeout));
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tasks = JoinSet::new();
        for slot in &self.slots {
            let slot = Arc::clone(slot);
            tasks.spawn(async move {
                let started = Instant::now();
                let (families, outcome) = run_one(&slot, deadline, timeout).await;
                (slot, started.elapsed(), families, outcome)
            });
        }

        let mut families = Vec::new();
        let mut duration = MetricFamily::gauge(
            "node_scrape_collector_duration_seconds",
            "node_exporter: Duration of a collector scrape.",
        );
        let mut success = MetricFamily::gauge(
            "node_scrape_collector_success",
            "node_exporter: Whether a collector succeeded.",
        );
        while let Some(joined) = tasks.join_next().await {
            let (slot, elapsed, collected, outcome) = joined.expect("scrape tasks do not panic");
            families.extend(collected);
            let ok = matches!(outcome, Outcome::Success);
            match outcome {
                Outcome::Success => {
                    if slot.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!(collector = slot.name, "collector recovered");
                    }
                }
                Outcome::NoData(reason) => {
                    tracing::debug!(collector = slot.name, reason, "collector returned no data");
                }
                Outcome::Failed(reason) => {
                    if !slot.failing.swap(true, Ordering::Relaxed) {
                        tracing::error!(collector = slot.name, err = %reason, "collector failed");
                    } else {
                        tracing::debug!(collector = slot.name, err = %reason, "collector still failing");
                    }
                }
            }
            duration.push([("collector", slot.name)], elapsed.as_secs_f64());
            success.push([("collector", slot.name)], if ok { 1.0 } else { 0.0 });
        }
        families.push(duration);
        families.push(success);
        families
    }
}

async fn run_one(
    slot: &Arc<Slot>,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> (Vec<MetricFamily>, Outcome) {
    if slot.running.swap(true, Ordering::AcqRel) {
        let reason = "still running from an earlier scrape that timed out".to_owned();
        return (Vec::new(), Outcome::Failed(reason));
    }
    let collector = Arc::clone(&slot.collector);
    let running = Arc::clone(&slot.running);
    let handle = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| collector.update(&mut out)));
        running.store(false, Ordering::Release);
        (out, result)
    });
    match tokio::time::timeout_at(deadline, handle).await {
        Err(_elapsed) => (
            Vec::new(),
            Outcome::Failed(format!(
                "timed out after {}",
                humantime::format_duration(timeout)
            )),
        ),
        Ok(Err(join_error)) => (
            Vec::new(),
            Outcome::Failed(format!("update task failed: {join_error}")),
        ),
        Ok(Ok((out, Ok(Ok(()))))) => (out, Outcome::Success),
        Ok(Ok((out, Ok(Err(error))))) => match error.downcast_ref::<NoData>() {
            Some(NoData(reason)) => (out, Outcome::NoData(reason.clone())),
            None => (out, Outcome::Failed(format!("{error:#}"))),
        },
        Ok(Ok((_, Err(_panic)))) => (Vec::new(), Outcome::Failed("update panicked".to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Value;

    struct Fixed(f64);
    impl Collector for Fixed {
        fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
            out.push(MetricFamily::gauge("fixed", "Fixed.").with([("v", "x")], self.0));
            Ok(())
        }
    }

    struct Failing;
    impl Collector for Failing {
        fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
            out.push(
                MetricFamily::gauge("partial", "Pushed before the error.").with([("v", "x")], 1.0),
            );
            anyhow::bail!("malformed /proc/fake line 3")
        }
    }

    struct Slow(Duration);
    impl Collector for Slow {
        fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
            std::thread::sleep(self.0);
            out.push(MetricFamily::gauge("slow", "Too late.").with([("v", "x")], 1.0));
            Ok(())
        }
    }

    fn sample(families: &[MetricFamily], name: &str, collector: &str) -> Option<f64> {
        families
            .iter()
            .filter(|f| f.name == name)
            .flat_map(|f| &f.metrics)
            .find(|m| {
                m.labels
                    .iter()
                    .any(|(k, v)| k == "collector" && v == collector)
            })
            .map(|m| match m.value {
                Value::Scalar(v) => v,
                _ => panic!("not a scalar"),
            })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failures_and_overruns_do_not_spoil_the_scrape() {
        let scraper = Scraper::new(
            vec![
                ("fixed", Arc::new(Fixed(7.0)) as Arc<dyn Collector>),
                ("failing", Arc::new(Failing)),
                ("slow", Arc::new(Slow(Duration::from_millis(1500)))),
            ],
            Duration::from_secs(10),
        );
        let families = scraper.scrape(Some(Duration::from_millis(300))).await;
        assert_eq!(
            sample(&families, "node_scrape_collector_success", "fixed"),
            Some(1.0)
        );
        assert_eq!(
            sample(&families, "node_scrape_collector_success", "failing"),
            Some(0.0)
        );
        assert_eq!(
            sample(&families, "node_scrape_collector_success", "slow"),
            Some(0.0)
        );
        assert!(families.iter().any(|f| f.name == "fixed"));
        assert!(
            families.iter().any(|f| f.name == "partial"),
            "partial output is kept"
        );
        assert!(!families.iter().any(|f| f.name == "slow"));
        let slow_duration =
            sample(&families, "node_scrape_collector_duration_seconds", "slow").unwrap();
        assert!((0.25..1.4).contains(&slow_duration), "{slow_duration}");

        // While the overrun update still runs, the collector is skipped, not started again.
        let families = scraper.scrape(Some(Duration::from_millis(100))).await;
        assert_eq!(
            sample(&families, "node_scrape_collector_success", "slow"),
            Some(0.0)
        );
        tokio::time::sleep(Duration::from_millis(1600)).await;
        let families = scraper.scrape(Some(Duration::from_secs(5))).await;
        assert_eq!(
            sample(&families, "node_scrape_collector_success", "slow"),
            Some(1.0)
        );
        assert!(families.iter().any(|f| f.name == "slow"));
    }
}
