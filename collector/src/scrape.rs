//! One scrape: every enabled collector updates on the collector threads (`pool`) under the
//! scrape's deadline, as node_exporter's goroutine per collector. A collector that errors or
//! overruns reports `node_scrape_collector_success 0`, and the scrape still returns everything
//! else.
//!
//! Scrapers often come in pairs (an HA Prometheus pair, AMP's collector beside an in-cluster
//! agent), so updates are single-flight: a collector has at most one update in flight, and every
//! scrape that arrives while it runs waits for that one, each under its own deadline.
//!
//! Freshness: a scrape is served only by an update that was still running when the scrape
//! arrived (or that it started itself), never by one that had already finished: what it serves
//! was read at most one update's run time (milliseconds) before the request. An update that
//! outlives the deadline of a scrape waiting for it is overdue: its thread is written off, the
//! scrapes already waiting keep waiting under their own deadlines, and later ones report the
//! collector failed at once instead of waiting for it or piling up another update. A hung
//! collector so costs one thread and no scrape more than its own deadline.
//!
//! Logging is per collector, not per scrape: one line when it starts failing, one when it
//! recovers, whatever the number of scrapers.
use std::{
    collections::HashSet,
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
    pool::{GaveUp, Pool, Task, Ticket},
};

/// Collector threads. Updates are short reads of /proc, /sys and BPF maps, so two threads
/// keep a scrape's wall time close to its CPU time; a stuck update gets its thread replaced.
const THREADS: usize = 2;

/// How often a scrape checks whether its updates queue behind busy threads (hung ones).
const STALL: Duration = Duration::from_secs(1);

struct Slot {
    name: &'static str,
    collector: Arc<dyn Collector>,
    /// The update in flight, shared by every scrape that arrives while it runs; cleared when it
    /// finishes or is cancelled before starting.
    in_flight: Mutex<Option<Arc<Update>>>,
    /// Whether the collector is failing, so a failure is logged when it starts and a recovery
    /// when it ends.
    failing: AtomicBool,
}

/// One update of one collector, and what the scrapes waiting for it need.
struct Update {
    /// Its report once it has finished (or been cancelled before starting).
    report: Mutex<Option<Arc<Report>>>,
    finished: Notify,
    /// Its job on the pool, for giving up on it.
    ticket: Mutex<Option<Ticket>>,
    /// A waiting scrape's deadline passed while it ran: later scrapes do not wait for it.
    overdue: AtomicBool,
    /// Scrapes that will still take its report.
    waiters: AtomicUsize,
}

/// What one update left: its families, how it went and how long it ran.
struct Report {
    families: Vec<MetricFamily>,
    outcome: Outcome,
    elapsed: Duration,
}

enum Outcome {
    Success,
    NoData(String),
    Failed(String),
}

pub struct Scraper {
    slots: Vec<Arc<Slot>>,
    timeout: Duration,
    pool: Pool,
    /// Names an external collector served that collided with built-in ones, logged once each.
    collisions_reported: Mutex<HashSet<String>>,
}

/// Colliding names remembered so that each is logged once; beyond them, collisions are dropped
/// without a line.
const MAX_COLLISIONS_REPORTED: usize = 1000;

impl Scraper {
    pub fn new(collectors: Vec<(&'static str, Arc<dyn Collector>)>, timeout: Duration) -> Self {
        let slots = collectors
            .into_iter()
            .map(|(name, collector)| {
                Arc::new(Slot {
                    name,
                    collector,
                    in_flight: Mutex::new(None),
                    failing: AtomicBool::new(false),
                })
            })
            .collect();
        Self {
            slots,
            timeout,
            pool: Pool::new("collector", THREADS),
            collisions_reported: Mutex::default(),
        }
    }

    /// Runs every collector, or joins its update in flight; `timeout` (from the scrape request)
    /// shortens the configured one. `own` are the exporter's own families, served too.
    pub async fn scrape(
        &self,
        timeout: Option<Duration>,
        own: Vec<MetricFamily>,
    ) -> Vec<MetricFamily> {
        let timeout = timeout.map_or(self.timeout, |t| t.min(self.timeout));
        let started = Instant::now();
        let deadline = tokio::time::Instant::from_std(started) + timeout;

        let mut updates: Vec<Option<Arc<Update>>> = Vec::with_capacity(self.slots.len());
        let mut tasks: Vec<Task> = Vec::new();
        let mut new_updates = Vec::new();
        for slot in &self.slots {
            let mut in_flight = slot.in_flight.lock().unwrap();
            let update = match &*in_flight {
                // Hung since an earlier scrape: not waited for, not started again.
                Some(update) if update.overdue.load(Ordering::Acquire) => None,
                Some(update) => Some(Arc::clone(update)),
                None => {
                    let update = Arc::new(Update::new());
                    *in_flight = Some(Arc::clone(&update));
                    tasks.push(update_task(Arc::clone(slot), Arc::clone(&update)));
                    new_updates.push(Arc::clone(&update));
                    Some(update)
                }
            };
            if let Some(update) = &update {
                update.waiters.fetch_add(1, Ordering::AcqRel);
            }
            updates.push(update);
        }
        for (update, ticket) in new_updates.iter().zip(self.pool.submit(tasks)) {
            *update.ticket.lock().unwrap() = Some(ticket);
        }

        let mut families = own;
        let mut external = Vec::new();
        let mut duration = MetricFamily::gauge(
            "node_scrape_collector_duration_seconds",
            "node_exporter: Duration of a collector scrape.",
        );
        let mut success = MetricFamily::gauge(
            "node_scrape_collector_success",
            "node_exporter: Whether a collector succeeded.",
        );
        for (slot, update) in self.slots.iter().zip(updates) {
            let (ok, elapsed) = match update {
                None => (false, Duration::ZERO),
                Some(update) => match self.wait(slot, &update, deadline).await {
                    Some(report) => {
                        let ok = matches!(report.outcome, Outcome::Success);
                        let elapsed = report.elapsed;
                        if slot.collector.is_external() {
                            external.push((slot.name, report.into_families()));
                        } else {
                            families.extend(report.into_families());
                        }
                        (ok, elapsed)
                    }
                    None => (false, started.elapsed()),
                },
            };
            duration.push([("collector", slot.name)], elapsed.as_secs_f64());
            success.push([("collector", slot.name)], if ok { 1.0 } else { 0.0 });
        }
        families.push(duration);
        families.push(success);
        self.admit_external(&mut families, external);
        families
    }

    /// Adds the families of external collectors to `families`, less those whose name
    /// `families` already has (built-ins win), logged once per name.
    fn admit_external(
        &self,
        families: &mut Vec<MetricFamily>,
        external: Vec<(&'static str, Vec<MetricFamily>)>,
    ) {
        if external.is_empty() {
            return;
        }
        // The names are borrowed, not copied (a few hundred per scrape), so the admitted
        // families join `families` once the lookup is done.
        let built_in: HashSet<&str> = families.iter().map(|f| f.name.as_str()).collect();
        let mut admitted = Vec::new();
        for (collector, output) in external {
            for family in output {
                if !built_in.contains(family.name.as_str()) {
                    admitted.push(family);
                    continue;
                }
                let mut reported = self.collisions_reported.lock().unwrap();
                if reported.len() < MAX_COLLISIONS_REPORTED && reported.insert(family.name.clone())
                {
                    tracing::error!(
                        collector,
                        metric = family.name,
                        "metric served by a built-in collector or the exporter: dropped from this collector's output"
                    );
                }
            }
        }
        families.extend(admitted);
    }

    /// Waits for `update` of `slot` until `deadline`; `None` when it did not finish in time.
    async fn wait(
        &self,
        slot: &Slot,
        update: &Arc<Update>,
        deadline: tokio::time::Instant,
    ) -> Option<ReportHandle> {
        loop {
            let finished = update.finished.notified();
            let mut finished = std::pin::pin!(finished);
            finished.as_mut().enable();
            if let Some(report) = update.take_report() {
                return Some(report);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            let check = deadline.min(now + STALL);
            if tokio::time::timeout_at(check, finished).await.is_err()
                && tokio::time::Instant::now() < deadline
            {
                // Updates still queue behind threads busy since the last check or before it:
                // add a thread.
                self.pool.unstall(STALL / 2);
            }
        }
        let ticket = update.ticket.lock().unwrap().clone();
        match ticket.map(|ticket| self.pool.give_up(&ticket)) {
            Some(GaveUp::NotStarted) => {
                // Never to run: the next scrape starts a fresh one, and every scrape waiting for
                // this one learns it is over.
                let outcome = Outcome::Failed("queued behind hung collectors".to_owned());
                slot.log(&outcome);
                let report = Report {
                    families: Vec::new(),
                    outcome,
                    elapsed: Duration::ZERO,
                };
                slot.finish(update, report);
            }
            Some(GaveUp::Finished) => return update.take_report(),
            Some(GaveUp::Running) | None => {
                if !update.overdue.swap(true, Ordering::AcqRel) {
                    slot.log(&Outcome::Failed(
                        "still running at the scrape's deadline; not waited for again until it returns"
                            .to_owned(),
                    ));
                }
            }
        }
        update.release();
        None
    }
}

impl Update {
    fn new() -> Self {
        Self {
            report: Mutex::new(None),
            finished: Notify::new(),
            ticket: Mutex::new(None),
            overdue: AtomicBool::new(false),
            waiters: AtomicUsize::new(0),
        }
    }

    /// This waiter's share of the report, if it is in; the last waiter takes the update's own
    /// reference, so that a report only one scrape wanted is moved, not copied.
    fn take_report(&self) -> Option<ReportHandle> {
        let mut report = self.report.lock().unwrap();
        let shared = Arc::clone(report.as_ref()?);
        if self.waiters.fetch_sub(1, Ordering::AcqRel) == 1 {
            report.take();
        }
        Some(ReportHandle(shared))
    }

    /// A waiter leaves without the report.
    fn release(&self) {
        if self.waiters.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.report.lock().unwrap().take();
        }
    }
}

/// One scrape's hold on a report.
struct ReportHandle(Arc<Report>);

impl std::ops::Deref for ReportHandle {
    type Target = Report;
    fn deref(&self) -> &Report {
        &self.0
    }
}

impl ReportHandle {
    /// The report's families: moved out when no other scrape holds it, copied otherwise.
    fn into_families(self) -> Vec<MetricFamily> {
        match Arc::try_unwrap(self.0) {
            Ok(report) => report.families,
            Err(shared) => shared.families.clone(),
        }
    }
}

impl Slot {
    /// Files `update`'s report, frees the slot for the next update and wakes its waiters.
    fn finish(&self, update: &Arc<Update>, report: Report) {
        let mut in_flight = self.in_flight.lock().unwrap();
        if in_flight.as_ref().is_some_and(|u| Arc::ptr_eq(u, update)) {
            *in_flight = None;
        }
        drop(in_flight);
        *update.report.lock().unwrap() = Some(Arc::new(report));
        update.finished.notify_waiters();
    }

    /// Logs a change between working and failing; a failure that goes on is logged at debug.
    fn log(&self, outcome: &Outcome) {
        match outcome {
            Outcome::Success => {
                if self.failing.swap(false, Ordering::AcqRel) {
                    tracing::info!(collector = self.name, "collector recovered");
                }
            }
            Outcome::NoData(reason) => {
                tracing::debug!(collector = self.name, reason, "collector returned no data");
            }
            Outcome::Failed(reason) => {
                if !self.failing.swap(true, Ordering::AcqRel) {
                    tracing::error!(collector = self.name, err = %reason, "collector failed");
                } else {
                    tracing::debug!(collector = self.name, err = %reason, "collector still failing");
                }
            }
        }
    }
}

/// The update of `slot`: runs it, logs how it went and hands its report to the scrapes waiting.
fn update_task(slot: Arc<Slot>, update: Arc<Update>) -> Task {
    Box::new(move || {
        let started = Instant::now();
        let mut families = Vec::new();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            slot.collector.update(&mut families)
        }));
        let (families, outcome) = outcome(families, result);
        slot.log(&outcome);
        let report = Report {
            families,
            outcome,
            elapsed: started.elapsed(),
        };
        slot.finish(&update, report);
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
        let families = scraper
            .scrape(Some(Duration::from_millis(300)), Vec::new())
            .await;
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
        let families = scraper
            .scrape(Some(Duration::from_millis(100)), Vec::new())
            .await;
        assert_eq!(
            sample(&families, "node_scrape_collector_success", "slow"),
            Some(0.0)
        );
        tokio::time::sleep(Duration::from_millis(1600)).await;
        let families = scraper
            .scrape(Some(Duration::from_secs(5)), Vec::new())
            .await;
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
        let families = scraper
            .scrape(Some(Duration::from_millis(2000)), Vec::new())
            .await;
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

    /// Counts its updates, each taking the given time.
    struct Counting(Duration, AtomicUsize);
    impl Collector for Counting {
        fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
            let n = self.1.fetch_add(1, Ordering::AcqRel) + 1;
            std::thread::sleep(self.0);
            out.push(MetricFamily::gauge("counted", "Updates.").with([("v", "x")], n as f64));
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_scrapes_share_one_update_and_all_succeed() {
        let counting = Arc::new(Counting(Duration::from_millis(300), AtomicUsize::new(0)));
        let scraper = Arc::new(Scraper::new(
            vec![
                ("counting", Arc::clone(&counting) as Arc<dyn Collector>),
                ("fixed", Arc::new(Fixed(7.0))),
            ],
            Duration::from_secs(5),
        ));
        let scrapes: Vec<_> = (0..40)
            .map(|_| {
                let scraper = Arc::clone(&scraper);
                tokio::spawn(async move { scraper.scrape(None, Vec::new()).await })
            })
            .collect();
        for scrape in scrapes {
            let families = scrape.await.unwrap();
            for collector in ["counting", "fixed"] {
                assert_eq!(
                    sample(&families, "node_scrape_collector_success", collector),
                    Some(1.0),
                    "{collector}"
                );
            }
            assert!(families.iter().any(|f| f.name == "counted"));
            assert!(families.iter().any(|f| f.name == "fixed"));
        }
        // All 40 arrived while the first update ran: they shared it.
        assert_eq!(counting.1.load(Ordering::Acquire), 1);
        // A scrape after it finished gets a fresh update, not the old result.
        scraper.scrape(None, Vec::new()).await;
        assert_eq!(counting.1.load(Ordering::Acquire), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_collector_fails_alone_under_concurrent_scrapes() {
        let scraper = Arc::new(Scraper::new(
            vec![
                (
                    "hung",
                    Arc::new(Slow(Duration::from_secs(4))) as Arc<dyn Collector>,
                ),
                ("fixed", Arc::new(Fixed(7.0))),
            ],
            Duration::from_secs(10),
        ));
        for _ in 0..3 {
            let started = Instant::now();
            let scrapes: Vec<_> = (0..8)
                .map(|_| {
                    let scraper = Arc::clone(&scraper);
                    tokio::spawn(async move {
                        scraper
                            .scrape(Some(Duration::from_millis(300)), Vec::new())
                            .await
                    })
                })
                .collect();
            for scrape in scrapes {
                let families = scrape.await.unwrap();
                assert_eq!(
                    sample(&families, "node_scrape_collector_success", "hung"),
                    Some(0.0)
                );
                assert_eq!(
                    sample(&families, "node_scrape_collector_success", "fixed"),
                    Some(1.0)
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{:?}",
                started.elapsed()
            );
        }
        // The hung update holds one thread; its replacement and the original one serve the rest.
        assert_eq!(scraper.pool.spawned(), THREADS + 1);
    }

    /// Serves families of the given names, as a textfile would.
    struct External(Vec<&'static str>);
    impl Collector for External {
        fn update(&self, out: &mut Vec<MetricFamily>) -> anyhow::Result<()> {
            for name in &self.0 {
                out.push(MetricFamily::gauge(*name, "From a file.").with([("v", "file")], 0.0));
            }
            Ok(())
        }

        fn is_external(&self) -> bool {
            true
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn built_in_families_win_over_external_ones() {
        let scraper = Scraper::new(
            vec![
                (
                    "textfile",
                    Arc::new(External(vec![
                        "fixed",
                        "own",
                        "node_scrape_collector_success",
                        "extra",
                    ])) as Arc<dyn Collector>,
                ),
                ("fixed", Arc::new(Fixed(7.0))),
            ],
            Duration::from_secs(5),
        );
        for _ in 0..3 {
            let own = vec![MetricFamily::gauge("own", "The exporter's.").with([("v", "x")], 1.0)];
            let families = scraper.scrape(None, own).await;
            for name in ["fixed", "own", "node_scrape_collector_success", "extra"] {
                let found: Vec<_> = families.iter().filter(|f| f.name == name).collect();
                assert_eq!(found.len(), 1, "{name}");
                let from_file = found[0]
                    .metrics
                    .iter()
                    .any(|m| m.labels.iter().any(|(_, v)| v == "file"));
                assert_eq!(from_file, name == "extra", "{name}");
            }
        }
        assert_eq!(scraper.collisions_reported.lock().unwrap().len(), 3);
    }
}
