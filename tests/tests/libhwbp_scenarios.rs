//! The issue-3 scenarios through libhwbp's typed client and hwbpd's
//! in-process transport, on the simulated kernel: what a program using
//! libhwbp sees.

mod libhwbp_common;

use libhwbp::abi::errno::{self, ErrorKind};
use libhwbp::abi::{Access, AdmittedPiece, EventRecord, MemEvent, Options, Target};
use libhwbp::{Batch, Breakpoint, Transport};
use libhwbp_common::*;

const A: u64 = 0x1000;

fn kind<T: std::fmt::Debug>(r: libhwbp::Result<T>) -> ErrorKind {
    r.expect_err("should fail").kind().expect("a contract error")
}

#[test]
fn self_watch_counts_writes_and_reads() {
    let w = world(1);
    let bp = Breakpoint::watch(A).open(&w.user).unwrap();
    w.write(A, 4);
    w.read(A, 4);
    w.write(A + 8, 4);
    assert_eq!(bp.read_count().unwrap().value, 2);
}

#[test]
fn write_watch_ignores_reads() {
    let w = world(1);
    let bp = Breakpoint::watch(A).access(Access::Write).open(&w.user).unwrap();
    w.read(A, 4);
    w.write(A, 1);
    assert_eq!(bp.read_count().unwrap().value, 1);
}

#[test]
fn exec_breakpoint_counts_each_execution() {
    let w = world(1);
    let code = 0x40_2000;
    let bp = Breakpoint::exec(code).open(&w.user).unwrap();
    w.exec(code);
    w.exec(code + 4);
    w.exec(code);
    assert_eq!(bp.read_count().unwrap().value, 2);
    let ev = bp.path().unwrap();
    assert_eq!(ev.pieces[0].access(), Access::Exec);
}

#[test]
fn task_target_follows_the_task_and_its_new_threads() {
    let w = world(2);
    let bp = Breakpoint::watch(A).target(Target::Task(w.pid.into())).open(&w.user).unwrap();
    let t2 = w.sim.borrow_mut().spawn_thread(w.pid).unwrap();
    w.switch(1, Some(t2));
    w.write(A, 4);
    w.write_as(t2, A, 4);
    assert_eq!(bp.read_count().unwrap().value, 2);
}

#[test]
fn a_new_process_starts_without_breakpoints() {
    let w = world(2);
    let bp = Breakpoint::watch(A).target(Target::Task(w.pid.into())).open(&w.user).unwrap();
    let (_child, ctid) = w.spawn(USER);
    w.switch(1, Some(ctid));
    w.write_as(ctid, A, 4);
    assert_eq!(bp.read_count().unwrap().value, 0);
}

#[test]
fn task_on_cpu_target_counts_only_on_that_cpu() {
    let w = world(2);
    let bp = Breakpoint::watch(A).target(Target::TaskOnCpu { pid: w.pid.into(), cpu: 1 }).open(&w.user).unwrap();
    w.write(A, 4); // on CPU 0
    w.switch(1, Some(w.tid));
    w.write(A, 4);
    assert_eq!(bp.read_count().unwrap().value, 1);
}

#[test]
fn cpu_target_counts_every_task_on_that_cpu() {
    let w = world(2);
    let bp = Breakpoint::watch(A).target(Target::Cpu(0)).open(&w.root).unwrap();
    let (_p2, t2) = w.spawn(OTHER_USER);
    w.write(A, 4);
    w.switch(0, Some(t2));
    w.write_as(t2, A, 4);
    w.switch(1, Some(w.tid));
    w.write(A, 4); // CPU 1: not counted
    assert_eq!(bp.read_count().unwrap().value, 2);
}

#[test]
fn all_cpus_target_counts_everywhere() {
    let w = world(2);
    let bp = Breakpoint::watch(A).target(Target::AllCpus).open(&w.root).unwrap();
    let (_p2, t2) = w.spawn(OTHER_USER);
    w.switch(1, Some(t2));
    w.write(A, 4);
    w.write_as(t2, A, 4);
    assert_eq!(bp.read_count().unwrap().value, 2);
}

#[test]
fn disabled_option_counts_nothing_until_enabled() {
    let w = world(1);
    let bp = Breakpoint::watch(A).disabled().open(&w.user).unwrap();
    w.write(A, 4);
    assert_eq!(bp.read_count().unwrap().value, 0);
    bp.enable().unwrap();
    w.write(A, 4);
    bp.disable().unwrap();
    w.write(A, 4);
    assert_eq!(bp.read_count().unwrap().value, 1);
}

#[test]
fn reset_zeroes_the_count() {
    let w = world(1);
    let bp = Breakpoint::watch(A).open(&w.user).unwrap();
    w.write(A, 4);
    bp.reset().unwrap();
    assert_eq!(bp.read_count().unwrap().value, 0);
    w.write(A, 4);
    assert_eq!(bp.read_count().unwrap().value, 1);
}

#[test]
fn hit_records_carry_the_contract_fields() {
    let w = world(1);
    let bp = Breakpoint::watch(A).access(Access::Write).open(&w.user).unwrap();
    let mut ev = bp.events().unwrap();
    w.write(A, 4);
    w.write(A + 2, 2);
    let mut out = [EventRecord::default(); 8];
    assert_eq!(ev.try_next_batch(&mut out).unwrap(), Batch::Records(2));
    let id = bp.read_count().unwrap().id;
    for (i, r) in out[..2].iter().enumerate() {
        assert_eq!((r.id, r.addr, r.pid, r.cpu, r.hit), (id, A, u64::from(w.pid), 0, i as u64 + 1));
        assert_eq!(r.access_kind(), Some(Access::Write));
    }
    assert!(out[1].ip > out[0].ip);
    assert_eq!(ev.try_next_batch(&mut out).unwrap(), Batch::Empty);
}

#[test]
fn nonblocking_empty_stream_is_eagain_at_the_transport() {
    let w = world(1);
    let bp = Breakpoint::watch(A).open(&w.user).unwrap();
    let ev = bp.events().unwrap();
    w.user.set_nonblock(ev.raw_handle(), true).unwrap();
    let e = w.user.read(ev.raw_handle(), &mut [0u8; libhwbp::abi::EVENT_RECORD_SIZE]).unwrap_err();
    assert_eq!(ErrorKind::of_io_error(&e), Some(ErrorKind::WouldBlock));
}

#[test]
fn period_gives_every_nth_hit() {
    let w = world(1);
    let bp = Breakpoint::watch(A).period(3).open(&w.user).unwrap();
    let mut ev = bp.events().unwrap();
    for _ in 0..10 {
        w.write(A, 4);
    }
    let hits: Vec<u64> = ev.drain().unwrap().iter().map(|r| r.hit).collect();
    assert_eq!(hits, [3, 6, 9]);
    assert_eq!(bp.read_count().unwrap().value, 10);
}

#[test]
fn full_ring_drops_the_oldest_and_counts_lost() {
    let w = world(1);
    let bp = Breakpoint::watch(A).ring(4).open(&w.user).unwrap();
    let mut ev = bp.events().unwrap();
    for _ in 0..10 {
        w.write(A, 4);
    }
    let hits: Vec<u64> = ev.drain().unwrap().iter().map(|r| r.hit).collect();
    assert_eq!(hits, [7, 8, 9, 10]);
    let c = bp.read_count().unwrap();
    assert_eq!((c.value, c.lost), (10, 6));
}

#[test]
fn split_range_catches_each_byte_and_nothing_beside_it() {
    let w = world(1);
    let bp = Breakpoint::watch(0x1001).len(6).access(Access::Write).open(&w.user).unwrap();
    let admitted = bp.path().unwrap();
    let covered: u64 = admitted.pieces.iter().map(AdmittedPiece::len).sum();
    assert_eq!(covered, 6);
    assert!(admitted.pieces.iter().all(|p| p.addr() % p.len() == 0));
    assert_eq!(admitted.pieces.first().unwrap().addr(), 0x1001);
    for a in 0x1001..0x1007 {
        w.write(a, 1);
    }
    assert_eq!(bp.read_count().unwrap().value, 6);
    w.write(0x1000, 1);
    w.write(0x1007, 1);
    assert_eq!(bp.read_count().unwrap().value, 6);
}

#[test]
fn nosplit_refuses_a_range_that_needs_splitting() {
    let w = world(1);
    assert_eq!(kind(Breakpoint::watch(0x1001).len(6).nosplit().open(&w.user)), ErrorKind::Invalid);
    assert!(Breakpoint::watch(0x1000).len(8).nosplit().open(&w.user).is_ok());
}

#[test]
fn identical_breakpoints_share_one_register() {
    let w = world(1);
    let a = Breakpoint::watch(A).access(Access::Write).open(&w.user).unwrap();
    let b = Breakpoint::watch(A).access(Access::Write).open(&w.user).unwrap();
    w.pass(1);
    assert_eq!(w.armed_now(), 1);
    w.write(A, 4);
    assert_eq!((a.read_count().unwrap().value, b.read_count().unwrap().value), (1, 1));
}

#[test]
fn fifth_pinned_breakpoint_is_enospc() {
    let w = world(1);
    let _held: Vec<_> = (0..4).map(|i| Breakpoint::watch(A + 8 * i).pinned().open(&w.user).unwrap()).collect();
    let e = Breakpoint::watch(A + 64).pinned().open(&w.user).unwrap_err();
    assert_eq!(e.errno(), Some(errno::ENOSPC));
    // A flexible one is still admitted.
    assert!(Breakpoint::watch(A + 64).open(&w.user).is_ok());
}

#[test]
fn modify_moves_the_watch() {
    let w = world(1);
    let mut bp = Breakpoint::watch(A).access(Access::Write).open(&w.user).unwrap();
    bp.modify(MemEvent::new(0x2000, 2, Access::Write).unwrap(), None).unwrap();
    w.write(A, 4);
    w.write(0x2000, 2);
    assert_eq!(bp.read_count().unwrap().value, 1);
    assert_eq!(bp.path().unwrap().path.event, MemEvent::new(0x2000, 2, Access::Write).unwrap());
}

#[test]
fn modify_that_does_not_fit_leaves_the_old_watch_armed() {
    let w = world(1);
    let mut pinned: Vec<_> = (0..4).map(|i| Breakpoint::watch(A + 8 * i).access(Access::Write).pinned().open(&w.user).unwrap()).collect();
    // Two pieces where one register is free once this one's is reused: ENOSPC.
    let too_big = MemEvent::new(0x3004, 8, Access::Write).unwrap();
    assert_eq!(kind(pinned[0].modify(too_big, None)), ErrorKind::NoSpace);
    assert_eq!(kind(pinned[0].modify(MemEvent::new(0x3000, 3, Access::Write).unwrap(), Some(Options { nosplit: true, pinned: true, ..Options::default() }))), ErrorKind::Invalid);
    w.write(A, 4);
    assert_eq!(pinned[0].read_count().unwrap().value, 1);
    assert_eq!(pinned[0].requested_path().event.addr(), A);
    assert_eq!(w.armed_now(), 4);
}

#[test]
fn six_flexible_breakpoints_multiplex_and_scale_to_the_truth() {
    let w = world_with(1, hwbpd::Config { rotation_ns: 1_000_000, ..hwbpd::Config::default() });
    let bps: Vec<_> = (0..6).map(|i| Breakpoint::watch(A + 8 * i).access(Access::Write).open(&w.user).unwrap()).collect();
    let rounds = 1200u64;
    for _ in 0..rounds {
        for i in 0..6 {
            w.write(A + 8 * i, 4);
        }
        w.pass(250_000);
        assert!(w.armed_now() <= 4);
    }
    for bp in &bps {
        let (c, scaled) = bp.read_scaled().unwrap();
        assert!(c.time_running_ns < c.time_enabled_ns, "{c:?}");
        assert!(c.time_running_ns > 0, "{c:?}");
        let scaled = scaled.unwrap() as f64;
        assert!((scaled - rounds as f64).abs() <= 0.10 * rounds as f64, "scaled {scaled} vs {rounds}: {c:?}");
    }
}

#[test]
fn exclusive_breakpoint_has_the_registers_to_itself_while_armed() {
    let w = world_with(1, hwbpd::Config { rotation_ns: 1_000_000, ..hwbpd::Config::default() });
    let ex = Breakpoint::watch(A).access(Access::Write).exclusive().open(&w.user).unwrap();
    let others: Vec<_> = (1..3).map(|i| Breakpoint::watch(A + 8 * i).access(Access::Write).open(&w.user).unwrap()).collect();
    let mut saw_exclusive_alone = false;
    for _ in 0..40 {
        let ex_before = ex.read_count().unwrap().value;
        w.write(A, 4);
        let ex_hit = ex.read_count().unwrap().value - ex_before;
        if ex_hit > 0 {
            // The exclusive one is armed: nothing else is.
            assert_eq!(w.armed_now(), 1);
            saw_exclusive_alone = true;
        }
        let before: u64 = others.iter().map(|b| b.read_count().unwrap().value).sum();
        w.write(A + 8, 4);
        w.write(A + 16, 4);
        let after: u64 = others.iter().map(|b| b.read_count().unwrap().value).sum();
        assert!(ex_hit == 0 || after == before, "others counted while the exclusive one was armed");
        w.pass(500_000);
    }
    let c = ex.read_count().unwrap();
    assert!(c.value > 0 && c.time_running_ns < c.time_enabled_ns, "{c:?}");
    assert!(saw_exclusive_alone);
    for b in &others {
        let c = b.read_count().unwrap();
        assert!(c.value > 0 && c.time_running_ns < c.time_enabled_ns, "{c:?}");
    }
}

#[test]
fn close_disarms_before_it_returns() {
    let w = world(1);
    let bp = Breakpoint::watch(A).pinned().open(&w.user).unwrap();
    assert_eq!(w.armed_now(), 1);
    bp.close().unwrap();
    assert_eq!(w.armed_now(), 0);
    assert_eq!(w.armed_after_reschedule(), 0);
}

#[test]
fn dropping_handles_leaves_zero_armed_registers() {
    let w = world(2);
    {
        let _a = Breakpoint::watch(A).open(&w.user).unwrap();
        let _b = Breakpoint::watch(A + 8).len(6).open(&w.user).unwrap();
        let _c = Breakpoint::watch(A).target(Target::AllCpus).open(&w.root).unwrap();
        let _e = _a.events().unwrap();
        assert!(w.armed_now() > 0);
    }
    assert_eq!(w.armed_now(), 0);
    assert_eq!(w.armed_after_reschedule(), 0);
    assert!(!w.sim.borrow().any_plan());
    assert_eq!(w.root.scheme().borrow().breakpoint_count(), 0);
}

#[test]
fn task_exit_keeps_the_count_and_ends_the_stream() {
    let w = world(1);
    let bp = Breakpoint::watch(A).target(Target::Task(w.pid.into())).open(&w.root).unwrap();
    let mut ev = bp.events().unwrap();
    w.write(A, 4);
    w.write(A, 4);
    w.sim.borrow_mut().exit(w.pid).unwrap();
    assert_eq!(bp.read_count().unwrap().value, 2);
    let all: Vec<_> = ev.blocking_iter().collect::<Result<_, _>>().unwrap();
    assert_eq!(all.len(), 2);
    assert!(ev.has_ended());
    assert_eq!(w.armed_after_reschedule(), 0);
}

#[test]
fn server_drop_disarms_everything_and_a_new_server_starts_clean() {
    let w = world(1);
    let World { sim, root, user, tid, pid } = w;
    let handles: Vec<_> = (0..3).map(|i| Breakpoint::watch(A + 8 * i).pinned().open(&user).unwrap()).collect();
    assert_eq!(sim.borrow().armed_slots(), 3);
    // The server goes away with breakpoints open (as if hwbpd died): its
    // clients' handles are leaked, not closed.
    handles.into_iter().for_each(std::mem::forget);
    drop(user);
    drop(root);
    assert_eq!(sim.borrow().armed_slots(), 0);
    assert!(!sim.borrow().any_plan());
    let fresh = hwbpd::InProcess::new(hwbpd::HwbpScheme::new(sim.clone(), hwbpd::Config::default()), pid, USER);
    let bp = Breakpoint::watch(A).open(&fresh).unwrap();
    sim.borrow_mut().run(tid, hwbpd::sim::dr_model::MemAccess::write(A, 4)).unwrap();
    assert_eq!(bp.read_count().unwrap().value, 1);
}

// ---- every errno of the contract, as the client sees it ------------------

#[test]
fn malformed_requests_are_einval() {
    let w = world(1);
    assert_eq!(kind(Breakpoint::watch(A).len(0).open(&w.user)), ErrorKind::Invalid);
    // Server side too, through a raw transport open.
    for bad in ["self/mem:0x1000:r", "self/mem:0x1000?bogus", "self/mem:0x1000?ring=0", "nope/mem:0x10", "self/mem:0x1000#x"] {
        let e = w.user.open(bad, false).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(errno::EINVAL), "{bad}");
    }
    let bp = Breakpoint::watch(A).open(&w.user).unwrap();
    for bad in ["start", "enable now", "modify mem:0x10:r", ""] {
        let e = w.user.write(bp.raw_handle(), bad.as_bytes()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(errno::EINVAL), "{bad:?}");
    }
}

#[test]
fn other_users_task_is_eperm_and_root_may() {
    let w = world(1);
    let (other, _) = w.spawn(OTHER_USER);
    let t = Target::Task(other.into());
    assert_eq!(kind(Breakpoint::watch(A).target(t).open(&w.user)), ErrorKind::NotPermitted);
    assert!(Breakpoint::watch(A).target(t).open(&w.root).is_ok());
}

#[test]
fn cpu_wide_targets_and_kernel_are_root_only() {
    let w = world(1);
    assert_eq!(kind(Breakpoint::watch(A).target(Target::Cpu(0)).open(&w.user)), ErrorKind::NotPermitted);
    assert_eq!(kind(Breakpoint::watch(A).target(Target::AllCpus).open(&w.user)), ErrorKind::NotPermitted);
    assert_eq!(kind(Breakpoint::watch(A).kernel().open(&w.user)), ErrorKind::NotPermitted);
    assert_eq!(kind(Breakpoint::watch(0xffff_8000_0000_1000).open(&w.user)), ErrorKind::NotPermitted);
    assert!(Breakpoint::watch(A).kernel().target(Target::Task(w.pid.into())).open(&w.root).is_ok());
}

#[test]
fn kernel_option_counts_kernel_mode_hits() {
    let w = world(1);
    let plain = Breakpoint::watch(A).target(Target::Task(w.pid.into())).open(&w.root).unwrap();
    let kern = Breakpoint::watch(A).kernel().target(Target::Task(w.pid.into())).open(&w.root).unwrap();
    w.sim.borrow_mut().run_kernel(w.tid, hwbpd::sim::dr_model::MemAccess::write(A, 4)).unwrap();
    w.write(A, 4);
    assert_eq!(plain.read_count().unwrap().value, 1);
    assert_eq!(kern.read_count().unwrap().value, 2);
}

#[test]
fn missing_task_or_cpu_is_esrch() {
    let w = world(2);
    assert_eq!(kind(Breakpoint::watch(A).target(Target::Task(99_999)).open(&w.root)), ErrorKind::NoSuchTarget);
    assert_eq!(kind(Breakpoint::watch(A).target(Target::Cpu(7)).open(&w.root)), ErrorKind::NoSuchTarget);
    assert_eq!(kind(Breakpoint::watch(A).target(Target::TaskOnCpu { pid: w.pid.into(), cpu: 2 }).open(&w.user)), ErrorKind::NoSuchTarget);
}

#[test]
fn quota_is_emfile_and_closing_frees_it() {
    let w = world_with(1, hwbpd::Config { user_quota: 3, ..hwbpd::Config::default() });
    let mut held: Vec<_> = (0..3).map(|i| Breakpoint::watch(A + 8 * i).open(&w.user).unwrap()).collect();
    assert_eq!(kind(Breakpoint::watch(A + 64).open(&w.user)), ErrorKind::QuotaReached);
    held.pop();
    assert!(Breakpoint::watch(A + 64).open(&w.user).is_ok());
}

#[test]
fn closed_handle_is_ebadf() {
    let w = world(1);
    let bp = Breakpoint::watch(A).open(&w.user).unwrap();
    let h = bp.raw_handle();
    bp.close().unwrap();
    assert_eq!(w.user.read(h, &mut [0u8; 40]).unwrap_err().raw_os_error(), Some(errno::EBADF));
    assert_eq!(w.user.write(h, b"enable").unwrap_err().raw_os_error(), Some(errno::EBADF));
    assert_eq!(w.user.close(h).unwrap_err().raw_os_error(), Some(errno::EBADF));
}

#[test]
fn fpath_is_the_canonical_admitted_path() {
    let w = world(1);
    let bp = Breakpoint::watch(0x1002).len(4).access(Access::Write).target(Target::Task(w.pid.into())).ring(8).open(&w.user).unwrap();
    let admitted = bp.path().unwrap();
    assert_eq!(admitted.path, *bp.requested_path());
    let text = admitted.to_string();
    assert!(text.starts_with(&format!("task/{}/mem:0x1002/4:w?ring=8#pieces=", w.pid)), "{text}");
    assert_eq!(admitted.pieces, [AdmittedPiece::new(0x1002, 2, Access::Write).unwrap(), AdmittedPiece::new(0x1004, 2, Access::Write).unwrap()]);
}

#[test]
fn wakeup_makes_the_stream_ready_after_n_records() {
    use redox_scheme::scheme::SchemeSync;
    use syscall::flag::EventFlags;
    let w = world(1);
    let bp = Breakpoint::watch(A).wakeup(3).open(&w.user).unwrap();
    let mut ev = bp.events().unwrap();
    let ctx = hwbpd::caller_ctx(w.pid as usize, USER, USER);
    let now = w.root.scheme().borrow_mut().fevent(ev.raw_handle(), EventFlags::EVENT_READ, &ctx).unwrap();
    assert!(now.is_empty());
    w.write(A, 4);
    w.write(A, 4);
    w.root.scheme().borrow_mut().collect();
    assert!(w.root.scheme().borrow_mut().take_fevents().is_empty(), "ready before 3 records");
    w.write(A, 4);
    w.root.scheme().borrow_mut().collect();
    let notices = w.root.scheme().borrow_mut().take_fevents();
    assert!(notices.iter().any(|n| n.handle == ev.raw_handle() && n.flags.contains(EventFlags::EVENT_READ)), "{notices:?}");
    assert_eq!(ev.drain().unwrap().len(), 3);
}
