//! Which cgroups are exported: a bounded set, admitted oldest first, whose members stay until
//! their cgroup is removed and a grace period has passed (so the last increase of their counters
//! is scraped), with a count of the cgroups left out.
use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use super::{fs::Lookup, identity::Identity};

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

pub struct Tracker {
    limits: Limits,
    /// By id: ids grow with creation, so this is also oldest first.
    cgroups: BTreeMap<u64, Tracked>,
    dropped: Dropped,
}

impl Tracker {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            cgroups: BTreeMap::new(),
            dropped: Dropped::default(),
        }
    }

    /// Brings the set up to date with `present`, the ids in the kernel map now (each once).
    /// Returns the ids the kernel map should forget (removed cgroups, never re-used: ids only
    /// grow).
    pub fn update(
        &mut self,
        present: &[u64],
        now: Instant,
        hierarchy: &impl Hierarchy,
    ) -> anyhow::Result<Vec<u64>> {
        let mut forget = Vec::new();
        // Evicted from the kernel's LRU (or forgotten below on an earlier scrape).
        let present_set: std::collections::HashSet<u64> = present.iter().copied().collect();
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
            forget.push(id);
        }

        let mut new: Vec<u64> = present
            .iter()
            .copied()
            .filter(|id| !self.cgroups.contains_key(id) && !forget.contains(id))
            .collect();
        if !new.is_empty() {
            let mut found = hierarchy.lookup(&new)?;
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
                                exported,
                                removed_at: None,
                            },
                        );
                    }
                    Lookup::Gone => {
                        self.dropped.removed += 1;
                        forget.push(id);
                    }
                }
            }
        }
        self.admit_waiting();
        Ok(forget)
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
        tracker.update(&[4, 3, 2, 1], now, &fake).unwrap();
        assert_eq!(exported(&tracker), HashSet::from([1, 2]));
        tracker.update(&[1, 2, 3, 4], now, &fake).unwrap();
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
        tracker.update(&[1, 2, 3], start, &fake).unwrap();
        fake.remove(1);
        let forget = tracker
            .update(&[1, 2, 3], start + Duration::from_secs(1), &fake)
            .unwrap();
        assert!(forget.is_empty());
        assert_eq!(
            exported(&tracker),
            HashSet::from([1, 2]),
            "still in its grace period"
        );
        let forget = tracker
            .update(&[1, 2, 3], start + Duration::from_secs(11), &fake)
            .unwrap();
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
        assert_eq!(tracker.update(&[1, 2], now, &fake).unwrap(), vec![1]);
        assert_eq!(tracker.dropped().removed, 1);
        // Evicted from the kernel map: no longer exported, not counted as dropped by us.
        tracker.update(&[], now, &fake).unwrap();
        assert!(exported(&tracker).is_empty());
        assert_eq!(tracker.dropped().removed, 1);
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
                .unwrap();
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
