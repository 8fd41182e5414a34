//! hwbpd's policy engine: breakpoint counters, Linux-style slot
//! constraints, range splitting, slot sharing and multiplexing of x86 debug
//! registers. Pure Rust, no I/O: the scheme server feeds it requests and a
//! clock, and pushes the plans it produces to the kernel.
//!
//! See `README.md` in this crate for the algorithm. In short:
//!
//! - [`Engine::open`] validates a [`Request`] ([`request::validate`]),
//!   splits it into aligned pieces, and for a pinned breakpoint runs the
//!   admission test ([`load`]) in O(1) (O(CPUs) for `cpu/all`);
//! - [`Engine::tick`] recomputes the plans: pinned first, then flexible in
//!   round-robin order (rotating once per `Config::rotation_ns`), exclusive
//!   alone, and reports which plans changed;
//! - [`Engine::context_plan`] / [`Engine::cpu_plan`] are what the kernel
//!   arms; [`Engine::assignment`] is the register assignment the kernel will
//!   compute from them ([`hwbp_kern::compose()`]);
//! - [`Engine::route`] maps the token of a hit back to the breakpoints that
//!   share that register.
//!
//! Call [`Engine::tick`] after every mutating call (open, modify,
//! set_enabled, close, task_exited) and on the rotation timer
//! ([`Engine::next_rotation`]).
//!
//! ```
//! use hwbp_engine::{Config, Engine, Request, Scope};
//! use hwbp_kern::{Access, ContextPlan};
//!
//! let mut engine = Engine::new(Config::new(4));
//! // task/42, mem:0x1003/4:w — unaligned, so split into 1 + 2 + 1 bytes.
//! let req = Request::new(Scope::Task { pid: 42, cpu: None }, 0x1003, 4, Access::Write);
//! let id = engine.open(&req, 1000, 0).expect("flexible breakpoints are always admitted");
//! assert_eq!(engine.pieces(id).unwrap().len(), 3);
//!
//! // Push what changed to the kernel.
//! let changes = engine.tick(0);
//! assert_eq!(changes.tasks, [42]);
//! let plan: ContextPlan = engine.context_plan(42).copied().unwrap_or(ContextPlan::EMPTY);
//! assert_eq!(plan.len(), 3);
//!
//! // A hit record carries a token: count it for the breakpoints it routes to.
//! let token = plan.iter().next().unwrap().token;
//! assert_eq!(engine.route(token), [id]);
//!
//! // Counts are scaled with the times.
//! assert_eq!(engine.times(id, 1_000), Some((1_000, 1_000)));
//! engine.close(id, 1_000).unwrap();
//! assert!(engine.tick(1_000).tasks == [42] && engine.context_plan(42).is_none());
//! ```

pub mod baseline;
mod engine;
pub mod error;
pub mod load;
pub mod request;

pub use engine::{Config, Engine, PlanChanges, Rotation};
pub use error::EngineError;
pub use request::{Request, Scope};

pub use hwbp_kern::CpuId;

/// A process id as the scheme names tasks.
pub type Pid = u32;
/// A user id.
pub type Uid = u32;
/// Nanoseconds of the caller's monotonic clock.
pub type Nanos = u64;
/// A breakpoint's id; never reused by one engine.
pub type BpId = u64;
