//! The disassembler: a [`Program`] to the canonical text the assembler reads back
//! (docs/bytecode.md, "Assembly syntax"). `assemble(&disassemble(&p)) == Ok(p)` for
//! every program `p`, including ones the verifier rejects: those instructions are written
//! raw, as `.word` (or `.instr` for an opcode field that does not fit the 8-bit encoding).

use std::fmt::Write as _;

use super::isa::{op_info, Form, Instr, OpInfo, Program};
use crate::ring::layout as p;

/// Writes `program` as assembly text, one instruction per line.
///
/// Instructions are indented by four spaces; a label line `L<index>:` precedes every
/// instruction that a branch targets, and branches name those labels. Immediates are
/// decimal (`addi` signed, `movi` from 2^31 up in hex). An instruction the verifier would
/// reject on its own (unknown opcode, a register, buffer, argument, result slot or branch
/// target out of range, a nonzero unused field) becomes `.word 0x…, 0x…`, its two encoded
/// words; one whose opcode does not fit the encoding's 8 bits becomes
/// `.instr op, d, a, b, imm`.
///
/// ```
/// use megaring::vm::{assemble, disassemble, ProgramBuilder};
/// let mut b = ProgramBuilder::new();
/// let top = b.label();
/// b.bind(top).movi(1, 7).jmp(top);
/// let program = b.build()?;
/// let text = disassemble(&program);
/// assert_eq!(text, "L0:\n    movi r1, 7\n    jmp L0\n");
/// assert_eq!(assemble(&text), Ok(program));
/// # Ok::<(), megaring::vm::VmError>(())
/// ```
pub fn disassemble(program: &Program) -> String {
    let n = program.instrs.len();
    let mut is_target = vec![false; n];
    for instr in &program.instrs {
        if let Some(info) = printable(instr, n) {
            if matches!(info.form, Form::Target | Form::CondTarget | Form::Loop) {
                if let Some(t) = is_target.get_mut(instr.imm as usize) {
                    *t = true;
                }
            }
        }
    }
    let mut out = String::new();
    for (index, instr) in program.instrs.iter().enumerate() {
        if is_target[index] {
            let _ = writeln!(out, "L{index}:");
        }
        out.push_str("    ");
        match printable(instr, n) {
            Some(info) => write_instr(&mut out, info, instr),
            None if instr.op <= 0xff => {
                let [first, second] = instr.encode();
                let _ = write!(out, ".word {first:#010x}, {second:#010x}");
            }
            None => {
                let Instr { op, d, a, b, imm } = *instr;
                let _ = write!(out, ".instr {op}, {d}, {a}, {b}, {imm}");
            }
        }
        out.push('\n');
    }
    out
}

/// The opcode's facts, if `i` can be written with its mnemonic and read back unchanged:
/// exactly when the verifier's checks of this one instruction pass for a job binding the
/// most buffers a job may bind, in a program of `n` instructions.
fn printable(i: &Instr, n: usize) -> Option<&'static OpInfo> {
    let info = op_info(i.op)?;
    let reg = |r: u8| u32::from(r) < p::VM_REGISTERS;
    let buffer = i.imm < p::VM_MAX_BUFFERS;
    let target = (i.imm as usize) < n;
    let (d, a, b, imm) = (i.d == 0, i.a == 0, i.b == 0, i.imm == 0);
    let ok = match info.form {
        Form::None => d && a && b && imm,
        Form::Target => d && a && b && target,
        Form::CondTarget => d && reg(i.a) && b && target,
        Form::DImm => reg(i.d) && a && b,
        Form::DA => reg(i.d) && reg(i.a) && b && imm,
        Form::DAB => reg(i.d) && reg(i.a) && reg(i.b) && imm,
        Form::DAImm => reg(i.d) && reg(i.a) && b,
        Form::Select => reg(i.d) && reg(i.a) && reg(i.b) && i.imm < p::VM_REGISTERS,
        Form::Load => reg(i.d) && reg(i.a) && b && buffer,
        Form::Store => d && reg(i.a) && reg(i.b) && buffer,
        Form::Load4 => reg(i.d) && reg(i.d.saturating_add(3)) && reg(i.a) && b && buffer,
        Form::Store4 => d && reg(i.a) && reg(i.b) && reg(i.b.saturating_add(3)) && buffer,
        Form::DAB4 => reg(i.d.saturating_add(3)) && reg(i.a.saturating_add(3)) && reg(i.b.saturating_add(3)) && imm,
        Form::Atomic => reg(i.d) && reg(i.a) && reg(i.b) && buffer,
        Form::Load4Op => reg(i.d.saturating_add(3)) && reg(i.a) && reg(i.b.saturating_add(3)) && buffer,
        Form::D => reg(i.d) && a && b && imm,
        Form::Arg => reg(i.d) && a && b && i.imm < p::VM_MAX_ARGS,
        Form::BufLen => reg(i.d) && a && b && buffer,
        Form::Result => d && reg(i.a) && b && i.imm < p::VM_MAX_RESULTS,
        Form::Loop => reg(i.d) && reg(i.a) && reg(i.b) && target,
    };
    ok.then_some(info)
}

/// Writes mnemonic and operands of an instruction [`printable`] accepted.
fn write_instr(out: &mut String, info: &OpInfo, i: &Instr) {
    let Instr { d, a, b, imm, .. } = *i;
    let name = info.name;
    let _ = match info.form {
        Form::None => write!(out, "{name}"),
        Form::Target => write!(out, "{name} L{imm}"),
        Form::CondTarget => write!(out, "{name} r{a}, L{imm}"),
        Form::Loop => write!(out, "{name} r{d}, r{a}, r{b}, L{imm}"),
        Form::DImm if imm >= 1 << 31 => write!(out, "{name} r{d}, {imm:#010x}"),
        Form::DImm => write!(out, "{name} r{d}, {imm}"),
        Form::DA => write!(out, "{name} r{d}, r{a}"),
        Form::DAB | Form::DAB4 => write!(out, "{name} r{d}, r{a}, r{b}"),
        Form::DAImm => write!(out, "{name} r{d}, r{a}, {}", imm as i32),
        Form::Select => write!(out, "{name} r{d}, r{a}, r{b}, r{imm}"),
        Form::Load | Form::Load4 => write!(out, "{name} r{d}, b{imm}[r{a}]"),
        Form::Store | Form::Store4 => write!(out, "{name} b{imm}[r{a}], r{b}"),
        Form::Atomic | Form::Load4Op => write!(out, "{name} r{d}, b{imm}[r{a}], r{b}"),
        Form::D => write!(out, "{name} r{d}"),
        Form::Arg => write!(out, "{name} r{d}, {imm}"),
        Form::BufLen => write!(out, "{name} r{d}, b{imm}"),
        Form::Result => write!(out, "{name} {imm}, r{a}"),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::assemble;

    fn i(op: u32, d: u8, a: u8, b: u8, imm: u32) -> Instr {
        Instr { op, d, a, b, imm }
    }

    fn round_trip(program: &Program) -> String {
        let text = disassemble(program);
        assert_eq!(assemble(&text).as_ref(), Ok(program), "text:\n{text}");
        text
    }

    #[test]
    fn canonical_text() {
        let program = Program {
            instrs: vec![
                i(p::OP_ARG, 1, 0, 0, 0),
                i(p::OP_MOVI, 2, 0, 0, 0x8000_0000),
                i(p::OP_BRZ, 0, 1, 0, 7),
                i(p::OP_LD32, 3, 1, 0, 2),
                i(p::OP_ATOMIC_ADD, 4, 1, 3, 1),
                i(p::OP_ADDI, 1, 1, 0, u32::MAX),
                i(p::OP_JMP, 0, 0, 0, 2),
                i(p::OP_SEL, 5, 2, 3, 4),
                i(p::OP_ST8, 0, 5, 6, 7),
                i(p::OP_BUFLEN, 6, 0, 0, 0),
                i(p::OP_RED_ADD, 7, 6, 0, 0),
                i(p::OP_RESULT, 0, 7, 0, 3),
                i(p::OP_HALT, 0, 0, 0, 0),
            ],
        };
        let text = round_trip(&program);
        assert_eq!(
            text,
            "    arg r1, 0
    movi r2, 0x80000000
L2:
    brz r1, L7
    ld32 r3, b2[r1]
    atomic.add r4, b1[r1], r3
    addi r1, r1, -1
    jmp L2
L7:
    sel r5, r2, r3, r4
    st8 b7[r5], r6
    buflen r6, b0
    red.add r7, r6
    result 3, r7
    halt
"
        );
    }

    #[test]
    fn documented_example() {
        // The example of docs/bytecode.md, "Assembly syntax".
        let source = "\
; sum of 1..=n
        arg r1, 0          # n
        movi r2, 0         ; sum
loop:   brz r1, done
        add r2, r2, r1
        addi r1, r1, -1
        jmp loop
done:   result 0, r2
        halt
";
        let program = assemble(source).unwrap();
        let text = round_trip(&program);
        assert_eq!(
            text,
            "    arg r1, 0
    movi r2, 0
L2:
    brz r1, L6
    add r2, r2, r1
    addi r1, r1, -1
    jmp L2
L6:
    result 0, r2
    halt
"
        );
    }

    #[test]
    fn rejected_instructions_are_raw() {
        let program = Program {
            instrs: vec![
                i(200, 0, 0, 0, 0),                   // unknown opcode
                i(p::OP_ADD, 1, 2, 32, 0),            // register out of range
                i(p::OP_HALT, 1, 0, 0, 0),            // unused field
                i(p::OP_JMP, 0, 0, 0, 9),             // target out of range
                i(p::OP_LD32, 1, 2, 0, 8),            // buffer out of range
                i(p::OP_ARG, 1, 0, 0, 4),             // argument out of range
                i(p::OP_RESULT, 0, 1, 0, 4),          // slot out of range
                i(p::OP_SEL, 1, 2, 3, 32),            // condition register out of range
                i(0x1_0000 + p::OP_HALT, 0, 0, 0, 0), // opcode beyond 8 bits
            ],
        };
        let text = round_trip(&program);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "    .word 0x000000c8, 0x00000000");
        assert_eq!(lines[1], "    .word 0x20020108, 0x00000000");
        assert!(lines[..8].iter().all(|l| l.starts_with("    .word ")), "{text}");
        assert_eq!(lines[8], "    .instr 65537, 0, 0, 0, 0");
    }

    #[test]
    fn targets_and_edges() {
        assert_eq!(disassemble(&Program::default()), "");
        // Self-loop, branch to the first instruction, and two branches to one target.
        let program = Program {
            instrs: vec![
                i(p::OP_BRNZ, 0, 31, 0, 0),
                i(p::OP_BRZ, 0, 0, 0, 2),
                i(p::OP_JMP, 0, 0, 0, 2),
            ],
        };
        assert_eq!(
            round_trip(&program),
            "L0:\n    brnz r31, L0\n    brz r0, L2\nL2:\n    jmp L2\n"
        );
        // Immediates of every size survive, and f32 bit patterns are plain integers.
        for imm in [0, 1, 0x7fff_ffff, 0x8000_0000, u32::MAX, 1.5f32.to_bits()] {
            let program = Program {
                instrs: vec![
                    i(p::OP_MOVI, 0, 0, 0, imm),
                    i(p::OP_ADDI, 1, 0, 0, imm),
                    i(p::OP_ARG, 0, 0, 0, 3),
                ],
            };
            round_trip(&program);
        }
    }
}
