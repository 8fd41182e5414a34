//! One test per engine rule, each checking the exact errno-level outcome.

use hwbp_engine::error::errno::{EBADF, EINVAL, EMFILE, ENOSPC, ESRCH};
use hwbp_engine::{BpId, Config, Engine, EngineError, Pid, Request, Scope};
use hwbp_kern::piece::KERNEL_START;
use hwbp_kern::{Access, CpuId, Origin, Slot};

const MS: u64 = 1_000_000;

fn engine(cpus: u32) -> Engine {
    Engine::new(Config::new(cpus))
}
fn task(pid: Pid) -> Scope {
    Scope::Task { pid, cpu: None }
}
fn task_on(pid: Pid, cpu: CpuId) -> Scope {
    Scope::Task { pid, cpu: Some(cpu) }
}
/// A 4-byte write watch at the `n`-th distinct address.
fn watch(scope: Scope, n: u64) -> Request {
    Request::new(scope, 0x10_000 + 8 * n, 4, Access::Write)
}
fn pinned(scope: Scope, n: u64) -> Request {
    Request { pinned: true, ..watch(scope, n) }
}
fn errno(r: Result<BpId, EngineError>) -> i32 {
    r.map_or_else(|e| e.errno(), |_| 0)
}
fn open_n(e: &mut Engine, scope: Scope, range: std::ops::Range<u64>, pin: bool) -> Vec<BpId> {
    range
        .map(|n| e.open(&Request { pinned: pin, ..watch(scope, n) }, 0, 0).expect("admitted"))
        .collect()
}
/// cpu_plan(c) + the fullest context plan on c, for every CPU.
fn assert_plans_fit(e: &Engine, cpus: u32, pids: &[Pid]) {
    for c in 0..cpus {
        let ctx = pids.iter().map(|&p| e.context_plan(p).map_or(0, |pl| pl.on_cpu(c).count())).max().unwrap_or(0);
        assert!(e.cpu_plan(c).len() + ctx <= 4, "cpu {c}: {} cpu + {ctx} context pieces", e.cpu_plan(c).len());
        for &p in pids {
            assert_eq!(e.assignment(c, Some(p)).refused(), 0);
        }
    }
}

// ---- pinned admission (Linux's constraint rule) ----

#[test]
fn task_pinned_on_all_cpus_blocks_cpu_wide_fifth() {
    let mut e = engine(4);
    open_n(&mut e, task(1), 0..4, true);
    for c in 0..4 {
        assert_eq!(errno(e.open(&pinned(Scope::Cpu(c), 9), 0, 0)), ENOSPC, "cpu {c}");
    }
    assert_eq!(errno(e.open(&pinned(Scope::AllCpus, 9), 0, 0)), ENOSPC);
    assert_eq!(errno(e.open(&pinned(task(1), 9), 0, 0)), ENOSPC);
}

#[test]
fn two_tasks_each_get_four_pinned_because_they_never_run_at_once() {
    let mut e = engine(2);
    open_n(&mut e, task(1), 0..4, true);
    open_n(&mut e, task(2), 10..14, true);
    assert_eq!(errno(e.open(&pinned(task(2), 20), 0, 0)), ENOSPC);
    assert_eq!(errno(e.open(&pinned(Scope::Cpu(1), 20), 0, 0)), ENOSPC);
}

#[test]
fn task_pinned_on_one_cpu_leaves_the_other_cpus_to_cpu_wide() {
    let mut e = engine(2);
    open_n(&mut e, task_on(1, 1), 0..4, true);
    open_n(&mut e, Scope::Cpu(0), 10..14, true);
    assert_eq!(errno(e.open(&pinned(Scope::Cpu(1), 20), 0, 0)), ENOSPC);
    assert_eq!(errno(e.open(&pinned(task(1), 20), 0, 0)), ENOSPC, "cpu 0 is full of cpu-wide slots");
    assert_eq!(errno(e.open(&pinned(task_on(2, 1), 20), 0, 0)), 0, "another task on cpu 1");
}

#[test]
fn task_on_one_cpu_and_on_all_cpus_add_up_on_that_cpu_only() {
    let mut e = engine(3);
    open_n(&mut e, task(1), 0..2, true);
    open_n(&mut e, task_on(1, 2), 10..12, true);
    assert_eq!(errno(e.open(&pinned(task_on(1, 2), 20), 0, 0)), ENOSPC);
    assert_eq!(errno(e.open(&pinned(task_on(1, 0), 20), 0, 0)), 0);
    assert_eq!(errno(e.open(&pinned(Scope::Cpu(2), 21), 0, 0)), ENOSPC);
    assert_eq!(errno(e.open(&pinned(Scope::Cpu(1), 21), 0, 0)), 0);
}

#[test]
fn cpu_wide_on_one_cpu_limits_a_task_on_all_cpus() {
    let mut e = engine(4);
    open_n(&mut e, Scope::Cpu(3), 0..3, true);
    assert_eq!(errno(e.open(&pinned(task(7), 10), 0, 0)), 0);
    assert_eq!(errno(e.open(&pinned(task(7), 11), 0, 0)), ENOSPC);
    assert_eq!(errno(e.open(&pinned(task_on(7, 2), 11), 0, 0)), 0);
    assert_eq!(errno(e.open(&pinned(task_on(8, 3), 11), 0, 0)), 0);
    assert_eq!(errno(e.open(&pinned(task_on(8, 3), 12), 0, 0)), ENOSPC);
}

#[test]
fn cpu_all_counts_on_every_cpu() {
    let mut e = engine(3);
    open_n(&mut e, Scope::AllCpus, 0..3, true);
    assert_eq!(errno(e.open(&pinned(Scope::Cpu(1), 10), 0, 0)), 0);
    assert_eq!(errno(e.open(&pinned(Scope::Cpu(1), 11), 0, 0)), ENOSPC);
    assert_eq!(errno(e.open(&pinned(Scope::AllCpus, 11), 0, 0)), ENOSPC);
    assert_eq!(errno(e.open(&pinned(task_on(3, 0), 11), 0, 0)), 0);
    assert_eq!(errno(e.open(&pinned(task(3), 12), 0, 0)), ENOSPC);
}

#[test]
fn closing_a_pinned_breakpoint_frees_its_slot() {
    let mut e = engine(2);
    let ids = open_n(&mut e, task(1), 0..4, true);
    assert_eq!(errno(e.open(&pinned(Scope::Cpu(0), 9), 0, 0)), ENOSPC);
    e.close(ids[2], 0).unwrap();
    assert_eq!(errno(e.open(&pinned(Scope::Cpu(0), 9), 0, 0)), 0);
    assert_eq!(errno(e.open(&pinned(task(1), 9), 0, 0)), ENOSPC);
}

#[test]
fn disabled_pinned_keeps_its_slot() {
    let mut e = engine(1);
    let ids = open_n(&mut e, task(1), 0..3, true);
    let off = e.open(&Request { disabled: true, ..pinned(task(1), 3) }, 0, 0).unwrap();
    e.set_enabled(ids[0], false, 0).unwrap();
    assert_eq!(errno(e.open(&pinned(task(1), 9), 0, 0)), ENOSPC);
    e.tick(0);
    let plan = e.context_plan(1).unwrap();
    assert_eq!(plan.len(), 2, "disabled pinned breakpoints are not armed");
    assert_eq!(e.is_running(off), Some(false));
}

#[test]
fn split_pinned_breakpoint_needs_a_slot_per_piece() {
    let mut e = engine(1);
    // 0x1003/4 splits into 1+2+1 bytes: three registers.
    let split = e.open(&Request { pinned: true, ..Request::new(task(1), 0x1003, 4, Access::Write) }, 0, 0).unwrap();
    assert_eq!(e.pieces(split).unwrap().len(), 3);
    assert_eq!(errno(e.open(&Request { pinned: true, ..Request::new(task(1), 0x2000, 16, Access::Write) }, 0, 0)), ENOSPC);
    assert_eq!(errno(e.open(&pinned(task(1), 0), 0, 0)), 0);
}

#[test]
fn identical_pinned_breakpoints_share_one_slot_and_every_one_is_routed() {
    let mut e = engine(1);
    let ids = open_n(&mut e, task(1), 0..1, true);
    let more: Vec<BpId> = (0..5).map(|_| e.open(&pinned(task(1), 0), 0, 0).unwrap()).collect();
    open_n(&mut e, task(1), 1..4, true);
    assert_eq!(errno(e.open(&pinned(task(1), 4), 0, 0)), ENOSPC);
    e.tick(0);
    let token = e.tokens(ids[0]).unwrap()[0];
    assert!(more.iter().all(|&id| e.tokens(id).unwrap() == [token]));
    let mut routed = e.route(token).to_vec();
    routed.sort();
    assert_eq!(routed, [&ids[..], &more[..]].concat());
    assert_eq!(e.context_plan(1).unwrap().len(), 4);
}

#[test]
fn identical_pieces_in_different_scopes_do_not_share() {
    let mut e = engine(2);
    let a = e.open(&pinned(task(1), 0), 0, 0).unwrap();
    let b = e.open(&pinned(task_on(1, 0), 0), 0, 0).unwrap();
    let c = e.open(&pinned(task(2), 0), 0, 0).unwrap();
    let tokens: Vec<_> = [a, b, c].iter().map(|&id| e.tokens(id).unwrap()[0]).collect();
    assert!(tokens[0] != tokens[1] && tokens[1] != tokens[2] && tokens[0] != tokens[2]);
}

#[test]
fn a_stopping_piece_is_marked_in_the_plan_and_never_shares_with_a_counting_one() {
    let mut e = engine(2);
    let counting = e.open(&pinned(task(1), 0), 0, 0).unwrap();
    let stop = e.open(&Request { stop: true, ..pinned(task(1), 0) }, 0, 0).unwrap();
    let stop_too = e.open(&Request { stop: true, ..pinned(task(1), 0) }, 0, 0).unwrap();
    let on_cpu = e.open(&Request { stop: true, ..pinned(task_on(1, 1), 1) }, 0, 0).unwrap();
    e.tick(0);
    let token = |e: &Engine, id| e.tokens(id).unwrap()[0];
    let [counting_t, stop_t, stop_too_t, on_cpu_t] = [counting, stop, stop_too, on_cpu].map(|id| token(&e, id));
    assert_ne!(counting_t, stop_t, "one register stops, the other counts");
    assert_eq!(stop_t, stop_too_t, "two stopping breakpoints share theirs");
    let plan = e.context_plan(1).unwrap();
    let stops: Vec<_> = plan.iter().map(|p| (p.token, p.stop)).collect();
    assert_eq!(stops, [(counting_t, false), (stop_t, true), (on_cpu_t, true)]);
    // Only a task's threads can be stopped.
    for scope in [Scope::Cpu(0), Scope::AllCpus] {
        assert_eq!(errno(e.open(&Request { stop: true, ..watch(scope, 5) }, 0, 0)), EINVAL);
    }
    // A modify that drops `stop` moves to a counting register.
    e.modify(stop_too, &pinned(task(1), 0), 0).unwrap();
    e.tick(0);
    assert_eq!(token(&e, stop_too), counting_t);
    assert_eq!(e.context_plan(1).unwrap().iter().filter(|p| p.stop).count(), 2);
}

#[test]
fn pinned_exclusive_holds_every_slot_of_its_scope() {
    let mut e = engine(2);
    e.open(&Request { exclusive: true, ..pinned(task(1), 0) }, 0, 0).unwrap();
    assert_eq!(errno(e.open(&pinned(task(1), 1), 0, 0)), ENOSPC);
    assert_eq!(errno(e.open(&pinned(Scope::Cpu(1), 1), 0, 0)), ENOSPC);
    assert_eq!(errno(e.open(&pinned(task(2), 1), 0, 0)), 0, "other tasks never share its registers");
    assert_eq!(errno(e.open(&Request { exclusive: true, ..pinned(task(1), 0) }, 0, 0)), ENOSPC);
}

#[test]
fn pinned_exclusive_is_refused_next_to_other_pinned() {
    let mut e = engine(2);
    e.open(&pinned(Scope::Cpu(1), 0), 0, 0).unwrap();
    assert_eq!(errno(e.open(&Request { exclusive: true, ..pinned(task(1), 1) }, 0, 0)), ENOSPC);
    assert_eq!(errno(e.open(&Request { exclusive: true, ..pinned(task_on(1, 0), 1) }, 0, 0)), 0);
}

#[test]
fn a_task_holds_at_most_sixteen_pinned_pieces() {
    let mut e = engine(6);
    for c in 0..4 {
        open_n(&mut e, task_on(1, c), u64::from(c) * 10..u64::from(c) * 10 + 4, true);
    }
    assert_eq!(e.open(&pinned(task_on(1, 4), 50), 0, 0), Err(EngineError::NoSpace(hwbp_engine::load::TOO_MANY_IN_CONTEXT)));
    assert_eq!(errno(e.open(&pinned(task_on(2, 4), 50), 0, 0)), 0);
    e.tick(0);
    assert_eq!(e.context_plan(1).unwrap().len(), 16);
}

// ---- scope, ids, quota ----

#[test]
fn cpu_out_of_range_is_esrch() {
    let mut e = engine(2);
    assert_eq!(errno(e.open(&watch(Scope::Cpu(2), 0), 0, 0)), ESRCH);
    assert_eq!(errno(e.open(&watch(task_on(1, 7), 0), 0, 0)), ESRCH);
    assert_eq!(errno(e.open(&watch(Scope::Cpu(1), 0), 0, 0)), 0);
}

#[test]
fn unknown_breakpoint_is_ebadf() {
    let mut e = engine(1);
    assert_eq!(e.close(42, 0).unwrap_err().errno(), EBADF);
    assert_eq!(e.set_enabled(42, true, 0).unwrap_err().errno(), EBADF);
    assert_eq!(e.modify(42, &watch(task(1), 0), 0).unwrap_err().errno(), EBADF);
    let id = e.open(&watch(task(1), 0), 0, 0).unwrap();
    e.close(id, 0).unwrap();
    assert_eq!(e.close(id, 0).unwrap_err().errno(), EBADF);
    assert_eq!(e.times(id, 0), None);
}

#[test]
fn quota_per_uid_is_emfile_and_root_is_unlimited() {
    let mut e = Engine::new(Config { quota_per_uid: 3, ..Config::new(1) });
    let ids: Vec<_> = (0..3).map(|n| e.open(&watch(task(1), n), 1000, 0).unwrap()).collect();
    assert_eq!(errno(e.open(&watch(task(1), 3), 1000, 0)), EMFILE);
    assert_eq!(errno(e.open(&watch(task(1), 3), 1001, 0)), 0, "quota is per uid");
    for n in 0..10 {
        assert_eq!(errno(e.open(&watch(task(1), n), 0, 0)), 0);
    }
    e.close(ids[0], 0).unwrap();
    assert_eq!(errno(e.open(&watch(task(1), 3), 1000, 0)), 0);
    let mut strict = Engine::new(Config { quota_per_uid: 1, root_unlimited: false, ..Config::new(1) });
    strict.open(&watch(task(1), 0), 0, 0).unwrap();
    assert_eq!(errno(strict.open(&watch(task(1), 1), 0, 0)), EMFILE);
}

#[test]
fn ended_breakpoints_count_against_the_quota_until_closed() {
    let mut e = Engine::new(Config { quota_per_uid: 1, ..Config::new(1) });
    let id = e.open(&watch(task(5), 0), 1000, 0).unwrap();
    assert_eq!(e.task_exited(5, 0), [id]);
    assert_eq!(errno(e.open(&watch(task(6), 0), 1000, 0)), EMFILE);
    e.close(id, 0).unwrap();
    assert_eq!(errno(e.open(&watch(task(6), 0), 1000, 0)), 0);
}

#[test]
fn invalid_requests_are_einval_and_leave_nothing_behind() {
    let mut e = engine(1);
    let bad = [
        Request::new(task(1), 0x1000, 0, Access::Write),
        Request::new(task(1), 0x1000, 9, Access::Exec),
        Request::new(task(1), 0x1001, 16, Access::Write),
        Request::new(task(1), KERNEL_START, 8, Access::Write),
        Request::new(task(1), 0x0000_8000_0000_0000, 1, Access::Write),
        Request { nosplit: true, ..Request::new(task(1), 0x1002, 4, Access::Write) },
        Request { period: 0, ..Request::new(task(1), 0x1000, 4, Access::Write) },
        Request { kernel: true, ..Request::new(task(1), u64::MAX - 1, 4, Access::Write) },
    ];
    for r in &bad {
        assert_eq!(errno(e.open(r, 0, 0)), EINVAL, "{r:?}");
    }
    e.tick(0);
    assert!(e.is_empty());
}

// ---- flexible multiplexing ----

#[test]
fn flexible_beyond_four_are_admitted_and_take_turns() {
    let mut e = engine(1);
    let ids = open_n(&mut e, task(1), 0..6, false);
    let mut now = 0;
    for _ in 0..8 {
        e.tick(now);
        assert_eq!(e.context_plan(1).unwrap().len(), 4);
        assert_eq!(ids.iter().filter(|&&id| e.is_running(id) == Some(true)).count(), 4);
        now += 4 * MS;
    }
    for &id in &ids {
        let (en, run) = e.times(id, now).unwrap();
        assert_eq!(en, now);
        assert!(run > 0 && run < en, "breakpoint {id}: {run} of {en}");
    }
}

#[test]
fn rotation_moves_one_breakpoint_and_keeps_the_others_in_place() {
    let mut e = engine(1);
    open_n(&mut e, Scope::Cpu(0), 0..5, false);
    e.tick(0);
    let before = *e.cpu_plan(0);
    let changes = e.tick(4 * MS);
    assert_eq!(changes.cpus, [0]);
    let after = *e.cpu_plan(0);
    let same = Slot::ALL.iter().filter(|&&s| before.get(s) == after.get(s)).count();
    assert_eq!(same, 3, "one piece out, one in, the rest in their registers");
}

#[test]
fn rotation_of_a_task_keeps_the_registers_of_the_pieces_that_stay() {
    let mut e = engine(1);
    open_n(&mut e, task(1), 0..6, false);
    let mut now = 0;
    e.tick(now);
    for _ in 0..6 {
        let before = e.assignment(0, Some(1));
        now += 4 * MS;
        e.tick(now);
        let after = e.assignment(0, Some(1));
        let same = Slot::ALL.iter().filter(|&&s| before.slot(s) == after.slot(s)).count();
        assert_eq!(same, 3, "one register changes per rotation");
    }
}

#[test]
fn no_rotation_before_the_period_and_none_without_contention() {
    let mut e = engine(1);
    open_n(&mut e, Scope::Cpu(0), 0..5, false);
    e.tick(0);
    assert!(e.tick(MS).is_empty(), "the period has not passed");
    assert!(!e.tick(4 * MS).is_empty());
    let mut calm = engine(1);
    open_n(&mut calm, Scope::Cpu(0), 0..4, false);
    calm.tick(0);
    assert!(calm.tick(100 * MS).is_empty());
}

#[test]
fn each_task_rotates_its_own_breakpoints_like_a_perf_context() {
    // 50 tasks with 6 flexible breakpoints each: every task cycles through
    // its own six in 3 rotations, whatever the others do, and each rotation
    // swaps one piece per task.
    let mut e = engine(2);
    let mut ids = Vec::new();
    for pid in 1..=50 {
        ids.extend(open_n(&mut e, task(pid), u64::from(pid) * 10..u64::from(pid) * 10 + 6, false));
    }
    let mut now = 0;
    e.tick(now);
    for _ in 0..3 {
        let before: Vec<_> = (1..=50).map(|p| *e.context_plan(p).unwrap()).collect();
        now += 4 * MS;
        e.tick(now);
        for (i, pid) in (1..=50).enumerate() {
            let after = e.context_plan(pid).unwrap();
            assert_eq!(after.len(), 4);
            let new = after.iter().filter(|p| !before[i].iter().any(|b| b.token == p.token)).count();
            assert_eq!(new, 1, "task {pid}: one piece in, one out per rotation");
        }
    }
    now += 4 * MS;
    assert!(ids.iter().all(|&id| e.times(id, now).unwrap().1 > 0), "every breakpoint ran within 3 rotations");
}

#[test]
fn next_rotation_is_due_one_period_after_contention_and_none_without() {
    let mut e = engine(1);
    let ids = open_n(&mut e, task(1), 0..4, false);
    e.tick(MS);
    assert_eq!(e.next_rotation(), None, "four fit: no timer needed");
    let fifth = e.open(&watch(task(1), 4), 0, 2 * MS).unwrap();
    e.tick(2 * MS);
    assert_eq!(e.next_rotation(), Some(6 * MS));
    e.tick(6 * MS);
    assert_eq!(e.next_rotation(), Some(10 * MS));
    e.close(fifth, 7 * MS).unwrap();
    e.tick(7 * MS);
    assert_eq!(e.next_rotation(), None);
    assert!(ids.iter().all(|&id| e.is_running(id) == Some(true)));
}

#[test]
fn pinned_are_always_planned_and_flexible_fill_the_rest() {
    let mut e = engine(2);
    let pins = open_n(&mut e, task(1), 0..3, true);
    let flex = open_n(&mut e, task(1), 10..13, false);
    let mut now = 0;
    let mut ran = vec![false; flex.len()];
    for _ in 0..6 {
        e.tick(now);
        assert!(pins.iter().all(|&id| e.is_running(id) == Some(true)));
        assert_eq!(flex.iter().filter(|&&id| e.is_running(id) == Some(true)).count(), 1);
        for (i, &id) in flex.iter().enumerate() {
            ran[i] |= e.is_running(id) == Some(true);
        }
        assert_plans_fit(&e, 2, &[1]);
        now += 4 * MS;
    }
    assert!(ran.iter().all(|&r| r));
}

#[test]
fn split_flexible_breakpoint_is_armed_all_or_nothing() {
    let mut e = engine(1);
    open_n(&mut e, task(1), 0..3, true);
    let split = e.open(&Request::new(task(1), 0x1002, 4, Access::Write), 0, 0).unwrap();
    assert_eq!(e.pieces(split).unwrap().len(), 2);
    let single = e.open(&watch(task(1), 10), 0, 0).unwrap();
    let mut now = 0;
    for _ in 0..4 {
        e.tick(now);
        assert_eq!(e.is_running(split), Some(false));
        assert_eq!(e.context_plan(1).unwrap().len(), 4);
        now += 4 * MS;
    }
    assert_eq!(e.times(single, now).unwrap().1, now);
    assert_eq!(e.times(split, now).unwrap(), (now, 0));
}

#[test]
fn task_exclusive_when_armed_empties_the_cpu_plans_and_its_own_plan() {
    let mut e = engine(2);
    let cpu_wide = e.open(&watch(Scope::Cpu(1), 0), 0, 0).unwrap();
    let other = e.open(&watch(task(1), 1), 0, 0).unwrap();
    let ex = e.open(&Request { exclusive: true, ..watch(task(1), 2) }, 0, 0).unwrap();
    let neighbour = e.open(&watch(task(2), 3), 0, 0).unwrap();
    let mut now = 0;
    let mut seen = false;
    for _ in 0..6 {
        e.tick(now);
        if e.is_running(ex) == Some(true) {
            seen = true;
            assert!(e.cpu_plan(0).is_empty() && e.cpu_plan(1).is_empty());
            assert_eq!(e.context_plan(1).unwrap().len(), 1);
            assert_eq!(e.is_running(cpu_wide), Some(false));
            assert_eq!(e.is_running(other), Some(false));
            assert_eq!(e.is_running(neighbour), Some(true), "another task does not share task 1's registers");
        }
        now += 4 * MS;
    }
    assert!(seen, "the exclusive breakpoint got a turn");
}

#[test]
fn cpu_wide_exclusive_when_armed_keeps_every_task_piece_off_that_cpu() {
    let mut e = engine(2);
    let ex = e.open(&Request { exclusive: true, ..watch(Scope::Cpu(0), 0) }, 0, 0).unwrap();
    let t_any = e.open(&watch(task(1), 1), 0, 0).unwrap();
    let t_one = e.open(&watch(task_on(2, 1), 2), 0, 0).unwrap();
    let mut now = 0;
    let mut seen = false;
    for _ in 0..6 {
        e.tick(now);
        if e.is_running(ex) == Some(true) {
            seen = true;
            assert_eq!(e.cpu_plan(0).len(), 1);
            assert_eq!(e.is_running(t_any), Some(false), "task-on-all-cpus pieces would land on cpu 0");
            assert_eq!(e.is_running(t_one), Some(true), "cpu 1 is not affected");
            assert_eq!(e.assignment(0, Some(1)).iter().count(), 1);
        }
        now += 4 * MS;
    }
    assert!(seen);
}

#[test]
fn flexible_exclusive_waits_while_pinned_neighbours_exist() {
    let mut e = engine(1);
    e.open(&pinned(Scope::Cpu(0), 0), 0, 0).unwrap();
    let ex = e.open(&Request { exclusive: true, ..watch(task(1), 1) }, 0, 0).unwrap();
    for i in 0..4 {
        e.tick(i * 4 * MS);
    }
    assert_eq!(e.times(ex, 16 * MS).unwrap(), (16 * MS, 0));
}

// ---- tokens, routing, plans ----

#[test]
fn tokens_are_never_reused_and_late_hits_of_a_closed_slot_route_nowhere() {
    let mut e = engine(1);
    let a = e.open(&watch(task(1), 0), 0, 0).unwrap();
    e.tick(0);
    let old = e.tokens(a).unwrap()[0];
    assert_eq!(e.route(old), [a]);
    e.close(a, 0).unwrap();
    assert!(e.route(old).is_empty(), "no hit is routed to a closed breakpoint");
    let b = e.open(&watch(task(1), 0), 0, 0).unwrap();
    e.tick(0);
    assert_ne!(e.tokens(b).unwrap()[0], old);
    assert!(e.route(old).is_empty());
}

#[test]
fn route_names_only_running_users_of_a_shared_slot() {
    let mut e = engine(1);
    let p = e.open(&pinned(task(1), 0), 0, 0).unwrap();
    // Flexible user of the same slot, plus a second piece that cannot fit.
    open_n(&mut e, task(1), 1..4, true);
    let f = e.open(&Request::new(task(1), 0x10_000 - 4, 8, Access::Write), 0, 0).unwrap();
    e.tick(0);
    assert_eq!(e.tokens(f).unwrap()[1], e.tokens(p).unwrap()[0]);
    assert_eq!(e.route(e.tokens(p).unwrap()[0]), [p]);
    assert_eq!(e.is_running(f), Some(false));
}

#[test]
fn assignment_is_the_kernel_composition_of_the_plans() {
    let mut e = engine(2);
    e.open(&watch(Scope::Cpu(1), 0), 0, 0).unwrap();
    e.open(&watch(task(1), 1), 0, 0).unwrap();
    e.open(&watch(task_on(1, 0), 2), 0, 0).unwrap();
    e.tick(0);
    let on0 = e.assignment(0, Some(1));
    assert_eq!(on0.iter().count(), 2);
    assert!(on0.iter().all(|(_, l)| l.origin == Origin::Context));
    let on1 = e.assignment(1, Some(1));
    assert_eq!(on1.addr(Slot::new(0).unwrap()), 0x10_000, "cpu-wide piece keeps DR0");
    assert_eq!(on1.addr(Slot::new(1).unwrap()), 0x10_008);
    assert_ne!(on1.dr7(), 0);
    assert_eq!(e.assignment(0, None).dr7(), 0);
    assert_eq!(on1, hwbp_kern::compose(1, e.cpu_plan(1), e.context_plan(1)));
}

#[test]
fn a_task_whose_plan_empties_is_reported() {
    let mut e = engine(1);
    let a = e.open(&watch(task(4), 0), 0, 0).unwrap();
    assert_eq!(e.tick(0).tasks, [4]);
    e.close(a, 0).unwrap();
    assert_eq!(e.tick(0).tasks, [4]);
    assert!(e.context_plan(4).is_none());
    assert!(e.is_empty());
}

// ---- modify ----

#[test]
fn modify_that_does_not_fit_leaves_the_old_breakpoint_armed_and_unchanged() {
    let mut e = engine(1);
    let ids = open_n(&mut e, task(1), 0..4, true);
    e.tick(0);
    let (tokens, plan) = (e.tokens(ids[0]).unwrap().to_vec(), *e.context_plan(1).unwrap());
    // 0x3002/4 splits into two pieces: 4 - 1 + 2 = 5 slots.
    let two_pieces = Request { pinned: true, ..Request::new(task(1), 0x3002, 4, Access::Write) };
    assert_eq!(e.modify(ids[0], &two_pieces, 0).unwrap_err().errno(), ENOSPC);
    assert_eq!(e.tokens(ids[0]).unwrap(), tokens);
    assert!(e.tick(0).is_empty());
    assert_eq!(*e.context_plan(1).unwrap(), plan);
    let bad = Request::new(task(1), 0x3000, 0, Access::Write);
    assert_eq!(e.modify(ids[0], &bad, 0).unwrap_err().errno(), EINVAL);
    assert_eq!(e.modify(ids[0], &watch(task(2), 0), 0).unwrap_err().errno(), EINVAL);
    assert_eq!(e.request(ids[0]), Some(&pinned(task(1), 0)));
    assert!(e.tick(0).is_empty());
    // With one slot free, 3 - 1 + 2 = 4 fits, and then nothing more does.
    e.close(ids[3], 0).unwrap();
    e.modify(ids[0], &two_pieces, 0).unwrap();
    assert_eq!(e.pieces(ids[0]).unwrap().len(), 2);
    let other_two = Request { pinned: true, ..Request::new(task(1), 0x4006, 4, Access::Write) };
    assert_eq!(e.modify(ids[1], &other_two, 0).unwrap_err().errno(), ENOSPC);
    e.tick(0);
    assert_eq!(e.context_plan(1).unwrap().len(), 4);
}

#[test]
fn modify_that_keeps_a_piece_keeps_its_slot_and_token() {
    let mut e = engine(1);
    let id = e.open(&Request::new(task(1), 0x1000, 16, Access::Write), 0, 0).unwrap();
    e.tick(0);
    let old = e.tokens(id).unwrap().to_vec();
    // Pinned now, and one piece longer: the two old pieces stay.
    e.modify(id, &Request { pinned: true, ..Request::new(task(1), 0x1000, 24, Access::Write) }, 0).unwrap();
    assert_eq!(&e.tokens(id).unwrap()[..2], &old[..]);
    e.tick(0);
    let plan = e.context_plan(1).unwrap();
    assert_eq!(plan.iter().map(|p| p.token).collect::<Vec<_>>()[..2], old[..], "kept pieces kept their place");
    assert_eq!(e.route(old[0]), [id]);
    // Dropping a piece retires only that slot.
    e.modify(id, &Request::new(task(1), 0x1008, 8, Access::Write), 0).unwrap();
    e.tick(0);
    assert_eq!(e.tokens(id).unwrap(), [old[1]]);
    assert!(e.route(old[0]).is_empty());
}

#[test]
fn modify_between_pinned_and_flexible_moves_the_accounting() {
    let mut e = engine(1);
    let ids = open_n(&mut e, task(1), 0..4, true);
    e.modify(ids[3], &watch(task(1), 3), 0).unwrap();
    let extra = e.open(&pinned(task(1), 8), 0, 0).unwrap();
    assert_eq!(e.modify(ids[3], &pinned(task(1), 3), 0).unwrap_err().errno(), ENOSPC);
    e.close(extra, 0).unwrap();
    e.modify(ids[3], &pinned(task(1), 3), 0).unwrap();
    assert_eq!(errno(e.open(&pinned(task(1), 9), 0, 0)), ENOSPC);
}

#[test]
fn modify_of_an_ended_breakpoint_is_esrch() {
    let mut e = engine(1);
    let id = e.open(&watch(task(3), 0), 0, 0).unwrap();
    e.task_exited(3, 0);
    assert_eq!(e.modify(id, &watch(task(3), 1), 0).unwrap_err().errno(), ESRCH);
}

// ---- task exit, time accounting ----

#[test]
fn task_exit_ends_its_breakpoints_frees_their_slots_and_freezes_times() {
    let mut e = engine(1);
    let ids = open_n(&mut e, task(1), 0..4, true);
    let other = e.open(&watch(task(2), 0), 0, 0).unwrap();
    e.tick(0);
    assert_eq!(e.task_exited(1, 10 * MS), ids);
    assert_eq!(e.is_alive(ids[0]), Some(false));
    assert_eq!(e.is_alive(other), Some(true));
    let changes = e.tick(10 * MS);
    assert!(!changes.tasks.contains(&1), "no plan is pushed to a task that is gone");
    assert!(e.context_plan(1).is_none());
    assert_eq!(e.times(ids[0], 50 * MS), Some((10 * MS, 10 * MS)));
    assert_eq!(errno(e.open(&pinned(Scope::Cpu(0), 5), 0, 0)), 0, "its slots are free");
    for id in ids {
        e.close(id, 60 * MS).unwrap();
    }
    assert!(e.task_exited(1, 70 * MS).is_empty());
}

#[test]
fn times_accrue_enabled_while_enabled_and_running_while_planned() {
    let mut e = engine(1);
    let a = e.open(&watch(task(1), 0), 0, 100).unwrap();
    let b = e.open(&Request { disabled: true, ..watch(task(1), 1) }, 0, 100).unwrap();
    assert_eq!(e.times(a, 100), Some((0, 0)));
    e.tick(100);
    assert_eq!(e.times(a, 300), Some((200, 200)));
    assert_eq!(e.times(b, 300), Some((0, 0)));
    e.set_enabled(a, false, 300).unwrap();
    e.set_enabled(b, true, 300).unwrap();
    e.tick(300);
    assert_eq!(e.times(a, 1000), Some((200, 200)));
    assert_eq!(e.times(b, 1000), Some((700, 700)));
}

#[test]
fn a_waiting_flexible_breakpoint_accrues_enabled_time_only() {
    let mut e = engine(1);
    open_n(&mut e, task(1), 0..4, true);
    let f = e.open(&watch(task(1), 4), 0, 0).unwrap();
    e.tick(0);
    assert_eq!(e.times(f, 5 * MS), Some((5 * MS, 0)));
}
