//! One scrape: every enabled collector runs on the collector threads (`pool`) under a deadline,
//! as node_exporter's goroutine per collector. A collector that errors or overruns reports
//! `node_scrape_collector_success 0`, is logged once (again only after it has recovered), and
//! the scrape still returns everything else.
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::Notify;

use crate::{
    collector::{Collector, NoData},
    metrics::MetricFamily,
    pool::{GaveUp, Pool, Task},
};

/// Collector threads. Updates are short reads of /proc, /sys and BPF maps, so two threads
/// keep a scrape's wall time close to its CPU time; a stuck update gets its thread replaced.
const THREADS: usize = 2;

/// How often a scrape checks whether its updates queue behind busy threads (hung ones).
const STALL: Duration = Duration::from_secs(1);

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
    pool: Pool,
}

enum Outcome {
    Success,
    NoData(String),
    Failed(String),
}

/// What one update left: its families, its result (or panic) and how long it ran.
struct Report {
    families: Vec<MetricFamily>,
    result: std::thread::Result<anyhow::Result<()>>,
    elapsed: Duration,
}

/// One scrape's updates: their reports by slot, and a wake-up when the last one is in.
struct Batch {
    reports: Mutex<Vec<Option<Report>>>,
    remaining: AtomicUsize,
    all_done: Notify,
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
        Self {
            slots,
            timeout,
            pool: Pool::new("collector", THREADS),
        }
    }

    /// Runs every collector; `timeout` (from the scrape request) shortens the configured one.
    pub async fn scrape(&self, timeout: Option<Duration>) -> Vec<MetricFamily> {
        let timeout = timeout.map_or(self.timeout, |t| t.min(self.timeout));
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started) + timeout;
        let batch = Arc::new(Batch {
            reports: Mutex::new((0..self.slots.len()).map(|_| None).collect()),
            remaining: AtomicUsize::new(0),
            all_done: Notify::new(),
        });

        // A collector whose update from an earlier scrape still runs is not started again.
        let mut outcomes: Vec<Option<(Outcome, Duration)>> = Vec::new();
        let mut tasks: Vec<Task> = Vec::new();
        let mut submitted = Vec::new();
        for (index, slot) in self.slots.iter().enumerate() {
            if slot.running.swap(true, Ordering::AcqRel) {
                let reason = "still running from an earlier scrape that timed out".to_owned();
                outcomes.push(Some((Outcome::Failed(reason), Duration::ZERO)));
                continue;
            }
            outcomes.push(None);
            submitted.push(index);
            tasks.push(update_task(Arc::clone(slot), Arc::clone(&batch), index));
        }
        batch.remaining.store(tasks.len(), Ordering::Release);
        let tickets = self.pool.submit(tasks);
        if !tickets.is_empty() {
            let mut all_done = std::pin::pin!(batch.all_done.notified());
            loop {
                let check = deadline.min(tokio::time::Instant::now() + STALL);
                if tokio::time::timeout_at(check, all_done.as_mut())
                    .await
                    .is_ok()
                    || tokio::time::Instant::now() >= deadline
                {
                    break;
                }
                // Updates still queue behind threads busy since the last check or before it:
                // add a thread.
                self.pool.unstall(STALL / 2);
            }
        }

        let mut families = Vec::new();
        for (index, ticket) in submitted.into_iter().zip(&tickets) {
            let mut report = batch.reports.lock().unwrap()[index].take();
            if report.is_none() {
                if self.pool.give_up(ticket) == GaveUp::NotStarted {
                    self.slots[index].running.store(false, Ordering::Release);
                }
                // It may have finished while we gave up on it.
                report = batch.reports.lock().unwrap()[index].take();
            }
            outcomes[index] = Some(match report {
                None => (
                    Outcome::Failed(format!(
                        "timed out after {}",
                        humantime::format_duration(timeout)
                    )),
                    started.elapsed(),
                ),
                Some(report) => {
                    let (collected, outcome) = outcome(report.families, report.result);
                    families.extend(collected);
                    (outcome, report.elapsed)
                }
            });
        }

        let mut duration = MetricFamily::gauge(
            "node_scrape_collector_duration_seconds",
            "node_exporter: Duration of a collector scrape.",
        );
        let mut success = MetricFamily::gauge(
            "node_scrape_collector_success",
            "node_exporter: Whether a collector succeeded.",
        );
        for (slot, result) in self.slots.iter().zip(outcomes) {
            let (outcome, elapsed) = result.expect("every slot has an outcome");
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

/// The update of `slot` for one scrape: runs it, files its report and, as the last one of the
/// batch, wakes the scrape.
fn update_task(slot: Arc<Slot>, batch: Arc<Batch>, index: usize) -> Task {
    Box::new(move || {
        let started = Instant::now();
        let mut families = Vec::new();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            slot.collector.update(&mut families)
        }));
        let report = Report {
            families,
            result,
            elapsed: started.elapsed(),
        };
        batch.reports.lock().unwrap()[index] = Some(report);
        slot.running.store(false, Ordering::Release);
        if batch.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            batch.all_done.notify_one();
        }
    })
}

/// What a finished update is worth: the families to serve and how it went.
fn outcome(
    families: Vec<MetricFamily>,
    result: std::thread::Result<anyhow::Result<()>>,
) -> (Vec<MetricFamily>, Outcome) {
    match result {
        Ok(Ok(())) => (families, Outcome::Success),
        Ok(Err(error)) => match error.downcast_ref::<NoData>() {
            Some(NoData(reason)) => (families, Outcome::NoData(reason.clone())),
            None => (families, Outcome::Failed(format!("{error:#}"))),
        },
        Err(_panic) => (Vec::new(), Outcome::Failed("update panicked".to_owned())),
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn updates_do_not_wait_behind_hung_ones() {
        // Both collector threads get a hung update; the last collector still runs in time.
        let scraper = Scraper::new(
            vec![
                (
                    "slow1",
                    Arc::new(Slow(Duration::from_millis(3000))) as Arc<dyn Collector>,
                ),
                ("slow2", Arc::new(Slow(Duration::from_millis(3000)))),
                ("fixed", Arc::new(Fixed(7.0))),
            ],
            Duration::from_secs(10),
        );
        let families = scraper.scrape(Some(Duration::from_millis(2000))).await;
        assert_eq!(
            sample(&families, "node_scrape_collector_success", "fixed"),
            Some(1.0)
        );
        for slow in ["slow1", "slow2"] {
            assert_eq!(
                sample(&families, "node_scrape_collector_success", slow),
                Some(0.0)
            );
        }
        assert_eq!(
            scraper.pool.spawned(),
            THREADS + 2,
            "one helper at 1 s, then the deadline"
        );
    }
}
