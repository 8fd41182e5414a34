//! The switch path's shortcuts (lazy, unchanged plan, equal pieces) never
//! leave the registers other than a full composition would: for random
//! sequences of switches among plans (copies and equal rebuilds included)
//! and CPU-plan changes, after every switch the mirror equals
//! `compose(cpu, cpu_plan, next)` and the register file holds exactly it.

use hwbp_kern::plan::CpuPiece;
use hwbp_kern::regs::RegisterFile;
use hwbp_kern::{
    Access, ContextPiece, ContextPlan, CpuDebugState, CpuFilter, CpuPlan, Len, Piece, Slot, compose,
};
use proptest::prelude::*;

const CPU: u32 = 1;

/// A small pool of pieces so that plans often coincide.
fn piece(i: u8) -> Piece {
    let (len, access) = match i % 3 {
        0 => (Len::Eight, Access::Write),
        1 => (Len::Four, Access::ReadWrite),
        _ => (Len::One, Access::Exec),
    };
    Piece::new(0x1000 + 8 * u64::from(i % 6), len, access).unwrap()
}

fn context_plan(spec: &[(u8, u8, bool)]) -> ContextPlan {
    let mut plan = ContextPlan::EMPTY;
    for &(p, token, here) in spec {
        let cpu = if here { CpuFilter::Only(CPU) } else { CpuFilter::Only(CPU + 1) };
        let cpu = if token % 2 == 0 { CpuFilter::Any } else { cpu };
        // Plans that would not fit are simply shorter.
        let _ = plan.push(ContextPiece { piece: piece(p), token: u64::from(token % 4), cpu, stop: false });
    }
    plan
}

#[derive(Clone, Debug)]
enum Step {
    /// Switch to plan i of the pool (None: a context without a plan).
    Switch(Option<usize>),
    /// Rebuild plan i with the same pieces (a new stamp).
    Rebuild(usize),
    /// Replace the CPU plan with n pieces.
    SetCpuPlan(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => proptest::option::of(0..4usize).prop_map(Step::Switch),
        1 => (0..4usize).prop_map(Step::Rebuild),
        1 => (0..4u8).prop_map(Step::SetCpuPlan),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn every_switch_leaves_exactly_the_composition(
        specs in proptest::collection::vec(proptest::collection::vec((0u8..6, 0u8..8, any::<bool>()), 0..6), 4),
        steps in proptest::collection::vec(step(), 1..60),
    ) {
        let mut pool: Vec<ContextPlan> = specs.iter().map(|s| context_plan(s)).collect();
        let mut cpu = CpuDebugState::new(CPU);
        let mut regs = RegisterFile::RESET;
        let mut cpu_plan = CpuPlan::EMPTY;
        for step in steps {
            match step {
                Step::Switch(i) => {
                    let next = i.map(|i| &pool[i]);
                    cpu.switch_to(&mut regs, next);
                    let expected = compose(CPU, &cpu_plan, next);
                    prop_assert_eq!(cpu.loaded(), &expected);
                    prop_assert_eq!(regs.dr7, expected.dr7());
                    for slot in Slot::ALL {
                        if expected.slot(slot).is_some() {
                            prop_assert_eq!(regs.addr[slot.index()], expected.addr(slot));
                        }
                    }
                }
                Step::Rebuild(i) => {
                    let copy = ContextPlan::from_pieces(pool[i].iter().copied()).unwrap();
                    prop_assert_eq!(&copy, &pool[i]);
                    pool[i] = copy;
                }
                Step::SetCpuPlan(n) => {
                    cpu_plan = CpuPlan::from_pieces((0..n).map(|k| CpuPiece {
                        piece: Piece::new(0xffff_8000_0000_0000 + 8 * u64::from(k), Len::Eight, Access::Write).unwrap(),
                        token: 100 + u64::from(k),
                    }))
                    .unwrap();
                    cpu.set_plan(cpu_plan);
                }
            }
        }
    }
}
