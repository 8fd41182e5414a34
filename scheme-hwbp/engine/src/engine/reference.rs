//! The definition of the plans, and the test aid that holds the planner to
//! it.
//!
//! [`Engine::reference`] is the planner as the README states it, in its
//! plainest form: start from the pinned accounting (every enabled pinned
//! breakpoint is armed), walk *every* live enabled flexible breakpoint in
//! round-robin order and arm each all-or-nothing if it passes the
//! admission test beside what is armed so far; a left-out one that could
//! run beside the pinned ones alone asks the next rotation to move the
//! first armed breakpoint ahead of it that competes for its registers.
//! O(all breakpoints) per call: the planner never runs it, the property
//! tests compare the planner's result with it after every step
//! ([`Engine::check_against_full_replan`]).

use hwbp_kern::Token;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::request::Scope;
use crate::{BpId, Nanos, Pid};

use super::index::{DomainId, Place};
use super::Engine;

/// What the definition arms and asks for.
pub(super) struct Reference {
    pub running: FxHashSet<BpId>,
    /// What the next rotation moves if every task ran (every domain's
    /// asks), sorted.
    pub moves: Vec<BpId>,
    /// What each task asks for, and the cpu-wide domain.
    pub task_asks: FxHashMap<Pid, Vec<BpId>>,
    pub cpu_wide_asks: Vec<BpId>,
}

impl Engine {
    pub(super) fn reference(&self) -> Reference {
        let mut load = self.pinned_load.clone();
        let mut placed: FxHashSet<Token> = FxHashSet::default();
        let mut running: FxHashSet<BpId> = FxHashSet::default();
        let mut order: Vec<(u64, BpId)> = Vec::new();
        for (&id, bp) in &self.bps {
            if !bp.alive || !bp.enabled {
                continue;
            }
            if bp.req.pinned {
                running.insert(id);
            } else if let Some(key) = bp.rotation_key {
                order.push((key, id));
            }
        }
        order.sort_unstable();
        // The first armed flexible breakpoint so far (one that takes a
        // register of its own: one whose every piece is in a pinned slot
        // blocks nobody): of all, of the cpu-wide ones, of each task.
        let mut first_any: Option<BpId> = None;
        let mut first_cpu_wide: Option<BpId> = None;
        let mut first_of_task: FxHashMap<Pid, (BpId, bool)> = FxHashMap::default();
        let mut task_asks: FxHashMap<Pid, Vec<BpId>> = FxHashMap::default();
        let mut cpu_wide_asks: Vec<BpId> = Vec::new();
        for &(_, id) in &order {
            let Some(bp) = self.bps.get(&id) else { continue };
            let (units, real) = bp.units_beside(|t| placed.contains(t));
            let (alone, alone_real) = bp.units_beside(|_| false);
            if load.fits(bp.req.scope, units, real).is_ok() {
                load.add(bp.req.scope, units, real);
                placed.extend(bp.tokens.iter().copied());
                running.insert(id);
                if alone_real == 0 {
                    continue;
                }
                first_any.get_or_insert(id);
                match bp.req.scope.pid() {
                    Some(pid) => {
                        first_of_task.entry(pid).or_insert((id, false));
                    }
                    None => {
                        first_cpu_wide.get_or_insert(id);
                    }
                }
                continue;
            }
            if self.pinned_load.fits(bp.req.scope, alone, alone_real).is_err() {
                continue;
            }
            match bp.req.scope.pid() {
                Some(pid) => {
                    let asks = task_asks.entry(pid).or_default();
                    if let Some((first, asked)) = first_of_task.get_mut(&pid)
                        && !*asked
                    {
                        *asked = true;
                        asks.push(*first);
                    }
                    asks.extend(first_cpu_wide);
                }
                None => cpu_wide_asks.extend(first_any),
            }
        }
        let mut moves: Vec<BpId> = task_asks.values().flatten().chain(&cpu_wide_asks).copied().collect();
        moves.sort_unstable();
        moves.dedup();
        Reference { running, moves, task_asks, cpu_wide_asks }
    }

    /// Test aid: what a rotation now moves by the definition, if the tasks
    /// `ran` ran since the last rotation (`None`: every task), sorted.
    #[doc(hidden)]
    pub fn reference_rotation(&self, ran: Option<&[Pid]>) -> Vec<BpId> {
        let r = self.reference();
        let mut moves: Vec<BpId> = r
            .task_asks
            .iter()
            .filter(|(pid, _)| ran.is_none_or(|ran| ran.contains(pid)))
            .flat_map(|(_, asks)| asks)
            .chain(&r.cpu_wide_asks)
            .copied()
            .collect();
        moves.sort_unstable();
        moves.dedup();
        moves
    }

    /// Test aid: compare the current plans, running flags, routes, pending
    /// rotation moves and contention state (computed incrementally) with
    /// the definition ([`Engine::reference`]), and the planner's indexes
    /// with the breakpoints.
    #[doc(hidden)]
    pub fn check_against_full_replan(&self, _now: Nanos) -> Result<(), String> {
        self.check_index()?;
        let reference = self.reference();
        for (id, bp) in &self.bps {
            let want = reference.running.contains(id);
            if bp.running != want {
                return Err(format!("breakpoint {id} running {} but {want} by the definition", bp.running));
            }
        }
        for (t, slot) in &self.slots {
            let mut got = slot.routed.clone();
            let mut want: Vec<BpId> = slot.users.iter().copied().filter(|u| reference.running.contains(u)).collect();
            got.sort_unstable();
            want.sort_unstable();
            want.dedup();
            if got != want {
                return Err(format!("token {t} routed to {got:?}, {want:?} by the definition"));
            }
        }
        self.check_plans(&reference.running)?;
        let moves = self.pending_moves();
        if moves != reference.moves {
            return Err(format!("next rotation moves {moves:?}, {:?} by the definition", reference.moves));
        }
        let contended = !reference.moves.is_empty();
        if self.contended != contended || self.is_contended() != contended {
            return Err(format!("contended {} ({} now), {contended} by the definition", self.contended, self.is_contended()));
        }
        Ok(())
    }

    /// Each plan holds exactly the slots of the running breakpoints of its
    /// scope, and is what installing them again would give (so nothing is
    /// left to rebuild).
    fn check_plans(&self, running: &FxHashSet<BpId>) -> Result<(), String> {
        let mut task_slots: FxHashMap<Pid, Vec<Token>> = FxHashMap::default();
        let mut cpu_slots: Vec<Vec<Token>> = vec![Vec::new(); self.cfg.cpus as usize];
        for id in running {
            let Some(bp) = self.bps.get(id) else { continue };
            match bp.req.scope {
                Scope::Task { pid, .. } => task_slots.entry(pid).or_default().extend(&bp.tokens),
                Scope::Cpu(c) => cpu_slots[c as usize].extend(&bp.tokens),
                Scope::AllCpus => cpu_slots.iter_mut().for_each(|s| s.extend(&bp.tokens)),
            }
        }
        let sorted = |mut v: Vec<Token>| {
            v.sort_unstable();
            v.dedup();
            v
        };
        let mut copy = self.clone();
        for (pid, plan) in &self.ctx_plans {
            let want = sorted(task_slots.remove(pid).unwrap_or_default());
            let got = sorted(plan.iter().map(|p| p.token).collect());
            if got != want {
                return Err(format!("plan of task {pid} holds {got:?}, {want:?} by the definition"));
            }
            if copy.install_task_plan(*pid, &self.task_pieces(*pid)) {
                return Err(format!("plan of task {pid} is not the one its slots give"));
            }
        }
        if let Some((pid, slots)) = task_slots.into_iter().find(|(_, s)| !s.is_empty()) {
            return Err(format!("task {pid} has no plan, {slots:?} by the definition"));
        }
        for (c, want) in cpu_slots.into_iter().enumerate() {
            let got = sorted(self.cpu_plans[c].iter().map(|(_, p)| p.token).collect());
            if got != sorted(want.clone()) {
                return Err(format!("plan of cpu {c} holds {got:?}, {:?} by the definition", sorted(want)));
            }
            if copy.install_cpu_plan(c as u32, &self.cpu_pieces(c as u32)) {
                return Err(format!("plan of cpu {c} is not the one its slots give"));
            }
        }
        Ok(())
    }

    /// Every live, enabled flexible breakpoint is indexed where its state
    /// says, and nothing else is.
    fn check_index(&self) -> Result<(), String> {
        let mut indexed = 0;
        for (&id, bp) in &self.bps {
            let want = Engine::place_of(bp);
            if bp.place != want {
                return Err(format!("breakpoint {id} placed {:?}, {want:?} by its state", bp.place));
            }
            if let (Place::Class(class), Some(key)) = (bp.place, bp.rotation_key) {
                indexed += 1;
                let held = match DomainId::of(class.scope) {
                    DomainId::Task(pid) => self.tasks.get(&pid).is_some_and(|d| d.holds(class, key, id)),
                    DomainId::CpuWide => self.cpu_wide.holds(class, key, id),
                };
                if !held {
                    return Err(format!("breakpoint {id} is not in its domain's index"));
                }
            }
            if bp.place == Place::AlwaysRunning && !bp.running {
                return Err(format!("breakpoint {id} in pinned slots only does not run"));
            }
            if bp.shared != self.has_sharers(&bp.tokens) {
                return Err(format!("breakpoint {id} shared {} but its slots say otherwise", bp.shared));
            }
        }
        let total: usize = self.tasks.values().map(|d| d.len()).sum::<usize>() + self.cpu_wide.len();
        if total != indexed {
            return Err(format!("{total} breakpoints indexed, {indexed} to plan"));
        }
        self.check_cross()
    }

    /// The `Cross` (kept exactly while the cpu-wide domain is not empty)
    /// is what the task domains' last walks give.
    fn check_cross(&self) -> Result<(), String> {
        match (&self.cross, self.cpu_wide.is_empty()) {
            (None, true) => return Ok(()),
            (Some(_), true) => return Err("a Cross without cpu-wide breakpoints".to_string()),
            (None, false) => return Err("cpu-wide breakpoints without a Cross".to_string()),
            (Some(_), false) => {}
        }
        let mut fresh = self.clone();
        fresh.build_cross();
        if fresh.cross != self.cross {
            return Err("the Cross is out of step with the task domains' walks".to_string());
        }
        Ok(())
    }
}
