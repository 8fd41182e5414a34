//! The stub's main loop: packets in, [`Command`]s to the [`Target`],
//! replies out. All-stop mode, one connection, one process.

use std::io::{self, Read, Write};

use crate::command::{self, Command, ERROR_REPLY, PACKET_SIZE};
use crate::regs::{self, Amd64Regs};
use crate::rsp::{Connection, Incoming};
use crate::target::{PointError, Resume, Stop, Target, TargetError, ThreadId};

/// How a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// gdb closed the connection.
    Disconnected,
    /// gdb killed the process (`k`, `vKill`).
    Killed,
    /// gdb detached (`D`).
    Detached,
}

/// Largest memory read served in one `m` reply (hex doubles it; room is
/// left for the framing).
const MAX_READ: usize = PACKET_SIZE / 2 - 16;

/// Serve `target` to gdb over `input`/`output` until gdb goes away.
pub fn serve<T: Target, R: Read, W: Write>(target: &mut T, input: R, output: W) -> io::Result<End> {
    let mut conn = Connection::new(input, output);
    let mut session = Session {
        target,
        last_stop: None,
        exited: false,
    };
    loop {
        let payload = match conn.receive()? {
            None => return Ok(End::Disconnected),
            Some(Incoming::Packet(p)) => p,
            // All-stop and synchronous: the target is stopped whenever a
            // packet can be read, so an interrupt has nothing to stop.
            Some(Incoming::Interrupt | Incoming::Corrupt) => continue,
        };
        log::debug!("gdbstub: <- {}", String::from_utf8_lossy(&payload));
        let cmd = Command::parse(&payload);
        let reply = session.handle(&cmd);
        log::debug!("gdbstub: -> {}", String::from_utf8_lossy(&reply));
        conn.send(&reply)?;
        match cmd {
            Command::StartNoAckMode => conn.disable_acks(),
            Command::Kill => return Ok(End::Killed),
            Command::Detach => return Ok(End::Detached),
            _ => {}
        }
    }
}

struct Session<'t, T: Target> {
    target: &'t mut T,
    /// The last stop reported (None: the initial one, asked of the target).
    last_stop: Option<Stop>,
    exited: bool,
}

fn error_reply(e: &TargetError) -> Vec<u8> {
    log::debug!("gdbstub: {e}");
    ERROR_REPLY.as_bytes().to_vec()
}

fn ok() -> Vec<u8> {
    b"OK".to_vec()
}

impl<T: Target> Session<'_, T> {
    fn thread(&self) -> ThreadId {
        match self.last_stop {
            Some(Stop::Signal { thread, .. }) => thread,
            _ => self.target.threads().first().copied().unwrap_or(1),
        }
    }

    fn handle(&mut self, cmd: &Command) -> Vec<u8> {
        match cmd {
            Command::Supported => command::supported_reply().into_bytes(),
            Command::StartNoAckMode => ok(),
            Command::HaltReason => {
                let stop = self.last_stop.unwrap_or_else(|| self.target.current_stop());
                command::stop_reply(&stop).into_bytes()
            }
            Command::ReadRegisters => match self.target.read_registers(self.thread()) {
                Ok(r) => r.encode_all().into_bytes(),
                Err(e) => error_reply(&e),
            },
            Command::WriteRegisters(bytes) => self.update_registers(|r| r.decode_all(bytes)),
            Command::ReadRegister(n) => match self.target.read_registers(self.thread()) {
                Ok(r) => r
                    .encode_one(*n)
                    .map_or_else(|| ERROR_REPLY.as_bytes().to_vec(), String::into_bytes),
                Err(e) => error_reply(&e),
            },
            Command::WriteRegister(n, bytes) => self.update_registers(|r| r.decode_one(*n, bytes)),
            Command::ReadMemory { addr, len } => {
                let mut buf = vec![0u8; (*len).min(MAX_READ)];
                match self.target.read_memory(*addr, &mut buf) {
                    Ok(n) => command::encode_hex_bytes(&buf[..n]).into_bytes(),
                    Err(e) => error_reply(&e),
                }
            }
            Command::WriteMemory { addr, data } => match self.target.write_memory(*addr, data) {
                Ok(()) => ok(),
                Err(e) => error_reply(&e),
            },
            Command::Continue => self.resume(Resume::Continue),
            Command::Step => self.resume(Resume::Step),
            Command::InsertPoint(p) => point_reply(self.target.insert_point(*p)),
            Command::RemovePoint(p) => point_reply(self.target.remove_point(*p)),
            Command::Kill => {
                self.target.kill();
                ok()
            }
            Command::Detach => {
                self.target.detach();
                ok()
            }
            Command::SetThread => ok(),
            Command::ThreadAlive(t) => {
                if self.target.threads().contains(t) {
                    ok()
                } else {
                    ERROR_REPLY.as_bytes().to_vec()
                }
            }
            Command::CurrentThread => format!("QC{:x}", self.thread()).into_bytes(),
            Command::FirstThreadInfo => {
                let threads = self.target.threads();
                if threads.is_empty() {
                    return b"l".to_vec();
                }
                let list: Vec<String> = threads.iter().map(|t| format!("{t:x}")).collect();
                format!("m{}", list.join(",")).into_bytes()
            }
            Command::NextThreadInfo => b"l".to_vec(),
            // The stub started the process: gdb kills it when it quits.
            Command::Attached => b"0".to_vec(),
            Command::ReadFeatures { annex, offset, len } => {
                if annex != "target.xml" {
                    return b"E00".to_vec();
                }
                command::xfer_chunk(regs::target_xml().as_bytes(), *offset, *len)
            }
            Command::Unknown => Vec::new(),
            Command::Malformed => ERROR_REPLY.as_bytes().to_vec(),
        }
    }

    fn update_registers(&mut self, apply: impl FnOnce(&mut Amd64Regs) -> Option<()>) -> Vec<u8> {
        let thread = self.thread();
        let mut regs = match self.target.read_registers(thread) {
            Ok(r) => r,
            Err(e) => return error_reply(&e),
        };
        if apply(&mut regs).is_none() {
            return ERROR_REPLY.as_bytes().to_vec();
        }
        match self.target.write_registers(thread, &regs) {
            Ok(()) => ok(),
            Err(e) => error_reply(&e),
        }
    }

    fn resume(&mut self, how: Resume) -> Vec<u8> {
        if self.exited {
            return ERROR_REPLY.as_bytes().to_vec();
        }
        match self.target.resume(how) {
            Ok(stop) => {
                self.exited = matches!(stop, Stop::Exited(_) | Stop::Killed(_));
                self.last_stop = Some(stop);
                command::stop_reply(&stop).into_bytes()
            }
            Err(e) => error_reply(&e),
        }
    }
}

fn point_reply(r: Result<(), PointError>) -> Vec<u8> {
    match r {
        Ok(()) => ok(),
        Err(PointError::Unsupported) => Vec::new(),
        Err(PointError::Refused { errno, why }) => {
            log::debug!("gdbstub: point refused ({errno:?}): {why}");
            ERROR_REPLY.as_bytes().to_vec()
        }
    }
}
