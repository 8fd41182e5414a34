//! Issue 14: the listing view (`openat(root, "list[?from=<id>]")`) through
//! `SchemeSync` on the simulated kernel: who sees what, which register
//! holds each piece (checked against the simulated CPUs' real debug
//! registers), multiplexing, states, and hostile readers (offsets, tiny
//! buffers, many handles, huge listings).

mod scheme_common;
use scheme_common::*;

use hwbp_kern::dr7;
use hwbpd::scheme::ROOT_HANDLE;
use libhwbp::abi::errno::{EBADF, EINVAL, EMFILE};
use syscall::error::ESPIPE;
use libhwbp::abi::list::{list_snapshot_bound, ListRequest};
use libhwbp::abi::{BpState, ListEntry, Listing, Placement, Target, LIST_HANDLES_PER_UID, LIST_PAGE_BYTES};
use redox_scheme::scheme::SchemeSync;
use redox_scheme::OpenResult;
use syscall::schemev2::NewFdFlags;
use syscall::Stat;

const A: u64 = 0x60_0000;
const MS: u64 = 1_000_000;

fn ctx(pid: u32, uid: u32) -> redox_scheme::CallerCtx {
    hwbpd::caller_ctx(pid as usize, uid, uid)
}

/// Open a listing as (pid, uid); the handle must be positioned.
fn open_list(s: &mut Scheme, pid: u32, uid: u32, path: &str) -> Result<usize, i32> {
    match s.openat(ROOT_HANDLE, path, 0, 0, &ctx(pid, uid)) {
        Ok(OpenResult::ThisScheme { number, flags }) => {
            assert_eq!(flags, NewFdFlags::POSITIONED, "a listing is a file: the kernel keeps its offset");
            Ok(number)
        }
        Ok(other) => panic!("unexpected open result {other:?}"),
        Err(e) => Err(e.errno),
    }
}

fn read_at(s: &mut Scheme, fd: usize, offset: u64, len: usize) -> Result<Vec<u8>, i32> {
    let mut buf = vec![0u8; len];
    let n = s.read(fd, &mut buf, offset, 0, &ctx(1, ROOT)).map_err(|e| e.errno)?;
    buf.truncate(n);
    Ok(buf)
}

/// The whole snapshot of one handle, read as the kernel would (offset
/// advancing by what each read returned).
fn read_all(s: &mut Scheme, fd: usize, chunk: usize) -> Vec<u8> {
    let mut text = Vec::new();
    loop {
        let got = read_at(s, fd, text.len() as u64, chunk).unwrap();
        if got.is_empty() {
            return text;
        }
        assert!(got.len() <= chunk);
        text.extend_from_slice(&got);
    }
}

/// One page as (pid, uid), parsed; the handle is closed again.
fn page(s: &mut Scheme, pid: u32, uid: u32, from: u64) -> (Listing, usize) {
    let fd = open_list(s, pid, uid, &ListRequest { from }.to_string()).unwrap();
    let text = read_all(s, fd, 4096);
    close(s, fd);
    let l = Listing::parse_bytes(&text).unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(&text)));
    (l, text.len())
}

/// Every page, followed through `next=`.
fn listing(s: &mut Scheme, pid: u32, uid: u32) -> Vec<ListEntry> {
    let (mut l, _) = page(s, pid, uid, 0);
    let mut all = std::mem::take(&mut l.entries);
    while let Some(from) = l.next {
        (l, _) = page(s, pid, uid, from);
        all.append(&mut l.entries);
    }
    all
}

fn ids(entries: &[ListEntry]) -> Vec<u64> {
    entries.iter().map(|e| e.id).collect()
}

/// Every armed piece of `entries` on `cpu` — of cpu-wide breakpoints, and
/// of task `running`'s, the task on the CPU now — is in the register the
/// listing names, in the CPU's real DR0-DR3/DR7, and nothing else is.
fn check_against_registers(s: &Scheme, entries: &[ListEntry], cpu: u32, running: Option<u32>) -> usize {
    let regs = s.kernel().registers(cpu).unwrap();
    let enabled = dr7::enabled_slots(regs.dr7);
    let mut checked = 0;
    for e in entries {
        let here = match e.path.target {
            Target::Task(pid) | Target::TaskOnCpu { pid, .. } => running.is_some_and(|r| u64::from(r) == pid),
            _ => true,
        };
        for p in e.pieces.iter().filter(|_| here) {
            if let Some(slot) = p.place.slot_on(cpu) {
                let k = usize::from(slot);
                assert!(enabled & (1 << k) != 0, "bp {} piece {}: DR7 does not enable dr{k} on cpu {cpu}", e.id, p.piece);
                assert_eq!(regs.addr[k], p.piece.addr(), "bp {} piece {}: dr{k} on cpu {cpu}", e.id, p.piece);
                checked += 1;
            }
        }
    }
    assert_eq!(checked, enabled.count_ones() as usize, "every enabled register of cpu {cpu} is listed");
    checked
}

// ---- who sees what ---------------------------------------------------------

#[test]
fn root_sees_every_breakpoint_and_a_user_only_its_own() {
    let mut s = server(2);
    let (upid, _) = task_on(&mut s, USER, 0);
    let (opid, _) = task_on(&mut s, OTHER_USER, 1);
    let mine = open(&mut s, upid, USER, &format!("task/{upid}/mem:{A:#x}/8:w")).unwrap();
    let theirs = open(&mut s, opid, OTHER_USER, &format!("task/{opid}/mem:{A:#x}/8:w")).unwrap();
    let roots = open(&mut s, 1, ROOT, &format!("task/{upid}/mem:{:#x}/8:w", A + 8)).unwrap();
    let cpu_wide = open(&mut s, 1, ROOT, &format!("cpu/all/mem:{:#x}/4:rw?pinned", A + 64)).unwrap();
    let _ = (mine, theirs, roots, cpu_wide);

    let all = listing(&mut s, 1, ROOT);
    assert_eq!(all.len(), 4);
    assert_eq!(all.iter().map(|e| e.owner).collect::<Vec<_>>(), [USER, OTHER_USER, ROOT, ROOT]);

    for (uid, pid) in [(USER, upid), (OTHER_USER, opid)] {
        let seen = listing(&mut s, pid, uid);
        assert_eq!(seen.len(), 1, "uid {uid} sees only its own");
        assert!(seen.iter().all(|e| e.owner == uid), "uid {uid}: {seen:?}");
        // Paging from any id never reaches another user's breakpoint.
        for from in 0..6 {
            let (l, _) = page(&mut s, pid, uid, from);
            assert!(l.entries.iter().all(|e| e.owner == uid && e.id >= from));
            assert_eq!(l.header.uid, uid);
        }
    }
    // A uid with nothing open sees an empty listing, not an error.
    let (l, _) = page(&mut s, 7, 4242, 0);
    assert!(l.entries.is_empty() && l.next.is_none());
    // Root's breakpoint on the user's own task is root's, not shown to it.
    assert!(!listing(&mut s, upid, USER).iter().any(|e| e.owner == ROOT));
}

#[test]
fn an_entry_shows_owner_path_state_and_times() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let fd = open(&mut s, pid, USER, &format!("self/mem:{:#x}/6:w?period=2", A + 1)).unwrap();
    for _ in 0..3 {
        write(&mut s, tid, A + 2, 1);
    }
    s.kernel_mut().advance(5 * MS);
    let e = &listing(&mut s, pid, USER)[0];
    assert_eq!(e.path.to_string(), format!("task/{pid}/mem:{:#x}/6:w?period=2", A + 1), "self resolved");
    assert_eq!((e.owner, e.state, e.enabled), (USER, BpState::Live, true));
    assert_eq!(e.count, count(&mut s, fd), "the count record as a read gives it");
    assert_eq!((e.count.value, e.count.time_enabled_ns, e.count.time_running_ns), (3, 5 * MS, 5 * MS));
    let pieces: Vec<String> = e.pieces.iter().map(|p| p.piece.to_string()).collect();
    assert_eq!(pieces, [format!("{:#x}/1:w", A + 1), format!("{:#x}/2:w", A + 2), format!("{:#x}/2:w", A + 4), format!("{:#x}/1:w", A + 6)]);
    assert_eq!(check_against_registers(&s, std::slice::from_ref(e), 0, Some(pid)), 4);
}

#[test]
fn disabled_ended_and_closed_breakpoints_are_listed_as_such_with_nothing_armed() {
    let mut s = server(1);
    let (pid, _) = task_on(&mut s, USER, 0);
    let (other, _) = task_on(&mut s, USER, 0);
    let disabled = open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}/8:w?disabled")).unwrap();
    let ends = open(&mut s, other, USER, &format!("task/{other}/mem:{A:#x}/8:w")).unwrap();
    let closed = open(&mut s, pid, USER, &format!("task/{pid}/mem:{:#x}/8:w", A + 8)).unwrap();
    let stream = events(&mut s, closed);
    close(&mut s, closed);
    s.kernel_mut().exit(other).unwrap();
    let l = listing(&mut s, pid, USER);
    let by = |fd_id: u64| l.iter().find(|e| e.id == fd_id).unwrap();
    let (d, e, c) = (by(count(&mut s, disabled).id), by(count(&mut s, ends).id), &l[2]);
    assert_eq!((d.state, d.enabled), (BpState::Live, false));
    assert_eq!((e.state, e.enabled), (BpState::Ended, true));
    assert_eq!(c.state, BpState::Closed, "held by its events stream (and its owner's quota)");
    for x in [d, e, c] {
        assert!(x.pieces.iter().all(|p| p.place == Placement::Off), "{x:?}");
        assert_eq!(x.pieces.len(), 1);
    }
    close(&mut s, stream);
    assert_eq!(listing(&mut s, pid, USER).len(), 2, "forgotten with its last stream");
    command(&mut s, disabled, "enable").unwrap();
    let d = listing(&mut s, pid, USER).into_iter().find(|e| e.state == BpState::Live).unwrap();
    assert_eq!(d.pieces[0].place, Placement::Armed(vec![libhwbp::abi::CpuSpan { slot: 0, first: 0, last: 0 }]));
    command(&mut s, disabled, &format!("modify mem:{:#x}/2:w", A + 16)).unwrap();
    let d = listing(&mut s, pid, USER).into_iter().find(|e| e.state == BpState::Live).unwrap();
    assert_eq!(d.path.event.to_string(), format!("mem:{:#x}/2:w", A + 16), "the last modify");
}

// ---- which register holds each piece -------------------------------------

#[test]
fn a_cpu_wide_pinned_breakpoint_moves_a_tasks_piece_to_another_register_on_its_cpu_only() {
    let mut s = server(2);
    let (pid, tid) = task_on(&mut s, USER, 0);
    open(&mut s, 1, ROOT, &format!("cpu/0/mem:{:#x}/8:w?pinned", A + 0x100)).unwrap();
    open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}/8:w")).unwrap();
    let l = listing(&mut s, 1, ROOT);
    assert_eq!(l[0].pieces[0].place.to_string(), "dr0@cpu0");
    assert_eq!(l[1].pieces[0].place.to_string(), "dr1@cpu0,dr0@cpu1", "beside the cpu-wide piece on cpu 0 only");
    // The real registers agree, wherever the task runs.
    assert_eq!(check_against_registers(&s, &l, 0, Some(pid)), 2);
    s.kernel_mut().switch(1, Some(tid)).unwrap();
    assert_eq!(check_against_registers(&s, &l, 1, Some(pid)), 1);
    assert_eq!(check_against_registers(&s, &l, 0, None), 1, "cpu 0 keeps its cpu-wide piece");
    // A task breakpoint limited to one CPU is listed there only.
    open(&mut s, pid, USER, &format!("task/{pid}/cpu/1/mem:{:#x}/4:rw", A + 0x200)).unwrap();
    let l = listing(&mut s, 1, ROOT);
    assert_eq!(l[2].pieces[0].place.to_string(), "dr1@cpu1");
    // cpu/all: its register on every CPU.
    open(&mut s, 1, ROOT, &format!("cpu/all/mem:{:#x}/1:w?pinned", A + 0x300)).unwrap();
    let l = listing(&mut s, 1, ROOT);
    assert!(matches!(&l[3].pieces[0].place, Placement::Armed(spans) if spans.len() <= 2 && (0..2).all(|c| l[3].pieces[0].place.slot_on(c).is_some())), "{:?}", l[3]);
    assert_eq!(check_against_registers(&s, &l, 0, None), 2);
    assert_eq!(check_against_registers(&s, &l, 1, Some(pid)), 3, "cpu/all and the task's two");
}

#[test]
fn multiplexed_breakpoints_show_their_registers_or_waiting_and_take_turns() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    for i in 0..6 {
        open(&mut s, pid, USER, &format!("task/{pid}/mem:{:#x}/8:w", A + 8 * i)).unwrap();
    }
    let mut ever_armed = [false; 6];
    for round in 0..12 {
        let l = listing(&mut s, pid, USER);
        assert_eq!(l.len(), 6);
        let armed: Vec<_> = l.iter().filter(|e| matches!(e.pieces[0].place, Placement::Armed(_))).collect();
        let waiting = l.iter().filter(|e| e.pieces[0].place == Placement::Waiting).count();
        assert_eq!((armed.len(), waiting), (4, 2), "round {round}: 4 registers, 2 wait");
        let mut slots: Vec<u8> = armed.iter().map(|e| e.pieces[0].place.slot_on(0).unwrap()).collect();
        slots.sort_unstable();
        assert_eq!(slots, [0, 1, 2, 3], "round {round}: each armed one in its own register");
        assert_eq!(check_against_registers(&s, &l, 0, Some(pid)), 4, "round {round}");
        for (i, e) in l.iter().enumerate() {
            ever_armed[i] |= matches!(e.pieces[0].place, Placement::Armed(_));
        }
        write(&mut s, tid, A, 8);
        s.kernel_mut().advance(5 * MS);
        s.tick();
    }
    assert_eq!(ever_armed, [true; 6], "every one was armed at some listing");
    let l = listing(&mut s, pid, USER);
    assert!(l.iter().all(|e| e.count.time_running_ns < e.count.time_enabled_ns), "all multiplexed: {l:?}");
}

#[test]
fn identical_breakpoints_share_the_register_the_listing_names() {
    let mut s = server(1);
    let (pid, _) = task_on(&mut s, USER, 0);
    open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}/8:w")).unwrap();
    open(&mut s, pid, USER, &format!("task/{pid}/mem:{:#x}/8:w", A + 8)).unwrap();
    open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}/8:w")).unwrap();
    let l = listing(&mut s, pid, USER);
    assert_eq!(l[0].pieces[0].place, l[2].pieces[0].place);
    assert_ne!(l[0].pieces[0].place, l[1].pieces[0].place);
    assert_eq!(s.kernel().armed_slots(), 2);
}

// ---- bounds and hostile readers ------------------------------------------

#[test]
fn a_huge_listing_comes_in_bounded_pages_that_cover_every_breakpoint_once() {
    let cpus = 4;
    let mut s = server(cpus);
    let mut want = Vec::new();
    for _ in 0..40 {
        let (pid, _) = task_on(&mut s, USER, 0);
        for i in 0..40 {
            let fd = open(&mut s, 1, ROOT, &format!("task/{pid}/mem:{:#x}/6:w?kernel&period=1000000", A + 16 * i + 1)).unwrap();
            want.push(count(&mut s, fd).id);
        }
    }
    let (mut l, mut bytes) = page(&mut s, 1, ROOT, 0);
    let mut got = ids(&l.entries);
    let mut pages = 1;
    while let Some(from) = l.next {
        assert!(bytes <= list_snapshot_bound(cpus), "page of {bytes} bytes");
        assert!(bytes >= LIST_PAGE_BYTES / 2, "pages are full but for the last");
        (l, bytes) = page(&mut s, 1, ROOT, from);
        got.extend(ids(&l.entries));
        pages += 1;
    }
    assert_eq!(got, want, "every breakpoint once, in id order");
    assert!(pages > 10, "{pages} pages for 1,600 breakpoints");
    // A page never lists what the user may not see, nor more than a page.
    let (l, bytes) = page(&mut s, 1, USER, 0);
    assert!(l.entries.is_empty() && bytes < 200);
}

#[test]
fn the_snapshot_is_made_at_open_and_does_not_change() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let bp = open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}/8:w")).unwrap();
    let fd = open_list(&mut s, pid, USER, "list").unwrap();
    let first = read_all(&mut s, fd, 7);
    write(&mut s, tid, A, 8);
    open(&mut s, pid, USER, &format!("task/{pid}/mem:{:#x}/8:w", A + 8)).unwrap();
    close(&mut s, bp);
    assert_eq!(read_all(&mut s, fd, 4096), first, "the same bytes at every read");
    assert_eq!(Listing::parse_bytes(&first).unwrap().entries.len(), 1);
}

#[test]
fn reads_at_any_offset_with_any_buffer_return_the_snapshots_bytes_or_nothing() {
    let mut s = server(2);
    let (pid, _) = task_on(&mut s, USER, 0);
    for i in 0..5 {
        open(&mut s, pid, USER, &format!("task/{pid}/mem:{:#x}/6:w", A + 16 * i + 3)).unwrap();
    }
    let fd = open_list(&mut s, pid, USER, "/scheme/hwbp/list").unwrap();
    let text = read_all(&mut s, fd, 1 << 16);
    let len = text.len() as u64;
    assert_eq!(read_all(&mut s, fd, 1), text, "byte by byte");
    for offset in [0, 1, 17, len / 2, len - 1] {
        assert_eq!(read_at(&mut s, fd, offset, 1 << 20).unwrap(), &text[offset as usize..], "offset {offset}");
    }
    for offset in [len, len + 1, u32::MAX as u64, usize::MAX as u64, u64::MAX] {
        assert_eq!(read_at(&mut s, fd, offset, 64).unwrap(), b"", "offset {offset}");
    }
    assert_eq!(read_at(&mut s, fd, 0, 0).unwrap(), b"", "an empty buffer");
    // A file: size, fsize for SEEK_END, read-only, no dup, fpath names it.
    let c = ctx(pid, USER);
    assert_eq!(s.fsize(fd, &c), Ok(len));
    let mut st = Stat::default();
    s.fstat(fd, &mut st, &c).unwrap();
    assert_eq!((st.st_size, st.st_uid), (len, USER));
    take_log();
    assert_eq!(s.write(fd, b"enable", 0, 0, &c).map_err(|e| e.errno), Err(EBADF));
    assert_eq!(s.dup(fd, b"events", &c).map(|_| ()).map_err(|e| e.errno), Err(EINVAL));
    assert_eq!(take_log().len(), 2, "one line per refusal");
    assert_eq!(fpath(&mut s, fd), "/scheme/hwbp/list");
    let bp = open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}/8:w")).unwrap();
    assert_eq!(s.fsize(bp, &c).map_err(|e| e.errno), Err(ESPIPE), "a breakpoint is not a file");
    let next = open_list(&mut s, pid, USER, "list?from=3").unwrap();
    assert_eq!(fpath(&mut s, next), "/scheme/hwbp/list?from=3");
}

#[test]
fn malformed_listing_paths_are_einval_with_one_log_line() {
    let mut s = server(1);
    for path in ["list?", "list?from", "list?from=", "list?from=x", "list?from=1&from=2", "list?to=3", "list?from=1&", "list?from=99999999999999999999999", "listx", "list/1"] {
        take_log();
        assert_eq!(open_list(&mut s, 1, USER, path), Err(EINVAL), "{path}");
        assert_eq!(take_log().len(), 1, "{path}");
    }
}

#[test]
fn a_user_holds_at_most_a_few_listing_handles_and_root_any_number() {
    let mut s = server(1);
    let (pid, _) = task_on(&mut s, USER, 0);
    let held: Vec<usize> = (0..LIST_HANDLES_PER_UID).map(|_| open_list(&mut s, pid, USER, "list").unwrap()).collect();
    take_log();
    assert_eq!(open_list(&mut s, pid, USER, "list"), Err(EMFILE));
    assert_eq!(take_log().len(), 1);
    assert!(open_list(&mut s, 9, OTHER_USER, "list").is_ok(), "per uid");
    for _ in 0..50 {
        open_list(&mut s, 1, ROOT, "list").unwrap();
    }
    close(&mut s, held[0]);
    assert!(open_list(&mut s, pid, USER, "list").is_ok(), "a place freed by a close");
    assert_eq!(open_list(&mut s, pid, USER, "list"), Err(EMFILE));
}
