//! The runtime: owns the device context, the rings and the supervisor thread that launches
//! the megakernel in epochs (docs/protocol.md). Host threads submit jobs lock-free and
//! wait on per-job handles; the supervisor relaunches the kernel whenever work is pending
//! and it has parked, run out of budget, or been told to stop.
//!
//! - `config`: settings, the environment read once, per-device defaults;
//! - `supervisor`: the thread that launches epochs and watches them;
//! - `handle`: job handles and how a completion becomes an outcome.

mod config;
#[cfg(feature = "fault-injection")]
mod faults;
mod handle;
mod supervisor;

pub use config::{DeviceDefaults, ModeRequest, RuntimeConfig, MAX_EPOCH_BUDGET};
#[cfg(feature = "fault-injection")]
pub use faults::KernelFault;
pub use handle::{JobHandle, TiledHandle};

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::job::{BufferTable, DeviceBuffer, DeviceProgram, Job};
use crate::ring::layout::{self, LaunchParams};
use crate::ring::{ControlWord, Rings};
use crate::vk::{Buffer, Capabilities, ComputePipeline, Context, Dispatcher, Placement};
use handle::Backoff;
use supervisor::Supervisor;

/// How jobs reach the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The kernel stays resident and sees jobs published while it runs.
    Persistent,
    /// The kernel is launched per batch of pending jobs and exits when the ring is empty
    /// (the fallback where the start-up self-test fails).
    Batch,
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
    /// What megaring picks on this device where the configuration leaves a choice open.
    pub defaults: DeviceDefaults,
}

/// Counters from the control block and the supervisor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Kernel launches (epochs) so far.
    pub launches: u64,
    /// Jobs the kernel completed.
    pub jobs_done: u32,
    /// Tiles of spread jobs the kernel finished.
    pub tiles_done: u32,
    /// Workgroup exits for idleness.
    pub idle_exits: u32,
    /// Workgroup exits for the iteration budget.
    pub budget_exits: u32,
    /// Workgroup exits for shutdown.
    pub shutdown_exits: u32,
    /// Workgroup exits for a relaunch request ([`Runtime::request_relaunch`]).
    pub yield_exits: u32,
    /// Loops that ended before the kernel chose to (see `ControlBlock::unplanned_exits`).
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

/// Why the runtime can no longer run jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    DeviceLost,
    Unresponsive,
}

const FAILURE_NONE: u32 = 0;
const FAILURE_DEVICE_LOST: u32 = 1;
const FAILURE_UNRESPONSIVE: u32 = 2;

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
    trace: bool,
    launches: AtomicU64,
    cancelled: AtomicU32,
    lost: AtomicU32,
    max_cost: u32,
    lanes: u32,
    /// VM lanes per invocation.
    sublanes: u32,
    /// `TileResult` buffers of spread jobs, reused once nothing else holds them (neither a
    /// handle nor the ring slot of a job that has not completed and been collected).
    tile_records: Mutex<Vec<Arc<Buffer>>>,
    #[cfg(feature = "fault-injection")]
    faults: faults::Injected,
}

impl Shared {
    /// The error every waiter gets once the runtime failed, if it did.
    fn failure(&self) -> Option<Error> {
        match self.failure.load(Ordering::Acquire) {
            FAILURE_NONE => None,
            FAILURE_DEVICE_LOST => Some(Error::DeviceLost),
            _ => Some(Error::KernelUnresponsive(self.hang_timeout)),
        }
    }

    /// Records the first failure; later ones are ignored.
    fn fail(&self, failure: Failure) {
        let code = match failure {
            Failure::DeviceLost => FAILURE_DEVICE_LOST,
            Failure::Unresponsive => FAILURE_UNRESPONSIVE,
        };
        let _ = self
            .failure
            .compare_exchange(FAILURE_NONE, code, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Whether shutdown has finished (the sweep ran; nothing will be claimed any more).
    fn stopped(&self) -> bool {
        self.lifecycle.load(Ordering::SeqCst) == STOPPED
    }

    fn wake_supervisor(&self) {
        let _guard = self.wake.lock().unwrap_or_else(|p| p.into_inner());
        self.wake_cv.notify_all();
    }
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
        let ctx = Arc::new(Context::new(&config.device, config.validation, config.validation_echo)?);
        let caps = ctx.caps().clone();
        let settings = config.settle(&caps)?;
        let rings = Rings::new(&ctx, config.ring_entries, config.cq_placement, config.first_index)?;
        let describe = |b: &Buffer| (b.memory_type(), format!("{:?}", b.memory_flags()));
        let memory = [
            describe(rings.control_buffer()),
            describe(rings.sq_buffer()),
            describe(rings.cq_buffer()),
        ];
        let lanes = settings.lanes;
        let pipeline = ComputePipeline::new(
            &ctx,
            crate::shaders::MEGAKERNEL,
            std::mem::size_of::<LaunchParams>() as u32,
            &[
                (layout::LANES_CONSTANT_ID, lanes),
                (layout::LANES_VALUE_CONSTANT_ID, lanes),
                (layout::VM_GROUPS_CONSTANT_ID, settings.sublanes / 4),
                (layout::VM_CONVERGED_CONSTANT_ID, u32::from(settings.converged)),
            ],
        )?;
        let mut dispatcher = Dispatcher::new(&ctx)?;
        let epoch_budget = settings.epoch_budget;
        let shared = Arc::new(Shared {
            ctx: ctx.clone(),
            rings,
            lifecycle: AtomicU32::new(OPEN),
            kernel_running: AtomicBool::new(false),
            wake: Mutex::new(()),
            wake_cv: Condvar::new(),
            failure: AtomicU32::new(FAILURE_NONE),
            hang_timeout: config.hang_timeout,
            trace: config.trace,
            launches: AtomicU64::new(0),
            cancelled: AtomicU32::new(0),
            lost: AtomicU32::new(0),
            lanes,
            sublanes: settings.sublanes,
            tile_records: Mutex::new(Vec::new()),
            // What a claim on a fresh launch's first pass can still fit (ring_claim's test:
            // the launch's cost and that pass are spent, the claim's own pass, the job's
            // step and the exit reserve are kept).
            max_cost: epoch_budget
                - Job::launch_cost(lanes)
                - layout::EPOCH_RESERVE
                - 2 * layout::ITERATIONS_PER_PASS
                - layout::ITERATIONS_PER_JOB,
            #[cfg(feature = "fault-injection")]
            faults: Default::default(),
        });

        let mut params = LaunchParams {
            control: shared.rings.control_buffer().address(),
            sq: shared.rings.sq_buffer().address(),
            cq: shared.rings.cq_buffer().address(),
            board: shared.rings.board_buffer().address(),
            ring_mask: config.ring_entries - 1,
            budget: epoch_budget,
            idle_limit: settings.idle_polls,
            reserved: 0,
        };
        let self_test = if config.mode == ModeRequest::Batch {
            Err("not run: batch mode requested".to_owned())
        } else {
            // The self-test runs with the device's default budget and idle limit, whatever
            // the configuration: a tiny budget would let the kernel finish before the host
            // sees it resident, and the runtime would fall back to batch mode for nothing.
            let probe = LaunchParams {
                budget: settings.defaults.epoch_budget,
                idle_limit: settings.defaults.epoch_budget,
                ..params
            };
            dispatcher.record(&pipeline, bytemuck::bytes_of(&probe), settings.workgroups)?;
            supervisor::self_test(&shared, &mut dispatcher, config.hang_timeout)?
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
        dispatcher.record(&pipeline, bytemuck::bytes_of(&params), settings.workgroups)?;

        let info = RuntimeInfo {
            caps,
            mode,
            self_test,
            workgroups: settings.workgroups,
            lanes,
            vm_lanes: lanes * settings.sublanes,
            vm_converged: settings.converged,
            kernel_statistics: pipeline.statistics(),
            epoch_budget,
            idle_polls: params.idle_limit,
            ring_entries: config.ring_entries,
            memory,
            validation: ctx.validation_enabled(),
            defaults: settings.defaults,
        };
        let supervisor = Supervisor {
            shared: shared.clone(),
            dispatcher,
            unplanned_seen: 0,
            _pipeline: pipeline,
        };
        let thread = std::thread::Builder::new()
            .name("megaring-supervisor".into())
            .spawn(move || supervisor.run())
            .map_err(|source| Error::ThreadSpawn {
                what: "the supervisor",
                source,
            })?;
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
        let bytes = len.checked_mul(4).ok_or(Error::BufferTooLarge { elements: len })?;
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
        let prologue = Job::nop_program_cost(self.shared.lanes);
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
    /// ...); a range starts at a multiple of 4 bytes and is shorter than 4 GiB. Each
    /// program access is bounds-checked against its range.
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
            return Err(Error::InvalidArgument(
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
            job: None,
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
    /// job is refused. A batch larger than the free entries is published in runs; if a
    /// later run times out, the error is [`Error::BatchIncomplete`], and the jobs already
    /// published still run, detached: to learn their outcomes, submit batches no larger
    /// than the ring (or one spread job, [`Runtime::submit_tiled`]).
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
            return Err(failure);
        }
        let total = jobs.len();
        let mut handles = Vec::with_capacity(total);
        let mut jobs = jobs.into_iter();
        let mut backoff: Option<Backoff> = None;
        while jobs.len() > 0 {
            let Some((first, count)) = shared.rings.try_reserve_run(jobs.len() as u32) else {
                let refused = |error: Error| match handles.len() {
                    0 => error,
                    published => Error::BatchIncomplete {
                        published,
                        total,
                        source: Box::new(error),
                    },
                };
                let full = Error::RingFull {
                    capacity: shared.rings.entries(),
                };
                let Some(timeout) = wait else {
                    return Err(refused(full));
                };
                if let Some(failure) = shared.failure() {
                    return Err(refused(failure));
                }
                if !backoff.get_or_insert_with(|| Backoff::new(timeout)).snooze() {
                    return Err(refused(full));
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
            tiles_done: c.tiles_done,
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
    /// parked (the next launch starts fresh) or has been relaunched since. Then launch
    /// `launch` has ended, and what its jobs wrote to host memory has landed (a device's
    /// writes to host memory may land after the completion that follows them).
    ///
    /// Host memory the device reads may sit in a device cache that the host's writes do
    /// not invalidate (reads of host memory rewritten while the kernel runs can return
    /// the old bytes), and a launch starts with those caches clean. So memory the host
    /// rewrites after jobs of launch `launch` read it is read fresh by jobs of later
    /// launches only: see [`Runtime::request_relaunch`].
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
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
