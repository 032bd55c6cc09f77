// The GPU bytecode interpreter (docs/bytecode.md), behind the job seam: run_job calls
// run_vm for JOB_VM jobs. It implements the semantics of the CPU reference interpreter
// (src/vm/interp.rs) and is tested against it. Opcodes come from the generated
// protocol.glsl, the same definitions the host's assembler and verifier use.
//
// Lanes: invocation h interprets the VM lanes h * VM_SUBLANES .. h * VM_SUBLANES +
// VM_SUBLANES - 1 together, as VM_GROUPS groups of four (uvec4 registers), so one
// instruction fetch and dispatch serves them all, and their loads are in flight together
// (one 16-byte load where four lanes read four consecutive words). Each step runs the
// instruction at the lowest program counter among the invocation's running lanes, for
// the lanes standing there; lanes whose branches went apart rejoin when the lower ones
// catch up (they never wait for each other otherwise). While all of an invocation's lanes
// run at one pc, a second dispatcher runs instructions without per-lane masks or fuel
// counters (on the H100 a step took 132 instead of 220 ns); it hands anything else back.
//
// Phases: lanes run until they halt, fault, run out of fuel or reach a reduction; then
// every invocation summarises its lanes in shared memory, all meet at a barrier, and
// every invocation computes the same decision. The common ends (every lane halted, or all
// waiting at one integer reduction) are folded with shared atomics before the barrier;
// the others (a fault, lanes apart, a float reduction, whose fold follows lane order) take
// an unrolled scan of the summaries (no loop inside a lane-0-only branch, and no loop
// iterations for lavapipe to count; on the H100 the scan cost 6-9 us a phase). The program was
// verified on the host; the device still bounds-checks every memory access and stops at
// fuel exhaustion.
#ifndef MEGARING_VM_GLSL
#define MEGARING_VM_GLSL

#include "ring.glsl"

// Sub-lane groups per invocation (VM_GROUPS_CONSTANT_ID; ids must be literals).
layout(constant_id = 2) const uint VM_GROUPS = 1u;
// Whether the converged dispatcher runs (VM_CONVERGED_CONSTANT_ID).
layout(constant_id = 3) const bool VM_CONVERGED = true;
const uint VM_SUBLANES = 4u * VM_GROUPS;

layout(buffer_reference, std430, buffer_reference_align = 4) coherent readonly buffer VmProgramRef {
    uint w[];
};
layout(buffer_reference, std430, buffer_reference_align = 16) coherent readonly buffer VmTableRef {
    VmBuffer b[];
};
layout(buffer_reference, std430, buffer_reference_align = 4) coherent buffer VmWords {
    uint v[];
};
layout(buffer_reference, std430, buffer_reference_align = 16) coherent buffer VmQuads {
    uvec4 v[];
};

const uint VM_RUNNING = 0u;
const uint VM_AT_REDUCTION = 1u;
const uint VM_HALTED = 2u;
const uint VM_FAULTED = 3u;
const uint VM_NONE = 0xFFFFFFFFu;

// The job's program (its first VM_SHARED_PROGRAM instructions) and buffer table, copied
// once per job (see VM_SHARED_PROGRAM in src/protocol.rs).
shared uvec2 s_vm_prog[VM_SHARED_PROGRAM];
shared VmBuffer s_vm_table[VM_MAX_BUFFERS];
// The byte table of crc32.b / crc32.w, built once per launch (vm_init).
shared uint s_vm_crc[VM_CRC_TABLE];

// Phase summaries, one per invocation: state (VM_FAULTED + status for a fault), program
// counter, value (fault detail or the reduction operand combined over its lanes), the
// sub-lane they belong to, and (pc << 8 | sub-lane) of its first lane waiting at a
// different reduction, or VM_NONE.
shared uint s_vm_state[MAX_LANES];
shared uint s_vm_pc[MAX_LANES];
shared uint s_vm_value[MAX_LANES];
shared uint s_vm_sub[MAX_LANES];
shared uint s_vm_div[MAX_LANES];
// The phase end's fast path, two sets used in turn (phase parity): VM_FAST_COMPLEX (non-zero:
// some invocation faulted, went apart or waits at a float reduction), the lowest and highest
// program counter of the invocations waiting at a reduction, and the sum, minimum and
// maximum of their operands. Folded with shared atomics; the full scan runs only when needed.
const uint VM_FAST_COMPLEX = 0u;
const uint VM_FAST_PC_LO = 1u;
const uint VM_FAST_PC_HI = 2u;
const uint VM_FAST_SUM = 3u;
const uint VM_FAST_MIN = 4u;
const uint VM_FAST_MAX = 5u;
shared uint s_vm_fast[2][6];

// Sets the fast path's set `p` to its identities (one invocation, before a barrier).
void vm_fast_reset(uint p) {
    s_vm_fast[p][VM_FAST_COMPLEX] = 0u;
    s_vm_fast[p][VM_FAST_PC_LO] = VM_NONE;
    s_vm_fast[p][VM_FAST_PC_HI] = 0u;
    s_vm_fast[p][VM_FAST_SUM] = 0u;
    s_vm_fast[p][VM_FAST_MIN] = 0xFFFFFFFFu;
    s_vm_fast[p][VM_FAST_MAX] = 0u;
}

// Loop iterations vm_init costs one invocation (the host's Job::launch_cost).
const uint VM_INIT_COST = ((VM_CRC_TABLE + LANES - 1u) / LANES) * ITERATIONS_PER_STEP;

// Builds the CRC table; every invocation calls it once, at the start of a launch.
void vm_init() {
    for (uint i = gl_LocalInvocationID.x; i < VM_CRC_TABLE; i += LANES) {
        uint c = i;
        [[unroll]] for (uint k = 0u; k < 8u; k++) {
            c = (c & 1u) != 0u ? (c >> 1) ^ VM_CRC32_POLY : c >> 1;
        }
        s_vm_crc[i] = c;
    }
    barrier();
}

bvec4 vm_and(bvec4 x, bvec4 y) { return bvec4(uvec4(x) & uvec4(y)); }
bvec4 vm_or(bvec4 x, bvec4 y) { return bvec4(uvec4(x) | uvec4(y)); }
bvec4 vm_not(bvec4 x) { return not(x); }

// Which of `index` (elements of 1 << shift bytes) lie inside the buffer `desc`.
bvec4 vm_in_range(VmBuffer desc, uvec4 index, uint shift) {
    uint64_t elements = desc.bytes >> shift;
    return elements > 0xFFFFFFFFul ? bvec4(true) : lessThan(index, uvec4(uint(elements)));
}

// Whether four lanes address four consecutive elements, the first a multiple of four.
bool vm_quad(uvec4 index) {
    return (index.x & 3u) == 0u && index == index.xxxx + uvec4(0u, 1u, 2u, 3u);
}

vec4 vm_f(uvec4 x) { return uintBitsToFloat(x); }
uvec4 vm_u(vec4 x) { return floatBitsToUint(x); }

uvec4 vm_fmin(uvec4 x, uvec4 y) { return mix(x, y, vm_or(isnan(vm_f(x)), lessThan(vm_f(y), vm_f(x)))); }
uvec4 vm_fmax(uvec4 x, uvec4 y) { return mix(x, y, vm_or(isnan(vm_f(x)), greaterThan(vm_f(y), vm_f(x)))); }

uvec4 vm_f2u(uvec4 x) {
    vec4 v = vm_f(x);
    uvec4 big = mix(uvec4(v), uvec4(0xFFFFFFFFu), greaterThanEqual(v, vec4(4294967296.0)));
    return mix(uvec4(0u), big, vm_and(not(isnan(v)), greaterThan(v, vec4(0.0))));
}

uvec4 vm_f2i(uvec4 x) {
    vec4 v = vm_f(x);
    ivec4 out_value = mix(ivec4(v), ivec4(2147483647), greaterThanEqual(v, vec4(2147483648.0)));
    out_value = mix(out_value, ivec4(int(0x80000000u)), lessThan(v, vec4(-2147483648.0)));
    return uvec4(mix(out_value, ivec4(0), isnan(v)));
}

uvec4 vm_crc_byte(uvec4 crc, uvec4 byte) {
    uvec4 index = (crc ^ byte) & 0xFFu;
    return uvec4(s_vm_crc[index.x], s_vm_crc[index.y], s_vm_crc[index.z], s_vm_crc[index.w]) ^ (crc >> 8);
}

// a * b modulo VM_CRC32_POLY, reflected (zlib's multmodp), unrolled: no loop iterations.
uvec4 vm_crc_mul(uvec4 a, uvec4 b) {
    uvec4 product = uvec4(0u);
    [[unroll]] for (uint k = 0u; k < 32u; k++) {
        product ^= mix(uvec4(0u), b, notEqual(a & (0x80000000u >> k), uvec4(0u)));
        b = (b >> 1) ^ mix(uvec4(0u), uvec4(VM_CRC32_POLY), notEqual(b & 1u, uvec4(0u)));
    }
    return product;
}

uint vm_combine(uint op, uint x, uint y) {
    uint out_value = 0u;
    if (op == OP_RED_ADD) {
        out_value = x + y;
    } else if (op == OP_RED_MIN) {
        out_value = min(x, y);
    } else if (op == OP_RED_MAX) {
        out_value = max(x, y);
    } else if (op == OP_RED_FMIN) {
        out_value = isnan(uintBitsToFloat(y)) ? x : vm_fmin(uvec4(x), uvec4(y)).x;
    } else {
        out_value = isnan(uintBitsToFloat(y)) ? x : vm_fmax(uvec4(x), uvec4(y)).x;
    }
    return out_value;
}

// One atomic of `op` on element `index` with operand `value` (`compare` for CAS).
uint vm_atomic(uint op, VmWords words, uint index, uint value, uint compare) {
    uint old = 0u;
    if (op == OP_ATOMIC_ADD) old = atomicAdd(words.v[index], value);
    else if (op == OP_ATOMIC_MIN) old = atomicMin(words.v[index], value);
    else if (op == OP_ATOMIC_MAX) old = atomicMax(words.v[index], value);
    else if (op == OP_ATOMIC_AND) old = atomicAnd(words.v[index], value);
    else if (op == OP_ATOMIC_OR) old = atomicOr(words.v[index], value);
    else if (op == OP_ATOMIC_XOR) old = atomicXor(words.v[index], value);
    else if (op == OP_ATOMIC_XCHG) old = atomicExchange(words.v[index], value);
    else old = atomicCompSwap(words.v[index], compare, value); // OP_ATOMIC_CAS
    return old;
}

// Whether four consecutive u32 elements from each of `index` lie inside `desc`.
bvec4 vm_in_range4(VmBuffer desc, uvec4 index) {
    return vm_and(lessThanEqual(index, uvec4(0xFFFFFFFCu)), vm_in_range(desc, index + 3u, 2u));
}

// u32 element index[c] of `desc` for the lanes c in `go` (0 for the others): one 16-byte
// load where four lanes read an aligned quad.
uvec4 vm_load32(VmBuffer desc, uvec4 index, bvec4 go) {
    uvec4 got = uvec4(0u);
    if (all(go) && vm_quad(index) && (desc.address & 15ul) == 0ul) {
        got = VmQuads(desc.address).v[index.x >> 2];
    } else {
        VmWords words = VmWords(desc.address);
        [[unroll]] for (uint c = 0u; c < 4u; c++) {
            if (go[c]) got[c] = words.v[index[c]];
        }
    }
    return got;
}

// Byte index[c] of `desc` for the lanes in `go`: one load where four lanes read an aligned word.
uvec4 vm_load8(VmBuffer desc, uvec4 index, bvec4 go) {
    uvec4 got = uvec4(0u);
    VmWords words = VmWords(desc.address);
    if (all(go) && vm_quad(index)) {
        got = (uvec4(words.v[index.x >> 2]) >> uvec4(0u, 8u, 16u, 24u)) & 0xFFu;
    } else {
        [[unroll]] for (uint c = 0u; c < 4u; c++) {
            if (go[c]) got[c] = (words.v[index[c] >> 2] >> ((index[c] & 3u) * 8u)) & 0xFFu;
        }
    }
    return got;
}

void vm_store32(VmBuffer desc, uvec4 index, uvec4 value, bvec4 go) {
    if (all(go) && vm_quad(index) && (desc.address & 15ul) == 0ul) {
        VmQuads(desc.address).v[index.x >> 2] = value;
    } else {
        VmWords words = VmWords(desc.address);
        [[unroll]] for (uint c = 0u; c < 4u; c++) {
            if (go[c]) words.v[index[c]] = value[c];
        }
    }
}

// ld32x4 for the lanes in `go`: element k of lane c's four goes to k-th register's lane c.
void vm_load4(VmBuffer desc, uvec4 index, bvec4 go, out uvec4 k0, out uvec4 k1, out uvec4 k2, out uvec4 k3) {
    bool quads = (desc.address & 15ul) == 0ul;
    VmWords words = VmWords(desc.address);
    uvec4 got[4];
    [[unroll]] for (uint c = 0u; c < 4u; c++) {
        got[c] = uvec4(0u);
        if (go[c]) {
            if (quads && (index[c] & 3u) == 0u) {
                got[c] = VmQuads(desc.address).v[index[c] >> 2];
            } else {
                got[c] = uvec4(words.v[index[c]], words.v[index[c] + 1u], words.v[index[c] + 2u],
                               words.v[index[c] + 3u]);
            }
        }
    }
    k0 = uvec4(got[0].x, got[1].x, got[2].x, got[3].x);
    k1 = uvec4(got[0].y, got[1].y, got[2].y, got[3].y);
    k2 = uvec4(got[0].z, got[1].z, got[2].z, got[3].z);
    k3 = uvec4(got[0].w, got[1].w, got[2].w, got[3].w);
}

// st32x4 for the lanes in `go` (registers k0..k3 as vm_load4 returns them).
void vm_store4(VmBuffer desc, uvec4 index, bvec4 go, uvec4 k0, uvec4 k1, uvec4 k2, uvec4 k3) {
    bool quads = (desc.address & 15ul) == 0ul;
    VmWords words = VmWords(desc.address);
    [[unroll]] for (uint c = 0u; c < 4u; c++) {
        if (go[c]) {
            uvec4 quad = uvec4(k0[c], k1[c], k2[c], k3[c]);
            if (quads && (index[c] & 3u) == 0u) {
                VmQuads(desc.address).v[index[c] >> 2] = quad;
            } else {
                [[unroll]] for (uint k = 0u; k < 4u; k++) {
                    words.v[index[c] + k] = quad[k];
                }
            }
        }
    }
}

// The lane-wise ops that also have a four-register form (isa::X4_OPS), as X(scalar opcode,
// x4 opcode, r[d] as an expression of a = r[a] and b = r[b]).
#define VM_LANEWISE_OPS(X) \
    X(OP_ADD, OP_ADD_X4, a + b) \
    X(OP_SUB, OP_SUB_X4, a - b) \
    X(OP_MUL, OP_MUL_X4, a * b) \
    X(OP_AND, OP_AND_X4, a & b) \
    X(OP_OR, OP_OR_X4, a | b) \
    X(OP_XOR, OP_XOR_X4, a ^ b) \
    X(OP_FADD, OP_FADD_X4, vm_u(vm_f(a) + vm_f(b))) \
    X(OP_FSUB, OP_FSUB_X4, vm_u(vm_f(a) - vm_f(b))) \
    X(OP_FMUL, OP_FMUL_X4, vm_u(vm_f(a) * vm_f(b)))
#define VM_BOTH_FORMS(code, code4, expr) VM_PURE(code, expr) VM_PURE4(code4, expr)
#define VM_SCALAR_FORM(code, code4, expr) VM_PURE(code, expr)
#define VM_X4_LABEL(code, code4, expr) case code4:
#define VM_X4_VALUE(code, code4, expr) if (op4 == code4) return (expr);

// Register k of the result of x4 opcode op4, from register k of its operands.
uvec4 vm_lanewise4(uint op4, uvec4 a, uvec4 b) {
    VM_LANEWISE_OPS(VM_X4_VALUE)
    return uvec4(0u);
}

// Cases of a dispatcher's switch, which defines VM_PUT(register, group, value).
#define VM_PURE(code, expr) \
    case code: VM_EACH(uvec4 a = VM_R(ia, g); uvec4 b = VM_R(ib, g); VM_PUT(d, g, (expr))) break;
#define VM_PURE4(code, expr) case code: VM_GROUPS4(expr)
#define VM_GROUPS4(expr) \
    VM_EACH( \
        uvec4 av[4]; \
        uvec4 bv[4]; \
        [[unroll]] for (uint k = 0u; k < 4u; k++) { \
            av[k] = VM_R(min(ia, 28u) + k, g); \
            bv[k] = VM_R(min(ib, 28u) + k, g); \
        } \
        [[unroll]] for (uint k = 0u; k < 4u; k++) { \
            uvec4 a = av[k]; \
            uvec4 b = bv[k]; \
            VM_PUT(min(d, 28u) + k, g, (expr)) \
        }) break;

// The instructions that only compute r[d] from a = r[a], b = r[b], imm and the job, for a
// group of four lanes g (VM_PURE), or r[d + k] from r[a + k], r[b + k] (VM_PURE4). The
// converged dispatcher expands VM_CHEAP_OPS: a case per x4 op, and no crc32.mul (about 700
// GPU instructions and rare; it added 3 s to lavapipe's cold compile). The per-lane one
// expands VM_PURE_OPS: all x4 ops share one case (vm_lanewise4), which keeps the code
// lavapipe runs small (a case each made an ingest test take 95 s instead of 66).
#define VM_CHEAP_OPS \
    VM_LANEWISE_OPS(VM_BOTH_FORMS) \
    VM_OTHER_PURE_OPS
#define VM_OTHER_PURE_OPS \
    VM_PURE(OP_MOVI, uvec4(imm)) \
    VM_PURE(OP_MOV, a) \
    VM_PURE(OP_SEL, mix(b, a, notEqual(VM_R(imm & 31u, g), uvec4(0u)))) \
    VM_PURE(OP_SHL, a << (b & 31u)) \
    VM_PURE(OP_SHRU, a >> (b & 31u)) \
    VM_PURE(OP_SHRS, uvec4(ivec4(a) >> ivec4(b & 31u))) \
    VM_PURE(OP_MINU, min(a, b)) \
    VM_PURE(OP_MAXU, max(a, b)) \
    VM_PURE(OP_MINS, uvec4(min(ivec4(a), ivec4(b)))) \
    VM_PURE(OP_MAXS, uvec4(max(ivec4(a), ivec4(b)))) \
    VM_PURE(OP_ADDI, a + imm) \
    VM_PURE(OP_NOT, ~a) \
    VM_PURE(OP_EQ, uvec4(equal(a, b))) \
    VM_PURE(OP_NE, uvec4(notEqual(a, b))) \
    VM_PURE(OP_LTU, uvec4(lessThan(a, b))) \
    VM_PURE(OP_LTS, uvec4(lessThan(ivec4(a), ivec4(b)))) \
    VM_PURE(OP_LEU, uvec4(lessThanEqual(a, b))) \
    VM_PURE(OP_LES, uvec4(lessThanEqual(ivec4(a), ivec4(b)))) \
    VM_PURE(OP_FDIV, vm_u(vm_f(a) / vm_f(b))) \
    VM_PURE(OP_FMIN, vm_fmin(a, b)) \
    VM_PURE(OP_FMAX, vm_fmax(a, b)) \
    VM_PURE(OP_FSQRT, vm_u(sqrt(vm_f(a)))) \
    VM_PURE(OP_FLT, uvec4(lessThan(vm_f(a), vm_f(b)))) \
    VM_PURE(OP_FLE, uvec4(lessThanEqual(vm_f(a), vm_f(b)))) \
    VM_PURE(OP_FEQ, uvec4(equal(vm_f(a), vm_f(b)))) \
    VM_PURE(OP_U2F, vm_u(vec4(a))) \
    VM_PURE(OP_I2F, vm_u(vec4(ivec4(a)))) \
    VM_PURE(OP_F2U, vm_f2u(a)) \
    VM_PURE(OP_F2I, vm_f2i(a)) \
    VM_PURE(OP_CRC32B, vm_crc_byte(a, b)) \
    VM_PURE(OP_CRC32W, vm_crc_byte(vm_crc_byte(vm_crc_byte(vm_crc_byte(a, b), b >> 8), b >> 16), b >> 24)) \
    VM_PURE(OP_LANE, uvec4(first_lane + 4u * g) + uvec4(0u, 1u, 2u, 3u)) \
    VM_PURE(OP_LANES, uvec4(LANES * VM_SUBLANES)) \
    VM_PURE(OP_GRID, uvec4(job.len)) \
    VM_PURE(OP_TILE_BEGIN, uvec4(job.tile_begin)) \
    VM_PURE(OP_ARG, uvec4(imm == 0u ? job.arg0 : (imm == 1u ? job.arg1 : (imm == 2u ? job.arg2 : job.arg3)))) \
    VM_PURE(OP_BUFLEN, uvec4(uint(s_vm_table[imm & 7u].bytes)))
#define VM_PURE_OPS \
    VM_LANEWISE_OPS(VM_SCALAR_FORM) \
    VM_OTHER_PURE_OPS \
    VM_PURE(OP_CRC32MUL, vm_crc_mul(a, b)) \
    VM_LANEWISE_OPS(VM_X4_LABEL) VM_GROUPS4(vm_lanewise4(op, a, b))

void run_vm(SqEntry job, out uint status, out uvec4 results) {
    VmProgramRef prog = VmProgramRef(job.buf0);
    VmTableRef table = VmTableRef(job.buf1);
    uint lane = gl_LocalInvocationID.x;
    // Instruction i of the program: its two words.
    #define VM_INSN(i) ((i) < cached ? s_vm_prog[(i)] \
        : uvec2(prog.w[VM_HEADER_WORDS + 2u * (i)], prog.w[VM_HEADER_WORDS + 2u * (i) + 1u]))
    uint cached = min(prog.w[2], uint(VM_SHARED_PROGRAM));
    for (uint i = lane; i < cached; i += LANES) {
        s_vm_prog[i] = uvec2(prog.w[VM_HEADER_WORDS + 2u * i], prog.w[VM_HEADER_WORDS + 2u * i + 1u]);
    }
    for (uint k = lane; k < VM_MAX_BUFFERS; k += LANES) {
        s_vm_table[k] = table.b[k];
    }
    if (lane == 0u) {
        vm_fast_reset(0u);
        vm_fast_reset(1u);
    }
    barrier();

    // Register i of group g; the body of VM_EACH runs once per group, with g a constant.
    #define VM_R(i, g) r[(g) * 32u + (i)]
    // Unrolled by hand: the optimiser leaves some loops rolled, and lavapipe would count
    // their iterations against the epoch budget.
    #define VM_EACH(body) { const uint g = 0u; body } if (VM_GROUPS > 1u) { const uint g = 1u; body }
    // Writes v to register dd of the lanes of group g in `mask`.
    #define VM_SET_MASKED(dd, g, v, mask) { \
        if (all(mask)) { VM_R(dd, g) = (v); } else { VM_R(dd, g) = mix(VM_R(dd, g), (v), (mask)); } }
    #define VM_SET(g, v) VM_SET_MASKED(d, g, v, m[g])
    // Faults the lanes of group g in `mask` with `code` and `detail`.
    #define VM_FAULT(g, mask, code, detail) { \
        stv[g] = mix(stv[g], uvec4(VM_FAULTED), (mask)); \
        fstat[g] = mix(fstat[g], uvec4(code), (mask)); \
        fdet[g] = mix(fdet[g], (detail), (mask)); }

    uvec4 r[32u * VM_MAX_GROUPS];
    [[unroll]] for (uint k = 0u; k < 32u * VM_MAX_GROUPS; k++) {
        if (k < 32u * VM_GROUPS) { // the other groups' registers are never read
            r[k] = uvec4(0u);
        }
    }
    // Per lane: program counter, fuel left, state, fault status, and the fault's detail
    // or the reduction operand.
    uvec4 pcv[VM_MAX_GROUPS];
    uvec4 fuelv[VM_MAX_GROUPS];
    uvec4 stv[VM_MAX_GROUPS];
    uvec4 fstat[VM_MAX_GROUPS];
    uvec4 fdet[VM_MAX_GROUPS];
    bvec4 m[VM_MAX_GROUPS];
    uvec4 nextv[VM_MAX_GROUPS];
    [[unroll]] for (uint g = 0u; g < VM_MAX_GROUPS; g++) {
        pcv[g] = uvec4(0u);
        fuelv[g] = uvec4(job.fuel);
        stv[g] = uvec4(g < VM_GROUPS ? VM_RUNNING : VM_HALTED);
        fstat[g] = uvec4(0u);
        fdet[g] = uvec4(0u);
        m[g] = bvec4(false);
        nextv[g] = uvec4(0u);
    }
    uint first_lane = lane * VM_SUBLANES;
    status = STATUS_OK;
    results = uvec4(0u);
    // Converged: every lane of the invocation runs, all at program counter `cpc`, each with
    // at least `headroom` fuel beyond the `burned` instructions run since (charged to fuelv
    // on leaving). Then the fast dispatcher below runs instructions without per-lane masks.
    bool conv = false;
    uint cpc = 0u;
    uint headroom = 0u;
    uint burned = 0u;
    uint phase = 0u;
    for (;;) {
        // Run this invocation's lanes until every one has stopped. Every iteration of the
        // step loop runs an instruction for at least one lane or stops one for lack of fuel
        // (at most VM_SUBLANES * (fuel + 1) iterations over the whole job); each iteration
        // of the fast loop inside it but the last runs one for all lanes.
        for (;;) {
            if (conv) {
                // The fast dispatcher: the instructions that need no per-lane masks while the
                // lanes agree (pure, in-range memory, branches all lanes take alike). Any
                // other instruction, a disagreement, a fault or an instruction past the
                // shared copy leaves, before changing anything, for the per-lane step below.
                bool leave = false;
                for (;;) {
                    if (leave || burned >= headroom || cpc >= cached) {
                        break;
                    }
                    uvec2 insn = s_vm_prog[cpc];
                    uint op = insn.x & 0xFFu;
                    uint d = (insn.x >> 8) & 31u;
                    uint ia = (insn.x >> 16) & 31u;
                    uint ib = (insn.x >> 24) & 31u;
                    uint imm = insn.y;
                    uint next = cpc + 1u;
                    // The instructions of streaming loops (loop, .x4m) are tested before the
                    // switch, whose compare tree took seven levels to reach an .x4m op.
                    if (op == OP_LOOP) {
                        // r[d] += r[a], taken while r[d] < r[b]; lanes that disagree leave.
                        bool all_taken = true;
                        bool any_taken = false;
                        VM_EACH(
                            bvec4 taken = lessThan(VM_R(d, g) + VM_R(ia, g), VM_R(ib, g));
                            all_taken = all_taken && all(taken);
                            any_taken = any_taken || any(taken);
                        )
                        if (all_taken != any_taken) {
                            leave = true;
                        } else {
                            VM_EACH(VM_R(d, g) = VM_R(d, g) + VM_R(ia, g);)
                            next = all_taken ? imm : next;
                        }
                    } else if (op >= OP_ADD_X4M && op <= OP_FMUL_X4M) {
                        VmBuffer desc = s_vm_table[imm & 7u];
                        uvec4 index[VM_MAX_GROUPS];
                        VM_EACH(
                            index[g] = VM_R(ia, g);
                            leave = leave || !all(vm_in_range4(desc, index[g]));
                        )
                        if (!leave) {
                            uint op4 = op - OP_ADD_X4M + OP_ADD_X4;
                            uint base = min(d, 28u);
                            uint src = min(ib, 28u);
                            VM_EACH(
                                uvec4 q[4];
                                vm_load4(desc, index[g], bvec4(true), q[0], q[1], q[2], q[3]);
                                uvec4 s[4];
                                [[unroll]] for (uint k = 0u; k < 4u; k++) {
                                    s[k] = VM_R(src + k, g);
                                }
                                [[unroll]] for (uint k = 0u; k < 4u; k++) {
                                    VM_R(base + k, g) = vm_lanewise4(op4, q[k], s[k]);
                                }
                            )
                        }
                    } else switch (op) {
                    case OP_NOP:
                        break;
                    case OP_JMP:
                        next = imm;
                        break;
                    case OP_BRZ:
                    case OP_BRNZ: {
                        // Taken where: brz r[a] == 0, brnz r[a] != 0.
                        bool all_taken = true;
                        bool any_taken = false;
                        VM_EACH(
                            uvec4 a = VM_R(ia, g);
                            bvec4 taken = op == OP_BRZ ? equal(a, uvec4(0u)) : notEqual(a, uvec4(0u));
                            all_taken = all_taken && all(taken);
                            any_taken = any_taken || any(taken);
                        )
                        if (all_taken != any_taken) {
                            leave = true;
                        } else {
                            next = all_taken ? imm : next;
                        }
                        break;
                    }
                    #define VM_PUT(dd, g, v) VM_R(dd, g) = (v);
                    VM_CHEAP_OPS
                    #undef VM_PUT
                    case OP_LD32:
                    case OP_LD8:
                    case OP_ST32:
                    case OP_LD32X4:
                    case OP_ST32X4: {
                        VmBuffer desc = s_vm_table[imm & 7u];
                        VM_EACH(
                            uvec4 index = VM_R(ia, g);
                            bool x4 = op == OP_LD32X4 || op == OP_ST32X4;
                            leave = leave || !all(x4 ? vm_in_range4(desc, index)
                                                     : vm_in_range(desc, index, op == OP_LD8 ? 0u : 2u));
                        )
                        if (leave) {
                            break;
                        }
                        uint base = min(op == OP_LD32X4 ? d : ib, 28u);
                        VM_EACH(
                            uvec4 index = VM_R(ia, g);
                            if (op == OP_LD32) {
                                VM_R(d, g) = vm_load32(desc, index, bvec4(true));
                            } else if (op == OP_LD8) {
                                VM_R(d, g) = vm_load8(desc, index, bvec4(true));
                            } else if (op == OP_ST32) {
                                vm_store32(desc, index, VM_R(ib, g), bvec4(true));
                            } else if (op == OP_LD32X4) {
                                vm_load4(desc, index, bvec4(true), VM_R(base, g), VM_R(base + 1u, g),
                                         VM_R(base + 2u, g), VM_R(base + 3u, g));
                            } else {
                                vm_store4(desc, index, bvec4(true), VM_R(base, g), VM_R(base + 1u, g),
                                          VM_R(base + 2u, g), VM_R(base + 3u, g));
                            }
                        )
                        break;
                    }
                    default:
                        leave = true;
                        break;
                    }
                    if (!leave) {
                        cpc = next;
                        burned += 1u;
                    }
                }
                VM_EACH(
                    fuelv[g] -= uvec4(burned);
                    pcv[g] = uvec4(cpc);
                )
                conv = false;
            }
            uint pc = VM_NONE;
            VM_EACH(
                uvec4 live = mix(uvec4(VM_NONE), pcv[g], equal(stv[g], uvec4(VM_RUNNING)));
                pc = min(pc, min(min(live.x, live.y), min(live.z, live.w)));
            )
            if (pc == VM_NONE) {
                break;
            }
            VM_EACH(
                m[g] = vm_and(equal(pcv[g], uvec4(pc)), equal(stv[g], uvec4(VM_RUNNING)));
                bvec4 starved = vm_and(m[g], equal(fuelv[g], uvec4(0u)));
                if (any(starved)) {
                    VM_FAULT(g, starved, STATUS_FAULT_FUEL, uvec4(0u));
                    m[g] = vm_and(m[g], not(starved));
                }
                fuelv[g] -= uvec4(m[g]);
                nextv[g] = uvec4(pc + 1u);
            )
            uvec2 insn = VM_INSN(pc);
            uint w0 = insn.x;
            uint imm = insn.y;
            uint op = w0 & 0xFFu;
            uint d = (w0 >> 8) & 31u;
            uint ia = (w0 >> 16) & 31u;
            uint ib = (w0 >> 24) & 31u;
            switch (op) {
            case OP_NOP:
                break;
            case OP_HALT:
                VM_EACH(stv[g] = mix(stv[g], uvec4(VM_HALTED), m[g]);)
                break;
            case OP_JMP:
                VM_EACH(nextv[g] = uvec4(imm);)
                break;
            case OP_BRZ:
                VM_EACH(nextv[g] = mix(nextv[g], uvec4(imm), equal(VM_R(ia, g), uvec4(0u)));)
                break;
            case OP_BRNZ:
                VM_EACH(nextv[g] = mix(nextv[g], uvec4(imm), notEqual(VM_R(ia, g), uvec4(0u)));)
                break;
            case OP_LOOP:
                VM_EACH(
                    uvec4 limit = VM_R(ib, g);
                    uvec4 count = VM_R(d, g) + VM_R(ia, g);
                    VM_SET(g, count);
                    nextv[g] = mix(nextv[g], uvec4(imm), lessThan(count, limit));
                )
                break;
            #define VM_PUT(dd, g, v) VM_SET_MASKED(dd, g, v, m[g])
            VM_PURE_OPS
            #undef VM_PUT
            case OP_DIVU:
            case OP_DIVS:
            case OP_REMU:
            case OP_REMS:
                VM_EACH(
                    uvec4 a = VM_R(ia, g);
                    uvec4 b = VM_R(ib, g);
                    bvec4 zero = vm_and(m[g], equal(b, uvec4(0u)));
                    if (any(zero)) {
                        VM_FAULT(g, zero, STATUS_FAULT_DIVIDE_BY_ZERO, uvec4(0u));
                    }
                    ivec4 sa = ivec4(a);
                    // Divisors that cannot trap: 1 for zero, and for -1 (whose results are
                    // selected below: INT_MIN / -1 wraps to INT_MIN, x rem -1 is 0).
                    bvec4 minus_one = equal(b, uvec4(0xFFFFFFFFu));
                    uvec4 safe = max(b, uvec4(1u));
                    ivec4 ssafe = mix(ivec4(safe), ivec4(1), minus_one);
                    uvec4 value;
                    if (op == OP_DIVU) {
                        value = a / safe;
                    } else if (op == OP_REMU) {
                        value = a % safe;
                    } else if (op == OP_DIVS) {
                        value = mix(uvec4(sa / ssafe), uvec4(-sa), minus_one);
                    } else {
                        value = mix(uvec4(sa - (sa / ssafe) * ssafe), uvec4(0u), minus_one);
                    }
                    VM_SET_MASKED(d, g, value, vm_and(m[g], not(zero)));
                )
                break;
            case OP_LD32:
            case OP_LD8:
            case OP_ST32:
            case OP_ST8:
            case OP_ATOMIC_ADD:
            case OP_ATOMIC_MIN:
            case OP_ATOMIC_MAX:
            case OP_ATOMIC_AND:
            case OP_ATOMIC_OR:
            case OP_ATOMIC_XOR:
            case OP_ATOMIC_XCHG:
            case OP_ATOMIC_CAS: {
                VmBuffer desc = s_vm_table[imm & 7u];
                VmWords words = VmWords(desc.address);
                bool bytes = op == OP_LD8 || op == OP_ST8;
                VM_EACH(
                    uvec4 index = VM_R(ia, g);
                    uvec4 value = VM_R(ib, g);
                    bvec4 inside = vm_in_range(desc, index, bytes ? 0u : 2u);
                    bvec4 outside = vm_and(m[g], not(inside));
                    if (any(outside)) {
                        VM_FAULT(g, outside, STATUS_FAULT_OUT_OF_RANGE, index);
                    }
                    bvec4 go = vm_and(m[g], inside);
                    if (op == OP_LD32) {
                        VM_SET_MASKED(d, g, vm_load32(desc, index, go), go);
                    } else if (op == OP_LD8) {
                        VM_SET_MASKED(d, g, vm_load8(desc, index, go), go);
                    } else if (op == OP_ST32) {
                        vm_store32(desc, index, value, go);
                    } else if (op == OP_ST8) {
                        // Leave the word's other bytes alone, even under other lanes' writes.
                        [[unroll]] for (uint c = 0u; c < 4u; c++) {
                            if (go[c]) {
                                uint shift = (index[c] & 3u) * 8u;
                                atomicAnd(words.v[index[c] >> 2], ~(0xFFu << shift));
                                atomicOr(words.v[index[c] >> 2], (value[c] & 0xFFu) << shift);
                            }
                        }
                    } else {
                        uvec4 compare = VM_R(d, g);
                        uvec4 got = uvec4(0u);
                        [[unroll]] for (uint c = 0u; c < 4u; c++) {
                            if (go[c]) got[c] = vm_atomic(op, words, index[c], value[c], compare[c]);
                        }
                        VM_SET_MASKED(d, g, got, go);
                    }
                )
                break;
            }
            case OP_LD32X4:
            case OP_ST32X4:
            case OP_ADD_X4M:
            case OP_SUB_X4M:
            case OP_MUL_X4M:
            case OP_AND_X4M:
            case OP_OR_X4M:
            case OP_XOR_X4M:
            case OP_FADD_X4M:
            case OP_FSUB_X4M:
            case OP_FMUL_X4M: {
                // Four consecutive elements per VM lane: one 16-byte access where aligned.
                // The register groups are clamped to r28..r31 (the verifier already did).
                // The x4m ops load like ld32x4, then apply their x4 op to the loaded group
                // and the group at b.
                VmBuffer desc = s_vm_table[imm & 7u];
                uint base = min(op == OP_ST32X4 ? ib : d, 28u);
                uint src = min(ib, 28u);
                VM_EACH(
                    uvec4 index = VM_R(ia, g);
                    bvec4 inside = vm_in_range4(desc, index);
                    bvec4 outside = vm_and(m[g], not(inside));
                    if (any(outside)) {
                        VM_FAULT(g, outside, STATUS_FAULT_OUT_OF_RANGE, index);
                    }
                    bvec4 go = vm_and(m[g], inside);
                    if (op != OP_ST32X4) {
                        uvec4 k[4];
                        vm_load4(desc, index, go, k[0], k[1], k[2], k[3]);
                        if (op != OP_LD32X4) {
                            uvec4 s[4];
                            [[unroll]] for (uint c = 0u; c < 4u; c++) {
                                s[c] = VM_R(src + c, g);
                            }
                            [[unroll]] for (uint c = 0u; c < 4u; c++) {
                                k[c] = vm_lanewise4(op - OP_ADD_X4M + OP_ADD_X4, k[c], s[c]);
                            }
                        }
                        VM_SET_MASKED(base, g, k[0], go);
                        VM_SET_MASKED(base + 1u, g, k[1], go);
                        VM_SET_MASKED(base + 2u, g, k[2], go);
                        VM_SET_MASKED(base + 3u, g, k[3], go);
                    } else {
                        vm_store4(desc, index, go, VM_R(base, g), VM_R(base + 1u, g), VM_R(base + 2u, g),
                                  VM_R(base + 3u, g));
                    }
                )
                break;
            }
            case OP_RESULT:
                // Lane 0's write counts: sub-lane 0 of invocation 0.
                if (lane == 0u && m[0].x) {
                    results[imm & 3u] = VM_R(ia, 0).x;
                }
                break;
            case OP_RED_ADD:
            case OP_RED_MIN:
            case OP_RED_MAX:
            case OP_RED_FMIN:
            case OP_RED_FMAX:
                VM_EACH(
                    stv[g] = mix(stv[g], uvec4(VM_AT_REDUCTION), m[g]);
                    fdet[g] = mix(fdet[g], VM_R(ia, g), m[g]);
                )
                break;
            default:
                VM_EACH(VM_FAULT(g, m[g], STATUS_FAULT_BAD_INSTRUCTION, uvec4(op));)
                break;
            }
            // Lanes still running move on; stopped ones keep their program counter.
            VM_EACH(pcv[g] = mix(pcv[g], nextv[g], vm_and(m[g], equal(stv[g], uvec4(VM_RUNNING))));)
            // Converged again where every lane runs at the same pc.
            bool together = true;
            uint least = VM_NONE;
            VM_EACH(
                together = together && all(equal(stv[g], uvec4(VM_RUNNING))) && all(equal(pcv[g], pcv[0].xxxx));
                least = min(least, min(min(fuelv[g].x, fuelv[g].y), min(fuelv[g].z, fuelv[g].w)));
            )
            if (VM_CONVERGED && together) {
                conv = true;
                cpc = pcv[0].x;
                headroom = least;
                burned = 0u;
            }
        }

        // Phase end: summarise this invocation's lanes (in lane order) ...
        uint fsub = VM_NONE;
        uint fstatus = 0u;
        uint fpc = 0u;
        uint fdetail = 0u;
        uint wsub = VM_NONE;
        uint wpc = 0u;
        uint wvalue = 0u;
        uint wop = 0u;
        uint div = VM_NONE;
        [[unroll]] for (uint g = 0u; g < VM_MAX_GROUPS; g++) {
            [[unroll]] for (uint c = 0u; c < 4u; c++) {
                uint sub = 4u * g + c;
                if (g < VM_GROUPS) {
                    if (stv[g][c] == VM_FAULTED && fsub == VM_NONE) {
                        fsub = sub;
                        fstatus = fstat[g][c];
                        fpc = pcv[g][c];
                        fdetail = fdet[g][c];
                    }
                    if (stv[g][c] == VM_AT_REDUCTION) {
                        if (wsub == VM_NONE) {
                            wsub = sub;
                            wpc = pcv[g][c];
                            wvalue = fdet[g][c];
                            wop = VM_INSN(wpc).x & 0xFFu;
                        } else if (pcv[g][c] != wpc) {
                            div = div == VM_NONE ? (pcv[g][c] << 8) | sub : div;
                        } else {
                            wvalue = vm_combine(wop, wvalue, fdet[g][c]);
                        }
                    }
                }
            }
        }
        bool faulted = fsub != VM_NONE;
        s_vm_state[lane] = faulted ? VM_FAULTED + fstatus : (wsub != VM_NONE ? VM_AT_REDUCTION : VM_HALTED);
        s_vm_pc[lane] = faulted ? fpc : wpc;
        s_vm_value[lane] = faulted ? fdetail : wvalue;
        s_vm_sub[lane] = faulted ? fsub : wsub;
        s_vm_div[lane] = div;
        // The common phase ends (every lane halted, or all waiting at one integer reduction)
        // need no scan: fold what they need with shared atomics.
        uint p = phase & 1u;
        bool waits = !faulted && wsub != VM_NONE;
        bool integer = wop == OP_RED_ADD || wop == OP_RED_MIN || wop == OP_RED_MAX;
        if (faulted || div != VM_NONE || (waits && !integer)) {
            atomicOr(s_vm_fast[p][VM_FAST_COMPLEX], 1u);
        } else if (waits) {
            atomicMin(s_vm_fast[p][VM_FAST_PC_LO], wpc);
            atomicMax(s_vm_fast[p][VM_FAST_PC_HI], wpc);
            if (wop == OP_RED_ADD) {
                atomicAdd(s_vm_fast[p][VM_FAST_SUM], wvalue);
            } else if (wop == OP_RED_MIN) {
                atomicMin(s_vm_fast[p][VM_FAST_MIN], wvalue);
            } else {
                atomicMax(s_vm_fast[p][VM_FAST_MAX], wvalue);
            }
        }
        memoryBarrierShared();
        barrier();
        // ... then every invocation reaches the same decision from all summaries.
        uint fault_lane = VM_NONE;
        uint first = VM_NONE;
        uint diverged = VM_NONE; // the first lane (VM numbering) at another reduction
        uint diverged_pc = 0u;
        uint value = 0u;
        uint red_pc = 0u;
        uint red_op = 0u;
        uint pc_lo = s_vm_fast[p][VM_FAST_PC_LO];
        bool fast = s_vm_fast[p][VM_FAST_COMPLEX] == 0u
            && (pc_lo == VM_NONE || pc_lo == s_vm_fast[p][VM_FAST_PC_HI]);
        if (fast && pc_lo != VM_NONE) {
            // All waiting lanes stand at one integer reduction: their fold in any order.
            first = 0u;
            red_pc = pc_lo;
            red_op = VM_INSN(red_pc).x & 0xFFu;
            uint fold = red_op == OP_RED_ADD ? VM_FAST_SUM : (red_op == OP_RED_MIN ? VM_FAST_MIN : VM_FAST_MAX);
            value = s_vm_fast[p][fold];
        }
        if (!fast) {
            [[unroll]] for (uint k = 0u; k < MAX_LANES; k++) {
                if (k < LANES) {
                    uint st = s_vm_state[k];
                    if (st >= VM_FAULTED && fault_lane == VM_NONE) {
                        fault_lane = k;
                    }
                    if (st == VM_AT_REDUCTION) {
                        uint inner = s_vm_div[k];
                        if (first == VM_NONE) {
                            first = k;
                            red_pc = s_vm_pc[k];
                            value = s_vm_value[k];
                            red_op = VM_INSN(red_pc).x & 0xFFu;
                        } else if (s_vm_pc[k] != red_pc) {
                            if (diverged == VM_NONE) {
                                diverged = k * VM_SUBLANES + s_vm_sub[k];
                                diverged_pc = s_vm_pc[k];
                            }
                            inner = VM_NONE;
                        } else {
                            value = vm_combine(red_op, value, s_vm_value[k]);
                        }
                        if (inner != VM_NONE && diverged == VM_NONE) {
                            diverged = k * VM_SUBLANES + (inner & 0xFFu);
                            diverged_pc = inner >> 8;
                        }
                    }
                }
            }
        }
        bool leave = true;
        if (fault_lane != VM_NONE) {
            status = s_vm_state[fault_lane] - VM_FAULTED;
            results = uvec4(s_vm_pc[fault_lane], fault_lane * VM_SUBLANES + s_vm_sub[fault_lane],
                            s_vm_value[fault_lane], 0u);
        } else if (first == VM_NONE) {
            // every lane halted: status OK, results as lane 0 wrote them
        } else if (diverged != VM_NONE) {
            status = STATUS_FAULT_DIVERGED;
            results = uvec4(red_pc, diverged, diverged_pc, 0u);
        } else {
            leave = false;
            uint dst = (VM_INSN(red_pc).x >> 8) & 31u;
            VM_EACH(
                bvec4 waiting = equal(stv[g], uvec4(VM_AT_REDUCTION));
                VM_SET_MASKED(dst, g, uvec4(value), waiting);
                pcv[g] += uvec4(waiting);
                stv[g] = mix(stv[g], uvec4(VM_RUNNING), waiting);
            )
        }
        if (lane == 0u) {
            vm_fast_reset(p ^ 1u); // the next phase's set: the last phase read it before its end
        }
        phase += 1u;
        memoryBarrierShared();
        barrier(); // the shared summaries are rewritten by the next phase
        if (leave) {
            break;
        }
    }
    #undef VM_SET
    #undef VM_SET_MASKED
    #undef VM_FAULT
    #undef VM_EACH
    #undef VM_R
    #undef VM_INSN
}

#endif
