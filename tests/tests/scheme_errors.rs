//! Every errno of the contract (section 5), permissions and quotas, and
//! the one log line each refusal writes.

mod scheme_common;
use scheme_common::*;

use hwbpd::Config;
use libhwbp::abi::errno::{EAGAIN, EBADF, EINVAL, EMFILE, ENOSPC, EPERM, ESRCH};
use redox_scheme::scheme::SchemeSync;

const A: u64 = 0x20_0000;

/// Open `path` and expect `errno`, with exactly one warning naming it.
fn refused(s: &mut Scheme, pid: u32, uid: u32, path: &str, errno: i32, name: &str) {
    take_log();
    assert_eq!(open(s, pid, uid, path), Err(errno), "{path}");
    let lines = take_log();
    assert_eq!(lines.len(), 1, "{path}: {lines:?}");
    assert!(lines[0].contains(name) && lines[0].contains(&format!("({errno})")), "{path}: {}", lines[0]);
}

#[test]
fn malformed_paths_events_options_lengths_alignment_and_access_are_einval() {
    let mut s = server(1);
    let (pid, _) = task_on(&mut s, USER, 0);
    let t = format!("task/{pid}");
    for path in [
        String::new(),
        format!("bogus/{pid}/mem:{A}"),
        format!("task/x/mem:{A}"),
        format!("{t}/foo:{A}"),
        format!("{t}/mem:zz"),
        format!("{t}/mem:{A}/0"),
        format!("{t}/mem:{A}/3:w?nosplit"),
        format!("{t}/mem:{:#x}/4:w?nosplit", A + 1),
        format!("{t}/mem:{A}:r"),
        format!("{t}/mem:{A}:rx"),
        format!("{t}/mem:{A}:wx"),
        format!("{t}/mem:{A}/4:x"),
        format!("{t}/mem:{A}?"),
        format!("{t}/mem:{A}?bogus"),
        format!("{t}/mem:{A}?pinned&pinned"),
        format!("{t}/mem:{A}?period=0"),
        format!("{t}/mem:{A}?ring=0"),
        format!("{t}/mem:{A}?ring=2&wakeup=3"),
        format!("{t}/mem:{A}/64:w"),
        format!("{t}/mem:{:#x}/16:w", A + 1),
        format!("{t}/mem:0x800000000000/8:w"),
        format!("cpu/abc/mem:{A}"),
    ] {
        refused(&mut s, pid, USER, &path, EINVAL, "EINVAL");
    }
    assert_eq!(s.kernel().armed_slots(), 0);
    assert_eq!(s.breakpoint_count(), 0);
}

#[test]
fn a_pinned_breakpoint_that_cannot_fit_is_enospc() {
    let mut s = server(1);
    let (pid, _) = task_on(&mut s, USER, 0);
    for i in 0..4 {
        open(&mut s, pid, USER, &format!("task/{pid}/mem:{:#x}/8:w?pinned", A + 8 * i)).unwrap();
    }
    refused(&mut s, pid, USER, &format!("task/{pid}/mem:{:#x}/8:w?pinned", A + 64), ENOSPC, "ENOSPC");
    // Split pieces count: 6 bytes at an odd address are 1+2+2+1, 4 slots.
    let mut s = server(1);
    let (pid, _) = task_on(&mut s, USER, 0);
    let fd = open(&mut s, pid, USER, &format!("task/{pid}/mem:{:#x}/6:w?pinned", A + 1)).unwrap();
    assert_eq!(fpath(&mut s, fd).matches(":w").count(), 5, "the event and its 4 pieces: {}", fpath(&mut s, fd));
    refused(&mut s, pid, USER, &format!("task/{pid}/mem:{:#x}/8:w?pinned", A + 128), ENOSPC, "ENOSPC");
    // Cpu-wide pinned slots plus the task's: Linux's constraint.
    let mut s = server(1);
    let (pid, _) = task_on(&mut s, USER, 0);
    for i in 0..2 {
        open(&mut s, 1, ROOT, &format!("cpu/0/mem:{:#x}/8:w?pinned", A + 8 * i)).unwrap();
        open(&mut s, pid, USER, &format!("task/{pid}/mem:{:#x}/8:w?pinned", A + 64 + 8 * i)).unwrap();
    }
    refused(&mut s, pid, USER, &format!("task/{pid}/mem:{:#x}/8:w?pinned", A + 256), ENOSPC, "ENOSPC");
    refused(&mut s, 1, ROOT, &format!("cpu/all/mem:{:#x}/8:w?pinned", A + 256), ENOSPC, "ENOSPC");
}

#[test]
fn another_users_task_cpu_targets_kernel_addresses_and_the_kernel_option_are_eperm_without_root() {
    let mut s = server(2);
    let (mine, _) = task_on(&mut s, USER, 0);
    let (theirs, _) = task_on(&mut s, OTHER_USER, 1);
    refused(&mut s, mine, USER, &format!("task/{theirs}/mem:{A}"), EPERM, "EPERM");
    refused(&mut s, mine, USER, &format!("task/{theirs}/cpu/0/mem:{A}"), EPERM, "EPERM");
    refused(&mut s, mine, USER, &format!("cpu/0/mem:{A}"), EPERM, "EPERM");
    refused(&mut s, mine, USER, &format!("cpu/all/mem:{A}"), EPERM, "EPERM");
    refused(&mut s, mine, USER, &format!("task/{mine}/mem:0xffff800000001000/8:w"), EPERM, "EPERM");
    refused(&mut s, mine, USER, &format!("task/{mine}/mem:0xffff800000001000/8:w?kernel"), EPERM, "EPERM");
    refused(&mut s, mine, USER, &format!("task/{mine}/mem:{A}?kernel"), EPERM, "EPERM");
    // Root may do all of it.
    for path in [
        format!("task/{theirs}/mem:{A}"),
        format!("cpu/0/mem:{A}"),
        format!("cpu/all/mem:{A}"),
        format!("task/{mine}/mem:0xffff800000001000/8:w?kernel"),
    ] {
        open(&mut s, 1, ROOT, &path).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    // A user may target its own tasks, by pid or as self.
    open(&mut s, mine, USER, &format!("task/{mine}/mem:{A}")).unwrap();
    open(&mut s, mine, USER, &format!("self/mem:{A}")).unwrap();
}

#[test]
fn unknown_tasks_and_cpus_are_esrch() {
    let mut s = server(2);
    let (pid, _) = task_on(&mut s, USER, 0);
    refused(&mut s, pid, USER, &format!("task/99999/mem:{A}"), ESRCH, "ESRCH");
    refused(&mut s, pid, USER, &format!("task/{pid}/cpu/2/mem:{A}"), ESRCH, "ESRCH");
    refused(&mut s, 1, ROOT, &format!("cpu/2/mem:{A}"), ESRCH, "ESRCH");
    refused(&mut s, 99999, USER, &format!("self/mem:{A}"), ESRCH, "ESRCH");
    s.kernel_mut().exit(pid).unwrap();
    refused(&mut s, 1, ROOT, &format!("task/{pid}/mem:{A}"), ESRCH, "ESRCH");
}

#[test]
fn the_per_user_quota_is_emfile_and_closing_frees_it() {
    let mut s = server_with(1, Config { user_quota: 3, ..Config::default() });
    let (pid, _) = task_on(&mut s, USER, 0);
    let (other, _) = task_on(&mut s, OTHER_USER, 0);
    let fds: Vec<usize> =
        (0..3).map(|i| open(&mut s, pid, USER, &format!("task/{pid}/mem:{:#x}", A + 8 * i)).unwrap()).collect();
    refused(&mut s, pid, USER, &format!("task/{pid}/mem:{A}"), EMFILE, "EMFILE");
    open(&mut s, other, OTHER_USER, &format!("task/{other}/mem:{A}")).expect("quotas are per uid");
    for i in 0..10 {
        open(&mut s, 1, ROOT, &format!("task/{pid}/mem:{:#x}", A + 8 * i)).expect("root has no quota");
    }
    close(&mut s, fds[0]);
    open(&mut s, pid, USER, &format!("task/{pid}/mem:{A}")).expect("a slot of the quota came back");
}

#[test]
fn the_default_quota_is_64() {
    let mut s = server(1);
    let (pid, _) = task_on(&mut s, USER, 0);
    for i in 0..64 {
        open(&mut s, pid, USER, &format!("task/{pid}/mem:{:#x}", A + 8 * i)).unwrap();
    }
    refused(&mut s, pid, USER, &format!("task/{pid}/mem:{A}"), EMFILE, "EMFILE");
}

#[test]
fn an_empty_stream_read_without_blocking_is_eagain_and_blocking_is_ewouldblock() {
    let mut s = server(1);
    let (pid, _) = task_on(&mut s, USER, 0);
    let fd = open(&mut s, pid, USER, &format!("task/{pid}/mem:{A}")).unwrap();
    let efd = events(&mut s, fd);
    take_log();
    assert_eq!(read_events(&mut s, efd, 4, true), Err(EAGAIN));
    assert_eq!(take_log().len(), 1);
    // A blocking read parks in the readiness wrapper: Redox's EWOULDBLOCK,
    // not a refusal, so nothing is logged.
    assert_eq!(read_events(&mut s, efd, 4, false), Err(libhwbp::abi::errno::EWOULDBLOCK_REDOX));
    assert!(take_log().is_empty());
}

#[test]
fn unknown_handles_are_ebadf() {
    let mut s = server(1);
    let ctx = hwbpd::caller_ctx(1, ROOT, 0);
    take_log();
    let mut buf = [0u8; 64];
    assert_eq!(s.read(777, &mut buf, 0, 0, &ctx).map_err(|e| e.errno), Err(EBADF));
    assert_eq!(s.write(777, b"enable", 0, 0, &ctx).map_err(|e| e.errno), Err(EBADF));
    assert_eq!(s.dup(777, b"events", &ctx).map(|_| ()).map_err(|e| e.errno), Err(EBADF));
    assert_eq!(s.fpath(777, &mut buf, &ctx).map_err(|e| e.errno), Err(EBADF));
    assert_eq!(s.openat(777, "self/mem:0x1000", 0, 0, &ctx).map(|_| ()).map_err(|e| e.errno), Err(EBADF));
    assert_eq!(take_log().len(), 5, "one line per refusal");
}

#[test]
fn bad_commands_buffers_and_dup_names_are_einval() {
    let mut s = server(1);
    let (pid, _) = task_on(&mut s, USER, 0);
    let fd = open(&mut s, pid, USER, &format!("task/{pid}/mem:{A}")).unwrap();
    let ctx = hwbpd::caller_ctx(pid as usize, USER, USER);
    take_log();
    for cmd in ["", "bogus", "enable now", "modify", "modify mem:zz", "modify mem:0x1000:r"] {
        assert_eq!(command(&mut s, fd, cmd), Err(EINVAL), "{cmd:?}");
    }
    let mut small = [0u8; 39];
    assert_eq!(s.read(fd, &mut small, 0, 0, &ctx).map_err(|e| e.errno), Err(EINVAL));
    assert_eq!(s.dup(fd, b"bogus", &ctx).map(|_| ()).map_err(|e| e.errno), Err(EINVAL));
    let efd = events(&mut s, fd);
    assert_eq!(s.read(efd, &mut small, 0, 0, &ctx).map_err(|e| e.errno), Err(EINVAL));
    assert_eq!(s.write(efd, b"enable", 0, 0, &ctx).map_err(|e| e.errno), Err(EBADF));
    assert_eq!(take_log().len(), 10, "one line per refusal");
}
