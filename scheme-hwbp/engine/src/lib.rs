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
//!   compute from them ([`hwbp_kern::compose`]);
//! - [`Engine::route`] maps the token of a hit back to the breakpoints that
//!   share that register.
//!
//! Call [`Engine::tick`] after every mutating call (open, modify,
//! set_enabled, close, task_exited) and on the rotation timer.

pub mod baseline;
mod engine;
pub mod error;
mod fxhash;
pub mod load;
pub mod request;

pub use engine::{Config, Engine, PlanChanges};
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
