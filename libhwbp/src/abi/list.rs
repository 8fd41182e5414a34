//! The listing: `/scheme/hwbp/list`, a read-only view of the breakpoints
//! the caller may see (issue 14). hwbpd produces it with these types;
//! clients parse it with [`Listing::parse`].
//!
//! Opening `list` (or `list?from=<id>`) on the scheme root takes a
//! snapshot: text, one record per line, made when the handle is opened and
//! never changed after. Reads return its bytes at the file offset (the
//! handle is positioned: `lseek`, `pread` and `fstat`'s size work as on a
//! file); past the end a read returns 0. Root sees every breakpoint; any
//! other uid only the breakpoints it owns.
//!
//! Version 1, every line `<type>( <key>=<value>)*\n`, one space between
//! fields, no value holds a space:
//!
//! ```text
//! hwbp-list version=1 uid=<caller> cpus=<n> now_ns=<t> from=<id>
//! bp id=<id> owner=<uid> path=<canonical open path> state=live|ended|closed enabled=yes|no value=<n> lost=<n> time_enabled_ns=<n> time_running_ns=<n>
//! piece bp=<id> piece=0x<addr>/<len>:<w|rw|x> place=<placement>
//! end entries=<n> next=<id>|none
//! ```
//!
//! - the header comes first; a parser refuses any other `version`;
//! - one `bp` line per breakpoint, in increasing id order (ids >= `from`),
//!   each followed by its `piece` lines (the aligned pieces it was split
//!   into, in address order);
//! - `place`: `dr<k>@cpu<a>[-<b>]`, comma-separated — the debug register
//!   the piece takes on those CPUs (for a task target: whenever one of the
//!   task's threads runs there; the kernel computes it with the same
//!   composition function); `waiting` — enabled but not armed now
//!   (multiplexed out, its turn comes with the rotation); `off` — not
//!   armed because disabled, ended or closed;
//! - `end` comes last: `entries` counts the `bp` lines; `next` is the id to
//!   open `list?from=<id>` with for the rest (a snapshot holds at most
//!   [`LIST_PAGE_BYTES`] of entries, at least one), or `none`.
//!
//! Additions only within a version: a parser ignores record types and keys
//! it does not know; anything else changes `version`.

use core::fmt;

use super::error::PathError;
use super::event::parse_decimal;
use super::path::{strip_scheme_prefix, AdmittedPiece, OpenPath};
use super::record::CountRecord;
use super::SLOTS_PER_CPU;

/// The name of the listing under the scheme root (`/scheme/hwbp/list`).
pub const LIST_NAME: &str = "list";
/// The format version hwbpd writes and this parser reads.
pub const LIST_VERSION: u32 = 1;
/// Bytes of entries one snapshot holds at most (it always holds at least
/// one entry; the header and the end line come on top).
pub const LIST_PAGE_BYTES: usize = 32 * 1024;
/// Listing handles a non-root uid may hold open at once (EMFILE beyond;
/// root: no limit). Bounds what listings cost hwbpd per uid.
pub const LIST_HANDLES_PER_UID: usize = 4;
/// The most bytes one breakpoint's lines take with `cpus` CPUs (a `bp`
/// line and at most 4 `piece` lines, each placement at most one span per
/// CPU).
pub const fn list_entry_bound(cpus: u32) -> usize {
    LIST_ENTRY_BYTES + SLOTS_PER_CPU * (LIST_PIECE_BYTES + LIST_SPAN_BYTES * cpus as usize)
}
/// The most bytes of one listing snapshot with `cpus` CPUs: entries up to
/// [`LIST_PAGE_BYTES`] (or one entry, if longer), plus the header and the
/// end line.
pub const fn list_snapshot_bound(cpus: u32) -> usize {
    let entry = list_entry_bound(cpus);
    (if entry > LIST_PAGE_BYTES { entry } else { LIST_PAGE_BYTES }) + LIST_FRAME_BYTES
}
/// Most bytes of a `bp` line (every field at its longest).
const LIST_ENTRY_BYTES: usize = 512;
/// Most bytes of a `piece` line without its placement.
const LIST_PIECE_BYTES: usize = 96;
/// Most bytes of one `dr<k>@cpu<a>-<b>,` span.
const LIST_SPAN_BYTES: usize = 32;
/// Most bytes of the header and end lines together.
const LIST_FRAME_BYTES: usize = 256;

/// What `open("list[?from=<id>]")` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ListRequest {
    /// List breakpoints with an id at least this (0: from the first).
    pub from: u64,
}

impl ListRequest {
    /// `None` if `path` does not name the listing (then it is a breakpoint
    /// path); else the request, or why `list?...` is malformed (EINVAL).
    /// The `/scheme/hwbp/` prefix is accepted.
    pub fn parse(path: &str) -> Option<Result<ListRequest, PathError>> {
        let rest = strip_scheme_prefix(path).strip_prefix(LIST_NAME)?;
        if rest.is_empty() {
            return Some(Ok(ListRequest::default()));
        }
        let opts = rest.strip_prefix('?')?;
        Some(Self::parse_options(opts))
    }

    fn parse_options(opts: &str) -> Result<ListRequest, PathError> {
        let mut from = None;
        for item in opts.split('&') {
            if item.is_empty() {
                return Err(PathError::EmptyOption);
            }
            let (name, value) = item.split_once('=').map_or((item, None), |(n, v)| (n, Some(v)));
            if name != "from" {
                return Err(PathError::UnknownOption(name.to_string()));
            }
            if from.is_some() {
                return Err(PathError::DuplicateOption("from"));
            }
            from = Some(value.and_then(parse_decimal).ok_or(PathError::BadOptionValue("from"))?);
        }
        Ok(ListRequest { from: from.unwrap_or(0) })
    }
}

impl fmt::Display for ListRequest {
    /// The path to open, relative to the scheme root.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.from {
            0 => f.write_str(LIST_NAME),
            n => write!(f, "{LIST_NAME}?from={n}"),
        }
    }
}

/// The first line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListHeader {
    pub version: u32,
    /// The uid hwbpd filtered for (0: everything).
    pub uid: u32,
    /// CPUs `0..cpus` of the machine.
    pub cpus: u32,
    /// hwbpd's clock when the snapshot was taken (the clock of hit
    /// timestamps and of the times).
    pub now_ns: u64,
    /// The request's `from`.
    pub from: u64,
}

impl fmt::Display for ListHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "hwbp-list version={} uid={} cpus={} now_ns={} from={}",
            self.version, self.uid, self.cpus, self.now_ns, self.from
        )
    }
}

/// Where a breakpoint is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BpState {
    /// Its handle is open and its target exists.
    Live,
    /// Its task exited (or changed identity under a non-root owner): count
    /// and times frozen, nothing armed.
    Ended,
    /// Its handle was closed; an events stream still holds its state (and
    /// its owner's quota slot).
    Closed,
}

impl BpState {
    pub const fn as_str(self) -> &'static str {
        match self {
            BpState::Live => "live",
            BpState::Ended => "ended",
            BpState::Closed => "closed",
        }
    }

    fn parse(s: &str) -> Option<BpState> {
        [BpState::Live, BpState::Ended, BpState::Closed].into_iter().find(|st| st.as_str() == s)
    }
}

/// One debug register on a run of CPUs `first..=last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CpuSpan {
    /// DR0-DR3.
    pub slot: u8,
    pub first: u32,
    pub last: u32,
}

impl fmt::Display for CpuSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dr{}@cpu{}", self.slot, self.first)?;
        if self.last != self.first {
            write!(f, "-{}", self.last)?;
        }
        Ok(())
    }
}

impl CpuSpan {
    fn parse(s: &str) -> Option<CpuSpan> {
        let (reg, cpus) = s.split_once('@')?;
        let slot = reg.strip_prefix("dr")?;
        if slot.len() != 1 {
            return None;
        }
        let slot = u8::try_from(parse_decimal(slot)?).ok().filter(|&k| usize::from(k) < SLOTS_PER_CPU)?;
        let cpus = cpus.strip_prefix("cpu")?;
        let cpu = |s: &str| u32::try_from(parse_decimal(s)?).ok();
        let (first, last) = match cpus.split_once('-') {
            Some((a, b)) => (cpu(a)?, cpu(b)?),
            None => (cpu(cpus)?, cpu(cpus)?),
        };
        (first <= last).then_some(CpuSpan { slot, first, last })
    }
}

/// Where a piece is now.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Placement {
    /// In a debug register: which one on which CPUs (non-empty, by CPU,
    /// runs not overlapping).
    Armed(Vec<CpuSpan>),
    /// Enabled, but multiplexed out: not in the plans now; it takes a turn
    /// at a later rotation.
    Waiting,
    /// Not armed: disabled, ended or closed.
    Off,
}

impl Placement {
    /// The debug register the piece takes on `cpu`, if armed there.
    pub fn slot_on(&self, cpu: u32) -> Option<u8> {
        match self {
            Placement::Armed(spans) => spans.iter().find(|s| s.first <= cpu && cpu <= s.last).map(|s| s.slot),
            _ => None,
        }
    }

    /// Group per-CPU registers (`(cpu, slot)` in increasing CPU order) into
    /// runs; empty input is [`Placement::Waiting`].
    pub fn from_cpus(per_cpu: impl IntoIterator<Item = (u32, u8)>) -> Placement {
        let mut spans: Vec<CpuSpan> = Vec::new();
        for (cpu, slot) in per_cpu {
            match spans.last_mut() {
                Some(s) if s.slot == slot && s.last.checked_add(1) == Some(cpu) => s.last = cpu,
                _ => spans.push(CpuSpan { slot, first: cpu, last: cpu }),
            }
        }
        if spans.is_empty() { Placement::Waiting } else { Placement::Armed(spans) }
    }

    fn parse(s: &str) -> Option<Placement> {
        match s {
            "waiting" => Some(Placement::Waiting),
            "off" => Some(Placement::Off),
            _ => {
                let spans = s.split(',').map(CpuSpan::parse).collect::<Option<Vec<_>>>()?;
                let ordered = spans.windows(2).all(|w| w[0].last < w[1].first);
                (ordered && !spans.is_empty()).then_some(Placement::Armed(spans))
            }
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placement::Waiting => f.write_str("waiting"),
            Placement::Off => f.write_str("off"),
            Placement::Armed(spans) => {
                for (i, s) in spans.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{s}")?;
                }
                Ok(())
            }
        }
    }
}

/// A piece of a listed breakpoint and where it is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ListedPiece {
    pub piece: AdmittedPiece,
    pub place: Placement,
}

/// One breakpoint of the listing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ListEntry {
    pub id: u64,
    /// The uid that opened it.
    pub owner: u32,
    /// The path as admitted (canonical; `self` resolved to `task/<pid>`;
    /// the last `modify` included): target, event and options.
    pub path: OpenPath,
    pub state: BpState,
    /// Enabled (by open or the `enable` command), whatever its state.
    pub enabled: bool,
    /// What its count record reads now (`count.id == id`).
    pub count: CountRecord,
    /// Its pieces, in address order.
    pub pieces: Vec<ListedPiece>,
}

impl ListEntry {
    /// `pinned` or `flexible`.
    pub fn sched(&self) -> &'static str {
        if self.path.options.pinned { "pinned" } else { "flexible" }
    }
}

impl fmt::Display for ListEntry {
    /// Its `bp` line and `piece` lines, each ending in `\n`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.count;
        writeln!(
            f,
            "bp id={} owner={} path={} state={} enabled={} value={} lost={} time_enabled_ns={} time_running_ns={}",
            self.id,
            self.owner,
            self.path,
            self.state.as_str(),
            if self.enabled { "yes" } else { "no" },
            c.value,
            c.lost,
            c.time_enabled_ns,
            c.time_running_ns
        )?;
        for p in &self.pieces {
            writeln!(f, "piece bp={} piece={} place={}", self.id, p.piece, p.place)?;
        }
        Ok(())
    }
}

/// The last line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListEnd {
    /// `bp` lines in the snapshot.
    pub entries: u64,
    /// Where the next snapshot starts (`list?from=<next>`), if this one did
    /// not hold every entry.
    pub next: Option<u64>,
}

impl fmt::Display for ListEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.next {
            Some(n) => writeln!(f, "end entries={} next={n}", self.entries),
            None => writeln!(f, "end entries={} next=none", self.entries),
        }
    }
}

/// A parsed snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Listing {
    pub header: ListHeader,
    pub entries: Vec<ListEntry>,
    /// `end`'s `next`.
    pub next: Option<u64>,
}

impl fmt::Display for Listing {
    /// The exact text hwbpd serves for this snapshot.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.header)?;
        for e in &self.entries {
            write!(f, "{e}")?;
        }
        write!(f, "{}", ListEnd { entries: self.entries.len() as u64, next: self.next })
    }
}

/// Why a listing did not parse: the 1-based line and what was wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListError {
    pub line: usize,
    pub why: ListErrorKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListErrorKind {
    /// The first line is not `hwbp-list ...`.
    NotAListing,
    /// A version this parser does not read.
    Version(u64),
    /// A field is not `key=value`, or a line has empty fields.
    BadField,
    /// A key a line needs is missing.
    Missing(&'static str),
    /// A key is given twice on one line.
    Duplicate(&'static str),
    /// A known key with a value that does not parse.
    BadValue(&'static str),
    /// A `piece` line that does not follow its `bp` line.
    OrphanPiece,
    /// `bp` ids not increasing, or below `from`.
    Order,
    /// No `end` line (a truncated snapshot), or lines after it.
    Truncated,
    TrailingAfterEnd,
    /// `end`'s `entries` differs from the `bp` lines, or `next` is not past
    /// the last id.
    EndMismatch,
    NotUtf8,
}

impl fmt::Display for ListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "listing line {}: ", self.line)?;
        match &self.why {
            ListErrorKind::NotAListing => f.write_str("not a hwbp listing (want `hwbp-list version=..`)"),
            ListErrorKind::Version(v) => write!(f, "version {v} (this parser reads version {LIST_VERSION})"),
            ListErrorKind::BadField => f.write_str("malformed field (want key=value, one space apart)"),
            ListErrorKind::Missing(k) => write!(f, "missing {k}="),
            ListErrorKind::Duplicate(k) => write!(f, "{k}= given twice"),
            ListErrorKind::BadValue(k) => write!(f, "bad value of {k}="),
            ListErrorKind::OrphanPiece => f.write_str("piece line without its bp line"),
            ListErrorKind::Order => f.write_str("breakpoint ids not increasing from `from`"),
            ListErrorKind::Truncated => f.write_str("no end line: truncated"),
            ListErrorKind::TrailingAfterEnd => f.write_str("lines after the end line"),
            ListErrorKind::EndMismatch => f.write_str("end line does not match the entries"),
            ListErrorKind::NotUtf8 => f.write_str("not UTF-8"),
        }
    }
}

impl std::error::Error for ListError {}

/// The fields of one line, by key (unknown keys kept, then ignored).
struct Fields<'a> {
    fields: Vec<(&'a str, &'a str)>,
    line: usize,
}

impl<'a> Fields<'a> {
    fn split(rest: &'a str, line: usize) -> Result<Fields<'a>, ListError> {
        let mut fields = Vec::new();
        if rest.is_empty() {
            return Ok(Fields { fields, line });
        }
        for token in rest.split(' ') {
            let (k, v) = token.split_once('=').ok_or(ListError { line, why: ListErrorKind::BadField })?;
            if k.is_empty() || v.is_empty() {
                return Err(ListError { line, why: ListErrorKind::BadField });
            }
            fields.push((k, v));
        }
        Ok(Fields { fields, line })
    }

    fn err(&self, why: ListErrorKind) -> ListError {
        ListError { line: self.line, why }
    }

    fn get(&self, key: &'static str) -> Result<&'a str, ListError> {
        let mut found = self.fields.iter().filter(|(k, _)| *k == key).map(|(_, v)| *v);
        let v = found.next().ok_or(self.err(ListErrorKind::Missing(key)))?;
        if found.next().is_some() {
            return Err(self.err(ListErrorKind::Duplicate(key)));
        }
        Ok(v)
    }

    fn parse<T>(&self, key: &'static str, f: impl FnOnce(&str) -> Option<T>) -> Result<T, ListError> {
        f(self.get(key)?).ok_or(self.err(ListErrorKind::BadValue(key)))
    }

    fn u64(&self, key: &'static str) -> Result<u64, ListError> {
        self.parse(key, parse_decimal)
    }

    fn u32(&self, key: &'static str) -> Result<u32, ListError> {
        self.parse(key, |s| u32::try_from(parse_decimal(s)?).ok())
    }
}

fn yes_no(s: &str) -> Option<bool> {
    match s {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

fn parse_next(s: &str) -> Option<Option<u64>> {
    if s == "none" { Some(None) } else { parse_decimal(s).map(Some) }
}

impl Listing {
    /// Parse one snapshot (the whole text of one listing handle).
    pub fn parse(text: &str) -> Result<Listing, ListError> {
        let mut lines = text.split_inclusive('\n').enumerate().map(|(i, l)| (i + 1, l));
        let err = |line, why| ListError { line, why };
        let (n, first) = lines.next().ok_or(err(1, ListErrorKind::NotAListing))?;
        let first = first.strip_suffix('\n').ok_or(err(n, ListErrorKind::Truncated))?;
        let rest = first.strip_prefix("hwbp-list ").ok_or(err(n, ListErrorKind::NotAListing))?;
        let f = Fields::split(rest, n)?;
        let version = f.u64("version")?;
        if version != u64::from(LIST_VERSION) {
            return Err(err(n, ListErrorKind::Version(version)));
        }
        let header = ListHeader { version: LIST_VERSION, uid: f.u32("uid")?, cpus: f.u32("cpus")?, now_ns: f.u64("now_ns")?, from: f.u64("from")? };
        let mut entries: Vec<ListEntry> = Vec::new();
        let mut end = None;
        let mut last_line = n;
        for (n, line) in lines {
            last_line = n;
            if end.is_some() {
                return Err(err(n, ListErrorKind::TrailingAfterEnd));
            }
            let line = line.strip_suffix('\n').ok_or(err(n, ListErrorKind::Truncated))?;
            let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
            match kind {
                "bp" => {
                    let f = Fields::split(rest, n)?;
                    let id = f.u64("id")?;
                    if id < header.from || entries.last().is_some_and(|e| e.id >= id) {
                        return Err(err(n, ListErrorKind::Order));
                    }
                    let count = CountRecord {
                        value: f.u64("value")?,
                        time_enabled_ns: f.u64("time_enabled_ns")?,
                        time_running_ns: f.u64("time_running_ns")?,
                        id,
                        lost: f.u64("lost")?,
                    };
                    entries.push(ListEntry {
                        id,
                        owner: f.u32("owner")?,
                        path: f.parse("path", |s| OpenPath::parse(s).ok())?,
                        state: f.parse("state", BpState::parse)?,
                        enabled: f.parse("enabled", yes_no)?,
                        count,
                        pieces: Vec::new(),
                    });
                }
                "piece" => {
                    let f = Fields::split(rest, n)?;
                    let bp = f.u64("bp")?;
                    let piece = f.parse("piece", |s| AdmittedPiece::parse(s).ok())?;
                    let place = f.parse("place", Placement::parse)?;
                    let entry = entries.last_mut().filter(|e| e.id == bp).ok_or(err(n, ListErrorKind::OrphanPiece))?;
                    entry.pieces.push(ListedPiece { piece, place });
                }
                "end" => {
                    let f = Fields::split(rest, n)?;
                    let count = f.u64("entries")?;
                    let next = f.parse("next", parse_next)?;
                    let past_last = match (next, entries.last()) {
                        (Some(next), Some(last)) => next > last.id,
                        (Some(_), None) => false,
                        (None, _) => true,
                    };
                    if count != entries.len() as u64 || !past_last {
                        return Err(err(n, ListErrorKind::EndMismatch));
                    }
                    end = Some(next);
                }
                // A record type of a later addition: skipped.
                _ => {
                    Fields::split(rest, n)?;
                }
            }
        }
        let next = end.ok_or(err(last_line, ListErrorKind::Truncated))?;
        Ok(Listing { header, entries, next })
    }

    /// [`Listing::parse`] of bytes.
    pub fn parse_bytes(b: &[u8]) -> Result<Listing, ListError> {
        let text = core::str::from_utf8(b).map_err(|_| ListError { line: 1, why: ListErrorKind::NotUtf8 })?;
        Listing::parse(text)
    }
}
