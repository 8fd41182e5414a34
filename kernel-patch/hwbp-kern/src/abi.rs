//! The byte-level interface between the kernel and `hwbpd`: what is written
//! to a context's `regs/debug` handle and to a CPU's plan handle, and what
//! is read from the hit stream. Documented in `kernel-patch/ABI.md`.
//!
//! Every record is `#[repr(C)]`, little-endian, with explicit padding, and
//! converts to and from bytes without `unsafe`: the kernel copies user
//! buffers as bytes and decodes them here.

use crate::piece::{Access, Len, Piece, PieceError};
use crate::plan::{ContextPiece, ContextPlan, CpuFilter, CpuId, CpuPiece, CpuPlan, PlanError};
use crate::NUM_SLOTS;
use crate::piece::Slot;

/// `RawPiece::access` values: the DR7 R/W encodings.
pub const ACCESS_EXEC: u8 = 0b00;
pub const ACCESS_WRITE: u8 = 0b01;
pub const ACCESS_READ_WRITE: u8 = 0b11;

/// `RawPiece::flags`: the piece applies only on CPU `cpu`.
pub const PIECE_CPU_LIMITED: u16 = 1 << 0;
/// `RawPiece::flags`: a user-mode hit on the piece stops the thread that
/// hit until `hwbpd` resumes it. Context plans only: a CPU plan refuses it.
pub const PIECE_STOP: u16 = 1 << 1;
/// Flags a piece may carry; any other bit is refused.
pub const PIECE_KNOWN_FLAGS: u16 = PIECE_CPU_LIMITED | PIECE_STOP;

/// One piece as `hwbpd` writes it.
///
/// A context plan is written as `n` of these (n <= 16; 0 bytes clears the
/// plan). A CPU plan is written as exactly four, one per register; an entry
/// whose `len` is 0 leaves that register free.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawPiece {
    pub addr: u64,
    pub token: u64,
    /// Meaningful only with `PIECE_CPU_LIMITED`.
    pub cpu: u32,
    /// 1, 2, 4 or 8 (0: empty CPU-plan entry).
    pub len: u8,
    /// `ACCESS_*`.
    pub access: u8,
    pub flags: u16,
}

/// Size of a [`RawPiece`] in bytes.
pub const RAW_PIECE_SIZE: usize = 24;
const _: () = assert!(core::mem::size_of::<RawPiece>() == RAW_PIECE_SIZE);

/// Why a plan written by userspace was refused. The kernel maps all of
/// these to EINVAL, except `Plan(TooManyPieces)` / `Plan(CpuOverflow)` and
/// `DoesNotFit`, which are ENOSPC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The byte count is not a whole number of records (or not four for a
    /// CPU plan).
    Length,
    Piece(PieceError),
    Plan(PlanError),
    /// A flag bit this kernel does not know.
    UnknownFlags,
}

impl From<PieceError> for DecodeError {
    fn from(e: PieceError) -> Self {
        DecodeError::Piece(e)
    }
}

impl From<PlanError> for DecodeError {
    fn from(e: PlanError) -> Self {
        DecodeError::Plan(e)
    }
}

impl RawPiece {
    pub fn to_bytes(&self) -> [u8; RAW_PIECE_SIZE] {
        let mut b = [0u8; RAW_PIECE_SIZE];
        put(&mut b, 0, &self.addr.to_le_bytes());
        put(&mut b, 8, &self.token.to_le_bytes());
        put(&mut b, 16, &self.cpu.to_le_bytes());
        put(&mut b, 20, &[self.len, self.access]);
        put(&mut b, 22, &self.flags.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; RAW_PIECE_SIZE]) -> RawPiece {
        RawPiece {
            addr: u64::from_le_bytes(get(b, 0)),
            token: u64::from_le_bytes(get(b, 8)),
            cpu: u32::from_le_bytes(get(b, 16)),
            len: b[20],
            access: b[21],
            flags: u16::from_le_bytes(get(b, 22)),
        }
    }

    fn decode_piece(&self) -> Result<Piece, DecodeError> {
        let len = Len::from_bytes(u64::from(self.len)).ok_or(PieceError::BadEncoding)?;
        let access = match self.access {
            ACCESS_EXEC => Access::Exec,
            ACCESS_WRITE => Access::Write,
            ACCESS_READ_WRITE => Access::ReadWrite,
            _ => return Err(PieceError::BadEncoding.into()),
        };
        Ok(Piece::new(self.addr, len, access)?)
    }

    pub fn decode_context_piece(&self) -> Result<ContextPiece, DecodeError> {
        if self.flags & !PIECE_KNOWN_FLAGS != 0 {
            return Err(DecodeError::UnknownFlags);
        }
        let cpu = if self.flags & PIECE_CPU_LIMITED != 0 { CpuFilter::Only(self.cpu) } else { CpuFilter::Any };
        let stop = self.flags & PIECE_STOP != 0;
        Ok(ContextPiece { piece: self.decode_piece()?, token: self.token, cpu, stop })
    }

    /// The raw form of a context piece.
    pub fn encode_context_piece(p: &ContextPiece) -> RawPiece {
        let mut raw = RawPiece::encode(&p.piece, p.token, p.cpu);
        if p.stop {
            raw.flags |= PIECE_STOP;
        }
        raw
    }

    pub fn encode(piece: &Piece, token: u64, cpu: CpuFilter) -> RawPiece {
        let (cpu, flags) = match cpu {
            CpuFilter::Any => (0, 0),
            CpuFilter::Only(n) => (n, PIECE_CPU_LIMITED),
        };
        let access = match piece.access() {
            Access::Exec => ACCESS_EXEC,
            Access::Write => ACCESS_WRITE,
            Access::ReadWrite => ACCESS_READ_WRITE,
        };
        RawPiece { addr: piece.addr(), token, cpu, len: piece.len().bytes() as u8, access, flags }
    }
}

/// Decode a context plan written as `n` raw pieces.
pub fn decode_context_plan(bytes: &[u8]) -> Result<ContextPlan, DecodeError> {
    if !bytes.len().is_multiple_of(RAW_PIECE_SIZE) {
        return Err(DecodeError::Length);
    }
    let mut plan = ContextPlan::EMPTY;
    for chunk in bytes.chunks_exact(RAW_PIECE_SIZE) {
        let raw = RawPiece::from_bytes(chunk.try_into().map_err(|_| DecodeError::Length)?);
        plan.push(raw.decode_context_piece()?)?;
    }
    Ok(plan)
}

/// Encode a context plan into `out`; returns the bytes used, or `None` if
/// `out` is too small.
pub fn encode_context_plan(plan: &ContextPlan, out: &mut [u8]) -> Option<usize> {
    let mut used = 0usize;
    for (p, chunk) in plan.iter().zip(out.chunks_exact_mut(RAW_PIECE_SIZE)) {
        chunk.copy_from_slice(&RawPiece::encode_context_piece(p).to_bytes());
        used = used.checked_add(RAW_PIECE_SIZE)?;
    }
    (used == plan.len().checked_mul(RAW_PIECE_SIZE)?).then_some(used)
}

/// Size of an encoded CPU plan.
pub const CPU_PLAN_SIZE: usize = NUM_SLOTS * RAW_PIECE_SIZE;

/// Decode a CPU plan written as four raw pieces, one per register.
pub fn decode_cpu_plan(bytes: &[u8]) -> Result<CpuPlan, DecodeError> {
    if bytes.len() != CPU_PLAN_SIZE {
        return Err(DecodeError::Length);
    }
    let mut plan = CpuPlan::EMPTY;
    for (slot, chunk) in Slot::ALL.into_iter().zip(bytes.chunks_exact(RAW_PIECE_SIZE)) {
        let raw = RawPiece::from_bytes(chunk.try_into().map_err(|_| DecodeError::Length)?);
        if raw.len == 0 {
            continue;
        }
        if raw.flags != 0 {
            return Err(DecodeError::UnknownFlags);
        }
        plan.set(slot, Some(CpuPiece { piece: raw.decode_piece()?, token: raw.token }));
    }
    Ok(plan)
}

/// Encode a CPU plan as four raw pieces.
pub fn encode_cpu_plan(plan: &CpuPlan) -> [u8; CPU_PLAN_SIZE] {
    let mut out = [0u8; CPU_PLAN_SIZE];
    for (slot, chunk) in Slot::ALL.into_iter().zip(out.chunks_exact_mut(RAW_PIECE_SIZE)) {
        if let Some(p) = plan.get(slot) {
            chunk.copy_from_slice(&RawPiece::encode(&p.piece, p.token, CpuFilter::Any).to_bytes());
        }
    }
    out
}

/// `HitRecord::flags`: the access happened in kernel mode (CPL 0), e.g. a
/// syscall copying from a watched user buffer.
pub const HIT_KERNEL_MODE: u32 = 1 << 0;
/// The piece was an exec breakpoint (a fault: `rip` is the instruction
/// about to run; data hits are traps: `rip` follows the access).
pub const HIT_EXEC: u32 = 1 << 1;
/// The same #DB also reported a single step (DR6.BS).
pub const HIT_WITH_SINGLE_STEP: u32 = 1 << 2;
/// The thread that hit is stopped (its piece carries [`PIECE_STOP`] and the
/// hit came from user mode): it runs again when `hwbpd` writes `context`
/// to the control handle's `resume` handle, or when the control handle
/// closes.
pub const HIT_STOPPED: u32 = 1 << 3;
/// Not a hit: an event about a process plan (`pid-<pid>`). `token` is the
/// kind ([`EVENT_EXIT`], [`EVENT_IDENTITY`]), the pid is the high half of
/// `context`; the other fields are 0 but `timestamp`.
pub const HIT_EVENT: u32 = 1 << 31;
/// Event: the process's last thread exited; its plan ended.
pub const EVENT_EXIT: u64 = 1;
/// Event: a thread of the process changed its effective uid or gid (a
/// set-uid/set-gid exec, `setresuid`): the kernel dropped the plan from
/// every thread, and it ended.
pub const EVENT_IDENTITY: u64 = 2;

/// One hit, as the #DB handler records it and the hit stream yields it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HitRecord {
    /// The token of the piece that fired.
    pub token: u64,
    /// Instruction pointer at the exception.
    pub rip: u64,
    /// The watched address (the register's contents; x86 does not report
    /// the exact byte accessed).
    pub addr: u64,
    /// The kernel's id of the context that ran.
    pub context: u64,
    /// A per-CPU monotonic clock sampled without locks. The Redox patch
    /// stores the time-stamp counter (`rdtsc`), not nanoseconds; the
    /// simulated kernel its own clock. See `kernel-patch/ABI.md`.
    pub timestamp: u64,
    pub cpu: CpuId,
    /// `HIT_*`.
    pub flags: u32,
}

/// Size of a [`HitRecord`] in bytes.
pub const HIT_RECORD_SIZE: usize = 48;
const _: () = assert!(core::mem::size_of::<HitRecord>() == HIT_RECORD_SIZE);

impl HitRecord {
    pub const ZERO: HitRecord = HitRecord { token: 0, rip: 0, addr: 0, context: 0, timestamp: 0, cpu: 0, flags: 0 };

    pub fn to_bytes(&self) -> [u8; HIT_RECORD_SIZE] {
        let mut b = [0u8; HIT_RECORD_SIZE];
        put(&mut b, 0, &self.token.to_le_bytes());
        put(&mut b, 8, &self.rip.to_le_bytes());
        put(&mut b, 16, &self.addr.to_le_bytes());
        put(&mut b, 24, &self.context.to_le_bytes());
        put(&mut b, 32, &self.timestamp.to_le_bytes());
        put(&mut b, 40, &self.cpu.to_le_bytes());
        put(&mut b, 44, &self.flags.to_le_bytes());
        b
    }

    /// An event record (not a hit): `kind` ([`EVENT_EXIT`],
    /// [`EVENT_IDENTITY`]) about process `pid`.
    pub const fn event(kind: u64, pid: u32, timestamp: u64) -> HitRecord {
        HitRecord { token: kind, rip: 0, addr: 0, context: (pid as u64) << 32, timestamp, cpu: 0, flags: HIT_EVENT }
    }

    /// For an event record, its kind and pid.
    pub const fn as_event(&self) -> Option<(u64, u32)> {
        if self.flags & HIT_EVENT == 0 {
            return None;
        }
        Some((self.token, (self.context >> 32) as u32))
    }

    pub fn from_bytes(b: &[u8; HIT_RECORD_SIZE]) -> HitRecord {
        HitRecord {
            token: u64::from_le_bytes(get(b, 0)),
            rip: u64::from_le_bytes(get(b, 8)),
            addr: u64::from_le_bytes(get(b, 16)),
            context: u64::from_le_bytes(get(b, 24)),
            timestamp: u64::from_le_bytes(get(b, 32)),
            cpu: u32::from_le_bytes(get(b, 40)),
            flags: u32::from_le_bytes(get(b, 44)),
        }
    }
}

/// Size of a [`CountRecord`] in bytes.
pub const COUNT_RECORD_SIZE: usize = 16;

/// Exact hits of one piece since the last read: what a `pid-<pid>` read
/// returns, and what follows the counters in a `cpu-<n>` read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountRecord {
    pub token: u64,
    pub hits: u64,
}

impl CountRecord {
    pub fn to_bytes(&self) -> [u8; COUNT_RECORD_SIZE] {
        let mut b = [0u8; COUNT_RECORD_SIZE];
        put(&mut b, 0, &self.token.to_le_bytes());
        put(&mut b, 8, &self.hits.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; COUNT_RECORD_SIZE]) -> CountRecord {
        CountRecord { token: u64::from_le_bytes(get(b, 0)), hits: u64::from_le_bytes(get(b, 8)) }
    }

    /// The whole records in `bytes` (a trailing partial record is ignored).
    pub fn parse_all(bytes: &[u8]) -> impl Iterator<Item = CountRecord> + '_ {
        bytes.chunks_exact(COUNT_RECORD_SIZE).map(|c| {
            let mut b = [0u8; COUNT_RECORD_SIZE];
            b.copy_from_slice(c);
            CountRecord::from_bytes(&b)
        })
    }
}

/// The handles `dup` opens on the control handle, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlName {
    /// `cpu-<n>`
    Cpu(u64),
    /// `pid-<pid>`
    Process(u64),
    /// `threads-<pid>`
    Threads(u64),
    /// `regs/debug-<id>`
    ContextPlan(u64),
    /// `resume`: each 8-byte little-endian write names a stopped thread by
    /// the `context` of its [`HIT_STOPPED`] record, and runs it again.
    Resume,
}

/// Why a name is not one of [`ControlName`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlNameError {
    /// No known prefix: ENOENT.
    Unknown,
    /// A known prefix without a decimal number after it (or one too large
    /// for u64): names nothing, ESRCH.
    NoSuchId,
}

impl ControlName {
    pub fn parse(name: &[u8]) -> Result<ControlName, ControlNameError> {
        if name == b"resume" {
            return Ok(ControlName::Resume);
        }
        const PREFIXES: [(&[u8], fn(u64) -> ControlName); 4] = [
            (b"cpu-", ControlName::Cpu),
            (b"pid-", ControlName::Process),
            (b"threads-", ControlName::Threads),
            (b"regs/debug-", ControlName::ContextPlan),
        ];
        for (prefix, make) in PREFIXES {
            if let Some(rest) = name.strip_prefix(prefix) {
                let number = core::str::from_utf8(rest).ok().filter(|r| !r.starts_with('+')).and_then(|r| r.parse().ok());
                return number.map(make).ok_or(ControlNameError::NoSuchId);
            }
        }
        Err(ControlNameError::Unknown)
    }
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(at..at.saturating_add(bytes.len())) {
        dst.copy_from_slice(bytes);
    }
}

fn get<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = buf.get(at..at.saturating_add(N)) {
        out.copy_from_slice(src);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_piece_round_trips_through_bytes() {
        let raw = RawPiece { addr: 0x1234_5678, token: 99, cpu: 3, len: 8, access: ACCESS_WRITE, flags: 1 };
        assert_eq!(RawPiece::from_bytes(&raw.to_bytes()), raw);
        let p = raw.decode_context_piece().unwrap();
        assert_eq!(p.cpu, CpuFilter::Only(3));
        assert!(!p.stop);
        assert_eq!(RawPiece::encode(&p.piece, p.token, p.cpu), raw);
        let stopping = RawPiece { flags: PIECE_CPU_LIMITED | PIECE_STOP, ..raw };
        let p = stopping.decode_context_piece().unwrap();
        assert!(p.stop);
        assert_eq!(RawPiece::encode_context_piece(&p), stopping);
    }

    #[test]
    fn bad_encodings_are_refused() {
        let ok = RawPiece { addr: 0x1000, token: 1, cpu: 0, len: 4, access: ACCESS_WRITE, flags: 0 };
        let bad = |f: fn(&mut RawPiece)| {
            let mut r = ok;
            f(&mut r);
            r.decode_context_piece()
        };
        assert!(ok.decode_context_piece().is_ok());
        assert_eq!(bad(|r| r.len = 3), Err(DecodeError::Piece(PieceError::BadEncoding)));
        assert_eq!(bad(|r| r.access = 0b10), Err(DecodeError::Piece(PieceError::BadEncoding)));
        assert_eq!(bad(|r| r.addr = 0x1002), Err(DecodeError::Piece(PieceError::Unaligned)));
        assert_eq!(bad(|r| r.flags = 0x80), Err(DecodeError::UnknownFlags));
        assert_eq!(bad(|r| r.flags = PIECE_STOP).map(|p| p.stop), Ok(true));
        assert_eq!(bad(|r| r.access = ACCESS_EXEC), Err(DecodeError::Piece(PieceError::ExecLength)));
    }

    #[test]
    fn context_plans_round_trip_and_overflow_is_refused() {
        let piece = |a| RawPiece { addr: a, token: a, cpu: 0, len: 8, access: ACCESS_READ_WRITE, flags: 0 };
        let bytes: std::vec::Vec<u8> = (0..4).flat_map(|i| piece(0x1000 + 8 * i).to_bytes()).collect();
        let plan = decode_context_plan(&bytes).unwrap();
        assert_eq!(plan.len(), 4);
        let mut out = [0u8; 4 * RAW_PIECE_SIZE];
        assert_eq!(encode_context_plan(&plan, &mut out), Some(bytes.len()));
        assert_eq!(&out[..], &bytes[..]);
        assert_eq!(encode_context_plan(&plan, &mut out[..RAW_PIECE_SIZE]), None);
        let five: std::vec::Vec<u8> = (0..5).flat_map(|i| piece(0x1000 + 8 * i).to_bytes()).collect();
        assert_eq!(decode_context_plan(&five), Err(DecodeError::Plan(PlanError::CpuOverflow(0))));
        assert_eq!(decode_context_plan(&bytes[..10]), Err(DecodeError::Length));
        assert_eq!(decode_context_plan(&[]), Ok(ContextPlan::EMPTY));
    }

    #[test]
    fn cpu_plans_keep_their_registers() {
        let mut plan = CpuPlan::EMPTY;
        let p = Piece::new(0xffff_8000_0000_1000, Len::Eight, Access::Write).unwrap();
        plan.set(Slot::new(2).unwrap(), Some(CpuPiece { piece: p, token: 7 }));
        let bytes = encode_cpu_plan(&plan);
        assert_eq!(decode_cpu_plan(&bytes), Ok(plan));
        assert_eq!(decode_cpu_plan(&bytes[1..]), Err(DecodeError::Length));
        let mut stopping = bytes;
        stopping[2 * RAW_PIECE_SIZE + 22] = PIECE_STOP as u8;
        assert_eq!(decode_cpu_plan(&stopping), Err(DecodeError::UnknownFlags), "only a thread can be stopped");
    }

    #[test]
    fn hit_record_round_trips_through_bytes() {
        let h = HitRecord { token: 1, rip: 2, addr: 3, context: 4, timestamp: 5, cpu: 6, flags: HIT_EXEC };
        assert_eq!(HitRecord::from_bytes(&h.to_bytes()), h);
    }

    #[test]
    fn control_names_parse_exactly() {
        assert_eq!(ControlName::parse(b"cpu-3"), Ok(ControlName::Cpu(3)));
        assert_eq!(ControlName::parse(b"pid-77"), Ok(ControlName::Process(77)));
        assert_eq!(ControlName::parse(b"threads-9"), Ok(ControlName::Threads(9)));
        assert_eq!(ControlName::parse(b"regs/debug-12"), Ok(ControlName::ContextPlan(12)));
        assert_eq!(ControlName::parse(b"pid-"), Err(ControlNameError::NoSuchId));
        assert_eq!(ControlName::parse(b"pid-+7"), Err(ControlNameError::NoSuchId));
        assert_eq!(ControlName::parse(b"pid-18446744073709551616"), Err(ControlNameError::NoSuchId));
        assert_eq!(ControlName::parse(b"cpu-1x"), Err(ControlNameError::NoSuchId));
        assert_eq!(ControlName::parse(b"pids-1"), Err(ControlNameError::Unknown));
        assert_eq!(ControlName::parse(b""), Err(ControlNameError::Unknown));
        assert_eq!(ControlName::parse(b"resume"), Ok(ControlName::Resume));
        assert_eq!(ControlName::parse(b"resume-1"), Err(ControlNameError::Unknown));
    }

    #[test]
    fn count_and_event_records_round_trip() {
        let c = CountRecord { token: 0x1234, hits: 99 };
        let mut two = [0u8; 2 * COUNT_RECORD_SIZE + 5];
        two[..16].copy_from_slice(&c.to_bytes());
        two[16..32].copy_from_slice(&CountRecord { token: 7, hits: 1 }.to_bytes());
        let all: std::vec::Vec<_> = CountRecord::parse_all(&two).collect();
        assert_eq!(all, [c, CountRecord { token: 7, hits: 1 }], "the trailing partial record is ignored");
        let e = HitRecord::event(EVENT_IDENTITY, 77, 5);
        assert_eq!(HitRecord::from_bytes(&e.to_bytes()).as_event(), Some((EVENT_IDENTITY, 77)));
        assert_eq!(HitRecord::ZERO.as_event(), None);
    }
}
