//! The crate's error type.

use framepipe_vision::VisionError;

/// Everything that can go wrong on the GPU side. Nothing in this crate panics when there is no
/// GPU: the driver is looked for first, and its absence is [`CudaError::NoDriver`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CudaError {
    /// No usable CUDA driver (`libcuda.so.1` missing, or `cuInit` failing: no device, no
    /// `/dev/nvidia*` in a container, ...).
    #[error("no CUDA driver found: {reason}")]
    NoDriver {
        /// What was tried and what happened.
        reason: String,
    },

    /// The driver is there but another CUDA library this crate loads at run time is not.
    #[error("CUDA library {library} not found: {hint}")]
    MissingLibrary {
        /// The library, e.g. `nvrtc`.
        library: &'static str,
        /// What to do about it.
        hint: &'static str,
    },

    /// A CUDA driver call failed.
    #[error("CUDA driver call failed while trying to {action}: {message}")]
    Driver {
        /// What was being done.
        action: &'static str,
        /// The driver's error.
        message: String,
    },

    /// NVRTC refused one of our kernels (a bug: the sources are fixed).
    #[error("NVRTC could not compile framepipe's kernel: {log}")]
    Compile {
        /// NVRTC's log.
        log: String,
    },

    /// The frame or the configuration is not valid (the same checks as the CPU preprocessing).
    #[error(transparent)]
    Vision(#[from] VisionError),

    /// A frame or an output is larger than the kernel's 32-bit indexing allows.
    #[error("{what} is too large for the GPU letterbox: {detail}")]
    TooLarge {
        /// Which buffer.
        what: &'static str,
        /// Its size.
        detail: String,
    },

    /// The device-resident path was asked for something it does not do (an engine without CUDA
    /// graph sessions, an empty or mis-sized buffer).
    #[error("not supported on the device-resident path: {what}")]
    Unsupported {
        /// What was asked.
        what: String,
    },

    /// A memory measurement could not be made (a child process failed).
    #[error("memory measurement failed: {reason}")]
    Measure {
        /// What happened.
        reason: String,
    },

    /// An error from the inference engine (memory measurements load models).
    #[error(transparent)]
    Infer(#[from] framepipe_infer::InferError),
}

impl CudaError {
    /// Wraps a driver error with what was being done.
    pub(crate) fn driver(action: &'static str, e: cudarc::driver::DriverError) -> Self {
        CudaError::Driver { action, message: e.to_string() }
    }
}
