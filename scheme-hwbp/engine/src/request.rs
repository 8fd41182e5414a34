//! Breakpoint requests and their validation per the x86 rules.
//!
//! A [`Request`] is what a client asks for; [`validate`] turns it into the
//! aligned [`Piece`]s one debug register each can watch, or says which rule
//! it breaks. Ranges that are unaligned or not 1/2/4/8 bytes long are split
//! with gdb's x86-dregs algorithm ([`split_range`]) unless `nosplit`.

use hwbp_kern::piece::{KERNEL_START, USER_END};
use hwbp_kern::{Access, CpuId, Len, NUM_SLOTS, Piece};

use crate::error::EngineError;
use crate::Pid;

/// Where a breakpoint applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// A task: on every CPU (`cpu: None`) or only while it runs on `cpu`.
    Task { pid: Pid, cpu: Option<CpuId> },
    /// Every task while it runs on this CPU (cpu-wide).
    Cpu(CpuId),
    /// Every task on every CPU (one handle).
    AllCpus,
}

impl Scope {
    /// Whether a piece of this scope can be armed on `cpu`.
    pub fn applies_to(&self, cpu: CpuId) -> bool {
        match *self {
            Scope::Task { cpu: None, .. } | Scope::AllCpus => true,
            Scope::Task { cpu: Some(only), .. } | Scope::Cpu(only) => only == cpu,
        }
    }

    /// The task, for task scopes.
    pub fn pid(&self) -> Option<Pid> {
        match *self {
            Scope::Task { pid, .. } => Some(pid),
            Scope::Cpu(_) | Scope::AllCpus => None,
        }
    }

    /// The one CPU the scope names, if any.
    pub fn cpu(&self) -> Option<CpuId> {
        match *self {
            Scope::Task { cpu, .. } => cpu,
            Scope::Cpu(cpu) => Some(cpu),
            Scope::AllCpus => None,
        }
    }
}

/// A breakpoint as a client asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Request {
    pub scope: Scope,
    /// First byte watched (data) or the instruction address (exec).
    pub addr: u64,
    /// Bytes watched. For exec: 1..=8, and the breakpoint still covers one
    /// instruction (hardware LEN=1).
    pub len: u64,
    pub access: Access,
    /// Admitted only if it can always be armed; holds its slots while
    /// disabled.
    pub pinned: bool,
    /// When armed, nothing else shares the CPU's registers.
    pub exclusive: bool,
    /// Opened disabled.
    pub disabled: bool,
    /// Refuse instead of splitting an unaligned or odd-length range.
    pub nosplit: bool,
    /// Kernel addresses allowed (and kernel-mode hits counted).
    pub kernel: bool,
    /// A hit record every `period`-th hit; at least 1.
    pub period: u64,
    /// A user-mode hit stops the thread that hit (`ContextPiece::stop`).
    /// Task scopes only: only a thread can be stopped.
    pub stop: bool,
}

impl Request {
    /// A flexible, enabled request with the contract's defaults (period 1).
    pub fn new(scope: Scope, addr: u64, len: u64, access: Access) -> Request {
        Request {
            scope,
            addr,
            len,
            access,
            pinned: false,
            exclusive: false,
            disabled: false,
            nosplit: false,
            kernel: false,
            period: 1,
            stop: false,
        }
    }
}

/// Most pieces one breakpoint may split into: more could never be armed at
/// once.
pub const MAX_PIECES: usize = NUM_SLOTS;

/// Longest exec "length" accepted; it still means one instruction.
pub const MAX_EXEC_LEN: u64 = 8;

/// Largest length one debug register watches on x86_64.
const MAX_PIECE_LEN: u64 = 8;

/// Check `req` against the x86 rules and return its pieces (1 to
/// [`MAX_PIECES`], in address order). The CPU number is checked by the
/// engine, which knows how many there are.
pub fn validate(req: &Request) -> Result<Vec<Piece>, EngineError> {
    if req.len == 0 {
        return Err(EngineError::Invalid("zero length"));
    }
    if req.period == 0 {
        return Err(EngineError::Invalid("period must be at least 1"));
    }
    if req.stop && req.scope.pid().is_none() {
        return Err(EngineError::Invalid("only a task's threads can be stopped: stop needs a task scope"));
    }
    if req.access == Access::Exec {
        if req.len > MAX_EXEC_LEN {
            return Err(EngineError::Invalid("an exec breakpoint covers one instruction: len must be 1..=8"));
        }
        check_range(req, req.addr, req.addr)?;
        let piece = Piece::new(req.addr, Len::One, Access::Exec).map_err(|_| EngineError::Invalid("bad exec address"))?;
        return Ok(vec![piece]);
    }
    let last = req.addr.checked_add(req.len - 1).ok_or(EngineError::Invalid("address range wraps around"))?;
    check_range(req, req.addr, last)?;
    if req.nosplit && (Len::from_bytes(req.len).is_none() || !req.addr.is_multiple_of(req.len)) {
        return Err(EngineError::Invalid("range is unaligned or not 1/2/4/8 bytes and nosplit was given"));
    }
    split_range(req.addr, req.len, req.access)
}

/// The range `[first, last]` must lie in one canonical half; the kernel
/// half only with `kernel`.
fn check_range(req: &Request, first: u64, last: u64) -> Result<(), EngineError> {
    if last < USER_END {
        Ok(())
    } else if first >= KERNEL_START {
        if req.kernel {
            Ok(())
        } else {
            Err(EngineError::Invalid("kernel address without the kernel option"))
        }
    } else {
        Err(EngineError::Invalid("address range is not canonical user (or kernel) space"))
    }
}

/// gdb's `x86_handle_nonaligned_watchpoint`: cover `[addr, addr + len)`
/// with naturally aligned pieces, each the largest of 8/4/2/1 bytes that
/// both the remaining length and the current address's alignment allow.
/// (gdb's `size_try_array[attempt][addr % 8]` is exactly this table.)
/// More than [`MAX_PIECES`] pieces is EINVAL. The caller has checked that
/// the range does not wrap and lies in one canonical half.
pub fn split_range(addr: u64, len: u64, access: Access) -> Result<Vec<Piece>, EngineError> {
    const TOO_MANY: EngineError = EngineError::Invalid("range needs more than 4 aligned pieces");
    // Each piece is at most 8 bytes: anything longer than 4 * 8 cannot fit.
    if len > MAX_PIECES as u64 * MAX_PIECE_LEN {
        return Err(TOO_MANY);
    }
    let mut pieces = Vec::with_capacity(MAX_PIECES);
    let (mut addr, mut left) = (addr, len);
    while left > 0 {
        if pieces.len() == MAX_PIECES {
            return Err(TOO_MANY);
        }
        // Largest power of two <= min(left, 8) ...
        let by_len = 1u64 << (63 - left.min(MAX_PIECE_LEN).leading_zeros());
        // ... that also divides the address (an aligned address allows 8).
        let by_align = if addr % MAX_PIECE_LEN == 0 { MAX_PIECE_LEN } else { 1 << addr.trailing_zeros() };
        let size = by_len.min(by_align);
        let len = Len::from_bytes(size).ok_or(EngineError::Invalid("internal: bad piece size"))?;
        let piece = Piece::new(addr, len, access).map_err(|_| EngineError::Invalid("piece is not canonical"))?;
        pieces.push(piece);
        addr = addr.wrapping_add(size);
        left -= size;
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(addr: u64, len: u64, access: Access) -> Request {
        Request::new(Scope::Task { pid: 1, cpu: None }, addr, len, access)
    }

    fn shape(pieces: &[Piece]) -> Vec<(u64, u64)> {
        pieces.iter().map(|p| (p.addr(), p.len().bytes())).collect()
    }

    /// gdb's table, transcribed, as the reference for the closed form.
    const SIZE_TRY_ARRAY: [[u64; 8]; 8] = [
        [1, 1, 1, 1, 1, 1, 1, 1],
        [2, 1, 2, 1, 2, 1, 2, 1],
        [2, 1, 2, 1, 2, 1, 2, 1],
        [4, 1, 2, 1, 4, 1, 2, 1],
        [4, 1, 2, 1, 4, 1, 2, 1],
        [4, 1, 2, 1, 4, 1, 2, 1],
        [4, 1, 2, 1, 4, 1, 2, 1],
        [8, 1, 2, 1, 4, 1, 2, 1],
    ];

    fn gdb_split(mut addr: u64, mut len: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        while len > 0 {
            let align = (addr % 8) as usize;
            let attempt = if len > 8 { 7 } else { len as usize - 1 };
            let size = SIZE_TRY_ARRAY[attempt][align];
            out.push((addr, size));
            addr += size;
            len -= size;
        }
        out
    }

    #[test]
    fn split_matches_gdbs_size_try_array_for_every_alignment_and_length() {
        for addr in 0x1000..0x1010u64 {
            for len in 1..=32u64 {
                let expected = gdb_split(addr, len);
                match split_range(addr, len, Access::Write) {
                    Ok(p) => assert_eq!(shape(&p), expected, "addr {addr:#x} len {len}"),
                    Err(e) => {
                        assert!(expected.len() > MAX_PIECES, "addr {addr:#x} len {len}: {e}");
                        assert_eq!(e.errno(), crate::error::errno::EINVAL);
                    }
                }
            }
        }
    }

    #[test]
    fn unaligned_four_bytes_split_into_three_pieces() {
        assert_eq!(shape(&validate(&req(0x1003, 4, Access::Write)).unwrap()), [(0x1003, 1), (0x1004, 2), (0x1006, 1)]);
    }

    #[test]
    fn unaligned_range_with_nosplit_is_einval() {
        let mut r = req(0x1003, 4, Access::Write);
        r.nosplit = true;
        assert!(matches!(validate(&r), Err(EngineError::Invalid(_))));
        r.addr = 0x1004;
        assert_eq!(validate(&r).unwrap().len(), 1);
        r.len = 3;
        assert!(matches!(validate(&r), Err(EngineError::Invalid(_))));
    }

    #[test]
    fn zero_length_is_einval() {
        assert_eq!(validate(&req(0x1000, 0, Access::Write)), Err(EngineError::Invalid("zero length")));
    }

    #[test]
    fn range_needing_five_pieces_is_einval() {
        // 0x1001..0x1011: 1,2,4,8,1 -> five pieces.
        assert!(matches!(validate(&req(0x1001, 16, Access::Write)), Err(EngineError::Invalid(_))));
        assert_eq!(validate(&req(0x1000, 32, Access::Write)).unwrap().len(), 4);
        assert!(validate(&req(0x1000, 33, Access::Write)).is_err());
    }

    #[test]
    fn exec_is_one_instruction_whatever_the_length_up_to_eight() {
        for len in 1..=8 {
            let p = validate(&req(0x4003, len, Access::Exec)).unwrap();
            assert_eq!(shape(&p), [(0x4003, 1)]);
            assert_eq!(p[0].access(), Access::Exec);
        }
        assert!(matches!(validate(&req(0x4000, 9, Access::Exec)), Err(EngineError::Invalid(_))));
    }

    #[test]
    fn wrapping_range_is_einval() {
        let mut r = req(u64::MAX - 3, 8, Access::Write);
        r.kernel = true;
        assert_eq!(validate(&r), Err(EngineError::Invalid("address range wraps around")));
        r.addr = u64::MAX - 7;
        assert_eq!(validate(&r).unwrap().len(), 1, "the top 8 bytes end exactly at 2^64");
    }

    #[test]
    fn kernel_address_needs_the_kernel_option() {
        let mut r = req(KERNEL_START, 8, Access::Write);
        assert_eq!(validate(&r), Err(EngineError::Invalid("kernel address without the kernel option")));
        r.kernel = true;
        assert!(validate(&r).is_ok());
        let mut x = req(KERNEL_START + 0x10, 1, Access::Exec);
        assert!(validate(&x).is_err());
        x.kernel = true;
        assert!(validate(&x).is_ok());
    }

    #[test]
    fn non_canonical_or_straddling_range_is_einval() {
        for (addr, len) in [(USER_END - 4, 8), (USER_END, 1), (KERNEL_START - 1, 2), (0x1234_0000_0000_0000, 4)] {
            let mut r = req(addr, len, Access::ReadWrite);
            r.kernel = true;
            assert_eq!(
                validate(&r),
                Err(EngineError::Invalid("address range is not canonical user (or kernel) space")),
                "{addr:#x}/{len}"
            );
        }
        assert!(validate(&req(USER_END - 8, 8, Access::ReadWrite)).is_ok());
    }

    #[test]
    fn period_zero_is_einval() {
        let mut r = req(0x1000, 4, Access::Write);
        r.period = 0;
        assert!(matches!(validate(&r), Err(EngineError::Invalid(_))));
    }
}
