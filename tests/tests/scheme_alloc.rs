//! Issue 12, memory: hwbpd's bytes per uid under the worst pattern stay
//! within the bound scheme-hwbp/README.md states, and allocation failures
//! a client drives are refused with ENOMEM (one log line) instead of
//! aborting the server. A global allocator counts this thread's live bytes
//! and can be told to fail large allocations on this thread.

mod scheme_common;
use scheme_common::*;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use libhwbp::abi::errno::ENOMEM;
use libhwbp::abi::EVENT_RECORD_SIZE;
use redox_scheme::scheme::SchemeSync;

struct TestAlloc;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    /// Allocations of at least this many bytes fail on this thread.
    static FAIL_FROM: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn live() -> isize {
    LIVE.with(Cell::get)
}

fn add_live(n: isize) {
    let _ = LIVE.try_with(|l| l.set(l.get() + n));
}

fn refused(size: usize) -> bool {
    FAIL_FROM.try_with(|f| size >= f.get()).unwrap_or(false)
}

// SAFETY: forwards to the system allocator; only counts, or fails an
// allocation (returns null, which GlobalAlloc allows).
unsafe impl GlobalAlloc for TestAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if refused(layout.size()) {
            return std::ptr::null_mut();
        }
        add_live(layout.size() as isize);
        // SAFETY: the caller's contract is forwarded as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add_live(-(layout.size() as isize));
        // SAFETY: the caller's contract is forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() && refused(new_size) {
            return std::ptr::null_mut();
        }
        add_live(new_size as isize - layout.size() as isize);
        // SAFETY: the caller's contract is forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: TestAlloc = TestAlloc;

/// Run `f` with allocations of `limit` bytes or more failing.
fn with_alloc_limit<R>(limit: usize, f: impl FnOnce() -> R) -> R {
    FAIL_FROM.with(|l| l.set(limit));
    let r = f();
    FAIL_FROM.with(|l| l.set(usize::MAX));
    r
}

const A: u64 = 0x40_0000;

#[test]
fn streams_past_what_memory_allows_are_enomem_and_the_server_carries_on() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let fd = open(&mut s, 1, ROOT, &format!("task/{pid}/mem:{A:#x}/8:w")).unwrap();
    let ctx = hwbpd::caller_ctx(1, ROOT, ROOT);
    take_log();
    let mut streams = Vec::with_capacity(10_000);
    let errno = with_alloc_limit(16 * 1024, || {
        for _ in 0..10_000 {
            match s.dup(fd, libhwbp::abi::EVENTS_DUP_NAME.as_bytes(), &ctx) {
                Ok(redox_scheme::OpenResult::ThisScheme { number, .. }) => streams.push(number),
                Ok(other) => panic!("{other:?}"),
                Err(e) => return e.errno,
            }
        }
        0
    });
    assert_eq!(errno, ENOMEM, "after {} streams", streams.len());
    let lines = take_log();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("ENOMEM (12)"), "{}", lines[0]);
    // Nothing half-done: every stream before the refusal works, the
    // breakpoint is still armed and counting.
    write(&mut s, tid, A, 8);
    assert_eq!(count(&mut s, fd).value, 1);
    assert_eq!(read_events(&mut s, *streams.last().unwrap(), 4, true).unwrap().len(), 1);
    for e in streams {
        close(&mut s, e);
    }
    close(&mut s, fd);
    assert_eq!((s.breakpoint_count(), s.handle_count()), (0, 1));
}

#[test]
fn a_ring_that_cannot_grow_drops_records_into_lost_and_counts_every_hit() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let fd = open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}/8:w?ring=4096")).unwrap();
    let efd = events(&mut s, fd);
    take_log();
    with_alloc_limit(64 * EVENT_RECORD_SIZE + 1, || {
        for _ in 0..1000 {
            write(&mut s, tid, A, 8);
        }
        s.collect();
    });
    let c = count(&mut s, fd);
    assert_eq!((c.value, c.lost), (1000, 1000 - 64), "storage stopped at 64 records");
    assert!(!take_log().is_empty(), "said so");
    assert_eq!(read_events(&mut s, efd, 100, true).unwrap().len(), 64);
}

/// The worst pattern found for one uid: every breakpoint of the quota on a
/// task of its own, split into 4 pieces, ring=4096 filled, the uid's whole
/// stream cap subscribed; then its breakpoint handles closed (the streams
/// keep the state) and everything tried again, three times over.
fn worst_pattern(s: &mut Scheme, quota: usize, ring: usize) -> (isize, usize) {
    let tasks: Vec<_> = (0..quota * 3).map(|i| task_on(s, USER, (i % 2) as u32)).collect();
    let mut peak = 0isize;
    let mut held = Vec::new();
    let start = live();
    for round in 0..3 {
        let mut fds = Vec::new();
        for (i, &(pid, _)) in tasks.iter().enumerate().skip(round * quota).take(quota) {
            let addr = A + 0x100 * i as u64 + 1;
            if let Ok(fd) = open(s, pid, USER, &format!("task/{pid}/mem:{addr:#x}/6:w?ring={ring}")) {
                fds.push((fd, pid));
            }
        }
        for &(fd, pid) in &fds {
            let ctx = hwbpd::caller_ctx(pid as usize, USER, USER);
            for _ in 0..libhwbp::abi::STREAMS_PER_QUOTA {
                if let Ok(redox_scheme::OpenResult::ThisScheme { number, .. }) = s.dup(fd, libhwbp::abi::EVENTS_DUP_NAME.as_bytes(), &ctx) {
                    s.fevent(number, syscall::flag::EVENT_READ, &ctx).unwrap();
                    held.push(number);
                }
            }
        }
        for (i, &(pid, tid)) in tasks.iter().enumerate().skip(round * quota).take(quota) {
            let addr = A + 0x100 * i as u64 + 1;
            let cpu = (i % 2) as u32;
            s.kernel_mut().switch(cpu, Some(tid)).unwrap();
            for _ in 0..ring {
                write(s, tid, addr, 1);
            }
            s.collect();
            let _ = pid;
        }
        s.take_fevents();
        peak = peak.max(live() - start);
        for (fd, _) in fds {
            close(s, fd);
        }
        peak = peak.max(live() - start);
    }
    (peak, held.len())
}

#[test]
fn bytes_per_uid_stay_within_the_documented_bound_under_the_worst_pattern() {
    let quota = hwbpd::Config::default().user_quota;
    let mut s = server(2);
    let (peak, streams) = worst_pattern(&mut s, quota, 4096);
    take_log();
    let rings = quota * 4096 * EVENT_RECORD_SIZE;
    eprintln!("peak {peak} bytes, rings {rings}, per breakpoint beyond its ring {} bytes", (peak as usize - rings) / quota);
    assert_eq!((s.breakpoint_count(), streams), (quota, quota * libhwbp::abi::STREAMS_PER_QUOTA));
    assert!(peak as usize <= hwbpd::usage::bytes_bound(quota, 4096), "{peak}");
}
