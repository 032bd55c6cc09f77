// The GPU bytecode interpreter (docs/bytecode.md), behind the job seam: run_job calls
// run_vm for JOB_VM jobs. It implements the semantics of the CPU reference interpreter
// (src/vm/interp.rs) and is tested against it. Opcodes come from the generated
// protocol.glsl, the same definitions the host's assembler and verifier use.
//
// Phases: every lane interprets on its own until it halts, faults, runs out of fuel or
// reaches a reduction; then all lanes meet at a barrier and every lane computes the same
// decision from shared memory with an unrolled scan (no loop inside a lane-0-only branch,
// and no loop iterations for lavapipe to count). The program was verified on the host;
// the device still bounds-checks every memory access and stops at fuel exhaustion.
#ifndef MEGARING_VM_GLSL
#define MEGARING_VM_GLSL

#include "ring.glsl"

layout(buffer_reference, std430, buffer_reference_align = 4) coherent readonly buffer VmProgramRef {
    uint w[];
};
layout(buffer_reference, std430, buffer_reference_align = 16) coherent readonly buffer VmTableRef {
    VmBuffer b[];
};
layout(buffer_reference, std430, buffer_reference_align = 4) coherent buffer VmWords {
    uint v[];
};

const uint VM_RUNNING = 0u;
const uint VM_AT_REDUCTION = 1u;
const uint VM_HALTED = 2u;
const uint VM_FAULTED = 3u;

// The job's program (its first VM_SHARED_PROGRAM instructions) and buffer table, copied
// once per job (see VM_SHARED_PROGRAM in src/protocol.rs).
shared uint s_vm_prog[2 * VM_SHARED_PROGRAM];
shared VmBuffer s_vm_table[VM_MAX_BUFFERS];

shared uint s_vm_state[MAX_LANES];
shared uint s_vm_pc[MAX_LANES];
shared uint s_vm_value[MAX_LANES];

// Whether element `index` of `size` bytes lies inside the buffer `desc`.
bool vm_in_range(VmBuffer desc, uint index, uint size) {
    return uint64_t(index) * uint64_t(size) + uint64_t(size) <= desc.bytes;
}

float vm_f(uint x) { return uintBitsToFloat(x); }
uint vm_u(float x) { return floatBitsToUint(x); }

uint vm_fmin(uint x, uint y) { return (isnan(vm_f(x)) || vm_f(y) < vm_f(x)) ? y : x; }
uint vm_fmax(uint x, uint y) { return (isnan(vm_f(x)) || vm_f(y) > vm_f(x)) ? y : x; }

uint vm_f2u(uint x) {
    float v = vm_f(x);
    uint out_value = 0u;
    if (!isnan(v) && v > 0.0) {
        out_value = v >= 4294967296.0 ? 0xFFFFFFFFu : uint(v);
    }
    return out_value;
}

uint vm_f2i(uint x) {
    float v = vm_f(x);
    int out_value = 0;
    if (!isnan(v)) {
        out_value = v >= 2147483648.0 ? 2147483647 : (v < -2147483648.0 ? int(0x80000000u) : int(v));
    }
    return uint(out_value);
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
        out_value = isnan(vm_f(y)) ? x : vm_fmin(x, y);
    } else {
        out_value = isnan(vm_f(y)) ? x : vm_fmax(x, y);
    }
    return out_value;
}

void run_vm(SqEntry job, out uint status, out uvec4 results) {
    VmProgramRef prog = VmProgramRef(job.buf0);
    VmTableRef table = VmTableRef(job.buf1);
    uint lane = gl_LocalInvocationID.x;
    uint lanes = LANES;
    // Instruction word i (0: the first instruction's first word) of the program.
    #define VM_WORD(i) ((i) < 2u * cached ? s_vm_prog[(i)] : prog.w[VM_HEADER_WORDS + (i)])
    uint cached = min(prog.w[2], uint(VM_SHARED_PROGRAM));
    for (uint i = lane; i < 2u * cached; i += lanes) {
        s_vm_prog[i] = prog.w[VM_HEADER_WORDS + i];
    }
    for (uint k = lane; k < VM_MAX_BUFFERS; k += lanes) {
        s_vm_table[k] = table.b[k];
    }
    barrier();
    uint r[32];
    [[unroll]] for (uint k = 0u; k < 32u; k++) {
        r[k] = 0u;
    }
    uint pc = 0u;
    uint fuel = job.fuel;
    uint state = VM_RUNNING;
    uint detail = 0u;
    status = STATUS_OK;
    results = uvec4(0u);
    for (;;) {
        // Run this lane until it stops. Every iteration executes one instruction, so a
        // lane runs at most `fuel` iterations over the whole job.
        while (state == VM_RUNNING) {
            if (fuel == 0u) {
                state = VM_FAULTED;
                detail = 0u;
                status = STATUS_FAULT_FUEL;
                break;
            }
            fuel -= 1u;
            uint w0 = VM_WORD(2u * pc);
            uint imm = VM_WORD(2u * pc + 1u);
            uint op = w0 & 0xFFu;
            uint d = (w0 >> 8) & 31u;
            uint va = r[(w0 >> 16) & 31u];
            uint vb = r[(w0 >> 24) & 31u];
            uint next = pc + 1u;
            if (op >= OP_RED_ADD && op <= OP_RED_FMAX) {
                state = VM_AT_REDUCTION;
                detail = va;
                break;
            }
            if (op == OP_LOOP) {
                uint count = r[d] + va;
                r[d] = count;
                next = count < vb ? imm : next;
            } else if (op <= OP_SEL) {
                if (op == OP_HALT) {
                    state = VM_HALTED;
                } else if (op == OP_JMP) {
                    next = imm;
                } else if (op == OP_BRZ) {
                    next = va == 0u ? imm : next;
                } else if (op == OP_BRNZ) {
                    next = va != 0u ? imm : next;
                } else if (op == OP_MOVI) {
                    r[d] = imm;
                } else if (op == OP_MOV) {
                    r[d] = va;
                } else if (op == OP_SEL) {
                    r[d] = r[imm & 31u] != 0u ? va : vb;
                }
            } else if (op <= OP_LES) {
                if ((op >= OP_DIVU && op <= OP_REMS) && vb == 0u) {
                    state = VM_FAULTED;
                    status = STATUS_FAULT_DIVIDE_BY_ZERO;
                    detail = 0u;
                } else {
                    int sa = int(va);
                    int sb = int(vb);
                    uint v = 0u;
                    if (op == OP_ADD) v = va + vb;
                    else if (op == OP_SUB) v = va - vb;
                    else if (op == OP_MUL) v = va * vb;
                    else if (op == OP_DIVU) v = va / vb;
                    else if (op == OP_DIVS) v = (sa == int(0x80000000u) && sb == -1) ? va : uint(sa / sb);
                    else if (op == OP_REMU) v = va % vb;
                    else if (op == OP_REMS) v = (sb == -1) ? 0u : uint(sa - (sa / sb) * sb);
                    else if (op == OP_AND) v = va & vb;
                    else if (op == OP_OR) v = va | vb;
                    else if (op == OP_XOR) v = va ^ vb;
                    else if (op == OP_SHL) v = va << (vb & 31u);
                    else if (op == OP_SHRU) v = va >> (vb & 31u);
                    else if (op == OP_SHRS) v = uint(sa >> int(vb & 31u));
                    else if (op == OP_MINU) v = min(va, vb);
                    else if (op == OP_MAXU) v = max(va, vb);
                    else if (op == OP_MINS) v = uint(min(sa, sb));
                    else if (op == OP_MAXS) v = uint(max(sa, sb));
                    else if (op == OP_ADDI) v = va + imm;
                    else if (op == OP_NOT) v = ~va;
                    else if (op == OP_EQ) v = uint(va == vb);
                    else if (op == OP_NE) v = uint(va != vb);
                    else if (op == OP_LTU) v = uint(va < vb);
                    else if (op == OP_LTS) v = uint(sa < sb);
                    else if (op == OP_LEU) v = uint(va <= vb);
                    else v = uint(sa <= sb); // OP_LES
                    r[d] = v;
                }
            } else if (op <= OP_F2I) {
                float fa = vm_f(va);
                float fb = vm_f(vb);
                uint v = 0u;
                if (op == OP_FADD) v = vm_u(fa + fb);
                else if (op == OP_FSUB) v = vm_u(fa - fb);
                else if (op == OP_FMUL) v = vm_u(fa * fb);
                else if (op == OP_FDIV) v = vm_u(fa / fb);
                else if (op == OP_FMIN) v = vm_fmin(va, vb);
                else if (op == OP_FMAX) v = vm_fmax(va, vb);
                else if (op == OP_FSQRT) v = vm_u(sqrt(fa));
                else if (op == OP_FLT) v = uint(fa < fb);
                else if (op == OP_FLE) v = uint(fa <= fb);
                else if (op == OP_FEQ) v = uint(fa == fb);
                else if (op == OP_U2F) v = vm_u(float(va));
                else if (op == OP_I2F) v = vm_u(float(int(va)));
                else if (op == OP_F2U) v = vm_f2u(va);
                else v = vm_f2i(va); // OP_F2I
                r[d] = v;
            } else if (op <= OP_ATOMIC_CAS) {
                bool bytes = op == OP_LD8 || op == OP_ST8;
                VmBuffer desc = s_vm_table[imm & 7u];
                if (!vm_in_range(desc, va, bytes ? 1u : 4u)) {
                    state = VM_FAULTED;
                    status = STATUS_FAULT_OUT_OF_RANGE;
                    detail = va;
                } else {
                    VmWords words = VmWords(desc.address);
                    uint offset = bytes ? va : va * 4u;
                    uint word = offset >> 2;
                    uint shift = (offset & 3u) * 8u;
                    if (op == OP_LD32 || op == OP_LD8) {
                        uint w = words.v[word];
                        r[d] = op == OP_LD32 ? w : (w >> shift) & 0xFFu;
                    }
                    else if (op == OP_ST32) words.v[word] = vb;
                    else if (op == OP_ST8) {
                        // Leave the word's other bytes alone, even under other lanes' writes.
                        atomicAnd(words.v[word], ~(0xFFu << shift));
                        atomicOr(words.v[word], (vb & 0xFFu) << shift);
                    }
                    else if (op == OP_ATOMIC_ADD) r[d] = atomicAdd(words.v[word], vb);
                    else if (op == OP_ATOMIC_MIN) r[d] = atomicMin(words.v[word], vb);
                    else if (op == OP_ATOMIC_MAX) r[d] = atomicMax(words.v[word], vb);
                    else if (op == OP_ATOMIC_AND) r[d] = atomicAnd(words.v[word], vb);
                    else if (op == OP_ATOMIC_OR) r[d] = atomicOr(words.v[word], vb);
                    else if (op == OP_ATOMIC_XOR) r[d] = atomicXor(words.v[word], vb);
                    else if (op == OP_ATOMIC_XCHG) r[d] = atomicExchange(words.v[word], vb);
                    else r[d] = atomicCompSwap(words.v[word], r[d], vb); // OP_ATOMIC_CAS
                }
            } else if (op == OP_LANE) {
                r[d] = lane;
            } else if (op == OP_LANES) {
                r[d] = lanes;
            } else if (op == OP_GRID) {
                r[d] = job.len;
            } else if (op == OP_TILE_BEGIN) {
                r[d] = job.tile_begin;
            } else if (op == OP_ARG) {
                r[d] = imm == 0u ? job.arg0 : (imm == 1u ? job.arg1 : (imm == 2u ? job.arg2 : job.arg3));
            } else if (op == OP_BUFLEN) {
                r[d] = uint(s_vm_table[imm & 7u].bytes);
            } else if (op == OP_RESULT) {
                if (lane == 0u) {
                    results[imm & 3u] = va;
                }
            } else {
                state = VM_FAULTED;
                status = STATUS_FAULT_BAD_INSTRUCTION;
                detail = op;
            }
            if (state != VM_FAULTED) {
                pc = next;
            }
        }
        // Phase end: publish this lane's state; every lane then reaches the same decision.
        s_vm_state[lane] = state == VM_FAULTED ? VM_FAULTED + status : state;
        s_vm_pc[lane] = pc;
        s_vm_value[lane] = detail; // the reduction operand, or the fault's detail
        memoryBarrierShared();
        barrier();
        uint fault_lane = 0xFFFFFFFFu;
        uint first = 0xFFFFFFFFu;
        uint diverged = 0xFFFFFFFFu;
        uint value = 0u;
        uint red_pc = 0u;
        [[unroll]] for (uint k = 0u; k < MAX_LANES; k++) {
            if (k < lanes) {
                uint st = s_vm_state[k];
                if (st >= VM_FAULTED && fault_lane == 0xFFFFFFFFu) {
                    fault_lane = k;
                }
                if (st == VM_AT_REDUCTION) {
                    if (first == 0xFFFFFFFFu) {
                        first = k;
                        red_pc = s_vm_pc[k];
                        value = s_vm_value[k];
                    } else if (s_vm_pc[k] != red_pc) {
                        diverged = diverged == 0xFFFFFFFFu ? k : diverged;
                    } else {
                        value = vm_combine(VM_WORD(2u * red_pc) & 0xFFu, value, s_vm_value[k]);
                    }
                }
            }
        }
        bool leave = true;
        if (fault_lane != 0xFFFFFFFFu) {
            status = s_vm_state[fault_lane] - VM_FAULTED;
            results = uvec4(s_vm_pc[fault_lane], fault_lane, s_vm_value[fault_lane], 0u);
        } else if (first == 0xFFFFFFFFu) {
            // every lane halted: status OK, results as lane 0 wrote them
        } else if (diverged != 0xFFFFFFFFu) {
            status = STATUS_FAULT_DIVERGED;
            results = uvec4(red_pc, diverged, s_vm_pc[diverged], 0u);
        } else {
            leave = false;
            if (state == VM_AT_REDUCTION) {
                r[(VM_WORD(2u * pc) >> 8) & 31u] = value;
                pc += 1u;
                state = VM_RUNNING;
            }
        }
        barrier(); // the shared state is rewritten by the next phase
        if (leave) {
            break;
        }
    }
    #undef VM_WORD
}

#endif
