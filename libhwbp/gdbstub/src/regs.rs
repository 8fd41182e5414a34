//! The amd64 registers as this stub serves them: the target description
//! (`qXfer:features:read:target.xml`) and the `g`/`G`/`p`/`P` layout.
//!
//! gdb's amd64 code accepts a target description only if it has the
//! `org.gnu.gdb.i386.core` feature with all 40 of its registers (16
//! general registers, rip, eflags, six segment registers, the x87 stack
//! and its eight control registers), named as gdb names them. This stub
//! also describes `org.gnu.gdb.i386.sse` (xmm0-15, mxcsr). It models the
//! general registers, rip, eflags and the segments; the x87 and SSE
//! registers read as their reset values and writes to them are ignored.
//!
//! Register numbers (the `p`/`P` numbers, and the order in `g`) are the
//! order of [`REGISTERS`].

use core::fmt::Write as _;

/// One register of the description.
#[derive(Clone, Copy, Debug)]
pub struct RegDesc {
    pub name: &'static str,
    pub bits: usize,
    /// A type gdb knows or one this description defines.
    pub ty: &'static str,
    pub group: Option<&'static str>,
    /// The feature it belongs to.
    pub feature: Feature,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    Core,
    Sse,
}

impl Feature {
    const fn name(self) -> &'static str {
        match self {
            Feature::Core => "org.gnu.gdb.i386.core",
            Feature::Sse => "org.gnu.gdb.i386.sse",
        }
    }
}

const fn reg(name: &'static str, bits: usize, ty: &'static str) -> RegDesc {
    RegDesc {
        name,
        bits,
        ty,
        group: None,
        feature: Feature::Core,
    }
}

const fn float_ctl(name: &'static str) -> RegDesc {
    RegDesc {
        name,
        bits: 32,
        ty: "int",
        group: Some("float"),
        feature: Feature::Core,
    }
}

const fn xmm(name: &'static str) -> RegDesc {
    RegDesc {
        name,
        bits: 128,
        ty: "vec128",
        group: None,
        feature: Feature::Sse,
    }
}

/// Number of general-purpose registers (rax..r15).
pub const GPRS: usize = 16;
/// Register number of rip.
pub const RIP: usize = 16;
/// Register number of eflags.
pub const EFLAGS: usize = 17;
/// Register number of cs (ss, ds, es, fs, gs follow).
pub const CS: usize = 18;
/// Segment registers (cs, ss, ds, es, fs, gs).
pub const SEGMENTS: usize = 6;
/// Register number of mxcsr.
pub const MXCSR: usize = 56;
/// The reset value of MXCSR (all exceptions masked).
pub const MXCSR_RESET: u32 = 0x1f80;

/// General register numbers by name, in gdb's (and the `g` packet's) order.
pub mod gpr {
    pub const RAX: usize = 0;
    pub const RBX: usize = 1;
    pub const RCX: usize = 2;
    pub const RDX: usize = 3;
    pub const RSI: usize = 4;
    pub const RDI: usize = 5;
    pub const RBP: usize = 6;
    pub const RSP: usize = 7;
}

/// Every register, in register-number order.
pub const REGISTERS: [RegDesc; 57] = [
    reg("rax", 64, "int64"),
    reg("rbx", 64, "int64"),
    reg("rcx", 64, "int64"),
    reg("rdx", 64, "int64"),
    reg("rsi", 64, "int64"),
    reg("rdi", 64, "int64"),
    reg("rbp", 64, "data_ptr"),
    reg("rsp", 64, "data_ptr"),
    reg("r8", 64, "int64"),
    reg("r9", 64, "int64"),
    reg("r10", 64, "int64"),
    reg("r11", 64, "int64"),
    reg("r12", 64, "int64"),
    reg("r13", 64, "int64"),
    reg("r14", 64, "int64"),
    reg("r15", 64, "int64"),
    reg("rip", 64, "code_ptr"),
    reg("eflags", 32, "x86_eflags"),
    reg("cs", 32, "int32"),
    reg("ss", 32, "int32"),
    reg("ds", 32, "int32"),
    reg("es", 32, "int32"),
    reg("fs", 32, "int32"),
    reg("gs", 32, "int32"),
    reg("st0", 80, "i387_ext"),
    reg("st1", 80, "i387_ext"),
    reg("st2", 80, "i387_ext"),
    reg("st3", 80, "i387_ext"),
    reg("st4", 80, "i387_ext"),
    reg("st5", 80, "i387_ext"),
    reg("st6", 80, "i387_ext"),
    reg("st7", 80, "i387_ext"),
    float_ctl("fctrl"),
    float_ctl("fstat"),
    float_ctl("ftag"),
    float_ctl("fiseg"),
    float_ctl("fioff"),
    float_ctl("foseg"),
    float_ctl("fooff"),
    float_ctl("fop"),
    xmm("xmm0"),
    xmm("xmm1"),
    xmm("xmm2"),
    xmm("xmm3"),
    xmm("xmm4"),
    xmm("xmm5"),
    xmm("xmm6"),
    xmm("xmm7"),
    xmm("xmm8"),
    xmm("xmm9"),
    xmm("xmm10"),
    xmm("xmm11"),
    xmm("xmm12"),
    xmm("xmm13"),
    xmm("xmm14"),
    xmm("xmm15"),
    RegDesc {
        name: "mxcsr",
        bits: 32,
        ty: "x86_mxcsr",
        group: Some("vector"),
        feature: Feature::Sse,
    },
];

/// The x87 control word after FNINIT (what a new process starts with).
const FCTRL_RESET: u32 = 0x37f;
/// Register number of fctrl.
const FCTRL: usize = 32;

/// RFLAGS bits, by SDM name (the flags type of the description).
const EFLAGS_BITS: [(&str, u32); 17] = [
    ("CF", 0),
    ("", 1),
    ("PF", 2),
    ("AF", 4),
    ("ZF", 6),
    ("SF", 7),
    ("TF", 8),
    ("IF", 9),
    ("DF", 10),
    ("OF", 11),
    ("NT", 14),
    ("RF", 16),
    ("VM", 17),
    ("AC", 18),
    ("VIF", 19),
    ("VIP", 20),
    ("ID", 21),
];

/// MXCSR bits, by SDM name.
const MXCSR_BITS: [(&str, u32); 14] = [
    ("IE", 0),
    ("DE", 1),
    ("ZE", 2),
    ("OE", 3),
    ("UE", 4),
    ("PE", 5),
    ("DAZ", 6),
    ("IM", 7),
    ("DM", 8),
    ("ZM", 9),
    ("OM", 10),
    ("UM", 11),
    ("PM", 12),
    ("FZ", 15),
];

fn flags_type(xml: &mut String, id: &str, bits: &[(&str, u32)]) {
    let _ = writeln!(xml, "    <flags id=\"{id}\" size=\"4\">");
    for (name, bit) in bits {
        let _ = writeln!(
            xml,
            "      <field name=\"{name}\" start=\"{bit}\" end=\"{bit}\"/>"
        );
    }
    xml.push_str("    </flags>\n");
}

/// The target description served as `target.xml`.
pub fn target_xml() -> String {
    let mut xml = String::from(
        "<?xml version=\"1.0\"?>\n<!DOCTYPE target SYSTEM \"gdb-target.dtd\">\n<target>\n  <architecture>i386:x86-64</architecture>\n",
    );
    for feature in [Feature::Core, Feature::Sse] {
        let _ = writeln!(xml, "  <feature name=\"{}\">", feature.name());
        match feature {
            Feature::Core => flags_type(&mut xml, "x86_eflags", &EFLAGS_BITS),
            Feature::Sse => {
                for (id, ty, count) in [
                    ("v4f", "ieee_single", 4),
                    ("v2d", "ieee_double", 2),
                    ("v16i8", "int8", 16),
                    ("v8i16", "int16", 8),
                    ("v4i32", "int32", 4),
                    ("v2i64", "int64", 2),
                ] {
                    let _ = writeln!(
                        xml,
                        "    <vector id=\"{id}\" type=\"{ty}\" count=\"{count}\"/>"
                    );
                }
                xml.push_str("    <union id=\"vec128\">\n");
                for (name, ty) in [
                    ("v4_float", "v4f"),
                    ("v2_double", "v2d"),
                    ("v16_int8", "v16i8"),
                    ("v8_int16", "v8i16"),
                    ("v4_int32", "v4i32"),
                    ("v2_int64", "v2i64"),
                    ("uint128", "uint128"),
                ] {
                    let _ = writeln!(xml, "      <field name=\"{name}\" type=\"{ty}\"/>");
                }
                xml.push_str("    </union>\n");
                flags_type(&mut xml, "x86_mxcsr", &MXCSR_BITS);
            }
        }
        for (num, r) in REGISTERS
            .iter()
            .enumerate()
            .filter(|(_, r)| r.feature == feature)
        {
            let _ = write!(
                xml,
                "    <reg name=\"{}\" bitsize=\"{}\" type=\"{}\" regnum=\"{num}\"",
                r.name, r.bits, r.ty
            );
            if let Some(g) = r.group {
                let _ = write!(xml, " group=\"{g}\"");
            }
            xml.push_str("/>\n");
        }
        xml.push_str("  </feature>\n");
    }
    xml.push_str("</target>\n");
    xml
}

/// The registers of one thread, as far as this stub models them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Amd64Regs {
    /// rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8-r15 (gdb's order).
    pub gpr: [u64; GPRS],
    pub rip: u64,
    pub eflags: u32,
    /// cs, ss, ds, es, fs, gs.
    pub seg: [u32; SEGMENTS],
}

/// RFLAGS bit 1 reads as 1.
pub const EFLAGS_RESERVED: u32 = 1 << 1;
/// RFLAGS.IF.
pub const EFLAGS_IF: u32 = 1 << 9;
/// User code and stack selectors of 64-bit Linux and Redox user mode.
pub const USER_CS: u32 = 0x33;
pub const USER_SS: u32 = 0x2b;

impl Default for Amd64Regs {
    fn default() -> Self {
        Amd64Regs {
            gpr: [0; GPRS],
            rip: 0,
            eflags: EFLAGS_RESERVED | EFLAGS_IF,
            seg: [USER_CS, USER_SS, 0, 0, 0, 0],
        }
    }
}

fn push_le(out: &mut String, value: u128, bytes: usize) {
    for i in 0..bytes {
        let _ = write!(out, "{:02x}", (value >> (8 * i)) as u8);
    }
}

impl Amd64Regs {
    /// Register `num`'s value (models only up to 128 bits; the x87 stack
    /// registers read as 0, the control registers as after FNINIT).
    pub fn get(&self, num: usize) -> Option<u128> {
        Some(match num {
            n if n < GPRS => u128::from(self.gpr[n]),
            RIP => u128::from(self.rip),
            EFLAGS => u128::from(self.eflags),
            n if (CS..CS + SEGMENTS).contains(&n) => u128::from(self.seg[n - CS]),
            FCTRL => u128::from(FCTRL_RESET),
            MXCSR => u128::from(MXCSR_RESET),
            n if n < REGISTERS.len() => 0,
            _ => return None,
        })
    }

    /// Set register `num` (writes to unmodelled registers are ignored).
    /// `None` for a register number that does not exist.
    pub fn set(&mut self, num: usize, value: u128) -> Option<()> {
        match num {
            n if n < GPRS => self.gpr[n] = value as u64,
            RIP => self.rip = value as u64,
            EFLAGS => self.eflags = value as u32,
            n if (CS..CS + SEGMENTS).contains(&n) => self.seg[n - CS] = value as u32,
            n if n < REGISTERS.len() => {}
            _ => return None,
        }
        Some(())
    }

    /// Register `num` as the hex of its target-order bytes (`p` reply).
    pub fn encode_one(&self, num: usize) -> Option<String> {
        let value = self.get(num)?;
        let mut out = String::new();
        push_le(&mut out, value, REGISTERS[num].bits / 8);
        Some(out)
    }

    /// Every register, in order (`g` reply).
    pub fn encode_all(&self) -> String {
        let mut out = String::with_capacity(G_PACKET_BYTES * 2);
        for (num, desc) in REGISTERS.iter().enumerate() {
            push_le(&mut out, self.get(num).unwrap_or(0), desc.bits / 8);
        }
        out
    }

    /// Apply a `G` packet's bytes. `None` if it is not exactly
    /// [`G_PACKET_BYTES`] long.
    pub fn decode_all(&mut self, bytes: &[u8]) -> Option<()> {
        if bytes.len() != G_PACKET_BYTES {
            return None;
        }
        let mut at = 0;
        for (num, desc) in REGISTERS.iter().enumerate() {
            let n = desc.bits / 8;
            self.set(num, le_value(&bytes[at..at + n])?)?;
            at += n;
        }
        Some(())
    }

    /// Apply a `P` packet's bytes to register `num`.
    pub fn decode_one(&mut self, num: usize, bytes: &[u8]) -> Option<()> {
        let desc = REGISTERS.get(num)?;
        if bytes.len() != desc.bits / 8 {
            return None;
        }
        self.set(num, le_value(bytes)?)
    }
}

/// The value of little-endian `bytes` (at most 16 count; longer x87
/// values keep their low 128 bits, which this stub ignores anyway).
fn le_value(bytes: &[u8]) -> Option<u128> {
    Some(
        bytes
            .iter()
            .take(16)
            .rev()
            .fold(0u128, |v, &b| (v << 8) | u128::from(b)),
    )
}

/// Bytes of the `g` packet's registers.
pub const G_PACKET_BYTES: usize = {
    let mut total = 0;
    let mut i = 0;
    while i < REGISTERS.len() {
        total += REGISTERS[i].bits / 8;
        i += 1;
    }
    total
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_core_feature_has_the_forty_registers_gdb_requires_in_order() {
        let core: Vec<_> = REGISTERS
            .iter()
            .filter(|r| r.feature == Feature::Core)
            .map(|r| r.name)
            .collect();
        assert_eq!(core.len(), 40);
        assert_eq!(&core[..3], ["rax", "rbx", "rcx"]);
        assert_eq!(core[RIP], "rip");
        assert_eq!(core[EFLAGS], "eflags");
        assert_eq!(core[CS], "cs");
        assert_eq!(REGISTERS[MXCSR].name, "mxcsr");
        assert_eq!(REGISTERS[FCTRL].name, "fctrl");
        assert_eq!(REGISTERS[gpr::RSP].name, "rsp");
        assert_eq!(REGISTERS[gpr::RDI].name, "rdi");
    }

    #[test]
    fn the_g_packet_is_536_bytes_and_round_trips() {
        assert_eq!(
            G_PACKET_BYTES,
            16 * 8 + 8 + 4 + 6 * 4 + 8 * 10 + 8 * 4 + 16 * 16 + 4
        );
        let mut r = Amd64Regs::default();
        r.gpr[gpr::RCX] = 0x1122_3344_5566_7788;
        r.rip = 0x401005;
        let hex = r.encode_all();
        assert_eq!(hex.len(), G_PACKET_BYTES * 2);
        assert_eq!(&hex[32..48], "8877665544332211", "rcx little-endian, third");
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let mut back = Amd64Regs {
            gpr: [0; GPRS],
            rip: 0,
            eflags: 0,
            seg: [0; SEGMENTS],
        };
        back.decode_all(&bytes).unwrap();
        assert_eq!(back, r);
        assert_eq!(r.encode_one(RIP).unwrap(), "0510400000000000");
        assert_eq!(r.encode_one(MXCSR).unwrap(), "801f0000");
        assert_eq!(r.encode_one(REGISTERS.len()), None);
    }

    #[test]
    fn the_description_names_every_register_with_its_number() {
        let xml = target_xml();
        assert!(xml.contains("<architecture>i386:x86-64</architecture>"));
        for (num, r) in REGISTERS.iter().enumerate() {
            assert!(
                xml.contains(&format!(
                    "name=\"{}\" bitsize=\"{}\" type=\"{}\" regnum=\"{num}\"",
                    r.name, r.bits, r.ty
                )),
                "{}",
                r.name
            );
        }
        assert!(!xml.contains(['$', '#', '*', '}']), "nothing to escape");
    }
}
