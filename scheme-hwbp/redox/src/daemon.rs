//! hwbpd's main on Redox: one thread, one event queue.
//!
//! Start-up, in order:
//! 1. logger (stderr; level from `HWBPD_LOG`);
//! 2. the `hwbp-control` handle ([`acquire_control`]) and every CPU's plan
//!    handle ([`RedoxKernel::open`]); the TSC is calibrated against the
//!    monotonic clock over [`CALIBRATION`];
//! 3. the scheme socket (`Socket::nonblock`, redox-scheme 0.12: through the
//!    namespace's `scheme-creation-cap`), the rotation timer
//!    (`/scheme/time/4`, `CLOCK_MONOTONIC` = 4 on Redox), the event queue with the
//!    socket, the control handle and the timer on it;
//! 4. the scheme goes public: started by init as a scheme service
//!    (`type = { scheme = "hwbp" }`, `INIT_NOTIFY` set), hwbpd sends init
//!    the scheme's capability fd over the notify pipe and init registers
//!    it as `hwbp` (what base's `daemon::SchemeDaemon::ready_sync_scheme`
//!    does); started by hand, hwbpd registers `hwbp` in its own namespace
//!    (`register_sync_scheme`);
//! 5. privileges: see [`drop_privileges`].
//!
//! Then the loop: a readable control handle means hit records or events
//! (a followed task exited or changed identity): `collect`; the timer:
//! clock sample, `tick` (counts, rotation), re-arm one
//! rotation later, or [`IDLE_TICK_NS`] later while no breakpoint exists
//! (the first one brings the next tick forward). After every event,
//! whatever its source: one batch of requests from the (nonblocking) socket
//! through redox-scheme's `ReadinessBased` wrapper (a request answered
//! EWOULDBLOCK without O_NONBLOCK is parked, not answered), the
//! `post_fevent`s the scheme owes, parked requests retried
//! (`poll_all_requests`: a blocking read of an event stream completes once
//! hits arrived), then responses written.

use std::cell::RefCell;
use std::time::Duration;

use event::{EventFlags as QueueFlags, EventQueue, user_data};
use libredox::Fd;
use libredox::flag::{O_CLOEXEC, O_RDWR};
use redox_scheme::scheme::{SchemeSync, register_sync_scheme};
use redox_scheme::wrappers::ReadinessBased;
use redox_scheme::{Response, SignalBehavior, Socket};
use syscall::CallFlags;

use super::backend::{RedoxKernel, StartError, acquire_control};
use super::sys::{RedoxSys, Sys};
use super::{INIT_NOTIFY_VAR, SCHEME_NAME, logger, parse_notify_fd, timespec};
use hwbpd::scheme::{Config, HwbpScheme};

/// How long the TSC is measured against the monotonic clock at start.
pub const CALIBRATION: Duration = Duration::from_millis(20);
/// Requests read from the socket per batch.
const REQUEST_QUEUE_DEPTH: usize = 32;
/// Timer period while no breakpoint exists: nothing rotates and no task is
/// watched, the tick only drains request bursts (see the loop).
const IDLE_TICK_NS: u64 = 100_000_000;

user_data! {
    enum Source {
        Scheme,
        Hits,
        Timer,
    }
}

/// Why hwbpd stopped.
#[derive(Debug)]
struct Fatal {
    what: &'static str,
    errno: i32,
}

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: errno {}", self.what, self.errno)
    }
}

impl From<StartError> for Fatal {
    fn from(e: StartError) -> Self {
        Fatal { what: e.what, errno: e.errno }
    }
}

trait Context<T> {
    fn or_fatal(self, what: &'static str) -> Result<T, Fatal>;
}

impl<T> Context<T> for Result<T, libredox::error::Error> {
    fn or_fatal(self, what: &'static str) -> Result<T, Fatal> {
        self.map_err(|e| Fatal { what, errno: e.errno() })
    }
}

/// redox_event 0.5 is built on libredox 0.2, whose error is another type.
impl<T> Context<T> for Result<T, event::libredox::error::Error> {
    fn or_fatal(self, what: &'static str) -> Result<T, Fatal> {
        self.map_err(|e| Fatal { what, errno: e.errno() })
    }
}

impl<T> Context<T> for Result<T, syscall::error::Error> {
    fn or_fatal(self, what: &'static str) -> Result<T, Fatal> {
        self.map_err(|e| Fatal { what, errno: e.errno })
    }
}

/// hwbpd's entry point on Redox.
pub fn main() -> ! {
    let level = logger::init();
    log::info!("hwbpd: starting (log level {level})");
    match run() {
        Ok(()) => {
            log::info!("hwbpd: scheme socket closed, exiting");
            std::process::exit(0)
        }
        Err(e) => {
            log::error!("hwbpd: {e}");
            std::process::exit(1)
        }
    }
}

/// Tell init the scheme is ready by handing it the scheme's capability fd
/// (base's `SchemeDaemon::ready_sync_scheme`: a `call` on the notify pipe
/// with `CallFlags::FD` moves the fd to init, which registers the name).
fn notify_init(pipe: usize, socket: &Socket, scheme: &mut impl SchemeSync) -> Result<(), Fatal> {
    let cap_id = scheme.scheme_root().or_fatal("scheme_root")?;
    let cap_fd = socket.create_this_scheme_fd(0, cap_id, 0, 0).or_fatal("creating the scheme capability fd")?;
    let pipe = Fd::new(pipe);
    let sent = pipe.call_wo(&cap_fd.to_ne_bytes(), CallFlags::FD, &[]);
    if sent.is_err() {
        // Not moved: ours to close.
        drop(Fd::new(cap_fd));
    }
    sent.map(|_| ()).or_fatal("handing the scheme to init (INIT_NOTIFY)")
    // `pipe` closes here: init sees the readiness, and nothing else is sent.
}

/// Arm the one-shot timer for absolute monotonic time `due_ns`.
fn arm(timer: &Fd, due_ns: u64) -> Result<(), Fatal> {
    timer.write(&timespec::encode(due_ns)).map(|_| ()).or_fatal("arming the rotation timer")
}

/// The uid and gid hwbpd runs as once its handles are open: an id no
/// account of base's config uses (root 0, user 1000, group sudo 1),
/// conventionally `nobody`. `HWBPD_KEEP_ROOT=1` skips the drop (debugging).
pub const DAEMON_ID: u32 = 65_534;
/// Set to `1` to stay root.
const KEEP_ROOT_VAR: &str = "HWBPD_KEEP_ROOT";

unsafe extern "C" {
    // relibc (POSIX, implemented through procmgr on Redox).
    fn setresgid(rgid: i32, egid: i32, sgid: i32) -> i32;
    fn setresuid(ruid: i32, euid: i32, suid: i32) -> i32;
}

/// Give up root once everything that needs it is open.
///
/// Root is needed for one thing only: taking `hwbp-control` (the kernel
/// checks uid 0 at the dup). Everything after goes through handles already
/// held (CPU plans, `pid-<pid>` dup'ed on the control handle, the hit and
/// event stream, the timer, the event queue, the scheme socket), except
/// re-opening `/scheme/sys/context` (a task's euid at open), which the
/// kernel lets any uid read. So hwbpd switches to [`DAEMON_ID`] (real,
/// effective and saved: no way back).
///
/// The namespace is kept: `sys:context` must be reopened at every open of
/// a task breakpoint (the kernel snapshots it per open), so `setrens(0, 0)` (the null namespace
/// drivers enter after start-up) would cut hwbpd off; a namespace holding
/// only `sys` (`mkns`) is the next step, once it can be tried on a running
/// system. Nothing is inherited by anyone: hwbpd never spawns, its fds are
/// O_CLOEXEC.
fn drop_privileges() {
    if std::env::var(KEEP_ROOT_VAR).is_ok_and(|v| v == "1") {
        return log::warn!("hwbpd: {KEEP_ROOT_VAR}=1: staying root");
    }
    let id = DAEMON_ID as i32;
    // SAFETY: plain libc calls with integer arguments; gid first, while
    // still root.
    let (gid_rc, uid_rc) = unsafe { (setresgid(id, id, id), setresuid(id, id, id)) };
    if gid_rc != 0 || uid_rc != 0 {
        let err = std::io::Error::last_os_error();
        return log::warn!("hwbpd: dropping root to uid/gid {DAEMON_ID} failed ({err}); staying root");
    }
    match libredox::call::geteuid() {
        Ok(euid) if euid == DAEMON_ID as usize => log::info!("hwbpd: running as uid/gid {DAEMON_ID}"),
        other => log::warn!("hwbpd: after dropping root, geteuid() says {other:?}"),
    }
}

fn run() -> Result<(), Fatal> {
    let notify_pipe = match std::env::var(INIT_NOTIFY_VAR) {
        Ok(v) => Some(parse_notify_fd(&v).ok_or(Fatal { what: "INIT_NOTIFY is not an fd number", errno: 0 })?),
        Err(_) => None,
    };

    let control = acquire_control(&RedoxSys)?;
    let mut kernel = RedoxKernel::open(RedoxSys, control)?;
    std::thread::sleep(CALIBRATION);
    kernel.sample_clock();
    log::info!(
        "hwbpd: {} CPUs, TSC ~{} MHz",
        hwbpd::kernel::Kernel::cpu_count(&kernel),
        kernel.tsc_hz().unwrap_or(0) / 1_000_000
    );
    let control_fd = kernel.control_fd();

    let socket = Socket::nonblock().or_fatal("creating the scheme socket")?;
    let scheme = RefCell::new(HwbpScheme::new(kernel, Config::default()));
    let rotation_ns = scheme.borrow().config().rotation_ns;

    let timer_path = format!("/scheme/time/{}", timespec::CLOCK_MONOTONIC);
    let timer = Fd::open(&timer_path, O_CLOEXEC | O_RDWR, 0).or_fatal("opening the monotonic timer")?;
    let queue = EventQueue::<Source>::new().or_fatal("creating the event queue")?;
    queue.subscribe(socket.inner().raw(), Source::Scheme, QueueFlags::READ).or_fatal("watching the socket")?;
    queue.subscribe(control_fd, Source::Hits, QueueFlags::READ).or_fatal("watching the hit stream")?;
    queue.subscribe(timer.raw(), Source::Timer, QueueFlags::READ).or_fatal("watching the timer")?;
    let mut due = RedoxSys.monotonic_ns().saturating_add(rotation_ns);
    arm(&timer, due)?;

    match notify_pipe {
        Some(pipe) => notify_init(pipe, &socket, &mut *scheme.borrow_mut())?,
        None => register_sync_scheme(&socket, SCHEME_NAME, &mut *scheme.borrow_mut())
            .or_fatal("registering the hwbp scheme")?,
    }
    log::info!("hwbpd: serving /scheme/{SCHEME_NAME} (rotation every {} us)", rotation_ns / 1000);
    drop_privileges();

    let mut readiness = ReadinessBased::new(&socket, REQUEST_QUEUE_DEPTH);
    let mut was_busy = false;
    loop {
        let event = queue.next_event().or_fatal("waiting for events")?;
        match event.user_data {
            // Served below, after every event.
            Source::Scheme => {}
            Source::Hits => {
                scheme.borrow_mut().collect();
            }
            Source::Timer => {
                let now = RedoxSys.monotonic_ns();
                if now >= due {
                    let mut s = scheme.borrow_mut();
                    s.kernel_mut().sample_clock();
                    s.tick();
                    let period = if s.breakpoint_count() > 0 { rotation_ns } else { IDLE_TICK_NS };
                    due = timespec::next_deadline(due, period, now);
                }
                // The timer is one-shot: whatever woke us (the deadline, or
                // an event of an earlier arming that came before it), it is
                // armed for `due` again. Re-arming only after a tick let a
                // timer event that arrived before `due` end rotation for
                // good (multiplexed breakpoints then never took turns:
                // seen in 2 of 4 Redox system runs).
                arm(&timer, due)?;
            }
        }
        // Requests: one batch per event, whatever the source. A burst
        // larger than the batch is finished by later events, at the latest
        // the next rotation tick, so none waits in the socket unseen. An
        // empty read counts as end of file only when the socket itself
        // reported readable (an idle nonblocking read is EWOULDBLOCK, which
        // the wrapper already treats as "still open").
        let open = readiness.read_requests().or_fatal("reading requests")?;
        if !open && event.user_data == Source::Scheme {
            return Ok(());
        }
        readiness.process_requests(|| scheme.borrow_mut());
        // The first breakpoint ends the idle period: rotate from now on.
        let busy = scheme.borrow().breakpoint_count() > 0;
        if busy && !was_busy {
            let now = RedoxSys.monotonic_ns();
            if due > now.saturating_add(rotation_ns) {
                due = now.saturating_add(rotation_ns);
                arm(&timer, due)?;
            }
        }
        was_busy = busy;
        for notice in scheme.borrow_mut().take_fevents() {
            socket
                .write_response(Response::post_fevent(notice.handle, notice.flags.bits()), SignalBehavior::Restart)
                .or_fatal("posting an fevent")?;
        }
        readiness.poll_all_requests(|| scheme.borrow_mut()).or_fatal("retrying parked requests")?;
        if !readiness.write_responses().or_fatal("writing responses")? {
            return Ok(());
        }
    }
}
