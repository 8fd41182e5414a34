//! Why a path, event, option or command was refused: [`PathError`].
//!
//! Its own module so that the parsers depend on it in one direction:
//! `event` and `path` both use it, `path` uses `event`, and `event` uses
//! nothing of `path`.

use core::fmt;

/// Why a path, event, option or command was refused. Every variant maps to
/// EINVAL ([`PathError::errno`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathError {
    /// Empty path.
    Empty,
    /// The target is not `task/..`, `cpu/..` or `self`.
    UnknownTarget,
    /// The pid is not a decimal number.
    BadPid,
    /// The CPU is not a decimal number (or `all` where allowed).
    BadCpu,
    /// The event does not start with `mem:`.
    NotMemEvent,
    BadAddress,
    BadLength,
    ZeroLength,
    /// An `x` event with a length other than 8.
    ExecLength,
    /// `addr + len` passes the end of the address space.
    RangeOverflow,
    /// Access letters that are not a set of r, w, x.
    BadAccess,
    /// `r` alone: x86 has no read-only watch.
    ReadOnlyAccess,
    /// `x` together with `r` or `w`.
    ExecWithData,
    /// `?` or `&` with nothing after it.
    EmptyOption,
    UnknownOption(String),
    DuplicateOption(&'static str),
    /// A flag option given a value (`pinned=1`).
    UnexpectedValue(&'static str),
    /// A valued option without `=<n>`, or n not a decimal number.
    BadOptionValue(&'static str),
    /// n outside the option's range.
    OptionOutOfRange { option: &'static str, min: u64, max: u64 },
    /// Characters after a complete path or command.
    TrailingJunk,
    /// A malformed `#pieces=` list in an admitted path.
    BadPieces,
    /// A write that is not valid UTF-8.
    NotUtf8,
    /// An unknown command word.
    UnknownCommand(String),
    /// `modify` without an event.
    MissingEvent,
    /// `stop` on a cpu-wide target: only a task's threads can be stopped.
    StopNeedsTask,
    /// `stop` with `period` above 1: every stop must be reported.
    StopWithPeriod,
    /// `resume` followed by something that is not a decimal thread id.
    BadThreadId,
}

impl PathError {
    /// Always EINVAL: every malformed input is an invalid argument.
    pub const fn errno(&self) -> i32 {
        super::errno::EINVAL
    }

    pub const fn kind(&self) -> super::errno::ErrorKind {
        super::errno::ErrorKind::Invalid
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::Empty => f.write_str("empty path"),
            PathError::UnknownTarget => f.write_str("unknown target (want task/<pid>, task/<pid>/cpu/<n>, cpu/<n>, cpu/all or self)"),
            PathError::BadPid => f.write_str("pid is not a decimal number"),
            PathError::BadCpu => f.write_str("cpu is not a decimal number"),
            PathError::NotMemEvent => f.write_str("event must be mem:<addr>[/<len>][:<access>]"),
            PathError::BadAddress => f.write_str("address is not a 0x-hex or decimal u64"),
            PathError::BadLength => f.write_str("length is not a 0x-hex or decimal u64"),
            PathError::ZeroLength => f.write_str("length must be at least 1"),
            PathError::ExecLength => f.write_str("an x breakpoint has length 8 (one instruction address)"),
            PathError::RangeOverflow => f.write_str("address + length passes the end of the address space"),
            PathError::BadAccess => f.write_str("access must be w, rw or x"),
            PathError::ReadOnlyAccess => f.write_str("x86 has no read-only watchpoint: use rw"),
            PathError::ExecWithData => f.write_str("x cannot be combined with r or w"),
            PathError::EmptyOption => f.write_str("empty option"),
            PathError::UnknownOption(o) => write!(f, "unknown option {o:?}"),
            PathError::DuplicateOption(o) => write!(f, "option {o} given twice"),
            PathError::UnexpectedValue(o) => write!(f, "option {o} takes no value"),
            PathError::BadOptionValue(o) => write!(f, "option {o} needs =<decimal number>"),
            PathError::OptionOutOfRange { option, min, max } => {
                write!(f, "option {option} must be in {min}..={max}")
            }
            PathError::TrailingJunk => f.write_str("unexpected characters after the path"),
            PathError::BadPieces => f.write_str("malformed #pieces= list"),
            PathError::NotUtf8 => f.write_str("not UTF-8"),
            PathError::UnknownCommand(c) => {
                write!(f, "unknown command {c:?} (want enable, disable, reset, modify <event>, resume [<tid>])")
            }
            PathError::MissingEvent => f.write_str("modify needs an event"),
            PathError::StopNeedsTask => f.write_str("stop needs a task target (task/<pid>, task/<pid>/cpu/<n> or self)"),
            PathError::StopWithPeriod => f.write_str("stop reports every hit: period must be 1"),
            PathError::BadThreadId => f.write_str("resume takes a decimal thread id, or nothing (every stopped thread)"),
        }
    }
}

impl std::error::Error for PathError {}

impl From<PathError> for std::io::Error {
    fn from(e: PathError) -> Self {
        std::io::Error::from_raw_os_error(e.errno())
    }
}
