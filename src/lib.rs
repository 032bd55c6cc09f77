//! megaring: a Vulkan-compute runtime in which one persistent megakernel serves jobs that
//! host threads publish into rings in shared memory while it runs.
//!
//! ```no_run
//! use megaring::{Job, Runtime, RuntimeConfig};
//! let runtime = Runtime::new(RuntimeConfig::default())?;
//! let done = runtime.submit(Job::echo([1, 2, 3, 4]).with_tag(7))?.wait()?;
//! assert_eq!((done.tag, done.results), (7, [1, 2, 3, 4]));
//! # Ok::<(), megaring::Error>(())
//! ```
//!
//! Layout: `vk` (device plumbing), `ring` (host side of the protocol), `runtime`
//! (epochs and the supervisor), `job` (what a job is), `bench` (measurements shared by the
//! `megaring` command and `benches/`), `io` (file ingest through io_uring into host memory).
//! The device side lives in `glsl/`.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

pub mod bench;
mod error;
pub mod io;
mod job;
pub mod ring;
mod runtime;
pub mod vk;
pub mod vm;

/// SPIR-V of the shaders in `glsl/`, compiled by `build.rs`.
pub mod shaders {
    include!(concat!(env!("OUT_DIR"), "/shaders.rs"));
}

pub use error::{AllocationError, Error, Result};
pub use job::{BufferTable, Completion, DeviceBuffer, DeviceProgram, Job};
#[cfg(feature = "fault-injection")]
pub use runtime::KernelFault;
pub use runtime::{
    DeviceDefaults, JobHandle, Mode, ModeRequest, Runtime, RuntimeConfig, RuntimeInfo, Stats, TiledHandle,
    MAX_EPOCH_BUDGET,
};
pub use vk::{DeviceSelector, Placement};
