//! Helpers for the scheme tests: a server on the simulated kernel, driven
//! through `redox_scheme::scheme::SchemeSync` only.
#![allow(dead_code)]

use std::cell::RefCell;

use hwbpd::scheme::ROOT_HANDLE;
use hwbpd::sim::dr_model::MemAccess;
use hwbpd::sim::Tid;
use hwbpd::{Config, HwbpScheme, Pid, SimKernel, Uid};
use libhwbp::abi::{CountRecord, EventRecord, COUNT_RECORD_SIZE, EVENT_RECORD_SIZE};
use redox_scheme::scheme::SchemeSync;
use redox_scheme::OpenResult;
use syscall::flag::O_NONBLOCK;

pub const USER: Uid = 1000;
pub const OTHER_USER: Uid = 1001;
pub const ROOT: Uid = 0;

pub type Scheme = HwbpScheme<SimKernel>;

pub fn server(cpus: u32) -> Scheme {
    init_logger();
    HwbpScheme::new(SimKernel::new(cpus), Config::default())
}

pub fn server_with(cpus: u32, config: Config) -> Scheme {
    init_logger();
    HwbpScheme::new(SimKernel::new(cpus), config)
}

/// A task of `uid` with its main thread, running on `cpu`.
pub fn task_on(s: &mut Scheme, uid: Uid, cpu: u32) -> (Pid, Tid) {
    let sim = s.kernel_mut();
    let pid = sim.spawn(uid);
    let tid = sim.main_thread(pid).unwrap();
    sim.switch(cpu, Some(tid)).unwrap();
    (pid, tid)
}

pub fn open(s: &mut Scheme, pid: Pid, uid: Uid, path: &str) -> Result<usize, i32> {
    open_flags(s, pid, uid, path, 0)
}

pub fn open_flags(s: &mut Scheme, pid: Pid, uid: Uid, path: &str, flags: usize) -> Result<usize, i32> {
    let ctx = hwbpd::caller_ctx(pid as usize, uid, uid);
    match s.openat(ROOT_HANDLE, path, flags, flags as u32, &ctx) {
        Ok(OpenResult::ThisScheme { number, .. }) => Ok(number),
        Ok(other) => panic!("unexpected open result {other:?}"),
        Err(e) => Err(e.errno),
    }
}

pub fn count(s: &mut Scheme, fd: usize) -> CountRecord {
    let mut buf = [0u8; COUNT_RECORD_SIZE];
    let n = s.read(fd, &mut buf, 0, 0, &hwbpd::caller_ctx(1, ROOT, 0)).expect("count read");
    assert_eq!(n, COUNT_RECORD_SIZE);
    CountRecord::from_bytes(&buf)
}

pub fn command(s: &mut Scheme, fd: usize, cmd: &str) -> Result<usize, i32> {
    s.write(fd, cmd.as_bytes(), 0, 0, &hwbpd::caller_ctx(1, ROOT, 0)).map_err(|e| e.errno)
}

pub fn events(s: &mut Scheme, fd: usize) -> usize {
    match s.dup(fd, libhwbp::abi::EVENTS_DUP_NAME.as_bytes(), &hwbpd::caller_ctx(1, ROOT, 0)) {
        Ok(OpenResult::ThisScheme { number, .. }) => number,
        other => panic!("dup events: {other:?}"),
    }
}

/// One read of up to `max` records; Err(errno) when nothing is queued.
pub fn read_events(s: &mut Scheme, efd: usize, max: usize, nonblock: bool) -> Result<Vec<EventRecord>, i32> {
    let mut buf = vec![0u8; max * EVENT_RECORD_SIZE];
    let flags = if nonblock { O_NONBLOCK as u32 } else { 0 };
    let n = s.read(efd, &mut buf, 0, flags, &hwbpd::caller_ctx(1, ROOT, 0)).map_err(|e| e.errno)?;
    assert_eq!(n % EVENT_RECORD_SIZE, 0);
    Ok(EventRecord::decode_all(&buf[..n]).collect())
}

pub fn fpath(s: &mut Scheme, fd: usize) -> String {
    let mut buf = [0u8; 512];
    let n = s.fpath(fd, &mut buf, &hwbpd::caller_ctx(1, ROOT, 0)).expect("fpath");
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

pub fn close(s: &mut Scheme, fd: usize) {
    s.on_close(fd);
}

pub fn write(s: &mut Scheme, tid: Tid, addr: u64, size: u64) {
    s.kernel_mut().run(tid, MemAccess::write(addr, size)).unwrap();
}

pub fn read(s: &mut Scheme, tid: Tid, addr: u64, size: u64) {
    s.kernel_mut().run(tid, MemAccess::read(addr, size)).unwrap();
}

pub fn exec(s: &mut Scheme, tid: Tid, addr: u64) {
    s.kernel_mut().run(tid, MemAccess::exec(addr)).unwrap();
}

/// Switch every CPU to idle and back: after it, DR7 of every CPU reflects
/// only what is still planned.
pub fn armed_after_switch(sim: &mut SimKernel) -> u32 {
    sim.idle_all();
    sim.armed_slots()
}

// ---- a logger that captures, per test thread, the lines logged ----------

thread_local! {
    static LINES: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if record.target().starts_with("hwbpd") && record.level() <= log::Level::Warn {
            LINES.with(|l| l.borrow_mut().push(record.args().to_string()));
        }
    }
    fn flush(&self) {}
}

static CAPTURE: Capture = Capture;

pub fn init_logger() {
    let _ = log::set_logger(&CAPTURE);
    log::set_max_level(log::LevelFilter::Info);
}

/// The warnings hwbpd logged on this thread since the last call.
pub fn take_log() -> Vec<String> {
    LINES.with(|l| std::mem::take(&mut *l.borrow_mut()))
}
