//! Shared setup for the Vulkan tests: every test runs on the real device (lavapipe in CI)
//! under the Khronos validation layer, one at a time (on lavapipe the GPU is the CPU, and
//! parallel runtimes would starve each other).
#![allow(dead_code)]

use std::sync::{Mutex, MutexGuard};

use megaring::{Runtime, RuntimeConfig};

static DEVICE_LOCK: Mutex<()> = Mutex::new(());

/// Serialises tests that use the device.
pub fn device_lock() -> MutexGuard<'static, ()> {
    DEVICE_LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether the tests run under the validation layer: always, unless
/// `MEGARING_TEST_VALIDATION=0` says the machine has no layer (the GPU machine; never CI).
pub fn validation() -> bool {
    std::env::var("MEGARING_TEST_VALIDATION").map_or(true, |v| v != "0")
}

/// The configuration every test starts from: validation on, its messages recorded (and
/// asserted on at the end) rather than printed.
pub fn config() -> RuntimeConfig {
    RuntimeConfig {
        validation: validation(),
        validation_echo: false,
        ..RuntimeConfig::default()
    }
}

/// A runtime under validation, plus the device lock for the test's duration.
pub struct TestRuntime {
    pub runtime: Runtime,
    _lock: MutexGuard<'static, ()>,
}

impl TestRuntime {
    pub fn new(config: RuntimeConfig) -> Self {
        let lock = device_lock();
        let runtime = Runtime::new(config).expect("runtime starts on this machine's Vulkan device");
        TestRuntime { runtime, _lock: lock }
    }

    /// Shuts down and asserts the validation layer reported no error during the test,
    /// and that no driver cut the kernel's loop (the epoch accounting held).
    pub fn finish(self) {
        self.runtime.shutdown().expect("clean shutdown");
        let stats = self.runtime.stats();
        assert_eq!((stats.unplanned_exits, stats.lost), (0, 0), "{stats:?}");
        assert_validation_clean(&self.runtime);
    }
}

impl std::ops::Deref for TestRuntime {
    type Target = Runtime;
    fn deref(&self) -> &Runtime {
        &self.runtime
    }
}

pub fn assert_validation_clean(runtime: &Runtime) {
    assert_eq!(
        runtime.info().validation,
        validation(),
        "tests must run under the validation layer"
    );
    assert_eq!(
        runtime.validation_errors(),
        0,
        "validation errors: {:#?}",
        runtime.validation_messages()
    );
}

/// Python's `bytes.count`: non-overlapping occurrences, greedy from the left.
pub fn bytes_count(hay: &[u8], needle: &[u8]) -> u64 {
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

/// A scratch directory on a disk file system (tmpfs refuses O_DIRECT), removed on drop.
pub fn scratch() -> tempfile::TempDir {
    // The directory exists where the tests were built; create it where they run.
    std::fs::create_dir_all(env!("CARGO_TARGET_TMPDIR")).unwrap();
    tempfile::Builder::new()
        .prefix("megaring-test")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

/// `len` pseudo-random bytes drawn from `alphabet` (text with newlines and repeats).
pub fn text(len: usize, seed: u32, alphabet: &[u8]) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            alphabet[x as usize % alphabet.len()]
        })
        .collect()
}

/// The README's program: a strided wrapping u32 sum of b0's `grid` words -> result 0.
pub const STRIDED_SUM_ASM: &str = "
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
";

/// Lane 0 copies b0's 8-word records into the request buffer, one `atomic.add` each, so
/// request k is record k.
pub const COPY_REQUESTS: &str = "
        lane r1
        brnz r1, done
        buflen r2, b0
        movi r11, 2
        shru r2, r2, r11       ; words in b0
        movi r10, 1
        movi r12, 3
top:    ltu r4, r9, r2
        brz r4, done
        atomic.add r5, b1[r0], r10
        shl r5, r5, r12
        addi r5, r5, 8         ; word of record k
        movi r7, 8
copy:   ld32 r8, b0[r9]
        st32 b1[r5], r8
        addi r9, r9, 1
        addi r5, r5, 1
        addi r7, r7, -1
        brnz r7, copy
        jmp top
done:   halt
";
