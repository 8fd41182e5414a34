//! Event streams: record contents, ring overflow, period, wakeup and
//! fevent readiness; split ranges (contract 2, 3 and 4).

mod scheme_common;
use scheme_common::*;

use libhwbp::abi::errno::EAGAIN;
use redox_scheme::scheme::SchemeSync;
use syscall::flag::{EventFlags, EVENT_READ};

const A: u64 = 0x40_0000;

#[test]
fn a_record_says_which_breakpoint_task_cpu_address_and_when() {
    let mut s = server(2);
    let (pid, tid) = task_on(&mut s, USER, 1);
    let fd = open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}/8:rw")).unwrap();
    let id = count(&mut s, fd).id;
    let efd = events(&mut s, fd);
    s.kernel_mut().advance(1234);
    write(&mut s, tid, A + 6, 2);
    read(&mut s, tid, A, 1);
    let ev = read_events(&mut s, efd, 8, true).unwrap();
    assert_eq!(ev.len(), 2);
    for (i, r) in ev.iter().enumerate() {
        assert_eq!((r.id, r.addr, r.access, r.pid, r.cpu, r.timestamp_ns), (id, A, 3, u64::from(pid), 1, 1234));
        assert_eq!(r.hit, i as u64 + 1);
        assert_ne!(r.ip, 0);
    }
    assert!(ev[1].ip > ev[0].ip, "data traps report the instruction after each access");
}

#[test]
fn a_full_ring_drops_the_oldest_records_and_counts_them_in_lost() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let fd = open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}:w?ring=4")).unwrap();
    let efd = events(&mut s, fd);
    for _ in 0..10 {
        write(&mut s, tid, A, 4);
    }
    let c = count(&mut s, fd);
    assert_eq!((c.value, c.lost), (10, 6), "every hit counted, 6 records lost");
    let hits: Vec<u64> = read_events(&mut s, efd, 16, true).unwrap().iter().map(|r| r.hit).collect();
    assert_eq!(hits, [7, 8, 9, 10], "the newest survive");
    s.kernel_mut().advance(500);
    assert_eq!(count(&mut s, fd).time_enabled_ns, 500);
    command(&mut s, fd, "reset").unwrap();
    let c = count(&mut s, fd);
    assert_eq!((c.value, c.lost, c.time_enabled_ns, c.time_running_ns), (0, 0, 0, 0), "reset zeroes count, lost and times");
    s.kernel_mut().advance(300);
    write(&mut s, tid, A, 4);
    let c = count(&mut s, fd);
    assert_eq!((c.value, c.time_enabled_ns, c.time_running_ns), (1, 300, 300));
}

#[test]
fn period_n_writes_a_record_every_nth_hit_and_counts_every_hit() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let fd = open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}:w?period=3")).unwrap();
    let efd = events(&mut s, fd);
    for _ in 0..10 {
        write(&mut s, tid, A, 4);
    }
    assert_eq!(count(&mut s, fd).value, 10);
    let hits: Vec<u64> = read_events(&mut s, efd, 16, true).unwrap().iter().map(|r| r.hit).collect();
    assert_eq!(hits, [3, 6, 9]);
}

#[test]
fn wakeup_n_makes_the_stream_ready_after_n_records_and_posts_one_fevent() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let fd = open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}:w?wakeup=3")).unwrap();
    let efd = events(&mut s, fd);
    let ctx = hwbpd::caller_ctx(pid as usize, USER, USER);
    assert_eq!(s.fevent(efd, EVENT_READ, &ctx).unwrap(), EventFlags::empty());
    for i in 0..5 {
        write(&mut s, tid, A, 4);
        s.collect();
        let notices = s.take_fevents();
        if i == 2 {
            assert_eq!(notices, [hwbpd::FeventNotice { handle: efd, flags: EVENT_READ }]);
        } else {
            assert!(notices.is_empty(), "hit {i}: {notices:?}");
        }
    }
    assert_eq!(s.fevent(efd, EVENT_READ, &ctx).unwrap(), EVENT_READ);
    assert_eq!(read_events(&mut s, efd, 16, true).unwrap().len(), 5);
    assert_eq!(s.fevent(efd, EVENT_READ, &ctx).unwrap(), EventFlags::empty());
    // Task exit makes the stream readable (end of stream) and posts it.
    s.kernel_mut().exit(pid).unwrap();
    s.collect();
    assert_eq!(s.take_fevents(), [hwbpd::FeventNotice { handle: efd, flags: EVENT_READ }]);
    assert_eq!(read_events(&mut s, efd, 4, true).unwrap().len(), 0);
}

#[test]
fn a_nonblocking_reader_gets_eagain_until_a_hit_arrives() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let fd = open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}:w")).unwrap();
    let efd = events(&mut s, fd);
    assert_eq!(read_events(&mut s, efd, 4, true), Err(EAGAIN));
    write(&mut s, tid, A, 4);
    assert_eq!(read_events(&mut s, efd, 4, true).unwrap().len(), 1);
    assert_eq!(read_events(&mut s, efd, 4, true), Err(EAGAIN));
}

#[test]
fn an_unaligned_six_byte_watch_catches_a_write_to_each_byte_and_nothing_beside_it() {
    for start in [A + 1, A + 2, A + 3, A + 5] {
        let mut s = server(1);
        let (pid, tid) = task_on(&mut s, USER, 0);
        let fd = open(&mut s, pid, USER, &format!("task/{pid}/mem:{start:#x}/6:w")).unwrap();
        let path = fpath(&mut s, fd);
        let pieces = path.split("#pieces=").nth(1).unwrap().split(',').count();
        assert!(pieces > 1, "{path}");
        let mut expected = 0;
        for addr in start - 16..start + 22 {
            write(&mut s, tid, addr, 1);
            let inside = (start..start + 6).contains(&addr);
            expected += u64::from(inside);
            assert_eq!(count(&mut s, fd).value, expected, "{path}: one-byte write at {addr:#x} (inside: {inside})");
        }
        assert_eq!(expected, 6);
        // Reads do not count for a w watch.
        for addr in start..start + 6 {
            read(&mut s, tid, addr, 1);
        }
        assert_eq!(count(&mut s, fd).value, 6);
    }
}

#[test]
fn a_wide_write_over_several_pieces_is_one_hit() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    // 6 bytes at A+2: pieces A+2/2 and A+4/4.
    let fd = open(&mut s, pid, USER, &format!("task/{pid}/mem:{:#x}/6:w", A + 2)).unwrap();
    let efd = events(&mut s, fd);
    write(&mut s, tid, A, 8);
    let step = s.kernel_mut().run(tid, hwbpd::sim::dr_model::MemAccess::write(A, 8)).unwrap();
    assert_eq!(step.trap.count_ones(), 2, "one #DB with two B bits");
    assert_eq!(count(&mut s, fd).value, 2, "two writes, one hit each");
    let ev = read_events(&mut s, efd, 8, true).unwrap();
    assert_eq!(ev.iter().map(|r| r.hit).collect::<Vec<_>>(), [1, 2]);
}

#[test]
fn fstat_reports_the_record_size_and_queued_bytes_and_fpath_names_the_stream() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let fd = open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}:w")).unwrap();
    let efd = events(&mut s, fd);
    let ctx = hwbpd::caller_ctx(pid as usize, USER, USER);
    let mut st = syscall::Stat::default();
    s.fstat(fd, &mut st, &ctx).unwrap();
    assert_eq!((st.st_size, st.st_uid, st.st_mode & syscall::flag::MODE_FILE), (40, USER, syscall::flag::MODE_FILE));
    for _ in 0..3 {
        write(&mut s, tid, A, 4);
    }
    s.collect();
    s.fstat(efd, &mut st, &ctx).unwrap();
    assert_eq!(st.st_size, 3 * libhwbp::abi::EVENT_RECORD_SIZE as u64);
    let p = fpath(&mut s, efd);
    assert!(p.starts_with(&fpath(&mut s, fd)) && p.ends_with("#events-v2"), "{p}");
    // A version-1 stream (clients built before tid and flags) reads the
    // same ring as 64-byte records.
    let v1 = match s.dup(fd, libhwbp::abi::EVENTS_V1_DUP_NAME.as_bytes(), &ctx) {
        Ok(redox_scheme::OpenResult::ThisScheme { number, .. }) => number,
        other => panic!("{other:?}"),
    };
    s.fstat(v1, &mut st, &ctx).unwrap();
    assert_eq!((st.st_size, st.st_blksize), (3 * 64, 64));
    assert!(fpath(&mut s, v1).ends_with("#pieces=0x400000/4:w#events"), "{}", fpath(&mut s, v1));
    let mut buf = [0u8; 80];
    assert_eq!(s.read(v1, &mut buf, 0, 0, &ctx).unwrap(), 64, "whole 64-byte records only");
    let rec = libhwbp::abi::EventRecord::decode_all_v1(&buf[..64]).next().unwrap();
    assert_eq!((rec.hit, rec.addr, rec.tid), (1, A, 0));
    assert_eq!(s.read(v1, &mut buf[..63], 0, 0, &ctx).map_err(|e| e.errno), Err(libhwbp::abi::errno::EINVAL));
    assert_eq!(read_events(&mut s, efd, 4, true).unwrap().iter().map(|r| (r.hit, r.tid)).collect::<Vec<_>>(), [(2, tid), (3, tid)]);
    assert_eq!(s.fstat(999, &mut st, &ctx).map_err(|e| e.errno), Err(libhwbp::abi::errno::EBADF));
}
