//! The simulated kernel: a [`Kernel`] backend that runs on the host.
//!
//! It models what the kernel patch does on Redox, with the same code:
//! - tasks (pid, uid) with threads (contexts, numbered by [`Tid`]); a task
//!   plan applies to every thread of the task, later ones included;
//! - CPUs, each with a [`RegisterFile`] standing in for DR0-DR7, the real
//!   [`CpuDebugState`] (lazy switch, composition) and the real per-CPU
//!   [`HitRing`];
//! - context switches ([`SimKernel::switch`]) that call the real
//!   `CpuDebugState::switch_to`;
//! - instructions ([`SimKernel::run`] in user mode, where a data access to
//!   the kernel half page-faults; [`SimKernel::run_kernel`] and
//!   [`SimKernel::run_kernel_at`] at CPL 0): the x86 debug-register model in
//!   [`dr_model`] decides from the raw registers which slots fire, sets DR6
//!   and calls the real `CpuDebugState::handle_debug_exception`, so hits
//!   reach `hwbpd` through the same path as on Redox;
//! - stops (contract 7): a user-mode hit on a stopping piece
//!   (`ContextPiece::stop`) whose records all fit in the ring stops the
//!   thread, as the patch does — the real handler decides
//!   (`DebugVerdict::stop`); the thread leaves its CPU, [`SimKernel::run`]
//!   on it is [`SimError::Stopped`] and no switch picks it, until
//!   [`Kernel::resume`] (or [`Kernel::disarm_all`], the server's death). A
//!   data hit stops after the access; an exec hit before the instruction,
//!   with RF set in its frame, so running that instruction again after the
//!   resume completes it without a second hit;
//! - exact hit counts per piece token, kept apart from the records: the
//!   #DB path adds one for every slot that fired, whether or not the ring
//!   had room for its record (as the patch's per-CPU counters do), so a
//!   flood drops records but never a count;
//! - task plans as the patch's `pid-<pid>` handles: the first
//!   `set_task_plan` of a task attaches it; its exit, or an identity change
//!   ([`SimKernel::set_euid`]), clears the plan on every thread and queues
//!   one [`TaskEnd`], and no plan reaches the pid until that end is taken;
//!   a pid handed out again ([`SimKernel::spawn_reusing`]) starts
//!   unattached;
//! - a clock that only moves when a test advances it.
//!
//! Everything is single-threaded: the "#DB handler" and the consumer of
//! the rings are both this struct, so the rings' one-producer /
//! one-consumer contract holds trivially.

pub mod dr_model;

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use hwbp_kern::abi::HitRecord;
use hwbp_kern::regs::RegisterFile;
use hwbp_kern::piece::{KERNEL_START, USER_END};
use hwbp_kern::{ContextPlan, CpuDebugState, CpuId, CpuPlan, HitRing, Slot, Token, TrapInfo};

use crate::kernel::{EndReason, Kernel, KernelError, PieceCount, Pid, TaskEnd, TaskInfo, Uid};
use dr_model::{ExecState, Handled, MemAccess, Phase, Step};

pub use dr_model::AccessKind;

/// A thread (a kernel context): its debug id, unique for the life of the
/// simulation (hit records carry it in the low 32 bits of `context`).
pub type Tid = u64;

/// Records each CPU's hit ring holds (a power of two).
pub const CPU_RING_RECORDS: usize = 8192;

/// First pid handed out by [`SimKernel::spawn`].
const FIRST_PID: Pid = 100;
/// Synthetic code address of a thread's first instruction; each data
/// access advances it by [`INSTRUCTION_BYTES`].
const FIRST_PC: u64 = 0x40_0000;
const INSTRUCTION_BYTES: u64 = 4;

/// `HitRecord::context` as the kernel patch fills it (kernel-patch/ABI.md):
/// the context's debug id in bits 0-31, its pid in bits 32-63.
const CONTEXT_ID_MASK: u64 = 0xffff_ffff;

fn hit_context(pid: Pid, tid: Tid) -> u64 {
    (u64::from(pid) << 32) | (tid & CONTEXT_ID_MASK)
}

/// Privilege of a simulated instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// CPL 3, the thread's own code.
    User,
    /// CPL 0 on the thread's behalf, at no particular kernel address.
    Kernel,
    /// CPL 0, the kernel instruction at this address.
    KernelAt(u64),
}

/// Why the simulation refused a step a test asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimError {
    NoSuchThread(Tid),
    NoSuchTask(Pid),
    NoSuchCpu(CpuId),
    /// The thread is not on a CPU: switch it in first.
    NotRunning(Tid),
    /// The thread's task exited.
    Exited(Tid),
    /// A hit stopped the thread: it runs again once resumed.
    Stopped(Tid),
    /// A user-mode data access to this kernel-half address: the CPU's page
    /// fault, before the access completes (no data breakpoint traps).
    PageFault(u64),
    /// `run_kernel_at` was given an instruction address outside the kernel
    /// half.
    NotKernelCode(u64),
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for SimError {}

struct SimCpu {
    state: CpuDebugState,
    regs: RegisterFile,
    ring: Box<HitRing<CPU_RING_RECORDS>>,
    running: Option<Tid>,
}

struct SimTask {
    uid: Uid,
    threads: Vec<Tid>,
    plan: ContextPlan,
    alive: bool,
    /// The server follows it (the patch's open `pid-<pid>` handle): its end
    /// is reported once, then it is detached.
    attached: bool,
    /// Its end is queued and not yet taken: no plan reaches it until then.
    ending: bool,
    /// A thread of it was on a CPU since the last `take_ran`.
    ran: bool,
}

impl SimTask {
    fn new(uid: Uid) -> Self {
        SimTask { uid, threads: Vec::new(), plan: ContextPlan::EMPTY, alive: true, attached: false, ending: false, ran: false }
    }
}

struct SimThread {
    pid: Pid,
    cpu: Option<CpuId>,
    exec: ExecState,
    pc: u64,
    /// A hit stopped it ([`Kernel::resume`] runs it again).
    stopped: bool,
}

/// The simulated machine. See the module docs.
pub struct SimKernel {
    cpus: Vec<SimCpu>,
    tasks: BTreeMap<Pid, SimTask>,
    /// Kept after exit, so late hit records still find their pid.
    threads: HashMap<Tid, SimThread>,
    next_pid: Pid,
    next_tid: Tid,
    clock_ns: u64,
    ends: Vec<TaskEnd>,
    /// Hits per token since the last `take_counts` (every task and CPU).
    counts: BTreeMap<Token, u64>,
    /// Tasks switched in since the last `take_ran` (each once: `SimTask::ran`).
    ran: Vec<Pid>,
}

impl SimKernel {
    /// A machine with `cpus` CPUs, every one idle with its debug registers
    /// reset.
    pub fn new(cpus: u32) -> Self {
        let cpus = (0..cpus)
            .map(|cpu| {
                let mut state = CpuDebugState::new(cpu);
                let mut regs = RegisterFile::RESET;
                state.reset(&mut regs);
                SimCpu { state, regs, ring: Box::new(HitRing::new()), running: None }
            })
            .collect();
        SimKernel {
            cpus,
            tasks: BTreeMap::new(),
            threads: HashMap::new(),
            next_pid: FIRST_PID,
            next_tid: 1,
            clock_ns: 0,
            ends: Vec::new(),
            counts: BTreeMap::new(),
            ran: Vec::new(),
        }
    }

    /// A new process owned by `uid`, with one thread, on no CPU. Like a
    /// fork or spawn, it starts with no breakpoints. Returns its pid.
    pub fn spawn(&mut self, uid: Uid) -> Pid {
        let pid = self.next_pid;
        self.next_pid += 1;
        self.tasks.insert(pid, SimTask::new(uid));
        self.add_thread(pid);
        pid
    }

    /// A new process of `uid` that gets the pid of an exited one, as a
    /// kernel that recycles pids would hand it out (its exit may still be
    /// queued for the server). Starts with no breakpoints and new threads.
    pub fn spawn_reusing(&mut self, pid: Pid, uid: Uid) -> Result<Pid, SimError> {
        match self.tasks.get(&pid) {
            Some(t) if !t.alive => {}
            _ => return Err(SimError::NoSuchTask(pid)),
        }
        self.tasks.insert(pid, SimTask::new(uid));
        self.add_thread(pid);
        Ok(pid)
    }

    /// A new thread in `pid`. It follows the task's plan.
    pub fn spawn_thread(&mut self, pid: Pid) -> Result<Tid, SimError> {
        match self.tasks.get(&pid) {
            Some(t) if t.alive => Ok(self.add_thread(pid)),
            _ => Err(SimError::NoSuchTask(pid)),
        }
    }

    fn add_thread(&mut self, pid: Pid) -> Tid {
        let tid = self.next_tid;
        self.next_tid += 1;
        let pc = FIRST_PC + tid * 0x1000;
        self.threads.insert(tid, SimThread { pid, cpu: None, exec: ExecState::default(), pc, stopped: false });
        if let Some(task) = self.tasks.get_mut(&pid) {
            task.threads.push(tid);
        }
        tid
    }

    /// The threads of `pid`, first one first.
    pub fn threads(&self, pid: Pid) -> &[Tid] {
        self.tasks.get(&pid).map_or(&[], |t| &t.threads)
    }

    /// The first thread of `pid`.
    pub fn main_thread(&self, pid: Pid) -> Result<Tid, SimError> {
        self.threads(pid).first().copied().ok_or(SimError::NoSuchTask(pid))
    }

    /// Context switch on `cpu` to `next` (None: idle). A thread running
    /// on another CPU is switched out there first. A stopped thread cannot
    /// be picked ([`SimError::Stopped`]).
    pub fn switch(&mut self, cpu: CpuId, next: Option<Tid>) -> Result<(), SimError> {
        if cpu as usize >= self.cpus.len() {
            return Err(SimError::NoSuchCpu(cpu));
        }
        if let Some(tid) = next {
            let thread = self.threads.get(&tid).ok_or(SimError::NoSuchThread(tid))?;
            if !self.tasks.get(&thread.pid).is_some_and(|t| t.alive) {
                return Err(SimError::Exited(tid));
            }
            if thread.stopped {
                return Err(SimError::Stopped(tid));
            }
            if let Some(other) = thread.cpu.filter(|&c| c != cpu) {
                self.switch(other, None)?;
            }
        }
        let prev = self.cpus.get(cpu as usize).and_then(|c| c.running);
        if let Some(prev) = prev.and_then(|p| self.threads.get_mut(&p)) {
            prev.cpu = None;
        }
        let plan = next.and_then(|tid| self.plan_of(tid)).copied();
        if let Some(t) = next.and_then(|tid| self.threads.get_mut(&tid)) {
            t.cpu = Some(cpu);
            let pid = t.pid;
            self.note_ran(pid);
        }
        if let Some(c) = self.cpus.get_mut(cpu as usize) {
            c.running = next;
            c.state.switch_to(&mut c.regs, plan.as_ref());
        }
        Ok(())
    }

    /// Switch every CPU to idle.
    pub fn idle_all(&mut self) {
        for cpu in 0..self.cpu_count() {
            let _ = self.switch(cpu, None);
        }
    }

    fn plan_of(&self, tid: Tid) -> Option<&ContextPlan> {
        let pid = self.threads.get(&tid)?.pid;
        self.tasks.get(&pid).map(|t| &t.plan)
    }

    /// The thread on `cpu`.
    pub fn running(&self, cpu: CpuId) -> Option<Tid> {
        self.cpus.get(cpu as usize).and_then(|c| c.running)
    }

    /// Whether a hit stopped `tid` (and it was not resumed since).
    pub fn is_stopped(&self, tid: Tid) -> bool {
        self.threads.get(&tid).is_some_and(|t| t.stopped)
    }

    /// Every stopped thread, in tid order.
    pub fn stopped_threads(&self) -> Vec<Tid> {
        let mut v: Vec<Tid> = self.threads.iter().filter(|(_, t)| t.stopped).map(|(&tid, _)| tid).collect();
        v.sort_unstable();
        v
    }

    /// The `HitRecord::context` the kernel gives thread `tid`'s hits.
    pub fn context_of(&self, tid: Tid) -> Option<u64> {
        self.threads.get(&tid).map(|t| hit_context(t.pid, tid))
    }

    /// Thread `tid` runs one user-mode instruction that makes `access`.
    /// Returns the #DB exceptions the CPU raised ([`Step::stopped`]: a hit
    /// stopped the thread, which left its CPU).
    /// Returns the #DB exceptions the CPU raised. A data access to the
    /// kernel half faults (#PF, the access never completes, so no data
    /// breakpoint traps): [`SimError::PageFault`].
    pub fn run(&mut self, tid: Tid, access: MemAccess) -> Result<Step, SimError> {
        self.run_in_mode(tid, access, Mode::User)
    }

    /// Thread `tid` is in the kernel, which makes `access` on its behalf
    /// (e.g. a syscall copying a user buffer): hits carry the kernel-mode
    /// flag.
    pub fn run_kernel(&mut self, tid: Tid, access: MemAccess) -> Result<Step, SimError> {
        self.run_in_mode(tid, access, Mode::Kernel)
    }

    /// Thread `tid` is in the kernel, running the kernel instruction at
    /// `ip` (kernel half), which makes `access` at CPL 0: hits carry the
    /// kernel-mode flag and `ip` — the instruction after it for a data
    /// trap, as the CPU reports it (`ip + 4` here), the instruction itself
    /// for `MemAccess::exec(ip)`. The thread's user code position does not
    /// move. Whether such a hit counts is hwbpd's decision (only for
    /// breakpoints with `kernel`): the debug registers fire at any CPL.
    pub fn run_kernel_at(&mut self, tid: Tid, ip: u64, access: MemAccess) -> Result<Step, SimError> {
        if ip < KERNEL_START {
            return Err(SimError::NotKernelCode(ip));
        }
        self.run_in_mode(tid, access, Mode::KernelAt(ip))
    }

    /// Convenience: switch `tid` onto `cpu` if it is not there, then run.
    pub fn run_on(&mut self, cpu: CpuId, tid: Tid, access: MemAccess) -> Result<Step, SimError> {
        if self.running(cpu) != Some(tid) {
            self.switch(cpu, Some(tid))?;
        }
        self.run(tid, access)
    }

    fn run_in_mode(&mut self, tid: Tid, access: MemAccess, mode: Mode) -> Result<Step, SimError> {
        let thread = self.threads.get_mut(&tid).ok_or(SimError::NoSuchThread(tid))?;
        if thread.stopped {
            return Err(SimError::Stopped(tid));
        }
        let cpu = thread.cpu.ok_or(SimError::NotRunning(tid))?;
        let user_mode = mode == Mode::User;
        if user_mode && access.kind != AccessKind::Exec && access.addr.saturating_add(access.size.max(1) - 1) >= USER_END {
            // The page walk refuses CPL 3 before the access completes.
            return Err(SimError::PageFault(access.addr));
        }
        // Exec faults report the instruction itself; data traps the next one.
        let rip = match (access.kind, mode) {
            (AccessKind::Exec, Mode::KernelAt(_)) => access.addr,
            (_, Mode::KernelAt(ip)) => ip.wrapping_add(INSTRUCTION_BYTES),
            (AccessKind::Exec, _) => {
                thread.pc = access.addr.wrapping_add(1);
                access.addr
            }
            _ => {
                thread.pc = thread.pc.wrapping_add(INSTRUCTION_BYTES);
                thread.pc
            }
        };
        let mut exec = thread.exec;
        let context = hit_context(thread.pid, tid);
        let info = TrapInfo { rip, user_mode, context, timestamp: self.clock_ns };
        let counts = &mut self.counts;
        let c = self.cpus.get_mut(cpu as usize).ok_or(SimError::NoSuchCpu(cpu))?;
        let SimCpu { state, regs, ring, .. } = c;
        let step = exec.run(regs, &access, |regs, _phase: Phase| {
            // SAFETY: this struct is the only producer on the CPU's ring
            // (its "#DB handler"), and nothing runs concurrently with it.
            let verdict = unsafe { state.handle_debug_exception(regs, &**ring, &info) };
            // The patch's counters: every slot that fired, its record
            // queued or dropped.
            for slot in Slot::ALL {
                if verdict.hits & (1 << slot.index()) != 0
                    && let Some(loaded) = state.loaded().slot(slot)
                {
                    *counts.entry(loaded.token).or_insert(0) += 1;
                }
            }
            // The patch stops the thread before it returns to user mode
            // when the handler says so (a user-mode hit on a stopping piece
            // whose records were all queued).
            Handled { resume_flag: verdict.set_resume_flag, stop: verdict.stop }
        });
        if let Some(t) = self.threads.get_mut(&tid) {
            t.exec = exec;
            t.stopped = step.stopped;
        }
        if step.stopped {
            // It cannot run: the CPU goes on without it.
            self.switch(cpu, None)?;
        }
        Ok(step)
    }

    /// Task `pid` exits: its threads leave their CPUs (a switch away, so
    /// their pieces are disarmed) and, if the server follows it, the exit
    /// is queued for the server.
    pub fn exit(&mut self, pid: Pid) -> Result<(), SimError> {
        let task = self.tasks.get_mut(&pid).filter(|t| t.alive).ok_or(SimError::NoSuchTask(pid))?;
        task.alive = false;
        let threads = task.threads.clone();
        for tid in &threads {
            // A stopped thread dies too (an exit kills every thread).
            if let Some(t) = self.threads.get_mut(tid) {
                t.stopped = false;
            }
        }
        for tid in threads {
            if let Some(cpu) = self.threads.get(&tid).and_then(|t| t.cpu) {
                self.switch(cpu, None)?;
            }
        }
        self.end_plan(pid, EndReason::Exit);
        Ok(())
    }

    /// A thread of `pid` changes its effective uid to `uid` (a set-uid
    /// exec, `setresuid`): as the patch does, the task's plan is dropped
    /// from every thread whoever armed it, and the server (if it follows
    /// the task) is told; the task runs on, unwatched until re-armed.
    pub fn set_euid(&mut self, pid: Pid, uid: Uid) -> Result<(), SimError> {
        let task = self.tasks.get_mut(&pid).filter(|t| t.alive).ok_or(SimError::NoSuchTask(pid))?;
        let changed = task.uid != uid;
        task.uid = uid;
        if changed {
            self.end_plan(pid, EndReason::Identity);
        }
        Ok(())
    }

    /// The kernel ends `pid`'s plan: every thread loses it at once, and one
    /// end is queued if the server followed the task.
    fn end_plan(&mut self, pid: Pid, reason: EndReason) {
        let Some(task) = self.tasks.get_mut(&pid) else { return };
        task.plan = ContextPlan::EMPTY;
        let attached = std::mem::replace(&mut task.attached, false);
        if attached {
            task.ending = true;
            self.ends.push(TaskEnd { pid, reason });
        }
        self.reload_task(pid);
    }

    fn note_ran(&mut self, pid: Pid) {
        if let Some(task) = self.tasks.get_mut(&pid)
            && !std::mem::replace(&mut task.ran, true)
        {
            self.ran.push(pid);
        }
    }

    /// Give every thread of `pid` its current plan, loading it on the CPU
    /// of each thread that runs. Per thread, as the patch's `pid-<pid>`
    /// write stops each thread of the process while its plan changes: a
    /// plan change costs the simulation what it costs the kernel.
    fn reload_task(&mut self, pid: Pid) {
        let Some(task) = self.tasks.get(&pid) else { return };
        let plan = task.plan;
        for tid in &task.threads {
            let Some(cpu) = self.threads.get(tid).and_then(|t| t.cpu) else { continue };
            if let Some(c) = self.cpus.get_mut(cpu as usize) {
                c.state.reload(&mut c.regs, Some(&plan));
            }
        }
    }

    /// Whether the server follows `pid` (it set a plan and has not released
    /// it, and the plan did not end).
    pub fn is_attached(&self, pid: Pid) -> bool {
        self.tasks.get(&pid).is_some_and(|t| t.attached)
    }

    /// Hit records the CPUs' rings dropped because they were full (since
    /// start). Their hits are still counted.
    pub fn dropped_records(&self) -> u64 {
        self.cpus.iter().map(|c| c.ring.dropped()).sum()
    }

    /// Move the clock forward.
    pub fn advance(&mut self, ns: u64) {
        self.clock_ns = self.clock_ns.saturating_add(ns);
    }

    /// The registers of `cpu` (a test's view of the hardware).
    pub fn registers(&self, cpu: CpuId) -> Option<&RegisterFile> {
        self.cpus.get(cpu as usize).map(|c| &c.regs)
    }

    /// The kernel-side state of `cpu`: its plan, what it loaded, stats.
    pub fn cpu_state(&self, cpu: CpuId) -> Option<&CpuDebugState> {
        self.cpus.get(cpu as usize).map(|c| &c.state)
    }

    /// The plan the server last set for `pid`.
    pub fn task_plan(&self, pid: Pid) -> Option<&ContextPlan> {
        self.tasks.get(&pid).map(|t| &t.plan)
    }

    /// Enabled slots over all CPUs' DR7, as the hardware sees them.
    pub fn armed_slots(&self) -> u32 {
        self.cpus.iter().map(|c| hwbp_kern::dr7::enabled_slots(c.regs.dr7).count_ones()).sum()
    }

    /// Whether any plan (task or CPU) still holds a piece.
    pub fn any_plan(&self) -> bool {
        self.tasks.values().any(|t| !t.plan.is_empty()) || self.cpus.iter().any(|c| !c.state.plan().is_empty())
    }
}

impl Kernel for SimKernel {
    fn cpu_count(&self) -> u32 {
        self.cpus.len() as u32
    }

    fn task(&self, pid: Pid) -> Result<TaskInfo, KernelError> {
        match self.tasks.get(&pid) {
            Some(t) if t.alive => Ok(TaskInfo { pid, uid: t.uid }),
            _ => Err(KernelError::NoSuchTask(pid)),
        }
    }

    fn set_task_plan(&mut self, pid: Pid, plan: &ContextPlan) -> Result<(), KernelError> {
        // Not before its end is taken, as the patch's ended `pid-<pid>`.
        let task = self.tasks.get_mut(&pid).filter(|t| t.alive && !t.ending).ok_or(KernelError::NoSuchTask(pid))?;
        task.plan = *plan;
        task.attached = true;
        self.reload_task(pid);
        Ok(())
    }

    fn release_task(&mut self, pid: Pid) {
        let Some(task) = self.tasks.get_mut(&pid) else { return };
        task.plan = ContextPlan::EMPTY;
        task.attached = false;
        self.reload_task(pid);
    }

    fn set_cpu_plan(&mut self, cpu: CpuId, plan: &CpuPlan) -> Result<(), KernelError> {
        let running = self.running(cpu);
        let current = running.and_then(|tid| self.plan_of(tid)).copied();
        let c = self.cpus.get_mut(cpu as usize).ok_or(KernelError::NoSuchCpu(cpu))?;
        if let Some(current) = &current {
            hwbp_kern::check_fits(cpu, plan, current).map_err(|_| KernelError::Refused("cpu plan does not fit"))?;
        }
        c.state.set_plan(*plan);
        c.state.reload(&mut c.regs, current.as_ref());
        Ok(())
    }

    fn drain_hits(&mut self, out: &mut [HitRecord]) -> usize {
        let mut n = 0;
        for c in &self.cpus {
            let Some(rest) = out.get_mut(n..) else { break };
            if rest.is_empty() {
                break;
            }
            // SAFETY: this struct is the rings' only consumer, and runs
            // single-threaded with their producer.
            n += unsafe { c.ring.drain(rest) };
        }
        n
    }

    fn context_pid(&self, context: u64) -> Option<Pid> {
        let tid = context & CONTEXT_ID_MASK;
        self.threads.get(&tid).map(|t| t.pid).filter(|&pid| u64::from(pid) == context >> 32)
    }

    fn take_counts(&mut self, out: &mut Vec<PieceCount>) {
        out.extend(std::mem::take(&mut self.counts).into_iter().map(|(token, hits)| PieceCount { token, hits }));
    }

    fn take_ends(&mut self, out: &mut Vec<TaskEnd>) {
        for end in &self.ends {
            if let Some(t) = self.tasks.get_mut(&end.pid) {
                t.ending = false;
            }
        }
        out.append(&mut self.ends);
    }

    fn take_ran(&mut self, out: &mut Vec<Pid>) {
        // A thread still on its CPU runs now, switch or not.
        let running: Vec<Pid> =
            self.cpus.iter().filter_map(|c| c.running.and_then(|tid| self.threads.get(&tid)).map(|t| t.pid)).collect();
        for pid in running {
            self.note_ran(pid);
        }
        for pid in self.ran.drain(..) {
            if let Some(task) = self.tasks.get_mut(&pid) {
                task.ran = false;
            }
            out.push(pid);
        }
    }

    fn now_ns(&self) -> u64 {
        self.clock_ns
    }

    fn resume(&mut self, context: u64) -> Result<(), KernelError> {
        let tid = context & CONTEXT_ID_MASK;
        let alive = |pid: &Pid| self.tasks.get(pid).is_some_and(|t| t.alive);
        match self.threads.get_mut(&tid) {
            Some(t) if t.stopped && u64::from(t.pid) == context >> 32 && alive(&t.pid) => {
                t.stopped = false;
                Ok(())
            }
            _ => Err(KernelError::NotStopped(context)),
        }
    }

    fn disarm_all(&mut self) {
        // As the patch does when the control handle closes: every stopped
        // thread runs again, whatever hwbpd knew of it.
        for t in self.threads.values_mut() {
            t.stopped = false;
        }
        for t in self.tasks.values_mut() {
            t.plan = ContextPlan::EMPTY;
            t.attached = false;
        }
        for c in &mut self.cpus {
            c.state.set_plan(CpuPlan::EMPTY);
            c.state.reload(&mut c.regs, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwbp_kern::{Access, ContextPiece, CpuFilter, Len, Piece};

    fn plan(addr: u64, len: Len, access: Access, token: u64) -> ContextPlan {
        ContextPlan::from_pieces([ContextPiece { piece: Piece::new(addr, len, access).unwrap(), token, cpu: CpuFilter::Any, stop: false }])
            .unwrap()
    }

    fn drain(sim: &mut SimKernel) -> Vec<HitRecord> {
        let mut out = vec![HitRecord::ZERO; 64];
        let n = sim.drain_hits(&mut out);
        out.truncate(n);
        out
    }

    #[test]
    fn a_write_to_a_watched_address_reaches_the_ring_through_the_kernel_handler() {
        let mut sim = SimKernel::new(2);
        let pid = sim.spawn(1000);
        let tid = sim.main_thread(pid).unwrap();
        sim.switch(1, Some(tid)).unwrap();
        sim.set_task_plan(pid, &plan(0x1000, Len::Eight, Access::Write, 77)).unwrap();
        sim.advance(5);
        let step = sim.run(tid, MemAccess::write(0x1004, 4)).unwrap();
        assert_eq!(step.trap, 1);
        sim.run(tid, MemAccess::read(0x1004, 4)).unwrap();
        let hits = drain(&mut sim);
        assert_eq!(hits.len(), 1);
        assert_eq!((hits[0].token, hits[0].cpu, hits[0].context, hits[0].timestamp), (77, 1, (u64::from(pid) << 32) | tid, 5));
        assert_eq!(sim.context_pid(hits[0].context), Some(pid));
        assert_eq!(sim.registers(1).unwrap().dr6, hwbp_kern::dr6::CLEAR, "the handler cleared DR6");
    }

    #[test]
    fn a_task_ran_if_a_thread_was_switched_in_or_is_still_on_a_cpu_and_is_reported_once() {
        let mut sim = SimKernel::new(2);
        let (a, b, c) = (sim.spawn(0), sim.spawn(0), sim.spawn(0));
        let a2 = sim.spawn_thread(a).unwrap();
        let ran = |sim: &mut SimKernel| {
            let mut out = Vec::new();
            sim.take_ran(&mut out);
            out.sort_unstable();
            out
        };
        sim.switch(0, Some(sim.main_thread(a).unwrap())).unwrap();
        sim.switch(1, Some(a2)).unwrap();
        sim.switch(1, Some(sim.main_thread(b).unwrap())).unwrap();
        sim.switch(1, None).unwrap();
        assert_eq!(ran(&mut sim), [a, b], "two threads of a, once; b came and went; c never ran");
        assert_eq!(ran(&mut sim), [a], "a thread of a is still on cpu 0");
        sim.switch(0, None).unwrap();
        assert_eq!(ran(&mut sim), []);
        sim.switch(1, Some(sim.main_thread(c).unwrap())).unwrap();
        assert_eq!(ran(&mut sim), [c]);
    }

    #[test]
    fn a_plan_change_reaches_every_running_thread_of_the_task() {
        let mut sim = SimKernel::new(3);
        let pid = sim.spawn(0);
        let threads = [sim.main_thread(pid).unwrap(), sim.spawn_thread(pid).unwrap(), sim.spawn_thread(pid).unwrap()];
        for (cpu, &tid) in threads.iter().enumerate() {
            sim.switch(cpu as CpuId, Some(tid)).unwrap();
        }
        sim.set_task_plan(pid, &plan(0x1000, Len::Eight, Access::Write, 1)).unwrap();
        assert_eq!(sim.armed_slots(), 3, "loaded on each of the three CPUs at once");
        sim.set_task_plan(pid, &ContextPlan::EMPTY).unwrap();
        assert_eq!(sim.armed_slots(), 0);
    }

    #[test]
    fn the_plan_follows_the_task_onto_any_cpu_and_into_new_threads() {
        let mut sim = SimKernel::new(2);
        let pid = sim.spawn(0);
        sim.set_task_plan(pid, &plan(0x2000, Len::One, Access::Exec, 5)).unwrap();
        let t2 = sim.spawn_thread(pid).unwrap();
        sim.switch(0, Some(t2)).unwrap();
        assert_eq!(sim.run(t2, MemAccess::exec(0x2000)).unwrap().fault, 1);
        sim.switch(1, Some(t2)).unwrap();
        assert_eq!(sim.registers(0).unwrap().dr7, 0, "switched away from cpu 0");
        assert_eq!(sim.run(t2, MemAccess::exec(0x2000)).unwrap().fault, 1);
        let other = sim.spawn(0);
        let o = sim.main_thread(other).unwrap();
        sim.switch(1, Some(o)).unwrap();
        assert_eq!(sim.run(o, MemAccess::exec(0x2000)).unwrap().fault, 0, "other tasks are not watched");
        assert_eq!(drain(&mut sim).len(), 2);
    }

    fn stopping(addr: u64, access: Access, token: u64) -> ContextPlan {
        let len = if access == Access::Exec { Len::One } else { Len::Eight };
        ContextPlan::from_pieces([ContextPiece { piece: Piece::new(addr, len, access).unwrap(), token, cpu: CpuFilter::Any, stop: true }])
            .unwrap()
    }

    #[test]
    fn a_data_hit_on_a_stopping_piece_stops_the_thread_after_the_access_until_resumed() {
        let mut sim = SimKernel::new(2);
        let pid = sim.spawn(1000);
        let tid = sim.main_thread(pid).unwrap();
        let other = sim.spawn_thread(pid).unwrap();
        sim.switch(0, Some(tid)).unwrap();
        sim.set_task_plan(pid, &stopping(0x1000, Access::Write, 7)).unwrap();
        let step = sim.run(tid, MemAccess::write(0x1000, 8)).unwrap();
        assert_eq!((step.trap, step.stopped), (1, true));
        assert!(sim.is_stopped(tid));
        assert_eq!(sim.running(0), None, "it left its CPU");
        assert_eq!(sim.run(tid, MemAccess::read(0x2000, 4)), Err(SimError::Stopped(tid)));
        assert_eq!(sim.switch(1, Some(tid)), Err(SimError::Stopped(tid)), "no switch picks it");
        assert_eq!(sim.run_on(1, tid, MemAccess::read(0x2000, 4)), Err(SimError::Stopped(tid)));
        // The other thread runs on (and the same hit stops it too).
        assert!(sim.run_on(1, other, MemAccess::read(0x2000, 4)).is_ok());
        let hits = drain(&mut sim);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].flags, hwbp_kern::abi::HIT_STOPPED);
        assert_eq!(sim.context_of(tid), Some(hits[0].context));
        assert_eq!(sim.resume(hits[0].context), Ok(()));
        assert!(!sim.is_stopped(tid));
        assert_eq!(sim.resume(hits[0].context), Err(KernelError::NotStopped(hits[0].context)));
        assert_eq!(sim.resume(hits[0].context ^ (1 << 40)), Err(KernelError::NotStopped(hits[0].context ^ (1 << 40))), "another pid");
        assert!(sim.run_on(0, tid, MemAccess::read(0x2000, 4)).is_ok(), "runs again");
    }

    #[test]
    fn an_exec_hit_stops_before_the_instruction_which_runs_once_on_resume() {
        let mut sim = SimKernel::new(1);
        let pid = sim.spawn(1000);
        let tid = sim.main_thread(pid).unwrap();
        sim.switch(0, Some(tid)).unwrap();
        sim.set_task_plan(pid, &stopping(0x40_2000, Access::Exec, 9)).unwrap();
        let step = sim.run(tid, MemAccess::exec(0x40_2000)).unwrap();
        assert_eq!((step.fault, step.stopped), (1, true));
        let context = sim.context_of(tid).unwrap();
        sim.resume(context).unwrap();
        // The instruction runs now, RF set by the handler: no second hit.
        let step = sim.run_on(0, tid, MemAccess::exec(0x40_2000)).unwrap();
        assert_eq!(step, Step::default());
        assert_eq!(drain(&mut sim).len(), 1);
        assert_eq!(counts(&mut sim), [PieceCount { token: 9, hits: 1 }]);
        // The next execution hits and stops again.
        assert!(sim.run(tid, MemAccess::exec(0x40_2000)).unwrap().stopped);
    }

    #[test]
    fn a_kernel_mode_hit_or_a_counting_piece_never_stops() {
        let mut sim = SimKernel::new(1);
        let pid = sim.spawn(1000);
        let tid = sim.main_thread(pid).unwrap();
        sim.switch(0, Some(tid)).unwrap();
        sim.set_task_plan(pid, &stopping(0x1000, Access::Write, 7)).unwrap();
        assert!(!sim.run_kernel(tid, MemAccess::write(0x1000, 8)).unwrap().stopped);
        sim.set_task_plan(pid, &plan(0x1000, Len::Eight, Access::Write, 8)).unwrap();
        assert!(!sim.run(tid, MemAccess::write(0x1000, 8)).unwrap().stopped);
        assert!(sim.stopped_threads().is_empty());
    }

    #[test]
    fn disarm_all_resumes_every_stopped_thread_as_the_kernel_does_when_hwbpd_dies() {
        let mut sim = SimKernel::new(2);
        let pid = sim.spawn(1000);
        let t1 = sim.main_thread(pid).unwrap();
        let t2 = sim.spawn_thread(pid).unwrap();
        sim.set_task_plan(pid, &stopping(0x1000, Access::Write, 7)).unwrap();
        sim.run_on(0, t1, MemAccess::write(0x1000, 8)).unwrap();
        sim.run_on(1, t2, MemAccess::write(0x1000, 8)).unwrap();
        assert_eq!(sim.stopped_threads(), [t1, t2]);
        sim.disarm_all();
        assert!(sim.stopped_threads().is_empty());
        assert!(sim.run_on(0, t1, MemAccess::write(0x1000, 8)).is_ok());
    }

    #[test]
    fn exit_disarms_and_is_reported_once() {
        let mut sim = SimKernel::new(1);
        let pid = sim.spawn(0);
        let tid = sim.main_thread(pid).unwrap();
        sim.switch(0, Some(tid)).unwrap();
        sim.set_task_plan(pid, &plan(0x3000, Len::Four, Access::ReadWrite, 1)).unwrap();
        assert_eq!(sim.armed_slots(), 1);
        sim.exit(pid).unwrap();
        assert_eq!(sim.armed_slots(), 0);
        assert_eq!(sim.task(pid), Err(KernelError::NoSuchTask(pid)));
        let mut ends = Vec::new();
        sim.take_ends(&mut ends);
        sim.take_ends(&mut ends);
        assert_eq!(ends, [TaskEnd { pid, reason: EndReason::Exit }]);
        assert_eq!(sim.run(tid, MemAccess::read(0x3000, 4)), Err(SimError::NotRunning(tid)));
    }

    #[test]
    fn kernel_code_hits_carry_its_ip_and_user_code_cannot_touch_the_kernel_half() {
        let mut sim = SimKernel::new(1);
        let pid = sim.spawn(0);
        let tid = sim.main_thread(pid).unwrap();
        sim.switch(0, Some(tid)).unwrap();
        let k = 0xffff_8000_0010_0000;
        let piece = |addr, len, access| hwbp_kern::plan::CpuPiece { piece: Piece::new(addr, len, access).unwrap(), token: addr };
        let cpu_plan = CpuPlan::from_pieces([piece(k, Len::Eight, Access::ReadWrite), piece(k + 0x40, Len::One, Access::Exec)]).unwrap();
        sim.set_cpu_plan(0, &cpu_plan).unwrap();
        let ip = 0xffff_8000_0001_2340;
        assert_eq!(sim.run_kernel_at(tid, ip, MemAccess::write(k + 4, 4)).unwrap().trap, 1);
        assert_eq!(sim.run_kernel_at(tid, k + 0x40, MemAccess::exec(k + 0x40)).unwrap().fault, 2);
        let hits = drain(&mut sim);
        assert_eq!(hits.iter().map(|h| (h.rip, h.token, h.flags & hwbp_kern::abi::HIT_KERNEL_MODE != 0)).collect::<Vec<_>>(), [(ip + 4, k, true), (k + 0x40, k + 0x40, true)]);
        // CPL 3 cannot complete a kernel-half access: #PF, no trap, no count.
        assert_eq!(sim.run(tid, MemAccess::read(k, 8)), Err(SimError::PageFault(k)));
        assert_eq!(sim.run(tid, MemAccess::write(USER_END - 4, 8)), Err(SimError::PageFault(USER_END - 4)));
        assert_eq!(counts(&mut sim), [PieceCount { token: k, hits: 1 }, PieceCount { token: k + 0x40, hits: 1 }]);
        assert!(drain(&mut sim).is_empty());
        assert_eq!(sim.run_kernel_at(tid, 0x40_1000, MemAccess::write(k, 8)), Err(SimError::NotKernelCode(0x40_1000)));
        // The kernel's instructions did not move the thread's user code.
        sim.set_task_plan(pid, &plan(0x1000, Len::Eight, Access::Write, 9)).unwrap();
        sim.run(tid, MemAccess::write(0x1000, 8)).unwrap();
        assert_eq!(drain(&mut sim)[0].rip, FIRST_PC + tid * 0x1000 + INSTRUCTION_BYTES);
    }

    #[test]
    fn disarm_all_clears_every_register() {
        let mut sim = SimKernel::new(2);
        let pid = sim.spawn(0);
        let tid = sim.main_thread(pid).unwrap();
        sim.switch(0, Some(tid)).unwrap();
        sim.set_task_plan(pid, &plan(0x3000, Len::Four, Access::ReadWrite, 1)).unwrap();
        let cpu_plan = CpuPlan::from_pieces([hwbp_kern::plan::CpuPiece {
            piece: Piece::new(0x5000, Len::Eight, Access::Write).unwrap(),
            token: 2,
        }])
        .unwrap();
        sim.set_cpu_plan(1, &cpu_plan).unwrap();
        assert_eq!(sim.armed_slots(), 2);
        sim.disarm_all();
        assert_eq!(sim.armed_slots(), 0);
        assert!(!sim.any_plan());
    }

    fn counts(sim: &mut SimKernel) -> Vec<PieceCount> {
        let mut out = Vec::new();
        sim.take_counts(&mut out);
        out
    }

    #[test]
    fn a_flood_drops_records_but_never_a_count() {
        let mut sim = SimKernel::new(1);
        let pid = sim.spawn(0);
        let tid = sim.main_thread(pid).unwrap();
        sim.switch(0, Some(tid)).unwrap();
        sim.set_task_plan(pid, &plan(0x1000, Len::Eight, Access::Write, 9)).unwrap();
        let n = CPU_RING_RECORDS as u64 + 1000;
        for _ in 0..n {
            sim.run(tid, MemAccess::write(0x1000, 8)).unwrap();
        }
        assert_eq!(sim.dropped_records(), 1000);
        assert_eq!(counts(&mut sim), [PieceCount { token: 9, hits: n }]);
        assert!(counts(&mut sim).is_empty(), "deltas: read once");
    }

    #[test]
    fn an_identity_change_ends_the_plan_of_every_thread_and_is_reported() {
        let mut sim = SimKernel::new(2);
        let pid = sim.spawn(1000);
        let t1 = sim.main_thread(pid).unwrap();
        let t2 = sim.spawn_thread(pid).unwrap();
        sim.switch(0, Some(t1)).unwrap();
        sim.switch(1, Some(t2)).unwrap();
        sim.set_task_plan(pid, &plan(0x1000, Len::Four, Access::Write, 3)).unwrap();
        assert_eq!(sim.armed_slots(), 2);
        sim.set_euid(pid, 0).unwrap();
        assert_eq!(sim.armed_slots(), 0, "dropped at once on both CPUs");
        assert_eq!(sim.task(pid), Ok(TaskInfo { pid, uid: 0 }), "the task runs on as its new uid");
        assert_eq!(
            sim.set_task_plan(pid, &plan(0x1000, Len::Four, Access::Write, 3)),
            Err(KernelError::NoSuchTask(pid)),
            "not through the ended plan before its end is taken"
        );
        let mut ends = Vec::new();
        sim.take_ends(&mut ends);
        assert_eq!(ends, [TaskEnd { pid, reason: EndReason::Identity }]);
        assert!(!sim.is_attached(pid));
        assert_eq!(
            sim.set_task_plan(pid, &plan(0x1000, Len::Four, Access::Write, 3)),
            Ok(()),
            "after the end was taken, the task may be armed again"
        );
        sim.release_task(pid);
        sim.set_euid(pid, 0).unwrap();
        sim.take_ends(&mut ends);
        assert_eq!(ends.len(), 1, "no change, no event");
        // Armed again, by whoever decides to.
        sim.set_task_plan(pid, &plan(0x1000, Len::Four, Access::Write, 3)).unwrap();
        assert_eq!(sim.run(t1, MemAccess::write(0x1000, 4)).unwrap().trap, 1);
    }

    #[test]
    fn only_a_followed_task_reports_its_end_and_a_reused_pid_starts_unfollowed() {
        let mut sim = SimKernel::new(1);
        let a = sim.spawn(0);
        let b = sim.spawn(0);
        sim.set_task_plan(a, &ContextPlan::EMPTY).unwrap();
        assert!(sim.is_attached(a), "an empty plan follows the task too");
        sim.exit(a).unwrap();
        sim.exit(b).unwrap();
        let mut ends = Vec::new();
        sim.take_ends(&mut ends);
        assert_eq!(ends, [TaskEnd { pid: a, reason: EndReason::Exit }]);
        sim.spawn_reusing(a, 1000).unwrap();
        assert!(!sim.is_attached(a));
        let c = sim.spawn(0);
        sim.set_task_plan(c, &ContextPlan::EMPTY).unwrap();
        sim.release_task(c);
        sim.exit(c).unwrap();
        sim.take_ends(&mut ends);
        assert_eq!(ends.len(), 1, "a released task is not followed");
    }
}
