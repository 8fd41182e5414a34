//! Composition: from a CPU's plan and the running context's plan to the
//! contents of DR0-DR3 and DR7.
//!
//! This is *the* assignment function: the kernel runs it at every switch and
//! `hwbpd` runs it to report which piece sits in which register. The rule:
//!
//! 1. cpu-wide pieces keep the register their plan names, so a context
//!    switch never moves them;
//! 2. the context's pieces that apply on this CPU fill the free registers
//!    in plan order, lowest register first;
//! 3. a context piece that finds no free register is not loaded and is
//!    counted in [`Composition::refused`]. `hwbpd` never hands the kernel
//!    plans that overflow; [`check_fits`] lets the kernel refuse them at
//!    write time, and the count catches the rest.

use core::fmt;

use crate::NUM_SLOTS;
use crate::dr7;
use crate::piece::{Piece, Slot, Token};
use crate::plan::{ContextPlan, CpuId, CpuPlan};

/// Which plan a loaded piece came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    Cpu,
    Context,
}

/// A piece in a register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Loaded {
    pub piece: Piece,
    pub token: Token,
    pub origin: Origin,
    /// A user-mode hit stops the thread ([`crate::plan::ContextPiece::stop`]).
    pub stop: bool,
}

/// Register contents for one CPU at one moment.
///
/// Invariant: slot i is `Some` exactly when DR7 enables slot i, so a
/// composition with no pieces has DR7 == 0. The masks and the DR7 value are
/// kept up to date as pieces are placed, so the #DB path and the switch
/// path read them instead of recomputing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Composition {
    slots: [Option<Loaded>; NUM_SLOTS],
    /// Occupied slots.
    used: u8,
    /// Occupied slots holding exec pieces.
    exec: u8,
    /// Occupied slots holding context pieces.
    from_context: u8,
    /// Occupied slots whose piece stops the thread that hits it.
    stop: u8,
    dr7: u64,
    refused: u8,
}

impl Composition {
    pub const EMPTY: Composition =
        Composition { slots: [None; NUM_SLOTS], used: 0, exec: 0, from_context: 0, stop: 0, dr7: dr7::DISARMED, refused: 0 };

    fn place(&mut self, slot: Slot, loaded: Loaded) {
        if let Some(s) = self.slots.get_mut(slot.index()) {
            *s = Some(loaded);
            self.used |= slot.bit();
            if loaded.piece.access() == crate::piece::Access::Exec {
                self.exec |= slot.bit();
            }
            if loaded.origin == Origin::Context {
                self.from_context |= slot.bit();
            }
            if loaded.stop {
                self.stop |= slot.bit();
            }
            self.dr7 |= dr7::encode_slot(slot, &loaded.piece) | dr7::GLOBAL_EXACT;
        }
    }

    pub fn slot(&self, slot: Slot) -> Option<&Loaded> {
        self.slots.get(slot.index()).and_then(Option::as_ref)
    }

    pub fn iter(&self) -> impl Iterator<Item = (Slot, &Loaded)> {
        Slot::ALL.into_iter().zip(self.slots.iter()).filter_map(|(s, l)| Some((s, l.as_ref()?)))
    }

    /// The DR7 value that arms exactly the occupied slots.
    pub const fn dr7(&self) -> u64 {
        self.dr7
    }

    /// The address register value for `slot` (0 when unused).
    pub fn addr(&self, slot: Slot) -> u64 {
        self.slot(slot).map_or(0, |l| l.piece.addr())
    }

    /// Mask of occupied slots.
    pub const fn used_slots(&self) -> u8 {
        self.used
    }

    /// Mask of slots holding exec pieces.
    pub const fn exec_slots(&self) -> u8 {
        self.exec
    }

    /// Mask of slots whose piece stops the thread that hits it.
    pub const fn stop_slots(&self) -> u8 {
        self.stop
    }

    /// Whether any context piece is loaded.
    pub const fn has_context_pieces(&self) -> bool {
        self.from_context != 0
    }

    /// Context pieces that applied but found no free register.
    pub const fn refused(&self) -> u8 {
        self.refused
    }

    pub const fn is_empty(&self) -> bool {
        self.used == 0
    }
}

/// Compose `cpu_plan` with the pieces of `context` that apply on `cpu`.
pub fn compose(cpu: CpuId, cpu_plan: &CpuPlan, context: Option<&ContextPlan>) -> Composition {
    let mut out = Composition::EMPTY;
    for (slot, p) in cpu_plan.iter() {
        out.place(slot, Loaded { piece: p.piece, token: p.token, origin: Origin::Cpu, stop: false });
    }
    let Some(context) = context else { return out };
    let cpu_used = out.used;
    let mut free = Slot::ALL.into_iter().filter(move |s| cpu_used & s.bit() == 0);
    for p in context.on_cpu(cpu) {
        match free.next() {
            Some(slot) => out.place(slot, Loaded { piece: p.piece, token: p.token, origin: Origin::Context, stop: p.stop }),
            None => out.refused = out.refused.saturating_add(1),
        }
    }
    out
}

/// Why a context plan cannot run on a CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ComposeError {
    pub cpu: CpuId,
    /// Registers the two plans need together on that CPU.
    pub needed: usize,
}

impl fmt::Display for ComposeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cpu {} would need {} debug registers, it has {NUM_SLOTS}", self.cpu, self.needed)
    }
}

/// Whether `context` fits beside `cpu_plan` on `cpu`.
pub fn check_fits(cpu: CpuId, cpu_plan: &CpuPlan, context: &ContextPlan) -> Result<(), ComposeError> {
    let needed = cpu_plan.len().saturating_add(context.on_cpu(cpu).count());
    if needed > NUM_SLOTS { Err(ComposeError { cpu, needed }) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::piece::{Access, Len};
    use crate::plan::{ContextPiece, CpuFilter, CpuPiece};

    fn piece(addr: u64) -> Piece {
        Piece::new(addr, Len::Eight, Access::ReadWrite).unwrap()
    }
    fn cpu_piece(addr: u64) -> CpuPiece {
        CpuPiece { piece: piece(addr), token: addr }
    }
    fn ctx_piece(addr: u64, cpu: CpuFilter) -> ContextPiece {
        ContextPiece { piece: piece(addr), token: addr, cpu, stop: false }
    }
    fn slot(i: usize) -> Slot {
        Slot::new(i).unwrap()
    }

    #[test]
    fn nothing_planned_composes_to_dr7_zero() {
        let c = compose(0, &CpuPlan::EMPTY, None);
        assert!(c.is_empty());
        assert_eq!(c.dr7(), 0);
        assert_eq!(compose(0, &CpuPlan::EMPTY, Some(&ContextPlan::EMPTY)), c);
    }

    #[test]
    fn cpu_pieces_keep_their_registers_and_context_pieces_fill_the_gaps() {
        let mut cpu_plan = CpuPlan::EMPTY;
        cpu_plan.set(slot(1), Some(cpu_piece(0x1000)));
        cpu_plan.set(slot(3), Some(cpu_piece(0x2000)));
        let ctx = ContextPlan::from_pieces([
            ctx_piece(0x3000, CpuFilter::Any),
            ctx_piece(0x4000, CpuFilter::Only(5)),
            ctx_piece(0x5000, CpuFilter::Only(0)),
        ])
        .unwrap();
        let c = compose(0, &cpu_plan, Some(&ctx));
        assert_eq!(c.addr(slot(0)), 0x3000);
        assert_eq!(c.addr(slot(1)), 0x1000);
        assert_eq!(c.addr(slot(2)), 0x5000, "the cpu-5 piece does not apply on cpu 0");
        assert_eq!(c.addr(slot(3)), 0x2000);
        assert_eq!(c.slot(slot(1)).unwrap().origin, Origin::Cpu);
        assert_eq!(c.slot(slot(0)).unwrap().origin, Origin::Context);
        assert_eq!(c.refused(), 0);
        assert_eq!(c.used_slots(), 0b1111);
        let expected_dr7 = Slot::ALL
            .into_iter()
            .fold(dr7::GLOBAL_EXACT, |d, s| d | dr7::encode_slot(s, &c.slot(s).unwrap().piece));
        assert_eq!(c.dr7(), expected_dr7);
    }

    #[test]
    fn overflow_is_counted_not_loaded_and_check_fits_refuses_it() {
        let cpu_plan = CpuPlan::from_pieces([cpu_piece(0x1000), cpu_piece(0x1008), cpu_piece(0x1010)]).unwrap();
        let ctx = ContextPlan::from_pieces([ctx_piece(0x3000, CpuFilter::Any), ctx_piece(0x3008, CpuFilter::Any)])
            .unwrap();
        let c = compose(2, &cpu_plan, Some(&ctx));
        assert_eq!(c.refused(), 1);
        assert_eq!(c.addr(slot(3)), 0x3000);
        assert_eq!(check_fits(2, &cpu_plan, &ctx), Err(ComposeError { cpu: 2, needed: 5 }));
        let one = ContextPlan::from_pieces([ctx_piece(0x3000, CpuFilter::Any)]).unwrap();
        assert_eq!(check_fits(2, &cpu_plan, &one), Ok(()));
    }
}
