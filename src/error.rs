//! The crate's error type. Every message says what happened and what to do about it.

use ash::vk;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in megaring. New variants may come in minor releases:
/// match with a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Vulkan loader library could not be loaded.
    #[error(
        "cannot load the Vulkan loader ({0}); install it (Debian: `apt-get install libvulkan1 mesa-vulkan-drivers`)"
    )]
    LoaderMissing(String),
    /// A Vulkan call failed.
    #[error("{call} failed: {result}")]
    Vulkan {
        /// The Vulkan entry point.
        call: &'static str,
        /// What it returned.
        result: vk::Result,
    },
    /// The validation layer was requested but is not installed.
    #[error("validation requested (MEGARING_VALIDATION=1) but VK_LAYER_KHRONOS_validation is not installed; install `vulkan-validationlayers` or unset MEGARING_VALIDATION")]
    ValidationLayerMissing,
    /// No Vulkan device exists, or none matches the selector.
    #[error("no Vulkan device {0}; run `megaring info` to list devices (lavapipe comes with `mesa-vulkan-drivers`)")]
    NoDevice(String),
    /// The chosen device lacks features the runtime needs.
    #[error("device `{device}` lacks required features: {missing}; choose another device with MEGARING_DEVICE")]
    MissingFeatures {
        /// Device name.
        device: String,
        /// Comma-separated missing features.
        missing: String,
    },
    /// Memory allocation failed.
    #[error("cannot allocate {what}: {source}")]
    Allocation {
        /// What was being allocated.
        what: String,
        /// Why it failed.
        #[source]
        source: AllocationError,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// An argument of a call is out of its range (the message says which and what to give).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A buffer of this many u32 elements would not fit in 64-bit byte sizes.
    #[error("a buffer of {elements} u32 elements does not fit a 64-bit size; allocate fewer")]
    BufferTooLarge {
        /// Elements asked for.
        elements: u64,
    },
    /// A buffer-table view is 4 GiB or longer: `buflen` could not give its length.
    #[error(
        "a buffer-table view of {bytes} bytes is 4 GiB or longer; bind views shorter than 4 GiB (split the buffer)"
    )]
    ViewTooLarge {
        /// Bytes of the view.
        bytes: u64,
    },
    /// A job handle's completion was already returned (by `poll`, `wait_timeout`).
    #[error("the completion of job (tag {tag}) was already returned; a handle gives its outcome once")]
    AlreadyConsumed {
        /// The job's tag.
        tag: u64,
    },
    /// A thread megaring needs could not be started.
    #[error("cannot start {what} thread: {source}; the process may be at its thread limit")]
    ThreadSpawn {
        /// Which thread.
        what: &'static str,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A batch larger than the free ring entries was published only in part: a later run
    /// found no free entry in time. The published jobs still run, detached.
    #[error("only {published} of {total} jobs of the batch were published: {source}")]
    BatchIncomplete {
        /// Jobs published (the first ones of the batch).
        published: usize,
        /// Jobs in the batch.
        total: usize,
        /// Why the rest were not.
        #[source]
        source: Box<Error>,
    },
    /// A program was refused (parse or verification).
    #[error("bad program: {0}")]
    Program(#[from] crate::vm::VmError),
    /// A job's buffer range lies outside its buffer.
    #[error("job reads or writes elements {start}..{end} of a buffer holding {len} u32 elements; shrink the range or allocate a larger buffer")]
    OutOfRange {
        /// First element.
        start: u64,
        /// One past the last element.
        end: u64,
        /// Elements in the buffer.
        len: u64,
    },
    /// A job cannot finish within one epoch on this device.
    #[error("job needs {cost} loop iterations per lane but one epoch allows {limit} on this device; split it into smaller jobs")]
    JobTooLarge {
        /// Iterations the job needs.
        cost: u64,
        /// Iterations an epoch allows for one job.
        limit: u64,
    },
    /// `try_submit` found every ring entry in flight.
    #[error(
        "submission ring full: {capacity} jobs in flight; wait on completions, or raise RuntimeConfig::ring_entries"
    )]
    RingFull {
        /// Ring capacity.
        capacity: u32,
    },
    /// A wait ran out of time; the job may still complete.
    #[error("timed out after {0:?} waiting; the job is still in flight, wait again or shut down")]
    Timeout(std::time::Duration),
    /// The job was cancelled by shutdown before any workgroup claimed it.
    #[error("job (tag {tag}) was cancelled by shutdown before it ran")]
    Cancelled {
        /// The job's tag.
        tag: u64,
    },
    /// The kernel's loop ended while the job ran (a driver cut it: epoch budget too high).
    #[error("job (tag {tag}) was lost: the kernel's loop ended before the job completed (a driver cut it); lower RuntimeConfig::epoch_budget for this device")]
    JobLost {
        /// The job's tag.
        tag: u64,
    },
    /// A VM job faulted on the device (fuel, out-of-range access, division by zero...).
    #[error("{0}")]
    Fault(crate::vm::Fault),
    /// The kernel reported a failure for the job.
    #[error("job (tag {tag}) failed on the device with status {status}")]
    JobFailed {
        /// The job's tag.
        tag: u64,
        /// Status code (STATUS_*).
        status: u32,
    },
    /// The runtime is shutting down or has shut down.
    #[error("the runtime is shut down; create a new Runtime to submit more work")]
    ShutDown,
    /// Reading a file failed (io_uring ingest).
    #[error(transparent)]
    Io(#[from] crate::io::IoError),
    /// A GPU-initiated read request was rejected or failed (`io::dma`).
    #[error(transparent)]
    Dma(#[from] crate::io::DmaError),
    /// A file ended before the size it had when it was opened (truncated while read).
    #[error("{}: the file shrank while it was read: {got} of {expected} bytes; scan it again once nothing writes to it", path.display())]
    FileShrank {
        /// The file.
        path: std::path::PathBuf,
        /// Its size when opened.
        expected: u64,
        /// Bytes it had.
        got: u64,
    },
    /// A file megaring writes or reads for itself (a benchmark's test file) failed.
    #[error("{}: {source}; check the directory exists, is writable and has room", path.display())]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A measurement's result differed from its baseline's or from the known answer, so
    /// the measurement is void.
    #[error("{what}: got {got}, expected {expected}; the measurement is void")]
    ResultMismatch {
        /// What was measured.
        what: String,
        /// The measured side's result.
        got: String,
        /// The baseline's or the known result.
        expected: String,
    },
    /// No program of that name is known where one was asked for.
    #[error("no program `{name}` here; use one of {known}")]
    UnknownProgram {
        /// The name given.
        name: String,
        /// The names that would do.
        known: String,
    },
    /// The device was lost.
    #[error("Vulkan device lost (VK_ERROR_DEVICE_LOST); the runtime is unusable, create a new one")]
    DeviceLost,
    /// The kernel stopped making progress.
    #[error("the megakernel stopped answering (no heartbeat for {0:?}); the runtime was stopped, create a new one")]
    KernelUnresponsive(std::time::Duration),
}

/// Why an allocation failed, kept as the source of [`Error::Allocation`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AllocationError {
    /// The Vulkan memory allocator refused.
    #[error(transparent)]
    Allocator(#[from] gpu_allocator::AllocationError),
    /// Mapping host memory (`mmap`) failed.
    #[error("mapping host memory failed: {0}")]
    HostMemory(#[source] std::io::Error),
    /// The device refused to import host memory (`VK_EXT_external_memory_host`).
    #[error("the device refused the host memory: {0}")]
    ImportRefused(String),
    /// A Vulkan call failed.
    #[error("{call} failed: {result}")]
    Vulkan {
        /// The Vulkan entry point.
        call: &'static str,
        /// What it returned.
        result: vk::Result,
    },
    /// The memory type the allocator chose cannot be mapped by the host.
    #[error("the memory type chosen is not host-visible")]
    NotHostVisible,
}

impl Error {
    /// Wraps a failed Vulkan call, turning `ERROR_DEVICE_LOST` into [`Error::DeviceLost`].
    pub(crate) fn vk(call: &'static str) -> impl FnOnce(vk::Result) -> Error {
        move |result| {
            if result == vk::Result::ERROR_DEVICE_LOST {
                Error::DeviceLost
            } else {
                Error::Vulkan { call, result }
            }
        }
    }
}
