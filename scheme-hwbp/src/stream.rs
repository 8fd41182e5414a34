//! Per-breakpoint state the scheme keeps beside the engine: the count, the
//! period, and the event ring that `dup(fd, "events-v2")` (and `"events"`)
//! streams read.

use std::collections::VecDeque;

use libhwbp::abi::{EventRecord, EVENT_RECORD_SIZE, EVENT_RECORD_V1_SIZE};

/// The record layout a stream reads (chosen by the name `dup` was given).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordVersion {
    /// `events`: the 64-byte layout of clients built before version 2.
    V1,
    /// `events-v2`: 80 bytes, thread id and flags appended.
    V2,
}

impl RecordVersion {
    pub const fn size(self) -> usize {
        match self {
            RecordVersion::V1 => EVENT_RECORD_V1_SIZE,
            RecordVersion::V2 => EVENT_RECORD_SIZE,
        }
    }
}

/// A bounded queue of hit records that drops the *oldest* record when full
/// and counts what it dropped.
///
/// Invariant: `records.len() <= capacity`, and the storage never holds
/// more than `capacity` records (growth doubles but is clamped to it), so
/// a ring costs at most `capacity x EVENT_RECORD_SIZE` bytes of storage.
/// Storage grows on demand (an idle breakpoint costs no ring memory) and is
/// given back when a read empties the ring, so a burst does not pin memory
/// for the life of the breakpoint; once a ring has filled, pushing never
/// allocates.
#[derive(Debug)]
pub struct EventRing {
    records: VecDeque<EventRecord>,
    capacity: usize,
    lost: u64,
}

/// Storage a ring keeps after a read empties it: small enough to be
/// nothing per breakpoint, large enough that a trickle of hits read one by
/// one does not allocate each time.
pub const KEPT_RECORDS: usize = 16;

/// The first allocation of a ring that grows.
const FIRST_RECORDS: usize = 8;

/// A record could not be stored because memory ran out; it was counted in
/// `lost` instead.
#[derive(Debug, PartialEq, Eq)]
pub struct RecordDropped;

impl EventRing {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        EventRing { records: VecDeque::new(), capacity, lost: 0 }
    }

    /// Queue `record`, dropping the oldest when full. If the storage must
    /// grow and the allocation fails, the record is dropped and counted in
    /// `lost` (a hit is never refused: it already happened).
    pub fn push(&mut self, record: EventRecord) -> Result<(), RecordDropped> {
        if self.records.len() == self.capacity {
            self.records.pop_front();
            self.lost = self.lost.saturating_add(1);
        } else if self.records.len() == self.records.capacity() {
            let want = (self.records.capacity() * 2).max(FIRST_RECORDS).min(self.capacity);
            if self.records.try_reserve_exact(want - self.records.len()).is_err() {
                self.lost = self.lost.saturating_add(1);
                return Err(RecordDropped);
            }
        }
        self.records.push_back(record);
        debug_assert!(self.records.len() <= self.capacity);
        Ok(())
    }

    /// Bytes of record storage this ring holds now.
    pub fn storage_bytes(&self) -> usize {
        self.records.capacity() * core::mem::size_of::<EventRecord>()
    }

    /// Change the capacity; records that no longer fit are dropped, oldest
    /// first, and counted as lost.
    pub fn resize(&mut self, capacity: usize) {
        let capacity = capacity.max(1);
        while self.records.len() > capacity {
            self.records.pop_front();
            self.lost = self.lost.saturating_add(1);
        }
        if capacity < self.records.capacity() {
            self.release(capacity);
        }
        self.capacity = capacity;
    }

    /// Move as many whole records as fit into `out`, oldest first, in the
    /// layout of `version`; returns the bytes written. A read that empties
    /// the ring gives its storage back, but for [`KEPT_RECORDS`].
    pub fn read_into(&mut self, out: &mut [u8], version: RecordVersion) -> usize {
        let mut written = 0;
        for chunk in out.chunks_exact_mut(version.size()) {
            let Some(r) = self.records.pop_front() else { break };
            match version {
                RecordVersion::V1 => chunk.copy_from_slice(&r.to_bytes_v1()),
                RecordVersion::V2 => chunk.copy_from_slice(&r.to_bytes()),
            }
            written += version.size();
        }
        if self.records.is_empty() && self.records.capacity() > KEPT_RECORDS {
            self.release(KEPT_RECORDS);
        }
        written
    }

    /// Keep at most `keep` records of storage. The records that fit are
    /// moved into new storage; should that allocation fail, the old
    /// storage is kept (never an abort, and never more than `capacity`).
    fn release(&mut self, keep: usize) {
        debug_assert!(self.records.len() <= keep);
        if self.records.is_empty() {
            // Freeing, then allocating lazily on the next push.
            self.records = VecDeque::new();
            return;
        }
        let mut smaller = VecDeque::new();
        if smaller.try_reserve_exact(keep).is_ok() {
            smaller.extend(self.records.drain(..));
            self.records = smaller;
        }
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

    fn push(ring: &mut EventRing, hit: u64) {
        ring.push(rec(hit)).unwrap();
    }

    #[test]
    fn storage_never_exceeds_the_capacity_and_is_given_back_when_read_empty() {
        let mut ring = EventRing::new(1000);
        for hit in 1..=5000 {
            push(&mut ring, hit);
            assert!(ring.storage_bytes() <= 1000 * EVENT_RECORD_SIZE, "at hit {hit}");
        }
        assert_eq!(ring.len(), 1000);
        let mut buf = vec![0u8; EVENT_RECORD_SIZE * 1000];
        assert_eq!(ring.read_into(&mut buf, RecordVersion::V2), buf.len());
        assert!(ring.storage_bytes() <= KEPT_RECORDS * EVENT_RECORD_SIZE, "{}", ring.storage_bytes());
        push(&mut ring, 1);
        assert_eq!(ring.len(), 1, "still usable");
    }

    #[test]
    fn a_full_ring_drops_the_oldest_and_counts_it() {
        let mut ring = EventRing::new(3);
        for hit in 1..=5 {
            push(&mut ring, hit);
        }
        assert_eq!(ring.lost(), 2);
        let mut buf = [0u8; EVENT_RECORD_SIZE * 8];
        let n = ring.read_into(&mut buf, RecordVersion::V2);
        let hits: Vec<u64> = EventRecord::decode_all(&buf[..n]).map(|r| r.hit).collect();
        assert_eq!(hits, [3, 4, 5]);
    }

    #[test]
    fn reading_takes_only_whole_records() {
        let mut ring = EventRing::new(4);
        push(&mut ring, 1);
        push(&mut ring, 2);
        let mut buf = [0u8; EVENT_RECORD_SIZE + 10];
        assert_eq!(ring.read_into(&mut buf, RecordVersion::V2), EVENT_RECORD_SIZE);
        assert_eq!(ring.len(), 1);
    }

    #[test]
    fn a_version_1_read_gives_64_byte_records() {
        let mut ring = EventRing::new(4);
        ring.push(EventRecord { hit: 1, tid: 9, flags: 1, ..EventRecord::default() }).unwrap();
        ring.push(rec(2)).unwrap();
        let mut buf = [0u8; EVENT_RECORD_SIZE];
        let n = ring.read_into(&mut buf, RecordVersion::V1);
        assert_eq!(n, EVENT_RECORD_V1_SIZE, "one whole 64-byte record in 80 bytes");
        let got: Vec<_> = EventRecord::decode_all_v1(&buf[..n]).collect();
        assert_eq!(got, [EventRecord { hit: 1, ..EventRecord::default() }]);
    }

    #[test]
    fn shrinking_drops_the_oldest() {
        let mut ring = EventRing::new(4);
        for hit in 1..=4 {
            push(&mut ring, hit);
        }
        ring.resize(2);
        assert_eq!((ring.len(), ring.lost(), ring.capacity()), (2, 2, 2));
    }
}
