//! A second context in our address space (proc: `new-context`, the way
//! Redox's runtime starts threads), CPU pinning (`sched-affinity`), and the
//! groups that need them: pieces follow their context, per-CPU pieces,
//! closing handles disarms.

use core::arch::global_asm;
use core::fmt::Write;
use core::sync::atomic::{AtomicU32, Ordering};

use hwbp_kern::abi::{RawPiece, ACCESS_WRITE, CPU_PLAN_SIZE, PIECE_CPU_LIMITED, RAW_PIECE_SIZE};
use hwbp_redox_selftest::{Expect, Line, Tally};

use crate::sys::{self, dup, openat, Fd, PROC_ROOT, SYS_ROOT};
use crate::{
    addr_of, data_hit, drain, errno_msg, expect_errno, expect_hits, expect_plan, open_dbg, piece, report, store,
    write_plan, Check, Session, VAR_A, VAR_B, VAR_C,
};

global_asm!(
    r#"
    .text
    .global thread_start
thread_start:
    call thread_main
    ud2
    .section .bss.thread_stack, "aw", @nobits
    .p2align 4
    .global thread_stack_bottom
thread_stack_bottom:
    .skip 65536
    .global thread_stack_top
thread_stack_top:
    "#
);

unsafe extern "C" {
    fn thread_start();
    static thread_stack_top: u8;
}

/// Commands for the second context (shared memory; it polls and yields).
const CMD_NOP: u32 = 0;
const CMD_STORE_A: u32 = 1;
const CMD_STORE_B: u32 = 2;
const CMD_STORE_C: u32 = 3;
/// Store to VAR_D (the stop group's variable).
pub const CMD_STORE_D: u32 = 4;
/// Call [`stop_target`] (the stop group's exec breakpoint).
pub const CMD_CALL_TARGET: u32 = 5;
/// Times [`stop_target`] ran.
pub static TARGET_CALLS: AtomicU32 = AtomicU32::new(0);

/// A function of its own, for an exec breakpoint on its first instruction.
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn stop_target() {
    TARGET_CALLS.fetch_add(1, Ordering::AcqRel);
}
static CMD: AtomicU32 = AtomicU32::new(CMD_NOP);
static SEQ: AtomicU32 = AtomicU32::new(0);
static ACK: AtomicU32 = AtomicU32::new(0);
/// How long we wait for the second context to answer (it answers within
/// a few scheduler ticks; this only bounds a broken kernel).
const ANSWER_TIMEOUT_NS: u64 = 20_000_000_000;
/// Each futex wait is cut into slices this long (a lost wakeup costs one).
const WAIT_SLICE_NS: u64 = 50_000_000;

/// The second context: waits (futex, no spinning: an idle CPU must be able
/// to steal a context we pin to it) for a command, runs it, acknowledges.
#[unsafe(no_mangle)]
extern "C" fn thread_main() -> ! {
    let mut last = 0;
    loop {
        let seq = SEQ.load(Ordering::Acquire);
        if seq != last {
            // SAFETY: the variables are our statics; offsets are aligned.
            unsafe {
                match CMD.load(Ordering::Relaxed) {
                    CMD_STORE_A => store(addr_of(&raw mut VAR_A), 8),
                    CMD_STORE_B => store(addr_of(&raw mut VAR_B), 4),
                    CMD_STORE_C => store(addr_of(&raw mut VAR_C), 8),
                    CMD_STORE_D => store(addr_of(&raw mut crate::VAR_D), 8),
                    CMD_CALL_TARGET => stop_target(),
                    _ => {}
                }
            }
            last = seq;
            ACK.store(seq, Ordering::Release);
            sys::futex_wake(&ACK);
        } else {
            sys::futex_wait(&SEQ, seq, sys::now_ns() + WAIT_SLICE_NS * 20);
        }
    }
}

pub struct Thread {
    ctx: Fd,
    aff: Fd,
}

/// What the groups share besides the session.
pub struct Infra {
    thread: Option<Thread>,
    main_aff: Option<Fd>,
    cpus: usize,
    /// The thread's debug-state handle (opened in the contexts group).
    dbg2: Option<Fd>,
}

impl Infra {
    pub fn none() -> Infra {
        Infra { thread: None, main_aff: None, cpus: 0, dbg2: None }
    }
}

/// Hand the second context `cmd` without waiting; returns the sequence
/// number its acknowledgement will carry.
pub fn post(cmd: u32) -> u32 {
    CMD.store(cmd, Ordering::Relaxed);
    let seq = SEQ.load(Ordering::Relaxed) + 1;
    SEQ.store(seq, Ordering::Release);
    sys::futex_wake(&SEQ);
    seq
}

/// The sequence number of the last command posted.
pub fn last_seq() -> u32 {
    SEQ.load(Ordering::Acquire)
}

/// Whether the second context acknowledged `seq` within `ns`.
pub fn acked_within(seq: u32, ns: u64) -> bool {
    let deadline = sys::now_ns() + ns;
    loop {
        let ack = ACK.load(Ordering::Acquire);
        if ack == seq {
            return true;
        }
        let now = sys::now_ns();
        if now > deadline {
            return false;
        }
        sys::futex_wait(&ACK, ack, (now + WAIT_SLICE_NS).min(deadline));
    }
}

/// Have the second context run `cmd`; returns when it has.
fn in_thread(cmd: u32) -> Check {
    let seq = post(cmd);
    let deadline = sys::now_ns() + ANSWER_TIMEOUT_NS;
    loop {
        let ack = ACK.load(Ordering::Acquire);
        if ack == seq {
            return Ok(());
        }
        let now = sys::now_ns();
        if now > deadline {
            fail!("the second context did not answer command {cmd} within 20 s");
        }
        sys::futex_wait(&ACK, ack, now + WAIT_SLICE_NS);
    }
}

fn cpu_count() -> Result<usize, Line> {
    let fd = openat(SYS_ROOT, "cpu", syscall::O_RDONLY).map_err(|e| errno_msg("open sys:cpu", e))?;
    let mut buf = [0u8; 64];
    let n = fd.read(&mut buf).map_err(|e| errno_msg("read sys:cpu", e))?;
    let text = core::str::from_utf8(&buf[..n]).unwrap_or("");
    let first = text.lines().next().unwrap_or("");
    match first.strip_prefix("CPUs: ").and_then(|v| v.trim().parse().ok()) {
        Some(n) => Ok(n),
        None => fail!("sys:cpu said {first:?}"),
    }
}

/// Restrict a context to one CPU (kernel `RawMask`: 128 bits).
///
/// Only used to keep both contexts on CPU 0, where they already run: the
/// scheduler of kernel 663e664 never moves a context to CPU 1 (see
/// README.md), so nothing here relies on migration.
fn pin(aff: &Fd, cpu: usize) -> Check {
    let mut mask = [0u8; 16];
    mask[cpu / 8] |= 1 << (cpu % 8);
    aff.write(&mask).map_err(|e| errno_msg("sched-affinity", e))?;
    Ok(())
}

fn spawn(ctx: &Fd) -> Result<Thread, Line> {
    let sp = &raw const thread_stack_top as usize;
    let ip = thread_start as unsafe extern "C" fn() as usize;
    let new = new_context(ctx, ip, sp)?;
    let aff = dup(new.raw(), "sched-affinity").map_err(|e| errno_msg("sched-affinity", e))?;
    start(&new)?;
    Ok(Thread { ctx: new, aff })
}

/// A new context in our address space that will start at `ip` on stack
/// `sp`, not started yet (see [`start`]).
pub fn new_context(ctx: &Fd, ip: usize, sp: usize) -> Result<Fd, Line> {
    let new = dup(PROC_ROOT, "new-context").map_err(|e| errno_msg("new-context", e))?;
    let addrspace = dup(ctx.raw(), "addrspace").map_err(|e| errno_msg("addrspace", e))?;
    let switch = dup(new.raw(), "current-addrspace").map_err(|e| errno_msg("current-addrspace", e))?;
    let mut words = [0u8; 24];
    for (chunk, w) in words.chunks_exact_mut(8).zip([addrspace.raw(), sp, ip]) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    switch.write(&words).map_err(|e| errno_msg("write current-addrspace", e))?;
    // Closing applies the address space, stack and entry point.
    switch.close().map_err(|e| errno_msg("close current-addrspace", e))?;
    drop(addrspace);
    Ok(new)
}

/// Start a context made by [`new_context`].
pub fn start(new: &Fd) -> Result<(), Line> {
    let start = dup(new.raw(), "start").map_err(|e| errno_msg("start", e))?;
    start.write(&0usize.to_le_bytes()).map_err(|e| errno_msg("write start", e))?;
    Ok(())
}

impl Infra {
    /// The second context's handle, if it runs.
    pub fn thread_ctx(&self) -> Option<&Fd> {
        self.thread.as_ref().map(|t| &t.ctx)
    }
}

/// Have the second context store to VAR_C (it acknowledges when done).
pub fn thread_stores_c() -> Check {
    in_thread(CMD_STORE_C)
}

/// Infrastructure checks that do not need the patch: CPU count, a second
/// context, pinning.
pub fn setup(t: &mut Tally, ctx: &Fd) -> Infra {
    let mut infra = Infra::none();
    let cpus = cpu_count();
    infra.cpus = *cpus.as_ref().unwrap_or(&0);
    let two = cpus.and_then(|n| if n >= 2 { Ok(()) } else { fail!("{n} CPU(s); run QEMU with -smp 2") });
    check!(t, two, "sys:cpu reports at least 2 CPUs");
    let spawned = spawn(ctx).and_then(|th| {
        in_thread(CMD_NOP)?;
        Ok(th)
    });
    match spawned {
        Ok(th) => {
            check!(t, Ok(()), "proc: new-context runs a second context in our address space");
            infra.thread = Some(th);
        }
        Err(e) => check!(t, Err(e), "proc: new-context runs a second context in our address space"),
    }
    let pinned = (|| -> Result<Fd, Line> {
        let aff = dup(ctx.raw(), "sched-affinity").map_err(|e| errno_msg("dup sched-affinity", e))?;
        pin(&aff, 0)?;
        if let Some(th) = &infra.thread {
            pin(&th.aff, 0)?;
            in_thread(CMD_NOP)?;
        }
        Ok(aff)
    })();
    match pinned {
        Ok(aff) => {
            check!(t, Ok(()), "sched-affinity keeps both contexts on CPU 0");
            infra.main_aff = Some(aff);
        }
        Err(e) => check!(t, Err(e), "sched-affinity keeps both contexts on CPU 0"),
    }
    infra
}

const T_MAIN_A: u64 = 0x2001;
const T_THREAD_B: u64 = 0x2002;
const T_THREAD_A: u64 = 0x2003;

/// Two contexts armed differently, switching between them on CPU 0: each
/// context's pieces fire only for its own accesses.
pub fn group_contexts(t: &mut Tally, s: &Session, infra: &mut Infra) {
    let (Some(th), Some(_)) = (&infra.thread, &infra.main_aff) else {
        check!(t, Err(Line::default()), "contexts: not run, no second context");
        return;
    };
    let dbg2 = match open_dbg(&th.ctx, &s.control) {
        Ok(fd) => fd,
        Err(e) => {
            check!(t, Err(errno_msg("dup", e)), "contexts: auth-<control>-regs/debug opens on the second context");
            return;
        }
    };
    let a = addr_of(&raw mut VAR_A);
    let b = addr_of(&raw mut VAR_B);
    let main_plan = [piece(a, T_MAIN_A, 8, ACCESS_WRITE)];
    let thread_plan = [piece(b, T_THREAD_B, 4, ACCESS_WRITE), piece(a, T_THREAD_A, 8, ACCESS_WRITE)];
    let armed = (|| -> Check {
        write_plan(&s.dbg, &main_plan).map_err(|e| errno_msg("arm main", e))?;
        write_plan(&dbg2, &thread_plan).map_err(|e| errno_msg("arm second", e))?;
        expect_plan(&s.dbg, &main_plan)?;
        expect_plan(&dbg2, &thread_plan)?;
        let ro = dup(th.ctx.raw(), "regs/debug").map_err(|e| errno_msg("dup regs/debug", e))?;
        expect_plan(&ro, &thread_plan)
    })();
    check!(t, armed, "contexts: two contexts armed differently, plans read back (also via plain regs/debug)");
    let mut ids = (0u64, 0u64);
    for round in 1..=3 {
        let r = (|| -> Check {
            drain(&s.control)?;
            // SAFETY: our statics, aligned.
            unsafe { store(a, 8) };
            let h = drain(&s.control)?;
            hwbp_redox_selftest::check_hits(h.as_slice(), &[data_hit(T_MAIN_A, a)]).map_err(|m| msg("main stores A", m))?;
            let main_id = h.as_slice()[0].context;
            // SAFETY: as above.
            unsafe { store(b, 4) };
            expect_hits(&s.control, &[]).map_err(|m| msg("main stores B (armed only in the second context)", m))?;
            in_thread(CMD_STORE_B)?;
            let h = drain(&s.control)?;
            hwbp_redox_selftest::check_hits(h.as_slice(), &[data_hit(T_THREAD_B, b)]).map_err(|m| msg("second stores B", m))?;
            let thread_id = h.as_slice()[0].context;
            in_thread(CMD_STORE_A)?;
            expect_hits(&s.control, &[data_hit(T_THREAD_A, a)]).map_err(|m| msg("second stores A", m))?;
            if main_id == thread_id {
                fail!("both contexts reported as context {main_id:#x}");
            }
            if round > 1 && ids != (main_id, thread_id) {
                fail!("context ids changed between rounds");
            }
            ids = (main_id, thread_id);
            Ok(())
        })();
        check!(t, r, "contexts round {round}, both on CPU 0: each context's pieces fire only for its own accesses");
    }
    let cleared = write_plan(&s.dbg, &[]).and_then(|()| write_plan(&dbg2, &[]));
    check!(t, cleared.map_err(|e| errno_msg("clear", e)), "contexts: both plans clear with an empty write");
    infra.dbg2 = Some(dbg2);
}

fn msg(what: &str, m: impl core::fmt::Display) -> Line {
    let mut l = Line::default();
    let _ = write!(l, "{what}: {m}");
    l
}

const T_CPU0_C: u64 = 0x3000;
const T_CPU1_D: u64 = 0x3001;
const T_ONLY_CPU1: u64 = 0x3002;
const T_ONLY_CPU0: u64 = 0x3003;

fn cpu_plan(reg: usize, p: RawPiece) -> [u8; CPU_PLAN_SIZE] {
    let mut b = [0u8; CPU_PLAN_SIZE];
    b[reg * RAW_PIECE_SIZE..(reg + 1) * RAW_PIECE_SIZE].copy_from_slice(&p.to_bytes());
    b
}

/// The CPU plan reads back, and reaches the CPU: `pending` drops to 0 once
/// that CPU has loaded it into its registers (for CPU 1: after the kernel's
/// switch IPI made it reschedule).
fn cpu_plan_settles(fd: &Fd, want: &[u8; CPU_PLAN_SIZE]) -> Check {
    let mut buf = [0u8; CPU_PLAN_SIZE + 16];
    let deadline = sys::now_ns() + ANSWER_TIMEOUT_NS;
    loop {
        let n = fd.read(&mut buf).map_err(|e| errno_msg("cpu plan read", e))?;
        if n != CPU_PLAN_SIZE + 16 {
            fail!("cpu plan read returned {n} bytes, expected 112");
        }
        if buf[..CPU_PLAN_SIZE] != want[..] {
            fail!("cpu plan reads back different bytes");
        }
        let dropped = u64::from_le_bytes(buf[CPU_PLAN_SIZE..CPU_PLAN_SIZE + 8].try_into().unwrap_or([0xff; 8]));
        let pending = u64::from_le_bytes(buf[CPU_PLAN_SIZE + 8..].try_into().unwrap_or([0xff; 8]));
        if dropped != 0 {
            fail!("{dropped} hit records dropped");
        }
        if pending == 0 {
            return Ok(());
        }
        if sys::now_ns() > deadline {
            fail!("pending stayed 1 for 20 s");
        }
        sys::yield_now();
    }
}

/// Per-CPU pieces. Every context runs on CPU 0 (the kernel never moves one
/// to CPU 1), so CPU 1 is checked through its plan handle (`pending` shows
/// CPU 1 loaded the plan) and by its pieces not firing on CPU 0.
pub fn group_cpus(t: &mut Tally, s: &Session, infra: &mut Infra) {
    if infra.thread.is_none() || infra.main_aff.is_none() {
        check!(t, Err(Line::default()), "per-CPU: not run, no second context");
        return;
    }
    if infra.cpus < 2 {
        check!(t, Err(Line::default()), "per-CPU: not run, fewer than 2 CPUs");
        return;
    }
    let (cpu0, cpu1) = match (dup(s.control.raw(), "cpu-0"), dup(s.control.raw(), "cpu-1")) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            check!(t, Err(errno_msg("dup", e)), "per-CPU: cpu-0 and cpu-1 open on the control handle");
            return;
        }
    };
    let c = addr_of(&raw mut VAR_C);
    let d = addr_of(&raw mut crate::VAR_D);
    let on0 = |token, addr| Expect { cpu: Some(0), ..data_hit(token, addr) };
    let plan0 = cpu_plan(0, piece(c, T_CPU0_C, 8, ACCESS_WRITE));
    let r = (|| -> Check {
        drain(&s.control)?;
        cpu0.write(&plan0).map_err(|e| errno_msg("write cpu-0", e))?;
        cpu_plan_settles(&cpu0, &plan0)?;
        // SAFETY: our static.
        unsafe { store(c, 8) };
        expect_hits(&s.control, &[on0(T_CPU0_C, c)]).map_err(|m| msg("main on CPU 0 stores C", m))?;
        in_thread(CMD_STORE_C)?;
        expect_hits(&s.control, &[on0(T_CPU0_C, c)]).map_err(|m| msg("second context on CPU 0 stores C", m))
    })();
    check!(t, r, "per-CPU: a cpu-0 piece (DR0) fires for every context on CPU 0; plan reads back, pending 0");
    let plan1 = cpu_plan(2, piece(d, T_CPU1_D, 8, ACCESS_WRITE));
    let r = (|| -> Check {
        cpu1.write(&plan1).map_err(|e| errno_msg("write cpu-1", e))?;
        cpu_plan_settles(&cpu1, &plan1)?;
        // SAFETY: our statics.
        unsafe {
            store(d, 8);
            store(c, 8);
        }
        expect_hits(&s.control, &[on0(T_CPU0_C, c)]).map_err(|m| msg("on CPU 0: store D (CPU 1's), store C (CPU 0's)", m))
    })();
    check!(t, r, "per-CPU: a cpu-1 plan (DR2) reaches CPU 1 (pending 0) and never fires on CPU 0");
    let base = &raw mut crate::VAR_A as u64;
    let fits = (|| -> Check {
        // CPU 0 and CPU 1 each have one register taken.
        let four = [0u64, 8, 16, 24].map(|o| piece(base + 128 + o, 0x3100, 8, ACCESS_WRITE));
        expect_errno(write_plan(&s.dbg, &four), syscall::ENOSPC).map_err(|m| msg("4 pieces for every CPU", m))?;
        write_plan(&s.dbg, &four[..3]).map_err(|e| errno_msg("3 pieces beside a 1-register CPU plan", e))?;
        let only = |cpu: u32, o: u64| RawPiece { flags: PIECE_CPU_LIMITED, cpu, ..piece(base + 128 + o, 0x3101, 8, ACCESS_WRITE) };
        let four_on_1 = [only(1, 0), only(1, 8), only(1, 16), only(1, 24)];
        expect_errno(write_plan(&s.dbg, &four_on_1), syscall::ENOSPC).map_err(|m| msg("4 pieces limited to CPU 1", m))?;
        let three_each = [only(0, 0), only(0, 8), only(0, 16), only(1, 0), only(1, 8), only(1, 16)];
        write_plan(&s.dbg, &three_each).map_err(|e| errno_msg("3 pieces limited to each CPU", e))?;
        write_plan(&s.dbg, &[]).map_err(|e| errno_msg("clear", e))
    })();
    check!(t, fits, "per-CPU: room is counted per CPU (4 beside a CPU plan: ENOSPC; 3, or 3 limited to each CPU: fit)");
    let a = addr_of(&raw mut VAR_A);
    let b = addr_of(&raw mut VAR_B);
    let limited = (|| -> Check {
        let p1 = RawPiece { flags: PIECE_CPU_LIMITED, cpu: 1, ..piece(a, T_ONLY_CPU1, 8, ACCESS_WRITE) };
        let p0 = RawPiece { flags: PIECE_CPU_LIMITED, cpu: 0, ..piece(b, T_ONLY_CPU0, 4, ACCESS_WRITE) };
        write_plan(&s.dbg, &[p1, p0]).map_err(|e| errno_msg("arm", e))?;
        expect_plan(&s.dbg, &[p1, p0])?;
        // SAFETY: our statics.
        unsafe {
            store(a, 8);
            store(b, 4);
        }
        expect_hits(&s.control, &[on0(T_ONLY_CPU0, b)])?;
        write_plan(&s.dbg, &[]).map_err(|e| errno_msg("clear", e))
    })();
    check!(t, limited, "per-CPU: context pieces limited to a CPU fire only there (CPU 0: yes, CPU 1's: not on CPU 0)");
    let closed = (|| -> Check {
        cpu0.close().map_err(|e| errno_msg("close cpu-0", e))?;
        // SAFETY: our static.
        unsafe { store(c, 8) };
        in_thread(CMD_STORE_C)?;
        expect_hits(&s.control, &[]).map_err(|m| msg("stores on CPU 0 after closing cpu-0", m))?;
        cpu1.close().map_err(|e| errno_msg("close cpu-1", e))?;
        let again = dup(s.control.raw(), "cpu-1").map_err(|e| errno_msg("reopen cpu-1", e))?;
        cpu_plan_settles(&again, &[0u8; CPU_PLAN_SIZE]).map_err(|m| msg("cpu-1 after close", m))
    })();
    check!(t, closed, "per-CPU: closing a cpu-<n> handle clears that CPU's plan (and it reaches the CPU)");
}

/// Closing handles disarms; a closed control's handles refuse writes; the
/// control can be taken again. Returns the session with the new control.
pub fn group_close(t: &mut Tally, s: Session, infra: &mut Infra) -> Session {
    let Session { control, ctx, dbg } = s;
    let a = addr_of(&raw mut VAR_A);
    let b = addr_of(&raw mut VAR_B);
    let c = addr_of(&raw mut VAR_C);
    let r = (|| -> Check {
        write_plan(&dbg, &[piece(a, 0x4000, 8, ACCESS_WRITE)]).map_err(|e| errno_msg("arm", e))?;
        dbg.close().map_err(|e| errno_msg("close", e))?;
        drain(&control)?;
        // SAFETY: our static.
        unsafe { store(a, 8) };
        expect_hits(&control, &[]).map_err(|m| msg("store after close", m))
    })();
    check!(t, r, "closing: closing our auth regs/debug handle disarms our pieces");
    let dbg = match open_dbg(&ctx, &control) {
        Ok(fd) => fd,
        Err(e) => {
            check!(t, Err(errno_msg("dup", e)), "closing: regs/debug reopens");
            return Session { control, ctx, dbg: Fd::invalid() };
        }
    };
    // Arm a context plan on the second context and a CPU plan, then close
    // the control handle: both must be gone.
    let cpu0 = dup(control.raw(), "cpu-0");
    let dbg2 = infra.dbg2.take();
    let armed = (|| -> Check {
        let cpu0 = cpu0.as_ref().map_err(|e| errno_msg("dup cpu-0", *e))?;
        let dbg2 = dbg2.as_ref().ok_or_else(|| errno_msg("no second regs/debug", syscall::EBADF))?;
        write_plan(dbg2, &[piece(b, 0x4001, 4, ACCESS_WRITE)]).map_err(|e| errno_msg("arm second", e))?;
        cpu0.write(&cpu_plan(1, piece(c, 0x4002, 8, ACCESS_WRITE))).map_err(|e| errno_msg("arm cpu-0", e))?;
        write_plan(&dbg, &[piece(a, 0x4003, 8, ACCESS_WRITE)]).map_err(|e| errno_msg("arm main", e))?;
        drain(&control)?;
        Ok(())
    })();
    check!(t, armed, "closing: second context, CPU 0 and our context armed before closing the control");
    let close = control.close();
    check!(t, close.map_err(|e| errno_msg("close", e)), "closing: the control handle closes");
    // SAFETY: our statics.
    unsafe {
        store(a, 8);
        store(c, 8);
    }
    let _ = in_thread(CMD_STORE_B);
    let _ = in_thread(CMD_STORE_C);
    let refused = (|| -> Check {
        let dbg2 = dbg2.as_ref().ok_or_else(|| errno_msg("no second regs/debug", syscall::EBADF))?;
        expect_errno(write_plan(dbg2, &[piece(b, 1, 4, ACCESS_WRITE)]), syscall::EPERM).map_err(|m| prefixed("second regs/debug", m))?;
        expect_errno(write_plan(&dbg, &[piece(a, 1, 8, ACCESS_WRITE)]), syscall::EPERM).map_err(|m| prefixed("our regs/debug", m))?;
        let cpu0 = cpu0.as_ref().map_err(|e| errno_msg("dup cpu-0", *e))?;
        expect_errno(cpu0.write(&[0u8; CPU_PLAN_SIZE]).map(|_| ()), syscall::EPERM).map_err(|m| prefixed("cpu-0", m))
    })();
    check!(t, refused, "closing: handles opened with a closed control refuse writes (EPERM)");
    drop(cpu0);
    drop(dbg2);
    drop(dbg);
    let control = match openat(SYS_ROOT, "hwbp-control", syscall::O_RDWR) {
        Ok(fd) => fd,
        Err(e) => {
            check!(t, Err(errno_msg("dup", e)), "closing: hwbp-control can be taken again");
            return Session { control: Fd::invalid(), ctx, dbg: Fd::invalid() };
        }
    };
    check!(t, Ok(()), "closing: hwbp-control can be taken again");
    let disarmed = (|| -> Check {
        let hits = drain(&control)?;
        if let Some(h) = hits.as_slice().first() {
            fail!("{} hit(s) after the control closed, first token {:#x} cpu {}", hits.as_slice().len(), h.token, h.cpu);
        }
        let ro = dup(ctx.raw(), "regs/debug").map_err(|e| errno_msg("dup regs/debug", e))?;
        expect_plan(&ro, &[])?;
        if let Some(th) = &infra.thread {
            let ro2 = dup(th.ctx.raw(), "regs/debug").map_err(|e| errno_msg("dup regs/debug", e))?;
            expect_plan(&ro2, &[]).map_err(|m| msg("second context", m))?;
        }
        let cpu0 = dup(control.raw(), "cpu-0").map_err(|e| errno_msg("dup cpu-0", e))?;
        cpu_plan_settles(&cpu0, &[0u8; CPU_PLAN_SIZE]).map_err(|m| msg("cpu-0", m))
    })();
    check!(t, disarmed, "closing: closing the control disarmed every context plan and the CPU plan");
    let dbg = open_dbg(&ctx, &control).unwrap_or_else(|_| Fd::invalid());
    Session { control, ctx, dbg }
}

fn prefixed(what: &str, m: Line) -> Line {
    let mut l = Line::default();
    let _ = write!(l, "{what}: {}", core::str::from_utf8(m.as_bytes()).unwrap_or("?"));
    l
}
