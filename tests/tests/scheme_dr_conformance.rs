//! The simulated kernel's debug-register model against the shared vector
//! table, the same file the QEMU testbed runs on emulated hardware.

use hwbp_kern::conformance::{self, OpKind, Vector};
use hwbp_kern::regs::RegisterFile;
use hwbp_kern::{Slot, dr6};
use hwbpd::sim::dr_model::{self, ExecState, MemAccess};

const TABLE: &str = include_str!("../vectors/dr-conformance.txt");
/// The page the vectors' offsets are relative to (4 KiB aligned, user half).
const PAGE: u64 = 0x7f12_3456_7000;

fn registers(v: &Vector<'_>) -> RegisterFile {
    let mut regs = RegisterFile::RESET;
    for (slot, setup) in Slot::ALL.into_iter().zip(v.slots.iter()) {
        if let Some(s) = setup {
            regs.addr[slot.index()] = PAGE + s.offset;
            regs.dr7 |= dr_model::encode_raw(slot, s.len, s.access);
        }
    }
    regs
}

fn access(v: &Vector<'_>) -> MemAccess {
    let addr = PAGE + v.op.offset;
    let size = u64::from(v.op.size);
    match v.op.kind {
        OpKind::Read => MemAccess::read(addr, size),
        OpKind::Write => MemAccess::write(addr, size),
        OpKind::Exec => MemAccess::exec(addr),
    }
}

/// What DR6 B0-B3 hold when the first #DB of the instruction is delivered
/// (0: no #DB at all), as the testbed observes it in its handler.
fn observed(v: &Vector<'_>) -> u8 {
    let mut regs = registers(v);
    let mut seen = None;
    ExecState::default().run(&mut regs, &access(v), |r, _| {
        seen.get_or_insert((r.dr6 & dr6::B_MASK) as u8);
        r.dr6 = dr6::CLEAR;
        true
    });
    seen.unwrap_or(0)
}

#[test]
fn the_dr_model_matches_every_vector_of_the_shared_table() {
    let mut failures = Vec::new();
    let mut total = 0;
    for v in conformance::parse(TABLE) {
        let v = v.expect("the table parses");
        total += 1;
        let got = observed(&v);
        if got != v.expect {
            failures.push(format!("{}: expected {:#x}, model says {got:#x}", v.name, v.expect));
        }
    }
    assert!(total > 1000, "only {total} vectors");
    assert!(failures.is_empty(), "{} of {total} vectors differ:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn the_table_has_unaligned_and_multi_slot_vectors_the_model_must_handle() {
    let vectors: Vec<_> = conformance::parse(TABLE).map(Result::unwrap).collect();
    assert!(vectors.iter().any(|v| !v.is_aligned() && v.expect != 0));
    assert!(vectors.iter().any(|v| v.expect.count_ones() > 1));
    assert!(vectors.iter().any(|v| v.op.kind == OpKind::Exec && v.expect != 0));
}
