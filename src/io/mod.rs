//! io: file ingest — io_uring reads into registered host memory that the GPU reads in place.
//!
//! Nothing here knows about Vulkan: [`UringReader`] works on a raw host memory region that the
//! caller owns (for example a host-visible allocation the device reads directly).

pub mod uring;

pub use uring::{FileId, IoError, ReadDone, UringReader, DIRECT_ALIGN};
