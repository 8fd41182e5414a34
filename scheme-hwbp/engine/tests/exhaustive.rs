//! Pinned admission against Linux, exhaustively: every sequence of up to 6
//! opens and closes over every scope kind on 2 CPUs and 2 tasks (a task on
//! all CPUs, a task on one CPU, two tasks, cpu-wide on one CPU, `cpu/all`).
//! The reference is the reimplementation of Linux's own algorithm
//! (`baseline::walk`, itself checked against the definition in
//! `tests/baselines.rs`); `cpu/all` is Linux's `register_wide_hw_breakpoint`:
//! one breakpoint per CPU, all or none.

use hwbp_engine::baseline::walk::TaskWalk;
use hwbp_engine::baseline::{BpDesc, Handle, SlotAccounting};
use hwbp_engine::{BpId, Config, Engine, Request, Scope};
use hwbp_kern::Access;

const CPUS: u32 = 2;
const DEPTH: usize = 6;

fn scopes() -> Vec<Scope> {
    let mut v = Vec::new();
    for pid in [1, 2] {
        v.push(Scope::Task { pid, cpu: None });
        for c in 0..CPUS {
            v.push(Scope::Task { pid, cpu: Some(c) });
        }
    }
    for c in 0..CPUS {
        v.push(Scope::Cpu(c));
    }
    v.push(Scope::AllCpus);
    v
}

/// Linux's breakpoints for one of ours.
fn linux_descs(scope: Scope) -> Vec<BpDesc> {
    match scope {
        Scope::Task { pid, cpu } => vec![BpDesc { task: Some(pid), cpu }],
        Scope::Cpu(c) => vec![BpDesc { task: None, cpu: Some(c) }],
        Scope::AllCpus => (0..CPUS).map(|c| BpDesc { task: None, cpu: Some(c) }).collect(),
    }
}

#[derive(Clone)]
struct State {
    engine: Engine,
    linux: TaskWalk,
    /// Open breakpoints: engine id, Linux handles and descriptions.
    open: Vec<(BpId, Vec<(Handle, BpDesc)>)>,
    next_handle: Handle,
}

impl State {
    fn open(&mut self, scope: Scope, n: u64) -> Result<(), String> {
        let req = Request { pinned: true, ..Request::new(scope, 0x1000 + 8 * n, 8, Access::Write) };
        let ours = self.engine.open(&req, 0, 0);
        let mut taken = Vec::new();
        let mut linux_ok = true;
        for bp in linux_descs(scope) {
            self.next_handle += 1;
            if self.linux.reserve(self.next_handle, bp).is_ok() {
                taken.push((self.next_handle, bp));
            } else {
                linux_ok = false;
                break;
            }
        }
        if !linux_ok {
            for &(h, bp) in taken.iter().rev() {
                self.linux.release(h, bp);
            }
            taken.clear();
        }
        match (ours, linux_ok) {
            (Ok(id), true) => {
                self.open.push((id, taken));
                Ok(())
            }
            (Err(e), false) if e.errno() == hwbp_engine::error::errno::ENOSPC => Ok(()),
            (ours, linux) => Err(format!("open {scope:?}: engine {ours:?}, Linux admits: {linux}")),
        }
    }

    fn close(&mut self, i: usize) {
        let (id, linux) = self.open.remove(i);
        self.engine.close(id, 0).unwrap();
        for (h, bp) in linux {
            self.linux.release(h, bp);
        }
    }
}

/// Depth-first over every sequence; returns the number of states visited.
fn explore(state: &State, depth: usize, scopes: &[Scope], trail: &mut Vec<String>) -> usize {
    if depth == DEPTH {
        return 1;
    }
    let mut visited = 1;
    for &scope in scopes {
        let mut next = state.clone();
        trail.push(format!("open {scope:?}"));
        if let Err(why) = next.open(scope, depth as u64) {
            panic!("{why}\nafter: {trail:#?}");
        }
        visited += explore(&next, depth + 1, scopes, trail);
        trail.pop();
    }
    for i in [0, state.open.len().saturating_sub(1)] {
        if i >= state.open.len() || (i > 0 && state.open.len() == 1) {
            continue;
        }
        let mut next = state.clone();
        trail.push(format!("close #{i}"));
        next.close(i);
        visited += explore(&next, depth + 1, scopes, trail);
        trail.pop();
    }
    visited
}

#[test]
fn every_scope_combination_up_to_six_steps_gets_linuxs_answer() {
    let start = State {
        engine: Engine::new(Config::new(CPUS)),
        linux: TaskWalk::new(CPUS),
        open: Vec::new(),
        next_handle: 0,
    };
    let visited = explore(&start, 0, &scopes(), &mut Vec::new());
    println!("explored {visited} states");
    assert!(visited > 1_000_000, "explored {visited} states");
}
