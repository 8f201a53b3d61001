//! # framepipe-cuda
//!
//! framepipe's GPU pieces, built only through the `cuda` features of `framepipe-app` and
//! `framepipe-cli` (or by naming this crate): CI and CPU users never compile it.
//!
//! - [`driver`]: finds the CUDA driver without panicking ([`driver::check_driver`] returns
//!   [`CudaError::NoDriver`], "no CUDA driver found: …", where cudarc would panic), shares the
//!   process's CUDA context and reads the device memory ([`driver::mem_info`]).
//! - [`GpuPreprocessor`]: the letterbox, the normalisation and HWC→CHW as one NVRTC kernel, from a
//!   frame uploaded from pinned host memory, with exactly the geometry and arithmetic of
//!   [`framepipe_vision::Preprocessor`]. It can write into a host slice (today's engines take host
//!   tensors) or straight into a device buffer (a model's device input).
//! - [`resident`]: device-resident frames through pre → infer → post: the letterbox writes into
//!   a device input, the infer worker replays a tract-cuda CUDA graph
//!   ([`framepipe_infer::CudaGraphSession`]), the post worker filters by score on the GPU and brings
//!   back only the survivors.
//! - [`memory`]: the device memory of N replicas sharing one tract-cuda engine, against N
//!   independent loads.
//!
//! Every function that touches the GPU checks for the driver first, so that a machine without one
//! gets an error, never a panic.
#![warn(missing_docs)]

pub mod driver;
mod error;
pub mod letterbox;
pub mod memory;
pub mod resident;

pub use driver::{check_driver, DeviceInfo, MemInfo};
pub use error::CudaError;
pub use letterbox::{GpuPreprocessor, PinnedFrame};
pub use resident::{DeviceInfer, DeviceInput, DeviceOutputs, DevicePost, DevicePre, Source};
