//! The hit stream beyond single reads: readiness through an event queue
//! (fevent on the control handle), and the per-CPU ring's overflow
//! accounting.

use core::fmt::Write;

use hwbp_kern::abi::{HitRecord, ACCESS_WRITE, CPU_PLAN_SIZE, HIT_RECORD_SIZE};
use hwbp_redox_selftest::{Line, Tally};

use crate::sys::{self, dup, openat, Fd};
use crate::{addr_of, drain, errno_msg, piece, report, store, write_plan, Check, Session, VAR_A};

/// `event:` root fd (scheme id 2).
const EVENT_ROOT: usize = syscall::UPPER_FDTBL_TAG | 2;
/// `struct Event { id: usize, flags: usize, data: usize }`.
const EVENT_SIZE: usize = 24;
const EVENT_READ: usize = 1;
const QUEUE_DATA: usize = 0x77;
/// How long a kernel-mode hit may take to raise readiness: "at the next
/// timer tick" (ABI.md); ticks are milliseconds, this allows for TCG.
const READY_TIMEOUT_NS: u64 = 2_000_000_000;
/// Hit records one CPU's ring holds (ABI.md).
const RING_CAPACITY: u64 = 256;
const OVERFLOW_HITS: u64 = 300;

fn register(queue: &Fd, control: &Fd) -> Check {
    let mut ev = [0u8; EVENT_SIZE];
    ev[..8].copy_from_slice(&control.raw().to_le_bytes());
    ev[8..16].copy_from_slice(&EVENT_READ.to_le_bytes());
    ev[16..].copy_from_slice(&QUEUE_DATA.to_le_bytes());
    match queue.write(&ev) {
        Ok(EVENT_SIZE) => Ok(()),
        Ok(n) => fail!("event queue took {n} bytes"),
        Err(e) => Err(errno_msg("register", e)),
    }
}

/// One pending event for the control handle, or `None` (non-blocking).
fn poll(queue: &Fd, control: &Fd) -> Result<bool, Line> {
    let mut ev = [0u8; EVENT_SIZE];
    match queue.read(&mut ev) {
        Ok(0) => Ok(false),
        Ok(EVENT_SIZE) => {
            let id = usize::from_le_bytes(ev[..8].try_into().unwrap_or([0; 8]));
            let flags = usize::from_le_bytes(ev[8..16].try_into().unwrap_or([0; 8]));
            let data = usize::from_le_bytes(ev[16..].try_into().unwrap_or([0; 8]));
            if id != control.raw() || flags & EVENT_READ == 0 || data != QUEUE_DATA {
                fail!("event id {id} flags {flags:#x} data {data:#x}");
            }
            Ok(true)
        }
        Ok(n) => fail!("event read returned {n} bytes"),
        Err(e) if e == syscall::EAGAIN => Ok(false),
        Err(e) => Err(errno_msg("event read", e)),
    }
}

fn wait_ready(queue: &Fd, control: &Fd) -> Check {
    let deadline = sys::now_ns() + READY_TIMEOUT_NS;
    loop {
        if poll(queue, control)? {
            return Ok(());
        }
        if sys::now_ns() > deadline {
            fail!("no EVENT_READ within 2 s");
        }
        sys::yield_now();
    }
}

fn readiness(s: &Session) -> (Check, Check) {
    let queue = match openat(EVENT_ROOT, "", syscall::O_RDWR | syscall::O_NONBLOCK) {
        Ok(q) => q,
        Err(e) => {
            let err = errno_msg("open event:", e);
            let mut copy = Line::default();
            let _ = write!(copy, "{err}");
            return (Err(err), Err(copy));
        }
    };
    let a = addr_of(&raw mut VAR_A);
    let user = (|| -> Check {
        drain(&s.control)?;
        register(&queue, &s.control)?;
        if poll(&queue, &s.control)? {
            fail!("EVENT_READ with nothing queued");
        }
        write_plan(&s.dbg, &[piece(a, 0x7000, 8, ACCESS_WRITE)]).map_err(|e| errno_msg("arm", e))?;
        // SAFETY: our static, aligned.
        unsafe { store(a, 8) };
        // A #DB from user mode triggers the event before we run again.
        if !poll(&queue, &s.control)? {
            fail!("no EVENT_READ right after a user-mode hit");
        }
        let n = drain(&s.control)?.as_slice().len();
        if n != 1 {
            fail!("{n} records after one hit");
        }
        Ok(())
    })();
    let kernel = (|| -> Check {
        while poll(&queue, &s.control)? {}
        // SAFETY: `a` is 8-aligned inside VAR_A with room for a TimeSpec.
        let ts = unsafe { &mut *(a as *mut syscall::TimeSpec) };
        syscall::clock_gettime(syscall::CLOCK_MONOTONIC, ts).map_err(|e| errno_msg("clock_gettime", e.errno))?;
        wait_ready(&queue, &s.control)?;
        if drain(&s.control)?.as_slice().is_empty() {
            fail!("readable, but no record");
        }
        Ok(())
    })();
    let _ = write_plan(&s.dbg, &[]);
    (user, kernel)
}

/// `dropped` of CPU 0 (the u64 after the plan in a 112-byte read).
fn dropped_on_cpu0(cpu0: &Fd) -> Result<u64, Line> {
    let mut buf = [0u8; CPU_PLAN_SIZE + 16];
    let n = cpu0.read(&mut buf).map_err(|e| errno_msg("cpu-0 read", e))?;
    if n != buf.len() {
        fail!("cpu-0 read returned {n} bytes");
    }
    Ok(u64::from_le_bytes(buf[CPU_PLAN_SIZE..CPU_PLAN_SIZE + 8].try_into().unwrap_or([0; 8])))
}

/// Count records (and check them) until EAGAIN.
fn count_records(control: &Fd, token: u64) -> Result<u64, Line> {
    let mut buf = [0u8; HIT_RECORD_SIZE * 16];
    let mut count = 0u64;
    let mut last_ts = 0u64;
    loop {
        match control.read(&mut buf) {
            Ok(0) => return Ok(count),
            Ok(n) => {
                for chunk in buf[..n].chunks_exact(HIT_RECORD_SIZE) {
                    let r = HitRecord::from_bytes(chunk.try_into().unwrap_or(&[0; HIT_RECORD_SIZE]));
                    if r.token != token || r.cpu != 0 {
                        fail!("record {count}: token {:#x} cpu {}", r.token, r.cpu);
                    }
                    if r.timestamp < last_ts {
                        fail!("record {count}: timestamp went backwards");
                    }
                    last_ts = r.timestamp;
                    count += 1;
                }
            }
            Err(e) if e == syscall::EAGAIN => return Ok(count),
            Err(e) => return Err(errno_msg("control read", e)),
        }
    }
}

/// 300 hits on CPU 0 without reading: the ring keeps 256, drops the newest
/// 44 and counts them in `dropped`.
fn overflow(s: &Session) -> Check {
    let cpu0 = dup(s.control.raw(), "cpu-0").map_err(|e| errno_msg("dup cpu-0", e))?;
    let a = addr_of(&raw mut VAR_A);
    drain(&s.control)?;
    let before = dropped_on_cpu0(&cpu0)?;
    write_plan(&s.dbg, &[piece(a, 0x7100, 8, ACCESS_WRITE)]).map_err(|e| errno_msg("arm", e))?;
    for _ in 0..OVERFLOW_HITS {
        // SAFETY: our static, aligned.
        unsafe { store(a, 8) };
    }
    write_plan(&s.dbg, &[]).map_err(|e| errno_msg("clear", e))?;
    let after = dropped_on_cpu0(&cpu0)?;
    let got = count_records(&s.control, 0x7100)?;
    if got != RING_CAPACITY || after - before != OVERFLOW_HITS - RING_CAPACITY {
        fail!("{got} records, dropped grew by {}: expected {RING_CAPACITY} and {}", after - before, OVERFLOW_HITS - RING_CAPACITY);
    }
    Ok(())
}

pub fn group_stream(t: &mut Tally, s: &Session) {
    let (user, kernel) = readiness(s);
    report(t, format_args!("stream: a user-mode hit makes the control handle readable at once (event queue)"), user);
    report(t, format_args!("stream: a kernel-mode hit makes it readable by the next tick"), kernel);
    report(
        t,
        format_args!("stream: 300 hits unread: 256 records in order, 44 dropped and counted in cpu-0's dropped"),
        overflow(s),
    );
}
