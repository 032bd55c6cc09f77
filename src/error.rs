//! The crate's error type. Every message says what happened and what to do about it.

use ash::vk;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in megaring.
#[derive(Debug, thiserror::Error)]
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
    #[error("cannot allocate {what}: {reason}")]
    Allocation {
        /// What was being allocated.
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
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
    /// The driver cut the kernel's loop while the job ran (epoch budget set too high).
    #[error("job (tag {tag}) was lost: the driver ended the kernel's loop before the job completed; lower RuntimeConfig::epoch_budget for this device")]
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
    /// The device was lost.
    #[error("Vulkan device lost (VK_ERROR_DEVICE_LOST); the runtime is unusable, create a new one")]
    DeviceLost,
    /// The kernel stopped making progress.
    #[error("the megakernel stopped answering (no heartbeat for {0:?}); the runtime was stopped, create a new one")]
    KernelUnresponsive(std::time::Duration),
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
