#version 460
// The persistent megakernel: dispatched once per epoch, it loops claiming jobs from the
// submission ring, runs them (jobs.glsl), posts completions, and exits when idle, when
// its loop-iteration budget would run out, or on shutdown (docs/protocol.md, "Epochs").
// No workgroup ever waits for another: each claims and completes jobs on its own.

#include "jobs.glsl"

// Lanes per workgroup: specialization constant LANES_CONSTANT_ID (ids must be literals).
layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

// s_action: ACT_IDLE, ACT_RUN (run s_job, ring index s_index), or EXIT_ACTION + EXIT_*.
const uint ACT_IDLE = 0u;
const uint ACT_RUN = 1u;
// ACT_RUN for the last job of a claim: its completion publishes the whole claim.
const uint ACT_RUN_LAST = 2u;
// Run tile s_tile of the spread job s_job (ring index s_index), then record it on the board.
const uint ACT_TILE = 3u;
const uint EXIT_ACTION = 0x100u;

shared uint s_action;
shared uint s_index;
shared uint s_tile;
shared SqEntry s_job;

void main() {
    ControlRef ctl = ControlRef(launch.p.control);
    SqRef sq = SqRef(launch.p.sq);
    CqRef cq = CqRef(launch.p.cq);
    BoardRef board = BoardRef(launch.p.board);
    bool leader = gl_LocalInvocationID.x == 0u;

    // Loop iterations this invocation has counted, in lavapipe's units (every lane runs
    // the same passes and at most `cost` inner iterations per job, so lane 0's count
    // bounds every lane's). Claims reserve their jobs' iterations up front.
    uint used = VM_INIT_COST;
    uint idle = 0u;
    uint exit_reason = 0u;
    uint jobs_done = 0u; // added to the control block once, at exit (no per-job contention)
    // Leader only: jobs claimed by the last claim, and how many of them have run. One
    // job runs per pass, so the loop stays flat: a barrier inside a nested loop made
    // lavapipe drop the next dispatch after a budget exit.
    uint claimed = 0u;
    uint next = 0u;
    uint first = 0u;
    // Leader only: ring index + 1 of the spread job this workgroup claimed while it still
    // may have tiles to hand out (0: none). It is listed on the board as well: `own` only
    // makes the claimer prefer its own job's tiles.
    uint64_t own = 0ul;
    // Leader only: used >> HEARTBEAT_LOG2 at the last heartbeat (none yet: the first pass
    // beats).
    uint beat = 0xFFFFFFFFu;
    if (leader) {
        atomicAdd(ctl.c.resident, 1u);
    }
    vm_init();
    for (;;) {
        used += ITERATIONS_PER_PASS;
        if (leader) {
            uint action = ACT_IDLE;
#ifdef MEGARING_FAULTS
            uint fault = LOAD_RELAXED(ctl.c.fault);
            bool stalled = fault == FAULT_STALL || fault == FAULT_HANG;
#else
            const bool stalled = false;
#endif
            if (!stalled && (used >> HEARTBEAT_LOG2) != beat) {
                beat = used >> HEARTBEAT_LOG2;
                atomicAdd(ctl.c.heartbeat, 1u);
            }
            uint tile_index = 0u;
            uint tile = 0u;
            if (stalled) {
#ifdef MEGARING_FAULTS
                // Injected: no claims, no tiles, no heartbeat; leave only for budget (and
                // shutdown, unless the fault is a hang).
                if (fault == FAULT_STALL && LOAD_RELAXED(ctl.c.shutdown) != 0u) {
                    exit_reason = EXIT_SHUTDOWN;
                } else if (used + ITERATIONS_PER_PASS + ITERATIONS_PER_JOB + EPOCH_RESERVE >= launch.p.budget) {
                    exit_reason = EXIT_BUDGET;
                }
#endif
            } else if (next == claimed) {
                // Nothing left of the last claim: take a tile of a spread job (claimed work,
                // so before shutdown or yield), leave, or claim more.
                // The open list is read only while some spread job is open (one word on a
                // line of its own: idle passes stay as cheap as before spread jobs).
                bool tile_no_budget = false;
                bool board_open = own != 0ul || LOAD_RELAXED(ctl.c.spread_open) != 0u;
                if (board_open && board_take(board, used, own, tile_index, tile, tile_no_budget)) {
                    action = ACT_TILE;
                    idle = 0u;
                } else if (LOAD_RELAXED(ctl.c.shutdown) != 0u) {
                    exit_reason = EXIT_SHUTDOWN;
                } else if (LOAD_RELAXED(ctl.c.yield_request) != 0u) {
                    exit_reason = EXIT_YIELD;
                } else if (used + ITERATIONS_PER_PASS + ITERATIONS_PER_JOB + EPOCH_RESERVE >= launch.p.budget) {
                    exit_reason = EXIT_BUDGET;
                } else {
                    bool no_budget;
                    uint count = ring_claim(ctl, sq, board, used, first, no_budget);
                    if (count > 0u) {
                        if (sq.e[first & launch.p.ring_mask].tiles > 1u) {
                            // A spread job (claimed alone, listed): run its tile 0 now.
                            atomicAdd(ctl.c.spread_open, 1u);
                            board_setup(board, first, sq.e[first & launch.p.ring_mask]);
                            own = uint64_t(first) + 1ul;
                            action = ACT_TILE;
                            tile_index = first;
                            tile = 0u;
                        } else {
                            claimed = count;
                            next = 0u;
                        }
                        idle = 0u;
                    } else if (no_budget || tile_no_budget) {
                        exit_reason = EXIT_BUDGET;
                    } else {
                        idle += 1u;
                        if (idle > launch.p.idle_limit) {
                            exit_reason = EXIT_IDLE;
                        }
                    }
                }
            }
            if (action == ACT_TILE) {
                // The entry stays intact until the job's last tile posts its completion.
                SqEntry job = sq.e[tile_index & launch.p.ring_mask];
                job.tile_begin += tile * job.tile;
                job.len = job.tile_begin + min(job.tile, job.len - min(job.tile_begin, job.len));
                s_index = tile_index;
                s_tile = tile;
                s_job = job;
            } else if (next < claimed) {
                // A claimed entry stays intact until its completion frees the slot.
                action = next + 1u == claimed ? ACT_RUN_LAST : ACT_RUN;
                s_index = first + next;
                s_job = sq.e[(first + next) & launch.p.ring_mask];
            }
            bool dropped = false;
#ifdef MEGARING_FAULTS
            // Injected, one-shot: leave with this claim unfinished, as a cut loop would.
            dropped = action != ACT_IDLE && fault == FAULT_DROP
                      && atomicCompSwap(ctl.c.fault, FAULT_DROP, FAULT_NONE) == FAULT_DROP;
#endif
            s_action = exit_reason != 0u || dropped ? EXIT_ACTION + exit_reason : action;
        }
        barrier();
        uint action = s_action;
        if (action >= EXIT_ACTION) {
            break;
        }
        if (action != ACT_IDLE) {
            SqEntry job = s_job;
            uint index = s_index;
            uint status;
            uvec4 results;
            run_job(job, status, results);
            used += ITERATIONS_PER_JOB + job.cost;
            // The completions of a claim are published together, after its last job: one
            // buffer barrier per lane per claim, not per job (each barrier waits for the
            // lane's outstanding writes, which to host memory cross PCIe).
            if (action == ACT_RUN_LAST || action == ACT_TILE) {
                memoryBarrierBuffer();
            }
            barrier();
            if (leader && action == ACT_TILE) {
                // The tile's record; the last tile's finisher posts the job's completion.
                if (board_finish(board, job, index, s_tile, status, results)) {
                    ring_write_completion(cq, index, job.tag, status, results);
                    ring_publish_completions(cq, index, 1u);
                    atomicAdd(ctl.c.spread_open, 0xFFFFFFFFu);
                    jobs_done += 1u;
                }
                atomicAdd(ctl.c.tiles_done, 1u);
            } else if (leader) {
                ring_write_completion(cq, index, job.tag, status, results);
                jobs_done += 1u;
                next += 1u;
                if (action == ACT_RUN_LAST) {
                    ring_publish_completions(cq, first, claimed);
                }
            }
        }
        barrier();
    }
    if (leader) {
        atomicAdd(ctl.c.jobs_done, jobs_done);
        atomicMax(ctl.c.max_iterations, used);
        if (exit_reason == EXIT_IDLE) {
            atomicAdd(ctl.c.idle_exits, 1u);
        } else if (exit_reason == EXIT_BUDGET) {
            atomicAdd(ctl.c.budget_exits, 1u);
        } else if (exit_reason == EXIT_SHUTDOWN) {
            atomicAdd(ctl.c.shutdown_exits, 1u);
        } else if (exit_reason == EXIT_YIELD) {
            atomicAdd(ctl.c.yield_exits, 1u);
        } else {
            atomicAdd(ctl.c.unplanned_exits, 1u);
        }
        atomicExchange(ctl.c.exit_reason, exit_reason);
        memoryBarrierBuffer();
        atomicAdd(ctl.c.resident, 0xFFFFFFFFu);
    }
}
