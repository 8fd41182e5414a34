//! `hwbp`: perf-like `stat` and `record` for hardware watchpoints.
//!
//! ```text
//! hwbp stat   -e mem:0x1000/4:w [-e ...] (-p PID | -C CPU | -a) [--pinned] [--duration-ms N]
//! hwbp record -e mem:0x1000/4:w          (-p PID | -C CPU | -a) [--period N] [--duration-ms N]
//! ```
//! On Redox they talk to `/scheme/hwbp`. On the host, `--sim` runs them
//! against an in-process hwbpd on the simulated kernel, with a simulated
//! task storing to every watched address (`--sim-stores` times each).

use std::fmt::Write as _;

use clap::{Args, Parser, Subcommand};
use libhwbp::abi::{parse_mem_event, CountRecord, EventRecord, OpenPath, Options, PathError, Target};
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

/// Open every path, let `wait` run, then read every count.
pub fn stat<T: Transport + Clone>(t: T, paths: &[OpenPath], wait: impl FnOnce()) -> libhwbp::Result<Vec<(OpenPath, CountRecord)>> {
    let handles = paths.iter().map(|p| Breakpoint::from_path(p).open(t.clone())).collect::<Result<Vec<_>, _>>()?;
    wait();
    handles.iter().map(|h| Ok((*h.requested_path(), h.read_count()?))).collect()
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
pub fn record<T: Transport + Clone>(t: T, path: &OpenPath, wait: impl FnOnce()) -> libhwbp::Result<(Vec<EventRecord>, CountRecord)> {
    let h = Breakpoint::from_path(path).open(t)?;
    let mut ev = h.events()?;
    wait();
    let recs = ev.drain()?;
    Ok((recs, h.read_count()?))
}

/// One line per hit record, like `perf script`.
pub fn format_record(r: &EventRecord) -> String {
    let access = r.access_kind().map_or("?", |a| a.as_str());
    format!("pid {:>6} cpu {:>3} {:>14} ns  hit {:>8}  ip {:#018x}  addr {:#x}:{access}  bp {}", r.pid, r.cpu, r.timestamp_ns, r.hit, r.ip, r.addr, r.id)
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
    match &cli.cmd {
        Cmd::Stat(a) => {
            let paths = stat_paths(&a.events, target, a.pinned).map_err(|e| e.to_string())?;
            let rows = stat(t, &paths, || wait(&paths)).map_err(|e| e.to_string())?;
            let _ = write!(out, "{}", format_stat(&rows));
        }
        Cmd::Record(a) => {
            let path = record_path(a, target).map_err(|e| e.to_string())?;
            let (recs, c) = record(t, &path, || wait(std::slice::from_ref(&path))).map_err(|e| e.to_string())?;
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
