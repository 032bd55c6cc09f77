//! `megaring soak`: everything at once, from several threads, for as long as asked, with
//! every result checked. Each thread runs scenarios at random: echo batches, fill, copy
//! and sum jobs, bytecode jobs with temporary programs and buffer tables (checked against
//! the CPU reference interpreter), jobs that fault on purpose, spread jobs (bursts beyond
//! the board's open list among them), detached jobs, waits that time out first, forced
//! relaunches, and scans of real files (checked against CPU computations). Meanwhile the
//! runtime is shut down with jobs in flight and started again, over and over.
//!
//! A job ends done (checked), cancelled (by a shutdown), or as a failure: lost, duplicated
//! (its completion came twice), wrong, hung (a wait past `--hang-seconds`), or another
//! error. Any failure, or any validation message, fails the soak.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use clap::Args;
use megaring::io::{ScanOptions, ScanProgram, ScanValue, Scanner};
use megaring::vm::{assemble, interp, verify, VerifiedProgram};
use megaring::{Completion, DeviceBuffer, Error, Job, Placement, Runtime, RuntimeConfig};

/// Options of `megaring soak`.
#[derive(Args)]
pub struct SoakArgs {
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Threads submitting at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    threads: u64,
    /// Seconds between shutting the runtime down (jobs in flight) and starting a new one.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    restart_every: u64,
    /// A wait longer than this many seconds counts as a hang.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    hang_seconds: u64,
    /// A directory whose regular files (the first 64, up to 64 MiB each) are scanned too,
    /// besides the soak's own.
    #[arg(long)]
    files: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// A strided wrapping sum of b0's `grid` words into result 0.
const SUM: &str = "
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

/// b1[i] = b0[i] * arg 0 + arg 1 for i < grid.
const SCALE: &str = "
        lane r1
        grid r2
        lanes r3
        arg r4, 0
        arg r5, 1
    top: ltu r6, r1, r2
        brz r6, done
        ld32 r7, b0[r1]
        mul r7, r7, r4
        add r7, r7, r5
        st32 b1[r1], r7
        add r1, r1, r3
        jmp top
    done: halt
";

/// Reads far outside b0: faults, on purpose.
const OUT_OF_RANGE: &str = "
        movi r1, 1000000
        ld32 r2, b0[r1]
        halt
";

/// Spread-job tiles: out[i] = 3 i + arg 0 over the tile; results: the tile's first
/// element, its end, and the elements its lanes wrote.
const TILE: &str = "
        tile.begin r30
        lane r1
        add r1, r1, r30
        grid r2
        lanes r3
        arg r8, 0
        movi r9, 3
        ltu r4, r1, r2
        brz r4, done
    top: mul r5, r1, r9
        add r5, r5, r8
        st32 b0[r1], r5
        addi r6, r6, 1
        loop r1, r3, r2, top
    done: red.add r7, r6
        result 0, r30
        result 1, r2
        result 2, r7
        halt
";

/// The soak's tallies. Failures are the last six.
#[derive(Default)]
struct Tally {
    submitted: AtomicU64,
    done: AtomicU64,
    cancelled: AtomicU64,
    refused_by_shutdown: AtomicU64,
    faulted_as_expected: AtomicU64,
    detached: AtomicU64,
    ring_full: AtomicU64,
    spread_jobs: AtomicU64,
    files_scanned: AtomicU64,
    bytes_scanned: AtomicU64,
    relaunches: AtomicU64,
    restarts: AtomicU64,
    lost: AtomicU64,
    duplicated: AtomicU64,
    wrong: AtomicU64,
    hangs: AtomicU64,
    errors: AtomicU64,
    validation_errors: AtomicU64,
    /// The first failures, described.
    examples: Mutex<Vec<String>>,
    /// Failures by scenario (the text before the first ':' of each description).
    by_scenario: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Tally {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn failures(&self) -> u64 {
        [
            &self.lost,
            &self.duplicated,
            &self.wrong,
            &self.hangs,
            &self.errors,
            &self.validation_errors,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }

    fn fail(&self, counter: &AtomicU64, what: String) {
        Self::add(counter, 1);
        let scenario = what.split(':').next().unwrap_or_default().to_owned();
        *self
            .by_scenario
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(scenario)
            .or_default() += 1;
        let mut examples = self.examples.lock().unwrap_or_else(|p| p.into_inner());
        if examples.len() < 20 {
            examples.push(what);
        }
    }
}

/// A file the soak scans, and what a CPU computes of it.
struct SoakFile {
    path: PathBuf,
    bytes: u64,
    lines: u64,
    crc: u32,
    count_a: u64,
    histogram: Vec<u64>,
}

impl SoakFile {
    fn read(path: &Path) -> std::io::Result<Self> {
        let data = std::fs::read(path)?;
        let mut histogram = vec![0u64; 256];
        for &b in &data {
            histogram[b as usize] += 1;
        }
        Ok(SoakFile {
            path: path.to_owned(),
            bytes: data.len() as u64,
            lines: histogram[b'\n' as usize],
            crc: crc32fast::hash(&data),
            count_a: histogram[b'a' as usize],
            histogram,
        })
    }

    fn expected(&self, program: &ScanProgram) -> ScanValue {
        match program {
            ScanProgram::Lines => ScanValue::Count(self.lines),
            ScanProgram::CountByte(_) => ScanValue::Count(self.count_a),
            ScanProgram::Crc32 => ScanValue::Crc32(self.crc),
            _ => ScanValue::Histogram(self.histogram.clone()),
        }
    }
}

/// Everything the threads share.
struct Soak {
    config: RuntimeConfig,
    current: RwLock<Arc<Runtime>>,
    stop: AtomicBool,
    bound: Duration,
    files: Vec<SoakFile>,
    programs: [VerifiedProgram; 4],
    tally: Tally,
}

/// xorshift64*: each thread's own stream of choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

/// One thread's tags (`thread << 48 | n`) and which of them already came back.
struct Tags {
    thread: u64,
    next: u64,
    seen: Vec<u64>,
}

impl Tags {
    fn new(thread: u64) -> Self {
        Tags {
            thread,
            next: 0,
            seen: Vec::new(),
        }
    }

    fn fresh(&mut self) -> u64 {
        self.next += 1;
        self.thread << 48 | self.next
    }

    /// Marks `tag` (one of this thread's) as come back; false if it already had.
    fn first_time(&mut self, tag: u64) -> bool {
        let n = (tag & ((1 << 48) - 1)) as usize;
        if self.seen.len() <= n / 64 {
            self.seen.resize(n / 64 + 1, 0);
        }
        let bit = 1u64 << (n % 64);
        let first = self.seen[n / 64] & bit == 0;
        self.seen[n / 64] |= bit;
        first
    }
}

impl Soak {
    fn runtime(&self) -> Arc<Runtime> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records the outcome of the job tagged `tag`: done if `check` accepts it.
    fn settle(
        &self,
        tags: &mut Tags,
        tag: u64,
        what: &str,
        outcome: megaring::Result<Completion>,
        check: impl FnOnce(&Completion) -> bool,
    ) {
        let t = &self.tally;
        match outcome {
            Ok(c) if c.tag != tag => {
                let mine = c.tag >> 48 == tags.thread;
                if mine && !tags.first_time(c.tag) {
                    t.fail(
                        &t.duplicated,
                        format!("{what}: the completion of tag {:#x} came again, to {tag:#x}", c.tag),
                    );
                } else {
                    t.fail(
                        &t.wrong,
                        format!("{what}: job {tag:#x} got the completion of {:#x}", c.tag),
                    );
                }
            }
            Ok(c) => {
                if !tags.first_time(tag) {
                    t.fail(&t.duplicated, format!("{what}: job {tag:#x} completed twice"));
                } else if check(&c) {
                    Tally::add(&t.done, 1);
                } else {
                    t.fail(&t.wrong, format!("{what}: job {tag:#x} gave {:?}", c.results));
                }
            }
            Err(e) => self.failed(what, e),
        }
    }

    /// Records a job that ended with `e`: cancelled by a shutdown, or a failure.
    fn failed(&self, what: &str, e: Error) {
        let t = &self.tally;
        match e {
            Error::Cancelled { .. } => Tally::add(&t.cancelled, 1),
            Error::ShutDown => Tally::add(&t.refused_by_shutdown, 1),
            Error::BatchIncomplete { source, .. } => self.failed(what, *source),
            Error::Timeout(_) => t.fail(&t.hangs, format!("{what}: no outcome within {:?}", self.bound)),
            Error::JobLost { .. } => t.fail(&t.lost, format!("{what}: {e}")),
            e => t.fail(&t.errors, format!("{what}: {e}")),
        }
    }

    /// Submits `job`; `None` (counted) if the runtime refused it.
    fn submit(&self, rt: &Runtime, job: Job, what: &str) -> Option<megaring::JobHandle> {
        match rt.submit(job) {
            Ok(handle) => {
                Tally::add(&self.tally.submitted, 1);
                Some(handle)
            }
            Err(e) => {
                self.failed(what, e);
                None
            }
        }
    }

    /// Host memory or device memory the host maps, at random: jobs' outputs go to both.
    fn output_placement(rng: &mut Rng) -> Placement {
        if rng.below(2) == 0 {
            Placement::HostCached
        } else {
            Placement::DeviceShared
        }
    }

    /// Waits until what jobs completed so far wrote to host memory has landed: the launch
    /// they ran in has ended (docs/protocol.md, "Guarantees"). False after the hang bound.
    fn landed(&self, rt: &Runtime, placement: Placement) -> bool {
        if placement != Placement::HostCached {
            return true;
        }
        let launch = rt.launches();
        let start = Instant::now();
        while !rt.fresh_launch_since(launch) {
            if start.elapsed() > self.bound {
                return false;
            }
            rt.request_relaunch();
            std::thread::sleep(Duration::from_micros(50));
        }
        true
    }

    fn worker(&self, thread: u64) {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (thread + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
        let mut tags = Tags::new(thread);
        while !self.stop.load(Ordering::Relaxed) {
            let rt = self.runtime();
            match rng.below(12) {
                0 | 1 => self.echo_batch(&rt, &mut rng, &mut tags),
                2 => self.fill_copy_sum(&rt, &mut rng, &mut tags),
                3 | 4 => self.program(&rt, &mut rng, &mut tags),
                5 => self.fault(&rt, &mut tags),
                6 | 7 => self.spread(&rt, &mut rng),
                8 => self.detached(&rt, &mut rng),
                9 => self.timeout_then_wait(&rt, &mut rng, &mut tags),
                10 => {
                    rt.request_relaunch();
                    Tally::add(&self.tally.relaunches, 1);
                    self.echo_batch(&rt, &mut rng, &mut tags);
                }
                _ => self.scan(&rt, &mut rng),
            }
        }
    }

    /// A batch of echo jobs (or one through `try_submit`), each checked.
    fn echo_batch(&self, rt: &Runtime, rng: &mut Rng, tags: &mut Tags) {
        let count = rng.range(1, 64) as usize;
        let jobs: Vec<(u64, [u32; 4])> = (0..count)
            .map(|_| {
                (
                    tags.fresh(),
                    [rng.next() as u32, rng.next() as u32, rng.next() as u32, 7],
                )
            })
            .collect();
        let handles = if count == 1 && rng.below(2) == 0 {
            match rt.try_submit(Job::echo(jobs[0].1).with_tag(jobs[0].0)) {
                Err(Error::RingFull { .. }) => {
                    Tally::add(&self.tally.ring_full, 1);
                    return;
                }
                other => other.map(|h| vec![h]),
            }
        } else {
            rt.submit_batch(jobs.iter().map(|&(tag, words)| Job::echo(words).with_tag(tag)))
        };
        match handles {
            Ok(handles) => {
                Tally::add(&self.tally.submitted, handles.len() as u64);
                for (mut handle, (tag, words)) in handles.into_iter().zip(jobs) {
                    let outcome = handle.wait_timeout(self.bound);
                    self.settle(tags, tag, "echo", outcome, |c| c.results == words);
                }
            }
            Err(e) => self.failed("echo batch", e),
        }
    }

    /// fill, copy and sum_u32 over fresh buffers, one after the other, each checked.
    fn fill_copy_sum(&self, rt: &Runtime, rng: &mut Rng, tags: &mut Tags) {
        let n = rng.range(1, 4096);
        let value = rng.next() as u32;
        let placement = Self::output_placement(rng);
        let (Ok(src), Ok(dst)) = (rt.alloc_u32(n, Placement::DeviceShared), rt.alloc_u32(n, placement)) else {
            return self.failed("allocation", Error::InvalidArgument("buffers for fill/copy/sum".into()));
        };
        let steps = [
            ("fill", Job::fill(&src, 0..n, value)),
            ("copy", Job::copy(&src, 0..n, &dst, 0)),
            ("sum", Job::sum_u32(&dst, 0..n)),
            ("nop", Ok(Job::nop())),
        ];
        for (what, job) in steps {
            let tag = tags.fresh();
            let Some(mut handle) = job.ok().and_then(|job| self.submit(rt, job.with_tag(tag), what)) else {
                return;
            };
            let outcome = handle.wait_timeout(self.bound);
            let sum = u64::from(value) * n;
            let copied =
                || self.landed(rt, placement) && dst.read_u32(0, n).is_ok_and(|w| w.iter().all(|&x| x == value));
            self.settle(tags, tag, what, outcome, |c| match what {
                "sum" => c.sum_u64() == sum,
                "copy" => copied(),
                _ => c.results == [0; 4],
            });
        }
    }

    /// A bytecode job with its own program, buffers and table, all dropped by the host
    /// right after the submit; checked against the CPU reference interpreter.
    fn program(&self, rt: &Runtime, rng: &mut Rng, tags: &mut Tags) {
        let which = rng.below(2) as usize;
        let grid = rng.range(1, 4096) as u32;
        let args = [rng.next() as u32, rng.next() as u32, 0, 0];
        let lanes = rt.info().vm_lanes;
        let fuel = (16 + 10 * grid.div_ceil(lanes)).min(rt.max_fuel());
        let input: Vec<u32> = (0..grid).map(|_| rng.next() as u32).collect();
        let mut buffers = vec![bytemuck::cast_slice(&input).to_vec(), vec![0u8; grid as usize * 4]];
        let launch = interp::Launch {
            lanes,
            grid,
            tile_begin: 0,
            args,
            fuel,
        };
        let expected = interp::run(&self.programs[which], &launch, &mut buffers);
        let placement = Self::output_placement(rng);
        let made = (|| -> megaring::Result<(Job, DeviceBuffer)> {
            let b0 = rt.alloc_u32(u64::from(grid), Placement::DeviceShared)?;
            b0.write_u32(0, &input)?;
            let b1 = rt.alloc_u32(u64::from(grid), placement)?;
            let program = rt.load_program(self.programs[which].clone())?;
            let table = rt.buffer_table(&[&b0, &b1])?;
            Ok((Job::program(&program, &table, grid, args, fuel)?, b1))
        })();
        let (job, b1) = match made {
            Ok(made) => made,
            Err(e) => return self.failed("program set-up", e),
        };
        let tag = tags.fresh();
        let Some(mut handle) = self.submit(rt, job.with_tag(tag), "program") else {
            return;
        };
        let outcome = handle.wait_timeout(self.bound);
        let written = || {
            self.landed(rt, placement)
                .then(|| b1.read_u32(0, u64::from(grid)).ok())
                .flatten()
        };
        let want: Vec<u32> = bytemuck::cast_slice(&buffers[1]).to_vec();
        self.settle(tags, tag, ["sum program", "scale program"][which], outcome, |c| {
            expected.status == 0 && c.results == expected.results && written().is_some_and(|w| w == want)
        });
    }

    /// A job that reads outside its buffer: it must fault, as the reference says.
    fn fault(&self, rt: &Runtime, tags: &mut Tags) {
        let lanes = rt.info().vm_lanes;
        let launch = interp::Launch {
            lanes,
            grid: 1,
            tile_begin: 0,
            args: [0; 4],
            fuel: 100,
        };
        let expected = interp::run(&self.programs[2], &launch, &mut [vec![0u8; 4], Vec::new()]);
        let made = (|| -> megaring::Result<Job> {
            let b0 = rt.alloc_u32(1, Placement::DeviceShared)?;
            let program = rt.load_program(self.programs[2].clone())?;
            let table = rt.buffer_table(&[&b0, &b0])?;
            Job::program(&program, &table, 1, [0; 4], 100)
        })();
        let job = match made {
            Ok(job) => job,
            Err(e) => return self.failed("fault set-up", e),
        };
        let tag = tags.fresh();
        let Some(mut handle) = self.submit(rt, job.with_tag(tag), "fault") else {
            return;
        };
        match handle.wait_timeout(self.bound) {
            Err(Error::Fault(f))
                if f.status == expected.status && f.instruction == expected.results[0] && f.tag == tag =>
            {
                if tags.first_time(tag) {
                    Tally::add(&self.tally.faulted_as_expected, 1);
                } else {
                    self.tally
                        .fail(&self.tally.duplicated, format!("fault job {tag:#x} ended twice"));
                }
            }
            Err(Error::Fault(f)) => self.tally.fail(
                &self.tally.wrong,
                format!("fault job: {f}; the reference faulted with {:?}", expected),
            ),
            Ok(c) => self
                .tally
                .fail(&self.tally.wrong, format!("fault job completed with {:?}", c.results)),
            Err(e) => self.failed("fault", e),
        }
    }

    /// Spread jobs over fresh buffers: one, or a burst beyond the board's open list.
    fn spread(&self, rt: &Runtime, rng: &mut Rng) {
        let count = if rng.below(4) == 0 {
            megaring::ring::layout::BOARD_OPEN as u64 + rng.range(1, 8)
        } else {
            1
        };
        let lanes = rt.info().vm_lanes;
        let program = match rt.load_program(self.programs[3].clone()) {
            Ok(program) => program,
            Err(e) => return self.failed("spread set-up", e),
        };
        let mut jobs = Vec::new();
        for _ in 0..count {
            let grid = rng.range(100, 20_000) as u32;
            let most = ((rt.max_fuel().saturating_sub(40) / 6) * lanes).max(4);
            let tile = (rng.range(64, 2_000) as u32).min(most);
            let add = rng.next() as u32;
            let fuel = 30 + 6 * tile.div_ceil(lanes);
            let placement = Self::output_placement(rng);
            let made = rt
                .alloc_u32(u64::from(grid), placement)
                .and_then(|out| Ok((rt.buffer_table(&[&out])?, out)))
                .and_then(|(table, out)| {
                    Ok((
                        rt.submit_tiled(&program, &table, grid, tile, [add, 0, 0, 0], fuel)?,
                        out,
                    ))
                });
            match made {
                Ok((handle, out)) => {
                    Tally::add(&self.tally.submitted, 1);
                    Tally::add(&self.tally.spread_jobs, 1);
                    jobs.push((handle, out, grid, tile, add, placement));
                }
                Err(e) => self.failed("spread job", e),
            }
        }
        for (mut handle, out, grid, tile, add, placement) in jobs {
            match handle.wait_timeout(self.bound) {
                Ok(tiles) => {
                    let ranges = tiles.len() as u32 == grid.div_ceil(tile)
                        && tiles.iter().enumerate().all(|(t, c)| {
                            let begin = t as u32 * tile;
                            let end = (begin + tile).min(grid);
                            c.results[..3] == [begin, end, end - begin]
                        });
                    let filled = self.landed(rt, placement)
                        && out.read_u32(0, u64::from(grid)).is_ok_and(|w| {
                            w.iter()
                                .enumerate()
                                .all(|(i, &x)| x == (3 * i as u32).wrapping_add(add))
                        });
                    if ranges && filled {
                        Tally::add(&self.tally.done, 1);
                    } else {
                        self.tally.fail(
                            &self.tally.wrong,
                            format!(
                                "spread job of {grid} elements in tiles of {tile}: ranges {ranges}, filled {filled}"
                            ),
                        );
                    }
                }
                Err(e) => self.failed("spread job", e),
            }
        }
    }

    /// A fill whose handle is dropped at once: the job still runs, as its buffer shows
    /// (unless a shutdown cancelled it first: once the runtime was replaced, its shutdown
    /// is over, and the buffer says which).
    fn detached(&self, rt: &Arc<Runtime>, rng: &mut Rng) {
        let n = rng.range(1, 2048);
        let value = (rng.next() as u32) | 1;
        let Ok(buffer) = rt.alloc_u32(n, Placement::DeviceShared) else {
            return self.failed("detached set-up", Error::InvalidArgument("a buffer".into()));
        };
        let Some(handle) = Job::fill(&buffer, 0..n, value)
            .ok()
            .and_then(|job| self.submit(rt, job, "detached fill"))
        else {
            return;
        };
        drop(handle);
        let filled = || buffer.read_u32(0, n).is_ok_and(|w| w.iter().all(|&x| x == value));
        let start = Instant::now();
        loop {
            let replaced = !Arc::ptr_eq(&self.runtime(), rt);
            if filled() {
                Tally::add(&self.tally.detached, 1);
                return;
            }
            if replaced {
                Tally::add(&self.tally.cancelled, 1);
                return;
            }
            if start.elapsed() > self.bound {
                self.tally
                    .fail(&self.tally.hangs, format!("a detached fill of {n} words never ran"));
                return;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// A long sum that a zero wait times out on first; the handle then waits on.
    fn timeout_then_wait(&self, rt: &Runtime, rng: &mut Rng, tags: &mut Tags) {
        // About a third of what one job may cost on this device.
        let steps = u64::from(rt.max_fuel()) * 8;
        let n = u64::from(rt.info().lanes) * steps.min(1 << 16);
        let value = rng.range(1, 1000) as u32;
        let Ok(buffer) = rt.alloc_u32(n, Placement::DeviceShared) else {
            return self.failed("timeout set-up", Error::InvalidArgument("a buffer".into()));
        };
        if buffer.write_u32(0, &vec![value; n as usize]).is_err() {
            return;
        }
        let tag = tags.fresh();
        let Some(mut handle) = Job::sum_u32(&buffer, 0..n)
            .ok()
            .and_then(|job| self.submit(rt, job.with_tag(tag), "sum"))
        else {
            return;
        };
        match handle.wait_timeout(Duration::ZERO) {
            Err(Error::Timeout(_)) => {}
            outcome => {
                // It was quick: fine, as long as it is right.
                return self.settle(tags, tag, "quick sum", outcome, |c| c.sum_u64() == u64::from(value) * n);
            }
        }
        let outcome = handle.wait_timeout(self.bound);
        self.settle(tags, tag, "sum after a timeout", outcome, |c| {
            c.sum_u64() == u64::from(value) * n
        });
    }

    /// A scan of some of the files, with one of the library programs, chunk sizes and slot
    /// counts chosen at random; every file checked.
    fn scan(&self, rt: &Runtime, rng: &mut Rng) {
        if self.files.is_empty() {
            return;
        }
        let program = match rng.below(4) {
            0 => ScanProgram::Lines,
            1 => ScanProgram::Crc32,
            2 => ScanProgram::CountByte(b'a'),
            _ => ScanProgram::Histogram,
        };
        let options = ScanOptions {
            chunk_bytes: Some([16 << 10, 64 << 10, 256 << 10][rng.below(3) as usize]),
            slots: Some(rng.range(2, 4) as usize),
            ..Default::default()
        };
        let count = rng.range(1, 8) as usize;
        let picked: Vec<&SoakFile> = (0..count)
            .map(|_| &self.files[rng.below(self.files.len() as u64) as usize])
            .collect();
        let paths: Vec<PathBuf> = picked.iter().map(|f| f.path.clone()).collect();
        let mut scanner = match Scanner::new(rt, program.clone(), &options) {
            Ok(scanner) => scanner,
            Err(e) => return self.failed("scanner set-up", e),
        };
        for (report, file) in scanner.scan(&paths, &mut |_| {}).into_iter().zip(picked) {
            match report.outcome {
                Ok(value) if value == file.expected(&program) => {
                    Tally::add(&self.tally.files_scanned, 1);
                    Tally::add(&self.tally.bytes_scanned, file.bytes);
                }
                Ok(value) => self.tally.fail(
                    &self.tally.wrong,
                    format!("{} of {}: {value}", program.name(), file.path.display()),
                ),
                Err(e) => self.failed(&format!("scan of {}", file.path.display()), e),
            }
        }
    }
}

/// The soak's own files: sizes around chunk and page borders, text with newlines.
fn write_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let sizes = [
        0usize,
        1,
        4095,
        4097,
        16_384,
        65_535,
        65_537,
        100_003,
        262_144,
        300_001,
        1 << 20,
    ];
    let mut paths = Vec::new();
    for (k, &n) in sizes.iter().enumerate() {
        let mut x = (k as u32 + 1).wrapping_mul(2_654_435_761) | 1;
        let data: Vec<u8> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                b"ab\ncd a\nxyz"[x as usize % 11]
            })
            .collect();
        let path = dir.join(format!("soak-{k}.txt"));
        std::fs::write(&path, data)?;
        paths.push(path);
    }
    Ok(paths)
}

/// Runs the soak; returns whether it found no failure.
pub fn soak(config: RuntimeConfig, args: SoakArgs) -> Result<bool, Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("megaring-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut paths = write_files(&dir)?;
    if let Some(extra) = &args.files {
        let mut found: Vec<PathBuf> = std::fs::read_dir(extra)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() <= 64 << 20))
            .collect();
        found.sort();
        paths.extend(found.into_iter().take(64));
    }
    let files = paths
        .iter()
        .map(|p| SoakFile::read(p))
        .collect::<std::io::Result<Vec<_>>>()?;
    let program = |source: &str, buffers| verify(&assemble(source)?, buffers);
    let soak = Soak {
        current: RwLock::new(Arc::new(Runtime::new(config.clone())?)),
        config,
        stop: AtomicBool::new(false),
        bound: Duration::from_secs(args.hang_seconds),
        files,
        programs: [
            program(SUM, 2)?,
            program(SCALE, 2)?,
            program(OUT_OF_RANGE, 2)?,
            program(TILE, 1)?,
        ],
        tally: Tally::default(),
    };
    let device = soak.runtime().info().caps.name.clone();
    let start = Instant::now();
    let end = start + Duration::from_secs(args.seconds);
    std::thread::scope(|s| -> Result<(), Box<dyn std::error::Error>> {
        for thread in 0..args.threads {
            let soak = &soak;
            s.spawn(move || soak.worker(thread));
        }
        let outcome = restart_until(&soak, end, Duration::from_secs(args.restart_every));
        soak.stop.store(true, Ordering::Relaxed);
        outcome
    })?;
    let last = soak.runtime();
    if let Err(e) = last.shutdown() {
        soak.failed("the last shutdown", e);
    }
    count_validation(&soak, &last);
    let seconds = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    let t = &soak.tally;
    let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let ok = t.failures() == 0;
    let examples = t.examples.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if args.json {
        let value = serde_json::json!({
            "device": device,
            "seconds": seconds,
            "threads": args.threads,
            "ok": ok,
            "jobs": {
                "submitted": n(&t.submitted),
                "done": n(&t.done),
                "faulted_as_expected": n(&t.faulted_as_expected),
                "detached_seen_done": n(&t.detached),
                "cancelled": n(&t.cancelled),
                "refused_by_shutdown": n(&t.refused_by_shutdown),
                "lost": n(&t.lost),
                "duplicated": n(&t.duplicated),
                "wrong": n(&t.wrong),
                "hangs": n(&t.hangs),
                "errors": n(&t.errors),
            },
            "spread_jobs": n(&t.spread_jobs),
            "files_scanned": n(&t.files_scanned),
            "bytes_scanned": n(&t.bytes_scanned),
            "ring_full_refusals": n(&t.ring_full),
            "relaunch_requests": n(&t.relaunches),
            "runtime_restarts": n(&t.restarts),
            "validation_errors": n(&t.validation_errors),
            "failures": examples,
            "failures_by_scenario": t.by_scenario.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!(
            "soak on {device}: {seconds:.0} s, {} threads, {} runtime restarts",
            args.threads,
            n(&t.restarts)
        );
        println!(
            "  jobs: {} submitted, {} done and checked, {} faulted as expected, {} detached seen done, {} cancelled and {} refused by shutdowns",
            n(&t.submitted),
            n(&t.done),
            n(&t.faulted_as_expected),
            n(&t.detached),
            n(&t.cancelled),
            n(&t.refused_by_shutdown)
        );
        println!(
            "  {} spread jobs, {} files scanned and checked ({} MB), {} relaunch requests, {} ring-full refusals",
            n(&t.spread_jobs),
            n(&t.files_scanned),
            n(&t.bytes_scanned) / 1_000_000,
            n(&t.relaunches),
            n(&t.ring_full)
        );
        println!(
            "  lost {}, duplicated {}, wrong {}, hangs {}, other errors {}, validation errors {}",
            n(&t.lost),
            n(&t.duplicated),
            n(&t.wrong),
            n(&t.hangs),
            n(&t.errors),
            n(&t.validation_errors)
        );
        for example in &examples {
            println!("  failure: {example}");
        }
    }
    Ok(ok)
}

/// Until `end`: every `every`, starts a new runtime, hands it to the threads, and shuts the
/// old one down with their jobs still in flight on it.
fn restart_until(soak: &Soak, end: Instant, every: Duration) -> Result<(), Box<dyn std::error::Error>> {
    loop {
        let next = (Instant::now() + every).min(end);
        while Instant::now() < next {
            std::thread::sleep(Duration::from_millis(20));
        }
        if Instant::now() >= end {
            return Ok(());
        }
        let new = Arc::new(Runtime::new(soak.config.clone())?);
        let old = std::mem::replace(&mut *soak.current.write().unwrap_or_else(|p| p.into_inner()), new);
        if let Err(e) = old.shutdown() {
            soak.failed("a shutdown with jobs in flight", e);
        }
        count_validation(soak, &old);
        Tally::add(&soak.tally.restarts, 1);
    }
}

fn count_validation(soak: &Soak, rt: &Runtime) {
    let errors = rt.validation_errors() as u64;
    if errors > 0 {
        let first = rt.validation_messages().into_iter().next().unwrap_or_default();
        soak.tally.fail(
            &soak.tally.validation_errors,
            format!("{errors} validation errors, first: {first}"),
        );
        Tally::add(&soak.tally.validation_errors, errors - 1);
    }
}
