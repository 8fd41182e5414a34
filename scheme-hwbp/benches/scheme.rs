//! hwbpd benchmarks (issue 3), printed side by side in one run:
//!
//! 1. open + close of one breakpoint through `SchemeSync` with 0, 1,000,
//!    10,000 and 100,000 breakpoints already open (in the task of the first
//!    100 of them, and in a task of its own);
//! 2. hit records per second from the simulated #DB path (DR model ->
//!    `handle_debug_exception` -> per-CPU `HitRing` -> hwbpd -> event ring)
//!    to a reader taking 4,096 records per read, beside the kernel half
//!    alone as the reference; allocations per hit counted;
//! 3. one rotation tick with 10,000 flexible breakpoints, the first four
//!    tasks running (only the tasks that ran rotate: `Kernel::take_ran`);
//!    the scaling of every operation with N is `benches/scaling.rs`;
//! 4. (issue 12) hwbpd's bytes for one non-root uid under the worst
//!    pattern found, against the bound of scheme-hwbp/README.md;
//! 5. (issue 12) one user's hit-and-read with 0, 1,000 and 1,000,000
//!    subscribed event streams of another client open.
//!
//! `cargo bench -p hwbpd --bench scheme`

use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hwbp_kern::abi::HitRecord;
use hwbpd::scheme::ROOT_HANDLE;
use hwbpd::sim::dr_model::MemAccess;
use hwbpd::{Config, HwbpScheme, Kernel, SimKernel};
use libhwbp::abi::EVENT_RECORD_SIZE;
use redox_scheme::OpenResult;
use redox_scheme::scheme::SchemeSync;

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{ALLOCS, CountingAlloc, LIVE};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const ROOT: u32 = 0;
const BASE: u64 = 0x10_0000;

fn open(s: &mut HwbpScheme<SimKernel>, path: &str) -> usize {
    let ctx = hwbpd::caller_ctx(1, ROOT, 0);
    match s.openat(ROOT_HANDLE, path, 0, 0, &ctx) {
        Ok(OpenResult::ThisScheme { number, .. }) => number,
        other => panic!("open {path}: {other:?}"),
    }
}

fn per_op(d: Duration, n: u64) -> f64 {
    d.as_nanos() as f64 / n as f64
}

/// `already` flexible breakpoints over tasks of 100 each, then open+close
/// of one more, `rounds` times: in the first of those tasks (which holds
/// 100 of them when `already >= 100`) and in a task of its own. Returns
/// (ns in the task of 100, ns in a task of its own, setup time).
fn open_close(already: u64, rounds: u64) -> (f64, f64, Duration) {
    let tasks = already.div_ceil(100).max(1);
    let mut sim = SimKernel::new(4);
    let pids: Vec<u32> = (0..tasks).map(|_| sim.spawn(1000)).collect();
    let alone = sim.spawn(1000);
    let mut s = HwbpScheme::new(sim, Config::default());
    let setup = Instant::now();
    for i in 0..already {
        let pid = pids[(i / 100) as usize];
        open(&mut s, &format!("task/{pid}/mem:{:#x}/8:w", BASE + 8 * (i % 100)));
    }
    let setup = setup.elapsed();
    let pid = pids[0];
    let path = format!("task/{pid}/mem:{:#x}/8:w", BASE + 0x10_0000);
    let mut measure = |path: &str| {
        let t = Instant::now();
        for _ in 0..rounds {
            let fd = open(&mut s, black_box(path));
            s.on_close(fd);
        }
        per_op(t.elapsed(), rounds)
    };
    let shared = measure(&path);
    let own = measure(&format!("task/{alone}/mem:{:#x}/8:w", BASE + 0x10_0000));
    (shared, own, setup)
}

/// Hits through the whole path: simulated accesses, the kernel handler,
/// hwbpd routing into the event ring, and a reader taking `batch` records
/// per read. Returns (records/s, allocations per hit).
fn hits_to_reader(hits: u64, batch: usize) -> (f64, f64) {
    let mut sim = SimKernel::new(1);
    let pid = sim.spawn(1000);
    let tid = sim.main_thread(pid).unwrap();
    sim.switch(0, Some(tid)).unwrap();
    let mut s = HwbpScheme::new(sim, Config::default());
    let fd = open(&mut s, &format!("task/{pid}/mem:{BASE:#x}/8:w?ring=65536"));
    let efd = match s.dup(fd, libhwbp::abi::EVENTS_DUP_NAME.as_bytes(), &hwbpd::caller_ctx(1, ROOT, 0)) {
        Ok(OpenResult::ThisScheme { number, .. }) => number,
        other => panic!("{other:?}"),
    };
    let ctx = hwbpd::caller_ctx(1, ROOT, 0);
    let mut buf = vec![0u8; batch * EVENT_RECORD_SIZE];
    let mut got = 0u64;
    let allocs_before = ALLOCS.load(Ordering::Relaxed);
    let t = Instant::now();
    let mut made = 0;
    while made < hits {
        for _ in 0..batch {
            s.kernel_mut().run(tid, MemAccess::write(BASE, 8)).unwrap();
        }
        made += batch as u64;
        let n = s.read(efd, &mut buf, 0, 0, &ctx).unwrap();
        got += (n / EVENT_RECORD_SIZE) as u64;
        black_box(&buf);
    }
    let elapsed = t.elapsed();
    let allocs = ALLOCS.load(Ordering::Relaxed) - allocs_before;
    assert_eq!(got, made, "every record reached the reader");
    (made as f64 / elapsed.as_secs_f64(), allocs as f64 / made as f64)
}

/// The reference: the kernel half alone (accesses into the per-CPU ring,
/// drained in batches), no server.
fn hits_kernel_only(hits: u64, batch: usize) -> f64 {
    let mut sim = SimKernel::new(1);
    let pid = sim.spawn(1000);
    let tid = sim.main_thread(pid).unwrap();
    sim.switch(0, Some(tid)).unwrap();
    let piece = hwbp_kern::Piece::new(BASE, hwbp_kern::Len::Eight, hwbp_kern::Access::Write).unwrap();
    let plan = hwbp_kern::ContextPlan::from_pieces([hwbp_kern::ContextPiece { piece, token: 1, cpu: hwbp_kern::CpuFilter::Any, stop: false }]).unwrap();
    sim.set_task_plan(pid, &plan).unwrap();
    let mut out = vec![HitRecord::ZERO; batch];
    let mut got = 0u64;
    let t = Instant::now();
    while got < hits {
        for _ in 0..batch {
            sim.run(tid, MemAccess::write(BASE, 8)).unwrap();
        }
        got += sim.drain_hits(&mut out) as u64;
        black_box(&out);
    }
    hits as f64 / t.elapsed().as_secs_f64()
}

/// One rotation tick with `total` flexible breakpoints, `per_task` per task,
/// the first four tasks on the CPUs (what ran since the last tick).
fn rotation_tick(total: u64, per_task: u64, ticks: u64) -> f64 {
    let tasks = total / per_task;
    let mut sim = SimKernel::new(4);
    let pids: Vec<u32> = (0..tasks).map(|_| sim.spawn(1000)).collect();
    // The first four tasks run, so their plans reach registers.
    for (cpu, &pid) in pids.iter().take(4).enumerate() {
        let tid = sim.main_thread(pid).unwrap();
        sim.switch(cpu as u32, Some(tid)).unwrap();
    }
    let mut s = HwbpScheme::new(sim, Config::default());
    for i in 0..total {
        let pid = pids[(i / per_task) as usize];
        open(&mut s, &format!("task/{pid}/mem:{:#x}/8:w", BASE + 8 * (i % per_task)));
    }
    let rotation = s.config().rotation_ns;
    s.kernel_mut().advance(rotation);
    s.tick();
    let t = Instant::now();
    for _ in 0..ticks {
        s.kernel_mut().advance(rotation);
        s.tick();
    }
    per_op(t.elapsed(), ticks)
}

fn dup_events(s: &mut HwbpScheme<SimKernel>, fd: usize, pid: usize, uid: u32) -> Option<usize> {
    let ctx = hwbpd::caller_ctx(pid, uid, uid);
    match s.dup(fd, libhwbp::abi::EVENTS_DUP_NAME.as_bytes(), &ctx) {
        Ok(OpenResult::ThisScheme { number, .. }) => {
            s.fevent(number, syscall::flag::EVENT_READ, &ctx).unwrap();
            Some(number)
        }
        _ => None,
    }
}

/// The worst pattern found for one non-root uid (quota 64, ring=4096):
/// three rounds of — open the whole quota, each breakpoint on a task of
/// its own and split into 4 pieces; `STREAMS_PER_QUOTA` subscribed streams
/// on each; fill every ring; close the breakpoint handles (the streams keep
/// the state; the next round's opens are refused). Also tried: ring=1048576
/// (EPERM), more streams (EMFILE). Returns (peak bytes, breakpoint states
/// kept, streams held), the bytes beside what the server held before.
fn worst_uid_bytes(ring: usize) -> (i64, usize, usize) {
    const USER: u32 = 1000;
    let quota = Config::default().user_quota;
    let mut sim = SimKernel::new(2);
    let tasks: Vec<(u32, u64)> = (0..quota * 3)
        .map(|_| {
            let pid = sim.spawn(USER);
            (pid, sim.main_thread(pid).unwrap())
        })
        .collect();
    let mut s = HwbpScheme::new(sim, Config::default());
    let user_open = |s: &mut HwbpScheme<SimKernel>, pid: u32, path: &str| {
        match s.openat(ROOT_HANDLE, path, 0, 0, &hwbpd::caller_ctx(pid as usize, USER, USER)) {
            Ok(OpenResult::ThisScheme { number, .. }) => Some(number),
            _ => None,
        }
    };
    let start = LIVE.load(Ordering::Relaxed);
    let mut peak = 0;
    let mut streams = 0;
    for round in 0..3 {
        let mine = &tasks[round * quota..(round + 1) * quota];
        let mut fds = Vec::new();
        for (i, &(pid, _)) in mine.iter().enumerate() {
            let addr = BASE + 0x100 * i as u64 + 1;
            assert!(user_open(&mut s, pid, &format!("task/{pid}/mem:{addr:#x}/6:w?ring=1048576")).is_none());
            if let Some(fd) = user_open(&mut s, pid, &format!("task/{pid}/mem:{addr:#x}/6:w?ring={ring}")) {
                fds.push((fd, pid));
            }
        }
        for &(fd, pid) in &fds {
            for _ in 0..libhwbp::abi::STREAMS_PER_QUOTA {
                streams += usize::from(dup_events(&mut s, fd, pid as usize, USER).is_some());
            }
        }
        if let Some(&(fd, pid)) = fds.first() {
            assert!(dup_events(&mut s, fd, pid as usize, USER).is_none(), "stream cap");
        }
        for (i, &(_, tid)) in mine.iter().enumerate() {
            let addr = BASE + 0x100 * i as u64 + 1;
            s.kernel_mut().switch((i % 2) as u32, Some(tid)).unwrap();
            for _ in 0..ring {
                s.kernel_mut().run(tid, MemAccess::write(addr, 1)).unwrap();
            }
            s.collect();
        }
        s.take_fevents();
        peak = peak.max(LIVE.load(Ordering::Relaxed) - start);
        for (fd, _) in fds {
            s.on_close(fd);
        }
        peak = peak.max(LIVE.load(Ordering::Relaxed) - start);
    }
    (peak, s.breakpoint_count(), streams)
}

/// One user's hit-and-read (a write its breakpoint catches, then a
/// non-blocking read of the record) with `elsewhere` subscribed streams of
/// another client (root: no stream cap) open on its own breakpoint.
/// Returns (median ns, fastest ns).
fn hit_and_read_beside(elsewhere: usize, rounds: usize) -> (f64, f64) {
    let mut sim = SimKernel::new(2);
    let pid = sim.spawn(1000);
    let tid = sim.main_thread(pid).unwrap();
    sim.switch(0, Some(tid)).unwrap();
    let other = sim.spawn(0);
    let mut s = HwbpScheme::new(sim, Config::default());
    let fd = open(&mut s, &format!("task/{pid}/mem:{BASE:#x}/8:w"));
    let efd = dup_events(&mut s, fd, pid as usize, 1000).unwrap();
    let rfd = open(&mut s, &format!("task/{other}/mem:{BASE:#x}/8:w"));
    for _ in 0..elsewhere {
        dup_events(&mut s, rfd, 1, ROOT).unwrap();
    }
    let ctx = hwbpd::caller_ctx(pid as usize, 1000, 1000);
    let mut buf = [0u8; EVENT_RECORD_SIZE];
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        s.kernel_mut().run(tid, MemAccess::write(BASE, 8)).unwrap();
        let n = s.read(efd, &mut buf, 0, syscall::flag::O_NONBLOCK as u32, &ctx).unwrap();
        times.push(t.elapsed().as_nanos() as f64);
        assert_eq!(n, EVENT_RECORD_SIZE);
        black_box(s.take_fevents());
    }
    times.sort_by(f64::total_cmp);
    (times[rounds / 2], times[0])
}

fn main() {
    if std::env::var("HWBP_BENCH_ONLY").is_ok_and(|v| v == "12") {
        return issue_12();
    }
    if let Ok(n) = std::env::var("HWBP_BENCH_SETUP") {
        for n in n.split(',').map(|n| n.parse::<u64>().unwrap()) {
            let (ns, own, setup) = open_close(n, 100);
            println!("{n} open: setup {:.2} s, open+close {ns:.0} ns (task of its own: {own:.0} ns)", setup.as_secs_f64());
        }
        return;
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_default();
    println!("hwbpd benchmarks on {cpu} ({} threads)", std::thread::available_parallelism().map_or(0, |n| n.get()));

    println!("\n1. open+close of one breakpoint through SchemeSync (flexible, 100 per task already open)");
    println!("   already open   ns: in a task of 100   in a task of its own   (setup)");
    // An open or close walks only its task's breakpoints that can be armed,
    // so 100,000 runs by default.
    let sizes: &[(u64, u64)] = &[(0, 20_000), (1_000, 20_000), (10_000, 20_000), (100_000, 20_000)];
    for &(already, rounds) in sizes {
        let (ns, own, setup) = open_close(already, rounds);
        println!("   {already:>12}   {ns:>19.0}   {own:>20.0}   ({:.1} s to open them)", setup.as_secs_f64());
    }

    println!("\n2. hit records per second, simulated #DB -> reader (4,096 records per read)");
    let hits = 1_000 * 4_096;
    let kernel = hits_kernel_only(hits, 4096);
    let (full, allocs) = hits_to_reader(hits, 4096);
    println!("   kernel half only (reference): {:>6.1} M records/s", kernel / 1e6);
    println!("   through hwbpd to the reader:  {:>6.1} M records/s   ({allocs:.6} allocations per hit; goal > 10 M/s)", full / 1e6);

    println!("\n3. one rotation tick with 10,000 flexible breakpoints, the first 4 tasks running");
    for (per_task, label) in [(10_000, "all on one task"), (100, "100 per task, 100 tasks"), (4, "4 per task, 2,500 tasks (nothing to rotate)")] {
        let ns = rotation_tick(10_000, per_task, 200);
        println!("   {label:<45} {:>9.3} us per tick", ns / 1e3);
    }
    issue_12();
}

fn issue_12() {
    let quota = Config::default().user_quota;
    println!("\n4. bytes hwbpd holds for one non-root uid, worst pattern (quota {quota}, 4 streams per breakpoint, rings full)");
    for ring in [libhwbp::abi::USER_MAX_RING as usize, 1] {
        let (peak, kept, streams) = worst_uid_bytes(ring);
        let rings = quota * ring * EVENT_RECORD_SIZE;
        let bound = hwbpd::usage::bytes_bound(quota, ring);
        println!(
            "   ring={ring:<5} peak {peak:>9} bytes = rings {rings:>9} + {:>5} per breakpoint; bound {bound:>9} ({kept} states kept, {streams} streams)",
            (peak - rings as i64) / quota as i64
        );
    }

    println!("\n5. one user's hit-and-read with another client's subscribed streams open");
    println!("   streams elsewhere      median ns   fastest ns");
    for elsewhere in [0, 1_000, 1_000_000] {
        let (median, fastest) = hit_and_read_beside(elsewhere, 20_000);
        println!("   {elsewhere:>17}   {median:>11.0}   {fastest:>10.0}");
    }
}
