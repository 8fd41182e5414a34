//! libhwbp: the client library of hwbp (hardware breakpoints for Redox) and
//! the ABI it shares with hwbpd. See README.md.
//!
//! - [`abi`]: the contract as types (paths, records, commands, errors);
//! - [`Transport`]: how the client reaches hwbpd (the real `/scheme/hwbp`
//!   on Redox, or an in-process server on the host);
//! - [`Breakpoint`], [`BreakpointHandle`], [`EventStream`]: the typed client;
//! - [`list`]: every breakpoint the caller may see (`/scheme/hwbp/list`).

#![forbid(unsafe_code)]

pub mod abi;
mod client;
pub mod listing;
#[cfg(target_os = "redox")]
pub mod redox;
pub mod transport;

pub use client::{Batch, BlockingIter, Breakpoint, BreakpointHandle, Error, EventStream, Result};
pub use listing::list;
pub use transport::Transport;

/// The transport of this platform's real hwbp scheme.
#[cfg(target_os = "redox")]
pub type SystemTransport = redox::RedoxTransport;
