//! hwbp-target: a program for `hwbp stat -p` / `hwbp record -p` to watch,
//! for the Redox system test (and for anyone trying the tools by hand).
//!
//! ```text
//! hwbp-target [--stores N] [--calls N] [--threads T] [--go-file PATH] [--exit]
//! ```
//!
//! 1. Prints, one per line, then flushes:
//!    `pid <pid>`, `addr <0x...>` (an 8-byte variable alone on its own
//!    4096-byte page: nothing else is stored on that page), `func <0x...>`
//!    (an `#[inline(never)]` function), `ready`.
//! 2. Waits for the go signal: a line on stdin (default), or, with
//!    `--go-file PATH`, the file PATH appearing (polled every 10 ms). A
//!    watcher attaches by pid in between, e.g.
//!    `hwbp stat -p <pid> -e mem:<addr>/8:w --duration-ms 3000`.
//! 3. Makes N 8-byte stores to `addr` (default 1000) and N calls of `func`
//!    (default 0), split evenly over T threads (default 1; threads are
//!    created after the go signal, so a watch must follow new threads),
//!    then prints `stores <N>`, `calls <N>` (what it actually made) and
//!    `done`.
//! 4. Without `--exit`, waits until stdin is closed (so the watcher can read
//!    its count while the task still exists), then exits 0.
//!
//! Exit status 2 for bad arguments.

use std::cell::UnsafeCell;
use std::hint::black_box;
use std::io::{self, BufRead, Write};
use std::time::Duration;

/// A page holding only the watched variable (first 8 bytes).
#[repr(C, align(4096))]
struct Page(UnsafeCell<[u64; 512]>);

// SAFETY: accessed only through volatile stores of plain integers via raw
// pointers; concurrent stores of whole u64 by several threads are what the
// program is for, and any value is valid.
unsafe impl Sync for Page {}

static PAGE: Page = Page(UnsafeCell::new([0; 512]));

fn addr() -> *mut u64 {
    PAGE.0.get().cast::<u64>()
}

#[inline(never)]
extern "C" fn func(x: u64) -> u64 {
    black_box(x.wrapping_add(1))
}

#[derive(Debug, PartialEq, Eq)]
struct Args {
    stores: u64,
    calls: u64,
    threads: u64,
    go_file: Option<String>,
    exit: bool,
}

fn parse(args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args { stores: 1000, calls: 0, threads: 1, go_file: None, exit: false };
    let mut it = args;
    while let Some(flag) = it.next() {
        let mut num = |name: &str| -> Result<u64, String> {
            let v = it.next().ok_or(format!("{name} needs a value"))?;
            v.parse().map_err(|_| format!("{name}: not a number: {v:?}"))
        };
        match flag.as_str() {
            "--stores" => a.stores = num("--stores")?,
            "--calls" => a.calls = num("--calls")?,
            "--threads" => a.threads = num("--threads")?.max(1),
            "--go-file" => a.go_file = Some(it.next().ok_or("--go-file needs a path")?),
            "--exit" => a.exit = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(a)
}

fn work(stores: u64, calls: u64) -> (u64, u64) {
    let p = addr();
    let mut s = 0;
    for i in 0..stores {
        // SAFETY: `p` points at PAGE's first u64 (static, aligned); see Page.
        unsafe { p.write_volatile(i) };
        s += 1;
    }
    let mut c = 0;
    for i in 0..calls {
        black_box(black_box(func as extern "C" fn(u64) -> u64)(i));
        c += 1;
    }
    (s, c)
}

fn share(total: u64, parts: u64, i: u64) -> u64 {
    total / parts + u64::from(i < total % parts)
}

fn main() {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(why) => {
            if !why.is_empty() {
                eprintln!("hwbp-target: {why}");
            }
            eprintln!("usage: hwbp-target [--stores N] [--calls N] [--threads T] [--go-file PATH] [--exit]");
            std::process::exit(2);
        }
    };
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "pid {}", std::process::id());
    let _ = writeln!(out, "addr {:#x}", addr() as usize);
    let _ = writeln!(out, "func {:#x}", func as extern "C" fn(u64) -> u64 as usize);
    let _ = writeln!(out, "ready");
    let _ = out.flush();

    let stdin = io::stdin();
    match &args.go_file {
        Some(path) => {
            while !std::path::Path::new(path).exists() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        None => {
            let mut line = String::new();
            let _ = stdin.lock().read_line(&mut line);
        }
    }

    let (stores, calls) = if args.threads == 1 {
        work(args.stores, args.calls)
    } else {
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..args.threads)
                .map(|i| s.spawn(move || work(share(args.stores, args.threads, i), share(args.calls, args.threads, i))))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or((0, 0))).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
        })
    };
    let _ = writeln!(out, "stores {stores}");
    let _ = writeln!(out, "calls {calls}");
    let _ = writeln!(out, "done");
    let _ = out.flush();
    if !args.exit {
        let mut sink = String::new();
        while stdin.lock().read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_parse_and_threads_share_the_work_exactly() {
        let a = parse(["--stores", "10", "--calls", "3", "--threads", "4", "--exit"].map(String::from).into_iter()).unwrap();
        assert_eq!(a, Args { stores: 10, calls: 3, threads: 4, go_file: None, exit: true });
        assert_eq!((0..4).map(|i| share(10, 4, i)).sum::<u64>(), 10);
        assert_eq!((0..4).map(|i| share(3, 4, i)).sum::<u64>(), 3);
        assert!(parse(["--stores"].map(String::from).into_iter()).is_err());
        assert!(parse(["--bogus"].map(String::from).into_iter()).is_err());
        assert_eq!(addr() as usize % 4096, 0, "the variable starts its own page");
    }
}
