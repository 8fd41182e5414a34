//! Helpers for the libhwbp scenario tests: the typed client over hwbpd's
//! in-process transport, on the simulated kernel. Nothing here reaches
//! into the server except to run simulated tasks, move the clock, tick the
//! rotation timer and look at the simulated registers.
#![allow(dead_code)]

use std::cell::RefCell;
use std::rc::Rc;

use hwbpd::sim::dr_model::MemAccess;
use hwbpd::sim::Tid;
use hwbpd::{Config, HwbpScheme, InProcess, Pid, SimKernel, Uid};

pub const USER: Uid = 1000;
pub const OTHER_USER: Uid = 1001;
pub const ROOT: Uid = 0;
/// Pid of the root caller (not a simulated task).
pub const ROOT_CALLER_PID: Pid = 1;

pub type Sim = Rc<RefCell<SimKernel>>;
pub type Tp = InProcess<Sim>;

/// One server, one user task running on CPU 0, and connections for root
/// and for that task.
pub struct World {
    pub sim: Sim,
    /// Root, not a task.
    pub root: Tp,
    /// The task itself (its `self` is `pid`), as USER.
    pub user: Tp,
    pub pid: Pid,
    pub tid: Tid,
}

pub fn world(cpus: u32) -> World {
    world_with(cpus, Config::default())
}

pub fn world_with(cpus: u32, config: Config) -> World {
    let sim: Sim = Rc::new(RefCell::new(SimKernel::new(cpus)));
    let (pid, tid) = {
        let mut s = sim.borrow_mut();
        let pid = s.spawn(USER);
        let tid = s.main_thread(pid).unwrap();
        s.switch(0, Some(tid)).unwrap();
        (pid, tid)
    };
    let root = InProcess::new(HwbpScheme::new(sim.clone(), config), ROOT_CALLER_PID, ROOT);
    let user = root.caller(pid, USER);
    World { sim, root, user, pid, tid }
}

impl World {
    pub fn write(&self, addr: u64, size: u64) {
        self.sim.borrow_mut().run(self.tid, MemAccess::write(addr, size)).unwrap();
    }
    pub fn read(&self, addr: u64, size: u64) {
        self.sim.borrow_mut().run(self.tid, MemAccess::read(addr, size)).unwrap();
    }
    pub fn exec(&self, addr: u64) {
        self.sim.borrow_mut().run(self.tid, MemAccess::exec(addr)).unwrap();
    }
    pub fn write_as(&self, tid: Tid, addr: u64, size: u64) {
        self.sim.borrow_mut().run(tid, MemAccess::write(addr, size)).unwrap();
    }
    /// A new task of `uid` (main thread on no CPU).
    pub fn spawn(&self, uid: Uid) -> (Pid, Tid) {
        let mut s = self.sim.borrow_mut();
        let pid = s.spawn(uid);
        (pid, s.main_thread(pid).unwrap())
    }
    pub fn switch(&self, cpu: u32, tid: Option<Tid>) {
        self.sim.borrow_mut().switch(cpu, tid).unwrap();
    }
    /// Move the clock and run the rotation timer.
    pub fn pass(&self, ns: u64) {
        self.sim.borrow_mut().advance(ns);
        self.root.scheme().borrow_mut().tick();
    }
    /// Enabled DR7 slots over all CPUs, as the hardware has them now.
    pub fn armed_now(&self) -> u32 {
        self.sim.borrow().armed_slots()
    }
    /// Enabled slots once every CPU went idle and the task ran again: what
    /// is still planned (not just still loaded).
    pub fn armed_after_reschedule(&self) -> u32 {
        let mut s = self.sim.borrow_mut();
        s.idle_all();
        s.switch(0, Some(self.tid)).ok();
        s.armed_slots()
    }
}
