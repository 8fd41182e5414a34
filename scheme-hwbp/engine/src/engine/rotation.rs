//! Rotation: what the next rotation moves to the back of the round-robin
//! order, kept per domain so that neither the question "is anything
//! waiting?" nor a rotation costs a walk over the tasks.
//!
//! In the definition (`reference.rs`) a left-out breakpoint that could run
//! beside the pinned ones alone asks for the first armed breakpoint ahead
//! of it that competes for its registers: one of its own task (once per
//! task) or the first armed cpu-wide one (task scope), or the first armed
//! one of all (cpu-wide scope). Since the first armed one is fixed once the
//! walk passed it, what a domain asks for depends only on its first armed
//! breakpoint and its *last* left-out one (`Domain::first`,
//! `Domain::last_left_out`):
//!
//! - task `t` asks for its first `F` if `F` is ahead of its last left-out
//!   `L`, and for the first armed cpu-wide `W` if `W` is ahead of `L`;
//! - the cpu-wide domain asks for `G`, the first armed of all (the first
//!   of the tasks' firsts and `W`), if `G` is ahead of its last left-out.
//!
//! The engine counts the tasks that ask for their own first, and, while
//! there are cpu-wide flexible breakpoints, keeps every task's first and
//! last left-out in two ordered sets (`cross.rs`), so `G`, "does any task
//! ask for `W`" and "is anything contended" are O(log N).

use crate::{BpId, Pid};

use super::index::{DomainId, Place};
use super::{Engine, Rotation};

impl Engine {
    /// What task domain `d` asks the next rotation to move: (its first, if
    /// asked; whether it asks for the first armed cpu-wide one).
    fn asks(&self, first: Option<(u64, BpId)>, last_left_out: Option<u64>) -> (Option<BpId>, bool) {
        let Some(last) = last_left_out else { return (None, false) };
        let own = first.filter(|&(k, _)| k < last).map(|(_, id)| id);
        let cpu_wide = self.cpu_wide.first().is_some_and(|(k, _)| k < last);
        (own, cpu_wide)
    }

    /// Whether a task whose walk armed `first` first and left out `last`
    /// last asks for its first.
    pub(super) fn asks_own(first: Option<(u64, BpId)>, last: Option<u64>) -> bool {
        first.zip(last).is_some_and(|((f, _), l)| f < l)
    }

    /// The first armed flexible breakpoint of all domains.
    fn first_of_all(&self) -> Option<(u64, BpId)> {
        let first_task = self.cross.as_ref().and_then(|c| c.firsts.first().copied());
        match (first_task, self.cpu_wide.first()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// What the cpu-wide domain asks the next rotation to move.
    fn cpu_wide_asks(&self) -> Option<BpId> {
        let last = self.cpu_wide.last_left_out?;
        self.first_of_all().filter(|&(k, _)| k < last).map(|(_, id)| id)
    }

    /// Some domain asks for a move: a breakpoint that could run waits.
    pub(super) fn is_contended(&self) -> bool {
        self.asking_own > 0
            || self.cpu_wide_asks().is_some()
            || self.cpu_wide.first().zip(self.cross.as_ref().and_then(|c| c.lasts.last())).is_some_and(|((w, _), &(l, _))| w < l)
    }

    /// What the next rotation moves if every task ran, sorted, once each.
    pub(super) fn pending_moves(&self) -> Vec<BpId> {
        let mut moves: Vec<BpId> = Vec::new();
        for d in self.tasks.values() {
            let (own, cpu_wide) = self.asks(d.first(), d.last_left_out);
            moves.extend(own);
            if cpu_wide {
                moves.extend(self.cpu_wide.first().map(|(_, id)| id));
            }
        }
        moves.extend(self.cpu_wide_asks());
        moves.sort_unstable();
        moves.dedup();
        moves
    }

    /// Move what the domains that ran since the last rotation ask for
    /// (every task's with [`Rotation::AllTasks`]; the cpu-wide domain's
    /// always: it is on every CPU) to the back of the order, keeping their
    /// relative order, and mark their domains for a new walk.
    pub(super) fn rotate(&mut self) {
        let ran: Vec<Pid> = match self.cfg.rotation {
            Rotation::AllTasks => self.tasks.keys().copied().collect(),
            Rotation::TasksThatRan => self.ran.drain().collect(),
        };
        let mut moves: Vec<(u64, BpId)> = Vec::new();
        let cpu_wide_first = self.cpu_wide.first();
        for pid in ran {
            let Some(d) = self.tasks.get(&pid) else { continue };
            let (own, cpu_wide) = self.asks(d.first(), d.last_left_out);
            moves.extend(own.and_then(|id| Some((self.bps.get(&id)?.rotation_key?, id))));
            if cpu_wide {
                moves.extend(cpu_wide_first);
            }
        }
        moves.extend(self.cpu_wide_asks().and_then(|id| Some((self.bps.get(&id)?.rotation_key?, id))));
        moves.sort_unstable();
        moves.dedup();
        for (key, id) in moves {
            self.move_to_back(id, key);
        }
    }

    /// Give breakpoint `id` (at `key`) the next key: the back of the order.
    fn move_to_back(&mut self, id: BpId, key: u64) {
        let Some(scope) = self.bps.get(&id).map(|b| b.req.scope) else { return };
        let new_key = self.take_rotation_key(scope);
        let Some(bp) = self.bps.get_mut(&id) else { return };
        bp.rotation_key = Some(new_key);
        let Place::Class(class) = bp.place else { return };
        let domain = DomainId::of(class.scope);
        if let Some(d) = self.domain_mut(domain) {
            d.remove(class, key);
            d.insert(class, new_key, id);
        }
        self.walk_domain(domain);
    }
}
