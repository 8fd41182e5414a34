//! PVH loader for the upstream Redox kernel (x86_64).
//!
//! QEMU (`-kernel` with this ELF, `-initrd` with a bundle from the packer)
//! enters `pvh_start32` in 32-bit protected mode, paging off, with `ebx`
//! pointing at a `hvm_start_info`. We switch to long mode on an identity map
//! of the first 4 GiB, then do what the Redox bootloader does before it jumps
//! to `kstart` (bootloader `src/main.rs`, `src/arch/x86/x64.rs`,
//! `asm/x86-unknown-none/long_mode.asm`):
//!
//! * page tables: PML4[0] and PML4[256] (PHYS_OFFSET = 0xFFFF_8000_0000_0000)
//!   both map physical 0..4 GiB with 2 MiB pages; PML4[511] maps the kernel
//!   ELF file, as loaded, page by page at KERNEL_OFFSET (-2 GiB);
//! * CR4 = OSFXSR | PGE | PAE | PSE, EFER = LME | NXE, CR0 = PG | WP | PE;
//! * `rdi` = pointer (identity-mapped) to `KernelArgs`, whose memory map is
//!   an array of `{base, size, kind}` (kind 1 free, 2 reclaim, 3 reserved);
//! * the kernel file and the initfs stay where QEMU put them (page-aligned).
//!
//! Anything it cannot do correctly is reported on COM1 and the machine powers
//! off (QEMU) or halts.
#![no_std]
#![no_main]

mod serial;
mod start_info;

use core::arch::{asm, global_asm};
use core::fmt::Write;
use core::panic::PanicInfo;

use redox_boot_format::{bundle, initfs, page_align_up, PAGE_SIZE};
use serial::Com1;
use start_info::{MemoryRange, StartInfo};

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
    movl %ebx, %edi              /* hvm_start_info (physical) */
    /* PML4[0] -> PDPT; PDPT[0..4] -> 4 PDs of 2 MiB pages: 0..4 GiB. */
    movl $boot_pdpt, %eax
    orl $3, %eax                 /* present | write */
    movl %eax, boot_pml4
    xorl %ecx, %ecx
1:  movl %ecx, %eax
    shll $12, %eax
    addl $boot_pd, %eax
    orl $3, %eax
    movl %eax, boot_pdpt(,%ecx,8)
    incl %ecx
    cmpl $4, %ecx
    jne 1b
    xorl %ecx, %ecx
2:  movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax              /* present | write | 2 MiB */
    movl %eax, boot_pd(,%ecx,8)
    movl %ecx, %eax
    shrl $11, %eax               /* high half of the physical address */
    movl %eax, boot_pd+4(,%ecx,8)
    incl %ecx
    cmpl $2048, %ecx
    jne 2b
    movl %cr4, %eax
    orl $0x2b0, %eax             /* OSFXSR | PGE | PAE | PSE */
    movl %eax, %cr4
    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx       /* EFER */
    rdmsr
    orl $0x900, %eax             /* NXE | LME */
    wrmsr
    movl %cr0, %eax
    orl $0x80010001, %eax        /* PG | WP | PE */
    movl %eax, %cr0
    lgdt boot_gdt_ptr
    ljmp $0x08, $long_mode_entry

    .code64
long_mode_entry:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movq $loader_stack_top, %rsp
    xorl %ebp, %ebp
    /* edi still holds the start_info address (zero-extended by movl). */
    call loader_main
3:  hlt
    jmp 3b

    .section .rodata.boot, "a"
    .p2align 3
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff     /* 0x08 code, 64-bit */
    .quad 0x00cf92000000ffff     /* 0x10 data */
boot_gdt_end:
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt

    .section .bss.boot, "aw", @nobits
    .p2align 12
    .global boot_pml4
boot_pml4: .skip 4096
boot_pdpt: .skip 4096
boot_pd:   .skip 4 * 4096
    .p2align 4
    .skip 4096
boot_stack_top:
    .p2align 4
    .global loader_stack_bottom
loader_stack_bottom:
    .skip 65536
    .global loader_stack_top
loader_stack_top:
    "#,
    options(att_syntax)
);

/// The kernel is linked at -2 GiB (kernel `linkers/x86_64.ld`).
const KERNEL_OFFSET: u64 = 0xFFFF_FFFF_8000_0000;
/// The kernel's linear map of physical memory (rmm `X8664Arch::PHYS_OFFSET`).
const PML4_INDEX_PHYS_OFFSET: usize = 256;
const PML4_INDEX_KERNEL: usize = 511;
const PDPT_INDEX_KERNEL: usize = 510;
/// How much physical memory the identity / PHYS_OFFSET maps cover.
const MAPPED_PHYS_LIMIT: u64 = 4 << 30;
const ENTRIES: usize = 512;
const PRESENT_WRITABLE: u64 = 0b11;
/// Room for a kernel image of up to 32 MiB (one page table maps 2 MiB).
const KERNEL_PAGE_TABLES: usize = 16;
/// Memory-map entries we can hand over (e820 entries + our own).
const MAX_AREAS: usize = 64;
/// `BootloaderMemoryKind` (kernel `src/startup/memory.rs`).
const AREA_FREE: u64 = 1;
const AREA_RECLAIM: u64 = 2;
const AREA_RESERVED: u64 = 3;

#[repr(C, align(4096))]
struct Table([u64; ENTRIES]);

static mut KERNEL_PDPT: Table = Table([0; ENTRIES]);
static mut KERNEL_PD: Table = Table([0; ENTRIES]);
static mut KERNEL_PTS: [Table; KERNEL_PAGE_TABLES] = [const { Table([0; ENTRIES]) }; KERNEL_PAGE_TABLES];

/// `KernelArgs` of kernel 663e664 (`src/startup/mod.rs`), `repr(C, packed(8))`.
#[repr(C, packed(8))]
#[derive(Clone, Copy)]
struct KernelArgs {
    kernel_base: u64,
    kernel_size: u64,
    stack_base: u64,
    stack_size: u64,
    env_base: u64,
    env_size: u64,
    hwdesc_base: u64,
    hwdesc_size: u64,
    areas_base: u64,
    areas_size: u64,
    bootstrap_base: u64,
    bootstrap_size: u64,
}

/// `BootloaderMemoryEntry`, `repr(C, packed(8))`.
#[repr(C, packed(8))]
#[derive(Clone, Copy)]
struct Area {
    base: u64,
    size: u64,
    kind: u64,
}

static mut ARGS: KernelArgs = KernelArgs {
    kernel_base: 0,
    kernel_size: 0,
    stack_base: 0,
    stack_size: 0,
    env_base: 0,
    env_size: 0,
    hwdesc_base: 0,
    hwdesc_size: 0,
    areas_base: 0,
    areas_size: 0,
    bootstrap_base: 0,
    bootstrap_size: 0,
};
static mut AREAS: [Area; MAX_AREAS] = [Area { base: 0, size: 0, kind: 0 }; MAX_AREAS];

#[repr(C, align(4096))]
struct EnvPage([u8; 4096]);
static mut ENV: EnvPage = EnvPage([0; 4096]);

unsafe extern "C" {
    static __loader_start: u8;
    static __loader_end: u8;
    static boot_pml4: u8;
    static loader_stack_bottom: u8;
    static loader_stack_top: u8;
}

/// Why the loader stopped (printed with `{:?}`, hence the allow: the
/// payloads are read only through `Debug`).
#[derive(Debug)]
#[allow(dead_code)]
enum LoadError {
    StartInfo(start_info::StartInfoError),
    NoModule,
    Bundle(bundle::BundleError),
    Kernel(&'static str),
    Initfs(initfs::HeaderError),
    MemoryAbove4GiB,
    TooManyAreas,
}

#[unsafe(no_mangle)]
extern "C" fn loader_main(start_info: u32) -> ! {
    let mut out = Com1::init();
    let _ = writeln!(out, "pvh-loader: start_info at {start_info:#x}");
    match load(start_info, &mut out) {
        Ok((entry, args)) => {
            let _ = writeln!(out, "pvh-loader: jumping to kstart at {entry:#x}");
            // SAFETY: `prepare` built page tables that map the kernel at its
            // link address and keep this code identity-mapped; `args` points
            // into our Reclaim region, which the kernel does not reuse before
            // it has copied everything it needs.
            unsafe { enter_kernel(entry, args) }
        }
        Err(e) => {
            let _ = writeln!(out, "pvh-loader: FATAL: {e:?}");
            power_off()
        }
    }
}

fn load(start_info_addr: u32, out: &mut Com1) -> Result<(u64, *const KernelArgs), LoadError> {
    // SAFETY: QEMU's PVH option ROM passes the physical address of a
    // `hvm_start_info`; physical 0..4 GiB is identity-mapped.
    let info = unsafe { StartInfo::read(u64::from(start_info_addr)) }.map_err(LoadError::StartInfo)?;
    let module = info.first_module().ok_or(LoadError::NoModule)?;
    let _ = writeln!(out, "pvh-loader: bundle at {:#x}, {} bytes", module.base, module.size);
    // SAFETY: the module lies in guest RAM below 4 GiB (QEMU puts the initrd
    // below the top of low memory), identity-mapped.
    let bundle_bytes = unsafe { phys_slice(module.base, module.size) };
    let header = bundle::Header::decode(bundle_bytes, module.size).map_err(LoadError::Bundle)?;

    let kernel_phys = module.base + header.kernel_offset;
    // SAFETY: inside the bundle, checked by `decode`.
    let kernel_file = unsafe { phys_slice(kernel_phys, header.kernel_size) };
    let kernel = check_kernel(kernel_file)?;
    let _ = writeln!(
        out,
        "pvh-loader: kernel at {kernel_phys:#x}, image {:#x} bytes, entry {:#x}",
        kernel.image_size, kernel.entry
    );

    let initfs_phys = module.base + header.initfs_offset;
    // SAFETY: inside the bundle, checked by `decode`.
    let initfs_bytes = unsafe { phys_slice(initfs_phys, header.initfs_size) };
    let ih = initfs::Header::decode(initfs_bytes).map_err(LoadError::Initfs)?;
    let _ = writeln!(out, "pvh-loader: initfs at {initfs_phys:#x}, {} bytes, entry {:#x}", header.initfs_size, ih.bootstrap_entry);

    // The whole file, not only its PT_LOAD segments, as the Redox bootloader
    // loads it: the kernel reads its own section headers and symbol table
    // through KERNEL_OFFSET when it prints a stack trace (src/panic.rs,
    // `stack_trace`, on every unhandled exception of a user context). With
    // only the segments mapped, that read page-faults, and the page-fault
    // handler's stack trace faults again, for ever.
    let mapped_size = page_align_up(header.kernel_size)
        .ok_or(LoadError::Kernel("size"))?
        .max(kernel.image_size);
    // SAFETY: single CPU, before the kernel runs; the tables are ours.
    unsafe { map_kernel(kernel_phys, mapped_size) }?;

    let (rsdp, rsdp_size) = find_rsdp(info.rsdp);
    let _ = writeln!(out, "pvh-loader: RSDP at {rsdp:#x}");

    // SAFETY: single CPU; ENV, AREAS and ARGS are only touched here.
    unsafe {
        let env = &mut *(&raw mut ENV);
        let env_len = write_env(&mut env.0, rsdp, rsdp_size, info.cmdline(2048));
        let areas = &mut *(&raw mut AREAS);
        let count = build_areas(&info, areas)?;
        let loader_start = &raw const __loader_start as u64;
        let loader_end = &raw const __loader_end as u64;
        let _ = writeln!(out, "pvh-loader: {count} memory areas, loader {loader_start:#x}..{loader_end:#x}");
        let args = &mut *(&raw mut ARGS);
        *args = KernelArgs {
            kernel_base: kernel_phys,
            kernel_size: mapped_size,
            stack_base: &raw const loader_stack_bottom as u64,
            stack_size: &raw const loader_stack_top as u64 - &raw const loader_stack_bottom as u64,
            env_base: env.0.as_ptr() as u64,
            env_size: env_len as u64,
            hwdesc_base: rsdp,
            hwdesc_size: rsdp_size,
            areas_base: areas.as_ptr() as u64,
            areas_size: (count * core::mem::size_of::<Area>()) as u64,
            bootstrap_base: initfs_phys,
            // The kernel counts whole pages; the bundle pads the initfs.
            bootstrap_size: page_align_up(header.initfs_size).ok_or(LoadError::Kernel("initfs size"))?,
        };
        Ok((kernel.entry, args as *const KernelArgs))
    }
}

struct KernelImage {
    entry: u64,
    /// Bytes from the start of the file that the kernel expects mapped at
    /// KERNEL_OFFSET (page-rounded end of the last PT_LOAD segment).
    image_size: u64,
}

const PT_LOAD: u32 = 1;

/// Check that the kernel ELF can be mapped as a flat file at KERNEL_OFFSET,
/// which is what the Redox bootloader does: every PT_LOAD must sit at file
/// offset `vaddr - KERNEL_OFFSET` and have no zero-fill tail.
fn check_kernel(f: &[u8]) -> Result<KernelImage, LoadError> {
    let u16_at = |o: usize| f.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| f.get(o..o + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
    let u64_at = |o: usize| f.get(o..o + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    if f.get(..4) != Some(b"\x7fELF") || f.get(4) != Some(&2) || f.get(5) != Some(&1) {
        return Err(LoadError::Kernel("not a little-endian ELF64 file"));
    }
    if u16_at(18) != Some(62) {
        return Err(LoadError::Kernel("not an x86_64 ELF"));
    }
    let entry = u64_at(24).ok_or(LoadError::Kernel("truncated header"))?;
    let phoff = u64_at(32).ok_or(LoadError::Kernel("truncated header"))? as usize;
    let phentsize = usize::from(u16_at(54).ok_or(LoadError::Kernel("truncated header"))?);
    let phnum = usize::from(u16_at(56).ok_or(LoadError::Kernel("truncated header"))?);
    let mut end = 0u64;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let bad = LoadError::Kernel("truncated program header");
        if u32_at(ph).ok_or(bad)? != PT_LOAD {
            continue;
        }
        let offset = u64_at(ph + 8).ok_or(LoadError::Kernel("truncated program header"))?;
        let vaddr = u64_at(ph + 16).ok_or(LoadError::Kernel("truncated program header"))?;
        let filesz = u64_at(ph + 32).ok_or(LoadError::Kernel("truncated program header"))?;
        let memsz = u64_at(ph + 40).ok_or(LoadError::Kernel("truncated program header"))?;
        if vaddr < KERNEL_OFFSET || vaddr - KERNEL_OFFSET != offset {
            return Err(LoadError::Kernel("PT_LOAD not at file offset vaddr - KERNEL_OFFSET"));
        }
        if memsz != filesz {
            return Err(LoadError::Kernel("PT_LOAD with a zero-fill tail"));
        }
        end = end.max(offset + filesz);
    }
    if end == 0 || end > f.len() as u64 {
        return Err(LoadError::Kernel("no PT_LOAD, or a segment past the end of the file"));
    }
    if entry < KERNEL_OFFSET || entry - KERNEL_OFFSET >= end {
        return Err(LoadError::Kernel("entry point outside the loaded image"));
    }
    let image_size = page_align_up(end).ok_or(LoadError::Kernel("size"))?;
    Ok(KernelImage { entry, image_size })
}

/// Map `size` bytes at `phys` to KERNEL_OFFSET with 4 KiB pages, and alias
/// the identity map at PHYS_OFFSET.
///
/// # Safety
/// Single CPU, before the kernel runs.
unsafe fn map_kernel(phys: u64, size: u64) -> Result<(), LoadError> {
    if phys % PAGE_SIZE != 0 {
        return Err(LoadError::Kernel("kernel not page-aligned in memory"));
    }
    let pages = (size / PAGE_SIZE) as usize;
    if pages > KERNEL_PAGE_TABLES * ENTRIES {
        return Err(LoadError::Kernel("kernel image larger than 32 MiB"));
    }
    // SAFETY: the caller guarantees exclusive access; the PML4 is the boot
    // PML4 in our .bss, currently loaded in CR3 (entries 256 and 511 are
    // unused so far, so the live mapping of this code does not change).
    unsafe {
        let pml4 = &mut *(&raw const boot_pml4 as *mut [u64; ENTRIES]);
        let pdpt = &mut *(&raw mut KERNEL_PDPT);
        let pd = &mut *(&raw mut KERNEL_PD);
        let pts = &mut *(&raw mut KERNEL_PTS);
        for page in 0..pages {
            let (t, e) = (page / ENTRIES, page % ENTRIES);
            pts[t].0[e] = (phys + page as u64 * PAGE_SIZE) | PRESENT_WRITABLE;
        }
        for (t, pt) in pts.iter().enumerate().take(pages.div_ceil(ENTRIES)) {
            pd.0[t] = pt.0.as_ptr() as u64 | PRESENT_WRITABLE;
        }
        pdpt.0[PDPT_INDEX_KERNEL] = pd.0.as_ptr() as u64 | PRESENT_WRITABLE;
        pml4[PML4_INDEX_KERNEL] = pdpt.0.as_ptr() as u64 | PRESENT_WRITABLE;
        pml4[PML4_INDEX_PHYS_OFFSET] = pml4[0];
        // Reload CR3 to drop any stale translations.
        asm!("mov {t}, cr3", "mov cr3, {t}", t = out(reg) _, options(nostack));
    }
    Ok(())
}

/// Memory map for the kernel: the firmware's e820 map (RAM as free, the
/// rest reserved), with our own image marked Reclaim.
fn build_areas(info: &StartInfo, areas: &mut [Area; MAX_AREAS]) -> Result<usize, LoadError> {
    let mut n = 0;
    let mut push = |a: Area| -> Result<(), LoadError> {
        *areas.get_mut(n).ok_or(LoadError::TooManyAreas)? = a;
        n += 1;
        Ok(())
    };
    for MemoryRange { base, size, kind } in info.memory_map() {
        let kind = if kind == start_info::E820_RAM { AREA_FREE } else { AREA_RESERVED };
        if kind == AREA_FREE && base.saturating_add(size) > MAPPED_PHYS_LIMIT {
            return Err(LoadError::MemoryAbove4GiB);
        }
        push(Area { base, size, kind })?;
    }
    let start = &raw const __loader_start as u64;
    let end = &raw const __loader_end as u64;
    push(Area { base: start, size: end - start, kind: AREA_RECLAIM })?;
    Ok(n)
}

/// The RSDP: from start_info if QEMU gave it, else searched in the BIOS
/// area like the Redox BIOS bootloader does. Returns (address, length).
fn find_rsdp(from_start_info: u64) -> (u64, u64) {
    let check = |addr: u64| -> Option<u64> {
        // SAFETY: low memory, identity-mapped; 36 bytes stay inside the
        // searched BIOS range (which ends at 1 MiB) or the given table.
        let b = unsafe { phys_slice(addr, 36) };
        if b.get(..8) != Some(b"RSD PTR ") {
            return None;
        }
        let sum = b.iter().take(20).fold(0u8, |s, x| s.wrapping_add(*x));
        if sum != 0 {
            return None;
        }
        Some(if b.get(15).copied().unwrap_or(0) >= 2 { 36 } else { 20 })
    };
    if from_start_info != 0 && let Some(len) = check(from_start_info) {
        return (from_start_info, len);
    }
    let mut addr = 0xE_0000;
    while addr < 0x10_0000 {
        if let Some(len) = check(addr) {
            return (addr, len);
        }
        addr += 16;
    }
    (0, 0)
}

/// The environment the kernel hands to userspace (same keys as the Redox
/// bootloader writes for ACPI), then each `KEY=VALUE` word of the QEMU
/// command line (`-append`) on a line of its own, as the Redox bootloader
/// passes its own variables: the first process reads them from `sys:env`.
/// Returns its length.
fn write_env(buf: &mut [u8; 4096], rsdp: u64, rsdp_size: u64, cmdline: &[u8]) -> usize {
    struct W<'a>(&'a mut [u8], usize);
    impl Write for W<'_> {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let dst = self.0.get_mut(self.1..self.1 + s.len()).ok_or(core::fmt::Error)?;
            dst.copy_from_slice(s.as_bytes());
            self.1 += s.len();
            Ok(())
        }
    }
    let mut w = W(buf, 0);
    if rsdp != 0 {
        let _ = writeln!(w, "RSDP_ADDR={rsdp:016x}");
        let _ = writeln!(w, "RSDP_SIZE={rsdp_size:016x}");
    }
    let _ = writeln!(w, "HWBP_PVH_LOADER=1");
    for word in cmdline.split(|b| b.is_ascii_whitespace()) {
        if word.contains(&b'=') && let Ok(word) = core::str::from_utf8(word) {
            let _ = writeln!(w, "{word}");
        }
    }
    w.1
}

/// # Safety
/// `[addr, addr + len)` must be identity-mapped memory that nothing writes
/// while the slice lives.
unsafe fn phys_slice(addr: u64, len: u64) -> &'static [u8] {
    // SAFETY: forwarded to the caller.
    unsafe { core::slice::from_raw_parts(addr as *const u8, len as usize) }
}

/// # Safety
/// See `loader_main`.
unsafe fn enter_kernel(entry: u64, args: *const KernelArgs) -> ! {
    // SAFETY: forwarded; kstart takes the args pointer in rdi and sets up
    // its own stack (kernel src/arch/x86_shared/start.rs).
    unsafe {
        asm!(
            "mov rsp, {stack}",
            "xor ebp, ebp",
            "jmp {entry}",
            entry = in(reg) entry,
            stack = in(reg) &raw const loader_stack_top as u64,
            in("rdi") args,
            options(noreturn)
        )
    }
}

/// QEMU's ACPI PM1a control register (q35 and pc machines: port 0x604);
/// writing SLP_EN with sleep type 0 powers the VM off, so a runner sees the
/// failure at once instead of waiting for its timeout.
const QEMU_PM1A_CONTROL: u16 = 0x604;
const SLP_EN: u16 = 1 << 13;

fn power_off() -> ! {
    // SAFETY: port I/O to the emulated PM block; on real hardware this port
    // is unassigned or the same ACPI register, and we halt right after.
    unsafe { asm!("out dx, ax", in("dx") QEMU_PM1A_CONTROL, in("ax") SLP_EN, options(nomem, nostack)) };
    halt()
}

fn halt() -> ! {
    loop {
        // SAFETY: interrupts are off; hlt just stops this CPU.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) }
    }
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    let mut out = Com1::init();
    let _ = writeln!(out, "pvh-loader: panic: {info}");
    power_off()
}
