//! The `hwbp:` scheme: [`HwbpScheme`] implements `redox_scheme::SchemeSync`
//! over any [`Kernel`] backend. The policy engine (`hwbp-engine`) decides
//! what is armed where; this module parses, checks permissions, keeps the
//! counts and event rings, and pushes the engine's plans to the kernel.
//!
//! Handles:
//! - the root (from `scheme_root`): `openat` a breakpoint path on it;
//! - a breakpoint: `read` = one [`CountRecord`], `write` = one
//!   [`Command`], `fpath` = the admitted path, `fstat`, `dup(fd,
//!   "events-v2")` (or `"events"` for version-1 records);
//! - an event stream: `read` = whole [`EventRecord`]s, `fevent`;
//! - a listing (`list[?from=<id>]`, module `list`): a positioned,
//!   read-only text snapshot of the breakpoints the caller may see;
//! - any of them: `fcntl(F_GETFL/F_SETFL)` is agreed to (Redox's kernel
//!   keeps the flags and passes them to each read as `fcntl_flags`).
//!
//! Limits (contract 7, `crate::usage`): a uid holds at most its quota of
//! breakpoints — a closed one until its last stream closes — and 4 x that
//! of streams; each breakpoint keeps its own stream list, so readiness
//! work never depends on other clients' handles. Growth a client drives is
//! reserved first and refused with ENOMEM rather than aborting.
//!
//! Every call that changes what is armed pushes the changed plans to the
//! kernel before it returns (`close` disarms before it returns).
//!
//! Counts (contract 7): `value` is made of the kernel's exact per-piece
//! counts ([`Kernel::take_counts`]), never of hit records, which only feed
//! the events streams; `lost` is what the breakpoint's records should have
//! been (value / period) minus those that reached its ring, plus what its
//! ring dropped. See `Tally`.
//!
//! Stops (contract 7, "Debuggers"): a breakpoint with option `stop` puts
//! `ContextPiece::stop` on its pieces; the kernel stops a thread that hits
//! one and says so in the record (`HIT_STOPPED`). Each breakpoint holds the
//! threads it stopped (`Breakpoint::held`, apart from its event ring, so a
//! record its full ring dropped still leaves the thread known), and
//! `stopped` counts each thread's holders: the thread runs again
//! ([`Kernel::resume`]) when its last holder lets it go — `resume <tid>`,
//! `resume`, the close of the breakpoint handle (before `on_close`
//! returns), an identity change that ends it, the server's drop. A stopped
//! record that reaches no stopping breakpoint (disabled, closed, modified
//! since) resumes its thread at once: nothing stays stopped unheld.
//!
//! Every refusal goes through `HwbpScheme::refuse`, which logs one line
//! with the operation, the errno and why.

use std::collections::TryReserveError;
use std::fmt;

use hwbp_engine::{BpId, Engine, EngineError, PlanChanges, Request, Scope};
use hwbp_kern::abi::{HIT_KERNEL_MODE, HIT_STOPPED, HitRecord};
use hwbp_kern::piece::{KERNEL_START, USER_END};
use hwbp_kern::{ContextPlan, CpuId};
use libhwbp::abi::errno::{EAGAIN, EBADF, EINVAL, EMFILE, ENOMEM, ENOSPC, EPERM, ESRCH};
use libhwbp::abi::{
    AdmittedPiece, COUNT_RECORD_SIZE, Command, CountRecord, EVENT_KERNEL_MODE, EVENT_STOPPED, EVENTS_DUP_NAME, EVENTS_MARK,
    EVENTS_V1_DUP_NAME, EVENTS_V1_MARK, EventRecord, OpenPath, Options, ROOT_MAX_RING, STREAMS_PER_QUOTA, Target,
    USER_MAX_RING,
};
use redox_scheme::scheme::SchemeSync;
use redox_scheme::{CallerCtx, OpenResult};
use rustc_hash::{FxHashMap, FxHashSet};
use syscall::error::{EIO, EWOULDBLOCK, Error, Result};
use syscall::flag::{EventFlags, F_GETFL, F_SETFL, MODE_FILE, O_NONBLOCK};
use syscall::schemev2::NewFdFlags;
use syscall::{Stat, EVENT_READ};

use crate::kernel::{EndReason, Kernel, KernelError, PieceCount, Pid, TaskEnd, Uid};
use crate::stream::{EventRing, RecordVersion};
use crate::tally::Tally;
use crate::usage::{OverCap, Usage};

mod list;
use list::{ListHandle, ListViews};

/// The handle number `scheme_root` returns.
pub const ROOT_HANDLE: usize = 0;

/// Root's uid.
const ROOT_UID: Uid = 0;

/// `HitRecord::context`: the thread's kernel id in bits 0-31 (the pid is in
/// bits 32-63; kernel-patch/ABI.md). Records carry the low half as `tid`.
const CONTEXT_ID_MASK: u64 = 0xffff_ffff;

/// Hit records moved from the kernel per batch.
const HIT_BATCH: usize = 1024;

/// How the server is set up.
#[derive(Clone, Debug)]
pub struct Config {
    /// Open breakpoints a non-root uid may hold (EMFILE past it; the engine
    /// enforces it, root has no quota).
    pub user_quota: usize,
    /// Time between rotations of flexible breakpoints.
    pub rotation_ns: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config { user_quota: libhwbp::abi::DEFAULT_USER_QUOTA, rotation_ns: DEFAULT_ROTATION_NS }
    }
}

/// perf's default multiplexing interval (`perf_event_mux_interval_ms`): 4 ms.
pub const DEFAULT_ROTATION_NS: u64 = 4_000_000;

enum Handle {
    Root,
    Breakpoint(BpId),
    Events { bp: BpId, subscribed: EventFlags, version: RecordVersion },
    List(ListHandle),
}

/// What the scheme keeps per breakpoint beside the engine.
struct Breakpoint {
    /// The path as opened (target resolved: `self` becomes `task/<pid>`).
    path: OpenPath,
    owner: Uid,
    enabled: bool,
    /// Hits and records since open or the last `reset`: `value`, `lost`
    /// and hit numbers.
    tally: Tally,
    ring: EventRing,
    /// The breakpoint handle is still open (else: closed, engine forgot it).
    open: bool,
    /// The task exited, or changed identity under a non-root owner: no
    /// more hits, the stream ends after the last record.
    ended: bool,
    /// The engine still knows it (an identity change closes it there
    /// early: the owner lost the right to watch the task).
    in_engine: bool,
    /// Event-stream handles open on it: readiness for this breakpoint
    /// walks these, never the handles of anyone else (contract 7).
    streams: FxHashSet<usize>,
    /// Times frozen when the engine stopped tracking the breakpoint.
    final_times: Option<(u64, u64)>,
    /// (cpu, context, rip, timestamp) and token of the last record routed
    /// here: the records of one exception share the first.
    last_exception: Option<((CpuId, u64, u64, u64), u64)>,
    /// (enabled, running) at the last `reset`: reported times start there.
    times_base: (u64, u64),
    /// The pieces the engine admitted (at open, or the last modify): kept
    /// so that `fpath` still names them after the engine forgot a closed
    /// breakpoint whose streams are open.
    pieces: Vec<AdmittedPiece>,
    /// Threads this breakpoint stopped and has not let go: tid (the
    /// record's) -> the kernel's `context` to resume. Kept apart from the
    /// ring, so a stop whose record the ring dropped is still known. At
    /// most the threads of its one task (a stopped thread cannot hit again
    /// before it is let go); empty (no allocation) for a breakpoint
    /// without `stop`.
    held: FxHashMap<u64, u64>,
}

impl Breakpoint {
    fn finished(&self) -> bool {
        self.ended || !self.open
    }
}

/// A `post_fevent` the main loop owes a waiter: `Response::post_fevent(id, flags)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeventNotice {
    pub handle: usize,
    pub flags: EventFlags,
}

/// The scheme server. See the module docs.
pub struct HwbpScheme<K: Kernel> {
    kernel: K,
    engine: Engine,
    config: Config,
    handles: FxHashMap<usize, Handle>,
    next_handle: usize,
    bps: FxHashMap<BpId, Breakpoint>,
    /// Breakpoints and streams each uid holds, against the caps.
    usage: Usage,
    notices: Vec<FeventNotice>,
    hit_buf: Box<[HitRecord]>,
    count_buf: Vec<PieceCount>,
    end_buf: Vec<TaskEnd>,
    /// Reused by `tick` for the tasks that ran.
    ran_buf: Vec<Pid>,
    /// Number of the current `collect` (a breakpoint's tally notes the
    /// first time each collect touches it).
    epoch: u64,
    /// Live (open, not ended) breakpoints on each task: the backend follows
    /// a task while this holds it, even with an empty plan, so that its end
    /// is reported (`Kernel::release_task` when it drops to none).
    task_holds: FxHashMap<Pid, usize>,
    last_rotation: u64,
    /// Pieces in each CPU's plan as last pushed to the kernel.
    pushed_cpu_len: Vec<usize>,
    /// Stopped threads (`HitRecord::context`) and how many breakpoints
    /// hold each: resumed when that drops to none.
    stopped: FxHashMap<u64, u32>,
    /// Contexts of the stopped records of the current drain, checked once
    /// every record is routed: a thread no breakpoint holds is resumed.
    stop_checks: Vec<u64>,
    /// The listing's indexes and per-uid handle counts.
    views: ListViews,
}

/// Why an operation failed, before it becomes an errno.
struct Refusal {
    errno: i32,
    why: String,
}

fn refusal(errno: i32, why: impl fmt::Display) -> Refusal {
    Refusal { errno, why: why.to_string() }
}

/// An allocation a client drove could not be made: the call is refused
/// and nothing changed (hwbpd itself, and everyone else's breakpoints,
/// carry on).
fn out_of_memory(what: &str) -> impl FnOnce(TryReserveError) -> Refusal + '_ {
    move |e| refusal(ENOMEM, format_args!("no memory for {what}: {e}"))
}

impl From<OverCap> for Refusal {
    fn from(o: OverCap) -> Self {
        match o {
            OverCap::Breakpoints { held, quota } => refusal(
                EMFILE,
                format_args!("quota reached: {held} of {quota} breakpoints held (a closed one counts until its last stream closes)"),
            ),
            OverCap::Streams { held, cap } => refusal(EMFILE, format_args!("{held} of {cap} event streams held")),
        }
    }
}

impl From<EngineError> for Refusal {
    fn from(e: EngineError) -> Self {
        refusal(e.errno(), e)
    }
}

impl From<KernelError> for Refusal {
    fn from(e: KernelError) -> Self {
        let errno = match e {
            KernelError::NoSuchTask(_) | KernelError::NoSuchCpu(_) | KernelError::NotStopped(_) => ESRCH,
            KernelError::Refused(_) => EIO,
        };
        refusal(errno, e)
    }
}

fn errno_name(errno: i32) -> &'static str {
    match errno {
        EPERM => "EPERM",
        ESRCH => "ESRCH",
        EBADF => "EBADF",
        EAGAIN => "EAGAIN",
        EINVAL => "EINVAL",
        EMFILE => "EMFILE",
        ENOMEM => "ENOMEM",
        ENOSPC => "ENOSPC",
        EIO => "EIO",
        EWOULDBLOCK => "EWOULDBLOCK",
        _ => "errno",
    }
}

fn to_kern_access(a: libhwbp::abi::Access) -> hwbp_kern::Access {
    match a {
        libhwbp::abi::Access::Exec => hwbp_kern::Access::Exec,
        libhwbp::abi::Access::Write => hwbp_kern::Access::Write,
        libhwbp::abi::Access::ReadWrite => hwbp_kern::Access::ReadWrite,
    }
}

fn to_abi_access(a: hwbp_kern::Access) -> libhwbp::abi::Access {
    match a {
        hwbp_kern::Access::Exec => libhwbp::abi::Access::Exec,
        hwbp_kern::Access::Write => libhwbp::abi::Access::Write,
        hwbp_kern::Access::ReadWrite => libhwbp::abi::Access::ReadWrite,
    }
}

impl<K: Kernel> HwbpScheme<K> {
    pub fn new(kernel: K, config: Config) -> Self {
        let engine = Engine::new(hwbp_engine::Config {
            quota_per_uid: config.user_quota,
            root_unlimited: true,
            rotation_ns: config.rotation_ns,
            // The kernel says which tasks ran (`Kernel::take_ran`).
            rotation: hwbp_engine::Rotation::TasksThatRan,
            ..hwbp_engine::Config::new(kernel.cpu_count())
        });
        let now = kernel.now_ns();
        let kernel_cpus = kernel.cpu_count();
        let mut handles = FxHashMap::default();
        handles.insert(ROOT_HANDLE, Handle::Root);
        let usage = Usage::new(config.user_quota, STREAMS_PER_QUOTA);
        HwbpScheme {
            kernel,
            engine,
            config,
            handles,
            next_handle: ROOT_HANDLE + 1,
            bps: FxHashMap::default(),
            usage,
            notices: Vec::new(),
            hit_buf: vec![HitRecord::ZERO; HIT_BATCH].into_boxed_slice(),
            count_buf: Vec::new(),
            end_buf: Vec::new(),
            ran_buf: Vec::new(),
            epoch: 0,
            task_holds: FxHashMap::default(),
            last_rotation: now,
            pushed_cpu_len: vec![0; kernel_cpus as usize],
            stopped: FxHashMap::default(),
            stop_checks: Vec::new(),
            views: ListViews::default(),
        }
    }

    /// The backend (the simulated kernel in tests: run tasks through it).
    pub fn kernel(&self) -> &K {
        &self.kernel
    }

    pub fn kernel_mut(&mut self) -> &mut K {
        &mut self.kernel
    }

    /// The policy engine, for inspection (assignments, plans).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Open handles of every kind, the root included.
    pub fn handle_count(&self) -> usize {
        self.handles.len()
    }

    /// Whether `id` is an open handle.
    pub fn has_handle(&self, id: usize) -> bool {
        self.handles.contains_key(&id)
    }

    /// Breakpoints the scheme still keeps state for (open, or closed with
    /// an event stream still open).
    pub fn breakpoint_count(&self) -> usize {
        self.bps.len()
    }

    /// Log one line for a refused operation and turn it into an errno.
    fn refuse(&self, op: fmt::Arguments<'_>, r: Refusal) -> Error {
        log::warn!("hwbpd: {op}: {} ({}): {}", errno_name(r.errno), r.errno, r.why);
        Error::new(r.errno)
    }

    /// Breakpoints and event streams `uid` holds (the caps' view).
    pub fn held_by(&self, uid: Uid) -> crate::usage::Held {
        self.usage.held(uid)
    }

    /// Threads stopped by a hit that some breakpoint holds (each once,
    /// however many hold it).
    pub fn stopped_thread_count(&self) -> usize {
        self.stopped.len()
    }

    /// Bytes of event-ring storage held now, summed over every breakpoint.
    pub fn ring_bytes(&self) -> usize {
        self.bps.values().map(|b| b.ring.storage_bytes()).sum()
    }

    /// Insert a handle; the caller reserved room (`handles.try_reserve`).
    fn new_handle(&mut self, h: Handle) -> usize {
        let id = self.next_handle;
        self.next_handle += 1;
        self.handles.insert(id, h);
        id
    }

    // ---- kernel side: hits, exits, rotation --------------------------

    /// Move the kernel's counts into values, every queued hit record into
    /// event rings, then end the breakpoints of tasks whose plan ended. The
    /// Redox main loop calls this when the kernel's hit stream is readable;
    /// every read and [`HwbpScheme::tick`] call it too. Returns the records
    /// routed to a breakpoint as a hit.
    pub fn collect(&mut self) -> u64 {
        self.epoch = self.epoch.wrapping_add(1);
        // Counts before records: a hit the kernel counted has had its
        // record queued (or dropped) already, so `lost` never counts a
        // record that is only on its way.
        self.apply_counts();
        let routed = self.drain_hits();
        // Ends after the records: the kernel queues a task's last records
        // before its end, so they reach the breakpoints first.
        let mut ends = std::mem::take(&mut self.end_buf);
        self.kernel.take_ends(&mut ends);
        if !ends.is_empty() {
            // The ended plans' last counts.
            self.apply_counts();
        }
        for (i, end) in ends.iter().enumerate() {
            // An identity change followed by the exit: nothing to re-arm.
            let exits_later = ends[i + 1..].iter().any(|e| e.pid == end.pid && e.reason == EndReason::Exit);
            self.end_task(*end, exits_later);
        }
        ends.clear();
        self.end_buf = ends;
        routed
    }

    /// Add the kernel's counts since the last call to the breakpoints each
    /// piece counts for (its running users: `Engine::route`).
    fn apply_counts(&mut self) {
        let mut counts = std::mem::take(&mut self.count_buf);
        self.kernel.take_counts(&mut counts);
        for c in &counts {
            for &id in self.engine.route(c.token) {
                let Some(bp) = self.bps.get_mut(&id) else { continue };
                if bp.enabled && !bp.finished() {
                    bp.tally.count(c.hits, self.epoch);
                }
            }
        }
        counts.clear();
        self.count_buf = counts;
    }

    fn drain_hits(&mut self) -> u64 {
        let mut routed = 0u64;
        loop {
            let n = self.kernel.drain_hits(&mut self.hit_buf);
            if n == 0 {
                break;
            }
            for i in 0..n {
                let hit = self.hit_buf[i];
                routed += self.route_hit(&hit);
                if hit.flags & HIT_STOPPED != 0 {
                    self.check_stop_later(hit.context);
                }
            }
        }
        self.resume_unheld();
        routed
    }

    /// A stopped record was routed: once every record of the drain was (the
    /// other records of its exception may name a holder), its thread must
    /// be held by someone, or run again.
    fn check_stop_later(&mut self, context: u64) {
        if self.stop_checks.try_reserve(1).is_ok() {
            self.stop_checks.push(context);
        } else if !self.stopped.contains_key(&context) {
            // No room to wait: decide now (a later record of the same
            // exception may find its breakpoint holding a running thread,
            // whose `resume` then succeeds as a no-op).
            self.resume_context(context);
        }
    }

    /// Resume every thread stopped by a record of this drain that no
    /// breakpoint holds (its breakpoint was disabled, closed, modified or
    /// rotated out before the record was routed, or could not hold it).
    fn resume_unheld(&mut self) {
        if self.stop_checks.is_empty() {
            return;
        }
        let mut checks = std::mem::take(&mut self.stop_checks);
        checks.sort_unstable();
        checks.dedup();
        for &context in &checks {
            if !self.stopped.contains_key(&context) {
                log::debug!("hwbpd: thread {context:#x} was stopped for no live stopping breakpoint: resumed");
                self.resume_context(context);
            }
        }
        checks.clear();
        self.stop_checks = checks;
    }

    /// Ask the kernel to run `context` again. A thread that is not stopped
    /// any more (it exited) is fine; anything else is logged (on Redox the
    /// kernel resumes it when hwbpd's control handle closes).
    fn resume_context(&mut self, context: u64) -> bool {
        match self.kernel.resume(context) {
            Ok(()) | Err(KernelError::NotStopped(_)) => true,
            Err(e) => {
                log::error!("hwbpd: resuming thread {context:#x} failed: {e}");
                false
            }
        }
    }

    /// Breakpoint `id` holds thread `context` stopped (idempotent). False
    /// if there was no memory to note it: then nobody may hold it, and the
    /// end of the drain resumes it.
    fn hold(bp: &mut Breakpoint, stopped: &mut FxHashMap<u64, u32>, context: u64) -> bool {
        let tid = context & CONTEXT_ID_MASK;
        if bp.held.contains_key(&tid) {
            return true;
        }
        if bp.held.try_reserve(1).is_err() || stopped.try_reserve(1).is_err() {
            log::error!("hwbpd: no memory to hold stopped thread {tid}: it runs on");
            return false;
        }
        bp.held.insert(tid, context);
        *stopped.entry(context).or_insert(0) += 1;
        true
    }

    /// Breakpoint `id` lets go of thread `tid`; if it was the thread's last
    /// holder and `resume`, the thread runs again (false: the kernel
    /// refused, logged). `resume: false` for a task that exited.
    fn let_go(&mut self, id: BpId, tid: u64, resume: bool) -> bool {
        let Some(context) = self.bps.get_mut(&id).and_then(|b| b.held.remove(&tid)) else { return true };
        let last = match self.stopped.get_mut(&context) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => {
                self.stopped.remove(&context);
                true
            }
        };
        !(last && resume) || self.resume_context(context)
    }

    /// Breakpoint `id` lets go of every thread it holds. Returns false if
    /// the kernel refused a resume (logged).
    fn let_go_all(&mut self, id: BpId, resume: bool) -> bool {
        let tids: Vec<u64> = match self.bps.get_mut(&id) {
            Some(b) if !b.held.is_empty() => b.held.keys().copied().collect(),
            _ => return true,
        };
        let mut ok = true;
        for tid in tids {
            ok &= self.let_go(id, tid, resume);
        }
        if let Some(b) = self.bps.get_mut(&id) {
            // Its task's threads, at most: give the table's room back.
            b.held = FxHashMap::default();
        }
        ok
    }

    fn route_hit(&mut self, hit: &HitRecord) -> u64 {
        let kernel = &self.kernel;
        let mut pid = None;
        let kernel_mode = hit.flags & HIT_KERNEL_MODE != 0;
        let mut routed = 0;
        for &id in self.engine.route(hit.token) {
            let Some(bp) = self.bps.get_mut(&id) else { continue };
            if !bp.enabled || bp.finished() {
                continue;
            }
            if kernel_mode && !bp.path.options.kernel {
                // The kernel counts every mode; this one counts user mode.
                bp.tally.exclude(self.epoch);
                continue;
            }
            // Held before anything else, apart from the ring: a record the
            // ring drops, or the second record of one exception, must not
            // lose the stop.
            let stopped_here =
                hit.flags & HIT_STOPPED != 0 && bp.path.options.stop && Self::hold(bp, &mut self.stopped, hit.context);
            // One access that hits several pieces of a split breakpoint
            // raises one #DB with several B bits: one hit, not several. Its
            // records are adjacent, share cpu/context/rip/time and carry
            // different tokens (the same token again is a new execution).
            let exception = (hit.cpu, hit.context, hit.rip, hit.timestamp);
            let same_exception = bp.last_exception.is_some_and(|(e, token)| e == exception && token != hit.token);
            bp.last_exception = Some((exception, hit.token));
            if same_exception {
                // The kernel counted it once per piece: take one back.
                bp.tally.exclude(self.epoch);
                continue;
            }
            routed += 1;
            let Some(hit_number) = bp.tally.record(bp.path.options.period.get(), self.epoch) else { continue };
            let before = bp.ring.len();
            let pushed = bp.ring.push(EventRecord {
                id,
                ip: hit.rip,
                addr: hit.addr,
                access: bp.path.event.access().code(),
                pid: u64::from(*pid.get_or_insert_with(|| kernel.context_pid(hit.context).unwrap_or(0))),
                cpu: u64::from(hit.cpu),
                timestamp_ns: hit.timestamp,
                hit: hit_number,
                tid: hit.context & CONTEXT_ID_MASK,
                flags: if kernel_mode { EVENT_KERNEL_MODE } else { 0 } | if stopped_here { EVENT_STOPPED } else { 0 },
            });
            if pushed.is_err() {
                // Counted in `lost`; one line per record would flood the log.
                if bp.ring.lost().is_power_of_two() {
                    log::warn!("hwbpd: breakpoint {id}: no memory to grow its ring: record dropped ({} lost)", bp.ring.lost());
                }
                continue;
            }
            let wakeup = bp.path.options.wakeup.get() as usize;
            if before < wakeup && bp.ring.len() >= wakeup {
                Self::notify_streams(&self.handles, &mut self.notices, id, &bp.streams);
            }
        }
        routed
    }

    /// Owe an EVENT_READ notice to every subscribed stream of breakpoint
    /// `id`: work proportional to its own streams only.
    fn notify_streams(
        handles: &FxHashMap<usize, Handle>,
        notices: &mut Vec<FeventNotice>,
        id: BpId,
        streams: &FxHashSet<usize>,
    ) {
        for &handle in streams {
            let Some(Handle::Events { subscribed, .. }) = handles.get(&handle) else { continue };
            if !subscribed.contains(EVENT_READ) {
                continue;
            }
            if notices.try_reserve(1).is_err() {
                // The stream still reads as ready on its next fevent/read.
                log::error!("hwbpd: breakpoint {id}: no memory to queue a readiness notice for handle {handle}");
                return;
            }
            notices.push(FeventNotice { handle, flags: EVENT_READ });
        }
    }

    /// The kernel ended `end.pid`'s plan. An exit ends every breakpoint on
    /// the task. An identity change (contract 7) ends those of owners other
    /// than root, as an exit would; root's are armed again (the kernel
    /// dropped them too), unless the task also exited (`exits_later`).
    fn end_task(&mut self, end: TaskEnd, exits_later: bool) {
        let TaskEnd { pid, reason } = end;
        let now = self.kernel.now_ns();
        let ended: Vec<BpId> = match reason {
            // The engine keeps ended breakpoints (times frozen) until closed.
            EndReason::Exit => self.engine.task_exited(pid, now),
            EndReason::Identity => {
                let mut ids: Vec<BpId> = self
                    .bps
                    .iter()
                    .filter(|(_, b)| !b.finished() && b.owner != ROOT_UID && task_of(b.path.target) == Some(pid))
                    .map(|(&id, _)| id)
                    .collect();
                ids.sort_unstable();
                ids
            }
        };
        for id in ended {
            let times = self.engine.times(id, now);
            if reason == EndReason::Identity {
                // The owner may no longer watch the task: the engine lets
                // its slots go now; the scheme keeps its state until closed.
                if let Err(e) = self.engine.close(id, now) {
                    log::error!("hwbpd: identity change of task {pid}: engine: breakpoint {id}: {e}");
                }
            }
            // An exit took the threads with it; after an identity change
            // the task runs on and the owner may no longer hold them.
            self.let_go_all(id, reason == EndReason::Identity);
            let Some(bp) = self.bps.get_mut(&id) else { continue };
            bp.final_times = times.or(bp.final_times);
            if reason == EndReason::Identity {
                bp.in_engine = false;
            }
            if !bp.ended {
                bp.ended = true;
                if bp.open {
                    Self::release_hold(&mut self.task_holds, pid);
                }
                // Readable: the stream ends (read returns 0 when empty).
                Self::notify_streams(&self.handles, &mut self.notices, id, &bp.streams);
            }
        }
        let survivors = reason == EndReason::Identity && !exits_later && self.task_holds.contains_key(&pid);
        if reason == EndReason::Exit || exits_later {
            self.task_holds.remove(&pid);
        }
        match reason {
            EndReason::Exit => log::info!("hwbpd: task {pid} exited: its breakpoints ended"),
            EndReason::Identity if survivors => {
                log::info!("hwbpd: task {pid} changed identity: non-root owners' breakpoints ended, root's armed again")
            }
            EndReason::Identity => log::info!("hwbpd: task {pid} changed identity: its breakpoints ended"),
        }
        if let Err(e) = self.apply_changes(now, survivors.then_some(pid)) {
            log::error!("hwbpd: end of task {pid}: pushing plans failed: {}", e.why);
        }
        if !survivors && !self.task_holds.contains_key(&pid) {
            // Nothing of ours is left on it (the kernel ended the plan).
            self.kernel.release_task(pid);
        }
    }

    /// One live breakpoint on `pid` fewer; returns whether none is left.
    fn release_hold(holds: &mut FxHashMap<Pid, usize>, pid: Pid) -> bool {
        let Some(n) = holds.get_mut(&pid) else { return true };
        *n = n.saturating_sub(1);
        if *n == 0 {
            holds.remove(&pid);
            return true;
        }
        false
    }

    /// The rotation timer: collect hits, let the engine rotate flexible
    /// breakpoints, and push the plans that changed. The Redox main loop
    /// drives it from a timer every [`Config::rotation_ns`].
    pub fn tick(&mut self) {
        self.collect();
        // Only the tasks that ran rotate (as Linux rotates the contexts
        // running on each CPU): a tick costs what ran, not what is open.
        let mut ran = std::mem::take(&mut self.ran_buf);
        self.kernel.take_ran(&mut ran);
        for &pid in &ran {
            self.engine.task_ran(pid);
        }
        ran.clear();
        self.ran_buf = ran;
        let now = self.kernel.now_ns();
        self.last_rotation = now;
        if let Err(e) = self.apply_changes(now, None) {
            log::error!("hwbpd: rotation: pushing plans failed: {}", e.why);
        }
    }

    /// Time of the last rotation tick.
    pub fn last_rotation_ns(&self) -> u64 {
        self.last_rotation
    }

    /// Run the engine's plan computation and push what changed, and the
    /// plan of `also` even if it did not change (a task to follow from now
    /// on, or to arm again after the kernel dropped its plan).
    fn apply_changes(&mut self, now: u64, also: Option<Pid>) -> std::result::Result<(), Refusal> {
        let PlanChanges { mut tasks, cpus } = self.engine.tick(now);
        if let Some(pid) = also.filter(|p| !tasks.contains(p)) {
            tasks.push(pid);
        }
        self.push_plans(&tasks, &cpus)
    }

    /// Push plans in an order where every intermediate state fits: CPU
    /// plans that do not grow, then task plans, then CPU plans that grow.
    fn push_plans(&mut self, tasks: &[Pid], cpus: &[CpuId]) -> std::result::Result<(), Refusal> {
        let mut first_error = None;
        let mut grow = Vec::new();
        let cpu_count = self.kernel.cpu_count();
        for &cpu in cpus.iter().filter(|&&cpu| cpu < cpu_count) {
            if self.engine.cpu_plan(cpu).len() > self.loaded_cpu_len(cpu) {
                grow.push(cpu);
            } else if let Err(e) = self.push_cpu_plan(cpu) {
                first_error.get_or_insert(e);
            }
        }
        for &pid in tasks {
            let plan = self.engine.context_plan(pid).copied().unwrap_or(ContextPlan::EMPTY);
            match self.kernel.set_task_plan(pid, &plan) {
                // A task that exited has no plan to set; its exit is queued.
                Ok(()) | Err(KernelError::NoSuchTask(_)) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        for cpu in grow {
            if let Err(e) = self.push_cpu_plan(cpu) {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            None => Ok(()),
            Some(e) => {
                log::error!("hwbpd: kernel refused a plan: {e}");
                Err(e.into())
            }
        }
    }

    fn loaded_cpu_len(&self, cpu: CpuId) -> usize {
        self.pushed_cpu_len.get(cpu as usize).copied().unwrap_or(0)
    }

    fn push_cpu_plan(&mut self, cpu: CpuId) -> std::result::Result<(), KernelError> {
        let plan = *self.engine.cpu_plan(cpu);
        self.kernel.set_cpu_plan(cpu, &plan)?;
        if let Some(len) = self.pushed_cpu_len.get_mut(cpu as usize) {
            *len = plan.len();
        }
        Ok(())
    }

    // ---- opening -------------------------------------------------------

    fn resolve_scope(&self, target: Target, ctx: &CallerCtx) -> std::result::Result<Scope, Refusal> {
        let task = |pid: u64| -> std::result::Result<Pid, Refusal> {
            let pid = Pid::try_from(pid).map_err(|_| refusal(ESRCH, format!("no task {pid}")))?;
            let info = self.kernel.task(pid)?;
            if ctx.uid != ROOT_UID && ctx.uid != info.uid {
                return Err(refusal(EPERM, format!("task {pid} belongs to uid {}, caller is uid {}", info.uid, ctx.uid)));
            }
            Ok(pid)
        };
        let cpu = |n: u32| -> std::result::Result<CpuId, Refusal> {
            if n >= self.kernel.cpu_count() {
                return Err(refusal(ESRCH, format!("no cpu {n} (this machine has {})", self.kernel.cpu_count())));
            }
            Ok(n)
        };
        let root_only = |what: &str| -> std::result::Result<(), Refusal> {
            if ctx.uid == ROOT_UID {
                Ok(())
            } else {
                Err(refusal(EPERM, format!("{what} targets are root only (caller is uid {})", ctx.uid)))
            }
        };
        Ok(match target {
            Target::SelfTask => Scope::Task { pid: task(ctx.pid as u64)?, cpu: None },
            Target::Task(pid) => Scope::Task { pid: task(pid)?, cpu: None },
            Target::TaskOnCpu { pid, cpu: n } => {
                let pid = task(pid)?;
                Scope::Task { pid, cpu: Some(cpu(n)?) }
            }
            Target::Cpu(n) => {
                root_only("cpu-wide")?;
                Scope::Cpu(cpu(n)?)
            }
            Target::AllCpus => {
                root_only("cpu-wide")?;
                Scope::AllCpus
            }
        })
    }

    /// The engine request for `path` in `scope`, after the kernel-address
    /// and `kernel`-option permission checks.
    fn request(&self, path: &OpenPath, scope: Scope, uid: Uid) -> std::result::Result<Request, Refusal> {
        let ev = &path.event;
        let o = &path.options;
        let first = ev.addr();
        // An `x` event watches one instruction address, whatever its length.
        let last = if ev.access() == libhwbp::abi::Access::Exec { first } else { first.saturating_add(ev.len() - 1) };
        // A range that touches the non-canonical hole can never be armed,
        // whoever asks: EINVAL before any permission check (contract 7).
        if !(last < USER_END || first >= KERNEL_START) {
            return Err(refusal(EINVAL, format!("{first:#x}..={last:#x} is not canonical (or straddles user and kernel space)")));
        }
        if uid != ROOT_UID && first >= KERNEL_START {
            return Err(refusal(EPERM, format!("{first:#x}..={last:#x} is kernel space: root only")));
        }
        if uid != ROOT_UID && o.kernel {
            return Err(refusal(EPERM, "the kernel option is root only"));
        }
        Ok(Request {
            scope,
            addr: ev.addr(),
            len: ev.len(),
            access: to_kern_access(ev.access()),
            pinned: o.pinned,
            exclusive: o.exclusive,
            disabled: o.disabled,
            nosplit: o.nosplit,
            kernel: o.kernel,
            period: o.period.get(),
            // Task scopes only: the engine refuses it on a cpu-wide scope
            // (EINVAL), which a `modify` of a cpu-wide breakpoint reaches.
            stop: o.stop,
        })
    }

    /// Options checks that need the owner: `wakeup` within `ring`, and
    /// the ring caps that bound a uid's memory (contract 7).
    fn check_options(o: &Options, uid: Uid) -> std::result::Result<(), Refusal> {
        let ring = o.ring.get();
        if o.wakeup.get() > u64::from(ring) {
            return Err(refusal(
                EINVAL,
                format!("wakeup={} is larger than ring={ring}: the stream would never be ready", o.wakeup),
            ));
        }
        if uid != ROOT_UID && ring > USER_MAX_RING {
            return Err(refusal(EPERM, format!("ring={ring} is above {USER_MAX_RING} records: root only")));
        }
        if ring > ROOT_MAX_RING {
            return Err(refusal(EINVAL, format!("ring={ring} is above hwbpd's limit of {ROOT_MAX_RING} records")));
        }
        Ok(())
    }

    fn open_breakpoint(&mut self, path: &str, ctx: &CallerCtx) -> std::result::Result<usize, Refusal> {
        let mut parsed = OpenPath::parse(path).map_err(|e| refusal(e.errno(), e))?;
        Self::check_options(&parsed.options, ctx.uid)?;
        // Exits first: a pid that exited and was reused must be seen as the
        // new process (its uid checked afresh), and the old process's
        // breakpoints ended, before this open makes the engine replan the
        // pid — else an old handle's watch is armed in the new process.
        self.collect();
        let scope = self.resolve_scope(parsed.target, ctx)?;
        let req = self.request(&parsed, scope, ctx.uid)?;
        self.usage.check_breakpoint(ctx.uid)?;
        // Room first, so nothing below fails half-way for want of memory.
        self.bps.try_reserve(1).map_err(out_of_memory("the breakpoint table"))?;
        self.handles.try_reserve(1).map_err(out_of_memory("the handle table"))?;
        self.usage.try_reserve().map_err(out_of_memory("the per-uid table"))?;
        self.task_holds.try_reserve(1).map_err(out_of_memory("the task table"))?;
        let now = self.kernel.now_ns();
        let id = self.engine.open(&req, ctx.uid, now)?;
        if let Target::SelfTask = parsed.target {
            parsed.target = Target::Task(ctx.pid as u64);
        }
        let options = parsed.options;
        let pieces = self.engine_pieces(id);
        self.bps.insert(
            id,
            Breakpoint {
                path: parsed,
                owner: ctx.uid,
                enabled: !options.disabled,
                tally: Tally::default(),
                ring: EventRing::new(options.ring.get() as usize),
                open: true,
                ended: false,
                in_engine: true,
                streams: FxHashSet::default(),
                final_times: None,
                last_exception: None,
                times_base: (0, 0),
                pieces,
                held: FxHashMap::default(),
            },
        );
        self.usage.add_breakpoint(ctx.uid);
        self.views.added(ctx.uid, id);
        // The first breakpoint on a task makes the backend follow it, even
        // if nothing of it is armed yet (disabled, or rotated out).
        let follow = task_of(parsed_target(&self.bps, id)).filter(|pid| {
            let n = self.task_holds.entry(*pid).or_insert(0);
            *n += 1;
            *n == 1
        });
        if let Err(e) = self.apply_changes(now, follow) {
            // Nothing the caller did: undo the open.
            self.close_breakpoint(id);
            return Err(e);
        }
        Ok(self.new_handle(Handle::Breakpoint(id)))
    }

    // ---- breakpoint handles --------------------------------------------

    fn count_record(&self, id: BpId) -> CountRecord {
        let now = self.kernel.now_ns();
        let bp = self.bps.get(&id);
        let times = if bp.is_some_and(|b| !b.finished()) { self.engine.times(id, now) } else { None };
        let (enabled, running) = times.or(bp.and_then(|b| b.final_times)).unwrap_or((0, 0));
        let (base_enabled, base_running) = bp.map_or((0, 0), |b| b.times_base);
        let (enabled, running) = (enabled.saturating_sub(base_enabled), running.saturating_sub(base_running));
        CountRecord {
            value: bp.map_or(0, |b| b.tally.value()),
            time_enabled_ns: enabled,
            time_running_ns: running,
            id,
            lost: bp.map_or(0, |b| b.tally.undelivered(b.path.options.period.get()).saturating_add(b.ring.lost())),
        }
    }

    fn command(&mut self, id: BpId, buf: &[u8]) -> std::result::Result<(), Refusal> {
        let cmd = Command::parse_bytes(buf).map_err(|e| refusal(e.errno(), e))?;
        // Hits already queued count for the breakpoint as it was.
        self.collect();
        let now = self.kernel.now_ns();
        let bp = self.bps.get(&id).ok_or_else(|| refusal(EBADF, "breakpoint is gone"))?;
        if bp.ended {
            if let Command::Reset = cmd {
            } else {
                return Err(refusal(ESRCH, "the breakpoint's task has exited"));
            }
        }
        match cmd {
            Command::Enable | Command::Disable => {
                let enable = cmd == Command::Enable;
                self.engine.set_enabled(id, enable, now)?;
                if let Some(bp) = self.bps.get_mut(&id) {
                    bp.enabled = enable;
                }
            }
            Command::Resume { tid } => return self.resume_command(id, tid),
            Command::Reset => {
                let times = self.engine.times(id, now);
                if let Some(bp) = self.bps.get_mut(&id) {
                    bp.tally.reset(self.epoch);
                    bp.ring.reset_lost();
                    bp.times_base = times.or(bp.final_times).unwrap_or((0, 0));
                }
            }
            Command::Modify { event, options: new_options } => {
                let old = bp.path;
                let options = new_options.unwrap_or(old.options);
                Self::check_options(&options, bp.owner)?;
                let new_path = OpenPath { target: old.target, event, options };
                // The handle is the capability: the target was checked at
                // open; the new address is checked against the opener's uid.
                let mut req = self.request(&new_path, scope_of(old.target), bp.owner)?;
                // Without `?options` the breakpoint keeps its current state,
                // enabled or disabled, whatever it was opened with.
                let enabled = if new_options.is_some() { !options.disabled } else { bp.enabled };
                req.disabled = !enabled;
                // The engine keeps the old breakpoint armed if this fails.
                self.engine.modify(id, &req, now)?;
                let pieces = self.engine_pieces(id);
                if let Some(bp) = self.bps.get_mut(&id) {
                    bp.path = new_path;
                    bp.pieces = pieces;
                    bp.enabled = enabled;
                    bp.ring.resize(options.ring.get() as usize);
                }
            }
        }
        self.apply_changes(now, None)
    }

    /// `resume <tid>` / `resume`: breakpoint `id` lets go of a thread it
    /// stopped (ESRCH if it holds no `tid`), or of every one. EINVAL on a
    /// breakpoint that has no `stop` and holds nothing (a `modify` that
    /// dropped `stop` keeps what it held, until resumed or closed).
    fn resume_command(&mut self, id: BpId, tid: Option<u64>) -> std::result::Result<(), Refusal> {
        let bp = self.bps.get(&id).ok_or_else(|| refusal(EBADF, "breakpoint is gone"))?;
        if !bp.path.options.stop && bp.held.is_empty() {
            return Err(refusal(EINVAL, "not a stopping breakpoint (no stop option): it stops no thread"));
        }
        let resumed = match tid {
            Some(tid) => {
                if !bp.held.contains_key(&tid) {
                    return Err(refusal(ESRCH, format!("breakpoint {id} holds no stopped thread {tid}")));
                }
                self.let_go(id, tid, true)
            }
            None => self.let_go_all(id, true),
        };
        if resumed { Ok(()) } else { Err(refusal(EIO, "the kernel refused to resume the thread")) }
    }

    /// Close a breakpoint: the engine forgets it and the kernel is told
    /// before this returns. Its state stays while event streams are open.
    /// Every thread it stopped runs again before this returns.
    fn close_breakpoint(&mut self, id: BpId) {
        // Hits already queued belong to the breakpoint as it was.
        self.collect();
        let now = self.kernel.now_ns();
        let times = self.engine.times(id, now);
        let (in_engine, live_on) = self
            .bps
            .get(&id)
            .map_or((true, None), |b| (b.in_engine, task_of(b.path.target).filter(|_| !b.finished())));
        if in_engine && let Err(e) = self.engine.close(id, now) {
            log::error!("hwbpd: close of breakpoint {id}: engine: {e}");
        }
        if let Err(e) = self.apply_changes(now, None) {
            log::error!("hwbpd: close of breakpoint {id}: pushing plans failed: {}", e.why);
        }
        if self.bps.get(&id).is_some_and(|b| b.path.options.stop || !b.held.is_empty()) {
            // Disarmed now: stops between the collect above and the push
            // reach no breakpoint, and are resumed by this collect.
            self.collect();
            if !self.let_go_all(id, true) {
                log::error!("hwbpd: close of breakpoint {id}: a stopped thread could not be resumed");
            }
        }
        if let Some(pid) = live_on
            && Self::release_hold(&mut self.task_holds, pid)
        {
            // Its last breakpoint: stop following the task.
            self.kernel.release_task(pid);
        }
        let Some(bp) = self.bps.get_mut(&id) else { return };
        if bp.open {
            bp.open = false;
            bp.final_times = times.or(bp.final_times);
        }
        if bp.streams.is_empty() {
            self.forget(id);
        } else {
            // Its streams end once read empty; the state stays until then.
            Self::notify_streams(&self.handles, &mut self.notices, id, &bp.streams);
        }
    }

    /// The last handle of breakpoint `id` is gone: free its state and give
    /// its owner's quota slot back.
    fn forget(&mut self, id: BpId) {
        if let Some(bp) = self.bps.remove(&id) {
            self.usage.remove_breakpoint(bp.owner);
            self.views.removed(bp.owner, id);
        }
    }

    fn open_stream(&mut self, bp_id: BpId, version: RecordVersion) -> std::result::Result<usize, Refusal> {
        let bp = self.bps.get_mut(&bp_id).ok_or_else(|| refusal(EBADF, "breakpoint is gone"))?;
        let owner = bp.owner;
        self.usage.check_stream(owner)?;
        bp.streams.try_reserve(1).map_err(out_of_memory("the breakpoint's stream list"))?;
        self.handles.try_reserve(1).map_err(out_of_memory("the handle table"))?;
        self.usage.try_reserve().map_err(out_of_memory("the per-uid table"))?;
        let number = self.new_handle(Handle::Events { bp: bp_id, subscribed: EventFlags::empty(), version });
        if let Some(bp) = self.bps.get_mut(&bp_id) {
            bp.streams.insert(number);
        }
        self.usage.add_stream(owner);
        Ok(number)
    }

    fn close_stream(&mut self, handle: usize, bp_id: BpId) {
        let Some(bp) = self.bps.get_mut(&bp_id) else { return };
        bp.streams.remove(&handle);
        let (owner, last) = (bp.owner, bp.streams.is_empty() && !bp.open);
        self.usage.remove_stream(owner);
        if last {
            self.forget(bp_id);
        }
    }

    /// The pieces the engine armed for `id`, as the admitted path lists them.
    fn engine_pieces(&self, id: BpId) -> Vec<AdmittedPiece> {
        self.engine
            .pieces(id)
            .unwrap_or(&[])
            .iter()
            .filter_map(|p| {
                let access = to_abi_access(p.access());
                let len = if p.access() == hwbp_kern::Access::Exec { libhwbp::abi::event::EXEC_LEN } else { p.len().bytes() };
                AdmittedPiece::new(p.addr(), len, access)
            })
            .collect()
    }

    fn admitted_path(&self, id: BpId) -> Option<String> {
        let bp = self.bps.get(&id)?;
        Some(format!("{}{}", libhwbp::abi::SCHEME_PREFIX, bp.path.with_pieces(&bp.pieces)))
    }

    // ---- event streams -------------------------------------------------

    fn read_events(
        &mut self,
        bp_id: BpId,
        buf: &mut [u8],
        fcntl_flags: u32,
        version: RecordVersion,
    ) -> std::result::Result<usize, Refusal> {
        let size = version.size();
        if buf.len() < size {
            return Err(refusal(EINVAL, format!("buffer of {} bytes holds no {size}-byte record", buf.len())));
        }
        self.collect();
        let bp = self.bps.get_mut(&bp_id).ok_or_else(|| refusal(EBADF, "breakpoint is gone"))?;
        let n = bp.ring.read_into(buf, version);
        if n > 0 || bp.finished() {
            return Ok(n);
        }
        if fcntl_flags as usize & O_NONBLOCK != 0 {
            Err(refusal(EAGAIN, "no hit record queued (O_NONBLOCK)"))
        } else {
            // Not a refusal: the readiness wrapper parks the request.
            Err(Refusal { errno: EWOULDBLOCK, why: String::new() })
        }
    }

    fn stream_readiness(&self, bp_id: BpId) -> EventFlags {
        match self.bps.get(&bp_id) {
            Some(bp) if bp.finished() || bp.ring.len() >= bp.path.options.wakeup.get() as usize => EVENT_READ,
            Some(_) => EventFlags::empty(),
            None => EVENT_READ,
        }
    }

    /// The `post_fevent` notifications owed since the last call: the Redox
    /// main loop sends `Response::post_fevent(handle, flags.bits())` for
    /// each, then polls parked requests (`ReadinessBased::poll_all_requests`).
    pub fn take_fevents(&mut self) -> Vec<FeventNotice> {
        std::mem::take(&mut self.notices)
    }

    fn handle(&self, id: usize) -> Option<&Handle> {
        self.handles.get(&id)
    }
}

/// The task a resolved target watches (`task/<pid>`, `task/<pid>/cpu/<n>`).
fn task_of(target: Target) -> Option<Pid> {
    match target {
        Target::Task(p) | Target::TaskOnCpu { pid: p, .. } => Pid::try_from(p).ok(),
        Target::Cpu(_) | Target::AllCpus | Target::SelfTask => None,
    }
}

fn parsed_target(bps: &FxHashMap<BpId, Breakpoint>, id: BpId) -> Target {
    bps.get(&id).map_or(Target::AllCpus, |b| b.path.target)
}

/// The engine scope of a resolved target (`self` was replaced by
/// `task/<pid>` at open; a pid past `Pid::MAX` was refused there).
fn scope_of(target: Target) -> Scope {
    let pid = |p: u64| Pid::try_from(p).unwrap_or(Pid::MAX);
    match target {
        Target::Task(p) => Scope::Task { pid: pid(p), cpu: None },
        Target::TaskOnCpu { pid: p, cpu } => Scope::Task { pid: pid(p), cpu: Some(cpu) },
        Target::Cpu(cpu) => Scope::Cpu(cpu),
        Target::AllCpus => Scope::AllCpus,
        Target::SelfTask => Scope::Task { pid: Pid::MAX, cpu: None },
    }
}


impl<K: Kernel> Drop for HwbpScheme<K> {
    /// The server is going away: nothing it armed stays armed, no thread
    /// it stopped stays stopped (what it holds is resumed here; the
    /// backend's `disarm_all` resumes the rest, as the Redox kernel does
    /// when hwbpd's control handle closes).
    fn drop(&mut self) {
        let mut ids: Vec<BpId> = self.bps.iter().filter(|(_, b)| !b.held.is_empty()).map(|(&id, _)| id).collect();
        ids.sort_unstable();
        for id in ids {
            self.let_go_all(id, true);
        }
        self.kernel.disarm_all();
    }
}

impl<K: Kernel> SchemeSync for HwbpScheme<K> {
    fn scheme_root(&mut self) -> Result<usize> {
        Ok(ROOT_HANDLE)
    }

    fn openat(&mut self, fd: usize, path: &str, _flags: usize, _fcntl_flags: u32, ctx: &CallerCtx) -> Result<OpenResult> {
        let op = format_args!("open {path:?} by pid {} uid {}", ctx.pid, ctx.uid);
        match self.handle(fd) {
            Some(Handle::Root) => {}
            Some(_) => return Err(self.refuse(op, refusal(EBADF, format!("handle {fd} is not the scheme root")))),
            None => return Err(self.refuse(op, refusal(EBADF, format!("no handle {fd}")))),
        }
        if let Some(req) = libhwbp::abi::ListRequest::parse(path) {
            // A listing is a file: the kernel keeps its offset.
            return match req.map_err(|e| refusal(e.errno(), e)).and_then(|req| self.open_list(req, ctx)) {
                Ok(number) => Ok(OpenResult::ThisScheme { number, flags: NewFdFlags::POSITIONED }),
                Err(r) => Err(self.refuse(op, r)),
            };
        }
        match self.open_breakpoint(path, ctx) {
            Ok(number) => Ok(OpenResult::ThisScheme { number, flags: NewFdFlags::empty() }),
            Err(r) => Err(self.refuse(op, r)),
        }
    }

    fn dup(&mut self, old_id: usize, buf: &[u8], ctx: &CallerCtx) -> Result<OpenResult> {
        let name = String::from_utf8_lossy(buf);
        let op = format_args!("dup of handle {old_id} as {name:?} by pid {}", ctx.pid);
        let bp = match self.handle(old_id) {
            Some(Handle::Breakpoint(bp)) => *bp,
            Some(_) => return Err(self.refuse(op, refusal(EINVAL, "only a breakpoint handle has an events stream"))),
            None => return Err(self.refuse(op, refusal(EBADF, format!("no handle {old_id}")))),
        };
        let version = if buf == EVENTS_DUP_NAME.as_bytes() {
            RecordVersion::V2
        } else if buf == EVENTS_V1_DUP_NAME.as_bytes() {
            RecordVersion::V1
        } else {
            let why = format!("unknown dup name (want {EVENTS_DUP_NAME:?} or {EVENTS_V1_DUP_NAME:?})");
            return Err(self.refuse(op, refusal(EINVAL, why)));
        };
        match self.open_stream(bp, version) {
            Ok(number) => Ok(OpenResult::ThisScheme { number, flags: NewFdFlags::empty() }),
            Err(r) => Err(self.refuse(op, r)),
        }
    }

    fn read(&mut self, id: usize, buf: &mut [u8], offset: u64, fcntl_flags: u32, ctx: &CallerCtx) -> Result<usize> {
        let op = format_args!("read of handle {id} by pid {}", ctx.pid);
        match self.handle(id) {
            Some(Handle::Breakpoint(bp)) => {
                let bp = *bp;
                let Some(out) = buf.get_mut(..COUNT_RECORD_SIZE) else {
                    let len = buf.len();
                    return Err(self.refuse(op, refusal(EINVAL, format!("buffer of {len} bytes is shorter than the {COUNT_RECORD_SIZE}-byte count record"))));
                };
                self.collect();
                out.copy_from_slice(&self.count_record(bp).to_bytes());
                Ok(COUNT_RECORD_SIZE)
            }
            Some(Handle::Events { bp, version, .. }) => {
                let (bp, version) = (*bp, *version);
                match self.read_events(bp, buf, fcntl_flags, version) {
                    Ok(n) => Ok(n),
                    Err(r) if r.errno == EWOULDBLOCK => Err(Error::new(EWOULDBLOCK)),
                    Err(r) => Err(self.refuse(op, r)),
                }
            }
            Some(Handle::List(list)) => Ok(list.read_at(buf, offset)),
            Some(Handle::Root) => Err(self.refuse(op, refusal(EBADF, "the scheme root is not readable"))),
            None => Err(self.refuse(op, refusal(EBADF, format!("no handle {id}")))),
        }
    }

    fn write(&mut self, id: usize, buf: &[u8], _offset: u64, _fcntl_flags: u32, ctx: &CallerCtx) -> Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let op = format_args!("write {text:?} to handle {id} by pid {}", ctx.pid);
        match self.handle(id) {
            Some(Handle::Breakpoint(bp)) => {
                let bp = *bp;
                match self.command(bp, buf) {
                    Ok(()) => Ok(buf.len()),
                    Err(r) => Err(self.refuse(op, r)),
                }
            }
            Some(Handle::Events { .. }) => Err(self.refuse(op, refusal(EBADF, "an event stream is read-only"))),
            Some(Handle::List(_)) => Err(self.refuse(op, refusal(EBADF, "the listing is read-only"))),
            Some(Handle::Root) => Err(self.refuse(op, refusal(EBADF, "the scheme root is not writable"))),
            None => Err(self.refuse(op, refusal(EBADF, format!("no handle {id}")))),
        }
    }

    fn fevent(&mut self, id: usize, flags: EventFlags, ctx: &CallerCtx) -> Result<EventFlags> {
        let op = format_args!("fevent on handle {id} by pid {}", ctx.pid);
        let bp = match self.handles.get_mut(&id) {
            Some(Handle::Events { bp, subscribed, .. }) => {
                *subscribed = flags;
                *bp
            }
            Some(Handle::Breakpoint(_)) | Some(Handle::Root) => return Ok(EventFlags::empty()),
            // A file: always readable.
            Some(Handle::List(_)) => return Ok(flags & EVENT_READ),
            None => return Err(self.refuse(op, refusal(EBADF, format!("no handle {id}")))),
        };
        self.collect();
        Ok(self.stream_readiness(bp) & flags)
    }

    /// Redox's kernel forwards `fcntl` to the scheme and changes the file
    /// description's flags only if the scheme answers Ok; it then passes
    /// them to every `read` and `write` as `fcntl_flags`. hwbpd keeps no
    /// flags of its own (a read honours the O_NONBLOCK it is given), so it
    /// agrees to any F_GETFL/F_SETFL on a handle it knows, as pipes do.
    fn fcntl(&mut self, id: usize, cmd: usize, arg: usize, ctx: &CallerCtx) -> Result<usize> {
        let op = format_args!("fcntl({cmd}, {arg:#x}) on handle {id} by pid {}", ctx.pid);
        if !self.handles.contains_key(&id) {
            return Err(self.refuse(op, refusal(EBADF, format!("no handle {id}"))));
        }
        match cmd {
            F_GETFL | F_SETFL => Ok(0),
            _ => Err(self.refuse(op, refusal(EINVAL, "only F_GETFL and F_SETFL reach a scheme"))),
        }
    }

    fn fpath(&mut self, id: usize, buf: &mut [u8], ctx: &CallerCtx) -> Result<usize> {
        let op = format_args!("fpath of handle {id} by pid {}", ctx.pid);
        let path = match self.handle(id) {
            Some(Handle::Root) => libhwbp::abi::SCHEME_PREFIX.to_string(),
            Some(Handle::Breakpoint(bp)) => self.admitted_path(*bp).unwrap_or_default(),
            Some(Handle::Events { bp, version, .. }) => {
                // The stream's path: its breakpoint's, as dup named it. A
                // stream keeps its breakpoint's state, so this always parses.
                let p = self.admitted_path(*bp).unwrap_or_default();
                let mark = match version {
                    RecordVersion::V2 => EVENTS_MARK,
                    RecordVersion::V1 => EVENTS_V1_MARK,
                };
                format!("{p}{mark}")
            }
            Some(Handle::List(list)) => list.path(),
            None => return Err(self.refuse(op, refusal(EBADF, format!("no handle {id}")))),
        };
        let n = path.len().min(buf.len());
        buf[..n].copy_from_slice(&path.as_bytes()[..n]);
        Ok(n)
    }

    fn fstat(&mut self, id: usize, stat: &mut Stat, ctx: &CallerCtx) -> Result<()> {
        let op = format_args!("fstat of handle {id} by pid {}", ctx.pid);
        let (size, uid) = match self.handle(id) {
            Some(Handle::Root) => (0, ROOT_UID),
            Some(Handle::Breakpoint(bp)) => (COUNT_RECORD_SIZE as u64, self.bps.get(bp).map_or(ROOT_UID, |b| b.owner)),
            Some(Handle::Events { bp, version, .. }) => self.bps.get(bp).map_or((0, ROOT_UID), |b| {
                ((b.ring.len() * version.size()) as u64, b.owner)
            }),
            Some(Handle::List(list)) => {
                *stat = Stat { st_mode: MODE_FILE | 0o400, st_size: list.len() as u64, st_uid: list.uid(), ..Stat::default() };
                return Ok(());
            }
            None => return Err(self.refuse(op, refusal(EBADF, format!("no handle {id}")))),
        };
        let block = match self.handle(id) {
            Some(Handle::Events { version, .. }) => version.size(),
            _ => libhwbp::abi::EVENT_RECORD_SIZE,
        };
        *stat = Stat { st_mode: MODE_FILE | 0o600, st_size: size, st_uid: uid, st_blksize: block as u32, ..Stat::default() };
        Ok(())
    }

    /// A listing's size (`lseek(SEEK_END)`); other handles are not files.
    fn fsize(&mut self, id: usize, ctx: &CallerCtx) -> Result<u64> {
        match self.handle(id) {
            Some(Handle::List(list)) => Ok(list.len() as u64),
            Some(_) => Err(Error::new(syscall::error::ESPIPE)),
            None => Err(self.refuse(format_args!("fsize of handle {id} by pid {}", ctx.pid), refusal(EBADF, format!("no handle {id}")))),
        }
    }

    fn on_close(&mut self, id: usize) {
        match self.handles.remove(&id) {
            Some(Handle::Root) => {
                // The root is shared by every open: it stays.
                self.handles.insert(id, Handle::Root);
            }
            Some(Handle::Breakpoint(bp)) => self.close_breakpoint(bp),
            Some(Handle::Events { bp, .. }) => self.close_stream(id, bp),
            Some(Handle::List(list)) => self.views.closed(list.uid()),
            None => log::warn!("hwbpd: close of unknown handle {id}: EBADF ({EBADF})"),
        }
    }
}
