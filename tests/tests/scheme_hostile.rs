//! Issue 12: hwbpd under hostile clients (contract section 7). Each test
//! names the finding it guards: fcntl on Redox, bounded memory, isolation,
//! stale identities, errnos, allocation pressure.

mod scheme_common;
use scheme_common::*;

use libhwbp::abi::errno::{EAGAIN, EBADF, EINVAL, EPERM, ESRCH};
use libhwbp::abi::AdmittedPath;
use redox_scheme::scheme::SchemeSync;
use syscall::flag::{F_GETFL, F_SETFL, O_NONBLOCK, O_RDONLY};

const A: u64 = 0x40_0000;

fn fcntl(s: &mut Scheme, fd: usize, cmd: usize, arg: usize) -> Result<usize, i32> {
    s.fcntl(fd, cmd, arg, &hwbpd::caller_ctx(1, USER, USER)).map_err(|e| e.errno)
}

// ---- fcntl: what Redox's kernel asks before it changes an fd's flags ----

#[test]
fn fcntl_getfl_and_setfl_are_agreed_to_so_the_kernel_can_toggle_o_nonblock() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let fd = open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}:w")).unwrap();
    let efd = events(&mut s, fd);
    for h in [fd, efd] {
        assert_eq!(fcntl(&mut s, h, F_GETFL, 0), Ok(0));
        assert_eq!(fcntl(&mut s, h, F_SETFL, O_RDONLY | O_NONBLOCK), Ok(0));
        assert_eq!(fcntl(&mut s, h, F_SETFL, O_RDONLY), Ok(0));
    }
    // The kernel then passes the flags to each read: O_NONBLOCK is honoured.
    assert_eq!(read_events(&mut s, efd, 4, true), Err(EAGAIN));
    write(&mut s, tid, A, 4);
    assert_eq!(read_events(&mut s, efd, 4, true).unwrap().len(), 1);
    take_log();
    assert_eq!(fcntl(&mut s, 999, F_SETFL, O_NONBLOCK), Err(EBADF));
    assert_eq!(fcntl(&mut s, efd, 0x7777, 0), Err(EINVAL));
    assert_eq!(take_log().len(), 2, "one line per refusal");
}

// ---- errors, made precise (contract section 7) ---------------------------

/// Open `path` and expect `errno`, with exactly one warning naming it.
fn refused(s: &mut Scheme, pid: u32, uid: u32, path: &str, errno: i32) {
    take_log();
    assert_eq!(open(s, pid, uid, path), Err(errno), "{path} as uid {uid}");
    let lines = take_log();
    assert_eq!(lines.len(), 1, "{path}: {lines:?}");
    assert!(lines[0].contains(&format!("({errno})")), "{path}: {}", lines[0]);
}

#[test]
fn a_well_formed_task_or_cpu_id_that_does_not_exist_is_esrch_however_large() {
    let mut s = server(2);
    let (pid, _) = task_on(&mut s, USER, 0);
    let huge = "9".repeat(300);
    for target in [
        "task/4294967296".to_string(),
        "task/18446744073709551615".to_string(),
        "task/18446744073709551616".to_string(),
        format!("task/{huge}"),
        format!("task/{pid}/cpu/2"),
        format!("task/{pid}/cpu/4294967296"),
        format!("task/{pid}/cpu/{huge}"),
        "cpu/2".to_string(),
        "cpu/4294967296".to_string(),
        format!("cpu/{huge}"),
    ] {
        refused(&mut s, 1, ROOT, &format!("{target}/mem:{A:#x}:w"), ESRCH);
    }
    // Permission is still checked first for cpu-wide targets.
    refused(&mut s, pid, USER, &format!("cpu/4294967296/mem:{A:#x}:w"), EPERM);
    assert_eq!(s.breakpoint_count(), 0);
}

#[test]
fn a_non_canonical_address_is_einval_for_anyone_and_a_kernel_one_eperm_without_root() {
    let mut s = server(1);
    let (pid, _) = task_on(&mut s, USER, 0);
    let t = format!("task/{pid}");
    for uid in [USER, ROOT] {
        for event in [
            "mem:0x800000000000/8:w",
            "mem:0x1234000000000000:w",
            // Straddles the hole into the kernel half: still never armable.
            "mem:0xffff7ffffffffffc/8:w",
            "mem:0x7ffffffffffc/8:w",
        ] {
            refused(&mut s, pid, uid, &format!("{t}/{event}"), EINVAL);
            refused(&mut s, pid, uid, &format!("{t}/{event}?kernel"), EINVAL);
        }
    }
    refused(&mut s, pid, USER, &format!("{t}/mem:0xffff800000001000/8:w"), EPERM);
    refused(&mut s, pid, USER, &format!("{t}/mem:0xffff800000001000/8:w?kernel"), EPERM);
    assert!(open(&mut s, pid, ROOT, &format!("{t}/mem:0xffff800000001000/8:w?kernel")).is_ok());
}

#[test]
fn fpath_of_a_stream_whose_breakpoint_is_closed_still_parses() {
    let mut s = server(1);
    let (pid, _) = task_on(&mut s, USER, 0);
    let fd = open(&mut s, pid, USER, &format!("task/{pid}/mem:{:#x}/6:w", A + 1)).unwrap();
    let efd = events(&mut s, fd);
    let before = fpath(&mut s, efd);
    close(&mut s, fd);
    let after = fpath(&mut s, efd);
    assert_eq!(after, before, "the breakpoint's admitted path, kept with its stream");
    let admitted = AdmittedPath::parse_stream(after.strip_prefix("/scheme/hwbp/").unwrap()).expect("parses");
    assert_eq!(admitted.pieces.len(), 4);
}

// ---- stale identities: a reused pid is never watched through an old handle

#[test]
fn a_reused_pid_is_never_watched_through_an_old_handle() {
    let mut s = server(1);
    let (pid, _) = task_on(&mut s, USER, 0);
    let old = open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}/8:w")).unwrap();
    // The task exits and the kernel hands its pid to another user's process
    // before hwbpd has collected the exit.
    s.kernel_mut().exit(pid).unwrap();
    s.kernel_mut().spawn_reusing(pid, OTHER_USER).unwrap();
    let tid = s.kernel().main_thread(pid).unwrap();
    s.kernel_mut().switch(0, Some(tid)).unwrap();
    // The new owner watches its own process: that replans the pid.
    let new = open(&mut s, pid, OTHER_USER, &format!("task/{pid}/mem:{:#x}/8:w", A + 0x100)).unwrap();
    // The old owner can no longer target the pid.
    refused(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}/8:w"), EPERM);
    let plan = *s.kernel().task_plan(pid).unwrap();
    assert_eq!(plan.len(), 1, "only the new owner's piece is planned: {plan:?}");
    write(&mut s, tid, A, 8);
    write(&mut s, tid, A + 0x100, 8);
    assert_eq!(count(&mut s, old).value, 0, "the old handle saw nothing of the new process");
    assert_eq!(count(&mut s, new).value, 1);
    assert_eq!(command(&mut s, old, "enable"), Err(ESRCH), "the old breakpoint ended with its task");
}
