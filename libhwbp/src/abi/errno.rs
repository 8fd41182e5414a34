//! Error numbers of the hwbp contract (section 5), and what each means.
//!
//! hwbpd reports every refusal as one of these errno values (and logs one
//! line saying why); clients see them as `io::Error::raw_os_error()`.
//! The numbers are the same on Redox (redox_syscall) and Linux, which is what
//! lets the in-process host transport and the real `/scheme/hwbp` return the
//! same values. A test checks them against the platform's libc.

use core::fmt;

/// Operation not permitted: target owned by another user, a cpu-wide target,
/// a kernel address or the `kernel` option without root.
pub const EPERM: i32 = 1;
/// No such task or CPU.
pub const ESRCH: i32 = 3;
/// Unknown handle.
pub const EBADF: i32 = 9;
/// Nothing to read without blocking (O_NONBLOCK event stream).
pub const EAGAIN: i32 = 11;
/// hwbpd could not allocate what the call needed; nothing changed.
pub const ENOMEM: i32 = 12;
/// Malformed path, event, option, length, alignment, access or command.
pub const EINVAL: i32 = 22;
/// Per-user quota reached: open breakpoints, or event streams (contract 7).
pub const EMFILE: i32 = 24;
/// A pinned breakpoint cannot fit in the debug registers.
pub const ENOSPC: i32 = 28;
/// Redox's EWOULDBLOCK, which is NOT EAGAIN there (Linux: both 11). A scheme
/// returns it to have `redox_scheme::wrappers::ReadinessBased` park a
/// blocking read; a caller that asked for O_NONBLOCK receives it unchanged.
/// Clients must treat it like [`EAGAIN`].
pub const EWOULDBLOCK_REDOX: i32 = 41;

/// The errors of the contract, by meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// EINVAL.
    Invalid,
    /// ENOSPC.
    NoSpace,
    /// EPERM.
    NotPermitted,
    /// ESRCH.
    NoSuchTarget,
    /// EMFILE.
    QuotaReached,
    /// EAGAIN (or Redox's EWOULDBLOCK).
    WouldBlock,
    /// EBADF.
    BadHandle,
    /// ENOMEM.
    OutOfMemory,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::Invalid,
        ErrorKind::NoSpace,
        ErrorKind::NotPermitted,
        ErrorKind::NoSuchTarget,
        ErrorKind::QuotaReached,
        ErrorKind::WouldBlock,
        ErrorKind::BadHandle,
        ErrorKind::OutOfMemory,
    ];

    /// The errno hwbpd returns for this kind.
    pub const fn errno(self) -> i32 {
        match self {
            ErrorKind::Invalid => EINVAL,
            ErrorKind::NoSpace => ENOSPC,
            ErrorKind::NotPermitted => EPERM,
            ErrorKind::NoSuchTarget => ESRCH,
            ErrorKind::QuotaReached => EMFILE,
            ErrorKind::WouldBlock => EAGAIN,
            ErrorKind::BadHandle => EBADF,
            ErrorKind::OutOfMemory => ENOMEM,
        }
    }

    /// The kind an errno stands for, if the contract names it.
    pub const fn from_errno(errno: i32) -> Option<ErrorKind> {
        Some(match errno {
            EINVAL => ErrorKind::Invalid,
            ENOSPC => ErrorKind::NoSpace,
            EPERM => ErrorKind::NotPermitted,
            ESRCH => ErrorKind::NoSuchTarget,
            EMFILE => ErrorKind::QuotaReached,
            EAGAIN | EWOULDBLOCK_REDOX => ErrorKind::WouldBlock,
            EBADF => ErrorKind::BadHandle,
            ENOMEM => ErrorKind::OutOfMemory,
            _ => return None,
        })
    }

    /// The contract's wording of this error.
    pub const fn meaning(self) -> &'static str {
        match self {
            ErrorKind::Invalid => "malformed path, event, option, length, alignment, access or command",
            ErrorKind::NoSpace => "a pinned breakpoint cannot fit in the debug registers",
            ErrorKind::NotPermitted => "not allowed (target, cpu-wide, kernel address or option without root)",
            ErrorKind::NoSuchTarget => "no such task or CPU",
            ErrorKind::QuotaReached => "per-user quota of open breakpoints or event streams reached",
            ErrorKind::WouldBlock => "nothing to read without blocking",
            ErrorKind::BadHandle => "unknown handle",
            ErrorKind::OutOfMemory => "hwbpd could not allocate what the call needed",
        }
    }

    /// An `io::Error` carrying this kind's errno.
    pub fn to_io_error(self) -> std::io::Error {
        std::io::Error::from_raw_os_error(self.errno())
    }

    /// The contract kind of an `io::Error`, from its errno (or, failing
    /// that, `io::ErrorKind::WouldBlock`).
    pub fn of_io_error(e: &std::io::Error) -> Option<ErrorKind> {
        match e.raw_os_error() {
            Some(n) => ErrorKind::from_errno(n),
            None if e.kind() == std::io::ErrorKind::WouldBlock => Some(ErrorKind::WouldBlock),
            None => None,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.meaning())
    }
}

impl From<ErrorKind> for std::io::Error {
    fn from(k: ErrorKind) -> Self {
        k.to_io_error()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn errno_numbers_equal_the_platform_libc() {
        assert_eq!(EPERM, libc::EPERM);
        assert_eq!(ESRCH, libc::ESRCH);
        assert_eq!(EBADF, libc::EBADF);
        assert_eq!(EAGAIN, libc::EAGAIN);
        assert_eq!(EINVAL, libc::EINVAL);
        assert_eq!(EMFILE, libc::EMFILE);
        assert_eq!(ENOSPC, libc::ENOSPC);
        assert_eq!(ENOMEM, libc::ENOMEM);
    }

    #[test]
    fn every_kind_round_trips_through_its_errno() {
        for k in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_errno(k.errno()), Some(k));
            assert_eq!(ErrorKind::of_io_error(&k.to_io_error()), Some(k));
        }
    }

    #[test]
    fn redox_ewouldblock_reads_as_would_block() {
        assert_eq!(ErrorKind::from_errno(EWOULDBLOCK_REDOX), Some(ErrorKind::WouldBlock));
        assert_eq!(ErrorKind::from_errno(2), None);
    }
}
