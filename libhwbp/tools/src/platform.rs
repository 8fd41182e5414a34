//! Where the selftest and the CLI run: the host (an in-process hwbpd on the
//! simulated kernel) or Redox (the real `/scheme/hwbp`, real loads, stores
//! and calls).

use std::io;
use std::time::Duration;

use libhwbp::Transport;

/// Code locations the selftest executes (one per debug register).
pub const CODE_TARGETS: usize = 4;
/// Bytes of scratch memory a platform provides: one whole page, aligned,
/// holding nothing else (watched test data must not share a page with
/// anything else the program stores to: QEMU's in-page unaligned-store
/// deviation, see ../shared/redox-userspace.md).
pub const SCRATCH_BYTES: u64 = 4096;

/// What the selftest needs from the machine it runs on.
pub trait Platform {
    type T: Transport<Handle = usize> + Clone;

    /// One line saying what this is (printed first).
    fn describe(&self) -> String;
    /// The connection of the selftest itself.
    fn transport(&self) -> Self::T;
    /// The selftest's own pid (what `self` means for it).
    fn own_pid(&self) -> u64;
    /// Whether the selftest runs as root (uid 0).
    fn is_root(&self) -> bool;
    /// Logical CPUs of the machine (CPU `cpus()` does not exist; `None`:
    /// unknown).
    fn cpus(&self) -> Option<u32>;
    /// Address of [`SCRATCH_BYTES`] of the selftest's own memory, page
    /// aligned, a page of its own.
    fn scratch(&self) -> u64;
    /// Load `size` (1, 2, 4, 8) bytes at `addr` (inside the scratch).
    fn load(&mut self, addr: u64, size: u64);
    /// Store `size` (1, 2, 4, 8) bytes at `addr` (inside the scratch).
    fn store(&mut self, addr: u64, size: u64);
    /// `n` stores in a row, as fast as the platform can.
    fn store_n(&mut self, addr: u64, size: u64, n: u64) {
        for _ in 0..n {
            self.store(addr, size);
        }
    }
    /// Address of the i-th code location (i < [`CODE_TARGETS`]).
    fn code_addr(&self, i: usize) -> u64;
    /// Execute the i-th code location once.
    fn execute(&mut self, i: usize);
    /// Execute the i-th code location `n` times.
    fn execute_n(&mut self, i: usize, n: u64) {
        for _ in 0..n {
            self.execute(i);
        }
    }
    /// Let `ns` of time pass (hwbpd's rotation timer runs meanwhile).
    fn let_time_pass(&mut self, ns: u64);
    /// Start `threads` NEW threads of the selftest's own process, each
    /// making `stores_each` 8-byte stores to `addr`, and wait for all.
    fn new_threads_store(&mut self, addr: u64, threads: usize, stores_each: u64) -> io::Result<()>;
    /// From a new thread of the selftest's process: after `delay_ns`, make
    /// `n` stores of `size` bytes to `addr`. Returns at once; the stores
    /// happen while the caller blocks (e.g. in a blocking read).
    fn store_in_background(&mut self, addr: u64, size: u64, n: u64, delay_ns: u64) -> io::Result<()>;
    /// A blocking read of `h` that gives up after `timeout_ns` with
    /// `io::ErrorKind::TimedOut` (where the platform cannot cancel a read,
    /// it stays pending: use it only when giving up ends the check).
    fn read_timeout(&mut self, h: usize, buf: &mut [u8], timeout_ns: u64) -> io::Result<usize>;
    /// Wait for every background store to be done.
    fn join_background(&mut self) -> io::Result<()>;
    /// An event queue to watch handles' readiness with (`None`: the
    /// platform has none).
    fn event_queue(&mut self) -> Option<io::Result<Box<dyn ReadyQueue>>>;
    /// Start a child process (it starts unwatched) that stores to its own
    /// memory on request.
    fn spawn_child(&mut self) -> io::Result<Box<dyn ChildTask>>;
    /// Root only: open each path (relative to the scheme root) as a
    /// non-root user; returns the errno of each (0: it opened, and was
    /// closed again).
    fn open_as_user(&mut self, paths: &[String]) -> io::Result<Vec<i32>>;
    /// A live task of another uid than the selftest's (`None`: unknown).
    fn other_users_pid(&mut self) -> Option<u64>;
    /// Kill hwbpd while the selftest holds `leaked` handles open, and
    /// start a new one; returns once the new one serves (the platform
    /// disposes of the leaked handles). `None` where the selftest cannot
    /// restart the server.
    fn restart_server(&mut self, leaked: Vec<usize>) -> Option<io::Result<()>>;
    /// Enabled debug registers over all CPUs now (`None`: cannot be read).
    fn armed_registers(&self) -> Option<u32> {
        None
    }
    /// Which debug register of the selftest's CPU watches `addr` right
    /// now (`Some(None)`: none); `None` where registers cannot be read.
    fn register_of(&self, addr: u64) -> Option<Option<usize>> {
        let _ = addr;
        None
    }
    /// Real time `n` 8-byte stores to `addr` take (`None`: simulated time).
    fn time_stores(&mut self, addr: u64, n: u64) -> Option<Duration> {
        let _ = (addr, n);
        None
    }
}

/// An event queue (Redox: `event:`; host: the scheme's `fevent` and its
/// `post_fevent` notices).
pub trait ReadyQueue {
    /// Watch `h` for read readiness.
    fn register(&mut self, h: usize) -> io::Result<()>;
    /// The handles reported readable within `timeout_ns` (returns at the
    /// first report; empty when the time ran out).
    fn wait(&mut self, timeout_ns: u64) -> io::Result<Vec<usize>>;
}

/// A child process.
pub trait ChildTask {
    fn pid(&self) -> u64;
    /// Address the child stores to (4 bytes, aligned; on Redox its own
    /// scratch, which is at the selftest's scratch address too: same
    /// binary).
    fn addr(&self) -> u64;
    /// Make the child store `n` times to [`ChildTask::addr`], and wait.
    fn store(&mut self, n: u64) -> io::Result<()>;
    /// Make the child exit, and wait for it.
    fn exit(self: Box<Self>) -> io::Result<()>;
}

#[cfg(all(feature = "sim", not(target_os = "redox")))]
pub mod sim {
    //! The host platform: hwbpd in process, on the simulated kernel.
    //!
    //! The in-process server is single-threaded, so a blocking read cannot
    //! wait for another thread: [`SimTransport`] runs the work a platform
    //! "background thread" was given ([`Platform::store_in_background`])
    //! when a blocking read would block, then reads again, which is what a
    //! waiting reader sees on Redox.

    use std::cell::RefCell;
    use std::collections::HashSet;
    use std::io;
    use std::rc::Rc;

    use hwbpd::sim::dr_model::MemAccess;
    use hwbpd::sim::Tid;
    use hwbpd::{Config, HwbpScheme, InProcess, Pid, SimKernel, Uid};
    use libhwbp::abi::errno::ErrorKind;
    use libhwbp::Transport;
    use redox_scheme::scheme::SchemeSync;
    use syscall::flag::EventFlags;

    use super::{ChildTask, Platform, ReadyQueue, CODE_TARGETS};

    pub type Sim = Rc<RefCell<SimKernel>>;
    pub type Tp = Rc<InProcess<Sim>>;
    type Jobs = Rc<RefCell<Vec<Box<dyn FnOnce()>>>>;

    pub const ROOT: Uid = 0;
    pub const USER: Uid = 1000;
    /// Uid of the "other user" task.
    const OTHER: Uid = 4242;
    /// Simulated address of the selftest's scratch memory (a page).
    pub const SCRATCH: u64 = 0x7000_0000;
    /// Simulated code addresses.
    const CODE: u64 = 0x40_8000;
    pub const CPUS: u32 = 2;

    /// libhwbp's transport over the in-process server; see the module docs.
    #[derive(Clone)]
    pub struct SimTransport {
        tp: Tp,
        nonblock: Rc<RefCell<HashSet<usize>>>,
        jobs: Jobs,
    }

    impl SimTransport {
        pub fn inner(&self) -> &Tp {
            &self.tp
        }
    }

    impl Transport for SimTransport {
        type Handle = usize;

        fn open(&self, path: &str, nonblock: bool) -> io::Result<usize> {
            let h = self.tp.open(path, nonblock)?;
            if nonblock {
                self.nonblock.borrow_mut().insert(h);
            }
            Ok(h)
        }
        fn dup(&self, h: usize, name: &str) -> io::Result<usize> {
            self.tp.dup(h, name)
        }
        fn read(&self, h: usize, buf: &mut [u8]) -> io::Result<usize> {
            loop {
                match self.tp.read(h, buf) {
                    Err(e) if ErrorKind::of_io_error(&e) == Some(ErrorKind::WouldBlock) && !self.nonblock.borrow().contains(&h) => {
                        // A blocking read waits: let the other threads run.
                        let job = self.jobs.borrow_mut().pop();
                        match job {
                            Some(job) => job(),
                            None => return Err(e),
                        }
                    }
                    r => return r,
                }
            }
        }
        fn write(&self, h: usize, buf: &[u8]) -> io::Result<usize> {
            self.tp.write(h, buf)
        }
        fn fpath(&self, h: usize, buf: &mut [u8]) -> io::Result<usize> {
            self.tp.fpath(h, buf)
        }
        fn set_nonblock(&self, h: usize, nonblock: bool) -> io::Result<()> {
            self.tp.set_nonblock(h, nonblock)?;
            if nonblock {
                self.nonblock.borrow_mut().insert(h);
            } else {
                self.nonblock.borrow_mut().remove(&h);
            }
            Ok(())
        }
        fn close(&self, h: usize) -> io::Result<()> {
            self.nonblock.borrow_mut().remove(&h);
            self.tp.close(h)
        }
    }

    pub struct SimPlatform {
        sim: Sim,
        tp: SimTransport,
        pid: Pid,
        tid: Tid,
        uid: Uid,
        config: Config,
    }

    impl SimPlatform {
        /// The selftest as root.
        pub fn new() -> SimPlatform {
            SimPlatform::with_config(Config::default())
        }

        /// The selftest as uid 1000 (`hwbp-selftest --non-root`).
        pub fn non_root() -> SimPlatform {
            SimPlatform::build(Config::default(), USER)
        }

        pub fn with_config(config: Config) -> SimPlatform {
            SimPlatform::build(config, ROOT)
        }

        pub fn build(config: Config, uid: Uid) -> SimPlatform {
            let sim: Sim = Rc::new(RefCell::new(SimKernel::new(CPUS)));
            let (pid, tid) = {
                let mut s = sim.borrow_mut();
                let pid = s.spawn(uid);
                let tid = s.main_thread(pid).expect("a spawned task has a thread");
                s.switch(0, Some(tid)).expect("CPU 0 exists");
                (pid, tid)
            };
            let tp = Rc::new(InProcess::new(HwbpScheme::new(sim.clone(), config.clone()), pid, uid));
            let tp = SimTransport { tp, nonblock: Rc::default(), jobs: Rc::default() };
            SimPlatform { sim, tp, pid, tid, uid, config }
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

        /// The task enters the kernel, whose instruction at `ip` (kernel
        /// half) makes `a` at CPL 0 on CPU 0 (`hwbp --sim --kernel`'s
        /// simulated kernel code).
        pub fn run_kernel_at(&mut self, ip: u64, a: MemAccess) {
            let mut s = self.sim.borrow_mut();
            if s.running(0) != Some(self.tid) {
                s.switch(0, Some(self.tid)).expect("the selftest task is alive");
            }
            s.run_kernel_at(self.tid, ip, a).expect("kernel code runs");
        }

        /// Enabled registers of CPU 0 holding `addr`.
        fn armed_register_of(&self, addr: u64) -> Option<usize> {
            let s = self.sim.borrow();
            let regs = s.registers(0)?;
            let enabled = hwbp_kern::dr7::enabled_slots(regs.dr7);
            (0..regs.addr.len()).find(|&i| enabled & (1 << i) != 0 && regs.addr[i] == addr)
        }
    }

    impl Default for SimPlatform {
        fn default() -> Self {
            SimPlatform::new()
        }
    }

    /// A new thread of `pid` runs `n` writes of `size` at `addr` on CPU 1,
    /// then leaves it.
    fn thread_stores(sim: &Sim, pid: Pid, addr: u64, size: u64, n: u64) -> io::Result<()> {
        let mut s = sim.borrow_mut();
        let tid = s.spawn_thread(pid).map_err(io::Error::other)?;
        s.switch(1, Some(tid)).map_err(io::Error::other)?;
        for _ in 0..n {
            s.run(tid, MemAccess::write(addr, size)).map_err(io::Error::other)?;
        }
        s.switch(1, None).map_err(io::Error::other)
    }

    impl Platform for SimPlatform {
        type T = SimTransport;

        fn describe(&self) -> String {
            format!("host: in-process hwbpd on the simulated kernel ({CPUS} CPUs), selftest pid {} uid {}", self.pid, self.uid)
        }
        fn transport(&self) -> SimTransport {
            self.tp.clone()
        }
        fn own_pid(&self) -> u64 {
            u64::from(self.pid)
        }
        fn is_root(&self) -> bool {
            self.uid == ROOT
        }
        fn cpus(&self) -> Option<u32> {
            Some(CPUS)
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
            self.tp.tp.scheme().borrow_mut().tick();
        }
        fn new_threads_store(&mut self, addr: u64, threads: usize, stores_each: u64) -> io::Result<()> {
            for _ in 0..threads {
                thread_stores(&self.sim, self.pid, addr, 8, stores_each)?;
            }
            Ok(())
        }
        fn store_in_background(&mut self, addr: u64, size: u64, n: u64, delay_ns: u64) -> io::Result<()> {
            let (sim, pid) = (self.sim.clone(), self.pid);
            self.tp.jobs.borrow_mut().push(Box::new(move || {
                sim.borrow_mut().advance(delay_ns);
                if let Err(e) = thread_stores(&sim, pid, addr, size, n) {
                    log::error!("simulated background thread: {e}");
                }
            }));
            Ok(())
        }
        fn read_timeout(&mut self, h: usize, buf: &mut [u8], _timeout_ns: u64) -> io::Result<usize> {
            match self.tp.read(h, buf) {
                // Blocking, nothing queued and no other thread left to run:
                // it would wait for ever.
                Err(e) if ErrorKind::of_io_error(&e) == Some(ErrorKind::WouldBlock) && !self.tp.nonblock.borrow().contains(&h) => {
                    Err(io::Error::new(io::ErrorKind::TimedOut, "nothing to read and nothing left to run"))
                }
                r => r,
            }
        }
        fn join_background(&mut self) -> io::Result<()> {
            loop {
                let job = self.tp.jobs.borrow_mut().pop();
                match job {
                    Some(job) => job(),
                    None => return Ok(()),
                }
            }
        }
        fn event_queue(&mut self) -> Option<io::Result<Box<dyn ReadyQueue>>> {
            Some(Ok(Box::new(SimQueue { tp: self.tp.tp.clone(), pid: self.pid, uid: self.uid, registered: HashSet::new(), ready: Vec::new() })))
        }
        fn spawn_child(&mut self) -> io::Result<Box<dyn ChildTask>> {
            let (pid, tid) = {
                let mut s = self.sim.borrow_mut();
                let pid = s.spawn(self.uid);
                let tid = s.main_thread(pid).map_err(io::Error::other)?;
                (pid, tid)
            };
            Ok(Box::new(SimChild { sim: self.sim.clone(), pid, tid }))
        }
        fn open_as_user(&mut self, paths: &[String]) -> io::Result<Vec<i32>> {
            let pid = self.sim.borrow_mut().spawn(USER);
            let user = self.tp.tp.caller(pid, USER);
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
        fn other_users_pid(&mut self) -> Option<u64> {
            let uid = if self.uid == OTHER { ROOT } else { OTHER };
            Some(u64::from(self.sim.borrow_mut().spawn(uid)))
        }
        fn restart_server(&mut self, leaked: Vec<usize>) -> Option<io::Result<()>> {
            // The leaked handles die with the old server (their numbers
            // mean nothing to the new one).
            drop(leaked);
            Some((|| {
                if Rc::strong_count(&self.tp.tp) != 1 {
                    return Err(io::Error::other("a breakpoint handle still holds the old server"));
                }
                let fresh = Rc::new(InProcess::new(HwbpScheme::new(self.sim.clone(), self.config.clone()), self.pid, self.uid));
                // Dropping the old server is hwbpd dying.
                drop(std::mem::replace(&mut self.tp.tp, fresh));
                self.tp.nonblock.borrow_mut().clear();
                let mut s = self.sim.borrow_mut();
                s.idle_all();
                s.switch(0, Some(self.tid)).map_err(io::Error::other)
            })())
        }
        fn armed_registers(&self) -> Option<u32> {
            let s = self.sim.borrow();
            Some(s.armed_slots() + u32::from(s.any_plan()))
        }
        fn register_of(&self, addr: u64) -> Option<Option<usize>> {
            Some(self.armed_register_of(addr))
        }
    }

    /// The event queue on the host: `fevent` subscribes, and the scheme's
    /// owed `post_fevent` notices are the events.
    struct SimQueue {
        tp: Tp,
        pid: Pid,
        uid: Uid,
        registered: HashSet<usize>,
        ready: Vec<usize>,
    }

    impl ReadyQueue for SimQueue {
        fn register(&mut self, h: usize) -> io::Result<()> {
            let ctx = hwbpd::caller_ctx(self.pid as usize, self.uid, self.uid);
            let now = self.tp.scheme().borrow_mut().fevent(h, EventFlags::EVENT_READ, &ctx).map_err(|e| io::Error::from_raw_os_error(e.errno))?;
            self.registered.insert(h);
            if now.contains(EventFlags::EVENT_READ) {
                self.ready.push(h);
            }
            Ok(())
        }
        fn wait(&mut self, _timeout_ns: u64) -> io::Result<Vec<usize>> {
            let mut scheme = self.tp.scheme().borrow_mut();
            scheme.collect();
            for n in scheme.take_fevents() {
                if self.registered.contains(&n.handle) && n.flags.contains(EventFlags::EVENT_READ) && !self.ready.contains(&n.handle) {
                    self.ready.push(n.handle);
                }
            }
            Ok(std::mem::take(&mut self.ready))
        }
    }

    struct SimChild {
        sim: Sim,
        pid: Pid,
        tid: Tid,
    }

    impl ChildTask for SimChild {
        fn pid(&self) -> u64 {
            u64::from(self.pid)
        }
        fn addr(&self) -> u64 {
            // Same binary, same address: the child's own copy of the scratch.
            SCRATCH
        }
        fn store(&mut self, n: u64) -> io::Result<()> {
            let mut s = self.sim.borrow_mut();
            if s.running(1) != Some(self.tid) {
                s.switch(1, Some(self.tid)).map_err(io::Error::other)?;
            }
            for _ in 0..n {
                s.run(self.tid, MemAccess::write(SCRATCH, 4)).map_err(io::Error::other)?;
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
