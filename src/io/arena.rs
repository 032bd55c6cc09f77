//! The ingest arena: page-aligned host memory that io_uring reads file chunks into and the
//! megakernel reads in place, through a buffer device address. No byte is copied between
//! the disk's landing place and the GPU's source.
//!
//! The memory is mapped here (`HostPages`: 2 MiB huge pages where the system has them
//! reserved) and imported into Vulkan with `VK_EXT_external_memory_host`. Where the device
//! lacks the extension or refuses the pointer, the arena falls back to a mapped host-visible
//! Vulkan allocation and says so ([`Arena::fallback`]); reads then still land in memory the
//! GPU reads directly, but the mapping may not be 4 KiB-aligned for `O_DIRECT`.
//!
//! The arena owns the io_uring reader that writes into it, and drops it (which waits for
//! every read in flight) before its own reference to the memory: the memory outlives every
//! read by construction. Jobs that read a slot hold the buffer alive on their own.

use std::sync::Arc;

use crate::error::{AllocationError, Error, Result};
use crate::vk::{Buffer, HostPages, Placement};
use crate::{DeviceBuffer, Runtime};

use super::{IoError, UringReader, DIRECT_ALIGN};

/// Host memory split into equal slots, each the landing place of one file chunk, and the
/// io_uring reader that lands them there.
pub struct Arena {
    // Declared first: dropped (waiting for its reads) before the memory it writes.
    reader: UringReader,
    buffer: DeviceBuffer,
    slot_bytes: usize,
    slots: usize,
    depth: u32,
    fallback: Option<String>,
}

impl Arena {
    /// `slots` slots of `slot_bytes` bytes each (rounded up to 4 KiB), imported into
    /// `runtime`'s device, with an io_uring reader of queue depth `depth` that has the
    /// arena registered as its fixed buffers.
    ///
    /// The pages are registered (pinned) before they are imported: pinning for the long
    /// term may migrate a page, and the device must map the pages the reads will land in.
    ///
    /// `import = false` skips the import and takes the fallback (a host-visible Vulkan
    /// allocation), as where the extension is missing.
    pub fn new(runtime: &Runtime, slots: usize, slot_bytes: usize, depth: u32, import: bool) -> Result<Self> {
        let slot_bytes = slot_bytes.max(1).next_multiple_of(DIRECT_ALIGN);
        let slots = slots.max(1);
        let bytes = slot_bytes.checked_mul(slots).ok_or_else(|| {
            Error::InvalidConfig(format!(
                "{slots} slots of {slot_bytes} bytes overflow the address space"
            ))
        })?;
        let ctx = runtime.context();
        let mut reader = None;
        let imported = HostPages::new(bytes)
            .map_err(|e| format!("cannot map {bytes} bytes: {e}"))
            .and_then(|pages| {
                if !import {
                    return Err("host memory import not requested".to_owned());
                }
                reader = Some(Self::reader_for(pages.as_ptr(), pages.len(), depth));
                Buffer::import_host(ctx, "megaring ingest arena", pages).map_err(|e| e.to_string())
            });
        let (buffer, fallback) = match imported {
            Ok(buffer) => (buffer, None),
            Err(reason) => {
                reader = None;
                (
                    Buffer::new(ctx, "megaring ingest arena", bytes as u64, Placement::HostCached)?,
                    Some(reason),
                )
            }
        };
        let reader = match reader {
            Some(reader) => reader?,
            None => Self::reader_for(buffer.host_ptr(), bytes, depth)?,
        };
        Ok(Arena {
            reader,
            buffer: DeviceBuffer(Arc::new(buffer)),
            slot_bytes,
            slots,
            depth,
            fallback,
        })
    }

    /// A reader over `bytes` bytes at `region`: memory this arena keeps mapped for as long
    /// as it holds the reader.
    fn reader_for(region: *mut u8, bytes: usize, depth: u32) -> std::result::Result<UringReader, IoError> {
        // SAFETY: `region` is the arena's memory (its pages, or the fallback buffer's
        // mapping), which the arena's buffer keeps mapped; the arena drops the reader
        // first, and the reader's Drop waits for every read in flight.
        unsafe { UringReader::new(region, bytes, depth) }
    }

    /// The reader that lands file bytes in the arena.
    pub fn reader(&self) -> &UringReader {
        &self.reader
    }

    /// The reader, to open files, submit reads and reap them.
    pub fn reader_mut(&mut self) -> &mut UringReader {
        &mut self.reader
    }

    /// Replaces the reader with a new one, after the old one failed (an `io_uring_enter`
    /// error it cannot recover from). The old reader is dropped once the new one exists,
    /// which waits for every read the kernel took: once this returns `Ok`, no earlier read
    /// writes the arena. On `Err` the old reader stays, and so may its reads in flight.
    /// Files opened with the old reader must be opened again.
    pub fn restart_reader(&mut self) -> Result<()> {
        let (region, bytes) = self.region();
        let fresh = Self::reader_for(region, bytes, self.depth)?;
        drop(std::mem::replace(&mut self.reader, fresh));
        Ok(())
    }

    /// The whole arena as a buffer jobs can bind (views of it name single slots).
    pub fn buffer(&self) -> &DeviceBuffer {
        &self.buffer
    }

    /// Bytes per slot (a multiple of 4 KiB).
    pub fn slot_bytes(&self) -> usize {
        self.slot_bytes
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Byte offset of slot `slot` in the arena.
    pub fn slot_offset(&self, slot: usize) -> usize {
        assert!(slot < self.slots, "slot {slot} of {}", self.slots);
        slot * self.slot_bytes
    }

    /// The host mapping: first byte and length. Valid while the arena (or any job holding
    /// its buffer) lives.
    pub fn region(&self) -> (*mut u8, usize) {
        (self.buffer.0.host_ptr(), self.slot_bytes * self.slots)
    }

    /// Whether the mapping's base is aligned for `O_DIRECT` reads.
    pub fn direct_capable(&self) -> bool {
        self.buffer.0.host_ptr() as usize % DIRECT_ALIGN == 0
    }

    /// `None` when the memory is imported host memory; else why the arena fell back to a
    /// host-visible Vulkan allocation.
    pub fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// One line for `megaring info`-style reports.
    pub fn describe(&self) -> String {
        let memory = match &self.fallback {
            None if self.buffer.0.huge_pages() => "imported host memory on 2 MiB huge pages".to_owned(),
            None => "imported host memory (VK_EXT_external_memory_host)".to_owned(),
            Some(reason) => format!("host-visible Vulkan memory (fallback: {reason})"),
        };
        format!(
            "{} slots x {} KiB, {memory}, memory type {}",
            self.slots,
            self.slot_bytes >> 10,
            self.buffer.memory_type()
        )
    }
}

/// The staging memory of a copying baseline, as an allocation error where mapping fails.
pub(crate) fn staging_pages(bytes: usize, what: &str) -> Result<HostPages> {
    HostPages::new(bytes).map_err(|e| Error::Allocation {
        what: what.to_owned(),
        source: AllocationError::HostMemory(e),
    })
}
