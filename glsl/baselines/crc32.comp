#version 460
// Native baseline of the `crc32` library program for `megaring bench vm`: the same
// algorithm on the same parallelism. Each workgroup takes a tile of the bytes; each lane a
// contiguous chunk of it (a multiple of 16 bytes), whose raw CRC (table-driven, 16 bytes
// per 16-byte load where aligned, as the interpreted program's `ld32x4`) it shifts
// by x^(8n) mod P for the n bytes after the chunk; the lanes XOR their parts into the
// tile's CRC, which the host combines across tiles (zlib's crc32_combine).
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
    uint64_t dst; // dst.v[2 * tile] = the tile's CRC, dst.v[2 * tile + 1] = its bytes
    uint n; // bytes
    uint tile; // bytes per workgroup, a multiple of 4
    uint64_t x2n; // 32 words: x^(2^k) mod P (zlib's x2n_table)
} push;

const uint POLY = 0xEDB88320u;
shared uint s_table[256];
shared uint s_x2n[32];
shared uint s_crc;

// a * b modulo P (zlib's multmodp).
uint multmodp(uint a, uint b) {
    uint m = 1u << 31;
    uint p = 0u;
    for (;;) {
        if ((a & m) != 0u) {
            p ^= b;
            if ((a & (m - 1u)) == 0u) {
                break;
            }
        }
        m >>= 1;
        b = (b & 1u) != 0u ? (b >> 1) ^ POLY : b >> 1;
    }
    return p;
}

void main() {
    uint lane = gl_LocalInvocationID.x;
    for (uint i = lane; i < 256u; i += LANES) {
        uint c = i;
        for (uint k = 0u; k < 8u; k++) {
            c = (c & 1u) != 0u ? (c >> 1) ^ POLY : c >> 1;
        }
        s_table[i] = c;
    }
    for (uint i = lane; i < 32u; i += LANES) {
        s_x2n[i] = Words(push.x2n).v[i];
    }
    if (lane == 0u) {
        s_crc = 0u;
    }
    barrier();
    Words src = Words(push.src);
    uint begin = min(gl_WorkGroupID.x * push.tile, push.n);
    uint end = min(begin + push.tile, push.n);
    uint chunk = ((end - begin + LANES - 1u) / LANES + 15u) & ~15u;
    uint start = min(begin + lane * chunk, end);
    uint stop = min(start + chunk, end);
    uint crc = lane == 0u ? 0xFFFFFFFFu : 0u;
    uint i = start;
    if ((i & 15u) == 0u) {
        for (; i + 16u <= stop; i += 16u) {
            uvec4 q = Quads(push.src).v[i >> 4];
            for (uint j = 0u; j < 4u; j++) {
                for (uint k = 0u; k < 4u; k++) {
                    crc = s_table[(crc ^ (q[j] >> (8u * k))) & 0xFFu] ^ (crc >> 8);
                }
            }
        }
    }
    for (; i + 4u <= stop; i += 4u) {
        uint w = src.v[i >> 2];
        for (uint k = 0u; k < 4u; k++) {
            crc = s_table[(crc ^ (w >> (8u * k))) & 0xFFu] ^ (crc >> 8);
        }
    }
    for (; i < stop; i++) {
        uint b = (src.v[i >> 2] >> (8u * (i & 3u))) & 0xFFu;
        crc = s_table[(crc ^ b) & 0xFFu] ^ (crc >> 8);
    }
    // Shift by x^(8n) for the n bytes after the chunk.
    uint n = end - stop;
    uint p = 1u << 31;
    for (uint k = 3u; n != 0u; k++) {
        if ((n & 1u) != 0u) {
            p = multmodp(s_x2n[k & 31u], p);
        }
        n >>= 1;
    }
    crc = multmodp(p, crc);
    atomicXor(s_crc, crc);
    barrier();
    if (lane == 0u) {
        Words dst = Words(push.dst);
        dst.v[2u * gl_WorkGroupID.x] = ~s_crc;
        dst.v[2u * gl_WorkGroupID.x + 1u] = end - begin;
    }
}
