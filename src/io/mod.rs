//! io: file ingest — io_uring reads into registered host memory that the GPU reads in place.
//!
//! - [`uring`]: the io_uring reader (registered buffers and files, `READ_FIXED`, `O_DIRECT`,
//!   short reads resumed, completions matched by user data). Nothing Vulkan.
//! - [`arena`]: page-aligned host memory imported into Vulkan (`VK_EXT_external_memory_host`),
//!   split into chunk slots; the reader lands file bytes there and jobs read them in place.
//! - [`stream`]: the scan pipeline from files to per-file results.
//! - [`dma`]: GPU-initiated reads: programs write read requests, the host serves them with
//!   io_uring and publishes the continuation job over the bytes in place.

pub mod arena;
pub mod dma;
pub mod stream;
pub mod uring;

pub use arena::Arena;
pub use dma::{DmaError, DmaJob, DmaRejection, DmaReport, DmaRequest, DmaService};
pub use stream::{FileReport, ScanOptions, ScanProgram, ScanProgress, ScanValue, Scanner};
pub use uring::{FileId, IoError, ReadDone, UringReader, DIRECT_ALIGN};
