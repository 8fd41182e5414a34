//! Exact hit counts, kept apart from hit records.
//!
//! A hit record can be dropped (the per-CPU ring is bounded, and `hwbpd` may
//! fall behind); a count never is. The #DB handler adds one to the counter
//! of the register that fired ([`SlotHits`], lock-free, one writer: its
//! CPU); the kernel moves those per-register counts into the plan that owns
//! the piece ([`flush`]) whenever the register's piece is about to change
//! owner — a context switch, a plan change, a timer tick. Removed pieces'
//! counts wait in a bounded [`CountTable`] until `hwbpd` reads them.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::NUM_SLOTS;
use crate::compose::{Composition, Origin};
use crate::piece::{Slot, Token};
use crate::plan::{ContextPlan, MAX_CONTEXT_PIECES};

/// Hits per debug register on one CPU since they were last moved.
///
/// Written by this CPU's #DB handler and its switch path (both on this CPU);
/// a reader on another CPU may take the counts of a CPU plan's registers,
/// hence atomics (relaxed: each counter is independent).
#[derive(Debug, Default)]
pub struct SlotHits([AtomicU64; NUM_SLOTS]);

impl SlotHits {
    pub const fn new() -> Self {
        SlotHits([const { AtomicU64::new(0) }; NUM_SLOTS])
    }

    /// One more hit in `slot` (the #DB handler).
    pub fn record(&self, slot: Slot) {
        if let Some(counter) = self.0.get(slot.index()) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Take the hits of `slot`, leaving 0.
    pub fn take(&self, slot: Slot) -> u64 {
        self.0.get(slot.index()).map_or(0, |c| c.swap(0, Ordering::Relaxed))
    }

    /// Whether any register has hits waiting (the cheap test before a flush).
    pub fn any(&self) -> bool {
        self.0.iter().any(|c| c.load(Ordering::Relaxed) != 0)
    }
}

/// Move the waiting hits of the registers `loaded` holds, from `origin`
/// (the running context's pieces, or the CPU plan's), to `credit(token,
/// hits)`. Registers of the other origin keep theirs.
pub fn flush(loaded: &Composition, hits: &SlotHits, origin: Origin, mut credit: impl FnMut(Token, u64)) {
    for (slot, l) in loaded.iter() {
        if l.origin != origin {
            continue;
        }
        let n = hits.take(slot);
        if n != 0 {
            credit(l.token, n);
        }
    }
}

/// A context plan as the kernel holds it: the pieces, and each piece's hits
/// not read yet. Threads of one process share one (behind an `Arc` in the
/// kernel), so their hits add up in one place.
#[derive(Debug)]
pub struct CountedPlan {
    pieces: ContextPlan,
    hits: [AtomicU64; MAX_CONTEXT_PIECES],
}

impl CountedPlan {
    pub const fn new(pieces: ContextPlan) -> Self {
        CountedPlan { pieces, hits: [const { AtomicU64::new(0) }; MAX_CONTEXT_PIECES] }
    }

    pub const fn pieces(&self) -> &ContextPlan {
        &self.pieces
    }

    /// Add `n` hits to the piece with `token` (a flush of the registers).
    pub fn credit(&self, token: Token, n: u64) {
        if let Some(i) = self.pieces.iter().position(|p| p.token == token)
            && let Some(h) = self.hits.get(i)
        {
            h.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Take every piece's unread hits (read and reset).
    pub fn take_all(&self, mut out: impl FnMut(Token, u64)) {
        for (piece, h) in self.pieces.iter().zip(self.hits.iter()) {
            let n = h.swap(0, Ordering::Relaxed);
            if n != 0 {
                out(piece.token, n);
            }
        }
    }
}

/// A table full: the caller must refuse what would add tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableFull;

/// Hits per token waiting to be read, at most `N` tokens. No allocation:
/// the kernel keeps one per process plan and per CPU.
#[derive(Clone, Copy, Debug)]
pub struct CountTable<const N: usize> {
    entries: [(Token, u64); N],
    len: usize,
}

impl<const N: usize> Default for CountTable<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> CountTable<N> {
    pub const fn new() -> Self {
        CountTable { entries: [(0, 0); N], len: 0 }
    }

    pub const fn len(&self) -> usize {
        self.len
    }

    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tokens that can still be added.
    pub const fn room(&self) -> usize {
        N.saturating_sub(self.len)
    }

    /// Add `hits` for `token` (merged with an entry of the same token).
    pub fn add(&mut self, token: Token, hits: u64) -> Result<(), TableFull> {
        if hits == 0 {
            return Ok(());
        }
        let used = self.entries.get_mut(..self.len).unwrap_or(&mut []);
        if let Some(entry) = used.iter_mut().find(|(t, _)| *t == token) {
            entry.1 = entry.1.saturating_add(hits);
            return Ok(());
        }
        let slot = self.entries.get_mut(self.len).ok_or(TableFull)?;
        *slot = (token, hits);
        self.len = self.len.saturating_add(1);
        Ok(())
    }

    /// Move up to `max` entries out, oldest first, through `out`.
    pub fn drain(&mut self, max: usize, mut out: impl FnMut(Token, u64)) -> usize {
        let n = max.min(self.len);
        for &(token, hits) in self.entries.get(..n).unwrap_or(&[]) {
            out(token, hits);
        }
        self.entries.copy_within(n..self.len, 0);
        self.len = self.len.saturating_sub(n);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::compose;
    use crate::piece::{Access, Len, Piece};
    use crate::plan::{ContextPiece, ContextPlan, CpuFilter, CpuPiece, CpuPlan};

    fn slot(i: usize) -> Slot {
        Slot::new(i).unwrap()
    }

    #[test]
    fn a_table_merges_tokens_refuses_when_full_and_drains_in_order() {
        let mut t = CountTable::<2>::new();
        t.add(7, 3).unwrap();
        t.add(7, 2).unwrap();
        t.add(9, 1).unwrap();
        t.add(5, 0).unwrap();
        assert_eq!(t.len(), 2, "zero hits add nothing");
        assert_eq!(t.add(11, 1), Err(TableFull));
        t.add(9, 4).unwrap();
        let mut got = std::vec::Vec::new();
        assert_eq!(t.drain(1, |k, n| got.push((k, n))), 1);
        assert_eq!(got, [(7, 5)]);
        assert_eq!(t.room(), 1);
        t.drain(10, |k, n| got.push((k, n)));
        assert_eq!(got, [(7, 5), (9, 5)]);
        assert!(t.is_empty());
    }

    #[test]
    fn a_flush_credits_each_origin_to_its_own_owner_and_leaves_nothing() {
        let cpu = CpuPlan::from_pieces([CpuPiece { piece: Piece::new(0x100, Len::Eight, Access::Write).unwrap(), token: 50 }])
            .unwrap();
        let ctx = ContextPlan::from_pieces([ContextPiece {
            piece: Piece::new(0x200, Len::Eight, Access::Write).unwrap(),
            token: 60,
            cpu: CpuFilter::Any, stop: false,
        }])
        .unwrap();
        let loaded = compose(0, &cpu, Some(&ctx));
        let hits = SlotHits::new();
        for _ in 0..3 {
            hits.record(slot(0));
        }
        for _ in 0..5 {
            hits.record(slot(1));
        }
        let mut ctx_credit = std::vec::Vec::new();
        flush(&loaded, &hits, Origin::Context, |t, n| ctx_credit.push((t, n)));
        assert_eq!(ctx_credit, [(60, 5)]);
        assert!(hits.any(), "the CPU plan's register keeps its hits");
        let mut cpu_credit = std::vec::Vec::new();
        flush(&loaded, &hits, Origin::Cpu, |t, n| cpu_credit.push((t, n)));
        assert_eq!(cpu_credit, [(50, 3)]);
        assert!(!hits.any());
    }

    #[test]
    fn a_counted_plan_credits_by_token_and_reads_once() {
        let plan = ContextPlan::from_pieces([10u64, 20].map(|t| ContextPiece {
            piece: Piece::new(0x1000 * t, Len::Four, Access::Write).unwrap(),
            token: t,
            cpu: CpuFilter::Any, stop: false,
        }))
        .unwrap();
        let counted = CountedPlan::new(plan);
        counted.credit(20, 4);
        counted.credit(10, 1);
        counted.credit(20, 2);
        counted.credit(99, 7);
        let mut got = std::vec::Vec::new();
        counted.take_all(|t, n| got.push((t, n)));
        assert_eq!(got, [(10, 1), (20, 6)], "an unknown token credits nothing");
        counted.take_all(|t, n| got.push((t, n)));
        assert_eq!(got.len(), 2, "read and reset");
    }
}
