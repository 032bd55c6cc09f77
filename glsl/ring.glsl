// Device side of the ring protocol (docs/protocol.md). Layouts and constants come from
// the generated protocol.glsl; this file only says how the kernel reads and writes them.
//
// Memory-ordering rules (docs/protocol.md, "Claiming" and "Completing"):
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
#extension GL_EXT_shader_atomic_int64 : require

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
layout(buffer_reference, std430, buffer_reference_align = 16) coherent buffer SqRef {
    SqEntry e[];
};
layout(buffer_reference, std430, buffer_reference_align = 32) coherent buffer CqRef {
    CqEntry e[];
};

// The board (docs/protocol.md, "Spread jobs"): the open list (ring index + 1 of each open
// spread job, 0 for a free entry), then one tile counter per ring slot. In device memory;
// only the kernel writes it while a launch runs.
layout(buffer_reference, std430, buffer_reference_align = 16) coherent buffer BoardRef {
    uint64_t open[BOARD_OPEN];
    TileCounter t[];
};
layout(buffer_reference, std430, buffer_reference_align = 16) coherent buffer TileOutRef {
    TileResult r[];
};

layout(push_constant) uniform Launch {
    LaunchParams p;
} launch;


// Spread jobs (docs/protocol.md, "Spread jobs"): a job of `tiles` > 1 is claimed from the
// ring once, with an open-list entry reserved for it (so it is listed from its claim to
// its completion, whichever workgroups come and go); its claimer sets up the tile counter
// of its ring slot, and every idle workgroup takes tiles from listed jobs with one atomic
// add (no CAS race: every add gets a tile or learns that none is left). The workgroup
// that finishes the last tile frees the entry and posts the completion. Entries hold
// 64-bit ring indices + 1: no index maps to 0 (free), and an entry is never mistaken for
// a later job's.

// Reserves a free open-list entry for the spread job at ring index `index` (not claimed
// yet). Returns the entry, or BOARD_OPEN if every entry is taken. Unrolled (see ring_claim).
uint board_reserve(BoardRef board, uint index) {
    uint entry = BOARD_OPEN;
    [[unroll]] for (uint k = 0u; k < BOARD_OPEN; k++) {
        if (entry == BOARD_OPEN && LOAD_RELAXED(board.open[k]) == 0ul
            && atomicCompSwap(board.open[k], 0ul, uint64_t(index) + 1ul) == 0ul) {
            entry = k;
        }
    }
    return entry;
}

// Sets up the tile counter of spread job `index` (just claimed, its entry reserved; `job`
// is its SQ entry) and takes its tile 0.
void board_setup(BoardRef board, uint index, SqEntry job) {
    uint slot = index & launch.p.ring_mask;
    board.t[slot].owner = uint64_t(index) + 1ul;
    board.t[slot].done = 0u;
    board.t[slot].fault = 0xFFFFFFFFu;
    board.t[slot].cost = job.cost;
    memoryBarrierBuffer(); // the words above before the counter that hands out tiles
    atomicExchange(board.t[slot].work, (uint64_t(job.tiles) << 32) | 1ul);
    memoryBarrierBuffer();
}

// Takes one tile of a spread job whose tile fits this epoch: first of `own` (ring index +
// 1 of the job this workgroup claimed, 0 for none; cleared once it has no tiles left),
// then of the open list. Returns whether it took one (its job's ring index and tile);
// `no_budget` tells that a tile was left that did not fit. Unrolled (see ring_claim).
bool board_take(BoardRef board, uint used, inout uint64_t own, out uint index, out uint tile, out bool no_budget) {
    uint64_t candidates[BOARD_OPEN + 1u];
    candidates[0] = own;
    [[unroll]] for (uint k = 0u; k < BOARD_OPEN; k++) {
        candidates[k + 1u] = LOAD_RELAXED(board.open[k]);
    }
    bool got = false;
    no_budget = false;
    index = 0u;
    tile = 0u;
    [[unroll]] for (uint k = 0u; k < BOARD_OPEN + 1u; k++) {
        uint64_t c = candidates[k];
        if (!got && c != 0ul) {
            uint slot = uint(c - 1ul) & launch.p.ring_mask;
            uint64_t w = LOAD_RELAXED(board.t[slot].work);
            memoryBarrierBuffer(); // the counter's words after the counter
            // An entry reserved by a claim whose set-up has not run yet still names the
            // slot's earlier job, whose tiles are all handed out: not live.
            bool live = uint(w) < uint(w >> 32)
                        && LOAD_RELAXED(board.t[slot].owner) == c;
            uint cost = board.t[slot].cost;
            bool fits = uint64_t(used) + uint64_t(cost) + uint64_t(ITERATIONS_PER_PASS + ITERATIONS_PER_JOB + EPOCH_RESERVE)
                        <= uint64_t(launch.p.budget);
            bool close = !live;
            if (live && !fits) {
                no_budget = true;
            } else if (live) {
                // Whatever the add returns below the tile count is a tile of the job whose
                // set-up wrote the counter last, and that job cannot finish before this
                // tile does: its words (owner) and its SQ entry stay put until then.
                uint64_t before = atomicAdd(board.t[slot].work, 1ul);
                uint next = uint(before);
                uint tiles = uint(before >> 32);
                if (next < tiles) {
                    memoryBarrierBuffer();
                    got = true;
                    index = uint(LOAD_RELAXED(board.t[slot].owner) - 1ul);
                    tile = next;
                }
                close = next + 1u >= tiles;
            }
            if (close && k == 0u) {
                own = 0ul;
            }
        }
    }
    return got;
}

// Records tile `tile` of spread job `index` (`job`: its SQ entry): its TileResult, then
// the count of finished tiles. Returns whether it was the last, whose finisher frees the
// job's open-list entry and posts the completion (`status`, `results`: OK, or
// STATUS_TILE_FAULT and the lowest faulted tile).
bool board_finish(BoardRef board, SqEntry job, uint index, uint tile, inout uint status, inout uvec4 results) {
    uint slot = index & launch.p.ring_mask;
    TileOutRef out_ref = TileOutRef(job.tile_out);
    out_ref.r[tile].status = status;
    out_ref.r[tile].result0 = results.x;
    out_ref.r[tile].result1 = results.y;
    out_ref.r[tile].result2 = results.z;
    out_ref.r[tile].result3 = results.w;
    memoryBarrierBuffer(); // the record's words before its seq (see TileResult)
    out_ref.r[tile].seq = uint64_t(index) + 1ul;
    if (status != STATUS_OK) {
        atomicMin(board.t[slot].fault, tile);
    }
    memoryBarrierBuffer(); // the record (and the fault) before the count
    bool last = atomicAdd(board.t[slot].done, 1u) + 1u == job.tiles;
    if (last) {
        memoryBarrierBuffer();
        uint fault = atomicOr(board.t[slot].fault, 0u);
        status = fault == 0xFFFFFFFFu ? STATUS_OK : STATUS_TILE_FAULT;
        results = uvec4(fault == 0xFFFFFFFFu ? 0u : fault, 0u, 0u, 0u);
        uint64_t entry = uint64_t(index) + 1ul;
        [[unroll]] for (uint k = 0u; k < BOARD_OPEN; k++) {
            if (LOAD_RELAXED(board.open[k]) == entry) {
                atomicCompSwap(board.open[k], entry, 0ul);
            }
        }
    }
    return last;
}

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
// published, lost every race, a spread job found every open-list entry taken, or no
// budget; `no_budget` tells the last apart). Single exit on purpose: an early return is
// inlined as a one-pass loop, which lavapipe counts as a loop iteration.
uint ring_claim(ControlRef ctl_ref, SqRef sq, BoardRef board, uint used, out uint first, out bool no_budget) {
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
            bool spread[CLAIM_BATCH];
            [[unroll]] for (uint k = 0u; k < CLAIM_BATCH; k++) {
                costs[k] = published[k] ? sq.e[(head + k) & launch.p.ring_mask].cost : 0u;
                spread[k] = published[k] && sq.e[(head + k) & launch.p.ring_mask].tiles > 1u;
            }
            uint64_t total = uint64_t(used) + uint64_t(EPOCH_RESERVE);
            uint64_t claimed_cost = 0ul;
            bool open = true;
            count = 0u;
            [[unroll]] for (uint k = 0u; k < CLAIM_BATCH; k++) {
                if (open && (!published[k] || (k > 0u && (spread[k] || spread[0])))) {
                    open = false; // a spread job is claimed alone (its tiles are shared)
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
            // A spread job (claimed alone) needs an open-list entry first: with every entry
            // taken it stays in the ring until an open spread job completes.
            uint entry = BOARD_OPEN;
            if (count > 0u && spread[0]) {
                entry = board_reserve(board, head);
                if (entry == BOARD_OPEN) {
                    count = 0u;
                }
            }
            if (count > 0u) {
                uint seen = atomicCompSwap(ctl_ref.c.sq_head, head, head + count);
                if (seen == head) {
                    first = head;
                } else {
                    if (entry < BOARD_OPEN) {
                        atomicCompSwap(board.open[entry], uint64_t(head) + 1ul, 0ul);
                    }
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
