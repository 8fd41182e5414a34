//! One armed thing: an aligned address range and an access condition, as a
//! single debug address register and its DR7 field can express it.

use core::fmt;

use crate::NUM_SLOTS;

/// Exclusive end of the user half of the x86_64 address space with 4-level
/// paging (the paging mode Redox uses).
pub const USER_END: u64 = 0x0000_8000_0000_0000;
/// Start of the kernel (upper canonical) half with 4-level paging.
pub const KERNEL_START: u64 = 0xFFFF_8000_0000_0000;

/// Length of the watched range, as one DR7 LEN field can encode it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Len {
    One,
    Two,
    Four,
    Eight,
}

impl Len {
    pub const ALL: [Len; 4] = [Len::One, Len::Two, Len::Four, Len::Eight];

    /// Length in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            Len::One => 1,
            Len::Two => 2,
            Len::Four => 4,
            Len::Eight => 8,
        }
    }

    /// The length for `bytes`, if one register can watch exactly that many.
    pub const fn from_bytes(bytes: u64) -> Option<Len> {
        match bytes {
            1 => Some(Len::One),
            2 => Some(Len::Two),
            4 => Some(Len::Four),
            8 => Some(Len::Eight),
            _ => None,
        }
    }
}

/// What kind of access triggers the breakpoint: DR7's R/W field.
///
/// There is no read-only condition on x86 (R/W = 10b means I/O, which we
/// never arm), so a read watch is always a read/write watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// Instruction fetch at the address; the exception is a fault, raised
    /// before the instruction runs.
    Exec,
    /// Data writes; a trap, raised after the instruction.
    Write,
    /// Data reads or writes; a trap, raised after the instruction.
    ReadWrite,
}

impl Access {
    pub const ALL: [Access; 3] = [Access::Exec, Access::Write, Access::ReadWrite];

    /// Whether a data access of this kind triggers the condition.
    pub const fn matches_data(self, is_write: bool) -> bool {
        match self {
            Access::Exec => false,
            Access::Write => is_write,
            Access::ReadWrite => true,
        }
    }
}

/// Which half of the address space a piece lies in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressSpace {
    User,
    Kernel,
}

/// Index of a debug address register, DR0-DR3. Exists only when valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot(u8);

impl Slot {
    pub const ALL: [Slot; NUM_SLOTS] = [Slot(0), Slot(1), Slot(2), Slot(3)];

    pub const fn new(index: usize) -> Option<Slot> {
        if index < NUM_SLOTS {
            Some(Slot(index as u8))
        } else {
            None
        }
    }

    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// This slot's bit in DR6 (B0-B3) and in per-slot masks.
    pub const fn bit(self) -> u8 {
        1 << self.0
    }
}

/// Opaque value `hwbpd` attaches to a piece; the kernel hands it back in
/// every hit record so the server can route the hit without a lookup of
/// addresses.
pub type Token = u64;

/// A range and condition one debug register can watch.
///
/// Invariants (checked by [`Piece::new`], so every `Piece` holds them):
/// - `addr` is a multiple of `len` (the hardware ignores the low address
///   bits, so an unaligned address would silently watch a different range);
/// - exec pieces have length one (DR7 LEN must be 00 for R/W = 00);
/// - the range is canonical and lies wholly in one half of the address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Piece {
    addr: u64,
    len: Len,
    access: Access,
}

/// Why a piece was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PieceError {
    /// The address is not a multiple of the length.
    Unaligned,
    /// An exec breakpoint must have length 1.
    ExecLength,
    /// The range is not canonical, or straddles the two halves.
    NonCanonical,
    /// An encoding that names no length or condition (ABI decode).
    BadEncoding,
}

impl fmt::Display for PieceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PieceError::Unaligned => "address is not aligned to the length",
            PieceError::ExecLength => "an exec breakpoint must have length 1",
            PieceError::NonCanonical => "range is not canonical or straddles user and kernel space",
            PieceError::BadEncoding => "length or access condition not encodable",
        })
    }
}

impl Piece {
    pub fn new(addr: u64, len: Len, access: Access) -> Result<Piece, PieceError> {
        if !addr.is_multiple_of(len.bytes()) {
            return Err(PieceError::Unaligned);
        }
        if access == Access::Exec && len != Len::One {
            return Err(PieceError::ExecLength);
        }
        // Aligned, so `addr + len - 1` cannot overflow.
        let last = addr | len.bytes().wrapping_sub(1);
        let user = last < USER_END;
        let kernel = addr >= KERNEL_START;
        if !user && !kernel {
            return Err(PieceError::NonCanonical);
        }
        Ok(Piece { addr, len, access })
    }

    pub const fn addr(&self) -> u64 {
        self.addr
    }

    pub const fn len(&self) -> Len {
        self.len
    }

    pub const fn access(&self) -> Access {
        self.access
    }

    pub const fn space(&self) -> AddressSpace {
        if self.addr < USER_END {
            AddressSpace::User
        } else {
            AddressSpace::Kernel
        }
    }

    /// Whether an access of `size` bytes at `addr` overlaps the watched
    /// range. `size` of 0 is treated as 1.
    pub fn overlaps(&self, addr: u64, size: u64) -> bool {
        let size = size.max(1);
        let end = self.addr.saturating_add(self.len.bytes());
        let access_end = addr.saturating_add(size);
        addr < end && self.addr < access_end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_pieces_of_every_length_are_accepted() {
        for len in Len::ALL {
            assert!(Piece::new(0x1000, len, Access::Write).is_ok());
            assert!(Piece::new(0x1000 + len.bytes(), len, Access::ReadWrite).is_ok());
        }
    }

    #[test]
    fn unaligned_address_is_refused() {
        assert_eq!(Piece::new(0x1001, Len::Two, Access::Write), Err(PieceError::Unaligned));
        assert_eq!(Piece::new(0x1004, Len::Eight, Access::Write), Err(PieceError::Unaligned));
        assert!(Piece::new(0x1001, Len::One, Access::Write).is_ok());
    }

    #[test]
    fn exec_must_be_length_one() {
        assert_eq!(Piece::new(0x1000, Len::Eight, Access::Exec), Err(PieceError::ExecLength));
        assert!(Piece::new(0x1003, Len::One, Access::Exec).is_ok());
    }

    #[test]
    fn non_canonical_and_straddling_ranges_are_refused() {
        assert_eq!(
            Piece::new(USER_END - 8, Len::Eight, Access::Write).map(|p| p.space()),
            Ok(AddressSpace::User)
        );
        assert_eq!(Piece::new(USER_END, Len::One, Access::Write), Err(PieceError::NonCanonical));
        assert_eq!(
            Piece::new(KERNEL_START - 8, Len::Eight, Access::Write),
            Err(PieceError::NonCanonical)
        );
        assert_eq!(
            Piece::new(KERNEL_START, Len::Eight, Access::Write).map(|p| p.space()),
            Ok(AddressSpace::Kernel)
        );
        assert!(Piece::new(u64::MAX - 7, Len::Eight, Access::Write).is_ok());
    }

    #[test]
    fn overlap_is_half_open() {
        let p = Piece::new(0x100, Len::Four, Access::Write).unwrap();
        assert!(!p.overlaps(0xff, 1));
        assert!(p.overlaps(0xff, 2));
        assert!(p.overlaps(0x103, 8));
        assert!(!p.overlaps(0x104, 1));
    }
}
