//! Measurements shared by `megaring bench` and `benches/`: the ring round trip, its
//! baseline (`vkQueueSubmit` + fence wait of a one-lane dispatch on the same device),
//! sustained jobs/s, and the relaunch price an idle park pays. Every speed claim is a
//! ratio against a baseline measured in the same run.

mod ingest;

pub use ingest::{ingest, raw_uring, IngestFile, IngestOptions, IngestReport, IngestRow};

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::vk::{Buffer, ComputePipeline, Context, Dispatcher, Placement};
use crate::{Job, JobHandle, Runtime};

/// Order statistics of a set of durations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub samples: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Smallest sample.
    pub min: Duration,
    /// Arithmetic mean.
    pub mean: Duration,
}

impl Summary {
    /// Summarises `samples` (sorted in place). Panics on an empty slice.
    pub fn of(samples: &mut [Duration]) -> Summary {
        assert!(!samples.is_empty(), "no samples");
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Summary {
            samples: samples.len(),
            p50: at(0.50),
            p99: at(0.99),
            min: samples[0],
            mean: samples.iter().sum::<Duration>() / samples.len() as u32,
        }
    }

    /// The summary as JSON, in microseconds.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "samples": self.samples,
            "p50_us": micros(self.p50),
            "p99_us": micros(self.p99),
            "min_us": micros(self.min),
            "mean_us": micros(self.mean),
        })
    }
}

/// Microseconds as a float.
pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The baseline: one pre-recorded dispatch of `glsl/baselines/ping.comp` (one workgroup),
/// submitted with `vkQueueSubmit` and waited for with `vkWaitForFences`.
pub struct SubmitBaseline {
    dispatcher: Dispatcher,
    _pipeline: ComputePipeline,
    word: Buffer,
    value: u32,
}

impl SubmitBaseline {
    /// Builds the baseline on `ctx` (use a context of its own: a resident megakernel
    /// would occupy the queue it submits to).
    pub fn new(ctx: &Arc<Context>) -> Result<Self> {
        let pipeline = ComputePipeline::new(ctx, crate::shaders::PING, 16, &[])?;
        let word = Buffer::new(ctx, "ping word", 4, Placement::DeviceShared)?;
        let mut dispatcher = Dispatcher::new(ctx)?;
        let mut push = [0u8; 16];
        push[..8].copy_from_slice(&word.address().to_le_bytes());
        dispatcher.record(&pipeline, &push, 1)?;
        Ok(SubmitBaseline {
            dispatcher,
            _pipeline: pipeline,
            word,
            value: 0,
        })
    }

    /// One submit + fence round trip; checks the dispatch really ran.
    pub fn round_trip(&mut self) -> Result<Duration> {
        let start = Instant::now();
        self.dispatcher.submit()?;
        self.dispatcher.wait(Duration::from_secs(60))?;
        let elapsed = start.elapsed();
        let mut out = [0u8; 4];
        self.word.read_bytes(0, &mut out);
        self.value = u32::from_le_bytes(out);
        if self.value != 1 {
            return Err(Error::ResultMismatch {
                what: "the vkQueueSubmit baseline's dispatch".into(),
                got: self.value.to_string(),
                expected: "1".into(),
            });
        }
        self.word.write_bytes(0, &[0; 4]);
        Ok(elapsed)
    }
}

/// One ring round trip: publish a no-op job and wait for its completion.
pub fn ring_round_trip(runtime: &Runtime) -> Result<Duration> {
    let start = Instant::now();
    runtime.submit(Job::nop())?.wait()?;
    Ok(start.elapsed())
}

/// Sustained no-op jobs per second: `threads` host threads, each keeping up to
/// `in_flight` jobs outstanding and submitting `batch` jobs per call (1: `submit`, more:
/// `submit_batch`), `jobs` jobs in all.
pub fn throughput(runtime: &Runtime, jobs: u64, in_flight: usize, threads: usize, batch: usize) -> Result<f64> {
    let threads = threads.max(1);
    let batch = batch.clamp(1, in_flight.max(1));
    let per_thread = jobs / threads as u64;
    let start = Instant::now();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(move || -> Result<()> {
                    let mut window: VecDeque<JobHandle> = VecDeque::with_capacity(in_flight + batch);
                    let mut sent = 0u64;
                    while sent < per_thread {
                        let n = batch.min((per_thread - sent) as usize);
                        while window.len() + n > in_flight.max(n) {
                            window.pop_front().expect("non-empty").wait()?;
                        }
                        if n == 1 {
                            window.push_back(runtime.submit(Job::nop().with_tag(sent))?);
                        } else {
                            window.extend(runtime.submit_batch((0..n as u64).map(|i| Job::nop().with_tag(sent + i)))?);
                        }
                        sent += n as u64;
                    }
                    window.into_iter().try_for_each(|h| h.wait().map(drop))
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("bench thread panicked"))
    })?;
    Ok((per_thread * threads as u64) as f64 / start.elapsed().as_secs_f64())
}

/// Round trip of a job submitted while the kernel is parked (idle exit): the relaunch
/// price. Waits up to `park_timeout` for each park.
pub fn relaunch_after_park(runtime: &Runtime, samples: usize, park_timeout: Duration) -> Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        let deadline = Instant::now() + park_timeout;
        while runtime.kernel_running() {
            if Instant::now() > deadline {
                return Err(Error::Timeout(park_timeout));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        out.push(ring_round_trip(runtime)?);
    }
    Ok(out)
}

/// Options of the latency suite.
#[derive(Clone, Debug)]
pub struct LatencyOptions {
    /// Round trips per measurement.
    pub iterations: usize,
    /// Jobs per throughput measurement.
    pub jobs: u64,
    /// Jobs each host thread keeps in flight.
    pub in_flight: usize,
    /// Host threads for the multi-threaded throughput measurement.
    pub threads: usize,
    /// Jobs per `submit_batch` call in the batched measurements.
    pub batch: usize,
    /// Idle-park relaunch samples.
    pub relaunch_samples: usize,
}

impl LatencyOptions {
    /// Refuses counts of zero (nothing to measure).
    pub fn check(&self) -> Result<()> {
        let counts = [
            ("iterations", self.iterations as u64),
            ("jobs", self.jobs),
            ("in_flight", self.in_flight as u64),
            ("threads", self.threads as u64),
            ("batch", self.batch as u64),
        ];
        match counts.iter().find(|(_, n)| *n == 0) {
            Some((name, _)) => Err(Error::InvalidArgument(format!("{name} = 0; give at least 1"))),
            None => Ok(()),
        }
    }
}

/// Results of one runtime configuration in the latency suite.
#[derive(Clone, Debug)]
pub struct RingReport {
    /// Where completions lived.
    pub cq_placement: Placement,
    /// Memory flags of the CQ.
    pub cq_memory: String,
    /// Resident workgroups.
    pub workgroups: u32,
    /// Ring round trips.
    pub round_trip: Summary,
    /// Jobs/s, one host thread, one `submit` per job.
    pub jobs_per_s_one_thread: f64,
    /// Jobs/s, one host thread, `submit_batch`.
    pub jobs_per_s_batched: f64,
    /// Jobs/s, several host threads, `submit_batch`.
    pub jobs_per_s_threads: f64,
    /// Round trips after an idle park.
    pub relaunch: Option<Summary>,
}

impl RingReport {
    /// Runs the suite's ring measurements on `runtime`.
    pub fn measure(runtime: &Runtime, placement: Placement, opts: &LatencyOptions) -> Result<Self> {
        opts.check()?;
        for _ in 0..opts.iterations.min(1000) / 10 + 1 {
            ring_round_trip(runtime)?; // warm-up
        }
        let mut trips = (0..opts.iterations)
            .map(|_| ring_round_trip(runtime))
            .collect::<Result<Vec<_>>>()?;
        let one = throughput(runtime, opts.jobs, opts.in_flight, 1, 1)?;
        let batched = throughput(runtime, opts.jobs, opts.in_flight, 1, opts.batch)?;
        let many = throughput(runtime, opts.jobs, opts.in_flight, opts.threads, opts.batch)?;
        let relaunch = if opts.relaunch_samples > 0 {
            let mut samples = relaunch_after_park(runtime, opts.relaunch_samples, Duration::from_secs(30))?;
            Some(Summary::of(&mut samples))
        } else {
            None
        };
        Ok(RingReport {
            cq_placement: placement,
            cq_memory: runtime.info().memory[2].1.clone(),
            workgroups: runtime.info().workgroups,
            round_trip: Summary::of(&mut trips),
            jobs_per_s_one_thread: one,
            jobs_per_s_batched: batched,
            jobs_per_s_threads: many,
            relaunch,
        })
    }

    /// The report as JSON.
    pub fn to_json(&self, baseline: &Summary, threads: usize, batch: usize) -> serde_json::Value {
        serde_json::json!({
            "cq_placement": format!("{:?}", self.cq_placement),
            "cq_memory": self.cq_memory,
            "workgroups": self.workgroups,
            "round_trip": self.round_trip.to_json(),
            "speedup_p50_vs_submit_fence": ratio(baseline.p50, self.round_trip.p50),
            "jobs_per_s_1_thread": self.jobs_per_s_one_thread,
            "batch": batch,
            "jobs_per_s_1_thread_batched": self.jobs_per_s_batched,
            "host_threads": threads,
            "jobs_per_s_threads": self.jobs_per_s_threads,
            "relaunch_after_park": self.relaunch.map(|r| r.to_json()),
        })
    }
}

/// `baseline / measured`, the speed-up.
pub fn ratio(baseline: Duration, measured: Duration) -> f64 {
    baseline.as_secs_f64() / measured.as_secs_f64().max(1e-12)
}

/// Measures the submit + fence baseline on a context of its own.
pub fn submit_fence_baseline(ctx: &Arc<Context>, iterations: usize) -> Result<Summary> {
    if iterations == 0 {
        return Err(Error::InvalidArgument("iterations = 0; give at least 1".into()));
    }
    let mut baseline = SubmitBaseline::new(ctx)?;
    for _ in 0..iterations.min(1000) / 10 + 1 {
        baseline.round_trip()?;
    }
    let mut samples = (0..iterations)
        .map(|_| baseline.round_trip())
        .collect::<Result<Vec<_>>>()?;
    Ok(Summary::of(&mut samples))
}

/// Interpreted vs native time of one library program on the same data and the same
/// parallelism (`tiles` workgroups of the device's lanes): the interpreter's overhead.
#[derive(Clone, Debug)]
pub struct VmComparison {
    /// Library program (`sum-u32`, `saxpy` or `crc32`).
    pub program: &'static str,
    /// Elements processed (u32 words; `crc32` reads their bytes).
    pub elements: u32,
    /// Workgroups on each side (tiles of the interpreted job, workgroups of the native dispatch).
    pub tiles: u32,
    /// Job round trips through the ring (interpreted): submit every tile, wait for all.
    pub interpreted: Summary,
    /// `vkQueueSubmit` + fence of the native shader (`glsl/baselines/`).
    pub native: Summary,
    /// VM lanes per workgroup on the interpreted side.
    pub vm_lanes: u32,
    /// What the driver reports about the compiled megakernel (registers, ...), if anything.
    pub kernel_statistics: Vec<(String, String)>,
}

impl VmComparison {
    /// interpreted / native, at the median.
    pub fn ratio(&self) -> f64 {
        ratio(self.interpreted.p50, self.native.p50)
    }

    /// The comparison as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "program": self.program,
            "elements": self.elements,
            "bytes": u64::from(self.elements) * 4,
            "tiles": self.tiles,
            "interpreted": self.interpreted.to_json(),
            "native": self.native.to_json(),
            "interpreted_over_native_p50": self.ratio(),
        })
    }
}

/// The programs [`vm_vs_native`] compares.
pub const VM_PROGRAMS: [&str; 3] = ["sum-u32", "saxpy", "crc32"];

/// Input data of the VM comparison: `elements` pseudo-random u32 (f32 bit patterns for
/// `saxpy` come from the same words; `crc32` reads their bytes).
fn vm_input(elements: u32) -> Vec<u32> {
    (0..elements).map(|i| i.wrapping_mul(2_654_435_761) >> 8).collect()
}

/// The `saxpy` coefficient the comparison uses.
const SAXPY_A: f32 = 0.75;

/// How long `bench vm` runs each side before it samples. On the H100 the first runs of a
/// fresh machine took twice as long (0.67-0.70 ms instead of 0.33-0.39 for `sum-u32`) for
/// up to a few hundred milliseconds, which one discarded run did not cover.
const WARM_UP: Duration = Duration::from_millis(500);

/// Zeroes the first `words` u32 words of a host-mapped buffer and returns once the writes
/// have reached the device: posted writes may still be crossing PCIe, and a read after them
/// cannot pass them. So a run timed next does not pay for them.
fn clear_landed(buffer: &Buffer, words: u64) {
    let words = words.max(1);
    buffer.write_bytes(0, &vec![0u8; words as usize * 4]);
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    buffer.read_bytes((words - 1) * 4, &mut [0u8; 4]);
}

/// Runs `run` until [`WARM_UP`] has passed, at least once.
fn warm_up<T>(mut run: impl FnMut() -> Result<T>) -> Result<()> {
    let start = Instant::now();
    loop {
        run()?;
        if start.elapsed() >= WARM_UP {
            return Ok(());
        }
    }
}

/// Grid, tile and tile count of `program` over `elements` words in `tiles` tiles: `crc32`
/// counts bytes; tiles are a multiple of 16 (whole quads of u32 words for `ld32x4`).
fn vm_grid(program: &str, elements: u32, tiles: u32) -> (u32, u32, u32) {
    let grid = if program == "crc32" { elements * 4 } else { elements };
    let tile = grid.div_ceil(tiles.max(1)).max(1).next_multiple_of(16);
    (grid, tile, grid.div_ceil(tile).max(1))
}

/// A library program's native baseline (`glsl/baselines/`) on a context of its own:
/// `tiles` workgroups of `lanes` lanes over `elements` elements.
pub struct NativeBaseline {
    dispatcher: Dispatcher,
    _pipeline: ComputePipeline,
    _x: Buffer,
    y: Buffer,
    _x2n: Buffer,
    program: &'static str,
    elements: u32,
    tiles: u32,
}

impl NativeBaseline {
    /// Builds the baseline of `program` (one of [`VM_PROGRAMS`]).
    pub fn new(ctx: &Arc<Context>, program: &str, lanes: u32, elements: u32, tiles: u32) -> Result<Self> {
        let (spirv, program) = match program {
            "sum-u32" => (crate::shaders::SUM_U32, "sum-u32"),
            "saxpy" => (crate::shaders::SAXPY, "saxpy"),
            "crc32" => (crate::shaders::CRC32, "crc32"),
            other => {
                return Err(Error::UnknownProgram {
                    name: other.into(),
                    known: format!("{VM_PROGRAMS:?}"),
                })
            }
        };
        let (grid, tile, tiles) = vm_grid(program, elements, tiles);
        let pipeline = ComputePipeline::new(ctx, spirv, 32, &[(0, lanes), (1, lanes)])?;
        let bytes = u64::from(elements.max(1)) * 4;
        let x = Buffer::new(ctx, "baseline x", bytes, Placement::DeviceShared)?;
        let y = Buffer::new(
            ctx,
            "baseline y",
            bytes.max(8 * u64::from(tiles)),
            Placement::DeviceShared,
        )?;
        let x2n = Buffer::new(ctx, "baseline x2n", 128, Placement::DeviceShared)?;
        x.write_bytes(0, bytemuck::cast_slice(&vm_input(elements)));
        x2n.write_bytes(0, bytemuck::cast_slice(&crate::vm::library::crc32_x2n()));
        let mut push = [0u8; 32];
        push[..8].copy_from_slice(&x.address().to_le_bytes());
        push[8..16].copy_from_slice(&y.address().to_le_bytes());
        push[16..20].copy_from_slice(&grid.to_le_bytes());
        push[20..24].copy_from_slice(&tile.to_le_bytes());
        if program == "saxpy" {
            push[24..28].copy_from_slice(&SAXPY_A.to_bits().to_le_bytes());
        } else {
            push[24..32].copy_from_slice(&x2n.address().to_le_bytes());
        }
        let mut dispatcher = Dispatcher::new(ctx)?;
        dispatcher.record(&pipeline, &push, tiles)?;
        Ok(NativeBaseline {
            dispatcher,
            _pipeline: pipeline,
            _x: x,
            y,
            _x2n: x2n,
            program,
            elements,
            tiles,
        })
    }

    /// One run (output cleared first, not timed); returns the submit + fence time.
    pub fn run(&mut self) -> Result<Duration> {
        let words = if self.program == "saxpy" {
            self.elements
        } else {
            2 * self.tiles
        };
        clear_landed(&self.y, u64::from(words));
        let start = Instant::now();
        self.dispatcher.submit()?;
        self.dispatcher.wait(Duration::from_secs(600))?;
        Ok(start.elapsed())
    }

    /// The result: `saxpy`'s y, `sum-u32`'s sum, `crc32`'s CRC (tiles combined).
    pub fn output(&self) -> Vec<u32> {
        let words = if self.program == "saxpy" {
            self.elements
        } else {
            2 * self.tiles
        };
        let mut out = vec![0u32; words.max(1) as usize];
        self.y.read_bytes(0, bytemuck::cast_slice_mut(&mut out));
        match self.program {
            "crc32" => {
                let tiles: Vec<[u32; 4]> = out.chunks(2).map(|t| [t[0], t[1], 0, 0]).collect();
                vec![combine("crc32", &tiles)[0]]
            }
            "sum-u32" => vec![out[0]],
            _ => out,
        }
    }
}

fn combine(program: &str, tiles: &[[u32; 4]]) -> [u32; 4] {
    crate::vm::library::library_program(program)
        .and_then(|p| p.combine(tiles))
        .expect("a library program that combines results")
}

/// A library program as tiled jobs through the ring, on the same input as [`NativeBaseline`].
pub struct InterpretedRun {
    program: crate::DeviceProgram,
    table: crate::BufferTable,
    y: crate::DeviceBuffer,
    name: &'static str,
    elements: u32,
    grid: u32,
    tile: u32,
    fuel: u32,
}

impl InterpretedRun {
    /// Uploads `program` (one of [`VM_PROGRAMS`]) and its buffers to `runtime`, to run in
    /// `tiles` tiles.
    pub fn new(runtime: &Runtime, program: &str, elements: u32, tiles: u32) -> Result<Self> {
        Self::with_source(runtime, program, None, elements, tiles)
    }

    /// [`new`](Self::new), with the library program's assembly replaced by `source` (same
    /// buffers, arguments and results; four times the library program's fuel): to measure
    /// another version of it.
    pub fn with_source(
        runtime: &Runtime,
        program: &str,
        source: Option<&str>,
        elements: u32,
        tiles: u32,
    ) -> Result<Self> {
        let library = crate::vm::library::library_program(program)
            .filter(|p| VM_PROGRAMS.contains(&p.name))
            .ok_or_else(|| Error::UnknownProgram {
                name: program.into(),
                known: format!("{VM_PROGRAMS:?}"),
            })?;
        // Tiles no larger than one job's fuel allows on this device (lavapipe's epochs are
        // short): the runtime's workgroups run them, so parallelism stays the native side's.
        let (grid, tile, _) = vm_grid(library.name, elements, tiles);
        let max_tile = library.max_tile(runtime.info().vm_lanes, runtime.max_fuel()) & !3;
        let tile = tile.min(max_tile.max(4));
        let tiles = grid.div_ceil(tile).max(1);
        let verified = match source {
            Some(text) => crate::vm::verify(&crate::vm::assemble(text)?, library.buffers)?,
            None => library.load()?,
        };
        let loaded = runtime.load_program(verified)?;
        let x = runtime.alloc_u32(u64::from(elements.max(1)), Placement::DeviceShared)?;
        x.write_u32(0, &vm_input(elements))?;
        let (table, y) = if library.name == "crc32" {
            let k = runtime.alloc_u32(32, Placement::DeviceShared)?;
            k.write_u32(0, &crate::vm::library::crc32_x2n())?;
            let acc = runtime.alloc_u32(u64::from(tiles), Placement::DeviceShared)?;
            (runtime.buffer_table(&[&x, &k, &acc])?, acc)
        } else {
            let y = runtime.alloc_u32(u64::from(elements.max(1)), Placement::DeviceShared)?;
            (runtime.buffer_table(&[&x, &y])?, y)
        };
        // A replacement may run more instructions per element: four times the library's
        // estimate. Not the most a job may have: such a job only fits a fresh epoch (on the
        // H100 a copy of sum-u32 took 0.46 instead of 0.35 ms at 528 workgroups).
        let fuel = library.fuel(tile, runtime.info().vm_lanes);
        let fuel = match source {
            Some(_) => fuel.saturating_mul(4).min(runtime.max_fuel()),
            None => fuel,
        };
        Ok(InterpretedRun {
            program: loaded,
            table,
            y,
            name: library.name,
            elements,
            grid,
            tile,
            fuel,
        })
    }

    /// One run (what the program writes cleared first, not timed): submits every tile and waits for all.
    /// Returns the time and the combined results.
    pub fn run(&self, runtime: &Runtime) -> Result<(Duration, [u32; 4])> {
        // Cleared as on the native side: what the program writes (saxpy: y; crc32: the tiles'
        // words); sum-u32 writes nothing there. Clearing its 256 MiB anyway, with the writes
        // still crossing PCIe at submission, made the H100 runs 14-20 us slower.
        if self.name != "sum-u32" {
            clear_landed(&self.y.0, self.y.len_u32());
        }
        let args = [SAXPY_A.to_bits(), self.tile, 0, 0];
        let start = Instant::now();
        let tiles: Vec<[u32; 4]> = runtime
            .submit_tiled(&self.program, &self.table, self.grid, self.tile, args, self.fuel)?
            .wait()?
            .iter()
            .map(|c| c.results)
            .collect();
        let time = start.elapsed();
        Ok((time, combine(self.name, &tiles)))
    }

    /// The output buffer's words (`saxpy`'s y).
    pub fn output(&self) -> Result<Vec<u32>> {
        self.y.read_u32(0, u64::from(self.elements))
    }
}

/// Measures `programs` (names from [`VM_PROGRAMS`], each with its library assembly or a
/// replacement source) over `elements` elements on `tiles` workgroups, `samples` runs
/// each; checks that both paths compute the same thing (and `crc32` equals zlib's) before
/// reporting.
pub fn vm_vs_native(
    config: &crate::RuntimeConfig,
    programs: &[(&str, Option<String>)],
    elements: u32,
    tiles: u32,
    samples: usize,
) -> Result<Vec<VmComparison>> {
    let names = programs
        .iter()
        .map(|(requested, _)| {
            VM_PROGRAMS
                .into_iter()
                .find(|p| p == requested)
                .ok_or_else(|| Error::UnknownProgram {
                    name: requested.to_string(),
                    known: format!("{VM_PROGRAMS:?}"),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut out = Vec::new();
    for (name, (_, source)) in names.into_iter().zip(programs) {
        // Native first, on a context of its own (a resident megakernel would hold the queue).
        let ctx = Arc::new(Context::new(&config.device, config.validation, config.validation_echo)?);
        let lanes = config
            .lanes
            .unwrap_or(crate::DeviceDefaults::for_device(ctx.caps()).lanes);
        let mut native = NativeBaseline::new(&ctx, name, lanes, elements, tiles)?;
        warm_up(|| native.run())?;
        let mut native_times = (0..samples).map(|_| native.run()).collect::<Result<Vec<_>>>()?;
        let native_out = native.output();
        drop((native, ctx));

        let budget = config.epoch_budget.or(Some(1 << 30));
        let runtime_config = crate::RuntimeConfig {
            lanes: Some(lanes),
            workgroups: Some(config.workgroups.unwrap_or(tiles).max(1)),
            ..config.clone()
        };
        let runtime = Runtime::new(crate::RuntimeConfig {
            epoch_budget: budget,
            ..runtime_config.clone()
        })
        .or_else(|_| Runtime::new(runtime_config))?;
        let interpreted = InterpretedRun::with_source(&runtime, name, source.as_deref(), elements, tiles)?;
        warm_up(|| interpreted.run(&runtime))?;
        let mut times = Vec::with_capacity(samples);
        let mut last = [0u32; 4];
        for _ in 0..samples {
            let (time, results) = interpreted.run(&runtime)?;
            times.push(time);
            last = results;
        }
        let agree = match name {
            "saxpy" => interpreted.output()? == native_out[..elements as usize],
            "crc32" => {
                let zlib = crc32fast::hash(bytemuck::cast_slice(&vm_input(elements)));
                last[0] == native_out[0] && last[0] == zlib
            }
            _ => last[0] == native_out[0],
        };
        runtime.shutdown()?;
        if !agree {
            return Err(Error::ResultMismatch {
                what: format!("{name}, interpreted"),
                got: format!("{last:?}"),
                expected: format!("{:?} (native, first words)", &native_out[..native_out.len().min(4)]),
            });
        }
        out.push(VmComparison {
            program: name,
            elements,
            tiles: vm_grid(name, elements, tiles).2,
            interpreted: Summary::of(&mut times),
            native: Summary::of(&mut native_times),
            vm_lanes: runtime.info().vm_lanes,
            kernel_statistics: runtime.info().kernel_statistics.clone(),
        });
    }
    Ok(out)
}
