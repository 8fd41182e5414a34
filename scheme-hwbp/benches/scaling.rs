//! Scaling bench (issue 13): what one operation costs hwbpd as the number
//! of open breakpoints grows, through `SchemeSync` on the simulated kernel
//! (4 CPUs), for each shape of population:
//!
//! - `pinned, own task`: N pinned breakpoints, one per task; the measured
//!   one pinned, in a task of its own;
//! - `flexible, K per task` (K = 1, 10, 100): N flexible breakpoints, K per
//!   task; the measured one in the first of those tasks;
//! - `all on one task`: N flexible breakpoints on one task; the measured one
//!   there too;
//! - `cpu/all flexible`: N flexible `cpu/all` breakpoints; the measured one
//!   `cpu/all` as well.
//!
//! Printed per shape and N (100 / 1,000 / 10,000 / 100,000):
//!
//! - `open+close`: ns for one open and one close of the measured breakpoint
//!   (each call pushes its plans to the kernel before it returns), median
//!   of 3 batches;
//! - `tick`: ns for one rotation tick (`HwbpScheme::tick`: collect, rotate
//!   the tasks that ran, push), median of 3 batches. Before each tick,
//!   outside the timing, the clock moves one rotation period and 4 tasks
//!   of the population (1 where the smallest population has one task) are
//!   switched onto the CPUs: the next ones in turn among its first 64
//!   tasks, after one untimed batch. So as much runs at every N, on data as warm at every N (taking
//!   the tasks in turn among all of them would make each tick's tasks warm
//!   at 100 and cold at 100,000: a cache effect, measured on its own with
//!   `HWBP_SCALING_COLD=1`, which evicts the caches before every tick and
//!   every open+close);
//! - `bytes/bp`: bytes hwbpd (server, engine, the kernel's side of the
//!   plans) holds per open breakpoint, from a counting global allocator
//!   (tasks are spawned before counting);
//! - `xN/10`: each figure divided by the same figure at a tenth of the
//!   breakpoints: the growth per 10x (1.0 = flat, 10 = linear).
//!
//! `cargo bench -p hwbpd --bench scaling` (`HWBP_SCALING_MAX=10000` stops
//! at 10,000; `HWBP_SCALING_SHAPE=one` runs the shapes whose label
//! contains `one`).

use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::time::Instant;

use hwbpd::scheme::ROOT_HANDLE;
use hwbpd::{Config, HwbpScheme, SimKernel};
use redox_scheme::OpenResult;
use redox_scheme::scheme::SchemeSync;

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{CountingAlloc, LIVE};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const CPUS: u32 = 4;
const BASE: u64 = 0x10_0000;
/// Where the measured breakpoint watches: apart from every population one.
const MEASURED: u64 = 0x7000_0000;
const SIZES: [u64; 4] = [100, 1_000, 10_000, 100_000];
/// The tasks that take turns on the CPUs between ticks.
const RUNNING_POOL: u64 = 64;
/// Batches per figure; the median is printed.
const BATCHES: usize = 3;

#[derive(Clone, Copy)]
enum Shape {
    PinnedOwnTask,
    PerTask(u64),
    OneTask,
    CpuAll,
}

impl Shape {
    fn label(self) -> String {
        match self {
            Shape::PinnedOwnTask => "pinned, own task".to_string(),
            Shape::PerTask(k) => format!("flexible, {k} per task"),
            Shape::OneTask => "all on one task".to_string(),
            Shape::CpuAll => "cpu/all flexible".to_string(),
        }
    }

    /// Tasks the population needs.
    fn tasks(self, n: u64) -> u64 {
        match self {
            Shape::PinnedOwnTask => n,
            Shape::PerTask(k) => n.div_ceil(k),
            Shape::OneTask => 1,
            Shape::CpuAll => 0,
        }
    }

    /// Population tasks switched in before each tick: one per CPU, but
    /// never more than the smallest population has, so that as many run at
    /// every N.
    fn runners(self) -> u64 {
        self.tasks(SIZES[0]).min(u64::from(CPUS))
    }

    /// The tasks those take turns among: the first 64, so that the tasks a
    /// tick touches are as warm at every N.
    fn turns(self, n: u64) -> usize {
        self.tasks(n).min(RUNNING_POOL) as usize
    }

    /// The path of population breakpoint `i` (of tasks `pids`).
    fn path(self, i: u64, pids: &[u32]) -> String {
        match self {
            Shape::PinnedOwnTask => format!("task/{}/mem:{BASE:#x}/8:w?pinned", pids[i as usize]),
            Shape::PerTask(k) => format!("task/{}/mem:{:#x}/8:w", pids[(i / k) as usize], BASE + 8 * (i % k)),
            Shape::OneTask => format!("task/{}/mem:{:#x}/8:w", pids[0], BASE + 8 * i),
            Shape::CpuAll => format!("cpu/all/mem:{:#x}/8:w", BASE + 8 * i),
        }
    }

    /// The measured breakpoint's path; `own` is a task with none.
    fn measured(self, pids: &[u32], own: u32) -> String {
        match self {
            Shape::PinnedOwnTask => format!("task/{own}/mem:{MEASURED:#x}/8:w?pinned"),
            Shape::PerTask(_) | Shape::OneTask => format!("task/{}/mem:{MEASURED:#x}/8:w", pids[0]),
            Shape::CpuAll => format!("cpu/all/mem:{MEASURED:#x}/8:w"),
        }
    }
}

fn open(s: &mut HwbpScheme<SimKernel>, path: &str) -> usize {
    let ctx = hwbpd::caller_ctx(1, 0, 0);
    match s.openat(ROOT_HANDLE, path, 0, 0, &ctx) {
        Ok(OpenResult::ThisScheme { number, .. }) => number,
        other => panic!("open {path}: {other:?}"),
    }
}

/// Larger than the last-level cache.
const EVICT_BYTES: usize = 64 << 20;

/// What 4 ms of other work does to the caches: touch every line of a
/// buffer larger than them.
fn evict_caches(buf: &mut [u8]) {
    for i in (0..buf.len()).step_by(64) {
        buf[i] = buf[i].wrapping_add(1);
    }
    black_box(&buf);
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Figures {
    open_close_ns: f64,
    tick_ns: f64,
    bytes_per_bp: f64,
    setup_s: f64,
}

fn measure(shape: Shape, n: u64) -> Figures {
    let mut sim = SimKernel::new(CPUS);
    let pids: Vec<u32> = (0..shape.tasks(n)).map(|_| sim.spawn(1000)).collect();
    let tids: Vec<u64> = pids.iter().map(|&p| sim.main_thread(p).unwrap()).collect();
    let own = sim.spawn(1000);
    // Something runs on each CPU even without tasks of the population.
    let idle_tasks: Vec<u64> = (0..CPUS)
        .map(|_| {
            let pid = sim.spawn(1000);
            sim.main_thread(pid).unwrap()
        })
        .collect();
    let mut s = HwbpScheme::new(sim, Config::default());
    let before = LIVE.load(Ordering::Relaxed);
    let setup = Instant::now();
    for i in 0..n {
        open(&mut s, &shape.path(i, &pids));
    }
    let setup_s = setup.elapsed().as_secs_f64();
    let bytes_per_bp = (LIVE.load(Ordering::Relaxed) - before) as f64 / n as f64;
    let cold = std::env::var("HWBP_SCALING_COLD").is_ok();
    let mut scratch = if cold { vec![0u8; EVICT_BYTES] } else { Vec::new() };
    // Fewer rounds where one round costs more (the old planner's O(N), the
    // cache eviction).
    let rounds = if cold { 50 } else { 2_000 };
    let path = shape.measured(&pids, own);
    let open_close_ns = median(
        (0..BATCHES)
            .map(|_| {
                let mut spent = 0f64;
                for _ in 0..rounds {
                    if cold {
                        evict_caches(&mut scratch);
                    }
                    let t = Instant::now();
                    let fd = open(&mut s, black_box(&path));
                    s.on_close(fd);
                    spent += t.elapsed().as_nanos() as f64;
                }
                spent / rounds as f64
            })
            .collect(),
    );
    let rotation = s.config().rotation_ns;
    // The same count at every N: four turns of the running tasks' pool.
    let ticks = if cold { 64 } else { 4 * RUNNING_POOL as usize };
    let mut next = 0usize;
    // One untimed batch first: each task of the pool has rotated once.
    let tick_ns = median(
        (0..=BATCHES)
            .map(|_| {
                let mut spent = 0f64;
                for _ in 0..ticks {
                    let sim = s.kernel_mut();
                    sim.advance(rotation);
                    // The same number of population tasks run at every N
                    // (what a tick costs is in proportion to them).
                    for cpu in 0..CPUS {
                        let tid = if (cpu as u64) < shape.runners() {
                            next += 1;
                            tids[next % shape.turns(n)]
                        } else {
                            idle_tasks[cpu as usize]
                        };
                        sim.switch(cpu, Some(tid)).unwrap();
                    }
                    if cold {
                        evict_caches(&mut scratch);
                    }
                    let t = Instant::now();
                    s.tick();
                    spent += t.elapsed().as_nanos() as f64;
                }
                spent / ticks as f64
            })
            .skip(1)
            .collect(),
    );
    Figures { open_close_ns, tick_ns, bytes_per_bp, setup_s }
}

fn growth(now: f64, before: Option<f64>) -> String {
    before.map_or(String::new(), |b| format!("x{:.1}", now / b))
}

fn main() {
    let max: u64 = std::env::var("HWBP_SCALING_MAX").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_default();
    let cold = if std::env::var("HWBP_SCALING_COLD").is_ok() { ", caches evicted before each operation" } else { "" };
    println!(
        "hwbpd scaling through SchemeSync, simulated kernel with {CPUS} CPUs{cold}, on {cpu} ({} threads)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<22} {:>7}  {:>13} {:>6}  {:>10} {:>6}  {:>9} {:>6}  {:>7}",
        "shape", "N", "open+close ns", "xN/10", "tick ns", "xN/10", "bytes/bp", "xN/10", "setup s"
    );
    let only = std::env::var("HWBP_SCALING_SHAPE").unwrap_or_default();
    let shapes = [Shape::PinnedOwnTask, Shape::PerTask(1), Shape::PerTask(10), Shape::PerTask(100), Shape::OneTask, Shape::CpuAll];
    let total = Instant::now();
    for shape in shapes.into_iter().filter(|s| s.label().contains(&only)) {
        let mut prev: Option<Figures> = None;
        for n in SIZES.into_iter().filter(|&n| n <= max) {
            let f = measure(shape, n);
            println!(
                "{:<22} {:>7}  {:>13.0} {:>6}  {:>10.0} {:>6}  {:>9.0} {:>6}  {:>7.1}",
                shape.label(),
                n,
                f.open_close_ns,
                growth(f.open_close_ns, prev.as_ref().map(|p| p.open_close_ns)),
                f.tick_ns,
                growth(f.tick_ns, prev.as_ref().map(|p| p.tick_ns)),
                f.bytes_per_bp,
                growth(f.bytes_per_bp, prev.as_ref().map(|p| p.bytes_per_bp)),
                f.setup_s,
            );
            prev = Some(f);
        }
    }
    println!("total {:.0} s", total.elapsed().as_secs_f64());
}
