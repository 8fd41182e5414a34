//! `hwbp`: perf-like `stat` and `record` for hardware watchpoints, and
//! `list` of the breakpoints hwbpd holds.
//!
//! ```text
//! hwbp stat   -e mem:0x1000/4:w [-e ...] (-p PID | -C CPU | -a) [--pinned] [--duration-ms N] [--ready-file F]
//! hwbp record -e mem:0x1000/4:w [-e ...] (-p PID | -C CPU | -a) [--kernel] [--summary] [--no-rw-split] [--period N] [--ring N] [--duration-ms N] [--ready-file F]
//! hwbp list   [--raw]
//! ```
//! On Redox they talk to `/scheme/hwbp`. On the host, `--sim` runs them
//! against an in-process hwbpd on the simulated kernel, with a simulated
//! task storing to every watched address (`--sim-stores` times each; for a
//! kernel-half address, or with `--kernel`, simulated kernel code makes the
//! accesses at CPL 0); `list --sim` lists a demo scenario.

use std::fmt::Write as _;

use clap::{Args, Parser, Subcommand};
use libhwbp::abi::errno::ErrorKind;
use libhwbp::abi::list::{ListRequest, Listing};
use libhwbp::abi::{parse_mem_event, Access, BpState, CountRecord, EventRecord, ListEntry, MemEvent, OpenPath, Options, PathError, Placement, Target};
use libhwbp::{Breakpoint, Transport};

use crate::summary::{format_ip_stats, Recorded};

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
    /// Print every hit record, like `perf record -e mem:...` + `perf script`,
    /// and with --kernel or --summary the hits per instruction address.
    Record(RecordArgs),
    /// Every breakpoint you may see (root: all): owner, target, event,
    /// scheduling, state, the debug register of each piece on each CPU,
    /// times (`/scheme/hwbp/list`).
    List(ListArgs),
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
    /// Also count hits in kernel mode, and allow kernel-half addresses
    /// (option `kernel`, root only).
    #[arg(long)]
    pub kernel: bool,
}

#[derive(Args, Debug)]
pub struct RecordArgs {
    /// perf event: mem:<addr>[/<len>][:<access>] (repeatable).
    #[arg(short = 'e', long = "event", required = true)]
    pub events: Vec<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Also count hits in kernel mode, and allow kernel-half addresses
    /// (option `kernel`, root only); prints the summary.
    #[arg(long)]
    pub kernel: bool,
    /// At the end, hits per instruction address, by watched address and
    /// access (r, w, x; rw when unknown), most first.
    #[arg(long)]
    pub summary: bool,
    /// For the summary, do not open a write watch beside each rw event
    /// (without it, reads and writes are not told apart: rw).
    #[arg(long = "no-rw-split")]
    pub no_rw_split: bool,
    /// A record every N-th hit.
    #[arg(long, default_value_t = 1)]
    pub period: u64,
    /// Event ring size in records.
    #[arg(long, default_value_t = u64::from(libhwbp::abi::DEFAULT_RING))]
    pub ring: u64,
}

impl RecordArgs {
    /// Whether the summary is printed.
    pub fn wants_summary(&self) -> bool {
        self.summary || self.kernel
    }
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Print hwbpd's text as it serves it (format version 1), every page.
    #[arg(long)]
    pub raw: bool,
    /// Host only: an in-process hwbpd on the simulated kernel, set up with
    /// a demo scenario (breakpoints of root and of two users, pinned,
    /// flexible and multiplexed, split, disabled, ended, closed).
    #[arg(long)]
    pub sim: bool,
    /// With --sim: list as this uid (0 sees everything; 1000 and 1001 are
    /// the demo's users, any other sees nothing).
    #[arg(long = "sim-uid", default_value_t = 0)]
    pub sim_uid: u32,
}

/// The open paths for `stat`'s events.
pub fn stat_paths(events: &[String], target: Target, pinned: bool, kernel: bool) -> Result<Vec<OpenPath>, PathError> {
    events
        .iter()
        .map(|ev| {
            let event = parse_mem_event(ev)?;
            Ok(OpenPath { target, event, options: Options { pinned, kernel, ..Options::default() } })
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
        ErrorKind::Invalid if ev.addr() >= KERNEL_HALF && !p.options.kernel => {
            format!("{:#x} is in the kernel half: a kernel watchpoint needs --kernel (option kernel, root only)", ev.addr())
        }
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

/// The write watch opened beside an `rw` event to tell its reads from its
/// writes (same target, range and kernel option; a record for every hit).
pub fn write_companion(p: &OpenPath) -> Option<OpenPath> {
    if p.event.access() != Access::ReadWrite {
        return None;
    }
    let event = MemEvent::new(p.event.addr(), p.event.len(), Access::Write).ok()?;
    let o = p.options;
    let options = Options { kernel: o.kernel, nosplit: o.nosplit, ring: o.ring, pinned: o.pinned, ..Options::default() };
    Some(OpenPath { target: p.target, event, options })
}

/// Open every path with its events stream (and, with `split_rw`, the write
/// companion of each `rw` one), let `wait` run, then read every hit record
/// queued and every count.
pub fn record<T: Transport + Clone>(t: T, paths: &[OpenPath], split_rw: bool, wait: impl FnOnce()) -> Result<Vec<Recorded>, String> {
    struct Open<T: Transport> {
        h: libhwbp::BreakpointHandle<T>,
        ev: libhwbp::EventStream<T>,
    }
    let open = |p: &OpenPath| -> Result<Open<T>, String> {
        let h = open_explained(&t, p)?;
        let ev = h.events().map_err(|e| format!("events stream: {e}"))?;
        Ok(Open { h, ev })
    };
    let mut opened = Vec::new();
    for p in paths {
        let main = open(p)?;
        let companion = match write_companion(p).filter(|_| split_rw) {
            Some(c) => Some(open(&c).map_err(|e| format!("{e} (the write watch that tells reads from writes: --no-rw-split goes without)"))?),
            None => None,
        };
        opened.push((main, companion, p.options.period.get()));
    }
    wait();
    let read = |o: &mut Open<T>| -> Result<(Vec<EventRecord>, CountRecord), String> {
        let recs = o.ev.drain().map_err(|e| format!("reading the events stream: {e}"))?;
        Ok((recs, o.h.read_count().map_err(|e| e.to_string())?))
    };
    opened
        .iter_mut()
        .map(|(main, companion, period)| {
            let (records, count) = read(main)?;
            let companion = companion.as_mut().map(read).transpose()?;
            Ok(Recorded { records, count, period: *period, companion })
        })
        .collect()
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

/// The record paths from the arguments, one per event.
pub fn record_paths(a: &RecordArgs, target: Target) -> Result<Vec<OpenPath>, PathError> {
    a.events
        .iter()
        .map(|ev| {
            let p = OpenPath { target, event: parse_mem_event(ev)?, options: Options { kernel: a.kernel, ..Options::default() } };
            Breakpoint::from_path(&p).period(a.period).ring(a.ring).path()
        })
        .collect()
}

/// Every event's records in one list, in time order (then by breakpoint).
pub fn merged_records(recorded: &[Recorded]) -> Vec<EventRecord> {
    let mut all: Vec<EventRecord> = recorded.iter().flat_map(|r| r.records.iter().copied()).collect();
    all.sort_by_key(|r| (r.timestamp_ns, r.id, r.hit));
    all
}

/// Nanoseconds as milliseconds with one decimal.
fn ms(ns: u64) -> String {
    format!("{}.{}", ns / 1_000_000, ns % 1_000_000 / 100_000)
}

/// The register column of a piece: where it is, in words.
pub fn describe_placement(e: &ListEntry, place: &Placement) -> String {
    match place {
        Placement::Armed(spans) => spans
            .iter()
            .map(|s| if s.first == s.last { format!("dr{} on cpu {}", s.slot, s.first) } else { format!("dr{} on cpus {}-{}", s.slot, s.first, s.last) })
            .collect::<Vec<_>>()
            .join(", "),
        Placement::Waiting => "waiting (multiplexed out: armed at a later turn)".to_string(),
        Placement::Off => match e.state {
            BpState::Live if !e.enabled => "off (disabled)".to_string(),
            BpState::Live => "off".to_string(),
            BpState::Ended => "off (its task ended)".to_string(),
            BpState::Closed => "off (closed; an events stream holds it)".to_string(),
        },
    }
}

/// How a breakpoint is scheduled: pinned or flexible, and exclusive.
fn sched(e: &ListEntry) -> String {
    if e.path.options.exclusive { format!("{}+excl", e.sched()) } else { e.sched().to_string() }
}

/// `hwbp list`'s table: one line per breakpoint (the canonical path last),
/// then one per piece with its debug register on each CPU.
pub fn format_list(l: &Listing) -> String {
    let mut s = String::new();
    let who = if l.header.uid == 0 { "root: every user's".to_string() } else { format!("uid {}: its own", l.header.uid) };
    let n = l.entries.len();
    let _ = writeln!(s, "{n} breakpoint{} ({who}), {} CPUs, at {} ms", if n == 1 { "" } else { "s" }, l.header.cpus, ms(l.header.now_ns));
    let _ = writeln!(s, "{:>4}  {:>5}  {:<13}  {:<7}  {:<6}  {:>7}  {:<18}  PATH", "ID", "OWNER", "SCHED", "ENABLED", "STATE", "COUNT", "RUNNING/ENABLED ms");
    for e in &l.entries {
        let c = &e.count;
        let pct = c.running_fraction().map_or("-".to_string(), |f| format!("{:.0}%", 100.0 * f));
        let times = format!("{}/{} ({pct})", ms(c.time_running_ns), ms(c.time_enabled_ns));
        let _ = writeln!(
            s,
            "{:>4}  {:>5}  {:<13}  {:<7}  {:<6}  {:>7}  {:<18}  {}",
            e.id,
            e.owner,
            sched(e),
            if e.enabled { "yes" } else { "no" },
            e.state.as_str(),
            c.value,
            times,
            e.path
        );
        for p in &e.pieces {
            let _ = writeln!(s, "{:>6}piece {:<24}  {}", "", p.piece.to_string(), describe_placement(e, &p.place));
        }
    }
    s
}

/// The listing through `t`: every page parsed (or, `raw`, the text as
/// served, page after page).
pub fn list_output<T: Transport>(t: &T, raw: bool) -> Result<String, String> {
    if !raw {
        return libhwbp::list(t).map(|l| format_list(&l)).map_err(|e| format!("reading /scheme/hwbp/list: {e}"));
    }
    let mut out = String::new();
    let mut req = ListRequest::default();
    loop {
        let text = libhwbp::listing::list_text(t, req).map_err(|e| format!("reading /scheme/hwbp/{req}: {e}"))?;
        let text = String::from_utf8(text).map_err(|_| format!("/scheme/hwbp/{req} is not UTF-8"))?;
        let next = Listing::parse(&text).map_err(|e| format!("/scheme/hwbp/{req}: {e}"))?.next;
        out.push_str(&text);
        match next {
            Some(from) => req = ListRequest { from },
            None => return Ok(out),
        }
    }
}

/// Run the CLI; returns the exit code. Output goes to `out`.
pub fn main_with(cli: Cli, out: &mut dyn std::io::Write) -> i32 {
    let (result, name) = match &cli.cmd {
        Cmd::List(a) => (if a.sim { sim_list(a, out) } else { system_list(a, out) }, "list"),
        Cmd::Stat(StatArgs { target, .. }) | Cmd::Record(RecordArgs { target, .. }) => {
            let name = if matches!(cli.cmd, Cmd::Stat(_)) { "stat" } else { "record" };
            (if target.sim { sim_run(&cli, target, out) } else { system_run(&cli, target, out) }, name)
        }
    };
    match result {
        Ok(()) => 0,
        Err(msg) => {
            let _ = writeln!(out, "hwbp {name}: {msg}");
            1
        }
    }
}

#[cfg_attr(not(any(target_os = "redox", feature = "sim")), allow(dead_code))]
fn run_with<T: Transport + Clone>(cli: &Cli, t: T, target: Target, wait: impl FnOnce(&[OpenPath]), out: &mut dyn std::io::Write) -> Result<(), String> {
    let ready_file = match &cli.cmd {
        Cmd::Stat(a) => a.target.ready_file.clone(),
        Cmd::Record(a) => a.target.ready_file.clone(),
        Cmd::List(_) => None,
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
            let paths = stat_paths(&a.events, target, a.pinned, a.kernel).map_err(|e| e.to_string())?;
            let rows = stat(t, &paths, || wait(&paths))?;
            let _ = write!(out, "{}", format_stat(&rows));
        }
        Cmd::Record(a) => {
            let paths = record_paths(a, target).map_err(|e| e.to_string())?;
            let recorded = record(t, &paths, a.wants_summary() && !a.no_rw_split, || wait(&paths))?;
            for r in merged_records(&recorded) {
                let _ = writeln!(out, "{}", format_record(&r));
            }
            for (path, r) in paths.iter().zip(&recorded) {
                let _ = writeln!(out, "# {} records, {} hits, {} lost: {}", r.records.len(), r.count.value, r.count.lost, path);
            }
            if a.wants_summary() {
                let _ = write!(out, "{}", format_ip_stats(&recorded));
            }
        }
        Cmd::List(_) => return Err("list is not a watch".into()),
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

#[cfg(target_os = "redox")]
fn system_list(a: &ListArgs, out: &mut dyn std::io::Write) -> Result<(), String> {
    let text = list_output(&libhwbp::redox::RedoxTransport, a.raw)?;
    let _ = write!(out, "{text}");
    Ok(())
}

#[cfg(not(target_os = "redox"))]
fn system_list(_: &ListArgs, _: &mut dyn std::io::Write) -> Result<(), String> {
    Err("/scheme/hwbp exists only on Redox; on this host use --sim".into())
}

#[cfg(all(feature = "sim", not(target_os = "redox")))]
fn sim_list(a: &ListArgs, out: &mut dyn std::io::Write) -> Result<(), String> {
    let demo = crate::demo::ListDemo::new().map_err(|e| format!("setting up the demo: {e}"))?;
    let text = demo.as_uid(a.sim_uid, |t| list_output(t, a.raw))?;
    let _ = write!(out, "{text}");
    Ok(())
}

#[cfg(not(all(feature = "sim", not(target_os = "redox"))))]
fn sim_list(_: &ListArgs, _: &mut dyn std::io::Write) -> Result<(), String> {
    Err(if cfg!(target_os = "redox") { "--sim is for the host; on Redox drop it" } else { "this hwbp was built without the `sim` feature" }.into())
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
        for round in 0..stores {
            crate::demo::workload_round(&mut p, paths, round);
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
