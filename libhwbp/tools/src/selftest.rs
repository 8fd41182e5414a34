//! The hwbp selftest: the whole contract (`/work/shared/hwbp-contract.md`,
//! client, hwbpd, kernel, debug registers) exercised through libhwbp, on
//! any [`Platform`]: the host (in-process hwbpd on the simulated kernel)
//! or Redox (the real `/scheme/hwbp` on the patched kernel).
//!
//! Groups of checks (see [`run`] for the exact list):
//! - registers: every length x access x slot occupancy with its own loads
//!   and stores, exec x slot with its own calls;
//! - counts and records: hit and count records, fpath, 500 calls of an
//!   exec breakpoint, 100,000 stores counted exactly (`lost` counts the
//!   records dropped);
//! - events streams: blocking read, O_NONBLOCK EAGAIN, readiness through
//!   an event queue, period, wakeup, ring overflow and `lost`;
//! - commands: enable, disable, reset, modify (atomic on failure);
//! - scheduling: pinned ENOSPC, exclusive, sharing, split ranges,
//!   multiplexing (scaled within 10% of the truth, raw never above it);
//! - tasks: new threads watched from their first store (8 x 1,000 stores
//!   = exactly 8,000), children start unwatched, task exit;
//! - every errno of the contract;
//! - permissions: as root, through a non-root helper; as non-root
//!   ([`Platform::is_root`] false, `hwbp-selftest --non-root`), directly,
//!   with the per-uid quota;
//! - hwbpd killed and restarted with nothing left armed (as root, where the
//!   platform can restart it).
//!
//! A count above the truth always fails. Output: one `ok - <check>` or
//! `FAIL - <check>: <why>` line per check, `skip - <check>: <why>` for what
//! the platform cannot run, and last `N passed, N failed` (the line the
//! Redox boot scripts look for).

use std::fmt::Write as _;
use std::io::Write;

use libhwbp::abi::errno::{self, ErrorKind};
use libhwbp::abi::{Access, AdmittedPiece, CountRecord, EventRecord, MemEvent, Target, EVENT_RECORD_SIZE};
use libhwbp::{Batch, Breakpoint, BreakpointHandle, EventStream, Transport};

use crate::platform::{Platform, CODE_TARGETS};

/// Debug registers on x86.
const SLOTS: usize = 4;
/// Data lengths one register watches.
const LENS: [u64; 4] = [1, 2, 4, 8];
/// Offset of the watched range of the register checks in the scratch
/// (8-aligned, with room on both sides for the "beside it" stores).
const WATCH_OFFSET: u64 = 16;
/// Offset of the filler watches that occupy the lower slots.
const FILLER_OFFSET: u64 = 32;
/// Relative tolerance of a multiplexed scaled count.
const SCALE_TOLERANCE: f64 = 0.10;
/// How long a check waits for something that should happen at once.
const PATIENCE_NS: u64 = 3_000_000_000;
/// Milliseconds, in ns.
const MS: u64 = 1_000_000;

/// Tally of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
    /// Names of the failed checks.
    pub failures: Vec<String>,
}

type Outcome = Result<(), String>;

struct Run<'o> {
    out: &'o mut dyn Write,
    report: Report,
}

impl Run<'_> {
    fn check(&mut self, name: &str, outcome: Outcome) {
        let line = match outcome {
            Ok(()) => {
                self.report.passed += 1;
                format!("ok - {name}")
            }
            Err(why) if why.starts_with("skip: ") => {
                self.report.skipped += 1;
                format!("skip - {name}: {}", &why[6..])
            }
            Err(why) => {
                self.report.failed += 1;
                self.report.failures.push(name.to_string());
                format!("FAIL - {name}: {why}")
            }
        };
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
    }
}

fn e<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |err| format!("{what}: {err}")
}

fn expect_eq<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Outcome {
    if got == want { Ok(()) } else { Err(format!("{what}: got {got:?}, want {want:?}")) }
}

fn ensure(cond: bool, why: impl FnOnce() -> String) -> Outcome {
    if cond { Ok(()) } else { Err(why()) }
}

fn count<T: Transport>(h: &BreakpointHandle<T>) -> Result<u64, String> {
    h.read_count().map(|c| c.value).map_err(e("read count"))
}

fn record<T: Transport>(h: &BreakpointHandle<T>) -> Result<CountRecord, String> {
    h.read_count().map_err(e("read count"))
}

fn errno_name(n: i32) -> String {
    let name = match n {
        0 => "ok",
        errno::EPERM => "EPERM",
        errno::ESRCH => "ESRCH",
        errno::EBADF => "EBADF",
        errno::EAGAIN => "EAGAIN",
        errno::EINVAL => "EINVAL",
        errno::EMFILE => "EMFILE",
        errno::ENOSPC => "ENOSPC",
        errno::EWOULDBLOCK_REDOX => "EWOULDBLOCK",
        _ => return format!("errno {n}"),
    };
    name.to_string()
}

fn errno_of_io(r: &std::io::Error) -> i32 {
    r.raw_os_error().unwrap_or(-1)
}

fn lib_errno<T>(r: &libhwbp::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(err) => err.errno().unwrap_or(-1),
    }
}

/// Open `path` as it is (no client-side check) and close it again: the
/// errno hwbpd answered (0: it opened).
fn open_errno<P: Platform>(p: &P, path: &str) -> i32 {
    let t = p.transport();
    match t.open(path, false) {
        Ok(h) => {
            let _ = t.close(h);
            0
        }
        Err(err) => errno_of_io(&err),
    }
}

/// Every path gives its errno; the failure lists each that did not.
fn expect_errnos<P: Platform>(p: &P, cases: &[(String, i32)]) -> Outcome {
    let mut why = String::new();
    for (path, want) in cases {
        let got = open_errno(p, path);
        if got != *want {
            let _ = write!(why, "{path}: got {}, want {}; ", errno_name(got), errno_name(*want));
        }
    }
    if why.is_empty() { Ok(()) } else { Err(why) }
}

/// Read hit records from a blocking stream handle until `want` arrived,
/// the stream ended, or nothing came for `timeout_ns`. Returns the records
/// and whether the stream ended.
fn read_records<P: Platform>(p: &mut P, h: usize, want: usize, timeout_ns: u64) -> Result<(Vec<EventRecord>, bool), String> {
    let mut recs = Vec::new();
    let mut buf = vec![0u8; 64 * EVENT_RECORD_SIZE];
    while recs.len() < want {
        match p.read_timeout(h, &mut buf, timeout_ns) {
            Ok(0) => return Ok((recs, true)),
            Ok(n) if n % EVENT_RECORD_SIZE == 0 => recs.extend(EventRecord::decode_all(&buf[..n])),
            Ok(n) => return Err(format!("read of the stream gave {n} bytes, not whole records")),
            Err(err) if err.kind() == std::io::ErrorKind::TimedOut => return Ok((recs, false)),
            Err(err) => return Err(format!("read of the stream: {err}")),
        }
    }
    Ok((recs, false))
}

/// Run every check; print one line per check and the summary line.
pub fn run<P: Platform>(p: &mut P, out: &mut dyn Write) -> Report {
    let _ = writeln!(out, "hwbp-selftest: {} ({})", p.describe(), if p.is_root() { "as root" } else { "as non-root" });
    let mut run = Run { out, report: Report::default() };
    let root = p.is_root();

    // Registers.
    for len in LENS {
        for access in [Access::Write, Access::ReadWrite] {
            for slot in 0..SLOTS {
                let name = format!("data len={len} access={access} slot={slot}");
                run.check(&name, data_case(p, len, access, slot));
            }
        }
    }
    for slot in 0..SLOTS {
        run.check(&format!("exec slot={slot}"), exec_case(p, slot));
    }

    // Counts and records.
    run.check("hit records carry id, ip, address, access, pid, cpu, hit number", hit_records(p));
    run.check("count record: id, and a pinned watch runs all the time it is enabled", count_record_times(p));
    run.check("fpath is the admitted path with its aligned pieces", fpath_admitted(p));
    run.check("exec breakpoint on a function called 500 times counts 500", exec_many(p));
    let (exact, lost) = hundred_thousand(p);
    run.check("100,000 stores under one pinned watch: value is exactly 100,000", exact);
    run.check("100,000 stores: records read + lost = 100,000, hit numbers increasing, none above 100,000", lost);

    // Events streams.
    run.check("blocking read waits for the next hit", blocking_read(p));
    run.check("O_NONBLOCK: an empty events stream reads EAGAIN", nonblock_eagain(p));
    run.check("O_NONBLOCK: queued records read at once, then EAGAIN again", nonblock_records(p));
    run.check("event queue: a wakeup=3 stream is readable after 3 records, not before", readiness(p));
    run.check("period=5: a record every 5th hit, value counts every hit", period(p));
    run.check("ring=4 overflow: the oldest records are dropped and counted in lost", ring_overflow(p));
    run.check("reset zeroes value and lost", reset_lost(p));

    // Commands.
    run.check("disabled option: nothing counted until enable", disabled_option(p));
    run.check("disable stops counting and time_enabled, enable resumes", disable_enable(p));
    run.check("reset zeroes the count and the times", reset_count(p));
    run.check("modify moves the watch, fpath follows", modify_moves(p));
    run.check("modify to an invalid event is EINVAL, the old watch stays armed and unchanged", modify_invalid(p));
    run.check("modify that does not fit is ENOSPC, the old watch stays armed and unchanged", modify_no_fit(p));
    run.check("an unknown command is EINVAL", unknown_command(p));

    // Scheduling.
    run.check("fifth pinned breakpoint is ENOSPC", pinned_enospc(p));
    run.check("a disabled pinned breakpoint keeps its register", pinned_disabled_holds(p));
    run.check("closing a pinned breakpoint frees its register", pinned_close_frees(p));
    run.check("2,000 open/close cycles leak nothing: 4 pinned fit, the 5th is ENOSPC", open_close_cycles(p));
    run.check("exclusive: nothing else counts while it is armed, all take turns", exclusive(p));
    let (fit, each) = sharing(p);
    run.check("identical breakpoints share one register: 2 identical + 3 others pinned fit in 4", fit);
    run.check("identical breakpoints each count every hit", each);
    run.check("split range: aligned pieces cover it, each byte hits, neighbours do not", split_range(p));
    run.check("split range takes a register per piece: pinned 4 pieces, the next pinned is ENOSPC", split_registers(p));
    let (scaled, raw) = multiplexing(p);
    run.check("6 flexible on 4 registers: 0 < running < enabled, scaled counts within 10% of the truth", scaled);
    run.check("6 flexible on 4 registers: raw counts never above the truth", raw);

    // Tasks.
    run.check("8 threads created after the watch opened x 1,000 stores = exactly 8,000", new_threads(p));
    run.check("watch on a child task, count kept after it exits", child_watch(p));
    run.check("a child process starts unwatched", child_unwatched(p));
    let (stream_end, esrch) = task_exit(p);
    run.check("task exit: the events stream gives the last records, then ends", stream_end);
    run.check("task exit: opening the exited task is ESRCH", esrch);

    // Errors.
    run.check("EINVAL: read-only access (x86 has none)", einval(p, &["self/mem:{a}:r".into(), "self/mem:{a}/8:r".into()]));
    run.check("EINVAL: exec with data access", einval(p, &["self/mem:{a}:rx".into(), "self/mem:{a}:wx".into()]));
    run.check("EINVAL: exec length other than 8", einval(p, &["self/mem:{a}/4:x".into()]));
    run.check("EINVAL: nosplit on a range that needs splitting", einval(p, &["self/mem:{a1}/6:w?nosplit".into(), "self/mem:{a2}/4:w?nosplit".into()]));
    run.check("EINVAL: malformed target or event", einval(p, &["bogus/mem:{a}".into(), "task/x/mem:{a}".into(), "self/mem:zz".into(), "self/mem:{a}/0".into(), "self".into()]));
    run.check("EINVAL: unknown option, bad option value", einval(p, &["self/mem:{a}?frob".into(), "self/mem:{a}?period=0".into(), "self/mem:{a}?ring=x".into(), "self/mem:{a}?pinned&pinned".into()]));
    run.check("EINVAL: non-canonical address", einval(p, &["self/mem:0x800000000000/8:w".into(), "self/mem:0x7ffffffffffc/8:w".into(), "self/mem:0xfffe000000000000/8:w".into()]));
    run.check("EINVAL: range wraps around the address space", einval(p, &["self/mem:0xffffffffffffffff/2:w".into()]));
    run.check("ESRCH: no such task", esrch_task(p));
    run.check("ESRCH: huge numeric task ids", esrch_huge(p));
    run.check("ESRCH: no such CPU, however large", esrch_cpu(p));
    run.check("EBADF: writing to an events stream", ebadf_stream(p));
    run.check("EBADF: a closed handle", ebadf_closed(p));

    // Permissions.
    if root {
        let user = user_errnos(p);
        let pick = |i: usize| user.as_ref().map(|v| v[i].clone()).map_err(|w| w.clone());
        let names = user_case_names();
        for (i, name) in names.iter().enumerate() {
            run.check(name, pick(i).and_then(|r| r));
        }
        run.check("root: cpu/all counts the selftest's stores", root_cpu_all(p));
        run.check("root: the kernel option is accepted and user stores count", root_kernel_option(p));
        run.check("root: ring=65536 is accepted", expect_errnos(p, &[(format!("self/mem:{:#x}/8:w?ring=65536", p.scratch() + 0xf00), 0)]));
    } else {
        for (name, outcome) in non_root_checks(p) {
            run.check(&name, outcome);
        }
    }

    // Restart (last: it replaces the server).
    let (nothing_armed, fresh) = if root { restart(p) } else { (skip("needs root"), skip("needs root")) };
    run.check("hwbpd killed and restarted: nothing left armed", nothing_armed);
    run.check("hwbpd restarted: the new server admits 4 pinned and counts exactly", fresh);

    let r = run.report.clone();
    let _ = writeln!(run.out, "{} passed, {} failed", r.passed, r.failed);
    r
}

fn skip(why: &str) -> Outcome {
    Err(format!("skip: {why}"))
}

/// Address of 64-byte block `n` of the scratch (each check its own).
fn block<P: Platform>(p: &P, n: u64) -> u64 {
    assert!(n < 64);
    p.scratch() + 64 * n
}

fn fillers<P: Platform>(p: &P, base: u64, n: usize) -> Result<Vec<BreakpointHandle<P::T>>, String> {
    (0..n)
        .map(|i| {
            Breakpoint::watch(base + 8 * i as u64)
                .len(8)
                .access(Access::Write)
                .pinned()
                .open(p.transport())
                .map_err(e("open filler"))
        })
        .collect()
}

fn open<P: Platform>(p: &P, b: Breakpoint) -> Result<BreakpointHandle<P::T>, String> {
    b.open(p.transport()).map_err(e("open"))
}

fn events<P: Platform>(bp: &BreakpointHandle<P::T>) -> Result<EventStream<P::T>, String> {
    bp.events().map_err(e("dup events"))
}

// ---- registers --------------------------------------------------------

/// A pinned watch of `len` bytes with `slot` other registers taken: a
/// store on it hits, a load hits iff rw, stores beside it do not.
fn data_case<P: Platform>(p: &mut P, len: u64, access: Access, slot: usize) -> Outcome {
    let fill = fillers(p, p.scratch() + FILLER_OFFSET, slot)?;
    let addr = p.scratch() + WATCH_OFFSET;
    let bp = open(p, Breakpoint::watch(addr).len(len).access(access).pinned().nosplit())?;
    if let Some(reg) = p.register_of(addr) {
        expect_eq("debug register holding it", reg, Some(slot))?;
    }
    p.store(addr, len);
    expect_eq("after a store", count(&bp)?, 1)?;
    p.load(addr, len);
    let after_load = if access == Access::ReadWrite { 2 } else { 1 };
    expect_eq("after a load", count(&bp)?, after_load)?;
    p.store(addr + len, 1);
    p.store(addr - 1, 1);
    expect_eq("after stores beside it", count(&bp)?, after_load)?;
    for f in &fill {
        expect_eq("filler count", count(f)?, 0)?;
    }
    Ok(())
}

fn exec_case<P: Platform>(p: &mut P, slot: usize) -> Outcome {
    let fill = fillers(p, p.scratch() + FILLER_OFFSET, slot)?;
    let bp = open(p, Breakpoint::exec(p.code_addr(slot)).pinned())?;
    if let Some(reg) = p.register_of(p.code_addr(slot)) {
        expect_eq("debug register holding it", reg, Some(slot))?;
    }
    p.execute(slot);
    expect_eq("after executing it", count(&bp)?, 1)?;
    p.execute((slot + 1) % CODE_TARGETS);
    expect_eq("after executing other code", count(&bp)?, 1)?;
    drop(fill);
    Ok(())
}

// ---- counts and records -----------------------------------------------

fn hit_records<P: Platform>(p: &mut P) -> Outcome {
    let addr = block(p, 4);
    let bp = open(p, Breakpoint::watch(addr).access(Access::Write))?;
    let ev = events::<P>(&bp)?;
    for _ in 0..3 {
        p.store(addr, 4);
    }
    let (recs, _) = read_records(p, ev.raw_handle(), 3, PATIENCE_NS)?;
    expect_eq("records", recs.len(), 3)?;
    let id = record(&bp)?.id;
    for (i, r) in recs.iter().enumerate() {
        expect_eq("record (id, addr, access, pid, hit)", (r.id, r.addr, r.access_kind(), r.pid, r.hit), (id, addr, Some(Access::Write), p.own_pid(), i as u64 + 1))?;
        if let Some(cpus) = p.cpus() {
            ensure(r.cpu < u64::from(cpus), || format!("record cpu {} of {cpus} CPUs", r.cpu))?;
        }
        ensure(r.ip != 0, || "record ip is 0".into())?;
    }
    ensure(recs.windows(2).all(|w| w[0].timestamp_ns <= w[1].timestamp_ns), || format!("timestamps go back: {recs:?}"))?;
    Ok(())
}

fn count_record_times<P: Platform>(p: &mut P) -> Outcome {
    let addr = block(p, 5);
    let bp = open(p, Breakpoint::watch(addr).access(Access::Write).pinned())?;
    p.let_time_pass(5 * MS);
    p.store(addr, 4);
    let c = record(&bp)?;
    expect_eq("value", c.value, 1)?;
    ensure(c.id != 0, || "id is 0".into())?;
    ensure(c.time_enabled_ns >= 4 * MS, || format!("time_enabled {} ns after 5 ms", c.time_enabled_ns))?;
    ensure(c.time_running_ns <= c.time_enabled_ns && c.time_running_ns * 100 >= c.time_enabled_ns * 99, || {
        format!("pinned: running {} ns of enabled {} ns", c.time_running_ns, c.time_enabled_ns)
    })?;
    expect_eq("lost", c.lost, 0)
}

fn fpath_admitted<P: Platform>(p: &mut P) -> Outcome {
    let addr = block(p, 6) + 2;
    let bp = open(p, Breakpoint::watch(addr).len(4).access(Access::Write).ring(8))?;
    let text = bp.path_string().map_err(e("fpath"))?;
    let want = format!("task/{}/mem:{addr:#x}/4:w?ring=8#pieces={addr:#x}/2:w,{:#x}/2:w", p.own_pid(), addr + 2);
    expect_eq("fpath", text, want)?;
    let admitted = bp.path().map_err(e("parse fpath"))?;
    expect_eq("pieces", admitted.pieces, vec![AdmittedPiece::new(addr, 2, Access::Write).unwrap(), AdmittedPiece::new(addr + 2, 2, Access::Write).unwrap()])
}

fn exec_many<P: Platform>(p: &mut P) -> Outcome {
    let bp = open(p, Breakpoint::exec(p.code_addr(0)).pinned())?;
    p.execute_n(0, 500);
    expect_eq("count", count(&bp)?, 500)
}

fn hundred_thousand<P: Platform>(p: &mut P) -> (Outcome, Outcome) {
    const N: u64 = 100_000;
    let r = (|| -> Result<(CountRecord, Vec<EventRecord>), String> {
        let addr = block(p, 7);
        let bp = open(p, Breakpoint::watch(addr).len(8).access(Access::Write).pinned())?;
        let ev = events::<P>(&bp)?;
        p.store_n(addr, 8, N);
        let c = record(&bp)?;
        let queued = c.value.saturating_sub(c.lost).min(1 << 20) as usize;
        let (recs, _) = read_records(p, ev.raw_handle(), queued, PATIENCE_NS)?;
        Ok((c, recs))
    })();
    match r {
        Err(why) => (Err(why.clone()), Err(why)),
        Ok((c, recs)) => {
            let exact = expect_eq("value", c.value, N).map_err(|w| format!("{w} (lost {})", c.lost));
            let read = recs.len() as u64;
            // Which records survive depends on where they were dropped (the
            // ring drops the oldest, a kernel buffer may drop any): only
            // their number and order are fixed.
            let increasing = recs.windows(2).all(|w| w[0].hit < w[1].hit) && recs.iter().all(|r| r.hit >= 1 && r.hit <= N);
            let lost = ensure(read + c.lost == N && increasing, || {
                format!(
                    "value {}, {read} records read + lost {} = {}; hit numbers from {:?} to {:?}{}",
                    c.value,
                    c.lost,
                    read + c.lost,
                    recs.first().map(|r| r.hit),
                    recs.last().map(|r| r.hit),
                    if increasing { "" } else { ", not increasing within 1..=100,000" }
                )
            });
            (exact, lost)
        }
    }
}

// ---- events streams ---------------------------------------------------

fn blocking_read<P: Platform>(p: &mut P) -> Outcome {
    let addr = block(p, 8);
    let bp = open(p, Breakpoint::watch(addr).access(Access::Write))?;
    let ev = events::<P>(&bp)?;
    p.store_in_background(addr, 4, 1, 50 * MS).map_err(e("background store"))?;
    let mut buf = vec![0u8; 4 * EVENT_RECORD_SIZE];
    let r = p.read_timeout(ev.raw_handle(), &mut buf, PATIENCE_NS);
    p.join_background().map_err(e("background store"))?;
    let n = r.map_err(e("blocking read"))?;
    expect_eq("bytes read", n, EVENT_RECORD_SIZE)?;
    let rec = EventRecord::decode_all(&buf[..n]).next().ok_or("no record")?;
    expect_eq("record (addr, hit)", (rec.addr, rec.hit), (addr, 1))?;
    expect_eq("count", count(&bp)?, 1)
}

fn nonblock_eagain<P: Platform>(p: &mut P) -> Outcome {
    let addr = block(p, 9);
    let bp = open(p, Breakpoint::watch(addr).access(Access::Write))?;
    let ev = events::<P>(&bp)?;
    let t = p.transport();
    t.set_nonblock(ev.raw_handle(), true).map_err(e("fcntl O_NONBLOCK"))?;
    let mut buf = [0u8; EVENT_RECORD_SIZE];
    match t.read(ev.raw_handle(), &mut buf) {
        Ok(n) => Err(format!("read gave {n} bytes from an empty stream")),
        Err(err) if ErrorKind::of_io_error(&err) == Some(ErrorKind::WouldBlock) => Ok(()),
        Err(err) => Err(format!("read: {} ({err}), want EAGAIN", errno_name(errno_of_io(&err)))),
    }
}

fn nonblock_records<P: Platform>(p: &mut P) -> Outcome {
    let addr = block(p, 10);
    let bp = open(p, Breakpoint::watch(addr).access(Access::Write))?;
    let mut ev = events::<P>(&bp)?;
    let mut buf = [EventRecord::default(); 8];
    expect_eq("first read", ev.try_next_batch(&mut buf).map_err(e("read"))?, Batch::Empty)?;
    p.store(addr, 4);
    p.store(addr, 4);
    expect_eq("after 2 stores", ev.try_next_batch(&mut buf).map_err(e("read"))?, Batch::Records(2))?;
    expect_eq("hits", (buf[0].hit, buf[1].hit), (1, 2))?;
    expect_eq("then", ev.try_next_batch(&mut buf).map_err(e("read"))?, Batch::Empty)
}

fn readiness<P: Platform>(p: &mut P) -> Outcome {
    let addr = block(p, 11);
    let mut q = match p.event_queue() {
        None => return skip("this platform has no event queue"),
        Some(q) => q.map_err(e("event queue"))?,
    };
    let bp = open(p, Breakpoint::watch(addr).access(Access::Write).wakeup(3))?;
    let ev = events::<P>(&bp)?;
    let h = ev.raw_handle();
    q.register(h).map_err(e("register the stream"))?;
    let early = q.wait(20 * MS).map_err(e("wait"))?;
    ensure(!early.contains(&h), || "readable with nothing queued".into())?;
    p.store(addr, 4);
    p.store(addr, 4);
    let two = q.wait(100 * MS).map_err(e("wait"))?;
    ensure(!two.contains(&h), || "readable after 2 records with wakeup=3".into())?;
    p.store(addr, 4);
    let three = q.wait(PATIENCE_NS).map_err(e("wait"))?;
    ensure(three.contains(&h), || format!("not readable after 3 records (queue gave {three:?})"))?;
    let (recs, _) = read_records(p, h, 3, PATIENCE_NS)?;
    expect_eq("records", recs.len(), 3)
}

fn period<P: Platform>(p: &mut P) -> Outcome {
    let addr = block(p, 12);
    let bp = open(p, Breakpoint::watch(addr).access(Access::Write).period(5))?;
    let ev = events::<P>(&bp)?;
    p.store_n(addr, 4, 12);
    expect_eq("value", count(&bp)?, 12)?;
    let (recs, _) = read_records(p, ev.raw_handle(), 2, PATIENCE_NS)?;
    expect_eq("record hit numbers", recs.iter().map(|r| r.hit).collect::<Vec<_>>(), vec![5, 10])?;
    // Nothing in between: the next record is hit 15 (no read is left
    // waiting for a record that should never come).
    p.store_n(addr, 4, 3);
    let (next, _) = read_records(p, ev.raw_handle(), 1, PATIENCE_NS)?;
    expect_eq("next record", next.iter().map(|r| r.hit).collect::<Vec<_>>(), vec![15])
}

fn ring_overflow<P: Platform>(p: &mut P) -> Outcome {
    let addr = block(p, 13);
    let bp = open(p, Breakpoint::watch(addr).access(Access::Write).ring(4))?;
    let ev = events::<P>(&bp)?;
    p.store_n(addr, 4, 10);
    let c = record(&bp)?;
    expect_eq("(value, lost)", (c.value, c.lost), (10, 6))?;
    let (recs, _) = read_records(p, ev.raw_handle(), 4, PATIENCE_NS)?;
    expect_eq("hits kept", recs.iter().map(|r| r.hit).collect::<Vec<_>>(), vec![7, 8, 9, 10])
}

fn reset_lost<P: Platform>(p: &mut P) -> Outcome {
    let addr = block(p, 14);
    let bp = open(p, Breakpoint::watch(addr).access(Access::Write).ring(2))?;
    let _ev = events::<P>(&bp)?;
    p.store_n(addr, 4, 5);
    let c = record(&bp)?;
    expect_eq("before reset (value, lost)", (c.value, c.lost), (5, 3))?;
    bp.reset().map_err(e("reset"))?;
    let c = record(&bp)?;
    expect_eq("after reset (value, lost)", (c.value, c.lost), (0, 0))?;
    p.store(addr, 4);
    expect_eq("after a store", count(&bp)?, 1)
}

// ---- commands ---------------------------------------------------------

fn disabled_option<P: Platform>(p: &mut P) -> Outcome {
    let addr = block(p, 15);
    let bp = open(p, Breakpoint::watch(addr).access(Access::Write).disabled())?;
    p.store(addr, 4);
    expect_eq("while disabled", count(&bp)?, 0)?;
    bp.enable().map_err(e("enable"))?;
    p.store(addr, 4);
    expect_eq("after enable", count(&bp)?, 1)
}

fn disable_enable<P: Platform>(p: &mut P) -> Outcome {
    let addr = block(p, 16);
    let bp = open(p, Breakpoint::watch(addr).access(Access::Write).pinned())?;
    p.store(addr, 4);
    expect_eq("enabled", count(&bp)?, 1)?;
    bp.disable().map_err(e("disable"))?;
    let before = record(&bp)?;
    p.store(addr, 4);
    p.let_time_pass(10 * MS);
    let after = record(&bp)?;
    expect_eq("while disabled", after.value, 1)?;
    let grew = after.time_enabled_ns.saturating_sub(before.time_enabled_ns);
    ensure(grew < 5 * MS, || format!("time_enabled grew {grew} ns in 10 ms disabled"))?;
    bp.enable().map_err(e("enable"))?;
    p.store(addr, 4);
    expect_eq("enabled again", count(&bp)?, 2)
}

fn reset_count<P: Platform>(p: &mut P) -> Outcome {
    let addr = block(p, 17);
    let bp = open(p, Breakpoint::watch(addr).access(Access::Write).pinned())?;
    p.store_n(addr, 4, 3);
    p.let_time_pass(5 * MS);
    let before = record(&bp)?;
    expect_eq("before reset", before.value, 3)?;
    bp.reset().map_err(e("reset"))?;
    let after = record(&bp)?;
    expect_eq("after reset", after.value, 0)?;
    ensure(after.time_enabled_ns < before.time_enabled_ns && after.time_running_ns < before.time_running_ns, || {
        format!("times not reset: before {before:?}, after {after:?}")
    })?;
    p.store(addr, 4);
    expect_eq("after a store", count(&bp)?, 1)
}

fn modify_moves<P: Platform>(p: &mut P) -> Outcome {
    let a = block(p, 18);
    let b = a + 16;
    let mut bp = open(p, Breakpoint::watch(a).access(Access::Write))?;
    p.store(a, 4);
    let to = MemEvent::new(b, 2, Access::Write).map_err(e("event"))?;
    bp.modify(to, None).map_err(e("modify"))?;
    p.store(a, 4);
    expect_eq("after a store to the old address", count(&bp)?, 1)?;
    p.store(b, 2);
    expect_eq("after a store to the new address", count(&bp)?, 2)?;
    let admitted = bp.path().map_err(e("fpath"))?;
    expect_eq("fpath event", admitted.path.event, to)
}

fn modify_invalid<P: Platform>(p: &mut P) -> Outcome {
    let a = block(p, 19);
    let bp = open(p, Breakpoint::watch(a).access(Access::Write).pinned())?;
    let before = bp.path_string().map_err(e("fpath"))?;
    let t = p.transport();
    for cmd in [format!("modify mem:{:#x}:r", a + 8), format!("modify mem:{:#x}/3:w?nosplit", a + 9), format!("modify mem:{:#x}:w?bogus", a + 8)] {
        let r = t.write(bp.raw_handle(), cmd.as_bytes());
        let got = r.as_ref().err().map_or(0, errno_of_io);
        expect_eq(&format!("{cmd:?}"), errno_name(got), errno_name(errno::EINVAL))?;
    }
    expect_eq("fpath", bp.path_string().map_err(e("fpath"))?, before)?;
    p.store(a, 4);
    p.store(a + 8, 4);
    expect_eq("count (old address only)", count(&bp)?, 1)
}

fn modify_no_fit<P: Platform>(p: &mut P) -> Outcome {
    let a = block(p, 20);
    let mut pinned = fillers(p, a, SLOTS)?;
    let before = pinned[0].path_string().map_err(e("fpath"))?;
    // 8 bytes at an odd address: 4 pieces where one register is free once
    // this one's is reused.
    let too_big = MemEvent::new(a + 33, 8, Access::Write).map_err(e("event"))?;
    let r = pinned[0].modify(too_big, None);
    expect_eq("modify", errno_name(lib_errno(&r)), errno_name(errno::ENOSPC))?;
    expect_eq("fpath", pinned[0].path_string().map_err(e("fpath"))?, before)?;
    p.store(a, 8);
    p.store(a + 36, 4);
    expect_eq("count (old address only)", count(&pinned[0])?, 1)?;
    for (i, f) in pinned.iter().enumerate().skip(1) {
        p.store(a + 8 * i as u64, 8);
        expect_eq("other pinned", count(f)?, 1)?;
    }
    Ok(())
}

fn unknown_command<P: Platform>(p: &mut P) -> Outcome {
    let bp = open(p, Breakpoint::watch(block(p, 21)).access(Access::Write))?;
    let t = p.transport();
    let mut why = String::new();
    for cmd in ["frobnicate", "enable now", "modify", "reset reset"] {
        let got = t.write(bp.raw_handle(), cmd.as_bytes()).err().map_or(0, |e| errno_of_io(&e));
        if got != errno::EINVAL {
            let _ = write!(why, "{cmd:?}: {}; ", errno_name(got));
        }
    }
    if why.is_empty() { Ok(()) } else { Err(why) }
}

// ---- scheduling -------------------------------------------------------

fn pinned_enospc<P: Platform>(p: &mut P) -> Outcome {
    let a = block(p, 22);
    let _held = fillers(p, a, SLOTS)?;
    let fifth = Breakpoint::watch(a + 40).pinned().open(p.transport());
    expect_eq("fifth pinned", errno_name(lib_errno(&fifth)), errno_name(errno::ENOSPC))?;
    // A flexible one is still admitted.
    let flexible = Breakpoint::watch(a + 40).open(p.transport());
    expect_eq("a flexible one", errno_name(lib_errno(&flexible)), "ok".into())
}

fn pinned_disabled_holds<P: Platform>(p: &mut P) -> Outcome {
    let a = block(p, 23);
    let held = fillers(p, a, SLOTS)?;
    held[0].disable().map_err(e("disable"))?;
    let fifth = Breakpoint::watch(a + 40).pinned().open(p.transport());
    expect_eq("fifth pinned while one is disabled", errno_name(lib_errno(&fifth)), errno_name(errno::ENOSPC))
}

fn pinned_close_frees<P: Platform>(p: &mut P) -> Outcome {
    let a = block(p, 24);
    let mut held = fillers(p, a, SLOTS)?;
    held.remove(0).close().map_err(e("close"))?;
    let fifth = open(p, Breakpoint::watch(a + 40).access(Access::Write).pinned())?;
    p.store(a + 40, 4);
    p.store(a, 8);
    expect_eq("the new one's count", count(&fifth)?, 1)
}

fn open_close_cycles<P: Platform>(p: &mut P) -> Outcome {
    let a = block(p, 25);
    let t = p.transport();
    for i in 0..2000u64 {
        let path = format!("self/mem:{:#x}/8:w?pinned", a + 8 * (i % 4));
        let h = t.open(&path, false).map_err(|err| format!("open #{i}: {err}"))?;
        t.close(h).map_err(|err| format!("close #{i}: {err}"))?;
    }
    let held = fillers(p, a, SLOTS)?;
    let fifth = Breakpoint::watch(a + 40).pinned().open(p.transport());
    expect_eq("fifth pinned", errno_name(lib_errno(&fifth)), errno_name(errno::ENOSPC))?;
    for (i, f) in held.iter().enumerate() {
        p.store(a + 8 * i as u64, 8);
        expect_eq("pinned count", count(f)?, 1)?;
    }
    Ok(())
}

fn exclusive<P: Platform>(p: &mut P) -> Outcome {
    let a = block(p, 26);
    let ex = open(p, Breakpoint::watch(a).access(Access::Write).exclusive())?;
    let others = [open(p, Breakpoint::watch(a + 8).access(Access::Write))?, open(p, Breakpoint::watch(a + 16).access(Access::Write))?];
    let sum = |o: &[BreakpointHandle<P::T>]| -> Result<u64, String> { o.iter().map(count).sum() };
    let (mut alone, mut others_ran) = (0, 0);
    for round in 0..80 {
        let (e0, o0) = (count(&ex)?, sum(&others)?);
        // The exclusive one's word first and last: if both count, it was
        // armed all along (a rotation takes milliseconds).
        p.store(a, 4);
        p.store(a + 8, 4);
        p.store(a + 16, 4);
        p.store(a, 4);
        let (de, d_o) = (count(&ex)? - e0, sum(&others)? - o0);
        ensure(de <= 2 && d_o <= 2, || format!("round {round}: exclusive +{de}, others +{d_o}, for 2 stores each"))?;
        if de == 2 {
            ensure(d_o == 0, || format!("round {round}: others counted {d_o} while the exclusive one was armed"))?;
            alone += 1;
        }
        if d_o == 2 {
            others_ran += 1;
        }
        p.let_time_pass(MS);
    }
    let c = record(&ex)?;
    ensure(alone > 0 && others_ran > 0, || format!("no turns: exclusive alone in {alone} rounds, the others in {others_ran}"))?;
    ensure(c.time_running_ns > 0 && c.time_running_ns < c.time_enabled_ns, || format!("exclusive times: {c:?}"))
}

fn sharing<P: Platform>(p: &mut P) -> (Outcome, Outcome) {
    let a = block(p, 27);
    let r = (|| -> Result<_, String> {
        let same = [open(p, Breakpoint::watch(a).len(8).access(Access::Write).pinned())?, open(p, Breakpoint::watch(a).len(8).access(Access::Write).pinned())?];
        let rest = fillers(p, a + 8, 3)?;
        Ok((same, rest))
    })();
    let (same, rest) = match r {
        Ok(x) => x,
        Err(why) => return (Err(why), skip("they did not fit")),
    };
    let fifth = Breakpoint::watch(a + 40).pinned().open(p.transport());
    let fit = expect_eq("a different fifth pinned", errno_name(lib_errno(&fifth)), errno_name(errno::ENOSPC));
    drop(fifth);
    let each = (|| {
        p.store_n(a, 8, 3);
        expect_eq("counts of the two", (count(&same[0])?, count(&same[1])?), (3, 3))?;
        for f in &rest {
            expect_eq("others", count(f)?, 0)?;
        }
        Ok(())
    })();
    (fit, each)
}

fn split_range<P: Platform>(p: &mut P) -> Outcome {
    let a = block(p, 28) + 1;
    let bp = open(p, Breakpoint::watch(a).len(6).access(Access::Write))?;
    let admitted = bp.path().map_err(e("fpath"))?;
    let covered: u64 = admitted.pieces.iter().map(AdmittedPiece::len).sum();
    expect_eq("bytes covered", covered, 6)?;
    ensure(admitted.pieces.iter().all(|pc| pc.addr() % pc.len() == 0), || format!("unaligned piece: {admitted}"))?;
    expect_eq("first piece", admitted.pieces.first().map(|pc| pc.addr()), Some(a))?;
    for b in a..a + 6 {
        p.store(b, 1);
    }
    expect_eq("each byte", count(&bp)?, 6)?;
    p.store(a - 1, 1);
    p.store(a + 6, 1);
    expect_eq("neighbours", count(&bp)?, 6)?;
    // One 4-byte store over two pieces (a+3/2 and a+5/1) is one hit.
    p.store(a + 3, 4);
    expect_eq("one store over two pieces", count(&bp)?, 7)
}

fn split_registers<P: Platform>(p: &mut P) -> Outcome {
    let a = block(p, 29) + 1;
    let bp = open(p, Breakpoint::watch(a).len(6).access(Access::Write).pinned())?;
    let pieces = bp.path().map_err(e("fpath"))?.pieces.len();
    expect_eq("pieces", pieces, 4)?;
    let next = Breakpoint::watch(a + 31).len(1).pinned().open(p.transport());
    expect_eq("next pinned", errno_name(lib_errno(&next)), errno_name(errno::ENOSPC))
}

fn multiplexing<P: Platform>(p: &mut P) -> (Outcome, Outcome) {
    const WATCHES: u64 = 6;
    const ROUNDS: u64 = 400;
    const STEP_NS: u64 = 500_000;
    let base = block(p, 30);
    let bps = match (0..WATCHES).map(|i| Breakpoint::watch(base + 8 * i).access(Access::Write).open(p.transport())).collect::<Result<Vec<_>, _>>() {
        Ok(b) => b,
        Err(err) => return (Err(format!("open: {err}")), Err(format!("open: {err}"))),
    };
    for _ in 0..ROUNDS {
        for i in 0..WATCHES {
            p.store(base + 8 * i, 4);
        }
        p.let_time_pass(STEP_NS);
    }
    let (mut scaled_why, mut raw_why) = (String::new(), String::new());
    for (i, bp) in bps.iter().enumerate() {
        let c = match bp.read_count() {
            Ok(c) => c,
            Err(err) => return (Err(format!("count: {err}")), Err(format!("count: {err}"))),
        };
        if c.value > ROUNDS {
            let _ = write!(raw_why, "#{i}: raw {} > {ROUNDS} stores; ", c.value);
        }
        if !(c.time_running_ns > 0 && c.time_running_ns < c.time_enabled_ns) {
            let _ = write!(scaled_why, "#{i}: running {} of enabled {}; ", c.time_running_ns, c.time_enabled_ns);
            continue;
        }
        let scaled = c.scaled_value().unwrap_or(0) as f64;
        if (scaled - ROUNDS as f64).abs() > SCALE_TOLERANCE * ROUNDS as f64 {
            let _ = write!(scaled_why, "#{i}: scaled {scaled:.0} (raw {}) vs {ROUNDS} stores; ", c.value);
        }
    }
    let verdict = |w: String| if w.is_empty() { Ok(()) } else { Err(w) };
    (verdict(scaled_why), verdict(raw_why))
}

// ---- tasks ------------------------------------------------------------

fn new_threads<P: Platform>(p: &mut P) -> Outcome {
    let addr = block(p, 31);
    let bp = open(p, Breakpoint::watch(addr).len(8).access(Access::Write).pinned())?;
    p.new_threads_store(addr, 8, 1000).map_err(e("threads"))?;
    let c = record(&bp)?;
    expect_eq("count", c.value, 8000).map_err(|w| format!("{w} (lost {})", c.lost))
}

fn child_watch<P: Platform>(p: &mut P) -> Outcome {
    let mut child = p.spawn_child().map_err(e("spawn child"))?;
    let bp = open(p, Breakpoint::watch(child.addr()).access(Access::Write).target(Target::Task(child.pid())))?;
    child.store(5).map_err(e("child store"))?;
    expect_eq("child's stores", count(&bp)?, 5)?;
    p.store(p.scratch(), 4);
    expect_eq("after our own store to the same address", count(&bp)?, 5)?;
    child.exit().map_err(e("child exit"))?;
    expect_eq("after the child exited", count(&bp)?, 5)
}

fn child_unwatched<P: Platform>(p: &mut P) -> Outcome {
    let addr = p.scratch();
    let bp = open(p, Breakpoint::watch(addr).access(Access::Write).pinned())?;
    let mut child = p.spawn_child().map_err(e("spawn child"))?;
    let r = (|| {
        if child.addr() != addr {
            return skip(&format!("the child's scratch is at {:#x}, ours at {addr:#x}", child.addr()));
        }
        child.store(5).map_err(e("child store"))?;
        expect_eq("our count after the child's 5 stores", count(&bp)?, 0)?;
        p.store(addr, 4);
        expect_eq("our count after our store", count(&bp)?, 1)
    })();
    let exit = child.exit().map_err(e("child exit"));
    r.and(exit)
}

fn task_exit<P: Platform>(p: &mut P) -> (Outcome, Outcome) {
    let mut child = match p.spawn_child() {
        Ok(c) => c,
        Err(err) => return (Err(format!("spawn child: {err}")), Err(format!("spawn child: {err}"))),
    };
    let pid = child.pid();
    let r = (|| -> Result<_, String> {
        let bp = open(p, Breakpoint::watch(child.addr()).access(Access::Write).target(Target::Task(pid)))?;
        let ev = events::<P>(&bp)?;
        child.store(3).map_err(e("child store"))?;
        Ok((bp, ev))
    })();
    let exit = child.exit().map_err(e("child exit"));
    let stream = (|| {
        let (bp, ev) = r?;
        exit?;
        let (recs, ended) = read_records(p, ev.raw_handle(), 4, PATIENCE_NS)?;
        expect_eq("records", recs.iter().map(|r| r.hit).collect::<Vec<_>>(), vec![1, 2, 3])?;
        ensure(ended, || "the stream did not end (no 0-byte read)".into())?;
        expect_eq("count after exit", count(&bp)?, 3)
    })();
    let esrch = expect_errnos(p, &[(format!("task/{pid}/mem:{:#x}", p.scratch()), errno::ESRCH)]);
    (stream, esrch)
}

// ---- errors -----------------------------------------------------------

/// Each path template (`{a}`: a scratch word; `{a1}`, `{a2}`: odd and
/// 2-aligned addresses) opens with EINVAL.
fn einval<P: Platform>(p: &mut P, templates: &[String]) -> Outcome {
    let a = block(p, 32);
    let cases: Vec<(String, i32)> = templates
        .iter()
        .map(|t| (t.replace("{a1}", &format!("{:#x}", a + 1)).replace("{a2}", &format!("{:#x}", a + 2)).replace("{a}", &format!("{a:#x}")), errno::EINVAL))
        .collect();
    expect_errnos(p, &cases)
}

fn esrch_task<P: Platform>(p: &mut P) -> Outcome {
    let a = block(p, 32);
    expect_errnos(p, &[(format!("task/{}/mem:{a:#x}", u32::MAX - 1), errno::ESRCH), (format!("task/999999/mem:{a:#x}"), errno::ESRCH)])
}

fn esrch_huge<P: Platform>(p: &mut P) -> Outcome {
    let a = block(p, 32);
    let cases: Vec<(String, i32)> = ["4294967296", "18446744073709551615", "18446744073709551616", "99999999999999999999999999999999"]
        .iter()
        .map(|id| (format!("task/{id}/mem:{a:#x}"), errno::ESRCH))
        .collect();
    expect_errnos(p, &cases)
}

fn esrch_cpu<P: Platform>(p: &mut P) -> Outcome {
    let a = block(p, 32);
    let own = p.own_pid();
    // A CPU number no machine of ours has where the count is unknown.
    let missing = p.cpus().unwrap_or(4096);
    let mut cases: Vec<(String, i32)> = [missing.to_string(), "4294967295".into(), "4294967296".into(), "99999999999999999999999".into()]
        .iter()
        .map(|n| (format!("task/{own}/cpu/{n}/mem:{a:#x}"), errno::ESRCH))
        .collect();
    if p.is_root() {
        cases.push((format!("cpu/{missing}/mem:{a:#x}"), errno::ESRCH));
        cases.push((format!("cpu/99999999999/mem:{a:#x}"), errno::ESRCH));
    }
    expect_errnos(p, &cases)
}

fn ebadf_stream<P: Platform>(p: &mut P) -> Outcome {
    let bp = open(p, Breakpoint::watch(block(p, 33)).access(Access::Write))?;
    let ev = events::<P>(&bp)?;
    let got = p.transport().write(ev.raw_handle(), b"enable").err().map_or(0, |e| errno_of_io(&e));
    expect_eq("write to the stream", errno_name(got), errno_name(errno::EBADF))
}

fn ebadf_closed<P: Platform>(p: &mut P) -> Outcome {
    let t = p.transport();
    let h = t.open(&format!("self/mem:{:#x}", block(p, 33)), false).map_err(e("open"))?;
    t.close(h).map_err(e("close"))?;
    let got = t.close(h).err().map_or(0, |e| errno_of_io(&e));
    expect_eq("second close", errno_name(got), errno_name(errno::EBADF))
}

// ---- permissions ------------------------------------------------------

/// What a non-root user tries, as (check name, path template, errno);
/// `{a}` is a scratch word, `{pid}` a task of root.
fn user_cases() -> Vec<(&'static str, &'static str, i32)> {
    vec![
        ("non-root: another user's task is EPERM", "task/{pid}/mem:{a}", errno::EPERM),
        ("non-root: cpu/0 is EPERM", "cpu/0/mem:{a}", errno::EPERM),
        ("non-root: cpu/all is EPERM", "cpu/all/mem:{a}", errno::EPERM),
        ("non-root: the kernel option is EPERM", "self/mem:{a}?kernel", errno::EPERM),
        ("non-root: a kernel-half address is EPERM", "self/mem:0xffff800000001000", errno::EPERM),
        ("non-root: ring=4097 is EPERM", "self/mem:{a}?ring=4097", errno::EPERM),
        ("non-root: ring=4096 opens", "self/mem:{a}?ring=4096", 0),
        ("non-root: its own task opens", "self/mem:{a}", 0),
    ]
}

fn user_case_names() -> Vec<String> {
    user_cases().iter().map(|(n, _, _)| format!("{n} (helper)")).collect()
}

fn user_paths(a: u64, pid: u64) -> Vec<(String, i32)> {
    user_cases().iter().map(|(_, t, want)| (t.replace("{a}", &format!("{a:#x}")).replace("{pid}", &pid.to_string()), *want)).collect()
}

/// As root: a non-root helper opens each path; one outcome per case.
fn user_errnos<P: Platform>(p: &mut P) -> Result<Vec<Outcome>, String> {
    let cases = user_paths(block(p, 34), p.own_pid());
    let paths: Vec<String> = cases.iter().map(|(p, _)| p.clone()).collect();
    let got = p.open_as_user(&paths).map_err(e("run as user"))?;
    if got.len() != cases.len() {
        return Err(format!("helper answered {} of {} paths", got.len(), cases.len()));
    }
    Ok(cases.iter().zip(got).map(|((path, want), got)| expect_eq(path, errno_name(got), errno_name(*want))).collect())
}

fn non_root_checks<P: Platform>(p: &mut P) -> Vec<(String, Outcome)> {
    let mut out = Vec::new();
    let other = p.other_users_pid();
    let paths = user_paths(block(p, 34), other.unwrap_or(0));
    for (i, ((name, _, _), (path, want))) in user_cases().into_iter().zip(paths).enumerate() {
        let outcome = if i == 0 && other.is_none() { skip("no task of another user known (give --other-pid)") } else { expect_errnos(p, &[(path, want)]) };
        out.push((name.to_string(), outcome));
    }
    out.push(("non-root: EMFILE at the quota, closing one frees a place".into(), quota(p)));
    out.push(("non-root: a breakpoint counts against the quota until its events stream is closed".into(), quota_streams(p)));
    out.push(("non-root: at most 4 x quota events streams, EMFILE beyond".into(), stream_limit(p)));
    out
}

fn stream_limit<P: Platform>(p: &mut P) -> Outcome {
    let limit = 4 * libhwbp::abi::DEFAULT_USER_QUOTA;
    let bp = open(p, Breakpoint::watch(block(p, 41)).access(Access::Write))?;
    let mut streams = Vec::new();
    for i in 0..limit {
        streams.push(bp.events().map_err(|err| format!("stream #{i} of {limit}: {err}"))?);
    }
    let over = bp.events();
    expect_eq(&format!("stream #{limit}"), errno_name(lib_errno(&over)), errno_name(errno::EMFILE))?;
    drop(over);
    streams.pop();
    let again = bp.events();
    expect_eq("after closing one", errno_name(lib_errno(&again)), "ok".into())
}

fn quota<P: Platform>(p: &mut P) -> Outcome {
    let a = block(p, 35);
    let q = libhwbp::abi::DEFAULT_USER_QUOTA;
    let mut held = Vec::new();
    for i in 0..q {
        held.push(Breakpoint::watch(a + 8 * (i as u64 % 8)).access(Access::Write).open(p.transport()).map_err(|err| format!("open #{i} of the quota {q}: {err}"))?);
    }
    let over = Breakpoint::watch(a).open(p.transport());
    expect_eq(&format!("open #{q}"), errno_name(lib_errno(&over)), errno_name(errno::EMFILE))?;
    drop(over);
    held.pop();
    let again = Breakpoint::watch(a).open(p.transport());
    expect_eq("after closing one", errno_name(lib_errno(&again)), "ok".into())
}

fn quota_streams<P: Platform>(p: &mut P) -> Outcome {
    let a = block(p, 36);
    let q = libhwbp::abi::DEFAULT_USER_QUOTA;
    let mut held = Vec::new();
    for i in 0..q {
        held.push(Breakpoint::watch(a + 8 * (i as u64 % 8)).access(Access::Write).open(p.transport()).map_err(|err| format!("open #{i}: {err}"))?);
    }
    let stream = events::<P>(&held[0])?;
    held.remove(0).close().map_err(e("close"))?;
    let over = Breakpoint::watch(a).open(p.transport());
    expect_eq("open while the closed one's stream is open", errno_name(lib_errno(&over)), errno_name(errno::EMFILE))?;
    drop(over);
    drop(stream);
    let again = Breakpoint::watch(a).open(p.transport());
    expect_eq("after closing the stream", errno_name(lib_errno(&again)), "ok".into())
}

fn root_cpu_all<P: Platform>(p: &mut P) -> Outcome {
    let a = block(p, 37);
    let bp = open(p, Breakpoint::watch(a).access(Access::Write).target(Target::AllCpus))?;
    p.store_n(a, 4, 3);
    expect_eq("count", count(&bp)?, 3)
}

fn root_kernel_option<P: Platform>(p: &mut P) -> Outcome {
    let a = block(p, 38);
    let bp = open(p, Breakpoint::watch(a).access(Access::Write).kernel())?;
    p.store_n(a, 4, 2);
    expect_eq("count", count(&bp)?, 2)
}

// ---- restart ----------------------------------------------------------

fn restart<P: Platform>(p: &mut P) -> (Outcome, Outcome) {
    const TIMED: u64 = 20_000;
    let old = block(p, 39);
    let new = block(p, 40);
    let baseline = p.time_stores(old, TIMED);
    // Raw handles: a client that never closes them.
    let t = p.transport();
    let mut leaked = Vec::new();
    for i in 0..SLOTS as u64 {
        match t.open(&format!("self/mem:{:#x}/8:w?pinned", old + 8 * i), false) {
            Ok(h) => leaked.push(h),
            Err(err) => return (Err(format!("open pinned #{i}: {err}")), skip("nothing to restart")),
        }
    }
    let mut why = String::new();
    for (i, &h) in leaked.iter().enumerate() {
        p.store(old + 8 * i as u64, 8);
        let mut buf = [0u8; libhwbp::abi::COUNT_RECORD_SIZE];
        match t.read(h, &mut buf) {
            Ok(_) if CountRecord::from_bytes(&buf).value == 1 => {}
            Ok(_) => {
                let _ = write!(why, "#{i} counted {} of 1 before the restart; ", CountRecord::from_bytes(&buf).value);
            }
            Err(err) => {
                let _ = write!(why, "#{i}: read: {err}; ");
            }
        }
    }
    drop(t);
    match p.restart_server(leaked) {
        None => return (skip("this platform cannot restart hwbpd (on Redox: --hwbpd-pid and --hwbpd-cmd)"), skip("no restart")),
        Some(Err(err)) => return (Err(format!("{why}restart: {err}")), Err("no restart".into())),
        Some(Ok(())) => {}
    }
    let nothing_armed = (|| {
        ensure(why.is_empty(), || why.clone())?;
        let mut checked = false;
        if let Some(n) = p.armed_registers() {
            expect_eq("armed debug registers", n, 0)?;
            checked = true;
        }
        if let (Some(before), Some(after)) = (baseline, p.time_stores(old, TIMED)) {
            // A store that traps costs microseconds; one that does not, nanoseconds.
            ensure(after <= before * 5 + std::time::Duration::from_millis(20), || {
                format!("{TIMED} stores to the old watched word took {after:?} after the restart, {before:?} before arming: still trapping")
            })?;
            checked = true;
        }
        ensure(checked, || "the platform can neither read the registers nor time stores".into())
    })();
    let fresh = (|| {
        let held = fillers(p, new, SLOTS)?;
        for i in 0..SLOTS as u64 {
            p.store(old + 8 * i, 8);
            p.store(new + 8 * i, 8);
        }
        for (i, f) in held.iter().enumerate() {
            expect_eq(&format!("new pinned #{i}"), count(f)?, 1)?;
        }
        Ok(())
    })();
    (nothing_armed, fresh)
}

/// The selftest binary's options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Args {
    /// Running as a non-root user (`--non-root`).
    pub non_root: bool,
    /// A live task of another uid (`--other-pid`).
    pub other_pid: Option<u64>,
    /// hwbpd's pid, to kill it (`--hwbpd-pid`).
    pub hwbpd_pid: Option<u64>,
    /// How to start hwbpd again (`--hwbpd-cmd`, `--hwbpd-arg`...).
    pub hwbpd_cmd: Option<String>,
    pub hwbpd_args: Vec<String>,
}

impl Args {
    pub fn parse(args: &[String]) -> Result<Args, String> {
        let mut a = Args::default();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().cloned().ok_or(format!("{flag} needs a value"));
            let number = |v: String| v.parse::<u64>().map_err(|_| format!("{flag}: not a number: {v:?}"));
            match flag.as_str() {
                "--non-root" => a.non_root = true,
                "--other-pid" => a.other_pid = Some(number(value()?)?),
                "--hwbpd-pid" => a.hwbpd_pid = Some(number(value()?)?),
                "--hwbpd-cmd" => a.hwbpd_cmd = Some(value()?),
                "--hwbpd-arg" => a.hwbpd_args.push(value()?),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(a)
    }
}
