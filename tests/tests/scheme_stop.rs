//! Stop on hit (contract 7, "Debuggers"), through `SchemeSync` on the
//! simulated kernel: option `stop`, the `resume` commands, hit records
//! that carry the thread and the stop, and nothing stopped for ever (close,
//! task exit, identity change, the server's drop).

mod scheme_common;
use scheme_common::*;

use hwbp_kern::abi::HitRecord;
use hwbp_kern::{ContextPiece, ContextPlan, CpuFilter, CpuPlan, Len, Piece};
use hwbpd::kernel::{Kernel, KernelError, PieceCount, TaskEnd, TaskInfo};
use hwbpd::sim::dr_model::MemAccess;
use hwbpd::sim::{SimError, Tid};
use hwbpd::{Config, HwbpScheme, Pid, SimKernel};
use libhwbp::abi::errno::{EBADF, EINVAL, EPERM, ESRCH};
use libhwbp::abi::{EVENT_KERNEL_MODE, EVENT_STOPPED};

const A: u64 = 0x50_0000;
const CODE: u64 = 0x40_2000;

fn stop_watch(s: &mut Scheme, pid: Pid, uid: u32) -> usize {
    open(s, pid, uid, &format!("task/{pid}/mem:{A:#x}/8:w?stop")).unwrap()
}

/// Thread `tid` runs a store to `addr` on `cpu` (switched in first).
fn store_on(s: &mut Scheme, cpu: u32, tid: Tid, addr: u64) -> Result<bool, SimError> {
    s.kernel_mut().run_on(cpu, tid, MemAccess::write(addr, 8)).map(|step| step.stopped)
}

fn stopped(s: &Scheme, tid: Tid) -> bool {
    s.kernel().is_stopped(tid)
}

#[test]
fn a_hit_stops_the_thread_its_record_says_so_and_resume_tid_runs_it_again() {
    let mut s = server(2);
    let (pid, t1) = task_on(&mut s, USER, 0);
    let t2 = s.kernel_mut().spawn_thread(pid).unwrap();
    let fd = stop_watch(&mut s, pid, USER);
    assert!(s.kernel().task_plan(pid).unwrap().iter().all(|p| p.stop), "the piece stops");
    let efd = events(&mut s, fd);
    assert_eq!(store_on(&mut s, 0, t1, A), Ok(true), "stopped after the store");
    assert!(stopped(&s, t1));
    assert_eq!(s.kernel_mut().run(t1, MemAccess::read(A + 64, 8)), Err(SimError::Stopped(t1)));
    assert_eq!(s.kernel_mut().switch(1, Some(t1)), Err(SimError::Stopped(t1)));
    assert_eq!(store_on(&mut s, 1, t2, A + 64), Ok(false), "the other thread runs on");
    let recs = read_events(&mut s, efd, 4, true).unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!((recs[0].tid, recs[0].pid, recs[0].flags), (t1, u64::from(pid), EVENT_STOPPED));
    assert!(recs[0].is_stopped());
    assert_eq!(command(&mut s, fd, &format!("resume {t2}")), Err(ESRCH), "never stopped");
    assert!(stopped(&s, t1));
    assert_eq!(command(&mut s, fd, &format!("resume {t1}\n")), Ok(format!("resume {t1}\n").len()));
    assert!(!stopped(&s, t1));
    assert_eq!(command(&mut s, fd, &format!("resume {t1}")), Err(ESRCH), "resumed already");
    assert_eq!(store_on(&mut s, 0, t1, A + 64), Ok(false), "runs again");
    assert_eq!(store_on(&mut s, 0, t1, A), Ok(true), "and the next hit stops it again");
    assert_eq!(count(&mut s, fd).value, 2);
    assert_eq!(s.stopped_thread_count(), 1);
}

#[test]
fn an_exec_stop_is_before_the_instruction_which_runs_once_after_the_resume() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let fd = open(&mut s, pid, USER, &format!("task/{pid}/mem:{CODE:#x}:x?stop")).unwrap();
    let efd = events(&mut s, fd);
    let step = s.kernel_mut().run(tid, MemAccess::exec(CODE)).unwrap();
    assert_eq!((step.fault, step.stopped), (1, true), "a fault: the instruction has not run");
    let recs = read_events(&mut s, efd, 4, true).unwrap();
    assert_eq!((recs[0].ip, recs[0].tid, recs[0].is_stopped()), (CODE, tid, true));
    command(&mut s, fd, &format!("resume {tid}")).unwrap();
    let step = s.kernel_mut().run_on(0, tid, MemAccess::exec(CODE)).unwrap();
    assert!(step.fault == 0 && !step.stopped, "RF: the instruction completes, no second hit");
    assert_eq!(count(&mut s, fd).value, 1);
    assert_eq!(read_events(&mut s, efd, 4, true), Err(libhwbp::abi::errno::EAGAIN));
}

#[test]
fn resume_without_a_tid_runs_every_thread_the_breakpoint_stopped() {
    let mut s = server(2);
    let (pid, t1) = task_on(&mut s, USER, 0);
    let t2 = s.kernel_mut().spawn_thread(pid).unwrap();
    let t3 = s.kernel_mut().spawn_thread(pid).unwrap();
    let fd = stop_watch(&mut s, pid, USER);
    for (cpu, t) in [(0, t1), (1, t2), (0, t3)] {
        assert_eq!(store_on(&mut s, cpu, t, A), Ok(true));
    }
    assert_eq!(s.kernel().stopped_threads(), [t1, t2, t3]);
    command(&mut s, fd, "resume").unwrap();
    assert!(s.kernel().stopped_threads().is_empty());
    assert_eq!(s.stopped_thread_count(), 0);
    assert_eq!(command(&mut s, fd, "resume"), Ok(6), "nothing held: nothing to do");
}

#[test]
fn closing_the_handle_resumes_every_thread_it_stopped_before_close_returns() {
    let mut s = server(2);
    let (pid, t1) = task_on(&mut s, USER, 0);
    let t2 = s.kernel_mut().spawn_thread(pid).unwrap();
    let fd = stop_watch(&mut s, pid, USER);
    let efd = events(&mut s, fd);
    store_on(&mut s, 0, t1, A).unwrap();
    // Not collected yet: close collects first, so this stop is held and let go too.
    store_on(&mut s, 1, t2, A).unwrap();
    assert_eq!(s.kernel().stopped_threads(), [t1, t2]);
    close(&mut s, fd);
    assert!(s.kernel().stopped_threads().is_empty(), "resumed before on_close returned");
    assert_eq!(s.stopped_thread_count(), 0);
    // The stream still reads the records, which said the threads were stopped.
    let recs = read_events(&mut s, efd, 4, true).unwrap();
    assert!(recs.len() == 2 && recs.iter().all(|r| r.is_stopped()));
    assert_eq!(store_on(&mut s, 0, t1, A), Ok(false), "disarmed");
    assert_eq!(command(&mut s, fd, "resume"), Err(EBADF), "only the handle holder resumes");
}

#[test]
fn a_flood_that_overflows_the_ring_still_leaves_every_stopped_thread_known_and_close_resumes_them() {
    let mut s = server(2);
    let (pid, first) = task_on(&mut s, USER, 0);
    let fd = open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}/8:w?stop&ring=1")).unwrap();
    let efd = events(&mut s, fd);
    let mut threads = vec![first];
    threads.extend((0..49).map(|_| s.kernel_mut().spawn_thread(pid).unwrap()));
    for &t in &threads {
        assert_eq!(store_on(&mut s, 0, t, A), Ok(true));
    }
    let c = count(&mut s, fd);
    assert_eq!((c.value, c.lost), (50, 49), "the ring kept one record");
    assert_eq!(s.stopped_thread_count(), 50, "every stop is held, recorded or not");
    let recs = read_events(&mut s, efd, 8, true).unwrap();
    assert_eq!(recs.iter().map(|r| r.tid).collect::<Vec<_>>(), [*threads.last().unwrap()]);
    // A thread whose record was dropped can still be resumed by its tid.
    command(&mut s, fd, &format!("resume {first}")).unwrap();
    assert!(!stopped(&s, first));
    close(&mut s, fd);
    assert!(s.kernel().stopped_threads().is_empty(), "close resumed the 49 others");
}

#[test]
fn dropping_the_server_resumes_what_it_held_and_what_it_never_read() {
    init_logger();
    let mut sim = SimKernel::new(2);
    let pid = sim.spawn(USER);
    let t1 = sim.main_thread(pid).unwrap();
    let t2 = sim.spawn_thread(pid).unwrap();
    {
        let mut s = HwbpScheme::new(&mut sim, Config::default());
        let fd = open_on(&mut s, pid, &format!("task/{pid}/mem:{A:#x}/8:w?stop"));
        s.kernel_mut().run_on(0, t1, MemAccess::write(A, 8)).unwrap();
        assert!(count_on(&mut s, fd) == 1, "collected: t1 is held");
        // t2's record is still in the kernel's ring when the server goes.
        s.kernel_mut().run_on(1, t2, MemAccess::write(A, 8)).unwrap();
        assert_eq!(s.kernel().stopped_threads(), [t1, t2]);
    }
    assert!(sim.stopped_threads().is_empty(), "hwbpd's death resumes every thread it stopped");
    assert!(sim.run_on(0, t1, MemAccess::write(A, 8)).is_ok());
}

/// A backend whose `disarm_all` cannot resume anything (as the Redox
/// backend before its control handle closes, when records were drained):
/// what the server held must be resumed by the server itself.
struct NoResumeOnDisarm<'a>(&'a mut SimKernel);

impl Kernel for NoResumeOnDisarm<'_> {
    fn cpu_count(&self) -> u32 {
        self.0.cpu_count()
    }
    fn task(&self, pid: Pid) -> Result<TaskInfo, KernelError> {
        self.0.task(pid)
    }
    fn set_task_plan(&mut self, pid: Pid, plan: &ContextPlan) -> Result<(), KernelError> {
        self.0.set_task_plan(pid, plan)
    }
    fn release_task(&mut self, pid: Pid) {
        self.0.release_task(pid)
    }
    fn set_cpu_plan(&mut self, cpu: u32, plan: &CpuPlan) -> Result<(), KernelError> {
        self.0.set_cpu_plan(cpu, plan)
    }
    fn take_counts(&mut self, out: &mut Vec<PieceCount>) {
        self.0.take_counts(out)
    }
    fn drain_hits(&mut self, out: &mut [HitRecord]) -> usize {
        self.0.drain_hits(out)
    }
    fn context_pid(&self, context: u64) -> Option<Pid> {
        self.0.context_pid(context)
    }
    fn take_ends(&mut self, out: &mut Vec<TaskEnd>) {
        self.0.take_ends(out)
    }
    fn now_ns(&self) -> u64 {
        self.0.now_ns()
    }
    fn resume(&mut self, context: u64) -> Result<(), KernelError> {
        self.0.resume(context)
    }
    fn disarm_all(&mut self) {}
}

#[test]
fn the_server_resumes_the_threads_it_holds_when_it_is_dropped() {
    init_logger();
    let mut sim = SimKernel::new(1);
    let pid = sim.spawn(USER);
    let tid = sim.main_thread(pid).unwrap();
    {
        let mut s = HwbpScheme::new(NoResumeOnDisarm(&mut sim), Config::default());
        let ctx = hwbpd::caller_ctx(pid as usize, USER, USER);
        let path = format!("task/{pid}/mem:{A:#x}/8:w?stop");
        redox_scheme::scheme::SchemeSync::openat(&mut s, hwbpd::scheme::ROOT_HANDLE, &path, 0, 0, &ctx).unwrap();
        s.kernel_mut().0.run_on(0, tid, MemAccess::write(A, 8)).unwrap();
        s.collect();
        assert_eq!(s.stopped_thread_count(), 1);
    }
    assert!(!sim.is_stopped(tid));
}

fn open_on<K: Kernel>(s: &mut HwbpScheme<K>, pid: Pid, path: &str) -> usize {
    let ctx = hwbpd::caller_ctx(pid as usize, USER, USER);
    match redox_scheme::scheme::SchemeSync::openat(s, hwbpd::scheme::ROOT_HANDLE, path, 0, 0, &ctx) {
        Ok(redox_scheme::OpenResult::ThisScheme { number, .. }) => number,
        other => panic!("open {path}: {other:?}"),
    }
}

fn count_on<K: Kernel>(s: &mut HwbpScheme<K>, fd: usize) -> u64 {
    let mut buf = [0u8; libhwbp::abi::COUNT_RECORD_SIZE];
    redox_scheme::scheme::SchemeSync::read(s, fd, &mut buf, 0, 0, &hwbpd::caller_ctx(1, ROOT, 0)).unwrap();
    libhwbp::abi::CountRecord::from_bytes(&buf).value
}

#[test]
fn another_users_breakpoint_cannot_resume_your_thread() {
    let mut s = server(2);
    let (mine, tid) = task_on(&mut s, USER, 0);
    let fd = stop_watch(&mut s, mine, USER);
    store_on(&mut s, 0, tid, A).unwrap();
    let (theirs, _) = task_on(&mut s, OTHER_USER, 1);
    assert_eq!(open(&mut s, theirs, OTHER_USER, &format!("task/{mine}/mem:{A:#x}/8:w?stop")), Err(EPERM));
    let their_fd = stop_watch(&mut s, theirs, OTHER_USER);
    take_log();
    assert_eq!(command(&mut s, their_fd, &format!("resume {tid}")), Err(ESRCH));
    assert_eq!(command(&mut s, their_fd, "resume"), Ok(6));
    assert_eq!(take_log().len(), 1, "one line for the refusal");
    assert!(stopped(&s, tid), "only the breakpoint that stopped it lets it go");
    close(&mut s, their_fd);
    assert!(stopped(&s, tid));
    command(&mut s, fd, &format!("resume {tid}")).unwrap();
    assert!(!stopped(&s, tid));
}

#[test]
fn hostile_resume_commands_are_refused_with_one_line_each() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let fd = stop_watch(&mut s, pid, USER);
    let plain = open(&mut s, pid, USER, &format!("task/{pid}/mem:{:#x}/8:w", A + 64)).unwrap();
    store_on(&mut s, 0, tid, A).unwrap();
    take_log();
    let cases: [(usize, &str, i32); 10] = [
        (fd, "resume abc", EINVAL),
        (fd, "resume -1", EINVAL),
        (fd, "resume 0x10", EINVAL),
        (fd, "resume 1 2", EINVAL),
        (fd, "resume ", EINVAL),
        // Well-formed, however large: names no thread this breakpoint holds.
        (fd, "resume 99999999999999999999", ESRCH),
        (fd, &format!("resume {}", u64::from(u32::MAX) + u64::from(tid as u32)), ESRCH),
        (fd, "resume 0", ESRCH),
        // A breakpoint without `stop` stops nothing.
        (plain, &format!("resume {tid}"), EINVAL),
        (plain, "resume", EINVAL),
    ];
    for (handle, cmd, want) in cases.iter().cloned() {
        assert_eq!(command(&mut s, handle, cmd), Err(want), "{cmd:?}");
    }
    assert_eq!(take_log().len(), cases.len());
    assert!(stopped(&s, tid), "none of them resumed it");
    assert_eq!(command(&mut s, 9999, "resume"), Err(EBADF));
}

#[test]
fn stop_on_a_cpu_wide_target_is_einval_at_open_and_at_modify() {
    let mut s = server(2);
    for target in ["cpu/0", "cpu/all"] {
        assert_eq!(open(&mut s, 1, ROOT, &format!("{target}/mem:{A:#x}/8:w?stop")), Err(EINVAL), "{target}");
    }
    let fd = open(&mut s, 1, ROOT, &format!("cpu/1/mem:{A:#x}/8:w")).unwrap();
    assert_eq!(command(&mut s, fd, &format!("modify mem:{:#x}/8:w?stop", A + 8)), Err(EINVAL));
    assert!(fpath(&mut s, fd).contains(&format!("cpu/1/mem:{A:#x}/8:w#")), "the old one stays: {}", fpath(&mut s, fd));
    assert_eq!(command(&mut s, fd, "resume"), Err(EINVAL));
    let (pid, _) = task_on(&mut s, USER, 0);
    assert_eq!(open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}/8:w?stop&period=2")), Err(EINVAL));
    assert!(open(&mut s, pid, USER, &format!("task/{pid}/cpu/1/mem:{A:#x}/8:w?stop")).is_ok());
    assert!(open(&mut s, pid, USER, &format!("self/mem:{A:#x}/8:w?stop")).is_ok());
}

#[test]
fn a_task_exit_forgets_the_threads_it_held() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let fd = stop_watch(&mut s, pid, USER);
    store_on(&mut s, 0, tid, A).unwrap();
    s.collect();
    assert_eq!(s.stopped_thread_count(), 1);
    s.kernel_mut().exit(pid).unwrap();
    s.collect();
    assert_eq!(s.stopped_thread_count(), 0, "nothing left to resume");
    assert_eq!(command(&mut s, fd, &format!("resume {tid}")), Err(ESRCH));
    close(&mut s, fd);
}

#[test]
fn an_identity_change_that_ends_the_breakpoint_resumes_its_threads() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let fd = stop_watch(&mut s, pid, USER);
    let (other, _) = {
        let sim = s.kernel_mut();
        let o = sim.spawn(USER);
        (o, sim.main_thread(o).unwrap())
    };
    let t2 = s.kernel_mut().spawn_thread(pid).unwrap();
    let root_fd = open(&mut s, 1, ROOT, &format!("task/{pid}/mem:{:#x}/8:w?stop", A + 64)).unwrap();
    store_on(&mut s, 0, tid, A).unwrap();
    store_on(&mut s, 0, t2, A + 64).unwrap();
    s.collect();
    assert_eq!(s.stopped_thread_count(), 2);
    // Another thread of the task runs a set-uid image.
    let t3 = s.kernel_mut().spawn_thread(pid).unwrap();
    s.kernel_mut().switch(0, Some(t3)).unwrap();
    s.kernel_mut().set_euid(pid, 0).unwrap();
    s.collect();
    assert!(!stopped(&s, tid), "the owner may no longer watch the task: its thread runs");
    assert!(stopped(&s, t2), "root's breakpoint survives and still holds its thread");
    assert_eq!(command(&mut s, fd, &format!("resume {tid}")), Err(ESRCH));
    command(&mut s, root_fd, &format!("resume {t2}")).unwrap();
    assert!(s.kernel().stopped_threads().is_empty());
    let _ = other;
}

#[test]
fn a_stopped_record_that_no_stopping_breakpoint_holds_resumes_its_thread() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let fd = stop_watch(&mut s, pid, USER);
    // A plan hwbpd did not make: a stopping piece whose token routes to no
    // breakpoint, as a record reaching hwbpd after its breakpoint was
    // closed, disabled or modified.
    let piece = Piece::new(A + 64, Len::Eight, hwbp_kern::Access::Write).unwrap();
    let stray = ContextPlan::from_pieces([ContextPiece { piece, token: 0xdead, cpu: CpuFilter::Any, stop: true }]).unwrap();
    s.kernel_mut().set_task_plan(pid, &stray).unwrap();
    assert_eq!(store_on(&mut s, 0, tid, A + 64), Ok(true));
    s.collect();
    assert!(!stopped(&s, tid), "nobody would ever resume it: resumed at once");
    assert_eq!(s.stopped_thread_count(), 0);
    close(&mut s, fd);
}

#[test]
fn a_counting_breakpoint_hit_by_the_same_access_says_nothing_of_the_stop() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let counting = open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}/4:w")).unwrap();
    let stopping = open(&mut s, pid, USER, &format!("task/{pid}/mem:{:#x}/4:w?stop", A + 4)).unwrap();
    let (ce, se) = (events(&mut s, counting), events(&mut s, stopping));
    // One 8-byte store hits both: one #DB, two records, both HIT_STOPPED.
    assert_eq!(store_on(&mut s, 0, tid, A), Ok(true));
    let c = read_events(&mut s, ce, 2, true).unwrap();
    let st = read_events(&mut s, se, 2, true).unwrap();
    assert_eq!((c[0].tid, c[0].flags), (tid, 0), "the counting one holds nothing");
    assert_eq!((st[0].tid, st[0].flags), (tid, EVENT_STOPPED));
    assert_eq!(command(&mut s, counting, &format!("resume {tid}")), Err(EINVAL));
    command(&mut s, stopping, &format!("resume {tid}")).unwrap();
    assert!(!stopped(&s, tid));
    // A kernel-mode hit is recorded with its flag and never stops.
    let root_fd = open(&mut s, 1, ROOT, &format!("task/{pid}/mem:{:#x}/8:w?stop&kernel", A + 64)).unwrap();
    let re = events(&mut s, root_fd);
    s.kernel_mut().switch(0, Some(tid)).unwrap();
    assert!(!s.kernel_mut().run_kernel(tid, MemAccess::write(A + 64, 8)).unwrap().stopped);
    assert_eq!(read_events(&mut s, re, 2, true).unwrap()[0].flags, EVENT_KERNEL_MODE);
}

#[test]
fn a_thread_stopped_for_two_breakpoints_runs_once_both_let_it_go() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    // Two debuggers' identical breakpoints share one register and token.
    let a = stop_watch(&mut s, pid, USER);
    let b = stop_watch(&mut s, pid, USER);
    assert_eq!(store_on(&mut s, 0, tid, A), Ok(true));
    s.collect();
    command(&mut s, a, &format!("resume {tid}")).unwrap();
    assert!(stopped(&s, tid), "b still holds it");
    assert_eq!(command(&mut s, a, &format!("resume {tid}")), Err(ESRCH), "a let go already");
    close(&mut s, b);
    assert!(!stopped(&s, tid));
    assert_eq!(s.stopped_thread_count(), 0);
}

#[test]
fn disable_and_modify_keep_the_threads_stopped_until_resumed_or_closed() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let t2 = s.kernel_mut().spawn_thread(pid).unwrap();
    let fd = stop_watch(&mut s, pid, USER);
    store_on(&mut s, 0, tid, A).unwrap();
    command(&mut s, fd, "disable").unwrap();
    assert!(stopped(&s, tid));
    assert_eq!(store_on(&mut s, 0, t2, A), Ok(false), "disabled: no new stop");
    command(&mut s, fd, "enable").unwrap();
    command(&mut s, fd, &format!("modify mem:{:#x}/8:w", A + 8)).unwrap();
    assert!(stopped(&s, tid), "a modify keeps what was stopped");
    assert_eq!(store_on(&mut s, 0, t2, A + 8), Ok(true), "the new address stops (options kept)");
    // Options replaced without `stop`: held threads stay held, no new stop.
    command(&mut s, fd, &format!("modify mem:{:#x}/8:w?pinned", A + 16)).unwrap();
    assert_eq!(s.kernel().stopped_threads(), [tid, t2]);
    command(&mut s, fd, &format!("resume {tid}")).unwrap();
    assert!(!stopped(&s, tid));
    assert_eq!(store_on(&mut s, 0, tid, A + 16), Ok(false));
    command(&mut s, fd, "resume").unwrap();
    assert!(s.kernel().stopped_threads().is_empty());
    assert_eq!(command(&mut s, fd, "resume"), Err(EINVAL), "no stop, nothing held");
}
