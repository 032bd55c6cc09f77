//! Device plumbing: instance, device, capabilities, memory and pipelines. Raw Vulkan
//! handles stay inside this module; everything public is an owner that cleans up on drop.

mod caps;
mod device;
mod instance;
mod memory;
mod pipeline;

pub use caps::{Capabilities, DeviceKind, MemoryType};
pub use device::{list_devices, Context, DeviceSelector};
pub use instance::ValidationLog;
pub use memory::{Buffer, HostPages, Placement};
pub use pipeline::{ComputePipeline, Dispatcher};
