//! hwbp QEMU testbed: a freestanding x86_64 kernel that runs `hwbp-kern`
//! unchanged on QEMU's emulated debug registers, with ring-3 tasks, a
//! cooperative scheduler whose switch path calls
//! `CpuDebugState::switch_to`, and a #DB entry that calls
//! `trap::handle_debug_exception_in` — the two calls the Redox patch makes.
//! See README.md.
#![no_std]
#![no_main]
// Bench builds leave the checks' helpers unused.
#![cfg_attr(feature = "bench", allow(dead_code))]

mod boot;
#[cfg(not(feature = "bench"))]
mod checks;
#[cfg(not(feature = "bench"))]
mod conformance_run;
mod sched;
mod serial;
mod trap;
mod user;
#[cfg(feature = "bench")]
mod bench;

use core::arch::asm;
use core::cell::UnsafeCell;

/// A global touched only by the one CPU, with interrupts off.
pub struct Global<T>(UnsafeCell<T>);

// SAFETY: the testbed runs on one CPU with interrupts disabled; the only
// reentrancy is the #DB entry, whose state is documented where it is used.
unsafe impl<T> Sync for Global<T> {}

impl<T> Global<T> {
    pub const fn new(value: T) -> Self {
        Global(UnsafeCell::new(value))
    }

    /// # Safety
    /// No other reference from `get` to the same global is in use, except
    /// across a trap whose handler touches disjoint data.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get(&self) -> &mut T {
        // SAFETY: forwarded from the contract.
        unsafe { &mut *self.0.get() }
    }
}

/// The time-stamp counter. Under `-icount shift=0` it counts guest
/// instructions.
pub fn rdtsc() -> u64 {
    let lo: u32;
    let hi: u32;
    // SAFETY: rdtsc reads a counter; CR4.TSD is clear so ring 3 may too.
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

#[unsafe(no_mangle)]
extern "C" fn kernel_main() -> ! {
    // SAFETY: once, at bring-up, before any trap.
    unsafe { boot::init_cpu_tables() };
    trap::publish_debug_state();
    println!("hwbp qemu testbed: long mode, ring-3 tasks, hwbp-kern on emulated DR0-DR7");
    #[cfg(feature = "bench")]
    bench::run();
    #[cfg(not(feature = "bench"))]
    checks::run();
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("PANIC {info}");
    serial::exit(serial::ExitCode::Crashed)
}
