//! Per-CPU debug-register state and the lazy switch.
//!
//! [`CpuDebugState`] is the CPU's mirror of what its debug registers hold,
//! plus the CPU's own plan. The kernel calls [`CpuDebugState::switch_to`]
//! on every context switch with the next context's plan. The rules:
//!
//! - **Lazy**: when neither the previous nor the next context has pieces
//!   and the CPU's plan did not change, nothing is computed and no register
//!   is written.
//! - **Unchanged**: when the next context's plan is the one loaded last
//!   (same version stamp), or its pieces on this CPU are the ones loaded
//!   (another thread of the same process), and the CPU's plan did not
//!   change, nothing is composed either.
//! - **Minimal**: otherwise the new composition is compared with the mirror
//!   and only the registers that differ are written.
//! - **Never half-loaded**: DR7 is written first to disable every slot that
//!   changes, then the address registers, then DR7 once more to enable the
//!   new slots, so no slot is ever enabled with an address it was not meant
//!   to have.
//!
//! The state belongs to one CPU and is only touched by that CPU with
//! interrupts disabled (switch) or from its #DB handler.

use crate::NUM_SLOTS;
use crate::compose::{Composition, Origin, compose};
use crate::dr7;
use crate::piece::Slot;
use crate::plan::{ContextPlan, CpuId, CpuPlan};
use crate::published::PublishedLoad;
use crate::regs::DebugRegs;

/// What the switch path has done on this CPU, since boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwitchStats {
    /// Calls to `switch_to`.
    pub switches: u64,
    /// Switches that took the lazy path (no composition, no write).
    pub lazy: u64,
    /// Context pieces that found no free register (a plan that did not fit).
    pub refused: u64,
    /// Switches to a plan whose composition is the one loaded (the same
    /// plan again, or equal pieces on this CPU; CPU plan unchanged): nothing
    /// recomposed, nothing written.
    pub unchanged: u64,
}

#[derive(Debug)]
pub struct CpuDebugState {
    cpu: CpuId,
    plan: CpuPlan,
    /// The plan changed since it was last loaded.
    plan_dirty: bool,
    /// What the registers hold (the intention; DR6 is the fact).
    loaded: Composition,
    /// Contents of DR0-DR3, including stale values of disabled slots, so an
    /// address that is already there is not written again.
    hw_addr: [u64; NUM_SLOTS],
    hw_dr7: u64,
    /// Stamp of the context plan `loaded` was composed from (0: none).
    loaded_stamp: u64,
    /// Where the #DB handler reads the loaded registers (the kernel's
    /// per-CPU block), if anywhere.
    published: Option<&'static PublishedLoad>,
    stats: SwitchStats,
}

impl CpuDebugState {
    /// State for a CPU whose debug registers were just disarmed with
    /// [`CpuDebugState::reset`] (or hold their reset values).
    pub const fn new(cpu: CpuId) -> Self {
        CpuDebugState {
            cpu,
            plan: CpuPlan::EMPTY,
            plan_dirty: false,
            loaded: Composition::EMPTY,
            hw_addr: [0; NUM_SLOTS],
            hw_dr7: dr7::DISARMED,
            loaded_stamp: 0,
            published: None,
            stats: SwitchStats { switches: 0, lazy: 0, refused: 0, unchanged: 0 },
        }
    }

    /// Bring the hardware to the mirror's idea of "nothing armed": DR7 = 0,
    /// DR6 clear. Run once per CPU at bring-up (BSP and every AP).
    pub fn reset<R: DebugRegs>(&mut self, regs: &mut R) {
        regs.write_dr7(dr7::DISARMED);
        regs.write_dr6(crate::dr6::CLEAR);
        self.forget_loaded();
    }

    pub const fn cpu(&self) -> CpuId {
        self.cpu
    }

    /// Publish every change of the loaded registers to `published` from now
    /// on (before DR7 enables a changed register), for a #DB handler that
    /// must not read this state while the switch path holds it.
    pub fn publish_to(&mut self, published: &'static PublishedLoad) {
        published.publish(&self.loaded);
        self.published = Some(published);
    }

    /// The hardware was disarmed behind the mirror's back (DR7 = 0: the #DB
    /// entry clears it, and a path that leaves without putting it back
    /// calls this). The next switch or reload composes afresh and writes
    /// every register it needs.
    pub fn forget_loaded(&mut self) {
        self.hw_dr7 = dr7::DISARMED;
        self.loaded = Composition::EMPTY;
        if let Some(p) = self.published {
            p.publish(&self.loaded);
        }
        self.loaded_stamp = 0;
        self.plan_dirty = !self.plan.is_empty();
    }

    pub const fn plan(&self) -> &CpuPlan {
        &self.plan
    }

    /// Replace the CPU's plan. It reaches the registers at the next
    /// [`switch_to`](Self::switch_to) or [`reload`](Self::reload).
    pub fn set_plan(&mut self, plan: CpuPlan) {
        if plan != self.plan {
            self.plan = plan;
            self.plan_dirty = true;
        }
    }

    /// What the registers hold.
    pub const fn loaded(&self) -> &Composition {
        &self.loaded
    }

    pub const fn stats(&self) -> SwitchStats {
        self.stats
    }

    /// The DR7 value the registers hold outside the switch path. The #DB
    /// entry clears DR7 while it runs (so nothing it touches can trap) and
    /// puts this value back before returning to user mode: in user mode the
    /// hardware always holds what the mirror says.
    pub const fn dr7(&self) -> u64 {
        self.hw_dr7
    }

    /// Load the registers for `next` (None: a context without debug state).
    pub fn switch_to<R: DebugRegs>(&mut self, regs: &mut R, next: Option<&ContextPlan>) {
        self.stats.switches = self.stats.switches.saturating_add(1);
        let next_has_pieces = next.is_some_and(|p| !p.is_empty());
        if !next_has_pieces && !self.plan_dirty && !self.loaded.has_context_pieces() {
            self.stats.lazy = self.stats.lazy.saturating_add(1);
            return;
        }
        // The plan loaded last, again (the same context back, or a copy of
        // its plan), or a plan whose pieces on this CPU are the ones loaded
        // (another thread of the same process): the composition would come
        // out the same.
        if let Some(plan) = next
            && !self.plan_dirty
            && ((plan.stamp() != 0 && plan.stamp() == self.loaded_stamp) || self.loaded_context_is(plan))
        {
            self.loaded_stamp = plan.stamp();
            self.stats.unchanged = self.stats.unchanged.saturating_add(1);
            return;
        }
        self.reload(regs, next);
    }

    /// Recompose for `current` (the running context's plan) and load what
    /// differs. Used after a plan of the running context or of this CPU
    /// changed.
    pub fn reload<R: DebugRegs>(&mut self, regs: &mut R, current: Option<&ContextPlan>) {
        let target = compose(self.cpu, &self.plan, current);
        self.stats.refused = self.stats.refused.saturating_add(u64::from(target.refused()));
        self.load(regs, target);
        self.loaded_stamp = current.map_or(0, ContextPlan::stamp);
        self.plan_dirty = false;
    }

    /// Whether composing `plan` beside the unchanged CPU plan would give
    /// exactly what is loaded: `compose` puts the pieces that apply on this
    /// CPU into the registers the CPU plan leaves free, lowest first, in plan
    /// order, so the loaded context pieces (in register order) must be those
    /// pieces, with the same tokens, and none may have been refused.
    fn loaded_context_is(&self, plan: &ContextPlan) -> bool {
        if self.loaded.refused() != 0 {
            return false;
        }
        let mut loaded = self.loaded.iter().filter(|(_, l)| l.origin == Origin::Context).map(|(_, l)| l);
        let same = plan.on_cpu(self.cpu).all(|p| loaded.next().is_some_and(|l| l.piece == p.piece && l.token == p.token && l.stop == p.stop));
        same && loaded.next().is_none()
    }

    /// Make the registers hold `target`, writing only what differs.
    fn load<R: DebugRegs>(&mut self, regs: &mut R, target: Composition) {
        // Slots whose register contents stay as they are. A changed token
        // alone needs no write: tokens live in the mirror only.
        let unchanged = Slot::ALL.into_iter().fold(0u8, |mask, slot| {
            let same = match (self.loaded.slot(slot), target.slot(slot)) {
                (Some(a), Some(b)) => a.piece == b.piece,
                (None, None) => true,
                _ => false,
            };
            if same { mask | slot.bit() } else { mask }
        });

        // 1. Disarm every slot that changes before touching its address.
        let unchanged_fields = Slot::ALL
            .into_iter()
            .filter(|s| unchanged & s.bit() != 0)
            .fold(0, |m, s| m | dr7::slot_mask(s));
        let kept_dr7 = target.dr7() & unchanged_fields;
        let kept_dr7 = if kept_dr7 == 0 { dr7::DISARMED } else { kept_dr7 | dr7::GLOBAL_EXACT };
        if self.hw_dr7 & !kept_dr7 & enable_bits() != 0 {
            regs.write_dr7(kept_dr7);
            self.hw_dr7 = kept_dr7;
        }

        // 2. Addresses of the slots that will be armed, where they differ.
        for (slot, loaded) in target.iter() {
            if let Some(hw) = self.hw_addr.get_mut(slot.index())
                && *hw != loaded.piece.addr()
            {
                regs.write_addr(slot, loaded.piece.addr());
                *hw = loaded.piece.addr();
            }
        }

        // 3. The mirror before arming, so a #DB raised the moment DR7 is
        //    written finds its token.
        self.loaded = target;
        if let Some(p) = self.published {
            p.publish(&target);
        }
        let new_dr7 = target.dr7();
        if new_dr7 != self.hw_dr7 {
            regs.write_dr7(new_dr7);
            self.hw_dr7 = new_dr7;
        }
        debug_assert_eq!(dr7::enabled_slots(self.hw_dr7), self.loaded.used_slots());
    }
}

const fn enable_bits() -> u64 {
    0xff
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::piece::{Access, Len, Piece};
    use crate::plan::{ContextPiece, CpuFilter, CpuPiece};
    use crate::regs::{Counting, RegisterFile, WriteCounts};

    fn ctx(addrs: &[u64]) -> ContextPlan {
        ContextPlan::from_pieces(addrs.iter().map(|&a| ContextPiece {
            piece: Piece::new(a, Len::Eight, Access::Write).unwrap(),
            token: a,
            cpu: CpuFilter::Any, stop: false,
        }))
        .unwrap()
    }

    fn cpu_plan(addrs: &[u64]) -> CpuPlan {
        CpuPlan::from_pieces(addrs.iter().map(|&a| CpuPiece {
            piece: Piece::new(a, Len::Four, Access::ReadWrite).unwrap(),
            token: a,
        }))
        .unwrap()
    }

    fn setup() -> (CpuDebugState, Counting<RegisterFile>) {
        (CpuDebugState::new(0), Counting::new(RegisterFile::RESET))
    }

    fn writes_of(regs: &mut Counting<RegisterFile>) -> WriteCounts {
        core::mem::take(&mut regs.writes)
    }

    #[test]
    fn switches_between_contexts_without_pieces_write_nothing() {
        let (mut cpu, mut regs) = setup();
        let empty = ContextPlan::EMPTY;
        for i in 0..100 {
            cpu.switch_to(&mut regs, if i % 2 == 0 { None } else { Some(&empty) });
        }
        assert_eq!(regs.writes, WriteCounts::default());
        assert_eq!(cpu.stats().lazy, 100);
    }

    #[test]
    fn arming_writes_addresses_then_dr7_once() {
        let (mut cpu, mut regs) = setup();
        let a = ctx(&[0x1000, 0x2000]);
        cpu.switch_to(&mut regs, Some(&a));
        assert_eq!(writes_of(&mut regs), WriteCounts { addr: 2, dr6: 0, dr7: 1 });
        assert_eq!(regs.inner.addr[..2], [0x1000, 0x2000]);
        assert_eq!(regs.inner.dr7, cpu.loaded().dr7());
        // Same plan again (another thread of the same process): nothing.
        cpu.switch_to(&mut regs, Some(&a));
        assert_eq!(writes_of(&mut regs), WriteCounts::default());
    }

    #[test]
    fn leaving_a_context_with_pieces_disarms_with_one_dr7_write() {
        let (mut cpu, mut regs) = setup();
        cpu.switch_to(&mut regs, Some(&ctx(&[0x1000])));
        writes_of(&mut regs);
        cpu.switch_to(&mut regs, None);
        assert_eq!(writes_of(&mut regs), WriteCounts { addr: 0, dr6: 0, dr7: 1 });
        assert_eq!(regs.inner.dr7, 0);
        // Now both sides are empty again: lazy.
        cpu.switch_to(&mut regs, None);
        assert_eq!(writes_of(&mut regs), WriteCounts::default());
    }

    #[test]
    fn coming_back_to_the_same_addresses_rewrites_only_dr7() {
        let (mut cpu, mut regs) = setup();
        let a = ctx(&[0x1000, 0x2000]);
        cpu.switch_to(&mut regs, Some(&a));
        cpu.switch_to(&mut regs, None);
        writes_of(&mut regs);
        cpu.switch_to(&mut regs, Some(&a));
        assert_eq!(writes_of(&mut regs), WriteCounts { addr: 0, dr6: 0, dr7: 1 }, "addresses are still there");
    }

    #[test]
    fn a_changed_slot_is_disarmed_before_its_address_moves() {
        let (mut cpu, mut regs) = setup();
        cpu.switch_to(&mut regs, Some(&ctx(&[0x1000, 0x2000])));
        writes_of(&mut regs);

        // Record the order of writes with a tiny log.
        #[derive(Default)]
        struct Log(std::vec::Vec<(char, u64)>, RegisterFile);
        impl DebugRegs for Log {
            fn read_dr6(&mut self) -> u64 {
                self.1.dr6
            }
            fn write_dr6(&mut self, v: u64) {
                self.0.push(('6', v));
            }
            fn write_addr(&mut self, s: Slot, a: u64) {
                self.0.push((char::from(b'0' + s.index() as u8), a));
            }
            fn write_dr7(&mut self, v: u64) {
                self.0.push(('7', v));
            }
        }
        let mut log = Log::default();
        let b = ctx(&[0x1000, 0x3000]);
        cpu.switch_to(&mut log, Some(&b));
        let dr7_slot0_only = dr7::encode_slot(Slot::new(0).unwrap(), &b.iter().next().unwrap().piece) | dr7::GLOBAL_EXACT;
        assert_eq!(log.0, vec![('7', dr7_slot0_only), ('1', 0x3000), ('7', cpu.loaded().dr7())]);
    }

    #[test]
    fn cpu_plan_change_is_applied_at_the_next_switch_even_between_empty_contexts() {
        let (mut cpu, mut regs) = setup();
        cpu.set_plan(cpu_plan(&[0xffff_8000_0000_0000]));
        assert_eq!(regs.writes, WriteCounts::default(), "set_plan alone touches no register");
        cpu.switch_to(&mut regs, None);
        assert_eq!(writes_of(&mut regs), WriteCounts { addr: 1, dr6: 0, dr7: 1 });
        // The CPU piece stays through switches among contexts without pieces…
        for _ in 0..10 {
            cpu.switch_to(&mut regs, None);
        }
        assert_eq!(writes_of(&mut regs), WriteCounts::default());
        // …and through a context with pieces, which fills the other slots.
        cpu.switch_to(&mut regs, Some(&ctx(&[0x1000])));
        assert_eq!(writes_of(&mut regs), WriteCounts { addr: 1, dr6: 0, dr7: 1 });
        assert_eq!(regs.inner.addr[0], 0xffff_8000_0000_0000);
        assert_eq!(regs.inner.addr[1], 0x1000);
    }

    #[test]
    fn a_scripted_sequence_of_switches_costs_exactly_the_expected_writes() {
        // (plan, expected addr writes, expected dr7 writes)
        let (mut cpu, mut regs) = setup();
        let a = ctx(&[0x1000]);
        let b = ctx(&[0x2000, 0x3000]);
        let steps: [(Option<&ContextPlan>, u64, u64); 8] = [
            (None, 0, 0),
            (Some(&a), 1, 1),    // arm DR0
            (Some(&a), 0, 0),    // same plan
            (Some(&b), 2, 2),    // disarm DR0, write DR0+DR1, arm
            (None, 0, 1),        // disarm
            (None, 0, 0),        // lazy
            (Some(&b), 0, 1),    // addresses still loaded
            (Some(&a), 1, 2),    // DR0 moves, DR1 goes
        ];
        for (i, (plan, addr, dr7)) in steps.into_iter().enumerate() {
            cpu.switch_to(&mut regs, plan);
            let w = writes_of(&mut regs);
            assert_eq!((w.addr, w.dr7), (addr, dr7), "step {i}");
            assert_eq!(regs.inner.dr7, cpu.loaded().dr7(), "step {i}");
        }
    }

    #[test]
    fn the_plan_loaded_last_is_not_recomposed_but_an_equal_new_one_is() {
        let (mut cpu, mut regs) = setup();
        let a = ctx(&[0x1000, 0x2000]);
        cpu.switch_to(&mut regs, Some(&a));
        writes_of(&mut regs);
        let copy = a;
        cpu.switch_to(&mut regs, Some(&copy));
        assert_eq!(cpu.stats().unchanged, 1, "a copy keeps the stamp");
        // Built anew with the same pieces (another thread's plan): another
        // stamp, but the loaded pieces match, so nothing is composed.
        let rebuilt = ctx(&[0x1000, 0x2000]);
        assert_eq!(rebuilt, a);
        assert_ne!(rebuilt.stamp(), a.stamp());
        cpu.switch_to(&mut regs, Some(&rebuilt));
        assert_eq!(cpu.stats().unchanged, 2);
        assert_eq!(writes_of(&mut regs), WriteCounts::default());
        // The same addresses in another order, or with other tokens, are
        // another composition.
        let reordered = ctx(&[0x2000, 0x1000]);
        cpu.switch_to(&mut regs, Some(&reordered));
        assert_eq!(cpu.stats().unchanged, 2);
        assert_eq!(cpu.loaded().addr(Slot::new(0).unwrap()), 0x2000);
        cpu.switch_to(&mut regs, Some(&rebuilt));
        // A CPU plan change forces the recomposition even for the same plan.
        cpu.set_plan(cpu_plan(&[0x100]));
        cpu.switch_to(&mut regs, Some(&rebuilt));
        assert_eq!(cpu.stats().unchanged, 2);
        assert_eq!(cpu.loaded().used_slots(), 0b0111);
        // Changing a plan in place renews its stamp.
        let mut grown = rebuilt;
        grown
            .push(ContextPiece { piece: Piece::new(0x3000, Len::One, Access::Write).unwrap(), token: 3, cpu: CpuFilter::Any, stop: false })
            .unwrap();
        cpu.switch_to(&mut regs, Some(&grown));
        assert_eq!(cpu.loaded().used_slots(), 0b1111);
    }

    #[test]
    fn overflowing_plans_are_counted_as_refused() {
        let (mut cpu, mut regs) = setup();
        cpu.set_plan(cpu_plan(&[0x100, 0x200, 0x300]));
        cpu.switch_to(&mut regs, Some(&ctx(&[0x1000, 0x2000])));
        assert_eq!(cpu.stats().refused, 1);
        assert_eq!(cpu.loaded().used_slots(), 0b1111);
    }

    #[test]
    fn reset_disarms_and_marks_a_cpu_plan_for_reloading() {
        let (mut cpu, mut regs) = setup();
        cpu.set_plan(cpu_plan(&[0x100]));
        cpu.switch_to(&mut regs, None);
        cpu.reset(&mut regs);
        assert_eq!(regs.inner.dr7, 0);
        assert!(cpu.loaded().is_empty());
        cpu.switch_to(&mut regs, None);
        assert_eq!(cpu.loaded().used_slots(), 0b0001);
    }

    #[test]
    fn after_the_hardware_was_disarmed_behind_its_back_the_same_plan_is_loaded_again() {
        let (mut cpu, mut regs) = setup();
        let a = ctx(&[0x1000]);
        cpu.switch_to(&mut regs, Some(&a));
        let armed = regs.inner.dr7;
        // What the #DB entry does when it leaves without restoring DR7.
        regs.inner.dr7 = 0;
        cpu.forget_loaded();
        assert_eq!(cpu.dr7(), 0);
        writes_of(&mut regs);
        cpu.switch_to(&mut regs, Some(&a));
        assert_eq!(regs.inner.dr7, armed, "the same plan must be written again, not skipped as unchanged");
        assert_eq!(writes_of(&mut regs).dr7, 1);
    }
}
