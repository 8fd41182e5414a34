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

/// Have the second context run `cmd`; returns when it has.
fn in_thread(cmd: u32) -> Check {
    CMD.store(cmd, Ordering::Relaxed);
    let seq = SEQ.load(Ordering::Relaxed) + 1;
    SEQ.store(seq, Ordering::Release);
    sys::futex_wake(&SEQ);
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
fn pin(aff: &Fd, cpu: usize) -> Check {
    let mut mask = [0u8; 16];
    mask[cpu / 8] |= 1 << (cpu % 8);
    aff.write(&mask).map_err(|e| errno_msg("sched-affinity", e))?;
    // For our own context: the next switch leaves us queued where we may
    // not run, and the (idle) target CPU steals us at its next tick.
    sys::yield_now();
    Ok(())
}

fn spawn(ctx: &Fd) -> Result<Thread, Line> {
    let new = dup(PROC_ROOT, "new-context").map_err(|e| errno_msg("new-context", e))?;
    let addrspace = dup(ctx.raw(), "addrspace").map_err(|e| errno_msg("addrspace", e))?;
    let switch = dup(new.raw(), "current-addrspace").map_err(|e| errno_msg("current-addrspace", e))?;
    let sp = &raw const thread_stack_top as usize;
    let ip = thread_start as unsafe extern "C" fn() as usize;
    let mut words = [0u8; 24];
    for (chunk, w) in words.chunks_exact_mut(8).zip([addrspace.raw(), sp, ip]) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    switch.write(&words).map_err(|e| errno_msg("write current-addrspace", e))?;
    // Closing applies the address space, stack and entry point.
    switch.close().map_err(|e| errno_msg("close current-addrspace", e))?;
    drop(addrspace);
    let aff = dup(new.raw(), "sched-affinity").map_err(|e| errno_msg("sched-affinity", e))?;
    let start = dup(new.raw(), "start").map_err(|e| errno_msg("start", e))?;
    start.write(&0usize.to_le_bytes()).map_err(|e| errno_msg("write start", e))?;
    Ok(Thread { ctx: new, aff })
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
    match dup(ctx.raw(), "sched-affinity") {
        Ok(aff) => {
            if infra.cpus >= 2 {
                let r = pin(&aff, 1).and_then(|()| pin(&aff, 0));
                check!(t, r, "sched-affinity moves us to CPU 1 and back");
            }
            infra.main_aff = Some(aff);
        }
        Err(e) => check!(t, Err(errno_msg("dup sched-affinity", e)), "sched-affinity opens on our context"),
    }
    infra
}

const T_MAIN_A: u64 = 0x2001;
const T_THREAD_B: u64 = 0x2002;
const T_THREAD_A: u64 = 0x2003;

/// Two contexts armed differently; switching between them on one CPU, then
/// on two, each context's pieces fire only for its own accesses.
pub fn group_contexts(t: &mut Tally, s: &Session, infra: &mut Infra) {
    let (Some(th), Some(main_aff)) = (&infra.thread, &infra.main_aff) else {
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
        pin(main_aff, 0)?;
        pin(&th.aff, 0)?;
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
    if infra.cpus >= 2 {
        let r = (|| -> Check {
            pin(&th.aff, 1)?;
            in_thread(CMD_STORE_B)?;
            let e = Expect { cpu: Some(1), ..data_hit(T_THREAD_B, b) };
            expect_hits(&s.control, &[e]).map_err(|m| msg("second context on CPU 1 stores B", m))?;
            // SAFETY: our static.
            unsafe { store(b, 4) };
            expect_hits(&s.control, &[]).map_err(|m| msg("main stores B", m))?;
            pin(&th.aff, 0)
        })();
        check!(t, r, "contexts: the second context's pieces follow it to CPU 1");
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
const T_CPU1_C: u64 = 0x3001;
const T_LIMITED_D: u64 = 0x3002;

fn cpu_plan(reg: usize, p: RawPiece) -> [u8; CPU_PLAN_SIZE] {
    let mut b = [0u8; CPU_PLAN_SIZE];
    b[reg * RAW_PIECE_SIZE..(reg + 1) * RAW_PIECE_SIZE].copy_from_slice(&p.to_bytes());
    b
}

/// The CPU plan reads back, and reaches the CPU (`pending` drops to 0).
fn cpu_plan_settles(fd: &Fd, want: &[u8; CPU_PLAN_SIZE]) -> Check {
    let mut buf = [0u8; CPU_PLAN_SIZE + 16];
    for _ in 0..1000 {
        let n = fd.read(&mut buf).map_err(|e| errno_msg("cpu plan read", e))?;
        if n != CPU_PLAN_SIZE + 16 {
            fail!("cpu plan read returned {n} bytes, expected 112");
        }
        if buf[..CPU_PLAN_SIZE] != want[..] {
            fail!("cpu plan reads back different bytes");
        }
        let pending = u64::from_le_bytes(buf[CPU_PLAN_SIZE + 8..].try_into().unwrap_or([0xff; 8]));
        if pending == 0 {
            return Ok(());
        }
        sys::yield_now();
    }
    fail!("pending stayed 1")
}

pub fn group_cpus(t: &mut Tally, s: &Session, infra: &mut Infra) {
    let (Some(th), Some(main_aff)) = (&infra.thread, &infra.main_aff) else {
        check!(t, Err(Line::default()), "per-CPU: not run, no second context");
        return;
    };
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
    let plan0 = cpu_plan(0, piece(c, T_CPU0_C, 8, ACCESS_WRITE));
    let r = (|| -> Check {
        pin(main_aff, 0)?;
        pin(&th.aff, 0)?;
        drain(&s.control)?;
        cpu0.write(&plan0).map_err(|e| errno_msg("write cpu-0", e))?;
        cpu_plan_settles(&cpu0, &plan0)?;
        // SAFETY: our static.
        unsafe { store(c, 8) };
        let on0 = Expect { cpu: Some(0), ..data_hit(T_CPU0_C, c) };
        expect_hits(&s.control, &[on0]).map_err(|m| msg("main on CPU 0 stores C", m))?;
        in_thread(CMD_STORE_C)?;
        expect_hits(&s.control, &[on0]).map_err(|m| msg("second context on CPU 0 stores C", m))
    })();
    check!(t, r, "per-CPU: a cpu-0 piece (DR0) fires for every context on CPU 0, plan reads back with pending 0");
    let r = (|| -> Check {
        pin(main_aff, 1)?;
        // SAFETY: our static.
        unsafe { store(c, 8) };
        expect_hits(&s.control, &[]).map_err(|m| msg("main on CPU 1 stores C, only CPU 0 armed", m))?;
        let plan1 = cpu_plan(2, piece(c, T_CPU1_C, 8, ACCESS_WRITE));
        cpu1.write(&plan1).map_err(|e| errno_msg("write cpu-1", e))?;
        cpu_plan_settles(&cpu1, &plan1)?;
        // SAFETY: our static.
        unsafe { store(c, 8) };
        expect_hits(&s.control, &[Expect { cpu: Some(1), ..data_hit(T_CPU1_C, c) }])
            .map_err(|m| msg("main on CPU 1 stores C, CPU 1 armed (DR2)", m))
    })();
    check!(t, r, "per-CPU: CPU 0's piece stays off CPU 1; CPU 1's own plan (DR2) fires there");
    let base = &raw mut crate::VAR_A as u64;
    let fits = (|| -> Check {
        let four = [0u64, 8, 16, 24].map(|o| piece(base + 128 + o, 0x3100, 8, ACCESS_WRITE));
        expect_errno(write_plan(&s.dbg, &four), syscall::ENOSPC)?;
        write_plan(&s.dbg, &four[..3]).map_err(|e| errno_msg("3 pieces beside a 1-register CPU plan", e))?;
        write_plan(&s.dbg, &[]).map_err(|e| errno_msg("clear", e))
    })();
    check!(t, fits, "per-CPU: 4 context pieces beside a CPU plan are ENOSPC, 3 fit");
    let d = addr_of(&raw mut crate::VAR_D);
    let limited = (|| -> Check {
        let p = RawPiece { flags: PIECE_CPU_LIMITED, cpu: 0, ..piece(d, T_LIMITED_D, 8, ACCESS_WRITE) };
        write_plan(&s.dbg, &[p]).map_err(|e| errno_msg("arm", e))?;
        // We are on CPU 1.
        // SAFETY: our static, aligned.
        unsafe { store(d, 8) };
        expect_hits(&s.control, &[]).map_err(|m| msg("on CPU 1", m))?;
        pin(main_aff, 0)?;
        // SAFETY: as above.
        unsafe { store(d, 8) };
        expect_hits(&s.control, &[Expect { cpu: Some(0), ..data_hit(T_LIMITED_D, d) }]).map_err(|m| msg("on CPU 0", m))?;
        write_plan(&s.dbg, &[]).map_err(|e| errno_msg("clear", e))
    })();
    check!(t, limited, "per-CPU: a context piece limited to CPU 0 fires on CPU 0 only");
    let closed = (|| -> Check {
        // On CPU 0.
        cpu0.close().map_err(|e| errno_msg("close cpu-0", e))?;
        // SAFETY: our static.
        unsafe { store(c, 8) };
        in_thread(CMD_STORE_C)?;
        expect_hits(&s.control, &[]).map_err(|m| msg("stores on CPU 0 after closing cpu-0", m))?;
        cpu1.close().map_err(|e| errno_msg("close cpu-1", e))?;
        pin(main_aff, 1)?;
        // SAFETY: our static.
        unsafe { store(c, 8) };
        expect_hits(&s.control, &[]).map_err(|m| msg("store on CPU 1 after closing cpu-1", m))?;
        pin(main_aff, 0)
    })();
    check!(t, closed, "per-CPU: closing a cpu-<n> handle disarms that CPU's plan");
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
    let control = match dup(PROC_ROOT, "hwbp-control") {
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
            expect_plan(&ro2, &[])?;
        }
        Ok(())
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
