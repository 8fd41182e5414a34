//! Kernel ranges no breakpoint may cover, whoever asks.
//!
//! A breakpoint in the kernel half is armed for root (through `hwbpd`), but
//! some kernel code and data cannot take a #DB safely, root or not. Linux
//! refuses the same places (`arch_check_bp_in_kernelspace`,
//! `within_cpu_entry` in `arch/x86/kernel/hw_breakpoint.c`):
//!
//! - **entry and exit code** (`.text.entry`): runs before the #DB handler
//!   can trust GS or the stack, or after it restored the interrupted
//!   state; an exec breakpoint there recurses into the handler's own entry;
//! - **hwbp's own code** (`.text.hwbp`): the #DB handler and the switch path
//!   that edits the register mirror the handler reads;
//! - **the processor control region** of every CPU (GDT, TSS, the per-CPU
//!   block with hwbp's mirror and ring, the syscall scratch slot): the
//!   entry paths read it before any breakpoint can be disabled;
//! - **the IDT** of every CPU: read by the CPU while delivering the #DB;
//! - **the IST stacks** (#DB's own, and the one NMI, #DF and #MC share):
//!   written by the CPU and the entry code before DR7 is cleared; a trap
//!   there would nest on the same stack and overwrite the outer frame.
//!
//! The kernel checks every kernel-half piece of every plan against this
//! list when the plan is written (EINVAL), never relying on `hwbpd`. The
//! regions are found at check time (the per-CPU ones for the CPUs that are
//! up), so an AP that comes up later is covered from then on.

use core::fmt;

use crate::piece::{AddressSpace, Piece};

/// One range of kernel addresses, `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    /// What it is, for the refusal's log line.
    pub what: &'static str,
}

impl Region {
    pub const fn new(start: u64, len: u64, what: &'static str) -> Region {
        Region { start, end: start.saturating_add(len), what }
    }

    /// Whether the bytes `[addr, addr + size)` touch this region.
    pub const fn touches(&self, addr: u64, size: u64) -> bool {
        addr < self.end && addr.saturating_add(size) > self.start
    }
}

/// Why a piece was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Denied {
    pub addr: u64,
    pub region: Region,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:#x} lies in {} ({:#x}..{:#x}), which cannot take a #DB",
            self.addr, self.region.what, self.region.start, self.region.end
        )
    }
}

/// The bytes a piece can trigger on: the aligned range for data, and for
/// exec the instruction that starts at the address. An instruction is up
/// to 15 bytes long, but the breakpoint matches its first byte only, so one
/// byte is what counts.
const fn trigger_range(piece: &Piece) -> (u64, u64) {
    (piece.addr(), piece.len().bytes())
}

/// Check one piece against `regions`. User-half pieces are never denied
/// here (the user's own memory; the kernel touches it only through paths
/// that tolerate a #DB).
pub fn check<'r, I>(piece: &Piece, regions: I) -> Result<(), Denied>
where
    I: IntoIterator<Item = &'r Region>,
{
    if piece.space() == AddressSpace::User {
        return Ok(());
    }
    let (addr, size) = trigger_range(piece);
    match regions.into_iter().find(|r| r.touches(addr, size)) {
        Some(region) => Err(Denied { addr, region: *region }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::piece::{Access, Len};

    const K: u64 = 0xFFFF_FFFF_8000_0000;
    const REGIONS: [Region; 2] = [Region::new(K + 0x1000, 0x100, "entry text"), Region::new(K + 0x4000, 16, "IDT")];

    fn piece(addr: u64, len: Len, access: Access) -> Piece {
        Piece::new(addr, len, access).unwrap()
    }

    #[test]
    fn a_piece_inside_or_overlapping_a_region_is_denied() {
        let inside = piece(K + 0x1010, Len::Eight, Access::ReadWrite);
        assert_eq!(check(&inside, &REGIONS).unwrap_err().region.what, "entry text");
        let exec = piece(K + 0x10ff, Len::One, Access::Exec);
        assert!(check(&exec, &REGIONS).is_err(), "the last byte of a region");
        let straddle = piece(K + 0x4008, Len::Eight, Access::Write);
        assert_eq!(check(&straddle, &REGIONS).unwrap_err().addr, K + 0x4008);
        let before = piece(K + 0x3ff8, Len::Eight, Access::Write);
        assert!(check(&before, &REGIONS).is_ok(), "ends where the region starts");
    }

    #[test]
    fn a_piece_just_outside_is_allowed() {
        assert!(check(&piece(K + 0x1100, Len::One, Access::Exec), &REGIONS).is_ok());
        assert!(check(&piece(K + 0x0ff8, Len::Eight, Access::ReadWrite), &REGIONS).is_ok());
        assert!(check(&piece(K + 0x4010, Len::Eight, Access::Write), &REGIONS).is_ok());
    }

    #[test]
    fn user_pieces_are_never_denied() {
        let everything = [Region::new(0, u64::MAX, "all")];
        assert!(check(&piece(0x7000, Len::Eight, Access::Write), &everything).is_ok());
        assert!(check(&piece(K, Len::One, Access::Exec), &everything).is_err());
    }

    #[test]
    fn a_region_at_the_top_of_the_address_space_does_not_wrap() {
        let top = [Region::new(u64::MAX - 7, 100, "top")];
        assert_eq!(top[0].end, u64::MAX);
        assert!(check(&piece(u64::MAX - 7, Len::Eight, Access::ReadWrite), &top).is_err());
    }
}
