//! Hit timestamps from the kernel are time-stamp-counter ticks (`rdtsc` in
//! the #DB handler, which may not take the clock's locks: see
//! `kernel-patch/ABI.md`), while hwbpd keeps time on the monotonic clock
//! (`CLOCK_MONOTONIC`, nanoseconds). [`TscClock`] maps one onto the other
//! from pairs of readings `(tsc, monotonic ns)` taken together in hwbpd: the
//! slope from the first pair to the latest, anchored at the latest. The
//! daemon takes a pair at start, one a calibration interval later, and one
//! on every rotation tick, so the baseline only grows and the error of one
//! reading (a preemption between the two reads) shrinks relative to it.
//!
//! Assumes an invariant TSC shared by all CPUs (what the kernel's timestamp
//! assumes too); on hardware without one, cross-CPU timestamps are off by
//! the CPUs' TSC skew.

/// A `(tsc, ns)` pair read back to back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub tsc: u64,
    pub ns: u64,
}

/// TSC ticks to monotonic nanoseconds. Invariant: `first.tsc <= latest.tsc`
/// and `first.ns <= latest.ns` (samples that go backwards are ignored).
#[derive(Clone, Debug)]
pub struct TscClock {
    first: Sample,
    latest: Sample,
}

impl TscClock {
    pub fn new(first: Sample) -> Self {
        TscClock { first, latest: first }
    }

    /// Add a reading. Returns false (and ignores it) if it goes backwards.
    pub fn observe(&mut self, s: Sample) -> bool {
        if s.tsc < self.latest.tsc || s.ns < self.latest.ns {
            return false;
        }
        self.latest = s;
        debug_assert!(self.first.tsc <= self.latest.tsc && self.first.ns <= self.latest.ns);
        true
    }

    /// Whether two distinct readings exist (before that, [`TscClock::to_ns`]
    /// can only answer the anchor's time).
    pub fn calibrated(&self) -> bool {
        self.latest.tsc > self.first.tsc
    }

    /// TSC frequency in Hz, once calibrated.
    pub fn hz(&self) -> Option<u64> {
        let ticks = self.latest.tsc.checked_sub(self.first.tsc).filter(|&t| t > 0)?;
        let ns = self.latest.ns - self.first.ns;
        u64::try_from(u128::from(ticks) * 1_000_000_000 / u128::from(ns.max(1))).ok()
    }

    /// The monotonic time of TSC value `tsc` (which may lie before or after
    /// the anchor). Saturates at 0 and `u64::MAX`.
    pub fn to_ns(&self, tsc: u64) -> u64 {
        let ticks = i128::from(self.latest.tsc) - i128::from(self.first.tsc);
        if ticks <= 0 {
            return self.latest.ns;
        }
        let span_ns = i128::from(self.latest.ns) - i128::from(self.first.ns);
        let delta = i128::from(tsc) - i128::from(self.latest.tsc);
        let ns = i128::from(self.latest.ns) + delta * span_ns / ticks;
        u64::try_from(ns.clamp(0, i128::from(u64::MAX))).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3 GHz TSC that read 1_000_000 at monotonic time 5 s.
    fn three_ghz() -> TscClock {
        let mut c = TscClock::new(Sample { tsc: 1_000_000, ns: 5_000_000_000 });
        assert!(c.observe(Sample { tsc: 1_000_000 + 30_000_000, ns: 5_010_000_000 }));
        c
    }

    #[test]
    fn uncalibrated_clock_answers_the_anchor_time() {
        let c = TscClock::new(Sample { tsc: 10, ns: 20 });
        assert!(!c.calibrated());
        assert_eq!(c.hz(), None);
        assert_eq!(c.to_ns(99), 20);
    }

    #[test]
    fn ticks_after_the_anchor_map_forward() {
        let c = three_ghz();
        assert_eq!(c.hz(), Some(3_000_000_000));
        assert_eq!(c.to_ns(1_000_000 + 30_000_000 + 3_000), 5_010_001_000);
    }

    #[test]
    fn ticks_before_the_anchor_map_backward_and_saturate_at_zero() {
        let c = three_ghz();
        assert_eq!(c.to_ns(1_000_000), 5_000_000_000);
        assert_eq!(c.to_ns(0), 4_999_666_667);
        let early = TscClock { first: Sample { tsc: u64::MAX / 2, ns: 0 }, latest: Sample { tsc: u64::MAX / 2 + 1, ns: 1 } };
        assert_eq!(early.to_ns(0), 0);
    }

    #[test]
    fn a_reading_that_goes_backwards_is_ignored() {
        let mut c = three_ghz();
        assert!(!c.observe(Sample { tsc: 5, ns: 6_000_000_000 }));
        assert!(!c.observe(Sample { tsc: 2_000_000_000, ns: 1 }));
        assert_eq!(c.hz(), Some(3_000_000_000));
    }

    #[test]
    fn a_longer_baseline_refines_the_slope() {
        // First pair 1 us late on the monotonic side: 0.01% fast after 10 ms...
        let mut c = TscClock::new(Sample { tsc: 0, ns: 1_000 });
        c.observe(Sample { tsc: 30_000_000, ns: 10_000_000 });
        assert_eq!(c.hz(), Some(3_000_300_030));
        // ...and 0.0001% after 1 s.
        c.observe(Sample { tsc: 3_000_000_000, ns: 1_000_000_000 });
        assert_eq!(c.hz(), Some(3_000_003_000));
    }
}
