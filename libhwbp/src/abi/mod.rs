//! The hwbp contract as code: the one module hwbpd and every client share
//! (like a Hubris `.idol` file). See `/work/shared/hwbp-contract.md`
//! (sections 2, 4 and 5) and libhwbp/README.md for the tables.
//!
//! - [`path`]: the open path grammar, options, the admitted (`fpath`) form;
//! - [`event`]: perf's `mem:<addr>[/<len>][:<access>]`;
//! - [`error`]: why a path, event, option or command is refused (EINVAL);
//! - [`record`]: the count record and the hit record (byte layouts);
//! - [`command`]: what is written to a breakpoint handle;
//! - [`list`]: the listing view (`/scheme/hwbp/list`): its open path, its
//!   text format (producer types and parser);
//! - [`errno`]: the error numbers and what each means.

pub mod command;
pub mod errno;
pub mod error;
pub mod event;
pub mod list;
pub mod path;
pub mod record;

pub use command::Command;
pub use errno::ErrorKind;
pub use event::{format_mem_event, parse_mem_event, Access, MemEvent};
pub use path::{
    strip_scheme_prefix, AdmittedPath, AdmittedPiece, OpenPath, Options, PathError, RingSize, Target,
    DEFAULT_RING, EVENTS_MARK, EVENTS_V1_MARK, MAX_RING, SCHEME_PREFIX,
};
pub use record::{
    CountRecord, EventRecord, COUNT_RECORD_SIZE, EVENT_KERNEL_MODE, EVENT_RECORD_SIZE, EVENT_RECORD_V1_SIZE,
    EVENT_STOPPED,
};
pub use list::{
    ListEntry, ListRequest, Listing, ListedPiece, Placement, BpState, CpuSpan, LIST_HANDLES_PER_UID, LIST_NAME,
    LIST_PAGE_BYTES, LIST_VERSION,
};

/// Name given to `dup` on a breakpoint handle to open its hit stream of
/// version-2 records ([`EVENT_RECORD_SIZE`] bytes each: thread id and
/// flags included).
pub const EVENTS_DUP_NAME: &str = "events-v2";
/// Name of the stream of version-1 records ([`EVENT_RECORD_V1_SIZE`]
/// bytes, no thread id), kept for clients built before version 2.
pub const EVENTS_V1_DUP_NAME: &str = "events";
/// Open breakpoints a non-root user may hold unless hwbpd is configured
/// otherwise (contract section 3).
pub const DEFAULT_USER_QUOTA: usize = 64;
/// The largest `ring=` a non-root user may ask for (larger: EPERM).
/// Contract section 7: it bounds hwbpd's memory per uid.
pub const USER_MAX_RING: u32 = 4096;
/// The largest `ring=` hwbpd accepts from root (larger: EINVAL).
pub const ROOT_MAX_RING: u32 = 65536;
/// Event streams a uid may hold per breakpoint of its quota (EMFILE past
/// `STREAMS_PER_QUOTA x quota`; contract section 7).
pub const STREAMS_PER_QUOTA: usize = 4;
/// Debug address registers per CPU on x86.
pub const SLOTS_PER_CPU: usize = 4;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod list_tests;
