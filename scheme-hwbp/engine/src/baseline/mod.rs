//! Reference reimplementations of Linux's breakpoint slot accounting
//! (`kernel/events/hw_breakpoint.c`), as baselines for the benchmark and
//! checked against the same brute-force model as the engine:
//!
//! - [`walk::TaskWalk`]: before 2022. Task breakpoints sit on one global
//!   list; counting a task's slots on a CPU walks the whole list, once per
//!   CPU the breakpoint may run on, both to check and to update per-CPU
//!   histograms of task slot counts.
//! - [`histogram::Histograms`]: Marco Elver's 2022 rework. Task
//!   breakpoints are hashed by task; per-CPU histograms of task slot counts
//!   (`tsk_pinned`) for tasks that have CPU-bound breakpoints, one global
//!   histogram (`tsk_pinned_all`) for tasks that have only CPU-independent
//!   ones, and a histogram of the per-CPU cpu-wide counts (`cpu_pinned`).
//! - [`LoadAccounting`]: this crate's [`crate::load::Load`] behind the
//!   same interface.
//!
//! All three model one breakpoint type with weight 1 per breakpoint, as on
//! x86, and `NUM_SLOTS` slots. They are written from the algorithm's
//! description, not copied.

pub mod histogram;
pub mod walk;

use hwbp_kern::CpuId;

use crate::Pid;
use crate::load::Load;
use crate::request::Scope;

/// Slots per CPU.
pub const SLOTS: u32 = hwbp_kern::NUM_SLOTS as u32;

/// A breakpoint as Linux's accounting sees it: a target task (or none, for
/// a cpu-wide breakpoint) and a CPU (or none: every CPU; only tasks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BpDesc {
    pub task: Option<Pid>,
    pub cpu: Option<CpuId>,
}

impl BpDesc {
    pub fn scope(&self) -> Scope {
        match (self.task, self.cpu) {
            (Some(pid), cpu) => Scope::Task { pid, cpu },
            (None, Some(cpu)) => Scope::Cpu(cpu),
            (None, None) => Scope::AllCpus,
        }
    }
}

/// Handle of a reserved breakpoint (Linux keys by the event pointer).
pub type Handle = u64;

/// The breakpoint does not fit (ENOSPC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoSpace;

/// Reserve and release slots under Linux's constraint rule.
pub trait SlotAccounting {
    /// A `BpDesc` with neither task nor CPU is not valid here (Linux
    /// registers one event per CPU for that).
    fn reserve(&mut self, h: Handle, bp: BpDesc) -> Result<(), NoSpace>;
    /// Release a breakpoint reserved with the same handle and description.
    fn release(&mut self, h: Handle, bp: BpDesc);
}

/// [`Load`] behind [`SlotAccounting`]: counters only, nothing per
/// breakpoint.
#[derive(Clone, Debug)]
pub struct LoadAccounting {
    pub load: Load,
}

impl LoadAccounting {
    pub fn new(cpus: u32) -> Self {
        LoadAccounting { load: Load::new(cpus) }
    }
}

impl SlotAccounting for LoadAccounting {
    fn reserve(&mut self, _h: Handle, bp: BpDesc) -> Result<(), NoSpace> {
        let scope = bp.scope();
        self.load.fits(scope, 1, 1).map_err(|_| NoSpace)?;
        self.load.add(scope, 1, 1);
        Ok(())
    }

    fn release(&mut self, _h: Handle, bp: BpDesc) {
        self.load.remove(bp.scope(), 1, 1);
    }
}
