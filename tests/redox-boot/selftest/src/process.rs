//! Process plans (`pid-<pid>` on the control handle, kernel-patch/ABI.md):
//! one plan for every thread of a process, threads named later included;
//! the plan ends at the last exit and at a change of identity, with an
//! event on the control stream; a reused pid is never watched through an
//! ended plan; and a #DB reporting a single step and a watch at once.
//!
//! We play procmgr: we hold the proc: authority, so we name contexts
//! (`attrs`: pid, euid, egid) the way it does.

use core::arch::global_asm;
use core::fmt::Write;

use hwbp_kern::abi::{
    HitRecord, RawPiece, ACCESS_WRITE, EVENT_EXIT, EVENT_IDENTITY, HIT_EVENT, HIT_WITH_SINGLE_STEP, RAW_PIECE_SIZE,
};
use hwbp_redox_selftest::{auth_name, Line, Tally};

use crate::sys::{self, dup, Errno, Fd, PROC_ROOT};
use crate::thread::{self, Infra};
use crate::{addr_of, drain, errno_msg, expect_errno, piece, report, store, write_plan, Check, Session, VAR_A, VAR_C};

/// Pids we give our contexts (procmgr never runs here: nothing else uses them).
const PID_MAIN: u32 = 77;
const PID_EXIT: u32 = 78;
const PID_TF: u32 = 79;
const PID_FLOOD: u32 = 80;
const PID_QUIET: u32 = 81;

const T_PROC: u64 = 0x7001;
const T_EXIT: u64 = 0x7002;
const T_TF: u64 = 0x7003;
const T_MAIN: u64 = 0x7004;
const T_FLOOD: u64 = 0x7005;
const T_QUIET: u64 = 0x7006;
const T_CPU: u64 = 0x7007;

/// How long we wait for a short-lived context to run and die.
const DEATH_TIMEOUT_NS: u64 = 10_000_000_000;

// Short-lived contexts: `store_then_die` stores to VAR_C once and executes
// `ud2` (an unhandled exception ends the context); `step_store_then_die`
// sets TF first, so the store's #DB also reports a single step (the
// single-step path then ends the context). Each gets its own stack.
global_asm!(
    r#"
    .text
    .global store_then_die
store_then_die:
    mov rax, [rip + var_c_addr]
    mov qword ptr [rax], 1
    ud2
    .global flood_then_die
flood_then_die:
    mov rax, [rip + var_c_addr]
    mov rcx, 1000
2:
    mov qword ptr [rax], rcx
    dec rcx
    jnz 2b
    ud2
    .global step_store_then_die
step_store_then_die:
    mov rax, [rip + var_c_addr]
    pushfq
    or qword ptr [rsp], 0x100
    popfq
    mov qword ptr [rax], 2
    ud2
    .section .bss.short_stacks, "aw", @nobits
    .p2align 4
    .skip 16384
    .global short_stack_1
short_stack_1:
    .skip 16384
    .global short_stack_2
short_stack_2:
    .skip 16384
    .global short_stack_3
short_stack_3:
    .skip 16384
    .global short_stack_4
short_stack_4:
    .skip 16384
    .global short_stack_5
short_stack_5:
    .section .data.var_c_addr, "aw"
    .p2align 3
    .global var_c_addr
var_c_addr:
    .quad 0
    "#
);

unsafe extern "C" {
    fn store_then_die();
    fn step_store_then_die();
    fn flood_then_die();
    static short_stack_1: u8;
    static short_stack_2: u8;
    static short_stack_3: u8;
    static short_stack_4: u8;
    static short_stack_5: u8;
    static mut var_c_addr: u64;
}

/// `ProcSchemeAttrs` of redox_syscall 0.9.2: pid, euid, egid, prio (u32
/// each), then a 32-byte name.
const ATTRS_SIZE: usize = 48;

fn attrs_handle(ctx: &Fd) -> Result<Fd, Line> {
    let mut name = Line::default();
    dup(ctx.raw(), auth_name(PROC_ROOT, "attrs", &mut name)).map_err(|e| errno_msg("dup attrs", e))
}

/// Name `ctx` as procmgr does: change its pid and/or euid, keep the rest.
fn set_attrs(ctx: &Fd, pid: Option<u32>, euid: Option<u32>) -> Check {
    let fd = attrs_handle(ctx)?;
    let mut attrs = [0u8; ATTRS_SIZE];
    fd.read(&mut attrs).map_err(|e| errno_msg("read attrs", e))?;
    if let Some(pid) = pid {
        attrs[0..4].copy_from_slice(&pid.to_le_bytes());
    }
    if let Some(euid) = euid {
        attrs[4..8].copy_from_slice(&euid.to_le_bytes());
    }
    fd.write(&attrs).map_err(|e| errno_msg("write attrs", e))?;
    Ok(())
}

fn open_pid(control: &Fd, pid: u32) -> Result<Fd, Errno> {
    let mut name = Line::default();
    let _ = write!(name, "pid-{pid}");
    dup(control.raw(), core::str::from_utf8(name.as_bytes()).unwrap_or(""))
}

fn hits_and_events(control: &Fd) -> Result<([HitRecord; 64], usize), Line> {
    let hits = drain(control)?;
    let mut out = [HitRecord::ZERO; 64];
    let n = hits.as_slice().len();
    out[..n].copy_from_slice(hits.as_slice());
    Ok((out, n))
}

fn is_event(r: &HitRecord, kind: u64, pid: u32) -> bool {
    r.flags & HIT_EVENT != 0 && r.token == kind && r.context >> 32 == u64::from(pid)
}

/// Wait until a context's plan reads back empty (it exited: the kernel
/// clears the plan of a dead context) or the timeout.
fn wait_plan_cleared(ctx: &Fd) -> Check {
    let ro = dup(ctx.raw(), "regs/debug").map_err(|e| errno_msg("dup regs/debug", e))?;
    let deadline = sys::now_ns() + DEATH_TIMEOUT_NS;
    loop {
        let mut buf = [0u8; RAW_PIECE_SIZE * 16];
        match ro.read(&mut buf) {
            Ok(0) | Err(syscall::ESRCH) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(errno_msg("read regs/debug", e)),
        }
        if sys::now_ns() > deadline {
            fail!("the context still holds its plan after 10 s (not dead, or not cleaned up at exit)");
        }
        sys::yield_now();
    }
}

/// Wait until the control stream yields a record `want` accepts; returns
/// every record read until then.
fn wait_for(control: &Fd, what: &str, want: impl Fn(&HitRecord) -> bool) -> Result<([HitRecord; 64], usize), Line> {
    let deadline = sys::now_ns() + DEATH_TIMEOUT_NS;
    let mut all = [HitRecord::ZERO; 64];
    let mut n = 0;
    loop {
        let (got, k) = hits_and_events(control)?;
        for r in &got[..k] {
            if n < all.len() {
                all[n] = *r;
                n += 1;
            }
        }
        if all[..n].iter().any(&want) {
            return Ok((all, n));
        }
        if sys::now_ns() > deadline {
            fail!("no {what} within 10 s ({n} other records)");
        }
        sys::yield_now();
    }
}

fn plan_of(token: u64) -> [RawPiece; 1] {
    [piece(addr_of(&raw mut VAR_C), token, 8, ACCESS_WRITE)]
}

pub fn group_process(t: &mut Tally, s: &Session, infra: &Infra) {
    let Some(th) = infra.thread_ctx() else {
        check!(t, Err(Line::default()), "process: not run, no second context");
        return;
    };
    let c = addr_of(&raw mut VAR_C);
    // SAFETY: written once before any short-lived context runs.
    unsafe { var_c_addr = c };

    // One plan, two threads.
    let named = set_attrs(&s.ctx, Some(PID_MAIN), None).and_then(|()| set_attrs(th, Some(PID_MAIN), None));
    check!(t, named, "process: our two contexts named pid {PID_MAIN} (attrs, as procmgr does)");
    let proc77 = open_pid(&s.control, PID_MAIN);
    let opened = proc77.as_ref().map(|_| ()).map_err(|e| errno_msg("pid-77", *e));
    check!(t, opened, "process: pid-{PID_MAIN} opens on the control handle");
    let Ok(proc77) = proc77 else { return };
    check!(t, expect_errno(open_pid(&s.control, PID_MAIN).map(|_| ()), syscall::EBUSY), "process: a second pid-{PID_MAIN} is EBUSY");
    check!(t, expect_errno(open_pid(&s.control, 4242).map(|_| ()), syscall::ESRCH), "process: pid-4242 (no such process) is ESRCH");
    let both = (|| -> Check {
        write_plan(&proc77, &plan_of(T_PROC)).map_err(|e| errno_msg("write pid plan", e))?;
        drain(&s.control)?;
        // SAFETY: our static.
        unsafe { store(c, 8) };
        thread::thread_stores_c()?;
        let (h, n) = hits_and_events(&s.control)?;
        let ours: usize = h[..n].iter().filter(|r| r.token == T_PROC && r.addr == c).count();
        if ours != 2 || n != 2 || h[0].context == h[1].context {
            fail!("{n} records, {ours} of the plan's token; want one from each thread");
        }
        Ok(())
    })();
    check!(t, both, "process: one pid-{PID_MAIN} write arms both threads (a hit from each)");

    // A thread named later is watched from its first instruction.
    let late = (|| -> Check {
        let sp = &raw const short_stack_1 as usize;
        let t3 = thread::new_context(&s.ctx, store_then_die as unsafe extern "C" fn() as usize, sp)?;
        set_attrs(&t3, Some(PID_MAIN), None)?;
        drain(&s.control)?;
        thread::start(&t3)?;
        wait_plan_cleared(&t3)?;
        let (h, n) = hits_and_events(&s.control)?;
        let ours = h[..n].iter().filter(|r| r.token == T_PROC).count();
        if ours != 1 {
            fail!("{ours} hits of the new thread's first store (want 1), {n} records");
        }
        if h[..n].iter().any(|r| r.flags & HIT_EVENT != 0) {
            fail!("an event for pid {PID_MAIN}, whose other threads live");
        }
        // The plan outlives one thread's exit.
        // SAFETY: our static.
        unsafe { store(c, 8) };
        let (h, n) = hits_and_events(&s.control)?;
        if n != 1 || h[0].token != T_PROC {
            fail!("after the new thread exited, our store gave {n} records");
        }
        Ok(())
    })();
    check!(t, late, "process: a thread named pid {PID_MAIN} after the write hits on its first store; its exit clears its plan, the others keep theirs");

    // Exit: the last thread ends the plan, with an event; a reused pid is
    // never watched through it.
    let exit = (|| -> Check {
        let t4 = thread::new_context(&s.ctx, store_then_die as unsafe extern "C" fn() as usize, &raw const short_stack_2 as usize)?;
        set_attrs(&t4, Some(PID_EXIT), None)?;
        let p78 = open_pid(&s.control, PID_EXIT).map_err(|e| errno_msg("pid-78", e))?;
        write_plan(&p78, &plan_of(T_EXIT)).map_err(|e| errno_msg("write pid-78", e))?;
        drain(&s.control)?;
        thread::start(&t4)?;
        let (h, n) = wait_for(&s.control, "exit event", |r| is_event(r, EVENT_EXIT, PID_EXIT))?;
        if h[..n].iter().filter(|r| r.token == T_EXIT && r.flags & HIT_EVENT == 0).count() != 1 {
            fail!("the only thread's store was not recorded once before its exit event");
        }
        expect_errno(write_plan(&p78, &plan_of(T_EXIT)), syscall::ESRCH).map_err(|m| crate::prefix("write after exit", m))?;
        // The pid comes back for another process: not watched.
        let t5 = thread::new_context(&s.ctx, store_then_die as unsafe extern "C" fn() as usize, &raw const short_stack_3 as usize)?;
        set_attrs(&t5, Some(PID_EXIT), None)?;
        thread::start(&t5)?;
        wait_plan_cleared(&t5)?;
        // Its death leaves no record; give it time to have stored.
        let deadline = sys::now_ns() + 200_000_000;
        while sys::now_ns() < deadline {
            sys::yield_now();
        }
        let (h, n) = hits_and_events(&s.control)?;
        if let Some(r) = h[..n].iter().find(|r| r.token == T_EXIT) {
            fail!("the reused pid was watched through the ended plan (record flags {:#x})", r.flags);
        }
        Ok(())
    })();
    check!(t, exit, "process: the last thread's exit ends the plan (EVENT_EXIT, writes ESRCH); a new process reusing the pid is not watched");

    // Identity: an euid change drops the plan from every thread.
    let identity = (|| -> Check {
        write_plan(&proc77, &plan_of(T_PROC)).map_err(|e| errno_msg("rewrite", e))?;
        drain(&s.control)?;
        set_attrs(th, None, Some(1000))?;
        let _ = wait_for(&s.control, "identity event", |r| is_event(r, EVENT_IDENTITY, PID_MAIN))?;
        expect_errno(write_plan(&proc77, &plan_of(T_PROC)), syscall::ESRCH).map_err(|m| crate::prefix("write after the change", m))?;
        // SAFETY: our static.
        unsafe { store(c, 8) };
        thread::thread_stores_c()?;
        let (h, n) = hits_and_events(&s.control)?;
        if n != 0 {
            fail!("{n} records after the identity change (token {:#x})", h[0].token);
        }
        Ok(())
    })();
    check!(t, identity, "process: an euid change of one thread ends the plan for every thread (EVENT_IDENTITY, no more hits, writes ESRCH)");
    drop(proc77);

    // TF and a watch in one #DB: the record says so, the context dies in
    // the single-step path, and DR6 was cleared: our next plain hit is one
    // record and we live.
    let tf = (|| -> Check {
        let t6 = thread::new_context(&s.ctx, step_store_then_die as unsafe extern "C" fn() as usize, &raw const short_stack_4 as usize)?;
        set_attrs(&t6, Some(PID_TF), None)?;
        let p79 = open_pid(&s.control, PID_TF).map_err(|e| errno_msg("pid-79", e))?;
        write_plan(&p79, &plan_of(T_TF)).map_err(|e| errno_msg("write pid-79", e))?;
        drain(&s.control)?;
        thread::start(&t6)?;
        let (h, n) = wait_for(&s.control, "exit event", |r| is_event(r, EVENT_EXIT, PID_TF))?;
        let hit = h[..n].iter().find(|r| r.token == T_TF).ok_or_else(|| {
            let mut l = Line::default();
            let _ = write!(l, "no record of the stepped store");
            l
        })?;
        if hit.flags & HIT_WITH_SINGLE_STEP == 0 {
            fail!("the stepped store's record lacks HIT_WITH_SINGLE_STEP (flags {:#x})", hit.flags);
        }
        let a = addr_of(&raw mut VAR_A);
        write_plan(&s.dbg, &[piece(a, T_MAIN, 8, ACCESS_WRITE)]).map_err(|e| errno_msg("arm main", e))?;
        // SAFETY: our static.
        unsafe { store(a, 8) };
        let (h, n) = hits_and_events(&s.control)?;
        write_plan(&s.dbg, &[]).map_err(|e| errno_msg("clear main", e))?;
        if n != 1 || h[0].token != T_MAIN || h[0].flags != 0 {
            fail!("our plain hit after it gave {n} records (first flags {:#x})", h[0].flags);
        }
        Ok(())
    })();
    check!(t, tf, "process: TF + watch in one #DB: recorded with HIT_WITH_SINGLE_STEP, the context dies; DR6 was cleared (our next hit is plain, we live)");
}

/// Count records `{token, hits}` of a `pid-<pid>` or `cpu-<n>` read, from
/// byte `from` on.
fn counts_in(bytes: &[u8], from: usize, token: u64) -> u64 {
    bytes
        .get(from..)
        .unwrap_or(&[])
        .chunks_exact(16)
        .filter(|r| u64::from_le_bytes(r[..8].try_into().unwrap_or([0; 8])) == token)
        .map(|r| u64::from_le_bytes(r[8..].try_into().unwrap_or([0; 8])))
        .sum()
}

fn read_counts(fd: &Fd, token: u64) -> Result<u64, Line> {
    let mut buf = [0u8; 16 * 64];
    let n = fd.read(&mut buf).map_err(|e| errno_msg("read counts", e))?;
    if n % 16 != 0 {
        fail!("a count read of {n} bytes, not whole records");
    }
    Ok(counts_in(&buf[..n], 0, token))
}

/// Exact counts: a flood of hits from one process fills the CPU's record
/// ring, and another process's three stores still count three (their
/// records were dropped); the flood counts every one of its 1,000 stores,
/// read after it exited; a CPU plan's piece counts too.
pub fn group_counts(t: &mut Tally, s: &Session) {
    let c = addr_of(&raw mut VAR_C);
    let a = addr_of(&raw mut VAR_A);
    let flood = (|| -> Check {
        set_attrs(&s.ctx, Some(PID_QUIET), None)?;
        let quiet = open_pid(&s.control, PID_QUIET).map_err(|e| errno_msg("pid-81", e))?;
        write_plan(&quiet, &[piece(a, T_QUIET, 8, ACCESS_WRITE)]).map_err(|e| errno_msg("write pid-81", e))?;
        let t7 = thread::new_context(&s.ctx, flood_then_die as unsafe extern "C" fn() as usize, &raw const short_stack_5 as usize)?;
        set_attrs(&t7, Some(PID_FLOOD), None)?;
        let loud = open_pid(&s.control, PID_FLOOD).map_err(|e| errno_msg("pid-80", e))?;
        write_plan(&loud, &plan_of(T_FLOOD)).map_err(|e| errno_msg("write pid-80", e))?;
        drain(&s.control)?;
        read_counts(&quiet, T_QUIET)?;
        thread::start(&t7)?;
        wait_plan_cleared(&t7)?;
        // The ring (256 records) is full of the flood's records now: ours
        // are dropped, but counted.
        for _ in 0..3 {
            // SAFETY: our static.
            unsafe { store(a, 8) };
        }
        sys::yield_now();
        let quiet_hits = read_counts(&quiet, T_QUIET)?;
        let loud_hits = read_counts(&loud, T_FLOOD)?;
        let mut records = 0usize;
        let mut ours = 0usize;
        loop {
            let (h, n) = hits_and_events(&s.control)?;
            if n == 0 {
                break;
            }
            records += h[..n].iter().filter(|r| r.flags & HIT_EVENT == 0).count();
            ours += h[..n].iter().filter(|r| r.token == T_QUIET).count();
        }
        if quiet_hits != 3 || loud_hits != 1000 {
            fail!("counted {quiet_hits} of our 3 stores and {loud_hits} of the flood's 1000 ({records} records reached us, {ours} ours)");
        }
        if records >= 1003 {
            fail!("every record arrived ({records}): the ring never overflowed, the check proves nothing");
        }
        let mut buf = [0u8; 16 * 4];
        expect_errno(loud.read(&mut buf).map(|_| ()), syscall::ESRCH).map_err(|m| crate::prefix("read after the last counts", m))?;
        Ok(())
    })();
    check!(t, flood, "counts: 1,000 hits of one process overflow the record ring; another's 3 stores still count exactly 3, the flood exactly 1,000 (read after its exit)");

    let cpu = (|| -> Check {
        let cpu0 = dup(s.control.raw(), "cpu-0").map_err(|e| errno_msg("dup cpu-0", e))?;
        let b = addr_of(&raw mut crate::VAR_B);
        let mut plan = [0u8; hwbp_kern::abi::CPU_PLAN_SIZE];
        plan[RAW_PIECE_SIZE..2 * RAW_PIECE_SIZE].copy_from_slice(&piece(b, T_CPU, 4, ACCESS_WRITE).to_bytes());
        cpu0.write(&plan).map_err(|e| errno_msg("arm cpu-0", e))?;
        for _ in 0..5 {
            // SAFETY: our static.
            unsafe { store(b, 4) };
        }
        let mut buf = [0u8; 120 + 16 * 8];
        let n = cpu0.read(&mut buf).map_err(|e| errno_msg("read cpu-0", e))?;
        let first = counts_in(&buf[..n], 120, T_CPU);
        let n = cpu0.read(&mut buf).map_err(|e| errno_msg("read cpu-0", e))?;
        let again = counts_in(&buf[..n], 120, T_CPU);
        cpu0.write(&[0u8; hwbp_kern::abi::CPU_PLAN_SIZE]).map_err(|e| errno_msg("clear cpu-0", e))?;
        drain(&s.control)?;
        if first != 5 || again != 0 {
            fail!("cpu-0 counted {first} of 5 stores, then {again} more");
        }
        Ok(())
    })();
    check!(t, cpu, "counts: a CPU plan's piece counts 5 stores exactly in the cpu-0 read, then 0 (read and reset)");
}
