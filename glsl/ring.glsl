// Device side of the ring protocol (docs/protocol.md). Layouts and constants come from
// the generated protocol.glsl; this file only says how the kernel reads and writes them.
//
// Memory-ordering rules (DESIGN.md §2.1, §2.3):
// - every word the host may change while the kernel runs is read with an atomic, so the
//   read is never hoisted out of a loop;
// - an SQ entry is claimed only after its seq word shows it published, by CAS on sq_head;
// - a completion's payload is written before its seq word, with a buffer barrier between.
#ifndef MEGARING_RING_GLSL
#define MEGARING_RING_GLSL

#extension GL_EXT_buffer_reference : require
#extension GL_EXT_shader_explicit_arithmetic_types_int64 : require

#include "protocol.glsl"

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


// Outcome of one poll by lane 0.
const uint POLL_EMPTY = 0u;   // nothing published at sq_head
const uint POLL_LOST = 1u;    // published, but another workgroup claimed it first
const uint POLL_CLAIMED = 2u; // this workgroup owns the entry at `index`
const uint POLL_NO_BUDGET = 3u; // published, but running it would overrun the epoch

// Tries to claim the entry at sq_head. `used` is the iterations this invocation has run.
// Single exit on purpose: an early return is inlined as a one-pass loop, which lavapipe
// counts against its per-invocation loop limit.
uint ring_poll(ControlRef ctl_ref, SqRef sq, uint used, out uint index) {
    uint head = atomicAdd(ctl_ref.c.sq_head, 0u);
    uint slot = head & launch.p.ring_mask;
    uint outcome = POLL_EMPTY;
    index = head;
    if (atomicAdd(sq.e[slot].seq, 0u) == head + 1u) {
        memoryBarrierBuffer();
        uint cost = sq.e[slot].cost;
        // The cost is host-computed and bounded at submit; the check keeps the promise
        // that a job is started only when it can finish inside this epoch.
        if (uint64_t(used) + uint64_t(cost) + uint64_t(EPOCH_RESERVE) > uint64_t(launch.p.budget)) {
            outcome = POLL_NO_BUDGET;
        } else if (atomicCompSwap(ctl_ref.c.sq_head, head, head + 1u) == head) {
            outcome = POLL_CLAIMED;
        } else {
            outcome = POLL_LOST;
        }
    }
    return outcome;
}

// Publishes the completion of job `index`: payload first, seq last.
void ring_complete(CqRef cq, uint index, uint64_t tag, uint status, uvec4 results) {
    uint slot = index & launch.p.ring_mask;
    cq.e[slot].tag = tag;
    cq.e[slot].result0 = results.x;
    cq.e[slot].result1 = results.y;
    cq.e[slot].result2 = results.z;
    cq.e[slot].result3 = results.w;
    cq.e[slot].status = status;
    memoryBarrierBuffer();
    atomicExchange(cq.e[slot].seq, index + 1u);
}

#endif
