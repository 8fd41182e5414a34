//! The planner: after changes, bring the walks of the domains they touched
//! up to date, and only those, with the same result as walking everything
//! (the definition, `reference.rs`).
//!
//! The domains depend on each other in one way only: a task's walk reads
//! the cpu-wide breakpoints armed ahead of each of its own (their *steps*:
//! key, scope, units), and the cpu-wide walk reads every task's counts at
//! its breakpoints' places (`Reach`). So, after the changes of a tick:
//!
//! 1. each touched task is walked again against the cpu-wide steps of the
//!    last cpu-wide walk (`walk_task`); its new counts go into `Reach`;
//! 2. if the cpu-wide domain was touched, or the tasks' highest counts in
//!    `Reach` changed ahead of a cpu-wide breakpoint (`Reach::insert` says
//!    from which key), the cpu-wide domain is walked again
//!    (`walk_cpu_wide`). If
//!    its steps are the same up to the last task breakpoint's key (a task
//!    walk reads only the steps ahead of its own breakpoints), every task's
//!    walk in 1 read what it would read in a full walk, and no other
//!    task's input changed: done, and exact;
//! 3. otherwise a cpu-wide step moved ahead of task breakpoints, which
//!    changes what every task may hold behind it: all domains are walked
//!    together (`walk_everything`), O(tasks with flexible breakpoints).
//!
//! Step 3 only happens when a cpu-wide flexible breakpoint's decision
//! changes ahead of flexible task breakpoints (closing, disabling or
//! rotating an armed cpu-wide one, or a task change that frees or takes the
//! room one of them needs), or after a pinned cpu-wide change (the
//! cpu-wide counts every task sees). A new breakpoint goes to the back of
//! the order, so opening one, task or cpu-wide, never changes a decision
//! ahead of it: opens stay in steps 1-2.

use crate::{BpId, Nanos, Pid};

use super::cross::Cross;
use super::index::Armed;
use super::walk::WalkResult;
use super::{Engine, reach};

impl Engine {
    /// Bring the walks up to date with the changes since the last plan.
    pub(super) fn plan(&mut self, now: Nanos) {
        if !self.cpu_wide.is_idle() && self.cross.is_none() {
            self.build_cross();
        }
        self.plan_walks(now);
        if self.cpu_wide.is_empty() {
            // No cpu-wide walk reads it any more.
            self.cross = None;
        }
    }

    fn plan_walks(&mut self, now: Nanos) {
        if self.always_full || std::mem::take(&mut self.walk_all) {
            return self.replan_everything(now);
        }
        let mut pids: Vec<Pid> = self.walk_tasks.drain().collect();
        pids.sort_unstable();
        let mut reach_changed: Option<u64> = None;
        for pid in pids {
            let result = self.walk_task(pid);
            let from = self.apply_task_walk(pid, result, now);
            reach_changed = reach_changed.into_iter().chain(from).min();
        }
        let cpu_wide_touched = std::mem::take(&mut self.walk_cpu_wide);
        let cpu_wide_live = !self.cpu_wide.is_empty();
        // A cpu-wide breakpoint reads the tasks' counts ahead of its own
        // key only: a change behind the last one reaches none.
        let reach_reaches = reach_changed.is_some_and(|k| self.last_cpu_wide_key.is_some_and(|w| w > k));
        if cpu_wide_live && (cpu_wide_touched || reach_reaches) {
            let result = self.walk_cpu_wide();
            let changed_from = {
                let mut new = result.armed.iter().filter(|a| a.units > 0).map(|a| (a.key, a.scope, a.units));
                let mut old = self.cpu_wide.steps();
                // The first key from which task walks would read other steps.
                loop {
                    match (old.next(), new.next()) {
                        (None, None) => break None,
                        (a, b) if a == b => continue,
                        (a, b) => break a.into_iter().chain(b).map(|(k, _, _)| k).min(),
                    }
                }
            };
            if changed_from.is_some_and(|k| self.last_task_key.is_some_and(|t| t > k)) {
                return self.replan_everything(now);
            }
            self.apply_cpu_wide_walk(result, now);
        }
        self.replans.1 += 1;
    }

    /// Step 3: every domain walked at once.
    fn replan_everything(&mut self, now: Nanos) {
        self.replans.0 += 1;
        self.walk_tasks.clear();
        self.walk_cpu_wide = false;
        let (cpu_wide, tasks) = self.walk_everything();
        self.apply_cpu_wide_walk(cpu_wide, now);
        for (pid, result) in tasks {
            self.apply_task_walk(pid, result, now);
        }
    }

    /// Every task domain's last walk into a new `Cross` (its counts in
    /// `Reach` computed afresh: they are not kept without one).
    pub(super) fn build_cross(&mut self) {
        let mut cross = Cross::new(self.cfg.cpus);
        for (&pid, d) in self.tasks.iter_mut() {
            d.reach = reach::entries(&self.pinned_load.task_scratch(pid), &d.armed);
            cross.add(pid, d);
        }
        self.cross = Some(cross);
    }

    /// Install task `pid`'s walk: running flags, what it asks of the next
    /// rotation, and (while there is a `Cross`) its counts in `Reach`.
    /// Returns the key after which that changed the tasks' highest counts
    /// along the order (what the cpu-wide walk reads), if it did.
    fn apply_task_walk(&mut self, pid: Pid, result: WalkResult, now: Nanos) -> Option<u64> {
        let entries = self.cross.is_some().then(|| reach::entries(&self.pinned_load.task_scratch(pid), &result.armed));
        let d = self.tasks.get_mut(&pid)?;
        let (old_first, old_last) = (d.first(), d.last_left_out);
        let old = std::mem::replace(&mut d.armed, result.armed);
        d.last_left_out = result.last_left_out;
        let (new_first, new_last) = (d.first(), d.last_left_out);
        self.asking_own -= usize::from(Engine::asks_own(old_first, old_last));
        self.asking_own += usize::from(Engine::asks_own(new_first, new_last));
        // From which key the tasks' highest counts along the order (what
        // the cpu-wide walk reads) may have changed: not merely this task's
        // entries.
        let mut reach_changed = None;
        if let (Some(cross), Some(entries)) = (self.cross.as_mut(), entries) {
            let entries_changed = d.reach != entries;
            let old_entries = if entries_changed { std::mem::replace(&mut d.reach, entries) } else { Vec::new() };
            if entries_changed || (old_first, old_last) != (new_first, new_last) {
                let removed = cross.remove_parts(pid, &old_entries, old_first, old_last);
                let inserted = if entries_changed { cross.reach.insert(pid, &d.reach) } else { None };
                reach_changed = removed.into_iter().chain(inserted).min();
                cross.firsts.extend(new_first);
                cross.lasts.extend(new_last.map(|l| (l, pid)));
            }
        }
        // Out for a moment: `set_armed` changes the engine.
        let new = std::mem::take(&mut d.armed);
        self.set_armed(&old, &new, now);
        if let Some(d) = self.tasks.get_mut(&pid) {
            d.armed = new;
            if d.is_empty() {
                self.tasks.remove(&pid);
            }
        }
        reach_changed
    }

    fn apply_cpu_wide_walk(&mut self, result: WalkResult, now: Nanos) {
        let old = std::mem::take(&mut self.cpu_wide.armed);
        self.cpu_wide.last_left_out = result.last_left_out;
        self.set_armed(&old, &result.armed, now);
        self.cpu_wide.armed = result.armed;
    }

    /// A walk armed `new` where the last one armed `old`: the breakpoints
    /// that left run no more (unless they left the walk's index, which set
    /// their flag already), those armed run.
    fn set_armed(&mut self, old: &[Armed], new: &[Armed], now: Nanos) {
        // A walk arms a handful (sharers apart): a linear look-up then.
        const SHORT: usize = 32;
        let sorted: Vec<BpId> = if new.len() > SHORT {
            let mut ids: Vec<BpId> = new.iter().map(|a| a.id).collect();
            ids.sort_unstable();
            ids
        } else {
            Vec::new()
        };
        let armed_now = |id: BpId| {
            if new.len() > SHORT { sorted.binary_search(&id).is_ok() } else { new.iter().any(|a| a.id == id) }
        };
        for a in old {
            let walked = self.bps.get(&a.id).is_some_and(|b| matches!(b.place, super::index::Place::Class(_)));
            if walked && !armed_now(a.id) {
                self.set_running(a.id, false, now);
            }
        }
        for a in new {
            self.set_running(a.id, true, now);
        }
    }
}
