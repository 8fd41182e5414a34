//! The command layer: gdb's packets parsed into [`Command`]s, and the
//! reply texts (stop replies, errors). Pure: no I/O, no target.

use core::fmt::Write as _;

use crate::target::{Point, PointKind, Stop, StopReason, ThreadId, WatchKind};

/// Largest packet this stub accepts (advertised in `qSupported`).
pub const PACKET_SIZE: usize = 0x4000;

/// A request from gdb.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `qSupported[:features]`.
    Supported,
    /// `QStartNoAckMode`.
    StartNoAckMode,
    /// `?`.
    HaltReason,
    /// `g`.
    ReadRegisters,
    /// `G<hex>`.
    WriteRegisters(Vec<u8>),
    /// `p<n>`.
    ReadRegister(usize),
    /// `P<n>=<hex>`.
    WriteRegister(usize, Vec<u8>),
    /// `m<addr>,<len>`.
    ReadMemory { addr: u64, len: usize },
    /// `M<addr>,<len>:<hex>`.
    WriteMemory { addr: u64, data: Vec<u8> },
    /// `c[addr]`, `C<sig>[;addr]` (a resume address is not supported).
    Continue,
    /// `s[addr]`, `S<sig>[;addr]`.
    Step,
    /// `Z<type>,<addr>,<kind>`.
    InsertPoint(Point),
    /// `z<type>,<addr>,<kind>`.
    RemovePoint(Point),
    /// `k` or `vKill;<pid>`.
    Kill,
    /// `D[;pid]`.
    Detach,
    /// `H<op><thread>`.
    SetThread,
    /// `T<thread>`: is it alive?
    ThreadAlive(ThreadId),
    /// `qC`.
    CurrentThread,
    /// `qfThreadInfo`.
    FirstThreadInfo,
    /// `qsThreadInfo`.
    NextThreadInfo,
    /// `qAttached`.
    Attached,
    /// `qXfer:features:read:<annex>:<offset>,<length>`.
    ReadFeatures {
        annex: String,
        offset: usize,
        len: usize,
    },
    /// Anything else: answered with an empty packet ("not supported").
    Unknown,
    /// A packet this stub knows, with arguments it cannot parse.
    Malformed,
}

/// Parse hex digits (no prefix) into a number.
pub fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let text = core::str::from_utf8(s).ok()?;
    u64::from_str_radix(text, 16).ok()
}

/// Decode a hex string into bytes.
pub fn decode_hex_bytes(s: &[u8]) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.chunks(2)
        .map(|pair| parse_hex(pair).map(|v| v as u8))
        .collect()
}

/// Encode bytes as lower-case hex.
pub fn encode_hex_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn split_once(s: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|&b| b == sep)?;
    Some((&s[..i], &s[i + 1..]))
}

/// `<type>,<addr>,<kind>[;cond...]` after the `Z`/`z`.
fn parse_point(args: &[u8]) -> Option<Point> {
    let (&digit, rest) = args.split_first()?;
    let kind = PointKind::from_digit(digit)?;
    let rest = rest.strip_prefix(b",")?;
    let (addr, rest) = split_once(rest, b',')?;
    // Conditions and commands after ';' (target-side conditions) are not
    // advertised, so gdb does not send them; ignore any.
    let len = rest.split(|&b| b == b';').next()?;
    Some(Point {
        kind,
        addr: parse_hex(addr)?,
        len: parse_hex(len)?,
    })
}

/// A thread id as gdb writes it: hex, `-1` (all) or `0` (any); with the
/// multiprocess extension `p<pid>.<tid>`.
fn parse_thread(s: &[u8]) -> Option<ThreadId> {
    let s = match s.strip_prefix(b"p") {
        Some(rest) => split_once(rest, b'.').map_or(rest, |(_, tid)| tid),
        None => s,
    };
    if s == b"-1" {
        return Some(u64::MAX);
    }
    parse_hex(s)
}

impl Command {
    /// Parse one packet's payload.
    pub fn parse(p: &[u8]) -> Command {
        Self::try_parse(p).unwrap_or(Command::Malformed)
    }

    fn try_parse(p: &[u8]) -> Option<Command> {
        let Some((&first, rest)) = p.split_first() else {
            return Some(Command::Unknown);
        };
        Some(match first {
            b'?' => Command::HaltReason,
            b'g' if rest.is_empty() => Command::ReadRegisters,
            b'G' => Command::WriteRegisters(decode_hex_bytes(rest)?),
            b'p' => Command::ReadRegister(parse_hex(rest)? as usize),
            b'P' => {
                let (n, value) = split_once(rest, b'=')?;
                Command::WriteRegister(parse_hex(n)? as usize, decode_hex_bytes(value)?)
            }
            b'm' => {
                let (addr, len) = split_once(rest, b',')?;
                Command::ReadMemory {
                    addr: parse_hex(addr)?,
                    len: parse_hex(len)? as usize,
                }
            }
            b'M' => {
                let (range, data) = split_once(rest, b':')?;
                let (addr, len) = split_once(range, b',')?;
                let data = decode_hex_bytes(data)?;
                if data.len() as u64 != parse_hex(len)? {
                    return None;
                }
                Command::WriteMemory {
                    addr: parse_hex(addr)?,
                    data,
                }
            }
            // A resume address would move the pc first; gdb never sends one.
            b'c' | b'C' => Command::Continue,
            b's' | b'S' => Command::Step,
            b'Z' => Command::InsertPoint(parse_point(rest)?),
            b'z' => Command::RemovePoint(parse_point(rest)?),
            b'k' => Command::Kill,
            b'D' => Command::Detach,
            b'H' => Command::SetThread,
            b'T' => Command::ThreadAlive(parse_thread(rest)?),
            b'v' if p.starts_with(b"vKill") => Command::Kill,
            b'q' | b'Q' => Self::parse_query(p),
            _ => Command::Unknown,
        })
    }

    fn parse_query(p: &[u8]) -> Command {
        let name_end = p.iter().position(|&b| b == b':').unwrap_or(p.len());
        match &p[..name_end] {
            b"qSupported" => Command::Supported,
            b"QStartNoAckMode" => Command::StartNoAckMode,
            b"qC" => Command::CurrentThread,
            b"qfThreadInfo" => Command::FirstThreadInfo,
            b"qsThreadInfo" => Command::NextThreadInfo,
            b"qAttached" => Command::Attached,
            b"qXfer" => Self::parse_xfer(&p[name_end..]).unwrap_or(Command::Malformed),
            _ => Command::Unknown,
        }
    }

    /// `:features:read:<annex>:<offset>,<length>`.
    fn parse_xfer(p: &[u8]) -> Option<Command> {
        let rest = p.strip_prefix(b":features:read:")?;
        let (annex, range) = split_once(rest, b':')?;
        let (offset, len) = split_once(range, b',')?;
        Some(Command::ReadFeatures {
            annex: String::from_utf8(annex.to_vec()).ok()?,
            offset: parse_hex(offset)? as usize,
            len: parse_hex(len)? as usize,
        })
    }
}

/// The `qSupported` reply. `hwbreak+`: stop replies say `hwbreak` for
/// hardware breakpoints (and gdb then trusts them, as it does
/// gdbserver's). No `swbreak`: `Z0` is not served, gdb inserts `int3`
/// itself and recognises its own breakpoints.
pub fn supported_reply() -> String {
    format!("PacketSize={PACKET_SIZE:x};QStartNoAckMode+;qXfer:features:read+;hwbreak+")
}

/// An error reply. gdb treats every `Enn` alike (for a `Z` packet:
/// "Could not insert hardware breakpoints ..."); gdbserver's x86 target
/// answers `E01` to a point it cannot insert, and so does this stub.
pub const ERROR_REPLY: &str = "E01";

/// The reply to a `qXfer` read of `doc` at `offset` for `len` bytes.
pub fn xfer_chunk(doc: &[u8], offset: usize, len: usize) -> Vec<u8> {
    let start = offset.min(doc.len());
    let end = start.saturating_add(len).min(doc.len());
    let mut out = Vec::with_capacity(end - start + 1);
    out.push(if end == doc.len() { b'l' } else { b'm' });
    out.extend_from_slice(&doc[start..end]);
    out
}

/// The stop reply for `stop`:
/// - `T05watch:<addr>;` / `rwatch:` / `awatch:` for a watchpoint, with
///   the address gdb asked to watch (gdb finds its watchpoint by it);
/// - `T05hwbreak:;` for a hardware breakpoint;
/// - `T05` alone after a step; `W<status>` / `X<signal>` at the end.
///
/// Each `T` reply names the thread (`thread:<id>;`).
pub fn stop_reply(stop: &Stop) -> String {
    match *stop {
        Stop::Exited(status) => format!("W{status:02x}"),
        Stop::Killed(sig) => format!("X{sig:02x}"),
        Stop::Signal {
            signal,
            thread,
            reason,
        } => {
            let mut out = format!("T{signal:02x}");
            match reason {
                Some(StopReason::Watch { kind, addr }) => {
                    let name = match kind {
                        WatchKind::Write => "watch",
                        WatchKind::Read => "rwatch",
                        WatchKind::Access => "awatch",
                    };
                    let _ = write!(out, "{name}:{addr:x};");
                }
                Some(StopReason::HwBreak) => out.push_str("hwbreak:;"),
                Some(StopReason::Step) | None => {}
            }
            let _ = write!(out, "thread:{thread:x};");
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::signal::SIGTRAP;

    #[test]
    fn z_packets_parse_into_points_of_each_kind() {
        assert_eq!(
            Command::parse(b"Z2,404000,8"),
            Command::InsertPoint(Point {
                kind: PointKind::Write,
                addr: 0x404000,
                len: 8
            })
        );
        assert_eq!(
            Command::parse(b"z1,40102f,1"),
            Command::RemovePoint(Point {
                kind: PointKind::Hardware,
                addr: 0x40102f,
                len: 1
            })
        );
        assert_eq!(
            Command::parse(b"Z3,404008,8"),
            Command::InsertPoint(Point {
                kind: PointKind::Read,
                addr: 0x404008,
                len: 8
            })
        );
        assert_eq!(
            Command::parse(b"Z4,10,2;X2,0a"),
            Command::InsertPoint(Point {
                kind: PointKind::Access,
                addr: 0x10,
                len: 2
            })
        );
        assert_eq!(Command::parse(b"Z9,10,2"), Command::Malformed);
        assert_eq!(Command::parse(b"Z2,zz,8"), Command::Malformed);
    }

    #[test]
    fn memory_register_and_query_packets_parse() {
        assert_eq!(
            Command::parse(b"m401000,10"),
            Command::ReadMemory {
                addr: 0x401000,
                len: 16
            }
        );
        assert_eq!(
            Command::parse(b"M404000,2:0a0b"),
            Command::WriteMemory {
                addr: 0x404000,
                data: vec![10, 11]
            }
        );
        assert_eq!(
            Command::parse(b"M404000,3:0a0b"),
            Command::Malformed,
            "length disagrees with the data"
        );
        assert_eq!(
            Command::parse(b"P10=0510400000000000"),
            Command::WriteRegister(16, vec![5, 0x10, 0x40, 0, 0, 0, 0, 0])
        );
        assert_eq!(
            Command::parse(b"qSupported:multiprocess+;hwbreak+"),
            Command::Supported
        );
        assert_eq!(
            Command::parse(b"qXfer:features:read:target.xml:0,ffb"),
            Command::ReadFeatures {
                annex: "target.xml".into(),
                offset: 0,
                len: 0xffb
            }
        );
        assert_eq!(Command::parse(b"Tp1.2"), Command::ThreadAlive(2));
        assert_eq!(Command::parse(b"vMustReplyEmpty"), Command::Unknown);
        assert_eq!(Command::parse(b"vKill;2a"), Command::Kill);
        assert_eq!(Command::parse(b""), Command::Unknown);
    }

    #[test]
    fn stop_replies_name_the_watch_kind_and_address() {
        let stop = |reason| Stop::Signal {
            signal: SIGTRAP,
            thread: 1,
            reason: Some(reason),
        };
        assert_eq!(
            stop_reply(&stop(StopReason::Watch {
                kind: WatchKind::Write,
                addr: 0x404000
            })),
            "T05watch:404000;thread:1;"
        );
        assert_eq!(
            stop_reply(&stop(StopReason::Watch {
                kind: WatchKind::Read,
                addr: 0x8
            })),
            "T05rwatch:8;thread:1;"
        );
        assert_eq!(
            stop_reply(&stop(StopReason::Watch {
                kind: WatchKind::Access,
                addr: 0x10
            })),
            "T05awatch:10;thread:1;"
        );
        assert_eq!(
            stop_reply(&stop(StopReason::HwBreak)),
            "T05hwbreak:;thread:1;"
        );
        assert_eq!(stop_reply(&stop(StopReason::Step)), "T05thread:1;");
        assert_eq!(stop_reply(&Stop::Exited(0)), "W00");
        assert_eq!(stop_reply(&Stop::Killed(9)), "X09");
    }

    #[test]
    fn xfer_chunks_end_with_l() {
        assert_eq!(xfer_chunk(b"abcdef", 0, 4), b"mabcd");
        assert_eq!(xfer_chunk(b"abcdef", 4, 4), b"lef");
        assert_eq!(xfer_chunk(b"abcdef", 9, 4), b"l");
    }

    #[test]
    fn supported_says_hwbreak_and_the_packet_size() {
        let s = supported_reply();
        assert!(s.starts_with("PacketSize=4000;"));
        assert!(s.split(';').any(|f| f == "hwbreak+"));
    }
}
