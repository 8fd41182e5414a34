//! hwbp-bench: the hwbp half of issue 13's comparison with Linux
//! (`tests/linux-compare`). Run by hwbp-system-init in bench mode
//! (`run.sh --bench`: sys:env `HWBP_SYSTEM_BENCH=1`) as root, with hwbpd
//! serving `/scheme/hwbp`, under QEMU `-icount shift=0,sleep=off -smp 1`,
//! where rdtsc counts retired guest instructions.
//!
//! It measures the operations `tests/linux-compare/init.c` measures for
//! Linux's perf breakpoints, through hwbpd's scheme, and prints the same
//! lines (`calib`, `figure`, `check`, `raw`; see `hwbp_redox_system::bench`)
//! to its stdout, the serial console. `tests/linux-compare/README.md` says
//! exactly what each timed part includes on both sides. Its last line,
//! `hwbp-bench: N passed, M failed`, also goes to stderr (init's pipe), and
//! it exits 1 when a check failed.

#[cfg(not(target_os = "redox"))]
fn main() {
    eprintln!("hwbp-bench runs only on Redox (tests/redox-system/run.sh --bench)");
    std::process::exit(2);
}

#[cfg(target_os = "redox")]
fn main() {
    redox::main()
}

#[cfg(target_os = "redox")]
mod redox {
    use std::arch::asm;
    use std::io::Write;
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::Duration;

    use hwbp_redox_system::bench::{
        CALIB_KS, CALIB_REPS, CalibLoop, Checks, ENABLE_RUNS, HIT_REPS, HITS, OPEN_REPS,
        RecordTally, Stats, calib_check, figure_line, minus_overhead, per_hit, stats_of,
    };
    use libhwbp::Breakpoint;
    use libhwbp::abi::{Access, COUNT_RECORD_SIZE, CountRecord, EVENT_RECORD_SIZE, EventRecord};
    use libhwbp::redox::RedoxTransport;
    use libhwbp::transport::Transport;

    fn out(line: &str) {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{line}");
        let _ = o.flush();
    }

    // ---- timing primitives -------------------------------------------

    /// rdtsc; under TCG with icount, QEMU ends the translation block at
    /// rdtsc and counts the instructions executed so far exactly. No
    /// `nomem`: the compiler treats it as touching memory (the C side's
    /// "memory" clobber), so no load or store moves across it.
    #[inline(always)]
    fn rdtsc() -> u64 {
        let lo: u32;
        let hi: u32;
        // SAFETY: rdtsc reads the time-stamp counter, nothing else.
        unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nostack, preserves_flags)) };
        (u64::from(hi) << 32) | u64::from(lo)
    }

    /// K iterations of `dec; jnz` (2K instructions) between two rdtscs,
    /// with the three moves gcc -O2 puts there in the Linux half's
    /// `timed_loop`, so both read 2K + 4. `k` must be at least 1.
    fn timed_loop(k: u64) -> u64 {
        let (lo0, hi0, lo1, hi1): (u32, u32, u32, u32);
        // SAFETY: registers only; eax/edx are plain outputs, so `k` is
        // never allocated to them.
        unsafe {
            asm!(
                "rdtsc",
                "mov {lo0:e}, eax",
                "mov {hi0:e}, edx",
                "mov rax, {k}",
                "2:",
                "dec rax",
                "jnz 2b",
                "rdtsc",
                k = in(reg) k,
                lo0 = out(reg) lo0,
                hi0 = out(reg) hi0,
                out("eax") lo1,
                out("edx") hi1,
                options(nostack),
            )
        };
        let t0 = (u64::from(hi0) << 32) | u64::from(lo0);
        let t1 = (u64::from(hi1) << 32) | u64::from(lo1);
        t1.wrapping_sub(t0)
    }

    /// n 8-byte stores to *p: `mov; dec; jnz` per store (init.c's store_loop).
    #[inline(always)]
    fn store_loop(p: *mut u64, n: u64) {
        // SAFETY: p points at one of our page-sized statics below.
        unsafe {
            asm!(
                "2:",
                "mov qword ptr [{p}], {v}",
                "dec {n}",
                "jnz 2b",
                p = in(reg) p,
                v = in(reg) n,
                n = inout(reg) n => _,
                options(nostack),
            )
        };
    }

    /// A page of its own for each watched or unwatched word, so no other
    /// data shares a watched page.
    #[repr(C, align(4096))]
    struct Page(core::cell::UnsafeCell<[u64; 512]>);
    // SAFETY: accessed by raw pointer only, through volatile asm stores, or
    // by the enable threads' single byte store each.
    unsafe impl Sync for Page {}
    impl Page {
        const fn new() -> Page {
            Page(core::cell::UnsafeCell::new([0; 512]))
        }
        fn word(&self) -> *mut u64 {
            self.0.get().cast()
        }
    }
    static WATCHED: Page = Page::new();
    static UNWATCHED: Page = Page::new();
    static ENABLE_WATCHED: Page = Page::new();

    struct Bench {
        checks: Checks,
        /// Median of `rdtsc(); rdtsc()`.
        overhead: u64,
        pid: u64,
    }

    impl Bench {
        fn check(&mut self, name: &str, ok: bool, details: &str) -> bool {
            out(&self.checks.check(name, ok, details));
            ok
        }

        fn figure(&self, key: &str, value: u64, raw: &Stats) {
            out(&figure_line(key, value, raw));
        }
    }

    fn is_would_block(e: &libredox::error::Error) -> bool {
        // Redox: EAGAIN 11 and EWOULDBLOCK 41 are different numbers.
        matches!(e.errno(), 11 | 41)
    }

    // ---- calibration -------------------------------------------------

    fn calibrate(b: &mut Bench) {
        let mut v = vec![0u64; 201];
        for x in v.iter_mut() {
            let t0 = rdtsc();
            *x = rdtsc() - t0;
        }
        let s = stats_of(&mut v).expect("201 samples");
        b.overhead = s.median;
        out(&format!("calib empty {} min={} max={}", s.median, s.min, s.max));

        let mut loops = Vec::new();
        for &k in &CALIB_KS {
            let mut v: Vec<u64> = (0..CALIB_REPS).map(|_| timed_loop(k)).collect();
            let l = CalibLoop { k, stats: stats_of(&mut v).expect("reps") };
            out(&l.line());
            loops.push(l);
        }
        let (ok, details) = calib_check(&loops);
        b.check("calib_loop", ok, &details);

        // sleep=off: an idle vCPU jumps the clock to the next timer.
        let mut v = vec![0u64; 11];
        for x in v.iter_mut() {
            let t0 = rdtsc();
            std::thread::sleep(Duration::from_millis(1));
            *x = rdtsc() - t0;
        }
        let s = stats_of(&mut v).expect("11 samples");
        out(&format!("calib sleep_1ms median={} min={} max={}", s.median, s.min, s.max));

        let a = std::time::Instant::now();
        let t0 = rdtsc();
        timed_loop(5_000_000);
        let dt = rdtsc() - t0;
        let ns = a.elapsed().as_nanos();
        out(&format!("calib monotonic loop_10M_instructions rdtsc={dt} monotonic_ns={ns}"));
    }

    // ---- 1. open + close -----------------------------------------------

    fn bench_open_close(b: &mut Bench) {
        let addr = WATCHED.word() as u64;
        // What RedoxTransport::open sends, formatted once: the timed part is
        // relibc's open (namespace manager, then hwbpd) and close.
        let path = format!("/scheme/hwbp/self/mem:{addr:#x}/8:w");
        let flags = libc::O_RDWR | libc::O_CLOEXEC;
        let mut v = vec![0u64; OPEN_REPS];
        let mut bad = None;
        for x in v.iter_mut() {
            let t0 = rdtsc();
            match libredox::call::open(&path, flags, 0) {
                Ok(fd) => {
                    if let Err(e) = libredox::call::close(fd) {
                        bad = Some(e.errno());
                    }
                }
                Err(e) => bad = Some(e.errno()),
            }
            *x = rdtsc() - t0;
        }
        b.check("open_close", bad.is_none(), &format!("path={path} errno={bad:?}"));
        minus_overhead(&mut v, b.overhead);
        let s = stats_of(&mut v).expect("reps");
        b.figure("open_close", s.median, &s);

        // The same open as one openat on a held root capability of the
        // scheme (no namespace manager): what a client that keeps
        // /scheme/hwbp open pays per breakpoint.
        let root = libredox::call::getns().and_then(|ns| {
            libredox::call::openat(ns, "/scheme/hwbp", libc::O_DIRECTORY | libc::O_CLOEXEC, 0)
        });
        let root = match root {
            Ok(fd) => fd,
            Err(e) => {
                b.check("open_close_at", false, &format!("root capability of /scheme/hwbp: errno {}", e.errno()));
                return;
            }
        };
        let rel = format!("self/mem:{addr:#x}/8:w");
        let mut bad = None;
        for x in v.iter_mut() {
            let t0 = rdtsc();
            match libredox::call::openat(root, &rel, flags, 0) {
                Ok(fd) => {
                    if let Err(e) = libredox::call::close(fd) {
                        bad = Some(e.errno());
                    }
                }
                Err(e) => bad = Some(e.errno()),
            }
            *x = rdtsc() - t0;
        }
        let _ = libredox::call::close(root);
        b.check("open_close_at", bad.is_none(), &format!("openat(root of /scheme/hwbp, {rel}) errno={bad:?}"));
        minus_overhead(&mut v, b.overhead);
        let s = stats_of(&mut v).expect("reps");
        out(&format!(
            "extra open_close_at {} reps={} min={} max={} (openat on a held /scheme/hwbp root + close)",
            s.median, s.n, s.min, s.max
        ));
    }

    // ---- 2. counted hit ------------------------------------------------

    fn time_stores(p: *mut u64, v: &mut [u64]) -> Stats {
        for x in v.iter_mut() {
            let t0 = rdtsc();
            store_loop(p, HITS);
            *x = rdtsc() - t0;
        }
        stats_of(v).expect("reps")
    }

    fn read_count(fd: usize) -> Result<CountRecord, i32> {
        let mut buf = [0u8; COUNT_RECORD_SIZE];
        let n = libredox::call::read(fd, &mut buf).map_err(|e| e.errno())?;
        CountRecord::from_slice(&buf[..n]).ok_or(-1)
    }

    /// Extra: the cheapest round trip to hwbpd, `fcntl(F_GETFL)` on one of
    /// its handles (the kernel forwards it; hwbpd answers at once), with
    /// `threads` threads of this process blocked. What a command costs
    /// beyond this is hwbpd's and the kernel's work on the breakpoint.
    fn scheme_roundtrip(b: &Bench, fd: usize, threads: usize) {
        let mut v = vec![0u64; 201];
        let mut bad = None;
        for x in v.iter_mut() {
            let t0 = rdtsc();
            if let Err(e) = libredox::call::fcntl(fd, libc::F_GETFL as usize, 0) {
                bad = Some(e.errno());
            }
            *x = rdtsc() - t0;
        }
        minus_overhead(&mut v, b.overhead);
        let s = stats_of(&mut v).expect("reps");
        out(&format!(
            "extra scheme_roundtrip_{threads} {} reps={} min={} max={} errno={bad:?} (fcntl F_GETFL on an hwbpd handle, {threads} other threads blocked)",
            s.median, s.n, s.min, s.max
        ));
    }

    /// Extra: what hwbpd does for the permission check of every task open,
    /// from here: open `/scheme/sys/context`, read the listing, close.
    fn sys_context_read(b: &Bench) {
        let mut v = vec![0u64; 101];
        let mut buf = vec![0u8; 64 * 1024];
        let mut size = 0;
        for x in v.iter_mut() {
            let t0 = rdtsc();
            if let Ok(fd) = libredox::call::open("/scheme/sys/context", libc::O_RDONLY | libc::O_CLOEXEC, 0) {
                size = 0;
                while let Ok(n) = libredox::call::read(fd, &mut buf[size..]) {
                    if n == 0 {
                        break;
                    }
                    size += n;
                }
                let _ = libredox::call::close(fd);
            }
            *x = rdtsc() - t0;
        }
        minus_overhead(&mut v, b.overhead);
        let s = stats_of(&mut v).expect("reps");
        let rows = String::from_utf8_lossy(&buf[..size]).lines().count().saturating_sub(1);
        out(&format!(
            "extra sys_context_read {} reps={} min={} max={} bytes={size} rows={rows} (open + read + close of /scheme/sys/context, as hwbpd does at every task open)",
            s.median, s.n, s.min, s.max
        ));
    }

    fn bench_counted_hit(b: &mut Bench) {
        let bp = Breakpoint::watch(WATCHED.word() as u64)
            .len(8)
            .access(Access::Write)
            .open(RedoxTransport);
        let bp = match bp {
            Ok(bp) => bp,
            Err(e) => {
                b.check("counted_open", false, &format!("{e}"));
                return;
            }
        };
        b.check("counted_open", true, &format!("fd {}", bp.raw_handle()));
        let fd = bp.raw_handle();
        scheme_roundtrip(b, fd, 0);
        let mut vu = vec![0u64; HIT_REPS];
        let mut vw = vec![0u64; HIT_REPS];
        // First the unwatched word, then the watched one, the watch open
        // throughout (init.c's order).
        let u = time_stores(UNWATCHED.word(), &mut vu);
        let w = time_stores(WATCHED.word(), &mut vw);
        let want = HITS * HIT_REPS as u64;
        let c = read_count(fd);
        b.check(
            "counted_hits",
            matches!(c, Ok(ref c) if c.value == want),
            &format!(
                "expected={want} counted={:?} lost={:?} (hwbpd's count is exact)",
                c.as_ref().map(|c| c.value),
                c.as_ref().map(|c| c.lost)
            ),
        );
        out(&format!(
            "raw counted_hit watched_median={} unwatched_median={} hits={HITS}",
            w.median, u.median
        ));
        b.figure("counted_hit", per_hit(w.median, u.median, HITS), &w);

        // Extra: the same with one count read per rep (the round trip
        // through hwbpd, which then collects the rep's 64 hit records),
        // minus 64 unwatched stores + one count read.
        let mut bad = None;
        for x in vu.iter_mut() {
            let t0 = rdtsc();
            store_loop(UNWATCHED.word(), HITS);
            if let Err(e) = read_count(fd) {
                bad = Some(e);
            }
            *x = rdtsc() - t0;
        }
        for x in vw.iter_mut() {
            let t0 = rdtsc();
            store_loop(WATCHED.word(), HITS);
            if let Err(e) = read_count(fd) {
                bad = Some(e);
            }
            *x = rdtsc() - t0;
        }
        let u = stats_of(&mut vu).expect("reps");
        let w = stats_of(&mut vw).expect("reps");
        let c = read_count(fd);
        b.check(
            "counted_hits_with_read",
            bad.is_none() && matches!(c, Ok(ref c) if c.value == 2 * want),
            &format!("expected={} counted={:?} read_errno={bad:?}", 2 * want, c.as_ref().map(|c| c.value)),
        );
        out(&format!(
            "extra counted_hit_with_count_read {} watched_median={} unwatched_median={} hits={HITS} (64 stores + one count read, minus 64 unwatched stores + one count read, /64)",
            per_hit(w.median, u.median, HITS),
            w.median,
            u.median
        ));
        if let Err(e) = bp.close() {
            out(&format!("note counted close: {e}"));
        }
    }

    // ---- 3. sampled hit ------------------------------------------------

    fn bench_sampled_hit(b: &mut Bench) {
        let watched = WATCHED.word() as u64;
        let bp = Breakpoint::watch(watched).len(8).access(Access::Write).open(RedoxTransport);
        let bp = match bp {
            Ok(bp) => bp,
            Err(e) => {
                b.check("sampled_open", false, &format!("{e}"));
                return;
            }
        };
        let ev = match bp.events() {
            Ok(ev) => ev,
            Err(e) => {
                b.check("sampled_open", false, &format!("events stream: {e}"));
                return;
            }
        };
        let efd = ev.raw_handle();
        if let Err(e) = RedoxTransport.set_nonblock(efd, true) {
            b.check("sampled_open", false, &format!("O_NONBLOCK: {e}"));
            return;
        }
        b.check("sampled_open", true, &format!("breakpoint fd {}, events fd {efd} (O_NONBLOCK, period 1)", bp.raw_handle()));

        const BUF: usize = HITS as usize * EVENT_RECORD_SIZE;
        let mut buf = vec![0u8; BUF];
        // Baseline: 64 unwatched stores and one read that finds nothing.
        let mut vu = vec![0u64; HIT_REPS];
        let mut baseline_bad = 0u64;
        for x in vu.iter_mut() {
            let t0 = rdtsc();
            store_loop(UNWATCHED.word(), HITS);
            let r = libredox::call::read(efd, &mut buf);
            *x = rdtsc() - t0;
            if !matches!(r, Err(ref e) if is_would_block(e)) {
                baseline_bad += 1;
            }
        }
        b.check("sampled_baseline_empty", baseline_bad == 0, &format!("reads that did not say EAGAIN: {baseline_bad} of {HIT_REPS}"));
        let u = stats_of(&mut vu).expect("reps");

        // Watched: 64 stores and the reads that return their 64 records.
        let mut vw = vec![0u64; HIT_REPS];
        let mut tally = RecordTally::default();
        let (mut reads, mut empty_reads, mut errors) = (0u64, 0u64, 0u64);
        let pid = b.pid;
        for x in vw.iter_mut() {
            let mut got = 0usize;
            let mut tries = 0;
            let t0 = rdtsc();
            store_loop(WATCHED.word(), HITS);
            while got < BUF && tries < 1000 {
                tries += 1;
                match libredox::call::read(efd, &mut buf[got..]) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(ref e) if is_would_block(e) => empty_reads += 1,
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
            }
            *x = rdtsc() - t0;
            reads += tries;
            for r in buf[..got].chunks_exact(EVENT_RECORD_SIZE) {
                let r = EventRecord::from_slice(r).expect("64 bytes");
                tally.add(r.addr, r.pid, r.hit, watched, pid);
            }
        }
        let w = stats_of(&mut vw).expect("reps");
        let want = HITS * HIT_REPS as u64;
        // Whatever arrived late would be lost from the figure: drain it.
        let mut late = 0u64;
        while let Ok(n) = libredox::call::read(efd, &mut buf) {
            if n == 0 {
                break;
            }
            late += (n / EVENT_RECORD_SIZE) as u64;
        }
        let c = read_count(bp.raw_handle());
        b.check(
            "sampled_records",
            tally.complete(want) && late == 0 && errors == 0 && matches!(c, Ok(ref c) if c.value == want && c.lost == 0),
            &format!(
                "expected={want} records={} wrong_addr={} wrong_pid={} out_of_order={} late={late} read_errors={errors} count={:?} lost={:?}",
                tally.records,
                tally.wrong_addr,
                tally.wrong_pid,
                tally.out_of_order,
                c.as_ref().map(|c| c.value),
                c.as_ref().map(|c| c.lost)
            ),
        );
        out(&format!(
            "raw sampled_hit watched_median={} unwatched_median={} hits={HITS} reads={reads} empty_reads={empty_reads}",
            w.median, u.median
        ));
        b.figure("sampled_hit", per_hit(w.median, u.median, HITS), &w);
        drop(ev);
        if let Err(e) = bp.close() {
            out(&format!("note sampled close: {e}"));
        }
    }

    // ---- 4. enable + disable with N threads ----------------------------

    fn bench_enable(b: &mut Bench, nthreads: usize, reps: usize) {
        let key = format!("enable_disable_{nthreads}");
        let byte = ENABLE_WATCHED.word().cast::<u8>();
        let bp = Breakpoint::watch(byte as u64)
            .len(1)
            .access(Access::ReadWrite)
            .target(libhwbp::abi::Target::Task(b.pid))
            .open(RedoxTransport);
        let bp = match bp {
            Ok(bp) => bp,
            Err(e) => {
                b.check(&key, false, &format!("open task/{}: {e}", b.pid));
                return;
            }
        };
        let fd = bp.raw_handle();

        // N passive threads created after the breakpoint: each blocks until
        // released, then writes the watched byte once.
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let mut threads = Vec::with_capacity(nthreads);
        let mut spawn_err = None;
        let addr = byte as usize;
        for _ in 0..nthreads {
            let g = Arc::clone(&gate);
            let r = std::thread::Builder::new().stack_size(64 * 1024).spawn(move || {
                let (lock, cv) = &*g;
                let mut released = lock.lock().unwrap_or_else(|e| e.into_inner());
                while !*released {
                    released = cv.wait(released).unwrap_or_else(|e| e.into_inner());
                }
                drop(released);
                // SAFETY: the watched byte, alone on its page; a racy
                // single-byte store of the same value is harmless.
                unsafe { core::ptr::write_volatile(addr as *mut u8, 1) };
            });
            match r {
                Ok(h) => threads.push(h),
                Err(e) => {
                    spawn_err = Some(e.to_string());
                    break;
                }
            }
        }
        // Let the threads block, as perf bench does.
        std::thread::sleep(Duration::from_millis(10));
        scheme_roundtrip(b, fd, threads.len());

        let mut v = vec![0u64; reps];
        let mut bad = None;
        for x in v.iter_mut() {
            let t0 = rdtsc();
            if let Err(e) = libredox::call::write(fd, b"disable") {
                bad = Some(e.errno());
            }
            if let Err(e) = libredox::call::write(fd, b"enable") {
                bad = Some(e.errno());
            }
            *x = rdtsc() - t0;
        }
        minus_overhead(&mut v, b.overhead);

        {
            let (lock, cv) = &*gate;
            *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
            cv.notify_all();
        }
        let created = threads.len();
        let mut panicked = 0;
        for t in threads {
            if t.join().is_err() {
                panicked += 1;
            }
        }
        let c = read_count(fd);
        let ok = created == nthreads
            && spawn_err.is_none()
            && panicked == 0
            && bad.is_none()
            && matches!(c, Ok(ref c) if c.value == nthreads as u64);
        b.check(
            &key,
            ok,
            &format!(
                "threads={created}/{nthreads} spawn_error={spawn_err:?} command_errno={bad:?} hits={:?} (one per thread: each carries the breakpoint)",
                c.as_ref().map(|c| c.value)
            ),
        );
        let s = stats_of(&mut v).expect("reps");
        b.figure(&key, s.median, &s);
        if let Err(e) = bp.close() {
            out(&format!("note {key} close: {e}"));
        }
    }

    pub fn main() {
        let pid = u64::from(std::process::id());
        out(&format!("hwbp-bench: start, pid {pid}, uid {:?}", libredox::call::geteuid()));
        if let Ok(env) = std::fs::read_to_string("/scheme/sys/env") {
            let words: Vec<&str> = env.split_whitespace().filter(|w| !w.starts_with("RSDP")).collect();
            out(&format!("info sys_env {}", words.join(" ")));
        }
        if let Ok(uname) = std::fs::read_to_string("/scheme/sys/uname") {
            out(&format!("info uname {}", uname.split_whitespace().collect::<Vec<_>>().join(" ")));
        }
        let mut b = Bench { checks: Checks::default(), overhead: 0, pid };
        calibrate(&mut b);
        bench_open_close(&mut b);
        sys_context_read(&b);
        bench_counted_hit(&mut b);
        bench_sampled_hit(&mut b);
        for (n, reps) in ENABLE_RUNS {
            bench_enable(&mut b, n, reps);
        }
        let summary = b.checks.summary();
        out(&summary);
        eprintln!("{summary}");
        std::process::exit(if b.checks.failed == 0 { 0 } else { 1 });
    }
}
