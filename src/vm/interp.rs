//! The CPU reference interpreter: the executable specification of the bytecode. The GPU
//! interpreter (`glsl/vm.glsl`) is tested against it (`tests/vm_differential.rs`), never
//! the other way round. It runs one workgroup of `lanes` lanes over a job.
//!
//! Execution is in *phases*. In a phase every lane runs on its own until it halts, faults,
//! or reaches a reduction. Then, if any lane faulted, the job ends with the fault of the
//! lowest-numbered faulting lane. If every lane halted, the job is done. Otherwise every
//! lane that has not halted must stand at the same reduction (else `STATUS_FAULT_DIVERGED`);
//! the reduction combines their operands (halted lanes do not take part), writes the result
//! to each of them, and the next phase begins. Within a phase, lanes are independent:
//! programs must not read what another lane writes in the same phase (results would depend
//! on scheduling, on the GPU as here).

use super::isa::{is_reduction, x4_scalar};
use super::verify::VerifiedProgram;
use super::VmError;
use crate::ring::layout as p;

/// The job parameters a program sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    /// Lanes in the workgroup.
    pub lanes: u32,
    /// One past the last element of the job's tile, as `grid` returns.
    pub grid: u32,
    /// First element of the job's tile, as `tile.begin` returns (0 untiled).
    pub tile_begin: u32,
    /// Argument words.
    pub args: [u32; 4],
    /// Instructions each lane may execute.
    pub fuel: u32,
}

/// How a job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// `STATUS_OK` or a `STATUS_FAULT_*` code.
    pub status: u32,
    /// Result words (OK), or [instruction, lane, detail, 0] (fault).
    pub results: [u32; 4],
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum LaneState {
    Running,
    AtReduction,
    Halted,
}

struct Lane {
    regs: [u32; 32],
    pc: u32,
    fuel: u32,
    state: LaneState,
}

/// A fault: (status, instruction, detail).
type Fault = (u32, u32, u32);

/// Runs `program` on one workgroup; `buffers` are the job's buffers, in table order.
pub fn run(program: &VerifiedProgram, launch: &Launch, buffers: &mut [Vec<u8>]) -> Outcome {
    let instrs = &program.program().instrs;
    let mut results = [0u32; 4];
    let mut lanes: Vec<Lane> = (0..launch.lanes)
        .map(|_| Lane {
            regs: [0; 32],
            pc: 0,
            fuel: launch.fuel,
            state: LaneState::Running,
        })
        .collect();
    loop {
        let mut first_fault: Option<(u32, Fault)> = None;
        for (lane_no, lane) in lanes.iter_mut().enumerate() {
            if lane.state != LaneState::Running {
                continue;
            }
            if let Err(fault) = step_until_sync(instrs, lane, lane_no as u32, launch, buffers, &mut results) {
                first_fault.get_or_insert((lane_no as u32, fault));
            }
        }
        if let Some((lane, (status, pc, detail))) = first_fault {
            return Outcome {
                status,
                results: [pc, lane, detail, 0],
            };
        }
        let waiting: Vec<usize> = (0..lanes.len())
            .filter(|&i| lanes[i].state == LaneState::AtReduction)
            .collect();
        let Some(&leader) = waiting.first() else {
            return Outcome {
                status: p::STATUS_OK,
                results,
            };
        };
        let pc = lanes[leader].pc;
        if let Some(&other) = waiting.iter().find(|&&i| lanes[i].pc != pc) {
            return Outcome {
                status: p::STATUS_FAULT_DIVERGED,
                results: [pc, other as u32, lanes[other].pc, 0],
            };
        }
        let instr = instrs[pc as usize];
        let operands = waiting.iter().map(|&i| lanes[i].regs[instr.a as usize]);
        // A lane waits only at a reduction, and at least one waits.
        let Some(value) = operands.map(Some).reduce(|x, y| fold(instr.op, x?, y?)).flatten() else {
            return Outcome {
                status: p::STATUS_FAULT_BAD_INSTRUCTION,
                results: [pc, leader as u32, instr.op, 0],
            };
        };
        for &i in &waiting {
            let lane = &mut lanes[i];
            lane.regs[instr.d as usize] = value;
            lane.pc += 1;
            lane.state = LaneState::Running;
        }
    }
}

/// Combines two reduction operands, `x` from lower lanes, `y` from higher ones. For f32
/// min/max NaN operands are ignored and ties keep `x` (so the lowest lane's value wins,
/// whatever the order of combination). `op` is a reduction opcode (`OP_RED_*`); any other
/// is refused with [`VmError::NotAReduction`].
pub fn combine(op: u32, x: u32, y: u32) -> Result<u32, VmError> {
    fold(op, x, y).ok_or(VmError::NotAReduction { op })
}

/// [`combine`], `None` for an opcode that is not a reduction.
fn fold(op: u32, x: u32, y: u32) -> Option<u32> {
    let (fx, fy) = (f32::from_bits(x), f32::from_bits(y));
    Some(match op {
        p::OP_RED_ADD => x.wrapping_add(y),
        p::OP_RED_MIN => x.min(y),
        p::OP_RED_MAX => x.max(y),
        p::OP_RED_FMIN | p::OP_RED_FMAX if fx.is_nan() => y,
        p::OP_RED_FMIN | p::OP_RED_FMAX if fy.is_nan() => x,
        p::OP_RED_FMIN if fy < fx => y,
        p::OP_RED_FMAX if fy > fx => y,
        p::OP_RED_FMIN | p::OP_RED_FMAX => x,
        _ => return None,
    })
}

fn element(buffers: &[Vec<u8>], buffer: u32, index: u32, size: u64) -> Result<usize, u32> {
    let len = buffers.get(buffer as usize).map_or(0, |b| b.len() as u64);
    let offset = u64::from(index) * size;
    if offset + size <= len {
        Ok(offset as usize)
    } else {
        Err(index)
    }
}

/// The scalar ops that also have a four-register form (`isa::X4_OPS`).
fn lanewise(op: u32, a: u32, b: u32) -> u32 {
    match op {
        p::OP_ADD => a.wrapping_add(b),
        p::OP_SUB => a.wrapping_sub(b),
        p::OP_MUL => a.wrapping_mul(b),
        p::OP_AND => a & b,
        p::OP_OR => a | b,
        p::OP_XOR => a ^ b,
        p::OP_FADD => (f(a) + f(b)).to_bits(),
        p::OP_FSUB => (f(a) - f(b)).to_bits(),
        p::OP_FMUL => (f(a) * f(b)).to_bits(),
        _ => unreachable!("opcode {op} has no four-register form"),
    }
}

fn f(x: u32) -> f32 {
    f32::from_bits(x)
}

/// Minimum with NaN ignored (the other operand wins); f32 bits.
pub fn fmin(x: u32, y: u32) -> u32 {
    if f(x).is_nan() || f(y) < f(x) {
        y
    } else {
        x
    }
}

/// Maximum with NaN ignored (the other operand wins); f32 bits.
pub fn fmax(x: u32, y: u32) -> u32 {
    if f(x).is_nan() || f(y) > f(x) {
        y
    } else {
        x
    }
}

/// The byte-at-a-time table of the reflected CRC-32 polynomial `VM_CRC32_POLY`.
const CRC32_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ p::VM_CRC32_POLY
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// `crc32.b`: the CRC `crc` advanced by the low byte of `byte` (no inversion).
pub fn crc32_byte(crc: u32, byte: u32) -> u32 {
    CRC32_TABLE[((crc ^ byte) & 0xff) as usize] ^ (crc >> 8)
}

/// `crc32.mul`: `a * b` modulo the CRC polynomial, both reflected (bit 31 is x^0), as
/// zlib's `multmodp`.
pub fn crc32_mul(a: u32, mut b: u32) -> u32 {
    let mut product = 0;
    for bit in (0..32).rev() {
        if a & (1 << bit) != 0 {
            product ^= b;
        }
        b = if b & 1 != 0 {
            (b >> 1) ^ p::VM_CRC32_POLY
        } else {
            b >> 1
        };
    }
    product
}

/// f32 to u32: truncating; NaN and negatives 0; too large u32::MAX.
pub fn f2u(x: u32) -> u32 {
    let v = f(x);
    if v.is_nan() || v <= 0.0 {
        0
    } else if v >= 4_294_967_296.0 {
        u32::MAX
    } else {
        v as u32
    }
}

/// f32 to i32: truncating, saturating; NaN 0.
pub fn f2i(x: u32) -> u32 {
    let v = f(x);
    if v.is_nan() {
        0
    } else {
        (v as i32) as u32 // Rust's `as` saturates
    }
}

fn step_until_sync(
    instrs: &[super::Instr],
    lane: &mut Lane,
    lane_no: u32,
    launch: &Launch,
    buffers: &mut [Vec<u8>],
    results: &mut [u32; 4],
) -> Result<(), Fault> {
    loop {
        let pc = lane.pc;
        let i = instrs[pc as usize];
        if lane.fuel == 0 {
            lane.state = LaneState::Halted;
            return Err((p::STATUS_FAULT_FUEL, pc, 0));
        }
        lane.fuel -= 1;
        if is_reduction(i.op) {
            lane.state = LaneState::AtReduction;
            return Ok(());
        }
        let r = &mut lane.regs;
        let (a, b) = (r[i.a as usize], r[i.b as usize]);
        let fault = |status: u32, detail: u32| (status, pc, detail);
        let mut next = pc + 1;
        let mut set = |value: u32| r[i.d as usize] = value;
        match i.op {
            p::OP_NOP => {}
            p::OP_HALT => {
                lane.state = LaneState::Halted;
                return Ok(());
            }
            p::OP_JMP => next = i.imm,
            p::OP_BRZ => {
                if a == 0 {
                    next = i.imm
                }
            }
            p::OP_BRNZ => {
                if a != 0 {
                    next = i.imm
                }
            }
            p::OP_LOOP => {
                let count = lane.regs[i.d as usize].wrapping_add(a);
                lane.regs[i.d as usize] = count;
                if count < b {
                    next = i.imm
                }
            }
            p::OP_MOVI => set(i.imm),
            p::OP_MOV => set(a),
            p::OP_SEL => {
                let cond = lane.regs[i.imm as usize];
                lane.regs[i.d as usize] = if cond != 0 { a } else { b };
            }
            p::OP_ADD
            | p::OP_SUB
            | p::OP_MUL
            | p::OP_AND
            | p::OP_OR
            | p::OP_XOR
            | p::OP_FADD
            | p::OP_FSUB
            | p::OP_FMUL => set(lanewise(i.op, a, b)),
            p::OP_ADD_X4..=p::OP_FMUL_X4 => {
                let scalar = x4_scalar(i.op).expect("an x4 op");
                let (d, a, b) = (usize::from(i.d), usize::from(i.a), usize::from(i.b));
                let values: [u32; 4] = std::array::from_fn(|k| lanewise(scalar, r[a + k], r[b + k]));
                r[d..d + 4].copy_from_slice(&values);
            }
            p::OP_DIVU | p::OP_DIVS | p::OP_REMU | p::OP_REMS if b == 0 => {
                lane.state = LaneState::Halted;
                return Err(fault(p::STATUS_FAULT_DIVIDE_BY_ZERO, 0));
            }
            p::OP_DIVU => set(a / b),
            p::OP_DIVS => set((a as i32).wrapping_div(b as i32) as u32),
            p::OP_REMU => set(a % b),
            p::OP_REMS => set((a as i32).wrapping_rem(b as i32) as u32),
            p::OP_SHL => set(a << (b & 31)),
            p::OP_SHRU => set(a >> (b & 31)),
            p::OP_SHRS => set(((a as i32) >> (b & 31)) as u32),
            p::OP_MINU => set(a.min(b)),
            p::OP_MAXU => set(a.max(b)),
            p::OP_MINS => set((a as i32).min(b as i32) as u32),
            p::OP_MAXS => set((a as i32).max(b as i32) as u32),
            p::OP_ADDI => set(a.wrapping_add(i.imm)),
            p::OP_NOT => set(!a),
            p::OP_EQ => set(u32::from(a == b)),
            p::OP_NE => set(u32::from(a != b)),
            p::OP_LTU => set(u32::from(a < b)),
            p::OP_LTS => set(u32::from((a as i32) < (b as i32))),
            p::OP_LEU => set(u32::from(a <= b)),
            p::OP_LES => set(u32::from((a as i32) <= (b as i32))),
            p::OP_FDIV => set((f(a) / f(b)).to_bits()),
            p::OP_FMIN => set(fmin(a, b)),
            p::OP_FMAX => set(fmax(a, b)),
            p::OP_FSQRT => set(f(a).sqrt().to_bits()),
            p::OP_FLT => set(u32::from(f(a) < f(b))),
            p::OP_FLE => set(u32::from(f(a) <= f(b))),
            p::OP_FEQ => set(u32::from(f(a) == f(b))),
            p::OP_U2F => set((a as f32).to_bits()),
            p::OP_I2F => set((a as i32 as f32).to_bits()),
            p::OP_F2U => set(f2u(a)),
            p::OP_F2I => set(f2i(a)),
            p::OP_CRC32B => set(crc32_byte(a, b)),
            p::OP_CRC32W => set((0..4).fold(a, |crc, k| crc32_byte(crc, b >> (8 * k)))),
            p::OP_CRC32MUL => set(crc32_mul(a, b)),
            p::OP_LD32 | p::OP_LD8 | p::OP_ST32 | p::OP_ST8 | p::OP_ATOMIC_ADD..=p::OP_ATOMIC_CAS => {
                let size = if matches!(i.op, p::OP_LD8 | p::OP_ST8) { 1 } else { 4 };
                let at = match element(buffers, i.imm, a, size) {
                    Ok(at) => at,
                    Err(index) => {
                        lane.state = LaneState::Halted;
                        return Err(fault(p::STATUS_FAULT_OUT_OF_RANGE, index));
                    }
                };
                let buf = &mut buffers[i.imm as usize];
                let old = if size == 1 {
                    u32::from(buf[at])
                } else {
                    u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
                };
                let new = match i.op {
                    p::OP_ST8 | p::OP_ST32 | p::OP_ATOMIC_XCHG => Some(b),
                    p::OP_ATOMIC_ADD => Some(old.wrapping_add(b)),
                    p::OP_ATOMIC_MIN => Some(old.min(b)),
                    p::OP_ATOMIC_MAX => Some(old.max(b)),
                    p::OP_ATOMIC_AND => Some(old & b),
                    p::OP_ATOMIC_OR => Some(old | b),
                    p::OP_ATOMIC_XOR => Some(old ^ b),
                    p::OP_ATOMIC_CAS => (old == r[i.d as usize]).then_some(b),
                    _ => None,
                };
                if let Some(new) = new {
                    if size == 1 {
                        buf[at] = new as u8;
                    } else {
                        buf[at..at + 4].copy_from_slice(&new.to_le_bytes());
                    }
                }
                if !matches!(i.op, p::OP_ST8 | p::OP_ST32) {
                    r[i.d as usize] = old;
                }
            }
            p::OP_LD32X4 | p::OP_ST32X4 | p::OP_ADD_X4M..=p::OP_FMUL_X4M => {
                let len = buffers.get(i.imm as usize).map_or(0, |b| b.len() as u64);
                if u64::from(a) * 4 + 16 > len {
                    lane.state = LaneState::Halted;
                    return Err(fault(p::STATUS_FAULT_OUT_OF_RANGE, a));
                }
                let buf = &mut buffers[i.imm as usize];
                let at = |k: usize| a as usize * 4 + 4 * k;
                let (d, b) = (usize::from(i.d), usize::from(i.b));
                if i.op == p::OP_ST32X4 {
                    for k in 0..4 {
                        buf[at(k)..at(k) + 4].copy_from_slice(&r[b + k].to_le_bytes());
                    }
                } else {
                    let word =
                        |k: usize| u32::from_le_bytes([buf[at(k)], buf[at(k) + 1], buf[at(k) + 2], buf[at(k) + 3]]);
                    // ld32x4 is the memory form that takes the element as it is.
                    let values: [u32; 4] = match x4_scalar(i.op) {
                        Some(scalar) => std::array::from_fn(|k| lanewise(scalar, word(k), r[b + k])),
                        None => std::array::from_fn(word),
                    };
                    r[d..d + 4].copy_from_slice(&values);
                }
            }
            p::OP_LANE => set(lane_no),
            p::OP_LANES => set(launch.lanes),
            p::OP_GRID => set(launch.grid),
            p::OP_TILE_BEGIN => set(launch.tile_begin),
            p::OP_ARG => set(launch.args[i.imm as usize]),
            p::OP_BUFLEN => set(buffers.get(i.imm as usize).map_or(0, |b| b.len() as u32)),
            p::OP_RESULT => {
                if lane_no == 0 {
                    results[i.imm as usize] = a;
                }
            }
            op => {
                lane.state = LaneState::Halted;
                return Err(fault(p::STATUS_FAULT_BAD_INSTRUCTION, op));
            }
        }
        lane.pc = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::{verify, ProgramBuilder};

    fn launch(lanes: u32) -> Launch {
        Launch {
            lanes,
            grid: 100,
            tile_begin: 0,
            args: [7, 0, 0, 0],
            fuel: 10_000,
        }
    }

    /// sum of buffer 0's u32 elements 0..grid, strided over lanes, then reduced.
    fn sum_program() -> VerifiedProgram {
        let mut b = ProgramBuilder::new();
        let (top, done) = (b.label(), b.label());
        b.op2(p::OP_LANE, 1, 0)
            .op2(p::OP_GRID, 2, 0)
            .op2(p::OP_LANES, 3, 0)
            .movi(4, 0);
        b.bind(top).op3(p::OP_LTU, 5, 1, 2).brz(5, done);
        b.emit(p::OP_LD32, 6, 1, 0, 0)
            .op3(p::OP_ADD, 4, 4, 6)
            .op3(p::OP_ADD, 1, 1, 3)
            .jmp(top);
        b.bind(done)
            .op2(p::OP_RED_ADD, 7, 4)
            .emit(p::OP_RESULT, 0, 7, 0, 0)
            .halt();
        verify(&b.build().unwrap(), 1).unwrap()
    }

    #[test]
    fn a_strided_loop_and_a_reduction_sum_a_buffer() {
        let data: Vec<u8> = (0..100u32).flat_map(|x| (x * 3).to_le_bytes()).collect();
        for lanes in [1, 8, 64] {
            let out = run(&sum_program(), &launch(lanes), &mut [data.clone()]);
            assert_eq!(
                out,
                Outcome {
                    status: p::STATUS_OK,
                    results: [3 * 4950, 0, 0, 0]
                },
                "{lanes} lanes"
            );
        }
    }

    #[test]
    fn faults_name_the_instruction_and_lane() {
        let out = run(&sum_program(), &launch(8), &mut [vec![0u8; 40]]);
        // Grid 100 but only 10 elements: lanes 2..7 fault at elements 10..15 and lane 0 at
        // 16 (0, 8, 16); the lowest faulting lane is reported (instruction 6).
        assert_eq!(
            out,
            Outcome {
                status: p::STATUS_FAULT_OUT_OF_RANGE,
                results: [6, 0, 16, 0]
            }
        );
        let fuel = Launch { fuel: 20, ..launch(8) };
        assert_eq!(
            run(&sum_program(), &fuel, &mut [vec![0u8; 400]]).status,
            p::STATUS_FAULT_FUEL
        );
        let mut b = ProgramBuilder::new();
        b.movi(1, 5).op3(p::OP_DIVU, 2, 1, 0).halt();
        let div = verify(&b.build().unwrap(), 0).unwrap();
        assert_eq!(run(&div, &launch(4), &mut []).results, [1, 0, 0, 0]);
    }

    #[test]
    fn lanes_at_different_reductions_fault_instead_of_hanging() {
        let mut b = ProgramBuilder::new();
        let odd = b.label();
        b.op2(p::OP_LANE, 1, 0).movi(2, 1).op3(p::OP_AND, 3, 1, 2).brnz(3, odd);
        b.op2(p::OP_RED_ADD, 4, 1).halt();
        b.bind(odd).op2(p::OP_RED_MAX, 4, 1).halt();
        let prog = verify(&b.build().unwrap(), 0).unwrap();
        assert_eq!(run(&prog, &launch(4), &mut []).status, p::STATUS_FAULT_DIVERGED);
    }

    #[test]
    fn combine_refuses_an_opcode_that_is_not_a_reduction() {
        assert_eq!(combine(p::OP_RED_ADD, u32::MAX, 2), Ok(1));
        for op in [p::OP_ADD, p::OP_HALT, p::OP_COUNT, u32::MAX] {
            assert_eq!(combine(op, 1, 2), Err(VmError::NotAReduction { op }));
        }
    }

    #[test]
    fn float_reductions_ignore_nan_and_keep_the_lowest_lane_on_ties() {
        let nan = f32::NAN.to_bits();
        assert_eq!(combine(p::OP_RED_FMIN, nan, 1.0f32.to_bits()), Ok(1.0f32.to_bits()));
        assert_eq!(
            combine(p::OP_RED_FMIN, (-0.0f32).to_bits(), 0.0f32.to_bits()),
            Ok((-0.0f32).to_bits())
        );
        assert_eq!(
            combine(p::OP_RED_FMAX, 0.0f32.to_bits(), (-0.0f32).to_bits()),
            Ok(0.0f32.to_bits())
        );
        assert_eq!(f2u((-3.5f32).to_bits()), 0);
        assert_eq!(f2u(1e20f32.to_bits()), u32::MAX);
        assert_eq!(f2i((-1e20f32).to_bits()), i32::MIN as u32);
    }
}
