//! [`RedoxKernel`]: the [`Kernel`] interface over the patched Redox kernel,
//! speaking `kernel-patch/ABI.md` with the encoders of `hwbp_kern::abi`.
//!
//! Handles it holds (all on the kernel's `proc:` scheme, all dup'ed from
//! the control handle except the control handle itself):
//! - `hwbp-control`, opened at start as `/scheme/sys/hwbp-control` (root
//!   only, one holder; see [`acquire_control`]): hit records and events
//!   (exit, identity change), read until EAGAIN when the event queue says
//!   it is readable; closing it (or hwbpd dying) disarms everything;
//! - `cpu-<n>` for every CPU (probed from 0 until ESRCH): CPU plans, and
//!   their exact counts (the records after byte 120 of a read);
//! - `pid-<pid>` for every task hwbpd follows (from the first plan set for
//!   it, even an empty one, until [`Kernel::release_task`] or its end):
//!   one write arms every thread of the process, the ones it creates later
//!   included, before their first instruction; a read gives its exact
//!   counts. No thread handle, no rescan: the kernel follows the threads.
//!
//! A task's plan ends when the kernel says so on the control stream
//! (`HIT_EVENT` records, after the task's last hit records): its last counts
//! are read, the handle closed, and a [`TaskEnd`] reported. After an end —
//! and from the moment a write or read of the handle says ESRCH — the
//! handle is never written again and no new one is opened for the pid
//! until the end is reported: a later process that got the pid is never
//! armed through an earlier attachment. `sys:context` is read only by
//! [`Kernel::task`] (the euid for the permission check at open).
//!
//! Hit timestamps are TSC ticks, converted with [`TscClock`]; the daemon
//! feeds it a sample per tick. All calls go through [`Sys`]: `RedoxSys` on
//! Redox, a model of the ABI in the tests below.

use std::cell::Cell;
use std::collections::BTreeMap;

use hwbp_kern::abi::{
    self, CPU_PLAN_SIZE, EVENT_EXIT, EVENT_IDENTITY, HIT_EVENT, HIT_RECORD_SIZE, HitRecord, RAW_PIECE_SIZE,
};
use hwbp_kern::plan::MAX_CONTEXT_PIECES;
use hwbp_kern::{ContextPlan, CpuId, CpuPlan};
use syscall::error::{EAGAIN, EBUSY, EINVAL, ENOSPC, EPERM, ESRCH, EWOULDBLOCK};

use super::contexts::Snapshot;
use super::sys::{Errno, Sys};
use super::tsc::{Sample, TscClock};
use hwbpd::kernel::{EndReason, Kernel, KernelError, PieceCount, Pid, TaskEnd, TaskInfo};

/// The listing of every context, with pid, euid and state.
pub const SYS_CONTEXT_PATH: &str = "/scheme/sys/context";
/// Where a root process opens the kernel's `hwbp-control` handle. sys: is
/// in root's namespace on an unmodified userspace, so hwbpd needs no proc:
/// authority (which only procmgr holds) and no help from whoever starts it.
pub const CONTROL_PATH: &str = "/scheme/sys/hwbp-control";
/// Upper bound when probing `cpu-<n>` (the loop ends at the first ESRCH).
const MAX_PROBE: usize = 4096;
/// Hit records read from the control handle per `read`.
const HIT_READ_BATCH: usize = 256;
/// Largest encoded context plan.
const MAX_PLAN_BYTES: usize = MAX_CONTEXT_PIECES * RAW_PIECE_SIZE;
/// A count record: `token` u64, `hits` u64 (ABI "Counts").
pub const COUNT_RECORD_SIZE: usize = 16;
/// Where a `cpu-<n>` read's count records start: the plan and three
/// counters (`dropped`, `pending`, `refused`).
pub const CPU_COUNTS_OFFSET: usize = CPU_PLAN_SIZE + 24;
/// Count records read per `read` of a `pid-<pid>` or `cpu-<n>` handle; a
/// read that fills the buffer is followed by another.
const COUNT_READ_BATCH: usize = 64;

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

/// A task hwbpd follows: its `pid-<pid>` handle and the plan last written.
struct Followed<F> {
    fd: F,
    bytes: Vec<u8>,
    /// The kernel ended the plan (a read or write said ESRCH): its end
    /// event is on its way; nothing is written through it any more.
    ended: bool,
}

/// The Redox kernel, through the hwbp proc: handles. See the module docs.
pub struct RedoxKernel<S: Sys> {
    sys: S,
    control: S::Fd,
    cpus: Vec<S::Fd>,
    tasks: BTreeMap<Pid, Followed<S::Fd>>,
    /// Counts read outside `take_counts` (an ended plan's last ones, a
    /// read before a retried write), handed out by the next call.
    pending_counts: Vec<PieceCount>,
    ends: Vec<TaskEnd>,
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
        EBUSY => "another pid handle of the process is open (EBUSY)",
        EAGAIN => "the kernel keeps no more removed pieces' counts (EAGAIN)",
        _ => "writing the plan failed",
    };
    log::warn!("hwbpd: kernel refused the plan of task {pid}: {why}, errno {errno}");
    KernelError::Refused(why)
}

/// Append the count records in `bytes` (whole 16-byte records only).
fn decode_counts(bytes: &[u8], out: &mut Vec<PieceCount>) {
    for c in bytes.chunks_exact(COUNT_RECORD_SIZE) {
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(c.get(at..at + 8).unwrap_or(&[0; 8]));
            u64::from_le_bytes(w)
        };
        if word(8) != 0 {
            out.push(PieceCount { token: word(0), hits: word(8) });
        }
    }
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
        let first = Sample { tsc: sys.tsc(), ns: sys.monotonic_ns() };
        Ok(RedoxKernel {
            clock: TscClock::new(first),
            sys,
            control,
            cpus,
            tasks: BTreeMap::new(),
            pending_counts: Vec::new(),
            ends: Vec::new(),
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

    /// Read a `pid-<pid>` handle's counts into `out` until it has no more.
    /// Err(ESRCH): the plan ended and its last counts were read before.
    fn read_pid_counts(sys: &S, fd: &S::Fd, out: &mut Vec<PieceCount>) -> Result<(), Errno> {
        let mut buf = [0u8; COUNT_READ_BATCH * COUNT_RECORD_SIZE];
        loop {
            let n = sys.read(fd, &mut buf)?;
            decode_counts(buf.get(..n).unwrap_or(&[]), out);
            if n < buf.len() {
                return Ok(());
            }
        }
    }

    /// Counts of a followed task into `pending_counts`; ESRCH marks it
    /// ended (its event follows on the control stream).
    fn read_task_counts(&mut self, pid: Pid) {
        let Some(task) = self.tasks.get_mut(&pid) else { return };
        if task.ended {
            return;
        }
        match Self::read_pid_counts(&self.sys, &task.fd, &mut self.pending_counts) {
            Ok(()) => {}
            Err(ESRCH) => task.ended = true,
            Err(e) => log::warn!("hwbpd: reading the counts of task {pid} failed: errno {e}"),
        }
    }

    /// An event from the control stream: the kernel ended `pid`'s plan.
    fn on_event(&mut self, pid: Pid, kind: u64) {
        let reason = match kind {
            EVENT_EXIT => EndReason::Exit,
            EVENT_IDENTITY => EndReason::Identity,
            _ => return log::warn!("hwbpd: unknown event {kind} for task {pid} on the control stream, ignored"),
        };
        let Some(task) = self.tasks.get(&pid) else {
            // Released before the event was read: nothing of ours is left.
            return log::debug!("hwbpd: event {kind} for task {pid}, which is not followed");
        };
        // The ended plan's last counts, then ESRCH. Two reads that both
        // succeed mean the plan is alive: the event was about a handle
        // closed since (released, then followed again).
        let mut ended = task.ended;
        for _ in 0..2 {
            if ended {
                break;
            }
            match Self::read_pid_counts(&self.sys, &task.fd, &mut self.pending_counts) {
                Ok(()) => {}
                Err(ESRCH) => ended = true,
                Err(e) => {
                    log::warn!("hwbpd: reading the last counts of task {pid} failed: errno {e}");
                    ended = true;
                }
            }
        }
        if !ended {
            return log::warn!("hwbpd: event {kind} for task {pid} whose plan is alive: an earlier handle's, ignored");
        }
        // Closing the handle: the kernel ended the plan already.
        self.tasks.remove(&pid);
        self.ends.push(TaskEnd { pid, reason });
    }

    /// Write `bytes` as `pid`'s plan. EAGAIN (the kernel keeps no more
    /// removed pieces' counts) is answered by reading them, then writing
    /// again.
    fn write_plan(&mut self, pid: Pid, bytes: &[u8]) -> Result<(), Errno> {
        let Some(task) = self.tasks.get(&pid) else { return Err(ESRCH) };
        match self.sys.write(&task.fd, bytes) {
            Err(EAGAIN) => {
                self.read_task_counts(pid);
                let task = self.tasks.get(&pid).ok_or(ESRCH)?;
                self.sys.write(&task.fd, bytes).map(|_| ())
            }
            r => r.map(|_| ()),
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
        // Fresh: the euid now, for the permission check at open.
        let snap = read_snapshot(&self.sys).map_err(|e| {
            log::error!("hwbpd: reading {SYS_CONTEXT_PATH} failed: errno {e}");
            KernelError::Refused("sys:context unreadable")
        })?;
        let t = snap.task(pid).ok_or(KernelError::NoSuchTask(pid))?;
        Ok(TaskInfo { pid, uid: t.euid })
    }

    fn set_task_plan(&mut self, pid: Pid, plan: &ContextPlan) -> Result<(), KernelError> {
        let mut buf = [0u8; MAX_PLAN_BYTES];
        let used = abi::encode_context_plan(plan, &mut buf).ok_or(KernelError::Refused("plan too large to encode"))?;
        let bytes = buf.get(..used).unwrap_or(&[]);
        match self.tasks.get(&pid) {
            // Never through a handle whose plan ended, and no new one
            // before its end is reported: the pid may be another process's.
            Some(task) if task.ended => return Err(KernelError::NoSuchTask(pid)),
            Some(task) if task.bytes == bytes => return Ok(()),
            Some(_) => {}
            None => {
                let fd = self.sys.dup(&self.control, &format!("pid-{pid}")).map_err(|e| refused(pid, e))?;
                self.tasks.insert(pid, Followed { fd, bytes: Vec::new(), ended: false });
                if bytes.is_empty() {
                    // A new process plan is empty: nothing to write.
                    return Ok(());
                }
            }
        }
        match self.write_plan(pid, bytes) {
            Ok(()) => {
                if let Some(task) = self.tasks.get_mut(&pid) {
                    task.bytes = bytes.to_vec();
                }
                Ok(())
            }
            Err(ESRCH) => {
                if let Some(task) = self.tasks.get_mut(&pid) {
                    task.ended = true;
                }
                Err(KernelError::NoSuchTask(pid))
            }
            Err(e) => Err(refused(pid, e)),
        }
    }

    fn release_task(&mut self, pid: Pid) {
        // Closing the handle clears every thread's plan (ABI "Process
        // plans"); its unread counts belong to no breakpoint any more.
        self.tasks.remove(&pid);
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

    fn take_counts(&mut self, out: &mut Vec<PieceCount>) {
        out.append(&mut self.pending_counts);
        for (pid, task) in self.tasks.iter_mut().filter(|(_, t)| !t.ended) {
            match Self::read_pid_counts(&self.sys, &task.fd, out) {
                Ok(()) => {}
                // Ended: its event follows on the control stream.
                Err(ESRCH) => task.ended = true,
                Err(e) => log::warn!("hwbpd: reading the counts of task {pid} failed: errno {e}"),
            }
        }
        let mut buf = [0u8; CPU_COUNTS_OFFSET + COUNT_READ_BATCH * COUNT_RECORD_SIZE];
        for (n, cpu) in self.cpus.iter().enumerate() {
            loop {
                match self.sys.read(cpu, &mut buf) {
                    Ok(len) => {
                        decode_counts(buf.get(CPU_COUNTS_OFFSET..len).unwrap_or(&[]), out);
                        if len < buf.len() {
                            break;
                        }
                    }
                    Err(e) => {
                        log::warn!("hwbpd: reading the counts of cpu {n} failed: errno {e}");
                        break;
                    }
                }
            }
        }
    }

    fn drain_hits(&mut self, out: &mut [HitRecord]) -> usize {
        let want = out.len().min(HIT_READ_BATCH);
        if want == 0 {
            return 0;
        }
        // Until a read gives a hit record or nothing: a read of events
        // only must not look like the end of the stream.
        loop {
            let Some(buf) = self.read_buf.get_mut(..want * HIT_RECORD_SIZE) else { return 0 };
            let read = match self.sys.read(&self.control, buf) {
                Ok(bytes) => bytes / HIT_RECORD_SIZE,
                Err(EAGAIN | EWOULDBLOCK) => 0,
                Err(e) => {
                    if self.last_read_errno.replace(Some(e)) != Some(e) {
                        log::error!("hwbpd: reading hit records failed: errno {e}");
                    }
                    0
                }
            };
            if read == 0 {
                return 0;
            }
            let mut hits = 0;
            let mut events = Vec::new();
            for chunk in self.read_buf.chunks_exact(HIT_RECORD_SIZE).take(read) {
                let Ok(bytes) = <&[u8; HIT_RECORD_SIZE]>::try_from(chunk) else { continue };
                let mut hit = HitRecord::from_bytes(bytes);
                if hit.flags & HIT_EVENT != 0 {
                    events.push(hit);
                    continue;
                }
                hit.timestamp = self.clock.to_ns(hit.timestamp);
                if let Some(slot) = out.get_mut(hits) {
                    *slot = hit;
                    hits += 1;
                }
            }
            // Events follow the records in a read: the task's last hits
            // are in `out` before its end is reported.
            for e in events {
                match Pid::try_from(e.context >> 32) {
                    Ok(pid) => self.on_event(pid, e.token),
                    Err(_) => log::warn!("hwbpd: event with context {:#x}: no pid, ignored", e.context),
                }
            }
            if hits > 0 {
                return hits;
            }
        }
    }

    fn context_pid(&self, context: u64) -> Option<Pid> {
        // ABI: bits 32-63 are the context's pid (as procmgr set it; 0: kernel).
        Pid::try_from(context >> 32).ok().filter(|&pid| pid != 0)
    }

    fn take_ends(&mut self, out: &mut Vec<TaskEnd>) {
        out.append(&mut self.ends);
    }

    fn now_ns(&self) -> u64 {
        self.sys.monotonic_ns()
    }

    fn disarm_all(&mut self) {
        // Closing a `pid-<pid>` handle clears the plan of every thread.
        self.tasks.clear();
        let empty = abi::encode_cpu_plan(&CpuPlan::EMPTY);
        for (n, cpu) in self.cpus.iter().enumerate() {
            if let Err(e) = self.sys.write(cpu, &empty) {
                log::warn!("hwbpd: clearing the plan of cpu {n} failed: errno {e}");
            }
        }
    }
}

/// The backend against a model of `kernel-patch/ABI.md`: what it writes is
/// decoded with the kernel's own decoder (`hwbp_kern::abi`), and handles
/// behave as the ABI says on dup, write, read and close: a process plan
/// shared by the process's threads (new ones join it with no call from
/// the backend), exact counts kept apart from a record ring that can be
/// full, exit and identity events after the records, an ended plan that
/// answers ESRCH and never reaches a later process with the same pid.
#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::rc::Rc;

    use hwbp_kern::abi::{decode_context_plan, decode_cpu_plan};
    use hwbp_kern::plan::CpuPiece;
    use hwbp_kern::{Access, ContextPiece, CpuFilter, Len, Piece, Slot};
    use redox_scheme::OpenResult;
    use redox_scheme::scheme::SchemeSync;
    use syscall::error::ENOENT;

    use super::*;
    use hwbpd::kernel::Uid;
    use hwbpd::scheme::{Config, HwbpScheme, ROOT_HANDLE};

    const TSC_PER_NS: u64 = 3;

    enum Kind {
        Control,
        Cpu(usize),
        /// A `pid-<pid>` handle; its plan is `Model::plans[handle id]`.
        Pid { control: usize },
        Listing { text: Vec<u8>, at: usize },
    }

    struct Ctx {
        pid: Pid,
        euid: Uid,
    }

    /// A process plan (ABI "Process plans").
    struct ProcPlan {
        pid: Pid,
        /// The contexts of the process it was attached to: a later process
        /// with the same pid has other ones.
        members: Vec<u32>,
        bytes: Vec<u8>,
        /// Hits per token since the last read.
        counts: BTreeMap<u64, u64>,
        /// Ended (exit, identity): the last counts read once, then ESRCH.
        ended: bool,
        last_read: bool,
    }

    #[derive(Default)]
    struct Model {
        next: usize,
        handles: BTreeMap<usize, Kind>,
        plans: BTreeMap<usize, ProcPlan>,
        /// Debug id -> live user context.
        contexts: BTreeMap<u32, Ctx>,
        next_ctx: u32,
        control: Option<usize>,
        cpu_plans: Vec<Vec<u8>>,
        /// Per CPU: hits per token of its plan since the last read.
        cpu_counts: Vec<BTreeMap<u64, u64>>,
        hits: VecDeque<HitRecord>,
        events: VecDeque<HitRecord>,
        /// Records the ring holds before it drops (the kernel's 256 per CPU).
        ring_room: usize,
        dropped: u64,
        /// The next process-plan write fails with this errno.
        fail_write: Option<Errno>,
        /// Every name dup'ed, in order.
        dups: Vec<String>,
        /// Calls the backend made (any kind).
        calls: usize,
        now_ns: u64,
    }

    impl Model {
        fn new(cpus: usize) -> Rc<RefCell<Model>> {
            Rc::new(RefCell::new(Model {
                next: 3,
                next_ctx: 100,
                cpu_plans: vec![vec![0; CPU_PLAN_SIZE]; cpus],
                cpu_counts: vec![BTreeMap::new(); cpus],
                ring_room: usize::MAX,
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

        /// A new process `pid` (or new threads in it) as procmgr names them.
        fn spawn(&mut self, pid: Pid, euid: Uid, threads: u32) -> Vec<u32> {
            (0..threads)
                .map(|_| {
                    let id = self.next_ctx;
                    self.next_ctx += 1;
                    self.contexts.insert(id, Ctx { pid, euid });
                    // A thread of a watched process joins its plan before it
                    // runs (the `attrs` write); a new process joins nothing.
                    let process_exists = self.contexts.iter().any(|(&c, x)| x.pid == pid && c != id);
                    if let Some(plan) = self.plans.values_mut().find(|p| p.pid == pid && !p.ended)
                        && process_exists
                    {
                        plan.members.push(id);
                    }
                    id
                })
                .collect()
        }

        fn live_plan(&self, pid: Pid) -> Option<&ProcPlan> {
            self.plans.values().find(|p| p.pid == pid && !p.ended)
        }

        /// The plan context `ctx` runs with.
        fn plan_of(&self, ctx: u32) -> ContextPlan {
            let bytes = self.plans.values().find(|p| !p.ended && p.members.contains(&ctx)).map_or(&[][..], |p| &p.bytes);
            decode_context_plan(bytes).expect("the backend wrote a plan the kernel decodes")
        }

        fn end(&mut self, pid: Pid, kind: u64) {
            if let Some(p) = self.plans.values_mut().find(|p| p.pid == pid && !p.ended) {
                p.ended = true;
                self.events.push_back(HitRecord { token: kind, context: u64::from(pid) << 32, timestamp: 1, flags: HIT_EVENT, ..HitRecord::ZERO });
            }
        }

        fn exit(&mut self, pid: Pid) {
            self.contexts.retain(|_, c| c.pid != pid);
            self.end(pid, EVENT_EXIT);
        }

        fn set_euid(&mut self, pid: Pid, euid: Uid) {
            for c in self.contexts.values_mut().filter(|c| c.pid == pid) {
                c.euid = euid;
            }
            self.end(pid, EVENT_IDENTITY);
        }

        /// Thread `ctx` hits the piece `token` of its plan `n` times: each
        /// counted, each recorded while the ring has room.
        fn hit(&mut self, ctx: u32, token: u64, n: u64) {
            let pid = self.contexts[&ctx].pid;
            let plan = self.plans.values_mut().find(|p| !p.ended && p.members.contains(&ctx)).expect("a watched thread");
            *plan.counts.entry(token).or_insert(0) += n;
            for _ in 0..n {
                if self.hits.len() >= self.ring_room {
                    self.dropped += 1;
                    continue;
                }
                let context = (u64::from(pid) << 32) | u64::from(ctx);
                self.hits.push_back(HitRecord { token, rip: 0x40_0000, addr: token, context, timestamp: self.now_ns * TSC_PER_NS, cpu: 0, flags: 0 });
            }
        }

        fn pid_handles(&self) -> usize {
            self.handles.values().filter(|k| matches!(k, Kind::Pid { .. })).count()
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

    fn put_counts(counts: &mut BTreeMap<u64, u64>, buf: &mut [u8]) -> usize {
        let mut n = 0;
        while n + COUNT_RECORD_SIZE <= buf.len() {
            let Some((&token, &hits)) = counts.iter().next() else { break };
            counts.remove(&token);
            buf[n..n + 8].copy_from_slice(&token.to_le_bytes());
            buf[n + 8..n + 16].copy_from_slice(&hits.to_le_bytes());
            n += COUNT_RECORD_SIZE;
        }
        n
    }

    struct FakeFd {
        id: usize,
        model: Rc<RefCell<Model>>,
    }

    impl Drop for FakeFd {
        /// ABI.md "Closing", "Process plans": *close*.
        fn drop(&mut self) {
            let mut m = self.model.borrow_mut();
            match m.handles.remove(&self.id) {
                Some(Kind::Pid { .. }) => {
                    m.plans.remove(&self.id);
                }
                Some(Kind::Control) if m.control == Some(self.id) => {
                    m.control = None;
                    m.plans.clear();
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
            m.calls += 1;
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
            m.calls += 1;
            m.dups.push(name.to_owned());
            if !matches!(m.handles.get(&fd.id), Some(Kind::Control)) {
                return Err(EINVAL);
            }
            let number = |prefix: &str| name.strip_prefix(prefix).and_then(|n| n.parse::<u64>().ok());
            if let Some(pid) = number("pid-") {
                let pid = Pid::try_from(pid).map_err(|_| ESRCH)?;
                let members: Vec<u32> = m.contexts.iter().filter(|(_, c)| c.pid == pid).map(|(&id, _)| id).collect();
                if pid == 0 || members.is_empty() {
                    return Err(ESRCH);
                }
                if m.live_plan(pid).is_some() {
                    return Err(EBUSY);
                }
                let id = m.insert(Kind::Pid { control: fd.id });
                m.plans.insert(id, ProcPlan { pid, members, bytes: Vec::new(), counts: BTreeMap::new(), ended: false, last_read: false });
                drop(m);
                return Ok(self.fd(id));
            }
            let n = number("cpu-").ok_or(ENOENT)? as usize;
            if n >= m.cpu_plans.len() {
                return Err(ESRCH);
            }
            let id = m.insert(Kind::Cpu(n));
            drop(m);
            Ok(self.fd(id))
        }

        fn read(&self, fd: &FakeFd, buf: &mut [u8]) -> Result<usize, Errno> {
            let mut m = self.0.borrow_mut();
            let m = &mut *m;
            m.calls += 1;
            match m.handles.get_mut(&fd.id).ok_or(EINVAL)? {
                Kind::Listing { text, at } => {
                    let rest = &text[*at..];
                    let n = rest.len().min(buf.len());
                    buf[..n].copy_from_slice(&rest[..n]);
                    *at += n;
                    Ok(n)
                }
                Kind::Control => {
                    if buf.len() < HIT_RECORD_SIZE {
                        return Err(EINVAL);
                    }
                    // Hit records first, then events.
                    let mut n = 0;
                    for chunk in buf.chunks_exact_mut(HIT_RECORD_SIZE) {
                        let Some(hit) = m.hits.pop_front().or_else(|| m.events.pop_front()) else { break };
                        chunk.copy_from_slice(&hit.to_bytes());
                        n += 1;
                    }
                    if n == 0 { Err(EAGAIN) } else { Ok(n * HIT_RECORD_SIZE) }
                }
                Kind::Pid { .. } => {
                    let p = m.plans.get_mut(&fd.id).ok_or(ESRCH)?;
                    if p.ended && p.last_read {
                        return Err(ESRCH);
                    }
                    p.last_read = p.ended;
                    Ok(put_counts(&mut p.counts, buf))
                }
                &mut Kind::Cpu(c) => {
                    if buf.len() < CPU_PLAN_SIZE {
                        return Err(EINVAL);
                    }
                    let mut out = m.cpu_plans[c].clone();
                    for counter in [m.dropped, 0, 0] {
                        out.extend_from_slice(&counter.to_le_bytes());
                    }
                    let head = out.len().min(buf.len()) / 8 * 8;
                    buf[..head].copy_from_slice(&out[..head]);
                    if head < out.len() {
                        return Ok(head);
                    }
                    Ok(head + put_counts(&mut m.cpu_counts[c], &mut buf[head..]))
                }
            }
        }

        fn write(&self, fd: &FakeFd, buf: &[u8]) -> Result<usize, Errno> {
            let mut m = self.0.borrow_mut();
            m.calls += 1;
            match *m.handles.get(&fd.id).ok_or(EINVAL)? {
                Kind::Pid { control } => {
                    if m.control != Some(control) {
                        return Err(EPERM);
                    }
                    if m.plans.get(&fd.id).is_none_or(|p| p.ended) {
                        return Err(ESRCH);
                    }
                    if let Some(e) = m.fail_write.take() {
                        return Err(e);
                    }
                    decode_context_plan(buf).map_err(|e| match e {
                        abi::DecodeError::Plan(_) => ENOSPC,
                        _ => EINVAL,
                    })?;
                    if let Some(p) = m.plans.get_mut(&fd.id) {
                        p.bytes = buf.to_vec();
                    }
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
        plan.push(ContextPiece { piece, token: addr, cpu: CpuFilter::Any, stop: false }).expect("fits");
        plan
    }

    fn counts(k: &mut RedoxKernel<FakeSys>) -> BTreeMap<u64, u64> {
        let mut out = Vec::new();
        k.take_counts(&mut out);
        let mut sum = BTreeMap::new();
        for c in out {
            *sum.entry(c.token).or_insert(0) += c.hits;
        }
        sum
    }

    fn drain(k: &mut RedoxKernel<FakeSys>) -> Vec<HitRecord> {
        let mut all = Vec::new();
        let mut out = [HitRecord::ZERO; 8];
        loop {
            let n = k.drain_hits(&mut out);
            if n == 0 {
                return all;
            }
            all.extend_from_slice(&out[..n]);
        }
    }

    fn ends(k: &mut RedoxKernel<FakeSys>) -> Vec<TaskEnd> {
        let mut out = Vec::new();
        k.take_ends(&mut out);
        out
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
    fn a_task_plan_is_one_write_through_one_pid_handle_and_every_thread_has_it() {
        let model = Model::new(2);
        let threads = model.borrow_mut().spawn(7, 1000, 3);
        let mut k = kernel(&model);
        let plan = watch(0x1000, Len::Four, Access::Write);
        let calls = model.borrow().calls;
        k.set_task_plan(7, &plan).unwrap();
        assert_eq!(model.borrow().calls - calls, 2, "one dup, one write");
        for &t in &threads {
            assert_eq!(model.borrow().plan_of(t), plan);
        }
        let moved = watch(0x2000, Len::Eight, Access::ReadWrite);
        let calls = model.borrow().calls;
        k.set_task_plan(7, &moved).unwrap();
        k.set_task_plan(7, &moved).unwrap();
        assert_eq!(model.borrow().calls - calls, 1, "one write per plan change");
        assert_eq!(model.borrow().plan_of(threads[2]), moved);
        assert_eq!(model.borrow().pid_handles(), 1);
        assert!(model.borrow().dups.iter().all(|d| d.starts_with("cpu-") || d == "pid-7"), "no thread handle: {:?}", model.borrow().dups);
        assert_eq!(k.task(7), Ok(TaskInfo { pid: 7, uid: 1000 }));
    }

    #[test]
    fn a_new_thread_gets_the_plan_with_no_backend_action() {
        let model = Model::new(1);
        model.borrow_mut().spawn(7, 0, 1);
        let mut k = kernel(&model);
        let plan = watch(0x1000, Len::Two, Access::ReadWrite);
        k.set_task_plan(7, &plan).unwrap();
        let calls = model.borrow().calls;
        let late = model.borrow_mut().spawn(7, 0, 1)[0];
        assert_eq!(model.borrow().plan_of(late), plan, "watched from its first instruction");
        assert_eq!(model.borrow().calls, calls, "the backend did nothing");
        model.borrow_mut().hit(late, 0x1000, 2);
        assert_eq!(counts(&mut k), BTreeMap::from([(0x1000, 2)]));
    }

    #[test]
    fn a_refused_write_leaves_the_previous_plan_and_the_next_one_goes_through() {
        let model = Model::new(1);
        let threads = model.borrow_mut().spawn(7, 0, 2);
        let mut k = kernel(&model);
        let old = watch(0x1000, Len::Eight, Access::ReadWrite);
        k.set_task_plan(7, &old).unwrap();
        model.borrow_mut().fail_write = Some(ENOSPC);
        let new = watch(0x2000, Len::One, Access::Write);
        assert!(matches!(k.set_task_plan(7, &new), Err(KernelError::Refused(_))));
        for &t in &threads {
            assert_eq!(model.borrow().plan_of(t), old, "thread {t}");
        }
        k.set_task_plan(7, &new).unwrap();
        assert_eq!(model.borrow().plan_of(threads[1]), new);
    }

    #[test]
    fn eagain_on_a_write_reads_the_removed_pieces_counts_then_writes_again() {
        let model = Model::new(1);
        let t = model.borrow_mut().spawn(7, 0, 1)[0];
        let mut k = kernel(&model);
        k.set_task_plan(7, &watch(0x1000, Len::Eight, Access::Write)).unwrap();
        model.borrow_mut().hit(t, 0x1000, 4);
        model.borrow_mut().fail_write = Some(EAGAIN);
        let new = watch(0x2000, Len::Eight, Access::Write);
        k.set_task_plan(7, &new).unwrap();
        assert_eq!(model.borrow().plan_of(t), new);
        assert_eq!(counts(&mut k), BTreeMap::from([(0x1000, 4)]), "read before the retry, handed out once");
        assert!(counts(&mut k).is_empty());
    }

    #[test]
    fn an_empty_plan_keeps_following_the_task_and_release_closes_its_handle() {
        let model = Model::new(1);
        let threads = model.borrow_mut().spawn(7, 0, 2);
        let mut k = kernel(&model);
        k.set_task_plan(7, &ContextPlan::EMPTY).unwrap();
        assert_eq!(model.borrow().pid_handles(), 1, "followed with nothing armed");
        k.set_task_plan(7, &watch(0x1000, Len::Four, Access::Write)).unwrap();
        k.set_task_plan(7, &ContextPlan::EMPTY).unwrap();
        for &t in &threads {
            assert!(model.borrow().plan_of(t).is_empty());
        }
        model.borrow_mut().exit(7);
        assert!(drain(&mut k).is_empty());
        assert_eq!(ends(&mut k), [TaskEnd { pid: 7, reason: EndReason::Exit }], "an empty plan's task still ends");
        model.borrow_mut().spawn(8, 0, 1);
        k.set_task_plan(8, &watch(0x1000, Len::Four, Access::Write)).unwrap();
        k.release_task(8);
        assert_eq!(model.borrow().pid_handles(), 0);
    }

    #[test]
    fn a_task_without_live_threads_is_esrch() {
        let model = Model::new(1);
        let mut k = kernel(&model);
        let plan = watch(0x1000, Len::Four, Access::Write);
        assert_eq!(k.set_task_plan(8, &plan), Err(KernelError::NoSuchTask(8)));
        assert_eq!(k.task(8), Err(KernelError::NoSuchTask(8)));
        assert_eq!(model.borrow().pid_handles(), 0);
    }

    #[test]
    fn counts_are_exact_when_the_kernels_record_ring_dropped_records() {
        let model = Model::new(2);
        let t = model.borrow_mut().spawn(7, 0, 1)[0];
        let mut k = kernel(&model);
        let mut plan = watch(0x1000, Len::Eight, Access::Write);
        plan.push(ContextPiece { piece: Piece::new(0x2000, Len::Eight, Access::Write).unwrap(), token: 0x2000, cpu: CpuFilter::Any, stop: false }).unwrap();
        k.set_task_plan(7, &plan).unwrap();
        model.borrow_mut().ring_room = 256;
        model.borrow_mut().hit(t, 0x1000, 1000);
        model.borrow_mut().hit(t, 0x2000, 3);
        // A CPU plan's counts come after byte 120 of its read.
        model.borrow_mut().cpu_counts[1].insert(0x9000, 70);
        assert_eq!(counts(&mut k), BTreeMap::from([(0x1000, 1000), (0x2000, 3), (0x9000, 70)]));
        assert_eq!(drain(&mut k).len(), 256, "the ring kept 256 records, the counts all 1,003 hits");
        assert!(counts(&mut k).is_empty(), "deltas: each hit once");
    }

    #[test]
    fn exit_and_identity_events_end_the_plan_after_its_records_with_its_last_counts() {
        let model = Model::new(1);
        let a = model.borrow_mut().spawn(7, 1000, 1)[0];
        let b = model.borrow_mut().spawn(9, 1000, 1)[0];
        let mut k = kernel(&model);
        k.set_task_plan(7, &watch(0x1000, Len::Four, Access::Write)).unwrap();
        k.set_task_plan(9, &watch(0x1000, Len::Four, Access::Write)).unwrap();
        model.borrow_mut().hit(a, 0x1000, 2);
        model.borrow_mut().hit(b, 0x1000, 5);
        model.borrow_mut().exit(7);
        model.borrow_mut().set_euid(9, 0);
        assert!(model.borrow().plan_of(b).is_empty(), "the kernel dropped it at once");
        let hits = drain(&mut k);
        assert_eq!(hits.len(), 7, "the records before the ends");
        assert_eq!(ends(&mut k), [TaskEnd { pid: 7, reason: EndReason::Exit }, TaskEnd { pid: 9, reason: EndReason::Identity }]);
        assert_eq!(counts(&mut k), BTreeMap::from([(0x1000, 7)]), "the ended plans' last counts");
        assert_eq!(model.borrow().pid_handles(), 0, "both handles closed");
        // Root's breakpoints are armed again on the same process.
        k.set_task_plan(9, &watch(0x2000, Len::Four, Access::Write)).unwrap();
        assert_eq!(model.borrow().plan_of(b), watch(0x2000, Len::Four, Access::Write));
    }

    #[test]
    fn a_reused_pid_is_never_watched_through_an_old_handle() {
        let model = Model::new(1);
        model.borrow_mut().spawn(7, 1000, 1);
        let mut k = kernel(&model);
        k.set_task_plan(7, &watch(0x1000, Len::Four, Access::Write)).unwrap();
        model.borrow_mut().exit(7);
        // Another process gets pid 7 before hwbpd read the exit.
        let newcomer = model.borrow_mut().spawn(7, 1001, 1)[0];
        assert!(model.borrow().plan_of(newcomer).is_empty(), "the kernel never attaches it to the old plan");
        let plan = watch(0x2000, Len::Four, Access::Write);
        assert_eq!(k.set_task_plan(7, &plan), Err(KernelError::NoSuchTask(7)));
        assert_eq!(k.set_task_plan(7, &plan), Err(KernelError::NoSuchTask(7)), "no new handle before the end is reported");
        assert!(model.borrow().plan_of(newcomer).is_empty());
        assert_eq!(model.borrow().dups.iter().filter(|d| *d == "pid-7").count(), 1);
        drain(&mut k);
        assert_eq!(ends(&mut k), [TaskEnd { pid: 7, reason: EndReason::Exit }]);
        assert_eq!(model.borrow().pid_handles(), 0);
    }

    #[test]
    fn an_event_about_an_earlier_handle_does_not_end_a_live_plan() {
        let model = Model::new(1);
        let t = model.borrow_mut().spawn(7, 0, 1)[0];
        let mut k = kernel(&model);
        let plan = watch(0x1000, Len::Four, Access::Write);
        k.set_task_plan(7, &plan).unwrap();
        model.borrow_mut().events.push_back(HitRecord { token: EVENT_IDENTITY, context: 7 << 32, flags: HIT_EVENT, ..HitRecord::ZERO });
        assert!(drain(&mut k).is_empty());
        assert!(ends(&mut k).is_empty());
        assert_eq!(model.borrow().plan_of(t), plan);
    }

    #[test]
    fn hits_carry_the_pid_and_monotonic_time_and_events_are_not_hits() {
        let model = Model::new(2);
        let mut k = kernel(&model);
        let at_ns = model.borrow().now_ns - 5_000;
        let hit = HitRecord { token: 0x1000, rip: 0x40_0000, addr: 0x1000, context: (7 << 32) | 123, timestamp: at_ns * TSC_PER_NS, cpu: 1, flags: 0 };
        let event = HitRecord { token: EVENT_EXIT, context: 8 << 32, flags: HIT_EVENT, ..HitRecord::ZERO };
        model.borrow_mut().hits.extend([hit, event, hit]);
        let mut out = [HitRecord::ZERO; 8];
        assert_eq!(k.drain_hits(&mut out), 2);
        assert_eq!(out[0].timestamp, at_ns);
        assert_eq!(out[1].rip, 0x40_0000);
        assert_eq!(k.context_pid(out[0].context), Some(7));
        assert_eq!(k.context_pid(55), None, "kernel contexts have pid 0");
        assert_eq!(k.drain_hits(&mut out), 0, "EAGAIN when empty");
        assert!(ends(&mut k).is_empty(), "pid 8 is not followed");
        // A read of events only is not the end of the records.
        model.borrow_mut().hits.extend([event; 8]);
        model.borrow_mut().hits.push_back(hit);
        assert_eq!(k.drain_hits(&mut out), 1);
    }

    #[test]
    fn cpu_plans_and_disarm_all() {
        let model = Model::new(2);
        let threads = model.borrow_mut().spawn(7, 0, 1);
        let mut k = kernel(&model);
        let mut cpu_plan = CpuPlan::EMPTY;
        let piece = Piece::new(0x3000, Len::Eight, Access::Write).unwrap();
        cpu_plan.set(Slot::ALL[2], Some(CpuPiece { piece, token: 9 }));
        k.set_cpu_plan(1, &cpu_plan).unwrap();
        assert_eq!(decode_cpu_plan(&model.borrow().cpu_plans[1]).unwrap(), cpu_plan);
        assert_eq!(k.set_cpu_plan(2, &cpu_plan), Err(KernelError::NoSuchCpu(2)));
        k.set_task_plan(7, &watch(0x1000, Len::Four, Access::Write)).unwrap();
        k.disarm_all();
        assert!(model.borrow().plan_of(threads[0]).is_empty());
        assert_eq!(model.borrow().pid_handles(), 0);
        assert_eq!(decode_cpu_plan(&model.borrow().cpu_plans[1]).unwrap(), CpuPlan::EMPTY);
    }

    fn open(scheme: &mut HwbpScheme<RedoxKernel<FakeSys>>, pid: usize, uid: Uid, path: &str) -> Result<usize, i32> {
        match scheme.openat(ROOT_HANDLE, path, 0, 0, &hwbpd::caller_ctx(pid, uid, uid)) {
            Ok(OpenResult::ThisScheme { number, .. }) => Ok(number),
            Ok(_) => panic!("not this scheme"),
            Err(e) => Err(e.errno),
        }
    }

    fn command(scheme: &mut HwbpScheme<RedoxKernel<FakeSys>>, fd: usize, cmd: &str) -> Result<usize, i32> {
        scheme.write(fd, cmd.as_bytes(), 0, 0, &hwbpd::caller_ctx(1, 0, 0)).map_err(|e| e.errno)
    }

    fn value(scheme: &mut HwbpScheme<RedoxKernel<FakeSys>>, fd: usize) -> u64 {
        let mut buf = [0u8; 40];
        scheme.read(fd, &mut buf, 0, 0, &hwbpd::caller_ctx(1, 0, 0)).unwrap();
        u64::from_le_bytes(buf[..8].try_into().unwrap())
    }

    #[test]
    fn the_scheme_over_the_redox_backend_arms_every_thread_and_disarms_on_drop() {
        let model = Model::new(2);
        let threads = model.borrow_mut().spawn(7, 1000, 2);
        let mut scheme = HwbpScheme::new(kernel(&model), Config::default());
        assert_eq!(scheme.scheme_root().unwrap(), ROOT_HANDLE);
        let fd = open(&mut scheme, 7, 1000, "task/7/mem:0x1000/4:w").expect("open");
        for &t in &threads {
            let got = model.borrow().plan_of(t);
            assert_eq!(got.len(), 1);
            assert_eq!(got.iter().next().unwrap().piece, Piece::new(0x1000, Len::Four, Access::Write).unwrap());
        }
        let token = model.borrow().plan_of(threads[0]).iter().next().unwrap().token;
        // 300 hits, the ring keeps 100 records: the value is exact.
        model.borrow_mut().ring_room = 100;
        model.borrow_mut().hit(threads[1], token, 300);
        assert_eq!(value(&mut scheme, fd), 300);
        // Not another user's task.
        assert!(open(&mut scheme, 8, 1001, "task/7/mem:0x2000/4:w").is_err());
        drop(scheme);
        for t in threads {
            assert!(model.borrow().plan_of(t).is_empty(), "nothing stays armed");
        }
        assert_eq!(model.borrow().control, None, "the control handle closed");
    }

    #[test]
    fn the_scheme_ends_a_non_root_owners_breakpoint_on_an_identity_event_and_re_arms_roots() {
        let model = Model::new(1);
        let threads = model.borrow_mut().spawn(7, 1000, 2);
        let mut scheme = HwbpScheme::new(kernel(&model), Config::default());
        let user = open(&mut scheme, 7, 1000, "task/7/mem:0x1000/4:w").unwrap();
        let root = open(&mut scheme, 1, 0, "task/7/mem:0x2000/4:w").unwrap();
        assert_eq!(model.borrow().plan_of(threads[0]).len(), 2);
        // A set-uid-root exec.
        model.borrow_mut().set_euid(7, 0);
        scheme.collect();
        for &t in &threads {
            let plan = model.borrow().plan_of(t);
            assert_eq!(plan.iter().map(|p| p.piece.addr()).collect::<Vec<_>>(), [0x2000], "only root's, armed again");
        }
        assert_eq!(command(&mut scheme, user, "enable"), Err(ESRCH), "the user's ended");
        assert_eq!(command(&mut scheme, root, "disable"), Ok(7));
        assert_eq!(open(&mut scheme, 7, 1000, "task/7/mem:0x1000/4:w"), Err(EPERM), "the task is root's now");
    }

    #[test]
    fn the_scheme_never_watches_a_reused_pid_through_an_old_handle() {
        let model = Model::new(1);
        model.borrow_mut().spawn(7, 1000, 1);
        let mut scheme = HwbpScheme::new(kernel(&model), Config::default());
        let old = open(&mut scheme, 7, 1000, "task/7/mem:0x1000/4:w").unwrap();
        model.borrow_mut().exit(7);
        let newcomer = model.borrow_mut().spawn(7, 1001, 1)[0];
        // The old owner's rotation or command reaches the kernel: not the newcomer.
        scheme.tick();
        assert_eq!(command(&mut scheme, old, "enable"), Err(ESRCH));
        assert!(model.borrow().plan_of(newcomer).is_empty());
        assert_eq!(model.borrow().pid_handles(), 0, "the newcomer is not followed");
        // Its own owner may watch it, through a new handle.
        open(&mut scheme, 7, 1001, "task/7/mem:0x2000/4:w").unwrap();
        assert_eq!(model.borrow().plan_of(newcomer).iter().map(|p| p.piece.addr()).collect::<Vec<_>>(), [0x2000]);
    }
}
