//! Which cgroups are exported: a bounded set, admitted oldest first, whose members stay until
//! their cgroup is removed and a grace period has passed (so the last increase of their counters
//! is scraped), with a count of the cgroups left out. The bound prefers live cgroups: a removed
//! one, once a scrape has served it, gives its place to a live one waiting, and a path created
//! again (a restarted service) drops the removed cgroup that had it, so a label set is never
//! served twice.
use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::{fs::Lookup, identity::Identity, kubernetes::PodMetadata};

/// The cgroup hierarchy, as the tracker needs it (a trait so the rules can be tested alone).
pub trait Hierarchy {
    fn lookup(&self, ids: &[u64]) -> anyhow::Result<HashMap<u64, Lookup>>;
    fn still_exists(&self, path: &Path, id: u64) -> bool;
}

impl Hierarchy for super::fs::CgroupFs {
    fn lookup(&self, ids: &[u64]) -> anyhow::Result<HashMap<u64, Lookup>> {
        super::fs::CgroupFs::lookup(self, ids)
    }

    fn still_exists(&self, path: &Path, id: u64) -> bool {
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
    /// Relative to the cgroup v2 root (`/` is the root), as a label value.
    pub path: String,
    /// The same, byte for byte.
    fs_path: PathBuf,
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
    /// Removed: their series dropped after the grace period (or sooner, for a live cgroup
    /// waiting, or for the same path created again), or gone before they were seen.
    pub removed: u64,
    /// Live, but their path could not be had (longer than PATH_MAX).
    pub unresolvable: u64,
}

/// The result of [`Tracker::update`].
pub struct Update {
    /// Ids for the kernel map to delete.
    pub forget: Vec<u64>,
    /// Why new ids could not be resolved this time (they are retried at the next scrape).
    pub error: Option<anyhow::Error>,
    /// Ids skipped because their path cannot be had, and why: each reported once (they are
    /// forgotten, not looked up again while remembered).
    pub unresolvable: Vec<(u64, String)>,
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
            if cgroup.removed_at.is_none() && !hierarchy.still_exists(&cgroup.fs_path, id) {
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
            self.admit_waiting(now, &mut forget);
            return Update {
                forget,
                error: None,
                unresolvable: Vec::new(),
            };
        }
        let mut found = match hierarchy.lookup(&new) {
            Ok(found) => found,
            Err(error) => {
                self.admit_waiting(now, &mut forget);
                return Update {
                    forget,
                    error: Some(error),
                    unresolvable: Vec::new(),
                };
            }
        };
        let mut unresolvable = Vec::new();
        new.sort_unstable(); // oldest first
        for id in new {
            match found.remove(&id).unwrap_or(Lookup::Gone) {
                Lookup::Path(fs_path) => {
                    // A removed cgroup of the same path (a restarted service): the new one
                    // takes over its label set at once.
                    let same_path: Vec<u64> = self
                        .cgroups
                        .iter()
                        .filter(|(_, c)| c.removed_at.is_some() && c.fs_path == fs_path)
                        .map(|(&id, _)| id)
                        .collect();
                    for old in same_path {
                        self.drop_removed(old, &mut forget);
                    }
                    let exported = self.room_for_one(now, &mut forget);
                    if !exported {
                        self.dropped.over_limit += 1;
                    }
                    let path = super::fs::label(&fs_path);
                    let identity = Identity::from_path(&path);
                    self.cgroups.insert(
                        id,
                        Tracked {
                            path,
                            fs_path,
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
                Lookup::Unresolvable(reason) => {
                    self.dropped.unresolvable += 1;
                    self.forgotten.remember(id);
                    forget.push(id);
                    unresolvable.push((id, reason));
                }
            }
        }
        self.admit_waiting(now, &mut forget);
        Update {
            forget,
            error: None,
            unresolvable,
        }
    }

    /// Whether one more cgroup may be exported, making room if need be: a removed cgroup a
    /// scrape has already served (found removed before `now`) leaves, the one removed first.
    fn room_for_one(&mut self, now: Instant, forget: &mut Vec<u64>) -> bool {
        if self.exported_count() < self.limits.max_cgroups {
            return true;
        }
        let served_removed = self
            .cgroups
            .iter()
            .filter(|(_, c)| c.exported && c.removed_at.is_some_and(|at| at < now))
            .min_by_key(|(_, c)| c.removed_at)
            .map(|(&id, _)| id);
        match served_removed {
            Some(id) => {
                self.drop_removed(id, forget);
                true
            }
            None => false,
        }
    }

    /// Stops tracking the removed cgroup `id` before its grace period ends.
    fn drop_removed(&mut self, id: u64, forget: &mut Vec<u64>) {
        self.cgroups.remove(&id);
        self.dropped.removed += 1;
        self.forgotten.remember(id);
        forget.push(id);
    }

    /// Gives places to live cgroups refused earlier, oldest first.
    fn admit_waiting(&mut self, now: Instant, forget: &mut Vec<u64>) {
        let waiting: Vec<u64> = self
            .cgroups
            .iter()
            .filter(|(_, c)| !c.exported && c.removed_at.is_none())
            .map(|(&id, _)| id)
            .collect();
        for id in waiting {
            if !self.room_for_one(now, forget) {
                break;
            }
            if let Some(cgroup) = self.cgroups.get_mut(&id) {
                cgroup.exported = true;
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
        live: RefCell<HashMap<u64, PathBuf>>,
        /// Live, with a path too long to be read.
        too_long: RefCell<HashSet<u64>>,
        lookups: RefCell<usize>,
    }

    impl Fake {
        fn create(&self, id: u64) {
            self.create_at(id, &format!("/c{id}"));
        }
        fn create_at(&self, id: u64, path: &str) {
            self.live.borrow_mut().insert(id, PathBuf::from(path));
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
                    _ if self.too_long.borrow().contains(id) => {
                        (*id, Lookup::Unresolvable("File name too long".to_owned()))
                    }
                    Some(path) => (*id, Lookup::Path(path.clone())),
                    None => (*id, Lookup::Gone),
                })
                .collect())
        }
        fn still_exists(&self, path: &Path, id: u64) -> bool {
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
                removed: 1,
                unresolvable: 0,
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
                removed: 1,
                unresolvable: 0,
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
            fn still_exists(&self, path: &Path, id: u64) -> bool {
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
        // One cgroup lives at a time: removed ones make way for it, so none is refused.
        assert_eq!(dropped.over_limit, 0, "{dropped:?}");
        assert!(dropped.removed > 90, "{dropped:?}");
        assert!(
            present.len() < 20,
            "removed cgroups are forgotten: {}",
            present.len()
        );
    }

    #[test]
    fn a_cgroup_whose_path_cannot_be_had_is_skipped_alone() {
        let fake = Fake::default();
        (1..=2).for_each(|id| fake.create(id));
        fake.create(3);
        fake.too_long.borrow_mut().insert(3);
        let mut tracker = Tracker::new(LIMITS);
        let now = Instant::now();
        let update = tracker.update(&[1, 2, 3], now, &fake);
        assert!(update.error.is_none());
        assert_eq!(update.forget, vec![3]);
        assert_eq!(update.unresolvable.len(), 1);
        assert_eq!(exported(&tracker), HashSet::from([1, 2]));
        assert_eq!(tracker.dropped().unresolvable, 1);
        // Charged again: forgotten again, not looked up nor reported again.
        let update = tracker.update(&[1, 2, 3], now, &fake);
        assert_eq!(update.forget, vec![3]);
        assert!(update.unresolvable.is_empty());
        assert_eq!(tracker.dropped().unresolvable, 1);
    }

    #[test]
    fn a_path_created_again_replaces_the_removed_cgroup_at_once() {
        let fake = Fake::default();
        fake.create_at(1, "/system.slice/app.service");
        let mut tracker = Tracker::new(LIMITS);
        let start = Instant::now();
        tracker.update(&[1], start, &fake);
        // The service restarts: its cgroup is removed and created again, with a new id.
        fake.remove(1);
        fake.create_at(2, "/system.slice/app.service");
        let update = tracker.update(&[1, 2], start + Duration::from_secs(1), &fake);
        assert_eq!(update.forget, vec![1]);
        assert_eq!(exported(&tracker), HashSet::from([2]));
        let paths: Vec<_> = tracker.exported().map(|(_, c)| c.path.clone()).collect();
        assert_eq!(paths, ["/system.slice/app.service"]);
    }

    #[test]
    fn removed_cgroups_make_way_for_live_ones_once_served() {
        let fake = Fake::default();
        (1..=2).for_each(|id| fake.create(id));
        let mut tracker = Tracker::new(LIMITS);
        let start = Instant::now();
        tracker.update(&[1, 2], start, &fake);
        // Both pods go, two new ones come: the removed ones are served once more...
        (1..=2).for_each(|id| fake.remove(id));
        (3..=4).for_each(|id| fake.create(id));
        let second = start + Duration::from_secs(1);
        let update = tracker.update(&[1, 2, 3, 4], second, &fake);
        assert!(update.forget.is_empty());
        assert_eq!(exported(&tracker), HashSet::from([1, 2]));
        // ...then leave, well inside their grace period, for the live ones.
        let update = tracker.update(&[1, 2, 3, 4], second + Duration::from_secs(1), &fake);
        assert_eq!(update.forget, vec![1, 2]);
        assert_eq!(exported(&tracker), HashSet::from([3, 4]));
        assert_eq!(tracker.dropped().removed, 2);
    }

    #[test]
    fn non_utf8_paths_stay_live_and_get_distinct_labels() {
        use std::os::unix::ffi::OsStrExt as _;
        let fake = Fake::default();
        let odd = |byte: u8| {
            let mut bytes = b"/kubepods/app-".to_vec();
            bytes.push(byte);
            PathBuf::from(std::ffi::OsStr::from_bytes(&bytes))
        };
        fake.live.borrow_mut().insert(1, odd(0xff));
        fake.live.borrow_mut().insert(2, odd(0xfe));
        let mut tracker = Tracker::new(LIMITS);
        let start = Instant::now();
        tracker.update(&[1, 2], start, &fake);
        let update = tracker.update(&[1, 2], start + Duration::from_secs(60), &fake);
        assert!(update.forget.is_empty(), "still live");
        let mut paths: Vec<_> = tracker.exported().map(|(_, c)| c.path.clone()).collect();
        paths.sort();
        assert_eq!(paths, ["/kubepods/app-\\xfe", "/kubepods/app-\\xff"]);
        assert_eq!(tracker.dropped(), Dropped::default());
    }
}
