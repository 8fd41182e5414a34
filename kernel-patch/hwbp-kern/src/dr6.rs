//! The DR6 debug status register: what caused a #DB.
//!
//! DR6 is fact, the mirror is intention: the handler trusts DR6 for *which*
//! condition was met, and the loaded composition only for *what* was in
//! that register. B0-B3 may be set for slots that are not enabled (SDM
//! 18.2.3), so they are masked with the enabled slots before use.

/// B0-B3: breakpoint condition of slot i met.
pub const B_MASK: u64 = 0b1111;
/// BD: the next instruction accesses a debug register (DR7.GD set).
pub const BD: u64 = 1 << 13;
/// BS: single step (RFLAGS.TF).
pub const BS: u64 = 1 << 14;
/// BT: hardware task switch with the T flag (never on x86_64 Redox).
pub const BT: u64 = 1 << 15;
/// RTM: cleared by the CPU for #DB inside an RTM region; 1 otherwise.
pub const RTM: u64 = 1 << 16;
/// The value the handler leaves in DR6: every status bit clear, the
/// reserved bits (and RTM) as the processor sets them at reset.
pub const CLEAR: u64 = 0xFFFF_0FF0;

/// A decoded DR6 value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dr6Status {
    /// Slots whose condition was met (bit i = slot i), before masking.
    pub slots: u8,
    pub single_step: bool,
    pub debug_register_access: bool,
    pub task_switch: bool,
}

impl Dr6Status {
    pub const fn decode(dr6: u64) -> Dr6Status {
        Dr6Status {
            slots: (dr6 & B_MASK) as u8,
            single_step: dr6 & BS != 0,
            debug_register_access: dr6 & BD != 0,
            task_switch: dr6 & BT != 0,
        }
    }

    /// Whether anything the breakpoint code does not own caused the #DB.
    pub const fn has_other_causes(&self) -> bool {
        self.single_step || self.debug_register_access || self.task_switch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_combination_of_status_bits_decodes() {
        // All 2^4 slot combinations x BS x BD x BT.
        for bits in 0u64..128 {
            let slots = bits & 0b1111;
            let bs = bits & 0b1_0000 != 0;
            let bd = bits & 0b10_0000 != 0;
            let bt = bits & 0b100_0000 != 0;
            let raw = CLEAR | slots | if bs { BS } else { 0 } | if bd { BD } else { 0 } | if bt { BT } else { 0 };
            let s = Dr6Status::decode(raw);
            assert_eq!(u64::from(s.slots), slots);
            assert_eq!((s.single_step, s.debug_register_access, s.task_switch), (bs, bd, bt));
            assert_eq!(s.has_other_causes(), bs || bd || bt);
        }
    }

    #[test]
    fn the_clear_value_reports_nothing() {
        let s = Dr6Status::decode(CLEAR);
        assert_eq!(s.slots, 0);
        assert!(!s.has_other_causes());
    }
}
