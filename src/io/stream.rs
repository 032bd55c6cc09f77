//! The streaming scan: files are split into chunks; io_uring reads each chunk into a slot of
//! the imported [`Arena`]; the completed read publishes the chunk as one job (a spread job
//! of its tiles where it has several), which the megakernel runs over the slot in place;
//! when the job completes the slot's scratch is zeroed, the slot goes back to the free
//! list, and the chunk's result is folded into its file's, in file order.
//!
//! Backpressure: a slot is busy from its read's submission until its job completes, so the
//! disk never runs more than `slots` chunks ahead of the GPU, and the ring never holds more
//! than `slots` jobs of a scan. A chunk's job is published whole or not at all, and a slot
//! is reused only once its job has ended, whatever the outcome.
//!
//! Failures stay with their file: a read error or a failed job fails that file; if the
//! reader itself fails, the files with reads in flight fail, the reader is restarted (once
//! every read the kernel took has landed), and the other files go on.
//!
//! Chunk borders: counts and histograms add; CRCs combine in GF(2) in file order;
//! `count-literal` reads `len - 1` bytes past its chunk (rounded up to 4 KiB) so a match that
//! starts in the chunk is seen whole, and chains the chunks' per-entry-offset tables in
//! order, so every match is counted exactly once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::vm::library::{crc32_x2n, library_program, literal_chain, literal_fuel, literal_max_tile, LibraryProgram};
use crate::vm::VerifiedProgram;
use crate::{BufferTable, DeviceBuffer, DeviceProgram, Placement, Runtime, TiledHandle};

use super::arena::Arena;
use super::uring::{FileId, IoError, DIRECT_ALIGN};

/// The largest chunk: one registered io_uring buffer span, and a grid a u32 counts.
pub const MAX_CHUNK_BYTES: usize = 1 << 30;

/// What a scan computes over each file.
#[derive(Clone, Debug)]
pub enum ScanProgram {
    /// Newlines, like `wc -l` (library `lines`).
    Lines,
    /// Occurrences of one byte value (library `count-byte`).
    CountByte(u8),
    /// Non-overlapping occurrences of a byte string, like Python's `bytes.count`
    /// (library `count-literal`).
    CountLiteral(Vec<u8>),
    /// CRC-32 equal to zlib's (library `crc32`).
    Crc32,
    /// Counts of each byte value (library `histogram`).
    Histogram,
    /// A user program: `b0` is the chunk's bytes (tile `tile.begin .. grid`), `b1` 1,024
    /// zeroed scratch words; each result word is summed over chunks and tiles.
    Custom {
        /// The verified program (for 2 buffers).
        program: VerifiedProgram,
        /// Its arguments.
        args: [u32; 4],
    },
}

impl ScanProgram {
    /// The library program behind it (`None` for a custom one).
    fn library(&self) -> Option<&'static LibraryProgram> {
        let name = match self {
            ScanProgram::Lines => "lines",
            ScanProgram::CountByte(_) => "count-byte",
            ScanProgram::CountLiteral(_) => "count-literal",
            ScanProgram::Crc32 => "crc32",
            ScanProgram::Histogram => "histogram",
            ScanProgram::Custom { .. } => return None,
        };
        library_program(name)
    }

    /// Name for reports.
    pub fn name(&self) -> &'static str {
        self.library().map_or("custom", |l| l.name)
    }
}

/// A file's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanValue {
    /// `lines`, `count-byte`, `count-literal`.
    Count(u64),
    /// `crc32`.
    Crc32(u32),
    /// `histogram`: 256 counts.
    Histogram(Vec<u64>),
    /// A custom program's result words, summed.
    Sums([u64; 4]),
}

impl std::fmt::Display for ScanValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScanValue::Count(n) => write!(f, "{n}"),
            ScanValue::Crc32(c) => write!(f, "{c:08x}"),
            ScanValue::Histogram(bins) => {
                let top = bins.iter().enumerate().max_by_key(|(_, n)| **n).map_or(0, |(b, _)| b);
                write!(f, "most common byte {top:#04x} ({} times)", bins[top])
            }
            ScanValue::Sums(s) => write!(f, "{} {} {} {}", s[0], s[1], s[2], s[3]),
        }
    }
}

impl ScanValue {
    /// The value as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            ScanValue::Count(n) => serde_json::json!(n),
            ScanValue::Crc32(c) => serde_json::json!(c),
            ScanValue::Histogram(bins) => serde_json::json!(bins),
            ScanValue::Sums(s) => serde_json::json!(s),
        }
    }
}

/// How a scan runs. The default reads through the page cache (hot files stay hot).
#[derive(Clone, Debug, Default)]
pub struct ScanOptions {
    /// Bytes per chunk (rounded up to 4 KiB); `None`: 4 MiB, 64 KiB on lavapipe.
    pub chunk_bytes: Option<usize>,
    /// Arena slots, i.e. chunks in flight (also the io_uring queue depth); `None`: 16, 4 on
    /// lavapipe.
    pub slots: Option<usize>,
    /// Read with `O_DIRECT` where the file system and alignment allow it (else buffered).
    pub direct: bool,
    /// Jobs per chunk at least (tiles), so one chunk spreads over several workgroups;
    /// `None`: enough for every resident workgroup to have work.
    pub tiles_per_chunk: Option<u32>,
    /// The baseline path instead of io_uring: `pread` each chunk into a staging buffer,
    /// then `memcpy` it into the slot (a mapped Vulkan buffer), on the scanning thread;
    /// the jobs are the same. For `megaring bench ingest`.
    pub copy_reads: bool,
    /// Land chunks in a host-visible Vulkan allocation instead of imported host memory:
    /// the fallback for devices without `VK_EXT_external_memory_host`, forced.
    pub vulkan_arena: bool,
}

/// Where a scan stands, for progress displays.
#[derive(Clone, Copy, Debug)]
pub struct ScanProgress {
    /// Bytes of finished chunks.
    pub bytes_done: u64,
    /// Bytes of every file, by their sizes when the scan started.
    pub bytes_total: u64,
    /// Files reported.
    pub files_done: usize,
    /// Files given.
    pub files_total: usize,
}

/// One file's outcome.
#[derive(Debug)]
pub struct FileReport {
    /// The path given.
    pub path: PathBuf,
    /// Bytes scanned.
    pub bytes: u64,
    /// Whether the file was read with `O_DIRECT`.
    pub direct: bool,
    /// The result, or what went wrong with this file (the others are unaffected).
    pub outcome: Result<ScanValue>,
}

/// Per-slot device resources: the buffer table naming the slot's chunk and its scratch.
struct SlotResources {
    table: BufferTable,
    /// Per-chunk outputs: CRC accumulators, literal tables, histogram bins, scratch.
    out: DeviceBuffer,
}

/// A chunk: which file, where, how many bytes are its own.
#[derive(Clone, Copy, Debug)]
struct Chunk {
    file: usize,
    index: u64,
    offset: u64,
    bytes: usize,
}

enum SlotState {
    Free,
    Reading(Chunk),
    /// Landed (`usize` bytes), waiting for a launch that has not read the slot's previous
    /// contents (see `Runtime::fresh_launch_since`).
    Landed(Chunk, usize),
    Running(Chunk, TiledHandle),
    /// Its read may still land: never used again.
    Lost,
}

/// A chunk's contribution, folded into its file's result in order.
enum ChunkValue {
    Count(u64),
    Crc(u32, u64),
    /// For each entry offset: (matches, entry offset into the next chunk).
    Literal(Vec<(u64, u32)>),
    Histogram(Vec<u32>),
    Sums([u64; 4]),
}

/// A file's running state.
struct FileScan {
    path: PathBuf,
    /// The file in the current reader, while it has chunks to read.
    id: Option<FileId>,
    /// Whether it was opened (its size and chunks are known).
    opened: bool,
    len: u64,
    direct: bool,
    chunks: u64,
    issued: u64,
    in_flight: usize,
    error: Option<Error>,
    pending: BTreeMap<u64, ChunkValue>,
    folded: u64,
    value: ScanValue,
    crc: crc32fast::Hasher,
    literal_entry: u32,
    reported: bool,
    /// The `copy_reads` baseline's own descriptor.
    copy: Option<std::fs::File>,
}

/// One call of [`Scanner::scan`]: its files, the slots' states and the reports so far.
struct ScanRun {
    files: Vec<FileScan>,
    slots: Vec<SlotState>,
    /// Files before this one have issued all their reads (or failed).
    opened: usize,
    reports: Vec<Option<FileReport>>,
    /// Chunks the copy baseline landed, processed with io_uring's completions.
    landed: Vec<(usize, usize, Option<super::IoError>)>,
    progress: ScanProgress,
}

/// Streams files through io_uring into an imported arena and runs a program over every
/// chunk in place. Reusable for many scans.
pub struct Scanner<'r> {
    runtime: &'r Runtime,
    program: ScanProgram,
    loaded: DeviceProgram,
    /// The slots and the reader that fills them.
    arena: Arena,
    slots: Vec<SlotResources>,
    chunk_bytes: usize,
    overlap: usize,
    tile: u32,
    fuel: u32,
    direct: bool,
    /// Staging memory of the `copy_reads` baseline (one slot's worth, page-aligned).
    staging: Option<crate::vk::HostPages>,
    /// Per slot: the launch count when its last chunk's jobs completed (they ran in that
    /// launch or earlier); its next chunk's jobs must run in a later launch.
    slot_read_in: Vec<Option<u64>>,
    /// The reader failed (this error) and could not be replaced: reads of earlier scans
    /// may still land in the slots, so no scan reads any more.
    reader_lost: Option<std::sync::Arc<std::io::Error>>,
    _aux: Vec<DeviceBuffer>,
}

impl<'r> Scanner<'r> {
    /// Sets up the arena, the reader and the program's buffers on `runtime`.
    pub fn new(runtime: &'r Runtime, program: ScanProgram, options: &ScanOptions) -> Result<Self> {
        let defaults = runtime.info().defaults;
        let lanes = runtime.info().vm_lanes;
        let chunk_bytes = options
            .chunk_bytes
            .unwrap_or(defaults.scan_chunk_bytes)
            .max(1)
            .next_multiple_of(DIRECT_ALIGN);
        if chunk_bytes > MAX_CHUNK_BYTES {
            return Err(Error::InvalidConfig(format!(
                "chunks of {chunk_bytes} bytes; give at most {MAX_CHUNK_BYTES} (1 GiB)"
            )));
        }
        let slots = options.slots.unwrap_or(defaults.scan_slots).clamp(1, 1024);
        if let ScanProgram::CountLiteral(literal) = &program {
            if literal.is_empty() || literal.len() > 4096 {
                return Err(Error::InvalidConfig(format!(
                    "a literal of {} bytes; give 1 to 4096 bytes",
                    literal.len()
                )));
            }
        }
        let m = match &program {
            ScanProgram::CountLiteral(literal) => literal.len() as u32,
            _ => 1,
        };
        let overlap = (m as usize - 1).next_multiple_of(DIRECT_ALIGN);
        // Tiles: small enough for one job's fuel, and enough per chunk for every workgroup.
        let max_fuel = runtime.max_fuel();
        let library = program.library();
        let max_tile = match (&program, library) {
            (ScanProgram::CountLiteral(_), _) => literal_max_tile(lanes, m, max_fuel),
            (_, Some(library)) => library.max_tile(lanes, max_fuel),
            (_, None) => chunk_bytes as u32,
        } & !3;
        if max_tile == 0 {
            return Err(Error::InvalidConfig(format!(
                "a {m}-byte literal needs more fuel ({}) than one job has on this device ({max_fuel}); \
                 use a shorter literal",
                literal_fuel(4, lanes, m)
            )));
        }
        let spread = options
            .tiles_per_chunk
            .unwrap_or_else(|| (2 * runtime.info().workgroups).div_ceil(slots as u32))
            .max(1);
        let chunk_u32 = chunk_bytes as u32; // at most MAX_CHUNK_BYTES
        let tile = chunk_u32.div_ceil(spread).next_multiple_of(4).min(max_tile).max(4);
        let tiles = chunk_u32.div_ceil(tile);
        let fuel = match (&program, library) {
            (ScanProgram::CountLiteral(_), _) => literal_fuel(tile, lanes, m),
            (_, Some(library)) => library.fuel(tile, lanes),
            (_, None) => max_fuel,
        };
        // Per-chunk outputs: a CRC accumulator per tile, count-literal's tables (two words
        // per lane, entry offset and tile), histogram bins, or a custom program's scratch.
        let out_words = match &program {
            ScanProgram::Crc32 => u64::from(tiles),
            ScanProgram::CountLiteral(_) => 2 * u64::from(lanes) * u64::from(m) * u64::from(tiles),
            ScanProgram::Histogram => 256,
            _ => 1024,
        };
        if out_words * 4 > u64::from(u32::MAX) {
            return Err(Error::InvalidConfig(format!(
                "a {m}-byte literal over chunks of {chunk_bytes} bytes needs {out_words} words of tables per \
                 chunk; use smaller chunks or a shorter literal"
            )));
        }

        let arena = Arena::new(
            runtime,
            slots,
            chunk_bytes + overlap,
            slots as u32,
            !options.vulkan_arena,
        )?;
        let direct = options.direct && arena.direct_capable();

        let loaded = match &program {
            ScanProgram::Custom { program, .. } => runtime.load_program(program.clone())?,
            _ => runtime.load_program(library.expect("library program").load()?)?,
        };
        let aux: Vec<DeviceBuffer> = match &program {
            ScanProgram::Crc32 => {
                let k = runtime.alloc_u32(32, Placement::DeviceShared)?;
                k.write_u32(0, &crc32_x2n())?;
                vec![k]
            }
            ScanProgram::CountLiteral(literal) => {
                let mut words = vec![0u32; literal.len().div_ceil(4)];
                bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..literal.len()].copy_from_slice(literal);
                let l = runtime.alloc_u32(words.len() as u64, Placement::DeviceShared)?;
                l.write_u32(0, &words)?;
                vec![l]
            }
            _ => Vec::new(),
        };
        let slot_bytes = arena.slot_bytes() as u64;
        let mut resources = Vec::with_capacity(slots);
        for slot in 0..slots {
            // Device memory the host can map (BAR where it exists): the host zeroes what jobs
            // accumulate into, and in host memory a device cache could write old lines back
            // over those zeros (seen on the H100).
            let out = runtime.alloc_u32(out_words, Placement::DeviceShared)?;
            let start = arena.slot_offset(slot) as u64;
            let chunk = (arena.buffer(), start..start + slot_bytes);
            let whole = |b: &DeviceBuffer| 0..b.len_u32() * 4;
            let table = match &program {
                ScanProgram::Crc32 | ScanProgram::CountLiteral(_) => {
                    runtime.buffer_table_views(&[chunk, (&aux[0], whole(&aux[0])), (&out, whole(&out))])?
                }
                ScanProgram::Lines | ScanProgram::CountByte(_) => runtime.buffer_table_views(&[chunk])?,
                _ => runtime.buffer_table_views(&[chunk, (&out, whole(&out))])?,
            };
            resources.push(SlotResources { table, out });
        }
        Ok(Scanner {
            runtime,
            program,
            loaded,
            slots: resources,
            chunk_bytes,
            overlap,
            tile,
            fuel,
            direct,
            staging: if options.copy_reads {
                Some(super::arena::staging_pages(
                    arena.slot_bytes(),
                    "the baseline's staging buffer",
                )?)
            } else {
                None
            },
            slot_read_in: vec![None; slots],
            reader_lost: None,
            arena,
            _aux: aux,
        })
    }

    /// The arena, described in one line.
    pub fn describe(&self) -> String {
        format!(
            "{}; chunks of {} KiB in tiles of {} bytes; io_uring {} buffers, {}",
            self.arena.describe(),
            self.chunk_bytes >> 10,
            self.tile,
            if self.arena.reader().fixed_buffers() {
                "registered (READ_FIXED)"
            } else {
                "unregistered (READ)"
            },
            if self.direct {
                "O_DIRECT where the file system allows"
            } else {
                "buffered reads"
            },
        )
    }

    /// Bytes per chunk.
    pub fn chunk_bytes(&self) -> usize {
        self.chunk_bytes
    }

    /// Chunks in flight at most (arena slots).
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Whether the arena is imported host memory (else: the fallback, see [`Arena::fallback`]).
    pub fn arena_imported(&self) -> bool {
        self.arena.fallback().is_none()
    }

    /// Whether reads use registered buffers (`READ_FIXED`).
    pub fn fixed_buffers(&self) -> bool {
        self.arena.reader().fixed_buffers()
    }

    /// Scans `paths` in order; every file gets a report, in the order given.
    pub fn scan(&mut self, paths: &[PathBuf], progress: &mut dyn FnMut(&ScanProgress)) -> Vec<FileReport> {
        let bytes_total = paths
            .iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| if m.is_file() { m.len() } else { 0 }))
            .sum();
        let mut run = ScanRun {
            files: paths.iter().map(|p| self.file_scan(p)).collect(),
            slots: (0..self.slots.len()).map(|_| SlotState::Free).collect(),
            opened: 0,
            reports: paths.iter().map(|_| None).collect(),
            landed: Vec::new(),
            progress: ScanProgress {
                bytes_done: 0,
                bytes_total,
                files_done: 0,
                files_total: paths.len(),
            },
        };
        if let Some(source) = &self.reader_lost {
            for file in &mut run.files {
                file.error = Some(
                    IoError::ReaderFailed {
                        path: file.path.clone(),
                        source: source.clone(),
                    }
                    .into(),
                );
            }
        }
        let mut idle_since: Option<Instant> = None;
        while run.reports.iter().any(Option::is_none) {
            let mut moved = self.issue_reads(&mut run);
            moved |= self.reap_reads(&mut run);
            moved |= self.publish_landed(&mut run);
            moved |= self.fold_finished(&mut run);
            let reported = self.report_files(&mut run);
            if reported {
                progress(&run.progress);
            }
            if moved || reported {
                idle_since = None;
                progress(&run.progress);
            } else {
                // Jobs running and no read to reap: give the oldest chunk a moment.
                let since = *idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_micros(50) {
                    std::thread::sleep(Duration::from_micros(20));
                } else {
                    std::hint::spin_loop();
                }
            }
        }
        run.reports
            .into_iter()
            .map(|r| r.expect("every file reported"))
            .collect()
    }

    /// Step 1: reads into free slots, file after file. Returns whether anything moved.
    fn issue_reads(&mut self, run: &mut ScanRun) -> bool {
        let mut moved = false;
        while let Some(slot) = run.slots.iter().position(|s| matches!(s, SlotState::Free)) {
            while run.opened < run.files.len() && run.files[run.opened].opened && !self.issuing(&run.files[run.opened])
            {
                run.opened += 1;
            }
            if run.opened >= run.files.len() {
                break;
            }
            let file = &mut run.files[run.opened];
            if !file.opened && file.error.is_none() && !file.reported {
                self.open(file);
                moved = true;
            }
            if !self.issuing(file) {
                run.opened += 1;
                continue;
            }
            moved = true;
            let offset = file.issued * self.chunk_bytes as u64;
            let bytes = (file.len - offset).min(self.chunk_bytes as u64) as usize;
            let read = (bytes + self.overlap)
                .next_multiple_of(DIRECT_ALIGN)
                .min(self.arena.slot_bytes());
            let dst = self.arena.slot_offset(slot);
            let chunk = Chunk {
                file: run.opened,
                index: file.issued,
                offset,
                bytes,
            };
            if let (Some(staging), Some(copy)) = (&mut self.staging, &file.copy) {
                // The baseline: read() into staging memory, then memcpy into the slot.
                let outcome = pread_full(copy, staging, offset, read, &file.path);
                if let Ok(got) = outcome {
                    // SAFETY: the slot is free (no read lands there, no job reads it)
                    // and `got` fits it (read <= slot bytes).
                    unsafe { std::ptr::copy_nonoverlapping(staging.as_ptr(), self.arena.region().0.add(dst), got) };
                }
                run.landed.push(match outcome {
                    Ok(got) => (slot, got, None),
                    Err(e) => (slot, 0, Some(e)),
                });
            } else if let Err(e) =
                self.arena
                    .reader_mut()
                    .submit_read(file.id.expect("opened"), offset, dst, read, slot as u64)
            {
                file.error = Some(e.into());
                continue;
            }
            run.slots[slot] = SlotState::Reading(chunk);
            file.issued += 1;
            file.in_flight += 1;
        }
        moved
    }

    /// Opens `file` for reading (and for the copy baseline), recording its size or error.
    fn open(&mut self, file: &mut FileScan) {
        let reader = self.arena.reader_mut();
        let id = match reader.open(&file.path, self.direct) {
            Ok(id) => id,
            Err(e) => {
                file.error = Some(e.into());
                return;
            }
        };
        file.id = Some(id);
        file.opened = true;
        file.len = reader.file_len(id);
        file.direct = reader.is_direct(id);
        file.chunks = file.len.div_ceil(self.chunk_bytes as u64);
        if self.staging.is_some() {
            use std::os::unix::fs::OpenOptionsExt;
            let flags = if file.direct { libc::O_DIRECT } else { 0 };
            match std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(flags)
                .open(&file.path)
            {
                Ok(f) => file.copy = Some(f),
                Err(source) => {
                    file.error = Some(
                        super::IoError::Open {
                            path: file.path.clone(),
                            source,
                        }
                        .into(),
                    )
                }
            }
        }
    }

    /// Step 2: reads that landed (io_uring's, and the copy baseline's) make their slot `Landed`;
    /// a short or failed read fails its file. Returns whether anything moved.
    fn reap_reads(&mut self, run: &mut ScanRun) -> bool {
        let running = run.slots.iter().any(|s| matches!(s, SlotState::Running(..)));
        let in_flight = self.arena.reader().in_flight();
        let wait = !running && in_flight > 0 && run.landed.is_empty();
        let reaped = if in_flight > 0 {
            self.arena.reader_mut().complete(wait)
        } else {
            Ok(Vec::new())
        };
        let done = match reaped {
            Ok(done) => done,
            Err(e) => {
                self.restart_reader(run, e);
                return true;
            }
        };
        let mut moved = false;
        let done = done.into_iter().map(|d| (d.user_data as usize, d.bytes, d.error));
        for (slot, got, error) in run.landed.drain(..).chain(done) {
            moved = true;
            let SlotState::Reading(chunk) = std::mem::replace(&mut run.slots[slot], SlotState::Free) else {
                unreachable!("a read completed for slot {slot}, which was not reading");
            };
            let file = &mut run.files[chunk.file];
            let failure = match (error, got < chunk.bytes) {
                (Some(e), _) => Some(e.into()),
                (None, true) => Some(Error::FileShrank {
                    path: file.path.clone(),
                    expected: file.len,
                    // Its size now (this read ended early at a size at least as large).
                    got: std::fs::metadata(&file.path).map_or(chunk.offset + got as u64, |m| m.len()),
                }),
                _ => None,
            };
            match failure {
                Some(e) => {
                    file.error.get_or_insert(e);
                    file.in_flight -= 1;
                }
                None => run.slots[slot] = SlotState::Landed(chunk, got),
            }
        }
        moved
    }

    /// The reader failed (`error`): the files with reads in flight fail, the reader is
    /// restarted once every read the kernel took has landed (so no slot is written after
    /// it is freed), and the files still to be read are opened again in the new reader.
    fn restart_reader(&mut self, run: &mut ScanRun, error: IoError) {
        let source = std::sync::Arc::new(match error {
            IoError::Submit { source } => source,
            other => std::io::Error::other(other.to_string()),
        });
        let failed = |path: &Path| -> Error {
            IoError::ReaderFailed {
                path: path.to_owned(),
                source: source.clone(),
            }
            .into()
        };
        for slot in &run.slots {
            if let SlotState::Reading(chunk) = slot {
                let file = &mut run.files[chunk.file];
                file.error.get_or_insert_with(|| failed(&file.path));
            }
        }
        let restarted = self.arena.restart_reader();
        if restarted.is_err() {
            // The old reader stays, and its reads may still land: no slot may be read into
            // again, by this scan or a later one.
            self.reader_lost = Some(source.clone());
        }
        // Every read the old reader's kernel side took has landed (else the slots are
        // lost): they are not reading any more.
        for slot in run.slots.iter_mut() {
            if let SlotState::Reading(chunk) = *slot {
                *slot = if restarted.is_ok() {
                    SlotState::Free
                } else {
                    SlotState::Lost
                };
                run.files[chunk.file].in_flight -= 1;
            }
        }
        // Every FileId belonged to the old reader.
        for file in run.files.iter_mut() {
            file.id = None;
            if self.reader_lost.is_some() && !file.reported {
                file.error.get_or_insert_with(|| failed(&file.path));
            }
            if !file.opened || file.error.is_some() || file.issued >= file.chunks {
                continue;
            }
            let reader = self.arena.reader_mut();
            match reader.open(&file.path, self.direct) {
                Ok(id) if reader.file_len(id) >= file.len => {
                    file.direct = reader.is_direct(id);
                    file.id = Some(id);
                }
                Ok(id) => {
                    let got = reader.file_len(id);
                    let _ = reader.close(id);
                    file.error = Some(Error::FileShrank {
                        path: file.path.clone(),
                        expected: file.len,
                        got,
                    });
                }
                Err(e) => file.error = Some(e.into()),
            }
        }
    }

    /// Step 3: landed chunks publish their jobs once no running launch has read the slot's
    /// previous contents (the device may cache them); else a relaunch is requested.
    fn publish_landed(&mut self, run: &mut ScanRun) -> bool {
        let mut moved = false;
        for (slot, entry) in run.slots.iter_mut().enumerate() {
            let SlotState::Landed(chunk, got) = *entry else {
                continue;
            };
            if let Some(launch) = self.slot_read_in[slot] {
                if !self.runtime.fresh_launch_since(launch) {
                    self.runtime.request_relaunch();
                    continue;
                }
            }
            moved = true;
            match self.publish(slot, &chunk, got) {
                Ok(handle) => *entry = SlotState::Running(chunk, handle),
                Err(e) => {
                    *entry = SlotState::Free;
                    let file = &mut run.files[chunk.file];
                    file.error.get_or_insert(e);
                    file.in_flight -= 1;
                }
            }
        }
        moved
    }

    /// Step 4: chunks whose job ended fold into their file (or fail it); their slot's
    /// scratch is zeroed, whatever the outcome, and the slot is free.
    fn fold_finished(&mut self, run: &mut ScanRun) -> bool {
        let mut moved = false;
        for (slot, entry) in run.slots.iter_mut().enumerate() {
            let SlotState::Running(chunk, handle) = entry else {
                continue;
            };
            let Some(outcome) = handle.poll() else {
                continue;
            };
            let chunk = *chunk;
            // The job has ended (a failure the runtime reports, too, ends every use of the
            // slot: a failed runtime runs nothing more), so the slot may be reused.
            let value = outcome.and_then(|tiles| {
                let results: Vec<[u32; 4]> = tiles.iter().map(|t| t.results).collect();
                self.chunk_value(slot, &chunk, &results)
            });
            let out = &self.slots[slot].out.0;
            out.write_bytes(0, &vec![0; out.size() as usize]);
            *entry = SlotState::Free;
            self.slot_read_in[slot] = Some(self.runtime.launches());
            moved = true;
            let file = &mut run.files[chunk.file];
            file.in_flight -= 1;
            match value {
                Ok(value) => {
                    file.pending.insert(chunk.index, value);
                    Self::fold(file);
                    run.progress.bytes_done += chunk.bytes as u64;
                }
                Err(e) => {
                    file.error.get_or_insert(e);
                }
            }
        }
        moved
    }

    /// Step 5: files with nothing left to read or in flight get their report. Returns whether
    /// any did.
    fn report_files(&mut self, run: &mut ScanRun) -> bool {
        let mut reported = false;
        for (k, file) in run.files.iter_mut().enumerate() {
            let started = file.opened || file.error.is_some();
            let issued_all = file.error.is_some() || file.issued >= file.chunks;
            if file.reported || !started || !issued_all || file.in_flight > 0 {
                continue;
            }
            if let Some(id) = file.id.take() {
                let _ = self.arena.reader_mut().close(id);
            }
            file.reported = true;
            let outcome = match file.error.take() {
                Some(e) => Err(e),
                None => Ok(Self::finish(file)),
            };
            run.reports[k] = Some(FileReport {
                path: file.path.clone(),
                bytes: if outcome.is_ok() { file.len } else { 0 },
                direct: file.direct,
                outcome,
            });
            run.progress.files_done += 1;
            reported = true;
        }
        reported
    }

    fn file_scan(&self, path: &Path) -> FileScan {
        FileScan {
            path: path.to_owned(),
            id: None,
            opened: false,
            len: 0,
            direct: false,
            chunks: 0,
            issued: 0,
            in_flight: 0,
            error: None,
            pending: BTreeMap::new(),
            folded: 0,
            value: match &self.program {
                ScanProgram::Crc32 => ScanValue::Crc32(0),
                ScanProgram::Histogram => ScanValue::Histogram(vec![0; 256]),
                ScanProgram::Custom { .. } => ScanValue::Sums([0; 4]),
                _ => ScanValue::Count(0),
            },
            crc: crc32fast::Hasher::new(),
            literal_entry: 0,
            reported: false,
            copy: None,
        }
    }

    /// Whether `file` still has chunks to read (opened, no error, not all issued).
    fn issuing(&self, file: &FileScan) -> bool {
        !file.reported && file.error.is_none() && (!file.opened || file.issued < file.chunks)
    }

    /// Publishes the job of a chunk that landed in `slot` (`landed` bytes, its own and the
    /// overlap): one job, a spread job of its tiles where it has several.
    fn publish(&self, slot: usize, chunk: &Chunk, landed: usize) -> Result<TiledHandle> {
        let grid = chunk.bytes as u32; // at most MAX_CHUNK_BYTES
        let args = match &self.program {
            ScanProgram::CountByte(b) => [u32::from(*b), 0, 0, 0],
            ScanProgram::Crc32 => [0, self.tile, 0, 0],
            ScanProgram::CountLiteral(literal) => [literal.len() as u32, self.tile, landed.max(chunk.bytes) as u32, 0],
            ScanProgram::Custom { args, .. } => *args,
            _ => [0; 4],
        };
        let table = &self.slots[slot].table;
        self.runtime
            .submit_tiled(&self.loaded, table, grid, self.tile, args, self.fuel)
    }

    /// Reads a finished chunk's outputs.
    fn chunk_value(&self, slot: usize, chunk: &Chunk, tiles: &[[u32; 4]]) -> Result<ChunkValue> {
        let out = &self.slots[slot].out;
        Ok(match &self.program {
            ScanProgram::Lines | ScanProgram::CountByte(_) => {
                ChunkValue::Count(tiles.iter().map(|t| u64::from(t[0])).sum())
            }
            ScanProgram::Crc32 => {
                let whole = library_program("crc32")
                    .and_then(|p| p.combine(tiles))
                    .expect("crc32 combines");
                ChunkValue::Crc(whole[0], chunk.bytes as u64)
            }
            ScanProgram::CountLiteral(literal) => {
                let m = literal.len() as u32;
                let lanes = self.runtime.info().vm_lanes;
                let words = out.read_u32(0, 2 * u64::from(lanes * m) * tiles.len() as u64)?;
                ChunkValue::Literal(
                    (0..m)
                        .map(|e| literal_chain(&words, lanes, m, tiles.len(), e))
                        .collect(),
                )
            }
            ScanProgram::Histogram => ChunkValue::Histogram(out.read_u32(0, 256)?),
            ScanProgram::Custom { .. } => {
                let mut sums = [0u64; 4];
                for t in tiles {
                    for (s, r) in sums.iter_mut().zip(t) {
                        *s += u64::from(*r);
                    }
                }
                ChunkValue::Sums(sums)
            }
        })
    }

    /// Folds the file's finished chunks into its value, in chunk order.
    fn fold(file: &mut FileScan) {
        while let Some(value) = file.pending.remove(&file.folded) {
            file.folded += 1;
            match (value, &mut file.value) {
                (ChunkValue::Count(n), ScanValue::Count(total)) => *total += n,
                (ChunkValue::Crc(crc, len), ScanValue::Crc32(_)) => {
                    file.crc.combine(&crc32fast::Hasher::new_with_initial_len(crc, len));
                }
                (ChunkValue::Literal(table), ScanValue::Count(total)) => {
                    let (n, next) = table[(file.literal_entry as usize).min(table.len() - 1)];
                    *total += n;
                    file.literal_entry = next;
                }
                (ChunkValue::Histogram(bins), ScanValue::Histogram(total)) => {
                    for (t, b) in total.iter_mut().zip(bins) {
                        *t += u64::from(b);
                    }
                }
                (ChunkValue::Sums(s), ScanValue::Sums(total)) => {
                    for (t, v) in total.iter_mut().zip(s) {
                        *t += v;
                    }
                }
                _ => unreachable!("chunk values match their program"),
            }
        }
    }

    fn finish(file: &mut FileScan) -> ScanValue {
        match &file.value {
            ScanValue::Crc32(_) => ScanValue::Crc32(file.crc.clone().finalize()),
            other => other.clone(),
        }
    }
}

/// Reads up to `len` bytes at `offset` into `staging` (the `copy_reads` baseline), until
/// `len` or the end of the file.
fn pread_full(
    file: &std::fs::File,
    staging: &mut crate::vk::HostPages,
    offset: u64,
    len: usize,
    path: &Path,
) -> std::result::Result<usize, super::IoError> {
    use std::os::unix::fs::FileExt;
    // SAFETY: the staging pages are this scanner's alone (borrowed mutably) and at least
    // `len` bytes long.
    let buf = unsafe { std::slice::from_raw_parts_mut(staging.as_ptr(), len.min(staging.len())) };
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(super::IoError::Read {
                    path: path.to_owned(),
                    offset: offset + got as u64,
                    source,
                })
            }
        }
    }
    Ok(got)
}
