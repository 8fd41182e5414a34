//! Every task's register count at any place in the round-robin order, in
//! one structure: what a cpu-wide flexible breakpoint's test reads.
//!
//! A cpu-wide breakpoint `W` at rotation key `k` fits on CPU `c` if
//! `cpu(c) + units + max_t task(t, c) <= 4`, with each task's count as the
//! walk left it just before `k`: its pinned slots plus its flexible ones
//! armed ahead of `k`. A task's count on a CPU only grows along the order
//! and is at most 4, so it is a step function with at most 4 steps; the
//! maximum over tasks is one too, and reaches level `L` at the smallest
//! key at which any task reaches `L`. So per level (1-4) an ordered set of
//! (first key at which a task reaches it, task) answers
//! `max_t task(t, c)` before any key with 4 + 4 lookups, whatever the
//! number of tasks.
//!
//! Counts below a task's pinned ones are [`crate::load::Load::max_task`]'s
//! (kept for every task): the entries here are the levels its *flexible*
//! breakpoints add. A task's level on CPU `c` is `any + only(c)`; levels
//! reached through `any` alone go to the shared sets, those of CPUs where
//! the task also has CPU-bound slots to that CPU's sets.

use std::collections::BTreeSet;

use hwbp_kern::{CpuId, NUM_SLOTS};

use crate::Pid;
use crate::load::TaskScratch;
use crate::request::Scope;

use super::index::Armed;

const LEVELS: usize = NUM_SLOTS + 1;
const MAX: u8 = NUM_SLOTS as u8;

/// Task `pid` reaches `level` on `cpu` (`None`: on every CPU) at `key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ReachEntry {
    pub cpu: Option<CpuId>,
    pub level: u8,
    pub key: u64,
}

/// Per level, where tasks first reach it; see the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Reach {
    any: [BTreeSet<(u64, Pid)>; LEVELS],
    only: Vec<[BTreeSet<(u64, Pid)>; LEVELS]>,
}

impl Reach {
    pub fn new(cpus: u32) -> Reach {
        Reach { any: Default::default(), only: (0..cpus).map(|_| Default::default()).collect() }
    }

    fn set(&mut self, e: &ReachEntry) -> Option<&mut BTreeSet<(u64, Pid)>> {
        let sets = match e.cpu {
            None => &mut self.any,
            Some(c) => self.only.get_mut(c as usize)?,
        };
        sets.get_mut(usize::from(e.level))
    }

    /// Enter `pid`'s entries. Returns the smallest key after which
    /// [`Reach::level_before`] may answer otherwise (`None`: it answers as
    /// before everywhere): the earlier of a level's old and new first key,
    /// for each level whose first key changed.
    pub fn insert(&mut self, pid: Pid, entries: &[ReachEntry]) -> Option<u64> {
        self.change(pid, entries, true)
    }

    /// Take `pid`'s entries out; returns as [`Reach::insert`].
    pub fn remove(&mut self, pid: Pid, entries: &[ReachEntry]) -> Option<u64> {
        self.change(pid, entries, false)
    }

    fn change(&mut self, pid: Pid, entries: &[ReachEntry], add: bool) -> Option<u64> {
        let mut from: Option<u64> = None;
        for e in entries {
            let Some(set) = self.set(e) else { continue };
            let first = set.first().map(|&(k, _)| k);
            if add {
                set.insert((e.key, pid));
            } else {
                set.remove(&(e.key, pid));
            }
            let now = set.first().map(|&(k, _)| k);
            if now != first {
                let k = first.into_iter().chain(now).min();
                from = from.into_iter().chain(k).min();
            }
        }
        from
    }

    /// The highest count on `cpu` that some task's flexible breakpoints
    /// armed before `key` bring it to (0: none).
    pub fn level_before(&self, cpu: CpuId, key: u64) -> u8 {
        let before = |s: &BTreeSet<(u64, Pid)>| s.first().is_some_and(|&(k, _)| k < key);
        let only = self.only.get(cpu as usize);
        (1..=MAX)
            .rev()
            .find(|&l| before(&self.any[usize::from(l)]) || only.is_some_and(|o| before(&o[usize::from(l)])))
            .unwrap_or(0)
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.any.iter().chain(self.only.iter().flatten()).all(BTreeSet::is_empty)
    }
}

/// The entries of one task: the levels above its pinned counts (`pinned`)
/// that its armed flexible breakpoints (`armed`, in order) bring it to,
/// each at the first key that reaches it.
pub(super) fn entries(pinned: &TaskScratch, armed: &[Armed]) -> Vec<ReachEntry> {
    let mut out = Vec::new();
    let mut any = pinned.any();
    let mut only: Vec<(CpuId, u8)> = pinned.only().to_vec();
    let mut reached = |cpu: Option<CpuId>, from: u8, to: u8, key: u64| {
        for level in from.saturating_add(1)..=to.min(MAX) {
            out.push(ReachEntry { cpu, level, key });
        }
    };
    for a in armed.iter().filter(|a| a.units > 0) {
        match a.scope {
            Scope::Task { cpu: None, .. } => {
                let before = any;
                any = any.saturating_add(a.units);
                reached(None, before, any, a.key);
                for &(c, o) in &only {
                    reached(Some(c), before.saturating_add(o), any.saturating_add(o), a.key);
                }
            }
            Scope::Task { cpu: Some(c), .. } => {
                let o = match only.iter_mut().find(|(x, _)| *x == c) {
                    Some((_, o)) => o,
                    None => {
                        only.push((c, 0));
                        &mut only.last_mut().expect("just pushed").1
                    }
                };
                let before = any.saturating_add(*o);
                *o = o.saturating_add(a.units);
                reached(Some(c), before, any.saturating_add(*o), a.key);
            }
            Scope::Cpu(_) | Scope::AllCpus => debug_assert!(false, "cpu-wide breakpoint among a task's"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Load;
    use proptest::prelude::*;

    fn armed(key: u64, cpu: Option<CpuId>, units: u8) -> Armed {
        Armed { key, id: key, scope: Scope::Task { pid: 1, cpu }, units, real: units }
    }

    /// Brute force: task `t`'s level on `cpu` before `key`, from its pinned
    /// counts and its steps.
    fn level(pinned: &TaskScratch, steps: &[Armed], cpu: CpuId, key: u64) -> u8 {
        let only = |c: CpuId| pinned.only().iter().find(|(x, _)| *x == c).map_or(0, |&(_, o)| o);
        let mut l = pinned.any() + only(cpu);
        for a in steps.iter().filter(|a| a.key < key) {
            match a.scope {
                Scope::Task { cpu: None, .. } => l += a.units,
                Scope::Task { cpu: Some(c), .. } if c == cpu => l += a.units,
                _ => {}
            }
        }
        l
    }

    /// `level_before` at every CPU (of 3) and key up to 50.
    fn levels(reach: &Reach) -> Vec<u8> {
        (0..3).flat_map(|cpu| (0..50).map(move |key| reach.level_before(cpu, key))).collect()
    }

    /// The answers for every key up to `from` (all of them: `None`) agree.
    fn unchanged_up_to(before: &[u8], after: &[u8], from: Option<u64>) -> bool {
        let upto = from.map_or(50, |k| (k + 1).min(50) as usize);
        (0..3).all(|cpu| (0..upto).all(|key| before[cpu * 50 + key] == after[cpu * 50 + key]))
    }

    proptest! {
        /// `level_before` equals the brute-force maximum over tasks of their
        /// levels that lie above their pinned ones, at every key and CPU;
        /// an insert or remove changes no answer at or before the key it
        /// returns (none at all when it returns `None`).
        #[test]
        fn level_before_is_the_highest_task_level_ahead_of_the_key(
            tasks in prop::collection::vec(
                (0..2u8, prop::option::of((0..3u32, 1..3u8)),
                 prop::collection::vec((prop::option::of(0..3u32), 1..3u8), 0..4)),
                1..6),
        ) {
            const CPUS: u32 = 3;
            let mut reach = Reach::new(CPUS);
            let mut model = Vec::new();
            for (i, (any, only, steps)) in tasks.iter().enumerate() {
                let pid = i as Pid + 1;
                let mut load = Load::new(CPUS);
                load.add(Scope::Task { pid, cpu: None }, *any, *any);
                if let Some((c, o)) = only {
                    load.add(Scope::Task { pid, cpu: Some(*c) }, *o, *o);
                }
                let pinned = load.task_scratch(pid);
                // Keys interleave the tasks: task i's j-th step at 10 j + i.
                let mut total = *any + only.map_or(0, |(_, o)| o);
                let steps: Vec<Armed> = steps
                    .iter()
                    .enumerate()
                    .filter_map(|(j, &(cpu, units))| {
                        total += units;
                        (total <= 4).then(|| armed(10 * j as u64 + i as u64, cpu, units))
                    })
                    .collect();
                let e = entries(&pinned, &steps);
                let before = levels(&reach);
                let from = reach.insert(pid, &e);
                prop_assert!(unchanged_up_to(&before, &levels(&reach), from), "insert: a level moved at or before {:?}", from);
                model.push((pinned, steps));
            }
            for cpu in 0..CPUS {
                for key in 0..50 {
                    let want = model
                        .iter()
                        .map(|(p, s)| {
                            let l = level(p, s, cpu, key);
                            if l > level(p, &[], cpu, 0) { l } else { 0 }
                        })
                        .max()
                        .unwrap_or(0);
                    prop_assert_eq!(reach.level_before(cpu, key), want.min(4), "cpu {} key {}", cpu, key);
                }
            }
            for (i, (pinned, steps)) in model.iter().enumerate() {
                let before = levels(&reach);
                let from = reach.remove(i as Pid + 1, &entries(pinned, steps));
                prop_assert!(unchanged_up_to(&before, &levels(&reach), from), "remove: a level moved at or before {:?}", from);
            }
            prop_assert!(reach.is_empty());
        }
    }
}
