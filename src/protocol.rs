// The single source of truth for everything the host and the megakernel must agree on.
//
// This file is `include!`d twice: by the crate (`src/ring/layout.rs`), where the macros
// expand to Rust constants and `#[repr(C)]` structs, and by `build.rs`, where the same
// macros expand to the GLSL header `protocol.glsl` that every shader includes. Edit only
// here; never hand-write a constant or a field on the GLSL side.
//
// Field types are `u32` and `u64` only, ordered so that `#[repr(C)]` and GLSL `std430`
// agree without padding (the crate derives `bytemuck::Pod`, which rejects padding).

shared_constants! {
    /// Control-block magic ("MGRG").
    MAGIC = 0x4D47_5247;
    /// Protocol version; bump on any layout or semantic change.
    PROTOCOL_VERSION = 4;
    /// Most lanes per workgroup of the megakernel (its shared arrays are this long). The
    /// lanes a runtime uses (a power of two up to this) are a specialization constant:
    /// 64 on GPUs, 8 on lavapipe, where one 8-lane SIMD chunk needs no coroutine switch
    /// at a barrier (64 lanes made one idle pass take about 9.6 us there).
    MAX_LANES = 64;
    /// log2(MAX_LANES): most iterations of the workgroup reduction loop.
    MAX_LANES_LOG2 = 6;
    /// Specialization-constant id of the workgroup size (`local_size_x_id`).
    LANES_CONSTANT_ID = 0;
    /// Specialization-constant id of `LANES`, the same value for use in code: shaderc's
    /// optimiser folds `gl_WorkGroupSize.x` to its default (1) before specialization.
    LANES_VALUE_CONSTANT_ID = 1;
    /// Loop iterations an epoch keeps in reserve for its own exit path.
    EPOCH_RESERVE = 64;
    /// Most consecutive published jobs one workgroup claims with a single CAS.
    CLAIM_BATCH = 8;
    /// A claim takes a second or later job only while the claim's total cost (loop
    /// iterations) stays within this: heavy jobs (tiles of a large grid) are claimed one
    /// at a time, so idle workgroups take the next ones in parallel.
    CLAIM_BATCH_COST = 4096;
    /// Entries of the board's open list (64-bit words: ring index + 1 of a spread job, 0
    /// for a free entry), where idle workgroups look for tiles before claiming from the
    /// ring. A spread job is claimed only with an entry reserved for it, so at most this
    /// many are open at once; the entry is freed when its completion is posted.
    BOARD_OPEN = 16;
    /// Claims a workgroup tries per pass: a claim that loses the race for the ring's head
    /// retries at once from the head its CAS saw (glsl/ring.glsl, `ring_claim`).
    CLAIM_ATTEMPTS = 3;
    /// Loop iterations charged for one pass of the megakernel's main loop. lavapipe
    /// counted 8 per idle pass (its silent cut came after 8,194 passes); 10 keeps a margin.
    /// See docs/protocol.md, "Epochs".
    ITERATIONS_PER_PASS = 10;
    /// Loop iterations charged per iteration of a job's strided element loop (lavapipe
    /// counted about 1); 2 keeps a margin.
    ITERATIONS_PER_STEP = 2;
    /// Loop iterations charged per claimed job beyond the job's own cost (claim-loop step,
    /// job-loop step, completion). lavapipe counted about 5.7; 8 keeps a margin.
    ITERATIONS_PER_JOB = 8;
    /// Every workgroup bumps the heartbeat when it enters the loop and whenever its count
    /// of loop iterations crosses a multiple of 2^HEARTBEAT_LOG2.
    HEARTBEAT_LOG2 = 14;

    /// Job kind: do nothing, complete with zero results.
    JOB_NOP = 0;
    /// Job kind: complete with `arg0..arg3` as results (tests the layout both ways).
    JOB_ECHO = 1;
    /// Job kind: `buf0[0..len] = arg0` (u32 elements).
    JOB_FILL = 2;
    /// Job kind: `buf1[0..len] = buf0[0..len]` (u32 elements).
    JOB_COPY = 3;
    /// Job kind: wrapping 64-bit sum of `buf0[0..len]` (u32 elements) into result0 (low), result1 (high).
    JOB_SUM_U32 = 4;
    /// Job kind: run a verified bytecode program (`vm`): buf0 = program, buf1 = buffer
    /// table, len = grid (elements), arg0..arg3 = arguments, fuel = instructions per lane.
    JOB_VM = 5;
    /// Number of job kinds; kinds at or above this are rejected by the kernel.
    JOB_KIND_COUNT = 6;

    /// Completion status: the job ran to completion.
    STATUS_OK = 0;
    /// Completion status: the host cancelled the job before any workgroup claimed it.
    STATUS_CANCELLED = 1;
    /// Completion status: the kernel did not recognise the job kind.
    STATUS_BAD_KIND = 2;
    /// Completion status (posted by the host): a workgroup claimed the job, then the
    /// kernel's loop ended before it completed (a driver cut it: epoch budget too high).
    STATUS_LOST = 3;
    /// VM fault: a lane ran out of fuel (instruction budget). result0 = instruction index,
    /// result1 = lane, for every fault below too.
    STATUS_FAULT_FUEL = 16;
    /// VM fault: a load, store or atomic outside its buffer. result2 = the element index.
    STATUS_FAULT_OUT_OF_RANGE = 17;
    /// VM fault: integer division or remainder by zero.
    STATUS_FAULT_DIVIDE_BY_ZERO = 18;
    /// VM fault: an instruction the verifier should have refused (corrupt program).
    STATUS_FAULT_BAD_INSTRUCTION = 19;
    /// VM fault: lanes that had not halted reached different reductions (or one lane a
    /// reduction while another halted is fine; different reductions are not).
    STATUS_FAULT_DIVERGED = 20;
    /// Completion status of a spread job (`SqEntry::tiles` > 1) one of whose tiles faulted:
    /// result0 = the lowest faulted tile. Each tile's own status and results are in its
    /// `TileResult`.
    STATUS_TILE_FAULT = 21;

    /// Bytecode magic ("MRVM").
    VM_MAGIC = 0x4D56_524D;
    /// Bytecode version.
    VM_VERSION = 1;
    /// Words in a program header: magic, version, instruction count, reserved.
    VM_HEADER_WORDS = 4;
    /// Words per instruction: opcode | dst << 8 | a << 16 | b << 24, then a 32-bit immediate.
    VM_INSTRUCTION_WORDS = 2;
    /// Registers per lane (r0..r31), 32 bits each.
    VM_REGISTERS = 32;
    /// Buffers in a job's buffer table.
    VM_MAX_BUFFERS = 8;
    /// Argument words of a job.
    VM_MAX_ARGS = 4;
    /// Result words of a job.
    VM_MAX_RESULTS = 4;
    /// Most instructions in a program.
    VM_MAX_INSTRUCTIONS = 65_536;
    /// Loop iterations charged per phase of a VM job (the phase loop and its barriers).
    VM_ITERATIONS_PER_PHASE = 16;
    /// Instructions of a program the interpreter copies into shared memory at the start of
    /// each job (the rest are fetched from the program buffer). With the buffer table,
    /// also copied, this makes every job read its program and table from memory once, and
    /// through coherent loads: a new program or table in memory that an earlier job of the
    /// same launch read (freed, reused) is never served from a stale SM cache line.
    VM_SHARED_PROGRAM = 256;
    /// The reflected CRC-32 polynomial of `crc32.b` / `crc32.w` (IEEE 802.3, zlib's).
    VM_CRC32_POLY = 0xEDB8_8320;
    /// Specialization-constant id of the VM's sub-lane groups per invocation: each
    /// invocation interprets 4 x groups lanes in lock step (uvec4 registers), so one
    /// instruction fetch and dispatch serves them all (docs/bytecode.md, "Lanes").
    VM_GROUPS_CONSTANT_ID = 2;
    /// Specialization-constant id of the converged dispatcher switch (1: on, 0: off;
    /// `RuntimeConfig::vm_converged`).
    VM_CONVERGED_CONSTANT_ID = 3;
    /// Most sub-lane groups (so at most 4 x VM_MAX_GROUPS lanes per invocation).
    VM_MAX_GROUPS = 2;
    /// Entries of the table of `crc32.b` / `crc32.w`, which each workgroup builds in shared
    /// memory at the start of a launch: ceil(VM_CRC_TABLE / lanes) loop iterations of
    /// ITERATIONS_PER_STEP per invocation (`Job::launch_cost`).
    VM_CRC_TABLE = 256;

    // Opcodes. Operands: d = dst register, a, b = source registers, imm = 32-bit immediate.
    /// Do nothing.
    OP_NOP = 0;
    /// Stop this lane.
    OP_HALT = 1;
    /// pc = imm.
    OP_JMP = 2;
    /// if r[a] == 0: pc = imm.
    OP_BRZ = 3;
    /// if r[a] != 0: pc = imm.
    OP_BRNZ = 4;
    /// r[d] = imm.
    OP_MOVI = 5;
    /// r[d] = r[a].
    OP_MOV = 6;
    /// r[d] = r[imm] != 0 ? r[a] : r[b] (imm names the condition register).
    OP_SEL = 7;
    /// r[d] = r[a] + r[b] (wrapping).
    OP_ADD = 8;
    /// r[d] = r[a] - r[b] (wrapping).
    OP_SUB = 9;
    /// r[d] = r[a] * r[b] (wrapping, low 32 bits).
    OP_MUL = 10;
    /// r[d] = r[a] / r[b], unsigned; faults on zero.
    OP_DIVU = 11;
    /// r[d] = r[a] / r[b], signed, truncating (i32::MIN / -1 = i32::MIN); faults on zero.
    OP_DIVS = 12;
    /// r[d] = r[a] % r[b], unsigned; faults on zero.
    OP_REMU = 13;
    /// r[d] = r[a] % r[b], signed, sign of the dividend (i32::MIN % -1 = 0); faults on zero.
    OP_REMS = 14;
    /// r[d] = r[a] & r[b].
    OP_AND = 15;
    /// r[d] = r[a] | r[b].
    OP_OR = 16;
    /// r[d] = r[a] ^ r[b].
    OP_XOR = 17;
    /// r[d] = r[a] << (r[b] & 31).
    OP_SHL = 18;
    /// r[d] = r[a] >> (r[b] & 31), logical.
    OP_SHRU = 19;
    /// r[d] = r[a] >> (r[b] & 31), arithmetic.
    OP_SHRS = 20;
    /// r[d] = min(r[a], r[b]), unsigned.
    OP_MINU = 21;
    /// r[d] = max(r[a], r[b]), unsigned.
    OP_MAXU = 22;
    /// r[d] = min(r[a], r[b]), signed.
    OP_MINS = 23;
    /// r[d] = max(r[a], r[b]), signed.
    OP_MAXS = 24;
    /// r[d] = r[a] + imm (wrapping).
    OP_ADDI = 25;
    /// r[d] = !r[a] (bitwise).
    OP_NOT = 26;
    /// r[d] = r[a] == r[b] ? 1 : 0.
    OP_EQ = 27;
    /// r[d] = r[a] != r[b].
    OP_NE = 28;
    /// r[d] = r[a] < r[b], unsigned.
    OP_LTU = 29;
    /// r[d] = r[a] < r[b], signed.
    OP_LTS = 30;
    /// r[d] = r[a] <= r[b], unsigned.
    OP_LEU = 31;
    /// r[d] = r[a] <= r[b], signed.
    OP_LES = 32;
    /// r[d] = r[a] + r[b] (f32, exact IEEE rounding).
    OP_FADD = 33;
    /// r[d] = r[a] - r[b] (f32, exact).
    OP_FSUB = 34;
    /// r[d] = r[a] * r[b] (f32, exact).
    OP_FMUL = 35;
    /// r[d] = r[a] / r[b] (f32; devices may differ by up to 3 ulp, see docs/bytecode.md).
    OP_FDIV = 36;
    /// r[d] = min(r[a], r[b]) (f32; a NaN operand yields the other operand).
    OP_FMIN = 37;
    /// r[d] = max(r[a], r[b]) (f32; a NaN operand yields the other operand).
    OP_FMAX = 38;
    /// r[d] = sqrt(r[a]) (f32; devices may differ by up to 3 ulp).
    OP_FSQRT = 39;
    /// r[d] = r[a] < r[b] (f32, false with NaN).
    OP_FLT = 40;
    /// r[d] = r[a] <= r[b] (f32, false with NaN).
    OP_FLE = 41;
    /// r[d] = r[a] == r[b] (f32, false with NaN).
    OP_FEQ = 42;
    /// r[d] = f32(r[a] as u32) (round to nearest even).
    OP_U2F = 43;
    /// r[d] = f32(r[a] as i32) (round to nearest even).
    OP_I2F = 44;
    /// r[d] = u32(r[a] as f32), truncating; NaN and negatives give 0, too large gives u32::MAX.
    OP_F2U = 45;
    /// r[d] = i32(r[a] as f32), truncating, saturating; NaN gives 0.
    OP_F2I = 46;
    /// r[d] = buffer imm, u32 element r[a]; faults outside the buffer.
    OP_LD32 = 47;
    /// r[d] = buffer imm, byte r[a] (zero-extended); faults outside the buffer.
    OP_LD8 = 48;
    /// buffer imm, u32 element r[a] = r[b]; faults outside the buffer.
    OP_ST32 = 49;
    /// buffer imm, byte r[a] = r[b] & 0xff; faults outside the buffer.
    OP_ST8 = 50;
    /// r[d] = atomic add of r[b] to buffer imm, u32 element r[a]; returns the old value.
    OP_ATOMIC_ADD = 51;
    /// Atomic unsigned min; returns the old value.
    OP_ATOMIC_MIN = 52;
    /// Atomic unsigned max; returns the old value.
    OP_ATOMIC_MAX = 53;
    /// Atomic and; returns the old value.
    OP_ATOMIC_AND = 54;
    /// Atomic or; returns the old value.
    OP_ATOMIC_OR = 55;
    /// Atomic xor; returns the old value.
    OP_ATOMIC_XOR = 56;
    /// Atomic exchange with r[b]; returns the old value.
    OP_ATOMIC_XCHG = 57;
    /// Atomic compare-and-swap: if element == r[d] then element = r[b]; r[d] = old value.
    OP_ATOMIC_CAS = 58;
    /// r[d] = this lane's index in its workgroup.
    OP_LANE = 59;
    /// r[d] = lanes per workgroup.
    OP_LANES = 60;
    /// r[d] = the job's grid size (elements).
    OP_GRID = 61;
    /// r[d] = argument word imm.
    OP_ARG = 62;
    /// r[d] = length of buffer imm in bytes.
    OP_BUFLEN = 63;
    /// r[d] = wrapping sum of r[a] over the workgroup's lanes (a reduction).
    OP_RED_ADD = 64;
    /// r[d] = unsigned minimum of r[a] over the lanes (a reduction).
    OP_RED_MIN = 65;
    /// r[d] = unsigned maximum of r[a] over the lanes (a reduction).
    OP_RED_MAX = 66;
    /// r[d] = f32 minimum of r[a] over the lanes, NaN ignored (a reduction).
    OP_RED_FMIN = 67;
    /// r[d] = f32 maximum of r[a] over the lanes, NaN ignored (a reduction).
    OP_RED_FMAX = 68;
    /// Result word imm of the job = r[a] (lane 0's last write counts).
    OP_RESULT = 69;
    /// r[d] = the first element of this job's tile (0 for an untiled job); `grid` is one
    /// past its last element.
    OP_TILE_BEGIN = 70;
    /// r[d] = r[d] + r[a]; then branch to imm while r[d] < r[b] (unsigned): a counted
    /// loop's step, test and jump in one instruction.
    OP_LOOP = 71;
    /// r[d] = CRC-32 (IEEE, reflected polynomial VM_CRC32_POLY) of r[a] advanced by the low
    /// byte of r[b], with no inversion (like ARMv8's `CRC32B`).
    OP_CRC32B = 72;
    /// r[d] = CRC-32 of r[a] advanced by the four bytes of r[b], lowest first (like ARMv8's
    /// `CRC32W`).
    OP_CRC32W = 73;
    /// r[d] = r[a] * r[b] modulo VM_CRC32_POLY, both reflected (bit 31 is x^0): zlib's
    /// `multmodp`, which shifts a CRC past bytes that follow it (`crc32_combine`).
    OP_CRC32MUL = 74;
    /// r[d + k] = buffer imm, u32 element r[a] + k, for k = 0..3 (d <= 28): four consecutive
    /// elements with one instruction. Faults unless all four lie inside the buffer.
    OP_LD32X4 = 75;
    /// buffer imm, u32 element r[a] + k = r[b + k], for k = 0..3 (b <= 28). Faults, storing
    /// nothing, unless all four lie inside the buffer.
    OP_ST32X4 = 76;
    /// Lane-wise ops on groups of four registers: r[d + k] = r[a + k] op r[b + k] for
    /// k = 0..3 (d, a, b <= 28), every operand read before any result is written; op as in
    /// the scalar opcode of the same name (`add.x4` is `add` four times).
    OP_ADD_X4 = 77;
    /// See OP_ADD_X4: `sub`.
    OP_SUB_X4 = 78;
    /// See OP_ADD_X4: `mul`.
    OP_MUL_X4 = 79;
    /// See OP_ADD_X4: `and`.
    OP_AND_X4 = 80;
    /// See OP_ADD_X4: `or`.
    OP_OR_X4 = 81;
    /// See OP_ADD_X4: `xor`.
    OP_XOR_X4 = 82;
    /// See OP_ADD_X4: `fadd`.
    OP_FADD_X4 = 83;
    /// See OP_ADD_X4: `fsub`.
    OP_FSUB_X4 = 84;
    /// See OP_ADD_X4: `fmul`.
    OP_FMUL_X4 = 85;
    /// Lane-wise ops with one operand group from memory: r[d + k] = (buffer imm, u32 element
    /// r[a] + k) op r[b + k], for k = 0..3 (d, b <= 28), op as in the scalar opcode of the
    /// same name; a load (as OP_LD32X4, faults alike) and an x4 op in one instruction.
    OP_ADD_X4M = 86;
    /// See OP_ADD_X4M: `sub` (element - register).
    OP_SUB_X4M = 87;
    /// See OP_ADD_X4M: `mul`.
    OP_MUL_X4M = 88;
    /// See OP_ADD_X4M: `and`.
    OP_AND_X4M = 89;
    /// See OP_ADD_X4M: `or`.
    OP_OR_X4M = 90;
    /// See OP_ADD_X4M: `xor`.
    OP_XOR_X4M = 91;
    /// See OP_ADD_X4M: `fadd`.
    OP_FADD_X4M = 92;
    /// See OP_ADD_X4M: `fsub` (element - register).
    OP_FSUB_X4M = 93;
    /// See OP_ADD_X4M: `fmul`.
    OP_FMUL_X4M = 94;
    /// Number of opcodes.
    OP_COUNT = 95;

    /// Kernel exit reason: no work for `idle_limit` consecutive polls (parked).
    EXIT_IDLE = 1;
    /// Kernel exit reason: the epoch's loop-iteration budget would be exceeded.
    EXIT_BUDGET = 2;
    /// Kernel exit reason: the host raised the shutdown flag.
    EXIT_SHUTDOWN = 3;
    /// Kernel exit reason: the host asked for a fresh launch (`Runtime::request_relaunch`),
    /// whose start makes host writes since the last launch visible to the device.
    EXIT_YIELD = 4;

    /// `ControlBlock::fault`: no fault. Kernels built without the `fault-injection` feature
    /// never read the word, and the host of such a build never writes it.
    FAULT_NONE = 0;
    /// Fault injection: workgroups stop claiming, taking tiles and beating; they leave
    /// for budget or shutdown (a kernel that stopped answering).
    FAULT_STALL = 1;
    /// Fault injection: as FAULT_STALL, and shutdown is ignored too (a kernel the host
    /// cannot stop: only the budget ends it).
    FAULT_HANG = 2;
    /// Fault injection, one-shot: the next workgroup that is about to run a job or a tile
    /// clears the word and leaves the loop instead, its claim unfinished (what a driver
    /// that cuts the loop does).
    FAULT_DROP = 3;
}

shared_structs! {
    /// Control block: one per runtime, in host-visible coherent memory that the GPU polls.
    struct ControlBlock {
        /// MAGIC, written by the host at creation.
        magic: u32,
        /// PROTOCOL_VERSION, written by the host at creation.
        version: u32,
        /// Host -> GPU: non-zero asks every workgroup to exit after its current job.
        shutdown: u32,
        /// Host -> GPU: number of the current launch (epoch), written before each launch.
        epoch: u32,
        /// Claim counter: index of the next SQ entry to claim. Advanced only by
        /// compare-and-swap, by a workgroup (claim) or by the host while no kernel runs (cancel).
        sq_head: u32,
        /// GPU -> host: bumped by every workgroup when it enters the loop and whenever its
        /// loop-iteration count crosses a multiple of 2^HEARTBEAT_LOG2.
        heartbeat: u32,
        /// GPU -> host: workgroups currently inside the loop.
        resident: u32,
        /// GPU -> host: reason the last workgroup to leave gave (EXIT_*).
        exit_reason: u32,
        /// GPU -> host: jobs completed, all epochs (each workgroup adds its count at exit).
        jobs_done: u32,
        /// GPU -> host: workgroup exits because of idleness.
        idle_exits: u32,
        /// GPU -> host: workgroup exits because of the iteration budget.
        budget_exits: u32,
        /// GPU -> host: workgroup exits because of shutdown.
        shutdown_exits: u32,
        /// GPU -> host: loops that ended without the kernel deciding to leave (a driver
        /// cut the loop short: the epoch budget is set too high for this device).
        unplanned_exits: u32,
        /// GPU -> host: the most loop iterations one invocation counted in an epoch.
        max_iterations: u32,
        /// Host -> GPU: non-zero asks every workgroup to exit after its current claim, so
        /// that the supervisor relaunches (cleared before each launch).
        yield_request: u32,
        /// GPU -> host: workgroup exits because of a yield request.
        yield_exits: u32,
        /// GPU -> host: spread jobs claimed whose completion is not posted yet (their tiles
        /// may outlive an epoch). Reset by the host, while no kernel runs, after a loss.
        spread_open: u32,
        /// GPU -> host: tiles of spread jobs finished, all epochs (progress the supervisor
        /// watches besides `sq_head` and the heartbeat).
        tiles_done: u32,
        /// Host -> GPU, test builds only (feature `fault-injection`): FAULT_*.
        fault: u32,
    }

    /// Submission-queue entry (80 bytes). The host writes every other word first and
    /// `seq = index + 1` last; a workgroup claims entry `index` only after seeing that.
    struct SqEntry {
        /// Device address of buffer 0 (source), or 0.
        buf0: u64,
        /// Device address of buffer 1 (destination), or 0.
        buf1: u64,
        /// Caller's tag, echoed in the completion.
        tag: u64,
        /// Spread jobs: device address of `tiles` TileResult records, one per tile. Zero otherwise.
        tile_out: u64,
        /// Job kind (JOB_*).
        kind: u32,
        /// Element count the job walks.
        len: u32,
        /// Argument word 0.
        arg0: u32,
        /// Argument word 1.
        arg1: u32,
        /// Argument word 2.
        arg2: u32,
        /// Argument word 3.
        arg3: u32,
        /// Loop iterations the job costs one lane, computed by the host (`Job::cost`).
        cost: u32,
        /// VM jobs: instructions each lane may execute (fuel). Zero otherwise.
        fuel: u32,
        /// VM jobs: the first element of the job's tile (`tile.begin`); of its first tile
        /// for a spread job. Zero otherwise.
        tile_begin: u32,
        /// Spread jobs: elements per tile; tile t covers `tile_begin + t * tile` up to
        /// `tile` elements further, and no further than `len`. Zero otherwise.
        tile: u32,
        /// Tiles of a spread job: more than one makes it spread (workgroups share its
        /// tiles through the board); 0 or 1: an ordinary job.
        tiles: u32,
        /// Publication word: `index + 1` once the entry is complete. Written last.
        seq: u32,
    }

    /// Completion-queue entry (32 bytes), at the same ring index as its job.
    /// `seq = index + 1` is written last, after the other words.
    struct CqEntry {
        /// The job's tag.
        tag: u64,
        /// Result word 0.
        result0: u32,
        /// Result word 1.
        result1: u32,
        /// Result word 2.
        result2: u32,
        /// Result word 3.
        result3: u32,
        /// STATUS_* code.
        status: u32,
        /// Publication word: `index + 1` once the completion is complete. Written last.
        seq: u32,
    }

    /// The board's tile counter of one ring slot (32 bytes), for the spread job in that
    /// slot. Lives in the board buffer after the open list (BOARD_OPEN 64-bit words).
    struct TileCounter {
        /// tiles << 32 | next tile to hand out; taken with one atomic add. Set by the
        /// claimer (tile 0 its own) after the words below.
        work: u64,
        /// The job's ring index + 1, 64 bits wide so that no index maps to 0 (none).
        owner: u64,
        /// Tiles finished; the workgroup that finishes the last posts the completion.
        done: u32,
        /// The lowest faulted tile (atomic min), 0xFFFFFFFF for none.
        fault: u32,
        /// The job's cost (loop iterations per tile, `SqEntry::cost`).
        cost: u32,
        /// Reserved, zero.
        reserved: u32,
    }

    /// What one tile of a spread job produced (32 bytes), at `SqEntry::tile_out`. Written by
    /// the tile's workgroup like a completion: every other word, then `seq` last, in one
    /// 32-byte record (a device's writes to host memory may land in any order across
    /// records; within a record the host has seen them land in order, as with `CqEntry`).
    struct TileResult {
        /// STATUS_* code of the tile.
        status: u32,
        /// Result word 0 (for a fault: the faulting instruction).
        result0: u32,
        /// Result word 1 (for a fault: the lane).
        result1: u32,
        /// Result word 2 (for a fault: its detail).
        result2: u32,
        /// Result word 3.
        result3: u32,
        /// Reserved.
        reserved: u32,
        /// Publication word: the spread job's ring index + 1, 64 bits wide (never 0, the
        /// value of a new record, and never an earlier job's), once the record is complete.
        seq: u64,
    }

    /// One entry of a VM job's buffer table (16 bytes): where a buffer is and how long.
    struct VmBuffer {
        /// Device address.
        address: u64,
        /// Length in bytes.
        bytes: u64,
    }

    /// Launch parameters, passed as push constants.
    struct LaunchParams {
        /// Device address of the control block.
        control: u64,
        /// Device address of the submission queue.
        sq: u64,
        /// Device address of the completion queue.
        cq: u64,
        /// Device address of the board: BOARD_OPEN 64-bit open-list words, then a
        /// TileCounter per ring slot.
        board: u64,
        /// Ring entries minus one (entries is a power of two).
        ring_mask: u32,
        /// Loop iterations one invocation may run in this epoch.
        budget: u32,
        /// Consecutive empty polls after which a workgroup parks (exits).
        idle_limit: u32,
        /// Reserved, zero.
        reserved: u32,
    }
}
