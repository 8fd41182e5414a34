//! The DR7 debug control register: encoding of one slot's enable, R/W and
//! LEN fields, and the reverse decode (used by the model and the tests).
//!
//! Layout (Intel SDM Vol. 3B, 18.2.4): bits 2i/2i+1 are the local/global
//! enables of slot i; bit 8/9 LE/GE ("exact breakpoint"); bit 10 is reserved
//! and reads as 1; bits 16+4i..17+4i are R/W_i and 18+4i..19+4i are LEN_i.

use crate::piece::{Access, Len, Piece, Slot};

/// Global enable of slot 0; slot i's is `GLOBAL_ENABLE_0 << (2 * i)`.
/// Global rather than local enables, as Linux uses: x86_64 has no hardware
/// task switch, so the two behave alike and G survives nothing L would not.
pub const GLOBAL_ENABLE_0: u64 = 1 << 1;
/// Local enable of slot 0 (accepted when decoding, never written).
pub const LOCAL_ENABLE_0: u64 = 1 << 0;
/// GE: exact data breakpoint matching, recommended by the SDM on every CPU
/// that honours it; harmless elsewhere.
pub const GLOBAL_EXACT: u64 = 1 << 9;
/// Reserved bit 10, which reads as 1.
pub const RESERVED_ONE: u64 = 1 << 10;
/// Value of DR7 with nothing armed: the only value written when no slot is
/// in use.
pub const DISARMED: u64 = 0;

/// Bit position of slot i's enable pair: 2i.
const fn enable_shift(slot: Slot) -> u32 {
    match slot.index() {
        0 => 0,
        1 => 2,
        2 => 4,
        _ => 6,
    }
}

/// Bit position of slot i's R/W field (LEN follows at +2): 16 + 4i.
const fn control_shift(slot: Slot) -> u32 {
    match slot.index() {
        0 => 16,
        1 => 20,
        2 => 24,
        _ => 28,
    }
}

const RW_EXEC: u64 = 0b00;
const RW_WRITE: u64 = 0b01;
const RW_IO: u64 = 0b10;
const RW_READ_WRITE: u64 = 0b11;

const LEN_1: u64 = 0b00;
const LEN_2: u64 = 0b01;
const LEN_8: u64 = 0b10;
const LEN_4: u64 = 0b11;

const fn rw_bits(access: Access) -> u64 {
    match access {
        Access::Exec => RW_EXEC,
        Access::Write => RW_WRITE,
        Access::ReadWrite => RW_READ_WRITE,
    }
}

const fn len_bits(len: Len) -> u64 {
    match len {
        Len::One => LEN_1,
        Len::Two => LEN_2,
        Len::Eight => LEN_8,
        Len::Four => LEN_4,
    }
}

/// Both enable bits of `slot`.
pub const fn enable_mask(slot: Slot) -> u64 {
    (LOCAL_ENABLE_0 | GLOBAL_ENABLE_0) << enable_shift(slot)
}

/// The R/W and LEN field of `slot`.
pub const fn control_mask(slot: Slot) -> u64 {
    0b1111 << control_shift(slot)
}

/// Every bit of DR7 that belongs to `slot`.
pub const fn slot_mask(slot: Slot) -> u64 {
    enable_mask(slot) | control_mask(slot)
}

/// DR7 bits that arm `piece` in `slot`: its global enable, R/W and LEN.
pub const fn encode_slot(slot: Slot, piece: &Piece) -> u64 {
    let control = (len_bits(piece.len()) << 2) | rw_bits(piece.access());
    (GLOBAL_ENABLE_0 << enable_shift(slot)) | (control << control_shift(slot))
}

/// The condition DR7 programs for one slot, as the hardware reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotControl {
    pub enabled: bool,
    /// None for R/W = 10b (I/O breakpoints, which need CR4.DE and which
    /// hwbp never arms).
    pub access: Option<Access>,
    pub len: Len,
}

/// Decode slot `slot` of a raw DR7 value as the processor does.
pub const fn decode_slot(dr7: u64, slot: Slot) -> SlotControl {
    let enabled = dr7 & enable_mask(slot) != 0;
    let control = (dr7 >> control_shift(slot)) & 0b1111;
    let access = match control & 0b11 {
        RW_EXEC => Some(Access::Exec),
        RW_WRITE => Some(Access::Write),
        RW_IO => None,
        _ => Some(Access::ReadWrite),
    };
    let len = match control >> 2 {
        LEN_1 => Len::One,
        LEN_2 => Len::Two,
        LEN_8 => Len::Eight,
        _ => Len::Four,
    };
    SlotControl { enabled, access, len }
}

/// Mask of slots (bit i = slot i) enabled in `dr7`.
pub fn enabled_slots(dr7: u64) -> u8 {
    Slot::ALL.into_iter().filter(|&s| dr7 & enable_mask(s) != 0).fold(0, |mask, s| mask | s.bit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(addr: u64, len: Len, access: Access) -> Piece {
        Piece::new(addr, len, access).unwrap()
    }

    #[test]
    fn encoding_matches_the_sdm_table() {
        // Linux's encode_dr7() for (drnum, len, type) produces the same
        // values: e.g. slot 1, LEN 4, RW -> G1 | (0b1111 << 20).
        let s = |i| Slot::new(i).unwrap();
        assert_eq!(encode_slot(s(0), &piece(0, Len::One, Access::Exec)), 0b10);
        assert_eq!(encode_slot(s(0), &piece(0, Len::One, Access::Write)), 0b10 | 0b0001 << 16);
        assert_eq!(encode_slot(s(1), &piece(0, Len::Four, Access::ReadWrite)), 0b1000 | 0b1111 << 20);
        assert_eq!(encode_slot(s(2), &piece(0, Len::Eight, Access::Write)), 0b10_0000 | 0b1001 << 24);
        assert_eq!(encode_slot(s(3), &piece(0, Len::Two, Access::ReadWrite)), 0b1000_0000 | 0b0111 << 28);
    }

    #[test]
    fn decode_inverts_encode_for_every_slot_length_and_access() {
        for slot in Slot::ALL {
            for len in Len::ALL {
                for access in Access::ALL {
                    let Ok(p) = Piece::new(0x1000, len, access) else { continue };
                    let dr7 = encode_slot(slot, &p);
                    assert_eq!(dr7 & !slot_mask(slot), 0, "bits outside the slot's fields");
                    let control = decode_slot(dr7, slot);
                    assert_eq!(control, SlotControl { enabled: true, access: Some(access), len });
                    assert_eq!(enabled_slots(dr7), slot.bit());
                    for other in Slot::ALL.into_iter().filter(|&o| o != slot) {
                        assert!(!decode_slot(dr7, other).enabled);
                    }
                }
            }
        }
    }

    #[test]
    fn io_condition_and_local_enables_decode() {
        let s0 = Slot::new(0).unwrap();
        let c = decode_slot(LOCAL_ENABLE_0 | (RW_IO << 16), s0);
        assert!(c.enabled);
        assert_eq!(c.access, None);
    }
}
