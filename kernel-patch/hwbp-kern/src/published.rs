//! The loaded registers as the #DB handler reads them, published by the
//! switch path with atomics.
//!
//! The switch path holds the CPU's [`CpuDebugState`](crate::CpuDebugState)
//! mutably, and a #DB (a kernel watch on data the switch path touches) can
//! interrupt it. A shared reference to that state taken by the handler
//! would alias the switch path's `&mut`: undefined behaviour in Rust's
//! model, however harmless the machine code looks. So the state publishes
//! what the handler needs (token, address and kind of each loaded
//! register) into this separate per-CPU block, before DR7 enables a changed
//! register, and the handler reads only this block.

use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use crate::NUM_SLOTS;
use crate::compose::Composition;
use crate::piece::{Slot, Token};
use crate::trap::LoadedView;

#[derive(Debug, Default)]
pub struct PublishedLoad {
    token: [AtomicU64; NUM_SLOTS],
    addr: [AtomicU64; NUM_SLOTS],
    used: AtomicU8,
    exec: AtomicU8,
    stop: AtomicU8,
    dr7: AtomicU64,
}

impl PublishedLoad {
    pub const fn new() -> Self {
        PublishedLoad {
            token: [const { AtomicU64::new(0) }; NUM_SLOTS],
            addr: [const { AtomicU64::new(0) }; NUM_SLOTS],
            used: AtomicU8::new(0),
            exec: AtomicU8::new(0),
            stop: AtomicU8::new(0),
            dr7: AtomicU64::new(0),
        }
    }

    /// Publish `loaded` (the switch path, on this CPU, before it enables a
    /// changed register). The masks go last, with release ordering, so a
    /// reader that sees a register as used sees its token and address.
    pub fn publish(&self, loaded: &Composition) {
        for (slot, l) in loaded.iter() {
            if let (Some(t), Some(a)) = (self.token.get(slot.index()), self.addr.get(slot.index())) {
                t.store(l.token, Ordering::Relaxed);
                a.store(l.piece.addr(), Ordering::Relaxed);
            }
        }
        self.dr7.store(loaded.dr7(), Ordering::Relaxed);
        self.exec.store(loaded.exec_slots(), Ordering::Release);
        self.stop.store(loaded.stop_slots(), Ordering::Release);
        self.used.store(loaded.used_slots(), Ordering::Release);
    }
}

impl PublishedLoad {
    /// DR7 as the loaded composition sets it: what the hardware holds
    /// whenever this CPU runs user code.
    pub fn dr7(&self) -> u64 {
        self.dr7.load(Ordering::Acquire)
    }
}

impl LoadedView for PublishedLoad {
    fn used_slots(&self) -> u8 {
        self.used.load(Ordering::Acquire)
    }

    fn exec_slots(&self) -> u8 {
        self.exec.load(Ordering::Acquire)
    }

    fn stop_slots(&self) -> u8 {
        self.stop.load(Ordering::Acquire)
    }

    fn piece_in(&self, slot: Slot) -> Option<(Token, u64)> {
        if self.used_slots() & slot.bit() == 0 {
            return None;
        }
        let token = self.token.get(slot.index())?.load(Ordering::Relaxed);
        let addr = self.addr.get(slot.index())?.load(Ordering::Relaxed);
        Some((token, addr))
    }
}
