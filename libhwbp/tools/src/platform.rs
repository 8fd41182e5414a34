//! Where the selftest and the CLI run: the host (an in-process hwbpd on the
//! simulated kernel) or Redox (the real `/scheme/hwbp`, real loads, stores
//! and calls).

use std::io;

use libhwbp::Transport;

/// Code locations the selftest executes (one per debug register).
pub const CODE_TARGETS: usize = 4;
/// Bytes of scratch memory a platform provides, 64-byte aligned.
pub const SCRATCH_BYTES: u64 = 64;

/// What the selftest needs from the machine it runs on.
pub trait Platform {
    type T: Transport + Clone;

    /// One line saying what this is (printed first).
    fn describe(&self) -> String;
    /// The connection of the selftest itself (root).
    fn transport(&self) -> Self::T;
    /// The selftest's own pid (what `self` means for it).
    fn own_pid(&self) -> u64;
    /// Address of [`SCRATCH_BYTES`] of the selftest's own memory, 64-aligned.
    fn scratch(&self) -> u64;
    /// Load `size` (1, 2, 4, 8) bytes at `addr` (inside the scratch).
    fn load(&mut self, addr: u64, size: u64);
    /// Store `size` (1, 2, 4, 8) bytes at `addr` (inside the scratch).
    fn store(&mut self, addr: u64, size: u64);
    /// Address of the i-th code location (i < [`CODE_TARGETS`]).
    fn code_addr(&self, i: usize) -> u64;
    /// Execute the i-th code location once.
    fn execute(&mut self, i: usize);
    /// Let `ns` of time pass (hwbpd's rotation timer runs meanwhile).
    fn let_time_pass(&mut self, ns: u64);
    /// Start a child task that stores to its own memory on request.
    fn spawn_child(&mut self) -> io::Result<Box<dyn ChildTask>>;
    /// Open each path (relative to the scheme root) as a non-root user;
    /// returns the errno of each (0: it opened, and was closed again).
    fn open_as_user(&mut self, paths: &[String]) -> io::Result<Vec<i32>>;
    /// Restart hwbpd while `open` pinned breakpoints are open, and return
    /// how many debug registers are still armed afterwards; `None` where
    /// the selftest cannot restart the server.
    fn restart_server(&mut self, open: usize) -> Option<io::Result<u32>>;
    /// Which debug register of the selftest's CPU watches `addr` right
    /// now (`Some(None)`: none); `None` where registers cannot be read.
    fn register_of(&self, addr: u64) -> Option<Option<usize>> {
        let _ = addr;
        None
    }
}

/// A child task for the "watch a child" check.
pub trait ChildTask {
    fn pid(&self) -> u64;
    /// Address the child stores to (4 bytes, aligned).
    fn addr(&self) -> u64;
    /// Make the child store `n` times to [`ChildTask::addr`], and wait.
    fn store(&mut self, n: u64) -> io::Result<()>;
    /// Make the child exit, and wait for it.
    fn exit(self: Box<Self>) -> io::Result<()>;
}

#[cfg(not(target_os = "redox"))]
pub mod sim {
    //! The host platform: hwbpd in process, on the simulated kernel.

    use std::cell::RefCell;
    use std::io;
    use std::rc::Rc;

    use hwbpd::sim::dr_model::MemAccess;
    use hwbpd::sim::Tid;
    use hwbpd::{Config, HwbpScheme, InProcess, Pid, SimKernel};
    use libhwbp::Transport;

    use super::{ChildTask, Platform, CODE_TARGETS};

    pub type Sim = Rc<RefCell<SimKernel>>;
    pub type Tp = Rc<InProcess<Sim>>;

    const ROOT: u32 = 0;
    const USER: u32 = 1000;
    /// Simulated address of the selftest's scratch memory.
    const SCRATCH: u64 = 0x7000_0000;
    /// Simulated code addresses.
    const CODE: u64 = 0x40_8000;
    const CPUS: u32 = 2;

    pub struct SimPlatform {
        sim: Sim,
        tp: Tp,
        pid: Pid,
        tid: Tid,
        config: Config,
    }

    impl SimPlatform {
        pub fn new() -> SimPlatform {
            SimPlatform::with_config(Config::default())
        }

        pub fn with_config(config: Config) -> SimPlatform {
            let sim: Sim = Rc::new(RefCell::new(SimKernel::new(CPUS)));
            let (pid, tid) = {
                let mut s = sim.borrow_mut();
                let pid = s.spawn(ROOT);
                let tid = s.main_thread(pid).expect("a spawned task has a thread");
                s.switch(0, Some(tid)).expect("CPU 0 exists");
                (pid, tid)
            };
            let tp = Rc::new(InProcess::new(HwbpScheme::new(sim.clone(), config.clone()), pid, ROOT));
            SimPlatform { sim, tp, pid, tid, config }
        }

        pub fn sim(&self) -> &Sim {
            &self.sim
        }

        fn run(&mut self, a: MemAccess) {
            let mut s = self.sim.borrow_mut();
            if s.running(0) != Some(self.tid) {
                s.switch(0, Some(self.tid)).expect("the selftest task is alive");
            }
            s.run(self.tid, a).expect("the selftest task runs");
        }
    }

    impl Default for SimPlatform {
        fn default() -> Self {
            SimPlatform::new()
        }
    }

    impl Platform for SimPlatform {
        type T = Tp;

        fn describe(&self) -> String {
            format!("host: in-process hwbpd on the simulated kernel ({CPUS} CPUs), selftest pid {}", self.pid)
        }
        fn transport(&self) -> Tp {
            self.tp.clone()
        }
        fn own_pid(&self) -> u64 {
            u64::from(self.pid)
        }
        fn scratch(&self) -> u64 {
            SCRATCH
        }
        fn load(&mut self, addr: u64, size: u64) {
            self.run(MemAccess::read(addr, size));
        }
        fn store(&mut self, addr: u64, size: u64) {
            self.run(MemAccess::write(addr, size));
        }
        fn code_addr(&self, i: usize) -> u64 {
            assert!(i < CODE_TARGETS);
            CODE + 0x100 * i as u64
        }
        fn execute(&mut self, i: usize) {
            let a = self.code_addr(i);
            self.run(MemAccess::exec(a));
        }
        fn let_time_pass(&mut self, ns: u64) {
            self.sim.borrow_mut().advance(ns);
            self.tp.scheme().borrow_mut().tick();
        }
        fn spawn_child(&mut self) -> io::Result<Box<dyn ChildTask>> {
            let (pid, tid) = {
                let mut s = self.sim.borrow_mut();
                let pid = s.spawn(ROOT);
                let tid = s.main_thread(pid).map_err(io::Error::other)?;
                s.switch(1, Some(tid)).map_err(io::Error::other)?;
                (pid, tid)
            };
            Ok(Box::new(SimChild { sim: self.sim.clone(), pid, tid }))
        }
        fn open_as_user(&mut self, paths: &[String]) -> io::Result<Vec<i32>> {
            let pid = self.sim.borrow_mut().spawn(USER);
            let user = self.tp.caller(pid, USER);
            Ok(paths
                .iter()
                .map(|p| match user.open(p, false) {
                    Ok(h) => {
                        let _ = user.close(h);
                        0
                    }
                    Err(e) => e.raw_os_error().unwrap_or(-1),
                })
                .collect())
        }
        fn register_of(&self, addr: u64) -> Option<Option<usize>> {
            Some(self.armed_register_of(addr))
        }
        fn restart_server(&mut self, open: usize) -> Option<io::Result<u32>> {
            Some((|| {
                for i in 0..open {
                    // Raw handles: the "clients" never close them.
                    self.tp.open(&format!("self/mem:{:#x}/8:w?pinned", SCRATCH + 8 * i as u64), false)?;
                }
                if Rc::strong_count(&self.tp) != 1 {
                    return Err(io::Error::other("a breakpoint handle still holds the old server"));
                }
                let fresh = Rc::new(InProcess::new(HwbpScheme::new(self.sim.clone(), self.config.clone()), self.pid, ROOT));
                // Dropping the old server is hwbpd dying.
                drop(std::mem::replace(&mut self.tp, fresh));
                let mut s = self.sim.borrow_mut();
                s.idle_all();
                s.switch(0, Some(self.tid)).map_err(io::Error::other)?;
                Ok(s.armed_slots() + u32::from(s.any_plan()))
            })())
        }
    }

    impl SimPlatform {
        /// Enabled registers of CPU 0 holding `addr`.
        fn armed_register_of(&self, addr: u64) -> Option<usize> {
            let s = self.sim.borrow();
            let regs = s.registers(0)?;
            let enabled = hwbp_kern::dr7::enabled_slots(regs.dr7);
            (0..regs.addr.len()).find(|&i| enabled & (1 << i) != 0 && regs.addr[i] == addr)
        }
    }

    struct SimChild {
        sim: Sim,
        pid: Pid,
        tid: Tid,
    }

    const CHILD_ADDR: u64 = 0x7100_0000;

    impl ChildTask for SimChild {
        fn pid(&self) -> u64 {
            u64::from(self.pid)
        }
        fn addr(&self) -> u64 {
            CHILD_ADDR
        }
        fn store(&mut self, n: u64) -> io::Result<()> {
            let mut s = self.sim.borrow_mut();
            if s.running(1) != Some(self.tid) {
                s.switch(1, Some(self.tid)).map_err(io::Error::other)?;
            }
            for _ in 0..n {
                s.run(self.tid, MemAccess::write(CHILD_ADDR, 4)).map_err(io::Error::other)?;
            }
            Ok(())
        }
        fn exit(self: Box<Self>) -> io::Result<()> {
            self.sim.borrow_mut().exit(self.pid).map_err(io::Error::other)
        }
    }
}

#[cfg(target_os = "redox")]
pub mod redox;
