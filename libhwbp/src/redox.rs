//! The transport to the real `/scheme/hwbp` on Redox, through libredox.

use std::io;

use crate::abi::path::strip_scheme_prefix;
use crate::abi::SCHEME_PREFIX;
use crate::transport::Transport;

/// Talks to hwbpd through the Redox kernel: each handle is a file
/// descriptor on `/scheme/hwbp`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedoxTransport;

fn os(e: libredox::error::Error) -> io::Error {
    io::Error::from_raw_os_error(e.errno())
}

impl Transport for RedoxTransport {
    type Handle = usize;

    fn open(&self, path: &str, nonblock: bool) -> io::Result<usize> {
        let full = format!("{SCHEME_PREFIX}{}", strip_scheme_prefix(path));
        let mut flags = libc::O_RDWR | libc::O_CLOEXEC;
        if nonblock {
            flags |= libc::O_NONBLOCK;
        }
        libredox::call::open(full, flags, 0).map_err(os)
    }

    fn dup(&self, h: usize, name: &str) -> io::Result<usize> {
        libredox::call::dup(h, name.as_bytes()).map_err(os)
    }

    fn read(&self, h: usize, buf: &mut [u8]) -> io::Result<usize> {
        libredox::call::read(h, buf).map_err(os)
    }

    fn write(&self, h: usize, buf: &[u8]) -> io::Result<usize> {
        libredox::call::write(h, buf).map_err(os)
    }

    fn fpath(&self, h: usize, buf: &mut [u8]) -> io::Result<usize> {
        let n = libredox::call::fpath(h, buf).map_err(os)?.min(buf.len());
        // The kernel may report the full `/scheme/hwbp/...` path: hand back
        // the part relative to the scheme root, as the trait promises.
        let text = buf.get(..n).unwrap_or(buf);
        let skip = match std::str::from_utf8(text) {
            Ok(s) => s.len() - strip_scheme_prefix(s).len(),
            Err(_) => 0,
        };
        buf.copy_within(skip..n, 0);
        Ok(n - skip)
    }

    fn set_nonblock(&self, h: usize, nonblock: bool) -> io::Result<()> {
        let flags = libredox::call::fcntl(h, libc::F_GETFL as usize, 0).map_err(os)?;
        let nb = libc::O_NONBLOCK as usize;
        let new = if nonblock { flags | nb } else { flags & !nb };
        if new != flags {
            libredox::call::fcntl(h, libc::F_SETFL as usize, new).map_err(os)?;
        }
        Ok(())
    }

    fn close(&self, h: usize) -> io::Result<()> {
        libredox::call::close(h).map_err(os)
    }
}
