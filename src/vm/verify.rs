//! The verifier: every program passes it before it reaches the GPU. It checks what the
//! device would otherwise have to trust: opcodes, register, buffer, argument and result
//! indices, branch targets, no fall-through off the end, unused fields zero, limits.
//! It never panics, whatever the input (a property test feeds it arbitrary words).

use super::isa::{op_info, Form, Instr, Program};
use super::VmError;
use crate::ring::layout as p;

/// A program the verifier accepted for a job with `buffers` buffers and `args` arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedProgram {
    program: Program,
    buffers: usize,
}

impl VerifiedProgram {
    /// The program.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Buffers the job must bind (at least every index the program names).
    pub fn buffers(&self) -> usize {
        self.buffers
    }
}

/// Checks `program` for a job that binds `buffers` buffers.
pub fn verify(program: &Program, buffers: usize) -> Result<VerifiedProgram, VmError> {
    let n = program.instrs.len();
    if n == 0 {
        return Err(VmError::Empty);
    }
    if n > p::VM_MAX_INSTRUCTIONS as usize {
        return Err(VmError::TooLong { instructions: n });
    }
    if buffers > p::VM_MAX_BUFFERS as usize {
        return Err(VmError::TooManyBuffers { buffers });
    }
    for (index, instr) in program.instrs.iter().enumerate() {
        check(index, instr, n, buffers)?;
    }
    Ok(VerifiedProgram {
        program: program.clone(),
        buffers,
    })
}

fn check(index: usize, i: &Instr, n: usize, buffers: usize) -> Result<(), VmError> {
    let info = op_info(i.op).ok_or(VmError::UnknownOpcode {
        instruction: index,
        opcode: i.op,
    })?;
    let reg = |r: u8| {
        if u32::from(r) < p::VM_REGISTERS {
            Ok(())
        } else {
            Err(VmError::BadRegister {
                instruction: index,
                register: r,
            })
        }
    };
    let unused = |field: &'static str, value: u32| {
        if value == 0 {
            Ok(())
        } else {
            Err(VmError::UnusedField {
                instruction: index,
                field,
                value,
            })
        }
    };
    let target = |t: u32| {
        if (t as usize) < n {
            Ok(())
        } else {
            Err(VmError::BadTarget {
                instruction: index,
                target: t,
                instructions: n,
            })
        }
    };
    let buffer = |b: u32| {
        if (b as usize) < buffers {
            Ok(())
        } else {
            Err(VmError::BadBuffer {
                instruction: index,
                buffer: b,
                buffers,
            })
        }
    };
    let (d, a, b) = (u32::from(i.d), u32::from(i.a), u32::from(i.b));
    match info.form {
        Form::None => {
            unused("d", d)?;
            unused("a", a)?;
            unused("b", b)?;
            unused("imm", i.imm)?;
        }
        Form::Target => {
            unused("d", d)?;
            unused("a", a)?;
            unused("b", b)?;
            target(i.imm)?;
        }
        Form::CondTarget => {
            unused("d", d)?;
            reg(i.a)?;
            unused("b", b)?;
            target(i.imm)?;
        }
        Form::Loop => {
            reg(i.d)?;
            reg(i.a)?;
            reg(i.b)?;
            target(i.imm)?;
        }
        Form::DImm => {
            reg(i.d)?;
            unused("a", a)?;
            unused("b", b)?;
        }
        Form::DA => {
            reg(i.d)?;
            reg(i.a)?;
            unused("b", b)?;
            unused("imm", i.imm)?;
        }
        Form::DAB => {
            reg(i.d)?;
            reg(i.a)?;
            reg(i.b)?;
            unused("imm", i.imm)?;
        }
        Form::DAImm => {
            reg(i.d)?;
            reg(i.a)?;
            unused("b", b)?;
        }
        Form::Select => {
            reg(i.d)?;
            reg(i.a)?;
            reg(i.b)?;
            if i.imm >= p::VM_REGISTERS {
                return Err(VmError::BadRegister {
                    instruction: index,
                    register: i.imm.min(255) as u8,
                });
            }
        }
        Form::Load | Form::Load4 => {
            reg(i.d)?;
            if info.form == Form::Load4 {
                reg(i.d.saturating_add(3))?; // the last of its four registers
            }
            reg(i.a)?;
            unused("b", b)?;
            buffer(i.imm)?;
        }
        Form::Store | Form::Store4 => {
            unused("d", d)?;
            reg(i.a)?;
            reg(i.b)?;
            if info.form == Form::Store4 {
                reg(i.b.saturating_add(3))?;
            }
            buffer(i.imm)?;
        }
        Form::DAB4 => {
            // the last of each group of four registers
            reg(i.d.saturating_add(3))?;
            reg(i.a.saturating_add(3))?;
            reg(i.b.saturating_add(3))?;
            unused("imm", i.imm)?;
        }
        Form::Load4Op => {
            // the last of each group of four registers
            reg(i.d.saturating_add(3))?;
            reg(i.a)?;
            reg(i.b.saturating_add(3))?;
            buffer(i.imm)?;
        }
        Form::Atomic => {
            reg(i.d)?;
            reg(i.a)?;
            reg(i.b)?;
            buffer(i.imm)?;
        }
        Form::D => {
            reg(i.d)?;
            unused("a", a)?;
            unused("b", b)?;
            unused("imm", i.imm)?;
        }
        Form::Arg => {
            reg(i.d)?;
            unused("a", a)?;
            unused("b", b)?;
            if i.imm >= p::VM_MAX_ARGS {
                return Err(VmError::BadArgument {
                    instruction: index,
                    argument: i.imm,
                });
            }
        }
        Form::BufLen => {
            reg(i.d)?;
            unused("a", a)?;
            unused("b", b)?;
            buffer(i.imm)?;
        }
        Form::Result => {
            unused("d", d)?;
            reg(i.a)?;
            unused("b", b)?;
            if i.imm >= p::VM_MAX_RESULTS {
                return Err(VmError::BadResult {
                    instruction: index,
                    slot: i.imm,
                });
            }
        }
    }
    let falls_through = !matches!(i.op, p::OP_HALT | p::OP_JMP);
    if falls_through && index + 1 == n {
        return Err(VmError::FallsOffEnd { instruction: index });
    }
    Ok(())
}
