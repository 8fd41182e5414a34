//! The simulated task: a process of the simulated kernel running a small
//! x86-64 program ([`program`]) in the [`x86`] interpreter, with an
//! in-process hwbpd. Every instruction fetch, load and store the program
//! makes is run through the simulated kernel's debug-register model
//! (`SimKernel::run`), so the hits gdb is told about are the ones the x86
//! model raises for the registers hwbpd programmed, reported through
//! hwbpd's hit records as on Redox.
//!
//! Memory is a set of 4 KiB pages: the code page, the data page and the
//! stack; anything else is unmapped (gdb gets an error reading it).

pub mod program;
pub mod x86;

use std::collections::BTreeMap;
use std::rc::Rc;

use hwbpd::sim::dr_model::MemAccess;
use hwbpd::sim::{SimKernel, Tid};
use hwbpd::{Config, HwbpScheme, InProcess, Pid};

use crate::hw::HwPoints;
use crate::regs::{Amd64Regs, gpr};
use crate::target::{
    Point, PointError, Resume, Stop, StopReason, Target, TargetError, ThreadId, signal,
};

const PAGE: u64 = 4096;
/// The uid the task and the stub run as.
const UID: u32 = 1000;
/// Instructions a `continue` runs before it gives up and reports SIGINT
/// (the program would loop for ever; gdb's Ctrl-C is not read mid-run).
const MAX_INSTRUCTIONS: u64 = 10_000_000;
/// SIGINT, for a run that used up its instructions.
const SIGINT: u8 = 2;
/// Longest x86 instruction.
const MAX_INSN: usize = 15;

/// Mapped memory: whole pages.
#[derive(Default)]
pub struct Memory {
    pages: BTreeMap<u64, Box<[u8; PAGE as usize]>>,
}

impl Memory {
    /// Map the pages covering `[addr, addr + len)` (zero-filled).
    pub fn map(&mut self, addr: u64, len: u64) {
        let mut page = addr & !(PAGE - 1);
        while page < addr + len {
            self.pages
                .entry(page)
                .or_insert_with(|| Box::new([0; PAGE as usize]));
            page += PAGE;
        }
    }

    /// Read into `buf` from `addr`; returns the bytes read before the
    /// first unmapped one.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> usize {
        for (i, out) in buf.iter_mut().enumerate() {
            let a = addr.wrapping_add(i as u64);
            match self.pages.get(&(a & !(PAGE - 1))) {
                Some(p) => *out = p[(a & (PAGE - 1)) as usize],
                None => return i,
            }
        }
        buf.len()
    }

    /// Write `data` at `addr`, all or nothing.
    pub fn write(&mut self, addr: u64, data: &[u8]) -> Option<()> {
        let end = addr.checked_add(data.len() as u64)?;
        let mut page = addr & !(PAGE - 1);
        while page < end {
            self.pages.get(&page)?;
            page += PAGE;
        }
        for (i, &b) in data.iter().enumerate() {
            let a = addr + i as u64;
            self.pages.get_mut(&(a & !(PAGE - 1)))?[(a & (PAGE - 1)) as usize] = b;
        }
        Some(())
    }
}

/// The process's state as the stub sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    Running,
    Exited(u8),
    Killed,
}

/// The simulated task, served to gdb.
pub struct SimTarget {
    hwbp: Rc<InProcess>,
    points: HwPoints<Rc<InProcess>>,
    pid: Pid,
    tid: Tid,
    regs: Amd64Regs,
    mem: Memory,
    life: Life,
}

/// The error of a failed step of the simulated kernel.
fn sim_error(e: impl std::fmt::Display) -> TargetError {
    TargetError::Other(format!("simulated kernel: {e}"))
}

impl SimTarget {
    /// A new simulated machine (one CPU), hwbpd on it, and the task
    /// stopped at its first instruction.
    pub fn new() -> Self {
        let mut sim = SimKernel::new(1);
        let pid = sim.spawn(UID);
        let tid = sim.main_thread(pid).expect("a new task has a thread");
        sim.switch(0, Some(tid)).expect("cpu 0 exists");
        // The stub is another process of the same user.
        let stub_pid = sim.spawn(UID);
        let hwbp = Rc::new(InProcess::new(
            HwbpScheme::new(sim, Config::default()),
            stub_pid,
            UID,
        ));
        let mut mem = Memory::default();
        mem.map(program::TEXT_ADDR, program::TEXT.len() as u64);
        mem.map(program::DATA_ADDR, program::DATA.len() as u64);
        mem.map(
            program::STACK_TOP - program::STACK_BYTES,
            program::STACK_BYTES,
        );
        mem.write(program::TEXT_ADDR, &program::TEXT)
            .expect("mapped");
        mem.write(program::DATA_ADDR, &program::DATA)
            .expect("mapped");
        let mut regs = Amd64Regs {
            rip: program::TEXT_ADDR,
            ..Amd64Regs::default()
        };
        regs.gpr[gpr::RSP] = program::INITIAL_RSP;
        let points = HwPoints::new(hwbp.clone(), u64::from(pid));
        SimTarget {
            hwbp,
            points,
            pid,
            tid,
            regs,
            mem,
            life: Life::Running,
        }
    }

    /// The pid of the task in the simulated kernel.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Debug registers armed now, on every simulated CPU.
    pub fn armed_slots(&self) -> u32 {
        self.hwbp.with_kernel(|k| k.armed_slots())
    }

    fn trap(&self, reason: Option<StopReason>) -> Stop {
        Stop::Signal {
            signal: signal::SIGTRAP,
            thread: self.tid,
            reason,
        }
    }

    fn signal(&self, signal: u8) -> Stop {
        Stop::Signal {
            signal,
            thread: self.tid,
            reason: None,
        }
    }

    fn run_access(&self, access: MemAccess) -> Result<(), TargetError> {
        run_on_cpu(&self.hwbp, self.tid, access)
    }

    /// Whether a hit holds the task's thread stopped in the simulated
    /// kernel.
    pub fn thread_stopped(&self) -> bool {
        self.hwbp.with_kernel(|k| k.is_stopped(self.tid))
    }

    /// The first hit hwbpd recorded since the last look, as a stop reason.
    fn hit(&mut self) -> Result<Option<StopReason>, TargetError> {
        let hits = self
            .points
            .take_hits()
            .map_err(|e| TargetError::Other(format!("hwbpd: {e}")))?;
        Ok(hits.first().map(|h| h.reason()))
    }

    /// Run one instruction. `Some(stop)` when the task stops.
    fn step_one(&mut self) -> Result<Option<Stop>, TargetError> {
        let rip = self.regs.rip;
        // The fetch: an execute breakpoint faults before the instruction,
        // which then has not run; the kernel stopped the thread with RF
        // set in its frame, so fetching it again after the resume does
        // not fault a second time.
        self.run_access(MemAccess::exec(rip))?;
        if let Some(reason) = self.hit()? {
            return Ok(Some(self.trap(Some(reason))));
        }
        let mut bytes = [0u8; MAX_INSN];
        let n = self.mem.read(rip, &mut bytes);
        if n == 0 {
            return Ok(Some(self.signal(signal::SIGSEGV)));
        }
        let Some(insn) = x86::decode(&bytes[..n]) else {
            return Ok(Some(self.signal(signal::SIGILL)));
        };
        let mut bus = SimBus {
            mem: &mut self.mem,
            hwbp: &self.hwbp,
            tid: self.tid,
            error: None,
        };
        let outcome = x86::execute(&mut self.regs, &insn, &mut bus);
        if let Some(e) = bus.error {
            return Err(e);
        }
        match outcome {
            x86::Outcome::Done => Ok(self.hit()?.map(|reason| self.trap(Some(reason)))),
            x86::Outcome::Breakpoint => Ok(Some(self.trap(None))),
            x86::Outcome::Fault { .. } => Ok(Some(self.signal(signal::SIGSEGV))),
            x86::Outcome::Exit(status) => {
                self.end(Life::Exited(status));
                Ok(Some(Stop::Exited(status)))
            }
        }
    }

    fn end(&mut self, life: Life) {
        if self.life == Life::Running {
            // hwbpd ends the task's breakpoints when the kernel reports it.
            let _ = self.hwbp.with_kernel(|k| k.exit(self.pid));
            self.life = life;
        }
    }

    fn live(&self) -> Result<(), TargetError> {
        if self.life == Life::Running {
            Ok(())
        } else {
            Err(TargetError::Exited)
        }
    }
}

impl Default for SimTarget {
    fn default() -> Self {
        Self::new()
    }
}

/// Thread `tid` makes `access` on CPU 0 (switched in first: a thread a
/// hit stopped left its CPU).
fn run_on_cpu(hwbp: &InProcess, tid: Tid, access: MemAccess) -> Result<(), TargetError> {
    hwbp.with_kernel(|k| k.run_on(0, tid, access)).map(|_| ()).map_err(sim_error)
}

/// The interpreter's memory, reporting each access to the simulated
/// kernel. (Each instruction of the interpreter makes at most one data
/// access, so a data hit that stops the thread is its last.)
struct SimBus<'a> {
    mem: &'a mut Memory,
    hwbp: &'a InProcess,
    tid: Tid,
    error: Option<TargetError>,
}

impl x86::Bus for SimBus<'_> {
    fn access(&mut self, access: x86::Access) {
        let a = match access {
            x86::Access::Read { addr, size } => MemAccess::read(addr, size),
            x86::Access::Write { addr, size } => MemAccess::write(addr, size),
        };
        if let Err(e) = run_on_cpu(self.hwbp, self.tid, a) {
            self.error.get_or_insert(e);
        }
    }

    fn read_u64(&mut self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        (self.mem.read(addr, &mut b) == 8).then(|| u64::from_le_bytes(b))
    }

    fn write_u64(&mut self, addr: u64, value: u64) -> Option<()> {
        self.mem.write(addr, &value.to_le_bytes())
    }
}

impl Target for SimTarget {
    fn threads(&self) -> Vec<ThreadId> {
        if self.life == Life::Running {
            vec![self.tid]
        } else {
            Vec::new()
        }
    }

    fn current_stop(&self) -> Stop {
        match self.life {
            Life::Running => self.trap(None),
            Life::Exited(status) => Stop::Exited(status),
            Life::Killed => Stop::Killed(signal::SIGKILL),
        }
    }

    fn read_registers(&mut self, _thread: ThreadId) -> Result<Amd64Regs, TargetError> {
        self.live()?;
        Ok(self.regs)
    }

    fn write_registers(&mut self, _thread: ThreadId, regs: &Amd64Regs) -> Result<(), TargetError> {
        self.live()?;
        self.regs = *regs;
        Ok(())
    }

    fn read_memory(&mut self, addr: u64, buf: &mut [u8]) -> Result<usize, TargetError> {
        self.live()?;
        match self.mem.read(addr, buf) {
            0 if !buf.is_empty() => Err(TargetError::Fault { addr }),
            n => Ok(n),
        }
    }

    fn write_memory(&mut self, addr: u64, data: &[u8]) -> Result<(), TargetError> {
        self.live()?;
        self.mem
            .write(addr, data)
            .ok_or(TargetError::Fault { addr })
    }

    fn insert_point(&mut self, point: Point) -> Result<(), PointError> {
        self.points.insert(point)
    }

    fn remove_point(&mut self, point: Point) -> Result<(), PointError> {
        self.points.remove(point)
    }

    fn resume(&mut self, how: Resume) -> Result<Stop, TargetError> {
        self.live()?;
        // Hits recorded while the task was stopped are not news.
        self.hit()?;
        // gdb lets it run: every thread a hit stopped runs again (the
        // breakpoints gdb removed resumed theirs when they were closed).
        self.points.resume_stopped().map_err(|e| TargetError::Other(format!("hwbpd: resume: {e}")))?;
        if self.thread_stopped() {
            return Err(TargetError::Other("the thread is still stopped after every breakpoint resumed it".into()));
        }
        let budget = match how {
            Resume::Step => 1,
            Resume::Continue => MAX_INSTRUCTIONS,
        };
        for _ in 0..budget {
            if let Some(stop) = self.step_one()? {
                return Ok(stop);
            }
        }
        Ok(match how {
            Resume::Step => self.trap(Some(StopReason::Step)),
            Resume::Continue => self.signal(SIGINT),
        })
    }

    fn kill(&mut self) {
        self.points.clear();
        self.end(Life::Killed);
    }

    fn detach(&mut self) {
        self.points.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::{PointKind, WatchKind};

    fn watch(kind: PointKind, addr: u64) -> Point {
        Point { kind, addr, len: 8 }
    }

    fn cont(t: &mut SimTarget) -> Stop {
        t.resume(Resume::Continue).unwrap()
    }

    fn rip(t: &mut SimTarget) -> u64 {
        t.read_registers(1).unwrap().rip
    }

    #[test]
    fn without_points_the_program_runs_to_its_exit() {
        let mut t = SimTarget::new();
        assert_eq!(cont(&mut t), Stop::Exited(0));
        assert_eq!(t.read_registers(1), Err(TargetError::Exited));
    }

    #[test]
    fn a_write_watch_stops_after_the_store_with_the_new_value_in_memory() {
        let mut t = SimTarget::new();
        t.insert_point(watch(PointKind::Write, 0x404000)).unwrap();
        let stop = cont(&mut t);
        assert_eq!(
            stop,
            t.trap(Some(StopReason::Watch {
                kind: WatchKind::Write,
                addr: 0x404000
            }))
        );
        assert_eq!(rip(&mut t), 0x40101d, "after the store");
        let mut v = [0u8; 8];
        t.read_memory(0x404000, &mut v).unwrap();
        assert_eq!(u64::from_le_bytes(v), 5);
        assert!(t.thread_stopped(), "hwbp's stop holds the thread in the simulated kernel");
        assert_eq!(t.armed_slots(), 0, "a stopped thread is off its CPU");
        assert_eq!(cont(&mut t), stop, "resumed: the next store");
        t.read_memory(0x404000, &mut v).unwrap();
        assert_eq!(u64::from_le_bytes(v), 10);
    }

    #[test]
    fn an_access_watch_sees_the_read_and_the_write_of_tick() {
        let mut t = SimTarget::new();
        t.insert_point(watch(PointKind::Access, 0x404010)).unwrap();
        let access = Some(StopReason::Watch {
            kind: WatchKind::Access,
            addr: 0x404010,
        });
        assert_eq!(cont(&mut t), t.trap(access));
        assert_eq!(rip(&mut t), 0x401037, "after the load");
        assert_eq!(cont(&mut t), t.trap(access));
        assert_eq!(rip(&mut t), 0x401043, "after the store");
    }

    #[test]
    fn a_hardware_breakpoint_stops_before_the_instruction_and_its_restart_runs_it() {
        let mut t = SimTarget::new();
        t.insert_point(Point {
            kind: PointKind::Hardware,
            addr: 0x40102f,
            len: 1,
        })
        .unwrap();
        assert_eq!(cont(&mut t), t.trap(Some(StopReason::HwBreak)));
        assert_eq!(rip(&mut t), 0x40102f);
        // Left inserted: the restart does not fault again (RF), the next
        // call does.
        assert_eq!(
            t.resume(Resume::Step).unwrap(),
            t.trap(Some(StopReason::Step))
        );
        assert_eq!(rip(&mut t), 0x401037);
        assert_eq!(cont(&mut t), t.trap(Some(StopReason::HwBreak)));
        t.remove_point(Point {
            kind: PointKind::Hardware,
            addr: 0x40102f,
            len: 1,
        })
        .unwrap();
        assert_eq!(cont(&mut t), Stop::Exited(0));
    }

    #[test]
    fn read_watchpoints_are_left_to_gdb_and_the_fifth_register_is_refused() {
        let mut t = SimTarget::new();
        assert_eq!(
            t.insert_point(watch(PointKind::Read, 0x404008)),
            Err(PointError::Unsupported)
        );
        for i in 0..4 {
            t.insert_point(watch(PointKind::Write, 0x404000 + 8 * i))
                .unwrap();
        }
        let err = t
            .insert_point(watch(PointKind::Write, 0x404020))
            .unwrap_err();
        assert!(
            matches!(
                err,
                PointError::Refused {
                    errno: Some(libhwbp::abi::errno::ENOSPC),
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(t.armed_slots(), 4);
        t.remove_point(watch(PointKind::Write, 0x404018)).unwrap();
        t.insert_point(watch(PointKind::Write, 0x404020)).unwrap();
    }

    #[test]
    fn a_single_step_reports_a_watch_it_triggers() {
        let mut t = SimTarget::new();
        t.insert_point(watch(PointKind::Access, 0x404008)).unwrap();
        assert_eq!(
            t.resume(Resume::Step).unwrap(),
            t.trap(Some(StopReason::Step)),
            "mov ecx, 3"
        );
        assert_eq!(
            t.resume(Resume::Step).unwrap(),
            t.trap(Some(StopReason::Step)),
            "load counter"
        );
        let s = t.resume(Resume::Step).unwrap();
        assert_eq!(
            s,
            t.trap(Some(StopReason::Watch {
                kind: WatchKind::Access,
                addr: 0x404008
            })),
            "add step"
        );
    }

    #[test]
    fn memory_outside_the_mapped_pages_is_an_error_and_reads_stop_at_the_gap() {
        let mut t = SimTarget::new();
        let mut buf = [0u8; 16];
        assert_eq!(
            t.read_memory(0x1000, &mut buf),
            Err(TargetError::Fault { addr: 0x1000 })
        );
        assert_eq!(t.read_memory(0x404ff8, &mut buf), Ok(8));
        assert!(t.write_memory(0x404ffc, &[0; 8]).is_err());
    }
}
