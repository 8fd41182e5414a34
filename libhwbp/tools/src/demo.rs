//! What `hwbp --sim` runs on the simulated kernel (host only): the
//! workload `stat` and `record` watch, and the scenario `list` shows.

use std::rc::Rc;

use hwbpd::sim::dr_model::MemAccess;
use hwbpd::sim::Tid;
use hwbpd::{InProcess, Pid, Uid};
use libhwbp::abi::{Access, OpenPath};
use libhwbp::{Breakpoint, BreakpointHandle, EventStream};

use crate::platform::sim::{Sim, SimPlatform};
use crate::platform::Platform;

/// First address of the kernel half on x86-64.
const KERNEL_HALF: u64 = 0xffff_8000_0000_0000;

/// Simulated kernel code: an instruction that writes a watched kernel
/// word every round (e.g. a counter update).
pub const KERNEL_WRITER: u64 = 0xffff_8000_0012_3450;
/// An instruction that reads it every second round.
pub const KERNEL_READER: u64 = 0xffff_8000_0012_3a80;
/// A copy routine: writes the last byte of a watched kernel range every
/// fourth round, and (with the `kernel` option) a watched user word every
/// second round, as a syscall copying out to the task would.
pub const KERNEL_COPY: u64 = 0xffff_8000_0045_6700;

/// The largest aligned access at the start of `path`'s range.
fn first_access(path: &OpenPath) -> u64 {
    let ev = path.event;
    [8, 4, 2, 1].into_iter().find(|s| ev.len() >= *s && ev.addr() % s == 0).unwrap_or(1)
}

/// Round `round` of the workload on every watched range: the task stores
/// to each user-half range (and, for a path with `kernel`, the kernel
/// copies to it every second round); kernel code writes each kernel-half
/// range every round, reads it every second round and writes its last
/// byte every fourth; an `x` breakpoint in the kernel half is executed by
/// the kernel every round (one in the user half is not run).
pub fn workload_round(p: &mut SimPlatform, paths: &[OpenPath], round: u64) {
    for path in paths {
        let ev = path.event;
        let size = first_access(path);
        let kernel_range = ev.addr() >= KERNEL_HALF;
        match (ev.access(), kernel_range) {
            (Access::Exec, true) => p.run_kernel_at(ev.addr(), MemAccess::exec(ev.addr())),
            (Access::Exec, false) => {}
            (_, false) => {
                p.store(ev.addr(), size);
                if path.options.kernel && round % 2 == 0 {
                    p.run_kernel_at(KERNEL_COPY, MemAccess::write(ev.addr(), size));
                }
            }
            (_, true) => {
                p.run_kernel_at(KERNEL_WRITER, MemAccess::write(ev.addr(), size));
                if round % 2 == 0 {
                    p.run_kernel_at(KERNEL_READER, MemAccess::read(ev.addr(), size));
                }
                if round % 4 == 0 {
                    p.run_kernel_at(KERNEL_COPY, MemAccess::write(ev.addr() + ev.len() - 1, 1));
                }
            }
        }
    }
}

type Caller = Rc<InProcess<Sim>>;

/// `hwbp list --sim`: one in-process hwbpd holding breakpoints of root and
/// of two users, in every state the listing shows, after 40 ms of a
/// workload with rotation.
pub struct ListDemo {
    p: SimPlatform,
    callers: Vec<(Uid, Caller)>,
    _bps: Vec<BreakpointHandle<Caller>>,
    _streams: Vec<EventStream<Caller>>,
}

/// The demo's kernel word (watched cpu-wide by root on CPU 0).
pub const DEMO_KERNEL_WORD: u64 = 0xffff_8000_0010_0000;
/// Demo users.
pub const DEMO_USER: Uid = 1000;
pub const DEMO_OTHER_USER: Uid = 1001;

impl ListDemo {
    /// Set the scenario up (see the README's `hwbp list` section):
    /// root: a pinned kernel watch on CPU 0. uid 1000, task A on CPU 1: a
    /// pinned watch, two flexible ones (one split in two pieces) that take
    /// turns for the two registers left, a disabled one, one closed whose
    /// events stream is still open; task B: a watch only on CPU 1; task C:
    /// a watch, then C exits. uid 1001: one watch on its own task.
    pub fn new() -> Result<ListDemo, String> {
        let mut p = SimPlatform::new();
        let root_pid = p.own_pid() as Pid;
        let sim = p.sim().clone();
        let spawn = |uid: Uid| -> Result<(Pid, Tid), String> {
            let mut s = sim.borrow_mut();
            let pid = s.spawn(uid);
            Ok((pid, s.main_thread(pid).map_err(|e| e.to_string())?))
        };
        let (a, a_tid) = spawn(DEMO_USER)?;
        let (b, b_tid) = spawn(DEMO_USER)?;
        let (c, _) = spawn(DEMO_USER)?;
        let (o, o_tid) = spawn(DEMO_OTHER_USER)?;
        let tp = p.transport().inner().clone();
        let root: Caller = Rc::new(tp.caller(root_pid, 0));
        let user: Caller = Rc::new(tp.caller(a, DEMO_USER));
        let other: Caller = Rc::new(tp.caller(o, DEMO_OTHER_USER));
        let open = |t: &Caller, path: String| -> Result<BreakpointHandle<Caller>, String> {
            let p = OpenPath::parse(&path).map_err(|e| format!("{path}: {e}"))?;
            Breakpoint::from_path(&p).open(t.clone()).map_err(|e| format!("{path}: {e}"))
        };
        let mut bps = vec![
            open(&root, format!("cpu/0/mem:{DEMO_KERNEL_WORD:#x}/8:w?pinned&kernel"))?,
            open(&user, format!("task/{a}/mem:0x7000/8:w?pinned"))?,
            open(&user, format!("task/{a}/mem:0x7006/4:w"))?,
            open(&user, format!("task/{a}/mem:0x7010/8:rw"))?,
            open(&user, format!("task/{a}/mem:0x7018/8:w?disabled"))?,
            open(&user, format!("task/{b}/cpu/1/mem:0x7000/4:rw"))?,
            open(&user, format!("task/{c}/mem:0x7000/8:w"))?,
        ];
        let closed = open(&user, format!("task/{a}/mem:0x7020/8:w"))?;
        let streams = vec![closed.events().map_err(|e| e.to_string())?];
        closed.close().map_err(|e| e.to_string())?;
        bps.push(open(&other, format!("task/{o}/mem:0x9000/8:w"))?);
        // 40 ms: A and B take turns on CPU 1, the other user on CPU 0 with
        // the kernel writing its word; the rotation runs every 4 ms. C
        // exits after 20 ms.
        for round in 0..10u64 {
            if round == 5 {
                sim.borrow_mut().exit(c).map_err(|e| e.to_string())?;
                // hwbpd's main loop collects when the kernel reports it.
                tp.scheme().borrow_mut().collect();
            }
            {
                let mut s = sim.borrow_mut();
                let run = |s: &mut hwbpd::SimKernel, cpu, tid, a: MemAccess| s.run_on(cpu, tid, a).map(|_| ()).map_err(|e| e.to_string());
                for (addr, size) in [(0x7000, 8), (0x7006, 2), (0x7008, 2), (0x7010, 8)] {
                    run(&mut *s, 1, a_tid, MemAccess::write(addr, size))?;
                }
                run(&mut *s, 1, a_tid, MemAccess::read(0x7010, 8))?;
                if round % 2 == 0 {
                    run(&mut *s, 1, b_tid, MemAccess::write(0x7000, 4))?;
                }
                run(&mut *s, 0, o_tid, MemAccess::write(0x9000, 8))?;
            }
            p.run_kernel_at(KERNEL_WRITER, MemAccess::write(DEMO_KERNEL_WORD, 8));
            p.let_time_pass(4_000_000);
        }
        Ok(ListDemo { p, callers: vec![(0, root), (DEMO_USER, user), (DEMO_OTHER_USER, other)], _bps: bps, _streams: streams })
    }

    /// Run `f` with a connection as `uid` (a new task of that uid if the
    /// demo has none).
    pub fn as_uid<R>(&self, uid: Uid, f: impl FnOnce(&InProcess<Sim>) -> R) -> R {
        if let Some((_, t)) = self.callers.iter().find(|(u, _)| *u == uid) {
            return f(t);
        }
        let pid = self.p.sim().borrow_mut().spawn(uid);
        f(&self.p.transport().inner().caller(pid, uid))
    }
}
