//! Long-lived worker threads for calls that may hang: the collectors' updates (`scrape`) and the
//! filesystem collector's statfs calls each have a pool. Jobs are fed in batches, so a scrape
//! costs one wake-up instead of a thread hand-off per collector (tokio's blocking pool woke a
//! thread, and kept one alive, for each of the ~30 collectors).
//!
//! A thread stuck in an update that its scrape gave up on is written off and replaced, so a hung
//! collector holds one thread and the others keep running; that thread exits once the update
//! returns. Queued updates a scrape gave up on never start. While updates wait and every thread
//! has been busy for a while, the longest-running thread is written off the same way, so
//! updates never queue for long behind hung ones (as goroutines never wait for a thread).
use std::{
    collections::VecDeque,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicU8, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

/// A job's life: queued, then running, then done; a queued job can be cancelled and a running
/// one abandoned (its thread replaced).
const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;
const CANCELLED: u8 = 3;
const ABANDONED: u8 = 4;

pub type Task = Box<dyn FnOnce() + Send + 'static>;

pub struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Mutex<Queue>,
    work: Condvar,
    name: &'static str,
    /// Threads ever started, and threads not yet exited, for tests.
    spawned: AtomicUsize,
    live: AtomicUsize,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<(Ticket, Task)>,
    /// Jobs running on threads not written off, and since when.
    running: Vec<(Ticket, Instant)>,
    /// Threads waiting for a job.
    idle: usize,
    /// Set when the pool is dropped: threads exit once the queue is empty.
    closed: bool,
}

/// A submitted job's state, for giving up on it.
#[derive(Clone)]
pub struct Ticket(Arc<AtomicU8>);

/// What [`Pool::give_up`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum GaveUp {
    /// It had not started and never will.
    NotStarted,
    /// It is still running; its thread has been replaced (now or earlier).
    Running,
    /// It finished in the meantime.
    Finished,
}

impl Pool {
    pub fn new(name: &'static str, threads: usize) -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            name,
            spawned: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
        });
        for _ in 0..threads.max(1) {
            Shared::spawn(&shared);
        }
        Self { shared }
    }

    /// Queues `tasks` in order, under one lock and one wake-up.
    pub fn submit(&self, tasks: impl IntoIterator<Item = Task>) -> Vec<Ticket> {
        let mut tickets = Vec::new();
        let mut queue = self.shared.queue.lock().unwrap();
        for task in tasks {
            let ticket = Ticket(Arc::new(AtomicU8::new(QUEUED)));
            tickets.push(ticket.clone());
            queue.jobs.push_back((ticket, task));
        }
        drop(queue);
        self.shared.work.notify_all();
        tickets
    }

    /// Gives up on a job: a queued one is cancelled, a running one keeps its thread, which a new
    /// thread replaces.
    pub fn give_up(&self, ticket: &Ticket) -> GaveUp {
        match ticket
            .0
            .compare_exchange(QUEUED, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => GaveUp::NotStarted,
            // Already written off by `unstall`: still running on the thread it has.
            Err(ABANDONED) => GaveUp::Running,
            Err(RUNNING) => {
                let mut queue = self.shared.queue.lock().unwrap();
                if self.shared.write_off(&mut queue, ticket) {
                    GaveUp::Running
                } else {
                    GaveUp::Finished
                }
            }
            Err(_) => GaveUp::Finished,
        }
    }

    /// When jobs are waiting and every thread has run its job for at least `after`, writes off
    /// the thread that has run longest and starts another. Returns whether it did.
    pub fn unstall(&self, after: Duration) -> bool {
        let mut queue = self.shared.queue.lock().unwrap();
        let waiting = queue
            .jobs
            .iter()
            .any(|(ticket, _)| ticket.0.load(Ordering::Acquire) == QUEUED);
        if !waiting || queue.idle > 0 {
            return false;
        }
        let Some((oldest, started)) = queue
            .running
            .iter()
            .min_by_key(|(_, started)| *started)
            .cloned()
        else {
            return false;
        };
        started.elapsed() >= after && self.shared.write_off(&mut queue, &oldest)
    }

    #[cfg(test)]
    pub(crate) fn spawned(&self) -> usize {
        self.shared.spawned.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    fn live(&self) -> usize {
        self.shared.live.load(Ordering::Acquire)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.queue.lock().unwrap().closed = true;
        self.shared.work.notify_all();
    }
}

impl Shared {
    fn spawn(shared: &Arc<Self>) {
        shared.spawned.fetch_add(1, Ordering::Relaxed);
        shared.live.fetch_add(1, Ordering::AcqRel);
        let this = Arc::clone(shared);
        std::thread::Builder::new()
            .name(shared.name.to_owned())
            .spawn(move || {
                this.work_loop();
                this.live.fetch_sub(1, Ordering::AcqRel);
            })
            .expect("spawning a collector thread");
    }

    /// Marks a running job's thread as written off (it exits when the job returns) and starts
    /// its replacement; false when the job is no longer running.
    fn write_off(self: &Arc<Self>, queue: &mut Queue, ticket: &Ticket) -> bool {
        if ticket
            .0
            .compare_exchange(RUNNING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        queue.running.retain(|(t, _)| !Arc::ptr_eq(&t.0, &ticket.0));
        Self::spawn(self);
        true
    }

    fn work_loop(&self) {
        loop {
            let (ticket, task) = {
                let mut queue = self.queue.lock().unwrap();
                loop {
                    match queue.jobs.pop_front() {
                        Some((ticket, task)) => {
                            // Claimed under the lock, so `unstall` sees it running or queued.
                            if ticket
                                .0
                                .compare_exchange(
                                    QUEUED,
                                    RUNNING,
                                    Ordering::AcqRel,
                                    Ordering::Acquire,
                                )
                                .is_ok()
                            {
                                queue.running.push((ticket.clone(), Instant::now()));
                                break (ticket, task);
                            }
                            // cancelled: drop it
                        }
                        None if queue.closed => return,
                        None => {
                            queue.idle += 1;
                            queue = self.work.wait(queue).unwrap();
                            queue.idle -= 1;
                        }
                    }
                }
            };
            task();
            let mut queue = self.queue.lock().unwrap();
            if ticket
                .0
                .compare_exchange(RUNNING, DONE, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                return; // written off: a replacement thread took this one's place
            }
            queue.running.retain(|(t, _)| !Arc::ptr_eq(&t.0, &ticket.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::mpsc,
        time::{Duration, Instant},
    };

    use super::*;

    #[test]
    fn a_stuck_job_costs_one_thread_and_the_rest_still_run() {
        let pool = Pool::new("test", 1);
        let (release, stuck) = mpsc::channel::<()>();
        let (done, finished) = mpsc::channel();
        let done_stuck = done.clone();
        let tickets = pool.submit([
            Box::new(move || {
                stuck.recv().unwrap();
                done_stuck.send("stuck").unwrap();
            }) as Task,
            Box::new(move || done.send("second").unwrap()),
        ]);
        std::thread::sleep(Duration::from_millis(50));
        // The only thread is stuck: the second job waits until the first is given up on.
        assert!(finished.try_recv().is_err());
        assert_eq!(pool.give_up(&tickets[0]), GaveUp::Running);
        assert_eq!(
            finished.recv_timeout(Duration::from_secs(5)).unwrap(),
            "second"
        );
        assert_eq!(pool.spawned(), 2);
        release.send(()).unwrap();
        assert_eq!(
            finished.recv_timeout(Duration::from_secs(5)).unwrap(),
            "stuck"
        );
        wait_done(&tickets[1]);
        assert_eq!(pool.give_up(&tickets[1]), GaveUp::Finished);
    }

    fn wait_done(ticket: &Ticket) {
        let started = Instant::now();
        while ticket.0.load(Ordering::Acquire) != DONE {
            assert!(started.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_cancelled_job_never_runs() {
        let pool = Pool::new("test", 1);
        let (release, stuck) = mpsc::channel::<()>();
        let (done, finished) = mpsc::channel();
        let tickets = pool.submit([
            Box::new(move || stuck.recv().unwrap()) as Task,
            Box::new(move || done.send(()).unwrap()),
        ]);
        assert_eq!(pool.give_up(&tickets[1]), GaveUp::NotStarted);
        release.send(()).unwrap();
        wait_done(&tickets[0]);
        assert_eq!(pool.give_up(&tickets[0]), GaveUp::Finished);
        assert!(finished.recv_timeout(Duration::from_millis(100)).is_err());
        assert_eq!(pool.spawned(), 1);
    }

    /// A job that blocks until `release` is dropped or sent to.
    fn hung(release: &std::sync::Arc<Mutex<mpsc::Receiver<()>>>) -> Task {
        let release = std::sync::Arc::clone(release);
        Box::new(move || {
            let _ = release.lock().unwrap().recv();
        })
    }

    fn wait_until(what: &str, condition: impl Fn() -> bool) {
        let started = Instant::now();
        while !condition() {
            assert!(started.elapsed() < Duration::from_secs(5), "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn many_hung_jobs_cost_a_thread_each_only_once_started() {
        let pool = Pool::new("test", 2);
        let (release, released) = mpsc::channel::<()>();
        let released = std::sync::Arc::new(Mutex::new(released));
        let tickets = pool.submit((0..6).map(|_| hung(&released)));
        wait_until("two jobs running", || {
            pool.shared.queue.lock().unwrap().running.len() == 2
        });
        // Two run (each written off and replaced), four never start.
        let gave_up: Vec<_> = tickets.iter().map(|t| pool.give_up(t)).collect();
        assert_eq!(gave_up.iter().filter(|g| **g == GaveUp::Running).count(), 2);
        assert_eq!(
            gave_up.iter().filter(|g| **g == GaveUp::NotStarted).count(),
            4
        );
        assert_eq!(pool.spawned(), 4);
        // The replacements take new work at once.
        let (done, finished) = mpsc::channel();
        pool.submit([Box::new(move || done.send(()).unwrap()) as Task]);
        finished.recv_timeout(Duration::from_secs(5)).unwrap();
        // Once the hung calls return, their threads exit: two are left.
        drop(release);
        wait_until("written-off threads exit", || pool.live() == 2);
        assert_eq!(pool.spawned(), 4);
    }

    #[test]
    fn dropping_the_pool_does_not_wait_for_a_hung_job() {
        let pool = Pool::new("test", 2);
        let (release, released) = mpsc::channel::<()>();
        let released = std::sync::Arc::new(Mutex::new(released));
        pool.submit([hung(&released)]);
        wait_until("the job running", || {
            pool.shared.queue.lock().unwrap().running.len() == 1
        });
        let shared = std::sync::Arc::clone(&pool.shared);
        let started = Instant::now();
        drop(pool);
        assert!(started.elapsed() < Duration::from_millis(100));
        // The idle thread exits at once; the hung one when its job returns.
        wait_until("the idle thread exits", || {
            shared.live.load(Ordering::Acquire) == 1
        });
        drop(release);
        wait_until("the hung thread exits", || {
            shared.live.load(Ordering::Acquire) == 0
        });
    }
}
