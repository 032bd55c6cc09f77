//! File-to-GPU-result ingest rate, measured in the same run on the same file: the
//! zero-copy scan (io_uring into imported host memory, jobs read it in place), the
//! baseline (`read()` + `memcpy` into a mapped Vulkan buffer, same jobs) and the raw
//! io_uring read rate (no GPU, the ceiling). Program `lines` through the page cache; every
//! scan's answer is checked against the file's line count. Prints the ratios at the end.
//!
//! `cargo bench --profile dev --bench ingest`; `MEGARING_DEVICE` picks the device. The
//! test file (8 MiB on lavapipe, 1 GiB elsewhere) is written to `/var/tmp` and removed.

use std::cell::Cell;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use megaring::bench::{raw_uring, IngestFile};
use megaring::io::{ScanOptions, ScanProgram, ScanValue, Scanner};
use megaring::vk::{Context, DeviceSelector};
use megaring::{Runtime, RuntimeConfig};

/// `x` with at least 2 significant digits and 2 decimals (lavapipe's rates are tiny).
fn digits(x: f64) -> String {
    let decimals = if x > 0.0 {
        (1 - x.log10().floor() as i32).max(2)
    } else {
        2
    };
    format!("{x:.*}", decimals as usize)
}

/// Mean seconds per iteration of a (total time, iterations) tally.
fn mean((t, n): (Duration, u64)) -> f64 {
    t.as_secs_f64() / n.max(1) as f64
}

fn ingest(c: &mut Criterion) {
    // A probe context, dropped before the runtime opens the device.
    let lavapipe = Context::new(&DeviceSelector::from_env(), false, false)
        .expect("Vulkan device")
        .caps()
        .lavapipe;
    let bytes: u64 = if lavapipe { 8 << 20 } else { 1 << 30 };
    let (file, lines) = IngestFile::create(std::path::Path::new("/var/tmp"), bytes).expect("write the test file");
    let paths = vec![file.path().to_path_buf()];
    // Warm the page cache: every path reads through it.
    std::io::copy(
        &mut std::fs::File::open(file.path()).expect("open the test file"),
        &mut std::io::sink(),
    )
    .expect("read the test file");

    let runtime = Runtime::new(RuntimeConfig::default()).expect("runtime");
    let mut zero_copy = Scanner::new(&runtime, ScanProgram::Lines, &ScanOptions::default()).expect("scanner");
    let copy_options = ScanOptions {
        copy_reads: true,
        ..ScanOptions::default()
    };
    let mut copy = Scanner::new(&runtime, ScanProgram::Lines, &copy_options).expect("baseline scanner");
    let (chunk, slots) = (zero_copy.chunk_bytes(), zero_copy.slots());
    let ingest = zero_copy.describe();

    let mut group = c.benchmark_group("ingest");
    group
        // Decimal bytes: criterion prints GB/s (10^9 bytes per second), as `megaring bench ingest`.
        .throughput(Throughput::BytesDecimal(bytes))
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    // Sum of measured time and iterations of each path, for the ratios.
    let tallies = [(); 3].map(|_| Cell::new((Duration::ZERO, 0u64)));
    let tally = |cell: &Cell<(Duration, u64)>, t: Duration, iters: u64| {
        let (s, n) = cell.get();
        cell.set((s + t, n + iters));
    };
    for (name, scanner, cell) in [
        ("lines/zero-copy", &mut zero_copy, &tallies[0]),
        ("lines/read+memcpy", &mut copy, &tallies[1]),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let report = scanner.scan(&paths, &mut |_| {}).remove(0);
                    total += start.elapsed();
                    let value = report.outcome.unwrap_or_else(|e| panic!("{name}: {e}"));
                    assert_eq!(value, ScanValue::Count(lines), "{name}: the file has {lines} lines");
                }
                tally(cell, total, iters);
                total
            })
        });
    }
    group.bench_function("raw io_uring", |b| {
        b.iter_custom(|iters| {
            let total: Duration = (0..iters)
                .map(|_| {
                    raw_uring(file.path(), chunk, slots, false)
                        .expect("raw io_uring read")
                        .0
                })
                .sum();
            tally(&tallies[2], total, iters);
            total
        })
    });
    group.finish();
    let [fast, slow, raw] = tallies.map(|t| mean(t.get()));
    let gbps = |seconds: f64| bytes as f64 / seconds.max(1e-12) / 1e9;
    println!(
        "ratio: zero-copy scan / read()+memcpy = {}, zero-copy scan / raw io_uring = {} \
         ({} vs {} vs {} GB/s, {} MiB, {}; {ingest})",
        digits(slow / fast.max(1e-12)),
        digits(raw / fast.max(1e-12)),
        digits(gbps(fast)),
        digits(gbps(slow)),
        digits(gbps(raw)),
        bytes >> 20,
        runtime.info().caps.name,
    );
    drop((zero_copy, copy));
    runtime.shutdown().expect("shutdown");
    drop(file);
}

criterion_group!(benches, ingest);
criterion_main!(benches);
