//! Ring-3 code. Every task runs `executor`: it asks the kernel for a
//! command (the return registers of its `int 0x80`), performs it, reports,
//! and asks again. The command is one access, so a check knows exactly
//! which user instruction a hit came from.

use core::arch::{asm, global_asm};

/// Syscalls, in rax.
pub const SYS_DONE: u64 = 1;
/// The kernel writes rsi to the user address rdi (a kernel-mode access to
/// a user buffer, as `read()` into a watched buffer does).
pub const SYS_KERNEL_WRITE: u64 = 2;

/// What the kernel asks a task to do (rax on return from `SYS_DONE`;
/// rdi = address, rsi = argument).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    Nop,
    /// A load of `size` (1, 2, 4, 8) bytes.
    Read { addr: u64, size: u8 },
    /// A store of `size` bytes.
    Write { addr: u64, size: u8 },
    /// `call addr` `times` times (addr holds `ret`).
    Call { addr: u64, times: u64 },
    /// `times` 8-byte stores to addr.
    WriteRepeat { addr: u64, times: u64 },
    /// Ask the kernel to store `value` at addr.
    KernelWrite { addr: u64, value: u64 },
    /// `times` 8-byte stores to addr, timed with rdtsc; the result is the
    /// elapsed count.
    #[cfg_attr(not(feature = "bench"), allow(dead_code))]
    TimedWrites { addr: u64, times: u64 },
}

const CMD_NOP: u64 = 0;
const CMD_READ: u64 = 1;
const CMD_WRITE: u64 = 2;
const CMD_CALL: u64 = 3;
const CMD_WRITE_REPEAT: u64 = 4;
const CMD_KERNEL_WRITE: u64 = 5;
const CMD_TIMED_WRITES: u64 = 6;

/// The value stores write: `ret` bytes, so stores into the exec page keep
/// it executable as a run of `ret`s.
pub const STORE_VALUE: u64 = 0xc3c3_c3c3_c3c3_c3c3;

impl Cmd {
    /// (rax, rdi, rsi) for the task's syscall return.
    pub fn encode(self) -> (u64, u64, u64) {
        match self {
            Cmd::Nop => (CMD_NOP, 0, 0),
            Cmd::Read { addr, size } => (CMD_READ, addr, u64::from(size)),
            Cmd::Write { addr, size } => (CMD_WRITE, addr, u64::from(size)),
            Cmd::Call { addr, times } => (CMD_CALL, addr, times),
            Cmd::WriteRepeat { addr, times } => (CMD_WRITE_REPEAT, addr, times),
            Cmd::KernelWrite { addr, value } => (CMD_KERNEL_WRITE, addr, value),
            Cmd::TimedWrites { addr, times } => (CMD_TIMED_WRITES, addr, times),
        }
    }
}

fn syscall(nr: u64, a: u64, b: u64) -> (u64, u64, u64) {
    let (r0, r1, r2);
    // SAFETY: the kernel's gate preserves every register but these three.
    unsafe {
        asm!("int 0x80", inlateout("rax") nr => r0, inlateout("rdi") a => r1, inlateout("rsi") b => r2);
    }
    (r0, r1, r2)
}

/// Entry point of every ring-3 task.
pub extern "C" fn executor() -> ! {
    let mut next = syscall(SYS_DONE, 0, 0);
    loop {
        let result = perform(next);
        next = syscall(SYS_DONE, result, 0);
    }
}

fn perform((cmd, addr, arg): (u64, u64, u64)) -> u64 {
    let v = STORE_VALUE;
    // SAFETY (all asm below): the kernel hands out addresses of mapped,
    // user-accessible memory that only the checks use.
    unsafe {
        match (cmd, arg) {
            (CMD_READ, 1) => asm!("mov {v:l}, byte ptr [{a}]", a = in(reg) addr, v = out(reg) _),
            (CMD_READ, 2) => asm!("mov {v:x}, word ptr [{a}]", a = in(reg) addr, v = out(reg) _),
            (CMD_READ, 4) => asm!("mov {v:e}, dword ptr [{a}]", a = in(reg) addr, v = out(reg) _),
            (CMD_READ, 8) => asm!("mov {v}, qword ptr [{a}]", a = in(reg) addr, v = out(reg) _),
            (CMD_WRITE, 1) => asm!("mov byte ptr [{a}], {v:l}", a = in(reg) addr, v = in(reg) v),
            (CMD_WRITE, 2) => asm!("mov word ptr [{a}], {v:x}", a = in(reg) addr, v = in(reg) v),
            (CMD_WRITE, 4) => asm!("mov dword ptr [{a}], {v:e}", a = in(reg) addr, v = in(reg) v),
            (CMD_WRITE, 8) => asm!("mov qword ptr [{a}], {v}", a = in(reg) addr, v = in(reg) v),
            (CMD_CALL, times) => {
                for _ in 0..times {
                    asm!("call {a}", a = in(reg) addr, clobber_abi("C"));
                }
            }
            (CMD_WRITE_REPEAT, times) => {
                for _ in 0..times {
                    asm!("mov qword ptr [{a}], {v}", a = in(reg) addr, v = in(reg) v);
                }
            }
            (CMD_KERNEL_WRITE, value) => {
                syscall(SYS_KERNEL_WRITE, addr, value);
            }
            (CMD_TIMED_WRITES, times) => {
                let start = crate::rdtsc();
                for _ in 0..times {
                    asm!("mov qword ptr [{a}], {v}", a = in(reg) addr, v = in(reg) v);
                }
                return crate::rdtsc().wrapping_sub(start);
            }
            _ => {}
        }
    }
    0
}

global_asm!(
    r#"
    .section .text
    .global user_step_store
/* Entered with TF set, rdi = address, rax = value: the very first
 * instruction is a store, so its data breakpoint and the single-step trap
 * come due together. */
user_step_store:
    mov %rax, (%rdi)
    mov $1, %eax
    int $0x80
    ud2
"#,
    options(att_syntax)
);

unsafe extern "C" {
    fn user_step_store();
}

pub fn step_store_entry() -> u64 {
    user_step_store as *const () as u64
}
