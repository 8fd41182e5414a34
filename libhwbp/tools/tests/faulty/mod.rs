//! A host platform with one fault injected, to show that the selftest's
//! checks fail when what they check is wrong (each check can fail).

use std::io;
use std::time::Duration;

use hwbp_kern::{Access as KAccess, ContextPiece, ContextPlan, CpuFilter, Len, Piece};
use hwbpd::sim::dr_model::MemAccess;
use hwbpd::Kernel;
use hwbp_tools::platform::sim::{Sim, SimPlatform, SimTransport, SCRATCH};
use hwbp_tools::platform::{ChildTask, Platform, ReadyQueue};
use hwbp_tools::selftest::{self, Report};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fault {
    /// Every store happens twice: counts above the truth.
    DoubleStores,
    /// Something is armed again right after hwbpd's restart.
    ArmAfterRestart,
    /// New threads miss their first 10 stores.
    UnwatchedNewThreads,
    /// The "child" stores as the selftest's own task (it inherited the watch).
    ChildIsSelf,
}

pub struct Faulty {
    inner: SimPlatform,
    fault: Fault,
}

pub fn run(fault: Fault) -> (Report, String) {
    let mut p = Faulty { inner: SimPlatform::new(), fault };
    let mut out = Vec::new();
    let report = selftest::run(&mut p, &mut out);
    (report, String::from_utf8(out).unwrap())
}

struct SelfChild {
    sim: Sim,
    pid: u64,
    own_pid: u32,
}

impl ChildTask for SelfChild {
    fn pid(&self) -> u64 {
        self.pid
    }
    fn addr(&self) -> u64 {
        SCRATCH
    }
    fn store(&mut self, n: u64) -> io::Result<()> {
        let mut s = self.sim.borrow_mut();
        let tid = s.main_thread(self.own_pid).map_err(io::Error::other)?;
        for _ in 0..n {
            s.run_on(0, tid, MemAccess::write(SCRATCH, 4)).map_err(io::Error::other)?;
        }
        Ok(())
    }
    fn exit(self: Box<Self>) -> io::Result<()> {
        self.sim.borrow_mut().exit(self.pid as u32).map_err(io::Error::other)
    }
}

impl Platform for Faulty {
    type T = SimTransport;

    fn describe(&self) -> String {
        format!("{} with fault {:?}", self.inner.describe(), self.fault)
    }
    fn transport(&self) -> SimTransport {
        self.inner.transport()
    }
    fn own_pid(&self) -> u64 {
        self.inner.own_pid()
    }
    fn is_root(&self) -> bool {
        self.inner.is_root()
    }
    fn cpus(&self) -> Option<u32> {
        self.inner.cpus()
    }
    fn scratch(&self) -> u64 {
        self.inner.scratch()
    }
    fn load(&mut self, addr: u64, size: u64) {
        self.inner.load(addr, size)
    }
    fn store(&mut self, addr: u64, size: u64) {
        self.inner.store(addr, size);
        if self.fault == Fault::DoubleStores {
            self.inner.store(addr, size);
        }
    }
    fn store_n(&mut self, addr: u64, size: u64, n: u64) {
        for _ in 0..n {
            self.store(addr, size);
        }
    }
    fn code_addr(&self, i: usize) -> u64 {
        self.inner.code_addr(i)
    }
    fn execute(&mut self, i: usize) {
        self.inner.execute(i)
    }
    fn let_time_pass(&mut self, ns: u64) {
        self.inner.let_time_pass(ns)
    }
    fn new_threads_store(&mut self, addr: u64, threads: usize, stores_each: u64) -> io::Result<()> {
        match self.fault {
            Fault::DoubleStores => self.inner.new_threads_store(addr, threads, 2 * stores_each),
            Fault::UnwatchedNewThreads => self.inner.new_threads_store(addr, threads, stores_each - 10),
            _ => self.inner.new_threads_store(addr, threads, stores_each),
        }
    }
    fn store_in_background(&mut self, addr: u64, size: u64, n: u64, delay_ns: u64) -> io::Result<()> {
        self.inner.store_in_background(addr, size, n, delay_ns)
    }
    fn read_timeout(&mut self, h: usize, buf: &mut [u8], timeout_ns: u64) -> io::Result<usize> {
        self.inner.read_timeout(h, buf, timeout_ns)
    }
    fn join_background(&mut self) -> io::Result<()> {
        self.inner.join_background()
    }
    fn event_queue(&mut self) -> Option<io::Result<Box<dyn ReadyQueue>>> {
        self.inner.event_queue()
    }
    fn spawn_child(&mut self) -> io::Result<Box<dyn ChildTask>> {
        if self.fault == Fault::ChildIsSelf {
            let pid = self.inner.sim().borrow_mut().spawn(0);
            return Ok(Box::new(SelfChild { sim: self.inner.sim().clone(), pid: u64::from(pid), own_pid: self.inner.own_pid() as u32 }));
        }
        self.inner.spawn_child()
    }
    fn open_as_user(&mut self, paths: &[String]) -> io::Result<Vec<i32>> {
        self.inner.open_as_user(paths)
    }
    fn other_users_pid(&mut self) -> Option<u64> {
        self.inner.other_users_pid()
    }
    fn restart_server(&mut self, leaked: Vec<usize>) -> Option<io::Result<()>> {
        let r = self.inner.restart_server(leaked);
        if self.fault == Fault::ArmAfterRestart {
            let piece = ContextPiece { piece: Piece::new(SCRATCH + 0x800, Len::Eight, KAccess::Write).unwrap(), token: 99, cpu: CpuFilter::Any, stop: false };
            let plan = ContextPlan::from_pieces([piece]).unwrap();
            self.inner.sim().borrow_mut().set_task_plan(self.inner.own_pid() as u32, &plan).unwrap();
        }
        r
    }
    fn armed_registers(&self) -> Option<u32> {
        self.inner.armed_registers()
    }
    fn register_of(&self, addr: u64) -> Option<Option<usize>> {
        self.inner.register_of(addr)
    }
    fn time_stores(&mut self, addr: u64, n: u64) -> Option<Duration> {
        self.inner.time_stores(addr, n)
    }
}
