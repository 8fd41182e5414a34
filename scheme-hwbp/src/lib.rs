//! hwbpd: the `hwbp:` scheme server, over a kernel interface with two
//! backends (the Redox kernel patch, and a simulated kernel for the host).
//! See README.md.

pub mod inproc;
pub mod kernel;
pub mod scheme;
pub mod sim;
pub mod stream;
pub mod tally;
pub mod usage;

pub use inproc::InProcess;
pub use kernel::{EndReason, Kernel, KernelError, PieceCount, Pid, TaskEnd, TaskInfo, Uid};
pub use scheme::{Config, FeventNotice, HwbpScheme};
pub use sim::SimKernel;

use redox_scheme::{CallerCtx, Request, RequestKind};

/// A [`CallerCtx`] for calling [`redox_scheme::scheme::SchemeSync`] methods
/// directly, as the kernel would on behalf of process `pid` running as
/// `uid`/`gid`.
///
/// `CallerCtx` has a field only redox-scheme can set (the request id), so
/// it is taken from a default (all-zero) request, which redox-scheme
/// decodes as an ordinary call; the public fields are then filled in. Use
/// it to drive `HwbpScheme` (or any scheme) through the trait alone, from
/// tests outside this repository:
///
/// ```
/// let root = hwbpd::caller_ctx(1, 0, 0);
/// assert_eq!((root.pid, root.uid), (1, 0));
/// ```
pub fn caller_ctx(pid: usize, uid: u32, gid: u32) -> CallerCtx {
    let mut ctx = match Request::default().kind() {
        RequestKind::Call(call) => call.caller(),
        // Opcode 0 is not one of the special kinds redox-scheme decodes,
        // so a default request is always a call.
        _ => unreachable!("redox-scheme decodes a zeroed request as a call"),
    };
    ctx.pid = pid;
    ctx.uid = uid;
    ctx.gid = gid;
    ctx
}
