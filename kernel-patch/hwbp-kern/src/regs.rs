//! Access to the debug registers, behind a trait so that the logic above it
//! runs on the host. The real accessors live in [`hw`] (`feature = "hw"`).

use crate::NUM_SLOTS;
use crate::dr6;
use crate::piece::Slot;

/// The debug registers of the CPU this code runs on.
///
/// Implementations do nothing but move values: every decision about what to
/// write, and in which order, is made by the callers in this crate.
pub trait DebugRegs {
    fn read_dr6(&mut self) -> u64;
    fn write_dr6(&mut self, value: u64);
    fn write_addr(&mut self, slot: Slot, addr: u64);
    fn write_dr7(&mut self, value: u64);
}

/// Debug registers kept in memory: the host's stand-in for a CPU, used by
/// the unit tests and by `hwbpd`'s simulated kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegisterFile {
    pub addr: [u64; NUM_SLOTS],
    pub dr6: u64,
    pub dr7: u64,
}

impl Default for RegisterFile {
    fn default() -> Self {
        Self::RESET
    }
}

impl RegisterFile {
    /// The values the registers hold after reset.
    pub const RESET: RegisterFile = RegisterFile { addr: [0; NUM_SLOTS], dr6: dr6::CLEAR, dr7: 0 };
}

impl DebugRegs for RegisterFile {
    fn read_dr6(&mut self) -> u64 {
        self.dr6
    }
    fn write_dr6(&mut self, value: u64) {
        self.dr6 = value;
    }
    fn write_addr(&mut self, slot: Slot, addr: u64) {
        if let Some(a) = self.addr.get_mut(slot.index()) {
            *a = addr;
        }
    }
    fn write_dr7(&mut self, value: u64) {
        self.dr7 = value;
    }
}

/// How many writes went to each kind of register.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteCounts {
    pub addr: u64,
    pub dr6: u64,
    pub dr7: u64,
}

impl WriteCounts {
    /// Writes to DR0-DR3 and DR7: the ones a switch may do.
    pub const fn switch_writes(&self) -> u64 {
        self.addr.saturating_add(self.dr7)
    }
}

/// Wraps any [`DebugRegs`] and counts the writes that reach it. The QEMU
/// testbed wraps the real registers with it to check the lazy-switch rule.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counting<R> {
    pub inner: R,
    pub writes: WriteCounts,
}

impl<R> Counting<R> {
    pub const fn new(inner: R) -> Self {
        Counting { inner, writes: WriteCounts { addr: 0, dr6: 0, dr7: 0 } }
    }
}

impl<R: DebugRegs> DebugRegs for Counting<R> {
    fn read_dr6(&mut self) -> u64 {
        self.inner.read_dr6()
    }
    fn write_dr6(&mut self, value: u64) {
        self.writes.dr6 = self.writes.dr6.saturating_add(1);
        self.inner.write_dr6(value);
    }
    fn write_addr(&mut self, slot: Slot, addr: u64) {
        self.writes.addr = self.writes.addr.saturating_add(1);
        self.inner.write_addr(slot, addr);
    }
    fn write_dr7(&mut self, value: u64) {
        self.writes.dr7 = self.writes.dr7.saturating_add(1);
        self.inner.write_dr7(value);
    }
}

/// The real debug registers, through `x86::debugregs`.
#[cfg(feature = "hw")]
pub mod hw {
    use super::DebugRegs;
    use crate::piece::Slot;
    use x86::debugregs;

    /// The debug registers of the executing CPU. Only constructible at CPL 0.
    #[derive(Debug)]
    pub struct Hardware(());

    impl Hardware {
        /// # Safety
        /// The caller runs at CPL 0, and nothing else on this CPU writes the
        /// debug registers while the value is in use (the caller runs with
        /// interrupts disabled, or is the #DB handler).
        pub const unsafe fn new() -> Self {
            Hardware(())
        }
    }

    impl DebugRegs for Hardware {
        fn read_dr6(&mut self) -> u64 {
            // SAFETY: CPL 0 is guaranteed by `Hardware::new`'s contract.
            unsafe { debugregs::dr6() }.bits() as u64
        }
        fn write_dr6(&mut self, value: u64) {
            // DR6 is written raw: `Dr6` would drop the reserved bits the SDM
            // asks us to write as 1.
            // SAFETY: CPL 0 (see `new`); moving to DR6 has no memory effect.
            unsafe { core::arch::asm!("mov {}, %dr6", in(reg) value, options(att_syntax, nostack)) }
        }
        fn write_addr(&mut self, slot: Slot, addr: u64) {
            let reg = debugregs::BREAKPOINT_REGS.get(slot.index()).copied();
            if let Some(reg) = reg {
                // SAFETY: CPL 0 (see `new`). The slot is disabled in DR7 while
                // its address changes: callers write DR7 around it.
                unsafe { reg.write(addr as usize) }
            }
        }
        fn write_dr7(&mut self, value: u64) {
            // SAFETY: CPL 0 (see `new`). The value comes from
            // `Composition::dr7`, which sets only enable, R/W, LEN and GE bits.
            unsafe { core::arch::asm!("mov {}, %dr7", in(reg) value, options(att_syntax, nostack)) }
        }
    }
}
