//! Feeds arbitrary bytes to the program decoder and the verifier, and (as UTF-8 text) to
//! the assembler. Nothing may panic; whatever decodes or assembles must survive
//! disassembly and reassembly exactly. Run with `cargo +nightly fuzz run decode_verify`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use megaring::ring::layout::VM_MAX_BUFFERS;
use megaring::vm::{assemble, disassemble, verify, Program};

fuzz_target!(|data: &[u8]| {
    if let Ok(program) = Program::from_bytes(data) {
        for buffers in 0..=VM_MAX_BUFFERS as usize + 1 {
            if verify(&program, buffers).is_ok() {
                assert_eq!(Program::from_bytes(&program.to_bytes()).as_ref(), Ok(&program));
            }
        }
        assert_eq!(assemble(&disassemble(&program)).as_ref(), Ok(&program));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(program) = assemble(text) {
            let _ = verify(&program, VM_MAX_BUFFERS as usize);
            assert_eq!(assemble(&disassemble(&program)).as_ref(), Ok(&program));
        }
    }
});
