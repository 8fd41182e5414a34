//! hwbp on the host: a watchpoint armed through the scheme on the
//! simulated kernel, hit by a simulated task, read back with libhwbp; then
//! six flexible watches multiplexed over four debug registers.
//!
//! `cargo run -p hwbpd --bin hwbp-demo`

use hwbpd::sim::dr_model::MemAccess;
use hwbpd::{Config, HwbpScheme, InProcess, SimKernel};
use libhwbp::abi::{Access, Target};
use libhwbp::{Breakpoint, Batch};
use libhwbp::abi::EventRecord;

const USER: u32 = 1000;
/// A variable of the simulated task.
const COUNTER: u64 = 0x7f00_0000_1000;
const MS: u64 = 1_000_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut sim = SimKernel::new(2);
    let pid = sim.spawn(USER);
    let tid = sim.main_thread(pid)?;
    sim.switch(0, Some(tid))?;
    // The task itself talks to hwbpd (as pid `pid`, uid 1000).
    let hwbp = InProcess::new(HwbpScheme::new(sim, Config::default()), pid, USER);
    let run = |access: MemAccess| hwbp.with_kernel(|k| k.run(tid, access)).expect("task runs");

    println!("== one watchpoint: task/{pid}, 8 bytes at {COUNTER:#x}, writes");
    let bp = Breakpoint::watch(COUNTER).len(8).access(Access::Write).target(Target::Task(pid.into())).open(&hwbp)?;
    println!("armed as {}", bp.path_string()?);
    let mut stream = bp.events()?;
    hwbp.with_kernel(|k| k.advance(10 * MS));
    run(MemAccess::write(COUNTER, 8));
    run(MemAccess::read(COUNTER, 8)); // a read: not a write, no hit
    run(MemAccess::write(COUNTER + 8, 8)); // the next variable: no hit
    hwbp.with_kernel(|k| k.advance(5 * MS));
    run(MemAccess::write(COUNTER + 4, 4));
    hwbp.with_kernel(|k| k.switch(1, Some(tid)))?;
    run(MemAccess::write(COUNTER, 1));
    let mut recs = [EventRecord::default(); 16];
    if let Batch::Records(n) = stream.try_next_batch(&mut recs)? {
        for r in &recs[..n] {
            println!(
                "  hit #{}: pid {} cpu {} ip {:#x} addr {:#x} at {} ms",
                r.hit, r.pid, r.cpu, r.ip, r.addr, r.timestamp_ns / MS
            );
        }
    }
    let c = bp.read_count()?;
    println!("count: {} (5 accesses: 3 writes to it, 1 read of it, 1 write beside it), lost {}", c.value, c.lost);
    drop(stream);
    bp.close()?;

    println!("\n== multiplexing: 6 flexible watches, 4 debug registers, 200 ms");
    let watches: Vec<_> = (0..6u64)
        .map(|i| Breakpoint::watch(COUNTER + 0x100 + 8 * i).len(8).access(Access::Write).open(&hwbp))
        .collect::<Result<_, _>>()?;
    const STEPS: u64 = 200;
    for _ in 0..STEPS {
        for i in 0..6 {
            run(MemAccess::write(COUNTER + 0x100 + 8 * i, 8));
        }
        hwbp.with_kernel(|k| k.advance(MS));
        hwbp.scheme().borrow_mut().tick();
    }
    println!("  watch            count  running/enabled  scaled (truth {STEPS})");
    for (i, w) in watches.iter().enumerate() {
        let (c, scaled) = w.read_scaled()?;
        println!(
            "  {:#x} {:>6}  {:>6.1}/{:.1} ms  {:>6}",
            COUNTER + 0x100 + 8 * i as u64,
            c.value,
            c.time_running_ns as f64 / MS as f64,
            c.time_enabled_ns as f64 / MS as f64,
            scaled.map_or("-".to_string(), |s| s.to_string()),
        );
    }
    drop(watches);
    let armed = hwbp.with_kernel(|k| {
        k.idle_all();
        k.armed_slots()
    });
    println!("\nall closed: {armed} debug registers armed on any CPU");
    Ok(())
}
