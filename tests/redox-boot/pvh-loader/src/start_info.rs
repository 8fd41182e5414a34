//! `struct hvm_start_info` (Xen `arch-x86/hvm/start_info.h`), as QEMU's PVH
//! option ROM fills it: version 1 carries the e820 memory map.
//!
//! | off | field          |   | off | field           |
//! |-----|----------------|---|-----|-----------------|
//! | 0   | magic u32      |   | 24  | cmdline_paddr   |
//! | 4   | version u32    |   | 32  | rsdp_paddr      |
//! | 8   | flags u32      |   | 40  | memmap_paddr    |
//! | 12  | nr_modules u32 |   | 48  | memmap_entries  |
//! | 16  | modlist_paddr  |   |     |                 |
//!
//! A module entry is {paddr, size, cmdline_paddr, reserved} (4 x u64); a
//! memory map entry is {addr u64, size u64, type u32, reserved u32}.

pub const MAGIC: u32 = 0x336e_c578;
/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
const MEMMAP_ENTRY_SIZE: u64 = 24;

#[derive(Debug)]
#[allow(dead_code)] // payloads are read through `Debug`
pub enum StartInfoError {
    BadMagic(u32),
    /// Version 0 has no memory map, and we need one.
    NoMemoryMap(u32),
}

pub struct StartInfo {
    /// Physical address of the NUL-terminated command line (QEMU
    /// `-append`), 0 if none.
    cmdline: u64,
    nr_modules: u32,
    modlist: u64,
    pub rsdp: u64,
    memmap: u64,
    memmap_entries: u32,
}

pub struct Module {
    pub base: u64,
    pub size: u64,
}

pub struct MemoryRange {
    pub base: u64,
    pub size: u64,
    pub kind: u32,
}

/// # Safety
/// `addr` must be readable, identity-mapped memory.
unsafe fn r32(addr: u64) -> u32 {
    // SAFETY: forwarded.
    unsafe { (addr as *const u32).read_unaligned() }
}
/// # Safety
/// As `r32`.
unsafe fn r64(addr: u64) -> u64 {
    // SAFETY: forwarded.
    unsafe { (addr as *const u64).read_unaligned() }
}

impl StartInfo {
    /// # Safety
    /// `addr` is the `ebx` QEMU passed at the PVH entry, identity-mapped.
    pub unsafe fn read(addr: u64) -> Result<StartInfo, StartInfoError> {
        // SAFETY: forwarded; every field read lies inside the structure.
        unsafe {
            let magic = r32(addr);
            if magic != MAGIC {
                return Err(StartInfoError::BadMagic(magic));
            }
            let version = r32(addr + 4);
            if version < 1 {
                return Err(StartInfoError::NoMemoryMap(version));
            }
            Ok(StartInfo {
                cmdline: r64(addr + 24),
                nr_modules: r32(addr + 12),
                modlist: r64(addr + 16),
                rsdp: r64(addr + 32),
                memmap: r64(addr + 40),
                memmap_entries: r32(addr + 48),
            })
        }
    }

    /// The command line's bytes (without the NUL), at most `max` of them.
    pub fn cmdline(&self, max: usize) -> &'static [u8] {
        if self.cmdline == 0 {
            return &[];
        }
        // SAFETY: QEMU wrote a NUL-terminated string there; we stop at the
        // NUL or at `max` bytes, whichever comes first.
        unsafe {
            let start = self.cmdline as *const u8;
            let mut len = 0;
            while len < max && start.add(len).read() != 0 {
                len += 1;
            }
            core::slice::from_raw_parts(start, len)
        }
    }

    pub fn first_module(&self) -> Option<Module> {
        if self.nr_modules == 0 || self.modlist == 0 {
            return None;
        }
        // SAFETY: QEMU wrote nr_modules entries at modlist.
        let (base, size) = unsafe { (r64(self.modlist), r64(self.modlist + 8)) };
        (size != 0).then_some(Module { base, size })
    }

    pub fn memory_map(&self) -> impl Iterator<Item = MemoryRange> + '_ {
        (0..u64::from(self.memmap_entries)).map(move |i| {
            let e = self.memmap + i * MEMMAP_ENTRY_SIZE;
            // SAFETY: QEMU wrote memmap_entries entries at memmap.
            unsafe { MemoryRange { base: r64(e), size: r64(e + 8), kind: r32(e + 16) } }
        })
    }
}
