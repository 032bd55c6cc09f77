#version 460
// Baseline for `megaring bench latency`: the smallest useful dispatch. One lane writes
// `value + 1` to the word at `target`; the host times vkQueueSubmit + fence wait around it.
#extension GL_EXT_buffer_reference : require
#extension GL_EXT_shader_explicit_arithmetic_types_int64 : require

layout(local_size_x = 64, local_size_y = 1, local_size_z = 1) in;
layout(buffer_reference, std430, buffer_reference_align = 4) buffer Word {
    uint v;
};
layout(push_constant) uniform Push {
    uint64_t target;
    uint value;
} push;

void main() {
    if (gl_GlobalInvocationID.x == 0u) {
        Word(push.target).v = push.value + 1u;
    }
}
