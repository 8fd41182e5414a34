//! The few system calls the Redox backend makes, as a trait, so that the
//! backend's logic (process plans, counts, exit and identity events, hit
//! decoding, disarming) is tested on the host against a model of the
//! kernel ABI (`backend::tests`), and runs on Redox over libredox
//! (`RedoxSys`, compiled for Redox only).
//!
//! Errors are plain errno values: the backend turns them into
//! [`hwbpd::KernelError`]s, the scheme into errno replies.

/// A failed call's errno.
pub type Errno = i32;

pub trait Sys {
    /// An open file descriptor; dropping it closes it.
    type Fd;

    /// `open(path, O_RDWR | O_CLOEXEC)` (read-only for `sys:` listings).
    fn open(&self, path: &str) -> Result<Self::Fd, Errno>;
    /// `dup(fd, name)`: the way proc: handles are opened.
    fn dup(&self, fd: &Self::Fd, name: &str) -> Result<Self::Fd, Errno>;
    fn read(&self, fd: &Self::Fd, buf: &mut [u8]) -> Result<usize, Errno>;
    fn write(&self, fd: &Self::Fd, buf: &[u8]) -> Result<usize, Errno>;
    /// The fd's number in this process's file table.
    fn raw(&self, fd: &Self::Fd) -> usize;
    /// An fd number inherited from whoever started the process.
    fn inherited(&self, raw: usize) -> Self::Fd;
    /// `CLOCK_MONOTONIC`, nanoseconds.
    fn monotonic_ns(&self) -> u64;
    /// The time-stamp counter.
    fn tsc(&self) -> u64;
}

#[cfg(target_os = "redox")]
pub use redox_impl::RedoxSys;

#[cfg(target_os = "redox")]
mod redox_impl {
    use libredox::Fd;
    use libredox::flag::{CLOCK_MONOTONIC, O_CLOEXEC, O_RDWR};

    use super::{Errno, Sys};

    /// The real calls, through libredox (relibc's `redox_*_v1` functions).
    pub struct RedoxSys;

    impl Sys for RedoxSys {
        type Fd = Fd;

        fn open(&self, path: &str) -> Result<Fd, Errno> {
            // sys: listings are read-only files; everything else is O_RDWR.
            let access = if path.starts_with("/scheme/sys/") { libredox::flag::O_RDONLY } else { O_RDWR };
            Fd::open(path, O_CLOEXEC | access, 0).map_err(|e| e.errno())
        }

        fn dup(&self, fd: &Fd, name: &str) -> Result<Fd, Errno> {
            fd.dup(name.as_bytes()).map(Fd::new).map_err(|e| e.errno())
        }

        fn read(&self, fd: &Fd, buf: &mut [u8]) -> Result<usize, Errno> {
            fd.read(buf).map_err(|e| e.errno())
        }

        fn write(&self, fd: &Fd, buf: &[u8]) -> Result<usize, Errno> {
            fd.write(buf).map_err(|e| e.errno())
        }

        fn raw(&self, fd: &Fd) -> usize {
            fd.raw()
        }

        fn inherited(&self, raw: usize) -> Fd {
            Fd::new(raw)
        }

        fn monotonic_ns(&self) -> u64 {
            match libredox::call::clock_gettime(CLOCK_MONOTONIC) {
                Ok(ts) => {
                    let sec = u64::try_from(ts.tv_sec).unwrap_or(0);
                    let nsec = u64::try_from(ts.tv_nsec).unwrap_or(0);
                    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
                }
                Err(e) => {
                    log::error!("hwbpd: clock_gettime(CLOCK_MONOTONIC) failed: errno {}", e.errno());
                    0
                }
            }
        }

        fn tsc(&self) -> u64 {
            // SAFETY: `rdtsc` has no memory effects, and user mode may run
            // it (Redox does not set CR4.TSD).
            unsafe { core::arch::x86_64::_rdtsc() }
        }
    }
}
