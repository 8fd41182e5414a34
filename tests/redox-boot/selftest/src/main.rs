//! First process of the real Redox kernel: checks the hwbp kernel patch
//! through its proc: handles (kernel-patch/ABI.md) and prints `PASS ...` /
//! `FAIL ...` lines, then `hwbp-selftest: N passed, M failed`, on `debug:`,
//! then powers off through `sys:kstop`.
//!
//! The kernel starts us with zeroed registers and no stack: `_start` sets
//! up the stack (in .bss, which the packer put inside the image).
#![no_std]
#![no_main]

mod sys;

use core::arch::global_asm;
use core::fmt::Write;
use core::hint::black_box;
use core::ptr::{read_volatile, write_volatile};

use hwbp_kern::abi::{
    HitRecord, RawPiece, ACCESS_EXEC, ACCESS_READ_WRITE, ACCESS_WRITE, CPU_PLAN_SIZE, HIT_EXEC, HIT_KERNEL_MODE,
    HIT_RECORD_SIZE, PIECE_CPU_LIMITED, RAW_PIECE_SIZE,
};
use hwbp_redox_selftest::{
    access_name, auth_name, check_hits, data_cases, encode_pieces, errno_name, plan_in_register, Expect, Line, Tally,
    REGISTERS,
};
use sys::{dup, openat, Errno, Fd, PROC_ROOT, SYS_ROOT};

global_asm!(
    r#"
    .section .text._start, "ax"
    .global _start
_start:
    lea rsp, [rip + main_stack_top]
    xor ebp, ebp
    call selftest_main
    ud2
    .section .bss.main_stack, "aw", @nobits
    .p2align 4
    .skip 262144
main_stack_top:
    "#
);

/// Memory the pieces watch. Each test area is its own 256-byte block so
/// neighbouring accesses (one byte before / after a piece) stay inside it.
#[repr(C, align(256))]
pub struct Area([u8; 256]);

static mut DATA: Area = Area([0; 256]);
static mut FILLERS: Area = Area([0; 256]);
pub static mut VAR_A: Area = Area([0; 256]);
pub static mut VAR_B: Area = Area([0; 256]);
pub static mut VAR_C: Area = Area([0; 256]);
pub static mut VAR_D: Area = Area([0; 256]);
pub static mut CLOCK: Area = Area([0; 256]);

/// Offset of the watched address inside an area (room on both sides).
const AT: u64 = 64;

pub fn addr_of(area: *mut Area) -> u64 {
    area as u64 + AT
}

/// Store `len` bytes at `addr` in one access.
///
/// # Safety
/// `addr` must be inside one of our areas, aligned to `len`.
pub unsafe fn store(addr: u64, len: u8) {
    // SAFETY: forwarded; volatile keeps the access exactly this size.
    unsafe {
        match len {
            1 => write_volatile(addr as *mut u8, 0xa5),
            2 => write_volatile(addr as *mut u16, 0xa5a5),
            4 => write_volatile(addr as *mut u32, 0xa5a5_a5a5),
            _ => write_volatile(addr as *mut u64, 0xa5a5_a5a5_a5a5_a5a5),
        }
    }
}

/// Load `len` bytes at `addr` in one access.
///
/// # Safety
/// As `store`.
unsafe fn load(addr: u64, len: u8) -> u64 {
    // SAFETY: forwarded.
    unsafe {
        match len {
            1 => u64::from(read_volatile(addr as *const u8)),
            2 => u64::from(read_volatile(addr as *const u16)),
            4 => u64::from(read_volatile(addr as *const u32)),
            _ => read_volatile(addr as *const u64),
        }
    }
}

/// The exec-breakpoint target.
#[inline(never)]
#[unsafe(no_mangle)]
extern "C" fn exec_target(x: u64) -> u64 {
    black_box(x).wrapping_mul(3)
}

fn exec_target_addr() -> u64 {
    exec_target as extern "C" fn(u64) -> u64 as usize as u64
}

fn call_exec_target() -> u64 {
    let f: extern "C" fn(u64) -> u64 = black_box(exec_target);
    f(black_box(5))
}

/// A failure message.
type Check = Result<(), Line>;

macro_rules! fail {
    ($($t:tt)*) => {{
        let mut l = Line::default();
        let _ = write!(l, $($t)*);
        return Err(l);
    }};
}

fn report(t: &mut Tally, name: core::fmt::Arguments, r: Check) {
    t.record(r.is_ok());
    match r {
        Ok(()) => say!("PASS {name}"),
        Err(msg) if msg.as_bytes().is_empty() => say!("FAIL {name}"),
        Err(msg) => say!("FAIL {name}: {msg}"),
    }
}

macro_rules! check {
    ($t:expr, $r:expr, $($name:tt)*) => { report($t, format_args!($($name)*), $r) };
}

// After the macros, so `fail!` and `check!` are in scope there.
mod attacks;
mod process;
mod stop;
mod stream;
mod thread;

fn errno_msg(what: &str, e: Errno) -> Line {
    let mut l = Line::default();
    let _ = write!(l, "{what}: {} ({e})", errno_name(e));
    l
}

/// Up to 64 hit records.
pub struct Hits {
    recs: [HitRecord; 64],
    n: usize,
}

impl Hits {
    pub fn as_slice(&self) -> &[HitRecord] {
        &self.recs[..self.n]
    }
}

/// Read the control handle until EAGAIN.
pub fn drain(control: &Fd) -> Result<Hits, Line> {
    let mut hits = Hits { recs: [HitRecord::ZERO; 64], n: 0 };
    let mut buf = [0u8; HIT_RECORD_SIZE * 8];
    loop {
        match control.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if n % HIT_RECORD_SIZE != 0 {
                    fail!("control read returned {n} bytes, not whole records");
                }
                for chunk in buf[..n].chunks_exact(HIT_RECORD_SIZE) {
                    let rec = HitRecord::from_bytes(chunk.try_into().unwrap_or(&[0; HIT_RECORD_SIZE]));
                    if hits.n < hits.recs.len() {
                        hits.recs[hits.n] = rec;
                        hits.n += 1;
                    }
                }
            }
            Err(e) if e == syscall::EAGAIN => break,
            Err(e) => return Err(errno_msg("control read", e)),
        }
    }
    Ok(hits)
}

/// Drain and compare with `expected`.
pub fn expect_hits(control: &Fd, expected: &[Expect]) -> Check {
    let hits = drain(control)?;
    if let Err(m) = check_hits(hits.as_slice(), expected) {
        let mut l = Line::default();
        let _ = write!(l, "{m}");
        if let Some(h) = hits.as_slice().first() {
            let _ = write!(l, " [first: token {:#x} addr {:#x} rip {:#x} cpu {} flags {:#x}]", h.token, h.addr, h.rip, h.cpu, h.flags);
        }
        return Err(l);
    }
    Ok(())
}

pub fn data_hit(token: u64, addr: u64) -> Expect {
    Expect { token, addr, flags: 0, rip: None, cpu: None }
}

pub fn piece(addr: u64, token: u64, len: u8, access: u8) -> RawPiece {
    RawPiece { addr, token, cpu: 0, len, access, flags: 0 }
}

/// Write a context plan; `Ok` only if the kernel took all of it.
pub fn write_plan(handle: &Fd, pieces: &[RawPiece]) -> Result<(), Errno> {
    let mut buf = [0u8; RAW_PIECE_SIZE * 17];
    let n = encode_pieces(pieces, &mut buf);
    match handle.write(&buf[..n]) {
        Ok(w) if w == n => Ok(()),
        Ok(_) => Err(syscall::EIO),
        Err(e) => Err(e),
    }
}

/// The plan must read back exactly as written.
fn expect_plan(handle: &Fd, pieces: &[RawPiece]) -> Check {
    let mut want = [0u8; RAW_PIECE_SIZE * 16];
    let n = encode_pieces(pieces, &mut want);
    let mut got = [0u8; RAW_PIECE_SIZE * 16];
    let r = handle.read(&mut got).map_err(|e| errno_msg("plan read", e))?;
    if got[..r] != want[..n] {
        fail!("plan read back {} bytes, differs from the {} written", r, n);
    }
    Ok(())
}

/// Session handles: the control handle and our own debug-state handle.
pub struct Session {
    pub control: Fd,
    pub ctx: Fd,
    pub dbg: Fd,
}

fn open_dbg(ctx: &Fd, control: &Fd) -> Result<Fd, Errno> {
    let mut name = Line::default();
    dup(ctx.raw(), auth_name(control.raw(), "regs/debug", &mut name))
}

fn open_session(t: &mut Tally, ctx: Fd) -> Option<Session> {
    let control = match openat(SYS_ROOT, "hwbp-control", syscall::O_RDWR) {
        Ok(fd) => fd,
        Err(e) => {
            check!(t, Err(errno_msg("open", e)), "sys: hwbp-control opens for root");
            return None;
        }
    };
    check!(t, Ok(()), "sys: hwbp-control opens for root");
    let dbg = match open_dbg(&ctx, &control) {
        Ok(fd) => fd,
        Err(e) => {
            check!(t, Err(errno_msg("dup", e)), "auth-<control>-regs/debug opens on our context");
            return None;
        }
    };
    check!(t, Ok(()), "auth-<control>-regs/debug opens on our context");
    Some(Session { control, ctx, dbg })
}

fn filler_addrs() -> [u64; 3] {
    let base = &raw mut FILLERS as u64;
    [base, base + 64, base + 128]
}
const FILLER_TOKEN: u64 = 0xf000;

/// One data case: `len` x `access` in debug register `reg`.
fn data_case(s: &Session, len: u8, access: u8, reg: usize, token: u64) -> Check {
    let a = addr_of(&raw mut DATA);
    let target = piece(a, token, len, access);
    let (plan, n) = plan_in_register(target, reg, filler_addrs(), FILLER_TOKEN);
    drain(&s.control)?;
    write_plan(&s.dbg, &plan[..n]).map_err(|e| errno_msg("arm", e))?;
    expect_plan(&s.dbg, &plan[..n])?;
    // SAFETY: `a` is inside DATA with 64 bytes on both sides, aligned to 8.
    unsafe {
        store(a, len);
        expect_hits(&s.control, &[data_hit(token, a)]).map_err(|m| prefix("store", m))?;
        let _ = load(a, len);
        let on_load: &[Expect] = if access == ACCESS_READ_WRITE { &[data_hit(token, a)] } else { &[] };
        expect_hits(&s.control, on_load).map_err(|m| prefix("load", m))?;
        store(a + u64::from(len) - 1, 1);
        expect_hits(&s.control, &[data_hit(token, a)]).map_err(|m| prefix("store to last byte", m))?;
        store(a + u64::from(len), 1);
        store(a - 1, 1);
        expect_hits(&s.control, &[]).map_err(|m| prefix("stores just outside", m))?;
    }
    write_plan(&s.dbg, &[]).map_err(|e| errno_msg("clear", e))?;
    // SAFETY: as above.
    unsafe { store(a, len) };
    expect_hits(&s.control, &[]).map_err(|m| prefix("store after clear", m))
}

fn prefix(what: &str, m: Line) -> Line {
    let mut l = Line::default();
    let _ = write!(l, "{what}: {}", core::str::from_utf8(m.as_bytes()).unwrap_or("?"));
    l
}

/// Exec breakpoint on `exec_target` in register `reg`: fires once per
/// call, before the instruction (rip = the function), and the call then
/// completes (RF set: no endless re-trap).
fn exec_case(s: &Session, reg: usize, token: u64) -> Check {
    let x = exec_target_addr();
    let target = piece(x, token, 1, ACCESS_EXEC);
    let (plan, n) = plan_in_register(target, reg, filler_addrs(), FILLER_TOKEN);
    drain(&s.control)?;
    write_plan(&s.dbg, &plan[..n]).map_err(|e| errno_msg("arm", e))?;
    let r1 = call_exec_target();
    let r2 = call_exec_target();
    if r1 != 15 || r2 != 15 {
        fail!("exec_target returned {r1}, {r2}");
    }
    let e = Expect { token, addr: x, flags: HIT_EXEC, rip: Some(x), cpu: None };
    expect_hits(&s.control, &[e, e])?;
    write_plan(&s.dbg, &[]).map_err(|e| errno_msg("clear", e))?;
    call_exec_target();
    expect_hits(&s.control, &[]).map_err(|m| prefix("call after clear", m))
}

/// Lowest kernel-half address on x86_64 (canonical, 48-bit).
const KERNEL_HALF: u64 = 0xFFFF_8000_0000_0000;

/// A kernel-mode access to a watched user buffer (the kernel writes the
/// time into it) is recorded with HIT_KERNEL_MODE and does not kill us.
fn kernel_mode_case(s: &Session) -> Check {
    let a = addr_of(&raw mut CLOCK);
    drain(&s.control)?;
    write_plan(&s.dbg, &[piece(a, 0x5000, 8, ACCESS_WRITE)]).map_err(|e| errno_msg("arm", e))?;
    // SAFETY: `a` is 8-aligned inside CLOCK with room for a TimeSpec.
    let ts = unsafe { &mut *(a as *mut syscall::TimeSpec) };
    syscall::clock_gettime(syscall::CLOCK_MONOTONIC, ts).map_err(|e| errno_msg("clock_gettime", e.errno))?;
    let hits = drain(&s.control)?;
    write_plan(&s.dbg, &[]).map_err(|e| errno_msg("clear", e))?;
    let h = hits.as_slice();
    if h.is_empty() {
        fail!("no hit for the kernel's write to the watched buffer");
    }
    for r in h {
        if r.token != 0x5000 || r.flags & HIT_KERNEL_MODE == 0 || r.addr != a {
            fail!("hit token {:#x} addr {:#x} flags {:#x}: expected token 0x5000, HIT_KERNEL_MODE", r.token, r.addr, r.flags);
        }
        if r.rip < KERNEL_HALF {
            fail!("kernel-mode hit with user rip {:#x}", r.rip);
        }
    }
    Ok(())
}

fn group_matrix(t: &mut Tally, s: &Session) {
    let mut token = 0x1000;
    for (len, access, reg) in data_cases() {
        token += 1;
        check!(t, data_case(s, len, access, reg, token), "data len={len} access={} DR{reg}: store/load/neighbours", access_name(access));
    }
    for reg in 0..REGISTERS {
        token += 1;
        check!(t, exec_case(s, reg, token), "exec DR{reg}: fires before the instruction, once per call");
    }
    check!(t, kernel_mode_case(s), "kernel-mode write to a watched user buffer: HIT_KERNEL_MODE, context survives");
}

/// Refusals: each bad write gets the ABI's errno and changes nothing.
fn group_errors(t: &mut Tally, s: &Session) {
    let a = addr_of(&raw mut DATA);
    let good = piece(a, 0x6000, 8, ACCESS_WRITE);
    let armed = write_plan(&s.dbg, &[good]);
    check!(t, armed.map_err(|e| errno_msg("arm", e)), "errors: a valid plan is armed first");
    let bad = |p: RawPiece| [good, p];
    let cases: [(&str, [RawPiece; 2], Errno); 6] = [
        ("len 3", bad(piece(a, 1, 3, ACCESS_WRITE)), syscall::EINVAL),
        ("address not a multiple of len", bad(piece(a + 2, 1, 4, ACCESS_WRITE)), syscall::EINVAL),
        ("access 2 (I/O)", bad(piece(a, 1, 4, 2)), syscall::EINVAL),
        ("exec with len 4", bad(piece(exec_target_addr() & !3, 1, 4, ACCESS_EXEC)), syscall::EINVAL),
        ("unknown flag bit", bad(RawPiece { flags: 1 << 5, ..piece(a, 1, 8, ACCESS_WRITE) }), syscall::EINVAL),
        ("non-canonical address", bad(piece(0x0000_8000_0000_0000, 1, 8, ACCESS_WRITE)), syscall::EINVAL),
    ];
    for (what, plan, errno) in cases {
        check!(t, expect_errno(write_plan(&s.dbg, &plan), errno), "errors: {what} refused with {}", errno_name(errno));
    }
    let mut buf = [0u8; RAW_PIECE_SIZE * 2];
    encode_pieces(&[good, good], &mut buf);
    check!(t, expect_errno(s.dbg.write(&buf[..RAW_PIECE_SIZE + 1]).map(|_| ()), syscall::EINVAL), "errors: length not a multiple of 24 refused with EINVAL");
    let many = [piece(a, 1, 8, ACCESS_WRITE); 17];
    check!(t, expect_errno(write_plan(&s.dbg, &many), syscall::ENOSPC), "errors: 17 pieces refused with ENOSPC");
    let base = &raw mut FILLERS as u64;
    let five = [0u64, 8, 16, 24, 32].map(|o| piece(base + o, 1, 8, ACCESS_WRITE));
    check!(t, expect_errno(write_plan(&s.dbg, &five), syscall::ENOSPC), "errors: 5 pieces on one CPU refused with ENOSPC");
    // Nothing changed: the first plan is still there and still fires.
    let unchanged = (|| -> Check {
        expect_plan(&s.dbg, &[good])?;
        drain(&s.control)?;
        // SAFETY: inside DATA, aligned.
        unsafe { store(a, 8) };
        expect_hits(&s.control, &[data_hit(0x6000, a)])
    })();
    check!(t, unchanged, "errors: refused writes leave the armed plan unchanged and firing");
    let _ = write_plan(&s.dbg, &[]);

    // Handles.
    let ro = dup(s.ctx.raw(), "regs/debug");
    let ro_check = match ro {
        Ok(fd) => expect_errno(write_plan(&fd, &[good]), syscall::EPERM),
        Err(e) => Err(errno_msg("dup regs/debug", e)),
    };
    check!(t, ro_check, "errors: plain regs/debug is read-only (EPERM)");
    let mut name = Line::default();
    let not_proc = dup(s.ctx.raw(), auth_name(sys::out_fd(), "regs/debug", &mut name)).map(|_| ());
    check!(t, expect_errno(not_proc, syscall::EBADF), "errors: auth-<fd>-regs/debug with a non-proc: fd is EBADF");
    let not_control = dup(s.ctx.raw(), auth_name(s.ctx.raw(), "regs/debug", &mut name)).map(|_| ());
    check!(t, expect_errno(not_control, syscall::EPERM), "errors: auth-<fd>-regs/debug with a proc: fd that is not the control is EPERM");
    check!(t, expect_errno(dup(s.control.raw(), "cpu-99").map(|_| ()), syscall::ESRCH), "errors: cpu-99 is ESRCH");
    check!(t, expect_errno(openat(SYS_ROOT, "hwbp-control", syscall::O_RDWR).map(|_| ()), syscall::EBUSY), "errors: a second hwbp-control is EBUSY");
    let mut small = [0u8; HIT_RECORD_SIZE - 1];
    check!(t, expect_errno(s.control.read(&mut small).map(|_| ()), syscall::EINVAL), "errors: control read into 47 bytes is EINVAL");
    let _ = drain(&s.control);
    let mut rec = [0u8; HIT_RECORD_SIZE];
    check!(t, expect_errno(s.control.read(&mut rec).map(|_| ()), syscall::EAGAIN), "errors: control read with nothing queued is EAGAIN");
    check!(t, expect_errno(s.control.write(&rec).map(|_| ()), syscall::EINVAL), "errors: control write is EINVAL");
    let cpu0 = dup(s.control.raw(), "cpu-0");
    let cpu_checks = match cpu0 {
        Ok(fd) => {
            let short = expect_errno(fd.write(&[0u8; CPU_PLAN_SIZE - 1]).map(|_| ()), syscall::EINVAL);
            let mut plan = [0u8; CPU_PLAN_SIZE];
            plan[..RAW_PIECE_SIZE].copy_from_slice(&RawPiece { flags: PIECE_CPU_LIMITED, ..piece(a, 1, 8, ACCESS_WRITE) }.to_bytes());
            let flagged = expect_errno(fd.write(&plan).map(|_| ()), syscall::EINVAL);
            short.and(flagged)
        }
        Err(e) => Err(errno_msg("dup cpu-0", e)),
    };
    check!(t, cpu_checks, "errors: cpu plan of 95 bytes, or with piece flags, is EINVAL");
}

fn expect_errno(r: Result<(), Errno>, want: Errno) -> Check {
    match r {
        Ok(()) => fail!("accepted; expected {}", errno_name(want)),
        Err(e) if e == want => Ok(()),
        Err(e) => fail!("got {} ({e}), expected {}", errno_name(e), errno_name(want)),
    }
}

#[unsafe(no_mangle)]
extern "C" fn selftest_main() -> ! {
    let out = sys::init_output();
    let mut t = Tally::default();
    say!("hwbp-selftest: first process running at {:#x}", selftest_main as extern "C" fn() -> ! as usize);
    check!(&mut t, out.map_err(|e| errno_msg("openat debug:", e)), "debug: opens for output");
    let ctx = dup(PROC_ROOT, "cur-context");
    check!(&mut t, ctx.as_ref().map(|_| ()).map_err(|e| errno_msg("dup", *e)), "proc: cur-context gives our context handle");
    let mut infra = match &ctx {
        Ok(ctx) => thread::setup(&mut t, ctx),
        Err(_) => thread::Infra::none(),
    };
    match ctx.ok().and_then(|ctx| open_session(&mut t, ctx)) {
        Some(mut s) => {
            group_matrix(&mut t, &s);
            thread::group_contexts(&mut t, &s, &mut infra);
            thread::group_cpus(&mut t, &s, &mut infra);
            group_errors(&mut t, &s);
            s = thread::group_close(&mut t, s, &mut infra);
            s = stop::group_stop(&mut t, s, &infra);
            attacks::group_attacks(&mut t, &s);
            process::group_process(&mut t, &s, &infra);
            process::group_counts(&mut t, &s);
            // Last: it leaves CPU 0's `dropped` counter non-zero for good.
            stream::group_stream(&mut t, &s);
            drop(s);
        }
        None => {
            for g in ["matrix", "contexts", "per-CPU", "errors", "closing", "stop", "attacks", "process", "stream"] {
                check!(&mut t, Err(Line::default()), "{g}: not run, the kernel offers no hwbp handles");
            }
        }
    }
    let mut l = Line::default();
    let _ = t.verdict(&mut l);
    say!("{}", core::str::from_utf8(l.as_bytes()).unwrap_or(""));
    let e = sys::shutdown();
    say!("hwbp-selftest: sys:kstop failed: {} ({e})", errno_name(e));
    sys::park()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    say!("FAIL panic: {info}");
    say!("hwbp-selftest: 0 passed, 1 failed");
    sys::shutdown();
    sys::park()
}
