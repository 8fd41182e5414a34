//! The simulated task's program: real x86-64 machine code at the
//! addresses a static Linux executable would have, so gdb sees the same
//! bytes and addresses in the simulated task as in the same program run
//! natively (`compare/prog.S` assembles to exactly these bytes; the
//! comparison script checks it).
//!
//! ```text
//! 401000 _start: mov  ecx, 3
//! 401005 loop:   mov  rax, [counter]     ; 404000
//! 40100d         add  rax, [step]        ; 404008 (read)
//! 401015         mov  [counter], rax     ; 404000 (write)
//! 40101d         call tick
//! 401022         dec  ecx
//! 401024         jnz  loop
//! 401026         mov  eax, 60            ; exit(0)
//! 40102b         xor  edi, edi
//! 40102d         syscall
//! 40102f tick:   mov  rdx, [ticks]       ; 404010 (read)
//! 401037         add  rdx, 1
//! 40103b         mov  [ticks], rdx       ; 404010 (write)
//! 401043         ret
//!
//! 404000 counter: .quad 0
//! 404008 step:    .quad 5
//! 404010 ticks:   .quad 0
//! ```

/// Where the code is loaded (the ELF entry point of the native build).
pub const TEXT_ADDR: u64 = 0x40_1000;
/// Where the data is loaded.
pub const DATA_ADDR: u64 = 0x40_4000;

/// The code, as `compare/prog.S` assembles.
pub const TEXT: [u8; 0x44] = [
    0xb9, 0x03, 0x00, 0x00, 0x00, // mov ecx, 3
    0x48, 0x8b, 0x04, 0x25, 0x00, 0x40, 0x40, 0x00, // mov rax, [0x404000]
    0x48, 0x03, 0x04, 0x25, 0x08, 0x40, 0x40, 0x00, // add rax, [0x404008]
    0x48, 0x89, 0x04, 0x25, 0x00, 0x40, 0x40, 0x00, // mov [0x404000], rax
    0xe8, 0x0d, 0x00, 0x00, 0x00, // call 0x40102f
    0xff, 0xc9, // dec ecx
    0x75, 0xdf, // jnz 0x401005
    0xb8, 0x3c, 0x00, 0x00, 0x00, // mov eax, 60
    0x31, 0xff, // xor edi, edi
    0x0f, 0x05, // syscall
    0x48, 0x8b, 0x14, 0x25, 0x10, 0x40, 0x40, 0x00, // tick: mov rdx, [0x404010]
    0x48, 0x83, 0xc2, 0x01, // add rdx, 1
    0x48, 0x89, 0x14, 0x25, 0x10, 0x40, 0x40, 0x00, // mov [0x404010], rdx
    0xc3, // ret
];

/// The initial data: counter = 0, step = 5, ticks = 0.
pub const DATA: [u8; 0x18] = {
    let mut d = [0u8; 0x18];
    d[8] = 5;
    d
};

/// Bytes of stack the task gets, below [`STACK_TOP`].
pub const STACK_BYTES: u64 = 0x2_0000;
/// One past the highest stack address.
pub const STACK_TOP: u64 = 0x7fff_ffff_f000;
/// The initial stack pointer (16-byte aligned, as at a process's entry).
pub const INITIAL_RSP: u64 = STACK_TOP - 0x820;
