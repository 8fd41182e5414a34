//! Trap entry: exception stubs, the `int 0x80` syscall gate, the #DB entry
//! that calls the crate's handler (the call the Redox patch adds to its
//! `debug` exception), and the ring-0/ring-3 transitions of the scheduler.

use core::arch::{asm, global_asm};

use hwbp_kern::dr6;
use hwbp_kern::regs::hw::Hardware;
use hwbp_kern::piece::Slot;
use hwbp_kern::trap::handle_debug_exception_in;
use hwbp_kern::{CpuDebugState, DebugRegs, DebugVerdict, HitRing, PublishedLoad, SlotHits, TrapInfo};

use crate::Global;
use crate::serial;

/// The gate ring-3 tasks enter the kernel through (DPL 3).
pub const SYSCALL_VECTOR: u8 = 0x80;
pub const DEBUG_VECTOR: u64 = 1;

/// RFLAGS bits.
pub const RFLAGS_TF: u64 = 1 << 8;
pub const RFLAGS_RF: u64 = 1 << 16;
/// Bit 1 of RFLAGS is reserved and always 1.
pub const RFLAGS_FIXED: u64 = 1 << 1;

/// Capacity of the per-CPU hit ring (the overflow check fills it).
pub const RING_CAPACITY: usize = 64;

/// Debug exceptions in one task run after which the handler gives up and
/// disarms everything (an exec breakpoint re-firing forever without RF).
const RUNAWAY_LIMIT: u64 = 100_000;

/// Registers as the stubs leave them on the stack; field order is the
/// reverse of the pushes in `isr_common`.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

impl TrapFrame {
    pub const ZERO: TrapFrame = TrapFrame {
        r15: 0,
        r14: 0,
        r13: 0,
        r12: 0,
        r11: 0,
        r10: 0,
        r9: 0,
        r8: 0,
        rbp: 0,
        rdi: 0,
        rsi: 0,
        rdx: 0,
        rcx: 0,
        rbx: 0,
        rax: 0,
        vector: 0,
        error: 0,
        rip: 0,
        cs: 0,
        rflags: 0,
        rsp: 0,
        ss: 0,
    };

    pub const fn from_user(&self) -> bool {
        self.cs & 3 == 3
    }
}

macro_rules! stub {
    (noerr $n:literal) => {
        concat!("isr", $n, ":\n push $0\n push $", $n, "\n jmp isr_common\n")
    };
    (err $n:literal) => {
        concat!("isr", $n, ":\n push $", $n, "\n jmp isr_common\n")
    };
}

global_asm!(
    ".section .text",
    ".p2align 4",
    stub!(noerr 0), stub!(noerr 1), stub!(noerr 2), stub!(noerr 3),
    stub!(noerr 4), stub!(noerr 5), stub!(noerr 6), stub!(noerr 7),
    stub!(err 8), stub!(noerr 9), stub!(err 10), stub!(err 11),
    stub!(err 12), stub!(err 13), stub!(err 14), stub!(noerr 15),
    stub!(noerr 16), stub!(err 17), stub!(noerr 18), stub!(noerr 19),
    stub!(noerr 20), stub!(err 21), stub!(noerr 22), stub!(noerr 23),
    stub!(noerr 24), stub!(noerr 25), stub!(noerr 26), stub!(noerr 27),
    stub!(noerr 28), stub!(err 29), stub!(err 30), stub!(noerr 31),
    stub!(noerr 128),
    r#"
isr_common:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi
    call trap_dispatch
/* Restore the TrapFrame at %rsp and return to it: the way back from a trap,
 * and the way into a task (enter_user). */
restore_frame:
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp
    iretq

/* enter_user(frame: *const TrapFrame): save the scheduler's callee-saved
 * registers, load the task's registers and iretq to ring 3. Returns when
 * the task traps back (leave_to_scheduler). */
    .global enter_user
enter_user:
    push %rbx
    push %rbp
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, scheduler_rsp(%rip)
    mov %rdi, %rsp
    jmp restore_frame

    .global leave_to_scheduler
leave_to_scheduler:
    mov scheduler_rsp(%rip), %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbp
    pop %rbx
    ret

    .section .rodata
    .p2align 3
    .global exception_stub_table
exception_stub_table:
    .quad isr0, isr1, isr2, isr3, isr4, isr5, isr6, isr7
    .quad isr8, isr9, isr10, isr11, isr12, isr13, isr14, isr15
    .quad isr16, isr17, isr18, isr19, isr20, isr21, isr22, isr23
    .quad isr24, isr25, isr26, isr27, isr28, isr29, isr30, isr31
    .global syscall_stub_address
syscall_stub_address:
    .quad isr128

    .section .bss
    .p2align 3
scheduler_rsp:
    .quad 0
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static exception_stub_table: [u64; 32];
    static syscall_stub_address: u64;
    /// Runs the task whose registers `frame` holds until it traps back.
    pub fn enter_user(frame: *const TrapFrame);
    fn leave_to_scheduler() -> !;
}

pub fn exception_stubs() -> impl Iterator<Item = u64> {
    // SAFETY: an immutable table of addresses in .rodata.
    unsafe { exception_stub_table }.into_iter()
}

pub fn syscall_stub() -> u64 {
    // SAFETY: as above.
    unsafe { syscall_stub_address }
}

/// The registers of the task that last trapped back to the scheduler, and
/// those the scheduler resumes it with.
pub static USER_FRAME: Global<TrapFrame> = Global::new(TrapFrame::ZERO);

/// Which #DB handler runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandlerMode {
    /// The crate's `handle_debug_exception_in` and the verdict acted on, as in
    /// the Redox patch.
    Crate,
    /// Read DR6, set RF, clear DR6: raw hardware answers for the
    /// conformance table (slots are programmed directly, not by the crate).
    Raw,
    /// The least a #DB handler does (read and clear DR6): the bench's
    /// reference.
    #[cfg_attr(not(feature = "bench"), allow(dead_code))]
    Bare,
}

/// What the #DB entry saw, for the checks.
#[derive(Clone, Copy, Debug, Default)]
pub struct DebugStats {
    pub traps: u64,
    pub hits: u64,
    pub dropped: u64,
    /// Single-step path runs (DR6.BS).
    pub single_steps: u64,
    /// Of those, #DBs that also reported a breakpoint.
    pub steps_with_hits: u64,
    /// Hits from CPL 0.
    pub kernel_mode_hits: u64,
    /// #DBs nobody claimed (no hit of ours, no single step).
    pub unclaimed: u64,
    /// Raw mode: B0-B3 ORed over the #DBs of one access.
    pub raw_bits: u8,
    /// #DBs in the current task run (runaway guard).
    pub this_run: u64,
    pub runaway: bool,
    pub last_verdict: DebugVerdict,
    /// The last unclaimed #DB: its verdict and where it came from.
    pub last_unclaimed: Option<(DebugVerdict, u64, bool)>,
    /// (DR6, rip, rflags) of the last four #DBs, by trap number mod 4.
    pub trace: [(u64, u64, u64); 4],
}

pub struct DebugState {
    pub cpu: CpuDebugState,
    pub mode: HandlerMode,
    /// Crate mode: clear DR7 at entry and write it back before `iretq`
    /// (from user mode: the published DR7; from kernel mode: the value the
    /// entry found), as the Redox entry `debug_with_hwbp` does. Off: the
    /// entry before that change, which leaves DR7 alone (the over-count
    /// check turns it off on purpose to show QEMU's sticky hit flag).
    pub dr7_clear_restore: bool,
    /// Crate mode: hand the crate registers whose DR6 writes are dropped,
    /// as if the handler forgot to clear DR6 (the DR6 check's control run).
    pub forget_dr6_clear: bool,
    /// Id of the running context (TrapInfo::context).
    pub context: u64,
    pub stats: DebugStats,
}

/// This CPU's debug state. Touched by the scheduler's switch path and by
/// the #DB entry; the only CPU runs with interrupts off, and the switch path
/// makes no access a breakpoint could catch while it holds the state.
pub static DEBUG: Global<DebugState> = Global::new(DebugState {
    cpu: CpuDebugState::new(0),
    mode: HandlerMode::Crate,
    dr7_clear_restore: true,
    forget_dr6_clear: false,
    context: 0,
    stats: DebugStats {
        traps: 0,
        hits: 0,
        dropped: 0,
        single_steps: 0,
        steps_with_hits: 0,
        kernel_mode_hits: 0,
        unclaimed: 0,
        raw_bits: 0,
        this_run: 0,
        runaway: false,
        last_verdict: DebugVerdict {
            hits: 0,
            dropped: 0,
            spurious: 0,
            set_resume_flag: false,
            single_step: false,
            other: false,
            stop: false,
        },
        last_unclaimed: None,
        trace: [(0, 0, 0); 4],
    },
});

/// This CPU's hit ring: the #DB entry produces, the checks consume.
pub static RING: HitRing<RING_CAPACITY> = HitRing::new();

/// What the switch path publishes of the loaded registers; the #DB entry
/// reads only this, as the kernel's does (`CpuDebugState::publish_to`).
pub static PUBLISHED: PublishedLoad = PublishedLoad::new();

/// Hits per debug register, counted by the #DB entry whether or not the
/// ring keeps the record (the kernel's exact counts).
pub static SLOT_HITS: SlotHits = SlotHits::new();

/// Publish this CPU's loaded registers to [`PUBLISHED`] from now on. At
/// bring-up, and after the checks replace the state.
pub fn publish_debug_state() {
    // SAFETY: between task runs; no trap is in flight.
    unsafe { DEBUG.get() }.cpu.publish_to(&PUBLISHED);
}

/// Take (and zero) every register's hit count.
pub fn take_slot_hits() -> [u64; 4] {
    Slot::ALL.map(|slot| SLOT_HITS.take(slot))
}

/// DR7 as the hardware holds it.
pub fn read_dr7() -> u64 {
    let v: u64;
    // SAFETY: CPL 0; reading DR7 has no side effect.
    unsafe { asm!("mov {}, dr7", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// DR6 as the hardware holds it, every bit (`x86::debugregs::dr6` keeps
/// only the bits it knows).
pub fn read_dr6_raw() -> u64 {
    let v: u64;
    // SAFETY: CPL 0; reading DR6 has no side effect.
    unsafe { asm!("mov {}, dr6", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// The real registers, but DR6 writes go nowhere: a handler that forgets
/// to clear DR6.
struct ForgetDr6<'a>(&'a mut Hardware);

impl DebugRegs for ForgetDr6<'_> {
    fn read_dr6(&mut self) -> u64 {
        self.0.read_dr6()
    }
    fn write_dr6(&mut self, _value: u64) {}
    fn write_addr(&mut self, slot: Slot, addr: u64) {
        self.0.write_addr(slot, addr);
    }
    fn write_dr7(&mut self, value: u64) {
        self.0.write_dr7(value);
    }
}

#[unsafe(no_mangle)]
extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    if frame.vector == DEBUG_VECTOR {
        on_debug(frame);
        return;
    }
    if frame.from_user() {
        // A syscall, or a fault of the task: either way the scheduler
        // decides. The trap stack is abandoned.
        // SAFETY: the scheduler is parked in `enter_user` and reads the
        // frame only after we leave.
        unsafe {
            *USER_FRAME.get() = *frame;
            leave_to_scheduler()
        }
    }
    let cr2: u64;
    // SAFETY: reading CR2 has no side effect.
    unsafe { asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack)) };
    crate::println!(
        "FATAL kernel exception {} error {:#x} rip {:#x} cr2 {:#x}",
        frame.vector,
        frame.error,
        frame.rip,
        cr2
    );
    serial::exit(serial::ExitCode::Crashed);
}

/// The #DB entry: what the Redox patch's `debug` exception does.
fn on_debug(frame: &mut TrapFrame) {
    // SAFETY: the #DB entry owns the debug state while it runs (see DEBUG).
    let g = unsafe { DEBUG.get() };
    // SAFETY: we run at CPL 0 in the #DB handler.
    let mut hw = unsafe { Hardware::new() };
    g.stats.traps = g.stats.traps.wrapping_add(1);
    g.stats.this_run = g.stats.this_run.wrapping_add(1);
    match g.mode {
        HandlerMode::Bare => {
            let _ = hw.read_dr6();
            hw.write_dr6(dr6::CLEAR);
        }
        HandlerMode::Raw => {
            let status = hw.read_dr6();
            g.stats.raw_bits |= (status & dr6::B_MASK) as u8;
            hw.write_dr6(dr6::CLEAR);
            frame.rflags |= RFLAGS_RF;
        }
        HandlerMode::Crate => {
            // As the Redox entry: DR7 cleared before anything else, so no
            // breakpoint fires inside the handler (and QEMU drops its
            // watchpoints, with their hit flags; see the over-count check).
            let entry_dr7 = if g.dr7_clear_restore {
                let v = read_dr7();
                hw.write_dr7(0);
                Some(v)
            } else {
                None
            };
            // The testbed's own trace of what the hardware said (not in
            // bench builds: it is not part of the kernel's path).
            #[cfg(not(feature = "bench"))]
            {
                let raw = hw.read_dr6();
                let i = (g.stats.traps % 4) as usize;
                g.stats.trace[i] = (raw, frame.rip, frame.rflags);
            }
            let info = TrapInfo {
                rip: frame.rip,
                user_mode: frame.from_user(),
                context: g.context,
                timestamp: crate::rdtsc(),
            };
            let cpu = g.cpu.cpu();
            // SAFETY: this CPU's #DB entry is the ring's only producer. The
            // handler reads what the switch path published, as the kernel's.
            let verdict = unsafe {
                if g.forget_dr6_clear {
                    handle_debug_exception_in(&PUBLISHED, cpu, &mut ForgetDr6(&mut hw), &RING, &SLOT_HITS, &info)
                } else {
                    handle_debug_exception_in(&PUBLISHED, cpu, &mut hw, &RING, &SLOT_HITS, &info)
                }
            };
            if verdict.set_resume_flag {
                frame.rflags |= RFLAGS_RF;
            }
            if verdict.single_step {
                // The single-step path: a tracer would be told here; the
                // testbed's steps are one-shot, so TF goes.
                frame.rflags &= !RFLAGS_TF;
                g.stats.single_steps += 1;
                if verdict.hits != 0 {
                    g.stats.steps_with_hits += 1;
                }
            } else if !verdict.handled() {
                g.stats.unclaimed += 1;
                g.stats.last_unclaimed = Some((verdict, frame.rip, info.user_mode));
            }
            // The checks' bookkeeping; bench builds leave it out so the
            // figures show the path a kernel runs.
            #[cfg(not(feature = "bench"))]
            {
                g.stats.hits += u64::from(verdict.hits.count_ones());
                g.stats.dropped += u64::from(verdict.dropped.count_ones());
                if !info.user_mode && verdict.hits != 0 {
                    g.stats.kernel_mode_hits += 1;
                }
                g.stats.last_verdict = verdict;
            }
            // Back to user mode with the DR7 the mirror says user mode
            // runs with; back to kernel code with the DR7 it was running
            // with (it may be the switch path between two DR7 writes).
            if let Some(entry) = entry_dr7 {
                hw.write_dr7(if info.user_mode { PUBLISHED.dr7() } else { entry });
            }
        }
    }
    if g.stats.this_run > RUNAWAY_LIMIT {
        // Disarm behind the crate's back: the run is failed anyway.
        hw.write_dr7(0);
        g.stats.runaway = true;
    }
}
