//! Turns a kernel log2 histogram into Prometheus cumulative buckets, over the range of slots its
//! family exports: every `le` bucket is a series on every label set, so a family exports only
//! the slots its hook can measure (docs/series-cost.md), unless `--ebpf.histogram-buckets=full`.
use collector_common::{
    Log2Histogram,
    histogram::{LOG2_SLOTS, slot_upper_bound},
};

use crate::metrics::HistogramValue;

/// The log2 slots a histogram family exports as `le` buckets, `lowest..=highest`; slot `i`'s
/// bucket is `le = 2^(i+1) - 1` raw units. Being cumulative, the lowest bucket also counts every
/// slot below it; slots above `highest` are counted only by `+Inf`. Nothing is dropped: `_count`
/// and `_sum` count every observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketRange {
    lowest: usize,
    highest: usize,
}

impl BucketRange {
    /// Every slot with a bound: all the kernel keeps, 1 to 2^39 - 1 raw units.
    pub const FULL: Self = Self::slots(0, LOG2_SLOTS - 2);

    /// Slots `lowest..=highest`. Families declare theirs as constants, so a range that is empty
    /// or reaches the unbounded last slot fails the build.
    pub const fn slots(lowest: usize, highest: usize) -> Self {
        assert!(
            lowest <= highest && highest + 1 < LOG2_SLOTS,
            "a bucket range is not empty and ends before the overflow slot"
        );
        Self { lowest, highest }
    }

    /// `le` buckets exported, `+Inf` not included.
    pub const fn buckets(self) -> usize {
        self.highest - self.lowest + 1
    }

    fn contains(self, slot: usize) -> bool {
        (self.lowest..=self.highest).contains(&slot)
    }
}

/// Which `le` buckets the eBPF histograms export (`--ebpf.histogram-buckets`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum HistogramBuckets {
    /// Only the buckets each family's hook can measure (docs/series-cost.md).
    #[default]
    Measurable,
    /// Every log2 bucket the kernel keeps: `le` 1 to 2^39 - 1 ns (or bytes).
    Full,
}

impl HistogramBuckets {
    /// The range to export of a family whose measurable range is `measurable`.
    pub fn range(self, measurable: BucketRange) -> BucketRange {
        match self {
            Self::Measurable => measurable,
            Self::Full => BucketRange::FULL,
        }
    }
}

/// Converts slot counts to cumulative `le` buckets over `range`. `unit` scales raw values to the
/// exported base unit (1e-9 for nanoseconds → seconds). Each bucket's bound is its slot's
/// inclusive upper bound, `2^(i+1) - 1`, so every value counted is `<= le` exactly.
pub fn to_prometheus(histogram: &Log2Histogram, unit: f64, range: BucketRange) -> HistogramValue {
    let mut cumulative = 0u64;
    let mut buckets = Vec::with_capacity(range.buckets());
    for (slot, count) in histogram.slots.iter().enumerate() {
        cumulative = cumulative.wrapping_add(*count);
        if let Some(bound) = slot_upper_bound(slot).filter(|_| range.contains(slot)) {
            buckets.push((scale(bound, unit), cumulative));
        }
    }
    HistogramValue {
        buckets,
        sum: scale(histogram.sum, unit),
        count: cumulative,
    }
}

/// Scales by dividing (`1e-9` → `/ 1e9`) where that is exact, so `1023` ns prints as
/// `1.023e-06`, not `1.0230000000000001e-06`.
fn scale(value: u64, unit: f64) -> f64 {
    if unit < 1.0 {
        value as f64 / (1.0 / unit).round()
    } else {
        value as f64 * unit
    }
}

/// Sums the per-CPU copies of a histogram.
pub fn sum_cpus<'a>(copies: impl IntoIterator<Item = &'a Log2Histogram>) -> Log2Histogram {
    let mut total = Log2Histogram::EMPTY;
    for copy in copies {
        total.merge(copy);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_buckets_in_seconds() {
        let mut h = Log2Histogram::EMPTY;
        for ns in [0, 1, 2, 3, 1000, 1023, 1024, 5_000_000] {
            h.record(ns);
        }
        h.record(u64::MAX / 2); // overflow slot
        let p = to_prometheus(&h, 1e-9, BucketRange::FULL);
        assert_eq!(p.count, 9);
        assert_eq!(p.buckets.len(), LOG2_SLOTS - 1);
        assert_eq!(p.buckets[0], (1e-9, 2)); // 0 and 1
        assert_eq!(p.buckets[1], (3e-9, 4)); // + 2, 3
        assert_eq!(p.buckets[9], (1.023e-6, 6)); // + 1000, 1023
        assert_eq!(p.buckets[10], (2.047e-6, 7)); // + 1024
        assert_eq!(p.buckets[22].1, 8); // 5 ms <= 8.388607 ms
        assert_eq!(p.buckets.last().unwrap().1, 8, "overflow only in +Inf");
        assert!(
            p.buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
        );
        let mut text = String::new();
        crate::exposition::push_float(&mut text, p.buckets[9].0);
        assert_eq!(text, "1.023e-06");
    }

    #[test]
    fn a_range_folds_what_is_below_into_its_lowest_bucket_and_what_is_above_into_inf() {
        let mut h = Log2Histogram::EMPTY;
        // Below the range (slots 0, 2, 8), in it (slots 9, 12, 34), above it (35, overflow).
        for ns in [
            0,
            5,
            500,
            1000,
            5000,
            30_000_000_000,
            40_000_000_000,
            u64::MAX / 2,
        ] {
            h.record(ns);
        }
        let range = BucketRange::slots(9, 34);
        let p = to_prometheus(&h, 1e-9, range);
        assert_eq!(p.buckets.len(), 26);
        assert_eq!(
            p.buckets[0],
            (1.023e-6, 4),
            "0, 5, 500 and 1000 ns are <= 1.023 us"
        );
        assert_eq!(p.buckets[3], (8.191e-6, 5)); // + 5000
        assert_eq!(p.buckets[25], (34.359738367, 6), "30 s, not 40 s");
        assert_eq!(p.count, 8, "40 s and the overflow slot only in +Inf");
        assert_eq!(p.sum, scale(h.sum, 1e-9));
    }

    #[test]
    fn the_full_range_is_every_bounded_slot() {
        assert_eq!(BucketRange::FULL.buckets(), LOG2_SLOTS - 1);
        let narrow = BucketRange::slots(9, 34);
        assert_eq!(HistogramBuckets::Measurable.range(narrow), narrow);
        assert_eq!(HistogramBuckets::Full.range(narrow), BucketRange::FULL);
        assert_eq!(HistogramBuckets::default(), HistogramBuckets::Measurable);
    }

    proptest::proptest! {
        /// Whatever the counts and the range: the range's buckets are exactly the full
        /// conversion's buckets at the same bounds, so they stay cumulative and monotone, and
        /// `_count` (the `+Inf` bucket) and `_sum` lose nothing.
        #[test]
        fn narrowing_keeps_every_count(
            counts in proptest::collection::vec(0u64..1_000_000, LOG2_SLOTS),
            sum in proptest::prelude::any::<u64>(),
            lowest in 0usize..LOG2_SLOTS - 1,
            width in 0usize..LOG2_SLOTS - 1,
        ) {
            let mut h = Log2Histogram::EMPTY;
            h.slots.copy_from_slice(&counts);
            h.sum = sum;
            let range = BucketRange::slots(lowest, (lowest + width).min(LOG2_SLOTS - 2));
            let full = to_prometheus(&h, 1.0, BucketRange::FULL);
            let narrow = to_prometheus(&h, 1.0, range);
            proptest::prop_assert_eq!(narrow.buckets.len(), range.buckets());
            proptest::prop_assert_eq!(&narrow.buckets[..], &full.buckets[range.lowest..=range.highest]);
            proptest::prop_assert!(narrow.buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
            proptest::prop_assert!(narrow.buckets.iter().all(|(_, n)| *n <= narrow.count));
            proptest::prop_assert_eq!(narrow.count, counts.iter().sum::<u64>());
            proptest::prop_assert_eq!(narrow.count, full.count);
            proptest::prop_assert_eq!(narrow.sum, full.sum);
        }
    }

    #[test]
    fn sums_cpu_copies() {
        let mut a = Log2Histogram::EMPTY;
        a.record(10);
        let mut b = Log2Histogram::EMPTY;
        b.record(20);
        b.record(30);
        let total = sum_cpus([&a, &b]);
        assert_eq!(total.count(), 3);
        assert_eq!(total.sum, 60);
    }
}
