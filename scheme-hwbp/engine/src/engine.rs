//! The engine: breakpoint records, shared slots, pinned admission, the
//! planner and time accounting. See the crate's README for the algorithm.

use std::collections::BTreeMap;

use hwbp_kern::{
    Composition, ContextPlan, CpuId, CpuPlan, NUM_SLOTS, Piece, Token, compose,
};

mod planner;

use crate::error::EngineError;
use rustc_hash::{FxHashMap, FxHashSet};
use crate::load::Load;
use crate::request::{Request, Scope, validate};
use crate::{BpId, Nanos, Pid, Uid};

/// Open breakpoints a non-root uid may hold by default.
pub const DEFAULT_QUOTA_PER_UID: usize = 64;
/// Rotation period of flexible breakpoints by default: 4 ms, Linux's
/// `perf_event_mux_interval_ms` at HZ=250.
pub const DEFAULT_ROTATION_NS: Nanos = 4_000_000;
/// With at least this many breakpoints, a tick whose dirty tasks hold more
/// than half of them replans everything in one pass instead of task by
/// task (same result; one pass over the maps is cheaper than as many
/// lookups, e.g. a rotation of one task holding most breakpoints).
const FULL_REPLAN_MIN_BPS: usize = 512;
/// Units an exclusive breakpoint holds in the accounting: all of them.
const EXCLUSIVE_UNITS: u8 = NUM_SLOTS as u8;

/// Engine settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// CPUs 0..cpus exist.
    pub cpus: u32,
    /// Open breakpoints per uid (EMFILE beyond).
    pub quota_per_uid: usize,
    /// uid 0 has no quota.
    pub root_unlimited: bool,
    /// Flexible breakpoints rotate at most once per this many nanoseconds.
    pub rotation_ns: Nanos,
}

impl Config {
    /// `cpus` CPUs and the contract's defaults.
    pub fn new(cpus: u32) -> Config {
        Config {
            cpus,
            quota_per_uid: DEFAULT_QUOTA_PER_UID,
            root_unlimited: true,
            rotation_ns: DEFAULT_ROTATION_NS,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new(1)
    }
}

/// Plans that changed in a [`Engine::tick`] and must be pushed to the
/// kernel. A listed task whose [`Engine::context_plan`] is `None` now has
/// the empty plan. Tasks that exited are never listed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanChanges {
    pub tasks: Vec<Pid>,
    pub cpus: Vec<CpuId>,
}

impl PlanChanges {
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty() && self.cpus.is_empty()
    }
}

/// What makes two pieces the same register: scope, piece and whether a hit
/// stops the thread (a stopping and a counting breakpoint never share:
/// the register's piece either stops or does not); an exclusive
/// breakpoint's pieces are never shared (`owner`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct SlotKey {
    scope: Scope,
    piece: Piece,
    stop: bool,
    owner: Option<BpId>,
}

/// One shared register request: the breakpoints using it, reference
/// counted. Its token is never reused.
#[derive(Clone, Debug)]
struct SlotEntry {
    key: SlotKey,
    /// Breakpoints holding this slot.
    users: Vec<BpId>,
    /// How many of `users` are pinned; the slot is in the pinned accounting
    /// while this is non-zero.
    pinned_users: u32,
    /// Users running in the current plans: where a hit is routed.
    routed: Vec<BpId>,
}

#[derive(Clone, Debug)]
struct Bp {
    req: Request,
    uid: Uid,
    pieces: Vec<Piece>,
    /// The slot of each piece, in piece order.
    tokens: Vec<Token>,
    /// Bit `i` set: the slot of `tokens[i]` has a pinned user, so it is in
    /// the pinned accounting already (kept in step by `attach` and
    /// `detach`; saves the planner a slot lookup per piece).
    pinned_shared: u8,
    /// Not disabled by the user.
    enabled: bool,
    /// Its task has not exited.
    alive: bool,
    /// All its pieces are in the current plans.
    running: bool,
    /// Position in the flexible round-robin order.
    rotation_key: Option<u64>,
    time_enabled: Nanos,
    time_running: Nanos,
    /// Clock of the last accrual.
    last: Nanos,
}

impl Bp {
    /// Register units and new pieces this breakpoint needs to be armed,
    /// beside the pinned slots it shares and the slots `is_placed` says are
    /// armed already: (units the constraint counts, real pieces). An
    /// exclusive breakpoint needs every register.
    fn units_beside(&self, is_placed: impl Fn(&Token) -> bool) -> (u8, u8) {
        if self.req.exclusive {
            return (EXCLUSIVE_UNITS, self.tokens.len() as u8);
        }
        let shared = |i: usize| self.pinned_shared & (1 << i) != 0;
        let n = self.tokens.iter().enumerate().filter(|&(i, t)| !shared(i) && !is_placed(t)).count() as u8;
        (n, n)
    }

    fn counting_enabled(&self) -> bool {
        self.enabled && self.alive
    }

    /// Times as of `now`, without changing the record.
    fn times(&self, now: Nanos) -> (Nanos, Nanos) {
        let dt = now.saturating_sub(self.last);
        let e = if self.counting_enabled() { dt } else { 0 };
        let r = if self.running { dt } else { 0 };
        (self.time_enabled.saturating_add(e), self.time_running.saturating_add(r))
    }

    /// Fold the time since the last accrual in; call before any change of
    /// `enabled`, `alive` or `running`.
    fn accrue(&mut self, now: Nanos) {
        debug_assert!(!self.running || self.counting_enabled(), "running implies enabled");
        (self.time_enabled, self.time_running) = self.times(now);
        self.last = self.last.max(now);
    }
}

static EMPTY_CPU_PLAN: CpuPlan = CpuPlan::EMPTY;

/// The policy engine. See the crate documentation.
///
/// Invariants (checked by the property tests after every operation):
/// - `pinned_load` holds exactly the distinct slots of live pinned
///   breakpoints (exclusive ones as `NUM_SLOTS` units), and satisfies the
///   rule of [`crate::load`] on every CPU;
/// - after [`Engine::tick`], on every CPU `c`, `cpu_plan(c).len()` plus the
///   pieces of any one context plan applying on `c` is at most `NUM_SLOTS`,
///   and every planned piece belongs to a live breakpoint of that scope;
/// - a breakpoint is `running` exactly when it is enabled, alive and all its
///   slots are in the plans; a slot's `routed` lists exactly its running
///   users;
/// - tokens only grow; a retired token is in no map.
#[derive(Clone, Debug)]
pub struct Engine {
    cfg: Config,
    next_id: BpId,
    next_token: Token,
    next_rotation_key: u64,
    bps: FxHashMap<BpId, Bp>,
    slots: FxHashMap<Token, SlotEntry>,
    slot_by_key: FxHashMap<SlotKey, Token>,
    /// Slots of live pinned breakpoints (disabled ones included).
    pinned_load: Load,
    /// Live pinned breakpoints.
    pinned: FxHashSet<BpId>,
    /// Live flexible breakpoints in round-robin order.
    rotation: BTreeMap<u64, BpId>,
    /// The same order per task: each task's live flexible breakpoints
    /// (no empty entries).
    task_rotation: FxHashMap<Pid, BTreeMap<u64, BpId>>,
    /// The same order of the live cpu-wide flexible breakpoints.
    cpu_wide_rotation: BTreeMap<u64, BpId>,
    /// The cpu-wide flexible breakpoints the last full replan armed, in
    /// order: (rotation key, id, scope, units it added to `cpu(c)`).
    /// Valid until the next full replan: incremental plans never change
    /// them (see `replan_dirty_scopes`).
    cpu_wide_armed: Vec<(u64, BpId, Scope, u8)>,
    /// Per task: the smallest rotation key at or after which its armed set
    /// may have changed by a change since the last plan that the new plan
    /// cannot see (an armed breakpoint closed, modified or disabled); 0
    /// when its pinned counts changed.
    task_changed: FxHashMap<Pid, u64>,
    /// Live breakpoints of each task.
    task_bps: FxHashMap<Pid, FxHashSet<BpId>>,
    /// Open breakpoints per uid (ended ones included until closed).
    open_per_uid: FxHashMap<Uid, usize>,
    ctx_plans: FxHashMap<Pid, ContextPlan>,
    cpu_plans: Vec<CpuPlan>,
    /// Something changed since the last plan.
    dirty: bool,
    /// Scopes whose breakpoints changed since the last plan (enough while
    /// no cpu-wide flexible breakpoint is live: see
    /// [`Engine::replan_dirty_scopes`]).
    dirty_tasks: FxHashSet<Pid>,
    dirty_cpus: FxHashSet<CpuId>,
    dirty_all_cpus: bool,
    /// A cpu-wide breakpoint was opened, closed or modified since the last
    /// plan: `cpu(c)` may have changed for every task's test.
    cpu_wide_changed: bool,
    /// Live flexible breakpoints of cpu-wide scopes (while any, every
    /// replan is a full one).
    cpu_wide_flexible: usize,
    /// Benchmark aid: every replan is a full one.
    always_full: bool,
    /// Replans so far: (full, incremental). For tests and benchmarks.
    replans: (u64, u64),
    /// Live cpu-wide breakpoints per CPU, and on all CPUs.
    cpu_bps: Vec<FxHashSet<BpId>>,
    all_cpu_bps: FxHashSet<BpId>,
    /// The last plan left out a flexible breakpoint that could run beside
    /// the pinned ones.
    contended: bool,
    /// What the next rotation moves to the back of the order (see
    /// [`Engine::replan`]), asked for by the left-out breakpoints of each
    /// task (no empty entries) and by the left-out cpu-wide ones.
    task_moves: FxHashMap<Pid, Vec<BpId>>,
    cpu_wide_moves: Vec<BpId>,
    last_rotation: Option<Nanos>,
}

impl Engine {
    pub fn new(cfg: Config) -> Engine {
        Engine {
            cfg,
            next_id: 1,
            next_token: 1,
            next_rotation_key: 0,
            bps: FxHashMap::default(),
            slots: FxHashMap::default(),
            slot_by_key: FxHashMap::default(),
            pinned_load: Load::new(cfg.cpus),
            pinned: FxHashSet::default(),
            rotation: BTreeMap::new(),
            task_rotation: FxHashMap::default(),
            cpu_wide_rotation: BTreeMap::new(),
            cpu_wide_armed: Vec::new(),
            task_changed: FxHashMap::default(),
            task_bps: FxHashMap::default(),
            open_per_uid: FxHashMap::default(),
            ctx_plans: FxHashMap::default(),
            cpu_plans: vec![CpuPlan::EMPTY; cfg.cpus as usize],
            dirty: false,
            dirty_tasks: FxHashSet::default(),
            dirty_cpus: FxHashSet::default(),
            dirty_all_cpus: false,
            cpu_wide_changed: false,
            cpu_wide_flexible: 0,
            always_full: false,
            replans: (0, 0),
            cpu_bps: vec![FxHashSet::default(); cfg.cpus as usize],
            all_cpu_bps: FxHashSet::default(),
            contended: false,
            task_moves: FxHashMap::default(),
            cpu_wide_moves: Vec::new(),
            last_rotation: None,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Admit a breakpoint for `uid`. Checks, in order: the scope's CPU
    /// (ESRCH), the event (EINVAL), the uid's quota (EMFILE), and for a
    /// pinned breakpoint the slot constraint (ENOSPC).
    pub fn open(&mut self, req: &Request, uid: Uid, now: Nanos) -> Result<BpId, EngineError> {
        let result = self.try_open(req, uid, now);
        if let Err(e) = &result {
            log::debug!("hwbp-engine: open refused for uid {uid}: {e} ({req:?})");
        }
        result
    }

    fn try_open(&mut self, req: &Request, uid: Uid, now: Nanos) -> Result<BpId, EngineError> {
        self.check_scope(req.scope)?;
        let pieces = validate(req)?;
        let held = self.open_per_uid.get(&uid).copied().unwrap_or(0);
        if !(uid == 0 && self.cfg.root_unlimited) && held >= self.cfg.quota_per_uid {
            return Err(EngineError::Quota);
        }
        let id = self.next_id;
        let keys = slot_keys(req, &pieces, id);
        if req.pinned {
            let (units, real) = self.pinned_units(req.exclusive, &keys, None);
            self.pinned_load.fits(req.scope, units, real).map_err(EngineError::NoSpace)?;
            self.pinned_load.add(req.scope, units, real);
        }
        // Committed from here on: nothing below can fail.
        self.next_id += 1;
        let tokens = self.attach(id, &keys, req.pinned);
        let mut bp = Bp {
            req: *req,
            uid,
            pinned_shared: self.pinned_mask(&tokens),
            pieces,
            tokens,
            enabled: !req.disabled,
            alive: true,
            running: false,
            rotation_key: None,
            time_enabled: 0,
            time_running: 0,
            last: now,
        };
        if req.pinned {
            self.pinned.insert(id);
        } else {
            bp.rotation_key = Some(self.push_rotation(id, req.scope));
            self.count_flexible(req.scope, true);
        }
        if req.pinned {
            self.note_task_change(req.scope, 0);
        }
        self.index(id, req.scope);
        self.bps.insert(id, bp);
        *self.open_per_uid.entry(uid).or_default() += 1;
        self.touch_changed(req.scope);
        Ok(id)
    }

    /// Replace a breakpoint's event and flags (not its scope) atomically: on
    /// any error it stays exactly as it was, slots and tokens included.
    /// `req.disabled` sets the new enabled state, as Linux's
    /// `modify_user_hw_breakpoint` does.
    pub fn modify(&mut self, id: BpId, req: &Request, now: Nanos) -> Result<(), EngineError> {
        let result = self.try_modify(id, req, now);
        if let Err(e) = &result {
            log::debug!("hwbp-engine: modify of breakpoint {id} refused: {e} ({req:?})");
        }
        result
    }

    fn try_modify(&mut self, id: BpId, req: &Request, now: Nanos) -> Result<(), EngineError> {
        let bp = self.bps.get(&id).ok_or(EngineError::NoSuchBreakpoint)?;
        if !bp.alive {
            return Err(EngineError::Ended);
        }
        if req.scope != bp.req.scope {
            return Err(EngineError::Invalid("modify cannot change the target"));
        }
        let pieces = validate(req)?;
        let keys = slot_keys(req, &pieces, id);
        let scope = req.scope;
        let (old_units, old_real) = self.held_units(bp);
        let (new_units, new_real) = if req.pinned {
            self.pinned_units(req.exclusive, &keys, Some((&bp.tokens, bp.req.pinned)))
        } else {
            (0, 0)
        };
        // Linux's __modify_bp_slot: release, try, and on failure take the
        // old slots back, which cannot fail because they were just held.
        self.pinned_load.remove(scope, old_units, old_real);
        if req.pinned
            && let Err(why) = self.pinned_load.fits(scope, new_units, new_real)
        {
            self.pinned_load.add(scope, old_units, old_real);
            return Err(EngineError::NoSpace(why));
        }
        self.pinned_load.add(scope, new_units, new_real);
        // Committed from here on.
        let Some(bp) = self.bps.get(&id) else { return Err(EngineError::NoSuchBreakpoint) };
        let (old_tokens, was_pinned) = (bp.tokens.clone(), bp.req.pinned);
        let since = if was_pinned || req.pinned { Some(0) } else { bp.running.then_some(bp.rotation_key).flatten() };
        if let Some(key) = since {
            self.note_task_change(scope, key);
        }
        // Attach first, so a piece the new event keeps stays in its slot
        // with its token (no plan change for it).
        let tokens = self.attach(id, &keys, req.pinned);
        self.detach(id, &old_tokens, was_pinned);
        let rotation_key = match (was_pinned, req.pinned) {
            (true, false) => {
                self.pinned.remove(&id);
                self.count_flexible(scope, true);
                Some(self.push_rotation(id, scope))
            }
            (false, true) => {
                if let Some(k) = self.bps.get(&id).and_then(|b| b.rotation_key) {
                    self.remove_rotation(k, scope);
                }
                self.count_flexible(scope, false);
                self.pinned.insert(id);
                None
            }
            _ => self.bps.get(&id).and_then(|b| b.rotation_key),
        };
        let pinned_shared = self.pinned_mask(&tokens);
        if let Some(bp) = self.bps.get_mut(&id) {
            bp.accrue(now);
            bp.req = *req;
            bp.pieces = pieces;
            bp.tokens = tokens;
            bp.pinned_shared = pinned_shared;
            bp.enabled = !req.disabled;
            bp.running = false;
            bp.rotation_key = rotation_key;
        }
        self.touch_changed(scope);
        Ok(())
    }

    /// Enable or disable. A disabled pinned breakpoint keeps its slots.
    pub fn set_enabled(&mut self, id: BpId, enabled: bool, now: Nanos) -> Result<(), EngineError> {
        let bp = self.bps.get_mut(&id).ok_or(EngineError::NoSuchBreakpoint)?;
        bp.accrue(now);
        let was_running = bp.running.then_some(bp.rotation_key).flatten();
        bp.enabled = enabled;
        if !enabled {
            bp.running = false;
        }
        let scope = bp.req.scope;
        if let (Some(key), false) = (was_running, enabled) {
            self.note_task_change(scope, key);
        }
        self.touch(scope);
        Ok(())
    }

    /// Forget a breakpoint; its slots are free for the next plan. Hits of
    /// its tokens are no longer routed to it.
    pub fn close(&mut self, id: BpId, now: Nanos) -> Result<(), EngineError> {
        let mut bp = self.bps.remove(&id).ok_or(EngineError::NoSuchBreakpoint)?;
        bp.accrue(now);
        if bp.alive {
            let since = if bp.req.pinned { Some(0) } else { bp.running.then_some(bp.rotation_key).flatten() };
            if let Some(key) = since {
                self.note_task_change(bp.req.scope, key);
            }
            self.release(id, &bp);
            self.unindex(id, bp.req.scope);
        }
        if let Some(n) = self.open_per_uid.get_mut(&bp.uid) {
            *n -= 1;
            if *n == 0 {
                self.open_per_uid.remove(&bp.uid);
            }
        }
        self.touch_changed(bp.req.scope);
        Ok(())
    }

    /// Task `pid` exited: its breakpoints end (times freeze, slots are
    /// released, the handles stay readable until closed). Returns them in
    /// id order. Its context plan is dropped without being reported.
    pub fn task_exited(&mut self, pid: Pid, now: Nanos) -> Vec<BpId> {
        let mut ended: Vec<BpId> = self.task_bps.remove(&pid).map(|s| s.into_iter().collect()).unwrap_or_default();
        ended.sort_unstable();
        for &id in &ended {
            let Some(mut bp) = self.bps.remove(&id) else { continue };
            bp.accrue(now);
            self.release(id, &bp);
            bp.alive = false;
            bp.running = false;
            bp.rotation_key = None;
            self.bps.insert(id, bp);
        }
        self.ctx_plans.remove(&pid);
        // Its left-out breakpoints ask for nothing any more; other tasks'
        // plans depend on this one only through cpu-wide flexible
        // breakpoints (see replan_dirty_scopes).
        self.task_moves.remove(&pid);
        if !ended.is_empty() {
            self.note_task_change(Scope::Task { pid, cpu: None }, 0);
            self.dirty_tasks.insert(pid);
        }
        self.dirty = true;
        ended
    }

    /// Rotate the flexible breakpoints if a rotation period has passed and
    /// some were left out, and recompute the plans if anything changed.
    pub fn tick(&mut self, now: Nanos) -> PlanChanges {
        let due = self.last_rotation.is_none_or(|t| now.saturating_sub(t) >= self.cfg.rotation_ns);
        let rotated = self.contended && due;
        if rotated {
            self.rotate();
            self.last_rotation = Some(now);
        }
        if !self.dirty {
            return PlanChanges::default();
        }
        self.dirty = false;
        let cpu_wide_changed = std::mem::take(&mut self.cpu_wide_changed);
        // With cpu-wide flexible breakpoints live, a rotation or a change
        // of a CPU plan may move them: replan everything.
        let cpu_wide_moves = self.cpu_wide_flexible > 0
            && (rotated || self.dirty_all_cpus || !self.dirty_cpus.is_empty());
        if self.always_full
            || cpu_wide_moves
            || (cpu_wide_changed && !self.rotation.is_empty())
            || self.dirty_tasks_hold_most()
        {
            return self.replan(now);
        }
        match self.replan_dirty_scopes(now) {
            Some(changes) => {
                self.replans.1 += 1;
                changes
            }
            // A task's change reaches a cpu-wide flexible breakpoint.
            None => self.replan(now),
        }
    }

    /// The tasks to replan hold more than half of many breakpoints: a full
    /// replan is the cheaper way to the same plans.
    fn dirty_tasks_hold_most(&self) -> bool {
        let n = self.bps.len();
        if n < FULL_REPLAN_MIN_BPS {
            return false;
        }
        let mut dirty = 0;
        for pid in &self.dirty_tasks {
            dirty += self.task_bps.get(pid).map_or(0, FxHashSet::len);
            if dirty * 2 > n {
                return true;
            }
        }
        false
    }

    /// Test and benchmark aid: replans so far, (full, incremental).
    #[doc(hidden)]
    pub fn replan_counts(&self) -> (u64, u64) {
        self.replans
    }

    /// Benchmark aid: make every [`Engine::tick`] that has something to do
    /// a full replan (the planner before it was incremental), to measure
    /// the incremental planner against it in one run. Same plans either way.
    #[doc(hidden)]
    pub fn set_always_full_replan(&mut self, on: bool) {
        self.always_full = on;
    }

    /// Test and benchmark aid: recompute every plan from scratch now (what
    /// [`Engine::tick`] did after every change before the planner became
    /// incremental), without rotating.
    #[doc(hidden)]
    pub fn replan_all(&mut self, now: Nanos) -> PlanChanges {
        self.dirty = false;
        self.cpu_wide_changed = false;
        self.replan(now)
    }

    /// When the next rotation is due, if flexible breakpoints are waiting
    /// for registers: the time to call [`Engine::tick`] next. `None` when
    /// nothing waits (no timer needed).
    pub fn next_rotation(&self) -> Option<Nanos> {
        if !self.contended {
            return None;
        }
        Some(self.last_rotation.map_or(0, |t| t.saturating_add(self.cfg.rotation_ns)))
    }

    /// The plan of task `pid`; `None` means the empty plan.
    pub fn context_plan(&self, pid: Pid) -> Option<&ContextPlan> {
        self.ctx_plans.get(&pid)
    }

    /// The plan of `cpu` (empty for a CPU that does not exist).
    pub fn cpu_plan(&self, cpu: CpuId) -> &CpuPlan {
        self.cpu_plans.get(cpu as usize).unwrap_or(&EMPTY_CPU_PLAN)
    }

    /// The breakpoints a hit on `token` counts for: the running users of
    /// that slot. Empty for unknown or retired tokens.
    pub fn route(&self, token: Token) -> &[BpId] {
        self.slots.get(&token).map_or(&[], |s| s.routed.as_slice())
    }

    /// `(time_enabled, time_running)` as of `now`.
    pub fn times(&self, id: BpId, now: Nanos) -> Option<(Nanos, Nanos)> {
        self.bps.get(&id).map(|bp| bp.times(now))
    }

    /// The breakpoint's pieces after splitting, in address order.
    pub fn pieces(&self, id: BpId) -> Option<&[Piece]> {
        self.bps.get(&id).map(|bp| bp.pieces.as_slice())
    }

    /// The slot token of each piece, in the order of [`Engine::pieces`].
    pub fn tokens(&self, id: BpId) -> Option<&[Token]> {
        self.bps.get(&id).map(|bp| bp.tokens.as_slice())
    }

    /// The request as admitted (last modify included).
    pub fn request(&self, id: BpId) -> Option<&Request> {
        self.bps.get(&id).map(|bp| &bp.req)
    }

    /// Whether all the breakpoint's pieces are in the current plans.
    pub fn is_running(&self, id: BpId) -> Option<bool> {
        self.bps.get(&id).map(|bp| bp.running)
    }

    /// Whether the breakpoint's task is still alive (always true for
    /// cpu-wide breakpoints).
    pub fn is_alive(&self, id: BpId) -> Option<bool> {
        self.bps.get(&id).map(|bp| bp.alive)
    }

    /// Open breakpoints (ended ones included until closed).
    pub fn len(&self) -> usize {
        self.bps.len()
    }

    /// No breakpoint, no slot, no accounting, no plan.
    pub fn is_empty(&self) -> bool {
        self.bps.is_empty()
            && self.slots.is_empty()
            && self.slot_by_key.is_empty()
            && self.pinned_load.is_empty()
            && self.pinned.is_empty()
            && self.rotation.is_empty()
            && self.task_rotation.is_empty()
            && self.cpu_wide_rotation.is_empty()
            && self.task_bps.is_empty()
            && self.all_cpu_bps.is_empty()
            && self.cpu_bps.iter().all(FxHashSet::is_empty)
            && self.open_per_uid.is_empty()
            && self.ctx_plans.is_empty()
            && self.cpu_plans.iter().all(CpuPlan::is_empty)
    }

    /// The register assignment the kernel computes on `cpu` while `pid`
    /// runs there (`None`: no task of ours), from the current plans.
    pub fn assignment(&self, cpu: CpuId, pid: Option<Pid>) -> Composition {
        compose(cpu, self.cpu_plan(cpu), pid.and_then(|p| self.context_plan(p)))
    }

    /// Test aid: recompute every plan from scratch on a copy and compare
    /// with the current plans (which may have been computed incrementally).
    #[doc(hidden)]
    pub fn check_against_full_replan(&self, now: Nanos) -> Result<(), String> {
        let mut copy = self.clone();
        copy.replan(now);
        let flexible_cpu_wide = self
            .rotation
            .values()
            .filter(|id| self.bps.get(id).is_some_and(|b| b.req.scope.pid().is_none()))
            .count();
        let per_task: usize = self.task_rotation.values().map(BTreeMap::len).sum();
        if per_task + flexible_cpu_wide != self.rotation.len()
            || self.task_rotation.iter().any(|(pid, order)| {
                order.iter().any(|(k, id)| {
                    self.rotation.get(k) != Some(id) || self.bps.get(id).and_then(|b| b.req.scope.pid()) != Some(*pid)
                })
            })
        {
            return Err("the per-task round-robin orders are out of step with the global one".to_string());
        }
        if flexible_cpu_wide != self.cpu_wide_flexible || flexible_cpu_wide != self.cpu_wide_rotation.len() {
            return Err(format!("{} cpu-wide flexible breakpoints counted, {flexible_cpu_wide} live", self.cpu_wide_flexible));
        }
        if copy.pending_moves() != self.pending_moves() {
            return Err(format!("next rotation moves {:?}, {:?} after a full replan", self.pending_moves(), copy.pending_moves()));
        }
        if copy.contended != self.contended {
            return Err(format!("contended {}, {} after a full replan", self.contended, copy.contended));
        }
        if copy.ctx_plans != self.ctx_plans {
            return Err(format!("context plans differ: full {:?}, current {:?}", copy.ctx_plans, self.ctx_plans));
        }
        if copy.cpu_plans != self.cpu_plans {
            return Err(format!("cpu plans differ: full {:?}, current {:?}", copy.cpu_plans, self.cpu_plans));
        }
        for (id, bp) in &self.bps {
            if copy.bps.get(id).map(|b| b.running) != Some(bp.running) {
                return Err(format!("breakpoint {id} running {} but {} after a full replan", bp.running, !bp.running));
            }
        }
        for (t, slot) in &self.slots {
            let mut a = slot.routed.clone();
            let mut b = copy.slots.get(t).map(|s| s.routed.clone()).unwrap_or_default();
            a.sort_unstable();
            b.sort_unstable();
            if a != b {
                return Err(format!("token {t} routed to {a:?}, {b:?} after a full replan"));
            }
        }
        Ok(())
    }

    // ---- internals ----

    fn check_scope(&self, scope: Scope) -> Result<(), EngineError> {
        match scope.cpu() {
            Some(cpu) if cpu >= self.cfg.cpus => Err(EngineError::NoSuchCpu),
            _ => Ok(()),
        }
    }

    /// The breakpoints of `scope` changed (not only an enabled state): as
    /// [`Engine::touch`], and for a cpu-wide scope every task's test may
    /// have changed.
    fn touch_changed(&mut self, scope: Scope) {
        if scope.pid().is_none() {
            self.cpu_wide_changed = true;
        }
        self.touch(scope);
    }

    /// Task `scope`'s armed set may have changed from rotation key `key` on
    /// in a way its next plan cannot see (see `task_changed`).
    /// Only needed while a cpu-wide flexible breakpoint is live: one that
    /// comes later comes with a full replan.
    fn note_task_change(&mut self, scope: Scope, key: u64) {
        if self.cpu_wide_flexible == 0 {
            return;
        }
        if let Some(pid) = scope.pid() {
            let k = self.task_changed.entry(pid).or_insert(key);
            *k = (*k).min(key);
        }
    }

    /// A live flexible breakpoint of `scope` came (`true`) or went.
    fn count_flexible(&mut self, scope: Scope, came: bool) {
        if scope.pid().is_none() {
            if came {
                self.cpu_wide_flexible += 1;
            } else {
                debug_assert!(self.cpu_wide_flexible > 0, "cpu-wide flexible count underflow");
                self.cpu_wide_flexible = self.cpu_wide_flexible.saturating_sub(1);
            }
        }
    }

    /// What the next rotation moves, sorted, once each.
    fn pending_moves(&self) -> Vec<BpId> {
        let mut moves: Vec<BpId> = self.task_moves.values().flatten().chain(&self.cpu_wide_moves).copied().collect();
        moves.sort_unstable();
        moves.dedup();
        moves
    }

    /// Note that `scope`'s plans must be recomputed.
    fn touch(&mut self, scope: Scope) {
        self.dirty = true;
        match scope {
            Scope::Task { pid, .. } => {
                self.dirty_tasks.insert(pid);
            }
            Scope::Cpu(c) => {
                self.dirty_cpus.insert(c);
            }
            Scope::AllCpus => self.dirty_all_cpus = true,
        }
    }

    fn index(&mut self, id: BpId, scope: Scope) {
        match scope {
            Scope::Task { pid, .. } => {
                self.task_bps.entry(pid).or_default().insert(id);
            }
            Scope::Cpu(c) => {
                if let Some(set) = self.cpu_bps.get_mut(c as usize) {
                    set.insert(id);
                }
            }
            Scope::AllCpus => {
                self.all_cpu_bps.insert(id);
            }
        }
    }

    fn unindex(&mut self, id: BpId, scope: Scope) {
        match scope {
            Scope::Task { pid, .. } => {
                if let Some(set) = self.task_bps.get_mut(&pid) {
                    set.remove(&id);
                    if set.is_empty() {
                        self.task_bps.remove(&pid);
                    }
                }
            }
            Scope::Cpu(c) => {
                if let Some(set) = self.cpu_bps.get_mut(c as usize) {
                    set.remove(&id);
                }
            }
            Scope::AllCpus => {
                self.all_cpu_bps.remove(&id);
            }
        }
    }

    fn push_rotation(&mut self, id: BpId, scope: Scope) -> u64 {
        let key = self.next_rotation_key;
        self.next_rotation_key += 1;
        self.rotation.insert(key, id);
        match scope.pid() {
            Some(pid) => {
                self.task_rotation.entry(pid).or_default().insert(key, id);
            }
            None => {
                self.cpu_wide_rotation.insert(key, id);
            }
        }
        key
    }

    fn remove_rotation(&mut self, key: u64, scope: Scope) {
        self.rotation.remove(&key);
        if scope.pid().is_none() {
            self.cpu_wide_rotation.remove(&key);
        }
        if let Some(pid) = scope.pid()
            && let Some(order) = self.task_rotation.get_mut(&pid)
        {
            order.remove(&key);
            if order.is_empty() {
                self.task_rotation.remove(&pid);
            }
        }
    }

    /// Move the breakpoints the last plan chose ([`Engine::replan`]) to the
    /// back of the round-robin order, keeping their relative order.
    fn rotate(&mut self) {
        let pending = self.pending_moves();
        // Every task that asked for a move is replanned: its order changes
        // (and it asks anew).
        for (pid, _) in std::mem::take(&mut self.task_moves) {
            self.dirty_tasks.insert(pid);
            self.dirty = true;
        }
        self.cpu_wide_moves.clear();
        let mut moves: Vec<(u64, BpId)> =
            pending.into_iter().filter_map(|id| Some((self.bps.get(&id)?.rotation_key?, id))).collect();
        moves.sort_unstable();
        for (key, id) in moves {
            let Some(scope) = self.bps.get(&id).map(|b| b.req.scope) else { continue };
            self.remove_rotation(key, scope);
            let key = self.push_rotation(id, scope);
            if let Some(bp) = self.bps.get_mut(&id) {
                bp.rotation_key = Some(key);
            }
            self.dirty = true;
        }
    }

    /// Units and pieces `keys` would add to the pinned accounting; `old` is
    /// the breakpoint being modified (its tokens and whether it is pinned),
    /// whose own share is not counted as someone else's.
    fn pinned_units(&self, exclusive: bool, keys: &[SlotKey], old: Option<(&[Token], bool)>) -> (u8, u8) {
        let real = keys.len() as u8;
        if exclusive {
            return (EXCLUSIVE_UNITS, real);
        }
        let new = keys
            .iter()
            .filter(|k| match self.slot_by_key.get(k).and_then(|t| Some((t, self.slots.get(t)?))) {
                None => true,
                Some((token, slot)) => {
                    let mine = old.is_some_and(|(tokens, pinned)| pinned && tokens.contains(token));
                    slot.pinned_users - u32::from(mine) == 0
                }
            })
            .count() as u8;
        (new, new)
    }

    /// Units and pieces `bp` holds alone in the pinned accounting.
    fn held_units(&self, bp: &Bp) -> (u8, u8) {
        if !bp.req.pinned {
            return (0, 0);
        }
        if bp.req.exclusive {
            return (EXCLUSIVE_UNITS, bp.tokens.len() as u8);
        }
        let alone = bp.tokens.iter().filter(|t| self.slots.get(t).is_some_and(|s| s.pinned_users == 1)).count() as u8;
        (alone, alone)
    }

    /// Release a live breakpoint's slots and its place in the schedule.
    fn release(&mut self, id: BpId, bp: &Bp) {
        let (units, real) = self.held_units(bp);
        self.pinned_load.remove(bp.req.scope, units, real);
        self.detach(id, &bp.tokens, bp.req.pinned);
        self.pinned.remove(&id);
        if let Some(k) = bp.rotation_key {
            self.remove_rotation(k, bp.req.scope);
            self.count_flexible(bp.req.scope, false);
        }
    }

    fn attach(&mut self, id: BpId, keys: &[SlotKey], pinned: bool) -> Vec<Token> {
        keys.iter()
            .map(|key| {
                let token = *self.slot_by_key.entry(*key).or_insert_with(|| {
                    let t = self.next_token;
                    self.next_token += 1;
                    t
                });
                let slot = self.slots.entry(token).or_insert_with(|| SlotEntry {
                    key: *key,
                    users: Vec::new(),
                    pinned_users: 0,
                    routed: Vec::new(),
                });
                slot.users.push(id);
                slot.pinned_users += u32::from(pinned);
                // Others already holding the slot now share a pinned one.
                if pinned && slot.pinned_users == 1 && slot.users.len() > 1 {
                    let users = slot.users.clone();
                    self.mark_pinned_shared(token, &users, true);
                }
                token
            })
            .collect()
    }

    /// Bits of `tokens` whose slot has a pinned user.
    fn pinned_mask(&self, tokens: &[Token]) -> u8 {
        tokens
            .iter()
            .enumerate()
            .filter(|(_, t)| self.slots.get(t).is_some_and(|s| s.pinned_users > 0))
            .fold(0, |m, (i, _)| m | 1 << i)
    }

    /// The slot of `token` gained its first or lost its last pinned user:
    /// update the `pinned_shared` bit of every user.
    fn mark_pinned_shared(&mut self, token: Token, users: &[BpId], on: bool) {
        for u in users {
            let Some(bp) = self.bps.get_mut(u) else { continue };
            for (i, t) in bp.tokens.iter().enumerate() {
                if *t == token {
                    if on {
                        bp.pinned_shared |= 1 << i;
                    } else {
                        bp.pinned_shared &= !(1 << i);
                    }
                }
            }
        }
    }

    fn detach(&mut self, id: BpId, tokens: &[Token], pinned: bool) {
        for token in tokens {
            let Some(slot) = self.slots.get_mut(token) else { continue };
            // One use goes; during a modify the same breakpoint may hold the
            // slot twice for a moment.
            if let Some(i) = slot.users.iter().position(|&u| u == id) {
                slot.users.remove(i);
            }
            if !slot.users.contains(&id) {
                slot.routed.retain(|&u| u != id);
            }
            slot.pinned_users -= u32::from(pinned);
            if pinned && slot.pinned_users == 0 && !slot.users.is_empty() {
                let users = slot.users.clone();
                self.mark_pinned_shared(*token, &users, false);
                continue;
            }
            if slot.users.is_empty() {
                let key = slot.key;
                self.slots.remove(token);
                self.slot_by_key.remove(&key);
            }
        }
    }

}

fn slot_keys(req: &Request, pieces: &[Piece], id: BpId) -> Vec<SlotKey> {
    let owner = req.exclusive.then_some(id);
    pieces.iter().map(|&piece| SlotKey { scope: req.scope, piece, stop: req.stop, owner }).collect()
}
