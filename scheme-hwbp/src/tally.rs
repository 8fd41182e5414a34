//! What a breakpoint has counted and recorded since open or `reset`:
//! `value` from the kernel's exact counts, `lost` from what its records
//! should have been, and the hit number each record carries.
//!
//! The kernel counts every hit of every piece (`Kernel::take_counts`),
//! whatever happens to the hit records; records may be dropped on the way
//! (the kernel's per-CPU queue) and only feed the events streams. So:
//!
//! - `value` = hits the kernel counted for the breakpoint's pieces, minus
//!   the counted hits its records show are not its hits (a kernel-mode hit
//!   without the `kernel` option; the second piece of a split breakpoint
//!   hit by the same access). Never above the kernel's count. Those
//!   corrections need the record: if the kernel dropped such a record, the
//!   hit stays in `value` (see README, "Counts").
//! - `lost` (the kernel's part; the ring adds its own) = the records the
//!   breakpoint should have received, `value / period`, minus those handed
//!   to its ring. Charged to this breakpoint only.
//! - a record's hit number: one more than the previous record's, or, if
//!   the counts show hits whose records never came, one more than the
//!   value at the previous collect: increasing, and never above the hits
//!   that happened.

/// See the module docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Hits the kernel counted for the breakpoint's pieces.
    counted: u64,
    /// Of those, hits its records showed are not its own.
    excluded: u64,
    /// Records its period selected and handed to its ring.
    offered: u64,
    /// Hit number of the last record.
    last_hit: u64,
    /// `value()` before the counts of collect number `epoch`.
    floor: u64,
    epoch: u64,
}

impl Tally {
    /// Hits of the breakpoint.
    pub fn value(&self) -> u64 {
        self.counted.saturating_sub(self.excluded)
    }

    /// Records the breakpoint should have received and did not (the
    /// kernel dropped them): `value / period - offered`.
    pub fn undelivered(&self, period: u64) -> u64 {
        (self.value() / period.max(1)).saturating_sub(self.offered)
    }

    /// The first time collect `epoch` touches this tally: remember the
    /// value it starts from.
    fn enter(&mut self, epoch: u64) {
        if self.epoch != epoch {
            self.epoch = epoch;
            self.floor = self.value();
        }
    }

    /// The kernel counted `hits` more.
    pub fn count(&mut self, hits: u64, epoch: u64) {
        self.enter(epoch);
        self.counted = self.counted.saturating_add(hits);
    }

    /// A record of a counted hit that is not this breakpoint's hit.
    pub fn exclude(&mut self, epoch: u64) {
        self.enter(epoch);
        self.excluded = self.excluded.saturating_add(1);
    }

    /// A record of one of its hits arrived: its hit number if the period
    /// selects it for the ring (the caller hands it over), else None.
    pub fn record(&mut self, period: u64, epoch: u64) -> Option<u64> {
        self.enter(epoch);
        let n = self.last_hit.saturating_add(1).max(self.floor.saturating_add(1));
        self.last_hit = n;
        if !n.is_multiple_of(period.max(1)) {
            return None;
        }
        self.offered = self.offered.saturating_add(1);
        Some(n)
    }

    /// `reset`: everything from zero, during collect `epoch`.
    pub fn reset(&mut self, epoch: u64) {
        *self = Tally { epoch, ..Tally::default() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_every_record_delivered_nothing_is_lost_and_hit_numbers_follow() {
        let mut t = Tally::default();
        t.count(3, 1);
        assert_eq!([t.record(1, 1), t.record(1, 1), t.record(1, 1)], [Some(1), Some(2), Some(3)]);
        t.count(1, 2);
        assert_eq!(t.record(1, 2), Some(4));
        assert_eq!((t.value(), t.undelivered(1)), (4, 0));
    }

    #[test]
    fn dropped_records_are_lost_and_skipped_in_hit_numbers() {
        let mut t = Tally::default();
        // 5 hits, the kernel kept 2 records.
        t.count(5, 1);
        assert_eq!([t.record(1, 1), t.record(1, 1)], [Some(1), Some(2)]);
        assert_eq!((t.value(), t.undelivered(1)), (5, 3));
        t.count(1, 2);
        assert_eq!(t.record(1, 2), Some(6), "after the gap, numbered from the count");
        assert_eq!(t.undelivered(1), 3);
    }

    #[test]
    fn a_count_that_lags_its_records_loses_nothing() {
        let mut t = Tally::default();
        t.count(1, 1);
        assert_eq!([t.record(1, 1), t.record(1, 1)], [Some(1), Some(2)]);
        assert_eq!((t.value(), t.undelivered(1)), (1, 0));
        t.count(2, 2);
        assert_eq!(t.record(1, 2), Some(3));
        assert_eq!((t.value(), t.undelivered(1)), (3, 0));
    }

    #[test]
    fn period_and_exclusions() {
        let mut t = Tally::default();
        t.count(7, 1);
        t.exclude(1);
        let got: Vec<_> = (0..6).map(|_| t.record(2, 1)).collect();
        assert_eq!(got, [None, Some(2), None, Some(4), None, Some(6)]);
        assert_eq!((t.value(), t.undelivered(2)), (6, 0));
        t.reset(1);
        assert_eq!((t.value(), t.undelivered(2), t.record(2, 1)), (0, 0, None));
    }
}
