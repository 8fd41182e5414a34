//! The hwbp selftest: the whole path (client, hwbpd, kernel, debug
//! registers) exercised through libhwbp, on any [`Platform`].
//!
//! Checks: every length x access x slot occupancy with its own loads and
//! stores (and exec x slot with its own calls); hit records; a watch on a
//! child task (and its exit); 6 flexible breakpoints multiplexed on 4
//! registers (time_running < time_enabled, counts scale); pinned ENOSPC;
//! EINVAL and ESRCH; permission errors as a non-root user; hwbpd restart
//! leaving nothing armed (where the platform can restart it).
//!
//! Output: one `ok - <check>` or `FAIL - <check>: <why>` line per check,
//! `skip - <check>: <why>` for checks the platform cannot run, and last
//! `N passed, N failed` (the line the Redox boot script looks for).

use std::fmt::Write as _;
use std::io::Write;

use libhwbp::abi::errno::{self, ErrorKind};
use libhwbp::abi::{Access, Target};
use libhwbp::abi::EventRecord;
use libhwbp::{Breakpoint, BreakpointHandle};

use crate::platform::{Platform, CODE_TARGETS};

/// Debug registers on x86.
const SLOTS: usize = 4;
/// Data lengths one register watches.
const LENS: [u64; 4] = [1, 2, 4, 8];
/// Offset of the watched range in the scratch (8-aligned, with room on
/// both sides for the "beside it" stores).
const WATCH_OFFSET: u64 = 16;
/// Offset of the filler watches that occupy the lower slots.
const FILLER_OFFSET: u64 = 32;
/// Relative tolerance of a multiplexed scaled count.
const SCALE_TOLERANCE: f64 = 0.20;

/// Tally of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
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
                format!("FAIL - {name}: {why}")
            }
        };
        let _ = writeln!(self.out, "{line}");
    }
}

fn e<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |err| format!("{what}: {err}")
}

fn expect_eq<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Outcome {
    if got == want { Ok(()) } else { Err(format!("{what}: got {got:?}, want {want:?}")) }
}

fn count<T: libhwbp::Transport>(h: &BreakpointHandle<T>) -> Result<u64, String> {
    h.read_count().map(|c| c.value).map_err(e("read count"))
}

/// Run every check; print one line per check and the summary line.
pub fn run<P: Platform>(p: &mut P, out: &mut dyn Write) -> Report {
    let _ = writeln!(out, "hwbp-selftest: {}", p.describe());
    let mut run = Run { out, report: Report::default() };
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
    run.check("hit records carry id, address, access, pid", hit_records(p));
    run.check("watch on a child task, count kept after it exits", child_watch(p));
    run.check("6 flexible breakpoints multiplexed on 4 registers", multiplexing(p));
    run.check("fifth pinned breakpoint is ENOSPC", pinned_enospc(p));
    run.check("malformed path is EINVAL, missing task is ESRCH", einval_esrch(p));
    run.check("non-root: other's task, cpu-wide, kernel are EPERM; own task opens", permissions(p));
    run.check("hwbpd restart leaves nothing armed", restart(p));
    let r = run.report.clone();
    let _ = writeln!(run.out, "{} passed, {} failed", r.passed, r.failed);
    r
}

fn fillers<P: Platform>(p: &P, n: usize) -> Result<Vec<BreakpointHandle<P::T>>, String> {
    (0..n)
        .map(|i| {
            Breakpoint::watch(p.scratch() + FILLER_OFFSET + 8 * i as u64)
                .len(8)
                .access(Access::Write)
                .pinned()
                .open(p.transport())
                .map_err(e("open filler"))
        })
        .collect()
}

/// A pinned watch of `len` bytes with `slot` other registers taken: a
/// store on it hits, a load hits iff rw, stores beside it do not.
fn data_case<P: Platform>(p: &mut P, len: u64, access: Access, slot: usize) -> Outcome {
    let fill = fillers(p, slot)?;
    let addr = p.scratch() + WATCH_OFFSET;
    let bp = Breakpoint::watch(addr).len(len).access(access).pinned().nosplit().open(p.transport()).map_err(e("open"))?;
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
    let fill = fillers(p, slot)?;
    let bp = Breakpoint::exec(p.code_addr(slot)).pinned().open(p.transport()).map_err(e("open"))?;
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

fn hit_records<P: Platform>(p: &mut P) -> Outcome {
    let addr = p.scratch() + WATCH_OFFSET;
    let bp = Breakpoint::watch(addr).access(Access::Write).open(p.transport()).map_err(e("open"))?;
    let mut ev = bp.events().map_err(e("dup events"))?;
    for _ in 0..3 {
        p.store(addr, 4);
    }
    let recs: Vec<EventRecord> = ev.drain().map_err(e("read events"))?;
    expect_eq("records", recs.len(), 3)?;
    let id = bp.read_count().map_err(e("count"))?.id;
    for (i, r) in recs.iter().enumerate() {
        expect_eq("record", (r.id, r.addr, r.access_kind(), r.pid, r.hit), (id, addr, Some(Access::Write), p.own_pid(), i as u64 + 1))?;
    }
    Ok(())
}

fn child_watch<P: Platform>(p: &mut P) -> Outcome {
    let mut child = p.spawn_child().map_err(e("spawn child"))?;
    let bp = Breakpoint::watch(child.addr()).access(Access::Write).target(Target::Task(child.pid())).open(p.transport()).map_err(e("open"))?;
    child.store(5).map_err(e("child store"))?;
    expect_eq("child's stores", count(&bp)?, 5)?;
    p.store(p.scratch() + WATCH_OFFSET, 4);
    expect_eq("after our own store", count(&bp)?, 5)?;
    child.exit().map_err(e("child exit"))?;
    expect_eq("after the child exited", count(&bp)?, 5)?;
    Ok(())
}

fn multiplexing<P: Platform>(p: &mut P) -> Outcome {
    const WATCHES: u64 = 6;
    const ROUNDS: u64 = 400;
    const STEP_NS: u64 = 500_000;
    let base = p.scratch();
    let bps = (0..WATCHES)
        .map(|i| Breakpoint::watch(base + 8 * i).access(Access::Write).open(p.transport()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(e("open"))?;
    for _ in 0..ROUNDS {
        for i in 0..WATCHES {
            p.store(base + 8 * i, 4);
        }
        p.let_time_pass(STEP_NS);
    }
    let mut why = String::new();
    for (i, bp) in bps.iter().enumerate() {
        let c = bp.read_count().map_err(e("count"))?;
        if !(c.time_running_ns > 0 && c.time_running_ns < c.time_enabled_ns) {
            let _ = write!(why, "#{i}: running {} of enabled {}; ", c.time_running_ns, c.time_enabled_ns);
            continue;
        }
        let scaled = c.scaled_value().unwrap_or(0) as f64;
        if (scaled - ROUNDS as f64).abs() > SCALE_TOLERANCE * ROUNDS as f64 {
            let _ = write!(why, "#{i}: scaled {scaled:.0} (raw {}) vs {ROUNDS} stores; ", c.value);
        }
    }
    if why.is_empty() { Ok(()) } else { Err(why) }
}

fn pinned_enospc<P: Platform>(p: &mut P) -> Outcome {
    let _held = fillers(p, SLOTS)?;
    let fifth = Breakpoint::watch(p.scratch() + WATCH_OFFSET).pinned().open(p.transport());
    match fifth {
        Ok(_) => Err("a fifth pinned breakpoint was admitted".into()),
        Err(err) => expect_eq("errno", err.errno(), Some(errno::ENOSPC)),
    }
}

fn einval_esrch<P: Platform>(p: &mut P) -> Outcome {
    use libhwbp::Transport;
    let t = p.transport();
    let bad = t.open("self/mem:0x1000:r", false).err().and_then(|e| e.raw_os_error());
    expect_eq("read-only watch", bad, Some(errno::EINVAL))?;
    let missing = Breakpoint::watch(p.scratch()).target(Target::Task(u64::from(u32::MAX) - 1)).open(p.transport());
    expect_eq("missing task", missing.err().and_then(|e| e.kind()), Some(ErrorKind::NoSuchTarget))
}

fn permissions<P: Platform>(p: &mut P) -> Outcome {
    let a = p.scratch();
    let paths = [
        (format!("task/{}/mem:{a:#x}", p.own_pid()), errno::EPERM),
        (format!("cpu/0/mem:{a:#x}"), errno::EPERM),
        (format!("cpu/all/mem:{a:#x}"), errno::EPERM),
        (format!("self/mem:{a:#x}?kernel"), errno::EPERM),
        ("self/mem:0xffff800000001000".to_string(), errno::EPERM),
        (format!("self/mem:{a:#x}"), 0),
    ];
    let just_paths: Vec<String> = paths.iter().map(|(p, _)| p.clone()).collect();
    let got = p.open_as_user(&just_paths).map_err(e("run as user"))?;
    let want: Vec<i32> = paths.iter().map(|(_, e)| *e).collect();
    expect_eq("errnos", got, want)
}

fn restart<P: Platform>(p: &mut P) -> Outcome {
    match p.restart_server(3) {
        None => Err("skip: this platform cannot restart hwbpd".into()),
        Some(r) => {
            let armed = r.map_err(e("restart"))?;
            expect_eq("armed registers after the restart", armed, 0)?;
            let bp = Breakpoint::watch(p.scratch() + WATCH_OFFSET).open(p.transport()).map_err(e("open on the new server"))?;
            p.store(p.scratch() + WATCH_OFFSET, 4);
            expect_eq("count on the new server", count(&bp)?, 1)
        }
    }
}
