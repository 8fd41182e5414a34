//! COM1 output and the isa-debug-exit port.

use core::arch::asm;
use core::fmt;

const COM1: u16 = 0x3f8;
const LINE_STATUS: u16 = COM1 + 5;
const TRANSMIT_EMPTY: u8 = 1 << 5;
/// `-device isa-debug-exit,iobase=0xf4,iosize=0x04`: writing v makes QEMU
/// exit with status (v << 1) | 1.
const DEBUG_EXIT_PORT: u16 = 0xf4;

/// What the guest tells QEMU when it is done. run.sh maps the statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    /// Every check passed: QEMU exits with 33.
    Passed = 0x10,
    /// At least one check failed: 35.
    Failed = 0x11,
    /// Panic or unexpected kernel exception: 37.
    Crashed = 0x12,
    #[cfg_attr(not(feature = "bench"), allow(dead_code))]
    /// Bench mode finished: 39.
    BenchDone = 0x13,
}

fn outb(port: u16, value: u8) {
    // SAFETY: port I/O to COM1 has no memory effect.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack)) }
}

fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: reading COM1's line status has no memory effect.
    unsafe { asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack)) };
    value
}

pub struct Serial;

impl fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            while inb(LINE_STATUS) & TRANSMIT_EMPTY == 0 {}
            outb(COM1, b);
        }
        Ok(())
    }
}

#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = write!($crate::serial::Serial, $($arg)*);
    }};
}

#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::serial::Serial, $($arg)*);
    }};
}

pub fn exit(code: ExitCode) -> ! {
    // SAFETY: the debug-exit device ends the VM; nothing runs after it.
    unsafe { asm!("out dx, eax", in("dx") DEBUG_EXIT_PORT, in("eax") code as u32, options(nomem, nostack)) };
    loop {
        // SAFETY: halting with interrupts off: only reached without the device.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) };
    }
}
