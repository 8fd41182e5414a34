//! The kernel interface: everything `hwbpd` needs from a kernel, and
//! nothing more. Two backends implement it: the simulated kernel
//! ([`crate::sim::SimKernel`], host) and the Redox backend (written against
//! `kernel-patch/ABI.md`, which encodes plans with `hwbp_kern::abi`).
//!
//! The kernel holds no policy: `hwbpd` hands it finished plans (one
//! [`ContextPlan`] per task, one [`CpuPlan`] per CPU) that already fit, and
//! reads back three things: exact hit counts per piece (what `value` is
//! made of), hit records (what the events streams carry; the kernel may
//! drop some, never a count), and the ends of task plans (exit, identity
//! change). A backend never decides what to arm; it only applies what it is
//! given, at once for tasks and CPUs that are running (so a plan that
//! disarms is in force when the call returns).
//!
//! Stops (contract 7, "Debuggers"): a user-mode hit on a piece with
//! `ContextPiece::stop` stops the thread that hit, and its records carry
//! `HIT_STOPPED` (the kernel stops a thread only when every record of that
//! exception was queued, so a stop is never silent). The thread runs again
//! when `hwbpd` calls [`Kernel::resume`] with the record's `context`, or
//! when the server goes away ([`Kernel::disarm_all`]; on Redox also when
//! the control handle closes).

use core::fmt;
use std::cell::RefCell;
use std::rc::Rc;

use hwbp_kern::abi::HitRecord;
use hwbp_kern::{ContextPlan, CpuId, CpuPlan, Token};

/// A process id, as the kernel numbers processes. All threads of a process
/// share it, and a task plan applies to all of them.
pub type Pid = u32;

/// A user id (0 is root).
pub type Uid = u32;

/// What the kernel knows about a task, for permission checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskInfo {
    pub pid: Pid,
    /// Effective uid of the task.
    pub uid: Uid,
}

/// Hits the kernel counted for one piece (by its token) since the last
/// [`Kernel::take_counts`]: every hit, whether or not its record reached
/// `hwbpd`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PieceCount {
    pub token: Token,
    pub hits: u64,
}

/// Why a task's plan ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The task's last thread exited.
    Exit,
    /// A thread's effective uid or gid changed (a set-uid or set-gid exec,
    /// `setresuid`). The kernel dropped the plan from every thread,
    /// whoever armed it; the task lives on. `hwbpd` ends the breakpoints of
    /// owners other than root and arms the others again.
    Identity,
}

/// A task whose plan the kernel ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskEnd {
    pub pid: Pid,
    pub reason: EndReason,
}

/// Why the kernel refused a request. The scheme maps these to errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelError {
    /// No such task (or it already exited): ESRCH.
    NoSuchTask(Pid),
    /// No such CPU: ESRCH.
    NoSuchCpu(CpuId),
    /// The kernel refused the plan (it did not fit or did not decode): the
    /// server's plans are wrong. EIO.
    Refused(&'static str),
    /// [`Kernel::resume`]: the thread of this `context` is not stopped (it
    /// was resumed already, or it exited): ESRCH.
    NotStopped(u64),
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelError::NoSuchTask(pid) => write!(f, "no task {pid}"),
            KernelError::NoSuchCpu(cpu) => write!(f, "no cpu {cpu}"),
            KernelError::Refused(why) => write!(f, "kernel refused the plan: {why}"),
            KernelError::NotStopped(context) => write!(f, "thread of context {context:#x} is not stopped"),
        }
    }
}

/// The kernel, as `hwbpd` sees it.
pub trait Kernel {
    /// Logical CPUs, numbered `0..cpu_count()`.
    fn cpu_count(&self) -> u32;

    /// The task `pid`, if it exists and has not exited.
    fn task(&self, pid: Pid) -> Result<TaskInfo, KernelError>;

    /// Replace the plan of every thread of `pid`, the ones it creates later
    /// included (an empty plan disarms). In force on every CPU the task runs
    /// on when the call returns. Once the kernel ended the task's plan,
    /// `NoSuchTask` until that end is reported ([`Kernel::take_ends`]);
    /// after it, a plan arms the task afresh if it still exists: never a
    /// later process that got the same pid through an earlier attachment.
    ///
    /// The first call for a task, even with an empty plan, starts following
    /// it: its end is reported until [`Kernel::release_task`].
    fn set_task_plan(&mut self, pid: Pid, plan: &ContextPlan) -> Result<(), KernelError>;

    /// `hwbpd` holds no breakpoint on `pid` any more: disarm its threads
    /// and stop following the task (no end of it will be reported). Until
    /// then the backend follows the task even while its plan is empty (all
    /// its breakpoints disabled or rotated out), so that its exit or
    /// identity change still ends them.
    fn release_task(&mut self, pid: Pid);

    /// Replace the cpu-wide plan of `cpu`. In force when the call returns.
    fn set_cpu_plan(&mut self, cpu: CpuId, plan: &CpuPlan) -> Result<(), KernelError>;

    /// Append the hits the kernel counted since the last call, per piece
    /// token, over every task and CPU plan (pieces removed since included,
    /// and the last counts of plans that ended). Exact: the kernel counts
    /// every hit, however many records it dropped. A count for a piece
    /// that is running may lag by one scheduler tick.
    fn take_counts(&mut self, out: &mut Vec<PieceCount>);

    /// Move up to `out.len()` queued hit records (oldest first, from every
    /// CPU) into `out`; returns how many. Never allocates. The kernel may
    /// have dropped records (its queue was full): they still count (see
    /// [`Kernel::take_counts`]).
    fn drain_hits(&mut self, out: &mut [HitRecord]) -> usize;

    /// The process a hit record's `context` belongs to. Must still answer
    /// for records drained after the task exited.
    fn context_pid(&self, context: u64) -> Option<Pid>;

    /// Append the tasks whose plan ended since the last call, in order.
    /// An end is reported after the hit records queued before it (drain
    /// the records first), and the task's last counts are in the next
    /// [`Kernel::take_counts`].
    fn take_ends(&mut self, out: &mut Vec<TaskEnd>);

    /// Monotonic time in nanoseconds, on the clock hit timestamps use.
    fn now_ns(&self) -> u64;

    /// Run again the thread a hit stopped: `context` is the
    /// `HitRecord::context` of its `HIT_STOPPED` record. `NotStopped` if
    /// that thread is not stopped (resumed already, or exited).
    fn resume(&mut self, context: u64) -> Result<(), KernelError>;

    /// Clear every plan this server set and run again every thread a hit
    /// stopped: nothing stays armed or stopped. Used when the server shuts
    /// down (on Redox the kernel also does both when the server dies: its
    /// control handle closes).
    fn disarm_all(&mut self);
}

macro_rules! forward_kernel {
    ($self_:ident => $inner:expr, $inner_mut:expr) => {
        fn cpu_count(&$self_) -> u32 { $inner.cpu_count() }
        fn task(&$self_, pid: Pid) -> Result<TaskInfo, KernelError> { $inner.task(pid) }
        fn set_task_plan(&mut $self_, pid: Pid, plan: &ContextPlan) -> Result<(), KernelError> {
            $inner_mut.set_task_plan(pid, plan)
        }
        fn release_task(&mut $self_, pid: Pid) { $inner_mut.release_task(pid) }
        fn set_cpu_plan(&mut $self_, cpu: CpuId, plan: &CpuPlan) -> Result<(), KernelError> {
            $inner_mut.set_cpu_plan(cpu, plan)
        }
        fn take_counts(&mut $self_, out: &mut Vec<PieceCount>) { $inner_mut.take_counts(out) }
        fn drain_hits(&mut $self_, out: &mut [HitRecord]) -> usize { $inner_mut.drain_hits(out) }
        fn context_pid(&$self_, context: u64) -> Option<Pid> { $inner.context_pid(context) }
        fn take_ends(&mut $self_, out: &mut Vec<TaskEnd>) { $inner_mut.take_ends(out) }
        fn now_ns(&$self_) -> u64 { $inner.now_ns() }
        fn resume(&mut $self_, context: u64) -> Result<(), KernelError> { $inner_mut.resume(context) }
        fn disarm_all(&mut $self_) { $inner_mut.disarm_all() }
    };
}

/// A borrowed backend: lets a test keep the kernel after the server is
/// dropped, to check what the drop left armed.
impl<K: Kernel + ?Sized> Kernel for &mut K {
    forward_kernel!(self => (**self), (**self));
}

/// A shared backend: the server and the code driving the simulated tasks
/// (the in-process transport, the demo) hold it together.
impl<K: Kernel + ?Sized> Kernel for Rc<RefCell<K>> {
    forward_kernel!(self => self.borrow(), self.borrow_mut());
}

impl<K: Kernel + ?Sized> Kernel for Box<K> {
    forward_kernel!(self => (**self), (**self));
}
