//! The engine: breakpoint records, shared slots, pinned admission, the
//! planner and time accounting. See the crate's README for the algorithm.
//!
//! Submodules, one job each: `index` (flexible breakpoints by domain and
//! class), `walk` (the skipping walks that decide what is armed),
//! `reach` (every task's counts along the order, for cpu-wide tests),
//! `planner` (which walks a tick needs), `running` (running flags to
//! plans), `rotation` (what the next rotation moves), `reference` (the
//! definition the property tests hold the planner to).

use hwbp_kern::{Composition, ContextPlan, CpuId, CpuPlan, NUM_SLOTS, Piece, Token, compose};

mod cross;
mod index;
mod planner;
mod reach;
mod reference;
mod rotation;
mod running;
mod walk;

use crate::error::EngineError;
use crate::load::Load;
use crate::request::{Request, Scope, validate};
use crate::{BpId, Nanos, Pid, Uid};
use cross::Cross;
use index::{Class, Domain, DomainId, Place};
use running::SlotUses;
use rustc_hash::{FxHashMap, FxHashSet};

/// Open breakpoints a non-root uid may hold by default.
pub const DEFAULT_QUOTA_PER_UID: usize = 64;
/// Rotation period of flexible breakpoints by default: 4 ms, Linux's
/// `perf_event_mux_interval_ms` at HZ=250.
pub const DEFAULT_ROTATION_NS: Nanos = 4_000_000;
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
    /// Which tasks a rotation moves breakpoints of.
    pub rotation: Rotation,
}

/// Which tasks' breakpoints a rotation moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// Every task whose breakpoints wait (O(those tasks) per rotation):
    /// for a caller that cannot tell which tasks ran.
    AllTasks,
    /// Only the tasks reported with [`Engine::task_ran`] since the last
    /// rotation, as Linux rotates only the contexts that run on each CPU:
    /// a rotation costs in proportion to what ran. A task that did not run
    /// keeps its order and its plan (its breakpoints could not have been
    /// hit anyway). The cpu-wide breakpoints rotate at every rotation:
    /// they are on every CPU.
    TasksThatRan,
}

impl Config {
    /// `cpus` CPUs and the contract's defaults.
    pub fn new(cpus: u32) -> Config {
        Config {
            cpus,
            quota_per_uid: DEFAULT_QUOTA_PER_UID,
            root_unlimited: true,
            rotation_ns: DEFAULT_ROTATION_NS,
            rotation: Rotation::AllTasks,
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
    /// One of its slots has another user (kept in step by `attach` and
    /// `detach`): only then does a walk look for sharers of its slots.
    shared: bool,
    /// Not disabled by the user.
    enabled: bool,
    /// Its task has not exited.
    alive: bool,
    /// All its pieces are in the current plans.
    running: bool,
    /// Position in the flexible round-robin order (flexible ones only).
    rotation_key: Option<u64>,
    /// Where the planner keeps it (`index.rs`).
    place: Place,
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
/// - after [`Engine::tick`], the plans, running flags, routes and pending
///   rotation moves are those of the definition (`reference.rs`): on every
///   CPU `c`, `cpu_plan(c).len()` plus the pieces of any one context plan
///   applying on `c` is at most `NUM_SLOTS`, and every planned piece belongs
///   to a live breakpoint of that scope;
/// - every live, enabled flexible breakpoint is in its domain's index at
///   its rotation key, under the class its state gives (`Place`);
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
    /// The last rotation keys given to a task breakpoint and to a cpu-wide
    /// one: none of them is behind it in the order (`planner.rs`).
    last_task_key: Option<u64>,
    last_cpu_wide_key: Option<u64>,
    /// Boxed: the table stays small and the records keep the order they
    /// were opened in, so the breakpoints of one task lie together in
    /// memory (fewer cache and TLB misses per walk with many open).
    bps: FxHashMap<BpId, Box<Bp>>,
    slots: FxHashMap<Token, SlotEntry>,
    slot_by_key: FxHashMap<SlotKey, Token>,
    /// Slots of live pinned breakpoints (disabled ones included).
    pinned_load: Load,
    /// Each task's flexible breakpoints that need registers, and its last
    /// walk (no empty entries).
    tasks: FxHashMap<Pid, Domain>,
    /// The same for the cpu-wide flexible breakpoints.
    cpu_wide: Domain,
    /// Every task at once, for the cpu-wide domain (`cross.rs`): kept
    /// while the cpu-wide domain is not empty.
    cross: Option<Cross>,
    /// How many task domains ask the next rotation to move their own
    /// first armed breakpoint (`rotation.rs`).
    asking_own: usize,
    /// Live breakpoints of each task.
    task_bps: FxHashMap<Pid, FxHashSet<BpId>>,
    /// Open breakpoints per uid (ended ones included until closed).
    open_per_uid: FxHashMap<Uid, usize>,
    ctx_plans: FxHashMap<Pid, ContextPlan>,
    cpu_plans: Vec<CpuPlan>,
    /// Running users of each slot of each plan (`running.rs`).
    task_slots: FxHashMap<Pid, SlotUses>,
    cpu_slots: Vec<SlotUses>,
    /// Plans whose slots changed since they were last built.
    plans_to_build: FxHashSet<Pid>,
    cpu_plans_to_build: Vec<bool>,
    /// Something changed since the last plan.
    dirty: bool,
    /// Domains to walk again at the next tick (`planner.rs`): tasks, the
    /// cpu-wide one, all of them.
    walk_tasks: FxHashSet<Pid>,
    walk_cpu_wide: bool,
    walk_all: bool,
    /// Benchmark aid: every plan walks every domain.
    always_full: bool,
    /// Plans so far: (walks of every domain, others). For tests and
    /// benchmarks.
    replans: (u64, u64),
    /// Tasks reported running since the last rotation
    /// ([`Rotation::TasksThatRan`]).
    ran: FxHashSet<Pid>,
    /// The last plan left out a flexible breakpoint that could run beside
    /// the pinned ones.
    contended: bool,
    last_rotation: Option<Nanos>,
}

impl Engine {
    pub fn new(cfg: Config) -> Engine {
        Engine {
            cfg,
            next_id: 1,
            next_token: 1,
            next_rotation_key: 0,
            last_task_key: None,
            last_cpu_wide_key: None,
            bps: FxHashMap::default(),
            slots: FxHashMap::default(),
            slot_by_key: FxHashMap::default(),
            pinned_load: Load::new(cfg.cpus),
            tasks: FxHashMap::default(),
            cpu_wide: Domain::default(),
            cross: None,
            asking_own: 0,
            task_bps: FxHashMap::default(),
            open_per_uid: FxHashMap::default(),
            ctx_plans: FxHashMap::default(),
            cpu_plans: vec![CpuPlan::EMPTY; cfg.cpus as usize],
            task_slots: FxHashMap::default(),
            cpu_slots: vec![SlotUses::new(); cfg.cpus as usize],
            plans_to_build: FxHashSet::default(),
            cpu_plans_to_build: vec![false; cfg.cpus as usize],
            dirty: false,
            walk_tasks: FxHashSet::default(),
            walk_cpu_wide: false,
            walk_all: false,
            always_full: false,
            replans: (0, 0),
            ran: FxHashSet::default(),
            contended: false,
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
        let tokens = self.attach(id, &keys, req.pinned, now);
        // A new flexible breakpoint goes to the back of the order, so it
        // changes no decision ahead of it.
        let rotation_key = (!req.pinned).then(|| self.take_rotation_key(req.scope));
        let bp = Bp {
            req: *req,
            uid,
            pinned_shared: self.pinned_mask(&tokens),
            shared: self.has_sharers(&tokens),
            pieces,
            tokens,
            enabled: !req.disabled,
            alive: true,
            running: false,
            rotation_key,
            place: Place::Out,
            time_enabled: 0,
            time_running: 0,
            last: now,
        };
        if let Some(pid) = req.scope.pid() {
            self.task_bps.entry(pid).or_default().insert(id);
        }
        self.bps.insert(id, Box::new(bp));
        *self.open_per_uid.entry(uid).or_default() += 1;
        self.place(id, now);
        if req.pinned {
            self.pinned_changed(req.scope);
        }
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
        self.unplace(id, now);
        let Some(bp) = self.bps.get(&id) else { return Err(EngineError::NoSuchBreakpoint) };
        let (old_tokens, was_pinned, old_key) = (bp.tokens.clone(), bp.req.pinned, bp.rotation_key);
        // Attach first, so a piece the new event keeps stays in its slot
        // with its token (no plan change for it).
        let tokens = self.attach(id, &keys, req.pinned, now);
        self.detach(id, &old_tokens, was_pinned, now);
        // A breakpoint that becomes flexible goes to the back of the order;
        // a flexible one keeps its place.
        let rotation_key = match (req.pinned, old_key) {
            (true, _) => None,
            (false, Some(key)) => Some(key),
            (false, None) => Some(self.take_rotation_key(scope)),
        };
        let pinned_shared = self.pinned_mask(&tokens);
        let shared = self.has_sharers(&tokens);
        if let Some(bp) = self.bps.get_mut(&id) {
            bp.shared = shared;
            bp.accrue(now);
            bp.req = *req;
            bp.pieces = pieces;
            bp.tokens = tokens;
            bp.pinned_shared = pinned_shared;
            bp.enabled = !req.disabled;
            bp.rotation_key = rotation_key;
        }
        self.place(id, now);
        if was_pinned || req.pinned {
            self.pinned_changed(scope);
        }
        Ok(())
    }

    /// Enable or disable. A disabled pinned breakpoint keeps its slots.
    pub fn set_enabled(&mut self, id: BpId, enabled: bool, now: Nanos) -> Result<(), EngineError> {
        if !self.bps.contains_key(&id) {
            return Err(EngineError::NoSuchBreakpoint);
        }
        self.unplace(id, now);
        if let Some(bp) = self.bps.get_mut(&id) {
            bp.accrue(now);
            bp.enabled = enabled;
        }
        self.place(id, now);
        Ok(())
    }

    /// Forget a breakpoint; its slots are free for the next plan. Hits of
    /// its tokens are no longer routed to it.
    pub fn close(&mut self, id: BpId, now: Nanos) -> Result<(), EngineError> {
        if !self.bps.contains_key(&id) {
            return Err(EngineError::NoSuchBreakpoint);
        }
        self.unplace(id, now);
        let mut bp = self.bps.remove(&id).ok_or(EngineError::NoSuchBreakpoint)?;
        bp.accrue(now);
        if bp.alive {
            self.release(id, &bp, now);
        }
        if let Some(n) = self.open_per_uid.get_mut(&bp.uid) {
            *n -= 1;
            if *n == 0 {
                self.open_per_uid.remove(&bp.uid);
            }
        }
        Ok(())
    }

    /// Task `pid` exited: its breakpoints end (times freeze, slots are
    /// released, the handles stay readable until closed). Returns them in
    /// id order. Its context plan is dropped without being reported.
    pub fn task_exited(&mut self, pid: Pid, now: Nanos) -> Vec<BpId> {
        let mut ended: Vec<BpId> = self.task_bps.get(&pid).map(|s| s.iter().copied().collect()).unwrap_or_default();
        ended.sort_unstable();
        for &id in &ended {
            self.unplace(id, now);
            let Some(mut bp) = self.bps.remove(&id) else { continue };
            bp.accrue(now);
            self.release(id, &bp, now);
            bp.alive = false;
            bp.rotation_key = None;
            // Its slots are released.
            bp.shared = false;
            self.bps.insert(id, bp);
        }
        self.task_bps.remove(&pid);
        // Its walk, what it asked for and its counts in `Reach` go with it.
        if let Some(d) = self.tasks.remove(&pid) {
            self.asking_own -= usize::from(Engine::asks_own(d.first(), d.last_left_out));
            if let Some(cross) = self.cross.as_mut() {
                // Its counts leave the cpu-wide walk's view (a walk follows).
                cross.remove(pid, &d);
            }
        }
        self.walk_tasks.remove(&pid);
        self.ran.remove(&pid);
        self.ctx_plans.remove(&pid);
        self.task_slots.remove(&pid);
        self.plans_to_build.remove(&pid);
        if !ended.is_empty() {
            // Its counts left every cpu-wide breakpoint's test.
            self.walk_cpu_wide = true;
        }
        self.dirty = true;
        ended
    }

    /// Tell the engine that task `pid` ran (had a thread on a CPU) since
    /// the last tick: with [`Rotation::TasksThatRan`] the next rotation
    /// moves its waiting breakpoints; the tasks not reported since the last
    /// rotation (or since the last tick without contention) keep their
    /// order.
    pub fn task_ran(&mut self, pid: Pid) {
        if self.cfg.rotation == Rotation::TasksThatRan {
            self.ran.insert(pid);
        }
    }

    /// Rotate the flexible breakpoints if a rotation period has passed and
    /// some were left out, and recompute the plans if anything changed.
    pub fn tick(&mut self, now: Nanos) -> PlanChanges {
        if !self.contended {
            // Nothing waits: what ran before contention starts moves nothing.
            self.ran.clear();
        }
        let due = self.last_rotation.is_none_or(|t| now.saturating_sub(t) >= self.cfg.rotation_ns);
        if self.contended && due {
            self.rotate();
            self.last_rotation = Some(now);
        }
        if !self.dirty {
            return PlanChanges::default();
        }
        self.dirty = false;
        self.plan_and_install(now)
    }

    /// Plan, note whether contention starts, and install the plans.
    fn plan_and_install(&mut self, now: Nanos) -> PlanChanges {
        self.plan(now);
        let contended = self.is_contended();
        if contended && !self.contended {
            // Contention starts now: the first rotation is one period away.
            self.last_rotation = Some(now);
        }
        self.contended = contended;
        self.install_plans()
    }

    /// Test and benchmark aid: plans so far, (walks of every domain at
    /// once, others).
    #[doc(hidden)]
    pub fn replan_counts(&self) -> (u64, u64) {
        self.replans
    }

    /// Benchmark aid: make every [`Engine::tick`] that has something to do
    /// walk every domain, as after a cpu-wide change. Same plans either way.
    #[doc(hidden)]
    pub fn set_always_full_replan(&mut self, on: bool) {
        self.always_full = on;
    }

    /// Test and benchmark aid: walk every domain now and install the plans,
    /// without rotating.
    #[doc(hidden)]
    pub fn replan_all(&mut self, now: Nanos) -> PlanChanges {
        self.walk_all = true;
        self.dirty = false;
        self.plan_and_install(now)
    }

    /// Test aid: the breakpoint's place in the round-robin order (flexible
    /// ones; larger is further back).
    #[doc(hidden)]
    pub fn rotation_position(&self, id: BpId) -> Option<u64> {
        self.bps.get(&id)?.rotation_key
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
            && self.tasks.is_empty()
            && self.cpu_wide.is_empty()
            && self.cross.is_none()
            && self.asking_own == 0
            && self.task_bps.is_empty()
            && self.open_per_uid.is_empty()
            && self.ctx_plans.is_empty()
            && self.cpu_plans.iter().all(CpuPlan::is_empty)
            && self.task_slots.is_empty()
            && self.cpu_slots.iter().all(Vec::is_empty)
    }

    /// The register assignment the kernel computes on `cpu` while `pid`
    /// runs there (`None`: no task of ours), from the current plans.
    pub fn assignment(&self, cpu: CpuId, pid: Option<Pid>) -> Composition {
        compose(cpu, self.cpu_plan(cpu), pid.and_then(|p| self.context_plan(p)))
    }

    // ---- internals ----

    fn check_scope(&self, scope: Scope) -> Result<(), EngineError> {
        match scope.cpu() {
            Some(cpu) if cpu >= self.cfg.cpus => Err(EngineError::NoSuchCpu),
            _ => Ok(()),
        }
    }

    /// The next rotation key (the back of the order), for a breakpoint of
    /// `scope`.
    fn take_rotation_key(&mut self, scope: Scope) -> u64 {
        let key = self.next_rotation_key;
        self.next_rotation_key += 1;
        match scope.pid() {
            Some(_) => self.last_task_key = Some(key),
            None => self.last_cpu_wide_key = Some(key),
        }
        key
    }

    /// Where `bp`'s state says the planner keeps it.
    fn place_of(bp: &Bp) -> Place {
        if !bp.alive || !bp.enabled || bp.req.pinned || bp.rotation_key.is_none() {
            return Place::Out;
        }
        let (units, real) = bp.units_beside(|_| false);
        if real == 0 {
            return Place::AlwaysRunning;
        }
        debug_assert_eq!(units, if bp.req.exclusive { EXCLUSIVE_UNITS } else { real });
        Place::Class(Class { scope: bp.req.scope, exclusive: bp.req.exclusive, pieces: real })
    }

    fn domain_mut(&mut self, id: DomainId) -> Option<&mut Domain> {
        match id {
            DomainId::Task(pid) => Some(self.tasks.entry(pid).or_default()),
            DomainId::CpuWide => Some(&mut self.cpu_wide),
        }
    }

    /// The domain needs a new walk at the next tick.
    fn walk_domain(&mut self, id: DomainId) {
        self.dirty = true;
        match id {
            DomainId::Task(pid) => {
                self.walk_tasks.insert(pid);
            }
            DomainId::CpuWide => self.walk_cpu_wide = true,
        }
    }

    /// The pinned accounting of `scope` changed: its task's walk reads its
    /// counts, the cpu-wide walk reads every task's; a cpu-wide change
    /// changes what every task may hold.
    fn pinned_changed(&mut self, scope: Scope) {
        self.dirty = true;
        match scope.pid() {
            Some(pid) => {
                self.walk_tasks.insert(pid);
                self.walk_cpu_wide = true;
            }
            None => self.walk_all = true,
        }
    }

    /// Take breakpoint `id` out of the planner (before its state changes):
    /// out of its domain's index, not running.
    fn unplace(&mut self, id: BpId, now: Nanos) {
        let Some(bp) = self.bps.get_mut(&id) else { return };
        let place = std::mem::replace(&mut bp.place, Place::Out);
        let key = bp.rotation_key;
        if let (Place::Class(class), Some(key)) = (place, key) {
            let domain = DomainId::of(class.scope);
            if let Some(d) = self.domain_mut(domain) {
                d.remove(class, key);
            }
            self.walk_domain(domain);
        }
        self.set_running(id, false, now);
    }

    /// Put breakpoint `id` back into the planner as its state says: a
    /// pinned one runs while enabled, a flexible one in pinned slots only
    /// runs, any other flexible one waits for its domain's walk.
    fn place(&mut self, id: BpId, now: Nanos) {
        let Some(bp) = self.bps.get_mut(&id) else { return };
        let place = Engine::place_of(bp);
        bp.place = place;
        let pinned_runs = bp.req.pinned && bp.enabled && bp.alive;
        match (place, bp.rotation_key) {
            (Place::Class(class), Some(key)) => {
                let domain = DomainId::of(class.scope);
                if let Some(d) = self.domain_mut(domain) {
                    d.insert(class, key, id);
                }
                self.walk_domain(domain);
            }
            (Place::AlwaysRunning, _) => self.set_running(id, true, now),
            _ => self.set_running(id, pinned_runs, now),
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

    /// Release a live breakpoint's slots (it is out of the planner and of
    /// `bps` already).
    fn release(&mut self, id: BpId, bp: &Bp, now: Nanos) {
        let (units, real) = self.held_units(bp);
        self.pinned_load.remove(bp.req.scope, units, real);
        self.detach(id, &bp.tokens, bp.req.pinned, now);
        if bp.req.pinned {
            self.pinned_changed(bp.req.scope);
        }
        if let Some(pid) = bp.req.scope.pid()
            && let Some(set) = self.task_bps.get_mut(&pid)
        {
            set.remove(&id);
            if set.is_empty() {
                self.task_bps.remove(&pid);
            }
        }
    }

    fn attach(&mut self, id: BpId, keys: &[SlotKey], pinned: bool, now: Nanos) -> Vec<Token> {
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
                // The slot's first user shares it from now on (with more,
                // the others do already; `id` is marked by its caller).
                if let [first, _] = slot.users[..]
                    && let Some(bp) = self.bps.get_mut(&first)
                {
                    bp.shared = true;
                }
                let Some(slot) = self.slots.get_mut(&token) else { return token };
                // Others already holding the slot now share a pinned one.
                if pinned && slot.pinned_users == 1 && slot.users.len() > 1 {
                    let users = slot.users.clone();
                    self.mark_pinned_shared(token, &users, true, now);
                }
                token
            })
            .collect()
    }

    /// Whether one of `tokens`' slots has more than one user.
    fn has_sharers(&self, tokens: &[Token]) -> bool {
        tokens.iter().any(|t| self.slots.get(t).is_some_and(|s| s.users.len() > 1))
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
    /// update the `pinned_shared` bit of every user, and its place in the
    /// planner (its class, or whether it needs registers at all, changed).
    fn mark_pinned_shared(&mut self, token: Token, users: &[BpId], on: bool, now: Nanos) {
        for &u in users {
            let placed = self.bps.get(&u).is_some_and(|b| b.place != Place::Out);
            if placed {
                self.unplace(u, now);
            }
            let Some(bp) = self.bps.get_mut(&u) else { continue };
            for (i, t) in bp.tokens.iter().enumerate() {
                if *t == token {
                    if on {
                        bp.pinned_shared |= 1 << i;
                    } else {
                        bp.pinned_shared &= !(1 << i);
                    }
                }
            }
            if placed {
                self.place(u, now);
            }
        }
    }

    fn detach(&mut self, id: BpId, tokens: &[Token], pinned: bool, now: Nanos) {
        for token in tokens {
            let Some(slot) = self.slots.get_mut(token) else { continue };
            // One use goes; during a modify the same breakpoint may hold the
            // slot twice for a moment.
            if let Some(i) = slot.users.iter().position(|&u| u == id) {
                slot.users.remove(i);
            }
            if let [last] = slot.users[..] {
                // It may share no slot any more.
                let shared = self.bps.get(&last).is_some_and(|b| self.has_sharers(&b.tokens));
                if let Some(bp) = self.bps.get_mut(&last) {
                    bp.shared = shared;
                }
            }
            let Some(slot) = self.slots.get_mut(token) else { continue };
            if !slot.users.contains(&id) {
                slot.routed.retain(|&u| u != id);
            }
            slot.pinned_users -= u32::from(pinned);
            if pinned && slot.pinned_users == 0 && !slot.users.is_empty() {
                let users = slot.users.clone();
                self.mark_pinned_shared(*token, &users, false, now);
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
