//! Plans: what `hwbpd` asks the kernel to arm.
//!
//! A [`CpuPlan`] holds a CPU's cpu-wide pieces, each pinned to a register so
//! that changing one never moves the others. A [`ContextPlan`] holds a
//! context's pieces; a piece may be limited to one CPU (the
//! `task/<pid>/cpu/<n>` scope). The kernel composes the two at every switch
//! ([`crate::compose`]). `hwbpd` guarantees that they fit; the kernel checks
//! what it can at write time and counts what still overflows at switch time.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::NUM_SLOTS;
use crate::piece::{Piece, Slot, Token};

/// Logical CPU number, as the kernel numbers CPUs.
pub type CpuId = u32;

/// Where a context piece applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CpuFilter {
    /// On whichever CPU the context runs.
    Any,
    /// Only while the context runs on this CPU.
    Only(CpuId),
}

impl CpuFilter {
    pub const fn applies_to(self, cpu: CpuId) -> bool {
        match self {
            CpuFilter::Any => true,
            CpuFilter::Only(only) => only == cpu,
        }
    }
}

/// A piece of a context's plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContextPiece {
    pub piece: Piece,
    pub token: Token,
    pub cpu: CpuFilter,
    /// A user-mode hit on this piece stops the thread that hit, until
    /// `hwbpd` resumes it (a debugger's breakpoint: contract section 7).
    pub stop: bool,
}

/// Most pieces one context plan holds. Four apply on any one CPU at most;
/// the rest exist so that a task can hold per-CPU pieces on several CPUs
/// (`task/<pid>/cpu/<n>` on four CPUs at four pieces each). `hwbpd`
/// refuses, with ENOSPC, a pinned breakpoint that would need more.
pub const MAX_CONTEXT_PIECES: usize = 16;

/// Why a plan was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// More than [`MAX_CONTEXT_PIECES`] pieces.
    TooManyPieces,
    /// More than [`NUM_SLOTS`] pieces would apply on this CPU.
    CpuOverflow(CpuId),
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::TooManyPieces => write!(f, "more than {MAX_CONTEXT_PIECES} pieces in one plan"),
            PlanError::CpuOverflow(cpu) => write!(f, "more than {NUM_SLOTS} pieces apply on cpu {cpu}"),
        }
    }
}

/// Source of [`ContextPlan`] version stamps: every change of any plan takes
/// the next value, so equal stamps mean equal pieces.
static NEXT_STAMP: AtomicU64 = AtomicU64::new(1);

/// The pieces of one context. Invariant: on every CPU at most
/// [`NUM_SLOTS`] of them apply (checked by [`ContextPlan::push`]).
///
/// Each plan carries a version stamp, renewed by every change (0 for the
/// empty plan). A copy keeps the stamp of what it copies, since it holds the
/// same pieces. The switch path uses it to see, without comparing pieces,
/// that the plan it is asked to load is the one it loaded last. Equality
/// compares the pieces only.
#[derive(Clone, Copy, Debug)]
pub struct ContextPlan {
    pieces: [Option<ContextPiece>; MAX_CONTEXT_PIECES],
    len: usize,
    stamp: u64,
}

impl PartialEq for ContextPlan {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for ContextPlan {}

impl Default for ContextPlan {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl ContextPlan {
    pub const EMPTY: ContextPlan = ContextPlan { pieces: [None; MAX_CONTEXT_PIECES], len: 0, stamp: 0 };

    /// Build a plan from pieces, refusing the whole of it if any would not
    /// fit.
    pub fn from_pieces<I: IntoIterator<Item = ContextPiece>>(pieces: I) -> Result<Self, PlanError> {
        let mut plan = Self::EMPTY;
        for piece in pieces {
            plan.push(piece)?;
        }
        Ok(plan)
    }

    /// Add a piece; on error the plan is unchanged.
    pub fn push(&mut self, piece: ContextPiece) -> Result<(), PlanError> {
        let slot = self.pieces.get_mut(self.len).ok_or(PlanError::TooManyPieces)?;
        *slot = Some(piece);
        self.len = self.len.saturating_add(1);
        if let Err(e) = self.check_per_cpu() {
            self.len = self.len.saturating_sub(1);
            if let Some(slot) = self.pieces.get_mut(self.len) {
                *slot = None;
            }
            return Err(e);
        }
        self.stamp = NEXT_STAMP.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// This version of the plan: equal non-zero stamps mean equal pieces.
    /// 0 for a plan that was never changed (the empty plan).
    pub const fn stamp(&self) -> u64 {
        self.stamp
    }

    fn check_per_cpu(&self) -> Result<(), PlanError> {
        let any = self.iter().filter(|p| p.cpu == CpuFilter::Any).count();
        if any > NUM_SLOTS {
            // Overflows on every CPU; name CPU 0 as the first of them.
            return Err(PlanError::CpuOverflow(0));
        }
        for p in self.iter() {
            if let CpuFilter::Only(cpu) = p.cpu
                && self.on_cpu(cpu).count() > NUM_SLOTS
            {
                return Err(PlanError::CpuOverflow(cpu));
            }
        }
        Ok(())
    }

    pub fn iter(&self) -> impl Iterator<Item = &ContextPiece> {
        self.pieces.iter().take(self.len).flatten()
    }

    /// The pieces that apply while the context runs on `cpu`, in plan order.
    pub fn on_cpu(&self, cpu: CpuId) -> impl Iterator<Item = &ContextPiece> {
        self.iter().filter(move |p| p.cpu.applies_to(cpu))
    }

    pub const fn len(&self) -> usize {
        self.len
    }

    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One cpu-wide piece, in the register `hwbpd` chose for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CpuPiece {
    pub piece: Piece,
    pub token: Token,
}

/// The cpu-wide pieces of one CPU, by register.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuPlan {
    slots: [Option<CpuPiece>; NUM_SLOTS],
}

impl CpuPlan {
    pub const EMPTY: CpuPlan = CpuPlan { slots: [None; NUM_SLOTS] };

    /// Place pieces in DR0, DR1, ... in order; fails if there are more than
    /// four.
    pub fn from_pieces<I: IntoIterator<Item = CpuPiece>>(pieces: I) -> Result<Self, PlanError> {
        let mut plan = Self::EMPTY;
        let mut free = plan.slots.iter_mut();
        for piece in pieces {
            *free.next().ok_or(PlanError::TooManyPieces)? = Some(piece);
        }
        Ok(plan)
    }

    pub fn set(&mut self, slot: Slot, piece: Option<CpuPiece>) {
        if let Some(s) = self.slots.get_mut(slot.index()) {
            *s = piece;
        }
    }

    pub fn get(&self, slot: Slot) -> Option<&CpuPiece> {
        self.slots.get(slot.index()).and_then(Option::as_ref)
    }

    pub fn iter(&self) -> impl Iterator<Item = (Slot, &CpuPiece)> {
        Slot::ALL.into_iter().zip(self.slots.iter()).filter_map(|(s, p)| Some((s, p.as_ref()?)))
    }

    /// Mask of the registers this plan occupies.
    pub fn used_slots(&self) -> u8 {
        self.iter().fold(0, |mask, (slot, _)| mask | slot.bit())
    }

    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::piece::{Access, Len};

    fn cp(addr: u64, cpu: CpuFilter) -> ContextPiece {
        ContextPiece { piece: Piece::new(addr, Len::Four, Access::Write).unwrap(), token: addr, cpu, stop: false }
    }

    #[test]
    fn four_any_pieces_fit_and_a_fifth_does_not() {
        let mut plan = ContextPlan::EMPTY;
        for i in 0..4 {
            plan.push(cp(0x1000 + 8 * i, CpuFilter::Any)).unwrap();
        }
        let before = plan;
        assert_eq!(plan.push(cp(0x2000, CpuFilter::Any)), Err(PlanError::CpuOverflow(0)));
        assert_eq!(plan, before, "a refused push leaves the plan as it was");
        assert_eq!(plan.push(cp(0x2000, CpuFilter::Only(3))), Err(PlanError::CpuOverflow(3)));
    }

    #[test]
    fn per_cpu_pieces_on_different_cpus_fit_side_by_side() {
        let mut plan = ContextPlan::EMPTY;
        for cpu in 0..4 {
            for i in 0..4 {
                plan.push(cp(0x1000 + 0x100 * u64::from(cpu) + 8 * i, CpuFilter::Only(cpu))).unwrap();
            }
        }
        assert_eq!(plan.len(), MAX_CONTEXT_PIECES);
        assert_eq!(plan.on_cpu(2).count(), 4);
        assert_eq!(plan.on_cpu(9).count(), 0);
        assert_eq!(plan.push(cp(0x9000, CpuFilter::Only(7))), Err(PlanError::TooManyPieces));
    }

    #[test]
    fn any_and_per_cpu_pieces_add_up_on_that_cpu() {
        let mut plan = ContextPlan::EMPTY;
        plan.push(cp(0x1000, CpuFilter::Any)).unwrap();
        plan.push(cp(0x1008, CpuFilter::Any)).unwrap();
        plan.push(cp(0x2000, CpuFilter::Only(1))).unwrap();
        plan.push(cp(0x2008, CpuFilter::Only(1))).unwrap();
        assert_eq!(plan.push(cp(0x2010, CpuFilter::Only(1))), Err(PlanError::CpuOverflow(1)));
        plan.push(cp(0x2010, CpuFilter::Only(0))).unwrap();
    }

    #[test]
    fn cpu_plan_places_pieces_in_order_and_refuses_a_fifth() {
        let p = |a| CpuPiece { piece: Piece::new(a, Len::One, Access::Exec).unwrap(), token: a };
        let plan = CpuPlan::from_pieces([p(1), p(2)]).unwrap();
        assert_eq!(plan.used_slots(), 0b0011);
        assert_eq!(CpuPlan::from_pieces((1..=5).map(p)), Err(PlanError::TooManyPieces));
    }
}
