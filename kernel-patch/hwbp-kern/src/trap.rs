//! The #DB handler's logic: from DR6 to hit records and a verdict the
//! kernel's exception entry acts on.
//!
//! The kernel's `debug` exception entry calls
//! [`CpuDebugState::handle_debug_exception`] first, then:
//! - sets RFLAGS.RF in the interrupted frame when [`DebugVerdict::set_resume_flag`]
//!   (an exec breakpoint is a fault: without RF, `iretq` would re-execute
//!   the instruction and fault again, forever);
//! - runs its existing single-step path when [`DebugVerdict::single_step`];
//! - returns to the interrupted context when [`DebugVerdict::handled`];
//!   this is also the case for a kernel-mode access (a syscall copying a
//!   watched user buffer): the hit is recorded, nothing is killed;
//! - otherwise keeps its old behaviour for a #DB nobody claimed.

use crate::abi::{HIT_EXEC, HIT_KERNEL_MODE, HIT_STOPPED, HIT_WITH_SINGLE_STEP, HitRecord};
use crate::counts::SlotHits;
use crate::dr6::{self, Dr6Status};
use crate::compose::Composition;
use crate::piece::{Slot, Token};
use crate::plan::CpuId;
use crate::regs::DebugRegs;
use crate::ring::HitRing;
use crate::switch::CpuDebugState;

/// What the exception entry knows about the interrupted code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrapInfo {
    /// RIP of the interrupted frame.
    pub rip: u64,
    /// The exception came from CPL 3.
    pub user_mode: bool,
    /// The running context's id.
    pub context: u64,
    /// Monotonic nanoseconds.
    pub timestamp: u64,
}

/// What the handler found, for the exception entry to act on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DebugVerdict {
    /// Slots whose breakpoint fired and was recorded (or dropped on a full
    /// ring), bit i = slot i.
    pub hits: u8,
    /// Of those, records the full ring dropped.
    pub dropped: u8,
    /// B0-B3 bits for slots that hold nothing: ignored.
    pub spurious: u8,
    /// An exec breakpoint fired: set RF before returning.
    pub set_resume_flag: bool,
    /// DR6.BS: the kernel's single-step path must run.
    pub single_step: bool,
    /// DR6.BD or BT: causes this crate does not own.
    pub other: bool,
    /// A user-mode hit on a stopping piece: the kernel stops the current
    /// thread before it returns to user mode (its records carry
    /// [`HIT_STOPPED`]), until `hwbpd` resumes it.
    pub stop: bool,
}

impl DebugVerdict {
    /// Every cause of the #DB was a breakpoint of ours: return to the
    /// interrupted code (after setting RF if asked).
    pub const fn handled(&self) -> bool {
        self.hits != 0 && !self.single_step && !self.other
    }

    /// DR6 reported breakpoint conditions (B0-B3, ours or stale) and
    /// nothing else: no single step, no BD/BT. Such a #DB is never the
    /// interrupted code's fault, so the kernel returns to it instead of
    /// delivering an exception, whatever the B bits mapped to.
    pub const fn breakpoints_only(&self) -> bool {
        (self.hits | self.spurious) != 0 && !self.single_step && !self.other
    }
}

/// What the #DB handler reads of the loaded registers: the composition
/// itself (tests, the testbed, the simulated kernel), or what the switch
/// path published of it ([`crate::published::PublishedLoad`], the kernel).
pub trait LoadedView {
    fn used_slots(&self) -> u8;
    fn exec_slots(&self) -> u8;
    /// Slots whose piece stops the thread that hits it.
    fn stop_slots(&self) -> u8;
    /// Token and address of the piece loaded in `slot`.
    fn piece_in(&self, slot: Slot) -> Option<(Token, u64)>;
}

impl LoadedView for Composition {
    fn used_slots(&self) -> u8 {
        Composition::used_slots(self)
    }
    fn exec_slots(&self) -> u8 {
        Composition::exec_slots(self)
    }
    fn stop_slots(&self) -> u8 {
        Composition::stop_slots(self)
    }
    fn piece_in(&self, slot: Slot) -> Option<(Token, u64)> {
        self.slot(slot).map(|l| (l.token, l.piece.addr()))
    }
}

/// The #DB handler's logic on any [`LoadedView`] of CPU `cpu`: decode DR6,
/// count and record each loaded register that fired, clear DR6.
///
/// # Safety
/// The caller is the only producer on `ring` while this runs.
pub unsafe fn handle_debug_exception_in<V: LoadedView + ?Sized, R: DebugRegs, const N: usize>(
    loaded: &V,
    cpu: CpuId,
    regs: &mut R,
    ring: &HitRing<N>,
    hits: &SlotHits,
    info: &TrapInfo,
) -> DebugVerdict {
    let raw = regs.read_dr6();
    // B bits may be set for disabled slots (SDM 18.2.3): only slots we
    // loaded count.
    let used = loaded.used_slots();
    let exec = loaded.exec_slots();
    let ours = Dr6Status::decode(raw).slots & used;
    // Only user code is stopped: a kernel-mode access (a syscall copying a
    // watched buffer) cannot be parked half-way, so it is recorded only.
    let mut stopping = if info.user_mode { ours & loaded.stop_slots() } else { 0 };
    // A stopped thread runs again only when hwbpd, told by its record,
    // resumes it: without room for every record of this #DB, stopping
    // could leave it stopped with nobody knowing. The consumer only frees
    // room, so what this producer sees free stays free.
    if stopping != 0 && ring.capacity().saturating_sub(ring.len()) < ours.count_ones() as usize {
        stopping = 0;
    }
    let mut fired = ours;
    while let Some(slot) = Slot::new(fired.trailing_zeros() as usize) {
        fired &= !slot.bit();
        hits.record(slot);
    }
    // SAFETY: single producer on `ring`, from this function's contract.
    let dropped = if ours == 0 { 0 } else { unsafe { record_hits(loaded, cpu, ours, exec, stopping, raw, ring, info) } };
    // The processor never clears B0-B3 or BS itself.
    regs.write_dr6(dr6::CLEAR);

    let status = Dr6Status::decode(raw);
    DebugVerdict {
        hits: ours,
        dropped,
        spurious: status.slots & !used,
        set_resume_flag: ours & exec != 0,
        single_step: status.single_step,
        other: status.debug_register_access || status.task_switch,
        stop: stopping != 0,
    }
}

/// Queue one record per slot in `fired`; returns the slots whose record
/// the full ring dropped.
///
/// # Safety
/// As for [`handle_debug_exception_in`].
#[inline(always)]
unsafe fn record_hits<V: LoadedView + ?Sized, const N: usize>(
    loaded: &V,
    cpu: CpuId,
    fired: u8,
    exec: u8,
    stopping: u8,
    dr6: u64,
    ring: &HitRing<N>,
    info: &TrapInfo,
) -> u8 {
    let mut flags = if info.user_mode { 0 } else { HIT_KERNEL_MODE };
    if Dr6Status::decode(dr6).single_step {
        flags |= HIT_WITH_SINGLE_STEP;
    }
    let mut dropped = 0;
    // Visit only the slots that fired: usually exactly one.
    let mut pending = fired;
    while let Some(slot) = Slot::new(pending.trailing_zeros() as usize) {
        pending &= !slot.bit();
        let Some((token, addr)) = loaded.piece_in(slot) else { continue };
        let record = HitRecord {
            token,
            rip: info.rip,
            addr,
            context: info.context,
            timestamp: info.timestamp,
            cpu,
            flags: flags
                | if exec & slot.bit() != 0 { HIT_EXEC } else { 0 }
                | if stopping != 0 { HIT_STOPPED } else { 0 },
        };
        // SAFETY: single producer, from this function's contract.
        if !unsafe { ring.push(record) } {
            dropped |= slot.bit();
        }
    }
    dropped
}

impl CpuDebugState {
    /// Decode DR6, queue a hit record for each slot that fired, clear DR6.
    ///
    /// Allocation-free and lock-free: safe to run in the #DB entry, which
    /// may interrupt anything on this CPU.
    ///
    /// Takes `&self`: the handler only reads the mirror, so the kernel can
    /// call it through a shared reference even when the #DB interrupted this
    /// CPU's own switch path (which holds the only `&mut`).
    ///
    /// # Safety
    /// The caller is the only producer on `ring` while this runs: the ring
    /// belongs to this CPU and only this CPU's #DB handler pushes to it.
    pub unsafe fn handle_debug_exception<R: DebugRegs, const N: usize>(
        &self,
        regs: &mut R,
        ring: &HitRing<N>,
        info: &TrapInfo,
    ) -> DebugVerdict {
        // SAFETY: forwarded.
        unsafe { self.handle_debug_exception_counting(regs, ring, &SlotHits::new(), info) }
    }

    /// [`handle_debug_exception`](Self::handle_debug_exception), and one
    /// more hit in `hits` for every register that fired, whether or not
    /// its record fits in the ring: counts never depend on records.
    ///
    /// # Safety
    /// As for `handle_debug_exception`.
    pub unsafe fn handle_debug_exception_counting<R: DebugRegs, const N: usize>(
        &self,
        regs: &mut R,
        ring: &HitRing<N>,
        hits: &SlotHits,
        info: &TrapInfo,
    ) -> DebugVerdict {
        // SAFETY: forwarded.
        unsafe { handle_debug_exception_in(self.loaded(), self.cpu(), regs, ring, hits, info) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::piece::{Access, Len, Piece};
    use crate::plan::{ContextPiece, ContextPlan, CpuFilter, CpuPiece, CpuPlan};
    use crate::regs::RegisterFile;

    const USER: TrapInfo = TrapInfo { rip: 0x4000, user_mode: true, context: 7, timestamp: 99 };

    fn armed() -> (CpuDebugState, RegisterFile) {
        let mut cpu = CpuDebugState::new(1);
        let mut regs = RegisterFile::RESET;
        cpu.set_plan(
            CpuPlan::from_pieces([CpuPiece { piece: Piece::new(0x5000, Len::One, Access::Exec).unwrap(), token: 50 }])
                .unwrap(),
        );
        let plan = ContextPlan::from_pieces([ContextPiece {
            piece: Piece::new(0x1000, Len::Eight, Access::Write).unwrap(),
            token: 10,
            cpu: CpuFilter::Any, stop: false,
        }])
        .unwrap();
        cpu.switch_to(&mut regs, Some(&plan));
        (cpu, regs)
    }

    fn drain<const N: usize>(ring: &HitRing<N>) -> std::vec::Vec<HitRecord> {
        std::iter::from_fn(|| unsafe { ring.pop() }).collect()
    }

    #[test]
    fn a_data_hit_is_recorded_with_its_token_and_dr6_is_cleared() {
        let (cpu, mut regs) = armed();
        let ring = HitRing::<8>::new();
        regs.dr6 = dr6::CLEAR | 0b0010;
        let v = unsafe { cpu.handle_debug_exception(&mut regs, &ring, &USER) };
        assert_eq!(v, DebugVerdict { hits: 0b0010, ..DebugVerdict::default() });
        assert!(v.handled());
        assert_eq!(regs.dr6, dr6::CLEAR);
        let hits = drain(&ring);
        assert_eq!(hits, vec![HitRecord { token: 10, rip: 0x4000, addr: 0x1000, context: 7, timestamp: 99, cpu: 1, flags: 0 }]);
    }

    /// A context plan with one stopping write watch (token 20) beside the
    /// non-stopping one of [`armed`].
    fn armed_with_stop() -> (CpuDebugState, RegisterFile) {
        let mut cpu = CpuDebugState::new(1);
        let mut regs = RegisterFile::RESET;
        let piece = |addr, token, stop| ContextPiece {
            piece: Piece::new(addr, Len::Eight, Access::Write).unwrap(),
            token,
            cpu: CpuFilter::Any,
            stop,
        };
        let plan = ContextPlan::from_pieces([piece(0x1000, 10, false), piece(0x2000, 20, true)]).unwrap();
        cpu.switch_to(&mut regs, Some(&plan));
        (cpu, regs)
    }

    #[test]
    fn a_user_hit_on_a_stopping_piece_stops_the_thread() {
        let (cpu, mut regs) = armed_with_stop();
        let ring = HitRing::<8>::new();
        regs.dr6 = dr6::CLEAR | 0b0010;
        let v = unsafe { cpu.handle_debug_exception(&mut regs, &ring, &USER) };
        assert!(v.stop && v.handled());
        assert_eq!(drain(&ring)[0].flags, HIT_STOPPED);

        regs.dr6 = dr6::CLEAR | 0b0001;
        let v = unsafe { cpu.handle_debug_exception(&mut regs, &ring, &USER) };
        assert!(!v.stop, "the other piece does not stop");
        assert_eq!(drain(&ring)[0].flags, 0);

        // Both fire in one #DB: the thread stops, and both records say so.
        regs.dr6 = dr6::CLEAR | 0b0011;
        let v = unsafe { cpu.handle_debug_exception(&mut regs, &ring, &USER) };
        assert!(v.stop);
        assert!(drain(&ring).iter().all(|r| r.flags == HIT_STOPPED));
    }

    #[test]
    fn a_stop_whose_record_cannot_be_queued_does_not_stop() {
        let (cpu, mut regs) = armed_with_stop();
        let ring = HitRing::<2>::new();
        let filler = HitRecord { token: 1, ..HitRecord::ZERO };
        assert!(unsafe { ring.push(filler) });
        regs.dr6 = dr6::CLEAR | 0b0011;
        let v = unsafe { cpu.handle_debug_exception(&mut regs, &ring, &USER) };
        assert!(!v.stop, "two records, room for one: nobody would hear of the stop");
        regs.dr6 = dr6::CLEAR | 0b0010;
        let v = unsafe { cpu.handle_debug_exception(&mut regs, &ring, &USER) };
        assert!(!v.stop, "a full ring");
        assert_eq!(v.dropped, 0b0010);
        let _ = drain(&ring);
        let v = unsafe { cpu.handle_debug_exception(&mut regs, &ring, &USER) };
        assert!(!v.stop, "DR6 was cleared: nothing fired");
        regs.dr6 = dr6::CLEAR | 0b0010;
        let v = unsafe { cpu.handle_debug_exception(&mut regs, &ring, &USER) };
        assert!(v.stop, "room again");
    }

    #[test]
    fn a_kernel_mode_hit_on_a_stopping_piece_is_only_recorded() {
        let (cpu, mut regs) = armed_with_stop();
        let ring = HitRing::<8>::new();
        regs.dr6 = dr6::CLEAR | 0b0010;
        let kernel = TrapInfo { user_mode: false, ..USER };
        let v = unsafe { cpu.handle_debug_exception(&mut regs, &ring, &kernel) };
        assert!(!v.stop && v.handled());
        assert_eq!(drain(&ring)[0].flags, HIT_KERNEL_MODE);
    }

    #[test]
    fn the_published_view_reports_stopping_slots() {
        let (mut cpu, mut regs) = armed_with_stop();
        static VIEW: crate::published::PublishedLoad = crate::published::PublishedLoad::new();
        cpu.publish_to(&VIEW);
        cpu.reload(&mut regs, None);
        let ring = HitRing::<8>::new();
        assert_eq!(VIEW.stop_slots(), 0, "nothing stops once the context is gone");
        let (mut cpu, mut regs) = armed_with_stop();
        cpu.publish_to(&VIEW);
        let plan = ContextPlan::from_pieces([ContextPiece {
            piece: Piece::new(0x2000, Len::Eight, Access::Write).unwrap(),
            token: 20,
            cpu: CpuFilter::Any,
            stop: true,
        }])
        .unwrap();
        cpu.switch_to(&mut regs, Some(&plan));
        assert_eq!(VIEW.stop_slots(), 0b0001);
        regs.dr6 = dr6::CLEAR | 0b0001;
        let v = unsafe { handle_debug_exception_in(&VIEW, 1, &mut regs, &ring, &SlotHits::new(), &USER) };
        assert!(v.stop);
    }

    #[test]
    fn an_exec_hit_asks_for_rf() {
        let (cpu, mut regs) = armed();
        let ring = HitRing::<8>::new();
        regs.dr6 = dr6::CLEAR | 0b0001;
        let v = unsafe { cpu.handle_debug_exception(&mut regs, &ring, &USER) };
        assert!(v.set_resume_flag);
        assert_eq!(drain(&ring)[0].flags, HIT_EXEC);
    }

    #[test]
    fn single_step_and_breakpoint_in_one_exception_are_both_reported() {
        let (cpu, mut regs) = armed();
        let ring = HitRing::<8>::new();
        regs.dr6 = dr6::CLEAR | dr6::BS | 0b0010;
        let v = unsafe { cpu.handle_debug_exception(&mut regs, &ring, &USER) };
        assert!(v.single_step);
        assert_eq!(v.hits, 0b0010);
        assert!(!v.handled(), "the single-step path must still run");
        assert_eq!(drain(&ring)[0].flags, HIT_WITH_SINGLE_STEP);
    }

    #[test]
    fn b_bits_of_unloaded_slots_are_ignored() {
        let (cpu, mut regs) = armed();
        let ring = HitRing::<8>::new();
        regs.dr6 = dr6::CLEAR | 0b1100;
        let v = unsafe { cpu.handle_debug_exception(&mut regs, &ring, &USER) };
        assert_eq!(v.spurious, 0b1100);
        assert_eq!(v.hits, 0);
        assert!(!v.handled());
        assert!(ring.is_empty());
    }

    #[test]
    fn only_breakpoint_causes_make_a_breakpoint_only_exception() {
        let (cpu, mut regs) = armed();
        let ring = HitRing::<8>::new();
        let mut verdict_for = |dr6_bits: u64| {
            regs.dr6 = dr6::CLEAR | dr6_bits;
            unsafe { cpu.handle_debug_exception(&mut regs, &ring, &USER) }
        };
        assert!(verdict_for(0b0010).breakpoints_only(), "our hit");
        assert!(verdict_for(0b1000).breakpoints_only(), "a stale B bit alone is no fault of the context");
        assert!(!verdict_for(0b1000).handled(), "but nothing was recorded for it");
        assert!(!verdict_for(dr6::BS | 0b0010).breakpoints_only(), "a single step still needs its path");
        assert!(!verdict_for(dr6::BD).breakpoints_only());
        assert!(!verdict_for(0).breakpoints_only(), "an empty DR6 (icebp) is not ours");
    }

    #[test]
    fn a_kernel_mode_hit_is_recorded_and_handled() {
        let (cpu, mut regs) = armed();
        let ring = HitRing::<8>::new();
        regs.dr6 = dr6::CLEAR | 0b0010;
        let info = TrapInfo { user_mode: false, ..USER };
        let v = unsafe { cpu.handle_debug_exception(&mut regs, &ring, &info) };
        assert!(v.handled());
        assert_eq!(drain(&ring)[0].flags, HIT_KERNEL_MODE);
    }

    #[test]
    fn a_full_ring_drops_and_says_so() {
        let (cpu, mut regs) = armed();
        let ring = HitRing::<1>::new();
        regs.dr6 = dr6::CLEAR | 0b0011;
        let v = unsafe { cpu.handle_debug_exception(&mut regs, &ring, &USER) };
        assert_eq!(v.hits, 0b0011);
        assert_eq!(v.dropped, 0b0010);
        assert_eq!(ring.dropped(), 1);
    }

    #[test]
    fn every_fired_register_is_counted_even_when_the_ring_drops_its_record() {
        let (cpu, mut regs) = armed();
        let ring = HitRing::<1>::new();
        let hits = SlotHits::new();
        for _ in 0..5 {
            regs.dr6 = dr6::CLEAR | 0b0010;
            unsafe { cpu.handle_debug_exception_counting(&mut regs, &ring, &hits, &USER) };
        }
        regs.dr6 = dr6::CLEAR | 0b1100;
        unsafe { cpu.handle_debug_exception_counting(&mut regs, &ring, &hits, &USER) };
        assert_eq!(ring.dropped(), 4);
        assert_eq!(hits.take(Slot::new(1).unwrap()), 5, "all five hits, though four records were dropped");
        assert!(!hits.any(), "stale B bits of unloaded registers count nothing");
    }

    #[test]
    fn the_published_view_gives_the_same_records_as_the_state_after_every_change() {
        let published: &'static crate::PublishedLoad = std::boxed::Box::leak(std::boxed::Box::new(crate::PublishedLoad::new()));
        let (mut cpu, mut regs) = armed();
        cpu.publish_to(published);
        let other = ContextPlan::from_pieces([ContextPiece {
            piece: Piece::new(0x7000, Len::Four, Access::ReadWrite).unwrap(),
            token: 77,
            cpu: CpuFilter::Any, stop: false,
        }])
        .unwrap();
        for step in 0..4 {
            match step {
                1 => cpu.switch_to(&mut regs, Some(&other)),
                2 => cpu.switch_to(&mut regs, None),
                3 => cpu.forget_loaded(),
                _ => {}
            }
            for bits in 0..16u64 {
                let (a, b) = (HitRing::<8>::new(), HitRing::<8>::new());
                regs.dr6 = dr6::CLEAR | bits;
                let va = unsafe { handle_debug_exception_in(cpu.loaded(), cpu.cpu(), &mut regs, &a, &SlotHits::new(), &USER) };
                regs.dr6 = dr6::CLEAR | bits;
                let vb = unsafe { handle_debug_exception_in(published, cpu.cpu(), &mut regs, &b, &SlotHits::new(), &USER) };
                assert_eq!(va, vb, "step {step}, B bits {bits:#b}");
                assert_eq!(drain(&a), drain(&b), "step {step}, B bits {bits:#b}");
                assert_eq!(published.dr7(), cpu.loaded().dr7());
            }
        }
    }
}
