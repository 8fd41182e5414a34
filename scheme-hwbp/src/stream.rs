//! Per-breakpoint state the scheme keeps beside the engine: the count, the
//! period, and the event ring that `dup(fd, "events")` streams read.

use std::collections::VecDeque;

use libhwbp::abi::{EventRecord, EVENT_RECORD_SIZE};

/// A bounded queue of hit records that drops the *oldest* record when full
/// and counts what it dropped.
///
/// Invariant: `records.len() <= capacity`. Storage grows on demand (an
/// idle breakpoint costs no ring memory) and never past what `capacity`
/// records need, so once a ring has filled, pushing never allocates.
#[derive(Debug)]
pub struct EventRing {
    records: VecDeque<EventRecord>,
    capacity: usize,
    lost: u64,
}

impl EventRing {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        EventRing { records: VecDeque::new(), capacity, lost: 0 }
    }

    pub fn push(&mut self, record: EventRecord) {
        if self.records.len() == self.capacity {
            self.records.pop_front();
            self.lost = self.lost.saturating_add(1);
        }
        self.records.push_back(record);
        debug_assert!(self.records.len() <= self.capacity);
    }

    /// Change the capacity; records that no longer fit are dropped, oldest
    /// first, and counted as lost.
    pub fn resize(&mut self, capacity: usize) {
        let capacity = capacity.max(1);
        while self.records.len() > capacity {
            self.records.pop_front();
            self.lost = self.lost.saturating_add(1);
        }
        if capacity < self.capacity {
            self.records.shrink_to(capacity);
        }
        self.capacity = capacity;
    }

    /// Move as many whole records as fit into `out`, oldest first; returns
    /// the bytes written.
    pub fn read_into(&mut self, out: &mut [u8]) -> usize {
        let mut written = 0;
        for chunk in out.chunks_exact_mut(EVENT_RECORD_SIZE) {
            let Some(r) = self.records.pop_front() else { break };
            chunk.copy_from_slice(&r.to_bytes());
            written += EVENT_RECORD_SIZE;
        }
        written
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Records dropped because the ring was full.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    pub fn reset_lost(&mut self) {
        self.lost = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(hit: u64) -> EventRecord {
        EventRecord { hit, ..EventRecord::default() }
    }

    #[test]
    fn a_full_ring_drops_the_oldest_and_counts_it() {
        let mut ring = EventRing::new(3);
        for hit in 1..=5 {
            ring.push(rec(hit));
        }
        assert_eq!(ring.lost(), 2);
        let mut buf = [0u8; EVENT_RECORD_SIZE * 8];
        let n = ring.read_into(&mut buf);
        let hits: Vec<u64> = EventRecord::decode_all(&buf[..n]).map(|r| r.hit).collect();
        assert_eq!(hits, [3, 4, 5]);
    }

    #[test]
    fn reading_takes_only_whole_records() {
        let mut ring = EventRing::new(4);
        ring.push(rec(1));
        ring.push(rec(2));
        let mut buf = [0u8; EVENT_RECORD_SIZE + 10];
        assert_eq!(ring.read_into(&mut buf), EVENT_RECORD_SIZE);
        assert_eq!(ring.len(), 1);
    }

    #[test]
    fn shrinking_drops_the_oldest() {
        let mut ring = EventRing::new(4);
        for hit in 1..=4 {
            ring.push(rec(hit));
        }
        ring.resize(2);
        assert_eq!((ring.len(), ring.lost(), ring.capacity()), (2, 2, 2));
    }
}
