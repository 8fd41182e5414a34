//! The planner's index of flexible breakpoints: per contention domain (a
//! task, or the cpu-wide set), the breakpoints that need registers, by
//! *class*, each class in round-robin order; and what the domain's last
//! walk decided.
//!
//! Why classes: whether a breakpoint fits depends only on its scope and
//! how many register units and pieces it needs (sharing apart, see
//! `walk.rs`), and the walk's counts only grow. So once one breakpoint of a
//! class did not fit, no later one of that class fits: the walk skips the
//! rest of the class with one ordered-map lookup instead of testing each.
//! A domain has few classes (a scope per CPU filter x exclusive x 1-4
//! pieces), however many breakpoints it holds.

use std::collections::BTreeMap;

use crate::request::Scope;
use crate::{BpId, Pid};

use super::EXCLUSIVE_UNITS;

/// What a flexible breakpoint needs to be armed, sharing apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Class {
    pub scope: Scope,
    pub exclusive: bool,
    /// Pieces it adds to a plan: those not in a pinned slot (all of them
    /// for an exclusive one, whose slots are never shared). At least 1:
    /// a breakpoint whose every piece is in a pinned slot needs nothing
    /// and always runs (`Place::AlwaysRunning`).
    pub pieces: u8,
}

impl Class {
    /// Units the admission rule counts.
    pub fn units(&self) -> u8 {
        if self.exclusive { EXCLUSIVE_UNITS } else { self.pieces }
    }

    /// Pieces a context plan must hold.
    pub fn real(&self) -> u8 {
        self.pieces
    }
}

/// Where a live breakpoint sits in the planner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Place {
    /// Not planned by a walk: pinned (running while enabled), disabled,
    /// or ended.
    Out,
    /// Flexible, enabled, and every piece in a pinned slot: it takes no
    /// register of its own, so it fits wherever the pinned ones do.
    AlwaysRunning,
    /// Flexible and enabled: in its domain's index under this class.
    Class(Class),
}

/// One breakpoint a walk armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Armed {
    pub key: u64,
    pub id: BpId,
    pub scope: Scope,
    /// Units and pieces it added to the counts (fewer than its class when
    /// it shares a slot armed ahead of it).
    pub units: u8,
    pub real: u8,
}

/// The domain a scope's flexible breakpoints compete in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum DomainId {
    Task(Pid),
    CpuWide,
}

impl DomainId {
    pub fn of(scope: Scope) -> DomainId {
        scope.pid().map_or(DomainId::CpuWide, DomainId::Task)
    }
}

/// One contention domain.
#[derive(Clone, Debug, Default)]
pub(super) struct Domain {
    /// Breakpoints by class, each class by rotation key; no empty class.
    classes: Vec<(Class, BTreeMap<u64, BpId>)>,
    /// The last walk: the breakpoints it armed, in order.
    pub armed: Vec<Armed>,
    /// The last walk: the rotation key of the last breakpoint it left out
    /// that could run beside the pinned ones alone (the moves it asks for
    /// depend on it: `rotation.rs`).
    pub last_left_out: Option<u64>,
    /// Task domains: where the task's counts first reach each level
    /// (`reach.rs`), as last entered in the engine's `Cross` (not kept
    /// while there is none).
    pub reach: Vec<super::reach::ReachEntry>,
}

impl Domain {
    pub fn insert(&mut self, class: Class, key: u64, id: BpId) {
        match self.classes.iter_mut().find(|(c, _)| *c == class) {
            Some((_, order)) => {
                order.insert(key, id);
            }
            None => self.classes.push((class, BTreeMap::from([(key, id)]))),
        }
    }

    /// Remove the breakpoint at `key` from `class`; whether it was there.
    pub fn remove(&mut self, class: Class, key: u64) -> bool {
        let Some(i) = self.classes.iter().position(|(c, _)| *c == class) else { return false };
        let removed = self.classes[i].1.remove(&key).is_some();
        if self.classes[i].1.is_empty() {
            self.classes.swap_remove(i);
        }
        removed
    }

    /// Whether `id` is indexed at `key` under `class`.
    pub fn holds(&self, class: Class, key: u64, id: BpId) -> bool {
        self.classes.iter().any(|(c, order)| *c == class && order.get(&key) == Some(&id))
    }

    pub fn classes(&self) -> &[(Class, BTreeMap<u64, BpId>)] {
        &self.classes
    }

    /// Breakpoints indexed.
    pub fn len(&self) -> usize {
        self.classes.iter().map(|(_, o)| o.len()).sum()
    }

    /// No breakpoint to plan.
    pub fn is_idle(&self) -> bool {
        self.classes.is_empty()
    }

    /// No breakpoint and nothing left of the last walk.
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty() && self.armed.is_empty() && self.last_left_out.is_none()
    }

    /// The first breakpoint the last walk armed: what the domain's
    /// left-out breakpoints ask the next rotation to move.
    pub fn first(&self) -> Option<(u64, BpId)> {
        self.armed.first().map(|a| (a.key, a.id))
    }

    /// The last walk's armed breakpoints that take register units, as the
    /// walks of other domains see them: (key, scope, units).
    pub fn steps(&self) -> impl Iterator<Item = (u64, Scope, u8)> + '_ {
        self.armed.iter().filter(|a| a.units > 0).map(|a| (a.key, a.scope, a.units))
    }
}
