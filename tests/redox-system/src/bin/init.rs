//! hwbp-system-init: the first program after bootstrap (initfs `bin/init`)
//! in the Redox system test. See tests/redox-system/README.md.
//!
//! 1. Serves `/scheme/rand` itself (TEST-ONLY stand-in for randd: std's
//!    HashMap seeds need it, and this boot has no randd; the bytes come from
//!    splitmix64 seeded by rdtsc, which is not a secure random source).
//! 2. Starts hwbpd the way `cookbook/recipes/hwbpd/20_hwbpd.service` says
//!    (`type = { scheme = "hwbp" }`): `INIT_NOTIFY=<fd>` of a pipe, hwbpd
//!    hands its scheme capability back over it, init registers `hwbp` in
//!    its namespace.
//! 3. Runs hwbp-selftest as root and as uid 1000, `hwbp stat` and
//!    `hwbp record` on hwbp-system-target watched by pid (with `hwbp list`
//!    as root and as uid 1000 while the stat's watch is open, and
//!    `hwbp record --kernel` on a word the kernel writes), then kills hwbpd,
//!    checks through `/scheme/sys/hwbp-control` that nothing is left armed
//!    on the target, restarts hwbpd and checks a new watch counts only its
//!    own hits.
//! 4. Prints `ok - …` / `FAIL - …` per check, then
//!    `hwbp-system: N passed, M failed`, and powers off through
//!    `/scheme/sys/kstop`. It never exits (the kernel must keep an init).
//!
//! Bench mode (sys:env `HWBP_SYSTEM_BENCH=1`, `run.sh --bench`): steps 1
//! and 2 (hwbpd logging errors only), then `hwbp-bench` instead of step 3
//! (tests/linux-compare/README.md), then step 4.

#[cfg(not(target_os = "redox"))]
fn main() {
    eprintln!("hwbp-system-init runs only on Redox, as init (see tests/redox-system/README.md)");
    std::process::exit(2);
}

#[cfg(target_os = "redox")]
fn main() {
    // `--exec-hwbpd`: how hwbp-selftest restarts hwbpd here (`--hwbpd-cmd`).
    if std::env::args().nth(1).as_deref() == Some(redox::EXEC_HWBPD) {
        redox::exec_hwbpd()
    }
    redox::main()
}

#[cfg(target_os = "redox")]
mod redox {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    use std::process::{Child, ChildStdin, Command, Stdio};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use hwbp_redox_system::{
        SplitMix, Tally, TargetReady, count_records, last_counts, parse_done, parse_ip_summary,
        parse_ready, parse_record_summary, parse_stat, parse_thread_ids, pids_named,
    };
    use libhwbp::abi::{BpState, Listing, Placement};
    use libhwbp::Breakpoint;
    use libhwbp::abi::Target;
    use libhwbp::redox::RedoxTransport;
    use redox_scheme::scheme::{SchemeState, SchemeSync, register_sync_scheme};
    use redox_scheme::{CallerCtx, OpenResult, RequestKind, SignalBehavior, Socket};
    use syscall::data::Stat;
    use syscall::error::{EINTR, Error, Result as SysResult};
    use syscall::schemev2::NewFdFlags;

    const BIN: &str = "/scheme/initfs/bin";
    /// The helper mode of this binary that hwbp-selftest runs to restart hwbpd.
    pub const EXEC_HWBPD: &str = "--exec-hwbpd";
    const USER_ID: u32 = 1000;

    fn say(line: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    struct Run {
        tally: Tally,
        t0: Instant,
    }

    impl Run {
        fn check(&mut self, ok: bool, what: impl AsRef<str>) -> bool {
            say(&self.tally.check(ok, what.as_ref()));
            ok
        }
        fn fail(&mut self, what: impl AsRef<str>) {
            self.check(false, what);
        }
        fn elapsed(&self) -> f64 {
            self.t0.elapsed().as_secs_f64()
        }
    }

    // ---- /scheme/rand (TEST-ONLY) -------------------------------------

    /// TEST-ONLY /scheme/rand: splitmix64 seeded from rdtsc. Not random
    /// enough for anything but HashMap seeds in a test boot.
    struct TestOnlyRand {
        rng: SplitMix,
        next_id: usize,
    }

    impl SchemeSync for TestOnlyRand {
        fn scheme_root(&mut self) -> SysResult<usize> {
            Ok(0)
        }
        fn openat(
            &mut self,
            _fd: usize,
            _path: &str,
            _flags: usize,
            _fcntl: u32,
            _ctx: &CallerCtx,
        ) -> SysResult<OpenResult> {
            self.next_id += 1;
            Ok(OpenResult::ThisScheme {
                number: self.next_id,
                flags: NewFdFlags::empty(),
            })
        }
        fn read(
            &mut self,
            _id: usize,
            buf: &mut [u8],
            _off: u64,
            _fcntl: u32,
            _ctx: &CallerCtx,
        ) -> SysResult<usize> {
            // SAFETY: rdtsc has no preconditions.
            let tsc = unsafe { core::arch::x86_64::_rdtsc() };
            self.rng.0 ^= tsc;
            self.rng.fill(buf);
            Ok(buf.len())
        }
        fn fstat(&mut self, _id: usize, stat: &mut Stat, _ctx: &CallerCtx) -> SysResult<()> {
            stat.st_mode = syscall::MODE_CHR | 0o444;
            Ok(())
        }
        fn fcntl(
            &mut self,
            _id: usize,
            _cmd: usize,
            _arg: usize,
            _ctx: &CallerCtx,
        ) -> SysResult<usize> {
            Ok(0)
        }
        fn fpath(&mut self, _id: usize, buf: &mut [u8], _ctx: &CallerCtx) -> SysResult<usize> {
            let p = b"/scheme/rand";
            let n = p.len().min(buf.len());
            buf[..n].copy_from_slice(&p[..n]);
            Ok(n)
        }
    }

    fn serve_test_only_rand(ready: mpsc::Sender<Result<(), String>>) {
        // SAFETY: rdtsc has no preconditions.
        let seed = unsafe { core::arch::x86_64::_rdtsc() };
        let mut scheme = TestOnlyRand {
            rng: SplitMix(seed),
            next_id: 0,
        };
        let socket = match Socket::create() {
            Ok(s) => s,
            Err(e) => return drop(ready.send(Err(format!("scheme socket: {e}")))),
        };
        if let Err(e) = register_sync_scheme(&socket, "rand", &mut scheme) {
            return drop(ready.send(Err(format!("register rand: {e}"))));
        }
        let _ = ready.send(Ok(()));
        let mut state = SchemeState::new();
        loop {
            let req = match socket.next_request(SignalBehavior::Restart) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    say(&format!("init: test-only rand: {e}"));
                    break;
                }
            };
            if let RequestKind::Call(call) = req.kind() {
                let resp = call.handle_sync(&mut scheme, &mut state);
                if !matches!(
                    socket.write_response(resp, SignalBehavior::Restart),
                    Ok(true)
                ) {
                    break;
                }
            }
        }
    }

    // ---- scheme services (20_hwbpd.service) ---------------------------

    /// Start `cmd` as a scheme service named `name`, as base's init does
    /// for `type = { scheme = "…" }`: INIT_NOTIFY = the write end of a pipe
    /// (kept across exec), read one fd back with CallFlags::FD, register it.
    fn start_scheme_service(cmd: &mut Command, name: &str) -> Result<Child, String> {
        let (read_pipe, write_pipe) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
        let wfd = write_pipe.as_raw_fd();
        cmd.env("INIT_NOTIFY", wfd.to_string());
        // SAFETY: fcntl on an fd we own, in the child between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(wfd, libc::F_SETFD, 0) == -1 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
        }
        let child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
        drop(write_pipe);
        let mut new_fd = usize::MAX;
        loop {
            let mut bytes = new_fd.to_ne_bytes();
            let r = libredox::call::call_ro(
                read_pipe.as_raw_fd() as usize,
                &mut bytes,
                syscall::CallFlags::FD | syscall::CallFlags::FD_UPPER,
                &[],
            );
            new_fd = usize::from_ne_bytes(bytes);
            match r {
                Err(e) if e.errno() == EINTR => continue,
                Ok(1) => break,
                Ok(0) => return Err("exited without notifying readiness".into()),
                Ok(n) => return Err(format!("{n} fds handed back")),
                Err(e) => return Err(format!("waiting for its scheme fd: {e}")),
            }
        }
        let ns = libredox::call::getns().map_err(|e| format!("getns: {e}"))?;
        libredox::call::register_scheme_to_ns(ns, name, new_fd)
            .map_err(|e| format!("register {name}: {e}"))?;
        Ok(child)
    }

    /// Helper mode (`hwbp-system-init --exec-hwbpd`, run by hwbp-selftest's
    /// restart check after it killed hwbpd): drop the dead `hwbp` from the
    /// namespace and become hwbpd (same pid, so the selftest can kill it
    /// again); without INIT_NOTIFY hwbpd registers `hwbp` itself.
    pub fn exec_hwbpd() -> ! {
        if let Err(e) = unregister_scheme("hwbp") {
            say(&format!("init --exec-hwbpd: {e}"));
        }
        let err = hwbpd_command().exec();
        say(&format!("init --exec-hwbpd: exec hwbpd: {err}"));
        std::process::exit(1)
    }

    /// The live hwbpd processes, from the kernel's context listing.
    fn hwbpd_pids() -> Vec<u64> {
        std::fs::read_to_string("/scheme/sys/context")
            .map_or_else(|_| Vec::new(), |l| pids_named(&l, "hwbpd"))
    }

    fn env_flag(name: &str) -> bool {
        std::env::var(name).is_ok_and(|v| v == "1")
    }

    fn hwbpd_command() -> Command {
        let mut c = Command::new(format!("{BIN}/hwbpd"));
        // Bench mode: hwbpd logs errors only. At `warn` it would print a
        // line to the serial console for every refused call, and the
        // bench's baseline reads (EAGAIN) are refused calls.
        let level = if env_flag(BENCH_VAR) { "error" } else { "info" };
        c.env("HWBPD_LOG", level);
        c
    }

    /// sys:env switch (`run.sh --bench`): start hwbpd, run hwbp-bench, power off.
    const BENCH_VAR: &str = "HWBP_SYSTEM_BENCH";

    /// Bench mode: hwbp-bench as root with hwbpd serving. Its stdout is
    /// ours (the serial console: its `figure`/`check` lines arrive as they
    /// are printed, unindented, for tests/linux-compare/table.py); only its
    /// stderr comes through a pipe, read after it exited, so init does no
    /// work while it measures. Its `N passed, M failed` joins the tally.
    fn bench(run: &mut Run) {
        let started = Instant::now();
        // stdin inherited: Stdio::null() opens /scheme/null, which this
        // boot does not have (ENODEV).
        let child = Command::new(format!("{BIN}/hwbp-bench"))
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .spawn();
        let out = match child.and_then(|c| c.wait_with_output()) {
            Ok(o) => o,
            Err(e) => return run.fail(format!("hwbp-bench: {e}")),
        };
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        match last_counts(&text) {
            Some((p, f)) => {
                run.tally.add_sub(p, f);
                run.check(
                    f == 0 && p > 0 && out.status.success(),
                    format!(
                        "hwbp-bench: {p} checks passed, {f} failed ({:.1} s, {})",
                        started.elapsed().as_secs_f64(),
                        out.status
                    ),
                );
            }
            None => run.fail(format!("hwbp-bench: no verdict ({}; stderr {text:?})", out.status)),
        }
    }

    /// Whether /scheme/hwbp is served: its root answers (hwbpd refuses the
    /// empty path with EINVAL), as opposed to ENODEV (no such scheme, or
    /// its daemon died).
    fn hwbp_serves() -> bool {
        match std::fs::File::open("/scheme/hwbp") {
            Ok(_) => true,
            Err(e) => e.raw_os_error() != Some(syscall::ENODEV),
        }
    }

    /// Poll until `path` opens (anything but ENODEV counts as up).
    fn wait_for_scheme(path: &str, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            match std::fs::File::open(path) {
                Ok(_) => return Some(start.elapsed()),
                Err(e) if e.raw_os_error() == Some(syscall::ENODEV) => {}
                Err(_) => return Some(start.elapsed()),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    // ---- programs ------------------------------------------------------

    /// Run a program to its end, echo its output indented, return (status ok, stdout).
    fn run_echoed(cmd: &mut Command, tag: &str) -> Result<(bool, String), String> {
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn: {e}"))?;
        let out = child.wait_with_output().map_err(|e| format!("wait: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        for l in text.lines() {
            say(&format!("  {tag}| {l}"));
        }
        Ok((out.status.success(), text))
    }

    fn selftest(run: &mut Run, uid: Option<u32>, hwbpd_pid: Option<u64>) {
        let who = uid.map_or("root".to_string(), |u| format!("uid {u}"));
        let mut cmd = Command::new(format!("{BIN}/hwbp-selftest"));
        match uid {
            Some(u) => {
                // std drops gid then uid in the child (relibc: setgid/setuid
                // through procmgr). "Another user's task": init (pid 1, root).
                cmd.uid(u).gid(u).args(["--non-root", "--other-pid", "1"]);
            }
            None => {
                if let Some(pid) = hwbpd_pid {
                    let init = format!("{BIN}/hwbp-system-init");
                    cmd.args(["--hwbpd-pid", &pid.to_string(), "--hwbpd-cmd", &init]);
                    cmd.args(["--hwbpd-arg", EXEC_HWBPD]);
                }
            }
        }
        let started = Instant::now();
        match run_echoed(&mut cmd, "selftest") {
            Ok((status_ok, text)) => match last_counts(&text) {
                Some((p, f)) => {
                    run.tally.add_sub(p, f);
                    run.check(
                        f == 0 && p > 0 && status_ok,
                        format!(
                            "hwbp-selftest as {who}: {p} passed, {f} failed ({:.1} s)",
                            started.elapsed().as_secs_f64()
                        ),
                    );
                }
                None => {
                    run.check(
                        false,
                        format!("hwbp-selftest as {who}: no verdict line (exit ok: {status_ok})"),
                    );
                }
            },
            Err(e) => {
                run.check(false, format!("hwbp-selftest as {who}: {e}"));
            }
        }
    }

    struct TargetProc {
        child: Child,
        stdin: ChildStdin,
        lines: mpsc::Receiver<String>,
        ready: TargetReady,
    }

    impl TargetProc {
        fn start() -> Result<TargetProc, String> {
            let mut child = Command::new(format!("{BIN}/hwbp-system-target"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| format!("spawn: {e}"))?;
            let stdin = child.stdin.take().ok_or("no stdin")?;
            let stdout = child.stdout.take().ok_or("no stdout")?;
            let (tx, lines) = mpsc::channel();
            std::thread::spawn(move || {
                for l in BufReader::new(stdout).lines() {
                    let Ok(l) = l else { break };
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            });
            let first = lines
                .recv_timeout(Duration::from_secs(20))
                .map_err(|e| format!("no ready line: {e}"))?;
            let ready = parse_ready(&first).ok_or_else(|| format!("bad ready line {first:?}"))?;
            Ok(TargetProc {
                child,
                stdin,
                lines,
                ready,
            })
        }

        fn addr(&self, w: char) -> u64 {
            if w == 'a' { self.ready.a } else { self.ready.b }
        }

        /// Make n stores to word w; Ok(n confirmed).
        fn store(&mut self, n: u64, w: char) -> Result<u64, String> {
            self.command("store", n, w)
        }

        /// Make n reads from a pipe into word w (the kernel writes it).
        fn kernel_read(&mut self, n: u64, w: char) -> Result<u64, String> {
            self.command("kread", n, w)
        }

        fn command(&mut self, kind: &str, n: u64, w: char) -> Result<u64, String> {
            writeln!(self.stdin, "{kind} {n} {w}").map_err(|e| format!("to target: {e}"))?;
            self.stdin.flush().map_err(|e| format!("to target: {e}"))?;
            let l = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .map_err(|e| format!("target silent: {e}"))?;
            match parse_done(&l) {
                Some((m, c)) if c == w => Ok(m),
                _ => Err(format!("target said {l:?}")),
            }
        }

        fn exit(mut self) {
            let _ = writeln!(self.stdin, "exit");
            let _ = self.stdin.flush();
            let _ = self.child.wait();
        }
    }

    /// `hwbp <args>` started in the background; returns its child.
    fn hwbp_tool(args: &[String]) -> Result<Child, String> {
        Command::new(format!("{BIN}/hwbp"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn hwbp: {e}"))
    }

    fn finish_tool(child: Child, tag: &str) -> Result<(bool, String), String> {
        let out = child
            .wait_with_output()
            .map_err(|e| format!("wait hwbp: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        for l in text
            .lines()
            .chain(String::from_utf8_lossy(&out.stderr).lines())
        {
            say(&format!("  {tag}| {l}"));
        }
        Ok((out.status.success(), text))
    }

    /// How long the tools watch, and how long we give them to arm first.
    const TOOL_MS: u64 = 6000;
    const ARM_WAIT: Duration = Duration::from_millis(1500);

    fn stat_on_target(run: &mut Run, target: &mut TargetProc, stores: u64) {
        let addr = target.addr('a');
        let event = format!("mem:{addr:#x}/8:w");
        let args: Vec<String> = [
            "stat",
            "-e",
            &event,
            "-p",
            &target.ready.pid.to_string(),
            "--duration-ms",
            &TOOL_MS.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let child = match hwbp_tool(&args) {
            Ok(c) => c,
            Err(e) => return run.fail(format!("hwbp stat: {e}")),
        };
        std::thread::sleep(ARM_WAIT);
        let path = format!("task/{}/{event}", target.ready.pid);
        list_checks(run, &path);
        let made = target.store(stores, 'a');
        let out = finish_tool(child, "stat");
        match (made, out) {
            (Ok(m), Ok((status_ok, text))) => {
                let got = parse_stat(&text, &event);
                run.check(
                    status_ok && got == Some((m, m)),
                    format!(
                        "hwbp stat -e {event} -p {}: counted {got:?} (value, raw) for {m} stores",
                        target.ready.pid
                    ),
                );
            }
            (m, o) => run.fail(format!(
                "hwbp stat: target {m:?}, tool {:?}",
                o.map(|x| x.0)
            )),
        }
    }

    fn record_on_target(run: &mut Run, target: &mut TargetProc, stores: u64) {
        let addr = target.addr('b');
        let event = format!("mem:{addr:#x}/8:w");
        let pid = target.ready.pid;
        let args: Vec<String> = [
            "record",
            "-e",
            &event,
            "-p",
            &pid.to_string(),
            "--ring",
            "4096",
            "--duration-ms",
            &TOOL_MS.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let child = match hwbp_tool(&args) {
            Ok(c) => c,
            Err(e) => return run.fail(format!("hwbp record: {e}")),
        };
        std::thread::sleep(ARM_WAIT);
        let made = target.store(stores, 'b');
        let out = finish_tool(child, "record");
        match (made, out) {
            (Ok(m), Ok((status_ok, text))) => {
                let summary = parse_record_summary(&text);
                let lines = count_records(&text, pid, addr);
                run.check(
                    status_ok && summary == Some((m, m, 0)),
                    format!("hwbp record -e {event} -p {pid}: summary {summary:?} (records, hits, lost) for {m} stores"),
                );
                run.check(
                    lines as u64 == m,
                    format!("hwbp record: {lines} record lines carry pid {pid} and addr {addr:#x} ({m} stores)"),
                );
            }
            (m, o) => run.fail(format!(
                "hwbp record: target {m:?}, tool {:?}",
                o.map(|x| x.0)
            )),
        }
    }

    /// `hwbp list --raw` (as `uid`, else root), parsed.
    fn list_raw(uid: Option<u32>) -> Result<Listing, String> {
        let mut cmd = Command::new(format!("{BIN}/hwbp"));
        cmd.args(["list", "--raw"]).stdout(Stdio::piped()).stderr(Stdio::piped());
        if let Some(u) = uid {
            cmd.uid(u).gid(u);
        }
        let child = cmd.spawn().map_err(|e| format!("spawn hwbp list: {e}"))?;
        let tag = format!("list-raw uid {}", uid.unwrap_or(0));
        let (ok, text) = finish_tool(child, &tag)?;
        if !ok {
            return Err("hwbp list --raw failed".into());
        }
        Listing::parse(&text).map_err(|e| e.to_string())
    }

    /// `/scheme/hwbp/list` read as a file: 7 bytes at a time through the
    /// kernel's offset, then SEEK_END, a read past the end, a seek back
    /// and fstat's size.
    fn list_file() -> Result<String, String> {
        use std::io::{Seek, SeekFrom};
        let mut f = std::fs::File::open("/scheme/hwbp/list").map_err(|e| format!("open: {e}"))?;
        let mut all = Vec::new();
        let mut chunk = [0u8; 7];
        loop {
            let n = f.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                break;
            }
            all.extend_from_slice(&chunk[..n]);
        }
        let end = f.seek(SeekFrom::End(0)).map_err(|e| format!("SEEK_END: {e}"))?;
        let past = f.read(&mut chunk).map_err(|e| format!("read past the end: {e}"))?;
        f.seek(SeekFrom::Start(5)).map_err(|e| format!("SEEK_SET: {e}"))?;
        let mut ten = [0u8; 10];
        f.read_exact(&mut ten).map_err(|e| format!("read at 5: {e}"))?;
        let size = f.metadata().map_err(|e| format!("fstat: {e}"))?.len();
        let entries = Listing::parse_bytes(&all).map_err(|e| e.to_string())?.entries.len();
        let len = all.len() as u64;
        let what = format!("{len} bytes read 7 at a time ({entries} entries), SEEK_END {end}, fstat {size}, {past} bytes past the end, bytes 5..15 again");
        if end == len && size == len && past == 0 && all.get(5..15) == Some(&ten[..]) { Ok(what) } else { Err(what) }
    }

    /// While root's `hwbp stat` holds a watch on `path`: the listing as
    /// root shows it armed; as uid 1000 it shows nothing of root's; the
    /// file behaves as a file. The table goes to the log.
    fn list_checks(run: &mut Run, path: &str) {
        let _ = hwbp_tool(&["list".to_string()]).and_then(|c| finish_tool(c, "list"));
        match list_raw(None) {
            Ok(l) => {
                let e = l.entries.iter().find(|e| e.path.to_string() == path);
                let ok = e.is_some_and(|e| {
                    e.owner == 0
                        && e.state == BpState::Live
                        && e.enabled
                        && e.pieces.len() == 1
                        && (0..l.header.cpus).all(|c| e.pieces[0].place.slot_on(c).is_some())
                });
                let place = e.map(|e| e.pieces.iter().map(|p| p.place.to_string()).collect::<Vec<_>>());
                let _ = run.check(ok, format!("hwbp list (root, {} entries) shows {path}: owner 0, live, a register on each of {} CPUs: {place:?}", l.entries.len(), l.header.cpus));
                let waiting = l.entries.iter().flat_map(|e| &e.pieces).filter(|p| p.place == Placement::Waiting).count();
                say(&format!("init: hwbp list: {waiting} pieces waiting"));
            }
            Err(e) => run.fail(format!("hwbp list --raw (root): {e}")),
        }
        match list_raw(Some(USER_ID)) {
            Ok(l) => {
                let owners: Vec<u32> = l.entries.iter().map(|e| e.owner).collect();
                let _ = run.check(
                    l.header.uid == USER_ID && owners.iter().all(|&o| o == USER_ID),
                    format!("hwbp list as uid {USER_ID}: only its own (header uid {}, owners {owners:?})", l.header.uid),
                );
            }
            Err(e) => run.fail(format!("hwbp list --raw (uid {USER_ID}): {e}")),
        }
        match list_file() {
            Ok(what) => {
                run.check(true, format!("/scheme/hwbp/list is a positioned file: {what}"));
            }
            Err(what) => run.fail(format!("/scheme/hwbp/list is a positioned file: {what}")),
        }
    }

    /// `hwbp record --kernel` on word b while the target reads a pipe into
    /// it: every hit is the kernel's copy, at a kernel-half ip.
    fn record_kernel_on_target(run: &mut Run, target: &mut TargetProc, reads: u64) {
        let addr = target.addr('b');
        let event = format!("mem:{addr:#x}/8:w");
        let pid = target.ready.pid;
        let args: Vec<String> = ["record", "--kernel", "-e", &event, "-p", &pid.to_string(), "--ring", "65536", "--duration-ms", &TOOL_MS.to_string()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let child = match hwbp_tool(&args) {
            Ok(c) => c,
            Err(e) => return run.fail(format!("hwbp record --kernel: {e}")),
        };
        std::thread::sleep(ARM_WAIT);
        let made = target.kernel_read(reads, 'b');
        let out = finish_tool(child, "record-kernel");
        match (made, out) {
            (Ok(m), Ok((status_ok, text))) => {
                let summary = parse_record_summary(&text);
                let rows = parse_ip_summary(&text);
                let row_hits: u64 = rows.iter().map(|r| r.0).sum();
                let all_kernel = !rows.is_empty() && rows.iter().all(|r| r.1 == "kernel" && r.2 >= 0xffff_8000_0000_0000);
                // value is exact; records the kernel's 256-record ring could
                // not hold until the next tick are counted in lost.
                let _ = run.check(
                    status_ok && matches!(summary, Some((r, h, l)) if r + l == h && h >= m && r == row_hits) && all_kernel,
                    format!(
                        "hwbp record --kernel -e {event} -p {pid}: {m} pipe reads into the word: summary {summary:?} (records, hits, lost: records + lost = hits >= reads), {} ips, all in kernel mode: {all_kernel}",
                        rows.len()
                    ),
                );
            }
            (m, o) => run.fail(format!("hwbp record --kernel: target {m:?}, tool {:?}", o.map(|x| x.0))),
        }
    }

    /// Read the target's plans through our own hwbp-control (only possible
    /// while no hwbpd holds it): Ok(per thread: plan bytes).
    fn target_plans_via_control(pid: u64) -> Result<Vec<(u32, usize)>, String> {
        let control = libredox::Fd::open(
            "/scheme/sys/hwbp-control",
            libredox::flag::O_RDONLY | libredox::flag::O_CLOEXEC,
            0,
        )
        .map_err(|e| format!("open /scheme/sys/hwbp-control: {e}"))?;
        let threads = control
            .dup(format!("threads-{pid}").as_bytes())
            .map_err(|e| format!("threads-{pid}: {e}"))?;
        let threads = libredox::Fd::new(threads);
        let mut buf = [0u8; 1024];
        let n = threads
            .read(&mut buf)
            .map_err(|e| format!("read threads-{pid}: {e}"))?;
        let mut plans = Vec::new();
        for id in parse_thread_ids(&buf[..n]) {
            let h = control
                .dup(format!("regs/debug-{id}").as_bytes())
                .map_err(|e| format!("regs/debug-{id}: {e}"))?;
            let h = libredox::Fd::new(h);
            let mut plan = [0u8; 24 * 16];
            let len = h
                .read(&mut plan)
                .map_err(|e| format!("read regs/debug-{id}: {e}"))?;
            plans.push((id, len));
        }
        // A process plan (`pid-<pid>`) left behind by the dead hwbpd would make this EBUSY.
        let process_plan = match control.dup(format!("pid-{pid}").as_bytes()) {
            Ok(fd) => {
                let h = libredox::Fd::new(fd);
                let mut plan = [0u8; 24 * 16];
                h.read(&mut plan)
                    .map_err(|e| format!("read pid-{pid}: {e}"))?
            }
            Err(e) if e.errno() == syscall::EBUSY => {
                return Err(format!(
                    "pid-{pid}: EBUSY, a process plan outlived its control handle"
                ));
            }
            // A kernel series without process plans.
            Err(_) => 0,
        };
        if process_plan != 0 {
            return Err(format!("pid-{pid} reads {process_plan} plan bytes"));
        }
        Ok(plans)
    }

    fn unregister_scheme(name: &str) -> Result<(), String> {
        let ns = libredox::call::getns().map_err(|e| format!("getns: {e}"))?;
        // The namespace manager removes a scheme on unlinkat of "/scheme/<name>"
        // (empty reference) on the namespace fd.
        syscall::unlinkat(ns, format!("/scheme/{name}"), 0)
            .map(|_| ())
            .map_err(|e: Error| format!("unlink /scheme/{name}: {e}"))
    }

    fn restart_check(run: &mut Run, hwbpd: &mut Option<Child>, target: &mut TargetProc) {
        let pid = target.ready.pid;
        let a = target.addr('a');
        // A watch on word a held by another process (`hwbp stat`) while hwbpd dies.
        let event = format!("mem:{a:#x}/8:w");
        let args: Vec<String> = [
            "stat",
            "-e",
            &event,
            "-p",
            &pid.to_string(),
            "--duration-ms",
            &TOOL_MS.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let tool = match hwbp_tool(&args) {
            Ok(c) => c,
            Err(e) => return run.fail(format!("restart: hwbp stat holding a watch: {e}")),
        };
        std::thread::sleep(ARM_WAIT);
        let made = target.store(10, 'a');
        run.check(
            made == Ok(10),
            format!("restart: 10 stores under a watch held by hwbp stat ({made:?})"),
        );
        // HWBP_SYSTEM_INIT_HOLDS=1: init also holds a watch of its own across the kill
        // (diagnostic: with kernel 663e664 + relibc 6359922 a process holding an fd of a
        // dead scheme was seen failing to spawn afterwards).
        let held = if std::env::var("HWBP_SYSTEM_INIT_HOLDS").is_ok_and(|v| v == "1") {
            Breakpoint::watch(a)
                .len(8)
                .target(Target::Task(pid))
                .pinned()
                .open(RedoxTransport)
                .ok()
        } else {
            None
        };

        let pids = hwbpd_pids();
        let Some(&victim) = pids.first() else {
            return run.fail("restart: no hwbpd to kill");
        };
        let killed = match hwbpd.take() {
            Some(mut child) if u64::from(child.id()) == victim => child
                .kill()
                .and_then(|()| child.wait())
                .map(|s| format!("{s}")),
            _ => {
                // Not our child (the selftest restarted it): kill by pid.
                // SAFETY: kill has no memory preconditions.
                let rc = unsafe { libc::kill(victim as libc::pid_t, libc::SIGKILL) };
                if rc == 0 {
                    Ok("SIGKILL sent".to_string())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            }
        };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) && hwbp_serves() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let gone = !hwbp_serves();
        run.check(
            killed.is_ok() && gone,
            format!("restart: hwbpd (pid {victim}) killed ({killed:?}); /scheme/hwbp no longer opens: {gone}"),
        );
        std::thread::sleep(Duration::from_millis(200));
        if std::env::var("HWBP_SYSTEM_PROBE").is_ok_and(|v| v == "1") {
            let st = Command::new(format!("{BIN}/hwbp"))
                .arg("--help")
                .stdout(Stdio::null())
                .status();
            say(&format!("init: probe: hwbp --help after the kill: {st:?}"));
            let st = Command::new(format!("{BIN}/hwbp-system-target"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status();
            say(&format!(
                "init: probe: a fresh target after the kill: {st:?}"
            ));
            let st = Command::new(format!("{BIN}/hwbpd"))
                .env("HWBPD_LOG", "info")
                .env("HWBPD_KEEP_ROOT", "1")
                .spawn();
            say(&format!(
                "init: probe: plain hwbpd after the kill: {:?}",
                st.as_ref().map(|c| c.id())
            ));
            std::thread::sleep(Duration::from_millis(500));
            if let Ok(mut c) = st {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        match finish_tool(tool, "stat") {
            Ok((status_ok, text)) => {
                run.check(
                    !status_ok && parse_stat(&text, &event).is_none(),
                    format!("restart: hwbp stat whose hwbpd died ends with an error, no count (exit ok: {status_ok})"),
                );
            }
            Err(e) => run.fail(format!("restart: hwbp stat: {e}")),
        }
        if let Some(h) = held {
            let stale = h.read_count();
            say(&format!(
                "init: the watch init held reads {:?} after the kill",
                stale.map(|c| c.value)
            ));
            drop(h);
        }

        let read_back = std::env::var("HWBP_SYSTEM_NO_CONTROL_READ").map_or(true, |v| v != "1");
        if !read_back {
            say("init: HWBP_SYSTEM_NO_CONTROL_READ=1: plan read-back skipped");
        }
        match if read_back {
            target_plans_via_control(pid)
        } else {
            Err("skipped".into())
        } {
            Ok(plans) => {
                let armed: Vec<_> = plans.iter().filter(|(_, len)| *len != 0).collect();
                run.check(
                    !plans.is_empty() && armed.is_empty(),
                    format!("restart: with hwbpd dead, hwbp-control is free and every thread of pid {pid} has an empty plan ({plans:?} = (debug id, plan bytes)), and no process plan is left (pid-{pid})"),
                );
            }
            Err(e) => run.fail(format!("restart: reading the target's plans: {e}")),
        }
        // Stores to word a with nobody listening: if a plan had survived, the
        // kernel would still trap them.
        let _ = target.store(10, 'a');

        if let Err(e) = unregister_scheme("hwbp") {
            say(&format!("init: {e}"));
        }
        let mut started = start_scheme_service(&mut hwbpd_command(), "hwbp");
        if let Err(e) = &started {
            // Diagnostic retry: say so, and count the first failure anyway.
            run.fail(format!("restart: first start of hwbpd again: {e}"));
            started = start_scheme_service(&mut hwbpd_command(), "hwbp");
        }
        let ok = started.is_ok();
        let up = if ok {
            wait_for_scheme("/scheme/hwbp", Duration::from_secs(30))
        } else {
            None
        };
        run.check(
            ok && up.is_some(),
            format!(
                "restart: hwbpd started again ({:?}), /scheme/hwbp up after {up:?}",
                started.as_ref().err()
            ),
        );
        if let Ok(c) = started {
            *hwbpd = Some(c);
        }
        if up.is_none() {
            return;
        }

        // A new watch on word b: it must count its own stores and nothing of word a.
        let b = target.addr('b');
        match Breakpoint::watch(b)
            .len(8)
            .target(Target::Task(pid))
            .pinned()
            .open(RedoxTransport)
        {
            Ok(h2) => {
                let _ = target.store(50, 'a');
                let _ = target.store(20, 'b');
                let c = h2.read_count();
                let v = c.as_ref().map(|c| (c.value, c.lost)).ok();
                run.check(v == Some((20, 0)), format!("restart: a new watch on word b counts (value, lost) {v:?} for 20 stores (50 to word a, unwatched, count nowhere)"));
            }
            Err(e) => run.fail(format!("restart: new watch on word b: {e}")),
        }
    }

    fn power_off(run: &Run) -> ! {
        say(&format!("init: powering off after {:.1} s", run.elapsed()));
        match std::fs::OpenOptions::new()
            .write(true)
            .open("/scheme/sys/kstop")
        {
            Ok(mut f) => {
                let _ = f.write_all(b"shutdown");
            }
            Err(e) => say(&format!("init: /scheme/sys/kstop: {e}")),
        }
        // init must not exit.
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }

    pub fn main() -> ! {
        let mut run = Run {
            tally: Tally::default(),
            t0: Instant::now(),
        };
        say(&format!(
            "hwbp-system-init: started, pid {}",
            std::process::id()
        ));

        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || serve_test_only_rand(tx));
        let rand_ok = rx.recv_timeout(Duration::from_secs(20));
        let rand_read = std::fs::File::open("/scheme/rand").and_then(|mut f| {
            let mut b = [0u8; 16];
            f.read_exact(&mut b).map(|()| b)
        });
        run.check(
            matches!(rand_ok, Ok(Ok(()))) && rand_read.is_ok(),
            format!(
                "init serves /scheme/rand (TEST-ONLY stand-in for randd): {rand_ok:?}, read {:?}",
                rand_read.map(|_| "16 bytes")
            ),
        );

        let mut hwbpd = match start_scheme_service(&mut hwbpd_command(), "hwbp") {
            Ok(c) => Some(c),
            Err(e) => {
                run.check(
                    false,
                    format!("hwbpd started as a scheme service (INIT_NOTIFY): {e}"),
                );
                None
            }
        };
        let up = hwbpd
            .as_ref()
            .and_then(|_| wait_for_scheme("/scheme/hwbp", Duration::from_secs(30)));
        if !run.check(
            up.is_some(),
            format!("hwbpd handed back its scheme over INIT_NOTIFY; /scheme/hwbp up after {up:?}"),
        ) {
            say(&run.tally.summary());
            power_off(&run);
        }

        if env_flag(BENCH_VAR) {
            bench(&mut run);
            say(&run.tally.summary());
            power_off(&run);
        }

        // HWBP_SYSTEM_SELFTEST_RESTART=1: let the root selftest kill and restart
        // hwbpd itself (`--hwbpd-pid/--hwbpd-cmd`). Off by default: on these
        // relibc/kernel commits a process holding fds of the dead hwbpd cannot
        // spawn (ENODEV; see README), so the selftest's restart fails there;
        // init's own restart check below covers hwbpd's restart.
        let selftest_restarts = env_flag("HWBP_SYSTEM_SELFTEST_RESTART");
        let first_pid = hwbpd
            .as_ref()
            .map(|c| u64::from(c.id()))
            .filter(|_| selftest_restarts);
        selftest(&mut run, None, first_pid);
        // The selftest's restart check kills our hwbpd and leaves its own.
        if let Some(c) = hwbpd.as_mut() {
            if matches!(c.try_wait(), Ok(Some(_))) {
                hwbpd = None;
            }
        }
        let pids = hwbpd_pids();
        let serving = run.check(
            pids.len() == 1 && hwbp_serves(),
            format!("one hwbpd serves after the root selftest (pids {pids:?})"),
        );
        if !serving {
            // Recover so the rest still runs (the failure is counted above).
            let _ = unregister_scheme("hwbp");
            match start_scheme_service(&mut hwbpd_command(), "hwbp") {
                Ok(c) => hwbpd = Some(c),
                Err(e) => say(&format!("init: starting hwbpd again: {e}")),
            }
            let up = wait_for_scheme("/scheme/hwbp", Duration::from_secs(30));
            say(&format!(
                "init: hwbpd started again by init, /scheme/hwbp up after {up:?}"
            ));
        }
        selftest(&mut run, Some(USER_ID), None);

        match TargetProc::start() {
            Ok(mut target) => {
                run.check(
                    true,
                    format!(
                        "target started: pid {}, words at {:#x} and {:#x}",
                        target.ready.pid, target.ready.a, target.ready.b
                    ),
                );
                stat_on_target(&mut run, &mut target, 1000);
                record_on_target(&mut run, &mut target, 500);
                record_kernel_on_target(&mut run, &mut target, 200);
                if std::env::var("HWBP_SYSTEM_PROBE").is_ok_and(|v| v == "1") {
                    // Diagnostic: a second hwbpd while the first runs (it must stop at EBUSY).
                    let st = Command::new(format!("{BIN}/hwbpd"))
                        .env("HWBPD_LOG", "info")
                        .status();
                    say(&format!(
                        "init: probe: second hwbpd while the first runs: {st:?}"
                    ));
                }
                restart_check(&mut run, &mut hwbpd, &mut target);
                target.exit();
            }
            Err(e) => run.fail(format!("target started: {e}")),
        }

        say(&run.tally.summary());
        power_off(&run);
    }
}
