// Device side of the ring protocol (docs/protocol.md). Layouts and constants come from
// the generated protocol.glsl; this file only says how the kernel reads and writes them.
//
// Memory-ordering rules (DESIGN.md §2.1, §2.3):
// - every word the host may change while the kernel runs is read with an atomic load, so
//   the read is never hoisted out of a loop (lavapipe hoisted volatile loads); a load, not
//   an atomicAdd(x, 0): read-modify-writes by every workgroup on the control block's line
//   contend with the claims' CAS;
// - an SQ entry is claimed only after its seq word shows it published, by CAS on sq_head;
// - a completion's payload is written before its seq word, with a buffer barrier between.
#ifndef MEGARING_RING_GLSL
#define MEGARING_RING_GLSL

#extension GL_EXT_buffer_reference : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_EXT_shader_explicit_arithmetic_types_int64 : require
#extension GL_EXT_control_flow_attributes : require

#include "protocol.glsl"

// Lanes per workgroup, for use in code (LANES_VALUE_CONSTANT_ID; ids must be literals).
// Always equal to the workgroup size: the host sets both constants to the same value.
layout(constant_id = 1) const uint LANES = 64u;

// Relaxed device-scope atomic load of a word the host or other workgroups write: a load,
// never hoisted out of the polling loop, and no read-modify-write on a hot line.
#define LOAD_RELAXED(word) atomicLoad(word, gl_ScopeDevice, gl_StorageSemanticsBuffer, gl_SemanticsRelaxed)

layout(buffer_reference, std430, buffer_reference_align = 16) coherent buffer ControlRef {
    ControlBlock c;
};
layout(buffer_reference, std430, buffer_reference_align = 64) coherent buffer SqRef {
    SqEntry e[];
};
layout(buffer_reference, std430, buffer_reference_align = 32) coherent buffer CqRef {
    CqEntry e[];
};

layout(push_constant) uniform Launch {
    LaunchParams p;
} launch;


// Claims the longest run (at most CLAIM_BATCH) of consecutive published entries starting
// at sq_head whose costs fit the epoch, with one CAS; past the first entry only while the
// claim's cost stays within CLAIM_BATCH_COST. A lost race retries at once from the head
// the CAS returned, up to CLAIM_ATTEMPTS times: with hundreds of workgroups claiming, a
// claim is a chain of dependent memory round trips (head, seq words, costs, CAS) that
// only one of them wins per round, so the chain is kept short: the run's seq words are
// read together, then its costs together. Loops are unrolled on purpose: as a real loop
// inside the leader-only branch, lavapipe (Mesa 22.3) dropped the whole dispatch that
// followed a budget exit, right after its first multi-job claim. `used` is the
// iterations this invocation has counted. Returns the number claimed (0: nothing
// published, lost every race, or no budget; `no_budget` tells the last apart). Single
// exit on purpose: an early return is inlined as a one-pass loop, which lavapipe counts
// as a loop iteration.
uint ring_claim(ControlRef ctl_ref, SqRef sq, uint used, out uint first, out bool no_budget) {
    uint head = LOAD_RELAXED(ctl_ref.c.sq_head);
    uint count = 0u;
    bool trying = true;
    no_budget = false;
    first = head;
    [[unroll]] for (uint attempt = 0u; attempt < CLAIM_ATTEMPTS; attempt++) {
        if (trying) {
            bool published[CLAIM_BATCH];
            [[unroll]] for (uint k = 0u; k < CLAIM_BATCH; k++) {
                published[k] = LOAD_RELAXED(sq.e[(head + k) & launch.p.ring_mask].seq) == head + k + 1u;
            }
            memoryBarrierBuffer(); // payloads are read after their seq words
            uint costs[CLAIM_BATCH];
            [[unroll]] for (uint k = 0u; k < CLAIM_BATCH; k++) {
                costs[k] = published[k] ? sq.e[(head + k) & launch.p.ring_mask].cost : 0u;
            }
            uint64_t total = uint64_t(used) + uint64_t(EPOCH_RESERVE);
            uint64_t claimed_cost = 0ul;
            bool open = true;
            count = 0u;
            [[unroll]] for (uint k = 0u; k < CLAIM_BATCH; k++) {
                if (open && !published[k]) {
                    open = false;
                }
                if (open) {
                    // Costs are host-computed and bounded at submit; the check keeps the
                    // promise that a job starts only when it can finish inside this epoch.
                    // Each claimed job runs in a pass of its own.
                    uint64_t next = total + uint64_t(costs[k]) + uint64_t(ITERATIONS_PER_JOB + ITERATIONS_PER_PASS);
                    claimed_cost += uint64_t(costs[k]);
                    if (next > uint64_t(launch.p.budget)) {
                        no_budget = k == 0u;
                        open = false;
                    } else if (k > 0u && claimed_cost > uint64_t(CLAIM_BATCH_COST)) {
                        open = false; // heavy: leave it to another workgroup
                    } else {
                        total = next;
                        count += 1u;
                    }
                }
            }
            trying = false;
            if (count > 0u) {
                uint seen = atomicCompSwap(ctl_ref.c.sq_head, head, head + count);
                if (seen == head) {
                    first = head;
                } else {
                    count = 0u;
                    head = seen;
                    trying = true; // lost the race: try again from the new head
                }
            }
        }
    }
    return count;
}

// Writes the payload of job `index`'s completion; `ring_publish_completions` makes it
// visible. Completions may live in host memory, where an atomic would be a non-posted
// PCIe round trip, so the seq words are plain stores behind a buffer barrier.
void ring_write_completion(CqRef cq, uint index, uint64_t tag, uint status, uvec4 results) {
    uint slot = index & launch.p.ring_mask;
    cq.e[slot].tag = tag;
    cq.e[slot].result0 = results.x;
    cq.e[slot].result1 = results.y;
    cq.e[slot].result2 = results.z;
    cq.e[slot].result3 = results.w;
    cq.e[slot].status = status;
}

// Publishes the completions of jobs `first .. first + count` (one claim): one buffer
// barrier orders every payload before the seq words. Unrolled (see ring_claim).
void ring_publish_completions(CqRef cq, uint first, uint count) {
    memoryBarrierBuffer();
    [[unroll]] for (uint k = 0u; k < CLAIM_BATCH; k++) {
        if (k < count) {
            cq.e[(first + k) & launch.p.ring_mask].seq = first + k + 1u;
        }
    }
}

#endif
