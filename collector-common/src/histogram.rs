//! Log2 histogram layout, in the style of cloudflare/ebpf_exporter: the kernel only computes a
//! slot index and increments it; cumulative `le` buckets are built in userspace at scrape time.

/// Number of slots. Slot `i` counts values `v` with `floor(log2(v)) == i` (slot 0 also takes 0),
/// so its inclusive upper bound is `2^(i+1) - 1`. The last slot also takes every larger value and
/// is exported only through the `+Inf` bucket.
pub const LOG2_SLOTS: usize = 40;

/// A log2 histogram of nanosecond (or byte) values, one per CPU in a per-CPU array.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Log2Histogram {
    pub slots: [u64; LOG2_SLOTS],
    /// Sum of all recorded values, for the Prometheus `_sum` series.
    pub sum: u64,
}

impl Log2Histogram {
    pub const EMPTY: Self = Self {
        slots: [0; LOG2_SLOTS],
        sum: 0,
    };

    /// Adds one observation. Kept branch-light and loop-free for the BPF verifier.
    #[inline(always)]
    pub fn record(&mut self, value: u64) {
        let slot = log2_slot(value);
        // `log2_slot` never returns an index past the end; `get_mut` keeps that provable for the
        // verifier without a panic path.
        if let Some(count) = self.slots.get_mut(slot) {
            *count += 1;
        }
        self.sum = self.sum.wrapping_add(value);
    }

    /// Adds another histogram into this one (used to sum the per-CPU copies).
    pub fn merge(&mut self, other: &Self) {
        for (mine, theirs) in self.slots.iter_mut().zip(other.slots.iter()) {
            *mine = mine.wrapping_add(*theirs);
        }
        self.sum = self.sum.wrapping_add(other.sum);
    }

    pub fn count(&self) -> u64 {
        self.slots.iter().fold(0u64, |acc, n| acc.wrapping_add(*n))
    }
}

/// Slot index of `value`: `floor(log2(value))` clamped to the last slot, 0 for 0 and 1.
///
/// Written as a fixed sequence of compares and shifts (no loop, no count-leading-zeros
/// instruction, which BPF lacks) so the kernel side stays cheap and verifiable.
#[inline(always)]
pub fn log2_slot(value: u64) -> usize {
    let mut v = value;
    let mut log = 0u64;
    let mut shift;
    shift = ((v > 0xFFFF_FFFF) as u64) << 5;
    v >>= shift;
    log |= shift;
    shift = ((v > 0xFFFF) as u64) << 4;
    v >>= shift;
    log |= shift;
    shift = ((v > 0xFF) as u64) << 3;
    v >>= shift;
    log |= shift;
    shift = ((v > 0xF) as u64) << 2;
    v >>= shift;
    log |= shift;
    shift = ((v > 0x3) as u64) << 1;
    v >>= shift;
    log |= shift;
    log |= v >> 1;
    let log = log as usize;
    if log >= LOG2_SLOTS {
        LOG2_SLOTS - 1
    } else {
        log
    }
}

/// Inclusive upper bound of slot `slot` (`2^(slot+1) - 1`), or `None` for the overflow slot.
pub fn slot_upper_bound(slot: usize) -> Option<u64> {
    (slot + 1 < LOG2_SLOTS).then(|| (1u64 << (slot + 1)) - 1)
}

#[cfg(feature = "user")]
// SAFETY: plain `repr(C)` data of integers, no padding, any bit pattern is valid.
unsafe impl aya::Pod for Log2Histogram {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_matches_floor_log2() {
        assert_eq!(log2_slot(0), 0);
        assert_eq!(log2_slot(1), 0);
        assert_eq!(log2_slot(2), 1);
        assert_eq!(log2_slot(3), 1);
        assert_eq!(log2_slot(4), 2);
        assert_eq!(log2_slot(1023), 9);
        assert_eq!(log2_slot(1024), 10);
        for shift in 1..LOG2_SLOTS as u32 - 1 {
            let v = 1u64 << shift;
            assert_eq!(log2_slot(v), shift as usize, "2^{shift}");
            assert_eq!(log2_slot(v - 1), shift as usize - 1, "2^{shift}-1");
            assert_eq!(log2_slot(v + 1), shift as usize, "2^{shift}+1");
        }
    }

    #[test]
    fn large_values_land_in_overflow_slot() {
        assert_eq!(log2_slot(1 << (LOG2_SLOTS - 1)), LOG2_SLOTS - 1);
        assert_eq!(log2_slot(u64::MAX), LOG2_SLOTS - 1);
    }

    #[test]
    fn value_never_exceeds_its_slot_bound() {
        for v in [
            0u64,
            1,
            2,
            3,
            7,
            8,
            1000,
            65_535,
            65_536,
            1 << 38,
            (1 << 39) - 1,
        ] {
            let slot = log2_slot(v);
            if let Some(bound) = slot_upper_bound(slot) {
                assert!(v <= bound, "{v} above bound {bound} of slot {slot}");
            }
            if slot > 0 {
                assert!(
                    v > slot_upper_bound(slot - 1).unwrap(),
                    "{v} fits the slot below"
                );
            }
        }
    }

    #[test]
    fn record_and_merge() {
        let mut a = Log2Histogram::EMPTY;
        a.record(5);
        a.record(6);
        let mut b = Log2Histogram::EMPTY;
        b.record(1 << 20);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.slots[2], 2);
        assert_eq!(a.slots[20], 1);
        assert_eq!(a.sum, 11 + (1 << 20));
    }
}
