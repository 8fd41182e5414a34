//! The debug-register conformance table: one shared file of vectors
//! (`tests/vectors/dr-conformance.txt`) that `hwbpd`'s simulated kernel and
//! the QEMU testbed both run, so the model is checked against emulated
//! hardware. This module only parses it (no_std, no allocation).
//!
//! One vector per line; `#` starts a comment:
//!
//! ```text
//! <name> <slots> <op> <expect>
//! slots:  -  |  dr<i>=<offset>/<len>/<x|w|rw>[,dr<i>=...]
//! op:     <r|w|x>@<offset>/<size>
//! expect: B0-B3 bits DR6 reports, in hex (0x0 = no #DB)
//! ```
//!
//! Offsets are relative to a 4 KiB-aligned page that the runner provides
//! (and fills with `ret` for exec vectors). A breakpoint offset need not be
//! aligned: such vectors record how the hardware masks the address.
//! Vectors where a breakpoint address or the access is unaligned are where
//! QEMU departs from the SDM ([`Vector::is_aligned`]).

use crate::NUM_SLOTS;
use crate::piece::{Access, Len};

/// One breakpoint of a vector. Unlike [`crate::Piece`] the offset is raw:
/// vectors may arm what hwbp itself never would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotSetup {
    pub offset: u64,
    pub len: Len,
    pub access: Access,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Read,
    Write,
    Exec,
}

/// The access the runner performs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Op {
    pub kind: OpKind,
    pub offset: u64,
    /// 1, 2, 4 or 8 bytes (1 for exec).
    pub size: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vector<'a> {
    pub name: &'a str,
    pub slots: [Option<SlotSetup>; NUM_SLOTS],
    pub op: Op,
    /// B0-B3 as DR6 must report them.
    pub expect: u8,
}

impl Vector<'_> {
    /// Every breakpoint address is a multiple of its length, and the access
    /// is naturally aligned: the cases where QEMU follows the SDM.
    pub fn is_aligned(&self) -> bool {
        let op_aligned = self.op.offset.is_multiple_of(u64::from(self.op.size.max(1)));
        op_aligned && self.slots.iter().flatten().all(|s| s.offset.is_multiple_of(s.len.bytes()))
    }

    /// The SDM's answer: a slot fires when its condition matches the access
    /// and the access overlaps `[A & !(L-1), +L)`. Exec slots match an
    /// instruction that starts at A exactly. This is the rule the table was
    /// generated with; the model and the testbed are checked against the
    /// table, not against this function.
    pub fn sdm_expected(&self) -> u8 {
        let mut bits = 0;
        for (i, slot) in self.slots.iter().enumerate() {
            let Some(s) = slot else { continue };
            let fires = match (s.access, self.op.kind) {
                (Access::Exec, OpKind::Exec) => self.op.offset == s.offset,
                (Access::Exec, _) | (_, OpKind::Exec) => false,
                (access, kind) => {
                    let start = s.offset & !s.len.bytes().wrapping_sub(1);
                    let end = start.saturating_add(s.len.bytes());
                    let op_end = self.op.offset.saturating_add(u64::from(self.op.size));
                    access.matches_data(kind == OpKind::Write) && self.op.offset < end && start < op_end
                }
            };
            if fires {
                bits |= 1 << i;
            }
        }
        bits
    }
}

/// Why a line did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    pub what: &'static str,
}

/// The vectors of `table`, in order. Blank and comment lines are skipped.
pub fn parse(table: &str) -> impl Iterator<Item = Result<Vector<'_>, ParseError>> {
    table.lines().enumerate().filter_map(|(i, raw)| {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            return None;
        }
        Some(parse_line(line).map_err(|what| ParseError { line: i.saturating_add(1), what }))
    })
}

fn parse_line(line: &str) -> Result<Vector<'_>, &'static str> {
    let mut fields = line.split_ascii_whitespace();
    let name = fields.next().ok_or("missing name")?;
    let slots = parse_slots(fields.next().ok_or("missing slots")?)?;
    let op = parse_op(fields.next().ok_or("missing op")?)?;
    let expect = fields.next().ok_or("missing expect")?;
    let expect = parse_u64(expect).filter(|&e| e < 16).ok_or("bad expect")? as u8;
    if fields.next().is_some() {
        return Err("trailing fields");
    }
    Ok(Vector { name, slots, op, expect })
}

fn parse_slots(field: &str) -> Result<[Option<SlotSetup>; NUM_SLOTS], &'static str> {
    let mut slots = [None; NUM_SLOTS];
    if field == "-" {
        return Ok(slots);
    }
    for spec in field.split(',') {
        let (reg, rest) = spec.split_once('=').ok_or("slot without '='")?;
        let index = reg.strip_prefix("dr").and_then(|n| n.parse::<usize>().ok()).ok_or("bad register")?;
        let mut parts = rest.split('/');
        let offset = parts.next().and_then(parse_u64).ok_or("bad slot offset")?;
        let len = parts.next().and_then(parse_u64).and_then(Len::from_bytes).ok_or("bad slot length")?;
        let access = match parts.next() {
            Some("x") => Access::Exec,
            Some("w") => Access::Write,
            Some("rw") => Access::ReadWrite,
            _ => return Err("bad slot access"),
        };
        let slot = slots.get_mut(index).ok_or("register out of range")?;
        if slot.is_some() {
            return Err("register given twice");
        }
        *slot = Some(SlotSetup { offset, len, access });
    }
    Ok(slots)
}

fn parse_op(field: &str) -> Result<Op, &'static str> {
    let (kind, rest) = field.split_once('@').ok_or("op without '@'")?;
    let kind = match kind {
        "r" => OpKind::Read,
        "w" => OpKind::Write,
        "x" => OpKind::Exec,
        _ => return Err("bad op kind"),
    };
    let (offset, size) = rest.split_once('/').ok_or("op without size")?;
    let offset = parse_u64(offset).filter(|&o| o < 4096).ok_or("bad op offset")?;
    let size = parse_u64(size).and_then(Len::from_bytes).ok_or("bad op size")?.bytes() as u8;
    if offset.saturating_add(u64::from(size)) > 4096 {
        return Err("op leaves the page");
    }
    Ok(Op { kind, offset, size })
}

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_parses_into_its_parts() {
        let v: std::vec::Vec<_> =
            parse("# c\n\nw4 dr0=0x10/4/w,dr3=0x20/8/rw w@0x12/2 0x1 # t\n").collect::<Result<_, _>>().unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].name, "w4");
        assert_eq!(v[0].slots[0], Some(SlotSetup { offset: 0x10, len: Len::Four, access: Access::Write }));
        assert_eq!(v[0].slots[3], Some(SlotSetup { offset: 0x20, len: Len::Eight, access: Access::ReadWrite }));
        assert_eq!(v[0].op, Op { kind: OpKind::Write, offset: 0x12, size: 2 });
        assert_eq!(v[0].expect, 1);
        assert!(v[0].is_aligned());
        assert_eq!(v[0].sdm_expected(), 1);
    }

    #[test]
    fn malformed_lines_are_errors_with_line_numbers() {
        let errs: std::vec::Vec<_> = parse("a - r@0/1 0x0\nb dr4=0/1/w r@0/1 0\nc - r@4095/2 0\nd - q@0/1 0")
            .filter_map(Result::err)
            .collect();
        assert_eq!(errs.iter().map(|e| e.line).collect::<std::vec::Vec<_>>(), [2, 3, 4]);
    }

    #[test]
    fn the_shared_table_parses_and_agrees_with_the_sdm_rule() {
        let table = include_str!("../../../tests/vectors/dr-conformance.txt");
        let mut n = 0;
        for v in parse(table) {
            let v = v.unwrap();
            assert_eq!(v.expect, v.sdm_expected(), "{}", v.name);
            n += 1;
        }
        assert!(n > 1000, "the table covers every length x access x slot x op: {n} vectors");
    }
}
