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
    PROTOCOL_VERSION = 1;
    /// Most lanes per workgroup of the megakernel (its shared arrays are this long). The
    /// lanes a runtime uses (a power of two up to this) are a specialization constant:
    /// 64 on GPUs, 8 on lavapipe, where one 8-lane SIMD chunk needs no coroutine switch
    /// at a barrier (64 lanes made one idle pass take about 9.6 us there).
    MAX_LANES = 64;
    /// log2(MAX_LANES): most iterations of the workgroup reduction loop.
    MAX_LANES_LOG2 = 6;
    /// Specialization-constant id of the lane count (`local_size_x_id`).
    LANES_CONSTANT_ID = 0;
    /// Loop iterations an epoch keeps in reserve for its own exit path.
    EPOCH_RESERVE = 64;
    /// Most consecutive published jobs one workgroup claims with a single CAS.
    CLAIM_BATCH = 8;
    /// Loop iterations charged for one pass of the megakernel's main loop. lavapipe
    /// counted 8 per idle pass (its silent cut came after 8,194 passes); 10 keeps a margin.
    /// See docs/protocol.md, "Epochs".
    ITERATIONS_PER_PASS = 10;
    /// Loop iterations charged per iteration of a job's strided element loop with
    /// MAX_LANES lanes; with fewer lanes the host charges MAX_LANES / lanes times as much.
    /// lavapipe counted about 1 per step with 64 lanes and about 8 with 8 lanes (an
    /// 8,000-step fill was cut); 2 keeps a margin.
    ITERATIONS_PER_STEP = 2;
    /// Loop iterations charged per claimed job beyond the job's own cost (claim-loop step,
    /// job-loop step, completion). lavapipe counted about 5.7; 8 keeps a margin.
    ITERATIONS_PER_JOB = 8;

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
    /// Number of job kinds; kinds at or above this are rejected by the kernel.
    JOB_KIND_COUNT = 5;

    /// Completion status: the job ran to completion.
    STATUS_OK = 0;
    /// Completion status: the host cancelled the job before any workgroup claimed it.
    STATUS_CANCELLED = 1;
    /// Completion status: the kernel did not recognise the job kind.
    STATUS_BAD_KIND = 2;
    /// Completion status (posted by the host): a workgroup claimed the job, then the
    /// driver cut the kernel's loop before it completed (epoch budget too high).
    STATUS_LOST = 3;

    /// Kernel exit reason: no work for `idle_limit` consecutive polls (parked).
    EXIT_IDLE = 1;
    /// Kernel exit reason: the epoch's loop-iteration budget would be exceeded.
    EXIT_BUDGET = 2;
    /// Kernel exit reason: the host raised the shutdown flag.
    EXIT_SHUTDOWN = 3;
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
        /// GPU -> host: bumped by workgroup 0 every 256 loop iterations while it runs.
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
        /// Reserved, zero.
        reserved2: u32,
        /// Reserved, zero.
        reserved3: u32,
    }

    /// Submission-queue entry (64 bytes). The host writes every other word first and
    /// `seq = index + 1` last; a workgroup claims entry `index` only after seeing that.
    struct SqEntry {
        /// Device address of buffer 0 (source), or 0.
        buf0: u64,
        /// Device address of buffer 1 (destination), or 0.
        buf1: u64,
        /// Caller's tag, echoed in the completion.
        tag: u64,
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
        /// Loop iterations the job costs one lane, computed by the host (`ring::cost`).
        cost: u32,
        /// Reserved, zero.
        reserved0: u32,
        /// Reserved, zero.
        reserved1: u32,
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

    /// Launch parameters, passed as push constants.
    struct LaunchParams {
        /// Device address of the control block.
        control: u64,
        /// Device address of the submission queue.
        sq: u64,
        /// Device address of the completion queue.
        cq: u64,
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
