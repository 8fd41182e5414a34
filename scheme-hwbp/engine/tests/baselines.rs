//! The benchmark's baselines (Linux's pre-2022 task walk and 2022
//! histograms) and the engine's `Load` give the brute-force answer on every
//! sequence of reserves and releases, so the benchmark compares equals.

use std::collections::BTreeMap;

use hwbp_engine::baseline::histogram::Histograms;
use hwbp_engine::baseline::walk::TaskWalk;
use hwbp_engine::baseline::{BpDesc, Handle, LoadAccounting, SlotAccounting};
use proptest::prelude::*;

const CPUS: u32 = 3;

/// Linux's rule by enumeration: for every CPU and every task that could be
/// running there (or none), the breakpoints that would be armed.
fn admissible(bps: &[BpDesc]) -> bool {
    let tasks = [None, Some(1), Some(2), Some(3)];
    (0..CPUS).all(|c| {
        tasks.iter().all(|&running| {
            let on_cpu = |bp: &&BpDesc| bp.cpu.is_none_or(|x| x == c);
            bps.iter().filter(on_cpu).filter(|bp| bp.task.is_none() || bp.task == running).count() <= 4
        })
    })
}

#[derive(Clone, Debug)]
enum Op {
    Reserve(BpDesc),
    Release(usize),
}

fn desc() -> impl Strategy<Value = BpDesc> {
    prop_oneof![
        3 => (1..=3u32).prop_map(|t| BpDesc { task: Some(t), cpu: None }),
        2 => (1..=3u32, 0..CPUS).prop_map(|(t, c)| BpDesc { task: Some(t), cpu: Some(c) }),
        2 => (0..CPUS).prop_map(|c| BpDesc { task: None, cpu: Some(c) }),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(prop_oneof![3 => desc().prop_map(Op::Reserve), 2 => any::<usize>().prop_map(Op::Release)], 1..60)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn walk_histogram_and_load_all_give_the_brute_force_answer(ops in ops()) {
        let mut walk = TaskWalk::new(CPUS);
        let mut hist = Histograms::new(CPUS);
        let mut load = LoadAccounting::new(CPUS);
        let mut live: BTreeMap<Handle, BpDesc> = BTreeMap::new();
        let mut next: Handle = 0;
        for op in ops {
            match op {
                Op::Reserve(bp) => {
                    let mut with: Vec<BpDesc> = live.values().copied().collect();
                    with.push(bp);
                    let want = admissible(&with);
                    next += 1;
                    prop_assert_eq!(walk.reserve(next, bp).is_ok(), want, "walk {:?}", bp);
                    prop_assert_eq!(hist.reserve(next, bp).is_ok(), want, "histogram {:?}", bp);
                    prop_assert_eq!(load.reserve(next, bp).is_ok(), want, "load {:?}", bp);
                    if want {
                        live.insert(next, bp);
                    }
                }
                Op::Release(i) => {
                    if live.is_empty() {
                        continue;
                    }
                    let h = *live.keys().nth(i % live.len()).unwrap();
                    let bp = live.remove(&h).unwrap();
                    walk.release(h, bp);
                    hist.release(h, bp);
                    load.release(h, bp);
                }
            }
        }
        let order: Vec<(Handle, BpDesc)> = live.iter().map(|(h, b)| (*h, *b)).collect();
        let mut fresh = TaskWalk::new(CPUS);
        for &(h, bp) in &order {
            fresh.reserve(h, bp).unwrap();
        }
        prop_assert_eq!(TaskWalk::bulk(CPUS, &order), fresh, "bulk set-up equals reserving one by one");
        for (h, bp) in order {
            load.release(h, bp);
        }
        prop_assert!(load.load.is_empty());
    }
}
