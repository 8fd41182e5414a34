//! What the stub debugs: the [`Target`] trait the command layer drives,
//! and the types it speaks in. The command layer knows nothing of hwbp or
//! of how a target runs; a target knows nothing of packets.
//!
//! Implementations: [`crate::sim::SimTarget`] (the host's simulated task).
//! A Redox process target would read registers and memory through the
//! `proc:` scheme and take its hardware points from [`crate::hw`] over
//! `libhwbp::RedoxTransport`.

use core::fmt;

use crate::regs::Amd64Regs;

/// A thread id as gdb sees it (positive).
pub type ThreadId = u64;

/// The `Z`/`z` packet types this stub knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PointKind {
    /// `Z0`: a software breakpoint (never served here: gdb falls back to
    /// writing `int3` itself).
    Software,
    /// `Z1`: a hardware execute breakpoint.
    Hardware,
    /// `Z2`: a write watchpoint.
    Write,
    /// `Z3`: a read watchpoint.
    Read,
    /// `Z4`: an access (read or write) watchpoint.
    Access,
}

impl PointKind {
    /// The kind of `Z<digit>`.
    pub fn from_digit(d: u8) -> Option<PointKind> {
        Some(match d {
            b'0' => PointKind::Software,
            b'1' => PointKind::Hardware,
            b'2' => PointKind::Write,
            b'3' => PointKind::Read,
            b'4' => PointKind::Access,
            _ => return None,
        })
    }
}

/// One `Z` request: kind, address, and gdb's `kind` field (the length in
/// bytes for watchpoints; 1 for an x86 breakpoint).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Point {
    pub kind: PointKind,
    pub addr: u64,
    pub len: u64,
}

/// Why a point was not inserted or removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PointError {
    /// This kind of point is not served (the reply is empty and gdb
    /// falls back: memory breakpoints for `Z0`, an access watchpoint for
    /// `Z3`).
    Unsupported,
    /// Refused (the reply is an error). `errno` is the contract's errno
    /// when hwbpd refused it: ENOSPC when the debug registers are full.
    Refused { errno: Option<i32>, why: String },
}

/// Which watchpoint triggered, as the stop reply names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchKind {
    /// `watch:` (a write watchpoint).
    Write,
    /// `rwatch:` (a read watchpoint).
    Read,
    /// `awatch:` (an access watchpoint).
    Access,
}

/// Why a thread stopped with SIGTRAP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// A data watchpoint at `addr` (the address gdb asked for) triggered,
    /// after the access.
    Watch { kind: WatchKind, addr: u64 },
    /// A hardware breakpoint, before the instruction.
    HwBreak,
    /// A single step completed.
    Step,
}

/// Signals a stop reply may carry (Linux numbering, which gdb's remote
/// protocol uses).
pub mod signal {
    pub const SIGILL: u8 = 4;
    pub const SIGTRAP: u8 = 5;
    pub const SIGKILL: u8 = 9;
    pub const SIGSEGV: u8 = 11;
}

/// How the target stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// A thread stopped with a signal (SIGTRAP for breakpoints and steps).
    Signal {
        signal: u8,
        thread: ThreadId,
        reason: Option<StopReason>,
    },
    /// The process exited with this status.
    Exited(u8),
    /// The process was ended by a signal.
    Killed(u8),
}

/// How to resume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    Continue,
    Step,
}

/// A target refused a request that is not about points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetError {
    /// Memory that is not mapped.
    Fault { addr: u64 },
    /// The process is gone.
    Exited,
    /// Anything else.
    Other(String),
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetError::Fault { addr } => write!(f, "cannot access memory at {addr:#x}"),
            TargetError::Exited => f.write_str("the process has exited"),
            TargetError::Other(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for TargetError {}

/// A debugged process. Every call is made while the process is stopped
/// (all-stop mode), except [`Target::resume`], which runs it until the
/// next stop.
pub trait Target {
    /// The live threads, first the one that stops are reported for.
    fn threads(&self) -> Vec<ThreadId>;
    /// Why the process is stopped now (the answer to `?`).
    fn current_stop(&self) -> Stop;
    fn read_registers(&mut self, thread: ThreadId) -> Result<Amd64Regs, TargetError>;
    fn write_registers(&mut self, thread: ThreadId, regs: &Amd64Regs) -> Result<(), TargetError>;
    /// Read up to `buf.len()` bytes at `addr`; returns how many could be
    /// read (fewer when the range runs into unmapped memory; an error when
    /// not even the first byte can be read).
    fn read_memory(&mut self, addr: u64, buf: &mut [u8]) -> Result<usize, TargetError>;
    fn write_memory(&mut self, addr: u64, data: &[u8]) -> Result<(), TargetError>;
    fn insert_point(&mut self, point: Point) -> Result<(), PointError>;
    fn remove_point(&mut self, point: Point) -> Result<(), PointError>;
    /// Run until the next stop.
    fn resume(&mut self, how: Resume) -> Result<Stop, TargetError>;
    /// End the process.
    fn kill(&mut self);
    /// Let the process run on without the debugger (points removed).
    fn detach(&mut self);
}
