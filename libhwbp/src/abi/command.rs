//! Commands written to a breakpoint handle: one per write.
//!
//! `enable`, `disable`, `reset` (zero the count, times and lost),
//! `modify <event>[?<options>]`, and `resume [<tid>]`. One trailing `\n` is
//! tolerated. `modify` without `?` keeps the breakpoint's current options;
//! with `?` the options are replaced (unnamed ones take their defaults).
//! hwbpd applies `modify` atomically: if the new event is invalid or does
//! not fit, the old one stays armed, unchanged.
//!
//! `resume <tid>` runs again a thread this breakpoint stopped (option
//! `stop`; `tid` as in its hit records), `resume` every thread it stopped.
//! A tid is decimal digits; one too large for a u64 is well-formed and
//! names no thread (hwbpd: ESRCH, as for task ids), anything else is
//! EINVAL ([`PathError::BadThreadId`]).

use core::fmt;

use super::event::MemEvent;
use super::error::PathError;
use super::path::{parse_event_and_options, Options};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Enable,
    Disable,
    Reset,
    Modify { event: MemEvent, options: Option<Options> },
    /// `resume <tid>` (`Some`) or `resume` (`None`: every thread the
    /// breakpoint stopped).
    Resume { tid: Option<u64> },
}

impl Command {
    /// Parse the bytes of one write.
    pub fn parse_bytes(b: &[u8]) -> Result<Command, PathError> {
        Command::parse(core::str::from_utf8(b).map_err(|_| PathError::NotUtf8)?)
    }

    pub fn parse(s: &str) -> Result<Command, PathError> {
        let s = s.strip_suffix('\n').unwrap_or(s);
        match s {
            "enable" => return Ok(Command::Enable),
            "disable" => return Ok(Command::Disable),
            "reset" => return Ok(Command::Reset),
            "resume" => return Ok(Command::Resume { tid: None }),
            "modify" | "modify " => return Err(PathError::MissingEvent),
            "" => return Err(PathError::UnknownCommand(String::new())),
            _ => {}
        }
        if let Some(tid) = s.strip_prefix("resume ") {
            return parse_tid(tid).map(|tid| Command::Resume { tid: Some(tid) });
        }
        let Some(rest) = s.strip_prefix("modify ") else {
            let word = s.split([' ', '\n']).next().unwrap_or("");
            return Err(if matches!(word, "enable" | "disable" | "reset") {
                PathError::TrailingJunk
            } else {
                PathError::UnknownCommand(word.to_string())
            });
        };
        let (event, options) = parse_event_and_options(rest)?;
        Ok(Command::Modify { event, options })
    }
}

/// A thread id: decimal digits only; too large for a u64 saturates (a
/// well-formed id that names no thread).
fn parse_tid(s: &str) -> Result<u64, PathError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PathError::BadThreadId);
    }
    Ok(s.parse().unwrap_or(u64::MAX))
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Enable => f.write_str("enable"),
            Command::Disable => f.write_str("disable"),
            Command::Reset => f.write_str("reset"),
            Command::Resume { tid: None } => f.write_str("resume"),
            Command::Resume { tid: Some(tid) } => write!(f, "resume {tid}"),
            Command::Modify { event, options } => {
                write!(f, "modify {event}")?;
                match options {
                    None => {}
                    // "Replace the options with the defaults" differs from
                    // "keep them", and `?` alone does not parse: spell one
                    // default explicitly.
                    Some(o) if o.is_default() => f.write_str("?period=1")?,
                    Some(o) => write!(f, "?{o}")?,
                }
                Ok(())
            }
        }
    }
}
