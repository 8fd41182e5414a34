//! Linux's accounting since 2022 (Marco Elver's rework): task breakpoints
//! hashed by task, slot-count histograms per CPU and global.

use hwbp_kern::CpuId;

use super::{BpDesc, Handle, NoSpace, SLOTS, SlotAccounting};
use crate::Pid;
use rustc_hash::FxHashMap;

const N: usize = SLOTS as usize;

/// `count[n - 1]`: how many things hold `n` slots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Hist([i32; N]);

impl Hist {
    /// Move one thing from `old` slots to `old + val` (Linux's
    /// `bp_slots_histogram_add`).
    fn add(&mut self, old: i32, val: i32) {
        let old_idx = old - 1;
        let new_idx = old_idx + val;
        if old_idx >= 0 {
            self.0[old_idx as usize] -= 1;
        }
        if new_idx >= 0 {
            self.0[new_idx as usize] += 1;
        }
    }
    fn max(&self) -> i32 {
        (0..N).rev().find(|&i| self.0[i] > 0).map_or(0, |i| i as i32 + 1)
    }
    fn max_merge(&self, other: &Hist) -> i32 {
        (0..N).rev().find(|&i| self.0[i] + other.0[i] > 0).map_or(0, |i| i as i32 + 1)
    }
}

#[derive(Clone, Debug)]
pub struct Histograms {
    cpus: u32,
    /// Cpu-wide slots per CPU.
    cpu_pinned: Vec<i32>,
    /// CPUs by cpu-wide slot count.
    cpu_pinned_hist: Hist,
    /// Per CPU: tasks with CPU-bound breakpoints, by slots on that CPU.
    tsk_pinned: Vec<Hist>,
    /// Tasks with only CPU-independent breakpoints, by slots.
    tsk_pinned_all: Hist,
    /// Task breakpoints by task (Linux: an rhltable keyed by task).
    task_bps: FxHashMap<Pid, Vec<(Handle, Option<CpuId>)>>,
}

impl Histograms {
    pub fn new(cpus: u32) -> Self {
        Histograms {
            cpus,
            cpu_pinned: vec![0; cpus as usize],
            cpu_pinned_hist: Hist::default(),
            tsk_pinned: vec![Hist::default(); cpus as usize],
            tsk_pinned_all: Hist::default(),
            task_bps: FxHashMap::default(),
        }
    }

    fn max_task_bp_pinned(&self, cpu: CpuId) -> i32 {
        self.tsk_pinned[cpu as usize].max_merge(&self.tsk_pinned_all)
    }

    /// Slots `pid` holds on `cpu` (`None`: -1 if not the same on every
    /// CPU, i.e. the task has CPU-bound breakpoints).
    fn task_bp_pinned(&self, cpu: Option<CpuId>, pid: Pid) -> i32 {
        let Some(list) = self.task_bps.get(&pid) else { return 0 };
        let mut count = 0;
        for &(_, c) in list {
            if let Some(c) = c {
                match cpu {
                    None => return -1,
                    Some(cpu) if cpu != c => continue,
                    Some(_) => {}
                }
            }
            count += 1;
        }
        count
    }

    fn cpus_of(&self, bp: BpDesc) -> std::ops::Range<CpuId> {
        match bp.cpu {
            Some(c) => c..c + 1,
            None => 0..self.cpus,
        }
    }

    fn max_bp_pinned_slots(&self, bp: BpDesc) -> i32 {
        if let (Some(pid), None) = (bp.task, bp.cpu) {
            let max = self.task_bp_pinned(None, pid);
            if max >= 0 {
                return max + self.cpu_pinned_hist.max();
            }
        }
        let mut pinned = 0;
        for cpu in self.cpus_of(bp) {
            let task = match bp.task {
                None => self.max_task_bp_pinned(cpu),
                Some(pid) => self.task_bp_pinned(Some(cpu), pid),
            };
            pinned = pinned.max(self.cpu_pinned[cpu as usize] + task);
        }
        pinned
    }

    fn toggle(&mut self, h: Handle, bp: BpDesc, enable: bool) {
        let weight = if enable { 1 } else { -1 };
        let Some(pid) = bp.task else {
            if let Some(c) = bp.cpu {
                let v = &mut self.cpu_pinned[c as usize];
                self.cpu_pinned_hist.add(*v, weight);
                *v += weight;
            }
            return;
        };
        if !enable && let Some(list) = self.task_bps.get_mut(&pid) {
            if let Some(i) = list.iter().position(|&(x, _)| x == h) {
                list.swap_remove(i);
            }
            if list.is_empty() {
                self.task_bps.remove(&pid);
            }
        }
        let next = self.task_bp_pinned(None, pid);
        if next >= 0 {
            match bp.cpu {
                // Case 1: only CPU-independent breakpoints.
                None => {
                    let old = if enable { next } else { next + 1 };
                    self.tsk_pinned_all.add(old, weight);
                }
                // Case 2.a: the task's first CPU-bound breakpoint.
                Some(c) if enable => {
                    for hist in &mut self.tsk_pinned {
                        hist.add(0, next);
                    }
                    self.tsk_pinned[c as usize].add(next, weight);
                    self.tsk_pinned_all.add(next, -next);
                }
                // Case 2.b: the task's last CPU-bound breakpoint goes.
                Some(c) => {
                    self.tsk_pinned[c as usize].add(next + 1, weight);
                    for hist in &mut self.tsk_pinned {
                        hist.add(next, -next);
                    }
                    self.tsk_pinned_all.add(0, next);
                }
            }
        } else {
            // Case 3: the task keeps CPU-bound breakpoints.
            for cpu in self.cpus_of(bp) {
                let mut n = self.task_bp_pinned(Some(cpu), pid);
                if !enable {
                    n += 1;
                }
                self.tsk_pinned[cpu as usize].add(n, weight);
            }
        }
        if enable {
            self.task_bps.entry(pid).or_default().push((h, bp.cpu));
        }
    }
}

impl SlotAccounting for Histograms {
    fn reserve(&mut self, h: Handle, bp: BpDesc) -> Result<(), NoSpace> {
        if self.max_bp_pinned_slots(bp) + 1 > SLOTS as i32 {
            return Err(NoSpace);
        }
        self.toggle(h, bp, true);
        Ok(())
    }

    fn release(&mut self, h: Handle, bp: BpDesc) {
        self.toggle(h, bp, false);
    }
}
