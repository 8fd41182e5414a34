//! hwbp-gdbstub: a gdb remote stub whose hardware breakpoints and
//! watchpoints are hwbp breakpoints. See README.md.
//!
//! Layers, each usable without the ones below it:
//! - [`rsp`]: packets on the wire (framing, checksums, acks, escaping);
//! - [`command`]: packets as commands, stop replies and errors;
//! - [`session`]: the loop that serves a [`target::Target`] to gdb;
//! - [`hw`]: the only part that speaks hwbp: `Z1`-`Z4` as libhwbp
//!   breakpoints, their hits as stop reasons;
//! - [`sim`] (host, feature `sim`): the simulated task.

#![forbid(unsafe_code)]

pub mod command;
pub mod hw;
pub mod regs;
pub mod rsp;
pub mod session;
#[cfg(all(feature = "sim", not(target_os = "redox")))]
pub mod sim;
pub mod target;
