//! Every path form and option of the contract (section 2), through
//! `SchemeSync` on the simulated kernel, each checked by what it arms.

mod scheme_common;
use scheme_common::*;

use libhwbp::abi::AdmittedPath;

const A: u64 = 0x10_0000;

#[test]
fn task_target_watches_every_thread_of_the_task_on_every_cpu() {
    let mut s = server(2);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let fd = open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}/8:w")).unwrap();
    write(&mut s, tid, A, 8);
    let t2 = s.kernel_mut().spawn_thread(pid).unwrap();
    s.kernel_mut().switch(1, Some(t2)).unwrap();
    write(&mut s, t2, A + 4, 4);
    read(&mut s, t2, A, 8);
    assert_eq!(count(&mut s, fd).value, 2, "both threads' writes, not the read");
}

#[test]
fn task_on_cpu_target_watches_only_on_that_cpu() {
    let mut s = server(2);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let fd = open(&mut s, pid, USER, &format!("task/{pid}/cpu/1/mem:{A}:rw")).unwrap();
    write(&mut s, tid, A, 4);
    assert_eq!(count(&mut s, fd).value, 0, "not armed on cpu 0");
    s.kernel_mut().switch(1, Some(tid)).unwrap();
    write(&mut s, tid, A, 4);
    read(&mut s, tid, A, 4);
    assert_eq!(count(&mut s, fd).value, 2);
}

#[test]
fn cpu_target_watches_every_task_on_that_cpu_only() {
    let mut s = server(2);
    let (a, ta) = task_on(&mut s, USER, 0);
    let (_b, tb) = task_on(&mut s, OTHER_USER, 1);
    let fd = open(&mut s, a, ROOT, &format!("cpu/0/mem:{A:#x}:w")).unwrap();
    write(&mut s, ta, A, 4);
    write(&mut s, tb, A, 4);
    assert_eq!(count(&mut s, fd).value, 1);
    s.kernel_mut().switch(0, Some(tb)).unwrap();
    write(&mut s, tb, A, 4);
    assert_eq!(count(&mut s, fd).value, 2, "any task, once it runs on cpu 0");
}

#[test]
fn all_cpus_target_is_one_handle_for_every_task_on_every_cpu() {
    let mut s = server(3);
    let fd = open(&mut s, 1, ROOT, &format!("cpu/all/mem:{A:#x}:w")).unwrap();
    for cpu in 0..3 {
        let (_, t) = task_on(&mut s, USER + cpu, cpu);
        write(&mut s, t, A, 1);
    }
    let c = count(&mut s, fd);
    assert_eq!(c.value, 3);
    let mut ev = Vec::new();
    let efd = events(&mut s, fd);
    ev.extend(read_events(&mut s, efd, 8, true).unwrap());
    let mut cpus: Vec<u64> = ev.iter().map(|r| r.cpu).collect();
    cpus.sort();
    assert_eq!(cpus, [0, 1, 2]);
}

#[test]
fn self_target_is_the_calling_task_and_fpath_names_it() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let (other, to) = task_on(&mut s, USER, 0);
    let fd = open(&mut s, pid, USER, &format!("self/mem:{A:#x}:w")).unwrap();
    s.kernel_mut().switch(0, Some(tid)).unwrap();
    write(&mut s, tid, A, 4);
    s.kernel_mut().switch(0, Some(to)).unwrap();
    write(&mut s, to, A, 4);
    assert_eq!(count(&mut s, fd).value, 1);
    assert!(fpath(&mut s, fd).starts_with(&format!("/scheme/hwbp/task/{pid}/")), "{}", fpath(&mut s, fd));
    let _ = other;
}

#[test]
fn addresses_parse_as_hex_or_decimal_and_lengths_default_per_access() {
    let mut s = server(1);
    let (pid, _) = task_on(&mut s, USER, 0);
    let cases = [
        (format!("task/{pid}/mem:{A}"), format!("mem:{A:#x}/4:rw")),
        (format!("task/{pid}/mem:{A:#x}:w"), format!("mem:{A:#x}/4:w")),
        (format!("task/{pid}/mem:{A:#x}/2:w"), format!("mem:{A:#x}/2:w")),
        (format!("task/{pid}/mem:{A:#x}/8:rw"), format!("mem:{A:#x}/8:rw")),
        (format!("task/{pid}/mem:{A:#x}:x"), format!("mem:{A:#x}/8:x")),
    ];
    for (path, event) in cases {
        let fd = open(&mut s, pid, USER, &path).unwrap();
        let p = fpath(&mut s, fd);
        assert!(p.contains(&event), "{path} -> {p}");
        AdmittedPath::parse(p.strip_prefix("/scheme/hwbp/").unwrap()).expect("fpath parses as an admitted path");
        close(&mut s, fd);
    }
}

#[test]
fn exec_breakpoint_fires_once_per_execution_before_the_instruction() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let fd = open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}:x")).unwrap();
    let efd = events(&mut s, fd);
    let step = s.kernel_mut().run(tid, hwbpd::sim::dr_model::MemAccess::exec(A)).unwrap();
    assert_eq!((step.fault.count_ones(), step.trap), (1, 0), "a fault, not a trap");
    exec(&mut s, tid, A + 1);
    read(&mut s, tid, A, 1);
    exec(&mut s, tid, A);
    let ev = read_events(&mut s, efd, 8, true).unwrap();
    assert_eq!(ev.len(), 2);
    assert!(ev.iter().all(|r| r.ip == A && r.access == 0), "{ev:?}");
}

#[test]
fn rw_counts_reads_and_writes_and_w_only_writes() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let rw = open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}/4:rw")).unwrap();
    let w = open(&mut s, pid, USER, &format!("task/{pid}/mem:{:#x}/4:w", A + 8)).unwrap();
    for addr in [A, A + 8] {
        read(&mut s, tid, addr, 4);
        write(&mut s, tid, addr, 4);
    }
    assert_eq!(count(&mut s, rw).value, 2);
    assert_eq!(count(&mut s, w).value, 1);
}

#[test]
fn disabled_counts_nothing_until_enabled() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let fd = open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}:w?disabled")).unwrap();
    write(&mut s, tid, A, 4);
    let c = count(&mut s, fd);
    assert_eq!((c.value, c.time_enabled_ns), (0, 0));
    command(&mut s, fd, "enable").unwrap();
    write(&mut s, tid, A, 4);
    assert_eq!(count(&mut s, fd).value, 1);
    command(&mut s, fd, "disable\n").unwrap();
    write(&mut s, tid, A, 4);
    assert_eq!(count(&mut s, fd).value, 1);
    assert_eq!(s.kernel().armed_slots(), 0, "a disabled flexible breakpoint is not armed");
}

#[test]
fn options_show_in_the_canonical_path() {
    let mut s = server(1);
    let (pid, _) = task_on(&mut s, USER, 0);
    let fd = open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}:w?ring=8&wakeup=2&period=3&pinned&exclusive&nosplit")).unwrap();
    let p = fpath(&mut s, fd);
    let admitted = AdmittedPath::parse(p.strip_prefix("/scheme/hwbp/").unwrap()).unwrap();
    let o = admitted.path.options;
    assert!(o.pinned && o.exclusive && o.nosplit && !o.kernel && !o.disabled, "{p}");
    assert_eq!((o.ring.get(), o.wakeup.get(), o.period.get()), (8, 2, 3));
    assert_eq!(admitted.pieces.len(), 1);
}

#[test]
fn kernel_option_counts_kernel_mode_hits_and_user_watches_ignore_them() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let plain = open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}:w")).unwrap();
    let with_kernel = open(&mut s, pid, ROOT, &format!("task/{pid}/mem:{:#x}:w?kernel", A + 8)).unwrap();
    s.kernel_mut().run_kernel(tid, hwbpd::sim::dr_model::MemAccess::write(A, 4)).unwrap();
    s.kernel_mut().run_kernel(tid, hwbpd::sim::dr_model::MemAccess::write(A + 8, 4)).unwrap();
    assert_eq!(count(&mut s, plain).value, 0, "a syscall's copy is not the task's access");
    assert_eq!(count(&mut s, with_kernel).value, 1);
    let kaddr = 0xffff_8000_0010_0000u64;
    let k = open(&mut s, pid, ROOT, &format!("task/{pid}/mem:{kaddr:#x}/8:rw?kernel")).unwrap();
    s.kernel_mut().run_kernel(tid, hwbpd::sim::dr_model::MemAccess::read(kaddr, 8)).unwrap();
    assert_eq!(count(&mut s, k).value, 1, "root may watch kernel addresses");
}

#[test]
fn nosplit_refuses_what_would_split_and_accepts_one_piece() {
    let mut s = server(1);
    let (pid, _) = task_on(&mut s, USER, 0);
    assert_eq!(open(&mut s, pid, USER, &format!("task/{pid}/mem:{:#x}/4:w?nosplit", A + 2)), Err(22));
    assert!(open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}/8:w?nosplit")).is_ok());
}

#[test]
fn the_scheme_prefix_is_accepted_too() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let fd = open(&mut s, pid, USER, &format!("/scheme/hwbp/task/{pid}/mem:{A:#x}:w")).unwrap();
    write(&mut s, tid, A, 4);
    assert_eq!(count(&mut s, fd).value, 1);
}

#[test]
fn a_new_process_starts_with_no_breakpoints_but_new_threads_inherit_them() {
    let mut s = server(1);
    let (pid, tid) = task_on(&mut s, USER, 0);
    let fd = open(&mut s, pid, USER, &format!("task/{pid}/mem:{A:#x}:w")).unwrap();
    // A fork/spawn by the same user: a new process, unwatched.
    let child = s.kernel_mut().spawn(USER);
    let ct = s.kernel_mut().main_thread(child).unwrap();
    s.kernel_mut().switch(0, Some(ct)).unwrap();
    write(&mut s, ct, A, 4);
    assert_eq!(s.kernel().armed_slots(), 0);
    let t2 = s.kernel_mut().spawn_thread(pid).unwrap();
    s.kernel_mut().switch(0, Some(t2)).unwrap();
    write(&mut s, t2, A, 4);
    s.kernel_mut().switch(0, Some(tid)).unwrap();
    write(&mut s, tid, A, 4);
    assert_eq!(count(&mut s, fd).value, 2);
}
