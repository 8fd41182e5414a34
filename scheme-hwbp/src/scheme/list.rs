//! The listing view (issue 14): `openat(root, "list[?from=<id>]")` gives a
//! read-only, positioned handle holding a text snapshot of the breakpoints
//! the caller may see — root every one, any other uid those it owns —
//! in the format of [`libhwbp::abi::list`] (hwbpd produces it with those
//! types; clients parse it with `Listing::parse`).
//!
//! Bounds (hostile callers): the snapshot is made once, at open, and holds
//! at most `LIST_PAGE_BYTES` of entries (at least one; `next=` says where
//! the rest starts), so `list_snapshot_bound(cpus)` bytes; a non-root uid
//! holds at most `LIST_HANDLES_PER_UID` listing handles (EMFILE beyond); a
//! read copies `min(buffer, snapshot - offset)` bytes and allocates
//! nothing; an offset at or past the end (any u64) reads 0 bytes. Finding a
//! page walks only the breakpoints the caller may see, from `from` on (an
//! index by id and by owner), never other users' ones.
//!
//! Which register holds a piece: for a cpu-wide breakpoint the register the
//! CPU's plan names; for a task breakpoint the register the kernel's
//! composition (`hwbp_kern::compose`, through `Engine::assignment`) gives
//! its piece on each CPU the task may run on.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use libhwbp::abi::list::{ListEnd, ListHeader, ListRequest, Placement, LIST_HANDLES_PER_UID, LIST_PAGE_BYTES, LIST_VERSION};
use libhwbp::abi::{BpState, ListEntry, ListedPiece};

use super::*;

/// An open listing handle: the snapshot taken at open.
pub(super) struct ListHandle {
    /// The caller it was made for (charged to this uid).
    uid: Uid,
    request: ListRequest,
    text: Box<[u8]>,
}

impl ListHandle {
    /// Bytes of the snapshot at `offset`: `min(buf, rest)` of them, 0 at or
    /// past the end.
    pub(super) fn read_at(&self, buf: &mut [u8], offset: u64) -> usize {
        let Some(rest) = usize::try_from(offset).ok().and_then(|start| self.text.get(start..)) else { return 0 };
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        n
    }

    pub(super) fn len(&self) -> usize {
        self.text.len()
    }

    pub(super) fn uid(&self) -> Uid {
        self.uid
    }

    /// `/scheme/hwbp/list[?from=<id>]`.
    pub(super) fn path(&self) -> String {
        format!("{}{}", libhwbp::abi::SCHEME_PREFIX, self.request)
    }
}

/// What the listing needs beside the breakpoints themselves.
#[derive(Default)]
pub(super) struct ListViews {
    /// Listing handles each non-root uid holds (the cap).
    held: FxHashMap<Uid, usize>,
    /// Every breakpoint the scheme keeps state for, by id (root's view) and
    /// by owner (everyone else's): a page starts at `from` without walking
    /// what the caller may not see.
    by_id: BTreeSet<BpId>,
    by_owner: BTreeSet<(Uid, BpId)>,
}

impl ListViews {
    /// The scheme now keeps state for breakpoint `id` of `owner`.
    pub(super) fn added(&mut self, owner: Uid, id: BpId) {
        self.by_id.insert(id);
        self.by_owner.insert((owner, id));
    }

    /// The scheme forgot breakpoint `id`.
    pub(super) fn removed(&mut self, owner: Uid, id: BpId) {
        self.by_id.remove(&id);
        self.by_owner.remove(&(owner, id));
    }

    /// Listing handles `uid` holds.
    pub(super) fn held_by(&self, uid: Uid) -> usize {
        self.held.get(&uid).copied().unwrap_or(0)
    }

    fn check(&self, uid: Uid) -> std::result::Result<(), Refusal> {
        let held = self.held_by(uid);
        if uid != ROOT_UID && held >= LIST_HANDLES_PER_UID {
            return Err(refusal(EMFILE, format!("{held} of {LIST_HANDLES_PER_UID} listing handles held")));
        }
        Ok(())
    }

    pub(super) fn closed(&mut self, uid: Uid) {
        if let Some(n) = self.held.get_mut(&uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.held.remove(&uid);
            }
        }
    }

    /// The ids `uid` may see, from `from` on, in id order.
    fn visible(&self, uid: Uid, from: BpId) -> Box<dyn Iterator<Item = BpId> + '_> {
        if uid == ROOT_UID {
            Box::new(self.by_id.range(from..).copied())
        } else {
            Box::new(self.by_owner.range((uid, from)..=(uid, BpId::MAX)).map(|&(_, id)| id))
        }
    }
}

impl<K: Kernel> HwbpScheme<K> {
    /// Open a listing handle for the caller: the snapshot is made now.
    pub(super) fn open_list(&mut self, req: ListRequest, ctx: &CallerCtx) -> std::result::Result<usize, Refusal> {
        self.views.check(ctx.uid)?;
        // Exits first, as a read does: ended breakpoints show as ended.
        self.collect();
        let text = self.snapshot(req, ctx.uid)?;
        self.handles.try_reserve(1).map_err(out_of_memory("the handle table"))?;
        self.views.held.try_reserve(1).map_err(out_of_memory("the listing table"))?;
        if ctx.uid != ROOT_UID {
            *self.views.held.entry(ctx.uid).or_insert(0) += 1;
        }
        Ok(self.new_handle(Handle::List(ListHandle { uid: ctx.uid, request: req, text })))
    }

    /// The text of one page for `uid`, from `req.from` on.
    fn snapshot(&self, req: ListRequest, uid: Uid) -> std::result::Result<Box<[u8]>, Refusal> {
        let cpus = self.kernel.cpu_count();
        let header = ListHeader { version: LIST_VERSION, uid, cpus, now_ns: self.kernel.now_ns(), from: req.from };
        let mut text = String::new();
        text.try_reserve(LIST_PAGE_BYTES.min(4096)).map_err(out_of_memory("the listing"))?;
        let _ = write!(text, "{header}");
        let (mut entries, mut bytes, mut next) = (0u64, 0usize, None);
        let mut line = String::new();
        for id in self.views.visible(uid, req.from) {
            let Some(entry) = self.list_entry(id) else { continue };
            line.clear();
            let _ = write!(line, "{entry}");
            // Whole entries only, up to a page (the first one always).
            if entries > 0 && bytes.saturating_add(line.len()) > LIST_PAGE_BYTES {
                next = Some(id);
                break;
            }
            text.try_reserve(line.len()).map_err(out_of_memory("the listing"))?;
            text.push_str(&line);
            bytes += line.len();
            entries += 1;
        }
        let end = ListEnd { entries, next }.to_string();
        text.try_reserve_exact(end.len()).map_err(out_of_memory("the listing"))?;
        text.push_str(&end);
        Ok(text.into_bytes().into_boxed_slice())
    }

    /// Breakpoint `id` as the listing shows it.
    fn list_entry(&self, id: BpId) -> Option<ListEntry> {
        let bp = self.bps.get(&id)?;
        let state = if !bp.open {
            BpState::Closed
        } else if bp.ended {
            BpState::Ended
        } else {
            BpState::Live
        };
        let armed = state == BpState::Live && bp.enabled && bp.in_engine;
        let running = armed && self.engine.is_running(id) == Some(true);
        let pieces = match (self.engine.pieces(id), self.engine.tokens(id)) {
            (Some(pieces), Some(tokens)) if armed => {
                let slots = self.slots_of(bp.path.target, tokens, running);
                pieces
                    .iter()
                    .zip(slots)
                    .filter_map(|(p, place)| {
                        let len = if p.access() == hwbp_kern::Access::Exec { libhwbp::abi::event::EXEC_LEN } else { p.len().bytes() };
                        Some(ListedPiece { piece: AdmittedPiece::new(p.addr(), len, to_abi_access(p.access()))?, place })
                    })
                    .collect()
            }
            _ => bp.pieces.iter().map(|&piece| ListedPiece { piece, place: Placement::Off }).collect(),
        };
        Some(ListEntry { id, owner: bp.owner, path: bp.path, state, enabled: bp.enabled, count: self.count_record(id), pieces })
    }

    /// Where each of a live, enabled breakpoint's pieces (by token) is now.
    fn slots_of(&self, target: Target, tokens: &[hwbp_kern::Token], running: bool) -> Vec<Placement> {
        if !running {
            return vec![Placement::Waiting; tokens.len()];
        }
        let cpus = self.kernel.cpu_count();
        let on = |only: Option<CpuId>| (0..cpus).filter(move |c| only.is_none_or(|o| o == *c));
        let mut per_piece: Vec<Vec<(u32, u8)>> = vec![Vec::new(); tokens.len()];
        let mut place = |cpu: CpuId, loaded: &mut dyn Iterator<Item = (hwbp_kern::Slot, hwbp_kern::Token)>| {
            for (slot, token) in loaded {
                for (i, _) in tokens.iter().enumerate().filter(|&(_, t)| *t == token) {
                    per_piece[i].push((cpu, slot.index() as u8));
                }
            }
        };
        match scope_of(target) {
            Scope::Task { pid, cpu } => {
                for c in on(cpu) {
                    let comp = self.engine.assignment(c, Some(pid));
                    let mut it = comp
                        .iter()
                        .filter(|(_, l)| l.origin == hwbp_kern::compose::Origin::Context)
                        .map(|(s, l)| (s, l.token));
                    place(c, &mut it);
                }
            }
            Scope::Cpu(cpu) => {
                let mut it = self.engine.cpu_plan(cpu).iter().map(|(s, p)| (s, p.token));
                place(cpu, &mut it);
            }
            Scope::AllCpus => {
                for c in on(None) {
                    let mut it = self.engine.cpu_plan(c).iter().map(|(s, p)| (s, p.token));
                    place(c, &mut it);
                }
            }
        }
        per_piece.into_iter().map(Placement::from_cpus).collect()
    }
}
