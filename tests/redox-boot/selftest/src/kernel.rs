//! Kernel watchpoints (kgdb's and the ksym tracer's use): root arms CPU-plan
//! pieces on kernel addresses; a system call that touches them is recorded
//! with the kernel instruction pointer, and the system call completes.

use core::fmt::Write;

use hwbp_kern::abi::{HitRecord, ACCESS_EXEC, ACCESS_WRITE, CPU_PLAN_SIZE, HIT_EXEC, HIT_KERNEL_MODE, RAW_PIECE_SIZE};
use hwbp_redox_selftest::{Line, Tally};

use crate::attacks::Env;
use crate::sys::{dup, Fd};
use crate::{drain, errno_msg, piece, report, Check, Session};

const T_KVAR: u64 = 0x8001;
const T_KFUNC: u64 = 0x8002;
/// Most writers of the watched variable run.sh lists.
const MAX_WRITERS: usize = 8;

fn cpu_plan_with(p: hwbp_kern::abi::RawPiece) -> [u8; CPU_PLAN_SIZE] {
    let mut plan = [0u8; CPU_PLAN_SIZE];
    plan[..RAW_PIECE_SIZE].copy_from_slice(&p.to_bytes());
    plan
}

fn of_token(hits: &[HitRecord], token: u64) -> impl Iterator<Item = &HitRecord> {
    hits.iter().filter(move |h| h.token == token)
}

/// A write watch on proc:'s handle counter (`kernel::scheme::proc::NEXT_ID`):
/// opening one proc: handle writes it once, in kernel mode, at one of the
/// instructions run.sh found in the kernel's listing.
fn kernel_variable_watched(s: &Session, cpu0: &Fd, env: &Env) -> Check {
    let var = env.symbol("KVAR_NEXT_ID")?;
    let mut writers = [0u64; MAX_WRITERS];
    let mut n = 0;
    for (i, slot) in writers.iter_mut().enumerate() {
        let mut name = Line::default();
        let _ = write!(name, "KVAR_NEXT_ID_IP{i}");
        match env.symbol(core::str::from_utf8(name.as_bytes()).unwrap_or("")) {
            Ok(ip) => {
                *slot = ip;
                n += 1;
            }
            Err(_) => break,
        }
    }
    if n == 0 {
        fail!("run.sh listed no instruction that writes NEXT_ID");
    }
    cpu0.write(&cpu_plan_with(piece(var, T_KVAR, 8, ACCESS_WRITE))).map_err(|e| errno_msg("arm cpu-0", e))?;
    drain(&s.control)?;
    let opened = dup(s.ctx.raw(), "regs/debug").map_err(|e| errno_msg("dup regs/debug", e));
    let hits = drain(&s.control);
    cpu0.write(&[0u8; CPU_PLAN_SIZE]).map_err(|e| errno_msg("clear cpu-0", e))?;
    drop(opened?);
    let hits = hits?;
    let mut seen = 0;
    for h in of_token(hits.as_slice(), T_KVAR) {
        seen += 1;
        if h.flags != HIT_KERNEL_MODE || h.addr != var {
            fail!("record flags {:#x} addr {:#x}, expected KERNEL_MODE at {var:#x}", h.flags, h.addr);
        }
        if !writers[..n].contains(&h.rip) {
            fail!("rip {:#x} follows none of the {n} writes of NEXT_ID in the kernel's listing", h.rip);
        }
    }
    if seen != 1 {
        fail!("{seen} records for one proc: open, expected 1");
    }
    Ok(())
}

/// An exec breakpoint on `kernel::syscall::fs::lseek`: one lseek is one
/// record whose rip is the function's first instruction (a fault, before
/// it runs; RF lets it run), and the system call returns.
fn kernel_function_breakpoint(s: &Session, cpu0: &Fd, env: &Env) -> Check {
    let func = env.symbol("KFUNC_LSEEK")?;
    cpu0.write(&cpu_plan_with(piece(func, T_KFUNC, 1, ACCESS_EXEC))).map_err(|e| errno_msg("arm cpu-0", e))?;
    drain(&s.control)?;
    // Any handle will do: the breakpoint is on the way in, whatever the
    // scheme answers.
    let answer = syscall::lseek(s.control.raw(), 0, syscall::SEEK_CUR);
    let again = syscall::lseek(s.control.raw(), 0, syscall::SEEK_CUR);
    let hits = drain(&s.control);
    cpu0.write(&[0u8; CPU_PLAN_SIZE]).map_err(|e| errno_msg("clear cpu-0", e))?;
    let hits = hits?;
    let records: usize = of_token(hits.as_slice(), T_KFUNC).count();
    if let Some(h) = of_token(hits.as_slice(), T_KFUNC).find(|h| h.rip != func || h.flags != HIT_KERNEL_MODE | HIT_EXEC) {
        fail!("record rip {:#x} flags {:#x}, expected rip {func:#x} KERNEL_MODE|EXEC", h.rip, h.flags);
    }
    if records != 2 {
        fail!("{records} records for two lseek calls (answers {:?}, {:?})", answer.map_err(|e| e.errno), again.map_err(|e| e.errno));
    }
    Ok(())
}

pub fn group_kernel(t: &mut Tally, s: &Session) {
    let env = match Env::read() {
        Ok(env) => env,
        Err(e) => {
            check!(t, Err(e), "kernel: not run, no sys:env");
            return;
        }
    };
    let cpu0 = match dup(s.control.raw(), "cpu-0") {
        Ok(fd) => fd,
        Err(e) => {
            check!(t, Err(errno_msg("dup cpu-0", e)), "kernel: not run");
            return;
        }
    };
    check!(t, kernel_variable_watched(s, &cpu0, &env), "kernel: a watch on proc:'s NEXT_ID: one proc: open, one kernel-mode record at a writer's rip");
    check!(t, kernel_function_breakpoint(s, &cpu0, &env), "kernel: an exec breakpoint on syscall::fs::lseek: one record per call at its first instruction, the calls return");
}
