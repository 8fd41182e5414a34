//! What the cpu-wide domain needs to know of every task at once: their
//! counts along the order (`Reach`), the first breakpoint each task's walk
//! armed and the last one it left out (for what the cpu-wide breakpoints
//! and the tasks ask of each other at a rotation, `rotation.rs`).
//!
//! Kept only while the cpu-wide domain has flexible breakpoints: without
//! them no walk reads it, and a task's rotation then touches no structure
//! shared by all tasks. Built from the task domains' last walks when the
//! first cpu-wide flexible breakpoint needs it (O(tasks), once).

use std::collections::BTreeSet;

use crate::{BpId, Pid};

use super::index::Domain;
use super::reach::{Reach, ReachEntry};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Cross {
    pub reach: Reach,
    /// Every task domain's first armed breakpoint (key, id).
    pub firsts: BTreeSet<(u64, BpId)>,
    /// Every task domain's last left-out key, with the task.
    pub lasts: BTreeSet<(u64, Pid)>,
}

impl Cross {
    pub fn new(cpus: u32) -> Cross {
        Cross { reach: Reach::new(cpus), firsts: BTreeSet::new(), lasts: BTreeSet::new() }
    }

    /// Enter task `pid`'s domain (its `reach` entries up to date).
    pub fn add(&mut self, pid: Pid, d: &Domain) {
        self.reach.insert(pid, &d.reach);
        self.firsts.extend(d.first());
        self.lasts.extend(d.last_left_out.map(|l| (l, pid)));
    }

    /// Take task `pid`'s domain out, as it was entered.
    pub fn remove(&mut self, pid: Pid, d: &Domain) -> Option<u64> {
        self.remove_parts(pid, &d.reach, d.first(), d.last_left_out)
    }

    /// Take out `pid`'s entries and first and last; from which key the
    /// tasks' highest counts along the order may differ (`Reach::remove`).
    pub fn remove_parts(&mut self, pid: Pid, reach: &[ReachEntry], first: Option<(u64, BpId)>, last: Option<u64>) -> Option<u64> {
        let moved = self.reach.remove(pid, reach);
        if let Some(f) = first {
            self.firsts.remove(&f);
        }
        if let Some(l) = last {
            self.lasts.remove(&(l, pid));
        }
        moved
    }
}
