//! The few kernel services the selftest uses, over redox_syscall 0.9.2:
//! the root fds the kernel gives the first process, fd numbers we choose
//! ourselves (the kernel's `*_into` calls take the target fd), output on
//! `debug:`, and `sys:kstop`.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use hwbp_redox_selftest::Line;

/// Root fds of the kernel schemes: `UPPER_FDTBL_TAG | scheme_id`
/// (kernel `usermode_bootstrap`; ids from redox_syscall's scheme list).
const UPPER: usize = syscall::UPPER_FDTBL_TAG;
pub const DEBUG_ROOT: usize = UPPER | 1;
pub const SYS_ROOT: usize = UPPER | 8;
pub const PROC_ROOT: usize = UPPER | 9;

/// fds we hand out: 0..64 of the lower table, which the kernel sized to 64.
static USED_FDS: AtomicU64 = AtomicU64::new(0);
static OUT_FD: AtomicUsize = AtomicUsize::new(usize::MAX);

pub type Errno = i32;

fn alloc_fd() -> Result<usize, Errno> {
    let used = USED_FDS.load(Ordering::Relaxed);
    let free = (!used).trailing_zeros() as usize;
    if free >= 64 {
        return Err(syscall::EMFILE);
    }
    USED_FDS.store(used | (1 << free), Ordering::Relaxed);
    Ok(free)
}

fn release_fd(fd: usize) {
    if fd < 64 {
        USED_FDS.fetch_and(!(1u64 << fd), Ordering::Relaxed);
    }
}

/// redox_syscall 0.9.2 has no `close` wrapper.
fn close_raw(fd: usize) -> syscall::Result<usize> {
    // SAFETY: SYS_CLOSE takes an fd number and touches no user memory.
    unsafe { syscall::syscall1(syscall::SYS_CLOSE, fd) }
}

/// An open handle; closed on drop.
pub struct Fd(usize);

impl Fd {
    /// A handle that is not open (every call on it fails with EBADF).
    pub fn invalid() -> Fd {
        Fd(usize::MAX)
    }

    pub fn raw(&self) -> usize {
        self.0
    }

    pub fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        syscall::read(self.0, buf).map_err(|e| e.errno)
    }

    pub fn write(&self, buf: &[u8]) -> Result<usize, Errno> {
        syscall::write(self.0, buf).map_err(|e| e.errno)
    }

    /// Close now, reporting the kernel's answer.
    pub fn close(self) -> Result<(), Errno> {
        let fd = self.0;
        core::mem::forget(self);
        release_fd(fd);
        close_raw(fd).map(|_| ()).map_err(|e| e.errno)
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        let _ = close_raw(self.0);
        release_fd(self.0);
    }
}

/// `dup(fd, name)` into a free fd of ours.
pub fn dup(fd: usize, name: &str) -> Result<Fd, Errno> {
    let out = alloc_fd()?;
    match syscall::dup_into(fd, out, name.as_bytes()) {
        Ok(got) => Ok(Fd(got)),
        Err(e) => {
            release_fd(out);
            Err(e.errno)
        }
    }
}

/// `openat(fd, path)` into a free fd of ours.
pub fn openat(fd: usize, path: &str, flags: usize) -> Result<Fd, Errno> {
    let out = alloc_fd()?;
    match syscall::openat_into(fd, out, path, flags, 0) {
        Ok(got) => Ok(Fd(got)),
        Err(e) => {
            release_fd(out);
            Err(e.errno)
        }
    }
}

/// Open `debug:` for output. Until it works, output is lost (there is no
/// other channel for the first process).
pub fn init_output() -> Result<(), Errno> {
    let fd = openat(DEBUG_ROOT, "", syscall::O_WRONLY)?;
    OUT_FD.store(fd.raw(), Ordering::Relaxed);
    core::mem::forget(fd);
    Ok(())
}

pub fn out_fd() -> usize {
    OUT_FD.load(Ordering::Relaxed)
}

/// Print one line on `debug:` (the kernel log / serial port).
pub fn say(args: fmt::Arguments) {
    let mut line = Line::default();
    let _ = line.write_fmt(args);
    let _ = line.write_str("\n");
    let _ = syscall::write(out_fd(), line.as_bytes());
}

#[macro_export]
macro_rules! say {
    ($($t:tt)*) => { $crate::sys::say(format_args!($($t)*)) };
}

pub fn yield_now() {
    let _ = syscall::sched_yield();
}

/// Power off through `sys:kstop`. Returns only if that failed.
pub fn shutdown() -> Errno {
    match openat(SYS_ROOT, "kstop", syscall::O_WRONLY) {
        Ok(fd) => match fd.write(b"shutdown") {
            Ok(_) => 0,
            Err(e) => e,
        },
        Err(e) => e,
    }
}

/// Monotonic time in nanoseconds.
pub fn now_ns() -> u64 {
    let mut ts = syscall::TimeSpec::default();
    let _ = syscall::clock_gettime(syscall::CLOCK_MONOTONIC, &mut ts);
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

/// Block while `*word == expected`, at most until `deadline_ns` (monotonic,
/// absolute, as the kernel's FUTEX_WAIT takes it). Spurious returns are
/// fine: callers re-check their condition.
pub fn futex_wait(word: &core::sync::atomic::AtomicU32, expected: u32, deadline_ns: u64) {
    let timeout = syscall::TimeSpec {
        tv_sec: (deadline_ns / 1_000_000_000) as i64,
        tv_nsec: (deadline_ns % 1_000_000_000) as i32,
    };
    // SAFETY: the word is a live atomic; the kernel reads it and the
    // timeout, and writes nothing.
    let _ = unsafe {
        syscall::futex(
            word.as_ptr().cast::<i32>(),
            syscall::FUTEX_WAIT,
            expected as i32,
            &raw const timeout as usize,
            core::ptr::null_mut(),
        )
    };
}

/// Wake every context waiting on `word`.
pub fn futex_wake(word: &core::sync::atomic::AtomicU32) {
    // SAFETY: as above; FUTEX_WAKE only looks the address up.
    let _ = unsafe { syscall::futex(word.as_ptr().cast::<i32>(), syscall::FUTEX_WAKE, i32::MAX, 0, core::ptr::null_mut()) };
}

/// Block this context for good (futex wait on a word nobody wakes).
pub fn park() -> ! {
    static NEVER: core::sync::atomic::AtomicI32 = core::sync::atomic::AtomicI32::new(0);
    loop {
        // SAFETY: FUTEX_WAIT only reads the word, which is a live static.
        let _ = unsafe { syscall::futex(NEVER.as_ptr(), syscall::FUTEX_WAIT, 0, 0, core::ptr::null_mut()) };
        yield_now();
    }
}
