#version 460
// Native baseline of the `saxpy` library program for `megaring bench vm`: each workgroup of
// LANES lanes strides over its tile of y[i] = a * x[i] + y[i] (multiply, then add), as the
// interpreter's tiles do.
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_shader_explicit_arithmetic_types_int64 : require

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint LANES = 64u;
layout(buffer_reference, std430, buffer_reference_align = 4) buffer Floats {
    float v[];
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
    for (uint i = begin + gl_LocalInvocationID.x; i < end; i += LANES) {
        float product = push.a * x.v[i];
        y.v[i] = product + y.v[i];
    }
}
