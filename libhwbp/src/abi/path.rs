//! The open path: `<target>/<event>[?<option>[&<option>...]]`.
//!
//! hwbpd sees the path relative to the scheme root (`task/42/mem:0x1000`);
//! clients may also write it with the `/scheme/hwbp/` prefix, which
//! [`strip_scheme_prefix`] removes.
//!
//! Targets: `task/<pid>`, `task/<pid>/cpu/<n>`, `cpu/<n>`, `cpu/all`,
//! `self`; pid and n are decimal. The event is a `mem:` event (see
//! [`super::event`]). Options, each at most once, separated by `&`:
//! `pinned`, `exclusive`, `disabled`, `kernel`, `nosplit`, `stop`,
//! `period=<n>` (n >= 1, default 1), `wakeup=<n>` (n >= 1, default 1),
//! `ring=<n>` (1 <= n <= [`MAX_RING`], default [`DEFAULT_RING`]); values are
//! decimal. Anything else — an unknown or repeated option, an empty option,
//! a value on a flag, a `?` with nothing after it, trailing characters — is
//! EINVAL, and so is `stop` on a cpu-wide target or with `period` above 1
//! (a stopped thread is always reported: [`Options::check_target`]).
//!
//! The canonical form (`Display`) spells the event in full and lists only
//! the options that differ from their defaults, in the order above.
//!
//! The *admitted* form (what hwbpd's `fpath` returns, [`AdmittedPath`])
//! appends `#pieces=<piece>[,<piece>...]`, each piece being
//! `0x<addr>/<len>:<access>`, an aligned range one debug register watches:
//! `task/42/mem:0x1001/6:w?pinned#pieces=0x1001/1:w,0x1002/2:w,0x1004/2:w`.

use core::fmt;
use core::num::{NonZeroU32, NonZeroU64};

pub use super::error::PathError;
use super::event::{parse_decimal, Access, MemEvent};

/// The prefix of every hwbp path in the Redox namespace.
pub const SCHEME_PREFIX: &str = "/scheme/hwbp/";
/// Records an event ring holds unless `ring=` says otherwise.
pub const DEFAULT_RING: u32 = 1024;
/// The largest `ring=` accepted.
pub const MAX_RING: u32 = 1 << 20;
/// Separator between an open path and its admitted pieces.
pub const PIECES_MARK: &str = "#pieces=";

/// Whose accesses a breakpoint watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// `task/<pid>`: every thread of the process, on every CPU.
    Task(u64),
    /// `task/<pid>/cpu/<n>`: the process, only while it runs on CPU n.
    TaskOnCpu { pid: u64, cpu: u32 },
    /// `cpu/<n>`: every task on CPU n (root only).
    Cpu(u32),
    /// `cpu/all`: every task on every CPU (root only).
    AllCpus,
    /// `self`: the calling task.
    SelfTask,
}

impl Target {
    /// Whether the target is cpu-wide (root only).
    pub const fn is_cpu_wide(&self) -> bool {
        matches!(self, Target::Cpu(_) | Target::AllCpus)
    }

    /// Parse the target at the start of `s`; returns it and the rest after
    /// its terminating `/`.
    fn parse_prefix(s: &str) -> Result<(Target, &str), PathError> {
        if let Some(rest) = s.strip_prefix("self/") {
            return Ok((Target::SelfTask, rest));
        }
        if let Some(rest) = s.strip_prefix("cpu/") {
            let (n, rest) = rest.split_once('/').ok_or(PathError::NotMemEvent)?;
            if n == "all" {
                return Ok((Target::AllCpus, rest));
            }
            return Ok((Target::Cpu(parse_cpu(n)?), rest));
        }
        if let Some(rest) = s.strip_prefix("task/") {
            let (pid, rest) = rest.split_once('/').ok_or(PathError::NotMemEvent)?;
            let pid = parse_id(pid).ok_or(PathError::BadPid)?;
            if let Some(rest) = rest.strip_prefix("cpu/") {
                let (n, rest) = rest.split_once('/').ok_or(PathError::NotMemEvent)?;
                return Ok((Target::TaskOnCpu { pid, cpu: parse_cpu(n)? }, rest));
            }
            return Ok((Target::Task(pid), rest));
        }
        Err(PathError::UnknownTarget)
    }
}

fn parse_cpu(s: &str) -> Result<u32, PathError> {
    parse_id(s).map(|n| u32::try_from(n).unwrap_or(u32::MAX)).ok_or(PathError::BadCpu)
}

/// A task or CPU id: decimal digits only. An id too large for its type is
/// well-formed and names nothing that exists, so it becomes the type's
/// largest value, which no task or CPU has: the server answers ESRCH, not
/// EINVAL (contract section 7), however many digits were given.
fn parse_id(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse().unwrap_or(u64::MAX))
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Task(pid) => write!(f, "task/{pid}"),
            Target::TaskOnCpu { pid, cpu } => write!(f, "task/{pid}/cpu/{cpu}"),
            Target::Cpu(n) => write!(f, "cpu/{n}"),
            Target::AllCpus => f.write_str("cpu/all"),
            Target::SelfTask => f.write_str("self"),
        }
    }
}

/// Size of an event ring, in records: 1..=[`MAX_RING`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RingSize(NonZeroU32);

impl RingSize {
    pub const DEFAULT: RingSize = RingSize(NonZeroU32::new(DEFAULT_RING).unwrap());

    pub fn new(records: u64) -> Option<RingSize> {
        if records > u64::from(MAX_RING) {
            return None;
        }
        NonZeroU32::new(u32::try_from(records).ok()?).map(RingSize)
    }

    pub const fn get(self) -> u32 {
        self.0.get()
    }
}

/// The options of a breakpoint, with defaults filled in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Options {
    /// Admitted only if it can always be armed (else ENOSPC).
    pub pinned: bool,
    /// Nothing else shares the CPU's debug registers while armed.
    pub exclusive: bool,
    /// Opened disabled (enable with the `enable` command).
    pub disabled: bool,
    /// A hit record every n-th hit.
    pub period: NonZeroU64,
    /// Readiness once n records are queued.
    pub wakeup: NonZeroU64,
    /// Records the event ring holds.
    pub ring: RingSize,
    /// Also count hits in kernel mode (root only).
    pub kernel: bool,
    /// Refuse (EINVAL) instead of splitting a range that is not one piece.
    pub nosplit: bool,
    /// Each user-mode hit stops the thread that hit (after the access for
    /// data, before the instruction for `x`) until the holder writes
    /// `resume <tid>` or `resume`, or closes the handle (contract 7,
    /// "Debuggers"). Task targets only; every hit is reported, so `period`
    /// must be 1.
    pub stop: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pinned: false,
            exclusive: false,
            disabled: false,
            period: NonZeroU64::MIN,
            wakeup: NonZeroU64::MIN,
            ring: RingSize::DEFAULT,
            kernel: false,
            nosplit: false,
            stop: false,
        }
    }
}

impl Options {
    /// Parse the text after `?` (must be non-empty).
    pub fn parse(s: &str) -> Result<Options, PathError> {
        let mut o = Options::default();
        let mut seen = [false; OPTION_NAMES.len()];
        for item in s.split('&') {
            if item.is_empty() {
                return Err(PathError::EmptyOption);
            }
            let (name, value) = match item.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (item, None),
            };
            let index = OPTION_NAMES
                .iter()
                .position(|&n| n == name)
                .ok_or_else(|| PathError::UnknownOption(name.to_string()))?;
            let name = OPTION_NAMES[index];
            if std::mem::replace(&mut seen[index], true) {
                return Err(PathError::DuplicateOption(name));
            }
            match name {
                "pinned" => o.pinned = flag(name, value)?,
                "exclusive" => o.exclusive = flag(name, value)?,
                "disabled" => o.disabled = flag(name, value)?,
                "kernel" => o.kernel = flag(name, value)?,
                "nosplit" => o.nosplit = flag(name, value)?,
                "stop" => o.stop = flag(name, value)?,
                "period" => o.period = nonzero(name, value)?,
                "wakeup" => o.wakeup = nonzero(name, value)?,
                "ring" => {
                    let n = number(name, value)?;
                    o.ring = RingSize::new(n).ok_or(PathError::OptionOutOfRange {
                        option: name,
                        min: 1,
                        max: u64::from(MAX_RING),
                    })?;
                }
                _ => unreachable!("every name in OPTION_NAMES has an arm"),
            }
        }
        o.check_stop()?;
        Ok(o)
    }

    pub fn is_default(&self) -> bool {
        *self == Options::default()
    }

    /// `stop` reports every hit: with `period` above 1 a thread would stop
    /// with no record saying so (EINVAL, [`PathError::StopWithPeriod`]).
    pub fn check_stop(&self) -> Result<(), PathError> {
        if self.stop && self.period.get() != 1 {
            return Err(PathError::StopWithPeriod);
        }
        Ok(())
    }

    /// Whether these options may be used on `target`: `stop` only on a
    /// task (`task/<pid>`, `task/<pid>/cpu/<n>`, `self`), since only a
    /// thread can be stopped ([`PathError::StopNeedsTask`]); and
    /// [`Options::check_stop`].
    pub fn check_target(&self, target: Target) -> Result<(), PathError> {
        self.check_stop()?;
        if self.stop && target.is_cpu_wide() {
            return Err(PathError::StopNeedsTask);
        }
        Ok(())
    }
}

/// Option names, in canonical order.
pub const OPTION_NAMES: [&str; 9] =
    ["pinned", "exclusive", "disabled", "period", "wakeup", "ring", "kernel", "nosplit", "stop"];

fn flag(name: &'static str, value: Option<&str>) -> Result<bool, PathError> {
    match value {
        None => Ok(true),
        Some(_) => Err(PathError::UnexpectedValue(name)),
    }
}

fn number(name: &'static str, value: Option<&str>) -> Result<u64, PathError> {
    value.and_then(parse_decimal).ok_or(PathError::BadOptionValue(name))
}

fn nonzero(name: &'static str, value: Option<&str>) -> Result<NonZeroU64, PathError> {
    NonZeroU64::new(number(name, value)?).ok_or(PathError::OptionOutOfRange { option: name, min: 1, max: u64::MAX })
}

impl fmt::Display for Options {
    /// The non-default options joined by `&`, without the leading `?`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = Options::default();
        let mut sep = "";
        let mut item = |f: &mut fmt::Formatter<'_>, args: fmt::Arguments<'_>| -> fmt::Result {
            let r = write!(f, "{sep}{args}");
            sep = "&";
            r
        };
        if self.pinned {
            item(f, format_args!("pinned"))?;
        }
        if self.exclusive {
            item(f, format_args!("exclusive"))?;
        }
        if self.disabled {
            item(f, format_args!("disabled"))?;
        }
        if self.period != d.period {
            item(f, format_args!("period={}", self.period))?;
        }
        if self.wakeup != d.wakeup {
            item(f, format_args!("wakeup={}", self.wakeup))?;
        }
        if self.ring != d.ring {
            item(f, format_args!("ring={}", self.ring.get()))?;
        }
        if self.kernel {
            item(f, format_args!("kernel"))?;
        }
        if self.nosplit {
            item(f, format_args!("nosplit"))?;
        }
        if self.stop {
            item(f, format_args!("stop"))?;
        }
        Ok(())
    }
}

/// Parse `<event>[?<options>]` (the tail of a path, and the argument of
/// `modify`). Returns the options only if a `?` was present.
pub fn parse_event_and_options(s: &str) -> Result<(MemEvent, Option<Options>), PathError> {
    match s.split_once('?') {
        Some((ev, opts)) => Ok((parse_event_part(ev)?, Some(Options::parse(opts)?))),
        None => Ok((parse_event_part(s)?, None)),
    }
}

fn parse_event_part(s: &str) -> Result<MemEvent, PathError> {
    if s.contains('#') {
        return Err(PathError::TrailingJunk);
    }
    MemEvent::parse(s)
}

/// Remove the `/scheme/hwbp/` prefix, or a single leading `/`, if present.
pub fn strip_scheme_prefix(path: &str) -> &str {
    path.strip_prefix(SCHEME_PREFIX).or_else(|| path.strip_prefix('/')).unwrap_or(path)
}

/// A complete open path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OpenPath {
    pub target: Target,
    pub event: MemEvent,
    pub options: Options,
}

impl OpenPath {
    /// Parse a path relative to the scheme root, or with the
    /// `/scheme/hwbp/` prefix. An admitted path (with `#pieces=`) is
    /// refused here: use [`AdmittedPath::parse`].
    pub fn parse(path: &str) -> Result<OpenPath, PathError> {
        let s = strip_scheme_prefix(path);
        if s.is_empty() {
            return Err(PathError::Empty);
        }
        let (target, rest) = Target::parse_prefix(s)?;
        let (event, options) = parse_event_and_options(rest)?;
        let options = options.unwrap_or_default();
        options.check_target(target)?;
        Ok(OpenPath { target, event, options })
    }

    /// The path with `/scheme/hwbp/` in front, for `open(2)`.
    pub fn to_scheme_path(&self) -> String {
        format!("{SCHEME_PREFIX}{self}")
    }

    /// The admitted form with these pieces (hwbpd's fpath).
    pub fn with_pieces<'a>(&'a self, pieces: &'a [AdmittedPiece]) -> AdmittedPathRef<'a> {
        AdmittedPathRef { path: self, pieces }
    }
}

impl core::str::FromStr for OpenPath {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OpenPath::parse(s)
    }
}

impl fmt::Display for OpenPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.target, self.event)?;
        if !self.options.is_default() {
            write!(f, "?{}", self.options)?;
        }
        Ok(())
    }
}

/// One aligned range a single debug register watches, as listed in an
/// admitted path.
///
/// Invariants: data pieces have `len` 1, 2, 4 or 8 and `addr % len == 0`;
/// exec pieces have `len == EXEC_LEN` (perf's spelling; the kernel arms
/// them with DR7 LEN 00).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AdmittedPiece {
    addr: u64,
    len: u8,
    access: Access,
}

impl AdmittedPiece {
    pub fn new(addr: u64, len: u64, access: Access) -> Option<AdmittedPiece> {
        let ev = MemEvent::new(addr, len, access).ok()?;
        ev.is_single_piece().then_some(AdmittedPiece { addr, len: len as u8, access })
    }

    pub const fn addr(&self) -> u64 {
        self.addr
    }

    #[allow(clippy::len_without_is_empty, reason = "a piece is never empty (len >= 1)")]
    pub const fn len(&self) -> u64 {
        self.len as u64
    }

    pub const fn access(&self) -> Access {
        self.access
    }

    /// Parse `0x<addr>/<len>:<access>` (as listed in `#pieces=` and in the
    /// listing's `piece` lines).
    pub fn parse(s: &str) -> Result<AdmittedPiece, PathError> {
        let (range, access) = s.split_once(':').ok_or(PathError::BadPieces)?;
        let (addr, len) = range.split_once('/').ok_or(PathError::BadPieces)?;
        if !addr.starts_with("0x") {
            return Err(PathError::BadPieces);
        }
        let addr = super::event::parse_u64(addr).ok_or(PathError::BadPieces)?;
        let len = parse_decimal(len).ok_or(PathError::BadPieces)?;
        let access = Access::parse(access).map_err(|_| PathError::BadPieces)?;
        AdmittedPiece::new(addr, len, access).ok_or(PathError::BadPieces)
    }
}

impl fmt::Display for AdmittedPiece {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}/{}:{}", self.addr, self.len, self.access)
    }
}

/// An open path and the pieces hwbpd armed for it: what `fpath` returns.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AdmittedPath {
    pub path: OpenPath,
    pub pieces: Vec<AdmittedPiece>,
}

impl AdmittedPath {
    /// Parse `<open path>#pieces=<piece>[,<piece>...]` (at least one piece).
    /// The open path part alone reopens the same breakpoint.
    pub fn parse(s: &str) -> Result<AdmittedPath, PathError> {
        let (path, pieces) = s.split_once(PIECES_MARK).ok_or(PathError::BadPieces)?;
        let path = OpenPath::parse(path)?;
        let pieces = pieces.split(',').map(AdmittedPiece::parse).collect::<Result<Vec<_>, _>>()?;
        Ok(AdmittedPath { path, pieces })
    }
}

impl AdmittedPath {
    /// Parse an event stream's `fpath`: its breakpoint's admitted path,
    /// then `#` and the name `dup` was given (`#events-v2`, or `#events`
    /// for a stream of version-1 records). hwbpd keeps the pieces a
    /// breakpoint was admitted with, so this parses even after the
    /// breakpoint handle was closed.
    pub fn parse_stream(s: &str) -> Result<AdmittedPath, PathError> {
        let admitted = s
            .strip_suffix(EVENTS_MARK)
            .or_else(|| s.strip_suffix(EVENTS_V1_MARK))
            .ok_or(PathError::BadPieces)?;
        AdmittedPath::parse(admitted)
    }
}

/// What an event stream's `fpath` adds to its breakpoint's admitted path
/// (a stream opened with [`super::EVENTS_DUP_NAME`]).
pub const EVENTS_MARK: &str = "#events-v2";
/// The same for a stream of version-1 records ([`super::EVENTS_V1_DUP_NAME`]).
pub const EVENTS_V1_MARK: &str = "#events";

impl fmt::Display for AdmittedPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.path.with_pieces(&self.pieces).fmt(f)
    }
}

/// Borrowed form of [`AdmittedPath`] for formatting without allocation.
pub struct AdmittedPathRef<'a> {
    path: &'a OpenPath,
    pieces: &'a [AdmittedPiece],
}

impl fmt::Display for AdmittedPathRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{PIECES_MARK}", self.path)?;
        for (i, p) in self.pieces.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}
