//! The Redox platform: the real `/scheme/hwbp`, with real loads, stores
//! and calls in this process, a child process for the child-watch check,
//! and a non-root child process for the permission checks.
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
use std::time::Duration;

use libhwbp::redox::RedoxTransport;
use libhwbp::Transport;

use super::{ChildTask, Platform, CODE_TARGETS, SCRATCH_BYTES};

/// Uid the permission checks run as.
const USER_UID: u32 = 1000;

#[repr(C, align(64))]
struct Scratch(UnsafeCell<[u8; SCRATCH_BYTES as usize]>);

// SAFETY: only the selftest's single thread touches the scratch, and only
// through volatile accesses of plain bytes (no references are formed).
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
    // its size; the bytes are plain integers, any value is valid; nothing
    // else accesses SCRATCH concurrently (see `Scratch`).
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

pub struct RedoxPlatform;

impl Platform for RedoxPlatform {
    type T = RedoxTransport;

    fn describe(&self) -> String {
        format!("redox: /scheme/hwbp, selftest pid {}", std::process::id())
    }
    fn transport(&self) -> RedoxTransport {
        RedoxTransport
    }
    fn own_pid(&self) -> u64 {
        u64::from(std::process::id())
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
    fn restart_server(&mut self, _open: usize) -> Option<io::Result<u32>> {
        // hwbpd is an init service: the selftest has no handle on it to
        // kill and restart it, and reading the debug registers needs the
        // kernel. Checked on the host (simulated kernel) only.
        None
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
