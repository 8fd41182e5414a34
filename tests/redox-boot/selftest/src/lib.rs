//! The parts of the selftest that do not need the Redox kernel, so they are
//! unit-tested on the host: the case matrix, the plans that put a piece in
//! a chosen debug register, hit checking, the verdict line, errno names.
//!
//! The bare-metal binary (`main.rs`) runs the cases against the real kernel
//! through the ABI in `kernel-patch/ABI.md`.
#![no_std]

use core::fmt::{self, Write};

use hwbp_kern::abi::{HitRecord, RawPiece, ACCESS_EXEC, ACCESS_READ_WRITE, ACCESS_WRITE, HIT_EXEC, HIT_KERNEL_MODE};

/// Breakpoint lengths x86 supports.
pub const LENS: [u8; 4] = [1, 2, 4, 8];
/// Data accesses a piece can watch (exec is a case of its own).
pub const DATA_ACCESSES: [u8; 2] = [ACCESS_WRITE, ACCESS_READ_WRITE];
/// DR0..DR3.
pub const REGISTERS: usize = 4;

pub fn access_name(access: u8) -> &'static str {
    match access {
        ACCESS_EXEC => "x",
        ACCESS_WRITE => "w",
        ACCESS_READ_WRITE => "rw",
        _ => "?",
    }
}

/// Every data case: each length x each access x each register.
pub fn data_cases() -> impl Iterator<Item = (u8, u8, usize)> {
    LENS.into_iter()
        .flat_map(|len| DATA_ACCESSES.into_iter().map(move |access| (len, access)))
        .flat_map(|(len, access)| (0..REGISTERS).map(move |reg| (len, access, reg)))
}

/// A context plan that puts `target` in debug register `reg`: with no CPU
/// plan, the kernel gives the running context's pieces the registers in
/// plan order (`hwbp_kern::compose`), so `reg` fillers go first. The
/// fillers watch `fillers[i]` for writes (addresses the test never touches)
/// with tokens `filler_token + i`.
pub fn plan_in_register(target: RawPiece, reg: usize, fillers: [u64; 3], filler_token: u64) -> ([RawPiece; 4], usize) {
    let mut plan = [RawPiece::default(); 4];
    let reg = reg.min(REGISTERS - 1);
    for (i, slot) in plan.iter_mut().take(reg).enumerate() {
        *slot = RawPiece {
            addr: fillers[i],
            token: filler_token + i as u64,
            cpu: 0,
            len: 8,
            access: ACCESS_WRITE,
            flags: 0,
        };
    }
    plan[reg] = target;
    (plan, reg + 1)
}

/// Serialise pieces as the kernel expects them (24 bytes each).
pub fn encode_pieces(pieces: &[RawPiece], out: &mut [u8]) -> usize {
    let mut n = 0;
    for (p, chunk) in pieces.iter().zip(out.chunks_exact_mut(hwbp_kern::abi::RAW_PIECE_SIZE)) {
        chunk.copy_from_slice(&p.to_bytes());
        n += hwbp_kern::abi::RAW_PIECE_SIZE;
    }
    n
}

/// What one hit must look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    pub token: u64,
    pub addr: u64,
    /// `HIT_EXEC` / `HIT_KERNEL_MODE` bits that must be set; the other of
    /// the two must be clear.
    pub flags: u32,
    /// For exec hits: the exact rip (the breakpointed instruction).
    pub rip: Option<u64>,
    /// The CPU the hit must come from, if the test pinned the context.
    pub cpu: Option<u32>,
}

/// Why a set of hits did not match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mismatch {
    Count { expected: usize, got: usize },
    Token { index: usize, expected: u64, got: u64 },
    Addr { index: usize, expected: u64, got: u64 },
    Flags { index: usize, expected: u32, got: u32 },
    Rip { index: usize, expected: u64, got: u64 },
    Cpu { index: usize, expected: u32, got: u32 },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Mismatch::Count { expected, got } => write!(f, "expected {expected} hit(s), got {got}"),
            Mismatch::Token { index, expected, got } => write!(f, "hit {index}: token {got:#x}, expected {expected:#x}"),
            Mismatch::Addr { index, expected, got } => write!(f, "hit {index}: addr {got:#x}, expected {expected:#x}"),
            Mismatch::Flags { index, expected, got } => write!(f, "hit {index}: flags {got:#x}, expected {expected:#x}"),
            Mismatch::Rip { index, expected, got } => write!(f, "hit {index}: rip {got:#x}, expected {expected:#x}"),
            Mismatch::Cpu { index, expected, got } => write!(f, "hit {index}: cpu {got}, expected {expected}"),
        }
    }
}

const CHECKED_FLAGS: u32 = HIT_EXEC | HIT_KERNEL_MODE;

/// Compare hits with expectations, in order.
pub fn check_hits(got: &[HitRecord], expected: &[Expect]) -> Result<(), Mismatch> {
    if got.len() != expected.len() {
        return Err(Mismatch::Count { expected: expected.len(), got: got.len() });
    }
    for (index, (h, e)) in got.iter().zip(expected).enumerate() {
        if h.token != e.token {
            return Err(Mismatch::Token { index, expected: e.token, got: h.token });
        }
        if h.addr != e.addr {
            return Err(Mismatch::Addr { index, expected: e.addr, got: h.addr });
        }
        if h.flags & CHECKED_FLAGS != e.flags {
            return Err(Mismatch::Flags { index, expected: e.flags, got: h.flags });
        }
        if let Some(rip) = e.rip
            && h.rip != rip
        {
            return Err(Mismatch::Rip { index, expected: rip, got: h.rip });
        }
        if let Some(cpu) = e.cpu
            && h.cpu != cpu
        {
            return Err(Mismatch::Cpu { index, expected: cpu, got: h.cpu });
        }
    }
    Ok(())
}

/// Pass/fail counts and the verdict line `run.sh` looks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub passed: u32,
    pub failed: u32,
}

impl Tally {
    pub fn record(&mut self, ok: bool) {
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
    }

    /// `hwbp-selftest: N passed, M failed`.
    pub fn verdict(&self, w: &mut impl Write) -> fmt::Result {
        write!(w, "hwbp-selftest: {} passed, {} failed", self.passed, self.failed)
    }

    pub fn all_passed(&self) -> bool {
        self.failed == 0 && self.passed > 0
    }
}

/// Errno names for the messages (the ones the ABI uses).
pub fn errno_name(errno: i32) -> &'static str {
    match errno {
        1 => "EPERM",
        2 => "ENOENT",
        3 => "ESRCH",
        9 => "EBADF",
        11 => "EAGAIN",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        22 => "EINVAL",
        28 => "ENOSPC",
        38 => "ENOSYS",
        130 => "EOWNERDEAD",
        _ => "errno",
    }
}

/// A fixed-size line buffer (no allocator in the selftest).
pub struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Line { buf: [0; 256], len: 0 }
    }
}

impl Line {
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(core::str::from_utf8(self.as_bytes()).unwrap_or("?"))
    }
}

impl Write for Line {
    /// Truncates silently when full (a long message must not abort a test).
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// The decimal name of an fd, for `auth-<fd>-regs/debug`.
pub fn auth_name<'a>(control_fd: usize, what: &str, buf: &'a mut Line) -> &'a str {
    *buf = Line::default();
    let _ = write!(buf, "auth-{control_fd}-{what}");
    core::str::from_utf8(buf.as_bytes()).unwrap_or("")
}

/// The value of `HWBP_SYM_<name>=<hex>` in the kernel environment
/// (`sys:env`, one `KEY=VALUE` per line): a kernel address `run.sh` read off
/// the kernel's symbol table for the attack checks.
pub fn env_symbol(env: &[u8], name: &str) -> Option<u64> {
    env.split(|b| *b == b'\n').find_map(|line| {
        let line = core::str::from_utf8(line).ok()?;
        let value = line.strip_prefix("HWBP_SYM_")?.strip_prefix(name)?.strip_prefix('=')?;
        u64::from_str_radix(value.trim(), 16).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_symbols_are_found_by_exact_name() {
        let env = b"RSDP_ADDR=00000000000f5270\nHWBP_SYM_DEBUG_ENTRY=ffffffff80001c80\nHWBP_SYM_DEBUG_STACK=ffffffff800fae10\n";
        assert_eq!(env_symbol(env, "DEBUG_ENTRY"), Some(0xffff_ffff_8000_1c80));
        assert_eq!(env_symbol(env, "DEBUG_STACK"), Some(0xffff_ffff_800f_ae10));
        assert_eq!(env_symbol(env, "DEBUG"), None, "a prefix of a name is not the name");
        assert_eq!(env_symbol(env, "RSDP_ADDR"), None, "only HWBP_SYM_ variables");
        assert_eq!(env_symbol(b"HWBP_SYM_X=zz\n", "X"), None);
    }

    fn piece(addr: u64, token: u64, len: u8, access: u8) -> RawPiece {
        RawPiece { addr, token, cpu: 0, len, access, flags: 0 }
    }

    #[test]
    fn data_cases_cover_every_length_access_and_register_once() {
        let mut seen = [[[0u8; REGISTERS]; 2]; 4];
        for (len, access, reg) in data_cases() {
            let l = LENS.iter().position(|&x| x == len).unwrap();
            let a = DATA_ACCESSES.iter().position(|&x| x == access).unwrap();
            seen[l][a][reg] += 1;
        }
        assert!(seen.iter().flatten().flatten().all(|&n| n == 1));
        assert_eq!(data_cases().count(), 32);
    }

    #[test]
    fn plan_in_register_puts_the_target_after_that_many_fillers() {
        let target = piece(0x5000, 7, 4, ACCESS_WRITE);
        for reg in 0..REGISTERS {
            let (plan, n) = plan_in_register(target, reg, [0x100, 0x108, 0x110], 0x90);
            assert_eq!(n, reg + 1);
            assert_eq!(plan[reg], target);
            for (i, f) in plan.iter().take(reg).enumerate() {
                assert_eq!(f.token, 0x90 + i as u64);
                assert_eq!(f.addr, [0x100, 0x108, 0x110][i]);
            }
            // What the kernel will do with it: the target lands in DR`reg`.
            let mut ctx = hwbp_kern::ContextPlan::EMPTY;
            for p in &plan[..n] {
                ctx.push(p.decode_context_piece().unwrap()).unwrap();
            }
            let c = hwbp_kern::compose(0, &hwbp_kern::CpuPlan::EMPTY, Some(&ctx));
            assert_eq!(c.slot(hwbp_kern::Slot::ALL[reg]).map(|l| l.token), Some(7), "register {reg}");
        }
    }

    #[test]
    fn encode_pieces_writes_24_bytes_per_piece() {
        let mut out = [0u8; 96];
        let n = encode_pieces(&[piece(8, 1, 8, ACCESS_WRITE), piece(16, 2, 1, ACCESS_EXEC)], &mut out);
        assert_eq!(n, 48);
        assert_eq!(RawPiece::from_bytes(out[24..48].try_into().unwrap()).token, 2);
    }

    fn hit(token: u64, addr: u64, flags: u32, rip: u64, cpu: u32) -> HitRecord {
        HitRecord { token, rip, addr, context: 1, timestamp: 0, cpu, flags }
    }

    #[test]
    fn check_hits_accepts_matching_hits_and_names_the_first_difference() {
        let e = Expect { token: 5, addr: 0x40, flags: 0, rip: None, cpu: Some(1) };
        assert_eq!(check_hits(&[hit(5, 0x40, 0, 0x2345, 1)], &[e]), Ok(()));
        assert_eq!(check_hits(&[], &[e]), Err(Mismatch::Count { expected: 1, got: 0 }));
        assert_eq!(
            check_hits(&[hit(6, 0x40, 0, 0, 1)], &[e]),
            Err(Mismatch::Token { index: 0, expected: 5, got: 6 })
        );
        assert_eq!(
            check_hits(&[hit(5, 0x48, 0, 0, 1)], &[e]),
            Err(Mismatch::Addr { index: 0, expected: 0x40, got: 0x48 })
        );
        assert_eq!(
            check_hits(&[hit(5, 0x40, HIT_KERNEL_MODE, 0, 1)], &[e]),
            Err(Mismatch::Flags { index: 0, expected: 0, got: HIT_KERNEL_MODE })
        );
        assert_eq!(
            check_hits(&[hit(5, 0x40, 0, 0, 0)], &[e]),
            Err(Mismatch::Cpu { index: 0, expected: 1, got: 0 })
        );
        let x = Expect { token: 1, addr: 0x3000, flags: HIT_EXEC, rip: Some(0x3000), cpu: None };
        assert_eq!(check_hits(&[hit(1, 0x3000, HIT_EXEC, 0x3000, 0)], &[x]), Ok(()));
        assert_eq!(
            check_hits(&[hit(1, 0x3000, HIT_EXEC, 0x3001, 0)], &[x]),
            Err(Mismatch::Rip { index: 0, expected: 0x3000, got: 0x3001 })
        );
    }

    #[test]
    fn check_hits_ignores_the_single_step_flag() {
        let e = Expect { token: 5, addr: 0x40, flags: 0, rip: None, cpu: None };
        let with_bs = hit(5, 0x40, hwbp_kern::abi::HIT_WITH_SINGLE_STEP, 0, 0);
        assert_eq!(check_hits(&[with_bs], &[e]), Ok(()));
    }

    #[test]
    fn verdict_line_has_the_form_run_sh_parses() {
        let mut t = Tally::default();
        t.record(true);
        t.record(true);
        t.record(false);
        let mut l = Line::default();
        t.verdict(&mut l).unwrap();
        assert_eq!(l.as_bytes(), b"hwbp-selftest: 2 passed, 1 failed");
        assert!(!t.all_passed());
        assert!(!Tally::default().all_passed(), "nothing run is not a pass");
    }

    #[test]
    fn auth_name_builds_the_kernel_s_auth_fd_form() {
        let mut l = Line::default();
        assert_eq!(auth_name(37, "regs/debug", &mut l), "auth-37-regs/debug");
    }

    #[test]
    fn line_truncates_instead_of_failing() {
        let mut l = Line::default();
        for _ in 0..100 {
            l.write_str("0123456789").unwrap();
        }
        assert_eq!(l.as_bytes().len(), 256);
    }

    #[test]
    fn errno_names_cover_the_abi_errors() {
        for (n, name) in [(1, "EPERM"), (3, "ESRCH"), (9, "EBADF"), (11, "EAGAIN"), (16, "EBUSY"), (22, "EINVAL"), (28, "ENOSPC"), (2, "ENOENT")] {
            assert_eq!(errno_name(n), name);
        }
    }
}
