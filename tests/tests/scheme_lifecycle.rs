//! Close, task exit and server drop leave nothing armed (contract 3).

mod scheme_common;
use scheme_common::*;

use hwbpd::{Config, HwbpScheme, SimKernel};
use redox_scheme::scheme::SchemeSync;

const A: u64 = 0x30_0000;

#[test]
fn close_disarms_before_it_returns() {
    let mut s = server(2);
    let (pid, tid) = task_on(&mut s, USER, 1);
    let fd = open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}/8:w")).unwrap();
    let cpu_fd = open(&mut s, 1, ROOT, &format!("cpu/0/mem:{:#x}/8:w", A + 64)).unwrap();
    assert_eq!(s.kernel().armed_slots(), 2, "one on the task's cpu, one cpu-wide");
    close(&mut s, fd);
    close(&mut s, cpu_fd);
    // No switch happened: the running task's registers changed in place.
    assert_eq!(s.kernel().running(1), Some(tid));
    assert_eq!(s.kernel().armed_slots(), 0);
    assert!(!s.kernel().any_plan());
    write(&mut s, tid, A, 8);
    assert_eq!(armed_after_switch(s.kernel_mut()), 0);
    assert_eq!(s.breakpoint_count(), 0);
    assert!(s.engine().is_empty(), "the engine forgot everything");
}

#[test]
fn a_task_that_exits_ends_its_breakpoints_count_readable_stream_ends_after_the_last_record() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let fd = open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}:w")).unwrap();
    let efd = events(&mut s, fd);
    for _ in 0..3 {
        write(&mut s, tid, A, 4);
    }
    s.kernel_mut().advance(1000);
    s.kernel_mut().exit(pid).unwrap();
    let c = count(&mut s, fd);
    assert_eq!(c.value, 3);
    assert_eq!(c.time_enabled_ns, 1000);
    s.kernel_mut().advance(5000);
    assert_eq!(count(&mut s, fd).time_enabled_ns, 1000, "times froze at exit");
    assert_eq!(read_events(&mut s, efd, 2, false).unwrap().len(), 2);
    assert_eq!(read_events(&mut s, efd, 2, false).unwrap().len(), 1);
    assert_eq!(read_events(&mut s, efd, 2, false).unwrap().len(), 0, "end of stream, not EWOULDBLOCK");
    assert_eq!(command(&mut s, fd, "enable"), Err(libhwbp::abi::errno::ESRCH));
    assert_eq!(armed_after_switch(s.kernel_mut()), 0);
    close(&mut s, efd);
    close(&mut s, fd);
    assert_eq!(s.breakpoint_count(), 0);
    assert!(s.engine().is_empty());
}

#[test]
fn exit_of_one_task_leaves_the_others_armed() {
    let mut s = server(2);
    let (a, _) = task_on(&mut s, USER, 0);
    let (b, tb) = task_on(&mut s, USER, 1);
    let fa = open(&mut s, a, USER, &format!("task/{a}/mem:{A:#x}:w")).unwrap();
    let fb = open(&mut s, b, USER, &format!("task/{b}/mem:{A:#x}:w")).unwrap();
    s.kernel_mut().exit(a).unwrap();
    write(&mut s, tb, A, 4);
    assert_eq!(count(&mut s, fb).value, 1);
    assert_eq!(count(&mut s, fa).value, 0);
}

#[test]
fn closing_the_breakpoint_ends_an_open_stream() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let fd = open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}:w")).unwrap();
    let efd = events(&mut s, fd);
    write(&mut s, tid, A, 4);
    close(&mut s, fd);
    assert_eq!(s.kernel().armed_slots(), 0);
    assert_eq!(read_events(&mut s, efd, 4, false).unwrap().len(), 1);
    assert_eq!(read_events(&mut s, efd, 4, false).unwrap().len(), 0);
    close(&mut s, efd);
    assert_eq!(s.breakpoint_count(), 0);
}

#[test]
fn dropping_the_server_disarms_everything_in_the_backend() {
    init_logger();
    let mut sim = SimKernel::new(4);
    let pid = sim.spawn(USER);
    let tid = sim.main_thread(pid).unwrap();
    sim.switch(2, Some(tid)).unwrap();
    {
        let mut s = HwbpScheme::new(&mut sim, Config::default());
        let ctx = hwbpd::caller_ctx(1, ROOT, 0);
        for path in [format!("task/{pid}/mem:{A:#x}:w?pinned"), format!("cpu/all/mem:{:#x}:rw", A + 64), format!("cpu/3/mem:{:#x}:x", A + 128)] {
            s.openat(hwbpd::scheme::ROOT_HANDLE, &path, 0, 0, &ctx).unwrap();
        }
        assert!(s.kernel().armed_slots() > 0);
    }
    assert_eq!(sim.armed_slots(), 0, "nothing armed once the server is gone");
    assert!(!sim.any_plan());
    for cpu in 0..4 {
        sim.switch(cpu, Some(tid)).unwrap();
        assert_eq!(sim.registers(cpu).unwrap().dr7, 0, "cpu {cpu}");
    }
}

#[test]
fn many_opens_and_closes_leave_zero_armed_registers_on_every_cpu() {
    let mut s = server(4);
    let tasks: Vec<_> = (0..4).map(|cpu| task_on(&mut s, USER, cpu)).collect();
    let mut fds = Vec::new();
    for (i, &(pid, _)) in tasks.iter().enumerate() {
        for j in 0..6u64 {
            let opts = if j == 0 { "?pinned" } else if j == 1 { "?exclusive" } else { "" };
            fds.push(open(&mut s, pid, USER, &format!("task/{pid}/mem:{:#x}/{}:w{opts}", A + 0x100 * i as u64 + 8 * j, 1 + j % 8)).unwrap());
        }
        fds.push(open(&mut s, 1, ROOT, &format!("task/{pid}/cpu/{i}/mem:{:#x}:rw", A + 0x1000)).unwrap());
    }
    fds.push(open(&mut s, 1, ROOT, &format!("cpu/1/mem:{:#x}:w", A + 0x2000)).unwrap());
    for _ in 0..5 {
        s.kernel_mut().advance(5_000_000);
        s.tick();
    }
    assert!(s.kernel().armed_slots() > 0);
    for fd in fds {
        close(&mut s, fd);
    }
    assert_eq!(armed_after_switch(s.kernel_mut()), 0);
    for (cpu, &(_, tid)) in tasks.iter().enumerate() {
        s.kernel_mut().switch(cpu as u32, Some(tid)).unwrap();
    }
    assert_eq!(s.kernel().armed_slots(), 0);
    assert!(s.engine().is_empty());
}
