//! [`RedoxKernel`]: the [`Kernel`] interface over the patched Redox kernel,
//! speaking `kernel-patch/ABI.md` with the encoders of `hwbp_kern::abi`.
//!
//! Handles it holds (all on the kernel's `proc:` scheme):
//! - `hwbp-control`, dup'ed from the proc: authority at start (root only,
//!   one holder): the hit stream, read until EAGAIN when the event queue
//!   says it is readable; closing it (or hwbpd dying) disarms everything;
//! - `cpu-<n>` for every CPU (probed from 0 until ESRCH): CPU plans, and the
//!   per-CPU `dropped` counter;
//! - per thread of each task with a non-empty plan,
//!   `auth-<control fd>-regs/debug` dup'ed on the thread's kernel context
//!   handle, which a [`ThreadSource`] provides (procmgr; see below).
//!
//! Tasks are found in `sys:context` ([`super::contexts`]): permission checks
//! (euid), exits, and new threads, by rescanning at most every
//! [`SCAN_INTERVAL_NS`] (a new thread runs unwatched until the next scan,
//! and an exit is reported up to that late). Hit timestamps are TSC ticks,
//! converted with [`TscClock`]; the daemon feeds it a sample per tick.
//!
//! Getting thread context handles is the part upstream Redox does not offer
//! yet: the kernel hands them only to procmgr (`new-context`), and procmgr
//! gives a `thread-<i>` handle only on a process's *own* proc handle (its
//! `on_openat` knows `init`, `ps` and `proc-creds-capability`; nothing opens
//! another pid). [`ProcmgrThreads`] therefore asks procmgr for the process
//! by pid at [`PROCMGR_PROCESS_BY_PID`], a root-only handle procmgr would
//! have to add; upstream answers ENOENT and every task target fails with EIO
//! and one log line, while cpu-wide targets (`cpu/<n>`, `cpu/all`) need only
//! the control handle and work. From the process handle it uses procmgr's
//! existing protocol: `dup(proc, "thread-<i>")`, then `dup(thread,
//! "open_via_dup")`, which procmgr forwards to the kernel, returning a kernel
//! context handle in hwbpd's own file table (so the `auth-<fd>` number
//! resolves there).

use std::cell::RefCell;
use std::collections::BTreeMap;

use hwbp_kern::abi::{
    self, CPU_PLAN_SIZE, HIT_RECORD_SIZE, HitRecord, RAW_PIECE_SIZE,
};
use hwbp_kern::plan::MAX_CONTEXT_PIECES;
use hwbp_kern::{ContextPlan, CpuId, CpuPlan};
use libredox::Fd;
use libredox::error::Error as SysError;
use libredox::flag::{O_CLOEXEC, O_RDONLY, O_RDWR};
use syscall::error::{EAGAIN, EINVAL, ENOENT, ENOSPC, EPERM, ESRCH, EWOULDBLOCK};

use super::contexts::{SCAN_INTERVAL_NS, Snapshot};
use super::tsc::{Sample, TscClock};
use crate::kernel::{Kernel, KernelError, Pid, TaskInfo};

/// The listing of every context, with pid, euid and state.
pub const SYS_CONTEXT_PATH: &str = "/scheme/sys/context";
/// procmgr's scheme.
pub const PROCMGR_ROOT: &str = "/scheme/proc";
/// NOT IN UPSTREAM PROCMGR (see the module docs): the root-only handle of
/// process `<pid>`, `/scheme/proc/<PROCMGR_PROCESS_BY_PID><pid>`, on which
/// procmgr's existing `thread-<i>` dup works.
pub const PROCMGR_PROCESS_BY_PID: &str = "pid-";
/// The control handle's name on the proc: authority.
const CONTROL_NAME: &str = "hwbp-control";
/// An fd of the proc: authority handed to hwbpd by whoever starts it.
pub const AUTHORITY_FD_VAR: &str = "HWBPD_PROC_AUTHORITY_FD";
/// The kernel's proc: scheme as a namespace path.
pub const KERNEL_PROC: &str = "/scheme/kernel.proc";
/// Upper bound when probing `cpu-<n>` and `thread-<i>` (loops end earlier,
/// at the first ESRCH / ENOENT).
const MAX_PROBE: usize = 4096;
/// A CPU handle read with room for the two trailing counters.
const CPU_READ_SIZE: usize = CPU_PLAN_SIZE + 16;
/// Offset of `dropped` in that read.
const CPU_DROPPED_OFFSET: usize = CPU_PLAN_SIZE;
/// Hit records read from the control handle per `read`.
const HIT_READ_BATCH: usize = 256;

/// Why the backend could not start.
#[derive(Debug)]
pub struct StartError {
    pub what: &'static str,
    pub errno: i32,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: errno {}", self.what, self.errno)
    }
}

fn start_err(what: &'static str) -> impl FnOnce(SysError) -> StartError {
    move |e| StartError { what, errno: e.errno() }
}

/// Where the kernel context handles of a task's threads come from.
pub trait ThreadSource {
    /// One kernel context handle (the `OpenViaDup` kind `regs/int` is
    /// opened on) per live thread of `pid`. Errors carry the errno.
    fn contexts(&mut self, pid: Pid) -> Result<Vec<Fd>, SysError>;
}

/// Thread handles from procmgr (see the module docs for what upstream lacks).
pub struct ProcmgrThreads;

impl ThreadSource for ProcmgrThreads {
    fn contexts(&mut self, pid: Pid) -> Result<Vec<Fd>, SysError> {
        let path = format!("{PROCMGR_ROOT}/{PROCMGR_PROCESS_BY_PID}{pid}");
        let process = Fd::open(&path, O_CLOEXEC | O_RDWR, 0)?;
        let mut out = Vec::new();
        for i in 0..MAX_PROBE {
            let thread = match process.dup(format!("thread-{i}").as_bytes()) {
                Ok(fd) => Fd::new(fd),
                Err(e) if e.errno() == ENOENT => break,
                Err(e) => return Err(e),
            };
            out.push(Fd::new(thread.dup(b"open_via_dup")?));
        }
        Ok(out)
    }
}

/// A task with a non-empty plan: the plan as last written, and one
/// `regs/debug` handle per thread it was written through.
struct ArmedTask {
    bytes: Vec<u8>,
    threads: Vec<Fd>,
}

/// The Redox kernel, through the hwbp proc: handles. See the module docs.
pub struct RedoxKernel<T: ThreadSource> {
    control: Fd,
    cpus: Vec<Fd>,
    source: T,
    tasks: BTreeMap<Pid, ArmedTask>,
    snapshot: Snapshot,
    last_scan_ns: u64,
    clock: TscClock,
    read_buf: Vec<u8>,
    /// Last control-read error logged (to log a persisting one once).
    last_read_errno: RefCell<Option<i32>>,
}

/// `CLOCK_MONOTONIC` in nanoseconds (0 if the clock cannot be read, which
/// the kernel never refuses for this clock).
pub fn monotonic_ns() -> u64 {
    match libredox::call::clock_gettime(libredox::flag::CLOCK_MONOTONIC) {
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

/// A TSC reading and a monotonic reading, back to back.
pub fn clock_sample() -> Sample {
    // SAFETY: `rdtsc` has no memory effects; user mode may execute it
    // (Redox does not set CR4.TSD).
    let tsc = unsafe { core::arch::x86_64::_rdtsc() };
    Sample { tsc, ns: monotonic_ns() }
}

fn read_snapshot() -> Result<Snapshot, SysError> {
    let fd = Fd::open(SYS_CONTEXT_PATH, O_CLOEXEC | O_RDONLY, 0)?;
    let mut text = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = fd.read(&mut chunk)?;
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

/// Get the `hwbp-control` handle, trying in turn:
/// 1. `dup(authority, "hwbp-control")` on an authority fd inherited through
///    [`AUTHORITY_FD_VAR`] (ABI.md's way; upstream nobody passes one yet:
///    procmgr holds the only authority);
/// 2. opening `/scheme/kernel.proc/hwbp-control` through the namespace (works
///    if the kernel's proc scheme answers that name on its root, which the
///    series at the time of writing does not: it only dups it);
/// 3. opening `/scheme/kernel.proc` and dup'ing `hwbp-control` on it (works if
///    the namespace hands out the proc scheme's root handle).
/// Each failure is logged; the last error is returned.
pub fn acquire_control() -> Result<Fd, StartError> {
    let name = CONTROL_NAME.as_bytes();
    if let Ok(value) = std::env::var(AUTHORITY_FD_VAR) {
        match value.trim().parse::<usize>() {
            Ok(raw) => {
                let authority = Fd::new(raw);
                match authority.dup(name) {
                    Ok(fd) => return Ok(Fd::new(fd)),
                    Err(e) => log::warn!("hwbpd: dup({AUTHORITY_FD_VAR}={raw}, {CONTROL_NAME}) failed: errno {}", e.errno()),
                }
            }
            Err(_) => log::warn!("hwbpd: {AUTHORITY_FD_VAR}={value:?} is not an fd number"),
        }
    }
    let direct = format!("{KERNEL_PROC}/{CONTROL_NAME}");
    match Fd::open(&direct, O_CLOEXEC | O_RDWR, 0) {
        Ok(fd) => return Ok(fd),
        Err(e) => log::warn!("hwbpd: open({direct}) failed: errno {}", e.errno()),
    }
    let authority = Fd::open(KERNEL_PROC, O_CLOEXEC | O_RDWR, 0).map_err(|e| {
        log::warn!("hwbpd: open({KERNEL_PROC}) failed: errno {}", e.errno());
        start_err("no proc: authority to take hwbp-control from")(e)
    })?;
    authority.dup(name).map(Fd::new).map_err(start_err("dup(kernel.proc, hwbp-control)"))
}

/// A plan write the kernel refused, as a [`KernelError`] (one log line).
fn refused(pid: Pid, e: SysError) -> KernelError {
    let why = match e.errno() {
        ESRCH => return KernelError::NoSuchTask(pid),
        ENOSPC => "no room for the plan beside a CPU plan (ENOSPC)",
        EINVAL => "the plan did not decode (EINVAL)",
        EPERM => "the control handle does not allow it (EPERM)",
        _ => "writing the plan failed",
    };
    log::warn!("hwbpd: kernel refused the plan of task {pid}: {why}, errno {}", e.errno());
    KernelError::Refused(why)
}

impl<T: ThreadSource> RedoxKernel<T> {
    /// Take the hwbp control handle (see [`acquire_control`]) and open
    /// every CPU's plan handle.
    pub fn open(control: Fd, source: T) -> Result<Self, StartError> {
        let mut cpus = Vec::new();
        for n in 0..MAX_PROBE {
            match control.dup(format!("cpu-{n}").as_bytes()) {
                Ok(fd) => cpus.push(Fd::new(fd)),
                Err(e) if e.errno() == ESRCH => break,
                Err(e) => return Err(start_err("dup(hwbp-control, cpu-<n>)")(e)),
            }
        }
        if cpus.is_empty() {
            return Err(StartError { what: "the kernel reports no CPU (cpu-0: ESRCH)", errno: ESRCH });
        }
        let snapshot = read_snapshot().map_err(start_err("reading /scheme/sys/context"))?;
        Ok(RedoxKernel {
            control,
            cpus,
            source,
            tasks: BTreeMap::new(),
            snapshot,
            last_scan_ns: monotonic_ns(),
            clock: TscClock::new(clock_sample()),
            read_buf: vec![0; HIT_READ_BATCH * HIT_RECORD_SIZE],
            last_read_errno: RefCell::new(None),
        })
    }

    /// The control handle's fd, to register with an event queue.
    pub fn control_fd(&self) -> usize {
        self.control.raw()
    }

    /// Feed the TSC-to-nanoseconds conversion one more reading.
    pub fn sample_clock(&mut self) {
        if !self.clock.observe(clock_sample()) {
            log::debug!("hwbpd: a TSC/monotonic sample went backwards, ignored");
        }
    }

    /// TSC frequency as calibrated so far.
    pub fn tsc_hz(&self) -> Option<u64> {
        self.clock.hz()
    }

    /// `regs/debug` handles for every thread of `pid`.
    fn open_threads(&mut self, pid: Pid) -> Result<Vec<Fd>, KernelError> {
        let contexts = self.source.contexts(pid).map_err(|e| {
            if read_snapshot().is_ok_and(|s| s.task(pid).is_none()) {
                return KernelError::NoSuchTask(pid);
            }
            log::warn!(
                "hwbpd: cannot get the threads of task {pid} from procmgr ({PROCMGR_ROOT}/{PROCMGR_PROCESS_BY_PID}{pid}): errno {}; \
                 task targets need a procmgr handle upstream Redox lacks (scheme-hwbp/src/redox/README.md)",
                e.errno()
            );
            KernelError::Refused("no thread handles for the task (procmgr)")
        })?;
        if contexts.is_empty() {
            return Err(KernelError::NoSuchTask(pid));
        }
        let name = format!("auth-{}-regs/debug", self.control.raw());
        contexts
            .iter()
            .map(|ctx| ctx.dup(name.as_bytes()).map(Fd::new).map_err(|e| refused(pid, e)))
            .collect()
    }

    /// Write `bytes` through every handle; on a failure, put the previous
    /// plan back on the ones already written (best effort) and fail.
    fn write_all(pid: Pid, threads: &[Fd], bytes: &[u8], previous: &[u8]) -> Result<(), KernelError> {
        for (i, t) in threads.iter().enumerate() {
            if let Err(e) = t.write(bytes) {
                for done in threads.iter().take(i) {
                    if let Err(e2) = done.write(previous) {
                        log::error!("hwbpd: task {pid}: restoring the previous plan failed: errno {}", e2.errno());
                    }
                }
                return Err(refused(pid, e));
            }
        }
        Ok(())
    }

    /// The task gained threads: open handles for all of them, write the
    /// plan through the new handles, then drop the old ones (closing a
    /// handle clears a plan only if that handle wrote it last).
    fn rearm_threads(&mut self, pid: Pid) {
        let Some(bytes) = self.tasks.get(&pid).map(|t| t.bytes.clone()) else { return };
        match self.open_threads(pid) {
            Ok(threads) => match Self::write_all(pid, &threads, &bytes, &[]) {
                Ok(()) => {
                    if let Some(task) = self.tasks.get_mut(&pid) {
                        task.threads = threads;
                    }
                }
                Err(e) => log::warn!("hwbpd: task {pid}: arming its new threads failed: {e}"),
            },
            Err(e) => log::warn!("hwbpd: task {pid}: its new threads stay unarmed: {e}"),
        }
    }

    fn scan(&mut self, out: &mut Vec<Pid>) {
        let now = monotonic_ns();
        if now.saturating_sub(self.last_scan_ns) < SCAN_INTERVAL_NS {
            return;
        }
        self.last_scan_ns = now;
        let newer = match read_snapshot() {
            Ok(s) => s,
            Err(e) => {
                log::error!("hwbpd: reading {SYS_CONTEXT_PATH} failed: errno {}; exits go unnoticed", e.errno());
                return;
            }
        };
        let changes = self.snapshot.diff(&newer);
        self.snapshot = newer;
        for pid in changes.grown {
            if self.tasks.contains_key(&pid) {
                self.rearm_threads(pid);
            }
        }
        for pid in changes.exited {
            // The kernel cleared its plan at exit; the handles just go.
            self.tasks.remove(&pid);
            out.push(pid);
        }
    }
}

impl<T: ThreadSource> Kernel for RedoxKernel<T> {
    fn cpu_count(&self) -> u32 {
        u32::try_from(self.cpus.len()).unwrap_or(u32::MAX)
    }

    fn task(&self, pid: Pid) -> Result<TaskInfo, KernelError> {
        // Fresh: a task started since the last scan must be found.
        let snap = read_snapshot().map_err(|e| {
            log::error!("hwbpd: reading {SYS_CONTEXT_PATH} failed: errno {}", e.errno());
            KernelError::Refused("sys:context unreadable")
        })?;
        let t = snap.task(pid).ok_or(KernelError::NoSuchTask(pid))?;
        Ok(TaskInfo { pid, uid: t.euid })
    }

    fn set_task_plan(&mut self, pid: Pid, plan: &ContextPlan) -> Result<(), KernelError> {
        let mut buf = [0u8; MAX_CONTEXT_PIECES * RAW_PIECE_SIZE];
        let used = abi::encode_context_plan(plan, &mut buf).ok_or(KernelError::Refused("plan too large to encode"))?;
        let bytes = buf.get(..used).unwrap_or(&[]).to_vec();
        if plan.is_empty() {
            if let Some(task) = self.tasks.remove(&pid) {
                for t in &task.threads {
                    if let Err(e) = t.write(&[]) {
                        // A dead thread has no plan left to clear.
                        if e.errno() != ESRCH {
                            log::warn!("hwbpd: task {pid}: clearing a thread's plan failed: errno {}", e.errno());
                        }
                    }
                }
            }
            return Ok(());
        }
        match self.tasks.get_mut(&pid) {
            Some(task) => {
                Self::write_all(pid, &task.threads, &bytes, &task.bytes)?;
                task.bytes = bytes;
            }
            None => {
                let threads = self.open_threads(pid)?;
                Self::write_all(pid, &threads, &bytes, &[])?;
                self.tasks.insert(pid, ArmedTask { bytes, threads });
            }
        }
        Ok(())
    }

    fn set_cpu_plan(&mut self, cpu: CpuId, plan: &CpuPlan) -> Result<(), KernelError> {
        let fd = usize::try_from(cpu).ok().and_then(|i| self.cpus.get(i)).ok_or(KernelError::NoSuchCpu(cpu))?;
        fd.write(&abi::encode_cpu_plan(plan)).map(|_| ()).map_err(|e| {
            log::warn!("hwbpd: kernel refused the plan of cpu {cpu}: errno {}", e.errno());
            match e.errno() {
                ESRCH => KernelError::NoSuchCpu(cpu),
                EINVAL => KernelError::Refused("the CPU plan did not decode (EINVAL)"),
                _ => KernelError::Refused("writing the CPU plan failed"),
            }
        })
    }

    fn drain_hits(&mut self, out: &mut [HitRecord]) -> usize {
        let want = out.len().min(HIT_READ_BATCH);
        if want == 0 {
            return 0;
        }
        let Some(buf) = self.read_buf.get_mut(..want * HIT_RECORD_SIZE) else { return 0 };
        let n = match self.control.read(buf) {
            Ok(bytes) => bytes / HIT_RECORD_SIZE,
            Err(e) if matches!(e.errno(), EAGAIN | EWOULDBLOCK) => 0,
            Err(e) => {
                let mut last = self.last_read_errno.borrow_mut();
                if *last != Some(e.errno()) {
                    log::error!("hwbpd: reading hit records failed: errno {}", e.errno());
                    *last = Some(e.errno());
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
        // ABI: bits 32-63 are the pid procmgr gave the context (0: kernel).
        Some((context >> 32) as Pid).filter(|&pid| pid != 0)
    }

    fn dropped_hits(&self) -> u64 {
        let mut total = 0u64;
        let mut buf = [0u8; CPU_READ_SIZE];
        for (n, cpu) in self.cpus.iter().enumerate() {
            match cpu.read(&mut buf) {
                Ok(len) if len >= CPU_READ_SIZE => {
                    let mut d = [0u8; 8];
                    d.copy_from_slice(buf.get(CPU_DROPPED_OFFSET..CPU_DROPPED_OFFSET + 8).unwrap_or(&[0; 8]));
                    total = total.saturating_add(u64::from_le_bytes(d));
                }
                Ok(_) => log::debug!("hwbpd: cpu-{n} read without counters"),
                Err(e) => log::debug!("hwbpd: cpu-{n} read failed: errno {}", e.errno()),
            }
        }
        total
    }

    fn take_exits(&mut self, out: &mut Vec<Pid>) {
        self.scan(out);
    }

    fn now_ns(&self) -> u64 {
        monotonic_ns()
    }

    fn disarm_all(&mut self) {
        for (pid, task) in std::mem::take(&mut self.tasks) {
            for t in &task.threads {
                if let Err(e) = t.write(&[]) {
                    if e.errno() != ESRCH {
                        log::warn!("hwbpd: task {pid}: clearing a thread's plan failed: errno {}", e.errno());
                    }
                }
            }
        }
        let empty = abi::encode_cpu_plan(&CpuPlan::EMPTY);
        for (n, cpu) in self.cpus.iter().enumerate() {
            if let Err(e) = cpu.write(&empty) {
                log::warn!("hwbpd: clearing the plan of cpu {n} failed: errno {}", e.errno());
            }
        }
    }
}
