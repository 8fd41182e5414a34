//! [`RedoxKernel`]: the [`Kernel`] interface over the patched Redox kernel,
//! speaking `kernel-patch/ABI.md` with the encoders of `hwbp_kern::abi`.
//!
//! Handles it holds (all on the kernel's `proc:` scheme, all dup'ed from
//! the control handle except the control handle itself):
//! - `hwbp-control`, opened at start as `/scheme/sys/hwbp-control` (root
//!   only, one holder; see [`acquire_control`]): the hit stream, read until EAGAIN
//!   when the event queue says it is readable; closing it (or hwbpd dying)
//!   disarms everything;
//! - `cpu-<n>` for every CPU (probed from 0 until ESRCH): CPU plans, and the
//!   per-CPU `dropped` counter;
//! - for each task with a non-empty plan, `regs/debug-<id>` for each of its
//!   threads, whose debug ids a read of `threads-<pid>` lists (the kernel's
//!   lookup by pid: no procmgr involved).
//!
//! No notification of new threads or exits exists, so the backend rescans
//! at most every [`SCAN_INTERVAL_NS`] (driven by the rotation tick and hit
//! collection): `sys:context` ([`super::contexts`]) for exits (and euids for
//! permission checks, read fresh at open), and `threads-<pid>` of every
//! armed task, whose new threads get the plan and whose dead ones are
//! dropped. A thread created between scans runs unwatched until the next
//! one, and an exit is reported up to that late. Hit timestamps are TSC
//! ticks, converted with [`TscClock`]; the daemon feeds it a sample per tick.
//!
//! All calls go through [`Sys`]: `RedoxSys` on Redox, a model
//! of the ABI in the tests below.

use std::cell::Cell;
use std::collections::BTreeMap;

use hwbp_kern::abi::{self, CPU_PLAN_SIZE, HIT_RECORD_SIZE, HitRecord, RAW_PIECE_SIZE};
use hwbp_kern::plan::MAX_CONTEXT_PIECES;
use hwbp_kern::{ContextPlan, CpuId, CpuPlan};
use syscall::error::{EAGAIN, EINVAL, ENOSPC, EPERM, ESRCH, EWOULDBLOCK};

use super::contexts::{SCAN_INTERVAL_NS, Snapshot};
use super::sys::{Errno, Sys};
use super::tsc::{Sample, TscClock};
use hwbpd::kernel::{Kernel, KernelError, Pid, TaskInfo};

/// The listing of every context, with pid, euid and state.
pub const SYS_CONTEXT_PATH: &str = "/scheme/sys/context";
/// Where a root process opens the kernel's `hwbp-control` handle. sys: is
/// in root's namespace on an unmodified userspace, so hwbpd needs no proc:
/// authority (which only procmgr holds) and no help from whoever starts it.
pub const CONTROL_PATH: &str = "/scheme/sys/hwbp-control";
/// Upper bound when probing `cpu-<n>` (the loop ends at the first ESRCH).
const MAX_PROBE: usize = 4096;
/// Thread ids read from `threads-<pid>` at first; the buffer grows while a
/// read fills it, up to [`MAX_THREADS`].
const THREAD_READ_START: usize = 64;
/// More threads than this in one process are not all armed (logged).
const MAX_THREADS: usize = 65_536;
/// Size of one id in a `threads-<pid>` read.
const THREAD_ID_SIZE: usize = 4;
/// A CPU handle read with room for the two trailing counters.
const CPU_READ_SIZE: usize = CPU_PLAN_SIZE + 16;
/// Offset of `dropped` in that read.
const CPU_DROPPED_OFFSET: usize = CPU_PLAN_SIZE;
/// Hit records read from the control handle per `read`.
const HIT_READ_BATCH: usize = 256;
/// Largest encoded context plan.
const MAX_PLAN_BYTES: usize = MAX_CONTEXT_PIECES * RAW_PIECE_SIZE;

/// Why the backend could not start.
#[derive(Debug, PartialEq, Eq)]
pub struct StartError {
    pub what: &'static str,
    pub errno: Errno,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: errno {}", self.what, self.errno)
    }
}

/// Open the kernel's `hwbp-control` handle: [`CONTROL_PATH`], root only
/// (EPERM otherwise), one holder at a time (EBUSY while another hwbpd runs).
/// The failure is logged and returned.
pub fn acquire_control<S: Sys>(sys: &S) -> Result<S::Fd, StartError> {
    sys.open(CONTROL_PATH).map_err(|errno| {
        log::warn!("hwbpd: open({CONTROL_PATH}) failed: errno {errno}");
        StartError { what: "open /scheme/sys/hwbp-control", errno }
    })
}

/// A task with a non-empty plan: the plan as last written, and the
/// `regs/debug-<id>` handle of each thread it was written through, by
/// debug id.
struct ArmedTask<F> {
    bytes: Vec<u8>,
    threads: BTreeMap<u32, F>,
}

/// The Redox kernel, through the hwbp proc: handles. See the module docs.
pub struct RedoxKernel<S: Sys> {
    sys: S,
    control: S::Fd,
    cpus: Vec<S::Fd>,
    tasks: BTreeMap<Pid, ArmedTask<S::Fd>>,
    snapshot: Snapshot,
    last_scan_ns: u64,
    clock: TscClock,
    read_buf: Vec<u8>,
    /// Last control-read error logged (a persisting one is logged once).
    last_read_errno: Cell<Option<Errno>>,
}

/// A plan write the kernel refused, as a [`KernelError`] (one log line).
fn refused(pid: Pid, errno: Errno) -> KernelError {
    let why = match errno {
        ESRCH => return KernelError::NoSuchTask(pid),
        ENOSPC => "no room for the plan beside a CPU plan (ENOSPC)",
        EINVAL => "the plan did not decode (EINVAL)",
        EPERM => "the control handle does not allow it (EPERM)",
        _ => "writing the plan failed",
    };
    log::warn!("hwbpd: kernel refused the plan of task {pid}: {why}, errno {errno}");
    KernelError::Refused(why)
}

impl<S: Sys> RedoxKernel<S> {
    /// Take over the control handle (see [`acquire_control`]) and open every
    /// CPU's plan handle.
    pub fn open(sys: S, control: S::Fd) -> Result<Self, StartError> {
        let mut cpus = Vec::new();
        for n in 0..MAX_PROBE {
            match sys.dup(&control, &format!("cpu-{n}")) {
                Ok(fd) => cpus.push(fd),
                Err(ESRCH) => break,
                Err(errno) => return Err(StartError { what: "dup(hwbp-control, cpu-<n>)", errno }),
            }
        }
        if cpus.is_empty() {
            return Err(StartError { what: "the kernel reports no CPU (cpu-0: ESRCH)", errno: ESRCH });
        }
        let snapshot = read_snapshot(&sys).map_err(|errno| StartError { what: "reading /scheme/sys/context", errno })?;
        let first = Sample { tsc: sys.tsc(), ns: sys.monotonic_ns() };
        Ok(RedoxKernel {
            last_scan_ns: first.ns,
            clock: TscClock::new(first),
            sys,
            control,
            cpus,
            tasks: BTreeMap::new(),
            snapshot,
            read_buf: vec![0; HIT_READ_BATCH * HIT_RECORD_SIZE],
            last_read_errno: Cell::new(None),
        })
    }

    /// The control handle's fd, to register with an event queue.
    pub fn control_fd(&self) -> usize {
        self.sys.raw(&self.control)
    }

    /// Feed the TSC-to-nanoseconds conversion one more reading.
    pub fn sample_clock(&mut self) {
        let s = Sample { tsc: self.sys.tsc(), ns: self.sys.monotonic_ns() };
        if !self.clock.observe(s) {
            log::debug!("hwbpd: a TSC/monotonic sample went backwards, ignored");
        }
    }

    /// TSC frequency as calibrated so far.
    pub fn tsc_hz(&self) -> Option<u64> {
        self.clock.hz()
    }

    /// Debug ids of the live threads of `pid` (`threads-<pid>`: one read,
    /// retried with a larger buffer while the list fills it).
    fn thread_ids(&self, pid: Pid) -> Result<Vec<u32>, Errno> {
        let list = self.sys.dup(&self.control, &format!("threads-{pid}"))?;
        let mut cap = THREAD_READ_START;
        loop {
            let mut buf = vec![0u8; cap * THREAD_ID_SIZE];
            let n = self.sys.read(&list, &mut buf)?;
            if n < buf.len() || cap >= MAX_THREADS {
                if n == buf.len() {
                    log::warn!("hwbpd: task {pid} has {cap} threads or more; only the first {cap} are armed");
                }
                let ids = buf.get(..n).unwrap_or(&[]).chunks_exact(THREAD_ID_SIZE);
                return Ok(ids.map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect());
            }
            cap = cap.saturating_mul(4).min(MAX_THREADS);
        }
    }

    /// `regs/debug-<id>` handles for threads `ids` (a thread that died in
    /// between, ESRCH, is left out).
    fn open_threads(&self, pid: Pid, ids: &[u32]) -> Result<BTreeMap<u32, S::Fd>, KernelError> {
        let mut out = BTreeMap::new();
        for &id in ids {
            match self.sys.dup(&self.control, &format!("regs/debug-{id}")) {
                Ok(fd) => {
                    out.insert(id, fd);
                }
                Err(ESRCH) => {}
                Err(e) => return Err(refused(pid, e)),
            }
        }
        Ok(out)
    }

    /// Write `bytes` through every handle; on a failure, put `previous` back
    /// on the ones already written (best effort) and fail. A thread that
    /// died since its handle was opened (ESRCH) is skipped: it never runs
    /// again; if every thread is dead, the task is gone.
    fn write_all(&self, pid: Pid, threads: &BTreeMap<u32, S::Fd>, bytes: &[u8], previous: &[u8]) -> Result<(), KernelError> {
        let mut live = 0usize;
        for (i, t) in threads.values().enumerate() {
            match self.sys.write(t, bytes) {
                Ok(_) => live += 1,
                Err(ESRCH) => {}
                Err(e) => {
                    for done in threads.values().take(i) {
                        match self.sys.write(done, previous) {
                            Ok(_) | Err(ESRCH) => {}
                            Err(e2) => log::error!("hwbpd: task {pid}: restoring the previous plan failed: errno {e2}"),
                        }
                    }
                    return Err(refused(pid, e));
                }
            }
        }
        if live == 0 {
            return Err(KernelError::NoSuchTask(pid));
        }
        Ok(())
    }

    /// Clear the plan through every handle (a dead thread has none left).
    fn clear_all(&self, pid: Pid, threads: &BTreeMap<u32, S::Fd>) {
        for t in threads.values() {
            match self.sys.write(t, &[]) {
                Ok(_) | Err(ESRCH) => {}
                Err(e) => log::warn!("hwbpd: task {pid}: clearing a thread's plan failed: errno {e}"),
            }
        }
    }

    /// Bring an armed task's handles in line with its threads now: new
    /// threads get handles and the plan, dead ones lose their handles.
    fn reconcile(&mut self, pid: Pid) {
        let ids = match self.thread_ids(pid) {
            Ok(ids) => ids,
            Err(e) => return log::warn!("hwbpd: task {pid}: listing its threads failed: errno {e}"),
        };
        let Some(task) = self.tasks.get(&pid) else { return };
        let fresh: Vec<u32> = ids.iter().copied().filter(|id| !task.threads.contains_key(id)).collect();
        let added = match self.open_threads(pid, &fresh) {
            Ok(added) => added,
            Err(e) => return log::warn!("hwbpd: task {pid}: its new threads stay unarmed: {e}"),
        };
        let mut armed = BTreeMap::new();
        for (id, fd) in added {
            match self.sys.write(&fd, &task.bytes) {
                Ok(_) => {
                    armed.insert(id, fd);
                }
                Err(ESRCH) => {}
                Err(e) => log::warn!("hwbpd: task {pid}: thread {id} stays unarmed: errno {e}"),
            }
        }
        if let Some(task) = self.tasks.get_mut(&pid) {
            task.threads.retain(|id, _| ids.binary_search(id).is_ok());
            task.threads.extend(armed);
        }
    }

    fn scan(&mut self, out: &mut Vec<Pid>) {
        let now = self.sys.monotonic_ns();
        if now.saturating_sub(self.last_scan_ns) < SCAN_INTERVAL_NS {
            return;
        }
        self.last_scan_ns = now;
        let newer = match read_snapshot(&self.sys) {
            Ok(s) => s,
            Err(e) => return log::error!("hwbpd: reading {SYS_CONTEXT_PATH} failed: errno {e}; exits go unnoticed"),
        };
        let changes = self.snapshot.diff(&newer);
        self.snapshot = newer;
        for pid in changes.exited {
            // The kernel cleared its plan at exit; the handles just go.
            self.tasks.remove(&pid);
            out.push(pid);
        }
        let armed: Vec<Pid> = self.tasks.keys().copied().collect();
        for pid in armed {
            self.reconcile(pid);
        }
    }
}

fn read_snapshot<S: Sys>(sys: &S) -> Result<Snapshot, Errno> {
    let fd = sys.open(SYS_CONTEXT_PATH)?;
    let mut text = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = sys.read(&fd, &mut chunk)?;
        if n == 0 {
            break;
        }
        text.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
    }
    let (snap, bad) = Snapshot::parse(&String::from_utf8_lossy(&text));
    for row in bad {
        log::debug!("hwbpd: {SYS_CONTEXT_PATH}: skipped a row that does not parse: {:?}", row.0);
    }
    Ok(snap)
}

impl<S: Sys> Kernel for RedoxKernel<S> {
    fn cpu_count(&self) -> u32 {
        u32::try_from(self.cpus.len()).unwrap_or(u32::MAX)
    }

    fn task(&self, pid: Pid) -> Result<TaskInfo, KernelError> {
        // Fresh: a task started since the last scan must be found.
        let snap = read_snapshot(&self.sys).map_err(|e| {
            log::error!("hwbpd: reading {SYS_CONTEXT_PATH} failed: errno {e}");
            KernelError::Refused("sys:context unreadable")
        })?;
        let t = snap.task(pid).ok_or(KernelError::NoSuchTask(pid))?;
        Ok(TaskInfo { pid, uid: t.euid })
    }

    fn set_task_plan(&mut self, pid: Pid, plan: &ContextPlan) -> Result<(), KernelError> {
        if plan.is_empty() {
            if let Some(task) = self.tasks.remove(&pid) {
                self.clear_all(pid, &task.threads);
            }
            return Ok(());
        }
        let mut buf = [0u8; MAX_PLAN_BYTES];
        let used = abi::encode_context_plan(plan, &mut buf).ok_or(KernelError::Refused("plan too large to encode"))?;
        let bytes = buf.get(..used).unwrap_or(&[]).to_vec();
        match self.tasks.get(&pid) {
            Some(task) => {
                self.write_all(pid, &task.threads, &bytes, &task.bytes)?;
                if let Some(task) = self.tasks.get_mut(&pid) {
                    task.bytes = bytes;
                }
            }
            None => {
                let ids = self.thread_ids(pid).map_err(|e| refused(pid, e))?;
                let threads = self.open_threads(pid, &ids)?;
                self.write_all(pid, &threads, &bytes, &[])?;
                self.tasks.insert(pid, ArmedTask { bytes, threads });
            }
        }
        Ok(())
    }

    fn set_cpu_plan(&mut self, cpu: CpuId, plan: &CpuPlan) -> Result<(), KernelError> {
        let fd = usize::try_from(cpu).ok().and_then(|i| self.cpus.get(i)).ok_or(KernelError::NoSuchCpu(cpu))?;
        self.sys.write(fd, &abi::encode_cpu_plan(plan)).map(|_| ()).map_err(|e| {
            log::warn!("hwbpd: kernel refused the plan of cpu {cpu}: errno {e}");
            match e {
                ESRCH => KernelError::NoSuchCpu(cpu),
                EINVAL => KernelError::Refused("the CPU plan did not decode (EINVAL)"),
                _ => KernelError::Refused("writing the CPU plan failed"),
            }
        })
    }

    fn drain_hits(&mut self, out: &mut [HitRecord]) -> usize {
        let want = out.len().min(HIT_READ_BATCH);
        let Some(buf) = self.read_buf.get_mut(..want * HIT_RECORD_SIZE) else { return 0 };
        if want == 0 {
            return 0;
        }
        let n = match self.sys.read(&self.control, buf) {
            Ok(bytes) => bytes / HIT_RECORD_SIZE,
            Err(EAGAIN | EWOULDBLOCK) => 0,
            Err(e) => {
                if self.last_read_errno.replace(Some(e)) != Some(e) {
                    log::error!("hwbpd: reading hit records failed: errno {e}");
                }
                0
            }
        };
        for (slot, chunk) in out.iter_mut().zip(buf.chunks_exact(HIT_RECORD_SIZE)).take(n) {
            let Ok(bytes) = <&[u8; HIT_RECORD_SIZE]>::try_from(chunk) else { continue };
            let mut hit = HitRecord::from_bytes(bytes);
            hit.timestamp = self.clock.to_ns(hit.timestamp);
            *slot = hit;
        }
        n
    }

    fn context_pid(&self, context: u64) -> Option<Pid> {
        // ABI: bits 32-63 are the context's pid (as procmgr set it; 0: kernel).
        Pid::try_from(context >> 32).ok().filter(|&pid| pid != 0)
    }

    fn dropped_hits(&self) -> u64 {
        let mut total = 0u64;
        let mut buf = [0u8; CPU_READ_SIZE];
        for (n, cpu) in self.cpus.iter().enumerate() {
            match self.sys.read(cpu, &mut buf) {
                Ok(len) if len >= CPU_READ_SIZE => {
                    let mut d = [0u8; 8];
                    d.copy_from_slice(buf.get(CPU_DROPPED_OFFSET..CPU_DROPPED_OFFSET + 8).unwrap_or(&[0; 8]));
                    total = total.saturating_add(u64::from_le_bytes(d));
                }
                Ok(_) => log::debug!("hwbpd: cpu-{n} read without counters"),
                Err(e) => log::debug!("hwbpd: cpu-{n} read failed: errno {e}"),
            }
        }
        total
    }

    fn take_exits(&mut self, out: &mut Vec<Pid>) {
        self.scan(out);
    }

    fn now_ns(&self) -> u64 {
        self.sys.monotonic_ns()
    }

    fn disarm_all(&mut self) {
        for (pid, task) in std::mem::take(&mut self.tasks) {
            self.clear_all(pid, &task.threads);
        }
        let empty = abi::encode_cpu_plan(&CpuPlan::EMPTY);
        for (n, cpu) in self.cpus.iter().enumerate() {
            if let Err(e) = self.sys.write(cpu, &empty) {
                log::warn!("hwbpd: clearing the plan of cpu {n} failed: errno {e}");
            }
        }
    }
}

/// The backend against a model of `kernel-patch/ABI.md`: what it writes is
/// decoded with the kernel's own decoders (`hwbp_kern::abi`), and handles
/// behave as the ABI says on dup, write, read and close.
#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::rc::Rc;

    use hwbp_kern::abi::{decode_context_plan, decode_cpu_plan, encode_context_plan};
    use hwbp_kern::plan::CpuPiece;
    use hwbp_kern::{Access, ContextPiece, CpuFilter, Len, Piece, Slot};
    use redox_scheme::scheme::SchemeSync;
    use redox_scheme::OpenResult;
    use syscall::error::{EBUSY, ENOENT};

    use super::*;
    use hwbpd::kernel::Uid;
    use hwbpd::scheme::{Config, HwbpScheme, ROOT_HANDLE};

    const TSC_PER_NS: u64 = 3;

    enum Kind {
        Control,
        Cpu(usize),
        Threads(Pid),
        Regs { ctx: u32, control: usize },
        Listing { text: Vec<u8>, at: usize },
    }

    struct Ctx {
        pid: Pid,
        euid: Uid,
        plan: Vec<u8>,
        last_writer: Option<usize>,
    }

    #[derive(Default)]
    struct Model {
        next: usize,
        handles: BTreeMap<usize, Kind>,
        /// Debug id -> user context.
        contexts: BTreeMap<u32, Ctx>,
        control: Option<usize>,
        cpu_plans: Vec<Vec<u8>>,
        dropped: Vec<u64>,
        hits: VecDeque<HitRecord>,
        /// The next plan write to this context fails with this errno.
        fail_write: Option<(u32, Errno)>,
        now_ns: u64,
    }

    impl Model {
        fn new(cpus: usize) -> Rc<RefCell<Model>> {
            Rc::new(RefCell::new(Model {
                next: 3,
                cpu_plans: vec![vec![0; CPU_PLAN_SIZE]; cpus],
                dropped: vec![0; cpus],
                now_ns: 1_000_000_000,
                ..Model::default()
            }))
        }

        fn insert(&mut self, k: Kind) -> usize {
            let id = self.next;
            self.next += 1;
            self.handles.insert(id, k);
            id
        }

        fn spawn(&mut self, pid: Pid, euid: Uid, threads: u32) -> Vec<u32> {
            (0..threads)
                .map(|_| {
                    let id = self.contexts.keys().next_back().map_or(100, |k| k + 1);
                    self.contexts.insert(id, Ctx { pid, euid, plan: Vec::new(), last_writer: None });
                    id
                })
                .collect()
        }

        fn exit(&mut self, pid: Pid) {
            self.contexts.retain(|_, c| c.pid != pid);
        }

        fn threads(&self, pid: Pid) -> Vec<u32> {
            self.contexts.iter().filter(|(_, c)| c.pid == pid).map(|(&id, _)| id).collect()
        }

        fn plan_of(&self, ctx: u32) -> ContextPlan {
            decode_context_plan(&self.contexts[&ctx].plan).expect("the backend wrote a plan the kernel decodes")
        }

        /// `sys:context` as the kernel formats it.
        fn listing(&self) -> Vec<u8> {
            let row = |pid: &dyn std::fmt::Display, euid: &dyn std::fmt::Display, stat: &str, name: &str| {
                format!(
                    "{:<6}{:<6}{:<6}{:<6}{:<6}{:<11}{:<12}{:<8}{:<8}{}\n",
                    pid, euid, euid, stat, "0", "all", "00:00:00.00", "8 KB", "0 B", name
                )
            };
            let mut s = row(&"PID", &"EUID", "STAT", "NAME");
            s += &row(&0, &0, "KR+", "[kmain]");
            for c in self.contexts.values() {
                s += &row(&c.pid, &c.euid, "US", "/usr/bin/task");
            }
            s.into_bytes()
        }
    }

    struct FakeFd {
        id: usize,
        model: Rc<RefCell<Model>>,
    }

    impl Drop for FakeFd {
        /// ABI.md "Closing".
        fn drop(&mut self) {
            let mut m = self.model.borrow_mut();
            match m.handles.remove(&self.id) {
                Some(Kind::Regs { ctx, .. }) => {
                    if let Some(c) = m.contexts.get_mut(&ctx).filter(|c| c.last_writer == Some(self.id)) {
                        c.plan.clear();
                    }
                }
                Some(Kind::Control) if m.control == Some(self.id) => {
                    m.control = None;
                    for c in m.contexts.values_mut() {
                        c.plan.clear();
                    }
                    for p in &mut m.cpu_plans {
                        p.fill(0);
                    }
                }
                _ => {}
            }
        }
    }

    struct FakeSys(Rc<RefCell<Model>>);

    impl FakeSys {
        fn fd(&self, id: usize) -> FakeFd {
            FakeFd { id, model: Rc::clone(&self.0) }
        }
    }

    impl Sys for FakeSys {
        type Fd = FakeFd;

        fn open(&self, path: &str) -> Result<FakeFd, Errno> {
            let mut m = self.0.borrow_mut();
            let kind = if path == SYS_CONTEXT_PATH {
                Kind::Listing { text: m.listing(), at: 0 }
            } else if path == CONTROL_PATH {
                if m.control.is_some() {
                    return Err(EBUSY);
                }
                let id = m.insert(Kind::Control);
                m.control = Some(id);
                drop(m);
                return Ok(self.fd(id));
            } else {
                return Err(ENOENT);
            };
            let id = m.insert(kind);
            drop(m);
            Ok(self.fd(id))
        }

        fn dup(&self, fd: &FakeFd, name: &str) -> Result<FakeFd, Errno> {
            let mut m = self.0.borrow_mut();
            let kind = match m.handles.get(&fd.id).ok_or(EINVAL)? {
                Kind::Control => {
                    let number = |prefix: &str| name.strip_prefix(prefix).and_then(|n| n.parse::<u64>().ok());
                    if let Some(pid) = number("threads-") {
                        Kind::Threads(Pid::try_from(pid).map_err(|_| ESRCH)?)
                    } else if let Some(id) = number("regs/debug-") {
                        let id = u32::try_from(id).map_err(|_| ESRCH)?;
                        if !m.contexts.contains_key(&id) {
                            return Err(ESRCH);
                        }
                        Kind::Regs { ctx: id, control: fd.id }
                    } else {
                        let n = number("cpu-").ok_or(ESRCH)? as usize;
                        if n >= m.cpu_plans.len() {
                            return Err(ESRCH);
                        }
                        Kind::Cpu(n)
                    }
                }
                _ => return Err(ENOENT),
            };
            if fd.id == 0 {
                return Err(EINVAL);
            }
            let id = m.insert(kind);
            drop(m);
            Ok(self.fd(id))
        }

        fn read(&self, fd: &FakeFd, buf: &mut [u8]) -> Result<usize, Errno> {
            let mut m = self.0.borrow_mut();
            let m = &mut *m;
            match m.handles.get_mut(&fd.id).ok_or(EINVAL)? {
                Kind::Listing { text, at } => {
                    let rest = &text[*at..];
                    let n = rest.len().min(buf.len());
                    buf[..n].copy_from_slice(&rest[..n]);
                    *at += n;
                    Ok(n)
                }
                &mut Kind::Threads(pid) => {
                    let ids: Vec<u8> = m.threads(pid).iter().flat_map(|id| id.to_le_bytes()).collect();
                    let n = (buf.len() / 4 * 4).min(ids.len());
                    buf[..n].copy_from_slice(&ids[..n]);
                    Ok(n)
                }
                Kind::Control => {
                    if buf.len() < HIT_RECORD_SIZE {
                        return Err(EINVAL);
                    }
                    let mut n = 0;
                    for chunk in buf.chunks_exact_mut(HIT_RECORD_SIZE) {
                        let Some(hit) = m.hits.pop_front() else { break };
                        chunk.copy_from_slice(&hit.to_bytes());
                        n += 1;
                    }
                    if n == 0 { Err(EAGAIN) } else { Ok(n * HIT_RECORD_SIZE) }
                }
                &mut Kind::Cpu(c) => {
                    buf[..CPU_PLAN_SIZE].copy_from_slice(&m.cpu_plans[c]);
                    buf[CPU_PLAN_SIZE..CPU_PLAN_SIZE + 8].copy_from_slice(&m.dropped[c].to_le_bytes());
                    buf[CPU_PLAN_SIZE + 8..CPU_PLAN_SIZE + 16].copy_from_slice(&0u64.to_le_bytes());
                    Ok(CPU_PLAN_SIZE + 16)
                }
                _ => Err(EINVAL),
            }
        }

        fn write(&self, fd: &FakeFd, buf: &[u8]) -> Result<usize, Errno> {
            let mut m = self.0.borrow_mut();
            match *m.handles.get(&fd.id).ok_or(EINVAL)? {
                Kind::Regs { ctx, control } => {
                    if m.control != Some(control) {
                        return Err(EPERM);
                    }
                    if let Some((c, e)) = m.fail_write
                        && c == ctx
                    {
                        m.fail_write = None;
                        return Err(e);
                    }
                    decode_context_plan(buf).map_err(|e| match e {
                        abi::DecodeError::Plan(_) => ENOSPC,
                        _ => EINVAL,
                    })?;
                    let c = m.contexts.get_mut(&ctx).ok_or(ESRCH)?;
                    c.plan = buf.to_vec();
                    c.last_writer = Some(fd.id);
                    Ok(buf.len())
                }
                Kind::Cpu(c) => {
                    decode_cpu_plan(buf).map_err(|_| EINVAL)?;
                    m.cpu_plans[c] = buf.to_vec();
                    Ok(buf.len())
                }
                _ => Err(EINVAL),
            }
        }

        fn raw(&self, fd: &FakeFd) -> usize {
            fd.id
        }

        fn inherited(&self, raw: usize) -> FakeFd {
            self.fd(raw)
        }

        fn monotonic_ns(&self) -> u64 {
            self.0.borrow().now_ns
        }

        fn tsc(&self) -> u64 {
            self.0.borrow().now_ns * TSC_PER_NS
        }
    }

    fn kernel(model: &Rc<RefCell<Model>>) -> RedoxKernel<FakeSys> {
        let sys = FakeSys(Rc::clone(model));
        let control = acquire_control(&sys).expect("control");
        let mut k = RedoxKernel::open(sys, control).expect("open");
        model.borrow_mut().now_ns += 20_000_000;
        k.sample_clock();
        k
    }

    fn watch(addr: u64, len: Len, access: Access) -> ContextPlan {
        let mut plan = ContextPlan::EMPTY;
        let piece = Piece::new(addr, len, access).expect("aligned user piece");
        plan.push(ContextPiece { piece, token: addr, cpu: CpuFilter::Any }).expect("fits");
        plan
    }

    fn encoded(plan: &ContextPlan) -> Vec<u8> {
        let mut buf = [0u8; MAX_PLAN_BYTES];
        let n = encode_context_plan(plan, &mut buf).unwrap();
        buf[..n].to_vec()
    }

    #[test]
    fn open_probes_every_cpu_and_holds_the_only_control_handle() {
        let model = Model::new(3);
        let k = kernel(&model);
        assert_eq!(k.cpu_count(), 3);
        assert_eq!(model.borrow().control, Some(k.control_fd()));
        let again = acquire_control(&FakeSys(Rc::clone(&model)));
        assert_eq!(again.err().map(|e| e.errno), Some(EBUSY));
        assert_eq!(k.tsc_hz(), Some(TSC_PER_NS * 1_000_000_000));
    }

    #[test]
    fn a_task_plan_reaches_every_thread_as_the_kernel_decodes_it() {
        let model = Model::new(2);
        let threads = model.borrow_mut().spawn(7, 1000, 3);
        let mut k = kernel(&model);
        let plan = watch(0x1000, Len::Four, Access::Write);
        k.set_task_plan(7, &plan).unwrap();
        for t in threads {
            assert_eq!(model.borrow().plan_of(t), plan);
        }
        assert_eq!(k.task(7), Ok(TaskInfo { pid: 7, uid: 1000 }));
    }

    #[test]
    fn a_refused_write_puts_the_previous_plan_back_on_every_thread() {
        let model = Model::new(1);
        let threads = model.borrow_mut().spawn(7, 0, 2);
        let mut k = kernel(&model);
        let old = watch(0x1000, Len::Eight, Access::ReadWrite);
        k.set_task_plan(7, &old).unwrap();
        model.borrow_mut().fail_write = Some((threads[1], ENOSPC));
        let new = watch(0x2000, Len::One, Access::Write);
        assert!(matches!(k.set_task_plan(7, &new), Err(KernelError::Refused(_))));
        for &t in &threads {
            assert_eq!(model.borrow().plan_of(t), old, "thread {t}");
        }
        // And the next write still goes through every handle.
        k.set_task_plan(7, &new).unwrap();
        assert_eq!(model.borrow().plan_of(threads[1]), new);
    }

    #[test]
    fn a_thread_that_died_is_skipped_and_a_task_with_none_left_is_gone() {
        let model = Model::new(1);
        let threads = model.borrow_mut().spawn(7, 0, 2);
        let mut k = kernel(&model);
        k.set_task_plan(7, &watch(0x1000, Len::Four, Access::Write)).unwrap();
        model.borrow_mut().contexts.remove(&threads[0]);
        let new = watch(0x2000, Len::Four, Access::Write);
        k.set_task_plan(7, &new).unwrap();
        assert_eq!(model.borrow().plan_of(threads[1]), new);
        model.borrow_mut().contexts.remove(&threads[1]);
        assert_eq!(k.set_task_plan(7, &watch(0x3000, Len::Four, Access::Write)), Err(KernelError::NoSuchTask(7)));
    }

    #[test]
    fn an_empty_plan_clears_every_thread() {
        let model = Model::new(1);
        let threads = model.borrow_mut().spawn(7, 0, 2);
        let mut k = kernel(&model);
        k.set_task_plan(7, &watch(0x1000, Len::Four, Access::Write)).unwrap();
        k.set_task_plan(7, &ContextPlan::EMPTY).unwrap();
        for t in threads {
            assert!(model.borrow().contexts[&t].plan.is_empty());
        }
    }

    #[test]
    fn a_task_without_live_threads_is_esrch() {
        let model = Model::new(1);
        let mut k = kernel(&model);
        let plan = watch(0x1000, Len::Four, Access::Write);
        assert_eq!(k.set_task_plan(8, &plan), Err(KernelError::NoSuchTask(8)));
        assert_eq!(k.task(8), Err(KernelError::NoSuchTask(8)));
    }

    #[test]
    fn many_threads_are_listed_through_a_growing_buffer() {
        let model = Model::new(1);
        let threads = model.borrow_mut().spawn(7, 0, THREAD_READ_START as u32 * 5);
        let mut k = kernel(&model);
        let plan = watch(0x1000, Len::Four, Access::Write);
        k.set_task_plan(7, &plan).unwrap();
        assert_eq!(model.borrow().plan_of(*threads.last().unwrap()), plan);
    }

    #[test]
    fn new_threads_get_the_plan_at_the_next_scan_and_exits_are_reported() {
        let model = Model::new(1);
        model.borrow_mut().spawn(7, 0, 1);
        model.borrow_mut().spawn(9, 0, 1);
        let mut k = kernel(&model);
        let mut exits = Vec::new();
        k.take_exits(&mut exits); // the scan due since start
        assert!(exits.is_empty());
        let plan = watch(0x1000, Len::Two, Access::ReadWrite);
        k.set_task_plan(7, &plan).unwrap();
        let late = model.borrow_mut().spawn(7, 0, 1)[0];
        k.take_exits(&mut exits);
        assert!(model.borrow().contexts[&late].plan.is_empty(), "not before the scan interval");
        model.borrow_mut().now_ns += SCAN_INTERVAL_NS;
        model.borrow_mut().exit(9);
        k.take_exits(&mut exits);
        assert_eq!(model.borrow().plan_of(late), plan);
        assert_eq!(exits, vec![9]);
        for t in model.borrow().threads(7) {
            assert_eq!(model.borrow().plan_of(t), plan);
        }
        // A thread that ends loses its handle at the next scan.
        model.borrow_mut().contexts.remove(&late);
        model.borrow_mut().now_ns += SCAN_INTERVAL_NS;
        k.take_exits(&mut exits);
        let regs_of_late = model.borrow().handles.values().filter(|h| matches!(h, Kind::Regs { ctx, .. } if *ctx == late)).count();
        assert_eq!(regs_of_late, 0);
    }

    #[test]
    fn hits_carry_the_pid_and_monotonic_time() {
        let model = Model::new(2);
        let mut k = kernel(&model);
        let at_ns = model.borrow().now_ns - 5_000;
        let hit = HitRecord { token: 0x1000, rip: 0x40_0000, addr: 0x1000, context: (7 << 32) | 123, timestamp: at_ns * TSC_PER_NS, cpu: 1, flags: 0 };
        model.borrow_mut().hits.extend([hit, hit]);
        let mut out = [HitRecord::ZERO; 8];
        assert_eq!(k.drain_hits(&mut out), 2);
        assert_eq!(out[0].timestamp, at_ns);
        assert_eq!(out[1].rip, 0x40_0000);
        assert_eq!(k.context_pid(out[0].context), Some(7));
        assert_eq!(k.context_pid(55), None, "kernel contexts have pid 0");
        assert_eq!(k.drain_hits(&mut out), 0, "EAGAIN when empty");
    }

    #[test]
    fn cpu_plans_dropped_counters_and_disarm_all() {
        let model = Model::new(2);
        let threads = model.borrow_mut().spawn(7, 0, 1);
        let mut k = kernel(&model);
        let mut cpu_plan = CpuPlan::EMPTY;
        let piece = Piece::new(0x3000, Len::Eight, Access::Write).unwrap();
        cpu_plan.set(Slot::ALL[2], Some(CpuPiece { piece, token: 9 }));
        k.set_cpu_plan(1, &cpu_plan).unwrap();
        assert_eq!(decode_cpu_plan(&model.borrow().cpu_plans[1]).unwrap(), cpu_plan);
        assert_eq!(k.set_cpu_plan(2, &cpu_plan), Err(KernelError::NoSuchCpu(2)));
        model.borrow_mut().dropped = vec![3, 4];
        assert_eq!(k.dropped_hits(), 7);
        k.set_task_plan(7, &watch(0x1000, Len::Four, Access::Write)).unwrap();
        k.disarm_all();
        assert!(model.borrow().contexts[&threads[0]].plan.is_empty());
        assert_eq!(decode_cpu_plan(&model.borrow().cpu_plans[1]).unwrap(), CpuPlan::EMPTY);
    }

    #[test]
    fn the_scheme_over_the_redox_backend_arms_a_watch_in_every_thread_and_disarms_on_drop() {
        let model = Model::new(2);
        let threads = model.borrow_mut().spawn(7, 1000, 2);
        let mut scheme = HwbpScheme::new(kernel(&model), Config::default());
        let owner = hwbpd::caller_ctx(7, 1000, 1000);
        let root = scheme.scheme_root().unwrap();
        assert_eq!(root, ROOT_HANDLE);
        let opened = scheme.openat(root, "task/7/mem:0x1000/4:w", 0, 0, &owner).expect("open");
        assert!(matches!(opened, OpenResult::ThisScheme { .. }));
        let want = watch(0x1000, Len::Four, Access::Write);
        for &t in &threads {
            let got = model.borrow().plan_of(t);
            assert_eq!(got.len(), 1);
            let p = got.iter().next().unwrap();
            assert_eq!((p.piece, p.cpu), (want.iter().next().unwrap().piece, CpuFilter::Any));
        }
        // Not another user's task.
        let other = hwbpd::caller_ctx(8, 1001, 1001);
        assert!(scheme.openat(root, "task/7/mem:0x2000/4:w", 0, 0, &other).is_err());
        drop(scheme);
        for t in threads {
            assert!(model.borrow().contexts[&t].plan.is_empty(), "nothing stays armed");
        }
        assert_eq!(model.borrow().control, None, "the control handle closed");
        let _ = encoded(&want);
    }
}
