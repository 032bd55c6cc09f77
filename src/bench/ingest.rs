//! The ingest measurement (`megaring bench ingest`, `benches/ingest.rs`): end-to-end GB/s
//! from a file to a GPU result through the zero-copy path (io_uring into imported host
//! memory, jobs read it in place), against the baseline `read()` + `memcpy` into a mapped
//! Vulkan buffer followed by the same jobs, and the raw io_uring read rate (no GPU) as the
//! ceiling, all in the same run, through the page cache and with `O_DIRECT`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::io::{ScanOptions, ScanProgram, ScanValue, Scanner, UringReader, DIRECT_ALIGN};
use crate::Runtime;

/// What to measure.
#[derive(Clone, Debug)]
pub struct IngestOptions {
    /// Directory for the test file (a disk file system for `O_DIRECT`).
    pub dir: PathBuf,
    /// Size of the test file.
    pub bytes: u64,
    /// Runs per path; the median counts.
    pub samples: usize,
    /// Chunk size and slots (see [`ScanOptions`]).
    pub scan: ScanOptions,
    /// Also measure with `O_DIRECT`.
    pub direct: bool,
}

/// One read mode's rates, GB/s (10^9 bytes per second), medians.
#[derive(Clone, Debug)]
pub struct IngestRow {
    /// `page cache` (the file read once before) or `O_DIRECT`.
    pub mode: &'static str,
    /// io_uring reads into the arena, no GPU: the ceiling.
    pub raw_uring: f64,
    /// File to GPU result through the zero-copy path (`megaring scan`).
    pub scan: f64,
    /// File to GPU result through `read()` + `memcpy` into the mapped buffer.
    pub copy: f64,
    /// Whether the files were really read with `O_DIRECT` (the file system may refuse).
    pub direct: bool,
}

impl IngestRow {
    /// scan / copy.
    pub fn speedup(&self) -> f64 {
        self.scan / self.copy.max(1e-12)
    }

    /// scan / raw io_uring rate.
    pub fn of_ceiling(&self) -> f64 {
        self.scan / self.raw_uring.max(1e-12)
    }

    /// The row as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "mode": self.mode, "direct": self.direct,
            "raw_io_uring_gb_s": self.raw_uring, "scan_gb_s": self.scan, "read_memcpy_gb_s": self.copy,
            "scan_over_read_memcpy": self.speedup(), "scan_over_raw_io_uring": self.of_ceiling(),
        })
    }
}

/// The measurement.
#[derive(Clone, Debug)]
pub struct IngestReport {
    /// The device.
    pub device: String,
    /// Program run over the file.
    pub program: &'static str,
    /// File size.
    pub bytes: u64,
    /// The ingest path's arena, chunks and reads.
    pub ingest: String,
    /// One row per read mode.
    pub rows: Vec<IngestRow>,
}

impl IngestReport {
    /// The report as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "device": self.device, "program": self.program, "bytes": self.bytes, "ingest": self.ingest,
            "rows": self.rows.iter().map(IngestRow::to_json).collect::<Vec<_>>(),
        })
    }
}

/// A test file of text-like bytes (lines of varying length), removed on drop (also when a
/// check panics).
pub struct IngestFile(PathBuf);

impl IngestFile {
    /// Writes `bytes` bytes into a new file in `dir`; returns it and its line count.
    pub fn create(dir: &Path, bytes: u64) -> Result<(Self, u64)> {
        let path = dir.join(format!("megaring-bench-ingest-{}.dat", std::process::id()));
        let failed = |source: std::io::Error| Error::File {
            path: path.clone(),
            source,
        };
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).map_err(failed)?);
        let mut block = Vec::with_capacity(1 << 20);
        let mut x = 0x9E37_79B9u32;
        while block.len() < 1 << 20 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            block.push(if x % 61 == 0 { b'\n' } else { b'a' + (x % 26) as u8 });
        }
        let lines_per_block = block.iter().filter(|&&b| b == b'\n').count() as u64;
        let mut written = 0u64;
        let mut lines = 0u64;
        while written < bytes {
            let n = (bytes - written).min(block.len() as u64) as usize;
            file.write_all(&block[..n]).map_err(failed)?;
            lines += if n == block.len() {
                lines_per_block
            } else {
                block[..n].iter().filter(|&&b| b == b'\n').count() as u64
            };
            written += n as u64;
        }
        file.flush().map_err(failed)?;
        Ok((IngestFile(path), lines))
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for IngestFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn gbps(bytes: u64, time: Duration) -> f64 {
    bytes as f64 / time.as_secs_f64().max(1e-12) / 1e9
}

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

/// Raw io_uring read of the whole of `path` into a region of `slots` x `chunk` bytes
/// (page-aligned host memory, the arena's shape), `slots` reads in flight, no GPU: the
/// ceiling of any ingest through this reader. Returns the time (open to close) and whether
/// the file was really read with `O_DIRECT` (asked with `direct`; the file system may
/// refuse). Use a scanner's [`Scanner::chunk_bytes`] and [`Scanner::slots`] to compare
/// with its scans.
pub fn raw_uring(path: &Path, chunk: usize, slots: usize, direct: bool) -> Result<(Duration, bool)> {
    let pages = crate::io::arena::staging_pages(chunk * slots, "the raw read region")?;
    // SAFETY: `pages` outlives `reader` (declared after it, dropped first below).
    let mut reader = unsafe { UringReader::new(pages.as_ptr(), pages.len(), slots as u32) }?;
    let start = Instant::now();
    let file = reader.open(path, direct)?;
    let is_direct = reader.is_direct(file);
    let len = reader.file_len(file);
    let mut offset = 0u64;
    let mut free: Vec<usize> = (0..slots).collect();
    while offset < len || reader.in_flight() > 0 {
        while let (true, Some(slot)) = (offset < len, free.pop()) {
            let n = (len - offset).min(chunk as u64) as usize;
            reader.submit_read(
                file,
                offset,
                slot * chunk,
                n.next_multiple_of(DIRECT_ALIGN),
                slot as u64,
            )?;
            offset += n as u64;
        }
        for done in reader.complete(true)? {
            let done = done.into_result()?;
            free.push(done.user_data as usize);
        }
    }
    let time = start.elapsed();
    reader.close(file)?;
    drop(reader);
    drop(pages);
    Ok((time, is_direct))
}

/// Measures `lines` over a fresh test file: raw io_uring, the zero-copy scan and the
/// read() + memcpy baseline, through the page cache and (if asked) with `O_DIRECT`. Every
/// scan's answer is checked against the file's known line count.
pub fn ingest(runtime: &Runtime, options: &IngestOptions) -> Result<IngestReport> {
    let (file, lines) = IngestFile::create(&options.dir, options.bytes)?;
    let paths = vec![file.0.clone()];
    // Warm the page cache.
    std::fs::read(&file.0).map_err(|source| Error::File {
        path: file.0.clone(),
        source,
    })?;
    let mut rows = Vec::new();
    let mut ingest = String::new();
    let modes: &[(&str, bool)] = if options.direct {
        &[("page cache", false), ("O_DIRECT", true)]
    } else {
        &[("page cache", false)]
    };
    for &(mode, direct) in modes {
        let scan_options = ScanOptions {
            direct,
            ..options.scan.clone()
        };
        let mut zero_copy = Scanner::new(runtime, ScanProgram::Lines, &scan_options)?;
        let mut copy = Scanner::new(
            runtime,
            ScanProgram::Lines,
            &ScanOptions {
                copy_reads: true,
                ..scan_options.clone()
            },
        )?;
        ingest = zero_copy.describe();
        let (chunk, slots) = (zero_copy.chunk_bytes(), zero_copy.slots());
        let (mut raw, mut fast, mut slow) = (Vec::new(), Vec::new(), Vec::new());
        let mut was_direct = false;
        for _ in 0..options.samples.max(1) {
            let (time, d) = raw_uring(&file.0, chunk, slots, direct)?;
            raw.push(gbps(options.bytes, time));
            for (scanner, rates) in [(&mut zero_copy, &mut fast), (&mut copy, &mut slow)] {
                let start = Instant::now();
                let report = scanner.scan(&paths, &mut |_| {}).remove(0);
                let time = start.elapsed();
                let value = report.outcome?;
                if value != ScanValue::Count(lines) {
                    return Err(Error::ResultMismatch {
                        what: "the scan's line count".into(),
                        got: value.to_string(),
                        expected: lines.to_string(),
                    });
                }
                was_direct = report.direct || d;
                rates.push(gbps(options.bytes, time));
            }
        }
        rows.push(IngestRow {
            mode,
            raw_uring: median(raw),
            scan: median(fast),
            copy: median(slow),
            direct: was_direct,
        });
    }
    Ok(IngestReport {
        device: runtime.info().caps.name.clone(),
        program: "lines",
        bytes: options.bytes,
        ingest,
        rows,
    })
}
