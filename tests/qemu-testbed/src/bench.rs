//! Bench mode (`--features bench`, run with `-icount shift=0,sleep=off` so
//! that rdtsc counts guest instructions): the path length of a #DB round
//! trip through the crate's handler against a bare handler, and of a switch
//! with and without debug state. Not a test: it prints figures.

use core::hint::black_box;

use hwbp_kern::piece::{Access, Len, Piece};
use hwbp_kern::plan::{ContextPiece, ContextPlan, CpuFilter};
use hwbp_kern::regs::WriteCounts;

use crate::println;
use crate::rdtsc;
use crate::sched::{SCHED, Scheduler, TaskId};
use crate::serial::{self, ExitCode};
use crate::trap::{DEBUG, HandlerMode, RING, RING_CAPACITY, take_slot_hits};
use crate::user::Cmd;

/// The crate's #DB path may add this many instructions to a bare trap.
const GOAL_ADDED_PER_HIT: u64 = 150;
/// Hits per task run: stays below the ring's capacity, so every hit takes
/// the push path (the ring is drained between runs).
const HITS_PER_RUN: u64 = RING_CAPACITY as u64 / 2;
const RUNS: u64 = 64;
const SWITCHES: u64 = 1000;

#[repr(C, align(4096))]
struct Page([u8; 4096]);
static mut BENCH_PAGE: Page = Page([0; 4096]);
/// Holds every record of the handler-logic loop (no drops).
static BENCH_RING: hwbp_kern::HitRing<1024> = hwbp_kern::HitRing::new();
static PUSH_RING: hwbp_kern::HitRing<1024> = hwbp_kern::HitRing::new();

fn var(offset: u64) -> u64 {
    &raw const BENCH_PAGE as u64 + offset
}

fn plan(addrs: &[u64]) -> ContextPlan {
    let mut p = ContextPlan::EMPTY;
    for (i, &addr) in addrs.iter().enumerate() {
        let piece = Piece::new(addr, Len::Eight, Access::Write).expect("aligned bench piece");
        p.push(ContextPiece { piece, token: i as u64, cpu: CpuFilter::Any, stop: false }).expect("fits");
    }
    p
}

fn drain_ring() {
    // SAFETY: the kernel is the ring's only consumer.
    while unsafe { RING.pop() }.is_some() {}
}

/// Instructions per store in task `t`'s timed loop (measured in ring 3),
/// with the #DB entry in `mode` (and, in crate mode, with or without the
/// DR7 clear at entry and restore before `iretq`).
fn per_store(s: &mut Scheduler, t: TaskId, mode: HandlerMode, dr7_clear_restore: bool) -> u64 {
    // SAFETY: between task runs.
    let g = unsafe { DEBUG.get() };
    g.mode = mode;
    g.dr7_clear_restore = dr7_clear_restore;
    let mut total = 0;
    for _ in 0..RUNS {
        match s.run(t, Cmd::TimedWrites { addr: var(0x100), times: HITS_PER_RUN }) {
            crate::sched::Outcome::Done(elapsed) => total += elapsed,
            other => panic!("bench task failed: {other:?}"),
        }
        drain_ring();
    }
    // SAFETY: as above.
    let g = unsafe { DEBUG.get() };
    g.mode = HandlerMode::Crate;
    g.dr7_clear_restore = true;
    total / (RUNS * HITS_PER_RUN)
}

/// Instructions per call of `f`, minus the loop itself.
fn per_call(mut f: impl FnMut(u64)) -> u64 {
    let empty = {
        let t0 = rdtsc();
        for i in 0..SWITCHES {
            black_box(i);
        }
        rdtsc() - t0
    };
    let t0 = rdtsc();
    for i in 0..SWITCHES {
        f(black_box(i));
    }
    (rdtsc() - t0).saturating_sub(empty) / SWITCHES
}

fn ratio(a: u64, b: u64) -> (u64, u64) {
    let r = if b == 0 { 0 } else { a * 100 / b };
    (r / 100, r % 100)
}

pub fn run() -> ! {
    // SAFETY: the only reference to the scheduler, for the whole run.
    let s = unsafe { SCHED.get() };
    let t = s.spawn(None);
    let other = s.spawn(None);

    // #DB round trip.
    let loop_only = per_store(s, t, HandlerMode::Crate, true);
    s.set_plan(t, Some(plan(&[var(0x100)])));
    let bare = per_store(s, t, HandlerMode::Bare, false);
    let without_dr7 = per_store(s, t, HandlerMode::Crate, false);
    let with_crate = per_store(s, t, HandlerMode::Crate, true);
    s.set_plan(t, None);
    let _ = take_slot_hits();
    let bare_trap = bare - loop_only;
    let old_trap = without_dr7 - loop_only;
    let crate_trap = with_crate - loop_only;
    let added = crate_trap.saturating_sub(bare_trap);
    let old_added = old_trap.saturating_sub(bare_trap);
    let (oi, of) = ratio(old_trap, bare_trap);
    let (ri, rf) = ratio(crate_trap, bare_trap);
    println!("BENCH #DB round trip, guest instructions per hit (ring-3 store -> #DB -> iretq), {} hits:", RUNS * HITS_PER_RUN);
    println!("BENCH   store loop alone            {loop_only:>6}");
    println!("BENCH   bare handler (read+clear DR6) {bare_trap:>4}");
    println!("BENCH   crate path (PublishedLoad + SlotHits), DR7 left alone     {old_trap:>5}   ratio {oi}.{of:02}x   added {old_added}");
    println!("BENCH   crate path + DR7 cleared at entry, restored before iretq {crate_trap:>5}   ratio {ri}.{rf:02}x   added {added}");
    println!("BENCH   the DR7 clear/restore alone (read DR7, 2 DR7 writes)    {:>5}", crate_trap.saturating_sub(old_trap));
    println!(
        "BENCH   added by the crate per hit (with the DR7 clear/restore) {added:>5}   goal < {GOAL_ADDED_PER_HIT}: {}",
        if added < GOAL_ADDED_PER_HIT { "MET" } else { "NOT MET" }
    );

    // The crate's handler alone, on in-memory registers (no DR access):
    // what of the added path is the crate's own logic.
    let mut state = hwbp_kern::CpuDebugState::new(0);
    let mut mem = hwbp_kern::regs::RegisterFile::RESET;
    state.switch_to(&mut mem, Some(&plan(&[var(0x100)])));
    let info = hwbp_kern::TrapInfo { rip: 0x1000, user_mode: true, context: 1, timestamp: 0 };
    let logic = per_call(|_| {
        mem.dr6 = hwbp_kern::dr6::CLEAR | 1;
        // SAFETY: this loop is BENCH_RING's only producer.
        black_box(unsafe { state.handle_debug_exception(&mut mem, &BENCH_RING, black_box(&info)) });
    });
    println!("BENCH   of which handle_debug_exception's own logic (RegisterFile, no DR access) {logic}");
    // Pieces of that logic, for whoever optimises it.
    let used = per_call(|_| {
        black_box(black_box(&state).loaded().used_slots());
    });
    let decode = per_call(|i| {
        black_box(hwbp_kern::Dr6Status::decode(black_box(hwbp_kern::dr6::CLEAR | (i & 1))));
    });
    let record = hwbp_kern::abi::HitRecord::ZERO;
    let push = per_call(|_| {
        // SAFETY: this loop is PUSH_RING's only producer.
        black_box(unsafe { PUSH_RING.push(black_box(record)) });
    });
    println!("BENCH     Composition::used_slots {used}, Dr6Status::decode {decode}, HitRing::push {push}");

    // switch_to alone, called as the scheduler calls it.
    let plan_a = plan(&[var(0x200)]);
    let plan_b = plan(&[var(0x300), var(0x340)]);
    // SAFETY: the bench runs between task runs; no trap touches the state.
    let dbg = unsafe { DEBUG.get() };
    let _ = s.run(other, Cmd::Nop);
    dbg.cpu.switch_to(&mut s.regs, None);
    let w0 = s.regs.writes;
    let lazy = per_call(|_| dbg.cpu.switch_to(&mut s.regs, black_box(None)));
    let lazy_writes = s.regs.writes.switch_writes() - w0.switch_writes();
    let w1 = s.regs.writes;
    let between = per_call(|i| dbg.cpu.switch_to(&mut s.regs, black_box(Some(if i % 2 == 0 { &plan_a } else { &plan_b }))));
    let between_writes = s.regs.writes.switch_writes() - w1.switch_writes();
    let w2 = s.regs.writes;
    let same = per_call(|_| dbg.cpu.switch_to(&mut s.regs, black_box(Some(&plan_b))));
    let same_writes = s.regs.writes.switch_writes() - w2.switch_writes();
    // Another thread of the same process: equal pieces, written separately
    // (its own version stamp), so the switch recomposes but writes nothing.
    let plan_b_thread = plan(&[var(0x300), var(0x340)]);
    let w3 = s.regs.writes;
    let thread = per_call(|i| dbg.cpu.switch_to(&mut s.regs, black_box(Some(if i % 2 == 0 { &plan_b_thread } else { &plan_b }))));
    let thread_writes = s.regs.writes.switch_writes() - w3.switch_writes();
    dbg.cpu.switch_to(&mut s.regs, None);
    println!("BENCH switch_to, guest instructions per call ({SWITCHES} calls each), DR writes in total:");
    println!("BENCH   no debug state on either side (lazy)   {lazy:>6}   {lazy_writes} writes");
    println!("BENCH   the plan loaded last again             {same:>6}   {same_writes} writes");
    println!("BENCH   equal plans of two threads, in turn    {thread:>6}   {thread_writes} writes");
    println!(
        "BENCH   alternating 1-piece / 2-piece plans    {between:>6}   {between_writes} writes ({}.{:02} per switch)",
        between_writes / SWITCHES,
        between_writes * 100 / SWITCHES % 100
    );

    // A whole ring-3 round trip: switch + iretq + int 0x80, two tasks.
    let round_trip = |s: &mut Scheduler| {
        let t0 = rdtsc();
        for i in 0..SWITCHES {
            let _ = s.run(if i % 2 == 0 { t } else { other }, Cmd::Nop);
        }
        (rdtsc() - t0) / SWITCHES
    };
    s.regs.writes = WriteCounts::default();
    let plain = round_trip(s);
    let plain_writes = s.regs.writes.switch_writes();
    s.set_plan(t, Some(plan_a));
    s.set_plan(other, Some(plan_b));
    s.regs.writes = WriteCounts::default();
    let armed = round_trip(s);
    let armed_writes = s.regs.writes.switch_writes();
    let (ai, af) = ratio(armed, plain);
    println!("BENCH task switch + ring-3 round trip, guest instructions ({SWITCHES} switches):");
    println!("BENCH   contexts without breakpoints  {plain:>6}   {plain_writes} DR writes");
    println!("BENCH   contexts with breakpoints     {armed:>6}   {armed_writes} DR writes   ratio {ai}.{af:02}x");
    println!(
        "BENCH   goal: zero DR writes on switches between contexts without breakpoints: {}",
        if lazy_writes == 0 && plain_writes == 0 { "MET" } else { "NOT MET" }
    );
    serial::exit(ExitCode::BenchDone)
}
