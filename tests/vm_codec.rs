//! Property tests of the program codecs: the binary format (`Program::from_bytes`,
//! `to_bytes`), the verifier and the assembly text (`assemble`, `disassemble`). Host only;
//! no device needed.

use megaring::ring::layout as p;
use megaring::vm::isa::{Form, OPS};
use megaring::vm::{assemble, disassemble, verify, Instr, Program};
use proptest::prelude::*;
use proptest::test_runner::Config;

fn config() -> Config {
    Config {
        cases: 256,
        // Shrunk failures are printed; keep the checkout free of regression files.
        failure_persistence: None,
        ..Config::default()
    }
}

/// A register field: mostly in range, sometimes any byte.
fn register() -> impl Strategy<Value = u8> {
    prop_oneof![8 => 0u8..32, 1 => any::<u8>()]
}

/// An immediate: mostly small (branch targets, buffers, slots), sometimes any word.
fn immediate() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => 0u32..80,
        2 => any::<u32>(),
        1 => Just(u32::MAX),
        1 => Just(0x8000_0000u32),
        1 => any::<f32>().prop_map(f32::to_bits),
    ]
}

/// Clears the fields `form` does not use.
fn clear_unused(i: &mut Instr, form: Form) {
    let (d, a, b, imm) = match form {
        Form::None => (false, false, false, false),
        Form::Target => (false, false, false, true),
        Form::CondTarget => (false, true, false, true),
        Form::Loop => (true, true, true, true),
        Form::DImm => (true, false, false, true),
        Form::DA => (true, true, false, false),
        Form::DAB | Form::DAB4 => (true, true, true, false),
        Form::DAImm => (true, true, false, true),
        Form::Select | Form::Atomic | Form::Load4Op => (true, true, true, true),
        Form::Load | Form::Load4 => (true, true, false, true),
        Form::Store | Form::Store4 => (false, true, true, true),
        Form::D => (true, false, false, false),
        Form::Arg | Form::BufLen => (true, false, false, true),
        Form::Result => (false, true, false, true),
    };
    i.d = if d { i.d } else { 0 };
    i.a = if a { i.a } else { 0 };
    i.b = if b { i.b } else { 0 };
    i.imm = if imm { i.imm } else { 0 };
}

/// A real opcode with fields shaped by its form: mostly well formed, sometimes not.
fn shaped_instr() -> impl Strategy<Value = Instr> {
    (
        0..OPS.len(),
        register(),
        register(),
        register(),
        immediate(),
        prop::bool::weighted(0.9),
    )
        .prop_map(|(index, d, a, b, imm, clean)| {
            let info = &OPS[index];
            let mut i = Instr {
                op: info.code,
                d,
                a,
                b,
                imm,
            };
            if clean {
                clear_unused(&mut i, info.form);
            }
            i
        })
}

/// Any field values; `op` below 256 (what the binary format can carry) or any u32.
fn raw_instr() -> impl Strategy<Value = Instr> {
    let op = prop_oneof![0u32..256, any::<u32>()];
    (op, any::<u8>(), any::<u8>(), any::<u8>(), any::<u32>()).prop_map(|(op, d, a, b, imm)| Instr { op, d, a, b, imm })
}

fn any_instr() -> impl Strategy<Value = Instr> {
    prop_oneof![6 => shaped_instr(), 1 => raw_instr()]
}

fn any_program() -> impl Strategy<Value = Program> {
    prop::collection::vec(any_instr(), 1..64).prop_map(|instrs| Program { instrs })
}

/// Programs the verifier accepts for a job binding the most buffers a job may bind.
fn valid_program() -> impl Strategy<Value = Program> {
    let instr = (0..OPS.len(), 0u8..32, 0u8..32, 0u8..32, any::<u32>());
    prop::collection::vec(instr, 1..64).prop_map(|raw| {
        let n = raw.len() as u32;
        let mut instrs: Vec<Instr> = raw
            .into_iter()
            .map(|(index, d, a, b, imm)| {
                let info = &OPS[index];
                let imm = match info.form {
                    Form::Target | Form::CondTarget | Form::Loop => imm % n,
                    Form::Select => imm % p::VM_REGISTERS,
                    Form::Load
                    | Form::Store
                    | Form::Load4
                    | Form::Store4
                    | Form::Load4Op
                    | Form::Atomic
                    | Form::BufLen => imm % p::VM_MAX_BUFFERS,
                    Form::Arg => imm % p::VM_MAX_ARGS,
                    Form::Result => imm % p::VM_MAX_RESULTS,
                    _ => imm,
                };
                let mut i = Instr {
                    op: info.code,
                    d,
                    a,
                    b,
                    imm,
                };
                clear_unused(&mut i, info.form);
                // Four-register groups must end by r31.
                match info.form {
                    Form::Load4 => i.d %= 29,
                    Form::Store4 => i.b %= 29,
                    Form::DAB4 => (i.d, i.a, i.b) = (i.d % 29, i.a % 29, i.b % 29),
                    Form::Load4Op => (i.d, i.b) = (i.d % 29, i.b % 29),
                    _ => {}
                }
                i
            })
            .collect();
        if let Some(last) = instrs.last_mut() {
            if !matches!(last.op, p::OP_HALT | p::OP_JMP) {
                *last = Instr {
                    op: p::OP_HALT,
                    ..Instr::default()
                };
            }
        }
        Program { instrs }
    })
}

/// Bytes: pure noise, or a valid header (count sometimes off) over instruction words,
/// sometimes cut short.
fn program_bytes() -> impl Strategy<Value = Vec<u8>> {
    let noise = prop::collection::vec(any::<u8>(), 0..256);
    let framed = (
        prop::collection::vec(any_instr(), 0..48),
        prop_oneof![4 => Just(0u32), 1 => any::<u32>()],
        prop_oneof![4 => Just(0i64), 1 => -2i64..=2, 1 => Just(i64::from(p::VM_MAX_INSTRUCTIONS))],
        prop_oneof![4 => Just(0usize), 1 => 1usize..8],
    )
        .prop_map(|(instrs, reserved, skew, cut)| {
            let count = (instrs.len() as i64 + skew) as u32;
            let mut words = vec![p::VM_MAGIC, p::VM_VERSION, count, reserved];
            words.extend(instrs.iter().flat_map(Instr::encode));
            let mut bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            bytes.truncate(bytes.len().saturating_sub(cut));
            bytes
        });
    prop_oneof![1 => noise, 3 => framed]
}

/// Text near the assembler's grammar: mnemonics, operands and punctuation in any order.
fn assembly_text() -> impl Strategy<Value = String> {
    const WORDS: &[&str] = &[
        "add",
        "movi",
        "jmp",
        "brz",
        "ld32",
        "st32",
        "atomic.add",
        "sel",
        "result",
        "halt",
        ".word",
        ".instr",
        "r0",
        "r31",
        "r32",
        "b0",
        "b7",
        "b8",
        "[",
        "]",
        ",",
        ":",
        "loop",
        "loop:",
        "L0:",
        "0",
        "-1",
        "0x1f",
        "1.5f",
        "-0.25f",
        "1e3f",
        "4294967296",
        "é",
        ";",
        "#",
        "\n",
        "\t",
        " ",
        "\r\n",
    ];
    let soup = prop::collection::vec(prop::sample::select(WORDS), 0..24).prop_map(|words| words.join(" "));
    prop_oneof![soup, any::<String>()]
}

proptest! {
    #![proptest_config(config())]

    /// (a) Decoding and verifying never panic, whatever the bytes.
    #[test]
    fn decode_and_verify_never_panic(bytes in program_bytes(), buffers in 0usize..10) {
        if let Ok(program) = Program::from_bytes(&bytes) {
            let _ = verify(&program, buffers);
            prop_assert_eq!(assemble(&disassemble(&program)), Ok(program));
        }
    }

    /// (b) Every program survives disassembly and reassembly exactly.
    #[test]
    fn text_round_trips(program in any_program()) {
        let text = disassemble(&program);
        prop_assert_eq!(assemble(&text), Ok(program.clone()), "text:\n{}", text);
        if verify(&program, p::VM_MAX_BUFFERS as usize).is_ok() {
            prop_assert_eq!(Program::from_bytes(&program.to_bytes()), Ok(program));
        }
    }

    /// (c) Verified programs survive the binary format exactly (and the text too).
    #[test]
    fn verified_programs_round_trip_binary(program in valid_program()) {
        prop_assert!(verify(&program, p::VM_MAX_BUFFERS as usize).is_ok(), "{:?}", verify(&program, 8));
        prop_assert_eq!(Program::from_bytes(&program.to_bytes()), Ok(program.clone()));
        prop_assert_eq!(Program::from_words(&program.to_words()), Ok(program.clone()));
        prop_assert_eq!(assemble(&disassemble(&program)), Ok(program));
    }

    /// The assembler never panics on any text, and what it accepts round-trips.
    #[test]
    fn assemble_never_panics(text in assembly_text()) {
        if let Ok(program) = assemble(&text) {
            prop_assert_eq!(assemble(&disassemble(&program)), Ok(program));
        }
    }
}
