//! Programs shipped with the crate, written in the bytecode's assembly language. Each runs
//! on one workgroup over a grid of `grid` elements, lanes striding (`i = lane; i < grid;
//! i += lanes`). Their results are tested against independent CPU computations
//! (`tests/vm_library.rs`).
//!
//! Not yet here: `crc32` (per-lane CRCs combined in GF(2)) and `count-literal`.

use super::{assemble, verify, VerifiedProgram, VmError};

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
    /// Assembly source.
    pub source: &'static str,
}

impl LibraryProgram {
    /// Assembles and verifies the program.
    pub fn load(&self) -> Result<VerifiedProgram, VmError> {
        verify(&assemble(self.source)?, self.buffers)
    }

    /// Fuel enough for `grid` elements on `lanes` lanes.
    pub fn fuel(&self, grid: u32, lanes: u32) -> u32 {
        grid.div_ceil(lanes.max(1))
            .saturating_mul(self.per_element)
            .saturating_add(32)
    }
}

/// Every library program.
pub const LIBRARY: &[LibraryProgram] = &[
    LibraryProgram {
        name: "sum-u32",
        doc: "Wrapping u32 sum of b0's grid u32 elements -> result 0.",
        buffers: 1,
        per_element: 6,
        source: "
        lane r1
        grid r2
        lanes r3
    top: ltu r4, r1, r2
        brz r4, done
        ld32 r5, b0[r1]
        add r6, r6, r5
        add r1, r1, r3
        jmp top
    done: red.add r7, r6
        result 0, r7
        halt
",
    },
    LibraryProgram {
        name: "count-byte",
        doc: "Occurrences of byte arg 0 among b0's first grid bytes -> result 0.",
        buffers: 1,
        per_element: 7,
        source: "
        lane r1
        grid r2
        lanes r3
        arg r8, 0
    top: ltu r4, r1, r2
        brz r4, done
        ld8 r5, b0[r1]
        eq r5, r5, r8
        add r6, r6, r5
        add r1, r1, r3
        jmp top
    done: red.add r7, r6
        result 0, r7
        halt
",
    },
    LibraryProgram {
        name: "lines",
        doc: "Newlines (0x0A) among b0's first grid bytes, like `wc -l` -> result 0.",
        buffers: 1,
        per_element: 7,
        source: "
        lane r1
        grid r2
        lanes r3
        movi r8, 10
    top: ltu r4, r1, r2
        brz r4, done
        ld8 r5, b0[r1]
        eq r5, r5, r8
        add r6, r6, r5
        add r1, r1, r3
        jmp top
    done: red.add r7, r6
        result 0, r7
        halt
",
    },
    LibraryProgram {
        name: "histogram",
        doc: "Adds the counts of each byte value among b0's first grid bytes to b1's 256 u32 bins.",
        buffers: 2,
        per_element: 6,
        source: "
        lane r1
        grid r2
        lanes r3
        movi r6, 1
    top: ltu r4, r1, r2
        brz r4, done
        ld8 r5, b0[r1]
        atomic.add r31, b1[r5], r6
        add r1, r1, r3
        jmp top
    done: halt
",
    },
    LibraryProgram {
        name: "minmax-f32",
        doc: "Minimum and maximum of b0's grid f32 elements, NaN ignored -> results 0 and 1 (f32 bits); \
              +inf and -inf for an empty grid.",
        buffers: 1,
        per_element: 7,
        source: "
        lane r1
        grid r2
        lanes r3
        movi r6, 0x7F800000   ; +inf
        movi r7, 0xFF800000   ; -inf
    top: ltu r4, r1, r2
        brz r4, done
        ld32 r5, b0[r1]
        fmin r6, r6, r5
        fmax r7, r7, r5
        add r1, r1, r3
        jmp top
    done: red.fmin r8, r6
        red.fmax r9, r7
        result 0, r8
        result 1, r9
        halt
",
    },
    LibraryProgram {
        name: "saxpy",
        doc:
            "b1[i] = a * b0[i] + b1[i] for i < grid, a = arg 0 as f32 bits (multiply, then add: no fused multiply-add).",
        buffers: 2,
        per_element: 9,
        source: "
        lane r1
        grid r2
        lanes r3
        arg r8, 0
    top: ltu r4, r1, r2
        brz r4, done
        ld32 r5, b0[r1]
        ld32 r6, b1[r1]
        fmul r5, r5, r8
        fadd r6, r6, r5
        st32 b1[r1], r6
        add r1, r1, r3
        jmp top
    done: halt
",
    },
];

/// The library program called `name`.
pub fn library_program(name: &str) -> Option<&'static LibraryProgram> {
    LIBRARY.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_library_program_assembles_and_verifies() {
        for program in LIBRARY {
            program.load().unwrap_or_else(|e| panic!("{}: {e}", program.name));
        }
    }
}
