//! perf's breakpoint event syntax, `mem:<addr>[/<len>][:<access>]`.
//!
//! Grammar (what [`MemEvent::parse`] accepts):
//! - `addr`: `0x`/`0X` followed by hex digits, or decimal digits; no sign,
//!   no separators; must fit in a u64.
//! - `len`: the same number syntax, at least 1. Default 4 for data,
//!   [`EXEC_LEN`] (8, sizeof(long)) for `x`. A data length other than 1, 2,
//!   4, 8, or an address not aligned to it, is accepted here: hwbpd splits
//!   it into aligned pieces (or refuses it under `nosplit`). `addr + len`
//!   must not pass the end of the address space.
//! - `access`: a set of the letters `r`, `w`, `x`, each at most once, any
//!   order: `w` write, `rw`/`wr` read-write, `x` execute. Default `rw`.
//!   `r` alone is refused (x86 has no read-only watch), as is `x` together
//!   with `r` or `w`.
//! - An `x` event covers one instruction address: its length must be 8
//!   (as Linux requires of x86 execute breakpoints).
//!
//! The canonical form ([`MemEvent`]'s `Display`) always spells all three
//! parts: `mem:0x<lower-case hex>/<decimal len>:<w|rw|x>`.

use core::fmt;

use super::error::PathError;

/// Length of an execute breakpoint, as perf spells it (sizeof(long)).
pub const EXEC_LEN: u64 = 8;
/// Default length of a data watch when none is given.
pub const DEFAULT_DATA_LEN: u64 = 4;

/// The access condition of a breakpoint (x86 DR7 R/W, without I/O).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// Instruction fetch (`x`).
    Exec,
    /// Data writes (`w`).
    Write,
    /// Data reads and writes (`rw`).
    ReadWrite,
}

impl Access {
    pub const ALL: [Access; 3] = [Access::Exec, Access::Write, Access::ReadWrite];

    /// The value in [`EventRecord::access`](super::EventRecord): the DR7
    /// R/W encoding (0 exec, 1 write, 3 read-write).
    pub const fn code(self) -> u64 {
        match self {
            Access::Exec => ACCESS_CODE_EXEC,
            Access::Write => ACCESS_CODE_WRITE,
            Access::ReadWrite => ACCESS_CODE_READ_WRITE,
        }
    }

    pub const fn from_code(code: u64) -> Option<Access> {
        match code {
            ACCESS_CODE_EXEC => Some(Access::Exec),
            ACCESS_CODE_WRITE => Some(Access::Write),
            ACCESS_CODE_READ_WRITE => Some(Access::ReadWrite),
            _ => None,
        }
    }

    /// The perf letters.
    pub const fn as_str(self) -> &'static str {
        match self {
            Access::Exec => "x",
            Access::Write => "w",
            Access::ReadWrite => "rw",
        }
    }

    pub const fn is_data(self) -> bool {
        !matches!(self, Access::Exec)
    }

    /// Parse perf's access letters (see the module docs).
    pub fn parse(s: &str) -> Result<Access, PathError> {
        let (mut r, mut w, mut x) = (false, false, false);
        if s.is_empty() {
            return Err(PathError::BadAccess);
        }
        for c in s.bytes() {
            let seen = match c {
                b'r' => &mut r,
                b'w' => &mut w,
                b'x' => &mut x,
                _ => return Err(PathError::BadAccess),
            };
            if *seen {
                return Err(PathError::BadAccess);
            }
            *seen = true;
        }
        match (r, w, x) {
            (true, false, false) => Err(PathError::ReadOnlyAccess),
            (false, true, false) => Ok(Access::Write),
            (true, true, false) => Ok(Access::ReadWrite),
            (false, false, true) => Ok(Access::Exec),
            _ => Err(PathError::ExecWithData),
        }
    }
}

/// `EventRecord::access` for an execute breakpoint.
pub const ACCESS_CODE_EXEC: u64 = 0;
/// `EventRecord::access` for a write watch.
pub const ACCESS_CODE_WRITE: u64 = 1;
/// `EventRecord::access` for a read-write watch.
pub const ACCESS_CODE_READ_WRITE: u64 = 3;

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed `mem:` event: what to watch, before any splitting.
///
/// Invariants (hold for every value made by [`MemEvent::new`] or `parse`):
/// `len >= 1`; `addr + len` does not overflow; an `Exec` event has
/// `len == EXEC_LEN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemEvent {
    addr: u64,
    len: u64,
    access: Access,
}

impl MemEvent {
    /// Check the invariants and build the event.
    pub fn new(addr: u64, len: u64, access: Access) -> Result<MemEvent, PathError> {
        if len == 0 {
            return Err(PathError::ZeroLength);
        }
        if access == Access::Exec && len != EXEC_LEN {
            return Err(PathError::ExecLength);
        }
        if addr.checked_add(len - 1).is_none() {
            return Err(PathError::RangeOverflow);
        }
        Ok(MemEvent { addr, len, access })
    }

    /// The event with the default length for `access`.
    pub fn with_default_len(addr: u64, access: Access) -> Result<MemEvent, PathError> {
        MemEvent::new(addr, default_len(access), access)
    }

    pub const fn addr(&self) -> u64 {
        self.addr
    }

    #[allow(clippy::len_without_is_empty, reason = "an event is never empty (len >= 1)")]
    pub const fn len(&self) -> u64 {
        self.len
    }

    pub const fn access(&self) -> Access {
        self.access
    }

    /// Whether one debug register can watch it as is (no splitting):
    /// an exec event, or a data length of 1, 2, 4 or 8 at an aligned address.
    pub const fn is_single_piece(&self) -> bool {
        match self.access {
            Access::Exec => true,
            _ => matches!(self.len, 1 | 2 | 4 | 8) && self.addr.is_multiple_of(self.len),
        }
    }

    /// Parse `mem:<addr>[/<len>][:<access>]` (the whole string).
    pub fn parse(s: &str) -> Result<MemEvent, PathError> {
        let body = s.strip_prefix("mem:").ok_or(PathError::NotMemEvent)?;
        let (addr_len, access) = match body.split_once(':') {
            Some((a, acc)) => (a, Some(Access::parse(acc)?)),
            None => (body, None),
        };
        let (addr, len) = match addr_len.split_once('/') {
            Some((a, l)) => (a, Some(parse_u64(l).ok_or(PathError::BadLength)?)),
            None => (addr_len, None),
        };
        let addr = parse_u64(addr).ok_or(PathError::BadAddress)?;
        let access = access.unwrap_or(Access::ReadWrite);
        MemEvent::new(addr, len.unwrap_or(default_len(access)), access)
    }

    /// The body without the `mem:` prefix: `0x<addr>/<len>:<access>` (the
    /// form of one piece in an admitted path).
    pub fn body(&self) -> MemBody<'_> {
        MemBody(self)
    }
}

/// The default length of an event with this access.
pub const fn default_len(access: Access) -> u64 {
    match access {
        Access::Exec => EXEC_LEN,
        _ => DEFAULT_DATA_LEN,
    }
}

/// Standalone form of [`MemEvent::parse`], for tools that take perf's
/// `-e mem:...` argument.
pub fn parse_mem_event(s: &str) -> Result<MemEvent, PathError> {
    MemEvent::parse(s)
}

/// Standalone canonical printing of a `mem:` event.
pub fn format_mem_event(e: &MemEvent) -> String {
    e.to_string()
}

impl fmt::Display for MemEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mem:{}", self.body())
    }
}

impl core::str::FromStr for MemEvent {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MemEvent::parse(s)
    }
}

/// Display helper: an event without its `mem:` prefix.
pub struct MemBody<'a>(&'a MemEvent);

impl fmt::Display for MemBody<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}/{}:{}", self.0.addr, self.0.len, self.0.access)
    }
}

/// Parse an unsigned number: `0x`/`0X` + hex digits, or decimal digits.
/// Nothing else (no sign, no `_`, no whitespace, no empty digits).
pub fn parse_u64(s: &str) -> Option<u64> {
    let (digits, radix) = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (s, 10),
    };
    if digits.is_empty() || !digits.bytes().all(|b| (b as char).is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// Parse a decimal number only (pids, CPU numbers, option values).
pub fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(s: &str) -> Result<MemEvent, PathError> {
        MemEvent::parse(s)
    }

    #[test]
    fn defaults_are_rw_and_four_bytes() {
        let e = ev("mem:0x1000").unwrap();
        assert_eq!((e.addr(), e.len(), e.access()), (0x1000, 4, Access::ReadWrite));
    }

    #[test]
    fn exec_defaults_to_eight_bytes() {
        let e = ev("mem:4096:x").unwrap();
        assert_eq!((e.addr(), e.len(), e.access()), (4096, 8, Access::Exec));
    }

    #[test]
    fn decimal_and_hex_addresses_and_lengths() {
        assert_eq!(ev("mem:4096/2:w").unwrap(), ev("mem:0x1000/0x2:w").unwrap());
        assert_eq!(ev("mem:0X1000/8").unwrap().len(), 8);
    }

    #[test]
    fn any_positive_data_length_is_accepted_for_splitting() {
        let e = ev("mem:0x1001/6:w").unwrap();
        assert_eq!(e.len(), 6);
        assert!(!e.is_single_piece());
        assert!(ev("mem:0x1000/8:w").unwrap().is_single_piece());
        assert!(!ev("mem:0x1004/8:w").unwrap().is_single_piece());
    }

    #[test]
    fn access_letter_sets() {
        assert_eq!(ev("mem:0x10:w").unwrap().access(), Access::Write);
        assert_eq!(ev("mem:0x10:rw").unwrap().access(), Access::ReadWrite);
        assert_eq!(ev("mem:0x10:wr").unwrap().access(), Access::ReadWrite);
        assert_eq!(ev("mem:0x10:x").unwrap().access(), Access::Exec);
    }

    #[test]
    fn read_only_watch_is_refused() {
        assert_eq!(ev("mem:0x10:r"), Err(PathError::ReadOnlyAccess));
    }

    #[test]
    fn exec_mixed_with_data_is_refused() {
        for a in ["rx", "wx", "rwx", "xw", "xr"] {
            assert_eq!(ev(&format!("mem:0x10:{a}")), Err(PathError::ExecWithData), "{a}");
        }
    }

    #[test]
    fn bad_access_letters_are_refused() {
        for a in ["", "ww", "rr", "q", "W", "rw ", "xx"] {
            assert_eq!(ev(&format!("mem:0x10:{a}")), Err(PathError::BadAccess), "{a:?}");
        }
    }

    #[test]
    fn exec_length_other_than_eight_is_refused() {
        assert_eq!(ev("mem:0x10/1:x"), Err(PathError::ExecLength));
        assert_eq!(ev("mem:0x10/4:x"), Err(PathError::ExecLength));
        assert!(ev("mem:0x10/8:x").is_ok());
    }

    #[test]
    fn zero_length_is_refused() {
        assert_eq!(ev("mem:0x10/0:w"), Err(PathError::ZeroLength));
    }

    #[test]
    fn range_past_the_address_space_is_refused() {
        assert_eq!(ev("mem:0xffffffffffffffff/2:w"), Err(PathError::RangeOverflow));
        assert!(ev("mem:0xffffffffffffffff/1:w").is_ok());
    }

    #[test]
    fn malformed_numbers_are_refused() {
        for s in ["mem:", "mem:0x", "mem:+5", "mem:1_000", "mem: 5", "mem:0x1g", "mem:18446744073709551616", "mem:-1"] {
            assert_eq!(ev(s), Err(PathError::BadAddress), "{s}");
        }
        for s in ["mem:0x10/", "mem:0x10/x:w", "mem:0x10/+2", "mem:0x10/2/2"] {
            assert_eq!(ev(s), Err(PathError::BadLength), "{s}");
        }
    }

    #[test]
    fn missing_mem_prefix_is_refused() {
        assert_eq!(ev("0x10:w"), Err(PathError::NotMemEvent));
        assert_eq!(ev("MEM:0x10"), Err(PathError::NotMemEvent));
        assert_eq!(ev(""), Err(PathError::NotMemEvent));
    }

    #[test]
    fn trailing_colon_section_is_refused() {
        assert_eq!(ev("mem:0x10:w:w"), Err(PathError::BadAccess));
    }

    #[test]
    fn canonical_form_spells_every_part() {
        assert_eq!(ev("mem:4096").unwrap().to_string(), "mem:0x1000/4:rw");
        assert_eq!(ev("mem:0x1000:x").unwrap().to_string(), "mem:0x1000/8:x");
        assert_eq!(format_mem_event(&parse_mem_event("mem:0xAB/6:wr").unwrap()), "mem:0xab/6:rw");
    }

    #[test]
    fn access_codes_are_dr7_rw_encodings() {
        assert_eq!(Access::Exec.code(), 0);
        assert_eq!(Access::Write.code(), 1);
        assert_eq!(Access::ReadWrite.code(), 3);
        for a in Access::ALL {
            assert_eq!(Access::from_code(a.code()), Some(a));
        }
        assert_eq!(Access::from_code(2), None);
    }
}
