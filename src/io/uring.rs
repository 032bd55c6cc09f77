//! io_uring file reader that lands file bytes straight in one caller-owned host memory region.
//!
//! The region is registered with the ring as fixed buffers, so every read is a
//! `IORING_OP_READ_FIXED` into an address inside it: the kernel pins the pages once instead of
//! mapping them on every read. Opened files go into a registered file table (`types::Fixed`).
//! Both registrations fall back to plain reads and raw descriptors where the kernel or the
//! process limits (RLIMIT_MEMLOCK) refuse them; [`UringReader::fixed_buffers`] and
//! [`UringReader::fixed_files`] tell which path is in use.
//!
//! A read request ([`UringReader::submit_read`]) is finished only when its whole length has landed
//! or the file ended: short reads are resubmitted for the remainder, `EINTR`/`EAGAIN` are retried,
//! and completions are matched to requests by an internal id, not by order.
//! [`UringReader::complete`] hands back one [`ReadDone`] per finished request.
//!
//! With `O_DIRECT` ([`UringReader::open`] with `direct`), the file offset, the destination
//! address (region base + `dst_offset`) and the length must be multiples of [`DIRECT_ALIGN`].

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use io_uring::{opcode, types, IoUring};

/// Alignment, in bytes, of file offset, destination address and length for `O_DIRECT` reads.
///
/// The caller arranges it: [`UringReader::submit_read`] on a direct file rejects unaligned values
/// with [`IoError::Unaligned`] instead of letting the kernel fail the read with `EINVAL`.
pub const DIRECT_ALIGN: usize = 4096;

/// Slots in the registered file table; files opened beyond it use raw descriptors.
const FILE_SLOTS: u32 = 64;

/// Largest buffer the kernel registers as one fixed buffer (1 GiB). Regions above it are
/// registered as consecutive buffers of this span, and no single SQE crosses a span boundary.
const BUFFER_SPAN: usize = 1 << 30;

/// Largest queue depth accepted (the kernel's limit on submission queue entries).
const MAX_DEPTH: u32 = 32768;

/// Errors of the io_uring file reader; each message says what was wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The path does not exist.
    #[error("cannot open {}: no such file; check the path", path.display())]
    NotFound {
        /// The path that was opened.
        path: PathBuf,
    },
    /// The file exists but may not be read by this process.
    #[error("cannot open {}: permission denied; make the file readable by this user", path.display())]
    PermissionDenied {
        /// The path that was opened.
        path: PathBuf,
    },
    /// The path names a directory or another object that has no byte offsets to read.
    #[error("cannot read {}: not a regular file or block device (a directory?); pass a file path", path.display())]
    NotAFile {
        /// The path that was opened.
        path: PathBuf,
    },
    /// Opening or inspecting the file failed for another reason.
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The path that was opened.
        path: PathBuf,
        /// What the kernel said.
        source: io::Error,
    },
    /// A read failed in the kernel (reported for its request only; other reads go on).
    #[error("read of {} at offset {offset} failed: {source}; the file or its device reported an error", path.display())]
    Read {
        /// The file being read.
        path: PathBuf,
        /// File offset of the part of the request that failed.
        offset: u64,
        /// What the kernel said.
        source: io::Error,
    },
    /// Creating or configuring the io_uring instance failed.
    #[error(
        "io_uring setup failed ({what}): {source}; io_uring unavailable (kernel.io_uring_disabled? a seccomp policy?)"
    )]
    Setup {
        /// The step that failed.
        what: &'static str,
        /// What the kernel said.
        source: io::Error,
    },
    /// Entering the ring to submit or wait failed.
    #[error("io_uring_enter failed: {source}; the reader cannot make progress")]
    Submit {
        /// What the kernel said.
        source: io::Error,
    },
    /// The file's reads were in flight when the reader failed (an `io_uring_enter` error it
    /// cannot recover from); the reader was replaced, other files went on.
    #[error("reading {} stopped: io_uring failed ({source}); the reader was restarted, read the file again", path.display())]
    ReaderFailed {
        /// The file.
        path: PathBuf,
        /// What `io_uring_enter` said (shared by every file it stopped).
        source: Arc<io::Error>,
    },
    /// The queue depth given to [`UringReader::new`] is out of range.
    #[error("queue depth {depth} is out of range; use 1..=32768")]
    InvalidDepth {
        /// The depth asked for.
        depth: u32,
    },
    /// As many reads as the queue depth are already in flight.
    #[error("io_uring queue full: {depth} reads in flight; call complete() before submitting more")]
    QueueFull {
        /// The reader's queue depth.
        depth: u32,
    },
    /// The destination range does not fit in the registered region.
    #[error(
        "read of {len} bytes at region offset {dst_offset} does not fit the {region_len}-byte region; \
         keep dst_offset + len within the region"
    )]
    OutOfRegion {
        /// Requested destination offset.
        dst_offset: usize,
        /// Requested length.
        len: usize,
        /// Size of the region.
        region_len: usize,
    },
    /// An `O_DIRECT` read whose file offset, destination address or length is not a multiple of
    /// [`DIRECT_ALIGN`].
    #[error(
        "O_DIRECT read of {len} bytes at file offset {offset} into region offset {dst_offset} (address {address:#x}) \
         is not aligned to 4096 bytes; align all three, or open the file with direct = false"
    )]
    Unaligned {
        /// Requested file offset.
        offset: u64,
        /// Requested destination offset in the region.
        dst_offset: usize,
        /// Destination address (region base + `dst_offset`).
        address: usize,
        /// Requested length.
        len: usize,
    },
    /// The [`FileId`] was closed or belongs to another reader.
    #[error("file handle is closed or belongs to another reader; open the file again")]
    ClosedFile,
    /// [`UringReader::close`] on a file that still has reads in flight.
    #[error("cannot close {}: {reads} reads still in flight; complete() them first", path.display())]
    FileBusy {
        /// The file.
        path: PathBuf,
        /// Its reads in flight.
        reads: usize,
    },
}

/// Handle of a file opened by a [`UringReader`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    index: u32,
    generation: u32,
}

/// A finished read request, as returned by [`UringReader::complete`].
#[derive(Debug)]
pub struct ReadDone {
    /// The `user_data` given to [`UringReader::submit_read`].
    pub user_data: u64,
    /// Bytes that landed at the request's `dst_offset..` (on error: those read before it).
    pub bytes: usize,
    /// The file ended before the requested length (then `bytes` is less than it).
    pub eof: bool,
    /// Why the request failed, if it did; other requests are unaffected.
    pub error: Option<IoError>,
}

impl ReadDone {
    /// The finished read, or its error.
    pub fn into_result(self) -> Result<Self, IoError> {
        match self.error {
            Some(error) => Err(error),
            None => Ok(self),
        }
    }
}

/// An open file.
struct OpenFile {
    file: File,
    path: Arc<Path>,
    /// Slot in the registered file table, or `None` for a raw descriptor.
    slot: Option<u32>,
    direct: bool,
    len: u64,
    /// Requests of this file in flight.
    reads: usize,
}

/// A row of the file table; `generation` tells a reopened row from a stale [`FileId`].
struct FileRow {
    generation: u32,
    open: Option<OpenFile>,
}

/// A read request in flight: what is still to read and where it goes.
struct Request {
    file: usize,
    user_data: u64,
    /// File offset of the next byte to read.
    offset: u64,
    /// Region offset of the next byte.
    dst: usize,
    remaining: usize,
    /// Bytes landed so far.
    got: usize,
    /// Length of the SQE in flight.
    chunk: usize,
}

/// Reads files with io_uring into one host memory region registered as fixed buffers.
///
/// At most [`depth`](Self::depth) read requests are in flight; each has one SQE in the ring at a
/// time. Dropping the reader waits for every read in flight, so the region is never written once
/// the reader is gone.
pub struct UringReader {
    ring: IoUring,
    region: *mut u8,
    region_len: usize,
    depth: u32,
    fixed_buffers: bool,
    fixed_files: bool,
    free_slots: Vec<u32>,
    files: Vec<FileRow>,
    free_files: Vec<usize>,
    /// Requests by internal id (the SQE's user_data).
    requests: Vec<Option<Request>>,
    free_requests: Vec<usize>,
    /// Requests with an SQE queued or in the kernel.
    active: usize,
    /// Requests finished without an SQE (zero length), returned by the next `complete`.
    ready: Vec<ReadDone>,
    /// Scratch for draining the completion queue.
    cqes: Vec<(u64, i32)>,
}

// SAFETY: `region` is only turned into SQE addresses; the caller of `new` guarantees it stays
// valid for the reader's whole life wherever the reader lives, and `IoUring` itself is Send.
unsafe impl Send for UringReader {}

impl UringReader {
    /// Creates a ring of `queue_depth` entries and registers `region[..len]` as its fixed buffers.
    ///
    /// If the kernel refuses the registration (RLIMIT_MEMLOCK, ENOMEM, memory that cannot be
    /// pinned), reads use plain `IORING_OP_READ` into the same region; see
    /// [`fixed_buffers`](Self::fixed_buffers).
    ///
    /// # Safety
    /// `region` must point to `len` bytes of writable memory that stays valid, and is neither freed
    /// nor unmapped, until the reader is dropped. The kernel writes into it asynchronously: the
    /// caller must not read or write a destination range between its `submit_read` and the
    /// [`ReadDone`] that finishes it.
    ///
    /// # Panics
    /// If `region` is null while `len` is not zero.
    pub unsafe fn new(region: *mut u8, len: usize, queue_depth: u32) -> Result<Self, IoError> {
        if queue_depth == 0 || queue_depth > MAX_DEPTH {
            return Err(IoError::InvalidDepth { depth: queue_depth });
        }
        assert!(
            !region.is_null() || len == 0,
            "UringReader::new: null region of {len} bytes"
        );
        let ring = IoUring::new(queue_depth).map_err(|source| IoError::Setup {
            what: "io_uring_setup",
            source,
        })?;
        let fixed_buffers = len > 0 && {
            let iovecs: Vec<libc::iovec> = (0..len)
                .step_by(BUFFER_SPAN)
                .map(|start| libc::iovec {
                    iov_base: region.wrapping_add(start).cast(),
                    iov_len: (len - start).min(BUFFER_SPAN),
                })
                .collect();
            // SAFETY: the iovecs cover exactly `region[..len]`, which the caller keeps valid until
            // the reader is dropped; Drop waits for every read before the ring releases them.
            unsafe { ring.submitter().register_buffers(&iovecs) }.is_ok()
        };
        let submitter = ring.submitter();
        let fixed_files = submitter.register_files_sparse(FILE_SLOTS).is_ok()
            || submitter.register_files(&[-1; FILE_SLOTS as usize]).is_ok();
        Ok(Self {
            ring,
            region,
            region_len: len,
            depth: queue_depth,
            fixed_buffers,
            fixed_files,
            free_slots: if fixed_files {
                (0..FILE_SLOTS).rev().collect()
            } else {
                Vec::new()
            },
            files: Vec::new(),
            free_files: Vec::new(),
            requests: Vec::new(),
            free_requests: Vec::new(),
            active: 0,
            ready: Vec::new(),
            cqes: Vec::new(),
        })
    }

    /// Whether the region is registered, so reads are `READ_FIXED` (else plain `READ`).
    pub fn fixed_buffers(&self) -> bool {
        self.fixed_buffers
    }

    /// Whether the registered file table is in use (files beyond its 64 slots use raw descriptors).
    pub fn fixed_files(&self) -> bool {
        self.fixed_files
    }

    /// The queue depth: most read requests in flight at once.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// Size of the region in bytes.
    pub fn region_len(&self) -> usize {
        self.region_len
    }

    /// Read requests submitted and not yet returned by [`complete`](Self::complete).
    pub fn in_flight(&self) -> usize {
        self.active + self.ready.len()
    }

    /// Opens `path` read-only; with `direct`, tries `O_DIRECT` first and falls back to buffered
    /// reads where the filesystem refuses it (see [`is_direct`](Self::is_direct)).
    ///
    /// The size is taken now (fstat; for a block device, its size); see
    /// [`file_len`](Self::file_len). Directories and other non-files are rejected.
    pub fn open(&mut self, path: &Path, direct: bool) -> Result<FileId, IoError> {
        let (file, direct) = open_file(path, direct)?;
        let meta = file.metadata().map_err(|source| open_error(path, source))?;
        let kind = meta.file_type();
        let len = if kind.is_file() {
            meta.len()
        } else if kind.is_block_device() {
            (&file)
                .seek(SeekFrom::End(0))
                .map_err(|source| open_error(path, source))?
        } else {
            return Err(IoError::NotAFile {
                path: path.to_path_buf(),
            });
        };
        let slot = self.free_slots.pop().and_then(|slot| {
            match self.ring.submitter().register_files_update(slot, &[file.as_raw_fd()]) {
                Ok(1) => Some(slot),
                _ => {
                    self.free_slots.push(slot);
                    None
                }
            }
        });
        let open = OpenFile {
            file,
            path: Arc::from(path),
            slot,
            direct,
            len,
            reads: 0,
        };
        let index = match self.free_files.pop() {
            Some(index) => {
                self.files[index].open = Some(open);
                index
            }
            None => {
                self.files.push(FileRow {
                    generation: 0,
                    open: Some(open),
                });
                self.files.len() - 1
            }
        };
        Ok(FileId {
            index: index as u32,
            generation: self.files[index].generation,
        })
    }

    /// Closes a file: removes it from the registered table and closes its descriptor.
    ///
    /// Refused with [`IoError::FileBusy`] while reads of it are in flight.
    pub fn close(&mut self, file: FileId) -> Result<(), IoError> {
        let index = self.lookup(file)?;
        let row = &mut self.files[index];
        let open = row.open.as_ref().ok_or(IoError::ClosedFile)?;
        if open.reads > 0 {
            return Err(IoError::FileBusy {
                path: open.path.to_path_buf(),
                reads: open.reads,
            });
        }
        let open = row.open.take().ok_or(IoError::ClosedFile)?;
        row.generation = row.generation.wrapping_add(1);
        self.free_files.push(index);
        if let Some(slot) = open.slot {
            // A slot that cannot be cleared is not reused; the descriptor still closes below.
            if self.ring.submitter().register_files_update(slot, &[-1]).is_ok() {
                self.free_slots.push(slot);
            }
        }
        drop(open.file);
        Ok(())
    }

    /// Whether reads of `file` bypass the page cache (`O_DIRECT` was asked and granted).
    ///
    /// # Panics
    /// If `file` is closed or belongs to another reader.
    pub fn is_direct(&self, file: FileId) -> bool {
        self.file(file).direct
    }

    /// Size of `file` in bytes when it was opened.
    ///
    /// # Panics
    /// If `file` is closed or belongs to another reader.
    pub fn file_len(&self, file: FileId) -> u64 {
        self.file(file).len
    }

    /// Queues a read of `len` bytes at file `offset` into `region[dst_offset..dst_offset + len]`.
    ///
    /// The SQE is handed to the kernel by the next [`complete`](Self::complete) (one submit per
    /// batch). On a direct file, `offset`, the destination address and `len` must be multiples of
    /// [`DIRECT_ALIGN`].
    pub fn submit_read(
        &mut self,
        file: FileId,
        offset: u64,
        dst_offset: usize,
        len: usize,
        user_data: u64,
    ) -> Result<(), IoError> {
        let index = self.lookup(file)?;
        if self.in_flight() >= self.depth as usize {
            return Err(IoError::QueueFull { depth: self.depth });
        }
        match dst_offset.checked_add(len) {
            Some(end) if end <= self.region_len => {}
            _ => {
                return Err(IoError::OutOfRegion {
                    dst_offset,
                    len,
                    region_len: self.region_len,
                })
            }
        }
        let open = self.files[index].open.as_mut().ok_or(IoError::ClosedFile)?;
        let address = (self.region as usize).wrapping_add(dst_offset);
        if open.direct && !direct_aligned(offset, address, len) {
            return Err(IoError::Unaligned {
                offset,
                dst_offset,
                address,
                len,
            });
        }
        if len == 0 {
            self.ready.push(ReadDone {
                user_data,
                bytes: 0,
                eof: offset >= open.len,
                error: None,
            });
            return Ok(());
        }
        open.reads += 1;
        let request = Request {
            file: index,
            user_data,
            offset,
            dst: dst_offset,
            remaining: len,
            got: 0,
            chunk: 0,
        };
        let id = match self.free_requests.pop() {
            Some(id) => {
                self.requests[id] = Some(request);
                id
            }
            None => {
                self.requests.push(Some(request));
                self.requests.len() - 1
            }
        };
        self.active += 1;
        if let Err(error) = self.push_read(id) {
            let request = self.retire(id);
            return Err(IoError::Read {
                path: self.path_of(request.file),
                offset,
                source: error,
            });
        }
        Ok(())
    }

    /// Submits the queued reads and returns the requests that finished.
    ///
    /// With `wait`, blocks until at least one request finished (unless none is in flight);
    /// without, returns at once, possibly with nothing. A failed read is a [`ReadDone`] with
    /// `error` set; `Err` means the ring itself failed.
    pub fn complete(&mut self, wait: bool) -> Result<Vec<ReadDone>, IoError> {
        let mut done = std::mem::take(&mut self.ready);
        loop {
            let want = usize::from(wait && done.is_empty() && self.active > 0);
            if let Err(error) = self.enter(want) {
                self.ready = done;
                return Err(error);
            }
            self.reap(&mut done);
            if !wait || !done.is_empty() || self.active == 0 {
                break;
            }
        }
        // Resubmitted remainders go to the kernel now rather than at the next call.
        if !self.ring.submission().is_empty() {
            if let Err(error) = self.enter(0) {
                self.ready = done;
                return Err(error);
            }
        }
        Ok(done)
    }

    /// The open file behind `file`, panicking on a stale handle.
    fn file(&self, file: FileId) -> &OpenFile {
        self.lookup(file)
            .ok()
            .and_then(|index| self.files[index].open.as_ref())
            .expect("FileId is closed or belongs to another UringReader")
    }

    /// Index of `file` in the file table, if it is open here.
    fn lookup(&self, file: FileId) -> Result<usize, IoError> {
        let index = file.index as usize;
        match self.files.get(index) {
            Some(row) if row.generation == file.generation && row.open.is_some() => Ok(index),
            _ => Err(IoError::ClosedFile),
        }
    }

    fn path_of(&self, index: usize) -> PathBuf {
        self.files[index]
            .open
            .as_ref()
            .map(|open| open.path.to_path_buf())
            .unwrap_or_default()
    }

    /// Builds the SQE for the rest of request `id` and queues it (not submitted yet).
    fn push_read(&mut self, id: usize) -> io::Result<()> {
        let request = self.requests[id].as_mut().expect("request in flight");
        let open = self.files[request.file]
            .open
            .as_ref()
            .expect("file with reads in flight stays open");
        // One SQE never crosses a registered buffer (1 GiB, a multiple of DIRECT_ALIGN).
        let chunk = request.remaining.min(BUFFER_SPAN - request.dst % BUFFER_SPAN);
        request.chunk = chunk;
        let buf = self.region.wrapping_add(request.dst);
        let len = chunk as u32;
        let entry = match (self.fixed_buffers, open.slot) {
            (true, Some(slot)) => {
                let index = (request.dst / BUFFER_SPAN) as u16;
                opcode::ReadFixed::new(types::Fixed(slot), buf, len, index)
                    .offset(request.offset)
                    .build()
            }
            (true, None) => {
                let index = (request.dst / BUFFER_SPAN) as u16;
                opcode::ReadFixed::new(types::Fd(open.file.as_raw_fd()), buf, len, index)
                    .offset(request.offset)
                    .build()
            }
            (false, Some(slot)) => opcode::Read::new(types::Fixed(slot), buf, len)
                .offset(request.offset)
                .build(),
            (false, None) => opcode::Read::new(types::Fd(open.file.as_raw_fd()), buf, len)
                .offset(request.offset)
                .build(),
        };
        let entry = entry.user_data(id as u64);
        for _ in 0..2 {
            // SAFETY: `buf..buf + chunk` lies inside the region (bounds checked in submit_read, and
            // resubmissions only shrink the range), which the caller of `new` keeps valid until the
            // reader drops, and Drop waits for this SQE; the descriptor or slot stays open because
            // `close` refuses files with reads in flight.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return Ok(());
            }
            // Cannot happen (one SQE per request, depth <= queue size); flush and retry once.
            self.ring.submit()?;
        }
        Err(io::Error::other("io_uring submission queue stayed full"))
    }

    /// Submits queued SQEs, waiting for `want` completions; a busy or interrupted enter returns
    /// early (the caller reaps and calls again).
    fn enter(&mut self, want: usize) -> Result<(), IoError> {
        #[cfg(feature = "fault-injection")]
        if let Some(errno) = faults::enter_fault() {
            return Err(IoError::Submit {
                source: io::Error::from_raw_os_error(errno),
            });
        }
        match self.ring.submit_and_wait(want) {
            Ok(_) => Ok(()),
            Err(error) if retryable(&error) => Ok(()),
            Err(source) => Err(IoError::Submit { source }),
        }
    }

    /// Drains the completion queue, advancing, resubmitting or finishing each request.
    fn reap(&mut self, done: &mut Vec<ReadDone>) {
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.clear();
        cqes.extend(self.ring.completion().map(|cqe| (cqe.user_data(), cqe.result())));
        for &(id, result) in &cqes {
            let id = id as usize;
            let Some(request) = self.requests.get_mut(id).and_then(Option::as_mut) else {
                continue;
            };
            #[cfg(feature = "fault-injection")]
            let result = match self.files[request.file].open.as_ref() {
                Some(open) if result >= 0 => faults::read_fault(&open.path).map_or(result, |errno| -errno),
                _ => result,
            };
            let finish = if result < 0 {
                let errno = -result;
                if errno == libc::EINTR || errno == libc::EAGAIN {
                    None
                } else {
                    let source = io::Error::from_raw_os_error(errno);
                    Some((false, Some((request.offset, source))))
                }
            } else if result == 0 {
                Some((true, None))
            } else {
                let got = (result as usize).min(request.chunk);
                request.got += got;
                request.offset = request.offset.saturating_add(got as u64);
                request.dst += got;
                request.remaining -= got;
                let open = self.files[request.file]
                    .open
                    .as_ref()
                    .expect("file with reads in flight stays open");
                let address = (self.region as usize).wrapping_add(request.dst);
                if request.remaining == 0 {
                    Some((false, None))
                } else if got < request.chunk
                    && (request.offset >= open.len
                        || (open.direct && !direct_aligned(request.offset, address, request.remaining)))
                {
                    // A short read at the size seen at open, or one whose remainder O_DIRECT cannot
                    // read (only the end of the file leaves it unaligned): the file ended.
                    Some((true, None))
                } else {
                    None
                }
            };
            match finish {
                None => {
                    if let Err(error) = self.push_read(id) {
                        let request = self.retire(id);
                        let path = self.path_of(request.file);
                        let error = IoError::Read {
                            path,
                            offset: request.offset,
                            source: error,
                        };
                        done.push(ReadDone {
                            user_data: request.user_data,
                            bytes: request.got,
                            eof: false,
                            error: Some(error),
                        });
                    }
                }
                Some((eof, failure)) => {
                    let request = self.retire(id);
                    let error = failure.map(|(offset, source)| IoError::Read {
                        path: self.path_of(request.file),
                        offset,
                        source,
                    });
                    done.push(ReadDone {
                        user_data: request.user_data,
                        bytes: request.got,
                        eof,
                        error,
                    });
                }
            }
        }
        self.cqes = cqes;
    }

    /// Removes request `id` from the tables.
    fn retire(&mut self, id: usize) -> Request {
        let request = self.requests[id].take().expect("request in flight");
        self.free_requests.push(id);
        self.active -= 1;
        if let Some(open) = self.files[request.file].open.as_mut() {
            open.reads -= 1;
        }
        request
    }
}

impl Drop for UringReader {
    fn drop(&mut self) {
        // The kernel may still write into the region: wait for every SQE it has taken.
        while self.active > 0 {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(error) if retryable(&error) => {}
                Err(_) => {
                    // SQEs still in the queue were never seen by the kernel: nothing to wait for.
                    if self.ring.submission().len() >= self.active {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            for cqe in self.ring.completion() {
                let id = cqe.user_data() as usize;
                if self.requests.get_mut(id).and_then(Option::take).is_some() {
                    self.active -= 1;
                }
            }
        }
        let submitter = self.ring.submitter();
        if self.fixed_files {
            let _ = submitter.unregister_files();
        }
        if self.fixed_buffers {
            let _ = submitter.unregister_buffers();
        }
        // The files close when the table drops, after the ring no longer references them.
    }
}

/// Fault injection for tests (feature `fault-injection`, never in a default build): read
/// errors for chosen files, and `io_uring_enter` failures, as every reader of the process
/// would see them from the kernel.
#[cfg(feature = "fault-injection")]
pub mod faults {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    struct Rules {
        /// Files whose reads fail, and with which errno.
        reads: Vec<(PathBuf, i32)>,
        /// `io_uring_enter` calls left to fail, and with which errno.
        enters: u32,
        enter_errno: i32,
    }

    static RULES: Mutex<Rules> = Mutex::new(Rules {
        reads: Vec::new(),
        enters: 0,
        enter_errno: 0,
    });

    fn rules() -> std::sync::MutexGuard<'static, Rules> {
        RULES.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every read of `path` (the path as opened) completes with `errno` (e.g. `libc::EIO`)
    /// instead of its bytes, until [`clear`].
    pub fn fail_reads(path: &Path, errno: i32) {
        rules().reads.push((path.to_owned(), errno));
    }

    /// The next `count` calls of `io_uring_enter`, by any reader, fail with `errno`
    /// without reaching the kernel (the queued reads stay queued).
    pub fn fail_enters(count: u32, errno: i32) {
        let mut rules = rules();
        rules.enters = count;
        rules.enter_errno = errno;
    }

    /// Removes every injected fault.
    pub fn clear() {
        let mut rules = rules();
        rules.reads.clear();
        rules.enters = 0;
    }

    pub(super) fn read_fault(path: &Path) -> Option<i32> {
        rules().reads.iter().find(|(p, _)| p == path).map(|&(_, errno)| errno)
    }

    pub(super) fn enter_fault() -> Option<i32> {
        let mut rules = rules();
        (rules.enters > 0).then(|| {
            rules.enters -= 1;
            rules.enter_errno
        })
    }
}

/// Whether an `io_uring_enter` error only means "reap and try again".
fn retryable(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EINTR | libc::EAGAIN | libc::EBUSY))
}

/// Whether file offset, destination address and length are all multiples of [`DIRECT_ALIGN`].
fn direct_aligned(offset: u64, address: usize, len: usize) -> bool {
    let align = DIRECT_ALIGN as u64;
    offset % align == 0 && address % DIRECT_ALIGN == 0 && len % DIRECT_ALIGN == 0
}

/// Opens `path` read-only, with `O_DIRECT` where asked and supported; returns whether it is direct.
fn open_file(path: &Path, direct: bool) -> Result<(File, bool), IoError> {
    if direct {
        match OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path) {
            Ok(file) => return Ok((file, true)),
            // The filesystem does not do O_DIRECT: read through the page cache instead.
            Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {}
            Err(error) => return Err(open_error(path, error)),
        }
    }
    let file = OpenOptions::new()
        .read(true)
        .open(path)
        .map_err(|error| open_error(path, error))?;
    Ok((file, false))
}

/// Typed error for a failed open of `path`.
fn open_error(path: &Path, source: io::Error) -> IoError {
    let path = path.to_path_buf();
    match source.raw_os_error() {
        Some(libc::ENOENT | libc::ENOTDIR) => IoError::NotFound { path },
        Some(libc::EACCES | libc::EPERM) => IoError::PermissionDenied { path },
        Some(libc::EISDIR) => IoError::NotAFile { path },
        _ => IoError::Open { path, source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::{alloc_zeroed, dealloc, Layout};
    use std::collections::HashMap;
    use std::io::Write;

    /// Host memory aligned for O_DIRECT, freed on drop (declare it before the reader).
    struct Region {
        ptr: *mut u8,
        layout: Layout,
    }

    impl Region {
        fn new(len: usize) -> Self {
            let layout = Layout::from_size_align(len.max(1), DIRECT_ALIGN).unwrap();
            // SAFETY: the layout has a non-zero size.
            let ptr = unsafe { alloc_zeroed(layout) };
            assert!(!ptr.is_null());
            Self { ptr, layout }
        }

        fn reader(&self, depth: u32) -> UringReader {
            // SAFETY: every test declares the region before the reader, so the reader drops first.
            unsafe { UringReader::new(self.ptr, self.layout.size(), depth) }.unwrap()
        }

        /// Only called while no read into the region is in flight.
        fn bytes(&self) -> &[u8] {
            // SAFETY: `ptr` holds `layout.size()` initialised (zeroed, then read into) bytes.
            unsafe { std::slice::from_raw_parts(self.ptr, self.layout.size()) }
        }
    }

    impl Drop for Region {
        fn drop(&mut self) {
            // SAFETY: allocated in `new` with this layout.
            unsafe { dealloc(self.ptr, self.layout) }
        }
    }

    fn pattern(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    /// A file on disk (not tmpfs) so O_DIRECT has a chance.
    fn temp_file(data: &[u8]) -> tempfile::NamedTempFile {
        let dir = if Path::new("/var/tmp").is_dir() {
            PathBuf::from("/var/tmp")
        } else {
            std::env::temp_dir()
        };
        let mut file = tempfile::NamedTempFile::new_in(dir).unwrap();
        file.write_all(data).unwrap();
        file.flush().unwrap();
        file
    }

    /// Drives `reads` (file, offset, dst, len, user_data) through the reader, keeping it full.
    fn run_reads(reader: &mut UringReader, reads: &[(FileId, u64, usize, usize, u64)]) -> HashMap<u64, ReadDone> {
        let mut done = HashMap::new();
        let mut next = reads.iter();
        let mut pending = next.next();
        while pending.is_some() || reader.in_flight() > 0 {
            while let Some(&(file, offset, dst, len, user_data)) = pending {
                if reader.in_flight() >= reader.depth() as usize {
                    break;
                }
                reader.submit_read(file, offset, dst, len, user_data).unwrap();
                pending = next.next();
            }
            assert!(reader.in_flight() <= reader.depth() as usize);
            for read in reader.complete(true).unwrap() {
                assert!(done.insert(read.user_data, read).is_none(), "one ReadDone per request");
            }
        }
        done
    }

    fn read_whole_file(direct: bool) {
        const LEN: usize = 1_000_003;
        const CHUNK: usize = 256 << 10;
        let data = pattern(LEN, 7);
        let file = temp_file(&data);
        let chunks = LEN.div_ceil(CHUNK);
        let region = Region::new(chunks * CHUNK);
        let mut reader = region.reader(4);
        let id = reader.open(file.path(), direct).unwrap();
        assert_eq!(reader.file_len(id), LEN as u64);
        if !direct {
            assert!(!reader.is_direct(id));
        }
        let reads: Vec<_> = (0..chunks)
            .map(|i| (id, (i * CHUNK) as u64, i * CHUNK, CHUNK, 1000 + i as u64))
            .collect();
        let done = run_reads(&mut reader, &reads);
        assert_eq!(done.len(), chunks);
        for i in 0..chunks {
            let read = &done[&(1000 + i as u64)];
            assert!(read.error.is_none(), "{:?}", read.error);
            let want = CHUNK.min(LEN - i * CHUNK);
            assert_eq!(read.bytes, want, "chunk {i}");
            assert_eq!(read.eof, want < CHUNK, "chunk {i}");
        }
        assert_eq!(reader.in_flight(), 0);
        assert_eq!(&region.bytes()[..LEN], &std::fs::read(file.path()).unwrap()[..]);
        assert!(region.bytes()[LEN..].iter().all(|&b| b == 0));
        eprintln!(
            "direct asked {direct}: granted {}, fixed buffers {}, fixed files {}",
            reader.is_direct(id),
            reader.fixed_buffers(),
            reader.fixed_files()
        );
        reader.close(id).unwrap();
    }

    #[test]
    fn reads_whole_file_in_chunks() {
        read_whole_file(false);
    }

    #[test]
    fn reads_whole_file_direct() {
        read_whole_file(true);
    }

    #[test]
    fn direct_is_consistent_with_open_flags() {
        let file = temp_file(&pattern(3 * DIRECT_ALIGN, 3));
        let region = Region::new(4 * DIRECT_ALIGN);
        let mut reader = region.reader(2);
        let id = reader.open(file.path(), true).unwrap();
        let flags = {
            let open = reader.file(id);
            // SAFETY: fcntl(F_GETFL) only reads the status flags of a descriptor we own.
            unsafe { libc::fcntl(open.file.as_raw_fd(), libc::F_GETFL) }
        };
        assert!(flags >= 0);
        assert_eq!(reader.is_direct(id), flags & libc::O_DIRECT != 0);
        if reader.is_direct(id) {
            let unaligned = reader.submit_read(id, 1, 0, DIRECT_ALIGN, 0).unwrap_err();
            assert!(matches!(unaligned, IoError::Unaligned { offset: 1, .. }), "{unaligned}");
            let unaligned = reader.submit_read(id, 0, 512, DIRECT_ALIGN, 0).unwrap_err();
            assert!(
                matches!(unaligned, IoError::Unaligned { dst_offset: 512, .. }),
                "{unaligned}"
            );
            let unaligned = reader.submit_read(id, 0, 0, 100, 0).unwrap_err();
            assert!(matches!(unaligned, IoError::Unaligned { len: 100, .. }), "{unaligned}");
            assert_eq!(reader.in_flight(), 0);
        }
        let buffered = reader.open(file.path(), false).unwrap();
        assert!(!reader.is_direct(buffered));
        // Buffered files take any alignment.
        let done = run_reads(&mut reader, &[(buffered, 1, 3, 100, 5)]);
        assert_eq!(done[&5].bytes, 100);
        assert_eq!(&region.bytes()[3..103], &pattern(3 * DIRECT_ALIGN, 3)[1..101]);
    }

    #[test]
    fn eof_past_end_and_empty_file() {
        let data = pattern(10_000, 11);
        for direct in [false, true] {
            let file = temp_file(&data);
            let empty = temp_file(&[]);
            let region = Region::new(8 * DIRECT_ALIGN);
            let mut reader = region.reader(4);
            let id = reader.open(file.path(), direct).unwrap();
            let none = reader.open(empty.path(), direct).unwrap();
            assert_eq!(reader.file_len(none), 0);
            let done = run_reads(
                &mut reader,
                &[
                    (id, 8192, 0, 8192, 1),
                    (id, 16384, 8192, 4096, 2),
                    (none, 0, 16384, 4096, 3),
                    (id, 0, 20480, 8192, 4),
                ],
            );
            let tail = &done[&1];
            assert_eq!((tail.bytes, tail.eof), (10_000 - 8192, true), "direct {direct}");
            assert_eq!(&region.bytes()[..tail.bytes], &data[8192..]);
            assert_eq!((done[&2].bytes, done[&2].eof), (0, true));
            assert_eq!((done[&3].bytes, done[&3].eof), (0, true));
            assert_eq!((done[&4].bytes, done[&4].eof), (8192, false));
            assert_eq!(&region.bytes()[20480..20480 + 8192], &data[..8192]);
            assert!(done.values().all(|read| read.error.is_none()));
        }
    }

    #[test]
    fn zero_length_read_finishes_at_once() {
        let file = temp_file(b"abc");
        let region = Region::new(DIRECT_ALIGN);
        let mut reader = region.reader(1);
        let id = reader.open(file.path(), false).unwrap();
        reader.submit_read(id, 0, 0, 0, 9).unwrap();
        assert_eq!(reader.in_flight(), 1);
        let done = reader.complete(false).unwrap();
        assert_eq!(
            (done.len(), done[0].user_data, done[0].bytes, done[0].eof),
            (1, 9, 0, false)
        );
        assert_eq!(reader.in_flight(), 0);
        assert!(reader.complete(true).unwrap().is_empty(), "nothing in flight: no wait");
    }

    #[test]
    fn open_errors_are_typed() {
        let region = Region::new(DIRECT_ALIGN);
        let mut reader = region.reader(1);
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.bin");
        for direct in [false, true] {
            let error = reader.open(&missing, direct).unwrap_err();
            assert!(
                matches!(&error, IoError::NotFound { path } if path == &missing),
                "{error}"
            );
            assert!(error.to_string().contains("no such file"), "{error}");
            let error = reader.open(dir.path(), direct).unwrap_err();
            assert!(
                matches!(&error, IoError::NotAFile { path } if path == dir.path()),
                "{error}"
            );
        }
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            use std::os::unix::fs::PermissionsExt;
            let file = temp_file(b"secret");
            std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o000)).unwrap();
            let error = reader.open(file.path(), false).unwrap_err();
            assert!(matches!(error, IoError::PermissionDenied { .. }), "{error}");
        }
    }

    #[test]
    fn truncated_after_open_ends_early() {
        let data = pattern(3 * DIRECT_ALIGN + 100, 5);
        for (direct, keep) in [
            (false, DIRECT_ALIGN + 10),
            (true, DIRECT_ALIGN + 10),
            (true, 2 * DIRECT_ALIGN),
        ] {
            let file = temp_file(&data);
            let region = Region::new(8 * DIRECT_ALIGN);
            let mut reader = region.reader(2);
            let id = reader.open(file.path(), direct).unwrap();
            assert_eq!(reader.file_len(id), data.len() as u64);
            file.as_file().set_len(keep as u64).unwrap();
            let done = run_reads(
                &mut reader,
                &[(id, 0, 0, 4 * DIRECT_ALIGN, 1), (id, 4096, 16384, 8192, 2)],
            );
            assert_eq!(
                (done[&1].bytes, done[&1].eof),
                (keep, true),
                "direct {direct} keep {keep}"
            );
            assert_eq!(&region.bytes()[..keep], &data[..keep]);
            assert_eq!((done[&2].bytes, done[&2].eof), (keep - 4096, true));
            assert_eq!(&region.bytes()[16384..16384 + keep - 4096], &data[4096..keep]);
            assert!(done.values().all(|read| read.error.is_none()));
        }
    }

    #[test]
    fn completions_are_matched_by_user_data() {
        let a = pattern(64 << 10, 21);
        let b = pattern(40 << 10, 22);
        let (file_a, file_b) = (temp_file(&a), temp_file(&b));
        let region = Region::new(256 << 10);
        let mut reader = region.reader(8);
        let ida = reader.open(file_a.path(), true).unwrap();
        let idb = reader.open(file_b.path(), false).unwrap();
        // Different files, offsets, lengths and destinations, in no particular order.
        let reads = [
            (ida, 48 << 10, 0, 16 << 10, 0xa3),
            (idb, 0, 16 << 10, 8 << 10, 0xb0),
            (ida, 0, 32 << 10, 32 << 10, 0xa0),
            (idb, 36 << 10, 64 << 10, 8 << 10, 0xb9),
            (ida, 16 << 10, 128 << 10, 8 << 10, 0xa1),
            (idb, 12 << 10, 192 << 10, 20 << 10, 0xb3),
        ];
        for &(file, offset, dst, len, user_data) in &reads {
            reader.submit_read(file, offset, dst, len, user_data).unwrap();
        }
        let mut done = HashMap::new();
        while reader.in_flight() > 0 {
            for read in reader.complete(true).unwrap() {
                done.insert(read.user_data, read);
            }
        }
        assert_eq!(done.len(), reads.len());
        for &(file, offset, dst, len, user_data) in &reads {
            let source = if file == ida { &a } else { &b };
            let want = len.min(source.len() - offset as usize);
            let read = &done[&user_data];
            assert_eq!((read.bytes, read.eof), (want, want < len), "user_data {user_data:#x}");
            assert_eq!(
                &region.bytes()[dst..dst + want],
                &source[offset as usize..offset as usize + want]
            );
        }
    }

    #[test]
    fn queue_full_and_bad_requests() {
        let file = temp_file(&pattern(64 << 10, 9));
        let region = Region::new(64 << 10);
        let mut reader = region.reader(2);
        let id = reader.open(file.path(), false).unwrap();
        let error = reader.submit_read(id, 0, 60 << 10, 8 << 10, 0).unwrap_err();
        assert!(
            matches!(error, IoError::OutOfRegion { region_len: 65536, .. }),
            "{error}"
        );
        let error = reader.submit_read(id, 0, usize::MAX, 2, 0).unwrap_err();
        assert!(matches!(error, IoError::OutOfRegion { .. }), "{error}");
        reader.submit_read(id, 0, 0, 4096, 1).unwrap();
        reader.submit_read(id, 4096, 4096, 4096, 2).unwrap();
        let error = reader.submit_read(id, 8192, 8192, 4096, 3).unwrap_err();
        assert!(matches!(error, IoError::QueueFull { depth: 2 }), "{error}");
        let error = reader.close(id).unwrap_err();
        assert!(matches!(error, IoError::FileBusy { reads: 2, .. }), "{error}");
        let mut done = 0;
        while reader.in_flight() > 0 {
            done += reader.complete(true).unwrap().len();
        }
        assert_eq!(done, 2);
        reader.close(id).unwrap();
        let error = reader.submit_read(id, 0, 0, 4096, 4).unwrap_err();
        assert!(matches!(error, IoError::ClosedFile), "{error}");
        assert!(matches!(reader.close(id), Err(IoError::ClosedFile)));
        let reopened = reader.open(file.path(), false).unwrap();
        assert_ne!(reopened, id, "a reopened row gets a new generation");
        // SAFETY: an empty region is never written.
        let error = unsafe { UringReader::new(std::ptr::null_mut(), 0, 0) }.err().unwrap();
        assert!(matches!(error, IoError::InvalidDepth { depth: 0 }), "{error}");
    }

    #[test]
    fn fallback_paths_read_the_same() {
        let data = pattern(300_001, 19);
        let file = temp_file(&data);
        for (buffers, files) in [(false, true), (true, false), (false, false)] {
            let region = Region::new(320 << 10);
            let mut reader = region.reader(3);
            // Take the paths used when the kernel refuses registration: plain READ, raw descriptors.
            reader.fixed_buffers &= buffers;
            if !files {
                reader.fixed_files = false;
                reader.free_slots.clear();
            }
            let id = reader.open(file.path(), false).unwrap();
            assert_eq!(reader.file(id).slot.is_some(), files);
            let reads: Vec<_> = (0..5).map(|i| (id, i * 65536, i as usize * 65536, 65536, i)).collect();
            let done = run_reads(&mut reader, &reads);
            assert_eq!(done.values().map(|read| read.bytes).sum::<usize>(), data.len());
            assert_eq!(
                &region.bytes()[..data.len()],
                &data[..],
                "buffers {buffers} files {files}"
            );
        }
    }

    #[test]
    fn many_files_beyond_the_registered_table() {
        let data = pattern(4096, 13);
        let files: Vec<_> = (0..FILE_SLOTS + 6).map(|_| temp_file(&data)).collect();
        let region = Region::new(files.len() * 4096);
        let mut reader = region.reader(16);
        let ids: Vec<_> = files
            .iter()
            .map(|file| reader.open(file.path(), false).unwrap())
            .collect();
        let reads: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, 0, i * 4096, 4096, i as u64))
            .collect();
        let done = run_reads(&mut reader, &reads);
        assert!(done.values().all(|read| read.bytes == 4096 && read.error.is_none()));
        for i in 0..files.len() {
            assert_eq!(&region.bytes()[i * 4096..(i + 1) * 4096], &data[..]);
        }
    }

    #[test]
    fn drop_waits_for_reads_in_flight() {
        let file = temp_file(&pattern(1 << 20, 17));
        for flush in [false, true] {
            let region = Region::new(1 << 20);
            {
                let mut reader = region.reader(8);
                let id = reader.open(file.path(), true).unwrap();
                for i in 0..8 {
                    reader.submit_read(id, i << 17, (i << 17) as usize, 1 << 17, i).unwrap();
                }
                if flush {
                    reader.complete(false).unwrap();
                }
            }
            // The reader waited for (and, unflushed, submitted) every read before it went away.
            assert_eq!(
                region.bytes(),
                &std::fs::read(file.path()).unwrap()[..],
                "flush {flush}"
            );
        }
    }
}
