//! The in-process transport: `libhwbp`'s [`Transport`] over an
//! [`HwbpScheme`] in the same process, through its `SchemeSync` methods.
//! The host's tests and the demo drive the typed client with it, exactly as
//! a Redox program drives `/scheme/hwbp`.
//!
//! Several callers (pid, uid) may share one server: [`InProcess::caller`].
//! The server is single-threaded, so a read that would block returns
//! Redox's EWOULDBLOCK instead of waiting (the transport contract allows
//! it); run the simulated task and read again.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::rc::Rc;

use libhwbp::Transport;
use redox_scheme::scheme::SchemeSync;
use redox_scheme::{CallerCtx, OpenResult};
use syscall::flag::{F_GETFL, F_SETFL, O_ACCMODE, O_NONBLOCK};
use syscall::schemev2::NewFdFlags;

use crate::kernel::{Kernel, Pid, Uid};
use crate::scheme::{HwbpScheme, ROOT_HANDLE};
use crate::sim::SimKernel;

/// A server shared by in-process callers.
pub type SharedScheme<K = SimKernel> = Rc<RefCell<HwbpScheme<K>>>;

/// One caller's connection to an in-process server.
pub struct InProcess<K: Kernel = SimKernel> {
    scheme: SharedScheme<K>,
    pid: Pid,
    uid: Uid,
    /// Each handle's file status flags, kept here as Redox's kernel keeps
    /// them in the file description (and passed to every read and write).
    flags: Rc<RefCell<HashMap<usize, usize>>>,
    /// The file offset of each handle the scheme opened positioned (the
    /// listing), kept and advanced as Redox's kernel does; other handles
    /// get `u64::MAX`, as the kernel passes them.
    offsets: Rc<RefCell<HashMap<usize, u64>>>,
}

fn io_err(e: syscall::error::Error) -> io::Error {
    io::Error::from_raw_os_error(e.errno)
}

impl<K: Kernel> InProcess<K> {
    /// A connection to a new server, as process `pid` of `uid`.
    pub fn new(scheme: HwbpScheme<K>, pid: Pid, uid: Uid) -> Self {
        Self::shared(Rc::new(RefCell::new(scheme)), pid, uid)
    }

    /// A connection to an existing shared server.
    pub fn shared(scheme: SharedScheme<K>, pid: Pid, uid: Uid) -> Self {
        InProcess { scheme, pid, uid, flags: Rc::default(), offsets: Rc::default() }
    }

    /// Another caller of the same server.
    pub fn caller(&self, pid: Pid, uid: Uid) -> Self {
        InProcess { scheme: self.scheme.clone(), pid, uid, flags: self.flags.clone(), offsets: self.offsets.clone() }
    }

    /// The server, e.g. to run the simulated kernel or a rotation tick.
    pub fn scheme(&self) -> &SharedScheme<K> {
        &self.scheme
    }

    /// Run `f` on the server's kernel backend.
    pub fn with_kernel<R>(&self, f: impl FnOnce(&mut K) -> R) -> R {
        f(self.scheme.borrow_mut().kernel_mut())
    }

    fn ctx(&self) -> CallerCtx {
        crate::caller_ctx(self.pid as usize, self.uid, self.uid)
    }

    fn fcntl_flags(&self, h: usize) -> u32 {
        self.flags.borrow().get(&h).copied().unwrap_or(0) as u32
    }

    fn number(r: OpenResult) -> io::Result<(usize, NewFdFlags)> {
        match r {
            OpenResult::ThisScheme { number, flags } => Ok((number, flags)),
            other => Err(io::Error::other(format!("unexpected open result {other:?}"))),
        }
    }

    /// Move a positioned handle's offset, as `lseek(SEEK_SET)` does.
    pub fn seek(&self, h: usize, offset: u64) -> io::Result<()> {
        match self.offsets.borrow_mut().get_mut(&h) {
            Some(o) => {
                *o = offset;
                Ok(())
            }
            None => Err(io::Error::from_raw_os_error(syscall::error::ESPIPE)),
        }
    }
}

impl<K: Kernel> Transport for InProcess<K> {
    type Handle = usize;

    fn open(&self, path: &str, nonblock: bool) -> io::Result<usize> {
        let flags = if nonblock { O_NONBLOCK } else { 0 };
        let r = self.scheme.borrow_mut().openat(ROOT_HANDLE, path, flags, flags as u32, &self.ctx()).map_err(io_err)?;
        let (h, new_fd) = Self::number(r)?;
        self.flags.borrow_mut().insert(h, flags);
        if new_fd.contains(NewFdFlags::POSITIONED) {
            self.offsets.borrow_mut().insert(h, 0);
        }
        Ok(h)
    }

    fn dup(&self, h: usize, name: &str) -> io::Result<usize> {
        let r = self.scheme.borrow_mut().dup(h, name.as_bytes(), &self.ctx()).map_err(io_err)?;
        Self::number(r).map(|(h, _)| h)
    }

    fn read(&self, h: usize, buf: &mut [u8]) -> io::Result<usize> {
        let flags = self.fcntl_flags(h);
        let offset = self.offsets.borrow().get(&h).copied();
        let n = self.scheme.borrow_mut().read(h, buf, offset.unwrap_or(u64::MAX), flags, &self.ctx()).map_err(io_err)?;
        if let Some(o) = self.offsets.borrow_mut().get_mut(&h) {
            *o = o.saturating_add(n as u64);
        }
        Ok(n)
    }

    fn write(&self, h: usize, buf: &[u8]) -> io::Result<usize> {
        let flags = self.fcntl_flags(h);
        self.scheme.borrow_mut().write(h, buf, u64::MAX, flags, &self.ctx()).map_err(io_err)
    }

    fn fpath(&self, h: usize, buf: &mut [u8]) -> io::Result<usize> {
        let mut full = vec![0u8; 4096];
        let n = self.scheme.borrow_mut().fpath(h, &mut full, &self.ctx()).map_err(io_err)?;
        let path = std::str::from_utf8(&full[..n]).map_err(|_| io::Error::from_raw_os_error(libhwbp::abi::errno::EINVAL))?;
        let rel = libhwbp::abi::strip_scheme_prefix(path).as_bytes();
        let n = rel.len().min(buf.len());
        buf[..n].copy_from_slice(&rel[..n]);
        Ok(n)
    }

    /// What relibc's `fcntl(F_GETFL)` + `fcntl(F_SETFL)` do on Redox: the
    /// kernel asks the scheme first and changes the flags only if it agrees.
    fn set_nonblock(&self, h: usize, nonblock: bool) -> io::Result<()> {
        let ctx = self.ctx();
        self.scheme.borrow_mut().fcntl(h, F_GETFL, 0, &ctx).map_err(io_err)?;
        let old = self.flags.borrow().get(&h).copied().unwrap_or(0);
        let new = if nonblock { old | O_NONBLOCK } else { old & !O_NONBLOCK };
        self.scheme.borrow_mut().fcntl(h, F_SETFL, new, &ctx).map_err(io_err)?;
        self.flags.borrow_mut().insert(h, (old & O_ACCMODE) | (new & !O_ACCMODE));
        Ok(())
    }

    fn close(&self, h: usize) -> io::Result<()> {
        if !self.scheme.borrow().has_handle(h) {
            log::warn!("hwbpd: close of unknown handle {h}: EBADF ({})", libhwbp::abi::errno::EBADF);
            return Err(io::Error::from_raw_os_error(libhwbp::abi::errno::EBADF));
        }
        self.flags.borrow_mut().remove(&h);
        self.offsets.borrow_mut().remove(&h);
        self.scheme.borrow_mut().on_close(h);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;
    use crate::sim::dr_model::MemAccess;
    use libhwbp::abi::{Access, Target};
    use libhwbp::{Batch, Breakpoint};

    const A: u64 = 0x6000;

    fn setup() -> (InProcess, u32, crate::sim::Tid) {
        let mut sim = SimKernel::new(1);
        let pid = sim.spawn(1000);
        let tid = sim.main_thread(pid).unwrap();
        sim.switch(0, Some(tid)).unwrap();
        (InProcess::new(HwbpScheme::new(sim, Config::default()), pid, 1000), pid, tid)
    }

    #[test]
    fn the_typed_client_counts_and_streams_hits_through_the_in_process_transport() {
        let (t, _pid, tid) = setup();
        let bp = Breakpoint::watch(A).len(8).access(Access::Write).open(&t).unwrap();
        assert!(bp.path_string().unwrap().starts_with("task/"), "self resolved, no scheme prefix");
        let mut stream = bp.events().unwrap();
        let mut recs = [libhwbp::abi::EventRecord::default(); 4];
        assert_eq!(stream.next_batch(&mut recs).unwrap(), Batch::Empty, "cannot block: empty");
        t.with_kernel(|k| k.run(tid, MemAccess::write(A, 8))).unwrap();
        assert_eq!(stream.try_next_batch(&mut recs).unwrap(), Batch::Records(1));
        assert_eq!(bp.read_count().unwrap().value, 1);
        drop(stream);
        drop(bp);
        assert_eq!(t.with_kernel(|k| k.armed_slots()), 0, "closed on drop, disarmed");
    }

    #[test]
    fn errors_carry_the_contract_errno_and_callers_keep_their_uid() {
        let (t, pid, _) = setup();
        let stranger = t.caller(pid + 1000, 1001);
        let err = Breakpoint::watch(A).target(Target::Task(pid.into())).open(&stranger).unwrap_err();
        assert_eq!(err.errno(), Some(libhwbp::abi::errno::EPERM));
        let root = t.caller(1, 0);
        Breakpoint::watch(A).target(Target::Task(pid.into())).open(&root).unwrap();
        assert_eq!(t.close(12345).unwrap_err().raw_os_error(), Some(libhwbp::abi::errno::EBADF));
    }
}
