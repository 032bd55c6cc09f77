//! Jobs the host publishes and the completions it gets back. Every job is checked on the
//! host before it reaches the ring: buffer ranges lie inside their buffers, and its loop
//! cost fits one epoch of the device.

use std::ops::Range;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::ring::layout::{self, SqEntry, VmBuffer};
use crate::vk::{Buffer, Context, Placement};
use crate::vm::VerifiedProgram;

/// A buffer of u32 elements that jobs read and write, shared by the host and the device.
/// Cloning is cheap; the memory lives until the last clone and every job using it end.
#[derive(Clone, Debug)]
pub struct DeviceBuffer(pub(crate) Arc<Buffer>);

impl DeviceBuffer {
    /// Capacity in u32 elements.
    pub fn len_u32(&self) -> u64 {
        self.0.size() / 4
    }

    /// Device address of element 0.
    pub fn address(&self) -> u64 {
        self.0.address()
    }

    /// Index of the memory type the buffer lives in.
    pub fn memory_type(&self) -> u32 {
        self.0.memory_type()
    }

    /// Writes `data` starting at element `start`; a job submitted next, from any thread,
    /// sees it.
    pub fn write_u32(&self, start: u64, data: &[u32]) -> Result<()> {
        self.check(start, data.len() as u64)?;
        self.0.write_visible(start * 4, bytemuck::cast_slice(data));
        Ok(())
    }

    /// Reads `count` elements starting at element `start`.
    pub fn read_u32(&self, start: u64, count: u64) -> Result<Vec<u32>> {
        self.check(start, count)?;
        let mut out = vec![0u32; count as usize];
        self.0.read_bytes(start * 4, bytemuck::cast_slice_mut(&mut out));
        Ok(out)
    }

    fn check(&self, start: u64, count: u64) -> Result<()> {
        let end = start.saturating_add(count);
        if end > self.len_u32() {
            return Err(Error::OutOfRange {
                start,
                end,
                len: self.len_u32(),
            });
        }
        Ok(())
    }

    fn range(&self, range: &Range<u64>) -> Result<(u64, u32)> {
        if range.start > range.end {
            return Err(Error::OutOfRange {
                start: range.start,
                end: range.end,
                len: self.len_u32(),
            });
        }
        self.check(range.start, range.end - range.start)?;
        let len = u32::try_from(range.end - range.start).map_err(|_| Error::OutOfRange {
            start: range.start,
            end: range.end,
            len: u64::from(u32::MAX),
        })?;
        Ok((self.address() + range.start * 4, len))
    }
}

/// A verified program uploaded to device-visible memory, ready for [`Job::program`].
#[derive(Clone, Debug)]
pub struct DeviceProgram {
    verified: VerifiedProgram,
    code: Arc<Buffer>,
}

impl DeviceProgram {
    pub(crate) fn upload(ctx: &Arc<Context>, verified: VerifiedProgram) -> Result<Self> {
        let words = verified.program().to_words();
        let code = Buffer::new(ctx, "megaring program", words.len() as u64 * 4, Placement::DeviceShared)?;
        code.write_visible(0, bytemuck::cast_slice(&words));
        Ok(DeviceProgram {
            verified,
            code: Arc::new(code),
        })
    }

    /// The program.
    pub fn verified(&self) -> &VerifiedProgram {
        &self.verified
    }
}

/// The buffers a VM job binds, in order (`b0`, `b1`, ...), as a table in device-visible
/// memory. Reusable across jobs; keeps its buffers alive.
#[derive(Clone, Debug)]
pub struct BufferTable {
    table: Arc<Buffer>,
    buffers: Vec<Arc<Buffer>>,
}

impl BufferTable {
    pub(crate) fn new(ctx: &Arc<Context>, buffers: &[&DeviceBuffer]) -> Result<Self> {
        let views: Vec<_> = buffers.iter().map(|b| (*b, 0..b.0.size())).collect();
        BufferTable::with_views(ctx, &views)
    }

    /// A table whose entries are byte ranges of buffers (`b0` = `views[0]`, ...): a program
    /// sees each range as a whole buffer, bounds-checked to it.
    pub(crate) fn with_views(ctx: &Arc<Context>, views: &[(&DeviceBuffer, Range<u64>)]) -> Result<Self> {
        if views.len() > layout::VM_MAX_BUFFERS as usize {
            return Err(Error::Program(crate::vm::VmError::TooManyBuffers {
                buffers: views.len(),
            }));
        }
        let mut entries = Vec::with_capacity(views.len());
        for (buffer, bytes) in views {
            if bytes.start > bytes.end || bytes.end > buffer.0.size() || bytes.start % 4 != 0 {
                return Err(Error::OutOfRange {
                    start: bytes.start / 4,
                    end: bytes.end.div_ceil(4),
                    len: buffer.len_u32(),
                });
            }
            // `buflen` gives a view's length as a u32.
            if bytes.end - bytes.start > u64::from(u32::MAX) {
                return Err(Error::ViewTooLarge {
                    bytes: bytes.end - bytes.start,
                });
            }
            entries.push(VmBuffer {
                address: buffer.address() + bytes.start,
                bytes: bytes.end - bytes.start,
            });
        }
        let buffers: Vec<&DeviceBuffer> = views.iter().map(|(b, _)| *b).collect();
        // Always VM_MAX_BUFFERS entries (the kernel copies them all); unused ones are empty,
        // so any access through them is out of range.
        let table = Buffer::new(
            ctx,
            "megaring buffer table",
            u64::from(layout::VM_MAX_BUFFERS) * 16,
            Placement::DeviceShared,
        )?;
        table.write_visible(0, bytemuck::cast_slice(&entries));
        Ok(BufferTable {
            table: Arc::new(table),
            buffers: buffers.iter().map(|b| b.0.clone()).collect(),
        })
    }

    /// Buffers in the table.
    pub fn len(&self) -> usize {
        self.buffers.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.buffers.is_empty()
    }
}

/// One unit of work for the megakernel.
#[derive(Clone, Debug)]
pub struct Job {
    pub(crate) entry: SqEntry,
    pub(crate) keep: Vec<Arc<Buffer>>,
}

impl Job {
    fn new(kind: u32) -> Self {
        Job {
            entry: SqEntry {
                kind,
                ..Default::default()
            },
            keep: Vec::new(),
        }
    }

    /// A job that does nothing and completes with zero results.
    pub fn nop() -> Self {
        Job::new(layout::JOB_NOP)
    }

    /// A job whose results are `words`.
    pub fn echo(words: [u32; 4]) -> Self {
        let mut job = Job::new(layout::JOB_ECHO);
        [job.entry.arg0, job.entry.arg1, job.entry.arg2, job.entry.arg3] = words;
        job
    }

    /// Sets `buffer[range] = value`.
    pub fn fill(buffer: &DeviceBuffer, range: Range<u64>, value: u32) -> Result<Self> {
        let (address, len) = buffer.range(&range)?;
        let mut job = Job::new(layout::JOB_FILL);
        job.entry.buf0 = address;
        job.entry.len = len;
        job.entry.arg0 = value;
        job.keep.push(buffer.0.clone());
        Ok(job)
    }

    /// Copies `src[src_range]` to `dst` starting at element `dst_start`.
    pub fn copy(src: &DeviceBuffer, src_range: Range<u64>, dst: &DeviceBuffer, dst_start: u64) -> Result<Self> {
        let (from, len) = src.range(&src_range)?;
        let dst_end = dst_start.checked_add(u64::from(len)).ok_or(Error::OutOfRange {
            start: dst_start,
            end: u64::MAX,
            len: dst.len_u32(),
        })?;
        let (to, _) = dst.range(&(dst_start..dst_end))?;
        let mut job = Job::new(layout::JOB_COPY);
        job.entry.buf0 = from;
        job.entry.buf1 = to;
        job.entry.len = len;
        job.keep.extend([src.0.clone(), dst.0.clone()]);
        Ok(job)
    }

    /// Wrapping 64-bit sum of `buffer[range]`, returned by [`Completion::sum_u64`].
    pub fn sum_u32(buffer: &DeviceBuffer, range: Range<u64>) -> Result<Self> {
        let (address, len) = buffer.range(&range)?;
        let mut job = Job::new(layout::JOB_SUM_U32);
        job.entry.buf0 = address;
        job.entry.len = len;
        job.keep.push(buffer.0.clone());
        Ok(job)
    }

    /// Runs `program` over a grid of `grid` elements with `table`'s buffers and `args`;
    /// each lane may execute `fuel` instructions. The program must have been verified for
    /// at least `table.len()` buffers.
    pub fn program(program: &DeviceProgram, table: &BufferTable, grid: u32, args: [u32; 4], fuel: u32) -> Result<Self> {
        if program.verified.buffers() > table.len() {
            return Err(Error::Program(crate::vm::VmError::BadBuffer {
                instruction: 0,
                buffer: table.len() as u32,
                buffers: table.len(),
            }));
        }
        let mut job = Job::new(layout::JOB_VM);
        job.entry.buf0 = program.code.address();
        job.entry.buf1 = table.table.address();
        job.entry.len = grid;
        [job.entry.arg0, job.entry.arg1, job.entry.arg2, job.entry.arg3] = args;
        job.entry.fuel = fuel;
        job.keep.push(program.code.clone());
        job.keep.push(table.table.clone());
        job.keep.extend(table.buffers.iter().cloned());
        Ok(job)
    }

    /// Like [`Job::program`] for the elements `tile` of a larger grid: `tile.begin` returns
    /// `tile.start` and `grid` returns `tile.end`. See [`crate::Runtime::submit_tiled`].
    pub fn program_tile(
        program: &DeviceProgram,
        table: &BufferTable,
        tile: Range<u32>,
        args: [u32; 4],
        fuel: u32,
    ) -> Result<Self> {
        if tile.start > tile.end {
            return Err(Error::InvalidArgument(format!(
                "tile {}..{} is reversed; give start <= end",
                tile.start, tile.end
            )));
        }
        let mut job = Job::program(program, table, tile.end, args, fuel)?;
        job.entry.tile_begin = tile.start;
        Ok(job)
    }

    /// Sets the tag echoed in the completion.
    pub fn with_tag(mut self, tag: u64) -> Self {
        self.entry.tag = tag;
        self
    }

    /// The job's tag.
    pub fn tag(&self) -> u64 {
        self.entry.tag
    }

    /// Loop iterations a launch spends before its first pass, with `lanes` lanes: the
    /// CRC table of `crc32.b` / `crc32.w` (`vm_init` in glsl/vm.glsl).
    pub(crate) fn launch_cost(lanes: u32) -> u32 {
        layout::VM_CRC_TABLE.div_ceil(lanes.clamp(1, layout::MAX_LANES)) * layout::ITERATIONS_PER_STEP
    }

    /// Loop iterations a VM job costs one lane besides its instructions (the copy of the
    /// program's head and the buffer table into shared memory), with `lanes` lanes.
    pub(crate) fn nop_program_cost(lanes: u32) -> u32 {
        let lanes = lanes.clamp(1, layout::MAX_LANES);
        let step = layout::ITERATIONS_PER_STEP;
        (2 * layout::VM_SHARED_PROGRAM).div_ceil(lanes) * step + layout::VM_MAX_BUFFERS.div_ceil(lanes) * step
    }

    /// Loop iterations the job costs one lane of a kernel with `lanes` lanes per workgroup,
    /// each interpreting `sublanes` VM lanes (see `glsl/jobs.glsl`, `glsl/vm.glsl`).
    pub fn cost(&self, lanes: u32, sublanes: u32) -> u32 {
        let e = &self.entry;
        let step = layout::ITERATIONS_PER_STEP;
        let strided = e.len.div_ceil(lanes.clamp(1, layout::MAX_LANES)).saturating_mul(step);
        match e.kind {
            layout::JOB_FILL | layout::JOB_COPY => strided,
            // The reduction loop runs log2(lanes) <= MAX_LANES_LOG2 times, plus its exit test.
            layout::JOB_SUM_U32 => strided.saturating_add(step * (layout::MAX_LANES_LOG2 + 1)),
            // Each instruction of each VM lane may be one step of the interpreter loop (when
            // the invocation's lanes went apart), and each may end a phase. Plus the copy of
            // the program's head and the buffer table into shared memory.
            layout::JOB_VM => e
                .fuel
                .saturating_add(1)
                .saturating_mul(sublanes.max(1) * step + layout::VM_ITERATIONS_PER_PHASE)
                .saturating_add(Job::nop_program_cost(lanes)),
            _ => 0,
        }
    }
}

/// A finished job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The job's tag.
    pub tag: u64,
    /// Status code (`STATUS_OK` for a completion returned by `wait`).
    pub status: u32,
    /// Result words.
    pub results: [u32; 4],
}

impl Completion {
    /// Results 0 (low) and 1 (high) as one u64 (the sum of `Job::sum_u32`).
    pub fn sum_u64(&self) -> u64 {
        u64::from(self.results[0]) | (u64::from(self.results[1]) << 32)
    }
}
