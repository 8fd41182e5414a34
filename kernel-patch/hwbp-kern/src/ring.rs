//! The per-CPU hit ring: a bounded single-producer, single-consumer queue
//! of [`HitRecord`]s.
//!
//! The producer is the #DB handler of the CPU that owns the ring: it cannot
//! take a lock (it may interrupt the lock holder) and must not allocate.
//! When the ring is full the *new* record is dropped and counted: the
//! producer cannot discard the oldest without racing the consumer. `hwbpd`
//! reads the count and reports the loss in `lost`.
//!
//! Head and tail are free-running counters; a slot is `counter % N`, N a
//! power of two.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::abi::HitRecord;

pub struct HitRing<const N: usize> {
    slots: [UnsafeCell<HitRecord>; N],
    /// Records ever pushed; written by the producer only.
    head: AtomicUsize,
    /// Records ever popped; written by the consumer only.
    tail: AtomicUsize,
    dropped: AtomicU64,
}

// SAFETY: slot `i` is written only by the producer while `head - tail < N`
// says the consumer is not reading it, and read only by the consumer after
// the producer's release store of `head` published it. `push` and `pop`
// require one producer and one consumer at a time.
unsafe impl<const N: usize> Sync for HitRing<N> {}

impl<const N: usize> Default for HitRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> HitRing<N> {
    const CAPACITY_IS_A_POWER_OF_TWO: () = assert!(N.is_power_of_two(), "ring capacity must be a power of two");
    /// `counter & INDEX_MASK` is `counter % N`, N being a power of two.
    const INDEX_MASK: usize = N.wrapping_sub(1);

    pub const fn new() -> Self {
        let () = Self::CAPACITY_IS_A_POWER_OF_TWO;
        HitRing {
            slots: [const { UnsafeCell::new(HitRecord::ZERO) }; N],
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    pub const fn capacity(&self) -> usize {
        N
    }

    /// Queue a record; returns false (and counts a drop) when full.
    ///
    /// # Safety
    /// No other `push` on this ring runs concurrently: the caller is the
    /// ring's single producer (its CPU's #DB handler).
    pub unsafe fn push(&self, record: HitRecord) -> bool {
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Acquire);
        if head.wrapping_sub(tail) >= N {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if let Some(slot) = self.slots.get(head & Self::INDEX_MASK) {
            // SAFETY: the consumer has released this slot (tail is past it,
            // acquired above) and we are the only producer.
            unsafe { slot.get().write(record) };
        }
        self.head.store(head.wrapping_add(1), Ordering::Release);
        true
    }

    /// Take the oldest record.
    ///
    /// # Safety
    /// No other `pop`/`drain` on this ring runs concurrently: the caller is
    /// the ring's single consumer (the kernel serialises readers).
    pub unsafe fn pop(&self) -> Option<HitRecord> {
        let tail = self.tail.load(Ordering::Relaxed);
        let head = self.head.load(Ordering::Acquire);
        if tail == head {
            return None;
        }
        // SAFETY: the producer published this slot with its release store of
        // `head` (acquired above) and will not touch it until `tail` moves.
        let record = self.slots.get(tail & Self::INDEX_MASK).map(|slot| unsafe { slot.get().read() });
        self.tail.store(tail.wrapping_add(1), Ordering::Release);
        record
    }

    /// Move up to `out.len()` records into `out`; returns how many.
    ///
    /// # Safety
    /// As for [`HitRing::pop`].
    pub unsafe fn drain(&self, out: &mut [HitRecord]) -> usize {
        let mut n = 0usize;
        for slot in out.iter_mut() {
            // SAFETY: forwarded from this function's contract.
            match unsafe { self.pop() } {
                Some(r) => *slot = r,
                None => break,
            }
            n = n.saturating_add(1);
        }
        n
    }

    /// Records waiting to be read.
    /// Records queued, as far as any CPU can tell (a reader on a third CPU
    /// races both ends).
    pub fn len(&self) -> usize {
        // Tail first: the tail never passes the head and the head only
        // grows, so a head read after it is at least as far along and the
        // difference cannot underflow (head first, a pop in between would
        // make it wrap to nearly usize::MAX). Between the two loads the
        // producer may push past a full ring's worth: clamp.
        let tail = self.tail.load(Ordering::Acquire);
        let head = self.head.load(Ordering::Acquire);
        head.wrapping_sub(tail).min(N)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records dropped because the ring was full, since boot.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(token: u64) -> HitRecord {
        HitRecord { token, ..HitRecord::ZERO }
    }

    #[test]
    fn records_come_out_in_order() {
        let ring = HitRing::<4>::new();
        unsafe {
            assert!(ring.push(rec(1)));
            assert!(ring.push(rec(2)));
            assert_eq!(ring.pop().map(|r| r.token), Some(1));
            assert_eq!(ring.pop().map(|r| r.token), Some(2));
            assert_eq!(ring.pop(), None);
        }
    }

    #[test]
    fn overflow_drops_the_newest_and_counts_it() {
        let ring = HitRing::<4>::new();
        unsafe {
            for t in 0..7 {
                ring.push(rec(t));
            }
            assert_eq!(ring.len(), 4);
            assert_eq!(ring.dropped(), 3);
            let mut out = [HitRecord::ZERO; 8];
            assert_eq!(ring.drain(&mut out), 4);
            assert_eq!(out[..4].iter().map(|r| r.token).collect::<std::vec::Vec<_>>(), [0, 1, 2, 3]);
            assert!(ring.push(rec(9)), "space again after draining");
        }
    }

    #[test]
    fn counters_wrap_without_losing_records() {
        let ring = HitRing::<2>::new();
        ring.head.store(usize::MAX, Ordering::Relaxed);
        ring.tail.store(usize::MAX, Ordering::Relaxed);
        unsafe {
            assert!(ring.push(rec(1)));
            assert!(ring.push(rec(2)));
            assert!(!ring.push(rec(3)));
            assert_eq!(ring.pop().map(|r| r.token), Some(1));
            assert_eq!(ring.pop().map(|r| r.token), Some(2));
        }
    }

    #[test]
    fn one_producer_and_one_consumer_on_two_threads_lose_nothing() {
        let ring = std::sync::Arc::new(HitRing::<64>::new());
        let producer = {
            let ring = ring.clone();
            std::thread::spawn(move || {
                let mut t = 0;
                while t < 100_000 {
                    // SAFETY: this thread is the only producer.
                    if unsafe { ring.push(rec(t)) } {
                        t += 1;
                    }
                }
            })
        };
        let mut expected = 0;
        while expected < 100_000 {
            // SAFETY: this thread is the only consumer.
            if let Some(r) = unsafe { ring.pop() } {
                assert_eq!(r.token, expected);
                expected += 1;
            }
        }
        producer.join().unwrap();
    }

    #[test]
    fn a_third_party_never_reads_more_than_the_capacity() {
        // Producer and consumer run flat out while a third thread reads the
        // length: with the head read before the tail, a pop in between made
        // it wrap to nearly usize::MAX.
        let ring = std::sync::Arc::new(HitRing::<8>::new());
        let stop = std::sync::Arc::new(core::sync::atomic::AtomicBool::new(false));
        let worker = |f: fn(&HitRing<8>)| {
            let (ring, stop) = (ring.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    f(&ring);
                }
            })
        };
        // SAFETY: one producer thread and one consumer thread.
        let producer = worker(|r| unsafe {
            r.push(rec(1));
        });
        let consumer = worker(|r| unsafe {
            r.pop();
        });
        let mut worst = 0;
        for _ in 0..2_000_000 {
            worst = worst.max(ring.len());
        }
        stop.store(true, Ordering::Relaxed);
        producer.join().unwrap();
        consumer.join().unwrap();
        assert!(worst <= 8, "len() read {worst}");
    }
}
