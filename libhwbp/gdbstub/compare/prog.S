# The simulated task's program (src/sim/program.rs) as a static Linux
# executable: the same bytes at the same addresses. Build:
#   gcc -nostdlib -static -no-pie -Wl,-Ttext=0x401000,-Tdata=0x404000,--build-id=none -o prog prog.S
        .intel_syntax noprefix
        .section .text
        .globl _start
_start:
        mov ecx, 3
loop:
        mov rax, qword ptr [counter]
        add rax, qword ptr [step]
        mov qword ptr [counter], rax
        call tick
        dec ecx
        jnz loop
        mov eax, 60                     # exit(0)
        xor edi, edi
        syscall
tick:
        mov rdx, qword ptr [ticks]
        add rdx, 1
        mov qword ptr [ticks], rdx
        ret

        .section .data
counter: .quad 0
step:    .quad 5
ticks:   .quad 0
