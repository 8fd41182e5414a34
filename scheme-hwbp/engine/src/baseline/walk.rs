//! Linux's accounting before 2022: one global list of task breakpoints,
//! walked per CPU.

use hwbp_kern::CpuId;

use super::{BpDesc, Handle, NoSpace, SLOTS, SlotAccounting};
use crate::Pid;
use rustc_hash::FxHashMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskWalk {
    cpus: u32,
    /// Cpu-wide slots per CPU.
    cpu_pinned: Vec<u32>,
    /// Per CPU: `tsk_pinned[c][n - 1]` tasks hold `n` slots on `c`.
    tsk_pinned: Vec<[u32; SLOTS as usize]>,
    /// Every task breakpoint (Linux: `bp_task_head`, a linked list).
    list: Vec<(Handle, Pid, Option<CpuId>)>,
    /// Where each handle sits in `list`, so removal is O(1) like
    /// `list_del`.
    pos: FxHashMap<Handle, usize>,
}

impl TaskWalk {
    pub fn new(cpus: u32) -> Self {
        TaskWalk {
            cpus,
            cpu_pinned: vec![0; cpus as usize],
            tsk_pinned: vec![[0; SLOTS as usize]; cpus as usize],
            list: Vec::new(),
            pos: FxHashMap::default(),
        }
    }

    /// Build the state `bps` would leave after being reserved one by one
    /// (all assumed admissible), without the quadratic cost; for setting up
    /// the benchmark at sizes where reserving one by one would take hours.
    pub fn bulk(cpus: u32, bps: &[(Handle, BpDesc)]) -> Self {
        let mut w = TaskWalk::new(cpus);
        let mut per_task: FxHashMap<Pid, (u32, FxHashMap<CpuId, u32>)> = FxHashMap::default();
        for &(h, bp) in bps {
            match (bp.task, bp.cpu) {
                (None, Some(c)) => w.cpu_pinned[c as usize] += 1,
                (None, None) => {}
                (Some(pid), cpu) => {
                    w.pos.insert(h, w.list.len());
                    w.list.push((h, pid, cpu));
                    let t = per_task.entry(pid).or_default();
                    match cpu {
                        None => t.0 += 1,
                        Some(c) => *t.1.entry(c).or_default() += 1,
                    }
                }
            }
        }
        for (any, only) in per_task.values() {
            for c in 0..cpus {
                let n = any + only.get(&c).copied().unwrap_or(0);
                if n > 0 {
                    w.tsk_pinned[c as usize][(n - 1) as usize] += 1;
                }
            }
        }
        w
    }

    fn max_task_bp_pinned(&self, cpu: CpuId) -> u32 {
        let h = &self.tsk_pinned[cpu as usize];
        (0..SLOTS as usize).rev().find(|&i| h[i] > 0).map_or(0, |i| i as u32 + 1)
    }

    /// Slots `pid` holds on `cpu`: a walk of every task breakpoint.
    fn task_bp_pinned(&self, cpu: CpuId, pid: Pid) -> u32 {
        self.list.iter().filter(|&&(_, t, c)| t == pid && c.is_none_or(|c| c == cpu)).count() as u32
    }

    fn cpus_of(&self, bp: BpDesc) -> std::ops::Range<CpuId> {
        match bp.cpu {
            Some(c) => c..c + 1,
            None => 0..self.cpus,
        }
    }

    fn toggle_task_slot(&mut self, cpu: CpuId, pid: Pid, weight: i32) {
        let old = self.task_bp_pinned(cpu, pid) as i32 - 1;
        let new = old + weight;
        let h = &mut self.tsk_pinned[cpu as usize];
        if old >= 0 {
            h[old as usize] -= 1;
        }
        if new >= 0 {
            h[new as usize] += 1;
        }
    }

    fn toggle(&mut self, h: Handle, bp: BpDesc, enable: bool) {
        let weight = if enable { 1 } else { -1 };
        let Some(pid) = bp.task else {
            if let Some(c) = bp.cpu {
                let v = &mut self.cpu_pinned[c as usize];
                *v = v.wrapping_add_signed(weight);
            }
            return;
        };
        for cpu in self.cpus_of(bp) {
            self.toggle_task_slot(cpu, pid, weight);
        }
        if enable {
            self.pos.insert(h, self.list.len());
            self.list.push((h, pid, bp.cpu));
        } else if let Some(i) = self.pos.remove(&h) {
            self.list.swap_remove(i);
            if let Some(&(moved, _, _)) = self.list.get(i) {
                self.pos.insert(moved, i);
            }
        }
    }
}

impl SlotAccounting for TaskWalk {
    fn reserve(&mut self, h: Handle, bp: BpDesc) -> Result<(), NoSpace> {
        let mut pinned = 0;
        for cpu in self.cpus_of(bp) {
            let task = match bp.task {
                None => self.max_task_bp_pinned(cpu),
                Some(pid) => self.task_bp_pinned(cpu, pid),
            };
            pinned = pinned.max(self.cpu_pinned[cpu as usize] + task);
        }
        if pinned + 1 > SLOTS {
            return Err(NoSpace);
        }
        self.toggle(h, bp, true);
        Ok(())
    }

    fn release(&mut self, h: Handle, bp: BpDesc) {
        self.toggle(h, bp, false);
    }
}
