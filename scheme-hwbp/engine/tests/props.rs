//! Property tests against a brute-force model:
//!
//! 1. pinned admission (open and modify) equals the definition: "in no
//!    possible simultaneous schedule do more than 4 slots need to be armed
//!    on a CPU" (and no task needs more than 16 pieces);
//! 2. no plan ever needs more than 4 registers on a CPU, arms a piece
//!    outside its scope, or shares an exclusive breakpoint's registers;
//!    every enabled pinned breakpoint is armed; every change is reported;
//! 3. every flexible breakpoint that could run beside the pinned ones gets
//!    time_running > 0 within (flexible count + 3) rotations, and
//!    time_running <= time_enabled always;
//! 4. after everything is closed the engine is empty.
//!
//! After every step the plans, running flags, routes, pending rotation
//! moves and contention state are compared with a full replan
//! (`check_against_full_replan`): the incremental planner must give the
//! same result. Four workloads: mixed, without cpu-wide flexible
//! breakpoints, contended task breakpoints only (the incremental path for
//! flexible ones), and all pinned.

use std::collections::{BTreeMap, BTreeSet};

use hwbp_engine::request::validate;
use hwbp_engine::{BpId, Config, Engine, EngineError, Pid, Request, Scope};
use hwbp_kern::{Access, CpuId, CpuPlan, Piece, Token};
use proptest::prelude::*;

const CPUS: u32 = 3;
const PIDS: [Pid; 3] = [1, 2, 3];
const ROTATION: u64 = 4_000_000;

#[derive(Clone, Debug)]
struct ModelBp {
    scope: Scope,
    pieces: Vec<Piece>,
    pinned: bool,
    exclusive: bool,
    enabled: bool,
    alive: bool,
}

/// The definition, by enumeration: for every CPU and every task that could
/// be running there (or none), count the distinct slots that would have to
/// be armed. Identical (scope, piece) pairs are one slot; an exclusive
/// breakpoint needs all four.
fn admissible(bps: &[&ModelBp]) -> bool {
    let applies = |s: &Scope, c: CpuId| s.applies_to(c);
    for c in 0..CPUS {
        for running in PIDS.iter().map(Some).chain([None]) {
            let mut slots = BTreeSet::new();
            let mut exclusive = 0;
            for bp in bps.iter().filter(|b| applies(&b.scope, c)) {
                let visible = match bp.scope {
                    Scope::Task { pid, .. } => running == Some(&pid),
                    Scope::Cpu(_) | Scope::AllCpus => true,
                };
                if !visible {
                    continue;
                }
                if bp.exclusive {
                    exclusive += 4;
                } else {
                    slots.extend(bp.pieces.iter().map(|p| (bp.scope, *p)));
                }
            }
            if slots.len() + exclusive > 4 {
                return false;
            }
        }
    }
    for pid in PIDS {
        let mut slots = BTreeSet::new();
        let mut exclusive = 0;
        for bp in bps.iter().filter(|b| b.scope.pid() == Some(pid)) {
            if bp.exclusive {
                exclusive += bp.pieces.len();
            } else {
                slots.extend(bp.pieces.iter().map(|p| (bp.scope, *p)));
            }
        }
        if slots.len() + exclusive > 16 {
            return false;
        }
    }
    true
}

#[derive(Clone, Debug)]
enum Op {
    Open(Request),
    Close(usize),
    Modify(usize, Request),
    Enable(usize, bool),
    Exit(Pid),
    Advance(u64),
}

fn scope_strategy() -> impl Strategy<Value = Scope> {
    prop_oneof![
        3 => (1..=3u32).prop_map(|pid| Scope::Task { pid, cpu: None }),
        2 => (1..=3u32, 0..CPUS).prop_map(|(pid, c)| Scope::Task { pid, cpu: Some(c) }),
        2 => (0..CPUS).prop_map(Scope::Cpu),
        1 => Just(Scope::AllCpus),
        1 => Just(Scope::Cpu(CPUS)),
    ]
}

fn request_strategy() -> impl Strategy<Value = Request> {
    let addr = prop_oneof![4 => (0..5u64).prop_map(|k| 0x1000 + 8 * k), 1 => 0x1000..0x1030u64];
    let len = prop_oneof![6 => Just(4u64), 2 => Just(8u64), 1 => Just(1u64), 1 => Just(2u64), 1 => 3..20u64, 1 => Just(0u64)];
    let access = prop_oneof![4 => Just(Access::Write), 2 => Just(Access::ReadWrite), 1 => Just(Access::Exec)];
    (scope_strategy(), addr, len, access, any::<bool>(), prop::bool::weighted(0.1), prop::bool::weighted(0.15)).prop_map(
        |(scope, addr, len, access, pinned, exclusive, disabled)| Request {
            pinned,
            exclusive,
            disabled,
            ..Request::new(scope, addr, len, access)
        },
    )
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => request_strategy().prop_map(Op::Open),
        2 => any::<usize>().prop_map(Op::Close),
        2 => (any::<usize>(), request_strategy()).prop_map(|(i, r)| Op::Modify(i, r)),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(i, b)| Op::Enable(i, b)),
        1 => (1..=3u32).prop_map(Op::Exit),
        2 => prop_oneof![Just(0u64), Just(1_000_000u64), Just(ROTATION)].prop_map(Op::Advance),
    ]
}

struct Harness {
    e: Engine,
    model: BTreeMap<BpId, ModelBp>,
    now: u64,
}

impl Harness {
    fn new() -> Harness {
        Harness { e: Engine::new(Config::new(CPUS)), model: BTreeMap::new(), now: 0 }
    }

    fn pick(&self, i: usize) -> Option<BpId> {
        (!self.model.is_empty()).then(|| *self.model.keys().nth(i % self.model.len()).unwrap())
    }

    fn live_pinned(&self, except: Option<BpId>) -> Vec<&ModelBp> {
        self.model.iter().filter(|(id, b)| b.pinned && b.alive && Some(**id) != except).map(|(_, b)| b).collect()
    }

    /// What the engine must answer for `req` replacing `except` (or new).
    fn expected(&self, req: &Request, except: Option<BpId>) -> Result<ModelBp, EngineError> {
        if req.scope.cpu().is_some_and(|c| c >= CPUS) {
            return Err(EngineError::NoSuchCpu);
        }
        let pieces = validate(req)?;
        let bp = ModelBp {
            scope: req.scope,
            pieces,
            pinned: req.pinned,
            exclusive: req.exclusive,
            enabled: !req.disabled,
            alive: true,
        };
        if req.pinned {
            let mut set = self.live_pinned(except);
            set.push(&bp);
            if !admissible(&set) {
                return Err(EngineError::NoSpace(""));
            }
        }
        Ok(bp)
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Open(req) => {
                let want = self.expected(req, None);
                let got = self.e.open(req, 0, self.now);
                match (&want, &got) {
                    (Ok(bp), Ok(id)) => {
                        prop_assert_eq!(self.e.pieces(*id).unwrap(), &bp.pieces[..]);
                        self.model.insert(*id, bp.clone());
                    }
                    (Err(w), Err(g)) => prop_assert_eq!(w.errno(), g.errno(), "{:?} vs {:?}", w, g),
                    _ => prop_assert!(false, "open {:?}: model {:?}, engine {:?}", req, want, got),
                }
            }
            Op::Close(i) => {
                if let Some(id) = self.pick(*i) {
                    self.e.close(id, self.now).unwrap();
                    self.model.remove(&id);
                }
            }
            Op::Modify(i, req) => {
                let Some(id) = self.pick(*i) else { return Ok(()) };
                let req = Request { scope: self.model[&id].scope, ..*req };
                let want = if self.model[&id].alive { self.expected(&req, Some(id)) } else { Err(EngineError::Ended) };
                let before = self.e.tokens(id).unwrap().to_vec();
                let got = self.e.modify(id, &req, self.now);
                match (&want, &got) {
                    (Ok(bp), Ok(())) => {
                        self.model.insert(id, bp.clone());
                    }
                    (Err(w), Err(g)) => {
                        prop_assert_eq!(w.errno(), g.errno(), "{:?} vs {:?}", w, g);
                        prop_assert_eq!(self.e.tokens(id).unwrap(), &before[..], "a failed modify changed nothing");
                    }
                    _ => prop_assert!(false, "modify {:?}: model {:?}, engine {:?}", req, want, got),
                }
            }
            Op::Enable(i, on) => {
                if let Some(id) = self.pick(*i) {
                    self.e.set_enabled(id, *on, self.now).unwrap();
                    self.model.get_mut(&id).unwrap().enabled = *on;
                }
            }
            Op::Exit(pid) => {
                let ended = self.e.task_exited(*pid, self.now);
                let want: Vec<BpId> = self
                    .model
                    .iter()
                    .filter(|(_, b)| b.alive && b.scope.pid() == Some(*pid))
                    .map(|(id, _)| *id)
                    .collect();
                prop_assert_eq!(&ended, &want);
                for id in ended {
                    self.model.get_mut(&id).unwrap().alive = false;
                }
            }
            Op::Advance(dt) => self.now += dt,
        }
        self.tick_and_check()
    }

    /// Tick and check property 2 and the time invariant.
    fn tick_and_check(&mut self) -> Result<(), TestCaseError> {
        let before_ctx: Vec<_> = PIDS.iter().map(|&p| self.e.context_plan(p).copied()).collect();
        let before_cpu: Vec<CpuPlan> = (0..CPUS).map(|c| *self.e.cpu_plan(c)).collect();
        let changes = self.e.tick(self.now);
        if let Err(why) = self.e.check_against_full_replan(self.now) {
            return Err(TestCaseError::fail(why));
        }
        for (i, &p) in PIDS.iter().enumerate() {
            if self.e.context_plan(p).copied() != before_ctx[i] && self.model.values().any(|b| b.alive && b.scope.pid() == Some(p)) {
                prop_assert!(changes.tasks.contains(&p), "task {} changed unreported", p);
            }
        }
        for c in 0..CPUS {
            if *self.e.cpu_plan(c) != before_cpu[c as usize] {
                prop_assert!(changes.cpus.contains(&c), "cpu {} changed unreported", c);
            }
        }
        // Which live breakpoint owns each token.
        let mut owner: BTreeMap<Token, (Scope, Piece)> = BTreeMap::new();
        for (&id, b) in self.model.iter().filter(|(_, b)| b.alive) {
            for (t, p) in self.e.tokens(id).unwrap().iter().zip(self.e.pieces(id).unwrap()) {
                owner.insert(*t, (b.scope, *p));
            }
        }
        let mut in_plans: BTreeSet<Token> = BTreeSet::new();
        for c in 0..CPUS {
            let cpu_plan = self.e.cpu_plan(c);
            let mut worst = 0;
            for (_, cp) in cpu_plan.iter() {
                let (scope, piece) = owner.get(&cp.token).copied().ok_or_else(|| TestCaseError::fail("unowned cpu piece"))?;
                prop_assert!(matches!(scope, Scope::AllCpus) || scope == Scope::Cpu(c), "piece of {:?} on cpu {}", scope, c);
                prop_assert_eq!(piece, cp.piece);
                in_plans.insert(cp.token);
            }
            for p in PIDS {
                let Some(plan) = self.e.context_plan(p) else { continue };
                worst = worst.max(plan.on_cpu(c).count());
                prop_assert_eq!(self.e.assignment(c, Some(p)).refused(), 0);
            }
            prop_assert!(cpu_plan.len() + worst <= 4, "cpu {}: {} + {}", c, cpu_plan.len(), worst);
        }
        for p in PIDS {
            let Some(plan) = self.e.context_plan(p) else { continue };
            for cp in plan.iter() {
                let (scope, piece) = owner.get(&cp.token).copied().ok_or_else(|| TestCaseError::fail("unowned task piece"))?;
                let filter = match scope {
                    Scope::Task { pid, cpu } if pid == p => cpu,
                    _ => return Err(TestCaseError::fail(format!("piece of {scope:?} in the plan of task {p}"))),
                };
                prop_assert_eq!(cp.cpu, filter.map_or(hwbp_kern::CpuFilter::Any, hwbp_kern::CpuFilter::Only));
                prop_assert_eq!(piece, cp.piece);
                in_plans.insert(cp.token);
            }
        }
        for (&id, b) in &self.model {
            let (en, run) = self.e.times(id, self.now).unwrap();
            prop_assert!(run <= en, "breakpoint {}: running {} > enabled {}", id, run, en);
            let running = self.e.is_running(id).unwrap();
            if b.pinned && b.enabled && b.alive {
                prop_assert!(running, "enabled pinned breakpoint {} not armed", id);
            }
            let tokens = self.e.tokens(id).unwrap();
            let armed = b.alive && tokens.iter().all(|t| in_plans.contains(t));
            prop_assert_eq!(running, b.enabled && armed, "breakpoint {} running vs enabled and armed", id);
            if running && b.exclusive {
                self.check_exclusive(b, tokens)?;
            }
        }
        // A hit on a token counts for exactly the running breakpoints that
        // hold it.
        let mut users: BTreeMap<Token, Vec<BpId>> = BTreeMap::new();
        for (&id, _) in self.model.iter().filter(|(_, b)| b.alive) {
            for t in self.e.tokens(id).unwrap() {
                users.entry(*t).or_default().push(id);
            }
        }
        for (t, ids) in users {
            let mut want: Vec<BpId> = ids.into_iter().filter(|id| self.e.is_running(*id).unwrap()).collect();
            let mut got = self.e.route(t).to_vec();
            want.sort_unstable();
            got.sort_unstable();
            prop_assert_eq!(got, want, "route of token {}", t);
        }
        Ok(())
    }

    fn check_exclusive(&self, b: &ModelBp, tokens: &[Token]) -> Result<(), TestCaseError> {
        let mine = |t: &Token| tokens.contains(t);
        for c in (0..CPUS).filter(|&c| b.scope.applies_to(c)) {
            match b.scope {
                Scope::Task { pid, .. } => {
                    prop_assert!(self.e.cpu_plan(c).is_empty(), "cpu {} shares with exclusive {:?}", c, b.scope);
                    let plan = self.e.context_plan(pid).unwrap();
                    prop_assert!(plan.on_cpu(c).all(|p| mine(&p.token)));
                }
                Scope::Cpu(_) | Scope::AllCpus => {
                    prop_assert!(self.e.cpu_plan(c).iter().all(|(_, p)| mine(&p.token)));
                    for p in PIDS {
                        prop_assert_eq!(self.e.context_plan(p).map_or(0, |pl| pl.on_cpu(c).count()), 0);
                    }
                }
            }
        }
        Ok(())
    }

    /// Property 3.
    fn check_every_feasible_flexible_runs(&mut self) -> Result<(), TestCaseError> {
        let flexible: Vec<BpId> =
            self.model.iter().filter(|(_, b)| !b.pinned && b.enabled && b.alive).map(|(id, _)| *id).collect();
        let start: BTreeMap<BpId, u64> = flexible.iter().map(|&id| (id, self.e.times(id, self.now).unwrap().1)).collect();
        let rounds = self.model.values().filter(|b| !b.pinned && b.alive).count() + 3;
        for _ in 0..rounds {
            self.now += ROTATION;
            self.tick_and_check()?;
        }
        for id in flexible {
            let b = &self.model[&id];
            let mut set = self.live_pinned(None);
            set.push(b);
            if admissible(&set) {
                let run = self.e.times(id, self.now).unwrap().1;
                prop_assert!(run > start[&id], "feasible flexible {} {:?} never ran", id, b);
            }
        }
        Ok(())
    }
}

/// Every request pinned: the planner's incremental path (no flexible
/// breakpoints) is the one that runs.
fn all_pinned(op: Op) -> Op {
    match op {
        Op::Open(r) => Op::Open(Request { pinned: true, ..r }),
        Op::Modify(i, r) => Op::Modify(i, Request { pinned: true, ..r }),
        other => other,
    }
}

/// No cpu-wide flexible breakpoint: cpu-wide requests are made pinned, so
/// the planner's incremental path for flexible task breakpoints is the one
/// that runs (a full replan only after a cpu-wide change), and every step
/// is compared with a full replan.
fn no_cpu_wide_flexible(op: Op) -> Op {
    let pin = |r: Request| Request { pinned: r.pinned || r.scope.pid().is_none(), ..r };
    match op {
        Op::Open(r) => Op::Open(pin(r)),
        Op::Modify(i, r) => Op::Modify(i, pin(r)),
        other => other,
    }
}

/// Task breakpoints only, mostly flexible and few addresses, so tasks are
/// contended and rotate.
fn task_flexible_op() -> impl Strategy<Value = Op> {
    op_strategy().prop_map(|op| {
        let task = |r: Request| {
            let scope = match r.scope {
                Scope::Task { .. } => r.scope,
                Scope::Cpu(c) => Scope::Task { pid: (c % 3) + 1, cpu: Some(c % CPUS) },
                Scope::AllCpus => Scope::Task { pid: 1, cpu: None },
            };
            Request { scope, pinned: r.pinned && r.addr.is_multiple_of(3), ..r }
        };
        match op {
            Op::Open(r) => Op::Open(task(r)),
            Op::Modify(i, r) => Op::Modify(i, task(r)),
            other => other,
        }
    })
}

/// One to three flexible cpu-wide breakpoints first, then contended task
/// breakpoints: the incremental path with cpu-wide flexible ones live (a
/// task change behind them stays incremental; one that reaches them falls
/// back to a full replan).
fn beside_cpu_wide_flexible() -> impl Strategy<Value = Vec<Op>> {
    let cpu_wide = prop_oneof![(0..CPUS).prop_map(Scope::Cpu), Just(Scope::AllCpus)];
    let first = prop::collection::vec(
        (cpu_wide, 0..4u64).prop_map(|(scope, k)| Op::Open(Request::new(scope, 0x1000 + 8 * k, 4, Access::Write))),
        1..4,
    );
    (first, prop::collection::vec(task_flexible_op(), 1..60)).prop_map(|(mut a, b)| {
        a.extend(b);
        a
    })
}

fn run_model(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut h = Harness::new();
    for op in ops {
        h.apply(op)?;
    }
    h.check_every_feasible_flexible_runs()?;
    for id in h.model.keys().copied().collect::<Vec<_>>() {
        h.e.close(id, h.now).unwrap();
    }
    h.model.clear();
    h.tick_and_check()?;
    prop_assert!(h.e.is_empty(), "engine not empty after closing everything");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_the_brute_force_model(ops in prop::collection::vec(op_strategy(), 1..40)) {
        run_model(&ops)?;
    }

    #[test]
    fn engine_matches_the_brute_force_model_without_cpu_wide_flexible(
        ops in prop::collection::vec(op_strategy().prop_map(no_cpu_wide_flexible), 1..40)
    ) {
        run_model(&ops)?;
    }

    #[test]
    fn incremental_planning_of_contended_tasks_equals_a_full_replan(
        ops in prop::collection::vec(task_flexible_op(), 1..60)
    ) {
        run_model(&ops)?;
    }

    #[test]
    fn incremental_planning_beside_cpu_wide_flexible_equals_a_full_replan(ops in beside_cpu_wide_flexible()) {
        run_model(&ops)?;
    }

    #[test]
    fn engine_matches_the_brute_force_model_with_only_pinned(
        ops in prop::collection::vec(op_strategy().prop_map(all_pinned), 1..40)
    ) {
        run_model(&ops)?;
    }
}

// ---- fuzz-style: arbitrary requests never panic ----

fn wild_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        0..64u64,
        (0..64u64).prop_map(|d| u64::MAX - d),
        (0..64u64).prop_map(|d| hwbp_kern::piece::USER_END.wrapping_sub(32).wrapping_add(d)),
        (0..64u64).prop_map(|d| hwbp_kern::piece::KERNEL_START.wrapping_sub(32).wrapping_add(d)),
    ]
}

fn wild_request() -> impl Strategy<Value = Request> {
    let scope = prop_oneof![
        (any::<u32>(), prop::option::of(any::<u32>())).prop_map(|(pid, cpu)| Scope::Task { pid, cpu }),
        (0..3u32, prop::option::of(0..6u32)).prop_map(|(pid, cpu)| Scope::Task { pid, cpu }),
        any::<u32>().prop_map(Scope::Cpu),
        (0..6u32).prop_map(Scope::Cpu),
        Just(Scope::AllCpus),
    ];
    let access = prop_oneof![Just(Access::Exec), Just(Access::Write), Just(Access::ReadWrite)];
    (scope, wild_u64(), wild_u64(), access, any::<[bool; 7]>(), prop_oneof![any::<u64>(), 0..3u64]).prop_map(
        |(scope, addr, len, access, f, period)| Request {
            scope,
            addr,
            len,
            access,
            pinned: f[0],
            exclusive: f[1],
            disabled: f[2],
            nosplit: f[3],
            kernel: f[4],
            period,
            stop: f[6],
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_requests_never_panic_and_admitted_pieces_cover_the_range(
        reqs in prop::collection::vec((wild_request(), any::<bool>()), 1..12)
    ) {
        let mut e = Engine::new(Config::new(4));
        let mut ids = Vec::new();
        for (req, modify) in &reqs {
            let result = if *modify && !ids.is_empty() {
                let id = ids[ids.len() - 1];
                e.modify(id, req, 0).map(|()| id)
            } else {
                e.open(req, 0, 0)
            };
            e.tick(0);
            let Ok(id) = result else { continue };
            if !ids.contains(&id) {
                ids.push(id);
            }
            let pieces = e.pieces(id).unwrap();
            prop_assert!((1..=4).contains(&pieces.len()));
            prop_assert!(pieces.iter().all(|p| p.addr() % p.len().bytes() == 0));
            if req.access == Access::Exec {
                prop_assert_eq!(pieces.len(), 1);
                prop_assert_eq!(pieces[0].addr(), req.addr);
            } else {
                let mut next = req.addr;
                for p in pieces {
                    prop_assert_eq!(p.addr(), next);
                    next = next.wrapping_add(p.len().bytes());
                }
                prop_assert_eq!(next, req.addr.wrapping_add(req.len));
            }
            prop_assert!(req.kernel || pieces.iter().all(|p| p.space() == hwbp_kern::AddressSpace::User));
        }
        for id in ids {
            e.close(id, 0).unwrap();
        }
        e.tick(0);
        prop_assert!(e.is_empty());
    }
}
