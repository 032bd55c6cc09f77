#version 460
// Native baseline of the `sum-u32` library program for `megaring bench vm`: the same work
// on the same parallelism, the same way (each workgroup of LANES lanes strides over its
// tile's whole quads of elements, 16-byte loads, and takes the at most three elements at
// either end one by one, as the interpreted program does with `ld32x4`), then reduces;
// compiled instead of interpreted.
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_shader_explicit_arithmetic_types_int64 : require

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint LANES = 64u;
layout(buffer_reference, std430, buffer_reference_align = 4) buffer Words {
    uint v[];
};
layout(buffer_reference, std430, buffer_reference_align = 16) buffer Quads {
    uvec4 v[];
};
layout(push_constant) uniform Push {
    uint64_t src;
    uint64_t dst; // dst.v[0] accumulates the sum (zeroed by the host)
    uint n;
    uint tile; // elements per workgroup
} push;

shared uint s_sum[64];

void main() {
    uint lane = gl_LocalInvocationID.x;
    Words src = Words(push.src);
    uint begin = min(gl_WorkGroupID.x * push.tile, push.n);
    uint end = min(begin + push.tile, push.n);
    uint q0 = min(max((begin + 3u) & ~3u, begin), end);
    uint q1 = max(end & ~3u, q0);
    uint acc = 0u;
    for (uint i = begin + lane; i < q0; i += LANES) {
        acc += src.v[i];
    }
    for (uint q = q0 / 4u + lane; q < q1 / 4u; q += LANES) {
        uvec4 w = Quads(push.src).v[q];
        acc += (w.x + w.y) + (w.z + w.w);
    }
    for (uint i = q1 + lane; i < end; i += LANES) {
        acc += src.v[i];
    }
    s_sum[lane] = acc;
    barrier();
    if (lane == 0u) {
        uint total = 0u;
        for (uint k = 0u; k < LANES; k++) {
            total += s_sum[k];
        }
        atomicAdd(Words(push.dst).v[0], total);
    }
}
