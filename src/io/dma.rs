//! GPU-initiated reads: a program running on the GPU asks for a file read and names the
//! continuation that consumes it; the host services the request with io_uring and publishes
//! the continuation job over the bytes in place. No lane ever waits for IO: requests are
//! records a program writes to memory, and the host reads them when the requesting job
//! completes.
//!
//! # Protocol
//!
//! - The host registers files ([`DmaService::register_file`]) and continuation programs
//!   ([`DmaService::register_continuation`]); each gets a small integer handle (0, 1, ...).
//! - A job that may request reads binds the **request buffer** as `b1`. Word 0 counts the
//!   requests; request `k` is the 8 words at `8 + 8k`:
//!   `[file, offset_lo, offset_hi, length, continuation, arg0, arg1, 0]`. Words 1..8 are
//!   reserved. A program allocates `k` with `atomic.add rK, b1[zero], one` and then `st32`s
//!   the record's words. Writing past the buffer faults (`STATUS_FAULT_OUT_OF_RANGE`); a
//!   counter above the buffer's capacity is capped by the host and reported
//!   ([`DmaError::TooManyRequests`]).
//! - When a requesting job completes OK, the host reads the counter and the records, zeroes
//!   them for reuse, and validates each request: an unknown file or continuation, a length
//!   of 0 or above [`DmaService::max_read`], or an offset at or past the end of the file is
//!   rejected with its own [`DmaError`] naming the request index; the other requests go on.
//!   The requests of a job that faulted are discarded (its buffer is zeroed all the same).
//! - A valid request is read with io_uring into a free slot of an [`Arena`] (imported host
//!   memory). When it lands, the continuation runs with `b0` = exactly the bytes read (a view
//!   of the slot), `b1` = a zeroed request buffer of its own (so it may request more reads),
//!   `b2..` = the run's shared buffers, `grid` = bytes read, and
//!   args = `[bytes read, arg0, arg1, file]`. The slot is free again when it completes.
//! - [`DmaService::run`] submits the initial job (`b0` = the caller's input, `b1` = a request
//!   buffer, `b2..` = shared buffers) and drives reads and continuations until none is
//!   outstanding. The [`DmaReport`] lists every job with the chain of request indices that
//!   led to it, and every rejected request.
//!
//! Reads are buffered (the page cache), so offsets and lengths need no alignment; a read
//! that reaches the end of the file is short, and its continuation sees the bytes there are.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::ring::layout::VM_MAX_BUFFERS;
use crate::vm::VerifiedProgram;
use crate::{Completion, DeviceBuffer, DeviceProgram, Job, JobHandle, Placement, Runtime};

use super::arena::Arena;
use super::uring::{FileId, IoError};

/// Words before the first record of a request buffer (word 0 is the counter).
pub const REQUEST_HEADER_WORDS: u32 = 8;
/// Words per request record.
pub const REQUEST_WORDS: u32 = 8;

/// Why a request was rejected or could not be served; each names the request's index `k`
/// in its job's request buffer and says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum DmaError {
    /// The record names a file handle that was never registered.
    #[error(
        "request {request}: unknown file handle {file} ({files} files registered); use a handle returned by \
         DmaService::register_file"
    )]
    UnknownFile {
        /// Index of the request in its job's buffer.
        request: u32,
        /// The handle given.
        file: u32,
        /// Files registered.
        files: u32,
    },
    /// The record names a continuation that was never registered.
    #[error(
        "request {request}: unknown continuation {continuation} ({continuations} registered); use an id returned \
         by DmaService::register_continuation"
    )]
    UnknownContinuation {
        /// Index of the request in its job's buffer.
        request: u32,
        /// The id given.
        continuation: u32,
        /// Continuations registered.
        continuations: u32,
    },
    /// The record asks for 0 bytes.
    #[error("request {request}: length 0; ask for 1 byte or more (word 3 of the record)")]
    ZeroLength {
        /// Index of the request in its job's buffer.
        request: u32,
    },
    /// The record asks for more bytes than one destination slot holds.
    #[error(
        "request {request}: length {len} exceeds the largest read, {max} bytes; split the read, or create the \
         DmaService with larger slots"
    )]
    TooLong {
        /// Index of the request in its job's buffer.
        request: u32,
        /// Length asked for.
        len: u32,
        /// The service's slot size.
        max: usize,
    },
    /// The record's offset is at or past the end of the file.
    #[error(
        "request {request}: offset {offset} is at or past the end of {} ({file_len} bytes); read inside the file",
        path.display()
    )]
    PastEnd {
        /// Index of the request in its job's buffer.
        request: u32,
        /// Offset asked for.
        offset: u64,
        /// The file's size when it was registered.
        file_len: u64,
        /// The file.
        path: PathBuf,
    },
    /// The job's counter claims more requests than its buffer holds (only the first
    /// `capacity` records were read).
    #[error(
        "the job counted {requested} requests but its request buffer holds {capacity}; request fewer, or create \
         the DmaService with a larger max_requests_per_job"
    )]
    TooManyRequests {
        /// The counter's value.
        requested: u32,
        /// Records the buffer holds.
        capacity: u32,
    },
    /// The run reached its job limit ([`DmaService::set_max_jobs`]), so the request was dropped.
    #[error(
        "request {request}: the run already started {limit} jobs, its limit; end the chain sooner or raise it \
         with DmaService::set_max_jobs"
    )]
    JobLimit {
        /// Index of the request in its job's buffer.
        request: u32,
        /// The limit.
        limit: usize,
    },
    /// io_uring failed to read the requested bytes.
    #[error("request {request}: {source}")]
    Read {
        /// Index of the request in its job's buffer.
        request: u32,
        /// What the reader said.
        source: IoError,
    },
    /// The bytes landed but the continuation job could not be built or published.
    #[error("request {request}: the continuation could not be published: {source}")]
    Publish {
        /// Index of the request in its job's buffer.
        request: u32,
        /// What the runtime said (e.g. a program that needs more buffers than the run binds).
        source: Box<Error>,
    },
}

impl DmaError {
    /// The index of the request in its job's buffer (`None` for [`DmaError::TooManyRequests`],
    /// which is about the job).
    pub fn request(&self) -> Option<u32> {
        match self {
            DmaError::UnknownFile { request, .. }
            | DmaError::UnknownContinuation { request, .. }
            | DmaError::ZeroLength { request }
            | DmaError::TooLong { request, .. }
            | DmaError::PastEnd { request, .. }
            | DmaError::JobLimit { request, .. }
            | DmaError::Read { request, .. }
            | DmaError::Publish { request, .. } => Some(*request),
            DmaError::TooManyRequests { .. } => None,
        }
    }
}

/// A read request as a program wrote it (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaRequest {
    /// File handle from [`DmaService::register_file`].
    pub file: u32,
    /// Byte offset in the file.
    pub offset: u64,
    /// Bytes to read (at most [`DmaService::max_read`]).
    pub len: u32,
    /// Continuation id from [`DmaService::register_continuation`].
    pub continuation: u32,
    /// Passed to the continuation as args 1 and 2.
    pub args: [u32; 2],
}

impl DmaRequest {
    /// The record's 8 words, as a program stores them.
    pub fn to_words(&self) -> [u32; 8] {
        let [lo, hi] = [self.offset as u32, (self.offset >> 32) as u32];
        [
            self.file,
            lo,
            hi,
            self.len,
            self.continuation,
            self.args[0],
            self.args[1],
            0,
        ]
    }

    fn from_words(w: &[u32]) -> Self {
        DmaRequest {
            file: w[0],
            offset: u64::from(w[1]) | (u64::from(w[2]) << 32),
            len: w[3],
            continuation: w[4],
            args: [w[5], w[6]],
        }
    }
}

/// One job a run executed.
#[derive(Debug)]
pub struct DmaJob {
    /// Request indices from the initial job to this one: empty for the initial job, `[k]` for
    /// the continuation of its request `k`, `[k, j]` for that continuation's request `j`, ...
    pub chain: Vec<u32>,
    /// The continuation id, `None` for the initial job.
    pub continuation: Option<u32>,
    /// The request it continues, `None` for the initial job.
    pub request: Option<DmaRequest>,
    /// Bytes read for it (its `grid` and arg 0); 0 for the initial job.
    pub bytes: usize,
    /// Its completion, or its fault.
    pub outcome: Result<Completion>,
}

/// A request that was rejected or failed; no job ran for it.
#[derive(Debug)]
pub struct DmaRejection {
    /// The chain of the requesting job (see [`DmaJob::chain`]).
    pub chain: Vec<u32>,
    /// What was wrong.
    pub error: DmaError,
}

/// What a [`DmaService::run`] did.
#[derive(Debug, Default)]
pub struct DmaReport {
    /// Every job that ran, in completion order.
    pub jobs: Vec<DmaJob>,
    /// Every request that did not produce a job.
    pub rejected: Vec<DmaRejection>,
}

impl DmaReport {
    /// The jobs of continuation `id`.
    pub fn continuations(&self, id: u32) -> impl Iterator<Item = &DmaJob> {
        self.jobs.iter().filter(move |job| job.continuation == Some(id))
    }
}

struct RegisteredFile {
    path: PathBuf,
    id: FileId,
    len: u64,
}

/// A validated request waiting for (or in) a read.
struct Pending {
    /// The requesting job's chain.
    chain: Vec<u32>,
    /// The request's index in its job's buffer.
    index: u32,
    request: DmaRequest,
}

/// A job in flight.
struct Running {
    handle: JobHandle,
    requests: DeviceBuffer,
    slot: Option<usize>,
    chain: Vec<u32>,
    request: Option<DmaRequest>,
    bytes: usize,
}

/// Serves GPU-initiated reads: io_uring into an imported [`Arena`], continuations on the
/// megakernel. Reusable for many runs.
pub struct DmaService<'r> {
    runtime: &'r Runtime,
    /// The destination slots and the reader that fills them.
    arena: Arena,
    files: Vec<RegisteredFile>,
    continuations: Vec<DeviceProgram>,
    free_slots: Vec<usize>,
    /// Per slot: the launch count when its last continuation completed; the next one to
    /// read the slot must run in a later launch (see `Runtime::fresh_launch_since`).
    slot_read_in: Vec<Option<u64>>,
    /// Zeroed request buffers, each with the launch count when its last job completed
    /// (`None`: never used); reused only by jobs of a later launch.
    spare: Vec<(DeviceBuffer, Option<u64>)>,
    max_requests: u32,
    max_jobs: usize,
    fuel: u32,
}

impl<'r> DmaService<'r> {
    /// A service with `slots` destination slots of `slot_bytes` bytes (rounded up to 4 KiB;
    /// the largest read) and request buffers of `max_requests_per_job` records. At most
    /// `slots` reads and continuations are in flight at once.
    pub fn new(runtime: &'r Runtime, slots: usize, slot_bytes: usize, max_requests_per_job: u32) -> Result<Self> {
        if !(1..=1 << 20).contains(&max_requests_per_job) {
            return Err(Error::InvalidConfig(format!(
                "max_requests_per_job = {max_requests_per_job}; use 1..=1048576"
            )));
        }
        if !(1..=1024).contains(&slots) || slot_bytes == 0 || slot_bytes > u32::MAX as usize / 2 {
            return Err(Error::InvalidConfig(format!(
                "{slots} slots of {slot_bytes} bytes; use 1..=1024 slots of 1 byte to 2 GiB"
            )));
        }
        // Jobs reading the arena hold its buffer alive; a slot is read into only while no
        // job uses it.
        let arena = Arena::new(runtime, slots, slot_bytes, slots as u32, true)?;
        Ok(DmaService {
            runtime,
            arena,
            files: Vec::new(),
            continuations: Vec::new(),
            free_slots: (0..slots).rev().collect(),
            slot_read_in: vec![None; slots],
            spare: Vec::new(),
            max_requests: max_requests_per_job,
            max_jobs: 1 << 20,
            fuel: runtime.max_fuel(),
        })
    }

    /// Opens `path` for requests; returns its handle (0, 1, ... in registration order).
    /// Its size is taken now: requests at or past it are rejected.
    pub fn register_file(&mut self, path: impl AsRef<Path>) -> Result<u32> {
        let path = path.as_ref();
        let reader = self.arena.reader_mut();
        let id = reader.open(path, false)?;
        self.files.push(RegisteredFile {
            path: path.to_owned(),
            id,
            len: reader.file_len(id),
        });
        Ok(self.files.len() as u32 - 1)
    }

    /// Uploads a continuation program; returns its id (0, 1, ... in registration order).
    /// It runs with `b0` = the bytes read, `b1` = its request buffer, `b2..` = the run's
    /// shared buffers, args `[bytes read, arg0, arg1, file]`; verify it for that many buffers.
    pub fn register_continuation(&mut self, program: VerifiedProgram) -> Result<u32> {
        self.continuations.push(self.runtime.load_program(program)?);
        Ok(self.continuations.len() as u32 - 1)
    }

    /// Sets the fuel of every job (default and maximum: [`Runtime::max_fuel`]).
    pub fn set_fuel(&mut self, fuel: u32) -> Result<()> {
        if fuel == 0 || fuel > self.runtime.max_fuel() {
            return Err(Error::InvalidConfig(format!(
                "fuel = {fuel}; use 1..={} on this device",
                self.runtime.max_fuel()
            )));
        }
        self.fuel = fuel;
        Ok(())
    }

    /// Caps the jobs one run starts, initial job included (default 2^20), so a chain that
    /// never ends is cut ([`DmaError::JobLimit`]) instead of running forever.
    pub fn set_max_jobs(&mut self, max_jobs: usize) {
        self.max_jobs = max_jobs.max(1);
    }

    /// The largest read a request may ask for: the slot size.
    pub fn max_read(&self) -> usize {
        self.arena.slot_bytes()
    }

    /// Whether the destination arena is imported host memory (else see [`Arena::fallback`]).
    pub fn arena_imported(&self) -> bool {
        self.arena.fallback().is_none()
    }

    /// Runs `program` with `b0` = `input` (an empty view when `None`), `b1` = a request
    /// buffer, `b2..` = `shared` (also bound by every continuation), over `grid` with `args`,
    /// then serves its requests and those of the continuations until none is outstanding.
    ///
    /// `Err` only when the initial job cannot start or io_uring itself fails; rejected
    /// requests and faulting jobs are in the report.
    pub fn run(
        &mut self,
        program: &VerifiedProgram,
        input: Option<&DeviceBuffer>,
        shared: &[&DeviceBuffer],
        grid: u32,
        args: [u32; 4],
    ) -> Result<DmaReport> {
        if shared.len() + 2 > VM_MAX_BUFFERS as usize {
            return Err(Error::InvalidConfig(format!(
                "{} shared buffers; b0 and b1 are taken, so give at most {}",
                shared.len(),
                VM_MAX_BUFFERS - 2
            )));
        }
        let loaded = self.runtime.load_program(program.clone())?;
        let requests = self.request_buffer()?;
        let b0 = input.map_or((&requests, 0..0), |b| (b, 0..b.len_u32() * 4));
        let first = self
            .table(b0, &requests, shared)
            .and_then(|table| Job::program(&loaded, &table, grid, args, self.fuel))
            .and_then(|job| self.runtime.submit(job.with_tag(0)));
        let handle = match first {
            Ok(handle) => handle,
            Err(error) => {
                self.spare.push((requests, None));
                return Err(error);
            }
        };
        let mut running = vec![Running {
            handle,
            requests,
            slot: None,
            chain: Vec::new(),
            request: None,
            bytes: 0,
        }];
        let mut report = DmaReport::default();
        let mut pending = VecDeque::new();
        let mut reading: Vec<Option<Pending>> = (0..self.arena.slots()).map(|_| None).collect();
        let mut started = 1usize; // jobs started or promised to a pending request
        let mut tags = 0u64;
        let mut idle_since: Option<Instant> = None;
        let mut landed: Vec<(usize, Pending, usize, Option<super::IoError>)> = Vec::new();
        loop {
            let mut moved = false;
            // 1. Finished jobs free their slot and hand over their requests.
            let mut i = 0;
            while i < running.len() {
                match running[i].handle.poll() {
                    Some(outcome) => {
                        let job = running.swap_remove(i);
                        self.finish(job, outcome, &mut report, &mut pending, &mut started);
                        moved = true;
                    }
                    None => i += 1,
                }
            }
            // 2. Pending requests read into free slots.
            while !pending.is_empty() {
                let Some(slot) = self.free_slots.pop() else { break };
                let p: Pending = pending.pop_front().expect("pending is not empty");
                let file = self.files[p.request.file as usize].id;
                let dst = self.arena.slot_offset(slot);
                let len = p.request.len as usize;
                match self
                    .arena
                    .reader_mut()
                    .submit_read(file, p.request.offset, dst, len, slot as u64)
                {
                    Ok(()) => reading[slot] = Some(p),
                    Err(source) => {
                        self.free_slots.push(slot);
                        started -= 1;
                        let error = DmaError::Read {
                            request: p.index,
                            source,
                        };
                        report.rejected.push(DmaRejection { chain: p.chain, error });
                    }
                }
                moved = true;
            }
            // 3. Landed reads publish their continuations.
            if self.arena.reader().in_flight() > 0 {
                let done = match self.arena.reader_mut().complete(running.is_empty()) {
                    Ok(done) => done,
                    Err(error) => {
                        // The reader failed: restart it (every read the kernel took lands
                        // first), so every slot is free again once the jobs end, and the
                        // service serves the next run.
                        let restarted = self.restart_reader();
                        for (slot, ..) in landed {
                            self.free_slots.push(slot);
                        }
                        // Slots whose reads may still land (the old reader stayed) are
                        // never handed out again.
                        if restarted.is_ok() {
                            for (slot, read) in reading.iter().enumerate() {
                                if read.is_some() {
                                    self.free_slots.push(slot);
                                }
                            }
                        }
                        for job in running {
                            self.slot_back(job.slot);
                            let _ = job.handle.wait();
                        }
                        restarted?;
                        return Err(error.into());
                    }
                };
                for done in done {
                    moved = true;
                    let slot = done.user_data as usize;
                    let p = reading[slot]
                        .take()
                        .expect("a read completed for a slot that was reading");
                    landed.push((slot, p, done.bytes, done.error));
                }
            }
            // 3b. A landed read's continuation runs in a launch that has not read the slot's
            // previous contents (the device may cache them); else a relaunch is requested.
            let mut k = 0;
            while k < landed.len() {
                let (slot, _, _, ref error) = landed[k];
                let fresh = self.slot_read_in[slot].map_or(true, |l| self.runtime.fresh_launch_since(l));
                if error.is_none() && !fresh {
                    self.runtime.request_relaunch();
                    k += 1;
                    continue;
                }
                moved = true;
                let (slot, p, bytes, error) = landed.swap_remove(k);
                let request = p.index;
                tags += 1;
                let published = match error {
                    Some(source) => Err(DmaError::Read { request, source }),
                    None => self
                        .publish(slot, &p, bytes, shared, tags)
                        .map_err(|e| DmaError::Publish {
                            request,
                            source: Box::new(e),
                        }),
                };
                match published {
                    Ok(job) => running.push(job),
                    Err(error) => {
                        self.free_slots.push(slot);
                        started -= 1;
                        report.rejected.push(DmaRejection { chain: p.chain, error });
                    }
                }
            }
            if running.is_empty() && pending.is_empty() && landed.is_empty() && reading.iter().all(Option::is_none) {
                return Ok(report);
            }
            if moved {
                idle_since = None;
            } else if idle_since.get_or_insert_with(Instant::now).elapsed() > Duration::from_micros(50) {
                std::thread::sleep(Duration::from_micros(20));
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// Replaces a failed reader and opens the registered files in the new one.
    fn restart_reader(&mut self) -> Result<()> {
        self.arena.restart_reader()?;
        for file in &mut self.files {
            let reader = self.arena.reader_mut();
            file.id = reader.open(&file.path, false)?;
            file.len = reader.file_len(file.id);
        }
        Ok(())
    }

    /// A zeroed request buffer from the spares, or a new one.
    fn request_buffer(&mut self) -> Result<DeviceBuffer> {
        // A spare last used by a job of a running launch may be cached on the device as it
        // was: take only those that launch cannot read again.
        let fresh = self
            .spare
            .iter()
            .position(|(_, used)| used.map_or(true, |launch| self.runtime.fresh_launch_since(launch)));
        match fresh.map(|k| self.spare.swap_remove(k).0) {
            Some(buffer) => Ok(buffer),
            None => {
                let words = REQUEST_HEADER_WORDS + REQUEST_WORDS * self.max_requests;
                // Device memory the host maps (see io::stream: host-zeroed counters the
                // device adds to must not live in host memory a device cache holds).
                self.runtime.alloc_u32(u64::from(words), Placement::DeviceShared)
            }
        }
    }

    /// The buffer table `[b0, requests, shared...]`.
    fn table(
        &self,
        b0: (&DeviceBuffer, std::ops::Range<u64>),
        requests: &DeviceBuffer,
        shared: &[&DeviceBuffer],
    ) -> Result<crate::BufferTable> {
        let mut views = vec![b0, (requests, 0..requests.len_u32() * 4)];
        views.extend(shared.iter().map(|b| (*b, 0..b.len_u32() * 4)));
        self.runtime.buffer_table_views(&views)
    }

    /// Publishes the continuation of `p`, whose `bytes` landed in `slot`.
    fn publish(
        &mut self,
        slot: usize,
        p: &Pending,
        bytes: usize,
        shared: &[&DeviceBuffer],
        tag: u64,
    ) -> Result<Running> {
        let requests = self.request_buffer()?;
        let start = self.arena.slot_offset(slot) as u64;
        let program = &self.continuations[p.request.continuation as usize];
        let r = &p.request;
        let args = [bytes as u32, r.args[0], r.args[1], r.file];
        let handle = self
            .table((self.arena.buffer(), start..start + bytes as u64), &requests, shared)
            .and_then(|table| Job::program(program, &table, bytes as u32, args, self.fuel))
            .and_then(|job| self.runtime.submit(job.with_tag(tag)));
        match handle {
            Ok(handle) => Ok(Running {
                handle,
                requests,
                slot: Some(slot),
                chain: p.chain.iter().copied().chain([p.index]).collect(),
                request: Some(p.request),
                bytes,
            }),
            Err(error) => {
                self.spare.push((requests, None));
                Err(error)
            }
        }
    }

    /// Records a finished job, frees its slot, and queues its valid requests.
    fn finish(
        &mut self,
        job: Running,
        outcome: Result<Completion>,
        report: &mut DmaReport,
        pending: &mut VecDeque<Pending>,
        started: &mut usize,
    ) {
        self.slot_back(job.slot);
        let header = REQUEST_HEADER_WORDS as u64;
        let counted = job.requests.read_u32(0, 1).expect("the request buffer has a counter")[0];
        let n = counted.min(self.max_requests);
        let words = job
            .requests
            .read_u32(header, u64::from(n * REQUEST_WORDS))
            .expect("n records fit the request buffer");
        if outcome.is_ok() {
            if counted > n {
                report.rejected.push(DmaRejection {
                    chain: job.chain.clone(),
                    error: DmaError::TooManyRequests {
                        requested: counted,
                        capacity: self.max_requests,
                    },
                });
            }
            for (k, record) in words.chunks_exact(REQUEST_WORDS as usize).enumerate() {
                let request = DmaRequest::from_words(record);
                let checked = match self.validate(k as u32, &request) {
                    Ok(()) if *started >= self.max_jobs => Err(DmaError::JobLimit {
                        request: k as u32,
                        limit: self.max_jobs,
                    }),
                    other => other,
                };
                match checked {
                    Ok(()) => {
                        *started += 1;
                        pending.push_back(Pending {
                            chain: job.chain.clone(),
                            index: k as u32,
                            request,
                        });
                    }
                    Err(error) => report.rejected.push(DmaRejection {
                        chain: job.chain.clone(),
                        error,
                    }),
                }
            }
        }
        // Zero what the job wrote, so the buffer serves the next job as new.
        let zeros = vec![0u32; (header + u64::from(n * REQUEST_WORDS)) as usize];
        job.requests
            .write_u32(0, &zeros)
            .expect("the zeroed range fits the buffer");
        self.spare.push((job.requests, Some(self.runtime.launches())));
        report.jobs.push(DmaJob {
            chain: job.chain,
            continuation: job.request.map(|r| r.continuation),
            request: job.request,
            bytes: job.bytes,
            outcome,
        });
    }

    fn slot_back(&mut self, slot: Option<usize>) {
        if let Some(slot) = slot {
            self.free_slots.push(slot);
            self.slot_read_in[slot] = Some(self.runtime.launches());
        }
    }

    /// Checks request `k` against the registered files and continuations and the slot size.
    fn validate(&self, k: u32, r: &DmaRequest) -> Result<(), DmaError> {
        let Some(file) = self.files.get(r.file as usize) else {
            return Err(DmaError::UnknownFile {
                request: k,
                file: r.file,
                files: self.files.len() as u32,
            });
        };
        if r.continuation as usize >= self.continuations.len() {
            return Err(DmaError::UnknownContinuation {
                request: k,
                continuation: r.continuation,
                continuations: self.continuations.len() as u32,
            });
        }
        if r.len == 0 {
            return Err(DmaError::ZeroLength { request: k });
        }
        if r.len as usize > self.max_read() {
            return Err(DmaError::TooLong {
                request: k,
                len: r.len,
                max: self.max_read(),
            });
        }
        if r.offset >= file.len {
            return Err(DmaError::PastEnd {
                request: k,
                offset: r.offset,
                file_len: file.len,
                path: file.path.clone(),
            });
        }
        Ok(())
    }
}
