//! hwbpd on Redox (package `hwbpd-redox`, whose binary is `hwbpd`): the
//! [`hwbpd::Kernel`] backend over the patched kernel's proc: handles
//! (`kernel-patch/ABI.md`) and the daemon's main loop. See `README.md` in
//! this directory for why it is a package of its own and what was verified
//! where.
//!
//! The backend makes its calls through the [`sys::Sys`] trait, so it builds
//! on every target and is tested on the host against a model of the kernel
//! ABI (`backend::tests`), as are the pure parts (the
//! `sys:context` parser, TSC conversion, the `time:` record and
//! timer arithmetic, the logger's level, `INIT_NOTIFY` parsing). What makes
//! real Redox calls (`sys::RedoxSys`, the daemon's main loop) is compiled
//! for `target_os = "redox"` only and type-checked in CI by
//! `tests/redox-check.sh`.

pub mod backend;
pub mod contexts;
pub mod logger;
pub mod sys;
pub mod timespec;
pub mod tsc;

#[cfg(target_os = "redox")]
pub mod daemon;

#[cfg(target_os = "redox")]
pub use daemon::main;

/// The scheme's name: `/scheme/hwbp`.
pub const SCHEME_NAME: &str = "hwbp";

/// The variable through which init passes a scheme service its notify pipe
/// (base's `daemon` crate: the fd number in decimal).
pub const INIT_NOTIFY_VAR: &str = "INIT_NOTIFY";

/// The fd number in an `INIT_NOTIFY` value.
pub fn parse_notify_fd(value: &str) -> Option<usize> {
    value.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_notify_holds_a_decimal_fd() {
        assert_eq!(parse_notify_fd("7"), Some(7));
        assert_eq!(parse_notify_fd(" 12\n"), Some(12));
        assert_eq!(parse_notify_fd("-1"), None);
        assert_eq!(parse_notify_fd("fd3"), None);
    }
}
