//! Turns a kernel log2 histogram into Prometheus cumulative buckets.
use collector_common::{
    Log2Histogram,
    histogram::{LOG2_SLOTS, slot_upper_bound},
};

use crate::metrics::HistogramValue;

/// Converts slot counts to cumulative `le` buckets. `unit` scales raw values to the exported
/// base unit (1e-9 for nanoseconds → seconds). Each bucket's bound is the slot's inclusive
/// upper bound, `2^(i+1) - 1`, so every value counted is `<= le` exactly. The overflow slot only
/// appears in `+Inf`.
pub fn to_prometheus(histogram: &Log2Histogram, unit: f64) -> HistogramValue {
    let mut cumulative = 0u64;
    let mut buckets = Vec::with_capacity(LOG2_SLOTS - 1);
    for (slot, count) in histogram.slots.iter().enumerate() {
        cumulative += count;
        if let Some(bound) = slot_upper_bound(slot) {
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
        let p = to_prometheus(&h, 1e-9);
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
