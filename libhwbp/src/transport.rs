//! How the client reaches hwbpd.
//!
//! The same client code drives the real `/scheme/hwbp` on Redox
//! ([`crate::redox::RedoxTransport`]) and an in-process hwbpd on the host
//! (implemented by hwbpd's crate, which depends on this one — never the
//! other way round). A transport is a thin file-like interface: the
//! semantics (paths, records, commands, errno values) are the contract's,
//! see [`crate::abi`].

use std::io;
use std::rc::Rc;
use std::sync::Arc;

/// A file-like connection to the hwbp scheme.
///
/// Errors are `io::Error`s whose `raw_os_error()` is the contract's errno
/// (see [`crate::abi::errno`]); "nothing to read" may be EAGAIN or Redox's
/// EWOULDBLOCK (41), and the client treats both alike.
pub trait Transport {
    /// An open file of the scheme (a breakpoint or an event stream).
    type Handle: Copy + Eq + std::fmt::Debug;

    /// Open `path`, relative to the scheme root (`task/42/mem:0x1000`,
    /// without `/scheme/hwbp/`). `nonblock` is O_NONBLOCK.
    fn open(&self, path: &str, nonblock: bool) -> io::Result<Self::Handle>;

    /// `dup(h, name)`: a new handle derived from `h` (`"events-v2"` opens
    /// the hit stream of a breakpoint; `"events"` its version-1 form). The new handle is blocking until
    /// [`Transport::set_nonblock`] says otherwise.
    fn dup(&self, h: Self::Handle, name: &str) -> io::Result<Self::Handle>;

    /// Read into `buf`. On an empty event stream: EAGAIN/EWOULDBLOCK when
    /// the handle is non-blocking; otherwise wait for a record (a transport
    /// that cannot wait, such as a single-threaded in-process server, also
    /// returns EAGAIN). `Ok(0)` means the stream has ended.
    fn read(&self, h: Self::Handle, buf: &mut [u8]) -> io::Result<usize>;

    /// Write one command.
    fn write(&self, h: Self::Handle, buf: &[u8]) -> io::Result<usize>;

    /// The handle's path, relative to the scheme root (no `/scheme/hwbp/`
    /// prefix; a transport strips it if the OS adds one).
    fn fpath(&self, h: Self::Handle, buf: &mut [u8]) -> io::Result<usize>;

    /// Set or clear O_NONBLOCK on the handle (`fcntl(F_SETFL)` on Redox).
    fn set_nonblock(&self, h: Self::Handle, nonblock: bool) -> io::Result<()>;

    /// Close the handle. For a breakpoint, it is disarmed before this returns.
    fn close(&self, h: Self::Handle) -> io::Result<()>;
}

macro_rules! forward_transport {
    ($($ptr:ty),*) => {$(
        impl<T: Transport + ?Sized> Transport for $ptr {
            type Handle = T::Handle;
            fn open(&self, path: &str, nonblock: bool) -> io::Result<Self::Handle> {
                (**self).open(path, nonblock)
            }
            fn dup(&self, h: Self::Handle, name: &str) -> io::Result<Self::Handle> {
                (**self).dup(h, name)
            }
            fn read(&self, h: Self::Handle, buf: &mut [u8]) -> io::Result<usize> {
                (**self).read(h, buf)
            }
            fn write(&self, h: Self::Handle, buf: &[u8]) -> io::Result<usize> {
                (**self).write(h, buf)
            }
            fn fpath(&self, h: Self::Handle, buf: &mut [u8]) -> io::Result<usize> {
                (**self).fpath(h, buf)
            }
            fn set_nonblock(&self, h: Self::Handle, nonblock: bool) -> io::Result<()> {
                (**self).set_nonblock(h, nonblock)
            }
            fn close(&self, h: Self::Handle) -> io::Result<()> {
                (**self).close(h)
            }
        }
    )*};
}

forward_transport!(&T, Rc<T>, Arc<T>, Box<T>);
