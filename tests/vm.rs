//! The GPU interpreter against the CPU reference on the real device: reduction programs (also
//! after some lanes halted, through both ways a phase ends),
//! each fault code, and the kernel serving the next job after a fault.

mod common;

use common::{config, TestRuntime};
use megaring::ring::layout as p;
use megaring::vm::interp::{self, Launch};
use megaring::vm::{verify, ProgramBuilder, VerifiedProgram};
use megaring::{Error, Job, Placement, RuntimeConfig};

/// The interpreter as GPUs run it: with the converged dispatcher, also on lavapipe (where it
/// is off by default), so these tests cover its fault and hand-back paths.
fn converged_config() -> RuntimeConfig {
    RuntimeConfig {
        vm_converged: Some(true),
        ..config()
    }
}

/// Sums buffer 0's u32 elements 0..grid, lanes striding, then a reduction; lane 0 also
/// stores the total at element `arg 0` of buffer 1.
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
    b.bind(done).op2(p::OP_RED_ADD, 7, 4).emit(p::OP_RESULT, 0, 7, 0, 0);
    b.emit(p::OP_ARG, 8, 0, 0, 0).emit(p::OP_LANE, 9, 0, 0, 0);
    let skip = b.label();
    b.brnz(9, skip).emit(p::OP_ST32, 0, 8, 7, 1).bind(skip).halt();
    verify(&b.build().unwrap(), 2).unwrap()
}

#[test]
fn a_reduction_program_gives_what_the_reference_interpreter_gives() {
    let rt = TestRuntime::new(converged_config());
    let n = 1000u32;
    let data: Vec<u32> = (0..n).map(|i| i.wrapping_mul(2_654_435_761)).collect();
    let input = rt.alloc_u32(u64::from(n), Placement::DeviceShared).unwrap();
    let output = rt.alloc_u32(16, Placement::HostCached).unwrap();
    input.write_u32(0, &data).unwrap();
    let program = rt.load_program(sum_program()).unwrap();
    let table = rt.buffer_table(&[&input, &output]).unwrap();
    let done = rt
        .submit(Job::program(&program, &table, n, [5, 0, 0, 0], 1_500).unwrap())
        .unwrap()
        .wait()
        .unwrap();

    let launch = Launch {
        lanes: rt.info().vm_lanes,
        grid: n,
        tile_begin: 0,
        args: [5, 0, 0, 0],
        fuel: 1_500,
    };
    let mut buffers = vec![bytemuck::cast_slice(&data).to_vec(), vec![0u8; 64]];
    let reference = interp::run(&sum_program(), &launch, &mut buffers);
    assert_eq!(reference.status, p::STATUS_OK);
    assert_eq!(done.results, reference.results);
    assert_eq!(done.results[0], data.iter().fold(0u32, |s, &x| s.wrapping_add(x)));
    assert_eq!(
        output.read_u32(0, 16).unwrap(),
        bytemuck::cast_slice::<u8, u32>(&buffers[1])
    );
    rt.finish();
}

/// Lanes from `arg 0` on halt first; the others meet at integer reductions (folded without
/// the scan of lane summaries), then at a float one (folded in lane order by the scan).
const HALF_HALTED_REDUCTIONS: &str = "
        lane r1
        arg r2, 0
        ltu r3, r1, r2
        brnz r3, go
        halt
    go: addi r4, r1, 7
        red.add r5, r4
        red.min r6, r4
        movi r9, 1000
        sub r10, r9, r1
        red.max r7, r10
        red.max r11, r1
        add r11, r11, r7
        u2f r12, r4
        red.fmin r13, r12
        f2u r13, r13
        result 0, r5
        result 1, r6
        result 2, r11
        result 3, r13
        halt
";

#[test]
fn reductions_after_some_lanes_halted_equal_the_reference() {
    let program = verify(&megaring::vm::assemble(HALF_HALTED_REDUCTIONS).unwrap(), 0).unwrap();
    for converged in [false, true] {
        let rt = TestRuntime::new(RuntimeConfig {
            vm_converged: Some(converged),
            ..config()
        });
        let lanes = rt.info().vm_lanes;
        let loaded = rt.load_program(program.clone()).unwrap();
        let table = rt.buffer_table(&[]).unwrap();
        // All lanes, all but one invocation's worth, one lane into an invocation, one lane.
        for taking_part in [lanes, lanes - 4, lanes / 2 + 1, 1] {
            let args = [taking_part, 0, 0, 0];
            let done = rt
                .submit(Job::program(&loaded, &table, lanes, args, 100).unwrap())
                .unwrap()
                .wait()
                .unwrap();
            let launch = Launch {
                lanes,
                grid: lanes,
                tile_begin: 0,
                args,
                fuel: 100,
            };
            let reference = interp::run(&program, &launch, &mut Vec::new());
            assert_eq!(reference.status, p::STATUS_OK);
            let sum = (0..taking_part).map(|l| l + 7).sum::<u32>();
            let want = [sum, 7, taking_part - 1 + 1000, 7];
            assert_eq!(reference.results, want, "reference, {taking_part} lanes taking part");
            assert_eq!(
                done.results, want,
                "device (converged: {converged}), {taking_part} lanes taking part"
            );
        }
        rt.finish();
    }
}

fn expect_fault(
    rt: &TestRuntime,
    program: VerifiedProgram,
    table: &megaring::BufferTable,
    fuel: u32,
) -> megaring::vm::Fault {
    let launch = Launch {
        lanes: rt.info().vm_lanes,
        grid: 64,
        tile_begin: 0,
        args: [0; 4],
        fuel,
    };
    let loaded = rt.load_program(program.clone()).unwrap();
    let err = rt
        .submit(Job::program(&loaded, table, 64, [0; 4], fuel).unwrap().with_tag(9))
        .unwrap()
        .wait();
    let Err(Error::Fault(fault)) = err else {
        panic!("expected a fault, got {err:?}; {:?} {:?}", rt.stats(), rt.info())
    };
    let mut buffers = vec![vec![0u8; 16]];
    let reference = interp::run(&program, &launch, &mut buffers);
    assert_eq!(
        (fault.status, [fault.instruction, fault.lane, fault.detail, 0]),
        (reference.status, reference.results),
        "GPU fault differs from the reference"
    );
    // The kernel keeps serving: the next job completes.
    assert_eq!(
        rt.submit(Job::echo([1, 2, 3, 4])).unwrap().wait().unwrap().results,
        [1, 2, 3, 4]
    );
    fault
}

#[test]
fn every_fault_code_is_reported_and_the_kernel_serves_the_next_job() {
    let rt = TestRuntime::new(converged_config());
    let small = rt.alloc_u32(4, Placement::DeviceShared).unwrap();
    let table = rt.buffer_table(&[&small]).unwrap();

    // Fuel: an endless loop, at the largest fuel one lavapipe epoch allows.
    let mut b = ProgramBuilder::new();
    let top = b.label();
    b.bind(top).addi(1, 1, 1).jmp(top);
    let fault = expect_fault(&rt, verify(&b.build().unwrap(), 1).unwrap(), &table, 1_800);
    assert_eq!(fault.status, p::STATUS_FAULT_FUEL);
    assert!(Error::Fault(fault).to_string().contains("fuel exhausted"));

    // Out of range: lane i reads element i of a 4-element buffer.
    let mut b = ProgramBuilder::new();
    b.op2(p::OP_LANE, 1, 0).emit(p::OP_LD32, 2, 1, 0, 0).halt();
    let fault = expect_fault(&rt, verify(&b.build().unwrap(), 1).unwrap(), &table, 100);
    assert_eq!(
        (fault.status, fault.instruction, fault.lane, fault.detail),
        (p::STATUS_FAULT_OUT_OF_RANGE, 1, 4, 4)
    );

    // Division by zero on lane 3 only.
    let mut b = ProgramBuilder::new();
    b.op2(p::OP_LANE, 1, 0)
        .movi(2, 3)
        .op3(p::OP_SUB, 3, 1, 2)
        .op3(p::OP_DIVU, 4, 1, 3)
        .halt();
    let fault = expect_fault(&rt, verify(&b.build().unwrap(), 1).unwrap(), &table, 100);
    assert_eq!((fault.status, fault.lane), (p::STATUS_FAULT_DIVIDE_BY_ZERO, 3));

    // Divergence: odd lanes reach a different reduction.
    let mut b = ProgramBuilder::new();
    let odd = b.label();
    b.op2(p::OP_LANE, 1, 0).movi(2, 1).op3(p::OP_AND, 3, 1, 2).brnz(3, odd);
    b.op2(p::OP_RED_ADD, 4, 1).halt();
    b.bind(odd).op2(p::OP_RED_MAX, 4, 1).halt();
    let fault = expect_fault(&rt, verify(&b.build().unwrap(), 1).unwrap(), &table, 100);
    assert_eq!(fault.status, p::STATUS_FAULT_DIVERGED);
    rt.finish();
}

#[test]
fn an_assembled_program_runs_as_the_readme_shows() {
    let rt = TestRuntime::new(converged_config());
    let data = rt.alloc_u32(1024, Placement::DeviceShared).unwrap();
    let values: Vec<u32> = (0..1024).map(|i| i * 7 + 1).collect();
    data.write_u32(0, &values).unwrap();
    let program = verify(&megaring::vm::assemble(common::STRIDED_SUM_ASM).unwrap(), 1).unwrap();
    let program = rt.load_program(program).unwrap();
    let table = rt.buffer_table(&[&data]).unwrap();
    let sum = rt
        .submit(Job::program(&program, &table, 1024, [0; 4], 2_000).unwrap())
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(sum.results[0], values.iter().sum::<u32>());
    // Bad source gets the line and column of the mistake.
    let err = megaring::vm::assemble("halt\n  ad r1, r2, r3\n").unwrap_err();
    assert!(err.to_string().starts_with("line 2, column 3"), "{err}");
    rt.finish();
}

/// Runs `source` (buffers: b0 = `input`, b1 = `out_words` zeroed words) on the GPU and on
/// the reference interpreter; asserts equal status, results and b1.
fn same_as_reference(rt: &TestRuntime, source: &str, input: &[u32], out_words: u32, fuel: u32) -> u32 {
    let program = verify(&megaring::vm::assemble(source).unwrap(), 2).unwrap();
    let grid = rt.info().vm_lanes;
    let b0 = rt.alloc_u32(input.len() as u64, Placement::DeviceShared).unwrap();
    b0.write_u32(0, input).unwrap();
    let b1 = rt.alloc_u32(u64::from(out_words), Placement::DeviceShared).unwrap();
    let table = rt.buffer_table(&[&b0, &b1]).unwrap();
    let loaded = rt.load_program(program.clone()).unwrap();
    let got = rt
        .submit(Job::program(&loaded, &table, grid, [0; 4], fuel).unwrap())
        .unwrap()
        .wait();
    let got = match got {
        Ok(done) => (p::STATUS_OK, done.results),
        Err(Error::Fault(f)) => (f.status, [f.instruction, f.lane, f.detail, 0]),
        Err(e) => panic!("{e}"),
    };
    let launch = Launch {
        lanes: grid,
        grid,
        tile_begin: 0,
        args: [0; 4],
        fuel,
    };
    let mut buffers = vec![bytemuck::cast_slice(input).to_vec(), vec![0u8; out_words as usize * 4]];
    let reference = interp::run(&program, &launch, &mut buffers);
    assert_eq!(got, (reference.status, reference.results), "{source}");
    let want: &[u32] = bytemuck::cast_slice(&buffers[1]);
    let differ = b1
        .read_u32(0, u64::from(out_words))
        .unwrap()
        .iter()
        .zip(want)
        .position(|(g, w)| g != w);
    assert_eq!(
        differ, None,
        "first word of b1 that differs from the reference:\n{source}"
    );
    got.0
}

#[test]
fn consecutive_ld32x4_keep_program_order() {
    // Back-to-back ld32x4 in the converged dispatcher: aligned and unaligned, overlapping
    // destinations, a load whose address an earlier one wrote, and an out-of-range lane or
    // fuel exhaustion in the middle of the sequence; every register compared with the
    // reference.
    let rt = TestRuntime::new(converged_config());
    let lanes = rt.info().vm_lanes;
    let input: Vec<u32> = (0..lanes * 4 + 64).map(|i| (i * 7) % 61).collect();
    let body = |middle: &str| {
        format!(
            "
        lane r1
        movi r3, 3
        and r2, r1, r3        ; unaligned addresses
        movi r3, 4
        mul r1, r1, r3        ; aligned ones
        ld32x4 r4, b0[r1]
        ld32x4 r8, b0[r2]
        ld32x4 r6, b0[r4]     ; reads r4, which the first writes
        ld32x4 r12, b0[r9]
        ld32x4 r16, b0[r12]   ; reads r12, written just before
        ld32x4 r20, b0[r1]
{middle}
        ld32x4 r24, b0[r2]
        ld32x4 r28, b0[r1]
        ld32x4 r1, b0[r2]     ; writes r1, which earlier loads read
        ld32x4 r26, b0[r3]    ; overlaps r24..r27, later in program order
{DUMP}"
        )
    };
    let out_words = lanes * 32;
    assert_eq!(
        same_as_reference(&rt, &body(""), &input, out_words, 1_000),
        p::STATUS_OK
    );
    // Lane 5's address is out of range in the middle.
    let bad = format!("{LANE5_FAR}\n        ld32x4 r25, b0[r29]");
    let status = same_as_reference(&rt, &body(&bad), &input, out_words, 1_000);
    assert_eq!(status, p::STATUS_FAULT_OUT_OF_RANGE);
    // Fuel runs out at each of four consecutive loads.
    for fuel in 11..15 {
        let status = same_as_reference(&rt, &body(""), &input, out_words, fuel);
        assert_eq!(status, p::STATUS_FAULT_FUEL, "fuel {fuel}");
    }
    rt.finish();
}

#[test]
fn x4m_ops_equal_the_reference_with_overlapping_groups_and_faults() {
    // Every .x4m op, aligned and unaligned, with destination and register groups that
    // overlap each other; floats from small integers, so every device rounds alike. Every
    // register compared with the reference, also when a lane's address is out of range or
    // fuel runs out in the middle.
    let rt = TestRuntime::new(converged_config());
    let lanes = rt.info().vm_lanes;
    let input: Vec<u32> = (0..lanes * 4 + 64)
        .map(|i| ((i * 7 % 61) as f32 - 20.0).to_bits())
        .collect();
    let body = |middle: &str| {
        format!(
            "
        lane r1
        movi r3, 3
        and r2, r1, r3        ; unaligned addresses
        movi r3, 4
        mul r1, r1, r3        ; aligned ones
        ld32x4 r4, b0[r1]
        ld32x4 r8, b0[r2]
        fadd.x4m r12, b0[r1], r4
        fsub.x4m r16, b0[r2], r8
        fmul.x4m r20, b0[r1], r8
        fsub.x4m r9, b0[r1], r8   ; writes r9..r12 while reading r8..r11
        fmul.x4m r7, b0[r2], r8   ; reads r8..r11 while writing r7..r10
{middle}
        add.x4m r24, b0[r2], r4
        sub.x4m r25, b0[r1], r24
        mul.x4m r26, b0[r2], r26
        xor.x4m r20, b0[r1], r16
        and.x4m r16, b0[r2], r12
        or.x4m r4, b0[r1], r5
{DUMP}"
        )
    };
    let out_words = lanes * 32;
    assert_eq!(
        same_as_reference(&rt, &body(""), &input, out_words, 1_000),
        p::STATUS_OK
    );
    // Lane 5's address is out of range in the middle: the same fault as the reference.
    let bad = format!("{LANE5_FAR}\n        add.x4m r4, b0[r29], r4");
    let status = same_as_reference(&rt, &body(&bad), &input, out_words, 1_000);
    assert_eq!(status, p::STATUS_FAULT_OUT_OF_RANGE);
    // Fuel runs out at each of four consecutive .x4m ops.
    for fuel in 8..12 {
        let status = same_as_reference(&rt, &body(""), &input, out_words, fuel);
        assert_eq!(status, p::STATUS_FAULT_FUEL, "fuel {fuel}");
    }
    // In loops: accumulating, reading and writing the last .x4m's groups, a loop counter in
    // one of its groups.
    let looped = |middle: &str| {
        format!(
            "
        lane r1
        movi r2, 4
        mul r1, r1, r2        ; 4 * lane: aligned
        movi r3, 0
        movi r5, 1
        movi r6, 6
    one: add.x4m r20, b0[r1], r20
        loop r3, r5, r6, one
        movi r3, 0
    two: add.x4m r24, b0[r1], r24
        xor.x4m r8, b0[r1], r24   ; reads the group just written
        loop r3, r5, r6, two
        movi r3, 0
{middle}
    three: fadd.x4m r12, b0[r1], r12
        fmul.x4m r16, b0[r1], r16
        loop r3, r5, r6, three
        movi r14, 0
    four: sub.x4m r8, b0[r1], r12
        loop r14, r5, r6, four   ; writes r14, a source of the .x4m before
{DUMP}"
        )
    };
    assert_eq!(
        same_as_reference(&rt, &looped(""), &input, out_words, 1_000),
        p::STATUS_OK
    );
    let status = same_as_reference(&rt, &looped(&bad), &input, out_words, 1_000);
    assert_eq!(status, p::STATUS_FAULT_OUT_OF_RANGE);
    for fuel in [9, 10, 11, 20, 40, 41, 42] {
        let status = same_as_reference(&rt, &looped(""), &input, out_words, fuel);
        assert_eq!(status, p::STATUS_FAULT_FUEL, "fuel {fuel}");
    }
    rt.finish();
}

/// r29 = 100,000 on lane 5 and 0 elsewhere: an index out of range on one lane.
const LANE5_FAR: &str = "        lane r29
        movi r30, 5
        eq r29, r29, r30
        movi r30, 100000
        mul r29, r29, r30";

/// Stores every lane's 32 registers at b1[32 * lane] (overwrites r0 and r30).
const DUMP: &str = "
        lane r0
        movi r30, 32
        mul r0, r0, r30
        st32x4 b1[r0], r1
        addi r0, r0, 4
        st32x4 b1[r0], r5
        addi r0, r0, 4
        st32x4 b1[r0], r9
        addi r0, r0, 4
        st32x4 b1[r0], r13
        addi r0, r0, 4
        st32x4 b1[r0], r17
        addi r0, r0, 4
        st32x4 b1[r0], r21
        addi r0, r0, 4
        st32x4 b1[r0], r25
        addi r0, r0, 3
        st32x4 b1[r0], r28
        halt
";
