//! Scheduling through the scheme: multiplexing of flexible breakpoints,
//! pinned, exclusive, slot sharing and atomic modify (contract 3).

mod scheme_common;
use scheme_common::*;

use libhwbp::abi::errno::{EINVAL, ENOSPC};

const A: u64 = 0x50_0000;
const MS: u64 = 1_000_000;

#[test]
fn six_flexible_breakpoints_on_one_task_take_turns_and_scale_to_the_truth() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let fds: Vec<usize> =
        (0..6).map(|i| open(&mut s, pid, USER, &format!("task/{pid}/mem:{:#x}/8:w", A + 8 * i)).unwrap()).collect();
    const STEPS: u64 = 600;
    for _ in 0..STEPS {
        for i in 0..6 {
            write(&mut s, tid, A + 8 * i, 8);
        }
        s.kernel_mut().advance(MS);
        s.tick();
        assert!(s.kernel().armed_slots() <= 4);
    }
    for fd in fds {
        let c = count(&mut s, fd);
        assert!(c.time_running_ns < c.time_enabled_ns, "{c:?}: multiplexed, not always armed");
        assert!(c.time_running_ns > 0 && c.value > 0, "{c:?}: every breakpoint got turns");
        let scaled = c.scaled_value().unwrap() as f64;
        let err = (scaled - STEPS as f64).abs() / STEPS as f64;
        assert!(err < 0.10, "{c:?}: scaled {scaled} vs truth {STEPS} ({:.1}% off)", err * 100.0);
    }
}

#[test]
fn four_or_fewer_flexible_breakpoints_run_all_the_time() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let fds: Vec<usize> =
        (0..4).map(|i| open(&mut s, pid, USER, &format!("task/{pid}/mem:{:#x}/8:w", A + 8 * i)).unwrap()).collect();
    for _ in 0..50 {
        for i in 0..4 {
            write(&mut s, tid, A + 8 * i, 8);
        }
        s.kernel_mut().advance(MS);
        s.tick();
    }
    for fd in fds {
        let c = count(&mut s, fd);
        assert_eq!((c.value, c.time_running_ns, c.time_enabled_ns), (50, 50 * MS, 50 * MS));
    }
}

#[test]
fn pinned_breakpoints_stay_armed_while_flexible_ones_rotate_around_them() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let pinned: Vec<usize> =
        (0..2).map(|i| open(&mut s, pid, USER, &format!("task/{pid}/mem:{:#x}/8:w?pinned", A + 8 * i)).unwrap()).collect();
    let flexible: Vec<usize> = (2..6)
        .map(|i| open(&mut s, pid, USER, &format!("task/{pid}/mem:{:#x}/8:w", A + 8 * i)).unwrap())
        .collect();
    for _ in 0..100 {
        for i in 0..6 {
            write(&mut s, tid, A + 8 * i, 8);
        }
        s.kernel_mut().advance(MS);
        s.tick();
    }
    for fd in pinned {
        let c = count(&mut s, fd);
        assert_eq!((c.value, c.time_running_ns), (100, c.time_enabled_ns), "{c:?}");
    }
    for fd in flexible {
        let c = count(&mut s, fd);
        assert!(c.time_running_ns < c.time_enabled_ns && c.value < 100 && c.value > 0, "{c:?}");
    }
}

#[test]
fn an_exclusive_breakpoint_has_the_registers_to_itself_while_armed() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let ex = open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}/8:w?exclusive&pinned")).unwrap();
    let other = open(&mut s, pid, USER, &format!("task/{pid}/mem:{:#x}/8:w", A + 64)).unwrap();
    assert_eq!(open(&mut s, pid, USER, &format!("task/{pid}/mem:{:#x}/8:w?pinned", A + 128)), Err(ENOSPC));
    for _ in 0..20 {
        write(&mut s, tid, A, 8);
        write(&mut s, tid, A + 64, 8);
        assert_eq!(s.kernel().armed_slots(), 1, "only the exclusive one is armed");
        s.kernel_mut().advance(MS);
        s.tick();
    }
    assert_eq!(count(&mut s, ex).value, 20);
    let c = count(&mut s, other);
    assert_eq!((c.value, c.time_running_ns), (0, 0), "{c:?}");
    close(&mut s, ex);
    write(&mut s, tid, A + 64, 8);
    assert_eq!(count(&mut s, other).value, 1, "armed once the exclusive one is gone");
}

#[test]
fn identical_breakpoints_share_one_register_and_each_counts_every_hit() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let path = format!("task/{pid}/mem:{A:#x}/8:w");
    let fds: Vec<usize> = (0..6).map(|_| open(&mut s, pid, USER, &path).unwrap()).collect();
    assert_eq!(s.kernel().armed_slots(), 1, "six identical breakpoints, one register");
    let distinct = open(&mut s, pid, USER, &format!("task/{pid}/mem:{:#x}/8:w?pinned", A + 64)).unwrap();
    assert_eq!(s.kernel().armed_slots(), 2);
    for _ in 0..3 {
        write(&mut s, tid, A, 8);
    }
    for &fd in &fds {
        let c = count(&mut s, fd);
        assert_eq!((c.value, c.time_running_ns, c.time_enabled_ns), (3, c.time_enabled_ns, c.time_enabled_ns));
    }
    close(&mut s, fds[0]);
    write(&mut s, tid, A, 8);
    assert_eq!(count(&mut s, fds[1]).value, 4, "the register stays while a sharer remains");
    for &fd in &fds[1..] {
        close(&mut s, fd);
    }
    assert_eq!(s.kernel().armed_slots(), 1);
    close(&mut s, distinct);
    assert_eq!(s.kernel().armed_slots(), 0);
}

#[test]
fn modify_moves_the_watch_and_a_refused_modify_leaves_the_old_one_armed() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let fd = open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}/8:w?pinned")).unwrap();
    for i in 1..4 {
        open(&mut s, pid, USER, &format!("task/{pid}/mem:{:#x}/8:w?pinned", A + 0x100 * i)).unwrap();
    }
    let before = fpath(&mut s, fd);
    // Invalid event, impossible fit (5 pieces needed on a full task),
    // kernel address without root: all refused, old one untouched.
    assert_eq!(command(&mut s, fd, "modify mem:0x1000:r"), Err(EINVAL));
    assert_eq!(command(&mut s, fd, &format!("modify mem:{:#x}/6:w?pinned", A + 0x1001)), Err(ENOSPC));
    assert_eq!(command(&mut s, fd, "modify mem:0xffff800000000000/8:w"), Err(libhwbp::abi::errno::EPERM));
    assert_eq!(fpath(&mut s, fd), before);
    write(&mut s, tid, A, 8);
    assert_eq!(count(&mut s, fd).value, 1, "still armed at the old address");
    // A modify that fits takes effect at once.
    command(&mut s, fd, &format!("modify mem:{:#x}/4:rw?pinned", A + 0x80)).unwrap();
    write(&mut s, tid, A, 8);
    read(&mut s, tid, A + 0x80, 4);
    assert_eq!(count(&mut s, fd).value, 2);
    assert!(fpath(&mut s, fd).contains(&format!("mem:{:#x}/4:rw?pinned", A + 0x80)), "{}", fpath(&mut s, fd));
    assert_eq!(s.kernel().armed_slots(), 4);
    // modify without options keeps them, and keeps a disabled one disabled.
    command(&mut s, fd, "disable").unwrap();
    command(&mut s, fd, &format!("modify mem:{:#x}/8:w", A + 0x88)).unwrap();
    assert!(fpath(&mut s, fd).contains("?pinned"));
    write(&mut s, tid, A + 0x88, 8);
    assert_eq!(count(&mut s, fd).value, 2, "still disabled");
    command(&mut s, fd, "enable").unwrap();
    write(&mut s, tid, A + 0x88, 8);
    assert_eq!(count(&mut s, fd).value, 3);
}

#[test]
fn only_tasks_that_ran_rotate_and_a_task_that_waits_keeps_its_plan() {
    let mut s = server(1);
    let (busy, tid) = task_on(&mut s, USER, 0);
    let idle = s.kernel_mut().spawn(USER);
    let six = |s: &mut Scheme, pid: hwbpd::Pid| -> Vec<usize> {
        (0..6).map(|i| open(s, pid, USER, &format!("task/{pid}/mem:{:#x}/8:w", A + 8 * i)).unwrap()).collect()
    };
    let (busy_fds, idle_fds) = (six(&mut s, busy), six(&mut s, idle));
    let idle_plan = *s.kernel().task_plan(idle).unwrap();
    for _ in 0..30 {
        write(&mut s, tid, A, 8);
        s.kernel_mut().advance(MS);
        s.tick();
    }
    assert_eq!(*s.kernel().task_plan(idle).unwrap(), idle_plan, "the task that never ran kept its plan");
    for fd in busy_fds {
        let c = count(&mut s, fd);
        assert!(c.time_running_ns > 0 && c.time_running_ns < c.time_enabled_ns, "{c:?}: took turns");
    }
    let waited = idle_fds.iter().map(|&fd| count(&mut s, fd)).filter(|c| c.time_running_ns == 0).count();
    assert_eq!(waited, 2, "two of the idle task's six wait until it runs");
    // Once it runs, its breakpoints take turns too.
    let idle_tid = s.kernel().main_thread(idle).unwrap();
    for _ in 0..30 {
        s.kernel_mut().switch(0, Some(idle_tid)).unwrap();
        s.kernel_mut().advance(MS);
        s.tick();
    }
    for fd in idle_fds {
        let c = count(&mut s, fd);
        assert!(c.time_running_ns > 0, "{c:?}: ran once its task ran");
    }
}
