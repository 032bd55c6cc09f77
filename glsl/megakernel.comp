#version 460
// The persistent megakernel: dispatched once per epoch, it loops claiming jobs from the
// submission ring, runs them (jobs.glsl), posts completions, and exits when idle, when
// its loop-iteration budget would run out, or on shutdown (docs/protocol.md, "Epochs").
// No workgroup ever waits for another: each claims and completes jobs on its own.

#include "jobs.glsl"

layout(local_size_x = WORKGROUP_SIZE, local_size_y = 1, local_size_z = 1) in;

const uint ACT_IDLE = 0u;
const uint ACT_RUN = 1u;
// Exit actions are stored as 2 + EXIT_*, so any action >= 3 means "leave the loop".

shared uint s_action;
shared uint s_index;
shared SqEntry s_job;

void main() {
    ControlRef ctl = ControlRef(launch.p.control);
    SqRef sq = SqRef(launch.p.sq);
    CqRef cq = CqRef(launch.p.cq);
    bool leader = gl_LocalInvocationID.x == 0u;
    bool first_group = gl_WorkGroupID.x == 0u;

    // Loop iterations this invocation has run (every lane runs the same outer loop, and at
    // most `cost` inner iterations per job, so lane 0's count bounds every lane's).
    uint used = 0u;
    uint idle = 0u;
    uint exit_reason = 0u;
    uint jobs_done = 0u; // added to the control block once, at exit (no per-job contention)
    if (leader) {
        atomicAdd(ctl.c.resident, 1u);
    }
    for (;;) {
        used += ITERATIONS_PER_PASS;
        if (leader) {
            uint action = ACT_IDLE;
            uint index = 0u;
            if (first_group && (used & 1023u) < ITERATIONS_PER_PASS) {
                atomicAdd(ctl.c.heartbeat, 1u);
            }
            if (atomicAdd(ctl.c.shutdown, 0u) != 0u) {
                exit_reason = EXIT_SHUTDOWN;
            } else if (used + EPOCH_RESERVE >= launch.p.budget) {
                exit_reason = EXIT_BUDGET;
            } else {
                uint poll = ring_poll(ctl, sq, used, index);
                if (poll == POLL_CLAIMED) {
                    action = ACT_RUN;
                    idle = 0u;
                    s_index = index;
                    s_job = sq.e[index & launch.p.ring_mask];
                } else if (poll == POLL_NO_BUDGET) {
                    exit_reason = EXIT_BUDGET;
                } else if (poll == POLL_EMPTY) {
                    idle += 1u;
                    if (idle > launch.p.idle_limit) {
                        exit_reason = EXIT_IDLE;
                    }
                }
            }
            s_action = exit_reason != 0u ? 2u + exit_reason : action;
        }
        barrier();
        uint action = s_action;
        if (action >= 3u) {
            break;
        }
        if (action == ACT_RUN) {
            uint status;
            uvec4 results;
            SqEntry job = s_job;
            run_job(job, status, results);
            used += job.cost;
            if (leader) {
                ring_complete(cq, s_index, job.tag, status, results);
                jobs_done += 1u;
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
        } else {
            atomicAdd(ctl.c.unplanned_exits, 1u);
        }
        atomicExchange(ctl.c.exit_reason, exit_reason);
        memoryBarrierBuffer();
        atomicAdd(ctl.c.resident, 0xFFFFFFFFu);
    }
}
