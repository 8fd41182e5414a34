//! Kernel-side mechanism for hwbp: x86 debug registers (DR0-DR3, DR6, DR7)
//! switched with the context and per CPU, and #DB exceptions decoded into
//! hit records for the userspace server `hwbpd`.
//!
//! This crate holds no policy. `hwbpd` decides *which* pieces are armed
//! *where*, and hands the kernel plans: one [`ContextPlan`] per context and
//! one [`CpuPlan`] per CPU. The kernel only
//!
//! 1. validates what it is handed ([`Piece::new`], [`abi`]),
//! 2. composes the CPU's plan with the running context's plan into register
//!    contents at every switch ([`compose`]) — the same function `hwbpd`
//!    uses to predict the assignment,
//! 3. loads them lazily, writing only the registers that differ
//!    ([`CpuDebugState::switch_to`]),
//! 4. turns DR6 into hit records on a per-CPU ring ([`trap`], [`HitRing`]).
//!
//! The crate is `no_std`, allocation-free and lock-free on the trap path, and
//! builds and tests on the host. Register access goes through the
//! [`DebugRegs`] trait; the real accessors (`feature = "hw"`) use the
//! `x86::debugregs` module the Redox kernel already depends on.
//!
//! It runs unchanged in three places: the Redox kernel (through the patch
//! series in `kernel-patch/patches`), the QEMU testbed in
//! `tests/qemu-testbed`, and on the host under `hwbpd`'s simulated kernel.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_op_in_unsafe_fn)]
// The kernel lints guard kernel code paths; tests may unwrap and index.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::arithmetic_side_effects))]

pub mod abi;
pub mod compose;
pub mod conformance;
pub mod counts;
pub mod deny;
pub mod dr6;
pub mod dr7;
pub mod piece;
pub mod plan;
pub mod published;
pub mod regs;
pub mod ring;
pub mod switch;
pub mod trap;

pub use counts::{CountTable, CountedPlan, SlotHits};
pub use compose::{Composition, ComposeError, Loaded, Origin, check_fits, compose};
pub use dr6::Dr6Status;
pub use piece::{Access, AddressSpace, Len, Piece, PieceError, Slot, Token};
pub use plan::{ContextPiece, ContextPlan, CpuFilter, CpuId, CpuPlan, PlanError};
pub use regs::DebugRegs;
pub use ring::HitRing;
pub use switch::{CpuDebugState, SwitchStats};
pub use published::PublishedLoad;
pub use trap::{DebugVerdict, LoadedView, TrapInfo};

/// Number of debug address registers (DR0-DR3) on x86.
pub const NUM_SLOTS: usize = 4;
