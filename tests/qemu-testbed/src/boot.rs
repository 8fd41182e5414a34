//! From QEMU's PVH entry to Rust in long mode, and the CPU tables the
//! testbed needs: GDT (kernel and user segments, TSS), IDT.
//!
//! QEMU's `-kernel` loader finds the `XEN_ELFNOTE_PHYS32_ENTRY` note (type
//! 18) and enters `pvh_start32` in 32-bit protected mode with paging off.
//! The trampoline identity-maps the first GiB with 2 MiB pages (user
//! accessible: ring-3 tasks run code and touch data of this same image),
//! enables PAE + long mode + paging, and jumps to 64-bit code.

use core::arch::{asm, global_asm};
use core::mem::size_of;

use crate::trap;

/// GDT selectors. The first three entries match the boot GDT below.
pub const KERNEL_CS: u16 = 0x08;
pub const USER_DS: u16 = 0x18 | 3;
pub const USER_CS: u16 = 0x20 | 3;
const TSS_SEL: u16 = 0x28;

global_asm!(
    r#"
    .section .note.pvh, "a", @note
    .p2align 2
    .long 4          /* namesz: "Xen\0" */
    .long 4          /* descsz */
    .long 18         /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .p2align 2
    .long pvh_start32
    .p2align 2

    .section .text.boot, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    movl $boot_stack_top, %esp
    movl $boot_pdpt, %eax
    orl $7, %eax                 /* present | write | user */
    movl %eax, boot_pml4
    movl $boot_pd, %eax
    orl $7, %eax
    movl %eax, boot_pdpt
    xorl %ecx, %ecx
1:  movl %ecx, %eax
    shll $21, %eax
    orl $0x87, %eax              /* present | write | user | 2 MiB */
    movl %eax, boot_pd(,%ecx,8)
    movl $0, boot_pd+4(,%ecx,8)
    incl %ecx
    cmpl $512, %ecx
    jne 1b
    movl %cr4, %eax
    orl $0x20, %eax              /* PAE */
    movl %eax, %cr4
    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx       /* EFER */
    rdmsr
    orl $0x100, %eax             /* LME */
    wrmsr
    movl %cr0, %eax
    orl $0x80000001, %eax        /* PG | PE */
    movl %eax, %cr0
    lgdt boot_gdt_ptr
    ljmp $0x08, $long_mode_entry

    .code64
long_mode_entry:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movq $kernel_stack_top, %rsp
    xorl %ebp, %ebp
    call kernel_main
2:  hlt
    jmp 2b

    .section .rodata.boot, "a"
    .p2align 3
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff     /* 0x08 kernel code, 64-bit */
    .quad 0x00cf92000000ffff     /* 0x10 kernel data */
boot_gdt_end:
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt

    .section .bss.boot, "aw", @nobits
    .p2align 12
boot_pml4: .skip 4096
boot_pdpt: .skip 4096
boot_pd:   .skip 4096
    .p2align 4
    .skip 4096
boot_stack_top:
    .p2align 4
    .skip 65536
    .global kernel_stack_top
kernel_stack_top:
    "#,
    options(att_syntax)
);

/// 64-bit TSS: only RSP0 matters (the stack a trap from ring 3 lands on).
#[repr(C, packed)]
struct Tss {
    reserved0: u32,
    rsp: [u64; 3],
    reserved1: u64,
    ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    iomap_base: u16,
}

#[repr(C, align(16))]
struct Stack([u8; 32 * 1024]);

#[repr(C, packed)]
struct TablePointer {
    limit: u16,
    base: u64,
}

#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    flags: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

const GATE_INTERRUPT: u8 = 0x8e;
const GATE_DPL3: u8 = 0x60;

static mut TRAP_STACK: Stack = Stack([0; 32 * 1024]);
static mut TSS: Tss = Tss {
    reserved0: 0,
    rsp: [0; 3],
    reserved1: 0,
    ist: [0; 7],
    reserved2: 0,
    reserved3: 0,
    iomap_base: size_of::<Tss>() as u16,
};
static mut GDT: [u64; 7] = [
    0,
    0x00af9a000000ffff, // kernel code
    0x00cf92000000ffff, // kernel data
    0x00cff2000000ffff, // user data (DPL 3)
    0x00affa000000ffff, // user code, 64-bit (DPL 3)
    0,                  // TSS, low
    0,                  // TSS, high
];
static mut IDT: [Gate; 256] = [Gate {
    offset_low: 0,
    selector: 0,
    ist: 0,
    flags: 0,
    offset_mid: 0,
    offset_high: 0,
    reserved: 0,
}; 256];

/// Install the GDT with user segments and a TSS, and the IDT.
///
/// # Safety
/// Called once, on the boot CPU, before any trap can happen.
pub unsafe fn init_cpu_tables() {
    // SAFETY: single-threaded bring-up; nothing else references these
    // statics yet, and the CPU reads them only after the loads below.
    unsafe {
        let stack_top = (&raw const TRAP_STACK as u64) + size_of::<Stack>() as u64;
        TSS.rsp[0] = stack_top;
        let base = &raw const TSS as u64;
        let limit = (size_of::<Tss>() - 1) as u64;
        GDT[5] = (limit & 0xffff)
            | ((base & 0xff_ffff) << 16)
            | (0x89 << 40) // present, 64-bit TSS available
            | (((limit >> 16) & 0xf) << 48)
            | (((base >> 24) & 0xff) << 56);
        GDT[6] = base >> 32;
        let gdtr = TablePointer { limit: (size_of::<[u64; 7]>() - 1) as u16, base: &raw const GDT as u64 };
        asm!("lgdt [{}]", in(reg) &gdtr, options(readonly, nostack));
        asm!("ltr {0:x}", in(reg) TSS_SEL, options(nostack));

        for (vector, handler) in trap::exception_stubs().enumerate() {
            set_gate(vector, handler, 0);
        }
        set_gate(usize::from(trap::SYSCALL_VECTOR), trap::syscall_stub(), GATE_DPL3);
        let idtr = TablePointer { limit: (size_of::<[Gate; 256]>() - 1) as u16, base: &raw const IDT as u64 };
        asm!("lidt [{}]", in(reg) &idtr, options(readonly, nostack));
    }
}

/// # Safety
/// Bring-up only (see `init_cpu_tables`).
unsafe fn set_gate(vector: usize, handler: u64, dpl: u8) {
    let gate = Gate {
        offset_low: handler as u16,
        selector: KERNEL_CS,
        ist: 0,
        flags: GATE_INTERRUPT | dpl,
        offset_mid: (handler >> 16) as u16,
        offset_high: (handler >> 32) as u32,
        reserved: 0,
    };
    // SAFETY: bring-up, single CPU, the IDT is not loaded concurrently.
    unsafe {
        if let Some(g) = (*(&raw mut IDT)).get_mut(vector) {
            *g = gate;
        }
    }
}
