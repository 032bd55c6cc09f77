//! The failure paths, driven by fault injection (feature `fault-injection`, on in the test
//! build): a kernel that stops answering, one that cannot be stopped, a claim a cut loop
//! leaves unfinished, a lost device, read errors and io_uring failures. Every waiter,
//! spread-job waiter and blocked submitter gets a typed error, no thread hangs, and a new
//! runtime on the same device works afterwards; a failing file fails alone.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{config, device_lock, scratch, COPY_REQUESTS};
use megaring::io::uring::faults as io_faults;
use megaring::io::{DmaError, DmaRequest, DmaService, IoError, ScanOptions, ScanProgram, ScanValue, Scanner};
use megaring::vm::{assemble, verify};
use megaring::{Error, Job, KernelFault, Placement, Runtime, RuntimeConfig};

/// Far longer than any outcome here takes: a wait that reaches it is a hang.
const BOUND: Duration = Duration::from_secs(60);

/// Does nothing much: a tile's cost comes from its fuel.
const LIGHT_TILE: &str = "
        tile.begin r1
        result 0, r1
        halt
";

/// Runs `f` on a thread of its own and fails the test if it has not returned within
/// [`BOUND`] (instead of hanging the test binary).
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(f());
    });
    receive
        .recv_timeout(BOUND)
        .unwrap_or_else(|_| panic!("{what} did not return within {BOUND:?}: a hang"))
}

/// A new runtime on the same device serves jobs, spread jobs included, without a
/// validation message: nothing the failed one left behind gets in its way.
fn a_new_runtime_works() {
    let rt = Runtime::new(config()).expect("a new runtime after the failure");
    let program = rt
        .load_program(verify(&assemble(LIGHT_TILE).unwrap(), 0).unwrap())
        .unwrap();
    let table = rt.buffer_table(&[]).unwrap();
    let tiles = rt.submit_tiled(&program, &table, 40, 4, [0; 4], 100).unwrap();
    assert_eq!(tiles.wait().unwrap().len(), 10);
    assert_eq!(
        rt.submit(Job::echo([1, 2, 3, 4])).unwrap().wait().unwrap().results,
        [1, 2, 3, 4]
    );
    rt.shutdown().unwrap();
    common::assert_validation_clean(&rt);
}

/// Whether `e` is the error of a runtime that failed the way `expected` says.
fn is_failure(e: &Error, expected: &Error) -> bool {
    std::mem::discriminant(e) == std::mem::discriminant(expected)
}

/// Jobs in every state a failure can find them in: three waiters on echo jobs and one on
/// a spread job, published while the kernel is stalled, four detached jobs that fill the
/// ring of 8, and a submitter blocked on the full ring.
struct Victims {
    waiters: Vec<std::thread::JoinHandle<Result<[u32; 4], Error>>>,
    spread: std::thread::JoinHandle<Result<usize, Error>>,
    blocked: std::thread::JoinHandle<Result<(), Error>>,
}

fn victims(rt: &std::sync::Arc<Runtime>) -> Victims {
    let program = rt
        .load_program(verify(&assemble(LIGHT_TILE).unwrap(), 0).unwrap())
        .unwrap();
    let table = rt.buffer_table(&[]).unwrap();
    let mut spread = rt.submit_tiled(&program, &table, 400, 4, [0; 4], 100).unwrap();
    let waiters = (0..3u32)
        .map(|k| {
            let mut handle = rt.submit(Job::echo([k; 4])).unwrap();
            std::thread::spawn(move || handle.wait_timeout(BOUND).map(|c| c.results))
        })
        .collect();
    for k in 0..4 {
        drop(rt.submit(Job::echo([9, k, 0, 0])).unwrap());
    }
    let blocker = rt.clone();
    let blocked = std::thread::spawn(move || {
        // The ring is full: this waits (submit_timeout is a minute) until the runtime fails.
        blocker.submit(Job::echo([5; 4])).map(drop)
    });
    let spread = std::thread::spawn(move || spread.wait_timeout(BOUND).map(|t| t.len()));
    Victims {
        waiters,
        spread,
        blocked,
    }
}

impl Victims {
    /// Every victim got `expected`'s kind of error, none hung.
    fn all_failed_with(self, expected: &Error) {
        for (k, waiter) in self.waiters.into_iter().enumerate() {
            match bounded("a waiter", move || waiter.join().unwrap()) {
                Err(e) if is_failure(&e, expected) => {}
                other => panic!("waiter {k}: expected {expected}, got {other:?}"),
            }
        }
        let spread = self.spread;
        match bounded("the spread job's waiter", move || spread.join().unwrap()) {
            Err(e) if is_failure(&e, expected) => {}
            other => panic!("spread job: expected {expected}, got {other:?}"),
        }
        let blocked = self.blocked;
        match bounded("the blocked submitter", move || blocked.join().unwrap()) {
            Err(e) if is_failure(&e, expected) => {}
            other => panic!("blocked submitter: expected {expected}, got {other:?}"),
        }
    }
}

fn small_ring(hang_timeout: Duration) -> RuntimeConfig {
    RuntimeConfig {
        ring_entries: 8,
        hang_timeout,
        submit_timeout: Duration::from_secs(60),
        ..config()
    }
}

#[test]
fn a_stalled_kernel_is_declared_unresponsive_and_every_waiter_gets_the_error() {
    let _device = device_lock();
    let timeout = Duration::from_millis(500);
    let rt = std::sync::Arc::new(Runtime::new(small_ring(timeout)).unwrap());
    rt.inject_fault(KernelFault::Stall);
    let started = Instant::now();
    let victims = victims(&rt);
    let unresponsive = Error::KernelUnresponsive(timeout);
    victims.all_failed_with(&unresponsive);
    assert!(started.elapsed() >= timeout, "declared unresponsive before the timeout");
    assert!(matches!(rt.submit(Job::nop()), Err(Error::KernelUnresponsive(_))));
    assert!(matches!(rt.shutdown(), Err(Error::KernelUnresponsive(_))));
    // The stalled kernel still left when asked: nothing had to be leaked.
    assert!(!rt.poisoned());
    common::assert_validation_clean(&rt);
    drop(rt);
    a_new_runtime_works();
}

#[test]
fn a_kernel_that_cannot_be_stopped_poisons_the_context_instead_of_freeing_its_memory() {
    let _device = device_lock();
    // A hung kernel ignores shutdown and leaves only at its budget: with 128 workgroups
    // taking turns on lavapipe's two threads (every one of them resident on a GPU), the
    // dispatch outlasts both hang timeouts of the supervisor (detect, then wait to stop).
    let timeout = Duration::from_millis(150);
    let rt = std::sync::Arc::new(
        Runtime::new(RuntimeConfig {
            workgroups: Some(128),
            ..small_ring(timeout)
        })
        .unwrap(),
    );
    rt.inject_fault(KernelFault::Hang);
    let victims = victims(&rt);
    victims.all_failed_with(&Error::KernelUnresponsive(timeout));
    assert!(
        rt.poisoned(),
        "the dispatch was still running: its memory must not be freed"
    );
    // Drop leaks the context's objects on purpose (it waits a bounded time for the
    // dispatch first, so this thread does not hang).
    bounded("dropping the poisoned runtime", move || drop(rt));
    a_new_runtime_works();
}

#[test]
fn a_lost_device_fails_every_waiter_with_device_lost() {
    let _device = device_lock();
    let rt = std::sync::Arc::new(Runtime::new(small_ring(Duration::from_secs(10))).unwrap());
    // Stalled, so that the jobs are still in flight when the device goes.
    rt.inject_fault(KernelFault::Stall);
    let victims = victims(&rt);
    std::thread::sleep(Duration::from_millis(100));
    rt.inject_fault(KernelFault::DeviceLost);
    victims.all_failed_with(&Error::DeviceLost);
    assert!(matches!(rt.submit(Job::nop()), Err(Error::DeviceLost)));
    assert!(matches!(rt.shutdown(), Err(Error::DeviceLost)));
    assert!(rt.poisoned(), "a lost device's memory is never freed by us");
    bounded("dropping the runtime of a lost device", move || drop(rt));
    a_new_runtime_works();
}

#[test]
fn claims_a_cut_loop_left_unfinished_end_as_job_lost_and_the_runtime_goes_on() {
    let _device = device_lock();
    let rt = Runtime::new(RuntimeConfig {
        workgroups: Some(2),
        ..config()
    })
    .unwrap();
    let program = rt
        .load_program(verify(&assemble(LIGHT_TILE).unwrap(), 0).unwrap())
        .unwrap();
    let table = rt.buffer_table(&[]).unwrap();
    // An ordinary job, then a spread job (dropped at its claim, with its tile 0): each
    // workgroup that drops leaves the loop as a driver's cut would, and the supervisor
    // fails what it claimed.
    rt.inject_fault(KernelFault::DropNextClaim);
    let mut echo = rt.submit(Job::echo([1, 2, 3, 4]).with_tag(11)).unwrap();
    match echo.wait_timeout(BOUND) {
        Err(Error::JobLost { tag: 11 }) => {}
        other => panic!("expected the echo job lost, got {other:?}"),
    }
    rt.inject_fault(KernelFault::DropNextClaim);
    let mut spread = rt.submit_tiled(&program, &table, 400, 4, [0; 4], 100).unwrap();
    match spread.wait_timeout(BOUND) {
        Err(Error::JobLost { .. }) => {}
        other => panic!("expected the spread job lost, got {other:?}"),
    }
    let stats = rt.stats();
    assert_eq!((stats.lost, stats.unplanned_exits), (2, 2), "{stats:?}");
    // The board was reset and the kernel serves on: spread jobs, ordinary jobs.
    for round in 0..3 {
        let tiles = rt
            .submit_tiled(&program, &table, 400, 4, [0; 4], 100)
            .unwrap()
            .wait_timeout(BOUND)
            .unwrap();
        assert_eq!(tiles.len(), 100, "round {round}");
        for (t, c) in tiles.iter().enumerate() {
            assert_eq!(c.results[0], 4 * t as u32);
        }
    }
    assert_eq!(rt.submit(Job::echo([5; 4])).unwrap().wait().unwrap().results, [5; 4]);
    rt.shutdown().unwrap();
    assert_eq!(rt.stats().lost, 2);
    common::assert_validation_clean(&rt);
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path).unwrap().write_all(data).unwrap();
    path
}

/// Files of several chunks each (chunks of 16 KiB, 4 slots), and their CRC-32s.
fn crc_files(dir: &Path, count: usize) -> Vec<(PathBuf, u32)> {
    (0..count)
        .map(|k| {
            let data = common::text(40_000 + 1_111 * k, k as u32 + 3, b"abc\ndef gh\n");
            (write(dir, &format!("file{k}"), &data), crc32fast::hash(&data))
        })
        .collect()
}

fn scan_options() -> ScanOptions {
    ScanOptions {
        chunk_bytes: Some(16 << 10),
        slots: Some(4),
        ..Default::default()
    }
}

#[test]
fn a_read_error_fails_its_file_and_every_other_file_stays_exact() {
    let _device = device_lock();
    let rt = Runtime::new(config()).unwrap();
    let dir = scratch();
    let files = crc_files(dir.path(), 6);
    let paths: Vec<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
    io_faults::fail_reads(&paths[2], libc::EIO);
    let mut scanner = Scanner::new(&rt, ScanProgram::Crc32, &scan_options()).unwrap();
    let reports = scanner.scan(&paths, &mut |_| {});
    io_faults::clear();
    for (k, (report, (_, crc))) in reports.iter().zip(&files).enumerate() {
        if k == 2 {
            match &report.outcome {
                Err(Error::Io(IoError::Read { path, source, .. })) => {
                    assert_eq!(path, &paths[2]);
                    assert_eq!(source.raw_os_error(), Some(libc::EIO));
                }
                other => panic!("the failing file: expected its read error, got {other:?}"),
            }
        } else {
            assert_eq!(report.outcome.as_ref().unwrap(), &ScanValue::Crc32(*crc), "file {k}");
        }
    }
    // And the next scan, through the same scanner, is exact for every file.
    for (report, (_, crc)) in scanner.scan(&paths, &mut |_| {}).iter().zip(&files) {
        assert_eq!(report.outcome.as_ref().unwrap(), &ScanValue::Crc32(*crc));
    }
    drop(scanner);
    rt.shutdown().unwrap();
    common::assert_validation_clean(&rt);
}

#[test]
fn an_io_uring_failure_fails_the_files_in_flight_and_the_rest_stay_exact() {
    let _device = device_lock();
    let rt = Runtime::new(config()).unwrap();
    let dir = scratch();
    let files = crc_files(dir.path(), 16);
    let paths: Vec<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
    let mut scanner = Scanner::new(&rt, ScanProgram::Crc32, &scan_options()).unwrap();
    for failures in [1, 2] {
        // The scan's first io_uring_enter calls fail: the reads queued by then are in flight
        // for the scan, and their files fail; the reader restarts and the others go on.
        io_faults::fail_enters(failures, libc::EBADF);
        let reports = scanner.scan(&paths, &mut |_| {});
        io_faults::clear();
        let mut failed = 0;
        for (k, (report, (_, crc))) in reports.iter().zip(&files).enumerate() {
            match &report.outcome {
                Ok(value) => assert_eq!(value, &ScanValue::Crc32(*crc), "file {k}"),
                Err(Error::Io(IoError::ReaderFailed { path, source })) => {
                    assert_eq!(path, &paths[k]);
                    assert_eq!(source.raw_os_error(), Some(libc::EBADF));
                    failed += 1;
                }
                Err(e) => panic!("file {k}: {e}"),
            }
        }
        assert!(failed > 0, "no file had a read in flight when io_uring failed");
        assert!(failed < paths.len(), "every file failed, not only those in flight");
        // The scanner is whole again: every file exact.
        for (report, (_, crc)) in scanner.scan(&paths, &mut |_| {}).iter().zip(&files) {
            assert_eq!(report.outcome.as_ref().unwrap(), &ScanValue::Crc32(*crc));
        }
    }
    drop(scanner);
    rt.shutdown().unwrap();
    common::assert_validation_clean(&rt);
}

/// Sums b0's u32 words into result 0 (the continuation of every request here).
const SUM: &str = "
        lane r1
        grid r2
        movi r9, 2
        shru r2, r2, r9
        lanes r3
top:    ltu r4, r1, r2
        brz r4, done
        ld32 r5, b0[r1]
        add r6, r6, r5
        add r1, r1, r3
        jmp top
done:   red.add r7, r6
        result 0, r7
        halt
";

#[test]
fn read_errors_and_io_uring_failures_in_the_dma_service_fail_alone() {
    let _device = device_lock();
    let rt = Runtime::new(config()).unwrap();
    let dir = scratch();
    let words: Vec<u32> = (0..2048u32).map(|k| k.wrapping_mul(2_654_435_761)).collect();
    let bytes: &[u8] = bytemuck::cast_slice(&words);
    let good = write(dir.path(), "good", bytes);
    let bad = write(dir.path(), "bad", bytes);
    let mut dma = DmaService::new(&rt, 4, 8192, 16).unwrap();
    let (g, b) = (dma.register_file(&good).unwrap(), dma.register_file(&bad).unwrap());
    let sum = dma
        .register_continuation(verify(&assemble(SUM).unwrap(), 2).unwrap())
        .unwrap();
    let request = |file, block: u64| DmaRequest {
        file,
        offset: block * 4096,
        len: 4096,
        continuation: sum,
        args: [block as u32, 0],
    };
    let requests = [request(g, 0), request(b, 0), request(g, 1), request(b, 1)];
    let record_words: Vec<u32> = requests.iter().flat_map(DmaRequest::to_words).collect();
    let input = rt
        .alloc_u32(record_words.len() as u64, Placement::DeviceShared)
        .unwrap();
    input.write_u32(0, &record_words).unwrap();
    let copy = verify(&assemble(COPY_REQUESTS).unwrap(), 2).unwrap();
    let block_sum = |block: usize| {
        words[block * 1024..(block + 1) * 1024]
            .iter()
            .fold(0u32, |s, w| s.wrapping_add(*w))
    };

    // Reads of one file fail: its two requests are rejected with the read error, the
    // other file's continuations run over exact bytes.
    io_faults::fail_reads(&bad, libc::EIO);
    let report = dma.run(&copy, Some(&input), &[], 1, [0; 4]).unwrap();
    io_faults::clear();
    assert_eq!(report.rejected.len(), 2, "{:?}", report.rejected);
    for rejection in &report.rejected {
        match &rejection.error {
            DmaError::Read {
                source: IoError::Read { source, path, .. },
                ..
            } => {
                assert_eq!(path, &bad);
                assert_eq!(source.raw_os_error(), Some(libc::EIO));
            }
            other => panic!("expected a read error, got {other}"),
        }
    }
    let mut sums: Vec<(u32, u32)> = report
        .continuations(sum)
        .map(|job| (job.request.unwrap().args[0], job.outcome.as_ref().unwrap().results[0]))
        .collect();
    sums.sort_unstable();
    assert_eq!(sums, [(0, block_sum(0)), (1, block_sum(1))]);

    // io_uring itself fails while the reads are queued: the run reports it, and the next
    // run is served whole (the reader was restarted, the slots given back).
    io_faults::fail_enters(1, libc::EBADF);
    match dma.run(&copy, Some(&input), &[], 1, [0; 4]) {
        Err(Error::Io(IoError::Submit { source })) => assert_eq!(source.raw_os_error(), Some(libc::EBADF)),
        other => panic!("expected the io_uring failure, got {other:?}"),
    }
    io_faults::clear();
    for _ in 0..2 {
        let report = dma.run(&copy, Some(&input), &[], 1, [0; 4]).unwrap();
        assert!(report.rejected.is_empty(), "{:?}", report.rejected);
        assert_eq!(report.continuations(sum).count(), 4);
        for job in report.continuations(sum) {
            let block = job.request.unwrap().args[0] as usize;
            assert_eq!(job.outcome.as_ref().unwrap().results[0], block_sum(block));
        }
    }
    drop(dma);
    rt.shutdown().unwrap();
    common::assert_validation_clean(&rt);
}
