//! From "which breakpoints run" to the plans, change by change.
//!
//! Every change of a breakpoint's `running` flag goes through
//! [`Engine::set_running`], which accrues its times, updates the routes of
//! its slots and counts its slots in the plan of its task or CPUs (a slot
//! is in a plan while at least one running user holds it). A plan whose
//! set of slots changed is rebuilt at the end of the tick
//! ([`Engine::install_plans`]), from at most 16 slots (task) or 4 (CPU):
//! nothing here ever walks the breakpoints of a task or of the engine.

use hwbp_kern::plan::CpuPiece;
use hwbp_kern::{ContextPiece, ContextPlan, CpuFilter, CpuId, CpuPlan, Slot, Token};

use crate::request::{MAX_PIECES, Scope};
use crate::{BpId, Nanos, Pid};

use super::{Engine, PlanChanges};

/// Running users per slot of one plan (a handful of slots: a linear list).
pub(super) type SlotUses = Vec<(Token, u32)>;

/// Count one running user more (`up`) or less of `token` in `uses`;
/// whether the slot entered or left the plan.
fn count(uses: &mut SlotUses, token: Token, up: bool) -> bool {
    match uses.iter().position(|(t, _)| *t == token) {
        Some(i) if up => {
            uses[i].1 += 1;
            false
        }
        Some(i) => {
            uses[i].1 -= 1;
            if uses[i].1 == 0 {
                uses.swap_remove(i);
                return true;
            }
            false
        }
        None if up => {
            uses.push((token, 1));
            true
        }
        None => {
            debug_assert!(false, "slot {token} left a plan it was not in");
            false
        }
    }
}

impl Engine {
    /// Arm (`run`) or disarm breakpoint `id` in the plans.
    pub(super) fn set_running(&mut self, id: BpId, run: bool, now: Nanos) {
        let Some(bp) = self.bps.get_mut(&id) else { return };
        if bp.running == run {
            return;
        }
        bp.accrue(now);
        bp.running = run;
        let scope = bp.req.scope;
        // A breakpoint has at most MAX_PIECES slots: copied out, so the
        // slot table and the plans can change below.
        let mut tokens = [0 as Token; MAX_PIECES];
        let n = bp.tokens.len().min(MAX_PIECES);
        tokens[..n].copy_from_slice(&bp.tokens[..n]);
        for &token in &tokens[..n] {
            if let Some(slot) = self.slots.get_mut(&token) {
                if run {
                    slot.routed.push(id);
                } else if let Some(at) = slot.routed.iter().position(|&u| u == id) {
                    slot.routed.swap_remove(at);
                }
            }
            self.count_in_plan(scope, token, run);
        }
        self.dirty = true;
    }

    fn count_in_plan(&mut self, scope: Scope, token: Token, up: bool) {
        match scope {
            Scope::Task { pid, .. } => {
                let uses = self.task_slots.entry(pid).or_default();
                if count(uses, token, up) {
                    self.plans_to_build.insert(pid);
                }
                if uses.is_empty() {
                    self.task_slots.remove(&pid);
                }
            }
            Scope::Cpu(c) => self.count_on_cpu(c, token, up),
            Scope::AllCpus => {
                for c in 0..self.cfg.cpus {
                    self.count_on_cpu(c, token, up);
                }
            }
        }
    }

    fn count_on_cpu(&mut self, cpu: CpuId, token: Token, up: bool) {
        if let Some(uses) = self.cpu_slots.get_mut(cpu as usize)
            && count(uses, token, up)
            && let Some(flag) = self.cpu_plans_to_build.get_mut(cpu as usize)
        {
            *flag = true;
        }
    }

    /// Rebuild the plans whose slots changed; report those that changed.
    pub(super) fn install_plans(&mut self) -> PlanChanges {
        let mut changes = PlanChanges::default();
        // Taken, not drained: the set keeps no capacity from a tick that
        // built many plans.
        for pid in std::mem::take(&mut self.plans_to_build) {
            let pieces = self.task_pieces(pid);
            if self.install_task_plan(pid, &pieces) {
                changes.tasks.push(pid);
            }
        }
        changes.tasks.sort_unstable();
        for c in 0..self.cfg.cpus {
            if std::mem::take(&mut self.cpu_plans_to_build[c as usize]) {
                let pieces = self.cpu_pieces(c);
                if self.install_cpu_plan(c, &pieces) {
                    changes.cpus.push(c);
                }
            }
        }
        changes
    }

    /// Task `pid`'s armed slots as plan pieces, in token order.
    pub(super) fn task_pieces(&self, pid: Pid) -> Vec<ContextPiece> {
        let mut tokens: Vec<Token> = self.task_slots.get(&pid).map_or_else(Vec::new, |u| u.iter().map(|(t, _)| *t).collect());
        tokens.sort_unstable();
        tokens
            .iter()
            .filter_map(|t| {
                let slot = self.slots.get(t)?;
                let Scope::Task { cpu, .. } = slot.key.scope else { return None };
                Some(ContextPiece { piece: slot.key.piece, token: *t, cpu: cpu.map_or(CpuFilter::Any, CpuFilter::Only), stop: slot.key.stop })
            })
            .collect()
    }

    /// `cpu`'s armed slots as plan pieces, in token order.
    pub(super) fn cpu_pieces(&self, cpu: CpuId) -> Vec<CpuPiece> {
        let mut tokens: Vec<Token> =
            self.cpu_slots.get(cpu as usize).map_or_else(Vec::new, |u| u.iter().map(|(t, _)| *t).collect());
        tokens.sort_unstable();
        tokens.iter().filter_map(|t| Some(CpuPiece { piece: self.slots.get(t)?.key.piece, token: *t })).collect()
    }

    /// Install task `pid`'s plan from `pieces` (token order): pieces that
    /// stay keep their index, new ones take the places of departed ones
    /// first and then go to the end, so composition keeps what stays in its
    /// register as far as the plan order can say; `true` if it changed.
    pub(super) fn install_task_plan(&mut self, pid: Pid, pieces: &[ContextPiece]) -> bool {
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
    pub(super) fn install_cpu_plan(&mut self, cpu: CpuId, pieces: &[CpuPiece]) -> bool {
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
