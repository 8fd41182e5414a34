//! Slot accounting: how many debug registers each scope holds, and the
//! admission test of Linux's constraint rule in O(1) per request.
//!
//! The rule (Linux's `__reserve_bp_slot`): on every CPU `c`,
//!
//! ```text
//!     cpu(c) + max over tasks t of task(t, c)  <=  NUM_SLOTS
//! ```
//!
//! where `cpu(c)` counts the slots of cpu-wide scopes on `c` (`cpu/<c>` and
//! `cpu/all`) and `task(t, c) = any(t) + only(t, c)` the slots of task `t`
//! that apply on `c` (`task/<t>` and `task/<t>/cpu/<c>`). Any task may run
//! on any CPU, so this is exactly "in no possible simultaneous schedule do
//! more than NUM_SLOTS slots need to be armed on a CPU".
//!
//! Because the rule holds before every request, a request only needs the
//! CPUs and the task it touches:
//!
//! - task `t` on every CPU, `k` slots: `any(t) + k + max_c (cpu(c) +
//!   only(t, c)) <= N`. `only(t, c)` is zero except on the few CPUs `t`
//!   has per-CPU slots on, so the max is `max(max_c cpu(c), max over t's
//!   per-CPU entries of cpu(c) + only(t, c))`: a histogram of `cpu(c)`
//!   over CPUs gives the first term in O(N), the second is at most
//!   16 entries.
//! - task `t` on CPU `c`: `cpu(c) + any(t) + only(t, c) + k <= N`.
//! - cpu-wide on `c`: `cpu(c) + k + maxtask(c) <= N` with `maxtask(c) =
//!   max(max_t any(t), max over tasks with per-CPU slots on c of any(t) +
//!   only(t, c))`: one global histogram of `any(t)` and one histogram per
//!   CPU of the tasks that have per-CPU slots there.
//! - cpu-wide on all CPUs: the cpu-wide test on each CPU (O(CPUs), as in
//!   Linux).
//!
//! Every count is at most `NUM_SLOTS`, so a histogram is `NUM_SLOTS + 1`
//! counters and its maximum a scan of five. Nothing here depends on the
//! number of tasks or breakpoints.
//!
//! An exclusive breakpoint is accounted as `NUM_SLOTS` units, whatever its
//! piece count: it admits nothing else next to it. The `real` counts (the
//! pieces a context plan has to hold, at most `MAX_CONTEXT_PIECES`) are kept
//! apart from the units.

use hwbp_kern::plan::MAX_CONTEXT_PIECES;
use hwbp_kern::{CpuId, NUM_SLOTS};

use rustc_hash::FxHashMap;
use crate::request::Scope;
use crate::Pid;

const LEVELS: usize = NUM_SLOTS + 1;
const MAX: u8 = NUM_SLOTS as u8;

/// How many things sit at each count 0..=NUM_SLOTS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Histogram([u32; LEVELS]);

impl Histogram {
    fn add(&mut self, level: u8) {
        debug_assert!(level <= MAX, "count {level} above {MAX}");
        if let Some(c) = self.0.get_mut(usize::from(level.min(MAX))) {
            *c += 1;
        }
    }
    fn remove(&mut self, level: u8) {
        if let Some(c) = self.0.get_mut(usize::from(level.min(MAX))) {
            debug_assert!(*c > 0, "histogram underflow at {level}");
            *c = c.saturating_sub(1);
        }
    }
    /// Highest level with anything on it (0 when empty).
    fn max(&self) -> u8 {
        (1..LEVELS).rev().find(|&l| self.0[l] > 0).map_or(0, |l| l as u8)
    }
}

/// One task's slots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct TaskLoad {
    /// Slots on every CPU.
    any: u8,
    /// Slots on one CPU, per CPU; no zero entries.
    only: Vec<(CpuId, u8)>,
    /// Pieces a context plan must hold (exclusive breakpoints count their
    /// real pieces here, NUM_SLOTS units above).
    pieces: u8,
}

impl TaskLoad {
    fn only(&self, cpu: CpuId) -> u8 {
        self.only.iter().find(|(c, _)| *c == cpu).map_or(0, |&(_, n)| n)
    }
    fn is_empty(&self) -> bool {
        self.any == 0 && self.only.is_empty() && self.pieces == 0
    }
}

/// One task's counts copied out of a [`Load`], to plan that task alone:
/// [`Load::fits_scratch`] and [`TaskScratch::add`] behave as
/// [`Load::fits`] and [`Load::add`] for this task's scopes would.
#[derive(Clone, Debug)]
pub struct TaskScratch {
    pid: Pid,
    t: TaskLoad,
}

impl TaskScratch {
    /// Slots of this task on every CPU.
    pub fn any(&self) -> u8 {
        self.t.any
    }

    /// Slots of this task bound to one CPU, per CPU (no zero entries).
    pub fn only(&self) -> &[(CpuId, u8)] {
        &self.t.only
    }

    /// Count `units` more slots (`real` more pieces) of this task in `scope`.
    pub fn add(&mut self, scope: Scope, units: u8, real: u8) {
        let Scope::Task { pid, cpu } = scope else {
            debug_assert!(false, "TaskScratch::add of {scope:?}");
            return;
        };
        debug_assert_eq!(pid, self.pid, "scratch of another task");
        let t = &mut self.t;
        t.pieces = t.pieces.saturating_add(real);
        match cpu {
            None => t.any = t.any.saturating_add(units),
            Some(c) => match t.only.iter_mut().find(|(x, _)| *x == c) {
                Some(e) => e.1 = e.1.saturating_add(units),
                None if units > 0 => t.only.push((c, units)),
                None => {}
            },
        }
    }
}

/// The task test of the rule against the cpu-wide counts `cpus` (and
/// their histogram `hist`).
fn task_fits_in(
    cpus: &[u8],
    hist: &Histogram,
    t: &TaskLoad,
    cpu: Option<CpuId>,
    units: u8,
    real: u8,
) -> Result<(), &'static str> {
    if usize::from(t.pieces) + usize::from(real) > MAX_CONTEXT_PIECES {
        return Err(TOO_MANY_IN_CONTEXT);
    }
    let count = |c: CpuId| u32::from(cpus.get(c as usize).copied().unwrap_or(MAX));
    let worst = match cpu {
        None => t.only.iter().map(|&(c, o)| count(c) + u32::from(o)).fold(u32::from(hist.max()), u32::max),
        Some(c) => count(c) + u32::from(t.only(c)),
    };
    if u32::from(t.any) + u32::from(units) + worst <= u32::from(MAX) { Ok(()) } else { Err(TOO_MANY_ON_A_CPU) }
}

/// The cpu-wide counts of a [`Load`], copied, plus cpu-wide slots added
/// while planning (flexible cpu-wide breakpoints armed ahead of a task's).
#[derive(Clone, Debug)]
pub struct CpuView {
    cpu: Vec<u8>,
    hist: Histogram,
}

impl CpuView {
    /// Whether `units` more slots of the cpu-wide `scope` keep the rule,
    /// with `max_task(c)` the largest count of any one task on `c` (the
    /// cpu-wide half of [`Load::fits`], against these counts).
    pub fn cpu_wide_fits(&self, scope: Scope, units: u8, max_task: impl Fn(CpuId) -> u8) -> bool {
        let fits = |c: CpuId| {
            let here = self.cpu.get(c as usize).copied().unwrap_or(MAX);
            u32::from(here) + u32::from(units) + u32::from(max_task(c)) <= u32::from(MAX)
        };
        match scope {
            Scope::Cpu(c) => fits(c),
            Scope::AllCpus => (0..self.cpu.len() as CpuId).all(fits),
            Scope::Task { .. } => {
                debug_assert!(false, "CpuView::cpu_wide_fits of a task scope");
                false
            }
        }
    }

    /// Count `units` more slots of the cpu-wide `scope` (task scopes: no-op).
    pub fn add(&mut self, scope: Scope, units: u8) {
        let n = self.cpu.len();
        let mut one = |c: usize| {
            if let Some(v) = self.cpu.get_mut(c) {
                let new = v.saturating_add(units);
                self.hist.remove(*v);
                self.hist.add(new.min(MAX));
                *v = new;
            }
        };
        match scope {
            Scope::Cpu(c) => one(c as usize),
            Scope::AllCpus => (0..n).for_each(one),
            Scope::Task { .. } => debug_assert!(false, "CpuView::add of a task scope"),
        }
    }
}

/// Why a request does not fit.
pub const TOO_MANY_ON_A_CPU: &str = "a cpu would need more than 4 debug registers in some schedule";
pub const TOO_MANY_IN_CONTEXT: &str = "a task would hold more than 16 pinned pieces";

/// Slot counts per scope; see the module documentation for the rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Load {
    cpu: Vec<u8>,
    /// CPUs by `cpu(c)`.
    cpu_hist: Histogram,
    tasks: FxHashMap<Pid, TaskLoad>,
    /// Tasks by `any(t)` (tasks with `any(t) == 0` are not counted).
    any_hist: Histogram,
    /// Per CPU `c`: tasks with `only(t, c) > 0` by `any(t) + only(t, c)`.
    only_hist: Vec<Histogram>,
}

impl Load {
    pub fn new(cpus: u32) -> Load {
        let n = cpus as usize;
        let mut cpu_hist = Histogram::default();
        cpu_hist.0[0] = cpus;
        Load {
            cpu: vec![0; n],
            cpu_hist,
            tasks: FxHashMap::default(),
            any_hist: Histogram::default(),
            only_hist: vec![Histogram::default(); n],
        }
    }

    pub fn cpus(&self) -> u32 {
        self.cpu.len() as u32
    }

    fn cpu_count(&self, cpu: CpuId) -> u8 {
        self.cpu.get(cpu as usize).copied().unwrap_or(MAX)
    }

    /// `max_t task(t, c)`: the most slots any one task holds on `cpu`.
    pub fn max_task(&self, cpu: CpuId) -> u8 {
        let only = self.only_hist.get(cpu as usize).map_or(0, Histogram::max);
        self.any_hist.max().max(only)
    }

    /// Whether `units` more slots (`real` more pieces) in `scope` keep the
    /// rule. The caller has checked that the scope's CPU exists.
    pub fn fits(&self, scope: Scope, units: u8, real: u8) -> Result<(), &'static str> {
        let ok = |n: u32| if n <= u32::from(MAX) { Ok(()) } else { Err(TOO_MANY_ON_A_CPU) };
        match scope {
            Scope::Task { pid, cpu } => {
                let empty = TaskLoad::default();
                self.task_fits(self.tasks.get(&pid).unwrap_or(&empty), cpu, units, real)
            }
            Scope::Cpu(c) => ok(u32::from(self.cpu_count(c)) + u32::from(units) + u32::from(self.max_task(c))),
            Scope::AllCpus => (0..self.cpus())
                .try_for_each(|c| ok(u32::from(self.cpu_count(c)) + u32::from(units) + u32::from(self.max_task(c)))),
        }
    }

    /// The task half of [`Load::fits`]: task `t` (counts `t`) adding
    /// `units` slots on every CPU (`cpu: None`) or on one.
    fn task_fits(&self, t: &TaskLoad, cpu: Option<CpuId>, units: u8, real: u8) -> Result<(), &'static str> {
        task_fits_in(&self.cpu, &self.cpu_hist, t, cpu, units, real)
    }

    /// A copy of the cpu-wide counts, to add cpu-wide slots to while
    /// planning tasks against them (see [`Load::fits_scratch_on`]).
    pub fn cpu_view(&self) -> CpuView {
        CpuView { cpu: self.cpu.clone(), hist: self.cpu_hist }
    }

    /// [`Load::fits_scratch`] with the cpu-wide counts of `view` (`None`:
    /// this accounting's own).
    pub fn fits_scratch_on(
        &self,
        view: Option<&CpuView>,
        scratch: &TaskScratch,
        scope: Scope,
        units: u8,
        real: u8,
    ) -> Result<(), &'static str> {
        match (view, scope) {
            (Some(v), Scope::Task { pid, cpu }) if pid == scratch.pid => {
                task_fits_in(&v.cpu, &v.hist, &scratch.t, cpu, units, real)
            }
            _ => self.fits_scratch(scratch, scope, units, real),
        }
    }

    /// A working copy of task `pid`'s counts, for planning that one task
    /// against these cpu-wide counts without copying the whole accounting
    /// (see [`TaskScratch`]).
    pub fn task_scratch(&self, pid: Pid) -> TaskScratch {
        TaskScratch { pid, t: self.tasks.get(&pid).cloned().unwrap_or_default() }
    }

    /// [`Load::fits`] for `scratch`'s task as if `scratch` were its counts:
    /// the same answer `fits` gives after the same [`TaskScratch::add`]s
    /// had been made with [`Load::add`] (task adds change no cpu-wide
    /// count, so no other task enters).
    pub fn fits_scratch(&self, scratch: &TaskScratch, scope: Scope, units: u8, real: u8) -> Result<(), &'static str> {
        match scope {
            Scope::Task { pid, cpu } if pid == scratch.pid => self.task_fits(&scratch.t, cpu, units, real),
            _ => {
                debug_assert!(false, "fits_scratch for {scope:?}, scratch of task {}", scratch.pid);
                Err(TOO_MANY_ON_A_CPU)
            }
        }
    }

    /// Add slots; the caller has checked [`Load::fits`].
    pub fn add(&mut self, scope: Scope, units: u8, real: u8) {
        self.change(scope, i16::from(units), i16::from(real));
    }

    /// Remove slots added before.
    pub fn remove(&mut self, scope: Scope, units: u8, real: u8) {
        self.change(scope, -i16::from(units), -i16::from(real));
    }

    fn change(&mut self, scope: Scope, units: i16, real: i16) {
        let apply = |v: u8, d: i16| -> u8 {
            let n = i16::from(v) + d;
            debug_assert!((0..=i16::from(u8::MAX)).contains(&n), "slot count out of range");
            n.clamp(0, i16::from(u8::MAX)) as u8
        };
        match scope {
            Scope::Cpu(c) => self.change_cpu(c, units, apply),
            Scope::AllCpus => {
                for c in 0..self.cpus() {
                    self.change_cpu(c, units, apply);
                }
            }
            Scope::Task { pid, cpu } => {
                let t = self.tasks.entry(pid).or_default();
                t.pieces = apply(t.pieces, real);
                match cpu {
                    None => {
                        let old = t.any;
                        let new = apply(old, units);
                        if old != new {
                            if old > 0 {
                                self.any_hist.remove(old);
                            }
                            if new > 0 {
                                self.any_hist.add(new);
                            }
                            for &(c, o) in &t.only {
                                if let Some(h) = self.only_hist.get_mut(c as usize) {
                                    h.remove(old.saturating_add(o));
                                    h.add(new.saturating_add(o));
                                }
                            }
                            t.any = new;
                        }
                    }
                    Some(c) => {
                        let old = t.only(c);
                        let new = apply(old, units);
                        if let Some(h) = self.only_hist.get_mut(c as usize) {
                            if old > 0 {
                                h.remove(t.any.saturating_add(old));
                            }
                            if new > 0 {
                                h.add(t.any.saturating_add(new));
                            }
                        }
                        match (t.only.iter().position(|(x, _)| *x == c), new) {
                            (Some(i), 0) => {
                                t.only.swap_remove(i);
                            }
                            (Some(i), n) => t.only[i].1 = n,
                            (None, 0) => {}
                            (None, n) => t.only.push((c, n)),
                        }
                    }
                }
                if t.is_empty() {
                    self.tasks.remove(&pid);
                }
            }
        }
    }

    fn change_cpu(&mut self, c: CpuId, units: i16, apply: impl Fn(u8, i16) -> u8) {
        if let Some(v) = self.cpu.get_mut(c as usize) {
            let new = apply(*v, units);
            self.cpu_hist.remove(*v);
            self.cpu_hist.add(new);
            *v = new;
        }
    }

    /// Nothing accounted.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty() && self.cpu.iter().all(|&c| c == 0)
    }

    /// `cpu(c) + max_t task(t, c)`: registers the worst schedule on `cpu`
    /// needs. For tests and diagnostics.
    pub fn worst_case(&self, cpu: CpuId) -> u8 {
        self.cpu_count(cpu).saturating_add(self.max_task(cpu))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(pid: Pid) -> Scope {
        Scope::Task { pid, cpu: None }
    }
    fn task_on(pid: Pid, cpu: CpuId) -> Scope {
        Scope::Task { pid, cpu: Some(cpu) }
    }

    #[test]
    fn histograms_follow_adds_and_removes_back_to_empty() {
        let mut l = Load::new(4);
        l.add(task(1), 2, 2);
        l.add(task_on(1, 3), 1, 1);
        l.add(Scope::Cpu(2), 1, 1);
        l.add(Scope::AllCpus, 1, 1);
        assert_eq!(l.worst_case(3), 1 + 3);
        assert_eq!(l.worst_case(2), 2 + 2);
        assert_eq!(l.worst_case(0), 1 + 2);
        l.remove(task_on(1, 3), 1, 1);
        l.remove(task(1), 2, 2);
        l.remove(Scope::AllCpus, 1, 1);
        l.remove(Scope::Cpu(2), 1, 1);
        assert!(l.is_empty());
        assert_eq!(l, Load::new(4));
    }

    #[test]
    fn task_on_all_cpus_is_limited_by_the_busiest_cpu() {
        let mut l = Load::new(8);
        l.add(Scope::Cpu(5), 3, 3);
        assert!(l.fits(task(1), 1, 1).is_ok());
        assert_eq!(l.fits(task(1), 2, 2), Err(TOO_MANY_ON_A_CPU));
        assert!(l.fits(task_on(1, 4), 4, 4).is_ok());
    }

    #[test]
    fn sixteen_pieces_per_task_at_most() {
        let mut l = Load::new(8);
        for c in 0..4 {
            l.add(task_on(1, c), 4, 4);
        }
        assert_eq!(l.fits(task_on(1, 4), 1, 1), Err(TOO_MANY_IN_CONTEXT));
    }
}
