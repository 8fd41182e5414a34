//! hwbp-system-target: the program the system test watches by pid.
//!
//! Prints `target: ready pid <pid> addr <a> <b>` (two 8-byte words on a page
//! of their own, so no other data shares the watched page), then obeys
//! lines on stdin: `store <n> <a|b>` makes n aligned 8-byte stores to that
//! word (a 1 ms pause after every 100, so the hit stream is drained at a
//! realistic pace) and answers `target: made <n> stores to <a|b>`;
//! `kread <n> <a|b>` makes n 8-byte reads from a pipe into that word (the
//! kernel's copy writes it, at CPL 0; a 1 ms pause every 10) and answers
//! the same;
//! `exit` exits. Runs on the host too (nothing in it is Redox-specific).

use std::io::{BufRead, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use hwbp_redox_system::{TargetCmd, TargetReady, format_done, format_ready, parse_cmd};

/// The watched words, alone on their page.
#[repr(C, align(4096))]
struct Page([AtomicU64; 512]);

static PAGE: Page = Page([const { AtomicU64::new(0) }; 512]);

/// Word a is the first of the page, word b 64 bytes further (another cache line).
fn word(w: char) -> &'static AtomicU64 {
    &PAGE.0[if w == 'a' { 0 } else { 8 }]
}

/// n reads of 8 bytes from a pipe straight into `cell`: the kernel copies
/// them in, so every write to the word is a kernel-mode access.
fn kernel_reads(cell: &'static AtomicU64, n: u64) -> std::io::Result<()> {
    let (mut rx, mut tx) = std::io::pipe()?;
    for i in 0..n {
        tx.write_all(&(i + 1).to_le_bytes())?;
        // SAFETY: the word is 8 bytes, aligned, and only this thread uses
        // it while it runs (a plain buffer for the read(2) below).
        let buf = unsafe { std::slice::from_raw_parts_mut(cell.as_ptr().cast::<u8>(), 8) };
        rx.read_exact(buf)?;
        if (i + 1) % 10 == 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    Ok(())
}

fn main() {
    let ready = TargetReady {
        pid: u64::from(std::process::id()),
        a: word('a') as *const AtomicU64 as u64,
        b: word('b') as *const AtomicU64 as u64,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let _ = writeln!(out, "{}", format_ready(&ready));
    let _ = out.flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match parse_cmd(&line) {
            Some(TargetCmd::Store(n, w)) => {
                let cell = word(w);
                for i in 0..n {
                    // A plain 8-byte store (mov), the access the watch is for.
                    cell.store(i + 1, Ordering::Relaxed);
                    if (i + 1) % 100 == 0 {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                }
                let _ = writeln!(out, "{}", format_done(n, w));
            }
            Some(TargetCmd::KernelRead(n, w)) => {
                let cell = word(w);
                match kernel_reads(cell, n) {
                    Ok(()) => {
                        let _ = writeln!(out, "{}", format_done(n, w));
                    }
                    Err(e) => {
                        let _ = writeln!(out, "target: kread failed: {e}");
                    }
                }
            }
            Some(TargetCmd::Exit) => break,
            None => {
                let _ = writeln!(out, "target: unknown command {line:?}");
            }
        }
        let _ = out.flush();
    }
}
