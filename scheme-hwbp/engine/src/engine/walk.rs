//! The walks: which flexible breakpoints of a domain are armed, decided
//! exactly as the definition (`reference.rs`: every breakpoint in
//! round-robin order, each armed all-or-nothing if it fits beside what is
//! armed ahead of it), while testing only the breakpoints that can be
//! armed.
//!
//! A walk keeps a cursor in the domain's round-robin order and takes, as
//! the next breakpoint to test, the first one after the cursor among
//!
//! - the classes still *live* (`index.rs`): once a breakpoint of a class
//!   did not fit, none after it fits either, because the counts the test
//!   reads only grow along the order (the domain's own, the cpu-wide ones
//!   a task sees, the tasks' ones a cpu-wide breakpoint sees); the class
//!   is dead for the rest of the walk;
//! - the *sharers*: a breakpoint that shares a slot with one armed ahead of
//!   it needs fewer units than its class, so it may fit although its class
//!   is dead. Slots are reference-counted per scope, so the sharers of
//!   the slots the walk armed are found through the slot table.
//!
//! Everything else after the cursor belongs to a dead class and shares
//! nothing armed: the definition would test it and leave it out. So a walk
//! tests at most (breakpoints it arms + classes + sharers) breakpoints, each
//! found with one ordered-map lookup (and a heap of the live classes'
//! heads): O(log N) per armed breakpoint, never O(N). The plans hold at most 16 pieces per task and 4
//! registers per CPU, so that is a handful.
//!
//! Three walks, one per way the domains depend on each other:
//! `walk_task` (one task, against the cpu-wide breakpoints the last
//! cpu-wide walk armed), `walk_cpu_wide` (the cpu-wide domain, against the
//! tasks' counts in `Reach`), and `walk_everything` (all domains at once,
//! in one merged order: what the definition does, skipping as above).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::ops::Bound;

use hwbp_kern::Token;

use crate::load::{CpuView, TaskScratch};
use crate::request::Scope;
use crate::{BpId, Pid};

use super::index::{Armed, Domain, Place};
use super::Engine;

/// The next breakpoint a walk tests.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    key: u64,
    id: BpId,
    /// Its class's index in the domain, when it came from a live class
    /// (`None`: a sharer of a dead class).
    class: Option<usize>,
}

/// One domain's walk in progress.
struct Walk {
    /// Every breakpoint at or before this key is decided.
    cursor: Option<u64>,
    /// The first undecided breakpoint of each live class, by key: (key,
    /// class index in the domain). A dead class has no entry.
    heads: BinaryHeap<Reverse<(u64, usize)>>,
    /// Sharers of armed slots not yet tested, by key.
    sharers: BTreeMap<u64, BpId>,
    /// Slots armed so far (this domain's only: slots are per scope).
    placed: Vec<Token>,
    armed: Vec<Armed>,
}

/// What a walk decided for its domain.
pub(super) struct WalkResult {
    pub armed: Vec<Armed>,
    pub last_left_out: Option<u64>,
}

impl Walk {
    fn new(domain: &Domain) -> Walk {
        let heads = domain
            .classes()
            .iter()
            .enumerate()
            .filter_map(|(i, (_, order))| Some(Reverse((*order.keys().next()?, i))))
            .collect();
        Walk { cursor: None, heads, sharers: BTreeMap::new(), placed: Vec::new(), armed: Vec::new() }
    }

    /// The earliest of the live classes' heads and the pending sharers.
    fn peek(&self, domain: &Domain) -> Option<Candidate> {
        let sharer = self.sharers.first_key_value().map(|(&key, &id)| Candidate { key, id, class: None });
        let head = self.heads.peek().and_then(|&Reverse((key, i))| {
            let id = *domain.classes()[i].1.get(&key)?;
            Some(Candidate { key, id, class: Some(i) })
        });
        match (head, sharer) {
            // The same breakpoint both ways: as its class's head, so that a
            // failure kills the class.
            (Some(h), Some(s)) => Some(if h.key <= s.key { h } else { s }),
            (h, s) => h.or(s),
        }
    }

    /// `c` is decided; its class stays live (its next one becomes the
    /// head) unless `dead`.
    fn taken(&mut self, domain: &Domain, c: &Candidate, dead: bool) {
        self.cursor = Some(c.key);
        self.sharers.remove(&c.key);
        if let Some(i) = c.class {
            self.heads.pop();
            if !dead
                && let Some((&next, _)) = domain.classes()[i].1.range((Bound::Excluded(c.key), Bound::Unbounded)).next()
            {
                self.heads.push(Reverse((next, i)));
            }
        }
    }
}

impl Engine {
    /// Test `c` with `fits(scope, units, real)` (units and pieces beside the
    /// slots armed so far) and arm it, or declare its class dead. Returns
    /// what it armed.
    fn visit(&self, walk: &mut Walk, domain: &Domain, c: Candidate, fits: impl FnOnce(Scope, u8, u8) -> bool) -> Option<Armed> {
        let Some(bp) = self.bps.get(&c.id) else {
            walk.taken(domain, &c, false);
            return None;
        };
        let (units, real) = bp.units_beside(|t| walk.placed.contains(t));
        if !fits(bp.req.scope, units, real) {
            walk.taken(domain, &c, true);
            return None;
        }
        walk.taken(domain, &c, false);
        let armed = Armed { key: c.key, id: c.id, scope: bp.req.scope, units, real };
        walk.armed.push(armed);
        for t in &bp.tokens {
            if walk.placed.contains(t) {
                continue;
            }
            walk.placed.push(*t);
            if !bp.shared {
                continue;
            }
            let Some(slot) = self.slots.get(t) else { continue };
            for &u in &slot.users {
                let Some(other) = self.bps.get(&u) else { continue };
                if let (Place::Class(_), Some(key)) = (other.place, other.rotation_key)
                    && key > c.key
                {
                    walk.sharers.insert(key, u);
                }
            }
        }
        Some(armed)
    }

    /// The rotation key of the last breakpoint of `domain` left out although
    /// it could run beside the pinned ones alone, given what the walk armed.
    fn last_left_out(&self, domain: &Domain, armed: &[Armed]) -> Option<u64> {
        let was_armed = |key: u64| armed.binary_search_by_key(&key, |a| a.key).is_ok();
        domain
            .classes()
            .iter()
            .filter(|(class, _)| self.pinned_load.fits(class.scope, class.units(), class.real()).is_ok())
            .filter_map(|(_, order)| order.keys().rev().copied().find(|&k| !was_armed(k)))
            .max()
    }

    /// Task `pid`'s walk against the cpu-wide breakpoints the last cpu-wide
    /// walk armed (each counted from its place in the order on).
    pub(super) fn walk_task(&self, pid: Pid) -> WalkResult {
        let Some(domain) = self.tasks.get(&pid) else { return WalkResult { armed: Vec::new(), last_left_out: None } };
        let mut scratch = self.pinned_load.task_scratch(pid);
        let mut steps = self.cpu_wide.steps().peekable();
        let mut view = steps.peek().is_some().then(|| self.pinned_load.cpu_view());
        let mut walk = Walk::new(domain);
        while let Some(c) = walk.peek(domain) {
            if let Some(view) = view.as_mut() {
                while let Some((_, scope, units)) = steps.next_if(|&(k, _, _)| k < c.key) {
                    view.add(scope, units);
                }
            }
            let fits = |scope, units, real| self.pinned_load.fits_scratch_on(view.as_ref(), &scratch, scope, units, real).is_ok();
            if let Some(a) = self.visit(&mut walk, domain, c, fits) {
                scratch.add(a.scope, a.units, a.real);
            }
        }
        let last_left_out = self.last_left_out(domain, &walk.armed);
        WalkResult { armed: walk.armed, last_left_out }
    }

    /// The cpu-wide walk against every task's counts as `Reach` has them.
    pub(super) fn walk_cpu_wide(&self) -> WalkResult {
        let domain = &self.cpu_wide;
        let mut view = self.pinned_load.cpu_view();
        let mut walk = Walk::new(domain);
        while let Some(c) = walk.peek(domain) {
            let reached = |cpu| self.cross.as_ref().map_or(0, |x| x.reach.level_before(cpu, c.key));
            let max_task = |cpu| self.pinned_load.max_task(cpu).max(reached(cpu));
            if let Some(a) = self.visit(&mut walk, domain, c, |scope, units, _| view.cpu_wide_fits(scope, units, max_task)) {
                view.add(a.scope, a.units);
            }
        }
        let last_left_out = self.last_left_out(domain, &walk.armed);
        WalkResult { armed: walk.armed, last_left_out }
    }

    /// Every domain at once, in one merged order: the cpu-wide breakpoints
    /// see the tasks' counts and the tasks the cpu-wide ones as the walk
    /// goes. O(domains x what each arms): used when a cpu-wide decision
    /// changed, which changes what every task may hold behind it.
    pub(super) fn walk_everything(&self) -> (WalkResult, Vec<(Pid, WalkResult)>) {
        let pids: Vec<Pid> = self.tasks.keys().copied().collect();
        // Domain 0 is the cpu-wide one, domain i > 0 task pids[i - 1].
        let domains: Vec<&Domain> = std::iter::once(&self.cpu_wide).chain(self.tasks.values()).collect();
        let domain = |i: usize| domains[i];
        let mut walks: Vec<Walk> = (0..=pids.len()).map(|i| Walk::new(domain(i))).collect();
        let mut scratches: Vec<TaskScratch> = pids.iter().map(|&p| self.pinned_load.task_scratch(p)).collect();
        // The cpu-wide counts (pinned and armed so far), and the highest
        // count the tasks' flexible breakpoints brought any task to so far,
        // on every CPU (`any`) and per CPU (`only`).
        let mut view: CpuView = self.pinned_load.cpu_view();
        let mut levels_any = 0u8;
        let mut levels_only = vec![0u8; self.cfg.cpus as usize];
        let mut next: BinaryHeap<Reverse<(u64, usize)>> =
            (0..walks.len()).filter_map(|i| Some(Reverse((walks[i].peek(domain(i))?.key, i)))).collect();
        while let Some(Reverse((_, i))) = next.pop() {
            let Some(c) = walks[i].peek(domain(i)) else { continue };
            if i == 0 {
                let max_task = |cpu: u32| {
                    let only = levels_only.get(cpu as usize).copied().unwrap_or(0);
                    self.pinned_load.max_task(cpu).max(levels_any).max(only)
                };
                if let Some(a) = self.visit(&mut walks[0], domain(0), c, |scope, units, _| view.cpu_wide_fits(scope, units, max_task)) {
                    view.add(a.scope, a.units);
                }
            } else {
                let scratch = &mut scratches[i - 1];
                let fits = |scope, units, real| self.pinned_load.fits_scratch_on(Some(&view), scratch, scope, units, real).is_ok();
                if let Some(a) = self.visit(&mut walks[i], domain(i), c, fits) {
                    scratch.add(a.scope, a.units, a.real);
                    levels_any = levels_any.max(scratch.any());
                    for &(cpu, o) in scratch.only() {
                        if let Some(l) = levels_only.get_mut(cpu as usize) {
                            *l = (*l).max(scratch.any().saturating_add(o));
                        }
                    }
                }
            }
            if let Some(c) = walks[i].peek(domain(i)) {
                next.push(Reverse((c.key, i)));
            }
        }
        let mut results: Vec<WalkResult> = walks
            .into_iter()
            .enumerate()
            .map(|(i, w)| {
                let last_left_out = self.last_left_out(domain(i), &w.armed);
                WalkResult { armed: w.armed, last_left_out }
            })
            .collect();
        let tasks = results.split_off(1);
        let cpu_wide = results.pop().expect("the cpu-wide walk is first");
        (cpu_wide, pids.into_iter().zip(tasks).collect())
    }
}
