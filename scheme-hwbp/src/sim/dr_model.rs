//! The x86 debug-register model: what a CPU does with DR0-DR3 and DR7 when
//! an instruction runs. This is the only place the simulated kernel knows
//! debug-register semantics, and it is checked against the shared vector
//! table `tests/vectors/dr-conformance.txt`, which the QEMU testbed runs on
//! emulated hardware.
//!
//! The model reads the *raw* register values (a [`RegisterFile`]), never the
//! plans that produced them, so a wrong encoding in the kernel crate shows
//! up here as a missed or spurious hit.
//!
//! Rules (Intel SDM Vol. 3B, 18.2 and 18.3.1):
//! - slot i is armed when L_i or G_i is set in DR7;
//! - R/W_i: 00 instruction fetch, 01 data write, 11 data read or write,
//!   10 I/O (never matches a memory access);
//! - LEN_i: 00 = 1, 01 = 2, 11 = 4, 10 = 8 bytes (64-bit mode);
//! - a data slot matches an access that overlaps `[A & !(L-1), +L)`: the
//!   hardware ignores the low address bits, it does not check alignment;
//! - an instruction slot matches an instruction that starts at A exactly
//!   (LEN must be 00; other values are undefined and the model never
//!   matches them);
//! - every matching slot sets its B bit in DR6 on the same exception;
//! - instruction breakpoints are faults, raised before the instruction and
//!   suppressed while RFLAGS.RF is set; RF clears once the instruction
//!   completes. Data breakpoints are traps, raised after the access.

use hwbp_kern::dr7;
use hwbp_kern::regs::RegisterFile;
use hwbp_kern::{Access, Len, Slot};

/// What an instruction does to memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessKind {
    Read,
    Write,
    /// Instruction fetch: the instruction starts at the address.
    Exec,
}

/// One memory access by an instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemAccess {
    pub kind: AccessKind,
    pub addr: u64,
    /// Bytes accessed (1, 2, 4 or 8 for data; ignored for exec).
    pub size: u64,
}

impl MemAccess {
    pub const fn read(addr: u64, size: u64) -> Self {
        MemAccess { kind: AccessKind::Read, addr, size }
    }
    pub const fn write(addr: u64, size: u64) -> Self {
        MemAccess { kind: AccessKind::Write, addr, size }
    }
    pub const fn exec(addr: u64) -> Self {
        MemAccess { kind: AccessKind::Exec, addr, size: 1 }
    }
}

/// One slot's condition, as DR7 programs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Condition {
    /// None: I/O (R/W = 10b).
    access: Option<Access>,
    len: Len,
    addr: u64,
}

fn condition(regs: &RegisterFile, slot: Slot) -> Option<Condition> {
    let control = dr7::decode_slot(regs.dr7, slot);
    if !control.enabled {
        return None;
    }
    let addr = regs.addr.get(slot.index()).copied().unwrap_or(0);
    Some(Condition { access: control.access, len: control.len, addr })
}

/// Whether `cond` matches `access`.
fn matches(cond: &Condition, access: &MemAccess) -> bool {
    match (cond.access, access.kind) {
        (None, _) => false,
        (Some(Access::Exec), AccessKind::Exec) => cond.len == Len::One && access.addr == cond.addr,
        (Some(Access::Exec), _) | (Some(_), AccessKind::Exec) => false,
        (Some(data), kind) => {
            if !data.matches_data(kind == AccessKind::Write) {
                return false;
            }
            // The hardware drops the low address bits: LEN acts as a mask.
            let start = cond.addr & !(cond.len.bytes() - 1);
            let end = start.saturating_add(cond.len.bytes());
            let access_end = access.addr.saturating_add(access.size.max(1));
            access.addr < end && start < access_end
        }
    }
}

/// B0-B3 for `access`: every armed slot whose condition it meets, of the
/// exception class of the access (fetch slots for exec, data slots
/// otherwise).
pub fn matching_slots(regs: &RegisterFile, access: &MemAccess) -> u8 {
    Slot::ALL.into_iter().fold(0, |bits, slot| match condition(regs, slot) {
        Some(cond) if matches(&cond, access) => bits | slot.bit(),
        _ => bits,
    })
}

/// What the CPU did when it ran one instruction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// B bits of the #DB fault raised before the instruction (0: none).
    pub fault: u8,
    /// B bits of the #DB trap raised after it (0: none).
    pub trap: u8,
    /// The handler stopped the thread: after a fault, before the
    /// instruction ran (it runs when the thread is resumed and executes it
    /// again, RF suppressing a second fault); after a trap, with the access
    /// done.
    pub stopped: bool,
}

/// What the #DB handler did with the interrupted frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Handled {
    /// It set RFLAGS.RF (an exec hit).
    pub resume_flag: bool,
    /// It stopped the thread: the instruction stream goes no further.
    pub stop: bool,
}

impl From<bool> for Handled {
    /// A handler that only says whether it set RF.
    fn from(resume_flag: bool) -> Self {
        Handled { resume_flag, stop: false }
    }
}

/// A CPU's execution state as far as breakpoints care: RFLAGS.RF.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecState {
    /// RFLAGS.RF: suppresses instruction breakpoints for one instruction.
    pub resume_flag: bool,
}

/// The phase of an instruction at which a #DB is delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Before the instruction: an instruction-breakpoint fault.
    Fault,
    /// After the instruction: a data-breakpoint trap.
    Trap,
}

impl ExecState {
    /// Run one instruction that makes `access`, delivering each #DB to
    /// `deliver` with DR6 already set (B bits OR-ed in: the processor never
    /// clears them). `deliver` plays the exception handler: it returns
    /// whether the handler set RF in the interrupted frame, and whether it
    /// stopped the thread ([`Handled`]; a `bool` means RF only).
    ///
    /// An exec fault is delivered, then the instruction is restarted; with
    /// RF set the restart does not fault again, so one execution yields one
    /// hit. If the handler does not set RF the restart faults again; the
    /// model stops after a bounded number of such restarts, as a real CPU
    /// would loop forever. A handler that stops the thread at a fault ends
    /// the step there: the instruction has not run, RF stays as the handler
    /// left it, and running the same instruction again completes it.
    pub fn run<H: Into<Handled>>(
        &mut self,
        regs: &mut RegisterFile,
        access: &MemAccess,
        mut deliver: impl FnMut(&mut RegisterFile, Phase) -> H,
    ) -> Step {
        const MAX_RESTARTS: usize = 3;
        let mut step = Step::default();
        if access.kind == AccessKind::Exec {
            for _ in 0..MAX_RESTARTS {
                if self.resume_flag {
                    break;
                }
                let bits = matching_slots(regs, access);
                if bits == 0 {
                    break;
                }
                step.fault |= bits;
                regs.dr6 |= u64::from(bits);
                let handled = deliver(regs, Phase::Fault).into();
                self.resume_flag = handled.resume_flag;
                if handled.stop {
                    step.stopped = true;
                    return step;
                }
            }
        }
        // The instruction completes: RF clears, then data traps fire.
        self.resume_flag = false;
        if access.kind != AccessKind::Exec {
            let bits = matching_slots(regs, access);
            if bits != 0 {
                step.trap = bits;
                regs.dr6 |= u64::from(bits);
                step.stopped = deliver(regs, Phase::Trap).into().stop;
            }
        }
        step
    }
}

/// DR7 bits arming `slot` with a raw condition, as the SDM lays them out.
/// Unlike [`dr7::encode_slot`] this takes any address (the conformance
/// table arms unaligned ones that hwbp never would) and sets G only.
pub const fn encode_raw(slot: Slot, len: Len, access: Access) -> u64 {
    let rw: u64 = match access {
        Access::Exec => 0b00,
        Access::Write => 0b01,
        Access::ReadWrite => 0b11,
    };
    let len_bits: u64 = match len {
        Len::One => 0b00,
        Len::Two => 0b01,
        Len::Eight => 0b10,
        Len::Four => 0b11,
    };
    let i = slot.index() as u64;
    (dr7::GLOBAL_ENABLE_0 << (2 * i)) | (((len_bits << 2) | rw) << (16 + 4 * i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwbp_kern::Piece;

    fn armed(slot: usize, addr: u64, len: Len, access: Access) -> RegisterFile {
        let s = Slot::new(slot).unwrap();
        let mut regs = RegisterFile::RESET;
        regs.addr[slot] = addr;
        regs.dr7 = encode_raw(s, len, access);
        regs
    }

    #[test]
    fn raw_encoding_agrees_with_the_kernel_encoder_for_aligned_pieces() {
        for slot in Slot::ALL {
            for len in Len::ALL {
                for access in Access::ALL {
                    let Ok(p) = Piece::new(0x1000, len, access) else { continue };
                    assert_eq!(encode_raw(slot, len, access), dr7::encode_slot(slot, &p));
                }
            }
        }
    }

    #[test]
    fn an_unaligned_address_is_masked_by_the_length() {
        let regs = armed(1, 0x1003, Len::Four, Access::Write);
        assert_eq!(matching_slots(&regs, &MemAccess::write(0x1000, 1)), 0b10);
        assert_eq!(matching_slots(&regs, &MemAccess::write(0x1004, 1)), 0);
    }

    #[test]
    fn write_watches_ignore_reads_and_io_slots_match_nothing() {
        let regs = armed(0, 0x2000, Len::Eight, Access::Write);
        assert_eq!(matching_slots(&regs, &MemAccess::read(0x2000, 8)), 0);
        let mut io = RegisterFile::RESET;
        io.addr[0] = 0x2000;
        io.dr7 = dr7::GLOBAL_ENABLE_0 | (0b10 << 16);
        assert_eq!(matching_slots(&io, &MemAccess::write(0x2000, 1)), 0);
    }

    #[test]
    fn an_exec_breakpoint_faults_once_when_the_handler_sets_rf() {
        let mut regs = armed(2, 0x3000, Len::One, Access::Exec);
        let mut cpu = ExecState::default();
        let mut delivered = 0;
        let step = cpu.run(&mut regs, &MemAccess::exec(0x3000), |r, phase| {
            assert_eq!(phase, Phase::Fault);
            assert_eq!(r.dr6 & 0xf, 0b100);
            r.dr6 = hwbp_kern::dr6::CLEAR;
            delivered += 1;
            true
        });
        assert_eq!((step.fault, step.trap, delivered), (0b100, 0, 1));
        assert!(!cpu.resume_flag, "RF clears when the instruction completes");
    }

    #[test]
    fn without_rf_the_restarted_instruction_faults_again() {
        let mut regs = armed(0, 0x3000, Len::One, Access::Exec);
        let mut cpu = ExecState::default();
        let mut delivered = 0;
        cpu.run(&mut regs, &MemAccess::exec(0x3000), |_, _| {
            delivered += 1;
            false
        });
        assert!(delivered > 1);
    }

    #[test]
    fn rf_already_set_suppresses_the_fault_for_one_instruction() {
        let mut regs = armed(0, 0x3000, Len::One, Access::Exec);
        let mut cpu = ExecState { resume_flag: true };
        let step = cpu.run(&mut regs, &MemAccess::exec(0x3000), |_, _| true);
        assert_eq!(step, Step::default());
        let step = cpu.run(&mut regs, &MemAccess::exec(0x3000), |_, _| true);
        assert_eq!(step.fault, 1, "the next execution faults again");
    }

    #[test]
    fn a_data_hit_is_a_trap_after_the_access_and_reports_every_slot() {
        let mut regs = armed(0, 0x4000, Len::Eight, Access::ReadWrite);
        regs.addr[3] = 0x4004;
        regs.dr7 |= encode_raw(Slot::new(3).unwrap(), Len::Four, Access::Write);
        let mut cpu = ExecState::default();
        let step = cpu.run(&mut regs, &MemAccess::write(0x4004, 2), |r, phase| {
            assert_eq!(phase, Phase::Trap);
            assert_eq!(r.dr6 & 0xf, 0b1001);
            false
        });
        assert_eq!(step, Step { fault: 0, trap: 0b1001, stopped: false });
    }

    #[test]
    fn a_stop_at_an_exec_fault_leaves_the_instruction_to_run_once_on_resume() {
        let mut regs = armed(0, 0x3000, Len::One, Access::Exec);
        let mut cpu = ExecState::default();
        let mut delivered = 0;
        let step = cpu.run(&mut regs, &MemAccess::exec(0x3000), |_, _| {
            delivered += 1;
            Handled { resume_flag: true, stop: true }
        });
        assert_eq!(step, Step { fault: 1, trap: 0, stopped: true });
        assert!(cpu.resume_flag, "the instruction has not run: RF is still set in the frame");
        // Resumed: the same instruction runs without faulting again.
        let step = cpu.run(&mut regs, &MemAccess::exec(0x3000), |_, _| Handled::default());
        assert_eq!((step, delivered), (Step::default(), 1));
        assert!(!cpu.resume_flag);
    }

    #[test]
    fn a_stop_at_a_data_trap_comes_after_the_access() {
        let mut regs = armed(1, 0x4000, Len::Eight, Access::Write);
        let mut cpu = ExecState::default();
        let step = cpu.run(&mut regs, &MemAccess::write(0x4000, 8), |_, phase| {
            assert_eq!(phase, Phase::Trap);
            Handled { resume_flag: false, stop: true }
        });
        assert_eq!(step, Step { fault: 0, trap: 0b10, stopped: true });
    }
}
