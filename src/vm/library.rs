//! Programs shipped with the crate, written in the bytecode's assembly language. Each runs
//! on one workgroup over its job's elements `tile.begin .. grid`, lanes striding, and
//! runs tiled (`Runtime::submit_tiled`): tiles' results combine with
//! [`LibraryProgram::combine`], `count-literal`'s tables with [`literal_chain`]. Their results are tested against independent CPU computations
//! (`tests/vm_library.rs`).

use super::{assemble, verify, VerifiedProgram, VmError};

/// A tileable program's source: the prologue every one starts with (r1 = this lane's
/// first element, r2 = one past the tile's last, r3 = lanes), then the body.
macro_rules! tiled {
    ($($body:expr),+ $(,)?) => {
        concat!(
            "
        tile.begin r30
        lane r1
        add r1, r1, r30
        grid r2
        lanes r3
",
            $($body),+
        )
    };
}

/// Source of a program counting one byte value, loaded into r8 by `$load`. It reads
/// whole u32 words where it can (four bytes per load, counted with SWAR arithmetic: no
/// per-byte branch) and single bytes at the tile's unaligned head and tail.
macro_rules! count_byte_source {
    ($load:literal) => {
        concat!(
            "        ",
            $load,
            "
        tile.begin r30
        grid r2
        lanes r3
        lane r9
        movi r20, 0x01010101
        movi r5, 255
        and r8, r8, r5
        mul r21, r8, r20      ; the byte in every lane of a word
        movi r22, 0x7F7F7F7F
        movi r23, 0x80808080
        movi r24, 2
        movi r25, 7
        movi r26, 24
        ; words wb .. we hold whole bytes of the tile; bytes before and after go one by one
        addi r10, r30, 3
        shru r10, r10, r24
        shru r11, r2, r24
        maxu r11, r11, r10
        shl r14, r10, r24
        minu r14, r14, r2     ; head: tile.begin .. min(4 wb, grid)
        add r1, r30, r9
    head: ltu r4, r1, r14
        brz r4, words
        ld8 r5, b0[r1]
        eq r5, r5, r8
        add r6, r6, r5
        add r1, r1, r3
        jmp head
    words: add r12, r10, r9
        ltu r4, r12, r11
        brz r4, tail
    word: ld32 r5, b0[r12]
        xor r5, r5, r21       ; matching bytes become 0
        and r13, r5, r22
        add r13, r13, r22
        or r13, r13, r5       ; high bit set in every non-zero byte
        not r13, r13
        and r13, r13, r23     ; high bit set in every zero byte
        shru r13, r13, r25
        mul r13, r13, r20
        shru r13, r13, r26    ; how many
        add r6, r6, r13
        loop r12, r3, r11, word
    tail: shl r1, r11, r24
        maxu r1, r1, r14
        add r1, r1, r9
    tbyte: ltu r4, r1, r2
        brz r4, done
        ld8 r5, b0[r1]
        eq r5, r5, r8
        add r6, r6, r5
        add r1, r1, r3
        jmp tbyte
    done: red.add r7, r6
        result 0, r7
        halt
"
        )
    };
}

/// Source of a program that walks its tile's u32 elements four at a time (`add.x4m`, `ld32x4`):
/// whole quads `q0 .. q1` (q0 = tile.begin rounded up to a multiple of 4, q1 = grid
/// rounded down), lane 4h + c at quad q0 + 4 (c lanes / 4 + h) (lane l where lanes is not
/// a multiple of 4), stepping 4 x lanes (r12 = the quad's first
/// element, r13 = the step, r11 = q1), and the at most three elements before q0 and after
/// q1 one at a time (r1 = the element). `$one` handles one element, `$quad` one quad
/// (ending in its `loop r12, r13, r11, quad`), `$done` follows both.
macro_rules! quads_source {
    ($setup:literal, $one:literal, $quad:literal, $done:literal) => {
        concat!(
            $setup,
            "
        tile.begin r30
        grid r2
        lanes r3
        lane r9
        movi r24, 2
        addi r10, r30, 3
        shru r10, r10, r24
        shl r10, r10, r24
        maxu r10, r10, r30    ; q0 (kept at tile.begin if rounding up wrapped)
        minu r10, r10, r2
        shru r11, r2, r24
        shl r11, r11, r24
        maxu r11, r11, r10    ; q1
        add r1, r30, r9
    head: ltu r4, r1, r10
        brz r4, quads
",
            $one,
            "        add r1, r1, r3
        jmp head
        ; lane 4h + c takes quad c * lanes / 4 + h of each round: on the GPU, where an
        ; invocation runs lanes 4h .. 4h + 3, each of its four loads is then one
        ; contiguous run across the invocations (lane numbers as-is if lanes % 4 != 0)
    quads: movi r14, 3
        and r15, r9, r14
        shru r12, r3, r24
        mul r15, r15, r12
        shru r12, r9, r24
        add r15, r15, r12
        and r14, r3, r14
        sel r12, r9, r15, r14
        shl r12, r12, r24
        add r12, r12, r10
        shl r13, r3, r24
        ltu r4, r12, r11
        brz r4, tail
    quad: ",
            $quad,
            "    tail: add r1, r11, r9
    tl: ltu r4, r1, r2
        brz r4, done
",
            $one,
            "        add r1, r1, r3
        jmp tl
    done: ",
            $done
        )
    };
}

/// A library program.
#[derive(Clone, Copy, Debug)]
pub struct LibraryProgram {
    /// Name, e.g. `count-byte`.
    pub name: &'static str,
    /// What it computes, its buffers, arguments and results.
    pub doc: &'static str,
    /// Buffers the job binds.
    pub buffers: usize,
    /// Instructions per element per lane (the loop body), for fuel estimates.
    pub per_element: u32,
    /// How the results of a grid's tiles combine (see `Runtime::submit_tiled`).
    pub combine: Combine,
    /// Assembly source.
    pub source: &'static str,
}

/// How a library program's per-tile results combine into the whole grid's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combine {
    /// Result 0 is a wrapping u32 sum over tiles.
    Add,
    /// Results 0 and 1 are the f32 minimum and maximum over tiles (NaN ignored).
    MinMaxF32,
    /// The program's output is in its buffers; results are unused.
    Memory,
    /// Results 0 and 1 are a tile's CRC-32 and byte count; tiles combine in GF(2) (zlib's
    /// `crc32_combine`).
    Crc32,
    /// Tiles chain through the per-lane tables each leaves in its scratch buffer
    /// ([`literal_chain`]); results alone combine only for one tile.
    LiteralChain,
}

impl LibraryProgram {
    /// Assembles and verifies the program.
    pub fn load(&self) -> Result<VerifiedProgram, VmError> {
        verify(&assemble(self.source)?, self.buffers)
    }

    /// Combines the result words of a grid's tiles, in tile order.
    pub fn combine(&self, tiles: &[[u32; 4]]) -> Option<[u32; 4]> {
        let mut out = [0u32; 4];
        match self.combine {
            Combine::Add => out[0] = tiles.iter().fold(0u32, |s, t| s.wrapping_add(t[0])),
            Combine::MinMaxF32 => {
                out[0] = tiles
                    .iter()
                    .fold(f32::INFINITY.to_bits(), |m, t| super::interp::fmin(m, t[0]));
                out[1] = tiles
                    .iter()
                    .fold(f32::NEG_INFINITY.to_bits(), |m, t| super::interp::fmax(m, t[1]));
            }
            Combine::Memory => {}
            Combine::Crc32 => {
                let mut whole = crc32fast::Hasher::new();
                for t in tiles {
                    whole.combine(&crc32fast::Hasher::new_with_initial_len(t[0], u64::from(t[1])));
                }
                out[0] = whole.finalize();
                out[1] = tiles.iter().fold(0u32, |s, t| s.wrapping_add(t[1]));
            }
            Combine::LiteralChain => return (tiles.len() == 1).then(|| tiles[0]),
        }
        Some(out)
    }

    /// Whether [`Runtime::submit_tiled`](crate::Runtime::submit_tiled) with results-only
    /// combining serves this program (everything but `count-literal`, whose tiles chain
    /// through memory).
    pub fn combines_results(&self) -> bool {
        self.combine != Combine::LiteralChain
    }

    /// Fuel enough for `grid` elements on `lanes` lanes (for `count-literal`, a one-byte
    /// literal: see [`literal_fuel`]).
    pub fn fuel(&self, grid: u32, lanes: u32) -> u32 {
        let body = grid.div_ceil(lanes.max(1)).saturating_mul(self.per_element);
        let setup = match self.combine {
            // Shifting a lane's CRC by x^(8n): 10 instructions per bit of n; unaligned ends.
            Combine::Crc32 => 10 * (33 - grid.leading_zeros()) + 200,
            // Set-up, unaligned head and tail bytes, the reduction.
            _ => 96,
        };
        body.saturating_add(setup)
    }

    /// The largest tile (elements) whose [`fuel`](Self::fuel) fits `max_fuel`.
    pub fn max_tile(&self, lanes: u32, max_fuel: u32) -> u32 {
        largest_grid(|grid| self.fuel(grid, lanes), max_fuel)
    }
}

/// The largest grid whose fuel (non-decreasing in the grid, saturating at `u32::MAX`)
/// fits `max_fuel`.
fn largest_grid(fuel: impl Fn(u32) -> u32, max_fuel: u32) -> u32 {
    let (mut lo, mut hi) = (0u32, u32::MAX);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        let needed = fuel(mid);
        if needed <= max_fuel && needed < u32::MAX {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// Every library program.
pub const LIBRARY: &[LibraryProgram] = &[
    LibraryProgram {
        name: "sum-u32",
        doc: "Wrapping u32 sum of b0's grid u32 elements -> result 0.",
        buffers: 1,
        // 2 instructions per quad: add.x4m (a load added into four sums, r20..r23), loop.
        per_element: 1,
        combine: Combine::Add,
        source: quads_source!(
            "",
            "        ld32 r5, b0[r1]
        add r6, r6, r5
",
            "add.x4m r20, b0[r12], r20
        loop r12, r13, r11, quad
",
            "add r6, r6, r20
        add r6, r6, r21
        add r6, r6, r22
        add r6, r6, r23
        red.add r7, r6
        result 0, r7
        halt
"
        ),
    },
    LibraryProgram {
        name: "count-byte",
        doc: "Occurrences of byte arg 0 among b0's first grid bytes -> result 0.",
        buffers: 1,
        per_element: 3,
        combine: Combine::Add,
        source: count_byte_source!("arg r8, 0"),
    },
    LibraryProgram {
        name: "lines",
        doc: "Newlines (0x0A) among b0's first grid bytes, like `wc -l` -> result 0.",
        buffers: 1,
        per_element: 3,
        combine: Combine::Add,
        source: count_byte_source!("movi r8, 10"),
    },
    LibraryProgram {
        name: "histogram",
        doc: "Adds the counts of each byte value among b0's first grid bytes to b1's 256 u32 bins.",
        buffers: 2,
        per_element: 3,
        combine: Combine::Memory,
        source: tiled!(
            "        movi r6, 1
        ltu r4, r1, r2
        brz r4, done
    top: ld8 r5, b0[r1]
        atomic.add r31, b1[r5], r6
        loop r1, r3, r2, top
    done: halt
"
        ),
    },
    LibraryProgram {
        name: "minmax-f32",
        doc: "Minimum and maximum of b0's grid f32 elements, NaN ignored -> results 0 and 1 (f32 bits); \
              +inf and -inf for an empty grid.",
        buffers: 1,
        per_element: 4,
        combine: Combine::MinMaxF32,
        source: tiled!(
            "        movi r6, 0x7F800000   ; +inf
        movi r7, 0xFF800000   ; -inf
        ltu r4, r1, r2
        brz r4, done
    top: ld32 r5, b0[r1]
        fmin r6, r6, r5
        fmax r7, r7, r5
        loop r1, r3, r2, top
    done: red.fmin r8, r6
        red.fmax r9, r7
        result 0, r8
        result 1, r9
        halt
"
        ),
    },
    LibraryProgram {
        name: "saxpy",
        doc:
            "b1[i] = a * b0[i] + b1[i] for i < grid, a = arg 0 as f32 bits (multiply, then add: no fused multiply-add).",
        buffers: 2,
        // 4 instructions per quad: 1 per element.
        per_element: 2,
        combine: Combine::Memory,
        source: quads_source!(
            "        arg r8, 0
        mov r25, r8
        mov r26, r8
        mov r27, r8
        mov r28, r8
",
            "        ld32 r5, b0[r1]
        ld32 r6, b1[r1]
        fmul r5, r5, r8
        fadd r6, r6, r5
        st32 b1[r1], r6
",
            "fmul.x4m r16, b0[r12], r25
        fadd.x4m r20, b1[r12], r16
        st32x4 b1[r12], r20
        loop r12, r13, r11, quad
",
            "halt
"
        ),
    },
    LibraryProgram {
        name: "crc32",
        doc: "CRC-32 (IEEE, equal to zlib's crc32) of b0's bytes tile.begin .. grid -> result 0, and the byte \
              count -> result 1. b1 = crc32_x2n() (32 words), b2 = one \
              zeroed u32 per tile (the XOR accumulators), arg 1 = bytes per tile (0 untiled).",
        buffers: 3,
        per_element: 1,
        combine: Combine::Crc32,
        source: "
        ; crc32 of the job's bytes tile.begin .. grid: each lane takes a contiguous chunk (a
        ; multiple of 16 bytes), computes its raw CRC (lane 0 starts from 0xFFFFFFFF, the
        ; others from 0) with crc32.w over whole words (read four at a time with ld32x4)
        ; and crc32.b over unaligned ends,
        ; multiplies it by x^(8n) mod P where n is the number of bytes after the chunk, and
        ; the lanes XOR their results into the tile's word b2[tile.begin / arg 1]. CRC is
        ; linear in GF(2), so the XOR of the shifted parts is the tile's whole CRC.
        lane r1
        lanes r2
        grid r3
        tile.begin r30
        movi r23, 1
        arg r28, 1
        maxu r28, r28, r23
        divu r29, r30, r28
        sub r4, r3, r30
        add r4, r4, r2
        addi r4, r4, -1
        divu r4, r4, r2
        addi r4, r4, 15
        movi r10, 0xFFFFFFF0
        and r4, r4, r10
        mul r5, r1, r4
        add r5, r5, r30
        add r6, r5, r4
        minu r6, r6, r3
        minu r5, r5, r3
        movi r7, 0
        brnz r1, bytes
        movi r7, 0xFFFFFFFF
        ; single bytes up to a word boundary
    bytes: ltu r8, r5, r6
        brz r8, shift
        movi r10, 3
        and r10, r5, r10
        brz r10, words
        ld8 r9, b0[r5]
        crc32.b r7, r7, r9
        addi r5, r5, 1
        jmp bytes
        ; whole words r11 .. r12, then the tail's bytes
    words: movi r10, 2
        shru r11, r5, r10
        shru r12, r6, r10
        ; whole quads of words while r11 + 4 <= r12, then single words
        movi r21, 3
        maxu r20, r12, r21
        sub r20, r20, r21
        movi r22, 4
        ltu r8, r11, r20
        brz r8, single
    quad: ld32x4 r16, b0[r11]
        crc32.w r7, r7, r16
        crc32.w r7, r7, r17
        crc32.w r7, r7, r18
        crc32.w r7, r7, r19
        loop r11, r22, r20, quad
    single: shl r5, r11, r10
        ltu r8, r11, r12
        brz r8, tail
    word: ld32 r9, b0[r11]
        crc32.w r7, r7, r9
        loop r11, r23, r12, word
        shl r5, r11, r10
    tail: ltu r8, r5, r6
        brz r8, shift
        ld8 r9, b0[r5]
        crc32.b r7, r7, r9
        addi r5, r5, 1
        jmp tail
        ; r13 = x^(8 r12) mod P, one bit of r12 per round; the rounds run over the bits of
        ; r24 = the bytes after lane 0's chunk (the most of any lane), so every lane takes
        ; the same branches and the lanes stay in lock step
    shift: sub r12, r3, r6
        add r24, r30, r4
        minu r24, r24, r3
        sub r24, r3, r24
        movi r13, 0x80000000
        movi r14, 3
        movi r19, 31
    xn: brz r24, apply
        and r15, r12, r23
        and r16, r14, r19
        ld32 r17, b1[r16]
        crc32.mul r17, r17, r13
        sel r13, r17, r13, r15
        shru r12, r12, r23
        shru r24, r24, r23
        addi r14, r14, 1
        jmp xn
    apply: crc32.mul r7, r13, r7
    merge: atomic.xor r31, b2[r29], r7
        movi r25, 0
        red.add r26, r25
        ld32 r27, b2[r29]
        not r27, r27
        result 0, r27
        sub r27, r3, r30
        result 1, r27
        halt
",
    },
    LibraryProgram {
        name: "count-literal",
        doc: "Non-overlapping occurrences of b1's first `arg 0` bytes among b0's bytes tile.begin .. grid, like \
              Python's bytes.count -> result 0 (entering the tile at its first byte). A match may run past grid \
              up to byte `arg 2` (0: grid), so tiles see matches across their borders. b2: scratch of \
              2 * lanes * arg0 u32 words per tile, at tile tile.begin / arg 1 (arg 1 = bytes per tile, 0 \
              untiled): each lane's (count, overshoot) for every entry offset, which `literal_chain` links \
              across tiles.",
        buffers: 3,
        per_element: 40,
        combine: Combine::LiteralChain,
        source: "
        ; count-literal: non-overlapping occurrences of b1's first m = arg 0 bytes (m >= 1)
        ; among b0's bytes tile.begin .. grid, scanning greedily from the left like
        ; bytes.count. Each lane scans its contiguous chunk once per entry offset e < m
        ; (where the greedy scan may enter the chunk) and stores (count, overshoot past the
        ; chunk's end) in b2[base + 2 * (lane * m + e)], base = 2 * lanes * m * tile index;
        ; after a barrier, lane 0 chains the tile's lanes in order from entry 0.
        lane r1
        lanes r2
        grid r3
        arg r4, 0
        tile.begin r24
        arg r25, 2
        brnz r25, limit
        mov r25, r3
    limit: arg r26, 1
        movi r27, 1
        maxu r26, r26, r27
        divu r26, r24, r26
        mul r26, r26, r2
        mul r26, r26, r4
        add r26, r26, r26
        sub r5, r3, r24
        add r5, r5, r2
        addi r5, r5, -1
        divu r5, r5, r2
        mul r6, r1, r5
        add r6, r6, r24
        add r7, r6, r5
        minu r7, r7, r3
        minu r6, r6, r3
        movi r8, 0
    entry: ltu r9, r8, r4
        brz r9, chain
        add r10, r6, r8
        movi r11, 0
    scan: ltu r9, r10, r7
        brz r9, record
        movi r12, 0
    cmp: ltu r9, r12, r4
        brz r9, matched
        add r13, r10, r12
        ltu r9, r13, r25
        brz r9, nomatch
        ld8 r14, b0[r13]
        ld8 r15, b1[r12]
        ne r9, r14, r15
        brnz r9, nomatch
        addi r12, r12, 1
        jmp cmp
    matched: addi r11, r11, 1
        add r10, r10, r4
        jmp scan
    nomatch: addi r10, r10, 1
        jmp scan
    record: mul r16, r1, r4
        add r16, r16, r8
        add r16, r16, r16
        add r16, r16, r26
        st32 b2[r16], r11
        sub r17, r10, r7
        addi r16, r16, 1
        st32 b2[r16], r17
        addi r8, r8, 1
        jmp entry
    chain: movi r18, 0
        red.add r19, r18
        brnz r1, done
        movi r20, 0
        movi r21, 0
        movi r22, 0
    link: ltu r9, r20, r2
        brz r9, total
        mul r16, r20, r4
        add r16, r16, r21
        add r16, r16, r16
        add r16, r16, r26
        ld32 r23, b2[r16]
        add r22, r22, r23
        addi r16, r16, 1
        ld32 r21, b2[r16]
        addi r20, r20, 1
        jmp link
    total: result 0, r22
    done: halt
",
    },
];

/// The host-side table `crc32` needs (its b1): x^(2^k) mod P for k = 0..31 (zlib's
/// `x2n_table`), P the reflected polynomial `VM_CRC32_POLY`.
pub fn crc32_x2n() -> Vec<u32> {
    let mut x2n = vec![1u32 << 30]; // x^1
    for k in 1..32 {
        let prev = x2n[k - 1];
        x2n.push(crate::vm::interp::crc32_mul(prev, prev));
    }
    x2n
}

/// Fuel `count-literal` needs for `grid` bytes on `lanes` lanes with a literal of `m`
/// bytes: every lane scans its chunk once per entry offset, comparing up to `m` bytes per
/// position, and lane 0 links the lanes.
pub fn literal_fuel(grid: u32, lanes: u32, m: u32) -> u32 {
    let m = m.clamp(1, 1 << 12);
    // Per entry offset, at most chunk + 1 positions, each comparing up to m bytes (11
    // instructions a byte) plus 5 around them.
    let positions = grid.div_ceil(lanes.max(1)).saturating_add(1);
    positions
        .saturating_mul(m)
        .saturating_mul(11 * m + 5)
        .saturating_add(14 * m + 13 * lanes + 64)
}

/// The largest tile (bytes) whose [`literal_fuel`] fits `max_fuel`.
pub fn literal_max_tile(lanes: u32, m: u32, max_fuel: u32) -> u32 {
    largest_grid(|grid| literal_fuel(grid, lanes, m), max_fuel)
}

/// Links `count-literal`'s per-lane tables (the `b2` scratch of `tiles` consecutive tiles
/// run on `lanes` lanes for a literal of `m` bytes) in order, entering the first lane's chunk
/// `entry` bytes in. Returns the matches and the entry offset into whatever follows.
pub fn literal_chain(scratch: &[u32], lanes: u32, m: u32, tiles: usize, mut entry: u32) -> (u64, u32) {
    let mut count = 0u64;
    let m = m.max(1) as usize;
    for segment in 0..tiles * lanes as usize {
        let at = 2 * (segment * m + (entry as usize).min(m - 1));
        count += u64::from(scratch[at]);
        entry = scratch[at + 1];
    }
    (count, entry)
}

/// The library program called `name`.
pub fn library_program(name: &str) -> Option<&'static LibraryProgram> {
    LIBRARY.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_on_the_reference_interpreter_equals_zlib() {
        use crate::vm::interp::{run, Launch};
        let program = library_program("crc32").unwrap().load().unwrap();
        let x2n = crc32_x2n();
        for (len, lanes) in [(0usize, 8u32), (1, 8), (7, 8), (300, 8), (1000, 64), (513, 1)] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut padded = data.clone();
            padded.resize(len.div_ceil(4) * 4 + 4, 0);
            let mut buffers = vec![padded, bytemuck::cast_slice(&x2n).to_vec(), vec![0u8; 4]];
            let launch = Launch {
                lanes,
                grid: len as u32,
                tile_begin: 0,
                args: [0; 4],
                fuel: 100_000,
            };
            let out = run(&program, &launch, &mut buffers);
            assert_eq!(
                out.status,
                crate::ring::layout::STATUS_OK,
                "{len} bytes, {lanes} lanes: {out:?}"
            );
            assert_eq!(out.results[0], crc32fast::hash(&data), "{len} bytes, {lanes} lanes");
        }
    }

    /// Python's bytes.count: non-overlapping, greedy from the left.
    fn bytes_count(hay: &[u8], needle: &[u8]) -> u32 {
        let (mut i, mut n) = (0, 0);
        while i + needle.len() <= hay.len() {
            if &hay[i..i + needle.len()] == needle {
                n += 1;
                i += needle.len();
            } else {
                i += 1;
            }
        }
        n
    }

    #[test]
    fn count_literal_on_the_reference_interpreter_equals_bytes_count() {
        use crate::vm::interp::{run, Launch};
        let program = library_program("count-literal").unwrap().load().unwrap();
        let hay = b"aaaaabaaaaab abab ababab aaab abcabcabc aaaaaaaaaaaaaaaaa the end".repeat(3);
        for needle in [
            &b"a"[..],
            b"aa",
            b"aaa",
            b"ab",
            b"abab",
            b"abc",
            b"the",
            b"zz",
            b"aaaaaaaaaaaaaaaaaaaa",
        ] {
            for lanes in [1u32, 3, 8, 64] {
                let mut padded_hay = hay.clone();
                padded_hay.resize(hay.len().div_ceil(4) * 4, 0);
                let mut padded_needle = needle.to_vec();
                padded_needle.resize(needle.len().div_ceil(4) * 4, 0);
                let scratch = vec![0u8; 8 * lanes as usize * needle.len()];
                let mut buffers = vec![padded_hay, padded_needle, scratch];
                let launch = Launch {
                    lanes,
                    grid: hay.len() as u32,
                    tile_begin: 0,
                    args: [needle.len() as u32, 0, 0, 0],
                    fuel: 1_000_000,
                };
                let out = run(&program, &launch, &mut buffers);
                let shown = String::from_utf8_lossy(needle);
                assert_eq!(
                    out.status,
                    crate::ring::layout::STATUS_OK,
                    "{shown} on {lanes} lanes: {out:?}"
                );
                assert_eq!(out.results[0], bytes_count(&hay, needle), "`{shown}` on {lanes} lanes");
            }
        }
    }

    /// Runs `program` over `grid` elements in tiles of `tile` on the reference interpreter,
    /// all tiles sharing `buffers`; returns each tile's results.
    fn run_tiles(
        program: &str,
        buffers: &mut [Vec<u8>],
        grid: u32,
        tile: u32,
        lanes: u32,
        args: [u32; 4],
    ) -> Vec<[u32; 4]> {
        use crate::vm::interp::{run, Launch};
        let program = library_program(program).unwrap().load().unwrap();
        (0..grid.div_ceil(tile).max(1))
            .map(|t| {
                let launch = Launch {
                    lanes,
                    grid: (t * tile + tile).min(grid),
                    tile_begin: t * tile,
                    args,
                    fuel: 1_000_000,
                };
                let out = run(&program, &launch, buffers);
                assert_eq!(out.status, crate::ring::layout::STATUS_OK, "tile {t}: {out:?}");
                out.results
            })
            .collect()
    }

    #[test]
    fn crc32_tiles_combine_to_zlib() {
        let x2n = crc32_x2n();
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 31 + i / 7) as u8).collect();
        for (len, tile, lanes) in [(5000u32, 1000u32, 8u32), (4999, 333, 64), (17, 4, 3), (1, 1, 1)] {
            let mut padded = data[..len as usize].to_vec();
            padded.resize(len as usize + 4, 0);
            let mut buffers = vec![
                padded,
                bytemuck::cast_slice(&x2n).to_vec(),
                vec![0u8; 4 * len.div_ceil(tile) as usize],
            ];
            let tiles = run_tiles("crc32", &mut buffers, len, tile, lanes, [0, tile, 0, 0]);
            let whole = library_program("crc32").unwrap().combine(&tiles).unwrap();
            assert_eq!(
                whole[0],
                crc32fast::hash(&data[..len as usize]),
                "{len} bytes in tiles of {tile}"
            );
            assert_eq!(whole[1], len);
        }
    }

    #[test]
    fn count_byte_reads_words_and_unaligned_tile_edges_exactly() {
        let data: Vec<u8> = (0..1003u32)
            .map(|i| [7u8, 10, 7, 7, 3, 10][(i * i % 6) as usize])
            .collect();
        for (len, tile) in [(1003u32, 7u32), (1001, 333), (13, 5), (1003, 1003), (3, 1), (0, 4)] {
            for lanes in [1u32, 3, 8, 64] {
                for (program, byte) in [("count-byte", 7u8), ("lines", 10)] {
                    let mut padded = data[..len as usize].to_vec();
                    padded.resize(len as usize + 8, 0xEE);
                    let mut buffers = vec![padded];
                    let tiles = run_tiles(program, &mut buffers, len, tile, lanes, [u32::from(byte), 0, 0, 0]);
                    let got: u32 = tiles.iter().map(|t| t[0]).sum();
                    let want = data[..len as usize].iter().filter(|&&b| b == byte).count() as u32;
                    assert_eq!(got, want, "{program}: {len} bytes in tiles of {tile} on {lanes} lanes");
                }
            }
        }
    }

    #[test]
    fn quad_programs_cover_unaligned_tile_edges_exactly_and_fit_their_fuel() {
        let words: Vec<u32> = (0..1003u32).map(|i| i.wrapping_mul(2_654_435_761)).collect();
        let a = 0.75f32;
        for (len, tile) in [
            (1003u32, 7u32),
            (1001, 333),
            (13, 5),
            (1003, 1003),
            (3, 1),
            (0, 4),
            (17, 6),
        ] {
            for lanes in [1u32, 3, 8, 64] {
                let x = bytemuck::cast_slice::<u32, u8>(&words[..len as usize]).to_vec();
                let tiles = run_tiles("sum-u32", &mut [x.clone()], len, tile, lanes, [0; 4]);
                let got = tiles.iter().fold(0u32, |s, t| s.wrapping_add(t[0]));
                let want = words[..len as usize].iter().fold(0u32, |s, w| s.wrapping_add(*w));
                assert_eq!(got, want, "sum-u32: {len} elements in tiles of {tile} on {lanes} lanes");

                let xf: Vec<f32> = (0..len).map(|i| i as f32 * 0.5 - 7.0).collect();
                let yf: Vec<f32> = (0..len).map(|i| 3.0 - i as f32).collect();
                let mut buffers = vec![
                    bytemuck::cast_slice::<f32, u8>(&xf).to_vec(),
                    bytemuck::cast_slice::<f32, u8>(&yf).to_vec(),
                ];
                run_tiles("saxpy", &mut buffers, len, tile, lanes, [a.to_bits(), 0, 0, 0]);
                let want: Vec<f32> = xf.iter().zip(&yf).map(|(x, y)| a * x + y).collect();
                assert_eq!(
                    buffers[1]
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect::<Vec<_>>(),
                    want,
                    "saxpy: {len} elements in tiles of {tile} on {lanes} lanes"
                );
                // The fuel the library promises is enough for every tile.
                let crc_lanes = lanes;
                let bytes: Vec<u8> = (0..len * 4).map(|i| (i * 7 + i / 5) as u8).collect();
                let mut crc_buffers = vec![
                    [bytes.clone(), vec![0; 4]].concat(),
                    bytemuck::cast_slice(&crc32_x2n()).to_vec(),
                    vec![0u8; 4 * (len * 4).div_ceil(tile * 4).max(1) as usize],
                ];
                let crc = library_program("crc32").unwrap();
                let verified = crc.load().unwrap();
                let tile_bytes = tile * 4;
                let mut parts = Vec::new();
                for t in 0..(len * 4).div_ceil(tile_bytes) {
                    let end = (t * tile_bytes + tile_bytes).min(len * 4);
                    let launch = crate::vm::interp::Launch {
                        lanes: crc_lanes,
                        grid: end,
                        tile_begin: t * tile_bytes,
                        args: [0, tile_bytes, 0, 0],
                        fuel: crc.fuel(end - t * tile_bytes, crc_lanes),
                    };
                    let out = crate::vm::interp::run(&verified, &launch, &mut crc_buffers);
                    assert_eq!(out.status, crate::ring::layout::STATUS_OK, "crc32 tile {t}: {out:?}");
                    parts.push(out.results);
                }
                if !parts.is_empty() {
                    assert_eq!(
                        crc.combine(&parts).unwrap()[0],
                        crc32fast::hash(&bytes),
                        "crc32: {len} words"
                    );
                }
                for program in ["sum-u32", "saxpy"] {
                    let library = library_program(program).unwrap();
                    let verified = library.load().unwrap();
                    for t in 0..len.div_ceil(tile) {
                        let end = (t * tile + tile).min(len);
                        let launch = crate::vm::interp::Launch {
                            lanes,
                            grid: end,
                            tile_begin: t * tile,
                            args: [a.to_bits(), 0, 0, 0],
                            fuel: library.fuel(end - t * tile, lanes),
                        };
                        let out = crate::vm::interp::run(&verified, &launch, &mut buffers);
                        assert_eq!(
                            out.status,
                            crate::ring::layout::STATUS_OK,
                            "{program} tile {t}: {out:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn count_literal_tiles_chain_to_bytes_count() {
        let hay = b"abababa aaaa abab aaaaa the theme abcabcab ".repeat(7);
        let len = hay.len() as u32;
        for needle in [&b"aa"[..], b"aba", b"abab", b"the", b"a", b" a"] {
            let m = needle.len() as u32;
            for (tile, lanes) in [(10u32, 3u32), (37, 8), (len, 1), (5, 64)] {
                let tiles = len.div_ceil(tile);
                let mut padded = hay.clone();
                padded.resize(hay.len() + 4, 0);
                let mut lit = needle.to_vec();
                lit.resize(needle.len().div_ceil(4) * 4, 0);
                let mut buffers = vec![padded, lit, vec![0u8; 8 * (lanes * m * tiles) as usize]];
                run_tiles("count-literal", &mut buffers, len, tile, lanes, [m, tile, len, 0]);
                let scratch: &[u32] = bytemuck::cast_slice(&buffers[2]);
                let (count, _) = literal_chain(scratch, lanes, m, tiles as usize, 0);
                let shown = String::from_utf8_lossy(needle);
                assert_eq!(
                    count,
                    u64::from(bytes_count(&hay, needle)),
                    "`{shown}`, tiles of {tile}, {lanes} lanes"
                );
            }
        }
    }

    #[test]
    fn the_fuel_estimate_suffices_for_every_program() {
        use crate::vm::interp::{run, Launch};
        let x2n = crc32_x2n();
        for program in LIBRARY {
            for (grid, lanes) in [(100_003u32, 8u32), (4096, 64), (7, 3)] {
                let elements = grid as usize + 8;
                let literal = b"ab".to_vec();
                let mut buffers = match program.name {
                    "crc32" => vec![vec![0x5a; elements], bytemuck::cast_slice(&x2n).to_vec(), vec![0; 4]],
                    "count-literal" => vec![b"abab".repeat(elements / 4 + 1), literal, vec![0; 16 * lanes as usize]],
                    _ => vec![vec![0x5a; elements * 4], vec![0; (elements * 4).max(1024)]],
                };
                let fuel = if program.name == "count-literal" {
                    literal_fuel(grid, lanes, 2)
                } else {
                    program.fuel(grid, lanes)
                };
                let launch = Launch {
                    lanes,
                    grid,
                    tile_begin: 0,
                    args: [2, 0, 0, 0],
                    fuel,
                };
                let out = run(&program.load().unwrap(), &launch, &mut buffers);
                assert_eq!(
                    out.status,
                    crate::ring::layout::STATUS_OK,
                    "{} on {grid} x {lanes}: {out:?}",
                    program.name
                );
            }
        }
    }

    #[test]
    fn every_library_program_assembles_and_verifies() {
        for program in LIBRARY {
            program.load().unwrap_or_else(|e| panic!("{}: {e}", program.name));
        }
    }
}
