//! Commands written to a breakpoint handle: one per write.
//!
//! `enable`, `disable`, `reset` (zero the count, times and lost), and
//! `modify <event>[?<options>]`. One trailing `\n` is tolerated. `modify`
//! without `?` keeps the breakpoint's current options; with `?` the
//! options are replaced (unnamed ones take their defaults). hwbpd applies
//! `modify` atomically: if the new event is invalid or does not fit, the
//! old one stays armed, unchanged.

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
            "modify" | "modify " => return Err(PathError::MissingEvent),
            "" => return Err(PathError::UnknownCommand(String::new())),
            _ => {}
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

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Enable => f.write_str("enable"),
            Command::Disable => f.write_str("disable"),
            Command::Reset => f.write_str("reset"),
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
