//! Admission benchmark: register and unregister pinned breakpoints at scale
//! (256 CPUs, 1 to 10,000 tasks, up to 100,000 breakpoints, a mix of task
//! and cpu scopes like `perf bench breakpoint thread`), comparing in one run
//!
//! - `load`: this engine's admission structure (`hwbp_engine::load::Load`),
//! - `engine`: the whole `Engine::open` + `Engine::close` (validation,
//!   splitting, slot sharing, records) on the same workload,
//! - `hist`: Linux's 2022 histogram accounting (reimplemented),
//! - `walk`: Linux's pre-2022 accounting that walks every task breakpoint
//!   per CPU (reimplemented).
//!
//! One operation = reserve one new breakpoint into the populated state and
//! release it again. Prints ns per operation (best of 5 interleaved rounds)
//! and the ratios. Run with
//! `cargo bench -p hwbp-engine --bench admission` (about a minute).

use std::hint::black_box;
use std::time::{Duration, Instant};

use hwbp_engine::baseline::histogram::Histograms;
use hwbp_engine::baseline::walk::TaskWalk;
use hwbp_engine::baseline::{BpDesc, Handle, LoadAccounting, SlotAccounting};
use hwbp_engine::{Config, Engine, Request, Rotation};
use hwbp_kern::Access;

const CPUS: u32 = 256;
/// Time spent measuring one implementation once.
const BUDGET: Duration = Duration::from_millis(60);
/// The implementations are measured in turn this many times; each keeps its
/// best round, so a burst of load from other processes on the shared
/// machine hits no one implementation alone.
const ROUNDS: usize = 5;
/// Measured operations prepared per size (each implementation uses a
/// prefix).
const MAX_OPS: usize = 200_000;

struct Size {
    tasks: u32,
    task_bps: u32,
    cpu_bps: u32,
}

/// A small deterministic generator (same sequence for every run).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u32) -> u32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) % u64::from(n)) as u32
    }
}

/// The populated state: task `t`'s first breakpoint on every CPU, its next
/// ones each on a different CPU (so at most 2 slots per task per CPU), and
/// `cpu_bps` cpu-wide breakpoints spread over the CPUs (at most 1 per CPU).
fn population(s: &Size) -> Vec<(Handle, BpDesc)> {
    let mut out = Vec::new();
    for i in 0..s.task_bps {
        let task = i % s.tasks + 1;
        let k = i / s.tasks;
        let cpu = (k > 0).then(|| (task * 13 + k) % CPUS);
        out.push((out.len() as Handle + 1, BpDesc { task: Some(task), cpu }));
    }
    for c in 0..s.cpu_bps {
        out.push((out.len() as Handle + 1, BpDesc { task: None, cpu: Some(c % CPUS) }));
    }
    out
}

/// Measured operations: 80% task on every CPU, 10% task on one CPU, 10%
/// cpu-wide; every one fits beside the population.
fn operations(s: &Size) -> Vec<BpDesc> {
    let mut rng = Lcg(0x5eed ^ u64::from(s.tasks) ^ (u64::from(s.task_bps) << 20));
    (0..MAX_OPS)
        .map(|_| match rng.below(10) {
            0 => BpDesc { task: Some(rng.below(s.tasks) + 1), cpu: Some(rng.below(CPUS)) },
            1 => BpDesc { task: None, cpu: Some(rng.below(CPUS)) },
            _ => BpDesc { task: Some(rng.below(s.tasks) + 1), cpu: None },
        })
        .collect()
}

/// ns per operation of `op` over the prepared operations.
fn measure(ops: &[BpDesc], mut op: impl FnMut(usize, BpDesc)) -> f64 {
    for (i, &bp) in ops.iter().take(3).enumerate() {
        op(i, bp);
    }
    let start = Instant::now();
    let mut done = 0;
    for (i, &bp) in ops.iter().enumerate() {
        op(i, bp);
        done += 1;
        if done % 16 == 0 && start.elapsed() >= BUDGET {
            break;
        }
        if done >= 3 && start.elapsed() >= BUDGET * 4 {
            break;
        }
    }
    start.elapsed().as_nanos() as f64 / f64::from(done)
}

fn bench_accounting(acc: &mut impl SlotAccounting, ops: &[BpDesc]) -> f64 {
    const BASE: Handle = 1 << 40;
    measure(ops, |i, bp| {
        let h = BASE + i as Handle;
        acc.reserve(h, black_box(bp)).expect("every measured operation fits");
        acc.release(h, bp);
    })
}

fn request(bp: BpDesc, n: u64) -> Request {
    Request { pinned: true, ..Request::new(bp.scope(), 0x1000_0000 + 8 * n, 8, Access::Write) }
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let sizes = [
        Size { tasks: 1, task_bps: 1, cpu_bps: 0 },
        Size { tasks: 1, task_bps: 10, cpu_bps: 0 },
        Size { tasks: 10, task_bps: 100, cpu_bps: 0 },
        Size { tasks: 100, task_bps: 1_000, cpu_bps: 256 },
        Size { tasks: 1_000, task_bps: 1_000, cpu_bps: 0 },
        Size { tasks: 1_000, task_bps: 10_000, cpu_bps: 256 },
        Size { tasks: 10_000, task_bps: 10_000, cpu_bps: 256 },
        Size { tasks: 10_000, task_bps: 100_000, cpu_bps: 256 },
    ];
    println!("admission: reserve + release of one pinned breakpoint, {CPUS} CPUs, ns per operation");
    println!(
        "{:>6} {:>7} {:>9} {:>9} {:>9} {:>11} {:>10} {:>10} {:>11} {:>9}",
        "tasks", "bps", "load", "engine", "hist", "walk", "hist/load", "walk/load", "hist/engine", "tick(us)"
    );
    let total = Instant::now();
    for s in &sizes {
        let pop = population(s);
        let ops = operations(s);

        let mut load = LoadAccounting::new(CPUS);
        let mut hist = Histograms::new(CPUS);
        let mut engine = Engine::new(Config::new(CPUS));
        for (n, &(h, bp)) in pop.iter().enumerate() {
            load.reserve(h, bp).expect("population fits");
            hist.reserve(h, bp).expect("population fits");
            engine.open(&request(bp, n as u64), 0, 0).expect("population fits");
        }
        let mut walk = TaskWalk::bulk(CPUS, &pop);
        // The first plan of the population is not part of any operation.
        engine.tick(0);

        let base = pop.len() as u64 + 1;
        let (mut t_load, mut t_hist, mut t_walk, mut t_engine) = (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
        for _ in 0..ROUNDS {
            t_load = t_load.min(bench_accounting(&mut load, &ops));
            t_hist = t_hist.min(bench_accounting(&mut hist, &ops));
            t_engine = t_engine.min(measure(&ops, |i, bp| {
                let id = engine.open(black_box(&request(bp, base + i as u64)), 0, 0).expect("fits");
                engine.close(id, 0).expect("open");
            }));
            t_walk = t_walk.min(bench_accounting(&mut walk, &ops));
        }
        // What the scheme pays after each open: one (incremental) replan.
        // The opens and closes measured above ran without ticks: plan them
        // first.
        engine.tick(0);
        let t_tick = {
            let (mut spent, mut count) = (Duration::ZERO, 0u32);
            let start = Instant::now();
            for (i, &bp) in ops.iter().enumerate() {
                let id = engine.open(&request(bp, base + i as u64), 0, 0).expect("fits");
                let t = Instant::now();
                black_box(engine.tick(0));
                spent += t.elapsed();
                count += 1;
                engine.close(id, 0).expect("open");
                engine.tick(0);
                if start.elapsed() >= BUDGET {
                    break;
                }
            }
            spent.as_secs_f64() * 1e6 / f64::from(count)
        };
        println!(
            "{:>6} {:>7} {:>9.1} {:>9.1} {:>9.1} {:>11.1} {:>9.1}x {:>9.1}x {:>10.1}x {:>9.1}",
            s.tasks,
            pop.len(),
            t_load,
            t_engine,
            t_hist,
            t_walk,
            t_hist / t_load,
            t_walk / t_load,
            t_hist / t_engine,
            t_tick
        );
    }
    open_close_beside_flexible();
    rotation_ticks();
    println!("total {:.1} s", total.elapsed().as_secs_f64());
}

/// What the scheme pays per open+close of a flexible breakpoint (each
/// followed by `Engine::tick`, as hwbpd does) while `n` flexible
/// breakpoints of other tasks are open, 10 per task (so every task is
/// contended), no cpu-wide ones. `own task`: the measured breakpoint in a
/// task of its own; `own 10`: in a task that already holds 10 flexible
/// breakpoints (its own walk is the cost); `cpu-wide`: as `own task` with
/// one flexible cpu-wide breakpoint per CPU opened first (the task's walk
/// reads them, the cpu-wide walk runs again; the bench asserts that no
/// tick walked every domain); `all domains`: as `own task` with every
/// domain walked after each call (`Engine::replan_all`: what a change
/// ahead of a cpu-wide step costs, and the cost of the planner's one
/// O(domains) path).
fn open_close_beside_flexible() {
    println!();
    println!("open+close of a flexible breakpoint + tick after each, {CPUS} CPUs, n flexible breakpoints of other tasks (10 per task), us per operation");
    println!("{:>8} {:>14} {:>14} {:>14} {:>14}", "n", "own task", "own 10", "cpu-wide", "all domains");
    for n in [0u32, 1_000, 10_000, 100_000] {
        let mut engine = Engine::new(Config::new(CPUS));
        let mut with_cpu_wide = Engine::new(Config::new(CPUS));
        for c in 0..CPUS {
            let bp = BpDesc { task: None, cpu: Some(c) };
            with_cpu_wide.open(&Request { pinned: false, ..request(bp, u64::from(c)) }, 0, 0).expect("fits");
        }
        for i in 0..n {
            let bp = BpDesc { task: Some(i / 10 + 1), cpu: None };
            let req = Request { pinned: false, ..request(bp, u64::from(i)) };
            engine.open(&req, 0, 0).expect("flexible always fits");
            with_cpu_wide.open(&req, 0, 0).expect("flexible always fits");
        }
        with_cpu_wide.replan_all(0);
        // A task of its own (none of the n), and one with 10 of its own.
        let (fresh, busy) = (n / 10 + 100, n / 10 + 101);
        for k in 0..10 {
            let bp = BpDesc { task: Some(busy), cpu: None };
            engine.open(&Request { pinned: false, ..request(bp, u64::from(n + k)) }, 0, 0).expect("fits");
        }
        engine.replan_all(0);
        let ops: Vec<BpDesc> = vec![BpDesc { task: Some(fresh), cpu: None }; 20_000];
        let busy_ops: Vec<BpDesc> = vec![BpDesc { task: Some(busy), cpu: None }; 20_000];
        let base = u64::from(n) + 100;
        let once = |engine: &mut Engine, bp: BpDesc, i: usize, all: bool| {
            let req = Request { pinned: false, ..request(bp, base + i as u64) };
            let id = engine.open(black_box(&req), 0, 0).expect("flexible always fits");
            black_box(if all { engine.replan_all(0) } else { engine.tick(0) });
            engine.close(id, 0).expect("open");
            black_box(if all { engine.replan_all(0) } else { engine.tick(0) });
        };
        let (mut t_own, mut t_busy, mut t_cw, mut t_all) = (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
        let replans = with_cpu_wide.replan_counts();
        for _ in 0..ROUNDS {
            t_own = t_own.min(measure(&ops, |i, bp| once(&mut engine, bp, i, false)));
            t_cw = t_cw.min(measure(&ops, |i, bp| once(&mut with_cpu_wide, bp, i, false)));
            t_busy = t_busy.min(measure(&busy_ops, |i, bp| once(&mut engine, bp, i, false)));
            t_all = t_all.min(measure(&ops, |i, bp| once(&mut engine, bp, i, true)));
        }
        let walks_of_all = with_cpu_wide.replan_counts().0 - replans.0;
        assert_eq!(walks_of_all, 0, "beside cpu-wide flexible breakpoints no tick walked every domain");
        println!("{:>8} {:>14.2} {:>14.2} {:>14.2} {:>14.2}", n, t_own / 1e3, t_busy / 1e3, t_cw / 1e3, t_all / 1e3);
    }
}

/// The multiplexing cost: one rotation tick with `n` flexible breakpoints
/// (a tick that rotates, then plans), three ways: `4 ran`: with
/// `Rotation::TasksThatRan`, 4 tasks reported running before each tick
/// (what hwbpd does, with the kernel's report); `all tasks`: with
/// `Rotation::AllTasks`, every contended task rotates (6 of each task's 10
/// wait, so every task); `all domains`: as `all tasks`, with every domain
/// walked at every tick (`Engine::set_always_full_replan`). Three
/// workloads: 10 per task; the same plus one flexible cpu-wide breakpoint
/// per CPU (the cpu-wide breakpoints wait behind the tasks' and ask for
/// the first armed one of all to move, which changes the cpu-wide steps
/// ahead of task breakpoints: every tick walks every domain, see the
/// README's Limits); all on one task.
fn rotation_ticks() {
    println!();
    println!("rotation tick, {CPUS} CPUs, us per tick");
    println!("{:<40} {:>8} {:>10} {:>12} {:>12} {:>8}", "workload", "bps", "4 ran", "all tasks", "all domains", "ns/bp");
    let workloads: [(&str, u32, bool); 3] =
        [("10 per task", 10, false), ("10 per task + 1 cpu-wide per CPU", 10, true), ("all on one task", 0, false)];
    for (label, per_task, cpu_wide) in workloads {
        for n in [100u32, 1_000, 10_000, 100_000] {
            let per_task = if per_task == 0 { n } else { per_task };
            let (mut ran, mut all, mut full, mut total) = (f64::MAX, f64::MAX, f64::MAX, 0);
            for _ in 0..2 {
                let (t, bps) = rotation_tick(n, per_task, cpu_wide, Tick::Ran);
                ran = ran.min(t);
                total = bps;
                all = all.min(rotation_tick(n, per_task, cpu_wide, Tick::AllTasks).0);
                full = full.min(rotation_tick(n, per_task, cpu_wide, Tick::AllDomains).0);
            }
            println!(
                "{:<40} {:>8} {:>10.1} {:>12.1} {:>12.1} {:>8.1}",
                label,
                total,
                ran,
                all,
                full,
                all * 1e3 / f64::from(total)
            );
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tick {
    Ran,
    AllTasks,
    AllDomains,
}

/// us per rotation tick; and the number of breakpoints.
fn rotation_tick(n: u32, per_task: u32, cpu_wide: bool, how: Tick) -> (f64, u32) {
    let rotation = if how == Tick::Ran { Rotation::TasksThatRan } else { Rotation::AllTasks };
    let mut engine = Engine::new(Config { rotation, ..Config::new(CPUS) });
    engine.set_always_full_replan(how == Tick::AllDomains);
    let tasks = n / per_task;
    for i in 0..n {
        let bp = BpDesc { task: Some(i % tasks + 1), cpu: None };
        let req = Request { pinned: false, ..request(bp, u64::from(i)) };
        engine.open(&req, 0, 0).expect("flexible always fits");
    }
    let cpu_wide = if cpu_wide { CPUS } else { 0 };
    for c in 0..cpu_wide {
        let bp = BpDesc { task: None, cpu: Some(c) };
        let req = Request { pinned: false, ..request(bp, u64::from(n + c)) };
        engine.open(&req, 0, 0).expect("flexible always fits");
    }
    let total = n + cpu_wide;
    let rotation = Config::new(CPUS).rotation_ns;
    let mut now = 0;
    engine.tick(now);
    let start = Instant::now();
    let mut ticks = 0u32;
    while ticks < 3 || start.elapsed() < BUDGET {
        now += rotation;
        // The next 4 tasks in turn (among the first 64) ran.
        for k in 0..4 {
            engine.task_ran((ticks * 4 + k) % tasks.min(64) + 1);
        }
        black_box(engine.tick(now));
        ticks += 1;
    }
    (start.elapsed().as_secs_f64() * 1e6 / f64::from(ticks), total)
}
