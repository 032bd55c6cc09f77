#version 460
// Native baseline of the `saxpy` library program for `megaring bench vm`: each workgroup of
// LANES lanes strides over its tile of y[i] = a * x[i] + y[i] (multiply, then add), whole
// quads with 16-byte loads and stores and the at most three elements at either end one by
// one, as the interpreted program does with `ld32x4` / `st32x4`.
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_shader_explicit_arithmetic_types_int64 : require

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint LANES = 64u;
layout(buffer_reference, std430, buffer_reference_align = 4) buffer Floats {
    float v[];
};
layout(buffer_reference, std430, buffer_reference_align = 16) buffer Quads {
    vec4 v[];
};
layout(push_constant) uniform Push {
    uint64_t x;
    uint64_t y;
    uint n;
    uint tile; // elements per workgroup
    float a;
} push;

void main() {
    Floats x = Floats(push.x);
    Floats y = Floats(push.y);
    uint begin = min(gl_WorkGroupID.x * push.tile, push.n);
    uint end = min(begin + push.tile, push.n);
    uint q0 = min(max((begin + 3u) & ~3u, begin), end);
    uint q1 = max(end & ~3u, q0);
    for (uint i = begin + gl_LocalInvocationID.x; i < q0; i += LANES) {
        float product = push.a * x.v[i];
        y.v[i] = product + y.v[i];
    }
    Quads xq = Quads(push.x);
    Quads yq = Quads(push.y);
    for (uint q = q0 / 4u + gl_LocalInvocationID.x; q < q1 / 4u; q += LANES) {
        vec4 product = push.a * xq.v[q];
        yq.v[q] = product + yq.v[q];
    }
    for (uint i = q1 + gl_LocalInvocationID.x; i < end; i += LANES) {
        float product = push.a * x.v[i];
        y.v[i] = product + y.v[i];
    }
}
