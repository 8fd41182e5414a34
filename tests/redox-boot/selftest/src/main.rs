#![no_std]
#![no_main]

use core::arch::global_asm;

global_asm!(
    r#"
    .section .text._start, "ax"
    .global _start
_start:
    lea rsp, [rip + stack_top]
    xor ebp, ebp
    call selftest_main
    ud2
    .section .bss.stack, "aw", @nobits
    .p2align 4
    .skip 262144
stack_top:
    "#
);

const UPPER: usize = 1 << 62;
const DEBUG: usize = UPPER | 1;
const SYS: usize = UPPER | 8;

#[unsafe(no_mangle)]
extern "C" fn selftest_main() -> ! {
    let _ = syscall::openat_into(DEBUG, 21, "", syscall::O_WRONLY, 0);
    let _ = syscall::write(21, b"hwbp-selftest: hello from the first process\n");
    let kstop = syscall::openat_into(SYS, 20, "kstop", syscall::O_WRONLY, 0);
    let _ = syscall::write(21, if kstop.is_ok() { b"kstop open\n" } else { b"kstop FAILED\n" });
    let _ = syscall::write(20, b"shutdown");
    loop {}
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}
