//! Attacks on the kernel side (kernel-patch/ABI.md, "Deny list" and "The
//! #DB entry"): breakpoints the kernel must refuse whoever asks, and hits it
//! must survive with correct records.
//!
//! The kernel addresses come from `run.sh`, which reads them off the kernel's
//! symbol table and passes them on the QEMU command line; the loader puts
//! them into `sys:env` as `HWBP_SYM_<NAME>=<hex>`.

use core::arch::asm;
use core::fmt::Write;

use hwbp_kern::abi::{RawPiece, ACCESS_EXEC, ACCESS_READ_WRITE, CPU_PLAN_SIZE, RAW_PIECE_SIZE};
use hwbp_redox_selftest::{env_symbol, Line, Tally};

use crate::sys::{dup, openat, Fd, SYS_ROOT};
use crate::{addr_of, data_hit, drain, errno_msg, expect_errno, expect_hits, piece, report, write_plan, Check, Session, VAR_D};

/// Size of the kernel environment we read (it is a few hundred bytes).
const ENV_MAX: usize = 4096;

pub struct Env {
    bytes: [u8; ENV_MAX],
    len: usize,
}

impl Env {
    pub fn read() -> Result<Env, Line> {
        let fd = openat(SYS_ROOT, "env", syscall::O_RDONLY).map_err(|e| errno_msg("open sys:env", e))?;
        let mut env = Env { bytes: [0; ENV_MAX], len: 0 };
        loop {
            match fd.read(&mut env.bytes[env.len..]) {
                Ok(0) => break,
                Ok(n) => env.len += n,
                Err(e) => return Err(errno_msg("read sys:env", e)),
            }
            if env.len == ENV_MAX {
                break;
            }
        }
        Ok(env)
    }

    pub fn symbol(&self, name: &str) -> Result<u64, Line> {
        env_symbol(&self.bytes[..self.len], name).ok_or_else(|| {
            let mut l = Line::default();
            let _ = write!(l, "no address for {name} (run through tests/redox-boot/run.sh)");
            l
        })
    }
}

fn cpu_plan_with(p: RawPiece) -> [u8; CPU_PLAN_SIZE] {
    let mut plan = [0u8; CPU_PLAN_SIZE];
    plan[..RAW_PIECE_SIZE].copy_from_slice(&p.to_bytes());
    plan
}

/// `p` is refused with EINVAL as a context plan and as a CPU plan, and
/// neither plan changed.
fn refused_everywhere(s: &Session, cpu0: &Fd, p: RawPiece) -> Check {
    expect_errno(write_plan(&s.dbg, &[p]), syscall::EINVAL).map_err(|m| crate::prefix("context plan", m))?;
    expect_errno(cpu0.write(&cpu_plan_with(p)).map(|_| ()), syscall::EINVAL).map_err(|m| crate::prefix("cpu-0 plan", m))?;
    let mut back = [0u8; RAW_PIECE_SIZE * 16];
    let n = s.dbg.read(&mut back).map_err(|e| errno_msg("read plan", e))?;
    if n != 0 {
        fail!("the context plan holds {} bytes after the refusal", n);
    }
    let mut cpu = [0u8; CPU_PLAN_SIZE];
    cpu0.read(&mut cpu).map_err(|e| errno_msg("read cpu-0", e))?;
    if cpu.iter().any(|b| *b != 0) {
        fail!("cpu-0's plan is not empty after the refusal");
    }
    Ok(())
}

fn exec_at(addr: u64) -> RawPiece {
    piece(addr, 0x6000, 1, ACCESS_EXEC)
}

fn watch_at(addr: u64) -> RawPiece {
    piece(addr & !7, 0x6001, 8, ACCESS_READ_WRITE)
}

/// `mov ss, [watched]` then `syscall` (SYS_YIELD): on hardware the #DB of
/// the watch is held back one instruction and lands on the first
/// instruction of the syscall entry, in kernel mode, with the user's RSP
/// (CVE-2018-8897). TCG delivers it before the `syscall`; either way the
/// process must survive with exactly one record of its own watch.
fn mov_ss_then_syscall(s: &Session) -> Check {
    let v = addr_of(&raw mut VAR_D);
    let ss: u16;
    // SAFETY: reads the SS selector.
    unsafe { asm!("mov {0:x}, ss", out(reg) ss) };
    // SAFETY: our static, 8-aligned.
    unsafe { core::ptr::write_volatile(v as *mut u64, u64::from(ss)) };
    write_plan(&s.dbg, &[piece(v, 0x6100, 8, ACCESS_READ_WRITE)]).map_err(|e| errno_msg("arm", e))?;
    drain(&s.control)?;
    // SAFETY: reloads SS with its own value and makes a yield syscall,
    // which clobbers rcx and r11 and returns in rax.
    unsafe {
        asm!(
            "mov ss, word ptr [{v}]",
            "syscall",
            v = in(reg) v,
            inout("rax") syscall::SYS_YIELD => _,
            out("rcx") _,
            out("r11") _,
        );
    }
    let r = expect_hits(&s.control, &[data_hit(0x6100, v)]);
    write_plan(&s.dbg, &[]).map_err(|e| errno_msg("clear", e))?;
    r
}

/// A kernel variable the #DB handler itself writes (hwbp's readiness flag)
/// watched through a CPU plan, then a kernel-mode hit: the handler runs
/// with DR7 clear, so its own store does not trap inside it (a nested #DB
/// on the same IST stack would overwrite the outer frame). The kernel must
/// survive and record the kernel-mode hit.
fn handler_state_watched(s: &Session, cpu0: &Fd, flag: u64) -> Check {
    let clock = addr_of(&raw mut crate::CLOCK);
    let mut plan = [0u8; CPU_PLAN_SIZE];
    plan[3 * RAW_PIECE_SIZE..].copy_from_slice(&piece(flag, 0x6200, 1, hwbp_kern::abi::ACCESS_WRITE).to_bytes());
    cpu0.write(&plan).map_err(|e| errno_msg("arm cpu-0 on the readiness flag", e))?;
    write_plan(&s.dbg, &[piece(clock, 0x6201, 8, hwbp_kern::abi::ACCESS_WRITE)]).map_err(|e| errno_msg("arm", e))?;
    drain(&s.control)?;
    // SAFETY: CLOCK is 8-aligned with room for a TimeSpec.
    let ts = unsafe { &mut *(clock as *mut syscall::TimeSpec) };
    let r = syscall::clock_gettime(syscall::CLOCK_MONOTONIC, ts).map_err(|e| errno_msg("clock_gettime", e.errno));
    let hits = drain(&s.control);
    write_plan(&s.dbg, &[]).map_err(|e| errno_msg("clear", e))?;
    cpu0.write(&[0u8; CPU_PLAN_SIZE]).map_err(|e| errno_msg("clear cpu-0", e))?;
    r?;
    let hits = hits?;
    let kernel_hit = hits
        .as_slice()
        .iter()
        .any(|h| h.token == 0x6201 && h.flags & hwbp_kern::abi::HIT_KERNEL_MODE != 0);
    if !kernel_hit {
        fail!("no kernel-mode record of the watched clock buffer ({} records)", hits.as_slice().len());
    }
    Ok(())
}

pub fn group_attacks(t: &mut Tally, s: &Session) {
    let env = Env::read();
    let cpu0 = match dup(s.control.raw(), "cpu-0") {
        Ok(fd) => fd,
        Err(e) => {
            check!(t, Err(errno_msg("dup cpu-0", e)), "attacks: not run");
            return;
        }
    };
    let deny = |name: &str, at: fn(u64) -> RawPiece, offset: u64| -> Check {
        let env = env.as_ref().map_err(|e| {
            let mut l = Line::default();
            let _ = write!(l, "{e}");
            l
        })?;
        refused_everywhere(s, &cpu0, at(env.symbol(name)?.wrapping_add(offset)))
    };
    check!(t, deny("SYSCALL_ENTRY", exec_at, 0), "attacks: an exec breakpoint on the syscall entry is EINVAL");
    check!(t, deny("SYSCALL_ENTRY", exec_at, 0x20), "attacks: an exec breakpoint inside the syscall entry/exit is EINVAL");
    check!(t, deny("DEBUG_ENTRY", exec_at, 0), "attacks: an exec breakpoint on the #DB entry is EINVAL");
    check!(t, deny("NMI_ENTRY", exec_at, 0), "attacks: an exec breakpoint on the NMI entry is EINVAL");
    check!(t, deny("HWBP_TEXT", exec_at, 0), "attacks: an exec breakpoint on hwbp's own code is EINVAL");
    check!(t, deny("BSP_PCR", watch_at, 0x100), "attacks: a watch on CPU 0's per-CPU block (hwbp state, GDT, TSS) is EINVAL");
    check!(t, deny("BSP_IDT", watch_at, 8), "attacks: a watch on CPU 0's IDT is EINVAL");
    check!(t, deny("DEBUG_STACK", watch_at, (4096 << 2) - 64), "attacks: a watch on CPU 0's #DB stack is EINVAL");
    check!(t, deny("BACKUP_STACK", watch_at, (4096 << 4) - 64), "attacks: a watch on the NMI/#DF/#MC stack is EINVAL");
    let flag = env.as_ref().ok().and_then(|e| e.symbol("READINESS").ok());
    let watched_handler = match flag {
        Some(flag) => handler_state_watched(s, &cpu0, flag),
        None => Err(Line::default()),
    };
    check!(t, watched_handler, "attacks: a watch on a variable the #DB handler writes, then a kernel-mode hit: recorded, no nested #DB");
    check!(t, mov_ss_then_syscall(s), "attacks: mov ss from a watched variable, then syscall: one record, the process survives");
}
