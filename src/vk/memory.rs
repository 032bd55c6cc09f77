//! Buffers with bound memory, a device address and (always) a host mapping. Memory is
//! chosen by intent and resolved to a memory type by the allocator in one place.

use std::ptr::NonNull;
use std::sync::Arc;

use ash::vk;
use gpu_allocator::vulkan::{Allocation, AllocationCreateDesc, AllocationScheme};
use gpu_allocator::MemoryLocation;

use super::device::Context;
use crate::error::{AllocationError, Error, Result};

/// Where a buffer's memory lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Device-local memory the host can map (resizable BAR) where it exists, else host
    /// memory: cheap for the GPU to poll and read, uncached (slow) for host reads.
    DeviceShared,
    /// Host memory, cached on the host where possible: cheap for the host to read. What a
    /// job writes here is certain to have landed only once the launch that ran it ended
    /// ([`crate::Runtime::fresh_launch_since`]): a device's writes to host memory may reach
    /// it after the job's completion does. Results read as soon as a job completes belong
    /// in `DeviceShared` memory.
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

/// Page-aligned anonymous host memory (`mmap`), on 2 MiB huge pages where the system has
/// them reserved (`MAP_HUGETLB`), else on normal 4 KiB pages (transparent huge pages
/// declined: their collapse moves pages). Faulted in at creation. Unmapped on drop.
pub struct HostPages {
    ptr: MappedPtr,
    len: usize,
    huge: bool,
}

impl HostPages {
    /// Size of a huge page.
    pub const HUGE_PAGE: usize = 2 << 20;

    /// Maps `len` bytes (rounded up to 4 KiB, or to a huge page when huge pages are used).
    pub fn new(len: usize) -> std::io::Result<Self> {
        let len = len.max(1).next_multiple_of(4096);
        let base = libc::PROT_READ | libc::PROT_WRITE;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        if len >= Self::HUGE_PAGE {
            let huge_len = len.next_multiple_of(Self::HUGE_PAGE);
            // SAFETY: an anonymous mapping at an address of the kernel's choosing aliases nothing.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    huge_len,
                    base,
                    flags | libc::MAP_HUGETLB | libc::MAP_POPULATE,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                return Ok(HostPages::from_raw(p, huge_len, true));
            }
        }
        // SAFETY: as above.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, base, flags, -1, 0) };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: advice on the mapping just made; failure only loses the hint. Then every
        // page is faulted in (written once), after the advice, before anyone pins it. No
        // transparent huge pages: khugepaged would move pages the device may have mapped.
        unsafe {
            libc::madvise(p, len, libc::MADV_NOHUGEPAGE);
            std::ptr::write_bytes(p.cast::<u8>(), 0, len);
        }
        Ok(HostPages::from_raw(p, len, false))
    }

    fn from_raw(p: *mut libc::c_void, len: usize, huge: bool) -> Self {
        HostPages {
            ptr: MappedPtr(NonNull::new(p.cast()).expect("mmap returned null")),
            len,
            huge,
        }
    }

    /// First byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.0.as_ptr()
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is mapped (never: at least one page is).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the pages are explicit 2 MiB huge pages.
    pub fn huge(&self) -> bool {
        self.huge
    }
}

impl Drop for HostPages {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `new` with this length; whoever imported it into
        // Vulkan freed that memory first (Buffer::drop).
        unsafe { libc::munmap(self.ptr.0.as_ptr().cast(), self.len) };
    }
}

impl std::fmt::Debug for HostPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostPages")
            .field("len", &self.len)
            .field("huge", &self.huge)
            .finish()
    }
}

/// Bytes every buffer's memory is aligned and rounded to: a device cache line (128 bytes
/// on NVIDIA GPUs) with room to spare.
const CACHE_LINE: u64 = 256;

/// A buffer's memory, once the buffer is gone: freed by [`Context::release`].
pub(crate) enum Memory {
    /// Memory from the allocator.
    Allocated(Allocation),
    /// Imported host memory and the pages behind it (unmapped after the memory is freed).
    Imported(vk::DeviceMemory, HostPages),
}

/// A Vulkan buffer with its memory, device address and host mapping; freed on drop.
pub struct Buffer {
    ctx: Arc<Context>,
    raw: vk::Buffer,
    allocation: Option<Allocation>,
    /// Host memory imported with `VK_EXT_external_memory_host`: the Vulkan memory object,
    /// freed before the pages are unmapped.
    imported: Option<(vk::DeviceMemory, HostPages)>,
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
        let mut buffer = Buffer::unbound(ctx, size, None)?;
        let raw = buffer.raw;
        // SAFETY: `raw` is a live buffer of this device.
        let mut requirements = unsafe { device.get_buffer_memory_requirements(raw) };
        // No two buffers share a device cache line: a partial-line write through a line
        // cached for one buffer must never carry stale bytes into its neighbour.
        requirements.alignment = requirements.alignment.max(CACHE_LINE);
        requirements.size = requirements.size.next_multiple_of(CACHE_LINE);
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
                source: e.into(),
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
        buffer.bind(memory, offset)?;
        buffer.mapped = MappedPtr(mapped.ok_or_else(|| Error::Allocation {
            what: name.to_owned(),
            source: AllocationError::NotHostVisible,
        })?);
        // Start from zeros whatever the allocator handed back, fenced out of this core's
        // write-combining buffers: the buffer may be used from another thread.
        // SAFETY: the mapping covers `size` bytes and nothing else uses the buffer yet.
        unsafe { std::ptr::write_bytes(buffer.mapped.0.as_ptr(), 0, size as usize) };
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        Ok(buffer)
    }

    /// Imports `pages` (host memory) with `VK_EXT_external_memory_host` as a buffer the
    /// device reads and writes in place: no copy, no staging. Fails where the device lacks
    /// the extension or refuses the pointer; the pages are then dropped.
    pub fn import_host(ctx: &Arc<Context>, name: &str, pages: HostPages) -> Result<Self> {
        let refuse = |reason: String| Error::Allocation {
            what: format!("{name} ({} bytes of imported host memory)", pages.len()),
            source: AllocationError::ImportRefused(reason),
        };
        let (Some(ext), Some(alignment)) = (&ctx.external_memory_host, ctx.caps.external_memory_host) else {
            return Err(refuse("the device lacks VK_EXT_external_memory_host".into()));
        };
        if pages.as_ptr() as u64 % alignment != 0 || pages.len() as u64 % alignment != 0 {
            return Err(refuse(format!(
                "pointer or size not a multiple of the import alignment {alignment}"
            )));
        }
        let handle_type = vk::ExternalMemoryHandleTypeFlags::HOST_ALLOCATION_EXT;
        let mut props = vk::MemoryHostPointerPropertiesEXT::default();
        // SAFETY: the pointer is a live, aligned mapping; `props` is a valid output struct.
        let result = unsafe {
            (ext.fp().get_memory_host_pointer_properties_ext)(
                ctx.device.handle(),
                handle_type,
                pages.as_ptr().cast(),
                &mut props,
            )
        };
        if result != vk::Result::SUCCESS {
            return Err(Error::vk("vkGetMemoryHostPointerPropertiesEXT")(result));
        }
        let size = pages.len() as u64;
        let device = &ctx.device;
        let mut buffer = Buffer::unbound(ctx, size, Some(handle_type))?;
        let raw = buffer.raw;
        // SAFETY: `raw` is a live buffer of this device.
        let requirements = unsafe { device.get_buffer_memory_requirements(raw) };
        let wanted = vk::MemoryPropertyFlags::HOST_VISIBLE | vk::MemoryPropertyFlags::HOST_COHERENT;
        let Some(memory_type) = ctx.caps.memory_types.iter().find(|t| {
            props.memory_type_bits & requirements.memory_type_bits & (1 << t.index) != 0 && t.flags.contains(wanted)
        }) else {
            return Err(refuse(format!(
                "no host-coherent memory type accepts the pointer (types {:#b})",
                props.memory_type_bits
            )));
        };
        if requirements.size > size {
            return Err(refuse(format!("the buffer needs {} bytes", requirements.size)));
        }
        let mut import = vk::ImportMemoryHostPointerInfoEXT::default()
            .handle_type(handle_type)
            .host_pointer(pages.as_ptr().cast());
        let mut flags = vk::MemoryAllocateFlagsInfo::default().flags(vk::MemoryAllocateFlags::DEVICE_ADDRESS);
        let allocate = vk::MemoryAllocateInfo::default()
            .allocation_size(size)
            .memory_type_index(memory_type.index)
            .push_next(&mut import)
            .push_next(&mut flags);
        // SAFETY: the import info names a live mapping of `size` bytes that outlives the
        // memory object (both are owned by `buffer`, the memory freed first).
        let memory = unsafe { device.allocate_memory(&allocate, None) }.map_err(out_of_memory(
            format!("{name} ({size} bytes of imported host memory)"),
            "vkAllocateMemory",
        ))?;
        buffer.memory_type = memory_type.index;
        buffer.mapped = pages.ptr;
        buffer.imported = Some((memory, pages));
        buffer.bind(memory, 0)?;
        Ok(buffer)
    }

    /// A buffer object of `size` bytes without memory (importable as `external` when
    /// given); its Drop destroys it (and frees whatever memory a later step attaches) if a
    /// step fails.
    fn unbound(ctx: &Arc<Context>, size: u64, external: Option<vk::ExternalMemoryHandleTypeFlags>) -> Result<Self> {
        let mut external_info =
            vk::ExternalMemoryBufferCreateInfo::default().handle_types(external.unwrap_or_default());
        let mut info = vk::BufferCreateInfo::default()
            .size(size)
            .usage(
                vk::BufferUsageFlags::STORAGE_BUFFER
                    | vk::BufferUsageFlags::SHADER_DEVICE_ADDRESS
                    | vk::BufferUsageFlags::TRANSFER_SRC
                    | vk::BufferUsageFlags::TRANSFER_DST,
            )
            .sharing_mode(vk::SharingMode::EXCLUSIVE);
        if external.is_some() {
            info = info.push_next(&mut external_info);
        }
        // SAFETY: valid create info on a live device.
        let raw = unsafe { ctx.device.create_buffer(&info, None) }
            .map_err(out_of_memory(format!("a buffer of {size} bytes"), "vkCreateBuffer"))?;
        Ok(Buffer {
            ctx: ctx.clone(),
            raw,
            allocation: None,
            imported: None,
            address: 0,
            size,
            mapped: MappedPtr(NonNull::dangling()),
            memory_type: 0,
        })
    }

    /// Binds `memory` at `offset` and reads the buffer's device address.
    fn bind(&mut self, memory: vk::DeviceMemory, offset: u64) -> Result<()> {
        // SAFETY: the memory was allocated (or imported) for this buffer's requirements and
        // is owned by it; a buffer is bound once.
        unsafe { self.ctx.device.bind_buffer_memory(self.raw, memory, offset) }
            .map_err(Error::vk("vkBindBufferMemory"))?;
        let address_info = vk::BufferDeviceAddressInfo::default().buffer(self.raw);
        // SAFETY: the buffer was created with SHADER_DEVICE_ADDRESS and bound to memory
        // allocated with DEVICE_ADDRESS.
        self.address = unsafe { self.ctx.device.get_buffer_device_address(&address_info) };
        Ok(())
    }

    /// Whether the buffer is host memory imported in place ([`Buffer::import_host`]).
    pub fn is_imported(&self) -> bool {
        self.imported.is_some()
    }

    /// Whether the buffer's host memory is on explicit huge pages.
    pub fn huge_pages(&self) -> bool {
        self.imported.as_ref().is_some_and(|(_, p)| p.huge())
    }

    /// Host address of byte 0 (the buffer is always mapped).
    pub fn host_ptr(&self) -> *mut u8 {
        self.mapped.0.as_ptr()
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

    /// Copies `data` into the buffer at byte `offset`. The bytes may wait in this core's
    /// write-combining buffers (BAR mappings are write-combined) until a fence; the ring's
    /// publication fences, so a job submitted from this thread sees them.
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

    /// [`Buffer::write_bytes`], then a fence: a job submitted next, from any thread, sees
    /// the bytes.
    pub fn write_visible(&self, offset: u64, data: &[u8]) {
        self.write_bytes(offset, data);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
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

/// Maps a failed Vulkan call that creates or allocates: running out of memory is an
/// [`Error::Allocation`] of `what`, anything else the call's error.
fn out_of_memory(what: String, call: &'static str) -> impl FnOnce(vk::Result) -> Error {
    move |result| match result {
        vk::Result::ERROR_OUT_OF_DEVICE_MEMORY | vk::Result::ERROR_OUT_OF_HOST_MEMORY => Error::Allocation {
            what,
            source: AllocationError::Vulkan { call, result },
        },
        other => Error::vk(call)(other),
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if self.ctx.is_poisoned() {
            // The device may still use it: leak it, imported host pages included (see
            // Context::poison).
            if let Some((_, pages)) = self.imported.take() {
                std::mem::forget(pages);
            }
            return;
        }
        // SAFETY: no job using the buffer is in flight (jobs keep their buffers alive); the
        // kernel reaches memory by address, never through the buffer object, which is
        // destroyed once, before its memory goes back.
        unsafe { self.ctx.device.destroy_buffer(self.raw, None) };
        let memory = match (self.allocation.take(), self.imported.take()) {
            (Some(allocation), _) => Memory::Allocated(allocation),
            (None, Some((memory, pages))) => Memory::Imported(memory, pages),
            (None, None) => return,
        };
        // Freed now, or once the running launch has ended (its device caches may hold lines
        // of this memory, which a new buffer there must not see).
        self.ctx.release(memory);
    }
}

impl Memory {
    /// Gives the memory back (allocator, or the driver and then the OS).
    pub(crate) fn free(self, ctx: &Context) {
        match self {
            Memory::Allocated(allocation) => {
                let _ = ctx.allocator().free(allocation);
            }
            Memory::Imported(memory, pages) => {
                // SAFETY: the buffer bound to it is destroyed; the pages are unmapped after.
                unsafe { ctx.device.free_memory(memory, None) };
                drop(pages);
            }
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
