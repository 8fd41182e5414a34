//! Issue 12: hwbpd under hostile clients (contract section 7). Each test
//! names the finding it guards: fcntl on Redox, bounded memory, isolation,
//! stale identities, errnos, allocation pressure.

mod scheme_common;
use scheme_common::*;

use libhwbp::abi::errno::{EAGAIN, EBADF, EINVAL};
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
