//! Typed engine errors; the errno is derived only at the scheme boundary.

use core::fmt;

/// Redox's errno values (the same numbers as Linux/libc).
pub mod errno {
    pub const ESRCH: i32 = 3;
    pub const EBADF: i32 = 9;
    pub const EINVAL: i32 = 22;
    pub const EMFILE: i32 = 24;
    pub const ENOSPC: i32 = 28;
}

/// Why the engine refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineError {
    /// Malformed request (length, alignment, access, address, period); the
    /// string says which rule. EINVAL.
    Invalid(&'static str),
    /// A pinned breakpoint cannot fit; the string says which limit. ENOSPC.
    NoSpace(&'static str),
    /// The uid's quota of open breakpoints is used up. EMFILE.
    Quota,
    /// The scope names a CPU this machine does not have. ESRCH.
    NoSuchCpu,
    /// No open breakpoint has this id. EBADF.
    NoSuchBreakpoint,
    /// The breakpoint's task has exited; it can be read and closed, not
    /// modified. ESRCH.
    Ended,
}

impl EngineError {
    /// The errno the scheme returns for this error.
    pub fn errno(&self) -> i32 {
        match self {
            EngineError::Invalid(_) => errno::EINVAL,
            EngineError::NoSpace(_) => errno::ENOSPC,
            EngineError::Quota => errno::EMFILE,
            EngineError::NoSuchCpu | EngineError::Ended => errno::ESRCH,
            EngineError::NoSuchBreakpoint => errno::EBADF,
        }
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Invalid(why) => write!(f, "invalid request: {why}"),
            EngineError::NoSpace(why) => write!(f, "no space: {why}"),
            EngineError::Quota => f.write_str("per-uid breakpoint quota reached"),
            EngineError::NoSuchCpu => f.write_str("no such cpu"),
            EngineError::NoSuchBreakpoint => f.write_str("no such breakpoint"),
            EngineError::Ended => f.write_str("the breakpoint's task has exited"),
        }
    }
}

impl std::error::Error for EngineError {}
