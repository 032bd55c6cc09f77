//! Differential testing: random valid programs run on the GPU interpreter and on the CPU
//! reference interpreter, compared word for word (results, faults and every output word).
//!
//! The generator keeps programs deterministic by construction, as the spec requires of
//! programs whose results are compared (docs/bytecode.md, "Determinism"): lanes store only
//! to their own slots; atomics are commutative (add, min, max, and, or, xor) on one
//! element per kind and their old values are discarded; floats come from small integers
//! (no denormals), so every float operation is exactly rounded on both sides. Loads may go
//! out of range and divisions may divide by zero: faults are compared too.

mod common;

use common::{config, TestRuntime};
use megaring::ring::layout as p;
use megaring::vm::interp::{self, Launch};
use megaring::vm::{verify, Program, ProgramBuilder, VerifiedProgram};
use megaring::{Error, Job, Placement};

/// xorshift64*: a small deterministic generator (the seed is printed on failure).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }
    fn below(&mut self, n: u32) -> u32 {
        self.next() % n
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u32) as usize]
    }
}

const INPUT_WORDS: u32 = 40;
/// Output slots per lane: r3..r15 and f20..f27, then one more region of one word per
/// lane (`b1[lanes * SLOTS + lane]`) for stores of consecutive words by consecutive lanes,
/// then one of four words per lane (`b1[lanes * (SLOTS + 1) + 4 * lane ..]`) for `st32x4`.
const SLOTS: u32 = 21;
/// Words of b1 per lane.
const OUTPUT: u32 = SLOTS + 5;
const INT_OPS: &[u32] = &[
    p::OP_ADD,
    p::OP_SUB,
    p::OP_MUL,
    p::OP_AND,
    p::OP_OR,
    p::OP_XOR,
    p::OP_SHL,
    p::OP_SHRU,
    p::OP_SHRS,
    p::OP_MINU,
    p::OP_MAXU,
    p::OP_MINS,
    p::OP_MAXS,
    p::OP_EQ,
    p::OP_NE,
    p::OP_LTU,
    p::OP_LTS,
    p::OP_LEU,
    p::OP_LES,
    p::OP_DIVU,
    p::OP_DIVS,
    p::OP_REMU,
    p::OP_REMS,
    p::OP_CRC32B,
    p::OP_CRC32W,
    p::OP_CRC32MUL,
];
const FLOAT_OPS: &[u32] = &[p::OP_FADD, p::OP_FSUB, p::OP_FMUL, p::OP_FMIN, p::OP_FMAX];
const FLOAT_TESTS: &[u32] = &[p::OP_FLT, p::OP_FLE, p::OP_FEQ];
const ATOMICS: &[u32] = &[
    p::OP_ATOMIC_ADD,
    p::OP_ATOMIC_MIN,
    p::OP_ATOMIC_MAX,
    p::OP_ATOMIC_AND,
    p::OP_ATOMIC_OR,
    p::OP_ATOMIC_XOR,
];
const REDUCTIONS: &[u32] = &[p::OP_RED_ADD, p::OP_RED_MIN, p::OP_RED_MAX];

fn int_reg(rng: &mut Rng) -> u8 {
    3 + rng.below(13) as u8 // r3..r15
}

fn float_reg(rng: &mut Rng) -> u8 {
    20 + rng.below(8) as u8 // r20..r27
}

/// Four elements of b0 at r30 into r(d)..r(d+3): `ld32x4`, or an integer `.x4m` op with a
/// group of r3..r15 (floats loaded from memory could be denormal).
fn quad_from_memory(b: &mut ProgramBuilder, rng: &mut Rng) {
    let group = |rng: &mut Rng| 3 + rng.below(10) as u8;
    let d = group(rng);
    if rng.below(2) == 0 {
        b.emit(p::OP_LD32X4, d, 30, 0, 0);
    } else {
        let op = rng.pick(&[
            p::OP_ADD_X4M,
            p::OP_SUB_X4M,
            p::OP_MUL_X4M,
            p::OP_AND_X4M,
            p::OP_OR_X4M,
            p::OP_XOR_X4M,
        ]);
        let source = group(rng);
        b.emit(op, d, 30, source, 0);
    }
}

/// One random program. Buffers: b0 input (read-only), b1 per-lane output, b2 atomics.
fn random_program(rng: &mut Rng) -> Program {
    let mut b = ProgramBuilder::new();
    b.op2(p::OP_LANE, 0, 0).op2(p::OP_GRID, 1, 0).op2(p::OP_LANES, 2, 0);
    for r in 3..16u8 {
        match rng.below(4) {
            0 => b.movi(r, rng.next()),
            1 => b.movi(r, rng.below(16)),
            2 => b.emit(p::OP_ARG, r, 0, 0, rng.below(4)),
            _ => b.op3(p::OP_ADD, r, 0, 0), // 2 * lane: differs per lane
        };
    }
    for r in 20..28u8 {
        b.movi(30, rng.below(2001).wrapping_sub(1000)).op2(p::OP_I2F, r, 30);
    }
    let blocks = 1 + rng.below(6);
    for _ in 0..blocks {
        match rng.below(7) {
            0 | 1 => {
                for _ in 0..1 + rng.below(6) {
                    let (d, a, bb) = (int_reg(rng), int_reg(rng), int_reg(rng));
                    b.op3(rng.pick(INT_OPS), d, a, bb);
                }
                if rng.below(3) == 0 {
                    // Four-register groups within r3..r15, overlapping or not.
                    let op = rng.pick(&[
                        p::OP_ADD_X4,
                        p::OP_SUB_X4,
                        p::OP_MUL_X4,
                        p::OP_AND_X4,
                        p::OP_OR_X4,
                        p::OP_XOR_X4,
                    ]);
                    let group = |rng: &mut Rng| 3 + rng.below(10) as u8;
                    let (d, a, bb) = (group(rng), group(rng), group(rng));
                    b.op3(op, d, a, bb);
                }
                let d = int_reg(rng);
                b.emit(p::OP_ADDI, d, int_reg(rng), 0, rng.next());
                let (d, a, bb, c) = (int_reg(rng), int_reg(rng), int_reg(rng), int_reg(rng));
                b.emit(p::OP_SEL, d, a, bb, u32::from(c));
            }
            2 if rng.below(2) == 0 => {
                // A bounded loop: r16 counts down from 1..4.
                let top = b.label();
                b.movi(16, 1 + rng.below(4)).bind(top);
                for _ in 0..1 + rng.below(3) {
                    let (d, a, bb) = (int_reg(rng), int_reg(rng), int_reg(rng));
                    b.op3(rng.pick(&INT_OPS[..9]), d, a, bb);
                }
                b.addi(16, 16, u32::MAX).brnz(16, top);
            }
            2 => {
                // A counted loop (`loop`): r16 steps by r17 up to a limit that differs per
                // lane (lanes leave it after different trip counts).
                let top = b.label();
                b.movi(16, 0).movi(17, 1 + rng.below(3)).movi(18, 4);
                b.op3(p::OP_REMU, 18, 0, 18)
                    .emit(p::OP_ADDI, 18, 18, 0, 1 + rng.below(6));
                b.bind(top);
                for _ in 0..1 + rng.below(3) {
                    let (d, a, bb) = (int_reg(rng), int_reg(rng), int_reg(rng));
                    b.op3(rng.pick(&INT_OPS[..9]), d, a, bb);
                }
                b.loop_to(16, 17, 18, top);
            }
            3 => {
                for _ in 0..1 + rng.below(3) {
                    let (d, a, bb) = (float_reg(rng), float_reg(rng), float_reg(rng));
                    b.op3(rng.pick(FLOAT_OPS), d, a, bb);
                }
                if rng.below(2) == 0 {
                    // Four-register groups within r20..r27.
                    let op = rng.pick(&[p::OP_FADD_X4, p::OP_FSUB_X4, p::OP_FMUL_X4]);
                    let group = |rng: &mut Rng| 20 + rng.below(5) as u8;
                    let (d, a, bb) = (group(rng), group(rng), group(rng));
                    b.op3(op, d, a, bb);
                }
                let (d, a, bb) = (int_reg(rng), float_reg(rng), float_reg(rng));
                b.op3(rng.pick(FLOAT_TESTS), d, a, bb);
                let (d, a) = (int_reg(rng), float_reg(rng));
                b.op2(rng.pick(&[p::OP_F2I, p::OP_F2U]), d, a);
                let (d, a) = (float_reg(rng), int_reg(rng));
                b.movi(30, 0xFFFF).op3(p::OP_AND, 30, a, 30).op2(p::OP_U2F, d, 30);
            }
            4 if rng.below(2) == 0 => {
                // A load, usually in range (index below 48 words of a 40-word buffer).
                let (d, a) = (int_reg(rng), int_reg(rng));
                b.movi(30, 48).op3(p::OP_REMU, 30, a, 30);
                if rng.below(3) == 0 {
                    quad_from_memory(&mut b, rng);
                } else {
                    b.emit(rng.pick(&[p::OP_LD32, p::OP_LD32, p::OP_LD8]), d, 30, 0, 0);
                }
            }
            4 => {
                // Consecutive lanes at consecutive elements (the interpreter's 16-byte
                // path): a load at (lane & 31) + 4k, or a store to this lane's word of b1's
                // last region.
                let d = int_reg(rng);
                match rng.below(4) {
                    0 => {
                        b.movi(30, 31).op3(p::OP_AND, 30, 0, 30);
                        b.emit(p::OP_ADDI, 30, 30, 0, 4 * rng.below(3));
                        b.emit(rng.pick(&[p::OP_LD32, p::OP_LD8]), d, 30, 0, 0);
                    }
                    1 => {
                        b.movi(30, SLOTS).op3(p::OP_MUL, 30, 2, 30).op3(p::OP_ADD, 30, 30, 0);
                        b.emit(p::OP_ST32, 0, 30, d, 1);
                    }
                    2 => {
                        // Four elements per lane, consecutive lanes at consecutive quads
                        // (the 16-byte path), or one element off (unaligned).
                        b.movi(30, 7)
                            .op3(p::OP_AND, 30, 0, 30)
                            .movi(29, 4)
                            .op3(p::OP_MUL, 30, 30, 29);
                        b.emit(p::OP_ADDI, 30, 30, 0, rng.below(2) + 4 * rng.below(2));
                        quad_from_memory(&mut b, rng);
                    }
                    _ => {
                        // This lane's four words of b1's last region.
                        b.movi(30, SLOTS + 1).op3(p::OP_MUL, 30, 2, 30);
                        b.movi(29, 4).op3(p::OP_MUL, 29, 0, 29).op3(p::OP_ADD, 30, 30, 29);
                        b.emit(p::OP_ST32X4, 0, 30, 3 + rng.below(10) as u8, 1);
                    }
                }
            }
            5 => {
                // Commutative atomics, one element per kind, old value discarded (r31).
                let kind = rng.below(ATOMICS.len() as u32);
                b.movi(30, kind).emit(ATOMICS[kind as usize], 31, 30, int_reg(rng), 2);
            }
            _ => {
                let (d, a) = (int_reg(rng), int_reg(rng));
                b.op2(rng.pick(REDUCTIONS), d, a);
                let (d, a) = (float_reg(rng), float_reg(rng));
                b.op2(rng.pick(&[p::OP_RED_FMIN, p::OP_RED_FMAX]), d, a);
            }
        }
    }
    // Each lane stores its registers to its own slots of b1; lane 0 sets the results.
    b.movi(30, SLOTS).op3(p::OP_MUL, 29, 0, 30);
    for (k, r) in (3..16u8).chain(20..28u8).enumerate() {
        b.emit(p::OP_ADDI, 28, 29, 0, k as u32).emit(p::OP_ST32, 0, 28, r, 1);
    }
    for slot in 0..4 {
        b.emit(p::OP_RESULT, 0, int_reg(rng), 0, slot);
    }
    b.halt();
    b.build().expect("labels bound")
}

#[test]
fn a_thousand_random_programs_agree_with_the_reference_interpreter() {
    // Four VM lanes per invocation (the default) and eight, with the converged dispatcher
    // (lavapipe leaves it off by default), and four without it (only the per-lane one).
    for (sublanes, converged) in [(4, true), (8, true), (4, false)] {
        differential(sublanes, converged);
    }
}

fn differential(sublanes: u32, converged: bool) {
    let rt = TestRuntime::new(megaring::RuntimeConfig {
        vm_sublanes: Some(sublanes),
        vm_converged: Some(converged),
        ..config()
    });
    assert_eq!(rt.info().vm_converged, converged);
    let lanes = rt.info().vm_lanes;
    let seed = std::env::var("MEGARING_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_2026u64);
    let mut rng = Rng(seed | 1);
    let programs = 1_200;
    let fuel = 1_500;
    let input_words: Vec<u32> = (0..INPUT_WORDS).map(|_| rng.next()).collect();
    let input = rt.alloc_u32(u64::from(INPUT_WORDS), Placement::DeviceShared).unwrap();
    input.write_u32(0, &input_words).unwrap();

    struct Case {
        program: VerifiedProgram,
        args: [u32; 4],
        output: megaring::DeviceBuffer,
        atomics: megaring::DeviceBuffer,
    }
    let mut cases = Vec::new();
    let mut jobs = Vec::new();
    for _ in 0..programs {
        let program = verify(&random_program(&mut rng), 3).expect("generated programs verify");
        let args = [rng.next(), rng.below(100), 7, rng.next()];
        let output = rt.alloc_u32(u64::from(lanes * OUTPUT), Placement::HostCached).unwrap();
        let atomics = rt.alloc_u32(8, Placement::DeviceShared).unwrap();
        atomics.write_u32(0, &[0, u32::MAX, 0, u32::MAX, 0, 0, 0, 0]).unwrap();
        let table = rt.buffer_table(&[&input, &output, &atomics]).unwrap();
        let loaded = rt.load_program(program.clone()).unwrap();
        jobs.push(Job::program(&loaded, &table, 64, args, fuel).unwrap());
        cases.push(Case {
            program,
            args,
            output,
            atomics,
        });
    }
    let handles = rt.submit_batch(jobs).unwrap();
    let (mut ok, mut faulted) = (0, 0);
    for (n, (handle, case)) in handles.into_iter().zip(&cases).enumerate() {
        let gpu = handle.wait();
        let mut buffers = vec![
            bytemuck::cast_slice(&input_words).to_vec(),
            vec![0u8; (lanes * OUTPUT * 4) as usize],
            bytemuck::cast_slice(&[0u32, u32::MAX, 0, u32::MAX, 0, 0, 0, 0]).to_vec(),
        ];
        let launch = Launch {
            lanes,
            grid: 64,
            tile_begin: 0,
            args: case.args,
            fuel,
        };
        let cpu = interp::run(&case.program, &launch, &mut buffers);
        let context = || {
            format!(
                "program {n} (seed {seed:#x}):\n{}",
                megaring::vm::disassemble(case.program.program())
            )
        };
        match gpu {
            Ok(done) => {
                assert_eq!(
                    cpu.status,
                    p::STATUS_OK,
                    "GPU completed, CPU says {cpu:?}; {}",
                    context()
                );
                assert_eq!(done.results, cpu.results, "results; {}", context());
                let words = case.output.read_u32(0, u64::from(lanes * OUTPUT)).unwrap();
                assert_eq!(
                    words,
                    bytemuck::cast_slice::<u8, u32>(&buffers[1]),
                    "output; {}",
                    context()
                );
                let atomics = case.atomics.read_u32(0, 8).unwrap();
                assert_eq!(
                    atomics,
                    bytemuck::cast_slice::<u8, u32>(&buffers[2]),
                    "atomics; {}",
                    context()
                );
                ok += 1;
            }
            Err(Error::Fault(fault)) => {
                assert_eq!(
                    (fault.status, [fault.instruction, fault.lane, fault.detail, 0]),
                    (cpu.status, cpu.results),
                    "fault; {}",
                    context()
                );
                faulted += 1;
            }
            Err(e) => panic!("job failed: {e}; {}", context()),
        }
    }
    // The generator exercises both paths.
    eprintln!("{sublanes} VM lanes per invocation, converged dispatcher {converged}: {ok} programs completed, {faulted} faulted, both sides agreeing");
    assert!(ok > programs / 2 && faulted > 10, "{ok} completed, {faulted} faulted");
    rt.finish();
}
