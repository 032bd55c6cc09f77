//! The runtime: owns the device context, the rings and the supervisor thread that launches
//! the megakernel in epochs (docs/protocol.md). Host threads submit jobs lock-free and
//! wait on per-job handles; the supervisor relaunches the kernel whenever work is pending
//! and it has parked, run out of budget, or been told to stop.

use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::job::{BufferTable, Completion, DeviceBuffer, DeviceProgram, Job};
use crate::ring::layout::{self, LaunchParams};
use crate::ring::{ControlWord, Rings};
use crate::vk::{Buffer, Capabilities, ComputePipeline, Context, DeviceSelector, Dispatcher, Placement};

/// How jobs reach the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The kernel stays resident and sees jobs published while it runs.
    Persistent,
    /// The kernel is launched per batch of pending jobs and exits when the ring is empty
    /// (the fallback where the start-up self-test fails).
    Batch,
}

/// Which mode to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ModeRequest {
    /// Persistent if the start-up self-test passes, else batch.
    #[default]
    Auto,
    /// Persistent, or fail to start.
    Persistent,
    /// Batch, without trying persistent.
    Batch,
}

/// Runtime settings; `Default` reads `MEGARING_DEVICE`, `MEGARING_VALIDATION` and `MEGARING_IDLE_POLLS`.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Physical device to use.
    pub device: DeviceSelector,
    /// Enable the Khronos validation layer and record its messages.
    pub validation: bool,
    /// Ring entries (a power of two): the most jobs in flight at once.
    pub ring_entries: u32,
    /// Resident workgroups; `None` picks per device (1 on lavapipe, 32 elsewhere).
    pub workgroups: Option<u32>,
    /// Lanes per workgroup, a power of two up to 64; `None` picks 8 on lavapipe, 64 elsewhere.
    pub lanes: Option<u32>,
    /// VM lanes each invocation interprets in lock step, 4 or 8 (docs/bytecode.md,
    /// "Lanes"): a bytecode job sees `lanes * vm_sublanes` lanes per workgroup. `None`
    /// picks 4. On the H100 at 264 workgroups, 8 made `sum-u32` and `saxpy` faster (1.31x
    /// native instead of 1.42-1.58x for `sum-u32`) and `crc32` slower (1.64x instead of
    /// 1.45x); at 528 workgroups all three slower (docs/benchmarks.md).
    pub vm_sublanes: Option<u32>,
    /// Whether the interpreter runs lanes in lock step through its converged dispatcher
    /// (docs/bytecode.md, "Lanes in lock step"). `None` picks on, except on lavapipe: there
    /// the dispatcher made the ingest tests' `crc32` and `lines` scans about 2x slower.
    /// Results are the same either way.
    pub vm_converged: Option<bool>,
    /// Loop iterations one invocation may run per epoch; `None` picks per device
    /// (60,000 on lavapipe, which cuts loops at 65,535; 2^24 elsewhere).
    pub epoch_budget: Option<u32>,
    /// Consecutive empty polls before a workgroup parks; `None` picks per device.
    pub idle_polls: Option<u32>,
    /// Where completion entries live. Host memory by default: on the H100 it gave a 3.4 us
    /// round trip against 7.9 us for BAR memory, and cheap host polling (docs/benchmarks.md).
    pub cq_placement: Placement,
    /// Persistent or batch.
    pub mode: ModeRequest,
    /// No heartbeat for this long while the kernel runs means it stopped answering.
    pub hang_timeout: Duration,
    /// How long a blocking `submit` waits for a free ring entry.
    pub submit_timeout: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            device: DeviceSelector::from_env(),
            validation: std::env::var("MEGARING_VALIDATION").is_ok_and(|v| v == "1"),
            ring_entries: 1024,
            workgroups: None,
            lanes: None,
            vm_sublanes: None,
            vm_converged: None,
            epoch_budget: None,
            idle_polls: std::env::var("MEGARING_IDLE_POLLS").ok().and_then(|v| v.parse().ok()),
            cq_placement: Placement::HostCached,
            mode: ModeRequest::Auto,
            hang_timeout: Duration::from_secs(10),
            submit_timeout: Duration::from_secs(30),
        }
    }
}

/// What the runtime chose and measured at start-up; printed by `megaring info`.
#[derive(Clone, Debug)]
pub struct RuntimeInfo {
    /// The device.
    pub caps: Capabilities,
    /// Persistent or batch.
    pub mode: Mode,
    /// Self-test outcome: the ping round trip through a running kernel, or why it failed.
    pub self_test: std::result::Result<Duration, String>,
    /// Resident workgroups per launch.
    pub workgroups: u32,
    /// Lanes (invocations) per workgroup.
    pub lanes: u32,
    /// VM lanes per workgroup: what a bytecode program's `lanes` returns, and the lane
    /// count its CPU reference runs with (`lanes` x VM lanes per invocation).
    pub vm_lanes: u32,
    /// Whether the interpreter's converged dispatcher is on.
    pub vm_converged: bool,
    /// What the driver reports about the compiled megakernel (`VK_KHR_pipeline_executable_properties`):
    /// (name, value) pairs such as ("Register Count", "96"); empty where it reports nothing.
    pub kernel_statistics: Vec<(String, String)>,
    /// Loop iterations per invocation per epoch.
    pub epoch_budget: u32,
    /// Empty polls before parking.
    pub idle_polls: u32,
    /// Ring entries.
    pub ring_entries: u32,
    /// Memory type (index, flags) of the control block, SQ and CQ.
    pub memory: [(u32, String); 3],
    /// Validation layer active.
    pub validation: bool,
}

/// Counters from the control block and the supervisor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Kernel launches (epochs) so far.
    pub launches: u64,
    /// Jobs the kernel completed.
    pub jobs_done: u32,
    /// Workgroup exits for idleness.
    pub idle_exits: u32,
    /// Workgroup exits for the iteration budget.
    pub budget_exits: u32,
    /// Workgroup exits for shutdown.
    pub shutdown_exits: u32,
    /// Workgroup exits for a relaunch request ([`Runtime::request_relaunch`]).
    pub yield_exits: u32,
    /// Loops a driver ended before the kernel chose to (see `ControlBlock::unplanned_exits`).
    pub unplanned_exits: u32,
    /// Most loop iterations one invocation counted in an epoch.
    pub max_iterations: u32,
    /// Jobs cancelled by shutdown.
    pub cancelled: u32,
    /// Jobs failed with [`Error::JobLost`].
    pub lost: u32,
}

const OPEN: u32 = 0;
const CLOSING: u32 = 1;
const STOPPED: u32 = 2;

/// State shared by the runtime, its handles and the supervisor.
struct Shared {
    ctx: Arc<Context>,
    rings: Rings,
    lifecycle: AtomicU32,
    /// Whether a kernel launch is in flight (supervisor-owned; producers read it).
    kernel_running: AtomicBool,
    wake: Mutex<()>,
    wake_cv: Condvar,
    /// `FAILURE_*`: read lock-free on every poll that finds no completion.
    failure: AtomicU32,
    hang_timeout: Duration,
    launches: AtomicU64,
    cancelled: AtomicU32,
    lost: AtomicU32,
    max_cost: u32,
    lanes: u32,
    /// VM lanes per invocation.
    sublanes: u32,
    /// `TileResult` buffers of spread jobs, reused once nothing else holds them (a buffer
    /// made and destroyed per `submit_tiled` cost about 7 us a call on the H100).
    tile_records: Mutex<Vec<Arc<Buffer>>>,
}

#[derive(Clone, Copy, Debug)]
enum Failure {
    DeviceLost,
    Unresponsive(Duration),
}

impl Failure {
    fn error(self) -> Error {
        match self {
            Failure::DeviceLost => Error::DeviceLost,
            Failure::Unresponsive(d) => Error::KernelUnresponsive(d),
        }
    }
}

const FAILURE_NONE: u32 = 0;
const FAILURE_DEVICE_LOST: u32 = 1;
const FAILURE_UNRESPONSIVE: u32 = 2;

impl Shared {
    fn failure(&self) -> Option<Failure> {
        match self.failure.load(Ordering::Acquire) {
            FAILURE_NONE => None,
            FAILURE_DEVICE_LOST => Some(Failure::DeviceLost),
            _ => Some(Failure::Unresponsive(self.hang_timeout)),
        }
    }

    /// Records the first failure; later ones are ignored.
    fn fail(&self, failure: Failure) {
        let code = match failure {
            Failure::DeviceLost => FAILURE_DEVICE_LOST,
            Failure::Unresponsive(_) => FAILURE_UNRESPONSIVE,
        };
        let _ = self
            .failure
            .compare_exchange(FAILURE_NONE, code, Ordering::AcqRel, Ordering::Acquire);
    }

    fn wake_supervisor(&self) {
        let _guard = self.wake.lock().unwrap_or_else(|p| p.into_inner());
        self.wake_cv.notify_all();
    }
}

/// Everything the supervisor thread owns.
struct Supervisor {
    shared: Arc<Shared>,
    dispatcher: Dispatcher,
    hang_timeout: Duration,
    /// `unplanned_exits` as last seen.
    unplanned_seen: u32,
    /// Drop the pipeline after the dispatcher (which waits for the last launch).
    _pipeline: ComputePipeline,
}

/// The persistent-megakernel runtime. `Send + Sync`: share it between submitting threads.
pub struct Runtime {
    shared: Arc<Shared>,
    info: RuntimeInfo,
    submit_timeout: Duration,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

impl Runtime {
    /// Creates a device context, the rings and the kernel, runs the self-test, and starts
    /// the supervisor.
    pub fn new(config: RuntimeConfig) -> Result<Self> {
        if !config.ring_entries.is_power_of_two() || config.ring_entries < 2 || config.ring_entries > 1 << 20 {
            return Err(Error::InvalidConfig(format!(
                "ring_entries = {} must be a power of two between 2 and 2^20",
                config.ring_entries
            )));
        }
        let ctx = Arc::new(Context::new(&config.device, config.validation)?);
        let caps = ctx.caps().clone();
        let workgroups = config.workgroups.unwrap_or(if caps.lavapipe { 1 } else { 32 });
        if workgroups == 0 || workgroups > caps.max_workgroups {
            return Err(Error::InvalidConfig(format!(
                "workgroups = {workgroups}; this device allows 1..={}",
                caps.max_workgroups
            )));
        }
        let lanes = config.lanes.unwrap_or(if caps.lavapipe { 8 } else { 64 });
        if !lanes.is_power_of_two() || lanes > layout::MAX_LANES {
            return Err(Error::InvalidConfig(format!(
                "lanes = {lanes}; use a power of two up to {}",
                layout::MAX_LANES
            )));
        }
        let sublanes = config.vm_sublanes.unwrap_or(4);
        let converged = config.vm_converged.unwrap_or(!caps.lavapipe);
        if sublanes != 4 && sublanes != 8 {
            return Err(Error::InvalidConfig(format!("vm_sublanes = {sublanes}; use 4 or 8")));
        }
        let default_budget = if caps.lavapipe { 60_000 } else { 1 << 24 };
        let epoch_budget = config.epoch_budget.unwrap_or(default_budget);
        let min_budget = 2
            * (crate::Job::launch_cost(lanes)
                + layout::EPOCH_RESERVE
                + layout::ITERATIONS_PER_PASS
                + layout::ITERATIONS_PER_JOB);
        if epoch_budget < min_budget || (caps.lavapipe && epoch_budget > 65_535) {
            return Err(Error::InvalidConfig(format!(
                "epoch_budget = {epoch_budget}; use {min_budget}..={} on this device",
                if caps.lavapipe { 65_535 } else { u32::MAX }
            )));
        }
        // About 2,000 idle passes (milliseconds) on lavapipe, where a spinning kernel holds
        // one of the machine's cores; about a second on a GPU.
        let idle_default = if caps.lavapipe { 2_000 } else { 1 << 20 };
        let idle_polls = config.idle_polls.unwrap_or(idle_default).min(epoch_budget);

        let rings = Rings::new(&ctx, config.ring_entries, config.cq_placement)?;
        let describe = |b: &Buffer| (b.memory_type(), format!("{:?}", b.memory_flags()));
        let memory = [
            describe(rings.control_buffer()),
            describe(rings.sq_buffer()),
            describe(rings.cq_buffer()),
        ];
        let pipeline = ComputePipeline::new(
            &ctx,
            crate::shaders::MEGAKERNEL,
            std::mem::size_of::<LaunchParams>() as u32,
            &[
                (layout::LANES_CONSTANT_ID, lanes),
                (layout::LANES_VALUE_CONSTANT_ID, lanes),
                (layout::VM_GROUPS_CONSTANT_ID, sublanes / 4),
                (layout::VM_CONVERGED_CONSTANT_ID, u32::from(converged)),
            ],
        )?;
        let mut dispatcher = Dispatcher::new(&ctx)?;
        let shared = Arc::new(Shared {
            ctx: ctx.clone(),
            rings,
            lifecycle: AtomicU32::new(OPEN),
            kernel_running: AtomicBool::new(false),
            wake: Mutex::new(()),
            wake_cv: Condvar::new(),
            failure: AtomicU32::new(FAILURE_NONE),
            hang_timeout: config.hang_timeout,
            launches: AtomicU64::new(0),
            cancelled: AtomicU32::new(0),
            lost: AtomicU32::new(0),
            lanes,
            sublanes,
            tile_records: Mutex::new(Vec::new()),
            // What a claim on a fresh launch's first pass can still fit (ring_claim's test:
            // the launch's cost and that pass are spent, the claim's own pass, the job's
            // step and the exit reserve are kept).
            max_cost: epoch_budget
                - crate::Job::launch_cost(lanes)
                - layout::EPOCH_RESERVE
                - 2 * layout::ITERATIONS_PER_PASS
                - layout::ITERATIONS_PER_JOB,
        });

        let mut params = LaunchParams {
            control: shared.rings.control_buffer().address(),
            sq: shared.rings.sq_buffer().address(),
            cq: shared.rings.cq_buffer().address(),
            board: shared.rings.board_buffer().address(),
            ring_mask: config.ring_entries - 1,
            budget: epoch_budget,
            idle_limit: idle_polls,
            reserved: 0,
        };
        let self_test = if config.mode == ModeRequest::Batch {
            Err("not run: batch mode requested".to_owned())
        } else {
            // The self-test runs with the device's default budget and idle limit, whatever
            // the configuration: a tiny budget would let the kernel finish before the host
            // sees it resident, and the runtime would fall back to batch mode for nothing.
            let probe = LaunchParams {
                budget: default_budget,
                idle_limit: default_budget,
                ..params
            };
            dispatcher.record(&pipeline, bytemuck::bytes_of(&probe), workgroups)?;
            self_test(&shared, &mut dispatcher, config.hang_timeout)?
        };
        let mode = match (&self_test, config.mode) {
            (Ok(_), _) => Mode::Persistent,
            (Err(why), ModeRequest::Persistent) => {
                return Err(Error::InvalidConfig(format!(
                    "persistent mode requested but the self-test failed: {why}"
                )))
            }
            (Err(_), _) => Mode::Batch,
        };
        if mode == Mode::Batch {
            // Exit as soon as the ring is empty; the supervisor relaunches per batch.
            params.idle_limit = 0;
        }
        dispatcher.record(&pipeline, bytemuck::bytes_of(&params), workgroups)?;

        let info = RuntimeInfo {
            caps,
            mode,
            self_test,
            workgroups,
            lanes,
            vm_lanes: lanes * sublanes,
            vm_converged: converged,
            kernel_statistics: pipeline.statistics(),
            epoch_budget,
            idle_polls: params.idle_limit,
            ring_entries: config.ring_entries,
            memory,
            validation: ctx.validation_enabled(),
        };
        let supervisor = Supervisor {
            shared: shared.clone(),
            dispatcher,
            hang_timeout: config.hang_timeout,
            unplanned_seen: 0,
            _pipeline: pipeline,
        };
        let thread = std::thread::Builder::new()
            .name("megaring-supervisor".into())
            .spawn(move || supervisor.run())
            .map_err(|e| Error::InvalidConfig(format!("cannot start the supervisor thread: {e}")))?;
        Ok(Runtime {
            shared,
            info,
            submit_timeout: config.submit_timeout,
            supervisor: Mutex::new(Some(thread)),
        })
    }

    /// What the runtime chose and measured at start-up.
    pub fn info(&self) -> &RuntimeInfo {
        &self.info
    }

    /// The device context (for buffers and baselines on the same device).
    pub fn context(&self) -> &Arc<Context> {
        &self.shared.ctx
    }

    /// Allocates a buffer of `len` u32 elements at `placement`, zero-filled.
    pub fn alloc_u32(&self, len: u64, placement: Placement) -> Result<DeviceBuffer> {
        let bytes = len
            .checked_mul(4)
            .ok_or_else(|| Error::InvalidConfig(format!("{len} elements overflow")))?;
        Ok(DeviceBuffer(Arc::new(Buffer::new(
            &self.shared.ctx,
            "megaring job buffer",
            bytes,
            placement,
        )?)))
    }

    /// The most fuel a VM job may have on this device (one epoch must be able to hold it).
    pub fn max_fuel(&self) -> u32 {
        let per_instruction = self.shared.sublanes * layout::ITERATIONS_PER_STEP + layout::VM_ITERATIONS_PER_PHASE;
        // What a job of no fuel costs: the copy of program head and table (see Job::cost).
        let prologue = crate::Job::nop_program_cost(self.shared.lanes);
        (self.shared.max_cost.saturating_sub(prologue) / per_instruction).saturating_sub(1)
    }

    /// Uploads a verified program for [`Job::program`].
    pub fn load_program(&self, program: crate::vm::VerifiedProgram) -> Result<DeviceProgram> {
        DeviceProgram::upload(&self.shared.ctx, program)
    }

    /// Makes a buffer table (`b0`, `b1`, ... in order) for [`Job::program`].
    pub fn buffer_table(&self, buffers: &[&DeviceBuffer]) -> Result<BufferTable> {
        BufferTable::new(&self.shared.ctx, buffers)
    }

    /// Makes a buffer table whose entries are byte ranges of buffers (`b0` = `views[0]`,
    /// ...); a range starts at a multiple of 4 bytes. Each program access is bounds-checked
    /// against its range.
    pub fn buffer_table_views(&self, views: &[(&DeviceBuffer, std::ops::Range<u64>)]) -> Result<BufferTable> {
        BufferTable::with_views(&self.shared.ctx, views)
    }

    /// Runs `program` over a grid of `grid` elements split into tiles of `tile` elements,
    /// as one spread job: a single ring entry whose tiles the kernel's workgroups share
    /// (docs/protocol.md, "Spread jobs"). Tile t sees `tile.begin` = t * tile and `grid` =
    /// the end of its tile. Each tile's results come back on their own (the caller combines
    /// them, e.g. `LibraryProgram::combine`); `fuel` is per lane per tile. A grid of one
    /// tile is an ordinary job.
    pub fn submit_tiled(
        &self,
        program: &DeviceProgram,
        table: &BufferTable,
        grid: u32,
        tile: u32,
        args: [u32; 4],
        fuel: u32,
    ) -> Result<TiledHandle> {
        if tile == 0 {
            return Err(Error::InvalidConfig(
                "tile = 0; give the elements per tile (at least 1)".into(),
            ));
        }
        let tiles = grid.div_ceil(tile).max(1);
        let mut job = Job::program(program, table, grid, args, fuel)?;
        let records = if tiles > 1 {
            let bytes = u64::from(tiles) * std::mem::size_of::<layout::TileResult>() as u64;
            let records = self.tile_records(bytes)?;
            job.entry.tile = tile;
            job.entry.tiles = tiles;
            job.entry.tile_out = records.address();
            job.keep.push(records.clone());
            Some(records)
        } else {
            None
        };
        Ok(TiledHandle {
            handle: self.submit(job)?,
            records,
            tiles,
        })
    }

    /// A `TileResult` buffer of at least `bytes` for a spread job: a pooled one that no job
    /// or handle holds any more (its last job completed and was collected), else a new one,
    /// pooled while the pool has room.
    fn tile_records(&self, bytes: u64) -> Result<Arc<Buffer>> {
        const POOLED: usize = 8;
        let mut pool = self.shared.tile_records.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(free) = pool.iter().find(|b| Arc::strong_count(b) == 1 && b.size() >= bytes) {
            return Ok(free.clone());
        }
        let records = Arc::new(Buffer::new(
            &self.shared.ctx,
            "megaring tile results",
            bytes,
            Placement::HostCached,
        )?);
        if pool.len() < POOLED {
            pool.push(records.clone());
        } else if let Some(slot) = pool.iter_mut().find(|b| Arc::strong_count(b) == 1) {
            *slot = records.clone();
        }
        Ok(records)
    }

    /// Publishes `job`, waiting while the ring is full (up to `RuntimeConfig::submit_timeout`).
    pub fn submit(&self, job: Job) -> Result<JobHandle> {
        Ok(self.submit_jobs(vec![job], Some(self.submit_timeout))?.remove(0))
    }

    /// Publishes `job`, or fails at once with [`Error::RingFull`] when every entry is in flight.
    pub fn try_submit(&self, job: Job) -> Result<JobHandle> {
        Ok(self.submit_jobs(vec![job], None)?.remove(0))
    }

    /// Publishes `jobs` in order, reserving runs of consecutive entries and sharing the
    /// publication fences among each run (the fast path for many small jobs). Waits while
    /// the ring is full, up to `RuntimeConfig::submit_timeout`. Nothing is published if a
    /// job is refused; on a timeout, the jobs already published still run.
    pub fn submit_batch(&self, jobs: impl IntoIterator<Item = Job>) -> Result<Vec<JobHandle>> {
        self.submit_jobs(jobs.into_iter().collect(), Some(self.submit_timeout))
    }

    fn submit_jobs(&self, jobs: Vec<Job>, wait: Option<Duration>) -> Result<Vec<JobHandle>> {
        let shared = &self.shared;
        for job in &jobs {
            let cost = job.cost(shared.lanes, shared.sublanes);
            if cost > shared.max_cost {
                return Err(Error::JobTooLarge {
                    cost: u64::from(cost),
                    limit: u64::from(shared.max_cost),
                });
            }
        }
        if shared.lifecycle.load(Ordering::SeqCst) != OPEN {
            return Err(Error::ShutDown);
        }
        if let Some(failure) = shared.failure() {
            return Err(failure.error());
        }
        let mut handles = Vec::with_capacity(jobs.len());
        let mut jobs = jobs.into_iter();
        let mut backoff: Option<Backoff> = None;
        while jobs.len() > 0 {
            let Some((first, count)) = shared.rings.try_reserve_run(jobs.len() as u32) else {
                let full = Error::RingFull {
                    capacity: shared.rings.entries(),
                };
                let Some(timeout) = wait else {
                    return Err(full);
                };
                if let Some(failure) = shared.failure() {
                    return Err(failure.error());
                }
                if !backoff.get_or_insert_with(|| Backoff::new(timeout)).snooze() {
                    return Err(full);
                }
                continue;
            };
            backoff = None;
            // Handles are made as the entries stream into `publish` (no buffer in between).
            let run = jobs.by_ref().take(count as usize).enumerate().map(|(k, job)| {
                let mut entry = job.entry;
                entry.cost = job.cost(shared.lanes, shared.sublanes);
                let index = first.wrapping_add(k as u32);
                handles.push(JobHandle {
                    shared: shared.clone(),
                    index,
                    tag: entry.tag,
                    consumed: false,
                });
                (entry, job.keep)
            });
            shared.rings.publish(first, run);
            // Dekker-style handshake with the supervisor, which stores kernel_running = false,
            // fences, then checks for pending work: `publish` ended with a SeqCst fence after
            // the seq words, so one of the two always sees the other.
            if !shared.kernel_running.load(Ordering::SeqCst) {
                shared.wake_supervisor();
            }
        }
        Ok(handles)
    }

    /// Counters from the kernel and the supervisor.
    pub fn stats(&self) -> Stats {
        let c = self.shared.rings.control_snapshot();
        Stats {
            launches: self.shared.launches.load(Ordering::SeqCst),
            jobs_done: c.jobs_done,
            idle_exits: c.idle_exits,
            budget_exits: c.budget_exits,
            shutdown_exits: c.shutdown_exits,
            yield_exits: c.yield_exits,
            unplanned_exits: c.unplanned_exits,
            max_iterations: c.max_iterations,
            cancelled: self.shared.cancelled.load(Ordering::SeqCst),
            lost: self.shared.lost.load(Ordering::SeqCst),
        }
    }

    /// Whether a kernel launch is currently in flight (false while parked).
    pub fn kernel_running(&self) -> bool {
        self.shared.kernel_running.load(Ordering::SeqCst)
    }

    /// Kernel launches so far; a job whose completion was taken when this returned `n`
    /// ran in launch `n` or earlier.
    pub fn launches(&self) -> u64 {
        self.shared.launches.load(Ordering::SeqCst)
    }

    /// Whether a job published now runs in a launch later than `launch`: the kernel is
    /// parked (the next launch starts fresh) or has been relaunched since.
    ///
    /// Host memory the device reads may sit in a device cache that the host's writes do
    /// not invalidate (measured on the H100: reads of host memory rewritten while the
    /// kernel runs returned the old bytes), and a launch starts with those caches clean.
    /// So memory the host rewrites after jobs of launch `launch` read it is read fresh by
    /// jobs of later launches only: see [`Runtime::request_relaunch`].
    pub fn fresh_launch_since(&self, launch: u64) -> bool {
        // Launch count first: a kernel that parks after this load still counts as running.
        let launches = self.launches();
        launches > launch || !self.kernel_running()
    }

    /// Asks the running kernel to exit after its current jobs, so that the supervisor
    /// relaunches it (when work is pending) with device caches clean. Cheap to repeat;
    /// cleared before every launch.
    pub fn request_relaunch(&self) {
        self.shared.rings.store(ControlWord::YIELD, 1);
    }

    /// Validation errors the layer reported so far (0 without validation).
    pub fn validation_errors(&self) -> usize {
        self.shared.ctx.validation().error_count()
    }

    /// Validation messages reported so far.
    pub fn validation_messages(&self) -> Vec<String> {
        self.shared.ctx.validation().messages()
    }

    /// Stops accepting jobs, lets claimed jobs finish, cancels unclaimed ones, and stops
    /// the kernel. Bounded: a kernel that does not stop is reported, never waited on forever.
    /// Idempotent; also run by Drop.
    pub fn shutdown(&self) -> Result<()> {
        let shared = &self.shared;
        if shared
            .lifecycle
            .compare_exchange(OPEN, CLOSING, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            // A producer that passed the lifecycle check just before this may still publish;
            // the sweep below cancels what it reserved (its handle also reports a job
            // published after the sweep as cancelled, once the lifecycle says STOPPED).
            shared.rings.store(ControlWord::SHUTDOWN, 1);
            shared.wake_supervisor();
        }
        let thread = self.supervisor.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
            if shared.failure().is_none() {
                let cancelled = shared.rings.cancel_unclaimed();
                shared.cancelled.fetch_add(cancelled, Ordering::SeqCst);
            }
            shared.lifecycle.store(STOPPED, Ordering::SeqCst);
        }
        match shared.failure() {
            Some(failure) => Err(failure.error()),
            None => Ok(()),
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Spin briefly, then yield, then sleep: keeps round trips short without burning a core
/// (on lavapipe the "GPU" needs it) when waits are long. A sleep lasts at most 1/16 of the
/// wait so far, so a long job's completion is seen within about 6% of its time (sleeps
/// growing to 500 us in fixed steps made 0.3-0.5 ms jobs on the H100 look 20-80 us slower).
struct Backoff {
    start: Instant,
    timeout: Duration,
    step: u32,
}

impl Backoff {
    fn new(timeout: Duration) -> Self {
        Backoff {
            start: Instant::now(),
            timeout,
            step: 0,
        }
    }

    /// Waits a little; false once the timeout has passed.
    fn snooze(&mut self) -> bool {
        self.step = self.step.saturating_add(1);
        let waited = self.start.elapsed();
        match Pause::after(self.step, waited) {
            Pause::Spin => std::hint::spin_loop(),
            Pause::Yield => std::thread::yield_now(),
            Pause::Sleep(time) => std::thread::sleep(time),
        }
        waited < self.timeout
    }
}

/// What a waiter does next.
#[derive(Debug, PartialEq, Eq)]
enum Pause {
    Spin,
    Yield,
    Sleep(Duration),
}

impl Pause {
    /// The pause after `step` polls and `waited` time: 2,000 spins, yields until 2 ms, then
    /// sleeps of 1/16 of the wait so far, 20-500 us.
    fn after(step: u32, waited: Duration) -> Pause {
        if step < 2_000 {
            Pause::Spin
        } else if waited < Duration::from_millis(2) {
            Pause::Yield
        } else {
            Pause::Sleep((waited / 16).clamp(Duration::from_micros(20), Duration::from_micros(500)))
        }
    }
}

/// A submitted job: poll it, or wait for it with or without a timeout.
/// Dropping an unconsumed handle detaches the job; it still runs.
pub struct JobHandle {
    shared: Arc<Shared>,
    index: u32,
    tag: u64,
    consumed: bool,
}

impl JobHandle {
    /// The job's tag.
    pub fn tag(&self) -> u64 {
        self.tag
    }

    /// The job's ring index (its position in submission order).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// A one-line description of the job's ring slot, for diagnostics.
    pub fn describe(&self) -> String {
        self.shared.rings.describe(self.index)
    }

    /// The outcome if the job has finished, without blocking.
    pub fn poll(&mut self) -> Option<Result<Completion>> {
        self.poll_entry()
            .map(|entry| entry.and_then(|c| outcome(self.tag, c.status, c.results)))
    }

    /// The completion, whatever its status, if the job has finished; errors only for
    /// what the kernel did not report (consumed, runtime failed, cancelled by the sweep).
    fn poll_entry(&mut self) -> Option<Result<Completion>> {
        if self.consumed {
            return Some(Err(Error::InvalidConfig("completion already consumed".into())));
        }
        match self.shared.rings.take(self.index) {
            Some(entry) => {
                self.consumed = true;
                Some(Ok(Completion {
                    tag: entry.tag,
                    status: entry.status,
                    results: [entry.result0, entry.result1, entry.result2, entry.result3],
                }))
            }
            None => {
                if let Some(failure) = self.shared.failure() {
                    return Some(Err(failure.error()));
                }
                if self.shared.lifecycle.load(Ordering::SeqCst) == STOPPED {
                    // Stopped and not completed: a racing submit published after the sweep.
                    self.consumed = true;
                    return Some(Err(Error::Cancelled { tag: self.tag }));
                }
                None
            }
        }
    }

    /// Waits up to `timeout`; [`Error::Timeout`] leaves the handle usable.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Completion> {
        let mut backoff = Backoff::new(timeout);
        loop {
            if let Some(outcome) = self.poll() {
                return outcome;
            }
            if !backoff.snooze() {
                return Err(Error::Timeout(timeout));
            }
        }
    }

    /// Waits until the job finishes, is cancelled, or the runtime fails.
    pub fn wait(mut self) -> Result<Completion> {
        self.wait_timeout(Duration::MAX)
    }
}

/// What a completion with `status` and `results` of the job tagged `tag` means.
fn outcome(tag: u64, status: u32, results: [u32; 4]) -> Result<Completion> {
    match status {
        layout::STATUS_OK => Ok(Completion { tag, status, results }),
        layout::STATUS_CANCELLED => Err(Error::Cancelled { tag }),
        layout::STATUS_LOST => Err(Error::JobLost { tag }),
        status if status >= layout::STATUS_FAULT_FUEL => Err(Error::Fault(crate::vm::Fault {
            tag,
            status,
            instruction: results[0],
            lane: results[1],
            detail: results[2],
        })),
        status => Err(Error::JobFailed { tag, status }),
    }
}

/// A tiled grid's job ([`Runtime::submit_tiled`]): wait for it to get every tile's
/// results. Dropping it detaches the job; it still runs.
pub struct TiledHandle {
    handle: JobHandle,
    /// The tiles' `TileResult` records (a spread job), or none for a single tile.
    records: Option<Arc<Buffer>>,
    tiles: u32,
}

impl TiledHandle {
    /// Tiles of the grid.
    pub fn tiles(&self) -> u32 {
        self.tiles
    }

    /// Waits up to `timeout` for every tile; [`Error::Timeout`] leaves the handle usable.
    /// Returns the tiles' completions in order, tagged with their tile number, or the
    /// error of the lowest tile that failed ([`Error::Fault`] tagged with its tile).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Vec<Completion>> {
        let mut backoff = Backoff::new(timeout);
        let job = loop {
            if let Some(entry) = self.handle.poll_entry() {
                break entry?;
            }
            if !backoff.snooze() {
                return Err(Error::Timeout(timeout));
            }
        };
        let Some(records) = &self.records else {
            return outcome(0, job.status, job.results).map(|c| vec![c]);
        };
        if job.status != layout::STATUS_OK && job.status != layout::STATUS_TILE_FAULT {
            let (tag, status) = (job.tag, job.status);
            return outcome(tag, status, job.results).and(Err(Error::JobFailed { tag, status }));
        }
        let size = std::mem::size_of::<layout::TileResult>();
        let mut bytes = vec![0u8; self.tiles as usize * size];
        records.read_bytes(0, &mut bytes);
        bytes
            .chunks_exact(size)
            .enumerate()
            .map(|(t, record)| {
                let r: layout::TileResult = bytemuck::pod_read_unaligned(record);
                outcome(t as u64, r.status, [r.result0, r.result1, r.result2, r.result3])
            })
            .collect()
    }

    /// Waits until every tile has finished, the job is cancelled, or the runtime fails.
    pub fn wait(mut self) -> Result<Vec<Completion>> {
        self.wait_timeout(Duration::MAX)
    }
}

impl Drop for JobHandle {
    fn drop(&mut self) {
        if !self.consumed {
            self.shared.rings.detach(self.index);
        }
    }
}

/// How long the first launch may take to become resident. lavapipe (llvmpipe) compiles a
/// compute shader at its first dispatch, not at pipeline creation: from a cold shader cache
/// the megakernel took 8.6-25 s on a 2-core machine (more with 8 VM lanes per invocation),
/// longer than `hang_timeout`.
const FIRST_DISPATCH_TIMEOUT: Duration = Duration::from_secs(180);

/// Launches the kernel, waits for it to be resident, and pings it through the ring.
fn self_test(
    shared: &Arc<Shared>,
    dispatcher: &mut Dispatcher,
    hang_timeout: Duration,
) -> Result<std::result::Result<Duration, String>> {
    let rings = &shared.rings;
    rings.store(ControlWord::EPOCH, 1);
    shared.launches.fetch_add(1, Ordering::SeqCst);
    dispatcher.submit()?;
    let start = Instant::now();
    let mut resident = false;
    while start.elapsed() < hang_timeout.max(FIRST_DISPATCH_TIMEOUT) {
        if rings.load(ControlWord::RESIDENT) > 0 {
            resident = true;
            break;
        }
        if dispatcher.wait(Duration::ZERO)? {
            break;
        }
        std::thread::yield_now();
    }
    let outcome = if !resident {
        Err("the kernel did not become resident".to_owned())
    } else {
        let (index, _) = rings.try_reserve_run(1).expect("fresh ring has room");
        let ping = Job::echo([0x5049_4E47, 1, 2, 3]).with_tag(u64::MAX);
        let sent = Instant::now();
        rings.publish(index, std::iter::once((ping.entry, Vec::new())));
        let mut answer = None;
        while sent.elapsed() < Duration::from_secs(1) && answer.is_none() {
            answer = rings.take(index);
            if answer.is_none() && dispatcher.wait(Duration::ZERO)? {
                break; // the kernel left without answering
            }
        }
        let rtt = sent.elapsed();
        match answer {
            Some(a) if a.tag == u64::MAX && [a.result0, a.result1, a.result2, a.result3] == [0x5049_4E47, 1, 2, 3] => {
                Ok(rtt)
            }
            Some(a) => Err(format!("the kernel answered the ping with a corrupt completion {a:?}")),
            None => {
                rings.detach(index); // the supervisor's first epoch serves it; nobody waits
                Err("a job published while the kernel ran was not seen within 1 s".to_owned())
            }
        }
    };
    // Stop this launch; the supervisor starts the real epochs (and serves an unanswered ping).
    rings.store(ControlWord::SHUTDOWN, 1);
    if !dispatcher.wait(hang_timeout)? {
        shared.ctx.poison();
        return Err(Error::KernelUnresponsive(hang_timeout));
    }
    rings.store(ControlWord::SHUTDOWN, 0);
    Ok(outcome)
}

impl Supervisor {
    fn run(mut self) {
        let shared = self.shared.clone();
        loop {
            // Park until work is pending or shutdown begins.
            {
                let mut guard = shared.wake.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    shared.kernel_running.store(false, Ordering::SeqCst);
                    fence(Ordering::SeqCst);
                    if shared.lifecycle.load(Ordering::SeqCst) != OPEN || shared.rings.has_pending() {
                        break;
                    }
                    guard = shared
                        .wake_cv
                        .wait_timeout(guard, Duration::from_millis(50))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
            // Shutting down: claimed spread jobs still finish (a launch with the shutdown flag
            // up runs their tiles, then exits).
            if shared.lifecycle.load(Ordering::SeqCst) != OPEN && !shared.rings.spread_open() {
                return;
            }
            shared.kernel_running.store(true, Ordering::SeqCst);
            let head_before = shared.rings.load(ControlWord::SQ_HEAD);
            let done_before = shared.rings.load(ControlWord::JOBS_DONE);
            let open_before = shared.rings.load(ControlWord::SPREAD_OPEN);
            let draining = shared.lifecycle.load(Ordering::SeqCst) != OPEN;
            let tiles_before = draining.then(|| shared.rings.board_tiles_done());
            shared.rings.store(ControlWord::YIELD, 0);
            let epoch = shared.launches.fetch_add(1, Ordering::SeqCst) + 1;
            shared.rings.store(ControlWord::EPOCH, epoch as u32);
            if self.dispatcher.submit().is_err() {
                // vkQueueSubmit fails only for lost devices or exhausted memory: either way
                // no kernel can run any more.
                shared.fail(Failure::DeviceLost);
                shared.kernel_running.store(false, Ordering::SeqCst);
                return;
            }
            if let Err(failure) = self.watch() {
                shared.fail(failure);
                shared.kernel_running.store(false, Ordering::SeqCst);
                return;
            }
            // Every job claimed in an epoch completes before the epoch ends, unless a
            // driver cut the kernel's loop, or it is a spread job whose tiles go on in the
            // next launch (counted open). Then the kernel's own bookkeeping may be cut short
            // too, so compare claims with completions and open spread jobs as well as its
            // exit report.
            let head_after = shared.rings.load(ControlWord::SQ_HEAD);
            let claimed = head_after.wrapping_sub(head_before);
            let done = shared.rings.load(ControlWord::JOBS_DONE).wrapping_sub(done_before);
            let opened = shared.rings.load(ControlWord::SPREAD_OPEN).wrapping_sub(open_before);
            // While shutting down, a launch only drains spread jobs; one that finished no
            // tile would repeat forever, so its jobs are failed instead.
            let stalled = tiles_before.is_some_and(|before| done == 0 && shared.rings.board_tiles_done() == before);
            let unplanned = shared.rings.load(ControlWord::UNPLANNED_EXITS);
            if std::env::var_os("MEGARING_TRACE").is_some() {
                let c = shared.rings.control_snapshot();
                eprintln!("epoch {epoch}: head {head_before}->{head_after} claimed {claimed} done {done} exit {} budget {} idle {} max_it {}", c.exit_reason, c.budget_exits, c.idle_exits, c.max_iterations);
            }
            if unplanned != self.unplanned_seen || claimed.wrapping_sub(done) != opened || stalled {
                self.unplanned_seen = unplanned;
                // Spread jobs of earlier epochs may be among the casualties: fail every
                // claimed job without a completion, and forget the board's.
                let window = head_after.wrapping_sub(shared.rings.entries());
                let lost = shared.rings.fail_unfinished(window, head_after);
                shared.rings.reset_board();
                shared.lost.fetch_add(lost, Ordering::SeqCst);
            }
        }
    }

    /// Waits for the current launch to end, watching its heartbeat.
    fn watch(&mut self) -> std::result::Result<(), Failure> {
        let rings = &self.shared.rings;
        let mut last = (rings.load(ControlWord::HEARTBEAT), rings.load(ControlWord::SQ_HEAD));
        let mut progress_at = Instant::now();
        loop {
            match self.dispatcher.wait(Duration::from_millis(5)) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(_) => {
                    self.shared.ctx.poison();
                    return Err(Failure::DeviceLost);
                }
            }
            let now = (rings.load(ControlWord::HEARTBEAT), rings.load(ControlWord::SQ_HEAD));
            if now != last {
                last = now;
                progress_at = Instant::now();
            } else if progress_at.elapsed() > self.hang_timeout {
                rings.store(ControlWord::SHUTDOWN, 1);
                if !matches!(self.dispatcher.wait(self.hang_timeout), Ok(true)) {
                    self.shared.ctx.poison();
                }
                return Err(Failure::Unresponsive(self.hang_timeout));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Duration, Pause};

    #[test]
    fn a_waiter_oversleeps_a_long_job_by_at_most_a_sixteenth() {
        assert_eq!(Pause::after(1, Duration::ZERO), Pause::Spin);
        assert_eq!(Pause::after(5_000, Duration::from_micros(1_999)), Pause::Yield);
        assert_eq!(
            Pause::after(5_000, Duration::from_millis(2)),
            Pause::Sleep(Duration::from_micros(125))
        );
        assert_eq!(
            Pause::after(5_000, Duration::from_millis(4)),
            Pause::Sleep(Duration::from_micros(250))
        );
        assert_eq!(
            Pause::after(5_000, Duration::from_secs(9)),
            Pause::Sleep(Duration::from_micros(500))
        );
        for ms in 2..100 {
            let waited = Duration::from_millis(ms);
            match Pause::after(u32::MAX, waited) {
                Pause::Sleep(time) => assert!(time * 16 <= waited, "{time:?} after {waited:?}"),
                other => panic!("{other:?} after {waited:?}"),
            }
        }
    }
}
