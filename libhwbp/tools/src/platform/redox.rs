//! The Redox platform: the real `/scheme/hwbp`, with real loads, stores
//! and calls in this process (and its threads), a child process for the
//! child checks, a non-root child process for the permission checks as
//! root, Redox's event queue for readiness, and (given `--hwbpd-pid` and
//! `--hwbpd-cmd`) hwbpd killed and started again.
//!
//! The selftest binary re-executes itself for the helpers:
//! `hwbp-selftest --child` (stores on request) and
//! `hwbp-selftest --open-as-user` (opens the paths read from stdin and
//! prints one errno per line), see [`helper_main`].

use std::cell::UnsafeCell;
use std::hint::black_box;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use libhwbp::redox::RedoxTransport;
use libhwbp::Transport;

use super::{ChildTask, Platform, ReadyQueue, CODE_TARGETS, SCRATCH_BYTES};
use crate::selftest::Args;

/// Uid the permission checks run as.
const USER_UID: u32 = 1000;

/// A page of its own: nothing but the selftest's watched words is ever
/// stored on it.
#[repr(C, align(4096))]
struct Scratch(UnsafeCell<[u8; SCRATCH_BYTES as usize]>);

// SAFETY: the scratch is only accessed through volatile accesses of plain
// integers via raw pointers (no references are formed); threads may store
// to the same word at once, which is what the thread checks are for, and
// any value is valid.
unsafe impl Sync for Scratch {}

static SCRATCH: Scratch = Scratch(UnsafeCell::new([0; SCRATCH_BYTES as usize]));

fn scratch_base() -> u64 {
    SCRATCH.0.get() as u64
}

/// Volatile access of `size` bytes at `addr`, which must lie in SCRATCH.
fn access(addr: u64, size: u64, store: bool) {
    let base = scratch_base();
    assert!(addr >= base && addr + size <= base + SCRATCH_BYTES && addr % size == 0, "access outside the scratch");
    let p = addr as usize as *mut u8;
    // SAFETY: the assertion keeps the access inside SCRATCH and aligned to
    // its size; the bytes are plain integers, any value is valid (see
    // `Scratch`).
    unsafe {
        match (size, store) {
            (1, true) => p.write_volatile(0x5a),
            (1, false) => drop(black_box(p.read_volatile())),
            (2, true) => p.cast::<u16>().write_volatile(0x5a5a),
            (2, false) => drop(black_box(p.cast::<u16>().read_volatile())),
            (4, true) => p.cast::<u32>().write_volatile(0x5a5a_5a5a),
            (4, false) => drop(black_box(p.cast::<u32>().read_volatile())),
            (8, true) => p.cast::<u64>().write_volatile(0x5a5a_5a5a_5a5a_5a5a),
            (8, false) => drop(black_box(p.cast::<u64>().read_volatile())),
            _ => panic!("access size {size}"),
        }
    }
}

#[inline(never)]
extern "C" fn code0() -> u64 {
    black_box(0)
}
#[inline(never)]
extern "C" fn code1() -> u64 {
    black_box(1)
}
#[inline(never)]
extern "C" fn code2() -> u64 {
    black_box(2)
}
#[inline(never)]
extern "C" fn code3() -> u64 {
    black_box(3)
}

const CODE: [extern "C" fn() -> u64; CODE_TARGETS] = [code0, code1, code2, code3];

/// Work for the background thread: (addr, size, n, delay).
type Job = (u64, u64, u64, Duration);

pub struct RedoxPlatform {
    root: bool,
    other_pid: Option<u64>,
    hwbpd_pid: Option<u64>,
    hwbpd_cmd: Option<(String, Vec<String>)>,
    /// The background thread, started before any watch opens (so it is
    /// watched whether or not new threads are).
    jobs: Sender<Job>,
    done: Receiver<()>,
    pending: usize,
}

impl RedoxPlatform {
    pub fn new(args: &Args) -> RedoxPlatform {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (done_tx, done) = mpsc::channel();
        // If it cannot start, `store_in_background` reports it (the
        // channel is closed).
        let _ = std::thread::Builder::new().spawn(move || {
            for (addr, size, n, delay) in job_rx {
                std::thread::sleep(delay);
                for _ in 0..n {
                    access(addr, size, true);
                }
                if done_tx.send(()).is_err() {
                    return;
                }
            }
        });
        RedoxPlatform {
            root: !args.non_root,
            other_pid: args.other_pid.or(if args.non_root { Some(1) } else { None }),
            hwbpd_pid: args.hwbpd_pid,
            hwbpd_cmd: args.hwbpd_cmd.clone().map(|c| (c, args.hwbpd_args.clone())),
            jobs,
            done,
            pending: 0,
        }
    }

    /// Whether hwbpd answers an open (and the breakpoint was closed again).
    fn hwbpd_serves(&self) -> bool {
        let path = format!("self/mem:{:#x}/8:w", scratch_base() + SCRATCH_BYTES - 8);
        match RedoxTransport.open(&path, false) {
            Ok(h) => {
                let _ = RedoxTransport.close(h);
                true
            }
            Err(_) => false,
        }
    }
}

fn within(timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    ok()
}

impl Platform for RedoxPlatform {
    type T = RedoxTransport;

    fn describe(&self) -> String {
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        format!("redox: /scheme/hwbp, selftest pid {} uid {uid}", std::process::id())
    }
    fn transport(&self) -> RedoxTransport {
        RedoxTransport
    }
    fn own_pid(&self) -> u64 {
        u64::from(std::process::id())
    }
    fn is_root(&self) -> bool {
        self.root
    }
    fn cpus(&self) -> Option<u32> {
        // Not known reliably here (std's count may not be implemented on
        // Redox): the checks then use a CPU number no machine of ours has.
        None
    }
    fn scratch(&self) -> u64 {
        scratch_base()
    }
    fn load(&mut self, addr: u64, size: u64) {
        access(addr, size, false);
    }
    fn store(&mut self, addr: u64, size: u64) {
        access(addr, size, true);
    }
    fn code_addr(&self, i: usize) -> u64 {
        CODE[i] as usize as u64
    }
    fn execute(&mut self, i: usize) {
        black_box(black_box(CODE[i])());
    }
    fn let_time_pass(&mut self, ns: u64) {
        std::thread::sleep(Duration::from_nanos(ns));
    }
    fn new_threads_store(&mut self, addr: u64, threads: usize, stores_each: u64) -> io::Result<()> {
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|_| {
                    std::thread::Builder::new().spawn_scoped(s, move || {
                        for _ in 0..stores_each {
                            access(addr, 8, true);
                        }
                    })
                })
                .collect::<io::Result<_>>()?;
            for h in hs {
                h.join().map_err(|_| io::Error::other("a storing thread panicked"))?;
            }
            Ok(())
        })
    }
    fn store_in_background(&mut self, addr: u64, size: u64, n: u64, delay_ns: u64) -> io::Result<()> {
        self.jobs.send((addr, size, n, Duration::from_nanos(delay_ns))).map_err(|_| io::Error::other("the background thread is gone"))?;
        self.pending += 1;
        Ok(())
    }
    fn read_timeout(&mut self, h: usize, buf: &mut [u8], timeout_ns: u64) -> io::Result<usize> {
        // The read runs on a thread of its own, so a read that never
        // returns costs that thread, not the selftest.
        let (tx, rx) = mpsc::channel();
        let len = buf.len();
        std::thread::Builder::new().spawn(move || {
            let mut b = vec![0u8; len];
            let r = RedoxTransport.read(h, &mut b).map(|n| {
                b.truncate(n);
                b
            });
            let _ = tx.send(r);
        })?;
        match rx.recv_timeout(Duration::from_nanos(timeout_ns)) {
            Ok(Ok(b)) => {
                buf[..b.len()].copy_from_slice(&b);
                Ok(b.len())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "the read did not return")),
        }
    }
    fn join_background(&mut self) -> io::Result<()> {
        while self.pending > 0 {
            self.done.recv_timeout(Duration::from_secs(10)).map_err(|_| io::Error::other("the background thread did not finish"))?;
            self.pending -= 1;
        }
        Ok(())
    }
    fn event_queue(&mut self) -> Option<io::Result<Box<dyn ReadyQueue>>> {
        Some(RedoxQueue::new().map(|q| Box::new(q) as Box<dyn ReadyQueue>))
    }
    fn spawn_child(&mut self) -> io::Result<Box<dyn ChildTask>> {
        let mut child = Command::new(std::env::current_exe()?).arg("--child").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
        let stdin = child.stdin.take().ok_or_else(|| io::Error::other("no child stdin"))?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or_else(|| io::Error::other("no child stdout"))?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("ready ")
            .and_then(libhwbp::abi::event::parse_u64)
            .ok_or_else(|| io::Error::other(format!("child said {line:?}")))?;
        Ok(Box::new(RedoxChild { pid: u64::from(child.id()), addr, child, stdin, stdout }))
    }
    fn open_as_user(&mut self, paths: &[String]) -> io::Result<Vec<i32>> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--open-as-user")
            .uid(USER_UID)
            .gid(USER_UID)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        {
            let mut stdin = child.stdin.take().ok_or_else(|| io::Error::other("no child stdin"))?;
            for p in paths {
                writeln!(stdin, "{p}")?;
            }
        }
        let out = child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let errnos: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if errnos.len() != paths.len() {
            return Err(io::Error::other(format!("user helper answered {errnos:?} for {} paths", paths.len())));
        }
        Ok(errnos)
    }
    fn other_users_pid(&mut self) -> Option<u64> {
        self.other_pid
    }
    fn restart_server(&mut self, leaked: Vec<usize>) -> Option<io::Result<()>> {
        let pid = self.hwbpd_pid?;
        let (cmd, args) = self.hwbpd_cmd.clone()?;
        Some((|| {
            let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("hwbpd pid out of range"))?;
            // SAFETY: kill has no memory preconditions.
            if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
                return Err(io::Error::last_os_error());
            }
            if !within(Duration::from_secs(5), || !self.hwbpd_serves()) {
                return Err(io::Error::other("hwbpd still serves 5 s after SIGKILL"));
            }
            for h in leaked {
                // Handles of the dead server: closing them only frees the fds.
                let _ = RedoxTransport.close(h);
            }
            let child = Command::new(&cmd).args(&args).stdin(Stdio::null()).spawn()?;
            self.hwbpd_pid = Some(u64::from(child.id()));
            // Not waited for: the new hwbpd outlives the selftest.
            drop(child);
            if !within(Duration::from_secs(10), || self.hwbpd_serves()) {
                return Err(io::Error::other(format!("{cmd} did not serve /scheme/hwbp within 10 s")));
            }
            Ok(())
        })())
    }
    fn time_stores(&mut self, addr: u64, n: u64) -> Option<Duration> {
        let start = Instant::now();
        for _ in 0..n {
            access(addr, 8, true);
        }
        Some(start.elapsed())
    }
}

/// Redox's event queue (`redox_event`), with a monotonic timer
/// (`/scheme/time/4`, CLOCK_MONOTONIC = 4 on Redox) on it for the timeout.
struct RedoxQueue {
    queue: event::RawEventQueue,
    timer: usize,
}

/// The timer's user data on the queue (stream handles use their own fd).
const TIMER_TOKEN: usize = usize::MAX;

impl RedoxQueue {
    fn new() -> io::Result<RedoxQueue> {
        let os = |e: libredox::error::Error| io::Error::from_raw_os_error(e.errno());
        // redox_event's errors are libredox 0.2's, ours 0.1's: both carry the errno.
        let queue = event::RawEventQueue::new().map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        let timer = libredox::call::open("/scheme/time/4", libc::O_RDWR | libc::O_CLOEXEC, 0).map_err(os)?;
        queue.subscribe(timer, TIMER_TOKEN, event::EventFlags::READ).map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        Ok(RedoxQueue { queue, timer })
    }

    fn now_ns(&self) -> io::Result<u64> {
        let mut b = [0u8; 16];
        libredox::call::read(self.timer, &mut b).map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        let sec = i64::from_le_bytes(b[..8].try_into().unwrap_or_default());
        let nsec = i32::from_le_bytes(b[8..12].try_into().unwrap_or_default());
        Ok((sec.max(0) as u64) * 1_000_000_000 + nsec.max(0) as u64)
    }
}

impl ReadyQueue for RedoxQueue {
    fn register(&mut self, h: usize) -> io::Result<()> {
        self.queue.subscribe(h, h, event::EventFlags::READ).map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }
    fn wait(&mut self, timeout_ns: u64) -> io::Result<Vec<usize>> {
        let deadline = self.now_ns()?.saturating_add(timeout_ns);
        let mut ts = [0u8; 16];
        ts[..8].copy_from_slice(&((deadline / 1_000_000_000) as i64).to_le_bytes());
        ts[8..12].copy_from_slice(&((deadline % 1_000_000_000) as i32).to_le_bytes());
        libredox::call::write(self.timer, &ts).map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        loop {
            let ev = self.queue.next_event().map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
            if ev.user_data != TIMER_TOKEN {
                return Ok(vec![ev.user_data]);
            }
            // A timer event of an earlier wait is stale until the deadline.
            if self.now_ns()? >= deadline {
                return Ok(Vec::new());
            }
        }
    }
}

impl Drop for RedoxQueue {
    fn drop(&mut self) {
        let _ = libredox::call::close(self.timer);
    }
}

struct RedoxChild {
    pid: u64,
    addr: u64,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl RedoxChild {
    fn ask(&mut self, cmd: &str) -> io::Result<()> {
        writeln!(self.stdin, "{cmd}")?;
        self.stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        if line.trim() == "done" {
            Ok(())
        } else {
            Err(io::Error::other(format!("child answered {line:?} to {cmd}")))
        }
    }
}

impl ChildTask for RedoxChild {
    fn pid(&self) -> u64 {
        self.pid
    }
    fn addr(&self) -> u64 {
        self.addr
    }
    fn store(&mut self, n: u64) -> io::Result<()> {
        self.ask(&format!("store {n}"))
    }
    fn exit(mut self: Box<Self>) -> io::Result<()> {
        self.ask("exit")?;
        self.child.wait()?;
        Ok(())
    }
}

/// The helper modes of the selftest binary; returns `None` if `arg` is
/// not one of them.
pub fn helper_main(arg: &str) -> Option<i32> {
    match arg {
        "--child" => Some(child_main()),
        "--open-as-user" => Some(open_as_user_main()),
        _ => None,
    }
}

fn child_main() -> i32 {
    let addr = scratch_base();
    println!("ready {addr:#x}");
    let stdin = io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { return 1 };
        if line == "exit" {
            println!("done");
            return 0;
        }
        if let Some(n) = line.strip_prefix("store ").and_then(|n| n.parse::<u64>().ok()) {
            for _ in 0..n {
                access(addr, 4, true);
            }
            println!("done");
        } else {
            println!("unknown {line}");
        }
    }
    0
}

fn open_as_user_main() -> i32 {
    let stdin = io::stdin();
    for line in stdin.lock().lines() {
        let Ok(path) = line else { return 1 };
        let errno = match RedoxTransport.open(&path, false) {
            Ok(h) => {
                let _ = RedoxTransport.close(h);
                0
            }
            Err(e) => e.raw_os_error().unwrap_or(-1),
        };
        println!("{errno}");
    }
    0
}
