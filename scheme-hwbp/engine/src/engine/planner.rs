//! The planner: from the breakpoints to the plans the kernel arms.
//!
//! [`Engine::replan`] recomputes everything (pinned first, then flexible in
//! round-robin order, each all-or-nothing under the admission rule, and
//! chooses what the next rotation moves); [`Engine::replan_dirty_scopes`]
//! is the incremental path (with cpu-wide flexible breakpoints live, as
//! long as a task's change does not reach them):
//! it replans only the touched tasks ([`Engine::plan_task`]) and CPUs,
//! with the same result. Both install plans so that what stays keeps its
//! place. See the crate README.

use std::collections::{BTreeMap, BTreeSet};

use hwbp_kern::plan::CpuPiece;
use hwbp_kern::{ContextPiece, ContextPlan, CpuFilter, CpuId, CpuPlan, Slot, Token};

use super::{Engine, PlanChanges};

/// One task's plan computed by [`Engine::plan_task`], not yet installed.
pub(super) struct TaskPlan {
    pid: Pid,
    /// The task's live breakpoints.
    ids: Vec<BpId>,
    /// Its flexible breakpoints that fit, in order.
    running: Vec<BpId>,
    /// Their slots (the pinned ones are added when installed).
    armed: Vec<Token>,
    /// What it asks the next rotation to move.
    moves: Vec<BpId>,
    /// Smallest rotation key of a flexible breakpoint whose decision
    /// differs from its current `running` flag.
    changed_from: u64,
}
use rustc_hash::{FxHashMap, FxHashSet};
use crate::request::Scope;
use crate::{BpId, Nanos, Pid};

impl Engine {
    /// Recompute every plan: pinned first, then flexible in rotation order,
    /// each all-or-nothing, under the same rule as pinned admission.
    pub(super) fn replan(&mut self, now: Nanos) -> PlanChanges {
        self.replans.0 += 1;
        self.dirty_tasks = FxHashSet::default();
        self.dirty_cpus = FxHashSet::default();
        self.dirty_all_cpus = false;
        self.task_changed = FxHashMap::default();
        let mut cpu_wide_armed: Vec<(u64, BpId, Scope, u8)> = Vec::new();
        let mut load = self.pinned_load.clone();
        let mut placed: FxHashSet<Token> = FxHashSet::with_capacity_and_hasher(self.slots.len(), Default::default());
        let mut armed: Vec<Token> = Vec::with_capacity(self.slots.len());
        let mut running: FxHashSet<BpId> = FxHashSet::with_capacity_and_hasher(self.bps.len(), Default::default());
        for id in &self.pinned {
            let Some(bp) = self.bps.get(id) else { continue };
            if bp.enabled {
                armed.extend(bp.tokens.iter().copied());
                running.insert(*id);
            }
        }
        // The first armed flexible breakpoint so far: of all, of the
        // cpu-wide ones, of each task. Everything that can keep a
        // breakpoint from fitting is among these for its scope.
        let mut first_any: Option<BpId> = None;
        let mut first_cpu_wide: Option<BpId> = None;
        // Per task: its first armed flexible breakpoint, and whether a move
        // of it was asked for already.
        let mut first_of_task: FxHashMap<Pid, (BpId, bool)> = FxHashMap::default();
        let mut asked: Vec<(Pid, BpId)> = Vec::new();
        let mut cpu_wide_moves: Vec<BpId> = Vec::new();
        for (&key, id) in &self.rotation {
            let Some(bp) = self.bps.get(id) else { continue };
            if !bp.enabled {
                continue;
            }
            debug_assert_eq!(bp.pinned_shared, self.pinned_mask(&bp.tokens), "pinned_shared of {id} out of step");
            let (units, real) = bp.units_beside(|t| placed.contains(t));
            if load.fits(bp.req.scope, units, real).is_ok() {
                load.add(bp.req.scope, units, real);
                placed.extend(bp.tokens.iter().copied());
                armed.extend(bp.tokens.iter().copied());
                running.insert(*id);
                first_any.get_or_insert(*id);
                match bp.req.scope.pid() {
                    Some(pid) => {
                        first_of_task.entry(pid).or_insert((*id, false));
                    }
                    None => {
                        first_cpu_wide.get_or_insert(*id);
                        cpu_wide_armed.push((key, *id, bp.req.scope, units));
                    }
                }
                continue;
            }
            // Left out. If it could run beside the pinned ones alone, some
            // armed breakpoint ahead of it in the order competes for its
            // registers: of its task or cpu-wide (task scope), or any
            // (cpu-wide scope). The first such one goes to the back at the
            // next rotation, so the breakpoints ahead of this one that can
            // block it only ever decrease: it runs within as many rotations.
            let alone = bp.units_beside(|_| false).0;
            if self.pinned_load.fits(bp.req.scope, alone, real).is_err() {
                continue;
            }
            match bp.req.scope.pid() {
                Some(pid) => {
                    if let Some((first, done)) = first_of_task.get_mut(&pid)
                        && !*done
                    {
                        *done = true;
                        asked.push((pid, *first));
                    }
                    if let Some(cw) = first_cpu_wide {
                        asked.push((pid, cw));
                    }
                }
                None => cpu_wide_moves.extend(first_any),
            }
        }
        asked.sort_unstable();
        asked.dedup();
        let mut task_moves: FxHashMap<Pid, Vec<BpId>> = FxHashMap::default();
        for group in asked.chunk_by(|a, b| a.0 == b.0) {
            task_moves.insert(group[0].0, group.iter().map(|&(_, id)| id).collect());
        }
        cpu_wide_moves.sort_unstable();
        cpu_wide_moves.dedup();
        let contended = !task_moves.is_empty() || !cpu_wide_moves.is_empty();
        self.task_moves = task_moves;
        self.cpu_wide_moves = cpu_wide_moves;
        self.cpu_wide_armed = cpu_wide_armed;
        self.cpu_wide_changed = false;
        if contended && !self.contended {
            // Contention starts now: the first rotation is one period away.
            self.last_rotation = Some(now);
        }
        self.contended = contended;

        // Group the armed slots by plan, in token order.
        armed.sort_unstable();
        armed.dedup();
        let mut ctx: Vec<(Pid, ContextPiece)> = Vec::with_capacity(armed.len());
        let mut cpu: Vec<Vec<CpuPiece>> = vec![Vec::new(); self.cfg.cpus as usize];
        for token in &armed {
            let Some(slot) = self.slots.get(token) else { continue };
            let piece = slot.key.piece;
            match slot.key.scope {
                Scope::Task { pid, cpu: filter } => {
                    let cpu = filter.map_or(CpuFilter::Any, CpuFilter::Only);
                    ctx.push((pid, ContextPiece { piece, token: *token, cpu, stop: false }));
                }
                Scope::Cpu(c) => {
                    if let Some(v) = cpu.get_mut(c as usize) {
                        v.push(CpuPiece { piece, token: *token });
                    }
                }
                Scope::AllCpus => {
                    for v in cpu.iter_mut() {
                        v.push(CpuPiece { piece, token: *token });
                    }
                }
            }
        }
        // Stable: each task's pieces stay in token order.
        ctx.sort_by_key(|&(pid, _)| pid);
        let mut changes = PlanChanges::default();
        let mut planned: Vec<Pid> = Vec::new();
        let mut pieces: Vec<ContextPiece> = Vec::new();
        for group in ctx.chunk_by(|a, b| a.0 == b.0) {
            let pid = group[0].0;
            pieces.clear();
            pieces.extend(group.iter().map(|&(_, p)| p));
            if self.install_task_plan(pid, &pieces) {
                changes.tasks.push(pid);
            }
            planned.push(pid);
        }
        let gone: Vec<Pid> = self.ctx_plans.keys().copied().filter(|p| planned.binary_search(p).is_err()).collect();
        for pid in gone {
            if self.install_task_plan(pid, &[]) {
                changes.tasks.push(pid);
            }
        }
        changes.tasks.sort_unstable();
        for (c, pieces) in cpu.into_iter().enumerate() {
            if self.install_cpu_plan(c as CpuId, &pieces) {
                changes.cpus.push(c as CpuId);
            }
        }

        for (id, bp) in self.bps.iter_mut() {
            let r = running.contains(id);
            if r != bp.running {
                bp.accrue(now);
                bp.running = r;
            }
        }
        for slot in self.slots.values_mut() {
            slot.routed.clear();
            slot.routed.extend(slot.users.iter().copied().filter(|u| running.contains(u)));
        }
        changes
    }

    /// Replan only the scopes touched since the last plan, with the same
    /// result as [`Engine::replan`] (checked by the property tests), in time
    /// proportional to their breakpoints. `None` (nothing changed) when a
    /// task's change could reach a cpu-wide flexible breakpoint: then only
    /// a full replan is exact.
    ///
    /// Why it is exact: in the walk of `replan`, a task breakpoint's test
    /// reads its own task's counts and `cpu(c)` (pinned cpu-wide slots plus
    /// the cpu-wide flexible ones armed ahead of it), so given the
    /// cpu-wide flexible ones armed (`cpu_wide_armed`), each task plans
    /// alone ([`Engine::plan_task`]). A cpu-wide flexible breakpoint's test
    /// reads the tasks' counts at its place in the order; if every decision
    /// of a task that changed lies behind the last cpu-wide flexible
    /// breakpoint (and its pinned counts did not change), none of those
    /// counts changed, so neither did any cpu-wide decision, the CPU plans,
    /// nor the moves the cpu-wide ones ask for. The caller (`tick`) sends
    /// rotations and CPU-plan changes with cpu-wide flexible breakpoints
    /// live, and cpu-wide changes, to the full replan.
    pub(super) fn replan_dirty_scopes(&mut self, now: Nanos) -> Option<PlanChanges> {
        // Taken, not cleared: a set that once grew large (many opens
        // between two ticks) would cost its capacity at every tick.
        let mut tasks: Vec<Pid> = std::mem::take(&mut self.dirty_tasks).into_iter().collect();
        tasks.sort_unstable();
        let task_changed = std::mem::take(&mut self.task_changed);
        let last_cpu_wide = self.cpu_wide_rotation.keys().next_back().copied();
        if last_cpu_wide.is_none() {
            // The last cpu-wide flexible one went (with no flexible one
            // left, the tick does not replan fully).
            self.cpu_wide_armed.clear();
            self.cpu_wide_moves.clear();
        }
        let mut plans = Vec::with_capacity(tasks.len());
        for &pid in &tasks {
            let plan = self.plan_task(pid);
            if let Some(last) = last_cpu_wide {
                let unseen = task_changed.get(&pid).copied().unwrap_or(u64::MAX);
                if plan.changed_from.min(unseen) <= last {
                    // The full replan that follows plans every task.
                    return None;
                }
            }
            plans.push(plan);
        }
        let cpus: Vec<CpuId> = if std::mem::take(&mut self.dirty_all_cpus) {
            self.dirty_cpus.clear();
            (0..self.cfg.cpus).collect()
        } else {
            let mut cpus: Vec<CpuId> = std::mem::take(&mut self.dirty_cpus).into_iter().collect();
            cpus.sort_unstable();
            cpus
        };
        debug_assert!(cpus.is_empty() || self.cpu_wide_flexible == 0, "cpu plans with cpu-wide flexible ones are the full replan's");
        let mut changes = PlanChanges::default();
        for plan in plans {
            let pid = plan.pid;
            if self.apply_task_plan(plan, now) {
                changes.tasks.push(pid);
            }
        }
        let contended = !self.task_moves.is_empty() || !self.cpu_wide_moves.is_empty();
        if contended && !self.contended {
            // Contention starts now: the first rotation is one period away.
            self.last_rotation = Some(now);
        }
        self.contended = contended;
        if cpus.is_empty() {
            return Some(changes);
        }
        let all: Vec<BpId> = self.all_cpu_bps.iter().copied().collect();
        let all_armed = self.arm_pinned(&all, now);
        for c in cpus {
            let ids: Vec<BpId> = self.cpu_bps.get(c as usize).map(|s| s.iter().copied().collect()).unwrap_or_default();
            let mut armed = self.arm_pinned(&ids, now);
            armed.extend(all_armed.iter().copied());
            let pieces: Vec<CpuPiece> = armed
                .iter()
                .filter_map(|t| Some(CpuPiece { piece: self.slots.get(t)?.key.piece, token: *t }))
                .collect();
            if self.install_cpu_plan(c, &pieces) {
                changes.cpus.push(c);
            }
        }
        Some(changes)
    }

    /// Plan task `pid` alone, exactly as [`Engine::replan`] would given the
    /// cpu-wide flexible breakpoints it armed (`cpu_wide_armed`): its
    /// enabled pinned breakpoints, then its enabled flexible ones in
    /// round-robin order, each all-or-nothing against a copy of its own
    /// counts and the cpu-wide counts at its place in the order. Changes
    /// nothing; [`Engine::apply_task_plan`] installs the result.
    pub(super) fn plan_task(&self, pid: Pid) -> TaskPlan {
        let ids: Vec<BpId> = self.task_bps.get(&pid).map(|s| s.iter().copied().collect()).unwrap_or_default();
        let mut plan = TaskPlan { pid, ids, running: Vec::new(), armed: Vec::new(), moves: Vec::new(), changed_from: u64::MAX };
        if plan.ids.is_empty() {
            return plan;
        }
        let mut scratch = self.pinned_load.task_scratch(pid);
        // The pinned counts alone, for "could it run beside the pinned
        // ones": `Load::fits` for this task without a lookup per breakpoint.
        let pinned_only = scratch.clone();
        // The cpu-wide flexible breakpoints armed ahead of each of the
        // task's, added as the walk passes them.
        let ahead = &self.cpu_wide_armed;
        let mut view = (!ahead.is_empty()).then(|| self.pinned_load.cpu_view());
        let mut next_ahead = 0;
        let first_cpu_wide = ahead.first().map(|&(key, id, _, _)| (key, id));
        let no_order = BTreeMap::new();
        let order = self.task_rotation.get(&pid).unwrap_or(&no_order);
        // As in `replan`: `placed` holds the flexible slots armed so far
        // (slots are keyed by scope, so only this task's can be there).
        let mut placed: Vec<Token> = Vec::new();
        let mut first: Option<BpId> = None;
        for (&key, &id) in order {
            let Some(bp) = self.bps.get(&id) else { continue };
            if !bp.enabled {
                continue;
            }
            if let Some(view) = view.as_mut() {
                while let Some(&(k, _, scope, units)) = ahead.get(next_ahead)
                    && k < key
                {
                    view.add(scope, units);
                    next_ahead += 1;
                }
            }
            let (units, real) = bp.units_beside(|t| placed.contains(t));
            let fits = self.pinned_load.fits_scratch_on(view.as_ref(), &scratch, bp.req.scope, units, real).is_ok();
            if fits != bp.running {
                plan.changed_from = plan.changed_from.min(key);
            }
            if fits {
                scratch.add(bp.req.scope, units, real);
                placed.extend(bp.tokens.iter().copied());
                plan.armed.extend(bp.tokens.iter().copied());
                plan.running.push(id);
                first.get_or_insert(id);
                continue;
            }
            let alone = bp.units_beside(|_| false).0;
            if self.pinned_load.fits_scratch(&pinned_only, bp.req.scope, alone, real).is_ok() {
                plan.moves.extend(first);
                if let Some((k, w)) = first_cpu_wide
                    && k < key
                {
                    plan.moves.push(w);
                }
            }
        }
        plan.moves.sort_unstable();
        plan.moves.dedup();
        plan
    }

    /// Install what [`Engine::plan_task`] computed: running flags (times
    /// accrued), routes of the task's slots, the moves it asks of the next
    /// rotation, its plan; `true` if its plan changed.
    fn apply_task_plan(&mut self, plan: TaskPlan, now: Nanos) -> bool {
        let TaskPlan { pid, ids, running, mut armed, moves, .. } = plan;
        if moves.is_empty() {
            self.task_moves.remove(&pid);
        } else {
            self.task_moves.insert(pid, moves);
        }
        if ids.is_empty() {
            return self.ctx_plans.remove(&pid).is_some();
        }
        let mut running = running;
        running.sort_unstable();
        let mut tokens: Vec<Token> = Vec::new();
        let mut all_running: Vec<BpId> = Vec::with_capacity(running.len());
        for &id in &ids {
            let Some(bp) = self.bps.get_mut(&id) else { continue };
            // The enabled pinned ones are armed whatever else.
            let r = if bp.req.pinned { bp.enabled } else { running.binary_search(&id).is_ok() };
            if r && bp.req.pinned {
                armed.extend(bp.tokens.iter().copied());
            }
            if r {
                all_running.push(id);
            }
            if r != bp.running {
                bp.accrue(now);
                bp.running = r;
            }
            tokens.extend(bp.tokens.iter().copied());
        }
        tokens.sort_unstable();
        tokens.dedup();
        all_running.sort_unstable();
        for t in &tokens {
            let Some(slot) = self.slots.get_mut(t) else { continue };
            slot.routed.clear();
            // Users of a task slot are this task's breakpoints.
            slot.routed.extend(slot.users.iter().copied().filter(|u| all_running.binary_search(u).is_ok()));
        }
        armed.sort_unstable();
        armed.dedup();
        let pieces: Vec<ContextPiece> = armed
            .iter()
            .filter_map(|t| {
                let slot = self.slots.get(t)?;
                let Scope::Task { cpu, .. } = slot.key.scope else { return None };
                Some(ContextPiece { piece: slot.key.piece, token: *t, cpu: cpu.map_or(CpuFilter::Any, CpuFilter::Only), stop: false })
            })
            .collect();
        self.install_task_plan(pid, &pieces)
    }

    /// Mark the enabled ones of these pinned breakpoints running (the rest
    /// not), refresh the routes of their slots, and return their slots.
    fn arm_pinned(&mut self, ids: &[BpId], now: Nanos) -> BTreeSet<Token> {
        let mut armed = BTreeSet::new();
        let mut touched = Vec::new();
        for id in ids {
            let Some(bp) = self.bps.get_mut(id) else { continue };
            let run = bp.req.pinned && bp.enabled && bp.alive;
            if run != bp.running {
                bp.accrue(now);
                bp.running = run;
            }
            if run {
                armed.extend(bp.tokens.iter().copied());
            }
            touched.extend(bp.tokens.iter().copied());
        }
        for t in touched {
            let Some(slot) = self.slots.get(&t) else { continue };
            let routed: Vec<BpId> =
                slot.users.iter().copied().filter(|u| self.bps.get(u).is_some_and(|b| b.running)).collect();
            if let Some(slot) = self.slots.get_mut(&t) {
                slot.routed = routed;
            }
        }
        armed
    }

    /// Install task `pid`'s plan from `pieces` (token order): pieces that
    /// stay keep their index, new ones take the places of departed ones
    /// first and then go to the end, so composition keeps what stays in its
    /// register as far as the plan order can say; `true` if it changed.
    fn install_task_plan(&mut self, pid: Pid, pieces: &[ContextPiece]) -> bool {
        if pieces.is_empty() {
            return self.ctx_plans.remove(&pid).is_some();
        }
        let old = self.ctx_plans.get(&pid);
        let stays = |t: Token| pieces.iter().any(|p| p.token == t);
        let mut order: Vec<Option<ContextPiece>> =
            old.into_iter().flat_map(|p| p.iter()).map(|p| stays(p.token).then_some(*p)).collect();
        let was = |t: Token| old.is_some_and(|o| o.iter().any(|p| p.token == t));
        let mut fresh = pieces.iter().filter(|p| !was(p.token)).copied();
        for hole in order.iter_mut().filter(|p| p.is_none()) {
            *hole = fresh.next();
        }
        order.extend(fresh.map(Some));
        let mut plan = ContextPlan::EMPTY;
        for p in order.into_iter().flatten() {
            if let Err(e) = plan.push(p) {
                debug_assert!(false, "planner overfilled the plan of task {pid}: {e}");
                log::error!("hwbp-engine: internal: plan of task {pid}: {e}");
            }
        }
        if old == Some(&plan) {
            return false;
        }
        self.ctx_plans.insert(pid, plan);
        true
    }

    /// Install `cpu`'s plan: pieces that stay keep their register, new ones
    /// take the lowest free ones; `true` if it changed.
    fn install_cpu_plan(&mut self, cpu: CpuId, pieces: &[CpuPiece]) -> bool {
        let Some(old) = self.cpu_plans.get_mut(cpu as usize) else { return false };
        let mut plan = CpuPlan::EMPTY;
        let mut fresh = Vec::new();
        for p in pieces {
            match old.iter().find(|(_, o)| o.token == p.token) {
                Some((slot, _)) => plan.set(slot, Some(*p)),
                None => fresh.push(*p),
            }
        }
        let mut fresh = fresh.into_iter();
        for slot in Slot::ALL {
            if plan.get(slot).is_none() {
                match fresh.next() {
                    Some(p) => plan.set(slot, Some(p)),
                    None => break,
                }
            }
        }
        debug_assert!(fresh.next().is_none(), "planner overfilled cpu {cpu}");
        if *old == plan {
            return false;
        }
        *old = plan;
        true
    }
}
