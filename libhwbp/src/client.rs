//! The typed client: build a breakpoint, open it, read counts and hits,
//! enable/disable/reset/modify it, close it on drop.

use core::fmt;
use core::num::NonZeroU64;
use std::io;

use crate::abi::errno::ErrorKind;
use crate::abi::event::{default_len, Access, MemEvent};
use crate::abi::path::{AdmittedPath, OpenPath, Options, PathError, RingSize, Target};
use crate::abi::record::{CountRecord, EventRecord, COUNT_RECORD_SIZE, EVENT_RECORD_SIZE};
use crate::abi::{Command, EVENTS_DUP_NAME};
use crate::transport::Transport;

/// Longest fpath the client reads back.
const FPATH_MAX: usize = 4096;

/// What went wrong in a client call.
#[derive(Debug)]
pub enum Error {
    /// The client refused the request before sending it (EINVAL).
    Invalid(PathError),
    /// hwbpd (or the OS) refused it; the errno is the contract's.
    Os(io::Error),
    /// hwbpd answered with bytes that are not a valid record or path.
    Protocol(&'static str),
}

impl Error {
    /// The errno of the error, if it has one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Invalid(e) => Some(e.errno()),
            Error::Os(e) => e.raw_os_error(),
            Error::Protocol(_) => None,
        }
    }

    /// The contract's kind of the error, if it is one of them.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            Error::Invalid(_) => Some(ErrorKind::Invalid),
            Error::Os(e) => ErrorKind::of_io_error(e),
            Error::Protocol(_) => None,
        }
    }

    pub fn is_would_block(&self) -> bool {
        self.kind() == Some(ErrorKind::WouldBlock)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Invalid(e) => write!(f, "invalid breakpoint: {e}"),
            Error::Os(e) => match self.kind() {
                Some(k) => write!(f, "{e} ({k})"),
                None => write!(f, "{e}"),
            },
            Error::Protocol(what) => write!(f, "protocol error: {what}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<PathError> for Error {
    fn from(e: PathError) -> Self {
        Error::Invalid(e)
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Os(e)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid(p) => p.into(),
            Error::Os(e) => e,
            Error::Protocol(what) => io::Error::new(io::ErrorKind::InvalidData, what),
        }
    }
}

pub type Result<T, E = Error> = core::result::Result<T, E>;

/// A breakpoint to open: target, range, access and options.
///
/// ```
/// use libhwbp::{Breakpoint, abi::{Access, Target}};
/// let bp = Breakpoint::watch(0x1000).len(6).access(Access::Write).target(Target::Task(42)).pinned();
/// assert_eq!(bp.path().unwrap().to_string(), "task/42/mem:0x1000/6:w?pinned");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Breakpoint {
    target: Target,
    addr: u64,
    len: Option<u64>,
    access: Access,
    options: Options,
    // Values checked when the path is built, so the builder stays infallible.
    period: u64,
    wakeup: u64,
    ring: u64,
}

impl Breakpoint {
    /// A read-write data watch at `addr` (default length 4) on the caller.
    pub fn watch(addr: u64) -> Breakpoint {
        let o = Options::default();
        Breakpoint {
            target: Target::SelfTask,
            addr,
            len: None,
            access: Access::ReadWrite,
            options: o,
            period: o.period.get(),
            wakeup: o.wakeup.get(),
            ring: u64::from(o.ring.get()),
        }
    }

    /// An execute breakpoint at `addr`.
    pub fn exec(addr: u64) -> Breakpoint {
        Breakpoint::watch(addr).access(Access::Exec)
    }

    /// The breakpoint a parsed path describes.
    pub fn from_path(p: &OpenPath) -> Breakpoint {
        let o = p.options;
        Breakpoint {
            target: p.target,
            addr: p.event.addr(),
            len: Some(p.event.len()),
            access: p.event.access(),
            options: o,
            period: o.period.get(),
            wakeup: o.wakeup.get(),
            ring: u64::from(o.ring.get()),
        }
    }

    /// Bytes to watch (any length: hwbpd splits ranges that are not one
    /// aligned 1/2/4/8-byte piece, unless `nosplit`).
    pub fn len(mut self, len: u64) -> Self {
        self.len = Some(len);
        self
    }

    pub fn access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    pub fn target(mut self, target: Target) -> Self {
        self.target = target;
        self
    }

    pub fn pinned(mut self) -> Self {
        self.options.pinned = true;
        self
    }

    pub fn exclusive(mut self) -> Self {
        self.options.exclusive = true;
        self
    }

    /// Open disabled; `enable()` arms it.
    pub fn disabled(mut self) -> Self {
        self.options.disabled = true;
        self
    }

    /// Also count kernel-mode hits (root only).
    pub fn kernel(mut self) -> Self {
        self.options.kernel = true;
        self
    }

    pub fn nosplit(mut self) -> Self {
        self.options.nosplit = true;
        self
    }

    /// Stop the thread that hits (a debugger's breakpoint, contract 7):
    /// each user-mode hit stops that thread — after the access for a data
    /// watch, before the instruction for [`Breakpoint::exec`] — and its
    /// hit record says so ([`EventRecord::is_stopped`], thread in
    /// [`EventRecord::tid`]) until [`BreakpointHandle::resume`] or
    /// [`BreakpointHandle::resume_all`], or until the handle is closed.
    /// Task targets only (a cpu-wide target is EINVAL); `period` must be 1.
    ///
    /// ```
    /// use libhwbp::{Breakpoint, abi::Target};
    /// let bp = Breakpoint::exec(0x401000).target(Target::Task(42)).stop();
    /// assert_eq!(bp.path().unwrap().to_string(), "task/42/mem:0x401000/8:x?stop");
    /// ```
    pub fn stop(mut self) -> Self {
        self.options.stop = true;
        self
    }

    /// A hit record every `n`-th hit (n >= 1).
    pub fn period(mut self, n: u64) -> Self {
        self.period = n;
        self
    }

    /// Readiness once `n` records are queued (n >= 1).
    pub fn wakeup(mut self, n: u64) -> Self {
        self.wakeup = n;
        self
    }

    /// Records the event ring holds (1..=MAX_RING).
    pub fn ring(mut self, n: u64) -> Self {
        self.ring = n;
        self
    }

    /// The event this breakpoint watches.
    pub fn event(&self) -> Result<MemEvent, PathError> {
        MemEvent::new(self.addr, self.len.unwrap_or(default_len(self.access)), self.access)
    }

    /// The options, checked.
    pub fn options(&self) -> Result<Options, PathError> {
        let range = |option: &'static str, max: u64| PathError::OptionOutOfRange { option, min: 1, max };
        let options = Options {
            period: NonZeroU64::new(self.period).ok_or(range("period", u64::MAX))?,
            wakeup: NonZeroU64::new(self.wakeup).ok_or(range("wakeup", u64::MAX))?,
            ring: RingSize::new(self.ring).ok_or(range("ring", u64::from(crate::abi::MAX_RING)))?,
            ..self.options
        };
        options.check_stop()?;
        Ok(options)
    }

    /// The open path, checked (EINVAL-class errors are found here, before
    /// anything is sent).
    pub fn path(&self) -> Result<OpenPath, PathError> {
        let options = self.options()?;
        options.check_target(self.target)?;
        Ok(OpenPath { target: self.target, event: self.event()?, options })
    }

    /// Open the breakpoint through `transport`.
    pub fn open<T: Transport>(&self, transport: T) -> Result<BreakpointHandle<T>> {
        let path = self.path().inspect_err(|e| log::debug!("libhwbp: not opening breakpoint: {e}"))?;
        BreakpointHandle::open_path(transport, &path)
    }
}

/// An open breakpoint. Dropping it closes it (hwbpd disarms it before the
/// close returns); use [`BreakpointHandle::close`] to see close errors.
pub struct BreakpointHandle<T: Transport> {
    transport: T,
    handle: Option<T::Handle>,
    path: OpenPath,
}

impl<T: Transport> fmt::Debug for BreakpointHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakpointHandle").field("handle", &self.handle).field("path", &self.path.to_string()).finish()
    }
}

impl<T: Transport> BreakpointHandle<T> {
    /// Open an already-parsed path.
    pub fn open_path(transport: T, path: &OpenPath) -> Result<BreakpointHandle<T>> {
        let text = path.to_string();
        let handle = transport.open(&text, false).inspect_err(|e| log::debug!("libhwbp: open {text}: {e}"))?;
        Ok(BreakpointHandle { transport, handle: Some(handle), path: *path })
    }

    fn raw(&self) -> T::Handle {
        self.handle.expect("a BreakpointHandle holds its handle until close or drop")
    }

    /// The transport's handle (for fevent registration and the like).
    pub fn raw_handle(&self) -> T::Handle {
        self.raw()
    }

    /// The path as opened (canonical form).
    pub fn requested_path(&self) -> &OpenPath {
        &self.path
    }

    /// Read the count record.
    pub fn read_count(&self) -> Result<CountRecord> {
        let mut buf = [0u8; COUNT_RECORD_SIZE];
        let n = self.transport.read(self.raw(), &mut buf)?;
        if n != COUNT_RECORD_SIZE {
            return Err(Error::Protocol("short count record"));
        }
        Ok(CountRecord::from_bytes(&buf))
    }

    /// The count scaled to the enabled time (`None` if it never ran).
    pub fn read_scaled(&self) -> Result<(CountRecord, Option<u64>)> {
        let c = self.read_count()?;
        Ok((c, c.scaled_value()))
    }

    fn command(&self, c: &Command) -> Result<()> {
        let text = c.to_string();
        let n = self.transport.write(self.raw(), text.as_bytes()).inspect_err(|e| log::debug!("libhwbp: {text}: {e}"))?;
        if n != text.len() {
            return Err(Error::Protocol("command partly written"));
        }
        Ok(())
    }

    pub fn enable(&self) -> Result<()> {
        self.command(&Command::Enable)
    }

    pub fn disable(&self) -> Result<()> {
        self.command(&Command::Disable)
    }

    /// Zero the count, the times and `lost`.
    pub fn reset(&self) -> Result<()> {
        self.command(&Command::Reset)
    }

    /// Change the watched event (atomic: on error the old one stays armed).
    /// `options: None` keeps the current options.
    pub fn modify(&mut self, event: MemEvent, options: Option<Options>) -> Result<()> {
        if let Some(o) = &options {
            o.check_target(self.path.target)?;
        }
        self.command(&Command::Modify { event, options })?;
        self.path.event = event;
        if let Some(o) = options {
            self.path.options = o;
        }
        Ok(())
    }

    /// Run again thread `tid`, which this breakpoint stopped (a record
    /// with [`EventRecord::is_stopped`] named it). ESRCH if this
    /// breakpoint does not hold `tid` stopped (never stopped it, resumed
    /// already, or the task exited); EINVAL on a breakpoint without
    /// `stop` that holds no thread. A thread that one exception stopped
    /// for several breakpoints runs once each of them resumed it.
    pub fn resume(&self, tid: u64) -> Result<()> {
        self.command(&Command::Resume { tid: Some(tid) })
    }

    /// Run again every thread this breakpoint holds stopped (none: Ok).
    pub fn resume_all(&self) -> Result<()> {
        self.command(&Command::Resume { tid: None })
    }

    /// Change to what `bp` describes (its target is ignored: a breakpoint
    /// keeps its target).
    pub fn modify_to(&mut self, bp: &Breakpoint) -> Result<()> {
        let p = bp.path()?;
        self.modify(p.event, Some(p.options))
    }

    /// The path as hwbpd admitted it (fpath), pieces included.
    pub fn path(&self) -> Result<AdmittedPath> {
        let text = self.path_string()?;
        AdmittedPath::parse(&text).map_err(|_| Error::Protocol("fpath is not an admitted hwbp path"))
    }

    /// The raw fpath text.
    pub fn path_string(&self) -> Result<String> {
        let mut buf = vec![0u8; FPATH_MAX];
        let n = self.transport.fpath(self.raw(), &mut buf)?;
        buf.truncate(n);
        String::from_utf8(buf).map_err(|_| Error::Protocol("fpath is not UTF-8"))
    }

    /// Open the hit stream (`dup(fd, "events-v2")`: version-2 records,
    /// with the thread id and the stopped flag).
    pub fn events(&self) -> Result<EventStream<T>>
    where
        T: Clone,
    {
        let h = self.transport.dup(self.raw(), EVENTS_DUP_NAME)?;
        Ok(EventStream { transport: self.transport.clone(), handle: Some(h), nonblock: None, buf: Vec::new(), ended: false })
    }

    /// Close now, reporting errors (drop closes too, but only logs them).
    pub fn close(mut self) -> Result<()> {
        let h = self.raw();
        self.handle = None;
        Ok(self.transport.close(h)?)
    }
}

impl<T: Transport> Drop for BreakpointHandle<T> {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take()
            && let Err(e) = self.transport.close(h)
        {
            log::warn!("libhwbp: closing breakpoint {}: {e}", self.path);
        }
    }
}

/// What one read of the hit stream gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Batch {
    /// This many records were stored at the front of the buffer (>= 1,
    /// or 0 only for an empty buffer).
    Records(usize),
    /// Nothing queued right now (non-blocking read, or a transport that
    /// cannot wait).
    Empty,
    /// The stream has ended: the task exited and every record was read.
    Ended,
}

/// The hit stream of a breakpoint. Closed on drop.
pub struct EventStream<T: Transport> {
    transport: T,
    handle: Option<T::Handle>,
    /// O_NONBLOCK as last set (None: never set; the handle starts blocking).
    nonblock: Option<bool>,
    buf: Vec<u8>,
    ended: bool,
}

impl<T: Transport> EventStream<T> {
    fn raw(&self) -> T::Handle {
        self.handle.expect("an EventStream holds its handle until drop")
    }

    pub fn raw_handle(&self) -> T::Handle {
        self.raw()
    }

    fn set_mode(&mut self, nonblock: bool) -> Result<()> {
        if self.nonblock != Some(nonblock) && !(self.nonblock.is_none() && !nonblock) {
            self.transport.set_nonblock(self.raw(), nonblock)?;
        }
        self.nonblock = Some(nonblock);
        Ok(())
    }

    fn read_batch(&mut self, out: &mut [EventRecord], nonblock: bool) -> Result<Batch> {
        if self.ended {
            return Ok(Batch::Ended);
        }
        if out.is_empty() {
            return Ok(Batch::Records(0));
        }
        self.set_mode(nonblock)?;
        self.buf.resize(out.len() * EVENT_RECORD_SIZE, 0);
        let n = match self.transport.read(self.raw(), &mut self.buf) {
            Ok(n) => n,
            Err(e) if ErrorKind::of_io_error(&e) == Some(ErrorKind::WouldBlock) => return Ok(Batch::Empty),
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            self.ended = true;
            return Ok(Batch::Ended);
        }
        if n % EVENT_RECORD_SIZE != 0 || n > self.buf.len() {
            return Err(Error::Protocol("event stream returned a partial record"));
        }
        let mut count = 0;
        for (slot, rec) in out.iter_mut().zip(EventRecord::decode_all(&self.buf[..n])) {
            *slot = rec;
            count += 1;
        }
        Ok(Batch::Records(count))
    }

    /// Read the queued records into `out` without waiting.
    pub fn try_next_batch(&mut self, out: &mut [EventRecord]) -> Result<Batch> {
        self.read_batch(out, true)
    }

    /// Read records into `out`, waiting for at least one (on Redox the
    /// read blocks in hwbpd; an in-process transport that cannot wait
    /// returns [`Batch::Empty`]).
    pub fn next_batch(&mut self, out: &mut [EventRecord]) -> Result<Batch> {
        self.read_batch(out, false)
    }

    /// Every record queued now, without waiting.
    pub fn drain(&mut self) -> Result<Vec<EventRecord>> {
        let mut all = Vec::new();
        let mut chunk = [EventRecord::default(); 64];
        loop {
            match self.try_next_batch(&mut chunk)? {
                Batch::Records(n) => all.extend_from_slice(&chunk[..n]),
                Batch::Empty | Batch::Ended => return Ok(all),
            }
        }
    }

    /// Iterate over records, waiting for each batch; stops when the stream
    /// ends (or, on a transport that cannot wait, when it is empty).
    pub fn blocking_iter(&mut self) -> BlockingIter<'_, T> {
        BlockingIter { stream: self, batch: Vec::new(), next: 0, done: false }
    }

    /// Whether a read has seen the end of the stream.
    pub fn has_ended(&self) -> bool {
        self.ended
    }
}

impl<T: Transport> Drop for EventStream<T> {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take()
            && let Err(e) = self.transport.close(h)
        {
            log::warn!("libhwbp: closing event stream: {e}");
        }
    }
}

/// See [`EventStream::blocking_iter`].
pub struct BlockingIter<'a, T: Transport> {
    stream: &'a mut EventStream<T>,
    batch: Vec<EventRecord>,
    next: usize,
    done: bool,
}

impl<T: Transport> Iterator for BlockingIter<'_, T> {
    type Item = Result<EventRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(r) = self.batch.get(self.next) {
            self.next += 1;
            return Some(Ok(*r));
        }
        if self.done {
            return None;
        }
        self.batch.resize(64, EventRecord::default());
        match self.stream.next_batch(&mut self.batch) {
            Ok(Batch::Records(n)) => {
                self.batch.truncate(n);
                self.next = 0;
                self.next()
            }
            Ok(Batch::Empty | Batch::Ended) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
