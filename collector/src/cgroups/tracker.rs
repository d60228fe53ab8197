//! Which cgroups are exported: a bounded set, admitted oldest first, whose members stay until
//! their cgroup is removed and a grace period has passed (so the last increase of their counters
//! is scraped), with a count of the cgroups left out.
use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    time::{Duration, Instant},
};

use super::{fs::Lookup, identity::Identity, kubernetes::PodMetadata};

/// The cgroup hierarchy, as the tracker needs it (a trait so the rules can be tested alone).
pub trait Hierarchy {
    fn lookup(&self, ids: &[u64]) -> anyhow::Result<HashMap<u64, Lookup>>;
    fn still_exists(&self, path: &str, id: u64) -> bool;
}

impl Hierarchy for super::fs::CgroupFs {
    fn lookup(&self, ids: &[u64]) -> anyhow::Result<HashMap<u64, Lookup>> {
        super::fs::CgroupFs::lookup(self, ids)
    }

    fn still_exists(&self, path: &str, id: u64) -> bool {
        super::fs::CgroupFs::still_exists(self, path, id)
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most cgroups exported at once.
    pub max_cgroups: usize,
    /// How long a removed cgroup's series stay.
    pub grace_period: Duration,
}

#[derive(Debug)]
pub struct Tracked {
    /// Relative to the cgroup v2 root; `/` is the root.
    pub path: String,
    pub identity: Identity,
    /// Names from the Kubernetes API, once found; kept through the grace period, when the pod
    /// may be gone from the API already.
    pub metadata: Option<PodMetadata>,
    pub exported: bool,
    /// When it was found removed.
    removed_at: Option<Instant>,
}

/// Why cgroups were not, or are no longer, exported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Refused a place because `max_cgroups` were exported.
    pub over_limit: u64,
    /// Removed: their series dropped after the grace period, or gone before they were seen.
    pub removed: u64,
}

/// The result of [`Tracker::update`].
pub struct Update {
    /// Ids for the kernel map to delete.
    pub forget: Vec<u64>,
    /// Why new ids could not be resolved this time (they are retried at the next scrape).
    pub error: Option<anyhow::Error>,
}

pub struct Tracker {
    limits: Limits,
    /// By id: ids grow with creation, so this is also oldest first.
    cgroups: BTreeMap<u64, Tracked>,
    dropped: Dropped,
    forgotten: Forgotten,
}

/// The most recently forgotten ids, a bounded number of them.
#[derive(Default)]
struct Forgotten {
    ids: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Forgotten {
    /// Enough for the churn between two scrapes; older ids charged again are looked up again.
    const CAPACITY: usize = 4096;

    fn remember(&mut self, id: u64) {
        if self.ids.insert(id) {
            self.order.push_back(id);
            if self.order.len() > Self::CAPACITY
                && let Some(oldest) = self.order.pop_front()
            {
                self.ids.remove(&oldest);
            }
        }
    }

    fn contains(&self, id: u64) -> bool {
        self.ids.contains(&id)
    }
}

impl Tracker {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            cgroups: BTreeMap::new(),
            dropped: Dropped::default(),
            forgotten: Forgotten::default(),
        }
    }

    /// Brings the set up to date with `present`, the ids in the kernel map now. The kernel map
    /// should then forget `Update::forget` (removed cgroups: ids are never re-used), even when
    /// `Update::error` says new ids could not be resolved this time.
    pub fn update(&mut self, present: &[u64], now: Instant, hierarchy: &impl Hierarchy) -> Update {
        let mut forget = Vec::new();
        // Evicted from the kernel's LRU (or forgotten on an earlier scrape).
        let present_set: HashSet<u64> = present.iter().copied().collect();
        self.cgroups.retain(|id, _| present_set.contains(id));

        for (&id, cgroup) in &mut self.cgroups {
            if cgroup.removed_at.is_none() && !hierarchy.still_exists(&cgroup.path, id) {
                cgroup.removed_at = Some(now);
            }
        }
        let grace = self.limits.grace_period;
        let expired: Vec<u64> = self
            .cgroups
            .iter()
            .filter(|(_, c)| {
                c.removed_at
                    .is_some_and(|at| now.duration_since(at) >= grace)
            })
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            self.cgroups.remove(&id);
            self.dropped.removed += 1;
            self.forgotten.remember(id);
            forget.push(id);
        }

        // Charged again after being forgotten (a socket or an I/O outliving its cgroup): forget
        // it again, without counting or looking it up again.
        let mut new: Vec<u64> = Vec::new();
        for &id in &present_set {
            if self.cgroups.contains_key(&id) {
                continue;
            }
            if self.forgotten.contains(id) {
                if !forget.contains(&id) {
                    forget.push(id);
                }
            } else {
                new.push(id);
            }
        }
        if new.is_empty() {
            self.admit_waiting();
            return Update {
                forget,
                error: None,
            };
        }
        let mut found = match hierarchy.lookup(&new) {
            Ok(found) => found,
            Err(error) => {
                self.admit_waiting();
                return Update {
                    forget,
                    error: Some(error),
                };
            }
        };
        new.sort_unstable(); // oldest first
        for id in new {
            match found.remove(&id).unwrap_or(Lookup::Gone) {
                Lookup::Path(path) => {
                    let exported = self.exported_count() < self.limits.max_cgroups;
                    if !exported {
                        self.dropped.over_limit += 1;
                    }
                    let identity = Identity::from_path(&path);
                    self.cgroups.insert(
                        id,
                        Tracked {
                            path,
                            identity,
                            metadata: None,
                            exported,
                            removed_at: None,
                        },
                    );
                }
                Lookup::Gone => {
                    self.dropped.removed += 1;
                    self.forgotten.remember(id);
                    forget.push(id);
                }
            }
        }
        self.admit_waiting();
        Update {
            forget,
            error: None,
        }
    }

    /// Gives free places to cgroups refused earlier, oldest first.
    fn admit_waiting(&mut self) {
        let mut room = self
            .limits
            .max_cgroups
            .saturating_sub(self.exported_count());
        for cgroup in self.cgroups.values_mut() {
            if room == 0 {
                break;
            }
            if !cgroup.exported && cgroup.removed_at.is_none() {
                cgroup.exported = true;
                room -= 1;
            }
        }
    }

    fn exported_count(&self) -> usize {
        self.cgroups.values().filter(|c| c.exported).count()
    }

    /// The exported cgroups, by id.
    pub fn exported(&self) -> impl Iterator<Item = (u64, &Tracked)> {
        self.cgroups
            .iter()
            .filter(|(_, c)| c.exported)
            .map(|(&id, c)| (id, c))
    }

    /// The exported cgroups, by id, to fill in what is learnt of them later.
    pub fn exported_mut(&mut self) -> impl Iterator<Item = (u64, &mut Tracked)> {
        self.cgroups
            .iter_mut()
            .filter(|(_, c)| c.exported)
            .map(|(&id, c)| (id, c))
    }

    pub fn dropped(&self) -> Dropped {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, collections::HashSet};

    use super::*;

    /// A hierarchy of `id → path`; ids not in it are removed cgroups.
    #[derive(Default)]
    struct Fake {
        live: RefCell<HashMap<u64, String>>,
        lookups: RefCell<usize>,
    }

    impl Fake {
        fn create(&self, id: u64) {
            self.live.borrow_mut().insert(id, format!("/c{id}"));
        }
        fn remove(&self, id: u64) {
            self.live.borrow_mut().remove(&id);
        }
    }

    impl Hierarchy for Fake {
        fn lookup(&self, ids: &[u64]) -> anyhow::Result<HashMap<u64, Lookup>> {
            *self.lookups.borrow_mut() += ids.len();
            let live = self.live.borrow();
            Ok(ids
                .iter()
                .map(|id| match live.get(id) {
                    Some(path) => (*id, Lookup::Path(path.clone())),
                    None => (*id, Lookup::Gone),
                })
                .collect())
        }
        fn still_exists(&self, path: &str, id: u64) -> bool {
            self.live.borrow().get(&id).is_some_and(|p| p == path)
        }
    }

    fn exported(tracker: &Tracker) -> HashSet<u64> {
        tracker.exported().map(|(id, _)| id).collect()
    }

    const LIMITS: Limits = Limits {
        max_cgroups: 2,
        grace_period: Duration::from_secs(10),
    };

    #[test]
    fn bounded_oldest_first_and_refusals_counted_once() {
        let fake = Fake::default();
        (1..=4).for_each(|id| fake.create(id));
        let mut tracker = Tracker::new(LIMITS);
        let now = Instant::now();
        tracker.update(&[4, 3, 2, 1], now, &fake);
        assert_eq!(exported(&tracker), HashSet::from([1, 2]));
        tracker.update(&[1, 2, 3, 4], now, &fake);
        assert_eq!(tracker.dropped().over_limit, 2);
        // Known cgroups are not looked up again.
        assert_eq!(*fake.lookups.borrow(), 4);
    }

    #[test]
    fn removed_cgroups_stay_for_the_grace_period_then_make_room() {
        let fake = Fake::default();
        (1..=3).for_each(|id| fake.create(id));
        let mut tracker = Tracker::new(LIMITS);
        let start = Instant::now();
        tracker.update(&[1, 2, 3], start, &fake);
        fake.remove(1);
        let forget = tracker
            .update(&[1, 2, 3], start + Duration::from_secs(1), &fake)
            .forget;
        assert!(forget.is_empty());
        assert_eq!(
            exported(&tracker),
            HashSet::from([1, 2]),
            "still in its grace period"
        );
        let forget = tracker
            .update(&[1, 2, 3], start + Duration::from_secs(11), &fake)
            .forget;
        assert_eq!(forget, vec![1], "the kernel entry is forgotten too");
        assert_eq!(
            exported(&tracker),
            HashSet::from([2, 3]),
            "its place goes to the waiting one"
        );
        assert_eq!(
            tracker.dropped(),
            Dropped {
                over_limit: 1,
                removed: 1
            }
        );
    }

    #[test]
    fn gone_before_seen_and_evicted() {
        let fake = Fake::default();
        fake.create(2);
        let mut tracker = Tracker::new(LIMITS);
        let now = Instant::now();
        // 1 was created and removed between two scrapes.
        assert_eq!(tracker.update(&[1, 2], now, &fake).forget, vec![1]);
        assert_eq!(tracker.dropped().removed, 1);
        // Evicted from the kernel map: no longer exported, not counted as dropped by us.
        tracker.update(&[], now, &fake);
        assert!(exported(&tracker).is_empty());
        assert_eq!(tracker.dropped().removed, 1);
        // Charged again after it was forgotten: forgotten again, not counted nor looked up.
        let lookups = *fake.lookups.borrow();
        assert_eq!(tracker.update(&[1], now, &fake).forget, vec![1]);
        assert_eq!(tracker.dropped().removed, 1);
        assert_eq!(*fake.lookups.borrow(), lookups);
        // Evicted and charged again while alive: tracked again, without a refusal counted.
        tracker.update(&[2], now, &fake);
        assert_eq!(exported(&tracker), HashSet::from([2]));
        assert_eq!(
            tracker.dropped(),
            Dropped {
                over_limit: 0,
                removed: 1
            }
        );
    }

    #[test]
    fn repeated_ids_from_a_restarted_map_walk_count_once() {
        let fake = Fake::default();
        (1..=2).for_each(|id| fake.create(id));
        let mut tracker = Tracker::new(LIMITS);
        let update = tracker.update(&[1, 1, 2, 1], Instant::now(), &fake);
        assert!(update.forget.is_empty(), "a live cgroup is never forgotten");
        assert_eq!(exported(&tracker), HashSet::from([1, 2]));
        assert_eq!(tracker.dropped(), Dropped::default());
    }

    #[test]
    fn a_failed_lookup_still_forgets_the_expired() {
        struct Failing(Fake);
        impl Hierarchy for Failing {
            fn lookup(&self, _: &[u64]) -> anyhow::Result<HashMap<u64, Lookup>> {
                anyhow::bail!("walk failed")
            }
            fn still_exists(&self, path: &str, id: u64) -> bool {
                self.0.still_exists(path, id)
            }
        }
        let fake = Fake::default();
        fake.create(1);
        let mut tracker = Tracker::new(LIMITS);
        let start = Instant::now();
        tracker.update(&[1], start, &fake);
        fake.remove(1);
        tracker.update(&[1], start, &fake);
        let failing = Failing(fake);
        let update = tracker.update(&[1, 7], start + Duration::from_secs(11), &failing);
        assert_eq!(update.forget, vec![1]);
        assert!(update.error.is_some());
    }

    #[test]
    fn a_storm_never_exceeds_the_bound() {
        let fake = Fake::default();
        let mut tracker = Tracker::new(LIMITS);
        let start = Instant::now();
        let mut present = Vec::new();
        for step in 0..100u64 {
            let id = 10 + step;
            fake.create(id);
            present.push(id);
            if step >= 1 {
                fake.remove(id - 1);
            }
            let forget = tracker
                .update(&present, start + Duration::from_secs(step), &fake)
                .forget;
            present.retain(|id| !forget.contains(id));
            assert!(tracker.exported().count() <= LIMITS.max_cgroups);
        }
        let dropped = tracker.dropped();
        assert!(dropped.over_limit > 0 && dropped.removed > 0, "{dropped:?}");
        assert!(
            present.len() < 20,
            "removed cgroups are forgotten: {}",
            present.len()
        );
    }
}
