//! The ingest arena: page-aligned host memory that io_uring reads file chunks into and the
//! megakernel reads in place, through a buffer device address. No byte is copied between
//! the disk's landing place and the GPU's source.
//!
//! The memory is mapped here (`HostPages`: 2 MiB huge pages where the system has them
//! reserved) and imported into Vulkan with `VK_EXT_external_memory_host`. Where the device
//! lacks the extension or refuses the pointer, the arena falls back to a mapped host-visible
//! Vulkan allocation and says so ([`Arena::fallback`]); reads then still land in memory the
//! GPU reads directly, but the mapping may not be 4 KiB-aligned for `O_DIRECT`.

use std::sync::Arc;

use crate::error::Result;
use crate::vk::{Buffer, HostPages, Placement};
use crate::{DeviceBuffer, Runtime};

use super::{UringReader, DIRECT_ALIGN};

/// Host memory split into equal slots, each the landing place of one file chunk.
pub struct Arena {
    buffer: DeviceBuffer,
    slot_bytes: usize,
    slots: usize,
    fallback: Option<String>,
}

impl Arena {
    /// `slots` slots of `slot_bytes` bytes each (rounded up to 4 KiB), imported into
    /// `runtime`'s device, and an io_uring reader of queue depth `depth` with the arena
    /// registered as its fixed buffers.
    ///
    /// The pages are registered (pinned) before they are imported: pinning for the long
    /// term may migrate a page, and the device must map the pages the reads will land in.
    ///
    /// `import = false` skips the import and takes the fallback (a host-visible Vulkan
    /// allocation), as where the extension is missing.
    pub fn with_reader(
        runtime: &Runtime,
        slots: usize,
        slot_bytes: usize,
        depth: u32,
        import: bool,
    ) -> Result<(Self, UringReader)> {
        let slot_bytes = slot_bytes.max(1).next_multiple_of(DIRECT_ALIGN);
        let slots = slots.max(1);
        let bytes = slot_bytes * slots;
        let ctx = runtime.context();
        let mut reader = None;
        let imported = HostPages::new(bytes)
            .map_err(|e| format!("cannot map {bytes} bytes: {e}"))
            .and_then(|pages| {
                if !import {
                    return Err("host memory import not requested".to_owned());
                }
                // SAFETY: the pages live in the arena's buffer until it drops, after the
                // reader (the caller keeps the reader declared before the arena).
                reader = Some(unsafe { UringReader::new(pages.as_ptr(), pages.len(), depth) });
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
            // SAFETY: as above, for the buffer's own mapping of `bytes` bytes.
            None => unsafe { UringReader::new(buffer.host_ptr(), bytes, depth) }?,
        };
        let arena = Arena {
            buffer: DeviceBuffer(Arc::new(buffer)),
            slot_bytes,
            slots,
            fallback,
        };
        Ok((arena, reader))
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
