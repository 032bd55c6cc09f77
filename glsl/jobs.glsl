// The job seam: everything the megakernel knows about what a job does lives here.
// `run_job` is called by every lane of the claiming workgroup with the same entry and
// returns the job's status and result words (meaningful in lane 0). Each lane may run
// at most `entry.cost` loop iterations (the host computes the cost, `ring::cost`).
// The bytecode interpreter replaces the built-in kinds behind this same signature.
#ifndef MEGARING_JOBS_GLSL
#define MEGARING_JOBS_GLSL

#include "ring.glsl"
#include "vm.glsl"

// Coherent, like the VM's buffers: a job may read memory another workgroup wrote in the
// same launch (a fill, then a copy of it on another SM), or memory freed and reallocated
// since an earlier job read it; a non-coherent load may be served from the SM's L1 copy.
layout(buffer_reference, std430, buffer_reference_align = 4) coherent buffer U32Ref {
    uint v[];
};

shared uint64_t s_reduce[MAX_LANES];

// Wrapping 64-bit workgroup sum; every lane must call it. log2(lanes) <= MAX_LANES_LOG2
// iterations.
uint64_t workgroup_sum(uint64_t value) {
    uint lane = gl_LocalInvocationID.x;
    s_reduce[lane] = value;
    barrier();
    for (uint stride = LANES / 2u; stride > 0u; stride >>= 1u) {
        if (lane < stride) {
            s_reduce[lane] += s_reduce[lane + stride];
        }
        barrier();
    }
    uint64_t total = s_reduce[0];
    barrier();
    return total;
}

// Single exit on purpose (see ring_poll): kinds are an if/else chain, not early returns.
void run_job(SqEntry job, out uint status, out uvec4 results) {
    uint lane = gl_LocalInvocationID.x;
    status = STATUS_OK;
    results = uvec4(0u);
    if (job.kind == JOB_NOP) {
        // nothing
    } else if (job.kind == JOB_ECHO) {
        results = uvec4(job.arg0, job.arg1, job.arg2, job.arg3);
    } else if (job.kind == JOB_FILL) {
        U32Ref dst = U32Ref(job.buf0);
        for (uint i = lane; i < job.len; i += LANES) {
            dst.v[i] = job.arg0;
        }
    } else if (job.kind == JOB_COPY) {
        U32Ref src = U32Ref(job.buf0);
        U32Ref dst = U32Ref(job.buf1);
        for (uint i = lane; i < job.len; i += LANES) {
            dst.v[i] = src.v[i];
        }
    } else if (job.kind == JOB_SUM_U32) {
        U32Ref src = U32Ref(job.buf0);
        uint64_t acc = 0ul;
        for (uint i = lane; i < job.len; i += LANES) {
            acc += uint64_t(src.v[i]);
        }
        uint64_t total = workgroup_sum(acc);
        results = uvec4(uint(total), uint(total >> 32), 0u, 0u);
    } else if (job.kind == JOB_VM) {
        run_vm(job, status, results);
    } else {
        status = STATUS_BAD_KIND;
    }
}

#endif
