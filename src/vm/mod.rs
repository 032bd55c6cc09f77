//! The bytecode VM, host side: the instruction set (`isa`), the verifier (`verify`) and
//! the CPU reference interpreter (`interp`), which is the executable specification the GPU
//! interpreter (`glsl/vm.glsl`) is tested against. docs/bytecode.md describes the format.

pub mod asm;
pub mod disasm;
pub mod interp;
pub mod isa;
pub mod library;
pub mod verify;

pub use asm::assemble;
pub use disasm::disassemble;
pub use isa::{Instr, Label, Program, ProgramBuilder};
pub use verify::{verify, VerifiedProgram};

/// A fault a VM job ended with, as the device (or the reference interpreter) reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("job (tag {tag}) faulted: {} at instruction {instruction}, lane {lane} (detail {detail})", fault_name(*status))]
pub struct Fault {
    /// The job's tag.
    pub tag: u64,
    /// `STATUS_FAULT_*` code.
    pub status: u32,
    /// Instruction index.
    pub instruction: u32,
    /// Lane.
    pub lane: u32,
    /// Detail: the element index of an out-of-range access, the other lane's instruction
    /// for a divergence.
    pub detail: u32,
}

/// A fault code's meaning, with what to do about it.
pub fn fault_name(status: u32) -> &'static str {
    use crate::ring::layout as p;
    match status {
        p::STATUS_FAULT_FUEL => "fuel exhausted (raise the job's fuel or bound the loop)",
        p::STATUS_FAULT_OUT_OF_RANGE => "access outside its buffer",
        p::STATUS_FAULT_DIVIDE_BY_ZERO => "integer division by zero",
        p::STATUS_FAULT_BAD_INSTRUCTION => "invalid instruction (the program was not verified)",
        p::STATUS_FAULT_DIVERGED => "lanes reached different reductions",
        _ => "unknown fault",
    }
}

/// Everything wrong a program can be. Messages name the instruction and say what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VmError {
    /// The byte length is not a whole number of words, or shorter than a header.
    #[error("program of {bytes} bytes is truncated: a program is a 16-byte header and 8 bytes per instruction")]
    Truncated {
        /// Bytes given.
        bytes: usize,
    },
    /// Wrong magic word.
    #[error(
        "not a megaring program: magic {found:#010x}, expected {:#010x} (\"MRVM\")",
        crate::ring::layout::VM_MAGIC
    )]
    BadMagic {
        /// Word found.
        found: u32,
    },
    /// Unsupported version.
    #[error(
        "program version {found} is not supported; this build reads version {}",
        crate::ring::layout::VM_VERSION
    )]
    BadVersion {
        /// Version found.
        found: u32,
    },
    /// Header and body disagree.
    #[error("header declares {declared} instructions but {words} words follow (2 per instruction)")]
    LengthMismatch {
        /// Declared count.
        declared: usize,
        /// Words present.
        words: usize,
    },
    /// No instructions.
    #[error("program has no instructions; end it with `halt`")]
    Empty,
    /// Too many instructions.
    #[error(
        "program has {instructions} instructions; the limit is {}",
        crate::ring::layout::VM_MAX_INSTRUCTIONS
    )]
    TooLong {
        /// Instructions.
        instructions: usize,
    },
    /// `interp::combine` was given an opcode that is not a reduction.
    #[error("opcode {op} is not a reduction; give one of red.add, red.min, red.max, red.fmin, red.fmax")]
    NotAReduction {
        /// The opcode given.
        op: u32,
    },
    /// Too many buffers for a job.
    #[error("job binds {buffers} buffers; the limit is {}", crate::ring::layout::VM_MAX_BUFFERS)]
    TooManyBuffers {
        /// Buffers bound.
        buffers: usize,
    },
    /// Unknown opcode.
    #[error("instruction {instruction}: unknown opcode {opcode}")]
    UnknownOpcode {
        /// Instruction index.
        instruction: usize,
        /// Opcode.
        opcode: u32,
    },
    /// Register index out of range.
    #[error("instruction {instruction}: uses register r{register}; the VM has 32 registers (r0..r31)")]
    BadRegister {
        /// Instruction index.
        instruction: usize,
        /// Register.
        register: u8,
    },
    /// A field the opcode does not use is not zero.
    #[error("instruction {instruction}: field `{field}` is {value} but this opcode does not use it (must be 0)")]
    UnusedField {
        /// Instruction index.
        instruction: usize,
        /// Field name.
        field: &'static str,
        /// Its value.
        value: u32,
    },
    /// Branch target out of range.
    #[error("instruction {instruction}: branch to {target}, but the program has {instructions} instructions")]
    BadTarget {
        /// Instruction index.
        instruction: usize,
        /// Target.
        target: u32,
        /// Instructions.
        instructions: usize,
    },
    /// Buffer index not bound by the job.
    #[error("instruction {instruction}: uses buffer {buffer}, but the job binds {buffers}")]
    BadBuffer {
        /// Instruction index.
        instruction: usize,
        /// Buffer index.
        buffer: u32,
        /// Buffers bound.
        buffers: usize,
    },
    /// Argument index out of range.
    #[error("instruction {instruction}: reads argument {argument}; a job has 4 (0..3)")]
    BadArgument {
        /// Instruction index.
        instruction: usize,
        /// Argument index.
        argument: u32,
    },
    /// Result slot out of range.
    #[error("instruction {instruction}: writes result {slot}; a job has 4 (0..3)")]
    BadResult {
        /// Instruction index.
        instruction: usize,
        /// Slot.
        slot: u32,
    },
    /// The last instruction can fall through.
    #[error("instruction {instruction}: execution can fall off the end of the program; end with `halt` or `jmp`")]
    FallsOffEnd {
        /// Instruction index.
        instruction: usize,
    },
    /// A builder label was never bound.
    #[error("instruction {instruction}: branches to a label that was never bound")]
    UnboundLabel {
        /// Instruction index.
        instruction: usize,
    },
    /// Assembler error.
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What was wrong and what was expected.
        message: String,
    },
}
