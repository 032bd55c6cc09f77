//! Zero-copy ingest on lavapipe: real files read with io_uring into imported host memory and
//! scanned in place by the megakernel, against independent CPU answers; and every bad input
//! (missing file, directory, empty file, truncated file, odd sizes, files larger than the
//! arena) gives the right answer or a clear per-file error.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::{bytes_count, config, scratch, TestRuntime};
use megaring::io::{ScanOptions, ScanProgram, ScanValue, Scanner};
use megaring::Error;

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path).unwrap().write_all(data).unwrap();
    path
}

/// Text-like bytes with newlines and repeats (for literals that overlap).
fn text(len: usize, seed: u32) -> Vec<u8> {
    common::text(len, seed, b"aab ab\nabaaba\nxyz")
}

/// Small chunks so that files span many of them, and a small arena (4 slots).
fn options(direct: bool) -> ScanOptions {
    ScanOptions {
        chunk_bytes: Some(16 << 10),
        slots: Some(4),
        direct,
        tiles_per_chunk: None,
        copy_reads: false,
        vulkan_arena: false,
    }
}

fn value(report: &megaring::io::FileReport) -> &ScanValue {
    report
        .outcome
        .as_ref()
        .unwrap_or_else(|e| panic!("{}: {e}", report.path.display()))
}

#[test]
fn scans_equal_independent_answers_across_chunk_borders() {
    let rt = TestRuntime::new(config());
    let dir = scratch();
    // Sizes around chunk (16 KiB) and page (4 KiB) multiples, and files much larger than
    // the arena (4 slots of 16 KiB).
    let sizes = [1usize, 3, 4095, 4096, 4097, 16_384, 16_385, 65_536 + 7, 200_003];
    let files: Vec<(PathBuf, Vec<u8>)> = sizes
        .iter()
        .enumerate()
        .map(|(k, &n)| {
            let data = text(n, k as u32 + 1);
            (write(dir.path(), &format!("f{k}"), &data), data)
        })
        .collect();
    let paths: Vec<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
    for direct in [false, true] {
        let mut scanner = Scanner::new(&rt, ScanProgram::Crc32, &options(direct)).unwrap();
        // lavapipe has VK_EXT_external_memory_host, and root may pin the arena: the zero-copy
        // path, not a fallback.
        assert!(scanner.arena_imported(), "{}", scanner.describe());
        assert!(scanner.fixed_buffers(), "{}", scanner.describe());
        let reports = scanner.scan(&paths, &mut |_| {});
        // O_DIRECT only when asked (granted where the file system takes it).
        assert!(direct || reports.iter().all(|r| !r.direct));
        for ((_, data), report) in files.iter().zip(&reports) {
            assert_eq!(
                value(report),
                &ScanValue::Crc32(crc32fast::hash(data)),
                "crc32 of {} bytes",
                data.len()
            );
            assert_eq!(report.bytes, data.len() as u64);
        }
        drop(scanner);
        let mut scanner = Scanner::new(&rt, ScanProgram::Lines, &options(direct)).unwrap();
        for ((_, data), report) in files.iter().zip(scanner.scan(&paths, &mut |_| {})) {
            let lines = data.iter().filter(|&&b| b == b'\n').count() as u64;
            assert_eq!(
                value(&report),
                &ScanValue::Count(lines),
                "lines of {} bytes",
                data.len()
            );
        }
    }
    for needle in [&b"ab"[..], b"aa", b"aba", b"abaaba\n", b"z"] {
        let program = ScanProgram::CountLiteral(needle.to_vec());
        let mut scanner = Scanner::new(&rt, program, &options(true)).unwrap();
        for ((_, data), report) in files.iter().zip(scanner.scan(&paths, &mut |_| {})) {
            assert_eq!(
                value(&report),
                &ScanValue::Count(bytes_count(data, needle)),
                "`{}` in {} bytes",
                String::from_utf8_lossy(needle),
                data.len()
            );
        }
    }
    // Slots were reused while the kernel ran: their chunks waited for fresh launches.
    assert!(rt.stats().yield_exits > 0, "{:?}", rt.stats());
    let mut scanner = Scanner::new(&rt, ScanProgram::Histogram, &options(false)).unwrap();
    for ((_, data), report) in files.iter().zip(scanner.scan(&paths, &mut |_| {})) {
        let mut bins = vec![0u64; 256];
        data.iter().for_each(|&b| bins[b as usize] += 1);
        assert_eq!(value(&report), &ScanValue::Histogram(bins));
    }
    rt.finish();
}

#[test]
fn the_fallback_arena_and_the_copy_baseline_give_the_same_answers() {
    let rt = TestRuntime::new(config());
    let dir = scratch();
    let data = text(70_001, 5);
    let path = write(dir.path(), "f", &data);
    let expected = ScanValue::Crc32(crc32fast::hash(&data));
    let fallback = ScanOptions {
        vulkan_arena: true,
        ..options(false)
    };
    let mut scanner = Scanner::new(&rt, ScanProgram::Crc32, &fallback).unwrap();
    assert!(!scanner.arena_imported());
    assert!(scanner.describe().contains("fallback"), "{}", scanner.describe());
    assert_eq!(
        value(&scanner.scan(std::slice::from_ref(&path), &mut |_| {})[0]),
        &expected
    );
    drop(scanner);
    let copy = ScanOptions {
        copy_reads: true,
        ..options(true)
    };
    let mut scanner = Scanner::new(&rt, ScanProgram::Crc32, &copy).unwrap();
    assert_eq!(value(&scanner.scan(&[path], &mut |_| {})[0]), &expected);
    drop(scanner);
    rt.finish();
}

#[test]
fn real_system_files_equal_zlib_wc_and_bytes_count() {
    let rt = TestRuntime::new(config());
    // Real files of this machine: a few shared libraries' worth (lavapipe interprets at a
    // few MB/s, so CI takes a sample; `megaring scan` does the whole directory).
    let mut paths: Vec<PathBuf> = std::fs::read_dir("/usr/lib/x86_64-linux-gnu")
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && std::fs::metadata(p).is_ok_and(|m| m.len() < 300_000))
        .collect();
    paths.sort();
    paths.truncate(12);
    paths.push(PathBuf::from("/etc/services"));
    let data: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let opts = ScanOptions {
        direct: true,
        ..ScanOptions::default()
    };
    let mut crc = Scanner::new(&rt, ScanProgram::Crc32, &opts).unwrap();
    for (d, report) in data.iter().zip(crc.scan(&paths, &mut |_| {})) {
        assert_eq!(
            value(&report),
            &ScanValue::Crc32(crc32fast::hash(d)),
            "{}",
            report.path.display()
        );
    }
    drop(crc);
    let mut lines = Scanner::new(&rt, ScanProgram::Lines, &opts).unwrap();
    for (d, report) in data.iter().zip(lines.scan(&paths, &mut |_| {})) {
        let expected = d.iter().filter(|&&b| b == b'\n').count() as u64;
        assert_eq!(value(&report), &ScanValue::Count(expected), "{}", report.path.display());
    }
    drop(lines);
    let mut literal = Scanner::new(&rt, ScanProgram::CountLiteral(b"\0\0\0".to_vec()), &opts).unwrap();
    for (d, report) in data.iter().zip(literal.scan(&paths, &mut |_| {})) {
        assert_eq!(
            value(&report),
            &ScanValue::Count(bytes_count(d, b"\0\0\0")),
            "{}",
            report.path.display()
        );
    }
    drop(literal);
    rt.finish();
}

#[test]
fn bad_inputs_get_per_file_errors_and_the_other_files_still_scan() {
    let rt = TestRuntime::new(config());
    let dir = scratch();
    let good = write(dir.path(), "good", b"one\ntwo\nthree\n");
    let empty = write(dir.path(), "empty", b"");
    let missing = dir.path().join("missing");
    let paths = vec![
        missing.clone(),
        good.clone(),
        dir.path().to_owned(),
        empty.clone(),
        good.clone(),
    ];
    let mut scanner = Scanner::new(&rt, ScanProgram::Lines, &options(true)).unwrap();
    let reports = scanner.scan(&paths, &mut |_| {});
    assert_eq!(reports.len(), 5);
    let err = |k: usize| reports[k].outcome.as_ref().unwrap_err().to_string();
    assert!(err(0).contains("no such file"), "{}", err(0));
    assert!(err(0).contains("missing"), "{}", err(0));
    assert!(err(2).contains("not a regular file"), "{}", err(2));
    assert_eq!(value(&reports[1]), &ScanValue::Count(3));
    assert_eq!(value(&reports[3]), &ScanValue::Count(0));
    assert_eq!(value(&reports[4]), &ScanValue::Count(3));
    assert!(matches!(reports[0].outcome, Err(Error::Io(_))));
    drop(scanner);

    // The same scanner serves scan after scan (slots and files all released).
    let mut scanner = Scanner::new(&rt, ScanProgram::Crc32, &options(false)).unwrap();
    for _ in 0..3 {
        let reports = scanner.scan(&[good.clone(), empty.clone()], &mut |_| {});
        assert_eq!(
            value(&reports[0]),
            &ScanValue::Crc32(crc32fast::hash(b"one\ntwo\nthree\n"))
        );
        assert_eq!(value(&reports[1]), &ScanValue::Crc32(0));
    }
    rt.finish();
}

#[test]
fn a_file_truncated_while_it_is_read_gets_a_clear_error() {
    let rt = TestRuntime::new(config());
    let dir = scratch();
    let data = text(300_000, 9);
    let path = write(dir.path(), "shrinks", &data);
    let other = write(dir.path(), "other", &data[..5000]);
    let mut scanner = Scanner::new(&rt, ScanProgram::Lines, &options(false)).unwrap();
    // Truncate the file as soon as the scan reports progress: it was opened (and sized)
    // at 300,000 bytes, and most of its chunks are not read yet (4 slots of 16 KiB).
    let mut cut = false;
    let reports = scanner.scan(&[path.clone(), other.clone()], &mut |p| {
        if !cut && p.bytes_done > 0 {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(100_000)
                .unwrap();
            cut = true;
        }
    });
    assert!(cut);
    let message = reports[0].outcome.as_ref().unwrap_err().to_string();
    assert!(message.contains("shrank"), "{message}");
    assert!(message.contains("100000 of 300000"), "{message}");
    let lines = data[..5000].iter().filter(|&&b| b == b'\n').count() as u64;
    assert_eq!(value(&reports[1]), &ScanValue::Count(lines));
    rt.finish();
}

/// Counts with scratch `b1`, which a scan gives every chunk zeroed: each lane adds 1 to
/// b1[0], and the result is one more than the largest count a lane saw, the lanes of the
/// job if b1[0] started at 0.
const COUNT_IN_SCRATCH: &str = "
        movi r1, 1
        atomic.add r3, b1[r0], r1
        red.max r4, r3
        addi r4, r4, 1
        result 0, r4
        halt
";

#[test]
fn every_chunk_gets_its_scratch_zeroed() {
    let rt = TestRuntime::new(config());
    let dir = scratch();
    let program = megaring::vm::verify(&megaring::vm::assemble(COUNT_IN_SCRATCH).unwrap(), 2).unwrap();
    let sizes = [100_000usize, 16_384, 50_001];
    let paths: Vec<PathBuf> = sizes
        .iter()
        .enumerate()
        .map(|(k, &n)| write(dir.path(), &format!("s{k}"), &text(n, k as u32)))
        .collect();
    let mut scanner = Scanner::new(
        &rt,
        ScanProgram::Custom { program, args: [0; 4] },
        &ScanOptions {
            tiles_per_chunk: Some(1),
            ..options(false)
        },
    )
    .unwrap();
    let lanes = u64::from(rt.info().vm_lanes);
    for round in 0..2 {
        for (report, &n) in scanner.scan(&paths, &mut |_| {}).iter().zip(&sizes) {
            let chunks = n.div_ceil(16 << 10) as u64;
            assert_eq!(
                value(report),
                &ScanValue::Sums([chunks * lanes, 0, 0, 0]),
                "round {round}: {} ({chunks} chunks)",
                report.path.display()
            );
        }
    }
    rt.finish();
}

#[test]
fn a_chunk_that_could_not_be_published_leaves_no_trace_in_other_files() {
    // A ring of 4 entries, 8 arena slots, chunks of 8 tiles, and submits that give up
    // after a millisecond: some chunks find the ring full. Their files fail; every other
    // file's histogram stays exact (no job of a failed chunk runs on in a reused slot, and
    // no half-filled histogram is carried into the next chunk).
    let rt = TestRuntime::new(megaring::RuntimeConfig {
        ring_entries: 4,
        workgroups: Some(2),
        submit_timeout: std::time::Duration::from_millis(1),
        ..config()
    });
    let dir = scratch();
    let files: Vec<(PathBuf, Vec<u8>)> = (0..12)
        .map(|k| {
            let data = text(40_000 + 3_000 * k, 50 + k as u32);
            (write(dir.path(), &format!("h{k}"), &data), data)
        })
        .collect();
    let paths: Vec<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
    let mut scanner = Scanner::new(
        &rt,
        ScanProgram::Histogram,
        &ScanOptions {
            tiles_per_chunk: Some(8),
            slots: Some(8),
            ..options(false)
        },
    )
    .unwrap();
    let (mut exact, mut refused) = (0, 0);
    for _ in 0..3 {
        for (report, (_, data)) in scanner.scan(&paths, &mut |_| {}).iter().zip(&files) {
            match &report.outcome {
                Ok(ScanValue::Histogram(bins)) => {
                    let mut expected = vec![0u64; 256];
                    for &b in data {
                        expected[b as usize] += 1;
                    }
                    assert_eq!(bins, &expected, "{}", report.path.display());
                    exact += 1;
                }
                Err(Error::RingFull { .. }) => refused += 1,
                other => panic!("{}: {other:?}", report.path.display()),
            }
        }
    }
    eprintln!("{exact} files exact, {refused} refused a full ring");
    rt.finish();
}

#[test]
fn an_arena_dropped_with_reads_in_flight_waits_for_them() {
    let rt = TestRuntime::new(config());
    let dir = scratch();
    let data = text(1 << 20, 77);
    let path = write(dir.path(), "big", &data);
    for _ in 0..3 {
        let mut arena = megaring::io::Arena::new(&rt, 8, 128 << 10, 8, true).unwrap();
        let offsets: Vec<usize> = (0..8).map(|slot| arena.slot_offset(slot)).collect();
        let reader = arena.reader_mut();
        let file = reader.open(&path, false).unwrap();
        for (slot, &dst) in offsets.iter().enumerate() {
            reader
                .submit_read(file, slot as u64 * (128 << 10), dst, 128 << 10, slot as u64)
                .unwrap();
        }
        reader.complete(false).unwrap();
        // The reads may still be landing: the arena's reader goes first and waits.
        drop(arena);
    }
    rt.finish();
}

#[test]
fn scanner_settings_that_would_overflow_are_refused_before_anything_is_allocated() {
    let rt = TestRuntime::new(config());
    let refused = |program: ScanProgram, chunk: usize| match Scanner::new(
        &rt,
        program,
        &ScanOptions {
            chunk_bytes: Some(chunk),
            ..options(false)
        },
    ) {
        Err(Error::InvalidConfig(message)) => message,
        Err(e) => panic!("expected a configuration error, got {e}"),
        Ok(_) => panic!("accepted chunks of {chunk} bytes"),
    };
    let message = refused(ScanProgram::Lines, 8 << 30);
    assert!(message.contains("at most 1073741824"), "{message}");
    // count-literal keeps two words per lane, literal byte and tile of a chunk.
    let message = refused(ScanProgram::CountLiteral(vec![b'x'; 64]), 1 << 30);
    assert!(message.contains("literal"), "{message}");
    rt.finish();
}
