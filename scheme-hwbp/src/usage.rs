//! What each uid holds in hwbpd, against the caps of contract section 7:
//! breakpoints (the quota) and event streams (`STREAMS_PER_QUOTA` x the
//! quota). A breakpoint is held from its open until its *last* handle —
//! the breakpoint handle or any of its event streams — is closed, because
//! until then its state and ring stay in memory. Root has no caps.
//!
//! Charging the owner of the breakpoint (not whoever holds a stream) keeps
//! the bound per uid simple: everything hwbpd keeps for a breakpoint is
//! charged to the uid that opened it.

use std::collections::TryReserveError;

use rustc_hash::FxHashMap;

use crate::kernel::Uid;

const ROOT_UID: Uid = 0;

/// What hwbpd keeps for one breakpoint beside its ring's records, with
/// the `STREAMS_PER_QUOTA` streams a uid may hold per breakpoint: the
/// scheme's state, the engine's, the handles and stream lists, and the
/// share of the hash tables that hold them. Measured under the worst
/// pattern found (benches/scheme.rs, section 4: 5,314 bytes on a fresh
/// server, whose tables all grow from empty), then rounded up to leave
/// room for a table that has just doubled. tests/tests/scheme_alloc.rs
/// checks the bound.
pub const BYTES_PER_BREAKPOINT: usize = 8 * 1024;

/// The most memory hwbpd holds for a non-root uid with `quota` breakpoints
/// of rings of `ring` records: quota x (ring x record size + constant).
pub const fn bytes_bound(quota: usize, ring: usize) -> usize {
    quota * (ring * libhwbp::abi::EVENT_RECORD_SIZE + BYTES_PER_BREAKPOINT)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    pub breakpoints: usize,
    pub streams: usize,
}

/// Which cap a new breakpoint or stream would pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverCap {
    Breakpoints { held: usize, quota: usize },
    Streams { held: usize, cap: usize },
}

#[derive(Debug)]
pub struct Usage {
    quota: usize,
    streams_per_quota: usize,
    held: FxHashMap<Uid, Held>,
}

impl Usage {
    pub fn new(quota: usize, streams_per_quota: usize) -> Self {
        Usage { quota, streams_per_quota, held: FxHashMap::default() }
    }

    pub fn held(&self, uid: Uid) -> Held {
        self.held.get(&uid).copied().unwrap_or_default()
    }

    /// Whether `uid` may hold one more breakpoint.
    pub fn check_breakpoint(&self, uid: Uid) -> Result<(), OverCap> {
        let held = self.held(uid).breakpoints;
        if uid != ROOT_UID && held >= self.quota {
            return Err(OverCap::Breakpoints { held, quota: self.quota });
        }
        Ok(())
    }

    /// Whether `uid` may hold one more event stream.
    pub fn check_stream(&self, uid: Uid) -> Result<(), OverCap> {
        let held = self.held(uid).streams;
        let cap = self.quota.saturating_mul(self.streams_per_quota);
        if uid != ROOT_UID && held >= cap {
            return Err(OverCap::Streams { held, cap });
        }
        Ok(())
    }

    /// Room for one more uid, so that `add_*` never allocates.
    pub fn try_reserve(&mut self) -> Result<(), TryReserveError> {
        self.held.try_reserve(1)
    }

    pub fn add_breakpoint(&mut self, uid: Uid) {
        self.held.entry(uid).or_default().breakpoints += 1;
    }

    pub fn add_stream(&mut self, uid: Uid) {
        self.held.entry(uid).or_default().streams += 1;
    }

    pub fn remove_breakpoint(&mut self, uid: Uid) {
        self.update(uid, |h| h.breakpoints = h.breakpoints.saturating_sub(1));
    }

    pub fn remove_stream(&mut self, uid: Uid) {
        self.update(uid, |h| h.streams = h.streams.saturating_sub(1));
    }

    fn update(&mut self, uid: Uid, f: impl FnOnce(&mut Held)) {
        if let Some(h) = self.held.get_mut(&uid) {
            f(h);
            if *h == Held::default() {
                self.held.remove(&uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_apply_per_uid_and_not_to_root() {
        let mut u = Usage::new(2, 4);
        for _ in 0..2 {
            u.check_breakpoint(7).unwrap();
            u.add_breakpoint(7);
        }
        assert_eq!(u.check_breakpoint(7), Err(OverCap::Breakpoints { held: 2, quota: 2 }));
        assert_eq!(u.check_breakpoint(8), Ok(()));
        for _ in 0..8 {
            u.add_stream(7);
            u.add_breakpoint(0);
            u.add_stream(0);
        }
        assert_eq!(u.check_stream(7), Err(OverCap::Streams { held: 8, cap: 8 }));
        assert_eq!((u.check_breakpoint(0), u.check_stream(0)), (Ok(()), Ok(())));
        u.remove_breakpoint(7);
        u.check_breakpoint(7).unwrap();
    }

    #[test]
    fn a_uid_holding_nothing_leaves_no_entry() {
        let mut u = Usage::new(2, 4);
        u.add_breakpoint(7);
        u.add_stream(7);
        u.remove_stream(7);
        u.remove_breakpoint(7);
        assert!(u.held.is_empty());
    }
}
