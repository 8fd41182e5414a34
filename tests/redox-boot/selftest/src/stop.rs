//! Stop-on-hit (`PIECE_STOP`, the control handle's `resume`): the second
//! context stops where a stopping piece fires, stays stopped, and runs
//! again when resumed or when the control handle closes.

use core::fmt::Write;
use core::sync::atomic::Ordering;

use hwbp_kern::abi::{HitRecord, RawPiece, ACCESS_EXEC, ACCESS_WRITE, HIT_EXEC, HIT_STOPPED, PIECE_STOP};
use hwbp_redox_selftest::{Line, Tally};

use crate::sys::{self, dup, openat, Errno, Fd, SYS_ROOT};
use crate::thread::{self, Infra, CMD_CALL_TARGET, CMD_STORE_D, TARGET_CALLS};
use crate::{addr_of, drain, errno_msg, expect_errno, open_dbg, piece, report, write_plan, Check, Session, VAR_D};

const T_STOP_WATCH: u64 = 0x7001;
const T_STOP_EXEC: u64 = 0x7002;
/// How long a stopped context must stay silent to count as stopped.
const STAYS_STOPPED_NS: u64 = 300_000_000;
/// How long we wait for a record or an acknowledgement that must come.
const MUST_COME_NS: u64 = 20_000_000_000;

fn stopping(p: RawPiece) -> RawPiece {
    RawPiece { flags: PIECE_STOP, ..p }
}

/// Wait for the record of `token`; the others are skipped.
fn wait_record(control: &Fd, token: u64) -> Result<HitRecord, Line> {
    let deadline = sys::now_ns() + MUST_COME_NS;
    loop {
        let hits = drain(control)?;
        if let Some(r) = hits.as_slice().iter().find(|r| r.token == token) {
            return Ok(*r);
        }
        if sys::now_ns() > deadline {
            fail!("no record of token {token:#x} within 20 s");
        }
        sys::yield_now();
    }
}

fn resume(handle: &Fd, ids: &[u64]) -> Result<(), Errno> {
    let mut bytes = [0u8; 8 * 4];
    for (chunk, id) in bytes.chunks_exact_mut(8).zip(ids) {
        chunk.copy_from_slice(&id.to_le_bytes());
    }
    handle.write(&bytes[..8 * ids.len().min(4)]).map(|_| ())
}

/// The stop group. Closing the control handle is part of it, so it returns
/// the session with a new control handle.
pub fn group_stop(t: &mut Tally, s: Session, infra: &Infra) -> Session {
    let Some(dbg2) = infra.thread_ctx().and_then(|ctx| open_dbg(ctx, &s.control).ok()) else {
        check!(t, Err(Line::default()), "stop: not run, no second context");
        return s;
    };
    let dbg2 = &dbg2;
    let resumer = match dup(s.control.raw(), "resume") {
        Ok(fd) => fd,
        Err(e) => {
            check!(t, Err(errno_msg("dup resume", e)), "stop: the control handle opens `resume`");
            return s;
        }
    };
    check!(t, Ok(()), "stop: the control handle opens `resume`");
    let d = addr_of(&raw mut VAR_D);
    // SAFETY: our static, aligned; the second context is idle.
    unsafe { core::ptr::write_volatile(d as *mut u64, 0) };

    let mut stopped_id = 0u64;
    let stopped = (|| -> Check {
        drain(&s.control)?;
        write_plan(dbg2, &[stopping(piece(d, T_STOP_WATCH, 8, ACCESS_WRITE))]).map_err(|e| errno_msg("arm", e))?;
        let seq = thread::post(CMD_STORE_D);
        let r = wait_record(&s.control, T_STOP_WATCH)?;
        if r.flags & HIT_STOPPED == 0 {
            fail!("record flags {:#x} lack HIT_STOPPED", r.flags);
        }
        // SAFETY: our static.
        let value = unsafe { core::ptr::read_volatile(d as *const u64) };
        if value != 0xa5a5_a5a5_a5a5_a5a5 {
            fail!("VAR_D is {value:#x}: a data watch stops after the store");
        }
        if thread::acked_within(seq, STAYS_STOPPED_NS) {
            fail!("the second context acknowledged while stopped");
        }
        stopped_id = r.context;
        Ok(())
    })();
    check!(t, stopped, "stop: a stopping watch stops the second context after its store (HIT_STOPPED, silent 300 ms)");

    let refused = (|| -> Check {
        expect_errno(resumer.write(&[1, 2, 3]).map(|_| ()), syscall::EINVAL).map_err(|m| prefixed("3 bytes", m))?;
        expect_errno(resumer.write(&[0u8; 8 * 65]).map(|_| ()), syscall::EINVAL).map_err(|m| prefixed("65 ids", m))?;
        expect_errno(resume(&resumer, &[stopped_id ^ (1 << 40)]), syscall::ESRCH)
            .map_err(|m| prefixed("another pid", m))?;
        expect_errno(resume(&resumer, &[u64::MAX]), syscall::ESRCH)
            .map_err(|m| prefixed("no such context", m))?;
        let mut buf = [0u8; 8];
        expect_errno(resumer.read(&mut buf).map(|_| ()), syscall::EBADF).map_err(|m| prefixed("read", m))?;
        if thread::acked_within(thread_seq(), 50_000_000) {
            fail!("a refused resume ran the second context");
        }
        Ok(())
    })();
    check!(t, refused, "stop: resume refuses bad lengths (EINVAL), ids of no stopped thread (ESRCH), reads (EBADF)");

    let resumed = (|| -> Check {
        resume(&resumer, &[stopped_id]).map_err(|e| errno_msg("resume", e))?;
        if !thread::acked_within(thread_seq(), MUST_COME_NS) {
            fail!("the second context did not run again within 20 s");
        }
        expect_errno(resume(&resumer, &[stopped_id]), syscall::ESRCH)
            .map_err(|m| prefixed("a second resume", m))
    })();
    check!(t, resumed, "stop: resume <id> runs the second context again (then ESRCH: it is not stopped)");

    let exec = (|| -> Check {
        let target = thread::stop_target as extern "C" fn() as usize as u64;
        let before = TARGET_CALLS.load(Ordering::Acquire);
        write_plan(dbg2, &[stopping(piece(target, T_STOP_EXEC, 1, ACCESS_EXEC))]).map_err(|e| errno_msg("arm", e))?;
        drain(&s.control)?;
        let seq = thread::post(CMD_CALL_TARGET);
        let r = wait_record(&s.control, T_STOP_EXEC)?;
        if r.flags != HIT_EXEC | HIT_STOPPED || r.rip != target {
            fail!("record rip {:#x} flags {:#x}, expected rip {target:#x} flags EXEC|STOPPED", r.rip, r.flags);
        }
        if thread::acked_within(seq, STAYS_STOPPED_NS) || TARGET_CALLS.load(Ordering::Acquire) != before {
            fail!("the function ran while stopped before its first instruction");
        }
        resume(&resumer, &[r.context]).map_err(|e| errno_msg("resume", e))?;
        if !thread::acked_within(seq, MUST_COME_NS) {
            fail!("the second context did not run again within 20 s");
        }
        let calls = TARGET_CALLS.load(Ordering::Acquire).wrapping_sub(before);
        let again = drain(&s.control)?;
        let refired = again.as_slice().iter().filter(|h| h.token == T_STOP_EXEC).count();
        if calls != 1 || refired != 0 {
            fail!("after resume: {calls} call(s), {refired} more record(s); expected 1 and 0 (RF)");
        }
        Ok(())
    })();
    check!(t, exec, "stop: a stopping exec breakpoint stops before the instruction; resumed, it runs once (RF)");

    // Stopped again, then the control handle closes: it must run again.
    let armed = (|| -> Check {
        write_plan(dbg2, &[stopping(piece(d, T_STOP_WATCH, 8, ACCESS_WRITE))]).map_err(|e| errno_msg("arm", e))?;
        drain(&s.control)?;
        let seq = thread::post(CMD_STORE_D);
        wait_record(&s.control, T_STOP_WATCH)?;
        if thread::acked_within(seq, STAYS_STOPPED_NS) {
            fail!("the second context acknowledged while stopped");
        }
        Ok(())
    })();
    check!(t, armed, "stop: stopped again before the control handle closes");
    let Session { control, ctx, dbg } = s;
    drop(resumer);
    drop(dbg);
    let _ = dbg2;
    let closed = control.close().map_err(|e| errno_msg("close control", e)).and_then(|()| {
        if thread::acked_within(thread_seq(), MUST_COME_NS) {
            Ok(())
        } else {
            fail!("the second context stayed stopped after the control handle closed")
        }
    });
    check!(t, closed, "stop: closing the control handle runs every stopped thread again");
    let control = match openat(SYS_ROOT, "hwbp-control", syscall::O_RDWR) {
        Ok(fd) => fd,
        Err(e) => {
            check!(t, Err(errno_msg("reopen", e)), "stop: hwbp-control can be taken again");
            return Session { control: Fd::invalid(), ctx, dbg: Fd::invalid() };
        }
    };
    let dbg = open_dbg(&ctx, &control).unwrap_or_else(|_| Fd::invalid());
    Session { control, ctx, dbg }
}

/// The sequence number of the last command posted.
fn thread_seq() -> u32 {
    thread::last_seq()
}

fn prefixed(what: &str, m: Line) -> Line {
    let mut l = Line::default();
    let _ = write!(l, "{what}: {}", core::str::from_utf8(m.as_bytes()).unwrap_or("?"));
    l
}
