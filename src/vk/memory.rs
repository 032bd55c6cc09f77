//! Buffers with bound memory, a device address and (always) a host mapping. Memory is
//! chosen by intent and resolved to a memory type by the allocator in one place.

use std::ptr::NonNull;
use std::sync::Arc;

use ash::vk;
use gpu_allocator::vulkan::{Allocation, AllocationCreateDesc, AllocationScheme};
use gpu_allocator::MemoryLocation;

use super::device::Context;
use crate::error::{Error, Result};

/// Where a buffer's memory lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Device-local memory the host can map (resizable BAR) where it exists, else host
    /// memory: cheap for the GPU to poll and read, uncached (slow) for host reads.
    DeviceShared,
    /// Host memory, cached on the host where possible: cheap for the host to read.
    HostCached,
}

impl Placement {
    fn location(self) -> MemoryLocation {
        match self {
            Placement::DeviceShared => MemoryLocation::CpuToGpu,
            Placement::HostCached => MemoryLocation::GpuToCpu,
        }
    }
}

/// A host pointer into persistently mapped device memory.
///
/// The one `Send`/`Sync` wrapper of the crate: the memory it points to is owned by the
/// `Buffer` that holds it and outlives every use; concurrent access goes through atomics
/// or through ranges the ring protocol gives one side at a time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MappedPtr(pub(crate) NonNull<u8>);
// SAFETY: see the type's doc: the pointer is only dereferenced while the owning Buffer
// lives, and every shared word is accessed atomically.
unsafe impl Send for MappedPtr {}
// SAFETY: as above.
unsafe impl Sync for MappedPtr {}

/// A Vulkan buffer with its memory, device address and host mapping; freed on drop.
pub struct Buffer {
    ctx: Arc<Context>,
    raw: vk::Buffer,
    allocation: Option<Allocation>,
    address: u64,
    size: u64,
    mapped: MappedPtr,
    memory_type: u32,
}

impl Buffer {
    /// Allocates `size` bytes (at least 4) at `placement`; `name` shows in leak reports.
    pub fn new(ctx: &Arc<Context>, name: &str, size: u64, placement: Placement) -> Result<Self> {
        let size = size.max(4);
        let device = &ctx.device;
        let info = vk::BufferCreateInfo::default()
            .size(size)
            .usage(
                vk::BufferUsageFlags::STORAGE_BUFFER
                    | vk::BufferUsageFlags::SHADER_DEVICE_ADDRESS
                    | vk::BufferUsageFlags::TRANSFER_SRC
                    | vk::BufferUsageFlags::TRANSFER_DST,
            )
            .sharing_mode(vk::SharingMode::EXCLUSIVE);
        // SAFETY: valid create info on a live device.
        let raw = unsafe { device.create_buffer(&info, None) }.map_err(Error::vk("vkCreateBuffer"))?;
        // From here on `buffer`'s Drop destroys the buffer (and frees memory) if a step fails.
        let mut buffer = Buffer {
            ctx: ctx.clone(),
            raw,
            allocation: None,
            address: 0,
            size,
            mapped: MappedPtr(NonNull::dangling()),
            memory_type: 0,
        };
        // SAFETY: `raw` is a live buffer of this device.
        let requirements = unsafe { device.get_buffer_memory_requirements(raw) };
        let allocation = ctx
            .allocator()
            .allocate(&AllocationCreateDesc {
                name,
                requirements,
                location: placement.location(),
                linear: true,
                allocation_scheme: AllocationScheme::GpuAllocatorManaged,
            })
            .map_err(|e| Error::Allocation {
                what: format!("{name} ({size} bytes)"),
                reason: e.to_string(),
            })?;
        // SAFETY: the memory handle is only used to bind this buffer, while the allocation lives.
        let (memory, offset) = (unsafe { allocation.memory() }, allocation.offset());
        let mapped = allocation.mapped_ptr().map(|p| p.cast::<u8>());
        let flags = allocation.memory_properties();
        buffer.memory_type = ctx
            .caps
            .memory_types
            .iter()
            .find(|t| t.flags == flags && requirements.memory_type_bits & (1 << t.index) != 0)
            .map_or(u32::MAX, |t| t.index);
        buffer.allocation = Some(allocation);
        // SAFETY: memory and offset come from an allocation made for these requirements.
        unsafe { device.bind_buffer_memory(raw, memory, offset) }.map_err(Error::vk("vkBindBufferMemory"))?;
        buffer.mapped = MappedPtr(mapped.ok_or_else(|| Error::Allocation {
            what: name.to_owned(),
            reason: "the memory type chosen is not host-visible".into(),
        })?);
        let address_info = vk::BufferDeviceAddressInfo::default().buffer(raw);
        // SAFETY: the buffer was created with SHADER_DEVICE_ADDRESS and bound to memory.
        buffer.address = unsafe { device.get_buffer_device_address(&address_info) };
        // Start from zeros whatever the allocator handed back.
        // SAFETY: the mapping covers `size` bytes and nothing else uses the buffer yet.
        unsafe { std::ptr::write_bytes(buffer.mapped.0.as_ptr(), 0, size as usize) };
        Ok(buffer)
    }

    /// Device address, for the kernel.
    pub fn address(&self) -> u64 {
        self.address
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Index of the memory type backing the buffer.
    pub fn memory_type(&self) -> u32 {
        self.memory_type
    }

    /// Property flags of that memory type.
    pub fn memory_flags(&self) -> vk::MemoryPropertyFlags {
        self.ctx
            .caps
            .memory_types
            .get(self.memory_type as usize)
            .map(|t| t.flags)
            .unwrap_or_default()
    }

    pub(crate) fn mapped(&self) -> MappedPtr {
        self.mapped
    }

    /// Copies `data` into the buffer at byte `offset`.
    ///
    /// Panics when the range does not fit; callers check ranges first.
    pub fn write_bytes(&self, offset: u64, data: &[u8]) {
        assert!(
            offset
                .checked_add(data.len() as u64)
                .is_some_and(|end| end <= self.size),
            "write outside buffer"
        );
        // SAFETY: the range was checked against the mapping's size; the device does not
        // write this range while the host does (the caller owns the buffer between jobs).
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.mapped.0.as_ptr().add(offset as usize), data.len())
        };
    }

    /// Copies bytes from the buffer at `offset` into `out`.
    pub fn read_bytes(&self, offset: u64, out: &mut [u8]) {
        assert!(
            offset.checked_add(out.len() as u64).is_some_and(|end| end <= self.size),
            "read outside buffer"
        );
        // SAFETY: as in write_bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(self.mapped.0.as_ptr().add(offset as usize), out.as_mut_ptr(), out.len())
        };
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if self.ctx.is_poisoned() {
            return; // the device may still use it: leak (see Context::poison)
        }
        // SAFETY: no job using the buffer is in flight (jobs keep their buffers alive), and
        // the buffer is destroyed once, before its memory goes back to the allocator.
        unsafe { self.ctx.device.destroy_buffer(self.raw, None) };
        if let Some(allocation) = self.allocation.take() {
            let _ = self.ctx.allocator().free(allocation);
        }
    }
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("address", &self.address)
            .field("size", &self.size)
            .finish()
    }
}
