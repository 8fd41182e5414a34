//! Exact counts, `lost` per breakpoint, and identity changes (contract 7),
//! on the simulated kernel: its counts are kept apart from its record
//! rings, as the kernel patch's are, so a flood drops records, never a
//! count.

mod scheme_common;
use scheme_common::*;

use hwbpd::sim::CPU_RING_RECORDS;
use libhwbp::abi::errno::{EPERM, ESRCH};

const A: u64 = 0x50_0000;
const B: u64 = 0x50_0100;

#[test]
fn value_is_exact_when_the_kernel_drops_records_and_lost_is_charged_to_the_breakpoint_that_lost_them() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, ROOT, 0);
    // Rings large enough that only the kernel's ring drops records.
    let flood = open(&mut s, pid, ROOT, &format!("task/{pid}/mem:{A:#x}/8:w?pinned&ring=65536")).unwrap();
    let quiet = open(&mut s, pid, ROOT, &format!("task/{pid}/mem:{B:#x}/8:w?ring=16")).unwrap();
    let fe = events(&mut s, flood);
    let qe = events(&mut s, quiet);
    // Two quiet hits, then a flood that fills the kernel's ring with
    // nobody collecting, then three quiet hits whose records find it full.
    write(&mut s, tid, B, 8);
    write(&mut s, tid, B, 8);
    let n = CPU_RING_RECORDS as u64 + 5_000;
    for _ in 0..n {
        write(&mut s, tid, A, 8);
    }
    for _ in 0..3 {
        write(&mut s, tid, B, 8);
    }
    assert!(s.kernel().dropped_records() > 5_000);
    let c = count(&mut s, flood);
    assert_eq!(c.value, n, "every hit counted, whatever the ring dropped");
    let kept = CPU_RING_RECORDS as u64 - 2;
    assert_eq!(c.lost, n - kept, "the flood's own dropped records");
    let q = count(&mut s, quiet);
    assert_eq!((q.value, q.lost), (5, 3), "the quiet one: exact, and only its own three records lost");
    let recs = read_events(&mut s, fe, CPU_RING_RECORDS, true).unwrap();
    assert_eq!(recs.len() as u64, kept);
    assert!(recs.windows(2).all(|w| w[0].hit < w[1].hit) && recs.iter().all(|r| r.hit >= 1 && r.hit <= n));
    assert_eq!(read_events(&mut s, qe, 16, true).unwrap().iter().map(|r| r.hit).collect::<Vec<_>>(), [1, 2]);
    // After the flood, records flow again and number from the count.
    write(&mut s, tid, B, 8);
    let after = read_events(&mut s, qe, 16, true).unwrap();
    assert_eq!(after.iter().map(|r| r.hit).collect::<Vec<_>>(), [6]);
    assert_eq!(count(&mut s, quiet).lost, 3);
    command(&mut s, flood, "reset").unwrap();
    let c = count(&mut s, flood);
    assert_eq!((c.value, c.lost), (0, 0));
}

#[test]
fn period_lost_counts_the_records_the_period_would_have_given() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, ROOT, 0);
    let fd = open(&mut s, pid, ROOT, &format!("task/{pid}/mem:{A:#x}/8:w?period=4&ring=65536")).unwrap();
    let n = CPU_RING_RECORDS as u64 * 2;
    for _ in 0..n {
        write(&mut s, tid, A, 8);
    }
    let c = count(&mut s, fd);
    assert_eq!(c.value, n);
    // n / 4 records were due; the kernel's ring kept the first 8,192 hits,
    // of which every 4th reached the breakpoint.
    assert_eq!(c.lost, n / 4 - CPU_RING_RECORDS as u64 / 4);
}

#[test]
fn an_identity_change_ends_a_non_root_owners_breakpoint_and_keeps_roots_armed() {
    let mut s = server(2);
    let (pid, tid) = task_on(&mut s, USER, 1);
    let user = open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}/8:w")).unwrap();
    let root = open(&mut s, pid, ROOT, &format!("task/{pid}/mem:{B:#x}/8:w")).unwrap();
    let ue = events(&mut s, user);
    write(&mut s, tid, A, 8);
    write(&mut s, tid, B, 8);
    take_log();
    // A set-uid-root exec: the kernel drops the whole plan and says so.
    s.kernel_mut().advance(1_000);
    s.kernel_mut().set_euid(pid, ROOT).unwrap();
    s.collect();
    let plan = *s.kernel().task_plan(pid).unwrap();
    assert_eq!(plan.len(), 1, "root's piece is armed again, the user's is not: {plan:?}");
    assert_eq!(plan.iter().next().unwrap().piece.addr(), B);
    write(&mut s, tid, A, 8);
    write(&mut s, tid, B, 8);
    let u = count(&mut s, user);
    assert_eq!(u.value, 1, "the user's count stays readable, nothing after the change");
    s.kernel_mut().advance(5_000);
    assert_eq!(count(&mut s, user).time_enabled_ns, u.time_enabled_ns, "times froze");
    assert_eq!(count(&mut s, root).value, 2, "root's breakpoint still counts");
    assert_eq!(read_events(&mut s, ue, 4, false).unwrap().len(), 1);
    assert_eq!(read_events(&mut s, ue, 4, false).unwrap().len(), 0, "the stream ended");
    assert_eq!(command(&mut s, user, "enable"), Err(ESRCH));
    // The user may not watch the task any more.
    assert_eq!(open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}/8:w")), Err(EPERM));
    take_log();
    close(&mut s, ue);
    close(&mut s, user);
    assert!(s.kernel().is_attached(pid), "root's breakpoint is still followed");
    close(&mut s, root);
    assert!(!s.kernel().is_attached(pid));
    assert_eq!(armed_after_switch(s.kernel_mut()), 0);
    assert!(s.engine().is_empty());
    assert_eq!(s.breakpoint_count(), 0);
}

#[test]
fn an_identity_change_with_only_non_root_breakpoints_leaves_nothing_armed_or_followed() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let fd = open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}/8:w")).unwrap();
    s.kernel_mut().set_euid(pid, OTHER_USER).unwrap();
    write(&mut s, tid, A, 8);
    assert_eq!(count(&mut s, fd).value, 0);
    assert_eq!(armed_after_switch(s.kernel_mut()), 0);
    assert!(!s.kernel().is_attached(pid));
    assert_eq!(command(&mut s, fd, "disable"), Err(ESRCH));
}

#[test]
fn a_disabled_breakpoint_still_ends_with_its_task() {
    let mut s = server(1);
    let (pid, _) = task_on(&mut s, USER, 0);
    let fd = open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}/8:w?disabled")).unwrap();
    assert!(s.kernel().task_plan(pid).unwrap().is_empty());
    assert!(s.kernel().is_attached(pid), "followed with nothing armed");
    s.kernel_mut().exit(pid).unwrap();
    assert_eq!(command(&mut s, fd, "enable"), Err(ESRCH), "it ended with its task");
}

#[test]
fn the_task_is_followed_while_a_breakpoint_on_it_is_open() {
    let mut s = server(1);
    let (pid, _) = task_on(&mut s, USER, 0);
    let a = open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}/8:w")).unwrap();
    let b = open(&mut s, pid, USER, &format!("task/{pid}/cpu/0/mem:{B:#x}/8:w")).unwrap();
    close(&mut s, a);
    assert!(s.kernel().is_attached(pid));
    close(&mut s, b);
    assert!(!s.kernel().is_attached(pid), "released with its last breakpoint");
}

#[test]
fn a_root_owners_breakpoint_is_armed_again_after_an_identity_change_that_ends_nothing_else() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let fd = open(&mut s, pid, ROOT, &format!("task/{pid}/mem:{A:#x}/8:w")).unwrap();
    // Nothing of the engine's plan changes: only hwbpd knows the kernel
    // dropped it.
    s.kernel_mut().set_euid(pid, OTHER_USER).unwrap();
    s.collect();
    assert!(s.kernel().is_attached(pid));
    write(&mut s, tid, A, 8);
    assert_eq!(count(&mut s, fd).value, 1);
}
