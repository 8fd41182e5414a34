//! A very small x86-64 interpreter: the instructions the simulated task's
//! program uses, decoded from real machine code, and nothing else.
//!
//! It does not touch debug registers: it tells its caller each memory
//! access an instruction makes ([`Access`]), in the order the CPU makes
//! them, so the caller can run each through the simulated kernel's x86
//! debug-register model. Instructions are executed in two halves:
//! [`decode`] (no side effects) and [`execute`].
//!
//! Supported (Intel syntax; `abs` is a 32-bit absolute address, encoded
//! ModRM mod=00 rm=100 + SIB 0x25):
//!
//! | bytes                  | instruction              |
//! |------------------------|--------------------------|
//! | `90`                   | `nop`                    |
//! | `cc`                   | `int3`                   |
//! | `b8+r id`              | `mov r32, imm32`         |
//! | `REX.W 8b /r abs`      | `mov r64, [abs]`         |
//! | `REX.W 03 /r abs`      | `add r64, [abs]`         |
//! | `REX.W 89 /r abs`      | `mov [abs], r64`         |
//! | `REX.W 83 /0 ib` (mod=11) | `add r64, imm8`       |
//! | `ff /1` (mod=11)       | `dec r32`                |
//! | `31 /r` (mod=11)       | `xor r32, r32`           |
//! | `e8 cd`                | `call rel32`             |
//! | `c3`                   | `ret`                    |
//! | `75 cb`, `74 cb`, `eb cb` | `jnz`, `jz`, `jmp` rel8 |
//! | `0f 05`                | `syscall` (only `exit`, rax = 60) |

use crate::regs::{Amd64Regs, gpr};

/// RFLAGS.ZF.
const ZF: u32 = 1 << 6;
/// RFLAGS.SF.
const SF: u32 = 1 << 7;
/// Linux's and this interpreter's `exit` system call number.
pub const SYS_EXIT: u64 = 60;

/// A memory access an instruction makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read { addr: u64, size: u64 },
    Write { addr: u64, size: u64 },
}

/// A decoded instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub len: u64,
    pub op: Op,
}

/// What an instruction does. Registers are gdb register numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Nop,
    Int3,
    MovImm32 { reg: usize, imm: u32 },
    Load { reg: usize, addr: u64 },
    AddLoad { reg: usize, addr: u64 },
    Store { reg: usize, addr: u64 },
    AddImm8 { reg: usize, imm: i8 },
    Dec32 { reg: usize },
    Xor32 { dst: usize, src: usize },
    Call { rel: i32 },
    Ret,
    Jcc { cond: Cond, rel: i8 },
    Syscall,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cond {
    Always,
    Zero,
    NotZero,
}

/// The hardware register number (ModRM order) to gdb's register number.
fn gdb_reg(hw: u8) -> usize {
    const ORDER: [usize; 8] = [
        gpr::RAX,
        gpr::RCX,
        gpr::RDX,
        gpr::RBX,
        gpr::RSP,
        gpr::RBP,
        gpr::RSI,
        gpr::RDI,
    ];
    let low = ORDER[usize::from(hw & 7)];
    if hw & 8 != 0 {
        8 + usize::from(hw & 7)
    } else {
        low
    }
}

/// Decode the instruction at the start of `bytes` (fetched at the
/// instruction pointer; up to 15 bytes). `None`: not one this interpreter
/// knows (the task gets SIGILL).
pub fn decode(bytes: &[u8]) -> Option<Insn> {
    let (rex, body) = match bytes.first() {
        Some(&b) if (0x40..=0x4f).contains(&b) => (b, &bytes[1..]),
        _ => (0, bytes),
    };
    let prefix = u64::from(rex != 0);
    let rex_w = rex & 0x08 != 0;
    let rex_r = (rex & 0x04) << 1;
    let rex_b = (rex & 0x01) << 3;
    let (&opcode, rest) = body.split_first()?;
    let imm32 = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(rest.get(at..at + 4)?.try_into().ok()?))
    };
    // ModRM register-direct form: (reg field, rm field).
    let direct = || -> Option<(u8, u8)> {
        let m = *rest.first()?;
        (m >> 6 == 0b11).then_some((((m >> 3) & 7) | rex_r, (m & 7) | rex_b))
    };
    // ModRM + SIB absolute form: (reg field, address).
    let absolute = || -> Option<(u8, u64)> {
        let m = *rest.first()?;
        let sib = *rest.get(1)?;
        if m >> 6 != 0b00 || m & 7 != 0b100 || sib != 0x25 {
            return None;
        }
        let disp = imm32(2)? as i32;
        Some((((m >> 3) & 7) | rex_r, disp as i64 as u64))
    };
    let insn = |len: u64, op: Op| {
        Some(Insn {
            len: prefix + len,
            op,
        })
    };
    match opcode {
        0x90 if rex == 0 => insn(1, Op::Nop),
        0xcc => insn(1, Op::Int3),
        0xb8..=0xbf if !rex_w => insn(
            5,
            Op::MovImm32 {
                reg: gdb_reg((opcode - 0xb8) | rex_b),
                imm: imm32(0)?,
            },
        ),
        0x8b if rex_w => absolute().and_then(|(r, addr)| {
            insn(
                7,
                Op::Load {
                    reg: gdb_reg(r),
                    addr,
                },
            )
        }),
        0x03 if rex_w => absolute().and_then(|(r, addr)| {
            insn(
                7,
                Op::AddLoad {
                    reg: gdb_reg(r),
                    addr,
                },
            )
        }),
        0x89 if rex_w => absolute().and_then(|(r, addr)| {
            insn(
                7,
                Op::Store {
                    reg: gdb_reg(r),
                    addr,
                },
            )
        }),
        0x83 if rex_w => {
            let (ext, rm) = direct()?;
            (ext & 7 == 0).then_some(())?;
            insn(
                3,
                Op::AddImm8 {
                    reg: gdb_reg(rm),
                    imm: *rest.get(1)? as i8,
                },
            )
        }
        0xff if !rex_w => {
            let (ext, rm) = direct()?;
            (ext & 7 == 1).then_some(())?;
            insn(2, Op::Dec32 { reg: gdb_reg(rm) })
        }
        0x31 if !rex_w => direct().and_then(|(src, dst)| {
            insn(
                2,
                Op::Xor32 {
                    dst: gdb_reg(dst),
                    src: gdb_reg(src),
                },
            )
        }),
        0xe8 if rex == 0 => insn(
            5,
            Op::Call {
                rel: imm32(0)? as i32,
            },
        ),
        0xc3 if rex == 0 => insn(1, Op::Ret),
        0x75 | 0x74 | 0xeb if rex == 0 => {
            let cond = match opcode {
                0x75 => Cond::NotZero,
                0x74 => Cond::Zero,
                _ => Cond::Always,
            };
            insn(
                2,
                Op::Jcc {
                    cond,
                    rel: *rest.first()? as i8,
                },
            )
        }
        0x0f if rex == 0 && rest.first() == Some(&0x05) => insn(2, Op::Syscall),
        _ => None,
    }
}

/// What executing one instruction did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The instruction completed; rip points at the next one.
    Done,
    /// `int3` completed: rip is past it, the task gets SIGTRAP.
    Breakpoint,
    /// `exit(status)`.
    Exit(u8),
    /// A memory access fell outside the mapped memory (rip unchanged).
    Fault { addr: u64 },
}

/// Where an instruction's memory accesses go. `access` is called once the
/// bytes were read or written (a faulting access is not reported): the
/// caller runs it through the simulated kernel's debug-register model,
/// whose data breakpoints trap after the access, and looks at the hits
/// when the instruction has completed.
pub trait Bus {
    fn access(&mut self, access: Access);
    fn read_u64(&mut self, addr: u64) -> Option<u64>;
    fn write_u64(&mut self, addr: u64, value: u64) -> Option<()>;
}

fn set_zf_sf(regs: &mut Amd64Regs, zero: bool, negative: bool) {
    regs.eflags &= !(ZF | SF);
    if zero {
        regs.eflags |= ZF;
    }
    if negative {
        regs.eflags |= SF;
    }
}

fn set_flags64(regs: &mut Amd64Regs, v: u64) {
    set_zf_sf(regs, v == 0, (v as i64) < 0);
}

fn set_flags32(regs: &mut Amd64Regs, v: u32) {
    set_zf_sf(regs, v == 0, (v as i32) < 0);
}

/// Execute `insn` (decoded at `regs.rip`). On a fault nothing changes.
pub fn execute(regs: &mut Amd64Regs, insn: &Insn, bus: &mut impl Bus) -> Outcome {
    let next = regs.rip.wrapping_add(insn.len);
    match insn.op {
        Op::Nop => {}
        Op::Int3 => {
            regs.rip = next;
            return Outcome::Breakpoint;
        }
        Op::MovImm32 { reg, imm } => regs.gpr[reg] = u64::from(imm),
        Op::Load { reg, addr } | Op::AddLoad { reg, addr } => {
            let Some(v) = bus.read_u64(addr) else {
                return Outcome::Fault { addr };
            };
            bus.access(Access::Read { addr, size: 8 });
            if let Op::AddLoad { .. } = insn.op {
                let sum = regs.gpr[reg].wrapping_add(v);
                regs.gpr[reg] = sum;
                set_flags64(regs, sum);
            } else {
                regs.gpr[reg] = v;
            }
        }
        Op::Store { reg, addr } => {
            if bus.write_u64(addr, regs.gpr[reg]).is_none() {
                return Outcome::Fault { addr };
            }
            bus.access(Access::Write { addr, size: 8 });
        }
        Op::AddImm8 { reg, imm } => {
            let v = regs.gpr[reg].wrapping_add(imm as i64 as u64);
            regs.gpr[reg] = v;
            set_flags64(regs, v);
        }
        Op::Dec32 { reg } => {
            let v = (regs.gpr[reg] as u32).wrapping_sub(1);
            regs.gpr[reg] = u64::from(v);
            set_flags32(regs, v);
        }
        Op::Xor32 { dst, src } => {
            let v = (regs.gpr[dst] as u32) ^ (regs.gpr[src] as u32);
            regs.gpr[dst] = u64::from(v);
            set_flags32(regs, v);
        }
        Op::Call { rel } => {
            let sp = regs.gpr[gpr::RSP].wrapping_sub(8);
            if bus.write_u64(sp, next).is_none() {
                return Outcome::Fault { addr: sp };
            }
            bus.access(Access::Write { addr: sp, size: 8 });
            regs.gpr[gpr::RSP] = sp;
            regs.rip = next.wrapping_add(rel as i64 as u64);
            return Outcome::Done;
        }
        Op::Ret => {
            let sp = regs.gpr[gpr::RSP];
            let Some(target) = bus.read_u64(sp) else {
                return Outcome::Fault { addr: sp };
            };
            bus.access(Access::Read { addr: sp, size: 8 });
            regs.gpr[gpr::RSP] = sp.wrapping_add(8);
            regs.rip = target;
            return Outcome::Done;
        }
        Op::Jcc { cond, rel } => {
            let zero = regs.eflags & ZF != 0;
            let taken = match cond {
                Cond::Always => true,
                Cond::Zero => zero,
                Cond::NotZero => !zero,
            };
            regs.rip = if taken {
                next.wrapping_add(rel as i64 as u64)
            } else {
                next
            };
            return Outcome::Done;
        }
        Op::Syscall => {
            if regs.gpr[gpr::RAX] == SYS_EXIT {
                regs.rip = next;
                return Outcome::Exit(regs.gpr[gpr::RDI] as u8);
            }
            // Any other system call fails with ENOSYS, as on Linux.
            regs.gpr[gpr::RAX] = (-38i64) as u64;
        }
    }
    regs.rip = next;
    Outcome::Done
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Mem {
        words: HashMap<u64, u64>,
        log: Vec<Access>,
    }

    impl Bus for Mem {
        fn access(&mut self, a: Access) {
            self.log.push(a);
        }
        fn read_u64(&mut self, addr: u64) -> Option<u64> {
            self.words.get(&addr).copied()
        }
        fn write_u64(&mut self, addr: u64, v: u64) -> Option<()> {
            self.words.get_mut(&addr).map(|w| *w = v)
        }
    }

    #[test]
    fn the_encodings_the_program_uses_decode() {
        let d = |b: &[u8]| decode(b).unwrap();
        assert_eq!(
            d(&[0xb9, 3, 0, 0, 0]),
            Insn {
                len: 5,
                op: Op::MovImm32 {
                    reg: gpr::RCX,
                    imm: 3
                }
            }
        );
        assert_eq!(
            d(&[0x48, 0x8b, 0x04, 0x25, 0, 0x40, 0x40, 0]),
            Insn {
                len: 8,
                op: Op::Load {
                    reg: gpr::RAX,
                    addr: 0x404000
                }
            }
        );
        assert_eq!(
            d(&[0x48, 0x03, 0x04, 0x25, 8, 0x40, 0x40, 0]),
            Insn {
                len: 8,
                op: Op::AddLoad {
                    reg: gpr::RAX,
                    addr: 0x404008
                }
            }
        );
        assert_eq!(
            d(&[0x48, 0x89, 0x14, 0x25, 0x10, 0x40, 0x40, 0]),
            Insn {
                len: 8,
                op: Op::Store {
                    reg: gpr::RDX,
                    addr: 0x404010
                }
            }
        );
        assert_eq!(
            d(&[0x48, 0x83, 0xc2, 0x01]),
            Insn {
                len: 4,
                op: Op::AddImm8 {
                    reg: gpr::RDX,
                    imm: 1
                }
            }
        );
        assert_eq!(
            d(&[0xff, 0xc9]),
            Insn {
                len: 2,
                op: Op::Dec32 { reg: gpr::RCX }
            }
        );
        assert_eq!(
            d(&[0x31, 0xff]),
            Insn {
                len: 2,
                op: Op::Xor32 {
                    dst: gpr::RDI,
                    src: gpr::RDI
                }
            }
        );
        assert_eq!(
            d(&[0xe8, 0x0d, 0, 0, 0]),
            Insn {
                len: 5,
                op: Op::Call { rel: 13 }
            }
        );
        assert_eq!(
            d(&[0x75, 0xdf]),
            Insn {
                len: 2,
                op: Op::Jcc {
                    cond: Cond::NotZero,
                    rel: -33
                }
            }
        );
        assert_eq!(
            d(&[0x0f, 0x05]),
            Insn {
                len: 2,
                op: Op::Syscall
            }
        );
        assert_eq!(
            d(&[0x4c, 0x89, 0x04, 0x25, 0, 0x40, 0x40, 0]).op,
            Op::Store {
                reg: 8,
                addr: 0x404000
            },
            "REX.R: r8"
        );
        assert_eq!(decode(&[0x0f, 0x0b]), None, "ud2 is not known");
        assert_eq!(
            decode(&[0x48, 0x8b, 0x00]),
            None,
            "only absolute addressing"
        );
    }

    #[test]
    fn call_and_ret_go_through_the_stack_and_loads_and_stores_report_their_access() {
        let mut mem = Mem::default();
        mem.words.insert(0x404000, 7);
        mem.words.insert(0x7ff8, 0);
        let mut r = Amd64Regs {
            rip: 0x401000,
            ..Amd64Regs::default()
        };
        r.gpr[gpr::RSP] = 0x8000;
        let call = decode(&[0xe8, 0x0d, 0, 0, 0]).unwrap();
        assert_eq!(execute(&mut r, &call, &mut mem), Outcome::Done);
        assert_eq!(
            (r.rip, r.gpr[gpr::RSP], mem.words[&0x7ff8]),
            (0x401012, 0x7ff8, 0x401005)
        );
        let add = decode(&[0x48, 0x03, 0x04, 0x25, 0, 0x40, 0x40, 0]).unwrap();
        execute(&mut r, &add, &mut mem);
        assert_eq!(r.gpr[gpr::RAX], 7);
        let ret = decode(&[0xc3]).unwrap();
        execute(&mut r, &ret, &mut mem);
        assert_eq!((r.rip, r.gpr[gpr::RSP]), (0x401005, 0x8000));
        assert_eq!(
            mem.log,
            [
                Access::Write {
                    addr: 0x7ff8,
                    size: 8
                },
                Access::Read {
                    addr: 0x404000,
                    size: 8
                },
                Access::Read {
                    addr: 0x7ff8,
                    size: 8
                }
            ]
        );
        let store = decode(&[0x48, 0x89, 0x04, 0x25, 0, 0x50, 0x40, 0]).unwrap();
        assert_eq!(
            execute(&mut r, &store, &mut mem),
            Outcome::Fault { addr: 0x405000 }
        );
        assert_eq!(r.rip, 0x401005, "a fault leaves rip on the instruction");
    }

    #[test]
    fn dec_sets_zf_for_jnz_and_exit_takes_rdi() {
        let mut mem = Mem::default();
        let mut r = Amd64Regs {
            rip: 0x10,
            ..Amd64Regs::default()
        };
        r.gpr[gpr::RCX] = 1;
        execute(&mut r, &decode(&[0xff, 0xc9]).unwrap(), &mut mem);
        execute(&mut r, &decode(&[0x75, 0xf0]).unwrap(), &mut mem);
        assert_eq!(r.rip, 0x14, "not taken: ecx reached zero");
        r.gpr[gpr::RAX] = SYS_EXIT;
        r.gpr[gpr::RDI] = 3;
        assert_eq!(
            execute(&mut r, &decode(&[0x0f, 0x05]).unwrap(), &mut mem),
            Outcome::Exit(3)
        );
    }
}
