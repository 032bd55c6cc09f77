//! The instruction set: operand forms, mnemonics, encoding and the program format
//! (docs/bytecode.md). Opcode numbers come from `src/protocol.rs`, shared with the GLSL
//! interpreter; this module adds what only the host needs (names, operand forms).

use super::VmError;
use crate::ring::layout as p;

/// Which operand fields an instruction uses; unused fields must be zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// No operand.
    None,
    /// `imm` = branch target.
    Target,
    /// `a`, `imm` = branch target.
    CondTarget,
    /// `d`, `imm`.
    DImm,
    /// `d`, `a`.
    DA,
    /// `d`, `a`, `b`.
    DAB,
    /// `d`, `a`, `imm`.
    DAImm,
    /// `d`, `a`, `b`, `imm` = condition register.
    Select,
    /// `d`, `a` = index, `imm` = buffer.
    Load,
    /// `a` = index, `b` = value, `imm` = buffer.
    Store,
    /// `d` = the first of four registers (d <= 28), `a` = index, `imm` = buffer.
    Load4,
    /// `a` = index, `b` = the first of four registers (b <= 28), `imm` = buffer.
    Store4,
    /// `d`, `a`, `b`, each the first of four registers (<= 28).
    DAB4,
    /// `d` = the first of four registers (d <= 28), `a` = index, `imm` = buffer, `b` = the
    /// first of four registers (b <= 28): an x4 op with its first operand group in memory.
    Load4Op,
    /// `d`, `a` = index, `b` = value, `imm` = buffer.
    Atomic,
    /// `d`.
    D,
    /// `d`, `imm` = argument index.
    Arg,
    /// `d`, `imm` = buffer.
    BufLen,
    /// `a`, `imm` = result slot.
    Result,
    /// `d` = counter (read and written), `a` = step, `b` = limit, `imm` = branch target.
    Loop,
}

/// Static facts about one opcode.
#[derive(Clone, Copy, Debug)]
pub struct OpInfo {
    /// Opcode number (`OP_*`).
    pub code: u32,
    /// Assembler mnemonic.
    pub name: &'static str,
    /// Operand form.
    pub form: Form,
}

macro_rules! ops {
    ($($code:ident $name:literal $form:ident,)*) => {
        /// Every opcode, indexed by its number.
        pub const OPS: &[OpInfo] = &[$(OpInfo { code: p::$code, name: $name, form: Form::$form },)*];
    };
}

ops! {
    OP_NOP "nop" None, OP_HALT "halt" None, OP_JMP "jmp" Target, OP_BRZ "brz" CondTarget,
    OP_BRNZ "brnz" CondTarget, OP_MOVI "movi" DImm, OP_MOV "mov" DA, OP_SEL "sel" Select,
    OP_ADD "add" DAB, OP_SUB "sub" DAB, OP_MUL "mul" DAB, OP_DIVU "divu" DAB, OP_DIVS "divs" DAB,
    OP_REMU "remu" DAB, OP_REMS "rems" DAB, OP_AND "and" DAB, OP_OR "or" DAB, OP_XOR "xor" DAB,
    OP_SHL "shl" DAB, OP_SHRU "shru" DAB, OP_SHRS "shrs" DAB, OP_MINU "minu" DAB, OP_MAXU "maxu" DAB,
    OP_MINS "mins" DAB, OP_MAXS "maxs" DAB, OP_ADDI "addi" DAImm, OP_NOT "not" DA, OP_EQ "eq" DAB,
    OP_NE "ne" DAB, OP_LTU "ltu" DAB, OP_LTS "lts" DAB, OP_LEU "leu" DAB, OP_LES "les" DAB,
    OP_FADD "fadd" DAB, OP_FSUB "fsub" DAB, OP_FMUL "fmul" DAB, OP_FDIV "fdiv" DAB, OP_FMIN "fmin" DAB,
    OP_FMAX "fmax" DAB, OP_FSQRT "fsqrt" DA, OP_FLT "flt" DAB, OP_FLE "fle" DAB, OP_FEQ "feq" DAB,
    OP_U2F "u2f" DA, OP_I2F "i2f" DA, OP_F2U "f2u" DA, OP_F2I "f2i" DA, OP_LD32 "ld32" Load,
    OP_LD8 "ld8" Load, OP_ST32 "st32" Store, OP_ST8 "st8" Store, OP_ATOMIC_ADD "atomic.add" Atomic,
    OP_ATOMIC_MIN "atomic.min" Atomic, OP_ATOMIC_MAX "atomic.max" Atomic, OP_ATOMIC_AND "atomic.and" Atomic,
    OP_ATOMIC_OR "atomic.or" Atomic, OP_ATOMIC_XOR "atomic.xor" Atomic, OP_ATOMIC_XCHG "atomic.xchg" Atomic,
    OP_ATOMIC_CAS "atomic.cas" Atomic, OP_LANE "lane" D, OP_LANES "lanes" D, OP_GRID "grid" D,
    OP_ARG "arg" Arg, OP_BUFLEN "buflen" BufLen, OP_RED_ADD "red.add" DA, OP_RED_MIN "red.min" DA,
    OP_RED_MAX "red.max" DA, OP_RED_FMIN "red.fmin" DA, OP_RED_FMAX "red.fmax" DA, OP_RESULT "result" Result,
    OP_TILE_BEGIN "tile.begin" D, OP_LOOP "loop" Loop, OP_CRC32B "crc32.b" DAB, OP_CRC32W "crc32.w" DAB,
    OP_CRC32MUL "crc32.mul" DAB, OP_LD32X4 "ld32x4" Load4, OP_ST32X4 "st32x4" Store4,
    OP_ADD_X4 "add.x4" DAB4, OP_SUB_X4 "sub.x4" DAB4, OP_MUL_X4 "mul.x4" DAB4, OP_AND_X4 "and.x4" DAB4,
    OP_OR_X4 "or.x4" DAB4, OP_XOR_X4 "xor.x4" DAB4, OP_FADD_X4 "fadd.x4" DAB4, OP_FSUB_X4 "fsub.x4" DAB4,
    OP_FMUL_X4 "fmul.x4" DAB4, OP_ADD_X4M "add.x4m" Load4Op, OP_SUB_X4M "sub.x4m" Load4Op,
    OP_MUL_X4M "mul.x4m" Load4Op, OP_AND_X4M "and.x4m" Load4Op, OP_OR_X4M "or.x4m" Load4Op,
    OP_XOR_X4M "xor.x4m" Load4Op, OP_FADD_X4M "fadd.x4m" Load4Op, OP_FSUB_X4M "fsub.x4m" Load4Op,
    OP_FMUL_X4M "fmul.x4m" Load4Op,
}

/// Each four-register opcode (`Form::DAB4`) and the scalar opcode it applies lane-wise.
pub const X4_OPS: [(u32, u32); 9] = [
    (p::OP_ADD_X4, p::OP_ADD),
    (p::OP_SUB_X4, p::OP_SUB),
    (p::OP_MUL_X4, p::OP_MUL),
    (p::OP_AND_X4, p::OP_AND),
    (p::OP_OR_X4, p::OP_OR),
    (p::OP_XOR_X4, p::OP_XOR),
    (p::OP_FADD_X4, p::OP_FADD),
    (p::OP_FSUB_X4, p::OP_FSUB),
    (p::OP_FMUL_X4, p::OP_FMUL),
];

/// The scalar opcode a four-register opcode (`Form::DAB4` or `Form::Load4Op`) applies, if
/// `code` is one. The memory forms follow the register forms in the same order.
pub fn x4_scalar(code: u32) -> Option<u32> {
    let x4 = match code {
        p::OP_ADD_X4M..=p::OP_FMUL_X4M => code - p::OP_ADD_X4M + p::OP_ADD_X4,
        _ => code,
    };
    X4_OPS.iter().find(|(op, _)| *op == x4).map(|(_, scalar)| *scalar)
}

const _: () = assert!(
    p::OP_FMUL_X4M - p::OP_ADD_X4M == p::OP_FMUL_X4 - p::OP_ADD_X4,
    "one memory form per x4 op, in the same order"
);

const _: () = assert!(OPS.len() == p::OP_COUNT as usize, "every opcode has an entry");

/// Facts about opcode `code`, if it exists.
pub fn op_info(code: u32) -> Option<&'static OpInfo> {
    OPS.get(code as usize).filter(|o| o.code == code)
}

/// Facts about the opcode with mnemonic `name`.
pub fn op_by_name(name: &str) -> Option<&'static OpInfo> {
    OPS.iter().find(|o| o.name == name)
}

/// Whether `code` is a workgroup reduction (a synchronisation point of the lanes).
pub fn is_reduction(code: u32) -> bool {
    (p::OP_RED_ADD..=p::OP_RED_FMAX).contains(&code)
}

/// One decoded instruction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Instr {
    /// Opcode (`OP_*`).
    pub op: u32,
    /// Destination register.
    pub d: u8,
    /// First source register.
    pub a: u8,
    /// Second source register.
    pub b: u8,
    /// Immediate.
    pub imm: u32,
}

impl Instr {
    /// The two words of the instruction.
    pub fn encode(&self) -> [u32; 2] {
        [
            self.op | u32::from(self.d) << 8 | u32::from(self.a) << 16 | u32::from(self.b) << 24,
            self.imm,
        ]
    }

    /// Splits two words into fields (any bits; the verifier judges them).
    pub fn decode(words: [u32; 2]) -> Self {
        Instr {
            op: words[0] & 0xff,
            d: (words[0] >> 8) as u8,
            a: (words[0] >> 16) as u8,
            b: (words[0] >> 24) as u8,
            imm: words[1],
        }
    }
}

/// A bytecode program: a header, then instructions (see docs/bytecode.md).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Program {
    /// The instructions; branch targets are indices into this list.
    pub instrs: Vec<Instr>,
}

impl Program {
    /// Header and instructions as words.
    pub fn to_words(&self) -> Vec<u32> {
        let mut words = vec![p::VM_MAGIC, p::VM_VERSION, self.instrs.len() as u32, 0];
        words.extend(self.instrs.iter().flat_map(Instr::encode));
        words
    }

    /// The program as little-endian bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_words().iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// Parses the binary format. Checks the header only; run the verifier before use.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, VmError> {
        if bytes.len() % 4 != 0 {
            return Err(VmError::Truncated { bytes: bytes.len() });
        }
        let words: Vec<u32> = bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Self::from_words(&words)
    }

    /// Parses header and instructions from words.
    pub fn from_words(words: &[u32]) -> Result<Self, VmError> {
        let header = p::VM_HEADER_WORDS as usize;
        if words.len() < header {
            return Err(VmError::Truncated { bytes: words.len() * 4 });
        }
        if words[0] != p::VM_MAGIC {
            return Err(VmError::BadMagic { found: words[0] });
        }
        if words[1] != p::VM_VERSION {
            return Err(VmError::BadVersion { found: words[1] });
        }
        let count = words[2] as usize;
        if count > p::VM_MAX_INSTRUCTIONS as usize {
            return Err(VmError::TooLong { instructions: count });
        }
        let body = &words[header..];
        if body.len() != count * 2 {
            return Err(VmError::LengthMismatch {
                declared: count,
                words: body.len(),
            });
        }
        Ok(Program {
            instrs: body.chunks_exact(2).map(|c| Instr::decode([c[0], c[1]])).collect(),
        })
    }
}

/// A label in a [`ProgramBuilder`], bound to an instruction index later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label(usize);

/// Builds programs in Rust: `emit` any instruction, branch to labels bound later.
#[derive(Debug, Default)]
pub struct ProgramBuilder {
    instrs: Vec<Instr>,
    labels: Vec<Option<u32>>,
    /// (instruction index, label) pairs to patch.
    fixups: Vec<(usize, Label)>,
}

impl ProgramBuilder {
    /// An empty program.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an instruction.
    pub fn emit(&mut self, op: u32, d: u8, a: u8, b: u8, imm: u32) -> &mut Self {
        self.instrs.push(Instr { op, d, a, b, imm });
        self
    }

    /// A new, unbound label.
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Binds `label` to the next instruction.
    pub fn bind(&mut self, label: Label) -> &mut Self {
        self.labels[label.0] = Some(self.instrs.len() as u32);
        self
    }

    fn branch(&mut self, op: u32, a: u8, label: Label) -> &mut Self {
        self.fixups.push((self.instrs.len(), label));
        self.emit(op, 0, a, 0, 0)
    }

    /// `jmp label`.
    pub fn jmp(&mut self, label: Label) -> &mut Self {
        self.branch(p::OP_JMP, 0, label)
    }

    /// `brz a, label`.
    pub fn brz(&mut self, a: u8, label: Label) -> &mut Self {
        self.branch(p::OP_BRZ, a, label)
    }

    /// `brnz a, label`.
    pub fn brnz(&mut self, a: u8, label: Label) -> &mut Self {
        self.branch(p::OP_BRNZ, a, label)
    }

    /// `loop d, a, b, label`: `d += a`, then branch to `label` while `d < b` (unsigned).
    pub fn loop_to(&mut self, d: u8, a: u8, b: u8, label: Label) -> &mut Self {
        self.fixups.push((self.instrs.len(), label));
        self.emit(p::OP_LOOP, d, a, b, 0)
    }

    /// `movi d, imm`.
    pub fn movi(&mut self, d: u8, imm: u32) -> &mut Self {
        self.emit(p::OP_MOVI, d, 0, 0, imm)
    }

    /// A three-register operation `op d, a, b`.
    pub fn op3(&mut self, op: u32, d: u8, a: u8, b: u8) -> &mut Self {
        self.emit(op, d, a, b, 0)
    }

    /// A two-register operation `op d, a` (mov, not, conversions, reductions, fsqrt).
    pub fn op2(&mut self, op: u32, d: u8, a: u8) -> &mut Self {
        self.emit(op, d, a, 0, 0)
    }

    /// `addi d, a, imm`.
    pub fn addi(&mut self, d: u8, a: u8, imm: u32) -> &mut Self {
        self.emit(p::OP_ADDI, d, a, 0, imm)
    }

    /// `halt`.
    pub fn halt(&mut self) -> &mut Self {
        self.emit(p::OP_HALT, 0, 0, 0, 0)
    }

    /// Resolves labels. Fails on a label never bound.
    pub fn build(&self) -> Result<Program, VmError> {
        let mut instrs = self.instrs.clone();
        for &(at, label) in &self.fixups {
            instrs[at].imm = self.labels[label.0].ok_or(VmError::UnboundLabel { instruction: at })?;
        }
        Ok(Program { instrs })
    }
}
