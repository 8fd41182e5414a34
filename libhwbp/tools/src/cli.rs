//! `hwbp`: perf-like `stat` and `record` for hardware watchpoints.
//!
//! ```text
//! hwbp stat   -e mem:0x1000/4:w [-e ...] (-p PID | -C CPU | -a) [--pinned] [--duration-ms N] [--ready-file F]
//! hwbp record -e mem:0x1000/4:w          (-p PID | -C CPU | -a) [--period N] [--ring N] [--duration-ms N] [--ready-file F]
//! ```
//! On Redox they talk to `/scheme/hwbp`. On the host, `--sim` runs them
//! against an in-process hwbpd on the simulated kernel, with a simulated
//! task storing to every watched address (`--sim-stores` times each).

use std::fmt::Write as _;

use clap::{Args, Parser, Subcommand};
use libhwbp::abi::errno::ErrorKind;
use libhwbp::abi::{parse_mem_event, Access, CountRecord, EventRecord, MemEvent, OpenPath, Options, PathError, Target};
use libhwbp::{Breakpoint, Transport};

#[derive(Parser, Debug)]
#[command(name = "hwbp", about = "hardware watchpoints and breakpoints through hwbpd (/scheme/hwbp)")]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Count hits, like `perf stat -e mem:...`.
    Stat(StatArgs),
    /// Print every hit record, like `perf record -e mem:...` + `perf script`.
    Record(RecordArgs),
}

#[derive(Args, Debug, Clone)]
pub struct TargetArgs {
    /// Watch process PID (all its threads).
    #[arg(short = 'p', long = "pid", conflicts_with_all = ["cpu", "all_cpus"])]
    pub pid: Option<u64>,
    /// Watch every task on CPU (root only).
    #[arg(short = 'C', long = "cpu", conflicts_with = "all_cpus")]
    pub cpu: Option<u32>,
    /// Watch every task on every CPU (root only).
    #[arg(short = 'a', long = "all-cpus")]
    pub all_cpus: bool,
    /// How long to watch, in milliseconds.
    #[arg(long = "duration-ms", default_value_t = 1000)]
    pub duration_ms: u64,
    /// Host only: run against an in-process hwbpd on the simulated kernel,
    /// with a simulated task as the target.
    #[arg(long)]
    pub sim: bool,
    /// Create this (empty) file once every breakpoint is open, before
    /// watching (e.g. `hwbp-target --go-file` waits for it).
    #[arg(long = "ready-file")]
    pub ready_file: Option<String>,
    /// With --sim: stores the simulated task makes to each watched address.
    #[arg(long = "sim-stores", default_value_t = 1000)]
    pub sim_stores: u64,
}

impl TargetArgs {
    /// The target the flags name (`None`: no target given).
    pub fn target(&self) -> Option<Target> {
        match (self.pid, self.cpu, self.all_cpus) {
            (Some(pid), _, _) => Some(Target::Task(pid)),
            (_, Some(cpu), _) => Some(Target::Cpu(cpu)),
            (_, _, true) => Some(Target::AllCpus),
            _ => None,
        }
    }
}

#[derive(Args, Debug)]
pub struct StatArgs {
    /// perf event: mem:<addr>[/<len>][:<access>] (repeatable).
    #[arg(short = 'e', long = "event", required = true)]
    pub events: Vec<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Open the breakpoints pinned (fail with ENOSPC rather than multiplex).
    #[arg(long)]
    pub pinned: bool,
}

#[derive(Args, Debug)]
pub struct RecordArgs {
    /// perf event: mem:<addr>[/<len>][:<access>].
    #[arg(short = 'e', long = "event")]
    pub event: String,
    #[command(flatten)]
    pub target: TargetArgs,
    /// A record every N-th hit.
    #[arg(long, default_value_t = 1)]
    pub period: u64,
    /// Event ring size in records.
    #[arg(long, default_value_t = u64::from(libhwbp::abi::DEFAULT_RING))]
    pub ring: u64,
}

/// The open paths for `stat`'s events.
pub fn stat_paths(events: &[String], target: Target, pinned: bool) -> Result<Vec<OpenPath>, PathError> {
    events
        .iter()
        .map(|ev| {
            let event = parse_mem_event(ev)?;
            Ok(OpenPath { target, event, options: Options { pinned, ..Options::default() } })
        })
        .collect()
}

/// Open every path, let `wait` run, then read every count. A failed open
/// says which event and why ([`explain_open_error`]).
pub fn stat<T: Transport + Clone>(t: T, paths: &[OpenPath], wait: impl FnOnce()) -> Result<Vec<(OpenPath, CountRecord)>, String> {
    let handles = paths.iter().map(|p| open_explained(&t, p)).collect::<Result<Vec<_>, _>>()?;
    wait();
    handles.iter().map(|h| Ok((*h.requested_path(), h.read_count().map_err(|e| e.to_string())?))).collect()
}

fn open_explained<T: Transport + Clone>(t: &T, p: &OpenPath) -> Result<libhwbp::BreakpointHandle<T>, String> {
    Breakpoint::from_path(p).open(t.clone()).map_err(|e| format!("{}: {}", p.event, explain_open_error(p, &e)))
}

/// The aligned pieces (address, length) hwbpd splits `ev` into, one debug
/// register each: at each address the longest of 8, 4, 2, 1 bytes that is
/// aligned and fits (gdb's rule, and hwbpd's).
pub fn pieces_of(ev: &MemEvent) -> Vec<(u64, u64)> {
    if ev.access() == Access::Exec {
        return vec![(ev.addr(), ev.len())];
    }
    let (mut addr, end) = (ev.addr(), ev.addr().saturating_add(ev.len()));
    let mut out = Vec::new();
    while addr < end {
        let len = [8u64, 4, 2, 1].into_iter().find(|&l| addr % l == 0 && addr.saturating_add(l) <= end).unwrap_or(1);
        out.push((addr, len));
        addr = addr.saturating_add(len);
    }
    out
}

/// Debug registers on x86.
const X86_DEBUG_REGISTERS: usize = 4;
/// First address of the kernel half on x86-64.
const KERNEL_HALF: u64 = 0xffff_8000_0000_0000;
/// One past the last canonical user address on x86-64 (4-level paging).
const USER_END: u64 = 0x0000_8000_0000_0000;

/// Why hwbpd most likely refused to open `p` with `err`, in words: the
/// errno, then what in the request causes it (hwbpd logs its own reason on
/// its side; this is the client's reading of the same rules).
pub fn explain_open_error(p: &OpenPath, err: &libhwbp::Error) -> String {
    let Some(kind) = err.kind() else { return err.to_string() };
    let ev = &p.event;
    let pieces = pieces_of(ev);
    let list = pieces.iter().map(|(a, l)| format!("{a:#x}/{l}")).collect::<Vec<_>>().join(", ");
    let last = ev.addr().saturating_add(ev.len() - 1);
    let why = match kind {
        ErrorKind::Invalid if pieces.len() > X86_DEBUG_REGISTERS => format!(
            "it needs {} debug registers ({list}) and x86 has {X86_DEBUG_REGISTERS}, so no breakpoint can ever hold it: watch fewer bytes, or give several -e events",
            pieces.len()
        ),
        ErrorKind::Invalid if (ev.addr() < KERNEL_HALF && last >= USER_END) || (ev.addr() >= USER_END && ev.addr() < KERNEL_HALF) => {
            format!("{:#x}..={last:#x} is not a canonical address (user space ends at {:#x}, the kernel half starts at {KERNEL_HALF:#x}): it can never be armed", ev.addr(), USER_END - 1)
        }
        ErrorKind::NoSpace => format!(
            "pinned, it needs {} debug register{} ({list}) on every CPU it may run on, and the pinned breakpoints already open there (cpu-wide plus the most of any one task) leave fewer of the {X86_DEBUG_REGISTERS} free: drop --pinned to take turns",
            pieces.len(),
            if pieces.len() == 1 { "" } else { "s" }
        ),
        ErrorKind::NotPermitted => match p.target {
            Target::Cpu(_) | Target::AllCpus => "cpu-wide targets (-C, -a) are root only".to_string(),
            _ if last >= KERNEL_HALF => format!("{:#x} is in the kernel half: root only", ev.addr()),
            _ if p.options.kernel => "the kernel option is root only".to_string(),
            _ if p.options.ring.get() > 4096 => format!("ring={} is above 4096 records: root only", p.options.ring.get()),
            Target::Task(pid) | Target::TaskOnCpu { pid, .. } => format!("process {pid} belongs to another user: only its owner or root may watch it"),
            Target::SelfTask => kind.meaning().to_string(),
        },
        ErrorKind::NoSuchTarget => match p.target {
            Target::Task(pid) => format!("no process {pid}"),
            Target::TaskOnCpu { pid, cpu } => format!("no process {pid}, or no CPU {cpu}"),
            Target::Cpu(cpu) => format!("no CPU {cpu}"),
            _ => kind.meaning().to_string(),
        },
        ErrorKind::QuotaReached => format!("your uid already has the most breakpoints open it may (per-user quota, default {})", libhwbp::abi::DEFAULT_USER_QUOTA),
        _ => kind.meaning().to_string(),
    };
    format!("{}: {why}", errno_text(err))
}

fn errno_text(err: &libhwbp::Error) -> String {
    use libhwbp::abi::errno::*;
    let Some(n) = err.errno() else { return err.to_string() };
    let name = match n {
        EPERM => "EPERM",
        ESRCH => "ESRCH",
        EBADF => "EBADF",
        EAGAIN | EWOULDBLOCK_REDOX => "EAGAIN",
        EINVAL => "EINVAL",
        EMFILE => "EMFILE",
        ENOSPC => "ENOSPC",
        _ => return err.to_string(),
    };
    format!("{name} ({n})")
}

/// perf-stat-like text for `rows`.
pub fn format_stat(rows: &[(OpenPath, CountRecord)]) -> String {
    let mut s = String::new();
    let target = rows.first().map(|(p, _)| p.target.to_string()).unwrap_or_default();
    let _ = writeln!(s, "\n Performance counter stats for '{target}':\n");
    for (p, c) in rows {
        let pct = c.running_fraction().map_or("not counted".to_string(), |f| format!("{:.2}%", 100.0 * f));
        let scaled = match c.scaled_value() {
            Some(v) if v != c.value => format!("{v:>16}  (scaled from {})", c.value),
            Some(v) => format!("{v:>16}"),
            None => format!("{:>16}", "<not counted>"),
        };
        let _ = writeln!(s, "{scaled}  {:<28}  ({pct}; enabled {} ns, running {} ns, lost {})", p.event, c.time_enabled_ns, c.time_running_ns, c.lost);
    }
    s
}

/// Open `path`, let `wait` run, then read every hit record queued.
pub fn record<T: Transport + Clone>(t: T, path: &OpenPath, wait: impl FnOnce()) -> Result<(Vec<EventRecord>, CountRecord), String> {
    let h = open_explained(&t, path)?;
    let mut ev = h.events().map_err(|e| format!("events stream: {e}"))?;
    wait();
    let recs = ev.drain().map_err(|e| format!("reading the events stream: {e}"))?;
    Ok((recs, h.read_count().map_err(|e| e.to_string())?))
}

/// One line per hit record, like `perf script`: `pid P tid T cpu C ...
/// bp ID`, then ` kernel` for a kernel-mode hit and ` stopped` when the
/// breakpoint stopped the thread (option `stop`).
pub fn format_record(r: &EventRecord) -> String {
    let access = r.access_kind().map_or("?", |a| a.as_str());
    let mut line = format!(
        "pid {:>6} tid {:>6} cpu {:>3} {:>14} ns  hit {:>8}  ip {:#018x}  addr {:#x}:{access}  bp {}",
        r.pid, r.tid, r.cpu, r.timestamp_ns, r.hit, r.ip, r.addr, r.id
    );
    if r.is_kernel_mode() {
        line.push_str(" kernel");
    }
    if r.is_stopped() {
        line.push_str(" stopped");
    }
    line
}

/// The record path from the arguments.
pub fn record_path(a: &RecordArgs, target: Target) -> Result<OpenPath, PathError> {
    let p = OpenPath { target, event: parse_mem_event(&a.event)?, options: Options::default() };
    Breakpoint::from_path(&p).period(a.period).ring(a.ring).path()
}

/// Run the CLI; returns the exit code. Output goes to `out`.
pub fn main_with(cli: Cli, out: &mut dyn std::io::Write) -> i32 {
    let (targs, is_stat) = match &cli.cmd {
        Cmd::Stat(a) => (a.target.clone(), true),
        Cmd::Record(a) => (a.target.clone(), false),
    };
    let result = if targs.sim {
        sim_run(&cli, &targs, out)
    } else {
        system_run(&cli, &targs, out)
    };
    match result {
        Ok(()) => 0,
        Err(msg) => {
            let _ = writeln!(out, "hwbp {}: {msg}", if is_stat { "stat" } else { "record" });
            1
        }
    }
}

#[cfg_attr(not(any(target_os = "redox", feature = "sim")), allow(dead_code))]
fn run_with<T: Transport + Clone>(cli: &Cli, t: T, target: Target, wait: impl FnOnce(&[OpenPath]), out: &mut dyn std::io::Write) -> Result<(), String> {
    let ready_file = match &cli.cmd {
        Cmd::Stat(a) => a.target.ready_file.clone(),
        Cmd::Record(a) => a.target.ready_file.clone(),
    };
    let mut ready_error = None;
    // Every breakpoint is open when `wait` runs: say so, then wait.
    let wait = |paths: &[OpenPath]| {
        if let Some(f) = &ready_file
            && let Err(e) = std::fs::write(f, b"")
        {
            ready_error = Some(format!("--ready-file {f}: {e}"));
            return;
        }
        wait(paths)
    };
    let r = run_opened(cli, t, target, wait, out);
    match ready_error {
        Some(e) => Err(e),
        None => r,
    }
}

#[cfg_attr(not(any(target_os = "redox", feature = "sim")), allow(dead_code))]
fn run_opened<T: Transport + Clone>(cli: &Cli, t: T, target: Target, wait: impl FnOnce(&[OpenPath]), out: &mut dyn std::io::Write) -> Result<(), String> {
    match &cli.cmd {
        Cmd::Stat(a) => {
            let paths = stat_paths(&a.events, target, a.pinned).map_err(|e| e.to_string())?;
            let rows = stat(t, &paths, || wait(&paths))?;
            let _ = write!(out, "{}", format_stat(&rows));
        }
        Cmd::Record(a) => {
            let path = record_path(a, target).map_err(|e| e.to_string())?;
            let (recs, c) = record(t, &path, || wait(std::slice::from_ref(&path)))?;
            for r in &recs {
                let _ = writeln!(out, "{}", format_record(r));
            }
            let _ = writeln!(out, "# {} records, {} hits, {} lost: {}", recs.len(), c.value, c.lost, path);
        }
    }
    Ok(())
}

#[cfg(target_os = "redox")]
fn system_run(cli: &Cli, targs: &TargetArgs, out: &mut dyn std::io::Write) -> Result<(), String> {
    let target = targs.target().ok_or("give a target: -p PID, -C CPU or -a")?;
    let ms = targs.duration_ms;
    run_with(cli, libhwbp::redox::RedoxTransport, target, |_| std::thread::sleep(std::time::Duration::from_millis(ms)), out)
}

#[cfg(not(target_os = "redox"))]
fn system_run(_: &Cli, _: &TargetArgs, _: &mut dyn std::io::Write) -> Result<(), String> {
    Err("/scheme/hwbp exists only on Redox; on this host use --sim".into())
}

#[cfg(all(feature = "sim", not(target_os = "redox")))]
fn sim_run(cli: &Cli, targs: &TargetArgs, out: &mut dyn std::io::Write) -> Result<(), String> {
    use crate::platform::sim::SimPlatform;
    use crate::platform::Platform;
    use std::cell::RefCell;

    const STEP_NS: u64 = 100_000;
    let p = RefCell::new(SimPlatform::new());
    // The simulated task is the target unless cpu-wide was asked for.
    let target = match targs.target() {
        Some(t @ (Target::Cpu(_) | Target::AllCpus)) => t,
        _ => Target::Task(p.borrow().own_pid()),
    };
    let t = p.borrow().transport();
    let stores = targs.sim_stores;
    let wait = |paths: &[OpenPath]| {
        let mut p = p.borrow_mut();
        for _ in 0..stores {
            for path in paths {
                let ev = path.event;
                let size = [8, 4, 2, 1].into_iter().find(|s| ev.len() >= *s && ev.addr() % s == 0).unwrap_or(1);
                if ev.access() == libhwbp::abi::Access::Exec {
                    continue;
                }
                p.store(ev.addr(), size);
            }
            p.let_time_pass(STEP_NS);
        }
    };
    run_with(cli, t, target, wait, out)
}

#[cfg(not(all(feature = "sim", not(target_os = "redox"))))]
fn sim_run(_: &Cli, _: &TargetArgs, _: &mut dyn std::io::Write) -> Result<(), String> {
    if cfg!(target_os = "redox") {
        Err("--sim is for the host; on Redox drop it".into())
    } else {
        Err("this hwbp was built without the `sim` feature".into())
    }
}
